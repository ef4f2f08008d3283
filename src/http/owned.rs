//! A request an async handler owns: the head's bytes and the body copied into pooled
//! buffers, and where each part lies in them, so that it outlives the receive buffer it
//! was parsed from without a heap allocation per request once the pool is warm.

use super::request::{path_of, query_of, Head, TargetForm, Version};
use std::cell::RefCell;

/// Where a part lies in an [`OwnedRequest`]'s buffer.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    at: u32,
    len: u32,
}

/// Buffers an [`OwnedRequest`] gives back when dropped, for the next one; at most this many.
const POOLED_MAX: usize = 256;
/// A buffer is made with room for at least this many bytes.
const BUF_BYTES_MIN: usize = 2048;
/// A buffer that grew past this is freed rather than pooled.
const POOLED_BYTES_MAX: usize = 64 * 1024;

/// The buffers of one request: its bytes, and its fields' spans.
type Buffers = (Vec<u8>, Vec<(Span, Span)>);

thread_local! {
    /// The buffers of this thread's dropped requests, for the next ones.
    static POOL: RefCell<Vec<Buffers>> = const { RefCell::new(Vec::new()) };
}

/// A request as an async handler sees it: owned, so that the handler's future may keep it
/// across awaits. The same accessors as [`Request`](super::Request).
#[derive(Debug)]
pub struct OwnedRequest {
    /// The head's bytes as received (request line and fields), then the body.
    buf: Vec<u8>,
    head_len: usize,
    method: Span,
    /// `None` for the `/` of an absolute-form target with an empty path (not in the bytes).
    target: Option<Span>,
    host: Option<Span>,
    form: TargetForm,
    version: Version,
    /// Each field's name and value.
    fields: Vec<(Span, Span)>,
    /// The body as it arrives, when the handler asked for it so.
    reader: Option<super::BodyReader>,
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
    /// Copies `head` (parsed from `head_bytes`, which it borrows) and `body`.
    pub(crate) fn new(head_bytes: &[u8], head: &Head<'_>, body: &[u8]) -> OwnedRequest {
        let (mut buf, mut fields) = POOL
            .with(|pool| pool.borrow_mut().pop())
            .unwrap_or_default();
        let head_bytes = &head_bytes[..head.head_len];
        // A new buffer starts large enough for most requests, so that it is reused as is.
        buf.reserve((head_bytes.len() + body.len()).max(BUF_BYTES_MIN));
        buf.extend_from_slice(head_bytes);
        buf.extend_from_slice(body);
        let span = |part: &[u8]| span_in(head_bytes, part).unwrap_or_default();
        fields.extend(
            head.headers
                .iter()
                .map(|h| (span(h.name.as_bytes()), span(h.value))),
        );
        OwnedRequest {
            head_len: head.head_len,
            method: span(head.method.as_bytes()),
            target: span_in(head_bytes, head.target.as_bytes()),
            host: head.host.map(span),
            form: head.target_form,
            version: head.version,
            fields,
            buf,
            reader: None,
        }
    }

    /// Hands the body over as it arrives through `reader` (the body then is not in the
    /// request's buffer).
    pub(crate) fn set_body_reader(&mut self, reader: super::BodyReader) {
        self.reader = Some(reader);
    }

    /// The body as it arrives, for a request whose handler asked for it so
    /// ([`AsyncHandler::streams_body`](crate::AsyncHandler::streams_body)); taken once.
    /// `None` otherwise: the body was read whole, and is [`body`](Self::body).
    pub fn body_reader(&mut self) -> Option<super::BodyReader> {
        self.reader.take()
    }

    fn text(&self, span: Span) -> &str {
        let bytes = &self.buf[span.at as usize..(span.at + span.len) as usize];
        // Methods, targets, names and hosts were checked to be ASCII tokens by the parser.
        std::str::from_utf8(bytes).unwrap_or_default()
    }

    fn bytes(&self, span: Span) -> &[u8] {
        &self.buf[span.at as usize..(span.at + span.len) as usize]
    }

    /// The method, as sent.
    pub fn method(&self) -> &str {
        self.text(self.method)
    }

    /// The request-target in origin form (see [`Request::target`](super::Request::target)).
    pub fn target(&self) -> &str {
        self.target.map_or("/", |t| self.text(t))
    }

    /// The path: the request-target up to any `?` (`/` for an empty path).
    pub fn path(&self) -> &str {
        path_of(self.target())
    }

    /// The query: what follows the first `?` of the request-target, if any.
    pub fn query(&self) -> Option<&str> {
        query_of(self.target())
    }

    /// The HTTP version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The host the request is for (see [`Request::host`](super::Request::host)).
    pub fn host(&self) -> Option<&str> {
        self.host.map(|h| self.text(h))
    }

    /// The value of the first field named `name` (ASCII case ignored); `host` gives the
    /// authority of an absolute-form target, as [`Request::header`](super::Request::header)
    /// does.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        if self.form == TargetForm::Absolute && name.eq_ignore_ascii_case("host") {
            return self.host.map(|h| self.bytes(h));
        }
        self.fields
            .iter()
            .find(|(n, _)| self.text(*n).eq_ignore_ascii_case(name))
            .map(|(_, v)| self.bytes(*v))
    }

    /// Every header field, in the order received, as (name, value).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.fields
            .iter()
            .map(|(n, v)| (self.text(*n), self.bytes(*v)))
    }

    /// The body (empty when the request has none, or when it is handed over as it arrives:
    /// see [`body_reader`](Self::body_reader)).
    pub fn body(&self) -> &[u8] {
        &self.buf[self.head_len..]
    }
}

impl Drop for OwnedRequest {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        let mut fields = std::mem::take(&mut self.fields);
        if buf.capacity() > POOLED_BYTES_MAX {
            return;
        }
        buf.clear();
        fields.clear();
        // A request dropped on another thread (sent away by a handler) pools nothing there
        // that the worker would miss; its thread keeps a bounded pool of its own.
        let _ = POOL.try_with(|pool| {
            if let Ok(mut pool) = pool.try_borrow_mut() {
                if pool.len() < POOLED_MAX {
                    pool.push((buf, fields));
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
        OwnedRequest::new(raw, &head, body)
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
        let absolute = owned(b"GET http://a.example HTTP/1.1\r\nHost: b\r\n\r\n", b"");
        assert_eq!((absolute.path(), absolute.host()), ("/", Some("a.example")));
        assert_eq!(absolute.header("Host"), Some(&b"a.example"[..]));
    }

    #[test]
    fn dropped_requests_give_their_buffers_back() {
        let first = owned(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", b"");
        let at = first.buf.as_ptr();
        drop(first);
        let second = owned(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n", b"");
        assert_eq!(second.buf.as_ptr(), at, "the pooled buffer, not a new one");
    }
}
