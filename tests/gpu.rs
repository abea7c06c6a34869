//! GPU evidence of life (issue 16; SPEC.md "GPU evidence") through the real binary, with no GPU:
//! a stand-in NVML library (tests/fixtures/fake_nvml.c, built with `cc` by fake_nvml.rs) is
//! loaded through `WATCHD_NVML_LIBRARY`, and answers from a file. The job itself writes the
//! answers that name its own pid (`$$`) before it sleeps, so no test thread races the probes:
//! its host sleeps while the fake says it works on the GPU, or holds GPU memory and idles.
//!
//! The stall window (1s at 100ms probes) is the synchronisation: a verdict cannot come before
//! the tree has been quiet for the whole window, and the job writes its answers within
//! milliseconds of its start.

mod util;

#[path = "fixtures/fake_nvml.rs"]
mod fake_nvml;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use util::{Run, TempDir, run, watchd};

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A copy of the stand-in library of one test, with its answers file.
struct Fake {
    dir: TempDir,
    library: PathBuf,
}

impl Fake {
    /// A library whose answers are `answers` until the job rewrites them.
    fn new(tag: &str, answers: &str) -> Fake {
        let dir = TempDir::new(tag);
        let library = fake_nvml::install(&dir.0, fake_nvml::Variant::Full);
        fake_nvml::answer(&library, answers);
        Fake { dir, library }
    }

    fn answers(&self) -> PathBuf {
        let mut name = self.library.clone().into_os_string();
        name.push(".answers");
        PathBuf::from(name)
    }

    /// A shell command for the job: write `answers` (where `$$`, the job's own pid, names the
    /// process the fake reports) through a rename, then `then` (which should `exec` a sleep, so
    /// the pid NVML reports stays the main child's).
    fn job(&self, answers: &str, then: &str) -> [String; 3] {
        let file = self.answers();
        let fresh = self.dir.path("answers.tmp");
        let script = format!(
            "echo \"{answers}\" > '{fresh}' && mv '{fresh}' '{file}' && {then}",
            fresh = fresh.display(),
            file = file.display(),
        );
        ["sh".to_string(), "-c".to_string(), script]
    }

    /// watchd, hermetic but for `WATCHD_NVML_LIBRARY` naming this library.
    fn watchd(&self, args: &[&str], command: &[String]) -> Command {
        let mut cmd =
            watchd(args.iter().copied().chain(["--"]).chain(command.iter().map(|s| s.as_str())));
        cmd.env("WATCHD_NVML_LIBRARY", &self.library);
        cmd
    }

    /// The NVML calls watchd made, when the answers say `log`.
    fn calls(&self) -> Vec<String> {
        fake_nvml::calls(&self.library)
    }
}

/// A stall guard at 100ms probes, with the stall's reason in the exit status.
const STALL: [&str; 6] = ["--stall", "1s", "--interval", "100ms", "--exit-code-on-stop", "124"];

