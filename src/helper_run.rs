//! Side commands (`--health-cmd`, `--stop-cmd`, `--dump-cmd`): `sh -c CMD` run beside the
//! tree under a small middle process that keeps the command and every orphan it leaves out
//! of watchd's tree, enforces the timeout, and kills them all when the command ends.
//!
//! watchd is a subreaper, so an orphan of a check would otherwise become watchd's child and
//! join the tree. Instead watchd forks a middle that is a subreaper itself, in a process group
//! of its own: it forks `sh -c CMD` (in a second new group), waits for sh, the timeout or
//! watchd's SIGTERM, then SIGKILLs sh's group and every process it adopted, reaps until none
//! is left and exits with what became of sh. watchd sees one child, the middle, and one pipe.

use std::ffi::{CStr, CString, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};

use crate::exit::ChildEnd;
use crate::notify::PROTOCOL_VARS;
use crate::signals::{SIGTERM, Signal};
use crate::spawn::Inherited;

/// How much of a captured command's output is kept for messages and events.
pub const TAIL: usize = 4096;

/// How much one [`SideCommand::read_output`] reads at most, so that a command flooding its
/// output cannot hold the driver's loop (the pipe stays readable and poll comes back).
const READ_BUDGET: usize = 1 << 20;

/// The middle's way of saying the timeout ran out: it dies of this signal.
const TIMED_OUT_SIGNAL: i32 = libc::SIGALRM;
/// The middle's way of saying watchd (or watchd's death) stopped it: it dies of SIGTERM.
const ABORTED_SIGNAL: i32 = libc::SIGTERM;
/// The middle's exit status when it could not even fork sh.
const NO_FORK_STATUS: i32 = 125;

/// Where the command's stdout and stderr go. Its stdin is always /dev/null.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Into a pipe watchd reads; the last [`TAIL`] bytes are kept (`--health-cmd`).
    Capture,
    /// Both to watchd's stderr, as they are (`--dump-cmd`).
    Stderr,
    /// watchd's own stdout and stderr (`--stop-cmd`).
    Inherit,
}

/// A side command under way. Its middle is a child of watchd: the driver's reap loop
/// recognises it by [`pid`](SideCommand::pid) (and the tree walk leaves that pid's subtree
/// out), then hands its status to [`finish`](SideCommand::finish).
pub struct SideCommand {
    pid: i32,
    output: Option<OwnedFd>,
    tail: Vec<u8>,
    total: u64,
    timeout: Option<Duration>,
}

/// What became of a side command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideStatus {
    /// sh exited with this status; 128+N when it died of signal N, as a shell reports it.
    Exited(u8),
    /// The timeout ran out; the command and everything it started were killed.
    TimedOut,
    /// [`SideCommand::abort`] (or watchd's death) stopped it; all of it was killed.
    Aborted,
    /// The middle itself died of a signal nobody here sent (the OOM killer, a stray kill).
    Lost(Signal),
}

/// The end of a side command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideEnd {
    /// Exit status 0.
    pub ok: bool,
    pub status: SideStatus,
    /// The last [`TAIL`] bytes of its output (with [`Output::Capture`]), lossy UTF-8.
    pub output_tail: String,
    /// Everything it wrote, in bytes.
    pub output_bytes: u64,
    timeout: Option<Duration>,
}

impl SideEnd {
    pub fn timed_out(&self) -> bool {
        self.status == SideStatus::TimedOut
    }

    /// One line for messages and the `health` event: how it ended, and its last line of
    /// output if it wrote any (`exit status 1: connection refused`).
    pub fn detail(&self) -> String {
        let how = match self.status {
            SideStatus::Exited(0) => "exit status 0".to_string(),
            SideStatus::Exited(code) => format!("exit status {code}"),
            SideStatus::TimedOut => match self.timeout {
                Some(t) => format!("timed out after {}", humantime::format_duration(t)),
                None => "timed out".to_string(),
            },
            SideStatus::Aborted => "stopped by watchd".to_string(),
            SideStatus::Lost(sig) => format!("its runner was killed by {sig}"),
        };
        match self.last_line() {
            Some(line) => format!("{how}: {line}"),
            None => how,
        }
    }

    /// The last non-blank line of output, cut to 200 characters.
    pub fn last_line(&self) -> Option<&str> {
        let line = self.output_tail.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
        let cut = line.char_indices().nth(200).map_or(line.len(), |(i, _)| i);
        Some(&line[..cut])
    }
}

/// What [`SideCommand::read_output`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    /// Read what there was (or the budget); the pipe is still open.
    Open,
    /// Every writer is gone: stop polling.
    Eof,
}

