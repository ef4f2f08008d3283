//! Request heads: parsing (with `httparse`), framing, and the [`Request`] a handler sees.
//!
//! See [`Request`]'s example.

use std::fmt;
use std::mem::MaybeUninit;
use std::net::IpAddr;

/// The most header fields a request may carry; one more is answered with 431.
///
/// So [`Request::headers`] gives at most this many: see its example.
pub const HEADERS_MAX: usize = 100;
/// Empty lines (CRLF) ignored before a request line (RFC 9112 section 2.2 asks for at least
/// one); more is answered with 400, before any handler is called.
///
/// See [`Request`]'s example for the handler's side, which never sees those lines.
pub const EMPTY_LINES_MAX: usize = 4;
/// The longest method, in bytes: past it a method is longer than any this server implements
/// and is answered with 501 (RFC 9112 section 3), as soon as `METHOD_BYTES_MAX + 1` bytes of
/// it have arrived, whatever follows. The longest registered method (`UPDATEREDIRECTREF`)
/// has 17 bytes. It is below the smallest request line limit (64 bytes, see
/// [`Limits::HEAD_PART_BYTES_MIN`](crate::Limits::HEAD_PART_BYTES_MIN)), so a long method
/// gets its 501 before the line could get a 414.
///
/// ```
/// use ringmaster::http::request::METHOD_BYTES_MAX;
/// use ringmaster::Limits;
///
/// assert!("UPDATEREDIRECTREF".len() <= METHOD_BYTES_MAX);
/// assert!(METHOD_BYTES_MAX < Limits::HEAD_PART_BYTES_MIN as usize);
/// ```
pub const METHOD_BYTES_MAX: usize = 32;

/// The HTTP version of a request.
///
/// See [`Request::version`]'s example.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: the connection closes after the response unless the client asks for
    /// `Connection: keep-alive`.
    Http10,
    /// HTTP/1.1: the connection stays open unless either side says `Connection: close`.
    Http11,
}

/// The form a request-target was sent in (RFC 9112 section 3.2). The authority form, which
/// only `CONNECT` uses, is refused with that method ([`HeadError::ConnectUnsupported`]); any
/// other shape is 400.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetForm {
    /// `/path?query`, as nearly every request sends it.
    Origin,
    /// `http://authority/path?query` (or `https`, either in any case), the form a proxy is
    /// sent. RFC 9112 section 3.2.2 has a server take the authority as the host, ignoring the
    /// `Host` field, so the target is converted: [`Head::target`] holds the path and query, and
    /// [`Head::host`] the authority. An authority that is empty or holds userinfo is 400.
    Absolute,
    /// `*`, which only `OPTIONS` may use (any other method is 400): a question about the
    /// server as a whole, which the server answers itself, without calling the handler:
    /// `200` with `Allow:` [`OPTIONS_ALLOW`] and no body.
    Asterisk,
}

/// The `Allow` field of the server's answer to `OPTIONS *`: the methods a handler is
/// expected to serve. `CONNECT` is not among them: the server refuses it
/// (`501 Not Implemented`).
///
/// ```
/// use ringmaster::http::OPTIONS_ALLOW;
///
/// assert!(OPTIONS_ALLOW.split(", ").any(|method| method == "PATCH"));
/// assert!(!OPTIONS_ALLOW.contains("CONNECT"));
/// ```
pub const OPTIONS_ALLOW: &str = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS";

/// How the request's body is framed.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// A body of exactly this many bytes (`Content-Length`).
    Length(u64),
    /// A body in the `chunked` transfer coding.
    Chunked,
}

/// The size limits a head is checked against.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    /// The longest request line, CRLF included; longer is answered with 414.
    pub request_line_bytes_max: usize,
    /// The largest header section (the fields after the request line, and the blank line
    /// that ends them); larger is answered with 431.
    pub request_fields_bytes_max: usize,
    /// The largest body; larger is answered with 413.
    pub request_body_bytes_max: u64,
}

impl HeadLimits {
    /// The most bytes one connection buffers for one request: its head and body at their
    /// limits. Past it the connection is closed.
    pub fn input_bytes_max(&self) -> usize {
        self.request_line_bytes_max
            + self.request_fields_bytes_max
            + usize::try_from(self.request_body_bytes_max).unwrap_or(usize::MAX)
    }
}

/// Why a head was refused, mapped to a status code in one place ([`HeadError::status`]).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The bytes are not an HTTP/1.x request head; the detail names what was wrong.
    Malformed(&'static str),
    /// The request line is longer than `request_line_bytes_max`.
    RequestLineTooLong,
    /// The header section is larger than `request_fields_bytes_max`.
    HeadTooLarge,
    /// More than [`HEADERS_MAX`] header fields.
    TooManyHeaders,
    /// `Content-Length` is not one run of digits, repeats, or overflows.
    BadContentLength,
    /// The body is larger than `request_body_bytes_max`.
    BodyTooLarge,
    /// A transfer coding other than `chunked` (which comes last): 501.
    TransferEncodingUnsupported,
    /// An HTTP/1.1 request without exactly one valid `Host` field.
    MissingHost,
    /// A well-formed version this server does not speak (`HTTP/2.0`, `HTTP/1.2`): 505.
    VersionNotSupported,
    /// An `Expect` other than `100-continue`: 417.
    ExpectationFailed,
    /// A method longer than [`METHOD_BYTES_MAX`]: longer than any this server implements,
    /// 501 (RFC 9112 section 3).
    MethodTooLong,
    /// `CONNECT`: 501. It asks the server to become a tunnel, and a handler can only answer
    /// with a framed response (a 2xx to `CONNECT` may not even carry `Content-Length`), so no
    /// handler can serve it: the server refuses it before any handler sees it.
    ConnectUnsupported,
}

impl HeadError {
    /// The status code that answers this error; the connection closes after it.
    pub fn status(self) -> u16 {
        match self {
            HeadError::Malformed(_) | HeadError::BadContentLength | HeadError::MissingHost => 400,
            HeadError::VersionNotSupported => 505,
            HeadError::ExpectationFailed => 417,
            HeadError::RequestLineTooLong => 414,
            HeadError::HeadTooLarge | HeadError::TooManyHeaders => 431,
            HeadError::BodyTooLarge => 413,
            HeadError::TransferEncodingUnsupported
            | HeadError::MethodTooLong
            | HeadError::ConnectUnsupported => 501,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::Malformed(what) => write!(f, "malformed request: {what}"),
            HeadError::RequestLineTooLong => f.write_str("request line too long"),
            HeadError::HeadTooLarge => f.write_str("request header section too large"),
            HeadError::TooManyHeaders => {
                write!(f, "more than {HEADERS_MAX} header fields")
            }
            HeadError::BadContentLength => f.write_str("invalid Content-Length"),
            HeadError::BodyTooLarge => f.write_str("request body too large"),
            HeadError::TransferEncodingUnsupported => {
                f.write_str("only the chunked transfer coding is supported")
            }
            HeadError::MissingHost => f.write_str("HTTP/1.1 request needs exactly one valid Host"),
            HeadError::VersionNotSupported => f.write_str("only HTTP/1.0 and HTTP/1.1 are spoken"),
            HeadError::ExpectationFailed => f.write_str("only Expect: 100-continue is supported"),
            HeadError::MethodTooLong => {
                f.write_str("method longer than any this server implements")
            }
            HeadError::ConnectUnsupported => f.write_str("this server does not tunnel (CONNECT)"),
        }
    }
}

