//! Responses: what a handler fills in ([`Response`]) and the encoder that frames it.
//!
//! See [`Response`]'s example.

use super::body::BodyWriter;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;

/// Header fields the server writes itself; a handler may not set them.
const RESERVED: [&str; 4] = ["content-length", "transfer-encoding", "connection", "date"];

/// Why a header field was refused.
///
/// See [`Response::try_header`]'s example.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// The name is empty or not an HTTP token.
    InvalidName,
    /// The value holds CR, LF, NUL or another control byte other than HTAB.
    InvalidValue,
    /// The server frames the response itself: `Content-Length`, `Transfer-Encoding`,
    /// `Connection` and `Date` are its own.
    Reserved,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeaderError::InvalidName => "header name is not an HTTP token",
            HeaderError::InvalidValue => "header value holds a control byte",
            HeaderError::Reserved => {
                "Content-Length, Transfer-Encoding, Connection and Date are set by the server"
            }
        })
    }
}

impl std::error::Error for HeaderError {}

/// A status code outside `200..=599`: informational codes (1xx) would break the framing,
/// and codes past 599 do not exist.
///
/// See [`Response::try_status`]'s example.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusError(pub u16);

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "status {} is outside 200..=599", self.0)
    }
}

impl std::error::Error for StatusError {}

/// The first invalid input a handler gave a [`Response`] setter: the server answers `500`
/// instead of the response, and logs this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Misuse {
    Status(StatusError),
    Header { name: String, error: HeaderError },
}

impl fmt::Display for Misuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Misuse::Status(e) => write!(f, "Response::status: {e}"),
            Misuse::Header { name, error } => {
                write!(f, "Response::header({name:?}): {error}")
            }
        }
    }
}

/// The response a handler builds: status (200 unless set), header fields and body. The
/// server adds `Date`, `Content-Length` and, when the connection closes, `Connection: close`.
///
/// The same value is reused for every request of a worker, so its buffers are allocated once.
///
/// Setters never panic. Invalid input to [`status`](Self::status) or
/// [`header`](Self::header) (a 1xx code, a CR or LF in a value, a `Content-Length` field) is
/// a bug in the handler: the client gets `500 Internal Server Error` (and the connection
/// closes) instead of a response that would break the framing, and the worker logs one line
/// naming the misuse. [`try_status`](Self::try_status) and
/// [`try_header`](Self::try_header) return the error instead, for input from outside.
///
/// ```
/// use ringmaster::Response;
///
/// let mut res = Response::new();
/// res.status(201)
///     .header("Content-Type", "application/json")
///     .header("Location", "/items/7")
///     .body(r#"{"id":7}"#);
/// assert_eq!(res.status_code(), 201);
/// // The server writes Content-Length, Date and Connection itself: setting one is a misuse,
/// // recorded, and answered 500 instead (as is a field value with a line break).
/// let mut bad = Response::new();
/// bad.header("Content-Length", "5");
/// assert!(bad.try_header("X-Ok", "fine").is_ok());
/// ```
///
/// A handle to pooled parts: moving one moves a pointer, and a dropped response's parts
/// (and buffers) go to the next `Response::new()` on its thread.
#[derive(Debug)]
pub struct Response {
    /// Taken out only by `drop`.
    p: std::mem::ManuallyDrop<Box<Parts>>,
}

/// What a [`Response`] holds.
#[derive(Debug)]
struct Parts {
    status: u16,
    /// Encoded `Name: value\r\n` lines.
    headers: Vec<u8>,
    body: Vec<u8>,
    close: bool,
    /// The first invalid input a setter was given, if any: the response becomes a 500.
    /// Boxed, as is `stream`: both are rare.
    misuse: Option<Box<Misuse>>,
    /// A body produced over time instead of `body`.
    stream: Option<Box<Producer>>,
}

/// What makes a streamed body: its declared length, and the producer to start.
pub(crate) struct Producer {
    pub(crate) length: Option<u64>,
    pub(crate) start: StartProducer,
}

/// Starts a producer with the body's writing end.
pub(crate) type StartProducer =
    Box<dyn FnOnce(BodyWriter) -> Pin<Box<dyn Future<Output = io::Result<()>>>>>;

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

impl Default for Response {
    fn default() -> Response {
        Response::new()
    }
}

