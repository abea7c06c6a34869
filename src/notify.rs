//! The sd_notify protocol both ways: the message parser (pure), the socket watchd binds for
//! the child (`NotifySocket`), the child's environment for it, and the sender to a systemd
//! that started watchd itself (`Upstream`). Nothing here blocks: the socket is non-blocking
//! and the driver's poll loop says when to read.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
    UnixCredentials, sockopt,
};

/// systemd's limit for one notify datagram; a longer one is dropped whole.
pub const MAX_DATAGRAM: usize = 4096;

/// How many datagrams one [`NotifySocket::recv_batch`] reads (or drops) at most, so that a
/// flood cannot hold the driver's loop: the socket stays readable and poll comes back.
pub const BATCH: usize = 256;

/// The variables systemd's protocol puts in a process's environment. watchd's own never reach
/// the child: the child gets watchd's socket (or none).
pub const PROTOCOL_VARS: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// One notify datagram, parsed. Each key is decided by its first line; the effects below are
/// read from `fields`, so they always agree with what the `notify` event shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// `READY=1`.
    pub ready: bool,
    /// `WATCHDOG=1`: evidence of life.
    pub watchdog_ping: bool,
    /// `WATCHDOG=trigger`: fires `watchdog`.
    pub watchdog_trigger: bool,
    /// `WATCHDOG_USEC=N`: the new stall window in µs (0 turns it off).
    pub watchdog_usec: Option<u64>,
    /// `EXTEND_TIMEOUT_USEC=N`.
    pub extend_timeout_usec: Option<u64>,
    /// `STATUS=TEXT`.
    pub status: Option<String>,
    /// `STOPPING=1`.
    pub stopping: bool,
    /// Every well-formed `KEY=VALUE`, first occurrence of each key, in order: the `notify`
    /// event's `fields`.
    pub fields: Vec<(String, String)>,
    /// Lines left out: not `KEY=VALUE`, a bad key, not UTF-8, a NUL byte, or a repeated key.
    pub skipped: usize,
}

/// A datagram longer than [`MAX_DATAGRAM`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLong;

impl Message {
    /// The value of `key`, if the message has it.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Parses one datagram: newline-separated `KEY=VALUE` lines. Malformed lines are skipped and
/// counted, never fatal; a value that does not parse (`READY=yes`, `WATCHDOG_USEC=x`) stays in
/// `fields` and has no effect.
pub fn parse(datagram: &[u8]) -> Result<Message, TooLong> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(TooLong);
    }
    let mut msg = Message::default();
    for line in datagram.split(|&b| b == b'\n').filter(|line| !line.is_empty()) {
        match split_line(line) {
            Some((key, value)) if msg.field(key).is_none() => {
                msg.fields.push((key.to_string(), value.to_string()));
            }
            _ => msg.skipped += 1,
        }
    }
    msg.ready = msg.field("READY") == Some("1");
    msg.watchdog_ping = msg.field("WATCHDOG") == Some("1");
    msg.watchdog_trigger = msg.field("WATCHDOG") == Some("trigger");
    msg.watchdog_usec = msg.field("WATCHDOG_USEC").and_then(parse_usec);
    msg.extend_timeout_usec = msg.field("EXTEND_TIMEOUT_USEC").and_then(parse_usec);
    msg.status = msg.field("STATUS").map(str::to_string);
    msg.stopping = msg.field("STOPPING") == Some("1");
    Ok(msg)
}

/// `KEY=VALUE` with an environment-variable key (`[A-Za-z_][A-Za-z0-9_]*`), UTF-8, no NUL.
fn split_line(line: &[u8]) -> Option<(&str, &str)> {
    let line = std::str::from_utf8(line).ok()?;
    let (key, value) = line.split_once('=')?;
    let mut chars = key.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let key_ok = first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    (key_ok && !value.contains('\0')).then_some((key, value))
}

