//! The shipped docs — `man/watchd.1` and `completions/` — are generated from `watchd::cli::Cli`,
//! checked in, and compared byte for byte here. `WATCHD_BLESS=1 cargo test --test generated`
//! rewrites them (the watchexec/just approach).

mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{Arg, ArgAction, CommandFactory};
use clap_complete::Shell;
use roff::{Roff, bold, italic, roman};

use util::{run, watchd};

const BLESS: &str = "WATCHD_BLESS";
const REGENERATE: &str = "WATCHD_BLESS=1 cargo test --test generated";

fn command() -> clap::Command {
    let mut cmd = watchd::cli::Cli::command();
    cmd.build();
    cmd
}

/// Every file we ship, paired with its expected content.
fn generated() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("man/watchd.1", man_page()),
        ("completions/watchd.bash", completion(Shell::Bash)),
        ("completions/_watchd", completion(Shell::Zsh)),
        ("completions/watchd.fish", completion(Shell::Fish)),
    ]
}

fn completion(shell: Shell) -> Vec<u8> {
    let mut cmd = command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "watchd", &mut out);
    out
}

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn blessing() -> bool {
    std::env::var_os(BLESS).is_some_and(|v| v == "1")
}

#[test]
fn generated_files_are_up_to_date() {
    let mut drifted = Vec::new();
    for (rel, want) in generated() {
        let path = repo_path(rel);
        if blessing() {
            write_atomically(&path, &want);
            eprintln!("blessed {rel}");
            continue;
        }
        match fs::read(&path) {
            Ok(have) if have == want => {}
            Ok(have) => drifted.push(format!("{rel} drifted: {}", first_difference(&have, &want))),
            Err(err) => drifted.push(format!("{rel} cannot be read ({err})")),
        }
    }
    assert!(
        drifted.is_empty(),
        "generated docs are out of date with watchd::cli::Cli:\n  {}\n\
         Regenerate them with `{REGENERATE}`, review the diff and commit it.",
        drifted.join("\n  ")
    );
}

/// Writes through a temporary file and a rename, so a test reading the file in parallel never
/// sees half of it.
fn write_atomically(path: &Path, content: &[u8]) {
    let dir = path.parent().expect("generated files live in a directory");
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, content).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

/// The first line where committed and generated text part, for the failure message.
fn first_difference(have: &[u8], want: &[u8]) -> String {
    let have = String::from_utf8_lossy(have);
    let want = String::from_utf8_lossy(want);
    let (mut h, mut w) = (have.lines(), want.lines());
    for n in 1.. {
        match (h.next(), w.next()) {
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return "only line endings differ".to_owned(),
            (a, b) => {
                return format!(
                    "line {n}: committed {:?}, generated {:?}",
                    a.unwrap_or("<end of file>"),
                    b.unwrap_or("<end of file>")
                );
            }
        }
    }
    unreachable!()
}

// ---------------------------------------------------------------------------------------------
// The man page: clap_mangen renders what the CLI knows (name, about, options with defaults,
// possible values and environment variables); the sections the CLI cannot express come from
// the README (the user's contract) and are written here with `roff`.

fn man_page() -> Vec<u8> {
    let cmd = command();
    let man = clap_mangen::Man::new(cmd.clone())
        .title("WATCHD")
        // No date: it would change the page on every build. It is spelled `""` because an empty
        // argument would vanish from the `.TH` line and shift source and manual left.
        .date("\"\"")
        .manual("User Commands");
    let mut page = Page::default();
    page.push(|w| man.render_title(w));
    page.push(|w| man.render_name_section(w));
    page.roff(&synopsis());
    page.push(|w| man.render_description_section(w));
    page.roff(&description());
    page.roff(&values());
    page.push(|w| man.render_options_section(w));
    page.roff(&exit_status());
    page.roff(&environment(&cmd));
    page.roff(&output());
    page.roff(&examples());
    page.roff(&see_also());
    page.push(|w| man.render_version_section(w));
    page.0
}

