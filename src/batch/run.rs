//! Running one Batch Operations job: write its manifest to the work location, create it
//! (idempotently, journalled before and after), follow it with a progress bar, and read
//! its completion report into one outcome per task.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{JobPlan, client_request_token, job_base, manifest_csv, parse_results, report_result_files};
use crate::model::{Location, VersionRecord};
use crate::plan::PlannedAction;
use crate::progress::Progress;
use crate::restore::{ActionOutcome, Status};
use crate::s3::control::{ControlClient, JobRequest, JobState};
use crate::s3::ops::SseChoice;
use crate::s3::{DestClient, ListConfig, S3Error};
use crate::state::{BatchJobEntry, JournalEntry, JournalWriter, StateError};

/// The word in `restore.csv`'s `engine` column.
pub const ENGINE: &str = "batch-operations";

/// How far before a job's creation time a version it made may be stamped (clock skew).
const CLOCK_SLACK: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// What the Batch engine needs, validated.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// `--batch-role-arn`.
    pub role_arn: String,
    /// `--batch-work`: manifests and completion reports.
    pub work: Location,
    /// S3 Control connection.
    pub control: crate::s3::control::ControlConfig,
    /// Job priority.
    pub priority: i32,
}

/// Errors that stop the Batch engine.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// An S3 or S3 Control request failed.
    #[error("{0}")]
    S3(S3Error),
    /// The journal could not be written.
    #[error("{0}")]
    State(StateError),
    /// A completion report could not be read.
    #[error("batch job {job_id}: {message}")]
    Report {
        /// The job.
        job_id: String,
        /// Why.
        message: String,
    },
}

/// How one job ended.
#[derive(Debug, Default)]
pub struct JobOutcome {
    /// The job id, once known.
    pub job_id: Option<String>,
    /// Tasks the job made, with their outcome.
    pub done: Vec<(u64, ActionOutcome)>,
    /// Tasks that failed (to retry locally once), with the report's error.
    pub failed_tasks: Vec<(u64, String)>,
    /// The job failed outright (or was cancelled): its reason. Its tasks not in `done`
    /// are reported failed and not retried without the operator's word.
    pub job_failure: Option<String>,
    /// Ctrl-C while following: the job runs on.
    pub interrupted: bool,
}

/// Everything a job needs from the run.
pub struct JobContext<'a> {
    /// The S3 Control client.
    pub control: &'a ControlClient,
    /// The destination client (also the work bucket's, which lives on the destination side).
    pub dest: &'a DestClient,
    /// The Batch settings.
    pub cfg: &'a BatchConfig,
    /// The replica.
    pub source: &'a Location,
    /// The primary.
    pub dest_loc: &'a Location,
    /// Encryption for the copies.
    pub sse: &'a SseChoice,
    /// The plan (indexed by row).
    pub actions: &'a [PlannedAction],
    /// The journal.
    pub journal: &'a JournalWriter,
    /// Ctrl-C.
    pub cancel: &'a CancellationToken,
    /// Earlier records of this run's jobs.
    pub known: &'a [BatchJobEntry],
    /// Requests in flight when looking up new versions.
    pub concurrency: usize,
}

fn sse_word(sse: &SseChoice) -> String {
    match sse {
        SseChoice::BucketDefault => "default".into(),
        SseChoice::Aes256 => "AES256".into(),
        SseChoice::Kms(k) => format!("aws:kms:{}", k.as_deref().unwrap_or("")),
    }
}

fn work_key(work: &Location, rest: &str) -> String {
    let p = work.prefix.trim_end_matches('/');
    if p.is_empty() {
        rest.to_owned()
    } else {
        format!("{p}/{rest}")
    }
}

