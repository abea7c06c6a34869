//! How watchd ends: every ending (the child's end, an exec failure, watchd's own failure) mapped
//! to watchd's exit status in one table, and the text that says how the child ended.

use std::fmt;

use crate::signals::Signal;

/// watchd failed: usage error, bad value, internal error.
pub const FAILURE: u8 = 125;
/// COMMAND was found but could not be executed.
pub const NOT_EXECUTABLE: u8 = 126;
/// COMMAND was not found.
pub const NOT_FOUND: u8 = 127;

/// How the main child ended, from its wait status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildEnd {
    Exited(u8),
    Killed(Signal),
}

impl ChildEnd {
    /// Decodes a `waitpid` status of a child that has terminated (not stopped).
    pub fn from_wait_status(status: i32) -> Option<ChildEnd> {
        if libc::WIFEXITED(status) {
            Some(ChildEnd::Exited(libc::WEXITSTATUS(status) as u8))
        } else if libc::WIFSIGNALED(status) {
            Signal::from_raw(libc::WTERMSIG(status)).map(ChildEnd::Killed)
        } else {
            None
        }
    }
}

impl fmt::Display for ChildEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildEnd::Exited(code) => write!(f, "exited with status {code}"),
            ChildEnd::Killed(sig) => write!(f, "killed by {sig}"),
        }
    }
}

/// One entry of `--success-exit-status`: an exit code (0-255) or a signal name.
pub fn parse_status(text: &str) -> Result<ChildEnd, String> {
    let s = text.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u8>()
            .map(ChildEnd::Exited)
            .map_err(|_| "an exit code is 0 to 255".to_string());
    }
    crate::signals::parse(s).map(ChildEnd::Killed).map_err(|_| {
        "expected an exit code (0-255) or a signal name like TERM or SIGTERM".to_string()
    })
}

/// What watchd does last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Code(u8),
    /// Die of this signal, so the caller sees what it would have seen without watchd.
    Reraise(Signal),
}

/// How watchd's run ended, as far as its own exit status is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The child ended; `stopped`: watchd stopped it (a trigger fired).
    Child { end: ChildEnd, stopped: bool },
    /// COMMAND was not found.
    NotFound,
    /// COMMAND was found but could not be executed.
    NotExecutable,
    /// watchd itself failed: usage error, bad value, internal error.
    Failed,
}

/// What decides watchd's status besides the ending: `--exit-code-on-stop`,
/// `--success-exit-status`, and whether watchd is PID 1.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    pub exit_code_on_stop: Option<u8>,
    /// Ends that count as success (exit 0) when watchd did not cause them.
    pub success: Vec<ChildEnd>,
    pub pid1: bool,
}

/// The one place an ending becomes watchd's exit status.
pub fn outcome(ending: Ending, rules: &Rules) -> Outcome {
    let (end, stopped) = match ending {
        Ending::Child { end, stopped } => (end, stopped),
        Ending::NotFound => return Outcome::Code(NOT_FOUND),
        Ending::NotExecutable => return Outcome::Code(NOT_EXECUTABLE),
        Ending::Failed => return Outcome::Code(FAILURE),
    };
    match (end, rules.exit_code_on_stop) {
        (_, Some(code)) if stopped => Outcome::Code(code),
        // A drain keeps its status: the success list is for ends watchd did not cause.
        (end, _) if !stopped && rules.success.contains(&end) => Outcome::Code(0),
        (ChildEnd::Exited(code), _) => Outcome::Code(code),
        // A PID 1 cannot be killed by its own signals: report the shell convention instead.
        (ChildEnd::Killed(sig), _) if rules.pid1 => Outcome::Code(shell_code(sig)),
        (ChildEnd::Killed(sig), _) => Outcome::Reraise(sig),
    }
}

/// 128+N, the status a shell reports for death by signal N.
pub fn shell_code(sig: Signal) -> u8 {
    (128 + sig.as_raw()).min(255) as u8
}

/// What watchd last saw of the tree, for the diagnosis of a death it did not cause.
pub struct LastSeen {
    pub rss_bytes: Option<u64>,
    pub cpu_cores: Option<f64>,
    pub processes: u32,
    pub since_progress: std::time::Duration,
}

