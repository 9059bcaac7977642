//! CPU time and memory of processes from /proc, to say what each side of a
//! run cost.

use std::time::Duration;

/// User plus system CPU time of every thread of process `pid` (this process
/// with `None`) so far; `None` where /proc cannot tell (not Linux, gone).
pub fn process_cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    Some(Stat::parse(&std::fs::read_to_string(path).ok()?)?.cpu)
}

/// What the processes of one process group use together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupUsage {
    /// User plus system CPU time of the group's live processes so far.
    pub cpu: Duration,
    /// Their resident memory now.
    pub resident_bytes: u64,
}

/// The usage of process group `group` (a group leader's pid); `None` where
/// /proc cannot tell or no process of the group is left.
pub fn process_group_usage(group: u32) -> Option<GroupUsage> {
    let mut usage: Option<GroupUsage> = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        // A process may end between the listing and the reads: skip it.
        let Some(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .as_deref()
            .and_then(Stat::parse)
            .filter(|stat| stat.process_group == group)
        else {
            continue;
        };
        let Some(resident_bytes) = resident_bytes(pid) else {
            continue;
        };
        let sum = usage.get_or_insert(GroupUsage {
            cpu: Duration::ZERO,
            resident_bytes: 0,
        });
        sum.cpu += stat.cpu;
        sum.resident_bytes += resident_bytes;
    }
    usage
}

/// The fields of `/proc/<pid>/stat` the bench reads.
struct Stat {
    process_group: u32,
    cpu: Duration,
}

impl Stat {
    fn parse(stat: &str) -> Option<Stat> {
        // The fields after the command name, which is in parentheses and may
        // hold spaces: the 3rd of the line (the state) is the first of them,
        // the process group the 5th, utime and stime the 14th and 15th.
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
        let ticks = |field: usize| fields.get(field - 3)?.parse::<u64>().ok();
        // Linux counts them in USER_HZ, 100 per second on every architecture.
        Some(Stat {
            process_group: fields.get(5 - 3)?.parse().ok()?,
            cpu: Duration::from_millis((ticks(14)? + ticks(15)?) * 10),
        })
    }
}

/// `VmRSS` of process `pid`, which /proc/<pid>/status gives in KiB whatever
/// the page size.
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
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

    #[test]
    fn a_process_group_counts_its_members_and_nothing_else() {
        use std::os::unix::process::CommandExt as _;
        // A group of its own: the shell and the sleep it starts.
        let mut shell = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .expect("starting sh");
        let group = shell.id();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let members = loop {
            let members = std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .ok()
                        .as_deref()
                        .and_then(Stat::parse)
                        .is_some_and(|stat| stat.process_group == group)
                })
                .count();
            if members == 2 || std::time::Instant::now() > deadline {
                break members;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let usage = process_group_usage(group);
        let own = resident_bytes(std::process::id()).expect("this process's VmRSS");
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{group}")])
            .status();
        let _ = shell.wait();
        assert_eq!(members, 2, "sh and its sleep");
        let usage = usage.expect("the group's usage");
        // Two small programs: resident, and far smaller than this test binary.
        assert!(usage.resident_bytes > 0, "{usage:?}");
        assert!(usage.resident_bytes < own, "{usage:?} against {own}");
        assert_eq!(process_group_usage(u32::MAX), None);
    }
}
