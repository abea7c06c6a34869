//! GPU evidence of life: NVIDIA's management library (NVML), opened at run time, asked at each
//! probe which processes used a GPU since the previous probe. Turning NVML's raw answers into a
//! [`GpuSample`] is pure; the calls into the library sit in the system layer, `crate::sys::nvml`.
//!
//! The library is opened with `dlopen`, not linked: watchd has no build-time dependency on CUDA,
//! and a machine without the library or without a device loses only this kind of evidence.
//! A statically linked build cannot load a shared library reliably and never tries.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::probe::GpuFigures;
use crate::sys::nvml;

/// The library [`load`] opens when `WATCHD_NVML_LIBRARY` names none: the driver's soname.
pub const DEFAULT_LIBRARY: &str = "libnvidia-ml.so.1";

/// The environment variable that names another library file (a stand-in for tests).
pub const LIBRARY_VAR: &str = "WATCHD_NVML_LIBRARY";

/// At most this many devices are asked; a larger count from the library is garbage.
const MAX_DEVICES: u32 = 64;

/// The room a list call gets first: a job rarely has more GPU processes than this.
const FIRST_ROOM: usize = 16;

/// The most entries a list call may ask room for; a library asking more is not believed, so a
/// garbage count never makes watchd allocate without bound (4096 samples are 128 KiB).
const MAX_ENTRIES: usize = 4096;

/// Room added to what a list call asked for, for processes that start between two calls.
const SLACK: usize = 8;

/// `NVML_VALUE_NOT_AVAILABLE`: a process's memory that NVML cannot tell.
const NOT_AVAILABLE: u64 = u64::MAX;

/// Whose GPU use counts (`--gpu-evidence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// The tree's processes only. Needs NVML's pids to be watchd's: no PID namespace between.
    #[default]
    Process,
    /// Any use of any visible device: for containers, where NVML reports host pids.
    Device,
}

/// Why there is no GPU evidence in this run: one line for `-v`, never an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// A statically linked build has no dynamic loader to bring the library in.
    StaticBuild,
    /// The library could not be opened (the loader's message).
    NoLibrary(String),
    /// The file opened but lacks a call watchd needs: not NVML, or an NVML too old.
    MissingCall { library: String, call: &'static str },
    /// `nvmlInit_v2` failed, typically because no NVIDIA driver is loaded.
    InitFailed(String),
    /// NVML initialised but offers no device watchd can open.
    NoDevice(String),
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no GPU evidence: ")?;
        match self {
            Unavailable::StaticBuild => write!(
                f,
                "a statically linked watchd cannot load {DEFAULT_LIBRARY} (use the dynamically linked build)"
            ),
            Unavailable::NoLibrary(why) => f.write_str(why),
            Unavailable::MissingCall { library, call } => {
                write!(f, "{library} is not a usable NVML library (it lacks {call})")
            }
            Unavailable::InitFailed(why) => write!(f, "NVML did not initialise: {why}"),
            Unavailable::NoDevice(why) => f.write_str(why),
        }
    }
}

/// An `nvmlReturn_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u32);

impl Status {
    pub const SUCCESS: Status = Status(0);
    pub const INVALID_ARGUMENT: Status = Status(2);
    pub const NOT_FOUND: Status = Status(6);
    pub const INSUFFICIENT_SIZE: Status = Status(7);
    pub const FUNCTION_NOT_FOUND: Status = Status(13);
}

/// nvml.h's `nvmlProcessUtilizationSample_t`: one process's use of one device at one of the
/// driver's samples.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UtilizationSample {
    pub pid: u32,
    /// When the driver took the sample: wall clock, microseconds since the epoch.
    pub time_stamp: u64,
    /// SM (3D and compute) utilization, percent.
    pub sm_util: u32,
    pub mem_util: u32,
    pub enc_util: u32,
    pub dec_util: u32,
}

/// nvml.h's `nvmlProcessInfo_t` (`nvmlProcessInfo_v2_t`), which both
/// `nvmlDeviceGetComputeRunningProcesses_v3` and `_v2` fill.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// Bytes, or `NVML_VALUE_NOT_AVAILABLE`.
    pub used_gpu_memory: u64,
    pub gpu_instance_id: u32,
    pub compute_instance_id: u32,
}

// The layouts nvml.h gives these structs on every 64-bit Linux ABI.
const _: () = assert!(size_of::<UtilizationSample>() == 32 && size_of::<ProcessInfo>() == 24);

/// What one device answered at one probe. `None` where a call failed: no news.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceReading {
    /// The timestamp NVML was asked for samples after: where this device's window starts.
    pub since: u64,
    /// `nvmlDeviceGetProcessUtilization`, as the library returned them (a garbage library may
    /// return stale or out-of-range ones; [`summarize`] drops those).
    pub samples: Option<Vec<UtilizationSample>>,
    /// `nvmlDeviceGetComputeRunningProcesses`.
    pub processes: Option<Vec<ProcessInfo>>,
    /// `nvmlDeviceGetUtilizationRates`' `gpu` percentage (asked in device scope only).
    pub busy_percent: Option<u32>,
    /// `nvmlDeviceGetMemoryInfo`'s `used` bytes (asked in device scope only).
    pub memory_used: Option<u64>,
}

/// One tree process's GPU use in a probe window, for the dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessGpu {
    pub pid: u32,
    /// Its highest SM utilization in the window, percent, on any device; `None` when NVML had
    /// no sample of it (NVML keeps samples only of processes that used the GPU).
    pub sm_percent: Option<u8>,
    /// GPU memory it holds, summed over devices; `None` when NVML cannot tell.
    pub memory_bytes: Option<u64>,
}

/// What the GPUs say about one probe window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuSample {
    /// A GPU worked for the tree (process scope) or at all (device scope) in the window.
    pub evidence: bool,
    /// The highest SM utilization in percent (0–100) of the tree's processes in the window, or
    /// of the devices in device scope: the sample's `gpu_util`. `None` when no device answered.
    pub util: Option<u8>,
    /// GPU memory held by the tree's processes, or used on the devices in device scope: the
    /// sample's `gpu_memory_bytes`. `None` when no device answered.
    pub memory_bytes: Option<u64>,
    /// The tree's processes that NVML reported, by pid.
    pub per_process: Vec<ProcessGpu>,
    /// The first failure of each call on each device, once per run: lines for `-v`.
    pub notes: Vec<String>,
}

