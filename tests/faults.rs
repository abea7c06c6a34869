//! Fault suite (issue: fault injection): children and grandchildren that ignore TERM, a `setsid`
//! double-forked daemon, a fork storm during a drain, a child that closes its stdio, a SIGKILLed
//! watchd, a burst of 10,000 signals, children exiting under a 1 ms probe, and a closed pipe for
//! watchd's own messages. Every test checks the exit status, that no zombie and no survivor is
//! left, and that strangers beside the test were not signalled.
//!
//! The tests of this file run one at a time (they are timing windows on a small machine, and
//! the leftover check below needs to know every child of this process), and this test process
//! is a child subreaper: anything that escapes watchd's tree, alive or zombie, is reparented
//! here, where `Fault::assert_clean` finds it.

mod util;

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, Once, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use util::*;

const SIGREC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sigrec.py");

// ---------------------------------------------------------------------------------------------
// Harness local to the fault suite.

static SERIAL: Mutex<()> = Mutex::new(());

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

fn my_pid() -> i32 {
    std::process::id() as i32
}

/// `/proc/<pid>/stat` through watchd's own parser (property-tested in src/probe.rs).
fn stat_of(pid: i32) -> Option<watchd::probe::Stat> {
    watchd::probe::parse_stat(&fs::read(format!("/proc/{pid}/stat")).ok()?)
}

/// Field `n` (0-based, after comm's `)`) of `/proc/<pid>/stat`, for the fields `Stat` lacks.
fn stat_field(pid: i32, n: usize) -> Option<i64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    text.rsplit_once(')')?.1.split_whitespace().nth(n)?.parse().ok()
}

/// Every process whose parent is `ppid`, zombies included, with its state.
fn children_of(ppid: i32) -> Vec<(i32, char)> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Some(stat) = stat_of(pid)
            && stat.ppid == ppid
        {
            found.push((pid, stat.state as char));
        }
    }
    found
}

/// `pid (comm) state: cmdline`, for failure messages.
fn describe(pid: i32) -> String {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    let state = stat_of(pid).map_or('?', |s| s.state as char);
    format!("{pid} ({}) {state}: {}", comm.trim(), cmdline.trim())
}

/// A process outside watchd's tree that must be left alone.
struct Stranger {
    what: &'static str,
    child: Child,
    /// The signal log of a recording stranger.
    log: Option<PathBuf>,
}

impl Stranger {
    /// What is wrong with the stranger, if anything.
    fn trouble(&mut self) -> Option<String> {
        let pid = self.child.id() as i32;
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(format!("the {} ({pid}) died: {status:?}", self.what));
        }
        match stat_of(pid).map(|s| s.state) {
            Some(b'T' | b't') => return Some(format!("the {} ({pid}) was stopped", self.what)),
            None => return Some(format!("the {} ({pid}) is gone from /proc", self.what)),
            _ => {}
        }
        if let Some(log) = &self.log {
            let got = fs::read_to_string(log).unwrap_or_default();
            if !got.is_empty() {
                return Some(format!("the {} ({pid}) received signals: {got:?}", self.what));
            }
        }
        None
    }
}

/// One fault test: holds the suite lock, a scratch directory, a tag for the tree and two
/// strangers: util's `sentinel()` (a `sleep` in a session of its own: killed, stopped or gone
/// if anything signals it with a fatal or stop signal, e.g. `kill(-1)` or a recycled pid), and
/// a signal recorder in this test's process group, which is also watchd's (it records any
/// catchable signal, so a `kill(0, ...)` or a group-wide forward that reached outside the tree
/// shows up even for signals that do not kill).
struct Fault {
    tag: String,
    dir: TempDir,
    strangers: Vec<Stranger>,
    _serial: MutexGuard<'static, ()>,
}

