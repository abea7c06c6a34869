//! watchd as a container's ENTRYPOINT under a real Docker engine, the way its users run it:
//! exit codes, `docker stop` and its timeout, `docker kill -s`, orphans, `-m` and the OOM
//! killer, `docker pause`, `--init`, configuration from the environment, a metrics file on a
//! volume, and README's container section as written. `.ci/run` starts a private engine
//! (`.ci/docker-engine`); without one these tests skip with one line, unless CI=true.
//!
//! Shell scripts run in busybox's `sh`. Waits are on log lines, `docker wait` and `docker top`
//! under deadlines; the one fixed sleep is the length of a `docker pause`, the stimulus itself.

mod engine;
mod util;

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use engine::{Container, docker, docker_ok, engine, image, poll};

/// Deadline for anything that should take a second or two.
const LONG: Duration = Duration::from_secs(30);

/// A main loop that sleeps in `wait`, where busybox sh runs a trapped signal's handler at once.
const IDLE: &str = "while :; do sleep 1 & wait; done";

#[test]
fn exit_codes_pass_through() {
    if !engine() {
        return;
    }
    // As PID 1 watchd cannot re-raise the child's signal: it exits 128+N.
    for (script, want) in
        [("exit 0", 0), ("exit 42", 42), ("kill -TERM $$", 143), ("kill -USR1 $$", 138)]
    {
        let c = Container::start(&[image(), "sh", "-c", script]);
        assert_eq!(c.wait(LONG), want, "sh -c {script:?}\n{}", c.logs());
    }
}

#[test]
fn docker_stop_reaches_the_child_and_its_status_is_the_containers() {
    if !engine() {
        return;
    }
    let script = format!("trap 'echo got TERM; exit 7' TERM; echo ready; {IDLE}");
    let c = Container::start(&[image(), "sh", "-c", &script]);
    c.wait_logs("ready", LONG);
    let took = c.stop(10);
    let code = c.wait(LONG);
    let logs = c.logs();
    assert_eq!(code, 7, "the child's own status, not Docker's SIGKILL (137)\n{logs}");
    assert_eq!(logs.matches("got TERM").count(), 1, "TERM forwarded once\n{logs}");
    assert!(took < Duration::from_secs(5), "docker stop took {took:?}\n{logs}");
}

/// The child traps TERM and exits 7, leaving a process that ignores TERM. docker stop -t 5 and
/// WATCHD_GRACE=3s: watchd's own SIGKILL of the leftover must come before Docker's, so the
/// container ends with the child's 7, not 137.
#[test]
fn docker_stop_with_a_grace_below_the_stop_timeout_ends_with_watchds_kill() {
    if !engine() {
        return;
    }
    let script = format!(
        "sh -c 'trap \"\" TERM; echo leftover ready; while :; do sleep 1; done' & \
         trap 'echo got TERM; exit 7' TERM; echo main ready; {IDLE}"
    );
    let c = Container::start(&["-e", "WATCHD_GRACE=3s", image(), "sh", "-c", &script]);
    c.wait_logs("leftover ready", LONG);
    c.wait_logs("main ready", LONG);
    let took = c.stop(5);
    let code = c.wait(LONG);
    let logs = c.logs();
    eprintln!(
        "docker stop -t 5 with WATCHD_GRACE=3s took {took:?}: {:?} before Docker's SIGKILL",
        Duration::from_secs(5).saturating_sub(took)
    );
    assert_eq!(code, 7, "Docker's SIGKILL (137) came before watchd's\n{logs}");
    assert!(logs.contains("outlived the 3s grace; sent SIGKILL"), "{logs}");
    assert!(
        took >= Duration::from_millis(2900),
        "took {took:?}: the leftover ignores TERM, only the SIGKILL after the grace ends it\n{logs}"
    );
}

