//! The command line as clap sees it: raw flags, their environment variables and help text.
//! Values are parsed into types here; cross-flag checks live in `config`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};

use crate::signals::{self, Signal};
use crate::units::{parse_cores, parse_duration, parse_fraction, parse_size};

const LIMITS: &str = "Limits";
const READINESS: &str = "Readiness and health";
const RESTART: &str = "Restart";
const DUMP: &str = "The dump";
const DRAIN: &str = "Drain and kill";
const PROCESS: &str = "Process";
const OUTPUT: &str = "Output";

/// Run COMMAND, forward signals to it, reap zombies, and drain then kill it when it stalls,
/// overruns or runs away.
#[derive(Parser, Debug)]
#[command(
    name = "watchd",
    version,
    override_usage = "watchd [OPTIONS] [--] COMMAND [ARG]...",
    after_help = "Exit status: the child's; 128+N or the re-raised signal N if it died of one; \
                  --exit-code-on-stop if watchd stopped it; 125 watchd failed; 126 COMMAND not \
                  executable; 127 COMMAND not found.",
    max_term_width = 100
)]
pub struct Cli {
    /// Stop the command when its process tree shows no evidence of life for DURATION
    #[arg(short, long, allow_hyphen_values = true, value_name = "DURATION", env = "WATCHD_STALL", value_parser = parse_duration, help_heading = LIMITS)]
    pub stall: Option<Duration>,

    /// Stop the command after DURATION of wall time
    #[arg(short, long, allow_hyphen_values = true, value_name = "DURATION", env = "WATCHD_TIMEOUT", value_parser = parse_duration, help_heading = LIMITS)]
    pub timeout: Option<Duration>,

    /// How often to probe the process tree through /proc
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION", env = "WATCHD_INTERVAL", default_value = "5s", value_parser = parse_duration, help_heading = LIMITS)]
    pub interval: Duration,

    /// What counts as evidence of life: cpu (a new process counts with it), io, notify, gpu
    #[arg(long, allow_hyphen_values = true, value_name = "KINDS", env = "WATCHD_EVIDENCE", default_value = "cpu,io,notify,gpu", value_delimiter = ',', help_heading = LIMITS)]
    pub evidence: Vec<Evidence>,

    /// Whose GPU work counts as gpu evidence: the tree's processes, or any on a visible GPU (containers); WATCHD_NVML_LIBRARY names another NVML library
    #[arg(long, allow_hyphen_values = true, value_name = "SCOPE", env = "WATCHD_GPU_EVIDENCE", default_value = "process", help_heading = LIMITS)]
    pub gpu_evidence: GpuEvidence,

    /// A file whose size or modification time changed since the last probe is evidence of life (repeatable)
    #[arg(long, allow_hyphen_values = true, value_name = "PATH", env = "WATCHD_HEARTBEAT", value_delimiter = ':', help_heading = LIMITS)]
    pub heartbeat: Vec<PathBuf>,

    /// CPU growth slower than CORES over a probe window is not evidence of life
    #[arg(long, allow_hyphen_values = true, value_name = "CORES", env = "WATCHD_MIN_CPU", value_parser = parse_cores, help_heading = LIMITS)]
    pub min_cpu: Option<f64>,

    /// Stop the command when its tree uses too much of CORES (see --cpu-soft, --cpu-hard)
    #[arg(long, allow_hyphen_values = true, value_name = "CORES", env = "WATCHD_CPU_LIMIT", value_parser = parse_cores, help_heading = LIMITS)]
    pub cpu_limit: Option<f64>,

    /// Fraction of --cpu-limit that fires cpu-soft when held for --cpu-soft-for
    #[arg(long, allow_hyphen_values = true, value_name = "FRACTION", env = "WATCHD_CPU_SOFT", default_value = "0.85", value_parser = parse_fraction, help_heading = LIMITS)]
    pub cpu_soft: f64,

