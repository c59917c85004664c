//! The S3 Control client for Batch Operations jobs (CreateJob, DescribeJob, ListJobs),
//! the account id (from `--account-id` or STS GetCallerIdentity), and the two plain S3
//! requests the Batch engine sends to its work location (PutObject of a manifest, GetObject
//! of a completion report). Built from the same [`S3Config`] as the S3 clients.
//!
//! The only place that names `aws_sdk_s3control` or `aws_sdk_sts` types.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_s3control::config::Region;
use aws_sdk_s3control::config::endpoint::{DefaultResolver, EndpointFuture, Params, ResolveEndpoint};
use aws_sdk_s3control::config::retry::{RetryConfig, RetryPartition, TokenBucket};
use aws_sdk_s3control::config::timeout::TimeoutConfig;
use aws_sdk_s3control::primitives::DateTime;
use aws_sdk_s3control::types::{
    JobManifest, JobManifestFieldName, JobManifestFormat, JobManifestLocation, JobManifestSpec, JobOperation,
    JobReport, JobReportFormat, JobReportScope, JobStatus, S3CopyObjectOperation, S3MetadataDirective, S3SseAlgorithm,
    S3StorageClass,
};

use crate::s3::DestClient;
use crate::s3::client::S3Config;
use crate::s3::error::S3Error;
use crate::s3::ops::SseChoice;

/// How to reach S3 Control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// The destination side's connection settings (region, profile, timeouts).
    pub s3: S3Config,
    /// `--batch-endpoint-url`: S3 Control's endpoint (and STS's), taken literally.
    pub endpoint_url: Option<String>,
    /// `--account-id`; `None` asks STS.
    pub account_id: Option<String>,
}

/// A connected S3 Control client with its account id.
#[derive(Debug, Clone)]
pub struct ControlClient {
    client: aws_sdk_s3control::Client,
    account_id: String,
}

/// An explicitly configured endpoint taken literally.
///
/// S3 Control's endpoint rules put the account id in front of the host, for a custom
/// endpoint URL too (S3-NOTES 53): `https://vpce.example` becomes
/// `https://123456789012.vpce.example`, a name that exists for AWS's own endpoints only.
/// Of the two routes that keep SigV4 valid, this one (run the SDK's own rules, then
/// replace scheme, host, port and path with the URL the operator gave, keeping every
/// endpoint property: signing name `s3`, region, single URI encoding, headers) works for
/// any endpoint an operator can name (a VPC interface endpoint, a proxy, an emulator)
/// without DNS tricks; the account id still travels in the `x-amz-account-id` header,
/// which is where S3 Control reads it. Without `--batch-endpoint-url` the SDK's rules
/// apply untouched.
#[derive(Debug)]
struct LiteralEndpoint {
    rules: DefaultResolver,
    url: String,
}

impl ResolveEndpoint for LiteralEndpoint {
    fn resolve_endpoint<'a>(&'a self, params: &'a Params) -> EndpointFuture<'a> {
        EndpointFuture::new(async move {
            let resolved = ResolveEndpoint::resolve_endpoint(&self.rules, params).await?;
            // Everything the rules said (auth schemes with signing name and region,
            // properties, headers) but the URL.
            let b = resolved.into_builder().url(self.url.clone());
            Ok(b.build())
        })
    }
}

/// A job's state as DescribeJob gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    /// The job id.
    pub job_id: String,
    /// AWS's status word (`New`, `Preparing`, `Ready`, `Active`, `Complete`, `Failed`, ...).
    pub status: String,
    /// Tasks in the manifest, once known.
    pub total: u64,
    /// Tasks that succeeded so far.
    pub succeeded: u64,
    /// Tasks that failed so far.
    pub failed: u64,
    /// Why the job failed, joined (failure codes and reasons), or the status update reason.
    pub reason: String,
    /// When the job was created.
    pub created: Option<jiff::Timestamp>,
}

impl JobState {
    /// Whether the job will not change any more.
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "Complete" | "Failed" | "Cancelled")
    }
}

/// One job as the Batch engine creates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    /// The manifest object's ARN.
    pub manifest_arn: String,
    /// The manifest object's ETag, without quotes.
    pub manifest_etag: String,
    /// The destination bucket's ARN.
    pub target_bucket_arn: String,
    /// The key prefix Batch Operations prepends, if any.
    pub target_key_prefix: Option<String>,
    /// Storage class for every copy.
    pub storage_class: String,
    /// Encryption for every copy.
    pub sse: SseChoice,
    /// The work bucket's ARN for the completion report.
    pub report_bucket_arn: String,
    /// The report prefix in the work bucket.
    pub report_prefix: String,
    /// The IAM role the job assumes.
    pub role_arn: String,
    /// Idempotency token (at most 64 characters).
    pub client_request_token: String,
    /// Description shown in the console.
    pub description: String,
    /// Priority.
    pub priority: i32,
}

