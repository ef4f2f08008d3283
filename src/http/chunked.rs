//! The `chunked` transfer coding of request bodies (RFC 9112 section 7.1), decoded
//! incrementally: bytes can arrive split anywhere, and the decoder keeps no raw bytes, only
//! its state. Chunk extensions are checked against their grammar, bounded and ignored;
//! trailer fields are read, bounded and dropped, never merged into the header section.

use super::response::is_token_byte;
use std::fmt;

/// The most bytes of chunk extensions (after the size, up to the line end) on one chunk line.
pub const CHUNK_EXT_BYTES_MAX: usize = 1024;
/// The most hex digits of a chunk size: 15 keeps every size within `u64` with room to add.
const SIZE_DIGITS_MAX: u32 = 15;

/// Why a chunked body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// A chunk size that is not hex digits, or too long.
    BadSize,
    /// A line that does not end in CRLF, or data not followed by CRLF.
    BadLineEnd,
    /// Chunk extensions outside the grammar of RFC 9112 section 7.1.1 (a bare `;`,
    /// whitespace with no extension after it, a name that is not a token, a value that is
    /// neither a token nor a whole quoted string). Lenient extension parsing is what
    /// chunk-extension request smuggling relies on, so none is tolerated.
    BadExtension,
    /// Chunk extensions over [`CHUNK_EXT_BYTES_MAX`].
    ExtensionTooLong,
    /// The decoded body exceeds the body limit.
    BodyTooLarge,
    /// The trailer section exceeds the header section limit.
    TrailersTooLarge,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkError::BadSize => "invalid chunk size",
            ChunkError::BadLineEnd => "chunk line does not end in CRLF",
            ChunkError::BadExtension => "invalid chunk extension",
            ChunkError::ExtensionTooLong => "chunk extension too long",
            ChunkError::BodyTooLarge => "request body too large",
            ChunkError::TrailersTooLarge => "trailer section too large",
        })
    }
}

impl ChunkError {
    /// The status code that answers this error; the connection closes after it.
    pub fn status(self) -> u16 {
        match self {
            ChunkError::BodyTooLarge => 413,
            ChunkError::TrailersTooLarge => 431,
            ChunkError::BadSize
            | ChunkError::BadLineEnd
            | ChunkError::BadExtension
            | ChunkError::ExtensionTooLong => 400,
        }
    }
}

/// Where the decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the hex size: its value and digit count so far.
    Size { size: u64, digits: u32 },
    /// After the size: checking extensions (their byte count, where in their grammar),
    /// until CR.
    Extension { size: u64, bytes: usize, at: Ext },
    /// Expecting the LF of the size line.
    SizeLf { size: u64 },
    /// Copying chunk data.
    Data { left: u64 },
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line, until CR.
    Trailer,
    /// Expecting the LF of a trailer line.
    TrailerLf,
    /// Expecting the LF of the final empty line.
    EndLf,
    /// The body is complete.
    Done,
}

/// Where in a chunk line's extensions the decoder is. RFC 9112 section 7.1.1:
/// `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`, with
/// `chunk-ext-name = token`, `chunk-ext-val = token / quoted-string` (RFC 9110 section
/// 5.6.4) and `BWS = *( SP / HTAB )`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ext {
    /// Whitespace after the size or after a value: only more of it or `;` may follow.
    BeforeSemicolon,
    /// After `;`: whitespace, then a name's first byte.
    BeforeName,
    /// Inside a name; the line may end here.
    Name,
    /// Whitespace after a name: `=` or `;` must follow.
    AfterName,
    /// After `=`: whitespace, then a token or a quoted string.
    BeforeValue,
    /// Inside a token value; the line may end here.
    Token,
    /// Inside a quoted string.
    Quoted,
    /// After a backslash inside a quoted string (a quoted-pair).
    Escaped,
    /// After a quoted string's closing quote; the line may end here.
    AfterQuoted,
}

impl Ext {
    /// Whether the extensions may end (CR) here.
    fn may_end(self) -> bool {
        matches!(self, Ext::Name | Ext::Token | Ext::AfterQuoted)
    }

