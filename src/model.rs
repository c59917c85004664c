//! Plain data shared by every stage: version records, sides and `s3://` locations.
//!
//! Nothing here does I/O or knows the SDK; the S3 module converts SDK types into these.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;

/// The version id S3 gives objects written while versioning was off or suspended.
pub const NULL_VERSION_ID: &str = "null";

/// Which side of a failback a record or a bucket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The replica: read from, never written.
    Source,
    /// The primary (or a drill's scratch bucket): written to.
    Dest,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Dest => "dest",
        })
    }
}

/// One object version or delete marker, as ListObjectVersions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecord {
    /// The object key, verbatim (never normalised).
    pub key: String,
    /// The version id; `null` for versions written while versioning was off.
    pub version_id: String,
    /// Whether this is the key's current version (or current delete marker).
    pub is_latest: bool,
    /// Whether this entry is a delete marker rather than an object version.
    pub is_delete_marker: bool,
    /// When the version was written.
    pub last_modified: Timestamp,
    /// Size in bytes; 0 for a delete marker.
    pub size_bytes: u64,
    /// The ETag without its surrounding quotes; `None` for a delete marker.
    pub etag: Option<String>,
    /// The storage class as listed (`STANDARD`, `GLACIER`, ...); `None` for a delete marker.
    pub storage_class: Option<String>,
    /// The additional checksum algorithm, where the listing or an inventory names one.
    pub checksum_algorithm: Option<String>,
}

impl VersionRecord {
    /// The parts count of a multipart upload, read from the ETag's `-N` suffix.
    pub fn parts_count(&self) -> Option<u32> {
        let etag = self.etag.as_deref()?;
        let (_, n) = etag.rsplit_once('-')?;
        n.parse().ok()
    }

    /// Whether the version was written by a multipart upload.
    pub fn is_multipart(&self) -> bool {
        self.parts_count().is_some()
    }

    /// Whether the version sits in an archive class that must be restored before a copy.
    pub fn is_archived(&self) -> bool {
        matches!(self.storage_class.as_deref(), Some("GLACIER" | "DEEP_ARCHIVE"))
    }

    /// Whether two versions hold the same content by the listing alone: the same version id
    /// (replication keeps it), or the same size and ETag.
    pub fn same_content(&self, other: &VersionRecord) -> bool {
        if self.is_delete_marker || other.is_delete_marker {
            return false;
        }
        if self.version_id != NULL_VERSION_ID && self.version_id == other.version_id {
            return true;
        }
        self.size_bytes == other.size_bytes && self.etag.is_some() && self.etag == other.etag
    }
}

