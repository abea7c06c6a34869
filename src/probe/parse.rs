//! Parsers of the /proc text watchd reads on every probe: `stat` and `io`. Pure: bytes in,
//! typed fields out, `None` on anything malformed or truncated.

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
pub(super) fn parse_threads(text: &[u8]) -> Option<u64> {
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
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
}
