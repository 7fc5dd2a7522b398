//! Shared harness for the integration tests: a real casegate on 127.0.0.1:0, configured
//! from routes.toml text, in front of real emulators on 127.0.0.1:0, driven by real HTTP
//! clients (reqwest) speaking each front dialect as its users' clients do.
#![allow(dead_code)]

pub mod process;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use casegate::dialect::DialectId;
use casegate::emulator::{self, Emulator, Fault};
use casegate::server::{self, Running};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use DialectId::{Caseiq, Kibana, Thalamus, Tines};

/// The credential clients present to casegate.
pub const CLIENT_TOKEN: &str = "client-secret-0123456789";
/// The credential casegate presents upstream.
pub const UPSTREAM_TOKEN: &str = "upstream-secret-9876543210";

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// A case id the back dialect's emulator accepts.
pub fn case_id_for(back: DialectId) -> &'static str {
    match back {
        Thalamus | Tines => "4242",
        Caseiq => "3f2b7c8e-1d4a-4e5f-9a6b-7c8d9e0f1a2b",
        Kibana => "case-7f3a",
    }
}

/// The `[routes.upstream.auth]` lines for a back dialect.
pub fn upstream_auth(back: DialectId) -> String {
    match back {
        Thalamus => format!("touchpoint = \"casegate\"\ntoken = \"{UPSTREAM_TOKEN}\""),
        Tines => format!("token = \"{UPSTREAM_TOKEN}\""),
        Caseiq => format!("client_id = \"casegate\"\nclient_secret = \"{UPSTREAM_TOKEN}\""),
        Kibana => format!("api_key = \"{UPSTREAM_TOKEN}\""),
    }
}

/// Options for one test set-up.
#[derive(Clone, Debug)]
pub struct Opts {
    pub strict: bool,
    pub max_upload_bytes: u64,
    pub timeout_secs: u64,
    pub client_tokens: bool,
    pub fault: Option<Fault>,
    pub extra_route_keys: String,
    pub extra_upstream_keys: String,
    pub spool_dir: Option<String>,
    /// Top-level keys (`ledger = ...`, `public_url = ...`), before the routes.
    pub extra_top_keys: String,
    /// Sub-tables of every route (`[routes.cases]`), after its upstream's.
    pub extra_route_tables: String,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            strict: false,
            max_upload_bytes: 64 * 1024 * 1024,
            timeout_secs: 10,
            client_tokens: true,
            fault: None,
            extra_route_keys: String::new(),
            extra_upstream_keys: String::new(),
            spool_dir: None,
            extra_top_keys: String::new(),
            extra_route_tables: String::new(),
        }
    }
}

/// A casegate with one route per requested front, all to one upstream emulator.
pub struct Harness {
    pub casegate: Running,
    pub upstream: Emulator,
    pub back: DialectId,
    pub http: reqwest::Client,
}

impl Harness {
    pub fn base(&self) -> String {
        format!("http://{}", self.casegate.addr())
    }

    /// The path prefix of the route for `front`.
    pub fn prefix(front: DialectId) -> String {
        format!("/{}", front.name())
    }

    pub async fn stop(self) {
        self.casegate.shutdown().await;
        self.upstream.shutdown().await;
    }
}

/// routes.toml text for `fronts` routed to an upstream at `url`.
pub fn routes_toml(fronts: &[DialectId], back: DialectId, url: &str, o: &Opts) -> String {
    let mut t = format!(
        "listen = \"127.0.0.1:0\"\nmax_upload_bytes = {}\n",
        o.max_upload_bytes
    );
    if let Some(d) = &o.spool_dir {
        t.push_str(&format!("spool_dir = {d:?}\n"));
    }
    t.push_str(&o.extra_top_keys);
    t.push('\n');
    for f in fronts {
        t.push_str(&format!(
            "\n[[routes]]\nname = \"{f}-to-{back}\"\nfront = \"{f}\"\nprefix = \"/{f}\"\nstrict = {}\n",
            o.strict
        ));
        if o.client_tokens {
            t.push_str(&format!("client_tokens = [\"{CLIENT_TOKEN}\"]\n"));
        }
        t.push_str(&o.extra_route_keys);
        t.push_str(&format!(
            "\n[routes.upstream]\ndialect = \"{back}\"\nurl = \"{url}\"\ntimeout_secs = {}\n{}\n[routes.upstream.auth]\n{}\n",
            o.timeout_secs,
            o.extra_upstream_keys,
            upstream_auth(back)
        ));
        t.push_str(&o.extra_route_tables);
        t.push('\n');
    }
    t
}

