//! Hardening (issue: stuck pipes, foreign /proc, frozen time, pid hoppers, special files, and
//! the signals peers forward): each test attacks watchd the way a hostile environment or a
//! peer's test suite did, on real processes, and fails on the behaviour it replaced.

mod util;

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::*;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Compiles `tests/fixtures/<name>.c` into `dir` (a shared library with `shared`).
fn compile(dir: &TempDir, name: &str, shared: bool) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.c"));
    let out = dir.path(if shared { "lib.so" } else { name });
    let mut cc = Command::new("cc");
    cc.args(["-O2", "-Wall", "-o"]).arg(&out).arg(&src);
    if shared {
        cc.args(["-shared", "-fPIC", "-ldl"]);
    }
    let status = cc.status().expect("run cc");
    assert!(status.success(), "cc {}", src.display());
    out
}

/// A pipe whose read end the test holds and never reads, filled to the brim: a log shipper
/// that is stuck.
fn stuck_pipe() -> (OwnedFd, OwnedFd) {
    use nix::fcntl::OFlag;
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
    let probe = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    let flags = OFlag::from_bits_truncate(probe);
    nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).unwrap();
    let chunk = [b'x'; 4096];
    while nix::unistd::write(&w, &chunk).is_ok() {}
    nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
    (r, w)
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: signalling a process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

// ---- 1. a full stderr pipe ------------------------------------------------------------------

#[test]
fn a_stuck_stderr_pipe_does_not_stop_the_timeout() {
    let (_reader, writer) = stuck_pipe();
    let mut cmd = watchd(["--timeout", "1s", "--grace", "2s", "--exit-code-on-stop", "124"]);
    cmd.args(["--", "sleep", "30"]);
    cmd.stdout(Stdio::null()).stderr(Stdio::from(writer));
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let status = wait_deadline(&mut child, secs(15.0)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("watchd hung on its own stderr: the timeout never stopped the command");
    });
    assert_eq!(status.code(), Some(124));
    assert!(start.elapsed() < secs(5.0), "took {:?}", start.elapsed());
}

#[test]
fn a_stuck_stderr_pipe_does_not_stop_forwarding() {
    let dir = TempDir::new("stuck-fwd");
    let ready = dir.path("ready");
    let (_reader, writer) = stuck_pipe();
    let script =
        format!("trap 'exit 7' TERM; touch {}; while :; do sleep 0.05; done", ready.display());
    let mut cmd = watchd(["-v", "--events", "-", "--interval", "20ms", "sh", "-c", &script]);
    cmd.stdout(Stdio::null()).stderr(Stdio::from(writer));
    let mut child = cmd.spawn().unwrap();
    wait_for("the child to start", secs(10.0), || ready.exists());
    kill(child.id(), libc::SIGTERM);
    let status = wait_deadline(&mut child, secs(10.0)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("SIGTERM was not forwarded while stderr was stuck");
    });
    assert_eq!(status.code(), Some(7));
}

// ---- 2. --metrics-file and special files ----------------------------------------------------

#[test]
fn metrics_into_a_device_or_fifo_never_replace_it() {
    let dir = TempDir::new("metrics-special");
    let script = "i=0; while [ $i -lt 5 ]; do sleep 0.05; i=$((i+1)); done";
    if is_root() {
        // A device node of its own (a /dev/null twin), so a broken watchd harms nothing.
        let null = dir.path("null");
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o666);
        let dev = nix::sys::stat::makedev(1, 3);
        nix::sys::stat::mknod(&null, nix::sys::stat::SFlag::S_IFCHR, mode, dev).unwrap();
        let r = run(watchd(
            ["--metrics-file", null.to_str().unwrap(), "--interval", "20ms"]
                .into_iter()
                .chain(["sh", "-c", script]),
        ));
        r.assert_code(0);
        assert!(fs::symlink_metadata(&null).unwrap().file_type().is_char_device(), "{r}");
        assert!(r.stderr.is_empty(), "{r}");
    } else {
        eprintln!("device part skipped: mknod needs root");
    }
    // A FIFO with a reader: the metrics flow through it, and it stays a FIFO.
    let fifo = dir.path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let reader_path = fifo.clone();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        use std::io::Read;
        let _ = fs::File::open(&reader_path).unwrap().read_to_string(&mut text);
        text
    });
    let r = run(watchd(
        ["--metrics-file", fifo.to_str().unwrap(), "--interval", "20ms"]
            .into_iter()
            .chain(["sh", "-c", script]),
    ));
    r.assert_code(0);
    // Unblock the reader if watchd never opened the FIFO (no reader left: ENXIO, fine).
    use std::os::unix::fs::OpenOptionsExt;
    drop(fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&fifo));
    let text = reader.join().unwrap();
    assert!(text.contains("watchd_processes "), "nothing came through the FIFO\n{r}");
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
}

