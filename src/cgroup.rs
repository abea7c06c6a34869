//! Containment in a cgroup v2: where watchd's own cgroup is, whether `--cgroup` may use it, and
//! the command's cgroup below it (create, place the child before exec, read members, CPU,
//! pressure, OOM kills and emptiness, kill, remove), with pure parsers of the texts involved.
//!
//! Nothing here decides when to act; the supervisor does. The system calls it needs are the
//! system layer's (`sys::cgroup` for the delegation mark); the child's placement is
//! `spawn::Placement`'s, and signalling a member is `tree`'s.

use std::ffi::{CStr, CString, OsStr};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};

use crate::signals::{SIGKILL, Signal};
use crate::sys;
use crate::tree::{self, Sent};

/// `--cgroup`: whether the command gets a cgroup of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Only where watchd's cgroup is its to manage: delegated to it, or PID 1 at the root of
    /// its cgroup namespace
    Auto,
    /// Required: if it cannot be had, watchd exits 125 without starting the command
    On,
    /// Never: the tree is what /proc shows
    Off,
}

/// Where watchd's own cgroup v2 is, from /proc/self/cgroup and /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Own {
    /// As /proc/self/cgroup names it: relative to the root of watchd's cgroup namespace.
    pub path: PathBuf,
    /// The cgroup2 mount it was found under.
    pub mount: PathBuf,
    /// Its directory: the mount point plus `path` less the mount's root.
    pub dir: PathBuf,
    /// The mount, or the filesystem under it, is read-only.
    pub read_only: bool,
    /// The delegation mark on `dir` (`trusted.delegate` or `user.delegate`), if set.
    pub delegated: Option<&'static str>,
}

/// Everything the `--cgroup` decision depends on, read once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// watchd's cgroup, or why it has none that can be used.
    pub own: Result<Own, String>,
    /// watchd is PID 1 of its PID namespace.
    pub pid1: bool,
    /// watchd's cgroup is the root of the whole hierarchy, not only of its cgroup namespace:
    /// it has no `cgroup.events`, which every other cgroup has. A PID 1 there is a process of
    /// the host in a PID namespace of its own (`unshare --pid`), not a container's init.
    pub hierarchy_root: bool,
}

impl Facts {
    /// Reads /proc/self/cgroup, /proc/self/mountinfo and the delegation xattrs.
    pub fn read() -> Facts {
        let own = match (fs::read("/proc/self/cgroup"), fs::read("/proc/self/mountinfo")) {
            (Ok(cgroup), Ok(mountinfo)) => find_own(&cgroup, &mountinfo)
                .map(|own| Own { delegated: delegation(&own.dir), ..own }),
            (Err(err), _) => Err(format!("cannot read /proc/self/cgroup: {err}")),
            (_, Err(err)) => Err(format!("cannot read /proc/self/mountinfo: {err}")),
        };
        let hierarchy_root = own.as_ref().is_ok_and(|own| !own.dir.join("cgroup.events").exists());
        Facts { own, pid1: std::process::id() == 1, hierarchy_root }
    }
}

/// The mark systemd (and anyone following its rules) puts on a cgroup it hands over.
fn delegation(dir: &Path) -> Option<&'static str> {
    [("trusted.delegate", c"trusted.delegate"), ("user.delegate", c"user.delegate")]
        .into_iter()
        .find(|(_, name)| {
            sys::cgroup::getxattr(dir, name).is_some_and(|value| is_true(value.trim_ascii()))
        })
        .map(|(name, _)| name)
}

/// systemd's boolean spellings, which is what it writes (`1`).
fn is_true(value: &[u8]) -> bool {
    matches!(value.to_ascii_lowercase().as_slice(), b"1" | b"yes" | b"y" | b"true" | b"t" | b"on")
}

/// watchd's cgroup from the texts of /proc/self/cgroup and /proc/self/mountinfo, before the
/// xattrs are read (`delegated` is `None`).
pub fn find_own(proc_cgroup: &[u8], mountinfo: &[u8]) -> Result<Own, String> {
    let path = parse_proc_cgroup(proc_cgroup)
        .ok_or("/proc/self/cgroup has no cgroup v2 line (0::/...)")?;
    if path.as_os_str().as_bytes().ends_with(b" (deleted)") {
        return Err(format!("watchd's cgroup {} has been removed", path.display()));
    }
    let mounts = parse_mountinfo(mountinfo);
    if mounts.is_empty() {
        return Err("no cgroup2 filesystem is mounted (/proc/self/mountinfo)".to_string());
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "watchd's cgroup {} lies outside its cgroup namespace",
            path.display()
        ));
    }
    let found = mounts.iter().filter_map(|mount| {
        if mount.root.components().any(|c| c == Component::ParentDir) {
            return None;
        }
        let rest = path.strip_prefix(&mount.root).ok()?;
        let dir =
            if rest.as_os_str().is_empty() { mount.point.clone() } else { mount.point.join(rest) };
        Some((mount, dir))
    });
    // A writable view wins over a read-only one of the same cgroup (a container may see both).
    let best = found.min_by_key(|(mount, _)| mount.read_only).ok_or_else(|| {
        format!("watchd's cgroup {} is not visible under any cgroup2 mount", path.display())
    })?;
    let (mount, dir) = best;
    Ok(Own { path, mount: mount.point.clone(), dir, read_only: mount.read_only, delegated: None })
}

/// What `--cgroup` comes to, given what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Create the command's cgroup below `parent`, watchd's own; `why` is for `-v`.
    Use { parent: Own, why: String },
    /// No cgroup: the tree is the /proc tree; `why` is for `-v`.
    Proc { why: String },
    /// `--cgroup on` cannot be honoured: print `why` on one line and exit 125 before starting
    /// anything.
    Fail { why: String },
}

/// SPEC's rule: `off` never; `on` always, failing where it cannot; `auto` only where watchd's
/// cgroup is its to manage (delegated to it, or PID 1 at the root of its cgroup namespace on a
/// writable mount).
pub fn decide(mode: Mode, facts: &Facts) -> Decision {
    let own = match (mode, &facts.own) {
        (Mode::Off, _) => return Decision::Proc { why: "--cgroup off".to_string() },
        (_, Ok(own)) => own,
        (Mode::On, Err(why)) => return Decision::Fail { why: why.clone() },
        (Mode::Auto, Err(why)) => return Decision::Proc { why: why.clone() },
    };
    if own.read_only {
        let why = format!("the cgroup2 mount at {} is read-only", own.mount.display());
        return match mode {
            Mode::On => Decision::Fail { why },
            _ => Decision::Proc { why },
        };
    }
    let why = match own.delegated {
        _ if mode == Mode::On => "--cgroup on".to_string(),
        Some(mark) => format!("its cgroup {} carries {mark}", own.dir.display()),
        None if facts.pid1 && own.path == Path::new("/") && !facts.hierarchy_root => {
            "watchd is PID 1 at the root of its cgroup namespace".to_string()
        }
        None if facts.pid1 && facts.hierarchy_root => {
            return Decision::Proc {
                why: format!(
                    "watchd is PID 1 in the root cgroup of the whole hierarchy ({}), a host's \
                     and not a container's: it is not its to manage",
                    own.dir.display()
                ),
            };
        }
        None => {
            return Decision::Proc {
                why: format!(
                    "its cgroup {} is not delegated to it (no trusted.delegate or user.delegate \
                     mark) and it is not PID 1 at the root of a cgroup namespace",
                    own.dir.display()
                ),
            };
        }
    };
    Decision::Use { parent: own.clone(), why }
}

/// The command's cgroup, created by watchd below its own.
///
/// It is always a leaf that only the command's processes enter, and watchd never enables
/// controllers, so cgroup v2's "no internal processes" rule never bites: watchd stays where it
/// was, and its cgroup's `cgroup.subtree_control` is left as it was (the kernel already keeps it
/// empty while watchd is in it, unless it is the root). The price: the memory and io
/// controllers are there only when they were already enabled above, so `memory.events` is
/// often absent (`oom_kills` is `None`); pressure, `cpu.stat` usage, `cgroup.kill`,
/// `cgroup.events` and `cgroup.freeze` need no controller.
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
    /// As a member's /proc/PID/cgroup shows it.
    path: PathBuf,
    /// The open directory, for clone3's CLONE_INTO_CGROUP.
    dirfd: OwnedFd,
    /// `<dir>/cgroup.procs`, ready for a child that joins between fork and exec.
    procs: CString,
    buf: Vec<u8>,
}

/// How many names `create` tries: `name`, `name.2`, ...
const NAME_TRIES: u32 = 16;

impl Cgroup {
    /// Creates `<parent>/<name>`, or `<name>.2`, `<name>.3`, ... when that is taken: a cgroup left
    /// by a SIGKILLed watchd that had the same pid is not this one's to reuse or remove.
    pub fn create(parent: &Own, name: &str) -> Result<Cgroup, String> {
        for n in 1..=NAME_TRIES {
            let leaf = if n == 1 { name.to_string() } else { format!("{name}.{n}") };
            let dir = parent.dir.join(&leaf);
            match fs::create_dir(&dir) {
                Ok(()) => {
                    return Cgroup::open(&dir, parent.path.join(&leaf)).inspect_err(|_| {
                        let _ = fs::remove_dir(&dir);
                    });
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => {
                    return Err(format!("cannot create cgroup {}: {}", dir.display(), plain(&err)));
                }
            }
        }
        Err(format!(
            "cannot create a cgroup in {}: {name} to {name}.{NAME_TRIES} are all taken",
            parent.dir.display()
        ))
    }

    fn open(dir: &Path, path: PathBuf) -> Result<Cgroup, String> {
        let fail = |what: &str, err: &io::Error| {
            format!("cannot {what} cgroup {}: {}", dir.display(), plain(err))
        };
        // Below a threaded cgroup a new one is "domain invalid" and takes no process: say so now
        // rather than fail the spawn.
        match fs::read(dir.join("cgroup.type")) {
            Ok(kind) if kind.trim_ascii() != b"domain" => {
                return Err(format!(
                    "cgroup {} is of type {}, not domain: it cannot hold the command",
                    dir.display(),
                    String::from_utf8_lossy(kind.trim_ascii())
                ));
            }
            Ok(_) => {}
            Err(err) => return Err(fail("read the type of", &err)),
        }
        let dirfd = File::open(dir).map_err(|err| fail("open", &err))?.into();
        let procs = CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes())
            .map_err(|_| format!("cgroup path {} holds a NUL byte", dir.display()))?;
        Ok(Cgroup { dir: dir.to_path_buf(), path, dirfd, procs, buf: Vec::new() })
    }