/// As above, but the child takes 2s to exit after TERM: with the grace counted from the stop
/// request, watchd kills the leftover 3s after `docker stop`, 2s before Docker would; counted
/// from the child's exit it would kill at 5s, racing Docker's SIGKILL.
#[test]
fn the_grace_counts_from_the_stop_request() {
    if !engine() {
        return;
    }
    let script = format!(
        "sh -c 'trap \"\" TERM; echo leftover ready; while :; do sleep 1; done' & \
         trap 'echo got TERM; sleep 2; exit 7' TERM; echo main ready; {IDLE}"
    );
    let c = Container::start(&["-e", "WATCHD_GRACE=3s", image(), "sh", "-c", &script]);
    c.wait_logs("leftover ready", LONG);
    c.wait_logs("main ready", LONG);
    let took = c.stop(5);
    let code = c.wait(LONG);
    let logs = c.logs();
    assert_eq!(code, 7, "Docker's SIGKILL (137) came before watchd's\n{logs}");
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_millis(4500),
        "took {took:?}, want the 3s grace counted from docker stop\n{logs}"
    );
}

#[test]
fn docker_kill_signals_reach_the_child() {
    if !engine() {
        return;
    }
    // Docker's RTMIN+3 is 37, glibc's SIGRTMIN (34) + 3; busybox-static is built on glibc.
    let signals =
        [("HUP", "HUP"), ("USR1", "USR1"), ("USR2", "USR2"), ("WINCH", "WINCH"), ("RTMIN+3", "37")];
    let traps: String =
        signals.iter().map(|(name, trap)| format!("trap 'echo got {name}' {trap}; ")).collect();
    let script = format!("{traps}echo ready; {IDLE}");
    let c = Container::start(&[image(), "sh", "-c", &script]);
    c.wait_logs("ready", LONG);
    for (name, _) in signals {
        c.kill(name);
        c.wait_logs(&format!("got {name}\n"), LONG);
    }
    let logs = c.logs();
    let got: Vec<&str> = logs.lines().filter_map(|l| l.strip_prefix("got ")).collect();
    let sent: Vec<&str> = signals.iter().map(|(name, _)| *name).collect();
    assert_eq!(got, sent, "each signal once, in order\n{logs}");
    assert_eq!(c.inspect("{{.State.Running}}"), "true", "{logs}");
}

#[test]
fn orphans_of_a_double_forking_child_are_reaped() {
    if !engine() {
        return;
    }
    // Three double forks and a setsid daemon: each `sleep 3` is orphaned at once.
    let script =
        "for i in 1 2 3; do (sleep 3 &); done; (setsid sleep 3 &); echo ready; exec sleep 3600";
    let c = Container::start(&[image(), "sh", "-c", script]);
    c.wait_logs("ready", LONG);
    let watchd: i32 = c.inspect("{{.State.Pid}}").parse().unwrap();
    let mut orphans = Vec::new();
    poll("four orphans adopted by watchd", LONG, || {
        orphans = c
            .top()
            .into_iter()
            .filter(|(_, ppid, _, args)| *ppid == watchd && args == "sleep 3")
            .map(|(pid, ..)| pid)
            .collect();
        orphans.len() == 4
    });
    // A zombie stays in `docker top` (state Z) until someone reaps it.
    let mut top = Vec::new();
    poll("the orphans to be reaped once they exit", LONG, || {
        top = c.top();
        !top.iter().any(|(pid, ..)| orphans.contains(pid))
    });
    assert!(!top.iter().any(|(_, _, stat, _)| stat.starts_with('Z')), "zombies: {top:?}");
    assert!(top.iter().any(|(.., args)| args == "sleep 3600"), "the child runs on: {top:?}");
}

#[test]
fn a_memory_hog_under_docker_m_is_oom_killed_and_watchd_says_so() {
    if !engine() {
        return;
    }
    // dd's 64 MiB buffer does not fit in 32 MiB; no swap either, so the OOM killer takes dd.
    let c = Container::start(&[
        "-m",
        "32m",
        "--memory-swap",
        "32m",
        image(),
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1",
    ]);
    let code = c.wait(LONG);
    let logs = c.logs();
    assert_eq!(code, 137, "128 + SIGKILL\n{logs}");
    assert!(logs.contains("watchd: child killed by SIGKILL, not sent by watchd ("), "{logs}");
    assert!(logs.contains("OOM killer"), "{logs}");
    assert_eq!(c.inspect("{{.State.OOMKilled}}"), "true", "{logs}");
}

