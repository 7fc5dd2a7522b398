//! casegate-bench: measures casegate as a separate process against the direct-to-upstream
//! baseline. `load` (the default) compares throughput and latency through casegate with
//! the same uploads sent straight to the upstream emulator; `memory` checks casegate's
//! peak RSS with files up to 1 GiB, uploaded and downloaded; `codecs` runs the divan
//! micro-benchmarks of the codecs (`cargo bench -p casegate-bench`); `soak` runs mixed
//! good and bad traffic against failing upstreams for ten minutes. See bench/README.md.

mod chart;
mod dialects;
mod ledger;
mod load;
mod measure;
mod memory;
mod nginx;
mod payload;
mod procs;
mod report;
mod runner;
mod soak;
mod stack;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};

/// A benchmark's failure, said in words (what failed, and why).
pub type Res<T> = Result<T, String>;

#[derive(Parser)]
#[command(
    name = "casegate-bench",
    about = "Load, memory and codec benchmarks for casegate (see bench/README.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// A short run: fewer scenarios, shorter runs.
    #[arg(long, global = true)]
    quick: bool,
    /// Print result tables as Markdown.
    #[arg(long, global = true)]
    markdown: bool,
    /// The casegate binary (default: `casegate` next to this executable).
    #[arg(long, global = true)]
    casegate: Option<PathBuf>,
    /// Run only the scenarios whose name contains this text (e.g. "thalamus->tines",
    /// "32 MiB", "c=64", "8 x 1 GiB"; memory: "upload", "download").
    #[arg(long, global = true, value_name = "TEXT")]
    only: Option<String>,
    /// load: leave nginx out (by default it runs as the peer proxy, installed with
    /// `apt-get install -y nginx` when missing and running as root).
    #[arg(long, global = true)]
    no_nginx: bool,
    /// load: also write the SVG chart to PATH (it always goes to bench/out/load-DATE.svg).
    #[arg(long, global = true, value_name = "PATH")]
    chart: Option<PathBuf>,
    /// load: measured seconds per run (default 5; 2 with --quick).
    #[arg(long, global = true, value_name = "N")]
    seconds: Option<f64>,
    /// load: casegate's log filter (`CASEGATE_LOG`; `casegate::server=info` is always
    /// added for its start-up line). `info` turns the access log on.
    #[arg(long, global = true, value_name = "FILTER", default_value = "warn")]
    casegate_log: String,
    /// load: a shell command run during each measured proxy run (casegate and nginx, not
    /// direct), from just before it starts to its end, then sent SIGINT: `{pids}` becomes
    /// the proxy's pids, comma-separated, `{path}` `casegate` or `nginx`, `{scenario}` the
    /// scenario as a file name. E.g. `strace -c -f -o /tmp/{path}.strace -p {pids}`.
    #[arg(long, global = true, value_name = "CMD")]
    attach: Option<String>,
    /// load: the emulators name a new file id in every upload answer, as a real case
    /// system does, so every upload adds a ledger row (by default they name one fixed
    /// file, and the ledger finds it already recorded).
    #[arg(long, global = true)]
    unique_ids: bool,
    /// load: every request on a connection of its own, which the server closes after the
    /// answer (`Connection: close`), as from a client that keeps no connections (Python
    /// `requests` without a Session, `ab` without `-k`); by default each of the load
    /// generator's connections is kept alive for the whole run.
    #[arg(long, global = true)]
    new_connections: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Throughput and latency through casegate against the direct baseline (the default).
    Load,
    /// casegate's peak RSS with files of 1 MiB, 64 MiB and 1 GiB, one at a time and 8 at once,
    /// uploaded and downloaded.
    Memory,
    /// Mixed good and bad traffic against flaky upstreams; checks memory, descriptors and
    /// that every confirmed upload, and only those, was answered as a success.
    Soak {
        /// How long (default 10 minutes; 1 with --quick).
        #[arg(long)]
        minutes: Option<f64>,
    },
    /// What the ledger costs: uploads and downloads per second of 4 KiB at c=32 on an
    /// int-front/UUID-back route (tines->caseiq) with SQLite and with PostgreSQL, beside
    /// routes without id mapping (tines->tines, caseiq->caseiq); starts PostgreSQL itself.
    Ledger,
    /// The codec micro-benchmarks (divan), via `cargo bench -p casegate-bench`.
    Codecs {
        /// Passed on to divan (for example a name filter, or --sample-count 10).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// What the load and memory benchmarks need to know.
pub struct Options {
    pub casegate: PathBuf,
    pub quick: bool,
    pub markdown: bool,
    pub only: Option<String>,
    pub nginx: bool,
    pub chart: Option<PathBuf>,
    pub seconds: Option<f64>,
    pub casegate_log: String,
    pub attach: Option<String>,
    pub unique_ids: bool,
    pub new_connections: bool,
}

impl Options {
    /// Whether `--only` lets the scenario named `name` run.
    pub fn selects(&self, name: &str) -> bool {
        self.only.as_deref().is_none_or(|only| name.contains(only))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command.unwrap_or(Cmd::Load) {
        Cmd::Codecs { args } => codecs(cli.quick, &args),
        cmd => casegate_binary(cli.casegate).and_then(|casegate| {
            let opts = Options {
                casegate,
                quick: cli.quick,
                markdown: cli.markdown,
                only: cli.only,
                nginx: !cli.no_nginx,
                chart: cli.chart,
                seconds: cli.seconds,
                casegate_log: cli.casegate_log,
                attach: cli.attach,
                unique_ids: cli.unique_ids,
                new_connections: cli.new_connections,
            };
            let runtime = tokio::runtime::Runtime::new()
                .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
            runtime.block_on(async {
                let bench = async {
                    match cmd {
                        Cmd::Memory => memory::run(&opts).await,
                        Cmd::Ledger => ledger::run(&opts).await,
                        Cmd::Soak { minutes } => soak::run(&opts, minutes).await,
                        _ => load::run(&opts).await,
                    }
                };
                // On Ctrl-C the benchmark future is dropped: its processes are killed and
                // its temporary directory removed before the process exits.
                tokio::select! {
                    result = bench => result,
                    _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
                }
            })
        }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("casegate-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The casegate binary to run: `--casegate`, else `casegate` beside this executable.
fn casegate_binary(given: Option<PathBuf>) -> Res<PathBuf> {
    let path = match given {
        Some(path) => path,
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this executable's path: {e}"))?
            .with_file_name("casegate"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no casegate binary at {} (build it with `cargo build --release -p casegate`, \
             or pass --casegate PATH)",
            path.display()
        ))
    }
}

/// Runs the divan benchmarks with cargo, in the workspace this crate was built from.
fn codecs(quick: bool, args: &[String]) -> Res<()> {
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace)
        .args(["bench", "-p", "casegate-bench", "--bench", "codecs", "--"]);
    if quick {
        cmd.args(["--sample-count", "10"]);
    }
    cmd.args(args);
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo bench in {workspace}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo bench failed ({status})"))
    }
}
