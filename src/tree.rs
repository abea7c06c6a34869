//! Signalling members of the tree without ever hitting a stranger: a pid seen by a scan is
//! signalled through a pidfd, and only after checking that the pidfd's process is the one the
//! scan saw (same start time) or, when the tree is a cgroup, that it is in the cgroup, so a pid
//! recycled since the scan is left alone; and the kill that stops the tree before it kills it
//! (or, with a cgroup, `cgroup.kill`), so nothing that forks can outrun it.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;

use crate::probe::{Prober, parse_stat};
use crate::signals::{SIGCONT, SIGKILL, SIGSTOP, Signal};
use crate::sys;

/// Outcome of one attempt to signal one process.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    Delivered,
    /// The process is gone, or the pid now belongs to someone else.
    Gone,
}

/// A scanned process, held so that signals reach it and never a successor with its pid.
enum Pinned {
    /// Through a pidfd, opened before the start time was checked.
    Pidfd(OwnedFd),
    /// Kernels before 5.3: the narrowest window we can have without pidfds.
    Pid(i32),
}

/// How a scanned process is known again.
#[derive(Clone, Copy)]
enum Identity<'a> {
    /// By its start time.
    Start(u64),
    /// By being in the cgroup at this path (or one inside it): any such process is the tree's.
    In(&'a Path),
}

impl Pinned {
    /// The process that had `pid` and `starttime` when it was scanned, if it still does.
    fn new(pid: i32, starttime: u64) -> Option<Pinned> {
        Pinned::known(pid, Identity::Start(starttime))
    }

    /// The process with `pid` now, if it is the one `identity` says.
    fn known(pid: i32, identity: Identity<'_>) -> Option<Pinned> {
        if pid <= 1 {
            return None;
        }
        let pinned = match sys::pidfd_open(pid) {
            Ok(fd) => Pinned::Pidfd(fd),
            Err(Errno::ENOSYS) => Pinned::Pid(pid),
            Err(_) => return None,
        };
        // Checked after the pidfd pins the process: if it is the one the scan saw now, the
        // pidfd is that process and no signal can reach a successor.
        let same = match identity {
            Identity::Start(starttime) => starttime_of(pid) == Some(starttime),
            Identity::In(cgroup) => cgroup_of(pid).is_some_and(|c| c.starts_with(cgroup)),
        };
        same.then_some(pinned)
    }

    fn send(&self, sig: Signal) -> bool {
        match self {
            Pinned::Pidfd(fd) => sys::pidfd_send_signal(fd.as_fd(), sig).is_ok(),
            Pinned::Pid(pid) => sys::kill(*pid, sig).is_ok(),
        }
    }
}

/// Sends `sig` to the process that had `pid` and `starttime` when it was scanned.
pub fn send_verified(pid: i32, starttime: u64, sig: Signal) -> Sent {
    send_pinned(Pinned::new(pid, starttime), sig)
}

/// Sends `sig` to `pid` if it is in the cgroup at `cgroup` (as /proc/PID/cgroup names it) or in
/// one inside it, checked once a pidfd holds the process.
pub fn send_if_member(pid: i32, cgroup: &Path, sig: Signal) -> Sent {
    send_pinned(Pinned::known(pid, Identity::In(cgroup)), sig)
}

fn send_pinned(pinned: Option<Pinned>, sig: Signal) -> Sent {
    match pinned {
        Some(p) if p.send(sig) => Sent::Delivered,
        _ => Sent::Gone,
    }
}

fn starttime_of(pid: i32) -> Option<u64> {
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text).map(|stat| stat.starttime)
}

fn cgroup_of(pid: i32) -> Option<std::path::PathBuf> {
    let text = std::fs::read(format!("/proc/{pid}/cgroup")).ok()?;
    crate::cgroup::parse_proc_cgroup(&text)
}

/// The members of the tree now, each with how it is to be known again.
fn members(prober: &mut Prober, exclude: &[i32]) -> (Vec<(i32, u64)>, Option<std::path::PathBuf>) {
    let members = prober.members(exclude);
    (members, prober.cgroup_path().map(Path::to_path_buf))
}

fn pin(pid: i32, starttime: u64, cgroup: Option<&Path>) -> Option<Pinned> {
    Pinned::known(pid, cgroup.map_or(Identity::Start(starttime), Identity::In))
}

/// Sends `sig` (then SIGCONT if `cont`) to every live member of the tree, `exclude` subtrees
/// left out and `skip` (a process the caller signals itself, so it gets the signal once) passed
/// over. Returns how many processes got the signal.
pub fn signal_all(
    prober: &mut Prober,
    exclude: &[i32],
    skip: Option<i32>,
    sig: Signal,
    cont: bool,
) -> u32 {
    let mut count = 0;
    let (members, cgroup) = members(prober, exclude);
    for (pid, start) in members {
        if Some(pid) == skip {
            continue;
        }
        if let Some(p) = pin(pid, start, cgroup.as_deref())
            && p.send(sig)
        {
            if cont {
                p.send(SIGCONT);
            }
            count += 1;
        }
    }
    count
}

/// The drain's stop: `sig` and SIGCONT to the main child (our unreaped child, so its pid is
/// safe to use) and then to every other live member. The members are scanned and pinned
/// before the main child is signalled: once it dies, its children move to watchd while a
/// scan reads the tree, and a scan at that moment could miss them. Returns what the signal
/// to the main child gave, and how many others got it.
pub fn stop_tree(
    prober: &mut Prober,
    exclude: &[i32],
    main: i32,
    sig: Signal,
) -> (Result<(), Errno>, u32) {
    let (members, cgroup) = members(prober, exclude);
    let pinned: Vec<Pinned> = members
        .into_iter()
        .filter(|&(pid, _)| pid != main)
        .filter_map(|(pid, start)| pin(pid, start, cgroup.as_deref()))
        .collect();
    let sent = sys::kill(main, sig);
    let _ = sys::kill(main, SIGCONT);
    let mut count = 0;
    for p in &pinned {
        if p.send(sig) {
            p.send(SIGCONT);
            count += 1;
        }
    }
    (sent, count)
}

