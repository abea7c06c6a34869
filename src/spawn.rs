//! Starting the command: fork, a process group of its own, the terminal's foreground, the
//! parent-death signal, the signal state watchd inherited, the environment, and exec with PATH
//! search. Between fork and exec the child makes only async-signal-safe calls on memory
//! prepared before the fork.
//!
//! `start` returns as soon as the child exists: whether exec worked comes later, on a pipe the
//! driver polls (close-on-exec: EOF means it did; a stage byte and four bytes of errno mean it
//! did not). So a child that is stopped before exec, or whose exec hangs on a dead network
//! mount, never holds up signal forwarding, reaping or deadlines.
//!
//! With a cgroup, the child is born in it (clone3 with CLONE_INTO_CGROUP), or, where the
//! kernel refuses that, joins it through `cgroup.procs` before exec: never is it anywhere
//! else once it runs the command.
//!
//! `side` is the child path of the side commands (`helper_run`): their middle process and
//! `sh -c CMD` up to its exec.

use std::cell::Cell;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;

use crate::notify::Envp;
use crate::signals::{SIGCHLD, Signal};
use crate::sys::{self, SigSet};

pub(crate) mod side;

/// The signal state watchd was started with, which the command gets back.
#[derive(Clone, Copy)]
pub struct Inherited {
    pub mask: SigSet,
    /// SIGCHLD was ignored: watchd must not ignore it (it would lose exit statuses), but the
    /// command should see it ignored as it would have without watchd.
    pub sigchld_ignored: bool,
}

pub struct Options {
    pub inherited: Inherited,
    /// The controlling terminal, when the child's group is to be its foreground group.
    pub foreground: Option<RawFd>,
    pub pdeathsig: Signal,
    /// The cgroup the child is to run in.
    pub cgroup: Option<Placement>,
}

/// Where in a cgroup the child goes, and how.
pub struct Placement {
    /// The cgroup's directory, open: clone3's target.
    dir: OwnedFd,
    /// Its `cgroup.procs`, for a child that joins between fork and exec.
    procs: CString,
    /// Still worth trying clone3: not refused by the kernel, and no child of it was killed
    /// at birth (see [`Placed::KilledAtBirth`]).
    clone3: Cell<bool>,
    /// How the last child was placed.
    last: Cell<Placed>,
}

/// How a child was placed in its cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// Born there: clone3 with CLONE_INTO_CGROUP.
    Clone3,
    /// Forked, then joined through `cgroup.procs` before exec, because clone3 gave this errno
    /// (ENOSYS before Linux 5.3 or under a seccomp filter that hides it, older Docker profiles
    /// answer EPERM; E2BIG on 5.3 to 5.6, which lack CLONE_INTO_CGROUP).
    Refused(i32),
    /// Forked and joined, because a clone3 child died before its first instruction, now or at
    /// an earlier start. Linux 6.18 does that to every CLONE_INTO_CGROUP child of a cgroup
    /// whose `cgroup.kill` count differs from that of the spawner's own cgroup, so from the
    /// first run after a kill: cgroup_css_set_fork reads the kill sequence before it has set
    /// `kargs->cgrp`, hence from the parent's cgroup, and cgroup_post_fork compares it with the
    /// target's and sends SIGKILL.
    KilledAtBirth,
}

impl Placement {
    /// The cgroup whose directory is open as `dir`, with `cgroup.procs` at `procs`.
    pub fn new(dir: BorrowedFd<'_>, procs: &CStr) -> std::io::Result<Placement> {
        Ok(Placement {
            dir: dir.try_clone_to_owned()?,
            procs: procs.to_owned(),
            clone3: Cell::new(true),
            last: Cell::new(Placed::Clone3),
        })
    }

    /// How the last child was placed.
    pub fn last(&self) -> Placed {
        self.last.get()
    }

