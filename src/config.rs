//! Validated configuration: the one pure function that turns raw flags into a `Config` with
//! cross-flag checks. No I/O here.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::cli::{Cli, Evidence, ForwardTo, StopScope};
use crate::policy::Limits;
use crate::readiness::HealthTiming;
use crate::report::Level;
use crate::signals::Signal;
use crate::units::FOREVER;

/// Probing more often than this would only spin a core (1ns did).
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Everything watchd needs to run, typed and checked. Limits that are off are `None`.
#[derive(Clone, Debug)]
pub struct Config {
    pub command: Vec<OsString>,
    pub stall: Option<Duration>,
    pub timeout: Option<Duration>,
    pub interval: Duration,
    pub evidence_cpu: bool,
    pub evidence_io: bool,
    pub evidence_notify: bool,
    pub evidence_gpu: bool,
    /// `--gpu-evidence`: whose GPU work counts.
    pub gpu_scope: crate::gpu::Scope,
    pub min_cpu: Option<f64>,
    pub cpu_limit: Option<f64>,
    pub cpu_soft: f64,
    /// `--cpu-soft-for` in probe windows: ⌈DURATION / interval⌉, at least one.
    pub cpu_soft_windows: u32,
    pub cpu_hard: f64,
    pub max_rss: Option<u64>,
    pub stop_signal: Signal,
    pub stop_scope: StopScope,
    pub stop_cmd: Option<String>,
    pub grace: Duration,
    pub kill_signal: Signal,
    pub exit_code_on_stop: Option<u8>,
    pub success_exit_status: Vec<crate::exit::ChildEnd>,
    pub forward_to: ForwardTo,
    pub rewrite_signal: Vec<(Signal, Option<Signal>)>,
    pub cleanup: bool,
    pub subreaper: bool,
    pub pdeathsig: Signal,
    pub cgroup: crate::cgroup::Mode,
    pub events: Option<PathBuf>,
    pub metrics_file: Option<PathBuf>,
    pub verbosity: Level,
    pub health: Option<HealthCheck>,
    pub heartbeat: Vec<PathBuf>,
    pub restart: crate::machine::Restart,
    pub dump: crate::machine::Dump,
    pub health_timing: HealthTiming,
    pub ready_timeout: Option<Duration>,
    pub notify: bool,
}

/// `--health-cmd` or `--health-url` (the URL is resolved when the run starts: I/O).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthCheck {
    Cmd(String),
    Url(String),
}