#[test]
fn metrics_file_usage_errors_and_a_planted_temp_name() {
    let r = run(watchd(["--metrics-file", "/", "true"]));
    r.assert_code(125).assert_stderr_has("--metrics-file");
    let dir = TempDir::new("metrics-dir");
    let r = run(watchd(["--metrics-file", dir.0.to_str().unwrap(), "true"]));
    r.assert_code(125).assert_stderr_has("it is a directory");
    if !is_root() {
        eprintln!("planted-name part skipped: a PID namespace needs root");
        return;
    }
    // As PID 1 the old temp name was `.m.prom.tmp.1`: a directory planted there stopped the
    // metrics for good.
    let planted = dir.path(".m.prom.tmp.1");
    fs::create_dir(&planted).unwrap();
    let target = dir.path("m.prom");
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", WATCHD, "--metrics-file"]).arg(&target).args([
        "--interval",
        "20ms",
        "sh",
        "-c",
        "sleep 0.5",
    ]);
    let r = run(cmd);
    r.assert_code(0);
    assert!(fs::read_to_string(&target).unwrap().contains("watchd_processes"), "{r}");
    assert!(planted.is_dir());
}

// ---- 3. a /proc that is not watchd's -----------------------------------------------------

#[test]
fn a_foreign_proc_is_never_acted_on() {
    if !is_root() {
        eprintln!("skipped: unshare --pid needs root");
        return;
    }
    let mut sentinel = sentinel();
    // PID 1 of a new PID namespace, with the outer /proc: /proc/1 is the machine's init. On
    // those figures --max-rss 1 would fire at once; it must not, and the sleep ends by itself.
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", WATCHD, "--max-rss", "1", "--stall", "500ms", "--interval"])
        .args(["50ms", "--stop-scope", "child", "--exit-code-on-stop", "124", "sleep", "1.5"]);
    let r = run(cmd);
    r.assert_code(0).assert_stderr_has("/proc is not this PID namespace's");
    assert!(!r.stderr.contains("rss:") && !r.stderr.contains("stall:"), "{r}");
    assert!(sentinel.try_wait().unwrap().is_none(), "a process outside the tree was signalled");
    let _ = sentinel.kill();
    let _ = sentinel.wait();
}

// ---- 5. a pid hopper --------------------------------------------------------------------

