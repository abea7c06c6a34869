//! The dump's reads: per process its stat and cmdline, per thread stat, stack (or wchan where
//! the stack is not readable), syscall, sched and the descriptor a blocked call names, and
//! /proc/net once per network namespace.
//!
//! Each process's files are opened relative to its /proc directory, opened first and checked
//! against the member's start time, so a pid reused meanwhile cannot lend its files to the dead
//! process: reads through the old directory fail instead. Reading only reads: no file here
//! stops, traces or signals the process.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat, readlinkat};
use nix::sys::stat::Mode;
use nix::unistd::{SysconfVar, sysconf};

use super::parse::{self, FdKind, Syscall};
use super::{Fd, Member, Msg, Process, Socket, Task, calls};
use crate::probe::parse_stat;

/// Why a read gave nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Miss {
    /// The process or thread is gone (ENOENT, ESRCH): leave it out.
    Gone,
    /// Not allowed (EACCES: a capability is missing): the field is null.
    Denied,
    /// EPERM (not allowed to trace this one), too large, or any other failure: null.
    Unreadable,
}

impl From<Errno> for Miss {
    fn from(e: Errno) -> Miss {
        match e {
            Errno::ENOENT | Errno::ESRCH => Miss::Gone,
            Errno::EACCES => Miss::Denied,
            _ => Miss::Unreadable,
        }
    }
}

/// How a file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// One record that procfs hands out in a single read (stat, wchan, syscall, sched, stack):
    /// a read that does not fill the buffer is the whole file, which saves the read that would
    /// return 0. Larger than 64 KiB is garbage.
    Record,
    /// The first `CMDLINE_MAX` bytes are enough (cmdline, which the kernel also hands out in
    /// one read, however many pages it spans).
    Prefix,
    /// To the end, up to `NET_MAX` (a /proc/net table).
    Table,
}

/// A command line is cut here: the dump shows a line, not a whole environment's worth.
const CMDLINE_MAX: usize = 4096;
/// /proc/net tables can be large on a busy host; past this they are not searched.
const NET_MAX: usize = 16 << 20;
const RECORD_MAX: usize = 64 * 1024;

/// Reads members on up to `threads` threads, this one included, each taking the next member
/// nobody has taken yet and handing it over through `emit` (which says whether to go on);
/// then the sockets their blocked calls named, once every member is read. With each member
/// comes the sampler's idle time, if it has one.
pub(super) fn read_all(
    members: &[(Member, Option<Duration>)],
    threads: usize,
    emit: &(dyn Fn(Msg) -> bool + Sync),
) {
    let next = AtomicUsize::new(0);
    // `None`: told to stop.
    let work = || {
        let mut reader = Reader::new();
        loop {
            let Some(&(m, idle)) = members.get(next.fetch_add(1, Ordering::Relaxed)) else {
                return Some(reader);
            };
            if !emit(Msg::Member(reader.process(m, idle))) {
                return None;
            }
        }
    };
    let (mine, helpers) = std::thread::scope(|scope| {
        // A helper that cannot be started leaves its share to the others.
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("watchd-dump".into())
                    .spawn_scoped(scope, work)
                    .ok()
            })
            .collect();
        let mine = work();
        (mine, helpers.into_iter().filter_map(|h| h.join().ok().flatten()).collect::<Vec<_>>())
    });
    let Some(mut reader) = mine else { return };
    for other in helpers {
        reader.absorb(other);
    }
    emit(Msg::Sockets(reader.resolve_sockets()));
}

/// A network namespace, by the inode of its `ns/net` link, or by a process when that link is
/// unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum NetNs {
    Inode(u64),
    Pid(i32),
}

struct Reader {
    clk_tck: f64,
    page_size: u64,
    /// `se.exec_start` of the reading thread, which is running: "now" on the scheduler's clock.
    now_ns: Option<u64>,
    buf: Vec<u8>,
    /// Socket inodes to look up, per network namespace, with the /proc directory of a process
    /// in it to read its tables through.
    sockets: HashMap<NetNs, (OwnedFd, HashSet<u64>)>,
    /// Kernel stacks need CAP_SYS_ADMIN, for every process alike: after one refusal, the rest
    /// are not tried.
    stacks_denied: bool,
}

