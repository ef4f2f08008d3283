//! An upstream's response head, parsed as strictly as requests are: what a proxy reads from
//! an application server before it forwards anything to its client. A response that could
//! make the proxy and its client disagree about where the body ends (two lengths, a length
//! beside a transfer coding, a field folded over lines, a bare LF, a byte no field may hold)
//! is refused whole, so that the proxy answers `502` rather than pass on a split.
//!
//! httparse does the tokenising, as for requests; the framing rules (RFC 9112 section 6.3)
//! and the list of hop-by-hop fields (RFC 9110 section 7.6.1) are here.

use super::request::{check_line_ends, list, parse_content_length, HeadError, Version};
use std::mem::MaybeUninit;

/// Header fields an upstream response may have, at most.
pub const RESPONSE_FIELDS_MAX: usize = 100;
/// Bytes an upstream response head may have, at most.
pub const RESPONSE_HEAD_BYTES_MAX: usize = 64 * 1024;

/// How the body of an upstream response is delimited.
///
/// Used by [`Proxy`](crate::proxy::Proxy): [`Static`](crate::files::Static)'s example (static files and a proxy on a router).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: a `1xx`, `204` or `304`, or the answer to a `HEAD`.
    None,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body ends when the upstream closes (the connection cannot be reused).
    UntilClose,
}

/// Why an upstream response head was refused (the proxy answers `502`).
///
/// Used by [`Proxy`](crate::proxy::Proxy): [`Static`](crate::files::Static)'s example (static files and a proxy on a router).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamError {
    /// Not an HTTP/1.x response head; the detail names what was wrong.
    Malformed(&'static str),
    /// Longer than [`RESPONSE_HEAD_BYTES_MAX`], or more than [`RESPONSE_FIELDS_MAX`] fields.
    TooLarge,
    /// `Content-Length` that is not one run of digits, repeats with another value, or
    /// overflows.
    BadContentLength,
    /// `Content-Length` beside `Transfer-Encoding`: the two could frame the body
    /// differently.
    LengthAndCoding,
    /// A transfer coding that does not end with `chunked` in a response that must be
    /// framed, or `chunked` twice.
    BadTransferEncoding,
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Malformed(why) => write!(f, "malformed response head: {why}"),
            UpstreamError::TooLarge => f.write_str("response head too large"),
            UpstreamError::BadContentLength => f.write_str("invalid Content-Length"),
            UpstreamError::LengthAndCoding => {
                f.write_str("Content-Length beside Transfer-Encoding")
            }
            UpstreamError::BadTransferEncoding => f.write_str("invalid Transfer-Encoding"),
        }
    }
}

impl std::error::Error for UpstreamError {}

/// A parsed upstream response head.
///
/// Used by [`Proxy`](crate::proxy::Proxy): [`Static`](crate::files::Static)'s example (static files and a proxy on a router).
#[derive(Debug)]
pub struct ResponseHead<'b> {
    /// The version the upstream spoke.
    pub version: Version,
    /// The status code (100 to 599).
    pub status: u16,
    /// The reason phrase, as sent.
    pub reason: &'b str,
    /// Every field, in order, hop-by-hop ones included (see [`is_hop_by_hop`]).
    pub fields: &'b [httparse::Header<'b>],
    /// How the body is delimited.
    pub framing: BodyFraming,
    /// Whether the upstream keeps the connection open after this response.
    pub keep_alive: bool,
    /// Bytes of the head, its blank line included.
    pub head_len: usize,
}

