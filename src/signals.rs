//! Signals as values: parsing (`TERM`, `SIGTERM`, `term`, `15`, `RTMIN+3`), display, the set
//! watchd forwards, and a set type for decisions. (The kernel's `sigset_t` lives in `sys`.)

use std::fmt;

/// A signal number, standard or real-time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signal(i32);

/// Standard signal names, without the `SIG` prefix.
const NAMES: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("POLL", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// The standard signals watchd passes on to the child (README, "Signals").
/// Real-time signals are forwarded too; see [`forwarded`].
const FORWARDED: &[i32] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGTERM,
    libc::SIGALRM,
    libc::SIGWINCH,
    libc::SIGCONT,
    libc::SIGTSTP,
    libc::SIGURG,
    libc::SIGIO,
    libc::SIGPWR,
    libc::SIGPROF,
    libc::SIGVTALRM,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGSYS,
    // Synchronous: forwarded only when another process sent them (`kill -ABRT`, systemd's
    // WatchdogSignal), see `is_synchronous`.
    libc::SIGABRT,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGSEGV,
    libc::SIGTRAP,
];

/// Signals the kernel raises for a fault of the thread itself. Blocking them is safe: a real
/// fault unblocks and kills. Sent by another process, they are forwarded like any other.
const SYNCHRONOUS: &[i32] = &[
    libc::SIGABRT,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGSEGV,
    libc::SIGTRAP,
    libc::SIGSYS,
];

pub const SIGHUP: Signal = Signal(libc::SIGHUP);
pub const SIGINT: Signal = Signal(libc::SIGINT);
pub const SIGQUIT: Signal = Signal(libc::SIGQUIT);
pub const SIGABRT: Signal = Signal(libc::SIGABRT);
pub const SIGKILL: Signal = Signal(libc::SIGKILL);
pub const SIGTERM: Signal = Signal(libc::SIGTERM);
pub const SIGUSR1: Signal = Signal(libc::SIGUSR1);
pub const SIGCHLD: Signal = Signal(libc::SIGCHLD);
pub const SIGCONT: Signal = Signal(libc::SIGCONT);
pub const SIGSTOP: Signal = Signal(libc::SIGSTOP);
pub const SIGTSTP: Signal = Signal(libc::SIGTSTP);
pub const SIGTTIN: Signal = Signal(libc::SIGTTIN);
pub const SIGTTOU: Signal = Signal(libc::SIGTTOU);
pub const SIGPIPE: Signal = Signal(libc::SIGPIPE);

fn rtmin() -> i32 {
    libc::SIGRTMIN()
}

fn rtmax() -> i32 {
    libc::SIGRTMAX()
}

impl Signal {
    /// A signal from its number, if the number is one (1..=SIGRTMAX, excluding the two
    /// real-time signals glibc keeps for itself).
    pub fn from_raw(n: i32) -> Option<Signal> {
        let reserved = n >= 32 && n < rtmin();
        ((1..=rtmax()).contains(&n) && !reserved).then_some(Signal(n))
    }

    pub fn as_raw(self) -> i32 {
        self.0
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((name, _)) = NAMES.iter().find(|&&(_, n)| n == self.0) {
            return write!(f, "SIG{name}");
        }
        let (min, max) = (rtmin(), rtmax());
        match self.0 {
            n if n == min => f.write_str("SIGRTMIN"),
            n if n == max => f.write_str("SIGRTMAX"),
            n if n > min && n < max && n - min <= max - n => write!(f, "SIGRTMIN+{}", n - min),
            n if n > min && n < max => write!(f, "SIGRTMAX-{}", max - n),
            n => write!(f, "signal {n}"),
        }
    }
}

/// Parses `TERM`, `SIGTERM`, `term`, `15`, `RTMIN`, `RTMIN+3`, `SIGRTMAX-1`.
pub fn parse(text: &str) -> Result<Signal, String> {
    let bad = || {
        format!(
            "not a signal (expected a name like TERM or SIGTERM, a number 1-{}, or RTMIN+N)",
            rtmax()
        )
    };
    let s = text.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let n: i32 = s.parse().map_err(|_| bad())?;
        return Signal::from_raw(n).ok_or_else(bad);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(&(_, n)) = NAMES.iter().find(|&&(candidate, _)| candidate == name) {
        return Ok(Signal(n));
    }
    let offset = |rest: &str| -> Result<i32, String> {
        if rest.is_empty() {
            return Ok(0);
        }
        let digits = rest[1..].trim();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        digits.parse::<i32>().map_err(|_| bad())
    };
    let n = if let Some(rest) = name.strip_prefix("RTMIN") {
        if !(rest.is_empty() || rest.starts_with('+')) {
            return Err(bad());
        }
        rtmin().checked_add(offset(rest)?)
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        if !(rest.is_empty() || rest.starts_with('-')) {
            return Err(bad());
        }
        rtmax().checked_sub(offset(rest)?)
    } else {
        return Err(bad());
    };
    n.filter(|&n| n >= rtmin() && n <= rtmax()).map(Signal).ok_or_else(|| {
        format!("real-time signal out of range (RTMIN+0..RTMIN+{})", rtmax() - rtmin())
    })
}

