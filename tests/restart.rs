//! Restart with exponential backoff (issue 12), end to end through the real binary: when a run
//! is restarted and when it is not (stop requests, Ctrl-C on a terminal), the tree cleaned
//! between runs, each run's own clocks, counters that add up, the backoff schedule measured,
//! watchd as PID 1, the exit status after the last run, and the README's recipes.
//!
//! Each run of the command records its start (wall clock, ns) and pid in `runs` in the test's
//! directory and learns its number from it (`$n`), so a test tells runs apart without racing
//! watchd; the `start`, `restart` and `exit` events say what watchd made of them. The tests of
//! this file run one at a time: they measure timing windows on a small, shared machine.

mod pty;
mod util;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pty::{PROMPT, Shell, session_members, stat};
use serde_json::Value;
use util::*;

/// Upper bound for anything to show up. Only a failing test waits this long.
const WAIT: Duration = Duration::from_secs(20);

/// What a loaded 2-core machine may add to a scheduled delay: a fork, an exec of `sh`, a
/// `date`, a poll wake-up. Well below the steps of the schedules tested (100ms and more
/// between neighbours), so a gap in its window cannot belong to the wrong step.
const SLACK: Duration = Duration::from_millis(500);

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// One test at a time (see the file's comment); a failed test must not block the others.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The real interpreter behind `python3` (a pyenv shim costs 200 ms per start).
fn python() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 runs");
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if path.is_empty() { "python3".to_string() } else { path }
    })
}

fn now_epoch() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: signalling a process this test started.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

// ---------------------------------------------------------------------------------------------
// The scene: a scratch directory, the command's script, the events and what the runs recorded.

struct Scene {
    dir: TempDir,
}

impl Scene {
    fn new(tag: &str) -> Scene {
        Scene { dir: TempDir::new(&format!("restart-{tag}")) }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path(name)
    }

    /// A `sh` script: records this run's start and pid in `runs`, sets `$D` to the test's
    /// directory and `$n` to the run's number (1, 2, ...), then runs `body`.
    fn script(&self, body: &str) -> String {
        format!(
            "D='{}'; echo \"$(date +%s.%N) $$\" >> \"$D/runs\"; n=$(wc -l < \"$D/runs\")\n{body}\n",
            self.dir.0.display()
        )
    }

    /// watchd's arguments: `flags`, the events file, then `-- sh -c SCRIPT`.
    fn args(&self, flags: &[&str], body: &str) -> Vec<String> {
        let mut args: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        args.extend(["--events".into(), self.path("events.jsonl").display().to_string()]);
        args.extend(["--".into(), "sh".into(), "-c".into(), self.script(body)]);
        args
    }

    fn watchd(&self, flags: &[&str], body: &str) -> Command {
        watchd(self.args(flags, body))
    }

    /// The same watchd as PID 1 of a new PID namespace with its own /proc, as in a container;
    /// `--kill-child` so that nothing of it outlives a failed test.
    fn watchd_as_pid1(&self, flags: &[&str], body: &str) -> Command {
        let mut cmd = Command::new("unshare");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WATCHD_") {
                cmd.env_remove(key);
            }
        }
        cmd.args(["--pid", "--fork", "--kill-child", "--mount-proc", WATCHD])
            .args(self.args(flags, body))
            .stdin(Stdio::null());
        cmd
    }

    /// (start time in seconds since the epoch, pid) of every run so far, in order.
    fn runs(&self) -> Vec<(f64, i32)> {
        times_and_pids(&fs::read_to_string(self.path("runs")).unwrap_or_default())
    }

    /// Times a script appended with `date +%s.%N >> "$D/NAME"`.
    fn times(&self, name: &str) -> Vec<f64> {
        times_and_pids(&fs::read_to_string(self.path(name)).unwrap_or_default())
            .into_iter()
            .map(|(t, _)| t)
            .collect()
    }

    /// The complete lines of the events file, parsed.
    fn events(&self) -> Vec<Value> {
        let text = fs::read_to_string(self.path("events.jsonl")).unwrap_or_default();
        text.split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// What the runs recorded and what watchd said, for failure messages.
    fn story(&self) -> String {
        format!(
            "--- runs (start, pid):\n{}--- events:\n{}",
            fs::read_to_string(self.path("runs")).unwrap_or_default(),
            fs::read_to_string(self.path("events.jsonl")).unwrap_or_default()
        )
    }
}

fn times_and_pids(text: &str) -> Vec<(f64, i32)> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let t = words.next()?.parse().ok()?;
            Some((t, words.next().and_then(|p| p.parse().ok()).unwrap_or(0)))
        })
        .collect()
}

fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// The `run` field of each `start` event.
fn start_runs(events: &[Value]) -> Vec<u64> {
    named(events, "start").iter().map(|e| e["run"].as_u64().unwrap_or(0)).collect()
}

/// The events of run `k` (from 1): from its `start` event to the next `start`.
fn run_events(events: &[Value], k: u64) -> &[Value] {
    let Some(from) = events.iter().position(|e| e["event"] == "start" && e["run"] == k) else {
        return &[];
    };
    let to = events[from + 1..]
        .iter()
        .position(|e| e["event"] == "start")
        .map_or(events.len(), |i| from + 1 + i);
    &events[from..to]
}

/// An event's `ts`, in seconds since the epoch (millisecond resolution).
fn ts(event: &Value) -> f64 {
    let text = event["ts"].as_str().unwrap_or_else(|| panic!("no ts in {event}"));
    humantime::parse_rfc3339(text)
        .unwrap_or_else(|e| panic!("ts {text}: {e}"))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The single `exit` event.
#[track_caller]
fn exit_event<'a>(events: &'a [Value], story: &str) -> &'a Value {
    let exits = named(events, "exit");
    assert_eq!(exits.len(), 1, "one exit event\n{story}");
    exits[0]
}

/// Checks a `restart` event: its fields are exactly SPEC's, and their values.
#[track_caller]
fn check_restart(ev: &Value, restart: u64, delay_s: f64, after: &str, story: &str) {
    let mut keys: Vec<&str> =
        ev.as_object().expect("an object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["after", "code", "delay_s", "event", "restart", "signal", "ts"],
        "fields of {ev}\n{story}"
    );
    assert_eq!(ev["restart"], restart, "restart number in {ev}\n{story}");
    let delay = ev["delay_s"].as_f64().unwrap_or(f64::NAN);
    assert!((delay - delay_s).abs() < 0.0005, "delay_s should be {delay_s} in {ev}\n{story}");
    assert_eq!(ev["after"], after, "after in {ev}\n{story}");
}

/// Runs watchd to its end; a hung one fails the test after WAIT (no test here needs longer).
fn run_to_end(mut cmd: Command) -> Run {
    run_within(&mut cmd, WAIT)
}

