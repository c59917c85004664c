//! `restore`: plan (or read `--plan`), ask, execute with the engine, journal every outcome
//! in the state directory, and report. A run cut short resumes from its state.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::RunContext;
use crate::cli::{AclsArg, CliError, EngineArg, GlobalArgs, RestoreArgs, SseArg, parse_location};
use crate::cmd::plan::Copied;
use crate::error::{Error, Outcome};
use crate::impact::RulesImpact;
use crate::model::{Location, Side};
use crate::plan::{ActionKind, PlanConfig, PlanSummary, PlanWriter, PlannedAction, read_plan};
use crate::progress::Progress;
use crate::report::{CsvReport, ReportDir, ReportError, ReportFile, Summary, human_bytes};
use crate::restore::{AclPolicy, ActionOutcome, Engine, EngineConfig, Event, LimitStats, Status, StorageClassPolicy};
use crate::rules::ReplicaRules;
use crate::s3::ops::SseChoice;
use crate::s3::{DestClient, ListConfig, S3Config, SourceClient};
use crate::state::{JournalEntry, JournalWriter, OutcomeEntry, RunKey, StateDir, StateError};
use crate::target::{SideInput, plan_actions};

/// Requests in flight when `--concurrency` is not given. Chosen with `scripts/bench`: on the
/// keep-alive local server 256 reached the best client's rate where 128 left it about 13%
/// short (and 64 idle between answers), with no loss on a server that closes every
/// connection; at S3's round trip (about 50 ms for a small copy) 256 in flight allow about
/// 5,000 copies/s, above the 3,500 writes/s a prefix takes, where 128 stop near 2,500.
/// AIMD lowers it where S3 answers SlowDown.
pub const DEFAULT_CONCURRENCY: usize = 256;

