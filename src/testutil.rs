//! Helpers shared by the unit tests.

use std::fs;
use std::path::PathBuf;

/// A fresh directory under the system temp dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("watchd-unit-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// The names in the directory, sorted.
    pub fn entries(&self) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// A symlink at `dir/name` to `target`, owned by `nobody` (uid 65534): planted by someone else.
/// Needs root (to chown the link).
pub fn link_owned_by_nobody(dir: &Scratch, name: &str, target: &std::path::Path) -> PathBuf {
    let link = dir.0.join(name);
    std::os::unix::fs::symlink(target, &link).unwrap();
    let nobody = nix::unistd::Uid::from_raw(65534);
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        &link,
        Some(nobody),
        None,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap();
    link
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
