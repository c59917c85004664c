//! The S3 requests a restore makes, in plain types: HEAD, ACL and tagging reads on the
//! source, copies, multipart copies and delete markers on the destination.
//!
//! Writes go through a client whose SDK retries are off: a blind retry of a copy whose
//! answer was lost makes a second version (S3-NOTES 31), so the engine retries after
//! checking the destination. Deciding what to copy is the planner's.

use std::collections::BTreeMap;

use aws_sdk_s3::primitives::DateTime;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart, MetadataDirective,
    ObjectLockLegalHoldStatus, ObjectLockMode, RestoreRequest, ServerSideEncryption, StorageClass, Tag, Tagging,
    TaggingDirective, Tier,
};
use jiff::Timestamp;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::s3::client::{DestClient, SourceClient};
use crate::s3::error::{S3Error, S3ErrorKind};

/// What a HEAD of one version tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectHead {
    /// Content length (of the part, with `partNumber`).
    pub content_length: u64,
    /// Parts count of a multipart object (`x-amz-mp-parts-count`).
    pub parts_count: Option<u32>,
    /// ETag without quotes.
    pub etag: Option<String>,
    /// Content headers.
    pub content: ContentHeaders,
    /// User metadata (`x-amz-meta-*`), keys lower-case.
    pub metadata: BTreeMap<String, String>,
    /// Storage class (`None` is STANDARD).
    pub storage_class: Option<String>,
    /// `x-amz-restore`, for archived versions.
    pub restore: Option<String>,
    /// `x-amz-replication-status`.
    pub replication_status: Option<String>,
    /// Server-side encryption algorithm.
    pub sse: Option<String>,
    /// KMS key of an SSE-KMS object.
    pub kms_key_id: Option<String>,
    /// Object Lock settings.
    pub lock: LockSettings,
    /// Additional checksum: algorithm and value.
    pub checksum: Option<(String, String)>,
    /// Number of tags.
    pub tag_count: Option<u32>,
}

/// The content headers a copy carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentHeaders {
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
    /// x-amz-website-redirect-location.
    pub website_redirect_location: Option<String>,
}

/// Object Lock settings of one version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockSettings {
    /// GOVERNANCE or COMPLIANCE.
    pub mode: Option<String>,
    /// Retain-until date.
    pub retain_until: Option<Timestamp>,
    /// Legal hold on.
    pub legal_hold: Option<bool>,
}

impl LockSettings {
    /// Whether there is anything to send.
    pub fn is_empty(&self) -> bool {
        self.mode.is_none() && self.retain_until.is_none() && self.legal_hold.is_none()
    }
}

/// Who an ACL grant is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grantee {
    /// A canonical user id.
    Id(String),
    /// A group URI.
    Uri(String),
    /// An email address.
    Email(String),
}

/// One ACL grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The grantee.
    pub grantee: Grantee,
    /// FULL_CONTROL, READ, READ_ACP, WRITE_ACP (WRITE does not apply to objects).
    pub permission: String,
}

/// Encryption a copy asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseChoice {
    /// Send nothing: the destination bucket's default applies.
    BucketDefault,
    /// SSE-S3.
    Aes256,
    /// SSE-KMS with this key (or the AWS-managed key).
    Kms(Option<String>),
}

/// The attributes a copy sets beyond what COPY directives carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteAttributes {
    /// Storage class, always sent (a copy without it becomes STANDARD).
    pub storage_class: String,
    /// Encryption.
    pub sse: SseChoice,
    /// ACL grants (empty: none sent).
    pub grants: Vec<Grant>,
    /// Object Lock settings (empty: none sent).
    pub lock: LockSettings,
}

/// What a write created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// The new version id.
    pub version_id: Option<String>,
    /// The new ETag without quotes.
    pub etag: Option<String>,
}

/// A multipart upload found on the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenUpload {
    /// The key.
    pub key: String,
    /// The upload id.
    pub upload_id: String,
    /// When it was started.
    pub initiated: Option<Timestamp>,
}

