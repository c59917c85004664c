//! `S3Error`: what went wrong with one S3 request, in words an operator can act on.
//!
//! Converts the SDK's error types once, here, so that the rest of the crate matches on
//! [`S3ErrorKind`] and codes (`ProvideErrorMetadata::code`), never on message text.

use std::fmt;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::retry::ErrorKind;

/// The broad class of a failed request, which decides the message and whether to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3ErrorKind {
    /// The bucket does not exist.
    NoSuchBucket,
    /// The key or version does not exist.
    NotFound,
    /// The credentials may not do this.
    AccessDenied,
    /// The credentials are missing, unknown or do not sign correctly.
    Credentials,
    /// The bucket lives in another region than the one the request went to.
    WrongRegion,
    /// The endpoint could not be reached (refused, DNS, TLS).
    Unreachable,
    /// No answer in time.
    Timeout,
    /// S3 asked us to slow down (503 SlowDown and its relatives).
    Throttled,
    /// A server-side error (5xx, `InternalError`), or a broken connection: worth a retry.
    Transient,
    /// The version sits in an archive tier and must be restored before a copy.
    InvalidObjectState,
    /// Anything else S3 refused.
    Other,
}

/// One failed S3 request.
#[derive(Debug, Clone)]
pub struct S3Error {
    /// The operation, as AWS names it (`ListObjectVersions`).
    pub operation: &'static str,
    /// The bucket the request named.
    pub bucket: String,
    /// The key, where the request named one.
    pub key: Option<String>,
    /// The class of failure.
    pub kind: S3ErrorKind,
    /// S3's error code (`NoSuchBucket`), or empty when there was no answer.
    pub code: String,
    /// S3's message, or the transport's.
    pub message: String,
    /// The request id S3 returned, for support cases.
    pub request_id: Option<String>,
    /// The HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// The bucket's region, when S3 said where it lives.
    pub bucket_region: Option<String>,
    /// The endpoint the request went to, for messages about reaching it.
    pub endpoint: Option<String>,
}

impl S3Error {
    /// Converts an SDK error for `operation` on `bucket` (and `key`).
    pub fn from_sdk<E>(
        err: &SdkError<E, HttpResponse>,
        operation: &'static str,
        bucket: &str,
        key: Option<&str>,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let mut out = S3Error {
            operation,
            bucket: bucket.to_owned(),
            key: key.map(str::to_owned),
            kind: S3ErrorKind::Other,
            code: String::new(),
            message: String::new(),
            request_id: None,
            status: None,
            bucket_region: None,
            endpoint: None,
        };
        if let Some(raw) = err.raw_response() {
            out.status = Some(raw.status().as_u16());
            let header = |name: &str| raw.headers().get(name).map(str::to_owned);
            out.bucket_region = header("x-amz-bucket-region");
            out.request_id = header("x-amz-request-id").or_else(|| header("x-amzn-requestid"));
        }
        match err {
            SdkError::ServiceError(service) => {
                let e = service.err();
                out.code = e.code().unwrap_or_default().to_owned();
                out.message = e.message().unwrap_or_default().to_owned();
                out.kind = classify(&out.code, out.status);
            }
            SdkError::TimeoutError(_) => {
                out.kind = S3ErrorKind::Timeout;
                out.message = "no answer within the timeout".to_owned();
            }
            SdkError::DispatchFailure(d) => {
                out.message = source_chain(err);
                out.kind = if d.is_timeout() {
                    S3ErrorKind::Timeout
                } else if out.message.contains("credential") {
                    out.message = "no usable AWS credentials (looked in the environment, profiles, web identity, container and instance metadata): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or pass --profile".to_owned();
                    S3ErrorKind::Credentials
                } else if (d.is_io() || d.as_other() == Some(ErrorKind::TransientError))
                    && !looks_unreachable(&out.message)
                {
                    // A connection dropped before the whole answer came (hyper's
                    // IncompleteMessage, which the SDK marks transient): the request may
                    // have been carried out, so it is neither a setup problem nor final.
                    S3ErrorKind::Transient
                } else {
                    S3ErrorKind::Unreachable
                };
            }
            SdkError::ResponseError(_) => {
                out.message = source_chain(err);
                out.kind = S3ErrorKind::Transient;
            }
            SdkError::ConstructionFailure(_) => {
                out.message = source_chain(err);
                out.kind = if out.message.contains("credentials") {
                    S3ErrorKind::Credentials
                } else {
                    S3ErrorKind::Other
                };
            }
            _ => {
                out.message = source_chain(err);
            }
        }
        if out.kind == S3ErrorKind::Other {
            out.kind = classify(&out.code, out.status);
        }
        out
    }

    /// Attaches the endpoint the request went to.
    pub fn at_endpoint(mut self, endpoint: Option<&str>) -> Self {
        self.endpoint = endpoint.map(str::to_owned);
        self
    }

    /// Whether repeating the request later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            S3ErrorKind::Throttled | S3ErrorKind::Transient | S3ErrorKind::Timeout
        )
    }

    /// Whether the error says the setup is wrong (bucket, credentials, region, endpoint)
    /// rather than that one request failed.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self.kind,
            S3ErrorKind::NoSuchBucket
                | S3ErrorKind::AccessDenied
                | S3ErrorKind::Credentials
                | S3ErrorKind::WrongRegion
                | S3ErrorKind::Unreachable
        )
    }
}

