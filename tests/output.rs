//! What watchd says (issue: observability): stderr levels, JSON-lines events and the
//! Prometheus metrics file, checked on real runs.

mod util;

use std::fs;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use util::*;

const PROM_CHECK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/prom_check.py");

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[test]
fn quiet_by_default_and_never_on_stdout() {
    let r = run(watchd(["sh", "-c", "exit 0"]));
    r.assert_code(0);
    assert!(r.stderr.is_empty() && r.stdout.is_empty(), "a clean run says nothing\n{r}");
    let r = run(watchd([
        "--stall",
        "200ms",
        "--interval",
        "50ms",
        "-v",
        "--events",
        "-",
        "sleep",
        "100",
    ]));
    assert!(r.stdout.is_empty(), "watchd wrote to stdout\n{r}");
    assert!(r.stderr.lines().all(|l| l.starts_with("watchd: ") || l.starts_with('{')), "{r}");
}

#[test]
fn verbose_adds_start_signals_orphans_and_exit() {
    let dir = TempDir::new("verbose");
    let ready = dir.path("ready");
    let script = format!(
        "(sleep 0.01 &) ; trap 'exit 0' USR1; touch {}; while :; do sleep 0.02; done",
        ready.display()
    );
    let mut cmd = watchd(["-v", "sh", "-c", &script]);
    cmd.stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    wait_for("ready", secs(10.0), || ready.exists());
    // SAFETY: signalling the watchd this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for needle in [
        "watchd: started sh -c ",
        "watchd: forwarded SIGUSR1 to the child",
        "watchd: reaped orphan ",
        "watchd: child exited with status 0 after ",
    ] {
        assert!(stderr.contains(needle), "-v lacks {needle:?}:\n{stderr}");
    }
}

#[test]
fn quiet_silences_even_triggers_but_not_usage_errors() {
    let r = run(watchd(["-q", "--stall", "200ms", "--interval", "50ms", "sleep", "100"]));
    assert_eq!(r.signal(), Some(libc::SIGTERM), "{r}");
    assert!(r.stderr.is_empty(), "-q printed something\n{r}");
    run(watchd(["-q", "--stall", "nope", "true"])).assert_code(125).assert_stderr_has("--stall");
    run(watchd(["-q", "no-such-command-watchd"])).assert_code(127).assert_stderr_has("cannot run");
}

/// The JSON lines of `text` (on stderr, the child's own lines are mixed in).
fn events_of(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Checks the keys of an event against the README's table, in order, and returns it.
#[track_caller]
fn check_fields(ev: &Value, fields: &[&str]) {
    let obj = ev.as_object().expect("an object");
    let mut want = vec!["ts", "event"];
    want.extend(fields);
    let mut got: Vec<&str> = obj.keys().map(String::as_str).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "fields of {ev}");
    let ts = obj["ts"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(ts).is_ok(), "ts not RFC 3339: {ts}");
    let b = ts.as_bytes();
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && b[19] == b'.',
        "ts not UTC with milliseconds: {ts}"
    );
}

#[test]
fn events_of_a_whole_drain() {
    let dir = TempDir::new("events");
    let path = dir.path("events.jsonl");
    let script = "(sleep 0.05 &); trap '' TERM; exec sleep 1000";
    let mut cmd = watchd([
        "--stall",
        "300ms",
        "--interval",
        "50ms",
        "--grace",
        "300ms",
        "--exit-code-on-stop",
        "124",
        "--events",
        path.to_str().unwrap(),
        "sh",
        "-c",
        script,
    ]);
    cmd.env("TZ", "Asia/Tokyo");
    let r = run(cmd);
    r.assert_code(124);
    let events = events_of(&fs::read_to_string(&path).unwrap());
    let names: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    for name in ["start", "sample", "trigger", "dump", "stop", "kill", "reap", "exit"] {
        assert!(names.contains(&name), "no {name} event in {names:?}");
    }
    assert_eq!(names.first(), Some(&"start"));
    assert_eq!(names.last(), Some(&"exit"));
    for ev in &events {
        match ev["event"].as_str().unwrap() {
            "start" => {
                check_fields(ev, &["pid", "argv", "run", "cgroup"]);
                assert!(ev["pid"].as_i64().unwrap() > 1);
                assert_eq!(ev["run"], 1);
                assert_eq!(ev["argv"], serde_json::json!(["sh", "-c", script]));
            }
            "sample" => {
                check_fields(
                    ev,
                    &[
                        "cpu_cores",
                        "cpu_seconds",
                        "io_bytes",
                        "rss_bytes",
                        "processes",
                        "since_progress_s",
                        "psi_cpu",
                        "psi_io",
                        "psi_memory",
                        "gpu_util",
                        "gpu_memory_bytes",
                    ],
                );
                assert!(
                    ev["cpu_cores"].is_null()
                        || ev["cpu_cores"].is_f64()
                        || ev["cpu_cores"].is_u64()
                );
                assert!(ev["cpu_seconds"].is_number() && ev["since_progress_s"].is_number());
                assert!(
                    ev["io_bytes"].is_u64() && ev["rss_bytes"].is_u64() && ev["processes"].is_u64()
                );
            }
            "trigger" => {
                check_fields(ev, &["reason", "detail"]);
                assert_eq!(ev["reason"], "stall");
                assert!(
                    ev["detail"].as_str().unwrap().starts_with("no CPU or I/O progress for 300ms")
                );
            }
            "stop" => {
                check_fields(ev, &["signal", "grace_s"]);
                assert_eq!(ev["signal"], "SIGTERM");
                assert_eq!(ev["grace_s"].as_f64(), Some(0.3));
            }
            "kill" => {
                check_fields(ev, &["signal", "processes"]);
                assert_eq!(ev["signal"], "SIGKILL");
                assert!(ev["processes"].as_u64().unwrap() >= 1);
            }
            "reap" => {
                check_fields(ev, &["pid", "status"]);
                assert!(ev["status"].is_string());
            }
            "ready" => {
                check_fields(ev, &["after_s", "by"]);
                assert_eq!(ev["by"], "start", "no health check, no --notify: ready when it runs");
            }
            "dump" => {
                check_fields(ev, &["processes"]);
                let procs = ev["processes"].as_array().expect("an array");
                assert!(!procs.is_empty(), "the tree was alive at the trigger: {ev}");
                for p in procs {
                    for key in ["pid", "ppid", "state", "threads", "cpu_seconds", "rss_bytes"] {
                        assert!(!p[key].is_null(), "{key} in {p}");
                    }
                }
            }
            "exit" => {
                check_fields(
                    ev,
                    &["code", "signal", "reason", "duration_s", "diagnosis", "restarts", "dropped"],
                );
                assert_eq!((&ev["restarts"], &ev["dropped"]), (&Value::from(0), &Value::from(0)));
                assert!(ev["code"].is_null(), "the child died of a signal: {ev}");
                assert_eq!(ev["signal"], "SIGKILL");
                assert_eq!(ev["reason"], "stall");
                assert!(ev["duration_s"].as_f64().unwrap() >= 0.6);
                assert!(ev["diagnosis"].is_null());
            }
            other => panic!("unknown event {other}"),
        }
    }
}

