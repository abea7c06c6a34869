//! Everything watchd writes: `watchd: ` lines on stderr, JSON-lines events, the metrics textfile.
//!
//! No decisions live here: callers decide what happened, this module decides only how it reads.
//! stdout belongs to the child and is never written.

mod events;
mod metrics;

use std::fmt::Display;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use events::{Event, event_json};
pub use metrics::{Metrics, render_metrics, write_metrics};

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
    /// `--events -`: stderr, one write(2) per line like every other stderr line.
    Stderr,
    /// `--events PATH`, opened for appending by [`open_events`].
    File(File),
}

/// Opens `--events PATH` (`-` = stderr) for appending, creating the file if needed.
pub fn open_events(path: &Path) -> io::Result<Sink> {
    if path.as_os_str() == "-" {
        return Ok(Sink::Stderr);
    }
    OpenOptions::new().append(true).create(true).open(path).map(Sink::File)
}

/// The one place watchd's output goes through.
#[derive(Debug)]
pub struct Reporter {
    level: Level,
    events: Option<Sink>,
    metrics: Option<PathBuf>,
    /// The metrics file is retried after every probe, but a failure is said only once.
    metrics_warned: bool,
}

impl Reporter {
    pub fn new(level: Level, events: Option<Sink>, metrics: Option<PathBuf>) -> Reporter {
        Reporter { level, events, metrics, metrics_warned: false }
    }

    /// Whether anyone reads the details (`-v` or an events sink): callers on hot paths skip
    /// formatting them otherwise.
    pub fn wants_details(&self) -> bool {
        self.level == Level::Verbose || self.events.is_some()
    }

    /// A line at `level`: [`Level::Normal`] is [`Reporter::warn`], [`Level::Verbose`] is
    /// [`Reporter::info`].
    pub fn say(&self, level: Level, msg: impl Display) {
        if let Some(line) = self.line(level, msg) {
            write_stderr(&line);
        }
    }

    /// Failures, triggers, drains, diagnoses: shown unless `-q`.
    pub fn warn(&self, msg: impl Display) {
        if let Some(line) = self.line(Level::Normal, msg) {
            write_stderr(&line);
        }
    }

    /// Start, forwarded signals, reaped orphans, the exit line: shown with `-v`.
    pub fn info(&self, msg: impl Display) {
        if let Some(line) = self.line(Level::Verbose, msg) {
            write_stderr(&line);
        }
    }

    /// Writes one event line, at every level (events were asked for explicitly). Without a sink
    /// this does nothing; after a write error on the file the sink is dropped with one warning.
    pub fn event(&mut self, ev: &Event) {
        let Some(sink) = &mut self.events else {
            return;
        };
        let mut line = event_json(ev, SystemTime::now());
        line.push('\n');
        let failed = match sink {
            Sink::Stderr => {
                write_stderr(line.as_bytes());
                None
            }
            Sink::File(file) => file.write_all(line.as_bytes()).err(),
        };
        if let Some(err) = failed {
            self.events = None;
            self.warn(format_args!(
                "cannot write to the --events file: {err}; no more events will be written"
            ));
        }
    }

    /// Rewrites the metrics file, if there is one. A failure is warned about once; later probes
    /// keep trying, so a directory that appears or a disk that frees up is picked up silently.
    pub fn metrics(&mut self, m: &Metrics) {
        let Some(path) = &self.metrics else {
            return;
        };
        if let Err(err) = write_metrics(path, &render_metrics(m)) {
            if !self.metrics_warned {
                self.warn(format_args!(
                    "cannot write the --metrics-file {}: {err}; retrying after each probe, \
                     without further warnings",
                    path.display()
                ));
            }
            self.metrics_warned = true;
        }
    }

    /// The bytes of one stderr line for a message that needs `needs`, or None when the level
    /// hides it. Control characters in `msg` (from argv, say) are escaped, so one message is
    /// exactly one line starting `watchd: ` and cannot drive the terminal.
    fn line(&self, needs: Level, msg: impl Display) -> Option<Vec<u8>> {
        if self.level < needs || self.level == Level::Quiet {
            return None;
        }
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
        Some(line.into_bytes())
    }
}

/// A usage error or a command that cannot be started: one line, shown even with `-q`.
pub fn usage_error(msg: impl Display) {
    let reporter = Reporter::new(Level::Normal, None, None);
    if let Some(line) = reporter.line(Level::Normal, msg) {
        write_stderr(&line);
    }
}

/// One write(2) of a whole line, so watchd's lines and the child's do not interleave mid-line.
/// Errors (a closed or broken stderr) are ignored: there is nowhere left to report them. A broken
/// pipe comes back as EPIPE rather than killing watchd because watchd blocks SIGPIPE first
/// thing (`crate::entry`); std already treats EBADF on stderr as success.
fn write_stderr(line: &[u8]) {
    let _ = io::stderr().lock().write_all(line);
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
    fn an_event_write_error_drops_the_sink() {
        let dir = Scratch::new("ro");
        let path = dir.0.join("ro");
        fs::write(&path, "").unwrap();
        let read_only = File::open(&path).unwrap();
        let mut r = Reporter::new(Level::Quiet, Some(Sink::File(read_only)), None);
        r.event(&Event::Reap { pid: 1, status: "exited 0".into() });
        assert!(r.events.is_none());
        r.event(&Event::Reap { pid: 2, status: "exited 0".into() });
    }

    #[test]
    fn reporter_metrics_writes_and_warns_once_on_failure() {
        let dir = Scratch::new("rmetrics");
        let good = dir.0.join("ok.prom");
        let mut r = Reporter::new(Level::Quiet, None, Some(good.clone()));
        let m = Metrics { processes: 4, cpu_cores: 0.5, ..Metrics::default() };
        r.metrics(&m);
        assert_eq!(fs::read_to_string(&good).unwrap(), render_metrics(&m));
        assert!(!r.metrics_warned);

        let mut r = Reporter::new(Level::Quiet, None, Some(dir.0.join("gone/x.prom")));
        r.metrics(&Metrics::default());
        assert!(r.metrics_warned);
        r.metrics(&Metrics::default());
        assert!(r.metrics_warned);

        let mut none = Reporter::new(Level::Verbose, None, None);
        none.metrics(&Metrics::default());
        none.event(&Event::Reap { pid: 1, status: "exited 0".into() });
    }
}
