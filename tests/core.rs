//! The init's job (issue: watchd core): spawn, exit status, signal state, forwarding,
//! reaping, cleanup and the parent-death signal, on the real binary and real processes.

mod util;

use std::fs;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::*;

const SIGREC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sigrec.py");

#[test]
fn option_parsing_stops_at_the_first_operand() {
    run(watchd(["sh", "-c", "exit 3"])).assert_code(3);
    run(watchd(["--", "sh", "-c", "exit 4"])).assert_code(4);
    run(watchd(["--grace", "1s", "sh", "-c", "exit 5", "--grace"])).assert_code(5);
}

#[test]
fn mirrors_every_exit_code() {
    for code in 0..=255 {
        run(watchd(["sh", "-c", &format!("exit {code}")])).assert_code(code);
    }
}

#[test]
fn death_by_signal_is_reraised_without_core_dump() {
    for (sig, name) in [
        (libc::SIGTERM, "TERM"),
        (libc::SIGSEGV, "SEGV"),
        (libc::SIGQUIT, "QUIT"),
        (libc::SIGUSR1, "USR1"),
    ] {
        let r = run(watchd(["sh", "-c", &format!("kill -{name} $$")]));
        assert_eq!(r.signal(), Some(sig), "watchd should die of SIG{name}\n{r}");
        assert!(!r.status.core_dumped(), "watchd dumped core for SIG{name}\n{r}");
    }
}

#[test]
fn as_pid1_death_by_signal_is_128_plus_n() {
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", WATCHD, "--", "sh", "-c", "kill -TERM $$"]);
    let r = run(cmd);
    r.assert_code(128 + libc::SIGTERM);
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", WATCHD, "--", "sh", "-c", "exit 7"]);
    run(cmd).assert_code(7);
}

