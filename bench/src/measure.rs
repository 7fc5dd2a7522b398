//! What a proxy's processes used during a scenario, read from /proc: CPU seconds (utime
//! and stime from /proc/PID/stat), peak RSS (VmHWM from /proc/PID/status, reset before the
//! scenario by writing `5` to /proc/PID/clear_refs), and, as a cross-check, the largest
//! VmRSS seen by sampling every 50 ms. A proxy of several processes (nginx: its master and
//! workers) is the sum over them.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Res;

const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// What a process (or a group of them, summed) used over a [`Meter`]'s window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// CPU time in user mode (utime), seconds.
    pub user_seconds: f64,
    /// CPU time in the kernel on its behalf (stime), seconds.
    pub system_seconds: f64,
    /// VmHWM at the end (the peak since the reset), KiB.
    pub peak_rss_kib: u64,
    /// The largest sampled VmRSS, KiB.
    pub sampled_rss_kib: u64,
}

impl Usage {
    /// User plus system CPU seconds.
    pub fn cpu_seconds(&self) -> f64 {
        self.user_seconds + self.system_seconds
    }

    /// CPU per request in core-microseconds, (user, system), over `requests` requests.
    pub fn per_request_us(&self, requests: u64) -> Option<(f64, f64)> {
        per_request_us(self.user_seconds, self.system_seconds, requests)
    }
}

/// `user` and `system` CPU seconds spread over `requests` requests, in core-microseconds
/// each; `None` for no requests.
pub fn per_request_us(user: f64, system: f64, requests: u64) -> Option<(f64, f64)> {
    (requests > 0).then(|| {
        let n = requests as f64;
        (user * 1e6 / n, system * 1e6 / n)
    })
}

/// Measures one process over a window: [`Meter::start`] resets the peak (where it can) and
/// starts the sampler, [`Meter::finish`] reads the rest.
pub struct Meter {
    pids: Vec<u32>,
    cpu_at_start: (f64, f64),
    stop: oneshot::Sender<()>,
    sampler: JoinHandle<u64>,
}

impl Meter {
    /// Starts measuring the processes `pids` (summed); `reset_peak` false leaves VmHWM as
    /// it is (for a process that cannot be reset, started afresh instead).
    pub fn start(pids: &[u32], reset_peak: bool) -> Res<Meter> {
        if reset_peak {
            for &pid in pids {
                self::reset_peak(pid)?;
            }
        }
        let cpu_at_start = cpu_sum(pids)?;
        let (stop, mut stopped) = oneshot::channel::<()>();
        let sampled = pids.to_vec();
        let sampler = tokio::spawn(async move {
            let mut max = 0;
            let mut every = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = every.tick() => match status_sum(&sampled, "VmRSS") {
                        Ok(rss) => max = max.max(rss),
                        Err(_) => break, // a process is gone; finish() says so
                    },
                }
            }
            max
        });
        Ok(Meter {
            pids: pids.to_vec(),
            cpu_at_start,
            stop,
            sampler,
        })
    }

    pub async fn finish(self) -> Res<Usage> {
        let last_sample = status_sum(&self.pids, "VmRSS");
        // The sampler may have ended on its own already.
        let _ = self.stop.send(());
        let sampled = self
            .sampler
            .await
            .map_err(|e| format!("the RSS sampler failed: {e}"))?;
        let (user, system) = cpu_sum(&self.pids)?;
        Ok(Usage {
            user_seconds: user - self.cpu_at_start.0,
            system_seconds: system - self.cpu_at_start.1,
            peak_rss_kib: status_sum(&self.pids, "VmHWM")?,
            sampled_rss_kib: sampled.max(last_sample?),
        })
    }
}

/// User and system CPU seconds of `pids`, summed.
fn cpu_sum(pids: &[u32]) -> Res<(f64, f64)> {
    pids.iter().try_fold((0.0, 0.0), |(u, s), &pid| {
        let (user, system) = cpu_seconds(pid)?;
        Ok((u + user, s + system))
    })
}

