//! Planning: what restore must do for each source key, and the plan file format.
//!
//! [`plan_key`] turns one [`KeyDiff`] from the merge-join into actions (copy, multipart
//! copy, delete marker, skip, conflict, archived) following DESIGN.md's "Target state".
//! [`PlanWriter`] and [`PlanReader`] write and read `plan.csv`; [`PlanSummary`] adds up a
//! plan's totals.
//!
//! Executing actions is left to `restore`; HEAD requests (archive restore status,
//! `--metadata`) are left to the caller, which may rewrite an `archived` row into a copy
//! ([`copy_kind`]) or `pending`. No I/O happens here except through the `io::Read` and
//! `io::Write` the plan file functions are given.

use std::fmt;
use std::io;
use std::str::FromStr;
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::model::{Location, NULL_VERSION_ID, VersionRecord};
use crate::parts;
use crate::reconcile::KeyDiff;
use crate::rules::ReplicaRules;

/// How many conflict keys a [`PlanSummary`] keeps (it counts them all).
pub const CONFLICT_KEYS_KEPT: usize = 1000;

/// Which target state the plan aims at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// The dest's current version of each key matches the source's.
    #[default]
    Latest,
    /// Every source version the dest lacks is recreated, oldest first.
    AllVersions,
}

impl Mode {
    /// The word used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Latest => "latest",
            Mode::AllVersions => "all-versions",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that names no mode or no action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {word:?} (expected one of {expected})")]
pub struct UnknownWordError {
    /// What the word should have named (`mode`, `action`).
    pub what: &'static str,
    /// The word as given.
    pub word: String,
    /// The words that are known, comma separated.
    pub expected: &'static str,
}

impl FromStr for Mode {
    type Err = UnknownWordError;

    fn from_str(word: &str) -> Result<Self, Self::Err> {
        match word {
            "latest" => Ok(Mode::Latest),
            "all-versions" => Ok(Mode::AllVersions),
            _ => Err(UnknownWordError {
                what: "mode",
                word: word.to_owned(),
                expected: "latest, all-versions",
            }),
        }
    }
}

/// The planner's settings, from the plan's flags.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlanConfig {
    /// `--mode`.
    pub mode: Mode,
    /// `--as-of`: plan towards the source's state at this moment.
    pub as_of: Option<Timestamp>,
    /// `--no-deletes`: never plan a delete marker.
    pub no_deletes: bool,
    /// `--overwrite-newer`: write over dest versions newer than the target.
    pub overwrite_newer: bool,
    /// `--multipart-threshold`: split single-part sources larger than this.
    pub multipart_threshold_bytes: Option<u64>,
    /// The primary's replication rules towards the replica, where known: a primary delete
    /// marker that a rule never replicated is a conflict that names the rule.
    pub rules: Option<Arc<ReplicaRules>>,
    /// `--exclude-from`: the keys to leave alone.
    pub exclude: Option<Arc<Exclusions>>,
}

/// Primary keys an audit report lists as `delete-not-replicated` (`--exclude-from`): the
/// primary deleted them and the replica never learnt it, so a failback leaves them alone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Exclusions {
    /// The primary (dest) keys.
    pub keys: std::collections::HashSet<String>,
    /// The report they came from, for the plan's reason.
    pub origin: String,
}

/// How an excluded row's reason starts.
pub const EXCLUDED: &str = "excluded: deleted in the primary";

/// How a row's reason ends when `plan --metadata` read a replication status other than
/// `REPLICA` on the source version: it was written on the replica and exists nowhere else.
pub const WRITTEN_ON_REPLICA: &str = "written on the replica during the outage (no REPLICA status)";

/// How the reason of a primary delete marker that a rule never replicated starts.
pub const UNREPLICATED_DELETE: &str = "deleted in the primary; rule ";

/// The reason for a primary delete marker that `rule` never replicated (`plan` and
/// `audit` say it the same way).
pub fn unreplicated_delete_reason(rule: &crate::rules::Rule) -> String {
    format!(
        "{UNREPLICATED_DELETE}{} does not replicate delete markers",
        crate::rules::rule_name(rule)
    )
}

/// What restore does for one plan row: the fixed words of DESIGN.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActionKind {
    /// CopyObject from the source version.
    Copy,
    /// CreateMultipartUpload, UploadPartCopy per part, CompleteMultipartUpload.
    MultipartCopy,
    /// DeleteObject without a version id on the dest key.
    DeleteMarker,
    /// Nothing to do; the reason says why.
    Skip,
    /// The dest holds newer data that differs; left alone.
    Conflict,
    /// The source version is archived and must be restored from the archive first.
    Archived,
    /// A restore from the archive was requested or is under way.
    Pending,
}

impl ActionKind {
    /// Every action kind, in the order reports list them.
    pub const ALL: [ActionKind; 7] = [
        ActionKind::Copy,
        ActionKind::MultipartCopy,
        ActionKind::DeleteMarker,
        ActionKind::Skip,
        ActionKind::Conflict,
        ActionKind::Archived,
        ActionKind::Pending,
    ];

    /// The word in plan files and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Copy => "copy",
            ActionKind::MultipartCopy => "multipart-copy",
            ActionKind::DeleteMarker => "delete-marker",
            ActionKind::Skip => "skip",
            ActionKind::Conflict => "conflict",
            ActionKind::Archived => "archived",
            ActionKind::Pending => "pending",
        }
    }

    /// Whether restore writes to the dest for this action.
    pub fn writes(self) -> bool {
        matches!(
            self,
            ActionKind::Copy | ActionKind::MultipartCopy | ActionKind::DeleteMarker
        )
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ActionKind {
    type Err = UnknownWordError;

    fn from_str(word: &str) -> Result<Self, Self::Err> {
        ActionKind::ALL
            .into_iter()
            .find(|k| k.as_str() == word)
            .ok_or_else(|| UnknownWordError {
                what: "action",
                word: word.to_owned(),
                expected: "copy, multipart-copy, delete-marker, skip, conflict, archived, pending",
            })
    }
}

/// One row of a plan: an action on one source version (or on a key's absence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedAction {
    /// The source key.
    pub key: String,
    /// What restore does.
    pub action: ActionKind,
    /// The source version the row is about; empty for a `latest` row whose target is
    /// absence (delete marker, or nothing at `--as-of`).
    pub source_version_id: String,
    /// The dest key the source key maps onto.
    pub dest_key: String,
    /// The dest version the decision compared against; empty if none.
    pub dest_version_id: String,
    /// The source version's size; `None` for a delete marker.
    pub size_bytes: Option<u64>,
    /// The source version's ETag without quotes; `None` for a delete marker.
    pub etag: Option<String>,
    /// When the source version (or delete marker) was written; `None` when there is none.
    pub last_modified: Option<Timestamp>,
    /// Why, in words for people.
    pub reason: String,
    /// The source version's storage class, sent explicitly with the copy.
    pub storage_class: Option<String>,
    /// The source version's additional checksum algorithm, where known.
    pub checksum_algorithm: Option<String>,
    /// Whether the row stands for a delete marker (or absence) rather than an object.
    pub is_delete_marker: bool,
}

/// What the state's journal knows about versions an earlier run created.
pub trait Evidence {
    /// The source version id that the journal records dest version `dest_version_id` of
    /// `dest_key` as copied from, if any.
    fn copied_from(&self, dest_key: &str, dest_version_id: &str) -> Option<&str>;
}

/// No journal: identity by version id, size and ETag only.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvidence;

impl Evidence for NoEvidence {
    fn copied_from(&self, _dest_key: &str, _dest_version_id: &str) -> Option<&str> {
        None
    }
}

/// The action that copies `version` now: `multipart-copy` for multipart sources, sources
/// above 5 GiB and sources above `--multipart-threshold`, `archived` for archive classes,
/// else `copy`.
pub fn copy_kind(version: &VersionRecord, cfg: &PlanConfig) -> ActionKind {
    if version.is_archived() {
        ActionKind::Archived
    } else if parts::needs_multipart(
        version.size_bytes,
        version.is_multipart(),
        cfg.multipart_threshold_bytes,
    ) {
        ActionKind::MultipartCopy
    } else {
        ActionKind::Copy
    }
}

/// Plans one key: one row in `latest` mode; in `all-versions` one row per source version
/// (or a single `conflict` row).
pub fn plan_key(diff: &KeyDiff, cfg: &PlanConfig, evidence: &dyn Evidence) -> Vec<PlannedAction> {
    let planner = Planner { diff, cfg, evidence };
    let mut rows = match cfg.mode {
        Mode::Latest => vec![planner.latest()],
        Mode::AllVersions => planner.all_versions(),
    };
    if let Some(ex) = &cfg.exclude
        && ex.keys.contains(&diff.dest_key)
    {
        // Still one row per source version, so the report accounts for each; none writes.
        for row in &mut rows {
            row.action = ActionKind::Skip;
            row.reason = format!("{EXCLUDED} (delete-not-replicated in {})", ex.origin);
        }
    }
    rows
}

/// Where a source version stands in `all-versions` planning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Part of the history to recreate.
    Live,
    /// A delete marker on a key already absent at that point of the source's history
    /// (the first entry, or right after another delete marker): it changes nothing.
    Redundant,
    /// A delete marker under `--no-deletes`.
    NoDeletes,
}

struct Planner<'a> {
    diff: &'a KeyDiff,
    cfg: &'a PlanConfig,
    evidence: &'a dyn Evidence,
}

const IDENTICAL: &str = "identical";
const ALREADY_ABSENT: &str = "already absent";
const DELETES_DISABLED: &str = "deletes disabled (--no-deletes)";
const OVERWRITTEN: &str = "overwritten (--overwrite-newer)";

impl<'a> Planner<'a> {
    fn in_time(&self, v: &VersionRecord) -> bool {
        self.cfg.as_of.is_none_or(|t| v.last_modified <= t)
    }

    /// Same object content: the same version id (never `null`), the same size and ETag,
    /// or the journal's record that `d` was copied from `s`.
    fn same_content(&self, s: &VersionRecord, d: &VersionRecord) -> bool {
        if s.is_delete_marker || d.is_delete_marker {
            return false;
        }
        s.same_content(d) || self.journal_says(s, d)
    }

    /// The journal records `d` as copied from `s`. A copy keeps the size, which guards
    /// against a `null` source version replaced since.
    fn journal_says(&self, s: &VersionRecord, d: &VersionRecord) -> bool {
        d.version_id != NULL_VERSION_ID
            && s.is_delete_marker == d.is_delete_marker
            && s.size_bytes == d.size_bytes
            && self.evidence.copied_from(&self.diff.dest_key, &d.version_id) == Some(s.version_id.as_str())
    }

    /// History matching: delete markers match delete markers, versions match by content.
    fn history_match(&self, s: &VersionRecord, d: &VersionRecord) -> bool {
        (s.is_delete_marker && d.is_delete_marker) || self.same_content(s, d)
    }

    /// Both states are absent, or both are objects of the same content.
    fn same_state(&self, s: Option<&VersionRecord>, d: Option<&VersionRecord>) -> bool {
        match (s.filter(|s| !s.is_delete_marker), d.filter(|d| !d.is_delete_marker)) {
            (None, None) => true,
            (Some(s), Some(d)) => self.same_content(s, d),
            _ => false,
        }
    }

    /// When the content of dest version `d` was written: the time of the source version it
    /// is known to be (replication keeps the id; the journal records copies), else its own
    /// time. A restored copy is newer than its original (S3-NOTES 39), but not newer data.
    fn effective_time(&self, d: &VersionRecord) -> Timestamp {
        let linked = self.diff.source.iter().find(|s| {
            (d.version_id != NULL_VERSION_ID
                && s.version_id == d.version_id
                && s.is_delete_marker == d.is_delete_marker)
                || self.journal_says(s, d)
        });
        linked.map_or(d.last_modified, |s| s.last_modified)
    }

