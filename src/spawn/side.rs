//! The side commands' child path (`helper_run`): the middle, which watchd forks and which forks
//! `sh -c CMD`, waits for sh, the timeout or SIGTERM, kills all that sh left and exits with what
//! became of sh; and sh, between its fork and exec. Only async-signal-safe calls on memory
//! prepared before the fork: watchd may have threads one day, and a forked copy must not take a
//! lock or allocate. The parsers the middle runs are here too: pure, and allocation-free.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use crate::signals::{SIGCHLD, Signal};
use crate::spawn::Inherited;
use crate::sys::SigSet;

/// The middle's way of saying the timeout ran out: it dies of this signal.
pub const TIMED_OUT_SIGNAL: i32 = libc::SIGALRM;
/// The middle's way of saying watchd (or watchd's death) stopped it: it dies of SIGTERM.
pub const ABORTED_SIGNAL: i32 = libc::SIGTERM;
/// The middle's exit status when it could not even fork sh.
const NO_FORK_STATUS: i32 = 125;

/// What the caller prepared.
pub struct Plan<'a> {
    pub script: &'a CStr,
    pub env: &'a [CString],
    pub devnull: BorrowedFd<'a>,
    /// The pipe's write end, with [`Output::Capture`](crate::helper_run::Output::Capture).
    pub out: Option<BorrowedFd<'a>>,
    /// stdout to stderr ([`Output::Stderr`](crate::helper_run::Output::Stderr)).
    pub to_stderr: bool,
    pub inherited: &'a Inherited,
    pub timeout: Option<Duration>,
}

/// Everything the middle and sh touch, as raw values and pointers.
struct Raw {
    argv: [*const libc::c_char; 4],
    envp: Vec<*const libc::c_char>,
    devnull: libc::c_int,
    out: libc::c_int,
    to_stderr: bool,
    inherited: Inherited,
    timeout_ns: Option<u64>,
    /// SIGCHLD and SIGTERM: what the middle waits for.
    waited: SigSet,
    parent: libc::pid_t,
}

/// Forks the middle; returns its pid.
pub fn start(plan: &Plan) -> io::Result<i32> {
    let mut envp: Vec<*const libc::c_char> = plan.env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let mut waited = SigSet::empty();
    waited.add(SIGCHLD);
    waited.add(crate::signals::SIGTERM);
    let raw = Raw {
        argv: [c"sh".as_ptr(), c"-c".as_ptr(), plan.script.as_ptr(), std::ptr::null()],
        envp,
        devnull: plan.devnull.as_raw_fd(),
        out: plan.out.map_or(-1, |fd| fd.as_raw_fd()),
        to_stderr: plan.to_stderr,
        inherited: *plan.inherited,
        timeout_ns: plan.timeout.map(|t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)),
        waited,
        parent: nix::unistd::getpid().as_raw(),
    };
    // Blocked from before the fork, so a SIGTERM from an early abort() finds the middle
    // ready to clean up instead of killing it outright.
    let before = SigSet::current_mask();
    raw.waited.block();
    // SAFETY: the child runs only `middle`, which makes async-signal-safe calls on `raw`,
    // prepared above, and never returns.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        middle(&raw);
    }
    let err = io::Error::last_os_error();
    before.set_mask();
    if pid < 0 {
        return Err(io::Error::new(err.kind(), format!("cannot fork: {err}")));
    }
    Ok(pid)
}

/// The middle. Never returns.
fn middle(raw: &Raw) -> ! {
    // SAFETY: async-signal-safe calls only (setpgid, prctl, getppid, getpid, sigaction,
    // fork, dup2, close, syscall(close_range)), on values prepared before the fork.
    let sh = unsafe {
        libc::setpgid(0, 0);
        // If watchd dies, clean up as if it had asked.
        libc::prctl(libc::PR_SET_PDEATHSIG, ABORTED_SIGNAL as libc::c_ulong, 0, 0, 0);
        if libc::getppid() != raw.parent {
            die_of(ABORTED_SIGNAL);
        }
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        // Statuses must be kept, whatever watchd inherited.
        crate::sys::set_default(SIGCHLD);
        let me = libc::getpid();
        let sh = libc::fork();
        if sh == 0 {
            exec_sh(raw, me);
        }
        if sh < 0 {
            libc::_exit(NO_FORK_STATUS);
        }
        // Also done by sh; doing it here too means the group exists before a kill.
        libc::setpgid(sh, sh);
        // Hold nothing of watchd's: no pipe kept open, no terminal, no descriptor.
        for fd in 0..3 {
            libc::dup2(raw.devnull, fd);
        }
        if raw.out >= 0 {
            libc::close(raw.out);
        }
        libc::close(raw.devnull);
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        sh
    };
    let end = wait_for(raw, sh);
    kill_all(sh);
    match end {
        Ended::Sh(status) => exit(status),
        Ended::TimedOut => die_of(TIMED_OUT_SIGNAL),
        Ended::Aborted => die_of(ABORTED_SIGNAL),
    }
}

