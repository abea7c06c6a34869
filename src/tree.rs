//! Signalling members of the tree without ever hitting a stranger: a pid seen by a scan is
//! signalled through a pidfd, and only after checking that the pidfd's process is the one the
//! scan saw (same start time), so a pid recycled since the scan is left alone.

use std::os::fd::AsFd;

use nix::errno::Errno;

use crate::probe::{Prober, parse_stat};
use crate::signals::Signal;
use crate::sys;

/// Outcome of one attempt to signal one process.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    Delivered,
    /// The process is gone, or the pid now belongs to someone else.
    Gone,
}

/// Sends `sig` to the process that had `pid` and `starttime` when it was scanned.
pub fn send_verified(pid: i32, starttime: u64, sig: Signal) -> Sent {
    if pid <= 1 {
        return Sent::Gone;
    }
    let delivered = match sys::pidfd_open(pid) {
        // Checked after the pidfd pins the process: if the start time matches now, the pidfd
        // is the scanned process and the signal cannot reach a successor.
        Ok(fd) => {
            starttime_of(pid) == Some(starttime) && sys::pidfd_send_signal(fd.as_fd(), sig).is_ok()
        }
        // Kernels before 5.3: the narrowest window we can have without pidfds.
        Err(Errno::ENOSYS) => starttime_of(pid) == Some(starttime) && sys::kill(pid, sig).is_ok(),
        Err(_) => false,
    };
    if delivered { Sent::Delivered } else { Sent::Gone }
}

fn starttime_of(pid: i32) -> Option<u64> {
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text).map(|stat| stat.starttime)
}

/// Sends `sig` (then SIGCONT if `cont`) to every live member of the tree, `exclude` subtrees
/// left out and `skip` (a process the caller signals itself, so it gets the signal once) passed
/// over. With `rounds` > 1 it scans again while new members keep appearing, so a fork storm
/// cannot outrun a kill. Returns how many processes got the signal.
pub fn signal_all(
    prober: &mut Prober,
    exclude: &[i32],
    skip: Option<i32>,
    sig: Signal,
    cont: bool,
    rounds: u32,
) -> u32 {
    let mut signalled: Vec<(i32, u64)> = Vec::new();
    for _ in 0..rounds.max(1) {
        let members = prober.members(exclude);
        let fresh: Vec<_> =
            members.into_iter().filter(|m| Some(m.0) != skip && !signalled.contains(m)).collect();
        if fresh.is_empty() {
            break;
        }
        for &(pid, start) in &fresh {
            if send_verified(pid, start, sig) == Sent::Delivered {
                if cont {
                    send_verified(pid, start, crate::signals::SIGCONT);
                }
                signalled.push((pid, start));
            }
        }
    }
    signalled.len() as u32
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