/// Forwards a batch of signals to every live member with one walk of the tree: each process
/// gets each distinct signal once, in the order of first arrival. Returns the signals that
/// reached at least one process.
pub fn signal_batch(prober: &mut Prober, exclude: &[i32], sigs: &[Signal]) -> Vec<Signal> {
    let mut distinct: Vec<Signal> = Vec::with_capacity(sigs.len().min(8));
    for &sig in sigs {
        if !distinct.contains(&sig) {
            distinct.push(sig);
        }
    }
    let mut delivered = vec![false; distinct.len()];
    let (members, cgroup) = members(prober, exclude);
    for (pid, start) in members {
        let Some(p) = pin(pid, start, cgroup.as_deref()) else { continue };
        for (i, &sig) in distinct.iter().enumerate() {
            delivered[i] |= p.send(sig);
        }
    }
    distinct.into_iter().zip(delivered).filter_map(|(s, d)| d.then_some(s)).collect()
}

/// Most rescans a kill makes while the tree keeps changing under it.
const KILL_SCANS: usize = 1000;

/// What a kill of the tree found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Killed {
    /// Processes that got the signal.
    pub signalled: u32,
    /// Of them, in uninterruptible sleep (D): they die when the kernel lets them.
    pub stuck: u32,
}

/// Kills the tree so that a fork storm or a pid hopper (a process that forks a copy of itself
/// and exits, over and over) cannot outrun it. The main child's process group, `group`, is
/// stopped at once with one kill(-pgid) while it has members: the kernel lets no fork escape a
/// group signal, and a group id stays taken while the group has members, so it is still the
/// one the main child made (another process could take that id only after the whole group
/// died and the pid numbers wrapped around).
/// Then every member is stopped with SIGSTOP, rescanning until a scan finds no member that is
/// not stopped yet (a stopped process forks no more), and each gets `sig` (and SIGCONT, so a
/// stopped process takes a catchable one). `skip` is the main child, which the caller
/// signals itself. The pidfds are held from the stop to the kill, so no pid can be recycled
/// in between. (A hopper that left the group with setsid is caught only by the rescans; a
/// cgroup catches it for sure.)
///
/// With a cgroup, SIGKILL is one write to `cgroup.kill`, which no fork can outrun; the count is
/// of the members just before it. Other kill signals take the way above over the cgroup's
/// members.
pub fn kill_tree(
    prober: &mut Prober,
    exclude: &[i32],
    skip: Option<i32>,
    group: i32,
    sig: Signal,
) -> Killed {
    if sig == SIGKILL
        && let Some(killed) = kill_cgroup(prober, skip)
    {
        if sys::group_exists(group) {
            let _ = sys::kill_group(group, SIGKILL);
        }
        return killed;
    }
    let mut held: Vec<((i32, u64), Pinned)> = Vec::new();
    let ours = skip.is_some() || sys::group_exists(group);
    if ours {
        let _ = sys::kill_group(group, SIGSTOP);
    }
    for _ in 0..KILL_SCANS {
        let mut fresh = 0;
        let (members, cgroup) = members(prober, exclude);
        for member in members {
            if Some(member.0) == skip || held.iter().any(|(m, _)| *m == member) {
                continue;
            }
            if let Some(p) = pin(member.0, member.1, cgroup.as_deref()) {
                p.send(SIGSTOP);
                held.push((member, p));
                fresh += 1;
            }
        }
        if fresh == 0 {
            break;
        }
    }
    let mut killed = Killed::default();
    if ours {
        let _ = sys::kill_group(group, sig);
        let _ = sys::kill_group(group, SIGCONT);
    }
    for ((pid, _), p) in &held {
        if p.send(sig) {
            if sig != SIGKILL {
                p.send(SIGCONT);
            }
            killed.signalled += 1;
            if prober_state(*pid) == Some(b'D') {
                killed.stuck += 1;
            }
        }
    }
    killed
}

/// SIGKILL through `cgroup.kill`; `None` without a cgroup, or where the kernel has no such
/// file (before 5.14: the signal walk does it). `skip` (the main child, which the caller
/// signals and counts itself) is killed too, but not counted.
fn kill_cgroup(prober: &mut Prober, skip: Option<i32>) -> Option<Killed> {
    let (members, _) = members(prober, &[]);
    prober.cgroup()?.kill().ok()?;
    let mut killed = Killed::default();
    for (pid, _) in members.into_iter().filter(|&(pid, _)| Some(pid) != skip) {
        killed.signalled += 1;
        if prober_state(pid) == Some(b'D') {
            killed.stuck += 1;
        }
    }
    Some(killed)
}

/// The state letter of `pid` now.
fn prober_state(pid: i32) -> Option<u8> {
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text).map(|stat| stat.state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::SIGTERM;
    use std::process::Command;

    #[test]
    fn a_stale_start_time_is_never_signalled() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let start = starttime_of(pid).expect("child is in /proc");
        assert_eq!(send_verified(pid, start + 1, SIGTERM), Sent::Gone);
        assert!(child.try_wait().unwrap().is_none(), "a mismatched process was signalled");
        assert_eq!(send_verified(pid, start, SIGTERM), Sent::Delivered);
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }

    #[test]
    fn never_signals_init_or_groups() {
        for pid in [-1, 0, 1] {
            assert_eq!(send_verified(pid, 0, SIGTERM), Sent::Gone);
        }
    }
}