    /// As if the kernel had refused clone3 with `errno`: every child is forked and joins
    /// through `cgroup.procs`, so tests exercise that path on a kernel that has clone3.
    #[cfg(test)]
    pub fn refuse_clone3(self, errno: i32) -> Placement {
        self.clone3.set(false);
        self.last.set(Placed::Refused(errno));
        self
    }
}

/// Why the command could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnError {
    /// No such file anywhere on PATH (or its interpreter is missing): exit 127.
    NotFound(String),
    /// Found but exec failed (permissions, format, ...): exit 126.
    NotExecutable(String),
    /// watchd itself failed (fork, pipe): exit 125.
    Internal(String),
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::NotFound(m) | SpawnError::NotExecutable(m) | SpawnError::Internal(m) => {
                f.write_str(m)
            }
        }
    }
}

fn cstring(bytes: &[u8], what: &str) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| SpawnError::Internal(format!("{what} contains a NUL byte")))
}

/// The command as C strings, built once (before any fork) and reused for every run: argv, the
/// paths exec will try, and the environment.
pub struct Command {
    name: String,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    candidates: Vec<CString>,
    candidate_ptrs: Vec<*const libc::c_char>,
    /// `/bin/sh <path> args...` for a file without a `#!` line (ENOEXEC), as execvp does; slot 1
    /// is filled with the candidate in the child.
    sh_argv_ptrs: Vec<*const libc::c_char>,
    sh: CString,
    /// The environment, with a slot for `WATCHDOG_PID` (the child's own pid) when asked.
    envp: Envp,
}

impl Command {
    /// `argv` with the environment `env`; PATH comes from `env` too, as for execvp. With
    /// `watchdog_pid`, the child also gets `WATCHDOG_PID=<its own pid>`, set between fork and
    /// exec.
    pub fn new(
        argv: &[OsString],
        env: &[(OsString, OsString)],
        watchdog_pid: bool,
    ) -> Result<Command, SpawnError> {
        if argv.is_empty() {
            return Err(SpawnError::Internal("no command to run".to_string()));
        }
        let args = argv
            .iter()
            .map(|arg| cstring(arg.as_bytes(), "an argument"))
            .collect::<Result<Vec<_>, _>>()?;
        let program = argv[0].as_bytes();
        let candidates: Vec<CString> = if program.contains(&b'/') {
            vec![args[0].clone()]
        } else if program.is_empty() {
            Vec::new()
        } else {
            let path = env
                .iter()
                .find(|(k, _)| k == "PATH")
                .map_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"), |(_, v)| v.as_os_str());
            path.as_bytes()
                .split(|&b| b == b':')
                .filter_map(|dir| {
                    let dir = if dir.is_empty() { b".".as_slice() } else { dir };
                    let mut full = dir.to_vec();
                    full.push(b'/');
                    full.extend_from_slice(program);
                    CString::new(full).ok()
                })
                .collect()
        };
        let envp = Envp::new(env.to_vec(), watchdog_pid);
        let nul_terminated = |v: &[CString]| {
            v.iter().map(|c| c.as_ptr()).chain([std::ptr::null()]).collect::<Vec<_>>()
        };
        let sh = CString::new("/bin/sh").expect("no NUL in a literal");
        let mut sh_argv_ptrs = vec![sh.as_ptr(), std::ptr::null()];
        sh_argv_ptrs.extend(args.iter().skip(1).map(|a| a.as_ptr()));
        sh_argv_ptrs.push(std::ptr::null());
        Ok(Command {
            name: argv[0].to_string_lossy().into_owned(),
            argv_ptrs: nul_terminated(&args),
            _argv: args,
            candidate_ptrs: nul_terminated(&candidates),
            candidates,
            sh_argv_ptrs,
            sh,
            envp,
        })
    }

