//! Calendar arithmetic shared by the log's and the access log's timestamps: a leaf module,
//! so that neither borrows it from the other.

use std::fmt;

/// Seconds since the epoch as a UTC date and time, `YYYY-MM-DDTHH:MM:SS`: RFC 3339 without
/// its zone, which the caller writes after any fraction of a second.
pub(crate) struct DateTime(pub(crate) u64);

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d) = civil_from_days((self.0 / 86_400) as i64);
        let secs = self.0 % 86_400;
        write!(
            f,
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31): Howard Hinnant's algorithm.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::DateTime;

    #[test]
    fn a_date_and_time_is_rfc_3339_without_its_zone() {
        assert_eq!(DateTime(0).to_string(), "1970-01-01T00:00:00");
        // 2024-02-29 23:59:59, a leap day's last second.
        assert_eq!(DateTime(1_709_251_199).to_string(), "2024-02-29T23:59:59");
    }
}