/// Percent-encoding for `x-amz-copy-source`: everything but unreserved characters and `/`
/// (the SDK sends the header as given, S3-NOTES 1).
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Sets the attributes COPY directives do not carry (encryption, ACL grants, Object Lock)
/// on a CopyObject or CreateMultipartUpload request: the two builders share the setters.
macro_rules! with_write_attributes {
    ($req:expr, $attrs:expr) => {{
        let attrs: &WriteAttributes = $attrs;
        let mut req = match &attrs.sse {
            SseChoice::BucketDefault => $req,
            SseChoice::Aes256 => $req.server_side_encryption(ServerSideEncryption::Aes256),
            SseChoice::Kms(key) => $req
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .set_ssekms_key_id(key.clone())
                .bucket_key_enabled(true),
        };
        for (header, value) in grant_headers(&attrs.grants) {
            req = match header {
                "full" => req.grant_full_control(value),
                "read" => req.grant_read(value),
                "read_acp" => req.grant_read_acp(value),
                _ => req.grant_write_acp(value),
            };
        }
        if let Some(mode) = &attrs.lock.mode {
            req = req.object_lock_mode(ObjectLockMode::from(mode.as_str()));
        }
        if let Some(t) = attrs.lock.retain_until {
            req = req.object_lock_retain_until_date(sdk_time(t));
        }
        if let Some(on) = attrs.lock.legal_hold {
            let status = if on {
                ObjectLockLegalHoldStatus::On
            } else {
                ObjectLockLegalHoldStatus::Off
            };
            req = req.object_lock_legal_hold_status(status);
        }
        req
    }};
}

/// The `x-amz-copy-source` value for one version.
pub fn copy_source(bucket: &str, key: &str, version_id: &str) -> String {
    format!(
        "{}/{}?versionId={}",
        bucket,
        utf8_percent_encode(key, COPY_SOURCE),
        utf8_percent_encode(version_id, COPY_SOURCE)
    )
}

fn ts(t: Option<&DateTime>) -> Option<Timestamp> {
    t.and_then(|t| Timestamp::new(t.secs(), t.subsec_nanos() as i32).ok())
}

fn sdk_time(t: Timestamp) -> DateTime {
    DateTime::from_secs_and_nanos(t.as_second(), t.subsec_nanosecond().max(0) as u32)
}

fn unquote(s: Option<&str>) -> Option<String> {
    s.map(|e| e.trim_matches('"').to_owned())
}

/// The URL-encoded `x-amz-tagging` form of a tag set.
pub fn tagging_header(tags: &[(String, String)]) -> String {
    const FORM: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    tags.iter()
        .map(|(k, v)| format!("{}={}", utf8_percent_encode(k, FORM), utf8_percent_encode(v, FORM)))
        .collect::<Vec<_>>()
        .join("&")
}

fn grant_headers(grants: &[Grant]) -> BTreeMap<&'static str, String> {
    let mut by: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for g in grants {
        let header = match g.permission.as_str() {
            "FULL_CONTROL" => "full",
            "READ" => "read",
            "READ_ACP" => "read_acp",
            "WRITE_ACP" => "write_acp",
            _ => continue,
        };
        let who = match &g.grantee {
            Grantee::Id(id) => format!("id=\"{id}\""),
            Grantee::Uri(uri) => format!("uri=\"{uri}\""),
            Grantee::Email(e) => format!("emailAddress=\"{e}\""),
        };
        by.entry(header).or_default().push(who);
    }
    by.into_iter().map(|(k, v)| (k, v.join(", "))).collect()
}

