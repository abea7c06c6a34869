//! The dump on real processes blocked in known ways: each test starts its processes, polls
//! /proc (through `snapshot` itself) until they sit where expected, then checks the data, the
//! stderr picture and the event.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::*;
use crate::probe::{Prober, parse_stat};

/// Polls `f` until it yields, failing the test after a deadline. The short pause only keeps the
/// poll from spinning a core; it synchronises nothing.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Children killed (their whole process group) and reaped on drop, so a failed assertion
/// leaves nothing behind.
struct Kids(Vec<Child>);

impl Kids {
    fn spawn(cmd: &mut Command) -> (Kids, i32) {
        let child = cmd.process_group(0).spawn().expect("spawn");
        let pid = i32::try_from(child.id()).expect("pid fits i32");
        (Kids(vec![child]), pid)
    }
}

impl Drop for Kids {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
            // Our own unreaped child leads the group, so neither id can have been recycled.
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

fn member(pid: i32) -> Option<Member> {
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text).map(|s| Member { pid, starttime: s.starttime })
}

fn snap(members: &[Member]) -> Snapshot {
    snapshot(members, |_, _| None, Instant::now() + Duration::from_secs(10))
}

/// The snapshot of one process, once `ready` holds for it.
fn settled(pid: i32, what: &str, ready: impl Fn(&Process) -> bool) -> Snapshot {
    wait_for(what, || {
        let s = snap(&[member(pid)?]);
        s.processes.first().filter(|p| ready(p))?;
        Some(s)
    })
}

fn main_call(p: &Process) -> Option<&'static str> {
    p.main_task()?.syscall?.name()
}

fn line_of(snap: &Snapshot, main: i32) -> String {
    render_text(snap, main, TEXT_MAX).join("\n")
}

fn event(snap: &Snapshot) -> serde_json::Value {
    let mut out = String::new();
    write_event_json(snap, &mut out);
    serde_json::from_str(&out).expect("the dump event is valid JSON")
}

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn read_line(out: ChildStdout) -> String {
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).expect("read the child's line");
    line
}

#[test]
fn cat_on_a_pipe_nobody_writes() {
    let mut cmd = Command::new("cat");
    cmd.stdin(Stdio::piped()).stdout(Stdio::null());
    let (mut kids, pid) = Kids::spawn(&mut cmd);
    let writer = kids.0[0].stdin.take().expect("cat's stdin");
    let s = settled(pid, "cat blocked in read", |p| {
        main_call(p) == Some("read") && p.main_task().is_some_and(|t| t.wchan.is_some())
    });
    let t = s.processes[0].main_task().expect("main thread");
    let fd = t.fd.as_ref().expect("read names a descriptor");
    assert_eq!(fd.fd, 0);
    assert_eq!(fd.kind, FdKind::Pipe);
    // The very pipe we hold the other end of.
    let ours = std::fs::read_link(format!("/proc/self/fd/{}", writer.as_raw_fd())).unwrap();
    assert_eq!(fd.link, ours.to_str().unwrap());
    assert_eq!(t.state, b'S');
    assert!(t.wchan.as_deref().is_some_and(|w| w.contains("pipe")), "{t:?}");
    let text = line_of(&s, pid);
    assert!(text.contains(&format!("read(0<{}>)", fd.link)), "{text}");
    assert!(text.starts_with(&format!("{pid} S ")) && text.ends_with("  cat"), "{text}");
    let v = event(&s);
    assert_eq!(v[0]["fd"]["kind"], "pipe");
    assert_eq!(v[0]["syscall"], "read");
    drop(writer);
}

#[test]
fn python_deadlock_on_two_locks_folds_its_threads() {
    let script = "import threading\n\
                  a, b = threading.Lock(), threading.Lock()\n\
                  both = threading.Barrier(3)\n\
                  def cross(x, y):\n    with x:\n        both.wait()\n        with y: pass\n\
                  t1 = threading.Thread(target=cross, args=(a, b)); t1.start()\n\
                  t2 = threading.Thread(target=cross, args=(b, a)); t2.start()\n\
                  both.wait()\n\
                  t1.join()\n";
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script]).stdin(Stdio::null());
    let (_kids, pid) = Kids::spawn(&mut cmd);
    let s = settled(pid, "three python threads in futex", |p| {
        p.tasks.len() == 3
            && p.tasks.iter().all(|t| {
                t.state == b'S'
                    && t.wchan.is_some()
                    && t.syscall.and_then(|s| s.name()) == Some("futex")
            })
    });
    let p = &s.processes[0];
    assert_eq!(p.threads, 3);
    assert_eq!(p.tasks[0].tid, pid, "main thread first");
    let wchans: Vec<_> = p.tasks.iter().map(|t| t.wchan.clone()).collect();
    assert!(wchans[0].as_deref().is_some_and(|w| w.contains("futex")), "{wchans:?}");
    let lines = render_text(&s, pid, TEXT_MAX);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    // pyenv's shim may have exec'd python3 by its full path.
    let head = format!("{pid} S ");
    assert!(lines[0].starts_with(&head) && lines[0].contains(" 3 threads  "), "{}", lines[0]);
    assert!(lines[0].contains("python3 -c import threading?a, b = "), "{}", lines[0]);
    assert!(lines[1].starts_with("  · 3 threads S "), "{}", lines[1]);
    assert!(lines[1].contains(&format!("{} futex", wchans[0].as_deref().unwrap())), "{}", lines[1]);
    let v = event(&s);
    assert_eq!(v[0]["tasks"].as_array().unwrap().len(), 3);
    assert_eq!(v[0]["tasks"][2]["syscall"], "futex");
}

