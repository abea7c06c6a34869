//! An interactive bash on a real pseudo-terminal, driven as a user would (expect-style), for
//! the tests of job control (tests/jobcontrol.rs) and of restarts on a terminal
//! (tests/restart.rs); and the /proc/PID/stat fields those tests look at.
#![allow(dead_code)]

use std::ffi::CStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for anything to show up. Only a failing test waits this long; a loaded CI
/// machine needs the slack.
pub const WAIT: Duration = Duration::from_secs(20);

/// Contains nothing a command line typed in these tests echoes, so it only matches a prompt.
pub const PROMPT: &str = "PTY-PROMPT> ";

/// The fields of /proc/<pid>/stat these tests look at.
#[derive(Clone, Debug)]
pub struct Stat {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    pub tpgid: i32,
}

/// Parses /proc/<pid>/stat, splitting after the last ')' (comm may hold spaces and parens).
/// None when the process is gone or the text is odd.
pub fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let num = |i: usize| rest.get(i).and_then(|f| f.parse::<i32>().ok());
    Some(Stat {
        pid,
        comm,
        state: rest.first()?.chars().next()?,
        ppid: num(1)?,
        pgrp: num(2)?,
        session: num(3)?,
        tpgid: num(5)?,
    })
}

/// Every process of a session, by pid.
pub fn session_members(sid: i32) -> Vec<Stat> {
    let mut out: Vec<Stat> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .filter(|s| s.session == sid)
        .collect();
    out.sort_by_key(|s| s.pid);
    out
}

pub fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// A new pty pair: (master, slave), both close-on-exec, the window 200x50 so readline never
/// scrolls a command line.
pub fn open_pty() -> (OwnedFd, OwnedFd) {
    // SAFETY: posix_openpt returns a new descriptor or -1; we own it from here on.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    assert!(master >= 0, "posix_openpt: {}", errno());
    // SAFETY: `master` is a fresh descriptor nothing else owns.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: a valid pty master; `name` has room for the path and its NUL (ptsname_r checks).
    unsafe {
        assert_eq!(libc::grantpt(master.as_raw_fd()), 0, "grantpt: {}", errno());
        assert_eq!(libc::unlockpt(master.as_raw_fd()), 0, "unlockpt: {}", errno());
        assert_eq!(
            libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()),
            0,
            "ptsname_r: {}",
            errno()
        );
    }
    // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated path.
    let path = unsafe { CStr::from_ptr(name.as_ptr()) };
    // SAFETY: `path` is a valid C string; O_NOCTTY so the test process never acquires it.
    let slave =
        unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    assert!(slave >= 0, "open {path:?}: {}", errno());
    // SAFETY: a fresh descriptor nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    let size = libc::winsize { ws_row: 50, ws_col: 200, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    // Reads poll with a deadline, never block.
    // SAFETY: fcntl on our own descriptor.
    unsafe {
        let flags = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    (master, slave)
}

/// An interactive bash on its own pty, session and controlling terminal, driven expect-style.
pub struct Shell {
    pub master: File,
    pub bash: Child,
    pub pid: i32,
    pub transcript: Vec<u8>,
    /// How far `expect` has consumed the transcript.
    pub seen: usize,
    pub eof: bool,
}

