//! `deploy/` kept honest. Nothing here can be built or applied (no container engine, no
//! cluster), so these tests read the files as Docker, Kubernetes and Grafana would and
//! check that they agree with each other and with casegate itself:
//!
//! - every Kubernetes manifest parses; the kustomization lists exactly them;
//! - the ConfigMap's routes.toml (the same text as `deploy/routes.toml`, the image's
//!   default) validates with `casegate::config::parse`, every `${VAR}` it uses coming from
//!   the Deployment's `env`, and every `secretKeyRef` naming the Secret and one of its keys;
//! - probes, container ports, the Service, the config mount, the spool volume, the
//!   grace period, the PodDisruptionBudget and the HorizontalPodAutoscaler match that
//!   routes.toml and each other;
//! - the Dockerfile builds the binary with `--locked`, runs it as a numeric non-root
//!   user, carries the same routes.toml where `CASEGATE_CONFIG` points, exposes both
//!   ports, and only copies what its build context (less its ignore file) holds;
//! - the Grafana dashboard is dashboard JSON whose queries use only SPEC section 8's
//!   metric families (and `process_*`), with labels those families have.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use casegate::config::{self, Config};
use casegate::dialect::DialectId;
use casegate::ledger::LedgerUrl;
use serde::Deserialize as _;
use serde_yaml_ng::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

// ---------------------------------------------------------------------------------
// YAML helpers

/// `a.b.c` under `v`, or None.
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(v, |v, key| v.as_mapping()?.get(Value::from(key)))
}

/// The string at `path`, or a panic naming `what` and the path.
fn str_at<'a>(v: &'a Value, path: &str, what: &str) -> &'a str {
    at(v, path)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{what}: `{path}` is missing or not a string"))
}

fn seq_at<'a>(v: &'a Value, path: &str, what: &str) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{what}: `{path}` is missing or not a list"))
}

fn u64_at(v: &Value, path: &str, what: &str) -> u64 {
    at(v, path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{what}: `{path}` is missing or not a whole number"))
}

/// A `{string: string}` mapping (labels, selectors, annotations), empty when absent.
fn string_map(v: Option<&Value>, what: &str) -> BTreeMap<String, String> {
    let Some(v) = v else {
        return BTreeMap::new();
    };
    let m = v
        .as_mapping()
        .unwrap_or_else(|| panic!("{what}: not a mapping"));
    m.iter()
        .map(|(k, v)| {
            let k = k
                .as_str()
                .unwrap_or_else(|| panic!("{what}: a key is not a string"));
            let v = v
                .as_str()
                .unwrap_or_else(|| panic!("{what}: `{k}` is not a string (quote it)"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Every document of every YAML file in deploy/k8s, with its file name.
struct Manifests {
    docs: Vec<(String, Value)>,
}

const K8S: &str = "deploy/k8s";

impl Manifests {
    fn load() -> Manifests {
        let mut files: Vec<String> = std::fs::read_dir(repo().join(K8S))
            .unwrap_or_else(|e| panic!("cannot list {K8S}: {e}"))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
            .collect();
        files.sort();
        let mut docs = Vec::new();
        for f in files {
            let text = read(&format!("{K8S}/{f}"));
            for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
                let v = Value::deserialize(doc)
                    .unwrap_or_else(|e| panic!("{K8S}/{f}: document {} is not YAML: {e}", i + 1));
                if !v.is_null() {
                    docs.push((f.clone(), v));
                }
            }
        }
        Manifests { docs }
    }

    fn kind(v: &Value) -> &str {
        at(v, "kind").and_then(Value::as_str).unwrap_or("")
    }

    /// The one document of `kind`, and the file it is in.
    fn one(&self, kind: &str) -> (&str, &Value) {
        let found: Vec<_> = self
            .docs
            .iter()
            .filter(|(_, v)| Self::kind(v) == kind)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{K8S} must hold exactly one {kind}, found {} ({:?})",
            found.len(),
            found.iter().map(|(f, _)| f).collect::<Vec<_>>()
        );
        (&found[0].0, &found[0].1)
    }
}

/// What the tests need from the manifests, looked up once.
struct Deploy {
    m: Manifests,
    /// The ConfigMap's routes.toml text (its key is the file name CASEGATE_CONFIG names).
    routes_toml: String,
    secret_name: String,
    /// The Secret's keys and (placeholder) values.
    secret: BTreeMap<String, String>,
    /// The casegate container's env: name -> literal value or Secret reference.
    env: BTreeMap<String, EnvSource>,
    config_path: String,
}

#[derive(Debug, Clone)]
enum EnvSource {
    Value(String),
    Secret {
        name: String,
        key: String,
        optional: bool,
    },
}

impl Deploy {
    fn load() -> Deploy {
        let m = Manifests::load();
        let (sf, secret_doc) = m.one("Secret");
        let secret_name = str_at(secret_doc, "metadata.name", sf).to_string();
        let mut secret = string_map(at(secret_doc, "stringData"), &format!("{sf}: stringData"));
        for (k, v) in string_map(at(secret_doc, "data"), &format!("{sf}: data")) {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_bytes())
                .unwrap_or_else(|e| panic!("{sf}: data.{k} is not base64: {e}"));
            let v = String::from_utf8(bytes)
                .unwrap_or_else(|_| panic!("{sf}: data.{k} is not UTF-8 text"));
            assert!(
                secret.insert(k.clone(), v).is_none(),
                "{sf}: `{k}` is in both data and stringData"
            );
        }

        let c = container(&m);
        let mut env = BTreeMap::new();
        for e in at(c, "env")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let name = str_at(e, "name", "deployment.yaml: container env entry").to_string();
            let what = format!("deployment.yaml: env {name}");
            let src = match (at(e, "value"), at(e, "valueFrom")) {
                (Some(v), None) => EnvSource::Value(
                    v.as_str()
                        .unwrap_or_else(|| panic!("{what}: value must be a string (quote it)"))
                        .to_string(),
                ),
                (None, Some(from)) => {
                    let r = at(from, "secretKeyRef").unwrap_or_else(|| {
                        panic!("{what}: valueFrom must be a secretKeyRef (secrets come from the Secret)")
                    });
                    EnvSource::Secret {
                        name: str_at(r, "name", &what).to_string(),
                        key: str_at(r, "key", &what).to_string(),
                        optional: at(r, "optional").and_then(Value::as_bool).unwrap_or(false),
                    }
                }
                _ => panic!("{what}: needs exactly one of value and valueFrom"),
            };
            assert!(
                env.insert(name.clone(), src).is_none(),
                "deployment.yaml: env {name} is set twice"
            );
        }
        let config_path = match env.get("CASEGATE_CONFIG") {
            Some(EnvSource::Value(p)) => p.clone(),
            _ => {
                panic!("deployment.yaml: the container must set CASEGATE_CONFIG to a literal path")
            }
        };

        let (cf, cm) = m.one("ConfigMap");
        let file_name = Path::new(&config_path)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_else(|| panic!("CASEGATE_CONFIG {config_path:?} names no file"))
            .to_string();
        let key = config_map_key_for(&m, &file_name);
        let data = string_map(at(cm, "data"), &format!("{cf}: data"));
        let routes_toml = data
            .get(&key)
            .unwrap_or_else(|| {
                panic!(
                    "{cf}: data has no key {key:?}, the file CASEGATE_CONFIG ({config_path}) reads; it has {:?}",
                    data.keys().collect::<Vec<_>>()
                )
            })
            .clone();
        Deploy {
            m,
            routes_toml,
            secret_name,
            secret,
            env,
            config_path,
        }
    }

    /// What the pod's environment gives `name`: a literal, or the Secret's value.
    fn pod_env(&self, name: &str) -> Option<String> {
        match self.env.get(name)? {
            EnvSource::Value(v) => Some(v.clone()),
            EnvSource::Secret { name, key, .. } if *name == self.secret_name => {
                self.secret.get(key).cloned()
            }
            EnvSource::Secret { .. } => None,
        }
    }

    /// The ConfigMap's routes.toml parsed with the pod's environment. Returns the config
    /// and the `${VAR}`s it asked for.
    fn config(&self) -> (Config, BTreeSet<String>) {
        parse_as_pod(
            &self.routes_toml,
            "the ConfigMap's routes.toml",
            &|n: &str| self.pod_env(n),
        )
    }

    fn deployment(&self) -> &Value {
        self.m.one("Deployment").1
    }

    fn pod_spec(&self) -> &Value {
        at(self.deployment(), "spec.template.spec")
            .expect("deployment.yaml: spec.template.spec is missing")
    }

    fn pod_labels(&self) -> BTreeMap<String, String> {
        let labels = string_map(
            at(self.deployment(), "spec.template.metadata.labels"),
            "deployment.yaml: spec.template.metadata.labels",
        );
        assert!(
            !labels.is_empty(),
            "deployment.yaml: the pod template has no labels to select it by"
        );
        labels
    }

    fn container(&self) -> &Value {
        container(&self.m)
    }

    /// A container port, by number or by name, as a number.
    fn port(&self, p: &Value, what: &str) -> u16 {
        resolve_port(self.container(), p, what)
    }
}

/// The casegate container of the Deployment (the one named casegate, or the only one).
fn container(m: &Manifests) -> &Value {
    let (f, d) = m.one("Deployment");
    let cs = seq_at(d, "spec.template.spec.containers", f);
    if cs.len() == 1 {
        return &cs[0];
    }
    cs.iter()
        .find(|c| at(c, "name").and_then(Value::as_str) == Some("casegate"))
        .unwrap_or_else(|| panic!("{f}: no container named casegate"))
}

fn resolve_port(container: &Value, p: &Value, what: &str) -> u16 {
    let ports = at(container, "ports")
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if let Some(n) = p.as_u64() {
        return u16::try_from(n).unwrap_or_else(|_| panic!("{what}: port {n} is out of range"));
    }
    let name = p
        .as_str()
        .unwrap_or_else(|| panic!("{what}: the port is neither a number nor a name"));
    if let Ok(n) = name.parse::<u16>() {
        return n;
    }
    let port = ports
        .iter()
        .find(|q| at(q, "name").and_then(Value::as_str) == Some(name))
        .unwrap_or_else(|| panic!("{what}: no container port is named {name:?}"));
    u64_at(port, "containerPort", what) as u16
}

/// The ConfigMap key that ends up as `file_name` in the config volume (`items` may
/// rename it; without items the key is the file name).
fn config_map_key_for(m: &Manifests, file_name: &str) -> String {
    let (_, d) = m.one("Deployment");
    let (_, cm) = m.one("ConfigMap");
    let cm_name = str_at(cm, "metadata.name", "configmap.yaml");
    let vol = at(d, "spec.template.spec.volumes")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .find(|v| at(v, "configMap.name").and_then(Value::as_str) == Some(cm_name));
    let Some(vol) = vol else {
        return file_name.to_string();
    };
    for item in at(vol, "configMap.items")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        if at(item, "path").and_then(Value::as_str) == Some(file_name) {
            return str_at(item, "key", "configMap.items").to_string();
        }
    }
    file_name.to_string()
}

// ---------------------------------------------------------------------------------
// routes.toml helpers

/// `spool_dir = "..."` of a routes.toml text, as written.
fn spool_dir_of(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("spool_dir")?.trim_start();
        let rest = rest.strip_prefix('=')?.trim_start().strip_prefix('"')?;
        Some(rest[..rest.find('"')?].to_string())
    })
}

