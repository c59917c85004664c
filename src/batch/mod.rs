//! The Batch Operations engine (`restore --engine batch-operations`): which planned
//! actions S3 Batch Operations' copy can make, the manifests and jobs for them, following
//! the jobs, and merging their completion reports into `restore.csv` and the journal.
//!
//! Deciding what to copy stays the planner's: this module only sorts the plan's actions
//! into jobs and the local engine's share. The pure parts (split, manifest, token, report
//! parsing) live here; [`run`] talks to S3 and S3 Control.

pub mod run;

use std::collections::{BTreeMap, HashMap};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

use crate::model::Location;
use crate::plan::{ActionKind, PlannedAction};

/// The largest object a Batch Operations copy (S3PutObjectCopy, one CopyObject) takes:
/// 5 GiB (S3-NOTES 52).
pub const BATCH_COPY_MAX_BYTES: u64 = 5_368_709_120;

/// Why an action stays with the local engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LocalReason {
    /// A delete marker: Batch Operations has no operation that writes one.
    DeleteMarker,
    /// A multipart source: a single CopyObject would change its ETag (part layout lost).
    MultipartSource,
    /// Over 5 GiB: more than one CopyObject takes.
    OverSize,
    /// The version carries ACL grants beyond its owner's and the destination takes them:
    /// a job sets one ACL for every task.
    AclGrants,
    /// The destination has Object Lock: a job sets one lock setting for every task.
    ObjectLock,
    /// Archived or pending restore from the archive: a copy would fail.
    Archived,
    /// The dest key is not the source key with a prefix put in front (`TargetKeyPrefix`
    /// only prepends).
    PrefixRewrite,
    /// An earlier version of the same key stays local, and a key's versions are written
    /// in order (all-versions).
    KeyOrder,
}

impl LocalReason {
    /// Every reason, in report order.
    pub const ALL: [LocalReason; 8] = [
        LocalReason::DeleteMarker,
        LocalReason::MultipartSource,
        LocalReason::OverSize,
        LocalReason::AclGrants,
        LocalReason::ObjectLock,
        LocalReason::Archived,
        LocalReason::PrefixRewrite,
        LocalReason::KeyOrder,
    ];

    /// The word in summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            LocalReason::DeleteMarker => "delete-marker",
            LocalReason::MultipartSource => "multipart-source",
            LocalReason::OverSize => "over-5gib",
            LocalReason::AclGrants => "acl-grants",
            LocalReason::ObjectLock => "object-lock",
            LocalReason::Archived => "archived",
            LocalReason::PrefixRewrite => "prefix-rewrite",
            LocalReason::KeyOrder => "key-order",
        }
    }
}

/// What the split needs to know besides the actions.
#[derive(Debug, Clone)]
pub struct SplitRules {
    /// The replica location.
    pub source: Location,
    /// The primary location.
    pub dest: Location,
    /// The destination has Object Lock (lock settings are sent per object).
    pub object_lock: bool,
}

/// One job to create: the tasks of one generation with one storage class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPlan {
    /// 0 for the oldest missing version of each key, 1 for the next, ...
    pub generation: u32,
    /// The storage class every copy of the job gets.
    pub storage_class: String,
    /// The prefix Batch Operations puts in front of each source key (empty: none).
    pub target_key_prefix: String,
    /// Plan row indices, in plan order.
    pub tasks: Vec<u64>,
}

/// The plan sorted into jobs and the local engine's share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split {
    /// Jobs, by generation then storage class; run one generation after another.
    pub jobs: Vec<JobPlan>,
    /// Writes that stay local, with why.
    pub local: Vec<(u64, LocalReason)>,
    /// Objects and bytes per reason for staying local.
    pub local_totals: BTreeMap<LocalReason, (u64, u64)>,
    /// Objects and bytes in jobs.
    pub batch_totals: (u64, u64),
}

