//! `memory`: casegate's peak RSS (VmHWM) while it carries files of 1 MiB, 64 MiB and
//! 1 GiB, one at a time and 8 at once, both ways.
//!
//! - **Uploads** on tines->kibana, thalamus->tines, caseiq->caseiq and tines->caseiq. The
//!   tines->caseiq body puts `value` after `file_contents` (as tapi does, with
//!   `"author_email":null`), so casegate must spool the file to disk before it can send
//!   Case IQ its description.
//! - **Downloads** (SPEC 7) on tines->kibana, thalamus->tines, caseiq->caseiq and
//!   tines->thalamus: one pairing per back dialect. The fast emulators store nothing: a
//!   download of the one file id their upload answers name streams as many generated
//!   bytes as the last upload's file had. So a download case first uploads its file
//!   through casegate (its ledger then knows the file; the id comes from the front's
//!   answer), then downloads it, reading and discarding the body, which must be 200 and
//!   exactly the file's length.
//!
//! The target: under 64 MiB in every case, and flat (the 1 GiB peak within 10 % of the
//! 1 MiB peak) per direction, pairing and concurrency. Every case gets a fresh casegate
//! process, warmed up by as many concurrent 4 MiB transfers on its route as the case will
//! make (so its threads and allocator reach their working state: what is measured is what
//! the file's size adds), then its peak is reset and the case's transfers (streamed,
//! generated on the fly) go at once. A download case's warm-up is one 4 MiB upload and
//! that many downloads of it; then the case's file is uploaded (once, before the reset),
//! and only its downloads are measured.
//!
//! Every case runs three times (once with `--quick`), each on its own fresh process, and
//! is judged on the median: eight uploads at once peak anywhere within about 1.5 MiB of
//! each other from one process to the next (which of them happen to hold their buffers at
//! the same moment, where the allocator's arenas happen to stand), at any file size, so a
//! single run's 10 % verdict is a coin toss. The table shows the spread too.

use std::sync::Arc;
use std::time::Duration;

use casegate::dialect::DialectId::{Caseiq, Kibana, Thalamus, Tines};

use crate::dialects::{Endpoint, Pairing, TinesTail};
use crate::measure::{Meter, Usage};
use crate::report::{self, num, Table};
use crate::runner::{self, Direction, Outcome, Plan};
use crate::stack::{Stack, StackOptions};
use crate::{Options, Res};

/// Upload cases: the pairings and how their Tines bodies end.
const UPLOAD_PAIRINGS: [(Pairing, TinesTail); 4] = [
    (Pairing::new(Tines, Kibana), TinesTail::Value),
    (Pairing::new(Thalamus, Tines), TinesTail::Value),
    (Pairing::new(Caseiq, Caseiq), TinesTail::Value),
    (Pairing::new(Tines, Caseiq), TinesTail::ValueAndNulls),
];

/// Download cases: one pairing per back dialect (each file is first uploaded with the
/// Tines body casegate streams, `value` after `file_contents`).
const DOWNLOAD_PAIRINGS: [(Pairing, TinesTail); 4] = [
    (Pairing::new(Tines, Kibana), TinesTail::Value),
    (Pairing::new(Thalamus, Tines), TinesTail::Value),
    (Pairing::new(Caseiq, Caseiq), TinesTail::Value),
    (Pairing::new(Tines, Thalamus), TinesTail::Value),
];

/// Every case's direction and pairing, in the order they run and are judged.
fn pairings() -> impl Iterator<Item = (Direction, Pairing, TinesTail)> {
    let uploads = UPLOAD_PAIRINGS.map(|(p, t)| (Direction::Upload, p, t));
    let downloads = DOWNLOAD_PAIRINGS.map(|(p, t)| (Direction::Download, p, t));
    uploads.into_iter().chain(downloads)
}

const MIB: u64 = 1 << 20;
const FULL_SIZES: [u64; 3] = [MIB, 64 * MIB, 1 << 30];
const QUICK_SIZES: [u64; 2] = [MIB, 64 * MIB];
const CONCURRENCY: [usize; 2] = [1, 8];

/// The warm-up transfers' size.
const WARMUP_LEN: u64 = 4 << 20;

