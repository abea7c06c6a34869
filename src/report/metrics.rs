//! The metrics textfile: the Prometheus text exposition of one probe, rewritten atomically.

use std::ffi::OsString;
use std::fmt::{self, Display, Write as _};
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use crate::reason::Reason;

/// The figures of one probe, as the metrics textfile shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub cpu_cores: f64,
    pub cpu_seconds_total: f64,
    pub io_bytes_total: u64,
    /// `None` when the probe did not read it: written as NaN.
    pub rss_bytes: Option<u64>,
    pub processes: u32,
    pub seconds_since_progress: f64,
    /// Stops so far, indexed like [`Reason::ALL`].
    pub stops_total: [u64; Reason::ALL.len()],
    /// Lines and events dropped because they could not be written at once.
    pub output_dropped: u64,
    /// The child is ready.
    pub ready: bool,
    /// The last health check passed; None before the first, or without one.
    pub healthy: Option<bool>,
    pub health_failures_total: u64,
    pub restarts_total: u64,
    /// PSI `some avg10` ratios of cpu, io and memory, where a cgroup gives them.
    pub pressure: Option<[Option<f64>; 3]>,
    /// GPU utilization as a ratio and GPU memory, where NVML gives them.
    pub gpu_utilization: Option<f64>,
    pub gpu_memory_bytes: Option<u64>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            cpu_cores: 0.0,
            cpu_seconds_total: 0.0,
            io_bytes_total: 0,
            rss_bytes: Some(0),
            processes: 0,
            seconds_since_progress: 0.0,
            stops_total: [0; Reason::ALL.len()],
            output_dropped: 0,
            ready: false,
            healthy: None,
            health_failures_total: 0,
            restarts_total: 0,
            pressure: None,
            gpu_utilization: None,
            gpu_memory_bytes: None,
        }
    }
}

/// The metrics in the Prometheus text exposition format 0.0.4: `# HELP`, `# TYPE` and the
/// samples of each family; names ending `_total` are counters, the rest gauges.
pub fn render_metrics(m: &Metrics) -> String {
    let mut out = String::with_capacity(1536);
    let gauges_and_counters: [(&str, &str, Value); 6] = [
        (
            "watchd_cpu_cores",
            "CPU cores used by the command's process tree over the last probe interval.",
            Value::F64(m.cpu_cores),
        ),
        (
            "watchd_cpu_seconds_total",
            "CPU time used by the command's process tree, reaped processes included, in seconds.",
            Value::F64(m.cpu_seconds_total),
        ),
        (
            "watchd_io_bytes_total",
            "Bytes read and written by the command's process tree (rchar + wchar).",
            Value::U64(m.io_bytes_total),
        ),
        (
            "watchd_rss_bytes",
            "Resident memory of the command's process tree in bytes.",
            m.rss_bytes.map_or(Value::F64(f64::NAN), Value::U64),
        ),
        (
            "watchd_processes",
            "Live processes in the command's process tree.",
            Value::U64(u64::from(m.processes)),
        ),
        (
            "watchd_seconds_since_progress",
            "Seconds since the command's process tree last showed evidence of life.",
            Value::F64(m.seconds_since_progress),
        ),
    ];
    for (name, help, value) in gauges_and_counters {
        family_header(&mut out, name, help);
        let _ = writeln!(out, "{name} {value}");
    }
    let name = "watchd_stops_total";
    family_header(&mut out, name, "Times watchd stopped the command, by trigger reason.");
    for (reason, count) in Reason::ALL.iter().zip(m.stops_total) {
        // Reason names are fixed identifiers: nothing to escape in a label value.
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {count}");
    }
    let more: [(&str, &str, Value); 5] = [
        (
            "watchd_ready",
            "1 once the command is ready (health check, READY=1, or started), else 0.",
            Value::U64(u64::from(m.ready)),
        ),
        (
            "watchd_healthy",
            "1 when the last health check passed, 0 when it failed, NaN before one ended.",
            Value::F64(m.healthy.map_or(f64::NAN, |ok| if ok { 1.0 } else { 0.0 })),
        ),
        (
            "watchd_health_failures_total",
            "Health checks that failed.",
            Value::U64(m.health_failures_total),
        ),
        (
            "watchd_restarts_total",
            "Times watchd restarted the command.",
            Value::U64(m.restarts_total),
        ),
        (
            "watchd_output_dropped_total",
            "Lines and events watchd dropped because its output could not take them at once.",
            Value::U64(m.output_dropped),
        ),
    ];
    for (name, help, value) in more {
        family_header(&mut out, name, help);
        let _ = writeln!(out, "{name} {value}");
    }
    if let Some(pressure) = m.pressure {
        let name = "watchd_pressure_some_ratio";
        let help = "Share of the last 10s some task of the command's cgroup waited for the resource (PSI some avg10).";
        family_header(&mut out, name, help);
        for (resource, ratio) in ["cpu", "io", "memory"].iter().zip(pressure) {
            if let Some(ratio) = ratio {
                let _ = writeln!(out, "{name}{{resource=\"{resource}\"}} {}", Value::F64(ratio));
            }
        }
    }
    if let Some(ratio) = m.gpu_utilization {
        let name = "watchd_gpu_utilization_ratio";
        family_header(
            &mut out,
            name,
            "Highest SM utilization of the tree's processes on a GPU over the last probe window, 0-1.",
        );
        let _ = writeln!(out, "{name} {}", Value::F64(ratio));
    }
    if let Some(bytes) = m.gpu_memory_bytes {
        let name = "watchd_gpu_memory_bytes";
        family_header(&mut out, name, "GPU memory used by the tree's processes in bytes.");
        let _ = writeln!(out, "{name} {bytes}");
    }
    out
}