    /// Why a newer primary delete marker wins: the rule that never replicated it, where
    /// the rules are known, else `otherwise`.
    fn newer_delete_reason(&self, otherwise: &str) -> String {
        match self
            .cfg
            .rules
            .as_deref()
            .and_then(|r| r.unreplicated_deletes(&self.diff.dest_key))
        {
            Some(rule) => unreplicated_delete_reason(rule),
            None => otherwise.to_owned(),
        }
    }

    /// Whether dest version `d` is newer than the source state written at `reference`;
    /// with no source state at all (nothing at `--as-of`), any dest version is.
    fn is_newer(&self, d: &VersionRecord, reference: Option<Timestamp>) -> bool {
        reference.is_none_or(|r| self.effective_time(d) > r)
    }

    /// A row about source version `s`.
    fn row(
        &self,
        action: ActionKind,
        s: &VersionRecord,
        d: Option<&VersionRecord>,
        reason: impl Into<String>,
    ) -> PlannedAction {
        let object = !s.is_delete_marker;
        PlannedAction {
            key: self.diff.source_key.clone(),
            action,
            source_version_id: s.version_id.clone(),
            dest_key: self.diff.dest_key.clone(),
            dest_version_id: d.map(|d| d.version_id.clone()).unwrap_or_default(),
            size_bytes: object.then_some(s.size_bytes),
            etag: s.etag.clone().filter(|_| object),
            last_modified: Some(s.last_modified),
            reason: reason.into(),
            storage_class: s.storage_class.clone().filter(|_| object),
            checksum_algorithm: s.checksum_algorithm.clone().filter(|_| object),
            is_delete_marker: s.is_delete_marker,
        }
    }

    /// A `latest` row whose target is absence: the source's delete marker `s`, or nothing.
    fn absent_row(
        &self,
        action: ActionKind,
        s: Option<&VersionRecord>,
        d: Option<&VersionRecord>,
        reason: impl Into<String>,
    ) -> PlannedAction {
        PlannedAction {
            key: self.diff.source_key.clone(),
            action,
            source_version_id: String::new(),
            dest_key: self.diff.dest_key.clone(),
            dest_version_id: d.map(|d| d.version_id.clone()).unwrap_or_default(),
            size_bytes: None,
            etag: None,
            last_modified: s.map(|s| s.last_modified),
            reason: reason.into(),
            storage_class: None,
            checksum_algorithm: None,
            is_delete_marker: true,
        }
    }

    /// The row that copies `s` now, or says why it cannot be copied yet.
    fn copy_row(&self, s: &VersionRecord, d: Option<&VersionRecord>, reason: String) -> PlannedAction {
        match copy_kind(s, self.cfg) {
            ActionKind::Archived => {
                let class = s.storage_class.as_deref().unwrap_or("archive");
                self.row(
                    ActionKind::Archived,
                    s,
                    d,
                    format!("{class}: restore from archive first"),
                )
            }
            kind => self.row(kind, s, d, reason),
        }
    }

    fn latest(&self) -> PlannedAction {
        // Versions arrive newest first: the first one in time is the target.
        let target = self.diff.source.iter().find(|v| self.in_time(v));
        let current = self.diff.dest.first();
        match target {
            Some(t) if !t.is_delete_marker => self.latest_present(t, current),
            _ => self.latest_absent(target, current),
        }
    }

    fn latest_present(&self, t: &VersionRecord, current: Option<&VersionRecord>) -> PlannedAction {
        let mut reason = match current {
            None => "missing in primary".to_owned(),
            Some(d) if d.is_delete_marker => "primary's current version is a delete marker".to_owned(),
            Some(_) => "primary's current version differs".to_owned(),
        };
        if let Some(d) = current {
            // Same content first: a restored copy is newer than its original.
            if self.same_content(t, d) {
                return self.row(ActionKind::Skip, t, current, IDENTICAL);
            }
            if self.is_newer(d, Some(t.last_modified)) {
                let why = if d.is_delete_marker {
                    self.newer_delete_reason("primary delete marker is newer than the replica version")
                } else {
                    "primary version is newer and differs".to_owned()
                };
                if !self.cfg.overwrite_newer {
                    return self.row(ActionKind::Conflict, t, current, why);
                }
                reason = format!("{why}; {OVERWRITTEN}");
            }
        }
        self.copy_row(t, current, reason)
    }

    fn latest_absent(&self, target: Option<&VersionRecord>, current: Option<&VersionRecord>) -> PlannedAction {
        let Some(d) = current.filter(|d| !d.is_delete_marker) else {
            return self.absent_row(ActionKind::Skip, target, current, ALREADY_ABSENT);
        };
        if self.cfg.no_deletes {
            return self.absent_row(ActionKind::Skip, target, current, DELETES_DISABLED);
        }
        let mut reason = if target.is_some() {
            "deleted in replica".to_owned()
        } else {
            "absent in replica at --as-of".to_owned()
        };
        if self.is_newer(d, target.map(|t| t.last_modified)) {
            let why = if target.is_some() {
                "primary version is newer than the replica's delete marker"
            } else {
                "primary has a version and the replica had none at --as-of"
            };
            if !self.cfg.overwrite_newer {
                return self.absent_row(ActionKind::Conflict, target, current, why);
            }
            reason = format!("{why}; {OVERWRITTEN}");
        }
        self.absent_row(ActionKind::DeleteMarker, target, current, reason)
    }

    fn all_versions(&self) -> Vec<PlannedAction> {
        let oldest_first = self.diff.source.iter().rev();
        let (in_time, after): (Vec<&VersionRecord>, Vec<&VersionRecord>) = oldest_first.partition(|v| self.in_time(v));

        // The history to recreate: without delete markers that change nothing (or that
        // --no-deletes drops).
        let mut roles = Vec::with_capacity(in_time.len());
        let mut live: Vec<usize> = Vec::new();
        let mut absent = true;
        for (i, v) in in_time.iter().enumerate() {
            let role = if !v.is_delete_marker {
                absent = false;
                Role::Live
            } else if self.cfg.no_deletes {
                Role::NoDeletes
            } else if absent {
                Role::Redundant
            } else {
                absent = true;
                Role::Live
            };
            if role == Role::Live {
                live.push(i);
            }
            roles.push(role);
        }

        // Match the history into the dest's, oldest first, as a subsequence; the first
        // source version without a match and every later one are missing.
        let dest: Vec<&VersionRecord> = self.diff.dest.iter().rev().collect();
        let mut matched: Vec<usize> = Vec::new();
        let mut next = 0;
        for &i in &live {
            match (next..dest.len()).find(|&k| self.history_match(in_time[i], dest[k])) {
                Some(k) => {
                    matched.push(k);
                    next = k + 1;
                }
                None => break,
            }
        }
        let missing_from = matched.len();

        // After the history, the dest's current state must be the source's final one; a
        // dest that holds the whole history with something else on top gets the final
        // version again (unless that means a delete under --no-deletes).
        let current = self.diff.dest.first();
        let last = in_time.last().copied();
        let final_absent = last.is_none_or(|v| v.is_delete_marker);
        let rewrite =
            missing_from == live.len() && !self.same_state(last, current) && !(final_absent && self.cfg.no_deletes);
        let produced = if missing_from < live.len() {
            live.last().map(|&i| in_time[i])
        } else {
            last
        };

        // A dest whose current version is newer than the source's newest entry (as of
        // --as-of) and differs from what the plan would leave current is a conflict: one
        // row, nothing recreated under the key, unless --overwrite-newer.
        let mut note = None;
        if let Some(d) = current
            && (missing_from < live.len() || rewrite)
            && !self.same_state(produced, current)
            && self.is_newer(d, last.map(|v| v.last_modified))
        {
            let why = match (d.is_delete_marker, last) {
                (true, _) => self.newer_delete_reason("primary delete marker is newer than the replica's history"),
                (false, Some(_)) => "primary version is newer and differs".to_owned(),
                (false, None) => "primary has a version and the replica had none at --as-of".to_owned(),
            };
            if !self.cfg.overwrite_newer {
                let row = match last {
                    Some(s) => self.row(ActionKind::Conflict, s, current, why.as_str()),
                    None => self.absent_row(ActionKind::Conflict, None, current, why.as_str()),
                };
                return vec![row];
            }
            note = Some(why);
        }
        let with_note = |reason: &str| match &note {
            Some(why) => format!("{reason}; {why}; {OVERWRITTEN}"),
            None => reason.to_owned(),
        };

        let mut rows = Vec::with_capacity(in_time.len() + after.len() + 1);
        let mut live_index = 0;
        let mut blocked_by: Option<&str> = None;
        for (v, role) in in_time.iter().zip(&roles) {
            let row = match role {
                Role::NoDeletes => self.row(ActionKind::Skip, v, None, DELETES_DISABLED),
                Role::Redundant => self.row(ActionKind::Skip, v, None, ALREADY_ABSENT),
                Role::Live => {
                    let k = live_index;
                    live_index += 1;
                    if let Some(&d) = matched.get(k) {
                        self.row(ActionKind::Skip, v, Some(dest[d]), IDENTICAL)
                    } else if let Some(archived) = blocked_by {
                        // Copying past an archived version would put the history out of
                        // order; what follows waits for it.
                        self.row(
                            ActionKind::Archived,
                            v,
                            None,
                            format!("waits for archived version {archived:?} (history order)"),
                        )
                    } else if v.is_delete_marker {
                        self.row(
                            ActionKind::DeleteMarker,
                            v,
                            None,
                            with_note("missing from primary's history"),
                        )
                    } else {
                        let row = self.copy_row(v, None, with_note("missing from primary's history"));
                        if row.action == ActionKind::Archived {
                            blocked_by = Some(&v.version_id);
                        }
                        row
                    }
                }
            };
            rows.push(row);
        }
        if rewrite {
            let reason = with_note("primary's current version is not the replica's");
            let row = match last {
                Some(s) if !s.is_delete_marker => self.copy_row(s, current, reason),
                Some(s) => self.row(ActionKind::DeleteMarker, s, current, reason),
                None => self.absent_row(ActionKind::DeleteMarker, None, current, reason),
            };
            // The final version's own row becomes the write.
            match (last, rows.last_mut()) {
                (Some(_), Some(slot)) => *slot = row,
                _ => rows.push(row),
            }
        }
        rows.extend(
            after
                .iter()
                .map(|v| self.row(ActionKind::Skip, v, None, "newer than --as-of")),
        );
        rows
    }
}

/// The minimum columns of `plan.csv`, in the order the writer puts them.
pub const PLAN_MIN_COLUMNS: [&str; 11] = [
    "key",
    "action",
    "source_version_id",
    "dest_key",
    "dest_version_id",
    "size",
    "etag",
    "last_modified",
    "reason",
    "source",
    "dest",
];

/// One line of `plan.csv`: the DESIGN.md columns, then this crate's extensions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRow {
    /// The source key.
    pub key: String,
    /// The action word.
    pub action: String,
    /// The source version id; empty when none.
    pub source_version_id: String,
    /// The dest key.
    pub dest_key: String,
    /// The dest version compared against; empty when none.
    pub dest_version_id: String,
    /// Size in bytes; empty for a delete marker.
    pub size: Option<u64>,
    /// ETag without quotes; empty for a delete marker.
    pub etag: Option<String>,
    /// RFC 3339 UTC time of the source version; empty when none.
    pub last_modified: Option<String>,
    /// Why, for people.
    pub reason: String,
    /// The run's source location, `s3://...`.
    pub source: String,
    /// The run's dest location, `s3://...`.
    pub dest: String,
    /// Storage class of the source version (extension column).
    #[serde(default)]
    pub storage_class: Option<String>,
    /// Additional checksum algorithm of the source version (extension column).
    #[serde(default)]
    pub checksum_algorithm: Option<String>,
    /// Whether the row stands for a delete marker (extension column).
    #[serde(default)]
    pub is_delete_marker: Option<bool>,
}

