//! Containment in a cgroup v2 (`--cgroup`), through the real binary on real processes: where
//! the child is from before its exec, what `auto` decides and says, membership that no setsid
//! escapes, CPU from cpu.stat, the kill by cgroup.kill, pressure in every output, and the
//! cgroup's removal after every kind of end.
//!
//! Each test needs root and a writable cgroup2 hierarchy (a hybrid system's unified mount
//! counts). Without them it says so and passes, unless `CI=true`, where it fails: CI machines
//! have them.

mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use util::*;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// The cgroup2 mount and this test process's cgroup directory, or why there are none.
fn hierarchy() -> Result<(PathBuf, PathBuf), String> {
    if !nix_root() {
        return Err("needs root".into());
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    let mount = mountinfo
        .lines()
        .filter_map(|l| l.split_once(" - "))
        .filter(|(_, b)| b.starts_with("cgroup2 "))
        .filter_map(|(a, _)| a.split_whitespace().nth(4).map(PathBuf::from))
        .next()
        .ok_or("no cgroup2 mount")?;
    let own = cgroup_dir_of(std::process::id() as i32).ok_or("no cgroup v2 of our own")?;
    // Tests run in parallel threads of one process: the name is unique per call.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = own.join(format!("watchd-test-probe-{}-{call}", std::process::id()));
    fs::create_dir(&probe)
        .map_err(|e| format!("cannot make a cgroup in {}: {e}", own.display()))?;
    fs::remove_dir(&probe).map_err(|e| e.to_string())?;
    Ok((mount, own))
}

fn nix_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

/// The hierarchy, or `None` after one line saying why the test is skipped (a failure in CI).
fn needed() -> Option<(PathBuf, PathBuf)> {
    match hierarchy() {
        Ok(h) => Some(h),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but the cgroup tests cannot run: {why}")
        }
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

fn events(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// The `cgroup` of every `start` event: the directory of the command's cgroup.
fn cgroups_started(events: &[Value]) -> Vec<PathBuf> {
    named(events, "start").iter().map(|e| PathBuf::from(e["cgroup"].as_str().unwrap())).collect()
}

#[test]
fn the_child_is_born_in_its_cgroup_and_the_cgroup_goes_with_the_run() {
    let Some((_, own)) = needed() else { return };
    let dir = TempDir::new("cg-born");
    let ev = dir.path("events");
    let mut cmd = watchd(["-v", "--cgroup", "on", "--events", ev.to_str().unwrap()]);
    // The command's first act is to read its own cgroup: it was there before its exec.
    cmd.args(["--", "cat", "/proc/self/cgroup"]);
    let r = run(cmd);
    r.assert_code(0);
    let all = events(&ev);
    let started = cgroups_started(&all);
    assert_eq!(started.len(), 1, "{r}");
    let cg = &started[0];
    assert_eq!(cg.parent(), Some(own.as_path()), "below watchd's own cgroup\n{r}");
    let name = cg.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("watchd-"), "{r}");
    let line =
        r.stdout.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or_else(|| panic!("{r}"));
    assert!(line.ends_with(&format!("/{name}")), "the child ran in {line}\n{r}");
    r.assert_stderr_has(&format!(
        "watchd: the command runs in cgroup {} (--cgroup on)",
        cg.display()
    ));
    r.assert_stderr_has("watchd: the command was born in its cgroup (clone3 CLONE_INTO_CGROUP)");
    assert!(!cg.exists(), "{} is left\n{r}", cg.display());
}

#[test]
fn the_cgroup_goes_after_a_drain_a_kill_and_restarts() {
    let Some(_) = needed() else { return };
    let dir = TempDir::new("cg-ends");
    // A drain: the stall's SIGTERM ends it.
    let ev = dir.path("drain");
    let mut cmd = watchd(["--cgroup", "on", "--stall", "500ms", "--interval", "100ms"]);
    cmd.args(["--exit-code-on-stop", "124", "--events", ev.to_str().unwrap(), "sleep", "1000"]);
    let r = run(cmd);
    r.assert_code(124);
    let cg = cgroups_started(&events(&ev)).remove(0);
    assert!(!cg.exists(), "{} is left after a drain\n{r}", cg.display());
    // A kill: the tree ignores SIGTERM, and cgroup.kill ends it at the grace.
    let ev = dir.path("kill");
    let mut cmd = watchd(["--cgroup", "on", "--timeout", "300ms", "--grace", "300ms"]);
    cmd.args(["--exit-code-on-stop", "124", "--events", ev.to_str().unwrap()]);
    cmd.args(["sh", "-c", "trap '' TERM; sleep 1000 & sleep 1001 & wait"]);
    let r = run(cmd);
    r.assert_code(124);
    let all = events(&ev);
    let kills = named(&all, "kill");
    assert_eq!(kills.len(), 1, "{r}");
    assert_eq!(kills[0]["processes"], 3, "the shell and both sleeps\n{r}");
    assert!(r.took < secs(5.0), "{r}");
    let cg = cgroups_started(&all).remove(0);
    assert!(!cg.exists(), "{} is left after a kill\n{r}", cg.display());
    // Restarts: one cgroup serves every run, each run killed by cgroup.kill (after which this
    // kernel may refuse clone3 into it: the child then joins through cgroup.procs).
    let ev = dir.path("restarts");
    let seen = dir.path("seen");
    let script = format!(
        "trap '' TERM; grep ^0:: /proc/self/cgroup >> {}; sleep 1000 & wait",
        seen.display()
    );
    let mut cmd = watchd(["--cgroup", "on", "--restart", "on-failure", "--restart-max", "2"]);
    cmd.args(["--restart-delay", "100ms", "--timeout", "300ms", "--grace", "200ms"]);
    cmd.args(["--exit-code-on-stop", "124", "--events", ev.to_str().unwrap()]);
    cmd.args(["sh", "-c", &script]);
    let r = run(cmd);
    r.assert_code(124);
    let started = cgroups_started(&events(&ev));
    assert_eq!(started.len(), 3, "{r}");
    assert!(started.iter().all(|c| *c == started[0]), "{started:?}");
    let lines = fs::read_to_string(&seen).unwrap();
    let runs: Vec<&str> = lines.lines().collect();
    assert_eq!(runs.len(), 3, "every run was in the cgroup from its start: {lines}");
    assert!(runs.iter().all(|l| *l == runs[0]), "{lines}");
    assert!(!started[0].exists(), "{} is left after restarts\n{r}", started[0].display());
}

/// `sh -c SCRIPT`, with no WATCHD_* variable and `$WATCHD` the binary under test.
fn sh(script: &str) -> Command {
    let mut cmd = Command::new("sh");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WATCHD_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("WATCHD", WATCHD).args(["-c", script]);
    cmd
}

/// `sh -c SCRIPT` in a private mount namespace, with `$1` the cgroup2 mount point.
fn in_mount_namespace(script: &str, mount: &Path) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c", script, "sh"]);
    cmd.arg(mount).env("WATCHD", WATCHD);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WATCHD_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn on_where_it_is_impossible_is_one_line_and_125_and_nothing_starts() {
    let Some((mount, _)) = needed() else { return };
    let dir = TempDir::new("cg-impossible");
    let marker = dir.path("started");
    let run_it = format!("exec \"$WATCHD\" --cgroup on -- touch {}", marker.display());
    // A read-only cgroup2 mount (only in this mount namespace).
    let r =
        run(in_mount_namespace(&format!("mount -o remount,bind,ro \"$1\" && {run_it}"), &mount));
    r.assert_code(125);
    assert_eq!(r.stderr.lines().count(), 1, "{r}");
    r.assert_stderr_has(&format!(
        "watchd: --cgroup on: the cgroup2 mount at {} is read-only",
        mount.display()
    ));
    assert!(!marker.exists(), "the command ran\n{r}");
    // No cgroup2 at all.
    let r = run(in_mount_namespace(&format!("umount \"$1\" && {run_it}"), &mount));
    r.assert_code(125);
    assert_eq!(r.stderr.lines().count(), 1, "{r}");
    r.assert_stderr_has("watchd: --cgroup on: no cgroup2 filesystem is mounted");
    assert!(!marker.exists(), "the command ran\n{r}");
    // `auto` there runs the command on the /proc tree and says why with -v.
    let auto = format!(
        "mount -o remount,bind,ro \"$1\" && exec \"$WATCHD\" -v -- touch {}",
        marker.display()
    );
    let r = run(in_mount_namespace(&auto, &mount));
    r.assert_code(0);
    r.assert_stderr_has(&format!(
        "watchd: no cgroup (the cgroup2 mount at {} is read-only): the tree is what /proc shows",
        mount.display()
    ));
    assert!(marker.exists(), "{r}");
}

/// A cgroup of the test's own below `own`, removed (once empty) on drop.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new(own: &Path, name: &str) -> TestCgroup {
        let dir = own.join(format!("watchd-test-{name}-{}", std::process::id()));
        fs::create_dir(&dir).unwrap();
        TestCgroup(dir)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + secs(10.0);
        while fs::remove_dir(&self.0).is_err() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn auto_takes_a_delegated_cgroup_and_says_why() {
    let Some((_, own)) = needed() else { return };
    let parent = TestCgroup::new(&own, "delegated");
    let procs = parent.0.join("cgroup.procs");
    // watchd starts inside the test's cgroup, as a service manager would start it in its own.
    let script = format!(
        "echo $$ > {}; exec \"$WATCHD\" -v -- grep ^0:: /proc/self/cgroup",
        procs.display()
    );
    let in_parent = |expect_own: bool| {
        let r = run(sh(&script));
        r.assert_code(0);
        let line = r.stdout.trim().strip_prefix("0::").unwrap_or_else(|| panic!("{r}")).to_string();
        let below = line.rsplit_once('/').map(|(a, b)| (a.to_string(), b.to_string()));
        let parent_name = parent.0.file_name().unwrap().to_string_lossy().into_owned();
        if expect_own {
            let (at, leaf) = below.unwrap_or_else(|| panic!("{r}"));
            assert!(at.ends_with(&parent_name) && leaf.starts_with("watchd-"), "{line}\n{r}");
        } else {
            assert!(line.ends_with(&format!("/{parent_name}")), "{line}\n{r}");
        }
        r
    };
    // Not delegated: the /proc tree, and -v says why.
    let r = in_parent(false);
    r.assert_stderr_has(&format!(
        "watchd: no cgroup (its cgroup {} is not delegated to it",
        parent.0.display()
    ));
    // Marked as systemd marks a delegated cgroup.
    let set = Command::new("python3")
        .args(["-c", "import os, sys; os.setxattr(sys.argv[1], 'trusted.delegate', b'1')"])
        .arg(&parent.0)
        .status()
        .unwrap();
    assert!(set.success());
    let r = in_parent(true);
    r.assert_stderr_has(&format!("(its cgroup {} carries trusted.delegate)", parent.0.display()));
    // `off` even there, decided without reading where watchd's cgroup is.
    let off = script.replace("-v --", "-v --cgroup off --");
    let r = run(sh(&off));
    r.assert_code(0)
        .assert_stderr_has("watchd: no cgroup (--cgroup off): the tree is what /proc shows");
    let parent_name = parent.0.file_name().unwrap().to_string_lossy().into_owned();
    assert!(r.stdout.trim().ends_with(&format!("/{parent_name}")), "{r}");
    let left: Vec<_> = fs::read_dir(&parent.0)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .collect();
    assert!(left.is_empty(), "watchd left {left:?}");
}

#[test]
fn pid1_of_a_pid_namespace_on_the_host_root_cgroup_is_not_a_container() {
    let Some((mount, own)) = needed() else { return };
    if own != mount {
        eprintln!("skipped: this test process is not in the hierarchy's root cgroup");
        return;
    }
    // `unshare --pid` alone: PID 1, and its cgroup is "/", but that is the host's root, not a
    // container's cgroup namespace: auto leaves it alone.
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", WATCHD, "-v", "--", "true"]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WATCHD_") {
            cmd.env_remove(key);
        }
    }
    let r = run(cmd);
    r.assert_code(0);
    r.assert_stderr_has(
        "watchd: no cgroup (watchd is PID 1 in the root cgroup of the whole hierarchy",
    );
    r.assert_stderr_has("a host's and not a container's");
}

