//! A small S3 Batch Operations emulator: no local server implements S3 Control's job API.
//!
//! It answers CreateJob (`POST /v20180820/jobs`), DescribeJob (`GET /v20180820/jobs/ID`)
//! and ListJobs (`GET /v20180820/jobs`) in S3 Control's XML, honours `ClientRequestToken`
//! (the same token answers with the job it created), and runs an S3PutObjectCopy job
//! against the local S3 server: it reads the CSV manifest (checking its ETag), copies the
//! tasks in a shuffled order, fails the tasks a test asks it to, and writes the completion
//! report in the documented layout (`<prefix>/job-<id>/manifest.json` and
//! `<prefix>/job-<id>/results/<name>.csv`).
//!
//! Where real S3 differs: jobs go New → Active → Complete here without Preparing/Ready;
//! the report's result files are split only into succeeded and failed ones; a job whose
//! failure is asked for fails at once (S3 fails it after its failure threshold, 50% of at
//! least 1,000 tasks); signatures are not checked (the SDK signs as for S3 Control; the
//! `x-amz-account-id` header is required as S3 requires it); no IAM role is assumed.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::types::{MetadataDirective, ServerSideEncryption, StorageClass, TaggingDirective};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use rand::seq::SliceRandom;

/// The account the emulator answers for (STS GetCallerIdentity gives it; S3 Control
/// requests must name it in `x-amz-account-id`).
pub const EMULATED_ACCOUNT: &str = "123456789012";

/// How the emulator treats the jobs it is given.
#[derive(Debug, Clone, Default)]
pub struct EmulatorOpts {
    /// Keys whose tasks fail (403 AccessDenied in the report).
    pub fail_keys: HashSet<String>,
    /// Fail every job outright (status Failed, as after a permission error).
    pub fail_jobs: bool,
    /// Time a job stays New before it runs.
    pub start_delay: Duration,
    /// Time between creating a job and answering CreateJob (a client killed meanwhile
    /// never learns the job id).
    pub answer_delay: Duration,
}

/// One job the emulator knows.
#[derive(Debug, Clone)]
pub struct EmulatedJob {
    /// The job id.
    pub id: String,
    /// The ClientRequestToken it was created with.
    pub token: String,
    /// `New`, `Active`, `Complete` or `Failed`.
    pub status: String,
    /// Tasks in the manifest.
    pub total: u64,
    /// Tasks that succeeded.
    pub succeeded: u64,
    /// Tasks that failed.
    pub failed: u64,
    /// Failure reason of a failed job.
    pub failure: Option<String>,
    /// Creation time.
    pub created: jiff::Timestamp,
    /// The request's description.
    pub description: String,
    /// The request's storage class.
    pub storage_class: String,
}

#[derive(Default)]
struct State {
    jobs: BTreeMap<String, EmulatedJob>,
    create_requests: usize,
    create_bodies: Vec<String>,
}

/// The running emulator.
pub struct BatchEmulator {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _task: tokio::task::JoinHandle<()>,
}

impl BatchEmulator {
    /// Starts the emulator on a free port of 127.0.0.1, copying through `s3_endpoint`.
    pub async fn start(s3_endpoint: &str, opts: EmulatorOpts) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(Mutex::new(State::default()));
        let s3 = super::client_for(s3_endpoint, super::PRIMARY_REGION);
        let shared = Arc::new((state.clone(), s3, opts));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(req, shared).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Self {
            addr,
            state,
            _task: task,
        }
    }

    /// The URL to pass as `--batch-endpoint-url`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every job, oldest id first.
    pub fn jobs(&self) -> Vec<EmulatedJob> {
        let mut jobs: Vec<EmulatedJob> = self.state.lock().unwrap().jobs.values().cloned().collect();
        jobs.sort_by_key(|j| j.created);
        jobs
    }

    /// The XML bodies of the CreateJob requests received, in order.
    pub fn create_bodies(&self) -> Vec<String> {
        self.state.lock().unwrap().create_bodies.clone()
    }

    /// CreateJob requests received (a repeated token counts too).
    pub fn create_requests(&self) -> usize {
        self.state.lock().unwrap().create_requests
    }
}

type Shared = Arc<(Arc<Mutex<State>>, aws_sdk_s3::Client, EmulatorOpts)>;