/// Concatenates rendered sections. Every `roff` render starts with the same two-line preamble
/// (defining the apostrophe string); the page keeps only the first.
#[derive(Default)]
struct Page(Vec<u8>);

impl Page {
    fn push(&mut self, render: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>) {
        let mut buf = Vec::new();
        render(&mut buf).expect("rendering into memory cannot fail");
        let preamble = Roff::new().render();
        match buf.strip_prefix(preamble.as_bytes()) {
            Some(rest) if !self.0.is_empty() => self.0.extend_from_slice(rest),
            _ => self.0.extend_from_slice(&buf),
        }
    }

    fn roff(&mut self, doc: &Roff) {
        self.push(|w| doc.to_writer(w));
    }
}

/// A `.TP` entry: a tag line, then its body.
fn entry(r: &mut Roff, tag: impl Into<Vec<roff::Inline>>, body: &str) {
    r.control("TP", []);
    r.text(tag);
    r.text([roman(body)]);
}

fn example(r: &mut Roff, what: &str, lines: &[&str]) {
    r.control("PP", []);
    r.text([roman(what)]);
    r.control("PP", []);
    r.control("RS", ["4"]);
    r.control("nf", []);
    for line in lines {
        r.text([roman(*line)]);
    }
    r.control("fi", []);
    r.control("RE", []);
}

fn bullet(r: &mut Roff, text: &str) {
    r.control("IP", ["\\(bu", "2"]);
    r.text([roman(text)]);
}

fn synopsis() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["SYNOPSIS"]);
    r.text([
        bold("watchd"),
        roman(" ["),
        italic("OPTIONS"),
        roman("] [--] "),
        italic("COMMAND"),
        roman(" ["),
        italic("ARG"),
        roman("]..."),
    ]);
    r
}