/// A `VmXXX` line of /proc/PID/status summed over `pids`, KiB.
fn status_sum(pids: &[u32], key: &str) -> Res<u64> {
    pids.iter()
        .try_fold(0, |sum, &pid| Ok(sum + status_kib(pid, key)?))
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

/// User and system CPU time of `pid` (all its threads), in seconds.
fn cpu_seconds(pid: u32) -> Res<(f64, f64)> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let (utime, stime) =
        stat_ticks(&stat).ok_or_else(|| format!("{path} has no utime and stime: {stat:?}"))?;
    let hz = clock_ticks();
    Ok((utime as f64 / hz, stime as f64 / hz))
}

/// utime and stime (clock ticks) from a /proc/PID/stat line.
fn stat_ticks(stat: &str) -> Option<(u64, u64)> {
    // The command name (field 2) is in parentheses and may hold spaces: count from after
    // its closing one, where field 3 (state) is first; utime and stime are fields 14, 15.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime = fields.next()?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
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

/// The CPU seconds a process tree has used: `pid`'s own (all its threads), its reaped
/// children's (`cutime` + `cstime`) and its live children's. The difference of two
/// readings counts every child that ran in between, whether it started or ended there
/// (PostgreSQL's autovacuum workers come and go).
pub fn tree_cpu_seconds(pid: u32) -> Res<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // From field 3 (state, not a number and so left out): ppid is field 4, the first here;
    // utime, stime, cutime, cstime are fields 14-17.
    let own: u64 = fields.get(10..14).map_or(0, |f| f.iter().sum());
    let mut ticks = own;
    let proc = std::fs::read_dir("/proc").map_err(|e| format!("cannot list /proc: {e}"))?;
    for entry in proc.flatten() {
        let is_pid = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.parse::<u32>().is_ok());
        if !is_pid {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // ended meanwhile: its time is in cutime now, or next time
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        if f.nth(1).and_then(|p| p.parse::<u32>().ok()) != Some(pid) {
            continue;
        }
        if let Some((utime, stime)) = stat_ticks(&stat) {
            ticks += utime + stime;
        }
    }
    Ok(ticks as f64 / clock_ticks())
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
        let (user, system) = cpu_seconds(pid).expect("stat");
        assert!(user >= 0.0 && system >= 0.0);
        let (u2, s2) = cpu_sum(&[pid, pid]).expect("stat");
        assert!(u2 >= 2.0 * user && s2 >= 2.0 * system);
        // The peak is read last: it is at least any RSS read before it.
        let rss = status_kib(pid, "VmRSS").expect("VmRSS");
        let hwm = status_kib(pid, "VmHWM").expect("VmHWM");
        assert!(hwm >= rss && rss > 0);
    }

    #[test]
    fn finds_utime_and_stime_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (nginx: worker (1)) S 1 4242 4242 0 -1 4194624 10 0 0 0 \
                    1234 567 0 0 20 0 1 0 100 1000 200";
        assert_eq!(stat_ticks(stat), Some((1234, 567)));
        assert_eq!(stat_ticks("4242 (short) S 1 2"), None);
    }

    #[test]
    fn cpu_per_request_in_core_microseconds() {
        // 0.17 s user + 0.36 s system over 10,000 requests: 17 + 36 us each.
        let (user, system) = per_request_us(0.17, 0.36, 10_000).expect("requests");
        assert!((user - 17.0).abs() < 1e-9 && (system - 36.0).abs() < 1e-9);
        assert_eq!(per_request_us(1.0, 1.0, 0), None);
        // Summed processes: a master and two workers.
        let usage = Usage {
            user_seconds: 0.01 + 0.6 + 0.52,
            system_seconds: 0.0 + 1.1 + 1.05,
            ..Usage::default()
        };
        let (u, s) = usage.per_request_us(50_000).expect("requests");
        assert!((u - 22.6).abs() < 1e-9, "{u}");
        assert!((s - 43.0).abs() < 1e-9, "{s}");
        assert!((usage.cpu_seconds() - 3.28).abs() < 1e-9);
    }
}
