//! The README's copy-paste examples, run as written (the watchd under test stands in for
//! the installed one), so the documentation cannot drift from the behaviour. Where a recipe
//! waits minutes (`--stall 5m`, `WatchdogSec=2min`), only those durations are shortened, and
//! where it names a program that is not here (llama-server, an importer), a stand-in takes its
//! place after `--`; the watchd part always runs as written. Environment variables the
//! recipes do not set (`WATCHD_EVENTS`) are added only to watch what happens.

mod util;

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::*;

fn readme() -> String {
    fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The `## heading` section, its `###` subsections included.
fn section(heading: &str) -> String {
    let text = readme();
    text.split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("no section {heading}"))
        .to_string()
}

/// The fenced blocks of `lang` ("" for a plain fence) in `text`, in order.
fn blocks_in(text: &str, lang: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut open: Option<(&str, String)> = None;
    for line in text.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => open = Some((info, String::new())),
            (Some((info, body)), Some(_)) => {
                if *info == lang {
                    found.push(std::mem::take(body));
                }
                open = None;
            }
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    found
}

/// The first fenced block of `lang` ("" for a plain fence) under the `## heading` section.
fn block(heading: &str, lang: &str) -> String {
    blocks_in(&section(heading), lang)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {lang:?} block under {heading}"))
}

/// The `### sub` subsection (its title starts with `sub`) of the `## heading` section.
fn subsection(heading: &str, sub: &str) -> String {
    let text = section(heading);
    text.split("\n### ")
        .skip(1)
        .find(|s| s.starts_with(sub))
        .unwrap_or_else(|| panic!("no subsection {sub} under {heading}"))
        .to_string()
}

/// The first fenced block of `lang` in the `### sub` subsection of `## heading`.
fn sub_block(heading: &str, sub: &str, lang: &str) -> String {
    blocks_in(&subsection(heading, sub), lang)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {lang:?} block under {heading} / {sub}"))
}

/// The one line of `script` that runs watchd.
fn watchd_line(script: &str) -> String {
    let lines: Vec<&str> = script.lines().filter(|l| l.starts_with("watchd ")).collect();
    assert_eq!(lines.len(), 1, "one watchd line in {script:?}");
    lines[0].to_string()
}

/// `text` with `from` replaced by `to`, which must be there.
#[track_caller]
fn substitute(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is no longer in {text:?}: update this test");
    text.replacen(from, to, 1)
}

/// bash running `script` with the watchd under test first on PATH.
fn bash(script: &str) -> Command {
    let bin_dir = Path::new(WATCHD).parent().unwrap();
    let mut cmd = watchd(Vec::<&str>::new());
    cmd.env("PATH", format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()));
    // Reuse the hermetic environment of `watchd()`, but run bash.
    let mut bash = Command::new("bash");
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => bash.env(key, v),
            None => bash.env_remove(key),
        };
    }
    bash.args(["-c", script]).stdin(Stdio::null());
    bash
}

/// Recipes that serve on 127.0.0.1:8080, as written, take turns.
fn port_8080() -> MutexGuard<'static, ()> {
    static PORT: Mutex<()> = Mutex::new(());
    let guard = PORT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    wait_for("127.0.0.1:8080 to be free", Duration::from_secs(30), || {
        std::net::TcpListener::bind(("127.0.0.1", 8080)).is_ok()
    });
    guard
}

/// The status line of `GET path` on 127.0.0.1:8080, if it answers.
fn get_8080(path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", 8080)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    conn.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).ok()?;
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    answer.lines().next().map(str::to_string)
}

/// The complete JSON lines of an events file so far.
fn events(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// Waits until the events file has what `done` looks for, and returns it.
#[track_caller]
fn wait_events(path: &Path, what: &str, limit: Duration, done: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let evs = events(path);
        if done(&evs) {
            return;
        }
        let names: Vec<&str> = evs.iter().filter_map(|e| e["event"].as_str()).collect();
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}: {names:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: signalling a process this test started (or one of its descendants).
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

/// The parent pid of `pid`, from its stat.
fn ppid_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// The live children of `pid`.
fn children_of(pid: i32) -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| ppid_of(p) == Some(pid) && alive(p))
        .collect()
}

/// A child process started with its output captured, killed if the test ends first.
struct Live {
    child: Option<Child>,
    what: String,
    started: Instant,
    out: PathBuf,
    err: PathBuf,
    _dir: TempDir,
}

