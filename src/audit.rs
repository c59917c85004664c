//! `audit` (peacetime, read-only on both sides): does the replica hold every primary
//! version, under which replication rule, and what does the replica hold that the primary
//! lacks?
//!
//! Versions are matched by version id (replication keeps it), then by content. The rules
//! come from the primary (GetBucketReplication) or `--replication-config`. HEAD requests
//! go only to the gaps: a primary version the replica lacks (for `FAILED`), a replica
//! version the primary lacks (`REPLICA` or written there directly).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use serde::Serialize;
use tracing::warn;

use crate::RunContext;
use crate::cli::{AuditArgs, CliError, GlobalArgs, parse_location};
use crate::error::{Error, Outcome};
use crate::model::{Location, NULL_VERSION_ID, Side, VersionRecord};
use crate::progress::Progress;
use crate::reconcile::{ReconcileConfig, Reconciled, reconcile};
use crate::report::{CsvReport, ReportDir, Summary, human_bytes};
use crate::rules::{ReplicationConfig, Rule};
use crate::s3::{DestClient, ListConfig, S3Config, SourceClient};

/// An audit finding: the fixed words of DESIGN.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AuditStatus {
    /// Both sides hold the version.
    Ok,
    /// A primary version the replica lacks, older than `--max-lag`.
    Missing,
    /// A primary version the replica lacks, younger than `--max-lag`.
    Lagging,
    /// Replication status FAILED.
    Failed,
    /// No enabled rule towards this replica covers the key.
    Unprotected,
    /// A replica version the primary lacks (it came from replication).
    Extra,
    /// A replica version that did not come from replication: it exists nowhere else.
    WrittenOnReplica,
    /// A primary delete marker the replica never got: its rule does not replicate them.
    DeleteNotReplicated,
}

impl AuditStatus {
    /// Every status, in report order.
    pub const ALL: [AuditStatus; 8] = [
        AuditStatus::Ok,
        AuditStatus::Missing,
        AuditStatus::Lagging,
        AuditStatus::Failed,
        AuditStatus::Unprotected,
        AuditStatus::Extra,
        AuditStatus::WrittenOnReplica,
        AuditStatus::DeleteNotReplicated,
    ];

    /// The word in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditStatus::Ok => "ok",
            AuditStatus::Missing => "missing",
            AuditStatus::Lagging => "lagging",
            AuditStatus::Failed => "failed",
            AuditStatus::Unprotected => "unprotected",
            AuditStatus::Extra => "extra",
            AuditStatus::WrittenOnReplica => "written-on-replica",
            AuditStatus::DeleteNotReplicated => "delete-not-replicated",
        }
    }

    /// Parses a report word.
    pub fn parse(word: &str) -> Option<Self> {
        AuditStatus::ALL.into_iter().find(|s| s.as_str() == word)
    }
}

/// Which rule, if any, protects a key.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// No rules to judge by (none configured, or unreadable): versions are compared only.
    NoRules,
    /// This enabled rule replicates the key to the replica.
    Covered(&'a Rule),
    /// Rules exist, and no enabled one towards the replica covers the key.
    Unprotected,
}

/// One row of `audit.csv` in the making.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The key.
    pub key: String,
    /// The version (or delete marker).
    pub version_id: String,
    /// The status.
    pub status: AuditStatus,
    /// Where the version exists.
    pub side: Side,
    /// When it was written.
    pub last_modified: Timestamp,
    /// Size; `None` for a delete marker.
    pub size_bytes: Option<u64>,
    /// ETag; `None` for a delete marker.
    pub etag: Option<String>,
    /// `x-amz-replication-status`, where a HEAD read it.
    pub replication_status: Option<String>,
    /// The rule covering the key.
    pub rule_id: Option<String>,
    /// Why, for people.
    pub detail: String,
    /// Whether the status depends on a HEAD of this version (a gap).
    pub needs_head: bool,
}