#[test]
fn tcp_client_waiting_on_a_server_that_never_answers() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = listener.local_addr().unwrap();
    let script = format!(
        "import socket\ns = socket.create_connection(('127.0.0.1', {}))\nprint('connected', flush=True)\ns.recv(1)\n",
        server.port()
    );
    let mut cmd = Command::new("python3");
    cmd.args(["-c", &script]).stdin(Stdio::null()).stdout(Stdio::piped());
    let (mut kids, pid) = Kids::spawn(&mut cmd);
    let (accepted, client) = listener.accept().expect("accept");
    assert_eq!(read_line(kids.0[0].stdout.take().unwrap()), "connected\n");
    let s = settled(pid, "the client blocked on its socket", |p| {
        p.main_task().and_then(|t| t.fd.as_ref()).is_some_and(|fd| fd.socket.is_some())
    });
    let t = s.processes[0].main_task().unwrap();
    assert!(matches!(main_call(&s.processes[0]), Some("recvfrom" | "recvmsg" | "read")), "{t:?}");
    let fd = t.fd.as_ref().unwrap();
    assert!(matches!(fd.kind, FdKind::Socket(_)));
    assert_eq!(
        fd.socket,
        Some(Socket::Inet {
            proto: "tcp",
            local: client,
            peer: Some(server),
            state: Some("ESTAB")
        })
    );
    let text = line_of(&s, pid);
    assert!(text.contains(&format!("<tcp {client}->{server}>)")), "{text}");
    let v = event(&s);
    assert_eq!(v[0]["fd"]["peer"], server.to_string());
    assert_eq!(v[0]["fd"]["kind"], "socket");
    // Through four readers: each notes the sockets it saw, and one looks them all up.
    let FdKind::Socket(inode) = fd.kind else { unreachable!() };
    let copies = vec![(member(pid).unwrap(), None); 64];
    let found = std::sync::Mutex::new(None);
    read::read_all(&copies, 4, &|msg| {
        if let Msg::Sockets(sockets) = msg {
            *found.lock().unwrap() = Some(sockets);
        }
        true
    });
    let found = found.into_inner().unwrap().expect("the sockets are handed over");
    assert_eq!(found.get(&inode), fd.socket.as_ref());
    drop(accepted);
}

#[test]
fn sleep_sits_in_clock_nanosleep() {
    let (_kids, pid) = Kids::spawn(Command::new("sleep").arg("1000").stdin(Stdio::null()));
    let s = settled(pid, "sleep in its call", |p| {
        main_call(p) == Some("clock_nanosleep") && p.main_task().is_some_and(|t| t.wchan.is_some())
    });
    let p = &s.processes[0];
    let t = p.main_task().unwrap();
    assert_eq!((p.state, p.threads, p.tasks.len()), (b'S', 1, 1));
    assert!(t.wchan.as_deref().is_some_and(|w| w.contains("sleep")), "{t:?}");
    assert!(t.fd.is_none());
    assert!(p.rss_bytes > 0);
    assert!(p.idle.is_some(), "the scheduler says when it last ran");
    assert_eq!(p.cmdline.as_deref(), Some("sleep 1000"));
    if root() {
        let stack = t.stack.as_ref().expect("root reads kernel stacks");
        assert!(stack.iter().any(|f| f.contains("nanosleep")), "{stack:?}");
    }
    let text = line_of(&s, pid);
    assert!(text.contains(" clock_nanosleep  sleep 1000"), "{text}");
    let v = event(&s);
    assert_eq!(v[0]["cmdline"], "sleep 1000");
    assert!(v[0]["idle_s"].is_number());
    assert_eq!(v[0]["stack"].is_array(), root());
}