impl PlanRow {
    /// The row for `action` in a run from `source` to `dest`.
    pub fn from_action(action: &PlannedAction, source: &Location, dest: &Location) -> Self {
        PlanRow {
            key: action.key.clone(),
            action: action.action.as_str().to_owned(),
            source_version_id: action.source_version_id.clone(),
            dest_key: action.dest_key.clone(),
            dest_version_id: action.dest_version_id.clone(),
            size: action.size_bytes,
            etag: action.etag.clone(),
            last_modified: action.last_modified.map(|t| t.to_string()),
            reason: action.reason.clone(),
            source: source.to_string(),
            dest: dest.to_string(),
            storage_class: action.storage_class.clone(),
            checksum_algorithm: action.checksum_algorithm.clone(),
            is_delete_marker: Some(action.is_delete_marker),
        }
    }
}

/// Why a plan file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    /// The header lacks a minimum column.
    #[error("{path}: line {line}: plan header lacks the column {column:?}")]
    MissingColumn {
        /// The plan file.
        path: String,
        /// The header's line.
        line: u64,
        /// The missing column.
        column: &'static str,
    },
    /// A row does not parse, or says something restore cannot do.
    #[error("{path}: line {line}: {detail}")]
    BadRow {
        /// The plan file.
        path: String,
        /// The row's first line.
        line: u64,
        /// What is wrong.
        detail: String,
    },
    /// A row names an unknown action.
    #[error("{path}: line {line}: {word}")]
    UnknownAction {
        /// The plan file.
        path: String,
        /// The row's first line.
        line: u64,
        /// The unknown word, with the known ones.
        word: UnknownWordError,
    },
    /// A row's `source` or `dest` is not this run's location.
    #[error("{path}: line {line}: {column} is {found:?}, but this run's {column} is {expected:?}")]
    LocationMismatch {
        /// The plan file.
        path: String,
        /// The row's first line.
        line: u64,
        /// `source` or `dest`.
        column: &'static str,
        /// The location in the plan.
        found: String,
        /// The run's location.
        expected: String,
    },
    /// The file cannot be read.
    #[error("cannot read plan {path}")]
    Read {
        /// The plan file.
        path: String,
        /// The reader's error.
        source: csv::Error,
    },
    /// The file cannot be written.
    #[error("cannot write plan {path}")]
    Write {
        /// The plan file.
        path: String,
        /// The writer's error.
        source: csv::Error,
    },
}

/// Writes `plan.csv`: a header, then one row per action.
pub struct PlanWriter<W: io::Write> {
    csv: csv::Writer<W>,
    path: String,
    /// The `source` and `dest` columns, the same on every row: written once as text.
    source_text: String,
    dest_text: String,
    /// The `last_modified` column, reused from row to row.
    time_text: String,
}

impl<W: io::Write> PlanWriter<W> {
    /// Starts a plan for a run from `source` to `dest` and writes its header;
    /// `path_for_messages` names the file in errors.
    ///
    /// # Errors
    ///
    /// [`PlanFileError::Write`] when the header cannot be written.
    pub fn new(
        writer: W,
        path_for_messages: impl Into<String>,
        source: &Location,
        dest: &Location,
    ) -> Result<Self, PlanFileError> {
        // The header is written by hand so that an empty plan has one too.
        let mut csv = csv::WriterBuilder::new().has_headers(false).from_writer(writer);
        let path = path_for_messages.into();
        let header = PLAN_MIN_COLUMNS
            .iter()
            .chain(&["storage_class", "checksum_algorithm", "is_delete_marker"]);
        csv.write_record(header).map_err(|source| PlanFileError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(PlanWriter {
            csv,
            path,
            source_text: source.to_string(),
            dest_text: dest.to_string(),
            time_text: String::new(),
        })
    }

    /// Writes one row. Keys are written verbatim, quoted where CSV needs it.
    ///
    /// # Errors
    ///
    /// [`PlanFileError::Write`] when the row cannot be written.
    pub fn write(&mut self, action: &PlannedAction) -> Result<(), PlanFileError> {
        self.write_fields(action).map_err(|source| PlanFileError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// The fields of [`PlanRow::from_action`] in its order, written one by one: the bytes
    /// serde would write (csv quotes a field the same way either way; `None` is an empty
    /// field, numbers and flags are written as serde writes them) without copying every
    /// string of the row first.
    fn write_fields(&mut self, a: &PlannedAction) -> Result<(), csv::Error> {
        let mut digits = [0u8; 20];
        self.time_text.clear();
        if let Some(t) = a.last_modified {
            crate::model::push_timestamp(t, &mut self.time_text);
        }
        let csv = &mut self.csv;
        csv.write_field(&a.key)?;
        csv.write_field(a.action.as_str())?;
        csv.write_field(&a.source_version_id)?;
        csv.write_field(&a.dest_key)?;
        csv.write_field(&a.dest_version_id)?;
        csv.write_field(a.size_bytes.map_or(&[][..], |n| decimal(n, &mut digits)))?;
        csv.write_field(a.etag.as_deref().unwrap_or(""))?;
        csv.write_field(&self.time_text)?;
        csv.write_field(&a.reason)?;
        csv.write_field(&self.source_text)?;
        csv.write_field(&self.dest_text)?;
        csv.write_field(a.storage_class.as_deref().unwrap_or(""))?;
        csv.write_field(a.checksum_algorithm.as_deref().unwrap_or(""))?;
        csv.write_field(if a.is_delete_marker { "true" } else { "false" })?;
        // An empty record ends the row: it writes the terminator only.
        csv.write_record(None::<&[u8]>)
    }

    /// Flushes the plan and returns the inner writer.
    ///
    /// # Errors
    ///
    /// [`PlanFileError::Write`] when the plan cannot be flushed.
    pub fn finish(self) -> Result<W, PlanFileError> {
        let path = self.path;
        self.csv.into_inner().map_err(|e| PlanFileError::Write {
            path,
            source: csv::Error::from(e.into_error()),
        })
    }
}

/// `n` in decimal, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Reads `plan.csv` row by row, checking every row against the run's locations.
pub struct PlanReader<R: io::Read> {
    csv: csv::Reader<R>,
    headers: csv::StringRecord,
    path: String,
    source: Location,
    dest: Location,
    record: csv::StringRecord,
    done: bool,
}

impl<R: io::Read> PlanReader<R> {
    /// Opens a plan and checks its header: every minimum column must be there (extra
    /// columns are allowed, in any order).
    ///
    /// # Errors
    ///
    /// [`PlanFileError::MissingColumn`] for a header without a minimum column,
    /// [`PlanFileError::Read`] when the header cannot be read.
    pub fn new(
        reader: R,
        path_for_messages: impl Into<String>,
        expected_source: &Location,
        expected_dest: &Location,
    ) -> Result<Self, PlanFileError> {
        let path = path_for_messages.into();
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(reader);
        let mut headers = csv
            .headers()
            .map_err(|source| PlanFileError::Read {
                path: path.clone(),
                source,
            })?
            .clone();
        // A spreadsheet may save the file with a byte order mark before the header.
        if let Some(first) = headers.get(0)
            && let Some(stripped) = first.strip_prefix('\u{feff}')
        {
            let mut fixed: Vec<String> = headers.iter().map(str::to_owned).collect();
            fixed[0] = stripped.to_owned();
            headers = csv::StringRecord::from(fixed);
            csv.set_headers(headers.clone());
        }
        if let Some(column) = PLAN_MIN_COLUMNS.into_iter().find(|c| !headers.iter().any(|h| h == *c)) {
            return Err(PlanFileError::MissingColumn { path, line: 1, column });
        }
        Ok(PlanReader {
            csv,
            headers,
            path,
            source: expected_source.clone(),
            dest: expected_dest.clone(),
            record: csv::StringRecord::new(),
            done: false,
        })
    }

    fn bad_row(&self, line: u64, detail: impl Into<String>) -> PlanFileError {
        PlanFileError::BadRow {
            path: self.path.clone(),
            line,
            detail: detail.into(),
        }
    }

    fn read_next(&mut self) -> Result<Option<PlannedAction>, PlanFileError> {
        let more = self.csv.read_record(&mut self.record).map_err(|e| {
            let line = e.position().map_or(0, csv::Position::line);
            match e.kind() {
                csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                    self.bad_row(line, format!("row has {len} fields, but the header has {expected_len}"))
                }
                csv::ErrorKind::Utf8 { .. } => self.bad_row(line, "row is not valid UTF-8"),
                _ => PlanFileError::Read {
                    path: self.path.clone(),
                    source: e,
                },
            }
        })?;
        if !more {
            return Ok(None);
        }
        let line = self.record.position().map_or(0, csv::Position::line);
        let row: PlanRow = self
            .record
            .deserialize(Some(&self.headers))
            .map_err(|e| match e.kind() {
                csv::ErrorKind::Deserialize { err, .. } => {
                    let column = err
                        .field()
                        .and_then(|f| self.headers.get(usize::try_from(f).ok()?))
                        .unwrap_or("?");
                    self.bad_row(line, format!("column {column}: {}", err.kind()))
                }
                _ => self.bad_row(line, e.to_string()),
            })?;
        self.check_location("source", &row.source, line)?;
        self.check_location("dest", &row.dest, line)?;
        let action: ActionKind = row.action.parse().map_err(|word| PlanFileError::UnknownAction {
            path: self.path.clone(),
            line,
            word,
        })?;
        let last_modified = match row.last_modified.as_deref() {
            None => None,
            Some(text) => Some(text.parse::<Timestamp>().map_err(|e| {
                self.bad_row(
                    line,
                    format!("column last_modified: {text:?} is not an RFC 3339 time: {e}"),
                )
            })?),
        };
        let is_delete_marker = row.is_delete_marker.unwrap_or(action == ActionKind::DeleteMarker);
        if row.key.is_empty() || row.dest_key.is_empty() {
            return Err(self.bad_row(line, "key and dest_key must not be empty"));
        }
        if matches!(action, ActionKind::Copy | ActionKind::MultipartCopy) {
            // A copy reads a source version by id (never the bare key) and needs its size.
            if row.source_version_id.is_empty() || row.size.is_none() || is_delete_marker {
                return Err(self.bad_row(
                    line,
                    format!(
                        "{action} of {:?} needs a source_version_id and a size, and cannot copy a delete marker",
                        row.key
                    ),
                ));
            }
        }
        Ok(Some(PlannedAction {
            key: row.key,
            action,
            source_version_id: row.source_version_id,
            dest_key: row.dest_key,
            dest_version_id: row.dest_version_id,
            size_bytes: row.size,
            etag: row.etag,
            last_modified,
            reason: row.reason,
            storage_class: row.storage_class,
            checksum_algorithm: row.checksum_algorithm,
            is_delete_marker,
        }))
    }

    fn check_location(&self, column: &'static str, found: &str, line: u64) -> Result<(), PlanFileError> {
        let expected = if column == "source" { &self.source } else { &self.dest };
        if found.parse::<Location>().as_ref() == Ok(expected) {
            Ok(())
        } else {
            Err(PlanFileError::LocationMismatch {
                path: self.path.clone(),
                line,
                column,
                found: found.to_owned(),
                expected: expected.to_string(),
            })
        }
    }
}

impl<R: io::Read> Iterator for PlanReader<R> {
    type Item = Result<PlannedAction, PlanFileError>;

    /// The next action; after the first error, nothing more.
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.read_next().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

/// Reads a whole plan; see [`PlanReader`].
///
/// # Errors
///
/// The first [`PlanFileError`]: a header without a minimum column, a row that does not
/// parse, an unknown action, or a `source`/`dest` that differ from the expected ones.
pub fn read_plan<R: io::Read>(
    reader: R,
    path_for_messages: &str,
    expected_source: &Location,
    expected_dest: &Location,
) -> Result<Vec<PlannedAction>, PlanFileError> {
    PlanReader::new(reader, path_for_messages, expected_source, expected_dest)?.collect()
}

/// Objects and bytes of one action kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KindTotals {
    /// Rows of this kind.
    pub objects: u64,
    /// Their source sizes added up.
    pub bytes: u64,
}

/// A plan's totals: per action kind, requests restore will make, conflicts, primary-only
/// keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlanSummary {
    totals: [KindTotals; 7],
    /// Requests a restore will make for the plan (list requests aside).
    pub requests: u64,
    /// Conflict rows (one per conflict key).
    pub conflicts: u64,
    /// The first [`CONFLICT_KEYS_KEPT`] conflict keys.
    pub conflict_keys: Vec<String>,
    /// Keys only the dest has.
    pub primary_only: u64,
    /// Keys whose primary delete marker a rule never replicated, kept deleted (conflicts).
    pub unreplicated_deletes_kept: u64,
    /// The same keys brought back by a write under `--overwrite-newer`.
    pub unreplicated_deletes_undone: u64,
    last_unreplicated_key: Option<String>,
    /// Rows `--exclude-from` turned into skips.
    pub excluded: u64,
    /// Copies of versions written on the replica during the outage (objects, bytes), where
    /// `--metadata` read their replication status.
    pub written_on_replica: KindTotals,
    /// `--part-size`, if given.
    pub part_size_bytes: Option<u64>,
}

impl PlanSummary {
    /// An empty summary; `part_size_bytes` is `--part-size`, if given.
    pub fn new(part_size_bytes: Option<u64>) -> Self {
        PlanSummary {
            part_size_bytes,
            ..PlanSummary::default()
        }
    }

