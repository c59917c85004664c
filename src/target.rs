//! The target state as a stream of planned actions: both sides listed (or read from
//! inventories) concurrently, merge-joined, planned key by key. `plan`, `restore`,
//! `verify` and `drill` all start here, so they mean the same target by the same flags.
//!
//! Archived source versions are HEADed here, and only they: a finished archive restore
//! makes the version copyable, an ongoing one is `pending`.

use std::path::PathBuf;

use futures::future::Either;
use futures::stream::{Buffered, Then};
use futures::{Future, Stream, StreamExt};

use crate::error::Error;
use crate::inventory::{InventoryError, InventoryReader};
use crate::model::{Location, VersionRecord};
use crate::plan::{ActionKind, Evidence, PlanConfig, PlanSummary, PlannedAction, plan_key};
use crate::reconcile::{KeyDiff, ReconcileConfig, ReconcileError, Reconciled, reconcile};
use crate::s3::{DestClient, ListConfig, S3Error, SourceClient};

/// Where one side's versions come from.
pub enum SideInput<'a, C> {
    /// A live listing through this client.
    Live(&'a C),
    /// An inventory CSV written earlier.
    Inventory(PathBuf),
}

/// What went wrong reading one side.
#[derive(Debug, thiserror::Error)]
pub enum SideError {
    /// The listing failed.
    #[error(transparent)]
    S3(#[from] S3Error),
    /// The inventory file could not be read.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
}

type Records = std::pin::Pin<Box<dyn Stream<Item = Result<VersionRecord, SideError>> + Send>>;

/// Records per message from an inventory's reading thread: enough that the channel costs
/// little per record, few enough that memory stays flat.
const INVENTORY_BATCH: usize = 1024;

/// An inventory's records, read and parsed on a thread of its own: from inventories that
/// is most of planning's work, so it runs beside the join and the planner. The channel
/// holds two batches, which keeps memory flat; the thread ends at the end of the file,
/// after the first error (the reader yields nothing after one), or when the stream is
/// dropped (its next send fails).
fn inventory_stream(path: PathBuf) -> Result<Records, Error> {
    let reader = InventoryReader::open(&path)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Result<VersionRecord, InventoryError>>>(2);
    std::thread::Builder::new()
        .name("inventory".to_owned())
        .spawn(move || {
            let mut batch = Vec::with_capacity(INVENTORY_BATCH);
            for item in reader {
                batch.push(item);
                if batch.len() == INVENTORY_BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(INVENTORY_BATCH));
                    if tx.blocking_send(full).is_err() {
                        return;
                    }
                }
            }
            if !batch.is_empty() {
                // A receiver gone by now wants nothing more.
                let _ = tx.blocking_send(batch);
            }
        })
        .map_err(|source| InventoryError::Open { path, source })?;
    Ok(Box::pin(InventoryRecords {
        rx,
        batch: Vec::new().into_iter(),
    }))
}

/// The receiving end of an inventory's reading thread, one record at a time. A stream of
/// its own rather than `unfold` and `flat_map`: each layer of those moves every record
/// once more, which showed in the profile.
struct InventoryRecords {
    rx: tokio::sync::mpsc::Receiver<Vec<Result<VersionRecord, InventoryError>>>,
    batch: std::vec::IntoIter<Result<VersionRecord, InventoryError>>,
}

impl Stream for InventoryRecords {
    type Item = Result<VersionRecord, SideError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        loop {
            if let Some(item) = self.batch.next() {
                return std::task::Poll::Ready(Some(item.map_err(SideError::from)));
            }
            match std::task::ready!(self.rx.poll_recv(cx)) {
                Some(batch) => self.batch = batch.into_iter(),
                None => return std::task::Poll::Ready(None),
            }
        }
    }
}

fn source_records(input: &SideInput<'_, SourceClient>, loc: &Location, list: ListConfig) -> Result<Records, Error> {
    Ok(match input {
        SideInput::Live(c) => Box::pin(c.list_versions(loc, list).map(|r| r.map_err(SideError::from))),
        SideInput::Inventory(p) => inventory_stream(p.clone())?,
    })
}

