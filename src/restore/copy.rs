//! Single-request actions: CopyObject from a source version, and delete markers
//! (DeleteObject without a version id). Neither is ever sent twice blindly: after an
//! answer was lost, the destination is checked for the version the first try made.

use jiff::{SignedDuration, Timestamp};

use super::{ActionOutcome, Engine, Status, failed};
use crate::model::VersionRecord;
use crate::plan::PlannedAction;
use crate::s3::ops::{LockSettings, SseChoice, WriteAttributes, Written};
use crate::s3::{S3Error, S3ErrorKind};

/// How far back from a request's send time a version may be stamped and still be its
/// result: S3 stamps whole seconds, and clocks differ a little.
const CLOCK_SLACK: SignedDuration = SignedDuration::from_secs(60);

impl Engine {
    /// The attributes COPY directives do not carry: storage class, encryption, and where
    /// the destination calls for them, ACL grants (one GetObjectAcl) and Object Lock
    /// settings (one HEAD).
    pub(super) async fn write_attributes(&self, action: &PlannedAction) -> Result<WriteAttributes, S3Error> {
        let cfg = &self.inner.cfg;
        let source = &self.inner.source;
        let bucket = &cfg.source.bucket;
        let grants = if cfg.acls.copies(&action.key) {
            let (r, _) = self
                .retrying("GetObjectAcl", || {
                    source.get_acl(bucket, &action.key, &action.source_version_id)
                })
                .await;
            r?
        } else {
            Vec::new()
        };
        let lock = if cfg.copy_lock {
            let (r, _) = self
                .retrying("HeadObject", || {
                    source.head_version(bucket, &action.key, &action.source_version_id, None)
                })
                .await;
            r?.lock
        } else {
            LockSettings::default()
        };
        Ok(WriteAttributes {
            storage_class: cfg
                .storage_class
                .class_for(&action.key, action.storage_class.as_deref()),
            sse: cfg.sse.clone(),
            grants,
            lock,
        })
    }

    pub(super) async fn copy(&self, action: &PlannedAction) -> ActionOutcome {
        if let Some(found) = self.found_after_interruption(action, false).await {
            return found;
        }
        let attrs = match self.write_attributes(action).await {
            Ok(a) => a,
            Err(e) => return failed(&e),
        };
        let cfg = &self.inner.cfg;
        self.write_once(action, false, || {
            self.inner.dest.copy_version(
                &cfg.source.bucket,
                &action.key,
                &action.source_version_id,
                &cfg.dest.bucket,
                &action.dest_key,
                &attrs,
            )
        })
        .await
    }

    pub(super) async fn delete_marker(&self, action: &PlannedAction) -> ActionOutcome {
        if let Some(found) = self.found_after_interruption(action, true).await {
            return found;
        }
        let bucket = &self.inner.cfg.dest.bucket;
        self.write_once(action, true, || {
            self.inner.dest.add_delete_marker(bucket, &action.dest_key)
        })
        .await
    }

    /// On resume: the write the interrupted run made for this action, if it made one.
    async fn found_after_interruption(&self, action: &PlannedAction, marker: bool) -> Option<ActionOutcome> {
        let since = self.inner.cfg.resume_since?;
        let found = self.find_write(action, since, marker).await?;
        Some(done(found, 0, "found at the destination after an interrupted run"))
    }

    /// Sends a write that makes a new version, retrying as the engine does, but never
    /// blindly: after an answer was lost (timeout, broken connection, 5xx) the write may
    /// have gone through, and a second one would make a second version (S3-NOTES 31), so
    /// the destination is checked first.
    async fn write_once<F, Fut>(&self, action: &PlannedAction, marker: bool, mut write: F) -> ActionOutcome
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Written, S3Error>>,
    {
        let sent = Timestamp::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (result, epoch) = {
                let slot = self.inner.limit.acquire().await;
                let result = write().await;
                (result, slot.epoch())
            };
            match result {
                Ok(written) => {
                    self.inner.limit.on_success();
                    return done(written, attempt, "");
                }
                Err(e) => {
                    let ambiguous = matches!(e.kind, S3ErrorKind::Timeout | S3ErrorKind::Transient);
                    if !self.should_retry(&e, attempt, epoch).await {
                        return ActionOutcome {
                            attempts: attempt,
                            ..failed(&e)
                        };
                    }
                    if ambiguous && let Some(found) = self.find_write(action, sent, marker).await {
                        return done(found, attempt, "");
                    }
                }
            }
        }
    }

    /// Looks at the destination key for a version that a write sent at `since` made: a
    /// version newer than the one planned against, stamped no earlier than `since`, with
    /// the source's content (or a delete marker, for a delete). `None` when there is none
    /// or the check itself failed (then the write is retried).
    pub(super) async fn find_write(&self, action: &PlannedAction, since: Timestamp, marker: bool) -> Option<Written> {
        let cfg = &self.inner.cfg;
        let (versions, _) = self
            .retrying("ListObjectVersions", || {
                self.inner.dest.versions_of_key(&cfg.dest.bucket, &action.dest_key, 100)
            })
            .await;
        let versions = versions.ok()?;
        let earliest = since.checked_sub(CLOCK_SLACK).unwrap_or(since);
        versions
            .iter()
            .take_while(|v| v.version_id != action.dest_version_id)
            .filter(|v| v.last_modified >= earliest)
            .find(|v| self.is_result_of(action, v, marker))
            .map(|v| Written {
                version_id: Some(v.version_id.clone()),
                etag: v.etag.clone(),
            })
    }

    fn is_result_of(&self, action: &PlannedAction, v: &VersionRecord, marker: bool) -> bool {
        if marker {
            return v.is_delete_marker;
        }
        if v.is_delete_marker || Some(v.size_bytes) != action.size_bytes {
            return false;
        }
        // An SSE-KMS copy, or a source split into parts of our choosing, gets a new ETag:
        // size is the evidence left.
        let etag_kept = !matches!(self.inner.cfg.sse, SseChoice::Kms(_)) && !self.splits(action);
        !etag_kept || v.etag == action.etag
    }
}

fn done(written: Written, attempts: u32, note: &str) -> ActionOutcome {
    ActionOutcome {
        status: Status::Done,
        dest_version_id: written.version_id,
        etag_dest: written.etag,
        attempts,
        duration_ms: 0,
        error: Some(note.to_owned()).filter(|n| !n.is_empty()),
    }
}
