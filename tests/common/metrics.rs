//! The master's metrics listener as the tests read it: its address, a request to it, and the
//! Prometheus text parsed.

use super::Server;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// The metrics address from the master's `listening on` line.
pub fn metrics_addr(server: &Server) -> SocketAddr {
    let line = server.wait_log("metrics http://");
    line.split("metrics http://")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| c == '/' || c.is_whitespace()).next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in {line:?}"))
}

/// `GET path` on the metrics listener: (status, body).
pub fn scrape(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("metrics listener");
    s.set_read_timeout(Some(super::WAIT_MAX)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: m\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let status = all.split(' ').nth(1).unwrap().parse().unwrap();
    let body = all.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

/// Prometheus text, parsed.
pub fn parse_metrics(body: &str) -> prometheus_parse::Scrape {
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text")
}

/// The sum of the samples of `name` whose labels include `labels`.
pub fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .sum()
}