fn dest_records(input: &SideInput<'_, DestClient>, loc: &Location, list: ListConfig) -> Result<Records, Error> {
    Ok(match input {
        SideInput::Live(c) => Box::pin(c.list_versions(loc, list).map(|r| r.map_err(SideError::from))),
        SideInput::Inventory(p) => inventory_stream(p.clone())?,
    })
}

/// Turns a join error back into the crate's error, keeping S3's classification.
fn join_error(e: ReconcileError) -> Error {
    match e {
        ReconcileError::Listing { source, .. } => match source.downcast::<SideError>() {
            Ok(side) => match *side {
                SideError::S3(s3) => Error::S3(s3),
                SideError::Inventory(inv) => Error::Inventory(inv),
            },
            Err(other) => Error::Plan(other.to_string()),
        },
        other => Error::Plan(other.to_string()),
    }
}

/// Plans every source key under `source` against `dest`, handing each action to `sink` in
/// plan order, and returns the plan's totals.
///
/// # Errors
/// A side could not be read, the join found the input out of order, an archived
/// version's HEAD failed, or `sink` failed.
#[allow(clippy::too_many_arguments)]
pub async fn plan_actions<F>(
    source_input: SideInput<'_, SourceClient>,
    dest_input: SideInput<'_, DestClient>,
    source: &Location,
    dest: &Location,
    list: ListConfig,
    cfg: &PlanConfig,
    metadata: bool,
    evidence: &dyn Evidence,
    mut sink: F,
) -> Result<PlanSummary, Error>
where
    F: FnMut(PlannedAction) -> Result<(), Error>,
{
    plan_keys(
        source_input,
        dest_input,
        source,
        dest,
        list,
        cfg,
        metadata,
        evidence,
        |_, actions| actions.into_iter().try_for_each(&mut sink),
    )
    .await
}

/// As [`plan_actions`], handing `sink` each source key's diff with its actions, for
/// callers that compare against what the destination holds (verify).
///
/// # Errors
/// As [`plan_actions`].
#[allow(clippy::too_many_arguments)]
pub async fn plan_keys<F>(
    source_input: SideInput<'_, SourceClient>,
    dest_input: SideInput<'_, DestClient>,
    source: &Location,
    dest: &Location,
    list: ListConfig,
    cfg: &PlanConfig,
    metadata: bool,
    evidence: &dyn Evidence,
    mut sink: F,
) -> Result<PlanSummary, Error>
where
    F: FnMut(&KeyDiff, Vec<PlannedAction>) -> Result<(), Error>,
{
    let source_client = match &source_input {
        SideInput::Live(c) => Some(*c),
        SideInput::Inventory(_) => None,
    };
    let dest_client = match &dest_input {
        SideInput::Live(c) => Some(*c),
        SideInput::Inventory(_) => None,
    };
    let clients = source_client.zip(dest_client).filter(|_| metadata);
    let src = source_records(&source_input, source, list)?;
    let dst = dest_records(&dest_input, dest, list)?;
    let joined = reconcile(
        src,
        dst,
        ReconcileConfig {
            source: source.clone(),
            dest: dest.clone(),
        },
    );
    // Keys whose decision needs a read (archived versions, --metadata) are worked on
    // concurrently; both ways keep plan order.
    let planned = joined
        .map(|item| async move {
            match item.map_err(join_error)? {
                Reconciled::PrimaryOnly { .. } => Ok::<_, Error>(None),
                Reconciled::Key(diff) => {
                    let mut actions = plan_key(&diff, cfg, evidence);
                    // All-versions keeps history order: once a version stays archived (or
                    // pending), the later ones wait for it even where their own archive
                    // restore has finished.
                    // The reads are boxed: inline, they would make every key's future (moved
                    // into the stream per key) as large as an S3 request's.
                    let mut waiting = false;
                    for action in &mut actions {
                        if action.action == ActionKind::Archived
                            && !waiting
                            && let Some(client) = source_client
                        {
                            Box::pin(resolve_archived(client, &source.bucket, &diff.source, cfg, action)).await?;
                        }
                        waiting |= matches!(action.action, ActionKind::Archived | ActionKind::Pending);
                        if let Some((s, d)) = clients {
                            Box::pin(compare_metadata(s, d, source, dest, &diff, cfg, action)).await?;
                        }
                    }
                    Ok(Some((diff, actions)))
                }
            }
        })
        .in_plan_order(source_client.is_some());
    let mut planned = std::pin::pin!(planned);
    let mut summary = PlanSummary::new(None);
    while let Some(item) = planned.next().await {
        match item? {
            None => summary.add_primary_only(),
            Some((diff, actions)) => {
                actions.iter().for_each(|a| summary.add(a));
                sink(&diff, actions)?;
            }
        }
    }
    Ok(summary)
}

