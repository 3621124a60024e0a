//! The broker transports' time header (`heytom-occurred-at`), written
//! without a heap allocation per message and read without chrono's general
//! parser for the shape written here.

use chrono::{DateTime, Datelike as _, Timelike as _, Utc};

/// An RFC 3339 timestamp on the stack, byte for byte what
/// [`DateTime::to_rfc3339`] gives for a UTC time.
pub(crate) struct Rfc3339 {
    buf: [u8; 40],
    len: usize,
}

impl Rfc3339 {
    pub(crate) fn new(t: &DateTime<Utc>) -> Self {
        let mut out = Rfc3339 {
            buf: [0; 40],
            len: 0,
        };
        let nanos = t.nanosecond();
        let year = t.year();
        if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
            // Rare shapes (signed years, leap seconds): chrono's own text.
            let s = t.to_rfc3339();
            let n = s.len().min(out.buf.len());
            out.buf[..n].copy_from_slice(&s.as_bytes()[..n]);
            out.len = n;
            return out;
        }
        out.digits(year as u32, 4);
        out.byte(b'-');
        out.digits(t.month(), 2);
        out.byte(b'-');
        out.digits(t.day(), 2);
        out.byte(b'T');
        out.digits(t.hour(), 2);
        out.byte(b':');
        out.digits(t.minute(), 2);
        out.byte(b':');
        out.digits(t.second(), 2);
        // chrono's `SecondsFormat::AutoSi`: as few of 0, 3, 6 or 9 digits as exact.
        if nanos != 0 {
            out.byte(b'.');
            if nanos.is_multiple_of(1_000_000) {
                out.digits(nanos / 1_000_000, 3);
            } else if nanos.is_multiple_of(1_000) {
                out.digits(nanos / 1_000, 6);
            } else {
                out.digits(nanos, 9);
            }
        }
        for b in b"+00:00" {
            out.byte(*b);
        }
        out
    }

    fn byte(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn digits(&mut self, mut v: u32, width: usize) {
        for i in (0..width).rev() {
            self.buf[self.len + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        self.len += width;
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Parses an RFC 3339 time as [`DateTime::parse_from_rfc3339`] does, the
/// shape [`Rfc3339`] writes (`YYYY-MM-DDTHH:MM:SS[.f…]` then `+00:00` or
/// `Z`) read directly, anything else by chrono.
pub(crate) fn parse_rfc3339(v: &[u8]) -> Option<DateTime<Utc>> {
    fast_rfc3339(v).or_else(|| {
        let s = std::str::from_utf8(v).ok()?;
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    })
}

fn fast_rfc3339(v: &[u8]) -> Option<DateTime<Utc>> {
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        v.get(r)?.iter().try_fold(0u32, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
        })
    };
    if v.len() < 20
        || v[4] != b'-'
        || v[7] != b'-'
        || v[10] != b'T'
        || v[13] != b':'
        || v[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut at = 19;
    let mut nanos = 0;
    if v[at] == b'.' {
        let digits = v[at + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = num(at + 1..at + 1 + digits)? * 10u32.pow(9 - digits as u32);
        at += 1 + digits;
    }
    if !matches!(&v[at..], b"Z" | b"+00:00") || second > 59 {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, month, day)?;
    let time = chrono::NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    Some(date.and_time(time).and_utc())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    #[test]
    fn parses_as_chrono_does() {
        let texts = [
            "2026-01-02T03:04:05+00:00",
            "2026-01-02T03:04:05Z",
            "2026-01-02T03:04:05.1Z",
            "2026-01-02T03:04:05.123+00:00",
            "2026-01-02T03:04:05.123456+00:00",
            "2026-01-02T03:04:05.123456789+00:00",
            "2026-01-02T03:04:05.1234567891+00:00",
            "2026-01-02T03:04:05.+00:00",
            "2026-01-02T03:04:05+01:00",
            "2026-01-02t03:04:05z",
            "2026-01-02 03:04:05Z",
            "2026-02-30T03:04:05Z",
            "2026-01-02T24:04:05Z",
            "2026-01-02T03:60:05Z",
            "2016-12-31T23:59:60Z",
            "2026-01-02T03:04:05",
            "2026-01-02T03:04:05+00:00 ",
            "2026-1-02T03:04:05Z",
            "+2026-01-02T03:04:05Z",
            "yesterday",
            "",
        ];
        for text in texts {
            let chrono = DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.with_timezone(&Utc));
            assert_eq!(parse_rfc3339(text.as_bytes()), chrono, "{text}");
        }
        let now = Utc::now();
        assert_eq!(parse_rfc3339(Rfc3339::new(&now).as_bytes()), Some(now));
        assert!(fast_rfc3339(Rfc3339::new(&now).as_bytes()).is_some());
    }

    #[test]
    fn same_text_as_chrono() {
        let base = Utc
            .with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
            .single()
            .expect("a valid time");
        for nanos in [
            0,
            1,
            999,
            1_000,
            120_000,
            1_000_000,
            5_000_000,
            123_456_789,
            999_999_999,
        ] {
            let t = base + chrono::Duration::nanoseconds(nanos);
            assert_eq!(
                std::str::from_utf8(Rfc3339::new(&t).as_bytes()).expect("ascii"),
                t.to_rfc3339()
            );
        }
        for t in [
            Utc::now(),
            Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0)
                .single()
                .expect("valid"),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
                .single()
                .expect("valid"),
            Utc.with_ymd_and_hms(-5, 6, 7, 8, 9, 10)
                .single()
                .expect("valid"),
            Utc.with_ymd_and_hms(12345, 6, 7, 8, 9, 10)
                .single()
                .expect("valid"),
        ] {
            assert_eq!(
                std::str::from_utf8(Rfc3339::new(&t).as_bytes()).expect("ascii"),
                t.to_rfc3339()
            );
        }
    }
}
