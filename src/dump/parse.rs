//! Pure parsers of the /proc files the dump reads: syscall, wchan, stack, sched, net/{tcp,udp,
//! unix}, a stat line's comm and thread count, cmdline and descriptor links. No I/O; any input,
//! truncated or garbage, gives `None` (or skips the bad line), never a panic.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// What `/proc/<pid>/syscall` says a task is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syscall {
    /// On a CPU or runnable: the kernel does not look.
    Running,
    /// Blocked, but not in a system call (stopped in user space, a page fault).
    Outside { sp: u64, pc: u64 },
    /// Blocked inside system call `nr`.
    In { nr: u64, args: [u64; 6], sp: u64, pc: u64 },
}

/// Parses `/proc/<pid>/syscall`: `running`, `-1 SP PC`, or `NR A0 .. A5 SP PC`, numbers after
/// the first in `0x` hex, ending in a newline (a line without one may have been cut short).
pub fn parse_syscall(text: &[u8]) -> Option<Syscall> {
    let line = text.strip_suffix(b"\n")?;
    if line == b"running" {
        return Some(Syscall::Running);
    }
    let mut words = line.split(|&b| b == b' ');
    let first = words.next()?;
    let mut hex = [0u64; 8];
    let mut n = 0;
    for word in words {
        *hex.get_mut(n)? = parse_hex(word.strip_prefix(b"0x")?)?;
        n += 1;
    }
    if let Some(digits) = first.strip_prefix(b"-") {
        parse_dec(digits).filter(|&v| v > 0)?;
        return (n == 2).then_some(Syscall::Outside { sp: hex[0], pc: hex[1] });
    }
    let nr = parse_dec(first)?;
    let [a0, a1, a2, a3, a4, a5, sp, pc] = hex;
    (n == 8).then_some(Syscall::In { nr, args: [a0, a1, a2, a3, a4, a5], sp, pc })
}

/// Parses `/proc/<pid>/wchan`: a kernel symbol, or `0` when the task runs or the kernel will not
/// say (not root, kernel pointers hidden). Symbols are `[A-Za-z0-9_.$]`, e.g. `do_sys_poll.isra.0`.
pub fn parse_wchan(text: &[u8]) -> Option<&str> {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    if text.is_empty() || text == b"0" || text.len() > 128 {
        return None;
    }
    text.iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'$'))
        .then(|| std::str::from_utf8(text).ok())?
}

/// At most this many frames of a kernel stack are kept.
pub const MAX_FRAMES: usize = 64;

/// Parses `/proc/<pid>/stack`: lines `[<ADDR>] symbol+0xOFF/0xSIZE [module]`, returning the part
/// after the address. Lines that do not have that shape or are not printable ASCII are skipped,
/// and so is a last line without its newline.
pub fn parse_stack(text: &[u8]) -> Vec<&str> {
    let mut frames = Vec::new();
    let mut rest = text;
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        let Some(frame) = line.strip_prefix(b"[<").and_then(|l| {
            let close = l.windows(3).position(|w| w == b">] ")?;
            Some(&l[close + 3..])
        }) else {
            continue;
        };
        if frame.is_empty() || !frame.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            continue;
        }
        if let Ok(frame) = std::str::from_utf8(frame) {
            frames.push(frame);
        }
        if frames.len() == MAX_FRAMES {
            break;
        }
    }
    frames
}

/// `se.exec_start` of `/proc/<pid>/sched` in nanoseconds: when the task last ran (the kernel
/// moves it forward while the task runs, and at the moment it stops). The kernel prints it as
/// milliseconds, a dot, and six digits of the remaining nanoseconds.
pub fn parse_exec_start(text: &[u8]) -> Option<u64> {
    let at = text.windows(14).position(|w| w == b"se.exec_start ")?;
    if at != 0 && text[at - 1] != b'\n' {
        return None;
    }
    let line = &text[at + 14..];
    let line = &line[..line.iter().position(|&b| b == b'\n')?];
    let colon = line.iter().position(|&b| b == b':')?;
    if !line[..colon].iter().all(|&b| b == b' ') {
        return None;
    }
    let value = line[colon + 1..].trim_ascii_start();
    let dot = value.iter().position(|&b| b == b'.')?;
    let (ms, ns) = (&value[..dot], &value[dot + 1..]);
    if ns.len() != 6 {
        return None;
    }
    parse_dec(ms)?.checked_mul(1_000_000)?.checked_add(parse_dec(ns)?)
}

