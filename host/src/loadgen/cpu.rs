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
    fn spending_cpu_raises_the_process_cpu_time() {
        let before = process_cpu_time(None).expect("/proc/self/stat");
        // Busy until the count moves: a broken reader never gets there.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut spin = 0u64;
        loop {
            for _ in 0..100_000 {
                spin = std::hint::black_box(spin.wrapping_add(1));
            }
            let now = process_cpu_time(Some(std::process::id())).expect("/proc/<pid>/stat");
            if now >= before + Duration::from_millis(30) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the CPU time stayed at {now:?} from {before:?}"
            );
        }
    }
}