fn finding(v: &VersionRecord, side: Side, status: AuditStatus, scope: &Scope<'_>, detail: String) -> Finding {
    Finding {
        key: v.key.clone(),
        version_id: v.version_id.clone(),
        status,
        side,
        last_modified: v.last_modified,
        size_bytes: (!v.is_delete_marker).then_some(v.size_bytes),
        etag: v.etag.clone(),
        replication_status: None,
        rule_id: match scope {
            Scope::Covered(rule) => Some(rule.id.clone().unwrap_or_default()),
            _ => None,
        },
        detail,
        needs_head: false,
    }
}

/// Pairs primary and replica versions of one key: by version id first (replication keeps
/// it), then by content (size and ETag) in listing order. Returns, per side, which
/// versions found a partner.
fn match_versions(primary: &[VersionRecord], replica: &[VersionRecord]) -> (Vec<bool>, Vec<bool>) {
    let mut p_matched = vec![false; primary.len()];
    let mut r_matched = vec![false; replica.len()];
    for (i, p) in primary.iter().enumerate() {
        if p.version_id == NULL_VERSION_ID {
            continue;
        }
        if let Some(j) = replica.iter().position(|r| r.version_id == p.version_id) {
            p_matched[i] = true;
            r_matched[j] = true;
        }
    }
    for (i, p) in primary.iter().enumerate() {
        if p_matched[i] || p.is_delete_marker {
            continue;
        }
        if let Some(j) = (0..replica.len()).find(|&j| !r_matched[j] && replica[j].same_content(p)) {
            p_matched[i] = true;
            r_matched[j] = true;
        }
    }
    (p_matched, r_matched)
}

/// The findings for one key (versions newest first on both sides). Gaps that a HEAD
/// decides come with `needs_head`; [`resolve`] finishes them.
pub fn audit_key(
    primary: &[VersionRecord],
    replica: &[VersionRecord],
    scope: &Scope<'_>,
    now: Timestamp,
    max_lag: Duration,
    all: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if let (Scope::Unprotected, Some(current)) = (scope, primary.first()) {
        out.push(finding(
            current,
            Side::Dest,
            AuditStatus::Unprotected,
            scope,
            "no enabled replication rule towards the replica covers this key".to_owned(),
        ));
    }
    let (p_matched, r_matched) = match_versions(primary, replica);
    for (p, matched) in primary.iter().zip(&p_matched) {
        if *matched {
            if all {
                out.push(finding(p, Side::Dest, AuditStatus::Ok, scope, String::new()));
            }
            continue;
        }
        if matches!(scope, Scope::Unprotected) {
            continue;
        }
        if p.is_delete_marker
            && let Scope::Covered(rule) = scope
            && !rule.delete_marker_replication
        {
            let detail = crate::plan::unreplicated_delete_reason(rule);
            out.push(finding(p, Side::Dest, AuditStatus::DeleteNotReplicated, scope, detail));
            continue;
        }
        let age = now.duration_since(p.last_modified);
        // Compared in full precision, not in whole seconds: a gap 2.5 s old is older than
        // `--max-lag 2s`, and every gap is older than `--max-lag 0s`.
        let older = Duration::try_from(age).is_ok_and(|age| age > max_lag);
        let (status, detail) = if older {
            (
                AuditStatus::Missing,
                format!("not in the replica after {}", human_age(age.as_secs())),
            )
        } else {
            (
                AuditStatus::Lagging,
                format!("not in the replica yet ({} old)", human_age(age.as_secs())),
            )
        };
        let mut f = finding(p, Side::Dest, status, scope, detail);
        f.needs_head = !p.is_delete_marker;
        out.push(f);
    }
    for (r, matched) in replica.iter().zip(&r_matched) {
        if *matched {
            continue;
        }
        let mut f = finding(
            r,
            Side::Source,
            AuditStatus::Extra,
            scope,
            "not in the primary".to_owned(),
        );
        f.needs_head = !r.is_delete_marker;
        out.push(f);
    }
    out
}

