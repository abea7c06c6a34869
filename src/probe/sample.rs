//! The sampler: successive scans of the tree turned into monotone totals (CPU ticks, I/O bytes)
//! and the figures of one instant (processes, resident memory, all stopped).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::Duration;

use super::walk::Scan;

/// Tree totals at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Elapsed since watchd start.
    pub at: Duration,
    /// Monotone: max(previous, sum over procs of ticks + reaped_ticks), or the cgroup's exact
    /// figure in µs: in the prober's unit (`Prober::cpu_unit` per second).
    pub cpu_ticks: u64,
    /// Monotone counter: sum of per-process positive deltas (key (pid, starttime)); a process
    /// seen for the first time contributes its full io_bytes.
    pub io_bytes: u64,
    /// Processes (key (pid, starttime)) not seen in the previous scan; 0 for the baseline.
    pub new_procs: u32,
    /// Live members (state neither Z nor X).
    pub processes: u32,
    /// Sum over live members; `None` when the scan did not read it (a cgroup scan that did
    /// not need it).
    pub rss_bytes: Option<u64>,
    /// processes > 0 and every live member is in state T or t.
    pub all_stopped: bool,
    /// The scan saw the main child: /proc is watchd's own and shows the tree. When false the
    /// figures are no evidence of anything (no /proc, a foreign one, hidepid).
    pub visible: bool,
    /// `WATCHDOG=1` pings since the previous probe (the machine counts them, not the scan).
    pub pings: u32,
    /// `--heartbeat` files that changed since the previous probe.
    pub heartbeats: u32,
    /// What the GPUs did for the tree since the previous probe; `None` without NVML.
    pub gpu: Option<GpuFigures>,
    /// The cgroup's pressure (PSI `some avg10`, ratios 0-1); `None` without a cgroup.
    pub pressure: Option<Pressure>,
}

/// GPU figures of one probe window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuFigures {
    /// A process of the tree (or, in device scope, any) used an SM.
    pub busy: bool,
    /// The highest SM utilization seen, in percent.
    pub util: Option<f64>,
    pub memory_bytes: Option<u64>,
}

/// PSI `some avg10` of the command's cgroup, as ratios.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Pressure {
    pub cpu: Option<f64>,
    pub io: Option<f64>,
    pub memory: Option<f64>,
}

/// Turns successive scans into monotone tree totals.
#[derive(Debug, Default)]
pub struct Sampler {
    baseline_taken: bool,
    cpu_ticks: u64,
    io_bytes: u64,
    /// Processes of the previous scan -> what was last read of each. Rebuilt from each scan,
    /// so processes that are gone are dropped.
    prev: HashMap<Key, Seen, BuildKeyHasher>,
    /// Empty between calls: scratch for the next `prev`, swapped in so both keep their capacity.
    next: HashMap<Key, Seen, BuildKeyHasher>,
    /// Processes are known by pid alone: the tree is a cgroup, whose scans may not read start
    /// times (a member that leaves cannot come back, so a pid in it is one process while it
    /// stays listed, bar a reuse within one interval).
    by_pid: bool,
}

/// A process: (pid, start time), or (pid, 0) when the tree is a cgroup.
type Key = (i32, u64);

/// The hash of the sampler's maps: rustc's FxHash (rotate, xor, multiply), not std's SipHash.
/// Both maps are looked up or filled once per member at every probe, and SipHash was about a
/// sixth of a probe of a cgroup of 1,000 sleeping processes (0.96 -> 0.80 ms per probe here).
/// The keys are pids and start times that the kernel hands out and that a process cannot pick
/// without privileges over its PID namespace, so SipHash's defence against chosen collisions
/// buys nothing here.
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

type BuildKeyHasher = std::hash::BuildHasherDefault<KeyHasher>;

impl KeyHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_i32(&mut self, n: i32) {
        self.add(u64::from(n.cast_unsigned()));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// One process as the sampler last saw it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// The highest io_bytes read (`None`: never readable yet).
    io: Option<u64>,
    ticks: u64,
    /// When its ticks were last seen to grow; `None` until they have grown once while
    /// watched, since the first reading says nothing of when they last moved.
    grew: Option<Duration>,
}

impl Sampler {
    pub fn new() -> Sampler {
        Sampler::default()
    }