#[test]
fn a_pid_hopper_does_not_outlive_the_kill() {
    // A hopper that survived would hop on forever, leaving a zombie per generation: each trial
    // runs as PID 1 of a PID namespace of its own, whose end takes every process in it along.
    if !is_root() {
        eprintln!("skipped: needs root for a PID namespace (the safety net for a hopper)");
        return;
    }
    let dir = TempDir::new("hopper");
    let hopper = compile(&dir, "hopper", false);
    for trial in 0..5 {
        let started = dir.path(&format!("started-{trial}"));
        // The main child exits once the hopper runs; the hopper is the leftover.
        let script = format!(
            "{} {s} & while [ ! -s {s} ]; do sleep 0.01; done; exit 0",
            hopper.display(),
            s = started.display()
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork", "--mount-proc", WATCHD, "-v", "--grace", "100ms"]);
        cmd.args(["sh", "-c", &script]);
        let r = run(cmd);
        r.assert_code(0);
        assert!(started.exists(), "the hopper never ran\n{r}");
        // watchd exits once nothing of the tree is left; a hopper it failed to kill would
        // hold it until the give-up (5s after the kill), or for good.
        assert!(r.took < secs(4.0), "watchd waited for a hopper it could not kill\n{r}");
        assert!(!r.stderr.contains("did not die"), "{r}");
    }
}

// ---- 6. a child stopped between fork and exec ---------------------------------------------

#[test]
fn a_child_stopped_before_exec_does_not_freeze_watchd() {
    let dir = TempDir::new("stop-before-exec");
    let shim = compile(&dir, "stop_before_exec", true);
    let mut cmd = watchd(["--timeout", "1s", "--grace", "1s", "--exit-code-on-stop", "124"]);
    cmd.args(["sleep", "30"]).env("LD_PRELOAD", &shim).env("WATCHD_TEST_STOP_BEFORE_EXEC", "1");
    let r = run_within(&mut cmd, secs(20.0));
    r.assert_code(124).assert_stderr_has("watchd: timeout:");
    assert!(r.took < secs(5.0), "{r}");
}

// ---- 7. a real-time signal flood ------------------------------------------------------------

#[test]
fn a_realtime_signal_flood_is_handled_in_batches() {
    let dir = TempDir::new("flood");
    let ready = dir.path("ready");
    let rt = libc::SIGRTMIN() + 5;
    // 200 processes that ignore the signal; the main shell exits 2s after they are up.
    let script = format!(
        "trap '' {rt}; i=0; while [ $i -lt 200 ]; do sleep 1000 & i=$((i+1)); done; \
         touch {}; sleep 2; exit 0",
        ready.display()
    );
    let mut cmd = watchd(["--forward-to", "tree", "--grace", "1s", "sh", "-c", &script]);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    wait_for("200 processes", secs(20.0), || ready.exists());
    let start = Instant::now();
    let value = libc::sigval { sival_ptr: std::ptr::null_mut() };
    let mut sent = 0;
    for _ in 0..20_000 {
        // SAFETY: queueing a signal to the watchd this test started.
        if unsafe { libc::sigqueue(child.id() as i32, rt, value) } == 0 {
            sent += 1;
        }
    }
    assert!(sent >= 10_000, "only {sent} signals queued (RLIMIT_SIGPENDING?)");
    let status = wait_deadline(&mut child, secs(60.0)).expect("watchd ended");
    let took = start.elapsed();
    assert_eq!(status.code(), Some(0));
    // The child exits 2s after `ready`; the leftovers then go in one TERM (≤ 1s grace).
    assert!(took < secs(6.0), "{sent} queued signals held watchd for {took:?}");
}

// ---- 8. frozen time -----------------------------------------------------------------------

/// A cgroup v2 directory of this test's own, removed on drop.
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(tag: &str) -> Option<Cgroup> {
        if !is_root() {
            return None;
        }
        let mounts = fs::read_to_string("/proc/self/mountinfo").ok()?;
        let root = mounts.lines().find_map(|l| {
            let (_, fs) = l.split_once(" - ")?;
            fs.starts_with("cgroup2 ").then(|| l.split(' ').nth(4).map(PathBuf::from)).flatten()
        })?;
        let dir = root.join(format!("watchd-test-{tag}-{}", std::process::id()));
        fs::create_dir(&dir).ok()?;
        dir.join("cgroup.freeze").exists().then_some(Cgroup(dir))
    }

    fn freeze(&self, on: bool) {
        fs::write(self.0.join("cgroup.freeze"), if on { "1" } else { "0" }).unwrap();
        let want = if on { "frozen 1" } else { "frozen 0" };
        wait_for(want, secs(10.0), || {
            fs::read_to_string(self.0.join("cgroup.events")).unwrap().contains(want)
        });
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = fs::write(self.0.join("cgroup.freeze"), "0");
        let _ = fs::write(self.0.join("cgroup.kill"), "1");
        let deadline = Instant::now() + secs(5.0);
        while fs::remove_dir(&self.0).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn a_frozen_watchd_does_not_call_the_frozen_time_a_stall() {
    let Some(cg) = Cgroup::new("freeze") else {
        eprintln!("skipped: needs root and a cgroup2 hierarchy with cgroup.freeze");
        return;
    };
    let dir = TempDir::new("freeze");
    let events = dir.path("events");
    let log = dir.path("log");
    // Slow but steady: a line every 50ms is evidence of life (I/O) in every 100ms window.
    let job = format!("while :; do echo x >> {}; sleep 0.05; done", log.display());
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec {WATCHD} --stall 1s --interval 100ms \
             --exit-code-on-stop 124 --events {} -- sh -c '{job}'",
            cg.0.display(),
            events.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let samples = || fs::read_to_string(&events).unwrap_or_default().matches("\"sample\"").count();
    wait_for("a few samples", secs(10.0), || samples() >= 3);
    cg.freeze(true);
    // The freeze is the scenario, not a wait for something: 3 stall windows long.
    std::thread::sleep(secs(3.0));
    cg.freeze(false);
    let after = samples();
    wait_for("probes after the thaw", secs(10.0), || samples() >= after + 15);
    kill(child.id(), libc::SIGTERM);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("stall:"), "the frozen time was called a stall:\n{stderr}");
    assert_eq!(out.status.signal().or(out.status.code()), Some(libc::SIGTERM), "{stderr}");
}

// ---- 9. an invisible tree -------------------------------------------------------------------

#[test]
fn no_stall_verdict_without_a_proc_to_see() {
    if !is_root() {
        eprintln!("skipped: a mount namespace needs root");
        return;
    }
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"]).arg(format!(
        "umount -l /proc && exec {WATCHD} --stall 500ms --interval 50ms --exit-code-on-stop \
         124 -- sleep 1.5"
    ));
    let r = run(cmd);
    r.assert_code(0).assert_stderr_has("/proc is not mounted");
    assert!(!r.stderr.contains("stall:"), "{r}");
}

