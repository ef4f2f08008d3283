//! A request an async handler owns: the head's bytes and the body copied into one pooled
//! buffer, and where each part lies in it, so that it outlives the receive buffer it was
//! parsed from without a heap allocation per request once the pool is warm.
//!
//! The header fields are not indexed: the parser checked every line of the head, so a
//! field lookup scans the lines again (a `name: value` split), which costs less than
//! keeping an index for every request whether or not its handler reads a field.

use super::request::{below, path_of, query_of, Head, TargetForm, Version};
use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::net::IpAddr;

/// Where a part lies in an [`OwnedRequest`]'s buffer.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Span {
    at: u32,
    len: u32,
}

/// Buffers an [`OwnedRequest`] gives back when dropped, for the next one; at most this many.
const POOLED_MAX: usize = 256;
/// A buffer is made with room for at least this many bytes.
const BUF_BYTES_MIN: usize = 2048;
/// A buffer that grew past this is freed rather than pooled.
const POOLED_BYTES_MAX: usize = 64 * 1024;

thread_local! {
    /// The parts of this thread's dropped requests, for the next ones.
    /// Boxed: a handle moves the box, never the parts.
    #[allow(clippy::vec_box)]
    static POOL: RefCell<Vec<Box<Parts>>> = const { RefCell::new(Vec::new()) };
}

/// A request as an async handler sees it: owned, so that the handler's future may keep it
/// across awaits. The same accessors as [`Request`](super::Request).
///
/// A handle to pooled parts: moving it (into the handler's future, which is moved into the
/// worker's task table) moves one pointer, and the parts are filled where they lie.
///
/// See the [crate's second example](crate) and [`rt`](crate::rt)'s.
#[derive(Debug)]
pub struct OwnedRequest {
    /// Taken out only by `drop`.
    p: ManuallyDrop<Box<Parts>>,
}

/// What an [`OwnedRequest`] holds.
#[derive(Debug)]
struct Parts {
    /// The head's bytes as received (request line and fields), then the body, then the
    /// names of the route's parameters (a router's).
    buf: Vec<u8>,
    head_len: usize,
    body_end: usize,
    /// A router's route parameters: name and value (the value lies in the target).
    params: Vec<(Span, Span)>,
    /// The length of a mount's prefix taken off the target (0 for none).
    base: u32,
    method: Span,
    /// `None` for the `/` of an absolute-form target with an empty path (not in the bytes).
    target: Option<Span>,
    host: Option<Span>,
    form: TargetForm,
    version: Version,
    /// The field lines: from the first field's name to the end of the last line (its CRLF
    /// excluded).
    fields: Span,
    /// The body as it arrives, when the handler asked for it so.
    reader: Option<super::BodyReader>,
    /// The client's address, when it was looked up.
    peer: Option<IpAddr>,
}

impl Parts {
    fn empty() -> Box<Parts> {
        Box::new(Parts {
            buf: Vec::new(),
            head_len: 0,
            body_end: 0,
            params: Vec::new(),
            base: 0,
            method: Span::default(),
            target: None,
            host: None,
            form: TargetForm::Origin,
            version: Version::Http11,
            fields: Span::default(),
            reader: None,
            peer: None,
        })
    }
}

/// Where `part` lies within `base`, when it does.
fn span_in(base: &[u8], part: &[u8]) -> Option<Span> {
    let start = (part.as_ptr() as usize).checked_sub(base.as_ptr() as usize)?;
    (start + part.len() <= base.len()).then_some(Span {
        at: start as u32,
        len: part.len() as u32,
    })
}

