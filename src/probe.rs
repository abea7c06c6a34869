//! /proc readings -> typed samples: the stat/io parsers, the process-tree scan, and the sampler
//! that turns successive scans into monotone totals. No decisions are made here.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

/// Fields of `/proc/<pid>/stat` watchd uses.
///
/// Field numbers below are 0-based and counted after the `)` that closes comm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    /// 0: one of `RSDZTtXxKWPI`.
    pub state: u8,
    /// 1.
    pub ppid: i32,
    /// 2.
    pub pgrp: i32,
    /// 11, clock ticks.
    pub utime: u64,
    /// 12, clock ticks.
    pub stime: u64,
    /// 13, clock ticks of reaped children.
    pub cutime: u64,
    /// 14, clock ticks of reaped children.
    pub cstime: u64,
    /// 19, clock ticks after boot; with `pid` it names a process across pid reuse.
    pub starttime: u64,
    /// 21, resident set size in pages.
    pub rss_pages: u64,
}

/// Parses one `/proc/<pid>/stat` line.
///
/// comm is whatever lies between the first `(` and the LAST `)`: it may hold spaces, `(`, `)` and
/// newlines, and the fields after it never contain `)`. Returns `None` on anything malformed or
/// truncated. Truncation rule: every field up to and including rss must be present and followed by
/// its delimiter (a space, or a newline after rss), so a line cut inside a number is rejected
/// instead of yielding a shortened value; fields after rss are ignored, which keeps the parser
/// indifferent to fields that future kernels append.
pub fn parse_stat(text: &[u8]) -> Option<Stat> {
    let open = text.iter().position(|&b| b == b'(')?;
    let pid = parse_i32(text[..open].strip_suffix(b" ")?)?;
    let close = text.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let mut f = Fields { rest: text[close + 1..].strip_prefix(b" ")? };
    let state = match f.next(false)? {
        &[s] if s.is_ascii_alphabetic() => s,
        _ => return None,
    };
    let ppid = parse_i32(f.next(false)?)?;
    let pgrp = parse_i32(f.next(false)?)?;
    f.skip(3..=10)?; // session, tty_nr, tpgid, flags, minflt, cminflt, majflt, cmajflt
    let utime = parse_u64(f.next(false)?)?;
    let stime = parse_u64(f.next(false)?)?;
    let cutime = parse_u64(f.next(false)?)?;
    let cstime = parse_u64(f.next(false)?)?;
    f.skip(15..=18)?; // priority, nice, num_threads, itrealvalue
    let starttime = parse_u64(f.next(false)?)?;
    f.skip(20..=20)?; // vsize
    let rss_pages = parse_u64(f.next(true)?)?;
    Some(Stat { pid, state, ppid, pgrp, utime, stime, cutime, cstime, starttime, rss_pages })
}

/// Field 17 (num_threads) of a stat line: the tree walk reads one thread's children file when
/// it is 1, and lists `task/` otherwise. `None` when it is not a plain count.
fn parse_threads(text: &[u8]) -> Option<u64> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let mut f = Fields { rest: text[close + 1..].strip_prefix(b" ")? };
    f.next(false)?; // state
    f.skip(1..=16)?;
    parse_u64(f.next(false)?)
}

/// The space-separated fields after comm's `)`.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    /// The next non-empty field. It must be followed by a space, or, when `last`, by a space or a
    /// newline: an unterminated field may have been cut short.
    fn next(&mut self, last: bool) -> Option<&'a [u8]> {
        let end = self.rest.iter().position(|&b| b == b' ' || b == b'\n')?;
        if end == 0 || (self.rest[end] == b'\n' && !last) {
            return None;
        }
        let field = &self.rest[..end];
        self.rest = &self.rest[end + 1..];
        Some(field)
    }

    /// Skips fields we do not use, still insisting that each one is an integer.
    fn skip(&mut self, fields: std::ops::RangeInclusive<usize>) -> Option<()> {
        for _ in fields {
            let field = self.next(false)?;
            let digits = field.strip_prefix(b"-").unwrap_or(field);
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
        }
        Some(())
    }
}

/// Decimal digits only: no sign, no `+`, no spaces, no overflow.
fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

fn parse_i32(s: &[u8]) -> Option<i32> {
    let (negative, digits) = match s.strip_prefix(b"-") {
        Some(digits) => (true, digits),
        None => (false, s),
    };
    let magnitude = i64::try_from(parse_u64(digits)?).ok()?;
    i32::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// rchar + wchar of `/proc/<pid>/io` (bytes passed through read/write-like calls, cache hits
/// included, which is what "the process is doing I/O" means for stall detection).
///
/// Only newline-terminated lines count, so a truncated read cannot shorten a number. `None` when
/// either key is missing, repeated or has a value that is not a plain decimal.
pub fn parse_io(text: &[u8]) -> Option<u64> {
    let mut rchar = None;
    let mut wchar = None;
    let mut rest = text;
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        let (slot, value) = if let Some(value) = line.strip_prefix(b"rchar:") {
            (&mut rchar, value)
        } else if let Some(value) = line.strip_prefix(b"wchar:") {
            (&mut wchar, value)
        } else {
            continue;
        };
        if slot.is_some() {
            return None;
        }
        let start = value.iter().position(|&b| b != b' ' && b != b'\t')?;
        *slot = Some(parse_u64(&value[start..])?);
    }
    Some(rchar?.saturating_add(wchar?))
}

/// One process of the tree as seen by one scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub starttime: u64,
    pub state: u8,
    /// utime + stime + cutime + cstime.
    pub ticks: u64,
    /// `None` when `/proc/<pid>/io` was unreadable.
    pub io_bytes: Option<u64>,
    /// 0 for zombies.
    pub rss_bytes: u64,
}

/// One scan of the tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Tree members, zombies included (state `b'Z'`).
    pub procs: Vec<Proc>,
    /// cutime + cstime of watchd itself: the CPU of the children it has reaped, which vanished
    /// from `procs` when they were reaped.
    pub reaped_ticks: u64,
}