/// Parses a time in the one shape S3 listings and inventories write, `YYYY-MM-DDTHH:MM:SSZ`,
/// without jiff's general RFC 3339 parser (planning from inventories parses one per
/// version). `None` for any other shape (fractions, offsets, lower case) or an invalid date:
/// the caller then asks jiff, whose answer or error stands.
pub fn parse_timestamp_fast(text: &str) -> Option<Timestamp> {
    let b = text.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z'
    {
        return None;
    }
    let num = |from: usize, to: usize| {
        b[from..to]
            .iter()
            .try_fold(0i64, |n, &c| c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0')))
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    // A leap second (`:60`) is left to jiff, as is every other out-of-range field.
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second;
    Timestamp::from_second(seconds).ok()
}

/// Appends `t` as RFC 3339 in UTC, exactly as jiff's `Display` writes it, taking a short
/// path for whole seconds in years 0 to 9999 (every time S3 lists).
pub fn push_timestamp(t: Timestamp, out: &mut String) {
    let seconds = t.as_second();
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    if t.subsec_nanosecond() != 0 || !(0..=9999).contains(&year) {
        use std::fmt::Write;
        // Writing into a String cannot fail.
        let _ = write!(out, "{t}");
        return;
    }
    let mut buf = *b"0000-00-00T00:00:00Z";
    let mut put = |at: usize, width: usize, mut n: i64| {
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, of_day / 3_600);
    put(14, 2, of_day / 60 % 60);
    put(17, 2, of_day % 60);
    out.push_str(std::str::from_utf8(&buf).expect("ASCII digits and separators"));
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (month 1-12), counted in 400-year
/// eras of 146,097 days with the year starting in March, so that February's length only
/// matters at the year's end.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month 1-12, day 1-31).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let m = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * m + 2) / 5 + 1;
    let month = if m < 10 { m + 3 } else { m - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Why an `s3://` location could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    /// The text does not start with `s3://`.
    #[error("{0:?} is not an s3:// URL (expected s3://BUCKET[/PREFIX])")]
    NotS3(String),
    /// The bucket part is empty or has characters a bucket name cannot have.
    #[error("{url:?} has an invalid bucket name {bucket:?}")]
    BadBucket {
        /// The whole URL as given.
        url: String,
        /// The bucket part.
        bucket: String,
    },
}

/// A bucket and a prefix, from `s3://bucket[/prefix]`.
///
/// A prefix ending in `/` is used as S3 gives it; a prefix without a trailing `/` selects
/// the key equal to it and the keys under `prefix/`, so `s3://b/data` never selects
/// `database/x`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The bucket name.
    pub bucket: String,
    /// The prefix, verbatim; empty for the whole bucket.
    pub prefix: String,
}

/// Where a key stands relative to a location's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relative<'a> {
    /// The key equals a prefix that has no trailing `/`.
    Exact,
    /// The key lies under the prefix's directory; the rest of the key after it.
    Under(&'a str),
}

impl Location {
    /// A location for a whole bucket or a prefix of it.
    pub fn new(bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        Location {
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    /// The prefix to send with a listing request; every selected key starts with it.
    pub fn list_prefix(&self) -> &str {
        &self.prefix
    }

    /// The prefix's directory form: empty, or the prefix ending in `/`.
    fn dir(&self) -> std::borrow::Cow<'_, str> {
        if self.prefix.is_empty() || self.prefix.ends_with('/') {
            std::borrow::Cow::Borrowed(&self.prefix)
        } else {
            std::borrow::Cow::Owned(format!("{}/", self.prefix))
        }
    }

    /// Where `key` stands relative to this location, or `None` when it is not selected.
    pub fn relative<'a>(&self, key: &'a str) -> Option<Relative<'a>> {
        if !self.prefix.is_empty() && !self.prefix.ends_with('/') && key == self.prefix {
            return Some(Relative::Exact);
        }
        key.strip_prefix(self.dir().as_ref()).map(Relative::Under)
    }

    /// Whether this location selects `key`.
    pub fn selects(&self, key: &str) -> bool {
        self.relative(key).is_some()
    }

    /// The key under this location that stands where `rel` stands under another location.
    pub fn join(&self, rel: Relative<'_>) -> String {
        match rel {
            Relative::Exact => self.prefix.trim_end_matches('/').to_owned(),
            Relative::Under(rest) => {
                // Called once per key when planning: one allocation, no formatting machinery.
                let dir = self.dir();
                let mut key = String::with_capacity(dir.len() + rest.len());
                key.push_str(&dir);
                key.push_str(rest);
                key
            }
        }
    }

    /// Maps a key selected by `from` onto this location (`data/x` onto `restored/x`).
    /// `None` when `from` does not select the key.
    pub fn map_key_from(&self, from: &Location, key: &str) -> Option<String> {
        from.relative(key).map(|rel| self.join(rel))
    }

    /// Whether two locations in the same bucket select any key in common.
    pub fn overlaps(&self, other: &Location) -> bool {
        if self.bucket != other.bucket {
            return false;
        }
        let (a, b) = (self.dir(), other.dir());
        a.starts_with(b.as_ref()) || b.starts_with(a.as_ref())
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

impl FromStr for Location {
    type Err = LocationError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let rest = url
            .strip_prefix("s3://")
            .or_else(|| url.strip_prefix("S3://"))
            .ok_or_else(|| LocationError::NotS3(url.to_owned()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = (3..=255).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            && !bucket.starts_with(['.', '-'])
            && !bucket.ends_with(['.', '-']);
        if !valid {
            return Err(LocationError::BadBucket {
                url: url.to_owned(),
                bucket: bucket.to_owned(),
            });
        }
        Ok(Location::new(bucket, prefix))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn loc(s: &str) -> Location {
        s.parse().unwrap()
    }

    #[test]
    fn parses_locations() {
        let cases = [
            ("s3://bucket", "bucket", ""),
            ("s3://bucket/", "bucket", ""),
            ("s3://bucket/data", "bucket", "data"),
            ("s3://bucket/data/", "bucket", "data/"),
            ("s3://bucket//lead", "bucket", "/lead"),
            ("s3://my.bucket-1/a b/c+d", "my.bucket-1", "a b/c+d"),
        ];
        for (url, bucket, prefix) in cases {
            assert_eq!(loc(url), Location::new(bucket, prefix), "{url}");
        }
    }

    #[test]
    fn rejects_bad_locations() {
        for url in [
            "bucket",
            "http://bucket",
            "s3://",
            "s3:///x",
            "s3://a",
            "s3://bad bucket/x",
            "s3://-x-/y",
        ] {
            assert!(url.parse::<Location>().is_err(), "{url} should not parse");
        }
    }

    #[test]
    fn prefix_without_slash_selects_key_and_directory() {
        let l = loc("s3://bkt/data");
        assert!(l.selects("data"));
        assert!(l.selects("data/x"));
        assert!(!l.selects("database/x"));
        assert!(!l.selects("data-x"));
        let l = loc("s3://bkt/data/");
        assert!(l.selects("data/"));
        assert!(l.selects("data/x"));
        assert!(!l.selects("data"));
        assert!(loc("s3://bkt").selects("anything"));
    }

    #[test]
    fn maps_keys_between_prefixes() {
        let cases = [
            ("s3://rep/data", "s3://pri/restored", "data/x", Some("restored/x")),
            ("s3://rep/data", "s3://pri/restored", "data", Some("restored")),
            ("s3://rep/data/", "s3://pri/restored", "data/x", Some("restored/x")),
            ("s3://rep/data/", "s3://pri/restored/", "data/x/y", Some("restored/x/y")),
            ("s3://rep/data", "s3://pri", "data/x", Some("x")),
            ("s3://rep", "s3://pri", "a//b", Some("a//b")),
            ("s3://rep", "s3://pri/restored", "k", Some("restored/k")),
            ("s3://rep/data", "s3://pri/restored", "database", None),
        ];
        for (from, to, key, want) in cases {
            assert_eq!(
                loc(to).map_key_from(&loc(from), key).as_deref(),
                want,
                "{from} -> {to}: {key}"
            );
        }
    }

    #[test]
    fn overlap() {
        assert!(loc("s3://bkt/a").overlaps(&loc("s3://bkt/a/x")));
        assert!(loc("s3://bkt").overlaps(&loc("s3://bkt/a")));
        assert!(!loc("s3://bkt/a").overlaps(&loc("s3://bkt/ab")));
        assert!(!loc("s3://bkt/a").overlaps(&loc("s3://cat/a")));
    }

    /// Whole-second times across jiff's range, and the text jiff writes for them.
    fn whole_seconds() -> impl Strategy<Value = Timestamp> {
        (Timestamp::MIN.as_second() + 1..Timestamp::MAX.as_second()).prop_map(|s| Timestamp::from_second(s).unwrap())
    }

    proptest! {
        #[test]
        fn timestamp_fast_paths_agree_with_jiff(t in whole_seconds(), nanos in 0..1_000_000_000i32) {
            let text = t.to_string();
            let mut pushed = String::new();
            push_timestamp(t, &mut pushed);
            prop_assert_eq!(&pushed, &text);
            if let Some(parsed) = parse_timestamp_fast(&text) {
                prop_assert_eq!(parsed, t);
            }
            let fraction = Timestamp::new(t.as_second(), nanos).unwrap();
            let mut pushed = String::new();
            push_timestamp(fraction, &mut pushed);
            prop_assert_eq!(pushed, fraction.to_string());
        }

        #[test]
        fn timestamp_fast_parse_agrees_with_jiff_on_any_digits(
            year in 0..10_000i64, month in 0..14i64, day in 0..33i64,
            hour in 0..26i64, minute in 0..62i64, second in 0..62i64,
        ) {
            let text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z");
            let by_jiff = text.parse::<Timestamp>().ok();
            match parse_timestamp_fast(&text) {
                Some(t) => prop_assert_eq!(Some(t), by_jiff, "{}", text),
                // The fast path declines only what jiff rejects or reads specially.
                None => prop_assert!(by_jiff.is_none() || second == 60, "{}", text),
            }
        }
    }

    #[test]
    fn timestamp_fast_parse_takes_s3_times_and_declines_other_shapes() {
        for text in [
            "2026-01-02T03:04:05Z",
            "1970-01-01T00:00:00Z",
            "2024-02-29T23:59:59Z",
            "0000-03-01T00:00:00Z",
        ] {
            assert_eq!(parse_timestamp_fast(text), Some(text.parse().unwrap()), "{text}");
        }
        for text in [
            "2026-01-02T03:04:05.5Z",
            "2026-01-02T03:04:05+00:00",
            "2026-01-02t03:04:05z",
            "2026-01-02 03:04:05Z",
            "2025-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-02T24:00:00Z",
            "2016-12-31T23:59:60Z",
            "+2026-01-02T03:04:05Z",
            "2026-01-0aT03:04:05Z",
            "",
        ] {
            assert_eq!(parse_timestamp_fast(text), None, "{text}");
        }
    }

    #[test]
    fn multipart_from_etag() {
        let mut r = VersionRecord {
            key: "k".into(),
            version_id: "v".into(),
            is_latest: true,
            is_delete_marker: false,
            last_modified: Timestamp::UNIX_EPOCH,
            size_bytes: 1,
            etag: Some("abc-3".into()),
            storage_class: Some("STANDARD".into()),
            checksum_algorithm: None,
        };
        assert_eq!(r.parts_count(), Some(3));
        r.etag = Some("d41d8cd98f00b204e9800998ecf8427e".into());
        assert!(!r.is_multipart());
    }
}