/// A TOML line without its comment (a `#` outside a string).
fn without_comment(line: &str) -> &str {
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some('"'), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(q), c) if c == q && !escaped => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => return &line[..i],
            _ => {}
        }
        escaped = false;
    }
    line
}

/// Every `${VAR}` in the values of a routes.toml (not its comments; `$${` is a literal).
fn vars_in(text: &str) -> BTreeSet<String> {
    let text: String = text
        .lines()
        .map(|l| format!("{}\n", without_comment(l)))
        .collect();
    let mut out = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        if !rest[..i].ends_with('$') {
            if let Some(end) = after.find('}') {
                out.insert(after[..end].to_string());
            }
        }
        rest = after;
    }
    out
}

/// Parses a routes.toml as a pod would (`env` is the pod's environment; no `CASEGATE_*`
/// overrides, which the Deployment must not set). `spool_dir` must be a directory where
/// casegate runs (the image makes it, Kubernetes mounts an emptyDir there); it is not one
/// on this machine, so only that value is pointed at a temporary directory here, and
/// the tests below check the image and the pod provide the real one.
fn parse_as_pod(
    text: &str,
    what: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Config, BTreeSet<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = text.to_string();
    if let Some(spool) = spool_dir_of(&text) {
        let local = tmp.path().to_str().unwrap();
        let before = format!("spool_dir = \"{spool}\"");
        assert!(
            text.contains(&before),
            "{what}: write spool_dir as `spool_dir = \"/path\"` (this test points it at a local directory)"
        );
        text = text.replacen(&before, &format!("spool_dir = \"{local}\""), 1);
    }
    let asked = RefCell::new(BTreeSet::new());
    let lookup = |name: &str| -> Option<String> {
        asked.borrow_mut().insert(name.to_string());
        env(name)
    };
    let cfg = config::parse(&text, &lookup, false)
        .unwrap_or_else(|e| panic!("{what} does not validate with the pod's environment:\n{e}"));
    (cfg, asked.into_inner())
}

fn unspecified(a: &SocketAddr) -> bool {
    a.ip().is_unspecified()
}

// ---------------------------------------------------------------------------------
// Kubernetes

