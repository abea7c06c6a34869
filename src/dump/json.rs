//! The `processes` array of the `dump` event: every process and thread with all fields.
//!
//! Strings and numbers are written by the events' own writer (`report::events`), so a dump
//! escapes exactly as every other event.

use std::fmt::Write as _;
use std::time::Duration;

use super::{Fd, Process, Snapshot, Socket, Syscall, Task};
use crate::cgroup::Pressure;
use crate::report::{json_f64, json_string};

/// Appends `[{process}, ...]` to `out`. Each process has pid, ppid, state, threads,
/// cpu_seconds, rss_bytes, idle_s, wchan, syscall, syscall_nr, fd, cmdline, comm, stack, psi
/// (the command's cgroup's pressure, `some avg10` ratios {cpu, io, memory}; null without a
/// cgroup), gpu_util (percent) and gpu_memory_bytes (null without
/// NVML, or where it could not tell) and tasks: its threads with the same fields (pid being the
/// thread id; ppid, threads and rss_bytes the process's, which is what a thread's own stat says;
/// cmdline null, being the process's; the GPU figures null, NVML knowing only processes).
pub fn write_event_json(snap: &Snapshot, out: &mut String) {
    out.push('[');
    for (i, p) in snap.processes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let main = p.main_task();
        let mut o = Object::open(out);
        o.number("pid", p.pid);
        o.number("ppid", p.ppid);
        o.string("state", Some(&char::from(p.state).to_string()));
        o.number("threads", p.threads);
        o.float("cpu_seconds", Some(p.cpu_seconds));
        o.number("rss_bytes", p.rss_bytes);
        o.float("idle_s", p.idle.map(|d| d.as_secs_f64()));
        wait_fields(&mut o, main);
        o.string("cmdline", p.cmdline.as_deref());
        o.string("comm", Some(&p.comm));
        stack_field(&mut o, main.and_then(|t| t.stack.as_deref()));
        psi_field(&mut o, snap.pressure.as_ref());
        gpu_fields(&mut o, p.gpu.as_ref());
        o.key("tasks");
        o.out.push('[');
        for (j, t) in p.tasks.iter().enumerate() {
            if j > 0 {
                o.out.push(',');
            }
            task(o.out, p, t, snap.pressure.as_ref());
        }
        o.out.push(']');
        o.close();
    }
    out.push(']');
}

fn task(out: &mut String, p: &Process, t: &Task, pressure: Option<&Pressure>) {
    let mut o = Object::open(out);
    o.number("pid", t.tid);
    o.number("ppid", p.ppid);
    o.string("state", Some(&char::from(t.state).to_string()));
    o.number("threads", p.threads);
    o.float("cpu_seconds", Some(t.cpu_seconds));
    o.number("rss_bytes", p.rss_bytes);
    o.float("idle_s", t.idle.map(|d: Duration| d.as_secs_f64()));
    wait_fields(&mut o, Some(t));
    o.string("cmdline", None);
    o.string("comm", Some(&t.comm));
    stack_field(&mut o, t.stack.as_deref());
    psi_field(&mut o, pressure);
    gpu_fields(&mut o, None);
    o.close();
}

fn wait_fields(o: &mut Object<'_>, t: Option<&Task>) {
    o.string("wchan", t.and_then(|t| t.wchan.as_deref()));
    let syscall = t.and_then(|t| t.syscall);
    o.string("syscall", syscall.as_ref().and_then(Syscall::name));
    match syscall.as_ref().and_then(Syscall::nr) {
        Some(nr) => o.number("syscall_nr", nr),
        None => o.null("syscall_nr"),
    }
    match t.and_then(|t| t.fd.as_ref()) {
        Some(fd) => {
            o.key("fd");
            fd_object(o.out, fd);
        }
        None => o.null("fd"),
    }
}

fn fd_object(out: &mut String, fd: &Fd) {
    let mut o = Object::open(out);
    o.number("fd", fd.fd);
    o.string("kind", Some(fd.kind_name()));
    o.string("target", Some(&fd.target()));
    match &fd.socket {
        Some(Socket::Inet { proto, local, peer, state }) => {
            o.string("proto", Some(proto));
            o.string("local", Some(&local.to_string()));
            o.string("peer", peer.map(|p| p.to_string()).as_deref());
            o.string("state", *state);
        }
        Some(Socket::Unix { path, listening }) => {
            o.string("proto", Some("unix"));
            o.string("local", path.as_deref());
            o.null("peer");
            o.string("state", listening.then_some("LISTEN"));
        }
        None => {}
    }
    o.close();
}

