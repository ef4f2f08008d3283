//! `tower` services as handlers (feature `tower`, on by default): any
//! `tower::Service<http::Request<Full<Bytes>>>` answering an `http::Response<B>` (`B` any
//! `http_body::Body`) serves through [`Tower`] with [`Server::new_async`](crate::Server::new_async),
//! so `tower` and `tower-http` layers stack on a ringmaster server. `examples/tower.rs`
//! shows a stack: tracing, request ids, CORS, compression and a timeout.
//!
//! The service runs on the worker's executor, on its ring; no other runtime exists there.
//! - Layers that only transform requests, responses and bodies work as they are:
//!   `tower-http`'s `TraceLayer`, `SetRequestIdLayer`/`PropagateRequestIdLayer`,
//!   `CorsLayer`, `CompressionLayer`, `SetResponseHeaderLayer`, `NormalizePathLayer`,
//!   `tower`'s `ServiceBuilder`, `MapRequest`/`MapResponse`, `Buffer`-less routers (axum's
//!   `Router` is a `Service` too, as long as its handlers need no tokio).
//! - Layers that need another runtime's timer or reactor do not: `tower::timeout`,
//!   `tower_http::timeout`, `tower::limit::RateLimit` (tokio's `sleep`) panic outside a tokio
//!   runtime, and `tower::buffer` spawns on tokio. [`RingTimeoutLayer`] is the timeout on the
//!   ring's clock; `--handlers-max` (`Limits::handlers_max`) bounds the requests in flight per worker.
//!
//! A request reaches the service with its body read whole (bounded by
//! `request_body_bytes_max`) and its client's address, when known, as a [`PeerAddr`]
//! extension. A response body of up to [`COLLECT_BYTES_MAX`] is sent in one piece; a larger
//! or longer one is streamed frame by frame through the connection's backpressure
//! ([`Response::stream`]). A service error, or a body error before anything was sent, is a
//! `500` and a log line; a body error after is a connection cut short, as for any stream.
//!
//! See [`Tower`]'s example for a service served, and [`RingTimeoutLayer::new`]'s for a
//! layer stacked on one.

use crate::http::{OwnedRequest, Response};
use crate::log::log_limited;
use bytes::{Buf, Bytes};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use std::fmt::Display;
use std::future::{poll_fn, Future};
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;
use tower_service::Service;

/// Response bodies up to this many bytes are collected and sent in one piece; larger ones
/// are streamed.
///
/// See [`Tower`]'s example (its short bodies are collected) and `examples/tower.rs` (its
/// `/big` is streamed).
pub const COLLECT_BYTES_MAX: usize = 64 * 1024;

/// The client's address, in a request's extensions when the worker looked it up
/// ([`Config::client_addresses`](crate::Config::client_addresses), or an access log).
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use ringmaster::tower::PeerAddr;
///
/// // Who asked, for a service's log line.
/// fn client(req: &http::Request<Full<Bytes>>) -> String {
///     match req.extensions().get::<PeerAddr>() {
///         Some(PeerAddr(ip)) => ip.to_string(),
///         None => "-".to_string(), // not looked up
///     }
/// }
///
/// let mut req = http::Request::new(Full::new(Bytes::new()));
/// assert_eq!(client(&req), "-");
/// req.extensions_mut().insert(PeerAddr("192.0.2.7".parse().unwrap()));
/// assert_eq!(client(&req), "192.0.2.7");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub IpAddr);

/// A `tower` service as an [`AsyncHandler`](crate::AsyncHandler): cloned for each request
/// (as `tower` services are), made ready, called.
///
/// ```no_run
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use ringmaster::tower::Tower;
///
/// let service = tower::service_fn(|req: http::Request<Full<Bytes>>| async move {
///     let body = format!("you asked for {}\n", req.uri().path());
///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body))))
/// });
/// let server = ringmaster::Server::new_async(Tower::new(service));
/// std::process::exit(ringmaster::cli::run(ringmaster::app!(), server));
/// ```
#[derive(Clone, Debug)]
pub struct Tower<S> {
    service: S,
}

impl<S> Tower<S> {
    /// Serves with `service`.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::Full;
    /// use ringmaster::tower::Tower;
    /// use ringmaster::{Async, Router};
    ///
    /// // A tower service on one prefix of a router, beside other handlers.
    /// let echo = tower::service_fn(|req: http::Request<Full<Bytes>>| async move {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(req.into_body()))
    /// });
    /// let router = Router::new().mount("/echo", Async(Tower::new(echo)));
    /// # let _ = router;
    /// ```
    pub fn new(service: S) -> Tower<S> {
        Tower { service }
    }
}

impl<S, B> crate::AsyncHandler for Tower<S>
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>> + Clone + 'static,
    S::Error: Display,
    S::Future: 'static,
    B: Body + 'static,
    B::Error: Display,
{
    type Future = Pin<Box<dyn Future<Output = Response>>>;

    fn call(&self, req: OwnedRequest) -> Self::Future {
        let mut service = self.service.clone();
        Box::pin(async move {
            let req = match to_request(&req) {
                Ok(req) => req,
                // What this server's parser lets through but `http` refuses (`<`, `>` or a
                // backtick in the path, a target of 64 KiB): the client's doing, not the
                // service's, so `400`, and nothing logged for a client to flood.
                Err(e) => {
                    let mut res = Response::new();
                    res.status(400)
                        .header("Content-Type", "text/plain")
                        .body(format!("the request cannot be served: {e}\n"));
                    return res;
                }
            };
            if let Err(e) = poll_fn(|cx| service.poll_ready(cx)).await {
                return failed("the service is not ready", &e);
            }
            match service.call(req).await {
                Ok(res) => from_response(res).await,
                Err(e) => failed("the service failed", &e),
            }
        })
    }
}