/// The most one case may take (8 GiB through casegate at a few hundred MB/s takes well
/// under this).
const CASE_TIMEOUT: Duration = Duration::from_secs(600);

/// Peak RSS every case must stay under, MiB.
const TARGET_MIB: f64 = 64.0;
/// How far the largest file's peak may be above the smallest's.
const FLAT_WITHIN: f64 = 0.10;
/// Runs per case, each on a fresh process; judged on their median.
const REPEATS: usize = 3;

/// One case: `concurrency` uploads or downloads of `file_len` bytes at once on
/// `pairing`'s route.
#[derive(Debug, Clone, Copy)]
struct Case {
    direction: Direction,
    pairing: Pairing,
    tail: TinesTail,
    concurrency: usize,
    file_len: u64,
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let size = report::size(self.file_len);
        let (direction, pairing) = (self.direction, self.pairing);
        write!(f, "{direction} {pairing} {} x {size}", self.concurrency)
    }
}

/// What a case measured.
struct Measured {
    case: Case,
    ok: u64,
    wall: Duration,
    usage: Usage,
    first_error: Option<String>,
}

impl Measured {
    fn peak_mib(&self) -> f64 {
        self.usage.peak_rss_kib as f64 / 1024.0
    }
}

/// A case's runs.
struct Runs {
    case: Case,
    runs: Vec<Measured>,
}

/// The median of `values` (the upper one of an even count); 0 for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

impl Runs {
    fn of(&self, f: impl Fn(&Measured) -> f64) -> Vec<f64> {
        self.runs.iter().map(f).collect()
    }

    /// The median peak over the runs, MiB.
    fn peak_mib(&self) -> f64 {
        median(self.of(Measured::peak_mib))
    }

    /// The lowest and highest peak, MiB.
    fn peak_range(&self) -> (f64, f64) {
        let peaks = self.of(Measured::peak_mib);
        let lo = peaks.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = peaks.iter().copied().fold(0.0, f64::max);
        (lo, hi)
    }

    fn ok(&self) -> u64 {
        self.runs.iter().map(|m| m.ok).sum()
    }

    fn sent(&self) -> u64 {
        (self.case.concurrency * self.runs.len()) as u64
    }
}

