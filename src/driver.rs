//! The driver: watchd's one loop. It sleeps in `poll` until a signal arrives, a descriptor it
//! watches is ready (the exec-status pipe, a health check, the notify socket, output that had
//! to wait) or the machine's next deadline passes; turns what the kernel says (signals, reaped
//! children, /proc scans, datagrams) into [`crate::machine::Event`]s; and carries out the
//! [`crate::machine::Action`]s that come back. It decides nothing: every "whether" and "when" is the
//! machine's.

use std::collections::{HashSet, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};

use crate::cgroup::{Cgroup, Decision, EventsWatch, Facts, Mode};
use crate::cli::{ForwardTo, StopScope};
use crate::config::{Config, HealthCheck};
use crate::exit::{ChildEnd, Ending, Outcome};
use crate::health::{HealthUrl, HttpCheck, Interest};
use crate::helper_run::{Output, SideCommand, SideStatus};
use crate::machine::{Action, AfterTerminal, Event, Incoming, Machine, Reap, Settings};
use crate::notify::{NotifySocket, Upstream};
use crate::probe::{Needs, OomCounters, Prober, ProcView, Sample, Sampler};
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

/// Pids that were the tree's and have gone, remembered for judging a late notify message.
const REMEMBERED: usize = 1024;

/// How long a dump may read /proc before the stop goes out anyway.
const DUMP_READ: std::time::Duration = std::time::Duration::from_secs(1);

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
    // A name that does not resolve is a usage error, found before anything starts; the check
    // itself never waits on DNS.
    let health = match &config.health {
        Some(HealthCheck::Url(url)) => {
            Some(HealthKind::Url(HealthUrl::resolve(url).map_err(|err| {
                anyhow::anyhow!("invalid value '{url}' for '--health-url <URL>': {err}")
            })?))
        }
        Some(HealthCheck::Cmd(cmd)) => Some(HealthKind::Cmd(cmd.clone())),
        None => None,
    };
    let mut reporter = Reporter::new(config.verbosity, events, metrics);
    let upstream = match Upstream::from_env() {
        Ok(upstream) => upstream,
        Err(err) => {
            reporter.warn(format!("NOTIFY_SOCKET: {err}; not telling the service manager"));
            None
        }
    };

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

    // The notify socket: with --notify, and always under a service manager (the command
    // never gets systemd's own socket).
    let notify = if config.notify || upstream.is_some() {
        Some(NotifySocket::bind().context("cannot make the notify socket")?)
    } else {
        None
    };
    let own = crate::cli::own_variables();
    let stall_window = config.stall;
    let child_notify = crate::notify::child_env(notify.as_ref().map(|n| n.path()), stall_window);
    let env = child_notify.apply(std::env::vars_os().filter(|(key, _)| !own.contains(key)));

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
    let cgroup = contain(config.cgroup, proc_ok, self_pid, &mut reporter)?;
    let reporting = config.events.is_some() || config.metrics_file.is_some();
    let needs =
        Needs { io: config.evidence_io || reporting, stat: config.max_rss.is_some() || reporting };
    let placement = match &cgroup {
        Some(cg) => Some(
            spawn::Placement::new(cg.dir_fd(), cg.procs_file())
                .context("cannot hold the cgroup's directory open")?,
        ),
        None => None,
    };
    let cgroup_dir = cgroup.as_ref().map(|cg| cg.dir().display().to_string());
    let events_watch =
        cgroup.as_ref().map(Cgroup::watch).transpose().context("cannot watch cgroup.events")?;
    let prober = if proc_ok { Prober::new(self_pid) } else { Prober::blind(self_pid) };
    let mut prober = prober.with_needs(needs);
    // The tree's reaped CPU is counted from wait4, member by member (see `count_reaped`).
    prober.set_reaped_ticks(0);
    let oom_cgroup_before = match cgroup {
        Some(mut cg) => {
            let before = cg.oom_kills();
            prober = prober.with_cgroup(cg);
            before
        }
        None => None,
    };
    let clk_tck = prober.cpu_unit();
    let mut limits = config.limits(clk_tck);
    limits.evidence_notify = config.evidence_notify && notify.is_some();
    // Samples carry GPU figures only once NVML answers (`probe_gpu`): without it, no news.
    limits.evidence_gpu = config.evidence_gpu;
    limits.heartbeats = !config.heartbeat.is_empty();
    let oom_before = OomCounters::read();
    let started = Instant::now();
    let options =
        spawn::Options { inherited, foreground, pdeathsig: config.pdeathsig, cgroup: placement };
    let spawned = spawn::Command::new(&config.command, &env, child_notify.watchdog_pid)
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
        health: health.as_ref().map(|_| config.health_timing),
        ready_timeout: config.ready_timeout,
        notify: config.notify,
        upstream: upstream.as_ref().map(Upstream::watchdog),
        restart: config.restart,
        dump: config.dump.clone(),
    };
    let (machine, start) =
        Machine::new(settings, limits, main_pid, &config.command, cgroup_dir, started);
    let heartbeats = config.heartbeat.iter().map(|p| (p.clone(), stamp(p))).collect();
    let mut driver = Driver {
        machine,
        sigfd,
        self_pid,
        main_pid,
        command,
        options,
        exec: Some(exec),
        tty,
        health,
        health_timeout: config.health_timing.timeout,
        check: None,
        aborted: Vec::new(),
        stop_cmd: None,
        dump_cmds: None,
        notify,
        upstream,
        last_members: HashSet::new(),
        gone: VecDeque::new(),
        heartbeats,
        inherited,
        proc_ok,
        oom_before,
        oom_cgroup_before,
        events_watch,
        placed: None,
        reporting,
        reaped_cpu: std::time::Duration::ZERO,
        prober,
        sampler: Sampler::new(),
        gpu: config.evidence_gpu.then(|| {
            let always = config.events.is_some() || config.metrics_file.is_some();
            crate::gpu::Probe::new(config.gpu_scope, always, crate::gpu::library())
        }),
        started,
        reporter,
        signals: Vec::new(),
        outcome: None,
    };
    driver.said_placement();
    driver.execute(start, started);
    let outcome = driver.run();
    driver.remove_cgroup();
    Ok(outcome)
}

