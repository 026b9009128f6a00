//! A tiny HTTP/1.1 server on 127.0.0.1 for tests: started by a test, stopped on drop.
//!
//! Routes: `/json/<id>` answers `{"id":"<id>"}`; `/status/<code>` answers that
//! status; `/delay/<ms>/<rest>` waits, then answers as `/<rest>` would.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    /// Requests answered so far.
    pub(crate) hits: Arc<AtomicUsize>,
    /// The most requests it was handling at once.
    pub(crate) max_concurrent: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl TestServer {
    pub(crate) fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let max_concurrent = Arc::new(AtomicUsize::new(0));
        let current = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, m, s) = (hits.clone(), max_concurrent.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (h, m, c) = (h.clone(), m.clone(), current.clone());
                std::thread::spawn(move || answer(stream, &h, &c, &m));
            }
        });
        TestServer { addr, hits, max_concurrent, stop }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Reads a request, handles it (counted as in progress), then responds.
fn answer(stream: TcpStream, hits: &AtomicUsize, current: &AtomicUsize, max: &AtomicUsize) {
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_or(true, |n| n == 0) || line == "\r\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
    max.fetch_max(current.fetch_add(1, SeqCst) + 1, SeqCst);
    let (status, body) = route(&path);
    hits.fetch_add(1, SeqCst);
    // Done before the response leaves, so a client's next request never overlaps this one.
    current.fetch_sub(1, SeqCst);
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = (&stream).write_all(response.as_bytes());
}

fn route(path: &str) -> (u16, String) {
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(3, '/').collect();
    match parts.as_slice() {
        ["delay", ms, rest] => {
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
            route(&format!("/{rest}"))
        }
        ["json", id, ..] => (200, format!(r#"{{"id":"{id}"}}"#)),
        ["status", code, ..] => (code.parse().unwrap_or(500), r#""status""#.to_string()),
        _ => (404, r#""not found""#.to_string()),
    }
}