impl Shell {
    pub fn start() -> Shell {
        let (master, slave) = open_pty();
        let bin_dir = Path::new(crate::util::WATCHD)
            .parent()
            .expect("the watchd binary lives in a directory");
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
        );
        let mut cmd = Command::new("bash");
        cmd.args(["--norc", "--noprofile", "-i"])
            // Hermetic: no WATCHD_* (nor anything else) leaks in from the test's environment.
            .env_clear()
            .env("PATH", path)
            .env("PS1", PROMPT)
            .env("PS2", "> ")
            .env("TERM", "dumb")
            .env("INPUTRC", "/dev/null")
            .env("HISTFILE", "/dev/null")
            .env("LC_ALL", "C")
            .env("HOME", std::env::temp_dir())
            .stdin(Stdio::from(slave.try_clone().expect("dup the pty slave")))
            .stdout(Stdio::from(slave.try_clone().expect("dup the pty slave")))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl are async-signal-safe and touch no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(errno());
                }
                // The pty (now stdin) becomes the new session's controlling terminal.
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(errno());
                }
                Ok(())
            });
        }
        let bash = cmd.spawn().expect("start bash on a pty (is bash installed?)");
        let pid = bash.id() as i32;
        let mut shell = Shell {
            master: File::from(master),
            bash,
            pid,
            transcript: Vec::new(),
            seen: 0,
            eof: false,
        };
        shell.prompt();
        shell
    }

    /// Reads whatever the pty has, waiting at most until `deadline`.
    pub fn pump(&mut self, deadline: Instant) {
        if self.eof {
            std::thread::sleep(Duration::from_millis(5));
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds =
            [libc::pollfd { fd: self.master.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        let ms = left.as_millis().clamp(1, 100) as libc::c_int;
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reading into `buf`, at most its length.
            let n =
                unsafe { libc::read(self.master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                self.transcript.extend_from_slice(&buf[..n as usize]);
                continue;
            }
            if n == 0 || errno().raw_os_error() == Some(libc::EIO) {
                // Every slave descriptor is closed: bash and its jobs are gone.
                self.eof = true;
            }
            return;
        }
    }

    /// The transcript and the session's processes, for failure messages.
    pub fn dump(&self) -> String {
        let mut text = String::new();
        for &b in &self.transcript {
            match b {
                b'\r' => {}
                b'\n' | b'\t' | 0x20..=0x7e => text.push(b as char),
                _ => text.push_str(&format!("\\x{b:02x}")),
            }
        }
        let mut procs = String::from("  pid   ppid   pgrp  tpgid state comm\n");
        for s in session_members(self.pid) {
            procs.push_str(&format!(
                "{:5} {:6} {:6} {:6} {:>5} {}\n",
                s.pid, s.ppid, s.pgrp, s.tpgid, s.state, s.comm
            ));
        }
        format!(
            "--- transcript (bash pid {}{}):\n{text}\n--- end of transcript\n--- processes of the session now:\n{procs}",
            self.pid,
            if self.eof { ", pty closed" } else { "" }
        )
    }

    /// Types `bytes` as a user would.
    pub fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("write to the pty master");
    }

    /// Types a command line and Enter.
    pub fn line(&mut self, command: &str) {
        self.send(format!("{command}\r").as_bytes());
    }

    /// Waits until `pattern` appears in output not yet consumed, and consumes through it.
    #[track_caller]
    pub fn expect(&mut self, pattern: &str, why: &str) {
        self.expect_unless(pattern, None, why);
    }

    /// Like `expect`, but fails at once if `bad` shows up first (e.g. the shell's "Stopped"
    /// where output was due).
    #[track_caller]
    pub fn expect_not_after(&mut self, pattern: &str, bad: &str, why: &str) {
        self.expect_unless(pattern, Some(bad), why);
    }

    #[track_caller]
    pub fn expect_unless(&mut self, pattern: &str, bad: Option<&str>, why: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let pending = &self.transcript[self.seen..];
            let good = find(pending, pattern.as_bytes());
            if let Some(bad) = bad
                && let Some(at) = find(pending, bad.as_bytes())
                && good.is_none_or(|g| at < g)
            {
                panic!("{bad:?} instead of {pattern:?}: {why}\n{}", self.dump());
            }
            if let Some(at) = good {
                self.seen += at + pattern.len();
                return;
            }
            if Instant::now() >= deadline || self.eof {
                panic!("no {pattern:?} within {WAIT:?}: {why}\n{}", self.dump());
            }
            self.pump(deadline);
        }
    }

    /// Waits for the next prompt: the shell has the terminal and takes commands.
    #[track_caller]
    pub fn prompt(&mut self) {
        self.expect(PROMPT, "the shell should print its prompt");
    }

    /// Polls the session's processes until `cond` holds (keeps reading the pty meanwhile, so
    /// the transcript in a failure is complete).
    #[track_caller]
    pub fn wait_until(&mut self, what: &str, mut cond: impl FnMut(&Shell) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond(self) {
            if Instant::now() >= deadline {
                panic!("timed out after {WAIT:?} waiting until {what}\n{}", self.dump());
            }
            self.pump(Instant::now() + Duration::from_millis(5));
        }
    }

    /// The job just started at the prompt: watchd (a child of bash) and its main child, once
    /// the latter has exec'd `comm`.
    #[track_caller]
    pub fn job(&mut self, comm: &str) -> (i32, i32) {
        let mut found = None;
        let bash = self.pid;
        self.wait_until(&format!("bash runs watchd and watchd runs {comm}"), |sh| {
            let procs = session_members(sh.pid);
            found = procs.iter().filter(|w| w.ppid == bash && w.comm == "watchd").find_map(|w| {
                procs.iter().find(|c| c.ppid == w.pid && c.comm == comm).map(|c| (w.pid, c.pid))
            });
            found.is_some()
        });
        found.expect("set by the wait")
    }

    /// A process's current /proc/<pid>/stat, or a failure with the dump.
    #[track_caller]
    pub fn stat(&self, pid: i32) -> Stat {
        stat(pid).unwrap_or_else(|| panic!("process {pid} is gone\n{}", self.dump()))
    }

    /// `$?` of the last command, as the shell reports it.
    #[track_caller]
    pub fn status(&mut self, want: i32, why: &str) {
        // Quoted so that the echo of the command line does not contain the marker.
        self.line("echo \"sta\"\"tus:$?\"");
        self.expect("status:", "the shell should run `echo \"sta\"\"tus:$?\"`");
        let start = self.seen;
        self.expect("\r\n", "the status line should end");
        let got = String::from_utf8_lossy(&self.transcript[start..self.seen - 2]).into_owned();
        assert_eq!(got, want.to_string(), "wrong $?: {why}\n{}", self.dump());
        self.prompt();
    }

    /// The shell owns the terminal again and runs the next command.
    #[track_caller]
    pub fn shell_has_the_terminal(&mut self) {
        let bash = self.stat(self.pid);
        assert_eq!(
            bash.tpgid,
            bash.pgrp,
            "at the prompt the shell's group {} should be the terminal's foreground group, \
             not {}\n{}",
            bash.pgrp,
            bash.tpgid,
            self.dump()
        );
        self.line("echo \"next:$((6*7))\"");
        self.expect("next:42\r\n", "the next command at the prompt should run");
        self.prompt();
    }
}

impl Drop for Shell {
    /// Nothing of the session outlives the test, pass or fail: every process whose session is
    /// bash's (bash, watchd, the commands; all started by this test) gets SIGKILL.
    fn drop(&mut self) {
        for s in session_members(self.pid) {
            // SAFETY: signalling a process of the session this test created.
            unsafe { libc::kill(s.pid, libc::SIGKILL) };
        }
        let _ = self.bash.kill();
        let _ = self.bash.wait();
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
