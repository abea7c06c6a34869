//! The Docker engine harness of tests/docker.rs: finds the engine (or says in one line why the
//! engine tests skip), builds the test images once per test process, and runs containers that
//! are removed when their test ends.
//!
//! Images are made here, not pulled (no registry is reachable from CI): `image()` is a root
//! filesystem of busybox-static and watchd's static build, imported with README's ENTRYPOINT;
//! `readme_image()` builds README's Dockerfile as written, on a `python:3.12-slim-bookworm` made
//! with mmdebstrap when the engine has none.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::util::{TempDir, WATCHD};

/// The limit on one docker command; a hung engine fails a test instead of hanging the suite.
const DOCKER_LIMIT: Duration = Duration::from_secs(60);

/// Whether CI asked for the engine tests: then a missing engine is a failure, not a skip.
fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips (one line on stderr, once per process) or, under CI=true, fails.
#[track_caller]
fn skip_or_fail(why: &str) {
    assert!(!ci(), "CI=true, so the Docker engine tests must run, but {why}");
    static SAID: OnceLock<()> = OnceLock::new();
    SAID.get_or_init(|| {
        // Straight to the descriptor: the test harness captures eprintln! of passing tests.
        let _ =
            writeln!(std::io::stderr(), "docker tests skipped: {why} (CI=true makes this fail)");
    });
}

/// Whether an engine answers: every test starts with `if !engine() { return; }`.
#[track_caller]
pub fn engine() -> bool {
    static FOUND: OnceLock<Result<String, String>> = OnceLock::new();
    match FOUND.get_or_init(find_engine) {
        Ok(_) => true,
        Err(why) => {
            skip_or_fail(why);
            false
        }
    }
}

fn find_engine() -> Result<String, String> {
    let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "the default socket".into());
    let out = capture(docker(["version", "-f", "{{.Server.Version}}"]), Duration::from_secs(20))
        .map_err(|e| format!("no docker client ({e})"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("no answer");
        return Err(format!("no Docker engine at {host}: {first}"));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `PROGRAM ARGS` with stdin from /dev/null.
pub fn command<I, S>(program: impl AsRef<OsStr>, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    cmd
}

/// `docker ARGS`; DOCKER_HOST is inherited.
pub fn docker<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    command("docker", args)
}

/// Whether the engine has an image of that name.
fn has_image(name: &str) -> bool {
    capture(docker(["image", "inspect", name]), DOCKER_LIMIT).is_ok_and(|o| o.status.success())
}

/// Runs to the end under `limit`, capturing both streams; a command still running at the limit
/// is killed and reported as an error.
pub fn capture(mut cmd: Command, limit: Duration) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let (out, err) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let Some(status) = crate::util::wait_deadline(&mut child, limit) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("{what} did not finish within {limit:?}"));
    };
    Ok(Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() })
}

/// Runs a docker command that must succeed and returns its stdout.
#[track_caller]
pub fn docker_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    must(docker(args), DOCKER_LIMIT)
}

