//! Bad input suite (issue: bad input): every option with invalid, empty, negative, overflowing
//! and unicode values, by flag and by `WATCHD_<NAME>`, is exit 125 with one `watchd: ` line
//! naming the option, and the command never starts; random values through the real binary
//! never crash it; the value and /proc parsers never panic and hold their invariants on
//! arbitrary input and on what the running kernel writes.

mod util;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

use util::*;

/// Values of one kind that must be refused, by category.
struct Bad {
    invalid: &'static [&'static str],
    empty: &'static [&'static str],
    negative: &'static [&'static str],
    overflowing: &'static [&'static str],
    unicode: &'static [&'static str],
}

const NO: &[&str] = &[];

/// Exponents (`1e3`), `inf` and values past 64 bits are good durations, as GNU timeout reads
/// them: see `durations_as_gnu_timeout_reads_them`.
const DURATION: Bad = Bad {
    invalid: &["abc", "5x", "1e", "1..2", "NaN", "5s\nrm -rf", "1m 30", "0x10", "1e3.5", "e3"],
    empty: &["", "   "],
    negative: &["-5", "-5s", "-0.5", "-1m30s", "-1e3", "-inf"],
    overflowing: NO,
    unicode: &["５s", "5秒", "٥s", "5ｓ", "🙂", "5s\u{200b}"],
};

const SIZE: Bad = Bad {
    invalid: &["12Q", "1.5.5G", "G", "1 G B", "0x10", "1e9", "5M\nx"],
    empty: &["", "  "],
    negative: &["-1", "-1G", "-0.5K"],
    overflowing: &["18446744073709551616", "16777216T", "99999999999T"],
    unicode: &["５１２M", "512Ｍ", "1.5ГiB", "🙂", "512μ"],
};

