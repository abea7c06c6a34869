//! The notify socket on real processes: systemd's own `systemd-notify` (BARRIER=1 included),
//! a raw sender, a sender that is someone else, oversized and malformed datagrams, a flood of
//! 10,000 datagrams, a child that drops privileges, descriptors held with their message and
//! closed with it, the child's
//! WATCHDOG_PID set between fork and exec, and the upstream sender (paths and abstract names).

use std::io::{IoSlice, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
use watchd::notify::{
    self, BATCH, Envp, MAX_DATAGRAM, NotifySocket, Received, Target, Upstream, child_env,
};

/// Receives until `done` says so, polling the socket as the driver would, and closing each
/// message's descriptors once it is received, as the driver does once it has judged the sender.
fn receive_until(
    sock: &mut NotifySocket,
    limit: Duration,
    mut done: impl FnMut(&[Received]) -> bool,
) -> Vec<Received> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while !done(&got) {
        assert!(Instant::now() < deadline, "timed out; received so far: {got:?}");
        let mut fds = [PollFd::new(sock.fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(50u8)).unwrap();
        got.extend(sock.recv_batch().into_iter().map(|r| Received { fds: Vec::new(), ..r }));
    }
    got
}

fn has(got: &[Received], key: &str, value: &str) -> bool {
    got.iter().any(|r| r.message.field(key) == Some(value))
}

fn own_pid() -> i32 {
    std::process::id() as i32
}

#[test]
fn systemd_notify_ready_returns_promptly_because_its_barrier_fd_is_closed() {
    let mut sock = NotifySocket::bind().unwrap();
    let started = Instant::now();
    let mut child = Command::new("/usr/bin/systemd-notify")
        .args(["--ready", "--status=serving"])
        .env("NOTIFY_SOCKET", sock.path())
        .spawn()
        .unwrap();
    let mut status = None;
    let got = receive_until(&mut sock, Duration::from_secs(10), |got| {
        status = status.or_else(|| child.try_wait().unwrap());
        status.is_some() && has(got, "READY", "1")
    });
    let took = started.elapsed();
    assert!(status.unwrap().success());
    // systemd-notify waits up to 5s for its barrier descriptor to be closed.
    assert!(took < Duration::from_secs(3), "systemd-notify took {took:?}: barrier fd kept open?");
    let ready = got.iter().find(|r| r.message.ready).unwrap();
    assert_eq!(ready.message.status.as_deref(), Some("serving"));
    // As root, systemd-notify reports its parent's pid (here, this test); else its own.
    let expected = if nix::unistd::geteuid().is_root() { own_pid() } else { child.id() as i32 };
    assert_eq!(ready.pid, expected);
    assert!(has(&got, "BARRIER", "1"), "{got:?}");
    assert!(sock.dropped().fds_closed >= 1);
}

#[test]
fn a_raw_sender_and_a_stranger_are_told_apart_by_pid() {
    let mut sock = NotifySocket::bind().unwrap();
    let sender = UnixDatagram::unbound().unwrap();
    sender.send_to(b"WATCHDOG=1\nSTATUS=raw\n", sock.path()).unwrap();
    let got = receive_until(&mut sock, Duration::from_secs(5), |got| !got.is_empty());
    assert_eq!((got[0].pid, got[0].uid), (own_pid(), nix::unistd::getuid().as_raw()));
    assert!(got[0].message.watchdog_ping);

    // Another process: its own pid, which the machine will judge against the tree.
    let mut child = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import socket,sys; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'READY=1', sys.argv[1])",
        ])
        .arg(sock.path())
        .spawn()
        .unwrap();
    let got = receive_until(&mut sock, Duration::from_secs(10), |got| !got.is_empty());
    assert!(child.wait().unwrap().success());
    assert_eq!(got[0].pid, child.id() as i32);
    assert_ne!(got[0].pid, own_pid());
}

#[test]
fn oversized_and_malformed_datagrams_change_nothing_else() {
    let mut sock = NotifySocket::bind().unwrap();
    let sender = UnixDatagram::unbound().unwrap();
    let mut big = b"STATUS=".to_vec();
    big.resize(5000, b'x');
    sender.send_to(&big, sock.path()).unwrap();
    let mut exact = b"STATUS=".to_vec();
    exact.resize(MAX_DATAGRAM, b'y');
    sender.send_to(&exact, sock.path()).unwrap();
    sender.send_to(b"garbage\n\xff\xfe=1\n=\nREADY=1\n", sock.path()).unwrap();
    let got = receive_until(&mut sock, Duration::from_secs(5), |got| got.len() == 2);
    assert_eq!(sock.dropped().oversized, 1);
    assert_eq!(got[0].message.status.as_ref().map(String::len), Some(MAX_DATAGRAM - 7));
    assert!(got[1].message.ready);
    assert_eq!(got[1].message.skipped, 3);
    assert!(sock.recv().is_none(), "nothing else was queued");
}

