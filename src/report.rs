//! Report directories, CSV files with their SHA-256, and `summary.json`.
//!
//! Each run writes into one directory (`--report-dir`, or a fresh
//! `./s3-failback-reports/<command>-<UTC time>/`); every CSV file's digest goes into the
//! summary so an auditor can tell a report was not edited.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The directory could not be created.
    #[error("cannot create report directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A report file could not be written.
    #[error("cannot write report {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// The directory a run writes its reports into.
#[derive(Debug, Clone)]
pub struct ReportDir {
    path: PathBuf,
}

impl ReportDir {
    /// Uses `given` as it is (created if needed), or makes a fresh directory
    /// `./s3-failback-reports/<command>-<YYYYMMDDTHHMMSSZ>[-N]`.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn create(command: &str, given: Option<&Path>, now: Timestamp) -> Result<Self, ReportError> {
        Self::create_in(Path::new("s3-failback-reports"), command, given, now)
    }

    /// As [`ReportDir::create`], with fresh directories made under `base`.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn create_in(base: &Path, command: &str, given: Option<&Path>, now: Timestamp) -> Result<Self, ReportError> {
        if let Some(path) = given {
            fs::create_dir_all(path).map_err(|source| ReportError::CreateDir {
                path: path.to_owned(),
                source,
            })?;
            return Ok(ReportDir { path: path.to_owned() });
        }
        fs::create_dir_all(base).map_err(|source| ReportError::CreateDir {
            path: base.to_owned(),
            source,
        })?;
        let stamp = now.strftime("%Y%m%dT%H%M%SZ").to_string();
        for n in 1.. {
            let name = if n == 1 {
                format!("{command}-{stamp}")
            } else {
                format!("{command}-{stamp}-{n}")
            };
            let path = base.join(name);
            match fs::create_dir(&path) {
                Ok(()) => return Ok(ReportDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(ReportError::CreateDir { path, source }),
            }
        }
        unreachable!("the loop returns")
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of a file in it.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

/// A report file (or stdout) being written, hashed as it goes.
pub struct ReportFile {
    path: PathBuf,
    inner: Sink,
    hasher: Sha256,
}

impl ReportFile {
    /// Opens `path` for writing; `None` writes to stdout.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn create(path: Option<PathBuf>) -> Result<Self, ReportError> {
        let (path, inner) = match path {
            Some(p) => {
                let f = File::create(&p).map_err(|source| ReportError::Write {
                    path: p.clone(),
                    source,
                })?;
                (p, Sink::File(BufWriter::with_capacity(256 * 1024, f)))
            }
            None => (PathBuf::from("-"), Sink::Stdout(io::stdout())),
        };
        Ok(ReportFile {
            path,
            inner,
            hasher: Sha256::new(),
        })
    }

    /// The file's path (`-` for stdout).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes and syncs the file and returns its SHA-256 in hex.
    ///
    /// # Errors
    /// The flush or sync failed.
    pub fn finish(mut self) -> Result<String, ReportError> {
        let path = self.path.clone();
        let synced = match &mut self.inner {
            Sink::File(f) => f.flush().and_then(|()| f.get_ref().sync_all()),
            Sink::Stdout(s) => s.flush(),
        };
        synced.map_err(|source| ReportError::Write { path, source })?;
        Ok(hex::encode(self.hasher.finalize()))
    }
}

impl Write for ReportFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Where a report goes: a file (synced on finish), or stdout (`--out -`).
enum Sink {
    File(BufWriter<File>),
    Stdout(io::Stdout),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::File(f) => f.write(buf),
            Sink::Stdout(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::File(f) => f.flush(),
            Sink::Stdout(s) => s.flush(),
        }
    }
}

/// A CSV report being written: rows through serde, header first.
pub struct CsvReport {
    path: PathBuf,
    writer: csv::Writer<ReportFile>,
}

