//! When health checks run and what their results mean (Docker's model: a start period with
//! its own interval, then retries), and when the child counts as ready (`--ready-timeout`).
//! Pure: the machine owns these and feeds them times; nothing here reads a clock.

use std::time::{Duration, Instant};

/// The health options, validated (each duration above zero, `retries` at least 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthTiming {
    /// `--health-interval`: from the end of one check to the start of the next.
    pub interval: Duration,
    /// `--start-interval`: the same, during the start period.
    pub start_interval: Duration,
    /// `--start-period`: failures of checks that start within it, before the first pass, do
    /// not count.
    pub start_period: Duration,
    /// `--health-timeout`.
    pub timeout: Duration,
    /// `--health-retries`.
    pub retries: u32,
}

impl Default for HealthTiming {
    /// SPEC's defaults.
    fn default() -> HealthTiming {
        HealthTiming {
            interval: Duration::from_secs(10),
            start_interval: Duration::from_secs(1),
            start_period: Duration::ZERO,
            timeout: Duration::from_secs(5),
            retries: 3,
        }
    }
}

/// The health checks of one run: when the next one starts, and what each result means.
#[derive(Clone, Debug)]
pub struct HealthSchedule {
    timing: HealthTiming,
    period_end: Instant,
    /// When the next check starts; `None` while one runs.
    next: Option<Instant>,
    /// When the running check started.
    running: Option<Instant>,
    /// A check has passed: the start period is over for good.
    passed: bool,
    /// Consecutive failures, counted or not.
    failures: u32,
    /// Consecutive failures that count toward `retries`.
    counted: u32,
    last_ok: Option<bool>,
}

/// What one check's end means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    /// Consecutive failures including this check, 0 after a pass: the `health` event's
    /// `failures`. During the start period these include failures that do not count.
    pub failures: u32,
    /// Consecutive failures that count toward `--health-retries`.
    pub counted: u32,
    /// The first pass of the run: the start period ends, and with a health check the child
    /// is ready.
    pub first_pass: bool,
    /// `counted` has reached `--health-retries`: fire `unhealthy` (true for every further
    /// counted failure too, until a pass).
    pub unhealthy: bool,
    /// When the next check starts.
    pub next_at: Instant,
}

impl HealthSchedule {
    /// For a run whose child started at `started`: the first check comes one
    /// `--start-interval` later when there is a start period, else one `--health-interval`.
    pub fn new(timing: HealthTiming, started: Instant) -> HealthSchedule {
        let first =
            if timing.start_period.is_zero() { timing.interval } else { timing.start_interval };
        HealthSchedule {
            timing,
            period_end: later(started, timing.start_period),
            next: Some(later(started, first)),
            running: None,
            passed: false,
            failures: 0,
            counted: 0,
            last_ok: None,
        }
    }

    /// When to start the next check; `None` while one runs.
    pub fn next_check(&self) -> Option<Instant> {
        self.next
    }

    /// A check started at `now`; returns its deadline (`--health-timeout`), past which the
    /// caller kills it and reports a failure. Starting while one runs changes nothing.
    pub fn check_started(&mut self, now: Instant) -> Instant {
        let start = *self.running.get_or_insert(now);
        self.next = None;
        later(start, self.timing.timeout)
    }

    /// The running check ended at `now`, passed or not (a timeout is a failure).
    pub fn check_ended(&mut self, now: Instant, ok: bool) -> Verdict {
        let start = self.running.take().unwrap_or(now);
        let first_pass = ok && !self.passed;
        if ok {
            self.passed = true;
            self.failures = 0;
            self.counted = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            // Docker judges by when the check started: one that began in the period and
            // ended after it still does not count.
            if self.passed || start >= self.period_end {
                self.counted = self.counted.saturating_add(1);
            }
        }
        self.last_ok = Some(ok);
        let gap = if self.in_start_period(now) {
            self.timing.start_interval
        } else {
            self.timing.interval
        };
        let next_at = later(now, gap);
        self.next = Some(next_at);
        Verdict {
            ok,
            failures: self.failures,
            counted: self.counted,
            first_pass,
            unhealthy: self.counted >= self.timing.retries.max(1),
            next_at,
        }
    }

    /// Still in the start period: no pass yet, and the period has not run out.
    pub fn in_start_period(&self, now: Instant) -> bool {
        !self.passed && now < self.period_end
    }

    /// The last check's result (`watchd_healthy`); `None` before the first one ends.
    pub fn last_ok(&self) -> Option<bool> {
        self.last_ok
    }
}

/// `at + by`, or as late as the clock goes ("forever").
fn later(at: Instant, by: Duration) -> Instant {
    at.checked_add(by).unwrap_or_else(|| far_future(at))
}

