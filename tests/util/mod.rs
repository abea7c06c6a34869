//! Shared test harness: runs the real watchd binary with a hermetic environment (no WATCHD_*),
//! dumps command, status, stdout and stderr on failure, and waits on conditions under a
//! deadline instead of sleeping.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const WATCHD: &str = env!("CARGO_BIN_EXE_watchd");

/// A watchd command with every WATCHD_* variable removed and stdin from /dev/null.
///
/// `WATCHD_TEST_CGROUP=on` (or `off`) runs every such watchd with `WATCHD_CGROUP` set so: test.sh
/// runs the suites about the tree a second time with the command in a cgroup of its own.
pub fn watchd<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(WATCHD);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WATCHD_") {
            cmd.env_remove(key);
        }
    }
    if let Some(mode) = cgroup_mode() {
        cmd.env("WATCHD_CGROUP", mode);
    }
    cmd.args(args).stdin(Stdio::null());
    cmd
}

/// The directory of the cgroup v2 that `pid` is in, from /proc/PID/cgroup (on a hybrid system
/// the unified hierarchy is mounted at /sys/fs/cgroup/unified).
pub fn cgroup_dir_of(pid: i32) -> Option<PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?.trim_start_matches('/');
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(|mount| Path::new(mount).join(path))
        .find(|dir| dir.join("cgroup.procs").exists())
}

/// The cgroup a watchd made (`watchd-PID`) that `pid` is in, if it is in one.
pub fn watchd_cgroup_of(pid: i32) -> Option<PathBuf> {
    cgroup_dir_of(pid)
        .filter(|d| d.file_name().is_some_and(|n| n.to_string_lossy().starts_with("watchd-")))
}

/// Removes a cgroup a watchd left behind (SIGKILLed, or --no-cleanup), once its last process
/// has gone.
#[track_caller]
pub fn remove_left_cgroup(dir: &Path) {
    wait_for("a left cgroup to empty", Duration::from_secs(10), || fs::remove_dir(dir).is_ok());
}

/// The `--cgroup` the suites run under (`WATCHD_TEST_CGROUP`), if one was asked for.
pub fn cgroup_mode() -> Option<String> {
    std::env::var("WATCHD_TEST_CGROUP").ok().filter(|m| !m.is_empty())
}

/// The whole story of one run, printed when an assertion about it fails.
pub struct Run {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn signal(&self) -> Option<i32> {
        self.status.signal()
    }

    #[track_caller]
    pub fn assert_code(&self, want: i32) -> &Run {
        assert_eq!(self.code(), Some(want), "wrong exit status\n{self}");
        self
    }

    #[track_caller]
    pub fn assert_stderr_has(&self, needle: &str) -> &Run {
        assert!(self.stderr.contains(needle), "stderr lacks {needle:?}\n{self}");
        self
    }

    #[track_caller]
    pub fn assert_took(&self, min: Duration, max: Duration) -> &Run {
        assert!(
            self.took >= min && self.took <= max,
            "took {:?}, want {min:?}..={max:?}\n{self}",
            self.took
        );
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- command: {}\n--- status: {:?} after {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.what, self.status, self.took, self.stdout, self.stderr
        )
    }
}

/// Runs to completion and captures everything. A hard deadline kills a hung watchd so a bug
/// fails one test instead of hanging the suite.
pub fn run(mut cmd: Command) -> Run {
    run_within(&mut cmd, Duration::from_secs(60))
}

pub fn run_within(cmd: &mut Command, limit: Duration) -> Run {
    let what = format!("{cmd:?}");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn watchd");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_deadline(&mut child, limit).unwrap_or_else(|| {
        let _ = child.kill();
        let status = child.wait().unwrap();
        panic!(
            "{what} did not finish within {limit:?} (killed: {status:?}); stderr so far is lost"
        );
    });
    let took = start.elapsed();
    Run { what, status, stdout: reader.join().unwrap(), stderr: err_reader.join().unwrap(), took }
}

/// Waits for a child under a deadline by polling `try_wait`.
pub fn wait_deadline(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Polls `cond` until it holds or `limit` passes (tini's busy_wait).
#[track_caller]
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A fresh scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("watchd-test-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Reads a file that a test child writes, once it exists and is non-empty.
pub fn wait_file(path: &Path, limit: Duration) -> String {
    let mut text = String::new();
    wait_for(&format!("{}", path.display()), limit, || {
        text = fs::read_to_string(path).unwrap_or_default();
        text.ends_with('\n')
    });
    text
}

/// Whether a pid is alive and not a zombie.
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state =
                stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// Pids listed one per line in a file.
pub fn pids_in(text: &str) -> Vec<i32> {
    text.split_whitespace().filter_map(|w| w.parse().ok()).collect()
}

/// Every process whose environment carries `tag` (tests mark their processes this way to
/// find survivors without racing on pids).
pub fn processes_tagged(tag: &str) -> Vec<i32> {
    let needle = format!("WATCHD_TEST_TAG={tag}");
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()) && alive(pid) {
            found.push(pid);
        }
    }
    found
}

/// A unique tag for `processes_tagged`.
pub fn unique_tag(name: &str) -> String {
    format!("{name}-{}-{:?}", std::process::id(), Instant::now())
}

/// Starts a process in a new session, out of the test's tree, that must survive untouched:
/// the sentinel of the "never signal a stranger" checks.
pub fn sentinel() -> Child {
    let mut cmd = Command::new("sleep");
    cmd.arg("300");
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}