impl Live {
    fn start(mut cmd: Command, tag: &str) -> Live {
        let dir = TempDir::new(tag);
        let (out, err) = (dir.path("stdout"), dir.path("stderr"));
        cmd.stdout(fs::File::create(&out).unwrap()).stderr(fs::File::create(&err).unwrap());
        let what = format!("{cmd:?}");
        let child = cmd.spawn().expect("spawn");
        Live { child: Some(child), what, started: Instant::now(), out, err, _dir: dir }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn finish(mut self, limit: Duration) -> Run {
        let mut child = self.child.take().unwrap();
        let status = wait_deadline(&mut child, limit).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} did not end within {limit:?}\n{}", self.what, self.stderr());
        });
        Run {
            what: self.what.clone(),
            status,
            stdout: fs::read_to_string(&self.out).unwrap_or_default(),
            stderr: self.stderr(),
            took: self.started.elapsed(),
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A datagram socket playing systemd's part: it collects what watchd sends to NOTIFY_SOCKET.
struct Systemd {
    path: PathBuf,
    got: Arc<Mutex<Vec<String>>>,
    _dir: TempDir,
}

impl Systemd {
    fn bind(tag: &str) -> Systemd {
        let dir = TempDir::new(tag);
        let path = dir.path("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&got);
        // Ends with the test process; reading is all it does.
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                sink.lock().unwrap().extend(text.lines().map(str::to_string));
            }
        });
        Systemd { path, got, _dir: dir }
    }

    fn lines(&self) -> Vec<String> {
        self.got.lock().unwrap().clone()
    }

    #[track_caller]
    fn wait_for(&self, what: &str, done: impl Fn(&[String]) -> bool) {
        wait_for(what, Duration::from_secs(30), || done(&self.lines()));
    }

    /// Whether `want` appears in order (not necessarily next to each other) in what came.
    fn in_order(&self, want: &[&str]) -> bool {
        let lines = self.lines();
        let mut at = lines.iter();
        want.iter().all(|w| at.any(|l| l == w))
    }
}

/// A line of the dump's stderr picture, reduced to what does not vary between runs and
/// kernels: its depth, the process state, the system call with its descriptor (numbers
/// masked), and the program's name (no path, no version). The wait channel is left out: it is
/// the kernel's function name (`pipe_read` became `anon_pipe_read`).
fn dump_shape(line: &str) -> Option<(usize, String, String, String)> {
    let rest = line.strip_prefix("watchd: ")?;
    let body = rest.trim_start();
    let depth = rest.len() - body.len();
    let mut parts = body.splitn(3, "  ");
    let (head, wait, command) = (parts.next()?, parts.next()?, parts.next()?);
    let mut head = head.split_whitespace();
    head.next()?.parse::<i32>().ok()?;
    let state = head.next()?.to_string();
    let call = wait.split_once(' ').map_or(wait, |(_, call)| call);
    let mut masked = String::new();
    for c in call.chars() {
        if !c.is_ascii_digit() {
            masked.push(c);
        } else if !masked.ends_with('#') {
            masked.push('#');
        }
    }
    let program = command.split_whitespace().next()?.rsplit('/').next()?;
    let program = program.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    Some((depth, state, masked, program.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Try it, In a container, On the command line.

#[test]
fn try_it_example() {
    let script = block("Try it", "sh");
    let line = script
        .lines()
        .find(|l| l.starts_with("cargo build --release && "))
        .expect("the build-and-run line");
    // The build is what the test run already did; the rest runs as written.
    let run_part = line
        .trim_start_matches("cargo build --release && ")
        .replace("./target/release/watchd", WATCHD);
    let r = run(bash(&run_part));
    r.assert_code(0);
    assert_eq!(r.stdout.trim(), "exit status: 124", "{r}");
    r.assert_stderr_has("watchd: stall: no CPU or I/O progress for 2s");
    assert!(script.contains("\n./test.sh\n"), "the test command is ./test.sh");
    let ci = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).unwrap();
    assert!(ci.lines().any(|l| l.trim() == "./test.sh"), ".ci/run runs the README's test command");
}

#[test]
fn command_line_example() {
    let script = block("On the command line", "sh");
    let mut cmd = bash(&script);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"world\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "name? hello, world\n");
}

/// A JSON array of strings after `key` in a Dockerfile line.
fn exec_form(dockerfile: &str, key: &str) -> Vec<String> {
    let line =
        dockerfile.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key}"));
    let json: serde_json::Value = serde_json::from_str(line[key.len()..].trim()).unwrap();
    json.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

/// The variables of a Dockerfile's `ENV KEY="VALUE" \` lines, unquoted as Docker does
/// (double quotes, with `\"` and `\\` escapes inside them).
fn env_instructions(dockerfile: &str) -> Vec<(String, String)> {
    let joined = dockerfile.replace("\\\n", " ");
    let mut vars = Vec::new();
    for line in joined.lines().filter_map(|l| l.strip_prefix("ENV ")) {
        let mut chars = line.chars().peekable();
        loop {
            while chars.peek() == Some(&' ') {
                chars.next();
            }
            let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
            if key.is_empty() {
                break;
            }
            let mut value = String::new();
            let mut quoted = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => quoted = !quoted,
                    '\\' if quoted => value.extend(chars.next()),
                    ' ' if !quoted => break,
                    c => value.push(c),
                }
            }
            vars.push((key.trim().to_string(), value));
        }
    }
    vars
}

