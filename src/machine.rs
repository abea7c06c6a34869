//! The supervisor's decisions, as one pure state machine: `Machine::on(event, now)` takes what
//! the world reported (a signal, reaped children, a probe sample, a deadline, a health check's
//! end, a notify message, the result of an earlier action) and returns what to do (signal
//! someone, probe, run a check, write a line, restart, exit). It never reads a clock, /proc or
//! a descriptor, so every ladder, race, schedule and verdict is a unit test with a fake clock
//! (see the tests at the bottom); `driver` is the loop that feeds it.
//!
//! A run of the command goes through `State`: `Running` until a trigger fires (`Dumping`
//! while the dump's signal and commands have their time, then `Stopping`) or the main child
//! ends (`Cleanup` of what it left behind), `Killing` once a grace runs out; then `Waiting`
//! for a restart, or `Exited` after [`Action::Exit`]. The main child's end travels inside the
//! states that come after it; what belongs to one run (its clocks, readiness, health, why
//! watchd stopped it) lives in `Run`, and what adds up over runs in the machine itself.

use std::time::{Duration, Instant};

use crate::cli::{ForwardTo, RestartMode, StopScope};
use crate::exit::{self, ChildEnd, Ending, LastSeen, Outcome};
use crate::notify::Message;
use crate::policy::{Limits, Policy, Trigger};
use crate::probe::Sample;
use crate::readiness::{HealthSchedule, HealthTiming, Readiness, ReadyBy};
use crate::reason::Reason;
use crate::report::{Event as Record, Level, Metrics};
use crate::signals::{
    self, SIGCONT, SIGINT, SIGKILL, SIGPIPE, SIGQUIT, SIGSTOP, SIGTERM, SIGTSTP, SIGTTIN, SIGTTOU,
    Signal, SignalSet,
};
use crate::spawn::SpawnError;
use crate::units::human_duration;

/// How long watchd waits for killed leftovers (not the main child) before it kills and looks
/// again: only a process stuck in uninterruptible sleep takes this long to die.
pub const KILL_WAIT: Duration = Duration::from_secs(5);

/// What the machine needs to know of the configuration and of the world it started in.
#[derive(Clone, Debug)]
pub struct Settings {
    pub interval: Duration,
    pub grace: Duration,
    pub stop_signal: Signal,
    pub stop_scope: StopScope,
    pub stop_cmd: Option<String>,
    pub kill_signal: Signal,
    /// `--exit-code-on-stop`, `--success-exit-status`, PID 1.
    pub exit: exit::Rules,
    pub forward_to: ForwardTo,
    /// `--rewrite-signal`: FROM is forwarded as TO, or dropped.
    pub rewrite: Vec<(Signal, Option<Signal>)>,
    pub cleanup: bool,
    /// Someone reads per-signal details (`-v` or `--events`): format them.
    pub details: bool,
    /// Signals that were ignored when watchd started.
    pub ignored: SignalSet,
    /// Clock ticks per second, the unit of `Sample::cpu_ticks`.
    pub clk_tck: u64,
    /// /proc is watchd's own (the driver has said so when it is not).
    pub proc_ok: bool,
    /// A health check (`--health-cmd` or `--health-url`) and its timing.
    pub health: Option<HealthTiming>,
    pub ready_timeout: Option<Duration>,
    /// `--notify`: the command's READY=1 makes it ready.
    pub notify: bool,
    /// watchd runs under a service manager that gave it a notify socket; with its watchdog
    /// interval when it set one.
    pub upstream: Option<Option<Duration>>,
    pub restart: Restart,
    pub dump: Dump,
}

/// `--restart` and its schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restart {
    pub mode: RestartMode,
    pub max: Option<u32>,
    pub delay: Duration,
    pub delay_max: Duration,
}

/// What happens at a trigger before the stop signal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dump {
    /// Take the snapshot (stderr tree and `dump` event).
    pub snapshot: bool,
    pub signal: Option<Signal>,
    pub cmd: Option<String>,
    /// `--dump-wait`: the drain starts this long after the trigger when a signal or a command
    /// is given.
    pub wait: Duration,
}

/// What the world reported.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Signals read in one go, in order (the driver keeps SIGCHLD for itself).
    Signals(Vec<Incoming>),
    /// Children reaped since the last report, in order, and whether any are left.
    Reaped { ends: Vec<Reap>, children_left: bool },
    /// The main child was stopped (job control). `on_terminal`: watchd has a controlling
    /// terminal.
    MainStopped { sig: Signal, on_terminal: bool },
    /// A deadline may have passed: the machine checks all of its own.
    Tick,
    /// The main child's exec worked.
    Execed,
    /// Result of [`Action::Probe`].
    Sample(Sample),
    /// Result of [`Action::Forward`]: the signals that reached someone, in order.
    Forwarded { delivered: Vec<Signal>, to: ForwardTo },
    /// Result of [`Action::StopLeftovers`]: how many processes got the signal.
    LeftoversStopped { sig: Signal, count: u32 },
    /// Result of [`Action::Kill`]: how many processes got the kill signal, and how many of
    /// them are in uninterruptible sleep.
    Killed { sig: Signal, count: u32, stuck: u32 },
    /// Result of [`Action::Sweep`]: the same, for the SIGKILL of what is left.
    Swept { count: u32, stuck: u32 },
    /// Result of [`Action::RunStopCmd`]: why it could not start, if it could not.
    StopCmdStarted(Result<(), String>),
    /// Result of [`Action::Stop`]: why the stop signal could not reach the main child, if
    /// it could not (EPERM: the command changed its user).
    StopSent(Result<(), String>),
    /// Result of [`Action::GiveTerminal`].
    Terminal { given: bool, then: AfterTerminal },
    /// Result of [`Action::StopSelf`]: watchd was continued (`fg`, `bg`).
    Resumed,
    /// The main child could not exec (it has been reaped).
    ExecFailed(SpawnError),
    /// Result of [`Action::Spawn`]: the new main child.
    Spawned { pid: i32 },
    /// A health check ended (passed or not; not one the machine had given up on).
    HealthDone { ok: bool, detail: String, took: Duration },
    /// A notify message; `in_tree`: its sender is (or was) a process of the tree, or watchd.
    Notify { pid: i32, in_tree: bool, message: Message },
    /// Result of [`Action::Dump`]: the lines of the stderr picture and the `dump` event's
    /// `processes` array.
    Dumped { lines: Vec<String>, processes: String },
    /// Every `--dump-cmd` of the dump has ended (or its time ran out).
    DumpCmdsDone,
}

/// A signal watchd received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incoming {
    pub sig: Signal,
    /// Sent by a process (`kill`, `sigqueue`, `tgkill`), not raised by the kernel.
    pub by_process: bool,
}

impl Incoming {
    /// A signal some process sent.
    pub fn sent(sig: Signal) -> Incoming {
        Incoming { sig, by_process: true }
    }
}

/// One reaped child.
#[derive(Clone, Debug, PartialEq)]
pub enum Reap {
    /// The main child. `oom`: what the OOM counters say, read when it died of SIGKILL;
    /// `held_terminal`: its group was the terminal's foreground group (a Ctrl-C went to it).
    Main { pid: i32, end: ChildEnd, oom: Option<String>, held_terminal: bool },
    /// The `--stop-cmd` shell.
    StopCmd { pid: i32, end: ChildEnd },
    /// An adopted orphan of the tree.
    Orphan { pid: i32, end: ChildEnd },
}

/// What a [`Action::GiveTerminal`] was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterTerminal {
    /// Passing the terminal on after `fg`: nothing follows either way.
    Nothing,
    /// The main child touched the terminal and was stopped by this signal: continue it if it
    /// got the terminal, else stop watchd too.
    Touched(Signal),
}

/// What to do. Results that the machine needs come back as an [`Event`].
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Forward signals, in order (→ [`Event::Forwarded`]). To the tree, one walk serves the
    /// batch and each process gets each distinct signal once.
    Forward { sigs: Vec<Signal>, to: ForwardTo },
    /// The drain: `sig` then SIGCONT to the main child, then to the rest of the tree if `scope`
    /// says so (→ [`Event::StopSent`]).
    Stop { sig: Signal, scope: StopScope },
    /// `sig` and SIGCONT to what is left of the tree (→ [`Event::LeftoversStopped`]).
    StopLeftovers { sig: Signal },
    /// `sig` to the main child (if it is alive) and to everything left in the tree, the tree
    /// stopped first so nothing outruns it (→ [`Event::Killed`]).
    Kill { sig: Signal, main_alive: bool },
    /// SIGKILL to everything left in the tree.
    FinalKill,
    /// SIGKILL to everything left in the tree, to see whether anything but processes in
    /// uninterruptible sleep remains (→ [`Event::Swept`]).
    Sweep,
    /// Start `sh -c CMD` with WATCHD_PID (→ [`Event::StopCmdStarted`]).
    RunStopCmd { cmd: String },
    /// Kill the `--stop-cmd` shell if it still runs.
    KillStopCmd,
    /// Scan the tree; `at` is the sample's stamp (→ [`Event::Sample`]).
    Probe { at: Duration },
    /// Start a health check (→ [`Event::HealthDone`] when it ends).
    RunHealth,
    /// Kill the running health check: the machine has given up on it.
    AbortHealth,
    /// Read the tree for the dump (→ [`Event::Dumped`]).
    Dump,
    /// `--dump-signal` to every process of the tree.
    DumpSignal(Signal),
    /// `--dump-cmd` for each process of the tree in turn, main child first, until `until`
    /// (→ [`Event::DumpCmdsDone`]).
    DumpCmds { cmd: String, until: Instant },
    /// The dump's time is up: kill the running `--dump-cmd` and skip the rest, saying how many.
    EndDumpCmds,
    /// A message to the service manager watchd runs under (`READY=1`, `WATCHDOG=1`, ...).
    Upstream(String),
    /// Start the command again (→ [`Event::Spawned`] or [`Event::ExecFailed`]).
    Spawn,
    /// Give the terminal to the main child's group if watchd's group has it
    /// (→ [`Event::Terminal`]).
    GiveTerminal { then: AfterTerminal },
    /// SIGCONT to the main child's process group.
    ContinueGroup,
    /// Stop watchd itself with this signal, as the shell expects of a stopped job
    /// (→ [`Event::Resumed`] once continued).
    StopSelf(Signal),
    /// Give the terminal back to watchd's group if the child's group has it.
    ReturnTerminal,
    /// A `watchd: ` line on stderr at this level.
    Say(Level, String),
    /// A `watchd: ` line on stderr at every level, even `-q` (like a usage error).
    Fail(String),
    /// A JSON-lines event.
    Emit(Record),
    /// Rewrite the metrics file.
    Metrics(Metrics),
    /// Exit (or die) so.
    Exit(Outcome),
}

/// Where the run stands.
#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// The main child runs and no trigger has fired.
    Running,
    /// A trigger fired; the dump's signal and commands have until `until` (or until the
    /// commands end, `cmds_done`), then the stop goes out.
    Dumping { until: Option<Instant>, cmds_done: bool },
    /// The stop went out; the kill follows at `kill_at`. `rest_stopped`: the whole tree got
    /// the stop signal, so leftovers need not get it again.
    Stopping { kill_at: Instant, rest_stopped: bool },
    /// The main child ended; what it left behind got the stop signal and has until `kill_at`.
    Cleanup { end: Ended, kill_at: Instant },
    /// The kill signal went out. `final_at`: SIGKILL follows (a `--kill-signal` other than
    /// KILL); `give_up_at`: kill and look again.
    Killing { end: Option<Ended>, final_at: Option<Instant>, give_up_at: Instant },
    /// The run is over; the next starts at `restart_at`.
    Waiting { restart_at: Instant },
    /// [`Action::Exit`] was returned.
    Exited,
}

/// How and when the main child ended.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Ended {
    end: ChildEnd,
    at: Instant,
}

/// Why and when watchd stopped the run, and how ("SIGTERM", "--stop-cmd").
#[derive(Clone, Debug)]
struct Stopped {
    reason: Reason,
    detail: String,
    /// When the stop went out; `None` while the dump still runs.
    sent: Option<Instant>,
    how: String,
}

/// When the next probe is due, and whether the window up to it proves nothing (watchd itself
/// was stopped or frozen during it).
#[derive(Clone, Copy, Debug)]
struct ProbeClock {
    next: Instant,
    void: bool,
}

/// The health checks of a run.
#[derive(Clone, Debug)]
struct Health {
    schedule: HealthSchedule,
    /// The running check's deadline.
    running: Option<Instant>,
}

/// One run of the command: what starts afresh at each (re)start.
struct Run {
    /// From 1.
    number: u32,
    started: Instant,
    policy: Policy,
    probes: ProbeClock,
    readiness: Readiness,
    health: Option<Health>,
    /// `EXTEND_TIMEOUT_USEC`: `--timeout` expires no sooner than this.
    timeout_floor: Option<Instant>,
    stopped: Option<Stopped>,
    /// Signals watchd itself delivered to the main child: a death by one of them is no
    /// surprise.
    sent_to_main: SignalSet,
    /// The OOM finding that came with the main child's death.
    oom: Option<String>,
    /// The main child died of SIGINT or SIGQUIT while its group held the terminal: the user
    /// pressed Ctrl-C (Ctrl-\), which is a request to stop like a SIGTERM to watchd.
    interrupted_by_user: bool,
    /// A probe could not see the main child, and watchd said so.
    blind_said: bool,
    /// `WATCHDOG=1` pings since the last probe.
    pings: u32,
    last: Option<Sample>,
}

impl Run {
    fn new(number: u32, set: &Settings, limits: &Limits, now: Instant) -> Run {
        let awaited = ReadyBy::awaited(set.health.is_some(), set.notify);
        Run {
            number,
            started: now,
            policy: Policy::new(limits.clone()),
            probes: ProbeClock { next: now + set.interval, void: false },
            readiness: Readiness::new(awaited, now, set.ready_timeout),
            health: set
                .health
                .map(|t| Health { schedule: HealthSchedule::new(t, now), running: None }),
            timeout_floor: None,
            stopped: None,
            sent_to_main: SignalSet::default(),
            oom: None,
            interrupted_by_user: false,
            blind_said: false,
            pings: 0,
            last: None,
        }
    }
}

/// How a finished run ended, kept for watchd's own end after a restart delay.
#[derive(Clone, Debug, PartialEq)]
struct RunEnd {
    end: ChildEnd,
    /// watchd stopped it: the trigger's reason.
    reason: Option<Reason>,
    duration: Duration,
    /// The diagnosis of a death watchd did not cause.
    diagnosis: Option<String>,
}

pub struct Machine {
    set: Settings,
    /// The command, for the start event of every run.
    argv: Vec<std::ffi::OsString>,
    /// The command's cgroup, for the start event.
    cgroup: Option<String>,
    /// The limits every run starts with (`WATCHDOG_USEC` may change a run's stall window).
    limits: Limits,
    state: State,
    run: Run,
    /// The end of the last finished run, while waiting to restart.
    last_end: Option<RunEnd>,
    restarts: u32,
    /// The delay of the next restart (`--restart-delay`, doubling).
    delay: Duration,
    /// When watchd was first asked to stop (SIGTERM, SIGINT or SIGQUIT, e.g. `docker stop`):
    /// no restart follows, and the whole stop, leftovers included, fits in one grace.
    stop_requested: Option<Instant>,
    stops_total: [u64; Reason::ALL.len()],
    health_failures_total: u64,
    /// The command's last `STATUS=`.
    status: Option<String>,
    /// The last `STATUS=` told upstream, so that a change is told once.
    upstream_status: String,
    /// When the next `WATCHDOG=1` to the service manager is due.
    upstream_ping: Option<Instant>,
    /// `STOPPING=1` went upstream.
    stopping_said: bool,
}