fn description() -> Roff {
    let mut r = Roff::new();
    r.control("PP", []);
    r.text([roman(
        "watchd is an exec-style process wrapper for Linux: a drop-in init for containers, \
         a deadline and stall guard for CI steps, and a supervisor for long-running jobs on the \
         command line. It runs one command, forwards signals to it, reaps every zombie, watches \
         the command's whole process tree through /proc, and when a limit is hit it drains \
         (stop signal, grace period) before it kills. It exits with the child's status.",
    )]);
    r.control("PP", []);
    r.text([
        roman("Option parsing stops at the first operand, so "),
        bold("watchd sh -c 'exit 3'"),
        roman(" works without "),
        bold("--"),
        roman("."),
    ]);
    r.control("PP", []);
    r.text([roman("Without any option, watchd:")]);
    for text in [
        "spawns COMMAND with the stdin, stdout, stderr, environment and working directory it \
         was given, and with exactly the signal mask and ignored signals that watchd itself \
         inherited;",
        "puts the child in its own process group and, when stdin is a terminal, makes that \
         group the terminal's foreground group, so Ctrl-C, Ctrl-Z and full-screen programs \
         work as if watchd were not there (Ctrl-Z stops the child and returns control to the \
         shell; fg resumes both);",
        "forwards every signal it can catch to the child (see --forward-to): HUP INT QUIT USR1 \
         USR2 TERM ALRM WINCH CONT TSTP URG IO PWR PROF VTALRM XCPU XFSZ SYS and real-time \
         signals, never CHLD; a signal that was ignored when watchd started is not forwarded;",
        "becomes a child subreaper (unless it is PID 1, where it reaps anyway), so orphaned \
         descendants, daemons that double-fork or setsid included, stay in its tree and are \
         reaped;",
        "probes the tree every --interval through /proc: CPU ticks, I/O bytes, resident memory, \
         process count, states;",
        "when the main child exits, sends the stop signal to what is left of its tree, \
         SIGKILLs what remains after --grace, and exits (--no-cleanup leaves the rest running);",
        "sets the child's parent-death signal (--pdeathsig), so a SIGKILLed watchd does not \
         leave the command running.",
    ] {
        bullet(&mut r, text);
    }

    r.control("SS", ["The tree"]);
    r.text([roman(
        "The tree is the main child and every process whose parent chain leads to the main \
         child or to watchd (adopted orphans). Its CPU time counts reaped members too: a make \
         that runs thousands of short compiler processes is busy, and a shell waiting on a busy \
         grandchild is busy.",
    )]);

    r.control("SS", ["Limits and triggers"]);
    r.text([roman("All limits are off unless given. When one fires, watchd names its reason:")]);
    entry(
        &mut r,
        [bold("stall"), roman(" ("), bold("--stall"), roman(")")],
        "no evidence of life for DURATION.",
    );
    entry(
        &mut r,
        [bold("timeout"), roman(" ("), bold("--timeout"), roman(")")],
        "DURATION of wall time since start.",
    );
    entry(
        &mut r,
        [
            bold("cpu-soft"),
            roman(", "),
            bold("cpu-hard"),
            roman(" ("),
            bold("--cpu-limit"),
            roman(")"),
        ],
        "tree CPU at or above --cpu-soft times the limit (default 0.85) held for --cpu-soft-for \
         (default 15s: that many whole probe windows, at least one), or at or above --cpu-hard \
         times the limit (default 0.95) held for one probe window.",
    );
    entry(
        &mut r,
        [bold("rss"), roman(" ("), bold("--max-rss"), roman(")")],
        "tree resident memory above SIZE at a probe.",
    );
    r.control("PP", []);
    r.text([roman(
        "Evidence of life (--evidence, default cpu,io): the tree's CPU time grew, its I/O bytes \
         (rchar + wchar) grew, or a new process joined it. With --min-cpu, CPU growth below that \
         rate over a probe window does not count. While every process of the tree is stopped \
         the stall clock does not run. A stall fires between DURATION and DURATION plus one \
         interval after the last evidence.",
    )]);

    r.control("SS", ["Drain, then kill"]);
    r.text([roman(
        "When a trigger fires, watchd prints one line on stderr naming the reason and the \
         evidence, then:",
    )]);
    for (n, text) in [
        "sends --stop-signal followed by SIGCONT to every process of the tree (--stop-scope \
         child: the main child only), or runs --stop-cmd instead, through sh -c, with \
         WATCHD_PID set to the main child's pid;",
        "waits up to --grace for the main child to exit;",
        "sends --kill-signal to every process still in the tree.",
    ]
    .iter()
    .enumerate()
    {
        r.control("IP", [format!("{}.", n + 1).as_str(), "3"]);
        r.text([roman(*text)]);
    }
    r.control("PP", []);
    r.text([roman(
        "A second trigger during a drain does not restart the grace. Signals are sent through \
         pidfds where the kernel has them, so a recycled pid is never signalled.",
    )]);
    r
}

fn values() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["VALUES"]);
    entry(
        &mut r,
        [italic("DURATION")],
        "250ms, 5s, 1m30s, 2h, or a bare number of seconds (10, 0.5), as timeout(1) accepts. \
         0 disables a limit.",
    );
    entry(&mut r, [italic("SIGNAL")], "TERM, SIGTERM, term, 15, RTMIN+3.");
    entry(
        &mut r,
        [italic("SIZE")],
        "1048576, 512K, 512M, 2G, 1.5GiB (K, M, G and T are powers of 1024).",
    );
    entry(&mut r, [italic("CORES")], "a decimal number of CPU cores; 1.0 is one core fully busy.");
    r.control("PP", []);
    r.text([roman(
        "A bad value is a usage error: one line naming the option and the value on stderr, \
         exit status 125, and the command is never started.",
    )]);
    r
}

