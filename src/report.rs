//! Everything watchd writes: `watchd: ` lines on stderr, JSON-lines events, the metrics textfile.
//!
//! No decisions live here: callers decide what happened, this module decides only how it reads.
//! stdout belongs to the child and is never written.

use std::ffi::{OsStr, OsString};
use std::fmt::{self, Display, Write as _};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// One JSON-lines event, in the vocabulary of the SPEC's "Output" section.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    Start {
        pid: i32,
        argv: &'a [OsString],
    },
    Sample {
        /// None before the second probe: there is no window to measure yet.
        cpu_cores: Option<f64>,
        cpu_seconds: f64,
        io_bytes: u64,
        rss_bytes: u64,
        processes: u32,
        since_progress_s: f64,
    },
    Signal {
        /// e.g. "SIGUSR1".
        signal: &'a str,
        /// "child", "group" or "tree".
        to: &'a str,
    },
    Trigger {
        reason: &'a str,
        detail: &'a str,
    },
    /// Exactly one of `signal`/`cmd` is written: `cmd` when set (the --stop-cmd replaces the
    /// signal), else `signal` (null if neither is set, so the key is still there).
    Stop {
        signal: Option<&'a str>,
        cmd: Option<&'a str>,
        grace_s: f64,
    },
    Kill {
        signal: &'a str,
        processes: u32,
    },
    Reap {
        pid: i32,
        /// e.g. "exited 0", "killed by SIGTERM".
        status: &'a str,
    },
    Exit {
        code: Option<i32>,
        signal: Option<&'a str>,
        reason: Option<&'a str>,
        duration_s: f64,
        diagnosis: Option<&'a str>,
    },
}

impl Event<'_> {
    /// The `event` field.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Start { .. } => "start",
            Event::Sample { .. } => "sample",
            Event::Signal { .. } => "signal",
            Event::Trigger { .. } => "trigger",
            Event::Stop { .. } => "stop",
            Event::Kill { .. } => "kill",
            Event::Reap { .. } => "reap",
            Event::Exit { .. } => "exit",
        }
    }
}

/// One JSON object, no trailing newline: `{"ts":"2026-11-22T20:21:00.123Z","event":"start",...}`.
///
/// `ts` is RFC 3339 UTC with milliseconds; fields follow in the SPEC's order. `None` is written as
/// `null` so consumers see a fixed schema (except `stop`, see [`Event::Stop`]). Floats have at most
/// three decimals; NaN and infinities are `null`.
pub fn event_json(ev: &Event, ts: SystemTime) -> String {
    let mut o = JsonObject::new(ts, ev.name());
    match *ev {
        Event::Start { pid, argv } => {
            o.int("pid", pid);
            o.os_str_array("argv", argv);
        }
        Event::Sample {
            cpu_cores,
            cpu_seconds,
            io_bytes,
            rss_bytes,
            processes,
            since_progress_s,
        } => {
            o.opt_float("cpu_cores", cpu_cores);
            o.float("cpu_seconds", cpu_seconds);
            o.int("io_bytes", io_bytes);
            o.int("rss_bytes", rss_bytes);
            o.int("processes", processes);
            o.float("since_progress_s", since_progress_s);
        }
        Event::Signal { signal, to } => {
            o.str("signal", signal);
            o.str("to", to);
        }
        Event::Trigger { reason, detail } => {
            o.str("reason", reason);
            o.str("detail", detail);
        }
        Event::Stop { signal, cmd, grace_s } => {
            match cmd {
                Some(cmd) => o.str("cmd", cmd),
                None => o.opt_str("signal", signal),
            }
            o.float("grace_s", grace_s);
        }
        Event::Kill { signal, processes } => {
            o.str("signal", signal);
            o.int("processes", processes);
        }
        Event::Reap { pid, status } => {
            o.int("pid", pid);
            o.str("status", status);
        }
        Event::Exit { code, signal, reason, duration_s, diagnosis } => {
            o.opt_int("code", code);
            o.opt_str("signal", signal);
            o.opt_str("reason", reason);
            o.float("duration_s", duration_s);
            o.opt_str("diagnosis", diagnosis);
        }
    }
    o.finish()
}

