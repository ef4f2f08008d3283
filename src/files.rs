//! Files served from beneath a root: turning a request's path into a relative path that
//! cannot leave the root. The first of two defences (the second is opening it with
//! `openat2(RESOLVE_BENEATH)` through [`rt::fs::Dir`](crate::rt::fs::Dir), which also refuses
//! symlinks that lead out).
//!
//! Written by hand: the rules are few and strict (refuse rather than normalise), and a crate
//! that normalises `..` would accept what must be refused.

/// Why a request path was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// A NUL byte, sent or encoded.
    Nul,
    /// An encoded `/` (`%2f`): a name cannot hold one.
    EncodedSlash,
    /// A `..` segment, sent or encoded (`%2e%2e`).
    DotDot,
    /// The decoded path is not UTF-8.
    NotUtf8,
    /// Longer than [`PATH_BYTES_MAX`] once decoded.
    TooLong,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathError::BadEscape => "a % not followed by two hex digits",
            PathError::Nul => "a NUL byte",
            PathError::EncodedSlash => "an encoded /",
            PathError::DotDot => "a .. segment",
            PathError::NotUtf8 => "not UTF-8 once decoded",
            PathError::TooLong => "longer than files::PATH_BYTES_MAX",
        })
    }
}

impl std::error::Error for PathError {}

/// The longest relative path [`relative_path`] gives, in bytes (Linux's `PATH_MAX` is 4096).
pub const PATH_BYTES_MAX: usize = 4095;

/// The path below the root that the request path `path` names: percent-decoded, empty and
/// `.` segments dropped, joined by `/`, with no leading `/` (empty for the root itself).
/// Refused, never normalised: a `..` segment (`%2e%2e` included), an encoded `/`, a NUL,
/// a bad escape, a path that is not UTF-8 once decoded, or one over [`PATH_BYTES_MAX`].
///
/// ```
/// use ringmaster::files::{relative_path, PathError};
/// assert_eq!(relative_path("/a//b/./c%20d.txt").unwrap(), "a/b/c d.txt");
/// assert_eq!(relative_path("/").unwrap(), "");
/// assert_eq!(relative_path("/a/%2e%2e/b"), Err(PathError::DotDot));
/// assert_eq!(relative_path("/a%2fb"), Err(PathError::EncodedSlash));
/// ```
pub fn relative_path(path: &str) -> Result<String, PathError> {
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/') {
        let decoded = decode(segment)?;
        match decoded.as_str() {
            "" | "." => continue,
            ".." => return Err(PathError::DotDot),
            name => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(name);
            }
        }
        if out.len() > PATH_BYTES_MAX {
            return Err(PathError::TooLong);
        }
    }
    Ok(out)
}

/// One segment, percent-decoded.
fn decode(segment: &str) -> Result<String, PathError> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = match bytes[i] {
            b'%' => {
                let hex = |c: Option<&u8>| c.and_then(|c| (*c as char).to_digit(16));
                let (Some(hi), Some(lo)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) else {
                    return Err(PathError::BadEscape);
                };
                i += 2;
                (hi * 16 + lo) as u8
            }
            b => b,
        };
        match b {
            0 => return Err(PathError::Nul),
            b'/' => return Err(PathError::EncodedSlash),
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| PathError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_way_out_is_refused() {
        let refused = [
            ("/..", PathError::DotDot),
            ("/a/../..", PathError::DotDot),
            ("/a/%2e%2e/b", PathError::DotDot),
            ("/%2E%2e", PathError::DotDot),
            ("/.%2e/x", PathError::DotDot),
            ("/a%2f..%2fb", PathError::EncodedSlash),
            ("/a%2Fb", PathError::EncodedSlash),
            ("/a%00b", PathError::Nul),
            ("/a\0b", PathError::Nul),
            ("/a%zz", PathError::BadEscape),
            ("/a%2", PathError::BadEscape),
            ("/%ff", PathError::NotUtf8),
        ];
        for (path, why) in refused {
            assert_eq!(relative_path(path), Err(why), "{path:?}");
        }
        assert_eq!(
            relative_path(&format!("/{}", "a".repeat(PATH_BYTES_MAX + 1))),
            Err(PathError::TooLong)
        );
        assert_eq!(
            relative_path(&format!("/{}", "a".repeat(PATH_BYTES_MAX))).map(|p| p.len()),
            Ok(PATH_BYTES_MAX)
        );
    }

    #[test]
    fn names_are_decoded_and_joined_below_the_root() {
        let ok = [
            ("/", ""),
            ("", ""),
            ("//a///b/", "a/b"),
            ("/./a/./b", "a/b"),
            ("/a..b/...", "a..b/..."),
            ("/%E2%82%AC.txt", "€.txt"),
            ("/a%20b", "a b"),
            ("/a\\..\\b", "a\\..\\b"),
        ];
        for (path, rel) in ok {
            assert_eq!(relative_path(path).as_deref(), Ok(rel), "{path:?}");
        }
    }
}