/// Reads the process tree below `root` from /proc.
///
/// All buffers live here and keep their capacity across scans, so a scan allocates only the
/// `Vec` it returns (plus libc's directory stream).
#[derive(Debug)]
pub struct Prober {
    root: i32,
    clk_tck: u64,
    page_size: u64,
    /// Last good reading, reused when `/proc/<root>/stat` cannot be read: it only grows.
    reaped_ticks: u64,
    pids: Vec<i32>,
    /// Every readable stat of this scan, sorted by ppid so children are a contiguous range.
    stats: Vec<Stat>,
    /// Indices into `stats` of the tree members, in breadth-first order.
    members: Vec<usize>,
    /// Whether this kernel has `/proc/<pid>/task/<tid>/children` (CONFIG_PROC_CHILDREN); learnt
    /// on the first scan.
    children_files: Option<bool>,
    /// The tree walk's queue: (pid, threads) of members still to visit.
    queue: Vec<(i32, u64)>,
    /// Pids listed by the children files being read, and tids of a multi-threaded member.
    kids: Vec<i32>,
    tids: Vec<i32>,
    /// Pids already in `queue`: a process reparented during the walk is listed twice.
    seen: std::collections::HashSet<i32>,
    path: Vec<u8>,
    buf: Vec<u8>,
}

/// Upper bound for one /proc file we read; a stat line is well under 1 KiB.
const MAX_FILE: usize = 64 * 1024;

impl Prober {
    /// `root` is watchd's own pid.
    pub fn new(root: i32) -> Prober {
        Prober {
            root,
            clk_tck: sysconf(libc::_SC_CLK_TCK).unwrap_or(100),
            page_size: sysconf(libc::_SC_PAGESIZE).unwrap_or(4096),
            reaped_ticks: 0,
            pids: Vec::new(),
            stats: Vec::new(),
            members: Vec::new(),
            children_files: None,
            queue: Vec::new(),
            kids: Vec::new(),
            tids: Vec::new(),
            seen: std::collections::HashSet::new(),
            path: Vec::with_capacity(32),
            buf: vec![0; 4096],
        }
    }

    /// Tree = every descendant of `root` by ppid chain (root itself excluded), minus the subtrees
    /// rooted at `exclude` pids. One readdir of /proc, one `/proc/<pid>/stat` per pid,
    /// `/proc/<pid>/io` only for members. A pid whose files vanish, are unreadable or hold garbage
    /// is simply absent from this scan.
    pub fn scan(&mut self, exclude: &[i32]) -> Scan {
        self.collect(exclude);
        let mut procs = Vec::with_capacity(self.members.len());
        for i in 0..self.members.len() {
            let stat = self.stats[self.members[i]];
            let io_bytes = self.read(stat.pid, b"/io").and_then(parse_io);
            let gone = matches!(stat.state, b'Z' | b'X');
            procs.push(Proc {
                pid: stat.pid,
                starttime: stat.starttime,
                state: stat.state,
                ticks: stat
                    .utime
                    .saturating_add(stat.stime)
                    .saturating_add(stat.cutime)
                    .saturating_add(stat.cstime),
                io_bytes,
                rss_bytes: if gone { 0 } else { stat.rss_pages.saturating_mul(self.page_size) },
            });
        }
        Scan { procs, reaped_ticks: self.reaped_ticks }
    }

    /// Same membership, stat only (for signalling): (pid, starttime) of live non-zombie members.
    pub fn members(&mut self, exclude: &[i32]) -> Vec<(i32, u64)> {
        self.collect(exclude);
        let mut live = Vec::with_capacity(self.members.len());
        live.extend(
            self.members
                .iter()
                .map(|&i| &self.stats[i])
                .filter(|s| !matches!(s.state, b'Z' | b'X'))
                .map(|s| (s.pid, s.starttime)),
        );
        live
    }

    /// A prober that never walks the children files: the path kernels without them take.
    #[cfg(test)]
    fn full_scan_only(root: i32) -> Prober {
        Prober { children_files: Some(false), ..Prober::new(root) }
    }

    /// Clock ticks per second of the tick fields.
    pub fn clk_tck(&self) -> u64 {
        self.clk_tck
    }

    /// Fills `members` (indices into `stats`) with the tree: by walking the children files
    /// down from root where the kernel has them, so the cost follows the tree and not the
    /// machine, else by reading every process's stat.
    fn collect(&mut self, exclude: &[i32]) {
        if self.children_files != Some(false) {
            let walked = self.walk_children(exclude);
            if self.children_files.is_none() {
                self.children_files = Some(walked);
            }
            if walked {
                return;
            }
        }
        self.scan_all(exclude);
    }

    /// Breadth-first from root through `/proc/<pid>/task/<tid>/children`. Returns false when
    /// root's own children file cannot be read (no CONFIG_PROC_CHILDREN).
    fn walk_children(&mut self, exclude: &[i32]) -> bool {
        self.stats.clear();
        self.members.clear();
        let root = self.root;
        let Some((stat, threads)) = self.read_stat_threads(root) else {
            return false;
        };
        self.reaped_ticks = self.reaped_ticks.max(stat.cutime.saturating_add(stat.cstime));
        self.kids.clear();
        // The main thread's file exists whether or not it lists anyone: if it cannot be read,
        // the kernel has no children files.
        if !self.read_children(root, root) {
            return false;
        }
        if threads != 1 {
            self.kids.clear();
            self.read_all_children(root);
        }
        if exclude.contains(&root) {
            return true;
        }
        self.queue.clear();
        self.seen.clear();
        let mut parent = root;
        let mut next = 0;
        loop {
            // `kids` holds the children of `parent`.
            for k in 0..self.kids.len() {
                let pid = self.kids[k];
                if pid == root || exclude.contains(&pid) || self.seen.contains(&pid) {
                    continue;
                }
                let Some((stat, threads)) = self.read_stat_threads(pid) else { continue };
                // Listed, then gone and its pid reused before the stat read: a stranger, unless
                // it was reparented to watchd (the subreaper) in between.
                if stat.ppid != parent && stat.ppid != root {
                    continue;
                }
                self.seen.insert(pid);
                self.stats.push(stat);
                self.members.push(self.stats.len() - 1);
                // A zombie has no children left to visit.
                let threads = if matches!(stat.state, b'Z' | b'X') { 0 } else { threads.max(1) };
                self.queue.push((pid, threads));
            }
            let Some(&(pid, threads)) = self.queue.get(next) else {
                return true;
            };
            next += 1;
            parent = pid;
            self.kids.clear();
            match threads {
                0 => {}
                // The common case: one thread, one file, no listing of task/.
                1 => {
                    self.read_children(pid, pid);
                }
                _ => self.read_all_children(pid),
            }
        }
    }

    /// Appends the children of every thread of `pid` to `kids`: a child is listed under the
    /// thread that forked it.
    fn read_all_children(&mut self, pid: i32) {
        self.path.clear();
        self.path.extend_from_slice(b"/proc/");
        push_decimal(&mut self.path, pid);
        self.path.extend_from_slice(b"/task");
        list_numeric(&self.path, &mut self.tids);
        for t in 0..self.tids.len() {
            let tid = self.tids[t];
            self.read_children(pid, tid);
        }
    }