/// Builds one JSON object in a single buffer (no serde: four value shapes do not need it).
struct JsonObject {
    buf: String,
}

impl JsonObject {
    fn new(ts: SystemTime, event: &str) -> JsonObject {
        let mut buf = String::with_capacity(128);
        // humantime panics before 1970 and fails after 9999: a broken clock must not kill watchd.
        let latest = UNIX_EPOCH + Duration::from_millis(253_402_300_799_999);
        let ts = ts.clamp(UNIX_EPOCH, latest);
        let _ = write!(buf, "{{\"ts\":\"{}\"", humantime::format_rfc3339_millis(ts));
        let mut o = JsonObject { buf };
        o.str("event", event);
        o
    }

    fn key(&mut self, key: &str) {
        // Keys are fixed identifiers from this file; they need no escaping.
        self.buf.push_str(",\"");
        self.buf.push_str(key);
        self.buf.push_str("\":");
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        json_string(&mut self.buf, value);
    }

    fn opt_str(&mut self, key: &str, value: Option<&str>) {
        match value {
            Some(v) => self.str(key, v),
            None => self.null(key),
        }
    }

    /// The `Into<i128>` bound admits every integer type and keeps floats out.
    fn int(&mut self, key: &str, value: impl Into<i128> + Display) {
        self.key(key);
        let _ = write!(self.buf, "{value}");
    }

    fn opt_int(&mut self, key: &str, value: Option<i32>) {
        match value {
            Some(v) => self.int(key, v),
            None => self.null(key),
        }
    }

    fn float(&mut self, key: &str, value: f64) {
        self.key(key);
        json_f64(&mut self.buf, value);
    }

    fn opt_float(&mut self, key: &str, value: Option<f64>) {
        match value {
            Some(v) => self.float(key, v),
            None => self.null(key),
        }
    }

    fn os_str_array(&mut self, key: &str, values: &[OsString]) {
        self.key(key);
        self.buf.push('[');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.buf.push(',');
            }
            // argv is bytes; JSON is Unicode. U+FFFD marks what could not be decoded.
            json_string(&mut self.buf, &OsStr::to_string_lossy(v));
        }
        self.buf.push(']');
    }

    fn null(&mut self, key: &str) {
        self.key(key);
        self.buf.push_str("null");
    }

    fn finish(mut self) -> String {
        self.buf.push('}');
        self.buf
    }
}

/// Appends `s` as a JSON string literal (RFC 8259 §7).
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Legal raw in JSON but line terminators in JavaScript: escaped so a line stays a line
            // for every consumer.
            '\u{0}'..='\u{1f}' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends a JSON number with at most three decimals and no trailing zeros, or `null` when `v`
/// is not finite (JSON has no NaN or infinity).
fn json_f64(out: &mut String, v: f64) {
    if !v.is_finite() {
        out.push_str("null");
        return;
    }
    let start = out.len();
    let _ = write!(out, "{v:.3}");
    // `{:.3}` always writes a '.', so trimming stops there and never eats integer digits.
    while out.ends_with('0') {
        out.pop();
    }
    if out.ends_with('.') {
        out.pop();
    }
    if &out[start..] == "-0" {
        out.replace_range(start.., "0");
    }
}

/// The reasons `watchd_stops_total` is labelled with, in the SPEC's order.
pub const STOP_REASONS: [&str; 5] = ["stall", "timeout", "cpu-soft", "cpu-hard", "rss"];

/// The figures of one probe, as the metrics textfile shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub cpu_cores: f64,
    pub cpu_seconds_total: f64,
    pub io_bytes_total: u64,
    pub rss_bytes: u64,
    pub processes: u32,
    pub seconds_since_progress: f64,
    /// (reason, count) for each of [`STOP_REASONS`].
    pub stops_total: [(&'static str, u64); 5],
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            cpu_cores: 0.0,
            cpu_seconds_total: 0.0,
            io_bytes_total: 0,
            rss_bytes: 0,
            processes: 0,
            seconds_since_progress: 0.0,
            stops_total: STOP_REASONS.map(|r| (r, 0)),
        }
    }
}