/// A decimal count of microseconds, digits only (no sign, no space, no unit).
fn parse_usec(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// A message received on watchd's socket, with the sender the kernel vouches for.
#[derive(Debug)]
pub struct Received {
    /// The sender's pid in watchd's pid namespace (0 when the kernel cannot map it). Whether
    /// it belongs to the tree is the machine's call.
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    pub message: Message,
    /// Descriptors that came with it (`systemd-notify`'s BARRIER=1 pipe), close-on-exec. Held
    /// until the sender has been judged, then dropped: `systemd-notify --ready` waits for its
    /// barrier to close and exits right after, and an unprivileged one sends its own pid, so
    /// closing first would let the sender vanish before it is found in the tree.
    pub fds: Vec<OwnedFd>,
}

/// Datagrams [`NotifySocket`] threw away, for `-v` and the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Longer than [`MAX_DATAGRAM`].
    pub oversized: u64,
    /// No credentials came with it (cannot happen with SO_PASSCRED on; counted, not trusted).
    pub anonymous: u64,
    /// Its control data did not fit: its sender cannot be checked.
    pub truncated_control: u64,
    /// Descriptors that came with messages (each closed with its message, once judged).
    pub fds_closed: u64,
}

/// The datagram socket the child (and anything it runs) sends sd_notify messages to.
///
/// It lives in a fresh directory of its own (created with a random name by mkdtemp, so a path
/// someone planted is never reused). The directory is `rwx--x--x` and the socket `rw-rw-rw-`:
/// a child that drops privileges can still reach it (connecting needs search permission on
/// the directories and write permission on the socket), while no one else can list, replace
/// or remove what is in it. Anyone who can reach it can send, so every message carries the
/// sender's credentials (SO_PASSCRED) and the machine drops those from outside the tree,
/// as systemd does with `NotifyAccess=`.
pub struct NotifySocket {
    fd: OwnedFd,
    dir: PathBuf,
    path: PathBuf,
    /// One buffer for credentials and the most descriptors one message can carry
    /// (SCM_MAX_FD), so the kernel never truncates the control data.
    control: Vec<u8>,
    dropped: Dropped,
}

/// The most descriptors Linux lets one message carry (SCM_MAX_FD).
const SCM_MAX_FD: usize = 253;

/// `sun_path` holds 108 bytes with the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// What one read of the socket gave.
enum Step {
    Got(Received),
    Dropped,
    Empty,
}

impl NotifySocket {
    /// Binds in the first usable of `$RUNTIME_DIRECTORY` (its first entry), `$XDG_RUNTIME_DIR`
    /// and `/tmp`: an absolute directory that others may search (else a child that drops
    /// privileges could not reach the socket, and `$XDG_RUNTIME_DIR` is usually 0700) with
    /// room for the socket's path.
    pub fn bind() -> io::Result<NotifySocket> {
        let runtime = std::env::var_os("RUNTIME_DIRECTORY");
        let first_runtime = runtime.as_deref().map(|dirs| {
            let bytes = dirs.as_bytes();
            let end = bytes.iter().position(|&b| b == b':').unwrap_or(bytes.len());
            OsStr::from_bytes(&bytes[..end]).to_os_string()
        });
        let candidates = [first_runtime, std::env::var_os("XDG_RUNTIME_DIR")];
        let base = candidates
            .into_iter()
            .flatten()
            .map(PathBuf::from)
            .find(|dir| usable_base(dir))
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        NotifySocket::bind_in(&base)
    }

    /// Binds in a fresh directory under `base`.
    pub fn bind_in(base: &Path) -> io::Result<NotifySocket> {
        let dir = nix::unistd::mkdtemp(&base.join("watchd-XXXXXX")).map_err(|errno| {
            let err = io::Error::from(errno);
            io::Error::new(
                err.kind(),
                format!("cannot create a directory in {}: {err}", base.display()),
            )
        })?;
        let bound = NotifySocket::bind_dir(dir.clone());
        if bound.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        bound
    }