/// Whether `sig` is one the kernel raises for a fault (see `SYNCHRONOUS`).
pub fn is_synchronous(sig: Signal) -> bool {
    SYNCHRONOUS.contains(&sig.0)
}

/// `--rewrite-signal FROM=TO`: FROM is forwarded as TO; `TO` may be `none` to drop FROM.
/// FROM must be a signal watchd forwards (not KILL, STOP, CHLD, TTIN, TTOU or PIPE).
pub fn parse_rewrite(text: &str) -> Result<(Signal, Option<Signal>), String> {
    let (from, to) = text
        .split_once('=')
        .ok_or_else(|| "expected FROM=TO, e.g. TERM=QUIT or WINCH=none".to_string())?;
    let from = parse(from)?;
    if !forwarded().any(|s| s == from) {
        return Err(format!("{from} is never forwarded, so it cannot be rewritten"));
    }
    let to = if to.trim().eq_ignore_ascii_case("none") { None } else { Some(parse(to)?) };
    Ok((from, to))
}

/// Every signal watchd forwards: the standard list plus all real-time signals.
pub fn forwarded() -> impl Iterator<Item = Signal> {
    FORWARDED.iter().copied().chain(rtmin()..=rtmax()).map(Signal)
}

/// A set of signals as plain data (signal numbers are below 65), for decisions: which signals
/// watchd delivered to the child, which were ignored when it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignalSet(u64);

impl SignalSet {
    pub fn add(&mut self, sig: Signal) {
        self.0 |= 1 << (sig.0 - 1);
    }

    pub fn contains(&self, sig: Signal) -> bool {
        self.0 & (1 << (sig.0 - 1)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        for text in ["TERM", "SIGTERM", "term", "sigterm", "15", " 15 "] {
            assert_eq!(parse(text), Ok(SIGTERM), "{text}");
        }
        assert_eq!(parse("KILL"), Ok(SIGKILL));
        assert_eq!(parse("9"), Ok(SIGKILL));
        assert_eq!(parse("RTMIN"), Ok(Signal(rtmin())));
        assert_eq!(parse("RTMIN+3"), Ok(Signal(rtmin() + 3)));
        assert_eq!(parse("sigrtmin+3"), Ok(Signal(rtmin() + 3)));
        assert_eq!(parse("RTMAX-1"), Ok(Signal(rtmax() - 1)));
        assert_eq!(parse("RTMAX"), Ok(Signal(rtmax())));
        assert_eq!(parse(&rtmax().to_string()), Ok(Signal(rtmax())));
    }

    #[test]
    fn rejects_what_is_not_a_signal() {
        for text in [
            "",
            "0",
            "-1",
            "65",
            "99999999999999",
            "TERMX",
            "SIG",
            "RTMIN+",
            "RTMIN+99",
            "RTMIN-1",
            "RTMAX+1",
            "RTMIN+x",
            "32",
            "33",
            "1.5",
            "ΣIGTERM",
            "RTMIN++1",
        ] {
            assert!(parse(text).is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn names_round_trip() {
        for n in 1..=rtmax() {
            let Some(sig) = Signal::from_raw(n) else {
                continue;
            };
            assert_eq!(parse(&sig.to_string()), Ok(sig), "{sig}");
        }
        assert_eq!(Signal(rtmin() + 3).to_string(), "SIGRTMIN+3");
        assert_eq!(Signal(rtmax() - 2).to_string(), "SIGRTMAX-2");
        assert_eq!(SIGTERM.to_string(), "SIGTERM");
    }

    #[test]
    fn forwarding_set_matches_spec() {
        let set: Vec<Signal> = forwarded().collect();
        for never in [SIGCHLD, SIGKILL, SIGSTOP, SIGTTIN, SIGTTOU, SIGPIPE] {
            assert!(!set.contains(&never), "{never} must not be forwarded");
        }
        assert!(set.contains(&SIGCONT) && set.contains(&SIGTSTP) && set.contains(&SIGHUP));
        assert!(set.contains(&Signal(rtmin())) && set.contains(&Signal(rtmax())));
        assert_eq!(set.len(), FORWARDED.len() + (rtmax() - rtmin() + 1) as usize);
    }

    #[test]
    fn rewrites_parse_and_refuse_what_is_never_forwarded() {
        assert_eq!(parse_rewrite("TERM=QUIT"), Ok((SIGTERM, Some(SIGQUIT))));
        assert_eq!(parse_rewrite("sigwinch=none"), Ok((Signal(libc::SIGWINCH), None)));
        assert_eq!(parse_rewrite("RTMIN+1=HUP"), Ok((Signal(rtmin() + 1), Some(SIGHUP))));
        for bad in ["TERM", "TERM=", "=QUIT", "KILL=TERM", "CHLD=HUP", "TERM=BOGUS", "PIPE=none"] {
            assert!(parse_rewrite(bad).is_err(), "{bad} parsed");
        }
        assert!(is_synchronous(SIGABRT) && !is_synchronous(SIGTERM));
    }

    #[test]
    fn signal_set_holds_every_signal_number() {
        let mut set = SignalSet::default();
        let rt = Signal(rtmax());
        set.add(rt);
        set.add(SIGHUP);
        assert!(set.contains(rt) && set.contains(SIGHUP) && !set.contains(SIGTERM));
        assert!(rtmax() <= 64, "SignalSet is a u64");
    }
}
