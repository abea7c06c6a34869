//! The units of the command line and of watchd's messages, parsed and printed in one place:
//! DURATION, SIZE, CORES and fractions in, bytes and durations for humans out. Pure.

use std::fmt::Write as _;
use std::time::Duration;

/// Longer than any run: durations above it mean "practically forever" and are clamped, so
/// adding one to a clock reading can never overflow.
pub const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A non-negative decimal number: digits, at most one '.', nothing else (no sign, no exponent,
/// no `inf`/`nan` that `f64::from_str` would take).
fn parse_decimal(s: &str) -> Option<f64> {
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    let dots = s.bytes().filter(|&b| b == b'.').count();
    if digits == 0 || dots > 1 || digits + dots != s.len() {
        return None;
    }
    s.parse::<f64>().ok().filter(|x| x.is_finite())
}

/// DURATION: humantime (`250ms`, `1m30s`, `2h`), or a number of seconds as GNU timeout reads
/// it: decimals, an exponent, `inf`, and one of its suffixes `s`, `m`, `h`, `d` (`10`, `0.5`,
/// `1e-3`, `2.5e2`, `1.5m`, `2.34e+5d`). A value past what the clock holds is "forever"
/// ([`FOREVER`]); one too small to see (`1e-10000`) is 0.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if let Some(d) = timeout_style(s) {
        return Ok(d);
    }
    match humantime::parse_duration(s) {
        Ok(d) => Ok(d.min(FOREVER)),
        Err(humantime::DurationError::NumberOverflow) => Ok(FOREVER),
        Err(err) => {
            Err(format!("{err} (expected e.g. 250ms, 5s, 1m30s, 2h, or a number of seconds)"))
        }
    }
}

/// A number with timeout(1)'s optional suffix, or None when `s` is not one.
fn timeout_style(s: &str) -> Option<Duration> {
    let (number, factor) = match s.as_bytes().last()? {
        b's' => (&s[..s.len() - 1], 1),
        b'm' => (&s[..s.len() - 1], 60),
        b'h' => (&s[..s.len() - 1], 3600),
        b'd' => (&s[..s.len() - 1], 86_400),
        _ => (s, 1),
    };
    if number.eq_ignore_ascii_case("inf") || number.eq_ignore_ascii_case("infinity") {
        return Some(FOREVER);
    }
    let (mantissa, exponent) = match number.find(['e', 'E']) {
        Some(at) => (&number[..at], Some(&number[at + 1..])),
        None => (number, None),
    };
    parse_decimal(mantissa)?;
    let Some(exponent) = exponent else {
        // Exact to the nanosecond: f64 would turn 0.001 into 999,999 ns.
        let secs = bare_seconds(mantissa).unwrap_or(FOREVER);
        return Some(secs.checked_mul(factor).map_or(FOREVER, |d| d.min(FOREVER)));
    };
    let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs = number.parse::<f64>().ok()? * f64::from(factor);
    if secs.is_nan() {
        return None;
    }
    if secs >= FOREVER.as_secs_f64() {
        return Some(FOREVER);
    }
    Some(Duration::from_nanos((secs * 1e9).round() as u64))
}

/// `12.345` seconds, exactly to the nanosecond (f64 would turn `0.001` into 999,999 ns).
fn bare_seconds(s: &str) -> Option<Duration> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs = if whole.is_empty() { 0 } else { whole.parse::<u64>().ok()? };
    let nanos = frac.bytes().chain(std::iter::repeat(b'0')).take(9);
    let nanos = nanos.fold(0u32, |n, digit| n * 10 + u32::from(digit - b'0'));
    Some(Duration::new(secs, nanos))
}

/// SIZE: bytes, or a number with K/M/G/T (powers of 1024), optionally followed by `iB` or `B`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || "expected a size like 1048576, 512K, 512M, 2G or 1.5GiB".to_string();
    let s = text.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number = parse_decimal(number).ok_or_else(bad)?;
    let unit = unit.trim_start().to_ascii_uppercase();
    let unit = unit.strip_suffix("IB").or_else(|| unit.strip_suffix('B')).unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(bad()),
    };
    let bytes = number * (1u64 << shift) as f64;
    if bytes >= u64::MAX as f64 {
        return Err("size too large".to_string());
    }
    Ok(bytes.round() as u64)
}

/// CORES: a non-negative decimal number of CPU cores (`1.0` = one core fully busy).
pub fn parse_cores(text: &str) -> Result<f64, String> {
    let cores =
        parse_decimal(text.trim()).ok_or("expected a number of cores like 1, 0.5 or 2.5")?;
    if cores > 1_000_000.0 {
        return Err("more cores than any machine has".to_string());
    }
    Ok(cores)
}

/// A fraction in (0, 1] of --cpu-limit.
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    match parse_decimal(text.trim()) {
        Some(x) if x > 0.0 && x <= 1.0 => Ok(x),
        _ => Err("expected a fraction of --cpu-limit greater than 0 and at most 1, like 0.85"
            .to_string()),
    }
}

/// Bytes for humans, powers of 1024: "900 B", "512 KiB", "1.2 GiB", "12.5 MiB".
/// One decimal below 100 units, none from 100 up (three significant digits are plenty).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    // Round before choosing the unit, so 1023.9 KiB reads "1.0 MiB", not "1024 KiB".
    if value.round() >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let tenths = (value * 10.0).round();
    if tenths >= 1000.0 {
        format!("{:.0} {}", value.round(), UNITS[unit])
    } else {
        format!("{:.1} {}", tenths / 10.0, UNITS[unit])
    }
}