    /// The error for an exec that failed with `errno`: 127 when nothing was found (naming a
    /// missing `#!` interpreter when that is why), 126 otherwise.
    pub fn failure(&self, errno: i32) -> SpawnError {
        let name = &self.name;
        if (errno == libc::ENOENT || errno == libc::ENOTDIR)
            && let Some(interpreter) = self.candidates.iter().find_map(missing_interpreter)
        {
            return SpawnError::NotFound(format!(
                "cannot run '{name}': its interpreter '{interpreter}' was not found"
            ));
        }
        let err = std::io::Error::from_raw_os_error(errno);
        let message = format!("cannot run '{name}': {}", strip_os_error(&err));
        match errno {
            libc::ENOENT | libc::ENOTDIR => SpawnError::NotFound(message),
            _ => SpawnError::NotExecutable(message),
        }
    }
}

/// The interpreter named on the `#!` line of `path`, if the file exists and that interpreter
/// does not (execve says ENOENT for both).
fn missing_interpreter(path: &CString) -> Option<String> {
    use std::io::Read;
    let path = Path::new(OsStr::from_bytes(path.as_bytes()));
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let interpreter = line.split(|&b| b == b' ' || b == b'\t').find(|w| !w.is_empty())?;
    let interpreter = Path::new(OsStr::from_bytes(interpreter));
    (!interpreter.exists()).then(|| interpreter.to_string_lossy().into_owned())
}

/// "No such file or directory (os error 2)" without the parenthesis.
fn strip_os_error(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// A child that exists; whether its exec worked is read from `exec` (see [`exec_status`]).
pub struct Started {
    pub pid: i32,
    /// Non-blocking read end of the exec-status pipe.
    pub exec: OwnedFd,
}

/// What the exec-status pipe says so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecStatus {
    /// Nothing yet: the child has not reached exec (or is stopped before it).
    Pending,
    /// EOF: the pipe closed on exec.
    Done,
    /// The child could not exec, with this errno.
    Failed(i32),
    /// The child could not join its cgroup, with this errno.
    JoinFailed(i32),
}

/// The child's first act: it exists and runs. Then, only on failure, a stage byte and errno.
const BORN: u8 = b'B';
const JOIN_FAILED: u8 = b'J';
const EXEC_FAILED: u8 = b'E';

