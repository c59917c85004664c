//! The restore engine: executes planned actions concurrently, retries what is worth
//! retrying, and reports one outcome per action.
//!
//! One feeder hands actions to at most `--concurrency` tasks; every request they send
//! holds a slot of the shared [`aimd::Aimd`] limit, multipart parts included. Outcomes and
//! multipart upload events go to the caller's recorder over a bounded channel (the
//! journal and `restore.csv` are the caller's). Choosing actions is the planner's.

pub mod aimd;
mod copy;
mod multipart;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::model::Location;
use crate::plan::{ActionKind, PlannedAction};
use crate::rules::ReplicaRules;
use crate::s3::ops::SseChoice;
use crate::s3::{DestClient, S3Error, S3ErrorKind, SourceClient};

pub use aimd::{Aimd, LimitStats};

/// Where the storage class of a copy comes from.
#[derive(Debug, Clone)]
pub enum StorageClassPolicy {
    /// `--storage-class`: this class for every copy.
    Override(String),
    /// The replica version's class, except where the rule covering the key set a
    /// destination storage class (then the class was the rule's choice: STANDARD).
    Rules(Arc<ReplicaRules>),
    /// The replica version's class (the rules could not be read).
    Keep,
}

impl StorageClassPolicy {
    /// The class to send for a version of `key` listed with `replica_class`.
    pub fn class_for(&self, key: &str, replica_class: Option<&str>) -> String {
        let replica = replica_class.filter(|c| !c.is_empty()).unwrap_or("STANDARD");
        match self {
            StorageClassPolicy::Override(c) => c.clone(),
            StorageClassPolicy::Keep => replica.to_owned(),
            // Tags are not known without a request; tag-filtered rules do not match here.
            StorageClassPolicy::Rules(rules) if rules.sets_storage_class(key).is_some() => "STANDARD".to_owned(),
            StorageClassPolicy::Rules(_) => replica.to_owned(),
        }
    }
}

/// Whose ACL grants a restore reads and sends.
#[derive(Debug, Clone)]
pub enum AclPolicy {
    /// None: `--acls skip`, or the primary does not accept ACLs.
    Skip,
    /// Every version's (`--acls copy`).
    Copy,
    /// Every version's but those of keys whose replication rule handed the replicas to the
    /// replica bucket's owner: their grants are that owner's, not the primary's (the
    /// default where the rules are known).
    ExceptOwnerOverride(Arc<ReplicaRules>),
}

impl AclPolicy {
    /// Whether the grants of a version of source key `key` are copied.
    pub fn copies(&self, key: &str) -> bool {
        match self {
            AclPolicy::Skip => false,
            AclPolicy::Copy => true,
            AclPolicy::ExceptOwnerOverride(rules) => rules.overrides_owner(key).is_none(),
        }
    }
}

/// What the engine needs to know, validated.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The replica location.
    pub source: Location,
    /// The primary location.
    pub dest: Location,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Requests in flight at the start (AIMD climbs from here).
    pub initial_concurrency: usize,
    /// Attempts per request before an action fails.
    pub max_attempts: u32,
    /// Part size for split single-part sources; `None` takes the default.
    pub part_size: Option<u64>,
    /// Which versions' ACL grants are read and sent.
    pub acls: AclPolicy,
    /// Read and send Object Lock settings (the destination has Object Lock).
    pub copy_lock: bool,
    /// Encryption to ask for.
    pub sse: SseChoice,
    /// Storage class choice.
    pub storage_class: StorageClassPolicy,
    /// `--restore-archived DAYS` and the tier.
    pub restore_archived: Option<(u32, Option<String>)>,
    /// On resume: the interrupted run's start; each action checks the destination for a
    /// copy the interrupted run made before it sends anything.
    pub resume_since: Option<Timestamp>,
}

/// An action's final status: the fixed words of `restore.csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Written.
    Done,
    /// Nothing to do.
    Skipped,
    /// Newer primary data kept.
    Conflict,
    /// Archived source; not copied.
    Archived,
    /// Restore from the archive requested or under way.
    Pending,
    /// Could not be done; the error says why.
    Failed,
}

impl Status {
    /// Every status, in report order.
    pub const ALL: [Status; 6] = [
        Status::Done,
        Status::Skipped,
        Status::Conflict,
        Status::Archived,
        Status::Pending,
        Status::Failed,
    ];

    /// The word in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Done => "done",
            Status::Skipped => "skipped",
            Status::Conflict => "conflict",
            Status::Archived => "archived",
            Status::Pending => "pending",
            Status::Failed => "failed",
        }
    }

    /// Parses a report word.
    pub fn parse(word: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == word)
    }
}