    /// Where byte `b` (not CR or LF) leads, or `None` where the grammar has no place for it.
    fn next(self, b: u8) -> Option<Ext> {
        let ws = b == b' ' || b == b'\t';
        // qdtext, and what a quoted-pair may escape: HTAB, SP, VCHAR, obs-text.
        let text = b == b'\t' || (b >= 0x20 && b != 0x7f);
        Some(match self {
            Ext::Quoted if b == b'"' => Ext::AfterQuoted,
            Ext::Quoted if b == b'\\' => Ext::Escaped,
            Ext::Quoted | Ext::Escaped if text => Ext::Quoted,
            Ext::Quoted | Ext::Escaped => return None,
            Ext::BeforeSemicolon | Ext::Name | Ext::AfterName | Ext::Token | Ext::AfterQuoted
                if b == b';' =>
            {
                Ext::BeforeName
            }
            Ext::BeforeSemicolon | Ext::Token | Ext::AfterQuoted if ws => Ext::BeforeSemicolon,
            Ext::Name | Ext::AfterName if ws => Ext::AfterName,
            Ext::Name | Ext::AfterName if b == b'=' => Ext::BeforeValue,
            Ext::BeforeName | Ext::BeforeValue if ws => self,
            Ext::BeforeName | Ext::Name if is_token_byte(b) => Ext::Name,
            Ext::BeforeValue if b == b'"' => Ext::Quoted,
            Ext::BeforeValue | Ext::Token if is_token_byte(b) => Ext::Token,
            _ => return None,
        })
    }
}

/// An incremental decoder for one chunked body.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    body_bytes: u64,
    body_bytes_max: u64,
    trailer_bytes: usize,
    trailer_bytes_max: usize,
}

