//! Faithful in-memory stand-ins for the four case systems casegate speaks to (SPEC
//! sections 1, 6 and 7): each serves one API's upload endpoint and every read-back
//! operation it has (list, get, download with `Range` where the real system honours it,
//! delete), the Case IQ token endpoint, Kibana comments and Thalamus notes; validates
//! requests the way the real system does, and stores files in memory. They are the "real systems" of
//! casegate's tests, the `casegate emulate` command and `url = "embedded"` routes, so they
//! share no translation code with casegate: they read multipart with multer and JSON with
//! serde_json themselves.
//!
//! An emulator can also misbehave on purpose ([`Fault`], on uploads and reads alike),
//! answer without storing anything ([`Config::fast`]) for benchmarks, and tells tests what
//! reached it ([`Emulator::calls`]).

mod caseiq;
mod fast;
mod fault;
mod kibana;
mod server;
mod thalamus;
mod tines;
mod wire;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use crate::dialect::DialectId;
pub use fault::Fault;

/// How an emulator behaves.
#[derive(Clone, Debug)]
pub struct Config {
    /// The API it speaks.
    pub dialect: DialectId,
    /// Credentials accepted. Thalamus: the `token` (touchpoint must be non-empty); Tines: the
    /// API key; Case IQ: a client_secret for the token endpoint, or a fixed bearer token;
    /// Kibana: an API key (`Authorization: ApiKey K`) or "user:password" for Basic.
    /// Empty = open: every request is accepted, with or without credentials.
    pub tokens: Vec<String>,
    /// A misbehaviour to inject from the start, into uploads and reads (see also
    /// [`Emulator::set_fault`]).
    pub fault: Option<Fault>,
    /// Benchmark mode: authenticate, drain the upload body without parsing or storing it,
    /// answer a canned success of the dialect's exact shape, naming one fixed file id per
    /// dialect (Thalamus and Tines `1`, Case IQ `00000000-0000-4000-8000-000000000001`,
    /// Kibana file id `00000000-0000-4000-8000-000000000001`). Of the drained body only its
    /// first 64 KiB and last 4 KiB are kept, to tell how many file bytes it carried (the
    /// file part's length; the decoded length of Tines' `file_contents`; else the body's
    /// length). A download of the fixed id then streams that many bytes (of the last fast
    /// upload) of a generated pattern, byte `o` being `o % 251`, with `Content-Length` and
    /// without holding them; it ignores `Range`. Other reads find nothing stored. Faults
    /// apply as to any answer (one that spoils a download then reads its body whole).
    pub fast: bool,
    /// Fast mode: name a new file id in every upload answer (`1`, `2`, ... for Thalamus and
    /// Tines; `00000000-0000-4000-8000-` and the number in 12 hex digits for Case IQ; Kibana
    /// keeps its fixed ids) instead of the one fixed id, so
    /// that a ledger in front records a row per upload as with a real upstream. A download
    /// of any id named so far streams the last upload's length.
    pub fast_unique_ids: bool,
    /// Serve HTTPS with this config instead of HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Kibana: owner of auto-created cases (default "cases").
    pub kibana_owner: String,
}

impl Config {
    /// An open emulator of `dialect`: no credentials, no fault, not fast, plain HTTP,
    /// Kibana owner "cases".
    pub fn new(dialect: DialectId) -> Self {
        Config {
            dialect,
            tokens: Vec::new(),
            fault: None,
            fast: false,
            fast_unique_ids: false,
            tls: None,
            kibana_owner: "cases".to_owned(),
        }
    }
}

/// A file an emulator stored, with everything that came with it.
#[derive(Clone, Debug)]
pub struct StoredFile {
    /// The case it was attached to, as the dialect names it (Thalamus and Tines: the
    /// integer in canonical form, "7" for "007").
    pub case_id: String,
    /// Its id: an integer (Thalamus, Tines), a UUID (Case IQ, Kibana's file id).
    pub id: String,
    /// Its name (Kibana: "<name>.<extension>").
    pub name: String,
    pub content_type: String,
    pub size: u64,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
    /// Lowercase hex MD5 of the bytes (Tines reports it).
    pub md5: String,
    pub data: bytes::Bytes,
    /// When it was stored, RFC 3339.
    pub created_at: String,
    /// Every field received with the upload besides the file, in order, as (name, value)
    /// text: multipart text parts as sent (e.g. ("bulkTags[]","t1") twice, ("caseId", ...),
    /// ("filename","x")), JSON fields other than file_contents (non-null scalars as text:
    /// numbers as their JSON text, strings unquoted).
    pub fields: Vec<(String, String)>,
    /// The part's own filename (multipart dialects) / the JSON `filename` (Tines).
    pub part_filename: String,
    /// Kibana: the space it was uploaded in (None for the default space).
    pub space: Option<String>,
}