#[test]
fn a_stopped_process_is_in_state_t() {
    let (_kids, pid) = Kids::spawn(Command::new("sleep").arg("1000").stdin(Stdio::null()));
    // Stop it only once it runs sleep, not while it is still the forked test binary.
    settled(pid, "sleep started", |p| p.comm == "sleep");
    kill(Pid::from_raw(pid), Signal::SIGSTOP).expect("SIGSTOP our own child");
    let s = settled(pid, "the stop", |p| {
        p.state == b'T' && p.main_task().is_some_and(|t| t.wchan.is_some())
    });
    let t = s.processes[0].main_task().unwrap();
    assert!(t.wchan.as_deref().is_some_and(|w| w.contains("stop")), "{t:?}");
    assert!(line_of(&s, pid).starts_with(&format!("{pid} T ")));
    assert_eq!(event(&s)[0]["state"], "T");
}

#[test]
fn a_zombie() {
    let mut child = Command::new("true").stdin(Stdio::null()).spawn().expect("spawn true");
    let pid = i32::try_from(child.id()).unwrap();
    let s = settled(pid, "the zombie", |p| p.state == b'Z');
    let p = &s.processes[0];
    assert_eq!(p.cmdline.as_deref(), Some(""));
    assert_eq!(p.rss_bytes, 0);
    assert_eq!(p.main_task().unwrap().wchan, None);
    let text = line_of(&s, pid);
    assert!(text.starts_with(&format!("{pid} Z ")) && text.ends_with("[true] <defunct>"), "{text}");
    assert_eq!(event(&s)[0]["state"], "Z");
    child.wait().expect("reap");
    // Reaped: gone from the next snapshot, silently.
    let gone = snap(&[Member { pid, starttime: p.starttime }]);
    assert_eq!((gone.processes.len(), gone.unread), (0, 0));
}

#[test]
fn strangers_and_vanished_pids_are_left_out() {
    let me = Member { pid: i32::try_from(std::process::id()).unwrap(), starttime: 0 };
    let real = member(me.pid).unwrap();
    // pid_max is at most 2^22, so this pid cannot exist; and a wrong start time is another
    // process that got the pid.
    let s = snap(&[Member { pid: i32::MAX, starttime: 1 }, me, real]);
    assert_eq!(s.processes.len(), 1);
    assert_eq!(s.processes[0].pid, real.pid);
    assert_eq!(s.unread, 0);
    // This test binary has several threads: all read, main first.
    assert_eq!(s.processes[0].tasks[0].tid, real.pid);
    assert!(s.processes[0].tasks.len() > 1);
}

/// Not root: what the kernel keeps from other users (wchan, the system call, the stack) is
/// null, and the rest is still read. The test binary runs itself again as nobody for the
/// reading half.
#[test]
fn an_unprivileged_reader_gets_nulls_not_errors() {
    if !root() {
        eprintln!("skipped: only root can run the reading half as another user");
        return;
    }
    let (_kids, pid) = Kids::spawn(Command::new("sleep").arg("1000").stdin(Stdio::null()));
    settled(pid, "sleep in its call", |p| main_call(p) == Some("clock_nanosleep"));
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "dump::tests::unprivileged_half", "--ignored", "--nocapture"])
        .env("DUMP_TEST_TARGET", pid.to_string())
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .output()
        .expect("run the test binary as nobody");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("unprivileged dump ok"), "the half did not run: {stdout}{stderr}");
}

#[test]
#[ignore = "the reading half of an_unprivileged_reader_gets_nulls_not_errors"]
fn unprivileged_half() {
    let Ok(target) = std::env::var("DUMP_TEST_TARGET") else { return };
    assert!(!root());
    let pid = target.parse().expect("a pid");
    let s = snap(&[member(pid).expect("the target's stat is readable by all")]);
    let p = &s.processes[0];
    let t = p.main_task().expect("main thread");
    assert_eq!(p.cmdline.as_deref(), Some("sleep 1000"));
    assert_eq!((p.state, p.comm.as_str()), (b'S', "sleep"));
    assert_eq!((t.wchan.as_deref(), t.syscall, t.stack.as_deref()), (None, None, None));
    assert!(line_of(&s, pid).contains("  ?  sleep 1000"), "{}", line_of(&s, pid));
    event(&s);
    println!("unprivileged dump ok");
}

#[test]
fn forty_processes_are_cut_to_thirty() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "for i in $(seq 39); do sleep 1000 & done; wait"]).stdin(Stdio::null());
    let (_kids, sh) = Kids::spawn(&mut cmd);
    let mut prober = Prober::new(sh);
    let comm = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let members = wait_for("sh's 39 sleeps", || {
        let below = prober.members(&[]);
        let sleeps = below.iter().filter(|&&(pid, _)| comm(pid).trim() == "sleep").count();
        (below.len() == 39 && sleeps == 39).then_some(below)
    });
    let mut members: Vec<Member> =
        members.into_iter().map(|(pid, starttime)| Member { pid, starttime }).collect();
    members.push(member(sh).unwrap());
    let s = snap(&members);
    assert_eq!(s.processes.len(), 40);
    let scanned: Vec<Member> = prober.scan(&[]).procs.iter().map(Member::from).collect();
    assert_eq!(scanned.len(), 39, "a scan gives the same members");
    assert!(scanned.iter().all(|m| members.contains(m)));
    let lines = render_text(&s, sh, TEXT_MAX);
    assert_eq!(lines.len(), 31, "{lines:#?}");
    assert!(lines[0].starts_with(&format!("{sh} S ")), "the main child first: {}", lines[0]);
    assert!(lines[1..30].iter().all(|l| l.starts_with("  ") && l.ends_with("  sleep 1000")));
    assert_eq!(lines[30], "… and 10 more");
    let v = event(&s);
    assert_eq!(v.as_array().unwrap().len(), 40, "the event has every process");
}

