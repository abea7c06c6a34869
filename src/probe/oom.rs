//! The kernel's OOM-kill counters, read before the command starts and again when it dies of
//! SIGKILL, so the diagnosis can name the OOM killer only when a counter rose.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
