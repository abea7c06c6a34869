//! python3 tests/fixtures/health_server.py, the HTTP server of the `--health-url` tests
//! (tests/health.rs, tests/readiness.rs): /ok 200, /fail 503, /redirect 302 to /fail, /hang
//! never answers, /close hangs up. It logs each request ("GET /path") on stdout, exits when
//! its stdin closes, and is killed and reaped when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

pub struct Server {
    child: Child,
    pub port: u16,
    log: Receiver<String>,
}

impl Server {
    pub fn start() -> Server {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/health_server.py");
        // Python without pyenv's shim: it starts faster.
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let (tx, log) = channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let port =
            log.recv_timeout(Duration::from_secs(20)).expect("the server's port").parse().unwrap();
        Server { child, port, log }
    }

    /// `http://127.0.0.1:PORT` and `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The requests logged so far.
    pub fn requests(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    /// The requests logged, up to and including `last` (waiting for it up to 10s).
    pub fn requests_until(&self, last: &str) -> Vec<String> {
        let mut seen = Vec::new();
        while seen.last().map(String::as_str) != Some(last) {
            seen.push(self.log.recv_timeout(Duration::from_secs(10)).expect("a logged request"));
        }
        seen
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
