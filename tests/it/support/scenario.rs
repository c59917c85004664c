//! The scenario builder: seeds a realistic disaster-recovery state into a fresh replica
//! (eu-west-1) and primary (us-east-1), both versioned, and returns what it seeded.
//!
//! A scenario is a replica history per key (versions and delete markers, oldest first) and
//! what the primary holds of it ([`Damage`]). Seeding follows a real timeline: first the
//! primary's pre-outage versions, then the replica's history, then the primary's writes
//! after the outage (restored copies, newer versions). Where the listing order depends on
//! it, writes are spaced into different seconds, since Last-Modified has one-second
//! resolution (S3-NOTES 38). Assertions stay in the tests.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ObjectCannedAcl, ServerSideEncryption, StorageClass,
};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{
    BucketOpts, CONCURRENCY, PRIMARY_REGION, REPLICA_REGION, VersionShape, client, create_bucket, unique_bucket,
    unquote,
};

/// moto's canonical id of the account every request runs as.
pub const MOTO_OWNER_ID: &str = "75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a";
/// The AllUsers group, for public-read style grants.
pub const ALL_USERS_URI: &str = "http://acs.amazonaws.com/groups/global/AllUsers";

/// Keys that break naive code: encoding, normalisation, CSV and XML. Each is a distinct key.
pub fn special_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "with space.txt",
        "two  spaces",
        "trailing space ",
        "caf\u{e9}",       // NFC
        "cafe\u{301}",     // NFD: another key
        "dir/caf\u{e9}/x", // NFC inside a path
        "plus+sign",
        "a+b c",
        "percent%sign",
        "percent%25encoded",
        "slash%2Fencoded",
        "question?mark",
        "hash#tag",
        "amp&ersand",
        "equals=sign",
        "semi;colon",
        "double\"quote",
        "single'quote",
        "comma,separated",
        "tab\there",
        "/leading-slash",
        "double//slash",
        "dir/./dot",
        "./dot-leading",
        "dir/../dotdot",
        "../parent",
        "trailing-slash/",
        "=cmd|' /C calc'!A0",
        "+formula",
        "@SUM(1+1)",
        "-2+3",
        "angle<brackets>",
        "back\\slash",
        "tilde~star*excl!",
        "parens(and)[brackets]{braces}",
        "\u{65e5}\u{672c}\u{8a9e}/\u{30ad}\u{30fc}",
        "emoji \u{1f389}",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    keys.push(key_of_1024_bytes());
    keys
}

/// A key of exactly 1,024 bytes (S3's limit) but fewer characters: 500 of them are `é`.
pub fn key_of_1024_bytes() -> String {
    let key = format!("long/{}{}", "\u{e9}".repeat(500), "x".repeat(19));
    debug_assert_eq!(key.len(), 1024);
    key
}

/// A permission an explicit ACL grant gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// `x-amz-grant-read`
    Read,
    /// `x-amz-grant-read-acp`
    ReadAcp,
    /// `x-amz-grant-write-acp`
    WriteAcp,
    /// `x-amz-grant-full-control`
    FullControl,
}

/// An object's ACL as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acl {
    /// A canned ACL (`x-amz-acl`).
    Canned(ObjectCannedAcl),
    /// Explicit grants, the grantee in header form: `id="..."`, `uri="..."`.
    Grants(Vec<(Permission, String)>),
}

/// Server-side encryption asked for on the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// SSE-S3 (`AES256`).
    S3,
    /// SSE-KMS with this key id (moto echoes any id).
    Kms(String),
}

/// One object version to write: body and every attribute a restore must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSpec {
    /// The content.
    pub body: Bytes,
    /// `Some(sizes)`: written as a multipart upload with these part sizes, in order.
    pub parts: Option<Vec<usize>>,
    /// Content-Type.
    pub content_type: Option<String>,
    /// Cache-Control.
    pub cache_control: Option<String>,
    /// Content-Disposition.
    pub content_disposition: Option<String>,
    /// Content-Encoding.
    pub content_encoding: Option<String>,
    /// Content-Language.
    pub content_language: Option<String>,
    /// User metadata, names without `x-amz-meta-`.
    pub metadata: BTreeMap<String, String>,
    /// Tags, in order.
    pub tags: Vec<(String, String)>,
    /// ACL.
    pub acl: Option<Acl>,
    /// Server-side encryption.
    pub sse: Option<Sse>,
    /// Storage class (`None`: STANDARD).
    pub storage_class: Option<StorageClass>,
    /// Send an additional SHA-256 checksum (per part for multipart).
    pub checksum_sha256: bool,
}

