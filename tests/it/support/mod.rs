//! Integration-test support: the local S3 server, SDK clients, unique buckets, listings and
//! snapshots as tests compare them, the scenario builder, the fault-injecting proxy, and
//! running the built binary.
//!
//! Support seeds, records and reports; the tests make the assertions.

#![allow(dead_code)]

pub mod batch_emulator;
pub mod proxy;
pub mod scenario;
pub mod server;
pub mod workdir;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation, retry::RetryConfig,
    timeout::TimeoutConfig,
};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{
    BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration, DefaultRetention,
    ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode, ObjectLockRule, ObjectOwnership,
    OwnershipControls, OwnershipControlsRule, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, VersioningConfiguration,
};
use futures::StreamExt;
use futures::stream;
use jiff::Timestamp;
use rand::Rng;
use s3_failback::model::VersionRecord;

/// The region of the replica in every scenario.
pub const REPLICA_REGION: &str = "eu-west-1";
/// The region of the primary in every scenario.
pub const PRIMARY_REGION: &str = "us-east-1";
/// The static credentials every test client and CLI run uses.
pub const TEST_ACCESS_KEY: &str = "test";
/// The secret that goes with [`TEST_ACCESS_KEY`].
pub const TEST_SECRET_KEY: &str = "test";
/// Requests in flight when seeding and snapshotting (moto closes every connection).
pub const CONCURRENCY: usize = 32;

/// The endpoint of the shared local S3 server, started on first use.
pub fn endpoint() -> &'static str {
    server::shared().endpoint()
}

/// An SDK client for `region` that talks to the shared local server.
pub fn client(region: &str) -> Client {
    client_for(endpoint(), region)
}

/// An SDK client for `region` at `endpoint` (a proxy, a separate server): path-style,
/// static test credentials, checksums only when required, no proxy from the environment.
pub fn client_for(endpoint: &str, region: &str) -> Client {
    client_with_retries(endpoint, region, 5)
}

/// As [`client_for`], with `max_attempts` attempts per request (1: no SDK retries).
pub fn client_with_retries(endpoint: &str, region: &str, max_attempts: u32) -> Client {
    // The SDK's default client reads HTTP_PROXY and friends; this one never does.
    let http = aws_smithy_http_client::Builder::new().build_http();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            TEST_ACCESS_KEY,
            TEST_SECRET_KEY,
            None,
            None,
            "s3-failback-tests",
        ))
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .http_client(http)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(max_attempts))
        .build();
    Client::from_conf(config)
}

/// A fresh bucket name `t-<prefix>-<random>`: lower case, valid, at most 63 characters.
pub fn unique_bucket(prefix: &str) -> String {
    let mut clean = String::new();
    for c in prefix.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && clean.ends_with('-')) {
            clean.push(c);
        }
    }
    let clean = clean.trim_matches('-');
    const RANDOM_LEN: usize = 10;
    // "t-" + prefix + "-" + random
    let room = 63 - 2 - 1 - RANDOM_LEN;
    let clean = clean[..clean.len().min(room)].trim_end_matches('-');
    let mut rng = rand::rng();
    let random: String = (0..RANDOM_LEN)
        .map(|_| {
            let n = rng.random_range(0..36u8);
            char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 })
        })
        .collect();
    if clean.is_empty() {
        format!("t-{random}")
    } else {
        format!("t-{clean}-{random}")
    }
}

/// A bucket's versioning state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Versioning {
    /// Versioning enabled (what the tool needs on the bucket it writes).
    #[default]
    Enabled,
    /// Enabled once, then suspended.
    Suspended,
    /// Never enabled.
    Off,
}

/// A bucket's default encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultEncryption {
    /// SSE-S3 (`AES256`).
    SseS3,
    /// SSE-KMS with this key id (moto echoes any id).
    SseKms(String),
}