/// Parts a dropped [`Response`] leaves for the next one made on its thread: at most this
/// many...
const SPARE_MAX: usize = 256;
/// ...whose buffers hold at most this many bytes each (larger ones are freed).
const SPARE_BYTES_MAX: usize = 64 * 1024;

thread_local! {
    /// The parts of this thread's dropped responses, so that an async handler's
    /// `Response::new()` allocates nothing once its worker is warm.
    /// Boxed: a handle moves the box, never the parts.
    #[allow(clippy::vec_box)]
    static SPARE: std::cell::RefCell<Vec<Box<Parts>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Response {
    /// A `200 OK` with no fields and an empty body. Its buffers come from those of
    /// responses dropped earlier on this thread, when there are any.
    ///
    /// # Examples
    ///
    /// An async handler makes its own:
    ///
    /// ```
    /// use ringmaster::{OwnedRequest, Response};
    ///
    /// async fn health(_req: OwnedRequest) -> Response {
    ///     let mut res = Response::new();
    ///     res.body("ok\n");
    ///     res
    /// }
    ///
    /// let res = Response::new();
    /// assert_eq!(res.status_code(), 200);
    /// assert!(res.body_bytes().is_empty() && res.fields().next().is_none());
    /// ```
    #[inline]
    pub fn new() -> Response {
        let spare = SPARE
            .try_with(|spare| spare.try_borrow_mut().ok().and_then(|mut s| s.pop()))
            .ok()
            .flatten();
        // A spare one was reset when it was dropped.
        let p = spare.unwrap_or_else(|| {
            Box::new(Parts {
                status: 200,
                headers: Vec::new(),
                body: Vec::new(),
                close: false,
                misuse: None,
                stream: None,
            })
        });
        Response {
            p: std::mem::ManuallyDrop::new(p),
        }
    }

    /// Makes the value ready for the next request, keeping its buffers.
    pub(crate) fn reset(&mut self) {
        self.p.status = 200;
        self.p.headers.clear();
        self.p.body.clear();
        self.p.close = false;
        self.p.misuse = None;
        self.p.stream = None;
    }

    /// Sets the status code.
    ///
    /// A code outside 200..=599 is not set: the server answers `500` instead of this
    /// response and logs the misuse (see [`Response`]). Use [`try_status`](Self::try_status)
    /// for a code from outside.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::Response;
    ///
    /// let mut res = Response::new();
    /// res.status(404).body("no such item\n");
    /// assert_eq!(res.status_code(), 404);
    ///
    /// // A 1xx code is a misuse: it is not set, and the client gets a 500 instead.
    /// res.status(103);
    /// assert_eq!(res.status_code(), 404);
    /// ```
    pub fn status(&mut self, code: u16) -> &mut Response {
        if let Err(e) = self.try_status(code) {
            self.misused(Misuse::Status(e));
        }
        self
    }

    /// Sets the status code, refusing one outside 200..=599 (informational responses would
    /// break the framing); the response is unchanged then.
    ///
    /// # Examples
    ///
    /// Relaying a status code that came from outside, such as an upstream's:
    ///
    /// ```
    /// use ringmaster::{Response, StatusError};
    ///
    /// let mut res = Response::new();
    /// assert!(res.try_status(503).is_ok());
    /// assert_eq!(res.try_status(101).unwrap_err(), StatusError(101));
    /// assert_eq!(res.try_status(600).unwrap_err(), StatusError(600));
    /// assert_eq!(res.status_code(), 503);
    /// ```
    pub fn try_status(&mut self, code: u16) -> Result<&mut Response, StatusError> {
        if !(200..=599).contains(&code) {
            return Err(StatusError(code));
        }
        self.p.status = code;
        Ok(self)
    }

    /// Adds a header field.
    ///
    /// A field [`try_header`](Self::try_header) would refuse is not added: the server answers
    /// `500` instead of this response and logs the misuse (see [`Response`]). Use
    /// `try_header` for names and values from outside.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::Response;
    ///
    /// let mut res = Response::new();
    /// res.header("Content-Type", "text/html; charset=utf-8")
    ///     .header("Cache-Control", "max-age=60");
    /// // A value with a line break is a misuse: it is not added, and the client gets a 500.
    /// res.header("X-Note", "a\r\nSet-Cookie: b");
    /// assert_eq!(res.fields().count(), 2);
    /// ```
    pub fn header(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut Response {
        if let Err(error) = self.try_header(name, value) {
            let name = name.chars().take(64).collect();
            self.misused(Misuse::Header { name, error });
        }
        self
    }

    /// Records the first misuse; the response becomes a 500.
    fn misused(&mut self, misuse: Misuse) {
        self.p.misuse.get_or_insert_with(|| Box::new(misuse));
    }

    /// The first invalid input a setter was given since the last reset.
    pub(crate) fn misuse(&self) -> Option<&Misuse> {
        self.p.misuse.as_deref()
    }

    /// Adds a header field, refusing names that are not tokens, values with control bytes
    /// (which would let a value smuggle in a field or a response), and the fields the server
    /// sets itself.
    ///
    /// # Examples
    ///
    /// Copying fields from outside (here an upstream's), skipping those refused:
    ///
    /// ```
    /// use ringmaster::{HeaderError, Response};
    ///
    /// let upstream = [("ETag", "\"v7\""), ("Content-Length", "12"), ("X-Bad", "a\nb")];
    /// let mut res = Response::new();
    /// let refused: Vec<HeaderError> = upstream
    ///     .iter()
    ///     .filter_map(|(name, value)| res.try_header(name, value).err())
    ///     .collect();
    /// assert_eq!(refused, [HeaderError::Reserved, HeaderError::InvalidValue]);
    /// assert_eq!(res.try_header("Bad Name", "x"), Err(HeaderError::InvalidName));
    /// assert_eq!(res.fields().count(), 1);
    /// ```
    pub fn try_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), HeaderError> {
        let value = value.as_ref();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(HeaderError::InvalidName);
        }
        if RESERVED.iter().any(|r| name.eq_ignore_ascii_case(r)) {
            return Err(HeaderError::Reserved);
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(HeaderError::InvalidValue);
        }
        self.p.headers.extend_from_slice(name.as_bytes());
        self.p.headers.extend_from_slice(b": ");
        self.p.headers.extend_from_slice(value);
        self.p.headers.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// Replaces the body.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::Response;
    ///
    /// let mut res = Response::new();
    /// res.body("draft");
    /// res.header("Content-Type", "application/json").body(r#"{"ok":true}"#);
    /// assert_eq!(res.body_bytes(), br#"{"ok":true}"#);
    /// ```
    pub fn body(&mut self, bytes: impl AsRef<[u8]>) -> &mut Response {
        self.p.body.clear();
        self.p.body.extend_from_slice(bytes.as_ref());
        self
    }

    /// Appends to the body.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::Response;
    ///
    /// let mut res = Response::new();
    /// for item in ["apples", "pears"] {
    ///     res.write(item).write("\n");
    /// }
    /// assert_eq!(res.body_bytes(), b"apples\npears\n");
    /// ```
    pub fn write(&mut self, bytes: impl AsRef<[u8]>) -> &mut Response {
        self.p.body.extend_from_slice(bytes.as_ref());
        self
    }

    /// Makes the body a stream, replacing any set with [`body`](Self::body) or
    /// [`write`](Self::write): once the head is sent, `produce` runs on the worker with the
    /// body's [`BodyWriter`], and what it writes goes to the client as it is written. Each
    /// write waits while the connection's unsent output is at the output bound, so a body
    /// of any size is never held whole. With `length` the response carries a
    /// `Content-Length` and the producer must write exactly that many bytes; without, the
    /// body is chunked (closed by the end of the connection for an HTTP/1.0 client).
    ///
    /// A producer that fails (returns an error, panics, or writes short of `length`) cannot
    /// be answered any more: the connection is closed, and the client sees the body cut
    /// short. A client that goes away makes the next write fail with `BrokenPipe`. A `HEAD`
    /// request gets the head only; its producer is never started. Producers in flight count
    /// against `handlers_max`; past it the request is answered `503`.
    ///
    /// # Examples
    ///
    /// A body of a known length, written in two parts once the head is sent:
    ///
    /// ```
    /// use ringmaster::Response;
    ///
    /// let mut res = Response::new();
    /// res.body("replaced by the stream");
    /// res.header("Content-Type", "text/plain")
    ///     .stream(Some(11), |mut body| async move {
    ///         body.write(b"hello ").await?;
    ///         body.write(b"world").await
    ///     });
    /// // Nothing is written yet: the producer starts when the head is sent.
    /// assert!(res.body_bytes().is_empty());
    /// ```
    pub fn stream<F, Fut>(&mut self, length: Option<u64>, produce: F) -> &mut Response
    where
        F: FnOnce(BodyWriter) -> Fut + 'static,
        Fut: Future<Output = io::Result<()>> + 'static,
    {
        self.p.body.clear();
        self.p.stream = Some(Box::new(Producer {
            length,
            start: Box::new(move |writer| Box::pin(produce(writer))),
        }));
        self
    }

    /// The streamed body's producer, taken out to be started.
    pub(crate) fn take_stream(&mut self) -> Option<Producer> {
        self.p.stream.take().map(|p| *p)
    }

    /// Whether the body is streamed.
    pub(crate) fn is_streamed(&self) -> bool {
        self.p.stream.is_some()
    }

    /// Closes the connection after this response (`Connection: close`).
    ///
    /// # Examples
    ///
    /// A request the handler cannot make sense of is answered, and the client reconnects
    /// for its next one:
    ///
    /// ```
    /// use ringmaster::{Request, Response};
    ///
    /// fn api(req: &Request<'_>, res: &mut Response) {
    ///     if std::str::from_utf8(req.body()).is_err() {
    ///         res.status(400).body("the body is not UTF-8\n").close();
    ///         return;
    ///     }
    ///     res.body("ok\n");
    /// }
    /// ```
    pub fn close(&mut self) -> &mut Response {
        self.p.close = true;
        self
    }

    /// The header fields added so far, as (name, value), in order.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::Response;
    ///
    /// let mut res = Response::new();
    /// res.header("Vary", "Accept").header("Cache-Control", "no-store");
    /// let fields: Vec<(&str, &[u8])> = res.fields().collect();
    /// assert_eq!(fields, [("Vary", &b"Accept"[..]), ("Cache-Control", &b"no-store"[..])]);
    /// ```
    pub fn fields(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.p
            .headers
            .split(|&b| b == b'\n')
            .filter_map(|line| line.strip_suffix(b"\r"))
            .filter_map(|line| {
                let at = line.iter().position(|&b| b == b':')?;
                // Names are tokens (ASCII), checked when the field was added.
                let name = std::str::from_utf8(&line[..at]).ok()?;
                Some((name, &line[at + 2..]))
            })
    }

    /// The status code set so far.
    ///
    /// # Examples
    ///
    /// A handler that logs the requests another one failed:
    ///
    /// ```
    /// use ringmaster::{Request, Response};
    ///
    /// fn app(req: &Request<'_>, res: &mut Response) {
    ///     res.status(if req.path() == "/" { 200 } else { 404 });
    /// }
    ///
    /// fn logged(req: &Request<'_>, res: &mut Response) {
    ///     app(req, res);
    ///     if res.status_code() >= 500 {
    ///         eprintln!("{} {}: {}", req.method(), req.path(), res.status_code());
    ///     }
    /// }
    /// ```
    pub fn status_code(&self) -> u16 {
        self.p.status
    }

    /// The body written so far.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::Response;
    ///
    /// let mut res = Response::new();
    /// res.body("Hello").write(", World");
    /// assert_eq!(res.body_bytes(), b"Hello, World");
    /// ```
    pub fn body_bytes(&self) -> &[u8] {
        &self.p.body
    }

    /// Whether the handler asked to close the connection.
    pub(crate) fn wants_close(&self) -> bool {
        self.p.close
    }

    /// The body buffer's capacity.
    #[cfg(test)]
    pub(crate) fn body_capacity(&self) -> usize {
        self.p.body.capacity()
    }

    /// Takes the body out, to be sent from where the handler wrote it, and leaves
    /// `replacement` (empty) for the next response.
    pub(crate) fn take_body(&mut self, replacement: Vec<u8>) -> Vec<u8> {
        debug_assert!(replacement.is_empty());
        std::mem::replace(&mut self.p.body, replacement)
    }
}

impl Drop for Response {
    fn drop(&mut self) {
        // SAFETY: `self.p` is taken once, here, and never used again: `drop` is the last
        // use of `self`, and `ManuallyDrop` keeps the field from being dropped after it.
        let mut p = unsafe { std::mem::ManuallyDrop::take(&mut self.p) };
        if p.headers.capacity() > SPARE_BYTES_MAX || p.body.capacity() > SPARE_BYTES_MAX {
            return;
        }
        p.status = 200;
        p.headers.clear();
        p.body.clear();
        p.close = false;
        p.misuse = None;
        p.stream = None;
        // On a thread being torn down, or re-entered, the parts are simply freed.
        let _ = SPARE.try_with(|spare| {
            if let Ok(mut spare) = spare.try_borrow_mut() {
                if spare.len() < SPARE_MAX {
                    spare.push(p);
                }
            }
        });
    }
}

/// `tchar` of RFC 9110.
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Which `Connection` field the response carries.
///
/// See [`Response`]'s example.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionHeader {
    /// None: HTTP/1.1 keep-alive is the default.
    Omit,
    /// `Connection: keep-alive`, for an HTTP/1.0 client that asked for it.
    KeepAlive,
    /// `Connection: close`: the server closes after this response.
    Close,
}

