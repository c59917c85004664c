//! A recording, fault-injecting reverse HTTP proxy in front of the local S3 server.
//!
//! The tool under test gets the proxy's endpoint; the proxy records every request (method,
//! bucket, decoded key, raw query, selected headers, the S3 operation and the answer),
//! and on request answers SlowDown above K requests in flight, fails, delays (before or
//! after forwarding) or resets chosen requests, cuts their response bodies short, fakes S3's wrong-region redirect, adds the header moto wants on
//! copies into an Object Lock bucket, or gives HEAD with `partNumber` the object's
//! metadata as S3 does. It runs on a runtime thread of its own, so sync and
//! async tests can use it alike. Assertions stay in the tests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use percent_encoding::percent_decode_str;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;

/// An S3 operation, as the proxy recognises it from method, query and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum S3Op {
    ListBuckets,
    CreateBucket,
    DeleteBucket,
    HeadBucket,
    GetBucketLocation,
    GetBucketVersioning,
    PutBucketVersioning,
    GetBucketOwnershipControls,
    PutBucketOwnershipControls,
    GetBucketEncryption,
    PutBucketEncryption,
    GetObjectLockConfiguration,
    PutObjectLockConfiguration,
    GetBucketReplication,
    PutBucketReplication,
    GetBucketAcl,
    PutBucketAcl,
    GetBucketPolicy,
    PutBucketPolicy,
    GetBucketTagging,
    PutBucketTagging,
    OtherBucketRead,
    OtherBucketWrite,
    ListObjects,
    ListObjectsV2,
    ListObjectVersions,
    ListMultipartUploads,
    DeleteObjects,
    GetObject,
    HeadObject,
    GetObjectAcl,
    PutObjectAcl,
    GetObjectTagging,
    PutObjectTagging,
    DeleteObjectTagging,
    GetObjectAttributes,
    GetObjectRetention,
    PutObjectRetention,
    GetObjectLegalHold,
    PutObjectLegalHold,
    PutObject,
    CopyObject,
    DeleteObject,
    RestoreObject,
    SelectObjectContent,
    CreateMultipartUpload,
    UploadPart,
    UploadPartCopy,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListParts,
    Unknown,
}

impl S3Op {
    /// Whether the operation only reads (Get*, Head*, List*): everything else writes.
    pub fn is_read(self) -> bool {
        use S3Op::*;
        matches!(
            self,
            ListBuckets
                | HeadBucket
                | GetBucketLocation
                | GetBucketVersioning
                | GetBucketOwnershipControls
                | GetBucketEncryption
                | GetObjectLockConfiguration
                | GetBucketReplication
                | GetBucketAcl
                | GetBucketPolicy
                | GetBucketTagging
                | OtherBucketRead
                | ListObjects
                | ListObjectsV2
                | ListObjectVersions
                | ListMultipartUploads
                | GetObject
                | HeadObject
                | GetObjectAcl
                | GetObjectTagging
                | GetObjectAttributes
                | GetObjectRetention
                | GetObjectLegalHold
                | SelectObjectContent
                | ListParts
        )
    }

