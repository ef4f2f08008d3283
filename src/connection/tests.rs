//! The connection driven without a ring: events in, ring acts and response bytes out.

use super::drive::{standalone, Ringless};
use super::send_rate::{kept_up, SEND_WATCH_BYTES_MIN};
use super::*;
use crate::http::{Request, Response};
use crate::Handler;

struct Echo;
impl Handler for Echo {
    fn handle(&self, req: &Request<'_>, res: &mut Response) {
        res.write(req.path()).write("|").write(req.body());
    }
}

struct Harness {
    ctx: Ctx<'static, Echo>,
    ring: Ringless,
}

impl Harness {
    fn new() -> Harness {
        let mut ring = Ringless::default();
        ring.logging = true;
        Harness {
            ctx: standalone(&Echo),
            ring,
        }
    }

    /// A fresh connection, accepted now, with its first acts carried out.
    fn conn(&mut self) -> Conn {
        let mut conn = Conn::new(0, Desc::Plain(-1), None, self.ctx.now);
        self.ring.run(&mut conn, &mut self.ctx, |_| {});
        conn
    }

    /// Delivers `chunks` one by one and returns everything the connection would send.
    fn feed(&mut self, conn: &mut Conn, chunks: &[&[u8]]) -> String {
        let mut sent = String::new();
        for chunk in chunks {
            self.ring.deliver(conn, chunk, &mut self.ctx);
            sent.push_str(&self.run(conn));
        }
        sent
    }

    /// Carries out what the connection asks of the ring; returns what it sent.
    fn run(&mut self, conn: &mut Conn) -> String {
        let mut sent = Vec::new();
        self.ring
            .run(conn, &mut self.ctx, |b| sent.extend_from_slice(b));
        String::from_utf8(sent).unwrap()
    }

    /// The acts carried out since the last call, by name (a send's length and a cancel's
    /// target left out: the bytes are checked where they matter).
    fn acts(&mut self) -> Vec<String> {
        let name = |act: String| match act.split_once('(') {
            Some((name @ ("Send" | "Cancel"), _)) => name.to_string(),
            _ => act,
        };
        std::mem::take(&mut self.ring.log)
            .into_iter()
            .map(name)
            .collect()
    }
}

fn bodies(responses: &str) -> Vec<&str> {
    responses
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|r| r.split("\r\n\r\n").nth(1).unwrap())
        .collect()
}