fn family_header(out: &mut String, name: &str, help: &str) {
    let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A sample value as Prometheus spells it.
enum Value {
    F64(f64),
    U64(u64),
}

impl Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Value::U64(v) => write!(f, "{v}"),
            Value::F64(v) if v.is_nan() => f.write_str("NaN"),
            Value::F64(v) if v == f64::INFINITY => f.write_str("+Inf"),
            Value::F64(v) if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            // Rust's shortest round-trip form, never an exponent: Go's ParseFloat reads it.
            Value::F64(v) => write!(f, "{v}"),
        }
    }
}

/// The `--metrics-file` target. A regular file (or a name not yet taken) is replaced
/// atomically through a temp file and a rename in its directory, so a reader (node_exporter)
/// sees the old content or the new, never a part. Anything else (a device such as /dev/null, a
/// FIFO, a socket) is written into and never replaced: watchd replaces only what it creates.
/// A symbolic link is followed only when it belongs to watchd's user (or root): a link planted
/// in a shared directory must not aim watchd's writes elsewhere.
#[derive(Debug)]
pub struct MetricsFile {
    path: PathBuf,
}

impl MetricsFile {
    /// Checks what can be checked before the command starts: a path that names no file or a
    /// directory is a usage error.
    pub fn new(path: &Path) -> Result<MetricsFile, String> {
        if path.file_name().is_none() {
            return Err("the path names no file".to_string());
        }
        if fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            return Err("it is a directory".to_string());
        }
        Ok(MetricsFile { path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `text` as the target's kind asks.
    pub fn write(&self, text: &str) -> io::Result<()> {
        let path = self.resolve()?;
        match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => Err(io::Error::other("it is a directory")),
            Ok(meta) if !meta.is_file() => write_into(&path, text),
            _ => replace(&path, text),
        }
    }

    /// The path to write: the link's target when the path is a link watchd may follow.
    fn resolve(&self) -> io::Result<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = fs::symlink_metadata(&self.path) else {
            return Ok(self.path.clone());
        };
        if !meta.file_type().is_symlink() {
            return Ok(self.path.clone());
        }
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me && meta.uid() != 0 {
            return Err(io::Error::other(format!(
                "it is a symbolic link owned by uid {}, not by watchd's user (uid {me}); \
                 refusing to follow it",
                meta.uid()
            )));
        }
        // The target, or, for a link to a name not yet taken, that name.
        match fs::canonicalize(&self.path) {
            Ok(target) => Ok(target),
            Err(_) => {
                let target = fs::read_link(&self.path)?;
                Ok(self.path.parent().map_or(target.clone(), |dir| dir.join(target)))
            }
        }
    }
}

/// Writes into a special file without replacing it and without waiting (a FIFO nobody reads
/// is ENXIO, a full one takes what fits).
fn write_into(path: &Path, text: &str) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)?;
    file.write_all(text.as_bytes())
}

/// Replaces `path` with `text` atomically: the text goes to a temp file of a random name in
/// the same directory, created exclusively (nothing is written through a link, and a name
/// someone planted is skipped), which is then renamed over `path`.
fn replace(path: &Path, text: &str) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut last = io::Error::other("no temp name was free");
    for _ in 0..8 {
        let mut tmp_name = OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp.{:016x}", random()));
        let tmp = dir.join(tmp_name);
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o644)
            .open(&tmp);
        let mut file = match created {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                last = err;
                continue;
            }
            Err(err) => return Err(err),
        };
        let result = file.write_all(text.as_bytes()).and_then(|()| fs::rename(&tmp, path));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        return result;
    }
    Err(last)
}

/// 64 unpredictable bits: std's hasher keys come from the OS's randomness, fresh for each
/// `RandomState`.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish()
}