/// STALL plus a timeout that ends a job the stall guard lets live, and an events file.
fn stall_and_timeout(events: &Path, timeout: &'static str) -> Vec<String> {
    let mut args: Vec<String> = STALL.iter().map(|s| s.to_string()).collect();
    args.extend(["--timeout", timeout, "--grace", "2s", "-v", "--events"].map(String::from));
    args.push(events.display().to_string());
    args
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn read_events(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// The (gpu_util, gpu_memory_bytes) of each sample event; `None` for null.
fn gpu_of_samples(events: &[Value]) -> Vec<(Option<f64>, Option<u64>)> {
    named(events, "sample")
        .iter()
        .map(|s| (s["gpu_util"].as_f64(), s["gpu_memory_bytes"].as_u64()))
        .collect()
}

#[track_caller]
fn assert_timed_out_not_stalled(r: &Run) {
    r.assert_code(124).assert_stderr_has("watchd: timeout:");
    assert!(!r.stderr.contains("stall:"), "judged stalled\n{r}");
}

#[track_caller]
fn assert_stalled(r: &Run, phrase: &str) {
    r.assert_code(124).assert_stderr_has(&format!("watchd: stall: {phrase} for 1s"));
    // The window plus one probe interval after the last evidence (the start), and slack for a
    // loaded machine.
    r.assert_took(secs(1.0), secs(1.1 + 1.5));
}

/// NVML's answers when the job is busy on the GPU: 60 % SM and 1 MiB, refreshed at every call.
const BUSY: &str = "device 0\nsample 0 $$ 60 now\nprocess 0 $$ 1048576";

#[test]
fn a_sleeping_child_busy_on_the_gpu_is_not_stalled() {
    let fake = Fake::new("busy", "device 0\n");
    let events = fake.dir.path("events");
    let job = fake.job(BUSY, "exec sleep 1000");
    let r = run(fake.watchd(&as_strs(&stall_and_timeout(&events, "3s")), &job));
    assert_timed_out_not_stalled(&r);
    r.assert_took(secs(3.0), secs(3.0 + 2.0));
    r.assert_stderr_has(
        "watchd: GPU evidence: NVML answers for 1 GPU; counting the work of the tree's processes",
    );
    let samples = gpu_of_samples(&read_events(&events));
    assert!(samples.len() >= 20, "{samples:?}");
    // After the job wrote its answers (the first probe or two may come before), every window
    // saw its work.
    let busy = (Some(60.0), Some(1048576));
    assert!(samples.iter().skip(3).all(|s| *s == busy), "{samples:?}\n{r}");
}

#[test]
fn a_sleeping_child_idle_on_the_gpu_is_stalled_and_the_dump_shows_its_gpu_memory() {
    let fake = Fake::new("idle", "device 0\n");
    let events = fake.dir.path("events");
    // It holds 1 MiB of GPU memory and runs no kernel; a background sleep never touches a GPU.
    let job = fake.job("device 0\nprocess 0 $$ 1048576", "sleep 1001 & exec sleep 1000");
    let mut args: Vec<String> = STALL.iter().map(|s| s.to_string()).collect();
    args.extend(["--events".to_string(), events.display().to_string()]);
    let r = run(fake.watchd(&as_strs(&args), &job));
    assert_stalled(&r, "no CPU, I/O or GPU progress");
    // The stderr picture: the main child with its GPU figures, the other without a marker.
    let main =
        r.stderr.lines().find(|l| l.contains("  sleep 1000")).unwrap_or_else(|| panic!("{r}"));
    assert!(main.contains(" gpu 0% 1.0MiB  "), "{main}\n{r}");
    let other =
        r.stderr.lines().find(|l| l.contains("  sleep 1001")).unwrap_or_else(|| panic!("{r}"));
    assert!(!other.contains("gpu"), "{other}\n{r}");
    // The dump event: every process with both figures (in process scope, one NVML does not
    // list used no GPU).
    let all = read_events(&events);
    let dump = named(&all, "dump");
    assert_eq!(dump.len(), 1, "{all:#?}");
    let processes = dump[0]["processes"].as_array().unwrap();
    let by_cmd = |cmd: &str| {
        processes
            .iter()
            .find(|p| p["cmdline"] == cmd)
            .unwrap_or_else(|| panic!("{cmd}: {processes:#?}"))
    };
    let main = by_cmd("sleep 1000");
    assert_eq!(
        (&main["gpu_util"], &main["gpu_memory_bytes"]),
        (&Value::from(0), &Value::from(1048576))
    );
    let other = by_cmd("sleep 1001");
    assert_eq!(
        (&other["gpu_util"], &other["gpu_memory_bytes"]),
        (&Value::from(0), &Value::from(0))
    );
}

#[test]
fn another_process_gpu_use_counts_in_device_scope_only() {
    // Pid 1 is never of the tree: its work is another job's (or, in a container, a pid of the
    // host's namespace that watchd cannot map).
    let answers = "device 0 busy 70 used 5000\nsample 0 1 70 now\nprocess 0 1 5000\n";
    let sleep = ["sleep".to_string(), "1000".to_string()];

    let process = Fake::new("process-scope", answers);
    let mut args: Vec<&str> = STALL.to_vec();
    args.extend(["--timeout", "3s"]);
    let r = run(process.watchd(&args, &sleep));
    assert_stalled(&r, "no CPU, I/O or GPU progress");

    let device = Fake::new("device-scope", answers);
    let events = device.dir.path("events");
    let mut args = stall_and_timeout(&events, "3s");
    args.extend(["--gpu-evidence", "device"].map(String::from));
    let r = run(device.watchd(&as_strs(&args), &sleep));
    assert_timed_out_not_stalled(&r);
    r.assert_stderr_has("counting the work of any process (--gpu-evidence device)");
    let samples = gpu_of_samples(&read_events(&events));
    assert!(
        !samples.is_empty() && samples.iter().all(|s| *s == (Some(70.0), Some(5000))),
        "{samples:?}"
    );
}

#[test]
fn evidence_without_gpu_ignores_the_gpu() {
    let busy = format!("log\n{BUSY}");
    // The control: the same job with the default --evidence lives on its GPU work.
    let control = Fake::new("control", "log\ndevice 0\n");
    let job = control.job(&busy, "exec sleep 1000");
    let mut args: Vec<&str> = STALL.to_vec();
    args.extend(["--timeout", "3s"]);
    assert_timed_out_not_stalled(&run(control.watchd(&args, &job)));
    assert!(control.calls().contains(&"nvmlInit_v2".to_string()));

    let fake = Fake::new("cpu-io", "log\ndevice 0\n");
    let events = fake.dir.path("events");
    let job = fake.job(&busy, "exec sleep 1000");
    let mut args = stall_and_timeout(&events, "3s");
    args.extend(["--evidence", "cpu,io"].map(String::from));
    let r = run(fake.watchd(&as_strs(&args), &job));
    assert_stalled(&r, "no CPU or I/O progress");
    assert!(!r.stderr.contains("GPU"), "{r}");
    assert_eq!(fake.calls(), Vec::<String>::new(), "NVML is not even loaded");
    let samples = gpu_of_samples(&read_events(&events));
    assert!(!samples.is_empty() && samples.iter().all(|s| *s == (None, None)), "{samples:?}");
}

#[test]
fn a_missing_library_is_no_news_and_verbose_says_so_once() {
    let dir = TempDir::new("missing");
    let events = dir.path("events");
    let metrics = dir.path("metrics");
    let missing = dir.path("libnvidia-ml.so.1");
    // Two runs of a stalled job (one restart): one line for watchd's whole life.
    let mut cmd = watchd(STALL.iter().copied().chain([
        "-v",
        "--restart",
        "on-failure",
        "--restart-max",
        "1",
        "--restart-delay",
        "0",
        "--events",
        events.to_str().unwrap(),
        "--metrics-file",
        metrics.to_str().unwrap(),
        "--",
        "sleep",
        "1000",
    ]));
    cmd.env("WATCHD_NVML_LIBRARY", &missing);
    let r = run(cmd);
    r.assert_code(124);
    assert_eq!(r.stderr.matches("stall: no CPU or I/O progress for 1s").count(), 2, "{r}");
    let said: Vec<&str> = r.stderr.lines().filter(|l| l.contains("GPU")).collect();
    assert_eq!(said.len(), 1, "{r}");
    assert!(said[0].starts_with(&format!("watchd: no GPU evidence: {}", missing.display())), "{r}");
    let all = read_events(&events);
    let samples = gpu_of_samples(&all);
    assert!(!samples.is_empty() && samples.iter().all(|s| *s == (None, None)), "{samples:?}");
    for dump in named(&all, "dump") {
        for p in dump["processes"].as_array().unwrap() {
            assert_eq!(
                (&p["gpu_util"], &p["gpu_memory_bytes"]),
                (&Value::Null, &Value::Null),
                "{p}"
            );
        }
    }
    let text = fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("watchd_processes") && !text.contains("watchd_gpu"), "{text}");

    // Without -v: not a word.
    let mut cmd = watchd(STALL.iter().copied().chain(["sleep", "1000"]));
    cmd.env("WATCHD_NVML_LIBRARY", &missing);
    let r = run(cmd);
    assert_stalled(&r, "no CPU or I/O progress");
    assert!(!r.stderr.contains("GPU"), "{r}");
}

#[test]
fn samples_metrics_and_the_dump_carry_the_figures() {
    let fake = Fake::new("figures", "device 0\n");
    let events = fake.dir.path("events");
    let metrics = fake.dir.path("metrics");
    let job = fake.job(BUSY, "exec sleep 1000");
    let mut args = stall_and_timeout(&events, "2s");
    args.extend(["--metrics-file".to_string(), metrics.display().to_string()]);
    let r = run(fake.watchd(&as_strs(&args), &job));
    assert_timed_out_not_stalled(&r);
    let all = read_events(&events);
    let samples = gpu_of_samples(&all);
    assert_eq!(samples.last(), Some(&(Some(60.0), Some(1048576))), "{samples:?}");
    // The metrics file of the last probe.
    let text = fs::read_to_string(&metrics).unwrap();
    let value = |name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name}:\n{text}"));
        line[name.len() + 1..].parse().unwrap()
    };
    assert!((value("watchd_gpu_utilization_ratio") - 0.6).abs() < 1e-9, "{text}");
    assert_eq!(value("watchd_gpu_memory_bytes"), 1048576.0, "{text}");
    // The timeout's dump: the stderr picture and the event.
    let line =
        r.stderr.lines().find(|l| l.contains("  sleep 1000")).unwrap_or_else(|| panic!("{r}"));
    assert!(line.contains(" gpu 60% 1.0MiB  "), "{line}\n{r}");
    let dump = named(&all, "dump");
    let main = &dump[0]["processes"][0];
    assert_eq!(
        (&main["gpu_util"], &main["gpu_memory_bytes"]),
        (&Value::from(60), &Value::from(1048576)),
        "{main}"
    );
}

