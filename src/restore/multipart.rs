//! Multipart copies: the source's own part layout (a plain HEAD for size and metadata, and
//! one HEAD with `partNumber=k` for every part but the last,
//! so the copy keeps the replica's ETag), or a split of a large single-part source;
//! CreateMultipartUpload with the metadata and tags UploadPartCopy does not carry, parts in
//! parallel under the shared limit, CompleteMultipartUpload; abort on failure.

use futures::StreamExt;
use jiff::Timestamp;

use super::{ActionOutcome, Engine, Event, Status, failed};
use crate::parts::{PartRange, default_part_size, layout_from_sizes, split};
use crate::plan::PlannedAction;
use crate::s3::ops::{CompletedPartInfo, MultipartSource, ObjectHead, TAGGING_HEADER_MAX, tagging_header};
use crate::s3::{S3Error, S3ErrorKind};

impl Engine {
    /// Whether the action copies a single-part source in parts of our choosing (a new ETag).
    pub(super) fn splits(&self, action: &PlannedAction) -> bool {
        let multipart_source = action
            .etag
            .as_deref()
            .and_then(|e| e.rsplit_once('-'))
            .is_some_and(|(_, n)| n.parse::<u32>().is_ok());
        !multipart_source
    }

    pub(super) async fn multipart_copy(&self, idx: u64, action: &PlannedAction) -> ActionOutcome {
        if let Some(since) = self.inner.cfg.resume_since
            && let Some(found) = self.find_write(action, since, false).await
        {
            return ActionOutcome {
                status: Status::Done,
                dest_version_id: found.version_id,
                etag_dest: found.etag,
                attempts: 0,
                duration_ms: 0,
                error: Some("found at the destination after an interrupted run".to_owned()),
            };
        }
        match self.try_multipart(idx, action).await {
            Ok(outcome) => outcome,
            Err(e) => failed(&e),
        }
    }

    /// The source's layout and what CreateMultipartUpload must carry.
    async fn source_layout(&self, action: &PlannedAction) -> Result<(Vec<PartRange>, MultipartSource), S3Error> {
        let cfg = &self.inner.cfg;
        let source = &self.inner.source;
        let bucket = &cfg.source.bucket;
        let key = &action.key;
        let version = &action.source_version_id;
        let splits = self.splits(action);
        // A plain HEAD gives the metadata CreateMultipartUpload needs and the total size;
        // parts 1..N-1 by `partNumber` give the layout, the last part being the rest: N
        // HEADs for N parts, as one per part would be.
        let first: ObjectHead = self
            .retrying("HeadObject", || source.head_version(bucket, key, version, None))
            .await
            .0?;
        let size = first.content_length;
        if action.size_bytes.is_some_and(|s| s != size) {
            return Err(layout_error(
                action,
                format!(
                    "the version is {size} bytes, the listing says {}",
                    action.size_bytes.unwrap_or(0)
                ),
            ));
        }
        let layout = if splits {
            let part_size = cfg.part_size.unwrap_or_else(|| default_part_size(size));
            split(size, part_size).map_err(|e| layout_error(action, e.to_string()))?
        } else {
            let count = action
                .etag
                .as_deref()
                .and_then(|e| e.rsplit_once('-'))
                .and_then(|(_, n)| n.parse::<u32>().ok())
                .unwrap_or(1)
                .max(1);
            let heads: Vec<Result<ObjectHead, S3Error>> = futures::stream::iter(1..count)
                .map(|k| async move {
                    self.retrying("HeadObject", || source.head_version(bucket, key, version, Some(k)))
                        .await
                        .0
                })
                .buffered(cfg.concurrency.clamp(1, 16))
                .collect()
                .await;
            let mut sizes = Vec::with_capacity(count as usize);
            for head in heads {
                let head = head?;
                if head.parts_count.is_some_and(|n| n != count) {
                    return Err(layout_error(
                        action,
                        format!("S3 says {} parts, the ETag says {count}", head.parts_count.unwrap_or(0)),
                    ));
                }
                sizes.push(head.content_length);
            }
            let listed: u64 = sizes.iter().sum();
            let Some(last) = size.checked_sub(listed) else {
                return Err(layout_error(
                    action,
                    format!("parts 1..{} add up to {listed} bytes, more than {size}", count - 1),
                ));
            };
            sizes.push(last);
            layout_from_sizes(&sizes).map_err(|e| layout_error(action, e.to_string()))?
        };
        let tags = self
            .retrying("GetObjectTagging", || source.get_tags(bucket, key, version))
            .await
            .0?;
        let checksum_algorithm = first
            .checksum
            .as_ref()
            .map(|(a, _)| a.clone())
            .or_else(|| action.checksum_algorithm.clone());
        Ok((
            layout,
            MultipartSource {
                content: first.content,
                metadata: first.metadata,
                tags,
                checksum_algorithm,
            },
        ))
    }