/// The demo image's command line (ENTRYPOINT then CMD), with the watchd under test.
fn container_argv() -> Vec<String> {
    let dockerfile = block("In a container", "dockerfile");
    let mut argv = exec_form(&dockerfile, "ENTRYPOINT");
    assert_eq!(argv[0], "/usr/local/bin/watchd");
    argv[0] = WATCHD.to_string();
    argv.extend(exec_form(&dockerfile, "CMD"));
    argv
}

/// `unshare --pid --fork --mount-proc ARGV...`: watchd as PID 1, as in a container, without
/// the test's WATCHD_* variables.
fn as_pid1(argv: &[String]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc"]).args(argv);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WATCHD_") {
            cmd.env_remove(key);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// watchd under `unshare` (its only child), once it is there.
fn pid1_of(unshare: i32) -> i32 {
    let mut found = None;
    wait_for("watchd under unshare", Duration::from_secs(15), || {
        found = children_of(unshare).first().copied();
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn container_example_runs_as_pid1_and_stops_like_docker_stop() {
    let _port = port_8080();
    let mut cmd = as_pid1(&container_argv());
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    wait_for("the server to listen on 127.0.0.1:8080", Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", 8080)).is_ok()
    });
    // docker stop: SIGTERM to PID 1 (watchd), found as unshare's child.
    kill(pid1_of(child.id() as i32), libc::SIGTERM);
    let status = wait_deadline(&mut child, Duration::from_secs(15)).expect("stops");
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGTERM),
        "PID 1 exits 128+N when the server dies of SIGTERM"
    );
}

#[test]
fn container_health_check_stops_a_hung_server_and_starts_it_again() {
    // The Dockerfile's ENV on the demo image, with watchd as PID 1 (as in the container) and
    // the check every 300ms instead of every 30s. The server is frozen with SIGSTOP: each check
    // times out (urlopen's 3s), the third failure fires `unhealthy`, and run 2 serves again.
    let text = subsection("In a container", "Health checks that act");
    let dockerfile = blocks_in(&text, "dockerfile").remove(0);
    assert!(dockerfile.starts_with("FROM watchd-demo\n"), "{dockerfile}");
    let mut vars = env_instructions(&dockerfile);
    let names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "WATCHD_HEALTH_CMD",
            "WATCHD_HEALTH_INTERVAL",
            "WATCHD_START_PERIOD",
            "WATCHD_RESTART",
            "WATCHD_GRACE"
        ]
    );
    assert_eq!(vars[1].1, "30s");
    vars[1].1 = "300ms".to_string();
    let check = &vars[0].1;
    assert!(check.starts_with("python3 -c 'import urllib.request"), "unquoted: {check}");
    let shown = blocks_in(&text, "").remove(0);
    let shown: Vec<&str> = shown.lines().collect();

    let _port = port_8080();
    let dir = TempDir::new("readme-health");
    let events_path = dir.path("events");
    let mut cmd = as_pid1(&container_argv());
    cmd.envs(vars).env("WATCHD_EVENTS", &events_path);
    let live = Live::start(cmd, "readme-health-out");
    let first_ready = |e: &[Value]| !named(e, "ready").is_empty();
    wait_events(&events_path, "run 1 to be ready", Duration::from_secs(30), first_ready);
    assert_eq!(named(&events(&events_path), "ready")[0]["by"], "health");
    let watchd = pid1_of(live.pid());
    let server = children_of(watchd);
    assert_eq!(server.len(), 1, "one server: {server:?}");
    kill(server[0], libc::SIGSTOP);
    let second_ready = |e: &[Value]| named(e, "ready").len() >= 2;
    wait_events(&events_path, "run 2 to be ready", Duration::from_secs(60), second_ready);
    assert_eq!(get_8080("/").as_deref().map(|l| l.contains(" 200 ")), Some(true));
    kill(watchd, libc::SIGTERM);
    let r = live.finish(Duration::from_secs(20));
    r.assert_code(128 + libc::SIGTERM);
    let evs = events(&events_path);
    let trigger = named(&evs, "trigger");
    assert_eq!(trigger.len(), 1, "{r}");
    assert_eq!(trigger[0]["reason"], "unhealthy");
    let restart = named(&evs, "restart");
    assert!(restart.len() == 1 && restart[0]["after"] == "unhealthy", "{r}");
    // The README's lines, but for the check's last line of output (Python's wording) and the
    // dump line (pids, times).
    let unhealthy = shown[0].split(" (last: ").next().unwrap();
    assert_eq!(unhealthy, "watchd: unhealthy: 3 health checks failed in a row");
    r.assert_stderr_has(&format!("{unhealthy} (last: exit status 1: "));
    let stopped = "watchd: unhealthy: child killed by SIGTERM ";
    assert!(shown[2].starts_with(stopped), "{}", shown[2]);
    r.assert_stderr_has(stopped);
    assert_eq!(
        shown[3],
        "watchd: restarting in 1s (restart 1): unhealthy (child killed by SIGTERM)"
    );
    r.assert_stderr_has(shown[3]);
}