/// Writes `text` to the metrics file at `path` (tests and callers without a [`MetricsFile`]).
#[cfg(test)]
pub fn write_metrics(path: &Path, text: &str) -> io::Result<()> {
    MetricsFile::new(path).map_err(io::Error::other)?.write(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Scratch;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn sample_metrics() -> Metrics {
        let mut m = Metrics {
            cpu_cores: 0.98,
            cpu_seconds_total: 123.456789,
            io_bytes_total: 1 << 40,
            rss_bytes: Some(2_040_109_465),
            processes: 4,
            seconds_since_progress: 12.5,
            ..Metrics::default()
        };
        m.stops_total[Reason::Stall.index()] = 2;
        m.stops_total[Reason::Rss.index()] = 1;
        m
    }

    type Pairs = Vec<(String, String)>;

    /// (name, type) of every family and (series, value) of every sample, checking the
    /// HELP-TYPE-samples layout on the way.
    fn parse_exposition(text: &str) -> (Pairs, Pairs) {
        assert!(text.ends_with('\n'));
        let mut families = Vec::new();
        let mut samples = Vec::new();
        let mut lines = text.lines().peekable();
        while let Some(help) = lines.next() {
            let mut h = help.splitn(4, ' ');
            assert_eq!((h.next(), h.next()), (Some("#"), Some("HELP")), "{help}");
            let name = h.next().unwrap().to_string();
            assert!(!h.next().unwrap_or("").is_empty(), "empty help: {help}");
            let ty = lines.next().unwrap();
            let kind = ty
                .strip_prefix(&format!("# TYPE {name} "))
                .unwrap_or_else(|| panic!("no TYPE after HELP of {name}: {ty}"));
            families.push((name.clone(), kind.to_string()));
            while lines.peek().is_some_and(|l| !l.starts_with('#')) {
                let line = lines.next().unwrap();
                let (series, value) = line.rsplit_once(' ').unwrap();
                let base = series.split('{').next().unwrap();
                assert_eq!(base, name, "{line}");
                samples.push((series.to_string(), value.to_string()));
            }
        }
        (families, samples)
    }

    #[test]
    fn metrics_have_the_spec_names_help_and_types() {
        let (families, samples) = parse_exposition(&render_metrics(&sample_metrics()));
        let want = [
            ("watchd_cpu_cores", "gauge"),
            ("watchd_cpu_seconds_total", "counter"),
            ("watchd_io_bytes_total", "counter"),
            ("watchd_rss_bytes", "gauge"),
            ("watchd_processes", "gauge"),
            ("watchd_seconds_since_progress", "gauge"),
            ("watchd_stops_total", "counter"),
            ("watchd_ready", "gauge"),
            ("watchd_healthy", "gauge"),
            ("watchd_health_failures_total", "counter"),
            ("watchd_restarts_total", "counter"),
            ("watchd_output_dropped_total", "counter"),
        ];
        let want: Vec<_> = want.iter().map(|(n, k)| (n.to_string(), k.to_string())).collect();
        assert_eq!(families, want);
        let want_samples = [
            ("watchd_cpu_cores", "0.98"),
            ("watchd_cpu_seconds_total", "123.456789"),
            ("watchd_io_bytes_total", "1099511627776"),
            ("watchd_rss_bytes", "2040109465"),
            ("watchd_processes", "4"),
            ("watchd_seconds_since_progress", "12.5"),
            ("watchd_stops_total{reason=\"stall\"}", "2"),
            ("watchd_stops_total{reason=\"timeout\"}", "0"),
            ("watchd_stops_total{reason=\"cpu-soft\"}", "0"),
            ("watchd_stops_total{reason=\"cpu-hard\"}", "0"),
            ("watchd_stops_total{reason=\"rss\"}", "1"),
            ("watchd_stops_total{reason=\"unhealthy\"}", "0"),
            ("watchd_stops_total{reason=\"not-ready\"}", "0"),
            ("watchd_stops_total{reason=\"watchdog\"}", "0"),
            ("watchd_ready", "0"),
            ("watchd_healthy", "NaN"),
            ("watchd_health_failures_total", "0"),
            ("watchd_restarts_total", "0"),
            ("watchd_output_dropped_total", "0"),
        ];
        let want_samples: Vec<_> =
            want_samples.iter().map(|(s, v)| (s.to_string(), v.to_string())).collect();
        assert_eq!(samples, want_samples);
    }

    #[test]
    fn metrics_spell_non_finite_values_the_prometheus_way() {
        let m = Metrics {
            cpu_cores: f64::NAN,
            cpu_seconds_total: f64::INFINITY,
            seconds_since_progress: f64::NEG_INFINITY,
            ..Metrics::default()
        };
        let text = render_metrics(&m);
        assert!(text.contains("\nwatchd_cpu_cores NaN\n"), "{text}");
        assert!(text.contains("\nwatchd_cpu_seconds_total +Inf\n"), "{text}");
        assert!(text.contains("\nwatchd_seconds_since_progress -Inf\n"), "{text}");
    }

    #[test]
    fn write_metrics_is_never_observed_partial() {
        let dir = Scratch::new("atomic");
        let path = dir.0.join("m.prom");
        // Large enough that a non-atomic rewrite would be caught half-written.
        let a = "a".repeat(256 * 1024);
        let b = "b".repeat(128 * 1024);
        write_metrics(&path, &a).unwrap();
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut reads = 0;
                while !done.load(Ordering::Relaxed) || reads == 0 {
                    let got = fs::read_to_string(&path).unwrap();
                    assert!(got == a || got == b, "partial read of {} bytes", got.len());
                    reads += 1;
                }
            });
            for i in 0..200 {
                write_metrics(&path, if i % 2 == 0 { &b } else { &a }).unwrap();
            }
            done.store(true, Ordering::Relaxed);
            reader.join().unwrap();
        });
        assert_eq!(dir.entries(), ["m.prom"]);
    }

    #[test]
    fn write_metrics_into_a_missing_directory_fails() {
        let dir = Scratch::new("missing");
        let path = dir.0.join("no/such/dir/m.prom");
        assert!(write_metrics(&path, "x\n").is_err());
        assert!(write_metrics(Path::new("/"), "x\n").is_err());
        assert_eq!(dir.entries(), Vec::<String>::new());
    }

    #[test]
    fn special_files_are_written_into_and_never_replaced() {
        use std::os::unix::fs::FileTypeExt;
        let dir = Scratch::new("special");
        let fifo = dir.0.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // No reader: not written, not replaced, not waited for.
        let m = MetricsFile::new(&fifo).unwrap();
        assert!(m.write("x\n").is_err());
        assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
        // With a reader: the text goes through the FIFO.
        use std::os::unix::fs::OpenOptionsExt;
        let reader =
            std::fs::File::options().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).unwrap();
        m.write("watchd_processes 1\n").unwrap();
        let mut got = String::new();
        use std::io::Read;
        (&reader).read_to_string(&mut got).ok();
        assert_eq!(got, "watchd_processes 1\n");
        assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
        // A character device (as root, one made here: a copy of /dev/null).
        if nix::unistd::geteuid().is_root() {
            let null = dir.0.join("null");
            let dev = nix::sys::stat::makedev(1, 3);
            nix::sys::stat::mknod(
                &null,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o666),
                dev,
            )
            .unwrap();
            MetricsFile::new(&null).unwrap().write("x\n").unwrap();
            assert!(fs::symlink_metadata(&null).unwrap().file_type().is_char_device());
            // Through a link watchd's user owns, as /dev/stdout is.
            let link = dir.0.join("stdout");
            std::os::unix::fs::symlink(&null, &link).unwrap();
            MetricsFile::new(&link).unwrap().write("x\n").unwrap();
            assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
            assert!(fs::symlink_metadata(&null).unwrap().file_type().is_char_device());
        }
    }

    #[test]
    fn a_directory_or_no_file_name_is_refused_up_front() {
        let dir = Scratch::new("dir");
        assert!(MetricsFile::new(&dir.0).is_err());
        assert!(MetricsFile::new(Path::new("/")).is_err());
        assert!(MetricsFile::new(Path::new("..")).is_err());
        assert!(MetricsFile::new(&dir.0.join("m.prom")).is_ok());
    }

    #[test]
    fn a_planted_temp_name_or_link_does_not_stop_or_redirect_the_metrics() {
        let dir = Scratch::new("planted");
        let victim = dir.0.join("victim");
        fs::write(&victim, "precious").unwrap();
        // The old predictable names, planted: a directory and a link.
        fs::create_dir(dir.0.join(format!(".m.prom.tmp.{}", std::process::id()))).unwrap();
        std::os::unix::fs::symlink(&victim, dir.0.join(".m.prom.tmp.0")).unwrap();
        write_metrics(&dir.0.join("m.prom"), "new\n").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(fs::read_to_string(dir.0.join("m.prom")).unwrap(), "new\n");
        assert_eq!(dir.entries().len(), 4, "no temp file left: {:?}", dir.entries());
    }

    #[test]
    fn a_link_owned_by_someone_else_is_not_followed() {
        if !nix::unistd::geteuid().is_root() {
            return; // needs to chown a link to another user
        }
        let dir = Scratch::new("foreign");
        let victim = dir.0.join("root-only");
        fs::write(&victim, "precious").unwrap();
        let link = crate::testutil::link_owned_by_nobody(&dir, "m.prom", &victim);
        let err = MetricsFile::new(&link).unwrap().write("x\n").unwrap_err();
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    }
}
