//! What the kernel says about a process: CPU time and resident memory, from `/proc`.

use std::time::Duration;

/// User and system CPU time of a process (every thread, dead ones included), 10 ms resolution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cpu {
    /// Time in user space.
    pub user: Duration,
    /// Time in the kernel on the process's behalf (socket writes, fsync, ...).
    pub system: Duration,
}

impl Cpu {
    /// User plus system time.
    pub fn total(self) -> Duration {
        self.user + self.system
    }

    /// The time spent since `earlier` (a reading of the same process).
    pub fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }

    /// The sum of two readings.
    pub fn plus(self, other: Cpu) -> Cpu {
        Cpu {
            user: self.user + other.user,
            system: self.system + other.system,
        }
    }
}

/// CPU time of process `pid` (`"self"` for this one); `None` when it cannot be read.
pub fn cpu(pid: &str) -> Option<Cpu> {
    let f = stat_fields(pid)?;
    Some(Cpu {
        user: ticks(&f, 11)?,
        system: ticks(&f, 12)?,
    })
}

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces): field 3 on.
fn stat_fields(pid: &str) -> Option<Vec<u64>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    // The state letter is not a number: keep its place.
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

fn ticks(f: &[u64], i: usize) -> Option<Duration> {
    Some(Duration::from_millis(f.get(i)? * 10))
}

/// CPU time of process `pid` and of all its children, live (read now) and exited (what the
/// kernel added to `pid`'s children's times when it reaped them): a PostgreSQL postmaster and
/// its backends. Children of children are not counted.
pub fn tree_cpu(pid: u32) -> Option<Cpu> {
    let own = stat_fields(&pid.to_string())?;
    let mut total = Cpu {
        user: ticks(&own, 11)? + ticks(&own, 13)?,
        system: ticks(&own, 12)? + ticks(&own, 14)?,
    };
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(child) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Some(f) = stat_fields(child).filter(|f| f.get(1) == Some(&u64::from(pid)))
            && let (Some(user), Some(system)) = (ticks(&f, 11), ticks(&f, 12))
        {
            total = total.plus(Cpu { user, system });
        }
    }
    Some(total)
}

/// Resident set size of process `pid` in bytes (`VmRSS`); `None` when it cannot be read.
pub fn rss_bytes(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let before = cpu("self").unwrap_or_default();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert_ne!(x, 1);
        let after = cpu("self").unwrap_or_default();
        assert!(after.total() >= before.total());
        assert!(rss_bytes("self").is_some_and(|b| b > 0));
        assert_eq!(cpu("no-such-process"), None);
    }

    #[test]
    fn a_process_tree_counts_at_least_the_process_itself() {
        // With a child that ran and was reaped (its time moves into our children's times).
        let before = tree_cpu(std::process::id()).unwrap_or_default();
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        let own = cpu("self").unwrap_or_default();
        let after = tree_cpu(std::process::id()).unwrap();
        assert!(after.total() >= own.total(), "{after:?} < {own:?}");
        assert!(after.total() >= before.total());
        assert_eq!(tree_cpu(u32::MAX), None);
    }
}