    /// Adds one row.
    pub fn add(&mut self, action: &PlannedAction) {
        let t = &mut self.totals[action.action.index()];
        t.objects += 1;
        t.bytes += action.size_bytes.unwrap_or(0);
        self.requests += restore_requests(action, self.part_size_bytes);
        if action.action == ActionKind::Conflict {
            self.conflicts += 1;
            if self.conflict_keys.len() < CONFLICT_KEYS_KEPT {
                self.conflict_keys.push(action.key.clone());
            }
        }
        // The reason says it (so a plan read back from its file counts the same).
        // All-versions rows carry the note after their own reason (`--overwrite-newer`);
        // a key's rows arrive together, so each key counts once.
        if action.reason.contains(UNREPLICATED_DELETE) {
            if self.last_unreplicated_key.as_deref() != Some(action.key.as_str()) {
                if action.action == ActionKind::Conflict {
                    self.unreplicated_deletes_kept += 1;
                } else {
                    self.unreplicated_deletes_undone += 1;
                }
                self.last_unreplicated_key = Some(action.key.clone());
            }
        } else if action.reason.starts_with(EXCLUDED) {
            self.excluded += 1;
        }
        if action.action.writes() && action.reason.ends_with(WRITTEN_ON_REPLICA) {
            self.written_on_replica.objects += 1;
            self.written_on_replica.bytes += action.size_bytes.unwrap_or(0);
        }
    }

    /// Counts one key that only the dest has.
    pub fn add_primary_only(&mut self) {
        self.primary_only += 1;
    }

