//! `--health-url`: the URL (parsed and resolved once, at start) and one check, a plain
//! HTTP/1.1 GET driven by the poll loop that never blocks and follows no redirect. When checks
//! run and what their results mean is `readiness`; the timeout is the caller's deadline.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, SockFlag, SockType, SockaddrStorage, sockopt,
};

/// The part of `http://host[:port][/path][?query]` a request needs, before resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlParts {
    pub host: Host,
    pub port: u16,
    /// The `Host` header: the host as written, with the port unless it is 80.
    pub host_header: String,
    /// The request target: the path (at least `/`) and the query; never a fragment.
    pub target: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

/// Splits a `--health-url` value without touching the network. The error is the reason, for
/// a usage message that names the option and the value.
pub fn parse_url(text: &str) -> Result<UrlParts, String> {
    let (scheme, rest) =
        text.split_once("://").ok_or("not a URL (expected http://HOST[:PORT]/PATH)")?;
    if scheme.eq_ignore_ascii_case("https") {
        return Err("https is not supported (use --health-cmd with curl)".into());
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(format!("only http:// URLs are supported, not {scheme}://"));
    }
    let rest = rest.split('#').next().unwrap_or_default();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(end);
    if authority.contains('@') {
        return Err("credentials in the URL are not supported (use --health-cmd with curl)".into());
    }
    let (host, port_text) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or("an IPv6 address needs a closing ]")?;
        let addr: Ipv6Addr = addr.parse().map_err(|_| format!("not an IPv6 address: {addr}"))?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or("expected :PORT after the IPv6 address")?),
        };
        (Host::Ip(IpAddr::V6(addr)), port)
    } else {
        let (name, port) = match authority.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (authority, None),
        };
        if name.is_empty() {
            return Err("the URL has no host".into());
        }
        let host = match name.parse::<Ipv4Addr>() {
            Ok(ip) => Host::Ip(IpAddr::V4(ip)),
            Err(_) if valid_name(name) => Host::Name(name.to_ascii_lowercase()),
            Err(_) => return Err(format!("not a host name: {name}")),
        };
        (host, port)
    };
    let port = match port_text {
        None | Some("") => 80,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u16>().ok().filter(|&p| p > 0).ok_or(format!("not a port: {p}"))?
        }
        Some(p) => return Err(format!("not a port: {p}")),
    };
    let shown = match &host {
        Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        Host::Ip(ip) => ip.to_string(),
        Host::Name(name) => name.clone(),
    };
    let host_header = if port == 80 { shown } else { format!("{shown}:{port}") };
    if let Some(bad) = target.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "the path has a character HTTP cannot carry as is: {bad:?} (percent-encode it)"
        ));
    }
    let target = match target {
        "" => "/".to_string(),
        t if t.starts_with('?') => format!("/{t}"),
        t => t.to_string(),
    };
    Ok(UrlParts { host, port, host_header, target })
}

/// Letters, digits, `-`, `_` and `.` (a trailing dot allowed): DNS names, and the service
/// names container networks resolve (`my_api`).
fn valid_name(name: &str) -> bool {
    name.split('.').enumerate().all(|(i, label)| {
        (label.is_empty() && i > 0 && name.ends_with('.') && name.len() > 1)
            || (!label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    })
}

/// A `--health-url`, resolved: what every check uses, so no check ever waits on DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthUrl {
    /// The URL as given, for messages.
    pub url: String,
    /// Every address the host had at start, tried in order on a refused connection (as a
    /// browser would between `::1` and `127.0.0.1`).
    pub addrs: Vec<SocketAddr>,
    /// The whole request, built once.
    request: Vec<u8>,
}

impl HealthUrl {
    /// Parses and resolves once. A name that does not resolve is an error, for a usage message.
    pub fn resolve(text: &str) -> Result<HealthUrl, String> {
        let parts = parse_url(text)?;
        let addrs = match &parts.host {
            Host::Ip(ip) => vec![SocketAddr::new(*ip, parts.port)],
            Host::Name(name) => {
                let found = (name.as_str(), parts.port)
                    .to_socket_addrs()
                    .map_err(|e| format!("cannot resolve {name}: {e}"))?;
                let mut addrs: Vec<SocketAddr> = Vec::new();
                for addr in found {
                    if !addrs.contains(&addr) {
                        addrs.push(addr);
                    }
                }
                if addrs.is_empty() {
                    return Err(format!("cannot resolve {name}: no address"));
                }
                addrs
            }
        };
        Ok(HealthUrl::with_addrs(text, &parts, addrs))
    }

