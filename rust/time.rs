//! Timestamps: one UTC instant type, parsed from what callers send (msgpack timestamp
//! extensions, ISO-8601 / RFC 3339 strings, Unix epoch seconds) and written back as the
//! msgpack timestamp extension (type -1).
//!
//! The parsers return `None` only for malformed input; whether an instant is storable is a
//! separate question answered by [`Timestamp::in_range`] (Python's `datetime` range), so the
//! caller can tell "not a timestamp" from "a timestamp Python cannot represent".

use std::time::{SystemTime, UNIX_EPOCH};

const NANOS_PER_SEC: u32 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// An instant as whole seconds since the Unix epoch (UTC) plus nanoseconds, like
/// msgpack's timestamp extension. Ordered by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    pub secs: i64,
    /// Always < 1_000_000_000.
    pub nanos: u32,
}

impl Timestamp {
    /// 0001-01-01T00:00:00Z, the earliest instant Python's `datetime` can hold.
    pub const MIN: Timestamp = Timestamp { secs: -62_135_596_800, nanos: 0 };
    /// 9999-12-31T23:59:59.999999999Z, just past the latest `datetime`.
    pub const MAX: Timestamp = Timestamp { secs: 253_402_300_799, nanos: NANOS_PER_SEC - 1 };

    /// The current time from the system clock.
    pub fn now() -> Timestamp {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp { secs: d.as_secs() as i64, nanos: d.subsec_nanos() },
            // A clock set before 1970: count backwards, keeping `nanos` non-negative.
            Err(before) => {
                let d = before.duration();
                let secs = -(d.as_secs() as i64);
                match d.subsec_nanos() {
                    0 => Timestamp { secs, nanos: 0 },
                    n => Timestamp { secs: secs - 1, nanos: NANOS_PER_SEC - n },
                }
            }
        }
    }

    /// This instant rounded down to whole microseconds, the precision the store keeps: a
    /// trace's summary and indexes count microseconds and Python's `datetime` holds no more,
    /// so a record keeping nanoseconds would read back (rounded by the decoder) at another
    /// instant than the one `query()` lists and filters it at.
    pub fn whole_micros(self) -> Timestamp {
        Timestamp { secs: self.secs, nanos: self.nanos / 1_000 * 1_000 }
    }

    /// Whether Python's `datetime` can represent this instant (years 1..=9999, UTC).
    pub fn in_range(&self) -> bool {
        (Self::MIN..=Self::MAX).contains(self)
    }

    /// Parses `YYYY-MM-DD` or `YYYY-MM-DD(T| )HH:MM[:SS[.fraction]]` with an optional
    /// `Z`, `±HH:MM` or `±HHMM` offset (none means UTC). The fraction has 1 to 9 digits.
    /// Rejects impossible dates and times (2023-02-29, 24:00, leap seconds).
    pub fn parse_iso8601(text: &str) -> Option<Timestamp> {
        let mut c = Cursor { rest: text.as_bytes() };
        let year = c.digits(4)?;
        c.expect(b'-')?;
        let month = c.digits(2)?;
        c.expect(b'-')?;
        let day = c.digits(2)?;
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return None;
        }
        let date_secs = days_from_civil(i64::from(year), month, day) * SECS_PER_DAY;
        if c.rest.is_empty() {
            return Some(Timestamp { secs: date_secs, nanos: 0 });
        }
        if !matches!(c.next()?, b'T' | b't' | b' ') {
            return None;
        }
        let (time_secs, nanos) = c.time_of_day()?;
        let offset_secs = c.offset()?;
        if !c.rest.is_empty() {
            return None;
        }
        Some(Timestamp { secs: date_secs + time_secs - offset_secs, nanos })
    }

    /// Unix epoch seconds as a float, rounded to whole microseconds: a float holds only
    /// ~0.2 µs of precision at today's dates, and Python's `datetime.fromtimestamp` rounds
    /// the same way. `None` when not finite or too large for `i64` seconds.
    pub fn from_epoch_seconds(seconds: f64) -> Option<Timestamp> {
        const LIMIT: f64 = 9.0e18; // comfortably inside i64
        let micros = (seconds * 1e6).round();
        if !micros.is_finite() || seconds.abs() >= LIMIT / 1e6 {
            return None;
        }
        let micros = micros as i64;
        let secs = micros.div_euclid(1_000_000);
        let nanos = micros.rem_euclid(1_000_000) as u32 * 1_000;
        Some(Timestamp { secs, nanos })
    }

    /// Decodes the payload of a msgpack timestamp extension (type -1) in its 32-, 64- or
    /// 96-bit form. `None` for any other length or a nanosecond field >= 10^9.
    pub fn decode_ext(payload: &[u8]) -> Option<Timestamp> {
        let (secs, nanos) = match *payload {
            [a, b, c, d] => (i64::from(u32::from_be_bytes([a, b, c, d])), 0),
            [a, b, c, d, e, f, g, h] => {
                let data = u64::from_be_bytes([a, b, c, d, e, f, g, h]);
                ((data & ((1 << 34) - 1)) as i64, (data >> 34) as u32)
            }
            [n0, n1, n2, n3, s0, s1, s2, s3, s4, s5, s6, s7] => (
                i64::from_be_bytes([s0, s1, s2, s3, s4, s5, s6, s7]),
                u32::from_be_bytes([n0, n1, n2, n3]),
            ),
            _ => return None,
        };
        (nanos < NANOS_PER_SEC).then_some(Timestamp { secs, nanos })
    }

    /// Appends this instant as a msgpack timestamp extension: the 64-bit form when the
    /// seconds fit its unsigned 34 bits, else the 96-bit form.
    pub fn write_ext(&self, out: &mut Vec<u8>) {
        if (0..1i64 << 34).contains(&self.secs) {
            let data = (u64::from(self.nanos) << 34) | self.secs as u64;
            out.extend_from_slice(&[0xd7, 0xff]);
            out.extend_from_slice(&data.to_be_bytes());
        } else {
            out.extend_from_slice(&[0xc7, 12, 0xff]);
            out.extend_from_slice(&self.nanos.to_be_bytes());
            out.extend_from_slice(&self.secs.to_be_bytes());
        }
    }

    /// Microseconds since the epoch, rounded down (saturating far outside the valid range).
    pub fn as_micros(&self) -> i64 {
        self.secs.saturating_mul(1_000_000).saturating_add(i64::from(self.nanos / 1_000))
    }

    /// Milliseconds from `start` to `end` (negative when `end` is earlier). Exact in whole
    /// milliseconds for instants in range (their seconds are far below 2^53).
    pub fn millis_between(start: Timestamp, end: Timestamp) -> f64 {
        let secs = end.secs as f64 - start.secs as f64;
        let nanos = f64::from(end.nanos) - f64::from(start.nanos);
        secs * 1e3 + nanos / 1e6
    }
}