    /// Classifies a request. `query` holds the decoded query parameter names.
    pub fn classify(
        method: &Method,
        bucket: Option<&str>,
        key: Option<&str>,
        query: &HashSet<String>,
        has_copy_source: bool,
    ) -> S3Op {
        use S3Op::*;
        let q = |name: &str| query.contains(name);
        let Some(_) = bucket else {
            return if *method == Method::GET { ListBuckets } else { Unknown };
        };
        if key.is_none() {
            return match *method {
                Method::GET => {
                    if q("versions") {
                        ListObjectVersions
                    } else if q("uploads") {
                        ListMultipartUploads
                    } else if q("location") {
                        GetBucketLocation
                    } else if q("versioning") {
                        GetBucketVersioning
                    } else if q("ownershipControls") {
                        GetBucketOwnershipControls
                    } else if q("encryption") {
                        GetBucketEncryption
                    } else if q("object-lock") {
                        GetObjectLockConfiguration
                    } else if q("replication") {
                        GetBucketReplication
                    } else if q("acl") {
                        GetBucketAcl
                    } else if q("policy") {
                        GetBucketPolicy
                    } else if q("tagging") {
                        GetBucketTagging
                    } else if q("list-type") {
                        ListObjectsV2
                    } else if query.iter().any(|n| is_bucket_subresource(n)) {
                        OtherBucketRead
                    } else {
                        ListObjects
                    }
                }
                Method::HEAD => HeadBucket,
                Method::PUT => {
                    if q("versioning") {
                        PutBucketVersioning
                    } else if q("ownershipControls") {
                        PutBucketOwnershipControls
                    } else if q("encryption") {
                        PutBucketEncryption
                    } else if q("object-lock") {
                        PutObjectLockConfiguration
                    } else if q("replication") {
                        PutBucketReplication
                    } else if q("acl") {
                        PutBucketAcl
                    } else if q("policy") {
                        PutBucketPolicy
                    } else if q("tagging") {
                        PutBucketTagging
                    } else if query.iter().any(|n| is_bucket_subresource(n)) {
                        OtherBucketWrite
                    } else {
                        CreateBucket
                    }
                }
                Method::POST if q("delete") => DeleteObjects,
                Method::DELETE if query.iter().any(|n| is_bucket_subresource(n)) => OtherBucketWrite,
                Method::DELETE => DeleteBucket,
                _ => OtherBucketWrite,
            };
        }
        match *method {
            Method::GET => {
                if q("uploadId") {
                    ListParts
                } else if q("acl") {
                    GetObjectAcl
                } else if q("tagging") {
                    GetObjectTagging
                } else if q("attributes") {
                    GetObjectAttributes
                } else if q("retention") {
                    GetObjectRetention
                } else if q("legal-hold") {
                    GetObjectLegalHold
                } else {
                    GetObject
                }
            }
            Method::HEAD => HeadObject,
            Method::PUT => {
                if q("partNumber") && q("uploadId") {
                    if has_copy_source { UploadPartCopy } else { UploadPart }
                } else if q("acl") {
                    PutObjectAcl
                } else if q("tagging") {
                    PutObjectTagging
                } else if q("retention") {
                    PutObjectRetention
                } else if q("legal-hold") {
                    PutObjectLegalHold
                } else if has_copy_source {
                    CopyObject
                } else {
                    PutObject
                }
            }
            Method::POST => {
                if q("uploads") {
                    CreateMultipartUpload
                } else if q("uploadId") {
                    CompleteMultipartUpload
                } else if q("restore") {
                    RestoreObject
                } else if q("select") {
                    SelectObjectContent
                } else {
                    Unknown
                }
            }
            Method::DELETE => {
                if q("uploadId") {
                    AbortMultipartUpload
                } else if q("tagging") {
                    DeleteObjectTagging
                } else {
                    DeleteObject
                }
            }
            _ => Unknown,
        }
    }
}

fn is_bucket_subresource(name: &str) -> bool {
    !matches!(
        name,
        "prefix"
            | "delimiter"
            | "marker"
            | "max-keys"
            | "encoding-type"
            | "continuation-token"
            | "start-after"
            | "fetch-owner"
            | "x-id"
    ) && !name.starts_with("X-Amz-")
}

/// Request headers the proxy records (names in lower case). Credentials never are.
fn is_recorded_header(name: &str) -> bool {
    (name.starts_with("x-amz-")
        && !matches!(
            name,
            "x-amz-date" | "x-amz-content-sha256" | "x-amz-security-token" | "x-amz-user-agent"
        ))
        || matches!(
            name,
            "content-type"
                | "content-length"
                | "content-md5"
                | "range"
                | "if-match"
                | "if-none-match"
                | "cache-control"
                | "content-disposition"
                | "content-encoding"
                | "content-language"
                | "expires"
        )
}

/// One request as the proxy saw it (headers as the client sent them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Arrival order across all requests, from 0.
    pub seq: usize,
    /// Arrival order among requests of the same operation, from 0 ("the third
    /// UploadPartCopy" has `op == UploadPartCopy && op_seq == 2`).
    pub op_seq: usize,
    /// The S3 operation.
    pub op: S3Op,
    /// The HTTP method.
    pub method: Method,
    /// The bucket (path style), percent-decoded.
    pub bucket: Option<String>,
    /// The key, percent-decoded, verbatim (`None` for bucket-level requests).
    pub key: Option<String>,
    /// The raw query string, as sent.
    pub query: String,
    /// Selected request headers, lower-case names, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The region of the request's SigV4 credential scope.
    pub region: Option<String>,
    /// The status returned to the client; `None` while in flight or when the connection was
    /// dropped instead.
    pub status: Option<u16>,
    /// Whether the proxy itself answered (throttle, fault, redirect, reset) instead of the
    /// server, or passed the server's answer on cut short ([`Fault::TruncateBody`]).
    pub from_proxy: bool,
}

