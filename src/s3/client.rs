//! Builds S3 clients from [`S3Config`]: the one place that touches `aws-config`.
//!
//! A [`SourceClient`] has read methods only (the replica is never written); a
//! [`DestClient`] is the side that restores write to. Bucket settings are read here.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::{RetryConfig, RetryPartition, TokenBucket};
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    Region, RequestChecksumCalculation, ResponseChecksumValidation, StalledStreamProtectionConfig,
};
use aws_sdk_s3::types::{BucketVersioningStatus, ObjectLockEnabled, ObjectOwnership};

use crate::model::Side;
use crate::s3::error::{S3Error, S3ErrorKind};

/// How to reach one side's S3 service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// Which side this is, for messages.
    pub side: Side,
    /// The region; `None` takes the standard chain, then `us-east-1`.
    pub region: Option<String>,
    /// The named profile; `None` takes the standard chain.
    pub profile: Option<String>,
    /// A custom endpoint; `None` takes `AWS_ENDPOINT_URL*` and the profile, as the SDK does.
    pub endpoint_url: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`).
    pub path_style: bool,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest wait for any byte of a response.
    pub read_timeout: Duration,
    /// Attempts per request made by the SDK for reads (the engine retries copies itself).
    pub max_attempts: u32,
}

impl S3Config {
    /// A configuration with the contract's defaults for `side`.
    pub fn new(side: Side) -> Self {
        S3Config {
            side,
            region: None,
            profile: None,
            endpoint_url: None,
            path_style: false,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
            max_attempts: 10,
        }
    }
}

/// One side's connection: the SDK client and what was resolved for it.
#[derive(Debug, Clone)]
struct Connection {
    client: Client,
    /// The same service with the SDK's retries off, for writes the engine retries itself.
    write_client: Client,
    /// The same service with few, quick retries, for the bucket checks a run starts with:
    /// a mistyped endpoint or bucket should answer in seconds, not after ten backoffs.
    probe_client: Client,
    side: Side,
    region: String,
    endpoint: Option<String>,
}

/// The replica's side: reads only.
#[derive(Debug, Clone)]
pub struct SourceClient {
    conn: Connection,
}

/// The primary's (or a drill's scratch) side: where restores write.
#[derive(Debug, Clone)]
pub struct DestClient {
    conn: Connection,
}

/// A bucket's versioning state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versioning {
    /// Never enabled.
    Off,
    /// Enabled: every write makes a new version.
    Enabled,
    /// Suspended: new writes get the `null` version id.
    Suspended,
}

impl std::fmt::Display for Versioning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Versioning::Off => "off",
            Versioning::Enabled => "Enabled",
            Versioning::Suspended => "Suspended",
        })
    }
}

/// Bucket-level settings read once per run, before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketSettings {
    /// The versioning state.
    pub versioning: Versioning,
    /// Whether the bucket accepts ACL grants (its ownership is not BucketOwnerEnforced).
    /// A bucket without ownership controls predates them and accepts ACLs (S3-NOTES 41).
    pub acls_accepted: bool,
    /// The default encryption: `None` where the bucket reports none.
    pub default_encryption: Option<DefaultEncryption>,
    /// Whether Object Lock is enabled.
    pub object_lock: bool,
}

/// A bucket's default encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultEncryption {
    /// `AES256`, `aws:kms` or `aws:kms:dsse`.
    pub algorithm: String,
    /// The KMS key, for SSE-KMS.
    pub kms_key_id: Option<String>,
}

impl DefaultEncryption {
    /// Whether the default is an SSE-KMS flavour.
    pub fn is_kms(&self) -> bool {
        self.algorithm.starts_with("aws:kms")
    }
}

/// What GetBucketReplication gave.
#[derive(Debug, Clone)]
pub enum ReplicationRead {
    /// The rules.
    Rules(crate::rules::ReplicationConfig),
    /// The bucket has no replication configuration.
    None,
    /// The rules could not be read; the reason.
    Unreadable(String),
}

async fn connect(cfg: &S3Config) -> Result<Connection, S3Error> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(profile) = &cfg.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &cfg.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &cfg.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk = loader.load().await;
    let region = sdk
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "us-east-1".to_owned());
    let endpoint = sdk.endpoint_url().map(str::to_owned);

    // A partition of our own with a deep token bucket: the SDK's shared 500-token bucket
    // stops retrying after ~100 throttled requests (S3-NOTES 29).
    let partition = RetryPartition::custom(format!("s3-failback-{}", cfg.side))
        .token_bucket(TokenBucket::new(1_000_000))
        .build();
    let mut builder = aws_sdk_s3::config::Builder::from(&sdk)
        .region(Region::new(region.clone()))
        .force_path_style(cfg.path_style)
        // S3-compatible servers reject the default request checksums (S3-NOTES 26).
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        // The read timeout covers stalls; stalled-stream protection would fail long
        // silent copies that S3 completes (S3-NOTES 27).
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(cfg.connect_timeout)
                .read_timeout(cfg.read_timeout)
                .build(),
        )
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(cfg.max_attempts.max(1))
                .with_initial_backoff(Duration::from_millis(100))
                .with_max_backoff(Duration::from_secs(20)),
        )
        .retry_partition(partition);
    let client = Client::from_conf(builder.clone().build());
    builder.set_retry_config(Some(
        RetryConfig::standard()
            .with_max_attempts(3)
            .with_initial_backoff(Duration::from_millis(100))
            .with_max_backoff(Duration::from_secs(1)),
    ));
    let probe_client = Client::from_conf(builder.clone().build());
    builder.set_retry_config(Some(RetryConfig::standard().with_max_attempts(1)));
    let write_client = Client::from_conf(builder.build());
    Ok(Connection {
        client,
        write_client,
        probe_client,
        side: cfg.side,
        region,
        endpoint,
    })
}

impl Connection {
    fn err(&self, e: S3Error) -> S3Error {
        e.at_endpoint(self.endpoint.as_deref())
    }

    async fn versioning(&self, bucket: &str) -> Result<Versioning, S3Error> {
        let out = self
            .probe_client
            .get_bucket_versioning()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| self.err(S3Error::from_sdk(&e, "GetBucketVersioning", bucket, None)))?;
        Ok(match out.status() {
            Some(BucketVersioningStatus::Enabled) => Versioning::Enabled,
            Some(BucketVersioningStatus::Suspended) => Versioning::Suspended,
            _ => Versioning::Off,
        })
    }

    /// Reads the bucket settings; a missing bucket, wrong region or bad credentials show
    /// here, before anything else is sent. `full` also reads ownership, encryption and
    /// Object Lock (three more requests, once per run).
    async fn settings(&self, bucket: &str, full: bool) -> Result<BucketSettings, S3Error> {
        let versioning = self.versioning(bucket).await?;
        let mut settings = BucketSettings {
            versioning,
            acls_accepted: true,
            default_encryption: None,
            object_lock: false,
        };
        if !full {
            return Ok(settings);
        }
        let (ownership, encryption, lock) = tokio::join!(
            self.probe_client.get_bucket_ownership_controls().bucket(bucket).send(),
            self.probe_client.get_bucket_encryption().bucket(bucket).send(),
            self.probe_client.get_object_lock_configuration().bucket(bucket).send(),
        );
        match ownership {
            Ok(out) => {
                settings.acls_accepted = !out
                    .ownership_controls()
                    .map(|c| {
                        c.rules()
                            .iter()
                            .any(|r| r.object_ownership() == &ObjectOwnership::BucketOwnerEnforced)
                    })
                    .unwrap_or(false);
            }
            Err(e) => {
                let err = self.err(S3Error::from_sdk(&e, "GetBucketOwnershipControls", bucket, None));
                if err.code != "OwnershipControlsNotFoundError" && err.kind != S3ErrorKind::NotFound {
                    return Err(err);
                }
            }
        }
        match encryption {
            Ok(out) => {
                settings.default_encryption = out
                    .server_side_encryption_configuration()
                    .and_then(|c| c.rules().first())
                    .and_then(|r| r.apply_server_side_encryption_by_default())
                    .map(|d| DefaultEncryption {
                        algorithm: d.sse_algorithm().as_str().to_owned(),
                        kms_key_id: d.kms_master_key_id().map(str::to_owned),
                    });
            }
            Err(e) => {
                let err = self.err(S3Error::from_sdk(&e, "GetBucketEncryption", bucket, None));
                if err.code != "ServerSideEncryptionConfigurationNotFoundError" && err.kind != S3ErrorKind::NotFound {
                    return Err(err);
                }
            }
        }
        match lock {
            Ok(out) => {
                settings.object_lock = out
                    .object_lock_configuration()
                    .and_then(|c| c.object_lock_enabled())
                    .is_some_and(|e| *e == ObjectLockEnabled::Enabled);
            }
            Err(e) => {
                let err = self.err(S3Error::from_sdk(&e, "GetObjectLockConfiguration", bucket, None));
                if err.code != "ObjectLockConfigurationNotFoundError" && err.kind != S3ErrorKind::NotFound {
                    return Err(err);
                }
            }
        }
        Ok(settings)
    }

    async fn replication(&self, bucket: &str) -> ReplicationRead {
        match self.client.get_bucket_replication().bucket(bucket).send().await {
            Ok(out) => match out.replication_configuration() {
                Some(c) => ReplicationRead::Rules(convert_replication(c)),
                None => ReplicationRead::None,
            },
            Err(e) => {
                let err = self.err(S3Error::from_sdk(&e, "GetBucketReplication", bucket, None));
                if err.code == "ReplicationConfigurationNotFoundError" {
                    ReplicationRead::None
                } else {
                    ReplicationRead::Unreadable(err.to_string())
                }
            }
        }
    }
}

macro_rules! common_methods {
    ($t:ty) => {
        impl $t {
            /// Connects with `cfg`.
            ///
            /// # Errors
            /// Never for now; reserved for configuration that cannot be loaded.
            pub async fn connect(cfg: &S3Config) -> Result<Self, S3Error> {
                Ok(Self {
                    conn: connect(cfg).await?,
                })
            }

            /// The resolved region.
            pub fn region(&self) -> &str {
                &self.conn.region
            }

            /// The custom endpoint in use, if any (flag, environment or profile).
            pub fn endpoint(&self) -> Option<&str> {
                self.conn.endpoint.as_deref()
            }

            /// Reads the bucket-level settings once.
            ///
            /// # Errors
            /// The bucket is missing, unreadable, or elsewhere.
            pub async fn bucket_settings(&self, bucket: &str) -> Result<BucketSettings, S3Error> {
                self.conn.settings(bucket, false).await
            }

            /// Reads every bucket-level setting a restore needs, once.
            ///
            /// # Errors
            /// The bucket is missing, unreadable, or elsewhere.
            pub async fn full_bucket_settings(&self, bucket: &str) -> Result<BucketSettings, S3Error> {
                self.conn.settings(bucket, true).await
            }

            /// Reads the bucket's replication rules (GetBucketReplication).
            pub async fn replication_rules(&self, bucket: &str) -> ReplicationRead {
                self.conn.replication(bucket).await
            }

            pub(crate) fn sdk(&self) -> &Client {
                &self.conn.client
            }

            /// Which side this client serves.
            pub fn side(&self) -> Side {
                self.conn.side
            }
        }
    };
}

common_methods!(SourceClient);
common_methods!(DestClient);

impl DestClient {
    pub(crate) fn write_sdk(&self) -> &Client {
        &self.conn.write_client
    }
}

fn convert_replication(c: &aws_sdk_s3::types::ReplicationConfiguration) -> crate::rules::ReplicationConfig {
    use crate::rules::{Destination, Filter, ReplicationConfig, Rule, RuleStatus};
    use aws_sdk_s3::types::{
        DeleteMarkerReplicationStatus, ReplicationRuleFilter, ReplicationRuleStatus, SseKmsEncryptedObjectsStatus,
    };
    let tags = |t: &[aws_sdk_s3::types::Tag]| t.iter().map(|t| (t.key().to_owned(), t.value().to_owned())).collect();
    let filter = |f: &ReplicationRuleFilter| {
        if let Some(and) = f.and() {
            Filter::And {
                prefix: and.prefix().map(str::to_owned),
                tags: tags(and.tags()),
            }
        } else if let Some(t) = f.tag() {
            Filter::Tag(t.key().to_owned(), t.value().to_owned())
        } else if let Some(p) = f.prefix() {
            Filter::Prefix(p.to_owned())
        } else {
            Filter::None
        }
    };
    let rules = c
        .rules()
        .iter()
        .map(|r| {
            let d = r.destination();
            Rule {
                id: r.id().map(str::to_owned),
                priority: r.priority(),
                status: if *r.status() == ReplicationRuleStatus::Enabled {
                    RuleStatus::Enabled
                } else {
                    RuleStatus::Disabled
                },
                filter: r.filter().map(filter).unwrap_or(Filter::None),
                #[allow(deprecated)]
                legacy_prefix: if r.filter().is_none() {
                    Some(r.prefix().unwrap_or_default().to_owned())
                } else {
                    None
                },
                destination: Destination {
                    bucket_arn: d.map(|d| d.bucket().to_owned()).unwrap_or_default(),
                    account: d.and_then(|d| d.account()).map(str::to_owned),
                    storage_class: d.and_then(|d| d.storage_class()).map(|s| s.as_str().to_owned()),
                    owner_override: d.and_then(|d| d.access_control_translation()).is_some(),
                    replica_kms_key_id: d
                        .and_then(|d| d.encryption_configuration())
                        .and_then(|e| e.replica_kms_key_id())
                        .map(str::to_owned),
                },
                delete_marker_replication: match r.delete_marker_replication() {
                    Some(d) => d.status() == Some(&DeleteMarkerReplicationStatus::Enabled),
                    None => r.filter().is_none(),
                },
                replicate_sse_kms: r
                    .source_selection_criteria()
                    .and_then(|s| s.sse_kms_encrypted_objects())
                    .is_some_and(|s| *s.status() == SseKmsEncryptedObjectsStatus::Enabled),
            }
        })
        .collect();
    ReplicationConfig {
        role: Some(c.role().to_owned()).filter(|r| !r.is_empty()),
        rules,
    }
}

/// Whether an error at the first request means "the setup is wrong" (exit 2).
pub fn is_setup_error(e: &S3Error) -> bool {
    e.is_configuration() || e.kind == S3ErrorKind::Other
}
