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
pub struct InventoryReader<R: Read> {
    path: PathBuf,
    rows: csv::DeserializeRecordsIntoIter<R, InventoryRow>,
    prev_key: Option<String>,
    done: bool,
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
        let mut csv = csv::ReaderBuilder::new().has_headers(true).from_reader(reader);
        let headers = csv.headers().map_err(|e| InventoryError::BadRow {
            path: path.to_owned(),
            line: 1,
            message: e.to_string(),
        })?;
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
            rows: csv.into_deserialize(),
            prev_key: None,
            done: false,
        })
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
}

impl<R: Read> Iterator for InventoryReader<R> {
    type Item = Result<VersionRecord, InventoryError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let row = self.rows.next()?;
        let result = row
            .map_err(|e| {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                InventoryError::BadRow {
                    path: self.path.clone(),
                    line,
                    message: e.to_string(),
                }
            })
            .and_then(|row| {
                let line = self.rows.reader().position().line().saturating_sub(1).max(2);
                self.convert(row, line).map(|rec| (rec, line))
            })
            .and_then(|(rec, line)| {
                if let Some(prev) = &self.prev_key
                    && prev.as_bytes() > rec.key.as_bytes()
                {
                    return Err(InventoryError::OutOfOrder {
                        path: self.path.clone(),
                        line,
                        prev: prev.clone(),
                        next: rec.key.clone(),
                    });
                }
                if self.prev_key.as_deref() != Some(rec.key.as_str()) {
                    self.prev_key = Some(rec.key.clone());
                }
                Ok(rec)
            });
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
