//! System call numbers to names for the host architecture, and which calls take a descriptor as
//! their first argument (so the dump can say what a blocked `read` reads from).

use super::syscalls;

#[cfg(target_arch = "x86_64")]
const TABLE: &[&str] = &syscalls::X86_64;
#[cfg(target_arch = "aarch64")]
const TABLE: &[&str] = &syscalls::AARCH64;
/// No table for other architectures: calls are shown by number.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const TABLE: &[&str] = &[];

/// The name of system call `nr` of this architecture's 64-bit table, `None` when unknown.
///
/// x32 calls (`nr` with bit 30 set) and 32-bit processes use other tables; the caller tells
/// those apart (see `Syscall::name`) and shows a number instead of a wrong name.
pub fn name(nr: u64) -> Option<&'static str> {
    let name = *TABLE.get(usize::try_from(nr).ok()?)?;
    (!name.is_empty()).then_some(name)
}

/// Whether the call's first argument is a file descriptor worth resolving. `*at` calls are left
/// out: their first argument is usually AT_FDCWD, and the path they wait on is in the caller's
/// memory, which the dump does not read.
pub fn takes_fd(name: &str) -> bool {
    matches!(
        name,
        "read"
            | "write"
            | "readv"
            | "writev"
            | "pread64"
            | "pwrite64"
            | "preadv"
            | "pwritev"
            | "preadv2"
            | "pwritev2"
            | "recvfrom"
            | "recvmsg"
            | "recvmmsg"
            | "sendto"
            | "sendmsg"
            | "sendmmsg"
            | "accept"
            | "accept4"
            | "connect"
            | "shutdown"
            | "getsockopt"
            | "setsockopt"
            | "epoll_wait"
            | "epoll_pwait"
            | "epoll_pwait2"
            | "epoll_ctl"
            | "ioctl"
            | "fcntl"
            | "flock"
            | "fsync"
            | "fdatasync"
            | "sync_file_range"
            | "syncfs"
            | "lseek"
            | "getdents"
            | "getdents64"
            | "fstat"
            | "fstatfs"
            | "ftruncate"
            | "fallocate"
            | "splice"
            | "tee"
            | "vmsplice"
            | "sendfile"
            | "copy_file_range"
            | "io_uring_enter"
            | "close"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host table against libc's numbers, for calls that every dump is likely to show and
    /// for the ends of the table.
    #[test]
    fn host_table_agrees_with_libc() {
        macro_rules! check {
            ($($call:ident),* $(,)?) => {$(
                assert_eq!(
                    name(libc::$call as u64),
                    Some(&stringify!($call)[4..]),
                    "{}", stringify!($call)
                );
            )*};
        }
        check!(
            SYS_read,
            SYS_write,
            SYS_readv,
            SYS_writev,
            SYS_pread64,
            SYS_pwrite64,
            SYS_preadv2,
            SYS_close,
            SYS_ioctl,
            SYS_fcntl,
            SYS_flock,
            SYS_fsync,
            SYS_fdatasync,
            SYS_lseek,
            SYS_getdents64,
            SYS_splice,
            SYS_sendfile,
            SYS_recvfrom,
            SYS_recvmsg,
            SYS_recvmmsg,
            SYS_sendto,
            SYS_sendmsg,
            SYS_accept,
            SYS_accept4,
            SYS_connect,
            SYS_socket,
            SYS_epoll_pwait,
            SYS_epoll_ctl,
            SYS_ppoll,
            SYS_pselect6,
            SYS_futex,
            SYS_futex_waitv,
            SYS_nanosleep,
            SYS_clock_nanosleep,
            SYS_wait4,
            SYS_waitid,
            SYS_rt_sigtimedwait,
            SYS_rt_sigsuspend,
            SYS_openat,
            SYS_openat2,
            SYS_newfstatat,
            SYS_statx,
            SYS_execve,
            SYS_clone,
            SYS_clone3,
            SYS_exit_group,
            SYS_io_getevents,
            SYS_io_uring_enter,
            SYS_msgrcv,
            SYS_semtimedop,
            SYS_mmap,
            SYS_munmap,
            SYS_mseal,
            SYS_pidfd_open,
            SYS_set_mempolicy_home_node,
        );
        #[cfg(target_arch = "x86_64")]
        check!(SYS_pause, SYS_poll, SYS_select, SYS_epoll_wait, SYS_open, SYS_fork, SYS_getdents);
        assert_eq!(name(u64::MAX), None);
        assert_eq!(name(100_000), None);
    }

    #[test]
    fn both_tables_spot_checks_and_unique_names() {
        // Known numbers of both architectures, independent of the host.
        assert_eq!(syscalls::X86_64[0], "read");
        assert_eq!(syscalls::X86_64[202], "futex");
        assert_eq!(syscalls::X86_64[230], "clock_nanosleep");
        assert_eq!(syscalls::X86_64[335], "");
        assert_eq!(syscalls::X86_64[455], "futex_wait");
        assert_eq!(syscalls::AARCH64[63], "read");
        assert_eq!(syscalls::AARCH64[98], "futex");
        assert_eq!(syscalls::AARCH64[115], "clock_nanosleep");
        assert_eq!(syscalls::AARCH64[207], "recvfrom");
        assert_eq!(syscalls::AARCH64[244], "");
        assert_eq!(syscalls::AARCH64[455], "futex_wait");
        for table in [&syscalls::X86_64[..], &syscalls::AARCH64[..]] {
            let mut names: Vec<&str> = table.iter().copied().filter(|n| !n.is_empty()).collect();
            let all = names.len();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), all, "a name appears twice");
        }
    }

    #[test]
    fn descriptor_calls_are_real_names() {
        for call in ["read", "recvfrom", "epoll_pwait", "accept4", "splice", "close"] {
            assert!(takes_fd(call));
            assert!(TABLE.contains(&call), "{call}");
        }
        for call in ["futex", "clock_nanosleep", "wait4", "openat", "ppoll", "poll"] {
            assert!(!takes_fd(call));
        }
    }
}