impl StoredFile {
    /// A file of `data` stored now; no fields, `part_filename` = `name`, no space.
    fn new(
        case_id: String,
        id: String,
        name: String,
        content_type: String,
        data: bytes::Bytes,
    ) -> Self {
        StoredFile {
            case_id,
            id,
            part_filename: name.clone(),
            name,
            content_type,
            size: data.len() as u64,
            sha256: wire::sha256_hex(&data),
            md5: wire::md5_hex(&data),
            data,
            created_at: wire::now_millis(),
            fields: Vec::new(),
            space: None,
        }
    }
}

/// A comment stored by a second call: Kibana user comments and Thalamus notes.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredComment {
    pub case_id: String,
    pub text: String,
}

/// One request an emulator received, as [`Emulator::calls`] records it. Secrets are masked:
/// the values of the `authorization`, `thalamus-token` and `x-user-token` headers and of a
/// `token` query parameter read `***`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedCall {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path as sent (still percent-encoded), without the query.
    pub path: String,
    /// The query string as sent (empty when none), but with a `token` parameter masked
    /// (the query then re-encoded).
    pub query: String,
    /// Every header, in order, names lower-case, values as text (lossy).
    pub headers: Vec<(String, String)>,
}

impl RecordedCall {
    /// The first value of the header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A running emulator. Dropping the handle leaves it serving until the runtime ends; call
/// [`Emulator::shutdown`] to stop it.
pub struct Emulator {
    shared: Arc<server::Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Emulator {
    /// Binds `listen` (use 127.0.0.1:0 in tests) and serves in a background tokio task.
    pub async fn start(cfg: Config, listen: SocketAddr) -> std::io::Result<Emulator> {
        let (shared, stop, task) = server::spawn(cfg, listen).await?;
        Ok(Emulator { shared, stop, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// "http://127.0.0.1:PORT" or "https://127.0.0.1:PORT" (with tls); a wildcard listen
    /// address is given as loopback.
    pub fn url(&self) -> String {
        let mut addr = self.shared.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let scheme = if self.shared.cfg.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{addr}")
    }

    /// Every file stored, oldest first.
    pub fn files(&self) -> Vec<StoredFile> {
        self.shared.store().files.clone()
    }

    /// Every comment stored (Kibana comments, Thalamus notes), oldest first; a deleted
    /// Kibana comment stays in this record.
    pub fn comments(&self) -> Vec<StoredComment> {
        self.shared.store().comments.clone()
    }

    /// The requests received, oldest first: every one, up to the 10 000 most recent.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.shared.calls()
    }

    /// Every HTTP request received.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Relaxed)
    }

    /// Upload requests received, whatever their outcome.
    pub fn uploads(&self) -> u64 {
        self.shared.uploads.load(Relaxed)
    }

    /// Fast mode: the file bytes of the last upload (what a download of the fixed id
    /// sends); 0 before the first.
    pub fn fast_file_len(&self) -> u64 {
        self.shared.fast_file_len.load(Relaxed)
    }

    /// Token-endpoint requests received (Case IQ).
    pub fn token_requests(&self) -> u64 {
        self.shared.token_requests.load(Relaxed)
    }

    /// Connections currently open (lets tests check nothing leaks).
    pub fn open_connections(&self) -> u64 {
        self.shared.open_connections.load(Relaxed)
    }

    /// Injects `fault` into the uploads and reads that follow (None: behave); see [`Fault`].
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.shared.set_fault(fault);
    }

    /// Stops accepting and closes every connection (answers in progress are cut off);
    /// returns when the server task ended.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "emulator task failed");
        }
    }
}

/// Runs an emulator in the foreground until Ctrl-C/SIGTERM (the `casegate emulate`
/// command), logging with tracing the address it listens on.
pub async fn run(cfg: Config, listen: SocketAddr) -> std::io::Result<()> {
    let dialect = cfg.dialect;
    let emulator = Emulator::start(cfg, listen).await?;
    tracing::info!(%dialect, url = %emulator.url(), "emulator listening");
    wait_for_signal().await?;
    tracing::info!(%dialect, "emulator stopping");
    emulator.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