/// How [`create_bucket`] sets up a bucket. `Default` is a plain versioned bucket.
#[derive(Debug, Clone, Default)]
pub struct BucketOpts {
    /// Versioning state.
    pub versioning: Versioning,
    /// `Some(BucketOwnerEnforced)` models a modern bucket with ACLs disabled.
    pub ownership: Option<ObjectOwnership>,
    /// Create the bucket with Object Lock enabled.
    pub object_lock: bool,
    /// A default retention (mode, days) for an Object Lock bucket.
    pub default_retention: Option<(ObjectLockRetentionMode, i32)>,
    /// Default encryption; `None` leaves moto's "not found".
    pub encryption: Option<DefaultEncryption>,
}

impl BucketOpts {
    /// A versioned bucket with ACLs disabled (`BucketOwnerEnforced`), as S3 makes them today.
    pub fn modern() -> Self {
        Self {
            ownership: Some(ObjectOwnership::BucketOwnerEnforced),
            ..Self::default()
        }
    }
}

/// Creates `name` in `region` and applies `opts`.
///
/// # Panics
/// When any request fails: test setup has no error path.
pub async fn create_bucket(client: &Client, name: &str, region: &str, opts: &BucketOpts) {
    let mut create = client.create_bucket().bucket(name);
    if region != "us-east-1" {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        );
    }
    if opts.object_lock || opts.default_retention.is_some() {
        create = create.object_lock_enabled_for_bucket(true);
    }
    if let Some(ownership) = &opts.ownership {
        create = create.object_ownership(ownership.clone());
    }
    create
        .send()
        .await
        .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));

    let status = match opts.versioning {
        Versioning::Enabled => Some(BucketVersioningStatus::Enabled),
        Versioning::Suspended => Some(BucketVersioningStatus::Suspended),
        Versioning::Off => None,
    };
    if let Some(status) = status {
        if status == BucketVersioningStatus::Suspended {
            put_versioning(client, name, BucketVersioningStatus::Enabled).await;
        }
        put_versioning(client, name, status).await;
    }

    if let Some(ownership) = &opts.ownership {
        // CreateBucket's header is enough on S3; the explicit call makes moto store it.
        client
            .put_bucket_ownership_controls()
            .bucket(name)
            .ownership_controls(
                OwnershipControls::builder()
                    .rules(
                        OwnershipControlsRule::builder()
                            .object_ownership(ownership.clone())
                            .build()
                            .expect("ownership rule"),
                    )
                    .build()
                    .expect("ownership controls"),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("put ownership controls on {name}: {e:?}"));
    }

    if let Some((mode, days)) = &opts.default_retention {
        client
            .put_object_lock_configuration()
            .bucket(name)
            .object_lock_configuration(
                ObjectLockConfiguration::builder()
                    .object_lock_enabled(ObjectLockEnabled::Enabled)
                    .rule(
                        ObjectLockRule::builder()
                            .default_retention(DefaultRetention::builder().mode(mode.clone()).days(*days).build())
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("put object lock configuration on {name}: {e:?}"));
    }

    if let Some(encryption) = &opts.encryption {
        let by_default = match encryption {
            DefaultEncryption::SseS3 => {
                ServerSideEncryptionByDefault::builder().sse_algorithm(ServerSideEncryption::Aes256)
            }
            DefaultEncryption::SseKms(key) => ServerSideEncryptionByDefault::builder()
                .sse_algorithm(ServerSideEncryption::AwsKms)
                .kms_master_key_id(key),
        };
        client
            .put_bucket_encryption()
            .bucket(name)
            .server_side_encryption_configuration(
                ServerSideEncryptionConfiguration::builder()
                    .rules(
                        ServerSideEncryptionRule::builder()
                            .apply_server_side_encryption_by_default(by_default.build().expect("encryption default"))
                            .build(),
                    )
                    .build()
                    .expect("encryption configuration"),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("put bucket encryption on {name}: {e:?}"));
    }
}

async fn put_versioning(client: &Client, name: &str, status: BucketVersioningStatus) {
    client
        .put_bucket_versioning()
        .bucket(name)
        .versioning_configuration(VersioningConfiguration::builder().status(status).build())
        .send()
        .await
        .unwrap_or_else(|e| panic!("put bucket versioning on {name}: {e:?}"));
}

