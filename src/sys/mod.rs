//! The system layer: every call into the kernel that needs `unsafe` lives here (the fork/exec
//! child path aside, which `spawn` keeps), each behind a safe function with its SAFETY comment.
//! Where nix has the call and is right for every case watchd meets, nix makes it; the raw
//! calls left are the ones nix lacks or gets wrong for watchd:
//! - `kill`: nix's takes its `Signal` enum, which has no real-time signals;
//! - `waitpid`: nix's decodes the status into that enum too, and for a child killed by a
//!   real-time signal it returns EINVAL *after* reaping it, so the status is lost
//!   (`nix_waitpid_loses_realtime_deaths` below shows it);
//! - `pidfd_open`, `pidfd_send_signal`: not in nix;
//! - reading a signalfd: nix reads one `siginfo` per system call; watchd reads a batch;
//! - `sigset_t` with real-time members, `sigaction` queries and `sigtimedwait`: nix's types
//!   cannot hold real-time signals.
//!
//! `nvml` holds the calls into NVIDIA's management library, opened at run time (GPU evidence);
//! `cgroup` the extended attributes that mark a delegated cgroup.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

use crate::signals::Signal;

pub mod cgroup;
pub mod nvml;

/// A set of signals, real-time ones included (nix's `SigSet` only takes its own enum).
#[derive(Clone, Copy)]
pub struct SigSet(libc::sigset_t);

impl SigSet {
    pub fn empty() -> SigSet {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the whole set it is given.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            SigSet(set.assume_init())
        }
    }

    pub fn add(&mut self, sig: Signal) {
        // SAFETY: `self.0` is an initialised set and `sig` is a valid signal number.
        unsafe { libc::sigaddset(&mut self.0, sig.as_raw()) };
    }

    pub fn contains(&self, sig: Signal) -> bool {
        // SAFETY: as in `add`; sigismember only reads.
        unsafe { libc::sigismember(&self.0, sig.as_raw()) == 1 }
    }

    /// The calling thread's current signal mask.
    pub fn current_mask() -> SigSet {
        let mut set = SigSet::empty();
        // SAFETY: a null new set only reads the mask into `set`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut set.0) };
        set
    }

    /// Replaces the calling thread's mask. Async-signal-safe: used between fork and exec.
    pub fn set_mask(&self) {
        // SAFETY: `self.0` is an initialised set; the old mask is not wanted.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }

    pub fn block(&self) {
        // SAFETY: as in `set_mask`.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &self.0, std::ptr::null_mut()) };
    }

    pub fn unblock(&self) {
        // SAFETY: as in `set_mask`.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &self.0, std::ptr::null_mut()) };
    }

    /// The raw set, for the async-signal-safe calls of a forked child.
    pub fn as_ptr(&self) -> *const libc::sigset_t {
        &self.0
    }

    fn as_nix(&self) -> nix::sys::signal::SigSet {
        // SAFETY: `self.0` was initialised by sigemptyset and only changed by sigaddset.
        unsafe { nix::sys::signal::SigSet::from_sigset_t_unchecked(self.0) }
    }
}

/// Whether `sig` is ignored (SIG_IGN) in this process right now.
pub fn is_ignored(sig: Signal) -> bool {
    let mut old = MaybeUninit::<libc::sigaction>::uninit();
    // SAFETY: a null new action only reads the current one into `old`.
    let rc = unsafe { libc::sigaction(sig.as_raw(), std::ptr::null(), old.as_mut_ptr()) };
    // SAFETY: sigaction filled `old` when it returned 0.
    rc == 0 && unsafe { old.assume_init() }.sa_sigaction == libc::SIG_IGN
}

/// Sets `sig` to its default action. Async-signal-safe.
pub fn set_default(sig: Signal) {
    set_handler(sig, libc::SIG_DFL);
}

/// Sets `sig` to be ignored. Async-signal-safe: used between fork and exec.
pub fn set_ignored(sig: Signal) {
    set_handler(sig, libc::SIG_IGN);
}

fn set_handler(sig: Signal, handler: libc::sighandler_t) {
    // SAFETY: an all-zero sigaction is valid (empty mask, no flags); only SIG_DFL or SIG_IGN is
    // ever installed, never a function, so no handler can run in an unexpected state.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        libc::sigaction(sig.as_raw(), &action, std::ptr::null_mut());
    }
}

/// A non-blocking, close-on-exec signalfd for `set` (which the caller keeps blocked).
pub fn signalfd(set: &SigSet) -> io::Result<OwnedFd> {
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let fd = SignalFd::with_flags(&set.as_nix(), SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
    Ok(OwnedFd::from(fd))
}

/// One signal read from a signalfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigInfo {
    pub signo: i32,
    /// `si_code`: SI_USER, SI_QUEUE, SI_TKILL (≤ 0) when another process sent it.
    pub code: i32,
    pub pid: u32,
}

