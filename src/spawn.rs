//! Starting the command: fork, a process group of its own, the terminal's foreground, the
//! parent-death signal, the signal state watchd inherited, and exec with PATH search.
//! All of watchd's `fork` lives here; between fork and exec the child makes only
//! async-signal-safe calls on memory prepared before the fork.

use std::ffi::{CString, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use std::io::Read as _;
use std::os::fd::{AsRawFd, OwnedFd};

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
    /// Make the child's group the foreground group of the terminal on stdin.
    pub foreground: bool,
    pub pdeathsig: Signal,
}

/// Why the command could not be started.
#[derive(Debug)]
pub enum SpawnError {
    /// No such file anywhere on PATH: exit 127.
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

/// The argv and the paths exec will try, as C strings, built before fork.
struct Prepared {
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _candidates: Vec<CString>,
    candidate_ptrs: Vec<*const libc::c_char>,
    /// `/bin/sh <path> args...` for a file without a `#!` line (ENOEXEC), as execvp does; slot 1
    /// is filled with the candidate in the child.
    sh_argv_ptrs: Vec<*const libc::c_char>,
    sh: CString,
}

fn cstring(bytes: &[u8], what: &str) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| SpawnError::Internal(format!("{what} contains a NUL byte")))
}

impl Prepared {
    fn new(command: &[OsString]) -> Result<Prepared, SpawnError> {
        let argv = command
            .iter()
            .map(|arg| cstring(arg.as_bytes(), "an argument"))
            .collect::<Result<Vec<_>, _>>()?;
        let program = command[0].as_bytes();
        let candidates: Vec<CString> = if program.contains(&b'/') {
            vec![argv[0].clone()]
        } else if program.is_empty() {
            Vec::new()
        } else {
            let path =
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
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
        let mut argv_ptrs: Vec<_> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut candidate_ptrs: Vec<_> = candidates.iter().map(|c| c.as_ptr()).collect();
        candidate_ptrs.push(std::ptr::null());
        let sh = CString::new("/bin/sh").expect("no NUL in a literal");
        let mut sh_argv_ptrs = vec![sh.as_ptr(), std::ptr::null()];
        sh_argv_ptrs.extend(argv.iter().skip(1).map(|a| a.as_ptr()));
        sh_argv_ptrs.push(std::ptr::null());
        Ok(Prepared {
            _argv: argv,
            argv_ptrs,
            _candidates: candidates,
            candidate_ptrs,
            sh_argv_ptrs,
            sh,
        })
    }
}

/// Starts the command and returns its pid once exec has succeeded.
pub fn spawn(command: &[OsString], opts: &Options) -> Result<i32, SpawnError> {
    let mut prepared = Prepared::new(command)?;
    let name = command[0].to_string_lossy();
    let (read_end, write_end) = pipe()?;
    let parent = std::process::id() as i32;
    // SAFETY: watchd is single-threaded when it spawns (no other thread could hold a lock the
    // child needs), and the child only runs `exec_child`, which is async-signal-safe.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let err = std::io::Error::last_os_error();
        return Err(SpawnError::Internal(format!("cannot fork: {err}")));
    }
    if pid == 0 {
        exec_child(&mut prepared, opts, parent, write_end.as_raw_fd());
    }
    drop(write_end);
    // Also done by the child; doing it here too means the group exists before the parent
    // signals it, whoever runs first. EACCES (the child already exec'd) is fine.
    let child = nix::unistd::Pid::from_raw(pid);
    let _ = nix::unistd::setpgid(child, child);
    // EOF (close-on-exec) means exec succeeded; four bytes are the errno of a failed one.
    let mut report = Vec::with_capacity(4);
    let _ = std::fs::File::from(read_end).read_to_end(&mut report);
    let Ok(errno) = <[u8; 4]>::try_from(report.as_slice()) else {
        return Ok(pid);
    };
    // The child could not exec and has exited: collect it so it leaves no zombie.
    sys::wait_for(pid);
    let err = std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
    let message = format!("cannot run '{name}': {}", strip_os_error(&err));
    Err(match err.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => SpawnError::NotFound(message),
        _ => SpawnError::NotExecutable(message),
    })
}

/// "No such file or directory (os error 2)" without the parenthesis.
fn strip_os_error(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// The child between fork and exec. Never returns.
fn exec_child(prepared: &mut Prepared, opts: &Options, parent: i32, report: libc::c_int) -> ! {
    // SAFETY: every call below is async-signal-safe and uses only memory prepared before the
    // fork; nothing allocates, locks or unwinds.
    unsafe {
        libc::setpgid(0, 0);
        if opts.foreground {
            // SIGTTOU is still blocked here (inherited from watchd), so a background group may
            // take the terminal.
            libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpid());
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

        let mut errno = libc::ENOENT;
        let mut denied = false;
        for &path in prepared.candidate_ptrs.iter().take_while(|p| !p.is_null()) {
            libc::execv(path, prepared.argv_ptrs.as_ptr());
            errno = last_errno();
            if errno == libc::ENOEXEC {
                prepared.sh_argv_ptrs[1] = path;
                libc::execv(prepared.sh.as_ptr(), prepared.sh_argv_ptrs.as_ptr());
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

fn pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|err| SpawnError::Internal(format!("cannot create a pipe: {err}")))
}

/// Runs `sh -c CMD` with `WATCHD_PID` set, for --stop-cmd. It gets watchd's own inherited
/// signal state, no terminal, and stays in watchd's process group.
pub fn spawn_shell(cmd: &str, main_pid: i32, inherited: &Inherited) -> Result<i32, SpawnError> {
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(key, _)| key != "WATCHD_PID")
        .filter_map(|(key, value)| {
            let mut entry = key.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            CString::new(entry).ok()
        })
        .collect();
    env.push(cstring(format!("WATCHD_PID={main_pid}").as_bytes(), "WATCHD_PID")?);
    let mut env_ptrs: Vec<_> = env.iter().map(|e| e.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    let script = cstring(cmd.as_bytes(), "--stop-cmd")?;
    let argv_ptrs = [c"sh".as_ptr(), c"-c".as_ptr(), script.as_ptr(), std::ptr::null()];
    // SAFETY: as in `spawn`: single-threaded, and the child makes only async-signal-safe calls
    // on memory prepared above.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: async-signal-safe calls only, on prepared memory.
        unsafe {
            if inherited.sigchld_ignored {
                sys::set_ignored(SIGCHLD);
            }
            inherited.mask.set_mask();
            libc::execve(c"/bin/sh".as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr());
            libc::_exit(127);
        }
    }
    if pid < 0 {
        let err = std::io::Error::last_os_error();
        return Err(SpawnError::Internal(format!("cannot fork for --stop-cmd: {err}")));
    }
    Ok(pid)
}