#[test]
fn every_manifest_parses_and_the_kustomization_lists_them_all() {
    let m = Manifests::load();
    let want: &[(&str, &str)] = &[
        ("Deployment", "apps/v1"),
        ("Service", "v1"),
        ("ConfigMap", "v1"),
        ("Secret", "v1"),
        ("PodDisruptionBudget", "policy/v1"),
        ("HorizontalPodAutoscaler", "autoscaling/v2"),
    ];
    for (kind, api) in want {
        let (f, d) = m.one(kind);
        assert_eq!(
            str_at(d, "apiVersion", f),
            *api,
            "{f}: a {kind} should be {api}"
        );
        str_at(d, "metadata.name", f);
    }
    for (f, d) in &m.docs {
        let kind = Manifests::kind(d);
        assert!(
            kind == "Kustomization" || want.iter().any(|(k, _)| *k == kind),
            "{f}: unexpected kind {kind:?} (add it to this test if it belongs)"
        );
    }
    let (kf, k) = m.one("Kustomization");
    let listed: BTreeSet<String> = seq_at(k, "resources", kf)
        .iter()
        .map(|r| r.as_str().expect("resources are file names").to_string())
        .collect();
    let files: BTreeSet<String> = m
        .docs
        .iter()
        .filter(|(f, _)| f != kf)
        .map(|(f, _)| f.clone())
        .collect();
    assert_eq!(
        listed, files,
        "{kf}: `resources` must list every manifest of {K8S} (and nothing else)"
    );
}

#[test]
fn the_config_map_is_deploy_routes_toml() {
    let d = Deploy::load();
    assert!(
        d.routes_toml == read("deploy/routes.toml"),
        "configmap.yaml's routes.toml and deploy/routes.toml (the image's default) differ: \
         keep them identical (indent deploy/routes.toml by 4 spaces under `routes.toml: |`)"
    );
}

#[test]
fn the_config_maps_routes_toml_validates_with_the_secrets_values() {
    let d = Deploy::load();
    let used = vars_in(&d.routes_toml);
    let missing: Vec<_> = used.iter().filter(|v| !d.env.contains_key(*v)).collect();
    assert!(
        missing.is_empty(),
        "routes.toml uses {missing:?}, which the container's env does not provide"
    );
    for (name, src) in &d.env {
        if let EnvSource::Secret {
            name: secret,
            key,
            optional,
        } = src
        {
            assert_eq!(
                secret, &d.secret_name,
                "deployment.yaml: env {name} reads Secret {secret:?}, but the Secret is {:?}",
                d.secret_name
            );
            assert!(
                d.secret.contains_key(key),
                "deployment.yaml: env {name} reads key {key:?}, which Secret {secret} does not have"
            );
            assert!(
                !optional || !used.contains(name),
                "deployment.yaml: env {name} is optional, but routes.toml needs it (an unset ${{{name}}} stops casegate)"
            );
        }
    }
    let (cfg, asked) = d.config();
    assert_eq!(
        asked, used,
        "the variables casegate asked for differ from the ${{VAR}}s in routes.toml"
    );
    assert!(!cfg.routes.is_empty(), "routes.toml defines no routes");
}

#[test]
fn every_secret_key_is_used_and_every_value_is_a_placeholder() {
    let d = Deploy::load();
    for (key, value) in &d.secret {
        assert!(
            d.env
                .values()
                .any(|s| matches!(s, EnvSource::Secret { key: k, .. } if k == key)),
            "secret.yaml: key {key} is referenced by no env entry of the Deployment"
        );
        assert!(
            value.starts_with("REPLACE-ME"),
            "secret.yaml: {key} must be a placeholder starting with REPLACE-ME (real secrets never go into the repository)"
        );
    }
}

#[test]
fn the_deployment_does_not_override_the_config_from_its_environment() {
    let d = Deploy::load();
    for key in [
        "LISTEN",
        "MAX_UPLOAD_BYTES",
        "MAX_IN_FLIGHT",
        "SPOOL_DIR",
        "PUBLIC_URL",
        "LEDGER",
        "ADMIN_LISTEN",
        "LOG_FORMAT",
    ] {
        let var = format!("CASEGATE_{key}");
        assert!(
            !d.env.contains_key(&var),
            "deployment.yaml: {var} overrides routes.toml; set it in the ConfigMap instead, so the config these tests check is the one that runs"
        );
    }
}

#[test]
fn container_ports_are_listen_and_admin_listen() {
    let d = Deploy::load();
    let (cfg, _) = d.config();
    let admin = cfg
        .admin_listen
        .expect("routes.toml: admin_listen must be set: the probes and /metrics are on it");
    for (key, addr) in [("listen", cfg.listen), ("admin_listen", admin)] {
        assert!(
            unspecified(&addr),
            "routes.toml: {key} = {addr} must bind all interfaces (0.0.0.0): the kubelet and the Service reach the pod by its IP"
        );
    }
    assert_ne!(
        cfg.listen.port(),
        admin.port(),
        "routes.toml: listen and admin_listen must differ"
    );
    let ports: BTreeSet<u16> = seq_at(d.container(), "ports", "deployment.yaml: container")
        .iter()
        .map(|p| u64_at(p, "containerPort", "deployment.yaml: ports") as u16)
        .collect();
    assert_eq!(
        ports,
        BTreeSet::from([cfg.listen.port(), admin.port()]),
        "deployment.yaml: the container ports must be listen's and admin_listen's"
    );
}

#[test]
fn probes_use_healthz_and_readyz_on_the_admin_port() {
    let d = Deploy::load();
    let (cfg, _) = d.config();
    let admin = cfg
        .admin_listen
        .expect("routes.toml: admin_listen must be set (the probes are on it)")
        .port();
    let c = d.container();
    for (probe, path, required) in [
        ("readinessProbe", "/readyz", true),
        ("livenessProbe", "/healthz", true),
        ("startupProbe", "/healthz", false),
    ] {
        let Some(p) = at(c, probe) else {
            assert!(!required, "deployment.yaml: the container has no {probe}");
            continue;
        };
        let what = format!("deployment.yaml: {probe}");
        assert_eq!(
            str_at(p, "httpGet.path", &what),
            path,
            "{what} must GET {path}"
        );
        let port = at(p, "httpGet.port").unwrap_or_else(|| panic!("{what}: httpGet.port"));
        assert_eq!(
            d.port(port, &what),
            admin,
            "{what} must probe the admin port ({admin}, routes.toml admin_listen)"
        );
        if let Some(scheme) = at(p, "httpGet.scheme").and_then(Value::as_str) {
            assert_eq!(
                scheme, "HTTP",
                "{what}: the admin listener speaks plain HTTP"
            );
        }
    }
    let annotations = string_map(
        at(d.deployment(), "spec.template.metadata.annotations"),
        "deployment.yaml: pod annotations",
    );
    if let Some(port) = annotations.get("prometheus.io/port") {
        assert_eq!(
            port,
            &admin.to_string(),
            "deployment.yaml: prometheus.io/port must be the admin port ({admin})"
        );
    }
    if let Some(path) = annotations.get("prometheus.io/path") {
        assert_eq!(path, "/metrics", "deployment.yaml: prometheus.io/path");
    }
}