impl Reader {
    fn new() -> Reader {
        let conf = |var| sysconf(var).ok().flatten().filter(|&v| v > 0);
        let mut reader = Reader {
            clk_tck: conf(SysconfVar::CLK_TCK).map_or(100.0, |v| v as f64),
            page_size: conf(SysconfVar::PAGE_SIZE).map_or(4096, |v| v as u64),
            now_ns: None,
            buf: vec![0; 4096],
            sockets: HashMap::new(),
            stacks_denied: false,
        };
        if let Ok(me) = open_dir("thread-self") {
            reader.now_ns =
                reader.read(&me, "sched", Shape::Record).ok().and_then(parse::parse_exec_start);
        }
        reader
    }

    /// One member with its threads; `None` when it is gone or its pid names another process.
    /// `idle` is the sampler's figure: where it has one for a single-threaded process, the
    /// scheduler's is not read (sched is the costliest file after the stack).
    fn process(&mut self, m: Member, idle: Option<Duration>) -> Option<Process> {
        let dir = open_dir(&m.pid.to_string()).ok()?;
        let text = self.read(&dir, "stat", Shape::Record).ok()?;
        let stat = parse_stat(text).filter(|s| s.pid == m.pid && s.starttime == m.starttime)?;
        let (comm, threads) = parse::parse_comm_threads(text)?;
        let comm = String::from_utf8_lossy(comm).into_owned();
        let main_stat = (stat, comm.clone());
        let cmdline = match self.read(&dir, "cmdline", Shape::Prefix) {
            Ok(raw) if raw.len() == CMDLINE_MAX => Some(parse::cmdline(raw) + "…"),
            Ok(raw) => Some(parse::cmdline(raw)),
            Err(Miss::Gone) => return None,
            Err(Miss::Denied | Miss::Unreadable) => None,
        };
        let tasks = if threads > 1 {
            let mut tids = list_tasks(&dir).ok()?;
            // The main thread first: it stands for the process.
            tids.sort_unstable_by_key(|&tid| (tid != m.pid, tid));
            let mut tasks = Vec::with_capacity(tids.len());
            for tid in tids {
                tasks.extend(self.task(&dir, m.pid, Some(tid), None, None).ok());
            }
            tasks
        } else {
            vec![self.task(&dir, m.pid, None, Some(main_stat), idle).ok()?]
        };
        if tasks.is_empty() {
            return None;
        }
        Some(Process {
            pid: m.pid,
            ppid: stat.ppid,
            starttime: stat.starttime,
            state: stat.state,
            comm,
            threads,
            cpu_seconds: (stat.utime.saturating_add(stat.stime)) as f64 / self.clk_tck,
            rss_bytes: stat.rss_pages.saturating_mul(self.page_size),
            idle: idle.or_else(|| tasks.iter().filter_map(|t| t.idle).min()),
            cmdline,
            gpu: None,
            tasks,
        })
    }

    /// Thread `tid` of `pid` (`None`: the process's own files, for a single-threaded process
    /// whose stat was already read, and whose idle time the sampler may know).
    fn task(
        &mut self,
        dir: &OwnedFd,
        pid: i32,
        tid: Option<i32>,
        stat: Option<(crate::probe::Stat, String)>,
        idle: Option<Duration>,
    ) -> Result<Task, Miss> {
        let prefix = tid.map_or(String::new(), |tid| format!("task/{tid}/"));
        let file = |name: &str| format!("{prefix}{name}");
        let (stat, comm) = match stat {
            Some(known) => known,
            None => {
                let text = self.read(dir, &file("stat"), Shape::Record)?;
                let stat =
                    parse_stat(text).filter(|s| Some(s.pid) == tid).ok_or(Miss::Unreadable)?;
                let comm = parse::parse_comm_threads(text).map(|(c, _)| c).unwrap_or_default();
                (stat, String::from_utf8_lossy(comm).into_owned())
            }
        };
        let stack: Option<Vec<String>> = if self.stacks_denied {
            None
        } else {
            match self.read(dir, &file("stack"), Shape::Record) {
                Ok(t) => Some(parse::parse_stack(t).into_iter().map(str::to_owned).collect()),
                Err(Miss::Gone) => return Err(Miss::Gone),
                Err(Miss::Denied) => {
                    self.stacks_denied = true;
                    None
                }
                Err(Miss::Unreadable) => None,
            }
        };
        // Where the stack is readable, its first frame is the wchan: both skip the scheduler's
        // own functions, and the kernel reports no wchan for a task on a run queue. That saves
        // a file per task, which is a sixth of the dump's cost.
        let wchan = match &stack {
            Some(frames) => frames
                .first()
                .filter(|_| stat.state != b'R')
                .and_then(|f| {
                    parse::parse_wchan(f.split('+').next().unwrap_or_default().as_bytes())
                })
                .map(str::to_owned),
            None => optional(self.read(dir, &file("wchan"), Shape::Record))?
                .and_then(|t| parse::parse_wchan(t).map(str::to_owned)),
        };
        let syscall = optional(self.read(dir, &file("syscall"), Shape::Record))?
            .and_then(parse::parse_syscall);
        let idle = match idle {
            Some(known) => Some(known),
            None => optional(self.read(dir, &file("sched"), Shape::Record))?
                .and_then(parse::parse_exec_start)
                .zip(self.now_ns)
                .map(|(then, now)| Duration::from_nanos(now.saturating_sub(then))),
        };
        let fd = syscall.and_then(|s| self.descriptor(dir, pid, &s));
        Ok(Task {
            tid: tid.unwrap_or(pid),
            comm,
            state: stat.state,
            cpu_seconds: (stat.utime.saturating_add(stat.stime)) as f64 / self.clk_tck,
            idle,
            wchan,
            syscall,
            fd,
            stack,
        })
    }