impl Machine {
    /// A machine for the main child `main_pid`, started at `now`. The start line and event are
    /// in the returned actions.
    pub fn new(
        set: Settings,
        limits: Limits,
        main_pid: i32,
        argv: &[std::ffi::OsString],
        cgroup: Option<String>,
        now: Instant,
    ) -> (Machine, Vec<Action>) {
        let run = Run::new(1, &set, &limits, now);
        let upstream_ping = set.upstream.flatten().map(|usec| now + usec / 2);
        let mut m = Machine {
            delay: set.restart.delay,
            argv: argv.to_vec(),
            cgroup: cgroup.clone(),
            set,
            limits,
            state: State::Running,
            run,
            last_end: None,
            restarts: 0,
            stop_requested: None,
            stops_total: [0; Reason::ALL.len()],
            health_failures_total: 0,
            status: None,
            upstream_status: String::new(),
            upstream_ping,
            stopping_said: false,
        };
        let mut out = Vec::new();
        m.started(main_pid, argv, cgroup, &mut out);
        (m, out)
    }

    /// The start line and event of a run, and `STATUS=starting` upstream.
    fn started(
        &mut self,
        pid: i32,
        argv: &[std::ffi::OsString],
        cgroup: Option<String>,
        out: &mut Vec<Action>,
    ) {
        if self.set.details {
            let words: Vec<_> = argv.iter().map(|a| a.to_string_lossy()).collect();
            let run = match self.run.number {
                1 => String::new(),
                n => format!(" (run {n})"),
            };
            let text = format!("started {} as pid {pid}{run}", words.join(" "));
            self.say(out, Level::Verbose, text);
        }
        let run = self.run.number;
        out.push(Action::Emit(Record::Start { pid, argv: argv.to_vec(), run, cgroup }));
        self.tell_status(out, "starting".to_string());
    }