    fn bind_dir(dir: PathBuf) -> io::Result<NotifySocket> {
        let path = dir.join("notify");
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(io::Error::other(format!("{} is too long for a socket", path.display())));
        }
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        // Before bind, so no datagram is ever queued without its sender's credentials.
        socket::setsockopt(&fd, sockopt::PassCred, &true)?;
        // Room for bursts (systemd gives its own notify socket 8 MiB); the kernel caps it at
        // rmem_max, and a smaller buffer only makes senders wait, so failure is fine.
        let _ = socket::setsockopt(&fd, sockopt::RcvBuf, &(1 << 20));
        socket::bind(fd.as_raw_fd(), &UnixAddr::new(&path)?)?;
        // The directory is still 0700 (mkdtemp): no one else can swap the socket for a link
        // between bind and these two.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
        let control = nix::cmsg_space!(UnixCredentials, [RawFd; SCM_MAX_FD]);
        Ok(NotifySocket { fd, dir, path, control, dropped: Dropped::default() })
    }

    /// The socket's path: the child's `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the driver polls for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// What was thrown away so far.
    pub fn dropped(&self) -> Dropped {
        self.dropped
    }

    /// The next message, or `None` when nothing is queued, or when [`BATCH`] datagrams in a
    /// row had to be dropped (poll again: the socket stays readable). Never blocks.
    pub fn recv(&mut self) -> Option<Received> {
        for _ in 0..BATCH {
            match self.step() {
                Step::Got(received) => return Some(received),
                Step::Dropped => continue,
                Step::Empty => return None,
            }
        }
        None
    }

    /// At most [`BATCH`] datagrams' worth of messages: what the driver reads per wake-up.
    pub fn recv_batch(&mut self) -> Vec<Received> {
        let mut out = Vec::new();
        for _ in 0..BATCH {
            match self.step() {
                Step::Got(received) => out.push(received),
                Step::Dropped => continue,
                Step::Empty => break,
            }
        }
        out
    }

    fn step(&mut self) -> Step {
        let mut buf = [0u8; MAX_DATAGRAM];
        let (bytes, truncated, control) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            // CLOEXEC: a descriptor that came with a message must never reach a child, even
            // in the instant before it is closed.
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
            match socket::recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut self.control),
                flags,
            ) {
                Ok(msg) => {
                    let mut control = Control::default();
                    match msg.cmsgs() {
                        Ok(cmsgs) => cmsgs.for_each(|cmsg| control.take(cmsg)),
                        Err(_) => control.truncated = true,
                    }
                    break (msg.bytes, msg.flags.contains(MsgFlags::MSG_TRUNC), control);
                }
                Err(Errno::EINTR) => continue,
                // EAGAIN, or anything else: nothing to read now.
                Err(_) => return Step::Empty,
            }
        };
        self.dropped.fds_closed += control.fds.len() as u64;
        if truncated {
            self.dropped.oversized += 1;
            return Step::Dropped;
        }
        if control.truncated {
            self.dropped.truncated_control += 1;
            return Step::Dropped;
        }
        let Some(cred) = control.cred else {
            self.dropped.anonymous += 1;
            return Step::Dropped;
        };
        match parse(&buf[..bytes]) {
            Ok(message) => {
                let fds = control.fds;
                Step::Got(Received { pid: cred.0, uid: cred.1, gid: cred.2, message, fds })
            }
            Err(TooLong) => {
                self.dropped.oversized += 1;
                Step::Dropped
            }
        }
    }
}

/// What came in a message's control data.
#[derive(Default)]
struct Control {
    cred: Option<(i32, u32, u32)>,
    /// What came with the message: owned from here, so every path closes them (a dropped
    /// message at once, a kept one once its sender is judged).
    fds: Vec<OwnedFd>,
    truncated: bool,
}

impl Control {
    fn take(&mut self, cmsg: ControlMessageOwned) {
        match cmsg {
            ControlMessageOwned::ScmCredentials(c) => self.cred = Some((c.pid(), c.uid(), c.gid())),
            ControlMessageOwned::ScmRights(fds) => {
                self.fds.extend(fds.into_iter().map(crate::sys::received_fd));
            }
            _ => {}
        }
    }
}

impl AsFd for NotifySocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        // Both were created by bind and the directory admits no one else's entries.
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// An absolute directory others may search, with room for `watchd-XXXXXX/notify` in
/// `sun_path`.
fn usable_base(dir: &Path) -> bool {
    let room = dir.as_os_str().len() + "/watchd-XXXXXX/notify".len() <= MAX_SOCKET_PATH;
    dir.is_absolute()
        && room
        && std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o001 != 0)
}