fn stack_field(o: &mut Object<'_>, stack: Option<&[String]>) {
    o.key("stack");
    let Some(frames) = stack else {
        o.out.push_str("null");
        return;
    };
    o.out.push('[');
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            o.out.push(',');
        }
        json_string(o.out, frame);
    }
    o.out.push(']');
}

fn psi_field(o: &mut Object<'_>, pressure: Option<&Pressure>) {
    let Some(p) = pressure else { return o.null("psi") };
    o.key("psi");
    let mut psi = Object::open(o.out);
    psi.float("cpu", p.cpu);
    psi.float("io", p.io);
    psi.float("memory", p.memory);
    psi.close();
}

fn gpu_fields(o: &mut Object<'_>, gpu: Option<&crate::gpu::ProcessGpu>) {
    match gpu.and_then(|g| g.sm_percent) {
        Some(percent) => o.number("gpu_util", percent),
        None => o.null("gpu_util"),
    }
    match gpu.and_then(|g| g.memory_bytes) {
        Some(bytes) => o.number("gpu_memory_bytes", bytes),
        None => o.null("gpu_memory_bytes"),
    }
}

/// An object being written into `out`.
struct Object<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut String) -> Object<'a> {
        out.push('{');
        Object { out, first: true }
    }

    fn key(&mut self, key: &str) {
        // Keys are fixed identifiers from this file; they need no escaping.
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
    }

    fn null(&mut self, key: &str) {
        self.key(key);
        self.out.push_str("null");
    }

    fn number(&mut self, key: &str, v: impl std::fmt::Display) {
        self.key(key);
        let _ = write!(self.out, "{v}");
    }

    fn float(&mut self, key: &str, v: Option<f64>) {
        self.key(key);
        match v {
            Some(v) => json_f64(self.out, v),
            None => self.out.push_str("null"),
        }
    }

    fn string(&mut self, key: &str, v: Option<&str>) {
        self.key(key);
        match v {
            Some(v) => json_string(self.out, v),
            None => self.out.push_str("null"),
        }
    }

    fn close(self) {
        self.out.push('}');
    }
}

#[cfg(test)]
mod tests {
    use super::super::FdKind;
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn sample() -> Snapshot {
        let t = |tid, fd| Task {
            tid,
            comm: "w\"ork\ner".into(),
            state: b'S',
            cpu_seconds: 0.25,
            idle: Some(Duration::from_millis(1500)),
            wchan: Some("wait_woken".into()),
            syscall: Some(Syscall::In {
                nr: 45,
                args: [3, 0, 0, 0, 0, 0],
                sp: 1 << 40,
                pc: 1 << 40,
            }),
            fd,
            stack: Some(vec!["wait_woken+0x1/0x2".into()]),
        };
        let socket = Fd {
            fd: 3,
            kind: FdKind::Socket(99),
            link: "socket:[99]".into(),
            socket: Some(Socket::Inet {
                proto: "tcp",
                local: "127.0.0.1:40000".parse().unwrap(),
                peer: Some("127.0.0.1:8080".parse().unwrap()),
                state: Some("ESTAB"),
            }),
        };
        let p = Process {
            pid: 10,
            ppid: 1,
            starttime: 5,
            state: b'S',
            comm: "py".into(),
            threads: 2,
            cpu_seconds: 0.5,
            rss_bytes: 4096,
            idle: None,
            cmdline: Some("python3 -c '\u{2028}'".into()),
            gpu: None,
            tasks: vec![t(10, Some(socket)), t(11, None)],
        };
        Snapshot { processes: vec![p], unread: 0, pressure: None }
    }

    #[test]
    fn the_cgroups_pressure_is_every_process_and_thread_s_psi() {
        let mut snap = sample();
        snap.pressure = Some(Pressure { cpu: Some(0.125), io: Some(0.0), memory: None });
        let mut out = String::new();
        write_event_json(&snap, &mut out);
        let v: Value = serde_json::from_str(&out).expect("valid JSON");
        let want = serde_json::json!({"cpu": 0.125, "io": 0, "memory": null});
        assert_eq!(v[0]["psi"], want);
        assert_eq!(v[0]["tasks"][1]["psi"], want);
    }