/// Reads the exec-status pipe without waiting.
pub fn exec_status(fd: &OwnedFd) -> ExecStatus {
    let mut buf = [0u8; 8];
    let mut got = 0;
    loop {
        match nix::unistd::read(fd.as_fd(), &mut buf[got..]) {
            Ok(0) => return parse_status(&buf[..got], true),
            Ok(n) => {
                got += n;
                // The birth byte alone says nothing of exec.
                if buf[..got] == [BORN] {
                    got = 0;
                }
                if got >= 5 || got == buf.len() {
                    return parse_status(&buf[..got], false);
                }
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return parse_status(&buf[..got], false),
        }
    }
}

/// What the bytes read from the exec-status pipe say; `eof`: the pipe is closed.
fn parse_status(bytes: &[u8], eof: bool) -> ExecStatus {
    let bytes = bytes.strip_prefix(&[BORN]).unwrap_or(bytes);
    match bytes {
        [] if eof => ExecStatus::Done,
        [] => ExecStatus::Pending,
        [stage, e0, e1, e2, e3, ..] => {
            let errno = i32::from_ne_bytes([*e0, *e1, *e2, *e3]);
            if *stage == JOIN_FAILED {
                ExecStatus::JoinFailed(errno)
            } else {
                ExecStatus::Failed(errno)
            }
        }
        // The child writes its five bytes at once; a part means it died mid-write.
        _ => ExecStatus::Failed(libc::EIO),
    }
}

/// How long a clone3 child may take to say it was born before it is taken as alive: it says
/// so with its first instruction, so this only bounds a machine that is badly overloaded.
const BIRTH_WAIT: Duration = Duration::from_secs(1);

/// Starts the command and returns at once, with the pid and the exec-status pipe.
pub fn start(cmd: &mut Command, opts: &Options) -> Result<Started, SpawnError> {
    let parent = std::process::id() as i32;
    loop {
        let (read_end, write_end) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(|err| SpawnError::Internal(format!("cannot create a pipe: {err}")))?;
        let clone3 = opts.cgroup.as_ref().filter(|p| p.clone3.get());
        let forked = match clone3 {
            // SAFETY: as for fork below.
            Some(place) => unsafe { clone_into(place.dir.as_fd()) },
            // SAFETY: watchd is single-threaded when it spawns, or its other threads (the
            // dump's readers) hold no lock the child needs; the child only runs `exec_child`,
            // which is async-signal-safe.
            None => match unsafe { libc::fork() } {
                pid if pid < 0 => Err(last_errno()),
                pid => Ok(pid),
            },
        };
        let pid = match (forked, clone3) {
            (Ok(pid), _) => pid,
            (Err(errno @ (libc::ENOSYS | libc::E2BIG | libc::EPERM)), Some(place)) => {
                place.clone3.set(false);
                place.last.set(Placed::Refused(errno));
                continue;
            }
            (Err(errno), _) => {
                let err = std::io::Error::from_raw_os_error(errno);
                return Err(SpawnError::Internal(format!("cannot fork: {}", strip_os_error(&err))));
            }
        };
        if pid == 0 {
            let join = opts.cgroup.as_ref().filter(|_| clone3.is_none()).map(|p| p.procs.as_ptr());
            let born = clone3.is_some();
            exec_child(cmd, opts, parent, born, join, write_end.as_raw_fd());
        }
        drop(write_end);
        if let Some(place) = clone3 {
            if !born(&read_end) {
                // Killed before its first instruction: collect it, and place this child and
                // every later one by fork and join.
                sys::wait_for(pid);
                place.clone3.set(false);
                place.last.set(Placed::KilledAtBirth);
                continue;
            }
            place.last.set(Placed::Clone3);
        }
        // Also done by the child; doing it here too means the group exists before the parent
        // signals it, whoever runs first. EACCES (the child already exec'd) is fine.
        let child = nix::unistd::Pid::from_raw(pid);
        let _ = nix::unistd::setpgid(child, child);
        return Ok(Started { pid, exec: read_end });
    }
}

/// Whether a clone3 child has shown it runs: it wrote its birth byte (which is left for
/// `exec_status`), or the pipe stays quiet past `BIRTH_WAIT`. False: the pipe closed with
/// nothing in it, so the child died before its first instruction.
fn born(pipe: &OwnedFd) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let deadline = std::time::Instant::now() + BIRTH_WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => return true,
            Ok(_) => break,
            Err(Errno::EINTR) if !left.is_zero() => continue,
            Err(_) => return true,
        }
    }
    // Readable: the birth byte (taken here; `exec_status` reads what follows it) or EOF.
    let mut byte = 0u8;
    let n = loop {
        match nix::unistd::read(pipe.as_fd(), std::slice::from_mut(&mut byte)) {
            Err(Errno::EINTR) => continue,
            other => break other,
        }
    };
    !matches!(n, Ok(0))
}

/// Like fork(2), but the child starts in the cgroup whose directory is open as `dir` (clone3
/// with CLONE_INTO_CGROUP, Linux 5.7). Returns 0 in the child, its pid in the parent, or the
/// errno.
///
/// # Safety
///
/// As for fork: in the child, only async-signal-safe calls on memory prepared before, until
/// exec or `_exit`. glibc does not know of this child (no atfork handlers, its cached thread
/// id is the parent's), so the child makes raw system calls only, as `exec_child` does.
unsafe fn clone_into(dir: BorrowedFd<'_>) -> Result<i32, i32> {
    /// The kernel's `struct clone_args` (every field 64-bit on every architecture), up to
    /// `cgroup`: CLONE_ARGS_SIZE_VER2.
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: dir.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a valid clone_args of the size passed; with no stack given the child
    // runs on a copy of this one, as after fork. The caller upholds the fork contract.
    let rc = unsafe {
        libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, size_of::<CloneArgs>())
    };
    if rc < 0 { Err(last_errno()) } else { Ok(rc as i32) }
}