// ---- 10. --events: a planted link, a FIFO without a reader -------------------------------

#[test]
fn events_never_follow_a_link_someone_else_planted() {
    if !is_root() {
        eprintln!("skipped: making a link owned by another user needs root");
        return;
    }
    let dir = TempDir::new("events-link");
    fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o1777)).unwrap();
    let victim = dir.path("root-only");
    fs::write(&victim, "precious\n").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    let link = dir.path("events.jsonl");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let nobody = nix::unistd::Uid::from_raw(65534);
    let flags = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
    nix::unistd::fchownat(nix::fcntl::AT_FDCWD, &link, Some(nobody), None, flags).unwrap();
    let r = run(watchd(["--events", link.to_str().unwrap(), "true"]));
    r.assert_code(125).assert_stderr_has("owned by uid 65534");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
}

#[test]
fn an_events_fifo_without_a_reader_does_not_block_the_start() {
    let dir = TempDir::new("events-fifo");
    let fifo = dir.path("events");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut cmd = watchd(["--events", fifo.to_str().unwrap(), "sh", "-c", "exit 4"]);
    let r = run_within(&mut cmd, secs(20.0));
    r.assert_code(4);
}

// ---- 12. messages ---------------------------------------------------------------------------

#[test]
fn a_missing_interpreter_is_named() {
    let dir = TempDir::new("interp");
    let script = dir.path("script");
    fs::write(&script, "#!/nonexistent/bin/python3\nprint('hi')\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let r = run(watchd([script.as_os_str()]));
    r.assert_code(127)
        .assert_stderr_has("its interpreter '/nonexistent/bin/python3' was not found");
}

#[test]
fn a_stop_signal_watchd_may_not_send_is_not_claimed() {
    if !is_root() {
        eprintln!("skipped: needs root to make a set-uid program and drop to nobody");
        return;
    }
    let dir = TempDir::new("eperm");
    fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o755)).unwrap();
    let root_sleep = compile(&dir, "become_root", false);
    fs::set_permissions(&root_sleep, fs::Permissions::from_mode(0o4755)).unwrap();
    let mut cmd = Command::new(WATCHD);
    cmd.args(["--timeout", "300ms", "--grace", "300ms"]).arg(&root_sleep).arg("2");
    cmd.stdin(Stdio::null());
    // SAFETY: setgroups/setgid/setuid are async-signal-safe; the test drops its own child to
    // nobody before exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let r = run(cmd);
    r.assert_stderr_has("timeout: cannot send SIGTERM (Operation not permitted)");
    assert!(!r.stderr.contains("after SIGTERM\n"), "the exit line claims the signal\n{r}");
    r.assert_stderr_has("after SIGTERM could not be sent");
}

// ---- 14. faults sent by other processes -------------------------------------------------------

#[test]
fn sigabrt_from_another_process_is_forwarded() {
    let dir = TempDir::new("abrt");
    let ready = dir.path("ready");
    for (sig, name) in [(libc::SIGABRT, "ABRT"), (libc::SIGSEGV, "SEGV"), (libc::SIGBUS, "BUS")] {
        let _ = fs::remove_file(&ready);
        let script = format!(
            "trap 'exit 9' {name}; touch {}; while :; do sleep 0.02; done",
            ready.display()
        );
        let mut cmd = watchd(["sh", "-c", &script]);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        wait_for("the child's trap", secs(10.0), || ready.exists());
        kill(child.id(), sig);
        let status = wait_deadline(&mut child, secs(10.0)).expect("watchd ended");
        assert_eq!(status.code(), Some(9), "SIG{name} was not forwarded: {status:?}");
    }
}

// ---- 16, 17. --rewrite-signal, --success-exit-status ------------------------------------