/// The request as the service takes it: its body whole, its client's address as an
/// extension.
fn to_request(req: &OwnedRequest) -> Result<http::Request<Full<Bytes>>, http::Error> {
    let mut out = req.to_http()?.map(|body| Full::new(Bytes::from(body)));
    if let Some(ip) = req.peer_addr() {
        out.extensions_mut().insert(PeerAddr(ip));
    }
    Ok(out)
}

/// A `500`, logged with `what` and `e`.
fn failed(what: &str, e: &dyn Display) -> Response {
    log_limited!("tower: {what} ({e}); answered 500");
    let mut res = Response::new();
    res.status(500)
        .header("Content-Type", "text/plain")
        .body("the handler failed; see the server's log\n");
    res
}

/// The service's response: collected when it ends within [`COLLECT_BYTES_MAX`], streamed
/// otherwise.
async fn from_response<B>(res: http::Response<B>) -> Response
where
    B: Body + 'static,
    B::Error: Display,
{
    let (parts, body) = res.into_parts();
    let mut out = Response::from(http::Response::from_parts(parts, Vec::<u8>::new()));
    let mut body = Box::pin(body);
    let mut collected = Vec::new();
    while collected.len() <= COLLECT_BYTES_MAX {
        match body.frame().await {
            None => {
                out.body(collected);
                return out;
            }
            Some(Err(e)) => return failed("the response body failed", &e),
            Some(Ok(frame)) => {
                // Trailers have no place in a response ringmaster frames: dropped.
                if let Ok(mut data) = frame.into_data() {
                    collected.extend_from_slice(&data.copy_to_bytes(data.remaining()));
                }
            }
        }
    }
    let length = body
        .size_hint()
        .exact()
        .map(|rest| rest + collected.len() as u64);
    out.stream(length, move |mut writer| async move {
        writer.write(&collected).await?;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| std::io::Error::other(e.to_string()))?;
            if let Ok(mut data) = frame.into_data() {
                writer.write(&data.copy_to_bytes(data.remaining())).await?;
            }
        }
        Ok(())
    });
    out
}

/// A timeout on the ring's clock (`tower`'s and `tower-http`'s need tokio's): a request
/// whose service has not answered within the limit gets `503 Service Unavailable` with an
/// empty body (so the body type must have a `Default`), and its service's future is dropped.
///
/// See [`RingTimeoutLayer::new`]'s example and `examples/tower.rs`.
#[derive(Clone, Copy, Debug)]
pub struct RingTimeoutLayer {
    limit: Duration,
}

impl RingTimeoutLayer {
    /// Answers `503` to a request not answered within `limit`.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::Full;
    /// use ringmaster::tower::{RingTimeoutLayer, Tower};
    /// use std::convert::Infallible;
    /// use std::time::Duration;
    /// use tower::ServiceBuilder;
    ///
    /// type Res = http::Response<Full<Bytes>>;
    ///
    /// async fn report(_: http::Request<Full<Bytes>>) -> Result<Res, Infallible> {
    ///     ringmaster::rt::sleep(Duration::from_secs(5)).await; // a slow report
    ///     Ok(http::Response::new(Full::new(Bytes::from("done\n"))))
    /// }
    ///
    /// // `503` after one second, on the worker's ring (tower's `TimeoutLayer` needs tokio's).
    /// let service = ServiceBuilder::new()
    ///     .layer(RingTimeoutLayer::new(Duration::from_secs(1)))
    ///     .service_fn(report);
    /// let server = ringmaster::Server::new_async(Tower::new(service));
    /// # let _ = server;
    /// ```
    pub fn new(limit: Duration) -> RingTimeoutLayer {
        RingTimeoutLayer { limit }
    }
}

impl<S> tower_layer::Layer<S> for RingTimeoutLayer {
    type Service = RingTimeout<S>;

    fn layer(&self, inner: S) -> RingTimeout<S> {
        RingTimeout {
            inner,
            limit: self.limit,
        }
    }
}

/// The service [`RingTimeoutLayer`] makes.
///
/// See [`RingTimeoutLayer::new`]'s example and `examples/tower.rs`.
#[derive(Clone, Debug)]
pub struct RingTimeout<S> {
    inner: S,
    limit: Duration,
}

impl<S, Req, B> Service<Req> for RingTimeout<S>
where
    S: Service<Req, Response = http::Response<B>>,
    S::Future: 'static,
    B: Default,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<B>, S::Error>>>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let answer = self.inner.call(req);
        let limit = self.limit;
        Box::pin(async move {
            match crate::rt::timeout(limit, answer).await {
                Ok(result) => result,
                Err(_) => {
                    let mut res = http::Response::new(B::default());
                    *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                    Ok(res)
                }
            }
        })
    }
}