fn far_future(at: Instant) -> Instant {
    // Config clamps durations to 100 years; this only guards arithmetic on top of them.
    at.checked_add(Duration::from_secs(100 * 365 * 86_400)).unwrap_or(at)
}

/// What makes the child ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadyBy {
    /// Its first health check passed.
    Health,
    /// It sent `READY=1` (`--notify`).
    Notify,
    /// It runs (no health check, no `--notify`).
    Start,
}

impl ReadyBy {
    /// Which source counts: a health check if there is one, else `--notify`, else the start.
    pub fn awaited(health_check: bool, notify: bool) -> ReadyBy {
        match (health_check, notify) {
            (true, _) => ReadyBy::Health,
            (false, true) => ReadyBy::Notify,
            (false, false) => ReadyBy::Start,
        }
    }

    /// The `ready` event's `by`.
    pub fn name(self) -> &'static str {
        match self {
            ReadyBy::Health => "health",
            ReadyBy::Notify => "notify",
            ReadyBy::Start => "start",
        }
    }
}

/// The child became ready: the `ready` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    pub by: ReadyBy,
    pub after: Duration,
}

/// Whether one run's child is ready yet, and when `not-ready` fires.
#[derive(Clone, Debug)]
pub struct Readiness {
    awaited: ReadyBy,
    started: Instant,
    /// `--ready-timeout`'s deadline, pushed back by `EXTEND_TIMEOUT_USEC`.
    deadline: Option<Instant>,
    ready_at: Option<Instant>,
}

impl Readiness {
    /// `ready_timeout` of `None` or zero: `not-ready` never fires.
    pub fn new(awaited: ReadyBy, started: Instant, ready_timeout: Option<Duration>) -> Readiness {
        let deadline = ready_timeout.filter(|t| !t.is_zero()).map(|t| later(started, t));
        Readiness { awaited, started, deadline, ready_at: None }
    }

    pub fn awaited(&self) -> ReadyBy {
        self.awaited
    }

    /// `by` says the child is ready (the exec succeeded, the first health check passed,
    /// `READY=1` came). `Some` the first time it comes from the awaited source; anything else
    /// changes nothing (a `READY=1` while a health check decides is only noted).
    pub fn on(&mut self, by: ReadyBy, now: Instant) -> Option<Ready> {
        if by != self.awaited || self.ready_at.is_some() {
            return None;
        }
        self.ready_at = Some(now);
        Some(Ready { by, after: now.saturating_duration_since(self.started) })
    }

    pub fn is_ready(&self) -> bool {
        self.ready_at.is_some()
    }

    /// `EXTEND_TIMEOUT_USEC`: until ready, `--ready-timeout` expires no sooner than `now + by`.
    pub fn extend(&mut self, now: Instant, by: Duration) {
        if self.ready_at.is_none()
            && let Some(deadline) = &mut self.deadline
        {
            *deadline = (*deadline).max(later(now, by));
        }
    }

