//! `load`: throughput, latency and CPU per request of casegate, against the direct path
//! (straight to the upstream emulator) and against nginx `proxy_pass` in front of the same
//! emulator.
//!
//! Scenarios: the pairings tines->kibana, thalamus->tines, caseiq->caseiq, kibana->caseiq,
//! tines->tines, tines->caseiq, caseiq->tines and tines->thalamus; files of 4 KiB (1, 32 and 64
//! connections) and 32 MiB (1 and 8), and for the first four pairings 1 MiB (1 and 8).
//! Each runs three times with the same file, concurrency and duration: straight to the
//! upstream emulator in the back dialect (direct), through casegate in the front dialect,
//! and through nginx in the back dialect (nginx cannot translate: its row is what a plain
//! proxy in front of the same upstream costs). One casegate process and one nginx serve
//! every scenario; the CPU time and peak RSS of the proxy are measured over each of its
//! runs (peak reset before it), nginx's summed over its master and workers.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use casegate::dialect::DialectId::{self, Caseiq, Kibana, Thalamus, Tines};

use crate::chart::{self, Bar};
use crate::dialects::{Endpoint, Pairing, TinesTail};
use crate::measure::{self, Meter, Usage};
use crate::report::{self, num, Table};
use crate::runner::{self, Outcome, Plan};
use crate::stack::{Stack, StackOptions, CASEGATE_LOG};
use crate::{Options, Res};

/// The pairings, and whether each runs the 1 MiB scenarios too.
const PAIRINGS: [(Pairing, bool); 8] = [
    (Pairing::new(Tines, Kibana), true),
    (Pairing::new(Thalamus, Tines), true),
    (Pairing::new(Caseiq, Caseiq), true),
    (Pairing::new(Kibana, Caseiq), true),
    (Pairing::new(Tines, Tines), false),
    (Pairing::new(Tines, Caseiq), false),
    (Pairing::new(Caseiq, Tines), false),
    (Pairing::new(Tines, Thalamus), false),
];

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// (file size, concurrency) of every scenario, per pairing; 1 MiB only where the pairing
/// says so.
const FULL: [(u64, usize); 7] = [
    (4 * KIB, 1),
    (4 * KIB, 32),
    (4 * KIB, 64),
    (MIB, 1),
    (MIB, 8),
    (32 * MIB, 1),
    (32 * MIB, 8),
];
const QUICK: [(u64, usize); 2] = [(4 * KIB, 32), (32 * MIB, 8)];

/// How long each run lasts.
struct Timing {
    warmup: Duration,
    measured: Duration,
    max_requests: u64,
    /// Every request on a connection of its own (`--new-connections`).
    new_connections: bool,
}

const FULL_TIMING: Timing = Timing {
    warmup: Duration::from_secs(1),
    measured: Duration::from_secs(5),
    max_requests: 1_000_000,
    new_connections: false,
};
const QUICK_TIMING: Timing = Timing {
    warmup: Duration::from_millis(500),
    measured: Duration::from_secs(2),
    max_requests: 200_000,
    new_connections: false,
};

/// One request may take this long before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an `--attach` command gets to attach before the run starts, and to finish
/// after SIGINT before it is killed.
const ATTACH_SETTLE: Duration = Duration::from_secs(1);
const ATTACH_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
struct Scenario {
    pairing: Pairing,
    file_len: u64,
    concurrency: usize,
    /// In the full run's last pass: the emulators name a new file in every upload answer.
    new_files: bool,
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let size = report::size(self.file_len);
        write!(f, "{} {size} c={}", self.pairing, self.concurrency)?;
        if self.new_files {
            f.write_str(" new files")?;
        }
        Ok(())
    }
}

/// The three ways a scenario's uploads go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Direct,
    Casegate,
    Nginx,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Casegate => "casegate",
            Path::Nginx => "nginx",
        }
    }
}

/// One measured run.
struct Run {
    outcome: Outcome,
    usage: Option<Usage>,
}

/// A scenario's runs.
struct Measured {
    scenario: Scenario,
    direct: Run,
    casegate: Run,
    nginx: Option<Run>,
}