/// What the child's environment needs for the notify socket: apply it to watchd's
/// environment (less its `WATCHD_*` settings) before spawning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildEnv {
    /// Always removed: systemd's variables meant watchd, never the child.
    pub remove: [&'static str; 3],
    /// Set: `NOTIFY_SOCKET`, and `WATCHDOG_USEC` with a stall window.
    pub set: Vec<(&'static str, OsString)>,
    /// `WATCHDOG_PID` must be the child's own pid, known only after fork: the spawn path sets
    /// it between fork and exec through [`Envp::finish`].
    pub watchdog_pid: bool,
}

/// The child's notify variables: `socket` is watchd's socket when there is one (`--notify`, or
/// watchd under systemd); `stall` the stall window (None or zero: no watchdog for the child).
pub fn child_env(socket: Option<&Path>, stall: Option<Duration>) -> ChildEnv {
    let mut set = Vec::new();
    let stall = stall.filter(|s| !s.is_zero());
    if let Some(path) = socket {
        set.push(("NOTIFY_SOCKET", path.as_os_str().to_os_string()));
        if let Some(stall) = stall {
            let usec = u64::try_from(stall.as_micros()).unwrap_or(u64::MAX).max(1);
            set.push(("WATCHDOG_USEC", usec.to_string().into()));
        }
    }
    ChildEnv { remove: PROTOCOL_VARS, set, watchdog_pid: socket.is_some() && stall.is_some() }
}

impl ChildEnv {
    /// `env` with these changes applied (the pure half of building the child's environment;
    /// `WATCHDOG_PID` is not in it, see [`Envp`]).
    pub fn apply<I>(&self, env: I) -> Vec<(OsString, OsString)>
    where
        I: IntoIterator<Item = (OsString, OsString)>,
    {
        let mut out: Vec<(OsString, OsString)> = env
            .into_iter()
            .filter(|(key, _)| !self.remove.iter().any(|r| key == r))
            .filter(|(key, _)| !self.set.iter().any(|(s, _)| key == s))
            .collect();
        out.extend(self.set.iter().map(|(k, v)| (OsString::from(k), v.clone())));
        out
    }
}

/// `WATCHDOG_PID=<pid>` in a fixed buffer, filled in the child between fork and exec, where
/// nothing may allocate: build the envp (with execve, not execv) before fork with a slot for
/// it, and in the child store `var.fill(getpid()).as_ptr()` in that slot.
pub struct PidVar {
    buf: [u8; 32],
}

impl PidVar {
    const PREFIX: &'static [u8] = b"WATCHDOG_PID=";

    pub const fn new() -> PidVar {
        PidVar { buf: [0; 32] }
    }

    /// Writes `WATCHDOG_PID=<pid>`. Async-signal-safe: no allocation, no lock, no panic
    /// (the buffer holds the longest i32).
    pub fn fill(&mut self, pid: i32) -> &CStr {
        let prefix = PidVar::PREFIX.len();
        self.buf[..prefix].copy_from_slice(PidVar::PREFIX);
        let mut digits = [0u8; 11];
        let mut n = pid.unsigned_abs();
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let mut at = prefix;
        if pid < 0 {
            self.buf[at] = b'-';
            at += 1;
        }
        for i in (0..len).rev() {
            self.buf[at] = digits[i];
            at += 1;
        }
        self.buf[at] = 0;
        CStr::from_bytes_until_nul(&self.buf).unwrap_or(c"WATCHDOG_PID=")
    }
}

impl Default for PidVar {
    fn default() -> PidVar {
        PidVar::new()
    }
}

/// A child's whole environment as execve wants it, built before fork, with room for
/// `WATCHDOG_PID` (see [`ChildEnv::watchdog_pid`]) that [`Envp::finish`] fills in the child.
pub struct Envp {
    _strings: Vec<CString>,
    /// NULL-terminated; with a pid slot, the slot is the entry before the NULL.
    ptrs: Vec<*const libc::c_char>,
    pid_slot: bool,
    pid: PidVar,
}

/// `KEY=VALUE` as exec takes it; `None` when either holds a NUL byte (it cannot be passed).
pub fn env_entry((key, value): (OsString, OsString)) -> Option<CString> {
    let mut entry = key.into_vec();
    entry.push(b'=');
    entry.extend_from_slice(value.as_bytes());
    CString::new(entry).ok()
}

impl Envp {
    /// `env` as built by [`ChildEnv::apply`]; `watchdog_pid` from [`ChildEnv::watchdog_pid`].
    /// Entries with a NUL byte cannot be passed and are left out.
    pub fn new(env: Vec<(OsString, OsString)>, watchdog_pid: bool) -> Envp {
        let strings: Vec<CString> = env.into_iter().filter_map(env_entry).collect();
        let mut ptrs: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        if watchdog_pid {
            ptrs.push(std::ptr::null());
        }
        ptrs.push(std::ptr::null());
        Envp { _strings: strings, ptrs, pid_slot: watchdog_pid, pid: PidVar::new() }
    }

    /// In the child, between fork and exec: fills `WATCHDOG_PID` with `pid` (the child's own,
    /// from getpid) and returns the envp for execve. Async-signal-safe: no allocation, no
    /// lock. The pointer is valid while `self` is neither moved nor dropped.
    pub fn finish(&mut self, pid: i32) -> *const *const libc::c_char {
        if self.pid_slot {
            let slot = self.ptrs.len() - 2;
            self.ptrs[slot] = self.pid.fill(pid).as_ptr();
        }
        self.ptrs.as_ptr()
    }
}

/// Where watchd's own service manager listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Path(PathBuf),
    /// `@name`: a Linux abstract socket.
    Abstract(Vec<u8>),
}