fn exit_status() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["EXIT STATUS"]);
    entry(&mut r, [roman("the child's exit code")], "The child exited.");
    entry(
        &mut r,
        [roman("the child's signal")],
        "The child died of signal N: watchd re-raises N on itself (core dumps off), so the \
         caller sees what it would have seen without watchd; where that is impossible (PID 1) \
         it exits 128+N.",
    );
    entry(
        &mut r,
        [bold("--exit-code-on-stop"), roman(" "), italic("N")],
        "watchd itself stopped the child, and the option was given (e.g. 124 for CI).",
    );
    entry(&mut r, [bold("125")], "watchd failed: usage error, bad value, internal error.");
    entry(&mut r, [bold("126")], "COMMAND found but could not be executed.");
    entry(&mut r, [bold("127")], "COMMAND not found.");
    r.control("PP", []);
    r.text([roman(
        "When the child dies of a signal watchd did not send, watchd says so on stderr with the \
         last figures it saw, e.g.:",
    )]);
    r.control("PP", []);
    r.control("RS", ["4"]);
    r.text([roman(
        "watchd: child killed by SIGKILL, not sent by watchd (the kernel's OOM killer: \
         oom_kill rose by 1); last seen 1.9 GiB resident, 0.98 cores, 4 processes",
    )]);
    r.control("RE", []);
    r
}

/// Options a user sets, as opposed to clap's own --help and --version.
fn user_options(cmd: &clap::Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments().filter(|a| {
        a.get_long().is_some() && !matches!(a.get_action(), ArgAction::Help | ArgAction::Version)
    })
}

/// `WATCHD_<NAME>` for a long option: upper case, `-` becomes `_` (README, Options).
fn env_name(long: &str) -> String {
    format!("WATCHD_{}", long.to_uppercase().replace('-', "_"))
}

fn environment(cmd: &clap::Command) -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["ENVIRONMENT"]);
    r.text([
        roman("Every option has an environment variable "),
        bold("WATCHD_<NAME>"),
        roman(" (upper case, - becomes _, e.g. "),
        bold("WATCHD_STALL=30s"),
        roman("); the command line wins."),
    ]);
    for arg in user_options(cmd) {
        let long = arg.get_long().expect("user options are long");
        let env = arg
            .get_env()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_else(|| panic!("--{long} has no environment variable"));
        let mut tag = vec![bold(env), roman("=")];
        let mut body = vec![roman("As "), bold(format!("--{long}"))];
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            // BoolishValueParser's spellings.
            tag.push(italic("BOOL"));
            body.push(roman(
                " when 1, true, yes, on, y or t; 0, false, no, off, n or f leave it off.",
            ));
        } else {
            let value = arg.get_value_names().map_or("VALUE".to_owned(), |v| v.join(" "));
            tag.push(italic(value.as_str()));
            body.extend([roman(" "), italic(value), roman(".")]);
        }
        r.control("TP", []);
        r.text(tag);
        r.text(body);
    }
    r.control("TP", []);
    r.text([bold("WATCHD_PID")]);
    r.text([
        roman("Set by watchd, not read: the main child's pid, in the environment of "),
        bold("--stop-cmd"),
        roman("."),
    ]);
    r
}

fn output() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["EVENTS AND METRICS"]);
    r.text([roman(
        "Lines on stderr start with \"watchd: \". watchd is quiet by default: only failures, \
         triggers, drains and diagnoses. -v adds start, forwarded signals, reaped orphans and \
         the exit line; -q silences everything but usage errors.",
    )]);
    r.control("PP", []);
    r.text([
        bold("--events"),
        roman(" "),
        italic("PATH"),
        roman(
            " (- for stderr) writes JSON lines, one object each, with ts (RFC 3339, UTC, \
             milliseconds) and event, one of:",
        ),
    ]);
    r.control("RS", ["4"]);
    r.control("nf", []);
    for line in [
        "start    pid, argv",
        "sample   cpu_cores, cpu_seconds, io_bytes, rss_bytes, processes, since_progress_s",
        "signal   signal, to",
        "trigger  reason, detail",
        "stop     signal or cmd, grace_s",
        "kill     signal, processes",
        "reap     pid, status",
        "exit     code, signal, reason, duration_s, diagnosis",
    ] {
        r.text([roman(line)]);
    }
    r.control("fi", []);
    r.control("RE", []);
    r.control("PP", []);
    r.text([
        bold("--metrics-file"),
        roman(" "),
        italic("PATH"),
        roman(
            " is rewritten atomically after each probe in the Prometheus text format \
             (node_exporter's textfile collector reads it): watchd_cpu_cores, \
             watchd_cpu_seconds_total, watchd_io_bytes_total, watchd_rss_bytes, \
             watchd_processes, watchd_seconds_since_progress, watchd_stops_total{reason}.",
        ),
    ]);
    r
}

