//! `ledger`: what casegate's ledger costs (SPEC 7.3), in uploads and downloads per second
//! of 4 KiB files at 32 connections, on a route whose ids must be mapped, beside routes
//! whose ids pass through, all in one run.
//!
//! - **tines->caseiq** (integer front ids, UUID back ids): every upload reserves a front
//!   id (a per-route sequence) before it is sent and records the pair once Case IQ has
//!   confirmed it; every download looks the front id up. Once with the SQLite ledger (a
//!   file, the default), once with PostgreSQL (a private server this benchmark starts with
//!   `initdb` from the distribution's package, see `casegate::ledger::pg_test`, with
//!   PostgreSQL's durable defaults: `fsync`, `synchronous_commit` on).
//! - **No id mapping**, SQLite: **tines->tines** (the same front, the same client bodies;
//!   ids pass through) and **caseiq->caseiq** (the same back; ids pass through). Their
//!   uploads still record the file's row (the ledger keeps every attachment casegate
//!   attached), with nothing to reserve; their downloads look nothing up.
//!
//! Every emulator runs with `--unique-ids`, so each upload names a new upstream file and
//! the ledger grows by a row per upload, as with a real upstream (the load benchmark's
//! emulators name one fixed file, so its ledger holds one row per route). The Tines bodies
//! put `value` before `file_contents`, so casegate streams them to Case IQ unspooled (a
//! body the other way round is spooled to disk first: that cost is the load benchmark's
//! tines->caseiq, not the ledger's).
//!
//! The four casegates (each with its own emulator) run side by side, idle but for the one
//! measured, and the measurements go round-robin, five rounds (one with `--quick`), so
//! that the VM's drift over a run falls on every configuration alike; after each run
//! PostgreSQL is made to checkpoint and the machine is given (up to 5 s) to fall idle, so
//! that no run pays for the one before. Each figure is the median of its rounds. The
//! target: the mapped route's requests/s at least 0.9 x the same-front route's (the ledger under 10 % of requests/s), uploads and downloads, with
//! SQLite and with PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use casegate::dialect::DialectId::{Caseiq, Tines};
use casegate::ledger::pg_test::{PgOptions, PgServer};

use crate::dialects::{Endpoint, Pairing, TinesTail};
use crate::measure::{self, Meter, Usage};
use crate::report::{self, num, Table};
use crate::runner::{self, Direction, Job, Outcome, Plan};
use crate::stack::{Stack, StackOptions};
use crate::{Options, Res};

const FILE_LEN: u64 = 4 << 10;
const CONCURRENCY: usize = 32;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The target: the mapped route at least this share of the same-front route's requests/s.
const TARGET: f64 = 0.9;

/// Where a configuration's ledger is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Sqlite,
    Postgres,
}

/// One casegate: a route and its ledger.
#[derive(Debug, Clone, Copy)]
struct Setup {
    pairing: Pairing,
    store: Store,
    mapped: bool,
}

impl std::fmt::Display for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let store = match self.store {
            Store::Sqlite => "SQLite",
            Store::Postgres => "PostgreSQL",
        };
        let ids = if self.mapped {
            "ids mapped"
        } else {
            "no id mapping"
        };
        write!(f, "{} ({ids}, {store})", self.pairing)
    }
}

const SETUPS: [Setup; 5] = [
    Setup {
        pairing: Pairing::new(Tines, Caseiq),
        store: Store::Sqlite,
        mapped: true,
    },
    Setup {
        pairing: Pairing::new(Tines, Caseiq),
        store: Store::Postgres,
        mapped: true,
    },
    Setup {
        pairing: Pairing::new(Tines, Tines),
        store: Store::Sqlite,
        mapped: false,
    },
    Setup {
        pairing: Pairing::new(Tines, Tines),
        store: Store::Postgres,
        mapped: false,
    },
    Setup {
        pairing: Pairing::new(Caseiq, Caseiq),
        store: Store::Sqlite,
        mapped: false,
    },
];

/// The baseline of a setup: tines->tines (the same front, no id mapping) with its store.
fn same_front(store: Store) -> usize {
    match store {
        Store::Sqlite => 2,
        Store::Postgres => 3,
    }
}
/// caseiq->caseiq (the same back as the mapped route, no id mapping), SQLite.
const SAME_BACK: usize = 4;

/// One measured run.
struct Run {
    outcome: Outcome,
    usage: Usage,
    /// PostgreSQL's CPU seconds over the run (all its processes), when the setup uses it.
    postgres: Option<f64>,
}

impl Run {
    fn cpu_us(&self) -> Option<f64> {
        let (user, system) = self.usage.per_request_us(self.outcome.ok)?;
        Some(user + system)
    }

    fn postgres_cpu_us(&self) -> Option<f64> {
        let seconds = self.postgres?;
        (self.outcome.ok > 0).then(|| seconds * 1e6 / self.outcome.ok as f64)
    }
}

