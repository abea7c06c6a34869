//! How watchd ends: the child's end mapped to watchd's own exit status in one table, the
//! re-raise of a fatal signal, and the text that says how the child ended.

use std::fmt;

use crate::signals::{SigSet, Signal};

/// watchd failed: usage error, bad value, internal error.
pub const FAILURE: u8 = 125;
/// COMMAND was found but could not be executed.
pub const NOT_EXECUTABLE: u8 = 126;
/// COMMAND was not found.
pub const NOT_FOUND: u8 = 127;

/// How the main child ended, from its wait status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildEnd {
    Exited(u8),
    Killed(Signal),
}

impl ChildEnd {
    /// Decodes a `waitpid` status of a child that has terminated (not stopped).
    pub fn from_wait_status(status: i32) -> Option<ChildEnd> {
        if libc::WIFEXITED(status) {
            Some(ChildEnd::Exited(libc::WEXITSTATUS(status) as u8))
        } else if libc::WIFSIGNALED(status) {
            Signal::from_raw(libc::WTERMSIG(status)).map(ChildEnd::Killed)
        } else {
            None
        }
    }
}

impl fmt::Display for ChildEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildEnd::Exited(code) => write!(f, "exited with status {code}"),
            ChildEnd::Killed(sig) => write!(f, "killed by {sig}"),
        }
    }
}

/// What watchd does last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Code(u8),
    /// Die of this signal, so the caller sees what it would have seen without watchd.
    Reraise(Signal),
}

/// The one place the child's end becomes watchd's exit status.
pub fn outcome(
    end: ChildEnd,
    stopped_by_watchd: bool,
    exit_code_on_stop: Option<u8>,
    pid1: bool,
) -> Outcome {
    match (end, exit_code_on_stop) {
        (_, Some(code)) if stopped_by_watchd => Outcome::Code(code),
        (ChildEnd::Exited(code), _) => Outcome::Code(code),
        // A PID 1 cannot be killed by its own signals: report the shell convention instead.
        (ChildEnd::Killed(sig), _) if pid1 => Outcome::Code(shell_code(sig)),
        (ChildEnd::Killed(sig), _) => Outcome::Reraise(sig),
    }
}

/// 128+N, the status a shell reports for death by signal N.
pub fn shell_code(sig: Signal) -> u8 {
    (128 + sig.as_raw()).min(255) as u8
}

/// Dies of `sig` with core dumps off; exits 128+N if the signal does not kill.
pub fn reraise(sig: Signal) -> ! {
    let no_core = libc::rlimit { rlim_cur: 0, rlim_max: libc::RLIM_INFINITY };
    let mut current = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the structs passed; lowering only the soft
    // limit is always allowed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_CORE, &mut current) == 0 {
            libc::setrlimit(
                libc::RLIMIT_CORE,
                &libc::rlimit { rlim_max: current.rlim_max, ..no_core },
            );
        }
    }
    crate::signals::set_default(sig);
    let mut only = SigSet::empty();
    only.add(sig);
    // SAFETY: kill on our own pid; the signal is pending once this returns.
    unsafe { libc::kill(libc::getpid(), sig.as_raw()) };
    only.unblock();
    std::process::exit(i32::from(shell_code(sig)))
}

/// The kernel's OOM-kill counters that can rise during a run: the memory cgroup's (v2
/// `memory.events`, v1 `memory.oom_control`) and the machine's (`/proc/vmstat`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OomCounters {
    pub cgroup: Option<u64>,
    pub machine: Option<u64>,
}

impl OomCounters {
    /// Reads the counters for watchd's own memory cgroup, which the child shares. Anything
    /// unreadable is `None`.
    pub fn read() -> OomCounters {
        let cgroup =
            read_small("/proc/self/cgroup").and_then(|text| cgroup_oom_kills(&text, read_small));
        // Only needed where the cgroup has no counter (see `rise_since`).
        let machine = match cgroup {
            Some(_) => None,
            None => read_small("/proc/vmstat").and_then(|t| counter(&t, "oom_kill")),
        };
        OomCounters { cgroup, machine }
    }

