//! The `scan` stage: a listing written as `inventory.csv`, and the reader that turns such
//! a file back into the same ordered stream of [`VersionRecord`]s.
//!
//! The reader checks S3's order (keys in UTF-8 byte order, each key's entries together),
//! because every later stage merge-joins on it. Comparing inventories is reconcile's job.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::model::VersionRecord;

/// The inventory columns, in order (DESIGN.md's minimum, then `checksum_algorithm`).
pub const INVENTORY_COLUMNS: [&str; 9] = [
    "key",
    "version_id",
    "is_latest",
    "is_delete_marker",
    "last_modified",
    "size",
    "etag",
    "storage_class",
    "checksum_algorithm",
];

/// One line of `inventory.csv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryRow {
    /// The key, verbatim.
    pub key: String,
    /// The version id (`null` for unversioned writes).
    pub version_id: String,
    /// Whether it is the key's current entry.
    pub is_latest: bool,
    /// Whether it is a delete marker.
    pub is_delete_marker: bool,
    /// RFC 3339, UTC.
    pub last_modified: String,
    /// Bytes; empty for a delete marker.
    pub size: Option<u64>,
    /// ETag without quotes; empty for a delete marker.
    pub etag: Option<String>,
    /// Storage class; empty for a delete marker.
    pub storage_class: Option<String>,
    /// Additional checksum algorithm, where known.
    #[serde(default)]
    pub checksum_algorithm: Option<String>,
}

impl From<&VersionRecord> for InventoryRow {
    fn from(r: &VersionRecord) -> Self {
        InventoryRow {
            key: r.key.clone(),
            version_id: r.version_id.clone(),
            is_latest: r.is_latest,
            is_delete_marker: r.is_delete_marker,
            last_modified: r.last_modified.to_string(),
            size: (!r.is_delete_marker).then_some(r.size_bytes),
            etag: if r.is_delete_marker { None } else { r.etag.clone() },
            storage_class: if r.is_delete_marker {
                None
            } else {
                r.storage_class.clone()
            },
            checksum_algorithm: r.checksum_algorithm.clone(),
        }
    }
}

/// Why an inventory file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The file could not be opened.
    #[error("cannot open inventory {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The header lacks a column.
    #[error("inventory {path}: the header lacks the column {column:?}")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column.
        column: &'static str,
    },
    /// A row could not be parsed.
    #[error("inventory {path} line {line}: {message}")]
    BadRow {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// Rows are not in S3's order.
    #[error(
        "inventory {path} line {line} is out of order: {next:?} follows {prev:?} (keys must be in UTF-8 byte order, each key's entries together)"
    )]
    OutOfOrder {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: u64,
        /// The key before.
        prev: String,
        /// The key that breaks the order.
        next: String,
    },
}

/// Reads an inventory CSV as an iterator of records in S3's order.
///
/// Rows are read into one reused record and converted straight from its fields; a row the
/// fast conversion does not take as it is (an unusual number or time, an invalid field)
/// goes through serde and [`InventoryRow`], so its value or its error is exactly what
/// serde makes of it.
pub struct InventoryReader<R: Read> {
    path: PathBuf,
    csv: csv::Reader<R>,
    headers: csv::StringRecord,
    /// Where the columns sit; `None` when the header names a column twice, so that every
    /// row goes through serde (which rejects such a header).
    columns: Option<Columns>,
    record: csv::StringRecord,
    prev_key: Option<String>,
    done: bool,
}

/// The index of each inventory column in the header.
struct Columns {
    key: usize,
    version_id: usize,
    is_latest: usize,
    is_delete_marker: usize,
    last_modified: usize,
    size: usize,
    etag: usize,
    storage_class: usize,
    checksum_algorithm: Option<usize>,
}

impl Columns {
    /// The columns of `headers`, or `None` when one is missing or named twice.
    fn find(headers: &csv::StringRecord) -> Option<Columns> {
        let mut at = [None; INVENTORY_COLUMNS.len()];
        for (i, h) in headers.iter().enumerate() {
            if let Some(c) = INVENTORY_COLUMNS.iter().position(|c| *c == h) {
                if at[c].is_some() {
                    return None;
                }
                at[c] = Some(i);
            }
        }
        Some(Columns {
            key: at[0]?,
            version_id: at[1]?,
            is_latest: at[2]?,
            is_delete_marker: at[3]?,
            last_modified: at[4]?,
            size: at[5]?,
            etag: at[6]?,
            storage_class: at[7]?,
            checksum_algorithm: at[8],
        })
    }

