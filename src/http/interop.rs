//! Conversions to and from the `http` crate's types (feature `http`, on by default), so
//! that code written against `http::Request` and `http::Response` (routers, middleware,
//! clients' types) works with ringmaster's handlers.
//!
//! A request converts whole (its head copied, its body copied or moved). A response from
//! `http` keeps its status, fields and body; the fields the server writes itself
//! (`Content-Length`, `Transfer-Encoding`, `Connection`, `Date`) are dropped, since the
//! server frames every response; any other invalid field makes the response a `500`, as a
//! [`Response`] setter would.

use super::{OwnedRequest, Request, Response, Version};

fn http_version(v: Version) -> ::http::Version {
    match v {
        Version::Http10 => ::http::Version::HTTP_10,
        Version::Http11 => ::http::Version::HTTP_11,
    }
}

/// Builds an `http::Request` from the parts both request types share.
fn build<'a>(
    method: &str,
    target: &str,
    version: Version,
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    body: Vec<u8>,
) -> Result<::http::Request<Vec<u8>>, ::http::Error> {
    let mut builder = ::http::Request::builder()
        .method(method)
        .uri(target)
        .version(http_version(version));
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder.body(body)
}

impl Request<'_> {
    /// The request as an `http::Request`, its body copied. Fails only for a target that
    /// the parser let through and `http` refuses as a URI: one of 65,535 bytes or more, or
    /// `?q` (the target of `GET http://host?q`, see [`Request::target`]), both of which a
    /// valid request may send; or one holding bytes no URI may hold (`<`, `>` and `` ` `` in
    /// the path, `<`, `>` and `"` in the query).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Request, Response};
    ///
    /// // Code written against the `http` crate's types.
    /// fn greet(req: &http::Request<Vec<u8>>) -> http::Response<String> {
    ///     let name = req.uri().query().unwrap_or("world");
    ///     http::Response::new(format!("hello {name}\n"))
    /// }
    ///
    /// fn handler(req: &Request<'_>, res: &mut Response) {
    ///     match req.to_http() {
    ///         Ok(req) => *res = Response::from(greet(&req)),
    ///         Err(_) => {
    ///             res.status(400).body("unusual target\n");
    ///         }
    ///     }
    /// }
    /// ```
    pub fn to_http(&self) -> Result<::http::Request<Vec<u8>>, ::http::Error> {
        build(
            self.method(),
            self.target(),
            self.version(),
            self.headers(),
            self.body().to_vec(),
        )
    }
}

impl OwnedRequest {
    /// The request as an `http::Request`, its body copied (a body handed over as it
    /// arrives stays with [`OwnedRequest::body_reader`]). Fails as
    /// [`Request::to_http`] does.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{OwnedRequest, Response};
    ///
    /// // Code written against the `http` crate's types: an echo.
    /// async fn api(req: http::Request<Vec<u8>>) -> http::Response<Vec<u8>> {
    ///     http::Response::new(req.into_body())
    /// }
    ///
    /// async fn handler(req: OwnedRequest) -> Response {
    ///     match req.to_http() {
    ///         Ok(req) => Response::from(api(req).await),
    ///         Err(_) => {
    ///             let mut res = Response::new();
    ///             res.status(400).body("unusual target\n");
    ///             res
    ///         }
    ///     }
    /// }
    /// ```
    pub fn to_http(&self) -> Result<::http::Request<Vec<u8>>, ::http::Error> {
        build(
            self.method(),
            self.target(),
            self.version(),
            self.headers(),
            self.body().to_vec(),
        )
    }
}

/// The fields the server writes itself, dropped from an `http::Response`.
fn server_owned(name: &::http::HeaderName) -> bool {
    [
        ::http::header::CONTENT_LENGTH,
        ::http::header::TRANSFER_ENCODING,
        ::http::header::CONNECTION,
        ::http::header::DATE,
    ]
    .contains(name)
}

