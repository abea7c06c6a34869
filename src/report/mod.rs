//! Everything watchd writes: `watchd: ` lines on stderr, JSON-lines events, the metrics textfile.
//!
//! No decisions live here: callers decide what happened, this module decides only how it reads.
//! stdout belongs to the child and is never written.

mod events;
mod metrics;
mod out;

use std::fmt::Display;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use events::{Event, event_json};
pub(crate) use events::{json_f64, json_string};
pub use metrics::{Metrics, MetricsFile, render_metrics};
pub use out::Out;

/// How much watchd says on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `-q`: nothing from [`Reporter::warn`] or [`Reporter::info`].
    Quiet,
    /// Default: failures, triggers, drains and diagnoses.
    Normal,
    /// `-v`: also start, forwarded signals, reaped orphans and the exit line.
    Verbose,
}

/// Where events go.
#[derive(Debug)]
pub enum Sink {
    /// `--events -`: stderr, one record per line like every other stderr line.
    Stderr,
    /// `--events PATH`, opened for appending by [`open_events`].
    File(Out),
    /// A FIFO nobody reads yet: opened again at each event until a reader comes; events
    /// before that are dropped.
    Fifo(PathBuf),
}

/// Opens `--events PATH` (`-` = stderr) for appending, creating the file if needed. Never
/// waits (a FIFO without a reader is [`Sink::Fifo`]), and never follows a symlink someone
/// else owns (a link planted in a shared directory must not redirect watchd's writes).
pub fn open_events(path: &Path) -> io::Result<Sink> {
    if path.as_os_str() == "-" {
        return Ok(Sink::Stderr);
    }
    match open_appending(path) {
        Err(err) if err.raw_os_error() == Some(libc::ENXIO) => Ok(Sink::Fifo(path.to_path_buf())),
        other => other.map(Sink::File),
    }
}

fn open_appending(path: &Path) -> io::Result<Out> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let open = |follow: bool| {
        let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
        OpenOptions::new()
            .append(true)
            .create(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY | nofollow)
            .mode(0o644)
            .open(path)
    };
    // A link is looked at before the open (the kernel's protected_symlinks may refuse it with a
    // bare EACCES), and the open itself never follows one unless it passed: a link swapped in
    // between is ELOOP.
    let follow = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            let (owner, me) = (meta.uid(), nix::unistd::geteuid().as_raw());
            if owner != me && owner != 0 {
                return Err(io::Error::other(format!(
                    "it is a symbolic link owned by uid {owner}, not by watchd's user (uid {me}); \
                     refusing to follow it"
                )));
            }
            true
        }
        _ => false,
    };
    let file = open(follow)?;
    if file.metadata()?.is_dir() {
        return Err(io::Error::other("it is a directory"));
    }
    Ok(Out::own(file.into()))
}

/// The one place watchd's output goes through. Nothing here waits: what cannot be written at
/// once is dropped and counted (`dropped`).
#[derive(Debug)]
pub struct Reporter {
    level: Level,
    stderr: Out,
    events: Option<Sink>,
    metrics: Option<MetricsFile>,
    /// The metrics file is retried after every probe, but a failure is said only once.
    metrics_warned: bool,
    dropped: u64,
}

impl Reporter {
    pub fn new(level: Level, events: Option<Sink>, metrics: Option<MetricsFile>) -> Reporter {
        Reporter {
            level,
            stderr: Out::stderr(),
            events,
            metrics,
            metrics_warned: false,
            dropped: 0,
        }
    }

    /// Whether anyone reads the details (`-v` or an events sink): callers on hot paths skip
    /// formatting them otherwise.
    pub fn wants_details(&self) -> bool {
        self.level == Level::Verbose || self.events.is_some()
    }

    /// Lines and events dropped so far because they could not be written at once.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// A line at `level`: [`Level::Normal`] is [`Reporter::warn`], [`Level::Verbose`] is
    /// [`Reporter::info`].
    pub fn say(&mut self, level: Level, msg: impl Display) {
        if let Some(line) = self.line(level, msg) {
            self.count(|r| r.stderr.write(&line));
        }
    }

    /// Failures, triggers, drains, diagnoses: shown unless `-q`.
    pub fn warn(&mut self, msg: impl Display) {
        self.say(Level::Normal, msg);
    }

    /// Start, forwarded signals, reaped orphans, the exit line: shown with `-v`.
    pub fn info(&mut self, msg: impl Display) {
        self.say(Level::Verbose, msg);
    }