    async fn try_multipart(&self, idx: u64, action: &PlannedAction) -> Result<ActionOutcome, S3Error> {
        let cfg = &self.inner.cfg;
        let dest = &self.inner.dest;
        let (layout, source_info) = self.source_layout(action).await?;
        if layout.iter().skip(1).any(PartRange::is_empty) {
            return Err(layout_error(
                action,
                "an empty part after the first cannot be copied by range".to_owned(),
            ));
        }
        let attrs = self.write_attributes(action).await?;
        let dest_bucket = &cfg.dest.bucket;
        let upload_id = self
            .retrying("CreateMultipartUpload", || {
                dest.create_multipart(dest_bucket, &action.dest_key, &source_info, &attrs)
            })
            .await
            .0?;
        let _ = self
            .inner
            .events
            .send(Event::UploadStarted {
                idx,
                dest_key: action.dest_key.clone(),
                upload_id: upload_id.clone(),
            })
            .await;

        let result = self.copy_parts_and_complete(action, &layout, &upload_id).await;
        match result {
            Ok((written, attempts)) => {
                let _ = self
                    .inner
                    .events
                    .send(Event::UploadEnded {
                        upload_id,
                        completed: true,
                    })
                    .await;
                // Tags that did not fit the header go on afterwards (S3-NOTES 3).
                if !source_info.tags.is_empty() && tagging_header(&source_info.tags).len() > TAGGING_HEADER_MAX {
                    let version = written.version_id.clone();
                    self.retrying("PutObjectTagging", || {
                        dest.put_tags(dest_bucket, &action.dest_key, version.as_deref(), &source_info.tags)
                    })
                    .await
                    .0?;
                }
                Ok(ActionOutcome {
                    status: Status::Done,
                    dest_version_id: written.version_id,
                    etag_dest: written.etag,
                    attempts,
                    duration_ms: 0,
                    error: None,
                })
            }
            Err(e) => {
                // Orphaned parts are billed forever: abort (S3-NOTES 8).
                let (aborted, _) = self
                    .retrying("AbortMultipartUpload", || {
                        dest.abort_multipart(dest_bucket, &action.dest_key, &upload_id)
                    })
                    .await;
                if aborted.is_ok() {
                    let _ = self
                        .inner
                        .events
                        .send(Event::UploadEnded {
                            upload_id,
                            completed: false,
                        })
                        .await;
                }
                Err(e)
            }
        }
    }

    async fn copy_parts_and_complete(
        &self,
        action: &PlannedAction,
        layout: &[PartRange],
        upload_id: &str,
    ) -> Result<(crate::s3::ops::Written, u32), S3Error> {
        let cfg = &self.inner.cfg;
        let dest = &self.inner.dest;
        let results: Vec<Result<CompletedPartInfo, S3Error>> = futures::stream::iter(layout.iter().cloned())
            .map(|part| async move {
                if self.inner.cancel.is_cancelled() {
                    return Err(cancelled(action));
                }
                self.retrying("UploadPartCopy", || {
                    dest.upload_part_copy(
                        &cfg.source.bucket,
                        &action.key,
                        &action.source_version_id,
                        &cfg.dest.bucket,
                        &action.dest_key,
                        upload_id,
                        part.part_number,
                        part.header_value(),
                    )
                })
                .await
                .0
            })
            .buffer_unordered(cfg.concurrency.max(1))
            .collect()
            .await;
        let mut parts = Vec::with_capacity(results.len());
        for r in results {
            parts.push(r?);
        }
        parts.sort_by_key(|p| p.part_number);
        if self.inner.cancel.is_cancelled() {
            return Err(cancelled(action));
        }
        let sent = Timestamp::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (result, epoch) = {
                let slot = self.inner.limit.acquire().await;
                let result = dest
                    .complete_multipart(&cfg.dest.bucket, &action.dest_key, upload_id, &parts)
                    .await;
                (result, slot.epoch())
            };
            match result {
                Ok(w) => {
                    self.inner.limit.on_success();
                    return Ok((w, attempt));
                }
                Err(e) => {
                    // A lost answer to a completion that went through: the upload is gone
                    // and the version is there.
                    let ambiguous = matches!(
                        e.kind,
                        S3ErrorKind::Timeout | S3ErrorKind::Transient | S3ErrorKind::NotFound
                    );
                    if ambiguous && let Some(found) = self.find_write(action, sent, false).await {
                        return Ok((found, attempt));
                    }
                    if !self.should_retry(&e, attempt, epoch).await {
                        return Err(e);
                    }
                }
            }
        }
    }
}

fn layout_error(action: &PlannedAction, message: String) -> S3Error {
    S3Error {
        operation: "HeadObject",
        bucket: String::new(),
        key: Some(action.key.clone()),
        kind: S3ErrorKind::Other,
        code: "PartLayout".to_owned(),
        message,
        request_id: None,
        status: None,
        bucket_region: None,
        endpoint: None,
    }
}

fn cancelled(action: &PlannedAction) -> S3Error {
    S3Error {
        operation: "UploadPartCopy",
        bucket: String::new(),
        key: Some(action.dest_key.clone()),
        kind: S3ErrorKind::Other,
        code: "Interrupted".to_owned(),
        message: "the run was interrupted; the upload is aborted".to_owned(),
        request_id: None,
        status: None,
        bucket_region: None,
        endpoint: None,
    }
}
