//! A test's own directory for the tool's state, reports and hand-made files, the
//! connection flags that send both sides through one endpoint, and reading the reports
//! back. Shared by every module that runs the binary, so they mean the same by them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tempfile::TempDir;

use super::{PRIMARY_REGION, REPLICA_REGION};

/// A temporary directory that is the tool's working directory, holding the state
/// directory and one report directory per run.
///
/// `verify` has no `--state-dir`: it reads the journal of an earlier restore from
/// `./.s3-failback`, relative to its working directory; [`Dirs::state`] is that path, so
/// tests that pass it as `--state-dir` and run in [`Dirs::cwd`] find one state.
pub struct Dirs {
    tmp: TempDir,
}

impl Default for Dirs {
    fn default() -> Self {
        Self::new()
    }
}

impl Dirs {
    /// A fresh directory, removed when dropped.
    pub fn new() -> Self {
        Self {
            tmp: tempfile::tempdir().expect("temporary directory"),
        }
    }

    /// The directory itself (the working directory of runs that need one).
    pub fn cwd(&self) -> &Path {
        self.tmp.path()
    }

    /// The state directory, where `verify` looks for it too.
    pub fn state(&self) -> PathBuf {
        self.path(".s3-failback")
    }

    /// The report directory of the run named `run`.
    pub fn report(&self, run: &str) -> PathBuf {
        self.path(&format!("report-{run}"))
    }

    /// A file or directory `name` inside.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// [`Dirs::path`] as a command-line argument.
    pub fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// The connection flags that send both sides through `endpoint`, each in its own region.
pub fn conn_args(endpoint: &str) -> Vec<String> {
    [
        "--endpoint-url",
        endpoint,
        "--path-style",
        "--source-region",
        REPLICA_REGION,
        "--dest-region",
        PRIMARY_REGION,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// One CSV row: column → value.
pub type Row = BTreeMap<String, String>;

/// A CSV report as rows; keys stay byte for byte what the file holds.
pub fn read_csv(path: &Path) -> Vec<Row> {
    let mut reader = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    reader
        .deserialize()
        .map(|r| r.unwrap_or_else(|e| panic!("row of {}: {e}", path.display())))
        .collect()
}

/// A JSON file (a `summary.json`, say).
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// One column of a row; a missing column fails the test.
pub fn col<'a>(row: &'a Row, name: &str) -> &'a str {
    row.get(name)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no column {name:?} in {row:?}"))
}