fn examples() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["EXAMPLES"]);
    example(
        &mut r,
        "Fail a CI step that makes no progress for 5 minutes or runs longer than an hour, \
         with timeout(1)'s status:",
        &["watchd --stall 5m --timeout 1h --exit-code-on-stop 124 -- make test"],
    );
    example(
        &mut r,
        "Init for a container: forward signals, reap zombies, clean up on exit:",
        &["ENTRYPOINT [\"/usr/bin/watchd\", \"--\"]"],
    );
    example(
        &mut r,
        "Stop a job that keeps two cores busy or grows past 2 GiB, and log what happened:",
        &["watchd --cpu-limit 2 --max-rss 2G --events - -- ./build.sh"],
    );
    example(
        &mut r,
        "Ask a server to shut down its own way and give it 30 seconds:",
        &["watchd --stall 10m --stop-cmd 'kill -USR1 $WATCHD_PID' --grace 30s -- ./server"],
    );
    example(
        &mut r,
        "Set options through the environment:",
        &["WATCHD_STALL=30s WATCHD_VERBOSE=1 watchd ./nightly.sh"],
    );
    r
}

fn see_also() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["SEE ALSO"]);
    let refs = [("timeout", "1"), ("kill", "1"), ("prctl", "2"), ("proc", "5"), ("signal", "7")];
    let mut line = Vec::new();
    for (i, (name, section)) in refs.iter().enumerate() {
        if i > 0 {
            line.push(roman(", "));
        }
        line.push(bold(*name));
        line.push(roman(format!("({section})")));
    }
    r.text(line);
    r
}

// ---------------------------------------------------------------------------------------------
// Content checks: the page and --help say what the CLI and the README promise.

/// How an option is spelled in roff source, where `-` is written `\-`.
fn roff_escaped(s: &str) -> String {
    s.replace('-', "\\-")
}

/// The text of a `.SH` section of roff source, up to the next `.SH`.
fn section<'a>(page: &'a str, heading: &str) -> &'a str {
    let start = page
        .find(&format!(".SH {heading}\n"))
        .or_else(|| page.find(&format!(".SH \"{heading}\"\n")))
        .unwrap_or_else(|| panic!("man page has no {heading} section:\n{page}"));
    let rest = &page[start + 1..];
    rest.find("\n.SH ").map_or(rest, |end| &rest[..end])
}

#[test]
fn every_option_has_its_environment_variable() {
    let cmd = command();
    for arg in user_options(&cmd) {
        let long = arg.get_long().unwrap();
        let have = arg.get_env().map(|e| e.to_string_lossy().into_owned());
        assert_eq!(
            have,
            Some(env_name(long)),
            "--{long} must read {} (every option has WATCHD_<NAME>)",
            env_name(long)
        );
    }
}

/// The `.TP` entries of roff source: the tag line, then everything up to the next entry or
/// section.
fn entries(page: &str) -> Vec<(&str, &str)> {
    page.split(".TP\n")
        .skip(1)
        .map(|entry| {
            let entry = entry.split("\n.SH ").next().unwrap_or(entry);
            entry.split_once('\n').unwrap_or((entry, ""))
        })
        .collect()
}