    /// The earliest instant at which [`Event::Tick`] has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        let alive = self.main_alive();
        let probe = alive.then_some(self.run.probes.next);
        let running = matches!(self.state, State::Running);
        let timeout = running.then(|| self.timeout_at()).flatten();
        let ready = running.then(|| self.run.readiness.deadline()).flatten();
        let health = self.run.health.as_ref().filter(|_| running).and_then(|h| match h.running {
            Some(deadline) => Some(deadline),
            None => h.schedule.next_check(),
        });
        let ladder = match self.state {
            State::Running | State::Exited => None,
            State::Dumping { until, .. } => until,
            State::Stopping { kill_at, .. } | State::Cleanup { kill_at, .. } => Some(kill_at),
            State::Killing { final_at: Some(t), .. } => Some(t),
            State::Killing { final_at: None, give_up_at, .. } => Some(give_up_at),
            State::Waiting { restart_at } => Some(restart_at),
        };
        let ping = self.upstream_ping.filter(|_| self.state != State::Exited);
        [probe, timeout, ready, health, ladder, ping].into_iter().flatten().min()
    }

    /// Whether [`Action::Exit`] has been returned.
    pub fn exited(&self) -> bool {
        self.state == State::Exited
    }

    /// The run under way (or last run), from 1.
    pub fn run(&self) -> u32 {
        self.run.number
    }

    /// The window within which the tree must show evidence of life, if any: the stall window
    /// in force (`--stall`, or the command's `WATCHDOG_USEC`), else the interval of the service
    /// manager's watchdog, whose pings watchd backs with the tree's progress. Without one,
    /// evidence decides nothing, and costly kinds of it (NVML) need not be gathered for it.
    pub fn evidence_window(&self) -> Option<Duration> {
        self.run.policy.stall().or(self.set.upstream.flatten())
    }

    pub fn on(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.exited() {
            return out;
        }
        match event {
            Event::Signals(sigs) => self.on_signals(&sigs, now, &mut out),
            Event::Reaped { ends, children_left } => {
                self.on_reaped(ends, children_left, now, &mut out)
            }
            Event::MainStopped { sig, on_terminal } => {
                // Not while watchd kills: its own SIGSTOP of the tree must not stop watchd.
                let running = matches!(
                    self.state,
                    State::Running | State::Dumping { .. } | State::Stopping { .. }
                );
                if on_terminal && !self.set.exit.pid1 && running {
                    out.push(self.touched_or_stop(sig));
                }
            }
            Event::Tick => self.on_tick(now, &mut out),
            Event::Execed => {
                if self.main_alive() {
                    self.ready(ReadyBy::Start, now, &mut out);
                }
            }
            Event::Sample(sample) => self.on_sample(sample, now, &mut out),
            Event::Forwarded { delivered, to } => {
                for sig in delivered {
                    self.run.sent_to_main.add(sig);
                    if self.set.details {
                        let to = to_name(to);
                        self.say(&mut out, Level::Verbose, format!("forwarded {sig} to the {to}"));
                        out.push(Action::Emit(Record::Signal { signal: sig.to_string(), to }));
                    }
                }
            }
            Event::LeftoversStopped { sig, count } => {
                if count > 0 {
                    let text = format!("sent {sig} to {count} leftover processes");
                    self.say(&mut out, Level::Verbose, text);
                }
            }
            Event::Swept { count, stuck } => self.on_swept(count, stuck, now, &mut out),
            Event::Killed { sig, count, .. } => {
                out.push(Action::Emit(Record::Kill { signal: sig.to_string(), processes: count }));
                if count > 0 && self.run.stopped.is_none() {
                    let grace = human_duration(self.set.grace);
                    self.say(
                        &mut out,
                        Level::Normal,
                        format!(
                            "{count} processes left by the child outlived the {grace} grace; \
                             sent {sig}"
                        ),
                    );
                }
            }
            Event::StopCmdStarted(Err(err)) => {
                let text = format!("--stop-cmd failed: {err}; the grace still runs");
                self.say(&mut out, Level::Normal, text);
            }
            Event::StopCmdStarted(Ok(())) => {}
            Event::StopSent(sent) => self.on_stop_sent(sent, &mut out),
            Event::Terminal { given, then: AfterTerminal::Touched(sig) } => {
                if given {
                    // The shell made the job foreground without a signal (bash's `fg` of a job
                    // running in the background): the child goes on with the terminal.
                    out.push(Action::ContinueGroup);
                } else {
                    out.push(Action::StopSelf(self.stop_with(sig)));
                }
            }
            Event::Terminal { then: AfterTerminal::Nothing, .. } => {}
            Event::ExecFailed(err) => {
                out.push(Action::Fail(err.to_string()));
                let ending = match err {
                    SpawnError::NotFound(_) => Ending::NotFound,
                    SpawnError::NotExecutable(_) => Ending::NotExecutable,
                    SpawnError::Internal(_) => Ending::Failed,
                };
                self.tell_stopping(&mut out);
                out.push(Action::Exit(exit::outcome(ending, &self.set.exit)));
                self.state = State::Exited;
            }
            Event::Spawned { pid } => self.on_spawned(pid, now, &mut out),
            Event::Resumed => {
                // fg or bg: the window watchd spent stopped proves nothing; resume the child's
                // whole group, as a shell resumes a job, with the terminal if the shell gave it.
                self.run.probes.void = true;
                out.push(Action::GiveTerminal { then: AfterTerminal::Nothing });
                out.push(Action::ContinueGroup);
            }
            Event::HealthDone { ok, detail, took } => {
                self.on_health_done(ok, detail, took, now, &mut out)
            }
            Event::Notify { pid, in_tree, message } => {
                self.on_notify(pid, in_tree, message, now, &mut out)
            }
            Event::Dumped { lines, processes } => {
                for line in lines {
                    self.say(&mut out, Level::Normal, line);
                }
                // What the command last said of itself belongs to the picture.
                if let Some(status) = self.status.clone() {
                    self.say(&mut out, Level::Normal, format!("its last STATUS: {status}"));
                }
                out.push(Action::Emit(Record::Dump { processes }));
            }
            Event::DumpCmdsDone => {
                if let State::Dumping { until, .. } = self.state {
                    self.state = State::Dumping { until, cmds_done: true };
                    self.ladder(now, &mut out);
                }
            }
        }
        out
    }

    fn main_alive(&self) -> bool {
        matches!(
            self.state,
            State::Running
                | State::Dumping { .. }
                | State::Stopping { .. }
                | State::Killing { end: None, .. }
        )
    }

    fn main_end(&self) -> Option<Ended> {
        match self.state {
            State::Cleanup { end, .. } | State::Killing { end: Some(end), .. } => Some(end),
            _ => None,
        }
    }

    fn say(&self, out: &mut Vec<Action>, level: Level, text: String) {
        out.push(Action::Say(level, text));
    }

    /// `STATUS=` to the service manager, when it changed.
    fn tell_status(&mut self, out: &mut Vec<Action>, status: String) {
        if self.set.upstream.is_some() && status != self.upstream_status {
            out.push(Action::Upstream(format!("STATUS={status}")));
            self.upstream_status = status;
        }
    }

    /// The run's state as STATUS= says it when the command said nothing of its own.
    fn run_status(&self) -> String {
        let ready = self.run.readiness.is_ready();
        if ready { "ready" } else { "starting" }.to_string()
    }

    /// `STOPPING=1` to the service manager, once: watchd itself is about to end.
    fn tell_stopping(&mut self, out: &mut Vec<Action>) {
        if self.set.upstream.is_some() && !std::mem::replace(&mut self.stopping_said, true) {
            out.push(Action::Upstream("STOPPING=1".to_string()));
        }
    }

    fn timeout_at(&self) -> Option<Instant> {
        let at = self.run.started + self.run.policy.timeout_at()?;
        Some(self.run.timeout_floor.map_or(at, |floor| at.max(floor)))
    }

    fn on_signals(&mut self, incoming: &[Incoming], now: Instant, out: &mut Vec<Action>) {
        let mut sigs = Vec::with_capacity(incoming.len());
        for &Incoming { sig, by_process } in incoming {
            // A fault the kernel raised in watchd itself kills it (blocked or not); one that
            // reaches the signalfd without a sender is nobody's to forward.
            if signals::is_synchronous(sig) && !by_process {
                continue;
            }
            if [SIGTERM, SIGINT, SIGQUIT].contains(&sig) && self.stop_requested.is_none() {
                self.stop_requested = Some(now);
                self.tell_stopping(out);
            }
            match self.set.rewrite.iter().find(|(from, _)| *from == sig) {
                Some((_, Some(to))) => sigs.push(*to),
                Some((_, None)) => {}
                None => sigs.push(sig),
            }
        }
        if let (State::Waiting { .. }, Some(_)) = (self.state, self.stop_requested) {
            // Asked to stop between runs: there is no child to tell; end with the last run's
            // status at once. Other signals are dropped then.
            if let Some(last) = self.last_end.take() {
                self.exit_with(last, out);
            }
            return;
        }
        if !self.main_alive() || sigs.is_empty() {
            return; // the main child is gone; what is left is being cleaned up
        }
        if sigs.contains(&SIGCONT) && !self.set.exit.pid1 {
            // A shell that sends SIGCONT with `fg` of a running job (`bg`, `&`) has just given
            // watchd's group the terminal: the child's group would have it without watchd.
            out.push(Action::GiveTerminal { then: AfterTerminal::Nothing });
        }
        out.push(Action::Forward { sigs, to: self.set.forward_to });
    }

    /// Job control: the main child was stopped on watchd's terminal.
    fn touched_or_stop(&self, sig: Signal) -> Action {
        if sig == SIGTTIN || sig == SIGTTOU {
            // The child touched the terminal: if watchd's group is the foreground group, the
            // shell meant the job to have it.
            Action::GiveTerminal { then: AfterTerminal::Touched(sig) }
        } else {
            Action::StopSelf(self.stop_with(sig))
        }
    }

    /// The signal watchd stops itself with so the shell sees what stopped the job: the child's
    /// own stop signal where watchd can take it, else SIGSTOP.
    fn stop_with(&self, sig: Signal) -> Signal {
        if [SIGTSTP, SIGTTIN, SIGTTOU].contains(&sig) && !self.set.ignored.contains(sig) {
            sig
        } else {
            SIGSTOP
        }
    }

    fn on_reaped(
        &mut self,
        ends: Vec<Reap>,
        children_left: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let mut main_end = None;
        for reap in ends {
            let (pid, end) = match &reap {
                Reap::Main { pid, end, .. }
                | Reap::StopCmd { pid, end }
                | Reap::Orphan { pid, end } => (*pid, *end),
            };
            out.push(Action::Emit(Record::Reap { pid, status: end.to_string() }));
            match reap {
                Reap::Main { end, oom, held_terminal, .. } => {
                    main_end = Some(Ended { end, at: now });
                    self.run.oom = oom;
                    self.run.interrupted_by_user = held_terminal
                        && matches!(end, ChildEnd::Killed(s) if s == SIGINT || s == SIGQUIT);
                }
                Reap::StopCmd { end, .. } => {
                    // Only while its grace runs: once the child ended or the kill went out,
                    // watchd killed it itself.
                    if end != ChildEnd::Exited(0) && matches!(self.state, State::Stopping { .. }) {
                        let text = format!("--stop-cmd failed ({end}); the grace still runs");
                        self.say(out, Level::Normal, text);
                    }
                }
                Reap::Orphan { pid, end } => {
                    if self.set.details {
                        self.say(out, Level::Verbose, format!("reaped orphan {pid} ({end})"));
                    }
                }
            }
        }
        match (main_end, self.main_end()) {
            (Some(ended), _) if self.main_alive() => {
                self.on_main_end(ended, children_left, now, out)
            }
            (_, Some(ended)) if !children_left => self.end_run(ended, now, out),
            _ => {}
        }
    }

    /// Whether `--restart` asks for another run after one that ended so: the mode says so,
    /// and watchd was not asked to stop (nor the user pressed Ctrl-C on the run).
    fn wants_restart(&self, end: ChildEnd) -> bool {
        let stopped = self.run.stopped.is_some();
        let success =
            !stopped && (end == ChildEnd::Exited(0) || self.set.exit.success.contains(&end));
        let wanted = match self.set.restart.mode {
            RestartMode::No => false,
            RestartMode::OnFailure => !success,
            RestartMode::Always => true,
        };
        wanted && self.stop_requested.is_none() && !self.run.interrupted_by_user
    }

    /// Whether another run follows one that ended so: wanted, and `--restart-max` has room.
    fn restart_follows(&self, end: ChildEnd) -> bool {
        self.wants_restart(end) && self.set.restart.max.is_none_or(|max| self.restarts < max)
    }

    /// The main child ended. With nothing left of the tree (or `--no-cleanup` and no restart
    /// to follow) the run is over; else what it left behind gets the stop signal (unless the
    /// drain already sent it to the whole tree) and whatever grace runs goes on.
    fn on_main_end(
        &mut self,
        ended: Ended,
        children_left: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if self.set.stop_cmd.is_some() {
            // Its job was to stop the main child, which is over.
            out.push(Action::KillStopCmd);
        }
        // A restart needs the previous tree gone, --no-cleanup or not.
        let cleanup = self.set.cleanup || self.restart_follows(ended.end);
        if !cleanup || !children_left {
            return self.end_run(ended, now, out);
        }
        let stop_leftovers = Action::StopLeftovers { sig: self.set.stop_signal };
        self.state = match self.state {
            State::Running | State::Dumping { .. } => {
                out.push(stop_leftovers);
                // Asked to stop (docker stop): the grace runs from that request, so the whole
                // stop ends with watchd's kill before the engine's.
                let from = self.stop_requested.unwrap_or(now);
                State::Cleanup { end: ended, kill_at: from + self.set.grace }
            }
            State::Stopping { kill_at, rest_stopped } => {
                if !rest_stopped {
                    out.push(stop_leftovers);
                }
                State::Cleanup { end: ended, kill_at }
            }
            State::Killing { end: None, final_at, give_up_at } => {
                State::Killing { end: Some(ended), final_at, give_up_at }
            }
            other => other,
        };
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Some(at) = self.upstream_ping.filter(|&at| now >= at) {
            let half = self.set.upstream.flatten().unwrap_or(Duration::from_secs(1)) / 2;
            // Backed by the tree's progress: no ping while it shows none within the window.
            let window = self.evidence_window();
            // The stall clock as of now: what it read at the last probe, plus the time since.
            let probed = self.run.last.map_or(self.run.started, |s| self.run.started + s.at);
            let quiet = self.run.policy.since_progress() + now.saturating_duration_since(probed);
            let alive = match self.state {
                State::Waiting { .. } => true,
                _ => window.is_none_or(|w| quiet < w),
            };
            if alive && self.main_alive() || matches!(self.state, State::Waiting { .. }) {
                out.push(Action::Upstream("WATCHDOG=1".to_string()));
                if self.upstream_status.starts_with("stalled for ") {
                    // Progress again: back to what the state was.
                    let back = self.status.clone().unwrap_or_else(|| self.run_status());
                    self.tell_status(out, back);
                }
            } else if self.state == State::Running
                && !self.upstream_status.starts_with("stalled for ")
            {
                // Pings withheld: the service manager's watchdog will act; say why, once.
                let quiet = human_duration(Duration::from_secs(quiet.as_secs().max(1)));
                self.tell_status(out, format!("stalled for {quiet}"));
            }
            self.upstream_ping = Some((at + half).max(now));
        }
        if self.state == State::Running {
            if self.timeout_at().is_some_and(|at| now >= at)
                && let Some(timeout) = self.run.policy.timeout_at()
            {
                let detail = format!("ran for {}, the --timeout", human_duration(timeout));
                self.trigger(Trigger { reason: Reason::Timeout, detail }, now, out);
            } else if self.run.readiness.expired(now) {
                let after = human_duration(now.saturating_duration_since(self.run.started));
                let detail = format!("not ready {after} after it started, the --ready-timeout");
                self.trigger(Trigger { reason: Reason::NotReady, detail }, now, out);
            }
        }
        if self.state == State::Running {
            self.health_tick(now, out);
        }
        if self.main_alive() && now >= self.run.probes.next {
            // Samples are stamped with the cadence tick they belong to, not the instant the
            // poll happened to wake: windows are then exact multiples of the interval, and a
            // stall window of N intervals fires at the Nth tick. Missed ticks are skipped.
            let interval = self.set.interval;
            let late = now.saturating_duration_since(self.run.probes.next);
            if late > interval {
                // watchd itself could not run for a while (docker pause, a frozen cgroup, a
                // suspended VM, CRIU): the tree was frozen too, so the window proves nothing.
                self.run.probes.void = true;
            }
            let behind = late.as_nanos() / interval.as_nanos();
            let tick = u32::try_from(behind)
                .ok()
                .and_then(|n| interval.checked_mul(n))
                .map_or(now, |skip| self.run.probes.next + skip);
            self.run.probes.next = tick + interval;
            out.push(Action::Probe { at: tick.saturating_duration_since(self.run.started) });
        }
        self.ladder(now, out);
    }

    /// Starts a due health check, or gives up on one past its `--health-timeout`.
    fn health_tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(health) = &mut self.run.health else { return };
        match health.running {
            Some(deadline) if now >= deadline => {
                health.running = None;
                out.push(Action::AbortHealth);
                let took = self.set.health.map_or(Duration::ZERO, |t| t.timeout);
                let detail = format!("timed out after {} (--health-timeout)", human_duration(took));
                self.health_result(false, detail, took, now, out);
            }
            Some(_) => {}
            None => {
                if health.schedule.next_check().is_some_and(|at| now >= at) {
                    health.running = Some(health.schedule.check_started(now));
                    out.push(Action::RunHealth);
                }
            }
        }
    }

    fn on_health_done(
        &mut self,
        ok: bool,
        detail: String,
        took: Duration,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        // A check the machine gave up on (timed out) or one of a finished run: no news.
        let Some(health) = &mut self.run.health else { return };
        if health.running.take().is_none() {
            return;
        }
        self.health_result(ok, detail, took, now, out);
    }

    fn health_result(
        &mut self,
        ok: bool,
        detail: String,
        took: Duration,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(health) = &mut self.run.health else { return };
        let verdict = health.schedule.check_ended(now, ok);
        if !ok {
            self.health_failures_total += 1;
        }
        out.push(Action::Emit(Record::Health {
            ok,
            detail: detail.clone(),
            duration_s: took.as_secs_f64(),
            failures: verdict.failures,
        }));
        if verdict.first_pass {
            self.ready(ReadyBy::Health, now, out);
        }
        if verdict.unhealthy && self.state == State::Running {
            let n = verdict.counted;
            let checks = if n == 1 { "health check" } else { "health checks" };
            let detail = format!("{n} {checks} failed in a row (last: {detail})");
            self.trigger(Trigger { reason: Reason::Unhealthy, detail }, now, out);
        }
    }

    /// `by` says the run's child is ready: the first time it counts, say so everywhere.
    fn ready(&mut self, by: ReadyBy, now: Instant, out: &mut Vec<Action>) {
        let Some(ready) = self.run.readiness.on(by, now) else { return };
        if self.set.details {
            let how = match by {
                ReadyBy::Health => "health check",
                ReadyBy::Notify => "READY=1",
                ReadyBy::Start => "started",
            };
            let text = format!("ready after {} ({how})", human_duration(ready.after));
            self.say(out, Level::Verbose, text);
        }
        out.push(Action::Emit(Record::Ready { after_s: ready.after.as_secs_f64(), by: by.name() }));
        if self.set.upstream.is_some() {
            out.push(Action::Upstream("READY=1".to_string()));
        }
        self.tell_status(out, self.status.clone().unwrap_or_else(|| "ready".to_string()));
    }

    fn on_notify(
        &mut self,
        pid: i32,
        in_tree: bool,
        message: Message,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if !in_tree {
            if self.set.details {
                let text = format!("dropped a notify message from pid {pid}, not of the tree");
                self.say(out, Level::Verbose, text);
            }
            return;
        }
        out.push(Action::Emit(Record::Notify { pid, fields: message.fields.clone() }));
        let alive = self.main_alive();
        if message.ready && self.set.notify && alive {
            self.ready(ReadyBy::Notify, now, out);
        }
        if message.watchdog_ping {
            self.run.pings = self.run.pings.saturating_add(1);
        }
        if let Some(usec) = message.watchdog_usec {
            let window = (usec > 0).then(|| Duration::from_micros(usec));
            self.run.policy.set_stall(window);
        }
        if let Some(usec) = message.extend_timeout_usec {
            let by = Duration::from_micros(usec);
            let floor = now.checked_add(by).unwrap_or(now);
            self.run.timeout_floor = Some(self.run.timeout_floor.map_or(floor, |f| f.max(floor)));
            self.run.readiness.extend(now, by);
            if self.set.upstream.is_some() {
                out.push(Action::Upstream(format!("EXTEND_TIMEOUT_USEC={usec}")));
            }
        }
        if let Some(status) = message.status {
            if self.set.details {
                self.say(out, Level::Verbose, format!("status: {status}"));
            }
            self.status = Some(status.clone());
            self.tell_status(out, status);
        }
        if message.watchdog_trigger && alive && self.state == State::Running {
            let detail = "the command sent WATCHDOG=trigger".to_string();
            self.trigger(Trigger { reason: Reason::Watchdog, detail }, now, out);
        }
    }

    /// The deadlines of the drain ladder and of the restart delay.
    fn ladder(&mut self, now: Instant, out: &mut Vec<Action>) {
        match self.state {
            State::Dumping { until, cmds_done } => {
                // With a dump signal the runtimes get their time; dump commands alone end the
                // wait as soon as they are done.
                let done = cmds_done && self.set.dump.signal.is_none();
                if done || until.is_none_or(|u| now >= u) {
                    self.stop(now, out);
                    self.ladder(now, out);
                }
            }
            State::Stopping { kill_at, .. } if now >= kill_at => self.kill(None, now, out),
            State::Cleanup { end, kill_at } if now >= kill_at => self.kill(Some(end), now, out),
            State::Killing { end, final_at: Some(t), give_up_at } if now >= t => {
                out.push(Action::FinalKill);
                let give_up_at = give_up_at.max(now + KILL_WAIT);
                self.state = State::Killing { end, final_at: None, give_up_at };
            }
            State::Killing { end: Some(_), final_at: None, give_up_at } if now >= give_up_at => {
                // Leftovers outlived the kill: kill again and look at what is left. Only
                // processes in uninterruptible sleep are given up on.
                out.push(Action::Sweep);
            }
            State::Waiting { restart_at } if now >= restart_at => {
                out.push(Action::Spawn);
            }
            _ => {}
        }
    }

    fn on_swept(&mut self, count: u32, stuck: u32, now: Instant, out: &mut Vec<Action>) {
        let State::Killing { end: Some(end), final_at: None, .. } = self.state else { return };
        if count > stuck {
            // Something that can still die is alive: keep at it.
            let give_up_at = now + KILL_WAIT;
            self.state = State::Killing { end: Some(end), final_at: None, give_up_at };
            return;
        }
        if stuck > 0 {
            let text = format!(
                "{stuck} processes in uninterruptible sleep (D) did not die of SIGKILL; leaving \
                 them"
            );
            self.say(out, Level::Normal, text);
        }
        self.end_run(end, now, out);
    }

    fn on_sample(&mut self, mut sample: Sample, now: Instant, out: &mut Vec<Action>) {
        sample.pings = std::mem::take(&mut self.run.pings);
        let run = &mut self.run;
        let trigger = if sample.visible {
            let interrupted = std::mem::take(&mut run.probes.void);
            run.policy.observe(&sample, interrupted)
        } else {
            // No data is no verdict: the child is alive (not reaped) but /proc does not show
            // it. The window that sees it again starts afresh.
            run.probes.void = true;
            if self.set.proc_ok && !std::mem::replace(&mut run.blind_said, true) {
                out.push(Action::Say(
                    Level::Normal,
                    "cannot see the command in /proc (hidepid, or a set-uid command): no stall, \
                     CPU or memory verdict until it can"
                        .to_string(),
                ));
            }
            None
        };
        let cpu_seconds = sample.cpu_ticks as f64 / self.set.clk_tck.max(1) as f64;
        let since = self.run.policy.since_progress().as_secs_f64();
        let pressure = sample.pressure.unwrap_or_default();
        out.push(Action::Emit(Record::Sample {
            cpu_cores: self.run.policy.cpu_cores(),
            cpu_seconds,
            io_bytes: sample.io_bytes,
            rss_bytes: sample.rss_bytes,
            processes: sample.processes,
            since_progress_s: since,
            psi_cpu: pressure.cpu,
            psi_io: pressure.io,
            psi_memory: pressure.memory,
            gpu_util: sample.gpu.and_then(|g| g.util),
            gpu_memory_bytes: sample.gpu.and_then(|g| g.memory_bytes),
        }));
        self.run.last = Some(sample);
        if let Some(trigger) = trigger {
            // A second trigger during a drain is recorded, and changes nothing.
            self.trigger(trigger, now, out);
        }
        // After the trigger, so a stop shows in watchd_stops_total the moment it happens.
        out.push(Action::Metrics(self.metrics(&sample, cpu_seconds, since)));
        self.ladder(now, out);
    }

    fn metrics(&self, sample: &Sample, cpu_seconds: f64, since: f64) -> Metrics {
        let healthy = self.run.health.as_ref().and_then(|h| h.schedule.last_ok());
        Metrics {
            cpu_cores: self.run.policy.cpu_cores().unwrap_or(0.0),
            cpu_seconds_total: cpu_seconds,
            io_bytes_total: sample.io_bytes,
            rss_bytes: sample.rss_bytes,
            processes: sample.processes,
            seconds_since_progress: since,
            stops_total: self.stops_total,
            output_dropped: 0,
            ready: self.run.readiness.is_ready(),
            healthy,
            health_failures_total: self.health_failures_total,
            restarts_total: u64::from(self.restarts),
            pressure: sample.pressure.map(|p| [p.cpu, p.io, p.memory]),
            gpu_utilization: sample.gpu.and_then(|g| g.util).map(|u| u / 100.0),
            gpu_memory_bytes: sample.gpu.and_then(|g| g.memory_bytes),
        }
    }

    /// A limit fired: say why, take the dump, then (at once, or once the dump has had its
    /// time) the stop. A second trigger during a drain is recorded but changes nothing.
    fn trigger(&mut self, trigger: Trigger, now: Instant, out: &mut Vec<Action>) {
        let Trigger { reason, detail } = trigger;
        out.push(Action::Emit(Record::Trigger { reason: reason.as_str(), detail: detail.clone() }));
        if self.state != State::Running {
            return;
        }
        self.stops_total[reason.index()] += 1;
        self.tell_status(out, format!("draining: {reason}"));
        let how = match &self.set.stop_cmd {
            Some(_) => "--stop-cmd".to_string(),
            None => self.set.stop_signal.to_string(),
        };
        self.run.stopped = Some(Stopped { reason, detail, sent: None, how });
        // The trigger line first, then the dump (the tree as it was), then the stop.
        let dump = self.set.dump.clone();
        let waits = dump.signal.is_some() || dump.cmd.is_some();
        let stop = match &self.set.stop_cmd {
            Some(_) => "running --stop-cmd".to_string(),
            None => format!("sending {}", self.set.stop_signal),
        };
        let action = if waits {
            format!("{stop} in {} (after the dump)", human_duration(dump.wait))
        } else {
            stop
        };
        self.say_drain(out, action);
        if dump.snapshot {
            out.push(Action::Dump);
        }
        if !waits {
            return self.stop(now, out);
        }
        let until = now.checked_add(dump.wait);
        if let Some(sig) = dump.signal {
            out.push(Action::DumpSignal(sig));
            self.run.sent_to_main.add(sig);
        }
        if let Some(cmd) = dump.cmd {
            out.push(Action::DumpCmds { cmd, until: until.unwrap_or(now) });
        }
        self.state = State::Dumping { until, cmds_done: false };
    }

    /// The drain proper: the stop signal (or --stop-cmd), and the grace.
    fn stop(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Some(stopped) = &mut self.run.stopped {
            stopped.sent = Some(now);
        }
        if let State::Dumping { cmds_done: false, .. } = self.state {
            out.push(Action::EndDumpCmds);
        }
        let (grace, sig) = (self.set.grace, self.set.stop_signal);
        let grace_s = grace.as_secs_f64();
        let rest_stopped = match self.set.stop_cmd.clone() {
            Some(cmd) => {
                let stop = Record::Stop { signal: None, cmd: Some(cmd.clone()), grace_s };
                out.push(Action::Emit(stop));
                out.push(Action::RunStopCmd { cmd });
                false
            }
            None => {
                // Act first; the line follows with the result (Event::StopSent). The main child
                // gets the signal directly, exactly once (many programs take a second SIGTERM
                // or SIGINT as "quit now"); then the rest of the tree, if the scope says so.
                out.push(Action::Stop { sig, scope: self.set.stop_scope });
                self.run.sent_to_main.add(sig);
                self.set.stop_scope == StopScope::Tree
            }
        };
        self.state = State::Stopping { kill_at: now + grace, rest_stopped };
    }

    /// `stall: no CPU or I/O progress for 30s (3 processes); sending SIGTERM, SIGKILL in 10s`
    fn say_drain(&self, out: &mut Vec<Action>, action: String) {
        let Some(stopped) = &self.run.stopped else { return };
        let (kill, grace) = (self.set.kill_signal, human_duration(self.set.grace));
        let text = format!("{}: {}; {action}, {kill} in {grace}", stopped.reason, stopped.detail);
        out.push(Action::Say(Level::Normal, text));
    }

    fn on_stop_sent(&mut self, sent: Result<(), String>, out: &mut Vec<Action>) {
        let sig = self.set.stop_signal;
        if let (Err(err), Some(stopped)) = (&sent, &mut self.run.stopped) {
            stopped.how = format!("{sig} could not be sent");
            let text = format!("{}: cannot send {sig} ({err})", stopped.reason);
            self.say(out, Level::Normal, text);
        }
        let signal = sent.is_ok().then(|| sig.to_string());
        let grace_s = self.set.grace.as_secs_f64();
        out.push(Action::Emit(Record::Stop { signal, cmd: None, grace_s }));
    }

    /// A grace ran out: the kill signal to everything still in the tree.
    fn kill(&mut self, end: Option<Ended>, now: Instant, out: &mut Vec<Action>) {
        let sig = self.set.kill_signal;
        let main_alive = end.is_none();
        out.push(Action::Kill { sig, main_alive });
        if main_alive {
            self.run.sent_to_main.add(sig);
        }
        let final_at = (sig != SIGKILL).then(|| now + self.set.grace);
        self.state = State::Killing { end, final_at, give_up_at: now + KILL_WAIT };
    }

    /// The run is over (its tree is gone, or may stay): say how it ended, then restart or end.
    fn end_run(&mut self, ended: Ended, now: Instant, out: &mut Vec<Action>) {
        let Ended { end, at } = ended;
        let duration = at.saturating_duration_since(self.run.started);
        let (how, diagnosis) = self.say_run_end(end, at, out);
        if self.set.details {
            let text = format!("child {end} after {}", human_duration(duration));
            self.say(out, Level::Verbose, text);
        }
        let reason = self.run.stopped.as_ref().map(|s| s.reason);
        let last = RunEnd { end, reason, duration, diagnosis };
        if !self.restart_follows(end) {
            if self.wants_restart(end) {
                let n = self.restarts;
                let text = format!("giving up after {n} restart{}: {how}", plural(n));
                self.say(out, Level::Normal, text);
            }
            return self.exit_with(last, out);
        }
        // Back to the base delay after a run that stayed up longer than the longest delay.
        if duration > self.set.restart.delay_max {
            self.delay = self.set.restart.delay;
        }
        let delay = self.delay;
        self.delay = self.delay.saturating_mul(2).min(self.set.restart.delay_max);
        // Counted when it happens: a stop request during the delay leaves it announced only.
        let n = self.restarts + 1;
        let of = self.set.restart.max.map_or(String::new(), |max| format!(" of {max}"));
        let text = format!("restarting in {} (restart {n}{of}): {how}", human_duration(delay));
        self.say(out, Level::Normal, text);
        let (code, signal) = code_and_signal(end);
        let after = match (reason, end) {
            (Some(reason), _) => reason.as_str(),
            (None, ChildEnd::Killed(_)) => "signal",
            (None, ChildEnd::Exited(_)) => "exit",
        };
        let delay_s = delay.as_secs_f64();
        out.push(Action::Emit(Record::Restart { restart: n, delay_s, after, code, signal }));
        self.tell_status(out, format!("restarting in {}", human_duration(delay)));
        self.last_end = Some(last);
        self.state = State::Waiting { restart_at: now.checked_add(delay).unwrap_or(now) };
        self.ladder(now, out);
    }

    /// The stderr lines of a run's end: how a stopped run ended, or the diagnosis of a death
    /// watchd did not cause. Returns the phrase restart lines use ("child exited with status
    /// 1", "stall (child killed by SIGTERM)"), and the diagnosis.
    fn say_run_end(
        &mut self,
        end: ChildEnd,
        at: Instant,
        out: &mut Vec<Action>,
    ) -> (String, Option<String>) {
        // Whoever handed it to the child (at start or on `fg`): give the terminal back to the
        // group that had it, so a non-interactive parent (a script) is not left behind.
        out.push(Action::ReturnTerminal);
        if let Some(stopped) = &self.run.stopped {
            let how = match end {
                ChildEnd::Killed(sig) if sig == self.set.kill_signal || sig == SIGKILL => format!(
                    "child killed by {sig} at the end of the {} grace",
                    human_duration(self.set.grace)
                ),
                _ => match stopped.sent {
                    Some(sent) => {
                        let after = human_duration(at.saturating_duration_since(sent));
                        format!("child {end} {after} after {}", stopped.how)
                    }
                    None => format!("child {end} during the dump, before {}", stopped.how),
                },
            };
            let reason = stopped.reason;
            self.say(out, Level::Normal, format!("{reason}: {how}"));
            return (format!("{reason} (child {end})"), None);
        }
        let ChildEnd::Killed(sig) = end else { return (format!("child {end}"), None) };
        // A shell is silent when a job dies of SIGINT (Ctrl-C) or SIGPIPE (`| head`), and so
        // is watchd; any other surprise death is explained.
        if self.run.sent_to_main.contains(sig) || sig == SIGINT || sig == SIGPIPE {
            return (format!("child {end}"), None);
        }
        let oom = if sig == SIGKILL { self.run.oom.as_deref() } else { None };
        let last = self.run.last.as_ref().map(|s| LastSeen {
            rss_bytes: s.rss_bytes,
            cpu_cores: self.run.policy.cpu_cores(),
            processes: s.processes,
            since_progress: self.run.policy.since_progress(),
        });
        let mut text = exit::diagnose(sig, oom, last.as_ref());
        if let Some(status) = &self.status {
            text.push_str(&format!("; its last STATUS: {status}"));
        }
        self.say(out, Level::Normal, text.clone());
        (format!("child {end}"), Some(text))
    }

    /// The last word: the exit event and the status, after the last run.
    fn exit_with(&mut self, last: RunEnd, out: &mut Vec<Action>) {
        // The metrics file's last word holds the final counters (a trigger by a health check
        // or a deadline comes between probes), with the last figures probed.
        if let Some(sample) = self.run.last {
            let cpu_seconds = sample.cpu_ticks as f64 / self.set.clk_tck.max(1) as f64;
            let since = self.run.policy.since_progress().as_secs_f64();
            out.push(Action::Metrics(self.metrics(&sample, cpu_seconds, since)));
        }
        let (code, signal) = code_and_signal(last.end);
        out.push(Action::Emit(Record::Exit {
            code,
            signal,
            reason: last.reason.map(Reason::as_str),
            duration_s: last.duration.as_secs_f64(),
            diagnosis: last.diagnosis,
            restarts: self.restarts,
            dropped: 0,
        }));
        self.tell_stopping(out);
        let ending = Ending::Child { end: last.end, stopped: last.reason.is_some() };
        out.push(Action::Exit(exit::outcome(ending, &self.set.exit)));
        self.state = State::Exited;
    }

    /// A restarted run's child exists.
    fn on_spawned(&mut self, pid: i32, now: Instant, out: &mut Vec<Action>) {
        if !matches!(self.state, State::Waiting { .. }) {
            return;
        }
        self.run = Run::new(self.run.number + 1, &self.set, &self.limits, now);
        self.restarts += 1;
        self.state = State::Running;
        let (argv, cgroup) = (self.argv.clone(), self.cgroup.clone());
        self.started(pid, &argv, cgroup, out);
    }
}