    /// A URL whose addresses are already known (tests, or a caller that resolved it itself).
    pub fn with_addrs(text: &str, parts: &UrlParts, addrs: Vec<SocketAddr>) -> HealthUrl {
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: watchd\r\n\r\n",
            parts.target, parts.host_header
        );
        HealthUrl { url: text.to_string(), addrs, request: request.into_bytes() }
    }
}

/// The end of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    /// One line: `HTTP 503 from http://127.0.0.1:8080/health`, `connection refused by ...`.
    pub detail: String,
}

/// What the poll loop should wait for on [`HttpCheck::fd`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interest {
    Readable,
    Writable,
}

enum Phase {
    Connecting,
    Writing { sent: usize },
    Reading { got: Vec<u8> },
}

/// One GET in flight: start it, poll [`fd`](HttpCheck::fd) for [`interest`](HttpCheck::interest),
/// call [`on_ready`](HttpCheck::on_ready) when it is ready, until it gives an [`Outcome`].
/// The descriptor may change after `on_ready` (the next address after a refusal): take `fd()`
/// and `interest()` afresh each time. Dropping it closes the connection.
pub struct HttpCheck {
    /// A copy (a few hundred bytes), so the check borrows nothing from the caller.
    url: HealthUrl,
    /// Index into `url.addrs` of the address being tried.
    addr: usize,
    fd: OwnedFd,
    phase: Phase,
}

/// The most a status line may take; a server that sends more without a line end is not HTTP.
const MAX_STATUS_LINE: usize = 1024;

impl HttpCheck {
    /// Starts connecting (non-blocking). `Err` is an outcome already: every address refused
    /// at once, or no socket could be made.
    pub fn start(url: &HealthUrl) -> Result<HttpCheck, Outcome> {
        let mut last = None;
        for (i, addr) in url.addrs.iter().enumerate() {
            match connect(*addr) {
                Ok(fd) => {
                    let url = url.clone();
                    return Ok(HttpCheck { url, addr: i, fd, phase: Phase::Connecting });
                }
                Err(errno) => last = Some(errno),
            }
        }
        Err(failure(url, last.unwrap_or(Errno::EADDRNOTAVAIL)))
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn interest(&self) -> Interest {
        match self.phase {
            Phase::Connecting | Phase::Writing { .. } => Interest::Writable,
            Phase::Reading { .. } => Interest::Readable,
        }
    }

    /// Advances as far as it can without waiting; `Some` when the check is over.
    pub fn on_ready(&mut self) -> Option<Outcome> {
        loop {
            match &mut self.phase {
                Phase::Connecting => {
                    let err = socket::getsockopt(&self.fd, sockopt::SocketError).unwrap_or(0);
                    if err != 0 {
                        return self.next_address(Errno::from_raw(err));
                    }
                    self.phase = Phase::Writing { sent: 0 };
                }
                Phase::Writing { sent } => {
                    let request = &self.url.request[*sent..];
                    // MSG_NOSIGNAL: a server that resets the connection must not raise SIGPIPE.
                    match socket::send(self.fd.as_raw_fd(), request, MsgFlags::MSG_NOSIGNAL) {
                        Ok(n) if n == request.len() => {
                            self.phase = Phase::Reading { got: Vec::new() }
                        }
                        Ok(n) => *sent += n,
                        Err(Errno::EINTR) => {}
                        Err(Errno::EAGAIN) => return None,
                        // Still connecting (a spurious wake-up) and refused meanwhile.
                        Err(
                            e @ (Errno::ECONNREFUSED | Errno::EHOSTUNREACH | Errno::ENETUNREACH),
                        ) if *sent == 0 => {
                            return self.next_address(e);
                        }
                        Err(e) => return Some(failure(&self.url, e)),
                    }
                }
                Phase::Reading { got } => {
                    let mut buf = [0u8; 512];
                    match socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                        Ok(0) => {
                            let detail = if got.is_empty() {
                                format!(
                                    "{} closed the connection before a status line",
                                    self.url.url
                                )
                            } else {
                                format!("{} sent no HTTP status line", self.url.url)
                            };
                            return Some(Outcome { ok: false, detail });
                        }
                        Ok(n) => {
                            got.extend_from_slice(&buf[..n]);
                            match status_line(got) {
                                StatusLine::Incomplete => {}
                                StatusLine::Code(code) => {
                                    let ok = (200..=399).contains(&code);
                                    let detail = format!("HTTP {code} from {}", self.url.url);
                                    return Some(Outcome { ok, detail });
                                }
                                StatusLine::NotHttp => {
                                    let detail =
                                        format!("{} sent no HTTP status line", self.url.url);
                                    return Some(Outcome { ok: false, detail });
                                }
                            }
                        }
                        Err(Errno::EINTR) => {}
                        Err(Errno::EAGAIN) => return None,
                        Err(e) => return Some(failure(&self.url, e)),
                    }
                }
            }
        }
    }