enum Ended {
    /// sh ended: its exit status, 128+N for signal N.
    Sh(i32),
    TimedOut,
    Aborted,
}

/// Waits for sh to end, the timeout, or SIGTERM.
fn wait_for(raw: &Raw, sh: libc::pid_t) -> Ended {
    let deadline = raw.timeout_ns.map(|t| now_ns().saturating_add(t));
    loop {
        if let Some(status) = reap_orphans_until_sh(sh) {
            return Ended::Sh(status);
        }
        let got = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_sub(now_ns());
                if left == 0 {
                    return Ended::TimedOut;
                }
                let ts = libc::timespec {
                    tv_sec: (left / 1_000_000_000).min(i64::MAX as u64) as libc::time_t,
                    tv_nsec: (left % 1_000_000_000) as libc::c_long,
                };
                // SAFETY: `waited` is an initialised set; no siginfo is wanted.
                unsafe { libc::sigtimedwait(raw.waited.as_ptr(), std::ptr::null_mut(), &ts) }
            }
            // SAFETY: as above.
            None => unsafe { libc::sigwaitinfo(raw.waited.as_ptr(), std::ptr::null_mut()) },
        };
        if got == ABORTED_SIGNAL {
            return Ended::Aborted;
        }
        // SIGCHLD (sh or an orphan ended), EAGAIN (the deadline: checked above), EINTR.
    }
}

/// Reaps every orphan that has ended (so a check that leaves many short-lived orphans
/// does not pile up zombies), and gives sh's exit status once sh has ended. sh itself is
/// left a zombie, so its pid and group id cannot be reused while `kill_all` signals them.
fn reap_orphans_until_sh(sh: libc::pid_t) -> Option<i32> {
    loop {
        // SAFETY: an all-zero siginfo_t is valid; waitid fills it for one of our own
        // children without reaping it (WNOWAIT); waitpid then reaps exactly that child.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT | libc::__WALL;
            if libc::waitid(libc::P_ALL, 0, &mut info, flags) != 0 || info.si_pid() == 0 {
                return None;
            }
            let pid = info.si_pid();
            if pid == sh {
                return Some(match info.si_code {
                    libc::CLD_EXITED => info.si_status() & 0xff,
                    _ => (128 + info.si_status()).min(255),
                });
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, libc::WNOHANG | libc::__WALL);
        }
    }
}

/// SIGKILLs sh's group and every child the middle has (sh's orphans, daemons that left
/// the group with setsid), and reaps until no child is left. Each round kills again what
/// was reparented to the middle when its parent died.
fn kill_all(sh: libc::pid_t) {
    let mut sh_reaped = false;
    loop {
        // SAFETY: kill and waitpid on our own child's group and on our own children; the
        // group id is pinned by sh's zombie until sh is reaped, after which it is left.
        unsafe {
            if !sh_reaped {
                libc::kill(-sh, libc::SIGKILL);
            }
            if !kill_children() {
                scan_proc_for_children();
            }
            let mut status = 0;
            match libc::waitpid(-1, &mut status, libc::__WALL) {
                pid if pid == sh => sh_reaped = true,
                -1 if errno() == libc::EINTR => {}
                -1 => return,
                _ => {}
            }
        }
    }
}

/// SIGKILLs every child listed in /proc/thread-self/children (the middle has one
/// thread). False when the file cannot be read (a kernel without CONFIG_PROC_CHILDREN).
fn kill_children() -> bool {
    // SAFETY: open/read/close on a buffer on our stack; kill on pids that are our own
    // children, which cannot be reused before we reap them.
    unsafe {
        let fd =
            libc::open(c"/proc/thread-self/children".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let mut scanner = PidScanner::new();
        let mut kill = |pid: i32| {
            libc::kill(pid, libc::SIGKILL);
        };
        let mut buf = [0u8; 512];
        loop {
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            if n <= 0 {
                break;
            }
            scanner.feed(&buf[..n as usize], &mut kill);
        }
        scanner.end(&mut kill);
        libc::close(fd);
        true
    }
}

/// The slow way for kernels without children files: every /proc/PID/stat whose parent
/// is the middle.
fn scan_proc_for_children() {
    // SAFETY: open/getdents64/read/close on buffers on our stack; kill only on pids whose
    // parent is us (our children: not reusable before we reap them).
    unsafe {
        let me = libc::getpid();
        let dir =
            libc::open(c"/proc".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC);
        if dir < 0 {
            return;
        }
        let mut entries = [0u8; 4096];
        loop {
            let n = libc::syscall(libc::SYS_getdents64, dir, entries.as_mut_ptr(), entries.len());
            if n <= 0 {
                break;
            }
            for_each_dirent(&entries[..n as usize], &mut |name: &[u8]| {
                let mut path = [0u8; 40];
                let Some(path) = proc_stat_path(name, &mut path) else {
                    return;
                };
                let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return;
                }
                let mut stat = [0u8; 512];
                let got = libc::read(fd, stat.as_mut_ptr().cast(), stat.len());
                libc::close(fd);
                if got > 0 && ppid_from_stat(&stat[..got as usize]) == Some(me) {
                    let mut scanner = PidScanner::new();
                    scanner.feed(name, &mut |_| {});
                    scanner.end(&mut |pid| {
                        libc::kill(pid, libc::SIGKILL);
                    });
                }
            });
        }
        libc::close(dir);
    }
}