/// Reads signals pending on `fd` into `out`, up to 16 per system call, until the descriptor is
/// drained (EAGAIN), a read fails, or `max` were read. Returns how many were read.
pub fn read_signals(fd: BorrowedFd<'_>, out: &mut Vec<SigInfo>, max: usize) -> usize {
    const BATCH: usize = 16;
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    let before = out.len();
    loop {
        // SAFETY: signalfd_siginfo is plain old data; all-zero is a valid value.
        let mut infos: [libc::signalfd_siginfo; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: reading at most the size of `infos` into it.
        let n = unsafe { libc::read(fd.as_raw_fd(), infos.as_mut_ptr().cast(), size * BATCH) };
        if n <= 0 {
            break; // EAGAIN: drained (EINTR: the next wake-up reads the rest)
        }
        let count = n as usize / size;
        out.extend(infos[..count].iter().map(|i| SigInfo {
            signo: i.ssi_signo as i32,
            code: i.ssi_code,
            pid: i.ssi_pid,
        }));
        if count < BATCH || out.len() - before >= max {
            break; // a signalfd read returns all that is pending, up to the buffer
        }
    }
    out.len() - before
}

/// `kill(pid, sig)` for a single process. Refuses anything that is not one process other than
/// init (pid ≤ 1 would mean a group, every process, or init), so no caller can get it wrong.
pub fn kill(pid: i32, sig: Signal) -> Result<(), Errno> {
    if pid <= 1 {
        return Err(Errno::ESRCH);
    }
    // SAFETY: kill has no memory-safety preconditions; pid > 1 names exactly one process.
    Errno::result(unsafe { libc::kill(pid, sig.as_raw()) }).map(drop)
}

/// `kill(-pgid, sig)`: every process of the group `pgid` (> 1).
pub fn kill_group(pgid: i32, sig: Signal) -> Result<(), Errno> {
    if pgid <= 1 {
        return Err(Errno::ESRCH);
    }
    // SAFETY: as in `kill`; -pgid with pgid > 1 names exactly one process group.
    Errno::result(unsafe { libc::kill(-pgid, sig.as_raw()) }).map(drop)
}

/// Whether process group `pgid` (> 1) has a member watchd may signal: kill(-pgid, 0).
pub fn group_exists(pgid: i32) -> bool {
    // SAFETY: signal 0 checks permission and existence and sends nothing; pgid > 1 names one
    // process group.
    pgid > 1 && unsafe { libc::kill(-pgid, 0) } == 0
}

/// A pidfd for `pid`, or the errno (ENOSYS before Linux 5.3, ESRCH when it is gone).
pub fn pidfd_open(pid: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `sig` to the process behind a pidfd, as kill(2) would.
pub fn pidfd_send_signal(fd: BorrowedFd<'_>, sig: Signal) -> Result<(), Errno> {
    // SAFETY: `fd` is a valid pidfd; a null info means "as if sent by kill".
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig.as_raw(),
            std::ptr::null::<u8>(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}

/// One result of `wait4(-1, WNOHANG | WUNTRACED)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// A child changed state: its pid, raw wait status (exited, killed or stopped), and the
    /// CPU time it and the children it reaped used (all zero for a stop).
    Child(i32, i32, std::time::Duration),
    /// Children exist but none changed state.
    Nothing,
    /// No children are left (ECHILD).
    NoChildren,
}

/// Reaps one child, if one is waiting, without blocking. EINTR is retried.
pub fn wait_any() -> Wait {
    wait_nohang(-1)
}

fn wait_nohang(which: i32) -> Wait {
    loop {
        let mut status = 0;
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: wait4 writes the status and resource usage of one of our children into
        // `status` and `usage`.
        let pid = unsafe {
            libc::wait4(which, &mut status, libc::WNOHANG | libc::WUNTRACED, usage.as_mut_ptr())
        };
        match pid {
            0 => return Wait::Nothing,
            p if p > 0 => {
                // SAFETY: zeroed is a valid rusage, and wait4 filled it in.
                let usage = unsafe { usage.assume_init() };
                return Wait::Child(p, status, cpu_time(&usage));
            }
            _ => match Errno::last() {
                Errno::EINTR => continue,
                Errno::ECHILD => return Wait::NoChildren,
                // EINVAL cannot happen with these flags; treat anything else as "nothing now".
                _ => return Wait::Nothing,
            },
        }
    }
}

/// User and system CPU time of a wait4 `rusage`.
fn cpu_time(usage: &libc::rusage) -> std::time::Duration {
    let time = |t: libc::timeval| {
        let secs = u64::try_from(t.tv_sec).unwrap_or(0);
        let micros = u64::try_from(t.tv_usec).unwrap_or(0);
        std::time::Duration::from_secs(secs) + std::time::Duration::from_micros(micros)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Waits for our child `pid` (blocking, retrying EINTR) and returns its raw wait status and the
/// CPU time it and the children it reaped used; `None` if it is not our child.
#[cfg(test)]
pub fn wait_with_cpu(pid: i32) -> Option<(i32, std::time::Duration)> {
    let mut status = 0;
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    loop {
        // SAFETY: `status` and `usage` are valid for the kernel to write.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, usage.as_mut_ptr()) };
        if rc == pid {
            break;
        }
        if rc >= 0 || Errno::last() != Errno::EINTR {
            return None;
        }
    }
    // SAFETY: zeroed is a valid rusage, and wait4 filled it in.
    let usage = unsafe { usage.assume_init() };
    Some((status, cpu_time(&usage)))
}

/// Waits for `pid` to end (blocking), retrying EINTR; used only for a child known to be exiting.
pub fn wait_for(pid: i32) {
    let mut status = 0;
    // SAFETY: waiting on our own child pid; `status` is written by the kernel.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 && Errno::last() == Errno::EINTR {}
}

/// Becomes a child subreaper: orphans of the tree are re-parented to watchd.
pub fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// A borrowed standard descriptor (0, 1 or 2), which stays open for watchd's whole life
/// (`reserve_standard_fds` parks /dev/null on a closed one).
pub fn standard_fd(fd: RawFd) -> BorrowedFd<'static> {
    assert!((0..3).contains(&fd), "not a standard descriptor: {fd}");
    // SAFETY: 0, 1 and 2 are open from `reserve_standard_fds` on and never closed by watchd.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// watchd's controlling terminal, opened through /dev/tty: job control follows the terminal,
/// not whatever stdin is (`echo x | watchd -- cmd` on an interactive shell still has one).
pub struct Tty(OwnedFd);

impl Tty {
    /// The controlling terminal, if watchd has one.
    pub fn open() -> Option<Tty> {
        use nix::fcntl::{OFlag, open};
        use nix::sys::stat::Mode;
        let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        open("/dev/tty", flags, Mode::empty()).ok().map(Tty)
    }

    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Whether watchd's own process group is the terminal's foreground group.
    pub fn is_foreground(&self) -> bool {
        nix::unistd::tcgetpgrp(&self.0).ok() == Some(nix::unistd::getpgrp())
    }

    /// Makes `pgid` the foreground group if watchd's own group is the foreground group now.
    /// Returns whether it did. SIGTTOU must be blocked (it is, in watchd).
    pub fn give(&self, pgid: i32) -> bool {
        self.is_foreground()
            && nix::unistd::tcsetpgrp(&self.0, nix::unistd::Pid::from_raw(pgid)).is_ok()
    }

    /// The terminal's foreground process group now.
    pub fn foreground_group(&self) -> Option<i32> {
        nix::unistd::tcgetpgrp(&self.0).ok().map(nix::unistd::Pid::as_raw)
    }

    /// If the foreground group is `pgid`, gives the terminal back to watchd's own group.
    pub fn take_back(&self, pgid: i32) {
        if nix::unistd::tcgetpgrp(&self.0).ok() == Some(nix::unistd::Pid::from_raw(pgid)) {
            let _ = nix::unistd::tcsetpgrp(&self.0, nix::unistd::getpgrp());
        }
    }
}

/// Stops watchd itself with `sig` (job control) and returns once it has been continued,
/// with the SIGCONT that woke it dequeued so the child does not get it twice.
pub fn stop_self(sig: Signal) {
    let mut only = SigSet::empty();
    only.add(sig);
    // A stop signal is pending once kill returns; unblocking delivers it and this thread stops
    // right here until SIGCONT.
    let _ = kill(std::process::id() as i32, sig);
    only.unblock();
    only.block();
    let mut cont = SigSet::empty();
    cont.add(crate::signals::SIGCONT);
    let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: sigtimedwait with a zero timeout only dequeues a pending SIGCONT, if any.
    unsafe { libc::sigtimedwait(&cont.0, std::ptr::null_mut(), &zero) };
}

/// Dies of `sig` with core dumps off; exits 128+N if the signal does not kill.
pub fn reraise(sig: Signal) -> ! {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_CORE) {
        let _ = setrlimit(Resource::RLIMIT_CORE, 0, hard);
    }
    set_default(sig);
    let mut only = SigSet::empty();
    only.add(sig);
    let _ = kill(std::process::id() as i32, sig);
    only.unblock();
    std::process::exit(128 + sig.as_raw())
}

/// If fd 0, 1 or 2 is closed, parks /dev/null there (close-on-exec), so files watchd opens
/// never land on a standard descriptor, while the child still sees it closed, as it was given.
pub fn reserve_standard_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries; open/dup3 create descriptors we deliberately keep.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) == -1 {
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
                if null >= 0 && null != fd {
                    libc::dup3(null, fd, libc::O_CLOEXEC);
                    libc::close(null);
                }
            }
        }
    }
}

