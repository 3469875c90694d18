//! Decision time. The engine never reads the wall clock itself: it asks a [`Clock`], which the
//! server wires to the system clock and tests replace with a [`ManualClock`]. Also converts
//! between Warrant's millisecond timestamps and Cedar `datetime` strings.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// Milliseconds since the Unix epoch, UTC: the precision of a Cedar `datetime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    pub fn saturating_add_millis(self, millis: i64) -> Self {
        UnixMillis(self.0.saturating_add(millis))
    }

    /// The Cedar `datetime` literal for this instant, e.g. `2026-11-27T13:35:00.000Z`.
    pub fn to_cedar_datetime(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            ),
            // Outside the calendar `time` supports; Cedar rejects it too, which fails closed.
            Err(_) => format!("out-of-range:{}", self.0),
        }
    }

    /// RFC 3339 text, for people and logs.
    pub fn to_rfc3339(self) -> String {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| format!("unix-ms:{}", self.0))
    }

    /// Parses RFC 3339 text (e.g. `2026-11-27T13:35:00Z`).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        OffsetDateTime::parse(text, &Rfc3339)
            .ok()
            .map(Self::from_offset)
    }

    /// Parses the forms Cedar's `datetime()` accepts: `YYYY-MM-DD`, `YYYY-MM-DDThh:mm:ssZ`,
    /// `YYYY-MM-DDThh:mm:ss.SSSZ`, and the last two with a `+hhmm` / `-hhmm` offset instead of `Z`.
    pub fn parse_cedar_datetime(text: &str) -> Option<Self> {
        let date_only = format_description!("[year]-[month]-[day]");
        if let Ok(date) = Date::parse(text, date_only) {
            return Some(Self::from_offset(date.midnight().assume_utc()));
        }
        if text.len() < 19 {
            return None;
        }
        let (local, zone) = if let Some(local) = text.strip_suffix('Z') {
            (local, UtcOffset::UTC)
        } else {
            let (local, zone) = text.split_at(text.len().checked_sub(5)?);
            let zone_format = format_description!("[offset_hour sign:mandatory][offset_minute]");
            (local, UtcOffset::parse(zone, zone_format).ok()?)
        };
        let seconds = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
        let millis = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]"
        );
        let local = PrimitiveDateTime::parse(local, seconds)
            .or_else(|_| PrimitiveDateTime::parse(local, millis))
            .ok()?;
        Some(Self::from_offset(local.assume_offset(zone)))
    }

    fn from_offset(t: OffsetDateTime) -> Self {
        // Every instant `time` holds (years -9999 to 9999) is within i64 milliseconds.
        let millis = t.unix_timestamp_nanos() / 1_000_000;
        UnixMillis(i64::try_from(millis).unwrap_or(if millis < 0 { i64::MIN } else { i64::MAX }))
    }
}

/// Where decision time comes from.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> UnixMillis;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    // The one place that reads the system's clock (clippy.toml forbids it elsewhere).
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> UnixMillis {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        UnixMillis(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that only moves when told to: for tests and policy test cases.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: UnixMillis) -> Self {
        ManualClock(AtomicI64::new(start.0))
    }

    pub fn set(&self, to: UnixMillis) {
        self.0.store(to.0, Ordering::SeqCst);
    }

    pub fn advance_millis(&self, millis: i64) {
        self.0.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_cedar_datetime_form() {
        let z = UnixMillis::parse_cedar_datetime("2026-11-27T13:35:00Z").unwrap();
        assert_eq!(z.to_cedar_datetime(), "2026-11-27T13:35:00.000Z");
        let ms = UnixMillis::parse_cedar_datetime("2026-11-27T13:35:00.250Z").unwrap();
        assert_eq!(ms.0 - z.0, 250);
        let offset = UnixMillis::parse_cedar_datetime("2026-11-27T14:35:00+0100").unwrap();
        assert_eq!(offset, z);
        let offset_ms = UnixMillis::parse_cedar_datetime("2026-11-27T12:35:00.250-0100").unwrap();
        assert_eq!(offset_ms, ms);
        let day = UnixMillis::parse_cedar_datetime("2026-11-27").unwrap();
        assert_eq!(day.to_cedar_datetime(), "2026-11-27T00:00:00.000Z");
        assert_eq!(UnixMillis::parse_cedar_datetime("2026-11-27T13:35"), None);
        assert_eq!(UnixMillis::parse_cedar_datetime("yesterday"), None);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(UnixMillis(1_000));
        assert_eq!(clock.now(), UnixMillis(1_000));
        clock.advance_millis(500);
        assert_eq!(clock.now(), UnixMillis(1_500));
        clock.set(UnixMillis(7));
        assert_eq!(clock.now(), UnixMillis(7));
    }
}
