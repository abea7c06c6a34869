//! `--health-url` checks against real servers: python's http.server (200, 503, a 302 that is
//! not followed, a request that hangs, a connection closed without an answer) and small Rust
//! listeners for what http.server will not do (refuse, reset, answer garbage).

mod server;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use server::Server;
use watchd::health::{HealthUrl, HttpCheck, Interest, Outcome};

/// A URL of the test server, parsed as `--health-url` parses it.
fn at(server: &Server, path: &str) -> HealthUrl {
    HealthUrl::resolve(&server.url(path)).unwrap()
}

/// Drives one check as the driver's poll loop would; `None` if `limit` ran out first. Every
/// step must return at once: nothing here may block.
fn run(url: &HealthUrl, limit: Duration) -> Result<Outcome, Outcome> {
    let began = Instant::now();
    let mut check = match HttpCheck::start(url) {
        Ok(check) => check,
        Err(outcome) => return Ok(outcome),
    };
    assert!(began.elapsed() < Duration::from_millis(200), "start blocked");
    let deadline = began + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(check.timed_out(limit));
        }
        let flags = match check.interest() {
            Interest::Readable => PollFlags::POLLIN,
            Interest::Writable => PollFlags::POLLOUT,
        };
        let mut fds = [PollFd::new(check.fd(), flags)];
        let wait = PollTimeout::try_from(left.min(Duration::from_millis(50))).unwrap();
        if poll(&mut fds, wait).unwrap() == 0 {
            continue;
        }
        let step = Instant::now();
        let outcome = check.on_ready();
        assert!(step.elapsed() < Duration::from_millis(200), "on_ready blocked");
        if let Some(outcome) = outcome {
            return Ok(outcome);
        }
    }
}

#[test]
fn http_server_statuses() {
    let server = Server::start();
    let port = server.port;
    let ok = run(&at(&server, "/ok"), Duration::from_secs(10)).unwrap();
    assert_eq!(
        ok,
        Outcome { ok: true, detail: format!("HTTP 200 from http://127.0.0.1:{port}/ok") }
    );
    let fail = run(&at(&server, "/fail"), Duration::from_secs(10)).unwrap();
    assert_eq!(
        fail,
        Outcome { ok: false, detail: format!("HTTP 503 from http://127.0.0.1:{port}/fail") }
    );
    let missing = run(&at(&server, "/nope"), Duration::from_secs(10)).unwrap();
    assert!(!missing.ok && missing.detail.starts_with("HTTP 404"), "{missing:?}");
}

#[test]
fn a_redirect_passes_and_is_not_followed() {
    let server = Server::start();
    let outcome = run(&at(&server, "/redirect"), Duration::from_secs(10)).unwrap();
    assert!(outcome.ok && outcome.detail.starts_with("HTTP 302 from"), "{outcome:?}");
    // A marker request after it: a followed redirect would have logged /fail before it.
    run(&at(&server, "/ok"), Duration::from_secs(10)).unwrap();
    assert_eq!(server.requests_until("GET /ok"), ["GET /redirect", "GET /ok"]);
}

#[test]
fn a_hanging_server_leaves_the_timeout_to_the_caller() {
    let server = Server::start();
    let url = at(&server, "/hang");
    let began = Instant::now();
    let timed_out = run(&url, Duration::from_millis(300)).unwrap_err();
    assert!(began.elapsed() >= Duration::from_millis(300));
    assert!(!timed_out.ok);
    assert_eq!(timed_out.detail, format!("no answer from {} within 300ms", url.url));
}

#[test]
fn a_connection_closed_without_an_answer_fails() {
    let server = Server::start();
    let url = at(&server, "/close");
    let outcome = run(&url, Duration::from_secs(10)).unwrap();
    assert_eq!(outcome.detail, format!("{} closed the connection before a status line", url.url));
    assert!(!outcome.ok);
}