/// Starts an emulator of `back` and a casegate serving `fronts` in front of it.
pub async fn setup(fronts: &[DialectId], back: DialectId, o: Opts) -> Harness {
    let mut ec = emulator::Config::new(back);
    ec.tokens = vec![UPSTREAM_TOKEN.to_string()];
    ec.fault = o.fault.clone();
    let upstream = Emulator::start(ec, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let casegate = start_casegate(&routes_toml(fronts, back, &upstream.url(), &o)).await;
    Harness {
        casegate,
        upstream,
        back,
        http: client(),
    }
}

pub async fn start_casegate(toml: &str) -> Running {
    let env = |_: &str| None;
    let mut cfg =
        casegate::config::parse(toml, &env, false).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    server::start(&cfg).await.unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// One upload, dialect-neutral; each front builds its own request from it.
#[derive(Clone, Debug, Default)]
pub struct Up {
    pub case_id: String,
    pub file_name: String,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
    pub comment: Option<String>,
    pub author_email: Option<String>,
    pub block_id: Option<i64>,
    pub tags: Vec<String>,
    pub locale: Option<String>,
    /// Kibana `filename` field.
    pub display_name: Option<String>,
}

/// What came back.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    /// `Casegate-Dropped` as a list.
    pub fn dropped(&self) -> Vec<String> {
        self.header("casegate-dropped")
            .map(|h| h.split(", ").map(str::to_string).collect())
            .unwrap_or_default()
    }
}

pub async fn reply(r: reqwest::Response) -> Reply {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    Reply {
        status,
        headers,
        body,
    }
}

/// Credentials a client presents: right, wrong, or none.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cred {
    Good,
    Wrong,
    Missing,
}

fn file_part(up: &Up) -> reqwest::multipart::Part {
    let mut p = reqwest::multipart::Part::bytes(up.data.clone()).file_name(up.file_name.clone());
    if let Some(ct) = &up.content_type {
        p = p.mime_str(ct).unwrap();
    }
    p
}