    /// "oom_kill rose by 1" when a counter rose since `before`; the cgroup's is preferred
    /// because it counts only kills among the child's neighbours.
    pub fn rise_since(&self, before: &OomCounters) -> Option<String> {
        let rise = |now: Option<u64>, then: Option<u64>| match (now, then) {
            (Some(now), Some(then)) if now > then => Some(now - then),
            _ => None,
        };
        if let Some(n) = rise(self.cgroup, before.cgroup) {
            return Some(format!(
                "the kernel's OOM killer: oom_kill of its memory cgroup rose by {n}"
            ));
        }
        rise(self.machine, before.machine)
            .map(|n| format!("likely the kernel's OOM killer: /proc/vmstat oom_kill rose by {n}"))
    }
}

/// A small /proc or /sys file in one or two reads (std would start at 32 bytes, since
/// these files report a size of 0).
fn read_small(path: &str) -> Option<String> {
    use std::io::Read;
    let mut text = String::with_capacity(8192);
    std::fs::File::open(path).ok()?.read_to_string(&mut text).ok()?;
    Some(text)
}

/// `key value` from a flat keyed file such as memory.events or /proc/vmstat.
fn counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The oom_kill count of the memory cgroup named in a /proc/self/cgroup text.
fn cgroup_oom_kills(proc_cgroup: &str, read: impl Fn(&str) -> Option<String>) -> Option<u64> {
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.trim_end_matches('/');
        let candidates: Vec<(String, &str)> = if controllers.split(',').any(|c| c == "memory") {
            vec![(format!("/sys/fs/cgroup/memory{path}/memory.oom_control"), "oom_kill")]
        } else if controllers.is_empty() {
            vec![
                (format!("/sys/fs/cgroup{path}/memory.events"), "oom_kill"),
                (format!("/sys/fs/cgroup/unified{path}/memory.events"), "oom_kill"),
            ]
        } else {
            continue;
        };
        if let Some(n) = candidates.iter().find_map(|(file, key)| counter(&read(file)?, key)) {
            return Some(n);
        }
    }
    None
}

/// What watchd last saw of the tree, for the diagnosis of a death it did not cause.
pub struct LastSeen {
    pub rss_bytes: u64,
    pub cpu_cores: Option<f64>,
    pub processes: u32,
    pub since_progress: std::time::Duration,
}