/// A parsed head, borrowing the bytes it was parsed from.
#[doc(hidden)]
#[derive(Debug)]
pub struct Head<'b> {
    /// The method token.
    pub method: &'b str,
    /// The request-target in origin form (path and query): as sent, except for an
    /// absolute-form target, given without its scheme and authority (`http://h/p?q` is
    /// `/p?q`), an empty path as `/` (`http://h` is `/`) unless a query follows, which stays
    /// alone (`http://h?q` is `?q`; [`Request::path`] reads its empty path as `/`). `*` for
    /// the asterisk form. The request line keeps the target as sent.
    pub target: &'b str,
    /// The form the target was sent in.
    pub target_form: TargetForm,
    /// The host the request is for: the authority of an absolute-form target, else the
    /// `Host` field's value (possibly empty). `None` only for an HTTP/1.0 request without
    /// exactly one valid `Host` field (HTTP/1.1 requires one). A valid host is ASCII; it is
    /// kept as bytes so that only a handler that asks for it as text pays for the conversion
    /// ([`Request::host`]): converting it for every request cost about 6 ns of the 80 ns
    /// `parse_head/wrk` takes in `benches/http.rs`.
    pub host: Option<&'b [u8]>,
    /// The version.
    pub version: Version,
    /// The header fields, in order.
    pub headers: &'b [httparse::Header<'b>],
    /// Bytes of the head, blank line included; the body starts here.
    pub head_len: usize,
    /// How the body is framed.
    pub framing: Framing,
    /// Whether the client lets the connection stay open after the response.
    pub keep_alive: bool,
    /// `HEAD`: the response carries no body.
    pub head_only: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request: the client waits for a `100 Continue`
    /// before it sends the body.
    pub expect_continue: bool,
    /// The request line as received, without its line end.
    pub line: &'b [u8],
}

impl Head<'_> {
    /// The request line as received, without its line end (`GET / HTTP/1.1`).
    pub fn request_line(&self) -> &[u8] {
        self.line
    }
}

/// The outcome of parsing: a whole head, or a need for more bytes.
#[doc(hidden)]
#[derive(Debug)]
pub enum Parsed<'b> {
    /// A complete head.
    Complete(Head<'b>),
    /// The head is not complete yet; it is within the limits so far.
    Partial,
}

/// Parses one request head from the start of `buf`, using `headers` as the field table.
#[doc(hidden)]
pub fn parse_head<'b>(
    buf: &'b [u8],
    headers: &'b mut [MaybeUninit<httparse::Header<'b>>; HEADERS_MAX],
    limits: &HeadLimits,
) -> Result<Parsed<'b>, HeadError> {
    // Empty lines before the request line: a few are ignored, each must end in CRLF.
    let start = line_start(buf);
    // The empty lines and the byte after them: a CR they end with must be followed by LF,
    // which the request line's first byte shows (before the method's length is judged on it).
    check_line_ends(&buf[..(start + 1).min(buf.len())])?;
    if buf[..start].iter().filter(|&&b| b == b'\n').count() > EMPTY_LINES_MAX {
        return Err(HeadError::Malformed(
            "too many empty lines before the request line",
        ));
    }
    // Judged on the method's first bytes, before anything else about the line, so that the
    // answer is the same however the bytes were split.
    if method_too_long(&buf[start..]) {
        return Err(HeadError::MethodTooLong);
    }
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            check_line_ends(buf)?;
            return partial_within_limits(buf, limits).map(|()| Parsed::Partial);
        }
        Err(httparse::Error::Version) => return version_verdict(buf, limits),
        Err(e) => return Err(map_httparse_error(e, buf, limits)),
    };
    // httparse accepts a bare LF as a line end; RFC 9112 does not let a server do so.
    check_line_ends(&buf[..head_len])?;
    // The request line is complete when the head is.
    let line_end = line_end(buf).expect("a complete head has a complete request line");
    if line_end - start > limits.request_line_bytes_max {
        return Err(HeadError::RequestLineTooLong);
    }
    if head_len - line_end > limits.request_fields_bytes_max {
        return Err(HeadError::HeadTooLarge);
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    // Before the target: a CONNECT target is in authority form, which nothing else may use.
    if method == "CONNECT" {
        return Err(HeadError::ConnectUnsupported);
    }
    let target = Target::parse(method, target)?;
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    let headers: &'b [httparse::Header<'b>] = req.headers;
    let fields = Fields::scan(headers, version)?;
    // An absolute-form target's authority overrides the Host field, which HTTP/1.1 still
    // requires (RFC 9112 section 3.2.2).
    if version == Version::Http11 && fields.host.is_none() {
        return Err(HeadError::MissingHost);
    }
    let framing = match (fields.content_length, fields.transfer_encoding) {
        (Some(_), Some(_)) => {
            return Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ))
        }
        (None, Some(Coding::Chunked)) => Framing::Chunked,
        (None, Some(Coding::Unsupported)) => return Err(HeadError::TransferEncodingUnsupported),
        (Some(0), None) | (None, None) => Framing::None,
        (Some(n), None) if n > limits.request_body_bytes_max => {
            return Err(HeadError::BodyTooLarge)
        }
        (Some(n), None) => Framing::Length(n),
    };
    let keep_alive = match version {
        Version::Http11 => !fields.close,
        Version::Http10 => fields.keep_alive && !fields.close,
    };
    Ok(Parsed::Complete(Head {
        method,
        target: target.origin,
        target_form: target.form,
        host: target.authority.map(str::as_bytes).or(fields.host),
        version,
        headers,
        head_len,
        framing,
        keep_alive,
        head_only: method == "HEAD",
        expect_continue: fields.expect_continue && framing != Framing::None,
        line: &buf[line_start(buf)..line_end - 2],
    }))
}

/// Whether `line` starts with more than [`METHOD_BYTES_MAX`] token bytes: a method too long
/// whatever follows. Only its first bytes are looked at.
fn method_too_long(line: &[u8]) -> bool {
    // An ordinary method ends in a space among them: a search for it (memchr) passes every
    // ordinary request before the token check, whose test of a byte that is not alphanumeric
    // searches a list of 15.
    line.get(..=METHOD_BYTES_MAX).is_some_and(|first| {
        !first.contains(&b' ') && first.iter().all(|&b| super::response::is_token_byte(b))
    })
}

/// A request-target, checked and converted to origin form.
struct Target<'b> {
    /// The path and query (see [`Head::target`]).
    origin: &'b str,
    form: TargetForm,
    /// The authority of an absolute-form target.
    authority: Option<&'b str>,
}