/// A Case IQ access token from casegate's token endpoint.
pub async fn caseiq_token(http: &reqwest::Client, base: &str, secret: &str) -> String {
    let r = http
        .post(format!("{base}/auth/oauth2/token"))
        .json(&serde_json::json!({"grant_type": "client_credentials", "client_id": "me", "client_secret": secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

/// Sends `up` to casegate in the `front` dialect, under `base` (scheme, host and the
/// route's prefix).
pub async fn send(
    http: &reqwest::Client,
    front: DialectId,
    base: &str,
    up: &Up,
    cred: Cred,
) -> Reply {
    let token = match cred {
        Cred::Good => CLIENT_TOKEN.to_string(),
        Cred::Wrong => "not-the-token".to_string(),
        Cred::Missing => String::new(),
    };
    let req = match front {
        Thalamus => {
            let form = reqwest::multipart::Form::new()
                .percent_encode_noop()
                .part("file", file_part(up));
            let mut url = format!("{base}/api/v4/cases/{}/files", up.case_id);
            if cred != Cred::Missing {
                url.push_str(&format!("?touchpoint=tests&token={token}"));
            }
            http.post(url).multipart(form)
        }
        Tines => {
            let body = tines_body(up);
            let mut r = http
                .post(format!("{base}/api/v2/cases/{}/files", up.case_id))
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap());
            if cred != Cred::Missing {
                r = r.bearer_auth(&token);
            }
            r
        }
        Caseiq => {
            let bearer = match cred {
                Cred::Good => Some(caseiq_token(http, base, CLIENT_TOKEN).await),
                Cred::Wrong => Some("cgt1.99999999999.x.y".to_string()),
                Cred::Missing => None,
            };
            let mut form = reqwest::multipart::Form::new()
                .percent_encode_noop()
                .text("caseId", up.case_id.clone());
            if let Some(d) = &up.comment {
                form = form.text("description", d.clone());
            }
            if let Some(l) = &up.locale {
                form = form.text("templateLocale", l.clone());
            }
            for t in &up.tags {
                form = form.text("bulkTags[]", t.clone());
            }
            form = form.part("file", file_part(up));
            let mut r = http
                .post(format!("{base}/api-public/1.0/save_file"))
                .multipart(form);
            if let Some(b) = bearer {
                r = r.bearer_auth(b);
            }
            r
        }
        Kibana => {
            let mut form = reqwest::multipart::Form::new().percent_encode_noop();
            if let Some(d) = &up.display_name {
                form = form.text("filename", d.clone());
            }
            form = form.part("file", file_part(up));
            let mut r = http
                .post(format!("{base}/api/cases/{}/files", up.case_id))
                .header("kbn-xsrf", "true")
                .multipart(form);
            if cred != Cred::Missing {
                r = r.header("authorization", format!("ApiKey {token}"));
            }
            r
        }
    };
    reply(req.send().await.unwrap()).await
}

/// The Tines JSON body for `up`, with nulls for absent fields as real clients send.
pub fn tines_body(up: &Up) -> Value {
    serde_json::json!({
        "filename": up.file_name,
        "file_contents": base64::engine::general_purpose::STANDARD.encode(&up.data),
        "value": up.comment,
        "author_email": up.author_email,
        "team_case_block_id": up.block_id,
    })
}

/// The keys of a JSON object, sorted.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

pub fn sorted(k: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = k.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Fields of a stored file, grouped.
pub fn fields(f: &emulator::StoredFile) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &f.fields {
        m.entry(k.clone()).or_default().push(v.clone());
    }
    m
}

/// The error code name Case IQ puts in `message` for a status.
pub fn caseiq_code(status: u16) -> &'static str {
    match status {
        400 => "BAD_REQUEST",
        401 => "UNAUTHORIZED",
        403 => "FORBIDDEN",
        404 => "NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        413 => "PAYLOAD_TOO_LARGE",
        415 => "UNSUPPORTED_MEDIA_TYPE",
        416 => "RANGE_NOT_SATISFIABLE",
        422 => "UNPROCESSABLE_ENTITY",
        502 => "BAD_GATEWAY",
        503 => "SERVICE_UNAVAILABLE",
        504 => "GATEWAY_TIMEOUT",
        _ => panic!("no code for {status}"),
    }
}

/// Asserts `r` is `front`'s error form for `status` with `Casegate-Error: code`;
/// `upstream` marks the failures Thalamus reports as a logical failure (200 FAILED).
/// Returns the message, where the dialect carries one.
pub fn assert_error(
    front: DialectId,
    r: &Reply,
    status: u16,
    code: &str,
    upstream: bool,
) -> Option<String> {
    let ctx = format!(
        "{front}: {} {:?} {}",
        r.status,
        r.header("casegate-error"),
        r.text()
    );
    assert_eq!(r.header("casegate-error").as_deref(), Some(code), "{ctx}");
    match front {
        Thalamus => {
            let want = if upstream { 200 } else { status };
            assert_eq!(r.status, want, "{ctx}");
            assert_eq!(r.text(), "FAILED", "{ctx}");
            None
        }
        Tines => {
            assert_eq!(r.status, status, "{ctx}");
            let v = r.json();
            assert_eq!(keys(&v), ["errors"], "{ctx}");
            let errs = v["errors"].as_array().unwrap();
            assert_eq!(errs.len(), 1, "{ctx}");
            assert_eq!(keys(&errs[0]), ["message"], "{ctx}");
            let m = errs[0]["message"].as_str().unwrap().to_string();
            assert!(!m.is_empty(), "{ctx}");
            Some(m)
        }
        Caseiq => {
            assert_eq!(r.status, status, "{ctx}");
            let v = r.json();
            assert_eq!(
                keys(&v),
                sorted(&["httpstatus", "message", "meta", "name"]),
                "{ctx}"
            );
            assert_eq!(v["name"], "SERVICE_ACCOUNT_ERROR", "{ctx}");
            assert_eq!(v["httpstatus"], status, "{ctx}");
            assert_eq!(v["message"], caseiq_code(status), "{ctx}");
            assert_eq!(keys(&v["meta"]), ["message"], "{ctx}");
            Some(v["meta"]["message"].as_str().unwrap().to_string())
        }
        Kibana => {
            assert_eq!(r.status, status, "{ctx}");
            let v = r.json();
            assert_eq!(
                keys(&v),
                sorted(&["error", "message", "statusCode"]),
                "{ctx}"
            );
            assert_eq!(v["statusCode"], status, "{ctx}");
            let reason = http::StatusCode::from_u16(status)
                .unwrap()
                .canonical_reason()
                .unwrap();
            assert_eq!(v["error"], reason, "{ctx}");
            Some(v["message"].as_str().unwrap().to_string())
        }
    }
}

/// A small upload any back accepts.
pub fn small_upload(back: DialectId) -> Up {
    Up {
        case_id: case_id_for(back).into(),
        file_name: "notes.txt".into(),
        content_type: Some("text/plain".into()),
        data: b"hello, case".to_vec(),
        ..Default::default()
    }
}

/// A CA and a server certificate for 127.0.0.1 and localhost, written as PEM files;
/// returns (CA PEM, cert path, key path).
pub fn pki(dir: &std::path::Path) -> (Vec<u8>, std::path::PathBuf, std::path::PathBuf) {
    pki_until(dir, None)
}

/// [`pki`], the server certificate valid until the start (00:00 UTC) of the day
/// `until` days after 1970-01-01 when given (rcgen's default otherwise: 4096).
pub fn pki_until(
    dir: &std::path::Path,
    until: Option<u64>,
) -> (Vec<u8>, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "casegate edge test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    if let Some(days) = until {
        let (y, m, d) = casegate::upload::civil_from_days(days);
        params.not_after = rcgen::date_time_ymd(y as i32, m as u8, d as u8);
    }
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let (cert_path, key_path) = (dir.join("casegate.pem"), dir.join("casegate-key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (ca.pem().into_bytes(), cert_path, key_path)
}

// ---- several routes, several upstreams ----

/// An emulator of every back dialect (in `DialectId::ALL` order), accepting
/// [`UPSTREAM_TOKEN`].
pub async fn every_back() -> Vec<Emulator> {
    let mut emulators = Vec::new();
    for back in DialectId::ALL {
        let mut ec = emulator::Config::new(back);
        ec.tokens = vec![UPSTREAM_TOKEN.to_string()];
        emulators.push(
            Emulator::start(ec, "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap(),
        );
    }
    emulators
}

/// routes.toml with a route per pairing (`{front}-to-{back}` at `/{front}-{back}`) to
/// `emulators` (one per back, in `DialectId::ALL` order), `top` keys first and
/// `extra(front, back)` keys in each route.
pub fn pairings_toml(
    emulators: &[Emulator],
    top: &str,
    extra: impl Fn(DialectId, DialectId) -> String,
) -> String {
    let mut toml = format!("listen = \"127.0.0.1:0\"\nmax_upload_bytes = 67108864\n{top}\n");
    for (back, emu) in DialectId::ALL.into_iter().zip(emulators) {
        for front in DialectId::ALL {
            toml.push_str(&format!(
                "\n[[routes]]\nname = \"{front}-to-{back}\"\nfront = \"{front}\"\nprefix = \"/{front}-{back}\"\nclient_tokens = [\"{CLIENT_TOKEN}\"]\n{}\n[routes.upstream]\ndialect = \"{back}\"\nurl = \"{}\"\ntimeout_secs = 10\n\n[routes.upstream.auth]\n{}\n",
                extra(front, back),
                emu.url(),
                upstream_auth(back)
            ));
        }
    }
    toml
}

/// Every pairing's round trip over `base(front, back)` (routes as [`pairings_toml`] makes
/// them, to `emulators`): an upload whose bytes reach the upstream whole, downloaded
/// twice, listed and read where the front can, then deleted where both sides can. Each
/// request may land on another replica behind a balancer.
pub async fn every_pairing_round_trip(
    http: &reqwest::Client,
    emulators: &[Emulator],
    base: impl Fn(DialectId, DialectId) -> String,
) {
    for (back, emulator) in DialectId::ALL.into_iter().zip(emulators) {
        for front in DialectId::ALL {
            let ctx = format!("{front}->{back}");
            let c = FrontClient::new(http, front, &base(front, back), Cred::Good).await;
            let data = random_bytes(50_000 + front as usize * 1000, back as u64 + 1);
            let mut up = small_upload(back);
            up.file_name = "evidence.pdf".into();
            up.content_type = Some("application/pdf".into());
            up.data = data.clone();
            if front == Kibana {
                up.display_name = Some(up.file_name.clone());
            }
            let r = c.upload(&up).await;
            assert_eq!(r.status, 200, "{ctx}: {}", r.text());
            let stored = emulator.files().pop().unwrap();
            assert_eq!(stored.sha256, sha256_hex(&data), "{ctx}");
            let id = answer_file_id(front, &r, &stored.id);
            // Read it back several times: each request may land on either replica, and
            // both must know the same id.
            for _ in 0..2 {
                let d = c.download(&up.case_id, &id).await;
                assert_eq!(d.status, 200, "{ctx}: download {}", d.text());
                assert_eq!(
                    sha256_hex(&d.body),
                    sha256_hex(&data),
                    "{ctx}: download bytes"
                );
                if front != Thalamus {
                    let l = c.list(&up.case_id, "").await;
                    assert_eq!(l.status, 200, "{ctx}: list {}", l.text());
                    assert!(l.text().contains(&id), "{ctx}: {id} listed: {}", l.text());
                    let g = c.get(&up.case_id, &id).await;
                    assert_eq!(g.status, 200, "{ctx}: get {}", g.text());
                }
            }
            // (Kibana over Kibana deletes by the comment id, which reading.rs covers.)
            if front != Caseiq && back != Caseiq && !(front == Kibana && back == Kibana) {
                let d = c.delete(&up.case_id, &id).await;
                assert!(
                    d.status == 204 || d.text() == "true",
                    "{ctx}: delete {} {}",
                    d.status,
                    d.text()
                );
                assert!(
                    !emulator.files().iter().any(|f| f.id == stored.id),
                    "{ctx}: gone upstream"
                );
            }
        }
    }
}

/// The sum of the samples of `family` on the admin listener's `/metrics` whose labels
/// hold each of `labels` (`status="499"`); 0 when none does.
pub async fn metric_sum(
    http: &reqwest::Client,
    admin: std::net::SocketAddr,
    family: &str,
    labels: &[&str],
) -> f64 {
    let text = http
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(family)?;
            let (labelled, value) = rest.rsplit_once(' ')?;
            let own = labelled.is_empty() || labelled.starts_with('{');
            (own && labels.iter().all(|want| labelled.contains(want))).then_some(value)
        })
        .filter_map(|v| v.parse::<f64>().ok())
        .sum()
}

/// The front id an upload's answer gives the new file, as the client would read it.
pub fn answer_file_id(front: DialectId, r: &Reply, stored_id: &str) -> String {
    let v = r.json();
    let text = |v: &Value| match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => panic!("not an id: {other}"),
    };
    match front {
        Thalamus => {
            let list = v["attachments"]["attachements"].as_array().unwrap();
            text(&list.last().unwrap()["id"])
        }
        Tines | Caseiq => text(&v["id"]),
        Kibana => {
            let comments = v["comments"].as_array().unwrap();
            let c = comments
                .iter()
                .find(|c| c["externalReferenceId"] == stored_id)
                .unwrap_or_else(|| panic!("no comment for {stored_id}: {v}"));
            text(&c["externalReferenceId"])
        }
    }
}

// ---- reading back (SPEC 7) ----

impl Harness {
    /// Stops casegate and starts a new one from the same routes (`fronts`, `o`) in front
    /// of the same upstream, which keeps its files.
    pub async fn restart(self, fronts: &[DialectId], o: &Opts) -> Harness {
        let Harness {
            casegate,
            upstream,
            back,
            http,
        } = self;
        casegate.shutdown().await;
        let casegate = start_casegate(&routes_toml(fronts, back, &upstream.url(), o)).await;
        Harness {
            casegate,
            upstream,
            back,
            http,
        }
    }

    /// A client of the `front` route, with the right credential.
    pub async fn client(&self, front: DialectId) -> FrontClient {
        let base = format!("{}{}", self.base(), Harness::prefix(front));
        FrontClient::new(&self.http, front, &base, Cred::Good).await
    }

    /// The route name of `front`'s route.
    pub fn route(&self, front: DialectId) -> String {
        format!("{front}-to-{}", self.back)
    }

    /// A request straight to the upstream emulator, with casegate's upstream credential.
    pub fn upstream_request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self
            .http
            .request(method, format!("{}{path}", self.upstream.url()));
        match self.back {
            Thalamus => r
                .header("thalamus-touchpoint", "casegate")
                .header("thalamus-token", UPSTREAM_TOKEN),
            Tines | Caseiq => r.bearer_auth(UPSTREAM_TOKEN),
            Kibana => r.header("authorization", format!("ApiKey {UPSTREAM_TOKEN}")),
        }
    }

    /// The ledger's row of `front`'s route for a file the upstream stored.
    pub async fn ledger_row(
        &self,
        front: DialectId,
        stored: &emulator::StoredFile,
    ) -> casegate::ledger::Row {
        let mut rows = self.ledger_rows(front, stored).await;
        let route = self.route(front);
        assert_eq!(rows.len(), 1, "{route}: one ledger row for {}", stored.id);
        rows.pop().unwrap()
    }

    /// The ledger's rows (one, or none) of `front`'s route for a file the upstream
    /// stored.
    pub async fn ledger_rows(
        &self,
        front: DialectId,
        stored: &emulator::StoredFile,
    ) -> Vec<casegate::ledger::Row> {
        self.casegate
            .gateway()
            .ledger()
            .by_back(&self.route(front), vec![stored.id.clone()])
            .await
            .unwrap()
    }
}