#[test]
fn exec_failures_are_126_and_127() {
    let dir = TempDir::new("exec");
    let marker = dir.path("ran");
    let r = run(watchd(["no-such-command-watchd-test"]));
    r.assert_code(127).assert_stderr_has(
        "watchd: cannot run 'no-such-command-watchd-test': No such file or directory",
    );
    assert_eq!(r.stderr.lines().count(), 1, "{r}");
    run(watchd(["/nonexistent/path/cmd"])).assert_code(127);
    let script = dir.path("noexec.sh");
    fs::write(&script, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    let r = run(watchd([script.as_os_str()]));
    r.assert_code(126).assert_stderr_has("Permission denied");
    run(watchd([dir.0.as_os_str()])).assert_code(126);
    assert!(!marker.exists());
    // A script without #! runs through /bin/sh, as execvp does.
    let plain = dir.path("plain");
    fs::write(&plain, "exit 9\n").unwrap();
    fs::set_permissions(&plain, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    run(watchd([plain.as_os_str()])).assert_code(9);
}

#[test]
fn usage_errors_are_one_line_and_125_and_start_nothing() {
    let dir = TempDir::new("usage");
    let marker = dir.path("started");
    let touch = format!("touch {}", marker.display());
    let cases: &[&[&str]] = &[
        &["--stall", "abc"],
        &["--timeout", "-5"],
        &["--interval", "0"],
        &["--max-rss", "12Q"],
        &["--cpu-limit", "lots"],
        &["--stop-signal", "NOPE"],
        &["--kill-signal", "99"],
        &["--forward-to", "nowhere"],
        &["--exit-code-on-stop", "256"],
        &["--no-such-flag"],
        &["-v", "-q"],
    ];
    for args in cases {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["sh", "-c", &touch]);
        let r = run(watchd(&all));
        r.assert_code(125);
        assert_eq!(r.stderr.lines().count(), 1, "not one line\n{r}");
        assert!(r.stderr.starts_with("watchd: "), "{r}");
        let flag = args[0];
        assert!(r.stderr.contains(flag.trim_start_matches('-')), "does not name {flag}\n{r}");
        if args.len() > 1 {
            assert!(r.stderr.contains(args[1]), "does not name the value {}\n{r}", args[1]);
        }
        assert!(r.stdout.is_empty(), "{r}");
        assert!(!marker.exists(), "the command ran despite {args:?}");
    }
    let r = run(watchd(Vec::<&str>::new()));
    r.assert_code(125).assert_stderr_has("missing COMMAND");
    assert_eq!(r.stderr.lines().count(), 1, "{r}");
    run(watchd(["--"])).assert_code(125).assert_stderr_has("missing COMMAND");
    // With -v too: one line, no literal "\n" in it.
    let r = run(watchd(["-v"]));
    r.assert_code(125).assert_stderr_has("missing COMMAND");
    assert_eq!(r.stderr.lines().count(), 1, "{r}");
    assert!(!r.stderr.contains("\\n"), "{r}");
}

#[test]
fn environment_variables_set_options_and_the_command_line_wins() {
    let mut cmd = watchd(["true"]);
    cmd.env("WATCHD_STALL", "abc");
    let r = run(cmd);
    r.assert_code(125).assert_stderr_has("--stall");
    assert!(r.stderr.contains("abc"), "{r}");
    let mut cmd = watchd(["--stall", "5s", "sh", "-c", "exit 2"]);
    cmd.env("WATCHD_STALL", "abc");
    run(cmd).assert_code(2);
    let mut cmd = watchd(["sh", "-c", "exit 0"]);
    cmd.env("WATCHD_VERBOSE", "1");
    run(cmd).assert_code(0).assert_stderr_has("watchd: started");
    let mut cmd = watchd(["sh", "-c", "exit 0"]);
    cmd.env("WATCHD_VERBOSE", "false");
    let r = run(cmd);
    assert!(r.stderr.is_empty(), "{r}");
}

#[test]
fn help_and_version() {
    let r = run(watchd(["--help"]));
    r.assert_code(0);
    for needle in ["--stall", "--timeout", "WATCHD_STALL", "--exit-code-on-stop", "COMMAND"] {
        assert!(r.stdout.contains(needle), "--help lacks {needle}\n{r}");
    }
    let r = run(watchd(["--version"]));
    r.assert_code(0);
    assert_eq!(r.stdout.trim(), format!("watchd {}", env!("CARGO_PKG_VERSION")));
}

/// SigBlk and SigIgn lines of a process started through `pre` with and without watchd.
fn signal_state(pre: fn() -> std::io::Result<()>, through_watchd: bool) -> String {
    let mut cmd = if through_watchd {
        watchd(["grep", "^Sig[BI]", "/proc/self/status"])
    } else {
        let mut c = Command::new("grep");
        c.args(["^Sig[BI]", "/proc/self/status"]);
        c
    };
    // SAFETY: `pre` only calls sigprocmask/signal, which are async-signal-safe.
    unsafe { cmd.pre_exec(pre) };
    let r = run(cmd);
    r.assert_code(0);
    r.stdout
}

fn block_usr1_ignore_usr2_and_pipe() -> std::io::Result<()> {
    // SAFETY: async-signal-safe calls on local data.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::sigaddset(&mut set, libc::SIGRTMIN() + 2);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGUSR2, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
    }
    Ok(())
}

fn default_everything() -> std::io::Result<()> {
    // SAFETY: async-signal-safe calls on local data.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    Ok(())
}

#[test]
fn child_inherits_exactly_the_signal_mask_and_ignored_set() {
    for pre in [block_usr1_ignore_usr2_and_pipe as fn() -> std::io::Result<()>, default_everything]
    {
        let direct = signal_state(pre, false);
        let wrapped = signal_state(pre, true);
        assert_eq!(wrapped, direct, "the child's signal state differs from what watchd was given");
    }
    // And the states really differ, so the comparison above can fail.
    assert_ne!(
        signal_state(block_usr1_ignore_usr2_and_pipe, true),
        signal_state(default_everything, true)
    );
}