impl RecordedRequest {
    /// A recorded header's value (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// A query parameter, percent-decoded (`Some("")` for a bare name such as `versions`).
    pub fn query_param(&self, name: &str) -> Option<String> {
        parse_query(&self.query)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The `versionId` query parameter.
    pub fn version_id(&self) -> Option<String> {
        self.query_param("versionId")
    }

    /// `x-amz-copy-source` split into bucket, key and version id, each decoded. The split
    /// happens on the raw header, so an unencoded `?` in a key shows up as a wrong key.
    pub fn copy_source(&self) -> Option<(String, String, Option<String>)> {
        let raw = self.header("x-amz-copy-source")?;
        let raw = raw.strip_prefix('/').unwrap_or(raw);
        let (path, query) = match raw.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (raw, None),
        };
        let (bucket, key) = path.split_once('/')?;
        let version_id = query.and_then(|q| {
            parse_query(q)
                .into_iter()
                .find(|(n, _)| n == "versionId")
                .map(|(_, v)| v)
        });
        Some((decode(bucket), decode(key), version_id))
    }

    /// Whether the request writes (anything but Get*, Head*, List*).
    pub fn is_write(&self) -> bool {
        !self.op.is_read()
    }
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(n), decode(&v.replace('+', "%20")))
        })
        .collect()
}

/// What to do with one request, as a fault hook decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Pass it to the server.
    Forward,
    /// Answer it here with this status and body (an S3 XML error, or a 200 with an error in
    /// the body), without forwarding.
    Respond {
        /// HTTP status.
        status: u16,
        /// Response body (use [`s3_error_xml`]).
        body: String,
    },
    /// Wait this long, then go on as [`Fault::Forward`]. A client that gives up meanwhile
    /// closes its connection, and the request is dropped unsent: the server never sees it.
    Delay(Duration),
    /// Forward, let the server answer, then hold its answer this long before passing it on:
    /// a client that gives up meanwhile never learns that the server did the work (the
    /// timeout flavour of [`Fault::ForwardThenReset`]).
    DelayResponse(Duration),
    /// Close the connection without an answer; the server never sees the request.
    ResetConnection,
    /// Forward, let the server finish, then close the connection without an answer: the
    /// write happened but the client cannot know (S3-NOTES 31).
    ForwardThenReset,
    /// Forward, pass on the server's status and headers (its Content-Length included) and
    /// only the first N bytes of its body, then close the connection: a response body cut
    /// short. The server did the work; the client gets an incomplete answer. A body of N
    /// bytes or fewer (a HEAD's, an empty one) goes through whole.
    TruncateBody(usize),
}

impl Fault {
    /// A 503 SlowDown as S3 sends it.
    pub fn slow_down() -> Self {
        Self::error(503, "SlowDown", "Please reduce your request rate.")
    }

    /// A 500 InternalError as S3 sends it.
    pub fn internal_error() -> Self {
        Self::error(
            500,
            "InternalError",
            "We encountered an internal error. Please try again.",
        )
    }

    /// An error answer with S3's XML body.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Self::Respond {
            status,
            body: s3_error_xml(code, message),
        }
    }
}

/// An S3 error document.
pub fn s3_error_xml(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>PROXY0000000000</RequestId>\
         <HostId>s3-failback-test-proxy</HostId></Error>"
    )
}

type Hook = Arc<dyn Fn(&RecordedRequest) -> Fault + Send + Sync>;

#[derive(Default)]
struct Settings {
    throttle_above: Option<usize>,
    hook: Option<Hook>,
    checksum_header: HashSet<(String, S3Op)>,
    bucket_regions: HashMap<String, String>,
    part_head_metadata: HashSet<String>,
    upload_initiated: HashSet<String>,
}

#[derive(Default)]
struct Log {
    requests: Vec<RecordedRequest>,
    op_counts: HashMap<S3Op, usize>,
}