impl ObjectSpec {
    /// A version with this content and no attributes.
    pub fn bytes(body: impl Into<Bytes>) -> Self {
        Self {
            body: body.into(),
            parts: None,
            content_type: None,
            cache_control: None,
            content_disposition: None,
            content_encoding: None,
            content_language: None,
            metadata: BTreeMap::new(),
            tags: Vec::new(),
            acl: None,
            sse: None,
            storage_class: None,
            checksum_sha256: false,
        }
    }

    /// A version holding this text.
    pub fn text(text: &str) -> Self {
        Self::bytes(Bytes::copy_from_slice(text.as_bytes()))
    }

    /// A version of `size` random bytes.
    pub fn random(size: usize) -> Self {
        Self::bytes(random_bytes(size))
    }

    /// A multipart version of random bytes with these part sizes (each but the last at
    /// least [`super::server::PART_MIN_SIZE_BYTES`]), e.g. `&[6144, 5120, 7168]`.
    pub fn multipart(part_sizes: &[usize]) -> Self {
        let mut spec = Self::random(part_sizes.iter().sum());
        spec.parts = Some(part_sizes.to_vec());
        spec
    }

    /// A multipart version of `count` random parts of `part_size` bytes each.
    pub fn multipart_uniform(part_size: usize, count: usize) -> Self {
        Self::multipart(&vec![part_size; count])
    }

    /// Sets Content-Type.
    pub fn content_type(mut self, v: &str) -> Self {
        self.content_type = Some(v.to_owned());
        self
    }

    /// Sets Cache-Control.
    pub fn cache_control(mut self, v: &str) -> Self {
        self.cache_control = Some(v.to_owned());
        self
    }

    /// Sets Content-Disposition.
    pub fn content_disposition(mut self, v: &str) -> Self {
        self.content_disposition = Some(v.to_owned());
        self
    }

    /// Sets Content-Encoding.
    pub fn content_encoding(mut self, v: &str) -> Self {
        self.content_encoding = Some(v.to_owned());
        self
    }

    /// Sets Content-Language.
    pub fn content_language(mut self, v: &str) -> Self {
        self.content_language = Some(v.to_owned());
        self
    }

    /// Adds user metadata (`x-amz-meta-NAME`).
    pub fn meta(mut self, name: &str, value: &str) -> Self {
        self.metadata.insert(name.to_owned(), value.to_owned());
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.tags.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sets a canned ACL.
    pub fn canned_acl(mut self, acl: ObjectCannedAcl) -> Self {
        self.acl = Some(Acl::Canned(acl));
        self
    }

    /// Adds an explicit grant (`grantee` as `id="..."` or `uri="..."`).
    pub fn grant(mut self, permission: Permission, grantee: &str) -> Self {
        match &mut self.acl {
            Some(Acl::Grants(grants)) => grants.push((permission, grantee.to_owned())),
            _ => self.acl = Some(Acl::Grants(vec![(permission, grantee.to_owned())])),
        }
        self
    }

    /// Asks for SSE-S3.
    pub fn sse_s3(mut self) -> Self {
        self.sse = Some(Sse::S3);
        self
    }

    /// Asks for SSE-KMS with `key_id`.
    pub fn sse_kms(mut self, key_id: &str) -> Self {
        self.sse = Some(Sse::Kms(key_id.to_owned()));
        self
    }

    /// Sets the storage class (`StorageClass::StandardIa`, `StorageClass::Glacier`, ...).
    pub fn storage_class(mut self, class: StorageClass) -> Self {
        self.storage_class = Some(class);
        self
    }

    /// Sends an additional SHA-256 checksum with the write.
    pub fn checksum_sha256(mut self) -> Self {
        self.checksum_sha256 = true;
        self
    }

    /// The storage class as a listing reports it.
    pub fn listed_storage_class(&self) -> String {
        self.storage_class
            .as_ref()
            .map_or("STANDARD", |c| c.as_str())
            .to_owned()
    }

    /// SHA-256 of the content, in hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(Sha256::digest(&self.body))
    }
}

