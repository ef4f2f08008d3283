//! HTTP/1.1: request heads parsed from borrowed bytes, responses encoded into a caller's
//! buffer. No I/O and no allocation here: the connection layer owns the buffers.

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
pub use request::{Framing, Request, TargetForm, Version, OPTIONS_ALLOW};
// The parser's entry points: public for the fuzz targets and benches, not part of the API.
#[doc(hidden)]
pub use request::{parse_head, Head, HeadError, HeadLimits, Parsed};
pub use response::{HeaderError, Response, StatusError};
