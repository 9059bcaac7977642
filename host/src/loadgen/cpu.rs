//! CPU time and memory of processes from /proc, to say what each side of a
//! run cost.

use std::time::Duration;

/// User plus system CPU time of every thread of process `pid` (this process
/// with `None`) so far; `None` where /proc cannot tell (not Linux, gone).
pub fn process_cpu_time(pid: Option<u32>) -> Option<Duration> {
    Some(read_stat(pid.unwrap_or_else(std::process::id))?.cpu)
}

/// What a process and its descendants use together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeUsage {
    /// User plus system CPU time of the live processes so far.
    pub cpu: Duration,
    /// Their resident memory now.
    pub resident_bytes: u64,
}

/// Process `root` and every live process it started, directly or not; empty
/// where /proc cannot tell or `root` is gone.
pub fn process_tree(root: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    // (pid, parent) of every process; one that ends meanwhile is left out.
    let parents: Vec<(u32, u32)> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, read_stat(pid)?.parent)))
        .collect();
    let mut tree = Vec::new();
    if parents.iter().any(|&(pid, _)| pid == root) {
        tree.push(root);
    }
    let mut next = 0;
    while let Some(&parent) = tree.get(next) {
        tree.extend(
            parents
                .iter()
                .filter(|&&(_, of)| of == parent)
                .map(|&(pid, _)| pid),
        );
        next += 1;
    }
    tree
}

/// The usage of process `root` and its descendants; `None` where /proc
/// cannot tell or `root` is gone.
pub fn process_tree_usage(root: u32) -> Option<TreeUsage> {
    let mut usage: Option<TreeUsage> = None;
    for pid in process_tree(root) {
        // A process may end between the listing and the reads: skip it.
        let (Some(stat), Some(resident_bytes)) = (read_stat(pid), resident_bytes(pid)) else {
            continue;
        };
        let sum = usage.get_or_insert(TreeUsage {
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
    parent: u32,
    cpu: Duration,
}

fn read_stat(pid: u32) -> Option<Stat> {
    Stat::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

impl Stat {
    fn parse(stat: &str) -> Option<Stat> {
        // The fields after the command name, which is in parentheses and may
        // hold spaces: the 3rd of the line (the state) is the first of them,
        // the parent's pid the 4th, utime and stime the 14th and 15th.
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
        let number = |field: usize| fields.get(field - 3)?.parse::<u64>().ok();
        // Linux counts them in USER_HZ, 100 per second on every architecture.
        Some(Stat {
            parent: u32::try_from(number(4)?).ok()?,
            cpu: Duration::from_millis((number(14)? + number(15)?) * 10),
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
    fn a_process_tree_counts_the_process_and_what_it_started_and_nothing_else() {
        let mut shell = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .expect("starting sh");
        let root = shell.id();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let tree = loop {
            let tree = process_tree(root);
            if tree.len() == 2 || std::time::Instant::now() > deadline {
                break tree;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let usage = process_tree_usage(root);
        let own = resident_bytes(std::process::id()).expect("this process's VmRSS");
        let _ = std::process::Command::new("kill")
            .arg("-KILL")
            .args(tree.iter().map(u32::to_string))
            .status();
        let _ = shell.wait();
        assert_eq!(tree.len(), 2, "sh and its sleep: {tree:?}");
        assert_eq!(tree[0], root);
        let usage = usage.expect("the tree's usage");
        // Two small programs: resident, and far smaller than this test binary.
        assert!(usage.resident_bytes > 0, "{usage:?}");
        assert!(usage.resident_bytes < own, "{usage:?} against {own}");
        assert_eq!(process_tree_usage(u32::MAX), None);
        assert_eq!(process_tree(root), Vec::<u32>::new(), "all gone");
    }
}