#[test]
fn signal_events_and_events_on_stderr() {
    let dir = TempDir::new("sigev");
    let ready = dir.path("ready");
    let script =
        format!("trap 'exit 3' HUP; touch {}; while :; do sleep 0.02; done", ready.display());
    let mut cmd = watchd(["--events", "-", "--forward-to", "group", "sh", "-c", &script]);
    cmd.stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    wait_for("ready", secs(10.0), || ready.exists());
    // SAFETY: signalling the watchd this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let events = events_of(&String::from_utf8_lossy(&out.stderr));
    let signal = events.iter().find(|e| e["event"] == "signal").expect("a signal event");
    check_fields(signal, &["signal", "to"]);
    assert_eq!((signal["signal"].as_str(), signal["to"].as_str()), (Some("SIGHUP"), Some("group")));
    let exit = events.last().unwrap();
    assert_eq!(
        (exit["event"].as_str(), exit["code"].as_i64(), exit["reason"].is_null()),
        (Some("exit"), Some(3), true)
    );
}

#[test]
fn an_unwritable_events_path_is_a_usage_error_before_the_start() {
    let dir = TempDir::new("badevents");
    let marker = dir.path("started");
    let r = run(watchd([
        "--events",
        "/nonexistent/dir/events",
        "sh",
        "-c",
        &format!("touch {}", marker.display()),
    ]));
    r.assert_code(125).assert_stderr_has("--events");
    assert_eq!(r.stderr.lines().count(), 1, "{r}");
    assert!(!marker.exists(), "the command ran");
}

#[test]
fn metrics_file_parses_with_prometheus_client_throughout_the_run() {
    let dir = TempDir::new("metrics");
    let path = dir.path("watchd.prom");
    let mut child = watchd([
        "--metrics-file",
        path.to_str().unwrap(),
        "--interval",
        "20ms",
        "--stall",
        "1s",
        "--grace",
        "0",
        "sleep",
        "100",
    ])
    .spawn()
    .unwrap();
    wait_for("the metrics file", secs(10.0), || path.exists());
    // Read while it is being rewritten every 20ms: every read parses, whole.
    let mut last = String::new();
    for _ in 0..10 {
        let out = Command::new("python3")
            .args([PROM_CHECK, "--strict", path.to_str().unwrap()])
            .output()
            .unwrap();
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "prometheus_client rejected it: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(&path).unwrap_or_default()
        );
    }
    wait_deadline(&mut child, secs(10.0)).unwrap();
    for name in [
        "watchd_cpu_cores ",
        "watchd_cpu_seconds_total ",
        "watchd_io_bytes_total ",
        "watchd_rss_bytes ",
        "watchd_processes 1",
        "watchd_seconds_since_progress ",
        "watchd_stops_total{reason=\"stall\"} ",
        "watchd_stops_total{reason=\"timeout\"} 0",
        "watchd_stops_total{reason=\"cpu-soft\"} 0",
        "watchd_stops_total{reason=\"cpu-hard\"} 0",
        "watchd_stops_total{reason=\"rss\"} 0",
    ] {
        assert!(last.lines().any(|l| l.starts_with(name)), "no {name:?} in\n{last}");
    }
    // After the stall fired, the last rewrite counts it.
    let out = Command::new("python3").args([PROM_CHECK, path.to_str().unwrap()]).output().unwrap();
    let final_text = String::from_utf8_lossy(&out.stdout);
    assert!(final_text.contains("watchd_stops_total{reason=\"stall\"} 1"), "{final_text}");
    let leftovers: Vec<_> = fs::read_dir(&dir.0)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != "watchd.prom")
        .collect();
    assert!(leftovers.is_empty(), "temp files left behind: {leftovers:?}");
}
