//! `plan`: both sides listed (or read from inventories), the target state planned key by
//! key into `plan.csv`, with a summary for people and one for scripts.

use std::path::PathBuf;
use std::sync::Arc;

use tracing::warn;

use crate::RunContext;
use crate::cli::{GlobalArgs, OutTarget, PlanArgs, out_target, parse_location};
use crate::error::{Error, Outcome};
use crate::impact::RulesImpact;
use crate::model::{Location, Side};
use crate::plan::{Evidence, PlanConfig, PlanWriter};
use crate::progress::Progress;
use crate::report::{ReportDir, ReportFile, Summary};
use crate::restore::{AclPolicy, StorageClassPolicy};
use crate::rules::ReplicaRules;
use crate::s3::{DestClient, ListConfig, S3Config, SourceClient};
use crate::state::{RunKey, StateDir};
use crate::target::{SideInput, plan_actions};

/// A validated `plan`.
#[derive(Debug, Clone)]
pub struct PlanCmdConfig {
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
    /// Source inventory instead of a listing.
    pub source_inventory: Option<PathBuf>,
    /// Destination inventory instead of a listing.
    pub dest_inventory: Option<PathBuf>,
    /// `--metadata`: compare headers, metadata and tags of matching versions.
    pub metadata: bool,
    /// `--replication-config`: the primary's rules from a file.
    pub replication_config: Option<PathBuf>,
    /// Where the CSV goes.
    pub out: OutTarget,
    /// `--report-dir`.
    pub report_dir: Option<PathBuf>,
}

impl PlanCmdConfig {
    /// Validates the flags.
    ///
    /// # Errors
    /// A bad URL or value.
    pub fn try_from_args(
        args: PlanArgs,
        global: &GlobalArgs,
        now: jiff::Timestamp,
    ) -> Result<Self, crate::cli::CliError> {
        Ok(PlanCmdConfig {
            source: parse_location("--source", &args.source)?,
            dest: parse_location("--dest", &args.dest)?,
            plan: super::plan_config(&args.target, None, now)?,
            list: args.conn.list_config()?,
            source_s3: args.conn.s3_config(Side::Source, global),
            dest_s3: args.conn.s3_config(Side::Dest, global),
            source_inventory: args.source_inventory,
            dest_inventory: args.dest_inventory,
            metadata: args.target.metadata,
            replication_config: args.target.replication_config,
            out: out_target(args.out.as_deref()),
            report_dir: args.target.report_dir,
        })
    }
}

