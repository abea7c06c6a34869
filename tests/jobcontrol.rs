//! Job control on a real pseudo-terminal (README, "On the command line"): an interactive
//! bash drives watchd as a user would, and the test checks what the user sees (prompt, `jobs`,
//! `$?`, echoed input) and what the kernel says (/proc states, process groups, the terminal's
//! foreground group).

mod pty;
mod util;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use pty::{PROMPT, Shell, errno, session_members, stat};

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