fn xml(status: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .header("x-amz-request-id", "emulator")
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

fn error(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    xml(
        status,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ErrorResponse><Error><Code>{code}</Code><Message>{message}</Message></Error><RequestId>emulator</RequestId></ErrorResponse>"
        ),
    )
}

/// The text of the first `<name>` element after `after` (a crude reader for the
/// request's fixed shape).
fn tag<'a>(body: &'a str, name: &str, after: &str) -> Option<&'a str> {
    let start = body.find(after)?;
    let body = &body[start..];
    let open = format!("<{name}>");
    let i = body.find(&open)? + open.len();
    let j = body[i..].find(&format!("</{name}>"))? + i;
    Some(&body[i..j])
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn arn_object(arn: &str) -> Option<(String, String)> {
    let rest = arn.strip_prefix("arn:aws:s3:::")?;
    let (b, k) = rest.split_once('/').unwrap_or((rest, ""));
    Some((b.to_owned(), k.to_owned()))
}

async fn handle(req: Request<Incoming>, shared: Shared) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    if method == hyper::Method::POST && path == "/" {
        // STS GetCallerIdentity (awsQuery), for runs without --account-id: the tool sends
        // STS requests to --batch-endpoint-url as well.
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if !String::from_utf8_lossy(&body).contains("Action=GetCallerIdentity") {
            return error(400, "InvalidAction", "only GetCallerIdentity is emulated");
        }
        return xml(
            200,
            format!(
                "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult><Arn>arn:aws:iam::{EMULATED_ACCOUNT}:user/test</Arn><UserId>AIDAEMULATED</UserId><Account>{EMULATED_ACCOUNT}</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>emulator</RequestId></ResponseMetadata></GetCallerIdentityResponse>"
            ),
        );
    }
    match req.headers().get("x-amz-account-id").and_then(|v| v.to_str().ok()) {
        Some(EMULATED_ACCOUNT) => {}
        Some(other) => {
            return error(
                403,
                "AccessDenied",
                &format!("account {other} is not the emulated account"),
            );
        }
        None => {}
    }
    if req.headers().get("x-amz-account-id").is_none() {
        return error(400, "InvalidRequest", "x-amz-account-id is missing");
    }
    // S3 Control requests are signed SigV4 for the service name `s3` (not `s3control`).
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !(auth.starts_with("AWS4-HMAC-SHA256 ") && auth.contains("/s3/aws4_request")) {
        return error(403, "SignatureDoesNotMatch", "not a SigV4 signature for s3");
    }
    let body = match req.into_body().collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(_) => return error(400, "InvalidRequest", "body"),
    };
    match (method.as_str(), path.as_str()) {
        ("POST", "/v20180820/jobs") => create_job(&body, shared).await,
        ("GET", "/v20180820/jobs") => {
            let state = shared.0.lock().unwrap();
            let members: String = state
                .jobs
                .values()
                .map(|j| {
                    format!(
                        "<member><JobId>{}</JobId><Description>{}</Description><Operation>S3PutObjectCopy</Operation><Priority>10</Priority><Status>{}</Status><CreationTime>{}</CreationTime><ProgressSummary><TotalNumberOfTasks>{}</TotalNumberOfTasks><NumberOfTasksSucceeded>{}</NumberOfTasksSucceeded><NumberOfTasksFailed>{}</NumberOfTasksFailed></ProgressSummary></member>",
                        j.id, j.description, j.status, j.created, j.total, j.succeeded, j.failed
                    )
                })
                .collect();
            xml(
                200,
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListJobsResult><Jobs>{members}</Jobs></ListJobsResult>"
                ),
            )
        }
        ("GET", p) if p.starts_with("/v20180820/jobs/") => {
            let id = &p["/v20180820/jobs/".len()..];
            let state = shared.0.lock().unwrap();
            let Some(j) = state.jobs.get(id) else {
                return error(404, "NoSuchJob", "no such job");
            };
            let failures = j
                .failure
                .as_ref()
                .map(|f| {
                    format!("<FailureReasons><member><FailureCode>AccessDenied</FailureCode><FailureReason>{f}</FailureReason></member></FailureReasons>")
                })
                .unwrap_or_default();
            xml(
                200,
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><DescribeJobResult><Job><JobId>{}</JobId><ConfirmationRequired>false</ConfirmationRequired><Description>{}</Description><Priority>10</Priority><Status>{}</Status><ProgressSummary><TotalNumberOfTasks>{}</TotalNumberOfTasks><NumberOfTasksSucceeded>{}</NumberOfTasksSucceeded><NumberOfTasksFailed>{}</NumberOfTasksFailed></ProgressSummary>{failures}<CreationTime>{}</CreationTime></Job></DescribeJobResult>",
                    j.id, j.description, j.status, j.total, j.succeeded, j.failed, j.created
                ),
            )
        }
        _ => error(405, "MethodNotAllowed", "not emulated"),
    }
}