impl SourceClient {
    /// HEADs one version (checksum mode on); with `part_number`, that part's length and
    /// the parts count.
    ///
    /// # Errors
    /// The request failed.
    pub async fn head_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        part_number: Option<u32>,
    ) -> Result<ObjectHead, S3Error> {
        head(self.sdk(), self.endpoint(), bucket, key, Some(version_id), part_number).await
    }

    /// The ACL grants of one version.
    ///
    /// # Errors
    /// The request failed.
    pub async fn get_acl(&self, bucket: &str, key: &str, version_id: &str) -> Result<Vec<Grant>, S3Error> {
        let out = self
            .sdk()
            .get_object_acl()
            .bucket(bucket)
            .key(key)
            .version_id(version_id)
            .send()
            .await
            .map_err(|e| S3Error::from_sdk(&e, "GetObjectAcl", bucket, Some(key)).at_endpoint(self.endpoint()))?;
        Ok(out
            .grants()
            .iter()
            .filter_map(|g| {
                let grantee = g.grantee()?;
                let who = if let Some(id) = grantee.id() {
                    Grantee::Id(id.to_owned())
                } else if let Some(uri) = grantee.uri() {
                    Grantee::Uri(uri.to_owned())
                } else {
                    Grantee::Email(grantee.email_address()?.to_owned())
                };
                Some(Grant {
                    grantee: who,
                    permission: g.permission()?.as_str().to_owned(),
                })
            })
            .collect())
    }

    /// The tags of one version.
    ///
    /// # Errors
    /// The request failed.
    pub async fn get_tags(&self, bucket: &str, key: &str, version_id: &str) -> Result<Vec<(String, String)>, S3Error> {
        get_tags(self.sdk(), self.endpoint(), bucket, key, Some(version_id)).await
    }

    /// Asks S3 to restore an archived version for `days` (RestoreObject): the one request
    /// this tool ever sends to the replica that is not a read, and only under
    /// `--restore-archived`.
    ///
    /// # Errors
    /// The request failed (an already running restore is not an error).
    pub async fn request_restore_from_archive(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        days: u32,
        tier: Option<&str>,
    ) -> Result<(), S3Error> {
        let mut request = RestoreRequest::builder().days(days as i32);
        if let Some(t) = tier {
            request = request.glacier_job_parameters(
                aws_sdk_s3::types::GlacierJobParameters::builder()
                    .tier(Tier::from(t))
                    .build()
                    .map_err(|e| local_error("RestoreObject", bucket, key, e.to_string()))?,
            );
        }
        let result = self
            .sdk()
            .restore_object()
            .bucket(bucket)
            .key(key)
            .version_id(version_id)
            .restore_request(request.build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                let err = S3Error::from_sdk(&e, "RestoreObject", bucket, Some(key)).at_endpoint(self.endpoint());
                if err.code == "RestoreAlreadyInProgress" {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }
}

fn local_error(operation: &'static str, bucket: &str, key: &str, message: String) -> S3Error {
    S3Error {
        operation,
        bucket: bucket.to_owned(),
        key: Some(key.to_owned()),
        kind: S3ErrorKind::Other,
        code: String::new(),
        message,
        request_id: None,
        status: None,
        bucket_region: None,
        endpoint: None,
    }
}

async fn head(
    client: &aws_sdk_s3::Client,
    endpoint: Option<&str>,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
    part_number: Option<u32>,
) -> Result<ObjectHead, S3Error> {
    let mut req = client
        .head_object()
        .bucket(bucket)
        .key(key)
        .checksum_mode(ChecksumMode::Enabled);
    if let Some(v) = version_id {
        req = req.version_id(v);
    }
    if let Some(p) = part_number {
        req = req.part_number(p as i32);
    }
    let out = req
        .send()
        .await
        .map_err(|e| S3Error::from_sdk(&e, "HeadObject", bucket, Some(key)).at_endpoint(endpoint))?;
    let checksum = [
        ("CRC64NVME", out.checksum_crc64_nvme()),
        ("CRC32C", out.checksum_crc32_c()),
        ("CRC32", out.checksum_crc32()),
        ("SHA256", out.checksum_sha256()),
        ("SHA1", out.checksum_sha1()),
    ]
    .into_iter()
    .find_map(|(algo, v)| v.map(|v| (algo.to_owned(), v.to_owned())));
    Ok(ObjectHead {
        content_length: out.content_length().unwrap_or(0).max(0) as u64,
        parts_count: out.parts_count().and_then(|n| u32::try_from(n).ok()),
        etag: unquote(out.e_tag()),
        content: ContentHeaders {
            content_type: out.content_type().map(str::to_owned),
            cache_control: out.cache_control().map(str::to_owned),
            content_disposition: out.content_disposition().map(str::to_owned),
            content_encoding: out.content_encoding().map(str::to_owned),
            content_language: out.content_language().map(str::to_owned),
            expires: out.expires_string().map(str::to_owned),
            website_redirect_location: out.website_redirect_location().map(str::to_owned),
        },
        metadata: out
            .metadata()
            .map(|m| m.iter().map(|(k, v)| (k.to_lowercase(), v.clone())).collect())
            .unwrap_or_default(),
        storage_class: out.storage_class().map(|c| c.as_str().to_owned()),
        restore: out.restore().map(str::to_owned),
        replication_status: out.replication_status().map(|s| s.as_str().to_owned()),
        sse: out.server_side_encryption().map(|s| s.as_str().to_owned()),
        kms_key_id: out.ssekms_key_id().map(str::to_owned),
        lock: LockSettings {
            mode: out.object_lock_mode().map(|m| m.as_str().to_owned()),
            retain_until: ts(out.object_lock_retain_until_date()),
            legal_hold: out
                .object_lock_legal_hold_status()
                .map(|s| *s == ObjectLockLegalHoldStatus::On),
        },
        checksum,
        tag_count: out.tag_count().and_then(|n| u32::try_from(n).ok()),
    })
}

async fn get_tags(
    client: &aws_sdk_s3::Client,
    endpoint: Option<&str>,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
) -> Result<Vec<(String, String)>, S3Error> {
    let out = client
        .get_object_tagging()
        .bucket(bucket)
        .key(key)
        .set_version_id(version_id.map(str::to_owned))
        .send()
        .await
        .map_err(|e| S3Error::from_sdk(&e, "GetObjectTagging", bucket, Some(key)).at_endpoint(endpoint))?;
    Ok(out
        .tag_set()
        .iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect())
}

/// What CreateMultipartUpload needs to know of the source (UploadPartCopy carries no
/// metadata and no tags, S3-NOTES 3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MultipartSource {
    /// Content headers.
    pub content: ContentHeaders,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// Tags.
    pub tags: Vec<(String, String)>,
    /// Additional checksum algorithm to keep.
    pub checksum_algorithm: Option<String>,
}