    /// Appends the pids in `/proc/<pid>/task/<tid>/children` to `kids`; false if unreadable.
    fn read_children(&mut self, pid: i32, tid: i32) -> bool {
        self.path.clear();
        self.path.extend_from_slice(b"/proc/");
        push_decimal(&mut self.path, pid);
        self.path.extend_from_slice(b"/task/");
        push_decimal(&mut self.path, tid);
        self.path.extend_from_slice(b"/children");
        let Some(text) = read_path(&self.path, &mut self.buf, false) else {
            return false;
        };
        let kids = text
            .split(|&b| b == b' ' || b == b'\n')
            .filter_map(|w| i32::try_from(parse_u64(w)?).ok());
        self.kids.extend(kids);
        true
    }

    /// Every readable process's stat, then the descendants of root by ppid.
    fn scan_all(&mut self, exclude: &[i32]) {
        list_pids(&mut self.pids);
        // procfs lists in pid order and each pid once; sorting is a cheap guarantee that a pid
        // cannot be walked twice.
        self.pids.sort_unstable();
        self.pids.dedup();
        self.stats.clear();
        let mut root_seen = false;
        for i in 0..self.pids.len() {
            let pid = self.pids[i];
            if let Some(stat) = self.read_stat(pid) {
                if pid == self.root {
                    root_seen = true;
                    self.reaped_ticks =
                        self.reaped_ticks.max(stat.cutime.saturating_add(stat.cstime));
                }
                self.stats.push(stat);
            }
        }
        if !root_seen {
            // root is watchd itself, so this only happens if /proc hides it from readdir.
            if let Some(stat) = self.read_stat(self.root) {
                self.reaped_ticks = self.reaped_ticks.max(stat.cutime.saturating_add(stat.cstime));
            }
        }
        self.stats.sort_unstable_by_key(|s| s.ppid);

        // Breadth-first from root; `members` doubles as the queue. Every entry has a unique pid
        // and a single ppid, so it is pushed at most once: even if racing reads stitch a ppid
        // cycle together, the walk ends. root is never pushed, so a cycle through it ends too.
        self.members.clear();
        if exclude.contains(&self.root) {
            return;
        }
        let mut parent = self.root;
        let mut next = 0;
        loop {
            let from = self.stats.partition_point(|s| s.ppid < parent);
            let to = self.stats.partition_point(|s| s.ppid <= parent);
            for i in from..to {
                let pid = self.stats[i].pid;
                if pid != self.root && !exclude.contains(&pid) {
                    self.members.push(i);
                }
            }
            let Some(&i) = self.members.get(next) else {
                break;
            };
            parent = self.stats[i].pid;
            next += 1;
        }
    }

    fn read_stat(&mut self, pid: i32) -> Option<Stat> {
        let text = self.read(pid, b"/stat")?;
        // A stat naming another pid is garbage, not news about this one.
        parse_stat(text).filter(|s| s.pid == pid)
    }

    /// The stat and the thread count (0 when unreadable: list `task/` to be safe).
    fn read_stat_threads(&mut self, pid: i32) -> Option<(Stat, u64)> {
        let text = self.read(pid, b"/stat")?;
        let stat = parse_stat(text).filter(|s| s.pid == pid)?;
        Some((stat, parse_threads(text).unwrap_or(0)))
    }

    /// Reads `/proc/<pid><file>` (stat or io: one record) into `buf`. Any failure, EINTR
    /// included, is `None`: the caller skips this pid until the next scan.
    fn read(&mut self, pid: i32, file: &[u8]) -> Option<&[u8]> {
        self.path.clear();
        self.path.extend_from_slice(b"/proc/");
        push_decimal(&mut self.path, pid);
        self.path.extend_from_slice(file);
        read_path(&self.path, &mut self.buf, true)
    }
}

/// Reads a /proc file into `buf`. With `one_record`, a read that does not fill the buffer is
/// the whole file (procfs hands out a single-record file in one go), which saves the read that
/// would only return 0; a multi-record file (children) is read to EOF.
fn read_path<'b>(path: &[u8], buf: &'b mut Vec<u8>, one_record: bool) -> Option<&'b [u8]> {
    // std converts short paths to C strings on the stack: no allocation per pid.
    let mut f = File::open(Path::new(OsStr::from_bytes(path))).ok()?;
    // `buf` stays at its full length (zeroed once) so reads need no per-file memset.
    let mut len = 0;
    loop {
        if len == buf.len() {
            if len >= MAX_FILE {
                return None;
            }
            buf.resize((len * 2).clamp(4096, MAX_FILE), 0);
        }
        match f.read(&mut buf[len..]) {
            Ok(0) => return Some(&buf[..len]),
            Ok(n) => {
                len += n;
                if one_record && len < buf.len() {
                    return Some(&buf[..len]);
                }
            }
            Err(_) => return None,
        }
    }
}

/// Appends the decimal form of a pid (always positive in /proc) without going through fmt.
fn push_decimal(out: &mut Vec<u8>, n: i32) {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut n = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Replaces `pids` with the numeric entries of /proc. If the listing fails part way, the pids not
/// listed are missing from this scan only.
fn list_pids(pids: &mut Vec<i32>) {
    list_numeric(b"/proc", pids);
}

/// Replaces `out` with the numeric entries of the directory `path` (`/proc`, `/proc/<pid>/task`).
fn list_numeric(path: &[u8], out: &mut Vec<i32>) {
    out.clear();
    let Ok(path) = std::ffi::CString::new(path) else { return };
    let pids = out;
    // SAFETY: `path` is a NUL-terminated C string that outlives the call.
    let dir = unsafe { libc::opendir(path.as_ptr()) };
    if dir.is_null() {
        return;
    }
    loop {
        // SAFETY: `dir` is a live stream from opendir, used by this thread only and not yet closed.
        let entry = unsafe { libc::readdir(dir) };
        if entry.is_null() {
            break;
        }
        // SAFETY: readdir returned a non-null pointer to a dirent that stays valid until the next
        // readdir/closedir on `dir`; this borrow ends before either.
        let entry = unsafe { &*entry };
        // SAFETY: the kernel NUL-terminates d_name within the array.
        let name = unsafe { CStr::from_ptr(entry.d_name.as_ptr()) };
        if let Some(pid) = parse_u64(name.to_bytes()).and_then(|n| i32::try_from(n).ok()) {
            pids.push(pid);
        }
    }
    // SAFETY: `dir` came from opendir and is closed exactly once; no dirent from it is used after.
    unsafe { libc::closedir(dir) };
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf only reads configuration; any name is allowed (unknown ones return -1).
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value).ok().filter(|&v| v > 0)
}