/// How one action came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionOutcome {
    /// The status.
    pub status: Status,
    /// The version the action created on the destination.
    pub dest_version_id: Option<String>,
    /// The new version's ETag.
    pub etag_dest: Option<String>,
    /// Requests sent for the action's main write (1 when the first try worked).
    pub attempts: u32,
    /// Wall time.
    pub duration_ms: u64,
    /// The error of a failed action, or the note of a skipped one.
    pub error: Option<String>,
}

impl ActionOutcome {
    fn quick(status: Status, note: Option<String>) -> Self {
        ActionOutcome {
            status,
            dest_version_id: None,
            etag_dest: None,
            attempts: 0,
            duration_ms: 0,
            error: note,
        }
    }
}

/// What the engine tells its recorder.
#[derive(Debug)]
pub enum Event {
    /// One action finished.
    Outcome {
        /// The action's index in the plan.
        idx: u64,
        /// The action.
        action: Box<PlannedAction>,
        /// How it came out.
        outcome: ActionOutcome,
    },
    /// A multipart upload was created.
    UploadStarted {
        /// The action's index.
        idx: u64,
        /// The destination key.
        dest_key: String,
        /// The upload id.
        upload_id: String,
    },
    /// A multipart upload was completed or aborted.
    UploadEnded {
        /// The upload id.
        upload_id: String,
        /// Completed (true) or aborted.
        completed: bool,
    },
}

/// The engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    source: SourceClient,
    dest: DestClient,
    cfg: EngineConfig,
    limit: Arc<Aimd>,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
}

impl Engine {
    /// An engine sending events to `events`.
    pub fn new(
        source: SourceClient,
        dest: DestClient,
        cfg: EngineConfig,
        events: mpsc::Sender<Event>,
        cancel: CancellationToken,
    ) -> Self {
        let limit = Aimd::new(cfg.initial_concurrency, cfg.concurrency);
        Engine {
            inner: Arc::new(Inner {
                source,
                dest,
                cfg,
                limit,
                events,
                cancel,
            }),
        }
    }

    /// The shared limit, for progress and the summary.
    pub fn limit(&self) -> &Arc<Aimd> {
        &self.inner.limit
    }