/// A stat line's comm (between the first `(` and the last `)`) and field 17, num_threads.
pub fn parse_comm_threads(text: &[u8]) -> Option<(&[u8], u64)> {
    let open = text.iter().position(|&b| b == b'(')?;
    let close = text.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    // After `) `: state is field 0, num_threads field 17.
    let mut fields = text[close + 1..].strip_prefix(b" ")?.split(|&b| b == b' ');
    let threads = parse_dec(fields.nth(17)?)?;
    Some((&text[open + 1..close], threads))
}

/// `/proc/<pid>/cmdline` as one line: arguments joined by spaces, invalid UTF-8 replaced.
/// A kernel thread and a zombie have none: "".
pub fn cmdline(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    let joined: Vec<u8> = raw.iter().map(|&b| if b == 0 { b' ' } else { b }).collect();
    String::from_utf8_lossy(&joined).into_owned()
}

/// What a descriptor is, from its `/proc/<pid>/fd/<n>` link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdKind {
    Pipe,
    /// With the socket's inode, to look it up in /proc/net.
    Socket(u64),
    /// An eventpoll, eventfd, timerfd, signalfd, pidfd...: `anon_inode:[eventpoll]`.
    Anon,
    /// A path: a file, a device, a FIFO, a deleted file (`... (deleted)`).
    File,
    Other,
}

pub fn classify_link(link: &[u8]) -> FdKind {
    let inode = |prefix: &[u8]| {
        link.strip_prefix(prefix).and_then(|l| l.strip_suffix(b"]")).and_then(parse_dec)
    };
    if inode(b"pipe:[").is_some() {
        FdKind::Pipe
    } else if let Some(inode) = inode(b"socket:[") {
        FdKind::Socket(inode)
    } else if link.starts_with(b"anon_inode:") {
        FdKind::Anon
    } else if link.starts_with(b"/") {
        FdKind::File
    } else {
        FdKind::Other
    }
}

/// One socket of `/proc/<pid>/net/{tcp,tcp6,udp,udp6}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InetLine {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The kernel's TCP state number (UDP uses 1 for connected, 7 for not).
    pub state: u8,
    pub inode: u64,
}

/// Parses one line of `/proc/net/{tcp,tcp6,udp,udp6}`:
/// `SL: LOCAL REMOTE ST TX:RX TR:WHEN RETRNSMT UID TIMEOUT INODE ...`, addresses as
/// `HEX:PORT`, the hex address being the kernel's 32-bit words in host byte order (8 digits for
/// IPv4, 32 for IPv6). The header and malformed lines give `None`.
pub fn parse_inet_line(line: &[u8]) -> Option<InetLine> {
    let mut f = line.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty());
    let sl = f.next()?.strip_suffix(b":")?;
    parse_dec(sl)?;
    let local = parse_inet_addr(f.next()?)?;
    let remote = parse_inet_addr(f.next()?)?;
    let state = f.next()?;
    if state.len() != 2 {
        return None;
    }
    let state = u8::try_from(parse_hex(state)?).ok()?;
    // tx:rx, tr:when, retrnsmt, uid, timeout.
    for _ in 0..5 {
        f.next()?;
    }
    let inode = parse_dec(f.next()?)?;
    Some(InetLine { local, remote, state, inode })
}