/// Where a device's next window starts: after the newest sample seen, but never later than now,
/// or a clock stepped back (or a garbage timestamp) would hide every later sample.
pub fn window_start(last_seen: u64, now_us: u64) -> u64 {
    last_seen.min(now_us)
}

/// The samples that count: taken inside the window, with a utilization that is a percentage.
fn counted(samples: &[UtilizationSample], since: u64) -> impl Iterator<Item = &UtilizationSample> {
    samples.iter().filter(move |s| s.time_stamp > since && s.sm_util <= 100)
}

/// The newest timestamp seen after a reading: the start of the next window.
pub fn last_seen_after(reading: &DeviceReading) -> u64 {
    let samples = reading.samples.as_deref().unwrap_or_default();
    counted(samples, reading.since).map(|s| s.time_stamp).fold(reading.since, u64::max)
}

/// Turns what the devices answered into one probe's figures. `in_tree` says whether a pid
/// (as NVML reports it) is one of the tree's processes.
pub fn summarize(
    readings: &[DeviceReading],
    scope: Scope,
    in_tree: impl Fn(u32) -> bool,
) -> GpuSample {
    let mut util: Option<u8> = None;
    let mut memory: Option<u64> = None;
    let mut per_process: BTreeMap<u32, ProcessGpu> = BTreeMap::new();
    for reading in readings {
        if let Some(samples) = &reading.samples {
            let mut top = 0;
            for sample in counted(samples, reading.since) {
                let sm = sample.sm_util as u8; // counted() kept 0..=100
                let mine = in_tree(sample.pid);
                if mine {
                    let process = process_entry(&mut per_process, sample.pid);
                    process.sm_percent = process.sm_percent.max(Some(sm));
                }
                if mine || scope == Scope::Device {
                    top = top.max(sm);
                }
            }
            util = util.max(Some(top));
        }
        if let Some(processes) = &reading.processes {
            let mut held = 0u64;
            for info in processes.iter().filter(|info| in_tree(info.pid)) {
                let process = process_entry(&mut per_process, info.pid);
                if info.used_gpu_memory != NOT_AVAILABLE {
                    process.memory_bytes = Some(
                        process.memory_bytes.unwrap_or(0).saturating_add(info.used_gpu_memory),
                    );
                    held = held.saturating_add(info.used_gpu_memory);
                }
            }
            if scope == Scope::Process {
                memory = Some(memory.unwrap_or(0).saturating_add(held));
            }
        }
        if scope == Scope::Device {
            if let Some(busy) = reading.busy_percent.filter(|&busy| busy <= 100) {
                util = util.max(Some(busy as u8));
            }
            if let Some(used) = reading.memory_used {
                memory = Some(memory.unwrap_or(0).saturating_add(used));
            }
        }
    }
    GpuSample {
        evidence: util.is_some_and(|util| util > 0),
        util,
        memory_bytes: memory,
        per_process: per_process.into_values().collect(),
        notes: Vec::new(),
    }
}

fn process_entry(per_process: &mut BTreeMap<u32, ProcessGpu>, pid: u32) -> &mut ProcessGpu {
    per_process.entry(pid).or_insert(ProcessGpu { pid, sm_percent: None, memory_bytes: None })
}

/// Why a list call gave no list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFailure {
    /// The library returned this status.
    Returned(Status),
    /// The library claimed a count it cannot mean: more entries than the room it was given, or
    /// more than `MAX_ENTRIES`.
    BadCount(u32),
}

/// NVML's list calls fill a caller's array and report how many entries they wrote or, with
/// `NVML_ERROR_INSUFFICIENT_SIZE`, how many they need. `call(room)` makes the call with
/// `room.len()` as the array's size. The first call gets room for `FIRST_ROOM` entries (no
/// separate sizing call in the usual case); when that is too small the room grows once to
/// what the library asked for, within `MAX_ENTRIES`.
pub fn fetch_list<T: Copy + Default>(
    mut call: impl FnMut(&mut [T]) -> (Status, u32),
) -> Result<Vec<T>, ListFailure> {
    let mut list = vec![T::default(); FIRST_ROOM];
    for _ in 0..2 {
        let (status, count) = call(&mut list);
        let claimed = count as usize;
        match status {
            Status::SUCCESS if claimed <= list.len() => {
                list.truncate(claimed);
                return Ok(list);
            }
            Status::INSUFFICIENT_SIZE if claimed > list.len() && claimed <= MAX_ENTRIES => {
                list.resize((claimed + SLACK).min(MAX_ENTRIES), T::default());
            }
            Status::SUCCESS | Status::INSUFFICIENT_SIZE => {
                return Err(ListFailure::BadCount(count));
            }
            status => return Err(ListFailure::Returned(status)),
        }
    }
    // Still too small after growing to what it asked for: processes come and go faster than
    // two calls; the next probe tries again.
    Err(ListFailure::Returned(Status::INSUFFICIENT_SIZE))
}

/// The calls `Gpu::sample` makes per device, to note each one's first failure once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Utilization,
    Processes,
    Rates,
    Memory,
}

impl Call {
    const ALL: usize = 4;

    fn name(self, library: &nvml::Library) -> &'static str {
        match self {
            Call::Utilization => "nvmlDeviceGetProcessUtilization",
            Call::Processes => library.running_processes_name(),
            Call::Rates => "nvmlDeviceGetUtilizationRates",
            Call::Memory => "nvmlDeviceGetMemoryInfo",
        }
    }
}

/// NVML, initialised, with the devices it offered and where each device's next window starts.
/// Load it once (initialising NVML is costly) and keep it for the whole run; dropping it shuts
/// NVML down.
pub struct Gpu {
    library: nvml::Library,
    /// The descriptors watchd held before NVML was opened, until the first sample has been
    /// taken: what NVML opens up to then (device files) is made close-on-exec.
    before: Option<Vec<std::os::fd::RawFd>>,
    /// Per device: the newest sample timestamp seen, in microseconds.
    last_seen: Vec<u64>,
    /// Per device and call: whether its failure was already noted.
    noted: Vec<[bool; Call::ALL]>,
}

