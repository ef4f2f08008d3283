//! Request heads: parsing (with `httparse`), framing, and the [`Request`] a handler sees.

use std::fmt;
use std::mem::MaybeUninit;

/// The most header fields a request may carry; one more is answered with 431.
pub const HEADERS_MAX: usize = 100;

/// The HTTP version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: the connection closes after the response unless the client asks for
    /// `Connection: keep-alive`.
    Http10,
    /// HTTP/1.1: the connection stays open unless either side says `Connection: close`.
    Http11,
}

/// How the request's body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// A body of exactly this many bytes (`Content-Length`).
    Length(u64),
}

/// The size limits a head is checked against.
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

/// Why a head was refused, mapped to a status code in one place ([`HeadError::status`]).
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
    /// A `Transfer-Encoding` this server does not decode.
    TransferEncodingUnsupported,
    /// An HTTP/1.1 request without exactly one `Host` field.
    MissingHost,
}

impl HeadError {
    /// The status code that answers this error; the connection closes after it.
    pub fn status(self) -> u16 {
        match self {
            HeadError::Malformed(_) | HeadError::BadContentLength | HeadError::MissingHost => 400,
            HeadError::RequestLineTooLong => 414,
            HeadError::HeadTooLarge | HeadError::TooManyHeaders => 431,
            HeadError::BodyTooLarge => 413,
            HeadError::TransferEncodingUnsupported => 501,
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
                f.write_str("Transfer-Encoding is not supported")
            }
            HeadError::MissingHost => f.write_str("HTTP/1.1 request needs exactly one Host"),
        }
    }
}

/// A parsed head, borrowing the bytes it was parsed from.
#[derive(Debug)]
pub struct Head<'b> {
    /// The method token.
    pub method: &'b str,
    /// The request-target, as sent.
    pub target: &'b str,
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
}

/// The outcome of parsing: a whole head, or a need for more bytes.
#[derive(Debug)]
pub enum Parsed<'b> {
    /// A complete head.
    Complete(Head<'b>),
    /// The head is not complete yet; it is within the limits so far.
    Partial,
}

/// Parses one request head from the start of `buf`, using `headers` as the field table.
pub fn parse_head<'b>(
    buf: &'b [u8],
    headers: &'b mut [MaybeUninit<httparse::Header<'b>>; HEADERS_MAX],
    limits: &HeadLimits,
) -> Result<Parsed<'b>, HeadError> {
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return partial_within_limits(buf, limits).map(|()| Parsed::Partial)
        }
        Err(e) => return Err(map_httparse_error(e, buf, limits)),
    };
    // The request line (with any empty lines before it) is complete when the head is.
    let line_end = line_end(buf).expect("a complete head has a complete request line");
    if line_end - line_start(buf) > limits.request_line_bytes_max {
        return Err(HeadError::RequestLineTooLong);
    }
    if head_len - line_end > limits.request_fields_bytes_max {
        return Err(HeadError::HeadTooLarge);
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    let headers: &'b [httparse::Header<'b>] = req.headers;
    let fields = Fields::scan(headers)?;
    if version == Version::Http11 && fields.host != 1 {
        return Err(HeadError::MissingHost);
    }
    let framing = match (fields.content_length, fields.transfer_encoding) {
        (Some(_), true) => {
            return Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ))
        }
        (None, true) if version == Version::Http10 => {
            return Err(HeadError::Malformed("Transfer-Encoding in HTTP/1.0"))
        }
        (None, true) => return Err(HeadError::TransferEncodingUnsupported),
        (Some(0), false) | (None, false) => Framing::None,
        (Some(n), false) if n > limits.request_body_bytes_max => {
            return Err(HeadError::BodyTooLarge)
        }
        (Some(n), false) => Framing::Length(n),
    };
    let keep_alive = match version {
        Version::Http11 => !fields.close,
        Version::Http10 => fields.keep_alive && !fields.close,
    };
    Ok(Parsed::Complete(Head {
        method,
        target,
        version,
        headers,
        head_len,
        framing,
        keep_alive,
        head_only: method == "HEAD",
    }))
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
    match e {
        httparse::Error::HeaderName => HeadError::Malformed("invalid header field name"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header field value"),
        httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
        httparse::Error::Status | httparse::Error::Token => {
            HeadError::Malformed("invalid token in request line")
        }
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::Version => HeadError::Malformed("invalid HTTP version"),
    }
}

/// What the framing and connection rules need from the header fields, in one pass.
#[derive(Default)]
struct Fields {
    content_length: Option<u64>,
    transfer_encoding: bool,
    host: usize,
    close: bool,
    keep_alive: bool,
}