/// A running setup: its stack and, once its file is uploaded, its download.
struct Live {
    setup: Setup,
    stack: Stack,
    upload: Arc<runner::Upload>,
    download: Arc<runner::Download>,
    runs: [Vec<Run>; 2],
}

pub async fn run(opts: &Options) -> Res<()> {
    let (rounds, warmup, mut measured) = if opts.quick {
        (1, Duration::from_millis(500), Duration::from_secs(2))
    } else {
        (5, Duration::from_secs(1), Duration::from_secs(5))
    };
    if let Some(seconds) = opts.seconds {
        measured = Duration::try_from_secs_f64(seconds)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("--seconds {seconds}: not a positive number of seconds"))?;
    }
    println!("{}", report::machine_facts());
    println!(
        "ledger: {} setups x (uploads, downloads) of {} at c={CONCURRENCY}, {rounds} round(s) \
         of {warmup:?} warm-up + {measured:?}, ~{} s",
        SETUPS.len(),
        report::size(FILE_LEN),
        ((warmup + measured) * 2 * SETUPS.len() as u32 * rounds).as_secs()
    );
    let pg = PgServer::start_with(PgOptions {
        durable: true,
        ..PgOptions::default()
    })
    .map_err(|e| {
        format!(
            "cannot start PostgreSQL for the ledger benchmark: {e} \
             (install it with `apt-get install -y postgresql`)"
        )
    })?;
    let database = pg.create_database()?;
    let mut live = Vec::new();
    for setup in SETUPS {
        let ledger = (setup.store == Store::Postgres).then(|| pg.url(&database));
        live.push(start(setup, ledger, opts).await?);
    }
    let plan = |duration| Plan {
        concurrency: CONCURRENCY,
        duration,
        max_requests: 1_000_000,
        request_timeout: REQUEST_TIMEOUT,
        new_connections: false,
    };
    for round in 1..=rounds {
        for l in &mut live {
            for direction in [Direction::Upload, Direction::Download] {
                let plural = direction.plural();
                eprintln!("[round {round}/{rounds}] {} {plural}", l.setup);
                let db = (l.setup.store == Store::Postgres).then_some(&pg);
                let run = match direction {
                    Direction::Upload => {
                        measure(&l.stack, &l.upload, plan(warmup), plan(measured), db).await
                    }
                    Direction::Download => {
                        measure(&l.stack, &l.download, plan(warmup), plan(measured), db).await
                    }
                }
                .map_err(|e| format!("{} {plural}: {e}", l.setup))?;
                if db.is_some() {
                    // What PostgreSQL would write back later (dirty buffers, and the
                    // kernel's writeback of them, which no process of its is charged
                    // for), written now rather than during the next setup's run.
                    pg.psql(&database, "CHECKPOINT")?;
                }
                settle().await;
                if let Some(e) = &run.outcome.first_error {
                    return Err(format!(
                        "{} {plural}: {} errors, the first: {e}{}",
                        l.setup,
                        run.outcome.errors,
                        l.stack.casegate_log()
                    ));
                }
                l.runs[direction as usize].push(run);
            }
            l.stack.check_alive()?;
        }
    }
    let rows_in_postgres = pg
        .psql(&database, "SELECT count(*) FROM files")
        .unwrap_or_else(|e| format!("unknown ({e})"));
    println!("{}", table(&live, opts.markdown));
    println!("PostgreSQL ledger rows at the end: {rows_in_postgres}");
    println!("{}", verdict(&live));
    Ok(())
}

/// Starts `setup`'s emulator and casegate, and uploads the file its downloads fetch.
async fn start(setup: Setup, ledger: Option<String>, opts: &Options) -> Res<Live> {
    let stack = Stack::start(
        &opts.casegate,
        &[setup.pairing],
        &StackOptions {
            ledger,
            unique_ids: true,
            ..StackOptions::default()
        },
    )?;
    let endpoint = Endpoint::casegate(stack.casegate_addr(), setup.pairing);
    // The upload the load repeats, and a first one for the download's id.
    let upload = endpoint
        .upload(FILE_LEN, TinesTail::ValueFirst)
        .await
        .map_err(|e| format!("{setup}: {e}"))?;
    let id = stack
        .upload_for_id(&endpoint, FILE_LEN, TinesTail::ValueFirst, REQUEST_TIMEOUT)
        .await
        .map_err(|e| format!("{setup}: the first upload: {e}"))?;
    let download = endpoint
        .download(&id, FILE_LEN)
        .await
        .map_err(|e| format!("{setup}: {e}"))?;
    Ok(Live {
        setup,
        stack,
        upload: Arc::new(upload),
        download: Arc::new(download),
        runs: [Vec::new(), Vec::new()],
    })
}

