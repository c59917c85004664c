//! `drill`: rehearses a failback without touching production. Restores the replica (or a
//! random sample of its keys) into a scratch location, verifies it, measures throughput,
//! and projects the time to restore the whole replica (the RTO) and the age of its newest
//! version (the RPO seen). `--cleanup` then deletes, by version id, exactly the scratch
//! versions its own journal recorded.
//!
//! The copying and checking are `restore`'s and `verify`'s; this module adds the scratch
//! checks, the figures and the cleanup.

use std::collections::HashSet;
use std::path::PathBuf;

use futures::StreamExt;
use jiff::Timestamp;
use serde::Serialize;
use tracing::{info, warn};

use crate::RunContext;
use crate::cli::{CliError, DrillArgs, GlobalArgs, parse_location};
use crate::cmd::restore::{RestoreCmdConfig, RestoreRun, execute as restore_execute, restore_summary, status_line};
use crate::cmd::verify::{VerifyCmdConfig, VerifyRun, execute as verify_execute};
use crate::error::{Error, Outcome};
use crate::model::{Location, Side};
use crate::report::{ReportDir, Summary, human_bytes};
use crate::restore::Status;
use crate::s3::DestClient;
use crate::state::{RunKey, StateDir};

/// A validated `drill`.
#[derive(Debug, Clone)]
pub struct DrillConfig {
    /// The restore into scratch.
    pub restore: RestoreCmdConfig,
    /// The verify of scratch.
    pub verify: VerifyCmdConfig,
    /// `--cleanup`.
    pub cleanup: bool,
}

impl DrillConfig {
    /// Validates the flags.
    ///
    /// # Errors
    /// A bad URL or value, or a scratch location in the source bucket.
    pub fn try_from_args(args: DrillArgs, global: &GlobalArgs, now: Timestamp) -> Result<Self, CliError> {
        let source = parse_location("--source", &args.source)?;
        let scratch = parse_location("--scratch", &args.scratch)?;
        if scratch.bucket == source.bucket {
            return Err(CliError::Invalid {
                flag: "--scratch",
                message: format!("{scratch} is in the source bucket: a drill never writes to the replica"),
            });
        }
        if args.sample == Some(0) {
            return Err(CliError::Invalid {
                flag: "--sample",
                message: "takes a number of keys, at least 1".into(),
            });
        }
        let plan = crate::cmd::plan_config(&args.target, None, now)?;
        let state_dir = args.state_dir.unwrap_or_else(|| PathBuf::from(".s3-failback"));
        let restore = RestoreCmdConfig {
            source: source.clone(),
            dest: scratch.clone(),
            plan: plan.clone(),
            list: args.conn.list_config()?,
            source_s3: args.conn.s3_config(Side::Source, global),
            dest_s3: args.conn.s3_config(Side::Dest, global),
            plan_file: None,
            concurrency: crate::cmd::restore::DEFAULT_CONCURRENCY,
            part_size: None,
            acls: None,
            storage_class: None,
            sse: None,
            restore_archived: None,
            state_dir: state_dir.clone(),
            fresh: false,
            dry_run: false,
            // A drill writes only to its scratch location and does not ask.
            yes: true,
            report_dir: args.target.report_dir.clone(),
            replication_config: args.target.replication_config.clone(),
            command: "drill",
            sample: args.sample,
            metadata: false,
            batch: None,
        };
        let verify = VerifyCmdConfig {
            source,
            dest: scratch,
            plan,
            list: args.conn.list_config()?,
            source_s3: args.conn.s3_config(Side::Source, global),
            dest_s3: args.conn.s3_config(Side::Dest, global),
            metadata: false,
            deep: false,
            state_dir,
            report_dir: None,
            only_keys: None,
        };
        Ok(DrillConfig {
            restore,
            verify,
            cleanup: args.cleanup,
        })
    }
}