/// Tree totals at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Elapsed since watchd start.
    pub at: Duration,
    /// Monotone: max(previous, sum over procs of ticks + reaped_ticks).
    pub cpu_ticks: u64,
    /// Monotone counter: sum of per-process positive deltas (key (pid, starttime)); a process
    /// seen for the first time contributes its full io_bytes.
    pub io_bytes: u64,
    /// Processes (key (pid, starttime)) not seen in the previous scan; 0 for the baseline.
    pub new_procs: u32,
    /// Live members (state neither Z nor X).
    pub processes: u32,
    /// Sum over live members.
    pub rss_bytes: u64,
    /// processes > 0 and every live member is in state T or t.
    pub all_stopped: bool,
}

/// Turns successive scans into monotone tree totals.
#[derive(Debug, Default)]
pub struct Sampler {
    baseline_taken: bool,
    cpu_ticks: u64,
    io_bytes: u64,
    /// Processes of the previous scan -> the highest io_bytes read from each (`None`: never
    /// readable yet). Rebuilt from each scan, so processes that are gone are dropped.
    prev: HashMap<(i32, u64), Option<u64>>,
    /// Empty between calls: scratch for the next `prev`, swapped in so both keep their capacity.
    next: HashMap<(i32, u64), Option<u64>>,
}

impl Sampler {
    pub fn new() -> Sampler {
        Sampler::default()
    }

    /// The first call is the baseline: new_procs = 0.
    ///
    /// CPU: a process that exits and is reaped takes its ticks out of `procs` before (or without)
    /// its parent's cutime growing, because /proc is not read atomically, so the measured sum can
    /// dip; the max keeps the total from running backwards.
    pub fn sample(&mut self, scan: &Scan, at: Duration) -> Sample {
        let mut measured = scan.reaped_ticks;
        let mut new_procs = 0u32;
        let mut processes = 0u32;
        let mut rss_bytes = 0u64;
        let mut all_stopped = true;
        for p in &scan.procs {
            let key = (p.pid, p.starttime);
            let Entry::Vacant(slot) = self.next.entry(key) else {
                continue; // the same process twice in one scan: count it once
            };
            let last = match self.prev.get(&key) {
                Some(&last) => last,
                None => {
                    if self.baseline_taken {
                        new_procs = new_procs.saturating_add(1);
                    }
                    None
                }
            };
            slot.insert(match (last, p.io_bytes) {
                (Some(last), Some(now)) => {
                    self.io_bytes = self.io_bytes.saturating_add(now.saturating_sub(last));
                    Some(last.max(now))
                }
                (None, Some(now)) => {
                    self.io_bytes = self.io_bytes.saturating_add(now);
                    Some(now)
                }
                // Unreadable this time: no news, keep comparing against the last reading.
                (last, None) => last,
            });
            measured = measured.saturating_add(p.ticks);
            if !matches!(p.state, b'Z' | b'X') {
                processes = processes.saturating_add(1);
                rss_bytes = rss_bytes.saturating_add(p.rss_bytes);
                all_stopped &= matches!(p.state, b'T' | b't');
            }
        }
        std::mem::swap(&mut self.prev, &mut self.next);
        self.next.clear();
        // Keep a burst of processes (a fork bomb that was killed) from pinning memory forever.
        let wanted = self.prev.len().max(64);
        if self.next.capacity() > 4 * wanted {
            self.next.shrink_to(wanted);
        }
        self.cpu_ticks = self.cpu_ticks.max(measured);
        self.baseline_taken = true;
        Sample {
            at,
            cpu_ticks: self.cpu_ticks,
            io_bytes: self.io_bytes,
            new_procs,
            processes,
            rss_bytes,
            all_stopped: processes > 0 && all_stopped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    // ---- stat lines -------------------------------------------------------------------------

    /// The values a synthesized stat line carries. `other` fills the fields we skip (3..=10,
    /// 15..=18, 20) and `tail` the fields after rss.
    #[derive(Debug, Clone)]
    struct Line {
        comm: Vec<u8>,
        stat: Stat,
        other: [i64; 13],
        tail: Vec<i64>,
    }

    impl Line {
        /// The line, and the offset of the delimiter right after rss.
        fn render(&self) -> (Vec<u8>, usize) {
            let s = &self.stat;
            let mut out = format!("{} (", s.pid).into_bytes();
            out.extend_from_slice(&self.comm);
            out.extend_from_slice(b") ");
            out.push(s.state);
            let o = &self.other;
            let fields: Vec<String> = [s.ppid.to_string(), s.pgrp.to_string()]
                .into_iter()
                .chain(o[..8].iter().map(i64::to_string))
                .chain([s.utime, s.stime, s.cutime, s.cstime].map(|v| v.to_string()))
                .chain(o[8..12].iter().map(i64::to_string))
                .chain([s.starttime.to_string(), o[12].to_string()])
                .chain([s.rss_pages.to_string()])
                .collect();
            for f in fields {
                out.push(b' ');
                out.extend_from_slice(f.as_bytes());
            }
            let rss_end = out.len();
            for f in &self.tail {
                out.extend_from_slice(format!(" {f}").as_bytes());
            }
            out.push(b'\n');
            (out, rss_end)
        }
    }

    /// comm bytes biased towards the ones that break naive parsers.
    fn comm_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            Just(b')'),
            Just(b'('),
            Just(b' '),
            Just(b'\n'),
            Just(b'R'),
            b'0'..=b'9',
            1u8..=255,
        ]
    }

    fn line(max_comm: usize) -> impl Strategy<Value = Line> {
        let stat = (
            (any::<i32>(), prop::sample::select(b"RSDZTtXxKWPI".to_vec())),
            (any::<i32>(), any::<i32>()),
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
            (any::<u64>(), any::<u64>()),
        )
            .prop_map(
                |((pid, state), (ppid, pgrp), (utime, stime, cutime, cstime), (start, rss))| Stat {
                    pid,
                    state,
                    ppid,
                    pgrp,
                    utime,
                    stime,
                    cutime,
                    cstime,
                    starttime: start,
                    rss_pages: rss,
                },
            );
        (
            prop::collection::vec(comm_byte(), 0..=max_comm),
            stat,
            prop::array::uniform13(any::<i64>()),
            prop::collection::vec(any::<i64>(), 0..=30),
        )
            .prop_map(|(comm, stat, other, tail)| Line { comm, stat, other, tail })
    }

