//! The system under test, as separate processes: one `casegate emulate --fast` per back
//! dialect, and one `casegate serve` with a generated routes.toml holding a route per
//! pairing (prefix `/{front}-{back}`), all on 127.0.0.1 ports the kernel picks. Everything
//! lives in a temporary directory (routes.toml and the spool directory) that goes away
//! with the stack, after the processes are killed. For `load`, nginx also runs (see
//! [`crate::nginx`]), one `proxy_pass` per back dialect in front of the same emulators,
//! with its files in the same temporary directory.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use casegate::dialect::DialectId;
use tempfile::TempDir;

use crate::dialects::{Endpoint, Pairing, TinesTail, CLIENT_TOKEN, UPSTREAM_TOKEN};
use crate::measure;
use crate::nginx::Nginx;
use crate::procs::Proc;
use crate::Res;

/// casegate's log filter: warnings, plus the start-up line that gives its address (the
/// access log, target `casegate::access`, stays off).
pub const CASEGATE_LOG: &str = "warn,casegate::server=info";

/// How the stack is started.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// casegate's `CASEGATE_LOG`.
    pub casegate_log: String,
    /// Whether nginx proxies to the emulators too.
    pub nginx: bool,
    /// casegate's `ledger` (default: its SQLite file beside the generated routes.toml).
    pub ledger: Option<String>,
    /// Whether the emulators name a new file id in every upload answer (`--unique-ids`),
    /// so that the ledger records a row per upload; else one fixed id, one row.
    pub unique_ids: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            casegate_log: CASEGATE_LOG.to_owned(),
            nginx: false,
            ledger: None,
            unique_ids: false,
        }
    }
}

/// Larger than any file the benchmarks send (4 GiB).
const MAX_UPLOAD_BYTES: u64 = 4 << 30;

/// Overrides of routes.toml keys that must not leak in from the caller's environment.
const CONFIG_OVERRIDES: [&str; 6] = [
    "CASEGATE_CONFIG",
    "CASEGATE_LEDGER",
    "CASEGATE_LISTEN",
    "CASEGATE_MAX_UPLOAD_BYTES",
    "CASEGATE_MAX_IN_FLIGHT",
    "CASEGATE_SPOOL_DIR",
];

/// The running processes. Fields drop in order: casegate, nginx, the emulators, then the
/// temporary directory.
pub struct Stack {
    casegate: Proc,
    casegate_addr: SocketAddr,
    nginx: Option<Nginx>,
    emulators: Vec<(DialectId, Proc, SocketAddr)>,
    bin: PathBuf,
    config: PathBuf,
    casegate_log: String,
    /// Whether casegate's peak RSS can be reset in place.
    pub can_reset_peak: bool,
    _dir: TempDir,
}

impl Stack {
    /// Starts an emulator for every back dialect of `pairings` and casegate in front of
    /// them, after `casegate check` accepted the generated routes.toml; and nginx in front
    /// of them too when `opts.nginx`.
    pub fn start(bin: &Path, pairings: &[Pairing], opts: &StackOptions) -> Res<Stack> {
        let dir = tempfile::Builder::new()
            .prefix("casegate-bench-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let spool = dir.path().join("spool");
        std::fs::create_dir(&spool)
            .map_err(|e| format!("cannot create {}: {e}", spool.display()))?;

        let mut emulators = Vec::new();
        for pairing in pairings {
            if emulators.iter().any(|(d, _, _)| *d == pairing.back) {
                continue;
            }
            let (proc, addr) = start_emulator(bin, pairing.back, opts.unique_ids)?;
            emulators.push((pairing.back, proc, addr));
        }
        let upstream = |back: DialectId| {
            emulators
                .iter()
                .find(|(d, _, _)| *d == back)
                .map(|(_, _, addr)| *addr)
        };
        let mut routes = String::new();
        for pairing in pairings {
            if let Some(addr) = upstream(pairing.back) {
                route_toml(&mut routes, *pairing, addr);
            }
        }
        let config = dir.path().join("routes.toml");
        let ledger = opts.ledger.as_deref().map_or_else(String::new, |url| {
            format!("ledger = {}\n", toml_string(url))
        });
        let text = format!(
            "listen = \"127.0.0.1:0\"\nmax_upload_bytes = {MAX_UPLOAD_BYTES}\n\
             max_in_flight = 1024\nspool_dir = {}\n{ledger}{routes}",
            toml_string(&spool.to_string_lossy()),
        );
        std::fs::write(&config, text)
            .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
        check_config(bin, &config)?;

        let nginx = if opts.nginx {
            let upstreams: Vec<(DialectId, SocketAddr)> =
                emulators.iter().map(|(d, _, addr)| (*d, *addr)).collect();
            Some(Nginx::start(&dir.path().join("nginx"), &upstreams)?)
        } else {
            None
        };
        let (casegate, casegate_addr) = start_casegate(bin, &config, &opts.casegate_log)?;
        let can_reset_peak = measure::can_reset_peak(casegate.pid());
        Ok(Stack {
            casegate,
            casegate_addr,
            nginx,
            emulators,
            bin: bin.to_owned(),
            config,
            casegate_log: opts.casegate_log.clone(),
            can_reset_peak,
            _dir: dir,
        })
    }

    /// Replaces casegate with a fresh process (same routes.toml), for a measurement that
    /// must not inherit an earlier scenario's memory.
    pub fn restart_casegate(&mut self) -> Res<()> {
        let (casegate, addr) = start_casegate(&self.bin, &self.config, &self.casegate_log)?;
        // The old process is killed as it is dropped here.
        self.casegate = casegate;
        self.casegate_addr = addr;
        Ok(())
    }

    pub fn casegate_addr(&self) -> SocketAddr {
        self.casegate_addr
    }

    pub fn casegate_pid(&self) -> u32 {
        self.casegate.pid()
    }

    /// nginx, when it runs.
    pub fn nginx(&self) -> Option<&Nginx> {
        self.nginx.as_ref()
    }

    /// The emulator of `back`.
    pub fn upstream_addr(&self, back: DialectId) -> Res<SocketAddr> {
        self.emulators
            .iter()
            .find(|(d, _, _)| *d == back)
            .map(|(_, _, addr)| *addr)
            .ok_or_else(|| format!("no {back} emulator was started"))
    }

    /// An error naming whichever process has exited, with its last log lines.
    pub fn check_alive(&mut self) -> Res<()> {
        self.casegate.check_alive()?;
        if let Some(nginx) = &mut self.nginx {
            nginx.check_alive()?;
        }
        for (_, proc, _) in &mut self.emulators {
            proc.check_alive()?;
        }
        Ok(())
    }

    /// casegate's last log lines (warnings), as a message suffix.
    pub fn casegate_log(&self) -> String {
        self.casegate.recent_log()
    }

    /// Uploads one file of `len` bytes through `endpoint` (a route of this stack); gives
    /// the id the front's answer names it by. An error names what went wrong, with
    /// casegate's last log lines when it answered a failure.
    pub async fn upload_for_id(
        &self,
        endpoint: &Endpoint,
        len: u64,
        tail: TinesTail,
        timeout: Duration,
    ) -> Res<String> {
        let upload = endpoint.upload(len, tail).await?;
        let (status, answer) = crate::runner::upload_once(&upload, timeout)
            .await
            .map_err(|e| format!("uploading the file failed: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "uploading the file was answered HTTP {status}: {}{}",
                crate::runner::quote(&answer, 300),
                self.casegate_log()
            ));
        }
        endpoint.uploaded_file_id(&answer)
    }
}

