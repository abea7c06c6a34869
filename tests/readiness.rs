//! Readiness and health through the real binary (issue 11): `--health-cmd` and `--health-url`
//! (against tests/fixtures/health_server.py), the start period and its interval, the health
//! timeout and retries, `--ready-timeout`; the `ready`, `health` and `trigger` events, the `-v`
//! line and the metrics; a check's processes never join the tree and hold up nothing else;
//! README's model-server recipe (llama-swap's health check).
//!
//! Where SPEC fixes no wording these tests read the JSON events; the wording assumed
//! elsewhere is said where it is used.

mod live;
mod server;
mod util;

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use live::*;
use serde_json::Value;
use server::Server;
use util::*;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A port nothing listens on (free when asked; a test starts its own server on it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[track_caller]
fn health_events(events: &[Value]) -> Vec<&Value> {
    let health = named(events, "health");
    for ev in &health {
        check_fields(ev, &["ok", "detail", "duration_s", "failures"]);
    }
    health
}

#[track_caller]
fn the_ready_event(events: &[Value]) -> &Value {
    let ready = named(events, "ready");
    assert_eq!(ready.len(), 1, "exactly one ready event: {ready:?}");
    check_fields(ready[0], &["after_s", "by"]);
    ready[0]
}

/// The `failures` of each health event, in order.
fn failures(health: &[&Value]) -> Vec<u64> {
    health.iter().map(|h| h["failures"].as_u64().expect("failures")).collect()
}

/// The `-v` readiness line, `watchd: ready after 2.1s (health check)`: the shape, not the figure.
fn has_ready_line(stderr: &str, by: &str) -> bool {
    stderr.lines().any(|line| {
        line.strip_prefix("watchd: ready after ")
            .and_then(|rest| rest.strip_suffix(&format!(" ({by})")))
            .is_some_and(is_duration_text)
    })
}

#[test]
fn without_a_check_or_notify_the_child_is_ready_as_it_starts() {
    let dir = TempDir::new("ready-start");
    let events = dir.path("events");
    let r = run(watchd(["--events", s(&events), "sh", "-c", "sleep 0.3; exit 3"]));
    r.assert_code(3);
    let evs = events_in(&events);
    let ready = the_ready_event(&evs);
    assert_eq!(ready["by"], "start", "{r}");
    assert!(f64_of(ready, "after_s") < 2.0, "{ready}");
    let at = |name| position(&evs, name).unwrap_or_else(|| panic!("no {name} event\n{r}"));
    assert!(at("start") < at("ready") && at("ready") < at("exit"), "order of {evs:?}");
}

#[test]
fn a_passing_check_makes_the_child_ready_one_interval_after_it_started() {
    let dir = TempDir::new("ready-health");
    let events = dir.path("events");
    let pidfile = dir.path("watchd_pid");
    // `cat` ends at once only if the check's stdin is /dev/null: watchd's own stdin is a pipe
    // this test holds open.
    let check = format!("echo \"$WATCHD_PID\" > {}; cat; echo checked", pidfile.display());
    let mut cmd = watchd([
        "--health-cmd",
        &check,
        "--health-interval",
        "300ms",
        "--health-timeout",
        "3s",
        "--timeout",
        "60s",
        "--events",
        s(&events),
        "-v",
        "sleep",
        "1000",
    ]);
    cmd.stdin(Stdio::piped());
    let live = Live::start(cmd);
    wait_events(&events, "the ready event", secs(30.0), |e| position(e, "ready").is_some());
    live.signal(libc::SIGTERM);
    let r = live.finish(secs(20.0));
    assert_eq!(r.signal(), Some(libc::SIGTERM), "sleep dies of the forwarded TERM\n{r}");

    let evs = events_in(&events);
    let health = health_events(&evs);
    let first = health.first().unwrap_or_else(|| panic!("no health event\n{r}"));
    assert_eq!((&first["ok"], &first["failures"]), (&Value::from(true), &Value::from(0)));
    // The check's output is captured, and its last line shows in the event (helper_run's
    // `exit status 0: checked`); it never reaches watchd's stdout or stderr as it is.
    assert!(first["detail"].as_str().unwrap().contains("checked"), "{first}");
    assert!(f64_of(first, "duration_s") < 3.0, "stdin was not /dev/null: {first}");
    assert!(!r.stdout.contains("checked") && !r.stderr.lines().any(|l| l == "checked"), "{r}");

    let ready = the_ready_event(&evs);
    assert_eq!(ready["by"], "health");
    let after = f64_of(ready, "after_s");
    assert!(
        (0.3..20.0).contains(&after),
        "the first check runs one interval after the start: {after}"
    );
    assert!(position(&evs, "health") < position(&evs, "ready"), "ready follows the pass");
    assert!(has_ready_line(&r.stderr, "health check"), "no -v ready line\n{r}");

    let start = named(&evs, "start")[0];
    let watchd_pid: i64 = fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert_eq!(Some(watchd_pid), start["pid"].as_i64(), "WATCHD_PID is the main child");
}

#[test]
fn in_the_start_period_checks_run_every_start_interval() {
    // The first check comes one --start-interval after the start, not one --health-interval.
    let dir = TempDir::new("start-interval");
    let events = dir.path("events");
    let live = Live::start(watchd([
        "--health-cmd",
        "true",
        "--health-interval",
        "1m",
        "--start-period",
        "5m",
        "--start-interval",
        "100ms",
        "--events",
        s(&events),
        "sleep",
        "1000",
    ]));
    let evs =
        wait_events(&events, "the ready event", secs(40.0), |e| position(e, "ready").is_some());
    live.signal(libc::SIGTERM);
    let r = live.finish(secs(20.0));
    let ready = the_ready_event(&evs);
    assert_eq!(ready["by"], "health");
    let after = f64_of(ready, "after_s");
    assert!((0.1..20.0).contains(&after), "ready after {after}s, not after --start-interval\n{r}");
}

#[test]
fn failures_in_the_start_period_do_not_count_and_the_first_pass_ends_it() {
    let dir = TempDir::new("start-period");
    let events = dir.path("events");
    let (runs, up, passed) = (dir.path("runs"), dir.path("up"), dir.path("passed"));
    let check = format!("echo run >> {}; test -e {} && touch {}", s(&runs), s(&up), s(&passed));
    // The child comes up after three failed checks, and goes down again once a check saw it.
    let script = "until [ -e RUNS ] && [ $(wc -l < RUNS) -ge 3 ]; do sleep 0.02; done; touch UP
        until [ -e PASSED ]; do sleep 0.02; done; rm UP; exec sleep 1000"
        .replace("RUNS", s(&runs))
        .replace("UP", s(&up))
        .replace("PASSED", s(&passed));
    let r = run_within(
        &mut watchd([
            "--health-cmd",
            &check,
            "--start-period",
            "5m",
            "--start-interval",
            "100ms",
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
            "--timeout",
            "40s",
            "--grace",
            "2s",
            "--exit-code-on-stop",
            "124",
            "--events",
            s(&events),
            "sh",
            "-c",
            &script,
        ]),
        secs(60.0),
    );
    r.assert_code(124);
    let evs = events_in(&events);
    let health = health_events(&evs);
    let pass =
        health.iter().position(|h| h["ok"] == true).unwrap_or_else(|| panic!("no pass\n{r}"));
    // With --health-retries 1, any counted failure would have fired: these did not count.
    assert!(pass >= 3, "three failures before the pass: {health:?}");
    let before: Vec<u64> = (1..=pass as u64).collect();
    assert_eq!(failures(&health[..pass]), before, "consecutive failures, counted or not");
    assert!(health[..pass].iter().all(|h| h["ok"] == false));
    // The pass ended the start period (5 minutes had not run out): the next failure counts.
    let after = health.get(pass + 1).unwrap_or_else(|| panic!("no check after the pass\n{r}"));
    assert_eq!((&after["ok"], &after["failures"]), (&Value::from(false), &Value::from(1)));
    let trigger = named(&evs, "trigger");
    assert_eq!(trigger.len(), 1, "{trigger:?}");
    assert_eq!(trigger[0]["reason"], "unhealthy");
    assert_eq!(exit_reason(&evs).as_deref(), Some("unhealthy"));
    assert_eq!(the_ready_event(&evs)["by"], "health");
    let trigger_at = position(&evs, "trigger").unwrap();
    assert!(position(&evs, "ready").unwrap() < trigger_at);
    r.assert_stderr_has("watchd: unhealthy: ");
}

#[test]
fn when_the_start_period_runs_out_failures_count() {
    let dir = TempDir::new("period-out");
    let events = dir.path("events");
    let r = run(watchd([
        "--health-cmd",
        "false",
        "--start-period",
        "1s",
        "--start-interval",
        "100ms",
        "--health-interval",
        "100ms",
        "--health-retries",
        "2",
        "--timeout",
        "40s",
        "--exit-code-on-stop",
        "124",
        "--events",
        s(&events),
        "sleep",
        "1000",
    ]));
    r.assert_code(124);
    assert!(r.took >= secs(1.0), "unhealthy before the start period ran out\n{r}");
    let evs = events_in(&events);
    let trigger_at = position(&evs, "trigger").unwrap_or_else(|| panic!("no trigger\n{r}"));
    assert_eq!(evs[trigger_at]["reason"], "unhealthy");
    let health = health_events(&evs[..trigger_at]);
    let n = health.len() as u64;
    // `failures` counts every consecutive failure; more than --health-retries of them came
    // before the trigger because those in the period did not count. (Whether the trigger
    // line then says "2" or "n" health checks failed in a row is left open.)
    assert!(n >= 3, "failures in the period did not count, so more than 2 came: {health:?}");
    assert_eq!(failures(&health), (1..=n).collect::<Vec<_>>());
    assert_eq!(exit_reason(&evs).as_deref(), Some("unhealthy"));
}

#[test]
fn consecutive_failures_fire_unhealthy_with_the_last_result() {
    let server = Server::start();
    let url = server.url("/fail");
    let dir = TempDir::new("retries");
    let (events, prom) = (dir.path("events"), dir.path("watchd.prom"));
    let r = run(watchd([
        "--health-url",
        &url,
        "--health-interval",
        "100ms",
        "--health-retries",
        "3",
        "--interval",
        "100ms",
        "--timeout",
        "40s",
        "--grace",
        "2s",
        "--exit-code-on-stop",
        "124",
        "--events",
        s(&events),
        "--metrics-file",
        s(&prom),
        "sleep",
        "1000",
    ]));
    r.assert_code(124);
    r.assert_stderr_has(&format!(
        "watchd: unhealthy: 3 health checks failed in a row (last: HTTP 503 from {url})"
    ));
    let evs = events_in(&events);
    let trigger_at = position(&evs, "trigger").unwrap_or_else(|| panic!("no trigger\n{r}"));
    let trigger = &evs[trigger_at];
    assert_eq!(trigger["reason"], "unhealthy");
    let detail = trigger["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("3 health checks failed in a row (last: HTTP 503 from "),
        "{detail}"
    );
    // The trigger's line above says it was the third; the order of the third check's event
    // and the trigger is left open.
    let health = health_events(&evs);
    assert!(health.len() >= 3, "{r}");
    assert_eq!(failures(&health[..3]), [1, 2, 3]);
    for h in &health[..3] {
        assert_eq!(h["ok"], false);
        assert_eq!(h["detail"].as_str(), Some(format!("HTTP 503 from {url}").as_str()));
        assert!((0.0..5.0).contains(&f64_of(h, "duration_s")), "{h}");
    }
    assert!(named(&evs, "ready").is_empty(), "never ready");
    assert_eq!(exit_reason(&evs).as_deref(), Some("unhealthy"));
    let requests = server.requests();
    assert!(requests.iter().filter(|r| *r == "GET /fail").count() >= 3, "{requests:?}");
    let m = metrics(&prom).expect("a metrics file");
    assert_eq!(m.get("watchd_stops_total{reason=\"unhealthy\"}"), Some(&1.0), "{m:?}");
    assert_eq!(m.get("watchd_health_failures_total"), Some(&3.0), "{m:?}");
    assert_eq!((m.get("watchd_ready"), m.get("watchd_healthy")), (Some(&0.0), Some(&0.0)));
}

#[test]
fn a_pass_resets_the_count_of_consecutive_failures() {
    let dir = TempDir::new("reset");
    let (events, count) = (dir.path("events"), dir.path("count"));
    // Every third check passes: never three failures in a row.
    let check =
        "n=$(($(cat COUNT 2>/dev/null || echo 0) + 1)); echo $n > COUNT; [ $((n % 3)) -eq 0 ]"
            .replace("COUNT", s(&count));
    let live = Live::start(watchd([
        "--health-cmd",
        &check,
        "--health-interval",
        "100ms",
        "--health-retries",
        "3",
        "--timeout",
        "60s",
        "--events",
        s(&events),
        "sleep",
        "1000",
    ]));
    wait_events(&events, "seven health checks", secs(40.0), |e| named(e, "health").len() >= 7);
    live.signal(libc::SIGTERM);
    let r = live.finish(secs(20.0));
    assert_eq!(r.signal(), Some(libc::SIGTERM), "{r}");
    let evs = events_in(&events);
    let health = health_events(&evs);
    for (i, h) in health.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(h["ok"], n.is_multiple_of(3), "check {n}: {h}");
        assert_eq!(h["failures"].as_u64(), Some(n % 3), "check {n}: {h}");
    }
    assert!(named(&evs, "trigger").is_empty(), "no trigger\n{r}");
}

#[test]
fn ready_timeout_fires_not_ready_when_no_check_passes_in_time() {
    let dir = TempDir::new("not-ready");
    let events = dir.path("events");
    let r = run(watchd([
        "--health-cmd",
        "false",
        "--health-interval",
        "100ms",
        "--health-retries",
        "1000",
        "--ready-timeout",
        "1s",
        "--timeout",
        "20s",
        "--exit-code-on-stop",
        "124",
        "--events",
        s(&events),
        "sleep",
        "1000",
    ]));
    r.assert_code(124).assert_stderr_has("watchd: not-ready: ").assert_took(secs(1.0), secs(10.0));
    let evs = events_in(&events);
    let trigger = named(&evs, "trigger");
    assert_eq!(trigger.len(), 1, "{r}");
    assert_eq!(trigger[0]["reason"], "not-ready");
    assert_eq!(exit_reason(&evs).as_deref(), Some("not-ready"));
    assert!(named(&evs, "ready").is_empty());
    assert!(!health_events(&evs).is_empty(), "the checks ran\n{r}");
}

#[test]
fn ready_timeout_is_met_by_a_passing_check_or_by_the_start() {
    let dir = TempDir::new("ready-in-time");
    let (by_health, by_start) = (dir.path("health"), dir.path("start"));
    let health = Live::start(watchd([
        "--health-cmd",
        "true",
        "--health-interval",
        "100ms",
        "--ready-timeout",
        "1.5s",
        "--timeout",
        "3s",
        "--exit-code-on-stop",
        "124",
        "--events",
        s(&by_health),
        "sleep",
        "1000",
    ]));
    // Nothing to wait for: ready as it starts, so --ready-timeout never fires.
    let start = Live::start(watchd([
        "--ready-timeout",
        "300ms",
        "--timeout",
        "1.5s",
        "--exit-code-on-stop",
        "124",
        "--events",
        s(&by_start),
        "sleep",
        "1000",
    ]));
    for (live, events, by) in [(health, &by_health, "health"), (start, &by_start, "start")] {
        let r = live.finish(secs(30.0));
        r.assert_code(124).assert_stderr_has("watchd: timeout: ");
        let evs = events_in(events);
        assert_eq!(exit_reason(&evs).as_deref(), Some("timeout"), "{r}");
        assert_eq!(the_ready_event(&evs)["by"], by, "{r}");
    }
}

#[test]
fn a_hanging_check_is_killed_with_its_group_at_the_health_timeout() {
    let dir = TempDir::new("hung-check");
    let (events, runs) = (dir.path("events"), dir.path("runs"));
    let tag = unique_tag("hung-check");
    // Only the check's processes carry the tag: a plain orphan, a setsid daemon, and the
    // check itself hanging.
    let check = format!(
        "export WATCHD_TEST_TAG='{tag}'; echo run >> {}; sleep 1000 & (setsid sleep 1000 &); sleep 1000",
        s(&runs)
    );
    let live = Live::start(watchd([
        "--health-cmd",
        &check,
        "--health-timeout",
        "300ms",
        "--health-interval",
        "1s",
        "--health-retries",
        "2",
        "--timeout",
        "40s",
        "--exit-code-on-stop",
        "124",
        "--events",
        s(&events),
        "sleep",
        "1000",
    ]));
    wait_events(&events, "the first check's end", secs(20.0), |e| !named(e, "health").is_empty());
    // Between the two checks: the first one's whole group, and its daemon, are gone.
    wait_for("the first check's processes to go", secs(5.0), || processes_tagged(&tag).is_empty());
    let r = live.finish(secs(30.0));
    r.assert_code(124);
    let evs = events_in(&events);
    let health = health_events(&evs);
    assert_eq!(health.len(), 2, "{r}");
    for h in &health {
        assert_eq!(h["ok"], false);
        let took = f64_of(h, "duration_s");
        assert!((0.3..5.0).contains(&took), "ended by --health-timeout: {h}");
        // helper_run's wording: `timed out after 300ms`.
        assert!(h["detail"].as_str().unwrap().contains("timed out"), "{h}");
    }
    assert_eq!(line_count(&runs), 2, "each check ran once");
    assert_eq!(exit_reason(&evs).as_deref(), Some("unhealthy"));
    wait_for("no check process left", secs(5.0), || processes_tagged(&tag).is_empty());
}

#[test]
fn a_checks_processes_and_orphans_never_join_the_tree() {
    let dir = TempDir::new("check-orphans");
    let (events, runs) = (dir.path("events"), dir.path("runs"));
    let tag = unique_tag("check-orphans");
    // One check (the pass ends the start period; the next is an hour away) that lasts 0.5s,
    // so that several probes see it running, and leaves an orphan and a setsid daemon.
    let check = format!(
        "export WATCHD_TEST_TAG='{tag}'; sleep 1000 & (setsid sleep 1000 &); echo run >> {}; sleep 0.5",
        s(&runs)
    );
    let live = Live::start(watchd([
        "--health-cmd",
        &check,
        "--start-period",
        "5m",
        "--start-interval",
        "100ms",
        "--health-interval",
        "1h",
        "--health-timeout",
        "20s",
        "--interval",
        "50ms",
        "--events",
        s(&events),
        "-v",
        "sleep",
        "1000",
    ]));
    let evs =
        wait_events(&events, "the check's end", secs(30.0), |e| !named(e, "health").is_empty());
    let samples_then = named(&evs, "sample").len();
    wait_for("the check's orphans to go", secs(5.0), || processes_tagged(&tag).is_empty());
    wait_events(&events, "five more samples", secs(20.0), |e| {
        named(e, "sample").len() >= samples_then + 5
    });
    live.signal(libc::SIGTERM);
    let r = live.finish(secs(20.0));
    assert_eq!(r.signal(), Some(libc::SIGTERM), "{r}");
    let evs = events_in(&events);
    assert_eq!(health_events(&evs)[0]["ok"], true, "{r}");
    assert_eq!(line_count(&runs), 1, "one check");
    let samples = named(&evs, "sample");
    assert!(samples.len() >= 5, "{r}");
    for sample in samples {
        assert_eq!(sample["processes"], 1, "only `sleep` is the tree: {sample}");
    }
    // The check's middle is watchd's own child, not an orphan; and the check's orphans were
    // never adopted by watchd.
    assert!(!r.stderr.contains("reaped orphan"), "{r}");
    assert!(processes_tagged(&tag).is_empty());
}

#[test]
fn a_passing_check_is_not_evidence_of_life() {
    let dir = TempDir::new("check-not-life");
    let (events, runs) = (dir.path("events"), dir.path("runs"));
    // Each check burns some CPU and starts a process: neither is the tree's.
    let check = format!(
        "echo run >> {}; i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done; /bin/true",
        s(&runs)
    );
    let r = run(watchd([
        "--health-cmd",
        &check,
        "--health-interval",
        "100ms",
        "--stall",
        "1.5s",
        "--interval",
        "100ms",
        "--timeout",
        "40s",
        "--exit-code-on-stop",
        "124",
        "--events",
        s(&events),
        "sleep",
        "1000",
    ]));
    r.assert_code(124).assert_stderr_has("watchd: stall: ").assert_took(secs(1.5), secs(15.0));
    let evs = events_in(&events);
    assert_eq!(exit_reason(&evs).as_deref(), Some("stall"), "{r}");
    let trigger_at = position(&evs, "trigger").unwrap();
    let passes = health_events(&evs[..trigger_at]).iter().filter(|h| h["ok"] == true).count();
    assert!(passes >= 2, "the checks passed while the tree idled\n{r}");
    assert!(line_count(&runs) >= 2);
}

#[test]
fn the_stall_clock_runs_from_the_start_not_from_readiness() {
    let dir = TempDir::new("stall-before-ready");
    let events = dir.path("events");
    let r = run(watchd([
        "--health-cmd",
        "false",
        "--start-period",
        "5m",
        "--start-interval",
        "100ms",
        "--health-retries",
        "1000",
        "--stall",
        "1s",
        "--interval",
        "100ms",
        "--timeout",
        "40s",
        "--exit-code-on-stop",
        "124",
        "--events",
        s(&events),
        "sleep",
        "1000",
    ]));
    r.assert_code(124).assert_took(secs(1.0), secs(15.0));
    let evs = events_in(&events);
    assert_eq!(exit_reason(&evs).as_deref(), Some("stall"), "{r}");
    assert!(named(&evs, "ready").is_empty());
    assert!(!health_events(&evs).is_empty(), "the checks ran\n{r}");
}

#[test]
fn a_hanging_check_does_not_hold_up_the_timeout() {
    let dir = TempDir::new("hang-timeout");
    let (events, runs) = (dir.path("events"), dir.path("runs"));
    let tag = unique_tag("hang-timeout");
    let check = format!(
        "export WATCHD_TEST_TAG='{tag}'; echo run >> {}; sleep 1000 & exec sleep 1000",
        s(&runs)
    );
    let r = run(watchd([
        "--health-cmd",
        &check,
        "--health-timeout",
        "1m",
        "--health-interval",
        "100ms",
        "--timeout",
        "1.5s",
        "--grace",
        "1s",
        "--exit-code-on-stop",
        "124",
        "--events",
        s(&events),
        "sleep",
        "1000",
    ]));
    r.assert_code(124).assert_stderr_has("watchd: timeout: ").assert_took(secs(1.5), secs(5.0));
    assert_eq!(exit_reason(&events_in(&events)).as_deref(), Some("timeout"));
    assert_eq!(line_count(&runs), 1, "one check started, and hung\n{r}");
    // watchd started the check: it does not outlive watchd (SPEC is silent; a user expects it).
    wait_for("the hung check to go", secs(5.0), || processes_tagged(&tag).is_empty());
}

#[test]
fn signals_and_reaping_go_on_while_a_check_forks_and_floods() {
    let dir = TempDir::new("check-flood");
    let (flooding, ready, orphan) = (dir.path("flooding"), dir.path("ready"), dir.path("orphan"));
    let tag = unique_tag("check-flood");
    let check = format!(
        "export WATCHD_TEST_TAG='{tag}'; sleep 1000 & sleep 1000 & touch {}; exec yes checking",
        s(&flooding)
    );
    // The child leaves an orphan once the check floods, and ends with 3 on SIGUSR1.
    let script = "trap 'exit 3' USR1; until [ -e FLOODING ]; do sleep 0.02; done
        (sleep 0.2 & echo $! > ORPHAN.tmp; mv ORPHAN.tmp ORPHAN); touch READY
        while :; do sleep 0.05; done"
        .replace("FLOODING", s(&flooding))
        .replace("ORPHAN", s(&orphan))
        .replace("READY", s(&ready));
    let live = Live::start(watchd([
        "--health-cmd",
        &check,
        "--health-timeout",
        "1m",
        "--health-interval",
        "100ms",
        "--timeout",
        "60s",
        "-v",
        "sh",
        "-c",
        &script,
    ]));
    wait_for("the child's orphan", secs(30.0), || ready.exists());
    let orphan_pid = pids_in(&fs::read_to_string(&orphan).unwrap())[0];
    let proc_dir = format!("/proc/{orphan_pid}");
    wait_for("the orphan to be reaped", secs(10.0), || !Path::new(&proc_dir).exists());
    let signalled = std::time::Instant::now();
    live.signal(libc::SIGUSR1);
    let r = live.finish(secs(30.0));
    r.assert_code(3);
    assert!(signalled.elapsed() < secs(5.0), "forwarding waited on the check\n{r}");
    r.assert_stderr_has("watchd: forwarded SIGUSR1 to the child");
    r.assert_stderr_has(&format!("watchd: reaped orphan {orphan_pid} "));
    assert!(!r.stdout.contains("checking"), "the check's output is captured\n{r}");
    wait_for("the flooding check to go", secs(5.0), || processes_tagged(&tag).is_empty());
}

#[test]
fn a_redirect_passes_and_is_not_followed() {
    let server = Server::start();
    let url = server.url("/redirect");
    let dir = TempDir::new("redirect");
    let events = dir.path("events");
    let live = Live::start(watchd([
        "--health-url",
        &url,
        "--health-interval",
        "100ms",
        "--timeout",
        "60s",
        "--events",
        s(&events),
        "sleep",
        "1000",
    ]));
    // Followed, the redirect would have ended at /fail's 503: not ready.
    let evs =
        wait_events(&events, "the ready event", secs(30.0), |e| position(e, "ready").is_some());
    live.signal(libc::SIGTERM);
    let r = live.finish(secs(20.0));
    assert_eq!(the_ready_event(&evs)["by"], "health", "{r}");
    let first = health_events(&evs)[0];
    assert_eq!(first["ok"], true);
    assert_eq!(first["detail"].as_str(), Some(format!("HTTP 302 from {url}").as_str()));
    let requests = server.requests();
    assert!(!requests.is_empty() && requests.iter().all(|r| r == "GET /redirect"), "{requests:?}");
}

#[test]
fn a_hung_request_and_a_closed_connection_fail() {
    let server = Server::start();
    let dir = TempDir::new("url-fails");
    let runs: Vec<(String, std::path::PathBuf, Live)> = ["/hang", "/close"]
        .into_iter()
        .map(|path| {
            let url = server.url(path);
            let events = dir.path(&path[1..]);
            let live = Live::start(watchd([
                "--health-url",
                &url,
                "--health-timeout",
                "300ms",
                "--health-interval",
                "100ms",
                "--health-retries",
                "1",
                "--timeout",
                "40s",
                "--exit-code-on-stop",
                "124",
                "--events",
                s(&events),
                "sleep",
                "1000",
            ]));
            (url, events, live)
        })
        .collect();
    for (url, events, live) in runs {
        let r = live.finish(secs(60.0));
        r.assert_code(124);
        let evs = events_in(&events);
        assert_eq!(exit_reason(&evs).as_deref(), Some("unhealthy"), "{url}\n{r}");
        let check = health_events(&evs)[0];
        assert_eq!(check["ok"], false, "{url}: {check}");
        if url.ends_with("/hang") {
            let took = f64_of(check, "duration_s");
            assert!((0.3..5.0).contains(&took), "ended by --health-timeout: {check}");
        }
    }
}

#[test]
fn a_host_name_is_resolved_at_start() {
    let server = Server::start();
    let url = format!("http://localhost:{}/ok", server.port);
    let dir = TempDir::new("localhost");
    let events = dir.path("events");
    let live = Live::start(watchd([
        "--health-url",
        &url,
        "--health-interval",
        "100ms",
        "--timeout",
        "60s",
        "--events",
        s(&events),
        "sleep",
        "1000",
    ]));
    let evs =
        wait_events(&events, "the ready event", secs(30.0), |e| position(e, "ready").is_some());
    live.signal(libc::SIGTERM);
    live.finish(secs(20.0));
    assert_eq!(the_ready_event(&evs)["by"], "health");
    assert_eq!(
        health_events(&evs)[0]["detail"].as_str(),
        Some(format!("HTTP 200 from {url}").as_str())
    );
}

#[test]
fn bad_health_options_are_usage_errors_before_the_start() {
    let dir = TempDir::new("health-usage");
    let marker = dir.path("started");
    let command = ["sh", "-c", &format!("touch {}", s(&marker))].map(String::from);
    let cases: [(&[&str], &[&str]); 7] = [
        (&["--health-url", "https://127.0.0.1:1/"], &["--health-url", "https://127.0.0.1:1/"]),
        (
            &["--health-url", "http://no-such-host.invalid/"],
            &["--health-url", "no-such-host.invalid"],
        ),
        (
            &["--health-cmd", "true", "--health-url", "http://127.0.0.1:1/"],
            &["--health-cmd", "--health-url"],
        ),
        (
            &["--health-cmd", "true", "--health-interval", "0"],
            &["invalid value", "--health-interval"],
        ),
        (
            &["--health-cmd", "true", "--start-interval", "0"],
            &["invalid value", "--start-interval"],
        ),
        (
            &["--health-cmd", "true", "--health-timeout", "0"],
            &["invalid value", "--health-timeout"],
        ),
        (&["--health-url", "ftp://127.0.0.1/"], &["--health-url", "ftp://127.0.0.1/"]),
    ];
    for (args, needles) in cases {
        let r = run(watchd(args.iter().copied().map(String::from).chain(command.clone())));
        r.assert_code(125);
        assert_eq!(r.stderr.lines().count(), 1, "one line\n{r}");
        for needle in needles {
            r.assert_stderr_has(needle);
        }
        assert!(!marker.exists(), "the command ran\n{r}");
    }
    // The same through the environment.
    let mut cmd = watchd(command.clone());
    cmd.env("WATCHD_HEALTH_URL", "https://127.0.0.1:1/");
    let r = run(cmd);
    r.assert_code(125).assert_stderr_has("https");
    assert!(!marker.exists(), "the command ran\n{r}");
}

#[test]
fn metrics_show_readiness_health_and_failures() {
    let dir = TempDir::new("ready-metrics");
    let (prom, count) = (dir.path("watchd.prom"), dir.path("count"));
    // Checks 1 and 2 fail, 3 passes, every later one fails. A second apart, so that the state
    // between them lasts long enough to be read with prometheus_client.
    let check = "n=$(($(cat COUNT 2>/dev/null || echo 0) + 1)); echo $n > COUNT; [ $n -eq 3 ]"
        .replace("COUNT", s(&count));
    let live = Live::start(watchd([
        "--health-cmd",
        &check,
        "--health-interval",
        "1s",
        "--health-retries",
        "1000",
        "--interval",
        "20ms",
        "--metrics-file",
        s(&prom),
        "--timeout",
        "90s",
        "sleep",
        "1000",
    ]));
    let mut seen = Vec::new();
    wait_for("ready, then unhealthy, in the metrics", secs(40.0), || {
        let Some(m) = metrics(&prom) else { return false };
        seen.push(m.clone());
        m.get("watchd_ready") == Some(&1.0)
            && m.get("watchd_healthy") == Some(&0.0)
            && m.get("watchd_health_failures_total").is_some_and(|&f| f >= 3.0)
    });
    live.signal(libc::SIGTERM);
    let r = live.finish(secs(20.0));
    assert_eq!(r.signal(), Some(libc::SIGTERM), "{r}");
    let get = |m: &std::collections::BTreeMap<String, f64>, name: &str| {
        m.get(name).copied().unwrap_or_else(|| panic!("no {name} in {m:?}"))
    };
    // watchd_healthy says what the last check said: only once one has ended.
    let checked: Vec<_> = seen
        .iter()
        .filter(|m| get(m, "watchd_health_failures_total") >= 1.0 || get(m, "watchd_ready") == 1.0)
        .collect();
    for m in &checked {
        get(m, "watchd_healthy");
    }
    assert!(
        checked.iter().any(|m| get(m, "watchd_health_failures_total") >= 1.0
            && get(m, "watchd_ready") == 0.0
            && get(m, "watchd_healthy") == 0.0),
        "before the pass: failures counted, not ready, not healthy: {seen:?}"
    );
    for pair in seen.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let total = |m| get(m, "watchd_health_failures_total");
        assert!(total(b) >= total(a), "{pair:?}");
        assert!(get(b, "watchd_ready") >= get(a, "watchd_ready"), "ready once per run: {pair:?}");
    }
}