/// Runs `plan`.
///
/// # Errors
/// Setup errors (exit 2) before the plan is written; listing or report errors after.
pub async fn run(cfg: PlanCmdConfig, ctx: &RunContext) -> Result<Outcome, Error> {
    let source_client = match &cfg.source_inventory {
        Some(_) => None,
        None => {
            let c = SourceClient::connect(&cfg.source_s3).await.map_err(Error::Setup)?;
            let s = c.bucket_settings(&cfg.source.bucket).await.map_err(Error::Setup)?;
            super::require_source_versioned(&cfg.source, &s)?;
            Some(c)
        }
    };
    let dest_client = match &cfg.dest_inventory {
        Some(_) => None,
        None => {
            let c = DestClient::connect(&cfg.dest_s3).await.map_err(Error::Setup)?;
            c.bucket_settings(&cfg.dest.bucket).await.map_err(Error::Setup)?;
            Some(c)
        }
    };
    let read = super::load_rules(
        cfg.replication_config.as_deref(),
        dest_client.as_ref().map(|c| (c, cfg.dest.bucket.as_str())),
    )
    .await?;
    if let Some(why) = &read.unreadable {
        warn!(
            "the primary's replication rules could not be read ({why}): deletes that the rules never replicated are not named"
        );
    }
    let rules = read
        .config
        .map(|c| Arc::new(ReplicaRules::new(c, cfg.source.bucket.clone())));
    let plan_cfg = PlanConfig {
        rules: rules.clone(),
        ..cfg.plan.clone()
    };
    // What a restore with default settings would write, as far as the rules change it.
    let (classes, acls) = match &rules {
        Some(r) => (
            StorageClassPolicy::Rules(r.clone()),
            AclPolicy::ExceptOwnerOverride(r.clone()),
        ),
        None => (StorageClassPolicy::Keep, AclPolicy::Copy),
    };
    let mut impact = RulesImpact::new(rules.as_deref());
    let dir = ReportDir::create("plan", cfg.report_dir.as_deref(), ctx.started).map_err(Error::ReportSetup)?;
    let csv_path = match &cfg.out {
        OutTarget::ReportDir => Some(dir.file("plan.csv")),
        OutTarget::File(p) => Some(p.clone()),
        OutTarget::Stdout => None,
    };
    let sink = ReportFile::create(csv_path.clone()).map_err(Error::ReportSetup)?;
    let mut writer = PlanWriter::new(
        sink,
        csv_path.as_ref().map(|p| p.display().to_string()).unwrap_or("-".into()),
        &cfg.source,
        &cfg.dest,
    )
    .map_err(|e| Error::Plan(e.to_string()))?;

    let source_input = match (&cfg.source_inventory, &source_client) {
        (Some(p), _) => SideInput::Inventory(p.clone()),
        (None, Some(c)) => SideInput::Live(c),
        (None, None) => unreachable!("a client exists when no inventory is given"),
    };
    let dest_input = match (&cfg.dest_inventory, &dest_client) {
        (Some(p), _) => SideInput::Inventory(p.clone()),
        (None, Some(c)) => SideInput::Live(c),
        (None, None) => unreachable!("a client exists when no inventory is given"),
    };
    // An earlier restore's journal is evidence of identity (copies whose ETag changed).
    let key = RunKey::new(cfg.source.to_string(), cfg.dest.to_string(), super::mode_key(&cfg.plan));
    let evidence = Copied(
        StateDir::open_existing(std::path::Path::new(".s3-failback"), &key)
            .and_then(|s| s.copied_evidence().ok())
            .unwrap_or_default(),
    );
    let progress = Progress::counter("plan", "rows");
    let planning = plan_actions(
        source_input,
        dest_input,
        &cfg.source,
        &cfg.dest,
        cfg.list,
        &plan_cfg,
        cfg.metadata,
        &evidence,
        |action| {
            progress.inc(1);
            impact.add(&action, &classes, &acls, rules.as_deref());
            writer.write(&action).map_err(|e| {
                Error::Report(crate::report::ReportError::Write {
                    path: PathBuf::from("plan.csv"),
                    source: std::io::Error::other(e.to_string()),
                })
            })
        },
    );
    let summary = tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => return Err(Error::Interrupted),
        s = planning => s?,
    };
    progress.finish();
    let sink = writer.finish().map_err(|e| Error::Plan(e.to_string()))?;
    let digest = sink.finish().map_err(Error::Report)?;

    let mut report = Summary::new("plan", ctx.started, ctx.args.clone());
    super::summary_counts(&summary, &mut report);
    report.extra.insert("source".into(), cfg.source.to_string().into());
    report.extra.insert("dest".into(), cfg.dest.to_string().into());
    report.extra.insert("mode".into(), super::mode_key(&cfg.plan).into());
    report.extra.insert("requests".into(), summary.requests.into());
    report.extra.insert("rules".into(), read.note);
    report.extra.insert("replication".into(), impact.to_json());
    report
        .extra
        .insert("conflict_keys".into(), summary.conflict_keys.clone().into());
    if let Some(p) = &csv_path {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        report.reports.insert(name, digest);
    }
    let summary_path = report.write(&dir).map_err(Error::Report)?;
    ctx.say(&super::plan_table(&summary));
    for note in impact.notes() {
        ctx.say(&format!("  {note}"));
    }
    for w in super::plan_warnings(&summary)
        .into_iter()
        .chain(impact.rereplication_warning(&cfg.source.bucket))
    {
        warn!("{w}");
    }
    let line = format!("plan: {}", super::plan_line(&summary));
    match &cfg.out {
        OutTarget::Stdout => eprintln!("{}\n{line}", summary_path.display()),
        _ => {
            if let Some(p) = &csv_path {
                println!("{}", p.display());
            }
            println!("{}\n{line}", summary_path.display());
        }
    }
    Ok(Outcome::Complete)
}

/// The journal's record of earlier copies, as evidence of identity for the planner.
pub(crate) struct Copied(pub(crate) std::collections::HashMap<String, String>);

impl Evidence for Copied {
    fn copied_from(&self, _dest_key: &str, dest_version_id: &str) -> Option<&str> {
        self.0.get(dest_version_id).map(String::as_str)
    }
}