/// `YYYY-MM-DDTHH:00:00Z` of an hour counted from the epoch.
pub fn hour_label(hour: i64) -> String {
    let (day, hour_of_day) = (hour.div_euclid(24), hour.rem_euclid(24));
    let (year, month, day) = civil_from_days(day);
    format!("{year:04}-{month:02}-{day:02}T{hour_of_day:02}:00:00Z")
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, the inverse of `days_from_civil`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u32, day)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A forward-only reader over the bytes of an ISO-8601 string.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl Cursor<'_> {
    fn next(&mut self) -> Option<u8> {
        let (&first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(first)
    }

    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    /// Exactly `count` ASCII digits as a number.
    fn digits(&mut self, count: usize) -> Option<u32> {
        let mut value = 0;
        for _ in 0..count {
            let digit = self.next()?;
            if !digit.is_ascii_digit() {
                return None;
            }
            value = value * 10 + u32::from(digit - b'0');
        }
        Some(value)
    }

    /// `HH:MM[:SS[.fraction]]` as (seconds into the day, nanoseconds).
    fn time_of_day(&mut self) -> Option<(i64, u32)> {
        let hour = self.digits(2)?;
        self.expect(b':')?;
        let minute = self.digits(2)?;
        let (mut second, mut nanos) = (0, 0);
        if self.peek() == Some(b':') {
            self.next();
            second = self.digits(2)?;
            if self.peek() == Some(b'.') {
                self.next();
                nanos = self.fraction()?;
            }
        }
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        Some((i64::from(hour * 3600 + minute * 60 + second), nanos))
    }

    /// 1 to 9 digits after the decimal point, as nanoseconds.
    fn fraction(&mut self) -> Option<u32> {
        let mut nanos = 0;
        let mut count = 0;
        while let Some(digit) = self.peek().filter(u8::is_ascii_digit) {
            self.next();
            count += 1;
            if count > 9 {
                return None;
            }
            nanos = nanos * 10 + u32::from(digit - b'0');
        }
        (count > 0).then(|| nanos * 10u32.pow(9 - count))
    }

    /// Nothing (UTC), `Z`, `±HH:MM` or `±HHMM`, as seconds east of UTC.
    fn offset(&mut self) -> Option<i64> {
        let sign = match self.peek() {
            None => return Some(0),
            Some(b'Z' | b'z') => {
                self.next();
                return Some(0);
            }
            Some(b'+') => 1,
            Some(b'-') => -1,
            Some(_) => return None,
        };
        self.next();
        let hours = self.digits(2)?;
        if self.peek() == Some(b':') {
            self.next();
        }
        let minutes = self.digits(2)?;
        if hours > 23 || minutes > 59 {
            return None;
        }
        Some(sign * i64::from(hours * 3600 + minutes * 60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64, nanos: u32) -> Timestamp {
        Timestamp { secs, nanos }
    }

    fn parse(text: &str) -> Option<Timestamp> {
        Timestamp::parse_iso8601(text)
    }

    #[test]
    fn days_from_civil_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 1, 1), 19_723);
        assert_eq!(days_from_civil(1, 1, 1) * SECS_PER_DAY, Timestamp::MIN.secs);
        assert_eq!(days_from_civil(9999, 12, 31) * SECS_PER_DAY + 86_399, Timestamp::MAX.secs);
        assert_eq!(days_from_civil(1900, 3, 1) - days_from_civil(1900, 2, 28), 1);
        assert_eq!(days_from_civil(2100, 3, 1) - days_from_civil(2100, 2, 28), 1);
        assert_eq!(days_from_civil(2400, 3, 1) - days_from_civil(2400, 2, 28), 2);
    }

    #[test]
    fn parses_dates_times_fractions_and_separators() {
        assert_eq!(parse("1970-01-01"), Some(ts(0, 0)));
        assert_eq!(parse("2000-02-29T00:00:00Z"), Some(ts(951_782_400, 0)));
        assert_eq!(parse("2024-01-01T00:00:00"), Some(ts(1_704_067_200, 0)));
        assert_eq!(parse("2024-01-01 00:00"), Some(ts(1_704_067_200, 0)));
        assert_eq!(parse("2024-01-01t00:00:00z"), Some(ts(1_704_067_200, 0)));
        assert_eq!(parse("2024-01-01T00:00:00.5"), Some(ts(1_704_067_200, 500_000_000)));
        assert_eq!(parse("2024-01-01T00:00:00.000005"), Some(ts(1_704_067_200, 5_000)));
        assert_eq!(parse("2024-01-01T00:00:00.123456789"), Some(ts(1_704_067_200, 123_456_789)));
        assert_eq!(parse("2024-01-02T03:04:05.678901Z"), Some(ts(1_704_164_645, 678_901_000)));
        assert_eq!(parse("0001-01-01T00:00:00Z"), Some(Timestamp::MIN));
        assert_eq!(parse("9999-12-31T23:59:59.999999999Z"), Some(Timestamp::MAX));
    }

    #[test]
    fn applies_utc_offsets() {
        let utc = parse("2024-01-01T00:00:00Z");
        assert_eq!(parse("2024-01-01T05:30:00+05:30"), utc);
        assert_eq!(parse("2024-01-01T05:30:00+0530"), utc);
        assert_eq!(parse("2023-12-31T19:00:00-05:00"), utc);
        assert_eq!(parse("2024-01-01T00:00:00+00:00"), utc);
        assert_eq!(parse("2024-01-01T00:00:00-0000"), utc);
    }

    #[test]
    fn rejects_invalid_dates_times_and_syntax() {
        for bad in [
            "",
            "2023-02-29",
            "2023-02-29T00:00:00",
            "2024-13-01",
            "2024-00-10",
            "2024-04-31",
            "2024-01-00",
            "2024-01-01T24:00",
            "2024-01-01T23:60",
            "2024-01-01T23:59:60",
            "2024-01-01T00:00:00.",
            "2024-01-01T00:00:00.1234567890",
            "2024-01-01T00:00:00+24:00",
            "2024-01-01T00:00:00+05:60",
            "2024-01-01T00:00:00+05",
            "2024-01-01T00:00:00Zjunk",
            "2024-01-01X00:00",
            "2024-01-01T",
            "2024-1-01",
            "24-01-01",
            "2024/01/01",
            "10000-01-01",
            "2024-01-01T1:00",
            "2024-01-01Z",
            "２０２４-01-01",
        ] {
            assert_eq!(parse(bad), None, "{bad:?} must be rejected");
        }
    }

    #[test]
    fn range_is_python_datetime_range() {
        assert!(Timestamp::MIN.in_range() && Timestamp::MAX.in_range());
        assert!(!ts(Timestamp::MIN.secs - 1, 999_999_999).in_range());
        assert!(!ts(Timestamp::MAX.secs + 1, 0).in_range());
        // Syntactically fine, but the offset moves them outside years 1..9999.
        assert!(!parse("0001-01-01T00:00:00+01:00").is_some_and(|t| t.in_range()));
        assert!(!parse("9999-12-31T23:59:59-01:00").is_some_and(|t| t.in_range()));
        assert!(!parse("0000-06-01").is_some_and(|t| t.in_range()));
    }

    #[test]
    fn epoch_seconds_round_to_microseconds() {
        let from = Timestamp::from_epoch_seconds;
        assert_eq!(from(0.0), Some(ts(0, 0)));
        assert_eq!(from(1_700_000_000.5), Some(ts(1_700_000_000, 500_000_000)));
        assert_eq!(from(1_700_000_000.123456), Some(ts(1_700_000_000, 123_456_000)));
        assert_eq!(from(-1.25), Some(ts(-2, 750_000_000)));
        assert_eq!(from(0.9999999), Some(ts(1, 0)));
        assert_eq!(from(f64::NAN), None);
        assert_eq!(from(f64::INFINITY), None);
        assert_eq!(from(-f64::INFINITY), None);
        assert_eq!(from(1e300), None);
        assert!(!from(1e15).is_some_and(|t| t.in_range()));
    }

    #[test]
    fn ext_decodes_all_three_forms() {
        assert_eq!(Timestamp::decode_ext(&[0x65, 0x92, 0x00, 0x80]), Some(ts(1_704_067_200, 0)));
        // Bytes msgspec wrote for 2024-01-02T03:04:05.678901Z.
        let t64 = [0xa1, 0xdc, 0xd4, 0x20, 0x65, 0x93, 0x7d, 0x25];
        assert_eq!(Timestamp::decode_ext(&t64), Some(ts(1_704_164_645, 678_901_000)));
        // ... and for datetime(1, 1, 1, tzinfo=utc).
        let t96 = [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xf1, 0x88, 0x6e, 0x09, 0x00];
        assert_eq!(Timestamp::decode_ext(&t96), Some(Timestamp::MIN));
        assert_eq!(Timestamp::decode_ext(&[]), None);
        assert_eq!(Timestamp::decode_ext(&[0; 5]), None);
        let bad_nanos = (u64::from(NANOS_PER_SEC) << 34).to_be_bytes();
        assert_eq!(Timestamp::decode_ext(&bad_nanos), None);
        assert_eq!(Timestamp::decode_ext(&[0x3b, 0x9a, 0xca, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn write_ext_picks_the_smallest_allowed_form_and_round_trips() {
        let mut out = Vec::new();
        ts(1_704_164_645, 678_901_000).write_ext(&mut out);
        assert_eq!(out, [0xd7, 0xff, 0xa1, 0xdc, 0xd4, 0x20, 0x65, 0x93, 0x7d, 0x25]);
        for t in [
            ts(0, 0),
            ts((1 << 34) - 1, 999_999_999),
            ts(1 << 34, 0),
            ts(-1, 5),
            Timestamp::MIN,
            Timestamp::MAX,
        ] {
            let mut out = Vec::new();
            t.write_ext(&mut out);
            let (header, payload) = if out[0] == 0xd7 { (2, 8) } else { (3, 12) };
            assert_eq!(out.len(), header + payload);
            assert_eq!(Timestamp::decode_ext(&out[header..]), Some(t), "{t:?}");
        }
    }

    #[test]
    fn whole_micros_rounds_down_within_the_second() {
        assert_eq!(ts(1, 999_999_999).whole_micros(), ts(1, 999_999_000));
        assert_eq!(ts(-2, 750_000_500).whole_micros(), ts(-2, 750_000_000));
        assert_eq!(Timestamp::MAX.whole_micros(), ts(Timestamp::MAX.secs, 999_999_000));
        assert_eq!(ts(7, 123_000).whole_micros(), ts(7, 123_000));
    }

    #[test]
    fn micros_and_millis() {
        assert_eq!(ts(1, 999_999).as_micros(), 1_000_999);
        assert_eq!(ts(-2, 750_000_000).as_micros(), -1_250_000);
        assert_eq!(ts(i64::MIN, 0).as_micros(), i64::MIN);
        assert_eq!(Timestamp::millis_between(ts(10, 500_000_000), ts(12, 0)), 1500.0);
        assert_eq!(Timestamp::millis_between(ts(12, 0), ts(10, 500_000_000)), -1500.0);
        assert_eq!(Timestamp::millis_between(Timestamp::MIN, Timestamp::MIN), 0.0);
        assert_eq!(Timestamp::millis_between(ts(0, 0), ts(0, 1)), 1e-6);
        assert_eq!(
            Timestamp::millis_between(Timestamp::MIN, Timestamp::MAX),
            315_537_897_599_999.999_999
        );
        assert!(Timestamp::millis_between(ts(i64::MIN, 0), ts(i64::MAX, 0)).is_finite());
    }

    #[test]
    fn now_is_recent_and_valid() {
        let now = Timestamp::now();
        assert!(now.nanos < NANOS_PER_SEC);
        assert!(now > parse("2024-01-01").unwrap() && now.in_range());
    }
}