#[test]
fn the_config_map_is_mounted_where_casegate_config_points() {
    let d = Deploy::load();
    let config_path = Path::new(&d.config_path);
    let dir = config_path
        .parent()
        .and_then(|p| p.to_str())
        .expect("CASEGATE_CONFIG has a folder");
    let (_, cm) = d.m.one("ConfigMap");
    let cm_name = str_at(cm, "metadata.name", "configmap.yaml");
    let volume = seq_at(d.pod_spec(), "volumes", "deployment.yaml: pod")
        .iter()
        .find(|v| at(v, "configMap.name").and_then(Value::as_str) == Some(cm_name))
        .unwrap_or_else(|| panic!("deployment.yaml: no volume is the ConfigMap {cm_name}"));
    let vol_name = str_at(volume, "name", "deployment.yaml: volume");
    let mounts = seq_at(d.container(), "volumeMounts", "deployment.yaml: container");
    let mount = mounts
        .iter()
        .find(|m| at(m, "name").and_then(Value::as_str) == Some(vol_name))
        .unwrap_or_else(|| panic!("deployment.yaml: volume {vol_name} is not mounted"));
    let mount_path = str_at(mount, "mountPath", "deployment.yaml: volumeMount");
    match at(mount, "subPath").and_then(Value::as_str) {
        None => assert_eq!(
            mount_path, dir,
            "deployment.yaml: the ConfigMap must be mounted at {dir}, the folder of CASEGATE_CONFIG ({})",
            d.config_path
        ),
        Some(_) => assert_eq!(
            mount_path, d.config_path,
            "deployment.yaml: a subPath mount must be at CASEGATE_CONFIG"
        ),
    }
    // `serve --config X` would win over CASEGATE_CONFIG.
    let args: Vec<&str> = at(d.container(), "args")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if let Some(i) = args.iter().position(|a| *a == "--config") {
        assert_eq!(
            args.get(i + 1).copied(),
            Some(d.config_path.as_str()),
            "deployment.yaml: args --config must be CASEGATE_CONFIG's path"
        );
    }
}

#[test]
fn the_root_filesystem_is_read_only_and_the_spool_is_an_empty_dir() {
    let d = Deploy::load();
    let spool = spool_dir_of(&d.routes_toml)
        .expect("routes.toml: set spool_dir (the root filesystem is read-only)");
    let c = d.container();
    assert_eq!(
        at(c, "securityContext.readOnlyRootFilesystem").and_then(Value::as_bool),
        Some(true),
        "deployment.yaml: the container must have readOnlyRootFilesystem: true"
    );
    assert_eq!(
        at(c, "securityContext.allowPrivilegeEscalation").and_then(Value::as_bool),
        Some(false),
        "deployment.yaml: the container must have allowPrivilegeEscalation: false"
    );
    let non_root = |v: Option<&Value>| v.and_then(Value::as_bool) == Some(true);
    assert!(
        non_root(at(c, "securityContext.runAsNonRoot"))
            || non_root(at(d.pod_spec(), "securityContext.runAsNonRoot")),
        "deployment.yaml: runAsNonRoot: true is missing"
    );
    let empty_dirs: BTreeSet<&str> = seq_at(d.pod_spec(), "volumes", "deployment.yaml: pod")
        .iter()
        .filter(|v| at(v, "emptyDir").is_some())
        .filter_map(|v| at(v, "name").and_then(Value::as_str))
        .collect();
    let mounted = seq_at(c, "volumeMounts", "deployment.yaml: container")
        .iter()
        .any(|m| {
            let path = at(m, "mountPath").and_then(Value::as_str).unwrap_or("");
            let name = at(m, "name").and_then(Value::as_str).unwrap_or("");
            empty_dirs.contains(name)
                && Path::new(&spool).starts_with(path)
                && at(m, "readOnly").and_then(Value::as_bool) != Some(true)
        });
    assert!(
        mounted,
        "deployment.yaml: spool_dir {spool} must be on a writable emptyDir mount"
    );
}

#[test]
fn the_grace_period_outlasts_the_drain() {
    let d = Deploy::load();
    let (cfg, _) = d.config();
    let grace = Duration::from_secs(u64_at(
        d.pod_spec(),
        "terminationGracePeriodSeconds",
        "deployment.yaml: pod spec",
    ));
    let drain = cfg.drain_delay + cfg.drain_timeout + casegate::server::LEDGER_DRAIN;
    assert!(
        grace > drain,
        "deployment.yaml: terminationGracePeriodSeconds ({}) must exceed drain_delay_secs + drain_timeout_secs + the ledger's last chance ({}), or the kubelet kills requests still draining",
        grace.as_secs(),
        drain.as_secs()
    );
    assert!(
        at(d.container(), "lifecycle.preStop").is_none(),
        "deployment.yaml: no preStop hook: casegate drains itself on SIGTERM, and a hook's time would come out of the grace period"
    );
}

#[test]
fn the_service_exposes_the_public_port_only() {
    let d = Deploy::load();
    let (cfg, _) = d.config();
    let admin = cfg
        .admin_listen
        .expect("routes.toml: admin_listen must be set (the probes are on it)")
        .port();
    let (sf, svc) = d.m.one("Service");
    let selector = string_map(at(svc, "spec.selector"), &format!("{sf}: spec.selector"));
    assert!(!selector.is_empty(), "{sf}: the Service selects no pods");
    let labels = d.pod_labels();
    for (k, v) in &selector {
        assert_eq!(
            labels.get(k),
            Some(v),
            "{sf}: selector {k}={v} does not match the Deployment's pods"
        );
    }
    let targets: Vec<u16> = seq_at(svc, "spec.ports", sf)
        .iter()
        .map(|p| {
            let t = at(p, "targetPort")
                .or_else(|| at(p, "port"))
                .unwrap_or_else(|| panic!("{sf}: a port has neither targetPort nor port"));
            d.port(t, &format!("{sf}: targetPort"))
        })
        .collect();
    assert!(
        targets.contains(&cfg.listen.port()),
        "{sf}: no port targets the public port {} (routes.toml listen)",
        cfg.listen.port()
    );
    assert!(
        !targets.contains(&admin),
        "{sf}: the admin port {admin} (/metrics, /readyz) must not be exposed by the Service"
    );
}

#[test]
fn the_deployment_selects_its_pods() {
    let d = Deploy::load();
    let labels = d.pod_labels();
    let sel = string_map(
        at(d.deployment(), "spec.selector.matchLabels"),
        "deployment.yaml: spec.selector.matchLabels",
    );
    assert!(
        !sel.is_empty(),
        "deployment.yaml: spec.selector.matchLabels is empty"
    );
    for (k, v) in &sel {
        assert_eq!(
            labels.get(k),
            Some(v),
            "deployment.yaml: selector {k}={v} is not a label of its pod template"
        );
    }
}

