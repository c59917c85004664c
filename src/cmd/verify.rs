//! `verify`: re-lists both sides, computes the target state with the same reconciler and
//! flags as `plan`, and checks that the primary holds it. Read-only on both sides.
//!
//! Statuses per target row: `match`, `missing`, `differs`, `unexpected`, `conflict-kept`.
//! `--metadata` also compares content headers, user metadata and tags of matching
//! versions; `--deep` compares SHA-256 of their bytes, streamed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use futures::StreamExt;
use serde::Serialize;

use crate::RunContext;
use crate::cli::{CliError, GlobalArgs, VerifyArgs, parse_location};
use crate::cmd::plan::Copied;
use crate::error::{Error, Outcome};
use crate::model::{Location, Side};
use crate::plan::{ActionKind, Mode, PlanConfig, PlannedAction};
use crate::progress::Progress;
use crate::reconcile::KeyDiff;
use crate::report::{CsvReport, ReportDir, Summary, human_bytes};
use crate::s3::{DestClient, ListConfig, S3Config, S3Error, SourceClient};
use crate::state::{RunKey, StateDir};
use crate::target::{SideInput, plan_keys};

/// A validated `verify`.
#[derive(Debug, Clone)]
pub struct VerifyCmdConfig {
    /// The replica.
    pub source: Location,
    /// The primary.
    pub dest: Location,
    /// The target state.
    pub plan: PlanConfig,
    /// Listing settings.
    pub list: ListConfig,
    /// Source connection.
    pub source_s3: S3Config,
    /// Destination connection.
    pub dest_s3: S3Config,
    /// `--metadata`.
    pub metadata: bool,
    /// `--deep`.
    pub deep: bool,
    /// Where restore kept its state (its journal is evidence of identity).
    pub state_dir: PathBuf,
    /// `--report-dir`.
    pub report_dir: Option<PathBuf>,
    /// Check only these source keys (a drill's sample); `None` checks every key.
    pub only_keys: Option<std::collections::HashSet<String>>,
}

impl VerifyCmdConfig {
    /// Validates the flags.
    ///
    /// # Errors
    /// A bad URL or value.
    pub fn try_from_args(args: VerifyArgs, global: &GlobalArgs, now: jiff::Timestamp) -> Result<Self, CliError> {
        let mut target = args.target.clone();
        let metadata = std::mem::take(&mut target.metadata);
        Ok(VerifyCmdConfig {
            source: parse_location("--source", &args.source)?,
            dest: parse_location("--dest", &args.dest)?,
            plan: super::plan_config(&target, None, now)?,
            list: args.conn.list_config()?,
            source_s3: args.conn.s3_config(Side::Source, global),
            dest_s3: args.conn.s3_config(Side::Dest, global),
            metadata,
            deep: args.deep,
            state_dir: PathBuf::from(".s3-failback"),
            report_dir: args.target.report_dir,
            only_keys: None,
        })
    }
}

/// A verify status: the fixed words of DESIGN.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum VerifyStatus {
    /// The primary holds the target.
    Match,
    /// The target version is not in the primary.
    Missing,
    /// The primary holds something else.
    Differs,
    /// Present in the primary, absent in the target.
    Unexpected,
    /// The primary's newer data, left alone by the restore's conflict rule.
    ConflictKept,
}

impl VerifyStatus {
    /// Every status, in report order.
    pub const ALL: [VerifyStatus; 5] = [
        VerifyStatus::Match,
        VerifyStatus::Missing,
        VerifyStatus::Differs,
        VerifyStatus::Unexpected,
        VerifyStatus::ConflictKept,
    ];

    /// The word in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyStatus::Match => "match",
            VerifyStatus::Missing => "missing",
            VerifyStatus::Differs => "differs",
            VerifyStatus::Unexpected => "unexpected",
            VerifyStatus::ConflictKept => "conflict-kept",
        }
    }
}

/// One target row's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The status.
    pub status: VerifyStatus,
    /// Why, for people.
    pub detail: String,
    /// The primary version the verdict is about.
    pub dest_version_id: String,
}