impl Split {
    /// The summary lines for stderr.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "batch operations: {} objects ({}) in {} jobs",
            self.batch_totals.0,
            crate::report::human_bytes(self.batch_totals.1),
            self.jobs.len()
        );
        let local: (u64, u64) = self
            .local_totals
            .values()
            .fold((0, 0), |(n, b), (n2, b2)| (n + n2, b + b2));
        out.push_str(&format!(
            "\nlocal engine: {} objects ({})",
            local.0,
            crate::report::human_bytes(local.1)
        ));
        for (reason, (n, b)) in &self.local_totals {
            out.push_str(&format!(
                "\n  {:<17} {} objects ({})",
                reason.as_str(),
                n,
                crate::report::human_bytes(*b)
            ));
        }
        out
    }

    /// The figures for summary.json.
    pub fn to_json(&self) -> serde_json::Value {
        let reasons: serde_json::Map<String, serde_json::Value> = self
            .local_totals
            .iter()
            .map(|(r, (n, b))| (r.as_str().to_owned(), serde_json::json!({"objects": n, "bytes": b})))
            .collect();
        serde_json::json!({
            "batch": {"objects": self.batch_totals.0, "bytes": self.batch_totals.1, "jobs": self.jobs.len()},
            "local": reasons,
        })
    }
}

/// The prefix Batch Operations must put in front of `key` to make `dest_key`, if one does.
fn target_prefix(key: &str, dest_key: &str) -> Option<String> {
    dest_key.strip_suffix(key).map(str::to_owned)
}

/// Why a write cannot go into a job, looking at the action alone.
fn local_reason(
    action: &PlannedAction,
    rules: &SplitRules,
    needs_grants: bool,
    job_prefix: Option<&str>,
) -> Option<LocalReason> {
    match action.action {
        ActionKind::DeleteMarker => return Some(LocalReason::DeleteMarker),
        ActionKind::Archived | ActionKind::Pending => return Some(LocalReason::Archived),
        ActionKind::Copy | ActionKind::MultipartCopy => {}
        ActionKind::Skip | ActionKind::Conflict => return None,
    }
    if action.etag.as_deref().is_some_and(|e| e.contains('-')) {
        return Some(LocalReason::MultipartSource);
    }
    if action.size_bytes.unwrap_or(0) > BATCH_COPY_MAX_BYTES {
        return Some(LocalReason::OverSize);
    }
    if rules.object_lock {
        return Some(LocalReason::ObjectLock);
    }
    if needs_grants {
        return Some(LocalReason::AclGrants);
    }
    match (target_prefix(&action.key, &action.dest_key), job_prefix) {
        (Some(p), Some(j)) if p == j => None,
        _ => Some(LocalReason::PrefixRewrite),
    }
}

/// Sorts `actions` (plan row index and action, in plan order) into jobs and local work.
///
/// Order per key: a key's versions must reach the destination oldest first. The jobs of
/// one generation run after the previous generation's jobs complete, and the local engine
/// runs after every job. So each key's actions are cut in two: the longest run from its
/// first write that jobs can make (generations 0, 1, ...), and everything after it, which
/// stays local ([`LocalReason::KeyOrder`] where the action itself could have gone into a
/// job). Every batch write of a key then precedes every local write of that key, in both
/// plan order and execution order.
///
/// `needs_grants(idx)` says whether a version carries ACL grants that the destination
/// takes; `class_for` the storage class its copy gets.
pub fn split(
    actions: &[(u64, PlannedAction)],
    rules: &SplitRules,
    needs_grants: impl Fn(u64) -> bool,
    class_for: impl Fn(&PlannedAction) -> String,
) -> Split {
    let job_prefix = target_prefix_for(&rules.source, &rules.dest);
    let mut out = Split::default();
    // dest key → (batch writes so far, gone local)
    let mut keys: HashMap<&str, (u32, bool)> = HashMap::new();
    let mut jobs: BTreeMap<(u32, String), Vec<u64>> = BTreeMap::new();
    for (idx, a) in actions {
        let is_write = a.action.writes() || matches!(a.action, ActionKind::Archived | ActionKind::Pending);
        if !is_write {
            continue;
        }
        let bytes = a.size_bytes.unwrap_or(0);
        let state = keys.entry(a.dest_key.as_str()).or_insert((0, false));
        let reason = match local_reason(a, rules, needs_grants(*idx), job_prefix.as_deref()) {
            Some(r) => Some(r),
            None if state.1 => Some(LocalReason::KeyOrder),
            None => None,
        };
        match reason {
            Some(r) => {
                // Archived and pending rows are no writes of ours; they only count.
                if a.action.writes() {
                    state.1 = true;
                    out.local.push((*idx, r));
                }
                let t = out.local_totals.entry(r).or_default();
                t.0 += 1;
                t.1 += bytes;
            }
            None => {
                jobs.entry((state.0, class_for(a))).or_default().push(*idx);
                state.0 += 1;
                out.batch_totals.0 += 1;
                out.batch_totals.1 += bytes;
            }
        }
    }
    out.jobs = jobs
        .into_iter()
        .map(|((generation, storage_class), tasks)| JobPlan {
            generation,
            storage_class,
            target_key_prefix: job_prefix.clone().unwrap_or_default(),
            tasks,
        })
        .collect();
    out
}

