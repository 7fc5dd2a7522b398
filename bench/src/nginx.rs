//! nginx as the peer proxy: `proxy_pass` in front of the same upstream emulators casegate
//! uses, configured by the benchmark so that it streams as casegate does. nginx runs as its
//! own process group (master and one worker per core) with every path it writes (pid,
//! error log, temp folders) inside the run's temporary directory, and the whole group is
//! killed when [`Nginx`] is dropped.
//!
//! The configuration ([`config_text`]):
//! - `worker_processes` = the number of cores, `worker_connections 4096`;
//! - one `upstream` block per back dialect with `keepalive 256` idle connections per
//!   worker (more than the benchmark's highest concurrency, so no upstream connection is
//!   closed for want of a slot) and `keepalive_requests`/`keepalive_timeout` high enough
//!   that no connection is retired during a run (nginx's defaults close one after 1000
//!   requests; casegate's pool does not);
//! - `proxy_http_version 1.1` and `proxy_set_header Connection ""` (keep-alive upstream);
//! - `proxy_request_buffering off` and `proxy_buffering off`: the request body goes up and
//!   the answer comes down as they arrive, never through a temp file, as casegate streams;
//! - `client_body_buffer_size 64k`: the size of casegate's reads, so a 32 MiB body costs
//!   both about the same number of read calls;
//! - `client_max_body_size 0` (no limit), `access_log off`, `error_log` at `warn`;
//! - the client side's `keepalive_requests` and `keepalive_timeout` high too, so the load
//!   generator's connections stay open for the whole run, as casegate keeps them.
//!
//! One `server` block per back dialect, each on its own port: a client reaches the Case IQ
//! emulator through nginx at `http://127.0.0.1:PORT/...` exactly as it would reach it
//! directly.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use casegate::dialect::DialectId;

use crate::Res;

/// How long nginx may take to listen and start its workers.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What the generated nginx.conf needs.
#[derive(Debug, Clone)]
pub struct Conf {
    /// nginx's prefix: pid, error log and temp folders go here.
    pub prefix: PathBuf,
    /// `worker_processes`.
    pub workers: usize,
    /// `user nobody GROUP;` with nobody's group (only when nginx's master runs as root:
    /// Debian's `nobody` is in `nogroup`, and nginx's default group `nobody` is missing).
    pub run_as_nobody: Option<String>,
    /// (back dialect, the port nginx listens on for it, the upstream emulator's address).
    pub sites: Vec<(DialectId, u16, SocketAddr)>,
}

/// The nginx.conf for `conf` (see the module's documentation for each choice).
pub fn config_text(conf: &Conf) -> String {
    let p = conf.prefix.display();
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# Written by casegate-bench (bench/src/nginx.rs).");
    let _ = writeln!(out, "daemon off;\nmaster_process on;");
    if let Some(group) = &conf.run_as_nobody {
        let _ = writeln!(out, "user nobody {group};");
    }
    let _ = writeln!(out, "worker_processes {};", conf.workers.max(1));
    let _ = writeln!(out, "pid {p}/nginx.pid;\nerror_log {p}/error.log warn;");
    let _ = writeln!(out, "events {{\n    worker_connections 4096;\n}}");
    let _ = writeln!(out, "http {{");
    for (key, dir) in [
        ("client_body_temp_path", "client_body"),
        ("proxy_temp_path", "proxy"),
        ("fastcgi_temp_path", "fastcgi"),
        ("uwsgi_temp_path", "uwsgi"),
        ("scgi_temp_path", "scgi"),
    ] {
        let _ = writeln!(out, "    {key} {p}/temp/{dir};");
    }
    out.push_str(
        "    access_log off;\n\
         \x20   tcp_nodelay on;\n\
         \x20   keepalive_requests 100000000;\n\
         \x20   keepalive_timeout 600s;\n\
         \x20   client_max_body_size 0;\n\
         \x20   client_body_buffer_size 64k;\n\
         \x20   proxy_http_version 1.1;\n\
         \x20   proxy_set_header Connection \"\";\n\
         \x20   proxy_request_buffering off;\n\
         \x20   proxy_buffering off;\n\
         \x20   proxy_read_timeout 120s;\n\
         \x20   proxy_send_timeout 120s;\n",
    );
    for (dialect, port, upstream) in &conf.sites {
        let name = upstream_name(*dialect);
        let _ = write!(
            out,
            "    upstream {name} {{\n        server {upstream};\n        keepalive 256;\n        \
             keepalive_requests 100000000;\n        keepalive_timeout 600s;\n    }}\n    \
             server {{\n        listen 127.0.0.1:{port};\n        location / {{\n            \
             proxy_pass http://{name};\n        }}\n    }}\n"
        );
    }
    out.push_str("}\n");
    out
}

