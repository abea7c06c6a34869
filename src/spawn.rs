//! Starting the command: fork, a process group of its own, the terminal's foreground, the
//! parent-death signal, the signal state watchd inherited, the environment, and exec with PATH
//! search. Between fork and exec the child makes only async-signal-safe calls on memory
//! prepared before the fork.
//!
//! `start` returns as soon as the child exists: whether exec worked comes later, on a pipe the
//! driver polls (close-on-exec: EOF means it did; four bytes are the errno of a failure). So a
//! child that is stopped before exec, or whose exec hangs on a dead network mount, never holds
//! up signal forwarding, reaping or deadlines.

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;

use crate::notify::Envp;
use crate::signals::{SIGCHLD, Signal};
use crate::sys::{self, SigSet};

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
}

/// Reads the exec-status pipe without waiting.
pub fn exec_status(fd: &OwnedFd) -> ExecStatus {
    let mut buf = [0u8; 4];
    let mut got = 0;
    loop {
        match nix::unistd::read(fd.as_fd(), &mut buf[got..]) {
            Ok(0) if got == 0 => return ExecStatus::Done,
            Ok(0) => return ExecStatus::Failed(libc::EIO),
            Ok(n) => {
                got += n;
                if got == buf.len() {
                    return ExecStatus::Failed(i32::from_ne_bytes(buf));
                }
            }
            Err(Errno::EINTR) => continue,
            // The child writes its four bytes at once; a part would mean it died mid-write.
            Err(_) if got == 0 => return ExecStatus::Pending,
            Err(_) => return ExecStatus::Failed(libc::EIO),
        }
    }
}

/// Starts the command and returns at once, with the pid and the exec-status pipe.
pub fn start(cmd: &mut Command, opts: &Options) -> Result<Started, SpawnError> {
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|err| SpawnError::Internal(format!("cannot create a pipe: {err}")))?;
    let parent = std::process::id() as i32;
    // SAFETY: watchd is single-threaded when it spawns (no other thread could hold a lock the
    // child needs), and the child only runs `exec_child`, which is async-signal-safe.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let err = std::io::Error::last_os_error();
        return Err(SpawnError::Internal(format!("cannot fork: {err}")));
    }
    if pid == 0 {
        exec_child(cmd, opts, parent, write_end.as_raw_fd());
    }
    drop(write_end);
    // Also done by the child; doing it here too means the group exists before the parent
    // signals it, whoever runs first. EACCES (the child already exec'd) is fine.
    let child = nix::unistd::Pid::from_raw(pid);
    let _ = nix::unistd::setpgid(child, child);
    Ok(Started { pid, exec: read_end })
}

/// The child between fork and exec. Never returns.
fn exec_child(cmd: &mut Command, opts: &Options, parent: i32, report: libc::c_int) -> ! {
    // SAFETY: every call below is async-signal-safe and uses only memory prepared before the
    // fork; nothing allocates, locks or unwinds.
    unsafe {
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
        let bytes = errno.to_ne_bytes();
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
