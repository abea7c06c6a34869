//! The supervisor: one thread, one `poll` over a signalfd, woken only by signals and by the
//! next deadline (probe, timeout, end of grace). It spawns the command, forwards signals, reaps
//! every child, feeds probes to the policy and walks the drain ladder:
//! Running → Draining{kill_at} → Killing{final_at} → done.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cli::{ForwardTo, StopScope};
use crate::config::Config;
use crate::exit::{self, ChildEnd, Outcome};
use crate::policy::{Limits, Policy, Reason, Trigger};
use crate::probe::{Prober, Sample, Sampler};
use crate::report::{self, Event, Metrics, Reporter};
use crate::signals::{
    self, SIGCHLD, SIGCONT, SIGKILL, SIGPIPE, SIGSTOP, SIGTTIN, SIGTTOU, SigSet, Signal,
};
use crate::spawn::{self, Inherited, SpawnError};
use crate::tree;

/// How long watchd waits for killed leftovers (not the main child) to be reaped before it
/// gives up on them: only a process stuck in uninterruptible sleep takes this long.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Kill rounds: rescans while a fork storm keeps adding processes.
const KILL_ROUNDS: u32 = 20;

/// Where the drain ladder stands.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// No limit has fired and the main child runs, or it exited with nothing left behind yet.
    Running,
    /// The stop signal (or --stop-cmd) went out; the kill signal follows at `kill_at`.
    Draining { kill_at: Instant },
    /// The kill signal went out. If it was not SIGKILL, SIGKILL follows at `final_at`.
    Killing { final_at: Option<Instant>, give_up_at: Instant },
}

/// Why and when watchd stopped the command.
struct Stopped {
    reason: Reason,
    at: Instant,
    how: String,
}