    /// The totals of one action kind.
    pub fn totals(&self, kind: ActionKind) -> KindTotals {
        self.totals[kind.index()]
    }
}

/// The part size restore uses to split a single-part source of `size_bytes`: `--part-size`
/// (default 64 MiB), raised so that no more than 10,000 parts are needed.
pub fn part_size_for(size_bytes: u64, part_size_bytes: Option<u64>) -> u64 {
    match part_size_bytes {
        Some(p) => p.max(parts::min_part_size_for(size_bytes)),
        None => parts::default_part_size(size_bytes),
    }
    .max(1)
}

/// The requests restore makes for one row: 1 for a copy or a delete marker, 3 plus 2 per
/// part for a multipart copy (parts from the ETag's `-N`, else from the part size), none
/// otherwise.
pub fn restore_requests(action: &PlannedAction, part_size_bytes: Option<u64>) -> u64 {
    match action.action {
        ActionKind::Copy | ActionKind::DeleteMarker => 1,
        ActionKind::MultipartCopy => {
            let from_etag = action
                .etag
                .as_deref()
                .and_then(|e| e.rsplit_once('-'))
                .and_then(|(_, n)| n.parse::<u64>().ok());
            let parts = from_etag.unwrap_or_else(|| {
                let size = action.size_bytes.unwrap_or(0);
                size.div_ceil(part_size_for(size, part_size_bytes)).max(1)
            });
            3 + 2 * parts
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use futures::StreamExt;
    use futures::executor::block_on;
    use proptest::prelude::*;

    use super::*;
    use crate::parts::MAX_COPY_OBJECT_BYTES;
    use crate::reconcile::tests::{dm, rec};
    use crate::reconcile::{ReconcileConfig, Reconciled, reconcile};

    /// Journal evidence for tests: (dest key, dest version id) → source version id.
    #[derive(Debug, Default, Clone)]
    struct Journal(HashMap<(String, String), String>);

    impl Evidence for Journal {
        fn copied_from(&self, dest_key: &str, dest_version_id: &str) -> Option<&str> {
            self.0
                .get(&(dest_key.to_owned(), dest_version_id.to_owned()))
                .map(String::as_str)
        }
    }

    fn journal(entries: &[(&str, &str)]) -> Journal {
        Journal(
            entries
                .iter()
                .map(|(d, s)| (("k".to_owned(), d.to_string()), s.to_string()))
                .collect(),
        )
    }

    fn ts(t: i64) -> Timestamp {
        Timestamp::from_second(t).unwrap()
    }

    /// A key's diff from histories given oldest first.
    fn diff(source: &[VersionRecord], dest: &[VersionRecord]) -> KeyDiff {
        let newest_first = |v: &[VersionRecord]| {
            let mut v: Vec<VersionRecord> = v.iter().rev().cloned().collect();
            if let Some(first) = v.first_mut() {
                first.is_latest = true;
            }
            v
        };
        KeyDiff {
            source_key: "k".into(),
            dest_key: "k".into(),
            source: newest_first(source),
            dest: newest_first(dest),
        }
    }

    fn v(id: &str, t: i64, content: u8) -> VersionRecord {
        rec("k", id, t, content)
    }

    fn d(id: &str, t: i64) -> VersionRecord {
        dm("k", id, t)
    }

    fn with(mut r: VersionRecord, f: impl FnOnce(&mut VersionRecord)) -> VersionRecord {
        f(&mut r);
        r
    }

    fn latest() -> PlanConfig {
        PlanConfig::default()
    }

    fn all_versions() -> PlanConfig {
        PlanConfig {
            mode: Mode::AllVersions,
            ..PlanConfig::default()
        }
    }

    /// (action, source version id, dest version id, reason) of each row.
    fn brief(rows: &[PlannedAction]) -> Vec<(ActionKind, String, String, String)> {
        rows.iter()
            .map(|r| {
                (
                    r.action,
                    r.source_version_id.clone(),
                    r.dest_version_id.clone(),
                    r.reason.clone(),
                )
            })
            .collect()
    }

    struct Case {
        name: &'static str,
        source: Vec<VersionRecord>,
        dest: Vec<VersionRecord>,
        cfg: PlanConfig,
        journal: Journal,
        /// (action, source version id, dest version id, reason)
        want: Vec<(ActionKind, &'static str, &'static str, &'static str)>,
    }

    fn case(
        name: &'static str,
        source: Vec<VersionRecord>,
        dest: Vec<VersionRecord>,
        cfg: PlanConfig,
        want: Vec<(ActionKind, &'static str, &'static str, &'static str)>,
    ) -> Case {
        Case {
            name,
            source,
            dest,
            cfg,
            journal: Journal::default(),
            want,
        }
    }

    fn check(cases: Vec<Case>) {
        for c in cases {
            let rows = plan_key(&diff(&c.source, &c.dest), &c.cfg, &c.journal);
            let want: Vec<_> = c
                .want
                .iter()
                .map(|(a, s, d, r)| (*a, s.to_string(), d.to_string(), r.to_string()))
                .collect();
            assert_eq!(brief(&rows), want, "case {}", c.name);
            for row in &rows {
                assert_eq!((row.key.as_str(), row.dest_key.as_str()), ("k", "k"));
            }
        }
    }

    use ActionKind::{Archived, Conflict, Copy, DeleteMarker, MultipartCopy, Skip};

    const NEWER: &str = "primary version is newer and differs";
    const NEWER_OVERWRITTEN: &str = "primary version is newer and differs; overwritten (--overwrite-newer)";

    #[test]
    fn latest_object_targets() {
        let overwrite = PlanConfig {
            overwrite_newer: true,
            ..latest()
        };
        // Same size as content 0, another ETag: an SSE-KMS copy.
        let kms_copy = with(v("d1", 9, 0), |r| r.etag = Some("kms".into()));
        let mut by_evidence = case(
            "identical by journal evidence",
            vec![v("s1", 1, 0)],
            vec![kms_copy.clone()],
            latest(),
            vec![(Skip, "s1", "d1", IDENTICAL)],
        );
        by_evidence.journal = journal(&[("d1", "s1")]);
        let mut stale_copy = case(
            "a restored copy of an older version is not newer data",
            vec![v("s1", 1, 0), v("s2", 5, 1)],
            vec![v("d1", 9, 0)],
            latest(),
            vec![(Copy, "s2", "d1", "primary's current version differs")],
        );
        stale_copy.journal = journal(&[("d1", "s1")]);
        check(vec![
            case(
                "identical by version id",
                vec![v("s1", 1, 0)],
                vec![with(v("s1", 1, 0), |r| r.etag = Some("other".into()))],
                latest(),
                vec![(Skip, "s1", "s1", IDENTICAL)],
            ),
            case(
                "identical by size and etag, although the copy is newer",
                vec![v("s1", 1, 0)],
                vec![v("d1", 9, 0)],
                latest(),
                vec![(Skip, "s1", "d1", IDENTICAL)],
            ),
            by_evidence,
            case(
                "without evidence a kms copy is newer and differs",
                vec![v("s1", 1, 0)],
                vec![kms_copy],
                latest(),
                vec![(Conflict, "s1", "d1", NEWER)],
            ),
            case(
                "missing in primary",
                vec![v("s1", 1, 0)],
                vec![],
                latest(),
                vec![(Copy, "s1", "", "missing in primary")],
            ),
            case(
                "older primary version that differs",
                vec![v("s1", 1, 0), v("s2", 5, 1)],
                vec![v("s1", 1, 0)],
                latest(),
                vec![(Copy, "s2", "s1", "primary's current version differs")],
            ),
            case(
                "newer primary version that differs",
                vec![v("s1", 1, 0)],
                vec![v("d1", 3, 1)],
                latest(),
                vec![(Conflict, "s1", "d1", NEWER)],
            ),
            case(
                "newer primary version, --overwrite-newer",
                vec![v("s1", 1, 0)],
                vec![v("d1", 3, 1)],
                overwrite,
                vec![(Copy, "s1", "d1", NEWER_OVERWRITTEN)],
            ),
            case(
                "newer primary delete marker",
                vec![v("s1", 1, 0)],
                vec![v("s1", 1, 0), d("d2", 3)],
                latest(),
                vec![(
                    Conflict,
                    "s1",
                    "d2",
                    "primary delete marker is newer than the replica version",
                )],
            ),
            case(
                "older primary delete marker",
                vec![v("s1", 1, 0), v("s2", 5, 1)],
                vec![v("s1", 1, 0), d("d2", 3)],
                latest(),
                vec![(Copy, "s2", "d2", "primary's current version is a delete marker")],
            ),
            stale_copy,
        ]);
    }

    /// Rules towards bucket `replica`: `logs/` replicates delete markers, `k` (the test
    /// key) does not, and a tag-filtered rule covers `tagged/` objects.
    fn rules_for_deletes() -> Arc<ReplicaRules> {
        use crate::rules::{Destination, Filter, ReplicationConfig, Rule, RuleStatus};
        let rule = |id: &str, priority: i32, filter: Filter, dm: bool| Rule {
            id: Some(id.to_owned()),
            priority: Some(priority),
            status: RuleStatus::Enabled,
            filter,
            legacy_prefix: None,
            destination: Destination {
                bucket_arn: "arn:aws:s3:::replica".to_owned(),
                account: None,
                storage_class: None,
                owner_override: false,
                replica_kms_key_id: None,
            },
            delete_marker_replication: dm,
            replicate_sse_kms: false,
        };
        Arc::new(ReplicaRules::new(
            ReplicationConfig {
                role: None,
                rules: vec![
                    rule("keys", 1, Filter::Prefix("k".into()), false),
                    rule("logs", 2, Filter::Prefix("logs/".into()), true),
                    rule("tagged", 3, Filter::Tag("keep".into(), "yes".into()), false),
                ],
            },
            "replica",
        ))
    }

    #[test]
    fn unreplicated_primary_deletes_name_their_rule() {
        let with_rules = |cfg: PlanConfig| PlanConfig {
            rules: Some(rules_for_deletes()),
            ..cfg
        };
        let overwrite = PlanConfig {
            overwrite_newer: true,
            ..latest()
        };
        let reason = "deleted in the primary; rule keys does not replicate delete markers";
        let overwritten =
            "deleted in the primary; rule keys does not replicate delete markers; overwritten (--overwrite-newer)";
        let history_overwritten = "missing from primary's history; deleted in the primary; rule keys does not replicate delete markers; overwritten (--overwrite-newer)";
        check(vec![
            case(
                "latest: the rule is named",
                vec![v("s1", 1, 0)],
                vec![v("s1", 1, 0), d("d2", 3)],
                with_rules(latest()),
                vec![(Conflict, "s1", "d2", reason)],
            ),
            case(
                "latest: only --overwrite-newer brings it back",
                vec![v("s1", 1, 0)],
                vec![v("s1", 1, 0), d("d2", 3)],
                with_rules(overwrite.clone()),
                vec![(Copy, "s1", "d2", overwritten)],
            ),
            case(
                "all-versions: the rule is named",
                vec![v("s1", 1, 0), v("s2", 2, 1)],
                vec![v("s1", 1, 0), d("d2", 3)],
                with_rules(all_versions()),
                vec![(Conflict, "s2", "d2", reason)],
            ),
            case(
                "all-versions under --overwrite-newer",
                vec![v("s1", 1, 0), v("s2", 2, 1)],
                vec![v("s1", 1, 0), d("d2", 3)],
                with_rules(PlanConfig {
                    overwrite_newer: true,
                    ..all_versions()
                }),
                vec![(Skip, "s1", "s1", "identical"), (Copy, "s2", "", history_overwritten)],
            ),
            case(
                "an older primary delete marker is no conflict",
                vec![v("s1", 1, 0), v("s2", 5, 1)],
                vec![v("s1", 1, 0), d("d2", 3)],
                with_rules(latest()),
                vec![(Copy, "s2", "d2", "primary's current version is a delete marker")],
            ),
        ]);

        // The summary counts keys, once each, kept or undone.
        let mut summary = PlanSummary::new(None);
        for cfg in [with_rules(latest()), with_rules(overwrite)] {
            for row in plan_key(&diff(&[v("s1", 1, 0)], &[v("s1", 1, 0), d("d2", 3)]), &cfg, &NoEvidence) {
                summary.add(&row);
            }
        }
        assert_eq!(
            (summary.unreplicated_deletes_kept, summary.unreplicated_deletes_undone),
            (1, 0),
            "the same key twice in a row counts once"
        );
        let mut summary = PlanSummary::new(None);
        let rows = plan_key(
            &diff(&[v("s1", 1, 0), v("s2", 2, 1)], &[v("s1", 1, 0), d("d2", 3)]),
            &with_rules(PlanConfig {
                overwrite_newer: true,
                ..all_versions()
            }),
            &NoEvidence,
        );
        rows.iter().for_each(|r| summary.add(r));
        assert_eq!(
            (summary.unreplicated_deletes_kept, summary.unreplicated_deletes_undone),
            (0, 1)
        );
    }

    #[test]
    fn which_rule_leaves_a_delete_marker_unreplicated() {
        let rules = rules_for_deletes();
        let name = |key: &str| rules.unreplicated_deletes(key).and_then(|r| r.id.clone());
        // (key, rule named)
        let cases = [
            ("k", Some("keys")),
            ("logs/a", None),
            // Only the tag-filtered rule covers it: delete markers never replicate there.
            ("tagged/x", Some("tagged")),
        ];
        for (key, want) in cases {
            assert_eq!(name(key).as_deref(), want, "{key}");
        }
        let none_covers = ReplicaRules::new(
            crate::rules::ReplicationConfig {
                role: None,
                rules: rules.config.rules[1..2].to_vec(),
            },
            "replica",
        );
        assert!(
            none_covers.unreplicated_deletes("k").is_none(),
            "unprotected, not a delete finding"
        );
    }

    #[test]
    fn excluded_keys_are_skipped_row_by_row() {
        let exclude = |keys: &[&str]| PlanConfig {
            exclude: Some(Arc::new(Exclusions {
                keys: keys.iter().map(|k| (*k).to_owned()).collect(),
                origin: "audit.csv".into(),
            })),
            ..all_versions()
        };
        let why = "excluded: deleted in the primary (delete-not-replicated in audit.csv)";
        check(vec![
            case(
                "every row of an excluded key is a skip",
                vec![v("s1", 1, 0), v("s2", 2, 1)],
                vec![],
                exclude(&["k"]),
                vec![(Skip, "s1", "", why), (Skip, "s2", "", why)],
            ),
            case(
                "other keys are planned as ever",
                vec![v("s1", 1, 0)],
                vec![],
                exclude(&["other", "k/"]),
                vec![(Copy, "s1", "", "missing from primary's history")],
            ),
        ]);
        let mut summary = PlanSummary::new(None);
        for row in plan_key(&diff(&[v("s1", 1, 0)], &[]), &exclude(&["k"]), &NoEvidence) {
            summary.add(&row);
        }
        assert_eq!((summary.excluded, summary.totals(Copy).objects), (1, 0));
    }

    #[test]
    fn latest_null_version_ids() {
        check(vec![
            case(
                "two null ids with other content are not the same version",
                vec![v("null", 1, 0)],
                vec![v("null", 3, 1)],
                latest(),
                vec![(Conflict, "null", "null", NEWER)],
            ),
            case(
                "an older null primary version is replaced",
                vec![v("null", 5, 0)],
                vec![v("null", 3, 1)],
                latest(),
                vec![(Copy, "null", "null", "primary's current version differs")],
            ),
            case(
                "two null ids with the same size and etag are the same",
                vec![v("null", 1, 0)],
                vec![v("null", 3, 0)],
                latest(),
                vec![(Skip, "null", "null", IDENTICAL)],
            ),
        ]);
    }

    #[test]
    fn latest_absent_targets() {
        let no_deletes = PlanConfig {
            no_deletes: true,
            ..latest()
        };
        let overwrite = PlanConfig {
            overwrite_newer: true,
            ..latest()
        };
        check(vec![
            case(
                "delete-marker-only key, primary empty",
                vec![d("s1", 1)],
                vec![],
                latest(),
                vec![(Skip, "", "", ALREADY_ABSENT)],
            ),
            case(
                "deleted on both sides",
                vec![v("s1", 1, 0), d("s2", 2)],
                vec![v("s1", 1, 0), d("d2", 3)],
                latest(),
                vec![(Skip, "", "d2", ALREADY_ABSENT)],
            ),
            case(
                "deleted in replica",
                vec![v("s1", 1, 0), d("s2", 2)],
                vec![v("s1", 1, 0)],
                latest(),
                vec![(DeleteMarker, "", "s1", "deleted in replica")],
            ),
            case(
                "deleted in replica, --no-deletes",
                vec![v("s1", 1, 0), d("s2", 2)],
                vec![v("s1", 1, 0)],
                no_deletes,
                vec![(Skip, "", "s1", DELETES_DISABLED)],
            ),
            case(
                "primary version newer than the replica's delete marker",
                vec![v("s1", 1, 0), d("s2", 2)],
                vec![v("s1", 1, 0), v("d3", 3, 1)],
                latest(),
                vec![(
                    Conflict,
                    "",
                    "d3",
                    "primary version is newer than the replica's delete marker",
                )],
            ),
            case(
                "primary version newer than the delete marker, --overwrite-newer",
                vec![v("s1", 1, 0), d("s2", 2)],
                vec![v("d3", 3, 1)],
                overwrite,
                vec![(
                    DeleteMarker,
                    "",
                    "d3",
                    "primary version is newer than the replica's delete marker; overwritten (--overwrite-newer)",
                )],
            ),
        ]);
        // The row for a planned delete marker carries no size, ETag or class.
        let rows = plan_key(
            &diff(&[v("s1", 1, 0), d("s2", 2)], &[v("s1", 1, 0)]),
            &latest(),
            &NoEvidence,
        );
        let row = &rows[0];
        assert!(row.is_delete_marker);
        assert_eq!((row.size_bytes, &row.etag, &row.storage_class), (None, &None, &None));
        assert_eq!(row.last_modified, Some(ts(2)));
    }

    #[test]
    fn latest_as_of() {
        let as_of = |t: i64| PlanConfig {
            as_of: Some(ts(t)),
            ..latest()
        };
        let overwrite = PlanConfig {
            overwrite_newer: true,
            ..as_of(5)
        };
        check(vec![
            case(
                "before the key existed, primary empty",
                vec![v("s1", 10, 0)],
                vec![],
                as_of(5),
                vec![(Skip, "", "", ALREADY_ABSENT)],
            ),
            case(
                "before the key existed, primary has the later replicated version",
                vec![v("s1", 10, 0)],
                vec![v("s1", 10, 0)],
                as_of(5),
                vec![(
                    Conflict,
                    "",
                    "s1",
                    "primary has a version and the replica had none at --as-of",
                )],
            ),
            case(
                "before the key existed, primary has a version the replica never had",
                vec![v("s1", 10, 0)],
                vec![v("d1", 2, 1)],
                as_of(5),
                vec![(
                    Conflict,
                    "",
                    "d1",
                    "primary has a version and the replica had none at --as-of",
                )],
            ),
            case(
                "the version current at --as-of is already current",
                vec![v("s1", 2, 0), v("s2", 10, 1)],
                vec![v("s1", 2, 0)],
                as_of(5),
                vec![(Skip, "s1", "s1", IDENTICAL)],
            ),
            case(
                "rolling back over a later replicated version needs --overwrite-newer",
                vec![v("s1", 2, 0), v("s2", 10, 1)],
                vec![v("s1", 2, 0), v("s2", 10, 1)],
                as_of(5),
                vec![(Conflict, "s1", "s2", NEWER)],
            ),
            case(
                "rolling back with --overwrite-newer",
                vec![v("s1", 2, 0), v("s2", 10, 1)],
                vec![v("s1", 2, 0), v("s2", 10, 1)],
                overwrite,
                vec![(Copy, "s1", "s2", NEWER_OVERWRITTEN)],
            ),
            case(
                "deleted at --as-of",
                vec![v("s1", 1, 0), d("s2", 3), v("s3", 10, 1)],
                vec![v("s1", 1, 0)],
                as_of(5),
                vec![(DeleteMarker, "", "s1", "deleted in replica")],
            ),
        ]);
    }

    #[test]
    fn copy_kinds() {
        let threshold = PlanConfig {
            multipart_threshold_bytes: Some(100),
            ..latest()
        };
        let big = with(v("s1", 1, 0), |r| r.size_bytes = MAX_COPY_OBJECT_BYTES + 1);
        let at_limit = with(v("s1", 1, 0), |r| r.size_bytes = MAX_COPY_OBJECT_BYTES);
        check(vec![
            case(
                "archived",
                vec![with(v("s1", 1, 0), |r| r.storage_class = Some("GLACIER".into()))],
                vec![],
                latest(),
                vec![(Archived, "s1", "", "GLACIER: restore from archive first")],
            ),
            case(
                "deep archive, even when the primary is newer with --overwrite-newer",
                vec![with(v("s1", 1, 0), |r| r.storage_class = Some("DEEP_ARCHIVE".into()))],
                vec![v("d1", 3, 1)],
                PlanConfig {
                    overwrite_newer: true,
                    ..latest()
                },
                vec![(Archived, "s1", "d1", "DEEP_ARCHIVE: restore from archive first")],
            ),
            case(
                "multipart by etag",
                vec![with(v("s1", 1, 0), |r| r.etag = Some("abc-3".into()))],
                vec![],
                latest(),
                vec![(MultipartCopy, "s1", "", "missing in primary")],
            ),
            case(
                "multipart above --multipart-threshold",
                vec![v("s1", 1, 1)],
                vec![],
                threshold.clone(),
                vec![(MultipartCopy, "s1", "", "missing in primary")],
            ),
            case(
                "single part at --multipart-threshold",
                vec![v("s1", 1, 0)],
                vec![],
                threshold,
                vec![(Copy, "s1", "", "missing in primary")],
            ),
            case(
                "multipart above 5 GiB",
                vec![big],
                vec![],
                latest(),
                vec![(MultipartCopy, "s1", "", "missing in primary")],
            ),
            case(
                "single part at 5 GiB",
                vec![at_limit],
                vec![],
                latest(),
                vec![(Copy, "s1", "", "missing in primary")],
            ),
        ]);
        // The copy row carries what restore needs: class, checksum, size, ETag, time.
        let src = with(v("s1", 7, 0), |r| {
            r.storage_class = Some("STANDARD_IA".into());
            r.checksum_algorithm = Some("CRC32".into());
        });
        let rows = plan_key(&diff(&[src], &[]), &latest(), &NoEvidence);
        let row = &rows[0];
        assert_eq!(row.storage_class.as_deref(), Some("STANDARD_IA"));
        assert_eq!(row.checksum_algorithm.as_deref(), Some("CRC32"));
        assert_eq!((row.size_bytes, row.etag.as_deref()), (Some(100), Some("e0")));
        assert_eq!(row.last_modified, Some(ts(7)));
        assert!(!row.is_delete_marker);
    }

    #[test]
    fn all_versions_histories() {
        let cfg = all_versions;
        let missing = "missing from primary's history";
        check(vec![
            case(
                "interleaved delete markers",
                vec![v("s1", 1, 0), d("s2", 2), v("s3", 3, 1), d("s4", 4), v("s5", 5, 2)],
                vec![v("s1", 1, 0)],
                cfg(),
                vec![
                    (Skip, "s1", "s1", IDENTICAL),
                    (DeleteMarker, "s2", "", missing),
                    (Copy, "s3", "", missing),
                    (DeleteMarker, "s4", "", missing),
                    (Copy, "s5", "", missing),
                ],
            ),
            case(
                "partial primary history: the first gap and everything after",
                vec![v("s1", 1, 0), v("s2", 2, 1), v("s3", 3, 2)],
                vec![v("s1", 1, 0), v("s3", 3, 2)],
                cfg(),
                vec![
                    (Skip, "s1", "s1", IDENTICAL),
                    (Copy, "s2", "", missing),
                    (Copy, "s3", "", missing),
                ],
            ),
            case(
                "matched by content after an earlier restore",
                vec![v("s1", 1, 0), d("s2", 2), v("s3", 3, 1)],
                vec![v("c1", 10, 0), d("c2", 11), v("c3", 12, 1)],
                cfg(),
                vec![
                    (Skip, "s1", "c1", IDENTICAL),
                    (Skip, "s2", "c2", IDENTICAL),
                    (Skip, "s3", "c3", IDENTICAL),
                ],
            ),
            case(
                "extra primary version newer than the history: one conflict row",
                vec![v("s1", 1, 0), v("s2", 2, 1)],
                vec![v("s1", 1, 0), v("d3", 3, 2)],
                cfg(),
                vec![(Conflict, "s2", "d3", NEWER)],
            ),
            case(
                "extra primary version on top of the whole history",
                vec![v("s1", 1, 0), v("s2", 2, 1)],
                vec![v("s1", 1, 0), v("s2", 2, 1), v("d3", 3, 2)],
                cfg(),
                vec![(Conflict, "s2", "d3", NEWER)],
            ),
            case(
                "extra primary version, --overwrite-newer",
                vec![v("s1", 1, 0), v("s2", 2, 1)],
                vec![v("s1", 1, 0), v("s2", 2, 1), v("d3", 3, 2)],
                PlanConfig {
                    overwrite_newer: true,
                    ..cfg()
                },
                vec![
                    (Skip, "s1", "s1", IDENTICAL),
                    (
                        Copy,
                        "s2",
                        "d3",
                        "primary's current version is not the replica's; primary version is newer and differs; overwritten (--overwrite-newer)",
                    ),
                ],
            ),
            case(
                "a newer primary version that matches an older one by content only",
                vec![v("s1", 1, 0), v("s2", 2, 1)],
                vec![v("d1", 10, 0)],
                cfg(),
                vec![(Conflict, "s2", "d1", NEWER)],
            ),
            Case {
                journal: journal(&[("d1", "s1")]),
                ..case(
                    "a restored copy of an older version is history, not newer data",
                    vec![v("s1", 1, 0), v("s2", 2, 1)],
                    vec![with(v("d1", 10, 0), |r| r.etag = Some("kms".into()))],
                    cfg(),
                    vec![(Skip, "s1", "d1", IDENTICAL), (Copy, "s2", "", missing)],
                )
            },
            case(
                "extra primary version older than the replica's next one",
                vec![v("s1", 1, 0), v("s2", 5, 1)],
                vec![v("s1", 1, 0), v("d3", 3, 2)],
                cfg(),
                vec![(Skip, "s1", "s1", IDENTICAL), (Copy, "s2", "", missing)],
            ),
            case(
                "leading delete markers on an absent key",
                vec![d("s1", 1), d("s2", 2), v("s3", 3, 0)],
                vec![],
                cfg(),
                vec![
                    (Skip, "s1", "", ALREADY_ABSENT),
                    (Skip, "s2", "", ALREADY_ABSENT),
                    (Copy, "s3", "", missing),
                ],
            ),
            case(
                "a delete marker over an older primary version",
                vec![d("s1", 5)],
                vec![v("d1", 3, 0)],
                cfg(),
                vec![(
                    DeleteMarker,
                    "s1",
                    "d1",
                    "primary's current version is not the replica's",
                )],
            ),
            case(
                "--no-deletes",
                vec![v("s1", 1, 0), d("s2", 2), v("s3", 3, 1), d("s4", 4)],
                vec![],
                PlanConfig {
                    no_deletes: true,
                    ..cfg()
                },
                vec![
                    (Copy, "s1", "", missing),
                    (Skip, "s2", "", DELETES_DISABLED),
                    (Copy, "s3", "", missing),
                    (Skip, "s4", "", DELETES_DISABLED),
                ],
            ),
            case(
                "--as-of limits the history",
                vec![v("s1", 1, 0), v("s2", 10, 1)],
                vec![],
                PlanConfig {
                    as_of: Some(ts(5)),
                    ..cfg()
                },
                vec![(Copy, "s1", "", missing), (Skip, "s2", "", "newer than --as-of")],
            ),
            case(
                "an archived version holds back the rest of the history",
                vec![
                    v("s1", 1, 0),
                    with(v("s2", 2, 1), |r| r.storage_class = Some("GLACIER".into())),
                    v("s3", 3, 2),
                ],
                vec![],
                cfg(),
                vec![
                    (Copy, "s1", "", missing),
                    (Archived, "s2", "", "GLACIER: restore from archive first"),
                    (Archived, "s3", "", "waits for archived version \"s2\" (history order)"),
                ],
            ),
            case(
                "two null ids are not the same version",
                vec![v("null", 1, 0)],
                vec![v("null", 0, 1)],
                cfg(),
                vec![(Copy, "null", "", missing)],
            ),
        ]);
    }

    #[test]
    fn prefix_mapping_and_primary_only_keys() {
        let cfg = ReconcileConfig {
            source: "s3://rep/data".parse().unwrap(),
            dest: "s3://pri/restored".parse().unwrap(),
        };
        let source = vec![
            rec("data/a", "s1", 1, 0),
            rec("data/b", "s2", 1, 0),
            rec("database/x", "s3", 1, 0),
        ];
        let dest = vec![
            rec("restored/a", "s1", 1, 0),
            rec("restored/only", "d1", 1, 0),
            rec("restoredx", "d2", 1, 0),
        ];
        let items: Vec<_> = block_on(
            reconcile(
                futures::stream::iter(source.into_iter().map(Ok::<_, crate::reconcile::tests::Broken>)),
                futures::stream::iter(dest.into_iter().map(Ok::<_, crate::reconcile::tests::Broken>)),
                cfg,
            )
            .collect(),
        );
        let mut summary = PlanSummary::new(None);
        let mut rows = Vec::new();
        for item in items {
            match item.unwrap() {
                Reconciled::Key(diff) => rows.extend(plan_key(&diff, &latest(), &NoEvidence)),
                Reconciled::PrimaryOnly { .. } => summary.add_primary_only(),
            }
        }
        rows.iter().for_each(|r| summary.add(r));
        let got: Vec<_> = rows
            .iter()
            .map(|r| (r.key.as_str(), r.dest_key.as_str(), r.action))
            .collect();
        assert_eq!(
            got,
            vec![("data/a", "restored/a", Skip), ("data/b", "restored/b", Copy)]
        );
        assert_eq!(summary.primary_only, 1);
        assert_eq!(summary.totals(Copy), KindTotals { objects: 1, bytes: 100 });
        assert_eq!(summary.totals(Skip).objects, 1);
        assert_eq!(summary.requests, 1);
    }

    #[test]
    fn summary_counts_requests_and_conflicts() {
        let action = |kind: ActionKind, size: Option<u64>, etag: Option<&str>| PlannedAction {
            key: format!("{kind}"),
            action: kind,
            source_version_id: "s".into(),
            dest_key: "k".into(),
            dest_version_id: String::new(),
            size_bytes: size,
            etag: etag.map(str::to_owned),
            last_modified: None,
            reason: String::new(),
            storage_class: None,
            checksum_algorithm: None,
            is_delete_marker: size.is_none(),
        };
        let gib = 1024 * 1024 * 1024;
        let cases = [
            (action(Copy, Some(5), Some("e")), None, 1),
            (action(DeleteMarker, None, None), None, 1),
            (action(Skip, Some(5), Some("e")), None, 0),
            (action(Archived, Some(5), Some("e")), None, 0),
            (action(Conflict, Some(5), Some("e")), None, 0),
            (action(MultipartCopy, Some(6 * gib), Some("abc-4")), None, 3 + 2 * 4),
            // 6 GiB single part in 64 MiB parts: 96 parts.
            (action(MultipartCopy, Some(6 * gib), Some("e")), None, 3 + 2 * 96),
            (action(MultipartCopy, Some(6 * gib), Some("e")), Some(gib), 3 + 2 * 6),
            // 5 TB needs parts of at least size / 10,000.
            (
                action(MultipartCopy, Some(5_000_000_000_000), None),
                None,
                3 + 2 * 10_000,
            ),
            (action(MultipartCopy, Some(0), None), None, 3 + 2),
        ];
        for (a, part, want) in &cases {
            assert_eq!(restore_requests(a, *part), *want, "{a:?} {part:?}");
        }
        let mut summary = PlanSummary::new(None);
        for _ in 0..CONFLICT_KEYS_KEPT + 5 {
            summary.add(&action(Conflict, Some(5), Some("e")));
        }
        summary.add(&action(Copy, Some(7), Some("e")));
        summary.add(&action(DeleteMarker, None, None));
        assert_eq!(summary.conflicts, CONFLICT_KEYS_KEPT as u64 + 5);
        assert_eq!(summary.conflict_keys.len(), CONFLICT_KEYS_KEPT);
        assert_eq!(summary.totals(Conflict).bytes, 5 * (CONFLICT_KEYS_KEPT as u64 + 5));
        assert_eq!(summary.totals(DeleteMarker), KindTotals { objects: 1, bytes: 0 });
        assert_eq!(summary.requests, 2);
    }

    #[test]
    fn words_round_trip() {
        for kind in ActionKind::ALL {
            assert_eq!(kind.as_str().parse::<ActionKind>(), Ok(kind));
        }
        for mode in [Mode::Latest, Mode::AllVersions] {
            assert_eq!(mode.to_string().parse::<Mode>(), Ok(mode));
        }
        assert_eq!(
            "Copy".parse::<ActionKind>().unwrap_err().to_string(),
            "unknown action \"Copy\" (expected one of copy, multipart-copy, delete-marker, skip, conflict, archived, pending)"
        );
    }

    // ---- plan file ----

    fn src_loc() -> Location {
        "s3://rep/data".parse().unwrap()
    }

    fn dest_loc() -> Location {
        "s3://pri/restored".parse().unwrap()
    }

    fn write_plan(actions: &[PlannedAction]) -> String {
        let mut w = PlanWriter::new(Vec::new(), "plan.csv", &src_loc(), &dest_loc()).unwrap();
        for a in actions {
            w.write(a).unwrap();
        }
        String::from_utf8(w.finish().unwrap()).unwrap()
    }

    fn read(text: &str) -> Result<Vec<PlannedAction>, PlanFileError> {
        read_plan(text.as_bytes(), "plan.csv", &src_loc(), &dest_loc())
    }

    fn sample() -> PlannedAction {
        PlannedAction {
            key: "data/a,b".into(),
            action: Copy,
            source_version_id: "v1".into(),
            dest_key: "restored/a,b".into(),
            dest_version_id: String::new(),
            size_bytes: Some(42),
            etag: Some("abc-2".into()),
            last_modified: Some(ts(1_700_000_000)),
            reason: "missing in primary".into(),
            storage_class: Some("STANDARD".into()),
            checksum_algorithm: None,
            is_delete_marker: false,
        }
    }

    #[test]
    fn writes_the_documented_columns() {
        let marker = PlannedAction {
            action: DeleteMarker,
            size_bytes: None,
            etag: None,
            storage_class: None,
            source_version_id: String::new(),
            is_delete_marker: true,
            ..sample()
        };
        let text = write_plan(&[sample(), marker]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            vec![
                "key,action,source_version_id,dest_key,dest_version_id,size,etag,last_modified,reason,source,dest,storage_class,checksum_algorithm,is_delete_marker",
                "\"data/a,b\",copy,v1,\"restored/a,b\",,42,abc-2,2023-11-14T22:13:20Z,missing in primary,s3://rep/data,s3://pri/restored,STANDARD,,false",
                "\"data/a,b\",delete-marker,,\"restored/a,b\",,,,2023-11-14T22:13:20Z,missing in primary,s3://rep/data,s3://pri/restored,,,true",
            ]
        );
        // An empty plan still has its header.
        assert_eq!(write_plan(&[]).lines().count(), 1);
    }

    #[test]
    fn reads_minimum_columns_in_any_order_with_extra_columns() {
        let text = "\u{feff}note,dest,source,reason,last_modified,etag,size,dest_version_id,dest_key,source_version_id,action,key\n\
                    hi,s3://pri/restored,S3://rep/data,r,,,,,restored/x,,delete-marker,data/x\n\
                    ,s3://pri/restored,s3://rep/data,r,2024-01-01T00:00:00Z,e,3,,restored/y,v,skip,data/y\n";
        let rows = read(text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].action, DeleteMarker);
        assert!(rows[0].is_delete_marker);
        assert_eq!(rows[1].size_bytes, Some(3));
        assert!(!rows[1].is_delete_marker);
        assert_eq!(rows[1].last_modified, Some("2024-01-01T00:00:00Z".parse().unwrap()));
        assert_eq!(rows[1].storage_class, None);
    }

    #[test]
    fn rejects_bad_plans_naming_file_and_line() {
        let header = "key,action,source_version_id,dest_key,dest_version_id,size,etag,last_modified,reason,source,dest";
        let good = "data/a,copy,v1,restored/a,,1,e,,r,s3://rep/data,s3://pri/restored";
        let cases: Vec<(String, &str)> = vec![
            (
                "key,action,source_version_id,dest_key,size,etag,last_modified,reason,source,dest\n".into(),
                "plan.csv: line 1: plan header lacks the column \"dest_version_id\"",
            ),
            (String::new(), "plan.csv: line 1: plan header lacks the column \"key\""),
            (
                format!("{header}\n{good}\ndata/b,copy,v1,restored/b,,many,e,,r,s3://rep/data,s3://pri/restored\n"),
                "plan.csv: line 3: column size: ",
            ),
            (
                format!("{header}\n{good}\n\"data/\nb\",Copy,v1,restored/b,,1,e,,r,s3://rep/data,s3://pri/restored\n"),
                "plan.csv: line 3: unknown action \"Copy\"",
            ),
            (
                format!(
                    "{header}\n{good}\n{good}\n\"x\ny\",copy,v1,restored/b,,1,e,,r,s3://rep/other,s3://pri/restored\n"
                ),
                "plan.csv: line 4: source is \"s3://rep/other\", but this run's source is \"s3://rep/data\"",
            ),
            (
                format!("{header}\ndata/b,copy,v1,restored/b,,1,e,,r,s3://rep/data,s3://pri\n"),
                "plan.csv: line 2: dest is \"s3://pri\", but this run's dest is \"s3://pri/restored\"",
            ),
            (
                format!("{header}\n{good}\ndata/b,copy,v1\n"),
                "plan.csv: line 3: row has 3 fields, but the header has 11",
            ),
            (
                format!("{header}\ndata/b,copy,v1,restored/b,,1,e,yesterday,r,s3://rep/data,s3://pri/restored\n"),
                "plan.csv: line 2: column last_modified: \"yesterday\" is not an RFC 3339 time",
            ),
            (
                format!("{header}\ndata/b,copy,,restored/b,,1,e,,r,s3://rep/data,s3://pri/restored\n"),
                "plan.csv: line 2: copy of \"data/b\" needs a source_version_id",
            ),
            (
                format!(
                    "{header},is_delete_marker\ndata/b,skip,v,restored/b,,1,e,,r,s3://rep/data,s3://pri/restored,maybe\n"
                ),
                "plan.csv: line 2: column is_delete_marker: ",
            ),
        ];
        for (text, want) in cases {
            let err = read(&text).expect_err(want);
            let msg = err.to_string();
            assert!(msg.starts_with(want), "got {msg:?}, want {want:?}");
        }
        // The reader stops at the first error.
        let text = format!("{header}\nx,nope,,x,,,,,r,s3://rep/data,s3://pri/restored\n{good}\n");
        let mut reader = PlanReader::new(text.as_bytes(), "p", &src_loc(), &dest_loc()).unwrap();
        assert!(reader.next().unwrap().is_err());
        assert!(reader.next().is_none());
    }

    fn hostile_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just(",".to_owned()),
            Just("\"".to_owned()),
            Just("\n".to_owned()),
            Just("\r\n".to_owned()),
            Just("\r".to_owned()),
            Just("\t".to_owned()),
            Just("=cmd|' /C calc'!A0".to_owned()),
            Just("+1".to_owned()),
            Just(" ".to_owned()),
            Just("#".to_owned()),
            Just("\u{feff}".to_owned()),
            Just("é😀".to_owned()),
            Just("/".to_owned()),
            any::<String>(),
        ];
        prop::collection::vec(piece, 1..6)
            .prop_map(|v| v.concat())
            .prop_filter("S3 keys are never empty", |s| !s.is_empty())
    }

    fn planned_action() -> impl Strategy<Value = PlannedAction> {
        (
            hostile_text(),
            hostile_text(),
            prop::sample::select(ActionKind::ALL.to_vec()),
            any::<String>(),
            any::<String>(),
            prop::option::of(any::<u64>()),
            prop::option::of("[0-9a-f]{1,32}(-[0-9]{1,4})?"),
            prop::option::of((-377_705_023_200i64..253_402_207_199, 0i32..1_000_000_000)),
            any::<String>(),
            prop::option::of("[A-Z_]{1,12}"),
            prop::option::of("[A-Z0-9]{1,10}"),
            any::<bool>(),
        )
            .prop_map(
                |(key, dest_key, action, svid, dvid, size, etag, time, reason, class, checksum, dm)| {
                    let copy = matches!(action, Copy | MultipartCopy);
                    PlannedAction {
                        key,
                        action,
                        source_version_id: if copy && svid.is_empty() { "v".into() } else { svid },
                        dest_key,
                        dest_version_id: dvid,
                        size_bytes: if copy { Some(size.unwrap_or(0)) } else { size },
                        etag: etag.filter(|e: &String| !e.is_empty()),
                        last_modified: time.map(|(s, n)| Timestamp::new(s, n).unwrap()),
                        reason,
                        storage_class: class,
                        checksum_algorithm: checksum,
                        is_delete_marker: dm && !copy,
                    }
                },
            )
    }

    proptest! {
        /// Every action survives a trip through plan.csv byte for byte.
        #[test]
        fn plan_csv_round_trips(actions in prop::collection::vec(planned_action(), 0..8)) {
            let text = write_plan(&actions);
            let back = read(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, actions);
        }

        /// The writer's field-by-field rows are the bytes serde writes for
        /// `PlanRow::from_action`, times in whole seconds (the short path) included.
        #[test]
        fn plan_writer_writes_what_serde_writes(
            mut actions in prop::collection::vec(planned_action(), 0..8),
            whole in any::<bool>(),
        ) {
            if whole {
                for a in &mut actions {
                    a.last_modified = a.last_modified.map(|t| Timestamp::from_second(t.as_second()).unwrap());
                }
            }
            let mut serde = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
            let header = PLAN_MIN_COLUMNS
                .iter()
                .chain(&["storage_class", "checksum_algorithm", "is_delete_marker"]);
            serde.write_record(header).unwrap();
            for a in &actions {
                serde.serialize(PlanRow::from_action(a, &src_loc(), &dest_loc())).unwrap();
            }
            let want = String::from_utf8(serde.into_inner().unwrap()).unwrap();
            prop_assert_eq!(write_plan(&actions), want);
        }
    }

    // ---- the planner against a model of restore ----

    type Bucket = BTreeMap<String, Vec<VersionRecord>>;

    #[derive(Debug, Clone)]
    struct Op {
        dm: bool,
        content: u8,
        gap: i64,
        archived: bool,
    }

    fn op() -> impl Strategy<Value = Op> {
        (prop::bool::weighted(0.3), 0u8..4, 1i64..4, prop::bool::weighted(0.06)).prop_map(
            |(dm, content, gap, archived)| Op {
                dm,
                content,
                gap,
                archived,
            },
        )
    }

    #[derive(Debug, Clone)]
    struct KeyHistory {
        source: Vec<Op>,
        source_start: i64,
        source_null: bool,
        /// How many of the source's oldest entries replicated to the dest, and which of
        /// those the dest still has.
        replicated: usize,
        kept: Vec<bool>,
        dest_own: Vec<Op>,
        dest_start: i64,
        dest_null: bool,
    }

    fn key_history() -> impl Strategy<Value = KeyHistory> {
        (
            prop::collection::vec(op(), 0..5),
            0i64..10,
            prop::bool::weighted(0.2),
            0usize..6,
            prop::collection::vec(prop::bool::weighted(0.8), 6),
            prop::collection::vec(op(), 0..3),
            0i64..25,
            prop::bool::weighted(0.2),
        )
            .prop_map(
                |(source, source_start, source_null, replicated, kept, dest_own, dest_start, dest_null)| KeyHistory {
                    source,
                    source_start,
                    source_null,
                    replicated,
                    kept,
                    dest_own,
                    dest_start,
                    dest_null,
                },
            )
    }

    fn record(key: &str, id: String, t: i64, o: &Op) -> VersionRecord {
        if o.dm {
            return dm(key, &id, t);
        }
        let mut r = rec(key, &id, t, o.content);
        if o.content == 3 {
            r.etag = Some("m3-2".into());
        }
        if o.archived {
            r.storage_class = Some("GLACIER".into());
        }
        r
    }

    fn newest_first(mut oldest_first: Vec<VersionRecord>) -> Vec<VersionRecord> {
        oldest_first.reverse();
        if let Some(r) = oldest_first.first_mut() {
            r.is_latest = true;
        }
        oldest_first
    }

    fn build(keys: &BTreeMap<&'static str, KeyHistory>) -> (Bucket, Bucket) {
        let (mut source, mut dest) = (Bucket::new(), Bucket::new());
        for (key, h) in keys {
            let mut t = h.source_start;
            let src: Vec<VersionRecord> = h
                .source
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    t += o.gap;
                    let id = if i == 0 && h.source_null {
                        "null".into()
                    } else {
                        format!("s{i}")
                    };
                    record(key, id, t, o)
                })
                .collect();
            let mut dst: Vec<VersionRecord> = src
                .iter()
                .take(h.replicated)
                .zip(&h.kept)
                .filter(|(_, keep)| **keep)
                .map(|(r, _)| r.clone())
                .collect();
            let mut t = dst.last().map_or(0, |r| r.last_modified.as_second()).max(h.dest_start);
            let own_first = dst.is_empty();
            for (i, o) in h.dest_own.iter().enumerate() {
                t += o.gap;
                let id = if i == 0 && own_first && h.dest_null {
                    "null".into()
                } else {
                    format!("d{i}")
                };
                dst.push(record(
                    key,
                    id,
                    t,
                    &Op {
                        archived: false,
                        ..o.clone()
                    },
                ));
            }
            if !src.is_empty() {
                source.insert(key.to_string(), newest_first(src));
            }
            if !dst.is_empty() {
                dest.insert(key.to_string(), newest_first(dst));
            }
        }
        (source, dest)
    }