/// Keeps the status, fields and body; drops the fields the server writes itself (see
/// [`Response`]). A status or field a [`Response`] setter would refuse makes the server
/// answer `500` instead, as that setter's misuse does.
///
/// # Examples
///
/// ```
/// use ringmaster::Response;
///
/// let theirs = http::Response::builder()
///     .status(404)
///     .header("Content-Type", "text/plain")
///     .header("Content-Length", "9")
///     .body("not here\n")
///     .unwrap();
/// let ours = Response::from(theirs);
/// assert_eq!(ours.status_code(), 404);
/// // `http` lowercases names; `Content-Length` is the server's to write.
/// let fields: Vec<_> = ours.fields().collect();
/// assert_eq!(fields, [("content-type", &b"text/plain"[..])]);
/// assert_eq!(ours.body_bytes(), b"not here\n");
/// ```
impl<B: AsRef<[u8]>> From<::http::Response<B>> for Response {
    fn from(res: ::http::Response<B>) -> Response {
        let (parts, body) = res.into_parts();
        let mut out = Response::new();
        out.status(parts.status.as_u16());
        for (name, value) in &parts.headers {
            if !server_owned(name) {
                out.header(name.as_str(), value.as_bytes());
            }
        }
        out.body(body.as_ref());
        out
    }
}

impl Response {
    /// The response as an `http::Response` (status, fields and body; a streamed body is
    /// not included). Every status and field a setter accepts is one `http` accepts, so it
    /// does not fail in practice; what a setter refused is not in it (the server would
    /// answer `500` instead of such a response).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::Response;
    ///
    /// let mut res = Response::new();
    /// res.status(201).header("Location", "/items/7").body("made");
    /// let res = res.to_http().unwrap();
    /// assert_eq!(res.status(), 201);
    /// assert_eq!(res.headers()["location"], "/items/7");
    /// assert_eq!(res.body(), b"made");
    ///
    /// // A field the setter refused is left out.
    /// let mut bad = Response::new();
    /// bad.header("Content-Length", "5");
    /// assert!(bad.to_http().unwrap().headers().is_empty());
    /// ```
    pub fn to_http(&self) -> Result<::http::Response<Vec<u8>>, ::http::Error> {
        let mut builder = ::http::Response::builder().status(self.status_code());
        for (name, value) in self.fields() {
            builder = builder.header(name, value);
        }
        builder.body(self.body_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_head, HeadLimits, Parsed};
    use std::mem::MaybeUninit;

    #[test]
    fn requests_and_responses_round_trip_through_http_types() {
        let raw = b"POST /a?b=1 HTTP/1.1\r\nHost: h\r\nX-Y: z\r\n\r\n";
        let mut headers = [const { MaybeUninit::uninit() }; crate::http::request::HEADERS_MAX];
        let limits = HeadLimits {
            request_line_bytes_max: 1024,
            request_fields_bytes_max: 1024,
            request_body_bytes_max: 1024,
        };
        let Ok(Parsed::Complete(head)) = parse_head(raw, &mut headers, &limits) else {
            panic!("a whole head")
        };
        let req = Request::new(&head, b"body", None).to_http().unwrap();
        assert_eq!(req.method(), "POST");
        assert_eq!(req.uri().path(), "/a");
        assert_eq!(req.uri().query(), Some("b=1"));
        assert_eq!(req.headers()["x-y"], "z");
        assert_eq!(req.body(), b"body");
        let owned = OwnedRequest::new(raw, &head, b"body", None)
            .to_http()
            .unwrap();
        assert_eq!(owned.uri(), req.uri());

        let res = ::http::Response::builder()
            .status(201)
            .header("Content-Type", "text/plain")
            .header("Content-Length", "999")
            .body("made")
            .unwrap();
        let ours = Response::from(res);
        assert_eq!(ours.status_code(), 201);
        assert!(
            ours.misuse().is_none(),
            "Content-Length is dropped, not refused"
        );
        let back = ours.to_http().unwrap();
        assert_eq!(back.status(), 201);
        assert_eq!(back.headers()["content-type"], "text/plain");
        assert!(back.headers().get("content-length").is_none());
        assert_eq!(back.body(), b"made");
    }
}
