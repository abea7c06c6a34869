//! The driver: watchd's one loop. It sleeps in `poll` on a signalfd until a signal arrives or
//! the machine's next deadline passes, turns what the kernel says (signals, reaped children,
//! /proc scans) into [`machine::Event`]s, and carries out the [`machine::Action`]s that come
//! back. It decides nothing: every "whether" and "when" is the machine's.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::cli::{ForwardTo, StopScope};
use crate::config::Config;
use crate::exit::{ChildEnd, Ending, Outcome};
use crate::machine::{Action, AfterTerminal, Event, Incoming, Machine, Reap, Settings};
use crate::policy::Policy;
use crate::probe::{OomCounters, Prober, ProcView, Sample, Sampler};
use crate::report::{self, Reporter};
use crate::signals::{
    self, SIGCHLD, SIGCONT, SIGKILL, SIGPIPE, SIGTTIN, SIGTTOU, Signal, SignalSet,
};
use crate::spawn::{self, Inherited};
use crate::sys::{self, SigSet, Wait};
use crate::tree;

/// Most signals read from the signalfd per turn of the loop: a flood is forwarded in batches,
/// with reaping and deadlines in between.
const SIGNAL_BATCH: usize = 1024;

/// Runs the command to its end. `inherited` is the signal state watchd was started with.
pub fn run(config: Config, inherited: Inherited) -> Result<Outcome> {
    let events = match &config.events {
        Some(path) => Some(report::open_events(path).with_context(|| {
            format!("invalid value '{}' for '--events <PATH>'", path.display())
        })?),
        None => None,
    };
    let metrics = match &config.metrics_file {
        Some(path) => Some(report::MetricsFile::new(path).map_err(|err| {
            anyhow::anyhow!("invalid value '{}' for '--metrics-file <PATH>': {err}", path.display())
        })?),
        None => None,
    };
    let mut reporter = Reporter::new(config.verbosity, events, metrics);

    // Every signal watchd handles is blocked and read from a signalfd: no handlers run, so the
    // child's dispositions are untouched, and PID 1 still receives them (blocked signals are
    // queued even for init). Signals ignored at start stay ignored and are not forwarded.
    let mut ignored = SignalSet::default();
    let mut handled = SigSet::empty();
    for sig in signals::forwarded() {
        if sys::is_ignored(sig) {
            ignored.add(sig);
        } else {
            handled.add(sig);
        }
    }
    for sig in [SIGTTIN, SIGTTOU] {
        if sys::is_ignored(sig) {
            ignored.add(sig);
        }
    }
    handled.add(SIGCHLD);
    if inherited.sigchld_ignored {
        // With SIGCHLD ignored the kernel reaps children itself and their status is lost.
        sys::set_default(SIGCHLD);
    }
    let mut blocked = handled;
    // Writing to a terminal from the background, or to a closed pipe, must not stop or kill
    // watchd; tcsetpgrp from the child before exec needs SIGTTOU blocked too.
    for sig in [SIGTTIN, SIGTTOU, SIGPIPE] {
        blocked.add(sig);
    }
    blocked.block();
    let sigfd = sys::signalfd(&handled).context("cannot create a signalfd")?;

    let self_pid = std::process::id() as i32;
    let pid1 = self_pid == 1;
    if config.subreaper
        && !pid1
        && let Err(err) = sys::become_subreaper()
    {
        reporter
            .warn(format!("cannot become a child subreaper ({err}); orphans will escape the tree"));
    }
    let tty = sys::Tty::open();
    let foreground = tty.as_ref().filter(|t| t.is_foreground()).map(sys::Tty::raw);
    let own = crate::cli::own_variables();
    let env: Vec<(OsString, OsString)> =
        std::env::vars_os().filter(|(key, _)| !own.contains(key)).collect();

    // Numbers from a /proc that is not this PID namespace's name strangers: watchd then
    // signals only what it knows is its own (the main child and its process group).
    let proc_ok = match crate::probe::proc_view(self_pid) {
        ProcView::Ours => true,
        ProcView::Missing => {
            reporter.warn(
                "/proc is not mounted: no stall, CPU or memory verdicts, and signals go to the \
                 command's process group only",
            );
            false
        }
        ProcView::Foreign(other) => {
            reporter.warn(format!(
                "/proc is not this PID namespace's (/proc/self is {other}, watchd is pid \
                 {self_pid}): no stall, CPU or memory verdicts, and signals go to the command's \
                 process group only"
            ));
            false
        }
    };
    let prober = if proc_ok { Prober::new(self_pid) } else { Prober::blind(self_pid) };
    let clk_tck = prober.clk_tck();
    let policy = Policy::new(config.limits(clk_tck));
    let oom_before = OomCounters::read();
    let started = Instant::now();
    let options = spawn::Options { inherited, foreground, pdeathsig: config.pdeathsig };
    let spawned = spawn::Command::new(&config.command, &env)
        .and_then(|mut command| spawn::start(&mut command, &options).map(|s| (command, s)));
    let (command, spawn::Started { pid: main_pid, exec }) = match spawned {
        Ok(started) => started,
        Err(err) => {
            // Bad input: shown even with -q, like a usage error.
            report::usage_error(err.to_string());
            return Ok(crate::exit::outcome(Ending::Failed, &crate::exit::Rules::default()));
        }
    };

    let settings = Settings {
        interval: config.interval,
        grace: config.grace,
        stop_signal: config.stop_signal,
        stop_scope: config.stop_scope,
        stop_cmd: config.stop_cmd.clone(),
        kill_signal: config.kill_signal,
        exit: crate::exit::Rules {
            exit_code_on_stop: config.exit_code_on_stop,
            success: config.success_exit_status.clone(),
            pid1,
        },
        forward_to: config.forward_to,
        rewrite: config.rewrite_signal.clone(),
        cleanup: config.cleanup,
        details: reporter.wants_details(),
        ignored,
        clk_tck,
        proc_ok,
    };
    let (machine, start) = Machine::new(settings, policy, main_pid, &config.command, started);
    let mut driver = Driver {
        machine,
        sigfd,
        main_pid,
        command,
        exec: Some(exec),
        tty,
        env,
        inherited,
        stop_cmd_pid: None,
        proc_ok,
        oom_before,
        prober,
        sampler: Sampler::new(),
        reporter,
        signals: Vec::new(),
        outcome: None,
    };
    driver.execute(start, started);
    Ok(driver.run())
}