/// Random content of `size` bytes.
pub fn random_bytes(size: usize) -> Bytes {
    let mut buf = vec![0u8; size];
    rand::rng().fill_bytes(&mut buf);
    buf.into()
}

/// One entry of a key's history.
#[allow(clippy::large_enum_variant)] // test data, never in bulk
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A version.
    Put(ObjectSpec),
    /// A delete marker (DeleteObject without a version id).
    DeleteMarker,
}

impl Entry {
    fn is_delete_marker(&self) -> bool {
        matches!(self, Entry::DeleteMarker)
    }
}

/// What the primary holds of a key. Calls add up: `Stale` then `Newer` gives a primary with
/// the replica's first versions and a newer one of its own.
#[allow(clippy::large_enum_variant)] // test data, never in bulk
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The primary lacks the key altogether (the default; clears earlier damage).
    Lost,
    /// The primary holds the replica's first `keep` entries (same content), written before
    /// the replica's later ones: older content.
    Stale {
        /// How many of the replica's oldest entries the primary holds.
        keep: usize,
    },
    /// The primary holds the replica's whole history, written before it (replicated).
    Replicated,
    /// The primary's current version is a copy of the replica's current entry, written after
    /// the replica's history (an earlier restore got this far).
    Restored,
    /// The primary gets this version after the replica's last write: newer than the
    /// replica's (a conflict).
    Newer(ObjectSpec),
    /// The primary gets a delete marker after the replica's last write.
    DeletedAfter,
}

#[derive(Debug, Clone, Default)]
struct KeyPlan {
    replica: Vec<Entry>,
    primary_before: Vec<Entry>,
    primary_after: Vec<Entry>,
}

/// Builds a scenario; [`ScenarioBuilder::seed`] writes it.
#[derive(Debug, Clone)]
pub struct ScenarioBuilder {
    name: String,
    replica_opts: BucketOpts,
    primary_opts: BucketOpts,
    keys: BTreeMap<String, KeyPlan>,
    concurrency: usize,
}

/// Entry point: `Scenario::builder("restore-basic")`.
#[derive(Debug)]
pub struct Scenario;

impl Scenario {
    /// A builder whose buckets are named after `name` (the test's name).
    pub fn builder(name: &str) -> ScenarioBuilder {
        ScenarioBuilder {
            name: name.to_owned(),
            replica_opts: BucketOpts::default(),
            primary_opts: BucketOpts::default(),
            keys: BTreeMap::new(),
            concurrency: CONCURRENCY,
        }
    }
}

impl ScenarioBuilder {
    /// Sets how the replica bucket is made (default: versioned).
    pub fn replica_opts(&mut self, opts: BucketOpts) -> &mut Self {
        self.replica_opts = opts;
        self
    }

    /// Sets how the primary bucket is made (default: versioned).
    pub fn primary_opts(&mut self, opts: BucketOpts) -> &mut Self {
        self.primary_opts = opts;
        self
    }

    /// Requests in flight while seeding (default 32).
    pub fn concurrency(&mut self, n: usize) -> &mut Self {
        self.concurrency = n.max(1);
        self
    }

    /// Appends a version to `key`'s replica history.
    pub fn put(&mut self, key: &str, spec: ObjectSpec) -> &mut Self {
        self.plan(key).replica.push(Entry::Put(spec));
        self
    }

    /// Appends a delete marker to `key`'s replica history.
    pub fn delete(&mut self, key: &str) -> &mut Self {
        self.plan(key).replica.push(Entry::DeleteMarker);
        self
    }

    /// Appends `count` versions of `size` random bytes to `key`'s replica history.
    pub fn versions(&mut self, key: &str, count: usize, size: usize) -> &mut Self {
        for _ in 0..count {
            self.put(key, ObjectSpec::random(size));
        }
        self
    }

    /// Adds `count` keys `{prefix}{i:05}`, each with `versions` random versions of `size` bytes.
    pub fn objects(&mut self, prefix: &str, count: usize, versions: usize, size: usize) -> &mut Self {
        for i in 0..count {
            self.versions(&format!("{prefix}{i:05}"), versions, size);
        }
        self
    }

