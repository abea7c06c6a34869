//! JSON-lines events: one object per line with `ts` and `event`, written by hand (the README's
//! dependency table says why not serde).

use std::ffi::{OsStr, OsString};
use std::fmt::{Display, Write as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One JSON-lines event, in the vocabulary of the README's "Events and metrics".
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Start {
        pid: i32,
        argv: Vec<OsString>,
        /// Runs count from 1.
        run: u32,
        /// The command's cgroup directory, or None on the /proc path.
        cgroup: Option<String>,
    },
    Sample {
        /// None before the second probe: there is no window to measure yet.
        cpu_cores: Option<f64>,
        cpu_seconds: f64,
        io_bytes: u64,
        rss_bytes: Option<u64>,
        processes: u32,
        since_progress_s: f64,
        /// PSI `some avg10` ratios (0-1); None without a cgroup.
        psi_cpu: Option<f64>,
        psi_io: Option<f64>,
        psi_memory: Option<f64>,
        /// Percent; None without NVML.
        gpu_util: Option<f64>,
        gpu_memory_bytes: Option<u64>,
    },
    Signal {
        /// e.g. "SIGUSR1".
        signal: String,
        /// "child", "group" or "tree".
        to: &'static str,
    },
    Trigger {
        reason: &'static str,
        detail: String,
    },
    /// Exactly one of `signal`/`cmd` is written: `cmd` when set (the --stop-cmd replaces the
    /// signal), else `signal` (null if neither is set, so the key is still there).
    Stop {
        signal: Option<String>,
        cmd: Option<String>,
        grace_s: f64,
    },
    Kill {
        signal: String,
        processes: u32,
    },
    Reap {
        pid: i32,
        /// e.g. "exited 0", "killed by SIGTERM".
        status: String,
    },
    /// The dump of the tree at a trigger: `processes` is the JSON array, written elsewhere.
    Dump {
        processes: String,
    },
    Ready {
        after_s: f64,
        /// "health", "notify" or "start".
        by: &'static str,
    },
    Health {
        ok: bool,
        detail: String,
        duration_s: f64,
        /// Consecutive failures including this check, 0 after a pass.
        failures: u32,
    },
    Notify {
        pid: i32,
        fields: Vec<(String, String)>,
    },
    Restart {
        /// This restart's number, from 1.
        restart: u32,
        delay_s: f64,
        /// The trigger reason when watchd stopped the run, else "exit" or "signal".
        after: &'static str,
        code: Option<i32>,
        signal: Option<String>,
    },
    Exit {
        code: Option<i32>,
        signal: Option<String>,
        reason: Option<&'static str>,
        duration_s: f64,
        diagnosis: Option<String>,
        /// Restarts before the last run.
        restarts: u32,
        /// Lines and events dropped because they could not be written at once (filled in by
        /// the reporter, which is the one that knows).
        dropped: u64,
    },
}

impl Event {
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
            Event::Dump { .. } => "dump",
            Event::Ready { .. } => "ready",
            Event::Health { .. } => "health",
            Event::Notify { .. } => "notify",
            Event::Restart { .. } => "restart",
        }
    }
}