fn classify(code: &str, status: Option<u16>) -> S3ErrorKind {
    match code {
        "NoSuchBucket" => S3ErrorKind::NoSuchBucket,
        "NoSuchKey" | "NoSuchVersion" | "NotFound" | "NoSuchUpload" => S3ErrorKind::NotFound,
        "AccessDenied" | "AllAccessDisabled" | "AccountProblem" => S3ErrorKind::AccessDenied,
        "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken" | "InvalidToken" | "TokenRefreshRequired" => {
            S3ErrorKind::Credentials
        }
        "PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException" => {
            S3ErrorKind::WrongRegion
        }
        "SlowDown"
        | "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "RequestThrottled"
        | "ServiceUnavailable" => S3ErrorKind::Throttled,
        "InternalError" | "RequestTimeout" | "RequestTimeTooSkewed" | "OperationAborted" => S3ErrorKind::Transient,
        "InvalidObjectState" | "ObjectNotInActiveTierError" => S3ErrorKind::InvalidObjectState,
        _ => match status {
            Some(301) => S3ErrorKind::WrongRegion,
            Some(403) => S3ErrorKind::AccessDenied,
            Some(404) => S3ErrorKind::NotFound,
            Some(429 | 503) => S3ErrorKind::Throttled,
            Some(500..=599) => S3ErrorKind::Transient,
            _ => S3ErrorKind::Other,
        },
    }
}

fn looks_unreachable(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "connection refused",
        "dns",
        "failed to lookup",
        "name or service",
        "certificate",
        "tls",
        "invalid peer",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

/// The error and its sources joined, without the SDK's repetition.
fn source_chain(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = e.source();
    }
    // One line: some SDK messages list their attempts on lines of their own.
    parts.join(": ").split_whitespace().collect::<Vec<_>>().join(" ")
}

impl fmt::Display for S3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.key {
            Some(key) => format!("s3://{}/{}", self.bucket, key),
            None => format!("bucket {}", self.bucket),
        };
        match self.kind {
            S3ErrorKind::NoSuchBucket => write!(f, "bucket {} does not exist", self.bucket)?,
            S3ErrorKind::NotFound => write!(f, "{what} was not found ({})", self.operation)?,
            S3ErrorKind::AccessDenied => write!(f, "access denied to {what} ({})", self.operation)?,
            S3ErrorKind::Credentials if self.code.is_empty() => write!(f, "cannot sign requests to {what}")?,
            S3ErrorKind::Credentials => {
                write!(f, "credentials rejected for {what} ({})", self.operation)?;
                if !self.code.is_empty() {
                    write!(f, ": {}", self.code)?;
                }
            }
            S3ErrorKind::WrongRegion => match &self.bucket_region {
                Some(region) => write!(
                    f,
                    "bucket {} is in region {region}: pass that region (--region, --source-region or --dest-region)",
                    self.bucket
                )?,
                None => write!(f, "bucket {} is in another region than the one asked", self.bucket)?,
            },
            S3ErrorKind::Unreachable => {
                write!(f, "cannot reach the S3 endpoint")?;
                if let Some(e) = &self.endpoint {
                    write!(f, " {e}")?;
                }
                write!(f, " for {what}")?;
            }
            S3ErrorKind::Timeout => write!(f, "{} on {what} timed out", self.operation)?,
            _ => {
                write!(f, "{} on {what} failed", self.operation)?;
                if !self.code.is_empty() {
                    write!(f, ": {}", self.code)?;
                }
            }
        }
        if !self.message.is_empty() && self.kind != S3ErrorKind::NoSuchBucket {
            write!(f, ": {}", self.message)?;
        }
        if let Some(id) = &self.request_id {
            write!(f, " (request id {id})")?;
        }
        Ok(())
    }
}

impl std::error::Error for S3Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_codes() {
        let cases = [
            ("NoSuchBucket", None, S3ErrorKind::NoSuchBucket),
            ("SlowDown", Some(503), S3ErrorKind::Throttled),
            ("", Some(503), S3ErrorKind::Throttled),
            ("InternalError", Some(200), S3ErrorKind::Transient),
            ("", Some(403), S3ErrorKind::AccessDenied),
            ("InvalidAccessKeyId", Some(403), S3ErrorKind::Credentials),
            ("PermanentRedirect", Some(301), S3ErrorKind::WrongRegion),
            ("InvalidObjectState", Some(403), S3ErrorKind::InvalidObjectState),
            ("Weird", Some(400), S3ErrorKind::Other),
        ];
        for (code, status, kind) in cases {
            assert_eq!(classify(code, status), kind, "{code} {status:?}");
        }
    }

    #[test]
    fn classifies_dispatch_failures() {
        use aws_sdk_s3::operation::copy_object::CopyObjectError;
        use aws_smithy_runtime_api::client::result::ConnectorError;
        type Make = fn(&'static str) -> ConnectorError;
        let cases: [(Make, &str, S3ErrorKind); 5] = [
            // What hyper's IncompleteMessage becomes: the answer to a sent request was lost.
            (
                |m| ConnectorError::other(m.into(), Some(ErrorKind::TransientError)),
                "connection closed before message completed",
                S3ErrorKind::Transient,
            ),
            (
                |m| ConnectorError::io(m.into()),
                "connection reset by peer",
                S3ErrorKind::Transient,
            ),
            (
                |m| ConnectorError::io(m.into()),
                "Connection refused (os error 111)",
                S3ErrorKind::Unreachable,
            ),
            (
                |m| ConnectorError::other(m.into(), None),
                "dns error: failed to lookup address",
                S3ErrorKind::Unreachable,
            ),
            (
                |m| ConnectorError::other(m.into(), None),
                "something unrecognised",
                S3ErrorKind::Unreachable,
            ),
        ];
        for (make, message, kind) in cases {
            let err: SdkError<CopyObjectError, HttpResponse> = SdkError::dispatch_failure(make(message));
            let got = S3Error::from_sdk(&err, "CopyObject", "b", Some("k"));
            assert_eq!(got.kind, kind, "{message}: {got}");
        }
    }
}