/// Appends the framed response to `out`: status line, `Date` (the cached line), the
/// handler's fields, `Content-Length`, `Connection` when needed, blank line, and the body
/// unless the request was `HEAD` or the status forbids one.
#[doc(hidden)]
pub fn encode(
    out: &mut Vec<u8>,
    res: &Response,
    date_line: &[u8],
    head_only: bool,
    connection: ConnectionHeader,
) {
    if encode_head(out, res, date_line, connection) && !head_only {
        out.extend_from_slice(&res.p.body);
    }
}

/// Appends the response's head alone (everything [`encode`] writes but the body); returns
/// whether the status lets a body follow.
#[doc(hidden)]
pub fn encode_head(
    out: &mut Vec<u8>,
    res: &Response,
    date_line: &[u8],
    connection: ConnectionHeader,
) -> bool {
    write_head_start(out, res.p.status, date_line);
    out.extend_from_slice(&res.p.headers);
    let bodiless = matches!(res.p.status, 204 | 304);
    if !bodiless {
        write_content_length(out, res.p.body.len());
    }
    write_connection(out, connection);
    out.extend_from_slice(b"\r\n");
    !bodiless
}

/// How a streamed body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamFraming {
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the end of the connection ends the body (HTTP/1.0).
    Close,
}

/// Appends the head of a response whose body is streamed with `framing`; returns whether
/// the status lets a body follow.
pub(crate) fn encode_stream_head(
    out: &mut Vec<u8>,
    res: &Response,
    date_line: &[u8],
    framing: StreamFraming,
    connection: ConnectionHeader,
) -> bool {
    write_head_start(out, res.p.status, date_line);
    out.extend_from_slice(&res.p.headers);
    let bodiless = matches!(res.p.status, 204 | 304);
    match framing {
        _ if bodiless => {}
        StreamFraming::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            write_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        StreamFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        StreamFraming::Close => {}
    }
    write_connection(out, connection);
    out.extend_from_slice(b"\r\n");
    !bodiless
}

