//! The calls into NVIDIA's management library (NVML): `dlopen`, `dlsym`, and each NVML function
//! watchd uses, behind safe functions; `crate::gpu` turns their answers into evidence. Device
//! handles never leave this module: devices are named by their position in `Library::devices`.
//!
//! The library is opened at run time, never linked, so watchd has no build-time dependency on
//! CUDA or NVML; a statically linked build compiles the `dlopen` out.

use std::ffi::{CStr, OsStr, c_char, c_uint, c_ulonglong, c_void};
use std::os::fd::RawFd;

use crate::gpu::{ProcessInfo, Status, Unavailable, UtilizationSample};

/// nvml.h's `nvmlDevice_t`: an opaque handle, valid while NVML is initialised.
type Device = *mut c_void;
type Return = c_uint;

/// nvml.h's `nvmlUtilization_t`.
#[repr(C)]
#[derive(Default)]
struct Utilization {
    gpu: c_uint,
    memory: c_uint,
}

/// nvml.h's `nvmlMemory_t`.
#[repr(C)]
#[derive(Default)]
struct Memory {
    total: c_ulonglong,
    free: c_ulonglong,
    used: c_ulonglong,
}

// nvml.h's signatures of the calls watchd makes.
type Init = unsafe extern "C" fn() -> Return;
type Shutdown = unsafe extern "C" fn() -> Return;
type DeviceCount = unsafe extern "C" fn(*mut c_uint) -> Return;
type DeviceHandle = unsafe extern "C" fn(c_uint, *mut Device) -> Return;
type ProcessUtilization =
    unsafe extern "C" fn(Device, *mut UtilizationSample, *mut c_uint, c_ulonglong) -> Return;
type RunningProcesses = unsafe extern "C" fn(Device, *mut c_uint, *mut ProcessInfo) -> Return;
type UtilizationRates = unsafe extern "C" fn(Device, *mut Utilization) -> Return;
type MemoryInfo = unsafe extern "C" fn(Device, *mut Memory) -> Return;
type ErrorString = unsafe extern "C" fn(Return) -> *const c_char;

/// The library's entry points.
#[derive(Clone, Copy)]
struct Calls {
    init: Init,
    shutdown: Shutdown,
    device_count: DeviceCount,
    device_handle: DeviceHandle,
    process_utilization: ProcessUtilization,
    running_processes: RunningProcesses,
    running_processes_v3: bool,
    utilization_rates: Option<UtilizationRates>,
    memory_info: Option<MemoryInfo>,
    error_string: Option<ErrorString>,
}

/// An opened NVML library. It is never unloaded: NVML may leave threads and handlers
/// behind that point into it, and watchd keeps it for its whole life anyway.
pub struct Library {
    calls: Calls,
    initialised: bool,
    devices: Vec<Device>,
}

/// Opens the library and finds the calls watchd makes. A statically linked build does not
/// try: glibc's dlopen from a static binary needs, at run time, the very glibc it was
/// linked with, and a library that pulls in another libc breaks the process.
pub fn open(path: &OsStr) -> Result<Library, Unavailable> {
    #[cfg(target_feature = "crt-static")]
    {
        let _ = path;
        Err(Unavailable::StaticBuild)
    }
    #[cfg(not(target_feature = "crt-static"))]
    {
        let calls = dynamic::open(path)?;
        Ok(Library { calls, initialised: false, devices: Vec::new() })
    }
}

#[cfg(not(target_feature = "crt-static"))]
mod dynamic {
    use std::ffi::{CStr, CString, OsStr, c_void};
    use std::mem::transmute;
    use std::os::unix::ffi::OsStrExt;

    use super::{
        Calls, DeviceCount, DeviceHandle, ErrorString, Init, MemoryInfo, ProcessUtilization,
        RunningProcesses, Shutdown, Unavailable, UtilizationRates,
    };

