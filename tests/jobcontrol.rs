//! Job control on a real pseudo-terminal (README, "On the command line"): an interactive
//! bash drives watchd as a user would, and the test checks what the user sees (prompt, `jobs`,
//! `$?`, echoed input) and what the kernel says (/proc states, process groups, the terminal's
//! foreground group).

mod util;

use std::ffi::CStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for anything to show up. Only a failing test waits this long; a loaded CI
/// machine needs the slack.
const WAIT: Duration = Duration::from_secs(20);

/// Contains nothing a command line typed in these tests echoes, so it only matches a prompt.
const PROMPT: &str = "JOBCTL-PROMPT> ";

/// The fields of /proc/<pid>/stat these tests look at.
#[derive(Clone, Debug)]
struct Stat {
    pid: i32,
    comm: String,
    state: char,
    ppid: i32,
    pgrp: i32,
    session: i32,
    tpgid: i32,
}

/// Parses /proc/<pid>/stat, splitting after the last ')' (comm may hold spaces and parens).
/// None when the process is gone or the text is odd.
fn stat(pid: i32) -> Option<Stat> {
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
fn session_members(sid: i32) -> Vec<Stat> {
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

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// A new pty pair: (master, slave), both close-on-exec, the window 200x50 so readline never
/// scrolls a command line.
fn open_pty() -> (OwnedFd, OwnedFd) {
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
struct Shell {
    master: File,
    bash: Child,
    pid: i32,
    transcript: Vec<u8>,
    /// How far `expect` has consumed the transcript.
    seen: usize,
    eof: bool,
}

impl Shell {
    fn start() -> Shell {
        let (master, slave) = open_pty();
        let bin_dir =
            Path::new(util::WATCHD).parent().expect("the watchd binary lives in a directory");
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
    fn pump(&mut self, deadline: Instant) {
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
    fn dump(&self) -> String {
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
    fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("write to the pty master");
    }

    /// Types a command line and Enter.
    fn line(&mut self, command: &str) {
        self.send(format!("{command}\r").as_bytes());
    }

    /// Waits until `pattern` appears in output not yet consumed, and consumes through it.
    #[track_caller]
    fn expect(&mut self, pattern: &str, why: &str) {
        self.expect_unless(pattern, None, why);
    }

    /// Like `expect`, but fails at once if `bad` shows up first (e.g. the shell's "Stopped"
    /// where output was due).
    #[track_caller]
    fn expect_not_after(&mut self, pattern: &str, bad: &str, why: &str) {
        self.expect_unless(pattern, Some(bad), why);
    }

    #[track_caller]
    fn expect_unless(&mut self, pattern: &str, bad: Option<&str>, why: &str) {
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
    fn prompt(&mut self) {
        self.expect(PROMPT, "the shell should print its prompt");
    }

    /// Polls the session's processes until `cond` holds (keeps reading the pty meanwhile, so
    /// the transcript in a failure is complete).
    #[track_caller]
    fn wait_until(&mut self, what: &str, mut cond: impl FnMut(&Shell) -> bool) {
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
    fn job(&mut self, comm: &str) -> (i32, i32) {
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
    fn stat(&self, pid: i32) -> Stat {
        stat(pid).unwrap_or_else(|| panic!("process {pid} is gone\n{}", self.dump()))
    }

    /// `$?` of the last command, as the shell reports it.
    #[track_caller]
    fn status(&mut self, want: i32, why: &str) {
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
    fn shell_has_the_terminal(&mut self) {
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

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Scenario 1. ^C goes to the command; watchd mirrors its death, so `$?` is 130 as without
/// watchd.
#[test]
fn ctrl_c_reaches_the_child_and_the_shell_sees_130() {
    let mut sh = Shell::start();
    sh.line("watchd -- sleep 100");
    let (watchd, child) = sh.job("sleep");
    sh.send(b"\x03");
    sh.expect(PROMPT, "^C should end sleep, then watchd, and give the prompt back");
    sh.status(130, "watchd should die of the child's SIGINT: $? = 128 + 2");
    assert!(
        stat(watchd).is_none() && stat(child).is_none(),
        "watchd {watchd} and sleep {child} should both be gone\n{}",
        sh.dump()
    );
    sh.shell_has_the_terminal();
}

/// Scenario 2. ^Z stops the command and watchd (the shell's job), the shell gets its prompt
/// and lists the job Stopped; `fg` resumes both and hands the terminal back to the command.
#[test]
fn ctrl_z_stops_child_and_watchd_and_fg_resumes_both() {
    let mut sh = Shell::start();
    sh.line("watchd -- sleep 100");
    let (watchd, child) = sh.job("sleep");
    sh.send(b"\x1a");
    sh.expect("Stopped", "after ^Z the shell should report the job (watchd) stopped");
    sh.prompt();
    sh.wait_until(&format!("watchd {watchd} and sleep {child} are both stopped (state T)"), |_| {
        matches!(stat(watchd), Some(s) if s.state == 'T')
            && matches!(stat(child), Some(s) if s.state == 'T')
    });
    sh.line("jobs");
    sh.expect("[1]+  Stopped", "`jobs` should list the job as Stopped");
    sh.prompt();
    let bash = sh.stat(sh.pid);
    assert_eq!(
        bash.tpgid,
        bash.pgrp,
        "while the job is stopped the shell should own the terminal\n{}",
        sh.dump()
    );

    sh.line("fg");
    sh.wait_until(
        &format!(
            "after fg watchd {watchd} and sleep {child} both run again (state S) and sleep's \
             group owns the terminal"
        ),
        |_| {
            matches!(stat(watchd), Some(s) if s.state == 'S')
                && matches!(stat(child), Some(s) if s.state == 'S' && s.tpgid == child)
        },
    );
    sh.send(b"\x03");
    sh.expect(PROMPT, "^C after fg should end the job");
    sh.status(130, "the resumed job should still die of ^C's SIGINT");
    sh.shell_has_the_terminal();
}

/// Scenario 3. Programs that use the terminal: a line typed at the terminal reaches a child
/// that reads it, and a child that switches the terminal to raw mode (as full-screen programs
/// do) gets a single key. From a background group either would be stopped by SIGTTIN/SIGTTOU.
#[test]
fn a_child_reading_the_terminal_gets_what_is_typed() {
    let mut sh = Shell::start();
    sh.line("watchd -- sh -c 'read x; echo got:$x'");
    sh.job("sh");
    sh.send(b"hello\r");
    sh.expect_not_after(
        "got:hello\r\n",
        "Stopped",
        "the line typed should reach `read` in the child (a child outside the foreground \
         group is stopped by SIGTTIN instead, and the shell reports the job Stopped)",
    );
    sh.prompt();
    sh.status(0, "watchd should exit with sh's status 0");

    // stty changes the terminal (SIGTTOU from a background group); dd then reads one byte.
    sh.line("watchd -- sh -c 'stty raw -echo; k=$(dd bs=1 count=1 2>/dev/null); stty sane; echo key:$k'");
    let bash = sh.pid;
    sh.wait_until("the child's dd is reading the terminal in raw mode", |_| {
        session_members(bash).iter().any(|s| s.comm == "dd")
    });
    sh.send(b"q");
    sh.expect_not_after(
        "key:q\r\n",
        "Stopped",
        "one key pressed should reach a child that put the terminal in raw mode",
    );
    sh.prompt();
    sh.status(0, "watchd should exit with sh's status 0");
    sh.shell_has_the_terminal();
}

/// Scenario 4. While watchd runs a command on the terminal, the command's own process group
/// is the terminal's foreground group (watchd's is not); after watchd exits the shell has the
/// terminal again.
#[test]
fn the_command_owns_the_terminal_while_it_runs() {
    let mut sh = Shell::start();
    sh.line("watchd -- sleep 100");
    let (watchd, child) = sh.job("sleep");
    // watchd hands over the terminal before exec, so once `sleep` runs this holds: no polling.
    let c = sh.stat(child);
    let w = sh.stat(watchd);
    assert_eq!(c.pgrp, child, "the command should lead its own process group\n{}", sh.dump());
    assert_ne!(w.pgrp, c.pgrp, "watchd should not share the command's group\n{}", sh.dump());
    assert_eq!(
        c.tpgid,
        child,
        "the command's group should be the terminal's foreground group (tpgid), so ^C, ^Z and \
         terminal reads go to it\n{}",
        sh.dump()
    );
    sh.send(b"\x03");
    sh.prompt();
    sh.status(130, "^C should end the job");
    sh.shell_has_the_terminal();
}

/// Scenario 4, the part only watchd can get right: a parent without job control (a script)
/// does not take the terminal back itself, so watchd must return it when the command ends.
/// Otherwise the script's next terminal read is stopped by SIGTTIN.
#[test]
fn a_script_around_watchd_gets_the_terminal_back() {
    let mut sh = Shell::start();
    sh.line("bash -c 'watchd -- true; echo ready:$((1+1)); read -r l; echo script:$l'");
    sh.expect("ready:2\r\n", "the script should run watchd -- true to its end");
    sh.send(b"typed\r");
    sh.expect(
        "script:typed\r\n",
        "after watchd exits, the script's `read` should get the typed line (if watchd left \
         the terminal to its child's dead group, the read is stopped by SIGTTIN and the shell \
         reports the script Stopped)",
    );
    sh.prompt();
    sh.status(0, "the script should exit 0");
    sh.shell_has_the_terminal();
}

/// ^Z, then `bg`: both resume in the background and the terminal stays with the shell; then
/// `fg` and the command reads the terminal, as a full-screen program does: the read gets what
/// is typed, as it would without watchd. The command waits on a FIFO so that it touches the
/// terminal only after `fg`.
#[test]
fn bg_then_fg_lets_the_command_read_the_terminal() {
    let dir = util::TempDir::new("jobctl");
    let fifo = dir.path("go");
    let c_fifo = std::ffi::CString::new(fifo.to_str().expect("a UTF-8 temp path")).unwrap();
    // SAFETY: a valid C string path.
    let made = unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) };
    assert_eq!(made, 0, "mkfifo {}: {}", fifo.display(), errno());
    let mut sh = Shell::start();
    sh.line(&format!("watchd -- sh -c 'read go < {}; read x; echo got:$x'", fifo.display()));
    let (watchd, child) = sh.job("sh");
    sh.send(b"\x1a");
    sh.expect("Stopped", "after ^Z the shell should report the job stopped");
    sh.prompt();
    sh.wait_until("watchd and sh are both stopped (state T)", |_| {
        matches!(stat(watchd), Some(s) if s.state == 'T')
            && matches!(stat(child), Some(s) if s.state == 'T')
    });

    sh.line("bg");
    sh.prompt();
    sh.wait_until("after bg (SIGCONT) watchd and sh both run again (state S)", |_| {
        matches!(stat(watchd), Some(s) if s.state == 'S')
            && matches!(stat(child), Some(s) if s.state == 'S')
    });
    let bash = sh.stat(sh.pid);
    assert_eq!(
        bash.tpgid,
        bash.pgrp,
        "a job resumed in the background must not take the terminal from the shell\n{}",
        sh.dump()
    );

    sh.line("fg");
    let (bash_pid, bash_pgrp) = (sh.pid, bash.pgrp);
    sh.wait_until(
        "fg has taken the terminal from the shell",
        |_| matches!(stat(bash_pid), Some(s) if s.tpgid != bash_pgrp),
    );
    // Let sh go on to its terminal read (it holds the FIFO open for reading by now, or soon).
    let mut writer = None;
    sh.wait_until("sh opens the FIFO", |_| {
        writer =
            std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&fifo).ok();
        writer.is_some()
    });
    writer.expect("opened by the wait").write_all(b"go\n").expect("write to the FIFO");
    sh.send(b"hello\r");
    sh.expect_not_after(
        "got:hello\r\n",
        "Stopped",
        "after bg and fg the command's terminal read should get the typed line, not be \
         stopped by SIGTTIN because its group is not the terminal's foreground group",
    );
    sh.prompt();
    sh.status(0, "watchd should exit with sh's status 0");
    sh.shell_has_the_terminal();
}

/// Started with `&`, a command that reads the terminal is stopped by SIGTTIN; as without
/// watchd, the shell must see the job stopped, and `fg` must hand it the terminal so the read
/// gets what is typed.
#[test]
fn a_background_reader_stops_and_fg_lets_it_read() {
    let mut sh = Shell::start();
    sh.line("watchd -- sh -c 'read x; echo got:$x' &");
    sh.prompt();
    let (watchd, child) = sh.job("sh");
    sh.wait_until(
        "sh, reading from the background, is stopped by SIGTTIN",
        |_| matches!(stat(child), Some(s) if s.state == 'T'),
    );
    sh.wait_until(
        "watchd stops with its child, so that the shell sees the job stopped (else `jobs` \
         says Running and `fg` hangs: watchd forwards SIGCONT, sh reads from a background \
         group again and is stopped again, and ^C stays pending on a stopped process)",
        |_| matches!(stat(watchd), Some(s) if s.state == 'T'),
    );
    sh.line("jobs");
    sh.expect("Stopped", "`jobs` should list the job as Stopped");
    sh.prompt();

    sh.line("fg");
    sh.wait_until(
        "after fg sh's group is the terminal's foreground group",
        |_| matches!(stat(child), Some(s) if s.tpgid == child),
    );
    sh.send(b"hello\r");
    sh.expect_not_after("got:hello\r\n", "Stopped", "after fg the read should get the typed line");
    sh.prompt();
    sh.status(0, "watchd should exit with sh's status 0");
    sh.shell_has_the_terminal();
}

/// Piped input on an interactive shell (`echo data | watchd -- cmd`): watchd's stdin is a pipe,
/// but it has a controlling terminal and is in its foreground group, so the command still
/// becomes the foreground job and can read the terminal, as it would without watchd.
#[test]
fn piped_stdin_still_gives_the_command_the_terminal() {
    let mut sh = Shell::start();
    sh.line("echo data | watchd -- sh -c 'read y; read x </dev/tty; echo got:$y:$x'");
    sh.job("sh");
    sh.send(b"hello\r");
    sh.expect_not_after(
        "got:data:hello\r\n",
        "Stopped",
        "the child should read the pipe, then the terminal (a child left in a background \
         group is stopped by SIGTTIN, and the shell reports the job Stopped)",
    );
    sh.prompt();
    sh.status(0, "watchd should exit with sh's status 0");
    sh.shell_has_the_terminal();
}