impl SideCommand {
    /// Starts `sh -c cmd` with `WATCHD_PID=watchd_pid` in watchd's environment (less its
    /// `WATCHD_*` settings and systemd's notify variables, which are for watchd alone), stdin
    /// from /dev/null, and the signal state watchd inherited. `timeout`: the middle kills it
    /// all when it runs out (`None`: only sh's end or [`abort`](SideCommand::abort) ends it).
    pub fn start(
        cmd: &str,
        watchd_pid: i32,
        timeout: Option<Duration>,
        output: Output,
        inherited: &Inherited,
    ) -> io::Result<SideCommand> {
        let script = CString::new(cmd).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "the command contains a NUL byte")
        })?;
        let env: Vec<CString> = side_env(std::env::vars_os(), watchd_pid)
            .into_iter()
            .filter_map(|(key, value)| {
                let mut entry = key.into_vec();
                entry.push(b'=');
                entry.extend_from_slice(value.as_bytes());
                CString::new(entry).ok()
            })
            .collect();
        let devnull = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
        let (read_end, write_end) = match output {
            Output::Capture => {
                let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
                // Only watchd's end: the command's end stays blocking, as a program expects.
                fcntl(&r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
                (Some(r), Some(w))
            }
            Output::Stderr | Output::Inherit => (None, None),
        };
        let plan = sys_side::Plan {
            script: &script,
            env: &env,
            devnull: devnull.as_fd(),
            out: write_end.as_ref().map(|w| w.as_fd()),
            to_stderr: output == Output::Stderr,
            inherited,
            timeout,
        };
        let pid = sys_side::spawn(&plan)?;
        // Our copy of the write end must go now, or EOF would never come.
        drop(write_end);
        Ok(SideCommand { pid, output: read_end, tail: Vec::new(), total: 0, timeout })
    }

    /// The middle's pid: a child of watchd, never part of the tree.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The output pipe to poll for readability, until [`read_output`](Self::read_output)
    /// says EOF. `None` without [`Output::Capture`].
    pub fn output_fd(&self) -> Option<BorrowedFd<'_>> {
        self.output.as_ref().map(|fd| fd.as_fd())
    }

    /// Reads what the pipe holds (at most 1 MiB a call), keeping the last [`TAIL`] bytes.
    /// Never blocks.
    pub fn read_output(&mut self) -> Drained {
        let Some(fd) = &self.output else {
            return Drained::Eof;
        };
        let mut buf = [0u8; 16 * 1024];
        let mut budget = READ_BUDGET;
        while budget > 0 {
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) => {
                    self.output = None;
                    return Drained::Eof;
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    self.total += n as u64;
                    keep_tail(&mut self.tail, &buf[..n]);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Drained::Open,
                Err(_) => {
                    self.output = None;
                    return Drained::Eof;
                }
            }
        }
        Drained::Open
    }

    /// Asks the middle to kill everything and end (SIGTERM). Call it only before the middle
    /// is reaped: after that its pid may be someone else's.
    pub fn abort(&self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }

    /// The middle was reaped with `end`: reads what is left in the pipe (every writer is dead
    /// by now, so this ends at EOF) and says what became of the command.
    pub fn finish(mut self, end: ChildEnd) -> SideEnd {
        while self.output.is_some() && self.read_output() == Drained::Open {
            // A writer that outlived the middle (it cannot: the middle reaps all before it
            // exits) must not make this wait: with nothing to read, stop.
            if self.output.as_ref().is_some_and(|fd| !readable_now(fd)) {
                break;
            }
        }
        let status = match end {
            ChildEnd::Exited(code) => SideStatus::Exited(code),
            ChildEnd::Killed(sig) if sig.as_raw() == TIMED_OUT_SIGNAL => SideStatus::TimedOut,
            ChildEnd::Killed(sig) if sig == SIGTERM => SideStatus::Aborted,
            ChildEnd::Killed(sig) => SideStatus::Lost(sig),
        };
        SideEnd {
            ok: status == SideStatus::Exited(0),
            status,
            output_tail: String::from_utf8_lossy(&self.tail).into_owned(),
            output_bytes: self.total,
            timeout: self.timeout,
        }
    }
}

/// Whether a read would find something (data or EOF) right now.
fn readable_now(fd: &OwnedFd) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Appends `chunk` to `tail`, keeping only the last [`TAIL`] bytes.
fn keep_tail(tail: &mut Vec<u8>, chunk: &[u8]) {
    if chunk.len() >= TAIL {
        tail.clear();
        tail.extend_from_slice(&chunk[chunk.len() - TAIL..]);
        return;
    }
    let excess = (tail.len() + chunk.len()).saturating_sub(TAIL);
    tail.drain(..excess);
    tail.extend_from_slice(chunk);
}

