//! CPU time of a process from /proc, to say what each side of a run cost.

use std::time::Duration;

/// User plus system CPU time of every thread of process `pid` (this process
/// with `None`) so far; `None` where /proc cannot tell (not Linux, gone).
pub fn process_cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The fields after the command name, which is in parentheses and may hold
    // spaces; utime and stime are the 14th and 15th of the line.
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split(' ').skip(11);
    let mut ticks = || fields.next()?.parse::<u64>().ok();
    let ticks = ticks()? + ticks()?;
    // Linux counts them in USER_HZ, 100 per second on every architecture.
    Some(Duration::from_millis(ticks * 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_spent_cpu_time_and_spending_more_raises_it() {
        let before = process_cpu_time(None).expect("/proc/self/stat");
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        while started.elapsed() < Duration::from_millis(60) {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let after = process_cpu_time(Some(std::process::id())).expect("/proc/<pid>/stat");
        assert!(after >= before + Duration::from_millis(30), "{before:?} -> {after:?}");
    }
}