fn parse_inet_addr(word: &[u8]) -> Option<SocketAddr> {
    let colon = word.iter().position(|&b| b == b':')?;
    let (hex, port) = (&word[..colon], &word[colon + 1..]);
    if port.len() != 4 {
        return None;
    }
    let port = u16::try_from(parse_hex(port)?).ok()?;
    let word32 = |i: usize| -> Option<[u8; 4]> {
        let chunk = hex.get(i * 8..i * 8 + 8)?;
        Some(u32::try_from(parse_hex(chunk)?).ok()?.to_ne_bytes())
    };
    let ip = match hex.len() {
        8 => Ipv4Addr::from(word32(0)?).into(),
        32 => {
            let mut octets = [0u8; 16];
            for i in 0..4 {
                octets[i * 4..i * 4 + 4].copy_from_slice(&word32(i)?);
            }
            Ipv6Addr::from(octets).into()
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The name of a TCP state number, as `ss` spells it.
pub fn tcp_state(state: u8) -> Option<&'static str> {
    Some(match state {
        1 => "ESTAB",
        2 => "SYN-SENT",
        3 => "SYN-RECV",
        4 => "FIN-WAIT-1",
        5 => "FIN-WAIT-2",
        6 => "TIME-WAIT",
        7 => "CLOSE",
        8 => "CLOSE-WAIT",
        9 => "LAST-ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW-SYN-RECV",
        _ => return None,
    })
}

/// One socket of `/proc/<pid>/net/unix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixLine<'a> {
    pub flags: u32,
    /// 1 stream, 2 dgram, 5 seqpacket.
    pub kind: u16,
    /// 1 unconnected, 2 connecting, 3 connected, 4 disconnecting.
    pub state: u8,
    pub inode: u64,
    /// The bound path (`@name` for the abstract namespace), if any.
    pub path: Option<&'a [u8]>,
}

/// `flags` bit of a listening unix socket (the kernel's __SO_ACCEPTCON).
pub const UNIX_LISTENING: u32 = 1 << 16;

/// Parses one line of `/proc/net/unix`: `NUM: REFCOUNT PROTOCOL FLAGS TYPE ST INODE [PATH]`, the
/// inode right-aligned in five columns, the path everything after the space that follows it
/// (a path may hold spaces).
pub fn parse_unix_line(line: &[u8]) -> Option<UnixLine<'_>> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut rest = line;
    let mut word = || -> Option<&[u8]> {
        let start = rest.iter().position(|&b| b != b' ')?;
        let len = rest[start..].iter().position(|&b| b == b' ').unwrap_or(rest.len() - start);
        let w = &rest[start..start + len];
        rest = &rest[start + len..];
        Some(w)
    };
    let num = word()?.strip_suffix(b":")?;
    parse_hex(num)?;
    parse_hex(word()?)?; // refcount
    parse_hex(word()?)?; // protocol
    let flags = u32::try_from(parse_hex(word()?)?).ok()?;
    let kind = u16::try_from(parse_hex(word()?)?).ok()?;
    let state = u8::try_from(parse_hex(word()?)?).ok()?;
    let inode = parse_dec(word()?)?;
    let path = match rest {
        [] => None,
        [b' ', path @ ..] if !path.is_empty() => Some(path),
        _ => return None,
    };
    Some(UnixLine { flags, kind, state, inode, path })
}

