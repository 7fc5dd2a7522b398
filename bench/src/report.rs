//! Printing: the machine facts at the top of a run, and result tables as aligned text or
//! as Markdown (for bench/RESULTS.md).

use std::process::Command;

/// The date (UTC), the commit, the CPU count and model, and `free -h`.
pub fn machine_facts() -> String {
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]);
    let commit = commit();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let free = command_output("free", &["-h"]).unwrap_or_else(|| "free -h: unavailable".into());
    format!(
        "date:   {}\ncommit: {commit}\nnproc:  {cpus} ({model})\n{free}\n",
        date.unwrap_or_else(|| "unknown".into())
    )
}

/// The commit checked out (short), and whether tracked files have changes.
pub fn commit() -> String {
    let commit = command_output("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = command_output("git", &["status", "--porcelain", "--untracked-files=no"]);
    match (commit, dirty) {
        (Some(c), Some(d)) if !d.is_empty() => format!("{c} (with uncommitted changes)"),
        (Some(c), _) => c,
        (None, _) => "unknown (not a git checkout)".to_owned(),
    }
}

/// The date and time now, UTC: (`YYYY-MM-DD HH:MM UTC`, `YYYY-MM-DD-HHMMSS`).
pub fn now_utc() -> (String, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

/// Today's date and time, UTC, for titles.
pub fn today_utc() -> String {
    now_utc().0
}

/// `secs` since the Unix epoch as (`YYYY-MM-DD HH:MM UTC`, `YYYY-MM-DD-HHMMSS`).
fn utc(secs: u64) -> (String, String) {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    let (year, month, day) = casegate::upload::civil_from_days(days);
    (
        format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02} UTC"),
        format!("{year:04}-{month:02}-{day:02}-{h:02}{m:02}{s:02}"),
    )
}

/// A command's trimmed stdout, if it ran and succeeded.
fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A table of text cells; numbers right-aligned in text form.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self, markdown: bool) -> String {
        if markdown {
            self.markdown()
        } else {
            self.text()
        }
    }

    fn text(&self) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .chain([&self.headers[i]])
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (c, w))| {
                    if i == 0 || !looks_numeric(c) {
                        format!("{c:<w$}")
                    } else {
                        format!("{c:>w$}")
                    }
                })
                .collect();
            padded.join("  ").trim_end().to_owned()
        };
        let mut out = line(&self.headers);
        out.push('\n');
        out.push_str(
            &"-".repeat(widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1)),
        );
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        out
    }

    fn markdown(&self) -> String {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let mut out = line(&self.headers);
        out.push_str(&line(&vec!["---".to_owned(); self.headers.len()]));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

fn looks_numeric(cell: &str) -> bool {
    cell == "-"
        || cell
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '+' || c == '-')
}

/// `value` with `decimals` digits, or `-` for none.
pub fn num(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// A byte count as the largest whole unit (4 KiB, 1 MiB, 1 GiB).
pub fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_utc() {
        assert_eq!(utc(0).1, "1970-01-01-000000");
        // 2000-02-29 12:34:56 (a leap day in a century leap year).
        assert_eq!(
            utc(951_827_696),
            (
                "2000-02-29 12:34 UTC".to_owned(),
                "2000-02-29-123456".to_owned()
            )
        );
        // 2026-11-23 16:48:00.
        assert_eq!(utc(1_795_452_480).0, "2026-11-23 16:48 UTC");
    }
}