/// Runs each key's planning future, in plan order.
trait InPlanOrder: Stream + Sized
where
    Self::Item: Future,
{
    /// `buffered` when keys may need reads; one after another when they cannot (nothing
    /// to read from inventories): every future is then ready at once, and `then` spares
    /// the task `buffered` allocates per key.
    #[allow(clippy::type_complexity)]
    fn in_plan_order(
        self,
        reads: bool,
    ) -> Either<Buffered<Self>, Then<Self, Self::Item, fn(Self::Item) -> Self::Item>> {
        if reads {
            Either::Left(self.buffered(16))
        } else {
            Either::Right(self.then(std::convert::identity as fn(_) -> _))
        }
    }
}

impl<S: Stream> InPlanOrder for S where S::Item: Future {}

/// `--metadata`: a version whose content matches but whose headers, user metadata or tags
/// differ becomes a copy (latest mode: recreating an old version would break the
/// history's order); a copy candidate is HEADed for its checksum algorithm, which
/// listings do not always carry.
async fn compare_metadata(
    source_client: &SourceClient,
    dest_client: &DestClient,
    source: &Location,
    dest: &Location,
    diff: &KeyDiff,
    cfg: &PlanConfig,
    action: &mut PlannedAction,
) -> Result<(), Error> {
    match action.action {
        ActionKind::Skip
            if cfg.mode == crate::plan::Mode::Latest
                && !action.is_delete_marker
                && !action.source_version_id.is_empty()
                && !action.dest_version_id.is_empty() =>
        {
            let pair = crate::compare::Pair {
                source_bucket: &source.bucket,
                source_key: &action.key,
                source_version_id: &action.source_version_id,
                dest_bucket: &dest.bucket,
                dest_key: &action.dest_key,
                dest_version_id: &action.dest_version_id,
            };
            let differs = crate::compare::metadata_diff(source_client, dest_client, pair)
                .await
                .map_err(Error::S3)?;
            if let Some(why) = differs
                && let Some(v) = diff.source.iter().find(|v| v.version_id == action.source_version_id)
            {
                action.action = crate::plan::copy_kind(v, cfg);
                action.reason = format!("metadata differs: {why}");
            }
        }
        ActionKind::Copy | ActionKind::MultipartCopy => {
            let head = source_client
                .head_version(&source.bucket, &action.key, &action.source_version_id, None)
                .await
                .map_err(Error::S3)?;
            if action.checksum_algorithm.is_none() {
                action.checksum_algorithm = head.checksum.map(|(algorithm, _)| algorithm);
            }
            note_written_on_replica(action, head.replication_status.as_deref());
        }
        _ => {}
    }
    Ok(())
}

/// A copy candidate whose replication status is not `REPLICA` was written on the replica
/// directly (during the outage): it exists nowhere else, and its reason says so.
fn note_written_on_replica(action: &mut PlannedAction, replication_status: Option<&str>) {
    if replication_status != Some("REPLICA") && !action.reason.ends_with(crate::plan::WRITTEN_ON_REPLICA) {
        action.reason = format!("{}; {}", action.reason, crate::plan::WRITTEN_ON_REPLICA);
    }
}

