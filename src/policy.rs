//! Stall, timeout, CPU and RSS verdicts: pure functions of probe samples and elapsed time.
//!
//! Nothing here reads /proc, a clock or a process: the supervisor feeds [`Sample`]s in and gets
//! at most one [`Trigger`] back per sample, so every threshold and window is unit-tested below
//! without sleeping.
//!
//! Decisions worth knowing when reading the supervisor:
//! - A reason is returned by [`Policy::observe`] at most once. When several fire on the same
//!   sample the most urgent wins — `rss`, `cpu-hard`, `cpu-soft`, `stall` — and the others, if
//!   still true, come back on later samples (the supervisor drains once and ignores them).
//! - A zero-length or backwards window (two samples with the same `at`) is skipped: the earlier
//!   sample stays the baseline, so no counter growth is lost, it is just measured later.
//! - An interrupted window (watchd itself was stopped) accrues no stall time and gives no CPU
//!   verdict, but growth seen across it still is evidence of life: it can only delay a stop.
//! - Limits arrive validated (`config`): `None` is off, and no `Some` is zero.

use std::time::Duration;

use crate::probe::Sample;
pub use crate::reason::Reason;
use crate::units::{human_bytes, human_duration};

/// A verdict: the reason and one phrase of evidence for the stderr line
/// `watchd: <reason>: <detail>; sending SIGTERM, ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub reason: Reason,
    pub detail: String,
}

/// The validated limits policy enforces. `None` turns a limit off.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub stall: Option<Duration>,
    /// CPU growth, and new processes (starting one is CPU work).
    pub evidence_cpu: bool,
    pub evidence_io: bool,
    /// `WATCHDOG=1` on the notify socket (only when there is one).
    pub evidence_notify: bool,
    /// A GPU working for the tree (only where NVML answers).
    pub evidence_gpu: bool,
    /// `--heartbeat` files were given: a change of one is always evidence.
    pub heartbeats: bool,
    /// Cores; CPU growth below this rate over a window is not evidence.
    pub min_cpu: Option<f64>,
    pub timeout: Option<Duration>,
    /// Cores.
    pub cpu_limit: Option<f64>,
    pub cpu_soft: f64,
    /// Consecutive probe windows at `cpu_soft` that fire `cpu-soft` (at least one).
    pub cpu_soft_windows: u32,
    pub cpu_hard: f64,
    pub max_rss: Option<u64>,
    /// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of `Sample::cpu_ticks`.
    pub clk_tck: u64,
}

impl Limits {
    /// Every limit off, evidence `cpu,io`, the contract's CPU defaults (at a 5s interval).
    #[cfg(test)]
    pub fn none(clk_tck: u64) -> Limits {
        Limits {
            stall: None,
            evidence_cpu: true,
            evidence_io: true,
            evidence_notify: false,
            evidence_gpu: false,
            heartbeats: false,
            min_cpu: None,
            timeout: None,
            cpu_limit: None,
            cpu_soft: 0.85,
            cpu_soft_windows: 3,
            cpu_hard: 0.95,
            max_rss: None,
            clk_tck,
        }
    }
}

/// The part of a sample that the next window is measured from.
#[derive(Debug, Clone, Copy)]
struct Baseline {
    at: Duration,
    cpu_ticks: u64,
    io_bytes: u64,
    all_stopped: bool,
}

impl Baseline {
    fn of(s: &Sample) -> Baseline {
        Baseline {
            at: s.at,
            cpu_ticks: s.cpu_ticks,
            io_bytes: s.io_bytes,
            all_stopped: s.all_stopped,
        }
    }
}

/// Turns the stream of samples into at most one trigger per reason.
#[derive(Debug, Clone)]
pub struct Policy {
    limits: Limits,
    baseline: Option<Baseline>,
    /// `new_procs` of skipped zero-length samples: a per-sample count, not a counter, so it
    /// would be lost if not carried into the next measured window.
    deferred_new_procs: u32,
    stall_clock: Duration,
    cores: Option<f64>,
    /// Consecutive windows at or above the soft threshold, and the lowest usage among them
    /// (so the detail's "X cores >= ..." holds for every window it counts).
    soft_run: u32,
    soft_low: f64,
    /// Bit set of reasons already returned by `observe`.
    fired: u16,
    /// A sample has carried GPU figures: GPU work is among the evidence named.
    gpu_seen: bool,
}

impl Policy {
    pub fn new(limits: Limits) -> Policy {
        Policy {
            limits,
            baseline: None,
            deferred_new_procs: 0,
            stall_clock: Duration::ZERO,
            cores: None,
            soft_run: 0,
            soft_low: 0.0,
            fired: 0,
            gpu_seen: false,
        }
    }