#[test]
fn recipe_a_model_server_that_becomes_healthy_after_loading() {
    // README's llama-swap recipe, with python's http.server standing in for llama-server: it
    // listens only after "loading" for a second; watchd says it is ready then, and a
    // docker-stop-like SIGTERM ends it.
    let dir = TempDir::new("recipe-model");
    let events = dir.path("events");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let server = format!("sleep 1; exec {PYTHON} -m http.server --bind 127.0.0.1 {port}");
    let mut cmd = watchd([
        "--health-url",
        &url,
        "--start-period",
        "10m",
        "--start-interval",
        "100ms",
        "--health-interval",
        "10s",
        "--ready-timeout",
        "60s",
        "--grace",
        "5s",
        "-v",
        "--events",
        s(&events),
        "sh",
        "-c",
        &server,
    ]);
    cmd.current_dir(&dir.0);
    let live = Live::start(cmd);
    let evs =
        wait_events(&events, "the ready event", secs(40.0), |e| position(e, "ready").is_some());
    live.signal(libc::SIGTERM);
    let r = live.finish(secs(20.0));
    assert_eq!(r.signal(), Some(libc::SIGTERM), "the server dies of TERM, mirrored\n{r}");
    let ready = the_ready_event(&evs);
    assert_eq!(ready["by"], "health");
    assert!(f64_of(ready, "after_s") >= 1.0, "ready before the server listened: {ready}");
    let health = health_events(&evs);
    let (last, loading) = health.split_last().unwrap();
    assert!(!loading.is_empty(), "checks failed while it loaded: {health:?}");
    assert!(loading.iter().all(|h| h["ok"] == false) && last["ok"] == true, "{health:?}");
    assert!(named(&evs, "trigger").is_empty(), "{r}");
    assert!(has_ready_line(&r.stderr, "health check"), "no -v ready line\n{r}");
}

#[test]
fn recipe_a_model_server_that_never_loads_is_stopped_at_the_ready_timeout() {
    let dir = TempDir::new("recipe-stuck");
    let events = dir.path("events");
    let url = format!("http://127.0.0.1:{}/", free_port());
    let r = run(watchd([
        "--health-url",
        &url,
        "--start-period",
        "10m",
        "--start-interval",
        "100ms",
        "--ready-timeout",
        "1.5s",
        "--timeout",
        "30s",
        "--grace",
        "2s",
        "--exit-code-on-stop",
        "124",
        "--events",
        s(&events),
        "sleep",
        "1000",
    ]));
    r.assert_code(124).assert_stderr_has("watchd: not-ready: ").assert_took(secs(1.5), secs(10.0));
    let evs = events_in(&events);
    assert_eq!(exit_reason(&evs).as_deref(), Some("not-ready"), "{r}");
    let health = health_events(&evs);
    assert!(!health.is_empty(), "{r}");
    // health.rs's wording: `connection refused by URL`.
    assert!(
        health
            .iter()
            .all(|h| h["ok"] == false && h["detail"].as_str().unwrap().contains("refused"))
    );
}