    pub fn open(path: &OsStr) -> Result<Calls, Unavailable> {
        let shown = path.to_string_lossy().into_owned();
        let Ok(name) = CString::new(path.as_bytes()) else {
            return Err(Unavailable::NoLibrary(format!("{shown}: a path with a NUL byte")));
        };
        // SAFETY: `name` is a NUL-terminated string. Loading runs the library's
        // initialisers: watchd trusts the file the driver installed or the user named, as
        // the loader trusts LD_PRELOAD.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(Unavailable::NoLibrary(loader_error(&shown)));
        }
        let required = |name: &'static CStr| {
            symbol(handle, name).ok_or_else(|| Unavailable::MissingCall {
                library: shown.clone(),
                call: name.to_str().unwrap_or_default(),
            })
        };
        let init = required(c"nvmlInit_v2")?;
        let shutdown = required(c"nvmlShutdown")?;
        let device_count = required(c"nvmlDeviceGetCount_v2")?;
        let device_handle = required(c"nvmlDeviceGetHandleByIndex_v2")?;
        let process_utilization = required(c"nvmlDeviceGetProcessUtilization")?;
        // Newer drivers export _v3, older ones only _v2; both fill the same nvmlProcessInfo_t.
        let v3 = symbol(handle, c"nvmlDeviceGetComputeRunningProcesses_v3");
        let running = match v3 {
            Some(address) => address,
            None => required(c"nvmlDeviceGetComputeRunningProcesses_v2")?,
        };
        let utilization_rates = symbol(handle, c"nvmlDeviceGetUtilizationRates");
        let memory_info = symbol(handle, c"nvmlDeviceGetMemoryInfo");
        let error_string = symbol(handle, c"nvmlErrorString");
        // SAFETY: each address is that of the NVML function exported under the name it was
        // looked up by, and becomes a pointer to a function of the signature nvml.h
        // declares for that name (the field's type).
        unsafe {
            Ok(Calls {
                init: transmute::<*mut c_void, Init>(init),
                shutdown: transmute::<*mut c_void, Shutdown>(shutdown),
                device_count: transmute::<*mut c_void, DeviceCount>(device_count),
                device_handle: transmute::<*mut c_void, DeviceHandle>(device_handle),
                process_utilization: transmute::<*mut c_void, ProcessUtilization>(
                    process_utilization,
                ),
                running_processes: transmute::<*mut c_void, RunningProcesses>(running),
                running_processes_v3: v3.is_some(),
                utilization_rates: utilization_rates
                    .map(|f| transmute::<*mut c_void, UtilizationRates>(f)),
                memory_info: memory_info.map(|f| transmute::<*mut c_void, MemoryInfo>(f)),
                error_string: error_string.map(|f| transmute::<*mut c_void, ErrorString>(f)),
            })
        }
    }

    fn symbol(handle: *mut c_void, name: &CStr) -> Option<*mut c_void> {
        // SAFETY: `handle` is a live handle from dlopen (never closed); `name` is
        // NUL-terminated.
        let address = unsafe { libc::dlsym(handle, name.as_ptr()) };
        (!address.is_null()).then_some(address)
    }

    fn loader_error(shown: &str) -> String {
        // SAFETY: dlerror returns null or a NUL-terminated message that stays valid until
        // the next dl* call on this thread; it is copied at once.
        unsafe {
            let message = libc::dlerror();
            if message.is_null() {
                format!("{shown}: cannot be loaded")
            } else {
                CStr::from_ptr(message).to_string_lossy().into_owned()
            }
        }
    }
}

impl Library {
    /// `nvmlInit_v2`; on success `Drop` shuts NVML down again.
    pub fn init(&mut self) -> Status {
        // SAFETY: nvmlInit_v2 takes no argument and may be called at any time.
        let status = Status(unsafe { (self.calls.init)() });
        self.initialised = status == Status::SUCCESS;
        status
    }

    pub fn device_count(&self) -> Result<u32, Status> {
        let mut count: c_uint = 0;
        // SAFETY: `count` is a valid out-pointer for the duration of the call.
        let status = Status(unsafe { (self.calls.device_count)(&mut count) });
        if status == Status::SUCCESS { Ok(count) } else { Err(status) }
    }

    /// Takes a handle on device `index` and appends it to `devices`.
    pub fn add_device(&mut self, index: u32) -> Result<(), Status> {
        let mut device: Device = std::ptr::null_mut();
        // SAFETY: `device` is a valid out-pointer; NVML validates the index.
        let status = Status(unsafe { (self.calls.device_handle)(index, &mut device) });
        if status != Status::SUCCESS {
            return Err(status);
        }
        self.devices.push(device);
        Ok(())
    }

    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    /// `nvmlDeviceGetProcessUtilization` into `room`: samples newer than `since`.
    pub fn process_utilization(
        &self,
        device: usize,
        room: &mut [UtilizationSample],
        since: u64,
    ) -> (Status, u32) {
        let Some(&handle) = self.devices.get(device) else {
            return (Status::INVALID_ARGUMENT, 0);
        };
        let (array, mut count) = array(room);
        // SAFETY: `handle` came from nvmlDeviceGetHandleByIndex_v2 on this library;
        // `array` is null with a count of 0 or points to `count` writable samples laid out
        // as nvml.h's nvmlProcessUtilizationSample_t; `count` is a valid in/out pointer.
        let status = unsafe { (self.calls.process_utilization)(handle, array, &mut count, since) };
        (Status(status), count)
    }

    /// `nvmlDeviceGetComputeRunningProcesses_v3` (or `_v2`) into `room`.
    pub fn running_processes(&self, device: usize, room: &mut [ProcessInfo]) -> (Status, u32) {
        let Some(&handle) = self.devices.get(device) else {
            return (Status::INVALID_ARGUMENT, 0);
        };
        let (array, mut count) = array(room);
        // SAFETY: as in process_utilization; the array is laid out as nvml.h's
        // nvmlProcessInfo_t, which both the _v3 and _v2 calls fill.
        let status = unsafe { (self.calls.running_processes)(handle, &mut count, array) };
        (Status(status), count)
    }