    /// How long the tree must stay at --cpu-soft to fire cpu-soft (at least one probe window)
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION", env = "WATCHD_CPU_SOFT_FOR", default_value = "15s", value_parser = parse_duration, help_heading = LIMITS)]
    pub cpu_soft_for: Duration,

    /// Fraction of --cpu-limit that fires cpu-hard in a single probe window
    #[arg(long, allow_hyphen_values = true, value_name = "FRACTION", env = "WATCHD_CPU_HARD", default_value = "0.95", value_parser = parse_fraction, help_heading = LIMITS)]
    pub cpu_hard: f64,

    /// Stop the command when its tree's resident memory exceeds SIZE (512M, 2G, 1.5GiB)
    #[arg(long, allow_hyphen_values = true, value_name = "SIZE", env = "WATCHD_MAX_RSS", value_parser = parse_size, help_heading = LIMITS)]
    pub max_rss: Option<u64>,

    /// Run `sh -c CMD` (with WATCHD_PID set) as the health check; exit 0 passes
    #[arg(long, allow_hyphen_values = true, value_name = "CMD", env = "WATCHD_HEALTH_CMD", conflicts_with = "health_url", help_heading = READINESS)]
    pub health_cmd: Option<String>,

    /// GET this http:// URL as the health check; a status from 200 to 399 passes
    #[arg(long, allow_hyphen_values = true, value_name = "URL", env = "WATCHD_HEALTH_URL", help_heading = READINESS)]
    pub health_url: Option<String>,

    /// Time from the end of one health check to the start of the next
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION", env = "WATCHD_HEALTH_INTERVAL", default_value = "10s", value_parser = parse_duration, help_heading = READINESS)]
    pub health_interval: Duration,

    /// A health check that takes longer fails (a command is killed with its process group)
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION", env = "WATCHD_HEALTH_TIMEOUT", default_value = "5s", value_parser = parse_duration, help_heading = READINESS)]
    pub health_timeout: Duration,

    /// Consecutive failed health checks that fire unhealthy
    #[arg(long, allow_hyphen_values = true, value_name = "N", env = "WATCHD_HEALTH_RETRIES", default_value = "3", value_parser = clap::value_parser!(u32).range(1..), help_heading = READINESS)]
    pub health_retries: u32,

    /// Failures before the first passing check and within this period do not count
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION", env = "WATCHD_START_PERIOD", default_value = "0", value_parser = parse_duration, help_heading = READINESS)]
    pub start_period: Duration,

    /// Time between health checks during --start-period
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION", env = "WATCHD_START_INTERVAL", default_value = "1s", value_parser = parse_duration, help_heading = READINESS)]
    pub start_interval: Duration,

    /// Fire not-ready when the command is not ready DURATION after it started
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION", env = "WATCHD_READY_TIMEOUT", value_parser = parse_duration, help_heading = READINESS)]
    pub ready_timeout: Option<Duration>,

    /// Give the command a notify socket (NOTIFY_SOCKET, sd_notify: READY=1, WATCHDOG=1, ...)
    #[arg(long, env = "WATCHD_NOTIFY", value_parser = BoolishValueParser::new(), help_heading = READINESS)]
    pub notify: bool,

    /// Start the command again after it ends: no, on-failure or always
    #[arg(long, allow_hyphen_values = true, value_name = "WHEN", env = "WATCHD_RESTART", default_value = "no", help_heading = RESTART)]
    pub restart: RestartMode,

    /// At most N restarts; then exit with the last run's status
    #[arg(long, allow_hyphen_values = true, value_name = "N", env = "WATCHD_RESTART_MAX", value_parser = clap::value_parser!(u32), help_heading = RESTART)]
    pub restart_max: Option<u32>,

    /// Delay before the first restart; it doubles after each short run
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION", env = "WATCHD_RESTART_DELAY", default_value = "1s", value_parser = parse_duration, help_heading = RESTART)]
    pub restart_delay: Duration,

    /// The longest delay; a run that lasts longer resets the delay
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION", env = "WATCHD_RESTART_DELAY_MAX", default_value = "5m", value_parser = parse_duration, help_heading = RESTART)]
    pub restart_delay_max: Duration,