/// HEADs an archived source version: a finished restore makes it copyable, an ongoing one
/// pending (DESIGN.md: archived versions are HEADed, and only they).
async fn resolve_archived(
    client: &SourceClient,
    bucket: &str,
    versions: &[VersionRecord],
    cfg: &PlanConfig,
    action: &mut PlannedAction,
) -> Result<(), Error> {
    // In all-versions the rows after an archived version wait for it and are `archived`
    // too, delete markers and versions of other classes among them: only archived
    // versions are HEADed (a HEAD of a delete marker fails with 405).
    let Some(v) = versions
        .iter()
        .find(|v| v.version_id == action.source_version_id && v.is_archived())
    else {
        return Ok(());
    };
    let head = client
        .head_version(bucket, &action.key, &action.source_version_id, None)
        .await
        .map_err(Error::S3)?;
    match archive_restore(head.restore.as_deref()) {
        ArchiveRestore::Finished => {
            let mut copyable = v.clone();
            copyable.storage_class = Some("STANDARD".to_owned());
            action.action = crate::plan::copy_kind(&copyable, cfg);
            action.reason = format!(
                "{} restored from archive",
                v.storage_class.as_deref().unwrap_or("archived")
            );
        }
        ArchiveRestore::Ongoing => {
            action.action = ActionKind::Pending;
            action.reason = "restore from archive under way".to_owned();
        }
        ArchiveRestore::None => {}
    }
    Ok(())
}

/// Where an archived version's restore from the archive stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArchiveRestore {
    /// Never requested, or expired: not copyable.
    None,
    /// Requested and under way: `pending`.
    Ongoing,
    /// Finished: a temporary copy is readable until its expiry date.
    Finished,
}

/// Reads HEAD's `x-amz-restore` header: `ongoing-request="true"` while the restore runs,
/// `ongoing-request="false", expiry-date="..."` once it has finished.
fn archive_restore(header: Option<&str>) -> ArchiveRestore {
    match header {
        Some(r) if r.contains("ongoing-request=\"false\"") => ArchiveRestore::Finished,
        Some(r) if r.contains("ongoing-request=\"true\"") => ArchiveRestore::Ongoing,
        _ => ArchiveRestore::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// moto never sets `x-amz-replication-status` (S3-NOTES 47): the statuses a HEAD of a
    /// replica version gives on S3 are canned here.
    #[test]
    fn copy_candidates_not_marked_replica_were_written_on_the_replica() {
        let row = |reason: &str| PlannedAction {
            key: "k".into(),
            action: ActionKind::Copy,
            source_version_id: "v".into(),
            dest_key: "k".into(),
            dest_version_id: String::new(),
            size_bytes: Some(5),
            etag: None,
            last_modified: None,
            reason: reason.into(),
            storage_class: None,
            checksum_algorithm: None,
            is_delete_marker: false,
        };
        // (replication status of the source version, written on the replica)
        let cases = [
            (Some("REPLICA"), false),
            (None, true),
            (Some("COMPLETED"), true),
            (Some("PENDING"), true),
            (Some("FAILED"), true),
        ];
        for (status, written) in cases {
            let mut a = row("missing in primary");
            note_written_on_replica(&mut a, status);
            note_written_on_replica(&mut a, status);
            let want = if written {
                format!("missing in primary; {}", crate::plan::WRITTEN_ON_REPLICA)
            } else {
                "missing in primary".to_owned()
            };
            assert_eq!(a.reason, want, "{status:?}");
            let mut summary = PlanSummary::new(None);
            summary.add(&a);
            assert_eq!(summary.written_on_replica.objects, u64::from(written), "{status:?}");
        }
    }

    /// The header as S3 documents it. moto finishes RestoreObject at once (S3-NOTES 38),
    /// so `ongoing-request="true"` (a restore under way, hours on S3) never shows there:
    /// these canned values stand in for it.
    #[test]
    fn reads_archive_restore_header() {
        let cases = [
            (None, ArchiveRestore::None),
            (Some("ongoing-request=\"true\""), ArchiveRestore::Ongoing),
            (
                Some("ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\""),
                ArchiveRestore::Finished,
            ),
            (Some(""), ArchiveRestore::None),
        ];
        for (header, want) in cases {
            assert_eq!(archive_restore(header), want, "{header:?}");
        }
    }
}
