//! The dump: what every process of the tree was doing when watchd stopped it. `snapshot` reads
//! the tree once into plain data (never stopping, tracing or signalling anyone); `render_text`
//! and `write_event_json` turn that data into the stderr picture and the `dump` event, purely.

mod calls;
mod json;
mod parse;
mod read;
#[rustfmt::skip]
mod syscalls;
mod text;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use json::write_event_json;
pub use parse::{FdKind, Syscall};
pub use text::render_text;

/// How many processes the stderr picture lists (SPEC: "At most 30 processes are listed").
pub const TEXT_MAX: usize = 30;

/// A process of the tree as the tree walk knows it; `starttime` (stat field 22, clock ticks
/// after boot) tells it apart from a later process that got the same pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub pid: i32,
    pub starttime: u64,
}

/// A probe's scan lists the tree's zombies too, which the dump shows.
impl From<&crate::probe::Proc> for Member {
    fn from(p: &crate::probe::Proc) -> Member {
        Member { pid: p.pid, starttime: p.starttime }
    }
}

/// The tree at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// By pid. A member that was gone (or whose pid now names another process) is not here.
    pub processes: Vec<Process>,
    /// Members not read because the deadline came first.
    pub unread: usize,
    /// The command's cgroup's pressure (it is the tree's, not a process's); `None` without a
    /// cgroup. Filled in by the caller.
    pub pressure: Option<crate::cgroup::Pressure>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    pub pid: i32,
    pub ppid: i32,
    pub starttime: u64,
    /// One of `RSDZTtXxKWPI`, from stat (the main thread's state).
    pub state: u8,
    pub comm: String,
    /// num_threads from stat.
    pub threads: u64,
    /// utime + stime of all its threads (not of its reaped children).
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    /// How long since it last used CPU (see `snapshot`).
    pub idle: Option<Duration>,
    /// Arguments joined by spaces, "" for zombies and kernel threads; `None` when unreadable.
    pub cmdline: Option<String>,
    /// Its GPU memory and utilization at the last probe, as NVML told them; `None` without NVML
    /// (the reading here leaves it so; the driver fills it in).
    pub gpu: Option<crate::gpu::ProcessGpu>,
    /// Every thread read, the main thread (tid == pid) first, then by tid.
    pub tasks: Vec<Task>,
}

impl Process {
    /// The main thread, whose wchan, system call and stack stand for the process.
    pub fn main_task(&self) -> Option<&Task> {
        self.tasks.first().filter(|t| t.tid == self.pid)
    }
}

/// One thread.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub tid: i32,
    pub comm: String,
    pub state: u8,
    pub cpu_seconds: f64,
    /// From the scheduler: now minus `se.exec_start` of /proc/PID/task/TID/sched (see
    /// `snapshot` for a single-threaded process).
    pub idle: Option<Duration>,
    /// The kernel function it sleeps in; `None` when running or not shown (not root).
    pub wchan: Option<String>,
    /// `None` when /proc/PID/syscall is unreadable (not allowed to trace it).
    pub syscall: Option<Syscall>,
    /// The descriptor named by the system call's first argument, for calls that take one.
    pub fd: Option<Fd>,
    /// Kernel stack frames, innermost first; `None` unless readable (root).
    pub stack: Option<Vec<String>>,
}

impl Syscall {
    /// The call's name. `None` outside a call, for numbers the table does not know, and where
    /// another table applies: an x32 call, or a 32-bit process (stack and program counter both
    /// below 4 GiB), which this cheap test catches without reading the executable.
    pub fn name(&self) -> Option<&'static str> {
        match *self {
            Syscall::In { nr, sp, pc, .. } => {
                let x32 = cfg!(target_arch = "x86_64") && nr & (1 << 30) != 0;
                let compat = sp <= u64::from(u32::MAX) && pc <= u64::from(u32::MAX);
                if x32 || compat { None } else { calls::name(nr) }
            }
            Syscall::Running | Syscall::Outside { .. } => None,
        }
    }

    /// The call's number, when in one.
    pub fn nr(&self) -> Option<u64> {
        match *self {
            Syscall::In { nr, .. } => Some(nr),
            Syscall::Running | Syscall::Outside { .. } => None,
        }
    }
}

/// A descriptor a blocked call works on.
#[derive(Debug, Clone, PartialEq)]
pub struct Fd {
    pub fd: i32,
    pub kind: FdKind,
    /// The link as the kernel shows it: `pipe:[5678]`, `socket:[123]`, `/var/log/app.log`.
    pub link: String,
    /// For a socket found in its network namespace's /proc/net tables.
    pub socket: Option<Socket>,
}

impl Fd {
    /// What the descriptor is, in one short phrase: the link, or for a socket found in
    /// /proc/net its protocol, addresses and (when not plainly established) its state.
    pub fn target(&self) -> String {
        match &self.socket {
            Some(Socket::Inet { proto, local, peer: Some(peer), state }) => match state {
                Some(s) if *s != "ESTAB" => format!("{proto} {local}->{peer} {s}"),
                _ => format!("{proto} {local}->{peer}"),
            },
            Some(Socket::Inet { proto, local, peer: None, state }) => match state {
                Some(s) if *proto == "tcp" => format!("{proto} {local} {s}"),
                _ => format!("{proto} {local}"),
            },
            Some(Socket::Unix { path, listening }) => {
                let what = path.as_deref().unwrap_or(&self.link);
                if *listening { format!("unix {what} LISTEN") } else { format!("unix {what}") }
            }
            None => self.link.clone(),
        }
    }