/// Sleeps in poll(2) until one of `fds` is ready or `timeout_ms` passes (-1: no timeout).
/// Returns whether it timed out. EINTR is an early wake-up.
pub fn poll(fds: &mut [nix::poll::PollFd<'_>], timeout_ms: i32) -> bool {
    use nix::poll::PollTimeout;
    let timeout = PollTimeout::try_from(timeout_ms).unwrap_or(PollTimeout::NONE);
    matches!(nix::poll::poll(fds, timeout), Ok(0))
}

/// Writes `buf` to `fd` without ever waiting: `pwritev2(RWF_NOWAIT)` on the shared
/// description, so the descriptor's own flags (which the child shares) stay untouched. EAGAIN
/// when it would block; EOPNOTSUPP where the file type or kernel cannot do it per call.
pub fn write_nowait(fd: BorrowedFd<'_>, buf: &[u8]) -> Result<usize, Errno> {
    let iov = libc::iovec { iov_base: buf.as_ptr() as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: `iov` describes `buf`, which outlives the call and is only read; offset -1 means
    // the current position, as write(2).
    let n = unsafe { libc::pwritev2(fd.as_raw_fd(), &iov, 1, -1, libc::RWF_NOWAIT) };
    Errno::result(n).map(|n| n as usize)
}

/// A descriptor of our own onto the open file behind `fd`, with its own flags (O_NONBLOCK):
/// re-opening `/proc/self/fd/N` makes a new open file description for a pipe, FIFO or
/// terminal, so the child's shared one keeps blocking as before. Never for a regular file,
/// whose new description would have an offset of its own.
pub fn reopen_nonblocking(fd: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    use nix::fcntl::{OFlag, open};
    use nix::sys::stat::Mode;
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let flags = OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    open(path.as_str(), flags, Mode::empty())
}

/// Borrows a descriptor for poll.
pub fn borrow(fd: &OwnedFd) -> BorrowedFd<'_> {
    fd.as_fd()
}

/// Takes ownership of a descriptor the kernel installed for us with a message (SCM_RIGHTS):
/// nothing else owns it, and from here on dropping it closes it.
pub fn received_fd(fd: std::os::fd::RawFd) -> OwnedFd {
    // SAFETY: recvmsg just created this descriptor in our table for this message; no other
    // owner exists.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::{SIGKILL, SIGTERM};
    use std::process::Command;

    fn rt(n: i32) -> Signal {
        Signal::from_raw(libc::SIGRTMIN() + n).unwrap()
    }

    #[test]
    fn sigset_holds_realtime_signals() {
        let mut set = SigSet::empty();
        set.add(rt(5));
        assert!(set.contains(rt(5)) && !set.contains(SIGTERM));
    }

    #[test]
    fn kill_refuses_groups_everyone_and_init() {
        for pid in [-5, -1, 0, 1] {
            assert_eq!(kill(pid, SIGKILL), Err(Errno::ESRCH), "{pid}");
        }
        for pgid in [-5, -1, 0, 1] {
            assert_eq!(kill_group(pgid, SIGKILL), Err(Errno::ESRCH), "{pgid}");
        }
    }

    /// Why `wait_any` is hand-written: nix's waitpid reaps a child killed by a real-time signal
    /// and then fails with EINVAL, so its status is lost; ours decodes it.
    #[test]
    fn nix_waitpid_loses_realtime_deaths() {
        use nix::sys::wait::{WaitPidFlag, waitpid};
        use nix::unistd::Pid;
        let spawn_and_kill = || {
            let child = Command::new("sleep").arg("30").spawn().unwrap();
            let pid = child.id() as i32;
            kill(pid, rt(3)).unwrap();
            // Wait until it is a zombie, without reaping it.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, r)| r.starts_with(" Z")))
            {
                assert!(std::time::Instant::now() < deadline, "child never died");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            std::mem::forget(child);
            pid
        };
        let pid = spawn_and_kill();
        let nix = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
        assert_eq!(nix, Err(Errno::EINVAL), "nix now decodes real-time deaths: use it");
        assert!(std::fs::metadata(format!("/proc/{pid}")).is_err(), "nix reaped it anyway");

        // Ours (by pid here: other tests of this process have children too): the raw status,
        // which exit::ChildEnd decodes.
        let pid = spawn_and_kill();
        let Wait::Child(got, status, _) = wait_nohang(pid) else { panic!("no status") };
        assert_eq!(got, pid);
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == rt(3).as_raw());
    }
}