/// Decimal digits only, no sign, no overflow.
pub fn parse_dec(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then_some(())?;
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Hex digits only (either case), at most 16.
fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| Some(acc << 4 | u64::from(char::from(b).to_digit(16)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn syscall_lines_the_kernel_writes() {
        let sleep =
            b"230 0x0 0x0 0x7ffd7ff9ea20 0x7ffd7ff9ea60 0x0 0x0 0x7ffd7ff9ea08 0x7fd3a8083503\n";
        assert_eq!(
            parse_syscall(sleep),
            Some(Syscall::In {
                nr: 230,
                args: [0, 0, 0x7ffd7ff9ea20, 0x7ffd7ff9ea60, 0, 0],
                sp: 0x7ffd7ff9ea08,
                pc: 0x7fd3a8083503,
            })
        );
        assert_eq!(parse_syscall(b"running\n"), Some(Syscall::Running));
        assert_eq!(parse_syscall(b"-1 0x0 0x0\n"), Some(Syscall::Outside { sp: 0, pc: 0 }));
        assert_eq!(
            parse_syscall(b"-1 0x7ffc 0x4011a6\n"),
            Some(Syscall::Outside { sp: 0x7ffc, pc: 0x4011a6 })
        );
        // Cut short, missing pieces, junk.
        assert_eq!(parse_syscall(b"running"), None);
        assert_eq!(parse_syscall(&sleep[..sleep.len() - 1]), None);
        assert_eq!(parse_syscall(b"230 0x0 0x0 0x0 0x0 0x0 0x0 0x0\n"), None);
        assert_eq!(parse_syscall(b"230 0x0 0x0 0x0 0x0 0x0 0x0 0x0 0x0 0x0\n"), None);
        assert_eq!(parse_syscall(b"-1 0x0\n"), None);
        assert_eq!(parse_syscall(b"-0 0x0 0x0\n"), None);
        assert_eq!(parse_syscall(b"1 0x 0x0 0x0 0x0 0x0 0x0 0x0 0x0\n"), None);
        assert_eq!(parse_syscall(b"1 0 0x0 0x0 0x0 0x0 0x0 0x0 0x0\n"), None);
        assert_eq!(parse_syscall(b"\n"), None);
    }

    #[test]
    fn wchan_symbols_and_zero() {
        assert_eq!(parse_wchan(b"hrtimer_nanosleep"), Some("hrtimer_nanosleep"));
        assert_eq!(parse_wchan(b"do_sys_poll.isra.0\n"), Some("do_sys_poll.isra.0"));
        assert_eq!(parse_wchan(b"0"), None);
        assert_eq!(parse_wchan(b""), None);
        assert_eq!(parse_wchan(b"pipe read"), None);
        assert_eq!(parse_wchan(&[b'a'; 129]), None);
    }

    #[test]
    fn stack_frames() {
        let text =
            b"[<0>] hrtimer_nanosleep+0x74/0xf0\n[<0>] nfs_wait_bit_killable+0x1c/0x80 [nfs]\n\
                     garbage\n[<0>] \n[<0>] do_syscall_64+0x71/0x280\n[<0>] cut_sho";
        assert_eq!(
            parse_stack(text),
            [
                "hrtimer_nanosleep+0x74/0xf0",
                "nfs_wait_bit_killable+0x1c/0x80 [nfs]",
                "do_syscall_64+0x71/0x280"
            ]
        );
        assert!(parse_stack(b"").is_empty());
        let deep = b"[<0>] f+0x1/0x2\n".repeat(100);
        assert_eq!(parse_stack(&deep).len(), MAX_FRAMES);
    }

    #[test]
    fn exec_start_from_sched() {
        let text = b"sleep (19964, #threads: 1)\n---------\nse.exec_start                                :        470607.273945\nse.vruntime   :  1.0\n";
        assert_eq!(parse_exec_start(text), Some(470_607_273_945));
        assert_eq!(parse_exec_start(b"se.exec_start : 0.000001\n"), Some(1));
        assert_eq!(parse_exec_start(b"se.exec_start : 12.34\n"), None);
        assert_eq!(parse_exec_start(b"se.exec_start : -5.000000\n"), None);
        assert_eq!(parse_exec_start(b"xse.exec_start : 1.000000\n"), None);
        assert_eq!(parse_exec_start(b"se.exec_start : 1.000000"), None);
    }

    #[test]
    fn comm_and_threads() {
        let line =
            b"42 (a) b) S 1 42 42 0 -1 4194560 10 0 0 0 1 2 0 0 20 0 7 0 100 1000 50 184467 1 1\n";
        assert_eq!(parse_comm_threads(line), Some((&b"a) b"[..], 7)));
        assert_eq!(parse_comm_threads(b"42 (x) S 1 2"), None);
        assert_eq!(
            parse_comm_threads(b"42 )x( S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18"),
            None
        );
    }

    #[test]
    fn cmdlines() {
        assert_eq!(cmdline(b"python3\0-c\0print(1)\0"), "python3 -c print(1)");
        assert_eq!(cmdline(b""), "");
        assert_eq!(cmdline(b"sh\xff\0"), "sh\u{fffd}");
        assert_eq!(cmdline(b"no terminator"), "no terminator");
    }

    #[test]
    fn links() {
        assert_eq!(classify_link(b"pipe:[5678]"), FdKind::Pipe);
        assert_eq!(classify_link(b"socket:[123]"), FdKind::Socket(123));
        assert_eq!(classify_link(b"socket:[]"), FdKind::Other);
        assert_eq!(classify_link(b"anon_inode:[eventpoll]"), FdKind::Anon);
        assert_eq!(classify_link(b"/dev/null"), FdKind::File);
        assert_eq!(classify_link(b"/tmp/x (deleted)"), FdKind::File);
        assert_eq!(classify_link(b"net:[4026531840]"), FdKind::Other);
    }

    #[test]
    fn inet_lines_the_kernel_writes() {
        let v4 = b"   0: 0100007F:1F90 0100007F:A2B6 01 00000000:00000000 00:00000000 00000000  1000        0 655 1 0000000067deee49 100 0 0 10 0\n";
        let line = parse_inet_line(v4).expect("v4 line");
        assert_eq!(line.local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(line.remote, "127.0.0.1:41654".parse().unwrap());
        assert_eq!((line.state, line.inode), (1, 655));
        let v6 = b"   1: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9876 1 0000000000000000 100 0 0 10 0\n";
        let line = parse_inet_line(v6).expect("v6 line");
        assert_eq!(line.local, "[::1]:22".parse().unwrap());
        assert_eq!((line.state, line.inode), (10, 9876));
        let header = b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
        assert_eq!(parse_inet_line(header), None);
        assert_eq!(parse_inet_line(&v4[..40]), None);
        assert_eq!(parse_inet_line(b"0: 0100007F:1F9 0100007F:A2B6 01 0:0 0:0 0 0 0 1"), None);
    }

    #[test]
    fn unix_lines_the_kernel_writes() {
        let listening =
            b"00000000deef1694: 00000002 00000000 00010000 0001 01 21454 /tmp/dk/sock\n";
        let line = parse_unix_line(listening).expect("bound");
        assert_eq!((line.flags, line.kind, line.state, line.inode), (UNIX_LISTENING, 1, 1, 21454));
        assert_eq!(line.path, Some(&b"/tmp/dk/sock"[..]));
        let unnamed = b"000000004854db76: 00000003 00000000 00000000 0001 03   265\n";
        assert_eq!(parse_unix_line(unnamed).map(|l| (l.inode, l.path)), Some((265, None)));
        let spaced = b"0000000000000000: 00000002 00000000 00000000 0002 01 777 @a b\n";
        assert_eq!(parse_unix_line(spaced).and_then(|l| l.path), Some(&b"@a b"[..]));
        let header = b"Num       RefCount Protocol Flags    Type St Inode Path\n";
        assert_eq!(parse_unix_line(header), None);
        assert_eq!(parse_unix_line(b"0: 2 0 0 1 1"), None);
    }

    #[test]
    fn tcp_state_names() {
        assert_eq!(tcp_state(1), Some("ESTAB"));
        assert_eq!(tcp_state(10), Some("LISTEN"));
        assert_eq!(tcp_state(0), None);
    }

    // ---- properties ---------------------------------------------------------------------------

    fn syscall_text(s: &Syscall) -> String {
        match *s {
            Syscall::Running => "running\n".into(),
            Syscall::Outside { sp, pc } => format!("-1 {sp:#x} {pc:#x}\n"),
            Syscall::In { nr, args, sp, pc } => {
                let [a, b, c, d, e, f] = args;
                format!("{nr} {a:#x} {b:#x} {c:#x} {d:#x} {e:#x} {f:#x} {sp:#x} {pc:#x}\n")
            }
        }
    }

    fn any_syscall() -> impl Strategy<Value = Syscall> {
        prop_oneof![
            Just(Syscall::Running),
            (any::<u64>(), any::<u64>()).prop_map(|(sp, pc)| Syscall::Outside { sp, pc }),
            (0..1_000_000u64, any::<[u64; 6]>(), any::<u64>(), any::<u64>())
                .prop_map(|(nr, args, sp, pc)| Syscall::In { nr, args, sp, pc }),
        ]
    }

    /// An address as the kernel prints it: each 32-bit word of the address, read in host order.
    fn inet_addr_text(addr: SocketAddr) -> String {
        let word = |b: &[u8]| format!("{:08X}", u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        let hex: String = match addr.ip() {
            std::net::IpAddr::V4(ip) => word(&ip.octets()),
            std::net::IpAddr::V6(ip) => ip.octets().chunks(4).map(word).collect(),
        };
        format!("{hex}:{:04X}", addr.port())
    }

    fn any_addr(v6: bool) -> BoxedStrategy<SocketAddr> {
        if v6 {
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(Ipv6Addr::from(ip).into(), port))
                .boxed()
        } else {
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(Ipv4Addr::from(ip).into(), port))
                .boxed()
        }
    }

    fn any_inet_line() -> impl Strategy<Value = InetLine> {
        any::<bool>().prop_flat_map(|v6| {
            (any_addr(v6), any_addr(v6), any::<u8>(), any::<u64>())
                .prop_map(|(local, remote, state, inode)| InetLine { local, remote, state, inode })
        })
    }

    proptest! {
        #[test]
        fn no_parser_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_syscall(&bytes);
            let _ = parse_wchan(&bytes);
            let _ = parse_stack(&bytes);
            let _ = parse_exec_start(&bytes);
            let _ = parse_comm_threads(&bytes);
            let _ = cmdline(&bytes);
            let _ = classify_link(&bytes);
            let _ = parse_inet_line(&bytes);
            let _ = parse_unix_line(&bytes);
        }

        #[test]
        fn no_parser_panics_on_plausible_text(text in "[-0-9a-fx: \n.\\[\\]<>()A-F_]{0,200}") {
            let bytes = text.as_bytes();
            let _ = parse_syscall(bytes);
            let _ = parse_stack(bytes);
            let _ = parse_exec_start(bytes);
            let _ = parse_comm_threads(bytes);
            let _ = parse_inet_line(bytes);
            let _ = parse_unix_line(bytes);
        }

        #[test]
        fn syscall_round_trips(s in any_syscall()) {
            let text = syscall_text(&s);
            prop_assert_eq!(parse_syscall(text.as_bytes()), Some(s));
            // Any cut of the line is rejected, never misread.
            for cut in 0..text.len() {
                prop_assert_eq!(parse_syscall(&text.as_bytes()[..cut]), None);
            }
        }

        #[test]
        fn wchan_round_trips(sym in "[A-Za-z_][A-Za-z0-9_.$]{0,60}") {
            prop_assert_eq!(parse_wchan(sym.as_bytes()), Some(sym.as_str()));
        }

        #[test]
        fn stack_round_trips(frames in proptest::collection::vec("[a-z_]{1,20}\\+0x[0-9a-f]{1,4}/0x[0-9a-f]{1,4}( \\[[a-z]{2,8}\\])?", 0..20)) {
            let text: String = frames.iter().map(|f| format!("[<0>] {f}\n")).collect();
            prop_assert_eq!(parse_stack(text.as_bytes()), frames.iter().map(String::as_str).collect::<Vec<_>>());
        }

        #[test]
        fn exec_start_round_trips(ns in 0..u64::MAX / 2, pad in 0usize..40) {
            let text = format!("x (1, #threads: 1)\n---\nse.exec_start{}:{:>21}.{:06}\nse.vruntime : 1.0\n",
                " ".repeat(pad + 1), ns / 1_000_000, ns % 1_000_000);
            prop_assert_eq!(parse_exec_start(text.as_bytes()), Some(ns));
        }

        #[test]
        fn comm_threads_round_trip(comm in proptest::collection::vec(any::<u8>(), 0..20), threads in any::<u32>()) {
            let mut line = b"7 (".to_vec();
            line.extend_from_slice(&comm);
            line.extend_from_slice(format!(") S 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 {threads} 0 100 0 5 1\n").as_bytes());
            prop_assert_eq!(parse_comm_threads(&line), Some((&comm[..], u64::from(threads))));
        }

        #[test]
        fn cmdline_has_no_nul(raw in proptest::collection::vec(any::<u8>(), 0..100)) {
            prop_assert!(!cmdline(&raw).contains('\0'));
        }

        #[test]
        fn inet_line_round_trips(l in any_inet_line(), sl in 0u32..100_000, uid in any::<u32>()) {
            let text = format!("{sl:4}: {} {} {:02X} 00000000:00000000 00:00000000 00000000 {uid:5} 0 {} 1 0000000000000000 100 0 0 10 0\n",
                inet_addr_text(l.local), inet_addr_text(l.remote), l.state, l.inode);
            prop_assert_eq!(parse_inet_line(text.as_bytes()), Some(l));
        }

        #[test]
        fn unix_line_round_trips(flags in any::<u32>(), kind in any::<u16>(), state in any::<u8>(), inode in any::<u64>(), path in proptest::option::of("[@/][ -~]{0,40}")) {
            let mut text = format!("{:016x}: 00000002 00000000 {flags:08X} {kind:04X} {state:02X} {inode:5}", 0xdeadbeefu64);
            if let Some(path) = &path {
                text.push(' ');
                text.push_str(path);
            }
            text.push('\n');
            let want = UnixLine { flags, kind, state, inode, path: path.as_deref().map(str::as_bytes) };
            prop_assert_eq!(parse_unix_line(text.as_bytes()), Some(want));
        }
    }
}