    /// The record for a row whose fields are all in their plain form (`true`/`false`,
    /// decimal sizes, `YYYY-MM-DDTHH:MM:SSZ` times) and valid; `None` sends the row to
    /// the serde path, which decides as it always has.
    fn convert(&self, row: &csv::StringRecord) -> Option<VersionRecord> {
        let flag = |i: usize| match row.get(i)? {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        };
        // csv reads an empty field as `None`, as serde does for `Option` fields.
        let text = |i: usize| row.get(i).map(|s| (!s.is_empty()).then(|| s.to_owned()));
        let is_latest = flag(self.is_latest)?;
        let is_delete_marker = flag(self.is_delete_marker)?;
        let size_bytes = match row.get(self.size)? {
            "" if is_delete_marker => 0,
            "" => return None,
            s => s.parse().ok()?,
        };
        let version_id = row.get(self.version_id)?;
        if version_id.is_empty() {
            return None;
        }
        let last_modified = crate::model::parse_timestamp_fast(row.get(self.last_modified)?)?;
        let etag = row.get(self.etag)?;
        Some(VersionRecord {
            key: row.get(self.key)?.to_owned(),
            version_id: version_id.to_owned(),
            is_latest,
            is_delete_marker,
            last_modified,
            size_bytes,
            etag: (!etag.is_empty()).then(|| etag.trim_matches('"').to_owned()),
            storage_class: text(self.storage_class)?,
            checksum_algorithm: match self.checksum_algorithm {
                Some(i) => text(i)?,
                None => None,
            },
        })
    }
}

impl InventoryReader<File> {
    /// Opens an inventory file.
    ///
    /// # Errors
    /// The file cannot be opened or its header lacks a column.
    pub fn open(path: &Path) -> Result<Self, InventoryError> {
        let file = File::open(path).map_err(|source| InventoryError::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::new(file, path)
    }
}

impl<R: Read> InventoryReader<R> {
    /// Reads an inventory from `reader`; `path` names it in messages.
    ///
    /// # Errors
    /// The header cannot be read or lacks a column.
    pub fn new(reader: R, path: &Path) -> Result<Self, InventoryError> {
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(true)
            .buffer_capacity(1 << 16)
            .from_reader(reader);
        let headers = csv
            .headers()
            .map_err(|e| InventoryError::BadRow {
                path: path.to_owned(),
                line: 1,
                message: e.to_string(),
            })?
            .clone();
        for column in &INVENTORY_COLUMNS[..8] {
            if !headers.iter().any(|h| h == *column) {
                return Err(InventoryError::MissingColumn {
                    path: path.to_owned(),
                    column,
                });
            }
        }
        Ok(InventoryReader {
            path: path.to_owned(),
            columns: Columns::find(&headers),
            csv,
            headers,
            record: csv::StringRecord::new(),
            prev_key: None,
            done: false,
        })
    }

    /// The record in `self.record`, read through serde: the path for rows the fast
    /// conversion declines, with serde's values and messages.
    fn convert_slow(&self, line: u64) -> Result<VersionRecord, InventoryError> {
        let row: InventoryRow = self
            .record
            .deserialize(Some(&self.headers))
            .map_err(|e| InventoryError::BadRow {
                path: self.path.clone(),
                line: e.position().map(|p| p.line()).unwrap_or(0),
                message: e.to_string(),
            })?;
        self.convert(row, line)
    }

    fn convert(&self, row: InventoryRow, line: u64) -> Result<VersionRecord, InventoryError> {
        let bad = |message: String| InventoryError::BadRow {
            path: self.path.clone(),
            line,
            message,
        };
        let last_modified: Timestamp = row
            .last_modified
            .parse()
            .map_err(|e| bad(format!("last_modified {:?}: {e}", row.last_modified)))?;
        if row.version_id.is_empty() {
            return Err(bad("version_id is empty".to_owned()));
        }
        if !row.is_delete_marker && row.size.is_none() {
            return Err(bad("size is empty on an object version".to_owned()));
        }
        Ok(VersionRecord {
            key: row.key,
            version_id: row.version_id,
            is_latest: row.is_latest,
            is_delete_marker: row.is_delete_marker,
            last_modified,
            size_bytes: row.size.unwrap_or(0),
            etag: row
                .etag
                .filter(|e| !e.is_empty())
                .map(|e| e.trim_matches('"').to_owned()),
            storage_class: row.storage_class.filter(|c| !c.is_empty()),
            checksum_algorithm: row.checksum_algorithm.filter(|c| !c.is_empty()),
        })
    }