fn start_emulator(bin: &Path, dialect: DialectId, unique_ids: bool) -> Res<(Proc, SocketAddr)> {
    let mut cmd = Command::new(bin);
    cmd.args([
        "emulate",
        dialect.name(),
        "--fast",
        "--listen",
        "127.0.0.1:0",
    ])
    .args(unique_ids.then_some("--unique-ids"))
    .args(["--token", UPSTREAM_TOKEN])
    .env("CASEGATE_LOG", "info");
    let name = format!("the {dialect} emulator");
    let (proc, url) = Proc::start(&name, cmd, "emulator listening", "url")?;
    let addr = url
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .and_then(|host_port| host_port.parse().ok())
        .ok_or_else(|| format!("{name} logged url={url:?}, not http://127.0.0.1:PORT"))?;
    Ok((proc, addr))
}

/// Starts `casegate serve` with `log` as its `CASEGATE_LOG` (which must let the start-up
/// line of `casegate::server` through).
pub fn start_casegate(bin: &Path, config: &Path, log: &str) -> Res<(Proc, SocketAddr)> {
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .env("CASEGATE_LOG", log);
    for var in CONFIG_OVERRIDES {
        cmd.env_remove(var);
    }
    let (proc, addr) = Proc::start("casegate", cmd, "casegate listening", "addr")?;
    let addr = addr
        .parse()
        .map_err(|e| format!("casegate logged addr={addr:?}, not an address: {e}"))?;
    Ok((proc, addr))
}

/// Runs `casegate check` on the generated routes.toml.
pub fn check_config(bin: &Path, config: &Path) -> Res<()> {
    let out = Command::new(bin)
        .arg("check")
        .arg(config)
        .env("NO_COLOR", "1")
        .output()
        .map_err(|e| format!("cannot run {} check: {e}", bin.display()))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "casegate check refused the generated {}:\n{}{}",
        config.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Appends `pairing`'s route, to the emulator at `upstream`, with the back dialect's
/// upstream credentials.
pub fn route_toml(out: &mut String, pairing: Pairing, upstream: SocketAddr) {
    let auth: &[(&str, &str)] = match pairing.back {
        DialectId::Thalamus => &[("touchpoint", "bench"), ("token", UPSTREAM_TOKEN)],
        DialectId::Tines => &[("token", UPSTREAM_TOKEN)],
        DialectId::Caseiq => &[("client_id", "bench"), ("client_secret", UPSTREAM_TOKEN)],
        DialectId::Kibana => &[("api_key", UPSTREAM_TOKEN)],
    };
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "\n[[routes]]\nname = {}\nfront = {}\nprefix = {}\nclient_tokens = [{}]\n\n\
         [routes.upstream]\ndialect = {}\nurl = {}\n\n[routes.upstream.auth]\n",
        toml_string(&pairing.route_name()),
        toml_string(pairing.front.name()),
        toml_string(&pairing.prefix()),
        toml_string(CLIENT_TOKEN),
        toml_string(pairing.back.name()),
        toml_string(&format!("http://{upstream}")),
    );
    for (key, value) in auth {
        let _ = writeln!(out, "{key} = {}", toml_string(value));
    }
}

/// A TOML basic string (a JSON string is one).
pub fn toml_string(value: &str) -> String {
    serde_json::Value::from(value).to_string()
}