/// The child between fork and exec: it says it was born (`born`: only a clone3 child, whose
/// parent waits for that; a byte nobody waits for would wake the parent for nothing while the
/// child heads for exec), joins its cgroup (`join`: its `cgroup.procs`) when it was not born
/// there, and execs. Never returns.
fn exec_child(
    cmd: &mut Command,
    opts: &Options,
    parent: i32,
    born: bool,
    join: Option<*const libc::c_char>,
    report: libc::c_int,
) -> ! {
    // SAFETY: every call below is async-signal-safe and uses only memory prepared before the
    // fork; nothing allocates, locks or unwinds.
    unsafe {
        if born {
            libc::write(report, [BORN].as_ptr().cast(), 1);
        }
        if let Some(procs) = join {
            // Writing "0" moves the writer.
            let fd = libc::open(procs, libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, c"0".as_ptr().cast(), 1) != 1 {
                let e = last_errno().to_ne_bytes();
                let bytes = [JOIN_FAILED, e[0], e[1], e[2], e[3]];
                libc::write(report, bytes.as_ptr().cast(), bytes.len());
                libc::_exit(125);
            }
            libc::close(fd);
        }
        libc::setpgid(0, 0);
        if let Some(tty) = opts.foreground {
            // SIGTTOU is still blocked here (inherited from watchd), so a background group may
            // take the terminal.
            libc::tcsetpgrp(tty, libc::getpid());
        }
        libc::prctl(libc::PR_SET_PDEATHSIG, opts.pdeathsig.as_raw() as libc::c_ulong, 0, 0, 0);
        if libc::getppid() != parent {
            // watchd died before the death signal was armed: behave as if it had fired.
            libc::_exit(128 + opts.pdeathsig.as_raw());
        }
        if opts.inherited.sigchld_ignored {
            sys::set_ignored(SIGCHLD);
        }
        opts.inherited.mask.set_mask();

        let envp = cmd.envp.finish(libc::getpid());
        let mut errno = libc::ENOENT;
        let mut denied = false;
        for &path in cmd.candidate_ptrs.iter().take_while(|p| !p.is_null()) {
            libc::execve(path, cmd.argv_ptrs.as_ptr(), envp);
            errno = last_errno();
            if errno == libc::ENOEXEC {
                cmd.sh_argv_ptrs[1] = path;
                libc::execve(cmd.sh.as_ptr(), cmd.sh_argv_ptrs.as_ptr(), envp);
                errno = libc::ENOEXEC;
                break;
            }
            match errno {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => break,
            }
        }
        if denied && (errno == libc::ENOENT || errno == libc::ENOTDIR) {
            errno = libc::EACCES;
        }
        let e = errno.to_ne_bytes();
        let bytes = [EXEC_FAILED, e[0], e[1], e[2], e[3]];
        libc::write(report, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(if errno == libc::ENOENT || errno == libc::ENOTDIR { 127 } else { 126 });
    }
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Scratch;

    fn command(argv: &[&str]) -> Command {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
        Command::new(&argv, &env, false).unwrap()
    }

    #[test]
    fn a_missing_interpreter_is_named() {
        let dir = Scratch::new("interp");
        let script = dir.0.join("script");
        std::fs::write(&script, "#!/nonexistent/python -u\nprint(1)\n").unwrap();
        let cmd = command(&[script.to_str().unwrap()]);
        let err = cmd.failure(libc::ENOENT);
        assert_eq!(
            err,
            SpawnError::NotFound(format!(
                "cannot run '{}': its interpreter '/nonexistent/python' was not found",
                script.display()
            ))
        );
        let cmd = command(&["/no/such/program"]);
        assert_eq!(
            cmd.failure(libc::ENOENT),
            SpawnError::NotFound(
                "cannot run '/no/such/program': No such file or directory".to_string()
            )
        );
        assert!(matches!(cmd.failure(libc::EACCES), SpawnError::NotExecutable(_)));
    }
}