impl ResponseHead<'_> {
    /// Whether `name` is a field the proxy must not forward: one of the hop-by-hop fields,
    /// or one this response's `Connection` field names.
    pub fn is_hop_by_hop(&self, name: &str) -> bool {
        is_hop_by_hop(name)
            || self
                .fields
                .iter()
                .filter(|f| f.name.eq_ignore_ascii_case("connection"))
                .flat_map(|f| list(f.value))
                .any(|option| option.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// The fields that concern one connection, never forwarded (RFC 9110 section 7.6.1), and
/// the framing ones a proxy sets itself (`Transfer-Encoding`, `Content-Length` for a body
/// it re-frames are the caller's): `Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`,
/// `Trailer`, `Transfer-Encoding`, `Upgrade`, and every `Proxy-*`.
pub fn is_hop_by_hop(name: &str) -> bool {
    const FIELDS: [&str; 6] = [
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    FIELDS.iter().any(|f| name.eq_ignore_ascii_case(f))
        || name
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("proxy-"))
}

/// What [`parse_response_head`] found.
///
/// Used by [`Proxy`](crate::proxy::Proxy): [`Static`](crate::files::Static)'s example (static files and a proxy on a router).
#[derive(Debug)]
pub enum ParsedResponse<'b> {
    /// A whole head.
    Complete(ResponseHead<'b>),
    /// More bytes are needed.
    Partial,
}

/// Parses the head of an upstream's response to a request whose method was `HEAD` when
/// `to_head` (its body is then empty whatever the fields say). A `1xx` is interim: the
/// final head follows it; after a `101` the connection is no longer HTTP (`keep_alive` is
/// false), and a proxy that does not tunnel answers `502`.
pub fn parse_response_head<'b>(
    buf: &'b [u8],
    fields: &'b mut [MaybeUninit<httparse::Header<'b>>; RESPONSE_FIELDS_MAX],
    to_head: bool,
) -> Result<ParsedResponse<'b>, UpstreamError> {
    let mut res = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let head_len = match config.parse_response_with_uninit_headers(&mut res, buf, fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() > RESPONSE_HEAD_BYTES_MAX {
                return Err(UpstreamError::TooLarge);
            }
            line_ends(buf)?;
            return Ok(ParsedResponse::Partial);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(UpstreamError::TooLarge),
        Err(e) => return Err(UpstreamError::Malformed(httparse_reason(e))),
    };
    if head_len > RESPONSE_HEAD_BYTES_MAX {
        return Err(UpstreamError::TooLarge);
    }
    // httparse takes a bare LF as a line end; a proxy must not (the client might not).
    line_ends(&buf[..head_len])?;
    let (Some(minor), Some(status)) = (res.version, res.code) else {
        return Err(UpstreamError::Malformed("incomplete status line"));
    };
    if !(100..=599).contains(&status) {
        return Err(UpstreamError::Malformed("status code out of range"));
    }
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    let fields: &'b [httparse::Header<'b>] = res.headers;
    let mut length: Option<u64> = None;
    let mut codings = 0usize;
    let (mut chunked_last, mut chunked_seen) = (false, false);
    let (mut close, mut keep) = (false, false);
    for f in fields {
        if f.value.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
            return Err(UpstreamError::Malformed("a control byte in a field value"));
        }
        let name = f.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(f.value).map_err(|_| UpstreamError::BadContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(UpstreamError::BadContentLength);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in list(f.value) {
                codings += 1;
                let chunked = coding.eq_ignore_ascii_case(b"chunked");
                if chunked && chunked_seen {
                    return Err(UpstreamError::BadTransferEncoding);
                }
                chunked_seen |= chunked;
                chunked_last = chunked;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for option in list(f.value) {
                close |= option.eq_ignore_ascii_case(b"close");
                keep |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let bodiless = to_head || status < 200 || status == 204 || status == 304;
    if codings > 0 && length.is_some() {
        // RFC 9112 lets Transfer-Encoding win; a proxy that forwards it risks a client that
        // believes the length. Refused.
        return Err(UpstreamError::LengthAndCoding);
    }
    if codings > 0 && version == Version::Http10 {
        return Err(UpstreamError::Malformed("Transfer-Encoding in HTTP/1.0"));
    }
    let framing = match (bodiless, length, codings > 0, chunked_last) {
        (true, _, _, _) => BodyFraming::None,
        (false, Some(n), _, _) => BodyFraming::Length(n),
        (false, None, true, true) => BodyFraming::Chunked,
        // Another coding last: the body runs to the close (RFC 9112 section 6.3, item 4).
        (false, None, true, false) => BodyFraming::UntilClose,
        (false, None, false, _) => BodyFraming::UntilClose,
    };
    // After a 101 the connection speaks another protocol: never reused for HTTP.
    let keep_alive = framing != BodyFraming::UntilClose
        && status != 101
        && !close
        && (version == Version::Http11 || keep);
    Ok(ParsedResponse::Complete(ResponseHead {
        version,
        status,
        reason: res.reason.unwrap_or(""),
        fields,
        framing,
        keep_alive,
        head_len,
    }))
}

/// The head's line ends, checked as a request's are (every LF after a CR, every CR before
/// an LF).
fn line_ends(buf: &[u8]) -> Result<(), UpstreamError> {
    check_line_ends(buf).map_err(|e| match e {
        HeadError::Malformed(why) => UpstreamError::Malformed(why),
        _ => UpstreamError::Malformed("invalid line end"),
    })
}

fn httparse_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid field name",
        httparse::Error::HeaderValue => "invalid field value (obs-fold or a control byte)",
        httparse::Error::NewLine => "invalid line end",
        httparse::Error::Status => "invalid status code",
        httparse::Error::Version => "invalid version",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => "too many fields",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The framing and keep-alive of `raw`, or its error; `None` for a partial head.
    fn parse(raw: &str, to_head: bool) -> Result<Option<(u16, BodyFraming, bool)>, UpstreamError> {
        let mut fields = [const { MaybeUninit::uninit() }; RESPONSE_FIELDS_MAX];
        Ok(
            match parse_response_head(raw.as_bytes(), &mut fields, to_head)? {
                ParsedResponse::Complete(h) => Some((h.status, h.framing, h.keep_alive)),
                ParsedResponse::Partial => None,
            },
        )
    }

    #[test]
    fn framing_follows_rfc_9112() {
        use BodyFraming::*;
        let ok = [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                false,
                (200, Length(5), true),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                false,
                (200, Length(5), true),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                (200, Chunked, true),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false,
                (200, Chunked, true),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                false,
                (200, UntilClose, false),
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", false, (200, UntilClose, false)),
            ("HTTP/1.1 204 No Content\r\n\r\n", false, (204, None, true)),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false,
                (304, None, true),
            ),
            ("HTTP/1.1 100 Continue\r\n\r\n", false, (100, None, true)),
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
                false,
                (101, None, false),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
                true,
                (200, None, true),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n",
                false,
                (200, Length(1), false),
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
                false,
                (200, Length(1), false),
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n",
                false,
                (200, Length(1), true),
            ),
        ];
        for (raw, to_head, want) in ok {
            assert_eq!(parse(raw, to_head), Ok(Some(want)), "{raw:?}");
        }
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\nContent-Le", false),
            Ok(Option::None)
        );
    }

    #[test]
    fn a_response_that_could_split_or_desynchronise_is_refused() {
        use UpstreamError::*;
        // Refused by the framing rules here, each for its reason.
        let ours: [(&str, UpstreamError); 8] = [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                BadContentLength,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
                BadContentLength,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
                BadContentLength,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
                BadContentLength,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                LengthAndCoding,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                BadTransferEncoding,
            ),
            (
                "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Malformed("Transfer-Encoding in HTTP/1.0"),
            ),
            (
                "HTTP/1.1 999 Odd\r\n\r\n",
                Malformed("status code out of range"),
            ),
        ];
        for (raw, want) in ours {
            assert_eq!(parse(raw, false), Err(want), "{raw:?}");
        }
        // Refused by the tokenizer or the line-end check: a bare LF, a folded field, a CR
        // inside a value (a response split), a NUL.
        let split = [
            "HTTP/1.1 200 OK\nContent-Length: 5\n\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nSet-Cookie: a\rHTTP/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent Length: 1\r\n\r\n",
        ];
        for raw in split {
            let got = parse(raw, false);
            assert!(matches!(got, Err(Malformed(_))), "{raw:?} gave {got:?}");
        }
        let huge = format!(
            "HTTP/1.1 200 OK\r\nX: {}\r\n",
            "a".repeat(RESPONSE_HEAD_BYTES_MAX)
        );
        assert_eq!(parse(&huge, false), Err(TooLarge));
        let many: String = (0..=RESPONSE_FIELDS_MAX)
            .map(|i| format!("X{i}: v\r\n"))
            .collect();
        assert_eq!(
            parse(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), false),
            Err(TooLarge)
        );
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names() {
        for name in [
            "Connection",
            "keep-alive",
            "TE",
            "Trailer",
            "Transfer-Encoding",
            "Upgrade",
            "Proxy-Authenticate",
            "proxy-connection",
        ] {
            assert!(is_hop_by_hop(name), "{name}");
        }
        for name in [
            "Content-Length",
            "Content-Type",
            "Set-Cookie",
            "Proxy",
            "Tea",
        ] {
            assert!(!is_hop_by_hop(name), "{name}");
        }
        let raw = b"HTTP/1.1 200 OK\r\nConnection: X-Private, close\r\nX-Private: 1\r\nX-Public: 2\r\nContent-Length: 0\r\n\r\n";
        let mut fields = [const { MaybeUninit::uninit() }; RESPONSE_FIELDS_MAX];
        let ParsedResponse::Complete(head) = parse_response_head(raw, &mut fields, false).unwrap()
        else {
            panic!("complete");
        };
        assert!(head.is_hop_by_hop("x-private"));
        assert!(!head.is_hop_by_hop("X-Public"));
        assert!(!head.keep_alive);
    }
}