// ---------------------------------------------------------------------------------------------
// In CI: the hung step and its dump, the runtimes' stacks, the retry.

#[test]
fn ci_example_shows_the_dump_between_the_trigger_and_the_stop() {
    let script = block("In CI", "sh");
    let dir = TempDir::new("readme-ci");
    let mut cmd = bash(&script);
    cmd.current_dir(&dir.0);
    let r = run(cmd);
    assert_eq!(r.stdout.trim(), "running tests\nexit status: 124", "{r}");
    r.assert_took(Duration::from_secs(3), Duration::from_secs(15));
    let shown = block("In CI", "");
    let shown: Vec<&str> = shown.lines().collect();
    let got: Vec<&str> = r.stderr.lines().collect();
    // The trigger line is exact; the stop line is exact up to how long the child took to die.
    let trigger = got.iter().position(|l| *l == shown[0]);
    let trigger = trigger.unwrap_or_else(|| panic!("no {:?}\n{r}", shown[0]));
    let stop_head = "watchd: stall: child killed by SIGTERM ";
    assert!(shown.last().unwrap().starts_with(stop_head), "the README's last line");
    let stop = got.iter().position(|l| l.starts_with(stop_head));
    let stop = stop.unwrap_or_else(|| panic!("no {stop_head:?}\n{r}"));
    let (want, dumped) = (&shown[1..shown.len() - 1], &got[trigger + 1..stop]);
    assert_eq!(want.len(), 3, "the README shows sh, python and tee");
    assert_eq!(dumped.len(), want.len(), "the dump between the trigger and the stop\n{r}");
    for (want, got) in want.iter().zip(dumped) {
        let want_shape = dump_shape(want).unwrap_or_else(|| panic!("not a dump line: {want}"));
        let got_shape = dump_shape(got).unwrap_or_else(|| panic!("not a dump line: {got}\n{r}"));
        assert_eq!(got_shape, want_shape, "README: {want}\nrun:    {got}\n{r}");
    }
    assert!(dir.path("test.log").exists(), "tee wrote test.log in the step's directory");
}

#[test]
fn ci_dump_signal_example_prints_pythons_stack_before_the_stop() {
    let text = subsection("In CI", "The dump");
    let script = blocks_in(&text, "sh").remove(0);
    let shown = blocks_in(&text, "").remove(0);
    let shown: Vec<&str> = shown.lines().collect();
    let r = run(bash(&script));
    r.assert_code(124).assert_took(Duration::from_secs(4), Duration::from_secs(20));
    let got: Vec<&str> = r.stderr.lines().collect();
    let at = |what: &str, found: Option<usize>| {
        found.unwrap_or_else(|| panic!("no {what} in the run\n{r}"))
    };
    let trigger = at("trigger line", got.iter().position(|l| *l == shown[0]));
    assert!(shown[0].ends_with("sending SIGTERM in 2s (after the dump), SIGKILL in 10s"));
    let dump = at("dump line", got.iter().position(|l| dump_shape(l).is_some()));
    assert_eq!(dump_shape(got[dump]), dump_shape(shown[1]), "{r}");
    let stack = got.iter().position(|l| l.ends_with("(most recent call first):"));
    let stack = at("Python's stack", stack);
    let stop = got.iter().position(|l| l.starts_with("watchd: stall: child killed by SIGTERM "));
    let stop = at("stop line", stop);
    assert!(trigger < dump && dump < stack && stack < stop, "in that order\n{r}");
    assert!(got[stack + 1..stop].iter().any(|l| l.contains(" in wait")), "{r}");
}

/// The retry recipe with `--stall 5m` cut to 1s (and probes to match).
fn retry_recipe() -> String {
    let script = sub_block("In CI", "Retry a stalled step", "sh");
    let line = watchd_line(&script);
    assert!(line.starts_with(
        "watchd --stall 5m --restart on-failure --restart-max 2 --exit-code-on-stop 124 -- "
    ));
    substitute(&script, "--stall 5m", "--stall 1s --interval 100ms")
}