#[test]
fn a_refused_connection_fails() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = HealthUrl::resolve(&format!("http://127.0.0.1:{port}/")).unwrap();
    let outcome = run(&url, Duration::from_secs(10)).unwrap();
    assert_eq!(
        outcome,
        Outcome { ok: false, detail: format!("connection refused by {}", url.url) }
    );
}

/// A one-shot server: reads the request, then does `answer` with the connection.
fn one_shot(answer: impl FnOnce(std::net::TcpStream) + Send + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 256];
        while !request.ends_with(b"\r\n\r\n") {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "the request ended early");
            request.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8(request).unwrap();
        assert!(text.starts_with("GET /x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:"), "{text}");
        assert!(
            text.contains("\r\nConnection: close\r\n")
                && text.contains("\r\nUser-Agent: watchd\r\n")
        );
        answer(conn);
    });
    port
}

#[test]
fn garbage_fails() {
    let port = one_shot(|mut conn| {
        conn.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
    });
    let url = HealthUrl::resolve(&format!("http://127.0.0.1:{port}/x?y=1")).unwrap();
    let outcome = run(&url, Duration::from_secs(10)).unwrap();
    assert_eq!(
        outcome,
        Outcome { ok: false, detail: format!("{} sent no HTTP status line", url.url) }
    );
}

#[test]
fn a_reset_fails() {
    let port = one_shot(|conn| {
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        nix::sys::socket::setsockopt(&conn, nix::sys::socket::sockopt::Linger, &linger).unwrap();
        drop(conn);
    });
    let url = HealthUrl::resolve(&format!("http://127.0.0.1:{port}/x?y=1")).unwrap();
    let outcome = run(&url, Duration::from_secs(10)).unwrap();
    assert_eq!(outcome, Outcome { ok: false, detail: format!("connection reset by {}", url.url) });
}

#[test]
fn a_status_line_split_across_reads_still_counts() {
    // Paced so that the pieces are likely to arrive in separate reads; the check must pass
    // however they arrive.
    let port = one_shot(|mut conn| {
        for piece in [&b"HT"[..], b"TP/1.1 2", b"04 No Content\r", b"\n\r\n"] {
            conn.write_all(piece).unwrap();
            conn.flush().unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let url = HealthUrl::resolve(&format!("http://127.0.0.1:{port}/x?y=1")).unwrap();
    let outcome = run(&url, Duration::from_secs(10)).unwrap();
    assert!(outcome.ok && outcome.detail.starts_with("HTTP 204"), "{outcome:?}");
}

#[test]
fn a_name_resolved_at_start_tries_each_address() {
    let server = Server::start();
    // localhost may resolve to ::1 first, where nothing listens: the next address is tried.
    let url = HealthUrl::resolve(&format!("http://localhost:{}/ok", server.port)).unwrap();
    assert!(url.addrs.iter().any(|a| a.ip().is_loopback()));
    let outcome = run(&url, Duration::from_secs(10)).unwrap();
    assert!(outcome.ok, "{outcome:?} via {:?}", url.addrs);
    let err = HealthUrl::resolve("http://no-such-host.invalid/").unwrap_err();
    assert!(err.starts_with("cannot resolve no-such-host.invalid"), "{err}");
}

#[test]
fn a_refused_address_falls_through_to_the_next() {
    let server = Server::start();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let text = format!("http://svc:{}/ok", server.port);
    let parts = watchd::health::parse_url(&text).unwrap();
    let open = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let url = HealthUrl::with_addrs(&text, &parts, vec![closed, closed, open]);
    let outcome = run(&url, Duration::from_secs(10)).unwrap();
    assert_eq!(outcome, Outcome { ok: true, detail: format!("HTTP 200 from {text}") });
    let url = HealthUrl::with_addrs(&text, &parts, vec![open, closed]);
    assert!(run(&url, Duration::from_secs(10)).unwrap().ok, "the first address answers");
    let url = HealthUrl::with_addrs(&text, &parts, vec![closed, closed]);
    let outcome = run(&url, Duration::from_secs(10)).unwrap();
    assert_eq!(outcome.detail, format!("connection refused by {text}"));
}