/// The longest error body; a longer detail is cut (error details are short fixed phrases).
const ERROR_BODY_BYTES_MAX: usize = 256;

/// Appends an error response for `status` with a one-line plain-text body naming `detail`,
/// and `Connection: close`. Returns the body's length.
#[doc(hidden)]
pub fn encode_error(
    out: &mut Vec<u8>,
    status: u16,
    detail: &dyn fmt::Display,
    date_line: &[u8],
) -> usize {
    use std::io::Write;
    let mut body = [0u8; ERROR_BODY_BYTES_MAX];
    let mut cursor = std::io::Cursor::new(&mut body[..]);
    // A detail too long for the buffer is cut short, which is all `write!` can fail with.
    let _ = writeln!(cursor, "{} {}: {detail}", status, reason(status));
    let len = cursor.position() as usize;
    write_head_start(out, status, date_line);
    out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
    write_content_length(out, len);
    write_connection(out, ConnectionHeader::Close);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body[..len]);
    len
}

fn write_head_start(out: &mut Vec<u8>, status: u16, date_line: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    write_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(date_line);
}

fn write_content_length(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(b"Content-Length: ");
    write_decimal(out, len as u64);
    out.extend_from_slice(b"\r\n");
}

fn write_connection(out: &mut Vec<u8>, connection: ConnectionHeader) {
    match connection {
        ConnectionHeader::Omit => {}
        ConnectionHeader::KeepAlive => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        ConnectionHeader::Close => out.extend_from_slice(b"Connection: close\r\n"),
    }
}