#[test]
fn ci_retry_recipe_passes_on_the_second_run() {
    let dir = TempDir::new("readme-retry");
    let mut cmd = bash(&retry_recipe());
    cmd.current_dir(&dir.0);
    let r = run(cmd);
    r.assert_took(Duration::from_secs(2), Duration::from_secs(30));
    let shown = blocks_in(&subsection("In CI", "Retry a stalled step"), "").remove(0);
    let (stderr, stdout): (Vec<&str>, Vec<&str>) =
        shown.lines().partition(|l| l.starts_with("watchd: "));
    assert_eq!(r.stdout.lines().collect::<Vec<_>>(), stdout, "{r}");
    let restarting = stderr.last().unwrap();
    assert_eq!(
        *restarting,
        "watchd: restarting in 1s (restart 1 of 2): stall (child killed by SIGTERM)"
    );
    r.assert_stderr_has(restarting);
    assert_eq!(r.stderr.matches("watchd: stall: no CPU or I/O progress for 1s").count(), 1);
    assert!(dir.path("attempted").is_dir());
}

#[test]
fn ci_retry_recipe_gives_up_after_two_restarts() {
    // The same flags on a step that stalls every time: the line the README quotes, and 124.
    let recipe = retry_recipe();
    let line = watchd_line(&recipe);
    let flags = line.split(" -- ").next().unwrap();
    let r = run(bash(&format!("{flags} -- sleep 3600")));
    r.assert_code(124).assert_took(Duration::from_secs(5), Duration::from_secs(40));
    let text = subsection("In CI", "Retry a stalled step").replace('\n', " ");
    let quoted = "watchd: giving up after 2 restarts: stall (child killed by SIGTERM)";
    assert!(text.contains(&format!("`{quoted}`")), "the README quotes {quoted:?}");
    r.assert_stderr_has(quoted);
    assert_eq!(r.stderr.matches("watchd: restarting in ").count(), 2, "{r}");
    r.assert_stderr_has("watchd: restarting in 2s (restart 2 of 2): ");
}

// ---------------------------------------------------------------------------------------------
// Servers: the model server, the restarted server, systemd and the notify socket.

#[test]
fn model_server_recipe_is_ready_once_health_answers() {
    // python's http.server stands in for llama-server: it "loads" for a second, then serves
    // the test's directory, where a file named `health` answers GET /health with 200.
    let line = watchd_line(&sub_block("Servers", "A model server", "sh"));
    let (flags, program) = line.split_once(" -- ").unwrap();
    assert!(program.starts_with("llama-server "), "{program}");
    assert_eq!(
        flags,
        "watchd --health-url http://127.0.0.1:8080/health --start-period 10m --ready-timeout 10m"
    );
    let _port = port_8080();
    let dir = TempDir::new("readme-model");
    fs::write(dir.path("health"), "ok\n").unwrap();
    let events_path = dir.path("events");
    let stand_in = "sh -c 'sleep 1; exec python3 -m http.server --bind 127.0.0.1 8080'";
    let mut cmd = bash(&format!("exec {flags} -- {stand_in}"));
    cmd.current_dir(&dir.0).env("WATCHD_EVENTS", &events_path).env("WATCHD_VERBOSE", "1");
    let live = Live::start(cmd, "readme-model-out");
    let ready = |e: &[Value]| !named(e, "ready").is_empty();
    wait_events(&events_path, "the ready event", Duration::from_secs(30), ready);
    let evs = events(&events_path);
    let ready = named(&evs, "ready")[0];
    assert_eq!(ready["by"], "health");
    assert!(ready["after_s"].as_f64().unwrap() >= 1.0, "ready before it listened: {ready}");
    let health = named(&evs, "health");
    assert!(health.len() >= 2 && health.last().unwrap()["ok"] == true, "{health:?}");
    assert!(health[..health.len() - 1].iter().all(|h| h["ok"] == false), "{health:?}");
    assert_eq!(get_8080("/health").as_deref().map(|l| l.contains(" 200 ")), Some(true));
    kill(live.pid(), libc::SIGTERM);
    let r = live.finish(Duration::from_secs(20));
    assert_eq!(r.signal(), Some(libc::SIGTERM), "the server died of the forwarded TERM\n{r}");
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with("watchd: ready after ") && l.ends_with(" (health check)")),
        "{r}"
    );
    assert!(named(&events(&events_path), "trigger").is_empty(), "{r}");
}

