//! watchd: run one command, forward signals to it, reap every zombie, and drain then kill it
//! when it stalls, overruns or runs away. `entry` is the whole program; `main.rs` only calls it.

pub mod cli;
pub mod config;
pub mod exit;
pub mod policy;
pub mod probe;
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
        _ => {
            let rendered = err.to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            report::usage_error(format!("{first} (see watchd --help)"));
            i32::from(exit::FAILURE)
        }
    }
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