/// The largest URL-encoded tag set that fits the `x-amz-tagging` header.
pub const TAGGING_HEADER_MAX: usize = 2048;

impl DestClient {
    /// CopyObject from one source version with COPY directives (content headers, user
    /// metadata and tags come along), setting storage class, encryption, grants and lock.
    ///
    /// # Errors
    /// The request failed, or S3 answered 200 with an error in the body.
    pub async fn copy_version(
        &self,
        source_bucket: &str,
        source_key: &str,
        source_version_id: &str,
        dest_bucket: &str,
        dest_key: &str,
        attrs: &WriteAttributes,
    ) -> Result<Written, S3Error> {
        let mut req = self
            .write_sdk()
            .copy_object()
            .bucket(dest_bucket)
            .key(dest_key)
            .copy_source(copy_source(source_bucket, source_key, source_version_id))
            .metadata_directive(MetadataDirective::Copy)
            .tagging_directive(TaggingDirective::Copy)
            .storage_class(StorageClass::from(attrs.storage_class.as_str()));
        req = with_write_attributes!(req, attrs);
        let out = req.send().await.map_err(|e| {
            S3Error::from_sdk(&e, "CopyObject", dest_bucket, Some(dest_key)).at_endpoint(self.endpoint())
        })?;
        // A 200 whose body held an error carries no result (S3-NOTES 6).
        let Some(result) = out.copy_object_result() else {
            return Err(transient(
                "CopyObject",
                dest_bucket,
                dest_key,
                "200 OK without a copy result",
            ));
        };
        Ok(Written {
            version_id: out.version_id().map(str::to_owned),
            etag: unquote(result.e_tag()),
        })
    }