    /// Adds every [`special_keys`] key with one small version naming its key.
    pub fn special_keys(&mut self) -> &mut Self {
        for key in special_keys() {
            let body = format!("content of {key:?}");
            self.put(&key, ObjectSpec::text(&body).content_type("text/plain"));
        }
        self
    }

    /// Changes what the primary holds of `key` (see [`Damage`]).
    pub fn damage(&mut self, key: &str, damage: Damage) -> &mut Self {
        let plan = self.plan(key);
        match damage {
            Damage::Lost => {
                plan.primary_before.clear();
                plan.primary_after.clear();
            }
            Damage::Stale { keep } => {
                let keep = keep.min(plan.replica.len());
                plan.primary_before = plan.replica[..keep].to_vec();
            }
            Damage::Replicated => plan.primary_before = plan.replica.clone(),
            Damage::Restored => {
                let current = plan
                    .replica
                    .last()
                    .cloned()
                    .unwrap_or_else(|| panic!("Restored: {key:?} has no replica history"));
                plan.primary_after.push(current);
            }
            Damage::Newer(spec) => plan.primary_after.push(Entry::Put(spec)),
            Damage::DeletedAfter => plan.primary_after.push(Entry::DeleteMarker),
        }
        self
    }

    /// Applies `damage` to every replica key added so far.
    pub fn damage_all(&mut self, damage: Damage) -> &mut Self {
        for key in self.replica_keys() {
            self.damage(&key, damage.clone());
        }
        self
    }

    /// Applies `damage` to every replica key for which `select` says yes (e.g. every other
    /// key, for a partly restored primary).
    pub fn damage_where(&mut self, mut select: impl FnMut(&str) -> bool, damage: Damage) -> &mut Self {
        for key in self.replica_keys() {
            if select(&key) {
                self.damage(&key, damage.clone());
            }
        }
        self
    }

    /// A key that exists only on the primary, written before the replica's history.
    pub fn primary_only(&mut self, key: &str, spec: ObjectSpec) -> &mut Self {
        self.plan(key).primary_before.push(Entry::Put(spec));
        self
    }