    /// Feed one sample. `interrupted`: watchd itself was stopped during this window (job control),
    /// so the window proves nothing: no stall accrual, no CPU verdict, just a new baseline.
    ///
    /// Returns the most urgent trigger that fires on this sample and has not been returned
    /// before: `rss`, then `cpu-hard`, then `cpu-soft`, then `stall`.
    pub fn observe(&mut self, s: &Sample, interrupted: bool) -> Option<Trigger> {
        let window_cores = self.advance(s, interrupted);
        let l = &self.limits;

        if let (Some(max), Some(rss)) = (l.max_rss, s.rss_bytes)
            && rss > max
            && !self.has_fired(Reason::Rss)
        {
            return Some(self.fire(Reason::Rss, rss_detail(rss, max, s.processes)));
        }

        if let (Some(limit), Some(cores)) = (l.cpu_limit, window_cores) {
            let (hard, soft, soft_for) = (l.cpu_hard, l.cpu_soft, l.cpu_soft_windows);
            if reaches(cores, soft * limit) {
                self.soft_low = if self.soft_run == 0 { cores } else { self.soft_low.min(cores) };
                self.soft_run = self.soft_run.saturating_add(1);
            } else {
                self.soft_run = 0;
            }
            if reaches(cores, hard * limit) && !self.has_fired(Reason::CpuHard) {
                let detail = cpu_detail(cores, hard, limit, 1);
                return Some(self.fire(Reason::CpuHard, detail));
            }
            if self.soft_run >= soft_for && !self.has_fired(Reason::CpuSoft) {
                let detail = cpu_detail(self.soft_low, soft, limit, self.soft_run);
                return Some(self.fire(Reason::CpuSoft, detail));
            }
        }

        if let Some(stall) = self.limits.stall
            && self.stall_clock >= stall
            && !self.has_fired(Reason::Stall)
        {
            let detail = format!(
                "{} for {} ({})",
                self.no_progress_phrase(),
                human_duration(self.stall_clock),
                processes(s.processes),
            );
            return Some(self.fire(Reason::Stall, detail));
        }
        None
    }

    /// `Some` whenever `now >= timeout`. This takes `&self`, so unlike `observe` it does not
    /// remember having fired: the supervisor stops asking once it drains.
    pub fn check_timeout(&self, now: Duration) -> Option<Trigger> {
        let timeout = self.limits.timeout?;
        (now >= timeout).then(|| Trigger {
            reason: Reason::Timeout,
            detail: format!("ran for {}, the --timeout", human_duration(timeout)),
        })
    }

    /// Elapsed time at which `check_timeout` starts firing, for the supervisor's poll deadline.
    pub fn timeout_at(&self) -> Option<Duration> {
        self.limits.timeout
    }

    /// The stall clock: time without evidence of life, not counting stopped or interrupted
    /// windows.
    pub fn since_progress(&self) -> Duration {
        self.stall_clock
    }

    /// CPU usage in cores over the last measured, non-interrupted window (None before two
    /// samples, or when `clk_tck` is 0).
    pub fn cpu_cores(&self) -> Option<f64> {
        self.cores
    }

    /// Folds the window ending at `s` into the stall clock, the baseline and `cpu_cores`, and
    /// returns its CPU usage in cores when the window can carry a CPU verdict.
    fn advance(&mut self, s: &Sample, interrupted: bool) -> Option<f64> {
        let Some(prev) = self.baseline else {
            // The first sample only sets the baseline; its new_procs is 0 by the Sampler's contract
            // and there is no window yet to judge.
            self.baseline = Some(Baseline::of(s));
            return None;
        };
        let new_procs = self.deferred_new_procs.saturating_add(s.new_procs);
        let dt = match s.at.checked_sub(prev.at) {
            Some(dt) if !dt.is_zero() => dt,
            // Still "just a new baseline", as for any interrupted window; nothing accrues.
            _ if interrupted => Duration::ZERO,
            _ => {
                // No time passed (or the caller's clock went backwards): a rate would divide by
                // zero. Keep measuring from `prev`; monotone counters lose nothing.
                self.deferred_new_procs = new_procs;
                return None;
            }
        };
        self.baseline = Some(Baseline::of(s));
        self.deferred_new_procs = 0;

        let ticks = s.cpu_ticks.saturating_sub(prev.cpu_ticks);
        let cores = self.usage(ticks, dt);
        let cpu_evidence = self.limits.evidence_cpu
            && ticks > 0
            // An unmeasurable rate (clk_tck 0, or an interrupted zero-length window) counts as
            // evidence: it can only postpone a stop, never cause one.
            && match (self.limits.min_cpu, cores) {
                (Some(min), Some(c)) => reaches(c, min),
                _ => true,
            };
        let io_evidence = self.limits.evidence_io && s.io_bytes > prev.io_bytes;
        let new_procs = self.limits.evidence_cpu && new_procs > 0;
        let notify = self.limits.evidence_notify && s.pings > 0;
        let gpu = self.limits.evidence_gpu && s.gpu.is_some_and(|g| g.busy);
        if s.gpu.is_some() {
            self.gpu_seen = true;
        }
        if cpu_evidence || io_evidence || new_procs || notify || gpu || s.heartbeats > 0 {
            self.stall_clock = Duration::ZERO;
        } else if !interrupted && !prev.all_stopped && !s.all_stopped {
            self.stall_clock = self.stall_clock.saturating_add(dt);
        }

        if interrupted {
            self.soft_run = 0;
            return None;
        }
        self.cores = cores;
        cores
    }