fn control_err<E>(
    e: &aws_sdk_s3control::error::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
    op: &'static str,
    what: &str,
) -> S3Error
where
    E: aws_sdk_s3control::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    S3Error::from_sdk(e, op, what, None)
}

impl ControlClient {
    /// Connects, and reads the account id from STS when it was not given.
    ///
    /// # Errors
    /// STS could not tell the account (no credentials, wrong endpoint).
    pub async fn connect(cfg: &ControlConfig) -> Result<Self, S3Error> {
        let s3 = &cfg.s3;
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(profile) = &s3.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(region) = &s3.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".to_owned());
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(s3.connect_timeout)
            .read_timeout(s3.read_timeout)
            .build();
        let account_id = match &cfg.account_id {
            Some(id) => id.clone(),
            None => {
                let mut b = aws_sdk_sts::config::Builder::from(&sdk)
                    .region(aws_sdk_sts::config::Region::new(region.clone()))
                    .timeout_config(timeouts.clone());
                if let Some(url) = &cfg.endpoint_url {
                    b = b.endpoint_url(url);
                }
                let sts = aws_sdk_sts::Client::from_conf(b.build());
                let out = sts
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(|e| S3Error::from_sdk(&e, "GetCallerIdentity", "", None))?;
                out.account().map(str::to_owned).unwrap_or_default()
            }
        };
        let partition = RetryPartition::custom("s3-failback-control")
            .token_bucket(TokenBucket::new(100_000))
            .build();
        let mut b = aws_sdk_s3control::config::Builder::from(&sdk)
            .region(Region::new(region))
            .timeout_config(timeouts)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(s3.max_attempts.max(1))
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(20)),
            )
            .retry_partition(partition);
        if let Some(url) = &cfg.endpoint_url {
            b = b.endpoint_resolver(LiteralEndpoint {
                rules: DefaultResolver::new(),
                url: url.trim_end_matches('/').to_owned(),
            });
            // The rules need an endpoint parameter to build a custom-endpoint answer.
            b = b.endpoint_url(url);
        }
        Ok(ControlClient {
            client: aws_sdk_s3control::Client::from_conf(b.build()),
            account_id,
        })
    }

    /// The account the jobs run in.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// CreateJob: an S3PutObjectCopy job over a CSV manifest, reporting every task. With
    /// the same `client_request_token`, S3 answers with the job it created before.
    ///
    /// # Errors
    /// The request failed.
    pub async fn create_copy_job(&self, req: &JobRequest) -> Result<String, S3Error> {
        let mut copy = S3CopyObjectOperation::builder()
            .target_resource(&req.target_bucket_arn)
            // COPY: content headers, user metadata and tags come from the source version;
            // no NewObjectTagging, so none are replaced.
            .metadata_directive(S3MetadataDirective::Copy)
            .storage_class(S3StorageClass::from(req.storage_class.as_str()));
        if let Some(p) = &req.target_key_prefix {
            copy = copy.target_key_prefix(p);
        }
        match &req.sse {
            SseChoice::BucketDefault => {}
            SseChoice::Aes256 => {
                copy = copy.new_object_metadata(
                    aws_sdk_s3control::types::S3ObjectMetadata::builder()
                        .sse_algorithm(S3SseAlgorithm::Aes256)
                        .build(),
                );
            }
            SseChoice::Kms(key) => {
                copy = copy.new_object_metadata(
                    aws_sdk_s3control::types::S3ObjectMetadata::builder()
                        .sse_algorithm(S3SseAlgorithm::Kms)
                        .build(),
                );
                if let Some(k) = key {
                    copy = copy.sse_aws_kms_key_id(k);
                }
            }
        }
        let build = |e: aws_sdk_s3control::error::BuildError| local("CreateJob", &req.description, e.to_string());
        let manifest = JobManifest::builder()
            .spec(
                JobManifestSpec::builder()
                    .format(JobManifestFormat::S3BatchOperationsCsv20180820)
                    .fields(JobManifestFieldName::Bucket)
                    .fields(JobManifestFieldName::Key)
                    .fields(JobManifestFieldName::VersionId)
                    .build()
                    .map_err(build)?,
            )
            .location(
                JobManifestLocation::builder()
                    .object_arn(&req.manifest_arn)
                    .e_tag(&req.manifest_etag)
                    .build()
                    .map_err(build)?,
            )
            .build();
        let report = JobReport::builder()
            .bucket(&req.report_bucket_arn)
            .prefix(&req.report_prefix)
            .enabled(true)
            .format(JobReportFormat::ReportCsv20180820)
            .report_scope(JobReportScope::AllTasks)
            .build();
        let out = self
            .client
            .create_job()
            .account_id(&self.account_id)
            .confirmation_required(false)
            .operation(JobOperation::builder().s3_put_object_copy(copy.build()).build())
            .manifest(manifest)
            .report(report)
            .client_request_token(&req.client_request_token)
            .description(&req.description)
            .priority(req.priority)
            .role_arn(&req.role_arn)
            .send()
            .await
            .map_err(|e| control_err(&e, "CreateJob", &req.description))?;
        out.job_id()
            .map(str::to_owned)
            .ok_or_else(|| local("CreateJob", &req.description, "the answer has no job id".into()))
    }

    /// DescribeJob.
    ///
    /// # Errors
    /// The request failed.
    pub async fn describe_job(&self, job_id: &str) -> Result<JobState, S3Error> {
        let out = self
            .client
            .describe_job()
            .account_id(&self.account_id)
            .job_id(job_id)
            .send()
            .await
            .map_err(|e| control_err(&e, "DescribeJob", job_id))?;
        let job = out
            .job()
            .ok_or_else(|| local("DescribeJob", job_id, "the answer has no job".into()))?;
        let progress = job.progress_summary();
        let mut reasons: Vec<String> = job
            .failure_reasons()
            .iter()
            .map(|f| {
                format!(
                    "{}: {}",
                    f.failure_code().unwrap_or_default(),
                    f.failure_reason().unwrap_or_default()
                )
            })
            .collect();
        if reasons.is_empty()
            && let Some(r) = job.status_update_reason()
        {
            reasons.push(r.to_owned());
        }
        Ok(JobState {
            job_id: job.job_id().unwrap_or(job_id).to_owned(),
            status: job.status().map(JobStatus::as_str).unwrap_or("New").to_owned(),
            total: progress.and_then(|p| p.total_number_of_tasks()).unwrap_or(0).max(0) as u64,
            succeeded: progress.and_then(|p| p.number_of_tasks_succeeded()).unwrap_or(0).max(0) as u64,
            failed: progress.and_then(|p| p.number_of_tasks_failed()).unwrap_or(0).max(0) as u64,
            reason: reasons.join("; "),
            created: job.creation_time().and_then(timestamp),
        })
    }
}

