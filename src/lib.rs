//! watchd: run one command, forward signals to it, reap every zombie, and drain then kill it
//! when it stalls, overruns or runs away. `entry` is the whole program; `main.rs` only calls it.

pub mod cgroup;
pub mod cli;
pub mod config;
pub mod driver;
pub mod dump;
pub mod exit;
pub mod gpu;
pub mod health;
pub mod helper_run;
pub mod machine;
pub mod notify;
pub mod policy;
pub mod probe;
pub mod readiness;
pub mod reason;
pub mod report;
pub mod signals;
pub mod spawn;
pub mod sys;
#[cfg(test)]
mod testutil;
pub mod tree;
pub mod units;

use clap::error::ErrorKind;

use crate::exit::{Ending, Outcome};
use crate::signals::SIGPIPE;
use crate::spawn::Inherited;
use crate::sys::SigSet;

/// Parses, runs, and maps every failure to exit status 125 with one `watchd: ` line.
pub fn entry() -> i32 {
    // Before anything else touches them: the command must get exactly this signal state.
    let inherited = Inherited {
        mask: SigSet::current_mask(),
        sigchld_ignored: sys::is_ignored(signals::SIGCHLD),
    };
    // A closed stderr pipe must give EPIPE, not kill watchd (the disposition, which the child
    // inherits, is left alone).
    let mut pipe = SigSet::empty();
    pipe.add(SIGPIPE);
    pipe.block();
    sys::reserve_standard_fds();

    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(err) => return usage(err),
    };
    let outcome = config::Config::from_cli(cli).and_then(|config| driver::run(config, inherited));
    match outcome {
        Ok(outcome) => finish(outcome),
        Err(err) => {
            report::usage_error(format!("{err:#}"));
            failure()
        }
    }
}

/// Leaves with the status `outcome` says, or dies of its signal.
fn finish(outcome: Outcome) -> i32 {
    match outcome {
        Outcome::Code(code) => i32::from(code),
        Outcome::Reraise(sig) => sys::reraise(sig),
    }
}

/// watchd's own failure (usage error, bad value): 125.
fn failure() -> i32 {
    finish(exit::outcome(Ending::Failed, &exit::Rules::default()))
}

/// Help and version go to stdout with status 0; anything else is one line and 125.
fn usage(err: clap::Error) -> i32 {
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = err.print();
            0
        }
        ErrorKind::MissingRequiredArgument if err.to_string().contains("<COMMAND>") => {
            report::usage_error("missing COMMAND (usage: watchd [OPTIONS] [--] COMMAND [ARG]...)");
            failure()
        }
        ErrorKind::InvalidUtf8 => {
            report::usage_error(format!("{} (see watchd --help)", not_utf8_message()));
            failure()
        }
        _ => {
            report::usage_error(format!("{} (see watchd --help)", clap_message(&err.to_string())));
            failure()
        }
    }
}

/// clap's message without its "error: " prefix and the usage and help sections it appends.
/// Not just the first line: a value may hold a newline, and the option is named after it
/// (`report` escapes control characters, so the result is still one line).
fn clap_message(rendered: &str) -> &str {
    let text = rendered.strip_prefix("error: ").unwrap_or(rendered);
    let end = ["\n\nUsage:", "\n\nFor more information", "\n\n  tip:"]
        .iter()
        .filter_map(|tail| text.find(tail))
        .min()
        .unwrap_or(text.len());
    text[..end].trim_end()
}

/// clap's own message for a value that is not UTF-8 names no option: find the argument or
/// WATCHD_* variable that holds it.
fn not_utf8_message() -> String {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    for (i, arg) in args.iter().enumerate() {
        if arg.to_str().is_some() {
            continue;
        }
        let lossy = arg.to_string_lossy();
        if let Some((flag, value)) =
            lossy.split_once('=').filter(|(flag, _)| flag.starts_with("--"))
        {
            return format!("invalid value '{value}' for '{flag}': not valid UTF-8");
        }
        if let Some(flag) =
            i.checked_sub(1).and_then(|j| args[j].to_str()).filter(|f| f.starts_with('-'))
        {
            return format!("invalid value '{lossy}' for '{flag}': not valid UTF-8");
        }
        return format!("invalid argument '{lossy}': not valid UTF-8");
    }
    for (key, value) in std::env::vars_os() {
        let Some(name) = key.to_str().and_then(|k| k.strip_prefix("WATCHD_")) else {
            continue;
        };
        if value.to_str().is_none() {
            let flag = format!("--{}", name.to_ascii_lowercase().replace('_', "-"));
            return format!(
                "invalid value '{}' for '{flag}' (from WATCHD_{name}): not valid UTF-8",
                value.to_string_lossy()
            );
        }
    }
    "invalid UTF-8 in the arguments".to_string()
}

#[cfg(test)]
mod tests {
    use super::clap_message;

    #[test]
    fn clap_messages_keep_values_with_newlines_and_drop_usage() {
        let rendered = "error: invalid value '5s\nx' for '--stall <DURATION>': bad\n\nFor more information, try '--help'.\n";
        assert_eq!(clap_message(rendered), "invalid value '5s\nx' for '--stall <DURATION>': bad");
        let rendered = "error: unexpected argument '--foo' found\n\n  tip: to pass '--foo' as a value, use '-- --foo'\n\nUsage: watchd\n";
        assert_eq!(clap_message(rendered), "unexpected argument '--foo' found");
    }
}