#[test]
fn the_pdb_and_hpa_target_the_deployment() {
    let d = Deploy::load();
    let name = str_at(d.deployment(), "metadata.name", "deployment.yaml");
    let labels = d.pod_labels();

    let (pf, pdb) = d.m.one("PodDisruptionBudget");
    let sel = string_map(
        at(pdb, "spec.selector.matchLabels"),
        &format!("{pf}: spec.selector.matchLabels"),
    );
    assert!(
        !sel.is_empty(),
        "{pf}: the PodDisruptionBudget selects no pods"
    );
    for (k, v) in &sel {
        assert_eq!(
            labels.get(k),
            Some(v),
            "{pf}: selector {k}={v} does not match the Deployment's pods"
        );
    }

    let (hf, hpa) = d.m.one("HorizontalPodAutoscaler");
    assert_eq!(
        str_at(hpa, "spec.scaleTargetRef.kind", hf),
        "Deployment",
        "{hf}: scaleTargetRef.kind"
    );
    assert_eq!(
        str_at(hpa, "spec.scaleTargetRef.name", hf),
        name,
        "{hf}: scaleTargetRef.name must be the Deployment"
    );
    assert_eq!(
        str_at(hpa, "spec.scaleTargetRef.apiVersion", hf),
        "apps/v1",
        "{hf}: scaleTargetRef.apiVersion"
    );
    let min = u64_at(hpa, "spec.minReplicas", hf);
    let max = u64_at(hpa, "spec.maxReplicas", hf);
    assert!(
        min >= 2 && max >= min,
        "{hf}: minReplicas ({min}) must be at least 2 and at most maxReplicas ({max})"
    );
    let replicas = u64_at(d.deployment(), "spec.replicas", "deployment.yaml");
    assert!(
        (min..=max).contains(&replicas),
        "deployment.yaml: replicas ({replicas}) outside the HPA's {min}..={max}"
    );
    if let Some(min_available) = at(pdb, "spec.minAvailable").and_then(Value::as_u64) {
        assert!(
            min_available < min,
            "{pf}: minAvailable ({min_available}) must stay below the HPA's minReplicas ({min}), or no node can ever be drained"
        );
    }

    let cpu = seq_at(hpa, "spec.metrics", hf).iter().any(|m| {
        at(m, "type").and_then(Value::as_str) == Some("Resource")
            && at(m, "resource.name").and_then(Value::as_str) == Some("cpu")
    });
    assert!(cpu, "{hf}: no CPU Resource metric");
    assert!(
        at(d.container(), "resources.requests.cpu").is_some(),
        "deployment.yaml: the container needs a CPU request: the HPA's utilization is a share of it"
    );
}

#[test]
fn replicas_share_what_they_must() {
    let d = Deploy::load();
    let (cfg, _) = d.config();
    assert!(
        matches!(cfg.ledger, LedgerUrl::Postgres(_)),
        "routes.toml: with several replicas the ledger must be PostgreSQL (an SQLite file cannot be shared by pods), not {}",
        cfg.ledger.describe()
    );
    for r in &cfg.routes {
        if r.front == DialectId::Caseiq {
            assert!(
                r.token_key.is_some(),
                "routes.toml: route {:?} fronts caseiq without token_key: each replica would sign tokens with its own random key and refuse the others'",
                r.name
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// Dockerfile

struct Instruction {
    keyword: String,
    args: String,
    /// Index of the FROM stage it belongs to.
    stage: usize,
}

fn dockerfile() -> Vec<Instruction> {
    let text = read("deploy/Dockerfile");
    let mut out = Vec::new();
    let mut stage = 0usize;
    let mut pending = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(head) = line.trim_end().strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        let full = full.trim();
        let (keyword, args) = full.split_once(char::is_whitespace).unwrap_or((full, ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            stage += 1;
        }
        out.push(Instruction {
            keyword,
            args: args.trim().to_string(),
            stage,
        });
    }
    out
}

/// `COPY [--flags] src... dest`: (flags, sources, dest).
fn copy_parts(args: &str) -> (Vec<String>, Vec<String>, String) {
    let words: Vec<String> = args.split_whitespace().map(String::from).collect();
    let (flags, rest): (Vec<String>, Vec<String>) =
        words.into_iter().partition(|w| w.starts_with("--"));
    let (dest, srcs) = rest.split_last().expect("COPY needs a destination");
    (flags, srcs.to_vec(), dest.clone())
}

/// `ENV A=b C="d"` pairs.
fn env_pairs(args: &str) -> BTreeMap<String, String> {
    args.split_whitespace()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("Dockerfile: write ENV as KEY=value, not {kv:?}"));
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect()
}

/// Whether the ignore file (Docker's rules: last matching pattern wins, `!` re-includes,
/// a pattern matching a parent folder matches what is inside it) leaves `path` out.
fn ignored(patterns: &[String], path: &str) -> bool {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut out = false;
    for p in patterns {
        let (neg, p) = match p.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, p.as_str()),
        };
        let pat: Vec<&str> = p
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .collect();
        if (1..=segs.len()).any(|n| glob_segments(&pat, &segs[..n])) {
            out = !neg;
        }
    }
    out
}

fn glob_segments(pat: &[&str], segs: &[&str]) -> bool {
    match (pat.first(), segs.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            glob_segments(&pat[1..], segs) || (!segs.is_empty() && glob_segments(pat, &segs[1..]))
        }
        (Some(p), Some(s)) => {
            glob_one(p.as_bytes(), s.as_bytes()) && glob_segments(&pat[1..], &segs[1..])
        }
        _ => false,
    }
}

