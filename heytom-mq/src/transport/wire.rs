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
        // Each accessor of a `DateTime` applies its offset first (the same
        // work seven times for UTC's zero): the naive time once instead.
        let utc = t.naive_utc();
        let (date, time) = (utc.date(), utc.time());
        let nanos = time.nanosecond();
        let year = date.year();
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
        out.digits(date.month(), 2);
        out.byte(b'-');
        out.digits(date.day(), 2);
        out.byte(b'T');
        out.digits(time.hour(), 2);
        out.byte(b':');
        out.digits(time.minute(), 2);
        out.byte(b':');
        out.digits(time.second(), 2);
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

/// The shape [`Rfc3339`] writes (this runs once per consumed message):
/// digits and separators checked in place, no iterator or closure per
/// field; chrono checks the date and time. `None` for anything else (leap
/// seconds, other offsets, bad dates), which chrono then reads or rejects.
fn fast_rfc3339(v: &[u8]) -> Option<DateTime<Utc>> {
    let digit = |i: usize| -> Option<u32> {
        let d = v.get(i)?.wrapping_sub(b'0');
        (d < 10).then_some(u32::from(d))
    };
    let two = |i: usize| Some(digit(i)? * 10 + digit(i + 1)?);
    if v.len() < 20
        || v[4] != b'-'
        || v[7] != b'-'
        || v[10] != b'T'
        || v[13] != b':'
        || v[16] != b':'
    {
        return None;
    }
    let year = two(0)? * 100 + two(2)?;
    let (month, day) = (two(5)?, two(8)?);
    let (hour, minute, second) = (two(11)?, two(14)?, two(17)?);
    let mut at = 19;
    let mut nanos = 0;
    if v[at] == b'.' {
        at += 1;
        let first = at;
        while let Some(d) = digit(at) {
            if at - first == 9 {
                return None;
            }
            nanos = nanos * 10 + d;
            at += 1;
        }
        if at == first {
            return None;
        }
        nanos *= 10u32.pow((9 - (at - first)) as u32);
    }
    if !matches!(&v[at..], b"Z" | b"+00:00") || second > 59 {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, month, day)?;
    Some(
        date.and_hms_nano_opt(hour, minute, second, nanos)?
            .and_utc(),
    )
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
    fn the_fast_path_reads_every_time_it_writes() {
        // Seconds across years 0000-9999 (leap days, century years) and
        // every fraction length: the fast path itself, not chrono behind it.
        let (min, max) = (-62_167_219_200i64, 253_402_300_799i64);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = min + (x % (max - min + 1) as u64) as i64;
            let nanos = match i % 4 {
                0 => 0,
                1 => (x >> 40) as u32 % 1000 * 1_000_000,
                2 => (x >> 34) as u32 % 1_000_000 * 1000,
                _ => (x >> 32) as u32 % 1_000_000_000,
            };
            let t = DateTime::from_timestamp(secs, nanos).expect("in range");
            let text = Rfc3339::new(&t);
            assert_eq!(fast_rfc3339(text.as_bytes()), Some(t), "{t}");
        }
        for date in [
            "2000-02-29",
            "1900-02-28",
            "2024-02-29",
            "0000-02-29",
            "2026-12-31",
        ] {
            let text = format!("{date}T00:00:00Z");
            assert!(fast_rfc3339(text.as_bytes()).is_some(), "{text}");
            assert_eq!(
                parse_rfc3339(text.as_bytes()),
                DateTime::parse_from_rfc3339(&text)
                    .ok()
                    .map(|t| t.with_timezone(&Utc))
            );
        }
        for date in [
            "1900-02-29",
            "2023-02-29",
            "2026-04-31",
            "2026-13-01",
            "2026-00-10",
            "2026-01-00",
        ] {
            assert_eq!(
                fast_rfc3339(format!("{date}T00:00:00Z").as_bytes()),
                None,
                "{date}"
            );
        }
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