struct JobSpec {
    manifest: (String, String),
    etag: String,
    target_bucket: String,
    target_prefix: String,
    storage_class: String,
    sse: Option<String>,
    kms_key: Option<String>,
    report: (String, String),
}

async fn create_job(body: &str, shared: Shared) -> Response<Full<Bytes>> {
    let Some(token) = tag(body, "ClientRequestToken", "") else {
        return error(400, "InvalidRequest", "ClientRequestToken is required");
    };
    let token = unescape(token);
    let get = |name: &str, after: &str| tag(body, name, after).map(unescape);
    let spec = (|| {
        Some(JobSpec {
            manifest: arn_object(&get("ObjectArn", "<Manifest>")?)?,
            etag: get("ETag", "<Manifest>")?,
            target_bucket: arn_object(&get("TargetResource", "<S3PutObjectCopy>")?)?.0,
            target_prefix: get("TargetKeyPrefix", "<S3PutObjectCopy>").unwrap_or_default(),
            storage_class: get("StorageClass", "<S3PutObjectCopy>").unwrap_or_else(|| "STANDARD".into()),
            sse: get("SSEAlgorithm", "<S3PutObjectCopy>"),
            kms_key: get("SSEAwsKmsKeyId", "<S3PutObjectCopy>"),
            report: (
                arn_object(&get("Bucket", "<Report>")?)?.0,
                get("Prefix", "<Report>").unwrap_or_default(),
            ),
        })
    })();
    let Some(spec) = spec else {
        return error(
            400,
            "InvalidRequest",
            "the emulator needs an S3PutObjectCopy job with a manifest and a report",
        );
    };
    let id = {
        let mut state = shared.0.lock().unwrap();
        state.create_requests += 1;
        state.create_bodies.push(body.to_owned());
        if let Some(j) = state.jobs.values().find(|j| j.token == token) {
            let id = j.id.clone();
            return xml(
                200,
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><CreateJobResult><JobId>{id}</JobId></CreateJobResult>"
                ),
            );
        }
        let id = format!("{:08x}-emul-{:04x}", rand::random::<u32>(), state.jobs.len());
        state.jobs.insert(
            id.clone(),
            EmulatedJob {
                id: id.clone(),
                token: token.clone(),
                status: "New".into(),
                total: 0,
                succeeded: 0,
                failed: 0,
                failure: None,
                created: jiff::Timestamp::now(),
                description: get("Description", "").unwrap_or_default(),
                storage_class: spec.storage_class.clone(),
            },
        );
        id
    };
    let job_id = id.clone();
    let answer_delay = shared.2.answer_delay;
    tokio::spawn(async move { run_job(job_id, spec, shared).await });
    tokio::time::sleep(answer_delay).await;
    xml(
        200,
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><CreateJobResult><JobId>{id}</JobId></CreateJobResult>"),
    )
}

fn update(shared: &Shared, id: &str, f: impl FnOnce(&mut EmulatedJob)) {
    if let Some(j) = shared.0.lock().unwrap().jobs.get_mut(id) {
        f(j);
    }
}