impl Fault {
    fn new(name: &str) -> Fault {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        static SUBREAPER: Once = Once::new();
        SUBREAPER.call_once(|| {
            // SAFETY: PR_SET_CHILD_SUBREAPER takes a plain integer flag.
            let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
            assert_eq!(rc, 0, "cannot make the test process a subreaper");
        });
        let dir = TempDir::new(&format!("fault-{name}"));
        let log = dir.path("stranger.signals");
        let recorder = Command::new(python())
            .args([SIGREC, &log.display().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut strangers = vec![
            Stranger { what: "session sentinel", child: sentinel(), log: None },
            Stranger { what: "process-group recorder", child: recorder, log: Some(log.clone()) },
        ];
        let ready = PathBuf::from(format!("{}.ready", log.display()));
        wait_file(&ready, Duration::from_secs(10));
        for s in &mut strangers {
            assert!(s.trouble().is_none(), "{:?}", s.trouble());
        }
        Fault { tag: unique_tag(name), dir, strangers, _serial: serial }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path(name)
    }

    fn d(&self) -> String {
        self.dir.0.display().to_string()
    }

    /// A watchd command whose whole tree carries this test's tag.
    fn watchd<S: AsRef<std::ffi::OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Command {
        let mut cmd = watchd(args);
        cmd.env("WATCHD_TEST_TAG", &self.tag);
        cmd
    }

    fn stranger_pids(&self) -> Vec<i32> {
        self.strangers.iter().map(|s| s.child.id() as i32).collect()
    }

    /// After watchd has exited: it did not panic, nothing of its tree is left anywhere, alive
    /// or zombie, and the strangers were not touched. Leftovers are killed and reaped before
    /// the assertion, so one failure does not cascade into the next test.
    #[track_caller]
    fn assert_clean(&mut self, run: &Run) {
        let mut trouble = Vec::new();
        if run.stderr.contains("panicked") {
            trouble.push("watchd panicked".to_string());
        }
        let tagged = processes_tagged(&self.tag);
        if !tagged.is_empty() {
            let list: Vec<String> = tagged.iter().map(|&p| describe(p)).collect();
            trouble.push(format!("survivors of the tree: {list:#?}"));
        }
        // Everything that escaped the tree was reparented to this subreaper; a zombie the
        // tree left unreaped is here too (its environment, hence its tag, is gone).
        let known = self.stranger_pids();
        let strays: Vec<(i32, char)> =
            children_of(my_pid()).into_iter().filter(|(pid, _)| !known.contains(pid)).collect();
        if !strays.is_empty() {
            let list: Vec<String> = strays.iter().map(|&(p, _)| describe(p)).collect();
            trouble.push(format!(
                "processes left behind, reparented to the test (Z = an unreaped zombie): {list:#?}"
            ));
        }
        for pid in tagged.iter().chain(strays.iter().map(|(p, _)| p)) {
            // SAFETY: signalling and reaping leftovers of this test's own tree.
            unsafe {
                libc::kill(*pid, libc::SIGKILL);
            }
        }
        for (pid, _) in &strays {
            let mut status = 0;
            // SAFETY: the stray is this process's child (it was listed with our ppid).
            unsafe { libc::waitpid(*pid, &mut status, 0) };
        }
        for s in &mut self.strangers {
            if let Some(t) = s.trouble() {
                trouble.push(format!("a process outside the tree was signalled: {t}"));
            }
        }
        assert!(trouble.is_empty(), "{}\n{run}", trouble.join("\n"));
    }
}

impl Drop for Fault {
    /// On a failed assertion too: nothing of this test outlives it.
    fn drop(&mut self) {
        for pid in processes_tagged(&self.tag) {
            // SAFETY: a process of this test's own tree (it carries the tag).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for s in &mut self.strangers {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }
}

/// A watchd running in the background with its output captured.
struct Bg {
    what: String,
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
    start: Instant,
}

fn capture(mut from: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

impl Bg {
    fn spawn(mut cmd: Command) -> Bg {
        let what = format!("{cmd:?}");
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = cmd.spawn().expect("spawn watchd");
        let out = capture(child.stdout.take().unwrap());
        let err = capture(child.stderr.take().unwrap());
        Bg { what, child, out, err, start }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for watchd to exit under `limit`. The output is what watchd wrote; a survivor that
    /// still holds the pipes open shows as a note instead of hanging the test.
    fn finish(mut self, limit: Duration) -> Run {
        let status = match wait_deadline(&mut self.child, limit) {
            Some(status) => status,
            None => {
                let _ = self.child.kill();
                let status = self.child.wait().unwrap();
                let err = self.err.recv_timeout(Duration::from_secs(2));
                panic!(
                    "{} did not finish within {limit:?} (killed: {status:?})\nstderr: {err:?}",
                    self.what
                );
            }
        };
        let took = self.start.elapsed();
        let held = "<pipe still held open by a survivor>".to_string();
        Run {
            what: std::mem::take(&mut self.what),
            status,
            stdout: self.out.recv_timeout(Duration::from_secs(5)).unwrap_or_else(|_| held.clone()),
            stderr: self.err.recv_timeout(Duration::from_secs(5)).unwrap_or(held),
            took,
        }
    }
}

impl Drop for Bg {
    /// A test that fails before `finish` does not leave watchd running (its child follows it
    /// through the parent-death signal; `Fault`'s drop takes care of the rest).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Watches the children of `parent` for zombies until stopped: how long the longest-lived
/// zombie stayed (from the first scan that saw it to the first that did not) and the most seen
/// at once. `/proc/<pid>/task/<pid>/children` lists zombies until they are reaped.
struct ZombieWatch {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<ZombieStats>,
}

#[derive(Debug, Default)]
struct ZombieStats {
    seen: usize,
    longest: Duration,
    most_at_once: usize,
}

impl ZombieWatch {
    fn start(parent: i32) -> ZombieWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut stats = ZombieStats::default();
            let mut first_seen: HashMap<(i32, u64), Instant> = HashMap::new();
            let children = format!("/proc/{parent}/task/{parent}/children");
            while !flag.load(Ordering::Relaxed) {
                let Ok(list) = fs::read_to_string(&children) else {
                    break; // watchd is gone
                };
                let now = Instant::now();
                let mut present = Vec::new();
                for pid in pids_in(&list) {
                    if let Some(stat) = stat_of(pid)
                        && stat.state == b'Z'
                    {
                        let key = (pid, stat.starttime);
                        if !first_seen.contains_key(&key) {
                            stats.seen += 1;
                        }
                        let since = *first_seen.entry(key).or_insert(now);
                        stats.longest = stats.longest.max(now - since);
                        present.push(key);
                    }
                }
                stats.most_at_once = stats.most_at_once.max(present.len());
                first_seen.retain(|key, _| present.contains(key));
                std::thread::sleep(Duration::from_millis(2));
            }
            stats
        });
        ZombieWatch { stop, handle }
    }

    fn stop(self) -> ZombieStats {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: signalling a process this test started.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}
// ---------------------------------------------------------------------------------------------
// The faults.

/// The main child ignores TERM: the stop signal changes nothing, SIGKILL ends it exactly at the
/// end of the grace, and watchd dies of SIGKILL as the child did.
#[test]
fn child_ignoring_term_is_killed_at_the_end_of_the_grace() {
    let mut f = Fault::new("ignore-term");
    let script = format!(
        "trap '' TERM; echo $$ > {d}/main.tmp; mv {d}/main.tmp {d}/main.pid; exec sleep 1000",
        d = f.d()
    );
    let cmd = f.watchd([
        "--timeout",
        "1s",
        "--grace",
        "500ms",
        "--interval",
        "50ms",
        "sh",
        "-c",
        &script,
    ]);
    let r = Bg::spawn(cmd).finish(Duration::from_secs(15));
    assert_eq!(r.signal(), Some(libc::SIGKILL), "watchd must die of the child's SIGKILL\n{r}");
    assert!(!r.status.core_dumped(), "{r}");
    // Not before timeout + grace (the child held out against TERM), and not much after.
    r.assert_took(Duration::from_millis(1500), Duration::from_millis(3500))
        .assert_stderr_has("watchd: timeout: ran for 1s")
        .assert_stderr_has("killed by SIGKILL at the end of the 500ms grace");
    let main = pids_in(&fs::read_to_string(f.path("main.pid")).unwrap())[0];
    assert!(stat_of(main).is_none(), "the main child {main} is still in /proc\n{r}");
    f.assert_clean(&r);
}

/// The main child obeys TERM but three grandchildren ignore it: watchd keeps the drain going
/// after the main child died, SIGKILLs them at the end of the grace, and exits with
/// --exit-code-on-stop.
#[test]
fn grandchildren_ignoring_term_are_killed_at_the_end_of_the_grace() {
    let mut f = Fault::new("grand-ignore-term");
    let d = f.d();
    let script = format!(
        "for i in 1 2 3; do sh -c 'trap \"\" TERM; echo $$ > {d}/kid.$0; exec sleep 1000' $i & done\n\
         while [ ! -e {d}/kid.1 ] || [ ! -e {d}/kid.2 ] || [ ! -e {d}/kid.3 ]; do sleep 0.01; done\n\
         cat {d}/kid.1 {d}/kid.2 {d}/kid.3 > {d}/kids.tmp; mv {d}/kids.tmp {d}/kids\n\
         exec sleep 1000"
    );
    let cmd = f.watchd([
        "--timeout",
        "1s",
        "--grace",
        "500ms",
        "--interval",
        "50ms",
        "--exit-code-on-stop",
        "124",
        "sh",
        "-c",
        &script,
    ]);
    let r = Bg::spawn(cmd).finish(Duration::from_secs(15));
    r.assert_code(124)
        // The main child died of TERM at 1s; the grandchildren held watchd until the KILL.
        .assert_took(Duration::from_millis(1500), Duration::from_millis(3500))
        .assert_stderr_has("watchd: timeout: child killed by SIGTERM");
    let kids = pids_in(&fs::read_to_string(f.path("kids")).expect("the grandchildren started"));
    assert_eq!(kids.len(), 3, "{r}");
    for kid in kids {
        assert!(stat_of(kid).is_none(), "grandchild {kid} left\n{r}");
    }
    f.assert_clean(&r);
}

/// A daemon that double-forks through `setsid` (own session, own group, parent gone) is still
/// watchd's: adopted while it runs, TERMed when the main child exits, SIGKILLed after the grace
/// because it ignores TERM, and reaped by watchd.
#[test]
fn setsid_double_forked_daemon_is_adopted_killed_and_reaped() {
    let mut f = Fault::new("daemon");
    let d = f.d();
    fs::write(
        f.path("daemon.sh"),
        format!(
            "trap '' TERM\necho $$ > {d}/daemon.tmp; mv {d}/daemon.tmp {d}/daemon.pid\nexec sleep 1000\n"
        ),
    )
    .unwrap();
    let script = format!(
        "setsid sh -c 'sh {d}/daemon.sh </dev/null >/dev/null 2>&1 & exit 0'\n\
         while [ ! -e {d}/go ]; do sleep 0.01; done\nexit 3"
    );
    let cmd = f.watchd(["-v", "--grace", "500ms", "--interval", "50ms", "sh", "-c", &script]);
    let mut w = Bg::spawn(cmd);
    let daemon = pids_in(&wait_file(&f.path("daemon.pid"), Duration::from_secs(10)))[0];
    let watchd_pid = w.pid();
    wait_for("watchd to adopt the daemon", Duration::from_secs(5), || {
        stat_of(daemon).is_some_and(|s| s.ppid == watchd_pid)
    });
    // The setup is what it claims: the daemon left watchd's session and process group.
    assert_ne!(stat_field(daemon, 3), stat_field(watchd_pid, 3), "same session");
    assert_ne!(stat_of(daemon).unwrap().pgrp, stat_of(watchd_pid).unwrap().pgrp);
    assert!(w.running(), "watchd ended before the main child");
    fs::write(f.path("go"), "").unwrap();
    let go = Instant::now();
    let r = w.finish(Duration::from_secs(15));
    r.assert_code(3).assert_stderr_has(&format!("reaped orphan {daemon} (killed by SIGKILL)"));
    assert!(
        go.elapsed() >= Duration::from_millis(500),
        "watchd did not wait the grace for a daemon ignoring TERM\n{r}"
    );
    r.assert_took(Duration::ZERO, Duration::from_secs(5));
    assert!(stat_of(daemon).is_none(), "daemon {daemon} left\n{r}");
    f.assert_clean(&r);
}

/// A drain starts, and the child answers the stop signal with a fork storm: 1,000 double forks,
/// 2,000 short processes, half of them orphans adopted by watchd. watchd reaps every one as it
/// goes (no zombie lives longer than a probe interval, none pile up), then SIGKILLs the
/// TERM-ignoring child at the end of the grace and leaves nothing behind.
#[test]
fn fork_storm_during_a_drain() {
    let mut f = Fault::new("storm");
    let d = f.d();
    let storm = format!(
        "trap 'storm=1' TERM\n\
         echo ready > {d}/ready\n\
         while [ -z \"$storm\" ]; do sleep 0.01; done\n\
         trap '' TERM\n\
         i=0\n\
         while [ $i -lt 1000 ]; do ( ( : ) & ); i=$((i+1)); done\n\
         echo $i > {d}/stormed.tmp; mv {d}/stormed.tmp {d}/stormed\n\
         exec sleep 1000\n"
    );
    fs::write(f.path("storm.sh"), storm).unwrap();
    let interval = Duration::from_millis(200);
    let cmd = f.watchd([
        "-v",
        "--timeout",
        "300ms",
        "--grace",
        "4s",
        "--interval",
        "200ms",
        "--exit-code-on-stop",
        "124",
        "sh",
        &format!("{d}/storm.sh"),
    ]);
    let w = Bg::spawn(cmd);
    let zombies = ZombieWatch::start(w.pid());
    wait_file(&f.path("ready"), Duration::from_secs(10));
    let r = w.finish(Duration::from_secs(20));
    let zombies = zombies.stop();
    r.assert_code(124)
        .assert_took(Duration::from_millis(4300), Duration::from_secs(8))
        .assert_stderr_has("watchd: timeout: ");
    let stormed = fs::read_to_string(f.path("stormed")).unwrap_or_default();
    assert_eq!(
        stormed.trim(),
        "1000",
        "the storm did not finish within the grace (machine too slow?)\n{r}"
    );
    let reaped = count(&r.stderr, "watchd: reaped orphan ");
    assert!(reaped >= 1000, "watchd reaped {reaped} orphans, want every one of the 1000\n{r}");
    assert!(
        zombies.seen > 0,
        "the zombie watch saw no zombie at all: it is not watching ({zombies:?})"
    );
    assert!(zombies.longest <= interval, "a zombie outlived a probe interval: {zombies:?}\n{r}");
    assert!(zombies.most_at_once <= 50, "zombies piled up: {zombies:?}\n{r}");
    f.assert_clean(&r);
}

/// A child that closes stdin, stdout and stderr is still running as far as watchd is
/// concerned; watchd's own stderr is unaffected, its exit status is the child's, and the
/// grandchild left with closed descriptors is cleaned up.
#[test]
fn child_closing_its_stdio_is_still_supervised() {
    let mut f = Fault::new("close-stdio");
    let d = f.d();
    let script = format!(
        "exec <&- >&- 2>&-\n\
         sleep 1000 &\n\
         echo $! > {d}/kid.tmp; mv {d}/kid.tmp {d}/kid\n\
         while [ ! -e {d}/go ]; do sleep 0.01; done\n\
         exit 7"
    );
    let cmd = f.watchd(["-v", "--grace", "5s", "--interval", "50ms", "sh", "-c", &script]);
    let mut w = Bg::spawn(cmd);
    let kid = pids_in(&wait_file(&f.path("kid"), Duration::from_secs(10)))[0];
    let main = stat_of(kid).expect("the grandchild runs").ppid;
    for fd in 0..3 {
        assert!(
            fs::symlink_metadata(format!("/proc/{main}/fd/{fd}")).is_err(),
            "the child still has fd {fd}: the setup is wrong"
        );
    }
    assert!(w.running(), "watchd ended when the child closed its stdio");
    fs::write(f.path("go"), "").unwrap();
    let r = w.finish(Duration::from_secs(15));
    r.assert_code(7)
        // The leftover sleep obeys TERM: no wait for the 5s grace.
        .assert_took(Duration::ZERO, Duration::from_secs(4))
        .assert_stderr_has("watchd: started ")
        .assert_stderr_has("watchd: child exited with status 7");
    assert!(r.stdout.is_empty(), "{r}");
    assert!(stat_of(kid).is_none(), "grandchild {kid} left\n{r}");
    f.assert_clean(&r);
}

/// watchd is SIGKILLed: the child dies of the parent-death signal (KILL by default, or the one
/// --pdeathsig names). This process is a subreaper, so the orphaned child is reparented here
/// and its wait status shows which signal killed it.
#[test]
fn sigkilled_watchd_takes_the_child_along() {
    let mut f = Fault::new("pdeathsig");
    for (extra, want) in [(None, libc::SIGKILL), (Some(["--pdeathsig", "TERM"]), libc::SIGTERM)] {
        let pidfile = f.path(&format!("pid-{want}"));
        let script =
            format!("echo $$ > {p}.tmp; mv {p}.tmp {p}; exec sleep 1000", p = pidfile.display());
        let mut args: Vec<&str> = extra.map(|e| e.to_vec()).unwrap_or_default();
        args.extend(["sh", "-c", &script]);
        let w = Bg::spawn(f.watchd(&args));
        let child = pids_in(&wait_file(&pidfile, Duration::from_secs(10)))[0];
        // Once the shell has become `sleep`, the tree is that one process (the `mv` is done).
        wait_for("the child to exec sleep", Duration::from_secs(5), || {
            fs::read_to_string(format!("/proc/{child}/comm")).is_ok_and(|c| c.trim() == "sleep")
        });
        // With a cgroup, a SIGKILLed watchd leaves it behind (see the README); this test removes it.
        let cgroup = cgroup_dir_of(child).filter(|d| d.ends_with(format!("watchd-{}", w.pid())));
        kill(w.pid(), libc::SIGKILL);
        let mut status = 0;
        let mut reaped = false;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            // SAFETY: waiting on one pid that is, or is about to be, this process's child.
            let got = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
            if got == child {
                reaped = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let r = w.finish(Duration::from_secs(5));
        assert_eq!(r.signal(), Some(libc::SIGKILL), "{r}");
        assert!(
            reaped,
            "the child {child} outlived watchd (or was never reparented to the subreaper)\n{r}"
        );
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == want,
            "the child ended with wait status {status:#x}, want death by signal {want}\n{r}"
        );
        if let Some(dir) = cgroup {
            remove_left_cgroup(&dir);
        }
        f.assert_clean(&r);
    }
}

/// 10,000 SIGUSR1 in a burst, then one SIGUSR2: watchd does not crash, the last signal reaches
/// the child, and watchd still forwards and exits normally afterwards.
#[test]
fn ten_thousand_signals_in_a_burst() {
    let mut f = Fault::new("burst");
    let log = f.path("signals");
    let cmd = f.watchd([
        "--interval",
        "50ms",
        python(),
        SIGREC,
        &log.display().to_string(),
        "--exit-on",
        "SIGTERM",
    ]);
    let mut w = Bg::spawn(cmd);
    wait_file(&f.path("signals.ready"), Duration::from_secs(10));
    let pid = w.pid();
    for _ in 0..10_000 {
        kill(pid, libc::SIGUSR1);
    }
    kill(pid, libc::SIGUSR2);
    wait_for("the last signal to reach the child", Duration::from_secs(20), || {
        fs::read_to_string(&log).unwrap_or_default().lines().any(|l| l == "SIGUSR2")
    });
    assert!(w.running(), "watchd ended during the burst");
    kill(pid, libc::SIGTERM);
    let r = w.finish(Duration::from_secs(10));
    r.assert_code(0);
    let got = fs::read_to_string(&log).unwrap();
    assert!(got.lines().any(|l| l == "SIGUSR1"), "no USR1 arrived\n{r}");
    let others: Vec<&str> =
        got.lines().filter(|l| !["SIGUSR1", "SIGUSR2", "SIGTERM"].contains(l)).collect();
    assert!(others.is_empty(), "the child got signals nobody sent: {others:?}");
    f.assert_clean(&r);
}

/// Children exit all the time under a 1 ms probe (so /proc entries vanish mid-read), and the
/// main child exits in the middle of it: no panic, the status is the child's, every probe is
/// reported, nothing is left.
#[test]
fn children_exiting_while_a_probe_reads_them() {
    let mut f = Fault::new("probe-race");
    let d = f.d();
    let events = f.path("events");
    let script = format!(
        "i=0\n\
         while [ $i -lt 300 ]; do\n\
         /bin/true & ( ( : ) & ) ; sh -c 'exit 0'\n\
         i=$((i+1))\n\
         done\n\
         wait\n\
         echo done > {d}/done\n\
         exit 42"
    );
    let cmd = f.watchd([
        "--interval",
        "1ms",
        "--events",
        &events.display().to_string(),
        "sh",
        "-c",
        &script,
    ]);
    let r = Bg::spawn(cmd).finish(Duration::from_secs(30));
    r.assert_code(42);
    assert!(f.path("done").exists(), "the child did not finish its work\n{r}");
    let text = fs::read_to_string(&events).unwrap();
    let mut samples = 0;
    let mut exit = None;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("bad event line {line:?}: {e}\n{r}"));
        match v["event"].as_str() {
            Some("sample") => samples += 1,
            Some("exit") => exit = Some(v),
            _ => {}
        }
    }
    assert!(samples >= 50, "only {samples} probes ran: the race was not exercised\n{r}");
    let exit = exit.unwrap_or_else(|| panic!("no exit event\n{r}"));
    assert_eq!(exit["code"], 42, "{exit}");
    f.assert_clean(&r);
}

/// A pipe with no reader, with SIGPIPE at its default action, as `watchd ... 2>&1 | true`
/// would leave it.
fn broken_pipe() -> (Stdio, Stdio) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 just created both descriptors; each is owned exactly once.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    let second = write.try_clone().unwrap();
    (Stdio::from(write), Stdio::from(second))
}

fn default_sigpipe(cmd: &mut Command) {
    // SAFETY: signal() and sigprocmask() are async-signal-safe and touch only local data.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
}

/// watchd's stdout and stderr are a pipe whose reader is gone, with SIGPIPE at its default
/// action: every message watchd writes (verbose lines, events, the trigger line, a usage
/// error, a diagnosis) gets EPIPE, and watchd still exits with the child's status instead of
/// dying of SIGPIPE. The child itself writes nothing to the pipe.
#[test]
fn closed_pipe_for_watchd_messages() {
    let mut f = Fault::new("epipe");
    /// Options, the child's script, and watchd's expected exit code or signal.
    struct Case {
        opts: &'static [&'static str],
        script: &'static str,
        code: Option<i32>,
        signal: Option<i32>,
    }
    let cases = [
        // A drain: trigger line, verbose lines and events all hit the closed pipe mid-run.
        Case {
            opts: &[
                "-v",
                "--events",
                "-",
                "--timeout",
                "300ms",
                "--grace",
                "3s",
                "--interval",
                "50ms",
            ],
            script: "exec >/dev/null 2>&1; trap 'exit 5' TERM; while :; do sleep 0.02; done",
            code: Some(5),
            signal: None,
        },
        // A death watchd did not cause: the diagnosis goes to the closed pipe, then the
        // re-raise must still be the child's signal, not SIGPIPE.
        Case {
            opts: &["-v", "--interval", "50ms"],
            script: "exec >/dev/null 2>&1; kill -USR1 $$",
            code: None,
            signal: Some(libc::SIGUSR1),
        },
        // A usage error.
        Case { opts: &["--stall", "abc"], script: "exit 0", code: Some(125), signal: None },
    ];
    for Case { opts, script, code, signal } in cases {
        let mut args: Vec<&str> = opts.to_vec();
        args.extend(["sh", "-c", script]);
        let mut cmd = f.watchd(&args);
        let (out, err) = broken_pipe();
        cmd.stdout(out).stderr(err);
        default_sigpipe(&mut cmd);
        let what = format!("{cmd:?}");
        let start = Instant::now();
        let mut child = cmd.spawn().unwrap();
        let status = wait_deadline(&mut child, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{what} hung"));
        let r = Run {
            what,
            status,
            stdout: "<closed pipe>".into(),
            stderr: "<closed pipe>".into(),
            took: start.elapsed(),
        };
        assert_ne!(r.signal(), Some(libc::SIGPIPE), "watchd died of SIGPIPE\n{r}");
        assert_eq!((r.code(), r.signal()), (code, signal), "wrong exit status\n{r}");
        // The drain ran to its normal end (the child obeys TERM), not to the grace.
        r.assert_took(Duration::ZERO, Duration::from_millis(2500));
        f.assert_clean(&r);
    }
}

/// Sanity for the harness itself: a tree member that escapes watchd is found by
/// `assert_clean`, so the checks above can fail.
#[test]
fn the_leftover_check_catches_an_escapee() {
    let mut f = Fault::new("harness");
    let d = f.d();
    // --no-cleanup: watchd deliberately leaves the background sleep; it is reparented here.
    let script = format!(
        "sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > {d}/kid.tmp; mv {d}/kid.tmp {d}/kid; exit 0"
    );
    let r =
        Bg::spawn(f.watchd(["--no-cleanup", "sh", "-c", &script])).finish(Duration::from_secs(10));
    r.assert_code(0);
    let kid = pids_in(&fs::read_to_string(f.path("kid")).unwrap())[0];
    let cgroup = watchd_cgroup_of(kid);
    assert!(processes_tagged(&f.tag).contains(&kid));
    assert!(children_of(my_pid()).iter().any(|&(p, _)| p == kid));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.assert_clean(&r)));
    assert!(caught.is_err(), "assert_clean missed an escapee");
    assert!(!alive(kid), "assert_clean did not clean up the escapee");
    if let Some(dir) = cgroup {
        remove_left_cgroup(&dir);
    }
    // And a signalled stranger is noticed.
    kill(f.strangers[1].child.id() as i32, libc::SIGUSR2);
    let log = f.strangers[1].log.clone().unwrap();
    wait_for("the recorder to log it", Duration::from_secs(5), || {
        fs::read_to_string(&log).is_ok_and(|t| t.contains("SIGUSR2"))
    });
    assert!(f.strangers[1].trouble().is_some());
    fs::write(&log, "").unwrap();
}