impl Fields {
    fn scan(headers: &[httparse::Header<'_>]) -> Result<Fields, HeadError> {
        let mut fields = Fields::default();
        for h in headers {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                if fields.content_length.is_some() {
                    return Err(HeadError::BadContentLength);
                }
                fields.content_length = Some(parse_content_length(h.value)?);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                fields.transfer_encoding = true;
            } else if name.eq_ignore_ascii_case(b"host") {
                fields.host += 1;
            } else if name.eq_ignore_ascii_case(b"connection") {
                for option in h.value.split(|&b| b == b',') {
                    let option = option.trim_ascii();
                    fields.close |= option.eq_ignore_ascii_case(b"close");
                    fields.keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
                }
            }
        }
        Ok(fields)
    }
}

/// `Content-Length = 1*DIGIT`, nothing else (no sign, no list, no space inside).
fn parse_content_length(value: &[u8]) -> Result<u64, HeadError> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::BadContentLength);
    }
    value.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(HeadError::BadContentLength)
    })
}

/// A request as a handler sees it: the head and the whole body, borrowed from the
/// connection's buffers for the duration of the call.
#[derive(Debug)]
pub struct Request<'a> {
    head: &'a Head<'a>,
    body: &'a [u8],
}

impl<'a> Request<'a> {
    pub(crate) fn new(head: &'a Head<'a>, body: &'a [u8]) -> Request<'a> {
        Request { head, body }
    }

    /// The method, as sent (`GET`, `POST`, ...; methods are case-sensitive).
    pub fn method(&self) -> &'a str {
        self.head.method
    }

    /// The request-target, as sent (usually a path with an optional query).
    pub fn target(&self) -> &'a str {
        self.head.target
    }

    /// The path: the request-target up to any `?`.
    pub fn path(&self) -> &'a str {
        let target = self.head.target;
        target.split_once('?').map_or(target, |(path, _)| path)
    }

    /// The query: what follows the first `?` of the request-target, if any.
    pub fn query(&self) -> Option<&'a str> {
        self.head.target.split_once('?').map(|(_, q)| q)
    }

    /// The HTTP version.
    pub fn version(&self) -> Version {
        self.head.version
    }

    /// The value of the first field named `name` (compared ignoring ASCII case).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.head
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// Every header field, in the order received, as (name, value).
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.head.headers.iter().map(|h| (h.name, h.value))
    }

    /// The body (empty when the request has none).
    pub fn body(&self) -> &'a [u8] {
        self.body
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
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(Some((Framing::None, true)))),
            (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", Ok(Some((Framing::None, false)))),
            (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", Ok(Some((Framing::None, false)))),
            (b"GET / HTTP/1.0\r\n\r\n", Ok(Some((Framing::None, false)))),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", Ok(Some((Framing::None, true)))),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", Ok(Some((Framing::Length(5), true)))),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", Ok(Some((Framing::None, true)))),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n", Ok(Some((Framing::Length(100), true)))),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n", Err(HeadError::BodyTooLarge)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", Err(HeadError::BadContentLength)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", Err(HeadError::BadContentLength)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", Err(HeadError::BadContentLength)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", Err(HeadError::BadContentLength)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", Err(HeadError::TransferEncodingUnsupported)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", Err(HeadError::Malformed("both Content-Length and Transfer-Encoding"))),
            (b"GET / HTTP/1.1\r\n\r\n", Err(HeadError::MissingHost)),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Err(HeadError::MissingHost)),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", Ok(None)),
            (b"GET / HTTP/1.1\r\nHost", Ok(None)),
            (b"GET / HTTP/9.1\r\n\r\n", Err(HeadError::Malformed("invalid HTTP version"))),
            (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", Err(HeadError::Malformed("invalid header field name"))),
            (b"G(T / HTTP/1.1\r\n\r\n", Err(HeadError::Malformed("invalid token in request line"))),
        ];
        for (input, want) in cases {
            let got = parse(input).map(|o| o.map(|(f, k, _)| (f, k)));
            assert_eq!(&got, want, "input {:?}", String::from_utf8_lossy(input));
        }
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
        let req = Request::new(&head, b"");
        assert_eq!(req.method(), "GET");
        assert_eq!(req.path(), "/a/b");
        assert_eq!(req.query(), Some("x=1"));
        assert_eq!(req.header("x-thing"), Some(&b"yes"[..]));
        assert_eq!(req.headers().count(), 2);
        assert_eq!(req.version(), Version::Http11);
    }
}