    /// The descriptor a blocked call's first argument names, when the call takes one. A socket
    /// is noted for the /proc/net lookup at the end.
    fn descriptor(&mut self, dir: &OwnedFd, pid: i32, syscall: &Syscall) -> Option<Fd> {
        let Syscall::In { args, .. } = syscall else { return None };
        if !calls::takes_fd(syscall.name()?) {
            return None;
        }
        // The kernel prints the register: an int argument may carry junk in the upper half.
        let fd = i32::try_from(args[0] & 0xffff_ffff).ok().filter(|&fd| fd >= 0)?;
        let link = readlinkat(dir, format!("fd/{fd}").as_str()).ok()?;
        let link = link.as_encoded_bytes();
        let kind = parse::classify_link(link);
        if let FdKind::Socket(inode) = kind {
            let ns = readlinkat(dir, "ns/net")
                .ok()
                .and_then(|l| {
                    let l = l.as_encoded_bytes();
                    parse::parse_dec(l.strip_prefix(b"net:[")?.strip_suffix(b"]")?)
                })
                .map_or(NetNs::Pid(pid), NetNs::Inode);
            if let Some((_, inodes)) = self.sockets.get_mut(&ns) {
                inodes.insert(inode);
            } else if let Ok(dup) = dir.try_clone() {
                self.sockets.insert(ns, (dup, HashSet::from([inode])));
            }
        }
        Some(Fd { fd, kind, link: String::from_utf8_lossy(link).into_owned(), socket: None })
    }

    /// Takes over the sockets another reader noted.
    fn absorb(&mut self, other: Reader) {
        for (ns, (dir, inodes)) in other.sockets {
            match self.sockets.entry(ns) {
                Entry::Occupied(mut known) => known.get_mut().1.extend(inodes),
                Entry::Vacant(slot) => {
                    slot.insert((dir, inodes));
                }
            }
        }
    }

    /// Looks up every noted socket in its namespace's tables, stopping early once all are found.
    fn resolve_sockets(&mut self) -> HashMap<u64, Socket> {
        let mut found = HashMap::new();
        let namespaces = std::mem::take(&mut self.sockets);
        for (dir, mut wanted) in namespaces.into_values() {
            for (table, proto) in [
                ("net/tcp", "tcp"),
                ("net/tcp6", "tcp"),
                ("net/udp", "udp"),
                ("net/udp6", "udp"),
                ("net/unix", "unix"),
            ] {
                if wanted.is_empty() {
                    break;
                }
                let Ok(text) = self.read(&dir, table, Shape::Table) else { continue };
                for line in text.split(|&b| b == b'\n') {
                    let Some((inode, socket)) = socket_line(line, proto) else { continue };
                    if wanted.remove(&inode) {
                        found.insert(inode, socket);
                    }
                }
            }
        }
        found
    }

