//! A load generator for tests: client threads that check every response and count what
//! failed, so that "no request failed" is a measurement, not a hope.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// What the clients saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub ok: u64,
    /// Connections refused (ECONNREFUSED).
    pub refused: u64,
    /// Any other failure: reset, end of stream before a whole response, bad status.
    pub failed: u64,
}

/// How the clients use connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// One connection per client, reused until the server says `Connection: close`.
    KeepAlive,
    /// A new connection per request, with `Connection: close`.
    OnePerConnection,
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    /// The first few failures, for the test's message.
    reasons: std::sync::Mutex<Vec<String>>,
}

impl Counters {
    fn fail(&self, reason: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut reasons = self.reasons.lock().unwrap();
        if reasons.len() < 10 {
            reasons.push(reason);
        }
    }
}

/// Running client threads.
pub struct Load {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: SocketAddr, clients: usize, style: Style) -> Load {
        Load::start_expecting(addr, clients, style, None)
    }

    /// Like [`Load::start`]; a response whose body is not one of `bodies` (when given)
    /// counts as failed.
    pub fn start_expecting(
        addr: SocketAddr,
        clients: usize,
        style: Style,
        bodies: Option<&'static [&'static str]>,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let threads = (0..clients)
            .map(|_| {
                let (stop, counters) = (Arc::clone(&stop), Arc::clone(&counters));
                std::thread::spawn(move || client(addr, style, bodies, &stop, &counters))
            })
            .collect();
        Load {
            stop,
            counters,
            threads,
        }
    }

    pub fn tally(&self) -> Tally {
        Tally {
            ok: self.counters.ok.load(Ordering::Relaxed),
            refused: self.counters.refused.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
        }
    }

    /// Stops the clients (each finishes its request in flight) and returns the tally.
    pub fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        for reason in self.counters.reasons.lock().unwrap().iter() {
            eprintln!("load: failure: {reason}");
        }
        Tally {
            ok: self.counters.ok.load(Ordering::Relaxed),
            refused: self.counters.refused.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
        }
    }
}

fn client(
    addr: SocketAddr,
    style: Style,
    bodies: Option<&[&str]>,
    stop: &AtomicBool,
    counters: &Counters,
) {
    let request: &[u8] = match style {
        Style::KeepAlive => b"GET / HTTP/1.1\r\nHost: load\r\n\r\n",
        Style::OnePerConnection => b"GET / HTTP/1.1\r\nHost: load\r\nConnection: close\r\n\r\n",
    };
    let mut conn: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::Relaxed) {
        let reader = match conn.as_mut() {
            Some(r) => r,
            None => match TcpStream::connect(addr) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    s.set_nodelay(true).unwrap();
                    conn.insert(BufReader::new(s))
                }
                Err(e) => {
                    if e.kind() == std::io::ErrorKind::ConnectionRefused {
                        counters.refused.fetch_add(1, Ordering::Relaxed);
                    } else {
                        counters.fail(format!("connect: {e}"));
                    }
                    continue;
                }
            },
        };
        match exchange(reader, request) {
            Ok((_, body)) if bodies.is_some_and(|b| !b.iter().any(|b| b.as_bytes() == body)) => {
                counters.fail(format!("body {:?}", String::from_utf8_lossy(&body)));
                conn = None;
            }
            Ok((keep, _)) => {
                counters.ok.fetch_add(1, Ordering::Relaxed);
                if !keep || style == Style::OnePerConnection {
                    conn = None;
                }
            }
            Err(e) => {
                counters.fail(format!("exchange: {e}"));
                conn = None;
            }
        }
    }
}

/// One request and its whole response; `Ok((keep_alive, body))`.
fn exchange(reader: &mut BufReader<TcpStream>, request: &[u8]) -> std::io::Result<(bool, Vec<u8>)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    reader.get_mut().write_all(request)?;
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(bad("end of stream before the response"));
    }
    if !line.starts_with("HTTP/1.1 200 ") {
        return Err(bad("status not 200"));
    }
    let (mut len, mut keep) = (0usize, true);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad("end of stream in the head"));
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().map_err(|_| bad("content-length"))?;
        }
        if lower.starts_with("connection:") && lower.contains("close") {
            keep = false;
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok((keep, body))
}