/// Every version and delete marker under `prefix`, in S3's order (keys in UTF-8 byte order,
/// a key's entries newest first), paging 1,000 entries at a time.
///
/// # Panics
/// When a request fails.
pub async fn list_all_versions(client: &Client, bucket: &str, prefix: &str) -> Vec<VersionRecord> {
    list_all_versions_paged(client, bucket, prefix, 1000).await
}

/// As [`list_all_versions`], with `max_keys` entries per page (small pages test paging).
///
/// # Panics
/// When a request fails, or the server stops advancing its markers.
pub async fn list_all_versions_paged(client: &Client, bucket: &str, prefix: &str, max_keys: i32) -> Vec<VersionRecord> {
    let mut out = Vec::new();
    let mut key_marker: Option<String> = None;
    let mut version_id_marker: Option<String> = None;
    loop {
        let page = client
            .list_object_versions()
            .bucket(bucket)
            .prefix(prefix)
            .max_keys(max_keys)
            .set_key_marker(key_marker.clone())
            .set_version_id_marker(version_id_marker.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("list object versions of {bucket}: {e:?}"));
        let versions: Vec<VersionRecord> = page.versions().iter().map(version_record).collect();
        let markers: Vec<VersionRecord> = page.delete_markers().iter().map(delete_marker_record).collect();
        out.extend(merge_page(versions, markers));
        if !page.is_truncated().unwrap_or(false) {
            return out;
        }
        let next = (
            page.next_key_marker().map(str::to_owned),
            page.next_version_id_marker().map(str::to_owned),
        );
        assert!(
            next.0.is_some() && next != (key_marker, version_id_marker),
            "listing of {bucket} does not advance: {next:?}"
        );
        (key_marker, version_id_marker) = next;
    }
}

/// Merges one page's versions and delete markers back into S3's interleaved order: per key,
/// the latest entry first, then Last-Modified descending; ties keep each list's own order,
/// versions before delete markers (the listing cannot tell them apart).
fn merge_page(versions: Vec<VersionRecord>, markers: Vec<VersionRecord>) -> Vec<VersionRecord> {
    let mut out = Vec::with_capacity(versions.len() + markers.len());
    let mut v = versions.into_iter().peekable();
    let mut d = markers.into_iter().peekable();
    loop {
        let key = match (v.peek(), d.peek()) {
            (None, None) => return out,
            (Some(a), None) => a.key.clone(),
            (None, Some(b)) => b.key.clone(),
            // String order is UTF-8 byte order, S3's key order.
            (Some(a), Some(b)) => a.key.clone().min(b.key.clone()),
        };
        let mut vs: Vec<VersionRecord> = Vec::new();
        while let Some(r) = v.next_if(|r| r.key == key) {
            vs.push(r);
        }
        let mut ds: Vec<VersionRecord> = Vec::new();
        while let Some(r) = d.next_if(|r| r.key == key) {
            ds.push(r);
        }
        let mut vs = vs.into_iter().peekable();
        let mut ds = ds.into_iter().peekable();
        if let Some(r) = vs.next_if(|r| r.is_latest) {
            out.push(r);
        } else if let Some(r) = ds.next_if(|r| r.is_latest) {
            out.push(r);
        }
        loop {
            let take_version = match (vs.peek(), ds.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(a), Some(b)) => a.last_modified >= b.last_modified,
            };
            let next = if take_version { vs.next() } else { ds.next() };
            out.extend(next);
        }
    }
}

fn timestamp(t: Option<&aws_sdk_s3::primitives::DateTime>) -> Timestamp {
    let t = t.expect("listing entry without LastModified");
    Timestamp::new(t.secs(), t.subsec_nanos() as i32).expect("timestamp in range")
}

fn version_record(v: &aws_sdk_s3::types::ObjectVersion) -> VersionRecord {
    VersionRecord {
        key: v.key().expect("version without key").to_owned(),
        version_id: v.version_id().unwrap_or("null").to_owned(),
        is_latest: v.is_latest().unwrap_or(false),
        is_delete_marker: false,
        last_modified: timestamp(v.last_modified()),
        size_bytes: v.size().unwrap_or(0) as u64,
        etag: v.e_tag().map(unquote),
        storage_class: v.storage_class().map(|c| c.as_str().to_owned()),
        checksum_algorithm: v.checksum_algorithm().first().map(|a| a.as_str().to_owned()),
    }
}