#[test]
fn man_page_covers_every_option_its_environment_and_exit_status() {
    let cmd = command();
    let page = String::from_utf8(man_page()).expect("man page is UTF-8");
    // clap_mangen's option sections: OPTIONS, then one per help heading, up to EXIT STATUS.
    let options_start = page.find(".SH OPTIONS\n").expect("an OPTIONS section");
    let options_end = page.find(".SH \"EXIT STATUS\"\n").expect("an EXIT STATUS section");
    let entries = entries(&page[options_start..options_end]);
    let entry = |spelled: &str| {
        entries.iter().find(|(tag, _)| tag.contains(spelled)).map(|(_, body)| *body)
    };
    let mut options = 0;
    for arg in cmd.get_arguments() {
        let spelled = match (arg.get_long(), arg.get_value_names()) {
            (Some(long), _) => format!("\\fB{}\\fR", roff_escaped(&format!("--{long}"))),
            (None, Some(names)) => format!("\\fI{}\\fR", names[0]),
            (None, None) => panic!("{} has neither a long name nor a value name", arg.get_id()),
        };
        let body = entry(&spelled)
            .unwrap_or_else(|| panic!("man page has no entry for {spelled}:\n{page}"));
        options += 1;
        if let Some(short) = arg.get_short() {
            let short = format!("\\fB{}\\fR", roff_escaped(&format!("-{short}")));
            assert!(page.contains(&short), "man page lacks {short}");
        }
        if let Some(long) = arg.get_long().filter(|_| arg.get_env().is_some()) {
            let env = env_name(long);
            assert!(
                body.contains(&format!("\\fB{env}\\fR")),
                "the --{long} entry does not name {env}:\n{body}"
            );
        }
    }
    assert!(options > 20, "only {options} options found");

    let env_section = section(&page, "ENVIRONMENT");
    for arg in user_options(&cmd) {
        let env = env_name(arg.get_long().unwrap());
        assert!(
            env_section.contains(&format!("\\fB{env}\\fR=")),
            "ENVIRONMENT section lacks {env}:\n{env_section}"
        );
    }

    let exit = section(&page, "EXIT STATUS");
    for needle in ["exit code", "128+N", &roff_escaped("--exit-code-on-stop"), "125", "126", "127"]
    {
        assert!(exit.contains(needle), "EXIT STATUS lacks {needle}:\n{exit}");
    }
}

#[test]
fn man_renders_the_man_page() {
    let path = repo_path("man/watchd.1");
    let out = Command::new("man")
        .args(["--warnings", "-l", "-P", "cat"])
        .arg(&path)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run man(1) to render {}: {err}. This test needs man-db \
                 (apt-get install man-db); it does not skip.",
                path.display()
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report =
        format!("--- status: {}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}", out.status);
    assert!(out.status.success(), "man -l failed\n{report}");
    assert!(stdout.starts_with("WATCHD(1)"), "no WATCHD(1) header\n{report}");
    for needle in
        ["NAME", "SYNOPSIS", "EXIT STATUS", "ENVIRONMENT", "WATCHD_STALL", "--exit-code-on-stop"]
    {
        assert!(stdout.contains(needle), "rendered page lacks {needle:?}\n{report}");
    }
    assert!(stderr.is_empty(), "groff warned\n{report}");
}

#[test]
fn help_mentions_every_option() {
    let cmd = command();
    let r = run(watchd(["--help"]));
    r.assert_code(0);
    for arg in cmd.get_arguments() {
        if let Some(long) = arg.get_long() {
            assert!(r.stdout.contains(&format!("--{long}")), "--help lacks --{long}\n{r}");
        }
        if let Some(short) = arg.get_short() {
            assert!(r.stdout.contains(&format!("-{short}, ")), "--help lacks -{short}\n{r}");
        }
        if let Some(env) = arg.get_env() {
            let env = env.to_string_lossy();
            assert!(r.stdout.contains(&*env), "--help lacks {env}\n{r}");
        }
        if let Some(names) = arg.get_value_names() {
            for name in names {
                assert!(r.stdout.contains(name.as_str()), "--help lacks {name}\n{r}");
            }
        }
    }
}