    /// The next row as a record, checked against the order of the ones before it.
    fn read_next(&mut self) -> Option<Result<VersionRecord, InventoryError>> {
        match self.csv.read_record(&mut self.record) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                return Some(Err(InventoryError::BadRow {
                    path: self.path.clone(),
                    line,
                    message: e.to_string(),
                }));
            }
        }
        let line = self.csv.position().line().saturating_sub(1).max(2);
        let fast = self.columns.as_ref().and_then(|c| c.convert(&self.record));
        let rec = match fast {
            Some(rec) => rec,
            None => match self.convert_slow(line) {
                Ok(rec) => rec,
                Err(e) => return Some(Err(e)),
            },
        };
        match &mut self.prev_key {
            // One comparison per row: keys in UTF-8 byte order, a key's rows together.
            Some(prev) => match prev.as_bytes().cmp(rec.key.as_bytes()) {
                std::cmp::Ordering::Greater => {
                    return Some(Err(InventoryError::OutOfOrder {
                        path: self.path.clone(),
                        line,
                        prev: prev.clone(),
                        next: rec.key,
                    }));
                }
                // The buffer is reused: a new key costs a copy, not an allocation.
                std::cmp::Ordering::Less => {
                    prev.clear();
                    prev.push_str(&rec.key);
                }
                std::cmp::Ordering::Equal => {}
            },
            None => self.prev_key = Some(rec.key.clone()),
        }
        Some(Ok(rec))
    }
}

impl<R: Read> Iterator for InventoryReader<R> {
    type Item = Result<VersionRecord, InventoryError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let result = self.read_next()?;
        if result.is_err() {
            self.done = true;
        }
        Some(result)
    }
}

/// Counts a scan reports in its summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Distinct keys.
    pub keys: u64,
    /// Object versions (delete markers not included).
    pub versions: u64,
    /// Delete markers.
    pub delete_markers: u64,
    /// Bytes over all object versions.
    pub bytes: u64,
    /// Keys whose current entry is an object version.
    pub current_objects: u64,
}