#[test]
fn watchd_max_rss_drains_before_the_oom_killer() {
    if !engine() {
        return;
    }
    // The shell's string grows by 512 KiB every 0.2 s (its resident memory by a few times
    // that): past 24 MiB well before the 128 MiB limit.
    let script = r#"x=; while :; do x="$x$(printf "%524288s" "")"; sleep 0.2; done"#;
    let c = Container::start(&[
        "-m",
        "128m",
        "--memory-swap",
        "128m",
        "-e",
        "WATCHD_MAX_RSS=24M",
        "-e",
        "WATCHD_INTERVAL=100ms",
        image(),
        "sh",
        "-c",
        script,
    ]);
    let code = c.wait(LONG);
    let logs = c.logs();
    assert_eq!(code, 143, "drained with SIGTERM: 128 + 15\n{logs}");
    assert!(logs.contains("watchd: rss: "), "{logs}");
    assert!(logs.contains("resident > 24.0 MiB limit"), "{logs}");
    assert!(!logs.contains("OOM"), "{logs}");
    assert_eq!(c.inspect("{{.State.OOMKilled}}"), "false", "{logs}");
}

/// A job that shows life every half second, well inside the 2 s stall window, is frozen by
/// `docker pause` for 4 s. The test is its pacemaker: the job reads a line from a FIFO on a
/// volume and echoes it, and the test writes the next line half a second after the last echo.
/// So after `docker unpause` nothing in the job moves for half a second (a job with its own
/// timer would race watchd's overdue probe at the thaw): the first probe sees 4 s without
/// progress, time watchd spent frozen, which must not count.
#[test]
fn docker_pause_of_a_steady_job_is_not_a_stall() {
    if !engine() {
        return;
    }
    let dir = util::TempDir::new("docker-pause");
    let fifo = dir.path("pace");
    util::run(engine::command("mkfifo", [&fifo])).assert_code(0);
    let volume = format!("{}:/pace", dir.0.display());
    // One open of the FIFO for the whole loop: lines written between two opens would be lost.
    let script =
        "while read -r n; do echo tick $n; [ $n = 8 ] && break; done < /pace/pace; echo done";
    let c = Container::start(&[
        "-v",
        &volume,
        "-e",
        "WATCHD_STALL=2s",
        "-e",
        "WATCHD_INTERVAL=100ms",
        image(),
        "sh",
        "-c",
        script,
    ]);
    // Non-blocking: the open fails (ENXIO) until the job has the FIFO open for reading.
    let mut pace = None;
    poll("the job to open the FIFO", LONG, || {
        pace = fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&fifo).ok();
        assert!(pace.is_some() || c.inspect("{{.State.Running}}") == "true", "{}", c.logs());
        pace.is_some()
    });
    let mut pace = pace.expect("opened");
    let mut beat = |n: u32| {
        pace.write_all(format!("{n}\n").as_bytes()).expect("the job reads the FIFO");
        c.wait_logs(&format!("tick {n}\n"), LONG);
        // The job's rhythm, not a wait for anything.
        std::thread::sleep(Duration::from_millis(500));
    };
    (1..=4).for_each(&mut beat);
    docker_ok(["pause", &c.name]);
    // The freeze is the stimulus: two stall windows long.
    std::thread::sleep(Duration::from_secs(4));
    docker_ok(["unpause", &c.name]);
    // The job's rhythm again (a beat after the thaw, as between ticks), not a wait for anything.
    std::thread::sleep(Duration::from_millis(500));
    (5..=8).for_each(&mut beat);
    let code = c.wait(LONG);
    let logs = c.logs();
    assert!(!logs.contains("watchd: stall"), "{logs}");
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("tick 8\ndone\n"), "{logs}");
}

#[test]
fn behind_docker_run_init_watchd_still_forwards_and_exits_right() {
    if !engine() {
        return;
    }
    let script =
        format!("trap 'echo got USR1' USR1; trap 'echo got TERM; exit 7' TERM; echo ready; {IDLE}");
    let c = Container::start(&["--init", image(), "sh", "-c", &script]);
    c.wait_logs("ready", LONG);
    let init: i32 = c.inspect("{{.State.Pid}}").parse().unwrap();
    let top = c.top();
    assert!(
        top.iter().any(|(pid, .., args)| *pid == init && args.contains("docker-init")),
        "{top:?}"
    );
    assert!(
        top.iter()
            .any(|(_, ppid, _, args)| *ppid == init && args.starts_with("/usr/local/bin/watchd")),
        "watchd is docker-init's child: {top:?}"
    );
    c.kill("USR1");
    c.wait_logs("got USR1", LONG);
    let took = c.stop(10);
    assert_eq!(c.wait(LONG), 7, "{}", c.logs());
    assert!(took < Duration::from_secs(5), "docker stop took {took:?}");
    // Not PID 1, watchd re-raises the child's signal; tini reports it as 128+N.
    for (script, want) in [("exit 42", 42), ("kill -TERM $$", 143)] {
        let c = Container::start(&["--init", image(), "sh", "-c", script]);
        assert_eq!(c.wait(LONG), want, "sh -c {script:?}\n{}", c.logs());
    }
}