#[test]
fn rewrite_signal_forwards_another_signal_or_none() {
    let dir = TempDir::new("rewrite");
    let ready = dir.path("ready");
    let script = format!(
        "trap 'echo got-usr1' USR1; trap 'exit 3' QUIT; trap 'exit 4' TERM; touch {}; \
         while :; do sleep 0.02; done",
        ready.display()
    );
    let mut cmd = watchd(["--rewrite-signal", "TERM=QUIT", "--rewrite-signal", "USR1=none"]);
    cmd.args(["sh", "-c", &script]).stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    wait_for("the child's traps", secs(10.0), || ready.exists());
    kill(child.id(), libc::SIGUSR1);
    kill(child.id(), libc::SIGTERM);
    let status = wait_deadline(&mut child, secs(10.0)).expect("watchd ended");
    assert_eq!(status.code(), Some(3), "TERM should reach the child as QUIT");
    let mut out = String::new();
    use std::io::Read;
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(!out.contains("got-usr1"), "USR1=none should drop it: {out}");
    // The environment takes a comma-separated list.
    let mut cmd = watchd(["--", "true"]);
    cmd.env("WATCHD_REWRITE_SIGNAL", "TERM=QUIT,HUP=none");
    run(cmd).assert_code(0);
    let r = run(watchd(["--rewrite-signal", "KILL=TERM", "true"]));
    r.assert_code(125).assert_stderr_has("--rewrite-signal");
}

#[test]
fn success_exit_statuses_exit_0_unless_watchd_stopped_the_child() {
    let r = run(watchd(["--success-exit-status", "143", "sh", "-c", "exit 143"]));
    r.assert_code(0);
    let r = run(watchd(["--success-exit-status", "3,TERM", "sh", "-c", "kill -TERM $$"]));
    r.assert_code(0);
    let r = run(watchd(["--success-exit-status", "3", "sh", "-c", "exit 4"]));
    r.assert_code(4);
    // Stopped by watchd: the drain keeps its status.
    let r = run(watchd(["--success-exit-status", "TERM", "--timeout", "200ms", "sleep", "30"]));
    assert_eq!(r.signal(), Some(libc::SIGTERM), "{r}");
    let r = run(watchd(["--success-exit-status", "256", "true"]));
    r.assert_code(125).assert_stderr_has("--success-exit-status");
}

// ---- 18. the child's environment ------------------------------------------------------------

#[test]
fn the_child_does_not_get_watchds_own_settings() {
    let mut cmd = watchd(["sh", "-c", "env"]);
    cmd.env("WATCHD_STALL", "1h").env("WATCHD_GRACE", "3s").env("WATCHD_TEST_TAG", "kept");
    let r = run(cmd);
    r.assert_code(0);
    assert!(!r.stdout.contains("WATCHD_STALL") && !r.stdout.contains("WATCHD_GRACE"), "{r}");
    assert!(r.stdout.contains("WATCHD_TEST_TAG=kept"), "other variables stay\n{r}");
}

// ---- 19. a stop request bounds the whole stop ------------------------------------------

#[test]
fn leftovers_are_killed_one_grace_after_the_stop_request() {
    let dir = TempDir::new("stop-request");
    let ready = dir.path("ready");
    // The main child takes 2s to stop after TERM; its leftover ignores TERM.
    let script = format!(
        "trap 'sleep 2; exit 0' TERM; (trap '' TERM; exec sleep 1000) & touch {}; \
         while :; do sleep 0.02; done",
        ready.display()
    );
    let mut cmd = watchd(["--grace", "3s", "sh", "-c", &script]);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    wait_for("the child", secs(10.0), || ready.exists());
    let start = Instant::now();
    kill(child.id(), libc::SIGTERM);
    let status = wait_deadline(&mut child, secs(20.0)).expect("watchd ended");
    let took = start.elapsed();
    assert_eq!(status.code(), Some(0));
    // 3s from the request, not 2s + 3s from the child's end.
    assert!(took >= secs(2.9) && took < secs(4.5), "the stop took {took:?}");
}

// ---- 20. 0 for a wait means no wait -------------------------------------------------------

#[test]
fn grace_zero_kills_at_once() {
    let dir = TempDir::new("grace-zero");
    let ready = dir.path("ready");
    let events = dir.path("events");
    // Deaf to SIGTERM: only the kill ends it. With a grace it would live that long.
    let script = format!("trap '' TERM; touch {}; exec sleep 1000", ready.display());
    let mut cmd = watchd(["--grace", "0", "--events", events.to_str().unwrap()]);
    cmd.args(["--timeout", "300ms", "--exit-code-on-stop", "124", "sh", "-c", &script]);
    let r = run(cmd);
    r.assert_code(124).assert_took(secs(0.3), secs(3.0));
    assert!(ready.exists(), "{r}");
    let log = fs::read_to_string(&events).unwrap();
    let at = |name: &str| -> f64 {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("\"event\":\"{name}\"")))
            .unwrap_or_else(|| panic!("no {name} event\n{log}"));
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let ts = v["ts"].as_str().unwrap();
        humantime::parse_rfc3339(ts)
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    // The kill goes out with the stop, not a grace later.
    let gap = at("kill") - at("trigger");
    assert!((0.0..0.5).contains(&gap), "{gap}s between the trigger and the kill\n{log}");
}
