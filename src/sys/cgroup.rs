//! The system calls of cgroup containment that nix lacks: extended attributes, where systemd
//! (and anyone following its rules) marks a cgroup it hands over (`trusted.delegate`,
//! `user.delegate`).

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// An extended attribute of a file, up to 64 bytes; `None` when absent or unreadable (a
/// `trusted.` one without CAP_SYS_ADMIN, a filesystem without xattrs, a longer value).
pub fn getxattr(path: &Path, name: &CStr) -> Option<Vec<u8>> {
    let path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf = vec![0u8; 64];
    // SAFETY: both names are NUL-terminated; the kernel writes at most `buf.len()` bytes.
    let n =
        unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    buf.truncate(usize::try_from(n).ok()?);
    Some(buf)
}

/// Sets an extended attribute (tests mark a cgroup of their own as delegated).
#[cfg(test)]
pub fn setxattr(path: &Path, name: &CStr, value: &[u8]) -> std::io::Result<()> {
    let path = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: both names are NUL-terminated; the kernel reads `value.len()` bytes.
    let rc = unsafe {
        libc::setxattr(path.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0)
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}