async fn run_job(id: String, spec: JobSpec, shared: Shared) {
    let (_, s3, opts) = &*shared;
    tokio::time::sleep(opts.start_delay).await;
    update(&shared, &id, |j| j.status = "Active".into());
    let manifest = match s3
        .get_object()
        .bucket(&spec.manifest.0)
        .key(&spec.manifest.1)
        .send()
        .await
    {
        Ok(o) => o,
        Err(e) => {
            let why = format!("cannot read the manifest: {e}");
            return update(&shared, &id, |j| {
                j.status = "Failed".into();
                j.failure = Some(why);
            });
        }
    };
    if manifest.e_tag().map(|e| e.trim_matches('"')) != Some(spec.etag.as_str()) {
        return update(&shared, &id, |j| {
            j.status = "Failed".into();
            j.failure = Some("the manifest's ETag does not match".into());
        });
    }
    let text = manifest.body.collect().await.expect("manifest body").into_bytes();
    let text = String::from_utf8(text.to_vec()).expect("manifest is UTF-8");
    let mut tasks: Vec<(String, String, String)> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].to_owned(),
                f[1].to_owned(),
                f.get(2).copied().unwrap_or("").to_owned(),
            )
        })
        .collect();
    update(&shared, &id, |j| j.total = tasks.len() as u64);
    if opts.fail_jobs {
        return update(&shared, &id, |j| {
            j.status = "Failed".into();
            j.failure = Some("Access denied when assuming the job's role (emulated)".into());
        });
    }
    // Batch Operations keeps no order.
    tasks.shuffle(&mut rand::rng());
    let mut ok_lines = String::new();
    let mut failed_lines = String::new();
    for (bucket, enc_key, version) in tasks {
        let key = percent_encoding::percent_decode_str(&enc_key)
            .decode_utf8()
            .expect("manifest key decodes")
            .into_owned();
        let version = percent_encoding::percent_decode_str(&version)
            .decode_utf8()
            .expect("version")
            .into_owned();
        if opts.fail_keys.contains(&key) {
            failed_lines.push_str(&format!(
                "{bucket},{enc_key},{version},failed,AccessDenied,403,Access Denied\n"
            ));
            update(&shared, &id, |j| j.failed += 1);
            continue;
        }
        let source = format!(
            "{bucket}/{}?versionId={version}",
            percent_encoding::utf8_percent_encode(&key, percent_encoding::NON_ALPHANUMERIC)
        );
        let mut copy = s3
            .copy_object()
            .bucket(&spec.target_bucket)
            .key(format!("{}{key}", spec.target_prefix))
            .copy_source(source)
            .metadata_directive(MetadataDirective::Copy)
            .tagging_directive(TaggingDirective::Copy)
            .storage_class(StorageClass::from(spec.storage_class.as_str()));
        match spec.sse.as_deref() {
            Some("AES256") => copy = copy.server_side_encryption(ServerSideEncryption::Aes256),
            Some("KMS") => {
                copy = copy.server_side_encryption(ServerSideEncryption::AwsKms);
                if let Some(k) = &spec.kms_key {
                    copy = copy.ssekms_key_id(k);
                }
            }
            _ => {}
        }
        match copy.send().await {
            Ok(_) => {
                ok_lines.push_str(&format!("{bucket},{enc_key},{version},succeeded,,200,Successful\n"));
                update(&shared, &id, |j| j.succeeded += 1);
            }
            Err(e) => {
                let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&e)
                    .unwrap_or("InternalError")
                    .to_owned();
                failed_lines.push_str(&format!("{bucket},{enc_key},{version},failed,{code},500,copy failed\n"));
                update(&shared, &id, |j| j.failed += 1);
            }
        }
    }
    // The completion report, as documented.
    let (rbucket, rprefix) = &spec.report;
    let base = if rprefix.is_empty() {
        format!("job-{id}")
    } else {
        format!("{}/job-{id}", rprefix.trim_end_matches('/'))
    };
    let mut results = Vec::new();
    for (status, lines, name) in [("succeeded", &ok_lines, "ok"), ("failed", &failed_lines, "failed")] {
        if lines.is_empty() {
            continue;
        }
        let key = format!("{base}/results/{name}-{id}.csv");
        s3.put_object()
            .bucket(rbucket)
            .key(&key)
            .body(lines.clone().into_bytes().into())
            .send()
            .await
            .expect("write report");
        results
            .push(serde_json::json!({"TaskExecutionStatus": status, "Bucket": rbucket, "MD5Checksum": "", "Key": key}));
    }
    let manifest = serde_json::json!({
        "Format": "Report_CSV_20180820",
        "ReportCreationDate": jiff::Timestamp::now().to_string(),
        "Results": results,
        "ReportSchema": "Bucket, Key, VersionId, TaskStatus, ErrorCode, HTTPStatusCode, ResultMessage",
    });
    s3.put_object()
        .bucket(rbucket)
        .key(format!("{base}/manifest.json"))
        .body(manifest.to_string().into_bytes().into())
        .send()
        .await
        .expect("write report manifest");
    update(&shared, &id, |j| j.status = "Complete".into());
}