/// Judges one planned action against what the primary holds (the listing only).
pub fn judge(diff: &KeyDiff, action: &PlannedAction, mode: Mode) -> Verdict {
    let current = diff.dest.first().filter(|v| !v.is_delete_marker);
    let verdict = |status, detail: String, dest_version_id: &str| Verdict {
        status,
        detail,
        dest_version_id: dest_version_id.to_owned(),
    };
    match action.action {
        ActionKind::Skip => verdict(VerifyStatus::Match, action.reason.clone(), &action.dest_version_id),
        ActionKind::Conflict => verdict(
            VerifyStatus::ConflictKept,
            action.reason.clone(),
            &action.dest_version_id,
        ),
        // In `all-versions` the row is one delete marker of the history, which the
        // primary's history lacks, whatever its current state.
        ActionKind::DeleteMarker if mode == Mode::AllVersions => verdict(
            VerifyStatus::Missing,
            "delete marker not in the primary's history".to_owned(),
            "",
        ),
        ActionKind::DeleteMarker => verdict(
            VerifyStatus::Unexpected,
            "present in the primary, absent in the target".to_owned(),
            current.map(|c| c.version_id.as_str()).unwrap_or(""),
        ),
        ActionKind::Copy | ActionKind::MultipartCopy | ActionKind::Archived | ActionKind::Pending => {
            let archived = match action.action {
                ActionKind::Archived | ActionKind::Pending => format!(" ({})", action.reason),
                _ => String::new(),
            };
            match (mode, current) {
                (Mode::Latest, Some(c)) => {
                    let mut why = Vec::new();
                    if Some(c.size_bytes) != action.size_bytes {
                        why.push(format!(
                            "size {} in the primary, {} in the replica",
                            c.size_bytes,
                            action.size_bytes.unwrap_or(0)
                        ));
                    }
                    if c.etag != action.etag {
                        why.push(format!(
                            "etag {} in the primary, {} in the replica",
                            c.etag.as_deref().unwrap_or("-"),
                            action.etag.as_deref().unwrap_or("-")
                        ));
                    }
                    if why.is_empty() {
                        why.push(action.reason.clone());
                    }
                    verdict(
                        VerifyStatus::Differs,
                        format!("{}{archived}", why.join("; ")),
                        &c.version_id,
                    )
                }
                (Mode::Latest, None) => verdict(
                    VerifyStatus::Missing,
                    format!("no current version in the primary{archived}"),
                    "",
                ),
                (Mode::AllVersions, _) => verdict(
                    VerifyStatus::Missing,
                    format!("version not in the primary's history{archived}"),
                    "",
                ),
            }
        }
    }
}

/// One row of `verify.csv`.
#[derive(Debug, Serialize)]
struct VerifyRow<'a> {
    key: &'a str,
    source_version_id: &'a str,
    dest_key: &'a str,
    dest_version_id: &'a str,
    status: &'a str,
    detail: &'a str,
}

const VERIFY_COLUMNS: [&str; 6] = [
    "key",
    "source_version_id",
    "dest_key",
    "dest_version_id",
    "status",
    "detail",
];

/// Compares what the listing cannot: content headers, user metadata and tags
/// (`--metadata`) and SHA-256 of the bytes (`--deep`). `Ok(None)`: no difference.
async fn deep_check(
    source: &SourceClient,
    dest: &DestClient,
    cfg: &VerifyCmdConfig,
    action: &PlannedAction,
    dest_version_id: &str,
) -> Result<Option<String>, S3Error> {
    let (sb, db) = (&cfg.source.bucket, &cfg.dest.bucket);
    let mut diffs = Vec::new();
    if cfg.metadata {
        let pair = crate::compare::Pair {
            source_bucket: sb,
            source_key: &action.key,
            source_version_id: &action.source_version_id,
            dest_bucket: db,
            dest_key: &action.dest_key,
            dest_version_id,
        };
        if let Some(why) = crate::compare::metadata_diff(source, dest, pair).await? {
            diffs.push(why);
        }
    }
    if cfg.deep {
        let (s, d) = tokio::try_join!(
            source.sha256_version(sb, &action.key, &action.source_version_id),
            dest.sha256_version(db, &action.dest_key, dest_version_id)
        )?;
        if s != d {
            diffs.push(format!(
                "bytes differ: sha256 {} in the primary, {} in the replica",
                d.0, s.0
            ));
        }
    }
    Ok(if diffs.is_empty() { None } else { Some(diffs.join("; ")) })
}