pub async fn run(opts: &Options) -> Res<()> {
    let (shapes, mut timing): (&[(u64, usize)], _) = if opts.quick {
        (&QUICK, QUICK_TIMING)
    } else {
        (&FULL, FULL_TIMING)
    };
    if let Some(seconds) = opts.seconds {
        timing.measured = Duration::try_from_secs_f64(seconds)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("--seconds {seconds}: not a positive number of seconds"))?;
    }
    timing.new_connections = opts.new_connections;
    let scenarios: Vec<Scenario> = PAIRINGS
        .iter()
        .flat_map(|&(pairing, with_mib)| {
            shapes
                .iter()
                .filter(move |&&(file_len, _)| with_mib || file_len != MIB)
                .map(move |&(file_len, concurrency)| Scenario {
                    pairing,
                    file_len,
                    concurrency,
                    new_files: false,
                })
        })
        .filter(|scenario| opts.selects(&scenario.to_string()))
        .collect();
    if scenarios.is_empty() {
        let only = opts.only.as_deref().unwrap_or_default();
        return Err(format!("no load scenario matches --only {only:?}"));
    }
    // A full run (no --only, no --unique-ids) ends with the 4 KiB c=32 scenarios again,
    // the emulators naming a new file in every upload answer as a real case system does,
    // on a casegate of their own: its ledger grows a row per upload.
    let new_files: Vec<Scenario> = if opts.quick || opts.only.is_some() || opts.unique_ids {
        Vec::new()
    } else {
        PAIRINGS
            .iter()
            .map(|&(pairing, _)| Scenario {
                pairing,
                file_len: 4 * KIB,
                concurrency: 32,
                new_files: true,
            })
            .collect()
    };
    let total = scenarios.len() + new_files.len();
    let per_run = timing.warmup + timing.measured;
    let paths = if opts.nginx { 3 } else { 2 };
    println!("{}", report::machine_facts());
    println!(
        "load ({}{}): {} scenarios x ({}), {:?} warm-up + {:?} each \
         (at most {} requests), ~{} s",
        if opts.quick { "quick" } else { "full" },
        if timing.new_connections {
            ", a new connection per request"
        } else {
            ""
        },
        total,
        if opts.nginx {
            "direct, casegate, nginx"
        } else {
            "direct, casegate"
        },
        timing.warmup,
        timing.measured,
        timing.max_requests,
        (per_run * paths * total as u32).as_secs()
    );
    if !new_files.is_empty() {
        println!(
            "the last {} scenarios (\"new files\"): emulators naming a new file in every \
             upload answer, on a casegate and nginx of their own",
            new_files.len()
        );
    }

    let log = if opts.casegate_log == "warn" {
        CASEGATE_LOG.to_owned()
    } else {
        format!("{},casegate::server=info", opts.casegate_log)
    };
    let mut results = Vec::new();
    let mut notes = Vec::new();
    let mut done = 0;
    for (pass, unique_ids) in [(&scenarios, opts.unique_ids), (&new_files, true)] {
        if pass.is_empty() {
            continue;
        }
        let mut pairings: Vec<Pairing> = pass.iter().map(|s| s.pairing).collect();
        pairings.dedup();
        let mut stack = Stack::start(
            &opts.casegate,
            &pairings,
            &StackOptions {
                casegate_log: log.clone(),
                nginx: opts.nginx,
                unique_ids,
                ..StackOptions::default()
            },
        )?;
        println!("casegate: pid {}, CASEGATE_LOG={log}", stack.casegate_pid());
        if let Some(nginx) = stack.nginx() {
            println!(
                "nginx: {} (master and workers: pids {})",
                nginx.version(),
                join(&nginx.pids())
            );
        }
        if !stack.can_reset_peak {
            println!(
                "note: casegate's peak RSS cannot be reset in place; \
                 restarting it before every scenario"
            );
        }
        for scenario in pass.iter() {
            done += 1;
            eprintln!("[{done}/{total}] {scenario}");
            results.push(measure_one(opts, &mut stack, scenario, &timing, &mut notes).await?);
        }
    }

    let mut table = Table::new(&[
        "scenario",
        "path",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "MB/s",
        "errors",
        "x direct",
        "p99 added ms",
        "CPU us/req",
        "user+sys us/req",
        "x nginx req/s",
        "x nginx CPU/req",
        "CPU s/GB",
        "peak RSS MiB",
        "sampled RSS MiB",
    ]);
    let mut bars = Vec::new();
    for m in &results {
        let label = m.scenario.to_string();
        let file_len = m.scenario.file_len;
        table.row(row(&label, Path::Direct, &m.direct, file_len, None, None));
        table.row(row(
            &label,
            Path::Casegate,
            &m.casegate,
            file_len,
            Some(&m.direct),
            m.nginx.as_ref(),
        ));
        if let Some(nginx) = &m.nginx {
            table.row(row(
                &label,
                Path::Nginx,
                nginx,
                file_len,
                Some(&m.direct),
                None,
            ));
        }
        let runs = [
            (Path::Direct, Some(&m.direct)),
            (Path::Casegate, Some(&m.casegate)),
            (Path::Nginx, m.nginx.as_ref()),
        ];
        for (path, run) in runs {
            if let Some(run) = run {
                bars.push(Bar {
                    scenario: label.clone(),
                    path: path.name(),
                    requests_per_s: run.outcome.per_second(),
                    megabytes_per_s: mb_per_s(&run.outcome, file_len),
                });
            }
        }
    }
    println!("{}", table.render(opts.markdown));
    println!(
        "MB/s: file bytes (not wire bytes) per second, 1 MB = 10^6 B; x direct: req/s / the \
         direct run's; p99 added: p99 minus the direct run's; CPU us/req: the proxy's \
         utime + stime (from /proc/PID/stat; nginx: master and workers summed) per request, \
         in core-microseconds; x nginx: casegate / nginx (req/s, and CPU per request); \
         CPU s/GB: the proxy's CPU seconds per 10^9 file bytes; peak RSS: VmHWM (reset \
         before each run; nginx: summed over its processes); sampled RSS: the largest VmRSS \
         sampled every 50 ms."
    );
    for note in &notes {
        println!("note: {note}");
    }
    if opts.nginx {
        println!("\n{}", targets(&results));
    }
    let title = format!(
        "casegate load, {} ({}), commit {}",
        report::today_utc(),
        if opts.quick { "quick" } else { "full" },
        report::commit()
    );
    let svg = chart::render(&title, &bars)?;
    // The tables are out already: a chart that cannot be written is a warning, unless it
    // is the one --chart asked for.
    match chart::write_dated(&svg) {
        Ok(path) => eprintln!("chart: {}", path.display()),
        Err(e) => eprintln!("warning: {e}"),
    }
    if let Some(path) = &opts.chart {
        std::fs::write(path, &svg).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("chart: {}", path.display());
    }
    Ok(())
}

