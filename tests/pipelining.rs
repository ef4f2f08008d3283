//! Property: any split of a valid pipelined byte stream into reads yields the same requests
//! and the same responses, in order.

use proptest::prelude::*;
use ringmaster::drive::feed;

/// A request body: none, framed by `Content-Length`, or chunked (with its chunks).
#[derive(Clone, Debug)]
enum Body {
    None,
    Length(Vec<u8>),
    Chunked(Vec<Vec<u8>>),
}

#[derive(Clone, Debug)]
struct Req {
    method: &'static str,
    path: String,
    body: Body,
    expect: bool,
}

impl Req {
    fn bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\nHost: h\r\n", self.method, self.path).into_bytes();
        if self.expect && !matches!(self.body, Body::None) {
            out.extend_from_slice(b"Expect: 100-continue\r\n");
        }
        match &self.body {
            Body::None => out.extend_from_slice(b"\r\n"),
            Body::Length(b) => {
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Body::Chunked(chunks) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for c in chunks.iter().filter(|c| !c.is_empty()) {
                    out.extend_from_slice(format!("{:x};x=y\r\n", c.len()).as_bytes());
                    out.extend_from_slice(c);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\nT: v\r\n\r\n");
            }
        }
        out
    }

    fn body(&self) -> Vec<u8> {
        match &self.body {
            Body::None => Vec::new(),
            Body::Length(b) => b.clone(),
            Body::Chunked(c) => c.concat(),
        }
    }
}

fn req() -> impl Strategy<Value = Req> {
    let body = prop_oneof![
        Just(Body::None),
        prop::collection::vec(any::<u8>(), 0..300).prop_map(Body::Length),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..50), 0..5)
            .prop_map(Body::Chunked),
    ];
    (
        prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("BREW")],
        "/[a-z0-9]{0,12}",
        body,
        any::<bool>(),
    )
        .prop_map(|(method, path, body, expect)| Req {
            method,
            path,
            body,
            expect,
        })
}

/// Splits sent bytes into final responses (head, body), skipping `100 Continue`.
fn finals(mut sent: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    while !sent.is_empty() {
        let end = sent
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a whole head")
            + 4;
        let head = &sent[..end];
        let text = String::from_utf8_lossy(head);
        let len: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        if !text.starts_with("HTTP/1.1 100 ") {
            out.push((head.to_vec(), sent[end..end + len].to_vec()));
        }
        sent = &sent[end + len..];
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_split_yields_the_same_requests(
        reqs in prop::collection::vec(req(), 1..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let stream: Vec<u8> = reqs.iter().flat_map(Req::bytes).collect();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.sort_unstable();
        points.dedup();
        let mut chunks = Vec::new();
        let mut at = 0;
        for p in points {
            chunks.push(&stream[at..p]);
            at = p;
        }
        chunks.push(&stream[at..]);

        let whole = feed(&[&stream]);
        let split = feed(&chunks);
        prop_assert_eq!(whole.requests, reqs.len() as u64);
        prop_assert!(!whole.closing);
        // 100 Continue goes out only while a body is missing: how many depends on the
        // splits, so compare the final responses without the interim ones.
        prop_assert_eq!(finals(&split.sent), finals(&whole.sent));
        prop_assert_eq!(split.requests, whole.requests);
        // The responses carry the requests, in order.
        let bodies: Vec<Vec<u8>> = finals(&whole.sent).into_iter().map(|(_, b)| b).collect();
        let expected: Vec<Vec<u8>> = reqs
            .iter()
            .map(|r| [format!("{} {}|", r.method, r.path).into_bytes(), r.body()].concat())
            .collect();
        prop_assert_eq!(bodies, expected);
    }
}