/// What a verify found.
#[derive(Debug)]
pub struct VerifyRun {
    /// The report directory.
    pub dir: ReportDir,
    /// Versions and bytes per status.
    pub counts: BTreeMap<VerifyStatus, (u64, u64)>,
    /// Target versions and bytes.
    pub target: (u64, u64),
    /// Keys only in the primary.
    pub primary_only: u64,
    /// SHA-256 of verify.csv.
    pub digest: String,
    /// A few keys per status other than `match`, for people.
    pub examples: Vec<(VerifyStatus, Vec<String>)>,
}

impl VerifyRun {
    /// Versions with `status`.
    pub fn count(&self, status: VerifyStatus) -> u64 {
        self.counts.get(&status).map(|c| c.0).unwrap_or(0)
    }

    /// Matched share of the target versions, in percent (100 for an empty target).
    pub fn percent(&self) -> f64 {
        if self.target.0 == 0 {
            100.0
        } else {
            (self.count(VerifyStatus::Match) as f64 * 100.0 / self.target.0 as f64 * 1000.0).floor() / 1000.0
        }
    }

    /// Whether every target version matched.
    pub fn complete(&self) -> bool {
        self.count(VerifyStatus::Match) == self.target.0
    }

    /// Puts the figures into a summary.
    pub fn fill_summary(&self, report: &mut Summary) {
        for s in VerifyStatus::ALL {
            let (n, b) = self.counts.get(&s).copied().unwrap_or_default();
            report.counts.insert(s.as_str().to_owned(), n);
            report.bytes.insert(s.as_str().to_owned(), b);
        }
        report.counts.entry("primary_only".into()).or_insert(self.primary_only);
        report.reports.insert("verify.csv".into(), self.digest.clone());
        let matched = self.counts.get(&VerifyStatus::Match).copied().unwrap_or_default();
        report.extra.insert(
            "completeness".into(),
            serde_json::json!({
                "objects_matched": matched.0,
                "objects_target": self.target.0,
                "bytes_matched": matched.1,
                "bytes_target": self.target.1,
                "percent": self.percent(),
            }),
        );
    }

    /// The one-line result.
    pub fn line(&self) -> String {
        let matched = self.counts.get(&VerifyStatus::Match).copied().unwrap_or_default();
        format!(
            "{:.3}% ({} of {} versions, {} of {}); {} missing, {} differs, {} unexpected, {} conflict-kept",
            self.percent(),
            matched.0,
            self.target.0,
            human_bytes(matched.1),
            human_bytes(self.target.1),
            self.count(VerifyStatus::Missing),
            self.count(VerifyStatus::Differs),
            self.count(VerifyStatus::Unexpected),
            self.count(VerifyStatus::ConflictKept),
        )
    }
}

/// Runs `verify`.
///
/// # Errors
/// Setup errors (exit 2); listing or report errors after (exit 1).
pub async fn run(cfg: VerifyCmdConfig, ctx: &RunContext) -> Result<Outcome, Error> {
    let run = execute(&cfg, ctx, None).await?;
    let mut report = Summary::new("verify", ctx.started, ctx.args.clone());
    run.fill_summary(&mut report);
    report.extra.insert("deep".into(), cfg.deep.into());
    report.extra.insert("metadata".into(), cfg.metadata.into());
    let summary_path = report.write(&run.dir).map_err(Error::Report)?;
    for (status, keys) in &run.examples {
        ctx.say(&format!(
            "{}: {}\n",
            status.as_str(),
            keys.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", ")
        ));
    }
    println!("{}\n{}", run.dir.file("verify.csv").display(), summary_path.display());
    println!("verify: {}", run.line());
    Ok(if run.complete() {
        Outcome::Complete
    } else {
        Outcome::Incomplete
    })
}