/// "child killed by SIGKILL, not sent by watchd (the kernel's OOM killer: ...); last seen
/// 1.9 GiB resident, 0.98 cores, 4 processes, 0s since progress"
pub fn diagnose(sig: Signal, oom: Option<&str>, last: Option<&LastSeen>) -> String {
    let mut text = format!("child killed by {sig}, not sent by watchd");
    if let Some(cause) = oom {
        text.push_str(&format!(" ({cause})"));
    }
    match last {
        Some(l) => {
            let cores = l.cpu_cores.map_or("? cores".to_string(), |c| format!("{c:.2} cores"));
            let processes = match l.processes {
                1 => "1 process".to_string(),
                n => format!("{n} processes"),
            };
            let rss = l.rss_bytes.map_or("?".to_string(), crate::units::human_bytes);
            text.push_str(&format!(
                "; last seen {rss} resident, {cores}, {processes}, {} since progress",
                crate::units::human_duration(l.since_progress),
            ));
        }
        None => text.push_str("; no probe had run yet"),
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::{SIGINT, SIGKILL, SIGTERM};

    #[test]
    fn exit_status_table() {
        use ChildEnd::*;
        use Outcome::*;
        let table = [
            // (end, stopped by watchd, --exit-code-on-stop, pid 1) -> outcome
            ((Exited(0), false, None, false), Code(0)),
            ((Exited(3), false, None, false), Code(3)),
            ((Exited(255), false, None, true), Code(255)),
            ((Exited(3), false, Some(124), false), Code(3)),
            ((Exited(0), true, Some(124), false), Code(124)),
            ((Exited(143), true, None, false), Code(143)),
            ((Killed(SIGTERM), false, None, false), Reraise(SIGTERM)),
            ((Killed(SIGINT), false, None, true), Code(130)),
            ((Killed(SIGKILL), true, None, true), Code(137)),
            ((Killed(SIGKILL), true, Some(124), false), Code(124)),
            ((Killed(SIGKILL), false, Some(124), false), Reraise(SIGKILL)),
        ];
        for ((end, stopped, on_stop, pid1), want) in table {
            let rules = Rules { exit_code_on_stop: on_stop, pid1, ..Rules::default() };
            assert_eq!(
                outcome(Ending::Child { end, stopped }, &rules),
                want,
                "{end:?} {stopped} {on_stop:?} {pid1}"
            );
        }
    }

    #[test]
    fn every_exit_code_is_mirrored() {
        for code in 0..=255u8 {
            let ending = Ending::Child { end: ChildEnd::Exited(code), stopped: false };
            assert_eq!(outcome(ending, &Rules::default()), Outcome::Code(code));
        }
    }

    #[test]
    fn watchds_own_endings_ignore_the_options() {
        for (ending, code) in
            [(Ending::NotFound, 127), (Ending::NotExecutable, 126), (Ending::Failed, 125)]
        {
            for (on_stop, pid1) in [(None, false), (Some(124), true)] {
                let success = vec![ChildEnd::Exited(code)];
                let rules = Rules { exit_code_on_stop: on_stop, pid1, success };
                assert_eq!(outcome(ending, &rules), Outcome::Code(code), "{ending:?}");
            }
        }
    }

    #[test]
    fn success_exit_statuses_are_0_unless_watchd_stopped_the_child() {
        use ChildEnd::*;
        let rules = Rules {
            success: vec![Exited(143), Killed(SIGTERM)],
            exit_code_on_stop: None,
            pid1: false,
        };
        let child = |end, stopped| outcome(Ending::Child { end, stopped }, &rules);
        assert_eq!(child(Exited(143), false), Outcome::Code(0));
        assert_eq!(child(Killed(SIGTERM), false), Outcome::Code(0));
        assert_eq!(child(Exited(1), false), Outcome::Code(1));
        assert_eq!(child(Killed(SIGINT), false), Outcome::Reraise(SIGINT));
        assert_eq!(child(Exited(143), true), Outcome::Code(143), "a drain keeps its status");
        assert_eq!(child(Killed(SIGTERM), true), Outcome::Reraise(SIGTERM));
        let pid1 = Rules { pid1: true, ..rules.clone() };
        assert_eq!(
            outcome(Ending::Child { end: Killed(SIGTERM), stopped: false }, &pid1),
            Outcome::Code(0)
        );
    }

    #[test]
    fn success_statuses_are_codes_or_signal_names() {
        use crate::signals::SIGTERM;
        assert_eq!(parse_status("143"), Ok(ChildEnd::Exited(143)));
        assert_eq!(parse_status("TERM"), Ok(ChildEnd::Killed(SIGTERM)));
        assert_eq!(parse_status("sigterm"), Ok(ChildEnd::Killed(SIGTERM)));
        for bad in ["", "256", "-1", "TERMX", "1.5"] {
            assert!(parse_status(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn decodes_wait_statuses() {
        assert_eq!(ChildEnd::from_wait_status(3 << 8), Some(ChildEnd::Exited(3)));
        assert_eq!(ChildEnd::from_wait_status(libc::SIGTERM), Some(ChildEnd::Killed(SIGTERM)));
        assert_eq!(
            ChildEnd::from_wait_status(libc::SIGKILL | 0x80),
            Some(ChildEnd::Killed(SIGKILL))
        );
        // Stopped by SIGTSTP: not an end.
        assert_eq!(ChildEnd::from_wait_status((libc::SIGTSTP << 8) | 0x7f), None);
    }

    #[test]
    fn diagnosis_names_signal_cause_and_figures() {
        let last = LastSeen {
            rss_bytes: Some(2040 << 20),
            cpu_cores: Some(0.98),
            processes: 4,
            since_progress: std::time::Duration::ZERO,
        };
        let text =
            diagnose(SIGKILL, Some("the kernel's OOM killer: oom_kill rose by 1"), Some(&last));
        assert_eq!(
            text,
            "child killed by SIGKILL, not sent by watchd (the kernel's OOM killer: oom_kill rose by 1); \
             last seen 2.0 GiB resident, 0.98 cores, 4 processes, 0s since progress"
        );
        assert_eq!(
            diagnose(SIGTERM, None, None),
            "child killed by SIGTERM, not sent by watchd; no probe had run yet"
        );
    }
}