/// Whether the tree in a cgroup is left: `populated` (cgroup.events), `children`: watchd still
/// has children none of which could be reaped yet, `side`: the side commands among them,
/// `own_children`: watchd's children as /proc lists them (`None` without a /proc of its own).
///
/// `populated 0` comes as the last member starts its exit: the kernel takes it out of the
/// cgroup before it hands its children (zombies too) to their reaper, watchd, and before it
/// becomes a zombie itself. Such a member is still watchd's child, or about to give watchd one,
/// and the tree is not gone until it is reaped; side commands are never the tree.
fn cgroup_tree_left(
    populated: bool,
    children: bool,
    side: &[i32],
    own_children: impl FnOnce() -> Option<Vec<i32>>,
) -> bool {
    if populated || !children {
        return populated;
    }
    if side.is_empty() {
        return true;
    }
    own_children().is_none_or(|kids| kids.iter().any(|pid| !side.contains(pid)))
}

/// What `--cgroup` comes to here: the command's cgroup, or none (and why, with `-v`). `on`
/// where it is impossible is an error: one line, exit 125, nothing started.
fn contain(
    mode: Mode,
    proc_ok: bool,
    self_pid: i32,
    reporter: &mut Reporter,
) -> Result<Option<Cgroup>> {
    let decision = if mode == Mode::Off {
        // `off` is decided without the facts, whose reading (mountinfo above all) would cost
        // every start-up about 60 µs for nothing.
        Decision::Proc { why: "--cgroup off".to_string() }
    } else if proc_ok {
        crate::cgroup::decide(mode, &Facts::read())
    } else {
        let why = "/proc is not this PID namespace's, so members cannot be told apart".to_string();
        if mode == Mode::On { Decision::Fail { why } } else { Decision::Proc { why } }
    };
    match decision {
        Decision::Fail { why } => anyhow::bail!("--cgroup on: {why}"),
        Decision::Proc { why } => {
            reporter.info(format!("no cgroup ({why}): the tree is what /proc shows"));
            Ok(None)
        }
        Decision::Use { parent, why } => {
            match Cgroup::create(&parent, &format!("watchd-{self_pid}")) {
                Ok(cg) => {
                    let dir = cg.dir().display();
                    reporter.info(format!("the command runs in cgroup {dir} ({why})"));
                    Ok(Some(cg))
                }
                Err(err) if mode == Mode::On => anyhow::bail!("--cgroup on: {err}"),
                Err(err) => {
                    reporter.info(format!("no cgroup ({err}): the tree is what /proc shows"));
                    Ok(None)
                }
            }
        }
    }
}

/// What the health check is.
enum HealthKind {
    Cmd(String),
    Url(HealthUrl),
}

/// A health check under way.
enum Check {
    Cmd { side: SideCommand, started: Instant },
    Http { http: HttpCheck, started: Instant },
}

/// `--dump-cmd` going through the tree, one process at a time.
struct DumpCmds {
    cmd: String,
    pids: VecDeque<i32>,
    running: Option<SideCommand>,
    /// The process the running command is for.
    target: i32,
    until: Instant,
}