/// Checks the destination and writes `verify.csv` into `dir` (or a fresh `verify-...`
/// directory); the caller writes the summary.
///
/// # Errors
/// As [`run`].
pub async fn execute(cfg: &VerifyCmdConfig, ctx: &RunContext, dir: Option<&ReportDir>) -> Result<VerifyRun, Error> {
    let source = SourceClient::connect(&cfg.source_s3).await.map_err(Error::Setup)?;
    let dest = DestClient::connect(&cfg.dest_s3).await.map_err(Error::Setup)?;
    let s = source.bucket_settings(&cfg.source.bucket).await.map_err(Error::Setup)?;
    super::require_source_versioned(&cfg.source, &s)?;
    dest.bucket_settings(&cfg.dest.bucket).await.map_err(Error::Setup)?;
    let dir = match dir {
        Some(d) => d.clone(),
        None => ReportDir::create("verify", cfg.report_dir.as_deref(), ctx.started).map_err(Error::ReportSetup)?,
    };
    let key = RunKey::new(cfg.source.to_string(), cfg.dest.to_string(), super::mode_key(&cfg.plan));
    let evidence = match StateDir::open_existing(&cfg.state_dir, &key) {
        Some(state) => Copied(state.copied_evidence().unwrap_or_default()),
        None => Copied(Default::default()),
    };

    // Listing-only verdicts first, in plan order.
    let mut rows: Vec<(PlannedAction, Verdict)> = Vec::new();
    let progress = Progress::counter("verify", "versions");
    let planning = plan_keys(
        SideInput::Live(&source),
        SideInput::Live(&dest),
        &cfg.source,
        &cfg.dest,
        cfg.list,
        &cfg.plan,
        false,
        &evidence,
        |diff, actions| {
            if cfg
                .only_keys
                .as_ref()
                .is_some_and(|keys| !keys.contains(&diff.source_key))
            {
                return Ok(());
            }
            for a in actions {
                let v = judge(diff, &a, cfg.plan.mode);
                progress.inc(1);
                rows.push((a, v));
            }
            Ok(())
        },
    );
    let plan_summary = tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => return Err(Error::Interrupted),
        s = planning => s?,
    };
    progress.finish();

    // Then the checks that read objects, bounded, in order.
    if cfg.metadata || cfg.deep {
        let checking = Progress::bar("verify", rows.len() as u64, "versions");
        let checked: Vec<(PlannedAction, Verdict)> = futures::stream::iter(rows)
            .map(|(a, mut v)| {
                let (source, dest, cfg, checking) = (&source, &dest, &cfg, &checking);
                async move {
                    checking.inc(1);
                    if v.status == VerifyStatus::Match && !a.is_delete_marker && !v.dest_version_id.is_empty() {
                        match deep_check(source, dest, cfg, &a, &v.dest_version_id).await {
                            Ok(None) => {}
                            Ok(Some(why)) => {
                                v.status = VerifyStatus::Differs;
                                v.detail = why;
                            }
                            Err(e) => {
                                v.status = VerifyStatus::Differs;
                                v.detail = format!("could not compare: {e}");
                            }
                        }
                    }
                    (a, v)
                }
            })
            .buffered(16)
            .collect()
            .await;
        checking.finish();
        rows = checked;
    }
    if ctx.cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }

    let mut csv = CsvReport::create(Some(dir.file("verify.csv"))).map_err(Error::ReportSetup)?;
    csv.write_header(&VERIFY_COLUMNS).map_err(Error::Report)?;
    let mut counts: BTreeMap<VerifyStatus, (u64, u64)> = BTreeMap::new();
    let (mut target_n, mut target_b) = (0u64, 0u64);
    for (a, v) in &rows {
        csv.write(&VerifyRow {
            key: &a.key,
            source_version_id: &a.source_version_id,
            dest_key: &a.dest_key,
            dest_version_id: &v.dest_version_id,
            status: v.status.as_str(),
            detail: &v.detail,
        })
        .map_err(Error::Report)?;
        let size = a.size_bytes.unwrap_or(0);
        let c = counts.entry(v.status).or_default();
        c.0 += 1;
        c.1 += size;
        target_n += 1;
        target_b += size;
    }
    let digest = csv.finish().map_err(Error::Report)?;
    let examples = VerifyStatus::ALL
        .into_iter()
        .filter(|s| *s != VerifyStatus::Match)
        .map(|s| {
            let keys: Vec<String> = rows
                .iter()
                .filter(|(_, v)| v.status == s)
                .map(|(a, _)| a.key.clone())
                .take(5)
                .collect();
            (s, keys)
        })
        .filter(|(_, keys)| !keys.is_empty())
        .collect();
    Ok(VerifyRun {
        dir,
        counts,
        target: (target_n, target_b),
        primary_only: plan_summary.primary_only,
        digest,
        examples,
    })
}