    /// The outcome when the caller's `--health-timeout` ran out first.
    pub fn timed_out(&self, after: Duration) -> Outcome {
        let after = humantime::format_duration(after);
        let detail = match self.phase {
            Phase::Connecting => format!("no connection to {} within {after}", self.url.url),
            _ => format!("no answer from {} within {after}", self.url.url),
        };
        Outcome { ok: false, detail }
    }

    /// The current address failed to connect: try the next one, or fail with `errno`.
    fn next_address(&mut self, errno: Errno) -> Option<Outcome> {
        let mut last = errno;
        while self.addr + 1 < self.url.addrs.len() {
            self.addr += 1;
            match connect(self.url.addrs[self.addr]) {
                Ok(fd) => {
                    self.fd = fd;
                    self.phase = Phase::Connecting;
                    return None;
                }
                Err(e) => last = e,
            }
        }
        Some(failure(&self.url, last))
    }
}

/// A non-blocking connect: `Ok` while it is under way or done.
fn connect(addr: SocketAddr) -> Result<OwnedFd, Errno> {
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket::socket(family, SockType::Stream, flags, None)?;
    match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Ok(()) | Err(Errno::EINPROGRESS) | Err(Errno::EINTR) => Ok(fd),
        Err(e) => Err(e),
    }
}

fn failure(url: &HealthUrl, errno: Errno) -> Outcome {
    let detail = match errno {
        Errno::ECONNREFUSED => format!("connection refused by {}", url.url),
        Errno::ECONNRESET => format!("connection reset by {}", url.url),
        Errno::EPIPE => format!("{} closed the connection before the request was sent", url.url),
        e => format!("{}: {}", url.url, Errnoed(e)),
    };
    Outcome { ok: false, detail }
}

/// An errno as its message, without nix's `ENAME: ` prefix.
struct Errnoed(Errno);

impl fmt::Display for Errnoed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.desc().to_ascii_lowercase().as_str())
    }
}

/// What the bytes received so far say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusLine {
    /// Not a whole line yet, and nothing wrong so far.
    Incomplete,
    Code(u16),
    NotHttp,
}