/// Finishes a gap with the replication status a HEAD read: a primary version whose
/// replication FAILED is `failed`; a replica version not marked `REPLICA` was written
/// there directly.
pub fn resolve(f: &mut Finding, replication_status: Option<&str>) {
    f.replication_status = replication_status.map(str::to_owned);
    match f.side {
        Side::Dest => {
            if replication_status == Some("FAILED") {
                f.status = AuditStatus::Failed;
                f.detail = "replication status FAILED".to_owned();
            }
        }
        Side::Source => {
            if replication_status == Some("REPLICA") {
                f.status = AuditStatus::Extra;
                f.detail = "a replica the primary no longer holds".to_owned();
            } else {
                f.status = AuditStatus::WrittenOnReplica;
                f.detail = "written on the replica directly: it exists nowhere else".to_owned();
            }
        }
    }
}

fn human_age(secs: i64) -> String {
    let secs = secs.max(0) as u64;
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// The prefix a key is counted under in `unprotected_by_prefix`: up to and including its
/// first `/`, or the empty prefix for keys at the top level.
fn top_prefix(key: &str) -> &str {
    match key.find('/') {
        Some(i) => &key[..=i],
        None => "",
    }
}

/// Reads the keys an audit report (`audit.csv`) lists as `delete-not-replicated`, for
/// `--exclude-from`: only those, whatever else the report lists.
///
/// # Errors
/// The file cannot be read, lacks the `key` or `status` column, or a row does not parse
/// (the message names the file and the line).
pub fn read_exclusions(path: &std::path::Path) -> Result<crate::plan::Exclusions, String> {
    let name = path.display().to_string();
    let mut reader = csv::ReaderBuilder::new()
        .from_path(path)
        .map_err(|e| format!("cannot read {name}: {e}"))?;
    let header = reader.headers().map_err(|e| format!("{name}: {e}"))?.clone();
    let column = |want: &str| {
        header
            .iter()
            .position(|h| h.trim_start_matches('\u{feff}') == want)
            .ok_or_else(|| format!("{name} is not an audit report: it has no `{want}` column"))
    };
    let (key, status) = (column("key")?, column("status")?);
    let mut keys = std::collections::HashSet::new();
    for row in reader.records() {
        let row = row.map_err(|e| match e.position() {
            Some(p) => format!("{name}: line {}: {e}", p.line()),
            None => format!("{name}: {e}"),
        })?;
        if row.get(status) == Some(AuditStatus::DeleteNotReplicated.as_str())
            && let Some(k) = row.get(key)
        {
            keys.insert(k.to_owned());
        }
    }
    Ok(crate::plan::Exclusions { keys, origin: name })
}

/// A validated `audit`.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The primary (reached with the --dest-* flags).
    pub primary: Location,
    /// The replica (reached with the --source-* flags).
    pub replica: Location,
    /// `--max-lag`.
    pub max_lag: Duration,
    /// `--replication-config`.
    pub replication_config: Option<PathBuf>,
    /// `--all`.
    pub all: bool,
    /// `--report-dir`.
    pub report_dir: Option<PathBuf>,
    /// Replica connection.
    pub replica_s3: S3Config,
    /// Primary connection.
    pub primary_s3: S3Config,
    /// Listing settings.
    pub list: ListConfig,
}

impl AuditConfig {
    /// Validates the flags.
    ///
    /// # Errors
    /// A bad URL or value.
    pub fn try_from_args(args: AuditArgs, global: &GlobalArgs) -> Result<Self, CliError> {
        Ok(AuditConfig {
            primary: parse_location("--primary", &args.primary)?,
            replica: parse_location("--replica", &args.replica)?,
            max_lag: args.max_lag,
            replication_config: args.replication_config,
            all: args.all,
            report_dir: args.report_dir,
            replica_s3: args.conn.s3_config(Side::Source, global),
            primary_s3: args.conn.s3_config(Side::Dest, global),
            list: args.conn.list_config()?,
        })
    }
}

#[derive(Debug, Serialize)]
struct AuditRow<'a> {
    key: &'a str,
    version_id: &'a str,
    status: &'a str,
    side: &'a str,
    last_modified: String,
    size: Option<u64>,
    etag: &'a str,
    replication_status: &'a str,
    rule_id: &'a str,
    detail: &'a str,
}