impl ScanStats {
    /// Counts one record; records arrive in S3's order, so a new key follows its last.
    pub fn add(&mut self, rec: &VersionRecord, prev_key: Option<&str>) {
        if prev_key != Some(rec.key.as_str()) {
            self.keys += 1;
        }
        if rec.is_delete_marker {
            self.delete_markers += 1;
        } else {
            self.versions += 1;
            self.bytes += rec.size_bytes;
            if rec.is_latest {
                self.current_objects += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn rec(key: &str, vid: &str, dm: bool) -> VersionRecord {
        VersionRecord {
            key: key.into(),
            version_id: vid.into(),
            is_latest: true,
            is_delete_marker: dm,
            last_modified: "2026-01-02T03:04:05Z".parse().unwrap(),
            size_bytes: if dm { 0 } else { 12 },
            etag: (!dm).then(|| "0123abcd".into()),
            storage_class: (!dm).then(|| "STANDARD".into()),
            checksum_algorithm: None,
        }
    }

    fn write(records: &[VersionRecord]) -> Vec<u8> {
        let mut w = csv::Writer::from_writer(Vec::new());
        for r in records {
            w.serialize(InventoryRow::from(r)).unwrap();
        }
        w.into_inner().unwrap()
    }

    #[test]
    fn round_trips_hostile_keys() {
        let keys = [
            "a,b",
            "q\"uote",
            "new\nline",
            "tab\there",
            "=cmd|' /C calc'!A0",
            "/lead",
            "é",
            "ｆ",
        ];
        let mut records: Vec<_> = keys.iter().map(|k| rec(k, "v1", false)).collect();
        records.push(rec("zz", "null", true));
        records.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
        let bytes = write(&records);
        let back: Vec<_> = InventoryReader::new(&bytes[..], Path::new("t.csv"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, records);
    }

    #[test]
    fn delete_marker_fields_are_empty() {
        let bytes = write(&[rec("k", "v", true)]);
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(text.lines().nth(1).unwrap(), "k,v,true,true,2026-01-02T03:04:05Z,,,,");
    }

    #[test]
    fn rejects_out_of_order_and_bad_rows() {
        let bytes = write(&[rec("b", "v", false), rec("a", "v", false)]);
        let err = InventoryReader::new(&bytes[..], Path::new("inv.csv"))
            .unwrap()
            .find_map(Result::err)
            .unwrap();
        assert!(err.to_string().contains("out of order"), "{err}");
        assert!(err.to_string().contains("line 3"), "{err}");

        let text = "key,version_id,is_latest,is_delete_marker,last_modified,size,etag,storage_class\nk,v,maybe,false,2026-01-01T00:00:00Z,1,e,STANDARD\n";
        let err = InventoryReader::new(text.as_bytes(), Path::new("inv.csv"))
            .unwrap()
            .find_map(Result::err)
            .unwrap();
        assert!(err.to_string().starts_with("inventory inv.csv line 2"), "{err}");

        let err = InventoryReader::new("key,version_id\n".as_bytes(), Path::new("inv.csv"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("is_latest"), "{err}");
    }

    /// A header and one row, read up to the row: the reader with its record filled.
    fn reader_at_row(fields: &[String]) -> InventoryReader<&'static [u8]> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(INVENTORY_COLUMNS).unwrap();
        w.write_record(fields).unwrap();
        let bytes: &'static [u8] = Box::leak(w.into_inner().unwrap().into_boxed_slice());
        let mut reader = InventoryReader::new(bytes, Path::new("inv.csv")).unwrap();
        assert!(reader.csv.read_record(&mut reader.record).unwrap());
        reader
    }

    fn one_of(words: &'static [&'static str]) -> impl Strategy<Value = String> {
        prop::sample::select(words).prop_map(str::to_owned)
    }

    /// Rows in the plain form and in forms only serde reads (or rejects).
    fn row_fields() -> impl Strategy<Value = Vec<String>> {
        let time = prop_oneof![
            (0i64..253_402_207_199).prop_map(|s| Timestamp::from_second(s).unwrap().to_string()),
            one_of(&[
                "2026-01-02T03:04:05.5Z",
                "2026-01-02T03:04:05+01:00",
                "2025-02-29T00:00:00Z",
                "2016-12-31T23:59:60Z",
                "yesterday",
                "",
            ]),
        ];
        (
            "[a-z/é,\"\n ]{0,8}",
            prop_oneof!["[a-zA-Z0-9._]{1,8}", one_of(&["", "null"])],
            one_of(&["true", "false", "TRUE", "1", ""]),
            one_of(&["true", "false", "no"]),
            time,
            prop_oneof!["[0-9]{1,20}", one_of(&["", "+5", "0x10", "-1", " 1"])],
            one_of(&["", "abc", "\"abc\"", "abc-3", "\"\""]),
            one_of(&["", "STANDARD", "GLACIER"]),
            one_of(&["", "CRC32"]),
        )
            .prop_map(|(k, v, l, d, t, size, e, c, a)| vec![k, v, l, d, t, size, e, c, a])
    }

    proptest! {
        /// Whatever the fast conversion takes, serde reads to the same record.
        #[test]
        fn fast_rows_are_what_serde_reads(fields in row_fields()) {
            let reader = reader_at_row(&fields);
            let fast = reader.columns.as_ref().unwrap().convert(&reader.record);
            let slow = reader.convert_slow(2).map_err(|e| e.to_string());
            if let Some(fast) = fast {
                prop_assert_eq!(Ok(fast), slow);
            }
        }
    }

    #[test]
    fn plain_rows_take_the_fast_path() {
        let rows = [
            [
                "k",
                "v1",
                "true",
                "false",
                "2026-01-02T03:04:05Z",
                "12",
                "\"0123abcd\"",
                "STANDARD",
                "",
            ],
            ["k", "v2", "false", "true", "2026-01-02T03:04:05Z", "", "", "", ""],
            [
                "k",
                "null",
                "false",
                "false",
                "1999-12-31T23:59:59Z",
                "0",
                "ab-2",
                "GLACIER",
                "CRC32",
            ],
        ];
        for row in rows {
            let fields: Vec<String> = row.iter().map(|f| (*f).to_owned()).collect();
            let reader = reader_at_row(&fields);
            let fast = reader.columns.as_ref().unwrap().convert(&reader.record);
            assert!(fast.is_some(), "{row:?}");
            assert_eq!(fast.map(Ok), Some(reader.convert_slow(2).map_err(|e| e.to_string())));
        }
        // A column named twice leaves every row to serde, which rejects the header.
        let text = "key,version_id,is_latest,is_delete_marker,last_modified,size,etag,storage_class,key\nk,v,true,false,2026-01-01T00:00:00Z,1,e,STANDARD,k\n";
        let err = InventoryReader::new(text.as_bytes(), Path::new("inv.csv"))
            .unwrap()
            .find_map(Result::err)
            .unwrap();
        assert!(err.to_string().starts_with("inventory inv.csv line 2: "), "{err}");
    }

    #[test]
    fn counts() {
        let mut s = ScanStats::default();
        let recs = [rec("a", "1", false), rec("a", "2", true), rec("b", "1", false)];
        let mut prev: Option<String> = None;
        for r in &recs {
            s.add(r, prev.as_deref());
            prev = Some(r.key.clone());
        }
        assert_eq!((s.keys, s.versions, s.delete_markers, s.bytes), (2, 2, 1, 24));
    }
}
