//! One output stream that never makes watchd wait: a record (a line, an event) that cannot be
//! written at once is dropped and counted, and signalling, reaping and deadlines go on. The
//! descriptor's own flags are never changed, since the child usually shares it (fd 2):
//! - pipes, FIFOs and sockets: `pwritev2(RWF_NOWAIT)`, a per-call "do not wait"; where the
//!   kernel refuses that for the file (EOPNOTSUPP), a re-opened description of our own with
//!   O_NONBLOCK (pipes, FIFOs, terminals);
//! - terminals and other character devices: that re-opened description;
//! - regular files: plain writes on the shared description (they do not block on a reader,
//!   and must share the child's offset).
//!
//! A record written in part (a pipe with some room) keeps its tail, which goes out first when
//! the descriptor is writable again (the driver polls for that), so lines are never torn.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::stat::SFlag;

use crate::sys;

/// How writes go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// `write(2)`: a regular file, or a descriptor we opened non-blocking ourselves.
    Plain,
    /// `pwritev2(RWF_NOWAIT)` on the shared description.
    NoWait,
}

#[derive(Debug)]
pub struct Out {
    /// A duplicate of a descriptor the child shares (same open file description: same offset,
    /// same flags), or one of our own; none if even a duplicate could not be had (every record
    /// is then dropped).
    fd: Option<OwnedFd>,
    how: How,
    /// The unwritten tail of a record written in part.
    pending: Vec<u8>,
}

impl Out {
    /// watchd's stderr; if it cannot even be duplicated (no descriptor left), a sink that
    /// drops everything.
    pub fn stderr() -> Out {
        // std duplicates with F_DUPFD_CLOEXEC from 3 up: never onto a standard descriptor.
        match sys::standard_fd(2).try_clone_to_owned() {
            Ok(fd) => Out::shared(fd),
            Err(_) => Out { fd: None, how: How::Plain, pending: Vec::new() },
        }
    }

    /// `fd`, a duplicate of a descriptor the child shares, written so that it never blocks
    /// and the shared flags stay as they are.
    fn shared(fd: OwnedFd) -> Out {
        let kind = nix::sys::stat::fstat(&fd)
            .map(|st| SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()));
        let (fd, how) = match kind {
            Ok(SFlag::S_IFIFO) | Ok(SFlag::S_IFSOCK) => (fd, How::NoWait),
            Ok(SFlag::S_IFCHR) => match sys::reopen_nonblocking(fd.as_fd()) {
                Ok(own) => (own, How::Plain),
                Err(_) => (fd, How::Plain),
            },
            _ => (fd, How::Plain),
        };
        Out { fd: Some(fd), how, pending: Vec::new() }
    }

    /// A file watchd opened itself (non-blocking, so plain writes never wait).
    pub fn own(fd: OwnedFd) -> Out {
        Out { fd: Some(fd), how: How::Plain, pending: Vec::new() }
    }

    /// The descriptor to poll for writability while [`Out::pending`] (which never holds
    /// without one).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(OwnedFd::as_fd)
    }

    /// Whether the tail of a record waits to be written.
    pub fn pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Writes one whole record, or drops it: false when dropped (the caller counts it).
    pub fn write(&mut self, record: &[u8]) -> bool {
        self.flush();
        if self.pending() {
            return false;
        }
        match self.write_some(record) {
            Ok(n) => {
                self.pending.extend_from_slice(&record[n..]);
                true
            }
            Err(_) => false,
        }
    }

    /// Writes what it can of the pending tail.
    pub fn flush(&mut self) {
        while self.pending() {
            let tail = std::mem::take(&mut self.pending);
            match self.write_some(&tail) {
                Ok(n) if n > 0 => self.pending = tail[n..].to_vec(),
                Ok(_) => {
                    self.pending = tail;
                    return;
                }
                Err(Errno::EAGAIN) => {
                    self.pending = tail;
                    return;
                }
                // Nobody will ever read it (EPIPE, EBADF): let it go.
                Err(_) => return,
            }
        }
    }

    fn write_some(&mut self, buf: &[u8]) -> Result<usize, Errno> {
        loop {
            let Some(fd) = self.fd() else { return Err(Errno::EBADF) };
            let result = match self.how {
                How::NoWait => sys::write_nowait(fd, buf),
                How::Plain => nix::unistd::write(fd, buf),
            };
            match result {
                Err(Errno::EINTR) => continue,
                Err(Errno::EOPNOTSUPP) if self.how == How::NoWait => self.degrade(),
                other => return other,
            }
        }
    }

    /// This kernel cannot skip waiting per call on this file: use a non-blocking description
    /// of our own, or, failing that, plain writes.
    fn degrade(&mut self) {
        if let Some(own) = self.fd().and_then(|fd| sys::reopen_nonblocking(fd).ok()) {
            self.fd = Some(own);
        }
        self.how = How::Plain;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pipe() -> (std::fs::File, OwnedFd) {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        (std::fs::File::from(r), w)
    }

    /// An Out over a copy of `fd`, set up as for fd 2.
    fn over(fd: &OwnedFd) -> Out {
        Out::shared(fd.try_clone().unwrap())
    }

    fn is_nonblocking(fd: BorrowedFd<'_>) -> bool {
        let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        nix::fcntl::OFlag::from_bits_truncate(flags).contains(nix::fcntl::OFlag::O_NONBLOCK)
    }

    #[test]
    fn a_full_pipe_drops_records_and_never_blocks_or_changes_the_shared_flags() {
        let (mut reader, w) = pipe();
        let mut out = over(&w);
        let line = vec![b'x'; 1000];
        let mut written = 0;
        let mut dropped = 0;
        let start = std::time::Instant::now();
        for _ in 0..200 {
            if out.write(&line) { written += 1 } else { dropped += 1 }
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(5), "blocked");
        assert!(written >= 60 && dropped > 0, "{written} written, {dropped} dropped");
        assert!(!is_nonblocking(w.as_fd()), "the shared description turned non-blocking");
        assert_eq!(out.how, How::NoWait, "this kernel skips waiting per call on a pipe");
        // Whole records only: drain and check that the byte count is a multiple of a line.
        drop(w);
        drop(out);
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(got.len() % line.len(), 0, "a record was torn");
    }

    #[test]
    fn a_partly_written_record_is_finished_before_the_next() {
        let (mut reader, w) = pipe();
        let mut out = over(&w);
        // A pipe holds 16 pages: leave two free, then write a record of two and a half.
        let fill = vec![b'a'; 65536 - 8192];
        assert!(out.write(&fill));
        let big = vec![b'b'; 10_000];
        assert!(out.write(&big), "a record started is kept");
        assert!(out.pending(), "the tail waits");
        assert!(!out.write(b"c\n"), "nothing new while a tail waits");
        let mut buf = vec![0; 65536];
        let mut got = 0;
        while got < fill.len() {
            got += reader.read(&mut buf[..fill.len() - got]).unwrap();
        }
        out.flush();
        assert!(!out.pending());
        assert!(out.write(b"c\n"));
        drop(out);
        drop(w);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, [big.as_slice(), b"c\n"].concat());
    }

    #[test]
    fn a_closed_reader_drops_quietly() {
        let (reader, w) = pipe();
        drop(reader);
        let mut out = over(&w);
        assert!(!out.write(b"line\n"));
        assert!(!out.pending());
    }
}
