//! What the machine and a process look like: /proc, a few shell commands.
use std::process::Command;

/// Standard output of a command, trimmed, or `None` when it cannot run or fails.
pub fn cmd_out(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The three load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Total RAM in GiB.
pub fn mem_total_gib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: f64 = s
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0 / 1024.0)
}

/// Whether the scheduler's autogroup is on (`/proc/sys/kernel/sched_autogroup_enabled`); `None`
/// where the kernel has no autogroup.
pub fn autogroup() -> Option<bool> {
    let s = std::fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled").ok()?;
    Some(s.trim() != "0")
}

/// A `kB` field of /proc/PID/status (VmRSS, VmHWM), in KiB.
pub fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// User + system CPU time of a process, in clock ticks.
pub fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    stat_cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// User + system time from the text of a `/proc/.../stat` file, in clock ticks.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

pub fn clk_tck() -> u64 {
    cmd_out("getconf", &["CLK_TCK"])
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
}

/// Busy and total jiffies of the whole machine, from the first line of /proc/stat.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostCpu {
    busy: u64,
    total: u64,
}

impl HostCpu {
    pub fn now() -> HostCpu {
        let Ok(s) = std::fs::read_to_string("/proc/stat") else {
            return HostCpu::default();
        };
        let Some(line) = s.lines().next() else {
            return HostCpu::default();
        };
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal guest guest_nice
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        HostCpu {
            busy: total.saturating_sub(idle),
            total,
        }
    }

    /// Share of the machine's CPU time that was busy since `earlier`, 0..=1.
    pub fn busy_since(&self, earlier: &HostCpu) -> f64 {
        let t = self.total.saturating_sub(earlier.total);
        if t == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(earlier.busy) as f64 / t as f64
    }
}

/// Restart a process's VmHWM (peak RSS) from its current RSS (`/proc/PID/clear_refs`, value
/// 5), so the next reading is the peak since now. Needs to own the process (or root).
pub fn reset_hwm(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// What a process's threads used, summed per thread name with a trailing number dropped
/// (`argon2-0` and `argon2-1` are `argon2`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadUse {
    /// User + system CPU time, in clock ticks.
    pub ticks: u64,
    /// Times a thread gave up its CPU to wait (for a lock, a channel, I/O, a wake-up).
    pub voluntary: u64,
    /// Times a thread was taken off its CPU while it could still run (another thread was
    /// woken on its core, or its time slice ended).
    pub involuntary: u64,
}

/// The context-switch counts in a `/proc/PID/task/TID/status` text.
fn status_switches(status: &str) -> (u64, u64) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (
        field("voluntary_ctxt_switches:"),
        field("nonvoluntary_ctxt_switches:"),
    )
}

/// CPU time and context switches of each of a process's threads, per thread name.
pub fn thread_use(pid: u32) -> std::collections::BTreeMap<String, ThreadUse> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(s) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close), Some(ticks)) =
            (s.find('('), s.rfind(')'), stat_cpu_ticks(&s))
        else {
            continue;
        };
        let (voluntary, involuntary) = std::fs::read_to_string(entry.path().join("status"))
            .map(|st| status_switches(&st))
            .unwrap_or_default();
        let name = s[open + 1..close]
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .trim_end_matches(['-', ':'])
            .to_string();
        let u: &mut ThreadUse = out.entry(name).or_default();
        u.ticks += ticks;
        u.voluntary += voluntary;
        u.involuntary += involuntary;
    }
    out
}

/// Where the binary's start-up functions are (tools/ordered-cc links the release ma-idp with
/// the functions tools/startup-order.txt lists first in `.text`, so a started server maps a
/// few MiB of its code): how many of the listed functions the binary has, the span of `.text`
/// from its start to the end of the last of them, and their own size. A list gone stale
/// (a new compiler, new dependencies) or a build without the ordering shows here.
pub fn startup_layout(bin: &std::path::Path, root: &std::path::Path) -> Option<String> {
    use std::collections::{HashMap, HashSet};
    let list = std::fs::read_to_string(root.join("tools/startup-order.txt")).ok()?;
    let listed: HashSet<&str> = list
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    // tools/ordered-cc's own choice: "SYMBOL KEY exact|any", in the order it links them.
    let chose = Command::new("sh")
        .arg(root.join("tools/ordered-cc"))
        .arg("--select")
        .arg(bin)
        .env_remove("MA_IDP_STARTUP_ORDER")
        .output()
        .ok()?;
    let nm = Command::new("nm")
        .args(["--defined-only", "-S"])
        .arg(bin)
        .output()
        .ok()?;
    if !chose.status.success() || !nm.status.success() {
        return None;
    }
    // Every function symbol's address and size, by name (local symbols of the same name, a C
    // library's statics, are several).
    let nm = String::from_utf8_lossy(&nm.stdout);
    let mut symbols: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
    for line in nm.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [a, s, "t" | "T" | "w" | "W", name] = f[..]
            && let (Ok(a), Ok(s)) = (u64::from_str_radix(a, 16), u64::from_str_radix(s, 16))
        {
            symbols.entry(name).or_default().push((a, s));
        }
    }
    if symbols.is_empty() {
        return Some("nm found no function symbols in the binary (stripped?)".into());
    }
    let start = symbols
        .values()
        .flatten()
        .map(|(a, _)| *a)
        .min()
        .unwrap_or(0);
    let (mut end, mut size) = (0u64, 0u64);
    let (mut found, mut exact, mut named) = (HashSet::new(), HashSet::new(), HashSet::new());
    for line in String::from_utf8_lossy(&chose.stdout).lines() {
        let mut f = line.split_whitespace();
        let (Some(name), Some(key), how) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        // A name the list takes puts every symbol of that name first; count each once.
        if named.insert(name) {
            for (a, s) in symbols.get(name).into_iter().flatten() {
                end = end.max(a + s);
                size += s;
            }
        }
        if how == Some("exact") {
            exact.insert(key.to_string());
        }
        found.insert(key.to_string());
    }
    if found.is_empty() {
        return Some(format!(
            "none of the {} keys (functions) tools/startup-order.txt lists is in the binary: start-up code is spread over `.text`",
            listed.len()
        ));
    }
    let mib = |b: u64| b as f64 / 1_048_576.0;
    Some(format!(
        "{} of the {} keys (functions) tools/startup-order.txt lists are in the binary ({:.1} MiB of code, {} of them at a size listed); they end {:.1} MiB into `.text` (tools/ordered-cc puts them first)",
        found.len(),
        listed.len(),
        mib(size),
        exact.len(),
        mib(end.saturating_sub(start)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_switches_reads_both_counts() {
        let status = "Name:\targon2-0\nState:\tR (running)\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3456\n";
        assert_eq!(status_switches(status), (12, 3456));
        assert_eq!(status_switches("Name:\tx\n"), (0, 0));
    }

    #[test]
    fn this_process_threads_are_counted() {
        // The test thread itself has waited at least once (it was started and joined).
        let me = std::process::id();
        let used = thread_use(me);
        assert!(!used.is_empty(), "no threads read for {me}");
        let total: u64 = used.values().map(|u| u.voluntary + u.involuntary).sum();
        assert!(total > 0, "no context switches read: {used:?}");
    }
}
