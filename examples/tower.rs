//! A `tower` stack on ringmaster: `tower-http`'s tracing, request ids (a UUID set when the
//! client sent none, and echoed in the response), CORS and gzip compression, and
//! ringmaster's timeout on the ring's clock, around a `service_fn` that routes three paths.
//!
//! ```text
//! cargo run --release --example tower -- --listen 127.0.0.1:3000
//! curl -i localhost:3000/                        # x-request-id in the answer
//! curl -i -H 'Accept-Encoding: gzip' localhost:3000/big --output -   # gzip, streamed
//! curl -i localhost:3000/slow?ms=500             # 503 after the 200 ms timeout
//! ```

use bytes::Bytes;
use http_body_util::Full;
use ringmaster::tower::{RingTimeoutLayer, Tower};
use std::convert::Infallible;
use std::time::Duration;
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::cors::CorsLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// The routes: `/` a greeting, `/big` 256 KiB of text, `/slow?ms=N` an answer after N ms of
/// the ring's timer.
async fn route(req: http::Request<Full<Bytes>>) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let body = match req.uri().path() {
        "/" => "hello from tower\n".to_string(),
        "/big" => "all work and no play makes a long body\n".repeat(256 * 1024 / 40),
        "/slow" => {
            let ms = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            ringmaster::rt::sleep(Duration::from_millis(ms)).await;
            format!("slept {ms} ms\n")
        }
        _ => {
            let mut res = http::Response::new(Full::new(Bytes::from("not found\n")));
            *res.status_mut() = http::StatusCode::NOT_FOUND;
            return Ok(res);
        }
    };
    let mut res = http::Response::new(Full::new(Bytes::from(body)));
    res.headers_mut()
        .insert("content-type", http::HeaderValue::from_static("text/plain"));
    Ok(res)
}

fn main() {
    let header = http::HeaderName::from_static("x-request-id");
    let service = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(header.clone(), MakeRequestUuid))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::new(header))
        .layer(CorsLayer::permissive())
        .layer(CompressionLayer::new())
        .layer(RingTimeoutLayer::new(Duration::from_millis(200)))
        .service_fn(route);
    let server = ringmaster::Server::new_async(Tower::new(service));
    std::process::exit(ringmaster::cli::run(ringmaster::app!(), server));
}