/// A client of one front dialect: its credential (a Case IQ client fetches its access
/// token from casegate first) and the paths of every reading-back operation (SPEC 7.1).
/// Ids are the front's: for Kibana, `get` and `delete` take the comment id, `download`
/// the file id.
pub struct FrontClient {
    pub http: reqwest::Client,
    pub front: DialectId,
    /// Scheme, host and the route's prefix (and a Kibana `/s/{space}`).
    pub base: String,
    pub cred: Cred,
    /// Case IQ: the access token casegate issued.
    token: String,
}

impl FrontClient {
    pub async fn new(http: &reqwest::Client, front: DialectId, base: &str, cred: Cred) -> Self {
        let token = match (front, cred) {
            (Caseiq, Cred::Good) => caseiq_token(http, base, CLIENT_TOKEN).await,
            (_, Cred::Good) => CLIENT_TOKEN.to_string(),
            (Caseiq, _) => "cgt1.99999999999.x.y".to_string(),
            _ => "not-the-token".to_string(),
        };
        FrontClient {
            http: http.clone(),
            front,
            base: base.to_string(),
            cred,
            token,
        }
    }

    /// The same client under another base (a Kibana space).
    pub fn under(&self, base: &str) -> Self {
        FrontClient {
            http: self.http.clone(),
            front: self.front,
            base: base.to_string(),
            cred: self.cred,
            token: self.token.clone(),
        }
    }

