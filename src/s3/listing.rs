//! Paginated ListObjectVersions as an ordered stream of [`VersionRecord`]s.
//!
//! S3 lists keys in UTF-8 byte order and a key's versions newest first; the SDK splits
//! each page into versions and delete markers, which are merged back here. A large
//! listing is split by the prefixes of a delimiter listing, which are listed
//! concurrently and emitted in order. Filtering by location and policy are the callers'.

use std::cmp::Ordering;
use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::types::{DeleteMarkerEntry, EncodingType, ObjectVersion};
use futures::stream::{self, Stream, StreamExt};
use jiff::Timestamp;
use tokio::sync::{Semaphore, mpsc};

use crate::model::{Location, VersionRecord};
use crate::s3::client::{DestClient, SourceClient};
use crate::s3::error::{S3Error, S3ErrorKind};

/// How to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListConfig {
    /// Entries per ListObjectVersions request (S3's maximum is 1,000).
    pub page_size: i32,
    /// How many prefixes of a large listing are listed at once (1 lists sequentially).
    pub partitions: usize,
}

impl Default for ListConfig {
    fn default() -> Self {
        ListConfig {
            page_size: 1000,
            partitions: 8,
        }
    }
}

type Batch = Result<Vec<VersionRecord>, S3Error>;

/// Pages of one listing request: records in S3's order, the common prefixes of a
/// delimiter listing, and where the next page starts.
struct Page {
    records: Vec<VersionRecord>,
    prefixes: Vec<String>,
    next: Option<(String, Option<String>)>,
}

#[derive(Clone)]
struct Lister {
    client: Client,
    bucket: String,
    endpoint: Option<String>,
    page_size: i32,
}