    fn rep_cfg() -> ReconcileConfig {
        ReconcileConfig {
            source: "s3://rep".parse().unwrap(),
            dest: "s3://pri".parse().unwrap(),
        }
    }

    /// Reconciles and plans two buckets: rows per source key, and the primary-only count.
    fn plan_buckets(
        source: &Bucket,
        dest: &Bucket,
        cfg: &PlanConfig,
        evidence: &dyn Evidence,
    ) -> (BTreeMap<String, Vec<PlannedAction>>, u64) {
        let flat = |b: &Bucket| {
            b.values()
                .flatten()
                .cloned()
                .map(Ok::<_, crate::reconcile::tests::Broken>)
                .collect::<Vec<_>>()
        };
        let items: Vec<_> = block_on(
            reconcile(
                futures::stream::iter(flat(source)),
                futures::stream::iter(flat(dest)),
                rep_cfg(),
            )
            .collect(),
        );
        let mut rows = BTreeMap::new();
        let mut primary_only = 0;
        for item in items {
            match item.unwrap() {
                Reconciled::Key(diff) => {
                    rows.insert(diff.source_key.clone(), plan_key(&diff, cfg, evidence));
                }
                Reconciled::PrimaryOnly { .. } => primary_only += 1,
            }
        }
        (rows, primary_only)
    }