#[test]
fn a_setsid_escapee_without_the_subreaper_is_still_the_tree() {
    let Some(_) = needed() else { return };
    let dir = TempDir::new("cg-escapee");
    let pidfile = dir.path("escapee");
    let tag = unique_tag("cg-escapee");
    // The escapee double-forks into a session of its own, so it is no descendant of watchd's
    // (--no-subreaper: init adopts it); it burns CPU for 2.5s, then sleeps. The main child
    // sleeps from the start: only the escapee's CPU keeps the tree alive.
    let escapee = format!(
        "echo $$ > {p}.tmp; mv {p}.tmp {p}; end=$(($(date +%s%N) + 2500000000)); \
         while [ $(date +%s%N) -lt $end ]; do :; done; exec sleep 1000",
        p = pidfile.display()
    );
    let script = format!(
        "(setsid sh -c '{escapee}' &); while [ ! -s {p} ]; do sleep 0.01; done; exec sleep 1001",
        p = pidfile.display()
    );
    let mut cmd = watchd(["--cgroup", "on", "--no-subreaper", "--stall", "1s"]);
    cmd.args(["--interval", "100ms", "--exit-code-on-stop", "124", "sh", "-c", &script]);
    cmd.env("WATCHD_TEST_TAG", &tag);
    let r = run(cmd);
    let escapee = pids_in(&fs::read_to_string(&pidfile).unwrap_or_default());
    for pid in processes_tagged(&tag) {
        // SAFETY: a process this test started (it carries the tag).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    r.assert_code(124).assert_stderr_has("watchd: stall:");
    assert!(r.took >= secs(3.0), "the escapee's CPU was not the tree's\n{r}");
    // The drain reached it too: it is no child of watchd's, but it is in the cgroup.
    assert_eq!(escapee.len(), 1, "{r}");
    wait_for("the escapee to die of the drain", secs(5.0), || !alive(escapee[0]));
}

#[test]
fn cpu_is_counted_exactly_from_cpu_stat() {
    let Some(_) = needed() else { return };
    let dir = TempDir::new("cg-cpu");
    let times = dir.path("times");
    let ev = dir.path("events");
    // A make-like parent: 300 short compilers one after another, then it reports what it and
    // they used (bash's `times`: its own and its reaped children's user and system time).
    let script = format!(
        "for i in $(seq 300); do /bin/true; done; times > {}; exec sleep 1000",
        times.display()
    );
    let mut cmd = watchd(["--cgroup", "on", "--stall", "1s", "--interval", "100ms"]);
    cmd.args(["--exit-code-on-stop", "124", "--events", ev.to_str().unwrap()]);
    cmd.args(["bash", "-c", &script]);
    let r = run(cmd);
    r.assert_code(124);
    let text = fs::read_to_string(&times).unwrap();
    // "0m0.012s 0m0.004s\n0m0.310s 0m0.402s"
    let used: f64 = text
        .split_whitespace()
        .map(|t| {
            let (m, s) = t.trim_end_matches('s').split_once('m').unwrap();
            m.parse::<f64>().unwrap() * 60.0 + s.parse::<f64>().unwrap()
        })
        .sum();
    let all = events(&ev);
    let last = named(&all, "sample").last().map(|s| s["cpu_seconds"].as_f64().unwrap());
    let counted = last.unwrap_or_else(|| panic!("no sample\n{r}"));
    // The exec of sleep comes on top; `times` rounds to the millisecond.
    assert!(
        counted >= used - 0.005 && counted <= used * 1.03 + 0.02,
        "cpu.stat counted {counted}s, the processes used {used}s ({text})\n{r}"
    );
}

#[test]
fn a_trickle_of_cpu_too_small_for_clock_ticks_is_evidence() {
    let Some(_) = needed() else { return };
    // 2ms of CPU every 300ms: under one clock tick a second (10ms), which /proc may not show
    // for over a second, while cpu.stat counts every microsecond.
    let trickle = "import time\nwhile True:\n    t = time.perf_counter()\n    while time.perf_counter() - t < 0.002: pass\n    time.sleep(0.3)";
    let mut cmd = watchd(["--cgroup", "on", "--stall", "1s", "--interval", "100ms"]);
    cmd.args(["--timeout", "4s", "--exit-code-on-stop", "124", "python3", "-c", trickle]);
    let r = run(cmd);
    r.assert_code(124).assert_stderr_has("watchd: timeout:");
    assert!(!r.stderr.contains("stall:"), "{r}");
}

#[test]
fn a_fork_storm_dies_at_the_first_kill() {
    let Some(_) = needed() else { return };
    let dir = TempDir::new("cg-storm");
    let ev = dir.path("events");
    // Five forkers starting 1,000 sleeps each, deaf to SIGTERM and killed while they fork,
    // inside a PID namespace of its own (the safety net: its end takes every process in it
    // along).
    let storm = "trap '' TERM; for j in 1 2 3 4 5; do \
                 (i=0; while [ $i -lt 1000 ]; do sleep 1000 & i=$((i+1)); done; wait) & \
                 done; wait";
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", WATCHD, "--cgroup", "on", "--timeout", "1s"]);
    cmd.args(["--grace", "0", "--exit-code-on-stop", "124", "--events", ev.to_str().unwrap()]);
    cmd.args(["sh", "-c", storm]);
    let r = run_within(&mut cmd, secs(60.0));
    r.assert_code(124);
    let all = events(&ev);
    let kills = named(&all, "kill");
    assert_eq!(kills.len(), 1, "one kill, no sweep after it\n{r}");
    assert!(kills[0]["processes"].as_u64().unwrap() > 5, "{}", kills[0]);
    assert!(!r.stderr.contains("did not die"), "{r}");
    let cg = cgroups_started(&all).remove(0);
    assert!(!cg.exists(), "{r}");
}

#[test]
fn pressure_reaches_samples_metrics_and_the_dump() {
    let Some(_) = needed() else { return };
    if fs::read_to_string("/proc/pressure/cpu").is_err() {
        eprintln!("skipped: this kernel has no PSI");
        return;
    }
    let dir = TempDir::new("cg-psi");
    let (ev, prom) = (dir.path("events"), dir.path("watchd.prom"));
    let mut cmd = watchd(["--cgroup", "on", "--stall", "500ms", "--interval", "100ms"]);
    cmd.args(["--events", ev.to_str().unwrap(), "--metrics-file", prom.to_str().unwrap()]);
    cmd.args(["--exit-code-on-stop", "124", "sleep", "1000"]);
    let r = run(cmd);
    r.assert_code(124);
    let all = events(&ev);
    let sample = named(&all, "sample").pop().unwrap_or_else(|| panic!("{r}"));
    for key in ["psi_cpu", "psi_io", "psi_memory"] {
        let v = sample[key].as_f64().unwrap_or_else(|| panic!("{key}: {sample}"));
        assert!((0.0..=1.0).contains(&v), "{key}: {sample}");
    }
    let dump = named(&all, "dump").pop().unwrap_or_else(|| panic!("{r}"));
    let psi = &dump["processes"][0]["psi"];
    assert!(psi["cpu"].is_number() && psi["io"].is_number(), "{dump}");
    let metrics = fs::read_to_string(&prom).unwrap();
    for resource in ["cpu", "io", "memory"] {
        let name = format!("watchd_pressure_some_ratio{{resource=\"{resource}\"}} ");
        assert!(metrics.lines().any(|l| l.starts_with(&name)), "{name} in\n{metrics}");
    }
    r.assert_stderr_has("watchd: pressure of the cgroup (some avg10): cpu ");
}

#[test]
fn a_sigkilled_watchd_leaves_the_tree_contained_in_its_cgroup() {
    let Some(_) = needed() else { return };
    let dir = TempDir::new("cg-sigkill");
    let pidfile = dir.path("pids");
    let tag = unique_tag("cg-sigkill");
    // The grandchild has no parent-death signal: only the cgroup still holds it.
    let script = format!(
        "sleep 1000 & echo $! > {p}.tmp; mv {p}.tmp {p}; exec sleep 1001",
        p = pidfile.display()
    );
    let mut cmd = watchd(["--cgroup", "on", "sh", "-c", &script]);
    cmd.env("WATCHD_TEST_TAG", &tag);
    let mut w = cmd.spawn().unwrap();
    let grandchild = pids_in(&wait_file(&pidfile, secs(10.0)))[0];
    let cg = watchd_cgroup_of(grandchild).unwrap_or_else(|| panic!("{grandchild} in no cgroup"));
    assert!(cg.ends_with(format!("watchd-{}", w.id())), "{}", cg.display());
    w.kill().unwrap();
    w.wait().unwrap();
    // What is left is in the cgroup, in plain sight, and one write ends it.
    let procs = fs::read_to_string(cg.join("cgroup.procs")).unwrap();
    assert!(pids_in(&procs).contains(&grandchild), "{procs}");
    fs::write(cg.join("cgroup.kill"), "1").unwrap();
    wait_for("the grandchild to die", secs(5.0), || !alive(grandchild));
    assert!(processes_tagged(&tag).is_empty());
    remove_left_cgroup(&cg);
}