impl Lister {
    async fn page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        marker: Option<&(String, Option<String>)>,
    ) -> Result<Page, S3Error> {
        let mut req = self
            .client
            .list_object_versions()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(self.page_size)
            // Keys may hold characters XML 1.0 cannot carry (S3-NOTES 10).
            .encoding_type(EncodingType::Url);
        if let Some(d) = delimiter {
            req = req.delimiter(d);
        }
        if let Some((key, version)) = marker {
            req = req.key_marker(key);
            if let Some(v) = version {
                req = req.version_id_marker(v);
            }
        }
        let out = req.send().await.map_err(|e| {
            S3Error::from_sdk(&e, "ListObjectVersions", &self.bucket, None).at_endpoint(self.endpoint.as_deref())
        })?;
        // Decode only when S3 says it encoded (S3-NOTES 33); some servers ignore the ask.
        let encoded = out.encoding_type() == Some(&EncodingType::Url);
        let decode = |s: &str| -> Result<String, S3Error> {
            if encoded {
                url_decode(s).ok_or_else(|| self.bad_page(s))
            } else {
                Ok(s.to_owned())
            }
        };
        let versions = out
            .versions()
            .iter()
            .map(|v| version_record(v, &decode))
            .collect::<Result<Vec<_>, _>>()?;
        let markers = out
            .delete_markers()
            .iter()
            .map(|d| marker_record(d, &decode))
            .collect::<Result<Vec<_>, _>>()?;
        let prefixes = out
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix())
            .map(&decode)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if out.is_truncated() == Some(true) {
            let key = out.next_key_marker().map(&decode).transpose()?;
            let Some(key) = key.filter(|k| !k.is_empty()) else {
                return Err(self.bad_page("a truncated page without NextKeyMarker"));
            };
            Some((
                key,
                out.next_version_id_marker()
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned),
            ))
        } else {
            None
        };
        Ok(Page {
            records: merge_page(versions, markers),
            prefixes,
            next,
        })
    }

    fn bad_page(&self, what: &str) -> S3Error {
        S3Error {
            operation: "ListObjectVersions",
            bucket: self.bucket.clone(),
            key: None,
            kind: S3ErrorKind::Other,
            code: String::new(),
            message: format!("the listing could not be read: {what:?}"),
            request_id: None,
            status: None,
            bucket_region: None,
            endpoint: self.endpoint.clone(),
        }
    }

    /// Lists everything under `prefix` page by page into `tx`, starting after `marker`.
    async fn list_into(&self, prefix: &str, mut marker: Option<(String, Option<String>)>, tx: &mpsc::Sender<Batch>) {
        loop {
            match self.page(prefix, None, marker.as_ref()).await {
                Ok(page) => {
                    if tx.send(Ok(page.records)).await.is_err() {
                        return;
                    }
                    match page.next {
                        Some(next) => marker = Some(next),
                        None => return,
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    }
}

/// One stretch of a partitioned listing, in key order.
enum Segment {
    Records(Vec<VersionRecord>),
    Sub(mpsc::Receiver<Batch>),
    Failed(S3Error),
}

/// Lists `location` with the SDK client, in S3's order, filtered to the keys the location
/// selects.
fn list(
    lister: Lister,
    location: &Location,
    cfg: ListConfig,
) -> impl Stream<Item = Result<VersionRecord, S3Error>> + use<> {
    let (tx, rx) = mpsc::channel::<Batch>(4);
    let prefix = location.list_prefix().to_owned();
    let partitions = cfg.partitions.max(1);
    tokio::spawn(async move {
        // One plain page first: small listings need nothing more.
        let first = match lister.page(&prefix, None, None).await {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        match first.next {
            None => {
                let _ = tx.send(Ok(first.records)).await;
            }
            Some(next) if partitions == 1 => {
                if tx.send(Ok(first.records)).await.is_ok() {
                    lister.list_into(&prefix, Some(next), &tx).await;
                }
            }
            Some(_) => partitioned(lister, prefix, partitions, tx).await,
        }
    });
    let selector = location.clone();
    stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
        .flat_map(|batch| match batch {
            Ok(records) => stream::iter(records.into_iter().map(Ok)).left_stream(),
            Err(e) => stream::iter(vec![Err(e)]).right_stream(),
        })
        .filter(move |r| {
            let keep = match r {
                Ok(rec) => selector.selects(&rec.key),
                Err(_) => true,
            };
            futures::future::ready(keep)
        })
        .scan(false, |failed, r| {
            // Nothing follows an error: the stream ends there.
            if *failed {
                return futures::future::ready(None);
            }
            *failed = r.is_err();
            futures::future::ready(Some(r))
        })
}

/// Lists a large prefix by the common prefixes of a delimiter listing: the direct keys in
/// place, each common prefix by its own listing, up to `partitions` of them at once.
async fn partitioned(lister: Lister, prefix: String, partitions: usize, out: mpsc::Sender<Batch>) {
    let (seg_tx, mut seg_rx) = mpsc::channel::<Segment>(partitions);
    let permits = Arc::new(Semaphore::new(partitions));
    let producer = {
        let lister = lister.clone();
        tokio::spawn(async move {
            let mut marker: Option<(String, Option<String>)> = None;
            let mut last_prefix: Option<String> = None;
            loop {
                let page = match lister.page(&prefix, Some("/"), marker.as_ref()).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = seg_tx.send(Segment::Failed(e)).await;
                        return;
                    }
                };
                // A page may repeat a prefix that ended the previous one.
                let prefixes: Vec<String> = page
                    .prefixes
                    .into_iter()
                    .filter(|p| last_prefix.as_ref().is_none_or(|l| p > l))
                    .collect();
                if let Some(p) = prefixes.last() {
                    last_prefix = Some(p.clone());
                }
                for item in interleave(page.records, prefixes) {
                    let seg = match item {
                        Item::Records(r) => Segment::Records(r),
                        Item::Prefix(p) => {
                            let Ok(permit) = permits.clone().acquire_owned().await else {
                                return;
                            };
                            let (tx, rx) = mpsc::channel::<Batch>(2);
                            let lister = lister.clone();
                            tokio::spawn(async move {
                                lister.list_into(&p, None, &tx).await;
                                drop(permit);
                            });
                            Segment::Sub(rx)
                        }
                    };
                    if seg_tx.send(seg).await.is_err() {
                        return;
                    }
                }
                match page.next {
                    Some(next) => marker = Some(next),
                    None => return,
                }
            }
        })
    };
    while let Some(seg) = seg_rx.recv().await {
        match seg {
            Segment::Records(r) => {
                if out.send(Ok(r)).await.is_err() {
                    break;
                }
            }
            Segment::Sub(mut rx) => {
                while let Some(batch) = rx.recv().await {
                    let failed = batch.is_err();
                    if out.send(batch).await.is_err() || failed {
                        producer.abort();
                        return;
                    }
                }
            }
            Segment::Failed(e) => {
                let _ = out.send(Err(e)).await;
                break;
            }
        }
    }
    producer.abort();
}

enum Item {
    Records(Vec<VersionRecord>),
    Prefix(String),
}

/// Puts a delimiter page's records and common prefixes into one key-ordered sequence.
/// A record key that sorts before a prefix sorts before every key under it.
fn interleave(records: Vec<VersionRecord>, prefixes: Vec<String>) -> Vec<Item> {
    let mut items = Vec::new();
    let mut run = Vec::new();
    let mut prefixes = prefixes.into_iter().peekable();
    for rec in records {
        while let Some(p) = prefixes.next_if(|p| p.as_str() < rec.key.as_str()) {
            if !run.is_empty() {
                items.push(Item::Records(std::mem::take(&mut run)));
            }
            items.push(Item::Prefix(p));
        }
        run.push(rec);
    }
    if !run.is_empty() {
        items.push(Item::Records(run));
    }
    items.extend(prefixes.map(Item::Prefix));
    items
}

/// Merges a page's versions and delete markers (each in S3's order) back into one
/// sequence: keys ascending; within a key the current entry first, then newest first.
/// Where a version and a delete marker share a second, the delete marker goes first.
fn merge_page(versions: Vec<VersionRecord>, markers: Vec<VersionRecord>) -> Vec<VersionRecord> {
    let mut out = Vec::with_capacity(versions.len() + markers.len());
    let mut v = versions.into_iter().peekable();
    let mut m = markers.into_iter().peekable();
    loop {
        let take_version = match (v.peek(), m.peek()) {
            (Some(a), Some(b)) => entry_order(a, b) == Ordering::Less,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_version { v.next() } else { m.next() };
        out.extend(next);
    }
    out
}

fn entry_order(version: &VersionRecord, marker: &VersionRecord) -> Ordering {
    version
        .key
        .as_bytes()
        .cmp(marker.key.as_bytes())
        .then_with(|| marker.is_latest.cmp(&version.is_latest))
        .then_with(|| marker.last_modified.cmp(&version.last_modified))
        .then(Ordering::Greater)
}

fn timestamp(t: Option<&aws_smithy_types::DateTime>) -> Timestamp {
    t.and_then(|t| Timestamp::new(t.secs(), t.subsec_nanos() as i32).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

fn version_record(
    v: &ObjectVersion,
    decode: &impl Fn(&str) -> Result<String, S3Error>,
) -> Result<VersionRecord, S3Error> {
    Ok(VersionRecord {
        key: decode(v.key().unwrap_or_default())?,
        version_id: v.version_id().unwrap_or(crate::model::NULL_VERSION_ID).to_owned(),
        is_latest: v.is_latest().unwrap_or(false),
        is_delete_marker: false,
        last_modified: timestamp(v.last_modified()),
        size_bytes: v.size().unwrap_or(0).max(0) as u64,
        etag: v.e_tag().map(|e| e.trim_matches('"').to_owned()),
        storage_class: Some(
            v.storage_class()
                .map(|c| c.as_str().to_owned())
                .unwrap_or_else(|| "STANDARD".to_owned()),
        ),
        checksum_algorithm: v.checksum_algorithm().first().map(|c| c.as_str().to_owned()),
    })
}

fn marker_record(
    d: &DeleteMarkerEntry,
    decode: &impl Fn(&str) -> Result<String, S3Error>,
) -> Result<VersionRecord, S3Error> {
    Ok(VersionRecord {
        key: decode(d.key().unwrap_or_default())?,
        version_id: d.version_id().unwrap_or(crate::model::NULL_VERSION_ID).to_owned(),
        is_latest: d.is_latest().unwrap_or(false),
        is_delete_marker: true,
        last_modified: timestamp(d.last_modified()),
        size_bytes: 0,
        etag: None,
        storage_class: None,
        checksum_algorithm: None,
    })
}

/// Decodes a key S3 sent with `encoding-type=url` (form encoding: `+` is a space).
fn url_decode(s: &str) -> Option<String> {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

impl SourceClient {
    /// Every version and delete marker under `location`, in S3's order.
    pub fn list_versions(
        &self,
        location: &Location,
        cfg: ListConfig,
    ) -> impl Stream<Item = Result<VersionRecord, S3Error>> + use<> {
        list(lister(self.sdk(), self.endpoint(), location, cfg), location, cfg)
    }
}

impl DestClient {
    /// Every version and delete marker under `location`, in S3's order.
    pub fn list_versions(
        &self,
        location: &Location,
        cfg: ListConfig,
    ) -> impl Stream<Item = Result<VersionRecord, S3Error>> + use<> {
        list(lister(self.sdk(), self.endpoint(), location, cfg), location, cfg)
    }
}

fn lister(client: &Client, endpoint: Option<&str>, location: &Location, cfg: ListConfig) -> Lister {
    Lister {
        client: client.clone(),
        bucket: location.bucket.clone(),
        endpoint: endpoint.map(str::to_owned),
        page_size: cfg.page_size.clamp(1, 1000),
    }
}

impl DestClient {
    /// The newest versions (at most `limit`, newest first) of exactly `key`: one request,
    /// for checking whether a write whose answer was lost went through.
    ///
    /// # Errors
    /// The request failed.
    pub async fn versions_of_key(&self, bucket: &str, key: &str, limit: i32) -> Result<Vec<VersionRecord>, S3Error> {
        let location = Location::new(bucket, key);
        let lister = lister(
            self.sdk(),
            self.endpoint(),
            &location,
            ListConfig {
                page_size: limit,
                partitions: 1,
            },
        );
        // The key itself sorts before every longer key with its prefix: its versions come first.
        let page = lister.page(key, None, None).await?;
        Ok(page.records.into_iter().take_while(|r| r.key == key).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, latest: bool, secs: i64, dm: bool) -> VersionRecord {
        VersionRecord {
            key: key.into(),
            version_id: format!("{key}-{secs}"),
            is_latest: latest,
            is_delete_marker: dm,
            last_modified: Timestamp::from_second(secs).unwrap(),
            size_bytes: 0,
            etag: None,
            storage_class: None,
            checksum_algorithm: None,
        }
    }

    #[test]
    fn merges_versions_and_markers_per_key() {
        let versions = vec![
            rec("a", false, 5, false),
            rec("a", false, 3, false),
            rec("c", true, 9, false),
        ];
        let markers = vec![
            rec("a", true, 7, true),
            rec("a", false, 4, true),
            rec("b", true, 1, true),
        ];
        let merged: Vec<_> = merge_page(versions, markers)
            .into_iter()
            .map(|r| (r.key, r.last_modified.as_second()))
            .collect();
        let want: Vec<(String, i64)> = [("a", 7), ("a", 5), ("a", 4), ("a", 3), ("b", 1), ("c", 9)]
            .iter()
            .map(|(k, s)| (k.to_string(), *s))
            .collect();
        assert_eq!(merged, want);
    }

    #[test]
    fn interleaves_prefixes_in_key_order() {
        let records = vec![
            rec("a", true, 1, false),
            rec("a-b", true, 1, false),
            rec("a0", true, 1, false),
        ];
        let items = interleave(records, vec!["a/".into(), "b/".into()]);
        let shape: Vec<String> = items
            .iter()
            .map(|i| match i {
                Item::Records(r) => r.iter().map(|r| r.key.clone()).collect::<Vec<_>>().join(","),
                Item::Prefix(p) => format!("[{p}]"),
            })
            .collect();
        assert_eq!(shape, ["a,a-b", "[a/]", "a0", "[b/]"]);
    }

    #[test]
    fn decodes_form_encoded_keys() {
        assert_eq!(url_decode("a+b%2Bc%2F%C3%A9").as_deref(), Some("a b+c/é"));
        assert_eq!(url_decode("%FF"), None);
    }
}