/// The metrics in the Prometheus text exposition format 0.0.4: `# HELP`, `# TYPE` and the
/// samples of each family; names ending `_total` are counters, the rest gauges.
pub fn render_metrics(m: &Metrics) -> String {
    let mut out = String::with_capacity(1536);
    let gauges_and_counters: [(&str, &str, Value); 6] = [
        (
            "watchd_cpu_cores",
            "CPU cores used by the command's process tree over the last probe interval.",
            Value::F64(m.cpu_cores),
        ),
        (
            "watchd_cpu_seconds_total",
            "CPU time used by the command's process tree, reaped processes included, in seconds.",
            Value::F64(m.cpu_seconds_total),
        ),
        (
            "watchd_io_bytes_total",
            "Bytes read and written by the command's process tree (rchar + wchar).",
            Value::U64(m.io_bytes_total),
        ),
        (
            "watchd_rss_bytes",
            "Resident memory of the command's process tree in bytes.",
            Value::U64(m.rss_bytes),
        ),
        (
            "watchd_processes",
            "Live processes in the command's process tree.",
            Value::U64(u64::from(m.processes)),
        ),
        (
            "watchd_seconds_since_progress",
            "Seconds since the command's process tree last showed evidence of life.",
            Value::F64(m.seconds_since_progress),
        ),
    ];
    for (name, help, value) in gauges_and_counters {
        family_header(&mut out, name, help);
        let _ = writeln!(out, "{name} {value}");
    }
    let name = "watchd_stops_total";
    family_header(&mut out, name, "Times watchd stopped the command, by trigger reason.");
    for (reason, count) in m.stops_total {
        out.push_str(name);
        out.push_str("{reason=\"");
        for c in reason.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        let _ = writeln!(out, "\"}} {count}");
    }
    out
}

fn family_header(out: &mut String, name: &str, help: &str) {
    let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A sample value as Prometheus spells it.
enum Value {
    F64(f64),
    U64(u64),
}

impl Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Value::U64(v) => write!(f, "{v}"),
            Value::F64(v) if v.is_nan() => f.write_str("NaN"),
            Value::F64(v) if v == f64::INFINITY => f.write_str("+Inf"),
            Value::F64(v) if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            // Rust's shortest round-trip form, never an exponent: Go's ParseFloat reads it.
            Value::F64(v) => write!(f, "{v}"),
        }
    }
}

