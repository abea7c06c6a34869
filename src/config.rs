//! Validated configuration: the value parsers clap calls (DURATION, SIZE, CORES) and the one
//! pure function that turns raw flags into a `Config` with cross-flag checks. No I/O here.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::cli::{Cli, Evidence, ForwardTo, StopScope};
use crate::report::Level;
use crate::signals::Signal;

/// Everything watchd needs to run, typed and checked. Limits that are off are `None`.
#[derive(Clone, Debug)]
pub struct Config {
    pub command: Vec<OsString>,
    pub stall: Option<Duration>,
    pub timeout: Option<Duration>,
    pub interval: Duration,
    pub evidence_cpu: bool,
    pub evidence_io: bool,
    pub min_cpu: Option<f64>,
    pub cpu_limit: Option<f64>,
    pub cpu_soft: f64,
    pub cpu_soft_for: u32,
    pub cpu_hard: f64,
    pub max_rss: Option<u64>,
    pub stop_signal: Signal,
    pub stop_scope: StopScope,
    pub stop_cmd: Option<String>,
    pub grace: Duration,
    pub kill_signal: Signal,
    pub exit_code_on_stop: Option<u8>,
    pub forward_to: ForwardTo,
    pub cleanup: bool,
    pub subreaper: bool,
    pub pdeathsig: Signal,
    pub events: Option<PathBuf>,
    pub metrics_file: Option<PathBuf>,
    pub verbosity: Level,
}

/// Longer than any run: durations above it mean "practically forever" and are clamped, so
/// adding one to a clock reading can never overflow.
pub const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Config {
    pub fn from_cli(cli: Cli) -> Result<Config> {
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d.min(FOREVER));
        let positive = |x: f64| (x > 0.0).then_some(x);
        if cli.interval.is_zero() {
            bail!(
                "invalid value '0' for '--interval <DURATION>': the probe interval must be more than 0"
            );
        }
        if cli.cpu_soft > cli.cpu_hard {
            bail!(
                "invalid value '{}' for '--cpu-soft <FRACTION>': it must not exceed --cpu-hard ({})",
                cli.cpu_soft,
                cli.cpu_hard
            );
        }
        if cli.stop_cmd.as_deref().is_some_and(|cmd| cmd.trim().is_empty()) {
            bail!("invalid value '' for '--stop-cmd <CMD>': the command is empty");
        }
        for (name, path) in
            [("--events <PATH>", &cli.events), ("--metrics-file <PATH>", &cli.metrics_file)]
        {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                bail!("invalid value '' for '{name}': the path is empty");
            }
        }
        Ok(Config {
            command: cli.command,
            stall: cli.stall.and_then(nonzero),
            timeout: cli.timeout.and_then(nonzero),
            interval: cli.interval.min(FOREVER),
            evidence_cpu: cli.evidence.contains(&Evidence::Cpu),
            evidence_io: cli.evidence.contains(&Evidence::Io),
            min_cpu: cli.min_cpu.and_then(positive),
            cpu_limit: cli.cpu_limit.and_then(positive),
            cpu_soft: cli.cpu_soft,
            cpu_soft_for: cli.cpu_soft_for,
            cpu_hard: cli.cpu_hard,
            max_rss: cli.max_rss.filter(|&n| n > 0),
            stop_signal: cli.stop_signal,
            stop_scope: cli.stop_scope,
            stop_cmd: cli.stop_cmd,
            grace: cli.grace.min(FOREVER),
            kill_signal: cli.kill_signal,
            exit_code_on_stop: cli.exit_code_on_stop,
            forward_to: cli.forward_to,
            cleanup: !cli.no_cleanup,
            subreaper: !cli.no_subreaper,
            pdeathsig: cli.pdeathsig,
            events: cli.events,
            metrics_file: cli.metrics_file,
            verbosity: match (cli.quiet, cli.verbose) {
                (true, _) => Level::Quiet,
                (_, true) => Level::Verbose,
                _ => Level::Normal,
            },
        })
    }
}

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

/// DURATION: humantime (`250ms`, `1m30s`, `2h`) or a bare number of seconds (`10`, `0.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if parse_decimal(s).is_some() {
        return bare_seconds(s).ok_or_else(|| "duration too large".to_string());
    }
    humantime::parse_duration(s).map_err(|err| {
        format!("{err} (expected e.g. 250ms, 5s, 1m30s, 2h, or a number of seconds)")
    })
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
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for text in [
            "",
            "-1",
            "-5s",
            "abc",
            "5x",
            "1e3",
            "inf",
            "NaN",
            "1..2",
            "9".repeat(400).as_str(),
            "５s",
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
