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
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(peak_rss_kib(me).unwrap() > 0);
        assert!(cpu_seconds(None).is_some());
        assert!(cpu_seconds(Some(me)).is_some());
    }
}