/// One scenario's three runs (direct, through casegate, through nginx), with a note for
/// each run that had errors or answers naming dropped fields.
async fn measure_one(
    opts: &Options,
    stack: &mut Stack,
    scenario: &Scenario,
    timing: &Timing,
    notes: &mut Vec<String>,
) -> Res<Measured> {
    let pairing = scenario.pairing;
    let direct = Endpoint::direct(stack.upstream_addr(pairing.back)?, pairing);
    let (outcome, _) = measure(&direct, scenario, timing, None, None)
        .await
        .map_err(|e| format!("{scenario} direct: {e}"))?;
    let direct = Run {
        outcome,
        usage: None,
    };
    if !stack.can_reset_peak {
        stack.restart_casegate()?;
    }
    let via = Endpoint::casegate(stack.casegate_addr(), pairing);
    let meter = Some((vec![stack.casegate_pid()], stack.can_reset_peak));
    let attach = attach_command(opts, Path::Casegate, scenario, &[stack.casegate_pid()]);
    let (outcome, usage) = measure(&via, scenario, timing, meter, attach)
        .await
        .map_err(|e| format!("{scenario} casegate: {e}{}", stack.casegate_log()))?;
    let casegate = Run { outcome, usage };
    let nginx = match stack.nginx() {
        Some(nginx) => {
            let pids = nginx.pids();
            let reset = pids.iter().all(|&pid| measure::can_reset_peak(pid));
            let endpoint = Endpoint::direct(nginx.addr(pairing.back)?, pairing);
            let attach = attach_command(opts, Path::Nginx, scenario, &pids);
            let (outcome, usage) =
                measure(&endpoint, scenario, timing, Some((pids, reset)), attach)
                    .await
                    .map_err(|e| format!("{scenario} nginx: {e}{}", nginx.recent_log()))?;
            Some(Run { outcome, usage })
        }
        None => None,
    };
    stack.check_alive()?;

    let runs = [
        (Path::Direct, Some(&direct)),
        (Path::Casegate, Some(&casegate)),
        (Path::Nginx, nginx.as_ref()),
    ];
    for (path, run) in runs {
        let Some(outcome) = run.map(|r| &r.outcome) else {
            continue;
        };
        let path = path.name();
        if let Some(error) = &outcome.first_error {
            let note = format!(
                "{scenario} {path}: {} errors, the first: {error}",
                outcome.errors
            );
            eprintln!("  {note}");
            notes.push(note);
        }
        if let Some(dropped) = &outcome.first_dropped {
            let note = format!(
                "{scenario} {path}: {} of {} answers had Casegate-Dropped: {dropped}",
                outcome.dropped, outcome.ok
            );
            eprintln!("  {note}");
            notes.push(note);
        }
    }
    Ok(Measured {
        scenario: *scenario,
        direct,
        casegate,
        nginx,
    })
}