    /// When `not-ready` fires; `None` once ready or without `--ready-timeout`.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.filter(|_| self.ready_at.is_none())
    }

    /// `not-ready` is due at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|deadline| now >= deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn timing(interval: u64, start_interval: u64, start_period: u64, retries: u32) -> HealthTiming {
        HealthTiming {
            interval: ms(interval),
            start_interval: ms(start_interval),
            start_period: ms(start_period),
            timeout: ms(500),
            retries,
        }
    }

    /// Runs a check from `at` for `took` with result `ok`, as the machine would.
    fn check(s: &mut HealthSchedule, at: Instant, took: u64, ok: bool) -> Verdict {
        assert_eq!(s.next_check(), Some(at), "the check runs when it is due");
        let deadline = s.check_started(at);
        assert_eq!(deadline, at + ms(500));
        assert_eq!(s.next_check(), None, "no check is due while one runs");
        s.check_ended(at + ms(took), ok)
    }

    #[test]
    fn without_a_start_period_every_failure_counts() {
        let t0 = Instant::now();
        let mut s = HealthSchedule::new(timing(10_000, 1_000, 0, 3), t0);
        assert_eq!(s.next_check(), Some(t0 + ms(10_000)));
        let v = check(&mut s, t0 + ms(10_000), 100, false);
        assert_eq!((v.failures, v.counted, v.unhealthy), (1, 1, false));
        assert_eq!(v.next_at, t0 + ms(20_100), "the interval runs from the end of the check");
        let v = check(&mut s, v.next_at, 100, false);
        assert_eq!((v.failures, v.counted, v.unhealthy), (2, 2, false));
        let v = check(&mut s, v.next_at, 500, false);
        assert_eq!((v.failures, v.counted, v.unhealthy), (3, 3, true));
        let v = check(&mut s, v.next_at, 0, false);
        assert!(v.unhealthy, "still unhealthy on the next counted failure");
        let v = check(&mut s, v.next_at, 0, true);
        assert_eq!(
            (v.ok, v.failures, v.counted, v.unhealthy, v.first_pass),
            (true, 0, 0, false, true)
        );
        assert_eq!(s.last_ok(), Some(true));
    }

    #[test]
    fn start_period_checks_run_fast_and_failures_do_not_count() {
        let t0 = Instant::now();
        // Docker: --interval 5s --start-period 10s --start-interval 1s --retries 2.
        let mut s = HealthSchedule::new(timing(5_000, 1_000, 10_000, 2), t0);
        assert_eq!(s.next_check(), Some(t0 + ms(1_000)));
        let mut at = t0 + ms(1_000);
        for n in 1..=4 {
            let v = check(&mut s, at, 200, false);
            assert_eq!((v.failures, v.counted, v.unhealthy), (n, 0, false));
            assert_eq!(v.next_at, at + ms(1_200), "start interval during the period");
            at = v.next_at;
        }
        // The first pass ends the period early and switches to the normal interval.
        let v = check(&mut s, at, 200, true);
        assert!(v.first_pass && v.ok);
        assert_eq!(v.next_at, at + ms(5_200));
        assert!(!s.in_start_period(at + ms(300)));
        // Now, still inside the period's time, failures count.
        let v = check(&mut s, v.next_at, 0, false);
        assert_eq!((v.counted, v.unhealthy), (1, false));
        let v = check(&mut s, v.next_at, 0, false);
        assert_eq!((v.counted, v.unhealthy, v.first_pass), (2, true, false));
    }

    #[test]
    fn when_the_period_runs_out_failures_start_counting() {
        let t0 = Instant::now();
        let mut s = HealthSchedule::new(timing(5_000, 1_000, 3_000, 1), t0);
        let v = check(&mut s, t0 + ms(1_000), 100, false);
        assert_eq!(v.counted, 0);
        // Starts inside the period (2.1s), ends after it (3.5s): judged by its start.
        let v = check(&mut s, v.next_at, 1_400, false);
        assert_eq!((v.failures, v.counted, v.unhealthy), (2, 0, false));
        assert_eq!(v.next_at, t0 + ms(8_500), "after the period, the normal interval");
        let v = check(&mut s, v.next_at, 100, false);
        assert_eq!((v.failures, v.counted, v.unhealthy), (3, 1, true));
    }

    #[test]
    fn a_check_that_starts_exactly_at_the_end_of_the_period_counts() {
        let t0 = Instant::now();
        let mut s = HealthSchedule::new(timing(5_000, 1_000, 1_000, 1), t0);
        let v = check(&mut s, t0 + ms(1_000), 0, false);
        assert!(v.unhealthy);
    }

    #[test]
    fn starting_twice_keeps_the_first_deadline() {
        let t0 = Instant::now();
        let mut s = HealthSchedule::new(HealthTiming::default(), t0);
        assert_eq!(s.check_started(t0), t0 + ms(5_000));
        assert_eq!(s.check_started(t0 + ms(10)), t0 + ms(5_000));
        // An end without a start (a confused caller) is judged as a check of no length.
        let v = s.check_ended(t0 + ms(20), false);
        let v2 = s.check_ended(t0 + ms(30), false);
        assert_eq!((v.failures, v2.failures), (1, 2));
    }

    #[test]
    fn huge_durations_mean_forever_without_overflow() {
        let t0 = Instant::now();
        let forever = Duration::from_secs(u64::MAX);
        let t = HealthTiming {
            interval: forever,
            start_interval: forever,
            start_period: forever,
            timeout: forever,
            retries: 1,
        };
        let mut s = HealthSchedule::new(t, t0);
        assert!(s.next_check().unwrap() > t0 + Duration::from_secs(86_400 * 365));
        assert!(s.check_started(t0) > t0);
        let v = s.check_ended(t0, false);
        assert_eq!(v.counted, 0);
        let mut r = Readiness::new(ReadyBy::Health, t0, Some(forever));
        r.extend(t0, forever);
        assert!(!r.expired(t0 + Duration::from_secs(86_400)));
    }

    /// The schedule, recomputed from the whole history the way SPEC words it.
    fn reference(
        t: &HealthTiming,
        t0: Instant,
        history: &[(Instant, Instant, bool)],
    ) -> (u32, u32, Instant) {
        let period_end = t0 + t.start_period;
        let trailing_failures = history.iter().rev().take_while(|c| !c.2).count() as u32;
        let counts = |i: usize| {
            let passed_before = history[..i].iter().any(|c| c.2);
            !history[i].2 && (passed_before || history[i].0 >= period_end)
        };
        let counted =
            (0..history.len()).rev().take_while(|&i| !history[i].2 && counts(i)).count() as u32;
        let &(_, end, _) = history.last().unwrap();
        let passed = history.iter().any(|c| c.2);
        let gap = if !passed && end < period_end { t.start_interval } else { t.interval };
        (trailing_failures, counted, end + gap)
    }

    proptest! {
        #[test]
        fn matches_the_reference_on_any_history(
            interval in 1u64..3_000,
            start_interval in 1u64..1_000,
            start_period in prop_oneof![Just(0u64), 1u64..6_000],
            retries in 1u32..5,
            checks in proptest::collection::vec((any::<bool>(), 0u64..500), 1..24),
        ) {
            let t = timing(interval, start_interval, start_period, retries);
            let t0 = Instant::now();
            let mut s = HealthSchedule::new(t, t0);
            let first = if start_period == 0 { interval } else { start_interval };
            prop_assert_eq!(s.next_check(), Some(t0 + ms(first)));
            let mut history = Vec::new();
            let mut ready = None;
            for (ok, took) in checks {
                let at = s.next_check().unwrap();
                s.check_started(at);
                let end = at + ms(took);
                let v = s.check_ended(end, ok);
                history.push((at, end, ok));
                let (failures, counted, next) = reference(&t, t0, &history);
                prop_assert_eq!(v.failures, failures);
                prop_assert_eq!(v.counted, counted);
                prop_assert_eq!(v.unhealthy, counted >= retries);
                prop_assert_eq!(v.next_at, next);
                prop_assert!(v.counted <= v.failures);
                if v.first_pass {
                    prop_assert!(ready.is_none(), "first_pass twice");
                    ready = Some(end);
                }
                prop_assert_eq!(ready.is_some(), history.iter().any(|c| c.2));
            }
        }
    }

    #[test]
    fn ready_by_the_awaited_source_only_and_once() {
        assert_eq!(ReadyBy::awaited(true, true), ReadyBy::Health);
        assert_eq!(ReadyBy::awaited(false, true), ReadyBy::Notify);
        assert_eq!(ReadyBy::awaited(false, false), ReadyBy::Start);
        let t0 = Instant::now();
        let mut r = Readiness::new(ReadyBy::Health, t0, Some(ms(30_000)));
        assert_eq!(r.deadline(), Some(t0 + ms(30_000)));
        assert_eq!(
            r.on(ReadyBy::Notify, t0 + ms(5)),
            None,
            "READY=1 does not count with a health check"
        );
        assert_eq!(r.on(ReadyBy::Start, t0), None);
        assert!(!r.is_ready());
        assert_eq!(
            r.on(ReadyBy::Health, t0 + ms(1_500)),
            Some(Ready { by: ReadyBy::Health, after: ms(1_500) })
        );
        assert_eq!(r.on(ReadyBy::Health, t0 + ms(2_000)), None, "ready once");
        assert!(r.is_ready() && r.deadline().is_none() && !r.expired(t0 + ms(60_000)));

        let mut r = Readiness::new(ReadyBy::Start, t0, None);
        assert_eq!(
            r.on(ReadyBy::Start, t0),
            Some(Ready { by: ReadyBy::Start, after: Duration::ZERO })
        );
        assert_eq!(ReadyBy::Notify.name(), "notify");
    }

    #[test]
    fn ready_timeout_fires_and_extends_until_ready() {
        let t0 = Instant::now();
        let mut r = Readiness::new(ReadyBy::Notify, t0, Some(ms(10_000)));
        assert!(!r.expired(t0 + ms(9_999)) && r.expired(t0 + ms(10_000)));
        // EXTEND_TIMEOUT_USEC: no sooner than N from now; a shorter one never shortens it.
        r.extend(t0 + ms(8_000), ms(5_000));
        assert_eq!(r.deadline(), Some(t0 + ms(13_000)));
        r.extend(t0 + ms(9_000), ms(1_000));
        assert_eq!(r.deadline(), Some(t0 + ms(13_000)));
        assert!(!r.expired(t0 + ms(12_000)));
        r.on(ReadyBy::Notify, t0 + ms(12_000));
        r.extend(t0 + ms(12_500), ms(60_000));
        assert_eq!(r.deadline(), None);
        // Zero or no --ready-timeout: never fires, and extending does not invent one.
        for timeout in [None, Some(Duration::ZERO)] {
            let mut r = Readiness::new(ReadyBy::Notify, t0, timeout);
            r.extend(t0, ms(1));
            assert!(r.deadline().is_none() && !r.expired(t0 + ms(1_000_000)));
        }
    }
}
