//! A throwaway PostgreSQL server for tests: the ledger's own, and integration tests that
//! need a real database (replicas sharing one, a database stopped mid-run).
//!
//! [`PgServer::start`] finds the distribution's PostgreSQL (`initdb` and `pg_ctl` on
//! `PATH`, else the newest `/usr/lib/postgresql/*/bin`; `CASEGATE_PG_BIN` names the
//! folder outright), runs `initdb` into a temporary folder, and starts the server on a
//! free port of 127.0.0.1 with its unix socket inside that folder. TCP connections
//! authenticate with a password (SCRAM): the role [`ROLE`] with [`PgServer::password`],
//! owner of the databases [`PgServer::create_database`] makes. PostgreSQL refuses to run
//! as root, so under root the server runs as the `postgres` user (or `nobody`) through
//! `runuser` (or `setpriv`), the folder given to that user. Durability is traded for
//! speed (`fsync=off`) unless [`PgOptions::durable`] asks for PostgreSQL's defaults (the
//! ledger benchmark does).
//!
//! Dropping the server stops it (`pg_ctl stop -m fast`) and removes the folder. A small
//! watchdog shell does the same if the test process dies without dropping it.
//!
//! Tests that need PostgreSQL go through [`or_skip`] (or [`PgServer::for_test`]): when
//! the server cannot be started they FAIL, saying what to install, unless
//! `CASEGATE_SKIP_POSTGRES=1` is set (for a developer's machine without PostgreSQL; CI
//! never sets it), in which case they say so on stderr and pass without running.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// The environment variable that lets PostgreSQL tests pass without running when no
/// server can be started.
pub const SKIP_ENV: &str = "CASEGATE_SKIP_POSTGRES";
/// The login role the tests' casegate uses (not a superuser).
pub const ROLE: &str = "casegate";
/// The superuser (`initdb -U`), used only to create roles and databases.
const SUPERUSER: &str = "postgres";

/// How to start a [`PgServer`].
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// Serve TLS (`ssl=on`) with this certificate and key, besides plain TCP.
    pub tls: Option<PgTls>,
    /// Keep PostgreSQL's durable defaults (`fsync`, `synchronous_commit` and
    /// `full_page_writes` on), as a production server runs: for benchmarks.
    pub durable: bool,
}

/// A server certificate chain and its private key, as PEM text.
#[derive(Debug, Clone)]
pub struct PgTls {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A running throwaway PostgreSQL server (see the module doc).
pub struct PgServer {
    bin: PathBuf,
    dir: Option<tempfile::TempDir>,
    run_as: Option<User>,
    port: u16,
    password: String,
    databases: AtomicU64,
    running: Mutex<bool>,
    watchdog: Mutex<Option<Child>>,
    durable: bool,
}

/// The unprivileged user the server runs as when the tests run as root.
#[derive(Debug, Clone)]
struct User {
    name: String,
    uid: u32,
    gid: u32,
}

/// The server the tests of one process share while any of them holds it.
static SHARED: Mutex<Weak<PgServer>> = Mutex::new(Weak::new());

impl PgServer {
    /// A new server without TLS.
    pub fn start() -> Result<PgServer, String> {
        PgServer::start_with(PgOptions::default())
    }

    /// A new server. Err: why it could not be started (PostgreSQL not installed, initdb
    /// or the server failing, with the end of its log).
    pub fn start_with(options: PgOptions) -> Result<PgServer, String> {
        let bin = find_bin()?;
        let run_as = if running_as_root() {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("casegate-pg-")
            .tempdir()
            .map_err(|e| format!("cannot make a temporary folder: {e}"))?;
        let password = uuid::Uuid::new_v4().simple().to_string();
        let mut server = PgServer {
            bin,
            dir: Some(dir),
            run_as,
            port: 0,
            password,
            databases: AtomicU64::new(0),
            running: Mutex::new(false),
            watchdog: Mutex::new(None),
            durable: options.durable,
        };
        restrict(server.dir(), 0o700)?;
        server.give(server.dir())?;
        server.start_watchdog();
        server.init(&options)?;
        // A port found free may be taken before the server binds it: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port()?;
            match server.start_again() {
                Ok(()) => {
                    last.clear();
                    break;
                }
                Err(e) => last = e,
            }
        }
        if !last.is_empty() {
            return Err(last);
        }
        server.psql(
            "postgres",
            &format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{}'", server.password),
        )?;
        Ok(server)
    }

    /// The server this process's tests share, started on first use and stopped when the
    /// last test holding it drops it. Each test should take its own database
    /// ([`PgServer::create_database`]).
    pub fn shared() -> Result<Arc<PgServer>, String> {
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(server) = shared.upgrade() {
            return Ok(server);
        }
        let server = Arc::new(PgServer::start()?);
        *shared = Arc::downgrade(&server);
        Ok(server)
    }