    #[test]
    fn every_field_the_spec_names_is_there() {
        let mut out = String::new();
        write_event_json(&sample(), &mut out);
        assert!(!out.contains('\n') && !out.contains('\u{2028}'));
        let v: Value = serde_json::from_str(&out).expect("valid JSON");
        let p = &v[0];
        for key in [
            "pid",
            "ppid",
            "state",
            "threads",
            "cpu_seconds",
            "rss_bytes",
            "idle_s",
            "wchan",
            "syscall",
            "fd",
            "cmdline",
            "stack",
            "psi",
            "gpu_util",
            "gpu_memory_bytes",
            "tasks",
        ] {
            assert!(p.get(key).is_some(), "process lacks {key}: {p}");
            if key != "tasks" {
                assert!(p["tasks"][0].get(key).is_some(), "task lacks {key}");
            }
        }
        assert_eq!(p["state"], "S");
        assert_eq!(p["cpu_seconds"], 0.5);
        assert_eq!(p["idle_s"], Value::Null);
        assert_eq!(p["cmdline"], "python3 -c '\u{2028}'");
        assert_eq!(p["fd"]["kind"], "socket");
        assert_eq!(p["fd"]["peer"], "127.0.0.1:8080");
        assert_eq!(p["fd"]["target"], "tcp 127.0.0.1:40000->127.0.0.1:8080");
        assert_eq!(p["stack"][0], "wait_woken+0x1/0x2");
        assert_eq!(p["psi"], Value::Null);
        assert_eq!(p["tasks"].as_array().unwrap().len(), 2);
        assert_eq!(p["tasks"][1]["pid"], 11);
        assert_eq!(p["tasks"][1]["fd"], Value::Null);
        assert_eq!(p["tasks"][1]["comm"], "w\"ork\ner");
        assert_eq!(p["tasks"][1]["idle_s"], 1.5);
        assert_eq!(p["syscall_nr"], 45);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(p["syscall"], "recvfrom");
    }

    #[test]
    fn gpu_figures_are_the_process_s_and_null_where_unknown() {
        use crate::gpu::ProcessGpu;
        let mut snap = sample();
        let figures = |snap: &Snapshot| {
            let mut out = String::new();
            write_event_json(snap, &mut out);
            let v: Value = serde_json::from_str(&out).expect("valid JSON");
            let task = &v[0]["tasks"][0];
            assert_eq!(
                (&task["gpu_util"], &task["gpu_memory_bytes"]),
                (&Value::Null, &Value::Null)
            );
            (v[0]["gpu_util"].clone(), v[0]["gpu_memory_bytes"].clone())
        };
        assert_eq!(figures(&snap), (Value::Null, Value::Null), "no NVML");
        snap.processes[0].gpu =
            Some(ProcessGpu { pid: 10, sm_percent: Some(87), memory_bytes: Some(3 << 30) });
        assert_eq!(figures(&snap), (Value::from(87), Value::from(3u64 << 30)));
        snap.processes[0].gpu =
            Some(ProcessGpu { pid: 10, sm_percent: Some(0), memory_bytes: None });
        assert_eq!(figures(&snap), (Value::from(0), Value::Null));
    }

    #[test]
    fn an_empty_snapshot_is_an_empty_array() {
        let mut out = String::new();
        write_event_json(&Snapshot::default(), &mut out);
        assert_eq!(out, "[]");
    }

    proptest! {
        #[test]
        fn any_text_stays_valid_json(comm in any::<String>(), cmdline in proptest::option::of(any::<String>()), wchan in any::<String>(), cpu in any::<f64>()) {
            let mut snap = sample();
            let p = &mut snap.processes[0];
            p.comm = comm.clone();
            p.cmdline = cmdline.clone();
            p.cpu_seconds = cpu;
            p.tasks[0].wchan = Some(wchan.clone());
            let mut out = String::new();
            write_event_json(&snap, &mut out);
            prop_assert!(!out.contains('\n'));
            let v: Value = serde_json::from_str(&out).expect("valid JSON");
            prop_assert_eq!(&v[0]["comm"], &Value::from(comm));
            prop_assert_eq!(&v[0]["cmdline"], &cmdline.map_or(Value::Null, Value::from));
            prop_assert_eq!(&v[0]["wchan"], &Value::from(wchan));
        }
    }
}