fn glob_one(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob_one(&p[1..], s) || (!s.is_empty() && glob_one(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob_one(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob_one(&p[1..], &s[1..]),
        _ => false,
    }
}

fn files_under(rel: &str) -> Vec<String> {
    let path = repo().join(rel);
    if path.is_file() {
        return vec![rel.to_string()];
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(&path).unwrap_or_else(|e| panic!("cannot list {rel}: {e}")) {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        out.extend(files_under(&format!("{rel}/{name}")));
    }
    out
}

#[test]
fn the_dockerfile_builds_locked_and_runs_as_a_numeric_non_root_user() {
    let ins = dockerfile();
    let last = ins.iter().map(|i| i.stage).max().unwrap_or(0);
    assert!(
        last >= 2,
        "deploy/Dockerfile must be multi-stage (a builder and a slim runtime)"
    );
    assert!(
        ins.iter().any(|i| i.stage < last
            && i.keyword == "RUN"
            && i.args.contains("cargo build --release --locked")),
        "deploy/Dockerfile: the builder must run `cargo build --release --locked`"
    );
    let user = ins
        .iter()
        .rfind(|i| i.stage == last && i.keyword == "USER")
        .expect("deploy/Dockerfile: the runtime stage sets no USER (it would run as root)");
    let uid: u32 = user
        .args
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| {
            panic!(
                "deploy/Dockerfile: USER {} must be numeric (runAsNonRoot can only check a number)",
                user.args
            )
        });
    assert_ne!(uid, 0, "deploy/Dockerfile: USER must not be root");
    let d = Deploy::load();
    if let Some(run_as) = at(d.pod_spec(), "securityContext.runAsUser")
        .or_else(|| at(d.container(), "securityContext.runAsUser"))
        .and_then(Value::as_u64)
    {
        assert_eq!(
            run_as,
            u64::from(uid),
            "deployment.yaml: runAsUser differs from the image's USER"
        );
    }
    let stop = ins
        .iter()
        .rfind(|i| i.stage == last && i.keyword == "STOPSIGNAL")
        .map(|i| i.args.as_str());
    assert!(
        matches!(stop, Some("SIGTERM") | Some("15")),
        "deploy/Dockerfile: STOPSIGNAL SIGTERM (casegate drains on it)"
    );
}

#[test]
fn the_image_runs_the_binary_with_the_shipped_config() {
    let ins = dockerfile();
    let last = ins.iter().map(|i| i.stage).max().unwrap_or(0);
    let runtime: Vec<&Instruction> = ins.iter().filter(|i| i.stage == last).collect();

    let bin = runtime
        .iter()
        .filter(|i| i.keyword == "COPY")
        .map(|i| copy_parts(&i.args))
        .find(|(flags, srcs, _)| {
            flags.iter().any(|f| f.starts_with("--from="))
                && srcs.iter().any(|s| s.ends_with("target/release/casegate"))
        })
        .map(|(_, _, dest)| dest)
        .expect("deploy/Dockerfile: the runtime stage must COPY --from=<builder> .../target/release/casegate");
    let bin = if bin.ends_with('/') {
        format!("{bin}casegate")
    } else {
        bin
    };
    let entry = runtime
        .iter()
        .rfind(|i| i.keyword == "ENTRYPOINT")
        .expect("deploy/Dockerfile: no ENTRYPOINT");
    let entry: Vec<String> = serde_json::from_str(&entry.args)
        .expect("deploy/Dockerfile: ENTRYPOINT must be the exec form [\"...\"] (signals reach casegate, not a shell)");
    assert_eq!(
        entry.first(),
        Some(&bin),
        "deploy/Dockerfile: ENTRYPOINT must run {bin}"
    );

    let env: BTreeMap<String, String> = runtime
        .iter()
        .filter(|i| i.keyword == "ENV")
        .flat_map(|i| env_pairs(&i.args))
        .collect();
    let config_path = env
        .get("CASEGATE_CONFIG")
        .expect("deploy/Dockerfile: ENV CASEGATE_CONFIG is not set");
    let copied = runtime
        .iter()
        .filter(|i| i.keyword == "COPY")
        .map(|i| copy_parts(&i.args))
        .any(|(flags, srcs, dest)| {
            flags.is_empty() && srcs == ["deploy/routes.toml"] && &dest == config_path
        });
    assert!(
        copied,
        "deploy/Dockerfile: COPY deploy/routes.toml {config_path} (where CASEGATE_CONFIG points) is missing"
    );
    let d = Deploy::load();
    assert_eq!(
        config_path, &d.config_path,
        "the image's CASEGATE_CONFIG and the Deployment's differ"
    );

    // deploy/routes.toml validates, and the image provides what it needs.
    let text = read("deploy/routes.toml");
    let (cfg, _) = parse_as_pod(&text, "deploy/routes.toml", &|n: &str| d.pod_env(n));
    let exposed: BTreeSet<u16> = runtime
        .iter()
        .filter(|i| i.keyword == "EXPOSE")
        .flat_map(|i| i.args.split_whitespace())
        .map(|p| {
            p.trim_end_matches("/tcp")
                .parse()
                .unwrap_or_else(|_| panic!("deploy/Dockerfile: EXPOSE {p}"))
        })
        .collect();
    let admin = cfg
        .admin_listen
        .expect("deploy/routes.toml: admin_listen must be set (the probes and /metrics are on it)")
        .port();
    assert_eq!(
        exposed,
        BTreeSet::from([cfg.listen.port(), admin]),
        "deploy/Dockerfile: EXPOSE must name listen's and admin_listen's ports"
    );
    let spool = spool_dir_of(&text).expect("deploy/routes.toml: spool_dir");
    assert!(
        runtime
            .iter()
            .any(|i| i.keyword == "RUN" && i.args.contains(&spool)),
        "deploy/Dockerfile: the runtime stage must create spool_dir {spool} (writable by USER): casegate refuses to start without it"
    );
}

#[test]
fn the_build_context_holds_what_the_dockerfile_copies() {
    let ignore: Vec<String> = read("deploy/Dockerfile.dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    for heavy in ["target/debug/casegate", ".git/HEAD", "fuzz/Cargo.toml"] {
        assert!(
            ignored(&ignore, heavy),
            "deploy/Dockerfile.dockerignore must leave {heavy} out of the build context"
        );
    }
    let mut sources = BTreeSet::new();
    for i in dockerfile()
        .iter()
        .filter(|i| i.keyword == "COPY" || i.keyword == "ADD")
    {
        let (flags, srcs, _) = copy_parts(&i.args);
        if flags.iter().any(|f| f.starts_with("--from=")) {
            continue;
        }
        for s in srcs {
            let s = s.trim_start_matches("./").trim_end_matches('/').to_string();
            assert!(
                repo().join(&s).exists(),
                "deploy/Dockerfile copies {s}, which is not in the repository (the build context is its root)"
            );
            for f in files_under(&s) {
                assert!(
                    !ignored(&ignore, &f),
                    "deploy/Dockerfile copies {f}, but deploy/Dockerfile.dockerignore leaves it out"
                );
            }
            sources.insert(s);
        }
    }
    // cargo loads the whole workspace: every member's manifest must be there.
    #[derive(serde::Deserialize)]
    struct Manifest {
        workspace: Workspace,
    }
    #[derive(serde::Deserialize)]
    struct Workspace {
        members: Vec<String>,
    }
    use figment::providers::Format as _;
    let m: Manifest = figment::Figment::from(figment::providers::Toml::string(&read("Cargo.toml")))
        .extract()
        .expect("Cargo.toml: [workspace] members");
    for member in m.workspace.members {
        let manifest = if member == "." {
            "Cargo.toml".to_string()
        } else {
            format!("{member}/Cargo.toml")
        };
        assert!(
            sources.contains(&manifest) || sources.contains(&member),
            "deploy/Dockerfile: workspace member {member} is not copied ({manifest}); cargo cannot load the workspace without it"
        );
    }
    assert!(
        sources.contains("Cargo.lock"),
        "deploy/Dockerfile: Cargo.lock must be copied (--locked)"
    );
}

// ---------------------------------------------------------------------------------
// Grafana

/// SPEC section 8's families and their labels.
const FAMILIES: &[(&str, Family, &[&str])] = &[
    (
        "casegate_requests_total",
        Family::Counter,
        &["route", "front", "back", "operation", "status", "code"],
    ),
    (
        "casegate_request_duration_seconds",
        Family::Histogram,
        &["route", "operation"],
    ),
    (
        "casegate_upstream_duration_seconds",
        Family::Histogram,
        &["route", "back"],
    ),
    (
        "casegate_file_bytes_total",
        Family::Counter,
        &["route", "direction"],
    ),
    ("casegate_in_flight", Family::Gauge, &["route"]),
    ("casegate_spooled_total", Family::Counter, &["route"]),
    (
        "casegate_upstream_errors_total",
        Family::Counter,
        &["route", "code"],
    ),
    ("casegate_ledger_errors_total", Family::Counter, &[]),
    // casegate's own, beside SPEC 8's: the rows an alert on the ledger reads.
    ("casegate_ledger_available", Family::Gauge, &[]),
    ("casegate_ledger_rows_waiting", Family::Gauge, &[]),
    ("casegate_ledger_rows_lost_total", Family::Counter, &[]),
    (
        "casegate_config_reloads_total",
        Family::Counter,
        &["result"],
    ),
];

/// Labels Prometheus adds to every series it scrapes from a pod.
const TARGET_LABELS: &[&str] = &["instance", "job", "namespace", "pod", "container"];

#[derive(Clone, Copy, PartialEq)]
enum Family {
    Counter,
    Gauge,
    Histogram,
}

/// The family a series name belongs to, and the labels it has (None: not SPEC 8's).
fn series_labels(name: &str) -> Option<Vec<&'static str>> {
    if name.starts_with("process_") {
        return Some(vec![]);
    }
    for (family, kind, labels) in FAMILIES {
        let mut labels = labels.to_vec();
        match kind {
            Family::Histogram => {
                if name == format!("{family}_bucket") {
                    labels.push("le");
                    return Some(labels);
                }
                if name == format!("{family}_sum") || name == format!("{family}_count") {
                    return Some(labels);
                }
            }
            Family::Counter | Family::Gauge if name == *family => return Some(labels),
            _ => {}
        }
    }
    None
}

/// Metric names and label names a PromQL expression refers to.
#[derive(Default, Debug)]
struct PromRefs {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
}

/// A small PromQL reader: enough to tell metric names from functions, keywords, label
/// names (in `{...}` and in `by`/`without`/`on`/`ignoring`/`group_*` lists), strings,
/// numbers, durations, ranges and Grafana's `$variables`.
fn prom_refs(expr: &str) -> PromRefs {
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &[
        "and", "or", "unless", "bool", "offset", "atan2", "Inf", "NaN", "inf", "nan",
    ];
    let b = expr.as_bytes();
    let mut refs = PromRefs::default();
    let mut braces = 0usize;
    // For each open parenthesis: whether it holds a list of label names.
    let mut parens: Vec<bool> = Vec::new();
    let mut next_paren_is_labels = false;
    let next_non_space = |mut j: usize| {
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        b.get(j).copied()
    };
    let next_word = |j: usize| {
        let rest = expr[j..].trim_start();
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        &rest[..end]
    };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'$' => {
                i += 1;
                if b.get(i) == Some(&b'{') {
                    while i < b.len() && b[i] != b'}' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                        i += 1;
                    }
                }
            }
            b'[' => {
                while i < b.len() && b[i] != b']' {
                    i += 1;
                }
                i += 1;
            }
            b'{' => {
                braces += 1;
                i += 1;
            }
            b'}' => {
                braces = braces.saturating_sub(1);
                i += 1;
            }
            b'(' => {
                parens.push(std::mem::take(&mut next_paren_is_labels));
                i += 1;
            }
            b')' => {
                parens.pop();
                i += 1;
            }
            b'0'..=b'9' | b'.' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                let word = &expr[start..i];
                let in_label_list = parens.last().copied().unwrap_or(false);
                if braces > 0 || in_label_list {
                    refs.labels.insert(word.to_string());
                } else if LABEL_LISTS.contains(&word) {
                    next_paren_is_labels = next_non_space(i) == Some(b'(');
                } else if KEYWORDS.contains(&word)
                    || next_non_space(i) == Some(b'(')
                    || ["by", "without"].contains(&next_word(i))
                {
                    // a keyword, a function, or an aggregation (`sum by (x) (...)`)
                } else {
                    refs.metrics.insert(word.to_string());
                }
            }
            _ => i += 1,
        }
    }
    refs
}