/// A side command's environment: watchd's, less its `WATCHD_*` settings (a nested watchd
/// starts clean, as the main command's does) and systemd's notify variables, plus
/// `WATCHD_PID`. Pure.
pub fn side_env<I>(env: I, watchd_pid: i32) -> Vec<(OsString, OsString)>
where
    I: IntoIterator<Item = (OsString, OsString)>,
{
    let mut out: Vec<(OsString, OsString)> = env
        .into_iter()
        .filter(|(key, _)| !key.as_bytes().starts_with(b"WATCHD_"))
        .filter(|(key, _)| !PROTOCOL_VARS.iter().any(|var| key == var))
        .collect();
    out.push(("WATCHD_PID".into(), watchd_pid.to_string().into()));
    out
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

/// To be moved into src/spawn.rs: the fork of the middle and everything it does until it
/// exits, and sh's fork and exec. Only async-signal-safe calls on memory prepared before the
/// fork: watchd may have threads one day, and a forked copy must not take a lock or allocate.
mod sys_side {
    use std::ffi::{CStr, CString};
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd};
    use std::time::Duration;

    use super::{ABORTED_SIGNAL, NO_FORK_STATUS, PidScanner, TIMED_OUT_SIGNAL};
    use crate::signals::{SIGCHLD, Signal};
    use crate::spawn::Inherited;
    use crate::sys::SigSet;

    /// What the caller prepared.
    pub(super) struct Plan<'a> {
        pub script: &'a CStr,
        pub env: &'a [CString],
        pub devnull: BorrowedFd<'a>,
        /// The pipe's write end, with [`super::Output::Capture`].
        pub out: Option<BorrowedFd<'a>>,
        /// stdout to stderr ([`super::Output::Stderr`]).
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
    pub(super) fn spawn(plan: &Plan) -> io::Result<i32> {
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
            let fd = libc::open(
                c"/proc/thread-self/children".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            );
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
                let n =
                    libc::syscall(libc::SYS_getdents64, dir, entries.as_mut_ptr(), entries.len());
                if n <= 0 {
                    break;
                }
                super::for_each_dirent(&entries[..n as usize], &mut |name: &[u8]| {
                    let mut path = [0u8; 40];
                    let Some(path) = super::proc_stat_path(name, &mut path) else {
                        return;
                    };
                    let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return;
                    }
                    let mut stat = [0u8; 512];
                    let got = libc::read(fd, stat.as_mut_ptr().cast(), stat.len());
                    libc::close(fd);
                    if got > 0 && super::ppid_from_stat(&stat[..got as usize]) == Some(me) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_tail_keeps_the_last_bytes() {
        let mut tail = Vec::new();
        keep_tail(&mut tail, b"hello ");
        keep_tail(&mut tail, b"world");
        assert_eq!(tail, b"hello world");
        keep_tail(&mut tail, &[b'x'; TAIL - 3]);
        assert_eq!(tail.len(), TAIL);
        assert!(tail.starts_with(b"rld"));
        keep_tail(&mut tail, &[b'y'; 2 * TAIL]);
        assert_eq!(tail, vec![b'y'; TAIL]);
    }

    #[test]
    fn side_env_sets_watchd_pid_and_drops_what_is_not_the_commands() {
        let env = [
            ("PATH", "/bin"),
            ("WATCHD_STALL", "5s"),
            ("WATCHD_PID", "1"),
            ("NOTIFY_SOCKET", "/run/systemd/notify"),
            ("WATCHDOG_USEC", "1"),
            ("WATCHDOG_PID", "1"),
            ("WATCHDOGX", "kept"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let out = side_env(env, 4242);
        let keys: Vec<_> =
            out.iter().map(|(k, v)| format!("{}={}", k.display(), v.display())).collect();
        assert_eq!(keys, ["PATH=/bin", "WATCHDOGX=kept", "WATCHD_PID=4242"]);
    }

    #[test]
    fn details_say_how_it_ended() {
        let end = |status, tail: &str| SideEnd {
            ok: status == SideStatus::Exited(0),
            status,
            output_tail: tail.into(),
            output_bytes: tail.len() as u64,
            timeout: Some(Duration::from_secs(5)),
        };
        assert_eq!(
            end(SideStatus::Exited(1), "a\nconnection refused\n\n").detail(),
            "exit status 1: connection refused"
        );
        assert_eq!(end(SideStatus::TimedOut, "").detail(), "timed out after 5s");
        assert_eq!(end(SideStatus::Aborted, " \n").detail(), "stopped by watchd");
        assert_eq!(
            end(SideStatus::Lost(crate::signals::SIGKILL), "").detail(),
            "its runner was killed by SIGKILL"
        );
        assert_eq!(
            end(SideStatus::Exited(0), &"é".repeat(300)).last_line().unwrap().chars().count(),
            200
        );
    }

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