/// Opens NVML: the file `WATCHD_NVML_LIBRARY` names (when set and not empty), else
/// `libnvidia-ml.so.1` from the loader's search path.
pub fn load() -> Result<Gpu, Unavailable> {
    load_from(&library())
}

/// The library [`load`] opens: what `WATCHD_NVML_LIBRARY` names (when set and not empty), else
/// `libnvidia-ml.so.1`.
pub fn library() -> OsString {
    std::env::var_os(LIBRARY_VAR)
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| OsString::from(DEFAULT_LIBRARY))
}

/// Opens NVML from `library` (a path, or a bare name for the loader's search path),
/// initialises it and takes a handle on every device it offers.
pub fn load_from(library: &OsStr) -> Result<Gpu, Unavailable> {
    let before = nvml::descriptors();
    let mut nvml = nvml::open(library)?;
    let status = nvml.init();
    if status != Status::SUCCESS {
        return Err(Unavailable::InitFailed(nvml.describe(status)));
    }
    let count = nvml.device_count().map_err(|status| {
        Unavailable::NoDevice(format!("NVML cannot count its devices: {}", nvml.describe(status)))
    })?;
    let mut first_error = None;
    for index in 0..count.min(MAX_DEVICES) {
        if let Err(status) = nvml.add_device(index) {
            first_error.get_or_insert((index, status));
        }
    }
    let devices = nvml.devices();
    if devices == 0 {
        return Err(Unavailable::NoDevice(match first_error {
            None => "NVML sees no GPU".to_string(),
            Some((index, status)) => format!(
                "NVML sees {count} GPUs and opens none (GPU {index}: {})",
                nvml.describe(status)
            ),
        }));
    }
    if let Some(before) = &before {
        nvml::close_on_exec_since(before);
    }
    Ok(Gpu {
        library: nvml,
        before,
        last_seen: vec![0; devices],
        noted: vec![[false; Call::ALL]; devices],
    })
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gpu").field("last_seen", &self.last_seen).finish_non_exhaustive()
    }
}

impl Gpu {
    /// How many devices are asked at each probe.
    pub fn devices(&self) -> usize {
        self.library.devices()
    }

    /// Asks every device what happened since the previous call: one probe's figures.
    /// `in_tree` says whether a pid NVML reports is one of the tree's processes.
    pub fn sample(&mut self, scope: Scope, in_tree: impl Fn(u32) -> bool) -> GpuSample {
        let now = now_micros();
        let mut notes = Vec::new();
        let readings: Vec<DeviceReading> =
            (0..self.devices()).map(|device| self.read(device, scope, now, &mut notes)).collect();
        for (last_seen, reading) in self.last_seen.iter_mut().zip(&readings) {
            *last_seen = last_seen_after(reading);
        }
        if let Some(before) = self.before.take() {
            nvml::close_on_exec_since(&before);
        }
        GpuSample { notes, ..summarize(&readings, scope, in_tree) }
    }

    fn read(
        &mut self,
        device: usize,
        scope: Scope,
        now: u64,
        notes: &mut Vec<String>,
    ) -> DeviceReading {
        let since = window_start(self.last_seen[device], now);
        let nvml = &self.library;
        let samples = match fetch_list(|room| nvml.process_utilization(device, room, since)) {
            // NOT_FOUND: no sample newer than `since`, i.e. nobody used this device.
            Err(ListFailure::Returned(Status::NOT_FOUND)) => Ok(Vec::new()),
            other => other,
        };
        let processes = fetch_list(|room| nvml.running_processes(device, room));
        let (rates, memory) = match scope {
            Scope::Process => (None, None),
            Scope::Device => (
                Some(nvml.utilization_rates(device).map_err(ListFailure::Returned)),
                Some(nvml.memory_used(device).map_err(ListFailure::Returned)),
            ),
        };
        let mut reading = DeviceReading { since, ..DeviceReading::default() };
        reading.samples = self.keep(device, Call::Utilization, samples, notes);
        reading.processes = self.keep(device, Call::Processes, processes, notes);
        reading.busy_percent = rates.and_then(|r| self.keep(device, Call::Rates, r, notes));
        reading.memory_used = memory.and_then(|m| self.keep(device, Call::Memory, m, notes));
        reading
    }

    /// A call's answer, or `None` after noting its first failure on this device.
    fn keep<T>(
        &mut self,
        device: usize,
        call: Call,
        answer: Result<T, ListFailure>,
        notes: &mut Vec<String>,
    ) -> Option<T> {
        let failure = match answer {
            Ok(value) => return Some(value),
            Err(failure) => failure,
        };
        let noted = &mut self.noted[device][call as usize];
        if !*noted {
            *noted = true;
            let why = match failure {
                ListFailure::Returned(status) => self.library.describe(status),
                ListFailure::BadCount(count) => format!("answered a count of {count}"),
            };
            notes.push(format!(
                "GPU {device}: {} failed ({why}): no GPU evidence from it while it fails",
                call.name(&self.library)
            ));
        }
        None
    }
}

impl GpuSample {
    /// The figures a probe's sample carries: evidence, `gpu_util`, `gpu_memory_bytes`.
    pub fn figures(&self) -> GpuFigures {
        GpuFigures {
            busy: self.evidence,
            util: self.util.map(f64::from),
            memory_bytes: self.memory_bytes,
        }
    }

    /// What the dump shows of the tree's process `pid`: NVML's entry for it; a window with no
    /// sample of it is no use (0 %) when NVML answered, as the samples call keeps only processes
    /// that used a GPU. A process NVML did not list holds no GPU memory and did no work, in
    /// process scope; in device scope NVML's pids may be another PID namespace's, so nothing is
    /// known of it.
    pub fn of_process(&self, pid: u32, scope: Scope) -> ProcessGpu {
        let util = self.util.map(|_| 0);
        match self.per_process.iter().find(|p| p.pid == pid) {
            Some(listed) => ProcessGpu { sm_percent: listed.sm_percent.or(util), ..*listed },
            None if scope == Scope::Process => {
                ProcessGpu { pid, sm_percent: util, memory_bytes: self.memory_bytes.map(|_| 0) }
            }
            None => ProcessGpu { pid, sm_percent: None, memory_bytes: None },
        }
    }
}