    /// Its directory: the `start` event's `cgroup`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its name as /proc/PID/cgroup shows it for a member.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open directory: clone3's `cgroup` with CLONE_INTO_CGROUP.
    pub fn dir_fd(&self) -> BorrowedFd<'_> {
        self.dirfd.as_fd()
    }

    /// `<dir>/cgroup.procs` as a C string, for a child that joins between fork and exec
    /// (`spawn::Placement`).
    pub fn procs_file(&self) -> &CStr {
        &self.procs
    }

    /// Reads one of its files into the reused buffer. `None` when it cannot be read (absent:
    /// no such controller, or a kernel without it).
    fn read(&mut self, file: &str) -> Option<&[u8]> {
        read_into(&self.dir.join(file), &mut self.buf)
    }

    /// Every process in the cgroup, and in cgroups the command made inside it, into `out`
    /// (sorted, no duplicates). `false` when cgroup.procs could not be read: that is no news,
    /// not an empty tree.
    pub fn members(&mut self, out: &mut Vec<i32>) -> bool {
        out.clear();
        let Some(text) = read_into(&self.dir.join("cgroup.procs"), &mut self.buf) else {
            return false;
        };
        parse_procs(text, out);
        // cgroup.procs lists only this level; a root-run command may have made cgroups inside
        // (it cannot leave the subtree without writing to a cgroup.procs above, which nothing
        // stops root from doing: such a process has left the tree).
        if self.read("cgroup.stat").and_then(|t| keyed(t, b"nr_descendants")).unwrap_or(1) > 0 {
            let mut dirs = vec![self.dir.clone()];
            while let Some(dir) = dirs.pop() {
                let Ok(entries) = fs::read_dir(&dir) else { continue };
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        if let Some(text) =
                            read_into(&entry.path().join("cgroup.procs"), &mut self.buf)
                        {
                            parse_procs(text, out);
                        }
                        dirs.push(entry.path());
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        true
    }

    /// CPU time of every process that has been in it, reaped ones included: `cpu.stat`
    /// `usage_usec` (it needs no controller, and covers the cgroups inside).
    pub fn cpu_usage(&mut self) -> Option<Duration> {
        self.read("cpu.stat").and_then(parse_cpu_usage)
    }

    /// `some avg10` of cpu, io and memory pressure, as ratios.
    pub fn pressure(&mut self) -> Pressure {
        let mut some = |file| self.read(file).and_then(parse_some_avg10);
        Pressure {
            cpu: some("cpu.pressure"),
            io: some("io.pressure"),
            memory: some("memory.pressure"),
        }
    }

    /// `memory.events` `oom_kill`: `None` where the memory controller is not enabled for it.
    pub fn oom_kills(&mut self) -> Option<u64> {
        self.read("memory.events").and_then(parse_oom_kills)
    }

    /// Sends `sig` to `pid` if it is a member (of this cgroup or of one inside it), for the
    /// freezing kill over `members`. The check is made once a pidfd holds the process, so a pid
    /// recycled by a stranger since `members` read it is never signalled (before Linux 5.3,
    /// which has no pidfds, the kill follows the check by pid, as the tree's signals do). False
    /// when it was not sent.
    pub fn signal(&self, pid: i32, sig: Signal) -> bool {
        tree::send_if_member(pid, &self.path, sig) == Sent::Delivered
    }

    /// `cgroup.events` now.
    pub fn events(&mut self) -> Option<Events> {
        self.read("cgroup.events").and_then(parse_events)
    }

    /// `cgroup.events` held open for a poll loop (see `EventsWatch`).
    pub fn watch(&self) -> io::Result<EventsWatch> {
        Ok(EventsWatch { file: File::open(self.dir.join("cgroup.events"))?, buf: Vec::new() })
    }

    /// Kills everything in it (and in cgroups inside it) with SIGKILL, atomically with respect
    /// to fork: one write to `cgroup.kill` (Linux 5.14+). Older kernels: freeze, SIGKILL every
    /// member through a pidfd, thaw. The end is seen as `populated 0` (`EventsWatch`). An error
    /// (a kernel before 5.2 has neither file) leaves the kill to the tree's own pidfd walk.
    pub fn kill(&mut self) -> io::Result<Killed> {
        match write_file(&self.dir.join("cgroup.kill"), b"1") {
            Ok(()) => Ok(Killed::CgroupKill),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                self.kill_by_freezing().map(|signalled| Killed::Frozen { signalled })
            }
            Err(err) => Err(err),
        }
    }

    /// The kill for kernels without `cgroup.kill` (5.2 to 5.13). A frozen process cannot fork,
    /// so one pass over the members catches them all once the cgroup is frozen; if freezing
    /// does not complete in time (a member in uninterruptible sleep), passes repeat while they
    /// find new members. Always thawed after, so the next run's child is not born frozen.
    fn kill_by_freezing(&mut self) -> io::Result<usize> {
        const FREEZE_WAIT: Duration = Duration::from_secs(1);
        const PASSES: usize = 16;
        write_file(&self.dir.join("cgroup.freeze"), b"1")?;
        let frozen = self.watch().is_ok_and(|mut watch| {
            watch.wait_for(FREEZE_WAIT, |events| events.frozen == Some(true) || !events.populated)
        });
        let mut signalled = 0;
        let mut members = Vec::new();
        let mut seen: Vec<i32> = Vec::new();
        for _ in 0..if frozen { 1 } else { PASSES } {
            self.members(&mut members);
            members.retain(|pid| seen.binary_search(pid).is_err());
            if members.is_empty() {
                break;
            }
            for &pid in &members {
                if self.signal(pid, SIGKILL) {
                    signalled += 1;
                }
            }
            seen.extend_from_slice(&members);
            seen.sort_unstable();
        }
        write_file(&self.dir.join("cgroup.freeze"), b"0")?;
        Ok(signalled)
    }

    /// Removes the cgroup (rmdir) once nothing is in it. Only this cgroup: one the command made
    /// inside it is not watchd's to remove, and keeps it (`HoldsCgroups`). Already gone is done.
    pub fn remove(&mut self) -> Result<(), RemoveError> {
        match fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {
                let inner = self.read("cgroup.stat").and_then(|t| keyed(t, b"nr_descendants"));
                if self.events().is_some_and(|e| e.populated) || inner.is_none_or(|n| n == 0) {
                    Err(RemoveError::Populated)
                } else {
                    Err(RemoveError::HoldsCgroups)
                }
            }
            Err(err) => Err(RemoveError::Io(err)),
        }
    }
}

impl Drop for Cgroup {
    /// A cgroup watchd made goes with it when it is empty, whatever way watchd leaves (a
    /// command that could not be started, an error): rmdir removes only an empty cgroup, so one
    /// that still holds processes (--no-cleanup) stays.
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

/// How `Cgroup::kill` went about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Killed {
    /// One write to `cgroup.kill`.
    CgroupKill,
    /// Frozen, each member SIGKILLed through a pidfd, thawed.
    Frozen { signalled: usize },
}

/// Why `Cgroup::remove` could not remove it yet.
#[derive(Debug)]
pub enum RemoveError {
    /// Processes are still in it (or were a moment ago): try again when `populated 0`.
    Populated,
    /// Empty, but it holds cgroups the command made, which watchd does not remove.
    HoldsCgroups,
    Io(io::Error),
}

impl fmt::Display for RemoveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoveError::Populated => f.write_str("processes are still in it"),
            RemoveError::HoldsCgroups => f.write_str("it holds cgroups the command made"),
            RemoveError::Io(err) => f.write_str(&plain(err)),
        }
    }
}

/// `some avg10` of the three pressure files, as ratios 0..=1; `None` where unreadable (a kernel
/// without PSI, or booted with `psi=0`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressure {
    pub cpu: Option<f64>,
    pub io: Option<f64>,
    pub memory: Option<f64>,
}

/// `cgroup.events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Events {
    /// Some process is in it or in a cgroup inside it.
    pub populated: bool,
    /// `None` on kernels before the v2 freezer (5.2).
    pub frozen: Option<bool>,
}

/// `cgroup.events` held open. After each `read`, poll(2) reports POLLPRI and POLLERR on this
/// descriptor when the file changes (populated or frozen), so a poll loop waits for the end of
/// the tree without probing: add `as_fd()` to the poll set with POLLPRI, and `read` when it
/// fires (a read also re-arms it).
#[derive(Debug)]
pub struct EventsWatch {
    file: File,
    buf: Vec<u8>,
}

impl EventsWatch {
    /// Reads the file again from its start.
    pub fn read(&mut self) -> Option<Events> {
        self.buf.clear();
        self.buf.resize(256, 0);
        let n = self.file.read_at(&mut self.buf, 0).ok()?;
        parse_events(&self.buf[..n])
    }

    /// Waits up to `limit` until `done` holds for the file's contents; true if it did. For the
    /// few places that must wait here rather than in the supervisor's loop (the freezing kill,
    /// tests).
    pub fn wait_for(&mut self, limit: Duration, mut done: impl FnMut(Events) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.read().is_some_and(&mut done) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // A change is reported by the kernel (POLLPRI and POLLERR on a kernfs file); the cap
            // is a safety net against a missed one.
            let ms = left.min(Duration::from_millis(100)).as_millis() as i32;
            let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLPRI)];
            sys::poll(&mut fds, ms);
        }
    }
}

impl AsFd for EventsWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// "Read-only file system" without the " (os error 30)".
fn plain(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Reads a whole (small, kernel-generated) file into `buf`, keeping its capacity.
fn read_into<'b>(path: &Path, buf: &'b mut Vec<u8>) -> Option<&'b [u8]> {
    buf.clear();
    File::open(path).ok()?.read_to_end(buf).ok()?;
    Some(buf)
}