    /// Executes every action `actions` yields; returns when all are done or the run was
    /// cancelled (actions not started then get no outcome).
    ///
    /// Keys run concurrently; the writes of one key run one after another, in the order
    /// given: in `all-versions` a key's versions arrive oldest first and must land in that
    /// order, or the primary's history comes out shuffled.
    pub async fn execute<I>(&self, actions: I)
    where
        I: IntoIterator<Item = (u64, PlannedAction)>,
    {
        let mut tasks: JoinSet<()> = JoinSet::new();
        let max_tasks = self.inner.cfg.concurrency.max(1) * 2;
        // The writes of the key being read; a plan holds each key's rows together.
        let mut key_writes: Vec<(u64, PlannedAction)> = Vec::new();
        for (idx, action) in actions {
            if self.inner.cancel.is_cancelled() {
                break;
            }
            if !action.action.writes() && action.action != ActionKind::Archived {
                let outcome = quick_outcome(&action);
                self.emit(idx, action, outcome).await;
                continue;
            }
            if key_writes.first().is_some_and(|(_, a)| a.dest_key != action.dest_key) {
                self.spawn_in_order(&mut tasks, max_tasks, std::mem::take(&mut key_writes))
                    .await;
            }
            key_writes.push((idx, action));
        }
        if !key_writes.is_empty() && !self.inner.cancel.is_cancelled() {
            self.spawn_in_order(&mut tasks, max_tasks, key_writes).await;
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Spawns one task that runs `actions` one after another (stopping at cancellation),
    /// once fewer than `max_tasks` tasks are running.
    async fn spawn_in_order(&self, tasks: &mut JoinSet<()>, max_tasks: usize, actions: Vec<(u64, PlannedAction)>) {
        while tasks.len() >= max_tasks {
            tasks.join_next().await;
        }
        let engine = self.clone();
        tasks.spawn(async move {
            for (idx, action) in actions {
                if engine.inner.cancel.is_cancelled() {
                    break;
                }
                let outcome = engine.run(idx, &action).await;
                engine.emit(idx, action, outcome).await;
            }
        });
    }

    async fn emit(&self, idx: u64, action: PlannedAction, outcome: ActionOutcome) {
        let _ = self
            .inner
            .events
            .send(Event::Outcome {
                idx,
                action: Box::new(action),
                outcome,
            })
            .await;
    }

    async fn run(&self, idx: u64, action: &PlannedAction) -> ActionOutcome {
        let started = Instant::now();
        let mut outcome = match action.action {
            ActionKind::Copy => self.copy(action).await,
            ActionKind::MultipartCopy => self.multipart_copy(idx, action).await,
            ActionKind::DeleteMarker => self.delete_marker(action).await,
            ActionKind::Archived => self.archived(action).await,
            _ => quick_outcome(action),
        };
        outcome.duration_ms = started.elapsed().as_millis() as u64;
        if outcome.status == Status::Failed {
            warn!(key = %action.key, version_id = %action.source_version_id, error = outcome.error.as_deref().unwrap_or(""), "failed");
        }
        outcome
    }

    async fn archived(&self, action: &PlannedAction) -> ActionOutcome {
        let Some((days, tier)) = &self.inner.cfg.restore_archived else {
            return ActionOutcome::quick(Status::Archived, Some(action.reason.clone()));
        };
        let result = self
            .retrying("RestoreObject", || async {
                self.inner
                    .source
                    .request_restore_from_archive(
                        &self.inner.cfg.source.bucket,
                        &action.key,
                        &action.source_version_id,
                        *days,
                        tier.as_deref(),
                    )
                    .await
            })
            .await;
        match result {
            (Ok(()), attempts) => ActionOutcome {
                attempts,
                ..ActionOutcome::quick(
                    Status::Pending,
                    Some(format!("restore from archive requested for {days} days")),
                )
            },
            (Err(e), attempts) => ActionOutcome { attempts, ..failed(&e) },
        }
    }

    /// Runs an idempotent request with the engine's retries: backoff with full jitter,
    /// the AIMD limit told of every throttle and success. Requests on the write client
    /// (no SDK retries) get `--max-attempts` engine attempts; the others were already
    /// retried by the SDK and get one more round here.
    async fn retrying<T, F, Fut>(&self, what: &'static str, mut f: F) -> (Result<T, S3Error>, u32)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, S3Error>>,
    {
        let max_attempts = if WRITE_CLIENT_OPERATIONS.contains(&what) {
            self.inner.cfg.max_attempts
        } else {
            2
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (result, epoch) = {
                let slot = self.inner.limit.acquire().await;
                (f().await, slot.epoch())
            };
            match result {
                Ok(v) => {
                    self.inner.limit.on_success();
                    return (Ok(v), attempt);
                }
                Err(e) => {
                    if attempt >= max_attempts {
                        if e.kind == S3ErrorKind::Throttled {
                            self.inner.limit.on_throttle(epoch);
                        }
                        return (Err(e), attempt);
                    }
                    if !self.should_retry(&e, attempt, epoch).await {
                        return (Err(e), attempt);
                    }
                }
            }
        }
    }

    /// Tells the limit about a failure of a request sent in `epoch` (its slot's) and, for a
    /// retryable one with attempts left, waits the backoff. `false`: give up.
    async fn should_retry(&self, e: &S3Error, attempt: u32, epoch: u64) -> bool {
        if e.kind == S3ErrorKind::Throttled {
            self.inner.limit.on_throttle(epoch);
        }
        if !e.is_retryable() || attempt >= self.inner.cfg.max_attempts || self.inner.cancel.is_cancelled() {
            return false;
        }
        let delay = backoff(attempt);
        debug!(error = %e, attempt, delay_ms = delay.as_millis() as u64, "retrying");
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = self.inner.cancel.cancelled() => false,
        }
    }
}

/// Operations the engine sends on the write client, whose SDK retries are off: the engine
/// is their only retry.
const WRITE_CLIENT_OPERATIONS: [&str; 2] = ["CreateMultipartUpload", "UploadPartCopy"];

/// Exponential backoff with full jitter: up to 100 ms × 2^(attempt-1), capped at 20 s.
fn backoff(attempt: u32) -> Duration {
    let cap_ms = (100u64 << (attempt.saturating_sub(1)).min(8)).min(20_000);
    Duration::from_millis(jitter(cap_ms))
}

/// A cheap pseudo-random value in 0..=max, good enough to spread retries.
fn jitter(max: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        Instant::now().elapsed().as_nanos()
            ^ std::time::SystemTime::now()
                .elapsed()
                .map(|d| d.as_nanos())
                .unwrap_or(0),
    );
    h.finish() % (max + 1)
}

fn failed(e: &S3Error) -> ActionOutcome {
    let status = if e.kind == S3ErrorKind::InvalidObjectState {
        Status::Archived
    } else {
        Status::Failed
    };
    ActionOutcome::quick(status, Some(e.to_string()))
}

/// The outcome of an action that sends nothing.
fn quick_outcome(action: &PlannedAction) -> ActionOutcome {
    let status = match action.action {
        ActionKind::Skip => Status::Skipped,
        ActionKind::Conflict => Status::Conflict,
        ActionKind::Archived => Status::Archived,
        ActionKind::Pending => Status::Pending,
        // Writing kinds never get here.
        _ => Status::Failed,
    };
    ActionOutcome::quick(status, Some(action.reason.clone()).filter(|r| !r.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded() {
        for attempt in 1..20 {
            assert!(backoff(attempt) <= Duration::from_secs(20));
        }
    }

    #[test]
    fn status_words_round_trip() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
    }
}
