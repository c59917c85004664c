//! The state directory of DESIGN.md ("State and resume"): one subdirectory per command,
//! named from a hash of the source, the dest and the mode flags, holding `key.json` (for
//! people), `run.json` (the run's id, start and whether it finished), the plan the run
//! executes (`plan.csv`, written by the caller) and the run's journal: append-only JSON
//! lines, fsynced in batches by one writer thread.
//!
//! Layout of `<base>/<RunKey::dir_name>/`:
//!
//! - `run.json` is the commit point of the lifecycle: a run is open (unfinished) while it
//!   says `finished: false` and not `discarded`.
//! - `journal.jsonl` is the open run's journal; `journal-<run_id>.jsonl` are the journals of
//!   runs that finished or were discarded, kept as evidence of identity for the reconciler.
//!
//! Deciding what a resumed run does with its outcomes, in-flight actions and open multipart
//! uploads belongs to `restore`; this module keeps the record and reads it back. No S3 types.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

const KEY_FILE: &str = "key.json";
const RUN_FILE: &str = "run.json";
const PLAN_FILE: &str = "plan.csv";
const JOURNAL_FILE: &str = "journal.jsonl";

/// The journal is fsynced after at most this many entries.
pub const SYNC_EVERY_ENTRIES: usize = 256;

/// The journal is fsynced at most this long after an entry was written.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(200);

/// Entries waiting for the writer thread; a full channel makes `record` wait.
const CHANNEL_CAPACITY: usize = 1024;

/// The writer's buffer; it is handed to the OS after every batch of entries anyway.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state directory could not be created.
    #[error("cannot create state directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A state file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A state file could not be written, renamed or removed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The journal could not be written; every later call on the writer returns it too.
    #[error("cannot write journal {path}: {source}")]
    Journal {
        /// The journal file.
        path: PathBuf,
        /// The cause, shared by every call that reports it.
        source: Arc<io::Error>,
    },
    /// A journal line other than the last does not parse.
    #[error("journal {path} line {line}: {message}")]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// The line (1-based).
        line: u64,
        /// What is wrong with it.
        message: String,
    },
    /// `run.json` or `key.json` does not parse.
    #[error("{path}: {message}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The directory's `key.json` names another command.
    #[error("state directory {dir} belongs to another command (source {source_location}, dest {dest}, {mode})")]
    OtherCommand {
        /// The state directory.
        dir: PathBuf,
        /// The source location `key.json` names.
        source_location: String,
        /// The dest location `key.json` names.
        dest: String,
        /// The mode flags `key.json` names.
        mode: String,
    },
    /// `begin` was called while a run is still open.
    #[error("state directory {dir} holds the unfinished run {run_id}: resume it, or discard it with --fresh")]
    RunOpen {
        /// The state directory.
        dir: PathBuf,
        /// The open run.
        run_id: String,
    },
    /// The call needs an open run and there is none.
    #[error("state directory {dir} holds no unfinished run")]
    NoOpenRun {
        /// The state directory.
        dir: PathBuf,
    },
}

/// What identifies one command's state: its source, its dest and its mode flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunKey {
    source: String,
    dest: String,
    mode: String,
}

impl RunKey {
    /// A key from the two locations as given (`s3://bucket/prefix`) and the mode flags
    /// (e.g. `mode=latest;as_of=;no_deletes=false;overwrite_newer=false`).
    pub fn new(source: impl Into<String>, dest: impl Into<String>, mode: impl Into<String>) -> Self {
        RunKey {
            source: source.into(),
            dest: dest.into(),
            mode: mode.into(),
        }
    }

    /// The source location.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The dest location.
    pub fn dest(&self) -> &str {
        &self.dest
    }

    /// The mode flags.
    pub fn mode(&self) -> &str {
        &self.mode
    }

    /// The state subdirectory's name: hex of the first 16 bytes of a SHA-256 over the
    /// three parts.
    pub fn dir_name(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"s3-failback state v1\0");
        // Length prefixes keep ("a", "bc") and ("ab", "c") apart.
        for part in [&self.source, &self.dest, &self.mode] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        let digest = hasher.finalize();
        hex::encode(&digest[..16])
    }
}

/// A run that began: its id and start time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    /// When the run started.
    pub started: Timestamp,
    /// The run's id (its start time and a random tail), unique within the directory.
    pub run_id: String,
}

/// One finished action, as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeEntry {
    /// The action's row index in the plan.
    pub idx: u64,
    /// The source key.
    pub key: String,
    /// The source version the action read.
    pub source_version_id: String,
    /// The dest key.
    pub dest_key: String,
    /// The dest version the action created, if it created one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_version_id: Option<String>,
    /// One of `done`, `skipped`, `conflict`, `archived`, `pending`, `failed`.
    pub status: String,
    /// Requests tried.
    pub attempts: u32,
    /// Time the action took.
    pub duration_ms: u64,
    /// The ETag of the dest version, without quotes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag_dest: Option<String>,
    /// Why the action failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The engine that made the outcome (`batch-operations`); `None` is the local engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

/// A Batch Operations job of the run, as the journal records it: once before CreateJob
/// (no job id yet) and once after, so that a rerun follows the job instead of creating
/// another (the token makes a repeated CreateJob answer with the same job).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchJobEntry {
    /// The job's place in the run (0, 1, ...).
    pub index: u32,
    /// The job's ClientRequestToken.
    pub token: String,
    /// What the job is (manifest, class, prefix, encryption) without the retry count:
    /// jobs for the same work that failed outright share it.
    #[serde(default)]
    pub base: String,
    /// The job id, once CreateJob answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// The job failed outright (a retry needs a new token).
    #[serde(default)]
    pub failed: bool,
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JournalEntry {
    /// An action finished (in any status).
    Outcome(OutcomeEntry),
    /// A multipart upload was created.
    UploadStarted {
        /// The action's row index in the plan.
        idx: u64,
        /// The dest key.
        dest_key: String,
        /// The upload's id.
        upload_id: String,
    },
    /// A multipart upload was completed or aborted.
    UploadEnded {
        /// The upload's id.
        upload_id: String,
        /// Completed (true) or aborted (false).
        completed: bool,
    },
    /// A Batch Operations job is being created, was created, or failed outright.
    BatchJob(BatchJobEntry),
}