    /// The first call is the baseline: new_procs = 0.
    ///
    /// CPU: a process that exits and is reaped takes its ticks out of `procs` before (or without)
    /// its parent's cutime growing, because /proc is not read atomically, so the measured sum can
    /// dip; the max keeps the total from running backwards.
    pub fn sample(&mut self, scan: &Scan, at: Duration) -> Sample {
        let mut measured = scan.reaped_ticks;
        self.by_pid = scan.cpu_us.is_some();
        let mut new_procs = 0u32;
        let mut processes = 0u32;
        let mut rss_bytes = 0u64;
        let mut all_stopped = true;
        for p in &scan.procs {
            let key = (p.pid, if self.by_pid { 0 } else { p.starttime });
            let Entry::Vacant(slot) = self.next.entry(key) else {
                continue; // the same process twice in one scan: count it once
            };
            let before = self.prev.get(&key).copied();
            if before.is_none() && self.baseline_taken {
                new_procs = new_procs.saturating_add(1);
            }
            let last = before.and_then(|b| b.io);
            let io = match (last, p.io_bytes) {
                (Some(last), Some(now)) => {
                    self.io_bytes = self.io_bytes.saturating_add(now.saturating_sub(last));
                    Some(last.max(now))
                }
                (None, Some(now)) => {
                    self.io_bytes = self.io_bytes.saturating_add(now);
                    Some(now)
                }
                // Unreadable this time: no news, keep comparing against the last reading.
                (last, None) => last,
            };
            let grew = match before {
                Some(b) if p.ticks > b.ticks => Some(at),
                Some(b) => b.grew,
                None => None,
            };
            // A scan that did not read stat keeps what the last one that did saw.
            let grew = if scan.stats { grew } else { before.and_then(|b| b.grew) };
            slot.insert(Seen { io, ticks: p.ticks.max(before.map_or(0, |b| b.ticks)), grew });
            measured = measured.saturating_add(p.ticks);
            if !matches!(p.state, b'Z' | b'X') {
                processes = processes.saturating_add(1);
                rss_bytes = rss_bytes.saturating_add(p.rss_bytes);
                all_stopped &= matches!(p.state, b'T' | b't');
            }
        }
        std::mem::swap(&mut self.prev, &mut self.next);
        self.next.clear();
        // Keep a burst of processes (a fork bomb that was killed) from pinning memory forever.
        let wanted = self.prev.len().max(64);
        if self.next.capacity() > 4 * wanted {
            self.next.shrink_to(wanted);
        }
        if let Some(exact) = scan.cpu_us {
            measured = exact;
        }
        self.cpu_ticks = self.cpu_ticks.max(measured);
        self.baseline_taken = true;
        Sample {
            at,
            cpu_ticks: self.cpu_ticks,
            io_bytes: self.io_bytes,
            new_procs,
            processes,
            rss_bytes: scan.stats.then_some(rss_bytes),
            all_stopped: scan.stats && processes > 0 && all_stopped,
            visible: true,
            pings: 0,
            heartbeats: 0,
            gpu: None,
            pressure: None,
        }
    }

    /// How long before `now` the process's CPU time (its children's reaped time included)
    /// was last seen to grow, to the probe interval; `None` if it has not grown while watched.
    pub fn idle(&self, pid: i32, starttime: u64, now: Duration) -> Option<Duration> {
        let key = (pid, if self.by_pid { 0 } else { starttime });
        let grew = self.prev.get(&key)?.grew?;
        Some(now.saturating_sub(grew))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::walk::Proc;

    // ---- sampler ----------------------------------------------------------------------------

    #[test]
    fn keys_of_a_tree_spread_over_the_buckets() {
        use std::hash::BuildHasher;
        // hashbrown picks a bucket from the low bits and a tag from the top 7: consecutive pids,
        // with or without start times, must not pile up in either.
        let build = BuildKeyHasher::default();
        for starttime in [|_: i32| 0u64, |pid: i32| 1_000_000 + 7 * pid as u64] {
            let hashes: Vec<u64> =
                (30_000..31_024).map(|pid| build.hash_one((pid, starttime(pid)))).collect();
            let low: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 1023).collect();
            let top: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
            assert!(low.len() > 500, "{} of 1024 buckets", low.len());
            assert!(top.len() > 100, "{} of 128 tags", top.len());
        }
    }

    fn p(pid: i32, state: u8, ticks: u64, io: Option<u64>, rss: u64) -> Proc {
        Proc { pid, starttime: 1000 + pid as u64, state, ticks, io_bytes: io, rss_bytes: rss }
    }