fn delete_marker_record(d: &aws_sdk_s3::types::DeleteMarkerEntry) -> VersionRecord {
    VersionRecord {
        key: d.key().expect("delete marker without key").to_owned(),
        version_id: d.version_id().unwrap_or("null").to_owned(),
        is_latest: d.is_latest().unwrap_or(false),
        is_delete_marker: true,
        last_modified: timestamp(d.last_modified()),
        size_bytes: 0,
        etag: None,
        storage_class: None,
        checksum_algorithm: None,
    }
}

/// An ETag without its surrounding quotes.
pub fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_owned()
}

/// What a listing entry and a seeded version have in common: tests compare these, since
/// Last-Modified is the server's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VersionShape {
    /// The key, verbatim.
    pub key: String,
    /// The version id the server gave.
    pub version_id: String,
    /// Whether this is the key's current entry.
    pub is_latest: bool,
    /// Whether this is a delete marker.
    pub is_delete_marker: bool,
    /// Size in bytes (0 for a delete marker).
    pub size_bytes: u64,
    /// ETag without quotes (`None` for a delete marker).
    pub etag: Option<String>,
    /// Storage class as listed (`None` for a delete marker).
    pub storage_class: Option<String>,
}

impl From<&VersionRecord> for VersionShape {
    fn from(r: &VersionRecord) -> Self {
        Self {
            key: r.key.clone(),
            version_id: r.version_id.clone(),
            is_latest: r.is_latest,
            is_delete_marker: r.is_delete_marker,
            size_bytes: r.size_bytes,
            etag: r.etag.clone(),
            storage_class: r.storage_class.clone(),
        }
    }
}

/// The shapes of a listing, in the listing's order.
pub fn shapes(records: &[VersionRecord]) -> Vec<VersionShape> {
    records.iter().map(VersionShape::from).collect()
}

/// Everything about one version that a restore must not change on the replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSnapshot {
    /// The listing entry.
    pub record: VersionRecord,
    /// HEAD of the version (`None` for a delete marker).
    pub head: Option<HeadSnapshot>,
    /// The version's tags, sorted; `None` where they cannot be read (a delete marker, or
    /// an archived version on moto, which refuses GetObjectTagging before a restore).
    pub tags: Option<Vec<(String, String)>>,
    /// ACL grants as `PERMISSION grantee`, sorted; `None` as for `tags`.
    pub grants: Option<Vec<String>>,
}

/// The headers HEAD reports for a version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeadSnapshot {
    /// Content-Length.
    pub content_length: i64,
    /// ETag without quotes.
    pub etag: Option<String>,
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
    /// Expires, as sent.
    pub expires: Option<String>,
    /// User metadata (`x-amz-meta-*`).
    pub metadata: BTreeMap<String, String>,
    /// `x-amz-server-side-encryption`.
    pub sse: Option<String>,
    /// `x-amz-server-side-encryption-aws-kms-key-id`.
    pub sse_kms_key_id: Option<String>,
    /// `x-amz-storage-class` (absent for STANDARD).
    pub storage_class: Option<String>,
    /// Additional checksums that HEAD with checksum mode reports, as `ALGORITHM=value`.
    pub checksums: Vec<String>,
    /// `x-amz-mp-parts-count`.
    pub parts_count: Option<i32>,
    /// `x-amz-restore`.
    pub restore: Option<String>,
    /// Object Lock mode, retain-until and legal hold.
    pub object_lock: Option<String>,
}

/// Every version of a bucket with its metadata, tags and grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketSnapshot {
    /// The bucket.
    pub bucket: String,
    /// Every version and delete marker, in listing order.
    pub versions: Vec<VersionSnapshot>,
}