fn upstream_name(dialect: DialectId) -> String {
    format!("{}_emulator", dialect.name())
}

/// A running nginx (master and workers, one process group); dropping it kills the group.
pub struct Nginx {
    master: Child,
    version: String,
    addrs: Vec<(DialectId, SocketAddr)>,
    workers: usize,
    error_log: PathBuf,
}

impl Nginx {
    /// Starts nginx in `dir` (created here) with one proxy per `(dialect, upstream)`.
    pub fn start(dir: &Path, upstreams: &[(DialectId, SocketAddr)]) -> Res<Nginx> {
        let binary = find_or_install()?;
        let temp = dir.join("temp");
        std::fs::create_dir_all(&temp)
            .map_err(|e| format!("cannot create {}: {e}", temp.display()))?;
        let as_root = is_root();
        if as_root {
            // Workers run as nobody: let them through the run's folders.
            if let Some(run) = dir.parent() {
                set_mode(run, 0o711)?;
            }
            set_mode(dir, 0o755)?;
            set_mode(&temp, 0o755)?;
        }
        let mut sites = Vec::new();
        for &(dialect, upstream) in upstreams {
            sites.push((dialect, free_port()?, upstream));
        }
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        let conf = Conf {
            prefix: dir.to_owned(),
            workers,
            run_as_nobody: as_root.then(nobody_group),
            sites: sites.clone(),
        };
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, config_text(&conf))
            .map_err(|e| format!("cannot write {}: {e}", conf_path.display()))?;
        let error_log = dir.join("error.log");
        let mut prefix = dir.as_os_str().to_owned();
        prefix.push("/");
        let master = Command::new(&binary)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(&error_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, killed whole when the stack goes.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut nginx = Nginx {
            master,
            version: version(&binary),
            addrs: sites
                .iter()
                .map(|&(d, port, _)| (d, SocketAddr::from(([127, 0, 0, 1], port))))
                .collect(),
            workers,
            error_log,
        };
        nginx.wait_ready()?;
        Ok(nginx)
    }

    /// Waits until every port accepts and every worker has started.
    fn wait_ready(&mut self) -> Res<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.master.try_wait() {
                return Err(format!("nginx exited ({status}){}", self.recent_log()));
            }
            let listening = self
                .addrs
                .iter()
                .all(|(_, addr)| TcpStream::connect_timeout(addr, Duration::from_secs(1)).is_ok());
            if listening && self.pids().len() > self.workers {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nginx did not listen with {} workers within {START_TIMEOUT:?}{}",
                    self.workers,
                    self.recent_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `nginx -v`'s answer, e.g. `nginx/1.22.1`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Where nginx proxies to the emulator of `back`.
    pub fn addr(&self, back: DialectId) -> Res<SocketAddr> {
        self.addrs
            .iter()
            .find(|(d, _)| *d == back)
            .map(|(_, addr)| *addr)
            .ok_or_else(|| format!("nginx proxies to no {back} emulator"))
    }

    /// The master's pid, then its workers'.
    pub fn pids(&self) -> Vec<u32> {
        let master = self.master.id();
        let mut pids = vec![master];
        pids.extend(children_of(master));
        pids
    }

    /// An error if the master has exited (with its error log's last lines).
    pub fn check_alive(&mut self) -> Res<()> {
        match self.master.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("nginx exited ({status}){}", self.recent_log())),
            Err(e) => Err(format!("cannot check on nginx: {e}")),
        }
    }

    /// The last lines of nginx's error log, as a message suffix (empty if none).
    pub fn recent_log(&self) -> String {
        let text = std::fs::read_to_string(&self.error_log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let last = &lines[lines.len().saturating_sub(20)..];
        if last.is_empty() {
            return String::new();
        }
        format!("; its error log ends:\n  {}", last.join("\n  "))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // The master is its group's leader: the group id is its pid.
        if let Ok(pgid) = i32::try_from(self.master.id()) {
            // SAFETY: kill(2) with a negative pid signals that process group; it touches
            // no memory of ours.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        let _ = self.master.wait();
    }
}

/// What `nginx -v` says (on stderr), less its `nginx version: `.
fn version(binary: &Path) -> String {
    Command::new(binary)
        .arg("-v")
        .output()
        .ok()
        .map(|out| {
            let text = String::from_utf8_lossy(&out.stderr);
            let text = text.trim();
            text.strip_prefix("nginx version: ")
                .unwrap_or(text)
                .to_owned()
        })
        .unwrap_or_else(|| "nginx (version unknown)".to_owned())
}

/// The pids whose parent is `pid` (from /proc/*/stat).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| parent_pid(&stat))
                == Some(pid)
        })
        .collect();
    children.sort_unstable();
    children
}