/// Creates (or finds again) job `index` and follows it to its end.
///
/// # Errors
/// A request to S3 or S3 Control failed, or the journal could not be written.
pub async fn run_job(ctx: &JobContext<'_>, index: u32, job: &JobPlan) -> Result<JobOutcome, BatchError> {
    let tasks: Vec<(&str, &str)> = job
        .tasks
        .iter()
        .map(|i| {
            let a = &ctx.actions[*i as usize];
            (a.key.as_str(), a.source_version_id.as_str())
        })
        .collect();
    let manifest = manifest_csv(&ctx.source.bucket, tasks.iter().copied());
    let base = job_base(&manifest, job, &sse_word(ctx.sse));
    let failed_before = ctx.known.iter().filter(|k| k.base == base && k.failed).count() as u32;
    let token = client_request_token(&base, failed_before);
    let known_id = ctx
        .known
        .iter()
        .filter(|k| k.token == token && !k.failed)
        .find_map(|k| k.job_id.clone());
    let record = |job_id: Option<String>, failed: bool| {
        ctx.journal.record(JournalEntry::BatchJob(BatchJobEntry {
            index,
            token: token.clone(),
            base: base.clone(),
            job_id,
            failed,
        }))
    };
    let job_id = match known_id {
        Some(id) => {
            eprintln!("following batch job {id} (created by the interrupted run)");
            id
        }
        None => {
            record(None, false).await.map_err(BatchError::State)?;
            let manifest_key = work_key(&ctx.cfg.work, &format!("s3-failback/{token}/manifest.csv"));
            let etag = ctx
                .dest
                .put_work_object(&ctx.cfg.work.bucket, &manifest_key, manifest.into_bytes())
                .await
                .map_err(BatchError::S3)?;
            let req = JobRequest {
                manifest_arn: format!("arn:aws:s3:::{}/{}", ctx.cfg.work.bucket, manifest_key),
                manifest_etag: etag,
                target_bucket_arn: format!("arn:aws:s3:::{}", ctx.dest_loc.bucket),
                target_key_prefix: Some(job.target_key_prefix.clone()).filter(|p| !p.is_empty()),
                storage_class: job.storage_class.clone(),
                sse: ctx.sse.clone(),
                report_bucket_arn: format!("arn:aws:s3:::{}", ctx.cfg.work.bucket),
                report_prefix: work_key(&ctx.cfg.work, &format!("s3-failback/{token}/report")),
                role_arn: ctx.cfg.role_arn.clone(),
                client_request_token: token.clone(),
                description: format!(
                    "s3-failback restore to s3://{}: generation {}, {}",
                    ctx.dest_loc.bucket, job.generation, job.storage_class
                ),
                priority: ctx.cfg.priority,
            };
            let id = ctx.control.create_copy_job(&req).await.map_err(BatchError::S3)?;
            record(Some(id.clone()), false).await.map_err(BatchError::State)?;
            eprintln!(
                "created batch job {id}: {} tasks, generation {}, {}",
                job.tasks.len(),
                job.generation,
                job.storage_class
            );
            id
        }
    };
    let by_task: HashMap<(&str, &str), u64> = job
        .tasks
        .iter()
        .map(|i| {
            let a = &ctx.actions[*i as usize];
            ((a.key.as_str(), a.source_version_id.as_str()), *i)
        })
        .collect();
    follow_and_collect(ctx, &job_id, &token, &base, index, &by_task, Some(&job.tasks)).await
}

/// Follows a job the interrupted run created (recorded in the journal) and merges what its
/// report says about `pending` plan rows (source key and version → row): the tasks it
/// made are not made again by a job of this run, whatever shape this run's split takes.
///
/// # Errors
/// As [`run_job`].
pub async fn merge_known_job(
    ctx: &JobContext<'_>,
    known: &BatchJobEntry,
    pending: &HashMap<(&str, &str), u64>,
) -> Result<JobOutcome, BatchError> {
    let Some(job_id) = &known.job_id else {
        return Ok(JobOutcome::default());
    };
    eprintln!("following batch job {job_id} (created by the interrupted run)");
    follow_and_collect(ctx, job_id, &known.token, &known.base, known.index, pending, None).await
}

