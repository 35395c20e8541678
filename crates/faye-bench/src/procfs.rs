//! What /proc says about a process: resident memory and CPU time.

/// Linux reports CPU times in USER_HZ ticks, which is 100 on every architecture
/// Linux supports for user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// `VmRSS` of `pid` in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

/// `VmHWM` (peak RSS) of `pid` in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmHWM:")
}

fn status_field(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_field(&status, name)
}

fn parse_status_field(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix(name)?.split_whitespace().next()?.parse().ok())
}

/// User plus system CPU time of `pid` (or of this process with `None`), seconds.
pub(crate) fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    parse_stat_cpu(&std::fs::read_to_string(path).ok()?)
}

fn parse_stat_cpu(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces; fields
    // after the last ')' start at field 3 (state). utime and stime are fields 14
    // and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// The machine's CPU time so far, from the first line of `/proc/stat`: (idle,
/// total) in ticks, idle counting `idle` and `iowait`.
pub(crate) fn machine_ticks() -> Option<(u64, u64)> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_proc_stat(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal (guest and guest_nice are
    // already counted in user and nice).
    let fields: Vec<u64> =
        line.split_whitespace().skip(1).take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    if fields.len() < 5 {
        return None;
    }
    Some((fields[3] + fields[4], fields.iter().sum()))
}

/// The share of the machine's CPU time that was idle between two
/// [`machine_ticks`] readings (`None` if no tick passed).
pub(crate) fn idle_share(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let total = after.1.checked_sub(before.1)?;
    let idle = after.0.checked_sub(before.0)?;
    (total > 0).then(|| idle as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        let status = "Name:\tfaye\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status_field(status, "VmRSS:"), Some(10240));
        assert_eq!(parse_status_field(status, "VmHWM:"), Some(20480));
        assert_eq!(parse_status_field(status, "VmSwap:"), None);
        let stat = "1234 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_stat_cpu(stat), Some(3.0));
    }

    #[test]
    fn machine_idle_share_from_proc_stat() {
        let a = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n";
        let b = "cpu  190 0 60 805 50 0 0 0 0 0\n";
        assert_eq!(parse_proc_stat(a), Some((850, 1000)));
        assert_eq!(parse_proc_stat(b), Some((855, 1105)));
        let share = idle_share((850, 1000), (855, 1105)).unwrap();
        assert!((share - 5.0 / 105.0).abs() < 1e-12, "{share}");
        assert_eq!(idle_share((1, 1), (1, 1)), None);
        assert_eq!(parse_proc_stat("intr 1 2 3\n"), None);
        let (idle, total) = machine_ticks().unwrap();
        assert!(total >= idle && total > 0);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(peak_rss_kib(me).unwrap() > 0);
        assert!(cpu_seconds(None).is_some());
        assert!(cpu_seconds(Some(me)).is_some());
    }
}
