//! Side commands (`--health-cmd`, `--stop-cmd`, `--dump-cmd`): `sh -c CMD` run beside the
//! tree under a small middle process that keeps the command and every orphan it leaves out
//! of watchd's tree, enforces the timeout, and kills them all when the command ends.
//!
//! watchd is a subreaper, so an orphan of a check would otherwise become watchd's child and
//! join the tree. Instead watchd forks a middle that is a subreaper itself, in a process group
//! of its own: it forks `sh -c CMD` (in a second new group), waits for sh, the timeout or
//! watchd's SIGTERM, then SIGKILLs sh's group and every process it adopted, reaps until none
//! is left and exits with what became of sh. watchd sees one child, the middle, and one pipe.
//! The middle and sh's way to exec, which run after the fork, are `spawn::side`.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};

use crate::exit::ChildEnd;
use crate::notify::PROTOCOL_VARS;
use crate::signals::{SIGTERM, Signal};
use crate::spawn::{Inherited, side};

/// How much of a captured command's output is kept for messages and events.
pub const TAIL: usize = 4096;

/// How much one [`SideCommand::read_output`] reads at most, so that a command flooding its
/// output cannot hold the driver's loop (the pipe stays readable and poll comes back).
const READ_BUDGET: usize = 1 << 20;

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
            .filter_map(crate::notify::env_entry)
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
        let plan = side::Plan {
            script: &script,
            env: &env,
            devnull: devnull.as_fd(),
            out: write_end.as_ref().map(|w| w.as_fd()),
            to_stderr: output == Output::Stderr,
            inherited,
            timeout,
        };
        let pid = side::start(&plan)?;
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
            ChildEnd::Killed(sig) if sig.as_raw() == side::TIMED_OUT_SIGNAL => SideStatus::TimedOut,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