#[track_caller]
fn must(cmd: Command, limit: Duration) -> String {
    let what = format!("{cmd:?}");
    let out = capture(cmd, limit).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{what} failed: {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `cond` every 50 ms (a docker command costs tens of milliseconds of CPU) until it
/// holds or `limit` passes.
#[track_caller]
pub fn poll(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The cargo target directory the watchd under test was built in.
fn target_dir() -> PathBuf {
    Path::new(WATCHD).parent().and_then(Path::parent).expect("target/<profile>/watchd").into()
}

/// Whether a file is a 64-bit little-endian ELF that needs no program interpreter (ld.so), so
/// it runs in an image without libc.
fn is_static(path: &Path) -> bool {
    const PT_INTERP: u32 = 3;
    let Ok(elf) = fs::read(path) else { return false };
    let bytes = |at: usize, n: usize| elf.get(at..at + n);
    let u16_at = |at| bytes(at, 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |at| bytes(at, 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    let u64_at = |at| bytes(at, 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize);
    let (Some(phoff), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    elf.starts_with(b"\x7fELF\x02\x01")
        && (0..count).all(|i| u32_at(phoff + i * size).is_some_and(|t| t != PT_INTERP))
}

/// sha256 of some bytes, in hex (coreutils' sha256sum: no hashing crate for one cache key).
fn sha256(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

/// watchd's static build, the one README's container section recommends, built once per
/// process into `<target>/static` (the directory bench/run.sh uses): a rebuild there is a
/// no-op when nothing changed.
pub fn static_watchd() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let host = must(command("rustc", ["-vV"]), DOCKER_LIMIT);
        let triple = host
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .expect("rustc -vV names the host")
            .to_string();
        let dir = target_dir().join("static");
        let cargo_bin = std::env::var_os("CARGO").unwrap_or("cargo".into());
        let mut cargo = command(cargo_bin, ["build", "--release", "--quiet", "--target", &triple]);
        cargo
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", &dir)
            // --target keeps the flag away from build scripts and proc macros.
            .env("RUSTFLAGS", "-C target-feature=+crt-static");
        must(cargo, Duration::from_secs(600));
        let bin = dir.join(&triple).join("release/watchd");
        assert!(is_static(&bin), "{} is not a static build", bin.display());
        bin
    })
}

/// busybox from busybox-static (`.ci/docker-engine` installs it).
fn static_busybox() -> PathBuf {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("busybox"))
        .find(|p| p.is_file())
        .expect("busybox on PATH (Debian: apt-get install busybox-static)");
    assert!(is_static(&found), "{} is not static: install busybox-static", found.display());
    found
}

/// The test image: busybox applets in /bin and watchd's static build, with README's ENTRYPOINT;
/// CMD `sh`. Tagged by the content of both binaries, so a rerun on the same engine imports
/// nothing.
pub fn image() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let watchd = static_watchd();
        let busybox = static_busybox();
        let mut both = fs::read(watchd).unwrap();
        both.extend(fs::read(&busybox).unwrap());
        // Bump the recipe when the root filesystem below changes.
        both.extend(b"recipe 1");
        let tag = format!("watchd-test:{}", &sha256(&both)[..16]);
        if has_image(&tag) {
            return tag;
        }
        let dir = TempDir::new("docker-rootfs");
        let root = dir.path("root");
        for sub in ["bin", "usr/local/bin", "etc", "proc", "sys", "dev", "tmp"] {
            fs::create_dir_all(root.join(sub)).unwrap();
        }
        fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::copy(&busybox, root.join("bin/busybox")).unwrap();
        fs::copy(watchd, root.join("usr/local/bin/watchd")).unwrap();
        let applets = must(command(&busybox, ["--list"]), DOCKER_LIMIT);
        for applet in applets.lines().filter(|a| !a.is_empty() && *a != "busybox") {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
        let tar = dir.path("rootfs.tar");
        let mut pack = command("tar", ["-cf"]);
        pack.arg(&tar).arg("-C").arg(&root).arg(".");
        must(pack, DOCKER_LIMIT);
        let mut import = docker(["import"]);
        import
            .args(["--change", r#"ENTRYPOINT ["/usr/local/bin/watchd", "--"]"#])
            .args(["--change", r#"CMD ["sh"]"#])
            .arg(&tar)
            .arg(&tag);
        must(import, DOCKER_LIMIT);
        tag
    })
}

/// `python:3.12-slim-bookworm` (the official Python image, on Debian bookworm), for README's
/// Dockerfile: the engine's own if it has one, else made here with mmdebstrap (bookworm
/// minbase with Debian's python3, no documentation: what the real image holds, near enough;
/// its python3 is 3.11, which the Dockerfile's command does not mind) and imported under that
/// name. The tarball is kept in `<target>/docker-cache`,
/// so only the first run on a machine pays for it (about 40 s here). Err says why it cannot be
/// made here.
fn bookworm_slim() -> Result<(), String> {
    const BASE: &str = "python:3.12-slim-bookworm";
    if has_image(BASE) {
        return Ok(());
    }
    let recipe = [
        "--variant=minbase",
        "--include=python3",
        "--mode=root",
        "--format=tar",
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        "--aptopt=APT::Install-Recommends \"false\"",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "bookworm",
    ];
    let cache = target_dir().join("docker-cache");
    let tarball =
        cache.join(format!("bookworm-slim-{}.tar", &sha256(recipe.join(" ").as_bytes())[..16]));
    if !tarball.exists() {
        use std::os::unix::fs::MetadataExt;
        // /proc/self belongs to our effective uid.
        if fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1) != 0 {
            return Err(format!("no {BASE} image, and making one with mmdebstrap needs root"));
        }
        if command("mmdebstrap", ["--version"]).output().is_err() {
            return Err(format!("no {BASE} image, and no mmdebstrap to make one"));
        }
        fs::create_dir_all(&cache).unwrap();
        let partial = tarball.with_extension(format!("partial-{}", std::process::id()));
        let mut debstrap = command("mmdebstrap", recipe);
        debstrap.arg(&partial);
        let made = capture(debstrap, Duration::from_secs(600))?;
        if !made.status.success() {
            let _ = fs::remove_file(&partial);
            return Err(format!(
                "mmdebstrap failed: {}",
                String::from_utf8_lossy(&made.stderr).lines().last().unwrap_or("")
            ));
        }
        fs::rename(&partial, &tarball).unwrap();
    }
    let mut import = docker(["import", "--change", r#"CMD ["bash"]"#]);
    import.arg(&tarball).arg(BASE);
    must(import, DOCKER_LIMIT);
    Ok(())
}

/// README's Dockerfile, built as written (with `docker build -t TAG .` in a context holding it
/// and watchd's static build as `watchd`); None, after the skip line, when no
/// `python:3.12-slim-bookworm` can be had here and CI is not "true".
#[track_caller]
pub fn readme_context(dockerfile: &str) -> Option<TempDir> {
    static BASE: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(why) = BASE.get_or_init(bookworm_slim) {
        skip_or_fail(why);
        return None;
    }
    let dir = TempDir::new("docker-context");
    fs::write(dir.path("Dockerfile"), dockerfile).unwrap();
    fs::copy(static_watchd(), dir.path("watchd")).unwrap();
    Some(dir)
}

/// A unique name for a container or image of this test process.
pub fn unique(what: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{what}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A container this test started, force-removed when dropped (after printing its logs, if the
/// test is failing).
pub struct Container {
    pub name: String,
}

impl Container {
    /// `docker run -d --name NAME ARGS...` (ARGS: options, image, command).
    #[track_caller]
    pub fn start(args: &[&str]) -> Container {
        let name = unique("watchd-test");
        let mut cmd = docker(["run", "-d", "--name", &name, "--label", "watchd-test"]);
        cmd.args(args);
        let container = Container { name };
        must(cmd, DOCKER_LIMIT);
        container
    }

    /// stdout then stderr of the container so far.
    pub fn logs(&self) -> String {
        let out =
            capture(docker(["logs", &self.name]), DOCKER_LIMIT).unwrap_or_else(|e| panic!("{e}"));
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    /// Waits until the logs contain `needle`; returns them.
    #[track_caller]
    pub fn wait_logs(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let logs = self.logs();
            if logs.contains(needle) {
                return logs;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the logs of {} within {limit:?}:\n{logs}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the container to end; its exit code.
    #[track_caller]
    pub fn wait(&self, limit: Duration) -> i32 {
        let code = must(docker(["wait", &self.name]), limit);
        code.trim().parse().unwrap_or_else(|_| panic!("docker wait printed {code:?}"))
    }

    /// `docker inspect -f FORMAT`, trimmed.
    #[track_caller]
    pub fn inspect(&self, format: &str) -> String {
        docker_ok(["inspect", "-f", format, &self.name]).trim().to_string()
    }

    /// `docker stop -t SECONDS`; how long it took.
    #[track_caller]
    pub fn stop(&self, seconds: u32) -> Duration {
        let start = Instant::now();
        docker_ok(["stop", "-t", &seconds.to_string(), &self.name]);
        start.elapsed()
    }

    /// `docker kill -s SIGNAL`.
    #[track_caller]
    pub fn kill(&self, signal: &str) {
        docker_ok(["kill", "-s", signal, &self.name]);
    }

    /// `docker top` as (host pid, host ppid, state, command line) rows, zombies included.
    #[track_caller]
    pub fn top(&self) -> Vec<(i32, i32, String, String)> {
        let table = docker_ok(["top", &self.name, "-o", "pid,ppid,stat,args"]);
        table
            .lines()
            .skip(1)
            .filter_map(|row| {
                let mut cols = row.split_whitespace();
                let pid = cols.next()?.parse().ok()?;
                let ppid = cols.next()?.parse().ok()?;
                let stat = cols.next()?.to_string();
                Some((pid, ppid, stat, cols.collect::<Vec<_>>().join(" ")))
            })
            .collect()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = capture(docker(["logs", &self.name]), DOCKER_LIMIT);
            if let Ok(out) = logs {
                eprintln!(
                    "--- logs of {}:\n{}{}",
                    self.name,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let _ = capture(docker(["rm", "-f", "-v", &self.name]), DOCKER_LIMIT);
    }
}
