//! The one text form of an instant the ledger writes: RFC 3339 in UTC with microseconds. The
//! audit chain hashes it (so it is part of what an event's hash means, whatever the store),
//! and the embedded store keeps its timestamps in it.

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, Timelike, Utc};

/// The one timestamp format the ledger writes: RFC 3339 in UTC with microseconds
/// (`2026-03-03T08:00:00.123456Z`, always 27 bytes), which sorts as text in time order.
/// Written by hand: chrono's formatter cost ~4 % of a bill import (a timestamp per line).
pub(crate) fn ts(at: &DateTime<Utc>) -> String {
    let (date, time) = (at.date_naive(), at.time());
    let micros = time.nanosecond() / 1_000;
    let year = u32::try_from(date.year()).ok().filter(|y| *y <= 9_999);
    let Some(year) = year.filter(|_| micros < 1_000_000) else {
        // Outside four-digit years, or a leap second: chrono's own (same format otherwise).
        return at.to_rfc3339_opts(SecondsFormat::Micros, true);
    };
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    let fields = [(0, 4, year), (5, 2, date.month()), (8, 2, date.day()), (11, 2, time.hour())];
    let fields = fields.into_iter().chain([(14, 2, time.minute()), (17, 2, time.second()), (20, 6, micros)]);
    for (at, width, mut v) in fields {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    String::from_utf8(b.to_vec()).expect("ASCII digits and separators")
}

/// [`ts`]'s exact format, or `None` (then chrono decides, and names the error).
pub(crate) fn parse_canonical(b: &[u8]) -> Option<DateTime<Utc>> {
    let shape = b.len() == 27 && b[26] == b'Z' && b[10] == b'T' && b[19] == b'.';
    if !(shape && b[4] == b'-' && b[7] == b'-' && b[13] == b':' && b[16] == b':') {
        return None;
    }
    let num = |from: usize, to: usize| {
        b[from..to].iter().try_fold(0_u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    let date = NaiveDate::from_ymd_opt(i32::try_from(num(0, 4)?).ok()?, num(5, 7)?, num(8, 10)?)?;
    let time = date.and_hms_micro_opt(num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 26)?)?;
    Some(time.and_utc())
}