const CORES: Bad = Bad {
    invalid: &["lots", "1,5", "1e3", "nan", "inf", "0x1", "+1", "1 5"],
    empty: &["", " "],
    negative: &["-1", "-0.5"],
    overflowing: &[
        "1000001",
        "1e400",
        "179769313486231570000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    ],
    unicode: &["１", "½", "١", "1\u{2009}5"],
};

const FRACTION: Bad = Bad {
    invalid: &["x", "85%", "0", "0.0", "nan", "0.5\n0.6"],
    empty: &["", " "],
    negative: &["-0.5", "-1"],
    overflowing: &["1.01", "2", "99999999999999999999999"],
    unicode: &["０.５", "½", "٠.٥"],
};

const SIGNAL: Bad = Bad {
    invalid: &[
        "NOPE",
        "SIGNOPE",
        "TERMX",
        "SIG",
        "RTMIN+x",
        "RTMIN++1",
        "1.5",
        "0",
        "32",
        "TERM\nKILL",
    ],
    empty: &["", "  "],
    negative: &["-1", "-15", "RTMIN-1"],
    overflowing: &["65", "2147483648", "99999999999999999999", "RTMIN+99", "RTMIN+4294967296"],
    unicode: &["ＴＥＲＭ", "ΣIGTERM", "TERM\u{200b}", "🙂"],
};

const STOP_SCOPE: Bad = Bad {
    invalid: &["all", "tree,child", "nowhere"],
    empty: &[""],
    negative: &["-1"],
    overflowing: &["99999999999999999999"],
    unicode: &["trée", "ｔｒｅｅ"],
};

const FORWARD_TO: Bad = Bad {
    invalid: &["all", "nowhere", "child,group"],
    empty: &[""],
    negative: &["-1"],
    overflowing: &["99999999999999999999"],
    unicode: &["chïld", "ｃｈｉｌｄ"],
};

const EVIDENCE: Bad = Bad {
    invalid: &["disk", "cpu,disk", "cpu;io", "cpu,", ","],
    empty: &[""],
    negative: &["-1", "-cpu"],
    overflowing: &["99999999999999999999"],
    unicode: &["çpu", "ｃｐｕ"],
};

const EXIT_CODE: Bad = Bad {
    invalid: &["x", "1.5", "0x7c", "124\n125"],
    empty: &["", " "],
    negative: &["-1"],
    overflowing: &["256", "99999999999999999999"],
    unicode: &["１２４", "١٢٤"],
};

/// Any non-blank string is a command; only an empty one is bad.
const STOP_CMD: Bad =
    Bad { invalid: NO, empty: &["", "   ", "\n"], negative: NO, overflowing: NO, unicode: NO };

/// A path that cannot be opened for appending is bad before the command starts.
const EVENTS: Bad = Bad {
    invalid: &["/nonexistent/dir/x", "/"],
    empty: &[""],
    negative: NO,
    overflowing: NO,
    unicode: &["/nonexistent/ü/x"],
};

/// The metrics file is retried after every probe (a directory that appears later is picked
/// up), so only an empty path is refused up front.
const METRICS: Bad = Bad { invalid: NO, empty: &[""], negative: NO, overflowing: NO, unicode: NO };

/// Every option that takes a value: flag, environment variable, bad values.
const OPTIONS: &[(&str, &str, &Bad)] = &[
    ("--stall", "WATCHD_STALL", &DURATION),
    ("--timeout", "WATCHD_TIMEOUT", &DURATION),
    ("--interval", "WATCHD_INTERVAL", &DURATION),
    ("--grace", "WATCHD_GRACE", &DURATION),
    ("--evidence", "WATCHD_EVIDENCE", &EVIDENCE),
    ("--min-cpu", "WATCHD_MIN_CPU", &CORES),
    ("--cpu-limit", "WATCHD_CPU_LIMIT", &CORES),
    ("--cpu-soft", "WATCHD_CPU_SOFT", &FRACTION),
    ("--cpu-hard", "WATCHD_CPU_HARD", &FRACTION),
    ("--cpu-soft-for", "WATCHD_CPU_SOFT_FOR", &DURATION),
    ("--max-rss", "WATCHD_MAX_RSS", &SIZE),
    ("--stop-signal", "WATCHD_STOP_SIGNAL", &SIGNAL),
    ("--kill-signal", "WATCHD_KILL_SIGNAL", &SIGNAL),
    ("--pdeathsig", "WATCHD_PDEATHSIG", &SIGNAL),
    ("--stop-scope", "WATCHD_STOP_SCOPE", &STOP_SCOPE),
    ("--stop-cmd", "WATCHD_STOP_CMD", &STOP_CMD),
    ("--forward-to", "WATCHD_FORWARD_TO", &FORWARD_TO),
    ("--exit-code-on-stop", "WATCHD_EXIT_CODE_ON_STOP", &EXIT_CODE),
    ("--events", "WATCHD_EVENTS", &EVENTS),
    ("--metrics-file", "WATCHD_METRICS_FILE", &METRICS),
];

/// How a value reaches watchd.
#[derive(Clone, Copy, Debug)]
enum Via {
    Flag,
    Env,
}

/// The file the command creates: its existence means the command was started.
const MARKER: &str = "command-was-started";

/// Runs `watchd ARGS sh -c 'touch MARKER'` in `dir`, with the variables `env` set.
fn run_in(dir: &TempDir, args: &[OsString], env: &[(&str, &OsStr)]) -> Run {
    let marker = dir.path(MARKER);
    let _ = fs::remove_file(&marker);
    let mut all = args.to_vec();
    all.extend(["sh".into(), "-c".into(), format!("touch '{}'", marker.display()).into()]);
    let mut cmd = watchd(&all);
    cmd.current_dir(&dir.0);
    for (key, value) in env {
        cmd.env(key, value);
    }
    run_within(&mut cmd, Duration::from_secs(20))
}

/// Runs with `value` for one option, as `flag value` or as `env=value`, after `extra`.
fn run_with(dir: &TempDir, flag: &str, env: &str, value: &OsStr, via: Via, extra: &[&str]) -> Run {
    let mut args: Vec<OsString> = extra.iter().map(OsString::from).collect();
    match via {
        Via::Flag => {
            args.extend([flag.into(), value.to_owned()]);
            run_in(dir, &args, &[])
        }
        Via::Env => run_in(dir, &args, &[(env, value)]),
    }
}

/// `value` as the reporter escapes it in a one-line message (control characters escaped).
fn as_shown(value: &str) -> String {
    value
        .chars()
        .flat_map(|c| {
            if c.is_control() && c != '\t' {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// What is wrong with a run that should have been refused as a usage error.
fn refusal_problems(r: &Run, dir: &TempDir, flag: &str, env: &str, value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if r.code() != Some(125) {
        problems.push(format!("exit status {:?}, want 125", r.status));
    }
    if dir.path(MARKER).exists() {
        problems.push("the command was started".into());
    }
    if r.stderr.contains("panicked") {
        problems.push("watchd panicked".into());
    }
    let lines = r.stderr.lines().count();
    if lines != 1 || !r.stderr.ends_with('\n') {
        problems.push(format!("{lines} lines on stderr, want exactly one"));
    }
    if !r.stderr.starts_with("watchd: ") {
        problems.push("stderr does not start with `watchd: `".into());
    }
    if !(r.stderr.contains(flag) || r.stderr.contains(env)) {
        problems.push(format!("the message does not name {flag}"));
    }
    // A list (--evidence) may be named by its bad element; an empty element names nothing.
    let named = |v: &str| {
        let shown = as_shown(v.trim());
        shown.is_empty() || r.stderr.contains(&shown) || r.stderr.contains(v.trim())
    };
    let value_named = if flag == "--evidence" {
        value.split(',').filter(|piece| !["cpu", "io"].contains(piece)).any(named)
    } else {
        named(value)
    };
    if !value_named {
        problems.push(format!("the message does not name the value {value:?}"));
    }
    if !r.stdout.is_empty() {
        problems.push("stdout is not empty".into());
    }
    problems
}

#[test]
fn every_bad_value_by_flag_and_by_environment_is_refused() {
    let dir = TempDir::new("bad-values");
    let mut failures = Vec::new();
    let mut checked = 0;
    for &(flag, env, bad) in OPTIONS {
        let all = [
            ("invalid", bad.invalid),
            ("empty", bad.empty),
            ("negative", bad.negative),
            ("overflowing", bad.overflowing),
            ("unicode", bad.unicode),
        ];
        for (category, values) in all {
            for value in values {
                for via in [Via::Flag, Via::Env] {
                    if matches!(via, Via::Env) && value.is_empty() {
                        continue; // an empty variable counts as unset (see below)
                    }
                    let r = run_with(&dir, flag, env, OsStr::new(value), via, &[]);
                    checked += 1;
                    let problems = refusal_problems(&r, &dir, flag, env, value);
                    if !problems.is_empty() {
                        failures.push(format!(
                            "{flag} {value:?} ({category}, by {via:?}): {}\n    stderr: {:?}",
                            problems.join("; "),
                            r.stderr
                        ));
                    }
                }
            }
        }
    }
    assert!(checked > 300, "only {checked} cases");
    assert!(
        failures.is_empty(),
        "{} of {checked} bad values were not refused properly:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// An empty variable (compose's `${X:-}`) counts as unset, as in systemd and GNU tools: the
/// command runs with the option's default.
#[test]
fn an_empty_variable_counts_as_unset() {
    let dir = TempDir::new("empty-env");
    for &(flag, env, _) in OPTIONS {
        let r = run_with(&dir, flag, env, OsStr::new(""), Via::Env, &[]);
        assert!(
            r.code() == Some(0) && dir.path(MARKER).exists() && r.stderr.is_empty(),
            "{env}= was not taken as unset\n{r}"
        );
    }
    for env in ["WATCHD_QUIET", "WATCHD_VERBOSE", "WATCHD_NO_CLEANUP", "WATCHD_NO_SUBREAPER"] {
        let r = run_in(&dir, &[], &[(env, OsStr::new(""))]);
        assert!(r.code() == Some(0) && dir.path(MARKER).exists(), "{env}=\n{r}");
    }
}

/// The command line wins over the environment, also for `-q` against `-v`.
#[test]
fn the_command_line_wins_over_the_environment() {
    let dir = TempDir::new("cli-wins");
    let verbose: &[OsString] = &["-v".into()];
    let r = run_in(&dir, verbose, &[("WATCHD_QUIET", OsStr::new("1"))]);
    r.assert_code(0).assert_stderr_has("watchd: started sh -c ");
    let quiet: &[OsString] = &["-q".into(), "--stall".into(), "x".into()];
    let r = run_in(&dir, quiet, &[("WATCHD_VERBOSE", OsStr::new("1"))]);
    r.assert_code(125).assert_stderr_has("--stall");
    let quiet: &[OsString] = &["-q".into()];
    let r = run_in(&dir, quiet, &[("WATCHD_VERBOSE", OsStr::new("1"))]);
    assert!(r.code() == Some(0) && r.stderr.is_empty(), "-q beats WATCHD_VERBOSE\n{r}");
    // Both on the command line, or both in the environment: a conflict.
    let both: &[OsString] = &["-q".into(), "-v".into()];
    let r = run_in(&dir, both, &[]);
    r.assert_code(125).assert_stderr_has("cannot be used with");
    let none: &[OsString] = &[];
    let env = [("WATCHD_QUIET", OsStr::new("1")), ("WATCHD_VERBOSE", OsStr::new("1"))];
    let r = run_in(&dir, none, &env);
    r.assert_code(125).assert_stderr_has("cannot be used with");
    assert!(!dir.path(MARKER).exists());
}

/// Durations as GNU timeout reads them: an exponent, `inf`, timeout's suffixes; anything past
/// what the clock holds is "forever", and `--interval` is at least 1ms.
#[test]
fn durations_as_gnu_timeout_reads_them() {
    let dir = TempDir::new("durations");
    for value in
        ["1e3", "2.5e2", "inf", "1.5m", "2.34e+5d", "18446744073709551616", "99999999999999999999y"]
    {
        for flag in ["--stall", "--timeout", "--grace", "--interval", "--cpu-soft-for"] {
            let args: Vec<OsString> = vec![flag.into(), value.into()];
            let r = run_in(&dir, &args, &[]);
            assert!(r.code() == Some(0) && dir.path(MARKER).exists(), "{flag} {value}\n{r}");
        }
    }
    // 1e-3 seconds is a real timeout: the sleeping command is stopped at once.
    let r = run(watchd(["--timeout", "1e-3", "--exit-code-on-stop", "124", "sleep", "30"]));
    r.assert_code(124).assert_took(Duration::ZERO, Duration::from_secs(5));
    // 1e-10000 is 0: no timeout at all.
    let r = run(watchd(["--timeout", "1e-10000", "sh", "-c", "exit 3"]));
    r.assert_code(3);
    for tiny in ["0.0001", "999us", "1ns", "1e-4"] {
        let args: Vec<OsString> = vec!["--interval".into(), tiny.into()];
        let r = run_in(&dir, &args, &[]);
        r.assert_code(125).assert_stderr_has("--interval");
        assert!(!dir.path(MARKER).exists(), "--interval {tiny} started the command");
    }
}

/// Values that are fine one by one but contradict each other.
#[test]
fn contradictory_values_are_refused() {
    let dir = TempDir::new("cross");
    let cases: &[(&[&str], &str)] = &[
        (&["--cpu-soft", "0.96"], "--cpu-soft"), // above the default --cpu-hard 0.95
        (&["--cpu-hard", "0.5"], "--cpu-hard"),  // below the default --cpu-soft 0.85
        (&["--cpu-soft", "0.9", "--cpu-hard", "0.8"], "--cpu-soft"),
        (&["--interval", "0"], "--interval"),
        (&["--interval", "0ms"], "--interval"),
    ];
    for (args, flag) in cases {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let r = run_in(&dir, &args, &[]);
        let env = format!("WATCHD_{}", flag[2..].to_uppercase().replace('-', "_"));
        let problems = refusal_problems(&r, &dir, flag, &env, "");
        assert!(problems.is_empty(), "{}\n{r}", problems.join("; "));
    }
}

/// Bytes that are not UTF-8, where the option's type is text: refused like any bad value,
/// naming the option (a path may be any bytes, so --events is refused for its directory).
#[test]
fn non_utf8_values_are_refused_naming_the_option() {
    let dir = TempDir::new("non-utf8");
    let bytes = OsString::from_vec(b"5s\xff".to_vec());
    let mut failures = Vec::new();
    for &(flag, env, _) in OPTIONS {
        let value = if flag == "--events" {
            OsString::from_vec(b"/nonexistent/\xff/x".to_vec())
        } else if flag == "--metrics-file" {
            continue; // any bytes are a valid file name
        } else {
            bytes.clone()
        };
        for via in [Via::Flag, Via::Env] {
            let r = run_with(&dir, flag, env, &value, via, &[]);
            let problems = refusal_problems(&r, &dir, flag, env, "");
            if !problems.is_empty() {
                failures.push(format!(
                    "{flag} {:?} (by {via:?}): {}\n    stderr: {:?}",
                    value,
                    problems.join("; "),
                    r.stderr
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Durations that fit a `Duration` but not watchd's clock (u64::MAX seconds, i64::MAX seconds,
/// 300 billion years): either refused up front like any bad value, or run as "practically
/// forever", the command's status mirrored. Never a crash, and never a command started under a
/// watchd that then dies.
#[test]
fn huge_durations_never_crash() {
    let dir = TempDir::new("huge");
    let tag = unique_tag("huge");
    let mut failures = Vec::new();
    for &(flag, env) in &[
        ("--stall", "WATCHD_STALL"),
        ("--timeout", "WATCHD_TIMEOUT"),
        ("--interval", "WATCHD_INTERVAL"),
        ("--grace", "WATCHD_GRACE"),
    ] {
        for value in ["18446744073709551615", "9223372036854775807s", "300000000000y"] {
            for via in [Via::Flag, Via::Env] {
                let marker = dir.path(MARKER);
                let _ = fs::remove_file(&marker);
                let mut args: Vec<String> = Vec::new();
                if let Via::Flag = via {
                    args.extend([flag.to_string(), value.to_string()]);
                }
                // A leftover in the background, so --grace is used by the cleanup.
                args.extend([
                    "sh".into(),
                    "-c".into(),
                    format!("sleep 1000 >/dev/null 2>&1 & touch '{}'; exit 3", marker.display()),
                ]);
                let mut cmd = watchd(&args);
                cmd.env("WATCHD_TEST_TAG", &tag);
                if let Via::Env = via {
                    cmd.env(env, value);
                }
                let r = run_within(&mut cmd, Duration::from_secs(20));
                let ok = match r.code() {
                    Some(125) => refusal_problems(&r, &dir, flag, env, value).is_empty(),
                    Some(3) => marker.exists() && !r.stderr.contains("panicked"),
                    _ => false,
                };
                let left = processes_tagged(&tag);
                for &pid in &left {
                    // SAFETY: killing a leftover of this test's own command.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                if !ok || !left.is_empty() {
                    failures.push(format!(
                        "{flag} {value} (by {via:?}): status {:?}, want 125 (refused) or 3 (ran); \
                         {} processes left behind\n    stderr: {:?}",
                        r.status,
                        left.len(),
                        r.stderr.lines().take(2).collect::<Vec<_>>()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The same options accept good values (so the refusals above are about the values, not the
/// options), and the command line wins over a bad environment variable.
#[test]
fn good_values_are_accepted_and_the_flag_beats_a_bad_variable() {
    let dir = TempDir::new("good");
    let good: &[(&str, &str, &str)] = &[
        ("--stall", "WATCHD_STALL", "1m30s"),
        ("--timeout", "WATCHD_TIMEOUT", "0"),
        ("--interval", "WATCHD_INTERVAL", "0.5"),
        ("--grace", "WATCHD_GRACE", "250ms"),
        ("--evidence", "WATCHD_EVIDENCE", "io"),
        ("--min-cpu", "WATCHD_MIN_CPU", "0.1"),
        ("--cpu-limit", "WATCHD_CPU_LIMIT", "2.5"),
        ("--cpu-soft", "WATCHD_CPU_SOFT", "0.5"),
        ("--cpu-hard", "WATCHD_CPU_HARD", "1"),
        ("--cpu-soft-for", "WATCHD_CPU_SOFT_FOR", "20s"),
        ("--max-rss", "WATCHD_MAX_RSS", "1.5GiB"),
        ("--stop-signal", "WATCHD_STOP_SIGNAL", "RTMIN+3"),
        ("--kill-signal", "WATCHD_KILL_SIGNAL", "sigterm"),
        ("--pdeathsig", "WATCHD_PDEATHSIG", "15"),
        ("--stop-scope", "WATCHD_STOP_SCOPE", "child"),
        ("--stop-cmd", "WATCHD_STOP_CMD", "kill -TERM $WATCHD_PID"),
        ("--forward-to", "WATCHD_FORWARD_TO", "group"),
        ("--exit-code-on-stop", "WATCHD_EXIT_CODE_ON_STOP", "124"),
        ("--events", "WATCHD_EVENTS", "events.jsonl"),
        ("--metrics-file", "WATCHD_METRICS_FILE", "metrics.prom"),
    ];
    assert_eq!(good.len(), OPTIONS.len());
    for &(flag, env, value) in good {
        for via in [Via::Flag, Via::Env] {
            let r = run_with(&dir, flag, env, OsStr::new(value), via, &[]);
            assert_eq!(r.code(), Some(0), "{flag} {value} by {via:?} refused\n{r}");
            assert!(dir.path(MARKER).exists(), "{flag} {value}: no command\n{r}");
        }
        // The flag wins over a bad variable.
        let args = [OsString::from(flag), OsString::from(value)];
        let r = run_in(&dir, &args, &[(env, OsStr::new(""))]);
        assert_eq!(r.code(), Some(0), "{flag} {value} lost to {env}=''\n{r}");
    }
}

// ---------------------------------------------------------------------------------------------
// Random values through the real binary.

/// Random option values: anything printable, anything at all (control characters included),
/// and shapes close to valid DURATION, SIZE, CORES, SIGNAL and enum values, where parsers
/// have their edges (signs, huge numbers, units, separators).
fn any_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,16}",
        prop::collection::vec(any::<char>().prop_filter("argv has no NUL", |&c| c != '\0'), 0..12)
            .prop_map(|cs| cs.into_iter().collect()),
        "[-+ ]?[0-9]{0,24}(\\.[0-9]{0,6})?[ ]?(ns|us|ms|s|m|h|d|w|y|K|M|G|T|KiB|GiB|B|%|e9)?",
        "(SIG|sig)?(RTMIN|RTMAX|TERM|KILL|HUP|STOP|CHLD|X)?([+-][0-9]{0,12})?",
        "(cpu|io|tree|child|group|disk|)(,(cpu|io|child|))?",
        "[0-9]{1,3}",
    ]
}

/// Random file names relative to the scratch directory (the run's working directory).
fn any_path() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z0-9._ -]{0,12}", r"[^/\x00]{0,8}"]
}

fn case_strategy() -> impl Strategy<Value = (usize, String, bool)> {
    (0..OPTIONS.len()).prop_flat_map(|i| {
        let value = if OPTIONS[i].0 == "--events" || OPTIONS[i].0 == "--metrics-file" {
            any_path().boxed()
        } else {
            any_value().boxed()
        };
        (Just(i), value, any::<bool>())
    })
}

/// A bounded, CI-sized run: 64 cases unless PROPTEST_CASES says otherwise; no regression
/// files written into the source tree; a failing case shrinks for at most 200 more runs.
fn ci_config() -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() { default.cases } else { 64 },
        failure_persistence: None,
        max_shrink_iters: 200,
        ..default
    }
}

proptest! {
    #![proptest_config(ci_config())]

    /// Whatever the value, watchd refuses it properly (125, one line naming the option,
    /// nothing started) or accepts it and runs the command; it never crashes or panics.
    #[test]
    fn random_values_through_the_binary((i, value, by_env) in case_strategy()) {
        let (flag, env, _) = OPTIONS[i];
        let dir = TempDir::new("fuzz");
        let via = if by_env { Via::Env } else { Via::Flag };
        // A limit that fires (a tiny --timeout) stops the command: 77 says so, where the
        // option under test is not --exit-code-on-stop itself.
        let extra: &[&str] = if flag == "--exit-code-on-stop" { &[] } else { &["--exit-code-on-stop", "77"] };
        let r = run_with(&dir, flag, env, OsStr::new(&value), via, extra);
        prop_assert!(r.signal().is_none(), "watchd died of a signal\n{}", r);
        prop_assert!(!r.stderr.contains("panicked"), "watchd panicked\n{}", r);
        match r.code() {
            Some(125) => {
                let problems = refusal_problems(&r, &dir, flag, env, &value);
                prop_assert!(problems.is_empty(), "{}\n{}", problems.join("; "), r);
            }
            Some(0) | Some(77) => {}
            other => prop_assert!(false, "unexpected exit status {:?}\n{}", other, r),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The public parsers, on arbitrary input.

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Never a panic, whatever the text (control characters, huge digit strings, unicode),
    /// and every accepted value is in its domain.
    #[test]
    fn value_parsers_hold_their_domains(s in prop_oneof![
        any::<String>(),
        "[-+]?[0-9]{0,400}(\\.[0-9]{0,40})?[a-zA-Z]{0,4}",
        "(SIG)?RTM(IN|AX)[+-][0-9]{0,30}",
    ]) {
        let _ = watchd::units::parse_duration(&s);
        let _ = watchd::units::parse_size(&s);
        if let Ok(x) = watchd::units::parse_cores(&s) {
            prop_assert!(x.is_finite() && (0.0..=1_000_000.0).contains(&x), "{s:?} -> {x}");
        }
        if let Ok(x) = watchd::units::parse_fraction(&s) {
            prop_assert!(x > 0.0 && x <= 1.0, "{s:?} -> {x}");
        }
        if let Ok(sig) = watchd::signals::parse(&s) {
            prop_assert_eq!(watchd::signals::Signal::from_raw(sig.as_raw()), Some(sig));
            prop_assert_eq!(watchd::signals::parse(&sig.to_string()), Ok(sig));
        }
    }

    /// Bare seconds, humantime and sizes agree with arithmetic where both are defined.
    #[test]
    fn duration_and_size_units_agree(n in 0u64..1_000_000_000) {
        use watchd::units::{parse_duration, parse_size};
        prop_assert_eq!(parse_duration(&n.to_string()), Ok(Duration::from_secs(n)));
        prop_assert_eq!(parse_duration(&format!("{n}s")), Ok(Duration::from_secs(n)));
        prop_assert_eq!(parse_duration(&format!("{n}ms")), Ok(Duration::from_millis(n)));
        prop_assert_eq!(parse_size(&format!("{n}K")), Ok(n << 10));
        prop_assert_eq!(parse_size(&n.to_string()), Ok(n));
    }

    /// The /proc parsers take any bytes without a panic.
    #[test]
    fn proc_parsers_take_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..700)) {
        let _ = watchd::probe::parse_stat(&bytes);
        let _ = watchd::probe::parse_io(&bytes);
    }
}

/// The /proc parsers on what this kernel really writes: every process's stat line parses to
/// its own pid, every readable io file parses, and a real line cut anywhere before the end of
/// its rss field is refused while a cut after it changes nothing.
#[test]
fn proc_parsers_read_the_running_kernel() {
    let mut parsed = 0;
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(text) = fs::read(format!("/proc/{pid}/stat")) else {
            continue; // exited meanwhile
        };
        let stat = watchd::probe::parse_stat(&text).unwrap_or_else(|| {
            panic!("real stat of {pid} refused: {:?}", String::from_utf8_lossy(&text))
        });
        assert_eq!(stat.pid, pid);
        parsed += 1;
        if let Ok(io) = fs::read(format!("/proc/{pid}/io")) {
            assert!(
                watchd::probe::parse_io(&io).is_some(),
                "real io of {pid} refused: {:?}",
                String::from_utf8_lossy(&io)
            );
        }
    }
    assert!(parsed > 1);

    let line = fs::read("/proc/self/stat").unwrap();
    let full = watchd::probe::parse_stat(&line).unwrap();
    assert_eq!(full.pid, std::process::id() as i32);
    // rss is field 21 after comm's `)`; the space before field k is the (k+1)-th after `)`.
    let close = line.iter().rposition(|&b| b == b')').unwrap();
    let rss_end = line[close..]
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b' ')
        .nth(22)
        .map(|(i, _)| close + i)
        .unwrap();
    for cut in 0..line.len() {
        let got = watchd::probe::parse_stat(&line[..cut]);
        if cut <= rss_end {
            assert_eq!(got, None, "a line cut at {cut} of {} parsed", line.len());
        } else {
            assert_eq!(got, Some(full), "a line cut at {cut} (after rss) changed");
        }
    }
}

/// A process whose comm is a hostile fake stat line (`)`, spaces, a fake state and ppid, a
/// newline), as the kernel reports it: parsed as that process, with its real parent.
#[test]
fn proc_parser_survives_a_hostile_comm_from_the_kernel() {
    let dir = TempDir::new("comm");
    let ready = dir.path("ready");
    // The shell renames itself through /proc/self/comm (15 bytes kept), says so, then waits
    // for its stdin to close.
    let script = format!(
        "printf ') Z 1 1 (\\n1 2' > /proc/$$/comm; echo ok > '{r}.tmp'; mv '{r}.tmp' '{r}'; read x; exit 0",
        r = ready.display()
    );
    let mut child = Command::new("sh").args(["-c", &script]).stdin(Stdio::piped()).spawn().unwrap();
    wait_file(&ready, Duration::from_secs(10));
    let pid = child.id() as i32;
    let comm = fs::read(format!("/proc/{pid}/comm")).unwrap();
    assert!(comm.starts_with(b") Z 1 1 (\n"), "comm not set: {comm:?}");
    let text = fs::read(format!("/proc/{pid}/stat")).unwrap();
    let stat = watchd::probe::parse_stat(&text)
        .unwrap_or_else(|| panic!("refused: {:?}", String::from_utf8_lossy(&text)));
    assert_eq!(stat.pid, pid);
    assert_eq!(stat.ppid, std::process::id() as i32);
    assert_ne!(stat.state, b'Z');
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