/// sh, between fork and exec. Never returns.
fn exec_sh(raw: &Raw, middle: libc::pid_t) -> ! {
    // SAFETY: async-signal-safe calls only, on values prepared before the first fork.
    unsafe {
        libc::setpgid(0, 0);
        // The middle never dies before sh unless killed outright; then sh must not
        // linger as an orphan of watchd.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
        if libc::getppid() != middle {
            libc::_exit(127);
        }
        libc::dup2(raw.devnull, 0);
        if raw.out >= 0 {
            libc::dup2(raw.out, 1);
            libc::dup2(raw.out, 2);
        } else if raw.to_stderr {
            libc::dup2(2, 1);
        }
        if raw.inherited.sigchld_ignored {
            crate::sys::set_ignored(SIGCHLD);
        }
        raw.inherited.mask.set_mask();
        libc::execve(c"/bin/sh".as_ptr(), raw.argv.as_ptr(), raw.envp.as_ptr());
        libc::_exit(127);
    }
}

fn exit(status: i32) -> ! {
    // SAFETY: _exit ends the process without running anything of the parent's.
    unsafe { libc::_exit(status) }
}

/// Ends the middle by `sig`, so watchd reads it from the wait status.
fn die_of(sig: i32) -> ! {
    let Some(signal) = Signal::from_raw(sig) else {
        exit(NO_FORK_STATUS);
    };
    crate::sys::set_default(signal);
    let mut set = SigSet::empty();
    set.add(signal);
    // SAFETY: raising a signal with its default action on ourselves.
    unsafe { libc::kill(libc::getpid(), sig) };
    set.unblock();
    exit(NO_FORK_STATUS)
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills the timespec it is given; it is async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

fn errno() -> i32 {
    // SAFETY: the thread's errno location is always valid.
    unsafe { *libc::__errno_location() }
}

/// Reads the pids of `/proc/.../children` ("12 345 6789 ") fed in pieces of any size, with
/// no allocation: the middle runs it between fork and exit.
#[derive(Clone, Copy, Debug, Default)]
pub struct PidScanner {
    pid: Option<i32>,
    overflow: bool,
}

impl PidScanner {
    pub const fn new() -> PidScanner {
        PidScanner { pid: None, overflow: false }
    }

    pub fn feed(&mut self, bytes: &[u8], found: &mut impl FnMut(i32)) {
        for &b in bytes {
            if b.is_ascii_digit() {
                let digit = i32::from(b - b'0');
                match self.pid.unwrap_or(0).checked_mul(10).and_then(|n| n.checked_add(digit)) {
                    Some(n) => self.pid = Some(n),
                    None => self.overflow = true,
                }
            } else {
                self.end(found);
            }
        }
    }

    /// The input is over: a last pid without a separator counts.
    pub fn end(&mut self, found: &mut impl FnMut(i32)) {
        if let Some(pid) = self.pid.take()
            && !std::mem::take(&mut self.overflow)
            && pid > 1
        {
            found(pid);
        }
        self.overflow = false;
    }
}

/// The parent pid in a `/proc/PID/stat` line (the field after the state, which follows the
/// last `)`, since the command name may hold any character). No allocation.
pub fn ppid_from_stat(stat: &[u8]) -> Option<i32> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let mut fields = stat[close + 1..].split(|&b| b == b' ').filter(|f| !f.is_empty());
    let _state = fields.next()?;
    let ppid = fields.next()?;
    if ppid.is_empty() || !ppid.iter().all(u8::is_ascii_digit) {
        return None;
    }
    ppid.iter().try_fold(0i32, |n, &d| n.checked_mul(10)?.checked_add(i32::from(d - b'0')))
}

