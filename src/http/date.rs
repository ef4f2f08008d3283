//! The `Date` field, formatted once per second (IMF-fixdate, RFC 9110 section 5.6.7, by
//! `httpdate`), and the same instant for access logs.

use std::time::{SystemTime, UNIX_EPOCH};

/// `Date: Thu, 26 Nov 2026 14:55:00 GMT\r\n`
const LINE_BYTES: usize = 37;

/// The current `Date:` line, rebuilt only when the second changes.
#[derive(Debug)]
pub struct DateCache {
    secs: u64,
    line: [u8; LINE_BYTES],
    /// The same instant for access logs: `[26/Nov/2026:14:55:00 +0000]`.
    clf: [u8; CLF_BYTES],
}

/// `[26/Nov/2026:14:55:00 +0000]`
const CLF_BYTES: usize = 28;

impl Default for DateCache {
    fn default() -> DateCache {
        DateCache::new()
    }
}

impl DateCache {
    /// A cache holding the current time.
    pub fn new() -> DateCache {
        let mut cache = DateCache {
            secs: u64::MAX,
            line: [0; LINE_BYTES],
            clf: [0; CLF_BYTES],
        };
        cache.update(now_secs());
        cache
    }

    /// Moves the cache to `secs` since the epoch; returns whether the line changed.
    pub fn update(&mut self, secs: u64) -> bool {
        if secs == self.secs {
            return false;
        }
        self.secs = secs;
        format_line(secs, &mut self.line);
        format_clf(&self.line, &mut self.clf);
        true
    }

    /// Refreshes from the clock (a cheap vDSO call); returns whether the second changed.
    pub fn refresh(&mut self) -> bool {
        self.update(now_secs())
    }

    /// The full line, `Date: ... GMT\r\n`.
    pub fn line(&self) -> &[u8] {
        &self.line
    }

    /// The common-log-format timestamp, `[26/Nov/2026:14:55:00 +0000]`.
    pub fn clf(&self) -> &[u8] {
        &self.clf
    }

    /// The seconds since the epoch the cache holds.
    pub fn secs(&self) -> u64 {
        self.secs
    }
}

/// Rearranges `Date: Thu, 26 Nov 2026 14:55:00 GMT\r\n` into `[26/Nov/2026:14:55:00 +0000]`.
fn format_clf(line: &[u8; LINE_BYTES], out: &mut [u8; CLF_BYTES]) {
    out[0] = b'[';
    out[1..3].copy_from_slice(&line[11..13]); // day
    out[3] = b'/';
    out[4..7].copy_from_slice(&line[14..17]); // month
    out[7] = b'/';
    out[8..12].copy_from_slice(&line[18..22]); // year
    out[12] = b':';
    out[13..21].copy_from_slice(&line[23..31]); // hh:mm:ss
    out[21..28].copy_from_slice(b" +0000]");
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `Date: ` and the IMF-fixdate of `secs` (`httpdate`'s, once a second: nothing on the hot
/// path), and the line end.
fn format_line(secs: u64, out: &mut [u8; LINE_BYTES]) {
    let date = httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(secs));
    out[..6].copy_from_slice(b"Date: ");
    // Always 29 bytes for years 1970 to 9999, the only ones a system clock gives.
    out[6..35].copy_from_slice(&date.as_bytes()[..29]);
    out[35..37].copy_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        let cases = [
            (0, "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"),
            (784_111_777, "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"),
            (951_782_400, "Date: Tue, 29 Feb 2000 00:00:00 GMT\r\n"),
            (1_795_704_900, "Date: Thu, 26 Nov 2026 14:55:00 GMT\r\n"),
            (4_102_444_799, "Date: Thu, 31 Dec 2099 23:59:59 GMT\r\n"),
        ];
        for (secs, want) in cases {
            let mut cache = DateCache::new();
            cache.update(secs);
            assert_eq!(std::str::from_utf8(cache.line()).unwrap(), want);
        }
    }

    #[test]
    fn common_log_format() {
        let mut cache = DateCache::new();
        cache.update(1_795_704_900);
        assert_eq!(cache.clf(), b"[26/Nov/2026:14:55:00 +0000]");
    }

    #[test]
    fn rebuilds_only_when_the_second_changes() {
        let mut cache = DateCache::new();
        assert!(cache.update(10));
        assert!(!cache.update(10));
        assert!(cache.update(11));
    }
}