    /// The keys with a replica history, in S3 order.
    pub fn replica_keys(&self) -> Vec<String> {
        self.keys
            .iter()
            .filter(|(_, p)| !p.replica.is_empty())
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn plan(&mut self, key: &str) -> &mut KeyPlan {
        self.keys.entry(key.to_owned()).or_default()
    }

    /// Creates both buckets and writes the scenario.
    ///
    /// # Panics
    /// When any write fails.
    pub async fn seed(&self) -> Seeded {
        // moto makes no delete marker for a key without versions (S3 does): such a history
        // would silently lose its first entry.
        for (key, plan) in &self.keys {
            let primary = plan.primary_before.iter().chain(&plan.primary_after).next();
            for (side, first) in [("replica", plan.replica.first()), ("primary", primary)] {
                assert!(
                    !first.is_some_and(Entry::is_delete_marker),
                    "{key:?}: a {side} history cannot start with a delete marker on moto (it makes none \
                     for a key without versions); put a version first"
                );
            }
        }
        let started = Instant::now();
        let replica = SeededBucket::new(unique_bucket(&format!("{}-replica", self.name)), REPLICA_REGION);
        let primary = SeededBucket::new(unique_bucket(&format!("{}-primary", self.name)), PRIMARY_REGION);
        futures::join!(
            create_bucket(&replica.client, &replica.name, REPLICA_REGION, &self.replica_opts),
            create_bucket(&primary.client, &primary.name, PRIMARY_REGION, &self.primary_opts),
        );
        let mut seeded = Seeded {
            replica,
            primary,
            requests: 0,
            elapsed: Duration::ZERO,
        };

        let before: Vec<Phase> = self
            .keys
            .iter()
            .filter(|(_, p)| !p.primary_before.is_empty())
            .map(|(k, p)| Phase {
                key: k.clone(),
                entries: p.primary_before.clone(),
                last_is_latest: p.primary_after.is_empty(),
            })
            .collect();
        let during: Vec<Phase> = self
            .keys
            .iter()
            .filter(|(_, p)| !p.replica.is_empty())
            .map(|(k, p)| Phase {
                key: k.clone(),
                entries: p.replica.clone(),
                last_is_latest: true,
            })
            .collect();
        let after: Vec<Phase> = self
            .keys
            .iter()
            .filter(|(_, p)| !p.primary_after.is_empty())
            .map(|(k, p)| Phase {
                key: k.clone(),
                entries: p.primary_after.clone(),
                last_is_latest: true,
            })
            .collect();

        let mut wrote_any = false;
        for (phase, to_primary) in [(before, true), (during, false), (after, true)] {
            if phase.is_empty() {
                continue;
            }
            if wrote_any {
                // Everything of this phase is strictly newer than everything before it.
                next_second().await;
            }
            let target = if to_primary {
                &mut seeded.primary
            } else {
                &mut seeded.replica
            };
            seeded.requests += write_phase(target, phase, self.concurrency).await;
            wrote_any = true;
        }
        seeded.elapsed = started.elapsed();
        seeded
    }
}

/// One phase's history for one key.
struct Phase {
    key: String,
    entries: Vec<Entry>,
    last_is_latest: bool,
}

/// Writes a phase: each key's entries in order, keys concurrently. Where a key's history
/// switches between version and delete marker (other than into its latest entry), that
/// key's next entry goes into a later second: the listing gives versions and delete
/// markers in separate lists, and only distinct times (or being the latest) put them back
/// in order. Only keys that need it wait.
async fn write_phase(target: &mut SeededBucket, phase: Vec<Phase>, concurrency: usize) -> usize {
    let (client, bucket) = (&target.client, target.name.as_str());
    let tasks = phase.iter().map(|p| async move {
        let n = p.entries.len();
        let mut written = Vec::with_capacity(n);
        let mut requests = 0;
        for (i, entry) in p.entries.iter().enumerate() {
            let latest = i == n - 1 && p.last_is_latest;
            if i > 0 && p.entries[i - 1].is_delete_marker() != entry.is_delete_marker() && !latest {
                next_second().await;
            }
            let (version, count) = write_entry(client, bucket, &p.key, entry).await;
            written.push(version);
            requests += count;
        }
        (p.key.clone(), written, requests)
    });
    let results: Vec<(String, Vec<SeededVersion>, usize)> =
        stream::iter(tasks).buffer_unordered(concurrency).collect().await;
    let mut requests = 0;
    for (key, versions, n) in results {
        target.keys.entry(key).or_default().extend(versions);
        requests += n;
    }
    requests
}

/// Sleeps into the next whole second of the clock the server stamps writes with.
async fn next_second() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970");
    let wait = Duration::from_secs(1) - Duration::from_nanos(u64::from(now.subsec_nanos()));
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
}