/// Calls `f` with each name in a buffer of `linux_dirent64` records (as getdents64 fills
/// it). Stops at a malformed record. No allocation.
pub fn for_each_dirent(buf: &[u8], f: &mut impl FnMut(&[u8])) {
    // d_ino (8), d_off (8), d_reclen (2), d_type (1), then the NUL-terminated name.
    const NAME: usize = 19;
    let mut at = 0;
    while at + NAME <= buf.len() {
        let reclen = usize::from(u16::from_ne_bytes([buf[at + 16], buf[at + 17]]));
        if reclen < NAME || at + reclen > buf.len() {
            return;
        }
        let name = &buf[at + NAME..at + reclen];
        let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        f(&name[..len]);
        at += reclen;
    }
}

/// `/proc/<pid>/stat` in a fixed buffer. No allocation.
pub fn proc_stat_path<'b>(pid: &[u8], buf: &'b mut [u8; 40]) -> Option<&'b CStr> {
    const HEAD: &[u8] = b"/proc/";
    const TAIL: &[u8] = b"/stat\0";
    let len = HEAD.len() + pid.len() + TAIL.len();
    if pid.is_empty() || len > buf.len() || !pid.iter().all(u8::is_ascii_digit) {
        return None;
    }
    buf[..HEAD.len()].copy_from_slice(HEAD);
    buf[HEAD.len()..HEAD.len() + pid.len()].copy_from_slice(pid);
    buf[HEAD.len() + pid.len()..len].copy_from_slice(TAIL);
    CStr::from_bytes_with_nul(&buf[..len]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn children_lists_parse_in_any_pieces() {
        let mut got = Vec::new();
        let mut scanner = PidScanner::new();
        scanner.feed(b"12 3", &mut |p| got.push(p));
        scanner.feed(b"45 1 0 99999999999 77", &mut |p| got.push(p));
        scanner.end(&mut |p| got.push(p));
        assert_eq!(got, [12, 345, 77], "1, 0 and overflowing numbers are never pids to kill");
    }

    #[test]
    fn stat_lines_give_the_parent() {
        assert_eq!(ppid_from_stat(b"123 (sh) S 45 123 123 0"), Some(45));
        assert_eq!(ppid_from_stat(b"123 (a) b) c) R 7 1"), Some(7));
        assert_eq!(ppid_from_stat(b"123 (sh) S"), None);
        assert_eq!(ppid_from_stat(b"123 (sh S 45"), None);
        assert_eq!(ppid_from_stat(b"123 (sh) S x5 1"), None);
    }

    #[test]
    fn proc_paths_and_dirents() {
        let mut buf = [0u8; 40];
        assert_eq!(proc_stat_path(b"4194304", &mut buf).unwrap(), c"/proc/4194304/stat");
        assert!(proc_stat_path(b"self", &mut buf).is_none());
        assert!(proc_stat_path(b"", &mut buf).is_none());
        assert!(proc_stat_path(&[b'1'; 40], &mut buf).is_none());

        let record = |name: &[u8]| {
            let reclen = (19 + name.len() + 1).next_multiple_of(8);
            let mut r = vec![0u8; reclen];
            r[16..18].copy_from_slice(&(reclen as u16).to_ne_bytes());
            r[19..19 + name.len()].copy_from_slice(name);
            r
        };
        let buf = [record(b"."), record(b"1"), record(b"self"), record(b"4242")].concat();
        let mut names = Vec::new();
        for_each_dirent(&buf, &mut |n: &[u8]| names.push(n.to_vec()));
        assert_eq!(names, [b".".to_vec(), b"1".to_vec(), b"self".to_vec(), b"4242".to_vec()]);
    }

    proptest! {
        #[test]
        fn pid_scanner_ignores_how_the_text_is_split(
            pids in proptest::collection::vec(2i32..=4_194_304, 0..40),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let text: String = pids.iter().map(|p| format!("{p} ")).collect();
            let bytes = text.as_bytes();
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            at.push(0);
            at.push(bytes.len());
            at.sort();
            let mut got = Vec::new();
            let mut scanner = PidScanner::new();
            for w in at.windows(2) {
                scanner.feed(&bytes[w[0]..w[1]], &mut |p| got.push(p));
            }
            scanner.end(&mut |p| got.push(p));
            prop_assert_eq!(got, pids);
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_parsers(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = ppid_from_stat(&bytes);
            for_each_dirent(&bytes, &mut |_| {});
            let mut scanner = PidScanner::new();
            scanner.feed(&bytes, &mut |p| assert!(p > 1));
            scanner.end(&mut |p| assert!(p > 1));
            let mut buf = [0u8; 40];
            let _ = proc_stat_path(&bytes, &mut buf);
        }
    }
}