    /// Reads `name` below `dir` into the reader's buffer.
    fn read(&mut self, dir: &OwnedFd, name: &str, shape: Shape) -> Result<&[u8], Miss> {
        let fd = openat(dir, name, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())?;
        let mut file = File::from(fd);
        let cap = match shape {
            Shape::Record => RECORD_MAX,
            Shape::Prefix => CMDLINE_MAX,
            Shape::Table => NET_MAX,
        };
        let mut len = 0;
        loop {
            if len == cap {
                return if shape == Shape::Prefix {
                    Ok(&self.buf[..len])
                } else {
                    Err(Miss::Unreadable)
                };
            }
            if len == self.buf.len() {
                self.buf.resize((len * 2).clamp(4096, cap), 0);
            }
            let end = self.buf.len().min(cap);
            match file.read(&mut self.buf[len..end]) {
                Ok(0) => return Ok(&self.buf[..len]),
                Ok(n) => {
                    len += n;
                    if shape != Shape::Table && len < end {
                        return Ok(&self.buf[..len]);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(e
                        .raw_os_error()
                        .map_or(Miss::Unreadable, |n| Errno::from_raw(n).into()));
                }
            }
        }
    }
}

/// One line of a /proc/net table as the inode it describes and what it says of it.
fn socket_line(line: &[u8], proto: &'static str) -> Option<(u64, Socket)> {
    if proto == "unix" {
        let l = parse::parse_unix_line(line)?;
        let path = l.path.map(|p| String::from_utf8_lossy(p).into_owned());
        let listening = l.flags & parse::UNIX_LISTENING != 0;
        return Some((l.inode, Socket::Unix { path, listening }));
    }
    let l = parse::parse_inet_line(line)?;
    let canonical =
        |a: std::net::SocketAddr| std::net::SocketAddr::new(a.ip().to_canonical(), a.port());
    let peer =
        (!l.remote.ip().is_unspecified() || l.remote.port() != 0).then(|| canonical(l.remote));
    let state = if proto == "tcp" { parse::tcp_state(l.state) } else { None };
    Some((l.inode, Socket::Inet { proto, local: canonical(l.local), peer, state }))
}

/// A field's read: the text, `None` when unreadable, or the task is gone.
fn optional<T>(r: Result<T, Miss>) -> Result<Option<T>, Miss> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Miss::Denied | Miss::Unreadable) => Ok(None),
        Err(Miss::Gone) => Err(Miss::Gone),
    }
}

/// `/proc/<name>` as a handle to read below.
fn open_dir(name: &str) -> Result<OwnedFd, Miss> {
    let path = format!("/proc/{name}");
    Ok(open(path.as_str(), OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?)
}

/// The thread ids listed in `task/`.
fn list_tasks(dir: &OwnedFd) -> Result<Vec<i32>, Miss> {
    let mut tasks = Dir::openat(
        dir.as_fd(),
        "task",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    Ok(tasks
        .iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| parse::parse_dec(e.file_name().to_bytes()))
        .filter_map(|tid| i32::try_from(tid).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absorb_merges_the_sockets_readers_noted() {
        let dir = open_dir("self").expect("/proc/self");
        let mut a = Reader::new();
        let mut b = Reader::new();
        a.sockets.insert(NetNs::Inode(1), (dir.try_clone().unwrap(), HashSet::from([10])));
        b.sockets.insert(NetNs::Inode(1), (dir.try_clone().unwrap(), HashSet::from([11])));
        b.sockets.insert(NetNs::Pid(5), (dir, HashSet::from([12])));
        a.absorb(b);
        assert_eq!(a.sockets[&NetNs::Inode(1)].1, HashSet::from([10, 11]));
        assert_eq!(a.sockets[&NetNs::Pid(5)].1, HashSet::from([12]));
    }

    #[test]
    fn errors_that_mean_gone_or_denied() {
        assert_eq!(Miss::from(Errno::ENOENT), Miss::Gone);
        assert_eq!(Miss::from(Errno::ESRCH), Miss::Gone);
        assert_eq!(Miss::from(Errno::EACCES), Miss::Denied);
        assert_eq!(Miss::from(Errno::EPERM), Miss::Unreadable);
        assert_eq!(optional::<()>(Err(Miss::Denied)), Ok(None));
        assert_eq!(optional::<()>(Err(Miss::Gone)), Err(Miss::Gone));
    }
}