#[derive(Default)]
struct Shared {
    log: Mutex<Log>,
    settings: Mutex<Settings>,
    in_flight: AtomicUsize,
    forwarded_in_flight: AtomicUsize,
    max_forwarded_in_flight: AtomicUsize,
    /// Upload id → when the proxy saw CreateMultipartUpload answered, as S3 writes it.
    upload_initiated: Mutex<HashMap<String, String>>,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn settings(&self) -> MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finish(&self, seq: usize, status: Option<u16>, from_proxy: bool) {
        if let Some(r) = self.log().requests.get_mut(seq) {
            r.status = status;
            r.from_proxy = from_proxy;
        }
    }
}

/// Counts a request in flight until dropped (with the response body, once it is sent).
struct InFlight {
    shared: Arc<Shared>,
    forwarded: bool,
}

impl InFlight {
    fn enter(shared: &Arc<Shared>) -> (Self, usize) {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        (
            Self {
                shared: shared.clone(),
                forwarded: false,
            },
            now,
        )
    }

    fn forwarding(&mut self) {
        self.forwarded = true;
        let now = self.shared.forwarded_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.shared.max_forwarded_in_flight.fetch_max(now, Ordering::SeqCst);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.forwarded {
            self.shared.forwarded_in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The response body handed to the client: the server's body, streamed, holding the
/// in-flight count until it is sent. Body faults (truncation) belong here.
struct GuardedBody {
    inner: ProxyBody,
    _guard: Option<InFlight>,
    /// [`Fault::TruncateBody`]: the bytes still to pass on before the body is cut.
    truncate_left: Option<usize>,
    /// The body was cut: once this timer fires the next poll fails, which closes the
    /// connection. hyper sends what it buffered (the head and the first N bytes) only when
    /// the body has nothing ready, and drops the buffer on an error: the pause lets it flush.
    cut: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(left) = this.truncate_left else {
            return Pin::new(&mut this.inner).poll_frame(cx);
        };
        if let Some(pause) = this.cut.as_mut() {
            std::task::ready!(pause.as_mut().poll(cx));
            // An error makes hyper close the connection short of the Content-Length it sent.
            return Poll::Ready(Some(Err("response body cut short by the test proxy".into())));
        }
        let start_cut = |this: &mut Self, cx: &mut Context<'_>| {
            let mut pause = Box::pin(tokio::time::sleep(Duration::from_millis(20)));
            // Registers the waker; the timer has just started.
            let _ = pause.as_mut().poll(cx);
            this.cut = Some(pause);
        };
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                // Exactly N bytes sent and more to come: cut here.
                Ok(_) if left == 0 => {
                    start_cut(this, cx);
                    Poll::Pending
                }
                Ok(mut data) => {
                    if data.len() > left {
                        data.truncate(left);
                        start_cut(this, cx);
                        this.truncate_left = Some(0);
                    } else {
                        this.truncate_left = Some(left - data.len());
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.cut.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A running proxy; dropping it stops it.
pub struct Proxy {
    addr: SocketAddr,
    upstream: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("upstream", &self.upstream)
            .finish()
    }
}

impl Proxy {
    /// A proxy in front of the shared local server.
    pub fn start() -> Self {
        Self::start_in_front_of(super::endpoint())
    }

    /// A proxy in front of `upstream` (`http://127.0.0.1:PORT`).
    ///
    /// # Panics
    /// When no port can be bound or the runtime cannot start.
    pub fn start_in_front_of(upstream: &str) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy port");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared::default());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let thread = {
            let shared = shared.clone();
            let upstream = upstream.clone();
            std::thread::Builder::new()
                .name(format!("s3-proxy-{}", addr.port()))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("proxy runtime");
                    runtime.block_on(serve(listener, upstream, shared, rx));
                })
                .expect("proxy thread")
        };
        Self {
            addr,
            upstream,
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`: give it to the tool as `--endpoint-url`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.log().requests.clone()
    }

    /// How many requests arrived so far (a mark for [`Proxy::requests_since`]).
    pub fn mark(&self) -> usize {
        self.shared.log().requests.len()
    }

    /// The requests that arrived at or after `mark`.
    pub fn requests_since(&self, mark: usize) -> Vec<RecordedRequest> {
        self.shared.log().requests[mark..].to_vec()
    }

    /// The operations so far, in arrival order.
    pub fn ops(&self) -> Vec<S3Op> {
        self.shared.log().requests.iter().map(|r| r.op).collect()
    }

    /// The requests of one operation.
    pub fn requests_of(&self, op: S3Op) -> Vec<RecordedRequest> {
        self.shared
            .log()
            .requests
            .iter()
            .filter(|r| r.op == op)
            .cloned()
            .collect()
    }

    /// How many requests of each operation arrived.
    pub fn op_counts(&self) -> BTreeMap<S3Op, usize> {
        self.shared.log().op_counts.iter().map(|(op, n)| (*op, *n)).collect()
    }

    /// Every request that is not a read (Get*, Head*, List*) sent to `bucket`.
    pub fn writes_to(&self, bucket: &str) -> Vec<RecordedRequest> {
        self.shared
            .log()
            .requests
            .iter()
            .filter(|r| r.is_write() && r.bucket.as_deref() == Some(bucket))
            .cloned()
            .collect()
    }

    /// The most requests that were forwarded to the server at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_forwarded_in_flight.load(Ordering::SeqCst)
    }

    /// Answers 503 SlowDown to every request that arrives while more than `k` requests are
    /// in flight (`None`: never). A request is in flight until its response body is sent.
    pub fn set_throttle_above(&self, k: Option<usize>) {
        self.shared.settings().throttle_above = k;
    }

    /// Lets `hook` decide for each request that the redirect and the throttle let through. The
    /// hook runs on the proxy's thread: keep it quick, keep state in atomics or a mutex.
    pub fn set_fault_hook(&self, hook: impl Fn(&RecordedRequest) -> Fault + Send + Sync + 'static) {
        self.shared.settings().hook = Some(Arc::new(hook));
    }

    /// Removes the fault hook.
    pub fn clear_fault_hook(&self) {
        self.shared.settings().hook = None;
    }

    /// Adds `x-amz-sdk-checksum-algorithm: CRC32` to CopyObject requests into `bucket`, which
    /// moto requires for copies into an Object Lock bucket (S3-NOTES 46).
    pub fn add_copy_checksum_header(&self, bucket: &str) {
        self.add_checksum_header(bucket, S3Op::CopyObject);
    }

    /// Adds `x-amz-sdk-checksum-algorithm: CRC32` to requests of `op` into `bucket` (moto also
    /// wants it on PutObjectAcl and PutObjectTagging in a bucket with default retention).
    pub fn add_checksum_header(&self, bucket: &str, op: S3Op) {
        self.shared.settings().checksum_header.insert((bucket.to_owned(), op));
    }

    /// Makes HEAD with `partNumber` on `bucket` answer with the object's metadata, as S3
    /// does (a part HEAD is a ranged HEAD: only the length differs from the whole object's
    /// answer). moto answers such a HEAD from the part alone: Content-Type
    /// `binary/octet-stream`, no `x-amz-meta-*`, no lock or encryption headers. The proxy
    /// HEADs the whole version as well and copies its metadata headers onto the answer.
    pub fn emulate_part_head_metadata(&self, bucket: &str) {
        self.shared.settings().part_head_metadata.insert(bucket.to_owned());
    }

    /// Makes ListMultipartUploads on `bucket` report when each upload was initiated, as S3
    /// does: moto 5.1.22 answers the same fixed `Initiated` (2010-11-10T20:48:33.000Z) for
    /// every upload, so a tool that aborts only the uploads started since its run began
    /// finds none on moto. The proxy notes the time it sees each CreateMultipartUpload
    /// answered (before any fault that hides the answer from the client) and writes it into
    /// the listing.
    pub fn emulate_upload_initiated(&self, bucket: &str) {
        self.shared.settings().upload_initiated.insert(bucket.to_owned());
    }

    /// Makes `bucket` live in `region`: requests for it signed for another region get S3's
    /// 301 PermanentRedirect with `x-amz-bucket-region` (moto never answers that itself).
    pub fn set_bucket_region(&self, bucket: &str, region: &str) {
        self.shared
            .settings()
            .bucket_regions
            .insert(bucket.to_owned(), region.to_owned());
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    upstream: String,
    shared: Arc<Shared>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    // moto closes every connection after one response: pooling would only hand out dead ones.
    let client: HttpClient<HttpConnector, ProxyBody> = HttpClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let upstream: Arc<str> = upstream.into();
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let shared = shared.clone();
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| handle(req, shared.clone(), client.clone(), upstream.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The request line split into bucket and key (path style only).
fn bucket_and_key(path: &str) -> (Option<String>, Option<String>) {
    let path = path.strip_prefix('/').unwrap_or(path);
    if path.is_empty() {
        return (None, None);
    }
    match path.split_once('/') {
        None => (Some(decode(path)), None),
        Some((bucket, "")) => (Some(decode(bucket)), None),
        Some((bucket, key)) => (Some(decode(bucket)), Some(decode(key))),
    }
}

fn signing_region(req: &Request<Incoming>) -> Option<String> {
    let credential = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("Credential=").nth(1))
        .map(str::to_owned)
        .or_else(|| {
            parse_query(req.uri().query().unwrap_or(""))
                .into_iter()
                .find(|(n, _)| n == "X-Amz-Credential")
                .map(|(_, v)| v)
        })?;
    credential.split('/').nth(2).map(str::to_owned)
}

fn record(req: &Request<Incoming>, shared: &Shared) -> RecordedRequest {
    let (bucket, key) = bucket_and_key(req.uri().path());
    let query = req.uri().query().unwrap_or("").to_owned();
    let names: HashSet<String> = parse_query(&query).into_iter().map(|(n, _)| n).collect();
    let has_copy_source = req.headers().contains_key("x-amz-copy-source");
    let op = S3Op::classify(req.method(), bucket.as_deref(), key.as_deref(), &names, has_copy_source);
    let headers = req
        .headers()
        .iter()
        .filter(|(n, _)| is_recorded_header(n.as_str()))
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut log = shared.log();
    let counter = log.op_counts.entry(op).or_insert(0);
    let op_seq = *counter;
    *counter += 1;
    let recorded = RecordedRequest {
        seq: log.requests.len(),
        op_seq,
        op,
        method: req.method().clone(),
        bucket,
        key,
        query,
        headers,
        region: signing_region(req),
        status: None,
        from_proxy: false,
    };
    log.requests.push(recorded.clone());
    recorded
}

fn respond_here(status: u16, body: String, head: bool) -> Response<GuardedBody> {
    let body: ProxyBody = if head || body.is_empty() {
        Empty::new().map_err(|e: Infallible| match e {}).boxed()
    } else {
        Full::new(Bytes::from(body)).map_err(|e: Infallible| match e {}).boxed()
    };
    let mut response = Response::new(GuardedBody {
        inner: body,
        _guard: None,
        truncate_left: None,
        cut: None,
    });
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/xml"));
    response
        .headers_mut()
        .insert("x-amz-request-id", HeaderValue::from_static("PROXY0000000000"));
    response
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
];

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    client: HttpClient<HttpConnector, ProxyBody>,
    upstream: Arc<str>,
) -> Result<Response<GuardedBody>, BoxError> {
    let recorded = record(&req, &shared);
    let seq = recorded.seq;
    let head = req.method() == Method::HEAD;
    let (mut guard, _) = InFlight::enter(&shared);

    let (redirect, hook, add_checksum, part_head, upload_times) = {
        let settings = shared.settings();
        let redirect = recorded.bucket.as_ref().and_then(|b| {
            let region = settings.bucket_regions.get(b)?;
            let signed = recorded.region.as_deref()?;
            (signed != region).then(|| region.clone())
        });
        let add_checksum = recorded
            .bucket
            .as_ref()
            .is_some_and(|b| settings.checksum_header.contains(&(b.clone(), recorded.op)));
        let part_head = recorded.op == S3Op::HeadObject
            && recorded.query_param("partNumber").is_some()
            && recorded
                .bucket
                .as_ref()
                .is_some_and(|b| settings.part_head_metadata.contains(b));
        let upload_times = matches!(recorded.op, S3Op::CreateMultipartUpload | S3Op::ListMultipartUploads)
            && recorded
                .bucket
                .as_ref()
                .is_some_and(|b| settings.upload_initiated.contains(b));
        (redirect, settings.hook.clone(), add_checksum, part_head, upload_times)
    };

    if let Some(region) = redirect {
        let mut response = respond_here(
            301,
            s3_error_xml(
                "PermanentRedirect",
                "The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint.",
            ),
            head,
        );
        response.headers_mut().insert(
            "x-amz-bucket-region",
            HeaderValue::from_str(&region).expect("region is a header value"),
        );
        shared.finish(seq, Some(301), true);
        return Ok(response);
    }

    let throttle_above = shared.settings().throttle_above;
    if let Some(k) = throttle_above
        && shared.in_flight.load(Ordering::SeqCst) > k
    {
        let Fault::Respond { status, body } = Fault::slow_down() else {
            unreachable!("slow_down is a response")
        };
        shared.finish(seq, Some(status), true);
        return Ok(respond_here(status, body, head));
    }

    let fault = hook.map(|h| h(&recorded)).unwrap_or(Fault::Forward);
    let mut truncate_after = None;
    let mut delay_response = None;
    let reset_after = match fault {
        Fault::Forward => false,
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            false
        }
        Fault::TruncateBody(n) => {
            truncate_after = Some(n);
            false
        }
        Fault::DelayResponse(d) => {
            delay_response = Some(d);
            false
        }
        Fault::Respond { status, body } => {
            shared.finish(seq, Some(status), true);
            return Ok(respond_here(status, body, head));
        }
        Fault::ResetConnection => {
            shared.finish(seq, None, true);
            return Err("connection reset by the test proxy".into());
        }
        Fault::ForwardThenReset => true,
    };

    // Forward, streaming the request body through.
    let (parts, body) = req.into_parts();
    let whole_head = part_head.then(|| (parts.uri.clone(), parts.headers.clone()));
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let uri: hyper::Uri = format!("{upstream}{path_and_query}")
        .parse()
        .map_err(|e| format!("upstream uri: {e}"))?;
    let mut forward = Request::builder().method(parts.method).uri(uri);
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            forward = forward.header(name, value);
        }
    }
    if add_checksum {
        forward = forward.header(
            HeaderName::from_static("x-amz-sdk-checksum-algorithm"),
            HeaderValue::from_static("CRC32"),
        );
    }
    let forward = forward
        .body(body.map_err(BoxError::from).boxed())
        .map_err(|e| format!("forward request: {e}"))?;
    guard.forwarding();
    let exchange = {
        let (client, shared, op) = (client.clone(), shared.clone(), recorded.op);
        async move {
            let response = client
                .request(forward)
                .await
                .map_err(|e| BoxError::from(format!("upstream request failed: {e}")))?
                .map(|b| b.map_err(BoxError::from).boxed());
            // Before any fault that hides the answer: an upload the client never hears of
            // exists all the same, and was initiated now.
            if upload_times && response.status().is_success() {
                rewrite_upload_times(response, op, &shared).await
            } else {
                Ok(response)
            }
        }
    };
    let result = if upload_times {
        // Runs to its end even when the client gives up first (a slow server, a timeout):
        // the server creates the upload all the same, and its time must be known.
        tokio::spawn(exchange)
            .await
            .unwrap_or_else(|e| Err(format!("upstream task: {e}").into()))
    } else {
        exchange.await
    };
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            shared.finish(seq, None, true);
            return Err(e);
        }
    };
    if let Some(d) = delay_response {
        // The server has answered (moto answers once the work is done); the client waits.
        tokio::time::sleep(d).await;
    }
    if reset_after {
        // Let the server finish its answer, then drop it and the connection.
        let _ = response.into_body().collect().await;
        shared.finish(seq, None, true);
        return Err("connection reset by the test proxy after forwarding".into());
    }
    let status = response.status().as_u16();
    let (mut parts, body) = response.into_parts();
    for name in HOP_BY_HOP {
        parts.headers.remove(name);
    }
    if let Some((uri, headers)) = whole_head
        && parts.status.is_success()
    {
        let object = match head_whole_object(&client, &upstream, &uri, &headers).await {
            Ok(h) => h,
            Err(e) => {
                shared.finish(seq, None, true);
                return Err(e);
            }
        };
        for name in object
            .keys()
            .chain(parts.headers.keys())
            .cloned()
            .collect::<HashSet<_>>()
        {
            if is_object_metadata_header(name.as_str()) {
                parts.headers.remove(&name);
                for value in object.get_all(&name) {
                    parts.headers.append(name.clone(), value.clone());
                }
            }
        }
    }
    // A cut body counts as the proxy's answer: the server's was not passed on whole.
    shared.finish(seq, Some(status), truncate_after.is_some());
    Ok(Response::from_parts(
        parts,
        GuardedBody {
            inner: body,
            _guard: Some(guard),
            truncate_left: truncate_after,
            cut: None,
        },
    ))
}

/// The text between the first `<tag>` and `</tag>` of `xml`, with where it starts and ends.
fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<(usize, usize, &'a str)> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some((start, end, &xml[start..end]))
}

/// [`Proxy::emulate_upload_initiated`]: notes the upload id a CreateMultipartUpload answer
/// holds with the time now, or writes the noted times into a ListMultipartUploads answer.
async fn rewrite_upload_times(
    response: Response<ProxyBody>,
    op: S3Op,
    shared: &Shared,
) -> Result<Response<ProxyBody>, BoxError> {
    let (mut parts, body) = response.into_parts();
    let bytes = body.collect().await?.to_bytes();
    let mut xml = String::from_utf8_lossy(&bytes).into_owned();
    let mut times = shared.upload_initiated.lock().unwrap_or_else(|e| e.into_inner());
    if op == S3Op::CreateMultipartUpload {
        if let Some((_, _, id)) = xml_text(&xml, "UploadId") {
            let now = jiff::Timestamp::now();
            let stamp = format!("{}.{:03}Z", now.strftime("%Y-%m-%dT%H:%M:%S"), now.subsec_millisecond());
            times.insert(id.to_owned(), stamp);
        }
    } else {
        let mut out = String::with_capacity(xml.len());
        let mut rest = xml.as_str();
        while let Some(at) = rest.find("<Upload>") {
            let end = rest[at..].find("</Upload>").map_or(rest.len(), |e| at + e);
            let (before, upload, after) = (&rest[..at], &rest[at..end], &rest[end..]);
            out.push_str(before);
            let time = xml_text(upload, "UploadId").and_then(|(_, _, id)| times.get(id));
            match (time, xml_text(upload, "Initiated")) {
                (Some(time), Some((start, stop, _))) => {
                    out.push_str(&upload[..start]);
                    out.push_str(time);
                    out.push_str(&upload[stop..]);
                }
                _ => out.push_str(upload),
            }
            rest = after;
        }
        out.push_str(rest);
        xml = out;
    }
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    Ok(Response::from_parts(
        parts,
        Full::new(Bytes::from(xml)).map_err(|e: Infallible| match e {}).boxed(),
    ))
}

/// The headers of a HEAD answer that describe the object rather than the part or the
/// request: what S3 repeats on a HEAD with `partNumber`.
fn is_object_metadata_header(name: &str) -> bool {
    matches!(
        name,
        "content-type"
            | "cache-control"
            | "content-disposition"
            | "content-encoding"
            | "content-language"
            | "expires"
            | "x-amz-website-redirect-location"
            | "x-amz-storage-class"
            | "x-amz-tagging-count"
    ) || name.starts_with("x-amz-meta-")
        || name.starts_with("x-amz-server-side-encryption")
        || name.starts_with("x-amz-object-lock-")
}

/// HEADs the whole version a part HEAD named (the same request without `partNumber`;
/// moto checks no signatures) and returns its headers.
async fn head_whole_object(
    client: &HttpClient<HttpConnector, ProxyBody>,
    upstream: &str,
    uri: &hyper::Uri,
    headers: &hyper::HeaderMap,
) -> Result<hyper::HeaderMap, BoxError> {
    let query: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && p.split('=').next() != Some("partNumber"))
        .collect();
    let target = if query.is_empty() {
        format!("{upstream}{}", uri.path())
    } else {
        format!("{upstream}{}?{}", uri.path(), query.join("&"))
    };
    let mut request = Request::builder().method(Method::HEAD).uri(target);
    for (name, value) in headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            request = request.header(name, value);
        }
    }
    let request = request
        .body(Empty::new().map_err(|e: Infallible| match e {}).boxed())
        .map_err(|e| format!("whole-object HEAD: {e}"))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("whole-object HEAD failed: {e}"))?;
    let (parts, body) = response.into_parts();
    let _ = body.collect().await;
    Ok(parts.headers)
}
