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
use aws_sdk_s3::types::BucketVersioningStatus;

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
    let builder = aws_sdk_s3::config::Builder::from(&sdk)
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
    let client = Client::from_conf(builder.build());
    Ok(Connection {
        client,
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
            .client
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
    /// here, before anything else is sent.
    async fn settings(&self, bucket: &str) -> Result<BucketSettings, S3Error> {
        let versioning = self.versioning(bucket).await?;
        Ok(BucketSettings { versioning })
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
                self.conn.settings(bucket).await
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

/// Whether an error at the first request means "the setup is wrong" (exit 2).
pub fn is_setup_error(e: &S3Error) -> bool {
    e.is_configuration() || e.kind == S3ErrorKind::Other
}