/// The references of a template variable's query: `label_values(selector, label)`,
/// `label_values(label)`, or a PromQL expression (`query_result(...)`).
fn variable_refs(query: &str) -> PromRefs {
    let q = query.trim();
    if let Some(inner) = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let (selector, label) = match inner.rfind(',') {
            Some(i) if !inner[i..].contains(['}', '"']) => (&inner[..i], inner[i + 1..].trim()),
            _ => ("", inner.trim()),
        };
        let mut refs = prom_refs(selector);
        refs.labels.insert(label.to_string());
        return refs;
    }
    prom_refs(q)
}

fn check_refs(refs: &PromRefs, what: &str) {
    assert!(
        !refs.metrics.is_empty(),
        "{what}: the query names no metric"
    );
    let mut allowed: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
    for m in &refs.metrics {
        let histogram = FAMILIES
            .iter()
            .any(|(f, kind, _)| f == m && *kind == Family::Histogram);
        assert!(
            !histogram,
            "{what}: {m} is a histogram: query its {m}_bucket, _sum or _count series"
        );
        let labels = series_labels(m).unwrap_or_else(|| {
            panic!("{what}: {m} is not one of SPEC section 8's metric families (or process_*)")
        });
        allowed.extend(labels);
    }
    for l in &refs.labels {
        assert!(
            allowed.contains(l.as_str()),
            "{what}: label `{l}` is not a label of {:?}",
            refs.metrics
        );
    }
}

#[test]
fn the_dashboard_queries_only_spec_metrics() {
    let text = read("deploy/grafana/casegate.json");
    let dash: serde_json::Value =
        serde_json::from_str(&text).expect("deploy/grafana/casegate.json is not JSON");
    const F: &str = "deploy/grafana/casegate.json";
    assert!(
        dash["schemaVersion"].is_u64(),
        "{F}: schemaVersion is missing"
    );
    assert!(dash["title"].is_string(), "{F}: title is missing");
    assert!(dash["uid"].is_string(), "{F}: uid is missing");
    let vars = dash["templating"]["list"]
        .as_array()
        .unwrap_or_else(|| panic!("{F}: templating.list is missing"));
    let ds_var = vars
        .iter()
        .find(|v| v["type"] == "datasource" && v["query"] == "prometheus")
        .unwrap_or_else(|| panic!("{F}: no Prometheus datasource variable"))["name"]
        .as_str()
        .expect("the datasource variable has a name");
    let ds_uid = format!("${{{ds_var}}}");
    let ds_ok = |ds: &serde_json::Value| ds.is_null() || ds["uid"] == ds_uid.as_str();

    let mut used = BTreeSet::new();
    for v in vars.iter().filter(|v| v["type"] == "query") {
        let name = v["name"].as_str().unwrap_or("?");
        let what = format!("{F}: variable {name}");
        assert!(
            ds_ok(&v["datasource"]),
            "{what}: datasource must be {ds_uid}"
        );
        let q = v["query"]["query"]
            .as_str()
            .or_else(|| v["query"].as_str())
            .unwrap_or_else(|| panic!("{what}: no query"));
        let refs = variable_refs(q);
        check_refs(&refs, &what);
        used.extend(refs.metrics);
    }

    let panels = dash["panels"]
        .as_array()
        .unwrap_or_else(|| panic!("{F}: panels is missing"));
    let mut all: Vec<&serde_json::Value> = Vec::new();
    for p in panels {
        all.push(p);
        all.extend(p["panels"].as_array().into_iter().flatten());
    }
    let mut ids = BTreeSet::new();
    let mut exprs = 0;
    for p in all {
        let title = p["title"].as_str().unwrap_or("?");
        let what = format!("{F}: panel {title:?}");
        assert!(
            p["id"].as_u64().is_some_and(|id| ids.insert(id)),
            "{what}: id missing or not unique"
        );
        assert!(
            p["gridPos"]["w"].is_u64() && p["gridPos"]["h"].is_u64(),
            "{what}: gridPos"
        );
        if p["type"] == "row" {
            continue;
        }
        assert!(
            ds_ok(&p["datasource"]),
            "{what}: datasource must be {ds_uid}"
        );
        let targets = p["targets"]
            .as_array()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| panic!("{what}: no targets"));
        for t in targets {
            assert!(
                ds_ok(&t["datasource"]),
                "{what}: a target's datasource must be {ds_uid}"
            );
            let expr = t["expr"]
                .as_str()
                .filter(|e| !e.trim().is_empty())
                .unwrap_or_else(|| panic!("{what}: a target has no expr"));
            let refs = prom_refs(expr);
            check_refs(&refs, &format!("{what}: {expr}"));
            used.extend(refs.metrics);
            exprs += 1;
        }
    }
    assert!(exprs > 0, "{F}: no queries");

    let families: BTreeSet<&str> = used
        .iter()
        .map(|m| {
            FAMILIES
                .iter()
                .map(|f| f.0)
                .find(|f| {
                    m == f
                        || m.strip_prefix(f)
                            .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))
                })
                .unwrap_or(m)
        })
        .collect();
    for (family, _, _) in FAMILIES {
        assert!(families.contains(family), "{F}: no panel shows {family}");
    }
    for process in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(families.contains(process), "{F}: no panel shows {process}");
    }
}

