//! What the machine and this process are doing, from /proc: the run's load and the CPU that
//! others used (the noise in a figure), this process's CPU time, and its resident memory
//! (current, peak, split by kind) for the catch-up part's RSS figures.

/// CPU seconds (user + system, all threads) this process has used, from /proc/self/stat
/// (10 ms resolution); NaN when unknown.
pub(crate) fn process_cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name start at field 3 (state); utime and stime
    // are fields 14 and 15, in clock ticks of 1/100 s on Linux.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (tick(11), tick(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

/// CPU seconds the whole machine has spent busy (not idle or waiting on I/O), from
/// /proc/stat; NaN when unknown.
pub(crate) fn machine_busy_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return f64::NAN;
    };
    let Some(line) = stat.lines().next() else {
        return f64::NAN;
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return f64::NAN;
    }
    // user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / 100.0
}

/// The 1-minute load average, or NaN when unknown.
pub(crate) fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// The CPU model name, or "unknown".
pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// A `kB` field of /proc/self/status (`VmHWM`, `VmRSS`, ...), or 0 when unknown.
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Peak resident set size of this process, kB (`VmHWM`).
pub(crate) fn peak_rss_kb() -> u64 {
    status_kb("VmHWM")
}

/// Current resident set size of this process, kB (`VmRSS`).
pub(crate) fn rss_kb() -> u64 {
    status_kb("VmRSS")
}

/// Current RSS split into anonymous memory, file mappings and shared memory, kB.
pub(crate) fn rss_split_kb() -> [u64; 3] {
    [
        status_kb("RssAnon"),
        status_kb("RssFile"),
        status_kb("RssShmem"),
    ]
}

/// Resets this process's peak RSS to its current RSS (Linux >= 4.0). False when refused.
pub(crate) fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}