pub async fn run(opts: &Options) -> Res<()> {
    let sizes: &[u64] = if opts.quick {
        &QUICK_SIZES
    } else {
        &FULL_SIZES
    };
    let cases: Vec<Case> = pairings()
        .flat_map(|(direction, pairing, tail)| {
            CONCURRENCY.iter().flat_map(move |&concurrency| {
                sizes.iter().map(move |&file_len| Case {
                    direction,
                    pairing,
                    tail,
                    concurrency,
                    file_len,
                })
            })
        })
        .filter(|case| opts.selects(&case.to_string()))
        .collect();
    if cases.is_empty() {
        let only = opts.only.as_deref().unwrap_or_default();
        return Err(format!("no memory case matches --only {only:?}"));
    }
    println!("{}", report::machine_facts());
    let count = |direction| cases.iter().filter(|c| c.direction == direction).count();
    println!(
        "memory ({}): {} cases ({} upload, {} download; pairings x {:?} at once x files of \
         {}); a fresh casegate per case",
        if opts.quick { "quick" } else { "full" },
        cases.len(),
        count(Direction::Upload),
        count(Direction::Download),
        CONCURRENCY,
        sizes
            .iter()
            .map(|&s| report::size(s))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut pairings: Vec<Pairing> = Vec::new();
    for case in &cases {
        if !pairings.contains(&case.pairing) {
            pairings.push(case.pairing);
        }
    }
    let mut stack = Stack::start(&opts.casegate, &pairings, &StackOptions::default())?;
    if !stack.can_reset_peak {
        println!("note: casegate's peak RSS cannot be reset in place; it includes the warm-up");
    }
    let repeats = if opts.quick { 1 } else { REPEATS };
    let mut measured = Vec::new();
    for (i, &case) in cases.iter().enumerate() {
        let mut runs = Vec::new();
        for r in 0..repeats {
            eprintln!(
                "[{}/{}] {case} (run {}/{repeats})",
                i + 1,
                cases.len(),
                r + 1
            );
            let result = measure(&mut stack, case).await?;
            if let Some(error) = &result.first_error {
                eprintln!(
                    "  {case}: {} of {} failed, the first: {error}",
                    case.concurrency as u64 - result.ok,
                    case.concurrency
                );
            }
            runs.push(result);
        }
        measured.push(Runs { case, runs });
    }

    let mut table = Table::new(&[
        "case",
        "pairing",
        "at once",
        "file",
        "ok",
        "wall s",
        "MB/s",
        "peak RSS MiB",
        "peak range MiB",
        "sampled RSS MiB",
        "under 64 MiB",
    ]);
    for m in &measured {
        let case = m.case;
        let wall = median(m.of(|r| r.wall.as_secs_f64()));
        let (lo, hi) = m.peak_range();
        table.row(vec![
            case.direction.to_string(),
            case.pairing.to_string(),
            case.concurrency.to_string(),
            report::size(case.file_len),
            format!("{}/{}", m.ok(), m.sent()),
            num(Some(wall), 3),
            num(
                Some(median(m.of(|r| {
                    (r.ok * case.file_len) as f64 / r.wall.as_secs_f64() / 1e6
                }))),
                1,
            ),
            num(Some(m.peak_mib()), 1),
            format!("{lo:.1}-{hi:.1}"),
            num(
                Some(median(m.of(|r| r.usage.sampled_rss_kib as f64 / 1024.0))),
                1,
            ),
            if hi < TARGET_MIB { "yes" } else { "NO" }.to_owned(),
        ]);
    }
    println!("{}", table.render(opts.markdown));
    println!(
        "{repeats} run(s) per case, each on a fresh casegate; wall s, MB/s, peak and sampled \
         RSS: the median over the runs; peak range: the lowest and highest peak. peak RSS: \
         casegate's VmHWM over the case (reset after the warm-up, and for a download after \
         its file's one upload); sampled RSS: its largest VmRSS sampled every 50 ms; MB/s: \
         file bytes, 1 MB = 10^6 B; ok: uploads answered 2xx, downloads answered 200 with \
         the whole file; under 64 MiB: every run's peak."
    );
    for m in measured.iter().flat_map(|m| &m.runs) {
        if let Some(error) = &m.first_error {
            println!("note: {}: the first error: {error}", m.case);
        }
    }
    println!("{}", verdict(&measured, sizes));
    Ok(())
}

/// `n` requests at once, each on its own connection.
fn at_once(n: usize) -> Plan {
    Plan {
        concurrency: n,
        duration: CASE_TIMEOUT,
        max_requests: n as u64,
        request_timeout: CASE_TIMEOUT,
        new_connections: false,
    }
}

/// Runs one case on a fresh casegate: a warm-up at the case's concurrency, then the peak
/// is reset and the case's transfers go at once.
async fn measure(stack: &mut Stack, case: Case) -> Res<Measured> {
    stack.restart_casegate()?;
    let endpoint = Endpoint::casegate(stack.casegate_addr(), case.pairing);
    let (outcome, usage) = match case.direction {
        Direction::Upload => measure_uploads(stack, &endpoint, case).await?,
        Direction::Download => measure_downloads(stack, &endpoint, case).await?,
    };
    stack.check_alive()?;
    Ok(Measured {
        case,
        ok: outcome.ok,
        wall: outcome.elapsed,
        usage,
        first_error: outcome.first_error,
    })
}

/// Warm-up uploads of 4 MiB, then the case's uploads, measured.
async fn measure_uploads(stack: &Stack, endpoint: &Endpoint, case: Case) -> Res<(Outcome, Usage)> {
    let warmup = Arc::new(
        endpoint
            .upload(WARMUP_LEN, case.tail)
            .await
            .map_err(|e| format!("{case}: {e}"))?,
    );
    if let Some(e) = runner::run(&warmup, at_once(case.concurrency))
        .await
        .first_error
    {
        return Err(format!(
            "{case}: the warm-up upload failed: {e}{}",
            stack.casegate_log()
        ));
    }
    let upload = Arc::new(
        endpoint
            .upload(case.file_len, case.tail)
            .await
            .map_err(|e| format!("{case}: {e}"))?,
    );
    let meter = Meter::start(&[stack.casegate_pid()], stack.can_reset_peak)?;
    let outcome = runner::run(&upload, at_once(case.concurrency)).await;
    let usage = meter.finish().await?;
    Ok((outcome, usage))
}

/// One 4 MiB upload and as many downloads of it as the case makes (the warm-up), one
/// upload of the case's file, then its downloads, measured.
async fn measure_downloads(
    stack: &Stack,
    endpoint: &Endpoint,
    case: Case,
) -> Res<(Outcome, Usage)> {
    let warm_id = upload_one(stack, endpoint, case, WARMUP_LEN).await?;
    let warmup = Arc::new(
        endpoint
            .download(&warm_id, WARMUP_LEN)
            .await
            .map_err(|e| format!("{case}: {e}"))?,
    );
    if let Some(e) = runner::run(&warmup, at_once(case.concurrency))
        .await
        .first_error
    {
        return Err(format!(
            "{case}: the warm-up download failed: {e}{}",
            stack.casegate_log()
        ));
    }
    let id = upload_one(stack, endpoint, case, case.file_len).await?;
    let download = Arc::new(
        endpoint
            .download(&id, case.file_len)
            .await
            .map_err(|e| format!("{case}: {e}"))?,
    );
    let meter = Meter::start(&[stack.casegate_pid()], stack.can_reset_peak)?;
    let outcome = runner::run(&download, at_once(case.concurrency)).await;
    let usage = meter.finish().await?;
    Ok((outcome, usage))
}

/// Uploads one file of `len` bytes on the case's route; gives the id the front's answer
/// names it by.
async fn upload_one(stack: &Stack, endpoint: &Endpoint, case: Case, len: u64) -> Res<String> {
    stack
        .upload_for_id(endpoint, len, case.tail, CASE_TIMEOUT)
        .await
        .map_err(|e| format!("{case}: {e}"))
}

/// Whether every case met the targets, said line by line.
fn verdict(measured: &[Runs], sizes: &[u64]) -> String {
    let list = |pick: &dyn Fn(&Runs) -> bool| -> Vec<String> {
        measured
            .iter()
            .filter(|m| pick(m))
            .map(|m| format!("{} ({:.1} MiB)", m.case, m.peak_mib()))
            .collect()
    };
    let mut out = String::new();
    let failed = list(&|m| m.ok() != m.sent());
    if !failed.is_empty() {
        out.push_str(&format!("transfers failed in: {}\n", failed.join("; ")));
    }
    let over = list(&|m| m.peak_range().1 >= TARGET_MIB);
    out.push_str(&format!(
        "every case under {TARGET_MIB} MiB: {}\n",
        if over.is_empty() {
            "yes".to_owned()
        } else {
            format!("NO: {}", over.join("; "))
        }
    ));
    let (Some(&small), Some(&large)) = (sizes.first(), sizes.last()) else {
        return out;
    };
    let peak = |direction: Direction, pairing: Pairing, concurrency: usize, len: u64| {
        measured
            .iter()
            .find(|m| {
                m.case.direction == direction
                    && m.case.pairing == pairing
                    && m.case.concurrency == concurrency
                    && m.case.file_len == len
            })
            .map(Runs::peak_mib)
    };
    let mut flat = true;
    let mut lines = Vec::new();
    for (direction, pairing, _) in pairings() {
        for concurrency in CONCURRENCY {
            let (Some(a), Some(b)) = (
                peak(direction, pairing, concurrency, small),
                peak(direction, pairing, concurrency, large),
            ) else {
                continue;
            };
            let growth = b / a - 1.0;
            let ok = growth.abs() <= FLAT_WITHIN;
            flat &= ok;
            lines.push(format!(
                "  {direction} {pairing} x{concurrency}: {a:.1} -> {b:.1} MiB ({:+.1} %) {}",
                growth * 100.0,
                if ok { "ok" } else { "NOT FLAT" }
            ));
        }
    }
    if lines.is_empty() {
        return out;
    }
    out.push_str(&format!(
        "flat from {} to {} (within {:.0} %, medians): {}\n{}",
        report::size(small),
        report::size(large),
        FLAT_WITHIN * 100.0,
        if flat { "yes" } else { "NO" },
        lines.join("\n")
    ));
    out
}