    const REAL: &[u8] = b"4242 (sleep) S 4241 4241 4000 34816 4241 4194304 99 0 0 0 \
        3 5 7 11 20 0 1 0 123456 8192000 219 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 \
        0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn parses_a_real_line() {
        assert_eq!(
            parse_stat(REAL),
            Some(Stat {
                pid: 4242,
                state: b'S',
                ppid: 4241,
                pgrp: 4241,
                utime: 3,
                stime: 5,
                cutime: 7,
                cstime: 11,
                starttime: 123456,
                rss_pages: 219,
            })
        );
    }

    #[test]
    fn comm_with_parens_spaces_and_newlines() {
        let line = b"7 (a) b\n) S (x) ) S 1 7 7 0 -1 0 0 0 0 0 1 2 3 4 20 0 1 0 99 0 5 0\n";
        let s = parse_stat(line).expect("parses");
        assert_eq!((s.pid, s.state, s.ppid, s.utime, s.starttime), (7, b'S', 1, 1, 99));
        assert_eq!(s.rss_pages, 5);
    }

    #[test]
    fn comm_holding_a_whole_fake_line_is_still_only_comm() {
        // The kernel caps comm at 15 bytes, but nothing here relies on that for full lines.
        let fake = b"1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23";
        let mut text = b"9 (x) R ".to_vec();
        text.extend_from_slice(fake);
        text.extend_from_slice(b") Z 1 9 9 0 0 0 0 0 0 0 0 0 0 0 0 0 1 0 77 0 0\n");
        let s = parse_stat(&text).expect("parses");
        assert_eq!((s.state, s.starttime, s.rss_pages), (b'Z', 77, 0));
    }

    #[test]
    fn rejects_malformed_lines() {
        let cases: &[&[u8]] = &[
            b"",
            b"12",
            b"12 (x",
            b"12 x) S 1",
            b"x (y) S 1 1 1 0 0 0 0 0 0 0 1 1 1 1 20 0 1 0 1 0 1\n",
            b") 12 (",
            // no space between pid and '('
            b"12(x) S 1 1 1 0 0 0 0 0 0 0 1 1 1 1 20 0 1 0 1 0 1\n",
            // two-letter state
            b"12 (x) SS 1 1 1 0 0 0 0 0 0 0 1 1 1 1 20 0 1 0 1 0 1\n",
            // negative utime
            b"12 (x) S 1 1 1 0 0 0 0 0 0 0 -1 1 1 1 20 0 1 0 1 0 1\n",
            // double space
            b"12 (x) S 1  1 1 0 0 0 0 0 0 0 1 1 1 1 20 0 1 0 1 0 1\n",
            // a newline before rss
            b"12 (x) S 1 1 1 0 0 0 0 0 0 0 1 1 1 1 20 0 1 0 1 0\n1\n",
            // rss overflows u64
            b"12 (x) S 1 1 1 0 0 0 0 0 0 0 1 1 1 1 20 0 1 0 1 0 18446744073709551616\n",
            // pid overflows i32
            b"2147483648 (x) S 1 1 1 0 0 0 0 0 0 0 1 1 1 1 20 0 1 0 1 0 1\n",
            // rss not terminated: maybe cut inside the number
            b"12 (x) S 1 1 1 0 0 0 0 0 0 0 1 1 1 1 20 0 1 0 1 0 1",
            // garbage in a skipped field
            b"12 (x) S 1 1 1 0 0 0 0 0 0 0 1 1 1 1 2x 0 1 0 1 0 1\n",
        ];
        let good: &[u8] = b"12 (x) S 1 1 1 0 0 0 0 0 0 0 1 1 1 1 20 0 1 0 1 0 1\n";
        assert!(parse_stat(good).is_some(), "the base the cases are mutated from");
        for case in cases {
            assert_eq!(parse_stat(case), None, "{:?}", String::from_utf8_lossy(case));
        }
    }

    proptest! {
        #[test]
        fn stat_round_trips(l in line(64)) {
            let (text, _) = l.render();
            prop_assert_eq!(parse_stat(&text), Some(l.stat));
        }

        /// Precise truncation rule: a prefix parses iff it reaches past the delimiter after rss,
        /// and then to exactly the full line's values. comm is kept to the kernel's 16 bytes:
        /// a prefix cut inside a longer comm could end in a `)` followed by a complete fake
        /// field list, which no parser can tell from a real one.
        #[test]
        fn stat_prefixes(l in line(16)) {
            let (text, rss_end) = l.render();
            for len in 0..=text.len() {
                let want = if len > rss_end { Some(l.stat) } else { None };
                prop_assert_eq!(parse_stat(&text[..len]), want, "prefix of {} bytes", len);
            }
        }

        #[test]
        fn stat_long_comm_prefixes_do_not_panic(l in line(64)) {
            let (text, _) = l.render();
            for len in 0..=text.len() {
                let _ = parse_stat(&text[..len]);
            }
        }

        #[test]
        fn stat_arbitrary_bytes_do_not_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_stat(&bytes);
        }

        #[test]
        fn stat_mutated_lines_do_not_panic(
            l in line(16),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let (mut text, _) = l.render();
            for (at, byte) in edits {
                let i = at.index(text.len());
                text[i] = byte;
            }
            let _ = parse_stat(&text);
        }
    }

    // ---- io ---------------------------------------------------------------------------------

    const IO_KEYS: [&str; 7] =
        ["rchar", "wchar", "syscr", "syscw", "read_bytes", "write_bytes", "cancelled_write_bytes"];

    fn io_text(values: &[(usize, u64)]) -> Vec<u8> {
        values
            .iter()
            .map(|&(k, v)| format!("{}: {v}\n", IO_KEYS[k]))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn parses_real_io() {
        let text = b"rchar: 2012\nwchar: 30\nsyscr: 5\nsyscw: 1\nread_bytes: 0\n\
            write_bytes: 0\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_io(text), Some(2042));
    }

    #[test]
    fn rejects_bad_io() {
        let cases: &[&[u8]] = &[
            b"",
            b"rchar: 1\n",
            b"wchar: 1\n",
            b"rchar: 1\nwchar: 2",             // wchar line unterminated
            b"rchar: x\nwchar: 2\n",           // garbled
            b"rchar: -1\nwchar: 2\n",          // signed
            b"rchar:\nwchar: 2\n",             // empty
            b"rchar: 1 2\nwchar: 2\n",         // trailing garbage
            b"rchar: 1\nwchar: 2\nrchar: 3\n", // repeated
            b"rchar: 99999999999999999999\nwchar: 2\n", // overflow
        ];
        for case in cases {
            assert_eq!(parse_io(case), None, "{:?}", String::from_utf8_lossy(case));
        }
    }

    proptest! {
        #[test]
        fn io_any_key_order(
            values in prop::array::uniform7(any::<u64>()),
            order in Just((0..IO_KEYS.len()).collect::<Vec<_>>()).prop_shuffle(),
        ) {
            let pairs: Vec<_> = order.iter().map(|&k| (k, values[k])).collect();
            prop_assert_eq!(parse_io(&io_text(&pairs)), Some(values[0].saturating_add(values[1])));
        }

        /// A prefix parses iff it holds both the rchar and the wchar line with their newlines.
        #[test]
        fn io_prefixes(
            values in prop::array::uniform7(any::<u64>()),
            order in Just((0..IO_KEYS.len()).collect::<Vec<_>>()).prop_shuffle(),
        ) {
            let pairs: Vec<_> = order.iter().map(|&k| (k, values[k])).collect();
            let text = io_text(&pairs);
            let line_end = |key: usize| {
                let at = order.iter().position(|&k| k == key).expect("present");
                io_text(&pairs[..=at]).len()
            };
            let complete = line_end(0).max(line_end(1));
            for len in 0..=text.len() {
                let want = (len >= complete).then(|| values[0].saturating_add(values[1]));
                prop_assert_eq!(parse_io(&text[..len]), want, "prefix of {} bytes", len);
            }
        }

        #[test]
        fn io_arbitrary_bytes_do_not_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_io(&bytes);
        }
    }

    // ---- sampler ----------------------------------------------------------------------------

    fn p(pid: i32, state: u8, ticks: u64, io: Option<u64>, rss: u64) -> Proc {
        Proc { pid, starttime: 1000 + pid as u64, state, ticks, io_bytes: io, rss_bytes: rss }
    }

    fn scan(reaped_ticks: u64, procs: Vec<Proc>) -> Scan {
        Scan { procs, reaped_ticks }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn baseline() {
        let mut sampler = Sampler::new();
        let s = sampler.sample(
            &scan(
                4,
                vec![
                    p(10, b'S', 5, Some(100), 4096),
                    p(11, b'R', 7, None, 8192),
                    p(12, b'Z', 2, Some(1), 0),
                ],
            ),
            secs(1),
        );
        assert_eq!(
            s,
            Sample {
                at: secs(1),
                cpu_ticks: 4 + 5 + 7 + 2,
                io_bytes: 101,
                new_procs: 0,
                processes: 2,
                rss_bytes: 4096 + 8192,
                all_stopped: false,
            }
        );
    }

    #[test]
    fn cpu_stays_monotone_while_a_reaped_child_is_not_yet_in_cutime() {
        let mut sampler = Sampler::new();
        let parent = |ticks| p(10, b'S', ticks, None, 0);
        let a = sampler.sample(&scan(0, vec![parent(10), p(11, b'R', 50, None, 0)]), secs(1));
        assert_eq!(a.cpu_ticks, 60);
        // The child has been reaped; the parent's cutime has not caught up in our read.
        let b = sampler.sample(&scan(0, vec![parent(10)]), secs(2));
        assert_eq!(b.cpu_ticks, 60);
        // Now it has, plus a little work of its own.
        let c = sampler.sample(&scan(0, vec![parent(10 + 50 + 5)]), secs(3));
        assert_eq!(c.cpu_ticks, 65);
        // Same story one level up: the parent leaves, watchd's reaped_ticks catch up later.
        let d = sampler.sample(&scan(0, vec![]), secs(4));
        assert_eq!(d.cpu_ticks, 65);
        let e = sampler.sample(&scan(66, vec![]), secs(5));
        assert_eq!(e.cpu_ticks, 66);
    }

    #[test]
    fn io_counter_survives_exits_and_unreadable_reads() {
        let mut sampler = Sampler::new();
        let a = sampler.sample(
            &scan(0, vec![p(1, b'R', 0, Some(100), 0), p(2, b'R', 0, Some(50), 0)]),
            secs(1),
        );
        assert_eq!(a.io_bytes, 150);
        // 1 exits: its bytes stay counted; 2 grows by 20.
        let b = sampler.sample(&scan(0, vec![p(2, b'R', 0, Some(70), 0)]), secs(2));
        assert_eq!(b.io_bytes, 170);
        // A newcomer contributes everything it has done so far.
        let c = sampler.sample(
            &scan(0, vec![p(2, b'R', 0, Some(70), 0), p(3, b'R', 0, Some(30), 0)]),
            secs(3),
        );
        assert_eq!(c.io_bytes, 200);
        // Unreadable: no news, and the next reading is compared with the last good one.
        let d = sampler
            .sample(&scan(0, vec![p(2, b'R', 0, None, 0), p(3, b'R', 0, Some(30), 0)]), secs(4));
        assert_eq!(d.io_bytes, 200);
        let e = sampler.sample(
            &scan(0, vec![p(2, b'R', 0, Some(80), 0), p(3, b'R', 0, Some(30), 0)]),
            secs(5),
        );
        assert_eq!(e.io_bytes, 210);
        // A reading that goes backwards is not a negative delta, nor counted twice later.
        let f = sampler.sample(&scan(0, vec![p(2, b'R', 0, Some(60), 0)]), secs(6));
        assert_eq!(f.io_bytes, 210);
        let g = sampler.sample(&scan(0, vec![p(2, b'R', 0, Some(85), 0)]), secs(7));
        assert_eq!(g.io_bytes, 215);
        // A reused pid is a new process: its full count is new.
        let mut reused = p(2, b'R', 0, Some(5), 0);
        reused.starttime += 1;
        let h = sampler.sample(&scan(0, vec![reused]), secs(8));
        assert_eq!((h.io_bytes, h.new_procs), (220, 1));
    }

    #[test]
    fn new_procs_counts_keys_missing_from_the_previous_scan() {
        let mut sampler = Sampler::new();
        let first = sampler.sample(&scan(0, vec![p(1, b'S', 0, None, 0)]), secs(1));
        assert_eq!(first.new_procs, 0);
        let same = sampler.sample(&scan(0, vec![p(1, b'S', 0, None, 0)]), secs(2));
        assert_eq!(same.new_procs, 0);
        // Two newcomers, one of them already a zombie (born and died between scans).
        let more = sampler.sample(
            &scan(0, vec![p(1, b'S', 0, None, 0), p(2, b'R', 0, None, 0), p(3, b'Z', 0, None, 0)]),
            secs(3),
        );
        assert_eq!((more.new_procs, more.processes), (2, 2));
        let mut reused = p(1, b'S', 0, None, 0);
        reused.starttime += 7;
        let again = sampler.sample(&scan(0, vec![reused]), secs(4));
        assert_eq!(again.new_procs, 1);
        // An empty baseline still counts as the baseline.
        let mut fresh = Sampler::new();
        fresh.sample(&scan(0, vec![]), secs(1));
        let s = fresh.sample(&scan(0, vec![p(9, b'R', 0, None, 0)]), secs(2));
        assert_eq!(s.new_procs, 1);
    }

    #[test]
    fn all_stopped() {
        let stopped = |procs| Sampler::new().sample(&scan(0, procs), secs(1)).all_stopped;
        assert!(stopped(vec![p(1, b'T', 0, None, 0), p(2, b't', 0, None, 0)]));
        assert!(stopped(vec![p(1, b'T', 0, None, 0), p(2, b'Z', 0, None, 0)]));
        assert!(!stopped(vec![p(1, b'T', 0, None, 0), p(2, b'S', 0, None, 0)]));
        assert!(!stopped(vec![p(1, b'Z', 0, None, 0), p(2, b'X', 0, None, 0)]));
        assert!(!stopped(vec![]));
    }

    #[test]
    fn map_holds_only_the_current_scan() {
        let mut sampler = Sampler::new();
        let many: Vec<_> = (1..=1000).map(|pid| p(pid, b'S', 0, Some(1), 0)).collect();
        sampler.sample(&scan(0, many), secs(1));
        assert_eq!(sampler.prev.len(), 1000);
        sampler.sample(&scan(0, vec![p(5, b'S', 0, Some(1), 0)]), secs(2));
        assert_eq!(sampler.prev.len(), 1);
        sampler.sample(&scan(0, vec![p(5, b'S', 0, Some(1), 0)]), secs(3));
        assert!(sampler.prev.capacity() <= 4 * 64 && sampler.next.capacity() <= 4 * 64);
    }

    #[test]
    fn a_process_listed_twice_counts_once() {
        let twice = vec![p(1, b'R', 10, Some(5), 100), p(1, b'R', 10, Some(5), 100)];
        let s = Sampler::new().sample(&scan(0, twice), secs(1));
        assert_eq!((s.cpu_ticks, s.io_bytes, s.processes, s.rss_bytes), (10, 5, 1, 100));
    }

    // ---- real processes ---------------------------------------------------------------------

    fn me() -> i32 {
        i32::try_from(std::process::id()).expect("pid fits i32")
    }

    /// Polls `f` until it yields, failing the test after a deadline. No fixed sleeps: the short
    /// pause only keeps the poll from spinning a core.
    fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A child in its own process group; the whole group is killed and the child reaped on drop,
    /// so a failing assertion leaves nothing behind.
    struct Group(Child);

    impl Group {
        fn spawn(script: &str) -> Group {
            let child = Command::new("sh")
                .args(["-c", script])
                .stdin(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("spawn sh");
            Group(child)
        }

        fn pid(&self) -> i32 {
            i32::try_from(self.0.id()).expect("pid fits i32")
        }
    }

    impl Drop for Group {
        fn drop(&mut self) {
            // SAFETY: kill has no memory-safety preconditions. The group is led by our own
            // unreaped child, so its id cannot have been recycled.
            unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }

    fn ppid_of(pid: i32) -> Option<i32> {
        let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
        parse_stat(&text).map(|s| s.ppid)
    }

    /// sh's pid and its two sleeps, once all three are in a scan with memory mapped.
    fn sh_and_sleeps(prober: &mut Prober, sh: i32) -> (Scan, Vec<i32>) {
        wait_for("sh and both sleeps in the scan", || {
            let scan = prober.scan(&[]);
            let sleeps: Vec<i32> =
                scan.procs.iter().map(|p| p.pid).filter(|&pid| ppid_of(pid) == Some(sh)).collect();
            let has_sh = scan.procs.iter().any(|p| p.pid == sh);
            // A sleep caught between fork and exec has no resident pages yet: wait until all
            // three have some (a broken rss reading still fails, by timing out).
            let settled = scan
                .procs
                .iter()
                .filter(|p| p.pid == sh || sleeps.contains(&p.pid))
                .all(|p| p.rss_bytes > 0);
            (has_sh && sleeps.len() == 2 && settled).then_some((scan, sleeps))
        })
    }

    #[test]
    fn scan_finds_the_tree_and_honours_exclude() {
        let group = Group::spawn("sleep 30 & sleep 30 & wait");
        let sh = group.pid();
        let mut prober = Prober::new(me());
        assert!(prober.clk_tck() > 0);
        let (scan, sleeps) = sh_and_sleeps(&mut prober, sh);
        assert!(!scan.procs.iter().any(|p| p.pid == me()), "root is not a member");
        for &pid in sleeps.iter().chain([&sh]) {
            let p = scan.procs.iter().find(|p| p.pid == pid).expect("member");
            assert!(p.rss_bytes > 0, "{p:?}");
            assert!(p.io_bytes.is_some(), "our own children's io is readable: {p:?}");
            assert_ne!(p.state, b'Z');
        }

        let members = prober.members(&[]);
        for &pid in sleeps.iter().chain([&sh]) {
            let p = scan.procs.iter().find(|p| p.pid == pid).expect("member");
            assert!(members.contains(&(pid, p.starttime)), "{pid} in {members:?}");
        }

        // Excluding sh removes its whole subtree, from both views.
        let without_sh = prober.scan(&[sh]);
        for pid in sleeps.iter().chain([&sh]) {
            assert!(!without_sh.procs.iter().any(|p| p.pid == *pid), "{pid} excluded");
            assert!(!prober.members(&[sh]).iter().any(|m| m.0 == *pid));
        }
        // Excluding one sleep removes only that one.
        let without_one = prober.scan(&[sleeps[0]]);
        assert!(!without_one.procs.iter().any(|p| p.pid == sleeps[0]));
        assert!(without_one.procs.iter().any(|p| p.pid == sleeps[1]));
        assert!(without_one.procs.iter().any(|p| p.pid == sh));
        // A root that is excluded has no tree.
        assert!(prober.scan(&[me()]).procs.is_empty());

        // Another root sees only its own subtree.
        let below_sh = Prober::new(sh).scan(&[]);
        let mut pids: Vec<i32> = below_sh.procs.iter().map(|p| p.pid).collect();
        pids.sort_unstable();
        let mut want = sleeps.clone();
        want.sort_unstable();
        assert_eq!(pids, want);
        drop(group);
    }

    #[test]
    fn zombie_children_stay_in_the_scan_with_no_rss() {
        let mut child = Command::new("true").stdin(Stdio::null()).spawn().expect("spawn true");
        let pid = i32::try_from(child.id()).expect("pid fits i32");
        let mut prober = Prober::new(me());
        let zombie = wait_for("the child to become a zombie", || {
            prober.scan(&[]).procs.into_iter().find(|p| p.pid == pid && p.state == b'Z')
        });
        assert_eq!(zombie.rss_bytes, 0);
        assert!(!prober.members(&[]).iter().any(|m| m.0 == pid), "not signalled");
        let status = child.wait().expect("reap");
        assert!(status.success());
        assert!(!prober.scan(&[]).procs.iter().any(|p| p.pid == pid));
    }

    #[test]
    fn reaped_ticks_come_from_the_root() {
        let mut prober = Prober::new(me());
        let text = std::fs::read(format!("/proc/{}/stat", me())).expect("own stat");
        let own = parse_stat(&text).expect("own stat parses");
        assert!(prober.scan(&[]).reaped_ticks >= own.cutime + own.cstime);
    }

    #[test]
    fn reads_grow_the_buffer_up_to_the_cap() {
        // /proc/<pid>/root/... reaches any file through the same path builder.
        let dir = std::env::temp_dir().join(format!("watchd-probe-read-{}", me()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let big: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        std::fs::write(dir.join("big"), &big).expect("write big");
        std::fs::write(dir.join("huge"), vec![b'x'; MAX_FILE + 1]).expect("write huge");
        let via_root = |name: &str| {
            let mut path = b"/root".to_vec();
            path.extend_from_slice(dir.join(name).as_os_str().as_bytes());
            path
        };
        let mut prober = Prober::new(me());
        assert_eq!(prober.read(me(), &via_root("big")), Some(&big[..]));
        assert_eq!(prober.read(me(), &via_root("huge")), None);
        assert_eq!(prober.read(me(), &via_root("missing")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn vanished_root_gives_an_empty_scan() {
        // pid_max is at most 2^22, so this pid cannot exist.
        let scan = Prober::new(i32::MAX).scan(&[]);
        assert_eq!(scan, Scan::default());
    }

    /// The figure for the closing note: scan cost with 1,000 processes in the tree.
    /// `cargo test --release -- --ignored --nocapture scan_1000`
    #[test]
    #[ignore = "spawns 1,000 processes; run by hand"]
    fn scan_1000_processes() {
        struct Children(Vec<Child>);
        impl Drop for Children {
            fn drop(&mut self) {
                for child in &mut self.0 {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        let mut children = Children(Vec::with_capacity(1000));
        for _ in 0..1000 {
            let child =
                Command::new("sleep").arg("60").stdin(Stdio::null()).spawn().expect("spawn sleep");
            children.0.push(child);
        }
        let mut prober = Prober::new(me());
        wait_for("1,000 members", || (prober.scan(&[]).procs.len() >= 1000).then_some(()));
        for _ in 0..3 {
            prober.scan(&[]);
        }
        let rounds = 20;
        let mut walls = Vec::with_capacity(rounds);
        let cpu_before = thread_cpu();
        let mut members = 0;
        for _ in 0..rounds {
            let t = Instant::now();
            members = prober.scan(&[]).procs.len();
            walls.push(t.elapsed());
        }
        let (user, sys) = thread_cpu();
        let n = rounds as u32;
        walls.sort_unstable();
        println!(
            "{members} members, {} /proc pids: wall per scan mean {:?} min {:?} max {:?}; \
             CPU per scan user {:?} sys {:?}",
            prober.pids.len(),
            walls.iter().sum::<Duration>() / n,
            walls[0],
            walls[rounds - 1],
            (user - cpu_before.0) / n,
            (sys - cpu_before.1) / n,
        );
    }

    /// (user, system) CPU time of the calling thread.
    fn thread_cpu() -> (Duration, Duration) {
        // SAFETY: rusage is plain old data, so all-zero bytes are a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `usage` is a valid, writable rusage for the kernel to fill.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
        assert_eq!(rc, 0, "getrusage");
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        (tv(usage.ru_utime), tv(usage.ru_stime))
    }

    #[test]
    fn the_children_walk_and_the_full_scan_agree() {
        let group = Group::spawn("sleep 30 & sh -c 'sleep 30 & wait' & wait");
        let sh = group.pid();
        let mut walk = Prober::new(sh);
        let mut full = Prober::full_scan_only(sh);
        let comm =
            |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        // Settled: sh's sleep, the inner sh and its sleep, all exec'd (a fork not yet exec'd is
        // also called sh), and both paths agree.
        let (members, inner) = wait_for("the tree to settle", || {
            let mut a = walk.members(&[]);
            let mut b = full.members(&[]);
            a.sort_unstable();
            b.sort_unstable();
            let shells: Vec<i32> =
                a.iter().map(|&(p, _)| p).filter(|&p| comm(p).trim() == "sh").collect();
            let sleeps = a.iter().filter(|&&(p, _)| comm(p).trim() == "sleep").count();
            (a.len() == 3 && a == b && shells.len() == 1 && sleeps == 2).then(|| (a, shells[0]))
        });
        assert_eq!(walk.children_files, Some(true), "this kernel has children files");
        assert!(members.iter().all(|&(pid, _)| pid != sh));
        // Excluding the inner sh drops its subtree on both paths.
        let (mut a, mut b) = (walk.members(&[inner]), full.members(&[inner]));
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
        assert_eq!(a.len(), 1, "only sh's own sleep is left: {a:?}");
    }

    #[test]
    fn children_of_a_non_main_thread_are_found() {
        // This test binary is multi-threaded: a child forked from a spawned thread is listed in
        // that thread's children file, not the main thread's. The thread stays alive while we
        // look (when a thread exits, its children move to another thread of the process).
        let (pid_tx, pid_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut child = Command::new("sleep").arg("30").spawn().expect("spawn sleep");
            pid_tx.send(i32::try_from(child.id()).unwrap()).unwrap();
            let _ = done_rx.recv();
            child.kill().unwrap();
            child.wait().unwrap();
        });
        let pid = pid_rx.recv().unwrap();
        let mut prober = Prober::new(me());
        wait_for("the thread's child in the walk", || {
            prober.members(&[]).iter().any(|&(p, _)| p == pid).then_some(())
        });
        done_tx.send(()).unwrap();
        thread.join().unwrap();
    }
}