/// What watchd's own environment says about its service manager: `NOTIFY_SOCKET`, and
/// `WATCHDOG_USEC` when it is meant for watchd (`WATCHDOG_PID` unset or watchd's pid, as
/// `sd_watchdog_enabled` reads them). Empty variables count as unset. Pure.
pub fn upstream_from_vars(
    notify_socket: Option<&OsStr>,
    watchdog_usec: Option<&OsStr>,
    watchdog_pid: Option<&OsStr>,
    self_pid: i32,
) -> Result<Option<(Target, Option<Duration>)>, String> {
    let Some(socket) = nonempty(notify_socket) else {
        return Ok(None);
    };
    let bytes = socket.as_bytes();
    let target = match bytes.first() {
        Some(b'/') => Target::Path(PathBuf::from(socket)),
        Some(b'@') if bytes.len() > 1 => Target::Abstract(bytes[1..].to_vec()),
        _ => {
            return Err(format!(
                "NOTIFY_SOCKET={} is not supported (only a path or an @abstract name)",
                socket.to_string_lossy()
            ));
        }
    };
    let for_us = match nonempty(watchdog_pid) {
        None => true,
        Some(pid) => pid.to_str().and_then(|p| p.parse::<i32>().ok()) == Some(self_pid),
    };
    let watchdog = nonempty(watchdog_usec)
        .filter(|_| for_us)
        .and_then(|v| v.to_str())
        .and_then(parse_usec)
        .filter(|&usec| usec > 0)
        .map(Duration::from_micros);
    Ok(Some((target, watchdog)))
}

fn nonempty(var: Option<&OsStr>) -> Option<&OsStr> {
    var.filter(|v| !v.is_empty())
}

/// The sender to watchd's own service manager (a `Type=notify` systemd unit).
pub struct Upstream {
    fd: OwnedFd,
    addr: UnixAddr,
    watchdog: Option<Duration>,
}

impl Upstream {
    /// From watchd's own environment; `Ok(None)` when it has no `NOTIFY_SOCKET`.
    pub fn from_env() -> Result<Option<Upstream>, String> {
        let var = std::env::var_os;
        let (socket, usec, pid) = (var("NOTIFY_SOCKET"), var("WATCHDOG_USEC"), var("WATCHDOG_PID"));
        let self_pid = nix::unistd::getpid().as_raw();
        match upstream_from_vars(socket.as_deref(), usec.as_deref(), pid.as_deref(), self_pid)? {
            None => Ok(None),
            Some((target, watchdog)) => Upstream::new(&target, watchdog)
                .map(Some)
                .map_err(|e| format!("cannot reach NOTIFY_SOCKET: {e}")),
        }
    }

    pub fn new(target: &Target, watchdog: Option<Duration>) -> io::Result<Upstream> {
        let addr = match target {
            Target::Path(path) => UnixAddr::new(path)?,
            Target::Abstract(name) => UnixAddr::new_abstract(name)?,
        };
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        Ok(Upstream { fd, addr, watchdog })
    }