/// "child killed by SIGKILL, not sent by watchd (the kernel's OOM killer: ...); last seen
/// 1.9 GiB resident, 0.98 cores, 4 processes, 0s since progress"
pub fn diagnose(sig: Signal, oom: Option<&str>, last: Option<&LastSeen>) -> String {
    let mut text = format!("child killed by {sig}, not sent by watchd");
    if let Some(cause) = oom {
        text.push_str(&format!(" ({cause})"));
    }
    match last {
        Some(l) => {
            let cores = l.cpu_cores.map_or("? cores".to_string(), |c| format!("{c:.2} cores"));
            let processes = match l.processes {
                1 => "1 process".to_string(),
                n => format!("{n} processes"),
            };
            text.push_str(&format!(
                "; last seen {} resident, {cores}, {processes}, {} since progress",
                crate::policy::human_bytes(l.rss_bytes),
                crate::policy::human_duration(l.since_progress),
            ));
        }
        None => text.push_str("; no probe had run yet"),
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::{SIGINT, SIGKILL, SIGTERM};

    #[test]
    fn exit_status_table() {
        use ChildEnd::*;
        use Outcome::*;
        let table = [
            // (end, stopped by watchd, --exit-code-on-stop, pid 1) -> outcome
            ((Exited(0), false, None, false), Code(0)),
            ((Exited(3), false, None, false), Code(3)),
            ((Exited(255), false, None, true), Code(255)),
            ((Exited(3), false, Some(124), false), Code(3)),
            ((Exited(0), true, Some(124), false), Code(124)),
            ((Exited(143), true, None, false), Code(143)),
            ((Killed(SIGTERM), false, None, false), Reraise(SIGTERM)),
            ((Killed(SIGINT), false, None, true), Code(130)),
            ((Killed(SIGKILL), true, None, true), Code(137)),
            ((Killed(SIGKILL), true, Some(124), false), Code(124)),
            ((Killed(SIGKILL), false, Some(124), false), Reraise(SIGKILL)),
        ];
        for ((end, stopped, on_stop, pid1), want) in table {
            assert_eq!(
                outcome(end, stopped, on_stop, pid1),
                want,
                "{end:?} {stopped} {on_stop:?} {pid1}"
            );
        }
    }

    #[test]
    fn every_exit_code_is_mirrored() {
        for code in 0..=255u8 {
            assert_eq!(outcome(ChildEnd::Exited(code), false, None, false), Outcome::Code(code));
        }
    }

    #[test]
    fn decodes_wait_statuses() {
        assert_eq!(ChildEnd::from_wait_status(3 << 8), Some(ChildEnd::Exited(3)));
        assert_eq!(ChildEnd::from_wait_status(libc::SIGTERM), Some(ChildEnd::Killed(SIGTERM)));
        assert_eq!(
            ChildEnd::from_wait_status(libc::SIGKILL | 0x80),
            Some(ChildEnd::Killed(SIGKILL))
        );
        // Stopped by SIGTSTP: not an end.
        assert_eq!(ChildEnd::from_wait_status((libc::SIGTSTP << 8) | 0x7f), None);
    }

    #[test]
    fn finds_oom_kills_in_v1_and_v2_cgroups() {
        let files = |path: &str| match path {
            "/sys/fs/cgroup/memory/job/memory.oom_control" => {
                Some("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n".to_string())
            }
            "/sys/fs/cgroup/ci/memory.events" => {
                Some("low 0\nhigh 0\nmax 4\noom 1\noom_kill 3\n".to_string())
            }
            _ => None,
        };
        let v1 = "12:pids:/job\n4:memory:/job\n0::/\n";
        assert_eq!(cgroup_oom_kills(v1, files), Some(2));
        assert_eq!(cgroup_oom_kills("0::/ci\n", files), Some(3));
        assert_eq!(cgroup_oom_kills("0::/elsewhere\n", files), None);
        assert_eq!(cgroup_oom_kills("garbage", files), None);
    }

    #[test]
    fn oom_rise_prefers_the_cgroup() {
        let before = OomCounters { cgroup: Some(1), machine: Some(10) };
        let same = before.clone();
        assert_eq!(same.rise_since(&before), None);
        let machine = OomCounters { cgroup: Some(1), machine: Some(12) };
        assert!(machine.rise_since(&before).unwrap().contains("/proc/vmstat oom_kill rose by 2"));
        let both = OomCounters { cgroup: Some(2), machine: Some(12) };
        assert!(both.rise_since(&before).unwrap().contains("memory cgroup rose by 1"));
        assert_eq!(OomCounters::default().rise_since(&before), None);
    }

    #[test]
    fn diagnosis_names_signal_cause_and_figures() {
        let last = LastSeen {
            rss_bytes: 2040 << 20,
            cpu_cores: Some(0.98),
            processes: 4,
            since_progress: std::time::Duration::ZERO,
        };
        let text =
            diagnose(SIGKILL, Some("the kernel's OOM killer: oom_kill rose by 1"), Some(&last));
        assert_eq!(
            text,
            "child killed by SIGKILL, not sent by watchd (the kernel's OOM killer: oom_kill rose by 1); \
             last seen 2.0 GiB resident, 0.98 cores, 4 processes, 0s since progress"
        );
        assert_eq!(
            diagnose(SIGTERM, None, None),
            "child killed by SIGTERM, not sent by watchd; no probe had run yet"
        );
    }
}
