//! Micro-benchmarks of the request parser and the response encoder (criterion):
//! `cargo bench --bench http`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ringmaster::http::date::DateCache;
use ringmaster::http::request::HEADERS_MAX;
use ringmaster::http::response::{encode, ConnectionHeader};
use ringmaster::http::{parse_head, HeadLimits, Parsed, Response};
use std::mem::MaybeUninit;

const LIMITS: HeadLimits = HeadLimits {
    request_line_bytes_max: 8 * 1024,
    request_fields_bytes_max: 16 * 1024,
    request_body_bytes_max: 1 << 20,
};

/// What wrk sends.
const WRK: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:3000\r\n\r\n";
/// What a browser sends.
const BROWSER: &[u8] = b"GET /search?q=ringmaster&lang=en HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Connection: keep-alive\r\n\
Cookie: session=0123456789abcdef0123456789abcdef; theme=dark\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-Site: none\r\n\r\n";

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_head");
    for (name, input) in [("wrk", WRK), ("browser", BROWSER)] {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut headers = [const { MaybeUninit::uninit() }; HEADERS_MAX];
                match parse_head(black_box(input), &mut headers, &LIMITS) {
                    Ok(Parsed::Complete(head)) => head.head_len,
                    other => panic!("{other:?}"),
                }
            })
        });
    }
    group.finish();
}

fn encode_response(c: &mut Criterion) {
    let date = DateCache::new();
    let mut res = Response::new();
    res.header("Content-Type", "text/plain").body("Hello World");
    let mut out = Vec::with_capacity(4096);
    c.bench_function("encode hello world", |b| {
        b.iter(|| {
            out.clear();
            encode(
                &mut out,
                black_box(&res),
                date.line(),
                false,
                ConnectionHeader::Omit,
            );
            out.len()
        })
    });
}

/// An async Hello World that answers at its first poll, as `Server::new_async` runs it.
struct AsyncHello;

impl ringmaster::AsyncHandler for AsyncHello {
    type Future = std::future::Ready<Response>;

    fn call(&self, _req: ringmaster::OwnedRequest) -> Self::Future {
        let mut res = Response::new();
        res.header("Content-Type", "text/plain").body("Hello World");
        std::future::ready(res)
    }
}

/// A connection answering 16 pipelined requests, with a sync and an async Hello World: what
/// the async path (owned request, task slot, response by value) costs per request.
fn connection(c: &mut Criterion) {
    static SYNC: ringmaster::HelloWorld = ringmaster::HelloWorld;
    static ASYNC: ringmaster::Async<AsyncHello> = ringmaster::Async(AsyncHello);
    let batch = WRK.repeat(16);
    let mut group = c.benchmark_group("connection x16");
    group.throughput(Throughput::Elements(16));
    let mut sync = ringmaster::drive::Driver::new(&SYNC);
    group.bench_function("sync hello", |b| b.iter(|| sync.feed(black_box(&batch))));
    let mut asynchronous = ringmaster::drive::Driver::new(&ASYNC);
    group.bench_function("async hello", |b| {
        b.iter(|| asynchronous.feed(black_box(&batch)))
    });
    group.finish();
}

criterion_group!(benches, parse, encode_response, connection);
criterion_main!(benches);