/// One JSON object, no trailing newline: `{"ts":"2026-11-22T20:21:00.123Z","event":"start",...}`.
///
/// `ts` is RFC 3339 UTC with milliseconds; fields follow in the README's order. `None` is written as
/// `null` so consumers see a fixed schema (except `stop`, see [`Event::Stop`]). Floats have at most
/// three decimals; NaN and infinities are `null`.
pub fn event_json(ev: &Event, ts: SystemTime) -> String {
    let mut o = JsonObject::new(ts, ev.name());
    match ev {
        Event::Start { pid, argv, run, cgroup } => {
            o.int("pid", *pid);
            o.os_str_array("argv", argv);
            o.int("run", *run);
            o.opt_str("cgroup", cgroup.as_deref());
        }
        Event::Sample {
            cpu_cores,
            cpu_seconds,
            io_bytes,
            rss_bytes,
            processes,
            since_progress_s,
            psi_cpu,
            psi_io,
            psi_memory,
            gpu_util,
            gpu_memory_bytes,
        } => {
            o.opt_float("cpu_cores", *cpu_cores);
            o.float("cpu_seconds", *cpu_seconds);
            o.int("io_bytes", *io_bytes);
            match rss_bytes {
                Some(rss) => o.int("rss_bytes", *rss),
                None => o.null("rss_bytes"),
            }
            o.int("processes", *processes);
            o.float("since_progress_s", *since_progress_s);
            o.opt_float("psi_cpu", *psi_cpu);
            o.opt_float("psi_io", *psi_io);
            o.opt_float("psi_memory", *psi_memory);
            o.opt_float("gpu_util", *gpu_util);
            match gpu_memory_bytes {
                Some(n) => o.int("gpu_memory_bytes", *n),
                None => o.null("gpu_memory_bytes"),
            }
        }
        Event::Dump { processes } => {
            o.key("processes");
            o.buf.push_str(processes);
        }
        Event::Ready { after_s, by } => {
            o.float("after_s", *after_s);
            o.str("by", by);
        }
        Event::Health { ok, detail, duration_s, failures } => {
            o.key("ok");
            o.buf.push_str(if *ok { "true" } else { "false" });
            o.str("detail", detail);
            o.float("duration_s", *duration_s);
            o.int("failures", *failures);
        }
        Event::Notify { pid, fields } => {
            o.int("pid", *pid);
            o.key("fields");
            o.buf.push('{');
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    o.buf.push(',');
                }
                json_string(&mut o.buf, k);
                o.buf.push(':');
                json_string(&mut o.buf, v);
            }
            o.buf.push('}');
        }
        Event::Restart { restart, delay_s, after, code, signal } => {
            o.int("restart", *restart);
            o.float("delay_s", *delay_s);
            o.str("after", after);
            o.opt_int("code", *code);
            o.opt_str("signal", signal.as_deref());
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
                None => o.opt_str("signal", signal.as_deref()),
            }
            o.float("grace_s", *grace_s);
        }
        Event::Kill { signal, processes } => {
            o.str("signal", signal);
            o.int("processes", *processes);
        }
        Event::Reap { pid, status } => {
            o.int("pid", *pid);
            o.str("status", status);
        }
        Event::Exit { code, signal, reason, duration_s, diagnosis, restarts, dropped } => {
            o.opt_int("code", *code);
            o.opt_str("signal", signal.as_deref());
            o.opt_str("reason", *reason);
            o.float("duration_s", *duration_s);
            o.opt_str("diagnosis", diagnosis.as_deref());
            o.int("restarts", *restarts);
            o.int("dropped", *dropped);
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
pub(crate) fn json_string(out: &mut String, s: &str) {
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
pub(crate) fn json_f64(out: &mut String, v: f64) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as J;
    use std::os::unix::ffi::OsStringExt;

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
        let ev = Event::Start { pid: 4242, argv: argv.to_vec(), run: 1, cgroup: None };
        let fields = |cgroup| {
            [("pid", Kind::Int), ("argv", Kind::StrArray), ("run", Kind::Int), ("cgroup", cgroup)]
        };
        let v = check(&ev, "start", &fields(Kind::Null));
        assert_eq!(v["pid"], 4242);
        assert_eq!(v["argv"], serde_json::json!(["sh", "-c", "exit 3"]));
        assert_eq!(v["run"], 1);
        let cgroup = Some("/sys/fs/cgroup/x".into());
        let empty = Event::Start { pid: 1, argv: Vec::new(), run: 3, cgroup };
        let v = check(&empty, "start", &fields(Kind::Str));
        assert_eq!(v["argv"], serde_json::json!([]));
        assert_eq!((&v["run"], &v["cgroup"]), (&J::from(3), &J::from("/sys/fs/cgroup/x")));
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
            ("psi_cpu", Kind::Null),
            ("psi_io", Kind::Null),
            ("psi_memory", Kind::Null),
            ("gpu_util", Kind::Null),
            ("gpu_memory_bytes", Kind::Null),
        ];
        let ev = Event::Sample {
            cpu_cores: Some(1.23456),
            cpu_seconds: 12.5,
            io_bytes: u64::MAX,
            rss_bytes: Some(2 << 30),
            processes: 3,
            since_progress_s: 30.0,
            psi_cpu: None,
            psi_io: None,
            psi_memory: None,
            gpu_util: None,
            gpu_memory_bytes: None,
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
            rss_bytes: Some(0),
            processes: 0,
            since_progress_s: 0.0,
            psi_cpu: None,
            psi_io: None,
            psi_memory: None,
            gpu_util: None,
            gpu_memory_bytes: None,
        };
        let mut fields = fields;
        fields[0].1 = Kind::Null;
        check(&before_two_probes, "sample", &fields);
    }

    #[test]
    fn signal_trigger_kill_reap_round_trip() {
        let v = check(
            &Event::Signal { signal: "SIGUSR1".into(), to: "group" },
            "signal",
            &[("signal", Kind::Str), ("to", Kind::Str)],
        );
        assert_eq!((&v["signal"], &v["to"]), (&J::from("SIGUSR1"), &J::from("group")));

        let detail = "no CPU or I/O progress for 30s (3 processes)";
        let v = check(
            &Event::Trigger { reason: "stall", detail: detail.into() },
            "trigger",
            &[("reason", Kind::Str), ("detail", Kind::Str)],
        );
        assert_eq!((&v["reason"], &v["detail"]), (&J::from("stall"), &J::from(detail)));

        let v = check(
            &Event::Kill { signal: "SIGKILL".into(), processes: 4 },
            "kill",
            &[("signal", Kind::Str), ("processes", Kind::Int)],
        );
        assert_eq!((&v["signal"], &v["processes"]), (&J::from("SIGKILL"), &J::from(4)));

        let v = check(
            &Event::Reap { pid: 77, status: "killed by SIGTERM".into() },
            "reap",
            &[("pid", Kind::Int), ("status", Kind::Str)],
        );
        assert_eq!((&v["pid"], &v["status"]), (&J::from(77), &J::from("killed by SIGTERM")));
    }

    #[test]
    fn pressure_and_gpu_figures_round_trip() {
        let ev = Event::Sample {
            cpu_cores: None,
            cpu_seconds: 0.0,
            io_bytes: 0,
            rss_bytes: Some(0),
            processes: 1,
            since_progress_s: 0.0,
            psi_cpu: Some(0.125),
            psi_io: Some(0.0),
            psi_memory: None,
            gpu_util: Some(87.0),
            gpu_memory_bytes: Some(1 << 30),
        };
        let v: J = serde_json::from_str(&event_json(&ev, ts())).unwrap();
        assert_eq!(v["psi_cpu"].as_f64(), Some(0.125));
        assert_eq!(v["psi_io"].as_f64(), Some(0.0));
        assert!(v["psi_memory"].is_null());
        assert_eq!(v["gpu_util"].as_f64(), Some(87.0));
        assert_eq!(v["gpu_memory_bytes"].as_u64(), Some(1 << 30));
    }

    #[test]
    fn readiness_health_notify_restart_and_dump_round_trip() {
        let v = check(
            &Event::Ready { after_s: 2.125, by: "health" },
            "ready",
            &[("after_s", Kind::Num), ("by", Kind::Str)],
        );
        assert_eq!((v["after_s"].as_f64(), &v["by"]), (Some(2.125), &J::from("health")));
        let health = Event::Health {
            ok: false,
            detail: "HTTP 503 from http://127.0.0.1:8080/health".into(),
            duration_s: 0.004,
            failures: 2,
        };
        let v: J = serde_json::from_str(&event_json(&health, ts())).unwrap();
        assert_eq!(
            top_keys(&event_json(&health, ts()))[2..],
            ["ok", "detail", "duration_s", "failures"]
        );
        assert_eq!((&v["ok"], &v["failures"]), (&J::from(false), &J::from(2)));
        let fields =
            vec![("READY".into(), "1".into()), ("STATUS".into(), "a \"quoted\" one".into())];
        let v: J =
            serde_json::from_str(&event_json(&Event::Notify { pid: 42, fields }, ts())).unwrap();
        assert_eq!(v["fields"], serde_json::json!({"READY": "1", "STATUS": "a \"quoted\" one"}));
        let restart = Event::Restart {
            restart: 3,
            delay_s: 0.4,
            after: "stall",
            code: None,
            signal: Some("SIGTERM".into()),
        };
        let v = check(
            &restart,
            "restart",
            &[
                ("restart", Kind::Int),
                ("delay_s", Kind::Num),
                ("after", Kind::Str),
                ("code", Kind::Null),
                ("signal", Kind::Str),
            ],
        );
        assert_eq!((&v["restart"], &v["after"]), (&J::from(3), &J::from("stall")));
        let dump = Event::Dump { processes: r#"[{"pid":7,"tasks":[]}]"#.into() };
        let v: J = serde_json::from_str(&event_json(&dump, ts())).unwrap();
        assert_eq!(v["processes"][0]["pid"], 7);
    }

    #[test]
    fn stop_writes_exactly_one_of_signal_and_cmd() {
        let by_signal = Event::Stop { signal: Some("SIGTERM".into()), cmd: None, grace_s: 10.0 };
        let v = check(&by_signal, "stop", &[("signal", Kind::Str), ("grace_s", Kind::Num)]);
        assert_eq!((&v["signal"], v["grace_s"].as_f64()), (&J::from("SIGTERM"), Some(10.0)));

        let by_cmd =
            Event::Stop { signal: None, cmd: Some("kill -INT $WATCHD_PID".into()), grace_s: 0.25 };
        let v = check(&by_cmd, "stop", &[("cmd", Kind::Str), ("grace_s", Kind::Num)]);
        assert_eq!(v["cmd"], "kill -INT $WATCHD_PID");
        assert_eq!(v["grace_s"].as_f64(), Some(0.25));

        // --stop-cmd replaces the signal, so it wins if a caller passes both.
        let both =
            Event::Stop { signal: Some("SIGTERM".into()), cmd: Some("true".into()), grace_s: 1.0 };
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
                ("restarts", Kind::Int),
                ("dropped", Kind::Int),
            ]
        };
        let exited = Event::Exit {
            code: Some(3),
            signal: None,
            reason: None,
            duration_s: 1.5,
            diagnosis: None,
            restarts: 0,
            dropped: 0,
        };
        let v = check(&exited, "exit", &fields(Kind::Int, Kind::Null, Kind::Null, Kind::Null));
        assert_eq!((&v["code"], v["duration_s"].as_f64()), (&J::from(3), Some(1.5)));

        let stopped = Event::Exit {
            code: None,
            signal: Some("SIGKILL".into()),
            reason: Some("stall"),
            duration_s: 41.0004,
            diagnosis: Some("the kernel's OOM killer: oom_kill rose by 1".into()),
            restarts: 2,
            dropped: 7,
        };
        let v = check(&stopped, "exit", &fields(Kind::Null, Kind::Str, Kind::Str, Kind::Str));
        assert_eq!(v["signal"], "SIGKILL");
        assert_eq!(v["reason"], "stall");
        assert_eq!(v["duration_s"].as_f64(), Some(41.0));
        assert_eq!(v["diagnosis"], "the kernel's OOM killer: oom_kill rose by 1");
        assert_eq!((&v["restarts"], &v["dropped"]), (&J::from(2), &J::from(7)));

        let negative = Event::Exit {
            code: Some(-1),
            signal: None,
            reason: None,
            duration_s: 0.0,
            diagnosis: None,
            restarts: 0,
            dropped: 0,
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
                serde_json::from_str(&event_json(&Event::Reap { pid: 1, status: "x".into() }, t))
                    .unwrap();
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
        let ev = Event::Reap { pid: 1, status: "x".into() };
        let v: J = serde_json::from_str(&event_json(&ev, before)).unwrap();
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000Z");
        let v: J = serde_json::from_str(&event_json(&ev, after)).unwrap();
        assert_eq!(v["ts"], "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn strings_are_escaped_per_rfc_8259() {
        let nasty = "q\"b\\s/ n\n r\r t\t nul\0 bel\u{7} esc\u{1b} us\u{1f} del\u{7f} \
                     é 日本 🦀 ls\u{2028} ps\u{2029} c1\u{85}";
        let ev = Event::Trigger { reason: "stall", detail: nasty.into() };
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
        let text =
            event_json(&Event::Start { pid: 9, argv: argv.to_vec(), run: 1, cgroup: None }, ts());
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
            rss_bytes: Some(0),
            processes: 0,
            since_progress_s: 7.77777,
            psi_cpu: None,
            psi_io: None,
            psi_memory: None,
            gpu_util: None,
            gpu_memory_bytes: None,
        };
        let v: J = serde_json::from_str(&event_json(&ev, ts())).unwrap();
        assert!(v["cpu_cores"].is_null() && v["cpu_seconds"].is_null());
        assert_eq!(v["since_progress_s"].as_f64(), Some(7.778));
    }
}