    pub fn running_processes_name(&self) -> &'static str {
        if self.calls.running_processes_v3 {
            "nvmlDeviceGetComputeRunningProcesses_v3"
        } else {
            "nvmlDeviceGetComputeRunningProcesses_v2"
        }
    }

    /// `nvmlDeviceGetUtilizationRates`' `gpu`: percent of the last sample period during
    /// which a kernel ran.
    pub fn utilization_rates(&self, device: usize) -> Result<u32, Status> {
        let (Some(&handle), Some(call)) = (self.devices.get(device), self.calls.utilization_rates)
        else {
            return Err(Status::FUNCTION_NOT_FOUND);
        };
        let mut rates = Utilization::default();
        // SAFETY: `handle` as above; `rates` is a valid out-pointer to nvmlUtilization_t.
        let status = Status(unsafe { call(handle, &mut rates) });
        if status == Status::SUCCESS { Ok(rates.gpu) } else { Err(status) }
    }

    /// `nvmlDeviceGetMemoryInfo`'s `used` bytes.
    pub fn memory_used(&self, device: usize) -> Result<u64, Status> {
        let (Some(&handle), Some(call)) = (self.devices.get(device), self.calls.memory_info) else {
            return Err(Status::FUNCTION_NOT_FOUND);
        };
        let mut memory = Memory::default();
        // SAFETY: `handle` as above; `memory` is a valid out-pointer to nvmlMemory_t.
        let status = Status(unsafe { call(handle, &mut memory) });
        if status == Status::SUCCESS { Ok(memory.used) } else { Err(status) }
    }

    /// `nvmlErrorString`'s text for a status, with its number.
    pub fn describe(&self, status: Status) -> String {
        let text = self.calls.error_string.and_then(|call| {
            // SAFETY: nvmlErrorString accepts any value and returns null or a static
            // NUL-terminated string, copied at once.
            unsafe {
                let text = call(status.0);
                (!text.is_null()).then(|| CStr::from_ptr(text).to_string_lossy().into_owned())
            }
        });
        match text {
            Some(text) => format!("{text}, NVML error {}", status.0),
            None => format!("NVML error {}", status.0),
        }
    }
}

/// A list call's array argument: null with a count of 0 for no room (NVML's way of asking
/// for the size), else the slice's start and length.
fn array<T>(room: &mut [T]) -> (*mut T, c_uint) {
    match c_uint::try_from(room.len()) {
        Ok(0) | Err(_) => (std::ptr::null_mut(), 0),
        Ok(len) => (room.as_mut_ptr(), len),
    }
}

/// The descriptors watchd holds now (`None` when /proc/self/fd cannot be read), to tell
/// afterwards which ones NVML opened.
pub fn descriptors() -> Option<Vec<RawFd>> {
    let listed: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .ok()?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    // The directory's own descriptor is listed and now closed: its number is free for the
    // next open, which must not count as held before.
    // SAFETY: F_GETFD only reads a descriptor's flags (EBADF for a closed one).
    Some(listed.into_iter().filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0).collect())
}

/// Marks close-on-exec every descriptor opened since `before` was taken. NVML opens the GPUs'
/// device files and may not ask for close-on-exec: a command watchd starts later (a restart, a
/// health check) would inherit them and hold the devices open. Descriptors watchd was given
/// and passes on to the command (socket activation's) are in `before`, untouched.
pub fn close_on_exec_since(before: &[RawFd]) {
    for fd in descriptors().unwrap_or_default() {
        if fd > 2 && !before.contains(&fd) {
            // SAFETY: F_GETFD and F_SETFD only read and set the descriptor's flags; a number
            // that closed meanwhile (read_dir's own) fails with EBADF, which is ignored.
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                }
            }
        }
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        if self.initialised {
            // SAFETY: NVML was initialised by this Library and is shut down once; the
            // device handles die with it.
            unsafe { (self.calls.shutdown)() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close_on_exec(fd: RawFd) -> bool {
        // SAFETY: F_GETFD only reads the flags of a descriptor this test holds.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        flags >= 0 && flags & libc::FD_CLOEXEC != 0
    }

    #[test]
    fn what_was_opened_since_becomes_close_on_exec_and_nothing_else() {
        // SAFETY: opening /dev/null without O_CLOEXEC, as a library might; closed below.
        let older = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
        let before = descriptors().expect("/proc/self/fd");
        assert!(before.contains(&older));
        // SAFETY: as above.
        let newer = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
        assert!(older >= 0 && newer >= 0 && !close_on_exec(newer));
        close_on_exec_since(&before);
        assert!(close_on_exec(newer), "opened since: sealed");
        assert!(!close_on_exec(older), "held before: left as it was");
        // SAFETY: closing the descriptors opened above, once each.
        unsafe {
            libc::close(older);
            libc::close(newer);
        }
    }
}