    /// Send SIGNAL to every process of the tree after the dump, before the stop signal
    #[arg(long, allow_hyphen_values = true, value_name = "SIGNAL", env = "WATCHD_DUMP_SIGNAL", value_parser = signals::parse, help_heading = DUMP)]
    pub dump_signal: Option<Signal>,

    /// Run `sh -c CMD` for each process of the tree (WATCHD_PID set) before the stop signal
    #[arg(long, allow_hyphen_values = true, value_name = "CMD", env = "WATCHD_DUMP_CMD", help_heading = DUMP)]
    pub dump_cmd: Option<String>,

    /// How long the dump signal and commands get before the stop signal
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION", env = "WATCHD_DUMP_WAIT", default_value = "2s", value_parser = parse_duration, help_heading = DUMP)]
    pub dump_wait: Duration,

    /// Signal that starts a drain
    #[arg(long, allow_hyphen_values = true, value_name = "SIGNAL", env = "WATCHD_STOP_SIGNAL", default_value = "TERM", value_parser = signals::parse, help_heading = DRAIN)]
    pub stop_signal: Signal,

    /// Who gets the stop signal: the whole tree, or the main child only
    #[arg(long, allow_hyphen_values = true, value_name = "SCOPE", env = "WATCHD_STOP_SCOPE", default_value = "tree", help_heading = DRAIN)]
    pub stop_scope: StopScope,

    /// Run `sh -c CMD` (with WATCHD_PID set) instead of sending the stop signal
    #[arg(long, allow_hyphen_values = true, value_name = "CMD", env = "WATCHD_STOP_CMD", help_heading = DRAIN)]
    pub stop_cmd: Option<String>,

    /// How long to wait after the stop signal before killing
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION", env = "WATCHD_GRACE", default_value = "10s", value_parser = parse_duration, help_heading = DRAIN)]
    pub grace: Duration,

    /// Signal sent to what is left of the tree when the grace runs out
    #[arg(long, allow_hyphen_values = true, value_name = "SIGNAL", env = "WATCHD_KILL_SIGNAL", default_value = "KILL", value_parser = signals::parse, help_heading = DRAIN)]
    pub kill_signal: Signal,

    /// Exit 0 when the child ends with one of these exit codes or signals (repeatable; e.g. 143,TERM)
    #[arg(long, allow_hyphen_values = true, value_name = "LIST", env = "WATCHD_SUCCESS_EXIT_STATUS", value_delimiter = ',', value_parser = crate::exit::parse_status, help_heading = DRAIN)]
    pub success_exit_status: Vec<crate::exit::ChildEnd>,

    /// Exit with N instead of the child's status when watchd stopped the child (124: like timeout)
    #[arg(long, allow_hyphen_values = true, value_name = "N", env = "WATCHD_EXIT_CODE_ON_STOP", value_parser = clap::value_parser!(u8), help_heading = DRAIN)]
    pub exit_code_on_stop: Option<u8>,

    /// Forward signal FROM as TO, or drop it with FROM=none (repeatable; e.g. TERM=QUIT)
    #[arg(long, allow_hyphen_values = true, value_name = "FROM=TO", env = "WATCHD_REWRITE_SIGNAL", value_delimiter = ',', value_parser = signals::parse_rewrite, help_heading = PROCESS)]
    pub rewrite_signal: Vec<(Signal, Option<Signal>)>,

    /// Where forwarded signals go: the child, its process group, or every process of the tree
    #[arg(long, allow_hyphen_values = true, value_name = "TARGET", env = "WATCHD_FORWARD_TO", default_value = "child", help_heading = PROCESS)]
    pub forward_to: ForwardTo,

    /// Leave the rest of the tree running when the main child exits
    #[arg(long, env = "WATCHD_NO_CLEANUP", value_parser = BoolishValueParser::new(), help_heading = PROCESS)]
    pub no_cleanup: bool,