#[test]
fn a_flood_of_10000_datagrams_is_drained_in_batches_without_blocking() {
    const N: usize = 10_000;
    let mut sock = NotifySocket::bind().unwrap();
    let path = sock.path().to_path_buf();
    // A blocking sender: it waits whenever the queue is full, so nothing is lost and the
    // receiver is what sets the pace.
    let sender = std::thread::spawn(move || {
        let s = UnixDatagram::unbound().unwrap();
        for _ in 0..N {
            s.send_to(b"WATCHDOG=1", &path).unwrap();
        }
        s.send_to(b"STATUS=done", &path).unwrap();
    });
    let started = Instant::now();
    let mut pings = 0;
    let mut slowest = Duration::ZERO;
    let mut batches = 0;
    let deadline = started + Duration::from_secs(60);
    'outer: loop {
        assert!(Instant::now() < deadline, "flood not drained: {pings} pings");
        let mut fds = [PollFd::new(sock.fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(100u8)).unwrap();
        let t = Instant::now();
        let batch = sock.recv_batch();
        slowest = slowest.max(t.elapsed());
        assert!(batch.len() <= BATCH);
        batches += 1;
        for r in batch {
            if r.message.status.as_deref() == Some("done") {
                break 'outer;
            }
            assert!(r.message.watchdog_ping);
            pings += 1;
        }
    }
    let took = started.elapsed();
    sender.join().unwrap();
    assert_eq!(pings, N);
    let t = Instant::now();
    assert!(sock.recv().is_none());
    assert!(t.elapsed() < Duration::from_millis(100), "recv on an empty socket must not wait");
    eprintln!("{N} datagrams in {took:?} over {batches} wake-ups; slowest batch {slowest:?}");
}

#[test]
fn a_child_that_drops_privileges_still_reaches_the_socket() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to drop privileges");
        return;
    }
    let mut sock = NotifySocket::bind().unwrap();
    let dir = sock.path().parent().unwrap();
    assert_eq!(std::fs::metadata(dir).unwrap().permissions().mode() & 0o777, 0o711);
    assert_eq!(std::fs::metadata(sock.path()).unwrap().permissions().mode() & 0o777, 0o666);
    let mut child = Command::new("/usr/bin/systemd-notify")
        .args(["--no-block", "STATUS=from nobody"])
        .env("NOTIFY_SOCKET", sock.path())
        .uid(65534)
        .gid(65534)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    let got = receive_until(&mut sock, Duration::from_secs(10), |got| {
        status = status.or_else(|| child.try_wait().unwrap());
        !got.is_empty() || status.is_some_and(|s| !s.success())
    });
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!got.is_empty(), "nothing received; systemd-notify said: {err}");
    assert_eq!(got[0].uid, 65534);
    assert_eq!(got[0].message.status.as_deref(), Some("from nobody"));
    child.wait().unwrap();
}