#[test]
fn configuration_from_the_environment_alone() {
    if !engine() {
        return;
    }
    let c = Container::start(&[
        "-e",
        "WATCHD_STALL=1s",
        "-e",
        "WATCHD_INTERVAL=200ms",
        "-e",
        "WATCHD_EXIT_CODE_ON_STOP=124",
        image(),
        "sleep",
        "3600",
    ]);
    let code = c.wait(LONG);
    let logs = c.logs();
    assert_eq!(code, 124, "{logs}");
    assert!(logs.contains("watchd: stall: no CPU or I/O progress for 1s"), "{logs}");
}

#[test]
fn the_child_does_not_inherit_watchds_settings() {
    if !engine() {
        return;
    }
    let c = Container::start(&["-e", "WATCHD_GRACE=2s", "-e", "APP_SETTING=kept", image(), "env"]);
    let code = c.wait(LONG);
    let logs = c.logs();
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("APP_SETTING=kept"), "{logs}");
    assert!(!logs.contains("WATCHD_"), "{logs}");
}

#[test]
fn metrics_file_on_a_volume_is_read_from_outside_while_the_container_runs() {
    if !engine() {
        return;
    }
    let dir = util::TempDir::new("docker-metrics");
    let file = dir.path("watchd.prom");
    let volume = format!("{}:/metrics", dir.0.display());
    let c = Container::start(&[
        "-v",
        &volume,
        "-e",
        "WATCHD_METRICS_FILE=/metrics/watchd.prom",
        "-e",
        "WATCHD_INTERVAL=200ms",
        image(),
        "sh",
        "-c",
        "while :; do sleep 0.1; done",
    ]);
    let value = |text: &str, name: &str| -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    let mut first = String::new();
    poll("the metrics file", LONG, || {
        first = fs::read_to_string(&file).unwrap_or_default();
        value(&first, "watchd_cpu_seconds_total").is_some()
    });
    // A later version: the file is rewritten (renamed over) after every probe.
    let mut later = String::new();
    poll("a rewrite with more CPU seconds", LONG, || {
        later = fs::read_to_string(&file).unwrap_or_default();
        value(&later, "watchd_cpu_seconds_total") > value(&first, "watchd_cpu_seconds_total")
    });
    assert_eq!(c.inspect("{{.State.Running}}"), "true");
    assert!(value(&later, "watchd_processes").is_some_and(|n| n >= 1.0), "{later}");
    let copy = dir.path("copy.prom");
    fs::write(&copy, &later).unwrap();
    let prom_check = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/prom_check.py");
    let strict = [prom_check.as_ref(), "--strict".as_ref(), copy.as_os_str()];
    util::run(engine::command("python3", strict)).assert_code(0);
}