struct Driver {
    machine: Machine,
    sigfd: OwnedFd,
    self_pid: i32,
    main_pid: i32,
    command: spawn::Command,
    options: spawn::Options,
    /// The exec-status pipe of the main child, until exec is known to have worked.
    exec: Option<OwnedFd>,
    tty: Option<sys::Tty>,
    health: Option<HealthKind>,
    health_timeout: std::time::Duration,
    check: Option<Check>,
    /// Health checks the machine gave up on, still being killed: reaped quietly.
    aborted: Vec<SideCommand>,
    stop_cmd: Option<SideCommand>,
    dump_cmds: Option<DumpCmds>,
    notify: Option<NotifySocket>,
    upstream: Option<Upstream>,
    /// The tree at the last probe, and pids of the tree that have gone since: a notify
    /// message from a sender that has already exited is judged by these.
    last_members: HashSet<i32>,
    gone: VecDeque<i32>,
    /// `--heartbeat` files and what they looked like at the last probe.
    heartbeats: Vec<(PathBuf, Option<(u64, SystemTime)>)>,
    inherited: Inherited,
    /// /proc is watchd's own: the tree can be walked. Without it, what watchd signals beyond
    /// the main child is its process group.
    proc_ok: bool,
    /// The OOM killer's counters before the command started.
    oom_before: OomCounters,
    /// The command's cgroup's `oom_kill` before the command started, where it has one.
    oom_cgroup_before: Option<u64>,
    /// The command's cgroup's `cgroup.events`, polled for the end of the tree.
    events_watch: Option<EventsWatch>,
    /// How the last main child was placed in the cgroup, as said with `-v`.
    placed: Option<spawn::Placed>,
    /// Events or metrics are written: samples carry pressure figures.
    reporting: bool,
    /// CPU time of the tree's members that watchd reaped.
    reaped_cpu: std::time::Duration,
    prober: Prober,
    sampler: Sampler,
    /// GPU evidence (`gpu` in --evidence): NVML, loaded at the first probe that needs it.
    gpu: Option<crate::gpu::Probe>,
    /// When the command was started: the origin of the machine's probe times.
    started: Instant,
    reporter: Reporter,
    /// Scratch for signals read from the signalfd.
    signals: Vec<sys::SigInfo>,
    outcome: Option<Outcome>,
}