/// A multipart upload the journal saw start and not end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenUpload {
    /// The action's row index in the plan.
    pub idx: u64,
    /// The dest key.
    pub dest_key: String,
    /// The upload's id.
    pub upload_id: String,
}

/// What the current journal says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalState {
    /// The last outcome recorded for each plan row.
    pub outcomes: BTreeMap<u64, OutcomeEntry>,
    /// Uploads started and not ended, in the order they started.
    pub open_uploads: Vec<OpenUpload>,
    /// Lines ignored because a kill cut them short (0 or 1).
    pub torn_lines: usize,
    /// Batch Operations job records, in journal order.
    pub batch_jobs: Vec<BatchJobEntry>,
}

/// `run.json`.
#[derive(Debug, Serialize, Deserialize)]
struct RunFile {
    run_id: String,
    started: String,
    finished: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    discarded: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One command's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
    key: RunKey,
}

impl StateDir {
    /// Opens (creating it if needed) `<base>/<key.dir_name()>/` and writes `key.json` there.
    ///
    /// # Errors
    /// The directory cannot be created or written, or its `key.json` names another command.
    pub fn open(base: &Path, key: &RunKey) -> Result<StateDir, StateError> {
        let dir = base.join(key.dir_name());
        let create_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::CreateDir { path, source }
        };
        fs::create_dir_all(&dir).map_err(create_err(&dir))?;
        // The new entry in `base` must survive a crash like the files inside it.
        sync_dir(base).map_err(create_err(base))?;
        let state = StateDir { dir, key: key.clone() };
        state.check_key()?;
        Ok(state)
    }

    /// The state directory for `key` under `base` if it exists, without creating anything:
    /// read-only commands (plan, verify) use an earlier restore's journal as evidence.
    pub fn open_existing(base: &Path, key: &RunKey) -> Option<StateDir> {
        let dir = base.join(key.dir_name());
        if !dir.is_dir() {
            return None;
        }
        let state = StateDir { dir, key: key.clone() };
        state.check_key().ok()?;
        Some(state)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The key the directory belongs to.
    pub fn key(&self) -> &RunKey {
        &self.key
    }

    /// Where the caller writes the plan the run executes.
    pub fn plan_path(&self) -> PathBuf {
        self.dir.join(PLAN_FILE)
    }

    /// The open run's journal.
    pub fn journal_path(&self) -> PathBuf {
        self.dir.join(JOURNAL_FILE)
    }

    /// Where a finished or discarded run's journal is kept.
    fn archived_journal_path(&self, run_id: &str) -> PathBuf {
        self.dir.join(format!("journal-{run_id}.jsonl"))
    }

    /// The run that began here and neither finished nor was discarded, if any.
    ///
    /// # Errors
    /// `run.json` cannot be read or does not parse.
    pub fn unfinished(&self) -> Result<Option<RunInfo>, StateError> {
        let Some(run) = self.read_run()? else {
            return Ok(None);
        };
        if run.finished || run.discarded {
            return Ok(None);
        }
        let started = run.started.parse().map_err(|e| StateError::BadFile {
            path: self.dir.join(RUN_FILE),
            message: format!("started {:?} is not an RFC 3339 time: {e}", run.started),
        })?;
        Ok(Some(RunInfo {
            started,
            run_id: run.run_id,
        }))
    }

    /// Begins a run: an empty journal, no plan, and `run.json` saying it is open.
    ///
    /// The caller then writes the plan it executes to [`StateDir::plan_path`].
    ///
    /// # Errors
    /// A run is still open ([`StateError::RunOpen`]), or a file cannot be written.
    pub fn begin(&self, started: Timestamp) -> Result<RunInfo, StateError> {
        if let Some(run) = self.unfinished()? {
            return Err(StateError::RunOpen {
                dir: self.dir.clone(),
                run_id: run.run_id,
            });
        }
        let journal = self.journal_path();
        if exists(&journal)? {
            // `finish` stopped between marking its run finished and moving the journal
            // away: keep that journal as evidence under the run's name.
            let previous = self.read_run()?.map(|r| r.run_id);
            let id = match previous {
                Some(id) if !exists(&self.archived_journal_path(&id))? => id,
                _ => format!("orphan-{}", self.unused_run_id(started)?),
            };
            self.rename(&journal, &self.archived_journal_path(&id))?;
        }
        self.remove(&self.plan_path())?;
        let run_id = self.unused_run_id(started)?;
        create_synced(&journal).map_err(|source| StateError::Write {
            path: journal.clone(),
            source,
        })?;
        self.sync()?;
        // run.json last: until it says so, no run is open.
        self.write_run(&RunFile {
            run_id: run_id.clone(),
            started: started.to_string(),
            finished: false,
            discarded: false,
        })?;
        Ok(RunInfo { started, run_id })
    }

    /// Marks the open run finished and keeps its journal as `journal-<run_id>.jsonl`.
    ///
    /// Close the run's [`JournalWriter`] first.
    ///
    /// # Errors
    /// No run is open, or a file cannot be written or renamed.
    pub fn finish(&self) -> Result<(), StateError> {
        let run = self
            .unfinished()?
            .ok_or_else(|| StateError::NoOpenRun { dir: self.dir.clone() })?;
        // Marked first: a crash before the rename leaves a journal that the next `begin`
        // moves to the same name.
        self.write_run(&RunFile {
            run_id: run.run_id.clone(),
            started: run.started.to_string(),
            finished: true,
            discarded: false,
        })?;
        self.rename(&self.journal_path(), &self.archived_journal_path(&run.run_id))
    }

    /// For `--fresh`: closes the open run without finishing it, drops its plan and keeps its
    /// journal (as `journal-<run_id>.jsonl`, evidence of what it copied). Returns that run.
    ///
    /// # Errors
    /// A file cannot be written, renamed or removed.
    pub fn discard_unfinished(&self) -> Result<Option<RunInfo>, StateError> {
        let Some(run) = self.unfinished()? else {
            return Ok(None);
        };
        self.write_run(&RunFile {
            run_id: run.run_id.clone(),
            started: run.started.to_string(),
            finished: false,
            discarded: true,
        })?;
        self.rename(&self.journal_path(), &self.archived_journal_path(&run.run_id))?;
        self.remove(&self.plan_path())?;
        Ok(Some(run))
    }

    /// Reads the open run's journal: the last outcome per plan row and the uploads still
    /// open. A torn last line is ignored and counted.
    ///
    /// # Errors
    /// The journal cannot be read, a line other than the last does not parse, or a run is
    /// open and its journal is missing.
    pub fn load(&self) -> Result<JournalState, StateError> {
        let path = self.journal_path();
        let mut state = JournalState::default();
        // upload id → (start order, idx, dest key)
        let mut uploads: HashMap<String, (u64, u64, String)> = HashMap::new();
        let mut started = 0u64;
        let scanned = scan_journal(&path, |entry| match entry {
            JournalEntry::Outcome(outcome) => {
                state.outcomes.insert(outcome.idx, outcome);
            }
            JournalEntry::UploadStarted {
                idx,
                dest_key,
                upload_id,
            } => {
                uploads.insert(upload_id, (started, idx, dest_key));
                started += 1;
            }
            JournalEntry::UploadEnded { upload_id, .. } => {
                uploads.remove(&upload_id);
            }
            JournalEntry::BatchJob(job) => state.batch_jobs.push(job),
        })?;
        match scanned {
            Some(scanned) => state.torn_lines = scanned.torn_lines,
            None if self.unfinished()?.is_some() => {
                // Resuming without the journal would redo every action of the plan.
                return Err(StateError::Read {
                    path,
                    source: io::Error::new(io::ErrorKind::NotFound, "the open run's journal is missing"),
                });
            }
            None => {}
        }
        let mut open: Vec<_> = uploads.into_iter().collect();
        open.sort_unstable_by_key(|(_, (order, _, _))| *order);
        state.open_uploads = open
            .into_iter()
            .map(|(upload_id, (_, idx, dest_key))| OpenUpload {
                idx,
                dest_key,
                upload_id,
            })
            .collect();
        Ok(state)
    }

    /// Dest version id → source version id for every `done` outcome that names a dest
    /// version, in every journal of the directory (the open run's and the earlier runs').
    ///
    /// # Errors
    /// The directory or a journal cannot be read, or a journal line other than the last
    /// does not parse.
    pub fn copied_evidence(&self) -> Result<HashMap<String, String>, StateError> {
        let mut evidence = HashMap::new();
        self.for_each_write(|outcome| {
            if let Some(dest_version_id) = outcome.dest_version_id {
                evidence.insert(dest_version_id, outcome.source_version_id);
            }
        })?;
        Ok(evidence)
    }

    /// Every destination version (key, version id) that any run in this directory
    /// recorded as written, in journal order: what `drill --cleanup` may delete.
    ///
    /// # Errors
    /// A journal cannot be read.
    pub fn recorded_writes(&self) -> Result<Vec<(String, String)>, StateError> {
        let mut writes = Vec::new();
        self.for_each_write(|outcome| {
            if let Some(dest_version_id) = outcome.dest_version_id {
                writes.push((outcome.dest_key, dest_version_id));
            }
        })?;
        Ok(writes)
    }

    /// Calls `f` with every `done` outcome of every journal (finished runs first).
    fn for_each_write(&self, mut f: impl FnMut(OutcomeEntry)) -> Result<(), StateError> {
        let read_err = |source| StateError::Read {
            path: self.dir.clone(),
            source,
        };
        let mut journals = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(read_err)? {
            let name = entry.map_err(read_err)?.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == JOURNAL_FILE || (name.starts_with("journal-") && name.ends_with(".jsonl")) {
                journals.push(self.dir.join(name));
            }
        }
        journals.sort();
        for path in journals {
            scan_journal(&path, |entry| {
                if let JournalEntry::Outcome(outcome) = entry
                    && outcome.status == "done"
                {
                    f(outcome);
                }
            })?;
        }
        Ok(())
    }

    /// Writes `key.json`, or checks that the one there names this key.
    fn check_key(&self) -> Result<(), StateError> {
        let path = self.dir.join(KEY_FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                let found: RunKey = serde_json::from_slice(&bytes).map_err(|e| StateError::BadFile {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                if found != self.key {
                    return Err(StateError::OtherCommand {
                        dir: self.dir.clone(),
                        source_location: found.source,
                        dest: found.dest,
                        mode: found.mode,
                    });
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.write_json(KEY_FILE, &self.key),
            Err(source) => Err(StateError::Read { path, source }),
        }
    }

    fn read_run(&self) -> Result<Option<RunFile>, StateError> {
        let path = self.dir.join(RUN_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StateError::BadFile {
                    path,
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Read { path, source }),
        }
    }

    fn write_run(&self, run: &RunFile) -> Result<(), StateError> {
        self.write_json(RUN_FILE, run)
    }

    /// Replaces `name` with `value` as pretty JSON: a synced temporary file renamed into
    /// place, then the directory synced, so a crash leaves the old file or the new one.
    fn write_json(&self, name: &str, value: &impl Serialize) -> Result<(), StateError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let write = || -> io::Result<()> {
            let mut bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
            bytes.push(b'\n');
            let mut file = File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            sync_dir(&self.dir)
        };
        write().map_err(|source| StateError::Write { path, source })
    }

    /// Renames `from` (if it exists) to `to` and syncs the directory.
    fn rename(&self, from: &Path, to: &Path) -> Result<(), StateError> {
        if !exists(from)? {
            return Ok(());
        }
        fs::rename(from, to).map_err(|source| StateError::Write {
            path: to.to_path_buf(),
            source,
        })?;
        self.sync()
    }

    /// Removes `path` (if it exists) and syncs the directory.
    fn remove(&self, path: &Path) -> Result<(), StateError> {
        match fs::remove_file(path) {
            Ok(()) => self.sync(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Write {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn sync(&self) -> Result<(), StateError> {
        sync_dir(&self.dir).map_err(|source| StateError::Write {
            path: self.dir.clone(),
            source,
        })
    }

    /// A run id whose archived journal name is free.
    fn unused_run_id(&self, started: Timestamp) -> Result<String, StateError> {
        loop {
            let id = new_run_id(started);
            if !exists(&self.archived_journal_path(&id))? {
                return Ok(id);
            }
        }
    }
}

/// `<start as YYYYMMDDTHHMMSSZ>-<8 hex digits>`; the tail mixes the clock, the process id
/// and a counter, so two runs with the same start time get different ids.
fn new_run_id(started: Timestamp) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = Sha256::new();
    hasher.update(started.as_nanosecond().to_le_bytes());
    hasher.update(Timestamp::now().as_nanosecond().to_le_bytes());
    hasher.update(std::process::id().to_le_bytes());
    hasher.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let digest = hasher.finalize();
    format!("{}-{}", started.strftime("%Y%m%dT%H%M%SZ"), hex::encode(&digest[..4]))
}

fn exists(path: &Path) -> Result<bool, StateError> {
    path.try_exists().map_err(|source| StateError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn create_synced(path: &Path) -> io::Result<()> {
    File::create_new(path)?.sync_all()
}

/// What a pass over a journal found.
#[derive(Debug, Clone, Copy)]
struct Scanned {
    torn_lines: usize,
    /// Bytes up to the end of the last line that counts.
    valid_len: u64,
}

/// Reads a journal line by line, handing each entry to `on_entry`; `None` when the file
/// does not exist.
///
/// An entry counts once its line, newline included, is written. The last non-blank line
/// may be torn by a kill (no newline yet, or bytes that do not parse): it is ignored and
/// counted. A bad line with more lines after it is an error.
fn scan_journal(path: &Path, mut on_entry: impl FnMut(JournalEntry)) -> Result<Option<Scanned>, StateError> {
    let read_err = |source| StateError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let mut reader = BufReader::with_capacity(WRITE_BUFFER_BYTES, file);
    let mut line = Vec::new();
    let mut line_no = 0u64;
    let mut offset = 0u64;
    // A terminated line that did not parse: (line number, its start, the parse error).
    let mut bad: Option<(u64, u64, String)> = None;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(read_err)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let start = offset;
        offset += n as u64;
        let content = line.trim_ascii();
        if content.is_empty() {
            continue;
        }
        if let Some((line, _, message)) = bad.take() {
            return Err(StateError::Corrupt {
                path: path.to_path_buf(),
                line,
                message,
            });
        }
        if line.last() != Some(&b'\n') {
            // read_until stops without a newline only at the end of the file.
            return Ok(Some(Scanned {
                torn_lines: 1,
                valid_len: start,
            }));
        }
        match serde_json::from_slice::<JournalEntry>(content) {
            Ok(entry) => on_entry(entry),
            Err(e) => bad = Some((line_no, start, e.to_string())),
        }
    }
    Ok(Some(match bad {
        Some((_, start, _)) => Scanned {
            torn_lines: 1,
            valid_len: start,
        },
        None => Scanned {
            torn_lines: 0,
            valid_len: offset,
        },
    }))
}

/// Where the writer thread puts its bytes: the journal file, or a failing stand-in in tests.
trait Sink: Write + Send + 'static {
    /// Makes everything written so far durable.
    fn sync(&mut self) -> io::Result<()>;
}

/// The journal file, and the identity (device, inode) its path had when it was opened.
struct FileSink {
    file: File,
    path: PathBuf,
    identity: Option<(u64, u64)>,
}

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Sink for FileSink {
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        // A journal whose directory was removed (or replaced) still takes writes through the
        // open descriptor, into a file nobody will find again: that is no record.
        let now = fs::metadata(&self.path)?;
        if file_identity(&now) != self.identity {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the journal file was removed or replaced",
            ));
        }
        Ok(())
    }
}

#[cfg(unix)]
fn file_identity(meta: &fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_identity(_meta: &fs::Metadata) -> Option<(u64, u64)> {
    None
}

/// A message to the writer thread.
#[derive(Debug)]
// Entries are the common message; boxing them would allocate once per journal line.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Entry(JournalEntry),
    /// Write and fsync everything before this, then answer.
    Flush(oneshot::Sender<()>),
}

/// The one writer of a run's journal, owned by one task.
///
/// Entries go over a bounded channel to a dedicated thread that writes them through a
/// buffer, hands each batch to the OS, and fsyncs every [`SYNC_EVERY_ENTRIES`] entries or
/// [`SYNC_INTERVAL`], whichever comes first. After the first I/O error, every call returns
/// that error. Dropping the writer without [`JournalWriter::close`] still writes and
/// fsyncs what was recorded, in the background.
#[derive(Debug)]
pub struct JournalWriter {
    tx: mpsc::Sender<Msg>,
    done: oneshot::Receiver<()>,
    failed: Arc<OnceLock<Arc<io::Error>>>,
    path: PathBuf,
}

impl JournalWriter {
    /// Opens the open run's journal for appending, cutting off a torn last line first.
    ///
    /// # Errors
    /// No run is open, the journal cannot be read or opened, or a line other than its last
    /// does not parse.
    pub fn open(state: &StateDir) -> Result<Self, StateError> {
        if state.unfinished()?.is_none() {
            return Err(StateError::NoOpenRun { dir: state.dir.clone() });
        }
        let path = state.journal_path();
        let journal_err = |source| StateError::Journal {
            path: path.clone(),
            source: Arc::new(source),
        };
        let scanned = scan_journal(&path, |_| {})?;
        let file = OpenOptions::new().append(true).open(&path).map_err(journal_err)?;
        if let Some(scanned) = scanned
            && scanned.torn_lines > 0
        {
            // Appending after a torn line would leave it in the middle, where it is an error.
            file.set_len(scanned.valid_len).map_err(journal_err)?;
            file.sync_data().map_err(journal_err)?;
        }
        let identity = file_identity(&file.metadata().map_err(journal_err)?);
        let sink = FileSink {
            file,
            path: path.clone(),
            identity,
        };
        Self::spawn(path, sink)
    }

    /// Starts the writer thread over `sink`.
    fn spawn(path: PathBuf, sink: impl Sink) -> Result<Self, StateError> {
        let (tx, mut rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (done_tx, done) = oneshot::channel();
        let failed = Arc::new(OnceLock::new());
        let thread_failed = Arc::clone(&failed);
        let spawned = std::thread::Builder::new()
            .name("journal-writer".to_owned())
            .spawn(move || {
                let mut batch = Vec::with_capacity(SYNC_EVERY_ENTRIES);
                let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, sink);
                // A runtime of its own gives the thread a timer for the 200 ms deadline,
                // whatever runtime the caller uses.
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .and_then(|rt| rt.block_on(write_entries(&mut rx, &mut batch, &mut out)));
                if let Err(e) = result {
                    let _ = thread_failed.set(Arc::new(e));
                    // Nothing more reaches the file after a failure, not even the buffer.
                    let _ = out.into_parts();
                }
                // Only now, with the error in place, do waiting callers learn that the
                // writer stopped (their channel closes).
                drop(batch);
                drop(rx);
                let _ = done_tx.send(());
            });
        spawned.map_err(|source| StateError::Journal {
            path: path.clone(),
            source: Arc::new(source),
        })?;
        Ok(JournalWriter { tx, done, failed, path })
    }

    /// Hands one entry to the writer; it is written soon and fsynced within
    /// [`SYNC_INTERVAL`]. Waits while the writer is 1,024 entries behind.
    ///
    /// # Errors
    /// The writer hit an I/O error, now or earlier.
    pub async fn record(&self, entry: JournalEntry) -> Result<(), StateError> {
        if let Some(source) = self.failed.get() {
            return Err(self.error(Arc::clone(source)));
        }
        self.tx.send(Msg::Entry(entry)).await.map_err(|_| self.stopped())
    }

    /// Writes and fsyncs everything recorded so far, and waits for it.
    ///
    /// # Errors
    /// The writer hit an I/O error, now or earlier.
    pub async fn flush(&self) -> Result<(), StateError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Msg::Flush(reply)).await.map_err(|_| self.stopped())?;
        answer.await.map_err(|_| self.stopped())
    }

    /// Writes and fsyncs everything recorded, and stops the writer thread.
    ///
    /// # Errors
    /// The writer hit an I/O error, now or earlier.
    pub async fn close(self) -> Result<(), StateError> {
        let JournalWriter { tx, done, failed, path } = self;
        drop(tx);
        let finished = done.await;
        match failed.get() {
            Some(source) => Err(StateError::Journal {
                path,
                source: Arc::clone(source),
            }),
            None if finished.is_err() => Err(StateError::Journal {
                path,
                source: Arc::new(io::Error::other("the journal writer stopped")),
            }),
            None => Ok(()),
        }
    }

    fn error(&self, source: Arc<io::Error>) -> StateError {
        StateError::Journal {
            path: self.path.clone(),
            source,
        }
    }

    /// The error of a writer thread that is gone.
    fn stopped(&self) -> StateError {
        let source = match self.failed.get() {
            Some(source) => Arc::clone(source),
            None => Arc::new(io::Error::other("the journal writer stopped")),
        };
        self.error(source)
    }
}