/// Reads every version of `bucket` with HEAD (checksum mode on), GetObjectTagging and
/// GetObjectAcl, for "the replica is unchanged" checks.
///
/// # Panics
/// When a request fails.
pub async fn snapshot(client: &Client, bucket: &str) -> BucketSnapshot {
    let records = list_all_versions(client, bucket, "").await;
    let versions = stream::iter(records)
        .map(|record| snapshot_version(client, bucket, record))
        .buffered(CONCURRENCY)
        .collect()
        .await;
    BucketSnapshot {
        bucket: bucket.to_owned(),
        versions,
    }
}

async fn snapshot_version(client: &Client, bucket: &str, record: VersionRecord) -> VersionSnapshot {
    if record.is_delete_marker {
        return VersionSnapshot {
            record,
            head: None,
            tags: None,
            grants: None,
        };
    }
    let (key, vid) = (record.key.as_str(), record.version_id.as_str());
    let head = client
        .head_object()
        .bucket(bucket)
        .key(key)
        .version_id(vid)
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .unwrap_or_else(|e| panic!("head {bucket}/{key}?versionId={vid}: {e:?}"));
    // moto answers 403 InvalidObjectState to tagging and ACL reads of an archived version
    // that is not restored (S3 answers them): such a version's tags and grants read as None.
    let tagging = match client
        .get_object_tagging()
        .bucket(bucket)
        .key(key)
        .version_id(vid)
        .send()
        .await
    {
        Ok(t) => Some(t),
        Err(e) if e.code() == Some("InvalidObjectState") => None,
        Err(e) => panic!("get tagging {bucket}/{key}?versionId={vid}: {e:?}"),
    };
    let acl = match client
        .get_object_acl()
        .bucket(bucket)
        .key(key)
        .version_id(vid)
        .send()
        .await
    {
        Ok(a) => Some(a),
        Err(e) if e.code() == Some("InvalidObjectState") => None,
        Err(e) => panic!("get acl {bucket}/{key}?versionId={vid}: {e:?}"),
    };

    let checksums = [
        ("CRC32", head.checksum_crc32()),
        ("CRC32C", head.checksum_crc32_c()),
        ("CRC64NVME", head.checksum_crc64_nvme()),
        ("SHA1", head.checksum_sha1()),
        ("SHA256", head.checksum_sha256()),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|v| format!("{name}={v}")))
    .collect();
    let object_lock = head.object_lock_mode().map(|mode| {
        format!(
            "{} until {:?} legal hold {:?}",
            mode.as_str(),
            head.object_lock_retain_until_date().map(|t| t.secs()),
            head.object_lock_legal_hold_status().map(|s| s.as_str())
        )
    });
    let head = HeadSnapshot {
        content_length: head.content_length().unwrap_or(0),
        etag: head.e_tag().map(unquote),
        content_type: head.content_type().map(str::to_owned),
        cache_control: head.cache_control().map(str::to_owned),
        content_disposition: head.content_disposition().map(str::to_owned),
        content_encoding: head.content_encoding().map(str::to_owned),
        content_language: head.content_language().map(str::to_owned),
        expires: head.expires_string().map(str::to_owned),
        metadata: head
            .metadata()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        sse: head.server_side_encryption().map(|s| s.as_str().to_owned()),
        sse_kms_key_id: head.ssekms_key_id().map(str::to_owned),
        storage_class: head.storage_class().map(|s| s.as_str().to_owned()),
        checksums,
        parts_count: head.parts_count(),
        restore: head.restore().map(str::to_owned),
        object_lock,
    };
    let tags = tagging.map(|tagging| {
        let mut tags: Vec<(String, String)> = tagging
            .tag_set()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect();
        tags.sort();
        tags
    });
    let grants = acl.map(|acl| {
        let mut grants: Vec<String> = acl
            .grants()
            .iter()
            .map(|g| {
                let grantee = g
                    .grantee()
                    .and_then(|g| g.id().or(g.uri()).or(g.email_address()))
                    .unwrap_or("?");
                format!("{} {grantee}", g.permission().map(|p| p.as_str()).unwrap_or("?"))
            })
            .collect();
        grants.sort();
        grants
    });
    VersionSnapshot {
        record,
        head: Some(head),
        tags,
        grants,
    }
}

/// What a run of the binary left: exit code (128 + signal when killed), stdout, stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliOutput {
    /// The exit code; 128 + N when the process died of signal N.
    pub code: i32,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