impl OwnedRequest {
    /// Copies `head` (parsed from `head_bytes`, which it borrows) and `body`, from the client
    /// at `peer` when it was looked up.
    #[inline]
    pub(crate) fn new(
        head_bytes: &[u8],
        head: &Head<'_>,
        body: &[u8],
        peer: Option<IpAddr>,
    ) -> OwnedRequest {
        let mut p = POOL
            .try_with(|pool| pool.try_borrow_mut().ok().and_then(|mut p| p.pop()))
            .ok()
            .flatten()
            .unwrap_or_else(Parts::empty);
        let head_bytes = &head_bytes[..head.head_len];
        // A new buffer starts large enough for most requests, so that it is reused as is.
        p.buf.clear();
        p.buf
            .reserve((head_bytes.len() + body.len()).max(BUF_BYTES_MIN));
        p.buf.extend_from_slice(head_bytes);
        p.buf.extend_from_slice(body);
        let span = |part: &[u8]| span_in(head_bytes, part).unwrap_or_default();
        // The fields follow the request line and its CRLF, up to the blank line's CRLF.
        let line = span(head.request_line());
        let fields_at = (line.at + line.len + 2).min(head.head_len as u32);
        let fields_end = (head.head_len as u32).saturating_sub(2).max(fields_at);
        p.head_len = head.head_len;
        p.body_end = p.buf.len();
        p.params.clear();
        p.base = 0;
        p.method = span(head.method.as_bytes());
        p.target = span_in(head_bytes, head.target.as_bytes());
        p.host = head.host.map(span);
        p.form = head.target_form;
        p.version = head.version;
        p.fields = Span {
            at: fields_at,
            len: fields_end - fields_at,
        };
        p.reader = None;
        p.peer = peer;
        OwnedRequest {
            p: ManuallyDrop::new(p),
        }
    }

    /// Hands the body over as it arrives through `reader` (the body then is not in the
    /// request's buffer).
    pub(crate) fn set_body_reader(&mut self, reader: super::BodyReader) {
        self.p.reader = Some(reader);
    }

    /// The body as it arrives, for a request whose handler asked for it so
    /// ([`AsyncHandler::streams_body`](crate::AsyncHandler::streams_body)); taken once.
    /// `None` otherwise: the body was read whole, and is [`body`](Self::body).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{OwnedRequest, Request, Response, Server, StreamBodies};
    ///
    /// // Counts an upload's bytes as they arrive, never holding it whole.
    /// async fn upload(mut req: OwnedRequest) -> Response {
    ///     let mut res = Response::new();
    ///     let Some(mut body) = req.body_reader() else {
    ///         res.body(format!("{} bytes\n", req.body().len()));
    ///         return res;
    ///     };
    ///     let (mut buf, mut total) = (vec![0u8; 16 * 1024], 0u64);
    ///     loop {
    ///         match body.read(&mut buf).await {
    ///             Ok(0) => break,
    ///             Ok(n) => total += n as u64,
    ///             Err(_) => {
    ///                 res.status(400).body("upload cut short\n");
    ///                 return res;
    ///             }
    ///         }
    ///     }
    ///     res.body(format!("{total} bytes\n"));
    ///     res
    /// }
    ///
    /// // Bodies sent to `/upload` stream; others are read whole first.
    /// let server = Server::new_async(StreamBodies {
    ///     when: |req: &Request<'_>| req.path() == "/upload",
    ///     handler: upload,
    /// });
    /// ```
    pub fn body_reader(&mut self) -> Option<super::BodyReader> {
        self.p.reader.take()
    }

    fn text(&self, span: Span) -> &str {
        let bytes = &self.p.buf[span.at as usize..(span.at + span.len) as usize];
        debug_assert!(bytes.is_ascii());
        // SAFETY: every span `text` is given (method, target, field name, host, a route
        // parameter's name or value) holds bytes the parser checked to be ASCII (tokens,
        // target characters, a valid host) or the router did (parameter names), and
        // ASCII is UTF-8. Checking again cost 1% of an async request in a profile.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    fn bytes(&self, span: Span) -> &[u8] {
        &self.p.buf[span.at as usize..(span.at + span.len) as usize]
    }

    /// The method, as sent.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{OwnedRequest, Response};
    ///
    /// async fn read_only(req: OwnedRequest) -> Response {
    ///     let mut res = Response::new();
    ///     if !matches!(req.method(), "GET" | "HEAD") {
    ///         res.status(405).header("Allow", "GET, HEAD");
    ///     }
    ///     res
    /// }
    /// ```
    pub fn method(&self) -> &str {
        self.text(self.p.method)
    }

    /// The request-target in origin form (see [`Request::target`](super::Request::target)),
    /// below a mount's prefix under a [`Router::mount`](crate::Router::mount).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Async, OwnedRequest, Response, Router};
    ///
    /// // Mounted at `/old`, `GET /old/a?b=1` is sent to `/new/a?b=1`.
    /// async fn moved(req: OwnedRequest) -> Response {
    ///     let mut res = Response::new();
    ///     res.status(308)
    ///         .header("Location", format!("/new{}", req.target()));
    ///     res
    /// }
    ///
    /// let router = Router::new().mount("/old", Async(moved));
    /// ```
    pub fn target(&self) -> &str {
        below(self.original_target(), self.p.base as usize)
    }