#[test]
fn service_recipe_restarts_with_a_doubling_delay_and_ends_on_sigterm() {
    // As written. The server is killed twice from outside: restarts after 1s, then 2s (the
    // runs are shorter than --restart-delay-max); SIGTERM then ends watchd, no restart.
    let text = subsection("Servers", "Keep it running");
    let script = blocks_in(&text, "sh").remove(0);
    let shown = blocks_in(&text, "").remove(0);
    let shown: Vec<&str> = shown.lines().collect();
    let _port = port_8080();
    let dir = TempDir::new("readme-service");
    let events_path = dir.path("events");
    let mut cmd = bash(&format!("exec {}", watchd_line(&script)));
    cmd.current_dir(&dir.0).env("WATCHD_EVENTS", &events_path);
    let live = Live::start(cmd, "readme-service-out");
    for run in 1..=3 {
        let ready = |e: &[Value]| named(e, "ready").len() >= run;
        wait_events(
            &events_path,
            &format!("run {run} to be ready"),
            Duration::from_secs(30),
            ready,
        );
        assert_eq!(named(&events(&events_path), "ready")[run - 1]["by"], "health");
        assert_eq!(get_8080("/").as_deref().map(|l| l.contains(" 200 ")), Some(true));
        if run < 3 {
            let starts = events(&events_path);
            let start = named(&starts, "start")[run - 1];
            assert_eq!(start["run"], run);
            kill(start["pid"].as_i64().unwrap() as i32, libc::SIGKILL);
        }
    }
    kill(live.pid(), libc::SIGTERM);
    let r = live.finish(Duration::from_secs(20));
    assert_eq!(r.signal(), Some(libc::SIGTERM), "the server died of the forwarded TERM\n{r}");
    let evs = events(&events_path);
    let delays: Vec<f64> =
        named(&evs, "restart").iter().map(|e| e["delay_s"].as_f64().unwrap()).collect();
    assert_eq!(delays, [1.0, 2.0], "{r}");
    assert_eq!(named(&evs, "start").len(), 3, "no restart after SIGTERM\n{r}");
    assert_eq!(named(&evs, "exit")[0]["restarts"], 2);
    assert_eq!(shown.len(), 4);
    r.assert_stderr_has(shown[1]).assert_stderr_has(shown[3]);
}

#[test]
fn systemd_unit_pings_while_the_tree_works_and_restarts_a_stall() {
    // The unit's ExecStart with `--stall 2m` and `WatchdogSec=2min` cut to 1s, and a stand-in
    // for the importer: it spawns a process every 50ms (evidence of life) until told to stop,
    // then sleeps. The test is systemd: it binds NOTIFY_SOCKET and reads what watchd sends.
    let unit = sub_block("Servers", "Under systemd", "ini");
    let value = |key: &str| {
        let line = unit.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("{key}"));
        line[key.len()..].to_string()
    };
    assert_eq!(value("Type="), "notify");
    assert_eq!(value("WatchdogSec="), "2min");
    let exec = value("ExecStart=");
    let (flags, program) = exec.split_once(" -- ").unwrap();
    assert_eq!(program, "/usr/local/bin/importer --follow");
    let flags = substitute(flags, "/usr/local/bin/watchd ", &format!("{WATCHD} "));
    let flags = substitute(&flags, "--stall 2m", "--stall 1s --interval 100ms");
    let flags = substitute(&flags, "--restart-delay 5s", "--restart-delay 300ms");
    let dir = TempDir::new("readme-unit");
    let (env_file, stop) = (dir.path("env"), dir.path("stop"));
    let stand_in = format!(
        "echo \"$NOTIFY_SOCKET $WATCHDOG_USEC $WATCHDOG_PID $$\" >> {env}; \
         while [ ! -e {stop} ]; do sleep 0.05; done; exec sleep 1000",
        env = env_file.display(),
        stop = stop.display()
    );
    let systemd = Systemd::bind("readme-unit-systemd");
    let mut cmd = bash(&format!("exec {flags} -- sh -c '{stand_in}'"));
    cmd.env("NOTIFY_SOCKET", &systemd.path).env("WATCHDOG_USEC", "1000000");
    let live = Live::start(cmd, "readme-unit-out");
    systemd.wait_for("READY=1 and two pings", |l| {
        l.iter().any(|m| m == "READY=1") && l.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2
    });
    fs::write(&stop, "").unwrap();
    systemd.wait_for("run 2 to be ready", |l| l.iter().filter(|m| *m == "READY=1").count() >= 2);
    kill(live.pid(), libc::SIGTERM);
    let r = live.finish(Duration::from_secs(20));
    assert_eq!(r.signal(), Some(libc::SIGTERM), "sleep died of the forwarded TERM\n{r}");
    let sequence = [
        "STATUS=starting",
        "READY=1",
        "WATCHDOG=1",
        "STATUS=draining: stall",
        "STATUS=restarting in 300ms",
        "STATUS=starting",
        "READY=1",
        "STOPPING=1",
    ];
    assert!(systemd.in_order(&sequence), "{:?}\n{r}", systemd.lines());
    assert_eq!(systemd.lines().last().map(String::as_str), Some("STOPPING=1"));
    r.assert_stderr_has("watchd: restarting in 300ms (restart 1): stall (child killed by SIGTERM)");
    // What the command sees: watchd's socket, watchd's window, its own pid.
    let env = fs::read_to_string(&env_file).unwrap();
    let first: Vec<&str> = env.lines().next().unwrap().split(' ').collect();
    assert_ne!(Path::new(first[0]), systemd.path.as_path(), "{env}");
    assert!(first[0].ends_with("/notify"), "{env}");
    assert_eq!(first[1], "1000000", "the stall window in µs: {env}");
    assert_eq!(first[2], first[3], "WATCHDOG_PID is the command's own pid: {env}");
}