/// Appends `n` in decimal without allocating.
pub(crate) fn write_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The reason phrase for `status` (empty for codes without a registered one).
///
/// # Examples
///
/// ```
/// use ringmaster::http::response::reason;
///
/// assert_eq!(reason(404), "Not Found");
/// assert_eq!(reason(503), "Service Unavailable");
/// assert_eq!(reason(299), "");
/// ```
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8] = b"Date: Thu, 26 Nov 2026 14:55:00 GMT\r\n";

    fn encoded(res: &Response, head_only: bool, c: ConnectionHeader) -> String {
        let mut out = Vec::new();
        encode(&mut out, res, DATE, head_only, c);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn frames_status_fields_length_and_body() {
        let mut res = Response::new();
        res.header("Content-Type", "text/plain").body("Hello World");
        assert_eq!(
            encoded(&res, false, ConnectionHeader::Omit),
            "HTTP/1.1 200 OK\r\nDate: Thu, 26 Nov 2026 14:55:00 GMT\r\n\
             Content-Type: text/plain\r\nContent-Length: 11\r\n\r\nHello World"
        );
        assert!(encoded(&res, true, ConnectionHeader::Close)
            .ends_with("Content-Length: 11\r\nConnection: close\r\n\r\n"));
        assert!(encoded(&res, false, ConnectionHeader::KeepAlive)
            .contains("Connection: keep-alive\r\n"));
    }

    #[test]
    fn bodiless_statuses_carry_neither_length_nor_body() {
        let mut res = Response::new();
        res.status(204).body("ignored");
        let text = encoded(&res, false, ConnectionHeader::Omit);
        assert!(text.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(!text.contains("Content-Length") && text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn header_injection_and_reserved_fields_are_refused() {
        let mut res = Response::new();
        assert_eq!(
            res.try_header("X", "a\r\nSet-Cookie: x"),
            Err(HeaderError::InvalidValue)
        );
        assert_eq!(res.try_header("X", "a\0"), Err(HeaderError::InvalidValue));
        assert_eq!(
            res.try_header("Bad Name", "v"),
            Err(HeaderError::InvalidName)
        );
        assert_eq!(res.try_header("", "v"), Err(HeaderError::InvalidName));
        assert_eq!(
            res.try_header("content-length", "1"),
            Err(HeaderError::Reserved)
        );
        assert_eq!(res.try_header("X-Tab", "a\tb"), Ok(()));
        assert!(encoded(&res, false, ConnectionHeader::Omit).contains("X-Tab: a\tb\r\n"));
    }

    #[test]
    fn invalid_input_to_a_setter_is_recorded_not_panicked() {
        let mut res = Response::new();
        res.status(404).status(101).status(600);
        assert_eq!(res.status_code(), 404, "an invalid code is not set");
        assert_eq!(
            res.misuse(),
            Some(&Misuse::Status(StatusError(101))),
            "the first"
        );
        assert_eq!(res.try_status(99).map(|_| ()), Err(StatusError(99)));
        res.reset();
        assert_eq!(res.misuse(), None);
        for (name, value, error) in [
            ("X", "a\r\nSet-Cookie: x", HeaderError::InvalidValue),
            ("Content-Length", "5", HeaderError::Reserved),
            ("Bad Name", "v", HeaderError::InvalidName),
        ] {
            res.reset();
            res.header(name, value);
            let name = name.to_string();
            assert_eq!(res.misuse(), Some(&Misuse::Header { name, error }));
            assert!(!encoded(&res, false, ConnectionHeader::Omit).contains("Set-Cookie"));
        }
    }

    #[test]
    fn error_response_is_plain_text_and_closes() {
        let mut out = Vec::new();
        encode_error(&mut out, 400, &"invalid header field name", DATE);
        let text = String::from_utf8(out).unwrap();
        let body = "400 Bad Request: invalid header field name\n";
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with(&format!("\r\n\r\n{body}")));
    }

    #[test]
    fn decimal_without_allocation() {
        for n in [0u64, 7, 10, 999, u64::MAX] {
            let mut out = Vec::new();
            write_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn reset_keeps_nothing_but_capacity() {
        let mut res = Response::new();
        res.status(404).header("X", "y").body("gone").close();
        res.reset();
        assert_eq!(res.status_code(), 200);
        assert!(res.body_bytes().is_empty() && !res.wants_close());
        assert!(encoded(&res, false, ConnectionHeader::Omit).ends_with("Content-Length: 0\r\n\r\n"));
    }
}