    /// The request-target as received, before a mount took its prefix off.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Async, OwnedRequest, Response, Router};
    ///
    /// // `GET /api/nope` names `/api/nope`, though its target here is `/nope`.
    /// async fn not_found(req: OwnedRequest) -> Response {
    ///     let mut res = Response::new();
    ///     res.status(404)
    ///         .body(format!("nothing at {}\n", req.original_target()));
    ///     res
    /// }
    ///
    /// let router = Router::new().mount("/api", Async(not_found));
    /// ```
    pub fn original_target(&self) -> &str {
        self.p.target.map_or("/", |t| self.text(t))
    }

    /// The prefix a [`Router::mount`](crate::Router::mount) took off the target; empty when
    /// none was.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Async, OwnedRequest, Response, Router};
    ///
    /// // Mounted at `/v1`, the new user's link keeps the prefix: `/v1/users/7`.
    /// async fn users(req: OwnedRequest) -> Response {
    ///     let mut res = Response::new();
    ///     res.status(201)
    ///         .header("Location", format!("{}/users/7", req.base()));
    ///     res
    /// }
    ///
    /// let router = Router::new().mount("/v1", Async(users));
    /// ```
    pub fn base(&self) -> &str {
        self.original_target()
            .get(..self.p.base as usize)
            .unwrap_or("")
    }

    /// The path: the request-target up to any `?` (`/` for an empty path).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{OwnedRequest, Response};
    ///
    /// async fn pages(req: OwnedRequest) -> Response {
    ///     let mut res = Response::new();
    ///     // The query takes no part: `/health?verbose` is `/health`.
    ///     match req.path() {
    ///         "/health" => res.body("ok\n"),
    ///         _ => res.status(404).body("not found\n"),
    ///     };
    ///     res
    /// }
    /// ```
    pub fn path(&self) -> &str {
        path_of(self.target())
    }

    /// The query: what follows the first `?` of the request-target, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{OwnedRequest, Response};
    /// use std::time::Duration;
    ///
    /// // `GET /slow?ms=250` answers after 250 ms (a second at most).
    /// async fn slow(req: OwnedRequest) -> Response {
    ///     let ms: u64 = req
    ///         .query()
    ///         .and_then(|q| q.strip_prefix("ms="))
    ///         .and_then(|ms| ms.parse().ok())
    ///         .map_or(0, |ms: u64| ms.min(1000));
    ///     ringmaster::rt::sleep(Duration::from_millis(ms)).await;
    ///     let mut res = Response::new();
    ///     res.body(format!("waited {ms} ms\n"));
    ///     res
    /// }
    /// ```
    pub fn query(&self) -> Option<&str> {
        query_of(self.original_target())
    }