    /// Writes one event line, at every level (events were asked for explicitly). Without a sink
    /// this does nothing; after a write error on the file the sink is dropped with one warning.
    /// The `exit` event gets the count of what was dropped.
    pub fn event(&mut self, ev: &Event) {
        if self.events.is_none() {
            return;
        }
        let mut line = match ev {
            Event::Exit { .. } => {
                let mut ev = ev.clone();
                if let Event::Exit { dropped, .. } = &mut ev {
                    *dropped = self.dropped;
                }
                event_json(&ev, SystemTime::now())
            }
            _ => event_json(ev, SystemTime::now()),
        };
        line.push('\n');
        let written = match &mut self.events {
            Some(Sink::Stderr) => self.stderr.write(line.as_bytes()),
            Some(Sink::File(out)) => out.write(line.as_bytes()),
            Some(Sink::Fifo(path)) => match open_appending(path) {
                Ok(mut out) => {
                    let written = out.write(line.as_bytes());
                    self.events = Some(Sink::File(out));
                    written
                }
                Err(_) => false,
            },
            None => true,
        };
        if !written {
            self.dropped += 1;
        }
    }

    /// Rewrites the metrics file, if there is one. A failure is warned about once; later probes
    /// keep trying, so a directory that appears or a disk that frees up is picked up silently.
    pub fn metrics(&mut self, m: &Metrics) {
        let Some(file) = &mut self.metrics else {
            return;
        };
        let m = Metrics { output_dropped: self.dropped, ..m.clone() };
        if let Err(err) = file.write(&render_metrics(&m)) {
            if !self.metrics_warned {
                let path = file.path().display().to_string();
                self.warn(format_args!(
                    "cannot write the --metrics-file {path}: {err}; retrying after each probe, \
                     without further warnings"
                ));
            }
            self.metrics_warned = true;
        }
    }

    /// Descriptors with the tail of a record waiting: poll them for writability, then call
    /// [`Reporter::flush`].
    pub fn waiting(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        let events = match &self.events {
            Some(Sink::File(out)) => Some(out),
            _ => None,
        };
        [Some(&self.stderr), events]
            .into_iter()
            .flatten()
            .filter(|o| o.pending())
            .filter_map(Out::fd)
    }

    /// Writes what it can of records written in part.
    pub fn flush(&mut self) {
        self.stderr.flush();
        if let Some(Sink::File(out)) = &mut self.events {
            out.flush();
        }
    }

    fn count(&mut self, write: impl FnOnce(&mut Reporter) -> bool) {
        if !write(self) {
            self.dropped += 1;
        }
    }

    /// The bytes of one stderr line for a message that needs `needs`, or None when the level
    /// hides it. Control characters in `msg` (from argv, say) are escaped, so one message is
    /// exactly one line starting `watchd: ` and cannot drive the terminal.
    fn line(&self, needs: Level, msg: impl Display) -> Option<Vec<u8>> {
        if self.level < needs || self.level == Level::Quiet {
            return None;
        }
        Some(prefixed(msg))
    }
}

