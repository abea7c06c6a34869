//! watchd: run one command, forward signals to it, reap every zombie, and drain then kill it
//! when it stalls, overruns or runs away. `entry` is the whole program; `main.rs` only calls it.

pub mod cli;
pub mod config;
pub mod exit;
pub mod health;
pub mod helper_run;
pub mod notify;
pub mod policy;
pub mod probe;
pub mod readiness;
pub mod report;
pub mod signals;
pub mod spawn;
pub mod supervise;
pub mod tree;

use clap::Parser;
use clap::error::ErrorKind;

use crate::exit::Outcome;
use crate::signals::{SIGPIPE, SigSet};
use crate::spawn::Inherited;

/// Parses, runs, and maps every failure to exit status 125 with one `watchd: ` line.
pub fn entry() -> i32 {
    // Before anything else touches them: the command must get exactly this signal state.
    let inherited = Inherited {
        mask: SigSet::current_mask(),
        sigchld_ignored: signals::is_ignored(signals::SIGCHLD),
    };
    // A closed stderr pipe must give EPIPE, not kill watchd (the disposition, which the child
    // inherits, is left alone).
    let mut pipe = SigSet::empty();
    pipe.add(SIGPIPE);
    pipe.block();
    reserve_standard_fds();

    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage(err),
    };
    let outcome =
        config::Config::from_cli(cli).and_then(|config| supervise::run(config, inherited));
    match outcome {
        Ok(Outcome::Code(code)) => i32::from(code),
        Ok(Outcome::Reraise(sig)) => exit::reraise(sig),
        Err(err) => {
            report::usage_error(format!("{err:#}"));
            i32::from(exit::FAILURE)
        }
    }
}

/// Help and version go to stdout with status 0; anything else is one line and 125.
fn usage(err: clap::Error) -> i32 {
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = err.print();
            0
        }
        ErrorKind::MissingRequiredArgument if !std::env::args_os().skip(1).any(|a| a != "--") => {
            report::usage_error("missing COMMAND (usage: watchd [OPTIONS] [--] COMMAND [ARG]...)");
            i32::from(exit::FAILURE)
        }
        ErrorKind::InvalidUtf8 => {
            report::usage_error(format!("{} (see watchd --help)", not_utf8_message()));
            i32::from(exit::FAILURE)
        }
        _ => {
            report::usage_error(format!("{} (see watchd --help)", clap_message(&err.to_string())));
            i32::from(exit::FAILURE)
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

/// If watchd was started with fd 0, 1 or 2 closed, park /dev/null there (close-on-exec) so
/// files watchd opens never land on a standard descriptor, while the child still sees the
/// descriptor closed, as it was given.
fn reserve_standard_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries; open/dup3 create descriptors we deliberately keep.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) == -1 {
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
                if null >= 0 && null != fd {
                    libc::dup3(null, fd, libc::O_CLOEXEC);
                    libc::close(null);
                }
            }
        }
    }
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