#[test]
fn notify_recipe_runs_with_systemd_notify() {
    if Command::new("systemd-notify").arg("--version").output().is_err() {
        eprintln!("skipped: no systemd-notify here (Debian package `systemd`)");
        return;
    }
    // As written, under a NOTIFY_SOCKET the test binds (systemd's part).
    let text = subsection("Servers", "The notify socket for any command");
    let script = blocks_in(&text, "sh").remove(0);
    let shown = blocks_in(&text, "").remove(0);
    let dir = TempDir::new("readme-notify");
    let events_path = dir.path("events");
    let systemd = Systemd::bind("readme-notify-systemd");
    let mut cmd = bash(&script);
    cmd.env("NOTIFY_SOCKET", &systemd.path).env("WATCHD_EVENTS", &events_path);
    let r = run(cmd);
    r.assert_code(0);
    // `socket PATH, window N µs, pid P = P`, as the README shows it.
    let shape = |line: &str| -> Option<(String, String, String, String)> {
        let rest = line.strip_prefix("socket ")?;
        let (path, rest) = rest.split_once(", window ")?;
        let (usec, rest) = rest.split_once(" µs, pid ")?;
        let (pid, own) = rest.split_once(" = ")?;
        Some((path.to_string(), usec.to_string(), pid.to_string(), own.to_string()))
    };
    let (_, want_usec, ..) = shape(shown.trim()).expect("the README's output line");
    let (path, usec, pid, own) = shape(r.stdout.trim()).unwrap_or_else(|| panic!("{r}"));
    assert_eq!((usec.as_str(), want_usec.as_str()), ("10000000", "10000000"));
    assert_eq!(pid, own, "WATCHDOG_PID is the command's own pid\n{r}");
    assert!(path.starts_with('/') && Path::new(&path) != systemd.path.as_path(), "{r}");
    let evs = events(&events_path);
    assert_eq!(named(&evs, "ready")[0]["by"], "notify", "{r}");
    let pings = named(&evs, "notify").iter().filter(|e| e["fields"]["WATCHDOG"] == "1").count();
    assert_eq!(pings, 3, "{r}");
    let upstream = ["STATUS=starting", "READY=1", "STATUS=importing", "STOPPING=1"];
    systemd.wait_for("STOPPING=1", |l| l.iter().any(|m| m == "STOPPING=1"));
    assert!(systemd.in_order(&upstream), "{:?}", systemd.lines());
}

// ---------------------------------------------------------------------------------------------
// Options, events and metrics: the README lists what the binary has.

#[test]
fn options_table_lists_every_option_of_help() {
    let help = Command::new(WATCHD).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    let mut in_help: Vec<String> = help
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split(['<', ' ']).find(|w| w.starts_with("--")))
        .map(|w| w.trim_end_matches(',').to_string())
        .filter(|w| w != "--help" && w != "--version")
        .collect();
    in_help.sort();
    in_help.dedup();
    let options = section("Options");
    let mut in_readme: Vec<String> = options
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('`').nth(1))
        .filter_map(|cell| cell.split([' ', ',']).find(|w| w.starts_with("--")))
        .map(str::to_string)
        .collect();
    in_readme.sort();
    assert_eq!(in_readme, in_help, "README's Options table against --help");
}

/// The field names of an events-table cell: the backticked names outside parentheses, split
/// at top-level commas (`signal` or `cmd` gives both).
fn top_level_fields(cell: &str) -> Vec<String> {
    let (mut depth, mut tick, mut name, mut names) = (0, false, String::new(), Vec::new());
    for c in cell.chars() {
        match c {
            '(' if !tick => depth += 1,
            ')' if !tick => depth -= 1,
            '`' if depth == 0 => {
                if tick {
                    names.push(std::mem::take(&mut name));
                }
                tick = !tick;
            }
            c if tick && depth == 0 => name.push(c),
            _ => {}
        }
    }
    names
}