/// `watchd: MSG\n`, control characters escaped.
fn prefixed(msg: impl Display) -> Vec<u8> {
    let text = msg.to_string();
    let mut line = String::with_capacity(text.len() + 16);
    line.push_str("watchd: ");
    for c in text.trim_end_matches('\n').chars() {
        if c.is_control() && c != '\t' {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    line.push('\n');
    line.into_bytes()
}

/// A usage error or a command that cannot be started: one line, shown even with `-q` (and,
/// like every line, dropped rather than waited for).
pub fn usage_error(msg: impl Display) {
    Out::stderr().write(&prefixed(msg));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Scratch;
    use serde_json::Value as J;
    use std::fs;

    #[test]
    fn a_message_is_exactly_one_prefixed_line() {
        let r = Reporter::new(Level::Normal, None, None);
        let line = |msg: &str| String::from_utf8(r.line(Level::Normal, msg).unwrap()).unwrap();
        assert_eq!(
            line("stall: no CPU or I/O progress for 30s (3 processes)"),
            "watchd: stall: no CPU or I/O progress for 30s (3 processes)\n"
        );
        assert_eq!(line("trailing newline\n"), "watchd: trailing newline\n");
        assert_eq!(
            line("cannot execute 'a\nb\u{1b}[31m'\tnow"),
            "watchd: cannot execute 'a\\nb\\u{1b}[31m'\tnow\n"
        );
        let args = format_args!("{} {}", "child exited", 3);
        assert_eq!(
            String::from_utf8(r.line(Level::Normal, args).unwrap()).unwrap(),
            "watchd: child exited 3\n"
        );
    }

    #[test]
    fn events_go_to_the_file_at_every_level_one_line_each() {
        let dir = Scratch::new("events");
        let path = dir.0.join("events.jsonl");
        let mut r = Reporter::new(Level::Quiet, Some(open_events(&path).unwrap()), None);
        r.event(&Event::Signal { signal: "SIGINT".into(), to: "child" });
        r.event(&Event::Trigger {
            reason: "timeout",
            detail: "ran for 10s,\nthe --timeout".into(),
        });
        // Reopening appends rather than truncating.
        let mut r2 = Reporter::new(Level::Quiet, Some(open_events(&path).unwrap()), None);
        r2.event(&Event::Kill { signal: "SIGKILL".into(), processes: 2 });
        let text = fs::read_to_string(&path).unwrap();
        let events: Vec<J> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let names: Vec<_> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
        assert_eq!(names, ["signal", "trigger", "kill"]);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn open_events_dash_is_stderr_and_bad_paths_fail() {
        assert!(matches!(open_events(Path::new("-")), Ok(Sink::Stderr)));
        let dir = Scratch::new("open");
        assert!(open_events(&dir.0.join("missing/events")).is_err());
        assert!(open_events(&dir.0).is_err(), "a directory is not an events file");
    }

    #[test]
    fn an_event_that_cannot_be_written_is_dropped_and_counted() {
        let dir = Scratch::new("ro");
        let path = dir.0.join("ro");
        fs::write(&path, "").unwrap();
        let read_only = std::fs::File::open(&path).unwrap();
        let mut r = Reporter::new(Level::Quiet, Some(Sink::File(Out::own(read_only.into()))), None);
        r.event(&Event::Reap { pid: 1, status: "exited 0".into() });
        r.event(&Event::Reap { pid: 2, status: "exited 0".into() });
        assert_eq!(r.dropped(), 2);
    }

    #[test]
    fn an_events_fifo_without_a_reader_does_not_block_and_is_picked_up_later() {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = Scratch::new("fifo");
        let fifo = dir.0.join("events");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let sink = open_events(&fifo).unwrap();
        assert!(matches!(sink, Sink::Fifo(_)));
        let mut r = Reporter::new(Level::Quiet, Some(sink), None);
        r.event(&Event::Reap { pid: 1, status: "exited 0".into() });
        assert_eq!(r.dropped(), 1);
        let mut reader =
            std::fs::File::options().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).unwrap();
        r.event(&Event::Reap { pid: 2, status: "exited 0".into() });
        let mut got = String::new();
        let _ = reader.read_to_string(&mut got);
        assert!(got.contains("\"pid\":2"), "{got}");
        assert_eq!(r.dropped(), 1);
    }

    #[test]
    fn an_events_link_owned_by_someone_else_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            return; // needs to chown a link to another user
        }
        let dir = Scratch::new("evlink");
        let victim = dir.0.join("root-only");
        fs::write(&victim, "precious").unwrap();
        let link = crate::testutil::link_owned_by_nobody(&dir, "events", &victim);
        let err = open_events(&link).unwrap_err();
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
        // A link of watchd's own user is followed.
        let mine = dir.0.join("mine");
        std::os::unix::fs::symlink(&victim, &mine).unwrap();
        assert!(matches!(open_events(&mine), Ok(Sink::File(_))));
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn reporter_metrics_writes_and_warns_once_on_failure() {
        let dir = Scratch::new("rmetrics");
        let good = dir.0.join("ok.prom");
        let mut r = Reporter::new(Level::Quiet, None, Some(MetricsFile::new(&good).unwrap()));
        let m = Metrics { processes: 4, cpu_cores: 0.5, ..Metrics::default() };
        r.metrics(&m);
        assert_eq!(fs::read_to_string(&good).unwrap(), render_metrics(&m));
        r.warn("nobody reads this in a test");
        assert!(!r.metrics_warned);

        let gone = MetricsFile::new(&dir.0.join("gone/x.prom")).unwrap();
        let mut r = Reporter::new(Level::Quiet, None, Some(gone));
        r.metrics(&Metrics::default());
        assert!(r.metrics_warned);
        r.metrics(&Metrics::default());
        assert!(r.metrics_warned);

        let mut none = Reporter::new(Level::Verbose, None, None);
        none.metrics(&Metrics::default());
        none.event(&Event::Reap { pid: 1, status: "exited 0".into() });
    }
}