/// A warm-up, then the measured run with casegate's CPU time (and PostgreSQL's, with `pg`).
async fn measure<J: Job>(
    stack: &Stack,
    job: &Arc<J>,
    warmup: Plan,
    measured: Plan,
    pg: Option<&PgServer>,
) -> Res<Run> {
    runner::run(job, warmup).await;
    let postmaster = pg.map(postmaster_pid).transpose()?;
    let pg_start = postmaster.map(measure::tree_cpu_seconds).transpose()?;
    let meter = Meter::start(&[stack.casegate_pid()], false)?;
    let outcome = runner::run(job, measured).await;
    let usage = meter.finish().await?;
    let postgres = match (postmaster, pg_start) {
        (Some(pid), Some(start)) => Some(measure::tree_cpu_seconds(pid)? - start),
        _ => None,
    };
    Ok(Run {
        outcome,
        usage,
        postgres,
    })
}

/// The PostgreSQL server's postmaster: the first line of its `postmaster.pid`.
fn postmaster_pid(pg: &PgServer) -> Res<u32> {
    let file = pg.dir().join("data").join("postmaster.pid");
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| format!("{} does not start with a pid", file.display()))
}

/// Waits (at most 5 s) until the machine is idle: 90 % of its CPU time idle over 200 ms,
/// so that one run's aftermath (writeback, a checkpoint) does not land on the next.
async fn settle() {
    fn idle_and_total() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
        let fields: Vec<u64> = cpu
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait ...: idle and iowait count as idle.
        let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
        Some((idle, fields.iter().sum()))
    }
    for _ in 0..25 {
        let Some((idle0, total0)) = idle_and_total() else {
            return;
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some((idle1, total1)) = idle_and_total() else {
            return;
        };
        let total = total1.saturating_sub(total0);
        if total > 0 && (idle1.saturating_sub(idle0)) as f64 / total as f64 >= 0.9 {
            return;
        }
    }
}

/// The median of `values` (`None` when empty).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

fn per_second(runs: &[Run]) -> Option<f64> {
    median(runs.iter().map(|r| r.outcome.per_second()).collect())
}

fn table(live: &[Live], markdown: bool) -> String {
    let mut t = Table::new(&[
        "setup",
        "direction",
        "req/s (median)",
        "req/s by round",
        "p50 ms",
        "p99 ms",
        "CPU us/req",
        "PostgreSQL CPU us/req",
        "x same front, same store",
        "x same back (SQLite)",
    ]);
    for l in live {
        for direction in [Direction::Upload, Direction::Download] {
            let runs = &l.runs[direction as usize];
            let rate = per_second(runs);
            let versus = |baseline: usize| {
                let b = per_second(&live[baseline].runs[direction as usize])?;
                Some(rate? / b)
            };
            let quantile = |q: f64| {
                median(
                    runs.iter()
                        .filter_map(|r| r.outcome.quantile(q))
                        .map(|d| d.as_secs_f64() * 1e3)
                        .collect(),
                )
            };
            let by_round = runs
                .iter()
                .map(|r| format!("{:.0}", r.outcome.per_second()))
                .collect::<Vec<_>>()
                .join(" / ");
            t.row(vec![
                l.setup.to_string(),
                direction.plural().to_string(),
                num(rate, 1),
                by_round,
                num(quantile(0.5), 2),
                num(quantile(0.99), 2),
                num(median(runs.iter().filter_map(Run::cpu_us).collect()), 1),
                num(
                    median(runs.iter().filter_map(Run::postgres_cpu_us).collect()),
                    1,
                ),
                num(versus(same_front(l.setup.store)), 3),
                num(versus(SAME_BACK), 3),
            ]);
        }
    }
    t.render(markdown)
}

fn verdict(live: &[Live]) -> String {
    let ratio = |a: &Live, b: &Live, d: usize| {
        per_second(&a.runs[d])
            .zip(per_second(&b.runs[d]))
            .map(|(a, b)| a / b)
    };
    let mut out = format!(
        "against the target (the mapped route >= {TARGET} x the same route without id \
         mapping, tines->tines, on the same store, same run):\n"
    );
    for l in live.iter().filter(|l| l.setup.mapped) {
        for direction in [Direction::Upload, Direction::Download] {
            let plural = direction.plural();
            let r = ratio(l, &live[same_front(l.setup.store)], direction as usize);
            let word = match r {
                Some(r) if r >= TARGET => "met",
                Some(_) => "MISSED",
                None => "no figure",
            };
            out.push_str(&format!(
                "  {word:<9} {} {plural}: {} x (id mapping costs {} % of requests/s)\n",
                l.setup,
                num(r, 3),
                num(r.map(|r| (1.0 - r) * 100.0), 1),
            ));
        }
    }
    out.push_str(&format!(
        "and the whole ledger on PostgreSQL against SQLite (same run, {TARGET} for reference):\n"
    ));
    for (pg, sqlite) in [(1, 0), (3, 2)] {
        for direction in [Direction::Upload, Direction::Download] {
            let plural = direction.plural();
            let r = ratio(&live[pg], &live[sqlite], direction as usize);
            let word = match r {
                Some(r) if r >= TARGET => "within",
                Some(_) => "BEYOND",
                None => "no figure",
            };
            out.push_str(&format!(
                "  {word:<9} {} {plural}: {} x {}\n",
                live[pg].setup,
                num(r, 3),
                live[sqlite].setup,
            ));
        }
    }
    out
}