/// The writer thread's loop: until every sender is gone, write what arrives, hand each
/// batch to the OS, fsync by count and by deadline, answer flushes after an fsync.
async fn write_entries<S: Sink>(
    rx: &mut mpsc::Receiver<Msg>,
    batch: &mut Vec<Msg>,
    out: &mut BufWriter<S>,
) -> io::Result<()> {
    let mut unsynced = 0usize;
    // When the oldest entry not yet fsynced must be.
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let received = match deadline {
            Some(at) => tokio::select! {
                n = rx.recv_many(batch, SYNC_EVERY_ENTRIES) => n,
                () = tokio::time::sleep_until(at) => {
                    sync(out)?;
                    (unsynced, deadline) = (0, None);
                    continue;
                }
            },
            None => rx.recv_many(batch, SYNC_EVERY_ENTRIES).await,
        };
        if received == 0 {
            break;
        }
        // Messages are only looked at here: on an error they stay in `batch` until the
        // thread has recorded it, so no flush learns of a stopped writer before its cause.
        for msg in batch.iter() {
            match msg {
                Msg::Entry(entry) => {
                    serde_json::to_writer(&mut *out, entry)?;
                    out.write_all(b"\n")?;
                    unsynced += 1;
                    if unsynced >= SYNC_EVERY_ENTRIES {
                        sync(out)?;
                        (unsynced, deadline) = (0, None);
                    } else if deadline.is_none() {
                        deadline = Some(tokio::time::Instant::now() + SYNC_INTERVAL);
                    }
                }
                Msg::Flush(_) => {
                    sync(out)?;
                    (unsynced, deadline) = (0, None);
                }
            }
        }
        // Handed to the OS, the batch survives a killed process, if not a power cut.
        out.flush()?;
        if deadline.is_some_and(|at| at <= tokio::time::Instant::now()) {
            sync(out)?;
            (unsynced, deadline) = (0, None);
        }
        for msg in batch.drain(..) {
            if let Msg::Flush(reply) = msg {
                // Everything before it is fsynced; a caller that stopped waiting is fine.
                let _ = reply.send(());
            }
        }
    }
    sync(out)
}