impl<'b> Target<'b> {
    /// Checks the bytes and the form of `raw`, the target of a `method` request.
    fn parse(method: &str, raw: &'b str) -> Result<Target<'b>, HeadError> {
        if !visible_ascii(raw.as_bytes()) {
            return Err(HeadError::Malformed("request target is not visible ASCII"));
        }
        // httparse refuses an empty target, so there is a first byte.
        let (origin, form, authority) = match raw.as_bytes()[0] {
            b'/' => (raw, TargetForm::Origin, None),
            b'*' if raw.len() == 1 && method == "OPTIONS" => (raw, TargetForm::Asterisk, None),
            b'*' if raw.len() == 1 => {
                return Err(HeadError::Malformed("target * is only for OPTIONS"));
            }
            _ => {
                let (origin, authority) = absolute_form(raw)?;
                (origin, TargetForm::Absolute, Some(authority))
            }
        };
        Ok(Target {
            origin,
            form,
            authority,
        })
    }
}

/// Splits an absolute-form target (`http://authority/path?query`) into its origin-form part
/// and its authority. Only `http` and `https` are served (in any case); an empty authority or
/// one with userinfo is refused (RFC 9110 section 4.2).
fn absolute_form(raw: &str) -> Result<(&str, &str), HeadError> {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return Err(HeadError::Malformed(
            "request target is not in origin or absolute form",
        ));
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(HeadError::Malformed(
            "request target scheme is not http or https",
        ));
    }
    let (authority, origin) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    if authority.is_empty() {
        return Err(HeadError::Malformed("request target has no host"));
    }
    if authority.contains('@') {
        return Err(HeadError::Malformed("userinfo in the request target"));
    }
    if !valid_host(authority.as_bytes()) {
        return Err(HeadError::Malformed("invalid host in the request target"));
    }
    // The empty path is `/` (RFC 9112 section 3.2.1); `/` with a query is not in the bytes,
    // so a query stays alone (`?q`) and `Request::path` reads the empty path as `/`.
    Ok((if origin.is_empty() { "/" } else { origin }, authority))
}

/// Whether every byte is visible ASCII (`0x21..=0x7E`), all a request-target may hold: a URI
/// has no raw non-ASCII byte (httparse lets `0x80..=0xFF` through) and no control byte.
fn visible_ascii(bytes: &[u8]) -> bool {
    // Branch-free over the bytes, so that the compiler vectorizes it: it runs over every
    // target, and clean ones (nearly all of them) are scanned to the end.
    let bad = bytes.iter().fold(0u8, |bad, &b| {
        bad | u8::from(b.wrapping_sub(0x21) > 0x7e - 0x21)
    });
    bad == 0
}

/// Every LF must follow a CR, and every CR precede an LF (a CR last in `buf` may still get
/// its LF).
pub(crate) fn check_line_ends(buf: &[u8]) -> Result<(), HeadError> {
    // Branch-free over pairs of bytes, so that the compiler vectorizes it: this runs over
    // every head, and clean heads (nearly all of them) are scanned to the end.
    let pairs = buf.iter().zip(buf.iter().skip(1));
    let bad = pairs.fold(0u8, |bad, (&prev, &b)| {
        let bare_lf = (b == b'\n') & (prev != b'\r');
        let bare_cr = (prev == b'\r') & (b != b'\n');
        bad | u8::from(bare_lf) | (u8::from(bare_cr) << 1)
    });
    let bad = bad | u8::from(buf.first() == Some(&b'\n'));
    match bad {
        0 => Ok(()),
        // Which fault comes first matters only for the message; find it.
        _ => {
            let mut prev = 0u8;
            for &b in buf {
                match (prev, b) {
                    (b'\r', b'\n') => {}
                    (_, b'\n') => return Err(HeadError::Malformed("bare LF as a line end")),
                    (b'\r', _) => return Err(HeadError::Malformed("bare CR as a line end")),
                    _ => {}
                }
                prev = b;
            }
            unreachable!("the fast scan found a fault")
        }
    }
}

/// A partial head is fine while it fits the limits; past them the answer is already known.
fn partial_within_limits(buf: &[u8], limits: &HeadLimits) -> Result<(), HeadError> {
    let start = line_start(buf);
    match line_end(buf) {
        None if buf.len() - start > limits.request_line_bytes_max => {
            Err(HeadError::RequestLineTooLong)
        }
        None => Ok(()),
        Some(end) if end - start > limits.request_line_bytes_max => {
            Err(HeadError::RequestLineTooLong)
        }
        Some(end) if buf.len() - end > limits.request_fields_bytes_max => {
            Err(HeadError::HeadTooLarge)
        }
        Some(_) => Ok(()),
    }
}

/// Where the request line starts: after any empty lines.
fn line_start(buf: &[u8]) -> usize {
    buf.iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len())
}

/// Just past the request line's line end, if it has arrived.
fn line_end(buf: &[u8]) -> Option<usize> {
    let start = line_start(buf);
    let len = buf[start..].iter().position(|&b| b == b'\n')?;
    Some(start + len + 1)
}

fn map_httparse_error(e: httparse::Error, buf: &[u8], limits: &HeadLimits) -> HeadError {
    // An over-long line is reported as such even when httparse stopped at a bad byte later.
    if let Err(limit) = partial_within_limits(buf, limits) {
        if limit == HeadError::RequestLineTooLong {
            return limit;
        }
    }
    // The fault reported is the first one in the bytes: a request-line error is judged on
    // the request line alone, so that the answer does not depend on what else arrived.
    let scope = match e {
        httparse::Error::Version | httparse::Error::Token | httparse::Error::Status => {
            line_end(buf).unwrap_or(buf.len())
        }
        _ => buf.len(),
    };
    if let Err(line_end) = check_line_ends(&buf[..scope]) {
        return line_end;
    }
    match e {
        httparse::Error::Version => HeadError::Malformed("invalid HTTP version"),
        httparse::Error::HeaderName => HeadError::Malformed("invalid header field name"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header field value"),
        httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
        httparse::Error::Status | httparse::Error::Token => {
            HeadError::Malformed("invalid token in request line")
        }
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
    }
}

/// The verdict on a request line whose version httparse refused (it refuses as soon as a
/// version is not 1.0 or 1.1). A well-formed `HTTP/D.D` is 505, anything else 400; until
/// the line end has arrived, a version that may still turn out well-formed is waited for,
/// so that the answer does not depend on how the bytes were split.
fn version_verdict<'b>(buf: &[u8], limits: &HeadLimits) -> Result<Parsed<'b>, HeadError> {
    let line = &buf[line_start(buf)..];
    let end = line.iter().position(|&b| b == b'\r' || b == b'\n');
    // method SP request-target SP HTTP-version, nothing more.
    let mut parts = line[..end.unwrap_or(line.len())].split(|&b| b == b' ');
    let version = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(_), Some(version), None) => version,
        _ => return Err(HeadError::Malformed("invalid HTTP version")),
    };
    let pattern = b"HTTP/0.0";
    let prefix = version.len() <= pattern.len()
        && version.iter().zip(pattern).all(|(&b, &p)| match p {
            b'0' => b.is_ascii_digit(),
            _ => b == p,
        });
    let whole = prefix && version.len() == pattern.len();
    let wait = || partial_within_limits(buf, limits).map(|()| Parsed::Partial);
    match end.map(|e| (line[e], line.get(e + 1))) {
        None if prefix => wait(),
        Some((b'\r', None)) if whole => wait(),
        Some((b'\n', _)) => Err(HeadError::Malformed("bare LF as a line end")),
        Some((b'\r', Some(&next))) if next != b'\n' => {
            Err(HeadError::Malformed("bare CR as a line end"))
        }
        _ if whole => Err(HeadError::VersionNotSupported),
        _ => Err(HeadError::Malformed("invalid HTTP version")),
    }
}

/// What a `Transfer-Encoding` list amounts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coding {
    /// Exactly `chunked`.
    Chunked,
    /// `chunked` last, after codings this server does not decode.
    Unsupported,
}