/// Follows `job_id` to its end and reads its report into outcomes for the rows of
/// `by_task`; with `expected`, a row the report leaves out is a failed task.
async fn follow_and_collect(
    ctx: &JobContext<'_>,
    job_id: &str,
    token: &str,
    base: &str,
    index: u32,
    by_task: &HashMap<(&str, &str), u64>,
    expected: Option<&[u64]>,
) -> Result<JobOutcome, BatchError> {
    let job_id = job_id.to_owned();
    let mut out = JobOutcome {
        job_id: Some(job_id.clone()),
        ..JobOutcome::default()
    };
    let total = expected.map(|e| e.len() as u64).unwrap_or(0);
    let Some(state) = follow(ctx, &job_id, total).await.map_err(BatchError::S3)? else {
        out.interrupted = true;
        return Ok(out);
    };
    info!(job_id = %job_id, status = %state.status, succeeded = state.succeeded, failed = state.failed, "batch job ended");

    // The report lists every task it ran; a failed job may have none.
    let report_prefix = work_key(&ctx.cfg.work, &format!("s3-failback/{token}/report"));
    let results = match read_report(ctx, &report_prefix, &job_id).await {
        Ok(r) => r,
        Err(e) if state.status != "Complete" => {
            warn!(job_id = %job_id, error = %e, "no completion report for the failed job");
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let mut seen: HashSet<u64> = HashSet::new();
    let mut succeeded = Vec::new();
    for r in &results {
        let Some(idx) = by_task.get(&(r.key.as_str(), r.version_id.as_str())) else {
            if expected.is_some() {
                warn!(job_id = %job_id, key = %r.key, "the completion report names a task the manifest does not hold");
            }
            continue;
        };
        if !seen.insert(*idx) {
            continue;
        }
        if r.succeeded {
            succeeded.push(*idx);
        } else {
            out.failed_tasks.push((
                *idx,
                format!("batch job {job_id}: {} {} {}", r.error_code, r.http_status, r.message)
                    .trim()
                    .to_owned(),
            ));
        }
    }
    let created = state.created.unwrap_or_else(jiff::Timestamp::now);
    out.done = lookup_versions(ctx, &succeeded, created).await;
    if state.status != "Complete" {
        let reason = if state.reason.is_empty() {
            state.status.clone()
        } else {
            format!("{}: {}", state.status, state.reason)
        };
        ctx.journal
            .record(JournalEntry::BatchJob(BatchJobEntry {
                index,
                token: token.to_owned(),
                base: base.to_owned(),
                job_id: Some(job_id.clone()),
                failed: true,
            }))
            .await
            .map_err(BatchError::State)?;
        out.job_failure = Some(reason);
    } else if let Some(expected) = expected {
        for i in expected {
            if !seen.contains(i) {
                out.failed_tasks.push((
                    *i,
                    format!("batch job {job_id}: the completion report does not list this task"),
                ));
            }
        }
    }
    Ok(out)
}

/// Polls DescribeJob until the job ends; `None` on Ctrl-C.
async fn follow(ctx: &JobContext<'_>, job_id: &str, tasks: u64) -> Result<Option<JobState>, S3Error> {
    let progress = Progress::bar(&format!("batch job {}", short(job_id)), tasks, "tasks");
    let mut shown = 0u64;
    let mut wait = Duration::from_millis(300);
    loop {
        let state = ctx.control.describe_job(job_id).await?;
        let now = state.succeeded + state.failed;
        if now > shown {
            progress.inc(now - shown);
            shown = now;
        }
        progress.message(format!("{}, {} failed", state.status, state.failed));
        if state.is_terminal() {
            progress.finish();
            return Ok(Some(state));
        }
        tokio::select! {
            _ = ctx.cancel.cancelled() => {
                progress.finish();
                return Ok(None);
            }
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 3 / 2).min(Duration::from_secs(10));
    }
}

fn short(job_id: &str) -> &str {
    job_id.get(..8).unwrap_or(job_id)
}

async fn read_report(ctx: &JobContext<'_>, prefix: &str, job_id: &str) -> Result<Vec<super::TaskResult>, BatchError> {
    let bucket = &ctx.cfg.work.bucket;
    let manifest_key = format!("{prefix}/job-{job_id}/manifest.json");
    let json = ctx
        .dest
        .get_work_object(bucket, &manifest_key)
        .await
        .map_err(BatchError::S3)?;
    let report_err = |e: super::ReportParseError| BatchError::Report {
        job_id: job_id.to_owned(),
        message: e.to_string(),
    };
    let files = report_result_files(&json, &manifest_key).map_err(report_err)?;
    let mut out = Vec::new();
    for (b, key) in files {
        let text = ctx.dest.get_work_object(&b, &key).await.map_err(BatchError::S3)?;
        out.extend(parse_results(&text, &key).map_err(report_err)?);
    }
    Ok(out)
}

/// From this many succeeded tasks on, and when they are at least 1/500 of the plan's rows,
/// the new version ids come from one listing of the destination location (1,000 entries
/// per request) instead of one ListObjectVersions per task: a job of 100 million tasks
/// would otherwise need 100 million requests after it ends.
const SWEEP_MIN_TASKS: usize = 16;

fn is_copy_of(a: &PlannedAction, v: &VersionRecord, earliest: jiff::Timestamp, kms: bool) -> bool {
    v.last_modified >= earliest
        && !v.is_delete_marker
        && v.version_id != a.dest_version_id
        && Some(v.size_bytes) == a.size_bytes
        && (kms || v.etag == a.etag)
}

/// The report does not give the new version id: find it on the destination, a version
/// newer than the job (less clock slack), not the version planned against, with the
/// source's size (and ETag, unless SSE-KMS changes it): the newest such version of the key.
/// A job holds one version per key, and jobs run one after another, so the newest match
/// is this job's copy.
async fn lookup_versions(ctx: &JobContext<'_>, done: &[u64], created: jiff::Timestamp) -> Vec<(u64, ActionOutcome)> {
    let earliest = created.checked_sub(CLOCK_SLACK).unwrap_or(created);
    let kms = matches!(ctx.sse, SseChoice::Kms(_));
    let mut found: HashMap<u64, VersionRecord> = HashMap::new();
    if done.len() >= SWEEP_MIN_TASKS && done.len() >= ctx.actions.len() / 500 {
        let wanted: HashMap<&str, u64> = done
            .iter()
            .map(|i| (ctx.actions[*i as usize].dest_key.as_str(), *i))
            .collect();
        let mut listing = std::pin::pin!(ctx.dest.list_versions(ctx.dest_loc, ListConfig::default()));
        while let Some(r) = listing.next().await {
            let v = match r {
                Ok(v) => v,
                Err(e) => {
                    // The per-key lookups below cover what the listing did not reach.
                    warn!(error = %e, "listing the destination for the new version ids failed");
                    break;
                }
            };
            if let Some(&idx) = wanted.get(v.key.as_str())
                && !found.contains_key(&idx)
                && is_copy_of(&ctx.actions[idx as usize], &v, earliest, kms)
            {
                found.insert(idx, v);
            }
        }
    }
    let found = &found;
    futures::stream::iter(done.iter().copied())
        .map(|idx| async move {
            let a = &ctx.actions[idx as usize];
            let found = match found.get(&idx) {
                Some(v) => Some(v.clone()),
                None => match ctx.dest.versions_of_key(&ctx.dest_loc.bucket, &a.dest_key, 100).await {
                    Ok(versions) => versions
                        .into_iter()
                        .take_while(|v| v.version_id != a.dest_version_id)
                        .find(|v| is_copy_of(a, v, earliest, kms)),
                    Err(e) => {
                        warn!(key = %a.dest_key, error = %e, "could not look up the version a batch task made");
                        None
                    }
                },
            };
            let outcome = ActionOutcome {
                status: Status::Done,
                dest_version_id: found.as_ref().map(|v| v.version_id.clone()),
                etag_dest: found.and_then(|v| v.etag),
                attempts: 1,
                duration_ms: 0,
                error: None,
            };
            (idx, outcome)
        })
        .buffer_unordered(ctx.concurrency.clamp(1, 64))
        .collect()
        .await
}