/// "s" unless there is exactly one.
fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The exit event's `code` and `signal` for an end.
fn code_and_signal(end: ChildEnd) -> (Option<i32>, Option<String>) {
    match end {
        ChildEnd::Exited(code) => (Some(i32::from(code)), None),
        ChildEnd::Killed(sig) => (None, Some(sig.to_string())),
    }
}

fn to_name(to: ForwardTo) -> &'static str {
    match to {
        ForwardTo::Child => "child",
        ForwardTo::Group => "group",
        ForwardTo::Tree => "tree",
    }
}
#[cfg(test)]
mod tests {
    //! The machine driven by a fake clock and a recording fake of the system (watchexec's
    //! `TestChild` idea): every action is logged, and the ones with results are answered from
    //! `World`, as the driver would answer them from the kernel.

    use super::*;
    use crate::policy::Limits;
    use crate::signals::{SIGHUP, SIGQUIT, SIGTERM, SIGUSR1};
    use std::collections::VecDeque;

    const HZ: u64 = 100;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn settings() -> Settings {
        Settings {
            interval: secs(1.0),
            grace: secs(10.0),
            stop_signal: SIGTERM,
            stop_scope: StopScope::Tree,
            stop_cmd: None,
            kill_signal: SIGKILL,
            exit: exit::Rules::default(),
            forward_to: ForwardTo::Child,
            rewrite: Vec::new(),
            cleanup: true,
            details: true,
            ignored: SignalSet::default(),
            clk_tck: HZ,
            proc_ok: true,
            health: None,
            ready_timeout: None,
            notify: false,
            upstream: None,
            restart: Restart {
                mode: RestartMode::No,
                max: None,
                delay: secs(1.0),
                delay_max: secs(300.0),
            },
            dump: Dump::default(),
        }
    }

    /// What the fake system answers.
    struct World {
        /// Processes that get a tree-wide signal (leftovers, kill).
        tree: u32,
        delivered: bool,
        /// Processes in uninterruptible sleep among the tree that a kill reaches.
        stuck: u32,
        /// The pid the next restarted child gets.
        next_pid: i32,
        terminal: bool,
        stop_cmd: Result<(), String>,
        /// What sending the stop signal to the main child gives.
        stop_sent: Result<(), String>,
        /// The next probe's readings (its `at` comes from the action).
        sample: Sample,
    }

    struct Sim {
        m: Machine,
        t0: Instant,
        now: Instant,
        world: World,
        /// Every action carried out, in order.
        log: Vec<Action>,
    }

    impl Sim {
        fn new(set: Settings, limits: Limits) -> Sim {
            let t0 = Instant::now();
            let argv = ["sleep".into(), "9".into()];
            let (m, start) = Machine::new(set, limits, 100, &argv, None, t0);
            let world = World {
                tree: 0,
                delivered: true,
                stuck: 0,
                next_pid: 100,
                terminal: true,
                stop_cmd: Ok(()),
                stop_sent: Ok(()),
                sample: Sample {
                    at: Duration::ZERO,
                    cpu_ticks: 0,
                    io_bytes: 0,
                    new_procs: 0,
                    processes: 1,
                    rss_bytes: Some(1 << 20),
                    all_stopped: false,
                    visible: true,
                    pings: 0,
                    heartbeats: 0,
                    gpu: None,
                    pressure: None,
                },
            };
            let mut sim = Sim { m, t0, now: t0, world, log: Vec::new() };
            sim.run(start);
            sim
        }

        fn stall(stall: f64) -> Sim {
            Sim::new(settings(), Limits { stall: Some(secs(stall)), ..Limits::none(HZ) })
        }

        /// Moves the fake clock to `t` seconds after the start and ticks.
        fn at(&mut self, t: f64) -> &mut Sim {
            self.now = self.t0 + secs(t);
            self.send(Event::Tick)
        }

        fn send(&mut self, event: Event) -> &mut Sim {
            let actions = self.m.on(event, self.now);
            self.run(actions);
            self
        }

        fn run(&mut self, actions: Vec<Action>) {
            let mut queue = VecDeque::from(actions);
            while let Some(action) = queue.pop_front() {
                let result = match &action {
                    Action::Forward { sigs, to } => Some(Event::Forwarded {
                        delivered: if self.world.delivered { sigs.clone() } else { Vec::new() },
                        to: *to,
                    }),
                    Action::StopLeftovers { sig } => {
                        Some(Event::LeftoversStopped { sig: *sig, count: self.world.tree })
                    }
                    Action::Kill { sig, main_alive } => Some(Event::Killed {
                        sig: *sig,
                        count: self.world.tree + u32::from(*main_alive),
                        stuck: self.world.stuck,
                    }),
                    Action::Sweep => {
                        Some(Event::Swept { count: self.world.tree, stuck: self.world.stuck })
                    }
                    Action::Stop { .. } => Some(Event::StopSent(self.world.stop_sent.clone())),
                    Action::RunStopCmd { .. } => {
                        Some(Event::StopCmdStarted(self.world.stop_cmd.clone()))
                    }
                    Action::Probe { at } => {
                        Some(Event::Sample(Sample { at: *at, ..self.world.sample }))
                    }
                    Action::GiveTerminal { then: then @ AfterTerminal::Touched(_) } => {
                        Some(Event::Terminal { given: self.world.terminal, then: *then })
                    }
                    Action::StopSelf(_) => Some(Event::Resumed),
                    Action::Dump => Some(Event::Dumped {
                        lines: vec!["100 S sleep 9".into()],
                        processes: "[]".into(),
                    }),
                    Action::Spawn => {
                        self.world.next_pid += 1;
                        Some(Event::Spawned { pid: self.world.next_pid })
                    }
                    _ => None,
                };
                self.log.push(action);
                if let Some(result) = result {
                    for follow in self.m.on(result, self.now).into_iter().rev() {
                        queue.push_front(follow);
                    }
                }
            }
        }

        fn reap(&mut self, end: ChildEnd, children_left: bool) -> &mut Sim {
            let ends = vec![Reap::Main { pid: 100, end, oom: None, held_terminal: false }];
            self.send(Event::Reaped { ends, children_left })
        }

        /// Actions logged since the last call.
        fn take(&mut self) -> Vec<Action> {
            std::mem::take(&mut self.log)
        }

        fn lines(&self) -> Vec<String> {
            self.log
                .iter()
                .filter_map(|a| match a {
                    Action::Say(_, text) => Some(text.clone()),
                    _ => None,
                })
                .collect()
        }

        fn has_line(&self, needle: &str) -> bool {
            self.lines().iter().any(|l| l.contains(needle))
        }

        fn events(&self) -> Vec<&'static str> {
            self.log
                .iter()
                .filter_map(|a| match a {
                    Action::Emit(r) => Some(r.name()),
                    _ => None,
                })
                .collect()
        }

        fn outcome(&self) -> Option<Outcome> {
            self.log.iter().find_map(|a| match a {
                Action::Exit(o) => Some(*o),
                _ => None,
            })
        }