    /// A request to an absolute `url` with the client's credential (Thalamus: as query
    /// parameters, as its clients send them).
    pub fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        if self.cred == Cred::Missing {
            return self.http.request(method, url);
        }
        match self.front {
            Thalamus => {
                let sep = if url.contains('?') { '&' } else { '?' };
                let url = format!("{url}{sep}touchpoint=tests&token={}", self.token);
                self.http.request(method, url)
            }
            Tines | Caseiq => self.http.request(method, url).bearer_auth(&self.token),
            Kibana => self
                .http
                .request(method, url)
                .header("authorization", format!("ApiKey {}", self.token)),
        }
    }

    /// `method` on `path` under the base, with the credential.
    pub async fn call(&self, method: reqwest::Method, path: &str) -> Reply {
        let url = format!("{}{path}", self.base);
        reply(self.request(method, &url).send().await.unwrap()).await
    }

    /// GET of an absolute URL (a link in an answer), with the credential.
    pub async fn follow(&self, url: &str) -> Reply {
        reply(
            self.request(reqwest::Method::GET, url)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn upload(&self, up: &Up) -> Reply {
        send(&self.http, self.front, &self.base, up, self.cred).await
    }

    /// The list path of a case, with extra query parameters (`per_page=2&page=2`).
    pub fn list_path(&self, case: &str, query: &str) -> String {
        let q = |sep: char| {
            if query.is_empty() {
                String::new()
            } else {
                format!("{sep}{query}")
            }
        };
        match self.front {
            Tines => format!("/api/v2/cases/{case}/files{}", q('?')),
            Caseiq => format!("/api-public/1.0/attachments?objectId={case}{}", q('&')),
            Kibana => format!("/api/cases/{case}{}", q('?')),
            Thalamus => panic!("thalamus has no list"),
        }
    }

    pub async fn list(&self, case: &str, query: &str) -> Reply {
        self.call(reqwest::Method::GET, &self.list_path(case, query))
            .await
    }

    /// One file's record (Kibana: the `.files` comment, by comment id).
    pub fn get_path(&self, case: &str, id: &str) -> String {
        match self.front {
            Tines => format!("/api/v2/cases/{case}/files/{id}"),
            Caseiq => format!("/api-public/1.0/attachment/{id}"),
            Kibana => format!("/api/cases/{case}/comments/{id}"),
            Thalamus => panic!("thalamus has no record"),
        }
    }

    pub async fn get(&self, case: &str, id: &str) -> Reply {
        self.call(reqwest::Method::GET, &self.get_path(case, id))
            .await
    }

    /// Tines `info`.
    pub async fn info(&self, case: &str, id: &str) -> Reply {
        assert_eq!(self.front, Tines, "only tines has info");
        self.call(
            reqwest::Method::GET,
            &format!("/api/v2/cases/{case}/files/{id}/info"),
        )
        .await
    }

    /// The download path (Kibana: by file id, owner `cases`).
    pub fn download_path(&self, case: &str, id: &str) -> String {
        match self.front {
            Thalamus => format!("/api/v4/cases/files/{id}"),
            Tines => format!("/api/v2/cases/{case}/files/{id}/download"),
            Caseiq => format!("/api-public/1.0/attachment/{id}/attachment"),
            Kibana => format!("/api/files/files/casesFilesCases/{id}/blob"),
        }
    }

    /// The download request, not yet sent (for a `Range` header or a streamed read).
    pub fn download_request(&self, case: &str, id: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{}", self.base, self.download_path(case, id));
        self.request(reqwest::Method::GET, &url)
    }

    pub async fn download(&self, case: &str, id: &str) -> Reply {
        reply(self.download_request(case, id).send().await.unwrap()).await
    }

    /// The delete path (Case IQ has none: a DELETE of its record path).
    pub fn delete_path(&self, case: &str, id: &str) -> String {
        match self.front {
            Thalamus => format!("/api/v4/cases/{case}/files/{id}"),
            Tines => format!("/api/v2/cases/{case}/files/{id}"),
            Caseiq => format!("/api-public/1.0/attachment/{id}"),
            Kibana => format!("/api/cases/{case}/comments/{id}"),
        }
    }

    /// A delete (Kibana: with `kbn-xsrf`, by comment id).
    pub async fn delete(&self, case: &str, id: &str) -> Reply {
        let url = format!("{}{}", self.base, self.delete_path(case, id));
        let mut r = self.request(reqwest::Method::DELETE, &url);
        if self.front == Kibana {
            r = r.header("kbn-xsrf", "true");
        }
        reply(r.send().await.unwrap()).await
    }
}

/// The length of the first HTTP/1.1 answer in `got`, bytes read from a raw socket: its
/// head and the body its `Content-Length` announces, once the head has arrived. A test
/// reads until `got` holds that many bytes.
pub fn framed_answer_len(got: &[u8]) -> Option<usize> {
    let end = got.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().expect("a length"))
        .expect("a framed answer");
    Some(end + 4 + length)
}