#[test]
fn descriptors_sent_with_a_message_live_with_it_and_close_with_it() {
    let mut sock = NotifySocket::bind().unwrap();
    let (read_end, write_end): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    let sender = UnixDatagram::unbound().unwrap();
    let fds = [write_end.as_raw_fd(), write_end.as_raw_fd()];
    let addr = UnixAddr::new(sock.path()).unwrap();
    sendmsg(
        sender.as_raw_fd(),
        &[IoSlice::new(b"BARRIER=1")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        Some(&addr),
    )
    .unwrap();
    drop(write_end);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.is_empty() {
        assert!(Instant::now() < deadline, "nothing received");
        let mut fds = [PollFd::new(sock.fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(50u8)).unwrap();
        got.extend(sock.recv_batch());
    }
    let received = got.remove(0);
    assert_eq!(received.message.field("BARRIER"), Some("1"));
    assert_eq!((received.fds.len(), sock.dropped().fds_closed), (2, 2));
    // The message holds both copies (systemd-notify waits on its barrier while the sender is
    // looked for in the tree): no hang-up yet.
    let hung_up = || {
        let mut fds = [PollFd::new(read_end.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
            && fds[0].revents().unwrap().contains(PollFlags::POLLHUP)
    };
    assert!(!hung_up(), "the descriptors were closed before the message was judged");
    // Dropped with the message: every copy of the write end is gone, the reader sees it at once.
    drop(received);
    assert!(hung_up());
}

#[test]
fn each_socket_gets_a_fresh_directory_and_cleans_up() {
    let a = NotifySocket::bind().unwrap();
    let b = NotifySocket::bind().unwrap();
    assert_ne!(a.path(), b.path());
    let dir: PathBuf = a.path().parent().unwrap().into();
    assert!(dir.file_name().unwrap().to_string_lossy().starts_with("watchd-"));
    drop(a);
    assert!(!dir.exists(), "the directory outlived the socket");
    let base = std::env::temp_dir().join(format!("notify-base-{}", own_pid()));
    std::fs::create_dir_all(&base).unwrap();
    let c = NotifySocket::bind_in(&base).unwrap();
    assert!(c.path().starts_with(&base));
    drop(c);
    assert_eq!(std::fs::read_dir(&base).unwrap().count(), 0);
    std::fs::remove_dir(&base).unwrap();
    assert!(NotifySocket::bind_in(std::path::Path::new("/nonexistent-watchd-base")).is_err());
}

#[test]
fn the_child_gets_its_own_pid_as_watchdog_pid_set_between_fork_and_exec() {
    let sock = NotifySocket::bind().unwrap();
    let changes = child_env(Some(sock.path()), Some(Duration::from_secs(3)));
    let env = changes
        .apply([("WATCHDOG_PID".into(), "1".into()), ("PATH".into(), "/usr/bin:/bin".into())]);
    let mut envp = Envp::new(env, changes.watchdog_pid);
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    let argv = [
        c"sh".as_ptr(),
        c"-c".as_ptr(),
        c"echo $$ $WATCHDOG_PID $WATCHDOG_USEC $NOTIFY_SOCKET".as_ptr(),
        std::ptr::null(),
    ];
    // SAFETY: the child makes only async-signal-safe calls (getpid, dup2, execve, _exit) and
    // `Envp::finish`, which neither allocates nor locks, on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            libc::dup2(write_end.as_raw_fd(), 1);
            let envp = envp.finish(libc::getpid());
            libc::execve(c"/bin/sh".as_ptr(), argv.as_ptr(), envp);
            libc::_exit(127);
        }
    }
    drop(write_end);
    let mut out = String::new();
    std::fs::File::from(read_end).read_to_string(&mut out).unwrap();
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
    assert_eq!(status, nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 0));
    assert_eq!(out, format!("{pid} {pid} 3000000 {}\n", sock.path().display()));
}

#[test]
fn upstream_sends_to_a_path_and_to_an_abstract_name() {
    let dir = std::env::temp_dir().join(format!("upstream-{}", own_pid()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify");
    let _ = std::fs::remove_file(&path);
    let systemd = UnixDatagram::bind(&path).unwrap();
    let up = Upstream::new(&Target::Path(path.clone()), Some(Duration::from_secs(30))).unwrap();
    assert_eq!(up.watchdog(), Some(Duration::from_secs(30)));
    up.send("READY=1\nSTATUS=ready").unwrap();
    let mut buf = [0u8; 64];
    let n = systemd.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1\nSTATUS=ready");

    let name = format!("watchd-test-{}", own_pid());
    let abstract_addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let systemd = UnixDatagram::bind_addr(&abstract_addr).unwrap();
    let (target, _) = notify::upstream_from_vars(Some(format!("@{name}").as_ref()), None, None, 1)
        .unwrap()
        .unwrap();
    Upstream::new(&target, None).unwrap().send("WATCHDOG=1").unwrap();
    let n = systemd.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"WATCHDOG=1");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn upstream_never_waits_on_a_full_or_absent_listener() {
    let dir = std::env::temp_dir().join(format!("upstream-full-{}", own_pid()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify");
    let _ = std::fs::remove_file(&path);
    let systemd = UnixDatagram::bind(&path).unwrap();
    let up = Upstream::new(&Target::Path(path.clone()), None).unwrap();
    let started = Instant::now();
    let mut sent = 0;
    let mut refused = 0;
    for _ in 0..2_000 {
        match up.send("WATCHDOG=1") {
            Ok(()) => sent += 1,
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
                refused += 1;
            }
        }
    }
    assert!(sent > 0 && refused > 0, "sent {sent}, refused {refused}");
    assert!(started.elapsed() < Duration::from_secs(2), "sending took {:?}", started.elapsed());
    drop(systemd);
    std::fs::remove_dir_all(&dir).unwrap();
    let started = Instant::now();
    assert!(up.send("STOPPING=1").is_err(), "no listener: an error, not a wait");
    assert!(started.elapsed() < Duration::from_millis(500));
}