    /// The value of the route parameter `name`, as [`Request::param`](super::Request::param)
    /// gives it.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Async, OwnedRequest, Response, Router};
    ///
    /// async fn user(req: OwnedRequest) -> Response {
    ///     let mut res = Response::new();
    ///     // `GET /users/42` gives `Some("42")`.
    ///     match req.param("id").and_then(|id| id.parse::<u64>().ok()) {
    ///         Some(id) => res.body(format!("user {id}\n")),
    ///         None => res.status(400).body("bad user id\n"),
    ///     };
    ///     res
    /// }
    ///
    /// let router = Router::new().get("/users/:id", Async(user));
    /// ```
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Every route parameter, in the route's order, as (name, value).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Async, OwnedRequest, Response, Router};
    ///
    /// // `GET /repos/rust-lang/rust` answers `owner=rust-lang`, then `name=rust`.
    /// async fn repo(req: OwnedRequest) -> Response {
    ///     let mut res = Response::new();
    ///     for (name, value) in req.params() {
    ///         res.write(format!("{name}={value}\n"));
    ///     }
    ///     res
    /// }
    ///
    /// let router = Router::new().get("/repos/:owner/:name", Async(repo));
    /// ```
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.p
            .params
            .iter()
            .map(|&(n, v)| (self.text(n), self.text(v)))
    }

    /// Where `part` (a slice of this request's target) lies in the buffer.
    pub(crate) fn span_of(&self, part: &str) -> Option<Span> {
        span_in(&self.p.buf[..self.p.head_len], part.as_bytes())
    }

    /// Records what a router found: parameter names (copied after the body) and values
    /// (spans of the target), and the mount prefix's length.
    pub(crate) fn set_routed(&mut self, params: &[(&str, Span)], base: usize) {
        let p = &mut *self.p;
        p.buf.truncate(p.body_end);
        p.params.clear();
        for &(name, value) in params {
            let at = p.buf.len() as u32;
            p.buf.extend_from_slice(name.as_bytes());
            p.params.push((
                Span {
                    at,
                    len: name.len() as u32,
                },
                value,
            ));
        }
        p.base = base as u32;
    }

    /// The HTTP version.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{OwnedRequest, Response, Version};
    ///
    /// async fn which(req: OwnedRequest) -> Response {
    ///     let mut res = Response::new();
    ///     res.body(match req.version() {
    ///         Version::Http10 => "HTTP/1.0\n",
    ///         Version::Http11 => "HTTP/1.1\n",
    ///     });
    ///     res
    /// }
    /// ```
    pub fn version(&self) -> Version {
        self.p.version
    }

    /// The host the request is for (see [`Request::host`](super::Request::host)).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{OwnedRequest, Response};
    ///
    /// // Sends `example.com` to `www.example.com`, keeping the path and query.
    /// async fn canonical_host(req: OwnedRequest) -> Response {
    ///     let mut res = Response::new();
    ///     if req.host() == Some("example.com") {
    ///         let location = format!("https://www.example.com{}", req.target());
    ///         res.status(301).header("Location", location);
    ///     } else {
    ///         res.body("welcome\n");
    ///     }
    ///     res
    /// }
    /// ```
    pub fn host(&self) -> Option<&str> {
        self.p.host.map(|h| self.text(h))
    }

    /// The value of the first field named `name` (ASCII case ignored); `host` gives the
    /// authority of an absolute-form target, as [`Request::header`](super::Request::header)
    /// does.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{OwnedRequest, Response};
    ///
    /// async fn private(req: OwnedRequest) -> Response {
    ///     let mut res = Response::new();
    ///     // `Authorization` or `authorization`: the name's case does not matter.
    ///     match req.header("authorization") {
    ///         Some(b"Bearer let-me-in") => res.body("the secret\n"),
    ///         _ => res.status(401).header("WWW-Authenticate", "Bearer"),
    ///     };
    ///     res
    /// }
    /// ```
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        if self.p.form == TargetForm::Absolute && name.eq_ignore_ascii_case("host") {
            return self.p.host.map(|h| self.bytes(h));
        }
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every header field, in the order received, as (name, value).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{OwnedRequest, Response};
    ///
    /// // Counts the cookies of every `Cookie` field (a client may send several).
    /// async fn cookies(req: OwnedRequest) -> Response {
    ///     let count = req
    ///         .headers()
    ///         .filter(|(name, _)| name.eq_ignore_ascii_case("cookie"))
    ///         .flat_map(|(_, value)| value.split(|&b| b == b';'))
    ///         .count();
    ///     let mut res = Response::new();
    ///     res.body(format!("{count} cookies\n"));
    ///     res
    /// }
    /// ```
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        let lines = self.bytes(self.p.fields);
        lines.split(|&b| b == b'\n').filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':')?;
            // SAFETY: a field name is a token (ASCII), as the parser checked.
            let name = unsafe { std::str::from_utf8_unchecked(&line[..colon]) };
            let value = line[colon + 1..].trim_ascii();
            Some((name, value))
        })
    }

    /// The body (empty when the request has none, or when it is handed over as it arrives:
    /// see [`body_reader`](Self::body_reader)).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{OwnedRequest, Response};
    ///
    /// // The body was read whole before the handler ran (up to `request_body_bytes_max`).
    /// async fn word_count(req: OwnedRequest) -> Response {
    ///     let mut res = Response::new();
    ///     match std::str::from_utf8(req.body()) {
    ///         Ok(text) => res.body(format!("{} words\n", text.split_whitespace().count())),
    ///         Err(_) => res.status(400).body("send UTF-8 text\n"),
    ///     };
    ///     res
    /// }
    /// ```
    pub fn body(&self) -> &[u8] {
        &self.p.buf[self.p.head_len..self.p.body_end]
    }

    /// The client's address, `None` when the server did not look it up (see
    /// [`Request::peer_addr`](super::Request::peer_addr)).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{OwnedRequest, Response, Server};
    ///
    /// async fn local_only(req: OwnedRequest) -> Response {
    ///     let mut res = Response::new();
    ///     // `None` unless the server looks addresses up, as this one does.
    ///     match req.peer_addr().map(|ip| ip.to_canonical()) {
    ///         Some(ip) if ip.is_loopback() => res.body("the admin page\n"),
    ///         _ => res.status(403).body("local clients only\n"),
    ///     };
    ///     res
    /// }
    ///
    /// let server = Server::new_async(local_only).client_addresses(true);
    /// ```
    pub fn peer_addr(&self) -> Option<IpAddr> {
        self.p.peer
    }
}