/// Durations for humans, in the units the flags accept: "250ms", "1.5s", "30s", "2m30s", "1h5m".
/// Milliseconds below a second, one trimmed decimal below a minute, whole seconds above.
pub fn human_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let nanos = d.as_nanos();
    let ms = (nanos + 500_000) / 1_000_000;
    if ms < 1000 {
        // A nonzero duration never reads "0ms".
        return format!("{}ms", ms.max(1));
    }
    let tenths = (nanos + 50_000_000) / 100_000_000;
    if tenths < 600 {
        let (s, t) = (tenths / 10, tenths % 10);
        return if t == 0 { format!("{s}s") } else { format!("{s}.{t}s") };
    }
    let secs = (nanos + 500_000_000) / 1_000_000_000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            // Writing to a String cannot fail.
            let _ = write!(out, "{n}{unit}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations() {
        let ok = [
            ("250ms", Duration::from_millis(250)),
            ("5s", Duration::from_secs(5)),
            ("1m30s", Duration::from_secs(90)),
            ("2h", Duration::from_secs(7200)),
            ("10", Duration::from_secs(10)),
            ("0.5", Duration::from_millis(500)),
            ("0", Duration::ZERO),
            (" 3 ", Duration::from_secs(3)),
            (".5", Duration::from_millis(500)),
            ("1e-3", Duration::from_millis(1)),
            ("2.5e2", Duration::from_secs(250)),
            ("1E+1", Duration::from_secs(10)),
            ("1e-10000", Duration::ZERO),
            ("1.5m", Duration::from_secs(90)),
            ("2h", Duration::from_secs(7200)),
            ("1d", Duration::from_secs(86_400)),
            ("2.34e+3d", Duration::from_secs(202_176_000)),
            ("2.34e+5d", FOREVER),
            ("0.5s", Duration::from_millis(500)),
            ("inf", FOREVER),
            ("Infinity", FOREVER),
            ("1e400", FOREVER),
            ("99999999999999999999999999", FOREVER),
            ("99999999999999999999d", FOREVER),
            ("600000000000000000000s", FOREVER),
            ("3000000000y", FOREVER),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for text in [
            "", "-1", "-5s", "abc", "5x", "NaN", "nan", "1..2", "1e", "1e+", "e3", "1e3.5", "-1e3",
            "5ss", "m", "５s",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn sizes() {
        let ok = [
            ("1048576", 1_048_576),
            ("512K", 512 << 10),
            ("512k", 512 << 10),
            ("512M", 512 << 20),
            ("2G", 2 << 30),
            ("1.5GiB", 3 << 29),
            ("1.5 GiB", 3 << 29),
            ("1T", 1 << 40),
            ("100B", 100),
            ("0", 0),
        ];
        for (text, want) in ok {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        for text in ["", "-1", "1X", "M", "1.5.5G", "99999999999T", "1e9", "1 G B", "GiB"] {
            assert!(parse_size(text).is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn cores_and_fractions() {
        assert_eq!(parse_cores("1"), Ok(1.0));
        assert_eq!(parse_cores("0.5"), Ok(0.5));
        assert_eq!(parse_cores("2.5"), Ok(2.5));
        for text in ["", "-1", "nan", "inf", "1e3", "x"] {
            assert!(parse_cores(text).is_err(), "{text:?} parsed");
        }
        assert_eq!(parse_fraction("0.85"), Ok(0.85));
        assert_eq!(parse_fraction("1"), Ok(1.0));
        for text in ["0", "1.01", "-0.5", "x"] {
            assert!(parse_fraction(text).is_err(), "{text:?} parsed");
        }
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn human_bytes_examples() {
        let cases = [
            (0, "0 B"),
            (900, "900 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (512 * 1024, "512 KiB"),
            (99 * 1024 + 1000, "100 KiB"),
            (12 * 1024 * 1024 + 512 * 1024, "12.5 MiB"),
            (1024 * 1024 - 1, "1.0 MiB"),
            (GIB, "1.0 GiB"),
            (GIB * 6 / 5, "1.2 GiB"),
            (3 << 40, "3.0 TiB"),
            (u64::MAX, "16.0 EiB"),
        ];
        for (n, want) in cases {
            assert_eq!(human_bytes(n), want, "{n}");
        }
    }

    #[test]
    fn human_duration_examples() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_micros(10), "1ms"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_micros(999_600), "1s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_millis(30_004), "30s"),
            (Duration::from_millis(59_960), "1m"),
            (Duration::from_secs(150), "2m30s"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(3900), "1h5m"),
            (Duration::from_secs(3605), "1h5s"),
        ];
        for (d, want) in cases {
            assert_eq!(human_duration(d), want, "{d:?}");
        }
    }

    proptest! {
        #[test]
        fn value_parsers_never_panic(s in "\\PC*") {
            let _ = parse_duration(&s);
            let _ = parse_size(&s);
            let _ = parse_cores(&s);
            let _ = parse_fraction(&s);
            let _ = crate::signals::parse(&s);
        }

        #[test]
        fn bare_seconds_match_milliseconds(ms in 0u64..10_000_000) {
            let text = format!("{}.{:03}", ms / 1000, ms % 1000);
            prop_assert_eq!(parse_duration(&text), Ok(Duration::from_millis(ms)));
        }

        #[test]
        fn sizes_scale_by_1024(n in 0u64..1_000_000, unit in 0usize..4) {
            let (suffix, shift) = [("K", 10), ("M", 20), ("G", 30), ("T", 40)][unit];
            prop_assert_eq!(parse_size(&format!("{n}{suffix}")), Ok(n << shift));
            prop_assert_eq!(parse_size(&format!("{n}{suffix}iB")), Ok(n << shift));
        }
    }
}