fn sync<S: Sink>(out: &mut BufWriter<S>) -> io::Result<()> {
    out.flush()?;
    out.get_mut().sync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MODE: &str = "mode=latest;as_of=;no_deletes=false;overwrite_newer=false";

    fn key() -> RunKey {
        RunKey::new("s3://replica/data", "s3://primary/data", MODE)
    }

    fn outcome(idx: u64, status: &str, dest_version_id: Option<&str>) -> JournalEntry {
        JournalEntry::Outcome(OutcomeEntry {
            idx,
            key: format!("k{idx}"),
            source_version_id: format!("s{idx}"),
            dest_key: format!("d{idx}"),
            dest_version_id: dest_version_id.map(str::to_owned),
            status: status.to_owned(),
            attempts: 1,
            duration_ms: 5,
            etag_dest: None,
            error: None,
            engine: None,
        })
    }

    fn started(idx: u64, upload_id: &str) -> JournalEntry {
        JournalEntry::UploadStarted {
            idx,
            dest_key: format!("d{idx}"),
            upload_id: upload_id.to_owned(),
        }
    }

    fn ended(upload_id: &str) -> JournalEntry {
        JournalEntry::UploadEnded {
            upload_id: upload_id.to_owned(),
            completed: true,
        }
    }

    fn line(entry: &JournalEntry) -> String {
        serde_json::to_string(entry).unwrap() + "\n"
    }

    /// What `load` must give for `entries`, computed the plain way.
    fn model(entries: &[JournalEntry]) -> (BTreeMap<u64, OutcomeEntry>, Vec<OpenUpload>) {
        let mut outcomes = BTreeMap::new();
        let mut open: Vec<OpenUpload> = Vec::new();
        for entry in entries {
            match entry.clone() {
                JournalEntry::Outcome(o) => {
                    outcomes.insert(o.idx, o);
                }
                JournalEntry::UploadStarted {
                    idx,
                    dest_key,
                    upload_id,
                } => {
                    open.retain(|u| u.upload_id != upload_id);
                    open.push(OpenUpload {
                        idx,
                        dest_key,
                        upload_id,
                    });
                }
                JournalEntry::UploadEnded { upload_id, .. } => open.retain(|u| u.upload_id != upload_id),
                JournalEntry::BatchJob(_) => {}
            }
        }
        (outcomes, open)
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn lifecycle_resume_finish_and_evidence() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path(), &key()).unwrap();
        assert_eq!(state.unfinished().unwrap(), None);
        assert!(matches!(JournalWriter::open(&state), Err(StateError::NoOpenRun { .. })));

        let run = state.begin(t("2026-01-02T03:04:05Z")).unwrap();
        assert!(run.run_id.starts_with("20260102T030405Z-"), "{}", run.run_id);
        fs::write(state.plan_path(), "key,action\n").unwrap();
        let writer = JournalWriter::open(&state).unwrap();
        for entry in [
            outcome(0, "done", Some("dv0")),
            started(1, "up1"),
            started(2, "up2"),
            outcome(3, "failed", None),
            ended("up1"),
            outcome(1, "done", Some("dv1")),
            outcome(3, "done", Some("dv3")),
        ] {
            writer.record(entry).await.unwrap();
        }
        writer.flush().await.unwrap();
        drop(writer); // the kill: no close, no finish

        assert_eq!(state.unfinished().unwrap(), Some(run.clone()));
        assert!(matches!(
            state.begin(Timestamp::now()),
            Err(StateError::RunOpen { run_id, .. }) if run_id == run.run_id
        ));
        let loaded = state.load().unwrap();
        assert_eq!(loaded.outcomes.keys().copied().collect::<Vec<_>>(), [0, 1, 3]);
        assert_eq!(loaded.outcomes[&3].status, "done");
        assert_eq!(
            loaded.open_uploads,
            [OpenUpload {
                idx: 2,
                dest_key: "d2".into(),
                upload_id: "up2".into()
            }]
        );
        assert_eq!(loaded.torn_lines, 0);

        // The resumed run appends to the same journal.
        let writer = JournalWriter::open(&state).unwrap();
        writer.record(ended("up2")).await.unwrap();
        writer.record(outcome(2, "done", Some("dv2"))).await.unwrap();
        writer.close().await.unwrap();
        assert_eq!(state.load().unwrap().open_uploads, []);
        assert_eq!(state.load().unwrap().outcomes.len(), 4);

        state.finish().unwrap();
        assert_eq!(state.unfinished().unwrap(), None);
        assert!(state.archived_journal_path(&run.run_id).is_file());

        // The next run starts empty, with the same start time, yet the old copies still count.
        let next = state.begin(t("2026-01-02T03:04:05Z")).unwrap();
        assert_ne!(next.run_id, run.run_id);
        assert!(!state.plan_path().exists());
        assert_eq!(state.load().unwrap(), JournalState::default());
        let writer = JournalWriter::open(&state).unwrap();
        writer.record(outcome(0, "done", Some("dv9"))).await.unwrap();
        writer.record(outcome(1, "skipped", Some("dv8"))).await.unwrap();
        writer.close().await.unwrap();
        let evidence = state.copied_evidence().unwrap();
        let expected: HashMap<String, String> = [
            ("dv0", "s0"),
            ("dv1", "s1"),
            ("dv2", "s2"),
            ("dv3", "s3"),
            ("dv9", "s0"),
        ]
        .into_iter()
        .map(|(d, s)| (d.to_owned(), s.to_owned()))
        .collect();
        assert_eq!(evidence, expected);
    }

    #[tokio::test]
    async fn fresh_discards_the_plan_and_keeps_the_evidence() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path(), &key()).unwrap();
        assert_eq!(state.discard_unfinished().unwrap(), None);
        let run = state.begin(Timestamp::now()).unwrap();
        fs::write(state.plan_path(), "key,action\n").unwrap();
        let writer = JournalWriter::open(&state).unwrap();
        writer.record(outcome(0, "done", Some("dv0"))).await.unwrap();
        writer.close().await.unwrap();

        assert_eq!(state.discard_unfinished().unwrap(), Some(run));
        assert_eq!(state.unfinished().unwrap(), None);
        assert!(!state.plan_path().exists());
        assert_eq!(state.load().unwrap(), JournalState::default());
        assert_eq!(
            state.copied_evidence().unwrap().get("dv0").map(String::as_str),
            Some("s0")
        );
        state.begin(Timestamp::now()).unwrap();
    }

    #[test]
    fn a_finish_cut_short_keeps_its_journal_as_evidence() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path(), &key()).unwrap();
        let run = state.begin(Timestamp::now()).unwrap();
        fs::write(state.journal_path(), line(&outcome(0, "done", Some("dv0")))).unwrap();
        // What `finish` leaves when killed between its two steps.
        state
            .write_run(&RunFile {
                run_id: run.run_id.clone(),
                started: run.started.to_string(),
                finished: true,
                discarded: false,
            })
            .unwrap();
        state.begin(Timestamp::now()).unwrap();
        assert!(state.archived_journal_path(&run.run_id).is_file());
        assert_eq!(state.copied_evidence().unwrap().len(), 1);
    }

    #[test]
    fn torn_lines() {
        let good = line(&outcome(0, "done", Some("dv0")));
        let other = line(&outcome(1, "done", None));
        let cut = &other[..other.len() / 2];
        // (journal, outcomes loaded or the line of the error, torn lines)
        let cases: Vec<(String, Result<usize, u64>, usize)> = vec![
            (String::new(), Ok(0), 0),
            (good.clone(), Ok(1), 0),
            (format!("{good}{other}"), Ok(2), 0),
            (format!("{good}{cut}"), Ok(1), 1),
            (format!("{good}{}", other.trim_end()), Ok(1), 1),
            (format!("{good}{cut}\n"), Ok(1), 1),
            (format!("{good}{cut}\n\n  \n"), Ok(1), 1),
            (format!("{good}\0\0\0\0"), Ok(1), 1),
            (format!("{good}\n{other}"), Ok(2), 0),
            (format!("{good}{cut}\n{other}"), Err(2), 0),
            (format!("{cut}\n{good}{other}"), Err(1), 0),
            (format!("{good}{cut}\n{cut}"), Err(2), 0),
        ];
        for (i, (journal, expected, torn)) in cases.into_iter().enumerate() {
            let tmp = tempfile::tempdir().unwrap();
            let state = StateDir::open(tmp.path(), &key()).unwrap();
            state.begin(Timestamp::now()).unwrap();
            fs::write(state.journal_path(), &journal).unwrap();
            match (state.load(), expected) {
                (Ok(loaded), Ok(n)) => {
                    assert_eq!(loaded.outcomes.len(), n, "case {i}");
                    assert_eq!(loaded.torn_lines, torn, "case {i}");
                }
                (Err(e @ StateError::Corrupt { line, .. }), Err(n)) => {
                    assert_eq!(line, n, "case {i}");
                    let message = e.to_string();
                    assert!(message.contains("journal.jsonl line"), "case {i}: {message}");
                }
                (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
            }
            // Evidence reads finished journals by the same rule.
            assert_eq!(state.copied_evidence().is_ok(), expected.is_ok(), "case {i}");
        }
    }

    #[tokio::test]
    async fn appending_after_a_torn_line_cuts_it_off() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path(), &key()).unwrap();
        state.begin(Timestamp::now()).unwrap();
        let good = line(&outcome(0, "done", None));
        fs::write(state.journal_path(), format!("{good}{{\"type\":\"outc")).unwrap();
        assert_eq!(state.load().unwrap().torn_lines, 1);
        let writer = JournalWriter::open(&state).unwrap();
        writer.record(outcome(1, "done", None)).await.unwrap();
        writer.close().await.unwrap();
        let loaded = state.load().unwrap();
        assert_eq!((loaded.outcomes.len(), loaded.torn_lines), (2, 0));
    }

    #[test]
    fn run_keys_map_to_directories() {
        let a = key();
        assert_eq!(a.dir_name(), key().dir_name());
        assert_eq!(a.dir_name().len(), 32);
        assert!(a.dir_name().bytes().all(|b| b.is_ascii_hexdigit()));
        let others = [
            RunKey::new(
                "s3://replica/data",
                "s3://primary/data",
                MODE.replace("no_deletes=false", "no_deletes=true"),
            ),
            RunKey::new("s3://replica/data", "s3://primary/other", MODE),
            RunKey::new("s3://replica/dat", "as3://primary/data", MODE),
            RunKey::new("s3://replica/data", "s3://primary/data", ""),
        ];
        for other in &others {
            assert_ne!(a.dir_name(), other.dir_name(), "{other:?}");
        }

        let tmp = tempfile::tempdir().unwrap();
        let first = StateDir::open(tmp.path(), &a).unwrap();
        let again = StateDir::open(tmp.path(), &key()).unwrap();
        assert_eq!(first.path(), again.path());
        assert_eq!(first.path(), tmp.path().join(a.dir_name()));
        let other = StateDir::open(tmp.path(), &others[0]).unwrap();
        assert_ne!(first.path(), other.path());
        let written: RunKey = serde_json::from_slice(&fs::read(first.path().join(KEY_FILE)).unwrap()).unwrap();
        assert_eq!(written, a);

        // A key.json naming another command is refused rather than mixed with.
        fs::write(other.path().join(KEY_FILE), serde_json::to_vec(&a).unwrap()).unwrap();
        let err = StateDir::open(tmp.path(), &others[0]).unwrap_err();
        assert!(matches!(err, StateError::OtherCommand { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_replaced_state_directory_stops_the_writer() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path(), &key()).unwrap();
        state.begin(Timestamp::now()).unwrap();
        let writer = JournalWriter::open(&state).unwrap();
        writer.record(outcome(0, "done", None)).await.unwrap();
        writer.flush().await.unwrap();

        // Permission bits do not stop root; a file where the directory was does.
        fs::remove_dir_all(state.path()).unwrap();
        fs::write(state.path(), "not a directory").unwrap();
        writer.record(outcome(1, "done", None)).await.unwrap();
        let err = writer.flush().await.unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, StateError::Journal { .. }), "{message}");
        assert!(message.starts_with("cannot write journal "), "{message}");
        assert!(
            message.contains("journal.jsonl: Not a directory (os error 20)"),
            "{message}"
        );
        assert!(writer.record(outcome(2, "done", None)).await.is_err());
        assert!(writer.flush().await.is_err());
        assert!(writer.close().await.unwrap_err().to_string().contains("os error 20"));

        assert!(matches!(state.begin(Timestamp::now()), Err(StateError::Read { .. })));
        let err = StateDir::open(tmp.path(), &key()).unwrap_err();
        assert!(err.to_string().starts_with("cannot create state directory"), "{err}");
    }

    /// Takes `budget` bytes, then fails as a full disk does.
    struct FullDisk {
        budget: usize,
    }

    impl Write for FullDisk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if buf.len() > self.budget {
                return Err(io::Error::from_raw_os_error(28));
            }
            self.budget -= buf.len();
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink for FullDisk {
        fn sync(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_full_disk_stops_the_writer() {
        let path = PathBuf::from(".s3-failback/ab12/journal.jsonl");
        let writer = JournalWriter::spawn(path, FullDisk { budget: 1000 }).unwrap();
        let mut recorded = 0;
        while writer.record(outcome(recorded, "done", None)).await.is_ok() && recorded < 10_000 {
            recorded += 1;
        }
        let err = writer.flush().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot write journal .s3-failback/ab12/journal.jsonl: No space left on device (os error 28)"
        );
        assert!(writer.record(outcome(0, "done", None)).await.is_err());
        assert!(writer.close().await.is_err());
    }

    #[tokio::test]
    async fn recorded_entries_reach_the_file_without_a_flush() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path(), &key()).unwrap();
        state.begin(Timestamp::now()).unwrap();
        let writer = JournalWriter::open(&state).unwrap();
        writer.record(outcome(7, "done", None)).await.unwrap();
        let mut seen = false;
        for _ in 0..100 {
            if state.load().unwrap().outcomes.contains_key(&7) {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(seen);
        writer.close().await.unwrap();
    }

    fn arb_entry() -> impl Strategy<Value = JournalEntry> {
        let status = prop::sample::select(vec!["done", "skipped", "conflict", "archived", "pending", "failed"]);
        let upload = (0u8..5).prop_map(|u| format!("upload-{u}"));
        prop_oneof![
            3 => (
                0u64..12,
                any::<String>(),
                prop::option::of("[a-zA-Z0-9._]{1,8}"),
                status,
                any::<u32>(),
                any::<u64>(),
                prop::option::of(any::<String>()),
            )
                .prop_map(|(idx, key, dest_version_id, status, attempts, duration_ms, error)| {
                    JournalEntry::Outcome(OutcomeEntry {
                        idx,
                        dest_key: format!("restored/{key}"),
                        key,
                        source_version_id: format!("v{idx}"),
                        dest_version_id,
                        status: status.to_owned(),
                        attempts,
                        duration_ms,
                        etag_dest: Some("d41d8cd98f00b204e9800998ecf8427e-2".to_owned()),
                        error,
                        engine: None,
                    })
                }),
            1 => (0u64..12, any::<String>(), upload.clone())
                .prop_map(|(idx, dest_key, upload_id)| JournalEntry::UploadStarted { idx, dest_key, upload_id }),
            1 => (upload, any::<bool>())
                .prop_map(|(upload_id, completed)| JournalEntry::UploadEnded { upload_id, completed }),
        ]
    }

    fn write_all(state: &StateDir, entries: &[JournalEntry]) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let writer = JournalWriter::open(state).unwrap();
            for entry in entries {
                writer.record(entry.clone()).await.unwrap();
            }
            writer.close().await.unwrap();
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn written_then_loaded(entries in prop::collection::vec(arb_entry(), 0..60)) {
            let tmp = tempfile::tempdir().unwrap();
            let state = StateDir::open(tmp.path(), &key()).unwrap();
            state.begin(Timestamp::now()).unwrap();
            write_all(&state, &entries);
            let loaded = state.load().unwrap();
            let (outcomes, open_uploads) = model(&entries);
            prop_assert_eq!(loaded.outcomes, outcomes);
            prop_assert_eq!(loaded.open_uploads, open_uploads);
            prop_assert_eq!(loaded.torn_lines, 0);
        }

        #[test]
        fn cut_anywhere_then_resumed(
            entries in prop::collection::vec(arb_entry(), 1..30),
            more in prop::collection::vec(arb_entry(), 0..10),
            cut in any::<prop::sample::Index>(),
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let state = StateDir::open(tmp.path(), &key()).unwrap();
            state.begin(Timestamp::now()).unwrap();
            write_all(&state, &entries);
            let bytes = fs::read(state.journal_path()).unwrap();
            let cut = cut.index(bytes.len() + 1);
            fs::write(state.journal_path(), &bytes[..cut]).unwrap();
            // An entry counts once its newline is written.
            let whole = bytes[..cut].iter().filter(|&&b| b == b'\n').count();
            let torn = usize::from(!bytes[..cut].ends_with(b"\n") && cut > 0);

            let loaded = state.load().unwrap();
            let (outcomes, open_uploads) = model(&entries[..whole]);
            prop_assert_eq!(&loaded.outcomes, &outcomes);
            prop_assert_eq!(&loaded.open_uploads, &open_uploads);
            prop_assert_eq!(loaded.torn_lines, torn);

            write_all(&state, &more);
            let loaded = state.load().unwrap();
            let resumed: Vec<_> = entries[..whole].iter().chain(&more).cloned().collect();
            let (outcomes, open_uploads) = model(&resumed);
            prop_assert_eq!(loaded.outcomes, outcomes);
            prop_assert_eq!(loaded.open_uploads, open_uploads);
            prop_assert_eq!(loaded.torn_lines, 0);
        }
    }
}