/// Starts watchd over the signal recorder and waits until the recorder is ready.
fn start_recorder(
    extra: &[&str],
    dir: &TempDir,
    rec_args: &[&str],
) -> (std::process::Child, std::path::PathBuf) {
    let log = dir.path("signals");
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend(["--".into(), "python3".into(), SIGREC.into(), log.display().to_string()]);
    args.extend(rec_args.iter().map(|s| s.to_string()));
    let mut cmd = watchd(&args);
    cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
    let child = cmd.spawn().unwrap();
    wait_file(&dir.path("signals.ready"), Duration::from_secs(10));
    (child, log)
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: signalling a process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

#[test]
fn forwards_every_listed_signal_and_never_sigchld() {
    let dir = TempDir::new("fwd");
    let (mut watchd, log) = start_recorder(&[], &dir, &["--exit-on", "SIGTERM"]);
    let rt = libc::SIGRTMIN();
    let sent = [
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGWINCH, "SIGWINCH"),
        (libc::SIGURG, "SIGURG"),
        (libc::SIGIO, "SIGIO"),
        (libc::SIGPWR, "SIGPWR"),
        (libc::SIGPROF, "SIGPROF"),
        (libc::SIGVTALRM, "SIGVTALRM"),
        (libc::SIGXCPU, "SIGXCPU"),
        (libc::SIGXFSZ, "SIGXFSZ"),
        (libc::SIGSYS, "SIGSYS"),
        (libc::SIGCONT, "SIGCONT"),
        (libc::SIGTSTP, "SIGTSTP"),
        (rt, "SIGRTMIN+0"),
        (rt + 3, "SIGRTMIN+3"),
        (libc::SIGRTMAX(), &format!("SIGRTMIN+{}", libc::SIGRTMAX() - rt)),
    ];
    for (sig, name) in &sent {
        kill(watchd.id(), libc::SIGCHLD);
        kill(watchd.id(), *sig);
        wait_for(&format!("{name} to reach the child"), Duration::from_secs(10), || {
            fs::read_to_string(&log).unwrap_or_default().lines().any(|l| l == *name)
        });
    }
    let got = fs::read_to_string(&log).unwrap();
    assert!(!got.contains("SIGCHLD"), "SIGCHLD was forwarded:\n{got}");
    kill(watchd.id(), libc::SIGTERM);
    let status = wait_deadline(&mut watchd, Duration::from_secs(10)).expect("watchd exits");
    assert_eq!(status.code(), Some(0), "the recorder exits 0 on TERM: {status:?}");
}

#[test]
fn signals_ignored_at_start_are_not_forwarded() {
    let dir = TempDir::new("ign");
    let log = dir.path("signals");
    let mut cmd = watchd(["python3", SIGREC, &log.display().to_string(), "--exit-on", "SIGTERM"]);
    // SAFETY: signal() is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGUSR1, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    wait_file(&dir.path("signals.ready"), Duration::from_secs(10));
    kill(child.id(), libc::SIGUSR1);
    kill(child.id(), libc::SIGUSR2); // forwarded: proves the path works, and orders the check
    wait_for("SIGUSR2", Duration::from_secs(10), || {
        fs::read_to_string(&log).unwrap_or_default().contains("SIGUSR2")
    });
    assert!(
        !fs::read_to_string(&log).unwrap().contains("SIGUSR1"),
        "an ignored signal was forwarded"
    );
    kill(child.id(), libc::SIGTERM);
    wait_deadline(&mut child, Duration::from_secs(10)).unwrap();
}

/// A shell that records USR1 and TERM in `<dir>/<name>` for itself, for a grandchild in its
/// group and for a `setsid` grandchild outside it, exiting on TERM; each writes
/// `<name>.ready` once its traps are set.
fn family_script(dir: &TempDir) -> String {
    let d = dir.0.display();
    let rec = |name: &str| {
        format!(
            r#"trap "echo USR1 >> {d}/{name}" USR1; trap "echo TERM >> {d}/{name}; exit 0" TERM; echo ready > {d}/{name}.ready; while :; do sleep 0.05; done"#
        )
    };
    format!(
        "( {} ) 2>/dev/null &\nsetsid sh -c '{}' 2>/dev/null &\n{}",
        rec("grand"),
        rec("escapee"),
        rec("main")
    )
}