/// Runs the command to its end. `inherited` is the signal state watchd was started with.
pub fn run(config: Config, inherited: Inherited) -> Result<Outcome> {
    let events = match &config.events {
        Some(path) => Some(report::open_events(path).with_context(|| {
            format!("invalid value '{}' for '--events <PATH>'", path.display())
        })?),
        None => None,
    };
    let reporter = Reporter::new(config.verbosity, events, config.metrics_file.clone());

    // Every signal watchd handles is blocked and read from a signalfd: no handlers run, so the
    // child's dispositions are untouched, and PID 1 still receives them (blocked signals are
    // queued even for init). Signals ignored at start stay ignored and are not forwarded.
    let mut handled = SigSet::empty();
    for sig in signals::forwarded().filter(|&s| !signals::is_ignored(s)) {
        handled.add(sig);
    }
    handled.add(SIGCHLD);
    if inherited.sigchld_ignored {
        // With SIGCHLD ignored the kernel reaps children itself and their status is lost.
        signals::set_default(SIGCHLD);
    }
    let mut blocked = handled;
    // Writing to a terminal from the background, or to a closed pipe, must not stop or kill
    // watchd; tcsetpgrp from the child before exec needs SIGTTOU blocked too.
    for sig in [SIGTTIN, SIGTTOU, SIGPIPE] {
        blocked.add(sig);
    }
    blocked.block();
    // SAFETY: `handled` is an initialised set; the descriptor is owned by the Supervisor.
    let sigfd =
        unsafe { libc::signalfd(-1, handled.as_ptr(), libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if sigfd < 0 {
        return Err(std::io::Error::last_os_error()).context("cannot create a signalfd");
    }

    // SAFETY: getpid has no preconditions.
    let self_pid = unsafe { libc::getpid() };
    let pid1 = self_pid == 1;
    if config.subreaper && !pid1 {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes a plain integer flag.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
            reporter.warn(format!(
                "cannot become a child subreaper ({}); orphans will escape the tree",
                std::io::Error::last_os_error()
            ));
        }
    }
    let foreground = terminal_is_ours();

    let prober = Prober::new(self_pid);
    let limits = Limits {
        stall: config.stall,
        evidence_cpu: config.evidence_cpu,
        evidence_io: config.evidence_io,
        min_cpu: config.min_cpu,
        timeout: config.timeout,
        cpu_limit: config.cpu_limit,
        cpu_soft: config.cpu_soft,
        cpu_soft_for: config.cpu_soft_for,
        cpu_hard: config.cpu_hard,
        max_rss: config.max_rss,
        clk_tck: prober.clk_tck(),
    };
    let oom_before = crate::probe::OomCounters::read();
    let started = Instant::now();
    let options = spawn::Options { inherited, foreground, pdeathsig: config.pdeathsig };
    let main_pid = match spawn::spawn(&config.command, &options) {
        Ok(pid) => pid,
        Err(err) => {
            // Bad input: shown even with -q, like a usage error.
            report::usage_error(err.to_string());
            return Ok(Outcome::Code(match err {
                SpawnError::NotFound(_) => exit::NOT_FOUND,
                SpawnError::NotExecutable(_) => exit::NOT_EXECUTABLE,
                SpawnError::Internal(_) => exit::FAILURE,
            }));
        }
    };

    let mut sup = Supervisor {
        interval: config.interval,
        config,
        inherited,
        started,
        sigfd,
        pid1,
        main_pid,
        main_end: None,
        phase: Phase::Running,
        stopped: None,
        sent_to_main: SigSet::empty(),
        stop_cmd_pid: None,
        oom_before,
        prober,
        sampler: Sampler::new(),
        policy: Policy::new(limits),
        reporter,
        last_sample: None,
        stops_total: [0; 5],
        next_probe: started,
        interrupted: false,
        no_children: false,
        chld_pending: false,
        tree_stopped: false,
    };
    sup.start();
    Ok(sup.run())
}

/// Whether stdin is watchd's controlling terminal, whoever is in its foreground: job control
/// applies (a job started with `&` is on it too).
fn on_our_terminal() -> bool {
    // SAFETY: isatty, tcgetsid and getsid only query.
    unsafe {
        libc::isatty(libc::STDIN_FILENO) == 1
            && libc::tcgetsid(libc::STDIN_FILENO) == libc::getsid(0)
    }
}

/// Whether stdin is a terminal whose foreground group is watchd's own: only then does the
/// child get the terminal (a background watchd must not steal it from the shell).
fn terminal_is_ours() -> bool {
    // SAFETY: isatty, tcgetpgrp and getpgrp only query.
    unsafe {
        libc::isatty(libc::STDIN_FILENO) == 1
            && libc::tcgetpgrp(libc::STDIN_FILENO) == libc::getpgrp()
    }
}

struct Supervisor {
    config: Config,
    interval: Duration,
    inherited: Inherited,
    started: Instant,
    sigfd: libc::c_int,
    pid1: bool,
    main_pid: i32,
    main_end: Option<(ChildEnd, Instant)>,
    phase: Phase,
    stopped: Option<Stopped>,
    /// Signals watchd itself delivered to the main child, to tell a surprise death from one
    /// watchd caused.
    sent_to_main: SigSet,
    stop_cmd_pid: Option<i32>,
    /// The OOM killer's counters before the command started.
    oom_before: crate::probe::OomCounters,
    prober: Prober,
    sampler: Sampler,
    policy: Policy,
    reporter: Reporter,
    last_sample: Option<Sample>,
    stops_total: [u64; 5],
    next_probe: Instant,
    /// watchd was stopped (job control) since the last probe: that window proves nothing.
    interrupted: bool,
    /// waitpid said ECHILD: nothing of the tree is left.
    no_children: bool,
    /// A SIGCHLD was read: children to reap.
    chld_pending: bool,
    /// The stop signal already went to every member of the tree.
    tree_stopped: bool,
}

impl Supervisor {
    fn start(&mut self) {
        let argv = &self.config.command;
        self.reporter.info(format!(
            "started {} as pid {}",
            argv.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "),
            self.main_pid
        ));
        self.reporter.event(&Event::Start { pid: self.main_pid, argv });
        self.next_probe = self.started + self.interval;
    }

    fn run(mut self) -> Outcome {
        // Reaping waits for a SIGCHLD, or a timer wake-up (a probe or a deadline) as a safety
        // net, so forwarding a signal costs no wait4.
        let mut reap_due = true;
        loop {
            let was_running = self.main_end.is_none();
            if std::mem::take(&mut reap_due) | std::mem::take(&mut self.chld_pending) {
                self.reap();
            }
            let now = Instant::now();
            if self.main_end.is_some() && self.done(now) {
                return self.finish();
            }
            if was_running && self.main_end.is_some() {
                self.start_cleanup(now);
            }
            self.on_time(now);
            if self.main_end.is_some() && self.done(Instant::now()) {
                return self.finish();
            }
            reap_due = self.wait(self.next_deadline());
            self.read_signals();
        }
    }

    fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    fn exclude(&self) -> Vec<i32> {
        self.stop_cmd_pid.into_iter().collect()
    }

    /// Whether watchd can exit: the main child has ended and nothing of the tree is left (or
    /// cleanup is off, or the leftovers would not die).
    fn done(&self, now: Instant) -> bool {
        !self.config.cleanup
            || self.no_children
            || matches!(self.phase, Phase::Killing { give_up_at, final_at: None } if now >= give_up_at)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut deadline: Option<Instant> = None;
        let mut consider = |t: Instant| deadline = Some(deadline.map_or(t, |d| d.min(t)));
        if self.main_end.is_none() {
            consider(self.next_probe);
            if let (Phase::Running, Some(at)) = (self.phase, self.policy.timeout_at()) {
                consider(self.started + at);
            }
        }
        match self.phase {
            Phase::Running => {}
            Phase::Draining { kill_at } => consider(kill_at),
            Phase::Killing { final_at: Some(t), .. } => consider(t),
            Phase::Killing { final_at: None, give_up_at } => consider(give_up_at),
        }
        deadline
    }

    /// Sleeps in the kernel until a signal arrives or `deadline` passes; true if it passed.
    fn wait(&self, deadline: Option<Instant>) -> bool {
        let timeout_ms = match deadline {
            None => -1,
            Some(t) => {
                let left = t.saturating_duration_since(Instant::now());
                // Round up: waking a hair early would spin until the deadline.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            }
        };
        let mut fds = [libc::pollfd { fd: self.sigfd, events: libc::POLLIN, revents: 0 }];
        // SAFETY: `fds` is a valid array of one pollfd; EINTR is just an early wake-up.
        unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout_ms) == 0 }
    }

    fn read_signals(&mut self) {
        const BATCH: usize = 16;
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        loop {
            // SAFETY: signalfd_siginfo is plain old data; all-zero is a valid value.
            let mut infos: [libc::signalfd_siginfo; BATCH] = unsafe { std::mem::zeroed() };
            // SAFETY: reading at most the size of `infos` into it.
            let n = unsafe { libc::read(self.sigfd, infos.as_mut_ptr().cast(), size * BATCH) };
            if n <= 0 {
                return; // EAGAIN: drained (EINTR: the next wake-up reads the rest)
            }
            let count = n as usize / size;
            for info in &infos[..count] {
                let Some(sig) = Signal::from_raw(info.ssi_signo as i32) else { continue };
                match sig {
                    SIGCHLD => self.chld_pending = true,
                    _ => {
                        if sig == SIGCONT {
                            // A shell that sends SIGCONT with `fg` of a running job (`bg`, `&`)
                            // has just given watchd's group the terminal.
                            self.hand_terminal_to_child();
                        }
                        self.forward(sig);
                    }
                }
            }
            if count < BATCH {
                return; // a signalfd read returns all that is pending, up to the buffer
            }
        }
    }

    fn forward(&mut self, sig: Signal) {
        if self.main_end.is_some() {
            return; // the main child is gone; what is left is being cleaned up
        }
        let (sent, to) = match self.config.forward_to {
            // SAFETY: main_pid is our unreaped child (> 1), so the pid cannot have been reused.
            ForwardTo::Child => (unsafe { libc::kill(self.main_pid, sig.as_raw()) } == 0, "child"),
            // SAFETY: while the main child is unreaped its pid names its own process group.
            ForwardTo::Group => (unsafe { libc::kill(-self.main_pid, sig.as_raw()) } == 0, "group"),
            ForwardTo::Tree => {
                let exclude = self.exclude();
                (tree::signal_all(&mut self.prober, &exclude, None, sig, false, 1) > 0, "tree")
            }
        };
        if sent {
            self.sent_to_main.add(sig);
            if !self.reporter.wants_details() {
                return;
            }
            let name = sig.to_string();
            self.reporter.info(format!("forwarded {name} to the {to}"));
            self.reporter.event(&Event::Signal { signal: &name, to });
        }
    }

    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes the status of one of our children into `status`.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::WUNTRACED) };
            if pid == 0 {
                return;
            }
            if pid < 0 {
                match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ECHILD) => self.no_children = true,
                    _ => {}
                }
                return;
            }
            if libc::WIFSTOPPED(status) {
                if pid == self.main_pid && self.main_end.is_none() {
                    self.on_main_stopped(libc::WSTOPSIG(status));
                }
                continue;
            }
            let Some(end) = ChildEnd::from_wait_status(status) else {
                continue;
            };
            let end_text = end.to_string();
            self.reporter.event(&Event::Reap { pid, status: &end_text });
            if pid == self.main_pid {
                self.on_main_end(end);
            } else if Some(pid) == self.stop_cmd_pid {
                self.stop_cmd_pid = None;
                if end != ChildEnd::Exited(0) {
                    self.reporter
                        .warn(format!("--stop-cmd failed: it {end_text}; the grace still runs"));
                }
            } else {
                self.reporter.info(format!("reaped orphan {pid} ({end_text})"));
            }
        }
    }

    /// Job control: the child was stopped (Ctrl-Z, SIGTTIN, SIGSTOP). On a terminal watchd
    /// stops too, so the shell sees the job stopped and gets its prompt back.
    fn on_main_stopped(&mut self, raw: i32) {
        // Not only when watchd started in the foreground: a job started with `&` whose child
        // reads the terminal is stopped by SIGTTIN, and the shell must see the job stopped, or
        // `fg` hangs.
        if !on_our_terminal() || self.pid1 {
            return;
        }
        let sig = Signal::from_raw(raw).unwrap_or(SIGSTOP);
        if (sig == SIGTTIN || sig == SIGTTOU) && self.hand_terminal_to_child() {
            // The child touched the terminal while watchd's group was its foreground group:
            // the shell made the job foreground without a signal (bash's `fg` of a job running
            // in the background). Without watchd the child's group would own the terminal, so
            // it gets it now and goes on; the shell sees no stop.
            // SAFETY: the main child is unreaped, so its pid names its group.
            unsafe { libc::kill(-self.main_pid, SIGCONT.as_raw()) };
            return;
        }
        let stop_with =
            if [signals::SIGTSTP, SIGTTIN, SIGTTOU].contains(&sig) && !signals::is_ignored(sig) {
                sig
            } else {
                SIGSTOP
            };
        let mut only = SigSet::empty();
        only.add(stop_with);
        // SAFETY: signalling ourselves. A stop signal is pending once kill returns; unblocking
        // delivers it and this thread stops right here until SIGCONT.
        unsafe { libc::kill(libc::getpid(), stop_with.as_raw()) };
        only.unblock();
        only.block();
        self.interrupted = true;
        // We are running again (fg or bg): drop the SIGCONT that woke us so the child does not
        // get it twice, give the terminal back if the shell gave it to us, and resume the
        // child's whole group, as a shell resumes a job.
        let mut cont = SigSet::empty();
        cont.add(SIGCONT);
        let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: sigtimedwait with a zero timeout only dequeues a pending SIGCONT, if any.
        unsafe { libc::sigtimedwait(cont.as_ptr(), std::ptr::null_mut(), &zero) };
        self.hand_terminal_to_child();
        // SAFETY: kill(-pgid) names the main child's group, which exists while the main child
        // is unreaped.
        unsafe { libc::kill(-self.main_pid, SIGCONT.as_raw()) };
    }

    /// If the shell has given watchd's group the terminal (`fg`), passes it on to the child's
    /// group, which the shell would have made foreground without watchd. Returns whether it
    /// did.
    fn hand_terminal_to_child(&self) -> bool {
        if self.pid1 || self.main_end.is_some() {
            return false;
        }
        // SAFETY: terminal calls on stdin with SIGTTOU blocked; the main child is unreaped, so
        // its pid names its process group.
        unsafe {
            libc::isatty(libc::STDIN_FILENO) == 1
                && libc::tcgetpgrp(libc::STDIN_FILENO) == libc::getpgrp()
                && libc::tcsetpgrp(libc::STDIN_FILENO, self.main_pid) == 0
        }
    }

    fn on_main_end(&mut self, end: ChildEnd) {
        self.main_end = Some((end, Instant::now()));
        if let Some(pid) = self.stop_cmd_pid {
            // Its job was to stop the main child, which is over.
            // SAFETY: our own unreaped child, so the pid is still its.
            unsafe { libc::kill(pid, SIGKILL.as_raw()) };
        }
    }

    /// After the main child ended: what is left of the tree gets the stop signal and the grace
    /// starts. Called once the reap loop has run dry, so when nothing is left (ECHILD) there is
    /// no /proc scan at all.
    fn start_cleanup(&mut self, now: Instant) {
        if !self.config.cleanup || self.no_children {
            return;
        }
        match self.phase {
            Phase::Running => {
                self.stop_leftovers();
                self.phase = Phase::Draining { kill_at: now + self.config.grace };
            }
            Phase::Draining { .. } if !self.tree_stopped => self.stop_leftovers(),
            _ => {}
        }
    }

    /// What is left of the tree after the main child exited gets the stop signal.
    fn stop_leftovers(&mut self) {
        let sig = self.config.stop_signal;
        let exclude = self.exclude();
        let n = tree::signal_all(&mut self.prober, &exclude, None, sig, true, 1);
        self.tree_stopped = true;
        if n > 0 {
            self.reporter.info(format!("sent {sig} to {n} leftover processes"));
        }
    }

    fn on_time(&mut self, now: Instant) {
        if self.main_end.is_none() {
            if self.phase == Phase::Running
                && let Some(trigger) = self.policy.check_timeout(self.elapsed(now))
            {
                self.trigger(trigger, now);
            }
            if now >= self.next_probe {
                self.probe(now);
            }
        }
        match self.phase {
            Phase::Running => {}
            Phase::Draining { kill_at } if now >= kill_at => self.kill(now),
            Phase::Draining { .. } => {}
            Phase::Killing { final_at: Some(t), give_up_at } if now >= t => {
                tree::signal_all(&mut self.prober, &[], None, SIGKILL, false, KILL_ROUNDS);
                self.phase =
                    Phase::Killing { final_at: None, give_up_at: give_up_at.max(now + KILL_WAIT) };
            }
            Phase::Killing { .. } => {}
        }
    }

    fn probe(&mut self, now: Instant) {
        // Samples are stamped with the cadence tick they belong to, not the instant the poll
        // happened to wake: windows are then exact multiples of the interval, and a stall
        // window of N intervals fires at the Nth tick, not one interval later because the
        // baseline probe woke a millisecond late. Ticks missed (slow scan, watchd stopped)
        // are skipped.
        let behind =
            now.saturating_duration_since(self.next_probe).as_nanos() / self.interval.as_nanos();
        let tick = u32::try_from(behind)
            .ok()
            .and_then(|n| self.interval.checked_mul(n))
            .map_or(now, |skip| self.next_probe + skip);
        self.next_probe = tick + self.interval;
        let scan = self.prober.scan(&self.exclude());
        let sample = self.sampler.sample(&scan, self.elapsed(tick));
        let interrupted = std::mem::take(&mut self.interrupted);
        let trigger = self.policy.observe(&sample, interrupted);
        let clk_tck = self.prober.clk_tck() as f64;
        let cpu_seconds = sample.cpu_ticks as f64 / clk_tck;
        let since = self.policy.since_progress().as_secs_f64();
        self.reporter.event(&Event::Sample {
            cpu_cores: self.policy.cpu_cores(),
            cpu_seconds,
            io_bytes: sample.io_bytes,
            rss_bytes: sample.rss_bytes,
            processes: sample.processes,
            since_progress_s: since,
        });
        self.last_sample = Some(sample);
        if let Some(trigger) = trigger {
            self.trigger(trigger, now);
        }
        // After the trigger, so a stop shows in watchd_stops_total the moment it happens.
        self.write_metrics(&sample, cpu_seconds, since);
    }

    fn write_metrics(&mut self, sample: &Sample, cpu_seconds: f64, since: f64) {
        let stops_total = std::array::from_fn(|i| (Reason::ALL[i].as_str(), self.stops_total[i]));
        self.reporter.metrics(&Metrics {
            cpu_cores: self.policy.cpu_cores().unwrap_or(0.0),
            cpu_seconds_total: cpu_seconds,
            io_bytes_total: sample.io_bytes,
            rss_bytes: sample.rss_bytes,
            processes: sample.processes,
            seconds_since_progress: since,
            stops_total,
        });
    }

    /// A limit fired: say why, then send the stop signal (or run --stop-cmd) and start the grace.
    fn trigger(&mut self, trigger: Trigger, now: Instant) {
        let reason = trigger.reason;
        self.reporter.event(&Event::Trigger { reason: reason.as_str(), detail: &trigger.detail });
        if self.phase != Phase::Running {
            return; // a second trigger does not restart the grace
        }
        if let Some(index) = Reason::ALL.iter().position(|&r| r == reason) {
            self.stops_total[index] += 1;
        }
        let grace = self.config.grace;
        let kill = self.config.kill_signal;
        let grace_text = crate::units::human_duration(grace);
        let how = match &self.config.stop_cmd {
            Some(_) => "--stop-cmd".to_string(),
            None => self.config.stop_signal.to_string(),
        };
        let action = match &self.config.stop_cmd {
            Some(_) => "running --stop-cmd".to_string(),
            None => format!("sending {how}"),
        };
        self.reporter.warn(format!(
            "{}: {}; {action}, {kill} in {grace_text}",
            reason.as_str(),
            trigger.detail
        ));
        self.stopped = Some(Stopped { reason, at: now, how: how.clone() });
        if let Some(cmd) = self.config.stop_cmd.clone() {
            self.reporter.event(&Event::Stop {
                signal: None,
                cmd: Some(&cmd),
                grace_s: grace.as_secs_f64(),
            });
            match spawn::spawn_shell(&cmd, self.main_pid, &self.inherited) {
                Ok(pid) => self.stop_cmd_pid = Some(pid),
                Err(err) => {
                    self.reporter.warn(format!("--stop-cmd failed: {err}; the grace still runs"))
                }
            }
        } else {
            let sig = self.config.stop_signal;
            self.reporter.event(&Event::Stop {
                signal: Some(&how),
                cmd: None,
                grace_s: grace.as_secs_f64(),
            });
            // The main child gets it directly, exactly once (many programs take a second
            // SIGTERM or SIGINT as "quit now"): it is our unreaped child, so this is safe even
            // if a scan would miss it. Then the rest of the tree, if the scope says so.
            // SAFETY: main_pid > 1 is our unreaped child.
            unsafe {
                libc::kill(self.main_pid, sig.as_raw());
                libc::kill(self.main_pid, SIGCONT.as_raw());
            }
            self.sent_to_main.add(sig);
            if self.config.stop_scope == StopScope::Tree {
                let exclude = self.exclude();
                tree::signal_all(&mut self.prober, &exclude, Some(self.main_pid), sig, true, 1);
                self.tree_stopped = true;
            }
        }
        self.phase = Phase::Draining { kill_at: now + grace };
    }

    /// The grace ran out: the kill signal to everything still in the tree.
    fn kill(&mut self, now: Instant) {
        let sig = self.config.kill_signal;
        let mut n = 0;
        let main = self.main_end.is_none().then_some(self.main_pid);
        if let Some(pid) = main {
            // SAFETY: main_pid > 1 is our unreaped child.
            if unsafe { libc::kill(pid, sig.as_raw()) } == 0 {
                n += 1;
            }
            self.sent_to_main.add(sig);
        }
        n += tree::signal_all(&mut self.prober, &[], main, sig, false, KILL_ROUNDS);
        let name = sig.to_string();
        self.reporter.event(&Event::Kill { signal: &name, processes: n });
        if n > 0 && self.stopped.is_none() {
            self.reporter.warn(format!(
                "{n} processes left by the child outlived the {} grace; sent {name}",
                crate::units::human_duration(self.config.grace)
            ));
        }
        let final_at = (sig != SIGKILL).then(|| now + self.config.grace);
        self.phase = Phase::Killing { final_at, give_up_at: now + KILL_WAIT };
    }

    /// The last word: the exit line, the event, and the status watchd leaves with.
    fn finish(mut self) -> Outcome {
        let (end, ended_at) =
            self.main_end.expect("finish is only called after the main child ended");
        // SAFETY: isatty only queries.
        if unsafe { libc::isatty(libc::STDIN_FILENO) } == 1 {
            // Whoever handed it to the child (at start or on `fg`): give the terminal back to
            // the group that had it, so a non-interactive parent (a script) is not left in the
            // background.
            // SAFETY: terminal calls on stdin with SIGTTOU blocked.
            unsafe {
                if libc::tcgetpgrp(libc::STDIN_FILENO) == self.main_pid {
                    libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
                }
            }
        }
        let duration = ended_at.saturating_duration_since(self.started);
        let mut diagnosis = None;
        let reason = self.stopped.as_ref().map(|s| s.reason.as_str());
        if let Some(stopped) = &self.stopped {
            let after =
                crate::units::human_duration(ended_at.saturating_duration_since(stopped.at));
            let how = match end {
                ChildEnd::Killed(sig) if sig == self.config.kill_signal || sig == SIGKILL => {
                    format!(
                        "child killed by {sig} at the end of the {} grace",
                        crate::units::human_duration(self.config.grace)
                    )
                }
                _ => format!("child {end} {after} after {}", stopped.how),
            };
            self.reporter.warn(format!("{}: {how}", stopped.reason.as_str()));
        } else if let ChildEnd::Killed(sig) = end {
            // A shell is silent when a job dies of SIGINT (Ctrl-C) or SIGPIPE (`| head`), and so
            // is watchd; any other surprise death is explained.
            if !self.sent_to_main.contains(sig) && sig != signals::SIGINT && sig != SIGPIPE {
                let oom = (sig == SIGKILL)
                    .then(|| crate::probe::OomCounters::read().rise_since(&self.oom_before))
                    .flatten();
                let last = self.last_sample.as_ref().map(|s| exit::LastSeen {
                    rss_bytes: s.rss_bytes,
                    cpu_cores: self.policy.cpu_cores(),
                    processes: s.processes,
                    since_progress: self.policy.since_progress(),
                });
                let text = exit::diagnose(sig, oom.as_deref(), last.as_ref());
                self.reporter.warn(&text);
                diagnosis = Some(text);
            }
        }
        self.reporter.info(format!("child {end} after {}", crate::units::human_duration(duration)));
        let (code, signal) = match end {
            ChildEnd::Exited(code) => (Some(i32::from(code)), None),
            ChildEnd::Killed(sig) => (None, Some(sig.to_string())),
        };
        let outcome =
            exit::outcome(end, self.stopped.is_some(), self.config.exit_code_on_stop, self.pid1);
        self.reporter.event(&Event::Exit {
            code,
            signal: signal.as_deref(),
            reason,
            duration_s: duration.as_secs_f64(),
            diagnosis: diagnosis.as_deref(),
        });
        outcome
    }
}