/// What the framing and connection rules need from the header fields, in one pass.
#[derive(Default)]
struct Fields<'b> {
    content_length: Option<u64>,
    transfer_encoding: Option<Coding>,
    /// Across every `Transfer-Encoding` field: whether `chunked` was seen, whether the last
    /// coding was `chunked`, whether another coding was seen.
    chunked_seen: bool,
    last_is_chunked: bool,
    other_coding: bool,
    hosts: usize,
    /// The `Host` field's value while it is the only one and valid.
    host: Option<&'b [u8]>,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

impl<'b> Fields<'b> {
    fn scan(headers: &[httparse::Header<'b>], version: Version) -> Result<Fields<'b>, HeadError> {
        let mut f = Fields::default();
        let mut te_fields = 0;
        for h in headers {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                if f.content_length.is_some() {
                    return Err(HeadError::BadContentLength);
                }
                f.content_length = Some(parse_content_length(h.value)?);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                te_fields += 1;
                f.codings(h.value)?;
            } else if name.eq_ignore_ascii_case(b"host") {
                f.hosts += 1;
                f.host = (f.hosts == 1 && valid_host(h.value)).then_some(h.value);
            } else if name.eq_ignore_ascii_case(b"connection") {
                for option in list(h.value) {
                    f.close |= option.eq_ignore_ascii_case(b"close");
                    f.keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case(b"expect") && version == Version::Http11 {
                // HTTP/1.0 clients cannot send Expect meaningfully; it is ignored for them.
                if !h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                    return Err(HeadError::ExpectationFailed);
                }
                f.expect_continue = true;
            }
        }
        if te_fields > 0 {
            if version == Version::Http10 {
                return Err(HeadError::Malformed("Transfer-Encoding in HTTP/1.0"));
            }
            if !f.last_is_chunked {
                return Err(HeadError::Malformed(
                    "Transfer-Encoding must end with chunked",
                ));
            }
            f.transfer_encoding = Some(if f.other_coding {
                Coding::Unsupported
            } else {
                Coding::Chunked
            });
        }
        Ok(f)
    }

    /// Adds one `Transfer-Encoding` field's codings.
    fn codings(&mut self, value: &[u8]) -> Result<(), HeadError> {
        for coding in list(value) {
            // A coding may carry parameters (`gzip;q=1`); its name is what counts.
            let name = coding
                .split(|&b| b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            if name.is_empty() || !name.iter().all(|&b| super::response::is_token_byte(b)) {
                return Err(HeadError::Malformed("invalid transfer coding"));
            }
            let chunked = name.eq_ignore_ascii_case(b"chunked");
            if chunked && self.chunked_seen {
                return Err(HeadError::Malformed("chunked applied twice"));
            }
            if !chunked && self.chunked_seen {
                return Err(HeadError::Malformed(
                    "Transfer-Encoding must end with chunked",
                ));
            }
            self.chunked_seen |= chunked;
            self.other_coding |= !chunked;
            self.last_is_chunked = chunked;
        }
        Ok(())
    }
}

/// The non-empty elements of a comma-separated field value, trimmed.
pub(crate) fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
}

/// `Host = uri-host [ ":" port ]`: a reg-name or IP literal, with no whitespace, userinfo,
/// path or other delimiter. An empty value is allowed (RFC 9112 section 3.2).
fn valid_host(value: &[u8]) -> bool {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b);
    value.iter().all(|&b| allowed(b))
}

/// `Content-Length = 1*DIGIT`, nothing else (no sign, no list, no space inside).
pub(crate) fn parse_content_length(value: &[u8]) -> Result<u64, HeadError> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::BadContentLength);
    }
    value.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(HeadError::BadContentLength)
    })
}

/// The path of an origin-form `target`: up to any `?`, `/` when empty.
pub(crate) fn path_of(target: &str) -> &str {
    match target.split_once('?').map_or(target, |(path, _)| path) {
        "" => "/",
        path => path,
    }
}

/// The query of an origin-form `target`: what follows the first `?`, if any.
pub(crate) fn query_of(target: &str) -> Option<&str> {
    target.split_once('?').map(|(_, q)| q)
}

/// What a [`Router`](crate::Router) found for a request: its route's parameters, and the
/// length of the mount prefix taken off the target's front (0 for none).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Routed<'a> {
    pub(crate) params: &'a [(&'a str, &'a str)],
    pub(crate) base: usize,
}

/// `target` without its first `base` bytes (a mount's prefix): `/` when nothing is left.
pub(crate) fn below(target: &str, base: usize) -> &str {
    match target.get(base..) {
        Some("") | None => "/",
        Some(rest) => rest,
    }
}

/// A request as a handler sees it: the head and the whole body, borrowed from the
/// connection's buffers for the duration of the call.
///
/// ```no_run
/// use ringmaster::{Request, Response, Server};
///
/// let server = Server::new(|req: &Request<'_>, res: &mut Response| {
///     // GET /hello?name=ada with `Accept-Language: fr`
///     let name = req
///         .query()
///         .and_then(|q| q.strip_prefix("name="))
///         .unwrap_or("world");
///     let french = req.header("accept-language") == Some(&b"fr"[..]);
///     match (req.method(), req.path()) {
///         ("GET", "/hello") if french => res.body(format!("bonjour {name}\n")),
///         ("GET", "/hello") => res.body(format!("hello {name}\n")),
///         ("POST", "/echo") => res.body(req.body()),
///         _ => res.status(404).body("not found\n"),
///     };
/// });
/// ```
#[derive(Debug)]
pub struct Request<'a> {
    head: &'a Head<'a>,
    body: &'a [u8],
    routed: Option<&'a Routed<'a>>,
    peer: Option<IpAddr>,
}

impl<'a> Request<'a> {
    /// The request of `head` and `body`, from the client at `peer` when it was looked up.
    #[inline]
    pub(crate) fn new(head: &'a Head<'a>, body: &'a [u8], peer: Option<IpAddr>) -> Request<'a> {
        Request {
            head,
            body,
            routed: None,
            peer,
        }
    }

    /// The same request as a router's route sees it.
    pub(crate) fn routed<'b>(&'b self, routed: &'b Routed<'b>) -> Request<'b>
    where
        'a: 'b,
    {
        Request {
            head: self.head,
            body: self.body,
            routed: Some(routed),
            peer: self.peer,
        }
    }

    /// The value of the route parameter `name` (`/users/:id` gives `id`), as sent
    /// (percent-encoded); `None` outside a [`Router`](crate::Router)'s route or for a name
    /// the route does not have. A catch-all (`/files/*path`) gives what it matched, without
    /// its leading `/`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Request, Response, Router};
    ///
    /// fn user(req: &Request<'_>, res: &mut Response) {
    ///     // `GET /users/42` gives `Some("42")`.
    ///     match req.param("id").and_then(|id| id.parse::<u64>().ok()) {
    ///         Some(id) => res.body(format!("user {id}\n")),
    ///         None => res.status(400).body("bad user id\n"),
    ///     };
    /// }
    ///
    /// let router = Router::new().get("/users/:id", user);
    /// ```
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.routed?
            .params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    /// Every route parameter, in the route's order, as (name, value).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Request, Response, Router};
    ///
    /// // `GET /repos/rust-lang/rust` answers `owner=rust-lang name=rust`.
    /// fn repo(req: &Request<'_>, res: &mut Response) {
    ///     let pairs: Vec<String> = req.params().map(|(k, v)| format!("{k}={v}")).collect();
    ///     res.body(pairs.join(" "));
    /// }
    ///
    /// let router = Router::new().get("/repos/:owner/:name", repo);
    /// ```
    pub fn params(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.routed
            .into_iter()
            .flat_map(|r| r.params.iter().copied())
    }