#[test]
fn health_url_in_a_container() {
    if !engine() {
        return;
    }
    let script = "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /tmp/www";
    let c = Container::start(&[
        "-e",
        "WATCHD_HEALTH_URL=http://127.0.0.1:8080/",
        "-e",
        "WATCHD_HEALTH_INTERVAL=200ms",
        "-e",
        "WATCHD_START_INTERVAL=100ms",
        "-e",
        "WATCHD_HEALTH_RETRIES=2",
        "-e",
        "WATCHD_EVENTS=-",
        "-e",
        "WATCHD_EXIT_CODE_ON_STOP=124",
        image(),
        "sh",
        "-c",
        script,
    ]);
    c.wait_logs(r#""by":"health""#, LONG);
    // busybox httpd answers 404 without the index: a failed check.
    docker_ok(["exec", &c.name, "rm", "/tmp/www/index.html"]);
    let code = c.wait(LONG);
    let logs = c.logs();
    assert_eq!(code, 124, "{logs}");
    assert!(logs.contains(r#""reason":"unhealthy""#), "{logs}");
}

#[test]
fn restart_on_failure_in_a_container() {
    if !engine() {
        return;
    }
    let c = Container::start(&[
        "-e",
        "WATCHD_RESTART=on-failure",
        "-e",
        "WATCHD_RESTART_MAX=2",
        "-e",
        "WATCHD_RESTART_DELAY=100ms",
        image(),
        "sh",
        "-c",
        "echo run; exit 3",
    ]);
    let code = c.wait(LONG);
    let logs = c.logs();
    assert_eq!(code, 3, "the last run's status\n{logs}");
    assert_eq!(logs.matches("run\n").count(), 3, "{logs}");
    assert!(logs.contains("(restart 1 of 2): child exited with status 3"), "{logs}");
    assert!(logs.contains("(restart 2 of 2): child exited with status 3"), "{logs}");
    assert!(logs.contains("watchd: giving up after 2 restarts"), "{logs}");
}

#[test]
fn docker_stop_during_a_restart_delay_ends_at_once() {
    if !engine() {
        return;
    }
    let c = Container::start(&[
        "-e",
        "WATCHD_RESTART=always",
        "-e",
        "WATCHD_RESTART_DELAY=1m",
        image(),
        "sh",
        "-c",
        "echo run; exit 5",
    ]);
    c.wait_logs("watchd: restarting in ", LONG);
    let took = c.stop(10);
    let code = c.wait(LONG);
    let logs = c.logs();
    assert_eq!(code, 5, "the last run's status\n{logs}");
    assert!(took < Duration::from_secs(5), "docker stop took {took:?}\n{logs}");
    assert_eq!(logs.matches("run\n").count(), 1, "no restart after docker stop\n{logs}");
}

/// The first fenced block of `lang` in README's `## heading` section.
fn readme_block(heading: &str, lang: &str) -> String {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("no section {heading}"))
        .to_string();
    let fence = format!("```{lang}\n");
    let start = section.find(&fence).unwrap_or_else(|| panic!("no {lang} block in {heading}"));
    let body = &section[start + fence.len()..];
    body[..body.find("```").expect("a closing fence")].to_string()
}

/// README's container section, as written: its Dockerfile built on `python:3.12-slim-bookworm`, and
/// its docker lines run one by one with bash (the names made unique for this test process).
#[test]
fn readme_container_section_runs_as_written() {
    if !engine() {
        return;
    }
    let dockerfile = readme_block("In a container", "dockerfile");
    let Some(context) = engine::readme_context(&dockerfile) else {
        return;
    };
    let name = engine::unique("watchd-demo");
    let lines: Vec<String> = readme_block("In a container", "sh")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.replace("watchd-demo", &name))
        .collect();
    let [build, run, stop, inspect, once] = lines.as_slice() else {
        panic!("README's docker lines changed; update this test: {lines:?}");
    };
    // Removed at the end, whatever happens.
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = engine::capture(docker(["rm", "-f", &self.0]), LONG);
            let _ = engine::capture(docker(["rmi", &self.0]), LONG);
        }
    }
    let _cleanup = Cleanup(name.clone());
    let sh = |line: &str| {
        let mut bash = engine::command("bash", ["-c", line]);
        bash.current_dir(&context.0);
        let r = util::run_within(&mut bash, Duration::from_secs(120));
        r.assert_code(0);
        r.stdout
    };
    assert!(build.starts_with("docker build "), "{build}");
    sh(build);
    assert!(run.starts_with("docker run -d "), "{run}");
    sh(run);
    let probe = "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/')";
    poll("the server to answer", LONG, || {
        engine::capture(docker(["exec", &name, "python3", "-c", probe]), LONG)
            .is_ok_and(|o| o.status.success())
    });
    assert!(stop.starts_with("docker stop "), "{stop}");
    let start = Instant::now();
    sh(stop);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "TERM reached python: docker stop took {took:?}");
    assert!(inspect.starts_with("docker inspect "), "{inspect}");
    assert_eq!(sh(inspect).trim(), "143", "python died of SIGTERM: 128 + 15");
    assert!(once.starts_with("docker run --rm "), "{once}");
    assert_eq!(sh(once).trim(), "exit status: 3");
}