/// Who recorded a USR1 sent to watchd with `--forward-to to`.
fn forward_usr1(to: &str) -> Vec<String> {
    let dir = TempDir::new(&format!("to-{to}"));
    let mut cmd = watchd(["--forward-to", to, "--grace", "5s", "sh", "-c", &family_script(&dir)]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    for who in ["main", "grand", "escapee"] {
        wait_file(&dir.path(&format!("{who}.ready")), Duration::from_secs(10));
    }
    kill(child.id(), libc::SIGUSR1);
    let main_log = dir.path("main");
    wait_for("the main child to record USR1", Duration::from_secs(10), || {
        fs::read_to_string(&main_log).unwrap_or_default().contains("USR1")
    });
    // TERM follows USR1 to the same processes (or, for those it does not reach, comes from the
    // cleanup after the main child exits), and each recorder handles USR1 first.
    kill(child.id(), libc::SIGTERM);
    wait_deadline(&mut child, Duration::from_secs(10)).expect("watchd exits after the child");
    let got = |who: &&str| fs::read_to_string(dir.path(who)).unwrap_or_default();
    for who in ["main", "grand", "escapee"] {
        assert!(
            got(&who).contains("TERM"),
            "{who} never got TERM (forward-to {to}): {:?}",
            got(&who)
        );
    }
    ["main", "grand", "escapee"]
        .iter()
        .filter(|w| got(w).contains("USR1"))
        .map(|w| w.to_string())
        .collect()
}

#[test]
fn forward_to_child_group_and_tree() {
    assert_eq!(forward_usr1("child"), ["main"]);
    assert_eq!(forward_usr1("group"), ["main", "grand"]);
    assert_eq!(forward_usr1("tree"), ["main", "grand", "escapee"]);
}

#[test]
fn reaps_100_orphans_and_leaves_no_survivor() {
    let tag = unique_tag("orphans");
    let mut cmd = watchd(["sh", "-c", "for i in $(seq 100); do sleep 1000 & done; exit 0"]);
    cmd.env("WATCHD_TEST_TAG", &tag);
    let r = run(cmd);
    r.assert_code(0).assert_took(Duration::ZERO, Duration::from_secs(5));
    assert_eq!(processes_tagged(&tag), Vec::<i32>::new(), "survivors\n{r}");
}

#[test]
fn adopted_orphans_are_reaped_while_the_child_runs() {
    let dir = TempDir::new("zombie");
    let pidfile = dir.path("orphan");
    let script = format!(
        "(sh -c 'echo $$ > {p}.tmp; mv {p}.tmp {p}; exit 0' &); sleep 1000",
        p = pidfile.display()
    );
    let mut child = watchd(["--grace", "0", "sh", "-c", &script]).spawn().unwrap();
    let pid = pids_in(&wait_file(&pidfile, Duration::from_secs(10)))[0];
    // Gone from /proc entirely: exited *and* reaped (a zombie would still have an entry).
    wait_for("the orphan to be reaped", Duration::from_secs(5), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    assert!(child.try_wait().unwrap().is_none(), "watchd ended early");
    kill(child.id(), libc::SIGTERM);
    wait_deadline(&mut child, Duration::from_secs(10)).unwrap();
}

#[test]
fn cleanup_kills_a_term_ignoring_grandchild_at_grace() {
    let tag = unique_tag("cleanup");
    let mut cmd = watchd([
        "--grace",
        "1s",
        "sh",
        "-c",
        "sh -c 'trap \"\" TERM; exec sleep 1000' & sleep 0.2; exit 6",
    ]);
    cmd.env("WATCHD_TEST_TAG", &tag);
    let r = run(cmd);
    r.assert_code(6).assert_took(Duration::from_millis(1100), Duration::from_secs(4));
    assert_eq!(processes_tagged(&tag), Vec::<i32>::new(), "survivors\n{r}");
}

#[test]
fn cleanup_is_immediate_when_leftovers_obey_term() {
    let tag = unique_tag("cleanup-fast");
    let mut cmd = watchd(["--grace", "30s", "sh", "-c", "sleep 1000 & sleep 1000 & exit 0"]);
    cmd.env("WATCHD_TEST_TAG", &tag);
    run(cmd).assert_code(0).assert_took(Duration::ZERO, Duration::from_secs(5));
    assert_eq!(processes_tagged(&tag), Vec::<i32>::new());
}

#[test]
fn no_cleanup_leaves_the_rest_running() {
    let tag = unique_tag("no-cleanup");
    let mut cmd = watchd(["--no-cleanup", "sh", "-c", "sleep 1000 >/dev/null 2>&1 & exit 0"]);
    cmd.env("WATCHD_TEST_TAG", &tag);
    run(cmd).assert_code(0);
    let left = processes_tagged(&tag);
    assert_eq!(left.len(), 1, "the background sleep should survive");
    // With a cgroup, the leftover keeps it, and watchd leaves it behind (SPEC).
    let cgroup = watchd_cgroup_of(left[0]);
    assert_eq!(cgroup.is_some(), cgroup_mode().as_deref() == Some("on"), "{cgroup:?}");
    kill(left[0] as u32, libc::SIGKILL);
    if let Some(dir) = cgroup {
        remove_left_cgroup(&dir);
    }
}

#[test]
fn killing_watchd_kills_the_child_through_pdeathsig() {
    let dir = TempDir::new("pdeath");
    let pidfile = dir.path("pid");
    let script =
        format!("echo $$ > {p}.tmp; mv {p}.tmp {p}; exec sleep 1000", p = pidfile.display());
    let mut child = watchd(["sh", "-c", &script]).spawn().unwrap();
    let pid = pids_in(&wait_file(&pidfile, Duration::from_secs(10)))[0];
    assert!(alive(pid));
    let cgroup = cgroup_dir_of(pid).filter(|d| d.ends_with(format!("watchd-{}", child.id())));
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for("the child to die with watchd", Duration::from_secs(5), || !alive(pid));
    // With a cgroup, a SIGKILLed watchd leaves it behind (see the README).
    if let Some(dir) = cgroup {
        remove_left_cgroup(&dir);
    }
}

#[test]
fn works_as_pid1_reaping_and_forwarding() {
    let dir = TempDir::new("pid1");
    let log = dir.path("signals");
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--pid",
        "--fork",
        "--mount-proc",
        WATCHD,
        "--",
        "python3",
        SIGREC,
        &log.display().to_string(),
        "--exit-on",
        "SIGTERM",
    ]);
    cmd.stdin(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    wait_file(&dir.path("signals.ready"), Duration::from_secs(10));
    // Find watchd: the child of unshare.
    let unshare = child.id();
    let mut watchd_pid = None;
    wait_for("watchd under unshare", Duration::from_secs(5), || {
        watchd_pid = fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .ok()
            .and_then(|t| pids_in(&t).first().copied())
            .or_else(|| child_of(unshare as i32));
        watchd_pid.is_some()
    });
    let watchd_pid = watchd_pid.unwrap() as u32;
    kill(watchd_pid, libc::SIGUSR1);
    wait_for("USR1 through PID 1", Duration::from_secs(10), || {
        fs::read_to_string(&log).unwrap_or_default().contains("SIGUSR1")
    });
    kill(watchd_pid, libc::SIGTERM);
    let status = wait_deadline(&mut child, Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(0), "the child exits 0 on TERM: {status:?}");
}

/// The first process whose parent is `ppid`, by a /proc scan.
fn child_of(ppid: i32) -> Option<i32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = stat.rsplit_once(')')?.1;
        let parent: i32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (parent == ppid).then_some(pid)
    })
}

