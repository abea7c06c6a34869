//! A watchd run that a test talks to while it runs (signals, files, its events read as they
//! are written, its metrics file parsed with prometheus_client), then the whole `Run`; and the
//! readers of JSON-lines events shared by tests/readiness.rs and tests/notify_socket.rs.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::util::{Run, wait_deadline};

/// Python without pyenv's shim: it starts faster, and a child that dropped privileges can
/// still run it.
pub const PYTHON: &str = "/usr/bin/python3";

const PROM_CHECK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/prom_check.py");

/// A running watchd with its stdout and stderr read in the background. Killed (with its main
/// child, through the parent-death signal) if the test fails before `finish`.
pub struct Live {
    child: Option<Child>,
    what: String,
    pub started: Instant,
    out: Option<JoinHandle<String>>,
    err: Option<JoinHandle<String>>,
}

fn read_all(mut from: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

impl Live {
    /// Spawns `cmd` (stdin as the command has it: `watchd()` gives /dev/null).
    pub fn start(mut cmd: Command) -> Live {
        let what = format!("{cmd:?}");
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("spawn watchd");
        let out = read_all(child.stdout.take().unwrap());
        let err = read_all(child.stderr.take().unwrap());
        Live { child: Some(child), what, started, out: Some(out), err: Some(err) }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Sends `sig` to this watchd.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the watchd this test started and has not reaped yet.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0, "kill({}, {sig})", self.pid());
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// Waits for watchd to end; past `limit` it is killed and the test fails with what it
    /// had said so far.
    pub fn finish(mut self, limit: Duration) -> Run {
        let mut child = self.child.take().unwrap();
        let status = wait_deadline(&mut child, limit);
        let status = match status {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = self.err.take().unwrap().join().unwrap();
                panic!(
                    "{} did not finish within {limit:?} (killed)\n--- stderr:\n{stderr}",
                    self.what
                );
            }
        };
        Run {
            what: std::mem::take(&mut self.what),
            status,
            stdout: self.out.take().unwrap().join().unwrap(),
            stderr: self.err.take().unwrap().join().unwrap(),
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

/// The JSON lines of `text` (on stderr the child's own lines may be mixed in). A last line
/// without its newline is still being written and is left out.
pub fn events_of(text: &str) -> Vec<Value> {
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    complete
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The events written to `path` so far (none if it does not exist yet).
pub fn events_in(path: &Path) -> Vec<Value> {
    events_of(&fs::read_to_string(path).unwrap_or_default())
}

/// The events named `name`, in order.
pub fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// Where the first event named `name` is, if any.
pub fn position(events: &[Value], name: &str) -> Option<usize> {
    events.iter().position(|e| e["event"] == name)
}

/// Polls the events file until `done` holds, and returns the events it held then.
#[track_caller]
pub fn wait_events(
    path: &Path,
    what: &str,
    limit: Duration,
    mut done: impl FnMut(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let events = events_in(path);
        if done(&events) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}; events so far:\n{}",
            fs::read_to_string(path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Checks an event's keys against SPEC's list (plus `ts` and `event`).
#[track_caller]
pub fn check_fields(ev: &Value, fields: &[&str]) {
    let obj = ev.as_object().expect("an object");
    let mut want = vec!["ts", "event"];
    want.extend(fields);
    let mut got: Vec<&str> = obj.keys().map(String::as_str).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "fields of {ev}");
}

/// An event's `ts` as a wall-clock time.
pub fn ts(ev: &Value) -> SystemTime {
    humantime::parse_rfc3339(ev["ts"].as_str().expect("ts")).expect("ts is RFC 3339")
}

/// A number field, or a failure that shows the event.
#[track_caller]
pub fn f64_of(ev: &Value, key: &str) -> f64 {
    ev[key].as_f64().unwrap_or_else(|| panic!("{key} is not a number in {ev}"))
}

/// The `reason` of the `exit` event (None when it is null, or when there is no exit event).
pub fn exit_reason(events: &[Value]) -> Option<String> {
    named(events, "exit").last().and_then(|e| e["reason"].as_str().map(str::to_string))
}

/// The samples of a metrics file, parsed by prometheus_client (tests/prom_check.py
/// --strict): `name{labels}` → value. None while the file does not exist; a file that does
/// not parse fails the test.
#[track_caller]
pub fn metrics(path: &Path) -> Option<BTreeMap<String, f64>> {
    if !path.exists() {
        return None;
    }
    let out = Command::new("python3")
        .args([PROM_CHECK, "--strict"])
        .arg(path)
        .output()
        .expect("python3 tests/prom_check.py");
    assert!(
        out.status.success(),
        "prometheus_client rejected {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    Some(
        text.lines()
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
            .collect(),
    )
}

/// A file's contents once it ends with a newline (the writer finished its line).
#[track_caller]
pub fn read_line_file(path: &Path, limit: Duration) -> String {
    crate::util::wait_file(path, limit).trim_end().to_string()
}

/// How many lines a file has (0 when it does not exist).
pub fn line_count(path: &Path) -> usize {
    fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

/// `2.1s`, `350ms`, `0s`: a duration as a `-v` line shows one (the figure is not checked).
pub fn is_duration_text(text: &str) -> bool {
    let number = text.strip_suffix("ms").or_else(|| text.strip_suffix('s'));
    number.is_some_and(|n| !n.is_empty() && n.parse::<f64>().is_ok_and(|v| v >= 0.0))
}
