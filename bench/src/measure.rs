//! What casegate's process used during a scenario, read from /proc: CPU seconds
//! (utime + stime from /proc/PID/stat), peak RSS (VmHWM from /proc/PID/status, reset
//! before the scenario by writing `5` to /proc/PID/clear_refs), and, as a cross-check, the
//! largest VmRSS seen by sampling every 50 ms.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Res;

const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// What a process used over a [`Meter`]'s window.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub cpu_seconds: f64,
    /// VmHWM at the end (the peak since the reset), KiB.
    pub peak_rss_kib: u64,
    /// The largest sampled VmRSS, KiB.
    pub sampled_rss_kib: u64,
}

/// Measures one process over a window: [`Meter::start`] resets the peak (where it can) and
/// starts the sampler, [`Meter::finish`] reads the rest.
pub struct Meter {
    pid: u32,
    cpu_at_start: f64,
    stop: oneshot::Sender<()>,
    sampler: JoinHandle<u64>,
}

impl Meter {
    /// Starts measuring `pid`; `reset_peak` false leaves VmHWM as it is (for a process
    /// that cannot be reset, started afresh instead).
    pub fn start(pid: u32, reset_peak: bool) -> Res<Meter> {
        if reset_peak {
            self::reset_peak(pid)?;
        }
        let cpu_at_start = cpu_seconds(pid)?;
        let (stop, mut stopped) = oneshot::channel::<()>();
        let sampler = tokio::spawn(async move {
            let mut max = 0;
            let mut every = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = every.tick() => match status_kib(pid, "VmRSS") {
                        Ok(rss) => max = max.max(rss),
                        Err(_) => break, // the process is gone; finish() says so
                    },
                }
            }
            max
        });
        Ok(Meter {
            pid,
            cpu_at_start,
            stop,
            sampler,
        })
    }

    pub async fn finish(self) -> Res<Usage> {
        let last_sample = status_kib(self.pid, "VmRSS");
        // The sampler may have ended on its own already.
        let _ = self.stop.send(());
        let sampled = self
            .sampler
            .await
            .map_err(|e| format!("the RSS sampler failed: {e}"))?;
        Ok(Usage {
            cpu_seconds: cpu_seconds(self.pid)? - self.cpu_at_start,
            peak_rss_kib: status_kib(self.pid, "VmHWM")?,
            sampled_rss_kib: sampled.max(last_sample?),
        })
    }
}

/// Whether `pid`'s peak RSS can be reset (writing to /proc/PID/clear_refs).
pub fn can_reset_peak(pid: u32) -> bool {
    reset_peak(pid).is_ok()
}

/// Resets VmHWM to the current RSS.
fn reset_peak(pid: u32) -> Res<()> {
    let path = format!("/proc/{pid}/clear_refs");
    std::fs::write(&path, "5").map_err(|e| format!("cannot write 5 to {path}: {e}"))
}

/// User plus system CPU time of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Res<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after
    // its closing one, where field 3 (state) is first; utime and stime are fields 14, 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(utime), Some(stime)) => Ok((utime + stime) as f64 / clock_ticks()),
        _ => Err(format!("{path} has no utime and stime: {stat:?}")),
    }
}

/// A `VmXXX:  N kB` line of /proc/PID/status, in KiB.
fn status_kib(pid: u32, key: &str) -> Res<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("{path} has no {key} line"))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if that cannot be run).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|ticks| *ticks > 0.0)
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).expect("stat") >= 0.0);
        // The peak is read last: it is at least any RSS read before it.
        let rss = status_kib(pid, "VmRSS").expect("VmRSS");
        let hwm = status_kib(pid, "VmHWM").expect("VmHWM");
        assert!(hwm >= rss && rss > 0);
    }
}
