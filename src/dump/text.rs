//! The stderr picture of a snapshot: an indented tree, one line per process, threads that wait
//! on the same thing folded into one line, cut to the processes that matter most.
//!
//! ```text
//! 26442 S 0.00s 1.5MiB idle 2.2s  sigsuspend.isra.0 rt_sigsuspend  sh -c ./run-tests.sh
//!   26444 S 0.00s 1.6MiB idle 2.0s  hrtimer_nanosleep clock_nanosleep  sleep 1000
//!   26447 S 0.00s 1.0MiB idle 2.1s  pipe_read read(0<pipe:[88123]>)  cat
//!   26448 S 0.06s 14.0MiB idle 2.0s  wait_woken recvfrom(3<tcp 127.0.0.1:56802->127.0.0.1:37449>)  python3 client.py
//!   26449 S 0.06s 13.2MiB idle 1.9s  3 threads  python3 deadlock.py
//!     · 3 threads S 0.06s idle 1.9s  futex_do_wait futex  (python3)
//! … and 12 more
//! ```
//!
//! A process that used a GPU in the last probe window, or holds GPU memory, has its figures
//! after its idle time: `26450 S 0.02s 1.2GiB idle 48s gpu 97% 3.1GiB  ...`.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use super::{Process, Snapshot, Syscall, Task};

/// A line longer than this has its command line cut (with `…`) to fit.
const WIDTH: usize = 160;
/// The command line keeps at least this much, however long the rest of the line.
const MIN_CMDLINE: usize = 24;

/// The lines of the stderr picture, without the `watchd: ` prefix the reporter adds: at most
/// `max` processes (the main child, processes in D state, those that used CPU most recently,
/// then the rest by pid), each under its nearest listed ancestor, then `… and N more`.
pub fn render_text(snap: &Snapshot, main_pid: i32, max: usize) -> Vec<String> {
    let chosen = choose(&snap.processes, main_pid, max);
    let by_pid: HashMap<i32, &Process> = snap.processes.iter().map(|p| (p.pid, p)).collect();
    let shown: HashSet<i32> = chosen.iter().map(|p| p.pid).collect();
    // Each chosen process hangs under its nearest chosen ancestor; the walk up stops at a
    // process outside the snapshot, and after as many steps as there are processes, so a
    // ppid loop stitched together by racing reads cannot trap it.
    let parent_of = |p: &Process| -> Option<i32> {
        let mut ppid = p.ppid;
        for _ in 0..by_pid.len() {
            if shown.contains(&ppid) && ppid != p.pid {
                return Some(ppid);
            }
            ppid = by_pid.get(&ppid)?.ppid;
        }
        None
    };
    let mut children: HashMap<Option<i32>, Vec<&Process>> = HashMap::new();
    for p in &chosen {
        children.entry(parent_of(p)).or_default().push(p);
    }
    for list in children.values_mut() {
        list.sort_by_key(|p| (p.pid != main_pid, p.pid));
    }
    let mut lines = Vec::new();
    // Depth-first, iteratively: (process, depth), pushed in reverse so the first child pops
    // first. A process is emitted once even if a parent cycle lists it twice.
    let mut done = HashSet::new();
    let mut stack: Vec<(&Process, usize)> =
        children.get(&None).map_or(Vec::new(), |r| r.iter().rev().map(|&p| (p, 0)).collect());
    loop {
        let Some((p, depth)) = stack.pop() else {
            // Processes on a parent loop have no root: each one left starts a tree of its own.
            match chosen.iter().find(|p| !done.contains(&p.pid)) {
                Some(p) => {
                    stack.push((p, 0));
                    continue;
                }
                None => break,
            }
        };
        if !done.insert(p.pid) {
            continue;
        }
        process_lines(p, depth, &mut lines);
        if let Some(kids) = children.get(&Some(p.pid)) {
            stack.extend(kids.iter().rev().map(|&k| (k, depth + 1)));
        }
    }
    let more = snap.processes.len() - chosen.len();
    if more > 0 {
        lines.push(format!("… and {more} more"));
    }
    if snap.unread > 0 {
        lines.push(format!("… and {} not read in time", snap.unread));
    }
    if let Some(p) = &snap.pressure {
        let ratio = |r: Option<f64>| r.map_or("?".to_string(), |r| format!("{:.0}%", r * 100.0));
        lines.push(format!(
            "pressure of the cgroup (some avg10): cpu {}, io {}, memory {}",
            ratio(p.cpu),
            ratio(p.io),
            ratio(p.memory)
        ));
    }
    lines
}