    /// Applies the writes of a plan the way restore does: a copy is a new version with a
    /// new id and a later time (a split single-part source gets a new ETag); a delete
    /// marker is a new delete marker. The journal records what was copied from where.
    fn apply(dest: &mut Bucket, plan: &BTreeMap<String, Vec<PlannedAction>>, clock: &mut i64, journal: &mut Journal) {
        for a in plan.values().flatten() {
            if !a.action.writes() {
                continue;
            }
            *clock += 1;
            let id = format!("c{clock}");
            let mut r = if a.action == DeleteMarker {
                dm(&a.dest_key, &id, *clock)
            } else {
                let mut r = rec(&a.dest_key, &id, *clock, 0);
                r.size_bytes = a.size_bytes.unwrap();
                r.etag = a.etag.clone();
                r.storage_class = a.storage_class.clone();
                let multipart = a.etag.as_deref().is_some_and(|e| e.contains('-'));
                if a.action == MultipartCopy && !multipart {
                    r.etag = Some(format!("split{clock}-2"));
                }
                r
            };
            r.is_latest = true;
            let versions = dest.entry(a.dest_key.clone()).or_default();
            if let Some(prev) = versions.first_mut() {
                prev.is_latest = false;
            }
            versions.insert(0, r);
            if !a.source_version_id.is_empty() {
                journal.0.insert((a.dest_key.clone(), id), a.source_version_id.clone());
            }
        }
    }

