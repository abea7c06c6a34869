//! The side-command runner on real processes: exit statuses, the timeout, orphans and setsid
//! daemons killed with it, a 10 MB flood, WATCHD_PID, the signal state, abort, and a middle
//! killed outright. The test process is a child subreaper, as watchd is, so anything that
//! escaped the middle would be adopted here, where the checks below would see it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use watchd::exit::ChildEnd;
use watchd::helper_run::{Drained, Output, SideCommand, SideEnd, SideStatus, TAIL};
use watchd::signals;
use watchd::spawn::Inherited;
use watchd::sys::{self, SigSet};

fn inherited() -> Inherited {
    Inherited { mask: SigSet::current_mask(), sigchld_ignored: false }
}

fn subreaper() {
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
}

/// A tag no other test or run shares, exported by the command so that every process it
/// starts carries it in its environment.
fn tag() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("SIDE_TAG=t{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Live processes whose environment holds `tag`.
fn tagged(tag: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        if env.split(|&b| b == 0).any(|var| var == tag.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

/// Polls `cond` under a deadline; no fixed sleep stands in for synchronisation.
fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Reads the output until EOF and reaps the middle, as the driver would.
fn run_to_end(mut side: SideCommand, limit: Duration) -> (SideEnd, Duration) {
    let started = Instant::now();
    let deadline = started + limit;
    let pid = Pid::from_raw(side.pid());
    let mut end = None;
    loop {
        assert!(Instant::now() < deadline, "the side command did not end within {limit:?}");
        if let Some(fd) = side.output_fd() {
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(20u8)).unwrap();
            let _ = side.read_output();
        } else if end.is_none() {
            std::thread::sleep(Duration::from_millis(2));
        }
        if end.is_none() {
            end = match waitpid(pid, Some(WaitPidFlag::WNOHANG)).unwrap() {
                WaitStatus::Exited(_, code) => Some(ChildEnd::Exited(code as u8)),
                WaitStatus::Signaled(_, sig, _) => {
                    Some(ChildEnd::Killed(signals::Signal::from_raw(sig as i32).unwrap()))
                }
                _ => None,
            };
        }
        if let Some(end) = end
            && side.output_fd().is_none()
        {
            return (side.finish(end), started.elapsed());
        }
    }
}

fn start(cmd: &str, timeout: Option<Duration>) -> SideCommand {
    subreaper();
    SideCommand::start(cmd, 4242, timeout, Output::Capture, &inherited()).expect("start")
}

#[test]
fn exit_statuses_pass_and_fail() {
    let (end, _) = run_to_end(start("true", None), Duration::from_secs(10));
    assert!(end.ok, "{end:?}");
    assert_eq!(end.status, SideStatus::Exited(0));
    let (end, _) = run_to_end(start("echo not yet; exit 1", None), Duration::from_secs(10));
    assert!(!end.ok);
    assert_eq!(end.status, SideStatus::Exited(1));
    assert_eq!(end.detail(), "exit status 1: not yet");
    let (end, _) = run_to_end(start("kill -9 $$", None), Duration::from_secs(10));
    assert_eq!(end.status, SideStatus::Exited(128 + 9));
}

#[test]
fn watchd_pid_is_set_and_systemds_variables_are_not_passed() {
    let cmd = "echo \"pid=$WATCHD_PID notify=${NOTIFY_SOCKET-unset} wd=${WATCHDOG_USEC-unset}\"";
    let (end, _) = run_to_end(start(cmd, None), Duration::from_secs(10));
    assert_eq!(end.output_tail, "pid=4242 notify=unset wd=unset\n");
}

#[test]
fn a_hanging_check_is_killed_at_its_timeout_with_its_background_children() {
    let tag = tag();
    let cmd = format!("export {tag}; sleep 1000 & sleep 1000 & echo started; sleep 1000");
    // The middle's clock starts inside start(): measure from before it.
    let began = Instant::now();
    let side = start(&cmd, Some(Duration::from_millis(300)));
    let (end, _) = run_to_end(side, Duration::from_secs(10));
    let took = began.elapsed();
    assert_eq!(end.status, SideStatus::TimedOut, "{end:?}");
    assert!(end.timed_out() && !end.ok);
    assert_eq!(end.output_tail, "started\n");
    assert!(end.detail().starts_with("timed out after 300ms"), "{}", end.detail());
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(tagged(&tag), Vec::<i32>::new(), "something survived the timeout");
}

#[test]
fn a_double_forked_setsid_daemon_dies_with_the_check_and_is_never_ours() {
    let tag = tag();
    let dir = std::env::temp_dir().join(format!("side-daemon-{}", tag.replace('=', "-")));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("daemon");
    // The subshell exits at once (the double fork); the daemon leaves the group and the
    // session with setsid. The check waits until the daemon has written its pid and sid.
    let cmd = format!(
        "export {tag}; (setsid sh -c 'echo $$ $(cut -d\" \" -f6 /proc/$$/stat) > {f}.tmp; mv {f}.tmp {f}; exec sleep 1000' &); \
         while [ ! -s {f} ]; do :; done; exit 0",
        f = file.display()
    );
    let (end, _) = run_to_end(start(&cmd, Some(Duration::from_secs(20))), Duration::from_secs(30));
    assert_eq!(end.status, SideStatus::Exited(0), "{end:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let ids: Vec<i32> = text.split_whitespace().map(|s| s.parse().unwrap()).collect();
    assert_eq!(ids[0], ids[1], "the daemon did not lead its own session: {text}");
    assert_eq!(tagged(&tag), Vec::<i32>::new(), "the daemon survived");
    // Not adopted here either (as a zombie it would carry no environment to tag it).
    assert_eq!(
        waitpid(Pid::from_raw(ids[0]), Some(WaitPidFlag::WNOHANG)),
        Err(nix::errno::Errno::ECHILD),
        "the daemon became a child of the test process"
    );
}

#[test]
fn a_10mb_flood_keeps_the_tail_and_never_blocks() {
    let side =
        start("head -c 10000000 /dev/zero | tr '\\0' x; echo END", Some(Duration::from_secs(60)));
    let flags =
        nix::fcntl::fcntl(side.output_fd().unwrap(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
    assert!(flags & libc::O_NONBLOCK != 0, "watchd's end of the pipe must not block");
    let (end, took) = run_to_end(side, Duration::from_secs(60));
    assert_eq!(end.status, SideStatus::Exited(0));
    assert_eq!(end.output_bytes, 10_000_004);
    assert_eq!(end.output_tail.len(), TAIL);
    assert!(end.output_tail.ends_with("xxxEND\n"));
    eprintln!("10 MB of output read in {took:?}");
}

#[test]
fn reading_an_empty_pipe_returns_at_once() {
    let tag = tag();
    let mut side = start(&format!("export {tag}; sleep 1000"), None);
    let began = Instant::now();
    assert_eq!(side.read_output(), Drained::Open);
    assert!(began.elapsed() < Duration::from_millis(500));
    wait_until("the check to start", Duration::from_secs(10), || !tagged(&tag).is_empty());
    side.abort();
    let (end, _) = run_to_end(side, Duration::from_secs(10));
    assert_eq!(end.status, SideStatus::Aborted);
    assert_eq!(end.detail(), "stopped by watchd");
    assert_eq!(tagged(&tag), Vec::<i32>::new());
}

#[test]
fn the_command_gets_watchds_inherited_signal_state() {
    subreaper();
    let mut mask = SigSet::empty();
    mask.add(signals::parse("USR1").unwrap());
    let inherited = Inherited { mask, sigchld_ignored: true };
    // The first thing sh does is exec: dash rewrites its own mask once it has waited for a
    // child, so only this shows what sh was given.
    let cmd = "exec grep -E '^Sig(Blk|Ign)' /proc/self/status";
    let side = SideCommand::start(cmd, 1, None, Output::Capture, &inherited).unwrap();
    let (end, _) = run_to_end(side, Duration::from_secs(10));
    let lines: Vec<&str> = end.output_tail.lines().collect();
    assert_eq!(
        lines[0], "SigBlk:\t0000000000000200",
        "only USR1, nothing of the middle's: {end:?}"
    );
    let ignored = u64::from_str_radix(lines[1].trim_start_matches("SigIgn:\t"), 16).unwrap();
    // Rust's runtime ignores SIGPIPE in this process: an ignored signal stays ignored. (dash
    // catches SIGCHLD for itself, so an inherited "ignored" SIGCHLD cannot show through sh.)
    assert!(sys::is_ignored(signals::SIGPIPE));
    assert!(
        ignored & (1 << (libc::SIGPIPE - 1)) != 0,
        "SIGPIPE ignored as inherited: {}",
        lines[1]
    );
}

#[test]
fn sh_is_a_child_of_the_middle_and_leads_its_own_group() {
    let side = start("cut -d' ' -f4,5 /proc/$$/stat; echo $$", None);
    let middle = side.pid();
    let (end, _) = run_to_end(side, Duration::from_secs(10));
    let lines: Vec<&str> = end.output_tail.lines().collect();
    let sh: i32 = lines[1].parse().unwrap();
    assert_eq!(lines[0], format!("{middle} {sh}"), "{end:?}");
    assert_ne!(sh, nix::unistd::getpgrp().as_raw());
    let middle_group = std::fs::read_to_string(format!("/proc/{middle}/stat"));
    assert!(middle_group.is_err(), "the middle was reaped, so it is gone");
}

#[test]
fn a_middle_killed_outright_takes_sh_along() {
    let tag = tag();
    let mut side = start(&format!("export {tag}; echo $$; exec sleep 1000"), None);
    let mut sh = None;
    wait_until("sh to say its pid", Duration::from_secs(10), || {
        let _ = side.read_output();
        let mut fds = [PollFd::new(side.output_fd().unwrap(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(10u8));
        let _ = side.read_output();
        sh = tagged(&tag).first().copied();
        sh.is_some()
    });
    nix::sys::signal::kill(Pid::from_raw(side.pid()), nix::sys::signal::Signal::SIGKILL).unwrap();
    let (end, _) = run_to_end(side, Duration::from_secs(10));
    assert_eq!(end.status, SideStatus::Lost(signals::SIGKILL));
    // sh was orphaned to this subreaper and killed by its parent-death signal: reap it here.
    let sh = Pid::from_raw(sh.unwrap());
    wait_until("sh to die", Duration::from_secs(10), || {
        matches!(
            waitpid(sh, Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _))
        )
    });
    assert_eq!(tagged(&tag), Vec::<i32>::new());
}

#[test]
fn inherit_and_stderr_need_no_pipe() {
    subreaper();
    for output in [Output::Inherit, Output::Stderr] {
        let side = SideCommand::start("exit 3", 1, None, output, &inherited()).unwrap();
        assert!(side.output_fd().is_none());
        let (end, _) = run_to_end(side, Duration::from_secs(10));
        assert_eq!(end.status, SideStatus::Exited(3));
        assert_eq!((end.output_tail.as_str(), end.output_bytes), ("", 0));
    }
}

#[test]
fn orphans_that_end_are_reaped_while_the_check_runs() {
    let tag = tag();
    let cmd = format!(
        "export {tag}; i=0; while [ $i -lt 100 ]; do (true &); i=$((i+1)); done; echo spawned; exec sleep 1000"
    );
    let mut side = start(&cmd, None);
    let middle = side.pid();
    wait_until("the orphans to be spawned", Duration::from_secs(20), || {
        if let Some(fd) = side.output_fd() {
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(10u8));
        }
        let _ = side.read_output();
        tagged(&tag).len() == 1
    });
    // Every orphan was adopted by the middle when its subshell ended; all it keeps is sh.
    let children = || {
        std::fs::read_to_string(format!("/proc/{middle}/task/{middle}/children"))
            .unwrap_or_default()
    };
    wait_until("the middle to reap its orphans", Duration::from_secs(10), || {
        children().split_whitespace().count() == 1
    });
    side.abort();
    let (end, _) = run_to_end(side, Duration::from_secs(10));
    assert_eq!(end.status, SideStatus::Aborted);
    assert_eq!(end.output_tail, "spawned\n");
}