/// The `max` processes to show, in order of interest.
fn choose(processes: &[Process], main_pid: i32, max: usize) -> Vec<&Process> {
    let mut order: Vec<&Process> = processes.iter().collect();
    order.sort_by_key(|p| {
        (p.pid != main_pid, p.state != b'D', p.idle.unwrap_or(Duration::MAX), p.pid)
    });
    order.truncate(max);
    order
}

fn process_lines(p: &Process, depth: usize, lines: &mut Vec<String>) {
    let indent = "  ".repeat(depth);
    let mut line = format!(
        "{indent}{} {} {} {} idle {}{}  ",
        p.pid,
        char::from(p.state),
        seconds(p.cpu_seconds),
        bytes(p.rss_bytes),
        idle(p.idle),
        gpu(p.gpu)
    );
    let single = p.tasks.len() == 1 && p.main_task().is_some();
    if single {
        line.push_str(&wait(&p.tasks[0]));
    } else {
        let _ = write!(line, "{} threads", p.threads.max(p.tasks.len() as u64));
    }
    line.push_str("  ");
    let command = match p.cmdline.as_deref() {
        Some("") | None if p.state == b'Z' => format!("[{}] <defunct>", p.comm),
        Some("") | None => format!("[{}]", p.comm),
        Some(cmdline) => cmdline.to_owned(),
    };
    let room = WIDTH.saturating_sub(line.chars().count()).max(MIN_CMDLINE);
    line.push_str(&cut(&printable(&command), room));
    lines.push(line);
    if !single {
        for group in fold(&p.tasks) {
            lines.push(format!("{indent}  · {}", group_line(&group)));
        }
    }
}

/// Threads with the same state, wchan, call and descriptor target, in order of first tid.
fn fold(tasks: &[Task]) -> Vec<Vec<&Task>> {
    let mut groups: Vec<(String, Vec<&Task>)> = Vec::new();
    for t in tasks {
        let key = format!("{} {}", char::from(t.state), wait(t));
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(t),
            None => groups.push((key, vec![t])),
        }
    }
    groups.into_iter().map(|(_, members)| members).collect()
}

fn group_line(group: &[&Task]) -> String {
    let first = group[0];
    let cpu: f64 = group.iter().map(|t| t.cpu_seconds).sum();
    let least_idle = group.iter().filter_map(|t| t.idle).min();
    let head = match group.len() {
        1 => format!("thread {}", first.tid),
        n => format!("{n} threads"),
    };
    let mut names: Vec<&str> = Vec::new();
    for t in group {
        if !names.contains(&t.comm.as_str()) {
            names.push(&t.comm);
        }
    }
    let names = cut(&printable(&names.join(",")), 40);
    format!(
        "{head} {} {} idle {}  {}  ({names})",
        char::from(first.state),
        seconds(cpu),
        idle(least_idle),
        wait(first)
    )
}

/// What a thread waits in: `wchan call(fd<target>)`, `running`, or `-` when nothing is known.
fn wait(t: &Task) -> String {
    let call = match t.syscall {
        None => Some("?".to_owned()),
        Some(Syscall::Running) => Some("running".to_owned()),
        Some(Syscall::Outside { .. }) => None,
        Some(s @ Syscall::In { nr, .. }) => {
            let name = s.name().map_or_else(|| format!("syscall_{nr}"), str::to_owned);
            Some(match &t.fd {
                Some(fd) => format!("{name}({}<{}>)", fd.fd, printable(&fd.target())),
                None => name,
            })
        }
    };
    match (t.wchan.as_deref(), call) {
        (Some(w), Some(c)) => format!("{w} {c}"),
        (Some(w), None) => w.to_owned(),
        (None, Some(c)) => c,
        (None, None) => "-".to_owned(),
    }
}