    /// The content a dest version holds: its own size and ETag, or those of the source
    /// version the journal says it was copied from.
    fn content(r: &VersionRecord, source: &[VersionRecord], journal: &Journal) -> Option<(u64, Option<String>)> {
        if r.is_delete_marker {
            return None;
        }
        let original = journal
            .copied_from(&r.key, &r.version_id)
            .and_then(|id| source.iter().find(|s| s.version_id == id));
        let r = original.unwrap_or(r);
        Some((r.size_bytes, r.etag.clone()))
    }

    fn plan_config() -> impl Strategy<Value = PlanConfig> {
        (
            any::<bool>(),
            prop::option::of(0i64..25),
            prop::bool::weighted(0.25),
            prop::bool::weighted(0.25),
            prop::option::of(Just(101u64)),
            // Rules change reasons only, never what is written.
            prop::bool::weighted(0.5),
        )
            .prop_map(
                |(all, as_of, no_deletes, overwrite_newer, threshold, rules)| PlanConfig {
                    mode: if all { Mode::AllVersions } else { Mode::Latest },
                    as_of: as_of.map(ts),
                    no_deletes,
                    overwrite_newer,
                    multipart_threshold_bytes: threshold,
                    rules: rules.then(rules_for_deletes),
                    exclude: None,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Applying a plan reaches the target state for every key that is neither in
        /// conflict nor waiting for the archive; conflict keys are left alone; planning
        /// again plans no write.
        #[test]
        fn applying_the_plan_reaches_the_target(
            keys in prop::collection::btree_map(prop::sample::select(vec!["a", "a/b", "b", "é"]), key_history(), 1..4),
            cfg in plan_config(),
        ) {
            let (source, before) = build(&keys);
            let mut journal = Journal::default();
            let (plan, primary_only) = plan_buckets(&source, &before, &cfg, &journal);
            let mut after = before.clone();
            let mut clock = 1000;
            apply(&mut after, &plan, &mut clock, &mut journal);

            prop_assert_eq!(primary_only as usize, before.keys().filter(|k| !source.contains_key(*k)).count());
            prop_assert_eq!(plan.keys().collect::<Vec<_>>(), source.keys().collect::<Vec<_>>());
            for (key, src) in &source {
                let rows = &plan[key];
                let empty = Vec::new();
                let (was, now) = (before.get(key).unwrap_or(&empty), after.get(key).unwrap_or(&empty));
                prop_assert!(!rows.is_empty());
                if rows.iter().any(|r| r.action == Conflict) {
                    // (b) A conflict is one row and leaves the dest alone.
                    prop_assert!(!cfg.overwrite_newer);
                    prop_assert_eq!(rows.len(), 1);
                    prop_assert_eq!(was, now);
                    continue;
                }
                if cfg.mode == Mode::Latest {
                    prop_assert_eq!(rows.len(), 1);
                } else {
                    // Every source version has its row.
                    let mut ids: Vec<&str> = rows.iter().map(|r| r.source_version_id.as_str()).filter(|s| !s.is_empty()).collect();
                    ids.sort_unstable();
                    let mut want: Vec<&str> = src.iter().map(|r| r.version_id.as_str()).collect();
                    want.sort_unstable();
                    prop_assert_eq!(ids, want);
                }
                if rows.iter().any(|r| r.action == Archived) {
                    continue;
                }
                // (a) The dest's current state is the target's.
                let target = src.iter().find(|r| cfg.as_of.is_none_or(|t| r.last_modified <= t));
                let current = now.first();
                match target {
                    Some(t) if !t.is_delete_marker => {
                        let got = current.and_then(|c| content(c, src, &journal));
                        prop_assert_eq!(got, content(t, src, &journal), "key {}", key);
                    }
                    _ if !cfg.no_deletes => prop_assert!(current.is_none_or(|c| c.is_delete_marker), "key {}", key),
                    _ if cfg.mode == Mode::Latest => prop_assert_eq!(was, now),
                    _ => {}
                }
                if cfg.mode == Mode::AllVersions {
                    // (a) The source's history is a subsequence of the dest's, by content;
                    // a delete marker on an absent key changes nothing and is left out.
                    let mut history = Vec::new();
                    let mut absent = true;
                    for r in src.iter().rev().filter(|r| cfg.as_of.is_none_or(|t| r.last_modified <= t)) {
                        if r.is_delete_marker {
                            if cfg.no_deletes || absent {
                                continue;
                            }
                            absent = true;
                        } else {
                            absent = false;
                        }
                        history.push(content(r, src, &journal));
                    }
                    let mut dest_history = now.iter().rev().map(|r| content(r, src, &journal));
                    for want in &history {
                        prop_assert!(dest_history.any(|got| got == *want), "key {}: {:?} not in {:?}", key, history, now);
                    }
                }
            }

            // (c) Planning again, with the journal, plans no write.
            let (again, _) = plan_buckets(&source, &after, &cfg, &journal);
            for row in again.values().flatten() {
                prop_assert!(!row.action.writes(), "replanned {:?}", row);
            }
        }
    }
}