    /// The prefix a [`Router::mount`](crate::Router::mount) took off the target (`/api` for
    /// a handler mounted there); empty when none was.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Request, Response, Router};
    ///
    /// // Mounted at `/api`, the new item's link is `/api/items/7`; mounted elsewhere, it follows.
    /// fn items(req: &Request<'_>, res: &mut Response) {
    ///     let location = format!("{}/items/7", req.base());
    ///     res.status(201).header("Location", location);
    /// }
    ///
    /// let router = Router::new().mount("/api", items);
    /// ```
    pub fn base(&self) -> &'a str {
        let base = self.routed.map_or(0, |r| r.base);
        self.head.target.get(..base).unwrap_or("")
    }

    /// The request-target as received, before a mount took its prefix off (Express's
    /// `req.originalUrl`); the same as [`Request::target`] outside a mount.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Request, Response, Router};
    ///
    /// // `GET /api/nope?x=1` names `/api/nope?x=1`, though its target here is `/nope?x=1`.
    /// fn not_found(req: &Request<'_>, res: &mut Response) {
    ///     res.status(404)
    ///         .body(format!("no such resource: {}\n", req.original_target()));
    /// }
    ///
    /// let router = Router::new().mount("/api", not_found);
    /// ```
    pub fn original_target(&self) -> &'a str {
        self.head.target
    }

    /// The method, as sent (`GET`, `POST`, ...; methods are case-sensitive).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Request, Response};
    ///
    /// fn read_only(req: &Request<'_>, res: &mut Response) {
    ///     match req.method() {
    ///         "GET" | "HEAD" => res.body("the resource\n"),
    ///         _ => res.status(405).header("Allow", "GET, HEAD"),
    ///     };
    /// }
    /// ```
    pub fn method(&self) -> &'a str {
        self.head.method
    }

    /// The request-target in origin form: the path with an optional query. An absolute-form
    /// target (`http://host/p?q`, as sent to a proxy) is given without its scheme and
    /// authority (`/p?q`), `/` when its path is empty, or just `?q` when a query follows an
    /// empty path (the `/` it stands for is not in the received bytes; [`Request::path`]
    /// gives it).
    ///
    /// Under a [`Router::mount`](crate::Router::mount), the target below the mount's prefix
    /// (`/api/x?y` mounted at `/api` is `/x?y`; `/api` alone is `/`), as Express's `req.url`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Request, Response};
    ///
    /// // `GET /a?b=1` is sent to `https://example.com/a?b=1`.
    /// fn to_https(req: &Request<'_>, res: &mut Response) {
    ///     let location = format!("https://example.com{}", req.target());
    ///     res.status(308).header("Location", location);
    /// }
    /// ```
    pub fn target(&self) -> &'a str {
        match self.routed {
            Some(r) if r.base > 0 => below(self.head.target, r.base),
            _ => self.head.target,
        }
    }

    /// The path: the request-target up to any `?`; `/` for an absolute-form target with an
    /// empty path.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Request, Response};
    ///
    /// fn pages(req: &Request<'_>, res: &mut Response) {
    ///     // The query takes no part: `/about?lang=fr` is `/about`.
    ///     match req.path() {
    ///         "/" => res.body("home\n"),
    ///         "/about" => res.body("about us\n"),
    ///         _ => res.status(404).body("not found\n"),
    ///     };
    /// }
    /// ```
    pub fn path(&self) -> &'a str {
        path_of(self.target())
    }

    /// The query: what follows the first `?` of the request-target, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Request, Response};
    ///
    /// // `GET /items?page=3` shows page 3; without a query, or a `page` in it, page 1.
    /// fn items(req: &Request<'_>, res: &mut Response) {
    ///     let page = req
    ///         .query()
    ///         .into_iter()
    ///         .flat_map(|q| q.split('&'))
    ///         .find_map(|pair| pair.strip_prefix("page="))
    ///         .and_then(|n| n.parse::<u32>().ok())
    ///         .unwrap_or(1);
    ///     res.body(format!("page {page}\n"));
    /// }
    /// ```
    pub fn query(&self) -> Option<&'a str> {
        query_of(self.head.target)
    }

    /// The HTTP version.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Request, Response, Version};
    ///
    /// fn which(req: &Request<'_>, res: &mut Response) {
    ///     let version = match req.version() {
    ///         Version::Http10 => "HTTP/1.0",
    ///         Version::Http11 => "HTTP/1.1",
    ///     };
    ///     res.body(format!("you spoke {version}\n"));
    /// }
    /// ```
    pub fn version(&self) -> Version {
        self.head.version
    }

    /// The host the request is for: the authority of an absolute-form target (the server
    /// then ignores the `Host` field, RFC 9112 section 3.2.2), else the `Host` field's value
    /// (empty if the field is). `None` only for an HTTP/1.0 request without exactly one valid
    /// `Host`: HTTP/1.1 requests without one are refused.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Request, Response};
    ///
    /// // One server, two sites. A port, when sent, is part of the host (`a.example:8080`).
    /// fn sites(req: &Request<'_>, res: &mut Response) {
    ///     match req.host() {
    ///         Some("a.example") => res.body("site A\n"),
    ///         Some("b.example") => res.body("site B\n"),
    ///         // Another host, or an HTTP/1.0 request without one.
    ///         _ => res.status(404).body("unknown site\n"),
    ///     };
    /// }
    /// ```
    pub fn host(&self) -> Option<&'a str> {
        // A valid host is ASCII (`valid_host`), so the conversion cannot fail.
        std::str::from_utf8(self.head.host?).ok()
    }

    /// The value of the first field named `name` (compared ignoring ASCII case). For an
    /// absolute-form target, `host` gives the target's authority, as [`Request::host`] does;
    /// the `Host` field as sent is still among [`Request::headers`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Request, Response};
    ///
    /// fn upload(req: &Request<'_>, res: &mut Response) {
    ///     // `Content-Type: application/json; charset=utf-8` passes, whatever the name's case.
    ///     let json = req
    ///         .header("content-type")
    ///         .is_some_and(|v| v.starts_with(b"application/json"));
    ///     if !json {
    ///         res.status(415).body("send JSON\n");
    ///         return;
    ///     }
    ///     res.status(204);
    /// }
    /// ```
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        if self.head.target_form == TargetForm::Absolute && name.eq_ignore_ascii_case("host") {
            return self.head.host;
        }
        self.head
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// Every header field, in the order received, as (name, value).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Request, Response};
    ///
    /// // Echoes the request's fields, one per line, as received.
    /// fn echo_headers(req: &Request<'_>, res: &mut Response) {
    ///     res.header("Content-Type", "text/plain");
    ///     for (name, value) in req.headers() {
    ///         res.write(name).write(": ").write(value).write("\n");
    ///     }
    /// }
    /// ```
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.head.headers.iter().map(|h| (h.name, h.value))
    }

    /// The body (empty when the request has none).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Request, Response};
    ///
    /// fn word_count(req: &Request<'_>, res: &mut Response) {
    ///     match std::str::from_utf8(req.body()) {
    ///         Ok(text) => res.body(format!("{} words\n", text.split_whitespace().count())),
    ///         Err(_) => res.status(400).body("send UTF-8 text\n"),
    ///     };
    /// }
    /// ```
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The client's address: the connection's peer, `None` when the server did not look it
    /// up. It is looked up once per connection, when it is accepted, and only when something
    /// needs it: [`Config::client_addresses`](crate::Config::client_addresses) (which the
    /// `ringmaster` binary sets with `--proxy`) or an access log. An IPv4 client of an IPv6
    /// socket shows as an IPv4-mapped address (`::ffff:192.0.2.1`; [`IpAddr::to_canonical`]
    /// gives the IPv4 one). It is whoever opened the connection: behind a proxy, the proxy.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Request, Response, Server};
    ///
    /// let server = Server::new(|req: &Request<'_>, res: &mut Response| {
    ///     // An IPv4 client of an IPv6 socket: `::ffff:192.0.2.1`, canonical `192.0.2.1`.
    ///     match req.peer_addr().map(|ip| ip.to_canonical()) {
    ///         Some(ip) if ip.is_loopback() => res.body("hello, local client\n"),
    ///         Some(ip) => res.body(format!("hello, {ip}\n")),
    ///         None => res.body("hello\n"),
    ///     };
    /// })
    /// .client_addresses(true);
    /// ```
    pub fn peer_addr(&self) -> Option<IpAddr> {
        self.peer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        request_line_bytes_max: 64,
        request_fields_bytes_max: 256,
        request_body_bytes_max: 100,
    };

    fn parse(buf: &[u8]) -> Result<Option<(Framing, bool, usize)>, HeadError> {
        let mut headers = [const { MaybeUninit::uninit() }; HEADERS_MAX];
        match parse_head(buf, &mut headers, &LIMITS)? {
            Parsed::Complete(h) => Ok(Some((h.framing, h.keep_alive, h.head_len))),
            Parsed::Partial => Ok(None),
        }
    }

    #[test]
    fn framing_and_connection_rules() {
        type Want = Result<Option<(Framing, bool)>, HeadError>;
        let cases: &[(&[u8], Want)] = &[
            (
                b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
                Ok(Some((Framing::None, true))),
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                Ok(Some((Framing::None, false))),
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n",
                Ok(Some((Framing::None, false))),
            ),
            (b"GET / HTTP/1.0\r\n\r\n", Ok(Some((Framing::None, false)))),
            (
                b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                Ok(Some((Framing::None, true))),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
                Ok(Some((Framing::Length(5), true))),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
                Ok(Some((Framing::None, true))),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                Ok(Some((Framing::Chunked, true))),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED \r\n\r\n",
                Ok(Some((Framing::Chunked, true))),
            ),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", Ok(None)),
            (b"GET / HTTP/1.1\r\nHost", Ok(None)),
            (b"GET / HTTP/1.1\r", Ok(None)),
        ];
        for (input, want) in cases {
            let got = parse(input).map(|o| o.map(|(f, k, _)| (f, k)));
            assert_eq!(&got, want, "input {:?}", String::from_utf8_lossy(input));
        }
    }

    /// The strictness cases of RFC 9112 (numbered as in the hardening issue); each refusal
    /// closes the connection after the answer, which the connection layer does for every
    /// `HeadError`.
    #[test]
    fn strictness() {
        use HeadError::*;
        let bad = |what| Malformed(what);
        let cases: &[(&str, &[u8], HeadError)] = &[
            ("1 CL and TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", bad("both Content-Length and Transfer-Encoding")),
            ("1 TE and CL", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", bad("both Content-Length and Transfer-Encoding")),
            ("2 two CL fields", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", BadContentLength),
            ("2 CL list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", BadContentLength),
            ("3 CL +5", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", BadContentLength),
            ("3 CL 0x5", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", BadContentLength),
            ("3 CL -1", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", BadContentLength),
            ("3 CL 5 5", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n", BadContentLength),
            ("3 CL empty", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", BadContentLength),
            ("3 CL overflow", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", BadContentLength),
            ("4 TE gzip, chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", TransferEncodingUnsupported),
            ("4 TE two fields", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", TransferEncodingUnsupported),
            ("4 TE chunked, chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", bad("chunked applied twice")),
            ("4 TE chunked not last", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", bad("Transfer-Encoding must end with chunked")),
            ("4 TE gzip only", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", bad("Transfer-Encoding must end with chunked")),
            ("4 TE empty", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", bad("Transfer-Encoding must end with chunked")),
            ("4 TE in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", bad("Transfer-Encoding in HTTP/1.0")),
            ("6 space before colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", bad("invalid header field name")),
            ("6 tab before colon", b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", bad("invalid header field name")),
            ("7 obs-fold SP", b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", bad("invalid header field name")),
            ("7 obs-fold HTAB", b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\t2\r\n\r\n", bad("invalid header field name")),
            ("8 empty name", b"GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", bad("invalid header field name")),
            ("8 control in name", b"GET / HTTP/1.1\r\nHost: a\r\nX\x01Y: v\r\n\r\n", bad("invalid header field name")),
            ("8 non-ASCII name", b"GET / HTTP/1.1\r\nHost: a\r\nX\xc3\xa9: v\r\n\r\n", bad("invalid header field name")),
            ("8 no colon", b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", bad("invalid header field name")),
            ("9 NUL in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", bad("invalid header field value")),
            ("9 CR in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", bad("bare CR as a line end")),
            ("9 control in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x1fb\r\n\r\n", bad("invalid header field value")),
            ("9 DEL in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", bad("invalid header field value")),
            ("10 bare LF in fields", b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", bad("bare LF as a line end")),
            ("10 bare LF after line", b"GET / HTTP/1.1\nHost: a\r\n\r\n", bad("bare LF as a line end")),
            ("10 bare LF at end", b"GET / HTTP/1.1\r\nHost: a\r\n\n", bad("bare LF as a line end")),
            ("10 bare CR", b"GET / HTTP/1.1\rHost: a\r\n\r\n", bad("bare CR as a line end")),
            ("10 bare LF, partial head", b"GET / HTTP/1.1\nHo", bad("bare LF as a line end")),
            ("11 no Host", b"GET / HTTP/1.1\r\n\r\n", MissingHost),
            ("11 two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", MissingHost),
            ("11 Host with space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", MissingHost),
            ("11 Host with path", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", MissingHost),
            ("11 Host with userinfo", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", MissingHost),
            ("12 space in target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", bad("invalid HTTP version")),
            ("12 control in target", b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", bad("invalid token in request line")),
            ("12 DEL in target", b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n", bad("invalid token in request line")),
            ("12 UTF-8 in target", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", bad("request target is not visible ASCII")),
            ("12 UTF-8 in query", b"GET /?q=\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", bad("request target is not visible ASCII")),
            ("12 UTF-8 in target, HTTP/1.0", b"GET /\xe2\x82\xac HTTP/1.0\r\n\r\n", bad("request target is not visible ASCII")),
            ("12 asterisk with GET", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", bad("target * is only for OPTIONS")),
            ("12 asterisk with HEAD", b"HEAD * HTTP/1.1\r\nHost: a\r\n\r\n", bad("target * is only for OPTIONS")),
            ("12 asterisk and more", b"OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n", bad("request target is not in origin or absolute form")),
            ("12 relative target", b"GET foo HTTP/1.1\r\nHost: a\r\n\r\n", bad("request target is not in origin or absolute form")),
            ("12 query alone", b"GET ?q HTTP/1.1\r\nHost: a\r\n\r\n", bad("request target is not in origin or absolute form")),
            ("12 authority form", b"GET a:80 HTTP/1.1\r\nHost: a\r\n\r\n", bad("request target is not in origin or absolute form")),
            ("12 absolute, one slash", b"GET http:/a/x HTTP/1.1\r\nHost: a\r\n\r\n", bad("request target is not in origin or absolute form")),
            ("12 absolute, other scheme", b"GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n", bad("request target scheme is not http or https")),
            ("12 absolute, no scheme", b"GET ://a/x HTTP/1.1\r\nHost: a\r\n\r\n", bad("request target scheme is not http or https")),
            ("12 absolute, scheme prefix", b"GET httpx://a/x HTTP/1.1\r\nHost: a\r\n\r\n", bad("request target scheme is not http or https")),
            ("12 absolute, empty authority", b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", bad("request target has no host")),
            ("12 absolute, nothing after //", b"GET http:// HTTP/1.1\r\nHost: a\r\n\r\n", bad("request target has no host")),
            ("12 absolute, query without host", b"GET https://?q HTTP/1.1\r\nHost: a\r\n\r\n", bad("request target has no host")),
            ("12 absolute, userinfo", b"GET http://u@a/x HTTP/1.1\r\nHost: a\r\n\r\n", bad("userinfo in the request target")),
            ("12 absolute, userinfo and password", b"GET http://u:p@a/ HTTP/1.1\r\nHost: a\r\n\r\n", bad("userinfo in the request target")),
            ("12 absolute, bad host", b"GET http://a#b/x HTTP/1.1\r\nHost: a\r\n\r\n", bad("invalid host in the request target")),
            ("12 absolute, UTF-8 host", b"GET http://caf\xc3\xa9/ HTTP/1.1\r\nHost: a\r\n\r\n", bad("request target is not visible ASCII")),
            ("11 absolute still needs a Host", b"GET http://a/x HTTP/1.1\r\n\r\n", MissingHost),
            ("11 absolute still needs a valid Host", b"GET http://a/x HTTP/1.1\r\nHost: a b\r\n\r\n", MissingHost),
            ("12 malformed version", b"GET / HTTP/1\r\nHost: a\r\n\r\n", bad("invalid HTTP version")),
            ("12 lowercase version", b"GET / http/1.1\r\nHost: a\r\n\r\n", bad("invalid HTTP version")),
            ("12 HTTP/2.0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", VersionNotSupported),
            ("12 HTTP/3.0", b"GET / HTTP/3.0\r\n\r\n", VersionNotSupported),
            ("14 method not a token", b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", bad("invalid token in request line")),
            ("14 method with NUL", b"G\x00T / HTTP/1.1\r\nHost: a\r\n\r\n", bad("invalid token in request line")),
            ("15 too many empty lines", b"\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", bad("too many empty lines before the request line")),
            ("15 bare LF empty line", b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", bad("bare LF as a line end")),
            ("Expect other", b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\n", ExpectationFailed),
            ("14 CONNECT", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", ConnectUnsupported),
            ("14 CONNECT with a path", b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", ConnectUnsupported),
            ("14 CONNECT in HTTP/1.0", b"CONNECT a:443 HTTP/1.0\r\n\r\n", ConnectUnsupported),
            ("14 method of 33 bytes", b"MMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMM / HTTP/1.1\r\nHost: a\r\n\r\n", MethodTooLong),
            ("14 method of 33 bytes, partial", b"MMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMM", MethodTooLong),
            ("14 method past the line limit", b"MMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMM", MethodTooLong),
            ("14 method of 33 bytes after an empty line", b"\r\nMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMM / HTTP/1.1\r\n\r\n", MethodTooLong),
            ("15 bare CR before a method of 33 bytes", b"\rbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", bad("bare CR as a line end")),
        ];
        for (name, input, want) in cases {
            assert_eq!(parse(input), Err(*want), "case {name}");
            let status = want.status();
            assert!(
                [400, 413, 414, 417, 431, 501, 505].contains(&status),
                "{name}"
            );
            // The connection parses its whole input again as bytes arrive: every prefix
            // must wait for more or get the same status, so that the answer does not
            // depend on how the bytes were split.
            for end in 0..input.len() {
                match parse(&input[..end]) {
                    Ok(None) => {}
                    Err(e) if e.status() == status => {}
                    other => panic!("case {name}: the first {end} bytes gave {other:?}"),
                }
            }
        }
    }

    #[test]
    fn method_length_at_and_past_the_bound() {
        let with = |n: usize| format!("{} /m HTTP/1.1\r\nHost: a\r\n\r\n", "M".repeat(n));
        assert!(matches!(
            parse(with(METHOD_BYTES_MAX - 1).as_bytes()),
            Ok(Some(_))
        ));
        assert!(matches!(
            parse(with(METHOD_BYTES_MAX).as_bytes()),
            Ok(Some(_))
        ));
        // One byte more is refused as soon as it arrives, before the line could be too long.
        let over = with(METHOD_BYTES_MAX + 1);
        for end in 0..=over.len() {
            let want = match end {
                ..=METHOD_BYTES_MAX => Ok(None),
                _ => Err(HeadError::MethodTooLong),
            };
            assert_eq!(
                parse(&over.as_bytes()[..end]),
                want,
                "the first {end} bytes"
            );
        }
        assert_eq!(
            parse("M".repeat(100 * 1024).as_bytes()),
            Err(HeadError::MethodTooLong)
        );
        // A byte that is not a token's within the first bytes is a malformed line, as before.
        let bad = format!("M(M{}", "M".repeat(METHOD_BYTES_MAX));
        assert_eq!(
            parse(bad.as_bytes()),
            Err(HeadError::Malformed("invalid token in request line"))
        );
        assert_eq!(HeadError::MethodTooLong.status(), 501);
    }

    #[test]
    fn accepted_edges() {
        let ok: &[(&str, &[u8])] = &[
            (
                "14 unknown method is the handler's",
                b"BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
            (
                "15 empty lines within the bound",
                b"\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
            ("11 empty Host", b"GET / HTTP/1.1\r\nHost:\r\n\r\n"),
            (
                "11 Host with port",
                b"GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
            ),
            ("11 IPv6 Host", b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"),
            (
                "9 HTAB and obs-text in value",
                b"GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\xe9\r\n\r\n",
            ),
            (
                "Expect in HTTP/1.0 is ignored",
                b"POST / HTTP/1.0\r\nExpect: whatever\r\nContent-Length: 1\r\n\r\n",
            ),
        ];
        for (name, input) in ok {
            assert!(
                matches!(parse(input), Ok(Some(_))),
                "case {name}: {:?}",
                parse(input)
            );
        }
    }

    /// What a handler sees of each form of target: (method and target, Host field, then
    /// target, form, host, path, query).
    #[test]
    fn target_forms_in_origin_form_at_every_split() {
        use TargetForm::*;
        type Seen = (
            &'static str,
            TargetForm,
            Option<&'static str>,
            &'static str,
            Option<&'static str>,
        );
        let cases: &[(&str, &str, Seen)] = &[
            (
                "GET /a?b=1 HTTP/1.1",
                "Host: h\r\n",
                ("/a?b=1", Origin, Some("h"), "/a", Some("b=1")),
            ),
            (
                "GET //x HTTP/1.1",
                "Host: h\r\n",
                ("//x", Origin, Some("h"), "//x", None),
            ),
            (
                "GET / HTTP/1.1",
                "Host:\r\n",
                ("/", Origin, Some(""), "/", None),
            ),
            ("GET / HTTP/1.0", "", ("/", Origin, None, "/", None)),
            (
                "GET / HTTP/1.0",
                "Host: a b\r\n",
                ("/", Origin, None, "/", None),
            ),
            (
                "GET http://x/pid HTTP/1.1",
                "Host: other\r\n",
                ("/pid", Absolute, Some("x"), "/pid", None),
            ),
            (
                "GET HTTPS://x:8443/p?q=1 HTTP/1.1",
                "Host: x\r\n",
                ("/p?q=1", Absolute, Some("x:8443"), "/p", Some("q=1")),
            ),
            (
                "GET hTtP://x HTTP/1.1",
                "Host: x\r\n",
                ("/", Absolute, Some("x"), "/", None),
            ),
            (
                "GET http://x?q=1 HTTP/1.1",
                "Host: x\r\n",
                ("?q=1", Absolute, Some("x"), "/", Some("q=1")),
            ),
            (
                "GET http://x/? HTTP/1.1",
                "Host: x\r\n",
                ("/?", Absolute, Some("x"), "/", Some("")),
            ),
            (
                "GET http://[::1]:80/a/b HTTP/1.1",
                "Host: x\r\n",
                ("/a/b", Absolute, Some("[::1]:80"), "/a/b", None),
            ),
            (
                "GET http://x/a HTTP/1.0",
                "",
                ("/a", Absolute, Some("x"), "/a", None),
            ),
            (
                "OPTIONS http://x HTTP/1.1",
                "Host: x\r\n",
                ("/", Absolute, Some("x"), "/", None),
            ),
            (
                "OPTIONS * HTTP/1.1",
                "Host: h\r\n",
                ("*", Asterisk, Some("h"), "*", None),
            ),
            ("OPTIONS * HTTP/1.0", "", ("*", Asterisk, None, "*", None)),
        ];
        for (line, host, want) in cases {
            let raw = format!("{line}\r\n{host}X: y\r\n\r\n");
            let mut headers = [const { MaybeUninit::uninit() }; HEADERS_MAX];
            let Ok(Parsed::Complete(head)) = parse_head(raw.as_bytes(), &mut headers, &LIMITS)
            else {
                panic!("{line}: {:?}", parse(raw.as_bytes()))
            };
            let req = Request::new(&head, b"", None);
            let seen = (
                req.target(),
                head.target_form,
                req.host(),
                req.path(),
                req.query(),
            );
            assert_eq!(&seen, want, "{line}");
            // `host` is the authority for the absolute form, the field as sent otherwise; the
            // field as sent stays listed.
            let sent = host.strip_prefix("Host:").map(|v| v.trim().as_bytes());
            let authority = req.host().map(str::as_bytes);
            let host_header = if head.target_form == Absolute {
                authority
            } else {
                sent
            };
            assert_eq!(req.header("HOST"), host_header, "{line}");
            assert_eq!(req.header("x"), Some(&b"y"[..]), "{line}");
            let listed = req.headers().find(|(n, _)| n.eq_ignore_ascii_case("host"));
            assert_eq!(listed.map(|(_, v)| v), sent, "{line}");
            assert_eq!(req.method(), line.split(' ').next().unwrap(), "{line}");
            for end in 0..raw.len() {
                assert_eq!(
                    parse(&raw.as_bytes()[..end]),
                    Ok(None),
                    "{line}: {end} bytes"
                );
            }
        }
    }

    #[test]
    fn expect_continue_only_when_a_body_follows() {
        let mut headers = [const { MaybeUninit::uninit() }; HEADERS_MAX];
        let buf =
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n";
        let Ok(Parsed::Complete(head)) = parse_head(buf, &mut headers, &LIMITS) else {
            panic!()
        };
        assert!(head.expect_continue);
        let mut headers = [const { MaybeUninit::uninit() }; HEADERS_MAX];
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n";
        let Ok(Parsed::Complete(head)) = parse_head(buf, &mut headers, &LIMITS) else {
            panic!()
        };
        assert!(!head.expect_continue);
    }

    #[test]
    fn limits_at_and_past_the_bound() {
        // Request line of exactly 64 bytes (CRLF included) passes; 65 is refused.
        let line = |len: usize| {
            let path = "/".repeat(len - "GET  HTTP/1.1\r\n".len());
            format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n")
        };
        assert!(parse(line(64).as_bytes()).unwrap().is_some());
        assert_eq!(
            parse(line(65).as_bytes()),
            Err(HeadError::RequestLineTooLong)
        );
        // A partial line already past the bound is refused without waiting for its end.
        assert_eq!(parse(&[b'/'; 65]), Err(HeadError::RequestLineTooLong));
        let partial = format!("GET /{}", "a".repeat(70));
        assert_eq!(
            parse(partial.as_bytes()),
            Err(HeadError::RequestLineTooLong)
        );
        // A header section of exactly 256 bytes passes; 257 is refused, complete or not.
        let line = "GET / HTTP/1.1\r\n";
        let head = |len: usize| {
            let base = "Host: a\r\nX: \r\n\r\n".len();
            format!("{line}Host: a\r\nX: {}\r\n\r\n", "v".repeat(len - base))
        };
        let exact = head(256);
        assert_eq!(
            parse(exact.as_bytes()).unwrap().unwrap().2,
            line.len() + 256
        );
        assert_eq!(parse(head(257).as_bytes()), Err(HeadError::HeadTooLarge));
        let partial = head(300);
        let cut = line.len() + 257;
        assert_eq!(
            parse(&partial.as_bytes()[..cut]),
            Err(HeadError::HeadTooLarge)
        );
        assert_eq!(parse(&partial.as_bytes()[..cut - 1]), Ok(None));
    }

    #[test]
    fn header_count_at_and_past_the_bound() {
        let with = |n: usize| {
            let mut s = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
            for i in 1..n {
                s.push_str(&format!("X{i}: v\r\n"));
            }
            s.push_str("\r\n");
            s
        };
        let limits = HeadLimits {
            request_fields_bytes_max: 16 * 1024,
            ..LIMITS
        };
        let mut headers = [const { MaybeUninit::uninit() }; HEADERS_MAX];
        assert!(matches!(
            parse_head(with(HEADERS_MAX).as_bytes(), &mut headers, &limits),
            Ok(Parsed::Complete(_))
        ));
        let mut headers = [const { MaybeUninit::uninit() }; HEADERS_MAX];
        assert_eq!(
            parse_head(with(HEADERS_MAX + 1).as_bytes(), &mut headers, &limits).unwrap_err(),
            HeadError::TooManyHeaders
        );
    }

    #[test]
    fn request_accessors() {
        let mut headers = [const { MaybeUninit::uninit() }; HEADERS_MAX];
        let buf = b"GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\nX-Thing: yes\r\n\r\n";
        let Ok(Parsed::Complete(head)) = parse_head(buf, &mut headers, &LIMITS) else {
            panic!()
        };
        let req = Request::new(&head, b"", None);
        assert_eq!(req.method(), "GET");
        assert_eq!(req.path(), "/a/b");
        assert_eq!(req.query(), Some("x=1"));
        assert_eq!(req.header("x-thing"), Some(&b"yes"[..]));
        assert_eq!(req.headers().count(), 2);
        assert_eq!(req.version(), Version::Http11);
    }
}
