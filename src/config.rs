//! Validated configuration: the one pure function that turns raw flags into a `Config` with
//! cross-flag checks. No I/O here.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::cli::{Cli, Evidence, ForwardTo, StopScope};
use crate::report::Level;
use crate::signals::Signal;
use crate::units::FOREVER;

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