    /// [`PgServer::shared`] through [`or_skip`]: `None` only when the server cannot be
    /// started and `CASEGATE_SKIP_POSTGRES=1` is set; panics (fails the test) otherwise.
    pub fn for_test() -> Option<Arc<PgServer>> {
        or_skip(PgServer::shared())
    }

    /// The TCP port on 127.0.0.1 (the same after [`PgServer::start_again`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The password of [`ROLE`] (and of the superuser).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The server's folder (data, socket, log).
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }

    /// `postgres://casegate:PASSWORD@127.0.0.1:PORT/DATABASE`, no query parameters.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{ROLE}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// A new, empty database owned by [`ROLE`]; returns its name.
    pub fn create_database(&self) -> Result<String, String> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("ledger_{n}");
        self.psql("postgres", &format!("CREATE DATABASE {name} OWNER {ROLE}"))?;
        Ok(name)
    }

    /// [`PgServer::create_database`], then its [`PgServer::url`].
    pub fn database_url(&self) -> Result<String, String> {
        self.create_database().map(|name| self.url(&name))
    }

    /// Runs `sql` as the superuser in `database` (over the unix socket); returns what
    /// psql printed (unaligned, tuples only).
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let psql = Some(self.bin.join("psql"))
            .filter(|p| p.is_file())
            .or_else(|| find_program("psql", &[]))
            .ok_or("psql is not beside initdb nor on PATH")?;
        let out = Command::new(psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-c",
                sql,
            ])
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!(
                "psql {sql:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Whether the server runs (as far as this handle started and stopped it).
    pub fn is_running(&self) -> bool {
        *self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the server (`pg_ctl stop -m fast`: sessions are ended at once); the data
    /// stays, for [`PgServer::start_again`].
    pub fn stop(&self) -> Result<(), String> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if !*running {
            return Ok(());
        }
        self.pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"], "pg_ctl stop")?;
        *running = false;
        Ok(())
    }

    /// Starts the server (again) on the same port and data.
    pub fn start_again(&self) -> Result<(), String> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if *running {
            return Ok(());
        }
        let mut options = format!(
            "-p {} -k '{}' -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.socket_dir().display()
        );
        if !self.durable {
            options.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        if self.dir().join("server.crt").exists() {
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file='{}' -c ssl_key_file='{}'",
                self.dir().join("server.crt").display(),
                self.dir().join("server.key").display()
            ));
        }
        let log = self.dir().join("server.log");
        let log = log.to_string_lossy();
        self.pg_ctl(
            &["-l", &log, "-w", "-t", "60", "-o", &options, "start"],
            "pg_ctl start",
        )?;
        *running = true;
        Ok(())
    }

    /// [`PgServer::stop`] then [`PgServer::start_again`].
    pub fn restart(&self) -> Result<(), String> {
        self.stop()?;
        self.start_again()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir().join("server.log")).unwrap_or_default()
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir().join("sock")
    }

    /// initdb, the socket folder, and the TLS files.
    fn init(&self, options: &PgOptions) -> Result<(), String> {
        let dir = self.dir().to_path_buf();
        let pwfile = dir.join("pw");
        self.write(&pwfile, &self.password)?;
        let socket = self.socket_dir();
        fs::create_dir(&socket).map_err(|e| format!("cannot make {}: {e}", socket.display()))?;
        // The socket trusts whoever reaches it: only the server's user (and root) may.
        restrict(&socket, 0o700)?;
        self.give(&socket)?;
        if let Some(tls) = &options.tls {
            self.write(&dir.join("server.crt"), &tls.cert_pem)?;
            self.write(&dir.join("server.key"), &tls.key_pem)?;
        }
        let data = dir.join("data");
        let out = self
            .as_server(&self.bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args([
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let _ = fs::remove_file(&pwfile);
        Ok(())
    }

    fn pg_ctl(&self, args: &[&str], what: &str) -> Result<(), String> {
        let out = self
            .as_server(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir().join("data"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(format!(
                "{what} failed: {}{}\nserver log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                tail.join("\n")
            ))
        }
    }

    /// A command that runs `program` as the server's user.
    fn as_server(&self, program: &Path) -> Command {
        let mut command = match &self.run_as {
            None => Command::new(program),
            Some(user) => match find_program("runuser", &["/usr/sbin", "/sbin"]) {
                Some(runuser) => {
                    let mut c = Command::new(runuser);
                    c.args(["-u", &user.name, "--"]).arg(program);
                    c
                }
                None => {
                    let mut c = Command::new("setpriv");
                    c.arg(format!("--reuid={}", user.uid))
                        .arg(format!("--regid={}", user.gid))
                        .args(["--clear-groups", "--"])
                        .arg(program);
                    c
                }
            },
        };
        command.env("LC_ALL", "C");
        command
    }

    /// Writes a file only the server's user may read.
    fn write(&self, path: &Path, text: &str) -> Result<(), String> {
        fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        restrict(path, 0o600)?;
        self.give(path)
    }

    /// Gives `path` to the server's user (when it is another user).
    fn give(&self, path: &Path) -> Result<(), String> {
        match &self.run_as {
            None => Ok(()),
            Some(user) => std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
                .map_err(|e| format!("cannot give {} to {}: {e}", path.display(), user.name)),
        }
    }

    /// A shell that stops the server and removes its folder if this process dies
    /// without dropping it; it ends by itself once the folder is gone.
    fn start_watchdog(&self) {
        let dir = self.dir().display().to_string();
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let stop = match &self.run_as {
            Some(user) => match find_program("runuser", &["/usr/sbin", "/sbin"]) {
                Some(runuser) => format!("'{}' -u {} -- '{pg_ctl}'", runuser.display(), user.name),
                None => format!(
                    "setpriv --reuid={} --regid={} --clear-groups -- '{pg_ctl}'",
                    user.uid, user.gid
                ),
            },
            None => format!("'{pg_ctl}'"),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null && [ -d '{dir}' ]; do sleep 1; done; \
             if [ -d '{dir}' ]; then {stop} -D '{dir}/data' -m immediate stop; rm -rf '{dir}'; fi",
            pid = std::process::id()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(child) = child {
            *self.watchdog.lock().unwrap_or_else(PoisonError::into_inner) = Some(child);
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.stop();
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
        if let Some(mut watchdog) = self
            .watchdog
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer")
            .field("port", &self.port)
            .field("dir", &self.dir())
            .field("running", &self.is_running())
            .finish()
    }
}

/// `Ok(value)` as `Some`; an error fails the calling test, saying what to install,
/// unless `CASEGATE_SKIP_POSTGRES=1` is set: then it is printed and `None` is returned,
/// and the test should return at once.
pub fn or_skip<T>(result: Result<T, String>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(reason) if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") => {
            // Straight to stderr, past the test harness's capture, so the skip shows.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED (a PostgreSQL test, {SKIP_ENV}=1): PostgreSQL could not be started: \
                 {reason}"
            );
            None
        }
        Err(reason) => panic!(
            "this test needs a PostgreSQL server and none could be started: {reason}\n\
             Install PostgreSQL (Debian/Ubuntu: apt-get install postgresql; the tests look for \
             initdb and pg_ctl on PATH, in /usr/lib/postgresql/*/bin, or in $CASEGATE_PG_BIN), \
             or set {SKIP_ENV}=1 to skip the PostgreSQL tests on a machine without it \
             (CI never sets it)."
        ),
    }
}

/// The folder holding `initdb` and `pg_ctl`.
fn find_bin() -> Result<PathBuf, String> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("CASEGATE_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if has_both(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "CASEGATE_PG_BIN={} holds no initdb and pg_ctl",
                dir.display()
            ))
        };
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    candidates.extend(versions.into_iter().rev().map(|(_, dir)| dir));
    candidates
        .into_iter()
        .find(|dir| has_both(dir))
        // A folder of links (/usr/local/bin) stands for the one they point into, which
        // holds psql and postgres too.
        .map(|dir| {
            fs::canonicalize(dir.join("initdb"))
                .ok()
                .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
                .filter(|real| has_both(real))
                .unwrap_or(dir)
        })
        .ok_or_else(|| {
            "PostgreSQL's initdb and pg_ctl are not on PATH nor in /usr/lib/postgresql/*/bin"
                .to_string()
        })
}

/// `program` on PATH or in one of `extra`.
fn find_program(program: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Whether this process's effective user is root (from /proc/self/status).
fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// `postgres` if that user exists, else `nobody`.
fn unprivileged_user() -> Result<User, String> {
    let passwd = fs::read_to_string("/etc/passwd")
        .map_err(|e| format!("cannot read /etc/passwd to find a user to run PostgreSQL as: {e}"))?;
    let find = |name: &str| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 4 || fields[0] != name {
                return None;
            }
            Some(User {
                name: name.to_string(),
                uid: fields[2].parse().ok()?,
                gid: fields[3].parse().ok()?,
            })
        })
    };
    find("postgres").or_else(|| find("nobody")).ok_or_else(|| {
        "running as root, and neither a postgres nor a nobody user exists to run PostgreSQL as"
            .to_string()
    })
}

fn restrict(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot restrict {}: {e}", path.display()))
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))
}