const AUDIT_COLUMNS: [&str; 10] = [
    "key",
    "version_id",
    "status",
    "side",
    "last_modified",
    "size",
    "etag",
    "replication_status",
    "rule_id",
    "detail",
];

/// Runs `audit`.
///
/// # Errors
/// Setup errors (exit 2); listing or report errors (exit 1).
pub async fn run(cfg: AuditConfig, ctx: &RunContext) -> Result<Outcome, Error> {
    let replica = SourceClient::connect(&cfg.replica_s3).await.map_err(Error::Setup)?;
    let primary = DestClient::connect(&cfg.primary_s3).await.map_err(Error::Setup)?;
    replica
        .bucket_settings(&cfg.replica.bucket)
        .await
        .map_err(Error::Setup)?;
    primary
        .bucket_settings(&cfg.primary.bucket)
        .await
        .map_err(Error::Setup)?;

    let read = crate::cmd::load_rules(
        cfg.replication_config.as_deref(),
        Some((&primary, cfg.primary.bucket.as_str())),
    )
    .await?;
    let (rules, rules_note): (Option<ReplicationConfig>, serde_json::Value) = (read.config, read.note);
    if let Some(why) = &read.missing {
        warn!(bucket = %cfg.primary.bucket, "{why}; comparing versions only");
    }
    let replica_bucket = cfg.replica.bucket.clone();
    let mut rules_note = rules_note;
    if let Some(r) = &rules
        && !crate::rules::rules_towards(r, &replica_bucket).any(Rule::is_enabled)
    {
        let why = format!(
            "no enabled replication rule of the primary targets bucket {replica_bucket}: every key is unprotected"
        );
        warn!("{why}");
        rules_note["detail"] = why.into();
    }
    let need_tags = rules
        .as_ref()
        .is_some_and(|r| crate::rules::needs_tags(r, &replica_bucket));

    let dir = ReportDir::create("audit", cfg.report_dir.as_deref(), ctx.started).map_err(Error::ReportSetup)?;
    let mut csv = CsvReport::create(Some(dir.file("audit.csv"))).map_err(Error::ReportSetup)?;
    csv.write_header(&AUDIT_COLUMNS).map_err(Error::Report)?;

    let now = Timestamp::now();
    let src = replica.list_versions(&cfg.replica, cfg.list);
    let dst = primary.list_versions(&cfg.primary, cfg.list);
    let joined = reconcile(
        src,
        dst,
        ReconcileConfig {
            source: cfg.replica.clone(),
            dest: cfg.primary.clone(),
        },
    );
    let mut joined = std::pin::pin!(joined);
    let progress = Progress::counter("audit", "keys");
    let mut counts: BTreeMap<AuditStatus, (u64, u64)> = BTreeMap::new();
    let mut by_prefix: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut oldest_gap: Option<Timestamp> = None;
    loop {
        let item = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return Err(Error::Interrupted),
            item = joined.next() => item,
        };
        let Some(item) = item else { break };
        let (primary_versions, replica_versions) = match item.map_err(|e| Error::S3Listing(e.to_string()))? {
            Reconciled::Key(diff) => (diff.dest, diff.source),
            Reconciled::PrimaryOnly { versions, .. } => (versions, Vec::new()),
        };
        progress.inc(1);
        let key = primary_versions
            .first()
            .or(replica_versions.first())
            .map(|v| v.key.clone())
            .unwrap_or_default();
        let tags = match (&rules, need_tags, primary_versions.first()) {
            (Some(_), true, Some(current)) if !current.is_delete_marker => primary
                .get_tags(&cfg.primary.bucket, &key, &current.version_id)
                .await
                .map_err(Error::S3)?,
            _ => Vec::new(),
        };
        let scope = match &rules {
            None => Scope::NoRules,
            Some(r) => match crate::rules::in_scope(r, &replica_bucket, &key, &tags) {
                Some(rule) => Scope::Covered(rule),
                None => Scope::Unprotected,
            },
        };
        let mut findings = audit_key(&primary_versions, &replica_versions, &scope, now, cfg.max_lag, cfg.all);
        let heads = futures::stream::iter(findings.iter_mut().filter(|f| f.needs_head))
            .map(|f| {
                let (replica, primary, cfg) = (&replica, &primary, &cfg);
                async move {
                    let head = match f.side {
                        Side::Dest => {
                            primary
                                .head_version(&cfg.primary.bucket, &f.key, Some(&f.version_id))
                                .await
                        }
                        Side::Source => {
                            replica
                                .head_version(&cfg.replica.bucket, &f.key, &f.version_id, None)
                                .await
                        }
                    };
                    match head {
                        Ok(h) => {
                            resolve(f, h.replication_status.as_deref());
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        for h in heads {
            h.map_err(Error::S3)?;
        }
        for f in &findings {
            let c = counts.entry(f.status).or_default();
            c.0 += 1;
            c.1 += f.size_bytes.unwrap_or(0);
            if f.status == AuditStatus::Unprotected {
                let p = by_prefix.entry(top_prefix(&f.key).to_owned()).or_default();
                p.0 += 1;
                p.1 += f.size_bytes.unwrap_or(0);
            }
            if matches!(f.status, AuditStatus::Missing | AuditStatus::Lagging) {
                oldest_gap = Some(oldest_gap.map_or(f.last_modified, |o| o.min(f.last_modified)));
            }
            csv.write(&AuditRow {
                key: &f.key,
                version_id: &f.version_id,
                status: f.status.as_str(),
                side: if f.side == Side::Dest { "primary" } else { "replica" },
                last_modified: f.last_modified.to_string(),
                size: f.size_bytes,
                etag: f.etag.as_deref().unwrap_or(""),
                replication_status: f.replication_status.as_deref().unwrap_or(""),
                rule_id: f.rule_id.as_deref().unwrap_or(""),
                detail: &f.detail,
            })
            .map_err(Error::Report)?;
        }
    }
    progress.finish();
    let digest = csv.finish().map_err(Error::Report)?;

    let mut report = Summary::new("audit", ctx.started, ctx.args.clone());
    for s in AuditStatus::ALL {
        let (n, b) = counts.get(&s).copied().unwrap_or_default();
        report.counts.insert(s.as_str().to_owned(), n);
        report.bytes.insert(s.as_str().to_owned(), b);
    }
    report.counts.insert("primary_only".into(), 0);
    report.reports.insert("audit.csv".into(), digest);
    report.extra.insert(
        "unprotected_by_prefix".into(),
        by_prefix
            .iter()
            .map(|(p, (n, b))| (p.clone(), serde_json::json!({"objects": n, "bytes": b})))
            .collect(),
    );
    report.extra.insert("rules".into(), rules_note);
    report.extra.insert(
        "lag_seconds".into(),
        oldest_gap
            .map(|t| now.duration_since(t).as_secs())
            .map(serde_json::Value::from)
            .unwrap_or_default(),
    );
    report
        .extra
        .insert("max_lag_seconds".into(), cfg.max_lag.as_secs().into());
    let summary_path = report.write(&dir).map_err(Error::Report)?;

    let count = |s: AuditStatus| counts.get(&s).map(|c| c.0).unwrap_or(0);
    println!("{}\n{}", dir.file("audit.csv").display(), summary_path.display());
    let findings: Vec<String> = AuditStatus::ALL
        .into_iter()
        .filter(|s| *s != AuditStatus::Ok && count(*s) > 0)
        .map(|s| format!("{} {}", count(s), s.as_str()))
        .collect();
    let unprotected_bytes = counts.get(&AuditStatus::Unprotected).map(|c| c.1).unwrap_or(0);
    println!(
        "audit: {}{}",
        if findings.is_empty() {
            "replica complete".to_owned()
        } else {
            findings.join(", ")
        },
        if unprotected_bytes > 0 {
            format!(" ({} unprotected)", human_bytes(unprotected_bytes))
        } else {
            String::new()
        }
    );
    let failing = count(AuditStatus::Missing) + count(AuditStatus::Failed) + count(AuditStatus::Unprotected);
    Ok(if failing > 0 {
        Outcome::Incomplete
    } else {
        Outcome::Complete
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Destination, Filter, RuleStatus};

    fn v(key: &str, id: &str, secs: i64, etag: &str) -> VersionRecord {
        VersionRecord {
            key: key.into(),
            version_id: id.into(),
            is_latest: false,
            is_delete_marker: etag.is_empty(),
            last_modified: Timestamp::from_second(secs).unwrap(),
            size_bytes: if etag.is_empty() { 0 } else { 10 },
            etag: (!etag.is_empty()).then(|| etag.to_owned()),
            storage_class: None,
            checksum_algorithm: None,
        }
    }

    fn rule(dm: bool) -> Rule {
        Rule {
            id: Some("r1".into()),
            priority: Some(1),
            status: RuleStatus::Enabled,
            filter: Filter::Prefix(String::new()),
            legacy_prefix: None,
            destination: Destination {
                bucket_arn: "arn:aws:s3:::rep".into(),
                account: None,
                storage_class: None,
                owner_override: false,
                replica_kms_key_id: None,
            },
            delete_marker_replication: dm,
            replicate_sse_kms: false,
        }
    }

    fn statuses(f: &[Finding]) -> Vec<(&str, &str, Side)> {
        f.iter()
            .map(|f| (f.version_id.as_str(), f.status.as_str(), f.side))
            .collect()
    }

    const NOW: i64 = 100_000;
    const LAG: Duration = Duration::from_secs(900);

    #[test]
    fn decisions() {
        let r = rule(false);
        let covered = Scope::Covered(&r);
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            &str,
            Vec<VersionRecord>,
            Vec<VersionRecord>,
            Scope<'_>,
            bool,
            Vec<(&str, &str, Side)>,
        )> = vec![
            (
                "same ids",
                vec![v("k", "a", 1, "e")],
                vec![v("k", "a", 1, "e")],
                covered,
                true,
                vec![("a", "ok", Side::Dest)],
            ),
            (
                "same content, other id",
                vec![v("k", "a", 1, "e")],
                vec![v("k", "b", 2, "e")],
                covered,
                false,
                vec![],
            ),
            (
                "old gap",
                vec![v("k", "a", 1, "e")],
                vec![],
                covered,
                false,
                vec![("a", "missing", Side::Dest)],
            ),
            (
                "young gap",
                vec![v("k", "a", NOW - 10, "e")],
                vec![],
                covered,
                false,
                vec![("a", "lagging", Side::Dest)],
            ),
            (
                "delete marker not replicated",
                vec![v("k", "d", 5, ""), v("k", "a", 1, "e")],
                vec![v("k", "a", 1, "e")],
                covered,
                false,
                vec![("d", "delete-not-replicated", Side::Dest)],
            ),
            (
                "unprotected: one row, no missing rows",
                vec![v("k", "b", 5, "f"), v("k", "a", 1, "e")],
                vec![],
                Scope::Unprotected,
                false,
                vec![("b", "unprotected", Side::Dest)],
            ),
            (
                "replica only",
                vec![],
                vec![v("k", "x", 1, "e")],
                covered,
                false,
                vec![("x", "extra", Side::Source)],
            ),
            (
                "no rules: versions only",
                vec![v("k", "a", 1, "e")],
                vec![],
                Scope::NoRules,
                false,
                vec![("a", "missing", Side::Dest)],
            ),
        ];
        for (name, p, rep, scope, all, want) in cases {
            let got = audit_key(&p, &rep, &scope, Timestamp::from_second(NOW).unwrap(), LAG, all);
            assert_eq!(statuses(&got), want, "{name}");
        }
        // A rule that replicates delete markers makes an unreplicated one a gap.
        let r2 = rule(true);
        let got = audit_key(
            &[v("k", "d", 5, "")],
            &[],
            &Scope::Covered(&r2),
            Timestamp::from_second(NOW).unwrap(),
            LAG,
            false,
        );
        assert_eq!(statuses(&got), vec![("d", "missing", Side::Dest)]);
        assert!(!got[0].needs_head, "delete markers cannot be HEADed");
    }

    #[test]
    fn replication_status_from_canned_heads() {
        // The local server never sets x-amz-replication-status (S3-NOTES 47): these are the
        // answers S3 gives.
        let r = rule(true);
        let now = Timestamp::from_second(NOW).unwrap();
        let mut gap = audit_key(&[v("k", "a", 1, "e")], &[], &Scope::Covered(&r), now, LAG, false).remove(0);
        assert!(gap.needs_head);
        resolve(&mut gap, Some("FAILED"));
        assert_eq!(gap.status, AuditStatus::Failed);
        let mut pending = audit_key(&[v("k", "a", 1, "e")], &[], &Scope::Covered(&r), now, LAG, false).remove(0);
        resolve(&mut pending, Some("PENDING"));
        assert_eq!(pending.status, AuditStatus::Missing);
        assert_eq!(pending.replication_status.as_deref(), Some("PENDING"));
        let mut extra = audit_key(&[], &[v("k", "x", 1, "e")], &Scope::Covered(&r), now, LAG, false).remove(0);
        resolve(&mut extra, Some("REPLICA"));
        assert_eq!(extra.status, AuditStatus::Extra);
        let mut direct = audit_key(&[], &[v("k", "x", 1, "e")], &Scope::Covered(&r), now, LAG, false).remove(0);
        resolve(&mut direct, None);
        assert_eq!(direct.status, AuditStatus::WrittenOnReplica);
    }

    #[test]
    fn max_lag_is_compared_below_the_second() {
        let r = rule(true);
        let now = Timestamp::from_second(NOW).unwrap();
        let cases = [
            ("half a second old, --max-lag 0s", 500, Duration::ZERO, "missing"),
            ("older than --max-lag by half a second", 900_500, LAG, "missing"),
            ("exactly --max-lag old", 900_000, LAG, "lagging"),
            ("younger than --max-lag", 899_500, LAG, "lagging"),
        ];
        for (name, age_ms, max_lag, want) in cases {
            let mut gap = v("k", "a", 0, "e");
            gap.last_modified = now.checked_sub(jiff::SignedDuration::from_millis(age_ms)).unwrap();
            let got = audit_key(&[gap], &[], &Scope::Covered(&r), now, max_lag, false);
            assert_eq!(statuses(&got), vec![("a", want, Side::Dest)], "{name}");
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(top_prefix("logs/2026/x"), "logs/");
        assert_eq!(top_prefix("top"), "");
    }

    #[test]
    fn exclusions_are_exactly_the_delete_not_replicated_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.csv");
        std::fs::write(
            &path,
            "\u{feff}key,version_id,status,side,last_modified,size,etag,replication_status,rule_id,detail\n\
             gone,v1,delete-not-replicated,primary,2026-01-01T00:00:00Z,,,,r,x\n\
             \"with, comma\",v2,delete-not-replicated,primary,2026-01-01T00:00:00Z,,,,r,x\n\
             kept,v3,missing,primary,2026-01-01T00:00:00Z,3,e,,r,x\n\
             other,v4,written-on-replica,replica,2026-01-01T00:00:00Z,3,e,,r,x\n\
             DELETE,v5,delete-not-replicated-ish,primary,2026-01-01T00:00:00Z,,,,r,x\n",
        )
        .unwrap();
        let ex = read_exclusions(&path).unwrap();
        let mut keys: Vec<&str> = ex.keys.iter().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["gone", "with, comma"]);
        assert_eq!(ex.origin, path.display().to_string());

        std::fs::write(&path, "key,version_id\nk,v\n").unwrap();
        let err = read_exclusions(&path).unwrap_err();
        assert!(err.contains("no `status` column"), "{err}");
        std::fs::write(&path, "key,status\nk,delete-not-replicated\nbad\n").unwrap();
        let err = read_exclusions(&path).unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        let err = read_exclusions(&dir.path().join("absent.csv")).unwrap_err();
        assert!(err.starts_with("cannot read"), "{err}");
    }
}
