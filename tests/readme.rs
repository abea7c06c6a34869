//! The README's copy-paste examples, run as written (the watchd under test stands in for
//! the installed one), so the documentation cannot drift from the behaviour.

mod util;

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use util::*;

fn readme() -> String {
    fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The first fenced block of `lang` ("" for a plain fence) under the `## heading` section.
fn block(heading: &str, lang: &str) -> String {
    let text = readme();
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("no section {heading}"));
    let mut open: Option<(&str, String)> = None;
    for line in section.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => open = Some((info, String::new())),
            (Some((info, body)), Some(_)) => {
                if *info == lang {
                    return std::mem::take(body);
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
    panic!("no {lang:?} block under {heading}")
}

/// bash running `script` with the watchd under test first on PATH.
fn bash(script: &str) -> Command {
    let bin_dir = std::path::Path::new(WATCHD).parent().unwrap();
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
fn ci_example() {
    let script = block("In CI", "sh");
    let r = run(bash(&script));
    assert_eq!(r.stdout.trim(), "running tests\nexit status: 124", "{r}");
    // The README shows what it prints; the first line is exact.
    let shown = block("In CI", "");
    let first = shown.lines().next().unwrap();
    r.assert_stderr_has(first);
    r.assert_took(Duration::from_secs(3), Duration::from_secs(6));
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

#[test]
fn container_example_runs_as_pid1_and_stops_like_docker_stop() {
    let dockerfile = block("In a container", "dockerfile");
    let mut argv = exec_form(&dockerfile, "ENTRYPOINT");
    assert_eq!(argv[0], "/usr/local/bin/watchd");
    argv[0] = WATCHD.to_string();
    argv.extend(exec_form(&dockerfile, "CMD"));
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc"]).args(&argv);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WATCHD_") {
            cmd.env_remove(key);
        }
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    wait_for("the server to listen on 127.0.0.1:8080", Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", 8080)).is_ok()
    });
    // docker stop: SIGTERM to PID 1 (watchd), found as unshare's child.
    let unshare = child.id() as i32;
    let pid1 = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok())
            }) == Some(unshare)
        })
        .expect("watchd under unshare");
    // SAFETY: signalling the watchd this test started.
    unsafe { libc::kill(pid1, libc::SIGTERM) };
    let status = wait_deadline(&mut child, Duration::from_secs(15)).expect("stops");
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGTERM),
        "PID 1 exits 128+N when the server dies of SIGTERM"
    );
}