    fn usage(&self, ticks: u64, dt: Duration) -> Option<f64> {
        let per_second = self.limits.clk_tck as f64 * dt.as_secs_f64();
        (per_second > 0.0).then(|| ticks as f64 / per_second)
    }

    fn has_fired(&self, r: Reason) -> bool {
        self.fired & (1 << r.index()) != 0
    }

    fn fire(&mut self, reason: Reason, detail: String) -> Trigger {
        self.fired |= 1 << reason.index();
        Trigger { reason, detail }
    }

    /// "no CPU or I/O progress": the kinds of evidence that could have counted.
    fn no_progress_phrase(&self) -> String {
        let l = &self.limits;
        let cpu = match l.min_cpu {
            Some(min) => format!("CPU (>= {})", cores_amount(min)),
            None => "CPU".to_owned(),
        };
        let kinds: Vec<String> = [
            (l.evidence_cpu, cpu),
            (l.evidence_io, "I/O".to_owned()),
            (l.evidence_gpu && self.gpu_seen, "GPU".to_owned()),
            (l.evidence_notify, "WATCHDOG=1".to_owned()),
            (l.heartbeats, "heartbeat".to_owned()),
        ]
        .into_iter()
        .filter_map(|(on, kind)| on.then_some(kind))
        .collect();
        match kinds.as_slice() {
            [] => "no progress".to_owned(),
            [one] => format!("no {one} progress"),
            [rest @ .., last] => format!("no {} or {last} progress", rest.join(", ")),
        }
    }

    /// `WATCHDOG_USEC=N` from the command: the stall window becomes N (None turns it off).
    pub fn set_stall(&mut self, stall: Option<Duration>) {
        self.limits.stall = stall.filter(|d| !d.is_zero());
        self.fired &= !(1 << Reason::Stall.index());
    }

    /// The stall window in force.
    pub fn stall(&self) -> Option<Duration> {
        self.limits.stall
    }
}

/// `x >= threshold`, forgiving the last bits of a product like 0.8 * 3 = 2.4000000000000004, so a
/// rate exactly at a decimal threshold (240 ticks in 1s at 100 Hz = 2.4 cores) counts as reaching it.
fn reaches(x: f64, threshold: f64) -> bool {
    x >= threshold - threshold.abs() * 1e-9
}

fn cpu_detail(cores: f64, factor: f64, limit: f64, windows: u32) -> String {
    let probes = if windows == 1 { "probe" } else { "probes" };
    format!("{cores:.2} cores >= {factor} x {} limit for {windows} {probes}", cores_amount(limit))
}

fn rss_detail(rss: u64, max: u64, procs: u32) -> String {
    let (mut shown, mut limit) = (human_bytes(rss), human_bytes(max));
    // "1.0 GiB resident > 1.0 GiB limit" would read as a bug: show the bytes that differ.
    if shown == limit {
        shown = format!("{shown} ({rss} B)");
        limit = format!("{limit} ({max} B)");
    }
    format!("{shown} resident > {limit} limit ({})", processes(procs))
}

/// A user-given number of cores as typed: "1 core", "0.5 cores", "2 cores".
fn cores_amount(c: f64) -> String {
    if c == 1.0 { "1 core".to_owned() } else { format!("{c} cores") }
}