/// GPU evidence over watchd's run, for the driver: NVML is loaded at the first probe that has a
/// use for its figures, and only once (initialising it is costly); where it cannot be, `-v` says
/// why once and the run goes on without it. Keeps the last probe's figures for the dump.
pub struct Probe {
    scope: Scope,
    /// The figures are always wanted (samples, metrics), not only when evidence decides something.
    always: bool,
    library: OsString,
    nvml: Nvml,
    last: Option<GpuSample>,
}

/// Where loading NVML stands.
enum Nvml {
    Untried,
    Loaded(Gpu),
    Unavailable,
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nvml = match &self.nvml {
            Nvml::Untried => "untried",
            Nvml::Loaded(_) => "loaded",
            Nvml::Unavailable => "unavailable",
        };
        f.debug_struct("Probe").field("scope", &self.scope).field("nvml", &nvml).finish()
    }
}

impl Probe {
    /// `always`: the figures go somewhere at every probe (`--events`, `--metrics-file`), so NVML
    /// is loaded at the first probe even when evidence decides nothing. `library`: what to open
    /// ([`library`]).
    pub fn new(scope: Scope, always: bool, library: OsString) -> Probe {
        Probe { scope, always, library, nvml: Nvml::Untried, last: None }
    }

    /// One probe's GPU figures, or `None` without NVML or when no device answered anything
    /// (no news: the run is then what it would be without NVML). `deciding`: evidence decides something
    /// now (a stall window is in force); with neither that nor `always`, NVML is not loaded
    /// yet. `tree()` gives what says whether a pid NVML reports is the tree's (called only when
    /// NVML is asked, so a run without it pays nothing per probe); `say` takes `-v` lines.
    pub fn probe<InTree: Fn(u32) -> bool>(
        &mut self,
        deciding: bool,
        tree: impl FnOnce() -> InTree,
        mut say: impl FnMut(String),
    ) -> Option<GpuFigures> {
        if matches!(self.nvml, Nvml::Untried) {
            if !(deciding || self.always) {
                return None;
            }
            self.nvml = match load_from(&self.library) {
                Ok(gpu) => {
                    let whose = match self.scope {
                        Scope::Process => "the tree's processes",
                        Scope::Device => "any process (--gpu-evidence device)",
                    };
                    let n = gpu.devices();
                    let gpus = if n == 1 { "1 GPU".to_string() } else { format!("{n} GPUs") };
                    say(format!(
                        "GPU evidence: NVML answers for {gpus}; counting the work of {whose}"
                    ));
                    Nvml::Loaded(gpu)
                }
                Err(why) => {
                    say(why.to_string());
                    Nvml::Unavailable
                }
            };
        }
        let Nvml::Loaded(gpu) = &mut self.nvml else { return None };
        let mut sample = gpu.sample(self.scope, tree());
        for note in std::mem::take(&mut sample.notes) {
            say(note);
        }
        let answered = sample.util.is_some() || sample.memory_bytes.is_some();
        let figures = answered.then(|| sample.figures());
        self.last = Some(sample);
        figures
    }

    /// The dump's figures for the tree's process `pid`, from the last probe; `None` without
    /// NVML (or before its first probe).
    pub fn of_process(&self, pid: i32) -> Option<ProcessGpu> {
        let pid = u32::try_from(pid).ok()?;
        Some(self.last.as_ref()?.of_process(pid, self.scope))
    }
}

