//! `load`: throughput and latency of casegate against the direct-to-upstream baseline.
//!
//! Scenarios: the pairings tines->kibana, thalamus->tines, caseiq->caseiq and
//! kibana->caseiq; files of 4 KiB (1 and 64 connections), 1 MiB and 32 MiB (1 and 8
//! connections). Each runs twice with the same file, concurrency and duration: through
//! casegate in the front dialect, and straight to the upstream emulator in the back
//! dialect. One casegate process serves every scenario; its CPU time and peak RSS are
//! measured over each casegate run (peak reset before it).

use std::sync::Arc;
use std::time::Duration;

use casegate::dialect::DialectId::{Caseiq, Kibana, Thalamus, Tines};

use crate::dialects::{Endpoint, Pairing, TinesTail};
use crate::measure::{Meter, Usage};
use crate::report::{self, num, Table};
use crate::runner::{self, Outcome, Plan};
use crate::stack::Stack;
use crate::{Options, Res};

const PAIRINGS: [Pairing; 4] = [
    Pairing::new(Tines, Kibana),
    Pairing::new(Thalamus, Tines),
    Pairing::new(Caseiq, Caseiq),
    Pairing::new(Kibana, Caseiq),
];

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// (file size, concurrency) of every scenario, per pairing.
const FULL: [(u64, usize); 6] = [
    (4 * KIB, 1),
    (4 * KIB, 64),
    (MIB, 1),
    (MIB, 8),
    (32 * MIB, 1),
    (32 * MIB, 8),
];
const QUICK: [(u64, usize); 2] = [(4 * KIB, 64), (32 * MIB, 8)];

/// How long each run lasts.
struct Timing {
    warmup: Duration,
    measured: Duration,
    max_requests: u64,
}

const FULL_TIMING: Timing = Timing {
    warmup: Duration::from_secs(1),
    measured: Duration::from_secs(5),
    max_requests: 1_000_000,
};
const QUICK_TIMING: Timing = Timing {
    warmup: Duration::from_millis(500),
    measured: Duration::from_secs(2),
    max_requests: 200_000,
};

/// One request may take this long before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Scenario {
    pairing: Pairing,
    file_len: u64,
    concurrency: usize,
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let size = report::size(self.file_len);
        write!(f, "{} {size} c={}", self.pairing, self.concurrency)
    }
}

pub async fn run(opts: &Options) -> Res<()> {
    let (shapes, timing): (&[(u64, usize)], _) = if opts.quick {
        (&QUICK, QUICK_TIMING)
    } else {
        (&FULL, FULL_TIMING)
    };
    let scenarios: Vec<Scenario> = PAIRINGS
        .iter()
        .flat_map(|&pairing| {
            shapes.iter().map(move |&(file_len, concurrency)| Scenario {
                pairing,
                file_len,
                concurrency,
            })
        })
        .filter(|scenario| opts.selects(&scenario.to_string()))
        .collect();
    if scenarios.is_empty() {
        let only = opts.only.as_deref().unwrap_or_default();
        return Err(format!("no load scenario matches --only {only:?}"));
    }
    let mut pairings: Vec<Pairing> = scenarios.iter().map(|s| s.pairing).collect();
    pairings.dedup();
    let per_run = timing.warmup + timing.measured;
    println!("{}", report::machine_facts());
    println!(
        "load ({}): {} scenarios x (casegate, direct), {:?} warm-up + {:?} each \
         (at most {} requests), ~{} s",
        if opts.quick { "quick" } else { "full" },
        scenarios.len(),
        timing.warmup,
        timing.measured,
        timing.max_requests,
        (per_run * 2 * scenarios.len() as u32).as_secs()
    );

    let mut stack = Stack::start(&opts.casegate, &pairings)?;
    if !stack.can_reset_peak {
        println!(
            "note: casegate's peak RSS cannot be reset in place; \
             restarting it before every scenario"
        );
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
        "req/s ratio",
        "MB/s ratio",
        "p99 added ms",
        "CPU s/GB",
        "peak RSS MiB",
        "sampled RSS MiB",
    ]);
    let mut notes = Vec::new();
    for (i, scenario) in scenarios.iter().enumerate() {
        eprintln!("[{}/{}] {scenario}", i + 1, scenarios.len());
        let pairing = scenario.pairing;
        let direct = Endpoint::direct(stack.upstream_addr(pairing.back)?, pairing);
        let (direct, _) = measure(&direct, scenario, &timing, None)
            .await
            .map_err(|e| format!("{scenario} direct: {e}"))?;
        if !stack.can_reset_peak {
            stack.restart_casegate()?;
        }
        let via = Endpoint::casegate(stack.casegate_addr(), pairing);
        let meter = Some((stack.casegate_pid(), stack.can_reset_peak));
        let (via, usage) = measure(&via, scenario, &timing, meter)
            .await
            .map_err(|e| format!("{scenario} casegate: {e}{}", stack.casegate_log()))?;
        stack.check_alive()?;

        for (path, outcome) in [("direct", &direct), ("casegate", &via)] {
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
        let label = scenario.to_string();
        table.row(row(&label, "direct", &direct, scenario.file_len, None));
        table.row(row(
            &label,
            "casegate",
            &via,
            scenario.file_len,
            Some((&direct, usage)),
        ));
    }
    println!("{}", table.render(opts.markdown));
    println!(
        "MB/s: file bytes (not wire bytes) per second, 1 MB = 10^6 B; ratios: casegate / direct; \
         CPU s/GB: casegate's CPU seconds per 10^9 file bytes; peak RSS: casegate's VmHWM \
         (reset before each run); sampled RSS: its largest VmRSS sampled every 50 ms."
    );
    for note in notes {
        println!("note: {note}");
    }
    Ok(())
}