/// Control characters (a newline in an argument or a path) as `?`, so a line stays one line.
fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// At most `max` characters, the last one `…` when cut.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn seconds(s: f64) -> String {
    if s < 100.0 { format!("{s:.2}s") } else { format!("{s:.0}s") }
}

fn bytes(b: u64) -> String {
    const KIB: f64 = 1024.0;
    let f = b as f64;
    if b < 1024 {
        format!("{b}B")
    } else if f < KIB * KIB {
        format!("{:.0}KiB", f / KIB)
    } else if f < KIB * KIB * KIB {
        format!("{:.1}MiB", f / (KIB * KIB))
    } else {
        format!("{:.1}GiB", f / (KIB * KIB * KIB))
    }
}

/// ` gpu 97% 3.1GiB` for a process that used a GPU or holds GPU memory (`?` for what NVML could
/// not tell), else nothing: most processes of a tree never touch one.
fn gpu(figures: Option<crate::gpu::ProcessGpu>) -> String {
    let Some(g) = figures else { return String::new() };
    let (util, memory) = (g.sm_percent.unwrap_or(0), g.memory_bytes.unwrap_or(0));
    if util == 0 && memory == 0 {
        return String::new();
    }
    let util = g.sm_percent.map_or_else(|| "?".to_owned(), |u| format!("{u}%"));
    match g.memory_bytes {
        Some(b) => format!(" gpu {util} {}", bytes(b)),
        None => format!(" gpu {util}"),
    }
}

