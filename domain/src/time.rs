//! Calendar days in China time.

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};

/// Asia/Shanghai. China has kept UTC+8 all year since 1991, so a fixed offset is exact for
/// every date facepay can see, and needs no time-zone database.
pub fn shanghai() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("valid offset")
}

/// The Asia/Shanghai calendar day of an instant: the day of daily caps and daily bills.
pub fn shanghai_day(at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&shanghai()).date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_day_turns_at_16_00_utc() {
        let before: DateTime<Utc> = "2026-03-01T15:59:59Z".parse().unwrap();
        let after: DateTime<Utc> = "2026-03-01T16:00:00Z".parse().unwrap();
        assert_eq!(shanghai_day(before).to_string(), "2026-03-01");
        assert_eq!(shanghai_day(after).to_string(), "2026-03-02");
    }
}