#[test]
fn a_library_that_fails_or_lies_changes_nothing_else() {
    // Each would make the job busy if it were believed. Failing calls and impossible counts
    // are no answer: the run is the one without NVML, and -v notes each failing call once.
    let cases = [
        (
            "errors",
            "device 0\nerror utilization\nerror processes\n",
            "nvmlDeviceGetProcessUtilization failed (Unknown Error",
        ),
        (
            "garbage",
            "device 0\ngarbage utilization\ngarbage processes\n",
            "nvmlDeviceGetProcessUtilization failed (answered a count of",
        ),
    ];
    for (tag, fixed, note) in cases {
        let fake = Fake::new(tag, fixed);
        let events = fake.dir.path("events");
        let job = fake
            .job(&format!("{fixed}sample 0 $$ 60 now\nprocess 0 $$ 1048576"), "exec sleep 1000");
        let mut args: Vec<String> = STALL.iter().map(|s| s.to_string()).collect();
        args.extend(["-v", "--events"].map(String::from));
        args.push(events.display().to_string());
        let r = run(fake.watchd(&as_strs(&args), &job));
        assert_stalled(&r, "no CPU or I/O progress");
        assert!(!r.stderr.contains("panicked"), "{r}");
        assert_eq!(r.stderr.matches(note).count(), 1, "{tag}: noted once\n{r}");
        let all = read_events(&events);
        let samples = gpu_of_samples(&all);
        assert!(samples.iter().all(|s| *s == (None, None)), "{tag}: {samples:?}");
        let p = &named(&all, "dump")[0]["processes"][0];
        assert_eq!(
            (&p["gpu_util"], &p["gpu_memory_bytes"]),
            (&Value::Null, &Value::Null),
            "{tag}: {p}"
        );
    }
    // Utilization past 100 % is not a percentage: no evidence, though NVML answered.
    let fake = Fake::new("range", "device 0\n");
    let job = fake.job("device 0\nsample 0 $$ 1000 now", "exec sleep 1000");
    let r = run(fake.watchd(&STALL, &job));
    assert_stalled(&r, "no CPU, I/O or GPU progress");
}

#[test]
fn a_bad_gpu_evidence_value_is_a_usage_error() {
    let dir = TempDir::new("bad-scope");
    let marker = dir.path("started");
    let touch = format!("touch '{}'", marker.display());
    let by_flag = watchd(["--gpu-evidence", "host", "sh", "-c", &touch]);
    let mut by_env = watchd(["sh", "-c", &touch]);
    by_env.env("WATCHD_GPU_EVIDENCE", "host");
    for cmd in [by_flag, by_env] {
        let r = run(cmd);
        r.assert_code(125);
        assert_eq!(r.stderr.lines().count(), 1, "{r}");
        assert!(
            r.stderr.starts_with("watchd: ")
                && r.stderr.contains("--gpu-evidence")
                && r.stderr.contains("host"),
            "{r}"
        );
        assert!(!marker.exists(), "the command was started\n{r}");
    }
    let mut cmd = watchd(["sh", "-c", &touch]);
    cmd.env("WATCHD_GPU_EVIDENCE", "device");
    run(cmd).assert_code(0);
    assert!(marker.exists());
}