    /// Do not become a child subreaper (orphans escape the tree)
    #[arg(long, env = "WATCHD_NO_SUBREAPER", value_parser = BoolishValueParser::new(), help_heading = PROCESS)]
    pub no_subreaper: bool,

    /// Signal the child gets when watchd dies
    #[arg(long, allow_hyphen_values = true, value_name = "SIGNAL", env = "WATCHD_PDEATHSIG", default_value = "KILL", value_parser = signals::parse, help_heading = PROCESS)]
    pub pdeathsig: Signal,

    /// Run the command in a cgroup of its own: auto (where watchd's cgroup is delegated to it),
    /// on (required), off
    #[arg(long, value_name = "WHEN", env = "WATCHD_CGROUP", default_value = "auto", value_enum, help_heading = PROCESS)]
    pub cgroup: crate::cgroup::Mode,

    /// Write JSON-lines events to PATH (- for stderr)
    #[arg(long, allow_hyphen_values = true, value_name = "PATH", env = "WATCHD_EVENTS", help_heading = OUTPUT)]
    pub events: Option<PathBuf>,

    /// Rewrite PATH after each probe with Prometheus text-format metrics
    #[arg(long, allow_hyphen_values = true, value_name = "PATH", env = "WATCHD_METRICS_FILE", help_heading = OUTPUT)]
    pub metrics_file: Option<PathBuf>,

    /// Also report start, forwarded signals, reaped orphans and the exit
    #[arg(short, long, env = "WATCHD_VERBOSE", value_parser = BoolishValueParser::new(), help_heading = OUTPUT)]
    pub verbose: bool,

    /// Print nothing but usage errors
    #[arg(short, long, env = "WATCHD_QUIET", value_parser = BoolishValueParser::new(), help_heading = OUTPUT)]
    pub quiet: bool,

    /// The command to run, and its arguments
    #[arg(value_name = "COMMAND", trailing_var_arg = true, required = true, num_args = 1..)]
    pub command: Vec<OsString>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Evidence {
    Cpu,
    Io,
    Notify,
    Gpu,
}

/// `--gpu-evidence`: whose GPU work counts (NVML reports host pids inside a container).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GpuEvidence {
    Process,
    Device,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RestartMode {
    No,
    OnFailure,
    Always,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StopScope {
    Tree,
    Child,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ForwardTo {
    Child,
    Group,
    Tree,
}

/// Parses the command line and the `WATCHD_*` variables, as a user of GNU tools and systemd
/// expects: an empty variable counts as unset (compose's `${X:-}`), and the command line wins
/// over the environment, also between the conflicting `-q` and `-v`.
pub fn parse() -> Result<Cli, clap::Error> {
    let mut cmd = Cli::command();
    let empty: Vec<clap::Id> = cmd
        .get_arguments()
        .filter(|a| a.get_env().and_then(std::env::var_os).is_some_and(|v| v.is_empty()))
        .map(|a| a.get_id().clone())
        .collect();
    for id in empty {
        cmd = cmd.mut_arg(id, |a| a.env(None::<&'static str>));
    }
    let matches = cmd.try_get_matches()?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if cli.quiet && cli.verbose {
        let typed = |id| matches.value_source(id) == Some(ValueSource::CommandLine);
        match (typed("quiet"), typed("verbose")) {
            (true, false) => cli.verbose = false,
            (false, true) => cli.quiet = false,
            _ => {
                let mut cmd = Cli::command();
                return Err(cmd.error(
                    ErrorKind::ArgumentConflict,
                    "the argument '--verbose' cannot be used with '--quiet'",
                ));
            }
        }
    }
    Ok(cli)
}

/// The environment variables that are watchd's own settings (`WATCHD_STALL`, ...): the
/// command does not get them, so a nested watchd starts clean.
pub fn own_variables() -> Vec<std::ffi::OsString> {
    Cli::command().get_arguments().filter_map(|a| a.get_env().map(ToOwned::to_owned)).collect()
}