/// Runs a warm-up and then the measured run of `scenario` against `endpoint`; with
/// `meter` = (pid, whether its peak can be reset), measures that process over the
/// measured run.
async fn measure(
    endpoint: &Endpoint,
    scenario: &Scenario,
    timing: &Timing,
    meter: Option<(u32, bool)>,
) -> Res<(Outcome, Option<Usage>)> {
    let upload = Arc::new(endpoint.upload(scenario.file_len, TinesTail::Value).await?);
    let plan = |duration| Plan {
        concurrency: scenario.concurrency,
        duration,
        max_requests: timing.max_requests,
        request_timeout: REQUEST_TIMEOUT,
    };
    runner::run(&upload, plan(timing.warmup)).await;
    let meter = meter
        .map(|(pid, reset)| Meter::start(pid, reset))
        .transpose()?;
    let outcome = runner::run(&upload, plan(timing.measured)).await;
    let usage = match meter {
        Some(meter) => Some(meter.finish().await?),
        None => None,
    };
    Ok((outcome, usage))
}

/// A table row; a casegate row compares itself with its `direct` run.
fn row(
    label: &str,
    path: &str,
    outcome: &Outcome,
    file_len: u64,
    casegate: Option<(&Outcome, Option<Usage>)>,
) -> Vec<String> {
    let ms = |q: f64| outcome.quantile(q).map(|d| d.as_secs_f64() * 1e3);
    let mb_per_s = |o: &Outcome| o.per_second() * file_len as f64 / 1e6;
    let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
    let mut cells = vec![
        label.to_owned(),
        path.to_owned(),
        num(Some(outcome.per_second()), 1),
        num(ms(0.5), 2),
        num(ms(0.99), 2),
        num(ms(1.0), 2),
        num(Some(mb_per_s(outcome)), 1),
        outcome.errors.to_string(),
    ];
    let Some((direct, usage)) = casegate else {
        cells.extend(std::iter::repeat_n("-".to_owned(), 6));
        return cells;
    };
    let p99 = |o: &Outcome| o.quantile(0.99).map(|d| d.as_secs_f64() * 1e3);
    let added = p99(outcome).zip(p99(direct)).map(|(a, b)| a - b);
    let gigabytes = outcome.ok as f64 * file_len as f64 / 1e9;
    let mib = |kib: u64| kib as f64 / 1024.0;
    cells.extend([
        num(ratio(outcome.per_second(), direct.per_second()), 2),
        num(ratio(mb_per_s(outcome), mb_per_s(direct)), 2),
        num(added, 2),
        num(usage.and_then(|u| ratio(u.cpu_seconds, gigabytes)), 2),
        num(usage.map(|u| mib(u.peak_rss_kib)), 1),
        num(usage.map(|u| mib(u.sampled_rss_kib)), 1),
    ]);
    cells
}
