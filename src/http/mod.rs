//! HTTP/1.1: request heads parsed from borrowed bytes, responses encoded into a caller's
//! buffer. No I/O here, and no allocation in the parser and the encoder: the connection
//! layer owns the buffers. The values a handler holds ([`OwnedRequest`], [`Response`])
//! reuse the buffers that earlier ones, dropped on the same thread, left behind.
//!
//! See [`Request`]'s and [`Response`]'s examples.

pub mod body;
#[doc(hidden)]
pub mod chunked;
#[doc(hidden)]
pub mod date;
#[cfg(feature = "http")]
mod interop;
pub(crate) mod owned;
pub mod request;
pub mod response;
// The proxy's parser of upstream heads: public for its tests, not part of the API.
#[doc(hidden)]
pub mod upstream;

pub use body::{BodyReader, BodyWriter};
pub use owned::OwnedRequest;
pub use request::{Request, Version, OPTIONS_ALLOW};
// The parser's entry points and what they return: public for the fuzz targets and benches,
// not part of the API.
#[doc(hidden)]
pub use request::{parse_head, Framing, Head, HeadError, HeadLimits, Parsed, TargetForm};
pub use response::{HeaderError, Response, StatusError};