fn idle(d: Option<Duration>) -> String {
    let Some(d) = d else { return "?".to_owned() };
    let s = d.as_secs_f64();
    let whole = d.as_secs();
    if s < 10.0 {
        format!("{s:.1}s")
    } else if whole < 100 {
        format!("{whole}s")
    } else if whole < 100 * 60 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{}h{:02}m", whole / 3600, whole / 60 % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Fd, FdKind, Socket};
    use super::*;

    fn task(tid: i32, state: u8, wchan: Option<&str>, syscall: Option<Syscall>) -> Task {
        Task {
            tid,
            comm: "t".into(),
            state,
            cpu_seconds: 0.0,
            idle: Some(Duration::from_secs(5)),
            wchan: wchan.map(str::to_owned),
            syscall,
            fd: None,
            stack: None,
        }
    }

    fn proc(pid: i32, ppid: i32, tasks: Vec<Task>) -> Process {
        Process {
            pid,
            ppid,
            starttime: 1,
            state: tasks.first().map_or(b'S', |t| t.state),
            comm: "c".into(),
            threads: tasks.len() as u64,
            cpu_seconds: 0.5,
            rss_bytes: 3 << 20,
            idle: Some(Duration::from_secs(41)),
            cmdline: Some(format!("cmd {pid}")),
            gpu: None,
            tasks,
        }
    }

    const SLEEP: Syscall =
        Syscall::In { nr: 230, args: [0; 6], sp: 0x7ffd_0000_0000, pc: 0x7f00_0000_0000 };

    fn sleeper(pid: i32, ppid: i32) -> Process {
        proc(pid, ppid, vec![task(pid, b'S', Some("hrtimer_nanosleep"), Some(SLEEP))])
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn a_process_line() {
        let mut cat = proc(10, 1, vec![task(10, b'S', Some("pipe_read"), None)]);
        cat.tasks[0].syscall = Some(Syscall::In { nr: 0, args: [0; 6], sp: 1 << 40, pc: 1 << 40 });
        cat.tasks[0].fd =
            Some(Fd { fd: 0, kind: FdKind::Pipe, link: "pipe:[5678]".into(), socket: None });
        let snap = Snapshot { processes: vec![cat], unread: 0, pressure: None };
        assert_eq!(
            render_text(&snap, 10, 30),
            ["10 S 0.50s 3.0MiB idle 41s  pipe_read read(0<pipe:[5678]>)  cmd 10"]
        );
    }

    #[test]
    fn the_cgroups_pressure_closes_the_picture() {
        let pressure = crate::cgroup::Pressure { cpu: Some(0.426), io: Some(0.0), memory: None };
        let snap =
            Snapshot { processes: vec![sleeper(10, 1)], unread: 0, pressure: Some(pressure) };
        let lines = render_text(&snap, 10, 30);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1], "pressure of the cgroup (some avg10): cpu 43%, io 0%, memory ?");
    }

    #[test]
    fn gpu_figures_show_only_for_a_process_that_uses_a_gpu() {
        use crate::gpu::ProcessGpu;
        let with = |sm_percent, memory_bytes| {
            let mut p = sleeper(10, 1);
            p.gpu = Some(ProcessGpu { pid: 10, sm_percent, memory_bytes });
            render_text(&Snapshot { processes: vec![p], unread: 0, pressure: None }, 10, 30)
                .remove(0)
        };
        assert!(with(Some(97), Some(3 << 30)).contains(" idle 41s gpu 97% 3.0GiB  "));
        assert!(with(Some(0), Some(1 << 20)).contains(" idle 41s gpu 0% 1.0MiB  "));
        assert!(with(None, Some(1 << 20)).contains(" idle 41s gpu ? 1.0MiB  "));
        assert!(with(Some(5), None).contains(" idle 41s gpu 5%  "));
        assert!(with(Some(0), Some(0)).contains(" idle 41s  "), "no use, no marker");
        let none = render_text(
            &Snapshot { processes: vec![sleeper(10, 1)], unread: 0, pressure: None },
            10,
            30,
        );
        assert!(!none[0].contains("gpu"), "{none:?}");
    }

    #[test]
    fn tree_indentation_follows_ppid_and_skips_hidden_ancestors() {
        // 1 -> 2 -> 3 -> 4; 3 is cut, so 4 hangs under 2.
        let mut procs = vec![sleeper(1, 0), sleeper(2, 1), sleeper(3, 2), sleeper(4, 3)];
        procs[2].idle = None; // least interesting: cut first
        let lines = render_text(&Snapshot { processes: procs, unread: 0, pressure: None }, 1, 3);
        let heads: Vec<&str> = lines.iter().map(|l| l.split(" S ").next().unwrap()).collect();
        assert_eq!(heads, ["1", "  2", "    4", "… and 1 more"]);
    }

    #[test]
    fn choice_is_main_then_d_then_recent_then_pid() {
        let mut procs: Vec<Process> = (1..=6).map(|pid| sleeper(pid, 0)).collect();
        procs[4].state = b'D'; // pid 5
        procs[2].idle = Some(Duration::from_millis(10)); // pid 3
        procs[3].idle = None; // pid 4
        let chosen: Vec<i32> = choose(&procs, 6, 4).iter().map(|p| p.pid).collect();
        assert_eq!(chosen, [6, 5, 3, 1]);
        let all: Vec<i32> = choose(&procs, 6, 10).iter().map(|p| p.pid).collect();
        assert_eq!(all, [6, 5, 3, 1, 2, 4]);
    }

    #[test]
    fn threads_fold_by_wait() {
        let futex = Syscall::In { nr: 202, args: [0; 6], sp: 1 << 40, pc: 1 << 40 };
        let tasks = vec![
            task(7, b'S', Some("futex_wait_queue"), Some(futex)),
            task(8, b'S', Some("futex_wait_queue"), Some(futex)),
            task(9, b'R', None, Some(Syscall::Running)),
            task(11, b'S', Some("futex_wait_queue"), Some(futex)),
        ];
        let lines = render_text(
            &Snapshot { processes: vec![proc(7, 1, tasks)], unread: 0, pressure: None },
            7,
            30,
        );
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[0].contains(" 4 threads  cmd 7"), "{}", lines[0]);
        assert!(lines[1].starts_with("  · 3 threads S "), "{}", lines[1]);
        assert!(lines[1].contains("futex_wait_queue"), "{}", lines[1]);
        assert!(lines[2].starts_with("  · thread 9 R "), "{}", lines[2]);
        assert!(lines[2].contains("  running  "), "{}", lines[2]);
    }

    #[test]
    fn zombies_unknowns_and_long_command_lines() {
        let mut z = proc(5, 1, vec![task(5, b'Z', None, Some(Syscall::Outside { sp: 0, pc: 0 }))]);
        z.cmdline = Some(String::new());
        z.comm = "true".into();
        z.idle = None;
        z.tasks[0].idle = None;
        let mut long = sleeper(6, 1);
        long.cmdline = Some(format!("x{}\ny", "a".repeat(500)));
        let mut hidden = sleeper(7, 1);
        hidden.tasks[0].syscall = None;
        hidden.tasks[0].wchan = None;
        let snap = Snapshot { processes: vec![z, long, hidden], unread: 2, pressure: None };
        let lines = render_text(&snap, 5, 30);
        assert!(lines[0].ends_with("idle ?  -  [true] <defunct>"), "{}", lines[0]);
        let long = lines.iter().find(|l| l.starts_with("6 ")).unwrap();
        assert_eq!(long.chars().count(), WIDTH);
        assert!(long.ends_with('…') && !long.contains('\n'));
        assert!(lines.iter().any(|l| l.starts_with("7 ") && l.contains("  ?  ")), "{lines:#?}");
        assert_eq!(lines.last().unwrap(), "… and 2 not read in time");
    }

    #[test]
    fn a_parent_loop_still_lists_everyone_once() {
        let procs = vec![sleeper(1, 2), sleeper(2, 1), sleeper(3, 3)];
        let lines = render_text(&Snapshot { processes: procs, unread: 0, pressure: None }, 9, 30);
        assert_eq!(lines.len(), 3, "{lines:#?}");
    }

    #[test]
    fn socket_targets() {
        let fd = |socket| Fd { fd: 3, kind: FdKind::Socket(1), link: "socket:[1]".into(), socket };
        let inet = |peer: Option<&str>, state| Socket::Inet {
            proto: "tcp",
            local: "127.0.0.1:4000".parse().unwrap(),
            peer: peer.map(|p| p.parse().unwrap()),
            state,
        };
        assert_eq!(
            fd(Some(inet(Some("127.0.0.1:80"), Some("ESTAB")))).target(),
            "tcp 127.0.0.1:4000->127.0.0.1:80"
        );
        assert_eq!(
            fd(Some(inet(Some("127.0.0.1:80"), Some("CLOSE-WAIT")))).target(),
            "tcp 127.0.0.1:4000->127.0.0.1:80 CLOSE-WAIT"
        );
        assert_eq!(fd(Some(inet(None, Some("LISTEN")))).target(), "tcp 127.0.0.1:4000 LISTEN");
        assert_eq!(
            fd(Some(Socket::Unix { path: Some("/run/x.sock".into()), listening: true })).target(),
            "unix /run/x.sock LISTEN"
        );
        assert_eq!(
            fd(Some(Socket::Unix { path: None, listening: false })).target(),
            "unix socket:[1]"
        );
        assert_eq!(fd(None).target(), "socket:[1]");
    }

    #[test]
    fn figures() {
        assert_eq!(bytes(0), "0B");
        assert_eq!(bytes(2048), "2KiB");
        assert_eq!(bytes(5 << 30), "5.0GiB");
        assert_eq!(seconds(0.004), "0.00s");
        assert_eq!(seconds(1234.4), "1234s");
        assert_eq!(idle(Some(Duration::from_millis(3250))), "3.2s");
        assert_eq!(idle(Some(Duration::from_secs(41))), "41s");
        assert_eq!(idle(Some(Duration::from_secs(725))), "12m05s");
        assert_eq!(idle(Some(Duration::from_secs(3 * 3600 + 5 * 60))), "3h05m");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
    }
}