/// The events table: event name → its cell of fields.
fn events_table() -> Vec<(String, String)> {
    section("Events and metrics")
        .lines()
        .filter(|l| l.starts_with("| `"))
        .take_while(|l| !l.starts_with("| `watchd_"))
        .map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            (cells[0].trim_start_matches("| ").trim_matches('`').to_string(), cells[1].to_string())
        })
        .collect()
}

#[test]
fn events_and_metrics_of_a_run_are_the_ones_the_readme_lists() {
    // A run with a health check, a drain that ends in a kill, a dump and one restart.
    let dir = TempDir::new("readme-events");
    let (events_path, metrics_path) = (dir.path("events"), dir.path("metrics"));
    let r = run(watchd([
        "--health-cmd",
        "true",
        "--health-interval",
        "50ms",
        "--restart",
        "on-failure",
        "--restart-max",
        "1",
        "--restart-delay",
        "0",
        "--stall",
        "300ms",
        "--interval",
        "50ms",
        "--grace",
        "200ms",
        "--events",
        events_path.to_str().unwrap(),
        "--metrics-file",
        metrics_path.to_str().unwrap(),
        "sh",
        "-c",
        "trap '' TERM; exec sleep 1000",
    ]));
    assert_eq!(r.signal(), Some(libc::SIGKILL), "sleep ignored TERM and was killed\n{r}");
    let table = events_table();
    let names: Vec<&str> = table.iter().map(|(n, _)| n.as_str()).collect();
    let all = [
        "start", "sample", "signal", "trigger", "dump", "stop", "kill", "reap", "ready", "health",
        "notify", "restart", "exit",
    ];
    assert_eq!(names, all, "the README's events");
    let evs = events(&events_path);
    let mut seen = Vec::new();
    for ev in &evs {
        let name = ev["event"].as_str().unwrap();
        let (_, cell) = table.iter().find(|(n, _)| n == name).expect("a listed event");
        let mut want = top_level_fields(cell);
        want.retain(|f| f != "cmd"); // `signal` or `cmd`: a stop by signal here
        let mut got: Vec<&str> =
            ev.as_object().unwrap().keys().map(String::as_str).filter(|k| *k != "ts").collect();
        got.retain(|k| *k != "event");
        got.sort();
        want.sort();
        assert_eq!(got, want, "fields of {ev}");
        if !seen.contains(&name) {
            seen.push(name);
        }
    }
    for name in ["start", "sample", "trigger", "dump", "stop", "kill", "reap", "ready", "health"] {
        assert!(seen.contains(&name), "no {name} event: {seen:?}\n{r}");
    }
    assert!(seen.contains(&"restart") && seen.contains(&"exit"), "{seen:?}");
    // A dumped process and its threads have the fields the dump row lists in its parentheses.
    let (_, dump_cell) = table.iter().find(|(n, _)| n == "dump").unwrap();
    let inner = &dump_cell[dump_cell.find('(').unwrap() + 1..dump_cell.rfind(')').unwrap()];
    let inner = inner.split_once(':').map_or(inner, |(_, list)| list);
    let mut want = top_level_fields(inner);
    want.sort();
    let dump = named(&evs, "dump")[0];
    let process = &dump["processes"][0];
    let mut got: Vec<&str> = process.as_object().unwrap().keys().map(String::as_str).collect();
    got.sort();
    assert_eq!(got, want, "a dumped process: {process}");
    let task = &process["tasks"][0];
    let mut got: Vec<&str> = task.as_object().unwrap().keys().map(String::as_str).collect();
    got.sort();
    want.retain(|f| f != "tasks");
    assert_eq!(got, want, "a dumped thread: {task}");

    // Every family of the metrics file is named in the README, and every metric the README
    // names is in the file, but for those only a cgroup or NVML gives.
    let metrics = fs::read_to_string(&metrics_path).unwrap();
    let text = section("Events and metrics");
    let families: Vec<&str> =
        metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    for family in &families {
        assert!(text.contains(&format!("`{family}")), "README lacks {family}");
    }
    let conditional =
        ["watchd_pressure_some_ratio", "watchd_gpu_utilization_ratio", "watchd_gpu_memory_bytes"];
    for word in text.split('`').filter(|w| w.starts_with("watchd_")) {
        let name = word.split('{').next().unwrap();
        assert!(
            families.contains(&name) || conditional.contains(&name),
            "README names {name}, which the file lacks:\n{metrics}"
        );
    }
    assert!(metrics.contains("watchd_restarts_total 1\n"), "{metrics}");
    assert!(metrics.contains("watchd_stops_total{reason=\"stall\"} 2\n"), "{metrics}");
}
