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
            Relative::Under(rest) => format!("{}{}", self.dir(), rest),
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