/// Reads `HTTP/x.y NNN[ reason]` from the start of a response. Pure.
pub fn status_line(got: &[u8]) -> StatusLine {
    const PREFIX: &[u8] = b"HTTP/";
    let head = &got[..got.len().min(PREFIX.len())];
    if head != &PREFIX[..head.len()] {
        return StatusLine::NotHttp;
    }
    let end = match got.iter().position(|&b| b == b'\n') {
        Some(end) if end < MAX_STATUS_LINE => end,
        Some(_) => return StatusLine::NotHttp,
        None if got.len() >= MAX_STATUS_LINE => return StatusLine::NotHttp,
        None => return StatusLine::Incomplete,
    };
    let line = got[..end].strip_suffix(b"\r").unwrap_or(&got[..end]);
    let rest = &line[PREFIX.len()..];
    let version_ok =
        rest.len() >= 3 && rest[0].is_ascii_digit() && rest[1] == b'.' && rest[2].is_ascii_digit();
    let code = rest.get(3..).and_then(|r| r.strip_prefix(b" "));
    match code {
        Some(code)
            if version_ok
                && code.len() >= 3
                && code[..3].iter().all(u8::is_ascii_digit)
                && (code.len() == 3 || code[3] == b' ') =>
        {
            let n = code[..3].iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
            StatusLine::Code(n)
        }
        _ => StatusLine::NotHttp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parts(text: &str) -> UrlParts {
        parse_url(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn urls_split_into_address_host_and_target() {
        let p = parts("http://127.0.0.1:8080/health?deep=1#frag");
        assert_eq!(p.host, Host::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(
            (p.port, p.host_header.as_str(), p.target.as_str()),
            (8080, "127.0.0.1:8080", "/health?deep=1")
        );
        let p = parts("HTTP://[::1]/");
        assert_eq!((p.port, p.host_header.as_str(), p.target.as_str()), (80, "[::1]", "/"));
        let p = parts("http://[::1]:9000?x");
        assert_eq!((p.host_header.as_str(), p.target.as_str()), ("[::1]:9000", "/?x"));
        let p = parts("http://Example.COM:80");
        assert_eq!(p.host, Host::Name("example.com".into()));
        assert_eq!((p.host_header.as_str(), p.target.as_str()), ("example.com", "/"));
        assert_eq!(parts("http://my_api.local./").host, Host::Name("my_api.local.".into()));
        let p = parts("http://svc:8080/a%20b");
        assert_eq!((p.host_header.as_str(), p.target.as_str()), ("svc:8080", "/a%20b"));
    }

    #[test]
    fn bad_urls_say_why() {
        let err = |text: &str| parse_url(text).expect_err(text);
        assert!(err("https://127.0.0.1/").contains("https is not supported"));
        assert!(err("ftp://x/").contains("only http://"));
        assert!(err("127.0.0.1:8080/health").contains("not a URL"));
        for bad in [
            "http:///x",
            "http://:80/",
            "http://h:0/",
            "http://h:65536/",
            "http://h:-1/",
            "http://h:8x/",
            "http://[::1/",
            "http://[::1]x/",
            "http://[zz]/",
            "http://u:p@h/",
            "http://h/a b",
            "http://h/\u{e9}",
            "http://h~x/",
            "http://h..x/",
        ] {
            err(bad);
        }
    }

    #[test]
    fn the_request_is_a_plain_get() {
        let p = parts("http://127.0.0.1:8080/health");
        let url = HealthUrl::with_addrs("http://127.0.0.1:8080/health", &p, vec![]);
        assert_eq!(
            url.request,
            b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\nUser-Agent: watchd\r\n\r\n"
        );
        let url = HealthUrl::resolve("http://127.0.0.1:1/").unwrap();
        assert_eq!(url.addrs, vec!["127.0.0.1:1".parse().unwrap()]);
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_line(b""), StatusLine::Incomplete);
        assert_eq!(status_line(b"HTT"), StatusLine::Incomplete);
        assert_eq!(status_line(b"HTTP/1.1 200 O"), StatusLine::Incomplete);
        assert_eq!(status_line(b"HTTP/1.1 200 OK\r\n"), StatusLine::Code(200));
        assert_eq!(status_line(b"HTTP/1.0 302\r\nLocation: /x"), StatusLine::Code(302));
        assert_eq!(status_line(b"HTTP/1.1 503 Service Unavailable\n"), StatusLine::Code(503));
        assert_eq!(status_line(b"garbage\r\n"), StatusLine::NotHttp);
        assert_eq!(status_line(b"<html>"), StatusLine::NotHttp);
        assert_eq!(status_line(b"HTTP/1.1 20 OK\r\n"), StatusLine::NotHttp);
        assert_eq!(status_line(b"HTTP/1.1 2000\r\n"), StatusLine::NotHttp);
        assert_eq!(status_line(b"HTTP/11 200\r\n"), StatusLine::NotHttp);
        assert_eq!(
            status_line(&[b"HTTP/1.1 200 ".as_slice(), &[b'x'; 2000]].concat()),
            StatusLine::NotHttp
        );
    }

    proptest! {
        #[test]
        fn arbitrary_urls_never_panic(text in "\\PC{0,60}", bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse_url(&text);
            let _ = parse_url(&format!("http://{text}"));
            let _ = parse_url(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn generated_urls_parse_back(
            ip in any::<[u8; 4]>(),
            port in 1u16..,
            path in "(/[A-Za-z0-9._~%-]{0,8}){0,4}",
            query in proptest::option::of("[A-Za-z0-9=&]{0,10}"),
        ) {
            let ip = Ipv4Addr::from(ip);
            let query = query.map(|q| format!("?{q}")).unwrap_or_default();
            let p = parse_url(&format!("http://{ip}:{port}{path}{query}")).unwrap();
            prop_assert_eq!(p.host, Host::Ip(IpAddr::V4(ip)));
            prop_assert_eq!(p.port, port);
            let want_target = if path.is_empty() { format!("/{query}") } else { format!("{path}{query}") };
            prop_assert_eq!(p.target, want_target);
            let want_header = if port == 80 { ip.to_string() } else { format!("{ip}:{port}") };
            prop_assert_eq!(p.host_header, want_header);
        }

        #[test]
        fn arbitrary_responses_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let verdict = status_line(&bytes);
            if let StatusLine::Code(code) = verdict {
                prop_assert!(code <= 999);
                prop_assert!(bytes.starts_with(b"HTTP/"));
            }
            // More bytes never turn a verdict back into "incomplete".
            if verdict != StatusLine::Incomplete {
                let mut longer = bytes.clone();
                longer.extend_from_slice(b"\r\nmore");
                prop_assert_eq!(status_line(&longer), verdict);
            }
        }

        #[test]
        fn status_codes_round_trip(code in 100u16..1000, reason in "[ -~]{0,20}") {
            let line = format!("HTTP/1.1 {code} {reason}\r\n");
            prop_assert_eq!(status_line(line.as_bytes()), StatusLine::Code(code));
        }
    }
}