struct Driver {
    machine: Machine,
    sigfd: OwnedFd,
    main_pid: i32,
    command: spawn::Command,
    /// The exec-status pipe of the main child, until exec is known to have worked.
    exec: Option<OwnedFd>,
    tty: Option<sys::Tty>,
    /// The environment the command and side commands get.
    env: Vec<(OsString, OsString)>,
    inherited: Inherited,
    stop_cmd_pid: Option<i32>,
    /// /proc is watchd's own: the tree can be walked. Without it, what watchd signals beyond
    /// the main child is its process group.
    proc_ok: bool,
    /// The OOM killer's counters before the command started.
    oom_before: OomCounters,
    prober: Prober,
    sampler: Sampler,
    reporter: Reporter,
    /// Scratch for signals read from the signalfd.
    signals: Vec<sys::SigInfo>,
    outcome: Option<Outcome>,
}

impl Driver {
    fn run(mut self) -> Outcome {
        // Reaping waits for a SIGCHLD, or a timer wake-up (a probe or a deadline) as a safety
        // net, so forwarding a signal costs no wait4.
        let mut reap_due = true;
        loop {
            if reap_due {
                self.reap();
            }
            if self.outcome.is_none() {
                self.dispatch(Event::Tick);
            }
            if let Some(outcome) = self.outcome {
                return outcome;
            }
            let timed_out = self.wait();
            reap_due = self.read_signals() || timed_out;
        }
    }

    /// Feeds one event to the machine and carries out what it asks, results included.
    fn dispatch(&mut self, event: Event) {
        let now = Instant::now();
        let actions = self.machine.on(event, now);
        self.execute(actions, now);
    }

