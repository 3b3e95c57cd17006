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
}

/// CPU time of process `pid` (`"self"` for this one); `None` when it cannot be read.
pub fn cpu(pid: &str) -> Option<Cpu> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Option<Duration> {
        let t: u64 = f.get(i)?.parse().ok()?;
        Some(Duration::from_millis(t * 10))
    };
    Some(Cpu {
        user: ticks(11)?,
        system: ticks(12)?,
    })
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
}