    /// CreateMultipartUpload carrying the source's metadata, tags (when they fit the
    /// header), storage class, encryption, grants and lock settings.
    ///
    /// # Errors
    /// The request failed.
    pub async fn create_multipart(
        &self,
        dest_bucket: &str,
        dest_key: &str,
        source: &MultipartSource,
        attrs: &WriteAttributes,
    ) -> Result<String, S3Error> {
        let c = &source.content;
        let mut req = self
            .write_sdk()
            .create_multipart_upload()
            .bucket(dest_bucket)
            .key(dest_key)
            .storage_class(StorageClass::from(attrs.storage_class.as_str()))
            .set_content_type(c.content_type.clone())
            .set_cache_control(c.cache_control.clone())
            .set_content_disposition(c.content_disposition.clone())
            .set_content_encoding(c.content_encoding.clone())
            .set_content_language(c.content_language.clone())
            .set_website_redirect_location(c.website_redirect_location.clone());
        if let Some(expires) = c
            .expires
            .as_deref()
            .and_then(|e| DateTime::from_str(e, aws_smithy_types::date_time::Format::HttpDate).ok())
        {
            req = req.expires(expires);
        }
        for (k, v) in &source.metadata {
            req = req.metadata(k, v);
        }
        let tagging = tagging_header(&source.tags);
        if !source.tags.is_empty() && tagging.len() <= TAGGING_HEADER_MAX {
            req = req.tagging(tagging);
        }
        if let Some(algo) = &source.checksum_algorithm {
            req = req.checksum_algorithm(ChecksumAlgorithm::from(algo.as_str()));
        }
        req = with_write_attributes!(req, attrs);
        let out = req.send().await.map_err(|e| {
            S3Error::from_sdk(&e, "CreateMultipartUpload", dest_bucket, Some(dest_key)).at_endpoint(self.endpoint())
        })?;
        out.upload_id().map(str::to_owned).ok_or_else(|| {
            transient(
                "CreateMultipartUpload",
                dest_bucket,
                dest_key,
                "no upload id in the answer",
            )
        })
    }

    /// UploadPartCopy of one byte range (`None`: the whole source, for an empty object);
    /// returns the part for CompleteMultipartUpload.
    ///
    /// # Errors
    /// The request failed, or S3 answered 200 with an error in the body.
    #[allow(clippy::too_many_arguments)]
    pub async fn upload_part_copy(
        &self,
        source_bucket: &str,
        source_key: &str,
        source_version_id: &str,
        dest_bucket: &str,
        dest_key: &str,
        upload_id: &str,
        part_number: u32,
        range: Option<String>,
    ) -> Result<CompletedPartInfo, S3Error> {
        let out = self
            .write_sdk()
            .upload_part_copy()
            .bucket(dest_bucket)
            .key(dest_key)
            .upload_id(upload_id)
            .part_number(part_number as i32)
            .copy_source(copy_source(source_bucket, source_key, source_version_id))
            .set_copy_source_range(range)
            .send()
            .await
            .map_err(|e| {
                S3Error::from_sdk(&e, "UploadPartCopy", dest_bucket, Some(dest_key)).at_endpoint(self.endpoint())
            })?;
        let Some(r) = out.copy_part_result() else {
            return Err(transient(
                "UploadPartCopy",
                dest_bucket,
                dest_key,
                "200 OK without a part result",
            ));
        };
        Ok(CompletedPartInfo {
            part_number,
            etag: r.e_tag().unwrap_or_default().to_owned(),
            checksum_crc32: r.checksum_crc32().map(str::to_owned),
            checksum_crc32c: r.checksum_crc32_c().map(str::to_owned),
            checksum_crc64nvme: r.checksum_crc64_nvme().map(str::to_owned),
            checksum_sha1: r.checksum_sha1().map(str::to_owned),
            checksum_sha256: r.checksum_sha256().map(str::to_owned),
        })
    }