    fn execute(&mut self, actions: Vec<Action>, now: Instant) {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            if let Some(result) = self.act(action) {
                queue.extend(self.machine.on(result, now));
            }
        }
    }

    /// Sleeps in the kernel until a signal arrives, output that waited can go on, or the
    /// machine's deadline passes; true if the deadline passed.
    fn wait(&mut self) -> bool {
        use nix::poll::{PollFd, PollFlags};
        let timeout_ms = match self.machine.deadline() {
            None => -1,
            Some(t) => {
                let left = t.saturating_duration_since(Instant::now());
                // Round up: waking a hair early would spin until the deadline.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            }
        };
        let mut fds = vec![PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN)];
        if let Some(exec) = &self.exec {
            fds.push(PollFd::new(exec.as_fd(), PollFlags::POLLIN));
        }
        let waiting_output = self.reporter.waiting().next().is_some();
        fds.extend(self.reporter.waiting().map(|fd| PollFd::new(fd, PollFlags::POLLOUT)));
        let timed_out = sys::poll(&mut fds, timeout_ms);
        let exec_ready = self.exec.is_some() && fds[1].any().unwrap_or(true);
        drop(fds);
        if waiting_output {
            self.reporter.flush();
        }
        if exec_ready {
            self.check_exec(false);
        }
        timed_out
    }

    /// Reads the main child's exec status. `reaped`: the child has been reaped, so the pipe
    /// holds all it will ever hold. A failure ends the run with 126 or 127.
    fn check_exec(&mut self, reaped: bool) -> bool {
        let Some(exec) = &self.exec else { return false };
        match spawn::exec_status(exec) {
            spawn::ExecStatus::Pending if !reaped => false,
            spawn::ExecStatus::Pending | spawn::ExecStatus::Done => {
                self.exec = None;
                false
            }
            spawn::ExecStatus::Failed(errno) => {
                self.exec = None;
                if !reaped {
                    // It exits right after it writes: collect it so it leaves no zombie.
                    sys::wait_for(self.main_pid);
                }
                let err = self.command.failure(errno);
                self.dispatch(Event::ExecFailed(err));
                true
            }
        }
    }

    /// Reads up to a batch of pending signals and hands them to the machine in one event;
    /// returns whether a SIGCHLD was among them.
    fn read_signals(&mut self) -> bool {
        let mut chld = false;
        let mut infos = std::mem::take(&mut self.signals);
        infos.clear();
        sys::read_signals(self.sigfd.as_fd(), &mut infos, SIGNAL_BATCH);
        let mut batch = Vec::with_capacity(infos.len());
        for info in &infos {
            match Signal::from_raw(info.signo) {
                Some(SIGCHLD) => chld = true,
                // si_code <= 0: SI_USER, SI_QUEUE, SI_TKILL... a process sent it.
                Some(sig) => batch.push(Incoming { sig, by_process: info.code <= 0 }),
                None => {}
            }
        }
        self.signals = infos;
        if !batch.is_empty() {
            self.dispatch(Event::Signals(batch));
        }
        chld
    }

    /// Reaps every child that has ended, then tells the machine in one event.
    fn reap(&mut self) {
        let mut ends = Vec::new();
        let children_left = loop {
            match sys::wait_any() {
                Wait::Nothing => break true,
                Wait::NoChildren => break false,
                Wait::Child(pid, status) if libc::WIFSTOPPED(status) => {
                    if pid == self.main_pid {
                        let sig = Signal::from_raw(libc::WSTOPSIG(status))
                            .unwrap_or(crate::signals::SIGSTOP);
                        let on_terminal = self.tty.is_some();
                        self.dispatch(Event::MainStopped { sig, on_terminal });
                    }
                }
                Wait::Child(pid, status) => {
                    let Some(end) = ChildEnd::from_wait_status(status) else { continue };
                    if pid == self.main_pid && self.check_exec(true) {
                        continue;
                    }
                    ends.push(if pid == self.main_pid {
                        let oom = (end == ChildEnd::Killed(SIGKILL))
                            .then(|| OomCounters::read().rise_since(&self.oom_before))
                            .flatten();
                        Reap::Main { pid, end, oom }
                    } else if Some(pid) == self.stop_cmd_pid {
                        self.stop_cmd_pid = None;
                        Reap::StopCmd { pid, end }
                    } else {
                        Reap::Orphan { pid, end }
                    });
                }
            }
        };
        if !ends.is_empty() || !children_left {
            self.dispatch(Event::Reaped { ends, children_left });
        }
    }

    /// Without a /proc of its own, what watchd can still reach beyond the main child: the main
    /// child's process group (a group id stays taken while the group has members). Returns
    /// the signals that reached it.
    fn group_fallback(&self, sigs: &[Signal]) -> Vec<Signal> {
        if self.proc_ok {
            return Vec::new();
        }
        sigs.iter().copied().filter(|&s| sys::kill_group(self.main_pid, s).is_ok()).collect()
    }

    /// Processes that are not the tree: the `--stop-cmd` shell.
    fn exclude(&self) -> Vec<i32> {
        self.stop_cmd_pid.into_iter().collect()
    }

    /// Carries out one action; returns its result when the machine wants one.
    fn act(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Forward { sigs, to } => {
                let delivered = match to {
                    ForwardTo::Child => {
                        sigs.into_iter().filter(|&s| sys::kill(self.main_pid, s).is_ok()).collect()
                    }
                    // While the main child is unreaped its pid names its own process group.
                    ForwardTo::Group => sigs
                        .into_iter()
                        .filter(|&s| sys::kill_group(self.main_pid, s).is_ok())
                        .collect(),
                    ForwardTo::Tree if self.proc_ok => {
                        let exclude = self.exclude();
                        tree::signal_batch(&mut self.prober, &exclude, &sigs)
                    }
                    ForwardTo::Tree => self.group_fallback(&sigs),
                };
                Some(Event::Forwarded { delivered, to })
            }
            Action::Stop { sig, scope } => {
                // main_pid is our unreaped child, so this is safe even if a scan would miss it.
                let sent = sys::kill(self.main_pid, sig).map_err(|e| e.desc().to_string());
                let _ = sys::kill(self.main_pid, SIGCONT);
                if scope == StopScope::Tree {
                    let exclude = self.exclude();
                    tree::signal_all(&mut self.prober, &exclude, Some(self.main_pid), sig, true);
                    self.group_fallback(&[sig, SIGCONT]);
                }
                Some(Event::StopSent(sent))
            }
            Action::StopLeftovers { sig } => {
                let exclude = self.exclude();
                let count = tree::signal_all(&mut self.prober, &exclude, None, sig, true);
                self.group_fallback(&[sig, SIGCONT]);
                Some(Event::LeftoversStopped { sig, count })
            }
            Action::Kill { sig, main_alive } => {
                let mut count = 0;
                let main = main_alive.then_some(self.main_pid);
                if main_alive && sys::kill(self.main_pid, sig).is_ok() {
                    count += 1;
                }
                let killed = tree::kill_tree(&mut self.prober, main, self.main_pid, sig);
                self.group_fallback(&[sig]);
                Some(Event::Killed { sig, count: count + killed.signalled, stuck: killed.stuck })
            }
            Action::FinalKill => {
                tree::kill_tree(&mut self.prober, None, self.main_pid, SIGKILL);
                self.group_fallback(&[SIGKILL]);
                None
            }
            Action::Sweep => {
                let killed = tree::kill_tree(&mut self.prober, None, self.main_pid, SIGKILL);
                Some(Event::Swept { count: killed.signalled, stuck: killed.stuck })
            }
            Action::RunStopCmd { cmd } => {
                let started = spawn::spawn_shell(&cmd, self.main_pid, &self.env, &self.inherited)
                    .map(|pid| self.stop_cmd_pid = Some(pid))
                    .map_err(|err| err.to_string());
                Some(Event::StopCmdStarted(started))
            }
            Action::KillStopCmd => {
                if let Some(pid) = self.stop_cmd_pid {
                    // Our own unreaped child, so the pid is still its.
                    let _ = sys::kill(pid, SIGKILL);
                }
                None
            }
            Action::Probe { at } => {
                let scan = self.prober.scan(&self.exclude());
                let visible = scan.procs.iter().any(|p| p.pid == self.main_pid);
                Some(Event::Sample(Sample { visible, ..self.sampler.sample(&scan, at) }))
            }
            Action::GiveTerminal { then } => {
                let given = self.tty.as_ref().is_some_and(|t| t.give(self.main_pid));
                match then {
                    AfterTerminal::Nothing => None,
                    AfterTerminal::Touched(_) => Some(Event::Terminal { given, then }),
                }
            }
            Action::ContinueGroup => {
                let _ = sys::kill_group(self.main_pid, SIGCONT);
                None
            }
            Action::StopSelf(sig) => {
                sys::stop_self(sig);
                Some(Event::Resumed)
            }
            Action::ReturnTerminal => {
                if let Some(tty) = &self.tty {
                    tty.take_back(self.main_pid);
                }
                None
            }
            Action::Fail(text) => {
                report::usage_error(text);
                None
            }
            Action::Say(level, text) => {
                self.reporter.say(level, &text);
                None
            }
            Action::Emit(record) => {
                self.reporter.event(&record);
                None
            }
            Action::Metrics(metrics) => {
                self.reporter.metrics(&metrics);
                None
            }
            Action::Exit(outcome) => {
                self.outcome = Some(outcome);
                None
            }
        }
    }
}