/// One step of a scripted exchange.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Bytes arrive.
    Data(&'static [u8]),
    /// The client shuts its side: the receive ends with end of stream.
    Eof,
    /// The socket fails (a reset): the receive ends with an error.
    Reset,
    /// The tick, this many seconds after the accept.
    TickAt(u64),
    /// The worker starts draining, with no grace for idle connections.
    DrainNow,
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
const GET_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
const BAD: &[u8] = b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n";

#[test]
fn events_in_ring_acts_out() {
    use Step::*;
    let first = "Recv { multishot: false }";
    let multi = "Recv { multishot: true }";
    let cases: &[(&str, &[Step], &[&str])] = &[
        ("nothing arrives", &[TickAt(9)], &[first]),
        (
            "nothing arrives by the head timeout: closed without a word",
            &[TickAt(10)],
            &[first, "Cancel", "Close", "Free"],
        ),
        (
            "a keep-alive request: answered, then one multishot receive",
            &[Data(GET), Data(GET)],
            &[first, "Send", multi, "Send"],
        ),
        (
            "Connection: close: answered, then closed",
            &[Data(GET_CLOSE)],
            &[first, "Send", "Close", "Free"],
        ),
        (
            "a refusal: answered, the write side shut, input drained until the end",
            &[Data(BAD), Eof],
            &[first, "Send", "ShutWrite", first, "Close", "Free"],
        ),
        (
            "a request cut short by the end of input: 400, then the same",
            &[Data(b"GET / HT"), Eof],
            &[first, multi, "Send", "ShutWrite", "Close", "Free"],
        ),
        (
            "the end of input between requests: closed",
            &[Data(GET), Eof],
            &[first, "Send", multi, "Close", "Free"],
        ),
        (
            "a reset: closed",
            &[Data(GET), Reset],
            &[first, "Send", multi, "Close", "Free"],
        ),
        (
            "idle past the idle timeout: closed",
            &[Data(GET), TickAt(61)],
            &[first, "Send", multi, "Cancel", "Close", "Free"],
        ),
        (
            "a partial head past the head timeout: 408, then lingering",
            &[Data(b"GET / HT"), TickAt(10)],
            &[first, multi, "Send", "ShutWrite"],
        ),
        (
            "drained while idle: closed",
            &[Data(GET), DrainNow],
            &[first, "Send", multi, "Cancel", "Close", "Free"],
        ),
    ];
    for (name, steps, want) in cases {
        let mut h = Harness::new();
        let start = h.ctx.now;
        let mut conn = h.conn();
        for step in *steps {
            match *step {
                Data(bytes) => h.ring.deliver(&mut conn, bytes, &mut h.ctx),
                Eof => h.ring.end(&mut conn, RecvEnd::Eof, &mut h.ctx),
                Reset => h.ring.end(&mut conn, RecvEnd::Failed, &mut h.ctx),
                TickAt(s) => {
                    h.ctx.now = start + Duration::from_secs(s);
                    conn.on_tick(&mut h.ctx);
                }
                DrainNow => h.ctx.drain = Drain::IdleClosing,
            }
            h.run(&mut conn);
        }
        assert_eq!(h.acts(), *want, "{name}");
    }
}

#[test]
fn pipelined_requests_are_answered_in_order_across_any_split() {
    let stream = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n\
        POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz\
        GET /c HTTP/1.1\r\nHost: h\r\n\r\n";
    for split in 0..=stream.len() {
        let mut h = Harness::new();
        let mut conn = h.conn();
        let (a, b) = stream.split_at(split);
        let out = h.feed(&mut conn, &[a, b]);
        assert_eq!(bodies(&out), ["/a|", "/b|xyz", "/c|"], "split at {split}");
        assert!(conn.is_open());
        assert!(conn.is_idle(), "nothing left over at split {split}");
    }
}

#[test]
fn connection_close_stops_the_pipeline() {
    let mut h = Harness::new();
    let mut conn = h.conn();
    let out = h.feed(
        &mut conn,
        &[b"GET /1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"],
    );
    assert_eq!(bodies(&out), ["/1|"]);
    assert!(out.contains("Connection: close\r\n"));
    assert!(!conn.is_open());
}

#[test]
fn malformed_head_gets_400_and_finishes() {
    let mut h = Harness::new();
    let mut conn = h.conn();
    let out = h.feed(
        &mut conn,
        &[b"GET / HTTP/1.1\r\nHost: h\r\n\r\nBAD\x01 / HTTP/1.1\r\n\r\n"],
    );
    assert!(out.starts_with("HTTP/1.1 200 OK"));
    assert!(out.contains("HTTP/1.1 400 Bad Request\r\n"));
    assert!(!conn.is_open());
    assert_eq!(h.ctx.counters.errors, 1);
    assert_eq!(h.ctx.counters.requests, 1);
}

#[test]
fn http10_keep_alive_is_echoed_and_default_closes() {
    let mut h = Harness::new();
    let mut conn = h.conn();
    let out = h.feed(
        &mut conn,
        &[b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"],
    );
    assert!(out.contains("Connection: keep-alive\r\n"));
    assert!(conn.is_open());
    let out = h.feed(&mut conn, &[b"GET / HTTP/1.0\r\n\r\n"]);
    assert!(out.contains("Connection: close\r\n"));
    assert!(!conn.is_open());
}

#[test]
fn head_gets_length_without_body() {
    let mut h = Harness::new();
    let mut conn = h.conn();
    let out = h.feed(&mut conn, &[b"HEAD /xy HTTP/1.1\r\nHost: h\r\n\r\n"]);
    assert!(out.ends_with("Content-Length: 4\r\n\r\n"), "{out}");
}

#[test]
fn output_backpressure_holds_requests_until_sent() {
    let mut h = Harness::new();
    let mut conn = h.conn();
    let one = b"GET /0123456789012345678901234567890123456789 HTTP/1.1\r\nHost: h\r\n\r\n";
    let many: Vec<u8> = one.iter().copied().cycle().take(one.len() * 2000).collect();
    conn.on_data(&many, &mut h.ctx);
    let max = h.ctx.output_bytes_max;
    assert!(!conn.wants_read(max), "receive pauses at the output bound");
    assert!(h.ctx.counters.requests < 2000);
    // Each send carries at most the bound and one response; the rest is answered as the
    // output drains.
    let mut sends = 0;
    while let Some(act) = conn.next_act(&mut h.ctx) {
        match act {
            Act::Send { buf, offset, .. } => {
                assert!(buf.len() < max + 200);
                sends += 1;
                conn.send_started(OpId::detached(1), offset, h.ctx.now);
                conn.on_sent(Ok(buf.len() as u32), buf, &mut h.ctx);
            }
            Act::Recv { .. } => conn.recv_started(OpId::detached(2)),
            other => panic!("{other:?}"),
        }
    }
    assert!(sends > 1);
    assert_eq!(h.ctx.counters.requests, 2000);
    assert!(conn.wants_read(max) && conn.is_idle());
}

#[test]
fn draining_closes_after_the_last_received_request() {
    let mut h = Harness::new();
    h.ctx.drain = Drain::Draining;
    let mut conn = h.conn();
    let out = h.feed(
        &mut conn,
        &[b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"],
    );
    assert_eq!(bodies(&out), ["/1|", "/2|"]);
    assert_eq!(out.matches("Connection: close").count(), 1);
    assert!(!conn.is_open());
}

#[test]
fn idle_connection_holds_no_buffer() {
    let mut h = Harness::new();
    let mut conn = h.conn();
    h.feed(&mut conn, &[GET]);
    assert_eq!(conn.input.capacity() + conn.output.capacity(), 0);
    h.feed(&mut conn, &[b"GET / HTTP/1.1\r\nHo"]);
    assert!(conn.input.capacity() > 0, "a partial request is kept");
    h.feed(&mut conn, &[b"st: h\r\n\r\n"]);
    assert_eq!(conn.input.capacity() + conn.output.capacity(), 0);
}

#[test]
fn chunked_bodies_are_decoded_across_any_split_and_pipelined_after() {
    let stream = b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
        4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: dropped\r\n\r\n\
        GET /next HTTP/1.1\r\nHost: h\r\n\r\n";
    for split in 0..=stream.len() {
        let mut h = Harness::new();
        let mut conn = h.conn();
        let (a, b) = stream.split_at(split);
        let out = h.feed(&mut conn, &[a, b]);
        assert_eq!(bodies(&out), ["/c|Wikipedia", "/next|"], "split at {split}");
        assert!(conn.is_idle() && conn.is_open(), "split {split}");
    }
}

#[test]
fn chunked_body_fed_byte_by_byte() {
    let stream =
        b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let mut h = Harness::new();
    let mut conn = h.conn();
    let chunks: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(bodies(&h.feed(&mut conn, &chunks)), ["/c|abc"]);
}

#[test]
fn bad_chunks_are_refused_with_400_and_linger() {
    let mut h = Harness::new();
    let mut conn = h.conn();
    let out = h.feed(
        &mut conn,
        &[
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"zz\r\n",
        ],
    );
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    assert!(out.contains("invalid chunk size"));
    assert!(h.acts().contains(&"ShutWrite".to_string()), "it lingers");
}

#[test]
fn chunked_body_over_the_limit_gets_413() {
    let mut h = Harness::new();
    h.ctx.limits.request_body_bytes_max = 8;
    let mut conn = h.conn();
    let out = h.feed(
        &mut conn,
        &[b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n4\r\n"],
    );
    assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
}

#[test]
fn expect_100_continue_is_answered_once_before_the_body() {
    for framing in ["Content-Length: 3", "Transfer-Encoding: chunked"] {
        let body: &[u8] = if framing.starts_with("Content") {
            b"abc"
        } else {
            b"3\r\nabc\r\n0\r\n\r\n"
        };
        let head =
            format!("POST /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n{framing}\r\n\r\n");
        let mut h = Harness::new();
        let mut conn = h.conn();
        let out = h.feed(&mut conn, &[head.as_bytes(), b""]);
        assert_eq!(out, "HTTP/1.1 100 Continue\r\n\r\n", "{framing}");
        let out = h.feed(&mut conn, &[&body[..1], &body[1..]]);
        assert!(
            out.starts_with("HTTP/1.1 200 OK"),
            "{framing}: no second 100: {out}"
        );
        assert_eq!(bodies(&out), ["/e|abc"]);
        // Head and body together: no 100 is needed.
        let mut conn = h.conn();
        let whole = [head.as_bytes(), body].concat();
        assert!(h.feed(&mut conn, &[&whole]).starts_with("HTTP/1.1 200 OK"));
    }
}

#[test]
fn timers_follow_what_the_connection_waits_for() {
    let t = Timeouts {
        request_head: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        send: Duration::from_secs(30),
        body_rate_min: 100,
        send_rate_min: 0,
        handler: Duration::from_secs(30),
    };
    let start = Instant::now();
    let at = |s: u64| start + Duration::from_secs(s);
    let mut h = Harness::new();
    h.ctx.now = start;
    let mut conn = h.conn();
    // A new connection that sends nothing is closed, without a word, at the head timeout.
    assert_eq!(conn.expired(at(9), &t), None);
    assert_eq!(conn.expired(at(10), &t), Some(Expiry::Close));
    // The first request's partial head: 408 at the head timeout from the accept.
    h.ctx.now = at(5);
    h.feed(&mut conn, &[b"GET / HTTP/1.1\r\n"]);
    assert_eq!(conn.expired(at(9), &t), None);
    assert_eq!(conn.expired(at(10), &t), Some(Expiry::RequestTimeout));
    // Answered: idle from then on, closed at the idle timeout.
    h.ctx.now = at(6);
    h.feed(&mut conn, &[b"Host: h\r\n\r\n"]);
    assert_eq!(conn.expired(at(65), &t), None);
    assert_eq!(conn.expired(at(66), &t), Some(Expiry::Close));
    // A later request's partial head: 408 at the head timeout from its first byte.
    h.ctx.now = at(30);
    h.feed(&mut conn, &[b"GET / HT"]);
    assert_eq!(conn.expired(at(39), &t), None);
    assert_eq!(conn.expired(at(40), &t), Some(Expiry::RequestTimeout));
    h.ctx.now = at(31);
    h.feed(&mut conn, &[b"TP/1.1\r\nHost: h\r\n\r\n"]);
    // A body arriving slower than 100 B/s over a 5 s window: 408.
    h.ctx.now = at(70);
    h.feed(
        &mut conn,
        &[b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n"],
    );
    h.feed(&mut conn, &[&[b'x'; 499]]);
    assert_eq!(conn.expired(at(75), &t), Some(Expiry::RequestTimeout));
    h.feed(&mut conn, &[b"x"]);
    assert_eq!(
        conn.expired(at(75), &t),
        None,
        "500 bytes in 5 s is the minimum"
    );
    conn.roll_body_window(at(75));
    assert_eq!(conn.expired(at(79), &t), None);
    assert_eq!(conn.expired(at(80), &t), Some(Expiry::RequestTimeout));
}

#[test]
fn time_out_answers_408_and_lingers() {
    let mut h = Harness::new();
    let mut conn = h.conn();
    h.feed(&mut conn, &[b"GET / HTT"]);
    h.acts();
    conn.time_out(&mut h.ctx);
    let out = h.run(&mut conn);
    assert!(out.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{out}");
    assert!(out.contains("Connection: close"));
    assert_eq!(h.acts(), ["Send", "ShutWrite"], "it lingers");
    assert_eq!(
        h.ctx.counters.responses,
        [0, 0, 0, 1, 0],
        "counted once, as a 4xx"
    );
    assert_eq!(h.ctx.counters.timeouts, 1);
}

#[test]
fn every_refusal_path_counts_its_status_class_once() {
    let cases: &[&[&[u8]]] = &[
        &[b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"],
        &[b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
        &[
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"zz\r\n",
        ],
    ];
    for chunks in cases {
        let mut h = Harness::new();
        let mut conn = h.conn();
        let out = h.feed(&mut conn, chunks);
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
        assert_eq!(h.ctx.counters.responses, [0, 0, 0, 1, 0], "{chunks:?}");
        assert_eq!(h.ctx.counters.errors, 1, "{chunks:?}");
    }
}

#[test]
fn requests_after_connection_close_are_dropped_and_it_closes() {
    let mut h = Harness::new();
    let mut conn = h.conn();
    h.feed(&mut conn, &[GET_CLOSE]);
    assert!(
        !h.acts().contains(&"ShutWrite".to_string()),
        "nothing more was sent: a plain close"
    );
    let mut conn = h.conn();
    let two = [GET_CLOSE, GET].concat();
    let out = h.feed(&mut conn, &[&two]);
    assert_eq!(out.matches("HTTP/1.1 200").count(), 1);
    assert!(!conn.is_open());
}

/// Delivers `bytes` split at `split`, then the end of the stream; returns what was sent.
fn feed_then_end(h: &mut Harness, conn: &mut Conn, bytes: &[u8], split: usize) -> String {
    let (a, b) = bytes.split_at(split);
    let mut out = h.feed(conn, &[a, b]);
    h.ring.end(conn, RecvEnd::Eof, &mut h.ctx);
    out.push_str(&h.run(conn));
    out
}

#[test]
fn end_of_input_mid_request_is_answered_400_at_every_split() {
    let cut: &[&[u8]] = &[
        b"\r\n",
        b"GET /a HTTP/1.1\r\nHost: h\r\n",
        b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab",
        b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n",
    ];
    for bytes in cut {
        for split in 0..=bytes.len() {
            let mut h = Harness::new();
            let mut conn = h.conn();
            let out = feed_then_end(&mut h, &mut conn, bytes, split);
            let what = String::from_utf8_lossy(bytes);
            assert!(
                out.starts_with("HTTP/1.1 400 "),
                "{what:?} at {split}: {out:?}"
            );
            assert!(out.contains("cut short"), "{what:?} at {split}: {out:?}");
            assert!(!conn.is_open(), "{what:?} at {split}");
            assert!(
                h.acts()
                    .ends_with(&["Close".to_string(), "Free".to_string()]),
                "{what:?} at {split}: nothing left to wait for"
            );
            assert_eq!(h.ctx.counters.responses[3], 1, "counted as a 4xx");
        }
    }
}

#[test]
fn end_of_input_after_whole_requests_answers_them_and_finishes() {
    let bytes = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n";
    for split in 0..=bytes.len() {
        let mut h = Harness::new();
        let mut conn = h.conn();
        let out = feed_then_end(&mut h, &mut conn, bytes, split);
        assert_eq!(bodies(&out), ["/a|", "/b|"], "split at {split}");
        assert!(h
            .acts()
            .ends_with(&["Close".to_string(), "Free".to_string()]));
    }
}

#[test]
fn end_of_input_while_output_is_backed_up_answers_the_rest_first() {
    let mut h = Harness::new();
    h.ctx.output_bytes_max = 64;
    let mut conn = Conn::new(0, Desc::Plain(-1), None, h.ctx.now);
    let request = b"GET /abcdefghijklmnopqrstuvwxyz HTTP/1.1\r\nHost: h\r\n\r\n";
    conn.on_data(&request.repeat(4), &mut h.ctx);
    assert_eq!(conn.wait, Wait::Output, "paused at the output bound");
    conn.on_recv_end(RecvEnd::Eof, &mut h.ctx);
    assert!(conn.is_open(), "the held-back requests are still due");
    let out = h.run(&mut conn);
    assert_eq!(bodies(&out).len(), 4);
    assert!(!conn.is_open());
    assert!(!out.contains(" 400 "));
}

#[test]
fn every_state_but_closing_has_a_deadline() {
    let mut h = Harness::new();
    let t = h.ctx.timeouts;
    let start = h.ctx.now;
    let late = start + Duration::from_secs(3600);
    let mut conn = h.conn();
    for wait in [
        Wait::First { since: start },
        Wait::Idle { since: start },
        Wait::Head { since: start },
        Wait::Body {
            window: start,
            bytes: 0,
        },
    ] {
        conn.wait = wait;
        assert!(conn.expired(late, &t).is_some(), "{wait:?}");
    }
    for then in [AfterOutput::Close, AfterOutput::Linger] {
        conn.phase = Phase::Finishing(then);
        assert_eq!(
            conn.expired(late, &t),
            Some(Expiry::Close),
            "finishing, nothing to send"
        );
    }
    conn.phase = Phase::Lingering {
        shut: Shut::Done,
        until: start,
    };
    assert_eq!(conn.expired(late, &t), Some(Expiry::Close));
    conn.send = Sending::InFlight {
        op: OpId::detached(1),
        offset: 0,
        since: start,
    };
    conn.phase = Phase::Open;
    assert_eq!(
        conn.expired(late, &t),
        Some(Expiry::Abort),
        "a send that never ends"
    );
}

#[test]
fn a_large_body_is_sent_from_the_handlers_buffer_not_kept_by_the_worker() {
    let mut h = Harness::new();
    let mut conn = Conn::new(0, Desc::Plain(-1), None, h.ctx.now);
    let body = vec![b'z'; 3 * output::BODY_COPY_BYTES_MAX];
    let mut request = format!(
        "POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request.extend_from_slice(b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n");
    conn.on_data(&request, &mut h.ctx);
    // The head, then the body as the handler wrote it, then the next response.
    let Some(Act::Send { buf: head, .. }) = conn.next_act(&mut h.ctx) else {
        panic!("the head is sent first")
    };
    assert!(head.starts_with(b"HTTP/1.1 200 OK\r\n") && head.ends_with(b"\r\n\r\n"));
    conn.send_started(OpId::detached(1), 0, h.ctx.now);
    conn.on_sent(Ok(head.len() as u32), head, &mut h.ctx);
    let Some(Act::Send { buf: sent, .. }) = conn.next_act(&mut h.ctx) else {
        panic!("then the body")
    };
    assert_eq!(sent.len(), "/big|".len() + body.len());
    assert!(
        h.ctx.res.as_ref().unwrap().body_capacity() <= crate::pool::BUF_BYTES,
        "the worker's response keeps no large buffer"
    );
    conn.send_started(OpId::detached(2), 0, h.ctx.now);
    conn.on_sent(Ok(sent.len() as u32), sent, &mut h.ctx);
    let rest = h.run(&mut conn);
    assert_eq!(bodies(&rest), ["/after|"]);
}

#[test]
fn a_short_send_resumes_where_it_stopped() {
    let mut h = Harness::new();
    let mut conn = Conn::new(0, Desc::Plain(-1), None, h.ctx.now);
    conn.on_data(GET, &mut h.ctx);
    let Some(Act::Send { buf, offset: 0, .. }) = conn.next_act(&mut h.ctx) else {
        panic!("a send")
    };
    let len = buf.len();
    conn.send_started(OpId::detached(1), 0, h.ctx.now);
    conn.on_sent(Ok(10), buf, &mut h.ctx);
    let Some(Act::Send { buf, offset, .. }) = conn.next_act(&mut h.ctx) else {
        panic!("the rest of it")
    };
    assert_eq!((buf.len(), offset), (len, 10));
    conn.send_started(OpId::detached(2), offset, h.ctx.now);
    conn.on_sent(Ok((len - 10) as u32), buf, &mut h.ctx);
    assert_eq!(h.ctx.counters.bytes_out, len as u64);
    assert!(conn.is_idle());
}

#[test]
fn the_send_rate_is_judged_per_window_at_its_edge() {
    let five = Duration::from_secs(5);
    assert!(kept_up(0, 5120, five, 1024), "exactly the minimum");
    assert!(!kept_up(0, 5119, five, 1024), "one byte short");
    assert!(
        kept_up(10_000, 15_120, five, 1024),
        "counted from the last sample"
    );
    assert!(
        !kept_up(0, 5120, Duration::from_millis(5100), 1024),
        "a longer window owes more"
    );
    assert!(kept_up(7, 7, five, 0), "no minimum");
    assert!(
        !kept_up(9, 3, five, 1),
        "taken never goes down; a bogus sample owes all"
    );
}

#[test]
fn a_client_owing_bytes_is_sampled_each_window_and_judged_at_the_edge() {
    let h = Harness::new();
    let t = Timeouts {
        send_rate_min: 1024,
        ..h.ctx.timeouts
    };
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut conn = Conn::new(0, Desc::Plain(-1), None, t0);
    // Asks for a sample when one is due, and judges the sample's result.
    let sample = |conn: &mut Conn, now: Instant, unacked: Option<u64>| {
        assert_eq!(conn.sample_act(), Some(Act::SampleSendQueue));
        conn.judge_sample(now, unacked, &t)
    };
    assert!(!conn.send_sample_due(t0, &t), "owes nothing");
    conn.sent += SEND_WATCH_BYTES_MIN - 1;
    assert!(!conn.send_sample_due(t0, &t), "owes too little to watch");
    conn.sent += 1;
    assert!(
        conn.send_sample_due(t0, &t),
        "the kernel may hold 64 KiB of it"
    );
    assert!(!conn.send_sample_due(t0, &t), "one sample at a time");
    let owed = SEND_WATCH_BYTES_MIN;
    assert_eq!(
        sample(&mut conn, t0, Some(owed)),
        None,
        "a first sample judges nothing"
    );
    assert!(
        !conn.send_sample_due(at(4999), &t),
        "before the window ends"
    );
    assert!(conn.send_sample_due(at(5000), &t));
    assert_eq!(
        sample(&mut conn, at(5000), Some(owed - 5120)),
        None,
        "exactly the rate"
    );
    assert!(conn.send_sample_due(at(10_000), &t));
    assert_eq!(
        sample(&mut conn, at(10_000), Some(owed - 5120 - 5119)),
        Some(Expiry::Abort),
        "one byte short"
    );
    // A client that took everything is no longer watched; a failed sample starts over.
    let mut conn = Conn::new(0, Desc::Plain(-1), None, t0);
    conn.sent += owed;
    assert!(conn.send_sample_due(t0, &t));
    assert_eq!(sample(&mut conn, t0, Some(0)), None);
    assert!(!conn.send_sample_due(at(60_000), &t), "nothing owed");
    conn.sent += owed;
    assert!(conn.send_sample_due(at(60_000), &t));
    assert_eq!(sample(&mut conn, at(60_000), None), None);
    assert!(
        conn.send_sample_due(at(60_100), &t),
        "sampled again at the next tick"
    );
    // No minimum, no watch.
    let off = Timeouts {
        send_rate_min: 0,
        ..t
    };
    let mut conn = Conn::new(0, Desc::Plain(-1), None, t0);
    conn.sent += 10 * owed;
    assert!(!conn.send_sample_due(t0, &off));
}

#[test]
fn a_sample_in_flight_keeps_the_slot_until_it_ends() {
    let mut h = Harness::new();
    h.ctx.timeouts.send_rate_min = 1024;
    let mut conn = h.conn();
    conn.sent += SEND_WATCH_BYTES_MIN;
    assert!(conn.on_tick(&mut h.ctx));
    assert_eq!(conn.next_act(&mut h.ctx), Some(Act::SampleSendQueue));
    conn.sampling_with(OpId::detached(7));
    // The connection is torn down meanwhile: everything ends but the sample.
    h.ctx.drain = Drain::IdleClosing;
    let acts: Vec<Act> = std::iter::from_fn(|| {
        let act = conn.next_act(&mut h.ctx)?;
        match &act {
            Act::Cancel(_) => conn.on_recv_end(RecvEnd::Cancelled, &mut h.ctx),
            Act::Close => conn.on_closed(),
            _ => {}
        }
        Some(act)
    })
    .collect();
    assert!(!acts.contains(&Act::Free), "{acts:?}");
    conn.on_send_sample(Some(0), &mut h.ctx);
    assert_eq!(conn.next_act(&mut h.ctx), Some(Act::Free));
}