fn processes(n: u32) -> String {
    if n == 1 { "1 process".to_owned() } else { format!("{n} processes") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::GpuFigures;

    const HZ: u64 = 100;
    const GIB: u64 = 1 << 30;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// A running tree of 3 processes at `at` seconds with the given counters.
    fn at(t: f64, cpu_ticks: u64, io_bytes: u64) -> Sample {
        Sample {
            at: secs(t),
            cpu_ticks,
            io_bytes,
            new_procs: 0,
            processes: 3,
            rss_bytes: Some(0),
            all_stopped: false,
            visible: true,
            pings: 0,
            heartbeats: 0,
            gpu: None,
            pressure: None,
        }
    }

    fn stall_limits(stall: f64) -> Limits {
        Limits { stall: Some(secs(stall)), ..Limits::none(HZ) }
    }

    fn cpu_limits(limit: f64) -> Limits {
        Limits { cpu_limit: Some(limit), ..Limits::none(HZ) }
    }

    fn reasons(p: &mut Policy, samples: impl IntoIterator<Item = Sample>) -> Vec<Option<Reason>> {
        samples.into_iter().map(|s| p.observe(&s, false).map(|t| t.reason)).collect()
    }

    /// Samples every 10s for 100s, where `grow(i)` gives the counters of sample i; true when the
    /// stall (30s) fires.
    fn stalls(limits: Limits, grow: impl Fn(u64) -> Sample) -> bool {
        let mut p = Policy::new(limits);
        (0..=10).any(|i| p.observe(&grow(i), false).is_some())
    }

    // ---- stall clock ----

    #[test]
    fn stall_fires_when_clock_reaches_limit_exactly() {
        let mut p = Policy::new(stall_limits(30.0));
        let got = reasons(&mut p, (0..4).map(|i| at(i as f64 * 10.0, 7, 7)));
        assert_eq!(got, [None, None, None, Some(Reason::Stall)]);
        assert_eq!(p.since_progress(), secs(30.0));
    }

    #[test]
    fn stall_does_not_fire_just_under_limit() {
        let mut p = Policy::new(stall_limits(30.0));
        assert_eq!(p.observe(&at(0.0, 0, 0), false), None);
        assert_eq!(p.observe(&at(29.999, 0, 0), false), None);
        assert_eq!(p.since_progress(), secs(29.999));
        // The next millisecond crosses it: the test above is not passing by never firing.
        assert_eq!(p.observe(&at(30.0, 0, 0), false).map(|t| t.reason), Some(Reason::Stall));
    }

    #[test]
    fn evidence_resets_the_stall_clock() {
        let mut p = Policy::new(stall_limits(30.0));
        let got = reasons(
            &mut p,
            [
                at(0.0, 0, 0),
                at(20.0, 0, 0),
                at(25.0, 0, 1), // I/O: clock back to 0
            ],
        );
        assert_eq!(got, [None, None, None]);
        assert_eq!(p.since_progress(), Duration::ZERO);
        // Had the clock not reset, 25s + 25s would fire here.
        assert_eq!(p.observe(&at(50.0, 0, 1), false), None);
        assert_eq!(p.since_progress(), secs(25.0));
        assert_eq!(p.observe(&at(55.0, 0, 1), false).map(|t| t.reason), Some(Reason::Stall));
    }

    #[test]
    fn cpu_growth_is_evidence_only_when_enabled() {
        let busy = |i: u64| at(i as f64 * 10.0, i, 0);
        assert!(!stalls(stall_limits(30.0), busy));
        let off = Limits { evidence_cpu: false, ..stall_limits(30.0) };
        assert!(stalls(off, busy));
    }

    #[test]
    fn io_growth_is_evidence_only_when_enabled() {
        let writing = |i: u64| at(i as f64 * 10.0, 0, i * 4096);
        assert!(!stalls(stall_limits(30.0), writing));
        let off = Limits { evidence_io: false, ..stall_limits(30.0) };
        assert!(stalls(off, writing));
    }

    #[test]
    fn a_new_process_is_evidence_with_cpu() {
        let forking = |i: u64| Sample { new_procs: 1, ..at(i as f64 * 10.0, 0, 0) };
        let cpu_only = Limits { evidence_io: false, ..stall_limits(30.0) };
        assert!(!stalls(cpu_only.clone(), forking));
        // Control: the same tree without new processes does stall.
        assert!(stalls(cpu_only, |i| at(i as f64 * 10.0, 0, 0)));
        // Without cpu, starting processes is no evidence (SPEC: counted with cpu).
        let io_only = Limits { evidence_cpu: false, ..stall_limits(30.0) };
        assert!(stalls(io_only, forking));
    }

    #[test]
    fn pings_gpu_work_and_heartbeats_are_evidence_when_they_count() {
        let pinging = |i: u64| Sample { pings: 1, ..at(i as f64 * 10.0, 0, 0) };
        let notify = Limits { evidence_notify: true, ..stall_limits(30.0) };
        assert!(!stalls(notify.clone(), pinging));
        assert!(stalls(stall_limits(30.0), pinging), "pings count only with notify evidence");
        let gpu = |busy| GpuFigures { busy, util: Some(50.0), memory_bytes: None };
        let busy = |i: u64| Sample { gpu: Some(gpu(true)), ..at(i as f64 * 10.0, 0, 0) };
        let idle = |i: u64| Sample { gpu: Some(gpu(false)), ..at(i as f64 * 10.0, 0, 0) };
        let with_gpu = Limits { evidence_gpu: true, ..stall_limits(30.0) };
        assert!(!stalls(with_gpu.clone(), busy));
        assert!(stalls(with_gpu, idle));
        assert!(stalls(stall_limits(30.0), busy), "GPU counts only with gpu evidence");
        let beating = |i: u64| Sample { heartbeats: 1, ..at(i as f64 * 10.0, 0, 0) };
        let none = Limits { evidence_cpu: false, evidence_io: false, ..stall_limits(30.0) };
        assert!(!stalls(none, beating), "a heartbeat always counts");
    }

    #[test]
    fn watchdog_usec_changes_the_window_and_zero_turns_it_off() {
        let mut p = Policy::new(stall_limits(30.0));
        p.set_stall(Some(secs(10.0)));
        let got = reasons(&mut p, (0..3).map(|i| at(i as f64 * 5.0, 0, 0)));
        assert_eq!(got, [None, None, Some(Reason::Stall)]);
        let mut p = Policy::new(stall_limits(30.0));
        p.set_stall(Some(Duration::ZERO));
        assert_eq!(p.stall(), None);
        let got = reasons(&mut p, (0..10).map(|i| at(i as f64 * 5.0, 0, 0)));
        assert!(got.iter().all(Option::is_none));
    }

    #[test]
    fn min_cpu_counts_growth_at_the_threshold_and_not_below() {
        let limits = Limits { min_cpu: Some(0.5), ..stall_limits(30.0) };
        // 10s windows at 100 Hz: 500 ticks = 0.5 cores, 499 = 0.499 cores.
        assert!(!stalls(limits.clone(), |i| at(i as f64 * 10.0, i * 500, 0)));
        assert!(stalls(limits.clone(), |i| at(i as f64 * 10.0, i * 499, 0)));
        // min_cpu concerns CPU only: I/O still counts.
        assert!(!stalls(limits, |i| at(i as f64 * 10.0, i * 499, i)));
    }

    #[test]
    fn stopped_start_of_window_does_not_accrue() {
        let mut p = Policy::new(stall_limits(30.0));
        let stopped = Sample { all_stopped: true, ..at(0.0, 0, 0) };
        p.observe(&stopped, false);
        p.observe(&at(10.0, 0, 0), false);
        assert_eq!(p.since_progress(), Duration::ZERO);
        p.observe(&at(20.0, 0, 0), false);
        assert_eq!(p.since_progress(), secs(10.0));
    }

    #[test]
    fn stopped_end_of_window_does_not_accrue() {
        let mut p = Policy::new(stall_limits(30.0));
        p.observe(&at(0.0, 0, 0), false);
        p.observe(&at(10.0, 0, 0), false);
        assert_eq!(p.since_progress(), secs(10.0));
        let stopped = Sample { all_stopped: true, ..at(20.0, 0, 0) };
        p.observe(&stopped, false);
        assert_eq!(p.since_progress(), secs(10.0), "paused, not reset");
        p.observe(&at(30.0, 0, 0), false);
        assert_eq!(p.since_progress(), secs(10.0));
        p.observe(&at(40.0, 0, 0), false);
        assert_eq!(p.since_progress(), secs(20.0));
    }

    #[test]
    fn a_stopped_tree_never_stalls_and_resumes_counting_after() {
        let mut p = Policy::new(stall_limits(30.0));
        let stopped = |t: f64| Sample { all_stopped: true, ..at(t, 0, 0) };
        let got = reasons(&mut p, (0..=10).map(|i| stopped(i as f64 * 10.0)));
        assert!(got.iter().all(Option::is_none), "{got:?}");
        // 100s resumed at, then the clock runs from the first fully running window (110..140).
        let got = reasons(&mut p, (11..=14).map(|i| at(i as f64 * 10.0, 0, 0)));
        assert_eq!(got, [None, None, None, Some(Reason::Stall)]);
    }

    #[test]
    fn interrupted_window_does_not_accrue() {
        let mut p = Policy::new(stall_limits(30.0));
        p.observe(&at(0.0, 0, 0), false);
        p.observe(&at(20.0, 0, 0), false);
        // watchd was stopped for an hour: without `interrupted` this would fire.
        assert_eq!(p.observe(&at(3620.0, 0, 0), true), None);
        assert_eq!(p.since_progress(), secs(20.0), "paused, not reset");
        // The interrupted sample is the new baseline: the next window is 10s, not 3610s.
        assert_eq!(p.observe(&at(3630.0, 0, 0), false).map(|t| t.reason), Some(Reason::Stall));
        assert_eq!(p.since_progress(), secs(30.0));
    }

    #[test]
    fn growth_across_an_interrupted_window_is_still_evidence() {
        let mut p = Policy::new(stall_limits(30.0));
        p.observe(&at(0.0, 0, 0), false);
        p.observe(&at(20.0, 0, 0), false);
        p.observe(&at(60.0, 0, 5), true);
        assert_eq!(p.since_progress(), Duration::ZERO);
    }

    #[test]
    fn interrupted_window_gives_no_cpu_verdict_and_keeps_cpu_cores() {
        let mut p = Policy::new(cpu_limits(1.0));
        p.observe(&at(0.0, 0, 0), false);
        p.observe(&at(1.0, 10, 0), false);
        assert_eq!(p.cpu_cores(), Some(0.1));
        // 2 cores on a 1 core limit, but watchd was stopped: no verdict, no new figure.
        assert_eq!(p.observe(&at(2.0, 210, 0), true), None);
        assert_eq!(p.cpu_cores(), Some(0.1));
        // Control: the same window not interrupted is a cpu-hard.
        assert_eq!(p.observe(&at(3.0, 410, 0), false).map(|t| t.reason), Some(Reason::CpuHard));
        assert_eq!(p.cpu_cores(), Some(2.0));
    }

    #[test]
    fn first_sample_interrupted_is_just_a_baseline() {
        let mut p = Policy::new(stall_limits(30.0));
        assert_eq!(p.observe(&at(5.0, 0, 0), true), None);
        assert_eq!(p.cpu_cores(), None);
        p.observe(&at(15.0, 0, 0), false);
        assert_eq!(p.since_progress(), secs(10.0));
    }

    // ---- timeout ----

    #[test]
    fn timeout_fires_at_exactly_the_deadline() {
        let p = Policy::new(Limits { timeout: Some(secs(10.0)), ..Limits::none(HZ) });
        assert_eq!(p.timeout_at(), Some(secs(10.0)));
        assert_eq!(p.check_timeout(secs(9.999)), None);
        let t = p.check_timeout(secs(10.0)).expect("now == timeout fires");
        assert_eq!(t.reason, Reason::Timeout);
        assert_eq!(t.detail, "ran for 10s, the --timeout");
        assert!(p.check_timeout(secs(11.0)).is_some());
    }

    #[test]
    fn no_timeout_never_fires() {
        let p = Policy::new(Limits::none(HZ));
        assert_eq!(p.timeout_at(), None);
        assert_eq!(p.check_timeout(Duration::from_secs(1 << 40)), None);
    }

    // ---- cpu ----

    #[test]
    fn cpu_cores_is_usage_over_the_last_window() {
        let mut p = Policy::new(Limits::none(HZ));
        assert_eq!(p.cpu_cores(), None);
        p.observe(&at(0.0, 1000, 0), false);
        assert_eq!(p.cpu_cores(), None, "one sample is no window");
        p.observe(&at(5.0, 1000 + 750, 0), false);
        assert_eq!(p.cpu_cores(), Some(1.5));
        p.observe(&at(7.0, 1750 + 50, 0), false);
        assert_eq!(p.cpu_cores(), Some(0.25));
    }

    #[test]
    fn cpu_hard_fires_in_one_window_at_the_threshold() {
        let mut p = Policy::new(cpu_limits(1.0));
        p.observe(&at(0.0, 0, 0), false);
        let t = p.observe(&at(1.0, 95, 0), false).expect("0.95 x 1 core");
        assert_eq!(t.reason, Reason::CpuHard);
        assert_eq!(t.detail, "0.95 cores >= 0.95 x 1 core limit for 1 probe");
    }

    #[test]
    fn cpu_hard_does_not_fire_just_under() {
        let mut p = Policy::new(cpu_limits(1.0));
        let got = reasons(&mut p, [at(0.0, 0, 0), at(1.0, 94, 0)]);
        assert_eq!(got, [None, None]);
    }

    #[test]
    fn threshold_products_do_not_lose_the_boundary_to_rounding() {
        // 0.8 * 3.0 == 2.4000000000000004 in f64, while 240 ticks / 100 Hz == 2.4.
        let mut p = Policy::new(Limits { cpu_hard: 0.8, ..cpu_limits(3.0) });
        p.observe(&at(0.0, 0, 0), false);
        assert_eq!(p.observe(&at(1.0, 240, 0), false).map(|t| t.reason), Some(Reason::CpuHard));
    }

    /// Limit 2 cores, 5s windows: soft at 1.7 cores (850 ticks), hard at 1.9 (950 ticks).
    fn soft_run(per_window_ticks: &[u64]) -> (Policy, Vec<Option<Reason>>) {
        let mut p = Policy::new(cpu_limits(2.0));
        let mut ticks = 0;
        let mut samples = vec![at(0.0, 0, 0)];
        for (i, d) in per_window_ticks.iter().enumerate() {
            ticks += d;
            samples.push(at((i + 1) as f64 * 5.0, ticks, 0));
        }
        let got = reasons(&mut p, samples);
        (p, got)
    }

    #[test]
    fn cpu_soft_needs_n_consecutive_windows() {
        let (_, got) = soft_run(&[900, 900, 900]);
        assert_eq!(got, [None, None, None, Some(Reason::CpuSoft)]);
    }

    #[test]
    fn cpu_soft_does_not_fire_after_n_minus_one_windows() {
        let (_, got) = soft_run(&[900, 900, 100, 100, 100]);
        assert!(got.iter().all(Option::is_none), "{got:?}");
    }

    #[test]
    fn cpu_soft_counts_exactly_at_the_threshold() {
        let (_, got) = soft_run(&[850, 850, 850]);
        assert_eq!(got.last(), Some(&Some(Reason::CpuSoft)));
    }

    #[test]
    fn a_dip_below_soft_resets_the_count() {
        // 849 ticks = 1.698 cores, just under 1.7.
        let (_, got) = soft_run(&[900, 900, 849, 900, 900]);
        assert!(got.iter().all(Option::is_none), "{got:?}");
        let (_, got) = soft_run(&[900, 900, 849, 900, 900, 900]);
        assert_eq!(got.last(), Some(&Some(Reason::CpuSoft)));
    }

    #[test]
    fn an_interrupted_window_resets_the_soft_count() {
        let mut p = Policy::new(cpu_limits(2.0));
        let got: Vec<_> = [
            (at(0.0, 0, 0), false),
            (at(5.0, 900, 0), false),
            (at(10.0, 1800, 0), false),
            (at(15.0, 2700, 0), true),
            (at(20.0, 3600, 0), false),
            (at(25.0, 4500, 0), false),
        ]
        .iter()
        .map(|(s, i)| p.observe(s, *i).map(|t| t.reason))
        .collect();
        assert!(got.iter().all(Option::is_none), "{got:?}");
        assert_eq!(p.observe(&at(30.0, 5400, 0), false).map(|t| t.reason), Some(Reason::CpuSoft));
    }

    #[test]
    fn a_spike_shorter_than_the_soft_window_does_not_fire_soft() {
        // One window at 1.8 cores (soft, not hard), then idle.
        let (_, got) = soft_run(&[900, 10, 10, 10]);
        assert!(got.iter().all(Option::is_none), "{got:?}");
    }

    #[test]
    fn cpu_soft_detail_names_the_lowest_usage_of_the_run() {
        // 0.2 cores, then 1.85, 1.80, 1.82.
        let (mut p, _) = soft_run(&[100, 925, 900]);
        let t = p.observe(&at(20.0, 100 + 925 + 900 + 910, 0), false).unwrap();
        assert_eq!(t.detail, "1.80 cores >= 0.85 x 2 cores limit for 3 probes");
    }

    #[test]
    fn zero_length_window_is_skipped_and_measured_later() {
        let mut p = Policy::new(cpu_limits(1.0));
        p.observe(&at(0.0, 0, 0), false);
        p.observe(&at(10.0, 100, 0), false);
        assert_eq!(p.cpu_cores(), Some(0.1));
        // 500 ticks in no time: no division by zero, no verdict, no new figure.
        assert_eq!(p.observe(&at(10.0, 600, 0), false), None);
        assert_eq!(p.cpu_cores(), Some(0.1));
        // The skipped growth lands in the next window (10s..20s): 500 ticks / 10s.
        assert_eq!(p.observe(&at(20.0, 600, 0), false), None);
        assert_eq!(p.cpu_cores(), Some(0.5));
    }

    #[test]
    fn backwards_window_is_skipped() {
        let mut p = Policy::new(Limits {
            stall: Some(secs(30.0)),
            cpu_limit: Some(1.0),
            ..Limits::none(HZ)
        });
        p.observe(&at(10.0, 0, 0), false);
        assert_eq!(p.observe(&at(5.0, 1000, 0), false), None);
        assert_eq!(p.cpu_cores(), None);
        assert_eq!(p.since_progress(), Duration::ZERO);
    }

    #[test]
    fn new_procs_of_a_skipped_sample_still_count() {
        let mut p = Policy::new(stall_limits(30.0));
        p.observe(&at(0.0, 0, 0), false);
        p.observe(&at(20.0, 0, 0), false);
        let forked = Sample { new_procs: 1, ..at(20.0, 0, 0) };
        p.observe(&forked, false);
        assert_eq!(p.observe(&at(30.0, 0, 0), false), None);
        assert_eq!(p.since_progress(), Duration::ZERO);
    }

    #[test]
    fn unknown_clk_tck_does_not_divide_by_zero_and_growth_still_counts() {
        let mut p = Policy::new(Limits {
            min_cpu: Some(0.5),
            cpu_limit: Some(1.0),
            ..Limits { clk_tck: 0, ..stall_limits(30.0) }
        });
        let got = reasons(&mut p, (0..=10).map(|i| at(i as f64 * 10.0, i * 1000, 0)));
        assert!(got.iter().all(Option::is_none), "{got:?}");
        assert_eq!(p.cpu_cores(), None);
    }

    // ---- rss ----

    #[test]
    fn rss_fires_only_strictly_above_the_limit() {
        let mut p = Policy::new(Limits { max_rss: Some(GIB), ..Limits::none(HZ) });
        let s = |rss| Sample { rss_bytes: Some(rss), ..at(0.0, 0, 0) };
        assert_eq!(p.observe(&s(GIB), false), None);
        let t = p.observe(&s(GIB + 1), false).expect("one byte over");
        assert_eq!(t.reason, Reason::Rss);
        assert_eq!(
            t.detail,
            "1.0 GiB (1073741825 B) resident > 1.0 GiB (1073741824 B) limit (3 processes)"
        );
    }

    #[test]
    fn rss_is_judged_on_the_first_sample() {
        let mut p = Policy::new(Limits { max_rss: Some(GIB), ..Limits::none(HZ) });
        let s = Sample { rss_bytes: Some(GIB * 6 / 5), processes: 4, ..at(0.0, 0, 0) };
        let t = p.observe(&s, false).expect("over on the baseline");
        assert_eq!(t.detail, "1.2 GiB resident > 1.0 GiB limit (4 processes)");
    }

    // ---- once per reason, priority ----

    #[test]
    fn a_reason_is_returned_once() {
        let mut p = Policy::new(Limits { max_rss: Some(1), ..stall_limits(10.0) });
        let s = |t: f64| Sample { rss_bytes: Some(2), ..at(t, 0, 0) };
        let got = reasons(&mut p, (0..6).map(|i| s(i as f64 * 10.0)));
        assert_eq!(got, [Some(Reason::Rss), Some(Reason::Stall), None, None, None, None]);
    }

    #[test]
    fn stall_is_returned_once_even_after_evidence_and_a_new_stall() {
        let mut p = Policy::new(stall_limits(10.0));
        let got = reasons(
            &mut p,
            [
                at(0.0, 0, 0),
                at(10.0, 0, 0),
                at(20.0, 0, 0),
                at(30.0, 0, 1),
                at(40.0, 0, 1),
                at(50.0, 0, 1),
            ],
        );
        assert_eq!(got, [None, Some(Reason::Stall), None, None, None, None]);
    }

    #[test]
    fn priority_is_rss_then_hard_then_soft_then_stall() {
        let mut p = Policy::new(Limits {
            stall: Some(secs(30.0)),
            evidence_cpu: false,
            max_rss: Some(1),
            ..cpu_limits(1.0)
        });
        let s = |t: f64, ticks, rss| Sample { rss_bytes: Some(rss), ..at(t, ticks, 0) };
        // All four become due on the sample at 30s.
        let got = reasons(
            &mut p,
            [
                s(0.0, 0, 0),
                s(10.0, 900, 0),
                s(20.0, 1800, 0),
                s(30.0, 2800, 2),
                s(40.0, 3800, 2),
                s(50.0, 4800, 2),
                s(60.0, 5800, 2),
                s(70.0, 6800, 2),
            ],
        );
        assert_eq!(
            got,
            [
                None,
                None,
                None,
                Some(Reason::Rss),
                Some(Reason::CpuHard),
                Some(Reason::CpuSoft),
                Some(Reason::Stall),
                None,
            ]
        );
    }

    // ---- limits ----

    #[test]
    fn limits_none_has_the_contract_defaults() {
        let l = Limits::none(250);
        assert_eq!(
            (l.stall, l.timeout, l.cpu_limit, l.max_rss, l.min_cpu),
            (None, None, None, None, None)
        );
        assert!(l.evidence_cpu && l.evidence_io);
        assert_eq!((l.cpu_soft, l.cpu_soft_windows, l.cpu_hard), (0.85, 3, 0.95));
        assert_eq!(l.clk_tck, 250);
    }

    // ---- details ----

    fn stall_detail(limits: Limits, processes: u32) -> String {
        let mut p = Policy::new(limits);
        let s = |t| Sample { processes, ..at(t, 0, 0) };
        p.observe(&s(0.0), false);
        p.observe(&s(30.0), false).expect("stalls").detail
    }

    #[test]
    fn stall_detail_names_the_evidence_kinds() {
        let base = stall_limits(30.0);
        assert_eq!(stall_detail(base.clone(), 3), "no CPU or I/O progress for 30s (3 processes)");
        let cpu_only = Limits { evidence_io: false, ..base.clone() };
        assert_eq!(stall_detail(cpu_only, 1), "no CPU progress for 30s (1 process)");
        let io_only = Limits { evidence_cpu: false, ..base.clone() };
        assert_eq!(stall_detail(io_only, 2), "no I/O progress for 30s (2 processes)");
        let neither = Limits { evidence_cpu: false, evidence_io: false, ..base.clone() };
        assert_eq!(stall_detail(neither, 2), "no progress for 30s (2 processes)");
        let notify = Limits { evidence_notify: true, ..base.clone() };
        assert_eq!(
            stall_detail(notify, 2),
            "no CPU, I/O or WATCHDOG=1 progress for 30s (2 processes)"
        );
        let min_cpu = Limits { min_cpu: Some(0.5), ..base };
        assert_eq!(
            stall_detail(min_cpu, 3),
            "no CPU (>= 0.5 cores) or I/O progress for 30s (3 processes)"
        );
    }

    #[test]
    fn stall_detail_reports_the_clock_not_the_limit() {
        // 7s probes against a 30s stall: the clock reads 35s when it fires.
        let mut p = Policy::new(stall_limits(30.0));
        let t = (0..=5).find_map(|i| p.observe(&at(i as f64 * 7.0, 0, 0), false)).expect("stalls");
        assert_eq!(t.detail, "no CPU or I/O progress for 35s (3 processes)");
    }
}