    /// systemd's `WATCHDOG_USEC` for watchd, when it gave one: send `WATCHDOG=1` every half of
    /// it while the tree shows evidence of life.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one message (`READY=1`, `STATUS=...\n`, ...). Never waits: a full queue or an
    /// absent listener is an error and the message is lost, as with any dropped output.
    pub fn send(&self, msg: &str) -> io::Result<()> {
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        loop {
            match socket::sendto(self.fd.as_raw_fd(), msg.as_bytes(), &self.addr, flags) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_message_of_the_table() {
        let msg = parse(b"READY=1\nSTATUS=serving 3 clients\nWATCHDOG=1\n").unwrap();
        assert!(msg.ready && msg.watchdog_ping && !msg.watchdog_trigger && !msg.stopping);
        assert_eq!(msg.status.as_deref(), Some("serving 3 clients"));
        assert_eq!(msg.skipped, 0);
        assert_eq!(msg.fields.len(), 3);

        let msg = parse(b"WATCHDOG=trigger").unwrap();
        assert!(msg.watchdog_trigger && !msg.watchdog_ping);
        let msg = parse(b"WATCHDOG_USEC=2500000\nEXTEND_TIMEOUT_USEC=0\nSTOPPING=1").unwrap();
        assert_eq!(msg.watchdog_usec, Some(2_500_000));
        assert_eq!(msg.extend_timeout_usec, Some(0));
        assert!(msg.stopping);
        let msg = parse(b"MAINPID=42\nERRNO=2\nX_CUSTOM=a=b").unwrap();
        assert_eq!(msg.field("X_CUSTOM"), Some("a=b"));
        assert_eq!(msg.fields.len(), 3);
        assert!(!msg.ready && msg.status.is_none());
    }

    #[test]
    fn malformed_lines_are_skipped_not_fatal() {
        let msg = parse(b"garbage\n=x\n1KEY=v\nK Y=v\nNUL=a\0b\n\xff=1\nREADY=1\n\n\n").unwrap();
        assert!(msg.ready);
        assert_eq!(msg.skipped, 6);
        assert_eq!(msg.fields, vec![("READY".to_string(), "1".to_string())]);
        // A value that does not parse has no effect but is still reported.
        let msg =
            parse(b"READY=yes\nWATCHDOG_USEC=-5\nEXTEND_TIMEOUT_USEC=1s\nWATCHDOG=2").unwrap();
        assert!(!msg.ready && !msg.watchdog_ping && !msg.watchdog_trigger);
        assert_eq!((msg.watchdog_usec, msg.extend_timeout_usec), (None, None));
        assert_eq!(msg.fields.len(), 4);
        assert_eq!(parse(b"WATCHDOG_USEC=99999999999999999999").unwrap().watchdog_usec, None);
    }

    #[test]
    fn the_first_line_of_a_key_decides() {
        let msg = parse(b"READY=0\nREADY=1\nSTATUS=a\nSTATUS=b").unwrap();
        assert!(!msg.ready);
        assert_eq!(msg.status.as_deref(), Some("a"));
        assert_eq!(msg.skipped, 2);
    }

    #[test]
    fn size_limit_is_systemds() {
        assert!(parse(&[b'x'; MAX_DATAGRAM]).is_ok());
        assert_eq!(parse(&[b'x'; MAX_DATAGRAM + 1]), Err(TooLong));
        assert_eq!(parse(b"").unwrap(), Message::default());
    }

    #[test]
    fn child_env_replaces_systemds_variables() {
        let path = Path::new("/tmp/watchd-abc/notify");
        let env = child_env(Some(path), Some(Duration::from_millis(2500)));
        assert!(env.watchdog_pid);
        let watchd_env = [
            ("PATH", "/bin"),
            ("NOTIFY_SOCKET", "/run/systemd/notify"),
            ("WATCHDOG_USEC", "30000000"),
            ("WATCHDOG_PID", "1"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let out = env.apply(watchd_env);
        let get = |k: &str| out.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("NOTIFY_SOCKET"), Some(path.as_os_str().into()));
        assert_eq!(get("WATCHDOG_USEC"), Some("2500000".into()));
        assert_eq!(get("WATCHDOG_PID"), None);
        assert_eq!(get("PATH"), Some("/bin".into()));
        assert_eq!(out.len(), 3);

        // No stall window: a socket but no watchdog. No socket: nothing of systemd's passes.
        let env = child_env(Some(path), Some(Duration::ZERO));
        assert!(!env.watchdog_pid && env.set.len() == 1);
        let env = child_env(None, Some(Duration::from_secs(1)));
        assert!(!env.watchdog_pid && env.set.is_empty());
        let out = env.apply([(OsString::from("WATCHDOG_PID"), OsString::from("7"))]);
        assert!(out.is_empty());
        // Sub-microsecond windows still give a watchdog, never "0" (which means off).
        let env = child_env(Some(path), Some(Duration::from_nanos(10)));
        assert_eq!(env.set[1].1, OsString::from("1"));
    }

    #[test]
    fn pid_var_formats_any_pid() {
        let mut var = PidVar::new();
        assert_eq!(var.fill(1).to_bytes(), b"WATCHDOG_PID=1");
        assert_eq!(var.fill(4_194_304).to_bytes(), b"WATCHDOG_PID=4194304");
        assert_eq!(var.fill(i32::MAX).to_bytes(), b"WATCHDOG_PID=2147483647");
        assert_eq!(var.fill(i32::MIN).to_bytes(), b"WATCHDOG_PID=-2147483648");
        assert_eq!(var.fill(0).to_bytes(), b"WATCHDOG_PID=0");
    }

    #[test]
    fn upstream_follows_sd_watchdog_enabled() {
        let os = |s: &'static str| Some(OsStr::new(s));
        let up = |sock, usec, pid| upstream_from_vars(sock, usec, pid, 100);
        assert_eq!(up(None, os("1000"), None), Ok(None));
        assert_eq!(up(os(""), None, None), Ok(None));
        let path = Target::Path("/run/systemd/notify".into());
        let ms = Some(Duration::from_millis(1));
        assert_eq!(up(os("/run/systemd/notify"), os("1000"), None), Ok(Some((path.clone(), ms))));
        assert_eq!(
            up(os("/run/systemd/notify"), os("1000"), os("100")),
            Ok(Some((path.clone(), ms)))
        );
        // Meant for another process, zero, or garbage: no watchdog, but still a socket.
        for (usec, pid) in [("1000", "101"), ("0", "100"), ("x", "100"), ("1000", "x")] {
            assert_eq!(
                up(os("/run/systemd/notify"), os(usec), os(pid)),
                Ok(Some((path.clone(), None))),
                "{usec} {pid}"
            );
        }
        assert_eq!(up(os("@sd"), None, None), Ok(Some((Target::Abstract(b"sd".to_vec()), None))));
        for bad in ["@", "relative/path", "vsock:2:1234"] {
            assert!(up(os(bad), None, None).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_effects_follow_fields(
            bytes in proptest::collection::vec(any::<u8>(), 0..5000)
        ) {
            match parse(&bytes) {
                Err(TooLong) => prop_assert!(bytes.len() > MAX_DATAGRAM),
                Ok(msg) => {
                    let lines = bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
                    prop_assert_eq!(msg.fields.len() + msg.skipped, lines);
                    prop_assert_eq!(msg.ready, msg.field("READY") == Some("1"));
                    prop_assert_eq!(msg.stopping, msg.field("STOPPING") == Some("1"));
                    prop_assert_eq!(msg.status.as_deref(), msg.field("STATUS"));
                    prop_assert!(!(msg.watchdog_ping && msg.watchdog_trigger));
                    let mut keys: Vec<_> = msg.fields.iter().map(|(k, _)| k).collect();
                    keys.sort();
                    keys.dedup();
                    prop_assert_eq!(keys.len(), msg.fields.len());
                }
            }
        }

        #[test]
        fn well_formed_fields_round_trip(
            fields in proptest::collection::btree_map("[A-Z_][A-Z0-9_]{0,12}", "[^\n\0]{0,40}", 0..12)
        ) {
            let text: String = fields.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            prop_assume!(text.len() <= MAX_DATAGRAM);
            let msg = parse(text.as_bytes()).unwrap();
            prop_assert_eq!(msg.skipped, 0);
            let got: Vec<_> = msg.fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let want: Vec<_> = fields.into_iter().collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn usec_values_round_trip(n in any::<u64>()) {
            let msg = parse(format!("WATCHDOG_USEC={n}\nEXTEND_TIMEOUT_USEC={n}").as_bytes()).unwrap();
            prop_assert_eq!(msg.watchdog_usec, Some(n));
            prop_assert_eq!(msg.extend_timeout_usec, Some(n));
        }
    }
}
