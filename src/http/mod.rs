//! HTTP/1.1: request heads parsed from borrowed bytes, responses encoded into a caller's
//! buffer. No I/O and no allocation here: the connection layer owns the buffers.

pub mod body;
pub mod chunked;
pub mod date;
#[cfg(feature = "http")]
mod interop;
pub(crate) mod owned;
pub mod request;
pub mod response;
pub mod upstream;

pub use body::{BodyReader, BodyWriter};
pub use owned::OwnedRequest;
pub use request::{
    parse_head, Framing, Head, HeadError, HeadLimits, Parsed, Request, TargetForm, Version,
    OPTIONS_ALLOW,
};
pub use response::{HeaderError, Response, StatusError};