impl CsvReport {
    /// Opens `path` for a CSV report; `None` writes to stdout.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn create(path: Option<PathBuf>) -> Result<Self, ReportError> {
        let file = ReportFile::create(path)?;
        let path = file.path().to_owned();
        let writer = csv::WriterBuilder::new().has_headers(false).from_writer(file);
        Ok(CsvReport { path, writer })
    }

    /// Writes one row; the header is written first with [`CsvReport::write_header`].
    ///
    /// # Errors
    /// The write failed (disk full, file removed).
    pub fn write<T: Serialize>(&mut self, row: &T) -> Result<(), ReportError> {
        self.writer.serialize(row).map_err(|e| ReportError::Write {
            path: self.path.clone(),
            source: csv_io(e),
        })
    }

    /// Writes the header row.
    ///
    /// # Errors
    /// The write failed.
    pub fn write_header(&mut self, columns: &[&str]) -> Result<(), ReportError> {
        self.writer.write_record(columns).map_err(|e| ReportError::Write {
            path: self.path.clone(),
            source: csv_io(e),
        })
    }

    /// Flushes and syncs the report and returns its SHA-256 in hex.
    ///
    /// # Errors
    /// The flush or sync failed.
    pub fn finish(self) -> Result<String, ReportError> {
        let path = self.path.clone();
        let file = self.writer.into_inner().map_err(|e| ReportError::Write {
            path,
            source: io::Error::other(e.error().to_string()),
        })?;
        file.finish()
    }

    /// The report's path (`-` for stdout).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn csv_io(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => io,
        other => io::Error::other(format!("{other:?}")),
    }
}

/// `summary.json`: what a run did, for scripts and auditors.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The subcommand.
    pub command: String,
    /// This tool's version.
    pub version: String,
    /// When the run started (RFC 3339, UTC).
    pub started: String,
    /// When it finished.
    pub finished: String,
    /// The command line, secrets removed.
    pub args: Vec<String>,
    /// Counts per status or action, and `primary_only`.
    pub counts: BTreeMap<String, u64>,
    /// Bytes per status or action.
    pub bytes: BTreeMap<String, u64>,
    /// Each report file's name and SHA-256.
    pub reports: BTreeMap<String, String>,
    /// Per-command fields.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Summary {
    /// A summary for `command` started at `started`.
    pub fn new(command: &str, started: Timestamp, args: Vec<String>) -> Self {
        Summary {
            command: command.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started: started.to_string(),
            finished: String::new(),
            args,
            counts: BTreeMap::new(),
            bytes: BTreeMap::new(),
            reports: BTreeMap::new(),
            extra: serde_json::Map::new(),
        }
    }

    /// Writes `summary.json` into `dir` (stamped with the finish time) and returns its path.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write(&mut self, dir: &ReportDir) -> Result<PathBuf, ReportError> {
        self.finished = Timestamp::now().to_string();
        let path = dir.file("summary.json");
        let text = serde_json::to_vec_pretty(self).map_err(|e| ReportError::Write {
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        let write = || -> io::Result<()> {
            let mut f = File::create(&path)?;
            f.write_all(&text)?;
            f.write_all(b"\n")?;
            f.sync_all()
        };
        write().map_err(|source| ReportError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

/// The command line as given, with anything secret-looking removed: user info in URLs
/// and the values of flags that could carry a secret.
pub fn redact_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter().map(|a| redact_url_userinfo(&a)).collect()
}

fn redact_url_userinfo(arg: &str) -> String {
    let Some(scheme_end) = arg.find("://") else {
        return arg.to_owned();
    };
    let rest = &arg[scheme_end + 3..];
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) => format!("{}://***@{}", &arg[..scheme_end], &rest[at + 1..]),
        None => arg.to_owned(),
    }
}

/// Bytes as a person reads them (`1.5 GiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_userinfo() {
        assert_eq!(
            redact_url_userinfo("http://key:secret@host:9000/x"),
            "http://***@host:9000/x"
        );
        assert_eq!(redact_url_userinfo("s3://bucket/a@b"), "s3://bucket/a@b");
        assert_eq!(redact_url_userinfo("--quiet"), "--quiet");
    }

    #[test]
    fn human() {
        assert_eq!(human_bytes(5), "5 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn fresh_report_dirs_get_suffixes() {
        let tmp = tempfile::tempdir().unwrap();
        let given = tmp.path().join("given/dir");
        let d = ReportDir::create_in(tmp.path(), "scan", Some(&given), Timestamp::now()).unwrap();
        assert_eq!(d.path(), given);
        let now: Timestamp = "2026-11-26T01:02:03Z".parse().unwrap();
        let names: Vec<_> = (0..3)
            .map(|_| ReportDir::create_in(tmp.path(), "scan", None, now).unwrap())
            .map(|d| d.path().file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "scan-20261126T010203Z",
                "scan-20261126T010203Z-2",
                "scan-20261126T010203Z-3"
            ]
        );
    }
}