impl ChunkedDecoder {
    /// A decoder for a body of at most `body_bytes_max` decoded bytes, with trailers of at
    /// most `trailer_bytes_max` bytes.
    pub fn new(body_bytes_max: u64, trailer_bytes_max: usize) -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::Size { size: 0, digits: 0 },
            body_bytes: 0,
            body_bytes_max,
            trailer_bytes: 0,
            trailer_bytes_max,
        }
    }

    /// Whether the whole body (with its trailers) has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `raw`, appending chunk data to `body`. Returns how many bytes of `raw` it
    /// used: all of them unless the body ended within `raw` (then the rest is the next
    /// request's).
    pub fn decode(&mut self, raw: &[u8], body: &mut Vec<u8>) -> Result<usize, ChunkError> {
        let mut at = 0;
        while at < raw.len() {
            if let State::Data { left } = self.state {
                let take = (raw.len() - at).min(usize::try_from(left).unwrap_or(usize::MAX));
                body.extend_from_slice(&raw[at..at + take]);
                at += take;
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data { left }
                };
                continue;
            }
            if self.state == State::Done {
                break;
            }
            self.step(raw[at])?;
            at += 1;
        }
        Ok(at)
    }

    /// Advances the framing state by one byte (every state but `Data` and `Done`).
    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        self.state = match self.state {
            State::Size { size, digits } => match hex(b) {
                Some(d) if digits < SIZE_DIGITS_MAX => State::Size {
                    size: size << 4 | u64::from(d),
                    digits: digits + 1,
                },
                Some(_) => return Err(ChunkError::BadSize),
                None if digits == 0 => return Err(ChunkError::BadSize),
                None => self.after_size(size, b)?,
            },
            State::Extension { size, bytes, at } => match b {
                b'\r' if at.may_end() => State::SizeLf { size },
                b'\n' => return Err(ChunkError::BadLineEnd),
                _ if bytes >= CHUNK_EXT_BYTES_MAX => return Err(ChunkError::ExtensionTooLong),
                _ => State::Extension {
                    size,
                    bytes: bytes + 1,
                    at: at.next(b).ok_or(ChunkError::BadExtension)?,
                },
            },
            State::SizeLf { size } => match b {
                b'\n' if size == 0 => State::TrailerStart,
                b'\n' => {
                    self.body_bytes += size;
                    if self.body_bytes > self.body_bytes_max {
                        return Err(ChunkError::BodyTooLarge);
                    }
                    State::Data { left: size }
                }
                _ => return Err(ChunkError::BadLineEnd),
            },
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err(ChunkError::BadLineEnd),
            },
            State::DataLf => match b {
                b'\n' => State::Size { size: 0, digits: 0 },
                _ => return Err(ChunkError::BadLineEnd),
            },
            State::TrailerStart => match b {
                b'\r' => State::EndLf,
                b'\n' => return Err(ChunkError::BadLineEnd),
                _ => self.trailer_byte(b)?,
            },
            State::Trailer => match b {
                b'\r' => State::TrailerLf,
                b'\n' => return Err(ChunkError::BadLineEnd),
                _ => self.trailer_byte(b)?,
            },
            State::TrailerLf | State::EndLf => match (self.state, b) {
                (State::TrailerLf, b'\n') => State::TrailerStart,
                (State::EndLf, b'\n') => State::Done,
                _ => return Err(ChunkError::BadLineEnd),
            },
            State::Data { .. } | State::Done => unreachable!("handled by decode"),
        };
        Ok(())
    }

    /// The byte after a chunk size's last digit.
    fn after_size(&self, size: u64, b: u8) -> Result<State, ChunkError> {
        match b {
            b'\r' => Ok(State::SizeLf { size }),
            b';' => Ok(State::Extension {
                size,
                bytes: 1,
                at: Ext::BeforeName,
            }),
            // Whitespace is allowed before a `;` only: `5 ` alone is refused at its CR.
            b' ' | b'\t' => Ok(State::Extension {
                size,
                bytes: 1,
                at: Ext::BeforeSemicolon,
            }),
            b'\n' => Err(ChunkError::BadLineEnd),
            _ => Err(ChunkError::BadSize),
        }
    }

    fn trailer_byte(&mut self, b: u8) -> Result<State, ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > self.trailer_bytes_max {
            return Err(ChunkError::TrailersTooLarge);
        }
        if b < 0x20 && b != b'\t' || b == 0x7f {
            return Err(ChunkError::BadLineEnd);
        }
        Ok(State::Trailer)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(raw: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = ChunkedDecoder::new(100, 64);
        let mut body = Vec::new();
        let used = d.decode(raw, &mut body)?;
        Ok((body, used, d.is_done()))
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let raw = b"5\r\nhello\r\n6;name=\"v\"\r\n world\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
        let (body, used, done) = decode_all(raw).unwrap();
        assert_eq!(body, b"hello world");
        assert!(done);
        assert_eq!(&raw[used..], b"NEXT", "stops at the end of the message");
    }

    #[test]
    fn every_split_gives_the_same_body() {
        let raw = b"A\r\n0123456789\r\n1;e\r\nx\r\n0\r\nT: 1\r\n\r\n";
        for split in 0..=raw.len() {
            let mut d = ChunkedDecoder::new(100, 64);
            let mut body = Vec::new();
            let a = d.decode(&raw[..split], &mut body).unwrap();
            let b = d.decode(&raw[split..], &mut body).unwrap();
            assert_eq!(a + b, raw.len());
            assert!(d.is_done(), "split {split}");
            assert_eq!(body, b"0123456789x");
        }
    }

    #[test]
    fn refuses_bad_framing() {
        let cases: &[(&[u8], ChunkError)] = &[
            (b"x\r\n", ChunkError::BadSize),
            (b"\r\n", ChunkError::BadSize),
            (b"-1\r\n", ChunkError::BadSize),
            (b"0x5\r\n", ChunkError::BadSize),
            (b"1000000000000000\r\n", ChunkError::BadSize),
            (b"5\nhello", ChunkError::BadLineEnd),
            (b"5\rxhello", ChunkError::BadLineEnd),
            (b"5\r\nhelloX", ChunkError::BadLineEnd),
            (b"5\r\nhello\rX", ChunkError::BadLineEnd),
            (b"0\r\n\n", ChunkError::BadLineEnd),
            (b"0\r\nT: x\n\r\n", ChunkError::BadLineEnd),
            (b"0\r\nT: \x01\r\n\r\n", ChunkError::BadLineEnd),
            (b"65\r\n", ChunkError::BodyTooLarge),
            (b"5;\x00\r\n", ChunkError::BadExtension),
        ];
        for (raw, want) in cases {
            assert_eq!(
                decode_all(raw).map(|_| ()),
                Err(*want),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    /// Feeds `raw` in two pieces split at `split`: the body, or the first error.
    fn decode_split(raw: &[u8], split: usize) -> Result<Vec<u8>, ChunkError> {
        let mut d = ChunkedDecoder::new(100, 64);
        let mut body = Vec::new();
        let a = d.decode(&raw[..split], &mut body)?;
        let b = d.decode(&raw[split..], &mut body)?;
        assert_eq!(a + b, raw.len());
        assert!(d.is_done());
        Ok(body)
    }

    /// Chunk extensions follow RFC 9112 section 7.1.1 exactly, whole and at every split.
    #[test]
    fn chunk_extensions_follow_the_grammar_at_every_split() {
        use ChunkError::BadExtension;
        type Want = Result<(), ChunkError>;
        let cases: &[(&[u8], Want)] = &[
            (b"5;a=b", Ok(())),
            (b"5 ; a = \"x\\\"y\"", Ok(())),
            (b"5;a;b=c", Ok(())),
            (b"5\t;\ta\t=\tb", Ok(())),
            (b"5;a=\"\"", Ok(())),
            (b"5;a=\"q\\\\ \te\xe9\"", Ok(())),
            (b"5;a=\"x\" ;b", Ok(())),
            (b"5;a = b ;c", Ok(())),
            (b"5;!#$%&'*+-.^_`|~09AZaz=!#$%&'*+-.^_`|~", Ok(())),
            (b"5;", Err(BadExtension)),
            (b"5 ", Err(BadExtension)),
            (b"5\t", Err(BadExtension)),
            (b"5 ;", Err(BadExtension)),
            (b"5;bad[=x", Err(BadExtension)),
            (b"5;a=", Err(BadExtension)),
            (b"5;a= ", Err(BadExtension)),
            (b"5;a=\"unterminated", Err(BadExtension)),
            (b"5;a=\"x\\", Err(BadExtension)),
            (b"5;=x", Err(BadExtension)),
            (b"5;;a", Err(BadExtension)),
            (b"5;a;", Err(BadExtension)),
            (b"5;a ", Err(BadExtension)),
            (b"5;a=b ", Err(BadExtension)),
            (b"5;a b", Err(BadExtension)),
            (b"5;a=b c", Err(BadExtension)),
            (b"5;a=b=c", Err(BadExtension)),
            (b"5;a=\"x\"y", Err(BadExtension)),
            (b"5;a=\"x\"\"y\"", Err(BadExtension)),
            (b"5;a=x\"y\"", Err(BadExtension)),
            (b"5;a=\"\x01\"", Err(BadExtension)),
            (b"5;a=\"\x7f\"", Err(BadExtension)),
            (b"5;a=\"\\\x00\"", Err(BadExtension)),
            (b"5;a=\xe9", Err(BadExtension)),
            (b"5;a\x7f", Err(BadExtension)),
            (b"5;a=\"x\nz\"", Err(ChunkError::BadLineEnd)),
        ];
        for (line, want) in cases {
            let mut raw = line.to_vec();
            raw.extend(b"\r\nhello\r\n0\r\n\r\n");
            let want = want.map(|()| b"hello".to_vec());
            for split in 0..=raw.len() {
                assert_eq!(
                    decode_split(&raw, split),
                    want,
                    "{:?} split at {split}",
                    String::from_utf8_lossy(line)
                );
            }
        }
        assert_eq!(BadExtension.status(), 400);
    }

    #[test]
    fn limits_at_and_past_the_bound() {
        // Body of exactly the limit (100) passes; 101 over two chunks is refused.
        let mut raw = b"64\r\n".to_vec();
        raw.extend([b'a'; 100]);
        raw.extend(b"\r\n0\r\n\r\n");
        assert!(decode_all(&raw).unwrap().2);
        let mut raw = b"64\r\n".to_vec();
        raw.extend([b'a'; 100]);
        raw.extend(b"\r\n1\r\n");
        assert_eq!(decode_all(&raw).map(|_| ()), Err(ChunkError::BodyTooLarge));
        // Extensions of exactly the limit pass; one more byte is refused.
        let ext = |n: usize| format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(n - 1));
        assert!(decode_all(ext(CHUNK_EXT_BYTES_MAX).as_bytes()).unwrap().2);
        assert_eq!(
            decode_all(ext(CHUNK_EXT_BYTES_MAX + 1).as_bytes()).map(|_| ()),
            Err(ChunkError::ExtensionTooLong)
        );
        // Trailers of exactly 64 bytes pass; 65 are refused.
        let trailer = |n: usize| format!("0\r\nT:{}\r\n\r\n", "v".repeat(n - 2));
        assert!(decode_all(trailer(64).as_bytes()).unwrap().2);
        assert_eq!(
            decode_all(trailer(65).as_bytes()).map(|_| ()),
            Err(ChunkError::TrailersTooLarge)
        );
    }
}
