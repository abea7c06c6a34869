//! The dump through the real binary: what a stalled tree was doing, on stderr after the trigger
//! line and before the stop, and in the `dump` event; `--dump-signal`, `--dump-cmd`, and
//! `--heartbeat`. The reading itself (each kind of blocked process) is tested against live
//! processes in src/dump/tests.rs; here each test checks what a user of the binary sees.
//!
//! Every run uses `--stall` as its own synchronisation: the trigger cannot fire before the tree
//! has been quiet for the whole window, so the processes have settled into what they wait in.

mod util;

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{TempDir, run, watchd};

/// A stall guard that fires soon after the tree goes quiet, and says it stopped the child.
const STALL: [&str; 6] = ["--stall", "1s", "--interval", "100ms", "--exit-code-on-stop", "124"];

/// The line of `stderr` that contains `needle`, and its index.
#[track_caller]
fn line_with<'a>(stderr: &'a str, needle: &str) -> (usize, &'a str) {
    stderr
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in\n{stderr}"))
}

fn events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn the_event<'a>(events: &'a [Value], name: &str) -> &'a Value {
    let mut found = events.iter().filter(|e| e["event"] == name);
    let one = found.next().unwrap_or_else(|| panic!("no {name} event in {events:#?}"));
    assert!(found.next().is_none(), "more than one {name} event");
    one
}

/// The dump's process lines: those between the trigger line and the first line after them that
/// is not one. The cgroup's pressure line that closes the picture (with a cgroup) is checked
/// and left out.
fn dump_lines(stderr: &str) -> Vec<&str> {
    let (at, _) = line_with(stderr, "watchd: stall:");
    let lines: Vec<&str> = stderr
        .lines()
        .skip(at + 1)
        .take_while(|l| l.starts_with("watchd: ") && !l.contains("stall:"))
        .collect();
    let pressure = "watchd: pressure of the cgroup (some avg10): cpu ";
    let with_cgroup = util::cgroup_mode().as_deref() == Some("on");
    assert_eq!(lines.iter().any(|l| l.starts_with(pressure)), with_cgroup, "{stderr}");
    lines.into_iter().filter(|l| !l.starts_with(pressure)).collect()
}

#[test]
fn the_picture_of_a_hung_step_comes_between_the_trigger_and_the_stop() {
    // A reader on a pipe nobody writes, a sleeper, a zombie (the subshell is never reaped by
    // the `sleep` its parent became), and a process stopped by SIGSTOP (it stops itself, so
    // there is no race with its exec).
    let script = "sleep 1000 | cat & \
                  sh -c '(exit 3) & exec sleep 1001' & \
                  sh -c 'kill -STOP $$; exit 0' & \
                  wait";
    let r = run(watchd(STALL.into_iter().chain(["--", "sh", "-c", script])));
    r.assert_code(124);
    let (trigger, _) = line_with(&r.stderr, "watchd: stall: no CPU or I/O progress for 1s");
    let (stop, _) = line_with(&r.stderr, "stall: child");
    let lines = dump_lines(&r.stderr);
    assert!(lines.len() >= 6, "too few process lines\n{r}");
    assert!(trigger + lines.len() < stop, "the dump must precede the stop\n{r}");
    let has = |what: &str, pred: &dyn Fn(&str) -> bool| {
        assert!(lines.iter().any(|l| pred(l)), "no line for {what}\n{r}");
    };
    // The main child first, at the root of the tree; its children indented below it.
    assert!(lines[0].contains("  sh -c sleep 1000 | cat & "), "main child first\n{r}");
    assert!(!lines[0].starts_with("watchd:  "), "the main child is not indented\n{r}");
    has("cat on a pipe", &|l| {
        l.starts_with("watchd:   ")
            && l.contains(" S ")
            && l.contains("read(0<pipe:[")
            && l.ends_with("  cat")
    });
    has("the sleeper", &|l| l.contains("clock_nanosleep") && l.ends_with("sleep 1000"));
    has("the zombie", &|l| l.contains(" Z ") && l.ends_with("[sh] <defunct>"));
    has("the stopped process", &|l| l.contains(" T ") && l.contains("kill -STOP"));
    // Every process line has its figures: pid, state, CPU seconds, memory, idle time.
    for l in &lines {
        let words: Vec<&str> = l["watchd: ".len()..].split_whitespace().collect();
        assert!(words[0].parse::<i32>().is_ok(), "no pid: {l}\n{r}");
        assert!(words[1].len() == 1 && "RSDTtZXI".contains(words[1]), "no state: {l}\n{r}");
        let cpu = words[2].strip_suffix('s').map(str::parse::<f64>);
        assert!(matches!(cpu, Some(Ok(_))), "no CPU seconds: {l}\n{r}");
        assert!(words[3].ends_with('B'), "no memory: {l}\n{r}");
        assert_eq!(words[4], "idle", "no idle time: {l}\n{r}");
    }
}