fn local(operation: &'static str, what: &str, message: String) -> S3Error {
    S3Error {
        operation,
        bucket: what.to_owned(),
        key: None,
        kind: crate::s3::S3ErrorKind::Other,
        code: String::new(),
        message,
        request_id: None,
        status: None,
        bucket_region: None,
        endpoint: None,
    }
}

fn timestamp(t: &DateTime) -> Option<jiff::Timestamp> {
    jiff::Timestamp::new(t.secs(), t.subsec_nanos() as i32).ok()
}

impl DestClient {
    /// PutObject of a small file into the Batch work location; the ETag without quotes.
    ///
    /// # Errors
    /// The request failed.
    pub async fn put_work_object(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<String, S3Error> {
        let out = self
            .sdk()
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("text/csv")
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
            .send()
            .await
            .map_err(|e| S3Error::from_sdk(&e, "PutObject", bucket, Some(key)).at_endpoint(self.endpoint()))?;
        Ok(out.e_tag().unwrap_or_default().trim_matches('"').to_owned())
    }

    /// GetObject of a file in the Batch work location (a completion report).
    ///
    /// # Errors
    /// The request failed.
    pub async fn get_work_object(&self, bucket: &str, key: &str) -> Result<Vec<u8>, S3Error> {
        let out = self
            .sdk()
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| S3Error::from_sdk(&e, "GetObject", bucket, Some(key)).at_endpoint(self.endpoint()))?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| local("GetObject", bucket, format!("reading {key}: {e}")))?;
        Ok(bytes.into_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_configured_endpoint_is_taken_literally_with_the_rules_signing_properties() {
        let resolver = LiteralEndpoint {
            rules: DefaultResolver::new(),
            url: "http://127.0.0.1:9".into(),
        };
        let params = Params::builder()
            .region("us-east-1")
            .account_id("123456789012")
            .requires_account_id(true)
            .endpoint("http://127.0.0.1:9")
            .use_fips(false)
            .use_dual_stack(false)
            .build()
            .unwrap();
        let plain = ResolveEndpoint::resolve_endpoint(&DefaultResolver::new(), &params)
            .await
            .unwrap();
        // What the SDK's rules alone make of it: a host that does not resolve (S3-NOTES 53).
        assert_eq!(plain.url(), "http://123456789012.127.0.0.1:9");
        let ours = resolver.resolve_endpoint(&params).await.unwrap();
        assert_eq!(ours.url(), "http://127.0.0.1:9");
        assert_eq!(ours.properties(), plain.properties());
        assert_eq!(ours.auth_schemes(), plain.auth_schemes());
        let schemes = format!("{:?}", ours.auth_schemes());
        assert!(schemes.contains("\"s3\""), "signing name: {schemes}");
    }
}