/// `drill.json`: the drill's figures for machines.
#[derive(Debug, Serialize)]
struct DrillReport {
    source: String,
    scratch: String,
    started: String,
    finished: String,
    sample_keys: Option<u64>,
    objects_restored: u64,
    bytes_restored: u64,
    objects_failed: u64,
    wall_seconds: f64,
    throughput_objects_per_s: f64,
    throughput_bytes_per_s: f64,
    replica_objects_to_restore: u64,
    replica_bytes_to_restore: u64,
    rto_seconds: f64,
    rpo_seconds: Option<i64>,
    verify_percent: f64,
    verify_complete: bool,
    cleanup: Option<CleanupReport>,
    failures: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
struct CleanupReport {
    versions_deleted: u64,
    versions_failed: u64,
    scratch_empty: bool,
}

/// Refuses a scratch location holding versions this drill did not write.
async fn check_scratch(dest: &DestClient, scratch: &Location, evidence: &HashSet<String>) -> Result<(), Error> {
    let listing = dest.list_versions(scratch, crate::s3::ListConfig::default());
    let mut listing = std::pin::pin!(listing);
    let mut foreign = 0u64;
    let mut example = None;
    while let Some(v) = listing.next().await {
        let v = v.map_err(Error::Setup)?;
        if !evidence.contains(&v.version_id) {
            foreign += 1;
            example.get_or_insert(v.key);
        }
    }
    if foreign > 0 {
        return Err(Error::Config(format!(
            "scratch location {scratch} holds {foreign} versions this drill did not write (for example {:?}): choose an empty prefix",
            example.unwrap_or_default()
        )));
    }
    Ok(())
}

/// Runs `drill`.
///
/// # Errors
/// Setup errors (exit 2), errors during the run (exit 1), Ctrl-C (exit 130).
pub async fn run(cfg: DrillConfig, ctx: &RunContext) -> Result<Outcome, Error> {
    let key = RunKey::new(
        cfg.restore.source.to_string(),
        cfg.restore.dest.to_string(),
        crate::cmd::mode_key(&cfg.restore.plan),
    );
    let dest = DestClient::connect(&cfg.restore.dest_s3).await.map_err(Error::Setup)?;
    dest.bucket_settings(&cfg.restore.dest.bucket)
        .await
        .map_err(Error::Setup)?;
    let state = StateDir::open_existing(&cfg.restore.state_dir, &key);
    let written: HashSet<String> = match &state {
        Some(s) => s
            .recorded_writes()
            .map_err(|e| Error::State(e.to_string()))?
            .into_iter()
            .map(|(_, v)| v)
            .collect(),
        None => HashSet::new(),
    };
    check_scratch(&dest, &cfg.restore.dest, &written).await?;

    let started = Timestamp::now();
    let restored: RestoreRun = restore_execute(&cfg.restore, ctx).await?;
    let dir = restored.dir.clone();
    let mut summary = Summary::new("drill", ctx.started, ctx.args.clone());
    restore_summary(&restored, &mut summary);
    if restored.interrupted {
        summary.write(&dir).map_err(Error::Report)?;
        return Err(Error::Interrupted);
    }
    ctx.say(&format!("restore: {}\n", status_line(&restored)));

    let mut verify_cfg = cfg.verify.clone();
    verify_cfg.only_keys = restored.sampled_keys.clone();
    let verified: VerifyRun = verify_execute(&verify_cfg, ctx, Some(&dir)).await?;
    verified.fill_summary(&mut summary);

    let cleanup = if cfg.cleanup {
        Some(clean_up(&dest, &cfg, &key).await?)
    } else {
        None
    };

    let secs = restored.elapsed.as_secs_f64().max(0.001);
    let done = restored.count(Status::Done);
    let done_bytes = restored.bytes(Status::Done);
    let objects_per_s = done as f64 / secs;
    let bytes_per_s = done_bytes as f64 / secs;
    let (all_objects, all_bytes) = restored.full_writes;
    // The whole replica at the measured rate: whichever of objects and bytes takes longer.
    let rto = [
        if objects_per_s > 0.0 {
            all_objects as f64 / objects_per_s
        } else {
            0.0
        },
        if bytes_per_s > 0.0 {
            all_bytes as f64 / bytes_per_s
        } else {
            0.0
        },
    ]
    .into_iter()
    .fold(0.0, f64::max);
    let rpo = restored
        .newest_source
        .map(|t| Timestamp::now().duration_since(t).as_secs());
    let failures: Vec<String> = verified
        .examples
        .iter()
        .flat_map(|(s, keys)| keys.iter().map(move |k| format!("{} {k:?}", s.as_str())))
        .collect();
    let report = DrillReport {
        source: cfg.restore.source.to_string(),
        scratch: cfg.restore.dest.to_string(),
        started: started.to_string(),
        finished: Timestamp::now().to_string(),
        sample_keys: cfg.restore.sample,
        objects_restored: done,
        bytes_restored: done_bytes,
        objects_failed: restored.count(Status::Failed),
        wall_seconds: secs,
        throughput_objects_per_s: objects_per_s,
        throughput_bytes_per_s: bytes_per_s,
        replica_objects_to_restore: all_objects,
        replica_bytes_to_restore: all_bytes,
        rto_seconds: rto,
        rpo_seconds: rpo,
        verify_percent: verified.percent(),
        verify_complete: verified.complete(),
        cleanup: cleanup.clone(),
        failures,
    };
    let json = serde_json::to_vec_pretty(&report).map_err(|e| Error::Report(write_err(&dir, "drill.json", e)))?;
    std::fs::write(dir.file("drill.json"), json).map_err(|e| Error::Report(write_err(&dir, "drill.json", e)))?;
    std::fs::write(dir.file("drill.md"), drill_markdown(&report, &restored, &verified))
        .map_err(|e| Error::Report(write_err(&dir, "drill.md", e)))?;

    summary.extra.insert("rto_seconds".into(), report.rto_seconds.into());
    summary.extra.insert(
        "rpo_seconds".into(),
        report.rpo_seconds.map(serde_json::Value::from).unwrap_or_default(),
    );
    summary.extra.insert(
        "throughput_objects_per_s".into(),
        report.throughput_objects_per_s.into(),
    );
    summary
        .extra
        .insert("throughput_bytes_per_s".into(), report.throughput_bytes_per_s.into());
    if let Some(c) = &cleanup {
        summary
            .extra
            .insert("cleanup".into(), serde_json::to_value(c).unwrap_or_default());
    }
    let summary_path = summary.write(&dir).map_err(Error::Report)?;
    println!(
        "{}\n{}\n{}\n{}\n{}",
        dir.file("restore.csv").display(),
        dir.file("verify.csv").display(),
        dir.file("drill.md").display(),
        dir.file("drill.json").display(),
        summary_path.display()
    );
    println!(
        "drill: {done} objects ({}) in {secs:.1} s, {objects_per_s:.1} objects/s; verify {:.3}%; projected RTO {}{}",
        human_bytes(done_bytes),
        verified.percent(),
        humantime::format_duration(std::time::Duration::from_secs(rto.ceil() as u64)),
        match &cleanup {
            Some(c) => format!("; cleanup deleted {} versions", c.versions_deleted),
            None => String::new(),
        }
    );
    let ok = crate::cmd::restore::run_outcome(&restored) == Outcome::Complete
        && verified.complete()
        && cleanup
            .as_ref()
            .is_none_or(|c| c.versions_failed == 0 && c.scratch_empty);
    Ok(if ok { Outcome::Complete } else { Outcome::Incomplete })
}

fn write_err(dir: &ReportDir, name: &str, e: impl std::fmt::Display) -> crate::report::ReportError {
    crate::report::ReportError::Write {
        path: dir.file(name),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Deletes, by version id, exactly the scratch versions the drill's journals recorded.
async fn clean_up(dest: &DestClient, cfg: &DrillConfig, key: &RunKey) -> Result<CleanupReport, Error> {
    let Some(state) = StateDir::open_existing(&cfg.restore.state_dir, key) else {
        return Ok(CleanupReport {
            versions_deleted: 0,
            versions_failed: 0,
            scratch_empty: true,
        });
    };
    let writes = state.recorded_writes().map_err(|e| Error::State(e.to_string()))?;
    let scratch = &cfg.restore.dest;
    let results: Vec<Result<(), crate::s3::S3Error>> = futures::stream::iter(writes.iter())
        .filter(|(k, _)| futures::future::ready(scratch.selects(k)))
        .map(|(k, v)| dest.delete_scratch_version(&scratch.bucket, k, v))
        .buffer_unordered(32)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count() as u64;
    for e in results.iter().filter_map(|r| r.as_ref().err()).take(5) {
        warn!(error = %e, "cleanup could not delete a scratch version");
    }
    let deleted = results.len() as u64 - failed;
    let left = dest
        .list_versions(scratch, crate::s3::ListConfig::default())
        .count()
        .await;
    info!(deleted, failed, left, "drill cleanup");
    Ok(CleanupReport {
        versions_deleted: deleted,
        versions_failed: failed,
        scratch_empty: left == 0,
    })
}

fn drill_markdown(r: &DrillReport, restored: &RestoreRun, verified: &VerifyRun) -> String {
    let mut md = String::new();
    md.push_str("# Restore drill\n\n");
    md.push_str(&format!(
        "- Source (replica): `{}`\n- Scratch: `{}`\n",
        r.source, r.scratch
    ));
    md.push_str(&format!("- Started: {}\n- Finished: {}\n", r.started, r.finished));
    if let Some(n) = r.sample_keys {
        md.push_str(&format!("- Sample: {n} keys picked at random\n"));
    }
    md.push_str("\n## Results\n\n| figure | value |\n| --- | --- |\n");
    md.push_str(&format!("| objects restored | {} |\n", r.objects_restored));
    md.push_str(&format!(
        "| bytes restored | {} ({}) |\n",
        r.bytes_restored,
        human_bytes(r.bytes_restored)
    ));
    md.push_str(&format!("| objects failed | {} |\n", r.objects_failed));
    md.push_str(&format!("| wall time | {:.1} s |\n", r.wall_seconds));
    md.push_str(&format!(
        "| throughput | {:.1} objects/s, {}/s |\n",
        r.throughput_objects_per_s,
        human_bytes(r.throughput_bytes_per_s as u64)
    ));
    md.push_str(&format!(
        "| whole replica to restore | {} objects, {} |\n",
        r.replica_objects_to_restore,
        human_bytes(r.replica_bytes_to_restore)
    ));
    md.push_str(&format!(
        "| projected RTO (whole replica at this throughput) | {} |\n",
        humantime::format_duration(std::time::Duration::from_secs(r.rto_seconds.ceil() as u64))
    ));
    if let Some(rpo) = r.rpo_seconds {
        md.push_str(&format!(
            "| RPO seen (age of the newest replica version) | {} |\n",
            humantime::format_duration(std::time::Duration::from_secs(rpo.max(0) as u64))
        ));
    }
    md.push_str(&format!("| verified | {} |\n", verified.line()));
    md.push_str(&format!("| restore | {} |\n", status_line(restored)));
    if let Some(c) = &r.cleanup {
        md.push_str(&format!(
            "| cleanup | {} versions deleted, {} failed, scratch {} |\n",
            c.versions_deleted,
            c.versions_failed,
            if c.scratch_empty { "empty" } else { "NOT empty" }
        ));
    }
    if !r.failures.is_empty() {
        md.push_str("\n## Findings\n\n");
        for f in &r.failures {
            md.push_str(&format!("- {f}\n"));
        }
    }
    md.push_str("\nThe projection assumes the whole replica restores at the throughput measured here; the figures per object are in `restore.csv` and `verify.csv`.\n");
    md
}