impl Drop for OwnedRequest {
    fn drop(&mut self) {
        // SAFETY: `self.p` is taken once, here, and never used again: `drop` is the last
        // use of `self`, and `ManuallyDrop` keeps the field from being dropped after it.
        let mut p = unsafe { ManuallyDrop::take(&mut self.p) };
        if p.buf.capacity() > POOLED_BYTES_MAX {
            return;
        }
        p.reader = None;
        // A request dropped on another thread (sent away by a handler) pools nothing there
        // that the worker would miss; its thread keeps a bounded pool of its own.
        let _ = POOL.try_with(|pool| {
            if let Ok(mut pool) = pool.try_borrow_mut() {
                if pool.len() < POOLED_MAX {
                    pool.push(p);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_head, HeadLimits, Parsed};
    use std::mem::MaybeUninit;

    const LIMITS: HeadLimits = HeadLimits {
        request_line_bytes_max: 1024,
        request_fields_bytes_max: 1024,
        request_body_bytes_max: 1024,
    };

    fn owned(raw: &[u8], body: &[u8]) -> OwnedRequest {
        let mut headers = [const { MaybeUninit::uninit() }; crate::http::request::HEADERS_MAX];
        let Ok(Parsed::Complete(head)) = parse_head(raw, &mut headers, &LIMITS) else {
            panic!("a whole head")
        };
        OwnedRequest::new(raw, &head, body, None)
    }

    #[test]
    fn the_owned_request_says_what_the_borrowed_one_does() {
        let req = owned(
            b"POST /a/b?x=1 HTTP/1.1\r\nHost: h:80\r\nX-Thing: yes\r\n\r\n",
            b"body",
        );
        assert_eq!(req.method(), "POST");
        assert_eq!(req.target(), "/a/b?x=1");
        assert_eq!(req.path(), "/a/b");
        assert_eq!(req.query(), Some("x=1"));
        assert_eq!(req.host(), Some("h:80"));
        assert_eq!(req.header("x-thing"), Some(&b"yes"[..]));
        assert_eq!(req.headers().count(), 2);
        assert_eq!(req.body(), b"body");
        assert_eq!(req.version(), Version::Http11);
        let spaced = owned(
            b"\r\nGET / HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nX-Tab:\t v \t\r\n\r\n",
            b"",
        );
        let fields: Vec<_> = spaced.headers().collect();
        assert_eq!(
            fields,
            [
                ("Host", &b"h"[..]),
                ("X-Empty", &b""[..]),
                ("X-Tab", &b"v"[..])
            ]
        );
        let absolute = owned(b"GET http://a.example HTTP/1.1\r\nHost: b\r\n\r\n", b"");
        assert_eq!((absolute.path(), absolute.host()), ("/", Some("a.example")));
        assert_eq!(absolute.header("Host"), Some(&b"a.example"[..]));
    }

    #[test]
    fn dropped_requests_give_their_buffers_back() {
        let first = owned(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", b"");
        let at = first.p.buf.as_ptr();
        drop(first);
        let second = owned(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n", b"");
        assert_eq!(
            second.p.buf.as_ptr(),
            at,
            "the pooled buffer, not a new one"
        );
    }
}