    /// The kind's name in the `dump` event.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            FdKind::Pipe => "pipe",
            FdKind::Socket(_) => "socket",
            FdKind::Anon => "anon",
            FdKind::File => "file",
            FdKind::Other => "other",
        }
    }
}

/// A socket as /proc/net shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Socket {
    Inet {
        /// `tcp` or `udp`.
        proto: &'static str,
        local: SocketAddr,
        /// `None` when not connected (listening, or an unconnected UDP socket).
        peer: Option<SocketAddr>,
        /// TCP's state as `ss` names it; `None` for UDP.
        state: Option<&'static str>,
    },
    Unix {
        /// The bound path (`@name` in the abstract namespace); `None` when unnamed, which is
        /// what the connecting end of a unix socket usually is. /proc/net/unix has no peer.
        path: Option<String>,
        listening: bool,
    },
}

/// What the reader hands over, one message per member and then the sockets it found.
enum Msg {
    /// A member read, or `None` when it was gone.
    Member(Option<Process>),
    Sockets(HashMap<u64, Socket>),
}

/// What the reader has handed over so far.
#[derive(Default)]
struct Shared {
    processes: Vec<Process>,
    /// Members read, gone ones included.
    answered: usize,
    sockets: HashMap<u64, Socket>,
    /// The reader is through, sockets included.
    done: bool,
    /// The caller has taken its answer and left: the reader stops at its next member.
    abandoned: bool,
}

/// Gives a reader's message to the caller; false once the caller has left.
fn hand_over(shared: &(Mutex<Shared>, Condvar), msg: Msg) -> bool {
    let (lock, finished) = shared;
    let mut s = lock.lock().unwrap_or_else(PoisonError::into_inner);
    if s.abandoned {
        return false;
    }
    s.take(msg);
    if s.done {
        finished.notify_one();
    }
    true
}

/// How many threads read `n` members: one per 128 members, at most 4 and no more than the CPUs
/// watchd may use. /proc reads cost CPU in the kernel (about 50 µs a process here), so a big
/// tree is read in parallel to keep the dump short; a small one is not worth a thread more.
fn readers(n: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    n.div_ceil(128).clamp(1, cpus.min(4))
}

impl Shared {
    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Member(p) => {
                self.answered += 1;
                self.processes.extend(p);
            }
            Msg::Sockets(found) => {
                self.sockets = found;
                self.done = true;
            }
        }
    }
}

/// Reads every member's process and threads from /proc, and resolves the sockets that blocked
/// calls name through /proc/net, once per network namespace.
///
/// `idle(pid, starttime)` is what watchd's sampler knows of how long since the process's CPU
/// time last grew; where it says `None`, the process's idle time is that of its most recently
/// run thread on the scheduler's clock (`se.exec_start` in /proc/PID/task/TID/sched, which also
/// catches wake-ups too short to move the tick counters; the clock of the CPU the thread last
/// ran on can drift from the reader's by that CPU's steal time, so it is an estimate). The
/// threads of a multi-threaded process always get the scheduler's figure; the one thread of a
/// single-threaded process shares its process's, and sched is then read only when needed.
///
/// The reads run on threads of their own (more than one for a big tree, see `readers`) and the
/// answer is whatever was read by `until`: a read that blocks (/proc/PID/cmdline waits for the
/// process's memory map lock, which a process stuck in the kernel can hold) never holds up the
/// caller past `until`; members not read by then are counted in `unread`, and the threads stop
/// at their next member, or whenever the blocked read returns. If no thread can be started,
/// the reads run here, checking the time between processes.
pub fn snapshot(
    members: &[Member],
    idle: impl Fn(i32, u64) -> Option<Duration>,
    until: Instant,
) -> Snapshot {
    if Instant::now() >= until {
        return Snapshot { processes: Vec::new(), unread: members.len(), pressure: None };
    }
    let list: Arc<Vec<(Member, Option<Duration>)>> =
        Arc::new(members.iter().map(|&m| (m, idle(m.pid, m.starttime))).collect());
    let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
    let (their_list, theirs) = (Arc::clone(&list), Arc::clone(&shared));
    let threads = readers(list.len());
    let worker = std::thread::Builder::new().name("watchd-dump".into()).spawn(move || {
        read::read_all(&their_list, threads, &|msg| hand_over(&theirs, msg));
    });
    let Shared { mut processes, answered, sockets, done, .. } = if worker.is_ok() {
        // Readers hand each process over under the lock without waking us: one wake-up at the
        // end, not one per process.
        let (lock, finished) = &*shared;
        let s = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let left = until.saturating_duration_since(Instant::now());
        let (mut s, _) = finished
            .wait_timeout_while(s, left, |s| !s.done)
            .unwrap_or_else(PoisonError::into_inner);
        let answer = std::mem::take(&mut *s);
        s.abandoned = true;
        answer
    } else {
        read::read_all(&list, 1, &|msg| hand_over(&shared, msg) && Instant::now() < until);
        std::mem::take(&mut *shared.0.lock().unwrap_or_else(PoisonError::into_inner))
    };
    // Done: the readers have handed over their last process and are ending. Joined, so watchd
    // is single-threaded again when it goes on to signal the tree; a worker held up in a
    // blocked read is left to end on its own.
    if done && let Ok(worker) = worker {
        let _ = worker.join();
    }
    for p in &mut processes {
        for t in &mut p.tasks {
            if let Some(fd) = &mut t.fd
                && let FdKind::Socket(inode) = fd.kind
            {
                fd.socket = sockets.get(&inode).cloned();
            }
        }
    }
    processes.sort_by_key(|p| p.pid);
    Snapshot { processes, unread: members.len().saturating_sub(answered), pressure: None }
}