/// Replaces the file at `path` with `text` atomically: a reader (node_exporter) sees the old
/// content or the new, never a partial file. The text goes to `.<name>.tmp.<pid>` in the same
/// directory, which is then renamed over `path`. One writer per path per process: the temp
/// name is per pid, which is all watchd (one writer, one thread) needs.
pub fn write_metrics(path: &Path, text: &str) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);

    // A leftover from an earlier watchd with our pid (or a symlink planted in a shared directory)
    // goes first, and the temp file is created exclusively: nothing is written through a link.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
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
    use serde_json::Value as J;
    use std::os::unix::ffi::OsStringExt;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// 2026-11-22T20:21:00.123Z
    fn ts() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_795_378_860_123)
    }

    /// Top-level keys of a JSON object in the order written (serde_json's map sorts them).
    fn top_keys(json: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut depth = 0;
        let mut want_key = false;
        let mut chars = json.chars();
        while let Some(c) = chars.next() {
            match c {
                '{' | '[' => {
                    depth += 1;
                    want_key = depth == 1;
                }
                '}' | ']' => depth -= 1,
                ',' if depth == 1 => want_key = true,
                '"' => {
                    let mut s = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => {
                                chars.next();
                            }
                            '"' => break,
                            c => s.push(c),
                        }
                    }
                    if depth == 1 && want_key {
                        keys.push(s);
                        want_key = false;
                    }
                }
                _ => {}
            }
        }
        keys
    }

    #[derive(Clone, Copy, Debug)]
    enum Kind {
        Str,
        Int,
        Num,
        StrArray,
        Null,
    }

    fn kind_ok(v: &J, k: Kind) -> bool {
        match k {
            Kind::Str => v.is_string(),
            Kind::Int => v.is_i64() || v.is_u64(),
            Kind::Num => v.is_number(),
            Kind::StrArray => v.as_array().is_some_and(|a| a.iter().all(J::is_string)),
            Kind::Null => v.is_null(),
        }
    }

    /// Parses `ev`, checks ts/event, the exact keys in order and their JSON types.
    fn check(ev: &Event, name: &str, fields: &[(&str, Kind)]) -> J {
        let text = event_json(ev, ts());
        assert!(!text.ends_with('\n'), "{text}");
        assert!(!text.bytes().any(|b| b < 0x20), "raw control byte: {text:?}");
        let v: J = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let mut want = vec!["ts".to_string(), "event".to_string()];
        want.extend(fields.iter().map(|(k, _)| k.to_string()));
        assert_eq!(top_keys(&text), want, "{text}");
        assert_eq!(v["ts"], "2026-11-22T20:21:00.123Z");
        assert_eq!(v["event"], name);
        for (k, kind) in fields {
            assert!(kind_ok(&v[k], *kind), "{k} is not {kind:?}: {text}");
        }
        v
    }

    #[test]
    fn start_round_trips() {
        let argv = [OsString::from("sh"), OsString::from("-c"), OsString::from("exit 3")];
        let ev = Event::Start { pid: 4242, argv: &argv };
        let v = check(&ev, "start", &[("pid", Kind::Int), ("argv", Kind::StrArray)]);
        assert_eq!(v["pid"], 4242);
        assert_eq!(v["argv"], serde_json::json!(["sh", "-c", "exit 3"]));
        let empty = Event::Start { pid: 1, argv: &[] };
        let v = check(&empty, "start", &[("pid", Kind::Int), ("argv", Kind::StrArray)]);
        assert_eq!(v["argv"], serde_json::json!([]));
    }

    #[test]
    fn sample_round_trips() {
        let fields = [
            ("cpu_cores", Kind::Num),
            ("cpu_seconds", Kind::Num),
            ("io_bytes", Kind::Int),
            ("rss_bytes", Kind::Int),
            ("processes", Kind::Int),
            ("since_progress_s", Kind::Num),
        ];
        let ev = Event::Sample {
            cpu_cores: Some(1.23456),
            cpu_seconds: 12.5,
            io_bytes: u64::MAX,
            rss_bytes: 2 << 30,
            processes: 3,
            since_progress_s: 30.0,
        };
        let v = check(&ev, "sample", &fields);
        assert_eq!(v["cpu_cores"].as_f64(), Some(1.235));
        assert_eq!(v["cpu_seconds"].as_f64(), Some(12.5));
        assert_eq!(v["io_bytes"].as_u64(), Some(u64::MAX));
        assert_eq!(v["rss_bytes"].as_u64(), Some(2 << 30));
        assert_eq!(v["processes"], 3);
        assert_eq!(v["since_progress_s"].as_f64(), Some(30.0));

        let before_two_probes = Event::Sample {
            cpu_cores: None,
            cpu_seconds: 0.0,
            io_bytes: 0,
            rss_bytes: 0,
            processes: 0,
            since_progress_s: 0.0,
        };
        let mut fields = fields;
        fields[0].1 = Kind::Null;
        check(&before_two_probes, "sample", &fields);
    }

    #[test]
    fn signal_trigger_kill_reap_round_trip() {
        let v = check(
            &Event::Signal { signal: "SIGUSR1", to: "group" },
            "signal",
            &[("signal", Kind::Str), ("to", Kind::Str)],
        );
        assert_eq!((&v["signal"], &v["to"]), (&J::from("SIGUSR1"), &J::from("group")));

        let detail = "no CPU or I/O progress for 30s (3 processes)";
        let v = check(
            &Event::Trigger { reason: "stall", detail },
            "trigger",
            &[("reason", Kind::Str), ("detail", Kind::Str)],
        );
        assert_eq!((&v["reason"], &v["detail"]), (&J::from("stall"), &J::from(detail)));

        let v = check(
            &Event::Kill { signal: "SIGKILL", processes: 4 },
            "kill",
            &[("signal", Kind::Str), ("processes", Kind::Int)],
        );
        assert_eq!((&v["signal"], &v["processes"]), (&J::from("SIGKILL"), &J::from(4)));

        let v = check(
            &Event::Reap { pid: 77, status: "killed by SIGTERM" },
            "reap",
            &[("pid", Kind::Int), ("status", Kind::Str)],
        );
        assert_eq!((&v["pid"], &v["status"]), (&J::from(77), &J::from("killed by SIGTERM")));
    }

    #[test]
    fn stop_writes_exactly_one_of_signal_and_cmd() {
        let by_signal = Event::Stop { signal: Some("SIGTERM"), cmd: None, grace_s: 10.0 };
        let v = check(&by_signal, "stop", &[("signal", Kind::Str), ("grace_s", Kind::Num)]);
        assert_eq!((&v["signal"], v["grace_s"].as_f64()), (&J::from("SIGTERM"), Some(10.0)));

        let by_cmd =
            Event::Stop { signal: None, cmd: Some("kill -INT $WATCHD_PID"), grace_s: 0.25 };
        let v = check(&by_cmd, "stop", &[("cmd", Kind::Str), ("grace_s", Kind::Num)]);
        assert_eq!(v["cmd"], "kill -INT $WATCHD_PID");
        assert_eq!(v["grace_s"].as_f64(), Some(0.25));

        // --stop-cmd replaces the signal, so it wins if a caller passes both.
        let both = Event::Stop { signal: Some("SIGTERM"), cmd: Some("true"), grace_s: 1.0 };
        check(&both, "stop", &[("cmd", Kind::Str), ("grace_s", Kind::Num)]);
        let neither = Event::Stop { signal: None, cmd: None, grace_s: 1.0 };
        check(&neither, "stop", &[("signal", Kind::Null), ("grace_s", Kind::Num)]);
    }

    #[test]
    fn exit_round_trips_with_and_without_optionals() {
        let fields = |code, signal, reason, diagnosis| {
            [
                ("code", code),
                ("signal", signal),
                ("reason", reason),
                ("duration_s", Kind::Num),
                ("diagnosis", diagnosis),
            ]
        };
        let exited = Event::Exit {
            code: Some(3),
            signal: None,
            reason: None,
            duration_s: 1.5,
            diagnosis: None,
        };
        let v = check(&exited, "exit", &fields(Kind::Int, Kind::Null, Kind::Null, Kind::Null));
        assert_eq!((&v["code"], v["duration_s"].as_f64()), (&J::from(3), Some(1.5)));

        let stopped = Event::Exit {
            code: None,
            signal: Some("SIGKILL"),
            reason: Some("stall"),
            duration_s: 41.0004,
            diagnosis: Some("the kernel's OOM killer: oom_kill rose by 1"),
        };
        let v = check(&stopped, "exit", &fields(Kind::Null, Kind::Str, Kind::Str, Kind::Str));
        assert_eq!(v["signal"], "SIGKILL");
        assert_eq!(v["reason"], "stall");
        assert_eq!(v["duration_s"].as_f64(), Some(41.0));
        assert_eq!(v["diagnosis"], "the kernel's OOM killer: oom_kill rose by 1");

        let negative = Event::Exit {
            code: Some(-1),
            signal: None,
            reason: None,
            duration_s: 0.0,
            diagnosis: None,
        };
        assert_eq!(
            check(&negative, "exit", &fields(Kind::Int, Kind::Null, Kind::Null, Kind::Null))["code"],
            -1
        );
    }

    #[test]
    fn ts_is_rfc3339_utc_with_milliseconds() {
        for t in [ts(), UNIX_EPOCH, SystemTime::now(), UNIX_EPOCH + Duration::from_nanos(1_999_999)]
        {
            let v: J =
                serde_json::from_str(&event_json(&Event::Reap { pid: 1, status: "x" }, t)).unwrap();
            let s = v["ts"].as_str().unwrap();
            let parsed = humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            // Milliseconds are truncated, never rounded up into the future.
            let diff = t.duration_since(parsed).unwrap();
            assert!(diff < Duration::from_millis(1), "{s}");
            let b = s.as_bytes();
            assert_eq!(b.len(), "2026-11-22T20:21:00.123Z".len(), "{s}");
            assert_eq!((b[10], b[19], b[23]), (b'T', b'.', b'Z'), "{s}");
            assert!(b[20..23].iter().all(u8::is_ascii_digit), "{s}");
        }
    }

    #[test]
    fn ts_out_of_humantime_range_is_clamped_not_a_panic() {
        let before = UNIX_EPOCH - Duration::from_secs(1);
        let after = UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        let ev = Event::Reap { pid: 1, status: "x" };
        let v: J = serde_json::from_str(&event_json(&ev, before)).unwrap();
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000Z");
        let v: J = serde_json::from_str(&event_json(&ev, after)).unwrap();
        assert_eq!(v["ts"], "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn strings_are_escaped_per_rfc_8259() {
        let nasty = "q\"b\\s/ n\n r\r t\t nul\0 bel\u{7} esc\u{1b} us\u{1f} del\u{7f} \
                     é 日本 🦀 ls\u{2028} ps\u{2029} c1\u{85}";
        let ev = Event::Trigger { reason: "stall", detail: nasty };
        let text = event_json(&ev, ts());
        for esc in [
            "\\\"", "\\\\", "\\n", "\\r", "\\t", "\\u0000", "\\u0007", "\\u001b", "\\u001f",
            "\\u2028", "\\u2029",
        ] {
            assert!(text.contains(esc), "{esc} missing in {text}");
        }
        assert!(text.contains("é 日本 🦀"), "{text}");
        let v: J = serde_json::from_str(&text).unwrap();
        assert_eq!(v["detail"], nasty);
    }

    #[test]
    fn non_utf8_argv_is_rendered_lossily() {
        let argv = [
            OsString::from_vec(b"a\xffb".to_vec()),
            OsString::from_vec(b"\xc3\x28\n\"".to_vec()),
            OsString::from("ok"),
        ];
        let text = event_json(&Event::Start { pid: 9, argv: &argv }, ts());
        let v: J = serde_json::from_str(&text).unwrap();
        assert_eq!(v["argv"], serde_json::json!(["a\u{fffd}b", "\u{fffd}(\n\"", "ok"]));
    }

    #[test]
    fn floats_have_at_most_three_decimals_and_never_nan() {
        let cases = [
            (2.0, "2"),
            (1.5, "1.5"),
            (1.23456, "1.235"),
            (0.1 + 0.2, "0.3"),
            (0.0001, "0"),
            (-0.0, "0"),
            (-0.0001, "0"),
            (-2.5, "-2.5"),
            (1e20, "100000000000000000000"),
            (f64::NAN, "null"),
            (f64::INFINITY, "null"),
            (f64::NEG_INFINITY, "null"),
        ];
        for (v, want) in cases {
            let mut s = String::new();
            json_f64(&mut s, v);
            assert_eq!(s, want, "{v}");
        }
        let ev = Event::Sample {
            cpu_cores: Some(f64::NAN),
            cpu_seconds: f64::INFINITY,
            io_bytes: 0,
            rss_bytes: 0,
            processes: 0,
            since_progress_s: 7.77777,
        };
        let v: J = serde_json::from_str(&event_json(&ev, ts())).unwrap();
        assert!(v["cpu_cores"].is_null() && v["cpu_seconds"].is_null());
        assert_eq!(v["since_progress_s"].as_f64(), Some(7.778));
    }

    fn sample_metrics() -> Metrics {
        let mut m = Metrics {
            cpu_cores: 0.98,
            cpu_seconds_total: 123.456789,
            io_bytes_total: 1 << 40,
            rss_bytes: 2_040_109_465,
            processes: 4,
            seconds_since_progress: 12.5,
            ..Metrics::default()
        };
        m.stops_total[0].1 = 2;
        m.stops_total[4].1 = 1;
        m
    }

    type Pairs = Vec<(String, String)>;

    /// (name, type) of every family and (series, value) of every sample, checking the
    /// HELP-TYPE-samples layout on the way.
    fn parse_exposition(text: &str) -> (Pairs, Pairs) {
        assert!(text.ends_with('\n'));
        let mut families = Vec::new();
        let mut samples = Vec::new();
        let mut lines = text.lines().peekable();
        while let Some(help) = lines.next() {
            let mut h = help.splitn(4, ' ');
            assert_eq!((h.next(), h.next()), (Some("#"), Some("HELP")), "{help}");
            let name = h.next().unwrap().to_string();
            assert!(!h.next().unwrap_or("").is_empty(), "empty help: {help}");
            let ty = lines.next().unwrap();
            let kind = ty
                .strip_prefix(&format!("# TYPE {name} "))
                .unwrap_or_else(|| panic!("no TYPE after HELP of {name}: {ty}"));
            families.push((name.clone(), kind.to_string()));
            while lines.peek().is_some_and(|l| !l.starts_with('#')) {
                let line = lines.next().unwrap();
                let (series, value) = line.rsplit_once(' ').unwrap();
                let base = series.split('{').next().unwrap();
                assert_eq!(base, name, "{line}");
                samples.push((series.to_string(), value.to_string()));
            }
        }
        (families, samples)
    }

    #[test]
    fn metrics_have_the_spec_names_help_and_types() {
        let (families, samples) = parse_exposition(&render_metrics(&sample_metrics()));
        let want = [
            ("watchd_cpu_cores", "gauge"),
            ("watchd_cpu_seconds_total", "counter"),
            ("watchd_io_bytes_total", "counter"),
            ("watchd_rss_bytes", "gauge"),
            ("watchd_processes", "gauge"),
            ("watchd_seconds_since_progress", "gauge"),
            ("watchd_stops_total", "counter"),
        ];
        let want: Vec<_> = want.iter().map(|(n, k)| (n.to_string(), k.to_string())).collect();
        assert_eq!(families, want);
        let want_samples = [
            ("watchd_cpu_cores", "0.98"),
            ("watchd_cpu_seconds_total", "123.456789"),
            ("watchd_io_bytes_total", "1099511627776"),
            ("watchd_rss_bytes", "2040109465"),
            ("watchd_processes", "4"),
            ("watchd_seconds_since_progress", "12.5"),
            ("watchd_stops_total{reason=\"stall\"}", "2"),
            ("watchd_stops_total{reason=\"timeout\"}", "0"),
            ("watchd_stops_total{reason=\"cpu-soft\"}", "0"),
            ("watchd_stops_total{reason=\"cpu-hard\"}", "0"),
            ("watchd_stops_total{reason=\"rss\"}", "1"),
        ];
        let want_samples: Vec<_> =
            want_samples.iter().map(|(s, v)| (s.to_string(), v.to_string())).collect();
        assert_eq!(samples, want_samples);
    }

    #[test]
    fn metrics_spell_non_finite_values_the_prometheus_way() {
        let m = Metrics {
            cpu_cores: f64::NAN,
            cpu_seconds_total: f64::INFINITY,
            seconds_since_progress: f64::NEG_INFINITY,
            ..Metrics::default()
        };
        let text = render_metrics(&m);
        assert!(text.contains("\nwatchd_cpu_cores NaN\n"), "{text}");
        assert!(text.contains("\nwatchd_cpu_seconds_total +Inf\n"), "{text}");
        assert!(text.contains("\nwatchd_seconds_since_progress -Inf\n"), "{text}");
        assert_eq!(Metrics::default().stops_total.map(|(r, _)| r), STOP_REASONS);
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("watchd-report-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn entries(&self) -> Vec<String> {
            let mut names: Vec<_> = fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn write_metrics_replaces_the_file_and_leaves_no_temp() {
        let dir = Scratch::new("replace");
        let path = dir.0.join("watchd.prom");
        write_metrics(&path, "first\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "first\n");
        let text = render_metrics(&sample_metrics());
        write_metrics(&path, &text).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
        assert_eq!(dir.entries(), ["watchd.prom"]);
    }

    #[test]
    fn write_metrics_is_never_observed_partial() {
        let dir = Scratch::new("atomic");
        let path = dir.0.join("m.prom");
        // Large enough that a non-atomic rewrite would be caught half-written.
        let a = "a".repeat(256 * 1024);
        let b = "b".repeat(128 * 1024);
        write_metrics(&path, &a).unwrap();
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut reads = 0;
                while !done.load(Ordering::Relaxed) || reads == 0 {
                    let got = fs::read_to_string(&path).unwrap();
                    assert!(got == a || got == b, "partial read of {} bytes", got.len());
                    reads += 1;
                }
            });
            for i in 0..200 {
                write_metrics(&path, if i % 2 == 0 { &b } else { &a }).unwrap();
            }
            done.store(true, Ordering::Relaxed);
            reader.join().unwrap();
        });
        assert_eq!(dir.entries(), ["m.prom"]);
    }

    #[test]
    fn write_metrics_into_a_missing_directory_fails() {
        let dir = Scratch::new("missing");
        let path = dir.0.join("no/such/dir/m.prom");
        assert!(write_metrics(&path, "x\n").is_err());
        assert!(write_metrics(Path::new("/"), "x\n").is_err());
        assert_eq!(dir.entries(), Vec::<String>::new());
    }

    #[test]
    fn write_metrics_does_not_write_through_a_planted_temp_symlink() {
        let dir = Scratch::new("symlink");
        let victim = dir.0.join("victim");
        fs::write(&victim, "precious").unwrap();
        let tmp = dir.0.join(format!(".m.prom.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_metrics(&dir.0.join("m.prom"), "new\n").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(fs::read_to_string(dir.0.join("m.prom")).unwrap(), "new\n");
        assert_eq!(dir.entries(), ["m.prom", "victim"]);
    }

    #[test]
    fn levels_decide_which_lines_are_shown() {
        let shown = |level, needs| Reporter::new(level, None, None).line(needs, "x").is_some();
        assert!(!shown(Level::Quiet, Level::Normal));
        assert!(!shown(Level::Quiet, Level::Verbose));
        assert!(shown(Level::Normal, Level::Normal));
        assert!(!shown(Level::Normal, Level::Verbose));
        assert!(shown(Level::Verbose, Level::Normal));
        assert!(shown(Level::Verbose, Level::Verbose));
    }

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
        r.event(&Event::Signal { signal: "SIGINT", to: "child" });
        r.event(&Event::Trigger { reason: "timeout", detail: "ran for 10s,\nthe --timeout" });
        // Reopening appends rather than truncating.
        let mut r2 = Reporter::new(Level::Quiet, Some(open_events(&path).unwrap()), None);
        r2.event(&Event::Kill { signal: "SIGKILL", processes: 2 });
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
        r.event(&Event::Reap { pid: 1, status: "exited 0" });
        assert!(r.events.is_none());
        r.event(&Event::Reap { pid: 2, status: "exited 0" });
    }

    #[test]
    fn reporter_metrics_writes_and_warns_once_on_failure() {
        let dir = Scratch::new("rmetrics");
        let good = dir.0.join("ok.prom");
        let mut r = Reporter::new(Level::Quiet, None, Some(good.clone()));
        r.metrics(&sample_metrics());
        assert_eq!(fs::read_to_string(&good).unwrap(), render_metrics(&sample_metrics()));
        assert!(!r.metrics_warned);

        let mut r = Reporter::new(Level::Quiet, None, Some(dir.0.join("gone/x.prom")));
        r.metrics(&Metrics::default());
        assert!(r.metrics_warned);
        r.metrics(&Metrics::default());
        assert!(r.metrics_warned);

        let mut none = Reporter::new(Level::Verbose, None, None);
        none.metrics(&Metrics::default());
        none.event(&Event::Reap { pid: 1, status: "exited 0" });
    }
}