/// A validated `restore` (and the restore half of `drill`).
#[derive(Debug, Clone)]
pub struct RestoreCmdConfig {
    /// The replica.
    pub source: Location,
    /// The primary (or scratch).
    pub dest: Location,
    /// The target state.
    pub plan: PlanConfig,
    /// Listing settings.
    pub list: ListConfig,
    /// Source connection.
    pub source_s3: S3Config,
    /// Destination connection.
    pub dest_s3: S3Config,
    /// `--plan FILE`.
    pub plan_file: Option<PathBuf>,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// `--part-size`.
    pub part_size: Option<u64>,
    /// `--acls`.
    pub acls: Option<AclsArg>,
    /// `--storage-class`.
    pub storage_class: Option<String>,
    /// `--sse` with its key.
    pub sse: Option<SseChoice>,
    /// `--restore-archived DAYS` and `--restore-tier`.
    pub restore_archived: Option<(u32, Option<String>)>,
    /// The state directory's base.
    pub state_dir: PathBuf,
    /// `--fresh`.
    pub fresh: bool,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--yes`.
    pub yes: bool,
    /// `--report-dir`.
    pub report_dir: Option<PathBuf>,
    /// `--replication-config`.
    pub replication_config: Option<PathBuf>,
    /// The command the reports are named after (`restore`, or `drill`).
    pub command: &'static str,
    /// `drill --sample N`: restore the versions of N source keys picked at random.
    pub sample: Option<u64>,
    /// `--metadata`: compare headers, metadata and tags of matching versions.
    pub metadata: bool,
    /// `--engine batch-operations`: the Batch settings.
    pub batch: Option<crate::batch::run::BatchConfig>,
}

impl RestoreCmdConfig {
    /// Validates the flags.
    ///
    /// # Errors
    /// A bad URL or value.
    pub fn try_from_args(args: RestoreArgs, global: &GlobalArgs, now: jiff::Timestamp) -> Result<Self, CliError> {
        let batch = if args.engine == EngineArg::BatchOperations {
            Some(batch_config(&args, global)?)
        } else {
            for (flag, given) in [
                ("--batch-role-arn", args.batch_role_arn.is_some()),
                ("--batch-work", args.batch_work.is_some()),
                ("--account-id", args.account_id.is_some()),
                ("--batch-endpoint-url", args.batch_endpoint_url.is_some()),
            ] {
                if given {
                    return Err(CliError::Invalid {
                        flag,
                        message: "goes with --engine batch-operations".into(),
                    });
                }
            }
            None
        };
        let concurrency = args.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if concurrency == 0 {
            return Err(CliError::Invalid {
                flag: "--concurrency",
                message: "must be at least 1".into(),
            });
        }
        let sse = match (args.sse, args.sse_kms_key_id) {
            (None, None) => None,
            (Some(SseArg::Aes256), None) => Some(SseChoice::Aes256),
            (Some(SseArg::AwsKms), key) => Some(SseChoice::Kms(key)),
            (_, Some(_)) => {
                return Err(CliError::Invalid {
                    flag: "--sse-kms-key-id",
                    message: "goes with --sse aws:kms".into(),
                });
            }
        };
        if let Some(p) = args.part_size {
            if p == 0 {
                return Err(CliError::Invalid {
                    flag: "--part-size",
                    message: "must be more than 0".into(),
                });
            }
            if crate::parts::below_s3_minimum(p) {
                warn!(
                    part_size = p,
                    "--part-size is below S3's 5 MiB minimum part size: S3 refuses such parts"
                );
            }
        }
        if args.restore_tier.is_some() && args.restore_archived.is_none() {
            return Err(CliError::Invalid {
                flag: "--restore-tier",
                message: "goes with --restore-archived".into(),
            });
        }
        if args.restore_archived == Some(0) {
            return Err(CliError::Invalid {
                flag: "--restore-archived",
                message: "takes a number of days, at least 1".into(),
            });
        }
        Ok(RestoreCmdConfig {
            source: parse_location("--source", &args.source)?,
            dest: parse_location("--dest", &args.dest)?,
            plan: super::plan_config(&args.target, args.multipart_threshold, now)?,
            list: args.conn.list_config()?,
            source_s3: args.conn.s3_config(Side::Source, global),
            dest_s3: args.conn.s3_config(Side::Dest, global),
            plan_file: args.plan,
            concurrency,
            part_size: args.part_size,
            acls: args.acls,
            storage_class: args.storage_class,
            sse,
            restore_archived: args
                .restore_archived
                .map(|d| (d, args.restore_tier.map(|t| format!("{t:?}")))),
            state_dir: args.state_dir.unwrap_or_else(|| PathBuf::from(".s3-failback")),
            fresh: args.fresh,
            dry_run: args.dry_run,
            yes: args.yes,
            report_dir: args.target.report_dir,
            replication_config: args.target.replication_config,
            command: "restore",
            sample: None,
            metadata: args.target.metadata,
            batch,
        })
    }
}

/// Validates the Batch flags: a role, a work location off the source bucket and off the
/// destination location, a 12-digit account id where given.
fn batch_config(args: &RestoreArgs, global: &GlobalArgs) -> Result<crate::batch::run::BatchConfig, CliError> {
    let role_arn = args.batch_role_arn.clone().ok_or(CliError::Invalid {
        flag: "--batch-role-arn",
        message: "is needed with --engine batch-operations (the IAM role the jobs assume)".into(),
    })?;
    if !role_arn.starts_with("arn:") {
        return Err(CliError::Invalid {
            flag: "--batch-role-arn",
            message: format!("{role_arn} is not an ARN"),
        });
    }
    let work_url = args.batch_work.clone().ok_or(CliError::Invalid {
        flag: "--batch-work",
        message: "is needed with --engine batch-operations (s3://BUCKET/PREFIX for manifests and reports)".into(),
    })?;
    let work = parse_location("--batch-work", &work_url)?;
    let source = parse_location("--source", &args.source)?;
    let dest = parse_location("--dest", &args.dest)?;
    if work.bucket == source.bucket {
        return Err(CliError::Invalid {
            flag: "--batch-work",
            message: "must not be in the source bucket: the replica is never written".into(),
        });
    }
    if work.overlaps(&dest) {
        return Err(CliError::Invalid {
            flag: "--batch-work",
            message: format!(
                "{work} overlaps the destination {dest}: manifests and reports would land among the restored keys"
            ),
        });
    }
    if let Some(id) = &args.account_id
        && (id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(CliError::Invalid {
            flag: "--account-id",
            message: format!("{id} is not a 12-digit AWS account id"),
        });
    }
    Ok(crate::batch::run::BatchConfig {
        role_arn,
        work,
        control: crate::s3::control::ControlConfig {
            s3: args.conn.s3_config(Side::Dest, global),
            endpoint_url: args.batch_endpoint_url.clone(),
            account_id: args.account_id.clone(),
        },
        priority: 10,
    })
}

/// One row of `restore.csv`.
#[derive(Debug, Serialize)]
struct RestoreRow<'a> {
    key: &'a str,
    source_version_id: &'a str,
    dest_key: &'a str,
    dest_version_id: &'a str,
    action: &'a str,
    size: Option<u64>,
    etag_source: &'a str,
    etag_dest: &'a str,
    status: &'a str,
    attempts: u32,
    duration_ms: u64,
    error: &'a str,
    engine: &'a str,
}

const RESTORE_COLUMNS: [&str; 13] = [
    "key",
    "source_version_id",
    "dest_key",
    "dest_version_id",
    "action",
    "size",
    "etag_source",
    "etag_dest",
    "status",
    "attempts",
    "duration_ms",
    "error",
    "engine",
];

fn state_error(e: StateError) -> Error {
    Error::State(e.to_string())
}

/// Everything a restore learnt before writing.
struct Prepared {
    source: SourceClient,
    dest: DestClient,
    engine_cfg: EngineConfig,
    notes: Vec<String>,
    /// The primary's rules towards the replica, where known.
    rules: Option<Arc<ReplicaRules>>,
}

/// Connects both sides, reads the bucket settings once and decides encryption, ACLs,
/// Object Lock and storage class; refuses (exit 2) what cannot work.
async fn prepare(cfg: &RestoreCmdConfig) -> Result<Prepared, Error> {
    let source = SourceClient::connect(&cfg.source_s3).await.map_err(Error::Setup)?;
    let dest = DestClient::connect(&cfg.dest_s3).await.map_err(Error::Setup)?;
    // Server-side copy needs one service that sees both buckets.
    if source.endpoint() != dest.endpoint() {
        return Err(Error::Config(format!(
            "the source and destination are on different endpoints ({} and {}): a server-side copy needs one service that sees both buckets",
            source.endpoint().unwrap_or("AWS"),
            dest.endpoint().unwrap_or("AWS")
        )));
    }
    // The primary's replication rules are read alongside the settings: one round trip
    // less before the first copy, which shows at cross-region latencies.
    let (source_settings, dest_settings, read) = tokio::join!(
        source.full_bucket_settings(&cfg.source.bucket),
        dest.full_bucket_settings(&cfg.dest.bucket),
        super::load_rules(
            cfg.replication_config.as_deref(),
            Some((&dest, cfg.dest.bucket.as_str()))
        )
    );
    let source_settings = match source_settings {
        Ok(s) => s,
        Err(e) if e.is_configuration() && e.kind != crate::s3::S3ErrorKind::AccessDenied => {
            return Err(Error::Setup(e));
        }
        Err(e) => {
            // The replica's ownership, encryption or lock settings may be unreadable to a
            // read-only role; versioning is what must be readable.
            warn!(error = %e, "cannot read every setting of the source bucket");
            source.bucket_settings(&cfg.source.bucket).await.map_err(Error::Setup)?
        }
    };
    super::require_source_versioned(&cfg.source, &source_settings)?;
    let dest_settings = dest_settings.map_err(Error::Setup)?;
    super::require_dest_enabled(&cfg.dest, &dest_settings)?;

    let mut notes = Vec::new();
    let read = read?;
    if let Some(why) = &read.unreadable {
        notes.push(format!(
            "the primary's replication rules could not be read ({why}): storage classes and ACLs follow the replica, deletes the rules never replicated are not named"
        ));
    }
    let rules = read
        .config
        .map(|c| Arc::new(ReplicaRules::new(c, cfg.source.bucket.clone())));
    let replica_kms_rule = rules.as_ref().is_some_and(|r| {
        crate::rules::rules_towards(&r.config, &r.replica_bucket)
            .any(|rule| rule.destination.replica_kms_key_id.is_some())
    });
    let source_kms = source_settings.default_encryption.as_ref().is_some_and(|e| e.is_kms()) || replica_kms_rule;
    let dest_kms = dest_settings.default_encryption.as_ref().is_some_and(|e| e.is_kms());
    let sse = match &cfg.sse {
        Some(choice) => choice.clone(),
        None if source_kms && !dest_kms => {
            return Err(Error::Config(format!(
                "the replica holds SSE-KMS data ({}) but the primary's default encryption is {}: say what to write with --sse AES256, or --sse aws:kms --sse-kms-key-id KEY (a key of the primary's region)",
                if replica_kms_rule {
                    "a replication rule sets a replica KMS key"
                } else {
                    "its default encryption is SSE-KMS"
                },
                dest_settings
                    .default_encryption
                    .as_ref()
                    .map(|e| e.algorithm.as_str())
                    .unwrap_or("none")
            )));
        }
        // Where the destination reports no default, ask for SSE-S3 ourselves.
        None if dest_settings.default_encryption.is_none() => SseChoice::Aes256,
        None => SseChoice::BucketDefault,
    };
    // The default copies grants, except where a rule handed the replicas to the replica
    // bucket's owner (their ACLs are not the primary's); `--acls copy` copies those too.
    let acls = match (dest_settings.acls_accepted, cfg.acls, &rules) {
        (false, _, _) | (true, Some(AclsArg::Skip), _) => AclPolicy::Skip,
        (true, Some(AclsArg::Copy), _) | (true, None, None) => AclPolicy::Copy,
        (true, None, Some(r)) => AclPolicy::ExceptOwnerOverride(r.clone()),
    };
    if cfg.acls == Some(AclsArg::Copy) && !dest_settings.acls_accepted {
        notes.push(format!(
            "bucket {} has ACLs disabled (BucketOwnerEnforced): grants are not copied",
            cfg.dest.bucket
        ));
    }
    let storage_class = match (&cfg.storage_class, &rules) {
        (Some(c), _) => StorageClassPolicy::Override(c.clone()),
        (None, Some(r)) => StorageClassPolicy::Rules(r.clone()),
        (None, None) => StorageClassPolicy::Keep,
    };
    let engine_cfg = EngineConfig {
        source: cfg.source.clone(),
        dest: cfg.dest.clone(),
        concurrency: cfg.concurrency,
        initial_concurrency: cfg.concurrency,
        max_attempts: 10,
        part_size: cfg.part_size,
        acls,
        copy_lock: dest_settings.object_lock,
        sse,
        storage_class,
        restore_archived: cfg.restore_archived.clone(),
        resume_since: None,
    };
    Ok(Prepared {
        source,
        dest,
        engine_cfg,
        notes,
        rules,
    })
}

/// What a restore did, for the command's summary (or a drill's).
#[derive(Debug)]
pub struct RestoreRun {
    /// The report directory.
    pub dir: ReportDir,
    /// The plan's totals.
    pub plan: PlanSummary,
    /// `--dry-run`: nothing was executed.
    pub dry_run: bool,
    /// Writing actions in the plan, and their bytes.
    pub planned_writes: (u64, u64),
    /// Objects and bytes per restore status.
    pub counts: BTreeMap<&'static str, (u64, u64)>,
    /// The AIMD limit's figures.
    pub limit: Option<LimitStats>,
    /// SHA-256 of restore.csv.
    pub restore_digest: Option<String>,
    /// The state directory used.
    pub state_path: PathBuf,
    /// Whether this run resumed an unfinished one.
    pub resumed: bool,
    /// Whether Ctrl-C stopped it.
    pub interrupted: bool,
    /// Wall time of the execution (planning excluded).
    pub elapsed: std::time::Duration,
    /// With `sample`: the source keys picked.
    pub sampled_keys: Option<std::collections::HashSet<String>>,
    /// Writing actions and bytes of the whole plan, before any sampling.
    pub full_writes: (u64, u64),
    /// The newest source version or delete marker the plan saw.
    pub newest_source: Option<jiff::Timestamp>,
    /// What the replication rules mean for the plan's writes.
    pub impact: RulesImpact,
    /// With `--engine batch-operations`: the split's figures and the jobs' ends.
    pub batch: Option<serde_json::Value>,
}

impl RestoreRun {
    /// Objects with `status`.
    pub fn count(&self, status: Status) -> u64 {
        self.counts.get(status.as_str()).map(|c| c.0).unwrap_or(0)
    }

    /// Bytes with `status`.
    pub fn bytes(&self, status: Status) -> u64 {
        self.counts.get(status.as_str()).map(|c| c.1).unwrap_or(0)
    }
}

/// Runs `restore`.
///
/// # Errors
/// Setup errors (exit 2) before writing; state, report or S3 errors after (exit 1);
/// Ctrl-C (exit 130).
pub async fn run(cfg: RestoreCmdConfig, ctx: &RunContext) -> Result<Outcome, Error> {
    let run = execute(&cfg, ctx).await?;
    let dir = &run.dir;
    if run.dry_run {
        let mut report = Summary::new("restore", ctx.started, ctx.args.clone());
        super::summary_counts(&run.plan, &mut report);
        report.extra.insert("dry_run".into(), true.into());
        if let Some(b) = &run.batch {
            report
                .extra
                .insert("batch_operations".into(), serde_json::json!({ "split": b }));
        }
        let path = report.write(dir).map_err(Error::Report)?;
        println!("{}\n{}", dir.file("plan.csv").display(), path.display());
        println!(
            "restore (dry run, nothing written): would write {} versions ({})",
            run.planned_writes.0,
            human_bytes(run.planned_writes.1)
        );
        return Ok(Outcome::Complete);
    }
    let mut report = Summary::new("restore", ctx.started, ctx.args.clone());
    restore_summary(&run, &mut report);
    let summary_path = report.write(dir).map_err(Error::Report)?;
    println!(
        "{}\n{}\n{}",
        dir.file("plan.csv").display(),
        dir.file("restore.csv").display(),
        summary_path.display()
    );
    println!(
        "restore{}: {}",
        if run.interrupted { " (interrupted)" } else { "" },
        status_line(&run)
    );
    if run.interrupted {
        return Err(Error::Interrupted);
    }
    Ok(run_outcome(&run))
}

/// Exit 1 where anything failed, is archived or pending.
pub fn run_outcome(run: &RestoreRun) -> Outcome {
    if run.count(Status::Failed) + run.count(Status::Archived) + run.count(Status::Pending) > 0 {
        Outcome::Incomplete
    } else {
        Outcome::Complete
    }
}

/// The statuses in one line.
pub fn status_line(run: &RestoreRun) -> String {
    format!(
        "{} done, {} skipped, {} conflict, {} archived, {} pending, {} failed",
        run.count(Status::Done),
        run.count(Status::Skipped),
        run.count(Status::Conflict),
        run.count(Status::Archived),
        run.count(Status::Pending),
        run.count(Status::Failed)
    )
}

/// Puts a restore's figures into a summary.
pub fn restore_summary(run: &RestoreRun, report: &mut Summary) {
    for s in Status::ALL {
        report.counts.insert(s.as_str().to_owned(), run.count(s));
        report.bytes.insert(s.as_str().to_owned(), run.bytes(s));
    }
    report.counts.insert("primary_only".to_owned(), run.plan.primary_only);
    if let Some(d) = &run.restore_digest {
        report.reports.insert("restore.csv".to_owned(), d.clone());
    }
    if let Ok(bytes) = std::fs::read(run.dir.file("plan.csv")) {
        use sha2::Digest;
        report
            .reports
            .insert("plan.csv".to_owned(), hex::encode(sha2::Sha256::digest(&bytes)));
    }
    if let Some(stats) = run.limit {
        report.extra.insert(
            "concurrency".into(),
            serde_json::json!({"min": stats.min, "max": stats.max, "final": stats.last, "throttled": stats.throttled}),
        );
    }
    report
        .extra
        .insert("state_dir".into(), run.state_path.display().to_string().into());
    report.extra.insert("resumed".into(), run.resumed.into());
    report.extra.insert("replication".into(), run.impact.to_json());
    report.extra.insert("interrupted".into(), run.interrupted.into());
    if let Some(b) = &run.batch {
        report.extra.insert("batch_operations".into(), b.clone());
    }
}

/// Plans (or resumes, or reads `--plan`), asks, executes and writes `plan.csv` and
/// `restore.csv`; the caller writes the summary.
///
/// # Errors
/// As [`run`], but Ctrl-C is reported in [`RestoreRun::interrupted`] once the reports
/// are written.
pub async fn execute(cfg: &RestoreCmdConfig, ctx: &RunContext) -> Result<RestoreRun, Error> {
    let Prepared {
        source,
        dest,
        mut engine_cfg,
        notes,
        rules,
    } = prepare(cfg).await?;
    let plan_cfg = PlanConfig {
        rules: rules.clone(),
        ..cfg.plan.clone()
    };
    for note in &notes {
        warn!("{note}");
    }
    let key = RunKey::new(cfg.source.to_string(), cfg.dest.to_string(), super::mode_key(&cfg.plan));
    let state = StateDir::open(&cfg.state_dir, &key).map_err(state_error)?;
    if cfg.fresh
        && let Some(old) = state.discard_unfinished().map_err(state_error)?
    {
        info!(started = %old.started, "--fresh: discarded the unfinished run's state");
    }
    let dir = ReportDir::create(cfg.command, cfg.report_dir.as_deref(), ctx.started).map_err(Error::ReportSetup)?;

    // Resume an unfinished run, or plan afresh.
    let unfinished = if cfg.dry_run {
        None
    } else {
        state.unfinished().map_err(state_error)?
    };
    let (actions, summary, resumed) = match &unfinished {
        Some(run) => {
            eprintln!(
                "resuming the run started {} (state in {})",
                run.started,
                state.path().display()
            );
            let file = std::fs::File::open(state.plan_path())
                .map_err(|e| Error::State(format!("cannot open {}: {e}", state.plan_path().display())))?;
            let (actions, summary) = read_plan_file(file, &state.plan_path(), cfg)?;
            (actions, summary, Some(run.clone()))
        }
        None => {
            let (actions, summary) = match &cfg.plan_file {
                Some(path) => {
                    let file = std::fs::File::open(path)
                        .map_err(|e| Error::Config(format!("cannot open plan {}: {e}", path.display())))?;
                    read_plan_file(file, path, cfg)?
                }
                None => {
                    let evidence = Copied(state.copied_evidence().map_err(state_error)?);
                    let mut actions = Vec::new();
                    let progress = Progress::counter("plan", "rows");
                    let planning = plan_actions(
                        SideInput::Live(&source),
                        SideInput::Live(&dest),
                        &cfg.source,
                        &cfg.dest,
                        cfg.list,
                        &plan_cfg,
                        cfg.metadata,
                        &evidence,
                        |a| {
                            progress.inc(1);
                            actions.push(a);
                            Ok(())
                        },
                    );
                    let summary = tokio::select! {
                        biased;
                        _ = ctx.cancel.cancelled() => return Err(Error::Interrupted),
                        s = planning => s?,
                    };
                    progress.finish();
                    (actions, summary)
                }
            };
            (actions, summary, None)
        }
    };
    let full_writes = actions
        .iter()
        .filter(|a| a.action.writes())
        .fold((0u64, 0u64), |(n, b), a| (n + 1, b + a.size_bytes.unwrap_or(0)));
    let newest_source = actions.iter().filter_map(|a| a.last_modified).max();
    let (actions, summary) = match (cfg.sample, &resumed) {
        (Some(n), None) => sample_keys(actions, n, &summary, cfg.part_size),
        _ => (actions, summary),
    };
    write_plan(&dir.file("plan.csv"), cfg, &actions).map_err(Error::ReportSetup)?;
    ctx.say(&super::plan_table(&summary));
    for w in super::plan_warnings(&summary) {
        warn!("{w}");
    }
    let mut impact = RulesImpact::new(rules.as_deref());
    for a in &actions {
        impact.add(a, &engine_cfg.storage_class, &engine_cfg.acls, rules.as_deref());
    }
    for note in impact.notes() {
        ctx.say(&format!("  {note}"));
    }
    if let Some(w) = impact.rereplication_warning(&cfg.source.bucket) {
        warn!("{w}");
    }
    let writes: Vec<&PlannedAction> = actions.iter().filter(|a| a.action.writes()).collect();
    let writes_n = writes.len() as u64;
    let write_bytes: u64 = writes.iter().map(|a| a.size_bytes.unwrap_or(0)).sum();

    // The Batch split, shown before the question (a resumed run splits what is left, below).
    let mut split = None;
    if cfg.batch.is_some() && resumed.is_none() {
        let all: Vec<(u64, PlannedAction)> = actions
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, a)| (i as u64, a))
            .collect();
        let s = batch_split(&source, &engine_cfg, &all).await;
        ctx.say(&s.describe());
        split = Some(s);
    }
    if cfg.dry_run {
        return Ok(RestoreRun {
            dir,
            plan: summary,
            dry_run: true,
            planned_writes: (writes.len() as u64, write_bytes),
            counts: BTreeMap::new(),
            limit: None,
            restore_digest: None,
            state_path: state.path().to_owned(),
            resumed: false,
            interrupted: false,
            elapsed: std::time::Duration::ZERO,
            sampled_keys: None,
            full_writes,
            newest_source,
            impact,
            batch: split.as_ref().map(|s| s.to_json()),
        });
    }
    if resumed.is_none() && !writes.is_empty() && !cfg.yes {
        confirm(writes.len(), write_bytes, &cfg.dest)?;
    }

    // The run's record: the plan it executes, then one journal line per outcome.
    let run = match &resumed {
        Some(r) => r.clone(),
        None => {
            let run = state.begin(ctx.started).map_err(state_error)?;
            write_plan(&state.plan_path(), cfg, &actions).map_err(|e| Error::State(e.to_string()))?;
            run
        }
    };
    let loaded = state.load().map_err(state_error)?;
    let journal = JournalWriter::open(&state).map_err(state_error)?;

    // Uploads the interrupted run left open are aborted before anything else.
    let known_uploads: Vec<String> = loaded.open_uploads.iter().map(|u| u.upload_id.clone()).collect();
    for u in &loaded.open_uploads {
        if let Err(e) = dest.abort_multipart(&cfg.dest.bucket, &u.dest_key, &u.upload_id).await {
            warn!(key = %u.dest_key, error = %e, "could not abort an upload the interrupted run left open");
        } else {
            journal
                .record(JournalEntry::UploadEnded {
                    upload_id: u.upload_id.clone(),
                    completed: false,
                })
                .await
                .map_err(state_error)?;
        }
    }
    abort_stray_uploads(&dest, &cfg.dest, &actions, run.started, &known_uploads).await;

    if resumed.is_some() {
        engine_cfg.resume_since = Some(run.started);
    }
    let finished: BTreeMap<u64, OutcomeEntry> = loaded
        .outcomes
        .into_iter()
        .filter(|(_, o)| o.status != Status::Failed.as_str())
        .collect();

    // restore.csv covers the whole plan: earlier outcomes first, then this run's.
    let mut csv = CsvReport::create(Some(dir.file("restore.csv"))).map_err(Error::ReportSetup)?;
    csv.write_header(&RESTORE_COLUMNS).map_err(Error::Report)?;
    let mut counts: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    for (idx, o) in &finished {
        if let Some(a) = actions.get(*idx as usize) {
            let status = Status::parse(&o.status).unwrap_or(Status::Failed);
            let outcome = ActionOutcome {
                status,
                dest_version_id: o.dest_version_id.clone(),
                etag_dest: o.etag_dest.clone(),
                attempts: o.attempts,
                duration_ms: o.duration_ms,
                error: o.error.clone(),
            };
            write_row(&mut csv, a, &outcome, o.engine.as_deref().unwrap_or("local")).map_err(Error::Report)?;
            let c = counts.entry(status.as_str()).or_default();
            c.0 += 1;
            c.1 += a.size_bytes.unwrap_or(0);
        }
    }

    let exec_started = std::time::Instant::now();
    let mut todo: Vec<(u64, PlannedAction)> = actions
        .iter()
        .enumerate()
        .filter(|(i, _)| !finished.contains_key(&(*i as u64)))
        .map(|(i, a)| (i as u64, a.clone()))
        .collect();
    let mut batch_report = None;
    if let Some(bcfg) = &cfg.batch {
        let mut rec = Recorder {
            journal: &journal,
            csv: &mut csv,
            counts: &mut counts,
        };
        let phase = run_batch_phase(
            bcfg,
            split.take(),
            &source,
            &dest,
            &engine_cfg,
            cfg,
            &actions,
            &todo,
            &loaded.batch_jobs,
            ctx,
            &mut rec,
        )
        .await?;
        if phase.interrupted {
            todo.clear();
        } else {
            todo.retain(|(i, _)| !phase.handled.contains(i));
        }
        batch_report = Some(serde_json::json!({
            "split": phase.split,
            "jobs": phase.jobs,
        }));
    }
    let run_cancel = ctx.cancel.child_token();
    let (tx, mut rx) = mpsc::channel::<Event>(1024);
    let engine = Engine::new(source.clone(), dest.clone(), engine_cfg, tx, run_cancel.clone());
    let todo_writes = todo.iter().filter(|(_, a)| a.action.writes()).count() as u64;
    let progress = Progress::bar("restore", todo_writes, "objects");
    let limit = engine.limit().clone();
    let executor = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.execute(todo).await })
    };
    drop(engine);

    // The recorder: journal first, then the report, for every event.
    let mut record_error: Option<Error> = None;
    let mut failed_n = 0u64;
    let mut last_message: Option<(usize, u64)> = None;
    while let Some(event) = rx.recv().await {
        if record_error.is_some() {
            continue;
        }
        let result: Result<(), Error> = async {
            match event {
                Event::Outcome { idx, action, outcome } => {
                    journal
                        .record(JournalEntry::Outcome(OutcomeEntry {
                            idx,
                            key: action.key.clone(),
                            source_version_id: action.source_version_id.clone(),
                            dest_key: action.dest_key.clone(),
                            dest_version_id: outcome.dest_version_id.clone(),
                            status: outcome.status.as_str().to_owned(),
                            attempts: outcome.attempts,
                            duration_ms: outcome.duration_ms,
                            etag_dest: outcome.etag_dest.clone(),
                            error: outcome.error.clone(),
                            engine: None,
                        }))
                        .await
                        .map_err(state_error)?;
                    write_row(&mut csv, &action, &outcome, "local").map_err(Error::Report)?;
                    let c = counts.entry(outcome.status.as_str()).or_default();
                    c.0 += 1;
                    c.1 += action.size_bytes.unwrap_or(0);
                    if action.action.writes() {
                        progress.inc(1);
                        if outcome.status == Status::Failed {
                            failed_n += 1;
                        }
                        // The message is rebuilt only when what it says changes: a format
                        // and a bar lock per object add up over millions of objects.
                        let shown = (limit.limit(), failed_n);
                        if last_message != Some(shown) {
                            last_message = Some(shown);
                            progress.message(format!("in flight ≤ {}, {} failed", shown.0, shown.1));
                        }
                    }
                }
                Event::UploadStarted {
                    idx,
                    dest_key,
                    upload_id,
                } => {
                    journal
                        .record(JournalEntry::UploadStarted {
                            idx,
                            dest_key,
                            upload_id,
                        })
                        .await
                        .map_err(state_error)?;
                }
                Event::UploadEnded { upload_id, completed } => {
                    journal
                        .record(JournalEntry::UploadEnded { upload_id, completed })
                        .await
                        .map_err(state_error)?;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            // Never go on without the record: stop the run.
            tracing::error!(error = %e, "stopping: the run's record cannot be written");
            run_cancel.cancel();
            record_error = Some(e);
        }
    }
    let _ = executor.await;
    progress.finish();
    let journal_closed = journal.close().await.map_err(state_error);
    if let Some(e) = record_error {
        return Err(e);
    }
    journal_closed?;
    let interrupted = ctx.cancel.is_cancelled();
    abort_stray_uploads(&dest, &cfg.dest, &actions, run.started, &[]).await;
    if !interrupted {
        state.finish().map_err(state_error)?;
    }
    let digest = csv.finish().map_err(Error::Report)?;

    Ok(RestoreRun {
        dir,
        plan: summary,
        dry_run: false,
        planned_writes: (writes_n, write_bytes),
        counts,
        limit: Some(limit.stats()),
        restore_digest: Some(digest),
        state_path: state.path().to_owned(),
        resumed: resumed.is_some(),
        interrupted,
        elapsed: exec_started.elapsed(),
        sampled_keys: cfg.sample.map(|_| actions.iter().map(|a| a.key.clone()).collect()),
        full_writes,
        newest_source,
        impact,
        batch: batch_report,
    })
}

/// Reads a plan file (the state's, or `--plan`) checked against the run's locations, with
/// its totals.
fn read_plan_file(
    file: std::fs::File,
    path: &std::path::Path,
    cfg: &RestoreCmdConfig,
) -> Result<(Vec<PlannedAction>, PlanSummary), Error> {
    let actions =
        read_plan(file, &path.display().to_string(), &cfg.source, &cfg.dest).map_err(|e| Error::Plan(e.to_string()))?;
    let summary = summarize(&actions, cfg.part_size);
    Ok((actions, summary))
}

/// The totals of a list of actions.
fn summarize(actions: &[PlannedAction], part_size: Option<u64>) -> PlanSummary {
    let mut summary = PlanSummary::new(part_size);
    actions.iter().for_each(|a| summary.add(a));
    summary
}

/// Keeps the actions of `n` source keys picked at random (every version of a picked key,
/// so that `all-versions` keeps its order).
fn sample_keys(
    actions: Vec<PlannedAction>,
    n: u64,
    full: &PlanSummary,
    part_size: Option<u64>,
) -> (Vec<PlannedAction>, PlanSummary) {
    use std::hash::BuildHasher;
    let seed = std::collections::hash_map::RandomState::new();
    let mut keys: Vec<(u64, &str)> = Vec::new();
    for a in &actions {
        if keys.last().is_none_or(|(_, k)| *k != a.key) {
            keys.push((seed.hash_one(&a.key), a.key.as_str()));
        }
    }
    keys.sort_unstable();
    let picked: std::collections::HashSet<String> =
        keys.into_iter().take(n as usize).map(|(_, k)| k.to_owned()).collect();
    let kept: Vec<PlannedAction> = actions.into_iter().filter(|a| picked.contains(&a.key)).collect();
    let mut summary = summarize(&kept, part_size);
    summary.primary_only = full.primary_only;
    (kept, summary)
}

fn write_row(csv: &mut CsvReport, a: &PlannedAction, o: &ActionOutcome, engine: &str) -> Result<(), ReportError> {
    csv.write(&RestoreRow {
        key: &a.key,
        source_version_id: &a.source_version_id,
        dest_key: &a.dest_key,
        dest_version_id: o.dest_version_id.as_deref().unwrap_or(""),
        action: a.action.as_str(),
        size: if a.is_delete_marker { None } else { a.size_bytes },
        etag_source: a.etag.as_deref().unwrap_or(""),
        etag_dest: o.etag_dest.as_deref().unwrap_or(""),
        status: o.status.as_str(),
        attempts: o.attempts,
        duration_ms: o.duration_ms,
        error: o.error.as_deref().unwrap_or(""),
        engine,
    })
}

fn write_plan(path: &std::path::Path, cfg: &RestoreCmdConfig, actions: &[PlannedAction]) -> Result<(), ReportError> {
    let sink = ReportFile::create(Some(path.to_owned()))?;
    let io_err = |e: crate::plan::PlanFileError| ReportError::Write {
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    };
    let mut w = PlanWriter::new(sink, path.display().to_string(), &cfg.source, &cfg.dest).map_err(io_err)?;
    for a in actions {
        w.write(a).map_err(io_err)?;
    }
    w.finish().map_err(io_err)?.finish()?;
    Ok(())
}

/// Asks before writing; refuses when nobody can answer.
fn confirm(versions: usize, bytes: u64, dest: &Location) -> Result<(), Error> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Error::Config(format!(
            "refusing to write {versions} versions to {dest} without confirmation: stdin is not a terminal (pass --yes)"
        )));
    }
    eprint!("write {versions} versions ({}) to {dest}? [y/N] ", human_bytes(bytes));
    let mut answer = String::new();
    stdin
        .read_line(&mut answer)
        .map_err(|e| Error::Config(format!("cannot read the answer: {e}")))?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(Error::Config("not confirmed: nothing was written".to_owned()))
    }
}

/// Aborts multipart uploads on the plan's keys that were started since the run began and
/// that the journal does not know: a killed run's leftovers (DESIGN.md "State and resume").
async fn abort_stray_uploads(
    dest: &DestClient,
    loc: &Location,
    actions: &[PlannedAction],
    since: jiff::Timestamp,
    known: &[String],
) {
    if !actions.iter().any(|a| a.action == ActionKind::MultipartCopy) {
        return;
    }
    let keys: std::collections::HashSet<&str> = actions
        .iter()
        .filter(|a| a.action == ActionKind::MultipartCopy)
        .map(|a| a.dest_key.as_str())
        .collect();
    let earliest = since.checked_sub(jiff::SignedDuration::from_secs(60)).unwrap_or(since);
    match dest.list_open_uploads(&loc.bucket, loc.list_prefix()).await {
        Ok(uploads) => {
            for u in uploads {
                let ours = keys.contains(u.key.as_str()) && u.initiated.is_none_or(|t| t >= earliest);
                if ours && !known.contains(&u.upload_id) {
                    match dest.abort_multipart(&loc.bucket, &u.key, &u.upload_id).await {
                        Ok(()) => info!(key = %u.key, upload_id = %u.upload_id, "aborted a multipart upload left open"),
                        Err(e) => warn!(key = %u.key, error = %e, "could not abort a multipart upload left open"),
                    }
                }
            }
        }
        Err(e) => warn!(error = %e, "could not list open multipart uploads"),
    }
}

/// Where outcomes go: the journal first, then `restore.csv` and the counts.
struct Recorder<'a> {
    journal: &'a JournalWriter,
    csv: &'a mut CsvReport,
    counts: &'a mut BTreeMap<&'static str, (u64, u64)>,
}

impl Recorder<'_> {
    async fn record(&mut self, idx: u64, a: &PlannedAction, o: &ActionOutcome, engine: &str) -> Result<(), Error> {
        self.journal
            .record(JournalEntry::Outcome(OutcomeEntry {
                idx,
                key: a.key.clone(),
                source_version_id: a.source_version_id.clone(),
                dest_key: a.dest_key.clone(),
                dest_version_id: o.dest_version_id.clone(),
                status: o.status.as_str().to_owned(),
                attempts: o.attempts,
                duration_ms: o.duration_ms,
                etag_dest: o.etag_dest.clone(),
                error: o.error.clone(),
                engine: Some(engine.to_owned()).filter(|e| *e != "local"),
            }))
            .await
            .map_err(state_error)?;
        write_row(self.csv, a, o, engine).map_err(Error::Report)?;
        let c = self.counts.entry(o.status.as_str()).or_default();
        c.0 += 1;
        c.1 += a.size_bytes.unwrap_or(0);
        Ok(())
    }
}

/// Splits `todo` for the Batch engine. Where grants are copied, each copy candidate's
/// ACL is read (one GetObjectAcl, as the local engine would) to tell the versions whose
/// grants a job cannot carry.
async fn batch_split(
    source: &SourceClient,
    engine_cfg: &EngineConfig,
    todo: &[(u64, PlannedAction)],
) -> crate::batch::Split {
    use futures::StreamExt;
    let rules = crate::batch::SplitRules {
        source: engine_cfg.source.clone(),
        dest: engine_cfg.dest.clone(),
        object_lock: engine_cfg.copy_lock,
    };
    let mut with_grants: std::collections::HashSet<u64> = std::collections::HashSet::new();
    if !matches!(engine_cfg.acls, AclPolicy::Skip) && !engine_cfg.copy_lock {
        let candidates = todo.iter().filter(|(_, a)| {
            matches!(a.action, ActionKind::Copy | ActionKind::MultipartCopy)
                && engine_cfg.acls.copies(&a.key)
                && !a.etag.as_deref().is_some_and(|e| e.contains('-'))
                && a.size_bytes.unwrap_or(0) <= crate::batch::BATCH_COPY_MAX_BYTES
        });
        let bucket = &engine_cfg.source.bucket;
        let found: Vec<(u64, bool)> = futures::stream::iter(candidates)
            .map(|(i, a)| async move {
                let needs = match source.get_acl(bucket, &a.key, &a.source_version_id).await {
                    // A private ACL (the owner's FULL_CONTROL alone) is what a copy made by
                    // the job's account gets anyway.
                    Ok(grants) => {
                        !(grants.len() <= 1
                            && grants.iter().all(|g| {
                                matches!(g.grantee, crate::s3::ops::Grantee::Id(_)) && g.permission == "FULL_CONTROL"
                            }))
                    }
                    // Unreadable: the local engine decides (and reports) it.
                    Err(e) => {
                        warn!(key = %a.key, error = %e, "cannot read the ACL: the version stays local");
                        true
                    }
                };
                (*i, needs)
            })
            .buffer_unordered(engine_cfg.concurrency.clamp(1, 64))
            .collect()
            .await;
        with_grants = found.into_iter().filter(|(_, n)| *n).map(|(i, _)| i).collect();
    }
    crate::batch::split(
        todo,
        &rules,
        |i| with_grants.contains(&i),
        |a| engine_cfg.storage_class.class_for(&a.key, a.storage_class.as_deref()),
    )
}

/// What the Batch phase did.
struct BatchPhase {
    /// Plan rows whose outcome the Batch phase recorded; the local engine runs the rest
    /// (its share of the split, failed tasks, and rows that write nothing).
    handled: std::collections::HashSet<u64>,
    /// Ctrl-C while following a job: the job runs on, the local engine does not start.
    interrupted: bool,
    /// The split's figures.
    split: serde_json::Value,
    /// Each job's id and end, for summary.json.
    jobs: Vec<serde_json::Value>,
}

/// Jobs an interrupted run created and that did not fail outright, once each.
fn jobs_to_follow(known: &[crate::state::BatchJobEntry]) -> Vec<&crate::state::BatchJobEntry> {
    let failed: std::collections::HashSet<&str> = known
        .iter()
        .filter(|k| k.failed)
        .filter_map(|k| k.job_id.as_deref())
        .collect();
    let mut seen = std::collections::HashSet::new();
    known
        .iter()
        .filter(|k| !k.failed)
        .filter(|k| {
            k.job_id
                .as_deref()
                .is_some_and(|id| !failed.contains(id) && seen.insert(id))
        })
        .collect()
}

fn interrupted_note(job_id: &str, account: &str) {
    eprintln!(
        "interrupted: batch job {job_id} keeps running. To follow it and finish the restore, run the same command again; to cancel it:\n  aws s3control update-job-status --account-id {account} --job-id {job_id} --requested-job-status Cancelled"
    );
}

/// The Batch phase: follows and merges the jobs an interrupted run created, splits what
/// is left (unless `split` was made already), and runs the split's jobs one after another
/// (generation order), merging each job's report into the journal and `restore.csv`.
///
/// A failed task and every later version of its key go to the local engine (after the
/// jobs, so a key's versions keep their order). A job that fails outright ends the Batch
/// phase: its tasks without a result, and every write after them of the same keys, are
/// reported failed and left for the operator (a rerun makes a new job); other keys' local
/// work still runs. Ctrl-C leaves the job running and the local engine unstarted.
#[allow(clippy::too_many_arguments)]
async fn run_batch_phase(
    bcfg: &crate::batch::run::BatchConfig,
    split: Option<crate::batch::Split>,
    source: &SourceClient,
    dest: &DestClient,
    engine_cfg: &EngineConfig,
    cfg: &RestoreCmdConfig,
    actions: &[PlannedAction],
    todo: &[(u64, PlannedAction)],
    known: &[crate::state::BatchJobEntry],
    ctx: &RunContext,
    rec: &mut Recorder<'_>,
) -> Result<BatchPhase, Error> {
    use crate::batch::run::{BatchError, ENGINE, JobContext, merge_known_job, run_job};
    let mut handled: std::collections::HashSet<u64> = std::collections::HashSet::new();
    let mut jobs_json = Vec::new();
    let follow = jobs_to_follow(known);
    let needs_control = !follow.is_empty() || split.as_ref().is_none_or(|s| !s.jobs.is_empty());
    let control = if needs_control {
        Some(
            crate::s3::control::ControlClient::connect(&bcfg.control)
                .await
                .map_err(Error::Setup)?,
        )
    } else {
        None
    };
    let batch_err = |e: BatchError| match e {
        BatchError::State(e) => state_error(e),
        BatchError::S3(e) => Error::S3(e),
        other => Error::S3Listing(other.to_string()),
    };
    let jctx = control.as_ref().map(|control| JobContext {
        control,
        dest,
        cfg: bcfg,
        source: &cfg.source,
        dest_loc: &cfg.dest,
        sse: &engine_cfg.sse,
        actions,
        journal: rec.journal,
        cancel: &ctx.cancel,
        known,
        concurrency: engine_cfg.concurrency,
    });

    // Jobs of the interrupted run first: what they copied is not copied again.
    if let Some(jctx) = &jctx
        && !follow.is_empty()
    {
        let pending: std::collections::HashMap<(&str, &str), u64> = todo
            .iter()
            .filter(|(_, a)| matches!(a.action, ActionKind::Copy | ActionKind::MultipartCopy))
            .map(|(i, a)| ((a.key.as_str(), a.source_version_id.as_str()), *i))
            .collect();
        for k in follow {
            let out = merge_known_job(jctx, k, &pending).await.map_err(batch_err)?;
            let job_id = out.job_id.clone().unwrap_or_default();
            if out.interrupted {
                interrupted_note(&job_id, jctx.control.account_id());
                return Ok(BatchPhase {
                    handled,
                    interrupted: true,
                    split: serde_json::Value::Null,
                    jobs: jobs_json,
                });
            }
            for (i, o) in &out.done {
                if handled.insert(*i) {
                    rec.record(*i, &actions[*i as usize], o, ENGINE).await?;
                }
            }
            jobs_json.push(serde_json::json!({
                "job_id": job_id,
                "resumed": true,
                "succeeded": out.done.len(),
                "failed_tasks": out.failed_tasks.len(),
                "failure": out.job_failure,
            }));
        }
    }
    let split = match split {
        Some(s) => s,
        None => {
            let left: Vec<(u64, PlannedAction)> = todo.iter().filter(|(i, _)| !handled.contains(i)).cloned().collect();
            let s = batch_split(source, engine_cfg, &left).await;
            ctx.say(&s.describe());
            s
        }
    };
    let split_json = split.to_json();
    let Some(jctx) = &jctx else {
        return Ok(BatchPhase {
            handled,
            interrupted: false,
            split: split_json,
            jobs: jobs_json,
        });
    };
    // Keys whose later versions may no longer go into jobs.
    let mut diverted: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut stopped: Option<String> = None;
    for (n, job) in split.jobs.iter().enumerate() {
        let mut job = job.clone();
        // Tasks of a diverted key stay out of handled: the local engine runs them.
        job.tasks
            .retain(|i| !diverted.contains(actions[*i as usize].dest_key.as_str()));
        if let Some(why) = &stopped {
            for i in &job.tasks {
                let o = failed_outcome(format!("not started: {why}"));
                rec.record(*i, &actions[*i as usize], &o, ENGINE).await?;
                handled.insert(*i);
            }
            continue;
        }
        if job.tasks.is_empty() {
            continue;
        }
        let out = run_job(jctx, n as u32, &job).await.map_err(batch_err)?;
        let job_id = out.job_id.clone().unwrap_or_default();
        if out.interrupted {
            interrupted_note(&job_id, jctx.control.account_id());
            return Ok(BatchPhase {
                handled,
                interrupted: true,
                split: split_json,
                jobs: jobs_json,
            });
        }
        for (i, o) in &out.done {
            rec.record(*i, &actions[*i as usize], o, ENGINE).await?;
            handled.insert(*i);
        }
        jobs_json.push(serde_json::json!({
            "job_id": job_id,
            "generation": job.generation,
            "storage_class": job.storage_class,
            "tasks": job.tasks.len(),
            "succeeded": out.done.len(),
            "failed_tasks": out.failed_tasks.len(),
            "failure": out.job_failure,
        }));
        match &out.job_failure {
            Some(reason) => {
                let why = format!("batch job {job_id} failed ({reason})");
                eprintln!(
                    "{why}: its unfinished tasks are reported failed and not copied locally; fix the cause and run the same command again (a new job is created), or rerun with --engine local"
                );
                for i in &job.tasks {
                    if handled.insert(*i) {
                        rec.record(*i, &actions[*i as usize], &failed_outcome(why.clone()), ENGINE)
                            .await?;
                        diverted.insert(actions[*i as usize].dest_key.as_str());
                    }
                }
                stopped = Some(why);
            }
            None => {
                for (i, why) in &out.failed_tasks {
                    warn!(key = %actions[*i as usize].key, error = %why, "batch task failed: retried by the local engine");
                    diverted.insert(actions[*i as usize].dest_key.as_str());
                }
            }
        }
    }
    if let Some(why) = &stopped {
        // Later writes of keys whose batch copies did not happen would come out of order.
        let mut blocked: Vec<u64> = todo
            .iter()
            .map(|(i, _)| *i)
            .filter(|i| !handled.contains(i) && diverted.contains(actions[*i as usize].dest_key.as_str()))
            .collect();
        blocked.sort_unstable();
        for i in blocked {
            let o = failed_outcome(format!("not started: {why}"));
            rec.record(i, &actions[i as usize], &o, "local").await?;
            handled.insert(i);
        }
    }
    Ok(BatchPhase {
        handled,
        interrupted: false,
        split: split_json,
        jobs: jobs_json,
    })
}

fn failed_outcome(error: String) -> ActionOutcome {
    ActionOutcome {
        status: Status::Failed,
        dest_version_id: None,
        etag_dest: None,
        attempts: 0,
        duration_ms: 0,
        error: Some(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn config(extra: &str) -> Result<RestoreCmdConfig, CliError> {
        let line = format!("s3-failback restore --source s3://rep/data --dest s3://pri/data {extra}");
        let cli = Cli::try_parse_from(line.split_whitespace()).expect("parses");
        let Command::Restore(args) = cli.command else {
            panic!("not restore")
        };
        RestoreCmdConfig::try_from_args(args, &cli.global, jiff::Timestamp::UNIX_EPOCH)
    }

    const ENGINE: &str = "--engine batch-operations --batch-role-arn arn:aws:iam::123456789012:role/r";

    #[test]
    fn batch_flags_are_checked_before_anything_runs() {
        let ok = config(&format!(
            "{ENGINE} --batch-work s3://ops/work --account-id 123456789012"
        ))
        .unwrap();
        let b = ok.batch.expect("batch config");
        assert_eq!(b.work, Location::new("ops", "work"));
        assert_eq!(b.control.account_id.as_deref(), Some("123456789012"));
        // The work location may share the primary's bucket outside the restored prefix.
        assert!(config(&format!("{ENGINE} --batch-work s3://pri/batch-work")).is_ok());

        let refused = [
            ("--engine batch-operations --batch-work s3://ops/w", "--batch-role-arn"),
            (ENGINE, "--batch-work"),
            (&format!("{ENGINE} --batch-work s3://rep/elsewhere"), "--batch-work"),
            (&format!("{ENGINE} --batch-work s3://pri/data/work"), "--batch-work"),
            (&format!("{ENGINE} --batch-work s3://pri"), "--batch-work"),
            (
                &format!("{ENGINE} --batch-work s3://ops/w --account-id 12345"),
                "--account-id",
            ),
            (
                "--engine batch-operations --batch-role-arn role --batch-work s3://ops/w",
                "--batch-role-arn",
            ),
            ("--batch-work s3://ops/w", "--batch-work"),
            ("--account-id 123456789012", "--account-id"),
        ];
        for (extra, flag) in refused {
            match config(extra) {
                Err(CliError::Invalid { flag: f, .. }) => assert_eq!(f, flag, "{extra}"),
                other => panic!("{extra}: {other:?}"),
            }
        }
    }
}
