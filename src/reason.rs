//! Why watchd stopped a run: the one list of trigger reasons, with the fixed names that stderr
//! lines, `trigger` events and the `watchd_stops_total{reason}` series all use.

use std::fmt;

/// A trigger reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Stall,
    Timeout,
    CpuSoft,
    CpuHard,
    Rss,
    Unhealthy,
    NotReady,
    Watchdog,
}

impl Reason {
    /// Every reason, in the contract's order: one metric series each.
    pub const ALL: [Reason; 8] = [
        Reason::Stall,
        Reason::Timeout,
        Reason::CpuSoft,
        Reason::CpuHard,
        Reason::Rss,
        Reason::Unhealthy,
        Reason::NotReady,
        Reason::Watchdog,
    ];

    /// The fixed name used on stderr, in `trigger` events and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Stall => "stall",
            Reason::Timeout => "timeout",
            Reason::CpuSoft => "cpu-soft",
            Reason::CpuHard => "cpu-hard",
            Reason::Rss => "rss",
            Reason::Unhealthy => "unhealthy",
            Reason::NotReady => "not-ready",
            Reason::Watchdog => "watchdog",
        }
    }

    /// Position in [`Reason::ALL`], for per-reason counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_fixed_and_indices_follow_all() {
        let names: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "stall",
                "timeout",
                "cpu-soft",
                "cpu-hard",
                "rss",
                "unhealthy",
                "not-ready",
                "watchdog"
            ]
        );
        assert_eq!(Reason::CpuHard.to_string(), "cpu-hard");
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