#[test]
fn a_tcp_client_shows_the_server_it_waits_for() {
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    // The kernel completes the handshake from the backlog; nobody ever accepts or answers.
    let client =
        format!("import socket; s = socket.create_connection(('127.0.0.1', {port})); s.recv(1)");
    let r = run(watchd(STALL.into_iter().chain(["--", "python3", "-c", &client])));
    r.assert_code(124);
    let lines = dump_lines(&r.stderr);
    let peer = format!("->127.0.0.1:{port}>");
    assert!(
        lines.iter().any(|l| l.contains("recvfrom(3<tcp 127.0.0.1:") && l.contains(&peer)),
        "no line with the socket's peer {peer}\n{r}"
    );
    drop(server);
}

#[test]
fn a_python_deadlock_folds_its_threads_on_the_futex() {
    let deadlock = "import threading, time
a, b = threading.Lock(), threading.Lock()
def take(x, y):
    with x:
        time.sleep(0.2)
        with y:
            pass
ts = [threading.Thread(target=take, args=p) for p in ((a, b), (b, a))]
for t in ts: t.start()
for t in ts: t.join()";
    let r = run(watchd(STALL.into_iter().chain(["--", "python3", "-c", deadlock])));
    r.assert_code(124);
    let lines = dump_lines(&r.stderr);
    // One process line, then its three threads (main in join, two on the locks) on one line.
    assert!(lines[0].contains("3 threads"), "{r}");
    let folded = lines.iter().find(|l| l.contains('·')).unwrap_or_else(|| panic!("{r}"));
    assert!(folded.contains("3 threads") && folded.contains("futex"), "{folded}\n{r}");
}

#[test]
fn a_big_tree_is_cut_to_thirty_processes() {
    let script = "for i in $(seq 40); do sleep 1000 & done; wait";
    let r = run(watchd(STALL.into_iter().chain(["--", "sh", "-c", script])));
    r.assert_code(124);
    let lines = dump_lines(&r.stderr);
    let last = lines.last().unwrap();
    // 41 processes: the shell and 40 sleepers; 30 shown.
    assert!(last.ends_with("… and 11 more"), "{r}");
    assert_eq!(lines.len(), 31, "{r}");
}

#[test]
fn quiet_keeps_the_picture_off_stderr_but_not_out_of_the_event() {
    let dir = TempDir::new("dump-quiet");
    let ev = dir.path("events.json");
    let mut args = vec!["-q", "--events"];
    let ev_s = ev.display().to_string();
    args.push(&ev_s);
    args.extend(STALL);
    args.extend(["--", "sleep", "1000"]);
    let r = run(watchd(args));
    r.assert_code(124);
    assert_eq!(r.stderr, "", "{r}");
    let all = events(&ev);
    assert_eq!(the_event(&all, "dump")["processes"].as_array().unwrap().len(), 1);
}