impl Config {
    pub fn from_cli(cli: Cli) -> Result<Config> {
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d.min(FOREVER));
        let positive = |x: f64| (x > 0.0).then_some(x);
        if cli.interval < MIN_INTERVAL {
            bail!(
                "invalid value '{:?}' for '--interval <DURATION>': the probe interval must be \
                 at least 1ms",
                cli.interval
            );
        }
        if cli.cpu_soft > cli.cpu_hard {
            bail!(
                "invalid value '{}' for '--cpu-soft <FRACTION>': it must not exceed --cpu-hard ({})",
                cli.cpu_soft,
                cli.cpu_hard
            );
        }
        for (name, cmd) in [
            ("--stop-cmd", &cli.stop_cmd),
            ("--health-cmd", &cli.health_cmd),
            ("--dump-cmd", &cli.dump_cmd),
        ] {
            if cmd.as_deref().is_some_and(|cmd| cmd.trim().is_empty()) {
                bail!("invalid value '' for '{name} <CMD>': the command is empty");
            }
        }
        for (name, d) in [
            ("--health-interval", cli.health_interval),
            ("--start-interval", cli.start_interval),
            ("--health-timeout", cli.health_timeout),
        ] {
            if d.is_zero() {
                bail!("invalid value '0' for '{name} <DURATION>': it must be above 0");
            }
        }
        for (name, path) in
            [("--events <PATH>", &cli.events), ("--metrics-file <PATH>", &cli.metrics_file)]
        {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                bail!("invalid value '' for '{name}': the path is empty");
            }
        }
        let interval = cli.interval.min(FOREVER);
        Ok(Config {
            command: cli.command,
            stall: cli.stall.and_then(nonzero),
            timeout: cli.timeout.and_then(nonzero),
            interval,
            evidence_cpu: cli.evidence.contains(&Evidence::Cpu),
            evidence_io: cli.evidence.contains(&Evidence::Io),
            evidence_notify: cli.evidence.contains(&Evidence::Notify),
            evidence_gpu: cli.evidence.contains(&Evidence::Gpu),
            gpu_scope: match cli.gpu_evidence {
                crate::cli::GpuEvidence::Process => crate::gpu::Scope::Process,
                crate::cli::GpuEvidence::Device => crate::gpu::Scope::Device,
            },
            health: match (cli.health_cmd, cli.health_url) {
                (Some(cmd), _) => Some(HealthCheck::Cmd(cmd)),
                (None, Some(url)) => Some(HealthCheck::Url(url)),
                (None, None) => None,
            },
            health_timing: HealthTiming {
                interval: cli.health_interval.min(FOREVER),
                start_interval: cli.start_interval.min(FOREVER),
                start_period: cli.start_period.min(FOREVER),
                timeout: cli.health_timeout.min(FOREVER),
                retries: cli.health_retries,
            },
            ready_timeout: cli.ready_timeout.and_then(nonzero),
            notify: cli.notify,
            heartbeat: cli.heartbeat,
            restart: crate::machine::Restart {
                mode: cli.restart,
                max: cli.restart_max,
                delay: cli.restart_delay.min(FOREVER),
                delay_max: cli.restart_delay_max.min(FOREVER).max(cli.restart_delay.min(FOREVER)),
            },
            dump: crate::machine::Dump {
                snapshot: true,
                signal: cli.dump_signal,
                cmd: cli.dump_cmd,
                wait: cli.dump_wait.min(FOREVER),
            },
            min_cpu: cli.min_cpu.and_then(positive),
            cpu_limit: cli.cpu_limit.and_then(positive),
            cpu_soft: cli.cpu_soft,
            cpu_soft_windows: windows(cli.cpu_soft_for, interval),
            cpu_hard: cli.cpu_hard,
            max_rss: cli.max_rss.filter(|&n| n > 0),
            stop_signal: cli.stop_signal,
            stop_scope: cli.stop_scope,
            stop_cmd: cli.stop_cmd,
            grace: cli.grace.min(FOREVER),
            kill_signal: cli.kill_signal,
            exit_code_on_stop: cli.exit_code_on_stop,
            success_exit_status: cli.success_exit_status,
            forward_to: cli.forward_to,
            rewrite_signal: cli.rewrite_signal,
            cleanup: !cli.no_cleanup,
            subreaper: !cli.no_subreaper,
            pdeathsig: cli.pdeathsig,
            cgroup: cli.cgroup,
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

impl Config {
    /// What the policy judges, with the probe's clock-tick rate.
    pub fn limits(&self, clk_tck: u64) -> Limits {
        Limits {
            stall: self.stall,
            evidence_cpu: self.evidence_cpu,
            evidence_io: self.evidence_io,
            // Only counts with a socket to receive pings on, and only GPUs NVML answers for;
            // the driver says which (`notify_active`, `gpu_active`).
            evidence_notify: false,
            evidence_gpu: false,
            heartbeats: false,
            min_cpu: self.min_cpu,
            timeout: self.timeout,
            cpu_limit: self.cpu_limit,
            cpu_soft: self.cpu_soft,
            cpu_soft_windows: self.cpu_soft_windows,
            cpu_hard: self.cpu_hard,
            max_rss: self.max_rss,
            clk_tck,
        }
    }
}

/// How many whole probe windows cover `span`: ⌈span / interval⌉, at least one.
fn windows(span: std::time::Duration, interval: std::time::Duration) -> u32 {
    let n = span.as_nanos().div_ceil(interval.as_nanos().max(1));
    u32::try_from(n).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> Config {
        let argv = ["watchd"].iter().chain(args).chain(&["true"]);
        Config::from_cli(Cli::try_parse_from(argv).unwrap()).unwrap()
    }

    #[test]
    fn zero_turns_limits_off() {
        let c = config(&["--stall", "0", "--timeout", "0", "--cpu-limit", "0", "--max-rss", "0"]);
        assert_eq!((c.stall, c.timeout, c.cpu_limit, c.max_rss), (None, None, None, None));
        let c = config(&["--min-cpu", "0"]);
        assert_eq!(c.min_cpu, None);
        let l = config(&["--stall", "30s", "--max-rss", "1G"]).limits(100);
        assert_eq!(
            (l.stall, l.max_rss, l.clk_tck),
            (Some(Duration::from_secs(30)), Some(1 << 30), 100)
        );
    }

    #[test]
    fn gpu_evidence_is_process_scope_unless_asked_for_the_device() {
        use crate::gpu::Scope;
        let c = config(&[]);
        assert!(c.evidence_gpu, "gpu is in the default --evidence");
        assert_eq!(c.gpu_scope, Scope::Process);
        assert_eq!(config(&["--gpu-evidence", "device"]).gpu_scope, Scope::Device);
        assert!(!config(&["--evidence", "cpu,io"]).evidence_gpu);
        let bad = Cli::try_parse_from(["watchd", "--gpu-evidence", "host", "true"]);
        assert!(bad.is_err(), "only process and device");
    }

    #[test]
    fn cpu_soft_for_is_whole_probe_windows_and_at_least_one() {
        let w = |args: &[&str]| config(args).cpu_soft_windows;
        assert_eq!(w(&[]), 3, "15s at 5s");
        assert_eq!(w(&["--cpu-soft-for", "15s", "--interval", "4s"]), 4, "rounded up");
        assert_eq!(w(&["--cpu-soft-for", "1s", "--interval", "250ms"]), 4);
        assert_eq!(w(&["--cpu-soft-for", "0"]), 1);
        assert_eq!(w(&["--cpu-soft-for", "1ms"]), 1);
        assert_eq!(w(&["--cpu-soft-for", "2"]), 1, "a bare number is seconds");
        assert_eq!(w(&["--cpu-soft-for", "100y", "--interval", "1ms"]), u32::MAX);
    }
}