/// Field 4 (ppid) of a /proc/PID/stat line.
fn parent_pid(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Res<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("cannot read a listener's port: {e}"))
}

/// The name of user nobody's primary group (from /etc/passwd and /etc/group), else
/// `nogroup`.
fn nobody_group() -> String {
    let read = |path| std::fs::read_to_string(path).unwrap_or_default();
    let gid = read("/etc/passwd")
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .and_then(|l| l.split(':').nth(3).map(str::to_owned));
    gid.and_then(|gid| {
        read("/etc/group").lines().find_map(|l| {
            let fields: Vec<&str> = l.split(':').collect();
            (fields.get(2) == Some(&gid.as_str())).then(|| fields[0].to_owned())
        })
    })
    .unwrap_or_else(|| "nogroup".to_owned())
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn set_mode(path: &Path, mode: u32) -> Res<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))
}

/// The nginx binary: `nginx` on PATH or in /usr/sbin; when there is none and this runs as
/// root, `apt-get install -y nginx` first; otherwise an error saying what to install.
fn find_or_install() -> Res<PathBuf> {
    if let Some(path) = find_nginx() {
        return Ok(path);
    }
    let missing = "nginx is not installed (no `nginx` on PATH or in /usr/sbin)";
    if !is_root() {
        return Err(format!(
            "{missing}: install it (Debian: `sudo apt-get install -y nginx`), or run \
             without the nginx peer (--no-nginx)"
        ));
    }
    let apt = |args: &[&str]| {
        eprintln!("{missing}; running apt-get {}", args.join(" "));
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("{missing}, and apt-get cannot be run: {e}"))
    };
    let mut status = apt(&["install", "-y", "nginx"])?;
    if !status.success() {
        // A fresh machine may have no package lists yet: fetch them once and try again.
        apt(&["update"])?;
        status = apt(&["install", "-y", "nginx"])?;
    }
    if !status.success() {
        return Err(format!(
            "{missing}, and `apt-get install -y nginx` failed ({status}), even after \
             `apt-get update`; install nginx, or run without the nginx peer (--no-nginx)"
        ));
    }
    find_nginx().ok_or_else(|| format!("{missing}, even after apt-get install -y nginx"))
}

fn find_nginx() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(as_root: bool) -> Conf {
        Conf {
            prefix: PathBuf::from("/tmp/run/nginx"),
            workers: 2,
            run_as_nobody: as_root.then(|| "nogroup".to_owned()),
            sites: vec![
                (DialectId::Caseiq, 40001, "127.0.0.1:50001".parse().unwrap()),
                (DialectId::Tines, 40002, "127.0.0.1:50002".parse().unwrap()),
            ],
        }
    }

    #[test]
    fn config_streams_keeps_alive_and_stays_in_its_folder() {
        let text = config_text(&conf(false));
        for line in [
            "daemon off;",
            "worker_processes 2;",
            "pid /tmp/run/nginx/nginx.pid;",
            "error_log /tmp/run/nginx/error.log warn;",
            "access_log off;",
            "client_max_body_size 0;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
            "proxy_request_buffering off;",
            "proxy_buffering off;",
            "keepalive 256;",
            "upstream caseiq_emulator {",
            "server 127.0.0.1:50001;",
            "listen 127.0.0.1:40001;",
            "proxy_pass http://caseiq_emulator;",
            "listen 127.0.0.1:40002;",
            "proxy_pass http://tines_emulator;",
        ] {
            assert!(
                text.lines().any(|l| l.trim() == line),
                "no {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("user "), "{text}");
        // Every path nginx writes is under its prefix.
        for line in text.lines().map(str::trim) {
            let writes = ["pid ", "error_log ", "access_log ", "_temp_path "];
            if writes
                .iter()
                .any(|w| line.starts_with(w) || line.contains(w))
            {
                assert!(
                    line.contains("/tmp/run/nginx/") || line == "access_log off;",
                    "a path outside the prefix: {line}"
                );
            }
        }
        // Braces balance.
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    #[test]
    fn config_as_root_runs_workers_as_nobody() {
        assert!(config_text(&conf(true))
            .lines()
            .any(|l| l.trim() == "user nobody nogroup;"));
        assert!(!nobody_group().is_empty());
    }

    #[test]
    fn reads_the_parent_pid() {
        assert_eq!(
            parent_pid("123 (nginx: worker (x)) S 77 123 123 0 -1"),
            Some(77)
        );
        let me = std::fs::read_to_string("/proc/self/stat").expect("stat");
        assert!(parent_pid(&me).is_some());
    }
}
