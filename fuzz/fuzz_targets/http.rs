//! Fuzzes the request parser and the framing state machine of a connection: arbitrary
//! bytes, fed whole and split into reads at points the input chooses. Neither may panic,
//! and both must answer the same way: framing must not depend on how bytes arrive.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmaster::drive::{feed, Outcome};

/// The responses, split by their framing, without interim `100 Continue` (how many go out
/// depends on the reads). An error response keeps only its status line: its detail names
/// the first fault seen, which depends on how much had arrived.
fn finals(outcome: &Outcome) -> Vec<Vec<u8>> {
    let mut sent = outcome.sent.as_slice();
    let mut out = Vec::new();
    while !sent.is_empty() {
        let end = sent
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("every response has a whole head")
            + 4;
        let head = String::from_utf8_lossy(&sent[..end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map_or(0, |v| v.trim().parse().expect("a numeric length"));
        let len = if head.contains("\r\nX-Method: HEAD\r\n") { 0 } else { len };
        let whole = &sent[..end + len];
        let status = head.lines().next().unwrap_or_default().to_string();
        if status.starts_with("HTTP/1.1 4") || status.starts_with("HTTP/1.1 5") {
            out.push(status.into_bytes());
        } else if !status.starts_with("HTTP/1.1 100 ") {
            out.push(whole.to_vec());
        }
        sent = &sent[end + len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose the split points; the rest is the byte stream.
    let (cuts, stream) = match data {
        [a, b, rest @ ..] => ((*a as usize, *b as usize), rest),
        _ => return,
    };
    let whole = feed(&[stream]);
    let mut points = [cuts.0 % (stream.len() + 1), cuts.1 % (stream.len() + 1)];
    points.sort_unstable();
    let split = feed(&[
        &stream[..points[0]],
        &stream[points[0]..points[1]],
        &stream[points[1]..],
    ]);
    if !whole.sent.is_empty() {
        assert!(whole.sent.starts_with(b"HTTP/1.1 "), "output is a response");
    }
    assert_eq!(whole.requests, split.requests, "the same requests");
    assert_eq!(finals(&whole), finals(&split), "the same answers");
    assert_eq!(whole.closing, split.closing, "the same end");
});