/// The `TargetKeyPrefix` that maps every key under `source` onto `dest`, if one does:
/// the dest prefix must be the source prefix with something put in front.
pub fn target_prefix_for(source: &Location, dest: &Location) -> Option<String> {
    let probe = format!(
        "{}{}",
        source.prefix,
        if source.prefix.ends_with('/') || source.prefix.is_empty() {
            ""
        } else {
            "/"
        }
    );
    let mapped = dest.map_key_from(source, &format!("{probe}x"))?;
    target_prefix(&format!("{probe}x"), &mapped)
}

/// Characters left as they are in manifest keys: RFC 3986's unreserved ones and `/`.
/// Everything else is percent-encoded as UTF-8, so a `+` is `%2B` and a space `%20`:
/// both readings of "URL-encoded" (with or without `+` for space) decode them alike, and
/// no comma, quote or line break reaches the CSV.
const MANIFEST_KEY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// A key as the `S3BatchOperations_CSV_20180820` manifest needs it (URL-encoded).
pub fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, MANIFEST_KEY).to_string()
}

/// Decodes a key from a manifest or completion report.
///
/// # Errors
/// The decoded bytes are not UTF-8.
pub fn decode_key(field: &str) -> Result<String, std::str::Utf8Error> {
    percent_decode_str(field).decode_utf8().map(|c| c.into_owned())
}

/// The manifest CSV: `Bucket,Key,VersionId` per task, keys URL-encoded, no header.
pub fn manifest_csv<'a>(bucket: &str, tasks: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (key, version_id) in tasks {
        out.push_str(bucket);
        out.push(',');
        out.push_str(&encode_key(key));
        out.push(',');
        // Version ids are URL-safe; encoding them too keeps a hostile one out of the CSV.
        out.push_str(&encode_key(version_id));
        out.push('\n');
    }
    out
}

/// What a job is: a hash of its manifest, storage class, prefix and encryption. It
/// leaves out the job's place in the run, which shifts when a rerun finds earlier jobs'
/// tasks finished.
pub fn job_base(manifest: &str, job: &JobPlan, sse: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"s3-failback batch job v1\n");
    h.update(format!("{}\n{}\n{}\n", job.storage_class, sse, job.target_key_prefix).as_bytes());
    h.update(manifest.as_bytes());
    hex::encode(h.finalize())
}

/// The `ClientRequestToken` of a job: derived from [`job_base`] and the number of jobs with
/// that base that failed outright before, so that a rerun after a crash sends the same
/// token and S3 answers with the job it already created, and only a deliberate retry of a
/// failed job makes a new one. At most 64 characters, as S3 takes.
pub fn client_request_token(base: &str, failed_before: u32) -> String {
    let digest = hex::encode(Sha256::digest(format!("{base}\n{failed_before}").as_bytes()));
    format!("s3fb-{}", &digest[..40])
}