#[test]
fn a_deadline_that_has_passed_returns_at_once() {
    let me = member(i32::try_from(std::process::id()).unwrap()).unwrap();
    let members = vec![me; 200];
    let started = Instant::now();
    let s = snapshot(&members, |_, _| None, started);
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert_eq!((s.processes.len(), s.unread), (0, members.len()));
}

#[test]
fn reads_that_outlast_the_deadline_are_cut_short() {
    // Thousands of reads of this multi-threaded process take far longer than 20ms.
    let me = member(i32::try_from(std::process::id()).unwrap()).unwrap();
    let members = vec![me; 5000];
    let started = Instant::now();
    let s = snapshot(&members, |_, _| None, started + Duration::from_millis(20));
    let took = started.elapsed();
    assert!(took < Duration::from_millis(500), "took {took:?}");
    assert!(s.unread > 0, "all read in {took:?}?");
    assert_eq!(s.processes.len() + s.unread, members.len());
}

#[test]
fn the_samplers_idle_time_wins_when_it_has_one() {
    let me = member(i32::try_from(std::process::id()).unwrap()).unwrap();
    let s = snapshot(
        &[me],
        |pid, st| (pid == me.pid && st == me.starttime).then_some(Duration::from_secs(77)),
        Instant::now() + Duration::from_secs(10),
    );
    assert_eq!(s.processes[0].idle, Some(Duration::from_secs(77)));
}

/// The figure for point 4 of the issue: snapshot + render + event of 1,000 sleeping processes.
/// `cargo test --release --lib -- --ignored --nocapture dump::tests::dump_1000`, and again
/// with `DUMP_SAMPLER_KNOWS=1` for the cost when the sampler has every idle time (no sched).
#[test]
#[ignore = "spawns 1,000 processes; run by hand"]
fn dump_1000_processes() {
    let mut kids = Kids(Vec::with_capacity(1000));
    for _ in 0..1000 {
        let child = Command::new("sleep")
            .arg("1000")
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn sleep");
        kids.0.push(child);
    }
    let pids: Vec<i32> = kids.0.iter().map(|c| i32::try_from(c.id()).unwrap()).collect();
    let members = wait_for("1,000 sleeps", || {
        let members: Vec<Member> = pids.iter().filter_map(|&pid| member(pid)).collect();
        let settled = snap(&members)
            .processes
            .iter()
            .filter(|p| p.comm == "sleep" && main_call(p) == Some("clock_nanosleep"))
            .count();
        (settled == 1000).then_some(members)
    });
    let knows = std::env::var_os("DUMP_SAMPLER_KNOWS").is_some();
    let sampler = |_, _| knows.then_some(Duration::from_secs(30));
    let rounds = 10;
    let mut walls = Vec::with_capacity(rounds);
    let mut split = (Duration::ZERO, Duration::ZERO);
    let cpu_before = process_cpu();
    let mut event_bytes = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let s = snapshot(&members, sampler, Instant::now() + Duration::from_secs(10));
        let read = t.elapsed();
        let lines = render_text(&s, pids[0], TEXT_MAX);
        let mut out = String::new();
        write_event_json(&s, &mut out);
        let all = t.elapsed();
        assert_eq!((s.processes.len(), lines.len()), (1000, 31));
        walls.push(all);
        event_bytes = out.len();
        split.0 += read;
        split.1 += all - read;
    }
    let cpu = process_cpu() - cpu_before;
    walls.sort_unstable();
    let n = rounds as u32;
    println!(
        "dump of 1,000 processes (root: {}, sampler knows idle: {knows}): snapshot+render+event median {:?} min {:?} max {:?}; \
         mean snapshot {:?}, mean render+event {:?}; CPU (user+sys, all threads) per round {:?}; \
         event {event_bytes} bytes",
        root(),
        walls[rounds / 2],
        walls[0],
        walls[rounds - 1],
        split.0 / n,
        split.1 / n,
        cpu / n,
    );
}

/// User + system CPU time of this whole process (the reads run on a thread of their own).
fn process_cpu() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(usage.user_time()) + tv(usage.system_time())
}