/// A run of the built `s3-failback` binary with a clean AWS environment: test credentials,
/// no profile files, no instance metadata, no `AWS_REGION` unless given, no proxy.
#[derive(Debug, Clone)]
pub struct Cli {
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    current_dir: Option<PathBuf>,
    timeout: Duration,
}

impl Cli {
    /// The binary with these arguments.
    pub fn new<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self {
            args: args.into_iter().map(|a| a.as_ref().to_owned()).collect(),
            env: Vec::new(),
            current_dir: None,
            timeout: Duration::from_secs(300),
        }
    }

    /// Sets an environment variable (after the clean AWS defaults, so it can override them).
    pub fn env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((name.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Sets several environment variables.
    pub fn envs(mut self, vars: &[(&str, &str)]) -> Self {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }

    /// Removes an environment variable, e.g. `AWS_ACCESS_KEY_ID` for a no-credentials case.
    pub fn env_remove(mut self, name: impl AsRef<OsStr>) -> Self {
        self.env.push((name.as_ref().to_owned(), None));
        self
    }

    /// Runs in `dir` (default: a fresh temporary directory, removed afterwards, so that
    /// default report and state directories never land in the repository).
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.current_dir = Some(dir.as_ref().to_owned());
        self
    }

    /// Kills the run and panics after this long (default 300 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn command(&self, dir: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_s3-failback"));
        cmd.args(&self.args).current_dir(dir).stdin(Stdio::null());
        for (name, _) in std::env::vars_os() {
            let Some(n) = name.to_str() else { continue };
            if n.starts_with("AWS_") || n.to_ascii_lowercase().ends_with("_proxy") {
                cmd.env_remove(&name);
            }
        }
        cmd.env("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY)
            .env("AWS_CONFIG_FILE", "/nonexistent/s3-failback-tests/config")
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/s3-failback-tests/credentials",
            )
            .env("AWS_EC2_METADATA_DISABLED", "true");
        for (name, value) in &self.env {
            match value {
                Some(v) => cmd.env(name, v),
                None => cmd.env_remove(name),
            };
        }
        cmd
    }

    /// Runs to completion and collects the output.
    ///
    /// # Panics
    /// When the binary cannot start or outlives the timeout.
    pub fn run(&self) -> CliOutput {
        match &self.current_dir {
            Some(dir) => self.run_in(dir),
            None => {
                let dir = tempfile::tempdir().expect("temporary directory");
                self.run_in(dir.path())
            }
        }
    }

    fn run_in(&self, dir: &Path) -> CliOutput {
        let child = self
            .command(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start s3-failback");
        wait_cli(child, self.timeout)
    }

    /// Starts the binary (stdout and stderr piped) and returns at once, for kill and
    /// Ctrl-C tests; finish with [`wait_cli`]. Runs in the directory given, or in the
    /// repository's target temporary directory.
    ///
    /// # Panics
    /// When the binary cannot start.
    pub fn spawn(&self) -> Child {
        let dir = self
            .current_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
        self.command(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start s3-failback")
    }
}

/// Runs the binary with `args` and extra environment variables, in a fresh temporary
/// directory.
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    Cli::new(args).envs(env).run()
}

/// Starts the binary with `args` in `dir` and returns the running child.
pub fn spawn_cli(args: &[&str], env: &[(&str, &str)], dir: &Path) -> Child {
    Cli::new(args).envs(env).current_dir(dir).spawn()
}

/// Sends SIGINT (what Ctrl-C sends) to a running child.
///
/// # Panics
/// When `kill` cannot be run.
pub fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -INT {} failed", child.id());
}

/// Waits for a child started by [`Cli::spawn`] and collects its output.
///
/// # Panics
/// When it outlives `timeout` (it is killed first).
pub fn wait_cli(mut child: Child, timeout: Duration) -> CliOutput {
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for s3-failback") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "s3-failback ran longer than {timeout:?}; stderr:\n{}",
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    use std::os::unix::process::ExitStatusExt;
    let code = status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(-1);
    CliOutput {
        code,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}