const TAG_ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn tagging(tags: &[(String, String)]) -> Option<String> {
    (!tags.is_empty()).then(|| {
        tags.iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    utf8_percent_encode(k, TAG_ENCODE),
                    utf8_percent_encode(v, TAG_ENCODE)
                )
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn grants(acl: &Option<Acl>, permission: Permission) -> Option<String> {
    let Some(Acl::Grants(grants)) = acl else {
        return None;
    };
    let list: Vec<&str> = grants
        .iter()
        .filter(|(p, _)| *p == permission)
        .map(|(_, g)| g.as_str())
        .collect();
    (!list.is_empty()).then(|| list.join(", "))
}

fn canned(acl: &Option<Acl>) -> Option<ObjectCannedAcl> {
    match acl {
        Some(Acl::Canned(c)) => Some(c.clone()),
        _ => None,
    }
}

fn sse(spec: &ObjectSpec) -> (Option<ServerSideEncryption>, Option<String>) {
    match &spec.sse {
        None => (None, None),
        Some(Sse::S3) => (Some(ServerSideEncryption::Aes256), None),
        Some(Sse::Kms(key)) => (Some(ServerSideEncryption::AwsKms), Some(key.clone())),
    }
}

fn sha256_base64(data: &[u8]) -> String {
    aws_smithy_types::base64::encode(Sha256::digest(data))
}

fn metadata(spec: &ObjectSpec) -> Option<HashMap<String, String>> {
    (!spec.metadata.is_empty()).then(|| spec.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// Writes one entry; returns what was written and how many requests it took.
async fn write_entry(client: &Client, bucket: &str, key: &str, entry: &Entry) -> (SeededVersion, usize) {
    let spec = match entry {
        Entry::DeleteMarker => {
            let out = client
                .delete_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("delete {bucket}/{key:?}: {e:?}"));
            assert_eq!(
                out.delete_marker(),
                Some(true),
                "delete {bucket}/{key:?} made no delete marker"
            );
            let version = SeededVersion {
                key: key.to_owned(),
                version_id: out.version_id().unwrap_or("null").to_owned(),
                is_delete_marker: true,
                etag: None,
                size_bytes: 0,
                spec: None,
            };
            return (version, 1);
        }
        Entry::Put(spec) => spec,
    };
    let (sse, kms_key) = sse(spec);
    let (version_id, etag, requests) = match &spec.parts {
        None => {
            let mut put = client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(ByteStream::from(spec.body.clone()))
                .set_content_type(spec.content_type.clone())
                .set_cache_control(spec.cache_control.clone())
                .set_content_disposition(spec.content_disposition.clone())
                .set_content_encoding(spec.content_encoding.clone())
                .set_content_language(spec.content_language.clone())
                .set_metadata(metadata(spec))
                .set_tagging(tagging(&spec.tags))
                .set_acl(canned(&spec.acl))
                .set_grant_read(grants(&spec.acl, Permission::Read))
                .set_grant_read_acp(grants(&spec.acl, Permission::ReadAcp))
                .set_grant_write_acp(grants(&spec.acl, Permission::WriteAcp))
                .set_grant_full_control(grants(&spec.acl, Permission::FullControl))
                .set_server_side_encryption(sse)
                .set_ssekms_key_id(kms_key)
                .set_storage_class(spec.storage_class.clone());
            if spec.checksum_sha256 {
                put = put
                    .checksum_algorithm(ChecksumAlgorithm::Sha256)
                    .checksum_sha256(sha256_base64(&spec.body));
            }
            let out = put
                .send()
                .await
                .unwrap_or_else(|e| panic!("put {bucket}/{key:?}: {e:?}"));
            (
                out.version_id().unwrap_or("null").to_owned(),
                out.e_tag().map(unquote),
                1,
            )
        }
        Some(parts) => {
            let mut create = client
                .create_multipart_upload()
                .bucket(bucket)
                .key(key)
                .set_content_type(spec.content_type.clone())
                .set_cache_control(spec.cache_control.clone())
                .set_content_disposition(spec.content_disposition.clone())
                .set_content_encoding(spec.content_encoding.clone())
                .set_content_language(spec.content_language.clone())
                .set_metadata(metadata(spec))
                .set_tagging(tagging(&spec.tags))
                .set_acl(canned(&spec.acl))
                .set_grant_read(grants(&spec.acl, Permission::Read))
                .set_grant_read_acp(grants(&spec.acl, Permission::ReadAcp))
                .set_grant_write_acp(grants(&spec.acl, Permission::WriteAcp))
                .set_grant_full_control(grants(&spec.acl, Permission::FullControl))
                .set_server_side_encryption(sse)
                .set_ssekms_key_id(kms_key)
                .set_storage_class(spec.storage_class.clone());
            if spec.checksum_sha256 {
                create = create.checksum_algorithm(ChecksumAlgorithm::Sha256);
            }
            let upload = create
                .send()
                .await
                .unwrap_or_else(|e| panic!("create multipart upload {bucket}/{key:?}: {e:?}"));
            let upload_id = upload.upload_id().expect("upload id").to_owned();
            let mut completed = Vec::with_capacity(parts.len());
            let mut offset = 0;
            for (i, size) in parts.iter().enumerate() {
                let number = i as i32 + 1;
                let data = spec.body.slice(offset..offset + size);
                offset += size;
                let mut part = client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(ByteStream::from(data.clone()));
                let mut done = CompletedPart::builder().part_number(number);
                if spec.checksum_sha256 {
                    let sum = sha256_base64(&data);
                    part = part.checksum_algorithm(ChecksumAlgorithm::Sha256).checksum_sha256(&sum);
                    done = done.checksum_sha256(sum);
                }
                let out = part
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("upload part {number} of {bucket}/{key:?}: {e:?}"));
                completed.push(done.set_e_tag(out.e_tag().map(str::to_owned)).build());
            }
            let out = client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
                .send()
                .await
                .unwrap_or_else(|e| panic!("complete multipart upload {bucket}/{key:?}: {e:?}"));
            (
                out.version_id().unwrap_or("null").to_owned(),
                out.e_tag().map(unquote),
                parts.len() + 2,
            )
        }
    };
    let version = SeededVersion {
        key: key.to_owned(),
        version_id,
        is_delete_marker: false,
        etag,
        size_bytes: spec.body.len() as u64,
        spec: Some(spec.clone()),
    };
    (version, requests)
}

/// One seeded version or delete marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeededVersion {
    /// The key.
    pub key: String,
    /// The version id the server gave.
    pub version_id: String,
    /// Whether this is a delete marker.
    pub is_delete_marker: bool,
    /// ETag without quotes (`None` for a delete marker).
    pub etag: Option<String>,
    /// Size in bytes.
    pub size_bytes: u64,
    /// What was written, content included (`None` for a delete marker).
    pub spec: Option<ObjectSpec>,
}

impl SeededVersion {
    /// The content (`None` for a delete marker).
    pub fn body(&self) -> Option<&Bytes> {
        self.spec.as_ref().map(|s| &s.body)
    }
}

/// One seeded bucket: its name, region, a client for it, and each key's history.
#[derive(Debug, Clone)]
pub struct SeededBucket {
    /// The bucket name.
    pub name: String,
    /// Its region.
    pub region: &'static str,
    /// A client for its region on the shared server.
    pub client: Client,
    /// Each key's seeded history, oldest first.
    pub keys: BTreeMap<String, Vec<SeededVersion>>,
}

impl SeededBucket {
    fn new(name: String, region: &'static str) -> Self {
        Self {
            name,
            region,
            client: client(region),
            keys: BTreeMap::new(),
        }
    }

    /// `s3://NAME`.
    pub fn url(&self) -> String {
        format!("s3://{}", self.name)
    }

    /// A key's history, oldest first (empty if never written).
    pub fn history(&self, key: &str) -> &[SeededVersion] {
        self.keys.get(key).map_or(&[], Vec::as_slice)
    }

    /// A key's current entry (a version or a delete marker).
    pub fn current(&self, key: &str) -> Option<&SeededVersion> {
        self.history(key).last()
    }

    /// Keys whose current entry is a version, with it: what a `latest` restore must bring.
    pub fn live(&self) -> BTreeMap<&str, &SeededVersion> {
        self.keys
            .iter()
            .filter_map(|(k, h)| h.last().filter(|v| !v.is_delete_marker).map(|v| (k.as_str(), v)))
            .collect()
    }

    /// How many versions and delete markers were seeded.
    pub fn entry_count(&self) -> usize {
        self.keys.values().map(Vec::len).sum()
    }

    /// The listing a correct ListObjectVersions gives: keys in UTF-8 byte order, newest first.
    pub fn expected_listing(&self) -> Vec<VersionShape> {
        let mut out = Vec::with_capacity(self.entry_count());
        for history in self.keys.values() {
            for (i, v) in history.iter().rev().enumerate() {
                out.push(VersionShape {
                    key: v.key.clone(),
                    version_id: v.version_id.clone(),
                    is_latest: i == 0,
                    is_delete_marker: v.is_delete_marker,
                    size_bytes: v.size_bytes,
                    etag: v.etag.clone(),
                    storage_class: v.spec.as_ref().map(ObjectSpec::listed_storage_class),
                });
            }
        }
        out
    }
}

/// What a scenario seeded.
#[derive(Debug, Clone)]
pub struct Seeded {
    /// The replica (eu-west-1): the restore's source.
    pub replica: SeededBucket,
    /// The primary (us-east-1): the restore's destination.
    pub primary: SeededBucket,
    /// Requests spent writing (bucket creation aside).
    pub requests: usize,
    /// How long seeding took, bucket creation included.
    pub elapsed: Duration,
}

impl Seeded {
    /// Versions and delete markers written per second.
    pub fn entries_per_second(&self) -> f64 {
        let entries = self.replica.entry_count() + self.primary.entry_count();
        entries as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}