/// One line of a completion report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskResult {
    /// The source bucket.
    pub bucket: String,
    /// The source key (decoded).
    pub key: String,
    /// The source version id.
    pub version_id: String,
    /// Whether the task succeeded.
    pub succeeded: bool,
    /// S3's error code, for a failed task.
    pub error_code: String,
    /// The HTTP status.
    pub http_status: String,
    /// S3's message (for a copy that succeeded, the CopyObject answer).
    pub message: String,
}

/// Errors reading a completion report.
#[derive(Debug, thiserror::Error)]
pub enum ReportParseError {
    /// manifest.json does not parse.
    #[error("completion report manifest {path} does not parse: {message}")]
    Manifest {
        /// Where it was read.
        path: String,
        /// Why.
        message: String,
    },
    /// A result CSV does not parse.
    #[error("completion report {path} line {line}: {message}")]
    Results {
        /// Where it was read.
        path: String,
        /// The line.
        line: u64,
        /// Why.
        message: String,
    },
}

/// The result files a completion report's `manifest.json` lists: (bucket, key).
///
/// # Errors
/// The JSON does not have the documented shape.
pub fn report_result_files(json: &[u8], path: &str) -> Result<Vec<(String, String)>, ReportParseError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Manifest {
        format: String,
        results: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        bucket: String,
        key: String,
    }
    let m: Manifest = serde_json::from_slice(json).map_err(|e| ReportParseError::Manifest {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if m.format != "Report_CSV_20180820" {
        return Err(ReportParseError::Manifest {
            path: path.to_owned(),
            message: format!("unknown format {}", m.format),
        });
    }
    Ok(m.results.into_iter().map(|e| (e.bucket, e.key)).collect())
}

/// Parses one result CSV (`Bucket,Key,VersionId,TaskStatus,ErrorCode,HTTPStatusCode,
/// ResultMessage`, no header; keys URL-encoded as in the manifest).
///
/// # Errors
/// A line has too few fields or a key that does not decode.
pub fn parse_results(csv_text: &[u8], path: &str) -> Result<Vec<TaskResult>, ReportParseError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(csv_text);
    let mut out = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let line = i as u64 + 1;
        let err = |message: String| ReportParseError::Results {
            path: path.to_owned(),
            line,
            message,
        };
        let rec = rec.map_err(|e| err(e.to_string()))?;
        if rec.len() < 4 {
            return Err(err(format!("{} fields, expected 7", rec.len())));
        }
        let field = |n: usize| rec.get(n).unwrap_or("").to_owned();
        out.push(TaskResult {
            bucket: field(0),
            key: decode_key(&field(1)).map_err(|e| err(e.to_string()))?,
            version_id: decode_key(&field(2)).map_err(|e| err(e.to_string()))?,
            succeeded: field(3).eq_ignore_ascii_case("succeeded"),
            error_code: field(4),
            http_status: field(5),
            message: field(6),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(key: &str, kind: ActionKind, size: u64, etag: &str) -> PlannedAction {
        PlannedAction {
            key: key.into(),
            action: kind,
            source_version_id: format!("v-{key}-{size}"),
            dest_key: key.into(),
            dest_version_id: String::new(),
            size_bytes: Some(size),
            etag: Some(etag.into()),
            last_modified: None,
            reason: String::new(),
            storage_class: Some("STANDARD".into()),
            checksum_algorithm: None,
            is_delete_marker: kind == ActionKind::DeleteMarker,
        }
    }

    fn rules() -> SplitRules {
        SplitRules {
            source: Location::new("rep", ""),
            dest: Location::new("pri", ""),
            object_lock: false,
        }
    }

    #[test]
    fn split_rules_table() {
        use ActionKind::*;
        // (action, size, etag, grants, lock, source prefix, dest prefix, expected)
        let big = BATCH_COPY_MAX_BYTES;
        type Row = (
            ActionKind,
            u64,
            &'static str,
            bool,
            bool,
            &'static str,
            &'static str,
            Option<LocalReason>,
        );
        let table: Vec<Row> = vec![
            (Copy, 10, "abc", false, false, "", "", None),
            (Copy, big, "abc", false, false, "", "", None),
            (MultipartCopy, big, "abc", false, false, "", "", None),
            (
                MultipartCopy,
                big + 1,
                "abc",
                false,
                false,
                "",
                "",
                Some(LocalReason::OverSize),
            ),
            (
                MultipartCopy,
                20,
                "abc-3",
                false,
                false,
                "",
                "",
                Some(LocalReason::MultipartSource),
            ),
            (
                DeleteMarker,
                0,
                "",
                false,
                false,
                "",
                "",
                Some(LocalReason::DeleteMarker),
            ),
            (Copy, 10, "abc", true, false, "", "", Some(LocalReason::AclGrants)),
            (Copy, 10, "abc", false, true, "", "", Some(LocalReason::ObjectLock)),
            (Archived, 10, "abc", false, false, "", "", Some(LocalReason::Archived)),
            (Copy, 10, "abc", false, false, "", "restored", None),
            (Copy, 10, "abc", false, false, "data", "data", None),
            (Copy, 10, "abc", false, false, "data", "old/data", None),
            (
                Copy,
                10,
                "abc",
                false,
                false,
                "data",
                "other",
                Some(LocalReason::PrefixRewrite),
            ),
        ];
        for (i, (kind, size, etag, grants, lock, sp, dp, want)) in table.into_iter().enumerate() {
            let source = Location::new("rep", sp);
            let dest = Location::new("pri", dp);
            let key = if sp.is_empty() {
                "k".to_owned()
            } else {
                format!("{sp}/k")
            };
            let mut a = action(&key, kind, size, etag);
            a.dest_key = dest.map_key_from(&source, &key).unwrap();
            let r = SplitRules {
                source,
                dest,
                object_lock: lock,
            };
            let s = split(&[(0, a)], &r, |_| grants, |_| "STANDARD".into());
            match want {
                None => {
                    assert_eq!(s.jobs.len(), 1, "row {i}");
                    assert!(s.local.is_empty(), "row {i}");
                }
                Some(reason) => {
                    assert!(s.jobs.is_empty(), "row {i}");
                    assert_eq!(
                        s.local_totals.keys().copied().collect::<Vec<_>>(),
                        vec![reason],
                        "row {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn all_versions_keeps_key_order_and_groups_generations_and_classes() {
        use ActionKind::*;
        let mut ia = action("d", Copy, 1, "e");
        ia.storage_class = Some("STANDARD_IA".into());
        let actions = vec![
            (0, action("a", Copy, 1, "e")),
            (1, action("a", Copy, 2, "e")),
            (2, action("a", DeleteMarker, 0, "")),
            (3, action("a", Copy, 3, "e")),
            (4, action("b", Copy, 4, "e-2")),
            (5, action("b", Copy, 5, "e")),
            (6, action("c", Skip, 6, "e")),
            (7, ia),
        ];
        let s = split(&actions, &rules(), |_| false, |a| a.storage_class.clone().unwrap());
        let jobs: Vec<(u32, &str, Vec<u64>)> = s
            .jobs
            .iter()
            .map(|j| (j.generation, j.storage_class.as_str(), j.tasks.clone()))
            .collect();
        assert_eq!(
            jobs,
            vec![
                (0, "STANDARD", vec![0]),
                (0, "STANDARD_IA", vec![7]),
                (1, "STANDARD", vec![1])
            ]
        );
        assert_eq!(
            s.local,
            vec![
                (2, LocalReason::DeleteMarker),
                (3, LocalReason::KeyOrder),
                (4, LocalReason::MultipartSource),
                (5, LocalReason::KeyOrder)
            ]
        );
        assert_eq!(s.batch_totals, (3, 4));
        // Skip rows are no writes: neither side counts them.
        assert!(!s.local.iter().any(|(i, _)| *i == 6));
        assert_eq!(s.local_totals[&LocalReason::KeyOrder], (2, 8));
    }

    #[test]
    fn hostile_keys_round_trip_through_the_manifest() {
        let keys = [
            "plain/key.txt",
            "with space",
            "plus+sign",
            "100%",
            "comma,quote\"",
            "ünïcødé/日本語",
            "tab\tbell\u{7}del\u{7f}",
            "a//b///c/",
            "/leading",
            "~tilde-_.",
        ];
        let csv = manifest_csv("bucket", keys.iter().map(|k| (*k, "v1")));
        assert_eq!(csv.lines().count(), keys.len());
        for (line, key) in csv.lines().zip(keys) {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), 3, "{line}");
            assert!(
                fields[1]
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'+' && b != b'"'),
                "{line}"
            );
            assert_eq!(decode_key(fields[1]).unwrap(), key);
        }
        assert_eq!(encode_key("with space"), "with%20space");
        assert_eq!(encode_key("plus+sign"), "plus%2Bsign");
        assert_eq!(encode_key("100%"), "100%25");
        assert_eq!(encode_key("a//b"), "a//b");
        assert_eq!(encode_key("ü"), "%C3%BC");
    }

    #[test]
    fn client_request_token_is_stable_and_distinct() {
        let job = JobPlan {
            generation: 0,
            storage_class: "STANDARD".into(),
            target_key_prefix: String::new(),
            tasks: vec![0, 1],
        };
        let base = job_base("b,k,v\n", &job, "AES256");
        let t = client_request_token(&base, 0);
        assert_eq!(t, client_request_token(&job_base("b,k,v\n", &job, "AES256"), 0));
        assert!(t.len() <= 64 && t.starts_with("s3fb-"));
        // Pinned: a new release must find the jobs an older one created.
        assert_eq!(t, "s3fb-5c3238af019ac250c31cfd2596fe19203b5c0827");
        // The generation number is not part of it: it shifts on a rerun.
        let later = JobPlan {
            generation: 3,
            ..job.clone()
        };
        assert_eq!(t, client_request_token(&job_base("b,k,v\n", &later, "AES256"), 0));
        assert_ne!(t, client_request_token(&base, 1));
        assert_ne!(t, client_request_token(&job_base("b,k,w\n", &job, "AES256"), 0));
        assert_ne!(t, client_request_token(&job_base("b,k,v\n", &job, "aws:kms:"), 0));
        let ia = JobPlan {
            storage_class: "STANDARD_IA".into(),
            ..job.clone()
        };
        assert_ne!(t, client_request_token(&job_base("b,k,v\n", &ia, "AES256"), 0));
    }

    #[test]
    fn reads_the_documented_report_layout() {
        let json = br#"{"Format":"Report_CSV_20180820","ReportCreationDate":"2019-04-05T17:48:39.725Z",
            "Results":[{"TaskExecutionStatus":"succeeded","Bucket":"work","MD5Checksum":"x","Key":"p/job-1/results/a.csv"},
                       {"TaskExecutionStatus":"failed","Bucket":"work","MD5Checksum":"y","Key":"p/job-1/results/b.csv"}],
            "ReportSchema":"Bucket, Key, VersionId, TaskStatus, ErrorCode, HTTPStatusCode, ResultMessage"}"#;
        let files = report_result_files(json, "m").unwrap();
        assert_eq!(files[1], ("work".into(), "p/job-1/results/b.csv".into()));
        let csv = b"rep,with%20space,v1,succeeded,,200,\"{\"\"x\"\":1}\"\nrep,k%2B,v2,failed,AccessDenied,403,Access Denied\n";
        let r = parse_results(csv, "r").unwrap();
        assert_eq!(r[0].key, "with space");
        assert!(r[0].succeeded);
        assert_eq!(r[1].key, "k+");
        assert!(!r[1].succeeded);
        assert_eq!(r[1].error_code, "AccessDenied");
        assert!(report_result_files(b"{}", "m").is_err());
    }

    #[test]
    fn target_prefix_covers_prepending_only() {
        let l = |p: &str| Location::new("b", p);
        assert_eq!(target_prefix_for(&l(""), &l("")), Some(String::new()));
        assert_eq!(target_prefix_for(&l(""), &l("restored")), Some("restored/".into()));
        assert_eq!(target_prefix_for(&l("data/"), &l("x/data/")), Some("x/".into()));
        assert_eq!(target_prefix_for(&l("data"), &l("other")), None);
    }
}