/// A watchd started in the background, its output going to files in the scene's directory.
struct Running {
    child: Child,
    what: String,
    started: Instant,
    out: PathBuf,
    err: PathBuf,
    status: Option<std::process::ExitStatus>,
}

impl Running {
    fn start(mut cmd: Command, scene: &Scene) -> Running {
        let (out, err) = (scene.path("stdout"), scene.path("stderr"));
        cmd.stdout(fs::File::create(&out).unwrap()).stderr(fs::File::create(&err).unwrap());
        let what = format!("{cmd:?}");
        let started = Instant::now();
        let child = cmd.spawn().expect("spawn watchd");
        Running { child, what, started, out, err, status: None }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn exited(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status.is_some()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Polls `cond` until it holds (true) or watchd has exited (false); fails after WAIT.
    #[track_caller]
    fn until(
        &mut self,
        what: &str,
        story: impl Fn() -> String,
        mut cond: impl FnMut() -> bool,
    ) -> bool {
        let deadline = Instant::now() + WAIT;
        loop {
            if cond() {
                return true;
            }
            if self.exited() {
                return cond();
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {WAIT:?} waiting for {what}\n--- command: {}\n--- stderr:\n{}\n{}",
                self.what,
                self.stderr(),
                story()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Like `until`, but watchd exiting first is a failure.
    #[track_caller]
    fn wait_until(&mut self, what: &str, story: impl Fn() -> String, cond: impl FnMut() -> bool) {
        if !self.until(what, &story, cond) {
            panic!(
                "watchd exited ({:?}) before {what}\n--- command: {}\n--- stderr:\n{}\n{}",
                self.status,
                self.what,
                self.stderr(),
                story()
            );
        }
    }

    /// Waits for watchd to end, at most `limit`, and returns the whole story of its run.
    #[track_caller]
    fn finish(mut self, limit: Duration) -> Run {
        let status = match self.status {
            Some(status) => status,
            None => wait_deadline(&mut self.child, limit).unwrap_or_else(|| {
                panic!(
                    "{} did not finish within {limit:?}\n--- stderr:\n{}",
                    self.what,
                    self.stderr()
                )
            }),
        };
        self.status = Some(status);
        Run {
            what: self.what.clone(),
            status,
            stdout: fs::read_to_string(&self.out).unwrap_or_default(),
            stderr: self.stderr(),
            took: self.started.elapsed(),
        }
    }
}

impl Drop for Running {
    /// A failed test leaves nothing running: watchd is killed (its child follows through the
    /// parent-death signal; PID 1's namespace through unshare's --kill-child).
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Kills, when dropped, every process still carrying the tag (what `--no-cleanup` left, or
/// what a failing watchd left behind).
struct Survivors(String);

impl Drop for Survivors {
    fn drop(&mut self) {
        for pid in processes_tagged(&self.0) {
            // SAFETY: a process this test started (it carries the test's unique tag).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. When a run is restarted.

#[test]
fn on_failure_restarts_a_failing_run_until_restart_max() {
    let _serial = serial();
    let scene = Scene::new("max");
    let flags = ["--restart", "on-failure", "--restart-max", "2", "--restart-delay", "100ms"];
    let r = run_to_end(scene.watchd(&flags, "exit 3"));
    let story = format!("{r}\n{}", scene.story());
    let runs = scene.runs();
    assert_eq!(runs.len(), 3, "exit 3 is a failure: the first run and 2 restarts\n{story}");
    r.assert_code(3);

    let events = scene.events();
    assert_eq!(start_runs(&events), [1, 2, 3], "start.run counts runs from 1\n{story}");
    let start_pids: Vec<i64> =
        named(&events, "start").iter().map(|e| e["pid"].as_i64().unwrap_or(0)).collect();
    let run_pids: Vec<i64> = runs.iter().map(|&(_, pid)| pid.into()).collect();
    assert_eq!(start_pids, run_pids, "each start event names its run's main child\n{story}");
    for start in named(&events, "start") {
        let mut keys: Vec<&str> = start.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["argv", "cgroup", "event", "pid", "run", "ts"], "{start}\n{story}");
    }
    let restarts = named(&events, "restart");
    assert_eq!(restarts.len(), 2, "{story}");
    // The delay doubles after a run shorter than --restart-delay-max (default 5m).
    check_restart(restarts[0], 1, 0.1, "exit", &story);
    check_restart(restarts[1], 2, 0.2, "exit", &story);
    for ev in &restarts {
        assert_eq!((&ev["code"], &ev["signal"]), (&Value::from(3), &Value::Null), "{ev}\n{story}");
    }
    let exit = exit_event(&events, &story);
    assert_eq!((&exit["restarts"], &exit["code"]), (&Value::from(2), &Value::from(3)), "{story}");

    // Announced at the default verbosity.
    r.assert_stderr_has(
        "watchd: restarting in 100ms (restart 1 of 2): child exited with status 3\n",
    );
    r.assert_stderr_has(
        "watchd: restarting in 200ms (restart 2 of 2): child exited with status 3\n",
    );
    let giving_up =
        r.stderr.lines().filter(|l| l.starts_with("watchd: giving up after 2 restarts: "));
    assert_eq!(giving_up.count(), 1, "one line says the retries are over\n{story}");
}

#[test]
fn on_failure_stops_restarting_at_the_first_success() {
    let _serial = serial();
    let scene = Scene::new("success");
    let flags = ["--restart", "on-failure", "--restart-delay", "100ms"];
    let r = run_to_end(scene.watchd(&flags, "if [ \"$n\" -lt 3 ]; then exit 1; fi; exit 0"));
    let story = format!("{r}\n{}", scene.story());
    assert_eq!(
        scene.runs().len(),
        3,
        "runs 1 and 2 fail and are restarted; run 3 exits 0, which on-failure does not \
         restart\n{story}"
    );
    r.assert_code(0);
    let events = scene.events();
    assert_eq!(start_runs(&events), [1, 2, 3], "{story}");
    assert_eq!(named(&events, "restart").len(), 2, "{story}");
    assert_eq!(exit_event(&events, &story)["restarts"], 2, "{story}");
    assert!(!r.stderr.contains("giving up"), "no --restart-max was reached\n{story}");
}

#[test]
fn on_failure_restarts_a_death_by_signal() {
    let _serial = serial();
    let scene = Scene::new("signal");
    let flags = ["--restart", "on-failure", "--restart-delay", "100ms"];
    let r = run_to_end(scene.watchd(&flags, "if [ \"$n\" -eq 1 ]; then kill -USR1 $$; fi; exit 0"));
    let story = format!("{r}\n{}", scene.story());
    assert_eq!(scene.runs().len(), 2, "a run killed by SIGUSR1 is restarted\n{story}");
    r.assert_code(0);
    let events = scene.events();
    let restarts = named(&events, "restart");
    assert_eq!(restarts.len(), 1, "{story}");
    check_restart(restarts[0], 1, 0.1, "signal", &story);
    assert_eq!(
        (&restarts[0]["code"], &restarts[0]["signal"]),
        (&Value::Null, &Value::from("SIGUSR1")),
        "{story}"
    );
}

#[test]
fn always_restarts_after_exit_0_too() {
    let _serial = serial();
    let scene = Scene::new("always");
    let flags = ["--restart", "always", "--restart-max", "2", "--restart-delay", "100ms"];
    let r = run_to_end(scene.watchd(&flags, "exit 0"));
    let story = format!("{r}\n{}", scene.story());
    assert_eq!(scene.runs().len(), 3, "always restarts a run that exited 0\n{story}");
    r.assert_code(0);
    let events = scene.events();
    let restarts = named(&events, "restart");
    assert_eq!(restarts.len(), 2, "{story}");
    for (i, ev) in restarts.iter().enumerate() {
        check_restart(ev, i as u64 + 1, 0.1 * 2f64.powi(i as i32), "exit", &story);
        assert_eq!(ev["code"], 0, "{story}");
    }
    assert_eq!(exit_event(&events, &story)["restarts"], 2, "{story}");
}

/// Run 1 runs `first_run` and is stopped by `reason`; run 2 exits 0. With on-failure, the stop
/// is a failure: one restart, and watchd exits with run 2's 0, not --exit-code-on-stop.
fn restarts_after_trigger(reason: &str, flags: &[&str], first_run: &str) {
    let _serial = serial();
    let scene = Scene::new(reason);
    let mut all = vec![
        "--restart",
        "on-failure",
        "--restart-delay",
        "100ms",
        "--grace",
        "2s",
        "--exit-code-on-stop",
        "124",
    ];
    all.extend(flags);
    let body = format!("if [ \"$n\" -eq 1 ]; then {first_run}; fi; exit 0");
    let r = run_to_end(scene.watchd(&all, &body));
    let story = format!("{r}\n{}", scene.story());
    assert_eq!(scene.runs().len(), 2, "the run stopped by {reason} is restarted once\n{story}");
    r.assert_code(0);
    r.assert_stderr_has(&format!("watchd: {reason}: "));

    let events = scene.events();
    assert_eq!(start_runs(&events), [1, 2], "{story}");
    let first = run_events(&events, 1);
    let trigger = named(first, "trigger");
    assert_eq!(trigger.len(), 1, "run 1 has one trigger\n{story}");
    assert_eq!(trigger[0]["reason"], reason, "{story}");
    let restarts = named(first, "restart");
    assert_eq!(restarts.len(), 1, "the restart belongs to run 1\n{story}");
    check_restart(restarts[0], 1, 0.1, reason, &story);
    // Every first run here dies of the drain's SIGTERM.
    assert_eq!(
        (&restarts[0]["code"], &restarts[0]["signal"]),
        (&Value::Null, &Value::from("SIGTERM")),
        "{story}"
    );
    assert!(named(run_events(&events, 2), "trigger").is_empty(), "run 2 just exits\n{story}");
    let exit = exit_event(&events, &story);
    assert_eq!((&exit["restarts"], &exit["code"]), (&Value::from(1), &Value::from(0)), "{story}");
    assert!(exit["reason"].is_null(), "watchd did not stop the last run\n{story}");
}

#[test]
fn on_failure_restarts_after_a_stall() {
    restarts_after_trigger("stall", &["--stall", "300ms", "--interval", "50ms"], "exec sleep 1000");
}

#[test]
fn on_failure_restarts_after_a_timeout() {
    restarts_after_trigger("timeout", &["--timeout", "300ms"], "exec sleep 1000");
}

#[test]
fn on_failure_restarts_after_a_cpu_limit() {
    // One busy core against a limit of 0.2: cpu-hard (0.95 × 0.2) in the first window;
    // cpu-soft would take its default 15s.
    restarts_after_trigger(
        "cpu-hard",
        &["--cpu-limit", "0.2", "--interval", "100ms"],
        "while :; do :; done",
    );
}

#[test]
fn on_failure_restarts_after_rss() {
    let grow =
        format!("exec {} -c \"import time; b = b'x' * (100 << 20); time.sleep(1000)\"", python());
    restarts_after_trigger("rss", &["--max-rss", "40M", "--interval", "50ms"], &grow);
}

#[test]
fn on_failure_restarts_after_unhealthy() {
    restarts_after_trigger(
        "unhealthy",
        &["--health-cmd", "false", "--health-interval", "50ms", "--health-retries", "2"],
        "exec sleep 1000",
    );
}

#[test]
fn on_failure_restarts_after_not_ready() {
    // --notify and no READY=1: never ready.
    restarts_after_trigger(
        "not-ready",
        &["--notify", "--ready-timeout", "300ms"],
        "exec sleep 1000",
    );
}

#[test]
fn on_failure_restarts_after_watchdog() {
    // The main child itself sends WATCHDOG=trigger, so the sender is in the tree for sure.
    let send = format!(
        "exec {} -c \"import os, socket, time; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\
         .sendto(b'WATCHDOG=trigger', os.environ['NOTIFY_SOCKET']); time.sleep(1000)\"",
        python()
    );
    restarts_after_trigger("watchdog", &["--notify"], &send);
}

// ---------------------------------------------------------------------------------------------
// 1. When a run is not restarted: watchd was asked to stop.

/// With `--restart always`, run 1 exits 1 (restarted); run 2 traps `caught` and exits
/// `code` on it. `sig` to watchd during run 2 is forwarded, and watchd ends with run 2's
/// status: a stop request is never followed by a restart, whatever the run's status.
fn a_stop_request_during_a_run_ends_the_restarts(
    sig: i32,
    extra: &[&str],
    caught: &str,
    code: i32,
) {
    let _serial = serial();
    let scene = Scene::new(&format!("stop-{sig}"));
    let mut flags = vec!["--restart", "always", "--restart-delay", "100ms"];
    flags.extend(extra);
    let body = format!(
        "if [ \"$n\" -eq 1 ]; then exit 1; fi\n\
         trap 'echo {caught} >> \"$D/got\"; exit {code}' {caught}\n\
         touch \"$D/ready\"; while :; do sleep 0.05; done"
    );
    let mut w = Running::start(scene.watchd(&flags, &body), &scene);
    let ready = scene.path("ready");
    w.wait_until("run 2 to set its trap", || scene.story(), || ready.exists());
    kill(w.pid(), sig);
    let r = w.finish(Duration::from_secs(10));
    let story = format!("{r}\n{}", scene.story());
    assert_eq!(
        fs::read_to_string(scene.path("got")).unwrap_or_default(),
        format!("{caught}\n"),
        "the stop request reaches run 2 (as {caught})\n{story}"
    );
    assert_eq!(scene.runs().len(), 2, "no restart after a stop request\n{story}");
    r.assert_code(code);
    let events = scene.events();
    assert_eq!(named(&events, "restart").len(), 1, "only run 1 was restarted\n{story}");
    assert_eq!(exit_event(&events, &story)["restarts"], 1, "{story}");
}

#[test]
fn sigterm_during_a_run_is_forwarded_and_ends_the_restarts() {
    a_stop_request_during_a_run_ends_the_restarts(libc::SIGTERM, &[], "TERM", 7);
}

#[test]
fn sigint_during_a_run_is_forwarded_and_ends_the_restarts() {
    a_stop_request_during_a_run_ends_the_restarts(libc::SIGINT, &[], "INT", 7);
}

#[test]
fn sigquit_during_a_run_is_forwarded_and_ends_the_restarts() {
    a_stop_request_during_a_run_ends_the_restarts(libc::SIGQUIT, &[], "QUIT", 7);
}

#[test]
fn a_rewritten_sigterm_is_still_a_stop_request() {
    // Run 2 gets USR1 and exits 0, which `always` would restart: only the request stops it.
    a_stop_request_during_a_run_ends_the_restarts(
        libc::SIGTERM,
        &["--rewrite-signal", "TERM=USR1"],
        "USR1",
        0,
    );
}

/// Run 1 exits 3 and the delay is 5s: `sig` during the delay ends watchd at once, with 3.
fn a_stop_request_during_the_delay_ends_watchd_at_once(sig: i32) {
    let _serial = serial();
    let scene = Scene::new(&format!("delay-stop-{sig}"));
    let flags = ["--restart", "always", "--restart-delay", "5s"];
    let mut w = Running::start(scene.watchd(&flags, "exit 3"), &scene);
    w.wait_until(
        "the restart event (the delay has begun)",
        || scene.story(),
        || !named(&scene.events(), "restart").is_empty(),
    );
    let sent = Instant::now();
    kill(w.pid(), sig);
    let r = w.finish(Duration::from_secs(10));
    let after_signal = sent.elapsed();
    let story = format!("{r}\n{}", scene.story());
    assert!(
        after_signal < Duration::from_millis(1500),
        "watchd took {after_signal:?} after the signal to end: it should end at once, not \
         after the 5s delay\n{story}"
    );
    r.assert_code(3);
    assert_eq!(scene.runs().len(), 1, "no run after the stop request\n{story}");
    r.assert_stderr_has("watchd: restarting in 5s ");
    // The announced restart never happened: the last run is run 1, with none before it.
    assert_eq!(exit_event(&scene.events(), &story)["restarts"], 0, "{story}");
}

#[test]
fn sigterm_during_the_delay_ends_watchd_at_once_with_the_last_status() {
    a_stop_request_during_the_delay_ends_watchd_at_once(libc::SIGTERM);
}

#[test]
fn sigint_during_the_delay_ends_watchd_at_once_with_the_last_status() {
    a_stop_request_during_the_delay_ends_watchd_at_once(libc::SIGINT);
}

#[test]
fn sigquit_during_the_delay_ends_watchd_at_once_with_the_last_status() {
    a_stop_request_during_the_delay_ends_watchd_at_once(libc::SIGQUIT);
}

#[test]
fn other_signals_during_the_delay_are_dropped() {
    let _serial = serial();
    let scene = Scene::new("delay-drop");
    let flags = ["--restart", "always", "--restart-max", "1", "--restart-delay", "1500ms"];
    let body = "if [ \"$n\" -eq 1 ]; then date +%s.%N >> \"$D/ends\"; exit 3; fi\n\
                trap 'echo USR1 >> \"$D/got\"' USR1; trap 'echo HUP >> \"$D/got\"' HUP\n\
                trap 'echo USR2 >> \"$D/got\"; exit 0' USR2\n\
                touch \"$D/ready\"; while :; do sleep 0.05; done";
    let mut w = Running::start(scene.watchd(&flags, body), &scene);
    w.wait_until(
        "the restart event (the delay has begun)",
        || scene.story(),
        || !named(&scene.events(), "restart").is_empty(),
    );
    kill(w.pid(), libc::SIGUSR1);
    kill(w.pid(), libc::SIGHUP);
    let sent_at = now_epoch();
    let ready = scene.path("ready");
    w.wait_until(
        "run 2 after the delay (USR1 and HUP must neither end watchd nor cut the delay short)",
        || scene.story(),
        || ready.exists(),
    );
    let runs = scene.runs();
    let ends = scene.times("ends");
    assert!(
        runs.len() == 2 && runs[1].0 > sent_at,
        "premise: the signals went out during the delay (sent at {sent_at:.3}, run 2 started \
         at {:?})\n{}",
        runs.get(1),
        scene.story()
    );
    // Only now is there a child to forward to; USR2 ends run 2.
    kill(w.pid(), libc::SIGUSR2);
    let r = w.finish(Duration::from_secs(10));
    let story = format!("{r}\n{}", scene.story());
    assert_eq!(
        fs::read_to_string(scene.path("got")).unwrap_or_default(),
        "USR2\n",
        "signals received during the delay are dropped, not kept for the next run\n{story}"
    );
    let gap = runs[1].0 - ends[0];
    assert!(gap >= 1.5, "the dropped signals cut the 1.5s delay to {gap:.3}s\n{story}");
    r.assert_code(0);
}

// ---------------------------------------------------------------------------------------------
// 1. Ctrl-C and Ctrl-\ on a terminal go to the run, not to watchd, and still end the restarts.

/// Run 1 exits 1 and is restarted (`always`); run 2 holds the terminal, and the key typed
/// kills it with a signal that comes from the terminal, not from watchd: the user's request
/// to stop, so no run 3, and the shell sees the run's signal as watchd's status.
fn a_key_on_the_terminal_ends_the_restarts(key: &[u8], status: i32) {
    let _serial = serial();
    let scene = Scene::new("tty");
    let script = scene.path("run.sh");
    fs::write(&script, scene.script("if [ \"$n\" -eq 1 ]; then exit 1; fi; exec sleep 100"))
        .unwrap();
    let mut sh = Shell::start();
    sh.line(&format!("watchd --restart always --restart-delay 100ms -- sh {}", script.display()));
    let bash = sh.pid;
    let mut job = None;
    sh.wait_until("watchd restarts the command and run 2 is `sleep`", |_| {
        let procs = session_members(bash);
        let watchd = procs.iter().find(|w| w.ppid == bash && w.comm == "watchd");
        let run2 = scene.runs().get(1).map(|&(_, pid)| pid);
        job = watchd.zip(run2).map(|(watchd, run2)| (watchd.pid, run2));
        job.is_some_and(|(_, run2)| stat(run2).is_some_and(|s| s.comm == "sleep"))
    });
    let (watchd, child) = job.expect("set by the wait");
    let run2 = stat(child).unwrap_or_else(|| panic!("run 2 is gone\n{}", sh.dump()));
    assert_eq!(
        (run2.pgrp, run2.tpgid),
        (child, child),
        "run 2 leads its own group and holds the terminal, as run 1 did\n{}",
        sh.dump()
    );
    sh.send(key);
    sh.expect(PROMPT, "the key should end run 2, then watchd, and give the prompt back");
    sh.status(status, "watchd should mirror run 2's death by the terminal's signal");
    let story = format!("{}\n{}", scene.story(), sh.dump());
    assert_eq!(scene.runs().len(), 2, "no run 3 after the terminal's signal\n{story}");
    assert!(stat(watchd).is_none(), "watchd {watchd} is gone\n{story}");
    let restarts: Vec<i32> =
        session_members(bash).iter().filter(|s| s.comm == "sleep").map(|s| s.pid).collect();
    assert!(restarts.is_empty(), "nothing was restarted: {restarts:?}\n{story}");
}

#[test]
fn ctrl_c_on_the_terminal_is_not_restarted() {
    a_key_on_the_terminal_ends_the_restarts(b"\x03", 128 + libc::SIGINT);
}

#[test]
fn ctrl_backslash_on_the_terminal_is_not_restarted() {
    a_key_on_the_terminal_ends_the_restarts(b"\x1c", 128 + libc::SIGQUIT);
}

// ---------------------------------------------------------------------------------------------
// 2. Between runs: the tree is cleaned; each run has its own clocks; counters add up.

#[test]
fn leftovers_are_killed_and_reaped_before_the_next_run_even_with_no_cleanup() {
    let _serial = serial();
    let scene = Scene::new("leftovers");
    let tag = unique_tag("restart-leftovers");
    let _survivors = Survivors(tag.clone());
    let flags = [
        "--no-cleanup",
        "--restart",
        "on-failure",
        "--restart-max",
        "1",
        "--restart-delay",
        "100ms",
        "--grace",
        "300ms",
        "--interval",
        "100ms",
    ];
    // Run 1 leaves a sleep that obeys SIGTERM and one that ignores it, and fails. Run 2 looks
    // at them first thing, leaves a sleep of its own, and exits 0 once told to.
    let body = "if [ \"$n\" -eq 1 ]; then\n\
                  sleep 1000 & echo $! >> \"$D/left\"\n\
                  sh -c 'trap \"\" TERM; echo $$ >> \"$1\"; exec sleep 1000' ignorer \"$D/left\" &\n\
                  while [ \"$(wc -l < \"$D/left\")\" -lt 2 ]; do sleep 0.01; done\n\
                  exit 1\n\
                fi\n\
                for p in $(cat \"$D/left\"); do\n\
                  if [ -r /proc/$p/stat ]; then echo \"$p $(cut -d' ' -f3 /proc/$p/stat)\"; else echo \"$p gone\"; fi\n\
                done > \"$D/seen.tmp\"; mv \"$D/seen.tmp\" \"$D/seen\"\n\
                sleep 1000 & echo $! > \"$D/left2\"\n\
                while [ ! -e \"$D/go\" ]; do sleep 0.01; done\n\
                exit 0";
    let mut cmd = scene.watchd(&flags, body);
    cmd.env("WATCHD_TEST_TAG", &tag);
    let mut w = Running::start(cmd, &scene);
    let left2 = scene.path("left2");
    w.until(
        "run 2 to look at run 1's leftovers (or watchd to end)",
        || scene.story(),
        || left2.exists(),
    );
    let left = pids_in(&fs::read_to_string(scene.path("left")).unwrap_or_default());
    assert_eq!(left.len(), 2, "run 1 left two processes\n{}", scene.story());
    for &pid in &left {
        assert!(
            !alive(pid),
            "run 1's leftover {pid} is still alive after run 1 ended: between runs the tree is \
             stopped and killed, even with --no-cleanup\n--- stderr:\n{}\n{}",
            w.stderr(),
            scene.story()
        );
    }
    let seen = fs::read_to_string(scene.path("seen")).unwrap_or_default();
    assert_eq!(seen.lines().count(), 2, "run 2 looked at both\n{}", scene.story());
    for line in seen.lines() {
        assert!(
            line.ends_with(" gone") || line.ends_with(" Z"),
            "when run 2 started, run 1's leftover was alive: {line:?}\n{}",
            scene.story()
        );
    }
    // Reaped (gone from /proc, not a zombie) while run 2 still runs.
    let run1 = scene.runs()[0].1;
    w.wait_until(
        "run 1's main child and leftovers to be reaped",
        || scene.story(),
        || left.iter().chain([&run1]).all(|pid| !Path::new(&format!("/proc/{pid}")).exists()),
    );
    fs::write(scene.path("go"), "").unwrap();
    let r = w.finish(Duration::from_secs(10));
    let story = format!("{r}\n{}", scene.story());
    r.assert_code(0);
    assert_eq!(scene.runs().len(), 2, "{story}");
    // After the last run --no-cleanup holds again: run 2's sleep is left running.
    let last = pids_in(&fs::read_to_string(&left2).unwrap_or_default());
    assert!(
        last.len() == 1 && alive(last[0]),
        "--no-cleanup leaves the last run's leftovers running\n{story}"
    );
    // With a cgroup, the leftover keeps it, and watchd leaves it behind.
    if let Some(dir) = watchd_cgroup_of(last[0]) {
        kill(last[0], libc::SIGKILL);
        remove_left_cgroup(&dir);
    }
}

#[test]
fn each_run_has_its_own_timeout() {
    let _serial = serial();
    let scene = Scene::new("timeout-afresh");
    let flags = [
        "--timeout",
        "500ms",
        "--restart",
        "on-failure",
        "--restart-max",
        "2",
        "--restart-delay",
        "100ms",
        "--exit-code-on-stop",
        "124",
    ];
    let r = run_to_end(scene.watchd(&flags, "exec sleep 1000"));
    let story = format!("{r}\n{}", scene.story());
    assert_eq!(scene.runs().len(), 3, "each run is stopped by its timeout and restarted\n{story}");
    let events = scene.events();
    for k in 1..=3 {
        let this = run_events(&events, k);
        let start = named(this, "start");
        let trigger = named(this, "trigger");
        assert!(start.len() == 1 && trigger.len() == 1, "run {k}: a start and a trigger\n{story}");
        assert_eq!(trigger[0]["reason"], "timeout", "{story}");
        // Timestamps are in whole milliseconds.
        let lasted = ts(trigger[0]) - ts(start[0]);
        assert!(
            lasted >= 0.5 - 0.002 && lasted <= 0.5 + SLACK.as_secs_f64(),
            "run {k} was stopped {lasted:.3}s after its start: --timeout 500ms counts from each \
             run's start\n{story}"
        );
    }
    // The last run was stopped by watchd: --exit-code-on-stop.
    r.assert_code(124);
    let giving_up =
        r.stderr.lines().filter(|l| l.starts_with("watchd: giving up after 2 restarts: "));
    assert_eq!(giving_up.count(), 1, "{story}");
    let exit = exit_event(&events, &story);
    assert_eq!((&exit["reason"], &exit["restarts"]), (&Value::from("timeout"), &Value::from(2)));
}

#[test]
fn each_run_has_its_own_readiness() {
    let _serial = serial();
    let scene = Scene::new("ready-afresh");
    let flags = [
        "--notify",
        "--ready-timeout",
        "1s",
        "--timeout",
        "2s",
        "--restart",
        "on-failure",
        "--restart-max",
        "1",
        "--restart-delay",
        "100ms",
        "--exit-code-on-stop",
        "124",
    ];
    // Run 1 is ready at once and is stopped by its timeout; run 2 never says READY=1.
    let body = format!(
        "if [ \"$n\" -eq 1 ]; then exec {} -c \"import os, socket, time; \
         socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'READY=1', \
         os.environ['NOTIFY_SOCKET']); time.sleep(1000)\"; fi\nexec sleep 1000",
        python()
    );
    let r = run_to_end(scene.watchd(&flags, &body));
    let story = format!("{r}\n{}", scene.story());
    assert_eq!(scene.runs().len(), 2, "{story}");
    let events = scene.events();
    let first = run_events(&events, 1);
    assert_eq!(named(first, "ready").len(), 1, "run 1 is ready\n{story}");
    let reasons: Vec<&Value> = named(first, "trigger").iter().map(|t| &t["reason"]).collect();
    assert_eq!(reasons, ["timeout"], "run 1 was ready: only its timeout stops it\n{story}");
    let second = run_events(&events, 2);
    assert!(named(second, "ready").is_empty(), "run 2 never said READY=1\n{story}");
    let trigger = named(second, "trigger");
    assert_eq!(trigger.len(), 1, "{story}");
    assert_eq!(
        trigger[0]["reason"], "not-ready",
        "run 1's readiness does not carry over to run 2\n{story}"
    );
    let waited = ts(trigger[0]) - ts(named(second, "start")[0]);
    assert!(
        waited >= 1.0 - 0.002 && waited <= 1.0 + SLACK.as_secs_f64(),
        "not-ready fired {waited:.3}s after run 2's start, not 1s\n{story}"
    );
    r.assert_code(124);
    let exit = exit_event(&events, &story);
    assert_eq!((&exit["reason"], &exit["restarts"]), (&Value::from("not-ready"), &Value::from(1)));
}

#[test]
fn each_run_has_its_own_health_count() {
    let _serial = serial();
    let scene = Scene::new("health-afresh");
    let flags = [
        "--health-cmd",
        "false",
        "--health-interval",
        "100ms",
        "--health-retries",
        "3",
        "--restart",
        "on-failure",
        "--restart-max",
        "1",
        "--restart-delay",
        "100ms",
        "--exit-code-on-stop",
        "124",
    ];
    let r = run_to_end(scene.watchd(&flags, "exec sleep 1000"));
    let story = format!("{r}\n{}", scene.story());
    assert_eq!(scene.runs().len(), 2, "{story}");
    let events = scene.events();
    for k in 1..=2 {
        let this = run_events(&events, k);
        let until_trigger = this
            .iter()
            .position(|e| e["event"] == "trigger")
            .unwrap_or_else(|| panic!("run {k} has a trigger\n{story}"));
        assert_eq!(this[until_trigger]["reason"], "unhealthy", "{story}");
        let failures: Vec<&Value> =
            named(&this[..until_trigger], "health").iter().map(|h| &h["failures"]).collect();
        assert_eq!(
            failures,
            [1, 2, 3],
            "run {k}: the consecutive failures count from its own start\n{story}"
        );
    }
    r.assert_code(124);
}

/// Counters add up over runs: the metrics file during run 3 shows the CPU of runs 1 and 2, their
/// two stall stops and the two restarts.
#[test]
fn counters_add_up_over_runs() {
    let _serial = serial();
    let scene = Scene::new("counters");
    let metrics = scene.path("metrics.prom");
    let metrics_arg = metrics.display().to_string();
    let flags = [
        "--stall",
        "400ms",
        "--interval",
        "50ms",
        "--restart",
        "on-failure",
        "--restart-max",
        "2",
        "--restart-delay",
        "100ms",
        "--metrics-file",
        &metrics_arg,
    ];
    // Runs 1 and 2 burn 0.35s of CPU each, then stall. Run 3 spins until watchd is asked to
    // stop, so it cannot stall however loaded the machine is.
    let body = format!(
        "if [ \"$n\" -lt 3 ]; then exec {} -c \"import time\nwhile time.process_time() < 0.35: \
         pass\ntime.sleep(1000)\"; fi\nwhile :; do :; done",
        python()
    );
    let mut w = Running::start(scene.watchd(&flags, &body), &scene);
    let read = || fs::read_to_string(&metrics).unwrap_or_default();
    let story = || format!("--- metrics:\n{}\n{}", read(), scene.story());
    // The first metrics that count both restarts: written early in run 3 (or in the delay),
    // before run 3's own CPU could reach what runs 1 and 2 used.
    let mut snapshot = String::new();
    w.wait_until("metrics with watchd_restarts_total 2", story, || {
        snapshot = read();
        metric(&snapshot, "watchd_restarts_total") == Some(2.0)
    });
    let why = format!("--- the snapshot:\n{snapshot}\n{}", story());
    assert_eq!(
        metric(&snapshot, "watchd_stops_total{reason=\"stall\"}"),
        Some(2.0),
        "the stall stops of runs 1 and 2 add up\n{why}"
    );
    let cpu = metric(&snapshot, "watchd_cpu_seconds_total").unwrap_or(0.0);
    assert!(cpu >= 0.6, "the CPU seconds of runs 1 and 2 (0.35s each) add up, not {cpu}\n{why}");
    assert_eq!(scene.runs().len(), 3, "{}", story());
    kill(w.pid(), libc::SIGTERM);
    let r = w.finish(Duration::from_secs(10));
    let story = format!("{r}\n{}", story());
    assert_eq!(r.signal(), Some(libc::SIGTERM), "run 3's sh dies of the forwarded TERM\n{story}");
    assert_eq!(exit_event(&scene.events(), &story)["restarts"], 2, "{story}");
}

/// The value of the sample `name` (with its labels, as written) in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        if key == name { value.parse().ok() } else { None }
    })
}

// ---------------------------------------------------------------------------------------------
// 3. The backoff schedule, measured.

#[test]
fn the_delay_doubles_up_to_the_max_and_starts_over_after_a_long_run() {
    let _serial = serial();
    let scene = Scene::new("backoff");
    let flags =
        ["--restart", "on-failure", "--restart-delay", "100ms", "--restart-delay-max", "800ms"];
    // Runs 1-5 fail at once, run 6 fails after 1.2s (longer than the 800ms max), run 7 fails
    // at once, run 8 succeeds. Each failing run records when it ended.
    let body = "case $n in 6) sleep 1.2;; 8) exit 0;; esac\n\
                date +%s.%N >> \"$D/ends\"; exit 1";
    let r = run_to_end(scene.watchd(&flags, body));
    let story = format!("{r}\n{}", scene.story());
    let runs = scene.runs();
    let ends = scene.times("ends");
    assert_eq!((runs.len(), ends.len()), (8, 7), "8 runs, 7 of them failed\n{story}");
    r.assert_code(0);
    // After runs 1-4 the delay doubles from 100ms; after run 5 it stays at the 800ms max;
    // after the long run 6 it is back to 100ms, and doubles again after run 7.
    let schedule = [0.1, 0.2, 0.4, 0.8, 0.8, 0.1, 0.2];
    let events = scene.events();
    let restarts = named(&events, "restart");
    let announced: Vec<f64> =
        restarts.iter().map(|e| e["delay_s"].as_f64().unwrap_or(-1.0)).collect();
    assert_eq!(announced, schedule, "restart.delay_s\n{story}");
    let mut gaps = String::new();
    for (k, &delay) in schedule.iter().enumerate() {
        check_restart(restarts[k], k as u64 + 1, delay, "exit", &story);
        let gap = runs[k + 1].0 - ends[k];
        gaps.push_str(&format!("after run {}: {gap:.3}s for {delay}s\n", k + 1));
        assert!(
            gap >= delay && gap <= delay + SLACK.as_secs_f64(),
            "run {} started {gap:.3}s after run {} ended; the schedule says {delay}s (+ up to \
             {SLACK:?})\n{gaps}{story}",
            k + 2,
            k + 1
        );
    }
    eprintln!("measured gaps:\n{gaps}");
    assert_eq!(exit_event(&events, &story)["restarts"], 7, "{story}");
}

// ---------------------------------------------------------------------------------------------
// 4. As PID 1 in a container.

/// watchd, PID 1 of the namespace: the child of `unshare`.
fn pid1_of(w: &mut Running, scene: &Scene) -> i32 {
    let unshare = w.pid();
    let mut pid1 = None;
    w.wait_until(
        "watchd under unshare",
        || scene.story(),
        || {
            pid1 = child_of(unshare);
            pid1.is_some()
        },
    );
    pid1.expect("set by the wait")
}

/// The first process whose parent is `ppid`, by a /proc scan.
fn child_of(ppid: i32) -> Option<i32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        (stat(pid)?.ppid == ppid).then_some(pid)
    })
}

#[test]
fn as_pid1_restarts_and_docker_stop_during_a_run_ends_it() {
    let _serial = serial();
    let scene = Scene::new("pid1-run");
    let flags = ["--restart", "always", "--restart-delay", "100ms"];
    let body = "if [ \"$n\" -eq 1 ]; then exit 1; fi; touch \"$D/ready\"; exec sleep 1000";
    let mut w = Running::start(scene.watchd_as_pid1(&flags, body), &scene);
    let pid1 = pid1_of(&mut w, &scene);
    let ready = scene.path("ready");
    w.wait_until("run 2 under PID 1", || scene.story(), || ready.exists());
    let sent = Instant::now();
    kill(pid1, libc::SIGTERM);
    let r = w.finish(Duration::from_secs(10));
    let after_signal = sent.elapsed();
    let story = format!("{r}\n{}", scene.story());
    assert_eq!(
        scene.runs().len(),
        2,
        "run 1 was restarted; docker stop ends run 2 for good\n{story}"
    );
    r.assert_code(128 + libc::SIGTERM);
    assert!(after_signal < secs(2.0), "docker stop took {after_signal:?}\n{story}");
    let events = scene.events();
    assert_eq!(start_runs(&events), [1, 2], "{story}");
    assert_eq!(exit_event(&events, &story)["restarts"], 1, "{story}");
}

#[test]
fn as_pid1_docker_stop_during_the_delay_ends_it_at_once() {
    let _serial = serial();
    let scene = Scene::new("pid1-delay");
    let flags = ["--restart", "always", "--restart-delay", "5s"];
    let mut w = Running::start(scene.watchd_as_pid1(&flags, "exit 3"), &scene);
    let pid1 = pid1_of(&mut w, &scene);
    w.wait_until(
        "the restart event (the delay has begun)",
        || scene.story(),
        || !named(&scene.events(), "restart").is_empty(),
    );
    let sent = Instant::now();
    kill(pid1, libc::SIGTERM);
    let r = w.finish(Duration::from_secs(10));
    let after_signal = sent.elapsed();
    let story = format!("{r}\n{}", scene.story());
    assert!(
        after_signal < Duration::from_millis(1500),
        "the container took {after_signal:?} to stop: it should end at once, not after the 5s \
         delay\n{story}"
    );
    r.assert_code(3);
    assert_eq!(scene.runs().len(), 1, "{story}");
}

// ---------------------------------------------------------------------------------------------
// 5. The exit status after the last run.

#[test]
fn without_exit_code_on_stop_the_last_stopped_run_is_mirrored() {
    let _serial = serial();
    let scene = Scene::new("mirror");
    let flags = [
        "--timeout",
        "300ms",
        "--restart",
        "on-failure",
        "--restart-max",
        "1",
        "--restart-delay",
        "100ms",
    ];
    let r = run_to_end(scene.watchd(&flags, "exec sleep 1000"));
    let story = format!("{r}\n{}", scene.story());
    assert_eq!(scene.runs().len(), 2, "{story}");
    assert_eq!(r.signal(), Some(libc::SIGTERM), "the last run died of the drain's TERM\n{story}");
    let events = scene.events();
    let exit = exit_event(&events, &story);
    assert_eq!(
        (&exit["reason"], &exit["signal"]),
        (&Value::from("timeout"), &Value::from("SIGTERM"))
    );
}

#[test]
fn success_exit_status_is_a_success_for_on_failure() {
    let _serial = serial();
    let scene = Scene::new("success-status");
    let flags =
        ["--success-exit-status", "3", "--restart", "on-failure", "--restart-delay", "100ms"];
    let r = run_to_end(scene.watchd(&flags, "if [ \"$n\" -eq 1 ]; then exit 4; fi; exit 3"));
    let story = format!("{r}\n{}", scene.story());
    assert_eq!(
        scene.runs().len(),
        2,
        "exit 4 is a failure (restarted); exit 3 is listed as a success (not restarted)\n{story}"
    );
    r.assert_code(0);
}

#[test]
fn a_stopped_run_is_a_failure_even_with_a_status_listed_as_success() {
    let _serial = serial();
    let scene = Scene::new("drain-keeps");
    let flags = [
        "--success-exit-status",
        "TERM",
        "--stall",
        "300ms",
        "--interval",
        "50ms",
        "--restart",
        "on-failure",
        "--restart-delay",
        "100ms",
    ];
    let r =
        run_to_end(scene.watchd(&flags, "if [ \"$n\" -eq 1 ]; then exec sleep 1000; fi; exit 0"));
    let story = format!("{r}\n{}", scene.story());
    assert_eq!(
        scene.runs().len(),
        2,
        "run 1, stopped by the stall, died of TERM: a drain keeps its status, so it is a \
         failure and restarted\n{story}"
    );
    r.assert_code(0);
}

// ---------------------------------------------------------------------------------------------
// 6. The README's recipes, with short durations.

/// The README's CI recipe, `--stall 5m --restart on-failure --restart-max 2
/// --exit-code-on-stop 124`, with short durations.
const CI_RECIPE: [&str; 12] = [
    "--stall",
    "400ms",
    "--interval",
    "50ms",
    "--restart",
    "on-failure",
    "--restart-max",
    "2",
    "--exit-code-on-stop",
    "124",
    "--restart-delay",
    "100ms",
];

/// Mirrors the README's CI recipe "retry a stalled step twice"
/// (`watchd --stall 5m --restart on-failure --restart-max 2 --exit-code-on-stop 124 -- STEP`),
/// with `--stall 400ms`: a step that stalls twice and then passes passes.
#[test]
fn ci_recipe_a_step_that_stalls_twice_then_passes() {
    let _serial = serial();
    let scene = Scene::new("ci-pass");
    let body = "echo \"attempt $n\"; if [ \"$n\" -lt 3 ]; then exec sleep 1000; fi; echo passed";
    let r = run_to_end(scene.watchd(&CI_RECIPE, body));
    let story = format!("{r}\n{}", scene.story());
    assert_eq!(r.stdout, "attempt 1\nattempt 2\nattempt 3\npassed\n", "{story}");
    r.assert_code(0);
    let events = scene.events();
    for k in 1..=2 {
        let this = run_events(&events, k);
        let trigger = named(this, "trigger");
        assert!(trigger.len() == 1 && trigger[0]["reason"] == "stall", "run {k}\n{story}");
        let lasted = ts(trigger[0]) - ts(named(this, "start")[0]);
        assert!(lasted >= 0.4 - 0.002, "run {k} stalled after only {lasted:.3}s\n{story}");
    }
    assert_eq!(exit_event(&events, &story)["restarts"], 2, "{story}");
}

/// The same recipe, a step that stalls every time: three attempts, then the job fails with 124.
#[test]
fn ci_recipe_a_step_that_always_stalls_fails_with_124() {
    let _serial = serial();
    let scene = Scene::new("ci-fail");
    let r = run_to_end(scene.watchd(&CI_RECIPE, "echo \"attempt $n\"; exec sleep 1000"));
    let story = format!("{r}\n{}", scene.story());
    assert_eq!(r.stdout, "attempt 1\nattempt 2\nattempt 3\n", "{story}");
    r.assert_code(124);
    assert_eq!(
        r.stderr
            .lines()
            .filter(|l| l.starts_with("watchd: stall: no CPU or I/O progress for 400ms"))
            .count(),
        3,
        "one stall line per attempt\n{story}"
    );
    let giving_up =
        r.stderr.lines().filter(|l| l.starts_with("watchd: giving up after 2 restarts: "));
    assert_eq!(giving_up.count(), 1, "{story}");
}

/// Mirrors the README's service recipe
/// (`watchd --restart always --restart-delay 1s --restart-delay-max 1m --health-url
/// http://127.0.0.1:8080/ --start-period 30s --health-retries 3 --grace 5s -- python3 -m
/// http.server --bind 127.0.0.1 8080`), with short durations: a server that hangs is found
/// unhealthy once its start period is over and is restarted, the new one serves (its own start
/// period covers its start-up), and SIGTERM (a service manager's stop) ends it for good.
#[test]
fn service_recipe_restarts_a_hung_server_and_stops_on_sigterm() {
    let _serial = serial();
    let scene = Scene::new("service");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/");
    let flags = [
        "--restart",
        "always",
        "--restart-delay",
        "100ms",
        "--restart-delay-max",
        "2s",
        "--health-url",
        &url,
        "--health-interval",
        "100ms",
        "--health-timeout",
        "300ms",
        "--health-retries",
        "2",
        "--start-period",
        "1s",
        "--start-interval",
        "100ms",
        "--grace",
        "1s",
    ];
    // Run 1 listens and never answers (hung); run 2 is the real server.
    let py = python();
    let body = format!(
        "if [ \"$n\" -eq 1 ]; then exec {py} -c \"import socket, time; s = socket.socket(); \
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', {port})); \
         s.listen(); time.sleep(1000)\"; fi\n\
         exec {py} -m http.server --bind 127.0.0.1 --directory \"$D\" {port}"
    );
    let mut w = Running::start(scene.watchd(&flags, &body), &scene);
    w.wait_until(
        "run 2 to be ready (its first health check passed)",
        || scene.story(),
        || !named(run_events(&scene.events(), 2), "ready").is_empty(),
    );
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.0 200"), "run 2 serves: {answer:?}\n{}", scene.story());
    kill(w.pid(), libc::SIGTERM);
    let r = w.finish(Duration::from_secs(10));
    let story = format!("{r}\n{}", scene.story());
    assert_eq!(scene.runs().len(), 2, "SIGTERM ends the service: no run 3\n{story}");
    assert_eq!(r.signal(), Some(libc::SIGTERM), "the server died of the forwarded TERM\n{story}");
    let events = scene.events();
    let restarts = named(&events, "restart");
    assert_eq!(restarts.len(), 1, "{story}");
    check_restart(restarts[0], 1, 0.1, "unhealthy", &story);
    assert_eq!(exit_event(&events, &story)["restarts"], 1, "{story}");
}