/// Writes to a control file of a cgroup watchd created (never creates a file).
fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    OpenOptions::new().write(true).open(path)?.write_all(bytes)
}

// ---------------------------------------------------------------------------------------------
// Parsers: pure, never panic, and read only newline-terminated lines, so a short read can
// shorten nothing.

/// The newline-terminated lines of `text`, without their newline.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split_inclusive(|&b| b == b'\n').filter_map(|line| line.strip_suffix(b"\n"))
}

/// Decimal digits only: no sign, no spaces, no overflow.
fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then_some(())?;
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// The value of `key` in a file of `key value` lines (cpu.stat, memory.events, cgroup.events,
/// cgroup.stat). `None` when the key is missing, given twice, or not a plain decimal.
fn keyed(text: &[u8], key: &[u8]) -> Option<u64> {
    let mut found = None;
    for line in lines(text) {
        let Some(value) = line.strip_prefix(key).and_then(|rest| rest.strip_prefix(b" ")) else {
            continue;
        };
        if found.is_some() {
            return None;
        }
        found = Some(parse_u64(value)?);
    }
    found
}

/// The cgroup v2 path in a /proc/PID/cgroup text: the `0::/path` line (hybrid systems list
/// the v1 hierarchies too, with other numbers). `None` without one, or with two.
pub fn parse_proc_cgroup(text: &[u8]) -> Option<PathBuf> {
    let mut found = None;
    for line in lines(text) {
        let Some(path) = line.strip_prefix(b"0::") else { continue };
        if found.is_some() || !path.starts_with(b"/") {
            return None;
        }
        found = Some(PathBuf::from(OsStr::from_bytes(path)));
    }
    found
}

/// A cgroup2 mount, from /proc/PID/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub point: PathBuf,
    /// The cgroup at its root, relative to the reader's cgroup namespace (`/` for a whole
    /// hierarchy; a container without its own cgroup namespace may see `/docker/<id>`).
    pub root: PathBuf,
    /// `ro` among the mount's options or the filesystem's.
    pub read_only: bool,
}

/// The cgroup2 mounts in a /proc/PID/mountinfo text, in order. Lines that are not well formed
/// are skipped.
pub fn parse_mountinfo(text: &[u8]) -> Vec<Mount> {
    lines(text).filter_map(parse_mount).collect()
}

/// `36 25 0:31 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate`:
/// id, parent, dev, root, point, options, optional fields up to `-`, type, source, fs options.
fn parse_mount(line: &[u8]) -> Option<Mount> {
    let mut fields = line.split(|&b| b == b' ');
    let mut next = || fields.next().filter(|f| !f.is_empty());
    let (_id, _parent, _dev) = (next()?, next()?, next()?);
    let root = unescape(next()?)?;
    let point = unescape(next()?)?;
    let options = next()?;
    while next()? != b"-" {}
    let (kind, _source, fs_options) = (next()?, next()?, next()?);
    if kind != b"cgroup2" || !root.starts_with(b"/") || !point.starts_with(b"/") {
        return None;
    }
    let ro = |opts: &[u8]| opts.split(|&b| b == b',').any(|o| o == b"ro");
    Some(Mount {
        point: PathBuf::from(OsStr::from_bytes(&point)),
        root: PathBuf::from(OsStr::from_bytes(&root)),
        read_only: ro(options) || ro(fs_options),
    })
}

/// mountinfo's escapes: space, tab, newline and backslash as `\ooo`. `None` on a bad escape.
fn unescape(field: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(field.len());
    let mut rest = field;
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'\\' {
            let digits = tail.get(..3)?;
            let value = digits.iter().try_fold(0u32, |acc, &d| {
                (b'0'..=b'7').contains(&d).then(|| acc * 8 + u32::from(d - b'0'))
            })?;
            out.push(u8::try_from(value).ok()?);
            rest = &tail[3..];
        } else {
            out.push(b);
            rest = tail;
        }
    }
    Some(out)
}

/// `usage_usec` of a cpu.stat text.
pub fn parse_cpu_usage(text: &[u8]) -> Option<Duration> {
    keyed(text, b"usage_usec").map(Duration::from_micros)
}

/// `oom_kill` of a memory.events text.
pub fn parse_oom_kills(text: &[u8]) -> Option<u64> {
    keyed(text, b"oom_kill")
}

/// `populated` and `frozen` of a cgroup.events text; each must be 0 or 1.
pub fn parse_events(text: &[u8]) -> Option<Events> {
    let flag = |key| match keyed(text, key) {
        Some(0) => Some(false),
        Some(1) => Some(true),
        _ => None,
    };
    Some(Events { populated: flag(b"populated")?, frozen: flag(b"frozen") })
}

/// `some avg10` of a pressure file (`some avg10=1.25 avg60=0.40 avg300=0.10 total=123456`), a
/// percentage, as a ratio: 1.25 is 0.0125. `None` when missing or not a percentage.
pub fn parse_some_avg10(text: &[u8]) -> Option<f64> {
    let line = lines(text).find(|line| line.starts_with(b"some "))?;
    let value = line.split(|&b| b == b' ').find_map(|field| field.strip_prefix(b"avg10="))?;
    let (whole, fraction) = match value.iter().position(|&b| b == b'.') {
        Some(dot) => (&value[..dot], &value[dot + 1..]),
        None => (value, &b""[..]),
    };
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    if whole.is_empty()
        || !digits(whole)
        || !digits(fraction)
        || (value.contains(&b'.') && fraction.is_empty())
    {
        return None;
    }
    let percent: f64 = std::str::from_utf8(value).ok()?.parse().ok()?;
    (percent <= 100.0).then_some(percent / 100.0)
}

