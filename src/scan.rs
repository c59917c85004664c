//! The `scan` command: one bucket or prefix listed into `inventory.csv`, with a summary.
//!
//! The listing itself is [`crate::s3::listing`]'s; the CSV format is
//! [`crate::inventory`]'s.

use std::path::PathBuf;

use futures::StreamExt;
use tracing::info;

use crate::RunContext;
use crate::cli::{GlobalArgs, OutTarget, ScanArgs, out_target, parse_location};
use crate::error::{Error, Outcome};
use crate::inventory::{INVENTORY_COLUMNS, InventoryRow, ScanStats};
use crate::model::{Location, Side};
use crate::progress::Progress;
use crate::report::{CsvReport, ReportDir, Summary, human_bytes};
use crate::s3::{ListConfig, S3Config, SourceClient, Versioning};

/// A validated `scan`.
#[derive(Debug, Clone)]
pub struct ScanConfig {
    /// What to list.
    pub location: Location,
    /// How to reach it.
    pub s3: S3Config,
    /// Page size and partitions.
    pub list: ListConfig,
    /// Where the CSV goes.
    pub out: OutTarget,
    /// `--report-dir`.
    pub report_dir: Option<PathBuf>,
}

impl ScanConfig {
    /// Validates the flags.
    ///
    /// # Errors
    /// A bad URL or value.
    pub fn try_from_args(args: ScanArgs, global: &GlobalArgs) -> Result<Self, crate::cli::CliError> {
        Ok(ScanConfig {
            location: parse_location("location", &args.location)?,
            s3: args.conn.s3_config(Side::Source, global),
            list: args.conn.list_config()?,
            out: out_target(args.out.as_deref()),
            report_dir: args.report_dir,
        })
    }
}

/// Lists the location into the inventory CSV and writes the summary.
///
/// # Errors
/// Setup errors (exit 2) before the listing starts; S3 or report errors after.
pub async fn run(cfg: ScanConfig, ctx: &RunContext) -> Result<Outcome, Error> {
    let client = SourceClient::connect(&cfg.s3).await.map_err(Error::Setup)?;
    // The first request shows a missing bucket, bad credentials or a wrong region.
    let settings = client
        .bucket_settings(&cfg.location.bucket)
        .await
        .map_err(Error::Setup)?;
    if settings.versioning == Versioning::Off {
        info!(bucket = %cfg.location.bucket, "versioning was never enabled: every version id is null");
    }
    let dir = ReportDir::create("scan", cfg.report_dir.as_deref(), ctx.started).map_err(Error::ReportSetup)?;
    let csv_path = match &cfg.out {
        OutTarget::ReportDir => Some(dir.file("inventory.csv")),
        OutTarget::File(p) => Some(p.clone()),
        OutTarget::Stdout => None,
    };
    let mut csv = CsvReport::create(csv_path.clone()).map_err(Error::ReportSetup)?;
    csv.write_header(&INVENTORY_COLUMNS).map_err(Error::Report)?;
    info!(location = %cfg.location, "scanning");

    let progress = Progress::counter("scan", "versions");
    let mut stats = ScanStats::default();
    let mut prev_key: Option<String> = None;
    let mut failure: Option<Error> = None;
    let mut listing = std::pin::pin!(client.list_versions(&cfg.location, cfg.list));
    loop {
        let next = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => { failure = Some(Error::Interrupted); break; }
            next = listing.next() => next,
        };
        let Some(item) = next else { break };
        match item {
            Ok(rec) => {
                csv.write(&InventoryRow::from(&rec)).map_err(Error::Report)?;
                stats.add(&rec, prev_key.as_deref());
                if prev_key.as_deref() != Some(rec.key.as_str()) {
                    prev_key = Some(rec.key);
                }
                progress.inc(1);
            }
            Err(e) => {
                failure = Some(Error::S3(e));
                break;
            }
        }
    }
    progress.finish();
    let digest = csv.finish().map_err(Error::Report)?;

    let mut summary = Summary::new("scan", ctx.started, ctx.args.clone());
    summary.counts.insert("keys".into(), stats.keys);
    summary.counts.insert("versions".into(), stats.versions);
    summary.counts.insert("delete_markers".into(), stats.delete_markers);
    summary.counts.insert("current_objects".into(), stats.current_objects);
    summary.bytes.insert("versions".into(), stats.bytes);
    summary.extra.insert("location".into(), cfg.location.to_string().into());
    summary
        .extra
        .insert("versioning".into(), settings.versioning.to_string().into());
    summary.extra.insert("complete".into(), failure.is_none().into());
    if let Some(e) = &failure {
        summary.extra.insert("error".into(), e.to_string().into());
    }
    if let Some(p) = &csv_path {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        summary.reports.insert(name, digest);
    }
    let summary_path = summary.write(&dir).map_err(Error::Report)?;

    let line = format!(
        "scan{}: {} keys, {} versions, {} delete markers, {} ({} bytes)",
        if failure.is_some() { " (incomplete)" } else { "" },
        stats.keys,
        stats.versions,
        stats.delete_markers,
        human_bytes(stats.bytes),
        stats.bytes
    );
    match &cfg.out {
        OutTarget::Stdout => eprintln!("{}\n{line}", summary_path.display()),
        _ => {
            if let Some(p) = &csv_path {
                println!("{}", p.display());
            }
            println!("{}\n{line}", summary_path.display());
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(Outcome::Complete),
    }
}