/// NVML's timestamps are the wall clock in microseconds.
fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(all(test, not(target_feature = "crt-static")))]
#[path = "../tests/fixtures/fake_nvml.rs"]
mod fake_nvml;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const TREE: u32 = 4242;
    const OTHER: u32 = 777;

    fn in_tree(pid: u32) -> bool {
        pid == TREE
    }

    fn sample(pid: u32, sm_util: u32, time_stamp: u64) -> UtilizationSample {
        UtilizationSample { pid, time_stamp, sm_util, ..UtilizationSample::default() }
    }

    fn process(pid: u32, used_gpu_memory: u64) -> ProcessInfo {
        ProcessInfo { pid, used_gpu_memory, ..ProcessInfo::default() }
    }

    fn with_samples(since: u64, samples: Vec<UtilizationSample>) -> DeviceReading {
        DeviceReading { since, samples: Some(samples), ..DeviceReading::default() }
    }

    #[test]
    fn tree_process_with_sm_use_in_the_window_is_evidence() {
        let got =
            summarize(&[with_samples(100, vec![sample(TREE, 37, 150)])], Scope::Process, in_tree);
        assert!(got.evidence);
        assert_eq!(got.util, Some(37));
        assert_eq!(got.memory_bytes, None, "no device answered the running-processes call");
        assert_eq!(
            got.per_process,
            [ProcessGpu { pid: TREE, sm_percent: Some(37), memory_bytes: None }]
        );
    }

    #[test]
    fn another_process_counts_only_in_device_scope() {
        let readings = [with_samples(100, vec![sample(OTHER, 80, 150)])];
        let process = summarize(&readings, Scope::Process, in_tree);
        assert!(!process.evidence);
        assert_eq!(process.util, Some(0));
        assert!(process.per_process.is_empty());
        let device = summarize(&readings, Scope::Device, in_tree);
        assert!(device.evidence);
        assert_eq!(device.util, Some(80));
        assert!(device.per_process.is_empty(), "the dump lists the tree's processes only");
    }

    #[test]
    fn use_on_any_device_counts() {
        let readings = [
            with_samples(100, vec![]),
            with_samples(5000, vec![sample(TREE, 12, 5001), sample(TREE, 3, 5002)]),
        ];
        let got = summarize(&readings, Scope::Process, in_tree);
        assert!(got.evidence);
        assert_eq!(got.util, Some(12));
    }

    #[test]
    fn samples_outside_the_window_or_out_of_range_do_not_count() {
        let reading = with_samples(
            100,
            vec![sample(TREE, 90, 100), sample(TREE, 101, 200), sample(TREE, 0, 150)],
        );
        let got = summarize(std::slice::from_ref(&reading), Scope::Device, in_tree);
        assert!(!got.evidence, "{got:?}");
        assert_eq!(got.util, Some(0));
        assert_eq!(
            got.per_process,
            [ProcessGpu { pid: TREE, sm_percent: Some(0), memory_bytes: None }]
        );
        assert_eq!(last_seen_after(&reading), 150, "a garbage sample does not move the window");
    }

    #[test]
    fn memory_adds_up_per_process_and_over_devices() {
        let tree = |pid| pid == TREE || pid == 99;
        let readings = [
            DeviceReading {
                processes: Some(vec![process(TREE, 1000), process(OTHER, 5000)]),
                memory_used: Some(10),
                ..DeviceReading::default()
            },
            DeviceReading {
                processes: Some(vec![process(TREE, 24), process(99, NOT_AVAILABLE)]),
                memory_used: Some(20),
                ..DeviceReading::default()
            },
        ];
        let got = summarize(&readings, Scope::Process, tree);
        assert_eq!(got.memory_bytes, Some(1024));
        assert_eq!(
            got.per_process,
            [
                ProcessGpu { pid: 99, sm_percent: None, memory_bytes: None },
                ProcessGpu { pid: TREE, sm_percent: None, memory_bytes: Some(1024) },
            ]
        );
        assert!(!got.evidence, "memory is not use");
        let device = summarize(&readings, Scope::Device, tree);
        assert_eq!(device.memory_bytes, Some(30), "device scope reports what the devices use");
    }

    #[test]
    fn busy_devices_count_in_device_scope_only() {
        let reading = |busy| DeviceReading {
            samples: Some(vec![]),
            busy_percent: Some(busy),
            ..DeviceReading::default()
        };
        let device = summarize(&[reading(12), reading(250)], Scope::Device, in_tree);
        assert!(device.evidence);
        assert_eq!(device.util, Some(12), "250 % is garbage");
        let process = summarize(&[reading(12)], Scope::Process, in_tree);
        assert!(!process.evidence);
        assert_eq!(process.util, Some(0));
    }

    #[test]
    fn nothing_answered_is_no_news() {
        for readings in [&[][..], &[DeviceReading::default(), DeviceReading::default()][..]] {
            for scope in [Scope::Process, Scope::Device] {
                let got = summarize(readings, scope, in_tree);
                assert_eq!(got, GpuSample::default(), "{scope:?}");
            }
        }
    }

    #[test]
    fn the_dump_sees_each_tree_process_as_nvml_answered_for_it() {
        const QUIET: u32 = 4343;
        let answered = GpuSample {
            evidence: true,
            util: Some(60),
            memory_bytes: Some(1024),
            per_process: vec![
                ProcessGpu { pid: TREE, sm_percent: Some(60), memory_bytes: Some(1024) },
                ProcessGpu { pid: 99, sm_percent: None, memory_bytes: None },
            ],
            notes: Vec::new(),
        };
        for scope in [Scope::Process, Scope::Device] {
            assert_eq!(answered.of_process(TREE, scope), answered.per_process[0]);
            assert_eq!(
                answered.of_process(99, scope),
                ProcessGpu { pid: 99, sm_percent: Some(0), memory_bytes: None },
                "listed with no sample: no use in the window; NVML could not tell its memory"
            );
        }
        assert_eq!(
            answered.of_process(QUIET, Scope::Process),
            ProcessGpu { pid: QUIET, sm_percent: Some(0), memory_bytes: Some(0) },
            "not listed: it used no GPU"
        );
        assert_eq!(
            answered.of_process(QUIET, Scope::Device),
            ProcessGpu { pid: QUIET, sm_percent: None, memory_bytes: None },
            "NVML's pids may be another namespace's"
        );
        let failed = GpuSample { util: None, memory_bytes: None, ..answered };
        assert_eq!(
            failed.of_process(QUIET, Scope::Process),
            ProcessGpu { pid: QUIET, sm_percent: None, memory_bytes: None },
            "calls that failed tell nothing"
        );
    }

    #[test]
    fn a_window_never_starts_after_now() {
        assert_eq!(window_start(300, 400), 300);
        assert_eq!(window_start(500, 400), 400, "a clock stepped back");
        assert_eq!(window_start(u64::MAX, 400), 400, "a garbage timestamp");
    }

    /// A scripted library for `fetch_list`: answers in turn, records the room of each call.
    fn scripted(answers: &[(Status, u32)]) -> (Result<Vec<ProcessInfo>, ListFailure>, Vec<usize>) {
        let mut rooms = Vec::new();
        let mut answers = answers.iter();
        let got = fetch_list(|room: &mut [ProcessInfo]| {
            rooms.push(room.len());
            let (status, count) = *answers.next().expect("no more calls than scripted");
            if status == Status::SUCCESS {
                for (i, slot) in room.iter_mut().take(count as usize).enumerate() {
                    *slot = process(i as u32, 1);
                }
            }
            (status, count)
        });
        (got, rooms)
    }

    #[test]
    fn a_list_grows_once_to_what_the_library_asks_for() {
        let (got, rooms) = scripted(&[(Status::INSUFFICIENT_SIZE, 40), (Status::SUCCESS, 40)]);
        assert_eq!(got.map(|list| list.len()), Ok(40));
        assert_eq!(rooms, [FIRST_ROOM, 40 + SLACK]);
        let (got, rooms) = scripted(&[(Status::SUCCESS, 3)]);
        assert_eq!(got.map(|list| list.len()), Ok(3));
        assert_eq!(rooms, [FIRST_ROOM], "no sizing call in the usual case");
    }

    #[test]
    fn a_list_count_that_cannot_be_true_is_refused() {
        let room = FIRST_ROOM as u32;
        let cases = [
            (vec![(Status::SUCCESS, room + 1)], ListFailure::BadCount(room + 1)),
            (vec![(Status::INSUFFICIENT_SIZE, u32::MAX)], ListFailure::BadCount(u32::MAX)),
            (vec![(Status::INSUFFICIENT_SIZE, 3)], ListFailure::BadCount(3)),
            (
                vec![(Status::INSUFFICIENT_SIZE, 40), (Status::INSUFFICIENT_SIZE, 80)],
                ListFailure::Returned(Status::INSUFFICIENT_SIZE),
            ),
            (vec![(Status(3), 0)], ListFailure::Returned(Status(3))),
        ];
        for (answers, want) in cases {
            let (got, rooms) = scripted(&answers);
            assert_eq!(got, Err(want), "{answers:?}");
            assert!(rooms.iter().all(|&room| room <= MAX_ENTRIES), "{rooms:?}");
        }
    }

    fn samples() -> impl Strategy<Value = Vec<UtilizationSample>> {
        let pid = prop::sample::select(vec![TREE, OTHER, 0, u32::MAX]);
        let stamp = prop_oneof![0u64..400, any::<u64>()];
        let sm = prop_oneof![0u32..=120, any::<u32>()];
        prop::collection::vec(
            (pid, stamp, sm).prop_map(|(pid, stamp, sm)| sample(pid, sm, stamp)),
            0..8,
        )
    }

    fn readings() -> impl Strategy<Value = Vec<DeviceReading>> {
        let pid = prop::sample::select(vec![TREE, OTHER, 0, u32::MAX]);
        let processes = prop::collection::vec(
            (pid, any::<u64>()).prop_map(|(pid, bytes)| process(pid, bytes)),
            0..6,
        );
        let reading = (
            prop_oneof![0u64..400, any::<u64>()],
            prop::option::of(samples()),
            prop::option::of(processes),
            prop::option::of(any::<u32>()),
            prop::option::of(any::<u64>()),
        )
            .prop_map(|(since, samples, processes, busy_percent, memory_used)| {
                DeviceReading { since, samples, processes, busy_percent, memory_used }
            });
        prop::collection::vec(reading, 0..4)
    }

    proptest! {
        #[test]
        fn any_answers_give_a_sane_sample(readings in readings()) {
            let process = summarize(&readings, Scope::Process, in_tree);
            let device = summarize(&readings, Scope::Device, in_tree);
            for got in [&process, &device] {
                prop_assert!(got.util.is_none_or(|util| util <= 100));
                prop_assert_eq!(got.evidence, got.util.is_some_and(|util| util > 0));
                prop_assert!(got.per_process.iter().all(|p| p.pid == TREE), "{:?}", got.per_process);
            }
            prop_assert!(process.util <= device.util, "the tree's use is part of the devices'");
            prop_assert!(!process.evidence || device.evidence);
            prop_assert_eq!(&process.per_process, &device.per_process);
        }

        #[test]
        fn the_window_only_moves_forward_to_a_sample_seen(since in any::<u64>(), samples in samples()) {
            let reading = DeviceReading { since, samples: Some(samples.clone()), ..DeviceReading::default() };
            let next = last_seen_after(&reading);
            prop_assert!(next >= since);
            prop_assert!(next == since || samples.iter().any(|s| s.time_stamp == next && s.sm_util <= 100));
        }

        #[test]
        fn any_list_answers_are_survived_within_bounds(
            answers in prop::collection::vec((0u32..10, any::<u32>()), 2),
        ) {
            let answers: Vec<(Status, u32)> =
                answers.into_iter().map(|(status, count)| (Status(status), count)).collect();
            let (got, rooms) = scripted(&answers);
            prop_assert!(rooms.iter().all(|&room| room <= MAX_ENTRIES));
            if let Ok(list) = got {
                prop_assert!(list.len() <= MAX_ENTRIES);
            }
        }
    }

    #[cfg(target_feature = "crt-static")]
    #[test]
    fn a_static_build_never_loads_a_library() {
        assert!(matches!(load_from(OsStr::new("libc.so.6")), Err(Unavailable::StaticBuild)));
    }

    /// Through the stand-in library (tests/fixtures/fake_nvml.c), loaded as watchd loads NVML.
    #[cfg(not(target_feature = "crt-static"))]
    mod through_a_library {
        use std::path::{Path, PathBuf};

        use super::super::fake_nvml::{self, Scratch, Variant};
        use super::*;

        fn fake(tag: &str, variant: Variant, answers: &str) -> (Scratch, PathBuf) {
            let dir = Scratch::new(tag);
            let library = fake_nvml::install(&dir.0, variant);
            fake_nvml::answer(&library, answers);
            (dir, library)
        }

        fn open(library: &Path) -> Gpu {
            match load_from(library.as_os_str()) {
                Ok(gpu) => gpu,
                Err(why) => panic!("{why}"),
            }
        }

        fn unavailable(library: &OsStr) -> Unavailable {
            match load_from(library) {
                Ok(_) => panic!("{library:?} loaded"),
                Err(why) => why,
            }
        }

        #[test]
        fn a_busy_tree_process_is_evidence_at_every_probe() {
            let answers = format!("device 0\nsample 0 {TREE} 60 now\nprocess 0 {TREE} 1048576\n");
            let (_dir, library) = fake("busy", Variant::Full, &answers);
            let mut gpu = open(&library);
            assert_eq!(gpu.devices(), 1);
            for probe in 0..3 {
                let got = gpu.sample(Scope::Process, in_tree);
                assert!(got.evidence, "probe {probe}: {got:?}");
                assert_eq!(got.util, Some(60));
                assert_eq!(got.memory_bytes, Some(1048576));
                assert_eq!(
                    got.per_process,
                    [ProcessGpu { pid: TREE, sm_percent: Some(60), memory_bytes: Some(1048576) }]
                );
                assert!(got.notes.is_empty(), "{:?}", got.notes);
            }
        }

        #[test]
        fn another_process_use_counts_in_device_scope_only() {
            let answers = format!(
                "device 0 busy 70 used 5000\nsample 0 {OTHER} 70 now\nprocess 0 {OTHER} 5000\n"
            );
            let (_dir, library) = fake("other", Variant::Full, &answers);
            let mut gpu = open(&library);
            let process = gpu.sample(Scope::Process, in_tree);
            assert!(!process.evidence, "{process:?}");
            assert_eq!((process.util, process.memory_bytes), (Some(0), Some(0)));
            assert!(process.per_process.is_empty());
            let device = gpu.sample(Scope::Device, in_tree);
            assert!(device.evidence, "{device:?}");
            assert_eq!((device.util, device.memory_bytes), (Some(70), Some(5000)));
        }

        #[test]
        fn no_sample_since_the_last_timestamp_is_no_evidence() {
            let (_dir, library) =
                fake("once", Variant::Full, &format!("device 0\nsample 0 {TREE} 60 1000\n"));
            let mut gpu = open(&library);
            assert!(gpu.sample(Scope::Process, in_tree).evidence, "the sample is new at first");
            let again = gpu.sample(Scope::Process, in_tree);
            assert!(!again.evidence, "{again:?}");
            assert_eq!(again.util, Some(0), "NOT_FOUND is an answer: nobody used the device");
            assert!(again.notes.is_empty(), "{:?}", again.notes);
        }

        #[test]
        fn stale_samples_from_a_library_that_ignores_the_timestamp_do_not_count() {
            let answers = format!("stale\ndevice 0\nsample 0 {TREE} 60 1000\n");
            let (_dir, library) = fake("stale", Variant::Full, &answers);
            let mut gpu = open(&library);
            assert!(gpu.sample(Scope::Process, in_tree).evidence);
            assert!(!gpu.sample(Scope::Process, in_tree).evidence);
        }

        #[test]
        fn a_garbage_timestamp_does_not_hide_later_samples() {
            let answers = format!("device 0\nsample 0 {TREE} 50 {}\n", u64::MAX);
            let (_dir, library) = fake("future", Variant::Full, &answers);
            let mut gpu = open(&library);
            gpu.sample(Scope::Process, in_tree);
            fake_nvml::answer(&library, &format!("device 0\nsample 0 {TREE} 40 now\n"));
            let got = gpu.sample(Scope::Process, in_tree);
            assert!(got.evidence, "{got:?}");
            assert_eq!(got.util, Some(40));
        }

        #[test]
        fn out_of_range_utilization_is_no_evidence() {
            let answers = format!("device 0 busy 250\nsample 0 {TREE} 1000 now\n");
            let (_dir, library) = fake("range", Variant::Full, &answers);
            let mut gpu = open(&library);
            for scope in [Scope::Process, Scope::Device] {
                let got = gpu.sample(scope, in_tree);
                assert!(!got.evidence, "{scope:?}: {got:?}");
                assert_eq!(got.util, Some(0));
            }
        }

        #[test]
        fn failing_calls_are_no_news_and_noted_once() {
            let answers = format!(
                "device 0 busy 90 used 7\nsample 0 {TREE} 60 now\nprocess 0 {TREE} 1\n\
                 error utilization 3\nerror processes\nerror rates\nerror memory\n"
            );
            let (_dir, library) = fake("errors", Variant::Full, &answers);
            let mut gpu = open(&library);
            let got = gpu.sample(Scope::Device, in_tree);
            assert!(!got.evidence, "{got:?}");
            assert_eq!((got.util, got.memory_bytes), (None, None));
            assert!(got.per_process.is_empty());
            assert_eq!(got.notes.len(), 4, "{:?}", got.notes);
            assert!(
                got.notes[0].contains(
                    "GPU 0: nvmlDeviceGetProcessUtilization failed (Not Supported, NVML error 3)"
                ),
                "{:?}",
                got.notes
            );
            assert!(gpu.sample(Scope::Device, in_tree).notes.is_empty(), "noted once per run");
        }

        #[test]
        fn garbage_counts_are_refused() {
            let answers = format!(
                "device 0\nsample 0 {TREE} 60 now\nprocess 0 {TREE} 1\ngarbage utilization\ngarbage processes\n"
            );
            let (_dir, library) = fake("garbage", Variant::Full, &answers);
            let mut gpu = open(&library);
            let got = gpu.sample(Scope::Process, in_tree);
            assert!(!got.evidence, "{got:?}");
            assert_eq!((got.util, got.memory_bytes), (None, None));
            let claimed = format!("answered a count of {}", FIRST_ROOM + 5);
            assert!(got.notes.iter().all(|note| note.contains(&claimed)), "{:?}", got.notes);
        }

        #[test]
        fn a_missing_library_is_unavailable() {
            let why = unavailable(OsStr::new("/nonexistent/libnvidia-ml.so.1"));
            assert!(matches!(why, Unavailable::NoLibrary(_)), "{why:?}");
            let line = why.to_string();
            assert!(line.starts_with("no GPU evidence: /nonexistent/libnvidia-ml.so.1"), "{line}");
            let bare = unavailable(OsStr::new("libwatchd-test-no-such-nvml.so.1"));
            assert!(matches!(bare, Unavailable::NoLibrary(_)), "{bare:?}");
        }

        #[test]
        fn a_library_that_is_not_nvml_is_unavailable() {
            let why = unavailable(OsStr::new("libc.so.6"));
            assert_eq!(
                why,
                Unavailable::MissingCall { library: "libc.so.6".to_string(), call: "nvmlInit_v2" }
            );
        }

        #[test]
        fn an_nvml_without_driver_or_device_is_unavailable() {
            let (_dir, library) = fake("init", Variant::Full, "init fail\ndevice 0\n");
            let why = unavailable(library.as_os_str());
            assert!(
                why.to_string().contains("NVML did not initialise: Driver Not Loaded"),
                "{why}"
            );

            fake_nvml::answer(&library, "");
            assert_eq!(
                unavailable(library.as_os_str()),
                Unavailable::NoDevice("NVML sees no GPU".to_string())
            );

            fake_nvml::answer(&library, "device 0\ndevice 1\nerror handle 4\n");
            let why = unavailable(library.as_os_str()).to_string();
            assert!(why.contains("NVML sees 2 GPUs and opens none (GPU 0:"), "{why}");
        }

        #[test]
        fn a_huge_device_count_asks_only_devices_that_exist() {
            let (_dir, library) =
                fake("count", Variant::Full, "count 4294967295\ndevice 0\ndevice 3\n");
            assert_eq!(open(&library).devices(), 2);
        }

        /// Runs one `Probe::probe`, returning its figures and its `-v` lines.
        fn probe(gpu: &mut Probe, deciding: bool) -> (Option<GpuFigures>, Vec<String>) {
            let mut lines = Vec::new();
            let figures = gpu.probe(deciding, || in_tree, |line| lines.push(line));
            (figures, lines)
        }

        #[test]
        fn a_probe_loads_nvml_once_and_only_when_its_figures_have_a_use() {
            let answers = format!("log\ndevice 0\nsample 0 {TREE} 60 now\nprocess 0 {TREE} 7\n");
            let (_dir, library) = fake("probe", Variant::Full, &answers);
            let mut gpu = Probe::new(Scope::Process, false, library.clone().into_os_string());
            assert_eq!(probe(&mut gpu, false), (None, vec![]), "no stall window, nothing written");
            assert!(fake_nvml::calls(&library).is_empty(), "not loaded");
            assert_eq!(gpu.of_process(TREE as i32), None);
            let (figures, lines) = probe(&mut gpu, true);
            let busy = GpuFigures { busy: true, util: Some(60.0), memory_bytes: Some(7) };
            assert_eq!(figures, Some(busy));
            assert_eq!(
                lines,
                ["GPU evidence: NVML answers for 1 GPU; counting the work of the tree's processes"]
            );
            assert_eq!(probe(&mut gpu, false), (Some(busy), vec![]), "loaded: it stays so");
            let inits = fake_nvml::calls(&library).iter().filter(|c| *c == "nvmlInit_v2").count();
            assert_eq!(inits, 1);
            assert_eq!(
                gpu.of_process(TREE as i32),
                Some(ProcessGpu { pid: TREE, sm_percent: Some(60), memory_bytes: Some(7) })
            );

            let mut always = Probe::new(Scope::Device, true, library.into_os_string());
            let (figures, lines) = probe(&mut always, false);
            assert!(figures.is_some(), "samples or metrics are written: loaded at once");
            assert!(lines[0].ends_with("counting the work of any process (--gpu-evidence device)"));
        }

        #[test]
        fn an_unavailable_nvml_is_said_once_and_never_tried_again() {
            let dir = Scratch::new("absent");
            let library = dir.0.join("libnvidia-ml.so.1");
            let mut gpu = Probe::new(Scope::Process, true, library.clone().into_os_string());
            let (figures, lines) = probe(&mut gpu, true);
            assert_eq!(figures, None);
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert!(lines[0].starts_with("no GPU evidence: "), "{lines:?}");
            // The library appearing later changes nothing: loading is tried once per run.
            fake_nvml::answer(&fake_nvml::install(&dir.0, Variant::Full), "log\ndevice 0\n");
            assert_eq!(probe(&mut gpu, true), (None, vec![]));
            assert!(fake_nvml::calls(&library).is_empty());
            assert_eq!(gpu.of_process(TREE as i32), None);
        }

        #[test]
        fn a_probe_says_a_failing_call_once() {
            let answers = format!("device 0\nsample 0 {TREE} 60 now\nerror utilization\n");
            let (_dir, library) = fake("notes", Variant::Full, &answers);
            let mut gpu = Probe::new(Scope::Process, true, library.into_os_string());
            let (figures, lines) = probe(&mut gpu, true);
            assert_eq!(
                figures,
                Some(GpuFigures { busy: false, util: None, memory_bytes: Some(0) })
            );
            assert_eq!(lines.len(), 2, "{lines:?}");
            assert!(lines[1].contains("nvmlDeviceGetProcessUtilization failed"), "{lines:?}");
            assert_eq!(probe(&mut gpu, true).1, Vec::<String>::new());
        }

        #[test]
        fn a_probe_where_no_call_answers_is_no_news() {
            let answers = format!(
                "device 0 busy 90 used 7\nsample 0 {TREE} 60 now\n\
                 error utilization\nerror processes\nerror rates\nerror memory\n"
            );
            let (_dir, library) = fake("silent", Variant::Full, &answers);
            for scope in [Scope::Process, Scope::Device] {
                let mut gpu = Probe::new(scope, true, library.clone().into_os_string());
                let (figures, lines) = probe(&mut gpu, true);
                assert_eq!(figures, None, "{scope:?}");
                assert!(lines.len() > 1, "{lines:?}");
                assert_eq!(
                    gpu.of_process(TREE as i32),
                    Some(ProcessGpu { pid: TREE, sm_percent: None, memory_bytes: None })
                );
            }
        }

        #[test]
        fn nvml_is_initialised_once_and_shut_down_on_drop() {
            let answers = format!("log\ndevice 0\nsample 0 {TREE} 60 now\nprocess 0 {TREE} 1\n");
            let (_dir, library) = fake("calls", Variant::Full, &answers);
            let mut gpu = open(&library);
            gpu.sample(Scope::Process, in_tree);
            gpu.sample(Scope::Process, in_tree);
            drop(gpu);
            let calls = fake_nvml::calls(&library);
            let probe =
                ["nvmlDeviceGetProcessUtilization", "nvmlDeviceGetComputeRunningProcesses_v3"];
            let mut want =
                vec!["nvmlInit_v2", "nvmlDeviceGetCount_v2", "nvmlDeviceGetHandleByIndex_v2"];
            want.extend(probe);
            want.extend(probe);
            want.push("nvmlShutdown");
            assert_eq!(calls, want, "two calls per device and probe, no sizing calls");
        }

        #[test]
        fn without_v3_the_v2_running_processes_call_is_used() {
            let answers = format!("log\ndevice 0\nprocess 0 {TREE} 4096\n");
            let (_dir, library) = fake("v2", Variant::NoV3, &answers);
            let mut gpu = open(&library);
            assert_eq!(gpu.sample(Scope::Process, in_tree).memory_bytes, Some(4096));
            assert!(
                fake_nvml::calls(&library)
                    .contains(&"nvmlDeviceGetComputeRunningProcesses_v2".to_string())
            );
        }
    }
}