/// Appends the pids of a cgroup.procs text to `out` (a pid outside the reader's PID namespace
/// reads as 0 and is skipped, as are lines that are not pids).
pub fn parse_procs(text: &[u8], out: &mut Vec<i32>) {
    out.extend(
        lines(text).filter_map(|line| i32::try_from(parse_u64(line)?).ok()).filter(|&pid| pid > 0),
    );
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::process::Command;

    use nix::sys::signal::{Signal, kill};
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::Pid;
    use proptest::prelude::*;

    use super::*;
    use crate::spawn::{self, ExecStatus, Inherited, Placed, Placement, SpawnError};
    use crate::sys::SigSet;

    // --- Fixtures -----------------------------------------------------------------------------

    /// This machine: Debian 12 guest, Linux 6.18, hybrid (v1 controllers, cgroup2 at
    /// /sys/fs/cgroup/unified), read here.
    const HYBRID_MOUNTINFO: &[u8] = b"\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
45 27 0:22 / /tmp/mmdebstrap.OXvj05xdVT/sys ro,nosuid,nodev,noexec,relatime - sysfs sys rw
";
    const HYBRID_CGROUP: &[u8] = b"\
9:name=systemd:/
8:pids:/
4:memory:/process_api/55fc23be2c8a17a18c77b932dccc6f1a
1:cpu:/
0::/
";
    /// A pure v2 systemd host, in the kernel's format (show_mountinfo, proc_cgroup_show).
    const V2_MOUNTINFO: &[u8] = b"\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
    const V2_CGROUP: &[u8] = b"0::/user.slice/user-1000.slice/session-3.scope\n";
    /// A container with a private cgroup namespace (Docker's default on v2): its cgroup is the
    /// namespace's root, mounted read-only unless privileged.
    const CONTAINER_MOUNTINFO: &[u8] = b"\
612 604 0:27 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate,memory_recursiveprot
";
    /// A container sharing the host's cgroup namespace: the mount's root is its own cgroup.
    const HOST_NS_MOUNTINFO: &[u8] = b"\
701 690 0:27 /system.slice/docker-4f1c.scope /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate
";
    /// memory.events of Linux 6.x (mm/memcontrol.c __memory_events_show) and of 4.19 to 5.18,
    /// which lacks the last two keys. Not read here: memory is a v1 controller on this machine.
    const MEMORY_EVENTS_6: &[u8] =
        b"low 0\nhigh 12\nmax 40\noom 3\noom_kill 2\noom_group_kill 0\nsock_throttled 0\n";
    const MEMORY_EVENTS_4: &[u8] = b"low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n";
    /// Read here from a fresh cgroup after a busy shell, and from the root's cpu.pressure.
    const CPU_STAT: &[u8] = b"usage_usec 267669\nuser_usec 263730\nsystem_usec 3938\nnice_usec 0\n";
    /// With the cpu controller enabled, cpu.stat has more keys, one of which shares a prefix.
    const CPU_STAT_CONTROLLER: &[u8] = b"usage_usec 9081726\nuser_usec 7049870\nsystem_usec 2031856\n\
core_sched.force_idle_usec 0\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\nnr_bursts 0\nburst_usec 0\n";
    const CPU_PRESSURE: &[u8] = b"some avg10=38.40 avg60=30.03 avg300=14.38 total=73882264\n\
full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
    const IO_PRESSURE_IDLE: &[u8] = b"some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n\
full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";

    // --- Discovery and the decision -----------------------------------------------------------

    #[test]
    fn finds_the_unified_mount_of_a_hybrid_system() {
        let own = find_own(HYBRID_CGROUP, HYBRID_MOUNTINFO).unwrap();
        assert_eq!(own.path, Path::new("/"));
        assert_eq!(own.mount, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(own.dir, Path::new("/sys/fs/cgroup/unified"));
        assert!(!own.read_only);
    }

    #[test]
    fn finds_a_session_cgroup_on_a_pure_v2_host() {
        let own = find_own(V2_CGROUP, V2_MOUNTINFO).unwrap();
        assert_eq!(own.dir, Path::new("/sys/fs/cgroup/user.slice/user-1000.slice/session-3.scope"));
        assert_eq!(own.mount, Path::new("/sys/fs/cgroup"));
    }

    #[test]
    fn container_mounts_map_to_the_mount_point() {
        let own = find_own(b"0::/\n", CONTAINER_MOUNTINFO).unwrap();
        assert_eq!(own.dir, Path::new("/sys/fs/cgroup"));
        assert!(own.read_only, "the mount's own ro counts, whatever the filesystem's");
        let own = find_own(b"0::/system.slice/docker-4f1c.scope\n", HOST_NS_MOUNTINFO).unwrap();
        assert_eq!(own.dir, Path::new("/sys/fs/cgroup"));
        let own = find_own(b"0::/system.slice/docker-4f1c.scope/x\n", HOST_NS_MOUNTINFO).unwrap();
        assert_eq!(own.dir, Path::new("/sys/fs/cgroup/x"));
    }

    #[test]
    fn unusable_cgroups_say_why() {
        let err = |cgroup: &[u8], mountinfo: &[u8]| find_own(cgroup, mountinfo).unwrap_err();
        assert!(err(HYBRID_CGROUP, b"").contains("no cgroup2 filesystem"));
        assert!(err(b"1:cpu:/\n", V2_MOUNTINFO).contains("no cgroup v2 line"));
        assert!(err(b"0::/gone (deleted)\n", V2_MOUNTINFO).contains("has been removed"));
        assert!(
            err(b"0::/../../elsewhere\n", V2_MOUNTINFO).contains("outside its cgroup namespace")
        );
        assert!(err(b"0::/system.slice/other\n", HOST_NS_MOUNTINFO).contains("not visible"));
        // A sibling whose name merely starts like the mount's root is not below it.
        assert!(
            err(b"0::/system.slice/docker-4f1c.scopeX\n", HOST_NS_MOUNTINFO)
                .contains("not visible")
        );
        // A mount of the cgroup namespace's parent, as seen from inside: not a way in.
        let outside = b"80 70 0:27 /.. /outer rw - cgroup2 cgroup2 rw\n";
        assert!(err(b"0::/\n", outside).contains("not visible"));
    }

    #[test]
    fn a_writable_view_wins_over_a_read_only_one() {
        let both =
            b"1 0 0:27 / /ro rw - cgroup2 cgroup2 ro\n2 0 0:27 / /rw rw - cgroup2 cgroup2 rw\n";
        let own = find_own(b"0::/a\n", both).unwrap();
        assert_eq!((own.dir.as_path(), own.read_only), (Path::new("/rw/a"), false));
    }

    fn own(path: &str, read_only: bool, delegated: Option<&'static str>) -> Own {
        Own {
            path: PathBuf::from(path),
            mount: PathBuf::from("/sys/fs/cgroup"),
            dir: Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')),
            read_only,
            delegated,
        }
    }

    fn kind(decision: &Decision) -> &'static str {
        match decision {
            Decision::Use { .. } => "use",
            Decision::Proc { .. } => "proc",
            Decision::Fail { .. } => "fail",
        }
    }

    #[test]
    fn the_decision_follows_spec() {
        let missing = || Err("no cgroup2 filesystem is mounted".to_string());
        let plain = || Ok(own("/user.slice/job", false, None));
        // mode, what was found, PID 1, the decision, a word of its reason
        type Case = (Mode, Result<Own, String>, bool, &'static str, &'static str);
        let cases: &[Case] = &[
            (
                Mode::Off,
                Ok(own("/x", false, Some("trusted.delegate"))),
                true,
                "proc",
                "--cgroup off",
            ),
            (Mode::Off, missing(), false, "proc", "--cgroup off"),
            (Mode::On, missing(), false, "fail", "no cgroup2"),
            (Mode::Auto, missing(), true, "proc", "no cgroup2"),
            (Mode::On, Ok(own("/", true, None)), true, "fail", "read-only"),
            (Mode::Auto, Ok(own("/", true, None)), true, "proc", "read-only"),
            (Mode::On, plain(), false, "use", "--cgroup on"),
            (Mode::Auto, plain(), false, "proc", "not delegated"),
            (
                Mode::Auto,
                Ok(own("/svc", false, Some("trusted.delegate"))),
                false,
                "use",
                "trusted.delegate",
            ),
            (
                Mode::Auto,
                Ok(own("/svc", false, Some("user.delegate"))),
                false,
                "use",
                "user.delegate",
            ),
            (Mode::Auto, Ok(own("/", false, None)), true, "use", "PID 1"),
            // PID 1 below the namespace's root (cgroupns=host): not its to manage.
            (
                Mode::Auto,
                Ok(own("/docker/abc", false, None)),
                true,
                "proc",
                "not PID 1 at the root",
            ),
            // At the root but not PID 1 (a shell in a container): neither.
            (Mode::Auto, Ok(own("/", false, None)), false, "proc", "not delegated"),
        ];
        // PID 1 at the root of the whole hierarchy: a host process under `unshare --pid`.
        let host = Facts { own: Ok(own("/", false, None)), pid1: true, hierarchy_root: true };
        let decision = decide(Mode::Auto, &host);
        assert_eq!(kind(&decision), "proc", "{host:?}");
        assert!(format!("{decision:?}").contains("a host's and not a container's"), "{decision:?}");
        for (mode, found, pid1, want, says) in cases {
            let facts = Facts { own: found.clone(), pid1: *pid1, hierarchy_root: false };
            let decision = decide(*mode, &facts);
            let (Decision::Use { why, .. } | Decision::Proc { why } | Decision::Fail { why }) =
                &decision;
            assert_eq!(kind(&decision), *want, "{mode:?} {facts:?}: {decision:?}");
            assert!(why.contains(says), "{mode:?} {facts:?}: {why:?} lacks {says:?}");
            assert!(!why.contains('\n'), "one line: {why:?}");
        }
        let decision =
            decide(Mode::On, &Facts { own: plain(), pid1: false, hierarchy_root: false });
        assert_eq!(
            decision,
            Decision::Use {
                parent: own("/user.slice/job", false, None),
                why: "--cgroup on".into()
            }
        );
    }

    #[test]
    fn systemd_booleans_mark_delegation() {
        for yes in [&b"1"[..], b"yes", b"TRUE", b"on"] {
            assert!(is_true(yes), "{yes:?}");
        }
        for no in [&b"0"[..], b"", b"no", b"2", b"off"] {
            assert!(!is_true(no), "{no:?}");
        }
    }

    // --- Parsers --------------------------------------------------------------------------------

    #[test]
    fn parses_real_files() {
        assert_eq!(parse_proc_cgroup(HYBRID_CGROUP), Some(PathBuf::from("/")));
        assert_eq!(
            parse_proc_cgroup(V2_CGROUP),
            Some(PathBuf::from("/user.slice/user-1000.slice/session-3.scope"))
        );
        assert_eq!(parse_mountinfo(HYBRID_MOUNTINFO).len(), 1);
        assert_eq!(parse_cpu_usage(CPU_STAT), Some(Duration::from_micros(267_669)));
        assert_eq!(parse_cpu_usage(CPU_STAT_CONTROLLER), Some(Duration::from_micros(9_081_726)));
        assert_eq!(parse_oom_kills(MEMORY_EVENTS_6), Some(2));
        assert_eq!(parse_oom_kills(MEMORY_EVENTS_4), Some(1));
        assert_eq!(parse_some_avg10(CPU_PRESSURE), Some(0.384));
        assert_eq!(parse_some_avg10(IO_PRESSURE_IDLE), Some(0.0));
        assert_eq!(
            parse_events(b"populated 1\nfrozen 0\n"),
            Some(Events { populated: true, frozen: Some(false) })
        );
        assert_eq!(parse_events(b"populated 0\n"), Some(Events { populated: false, frozen: None }));
        let mut pids = Vec::new();
        parse_procs(b"15894\n15938\n", &mut pids);
        assert_eq!(pids, [15894, 15938]);
    }

    #[test]
    fn rejects_what_the_kernel_never_writes() {
        assert_eq!(parse_proc_cgroup(b"0::/a\n0::/b\n"), None, "two v2 lines");
        assert_eq!(parse_proc_cgroup(b"0::relative\n"), None);
        assert_eq!(parse_proc_cgroup(b"0::/cut"), None, "no newline: may be cut");
        assert_eq!(parse_cpu_usage(b"usage_usec 12\nusage_usec 13\n"), None);
        assert_eq!(parse_cpu_usage(b"usage_usec -1\n"), None);
        assert_eq!(parse_cpu_usage(b"usage_usec 99999999999999999999999\n"), None);
        assert_eq!(parse_cpu_usage(b"usage_usec 12"), None);
        assert_eq!(parse_events(b"populated 2\n"), None);
        assert_eq!(parse_events(b"frozen 1\n"), None);
        for bad in [
            &b"some avg10=100.01 total=1\n"[..],
            b"some avg10=.5\n",
            b"some avg10=5.\n",
            b"some avg10=-1.00\n",
            b"some avg10=1e2\n",
            b"full avg10=1.00\n",
            b"some avg60=1.00\n",
            b"some avg10=1.00",
        ] {
            assert_eq!(parse_some_avg10(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        let mut pids = Vec::new();
        parse_procs(b"0\n-3\nx\n2147483648\n7\n12", &mut pids);
        assert_eq!(pids, [7]);
        assert!(parse_mountinfo(b"41 31 0:38 / /u rw - cgroup2 cgroup2 rw").is_empty(), "cut line");
        assert!(
            parse_mountinfo(b"41 31 0:38 / /u rw shared:1 cgroup2 cgroup2 rw\n").is_empty(),
            "no -"
        );
        assert!(
            parse_mountinfo(b"41 31 0:38 / /a\\04 rw - cgroup2 cgroup2 rw\n").is_empty(),
            "bad escape"
        );
        assert!(
            parse_mountinfo(b"41 31 0:38 / /a\\777 rw - cgroup2 cgroup2 rw\n").is_empty(),
            "> 255"
        );
    }

    #[test]
    fn mountinfo_unescapes_and_reads_both_read_only_flags() {
        let text =
            b"41 31 0:38 /a\\134b /mnt/my\\040cg\\011x rw,relatime shared:3 master:1 - cgroup2 none ro\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(
            mounts,
            [Mount {
                point: PathBuf::from("/mnt/my cg\tx"),
                root: PathBuf::from("/a\\b"),
                read_only: true
            }]
        );
    }

    fn path_component() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            any::<u8>().prop_filter("no / or newline or NUL", |b| ![b'/', b'\n', 0].contains(b)),
            1..12,
        )
    }

    fn cgroup_path() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(path_component(), 0..5).prop_map(|parts| {
            let mut path = Vec::new();
            for part in parts {
                path.push(b'/');
                path.extend(part);
            }
            if path.is_empty() {
                path.push(b'/');
            }
            path
        })
    }

    fn escape(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &b in bytes {
            if [b' ', b'\t', b'\n', b'\\'].contains(&b) {
                out.extend(format!("\\{b:03o}").bytes());
            } else {
                out.push(b);
            }
        }
        out
    }

    fn mount_line(
        root: &[u8],
        point: &[u8],
        ro_mount: bool,
        ro_fs: bool,
        optional: usize,
    ) -> Vec<u8> {
        let mut line = b"41 31 0:38 ".to_vec();
        line.extend(escape(root));
        line.push(b' ');
        line.extend(escape(point));
        line.extend_from_slice(if ro_mount { b" ro,nosuid" } else { b" rw,nosuid" });
        for i in 0..optional {
            line.extend(format!(" shared:{i}").bytes());
        }
        line.extend_from_slice(b" - cgroup2 cgroup2 ");
        line.extend_from_slice(if ro_fs { b"ro,nsdelegate" } else { b"rw,nsdelegate" });
        line.push(b'\n');
        line
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..max)
    }

    proptest! {
        #[test]
        fn parsers_never_panic_on_arbitrary_bytes(text in bytes(400)) {
            let _ = parse_proc_cgroup(&text);
            let _ = parse_mountinfo(&text);
            let _ = parse_cpu_usage(&text);
            let _ = parse_oom_kills(&text);
            let _ = parse_events(&text);
            if let Some(ratio) = parse_some_avg10(&text) {
                prop_assert!((0.0..=1.0).contains(&ratio));
            }
            let mut pids = Vec::new();
            parse_procs(&text, &mut pids);
            prop_assert!(pids.iter().all(|&p| p > 0));
            let _ = find_own(&text, &text);
        }

        #[test]
        fn parsers_never_panic_on_mangled_real_files(
            which in 0usize..6,
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let real =
                [HYBRID_MOUNTINFO, HYBRID_CGROUP, CPU_STAT, MEMORY_EVENTS_6, CPU_PRESSURE, V2_MOUNTINFO];
            let mut text = real[which].to_vec();
            let i = at.index(text.len());
            text[i] = byte;
            text.truncate(cut.index(text.len() + 1));
            let _ = find_own(&text, &text);
            let _ = (parse_cpu_usage(&text), parse_oom_kills(&text));
            let _ = (parse_some_avg10(&text), parse_events(&text));
        }

        #[test]
        fn proc_cgroup_round_trips(
            path in cgroup_path(),
            v1_before in 0usize..4,
            v1_after in 0usize..4,
            cut in any::<prop::sample::Index>(),
        ) {
            let mut text = Vec::new();
            for i in 0..v1_before {
                text.extend(format!("{}:cpu,cpuacct:/x\n", 9 - i).bytes());
            }
            text.extend_from_slice(b"0::");
            text.extend_from_slice(&path);
            text.push(b'\n');
            for i in 0..v1_after {
                text.extend(format!("{}:name=systemd:/\n", i + 1).bytes());
            }
            let want = PathBuf::from(OsStr::from_bytes(&path));
            prop_assert_eq!(parse_proc_cgroup(&text), Some(want.clone()));
            // A short read gives the path or nothing, never a shortened path.
            let got = parse_proc_cgroup(&text[..cut.index(text.len() + 1)]);
            prop_assert!(got.is_none() || got == Some(want));
        }

        #[test]
        fn mountinfo_round_trips(
            root in cgroup_path(),
            point in cgroup_path(),
            ro_mount in any::<bool>(),
            ro_fs in any::<bool>(),
            optional in 0usize..3, cut in any::<prop::sample::Index>()
        ) {
            let mut text = b"27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n".to_vec();
            text.extend(mount_line(&root, &point, ro_mount, ro_fs, optional));
            let want = Mount {
                point: PathBuf::from(OsStr::from_bytes(&point)),
                root: PathBuf::from(OsStr::from_bytes(&root)),
                read_only: ro_mount || ro_fs,
            };
            prop_assert_eq!(parse_mountinfo(&text), vec![want]);
            // Any strict prefix yields no mount rather than a shortened one.
            let cut = cut.index(text.len());
            prop_assert_eq!(parse_mountinfo(&text[..cut]), Vec::new());
        }

        #[test]
        fn keyed_values_round_trip_in_any_order(
            usage in any::<u64>(),
            oom in any::<u64>(),
            order in Just(vec![
                "user_usec 5", "system_usec 7", "nice_usec 0", "oom 3", "oom_group_kill 1",
                "usage_usec_x 9", "USAGE", "OOM",
            ])
            .prop_shuffle(),
            cut in any::<prop::sample::Index>()
        ) {
            let mut text = String::new();
            for key in &order {
                match *key {
                    "USAGE" => text.push_str(&format!("usage_usec {usage}")),
                    "OOM" => text.push_str(&format!("oom_kill {oom}")),
                    other => text.push_str(other),
                }
                text.push('\n');
            }
            prop_assert_eq!(parse_cpu_usage(text.as_bytes()), Some(Duration::from_micros(usage)));
            prop_assert_eq!(parse_oom_kills(text.as_bytes()), Some(oom));
            // A short read gives the value or nothing, never a shortened number.
            let cut = &text.as_bytes()[..cut.index(text.len() + 1)];
            let usage_cut = parse_cpu_usage(cut);
            prop_assert!(usage_cut.is_none() || usage_cut == Some(Duration::from_micros(usage)));
            let oom_cut = parse_oom_kills(cut);
            prop_assert!(oom_cut.is_none() || oom_cut == Some(oom));
        }

        #[test]
        fn events_round_trip(
            populated in any::<bool>(), frozen in any::<bool>(), frozen_first in any::<bool>()
        ) {
            let p = format!("populated {}\n", u8::from(populated));
            let f = format!("frozen {}\n", u8::from(frozen));
            let text = if frozen_first { f + &p } else { p + &f };
            let want = Events { populated, frozen: Some(frozen) };
            prop_assert_eq!(parse_events(text.as_bytes()), Some(want));
        }

        #[test]
        fn pressure_round_trips_as_a_ratio(
            hundredths in 0u32..=10_000, avg60 in 0u32..=10_000, total in any::<u64>()
        ) {
            let pct = |h: u32| format!("{}.{:02}", h / 100, h % 100);
            let text = format!(
                "some avg10={} avg60={} avg300=0.00 total={total}\n\
                 full avg10=99.99 avg60=0.00 avg300=0.00 total=0\n",
                pct(hundredths), pct(avg60)
            );
            let ratio = parse_some_avg10(text.as_bytes()).unwrap();
            let want = f64::from(hundredths) / 10_000.0;
            prop_assert!((ratio - want).abs() < 1e-12, "{} -> {}", text, ratio);
        }

        #[test]
        fn procs_round_trip_and_a_short_read_only_drops_the_tail(
            pids in prop::collection::vec(1..=i32::MAX, 0..50), cut in any::<prop::sample::Index>()
        ) {
            let text: String = pids.iter().map(|p| format!("{p}\n")).collect();
            let mut out = Vec::new();
            parse_procs(text.as_bytes(), &mut out);
            prop_assert_eq!(&out, &pids);
            out.clear();
            parse_procs(&text.as_bytes()[..cut.index(text.len() + 1)], &mut out);
            prop_assert!(pids.starts_with(&out));
        }
    }

    // --- On the real hierarchy ------------------------------------------------------------------
    // Each test makes a cgroup of its own below the test process's; they skip with one line where
    // that is impossible (not root, no writable cgroup2).

    const DEADLINE: Duration = Duration::from_secs(30);

    fn writable_own() -> Option<Own> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: cgroup tests need root");
            return None;
        }
        match Facts::read().own {
            Ok(own) if !own.read_only => Some(own),
            Ok(own) => {
                eprintln!("skipped: the cgroup2 mount at {} is read-only", own.mount.display());
                None
            }
            Err(why) => {
                eprintln!("skipped: {why}");
                None
            }
        }
    }

    /// Polls `f` until it yields, failing the test after a deadline. The short pause only keeps
    /// the poll from spinning a core.
    fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn temp_file(what: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("watchd-cgroup-{}-{what}", std::process::id()));
        let _ = fs::remove_file(&path);
        path
    }

    /// How a test places its child, by the real spawn path (`spawn::start`).
    #[derive(Debug, Clone, Copy)]
    enum How {
        /// clone3 CLONE_INTO_CGROUP, falling back to fork and join as the driver's spawns do.
        Clone3,
        /// fork, and the child joins through cgroup.procs before exec, as where the kernel
        /// refuses clone3.
        ForkThenJoin,
    }

    /// The spawn options of a test's child: the test thread's signal state, no terminal, and
    /// death with the test thread (so a failing test leaves no child behind).
    fn options(cgroup: Option<Placement>) -> spawn::Options {
        spawn::Options {
            inherited: Inherited { mask: SigSet::current_mask(), sigchld_ignored: false },
            foreground: None,
            pdeathsig: SIGKILL,
            cgroup,
        }
    }

    /// `argv` with the test's environment (absolute paths: no PATH search needed).
    fn command(argv: &[&str]) -> spawn::Command {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
        spawn::Command::new(&argv, &env, false).expect("a command")
    }

    /// Starts `cmd` by the real spawn path and waits for what its exec-status pipe says: the
    /// child's pid (for the caller to reap, whatever the status) and whether exec worked.
    fn start(cmd: &mut spawn::Command, opts: &spawn::Options) -> (i32, ExecStatus) {
        let started = spawn::start(cmd, opts).expect("start the child");
        let deadline = Instant::now() + DEADLINE;
        loop {
            match spawn::exec_status(&started.exec) {
                ExecStatus::Pending => {}
                status => return (started.pid, status),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for the exec of pid {}", started.pid);
            let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
            let mut fds =
                [nix::poll::PollFd::new(started.exec.as_fd(), nix::poll::PollFlags::POLLIN)];
            sys::poll(&mut fds, ms);
        }
    }

    /// A test's own cgroup. On drop, also when the test fails, it kills what is in it, reaps the
    /// test's children and removes it.
    struct TestCgroup {
        cg: Cgroup,
        /// How children are placed in it, one `spawn::Options` per `How`, each kept across the
        /// test's spawns as the driver keeps its own across runs (a clone3 child killed at
        /// birth turns the first to fork and join for good).
        clone3: spawn::Options,
        forked: spawn::Options,
        children: Vec<i32>,
        /// Cgroups the test made inside, standing in for the command.
        inner: Vec<PathBuf>,
    }

    impl TestCgroup {
        fn new(test: &str) -> Option<TestCgroup> {
            let own = writable_own()?;
            let name = format!("watchd-test-{}-{test}", std::process::id());
            let cg = Cgroup::create(&own, &name).expect("create a test cgroup");
            let placement = || {
                Placement::new(cg.dir_fd(), cg.procs_file()).expect("hold the cgroup's directory")
            };
            let clone3 = options(Some(placement()));
            let forked = options(Some(placement().refuse_clone3(libc::ENOSYS)));
            Some(TestCgroup { cg, clone3, forked, children: Vec::new(), inner: Vec::new() })
        }

        fn options(&self, how: How) -> &spawn::Options {
            match how {
                How::Clone3 => &self.clone3,
                How::ForkThenJoin => &self.forked,
            }
        }

        /// How the last child started `how` was placed.
        fn placed(&self, how: How) -> Placed {
            self.options(how).cgroup.as_ref().expect("a placement").last()
        }

        /// Starts `argv` placed as `how` says and returns its pid once it has exec'd. The test
        /// reaps it.
        fn spawn(&mut self, how: How, argv: &[&str]) -> i32 {
            let mut cmd = command(argv);
            let (pid, status) = start(&mut cmd, self.options(how));
            self.children.push(pid);
            assert_eq!(status, ExecStatus::Done, "{how:?} {argv:?}");
            pid
        }

        fn sh(&mut self, script: &str) -> i32 {
            self.spawn(How::Clone3, &["/bin/sh", "-c", script])
        }

        fn reap(&mut self, pid: i32) -> nix::sys::wait::WaitStatus {
            self.children.retain(|&p| p != pid);
            waitpid(Pid::from_raw(pid), None).expect("reap our child")
        }

        fn wait_empty(&self) -> bool {
            self.cg.watch().is_ok_and(|mut watch| watch.wait_for(DEADLINE, |e| !e.populated))
        }

        fn members(&mut self) -> Vec<i32> {
            let mut out = Vec::new();
            assert!(self.cg.members(&mut out), "cgroup.procs readable");
            out
        }
    }

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            let _ = self.cg.kill();
            // A test may have removed it already.
            let emptied = !self.cg.dir().exists() || self.wait_empty();
            for pid in self.children.drain(..) {
                // Our own unreaped child, so the pid is still its: also reaches one that a
                // failing test left outside the cgroup.
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = waitpid(Pid::from_raw(pid), None);
            }
            for dir in self.inner.drain(..).rev() {
                let _ = fs::remove_dir(dir);
            }
            let removed = wait_removed(&mut self.cg);
            if !std::thread::panicking() {
                assert!(emptied, "test cgroup {} did not empty", self.cg.dir().display());
                removed.expect("remove the test cgroup");
            }
        }
    }

    /// What the supervisor does after `populated 0`: remove, retrying while the kernel still
    /// counts the cgroup busy.
    fn wait_removed(cg: &mut Cgroup) -> Result<Duration, RemoveError> {
        let start = Instant::now();
        loop {
            match cg.remove() {
                Ok(()) => return Ok(start.elapsed()),
                Err(RemoveError::Populated) if start.elapsed() < DEADLINE => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(err) => return Err(err),
            }
        }
    }

    fn read_pid_file(path: &Path) -> Option<i32> {
        let text = fs::read_to_string(path).ok()?;
        text.strip_suffix('\n')?.parse().ok()
    }

    #[test]
    fn the_child_is_in_the_cgroup_from_before_its_exec() {
        let Some(mut t) = TestCgroup::new("placed") else { return };
        let out = temp_file("placed");
        let hows: [(How, &str); 2] = [(How::Clone3, "clone3"), (How::ForkThenJoin, "fork+join")];
        for (how, name) in hows {
            // The exec'd program reads its own cgroup as its first act (sh opens the file, then
            // becomes cat).
            let pid = t.spawn(
                how,
                &["/bin/sh", "-c", r#"exec cat /proc/self/cgroup > "$0""#, out.to_str().unwrap()],
            );
            assert!(t.reap(pid).pid().is_some());
            let text = fs::read(&out).unwrap();
            assert_eq!(
                parse_proc_cgroup(&text).as_deref(),
                Some(t.cg.path()),
                "{name}: {}",
                String::from_utf8_lossy(&text)
            );
            let placed = t.placed(how);
            match (name, placed) {
                ("clone3", Placed::Clone3) => {}
                ("clone3", Placed::Refused(libc::ENOSYS | libc::E2BIG | libc::EPERM)) => {
                    eprintln!("this kernel refuses clone3 CLONE_INTO_CGROUP: {placed:?}")
                }
                // Set by `refuse_clone3`, and left so: no clone3 was tried.
                ("fork+join", Placed::Refused(libc::ENOSYS)) => {}
                _ => panic!("{name}: placed {placed:?}"),
            }
            // A long-lived one, seen from outside.
            let sleep = t.spawn(how, &["/bin/sleep", "1000"]);
            let cgroup = fs::read(format!("/proc/{sleep}/cgroup")).unwrap();
            assert_eq!(parse_proc_cgroup(&cgroup).as_deref(), Some(t.cg.path()));
            assert_eq!(
                fs::read_to_string(format!("/proc/{sleep}/comm")).unwrap(),
                "sleep\n",
                "exec'd"
            );
            assert_eq!(t.members(), [sleep]);
            kill(Pid::from_raw(sleep), Signal::SIGKILL).unwrap();
            t.reap(sleep);
        }
        let _ = fs::remove_file(out);
    }

    #[test]
    fn spawn_failures_are_reported() {
        let Some(mut t) = TestCgroup::new("fail") else { return };
        for how in [How::Clone3, How::ForkThenJoin] {
            let mut cmd = command(&["/nonexistent/program"]);
            let (pid, status) = start(&mut cmd, t.options(how));
            t.children.push(pid);
            assert_eq!(status, ExecStatus::Failed(libc::ENOENT), "{how:?}");
            assert_eq!(
                cmd.failure(libc::ENOENT),
                SpawnError::NotFound(
                    "cannot run '/nonexistent/program': No such file or directory".to_string()
                )
            );
            assert_eq!(t.reap(pid), WaitStatus::Exited(Pid::from_raw(pid), 127), "{how:?}");
        }
        let no_argv: &[OsString] = &[];
        assert!(matches!(spawn::Command::new(no_argv, &[], false), Err(SpawnError::Internal(_))));
        // A cgroup the child cannot join: it says so on the pipe and never execs.
        let unjoinable = Placement::new(t.cg.dir_fd(), c"/nonexistent/cgroup.procs").unwrap();
        let opts = options(Some(unjoinable.refuse_clone3(libc::ENOSYS)));
        let (pid, status) = start(&mut command(&["/bin/true"]), &opts);
        t.children.push(pid);
        assert_eq!(status, ExecStatus::JoinFailed(libc::ENOENT));
        assert_eq!(t.reap(pid), WaitStatus::Exited(Pid::from_raw(pid), 125));
        assert!(t.members().is_empty(), "the failed children were reaped");
    }

    #[test]
    fn a_setsid_double_forked_escapee_is_still_a_member() {
        let Some(mut t) = TestCgroup::new("escapee") else { return };
        let file = temp_file("escapee");
        let sh = t.sh(&format!("setsid /bin/sh -c 'sleep 1000 & echo $! > {}'", file.display()));
        t.reap(sh);
        let escapee = wait_for("the escapee's pid", || read_pid_file(&file));
        let stat = fs::read(format!("/proc/{escapee}/stat")).unwrap();
        let ppid = crate::probe::parse_stat(&stat).unwrap().ppid;
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(ppid != me && ppid != sh, "reparented away from us: ppid {ppid}");
        let session = nix::unistd::getsid(Some(Pid::from_raw(escapee))).unwrap();
        assert_ne!(session, nix::unistd::getsid(None).unwrap(), "in a session of its own");
        assert_eq!(t.members(), [escapee], "out of the /proc tree, not out of the cgroup");
        let _ = fs::remove_file(file);
    }

    #[test]
    fn an_idle_tree_costs_one_stat_and_a_stopped_one_is_still_seen_stopped() {
        use crate::probe::{Needs, Prober, Sampler};
        let Some(mut t) = TestCgroup::new("idle-scan") else { return };
        t.sh("sleep 1000 & sleep 1000 & wait");
        wait_for("3 members", || (t.members().len() == 3).then_some(()));
        // The prober's own handle on the test's cgroup (dropped first: its rmdir fails while
        // the cgroup is populated, and the test cgroup's drop removes it).
        let same = Cgroup::open(t.cg.dir(), t.cg.path().to_path_buf()).unwrap();
        let me = i32::try_from(std::process::id()).unwrap();
        let cpu_only = Needs { io: false, stat: false };
        let mut prober = Prober::new(me).with_needs(cpu_only).with_cgroup(same);
        let mut sampler = Sampler::new();
        let mut at = Duration::ZERO;
        let mut probe = |prober: &mut Prober| {
            at += Duration::from_millis(100);
            let scan = prober.scan(&[]);
            let sample = sampler.sample(&scan, at);
            (scan, sample)
        };
        // Asleep, whether the CPU grew since the last scan or not: no figure is read (one stat
        // at most, which shows a running member), and the tree is not all stopped.
        for _ in 0..5 {
            let (scan, sample) = probe(&mut prober);
            assert!(!scan.stats, "an idle tree's scan read every stat: {scan:?}");
            assert_eq!((sample.processes, sample.all_stopped), (3, false));
            std::thread::sleep(Duration::from_millis(20));
        }
        // Stopped: once the CPU the stop cost is counted, a scan reads every stat.
        let members = t.members();
        for &pid in &members {
            kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
        }
        let (scan, sample) = wait_for("a scan that reads the stopped tree's stats", || {
            std::thread::sleep(Duration::from_millis(20));
            Some(probe(&mut prober)).filter(|(scan, _)| scan.stats)
        });
        assert!(scan.procs.iter().all(|p| p.state == b'T'), "{scan:?}");
        assert!(sample.all_stopped && sample.rss_bytes.is_some_and(|r| r > 0), "{sample:?}");
        for &pid in &members {
            kill(Pid::from_raw(pid), Signal::SIGCONT).unwrap();
        }
        wait_for("a scan of the resumed tree", || {
            std::thread::sleep(Duration::from_millis(20));
            let (scan, sample) = probe(&mut prober);
            (!scan.stats && !sample.all_stopped).then_some(())
        });
        // Asked for resident memory: every scan reads every stat.
        let mut prober = prober.with_needs(Needs { io: false, stat: true });
        for _ in 0..3 {
            assert!(prober.scan(&[]).stats);
        }
    }

    #[test]
    fn cpu_of_300_short_processes_in_a_row_is_counted_exactly() {
        let Some(mut t) = TestCgroup::new("cpu") else { return };
        // A make-like parent: 300 short compilers one after another, each gone before the next.
        let script = "i=0; while [ $i -lt 300 ]; do \
                      /bin/sh -c 'j=0; while [ $j -lt 2000 ]; do j=$((j+1)); done'; i=$((i+1)); done";
        let pid = t.sh(script);
        t.children.retain(|&p| p != pid);
        let (status, used) = sys::wait_with_cpu(pid).expect("wait4");
        assert_eq!(status, 0);
        let counted = t.cg.cpu_usage().expect("cpu.stat");
        eprintln!("300 processes used {used:?} (wait4); cpu.stat counted {counted:?}");
        assert!(used > Duration::from_millis(100), "the test did real work: {used:?}");
        let diff = counted.abs_diff(used);
        assert!(diff <= used / 50, "cpu.stat {counted:?} vs wait4 {used:?}: off by {diff:?}");
    }

    #[test]
    fn a_pid_hopper_dies_at_the_first_kill() {
        let Some(mut t) = TestCgroup::new("hopper") else { return };
        // Each instance starts the next and exits: the tree is never the same process for long.
        let hop = r#"sh -c "$0" "$0" &"#;
        let first = t.spawn(How::Clone3, &["/bin/sh", "-c", hop, hop]);
        t.reap(first);
        let before = wait_for("hopper running", || Some(t.members()).filter(|m| !m.is_empty()));
        wait_for("hopper hopping", || {
            Some(()).filter(|()| {
                let now = t.members();
                !now.is_empty() && now.iter().all(|p| !before.contains(p))
            })
        });
        assert_eq!(t.cg.kill().unwrap(), Killed::CgroupKill);
        assert!(t.wait_empty(), "one cgroup.kill left {:?}", t.members());
        assert!(t.members().is_empty());
    }

    #[test]
    fn a_fork_storm_dies_at_the_first_kill() {
        let Some(mut t) = TestCgroup::new("storm") else { return };
        // 5,000 forks from five forkers at once.
        let storm = "for j in 1 2 3 4 5; do \
                     (i=0; while [ $i -lt 1000 ]; do sleep 1000 & i=$((i+1)); done; wait) & \
                     done; wait";
        t.sh(storm);
        wait_for("the storm under way", || (t.members().len() >= 1000).then_some(()));
        let at_kill = t.members().len();
        let start = Instant::now();
        assert_eq!(t.cg.kill().unwrap(), Killed::CgroupKill);
        assert!(t.wait_empty(), "one cgroup.kill left {} processes", t.members().len());
        eprintln!(
            "storm: {at_kill} processes when killed; empty {:?} after one cgroup.kill",
            start.elapsed()
        );
        assert!(t.members().is_empty());
    }

    #[test]
    fn the_freezing_kill_stops_a_hopper_and_thaws() {
        let Some(mut t) = TestCgroup::new("freeze") else { return };
        let hop = r#"sh -c "$0" "$0" &"#;
        let first = t.spawn(How::Clone3, &["/bin/sh", "-c", hop, hop]);
        t.reap(first);
        let sleeper = t.sh("sleep 1000 & sleep 1000 & wait");
        // sh, both its sleeps, and at least one hopper: the sleeps must be counted by name, as
        // a hopper may be two processes for a moment.
        let sleeps = |members: &[i32]| {
            let comm = |pid| fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            members.iter().filter(|&&pid| comm(pid) == "sleep\n").count()
        };
        wait_for("hopper and sleepers", || {
            let members = t.members();
            (sleeps(&members) == 2 && members.len() >= 4).then_some(())
        });
        let signalled = t.cg.kill_by_freezing().expect("freeze, kill, thaw");
        assert!(signalled >= 4, "signalled {signalled}");
        assert!(t.wait_empty(), "the freezing kill left {:?}", t.members());
        assert_eq!(t.cg.events().and_then(|e| e.frozen), Some(false), "thawed for the next run");
        assert!(t.reap(sleeper).pid().is_some());
    }

    #[test]
    fn only_members_are_signalled_through_a_pidfd() {
        let Some(mut t) = TestCgroup::new("stranger") else { return };
        // No cgroup: it stays in ours.
        let (stranger, status) = start(&mut command(&["/bin/sleep", "1000"]), &options(None));
        let cgroup = fs::read(format!("/proc/{stranger}/cgroup")).unwrap_or_default();
        let outside = parse_proc_cgroup(&cgroup).is_some_and(|c| !c.starts_with(t.cg.path()));
        let refused = !t.cg.signal(stranger, SIGKILL);
        let alive = waitpid(Pid::from_raw(stranger), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        kill(Pid::from_raw(stranger), Signal::SIGKILL).unwrap();
        waitpid(Pid::from_raw(stranger), None).unwrap();
        assert!(status == ExecStatus::Done && outside, "{status:?}: {cgroup:?}");
        assert!(refused && alive == Ok(nix::sys::wait::WaitStatus::StillAlive), "{alive:?}");
        let member = t.spawn(How::Clone3, &["/bin/sleep", "1000"]);
        assert!(t.cg.signal(member, crate::signals::SIGTERM));
        assert_eq!(
            t.reap(member),
            nix::sys::wait::WaitStatus::Signaled(Pid::from_raw(member), Signal::SIGTERM, false)
        );
        assert!(!t.cg.signal(1, SIGKILL), "never init");
    }

    #[test]
    fn cgroup_events_wakes_a_poll_loop_when_the_last_member_exits() {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let Some(mut t) = TestCgroup::new("poll") else { return };
        let sleep = t.spawn(How::Clone3, &["/bin/sleep", "1000"]);
        let mut watch = t.cg.watch().unwrap();
        assert_eq!(watch.read(), Some(Events { populated: true, frozen: Some(false) }));
        let mut fds = [PollFd::new(watch.as_fd(), PollFlags::POLLPRI)];
        assert_eq!(poll(&mut fds, PollTimeout::from(50u16)), Ok(0), "nothing changed, no event");
        kill(Pid::from_raw(sleep), Signal::SIGKILL).unwrap();
        assert_eq!(poll(&mut fds, PollTimeout::from(10_000u16)), Ok(1), "an event when it empties");
        let revents = fds[0].revents().unwrap();
        assert!(revents.contains(PollFlags::POLLPRI | PollFlags::POLLERR), "{revents:?}");
        assert_eq!(watch.read(), Some(Events { populated: false, frozen: Some(false) }));
        // Read again: re-armed, quiet until the next change.
        let mut fds = [PollFd::new(watch.as_fd(), PollFlags::POLLPRI)];
        assert_eq!(poll(&mut fds, PollTimeout::from(50u16)), Ok(0));
        t.reap(sleep);
    }

    #[test]
    fn one_cgroup_serves_several_runs_and_is_removed_when_empty() {
        let Some(mut t) = TestCgroup::new("runs") else { return };
        for run in 1..=3 {
            let sleep = t.spawn(How::Clone3, &["/bin/sleep", "1000"]);
            let placed = t.placed(How::Clone3);
            // After a cgroup.kill, this kernel kills clone3 children at birth: the spawn notices
            // and places them by fork and join instead.
            match (run, placed) {
                (1, Placed::Clone3) | (2.., Placed::Clone3 | Placed::KilledAtBirth) => {}
                _ => panic!("run {run}: {placed:?}"),
            }
            eprintln!("run {run}: {placed:?}");
            assert_eq!(t.members(), [sleep], "run {run}");
            assert_eq!(fs::read_to_string(format!("/proc/{sleep}/comm")).unwrap(), "sleep\n");
            assert!(matches!(t.cg.remove(), Err(RemoveError::Populated)), "not while populated");
            assert!(t.cg.dir().exists());
            assert_eq!(t.cg.kill().unwrap(), Killed::CgroupKill);
            assert!(t.wait_empty());
            t.reap(sleep);
        }
        let dir = t.cg.dir().to_path_buf();
        let took = wait_removed(&mut t.cg).expect("removed once empty");
        eprintln!("removed {took:?} after populated 0");
        assert!(!dir.exists());
        assert!(t.cg.remove().is_ok(), "already gone is done");
    }

    #[test]
    fn members_include_cgroups_the_command_made_and_removal_leaves_those() {
        let Some(mut t) = TestCgroup::new("inner") else { return };
        let sleep = t.spawn(How::Clone3, &["/bin/sleep", "1000"]);
        let outer = t.spawn(How::Clone3, &["/bin/sleep", "1000"]);
        let inner = t.cg.dir().join("made-by-the-command");
        fs::create_dir(&inner).unwrap();
        t.inner.push(inner.clone());
        fs::write(inner.join("cgroup.procs"), sleep.to_string()).unwrap();
        assert_eq!(t.members(), [sleep.min(outer), sleep.max(outer)]);
        assert_eq!(t.cg.kill().unwrap(), Killed::CgroupKill);
        assert!(t.wait_empty(), "the kill reaches inner cgroups");
        t.reap(sleep);
        t.reap(outer);
        assert!(matches!(t.cg.remove(), Err(RemoveError::HoldsCgroups)));
        assert!(inner.exists(), "not watchd's to remove");
        fs::remove_dir(&inner).unwrap();
        t.inner.clear();
    }

    #[test]
    fn pressure_and_missing_controllers_read_as_they_are() {
        let Some(mut t) = TestCgroup::new("pressure") else { return };
        let pressure = t.cg.pressure();
        for (name, ratio) in
            [("cpu", pressure.cpu), ("io", pressure.io), ("memory", pressure.memory)]
        {
            let exists = t.cg.dir().join(format!("{name}.pressure")).exists();
            assert_eq!(ratio.is_some(), exists, "{name}: {ratio:?}");
            assert!(ratio.is_none_or(|r| (0.0..=1.0).contains(&r)));
        }
        let has_memory = t.cg.dir().join("memory.events").exists();
        assert_eq!(t.cg.oom_kills().is_some(), has_memory);
        assert_eq!(t.cg.cpu_usage(), Some(Duration::ZERO), "nothing has run in it");
        assert_eq!(t.cg.events(), Some(Events { populated: false, frozen: Some(false) }));
    }

    #[test]
    fn a_taken_name_gets_a_suffix_and_the_old_one_is_left_alone() {
        let Some(own) = writable_own() else { return };
        let name = format!("watchd-test-{}-taken", std::process::id());
        let mut first = Cgroup::create(&own, &name).unwrap();
        let second = Cgroup::create(&own, &name);
        let first_dir = first.dir().to_path_buf();
        let mut second = second.unwrap();
        assert_eq!(second.dir(), own.dir.join(format!("{name}.2")));
        assert_eq!(second.path(), own.path.join(format!("{name}.2")));
        second.remove().unwrap();
        first.remove().unwrap();
        assert!(!first_dir.exists());
    }

    #[test]
    fn the_delegation_mark_is_read() {
        let Some(t) = TestCgroup::new("delegated") else { return };
        assert_eq!(delegation(t.cg.dir()), None);
        sys::cgroup::setxattr(t.cg.dir(), c"trusted.delegate", b"1").unwrap();
        assert_eq!(delegation(t.cg.dir()), Some("trusted.delegate"));
        let Some(u) = TestCgroup::new("user-delegated") else { return };
        match sys::cgroup::setxattr(u.cg.dir(), c"user.delegate", b"1") {
            Ok(()) => assert_eq!(delegation(u.cg.dir()), Some("user.delegate")),
            Err(err) => eprintln!("skipped user.delegate: {err}"),
        }
        sys::cgroup::setxattr(u.cg.dir(), c"trusted.delegate", b"0").unwrap();
        assert_ne!(delegation(u.cg.dir()), Some("trusted.delegate"), "0 is not a mark");
    }

    // --- Measurements: `cargo test --release --lib cgroup::tests::measure -- --ignored
    // --nocapture --test-threads 1` (root). They print figures and assert only that the work
    // was done.

    /// Median and 10th percentile of per-call times in µs: this machine is shared, and a mean
    /// mostly measures the neighbours.
    fn summary(samples: &mut [Duration]) -> String {
        samples.sort_unstable();
        let at = |q: usize| samples[samples.len() * q / 100].as_secs_f64() * 1e6;
        format!(
            "median {:.1} µs (p10 {:.1}, p90 {:.1}, n={})",
            at(50),
            at(10),
            at(90),
            samples.len()
        )
    }

    fn timed(samples: &mut Vec<Duration>, f: impl FnOnce()) {
        let start = Instant::now();
        f();
        samples.push(start.elapsed());
    }

    #[test]
    #[ignore = "measurement"]
    fn measure_spawn_clone3_vs_fork() {
        let Some(t) = TestCgroup::new("measure-spawn") else { return };
        // The real spawn path three ways, each with the whole of it: process group, parent-death
        // signal, signal state, the exec-status pipe (and for clone3, waiting for the birth
        // byte).
        let nowhere = options(None);
        let ways = [t.options(How::Clone3), t.options(How::ForkThenJoin), &nowhere];
        let mut cmd = command(&["/bin/true"]);
        let mut samples = [Vec::new(), Vec::new(), Vec::new()];
        // Interleaved, so a busy neighbour weighs on all three alike.
        for _ in 0..1000 {
            for (i, opts) in ways.iter().enumerate() {
                timed(&mut samples[i], || {
                    let (pid, status) = start(&mut cmd, opts);
                    let pid = Pid::from_raw(pid);
                    let end = waitpid(pid, None);
                    assert_eq!(status, ExecStatus::Done, "way {i}");
                    assert_eq!(end, Ok(WaitStatus::Exited(pid, 0)));
                });
            }
        }
        assert_eq!(t.placed(How::Clone3), Placed::Clone3, "the clone3 figures are clone3's");
        let names = ["clone3 CLONE_INTO_CGROUP", "fork + join via cgroup.procs", "plain fork"];
        for (name, samples) in names.iter().zip(&mut samples) {
            eprintln!("spawn, exec and reap /bin/true, {name}: {}", summary(samples));
        }
    }

    /// A cgroup holding sh and 1,000 sleeps; returns sh's pid.
    fn thousand(t: &mut TestCgroup) -> i32 {
        let sh = t.sh("i=0; while [ $i -lt 1000 ]; do sleep 1000 & i=$((i+1)); done; wait");
        wait_for("1,001 members", || (t.members().len() == 1001).then_some(()));
        sh
    }

    #[test]
    #[ignore = "measurement"]
    fn measure_reading_a_1000_process_cgroup() {
        let Some(mut t) = TestCgroup::new("measure-read") else { return };
        let sh = thousand(&mut t);
        let mut prober = crate::probe::Prober::new(sh);
        let mut out = Vec::new();
        let mut s: [Vec<Duration>; 6] = Default::default();
        for round in 0..2000 {
            let cg = &mut t.cg;
            timed(&mut s[0], || assert!(cg.cpu_usage().is_some()));
            timed(&mut s[1], || assert!(cg.members(&mut out) && out.len() == 1001));
            timed(&mut s[2], || assert!(cg.members(&mut out) && cg.cpu_usage().is_some()));
            timed(&mut s[3], || assert!(cg.pressure().cpu.is_some()));
            timed(&mut s[4], || assert!(cg.events().is_some()));
            if round % 50 == 0 {
                timed(&mut s[5], || assert_eq!(prober.scan(&[]).procs.len(), 1000));
            }
        }
        let names = [
            "cpu.stat",
            "members (cgroup.procs + cgroup.stat)",
            "members + cpu.stat",
            "3 pressure files",
            "cgroup.events",
            "for comparison, the /proc walk and read of the same tree",
        ];
        for (name, samples) in names.iter().zip(&mut s) {
            eprintln!("1,001 processes, {name}: {}", summary(samples));
        }
    }

    #[test]
    #[ignore = "measurement"]
    fn measure_killing_a_1000_process_cgroup() {
        let Some(mut t) = TestCgroup::new("measure-kill") else { return };
        for round in 0..6 {
            let sh = thousand(&mut t);
            let mut watch = t.cg.watch().unwrap();
            let start = Instant::now();
            let how = if round % 2 == 0 {
                t.cg.kill().unwrap()
            } else {
                Killed::Frozen { signalled: t.cg.kill_by_freezing().unwrap() }
            };
            let written = start.elapsed();
            assert!(watch.wait_for(DEADLINE, |e| !e.populated));
            let empty = start.elapsed();
            t.reap(sh);
            eprintln!(
                "kill 1,001 processes by {how:?}: the call took {:.1} ms, populated 0 after {:.1} ms",
                written.as_secs_f64() * 1e3,
                empty.as_secs_f64() * 1e3
            );
        }
    }

    #[test]
    fn on_fails_on_a_read_only_cgroup_mount_and_creates_nothing() {
        let Some(own) = writable_own() else { return };
        if Command::new("unshare").arg("--version").output().is_err() {
            eprintln!("skipped: no unshare(1)");
            return;
        }
        let name = format!("watchd-test-{}-ro", std::process::id());
        // A private mount namespace where the cgroup2 mount is read-only; the test binary runs
        // `read_only_mount_child` there.
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(concat!(
                r#"mount -o remount,bind,ro "$1" && exec "$0" "#,
                "--exact cgroup::tests::read_only_mount_child --ignored --nocapture --test-threads 1"
            ))
            .arg(std::env::current_exe().unwrap())
            .arg(&own.mount)
            .env("WATCHD_TEST_RO_NAME", &name)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("read-only child: checked"), "the child test ran: {text}");
        assert!(!own.dir.join(&name).exists());
        assert!(!Facts::read().own.unwrap().read_only, "our own namespace kept its writable mount");
    }

    #[test]
    #[ignore = "run by on_fails_on_a_read_only_cgroup_mount_and_creates_nothing in unshare -m"]
    fn read_only_mount_child() {
        let Ok(name) = std::env::var("WATCHD_TEST_RO_NAME") else {
            eprintln!(
                "skipped: only run by on_fails_on_a_read_only_cgroup_mount_and_creates_nothing"
            );
            return;
        };
        let facts = Facts::read();
        let own = facts.own.clone().expect("watchd's cgroup");
        assert!(own.read_only, "{own:?}");
        match decide(Mode::On, &facts) {
            Decision::Fail { why } => assert!(why.contains("read-only"), "{why}"),
            other => panic!("--cgroup on on a read-only mount: {other:?}"),
        }
        assert_eq!(kind(&decide(Mode::Auto, &facts)), "proc");
        // Past the decision, the kernel refuses too.
        let err = Cgroup::create(&own, &name).unwrap_err();
        assert!(err.contains("Read-only file system"), "{err}");
        println!("read-only child: checked ({err})");
    }
}