/// A heartbeat file's size and modification time, or None when it is missing.
fn stamp(path: &PathBuf) -> Option<(u64, SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

impl Driver {
    fn run(&mut self) -> Outcome {
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
        // Depth first: what an action's result asks for is done before the next action, so
        // the dump's lines follow the trigger line and precede the stop.
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            if let Some(result) = self.act(action) {
                for follow in self.machine.on(result, now).into_iter().rev() {
                    queue.push_front(follow);
                }
            }
        }
    }

    /// Sleeps in the kernel until a signal arrives, a watched descriptor is ready, or the
    /// machine's deadline passes; true if the deadline passed or the cgroup emptied (a reap is
    /// due either way).
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
        // Fixed slots, so what woke can be told apart after the poll.
        let none = PollFlags::empty();
        let mut fds = vec![PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN)];
        let exec_slot = self.exec.as_ref().map(|fd| {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let check_slot = match &self.check {
            Some(Check::Cmd { side, .. }) => side.output_fd().map(|fd| (fd, PollFlags::POLLIN)),
            Some(Check::Http { http, .. }) => Some((
                http.fd(),
                match http.interest() {
                    Interest::Writable => PollFlags::POLLOUT,
                    Interest::Readable => PollFlags::POLLIN,
                },
            )),
            None => None,
        }
        .map(|(fd, flags)| {
            fds.push(PollFd::new(fd, flags));
            fds.len() - 1
        });
        let notify_slot = self.notify.as_ref().map(|n| {
            fds.push(PollFd::new(n.fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        // cgroup.events reports a change (the tree emptied) as POLLPRI.
        let cgroup_slot = self.events_watch.as_ref().map(|w| {
            fds.push(PollFd::new(w.as_fd(), PollFlags::POLLPRI));
            fds.len() - 1
        });
        let waiting_output = self.reporter.waiting().next().is_some();
        fds.extend(self.reporter.waiting().map(|fd| PollFd::new(fd, PollFlags::POLLOUT)));
        let timed_out = sys::poll(&mut fds, timeout_ms);
        let ready =
            |slot: Option<usize>| slot.is_some_and(|i| fds[i].revents().is_some_and(|r| r != none));
        let (exec_ready, check_ready, notify_ready, cgroup_ready) =
            (ready(exec_slot), ready(check_slot), ready(notify_slot), ready(cgroup_slot));
        drop(fds);
        // Reading re-arms the notification; an empty tree is worth a reap.
        let emptied = cgroup_ready
            && self.events_watch.as_mut().and_then(EventsWatch::read).is_some_and(|e| !e.populated);
        if waiting_output {
            self.reporter.flush();
        }
        if exec_ready {
            self.check_exec(false);
        }
        if check_ready {
            self.advance_check();
        }
        if notify_ready {
            self.read_notify();
        }
        timed_out || emptied
    }

    /// Reads the main child's exec status. `reaped`: the child has been reaped, so the pipe
    /// holds all it will ever hold. A failure ends watchd with 126 or 127.
    fn check_exec(&mut self, reaped: bool) -> bool {
        let Some(exec) = &self.exec else { return false };
        match spawn::exec_status(exec) {
            spawn::ExecStatus::Pending if !reaped => false,
            spawn::ExecStatus::Pending | spawn::ExecStatus::Done => {
                self.exec = None;
                if !reaped {
                    self.dispatch(Event::Execed);
                }
                false
            }
            status @ (spawn::ExecStatus::Failed(errno) | spawn::ExecStatus::JoinFailed(errno)) => {
                self.exec = None;
                if !reaped {
                    // It exits right after it writes: collect it so it leaves no zombie.
                    sys::wait_for(self.main_pid);
                }
                let err = if matches!(status, spawn::ExecStatus::JoinFailed(_)) {
                    let err = std::io::Error::from_raw_os_error(errno);
                    spawn::SpawnError::Internal(format!(
                        "cannot put the command in its cgroup: {err}"
                    ))
                } else {
                    self.command.failure(errno)
                };
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
                Wait::Child(pid, status, _) if libc::WIFSTOPPED(status) => {
                    if pid == self.main_pid {
                        let raw = libc::WSTOPSIG(status);
                        let sig = Signal::from_raw(raw).unwrap_or(crate::signals::SIGSTOP);
                        let on_terminal = self.tty.is_some();
                        self.dispatch(Event::MainStopped { sig, on_terminal });
                    }
                }
                Wait::Child(pid, status, cpu) => {
                    let Some(end) = ChildEnd::from_wait_status(status) else { continue };
                    if pid == self.main_pid && self.check_exec(true) {
                        continue;
                    }
                    if let Some(reap) = self.reaped(pid, end) {
                        if matches!(reap, Reap::Main { .. } | Reap::Orphan { .. }) {
                            self.count_reaped(cpu);
                        }
                        ends.push(reap);
                    }
                }
            }
        };
        let children_left = self.tree_left(children_left);
        if !ends.is_empty() || !children_left {
            self.dispatch(Event::Reaped { ends, children_left });
        }
    }

    /// What a reaped child was: the main child, a side command (whose end is dealt with here),
    /// or an orphan of the tree.
    fn reaped(&mut self, pid: i32, end: ChildEnd) -> Option<Reap> {
        if pid == self.main_pid {
            let oom = (end == ChildEnd::Killed(SIGKILL)).then(|| self.oom_cause()).flatten();
            let held_terminal =
                self.tty.as_ref().is_some_and(|t| t.foreground_group() == Some(pid));
            self.remember_gone(pid);
            return Some(Reap::Main { pid, end, oom, held_terminal });
        }
        if self.stop_cmd.as_ref().is_some_and(|s| s.pid() == pid) {
            let side = self.stop_cmd.take()?.finish(end);
            let end = match side.status {
                SideStatus::Exited(code) => ChildEnd::Exited(code),
                SideStatus::Lost(sig) => ChildEnd::Killed(sig),
                SideStatus::TimedOut | SideStatus::Aborted => ChildEnd::Killed(SIGKILL),
            };
            return Some(Reap::StopCmd { pid, end });
        }
        if let Some(i) = self.aborted.iter().position(|s| s.pid() == pid) {
            let _ = self.aborted.swap_remove(i).finish(end);
            return None;
        }
        if matches!(&self.check, Some(Check::Cmd { side, .. }) if side.pid() == pid) {
            if let Some(Check::Cmd { side, started }) = self.check.take() {
                let side = side.finish(end);
                let took = started.elapsed();
                self.dispatch(Event::HealthDone { ok: side.ok, detail: side.detail(), took });
            }
            return None;
        }
        if let Some(dump) = &mut self.dump_cmds
            && dump.running.as_ref().is_some_and(|s| s.pid() == pid)
        {
            if let Some(side) = dump.running.take() {
                let _ = side.finish(end);
            }
            self.next_dump_cmd();
            return None;
        }
        self.remember_gone(pid);
        Some(Reap::Orphan { pid, end })
    }

    /// Why the main child died of SIGKILL, if the OOM killer did it: the command's own cgroup's
    /// count where it has the memory controller, else watchd's memory cgroup or the machine's.
    fn oom_cause(&mut self) -> Option<String> {
        let before = self.oom_cgroup_before;
        let now = self.prober.cgroup().and_then(Cgroup::oom_kills);
        if let (Some(before), Some(now)) = (before, now)
            && now > before
        {
            return Some(format!(
                "the kernel's OOM killer: oom_kill of its cgroup rose by {}",
                now - before
            ));
        }
        OomCounters::read().rise_since(&self.oom_before)
    }

    /// The command's cgroup's pressure, as the sample carries it.
    fn pressure(&mut self) -> Option<crate::probe::Pressure> {
        let p = self.prober.cgroup()?.pressure();
        Some(crate::probe::Pressure { cpu: p.cpu, io: p.io, memory: p.memory })
    }

    /// Adds the CPU time of a reaped member of the tree (and of what it reaped) to the tree's:
    /// counted from wait4 rather than from watchd's own cutime, which also holds the side
    /// commands' (a health check every second would otherwise be the tree's evidence of life).
    fn count_reaped(&mut self, cpu: std::time::Duration) {
        self.reaped_cpu += cpu;
        let ticks = self.reaped_cpu.as_nanos() * u128::from(self.prober.clk_tck()) / 1_000_000_000;
        self.prober.set_reaped_ticks(u64::try_from(ticks).unwrap_or(u64::MAX));
    }

    /// Whether anything of the tree is left, given whether watchd has children at all. With a
    /// cgroup, the tree is what is in it: an escapee that left watchd's descent
    /// (--no-subreaper) is no child of watchd's, and side commands are never in it. Without
    /// one, side commands (a health check, the stop or dump command) are children too: while
    /// one runs, the walk says whether anything else is.
    fn tree_left(&mut self, children: bool) -> bool {
        if let Some(events) = self.prober.cgroup().and_then(|cg| cg.events()) {
            let side = self.exclude();
            let proc_ok = self.proc_ok;
            let prober = &mut self.prober;
            return cgroup_tree_left(events.populated, children, &side, || {
                proc_ok.then(|| prober.own_children())
            });
        }
        let exclude = self.exclude();
        if !children || exclude.is_empty() || !self.proc_ok {
            return children;
        }
        !self.prober.members(&exclude).is_empty()
    }

    /// Says with `-v` how the main child was placed in its cgroup, when that changed.
    fn said_placement(&mut self) {
        let Some(placed) = self.options.cgroup.as_ref().map(spawn::Placement::last) else {
            return;
        };
        if self.placed == Some(placed) {
            return;
        }
        self.placed = Some(placed);
        let how = match placed {
            spawn::Placed::Clone3 => "born in its cgroup (clone3 CLONE_INTO_CGROUP)".to_string(),
            spawn::Placed::Refused(errno) => format!(
                "placed in its cgroup by fork and cgroup.procs (clone3: {})",
                nix::errno::Errno::from_raw(errno).desc()
            ),
            spawn::Placed::KilledAtBirth => "placed in its cgroup by fork and cgroup.procs (the \
                                              kernel killed a clone3 child at birth)"
                .to_string(),
        };
        self.reporter.info(format!("the command was {how}"));
    }

    /// Removes the command's cgroup at the end, once it is empty; with leftovers kept
    /// (--no-cleanup) it stays, and `-v` says so.
    fn remove_cgroup(&mut self) {
        let Some(mut cg) = self.prober.take_cgroup() else { return };
        // The last member may still be on its way out (populated 0 comes a moment after the
        // exit that the reap saw).
        let deadline = Instant::now() + std::time::Duration::from_secs(1);
        loop {
            match cg.remove() {
                Ok(()) => return,
                Err(crate::cgroup::RemoveError::Populated) if Instant::now() < deadline => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match &mut self.events_watch {
                        Some(watch) => {
                            watch.wait_for(left, |e| !e.populated);
                        }
                        None => std::thread::yield_now(),
                    }
                }
                Err(err) => {
                    self.reporter.info(format!("leaving cgroup {}: {err}", cg.dir().display()));
                    return;
                }
            }
        }
    }

    fn remember_gone(&mut self, pid: i32) {
        if self.gone.len() == REMEMBERED {
            self.gone.pop_front();
        }
        self.gone.push_back(pid);
    }

    /// Side commands' middles: not the tree, and left out of every walk of it.
    fn exclude(&self) -> Vec<i32> {
        let check = match &self.check {
            Some(Check::Cmd { side, .. }) => Some(side.pid()),
            _ => None,
        };
        let dump = self.dump_cmds.as_ref().and_then(|d| d.running.as_ref()).map(SideCommand::pid);
        [check, dump, self.stop_cmd.as_ref().map(SideCommand::pid)]
            .into_iter()
            .flatten()
            .chain(self.aborted.iter().map(SideCommand::pid))
            .collect()
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

    /// A health check's descriptor is ready: advance the HTTP exchange, or read the command's
    /// output (its end comes with the middle's reaping).
    fn advance_check(&mut self) {
        match &mut self.check {
            Some(Check::Cmd { side, .. }) => {
                side.read_output();
            }
            Some(Check::Http { http, started }) => {
                if let Some(outcome) = http.on_ready() {
                    let took = started.elapsed();
                    self.check = None;
                    let event = Event::HealthDone { ok: outcome.ok, detail: outcome.detail, took };
                    self.dispatch(event);
                }
            }
            None => {}
        }
    }

    /// Starts the health check the machine asked for.
    fn start_check(&mut self) -> Option<Event> {
        let started = Instant::now();
        let failed = |detail: String| Event::HealthDone {
            ok: false,
            detail,
            took: std::time::Duration::ZERO,
        };
        match self.health.as_ref()? {
            HealthKind::Cmd(cmd) => {
                // The machine enforces --health-timeout; the middle's own timer is a backstop.
                let backstop = Some(self.health_timeout + std::time::Duration::from_secs(1));
                match SideCommand::start(
                    cmd,
                    self.main_pid,
                    backstop,
                    Output::Capture,
                    &self.inherited,
                ) {
                    Ok(side) => {
                        self.check = Some(Check::Cmd { side, started });
                        None
                    }
                    Err(err) => Some(failed(format!("cannot start --health-cmd: {err}"))),
                }
            }
            HealthKind::Url(url) => match HttpCheck::start(url) {
                Ok(http) => {
                    self.check = Some(Check::Http { http, started });
                    None
                }
                Err(outcome) => Some(failed(outcome.detail)),
            },
        }
    }

    /// Runs the next `--dump-cmd`, or says they are all done.
    fn next_dump_cmd(&mut self) {
        let Some(dump) = &mut self.dump_cmds else { return };
        while let Some(pid) = dump.pids.pop_front() {
            let left = dump.until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let skipped = dump.pids.len() + 1;
                let processes = if skipped == 1 { "process" } else { "processes" };
                self.reporter.warn(format!(
                    "--dump-cmd: the --dump-wait ran out; skipped {skipped} {processes}"
                ));
                break;
            }
            match SideCommand::start(&dump.cmd, pid, Some(left), Output::Stderr, &self.inherited) {
                Ok(side) => {
                    dump.running = Some(side);
                    dump.target = pid;
                    return;
                }
                Err(err) => self.reporter.warn(format!("--dump-cmd failed: {err}")),
            }
        }
        self.dump_cmds = None;
        self.dispatch(Event::DumpCmdsDone);
    }

    /// Reads what the notify socket holds, a batch at a time.
    fn read_notify(&mut self) {
        let Some(socket) = &mut self.notify else { return };
        for received in socket.recv_batch() {
            let in_tree = self.in_tree(received.pid);
            let (pid, message) = (received.pid, received.message);
            self.dispatch(Event::Notify { pid, in_tree, message });
        }
    }

    /// Whether a notify sender is of the tree: watchd itself (`systemd-notify` run as root
    /// reports its parent's pid), a process whose parents lead to the main child or watchd
    /// without passing a side command, or one that was of the tree and has gone.
    fn in_tree(&self, pid: i32) -> bool {
        if pid <= 0 {
            return false;
        }
        if pid == self.self_pid
            || pid == self.main_pid
            || self.last_members.contains(&pid)
            || self.gone.contains(&pid)
        {
            return true;
        }
        let side = self.exclude();
        let mut at = pid;
        for _ in 0..64 {
            let Some(ppid) = std::fs::read(format!("/proc/{at}/stat"))
                .ok()
                .and_then(|t| crate::probe::parse_stat(&t))
                .map(|s| s.ppid)
            else {
                return false;
            };
            if side.contains(&ppid) || side.contains(&at) {
                return false;
            }
            if ppid == self.main_pid || ppid == self.self_pid {
                return true;
            }
            if ppid <= 1 {
                return false;
            }
            at = ppid;
        }
        false
    }

    /// `--heartbeat` files that changed (size or modification time, appeared, replaced)
    /// since the last probe.
    fn heartbeats(&mut self) -> u32 {
        let mut changed = 0;
        for (path, last) in &mut self.heartbeats {
            let now = stamp(path);
            if now.is_some() && now != *last {
                changed += 1;
            }
            *last = now;
        }
        changed
    }

    /// The GPUs' figures for the probe that made `scan` (SPEC "GPU evidence"): NVML is loaded
    /// at the first probe whose figures have a use (a stall window in force, or samples and
    /// metrics written). In process scope, a pid NVML reports counts when it is of this scan or
    /// of the previous one (a process that used the GPU and ended since still worked for the
    /// tree in the window).
    fn probe_gpu(&mut self, scan: &crate::probe::Scan) -> Option<crate::probe::GpuFigures> {
        let gpu = self.gpu.as_mut()?;
        let deciding = self.machine.evidence_window().is_some();
        let last = &self.last_members;
        let tree = || {
            let members: HashSet<u32> = (scan.procs.iter().map(|p| p.pid))
                .chain(last.iter().copied())
                .filter_map(|pid| u32::try_from(pid).ok())
                .collect();
            move |pid| members.contains(&pid)
        };
        let reporter = &mut self.reporter;
        gpu.probe(deciding, tree, |line| reporter.info(line))
    }

    /// Each dumped process's GPU memory and utilization, as the last probe found them.
    fn gpu_into_dump(&self, snap: &mut crate::dump::Snapshot) {
        let Some(gpu) = &self.gpu else { return };
        for process in &mut snap.processes {
            process.gpu = gpu.of_process(process.pid);
        }
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
                let sent = if scope == StopScope::Tree {
                    let exclude = self.exclude();
                    let (sent, _) = tree::stop_tree(&mut self.prober, &exclude, self.main_pid, sig);
                    self.group_fallback(&[sig, SIGCONT]);
                    sent
                } else {
                    // main_pid is our unreaped child, so this is safe even if a scan would miss it.
                    let sent = sys::kill(self.main_pid, sig);
                    let _ = sys::kill(self.main_pid, SIGCONT);
                    sent
                };
                Some(Event::StopSent(sent.map_err(|e| e.desc().to_string())))
            }
            Action::StopLeftovers { sig } => {
                let exclude = self.exclude();
                let count = tree::signal_all(&mut self.prober, &exclude, None, sig, true);
                self.group_fallback(&[sig, SIGCONT]);
                Some(Event::LeftoversStopped { sig, count })
            }
            Action::Kill { sig, main_alive } => {
                // The tree first, the main child last: once the main child dies its children
                // move to watchd, and a scan that reads the tree meanwhile misses them (one in
                // own session, out of the group's reach, then lived until the sweep 5s later).
                let main = main_alive.then_some(self.main_pid);
                let exclude = self.exclude();
                let killed = tree::kill_tree(&mut self.prober, &exclude, main, self.main_pid, sig);
                let count = u32::from(main_alive && sys::kill(self.main_pid, sig).is_ok());
                self.group_fallback(&[sig]);
                Some(Event::Killed { sig, count: count + killed.signalled, stuck: killed.stuck })
            }
            Action::FinalKill => {
                let exclude = self.exclude();
                tree::kill_tree(&mut self.prober, &exclude, None, self.main_pid, SIGKILL);
                self.group_fallback(&[SIGKILL]);
                None
            }
            Action::Sweep => {
                let exclude = self.exclude();
                let killed =
                    tree::kill_tree(&mut self.prober, &exclude, None, self.main_pid, SIGKILL);
                Some(Event::Swept { count: killed.signalled, stuck: killed.stuck })
            }
            Action::RunStopCmd { cmd } => {
                let started =
                    SideCommand::start(&cmd, self.main_pid, None, Output::Inherit, &self.inherited)
                        .map(|side| self.stop_cmd = Some(side))
                        .map_err(|err| err.to_string());
                Some(Event::StopCmdStarted(started))
            }
            Action::KillStopCmd => {
                if let Some(side) = &self.stop_cmd {
                    // Still unreaped, so its pid is still its.
                    side.abort();
                }
                None
            }
            Action::Probe { at } => {
                let exclude = self.exclude();
                let scan = self.prober.scan(&exclude);
                // Through a cgroup the figures hold whatever /proc hides (cgroup.procs and
                // cpu.stat are the cgroup's), and a main child that has exited is no longer in
                // it, though not yet reaped.
                let visible =
                    scan.cpu_us.is_some() || scan.procs.iter().any(|p| p.pid == self.main_pid);
                let gpu = self.probe_gpu(&scan);
                // Only the notify socket's senders and the GPU's processes are looked up in it.
                self.last_members.clear();
                if self.notify.is_some() || self.gpu.is_some() {
                    self.last_members.extend(scan.procs.iter().map(|p| p.pid));
                }
                let heartbeats = self.heartbeats();
                let sample = self.sampler.sample(&scan, at);
                let pressure = if self.reporting { self.pressure() } else { None };
                Some(Event::Sample(Sample { visible, heartbeats, gpu, pressure, ..sample }))
            }
            Action::RunHealth => self.start_check(),
            Action::AbortHealth => {
                match self.check.take() {
                    Some(Check::Cmd { side, .. }) => {
                        side.abort();
                        self.aborted.push(side);
                    }
                    // Dropping the check closes its socket.
                    Some(Check::Http { .. }) | None => {}
                }
                None
            }
            Action::Dump => {
                let exclude = self.exclude();
                let members: Vec<crate::dump::Member> =
                    self.prober.scan_full(&exclude).procs.iter().map(Into::into).collect();
                let now = Instant::now();
                let at = now.saturating_duration_since(self.started);
                let sampler = &self.sampler;
                let idle = |pid, starttime| sampler.idle(pid, starttime, at);
                let mut snap = crate::dump::snapshot(&members, idle, now + DUMP_READ);
                self.gpu_into_dump(&mut snap);
                snap.pressure = self.prober.cgroup().map(|cg| cg.pressure());
                let lines = crate::dump::render_text(&snap, self.main_pid, crate::dump::TEXT_MAX);
                let mut processes = String::new();
                crate::dump::write_event_json(&snap, &mut processes);
                Some(Event::Dumped { lines, processes })
            }
            Action::EndDumpCmds => {
                if let Some(mut dump) = self.dump_cmds.take() {
                    let cut = dump.running.take().map(|side| {
                        side.abort();
                        self.aborted.push(side);
                        dump.target
                    });
                    let skipped = dump.pids.len();
                    if skipped > 0 || cut.is_some() {
                        let processes = if skipped == 1 { "process" } else { "processes" };
                        let cut = cut.map_or(String::new(), |pid| {
                            format!(" (the one for {pid} was cut short)")
                        });
                        self.reporter.warn(format!(
                            "--dump-cmd: the --dump-wait ran out; skipped {skipped} {processes}{cut}"
                        ));
                    }
                }
                None
            }
            Action::DumpSignal(sig) => {
                let exclude = self.exclude();
                let _ = sys::kill(self.main_pid, sig);
                tree::signal_all(&mut self.prober, &exclude, Some(self.main_pid), sig, false);
                self.group_fallback(&[sig]);
                None
            }
            Action::DumpCmds { cmd, until } => {
                let exclude = self.exclude();
                let mut pids: VecDeque<i32> = self
                    .prober
                    .members(&exclude)
                    .into_iter()
                    .map(|(pid, _)| pid)
                    .filter(|&pid| pid != self.main_pid)
                    .collect();
                pids.push_front(self.main_pid);
                self.dump_cmds = Some(DumpCmds { cmd, pids, running: None, target: 0, until });
                self.next_dump_cmd();
                None
            }
            Action::Upstream(message) => {
                if let Some(upstream) = &self.upstream {
                    // Never waits: a full or absent socket loses the message.
                    let _ = upstream.send(&message);
                }
                None
            }
            Action::Spawn => match spawn::start(&mut self.command, &self.options) {
                Ok(spawn::Started { pid, exec }) => {
                    self.main_pid = pid;
                    self.exec = Some(exec);
                    self.said_placement();
                    Some(Event::Spawned { pid })
                }
                Err(err) => Some(Event::ExecFailed(err)),
            },
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
                for side in self.aborted.iter().chain(&self.stop_cmd) {
                    side.abort();
                }
                self.outcome = Some(outcome);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cgroup_tree_left;

    #[test]
    fn an_empty_cgroup_is_the_end_only_once_every_child_of_the_tree_is_reaped() {
        let unlisted = || -> Option<Vec<i32>> { panic!("not needed") };
        // Populated: the tree is there, whatever watchd's children are.
        assert!(cgroup_tree_left(true, false, &[], unlisted));
        assert!(cgroup_tree_left(true, true, &[7], unlisted));
        // Empty, and wait4 says watchd has no children: the end.
        assert!(!cgroup_tree_left(false, false, &[], unlisted));
        // Empty, but a child not yet reapable: the last member on its way out.
        assert!(cgroup_tree_left(false, true, &[], unlisted));
        // With a side command running, /proc tells them apart.
        assert!(!cgroup_tree_left(false, true, &[7], || Some(vec![7])));
        assert!(cgroup_tree_left(false, true, &[7], || Some(vec![7, 9])));
        // Without a /proc of its own, a child may be the tree's: wait for it.
        assert!(cgroup_tree_left(false, true, &[7], || None));
    }
}