#[test]
fn the_promql_reader_tells_metrics_from_labels_and_functions() {
    let r = prom_refs(
        r#"histogram_quantile(0.95, sum by (back, le) (rate(casegate_upstream_duration_seconds_bucket{route=~"$route", code!~"a|b"}[$__rate_interval] offset 5m))) / on (instance) group_left() up"#,
    );
    assert_eq!(
        r.metrics,
        BTreeSet::from([
            "casegate_upstream_duration_seconds_bucket".into(),
            "up".into()
        ])
    );
    assert_eq!(
        r.labels,
        BTreeSet::from(["back", "le", "route", "code", "instance"].map(String::from))
    );
    let v = variable_refs(r#"label_values(casegate_requests_total{instance=~"$instance"}, route)"#);
    assert_eq!(
        v.metrics,
        BTreeSet::from(["casegate_requests_total".into()])
    );
    assert_eq!(
        v.labels,
        BTreeSet::from(["instance".into(), "route".into()])
    );
    assert_eq!(
        vars_in("# a ${COMMENT}\na = \"x${A}#${B}\" # ${C}\nb = '$${D}${E}'\nc = \"$${F}\"\n"),
        BTreeSet::from(["A", "B", "E"].map(String::from))
    );
    assert!(series_labels("casegate_request_duration_seconds").is_none());
    assert!(series_labels("casegate_request_duration_seconds_bucket").is_some());
    assert!(series_labels("casegate_requests").is_none());
    assert!(!ignored(&["*".into(), "!src".into()], "src/main.rs"));
    assert!(ignored(&["*".into(), "!src".into()], "srcs"));
    assert!(!ignored(
        &["*".into(), "!bench/src".into()],
        "bench/src/main.rs"
    ));
    assert!(ignored(
        &["*".into(), "!bench/src".into()],
        "bench/README.md"
    ));
}

/// pgo/rustc-wrapper run as cargo runs it, with `echo` in rustc's place: the command it
/// runs, as one line.
fn through_pgo_wrapper(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = std::process::Command::new(repo().join("pgo/rustc-wrapper"));
    cmd.arg("echo").args(args).env_remove("CASEGATE_PGO");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("pgo/rustc-wrapper runs");
    assert!(out.status.success(), "pgo/rustc-wrapper failed: {out:?}");
    String::from_utf8(out.stdout)
        .expect("echo's output is UTF-8")
        .trim_end()
        .to_owned()
}

#[test]
fn cargo_config_names_the_pgo_wrapper_and_its_profile_is_llvms() {
    #[derive(serde::Deserialize)]
    struct Config {
        build: Build,
    }
    #[derive(serde::Deserialize)]
    struct Build {
        #[serde(rename = "rustc-wrapper")]
        rustc_wrapper: String,
    }
    use figment::providers::Format as _;
    let config: Config = figment::Figment::from(figment::providers::Toml::string(&read(
        ".cargo/config.toml",
    )))
    .extract()
    .expect(".cargo/config.toml");
    assert_eq!(
        config.build.rustc_wrapper, "pgo/rustc-wrapper",
        ".cargo/config.toml must name pgo/rustc-wrapper (relative to the repository root)"
    );
    let profile =
        std::fs::read(repo().join("pgo/casegate.profdata")).expect("pgo/casegate.profdata");
    // LLVM's indexed profile: its magic, then a format version.
    assert_eq!(
        &profile[..8],
        b"\xfflprofi\x81",
        "pgo/casegate.profdata is not an indexed LLVM profile"
    );
}

#[test]
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn release_compiles_get_the_profile_and_nothing_else_does() {
    let profile = repo()
        .join("pgo/casegate.profdata")
        .canonicalize()
        .expect("pgo/casegate.profdata");
    let flag = format!("-Cprofile-use={}", profile.display());
    let release = [
        "--crate-name",
        "casegate",
        "src/lib.rs",
        "-C",
        "opt-level=3",
        "-C",
        "lto",
    ];
    assert_eq!(
        through_pgo_wrapper(&release, &[]),
        format!("{} {flag}", release.join(" "))
    );
    let mut host = release.to_vec();
    host.extend(["--target", "x86_64-unknown-linux-gnu"]);
    assert_eq!(
        through_pgo_wrapper(&host, &[]),
        format!("{} {flag}", host.join(" "))
    );
    let unchanged: [&[&str]; 7] = [
        // debug builds and tests
        &[
            "--crate-name",
            "casegate",
            "src/lib.rs",
            "-C",
            "opt-level=0",
        ],
        &[
            "--crate-name",
            "casegate",
            "src/lib.rs",
            "-C",
            "debuginfo=2",
        ],
        // another target
        &[
            "--crate-name",
            "casegate",
            "src/lib.rs",
            "-C",
            "opt-level=3",
            "--target",
            "aarch64-unknown-linux-gnu",
        ],
        // bench/pgo's instrumented build, a build for fuzzing
        &[
            "--crate-name",
            "casegate",
            "src/lib.rs",
            "-C",
            "opt-level=3",
            "-Cprofile-generate=/tmp/raw",
        ],
        &[
            "--crate-name",
            "casegate",
            "src/lib.rs",
            "-C",
            "opt-level=3",
            "-Cpasses=sancov-module",
        ],
        // cargo's questions to rustc
        &[
            "-",
            "--crate-name",
            "___",
            "--print=cfg",
            "-C",
            "opt-level=3",
        ],
        &["-vV"],
    ];
    for args in unchanged {
        assert_eq!(through_pgo_wrapper(args, &[]), args.join(" "), "{args:?}");
    }
    assert_eq!(
        through_pgo_wrapper(&release, &[("CASEGATE_PGO", "0")]),
        release.join(" "),
        "CASEGATE_PGO=0 leaves the profile out"
    );
}