#[test]
fn the_dump_event_has_every_process_and_thread_with_every_field() {
    let dir = TempDir::new("dump-event");
    let ev = dir.path("events.json");
    let script = "import threading, time
threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()
time.sleep(1000)";
    // The test holds a lock the command's `flock` waits for: a system call on a file.
    let lock = dir.path("lock");
    let held = std::fs::File::create(&lock).unwrap();
    held.lock().unwrap();
    let mut cmd = watchd(["--events", &ev.display().to_string()]);
    let tree = "python3 -c \"$0\" & exec flock \"$1\" true";
    cmd.args(STALL).args(["--", "sh", "-c", tree, script, &lock.display().to_string()]);
    let r = run(cmd);
    drop(held);
    r.assert_code(124);
    let all = events(&ev);
    let order: Vec<&str> = all.iter().map(|e| e["event"].as_str().unwrap()).collect();
    let at = |name| order.iter().position(|&e| e == name).unwrap_or_else(|| panic!("{order:?}"));
    assert!(at("trigger") < at("dump") && at("dump") < at("stop"), "{order:?}");
    let start = the_event(&all, "start");
    let main = start["pid"].as_i64().unwrap();
    let procs = the_event(&all, "dump")["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 2, "flock and python3: {procs:#?}");
    let fields = [
        "pid",
        "ppid",
        "state",
        "threads",
        "cpu_seconds",
        "rss_bytes",
        "idle_s",
        "wchan",
        "syscall",
        "fd",
        "cmdline",
        "stack",
        "tasks",
    ];
    for p in procs {
        for f in fields {
            assert!(p.get(f).is_some(), "no {f} in {p:#}");
        }
        let tasks = p["tasks"].as_array().unwrap();
        assert_eq!(tasks.len() as u64, p["threads"].as_u64().unwrap(), "{p:#}");
        for t in tasks {
            for f in fields.iter().filter(|&&f| f != "tasks" && f != "cmdline") {
                assert!(t.get(f).is_some(), "no {f} in thread {t:#}");
            }
        }
        // Run as root, the kernel stack is readable.
        if nix_is_root() {
            assert!(p["stack"].as_array().is_some_and(|s| !s.is_empty()), "no stack: {p:#}");
        }
    }
    let python =
        procs.iter().find(|p| p["comm"] == "python3").unwrap_or_else(|| panic!("{procs:#?}"));
    assert_eq!(python["ppid"], main);
    assert_eq!(python["threads"], 2, "{python:#}");
    assert_eq!(python["syscall"], "clock_nanosleep", "{python:#}");
    let flock = procs.iter().find(|p| p["pid"] == main).unwrap();
    assert_eq!(flock["comm"], "flock", "{flock:#}");
    assert_eq!(flock["syscall"], "flock", "{flock:#}");
    assert_eq!(flock["fd"]["kind"], "file", "{flock:#}");
    assert_eq!(flock["fd"]["target"], lock.display().to_string(), "{flock:#}");
    assert!(flock["cmdline"].as_str().unwrap().starts_with("flock "), "{flock:#}");
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

#[test]
fn dump_signal_lets_python_print_its_stack_before_the_stop() {
    let script = "import faulthandler, signal, sys, time
faulthandler.register(signal.SIGUSR1, all_threads=True)
def waits_for_nothing():
    time.sleep(1000)
waits_for_nothing()";
    let mut cmd = watchd(STALL);
    cmd.args(["--dump-signal", "USR1", "--", "python3", "-c", script]);
    let r = run(cmd);
    r.assert_code(124);
    let (trigger, _) = line_with(&r.stderr, "watchd: stall:");
    let (stack, _) = line_with(&r.stderr, "in waits_for_nothing");
    let (stop, _) = line_with(&r.stderr, "stall: child killed by SIGTERM");
    assert!(trigger < stack && stack < stop, "{r}");
    // The stack is printed before the stop signal, and the stop waits for --dump-wait.
    let (_, said) = line_with(&r.stderr, "sending SIGTERM in 2s");
    assert!(said.contains("after the dump"), "{r}");
    assert!(r.took >= Duration::from_secs(3), "the drain started before --dump-wait\n{r}");
}

#[test]
fn dump_cmd_runs_once_for_each_process_main_child_first() {
    let dir = TempDir::new("dump-cmd");
    let ev = dir.path("events.json");
    let mut cmd = watchd(["--events", &ev.display().to_string()]);
    cmd.args(STALL).args([
        "--dump-cmd",
        "echo \"dumping $WATCHD_PID\"",
        "--",
        "sh",
        "-c",
        "sleep 1000 & sleep 1001 & sh -c 'sleep 1002' & wait",
    ]);
    let start = Instant::now();
    let r = run(cmd);
    r.assert_code(124);
    let dumped: Vec<i64> = r
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("dumping "))
        .map(|pid| pid.parse().unwrap())
        .collect();
    let all = events(&ev);
    let main = the_event(&all, "start")["pid"].as_i64().unwrap();
    let tree: HashSet<i64> = the_event(&all, "dump")["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(dumped.first(), Some(&main), "{r}");
    assert_eq!(dumped.len(), tree.len(), "each pid once: {dumped:?}\n{r}");
    assert_eq!(dumped.iter().copied().collect::<HashSet<_>>(), tree, "{r}");
    // Without --dump-signal the drain starts as soon as the commands have ended, not after
    // the whole --dump-wait.
    let (trigger, _) = line_with(&r.stderr, "watchd: stall:");
    let (stop, _) = line_with(&r.stderr, "stall: child killed by SIGTERM");
    assert!(trigger < stop, "{r}");
    assert!(start.elapsed() < Duration::from_secs(10), "{r}");
}

#[test]
fn dump_wait_bounds_the_dump_commands() {
    let mut cmd = watchd(STALL);
    cmd.args([
        "--dump-cmd",
        "sleep 1000",
        "--dump-wait",
        "500ms",
        "--",
        "sh",
        "-c",
        "sleep 1000 & sleep 1001 & wait",
    ]);
    let r = run(cmd);
    r.assert_code(124);
    // The first command is cut off at the wait; the two processes after it are skipped.
    line_with(&r.stderr, "watchd: --dump-cmd: the --dump-wait ran out; skipped 2 processes");
    assert!(r.took < Duration::from_secs(8), "{r}");
}

/// The test itself touches the heartbeat file, from outside the tree, for `for_` and then
/// stops: only the heartbeat can keep the quiet `sleep` alive that long.
fn touch_for(path: std::path::PathBuf, for_: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let end = Instant::now() + for_;
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        while Instant::now() < end {
            file.write_all(b"tick\n").unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

#[test]
fn a_heartbeat_file_that_grows_is_evidence_of_life() {
    let dir = TempDir::new("heartbeat");
    let beat = dir.path("log");
    let toucher = touch_for(beat.clone(), Duration::from_millis(2500));
    let mut cmd = watchd(STALL);
    cmd.args(["--heartbeat", &beat.display().to_string(), "--", "sleep", "1000"]);
    let r = run(cmd);
    toucher.join().unwrap();
    r.assert_code(124).assert_stderr_has("watchd: stall:");
    // Quiet for 1s after the last beat at about 2.5s.
    assert!(r.took >= Duration::from_millis(3300), "stalled while the file grew\n{r}");
}

#[test]
fn heartbeat_from_the_environment_and_a_missing_file_is_no_news() {
    let dir = TempDir::new("heartbeat-env");
    let beat = dir.path("log");
    let missing = dir.path("never-there");
    let toucher = touch_for(beat.clone(), Duration::from_millis(2500));
    let mut cmd = watchd(STALL);
    cmd.env("WATCHD_HEARTBEAT", format!("{}:{}", missing.display(), beat.display()));
    cmd.args(["--", "sleep", "1000"]);
    let r = run(cmd);
    toucher.join().unwrap();
    r.assert_code(124);
    assert!(r.took >= Duration::from_millis(3300), "{r}");
    assert!(!r.stderr.contains("never-there"), "a missing heartbeat is not an error\n{r}");
    // Missing alone: the stall fires as without it.
    let mut cmd = watchd(STALL);
    cmd.args(["--heartbeat", &missing.display().to_string(), "--", "sleep", "1000"]);
    let r = run(cmd);
    r.assert_code(124).assert_took(Duration::from_millis(900), Duration::from_secs(3));
}