fn join(pids: &[u32]) -> String {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    pids.join(",")
}

/// `--attach`'s command for one proxied run, its placeholders filled in.
fn attach_command(opts: &Options, path: Path, scenario: &Scenario, pids: &[u32]) -> Option<String> {
    let file_name: String = scenario
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    opts.attach.as_ref().map(|cmd| {
        cmd.replace("{pids}", &join(pids))
            .replace("{path}", path.name())
            .replace("{scenario}", &file_name)
    })
}

/// A running `--attach` command, its own process group; [`Attached::finish`] sends the
/// group SIGINT and waits for it (killing it after [`ATTACH_GRACE`]).
struct Attached {
    child: Child,
}

impl Attached {
    fn start(cmd: &str) -> Res<Attached> {
        use std::os::unix::process::CommandExt as _;
        eprintln!("  attach: {cmd}");
        let child = Command::new("sh")
            .args(["-c", cmd])
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run the --attach command {cmd:?}: {e}"))?;
        Ok(Attached { child })
    }

    async fn finish(mut self) -> Res<()> {
        self.signal(libc::SIGINT);
        let deadline = tokio::time::Instant::now() + ATTACH_GRACE;
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "the --attach command did not end within {ATTACH_GRACE:?} of SIGINT"
        ))
    }

    fn signal(&self, signal: i32) {
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our child's process group; it touches no memory of ours.
            unsafe {
                libc::kill(-pgid, signal);
            }
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Runs a warm-up and then the measured run of `scenario` against `endpoint`; with
/// `meter` = (pids, whether their peak can be reset), measures those processes over the
/// measured run; with `attach`, runs that command over it.
async fn measure(
    endpoint: &Endpoint,
    scenario: &Scenario,
    timing: &Timing,
    meter: Option<(Vec<u32>, bool)>,
    attach: Option<String>,
) -> Res<(Outcome, Option<Usage>)> {
    let upload = Arc::new(endpoint.upload(scenario.file_len, TinesTail::Value).await?);
    let plan = |duration| Plan {
        concurrency: scenario.concurrency,
        duration,
        max_requests: timing.max_requests,
        request_timeout: REQUEST_TIMEOUT,
        new_connections: timing.new_connections,
    };
    runner::run(&upload, plan(timing.warmup)).await;
    let attached = match attach {
        Some(cmd) => {
            let attached = Attached::start(&cmd)?;
            tokio::time::sleep(ATTACH_SETTLE).await;
            Some(attached)
        }
        None => None,
    };
    let meter = meter
        .map(|(pids, reset)| Meter::start(&pids, reset))
        .transpose()?;
    let outcome = runner::run(&upload, plan(timing.measured)).await;
    let usage = match meter {
        Some(meter) => Some(meter.finish().await?),
        None => None,
    };
    if let Some(attached) = attached {
        attached.finish().await?;
        eprintln!(
            "  attached run: {} requests answered 2xx, {} errors, in {:.3} s",
            outcome.ok,
            outcome.errors,
            outcome.elapsed.as_secs_f64()
        );
    }
    Ok((outcome, usage))
}

fn mb_per_s(outcome: &Outcome, file_len: u64) -> f64 {
    outcome.per_second() * file_len as f64 / 1e6
}

fn p99_ms(outcome: &Outcome) -> Option<f64> {
    outcome.quantile(0.99).map(|d| d.as_secs_f64() * 1e3)
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// CPU per request (user + system, core-microseconds) of a run.
fn cpu_us(run: &Run) -> Option<f64> {
    let (user, system) = run.usage?.per_request_us(run.outcome.ok)?;
    Some(user + system)
}

/// A table row: a proxy's row compares itself with its `direct` run, and casegate's with
/// `nginx`'s too.
fn row(
    label: &str,
    path: Path,
    run: &Run,
    file_len: u64,
    direct: Option<&Run>,
    nginx: Option<&Run>,
) -> Vec<String> {
    let outcome = &run.outcome;
    let ms = |q: f64| outcome.quantile(q).map(|d| d.as_secs_f64() * 1e3);
    let mut cells = vec![
        label.to_owned(),
        path.name().to_owned(),
        num(Some(outcome.per_second()), 1),
        num(ms(0.5), 2),
        num(ms(0.99), 2),
        num(ms(1.0), 2),
        num(Some(mb_per_s(outcome, file_len)), 1),
        outcome.errors.to_string(),
    ];
    let Some(direct) = direct else {
        cells.extend(std::iter::repeat_n("-".to_owned(), 9));
        return cells;
    };
    let direct = &direct.outcome;
    let added = p99_ms(outcome).zip(p99_ms(direct)).map(|(a, b)| a - b);
    let split = run
        .usage
        .and_then(|u| u.per_request_us(outcome.ok))
        .map_or_else(|| "-".to_owned(), |(u, s)| format!("{u:.1}+{s:.1}"));
    let gigabytes = outcome.ok as f64 * file_len as f64 / 1e9;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let versus_nginx = nginx.map(|n| {
        (
            ratio(outcome.per_second(), n.outcome.per_second()),
            cpu_us(run).zip(cpu_us(n)).and_then(|(a, b)| ratio(a, b)),
        )
    });
    cells.extend([
        num(ratio(outcome.per_second(), direct.per_second()), 2),
        num(added, 2),
        num(cpu_us(run), 1),
        split,
        num(versus_nginx.and_then(|v| v.0), 2),
        num(versus_nginx.and_then(|v| v.1), 2),
        num(run.usage.and_then(|u| ratio(u.cpu_seconds(), gigabytes)), 2),
        num(run.usage.map(|u| mib(u.peak_rss_kib)), 1),
        num(run.usage.map(|u| mib(u.sampled_rss_kib)), 1),
    ]);
    cells
}

/// Whether a pairing translates between base64 (Tines' JSON) and multipart (the others).
fn translates_base64(pairing: Pairing) -> bool {
    (pairing.front == Tines) != (pairing.back == Tines)
}

/// The targets, each scenario that bears on one judged against nginx's run of the
/// same scenario (nginx proxying the back dialect to the same upstream).
fn targets(results: &[Measured]) -> String {
    let mut out = String::from("against the targets (casegate vs nginx, same run):\n");
    let mut line = |what: String, met: Option<bool>| {
        let verdict = match met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "no figure",
        };
        out.push_str(&format!("  {verdict:<9} {what}\n"));
    };
    for m in results {
        let Some(nginx) = &m.nginx else { continue };
        let s = &m.scenario;
        let (c, n) = (&m.casegate, nginx);
        let req = ratio(c.outcome.per_second(), n.outcome.per_second());
        let cpu = cpu_us(c).zip(cpu_us(n));
        let same = s.pairing.front == s.pairing.back;
        let small = s.file_len == 4 * KIB;
        if same && small && (s.concurrency == 32 || s.concurrency == 64) {
            let cpu_ok = cpu.map(|(a, b)| a <= b);
            line(
                format!(
                    "{s}: req/s {} x nginx (>= 1.0), CPU/req {} vs {} us (<=)",
                    num(req, 3),
                    num(cpu.map(|c| c.0), 1),
                    num(cpu.map(|c| c.1), 1)
                ),
                req.zip(cpu_ok).map(|(r, ok)| r >= 1.0 && ok),
            );
        }
        if translates_base64(s.pairing) && small && s.concurrency == 32 {
            line(
                format!(
                    "{s}: req/s {} x nginx's same-dialect {} (>= 0.8)",
                    num(req, 3),
                    dialect_pair(s.pairing.back)
                ),
                req.map(|r| r >= 0.8),
            );
        }
        if s.file_len == 32 * MIB {
            line(
                format!(
                    "{s}: MB/s {} vs nginx {} = {} x (>= 1.0)",
                    num(Some(mb_per_s(&c.outcome, s.file_len)), 1),
                    num(Some(mb_per_s(&n.outcome, s.file_len)), 1),
                    num(req, 3)
                ),
                req.map(|r| r >= 1.0),
            );
        }
        if small && s.concurrency == 1 {
            let added = |run: &Run| {
                p99_ms(&run.outcome)
                    .zip(p99_ms(&m.direct.outcome))
                    .map(|(a, b)| a - b)
            };
            let (ca, na) = (added(c), added(n));
            line(
                format!(
                    "{s}: p99 added over direct {} ms vs nginx {} ms (within 0.2 ms)",
                    num(ca, 3),
                    num(na, 3)
                ),
                ca.zip(na).map(|(a, b)| a - b <= 0.2),
            );
        }
    }
    out
}

fn dialect_pair(back: DialectId) -> String {
    format!("{back}->{back}")
}