        fn count(&self, pred: impl Fn(&Action) -> bool) -> usize {
            self.log.iter().filter(|a| pred(a)).count()
        }
    }

    fn is_kill(a: &Action) -> bool {
        matches!(a, Action::Kill { .. })
    }

    // ---- start and scheduling ----

    #[test]
    fn start_says_and_emits_and_schedules_the_first_probe() {
        let mut sim = Sim::stall(5.0);
        assert!(sim.has_line("started sleep 9 as pid 100"));
        assert_eq!(sim.events(), ["start"]);
        assert_eq!(sim.m.deadline(), Some(sim.t0 + secs(1.0)));
        sim.take();
        sim.at(0.5);
        assert!(sim.log.is_empty(), "nothing is due before the first probe: {:?}", sim.log);
        sim.at(1.0);
        assert!(sim.log.contains(&Action::Probe { at: secs(1.0) }));
    }

    #[test]
    fn an_exec_failure_ends_the_run_with_its_status_and_says_why() {
        let failures = [
            (SpawnError::NotFound("nope: not found".into()), 127),
            (SpawnError::NotExecutable("./x: permission denied".into()), 126),
            (SpawnError::Internal("cannot fork".into()), 125),
        ];
        for (err, code) in failures {
            let mut sim = Sim::stall(5.0);
            sim.take();
            sim.send(Event::ExecFailed(err.clone()));
            assert!(sim.log.contains(&Action::Fail(err.to_string())), "{:?}", sim.log);
            assert_eq!(sim.outcome(), Some(Outcome::Code(code)), "{err}");
            assert!(sim.m.exited());
            assert_eq!(sim.m.deadline(), None, "nothing is due after the end");
        }
    }

    #[test]
    fn probes_are_stamped_with_their_tick_and_skip_missed_ticks() {
        let mut sim = Sim::stall(60.0);
        sim.at(1.003);
        assert!(sim.log.contains(&Action::Probe { at: secs(1.0) }), "{:?}", sim.log);
        sim.take();
        // Woken 3.5 intervals late: one probe, stamped on the last tick that passed.
        sim.at(5.5);
        let probes: Vec<_> = sim.log.iter().filter(|a| matches!(a, Action::Probe { .. })).collect();
        assert_eq!(probes, [&Action::Probe { at: secs(5.0) }]);
        assert_eq!(sim.m.deadline(), Some(sim.t0 + secs(6.0)));
    }

    #[test]
    fn the_timeout_is_a_deadline_and_a_trigger() {
        let mut sim = Sim::new(settings(), Limits { timeout: Some(secs(2.5)), ..Limits::none(HZ) });
        sim.at(2.0);
        assert_eq!(sim.m.deadline(), Some(sim.t0 + secs(2.5)));
        sim.take();
        sim.at(2.5);
        assert!(
            sim.has_line("timeout: ran for 2.5s, the --timeout; sending SIGTERM, SIGKILL in 10s")
        );
        assert!(sim.log.contains(&Action::Stop { sig: SIGTERM, scope: StopScope::Tree }));
        assert_eq!(sim.m.deadline(), Some(sim.t0 + secs(3.0)), "probes go on during the drain");
    }

    // ---- the drain ladder ----

    #[test]
    fn stall_drains_then_kills_then_reports_how_the_child_ended() {
        let mut sim = Sim::stall(2.0);
        for t in 1..=2 {
            sim.at(t as f64);
        }
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 0);
        sim.at(3.0);
        assert!(sim.has_line(
            "stall: no CPU or I/O progress for 2s (1 process); sending SIGTERM, SIGKILL in 10s"
        ));
        assert!(sim.log.contains(&Action::Stop { sig: SIGTERM, scope: StopScope::Tree }));
        let events = sim.events();
        let i = events.iter().position(|&e| e == "trigger").unwrap();
        assert_eq!(&events[i..i + 2], ["trigger", "stop"]);
        // The metrics written after the trigger already count the stop.
        let metrics = sim.log.iter().rev().find_map(|a| match a {
            Action::Metrics(m) => Some(m.stops_total),
            _ => None,
        });
        assert_eq!(metrics.unwrap()[Reason::Stall.index()], 1);
        assert_eq!(sim.m.deadline(), Some(sim.t0 + secs(4.0)));
        sim.take();
        sim.at(12.9);
        assert_eq!(sim.count(is_kill), 0, "the grace is 10s from the trigger at 3s");
        sim.at(13.0);
        assert!(sim.log.contains(&Action::Kill { sig: SIGKILL, main_alive: true }));
        assert_eq!(sim.events().last(), Some(&"kill"));
        assert!(!sim.has_line("outlived"), "a drain's kill is no surprise");
        sim.reap(ChildEnd::Killed(SIGKILL), false);
        assert!(sim.has_line("stall: child killed by SIGKILL at the end of the 10s grace"));
        assert_eq!(sim.outcome(), Some(Outcome::Reraise(SIGKILL)));
        assert!(sim.m.exited());
        assert_eq!(sim.events().last(), Some(&"exit"));
    }

    #[test]
    fn the_child_exiting_in_the_grace_ends_the_run_with_its_status() {
        let mut set = settings();
        set.exit.exit_code_on_stop = Some(124);
        let mut sim = Sim::new(set, Limits { stall: Some(secs(1.0)), ..Limits::none(HZ) });
        sim.at(1.0).at(2.0);
        sim.now = sim.t0 + secs(3.5);
        sim.reap(ChildEnd::Killed(SIGTERM), false);
        assert!(sim.has_line("stall: child killed by SIGTERM 1.5s after SIGTERM"));
        assert_eq!(sim.outcome(), Some(Outcome::Code(124)));
        assert_eq!(sim.count(is_kill), 0);
    }

    #[test]
    fn a_second_trigger_in_the_drain_is_recorded_and_changes_nothing() {
        let limits = Limits { stall: Some(secs(1.0)), max_rss: Some(1 << 30), ..Limits::none(HZ) };
        let mut sim = Sim::new(settings(), limits);
        sim.at(1.0).at(2.0);
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 1);
        sim.world.sample.rss_bytes = Some(2 << 30);
        sim.take();
        sim.at(3.0);
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 0);
        assert!(sim.events().contains(&"trigger"), "the second trigger is still an event");
        assert!(!sim.has_line("rss:"), "no second drain line");
        assert_eq!(
            sim.m.deadline(),
            Some(sim.t0 + secs(4.0)),
            "the next probe; the kill stays at 12s"
        );
        sim.at(12.0);
        assert!(
            sim.log.contains(&Action::Kill { sig: SIGKILL, main_alive: true }),
            "kill at 2s + 10s"
        );
        let stops = sim.log.iter().rev().find_map(|a| match a {
            Action::Metrics(m) => Some(m.stops_total),
            _ => None,
        });
        assert_eq!(stops.unwrap()[Reason::Rss.index()], 0, "only the first trigger stops");
    }

    #[test]
    fn a_kill_signal_other_than_kill_is_followed_by_sigkill_then_the_wait_gives_up() {
        let mut set = settings();
        set.kill_signal = SIGHUP;
        set.grace = secs(2.0);
        let mut sim = Sim::new(set, Limits { stall: Some(secs(1.0)), ..Limits::none(HZ) });
        sim.world.tree = 2;
        sim.at(1.0).at(2.0); // trigger at 2s
        sim.take();
        sim.at(4.0);
        assert!(sim.log.contains(&Action::Kill { sig: SIGHUP, main_alive: true }));
        assert_eq!(sim.m.deadline(), Some(sim.t0 + secs(5.0)), "next probe before the final kill");
        sim.at(5.0);
        sim.reap(ChildEnd::Killed(SIGHUP), true);
        sim.take();
        assert_eq!(sim.m.deadline(), Some(sim.t0 + secs(6.0)), "SIGKILL one grace after the kill");
        sim.at(6.0);
        assert_eq!(sim.log, [Action::FinalKill]);
        assert_eq!(sim.m.deadline(), Some(sim.t0 + secs(11.0)), "then 5s for leftovers");
        sim.at(10.9);
        assert_eq!(sim.outcome(), None);
        // Two leftovers are still alive and not stuck: kill again and keep waiting.
        sim.take();
        sim.at(11.0);
        assert_eq!(sim.log, [Action::Sweep]);
        assert_eq!(sim.m.deadline(), Some(sim.t0 + secs(16.0)));
        sim.world.tree = 0;
        sim.at(16.0);
        assert!(sim.has_line("stall: child killed by SIGHUP at the end of the 2s grace"));
        assert!(!sim.has_line("uninterruptible"));
        assert_eq!(sim.outcome(), Some(Outcome::Reraise(SIGHUP)));
    }

    #[test]
    fn only_leftovers_in_uninterruptible_sleep_are_given_up_on() {
        let mut sim = Sim::stall(60.0);
        sim.world.tree = 3;
        sim.at(0.5).reap(ChildEnd::Exited(0), true);
        sim.take();
        sim.at(10.5);
        assert!(sim.log.contains(&Action::Kill { sig: SIGKILL, main_alive: false }));
        assert!(sim.has_line("3 processes left by the child outlived the 10s grace; sent SIGKILL"));
        sim.at(15.4);
        assert_eq!(sim.outcome(), None);
        // One of three is stuck in D: the other two can still die, so watchd goes on.
        sim.world.stuck = 1;
        sim.at(15.5);
        assert_eq!(sim.outcome(), None);
        assert_eq!(sim.m.deadline(), Some(sim.t0 + secs(20.5)));
        sim.world.stuck = 3;
        sim.at(20.5);
        assert!(sim.has_line("3 processes in uninterruptible sleep (D) did not die of SIGKILL"));
        assert_eq!(sim.outcome(), Some(Outcome::Code(0)));
    }

    #[test]
    fn watchds_own_sigstop_of_the_tree_never_stops_watchd() {
        let mut sim = Sim::stall(1.0);
        sim.at(1.0).at(2.0).at(12.0);
        assert!(sim.log.contains(&Action::Kill { sig: SIGKILL, main_alive: true }));
        sim.take();
        sim.send(Event::MainStopped { sig: SIGSTOP, on_terminal: true });
        assert!(sim.log.is_empty(), "stopped by the kill's SIGSTOP: {:?}", sim.log);
    }

    #[test]
    fn a_stop_request_bounds_the_cleanup_of_leftovers() {
        let mut sim = Sim::stall(60.0);
        sim.world.tree = 1;
        // docker stop at 0.5s: forwarded; the child exits at 4s, its leftover ignores TERM.
        sim.now = sim.t0 + secs(0.5);
        sim.send(Event::Signals(vec![Incoming::sent(SIGTERM)]));
        sim.now = sim.t0 + secs(4.0);
        sim.reap(ChildEnd::Exited(0), true);
        assert_eq!(sim.m.deadline(), Some(sim.t0 + secs(10.5)), "grace from the request");
        sim.take();
        sim.at(10.5);
        assert!(sim.log.contains(&Action::Kill { sig: SIGKILL, main_alive: false }));
        // Without a request, the grace runs from the child's end.
        let mut sim = Sim::stall(60.0);
        sim.world.tree = 1;
        sim.now = sim.t0 + secs(4.0);
        sim.reap(ChildEnd::Exited(0), true);
        assert_eq!(sim.m.deadline(), Some(sim.t0 + secs(14.0)));
        // Other signals are no request to stop.
        let mut sim = Sim::stall(60.0);
        sim.world.tree = 1;
        sim.send(Event::Signals(vec![Incoming::sent(SIGUSR1)]));
        sim.now = sim.t0 + secs(4.0);
        sim.reap(ChildEnd::Exited(0), true);
        assert_eq!(sim.m.deadline(), Some(sim.t0 + secs(14.0)));
    }

    #[test]
    fn rewrites_forward_another_signal_or_none() {
        let mut set = settings();
        set.rewrite = vec![(SIGTERM, Some(SIGQUIT)), (SIGUSR1, None)];
        let mut sim = Sim::new(set, Limits::none(HZ));
        sim.take();
        let batch = [SIGTERM, SIGUSR1, SIGHUP].map(Incoming::sent).to_vec();
        sim.send(Event::Signals(batch));
        let want = Action::Forward { sigs: vec![SIGQUIT, SIGHUP], to: ForwardTo::Child };
        assert_eq!(sim.log[0], want);
        // A rewritten TERM is still a request to stop.
        assert!(sim.m.stop_requested.is_some());
        sim.take();
        sim.send(Event::Signals(vec![Incoming::sent(SIGUSR1)]));
        assert!(sim.log.is_empty(), "a dropped signal forwards nothing: {:?}", sim.log);
    }

    #[test]
    fn faults_are_forwarded_only_when_a_process_sent_them() {
        use crate::signals::SIGABRT;
        let mut sim = Sim::new(settings(), Limits::none(HZ));
        sim.take();
        let raised = Incoming { sig: SIGABRT, by_process: false };
        sim.send(Event::Signals(vec![raised]));
        assert!(sim.log.is_empty());
        sim.send(Event::Signals(vec![Incoming::sent(SIGABRT)]));
        assert_eq!(sim.log[0], Action::Forward { sigs: vec![SIGABRT], to: ForwardTo::Child });
        // Ordinary signals count however they came.
        sim.take();
        sim.send(Event::Signals(vec![Incoming { sig: SIGUSR1, by_process: false }]));
        assert_eq!(sim.log[0], Action::Forward { sigs: vec![SIGUSR1], to: ForwardTo::Child });
    }

    #[test]
    fn a_batch_is_one_forward_in_order_with_duplicates() {
        let mut set = settings();
        set.forward_to = ForwardTo::Tree;
        let mut sim = Sim::new(set, Limits::none(HZ));
        sim.take();
        let batch = [SIGUSR1, SIGHUP, SIGUSR1].map(Incoming::sent).to_vec();
        sim.send(Event::Signals(batch));
        let forwards: Vec<_> =
            sim.log.iter().filter(|a| matches!(a, Action::Forward { .. })).collect();
        let want = Action::Forward { sigs: vec![SIGUSR1, SIGHUP, SIGUSR1], to: ForwardTo::Tree };
        assert_eq!(forwards, [&want]);
    }

    // ---- leftovers after the main child ----

    #[test]
    fn leftovers_get_the_stop_signal_then_the_kill() {
        let mut sim = Sim::stall(60.0);
        sim.world.tree = 2;
        sim.at(0.5).reap(ChildEnd::Exited(3), true);
        assert!(sim.log.contains(&Action::StopLeftovers { sig: SIGTERM }));
        assert!(sim.has_line("sent SIGTERM to 2 leftover processes"));
        assert_eq!(sim.m.deadline(), Some(sim.t0 + secs(10.5)), "no probes once the child ended");
        sim.take();
        sim.send(Event::Signals(vec![Incoming::sent(SIGUSR1)]));
        assert!(sim.log.is_empty(), "nothing is forwarded once the child ended");
        let ends = vec![Reap::Orphan { pid: 7, end: ChildEnd::Killed(SIGTERM) }];
        sim.send(Event::Reaped { ends, children_left: false });
        assert!(sim.has_line("reaped orphan 7 (killed by SIGTERM)"));
        assert_eq!(sim.outcome(), Some(Outcome::Code(3)));
        assert_eq!(sim.count(is_kill), 0);
    }

    #[test]
    fn the_main_child_alone_ends_the_run_at_once() {
        let mut sim = Sim::stall(60.0);
        sim.reap(ChildEnd::Exited(0), false);
        assert_eq!(sim.count(|a| matches!(a, Action::StopLeftovers { .. })), 0);
        assert_eq!(sim.outcome(), Some(Outcome::Code(0)));
        assert_eq!(sim.m.deadline(), None);
        sim.take();
        sim.at(100.0).send(Event::Signals(vec![Incoming::sent(SIGTERM)]));
        assert!(sim.log.is_empty(), "an exited machine does nothing");
    }

    #[test]
    fn no_cleanup_leaves_the_rest_running() {
        let mut set = settings();
        set.cleanup = false;
        let mut sim = Sim::new(set, Limits::none(HZ));
        sim.reap(ChildEnd::Exited(5), true);
        assert_eq!(sim.count(|a| matches!(a, Action::StopLeftovers { .. })), 0);
        assert_eq!(sim.outcome(), Some(Outcome::Code(5)));
    }

    #[test]
    fn after_a_tree_wide_stop_leftovers_are_not_signalled_again() {
        let mut sim = Sim::stall(1.0);
        sim.at(1.0).at(2.0);
        sim.take();
        sim.reap(ChildEnd::Exited(0), true);
        assert_eq!(sim.count(|a| matches!(a, Action::StopLeftovers { .. })), 0);
        // The grace of the drain goes on: kill at 2s + 10s, not 10s from the child's end.
        sim.at(11.9);
        assert_eq!(sim.count(is_kill), 0);
        sim.at(12.0);
        assert!(sim.log.contains(&Action::Kill { sig: SIGKILL, main_alive: false }));
    }

    #[test]
    fn after_a_child_only_stop_leftovers_get_the_signal_when_the_child_ends() {
        let mut set = settings();
        set.stop_scope = StopScope::Child;
        let mut sim = Sim::new(set, Limits { stall: Some(secs(1.0)), ..Limits::none(HZ) });
        sim.at(1.0).at(2.0);
        assert!(sim.log.contains(&Action::Stop { sig: SIGTERM, scope: StopScope::Child }));
        sim.take();
        sim.reap(ChildEnd::Exited(0), true);
        assert_eq!(sim.log.iter().filter(|a| matches!(a, Action::StopLeftovers { .. })).count(), 1);
    }

    #[test]
    fn grace_zero_kills_in_the_same_step() {
        let mut set = settings();
        set.grace = Duration::ZERO;
        let mut sim = Sim::new(set, Limits { stall: Some(secs(1.0)), ..Limits::none(HZ) });
        sim.at(1.0).at(2.0);
        let stop = sim.log.iter().position(|a| matches!(a, Action::Stop { .. })).unwrap();
        let kill = sim.log.iter().position(is_kill).expect("killed without waiting");
        assert!(stop < kill);
    }

    #[test]
    fn a_stop_signal_that_cannot_be_sent_is_not_claimed() {
        let mut sim = Sim::stall(1.0);
        sim.world.stop_sent = Err("Operation not permitted".into());
        sim.at(1.0).at(2.0);
        assert!(sim.has_line("stall: cannot send SIGTERM (Operation not permitted)"));
        sim.now = sim.t0 + secs(3.0);
        sim.reap(ChildEnd::Exited(0), false);
        assert!(
            sim.has_line("stall: child exited with status 0 1s after SIGTERM could not be sent")
        );
        let stop = sim.log.iter().find_map(|a| match a {
            Action::Emit(Record::Stop { signal, .. }) => Some(signal.clone()),
            _ => None,
        });
        assert_eq!(stop, Some(None), "the stop event names no signal that was not sent");
    }

    // ---- --stop-cmd ----

    #[test]
    fn stop_cmd_replaces_the_signal_and_is_killed_when_the_child_ends() {
        let mut set = settings();
        set.stop_cmd = Some("kill -INT $WATCHD_PID".into());
        let mut sim = Sim::new(set, Limits { stall: Some(secs(1.0)), ..Limits::none(HZ) });
        sim.world.stop_cmd = Err("cannot fork".into());
        sim.at(1.0).at(2.0);
        assert!(sim.has_line(
            "stall: no CPU or I/O progress for 1s (1 process); running --stop-cmd, SIGKILL in 10s"
        ));
        assert!(sim.log.contains(&Action::RunStopCmd { cmd: "kill -INT $WATCHD_PID".into() }));
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 0);
        assert!(sim.has_line("--stop-cmd failed: cannot fork; the grace still runs"));
        sim.take();
        let ends = vec![Reap::StopCmd { pid: 9, end: ChildEnd::Exited(2) }];
        sim.send(Event::Reaped { ends, children_left: true });
        assert!(sim.has_line("--stop-cmd failed (exited with status 2); the grace still runs"));
        sim.now = sim.t0 + secs(3.0);
        sim.reap(ChildEnd::Killed(SIGINT), true);
        assert!(sim.log.contains(&Action::KillStopCmd));
        assert!(
            sim.log.contains(&Action::StopLeftovers { sig: SIGTERM }),
            "the command never stopped the rest"
        );
        sim.take();
        // Killed by watchd once the child ended: not a failure of the command.
        let ends = vec![Reap::StopCmd { pid: 9, end: ChildEnd::Killed(SIGKILL) }];
        sim.send(Event::Reaped { ends, children_left: false });
        assert!(!sim.has_line("--stop-cmd failed"), "{:?}", sim.lines());
        assert!(sim.has_line("stall: child killed by SIGINT 1s after --stop-cmd"));
    }

    // ---- signals ----

    #[test]
    fn signals_go_where_forward_to_says_and_are_reported_once_delivered() {
        for to in [ForwardTo::Child, ForwardTo::Group, ForwardTo::Tree] {
            let mut set = settings();
            set.forward_to = to;
            let mut sim = Sim::new(set, Limits::none(HZ));
            sim.take();
            sim.send(Event::Signals(vec![Incoming::sent(SIGUSR1)]));
            assert_eq!(sim.log[0], Action::Forward { sigs: vec![SIGUSR1], to });
            let name = to_name(to);
            assert!(sim.has_line(&format!("forwarded SIGUSR1 to the {name}")));
            assert!(
                sim.log
                    .contains(&Action::Emit(Record::Signal { signal: "SIGUSR1".into(), to: name }))
            );
        }
        let mut sim = Sim::new(settings(), Limits::none(HZ));
        sim.world.delivered = false;
        sim.take();
        sim.send(Event::Signals(vec![Incoming::sent(SIGUSR1)]));
        assert_eq!(sim.log, [Action::Forward { sigs: vec![SIGUSR1], to: ForwardTo::Child }]);
        // Not delivered, so a later death by it is a surprise.
        sim.reap(ChildEnd::Killed(SIGUSR1), false);
        assert!(sim.has_line("child killed by SIGUSR1, not sent by watchd"));
    }

    #[test]
    fn quiet_forwarding_formats_nothing() {
        let mut set = settings();
        set.details = false;
        let mut sim = Sim::new(set, Limits::none(HZ));
        assert!(sim.lines().is_empty());
        sim.take();
        sim.send(Event::Signals(vec![Incoming::sent(SIGUSR1)]));
        assert_eq!(sim.log, [Action::Forward { sigs: vec![SIGUSR1], to: ForwardTo::Child }]);
    }

    #[test]
    fn sigcont_passes_the_terminal_on_before_it_is_forwarded() {
        let mut sim = Sim::new(settings(), Limits::none(HZ));
        sim.take();
        sim.send(Event::Signals(vec![Incoming::sent(SIGCONT)]));
        assert_eq!(sim.log[0], Action::GiveTerminal { then: AfterTerminal::Nothing });
        assert_eq!(sim.log[1], Action::Forward { sigs: vec![SIGCONT], to: ForwardTo::Child });
        let mut set = settings();
        set.exit.pid1 = true;
        let mut sim = Sim::new(set, Limits::none(HZ));
        sim.take();
        sim.send(Event::Signals(vec![Incoming::sent(SIGCONT)]));
        assert_eq!(sim.log[0], Action::Forward { sigs: vec![SIGCONT], to: ForwardTo::Child });
    }

    // ---- job control ----

    #[test]
    fn ctrl_z_stops_watchd_too_and_fg_resumes_the_group() {
        let mut sim = Sim::stall(2.0);
        sim.take();
        sim.send(Event::MainStopped { sig: SIGTSTP, on_terminal: true });
        assert_eq!(
            sim.log,
            [
                Action::StopSelf(SIGTSTP),
                Action::GiveTerminal { then: AfterTerminal::Nothing },
                Action::ContinueGroup
            ]
        );
    }

    #[test]
    fn a_stopped_watchd_window_does_not_count_towards_a_stall() {
        let mut sim = Sim::stall(2.0);
        sim.at(1.0).at(2.0);
        // Stopped by Ctrl-Z between the probes at 2s and 3s (fg came back at 2.9s).
        sim.now = sim.t0 + secs(2.5);
        sim.send(Event::MainStopped { sig: SIGTSTP, on_terminal: true });
        sim.take();
        sim.at(3.0);
        assert_eq!(
            sim.count(|a| matches!(a, Action::Stop { .. })),
            0,
            "the void window is not a stall"
        );
        sim.at(4.0);
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 1, "1s before + 1s after");
    }

    #[test]
    fn a_probe_more_than_one_interval_late_proves_nothing() {
        // docker pause froze watchd and its tree from 2.1s to 12s: the probe due at 3s comes
        // at 12s. Without the void window, that 10s of nothing would be a stall.
        let mut sim = Sim::stall(2.0);
        sim.at(1.0).at(2.0);
        sim.take();
        sim.at(12.0);
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 0);
        assert!(sim.log.contains(&Action::Probe { at: secs(12.0) }));
        // The stall clock paused over the frozen window (1s before it, as for job control)
        // and goes on from the first window after it.
        sim.at(13.0);
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 1, "1s before + 1s after");
        // Control: a probe late by less than an interval is an ordinary window.
        let mut sim = Sim::stall(2.0);
        sim.at(1.0).at(2.0).at(3.9);
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 1);
    }

    #[test]
    fn the_timeout_counts_frozen_time() {
        let mut sim = Sim::new(settings(), Limits { timeout: Some(secs(5.0)), ..Limits::none(HZ) });
        sim.at(1.0);
        sim.take();
        sim.at(12.0);
        assert!(sim.has_line("timeout: ran for 5s"), "{:?}", sim.lines());
    }

    #[test]
    fn no_verdict_on_a_tree_watchd_cannot_see() {
        let limits = Limits { stall: Some(secs(1.0)), max_rss: Some(1), ..Limits::none(HZ) };
        let mut sim = Sim::new(settings(), limits);
        sim.world.sample.visible = false;
        sim.world.sample.processes = 0;
        for t in 1..=10 {
            sim.at(t as f64);
        }
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 0);
        let said = sim.lines().iter().filter(|l| l.contains("cannot see the command")).count();
        assert_eq!(said, 1, "said once: {:?}", sim.lines());
        // Visible again: a fresh window, then the verdicts come back.
        sim.world.sample.visible = true;
        sim.at(11.0);
        assert_eq!(
            sim.count(|a| matches!(a, Action::Stop { .. })),
            1,
            "rss on the first visible sample"
        );
        // With a foreign /proc the driver has already said why: the machine stays quiet.
        let mut set = settings();
        set.proc_ok = false;
        let mut sim = Sim::new(set, Limits { stall: Some(secs(1.0)), ..Limits::none(HZ) });
        sim.world.sample.visible = false;
        sim.at(1.0).at(2.0).at(3.0);
        assert!(!sim.has_line("cannot see"));
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 0);
    }

    #[test]
    fn job_control_applies_only_on_watchds_own_terminal_and_never_as_pid1() {
        let mut sim = Sim::stall(2.0);
        sim.take();
        sim.send(Event::MainStopped { sig: SIGTSTP, on_terminal: false });
        assert!(sim.log.is_empty());
        let mut set = settings();
        set.exit.pid1 = true;
        let mut sim = Sim::new(set, Limits::none(HZ));
        sim.take();
        sim.send(Event::MainStopped { sig: SIGTSTP, on_terminal: true });
        assert!(sim.log.is_empty());
    }

    #[test]
    fn a_child_touching_the_terminal_gets_it_if_watchd_has_it_else_watchd_stops() {
        let mut sim = Sim::stall(2.0);
        sim.take();
        sim.send(Event::MainStopped { sig: SIGTTIN, on_terminal: true });
        assert_eq!(
            sim.log,
            [Action::GiveTerminal { then: AfterTerminal::Touched(SIGTTIN) }, Action::ContinueGroup]
        );
        sim.world.terminal = false;
        sim.take();
        sim.send(Event::MainStopped { sig: SIGTTOU, on_terminal: true });
        assert_eq!(sim.log[1], Action::StopSelf(SIGTTOU));
        // An ignored stop signal cannot stop watchd: SIGSTOP instead, as for SIGSTOP itself.
        let mut set = settings();
        set.ignored.add(SIGTTIN);
        let mut sim = Sim::new(set, Limits::none(HZ));
        sim.world.terminal = false;
        sim.take();
        sim.send(Event::MainStopped { sig: SIGTTIN, on_terminal: true });
        assert_eq!(sim.log[1], Action::StopSelf(SIGSTOP));
        sim.take();
        sim.send(Event::MainStopped { sig: SIGSTOP, on_terminal: true });
        assert_eq!(sim.log[0], Action::StopSelf(SIGSTOP));
    }

    // ---- how watchd ends ----

    #[test]
    fn a_death_by_signal_is_reraised_or_128_plus_n_as_pid1() {
        let mut sim = Sim::new(settings(), Limits::none(HZ));
        sim.send(Event::Signals(vec![Incoming::sent(SIGTERM)]))
            .reap(ChildEnd::Killed(SIGTERM), false);
        assert_eq!(sim.outcome(), Some(Outcome::Reraise(SIGTERM)));
        assert!(!sim.has_line("not sent by watchd"), "watchd forwarded it: no surprise");
        let mut set = settings();
        set.exit.pid1 = true;
        let mut sim = Sim::new(set, Limits::none(HZ));
        sim.reap(ChildEnd::Killed(SIGTERM), false);
        assert_eq!(sim.outcome(), Some(Outcome::Code(143)));
    }

    #[test]
    fn surprise_deaths_are_diagnosed_with_the_last_figures_and_the_oom_finding() {
        let mut sim = Sim::stall(60.0);
        sim.at(1.0);
        let ends = vec![Reap::Main {
            pid: 100,
            end: ChildEnd::Killed(SIGKILL),
            oom: Some("the kernel's OOM killer: oom_kill of its memory cgroup rose by 1".into()),
            held_terminal: false,
        }];
        sim.send(Event::Reaped { ends, children_left: false });
        assert!(sim.has_line(
            "child killed by SIGKILL, not sent by watchd (the kernel's OOM killer: oom_kill of its \
             memory cgroup rose by 1); last seen 1.0 MiB resident, ? cores, 1 process, 0s since progress"
        ));
        let diagnosis = sim.log.iter().find_map(|a| match a {
            Action::Emit(Record::Exit { diagnosis, .. }) => diagnosis.clone(),
            _ => None,
        });
        assert!(diagnosis.unwrap().contains("OOM killer"));
    }

    #[test]
    fn ctrl_c_and_sigpipe_deaths_are_not_explained() {
        for sig in [SIGINT, SIGPIPE] {
            let mut sim = Sim::new(settings(), Limits::none(HZ));
            sim.reap(ChildEnd::Killed(sig), false);
            assert!(!sim.has_line("not sent by watchd"), "{sig}");
            assert_eq!(sim.outcome(), Some(Outcome::Reraise(sig)));
        }
        let mut sim = Sim::new(settings(), Limits::none(HZ));
        sim.reap(ChildEnd::Killed(SIGTERM), false);
        assert!(sim.has_line("child killed by SIGTERM, not sent by watchd; no probe had run yet"));
    }

    #[test]
    fn every_reaped_child_is_an_event_and_the_exit_line_is_verbose() {
        let mut sim = Sim::new(settings(), Limits::none(HZ));
        sim.now = sim.t0 + secs(2.0);
        let ends = vec![
            Reap::Orphan { pid: 5, end: ChildEnd::Exited(0) },
            Reap::Main { pid: 100, end: ChildEnd::Exited(1), oom: None, held_terminal: false },
        ];
        sim.send(Event::Reaped { ends, children_left: false });
        assert_eq!(sim.events(), ["start", "reap", "reap", "exit"]);
        assert!(
            sim.log.contains(&Action::Say(
                Level::Verbose,
                "child exited with status 1 after 2s".into()
            ))
        );
        assert!(sim.log.contains(&Action::ReturnTerminal));
        assert_eq!(sim.outcome(), Some(Outcome::Code(1)));
    }

    // ---- readiness and health ----

    fn health_settings() -> Settings {
        let mut set = settings();
        set.health = Some(HealthTiming {
            interval: secs(1.0),
            start_interval: secs(0.25),
            start_period: Duration::ZERO,
            timeout: secs(0.5),
            retries: 3,
        });
        set
    }

    fn health_events(sim: &Sim) -> Vec<(bool, u32)> {
        sim.log
            .iter()
            .filter_map(|a| match a {
                Action::Emit(Record::Health { ok, failures, .. }) => Some((*ok, *failures)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn health_checks_run_on_schedule_and_three_failures_fire_unhealthy() {
        let mut sim = Sim::new(health_settings(), Limits::none(HZ));
        sim.take();
        sim.at(0.9);
        assert!(!sim.log.contains(&Action::RunHealth), "the first check comes one interval in");
        sim.at(1.0);
        assert!(sim.log.contains(&Action::RunHealth));
        let fail = |sim: &mut Sim, t: f64| {
            sim.now = sim.t0 + secs(t);
            sim.send(Event::HealthDone { ok: false, detail: "HTTP 503".into(), took: secs(0.01) });
        };
        fail(&mut sim, 1.01);
        assert_eq!(sim.m.deadline(), Some(sim.t0 + secs(2.0)), "the probe, then 1s after the end");
        sim.at(2.01);
        fail(&mut sim, 2.02);
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 0);
        sim.at(3.02);
        fail(&mut sim, 3.03);
        assert!(sim.has_line(
            "unhealthy: 3 health checks failed in a row (last: HTTP 503); sending SIGTERM, SIGKILL in 10s"
        ));
        assert!(sim.log.contains(&Action::Stop { sig: SIGTERM, scope: StopScope::Tree }));
        assert_eq!(health_events(&sim), [(false, 1), (false, 2), (false, 3)]);
        // No more checks once the drain runs.
        sim.take();
        sim.at(10.0);
        assert!(!sim.log.contains(&Action::RunHealth));
    }

    #[test]
    fn a_pass_resets_the_count_and_makes_the_child_ready_once() {
        let mut set = health_settings();
        set.details = true;
        let mut sim = Sim::new(set, Limits::none(HZ));
        let check = |sim: &mut Sim, t: f64, ok: bool| {
            sim.at(t);
            assert!(sim.log.contains(&Action::RunHealth), "a check at {t}");
            sim.take();
            sim.now = sim.t0 + secs(t + 0.1);
            sim.send(Event::HealthDone { ok, detail: "x".into(), took: secs(0.1) });
        };
        sim.take();
        check(&mut sim, 1.0, false);
        check(&mut sim, 2.1, true);
        assert!(sim.log.contains(&Action::Emit(Record::Ready { after_s: 2.2, by: "health" })));
        assert!(sim.has_line("ready after 2.2s (health check)"));
        check(&mut sim, 3.2, false);
        check(&mut sim, 4.3, false);
        check(&mut sim, 5.4, true);
        assert_eq!(sim.count(|a| matches!(a, Action::Emit(Record::Ready { .. }))), 0, "once");
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 0);
    }

    #[test]
    fn a_check_past_its_timeout_is_a_failure_and_is_killed() {
        let mut sim = Sim::new(health_settings(), Limits::none(HZ));
        sim.at(1.0);
        sim.take();
        sim.at(1.49);
        assert!(!sim.log.contains(&Action::AbortHealth));
        sim.at(1.5);
        assert!(sim.log.contains(&Action::AbortHealth));
        assert_eq!(health_events(&sim), [(false, 1)]);
        // The killed check's own end comes later and is no news.
        sim.take();
        sim.send(Event::HealthDone { ok: true, detail: "late".into(), took: secs(0.6) });
        assert!(health_events(&sim).is_empty());
        assert_eq!(sim.m.deadline(), Some(sim.t0 + secs(2.0)));
    }

    #[test]
    fn start_period_failures_do_not_count_until_a_pass_or_its_end() {
        let mut set = health_settings();
        if let Some(t) = &mut set.health {
            t.start_period = secs(1.0);
            t.retries = 1;
        }
        let mut sim = Sim::new(set, Limits::none(HZ));
        // Checks every 0.25s during the period; failures there do not fire.
        for t in [0.25, 0.5, 0.75] {
            sim.at(t);
            sim.send(Event::HealthDone { ok: false, detail: "booting".into(), took: secs(0.0) });
        }
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 0);
        sim.at(1.75);
        sim.send(Event::HealthDone { ok: false, detail: "down".into(), took: secs(0.0) });
        assert_eq!(
            sim.count(|a| matches!(a, Action::Stop { .. })),
            1,
            "after the period it counts"
        );
    }

    #[test]
    fn not_ready_fires_at_the_ready_timeout_unless_ready_or_extended() {
        let mut set = settings();
        set.notify = true;
        set.ready_timeout = Some(secs(2.0));
        let mut sim = Sim::new(set.clone(), Limits::none(HZ));
        sim.send(Event::Execed);
        assert_eq!(
            sim.count(|a| matches!(a, Action::Emit(Record::Ready { .. }))),
            0,
            "READY=1 is awaited"
        );
        sim.at(1.99);
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 0);
        sim.at(2.0);
        assert!(sim.has_line("not-ready: not ready 2s after it started, the --ready-timeout"));
        // READY=1 in time: no trigger.
        let mut sim = Sim::new(set.clone(), Limits::none(HZ));
        sim.now = sim.t0 + secs(1.0);
        sim.send(notify(&["READY=1"]));
        assert!(sim.log.contains(&Action::Emit(Record::Ready { after_s: 1.0, by: "notify" })));
        sim.at(5.0);
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 0);
        // EXTEND_TIMEOUT_USEC pushes it back.
        let mut sim = Sim::new(set, Limits::none(HZ));
        sim.now = sim.t0 + secs(1.0);
        sim.send(notify(&["EXTEND_TIMEOUT_USEC=3000000"]));
        sim.at(3.9);
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 0);
        sim.at(4.0);
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 1);
    }

    #[test]
    fn without_a_check_or_notify_the_child_is_ready_when_it_runs() {
        let mut sim = Sim::new(settings(), Limits::none(HZ));
        sim.now = sim.t0 + secs(0.01);
        sim.send(Event::Execed);
        assert!(sim.log.contains(&Action::Emit(Record::Ready { after_s: 0.01, by: "start" })));
        // READY=1 without --notify counts for nothing.
        sim.take();
        sim.send(notify(&["READY=1"]));
        assert_eq!(sim.count(|a| matches!(a, Action::Emit(Record::Ready { .. }))), 0);
    }

    // ---- the notify socket ----

    fn notify(lines: &[&str]) -> Event {
        let text = lines.join("\n");
        let message = crate::notify::parse(text.as_bytes()).unwrap();
        Event::Notify { pid: 100, in_tree: true, message }
    }

    #[test]
    fn watchdog_pings_are_evidence_and_a_trigger_fires_watchdog() {
        let limits = Limits { stall: Some(secs(2.0)), evidence_notify: true, ..Limits::none(HZ) };
        let mut sim = Sim::new(settings(), limits.clone());
        for t in 1..=5 {
            sim.now = sim.t0 + secs(t as f64 - 0.5);
            sim.send(notify(&["WATCHDOG=1"]));
            sim.at(t as f64);
        }
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 0, "pinged every second");
        sim.at(6.0).at(7.0);
        assert!(sim.has_line("stall: no CPU, I/O or WATCHDOG=1 progress for 2s"));
        let mut sim = Sim::new(settings(), limits);
        sim.send(notify(&["WATCHDOG=trigger"]));
        assert!(sim.has_line("watchdog: the command sent WATCHDOG=trigger; sending SIGTERM"));
    }

    #[test]
    fn watchdog_usec_changes_the_window_and_status_is_kept() {
        let limits = Limits { stall: Some(secs(10.0)), ..Limits::none(HZ) };
        let mut sim = Sim::new(settings(), limits);
        sim.send(notify(&["WATCHDOG_USEC=2000000", "STATUS=warming up"]));
        assert!(sim.has_line("status: warming up"));
        sim.at(1.0).at(2.0).at(3.0);
        assert!(sim.has_line("stall: no CPU or I/O progress for 2s"));
        // The status travels with a surprise death's diagnosis.
        let mut sim = Sim::new(settings(), Limits::none(HZ));
        sim.send(notify(&["STATUS=loading model 3/4"]));
        sim.reap(ChildEnd::Killed(SIGKILL), false);
        assert!(sim.has_line("; its last STATUS: loading model 3/4"));
    }

    #[test]
    fn a_message_from_outside_the_tree_is_dropped() {
        let mut set = settings();
        set.notify = true;
        let mut sim = Sim::new(set, Limits::none(HZ));
        sim.take();
        let message = crate::notify::parse(b"READY=1\nWATCHDOG=trigger").unwrap();
        sim.send(Event::Notify { pid: 4242, in_tree: false, message });
        assert!(sim.log.iter().all(|a| matches!(a, Action::Say(..))), "{:?}", sim.log);
        assert!(sim.has_line("dropped a notify message from pid 4242"));
    }

    // ---- GPU evidence ----

    #[test]
    fn evidence_matters_within_a_stall_window_from_the_flag_the_command_or_the_service_manager() {
        assert_eq!(Sim::new(settings(), Limits::none(HZ)).m.evidence_window(), None);
        assert_eq!(Sim::stall(5.0).m.evidence_window(), Some(secs(5.0)));
        let mut sim = Sim::new(settings(), Limits::none(HZ));
        sim.send(notify(&["WATCHDOG_USEC=2000000"]));
        assert_eq!(sim.m.evidence_window(), Some(secs(2.0)), "the command's WATCHDOG_USEC");
        sim.send(notify(&["WATCHDOG_USEC=0"]));
        assert_eq!(sim.m.evidence_window(), None);
        let mut set = settings();
        set.upstream = Some(Some(secs(4.0)));
        assert_eq!(Sim::new(set, Limits::none(HZ)).m.evidence_window(), Some(secs(4.0)));
    }

    /// The `sample` event's and the metrics' GPU figures, in order.
    fn gpu_figures(sim: &Sim) -> Vec<(Option<f64>, Option<u64>, Option<f64>)> {
        let events = sim.log.iter().filter_map(|a| match a {
            Action::Emit(Record::Sample { gpu_util, gpu_memory_bytes, .. }) => {
                Some((*gpu_util, *gpu_memory_bytes))
            }
            _ => None,
        });
        let metrics = sim.log.iter().filter_map(|a| match a {
            Action::Metrics(m) => Some(m.gpu_utilization),
            _ => None,
        });
        events.zip(metrics).map(|((util, bytes), ratio)| (util, bytes, ratio)).collect()
    }

    #[test]
    fn gpu_work_of_the_tree_is_evidence_and_its_figures_reach_events_and_metrics() {
        use crate::probe::GpuFigures;
        let limits = Limits { stall: Some(secs(2.0)), evidence_gpu: true, ..Limits::none(HZ) };
        let mut sim = Sim::new(settings(), limits.clone());
        let busy = GpuFigures { busy: true, util: Some(60.0), memory_bytes: Some(1 << 30) };
        sim.world.sample.gpu = Some(busy);
        for t in 1..=5 {
            sim.at(t as f64);
        }
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 0, "the GPU worked");
        assert_eq!(gpu_figures(&sim), [(Some(60.0), Some(1 << 30), Some(0.6)); 5]);
        sim.take();
        // The kernel ended; the host sleeps on.
        sim.world.sample.gpu = Some(GpuFigures { busy: false, util: Some(0.0), ..busy });
        sim.at(6.0).at(7.0);
        assert!(sim.has_line("stall: no CPU, I/O or GPU progress for 2s"), "{:?}", sim.lines());
        assert_eq!(gpu_figures(&sim)[0], (Some(0.0), Some(1 << 30), Some(0.0)));

        // Without NVML there are no figures: no GPU in the stall line, nulls in the sample.
        let mut sim = Sim::new(settings(), limits);
        sim.at(1.0).at(2.0).at(3.0);
        assert!(sim.has_line("stall: no CPU or I/O progress for 2s"), "{:?}", sim.lines());
        assert!(gpu_figures(&sim).iter().all(|&f| f == (None, None, None)));
    }

    // ---- the service manager above ----

    fn upstream(sim: &Sim) -> Vec<String> {
        sim.log
            .iter()
            .filter_map(|a| match a {
                Action::Upstream(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn upstream_gets_ready_status_pings_backed_by_progress_and_stopping_at_the_end() {
        let mut set = settings();
        set.upstream = Some(Some(secs(2.0)));
        let limits = Limits { stall: Some(secs(3.0)), ..Limits::none(HZ) };
        let mut sim = Sim::new(set, limits);
        assert_eq!(upstream(&sim), ["STATUS=starting"]);
        sim.take();
        sim.send(Event::Execed);
        assert_eq!(upstream(&sim), ["READY=1", "STATUS=ready"]);
        sim.take();
        // Busy: pings every WATCHDOG_USEC/2 = 1s.
        for t in 1..=3 {
            sim.world.sample.cpu_ticks += 10;
            sim.at(t as f64);
        }
        assert_eq!(upstream(&sim).iter().filter(|m| *m == "WATCHDOG=1").count(), 3);
        // Quiet from 3s on: the stall clock passes the window at 6s; pings stop before the drain.
        sim.take();
        sim.at(4.0).at(5.0);
        assert_eq!(upstream(&sim).iter().filter(|m| *m == "WATCHDOG=1").count(), 2);
        sim.take();
        sim.at(6.0);
        assert!(!upstream(&sim).contains(&"WATCHDOG=1".to_string()), "{:?}", upstream(&sim));
        assert!(upstream(&sim).contains(&"STATUS=draining: stall".to_string()));
        sim.reap(ChildEnd::Killed(SIGTERM), false);
        assert_eq!(upstream(&sim).last().map(String::as_str), Some("STOPPING=1"));
    }

    #[test]
    fn withheld_pings_say_stalled_and_progress_says_ready_again() {
        // No --stall: the window is systemd's WATCHDOG_USEC (2s), and systemd's watchdog acts.
        let mut set = settings();
        set.upstream = Some(Some(secs(2.0)));
        let mut sim = Sim::new(set, Limits::none(HZ));
        sim.send(Event::Execed);
        sim.world.sample.cpu_ticks += 10;
        sim.at(1.0);
        sim.take();
        // Quiet from 1s: pings go on while within the window, then stop, saying why once.
        sim.at(2.0).at(3.0).at(4.0).at(5.0);
        let said = upstream(&sim);
        assert_eq!(said.iter().filter(|m| *m == "WATCHDOG=1").count(), 1, "{said:?}");
        let stalled: Vec<_> =
            said.iter().filter(|m| m.starts_with("STATUS=stalled for ")).collect();
        assert_eq!(stalled, ["STATUS=stalled for 2s"], "{said:?}");
        // Progress again: pings, and the status it had.
        sim.take();
        sim.world.sample.cpu_ticks += 10;
        // The probe at 6s sees it; the ping that follows it says so.
        sim.at(6.0).at(7.0);
        assert_eq!(upstream(&sim), ["WATCHDOG=1", "STATUS=ready"]);
    }

    #[test]
    fn a_stop_request_is_stopping_at_once_and_extend_timeout_is_passed_on() {
        let mut set = settings();
        set.upstream = Some(None);
        let mut sim = Sim::new(set, Limits::none(HZ));
        sim.take();
        sim.send(notify(&["EXTEND_TIMEOUT_USEC=5000000"]));
        assert_eq!(upstream(&sim), ["EXTEND_TIMEOUT_USEC=5000000"]);
        sim.take();
        sim.send(Event::Signals(vec![Incoming::sent(SIGTERM)]));
        assert_eq!(upstream(&sim), ["STOPPING=1"]);
        sim.take();
        sim.reap(ChildEnd::Killed(SIGTERM), false);
        assert!(upstream(&sim).is_empty(), "STOPPING=1 once: {:?}", upstream(&sim));
    }

    // ---- restart ----

    fn restart_settings(mode: RestartMode, max: Option<u32>) -> Settings {
        let mut set = settings();
        set.restart = Restart { mode, max, delay: secs(0.1), delay_max: secs(1.0) };
        set
    }

    fn restarts(sim: &Sim) -> Vec<(u32, f64, &'static str)> {
        sim.log
            .iter()
            .filter_map(|a| match a {
                Action::Emit(Record::Restart { restart, delay_s, after, .. }) => {
                    Some((*restart, *delay_s, *after))
                }
                _ => None,
            })
            .collect()
    }

    /// Ends the current run with `end` at `t`, then moves to the next run's start.
    fn end_and_restart(sim: &mut Sim, t: f64, end: ChildEnd) {
        sim.now = sim.t0 + secs(t);
        let pid = sim.world.next_pid;
        let ends = vec![Reap::Main { pid, end, oom: None, held_terminal: false }];
        sim.send(Event::Reaped { ends, children_left: false });
        if let Some(at) = sim.m.deadline().filter(|_| matches!(sim.m.state, State::Waiting { .. }))
        {
            let at = at.saturating_duration_since(sim.t0).as_secs_f64();
            sim.at(at);
        }
    }

    #[test]
    fn on_failure_restarts_with_doubling_delays_up_to_the_max() {
        let mut sim = Sim::new(restart_settings(RestartMode::OnFailure, None), Limits::none(HZ));
        let mut t = 0.05;
        for _ in 0..6 {
            end_and_restart(&mut sim, t, ChildEnd::Exited(1));
            t = sim.now.saturating_duration_since(sim.t0).as_secs_f64() + 0.05;
        }
        let delays: Vec<f64> = restarts(&sim).iter().map(|r| r.1).collect();
        assert_eq!(delays, [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]);
        assert_eq!(sim.m.run(), 7);
        let starts: Vec<u32> = sim
            .log
            .iter()
            .filter_map(|a| match a {
                Action::Emit(Record::Start { run, .. }) => Some(*run),
                _ => None,
            })
            .collect();
        assert_eq!(starts, [1, 2, 3, 4, 5, 6, 7]);
        assert!(sim.has_line("restarting in 800ms (restart 4): child exited with status 1"));
        // A run that stays up longer than the longest delay brings the delay back to the base.
        let t = sim.now.saturating_duration_since(sim.t0).as_secs_f64() + 2.0;
        end_and_restart(&mut sim, t, ChildEnd::Exited(1));
        assert_eq!(restarts(&sim).last().map(|r| r.1), Some(0.1));
    }

    #[test]
    fn on_failure_stops_after_a_success_and_always_does_not() {
        let mut sim = Sim::new(restart_settings(RestartMode::OnFailure, None), Limits::none(HZ));
        end_and_restart(&mut sim, 0.5, ChildEnd::Exited(0));
        assert!(restarts(&sim).is_empty());
        assert_eq!(sim.outcome(), Some(Outcome::Code(0)));
        let mut sim = Sim::new(restart_settings(RestartMode::Always, Some(1)), Limits::none(HZ));
        end_and_restart(&mut sim, 0.5, ChildEnd::Exited(0));
        assert_eq!(restarts(&sim), [(1, 0.1, "exit")]);
        end_and_restart(&mut sim, 1.0, ChildEnd::Exited(0));
        assert!(sim.has_line("giving up after 1 restart: child exited with status 0"));
        assert_eq!(sim.outcome(), Some(Outcome::Code(0)));
        let exit = sim.log.iter().find_map(|a| match a {
            Action::Emit(Record::Exit { restarts, .. }) => Some(*restarts),
            _ => None,
        });
        assert_eq!(exit, Some(1));
        // A success status counts as success.
        let mut set = restart_settings(RestartMode::OnFailure, None);
        set.exit.success = vec![ChildEnd::Exited(143)];
        let mut sim = Sim::new(set, Limits::none(HZ));
        end_and_restart(&mut sim, 0.5, ChildEnd::Exited(143));
        assert!(restarts(&sim).is_empty());
    }

    #[test]
    fn a_triggered_run_restarts_and_the_last_status_follows_the_usual_rules() {
        let mut set = restart_settings(RestartMode::OnFailure, Some(1));
        set.exit.exit_code_on_stop = Some(124);
        let mut sim = Sim::new(set, Limits { stall: Some(secs(1.0)), ..Limits::none(HZ) });
        sim.at(1.0).at(2.0);
        sim.now = sim.t0 + secs(2.1);
        sim.reap(ChildEnd::Killed(SIGTERM), false);
        assert_eq!(restarts(&sim), [(1, 0.1, "stall")]);
        assert!(
            sim.has_line("restarting in 100ms (restart 1 of 1): stall (child killed by SIGTERM)")
        );
        sim.at(2.2);
        assert!(sim.log.contains(&Action::Spawn));
        // The new run has a fresh stall clock: nothing fires until 2 probes of its own.
        sim.take();
        sim.at(3.2);
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 0);
        sim.at(4.2);
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 1);
        sim.now = sim.t0 + secs(4.3);
        let pid = sim.world.next_pid;
        let ends = vec![Reap::Main {
            pid,
            end: ChildEnd::Killed(SIGTERM),
            oom: None,
            held_terminal: false,
        }];
        sim.send(Event::Reaped { ends, children_left: false });
        assert!(sim.has_line("giving up after 1 restart: stall (child killed by SIGTERM)"));
        assert_eq!(sim.outcome(), Some(Outcome::Code(124)));
    }

    #[test]
    fn no_restart_once_asked_to_stop_and_a_request_in_the_delay_ends_at_once() {
        let mut sim = Sim::new(restart_settings(RestartMode::Always, None), Limits::none(HZ));
        sim.send(Event::Signals(vec![Incoming::sent(SIGTERM)]));
        sim.reap(ChildEnd::Killed(SIGTERM), false);
        assert!(restarts(&sim).is_empty());
        assert_eq!(sim.outcome(), Some(Outcome::Reraise(SIGTERM)));
        // In the delay: other signals are dropped, a stop request ends it with the last status.
        let mut sim = Sim::new(restart_settings(RestartMode::Always, None), Limits::none(HZ));
        sim.reap(ChildEnd::Exited(3), false);
        assert_eq!(restarts(&sim).len(), 1);
        sim.take();
        sim.send(Event::Signals(vec![Incoming::sent(SIGUSR1)]));
        assert!(sim.log.is_empty(), "{:?}", sim.log);
        sim.send(Event::Signals(vec![Incoming::sent(SIGINT)]));
        assert_eq!(sim.outcome(), Some(Outcome::Code(3)));
        // The restart was announced, never made.
        let made = sim.log.iter().find_map(|a| match a {
            Action::Emit(Record::Exit { restarts, .. }) => Some(*restarts),
            _ => None,
        });
        assert_eq!(made, Some(0));
        // Ctrl-C on the terminal that reached the child is a request to stop too.
        let mut sim = Sim::new(restart_settings(RestartMode::Always, None), Limits::none(HZ));
        let ends = vec![Reap::Main {
            pid: 100,
            end: ChildEnd::Killed(SIGINT),
            oom: None,
            held_terminal: true,
        }];
        sim.send(Event::Reaped { ends, children_left: false });
        assert!(restarts(&sim).is_empty());
        assert_eq!(sim.outcome(), Some(Outcome::Reraise(SIGINT)));
    }

    #[test]
    fn leftovers_are_cleaned_up_before_a_restart_even_with_no_cleanup() {
        let mut set = restart_settings(RestartMode::Always, None);
        set.cleanup = false;
        let mut sim = Sim::new(set, Limits::none(HZ));
        sim.world.tree = 2;
        sim.reap(ChildEnd::Exited(0), true);
        assert!(sim.log.contains(&Action::StopLeftovers { sig: SIGTERM }));
        assert!(restarts(&sim).is_empty(), "not before the tree is gone");
        sim.send(Event::Reaped { ends: vec![], children_left: false });
        assert_eq!(restarts(&sim).len(), 1);
        // Without a restart to follow, --no-cleanup leaves them.
        let mut set = restart_settings(RestartMode::OnFailure, None);
        set.cleanup = false;
        let mut sim = Sim::new(set, Limits::none(HZ));
        sim.reap(ChildEnd::Exited(0), true);
        assert!(!sim.log.contains(&Action::StopLeftovers { sig: SIGTERM }));
        assert_eq!(sim.outcome(), Some(Outcome::Code(0)));
    }

    #[test]
    fn upstream_pings_go_on_during_a_restart_delay() {
        let mut set = restart_settings(RestartMode::Always, None);
        set.restart.delay = secs(5.0);
        set.restart.delay_max = secs(10.0);
        set.upstream = Some(Some(secs(2.0)));
        let mut sim = Sim::new(set, Limits::none(HZ));
        sim.reap(ChildEnd::Exited(1), false);
        assert!(upstream(&sim).contains(&"STATUS=restarting in 5s".to_string()));
        sim.take();
        sim.at(1.0).at(2.0).at(3.0);
        assert_eq!(upstream(&sim).iter().filter(|m| *m == "WATCHDOG=1").count(), 3);
    }

    // ---- the dump ----

    #[test]
    fn the_dump_comes_after_the_trigger_line_and_before_the_stop() {
        let mut set = settings();
        set.dump = Dump { snapshot: true, ..Dump::default() };
        let mut sim = Sim::new(set, Limits { stall: Some(secs(1.0)), ..Limits::none(HZ) });
        sim.at(1.0).at(2.0);
        let line = sim
            .log
            .iter()
            .position(|a| matches!(a, Action::Say(_, t) if t.starts_with("stall:")))
            .unwrap();
        let dump = sim.log.iter().position(|a| *a == Action::Dump).unwrap();
        let dumped = sim
            .log
            .iter()
            .position(|a| matches!(a, Action::Say(_, t) if t == "100 S sleep 9"))
            .unwrap();
        let stop = sim.log.iter().position(|a| matches!(a, Action::Stop { .. })).unwrap();
        assert!(line < dump && dump < dumped && dumped < stop, "{:?}", sim.log);
        assert!(sim.events().contains(&"dump"));
        assert!(!sim.log.iter().any(|a| matches!(a, Action::Say(_, t) if t.contains("STATUS"))));
    }

    #[test]
    fn the_commands_last_status_closes_the_dump() {
        let mut set = settings();
        set.notify = true;
        set.dump = Dump { snapshot: true, ..Dump::default() };
        let mut sim = Sim::new(set, Limits { stall: Some(secs(1.0)), ..Limits::none(HZ) });
        sim.send(notify(&["STATUS=loading shard 3 of 8"]));
        sim.at(1.0).at(2.0);
        let dumped = sim
            .log
            .iter()
            .position(|a| matches!(a, Action::Say(_, t) if t == "100 S sleep 9"))
            .unwrap();
        let status = sim
            .log
            .iter()
            .position(
                |a| matches!(a, Action::Say(_, t) if t == "its last STATUS: loading shard 3 of 8"),
            )
            .unwrap();
        let stop = sim.log.iter().position(|a| matches!(a, Action::Stop { .. })).unwrap();
        assert!(dumped < status && status < stop, "{:?}", sim.log);
    }

    #[test]
    fn dump_signal_and_commands_get_their_time_then_the_stop() {
        let mut set = settings();
        set.dump = Dump {
            snapshot: true,
            signal: Some(SIGUSR1),
            cmd: Some("py-spy dump --pid $WATCHD_PID".into()),
            wait: secs(2.0),
        };
        let mut sim = Sim::new(set.clone(), Limits { stall: Some(secs(1.0)), ..Limits::none(HZ) });
        sim.at(1.0).at(2.0);
        assert!(sim.log.contains(&Action::DumpSignal(SIGUSR1)));
        assert!(sim.has_line("stall: no CPU or I/O progress for 1s (1 process); sending SIGTERM in 2s (after the dump), SIGKILL in 10s"));
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 0);
        // With a dump signal, the commands ending early do not cut the wait.
        sim.send(Event::DumpCmdsDone);
        sim.at(3.9);
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 0);
        sim.at(4.0);
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 1);
        // No other trigger fires meanwhile, and there is one dump per run.
        assert_eq!(sim.count(|a| *a == Action::Dump), 1);
        // Commands alone: the stop goes out as soon as they are done.
        set.dump.signal = None;
        let mut sim = Sim::new(set, Limits { stall: Some(secs(1.0)), ..Limits::none(HZ) });
        sim.at(1.0).at(2.0);
        sim.now = sim.t0 + secs(2.5);
        sim.send(Event::DumpCmdsDone);
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 1);
        // The child ending during the dump counts as stopped by watchd.
        let mut set = settings();
        set.dump = Dump { snapshot: true, signal: Some(SIGUSR1), cmd: None, wait: secs(2.0) };
        set.exit.exit_code_on_stop = Some(124);
        let mut sim = Sim::new(set, Limits { stall: Some(secs(1.0)), ..Limits::none(HZ) });
        sim.at(1.0).at(2.0);
        sim.reap(ChildEnd::Killed(SIGUSR1), false);
        assert_eq!(sim.outcome(), Some(Outcome::Code(124)));
        assert!(sim.has_line("stall: child killed by SIGUSR1 during the dump, before SIGTERM"));
    }

    #[test]
    fn the_loop_wakes_for_the_end_of_the_dump_wait_before_the_next_probe() {
        let mut set = settings();
        set.interval = secs(10.0);
        set.dump = Dump { snapshot: true, signal: Some(SIGUSR1), cmd: None, wait: secs(2.0) };
        let mut sim = Sim::new(set, Limits { stall: Some(secs(1.0)), ..Limits::none(HZ) });
        sim.at(10.0).at(20.0);
        assert!(sim.log.contains(&Action::DumpSignal(SIGUSR1)), "{:?}", sim.log);
        // The next probe is at 30s; the stop is due at 22s.
        assert_eq!(sim.m.deadline(), Some(sim.t0 + secs(22.0)));
        sim.at(22.0);
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 1);
    }

    #[test]
    fn the_dump_wait_cuts_the_commands_short_and_the_time_counts_from_the_stop() {
        let mut set = settings();
        set.dump =
            Dump { snapshot: false, signal: None, cmd: Some("sleep 9".into()), wait: secs(2.0) };
        let mut sim = Sim::new(set, Limits { stall: Some(secs(1.0)), ..Limits::none(HZ) });
        sim.at(1.0).at(2.0);
        assert_eq!(sim.count(|a| *a == Action::EndDumpCmds), 0);
        sim.at(4.0);
        // The commands' time is up before they are: the rest are skipped, then the stop.
        let end = sim.log.iter().position(|a| *a == Action::EndDumpCmds).unwrap();
        let stop = sim.log.iter().position(|a| matches!(a, Action::Stop { .. })).unwrap();
        assert!(end < stop, "{:?}", sim.log);
        sim.now = sim.t0 + secs(4.25);
        sim.reap(ChildEnd::Killed(SIGTERM), false);
        assert!(
            sim.has_line("stall: child killed by SIGTERM 250ms after SIGTERM"),
            "{:?}",
            sim.log
        );
        // Commands that were done are not ended again.
        let mut set = settings();
        set.dump =
            Dump { snapshot: false, signal: Some(SIGUSR1), cmd: Some("x".into()), wait: secs(2.0) };
        let mut sim = Sim::new(set, Limits { stall: Some(secs(1.0)), ..Limits::none(HZ) });
        sim.at(1.0).at(2.0);
        sim.send(Event::DumpCmdsDone);
        sim.at(4.0);
        assert_eq!(sim.count(|a| *a == Action::EndDumpCmds), 0);
        assert_eq!(sim.count(|a| matches!(a, Action::Stop { .. })), 1);
    }
}