    /// CompleteMultipartUpload with the parts in order.
    ///
    /// # Errors
    /// The request failed, or S3 answered 200 with an error in the body.
    pub async fn complete_multipart(
        &self,
        dest_bucket: &str,
        dest_key: &str,
        upload_id: &str,
        parts: &[CompletedPartInfo],
    ) -> Result<Written, S3Error> {
        let parts: Vec<CompletedPart> = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.part_number as i32)
                    .e_tag(&p.etag)
                    .set_checksum_crc32(p.checksum_crc32.clone())
                    .set_checksum_crc32_c(p.checksum_crc32c.clone())
                    .set_checksum_crc64_nvme(p.checksum_crc64nvme.clone())
                    .set_checksum_sha1(p.checksum_sha1.clone())
                    .set_checksum_sha256(p.checksum_sha256.clone())
                    .build()
            })
            .collect();
        let out = self
            .write_sdk()
            .complete_multipart_upload()
            .bucket(dest_bucket)
            .key(dest_key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| {
                S3Error::from_sdk(&e, "CompleteMultipartUpload", dest_bucket, Some(dest_key))
                    .at_endpoint(self.endpoint())
            })?;
        if out.e_tag().is_none() {
            return Err(transient(
                "CompleteMultipartUpload",
                dest_bucket,
                dest_key,
                "200 OK without an ETag",
            ));
        }
        Ok(Written {
            version_id: out.version_id().map(str::to_owned),
            etag: unquote(out.e_tag()),
        })
    }

    /// AbortMultipartUpload; an upload already gone is not an error.
    ///
    /// # Errors
    /// The request failed.
    pub async fn abort_multipart(&self, dest_bucket: &str, dest_key: &str, upload_id: &str) -> Result<(), S3Error> {
        match self
            .sdk()
            .abort_multipart_upload()
            .bucket(dest_bucket)
            .key(dest_key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let err = S3Error::from_sdk(&e, "AbortMultipartUpload", dest_bucket, Some(dest_key))
                    .at_endpoint(self.endpoint());
                if err.kind == S3ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Every multipart upload open under `prefix`.
    ///
    /// # Errors
    /// The request failed.
    pub async fn list_open_uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<OpenUpload>, S3Error> {
        let mut out = Vec::new();
        let mut markers: (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .sdk()
                .list_multipart_uploads()
                .bucket(bucket)
                .prefix(prefix)
                .set_key_marker(markers.0.clone())
                .set_upload_id_marker(markers.1.clone())
                .send()
                .await
                .map_err(|e| {
                    S3Error::from_sdk(&e, "ListMultipartUploads", bucket, None).at_endpoint(self.endpoint())
                })?;
            for u in page.uploads() {
                if let (Some(key), Some(id)) = (u.key(), u.upload_id()) {
                    out.push(OpenUpload {
                        key: key.to_owned(),
                        upload_id: id.to_owned(),
                        initiated: ts(u.initiated()),
                    });
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(out);
            }
            let next = (
                page.next_key_marker().map(str::to_owned),
                page.next_upload_id_marker().map(str::to_owned),
            );
            if next == markers || next.0.is_none() {
                return Ok(out);
            }
            markers = next;
        }
    }

    /// PutObjectTagging on a version (for multipart copies whose tags do not fit the header).
    ///
    /// # Errors
    /// The request failed.
    pub async fn put_tags(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<(), S3Error> {
        let tag_set: Result<Vec<Tag>, _> = tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let tag_set = tag_set.map_err(|e| local_error("PutObjectTagging", bucket, key, e.to_string()))?;
        let tagging = Tagging::builder()
            .set_tag_set(Some(tag_set))
            .build()
            .map_err(|e| local_error("PutObjectTagging", bucket, key, e.to_string()))?;
        self.sdk()
            .put_object_tagging()
            .bucket(bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_owned))
            .tagging(tagging)
            .send()
            .await
            .map_err(|e| S3Error::from_sdk(&e, "PutObjectTagging", bucket, Some(key)).at_endpoint(self.endpoint()))?;
        Ok(())
    }

    /// DeleteObject WITHOUT a version id: adds a delete marker, destroys nothing
    /// (S3-NOTES 11). There is no versioned delete on this client outside drill cleanup.
    ///
    /// # Errors
    /// The request failed.
    pub async fn add_delete_marker(&self, bucket: &str, key: &str) -> Result<Written, S3Error> {
        let out = self
            .write_sdk()
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| S3Error::from_sdk(&e, "DeleteObject", bucket, Some(key)).at_endpoint(self.endpoint()))?;
        Ok(Written {
            version_id: out.version_id().map(str::to_owned),
            etag: None,
        })
    }

    /// DeleteObject WITH a version id: destroys that version. Only `drill --cleanup` calls
    /// this, for versions its own journal recorded in the scratch location; nothing else
    /// in this tool deletes permanently.
    ///
    /// # Errors
    /// The request failed (a version already gone is not an error).
    pub async fn delete_scratch_version(&self, bucket: &str, key: &str, version_id: &str) -> Result<(), S3Error> {
        match self
            .sdk()
            .delete_object()
            .bucket(bucket)
            .key(key)
            .version_id(version_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let err = S3Error::from_sdk(&e, "DeleteObject", bucket, Some(key)).at_endpoint(self.endpoint());
                if err.kind == S3ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    /// HEADs a destination version (or the current one).
    ///
    /// # Errors
    /// The request failed.
    pub async fn head_version(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<ObjectHead, S3Error> {
        head(self.sdk(), self.endpoint(), bucket, key, version_id, None).await
    }

    /// The tags of a destination version.
    ///
    /// # Errors
    /// The request failed.
    pub async fn get_tags(&self, bucket: &str, key: &str, version_id: &str) -> Result<Vec<(String, String)>, S3Error> {
        get_tags(self.sdk(), self.endpoint(), bucket, key, Some(version_id)).await
    }
}

/// A part ready for CompleteMultipartUpload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompletedPartInfo {
    /// The part number.
    pub part_number: u32,
    /// The part's ETag as S3 gave it.
    pub etag: String,
    /// CRC32 of the part, where the upload keeps one.
    pub checksum_crc32: Option<String>,
    /// CRC32C.
    pub checksum_crc32c: Option<String>,
    /// CRC64NVME.
    pub checksum_crc64nvme: Option<String>,
    /// SHA1.
    pub checksum_sha1: Option<String>,
    /// SHA256.
    pub checksum_sha256: Option<String>,
}

fn transient(operation: &'static str, bucket: &str, key: &str, message: &str) -> S3Error {
    S3Error {
        kind: S3ErrorKind::Transient,
        ..local_error(operation, bucket, key, message.to_owned())
    }
}

/// The SHA-256 (hex) and length of one version's bytes, streamed: memory stays at one
/// chunk whatever the object's size.
async fn sha256_of(
    client: &aws_sdk_s3::Client,
    endpoint: Option<&str>,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
) -> Result<(String, u64), S3Error> {
    use sha2::Digest;
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_version_id(version_id.map(str::to_owned))
        .send()
        .await
        .map_err(|e| S3Error::from_sdk(&e, "GetObject", bucket, Some(key)).at_endpoint(endpoint))?;
    let mut body = out.body;
    let mut hasher = sha2::Sha256::new();
    let mut len = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| transient("GetObject", bucket, key, &format!("body cut short: {e}")))?;
        len += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok((hex::encode(hasher.finalize()), len))
}

impl SourceClient {
    /// SHA-256 and length of one source version's bytes.
    ///
    /// # Errors
    /// The request or the body failed.
    pub async fn sha256_version(&self, bucket: &str, key: &str, version_id: &str) -> Result<(String, u64), S3Error> {
        sha256_of(self.sdk(), self.endpoint(), bucket, key, Some(version_id)).await
    }
}

impl DestClient {
    /// SHA-256 and length of one destination version's bytes.
    ///
    /// # Errors
    /// The request or the body failed.
    pub async fn sha256_version(&self, bucket: &str, key: &str, version_id: &str) -> Result<(String, u64), S3Error> {
        sha256_of(self.sdk(), self.endpoint(), bucket, key, Some(version_id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_is_encoded() {
        let cases = [
            ("plain/key.txt", "v1", "b/plain/key.txt?versionId=v1"),
            ("a b+c", "v", "b/a%20b%2Bc?versionId=v"),
            ("100%/?#=&;", "v", "b/100%25/%3F%23%3D%26%3B?versionId=v"),
            ("café", "x.y_z", "b/caf%C3%A9?versionId=x.y_z"),
            ("//lead/../x", "null", "b///lead/../x?versionId=null"),
        ];
        for (key, v, want) in cases {
            assert_eq!(copy_source("b", key, v), want, "{key}");
        }
    }

    #[test]
    fn grants_group_by_permission() {
        let grants = vec![
            Grant {
                grantee: Grantee::Id("abc".into()),
                permission: "FULL_CONTROL".into(),
            },
            Grant {
                grantee: Grantee::Uri("http://acs.amazonaws.com/groups/global/AllUsers".into()),
                permission: "READ".into(),
            },
            Grant {
                grantee: Grantee::Email("a@b.c".into()),
                permission: "READ".into(),
            },
        ];
        let h = grant_headers(&grants);
        assert_eq!(h["full"], "id=\"abc\"");
        assert_eq!(
            h["read"],
            "uri=\"http://acs.amazonaws.com/groups/global/AllUsers\", emailAddress=\"a@b.c\""
        );
    }

    #[test]
    fn tagging_is_form_encoded() {
        let tags = vec![
            ("team".to_owned(), "pay ments".to_owned()),
            ("a&b".to_owned(), "=".to_owned()),
        ];
        assert_eq!(tagging_header(&tags), "team=pay%20ments&a%26b=%3D");
    }
}