#[test]
fn idle_watchd_sleeps_in_the_kernel() {
    let mut child = watchd(["sleep", "10"]).spawn().unwrap();
    let pid = child.id();
    let started = Instant::now();
    let mut switches = 0u64;
    // Keep the last reading taken while watchd still runs.
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(n) = status.lines().find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        {
            switches = n.trim().parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(started.elapsed() >= Duration::from_secs(9), "sleep 10 ended early");
    assert!(switches <= 10, "{switches} voluntary context switches over 10s of idling");
}

/// The parent pid of `pid`, from /proc.
fn ppid_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn orphans_are_adopted_unless_no_subreaper() {
    for (flags, adopted) in [(&[][..], true), (&["--no-subreaper"][..], false)] {
        let dir = TempDir::new("subreaper");
        let pidfile = dir.path("orphan");
        // The subshell exits at once, orphaning the sleep it started.
        let script = format!(
            "(sh -c 'echo $$ > {p}.tmp; mv {p}.tmp {p}; exec sleep 30' &); exec sleep 30",
            p = pidfile.display()
        );
        let mut args: Vec<&str> = flags.to_vec();
        args.extend(["--grace", "0", "sh", "-c", &script]);
        let mut child = watchd(&args).spawn().unwrap();
        let orphan = pids_in(&wait_file(&pidfile, Duration::from_secs(10)))[0];
        let mut parent = None;
        // The orphan's parent settles once the subshell has exited.
        wait_for("the subshell to exit", Duration::from_secs(10), || {
            parent = ppid_of(orphan);
            parent.is_some_and(|p| {
                fs::read_to_string(format!("/proc/{p}/comm")).map_or(true, |c| c.trim() != "sh")
            })
        });
        assert_eq!(
            parent == Some(child.id() as i32),
            adopted,
            "{flags:?}: orphan's parent is {parent:?}"
        );
        kill(child.id(), libc::SIGTERM);
        wait_deadline(&mut child, Duration::from_secs(10)).unwrap();
        // SAFETY: the orphan is this test's; with --no-subreaper it escaped watchd's cleanup.
        unsafe { libc::kill(orphan, libc::SIGKILL) };
    }
}