    fn scan(reaped_ticks: u64, procs: Vec<Proc>) -> Scan {
        Scan { procs, reaped_ticks, ..Scan::default() }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn baseline() {
        let mut sampler = Sampler::new();
        let s = sampler.sample(
            &scan(
                4,
                vec![
                    p(10, b'S', 5, Some(100), 4096),
                    p(11, b'R', 7, None, 8192),
                    p(12, b'Z', 2, Some(1), 0),
                ],
            ),
            secs(1),
        );
        assert_eq!(
            s,
            Sample {
                at: secs(1),
                cpu_ticks: 4 + 5 + 7 + 2,
                io_bytes: 101,
                new_procs: 0,
                processes: 2,
                rss_bytes: Some(4096 + 8192),
                all_stopped: false,
                visible: true,
                pings: 0,
                heartbeats: 0,
                gpu: None,
                pressure: None,
            }
        );
    }

    #[test]
    fn cpu_stays_monotone_while_a_reaped_child_is_not_yet_in_cutime() {
        let mut sampler = Sampler::new();
        let parent = |ticks| p(10, b'S', ticks, None, 0);
        let a = sampler.sample(&scan(0, vec![parent(10), p(11, b'R', 50, None, 0)]), secs(1));
        assert_eq!(a.cpu_ticks, 60);
        // The child has been reaped; the parent's cutime has not caught up in our read.
        let b = sampler.sample(&scan(0, vec![parent(10)]), secs(2));
        assert_eq!(b.cpu_ticks, 60);
        // Now it has, plus a little work of its own.
        let c = sampler.sample(&scan(0, vec![parent(10 + 50 + 5)]), secs(3));
        assert_eq!(c.cpu_ticks, 65);
        // Same story one level up: the parent leaves, watchd's reaped_ticks catch up later.
        let d = sampler.sample(&scan(0, vec![]), secs(4));
        assert_eq!(d.cpu_ticks, 65);
        let e = sampler.sample(&scan(66, vec![]), secs(5));
        assert_eq!(e.cpu_ticks, 66);
    }

    #[test]
    fn idle_counts_from_the_probe_that_saw_cpu_time_grow() {
        let mut sampler = Sampler::new();
        let busy = |ticks| p(10, b'R', ticks, None, 0);
        sampler.sample(&scan(0, vec![busy(5), p(11, b'S', 1, None, 0)]), secs(1));
        // The first reading says nothing of when the ticks last moved.
        assert_eq!(sampler.idle(10, 1010, secs(1)), None);
        sampler.sample(&scan(0, vec![busy(9), p(11, b'S', 1, None, 0)]), secs(2));
        assert_eq!(sampler.idle(10, 1010, secs(2)), Some(secs(0)));
        assert_eq!(sampler.idle(11, 1011, secs(2)), None);
        // A dip (a reaped child not yet in cutime) and the way back are not growth.
        sampler.sample(&scan(0, vec![busy(7)]), secs(3));
        sampler.sample(&scan(0, vec![busy(9)]), secs(4));
        assert_eq!(sampler.idle(10, 1010, secs(7)), Some(secs(5)));
        // Another process under a reused pid is not the same process.
        assert_eq!(sampler.idle(10, 99, secs(7)), None);
        sampler.sample(&scan(0, vec![busy(10)]), secs(8));
        assert_eq!(sampler.idle(10, 1010, secs(9)), Some(secs(1)));
        // Gone from the tree: forgotten.
        sampler.sample(&scan(0, vec![]), secs(9));
        assert_eq!(sampler.idle(10, 1010, secs(9)), None);
    }

    #[test]
    fn io_counter_survives_exits_and_unreadable_reads() {
        let mut sampler = Sampler::new();
        let a = sampler.sample(
            &scan(0, vec![p(1, b'R', 0, Some(100), 0), p(2, b'R', 0, Some(50), 0)]),
            secs(1),
        );
        assert_eq!(a.io_bytes, 150);
        // 1 exits: its bytes stay counted; 2 grows by 20.
        let b = sampler.sample(&scan(0, vec![p(2, b'R', 0, Some(70), 0)]), secs(2));
        assert_eq!(b.io_bytes, 170);
        // A newcomer contributes everything it has done so far.
        let c = sampler.sample(
            &scan(0, vec![p(2, b'R', 0, Some(70), 0), p(3, b'R', 0, Some(30), 0)]),
            secs(3),
        );
        assert_eq!(c.io_bytes, 200);
        // Unreadable: no news, and the next reading is compared with the last good one.
        let d = sampler
            .sample(&scan(0, vec![p(2, b'R', 0, None, 0), p(3, b'R', 0, Some(30), 0)]), secs(4));
        assert_eq!(d.io_bytes, 200);
        let e = sampler.sample(
            &scan(0, vec![p(2, b'R', 0, Some(80), 0), p(3, b'R', 0, Some(30), 0)]),
            secs(5),
        );
        assert_eq!(e.io_bytes, 210);
        // A reading that goes backwards is not a negative delta, nor counted twice later.
        let f = sampler.sample(&scan(0, vec![p(2, b'R', 0, Some(60), 0)]), secs(6));
        assert_eq!(f.io_bytes, 210);
        let g = sampler.sample(&scan(0, vec![p(2, b'R', 0, Some(85), 0)]), secs(7));
        assert_eq!(g.io_bytes, 215);
        // A reused pid is a new process: its full count is new.
        let mut reused = p(2, b'R', 0, Some(5), 0);
        reused.starttime += 1;
        let h = sampler.sample(&scan(0, vec![reused]), secs(8));
        assert_eq!((h.io_bytes, h.new_procs), (220, 1));
    }

    #[test]
    fn new_procs_counts_keys_missing_from_the_previous_scan() {
        let mut sampler = Sampler::new();
        let first = sampler.sample(&scan(0, vec![p(1, b'S', 0, None, 0)]), secs(1));
        assert_eq!(first.new_procs, 0);
        let same = sampler.sample(&scan(0, vec![p(1, b'S', 0, None, 0)]), secs(2));
        assert_eq!(same.new_procs, 0);
        // Two newcomers, one of them already a zombie (born and died between scans).
        let more = sampler.sample(
            &scan(0, vec![p(1, b'S', 0, None, 0), p(2, b'R', 0, None, 0), p(3, b'Z', 0, None, 0)]),
            secs(3),
        );
        assert_eq!((more.new_procs, more.processes), (2, 2));
        let mut reused = p(1, b'S', 0, None, 0);
        reused.starttime += 7;
        let again = sampler.sample(&scan(0, vec![reused]), secs(4));
        assert_eq!(again.new_procs, 1);
        // An empty baseline still counts as the baseline.
        let mut fresh = Sampler::new();
        fresh.sample(&scan(0, vec![]), secs(1));
        let s = fresh.sample(&scan(0, vec![p(9, b'R', 0, None, 0)]), secs(2));
        assert_eq!(s.new_procs, 1);
    }

    #[test]
    fn all_stopped() {
        let stopped = |procs| Sampler::new().sample(&scan(0, procs), secs(1)).all_stopped;
        assert!(stopped(vec![p(1, b'T', 0, None, 0), p(2, b't', 0, None, 0)]));
        assert!(stopped(vec![p(1, b'T', 0, None, 0), p(2, b'Z', 0, None, 0)]));
        assert!(!stopped(vec![p(1, b'T', 0, None, 0), p(2, b'S', 0, None, 0)]));
        assert!(!stopped(vec![p(1, b'Z', 0, None, 0), p(2, b'X', 0, None, 0)]));
        assert!(!stopped(vec![]));
    }

    #[test]
    fn map_holds_only_the_current_scan() {
        let mut sampler = Sampler::new();
        let many: Vec<_> = (1..=1000).map(|pid| p(pid, b'S', 0, Some(1), 0)).collect();
        sampler.sample(&scan(0, many), secs(1));
        assert_eq!(sampler.prev.len(), 1000);
        sampler.sample(&scan(0, vec![p(5, b'S', 0, Some(1), 0)]), secs(2));
        assert_eq!(sampler.prev.len(), 1);
        sampler.sample(&scan(0, vec![p(5, b'S', 0, Some(1), 0)]), secs(3));
        assert!(sampler.prev.capacity() <= 4 * 64 && sampler.next.capacity() <= 4 * 64);
    }

    #[test]
    fn a_process_listed_twice_counts_once() {
        let twice = vec![p(1, b'R', 10, Some(5), 100), p(1, b'R', 10, Some(5), 100)];
        let s = Sampler::new().sample(&scan(0, twice), secs(1));
        assert_eq!((s.cpu_ticks, s.io_bytes, s.processes, s.rss_bytes), (10, 5, 1, Some(100)));
    }
}
