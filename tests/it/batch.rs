//! `restore --engine batch-operations` end to end: the built binary, the local S3 server,
//! and the Batch Operations emulator (support/batch_emulator.rs) as S3 Control.
//!
//! The binary reaches the emulator at `http://127.0.0.1:P` through
//! `--batch-endpoint-url`, which the production client takes literally (see
//! src/s3/control.rs): no test-only code path.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::types::ObjectCannedAcl;

use crate::support::batch_emulator::{BatchEmulator, EmulatorOpts};
use crate::support::scenario::{Damage, ObjectSpec, Scenario, Seeded};
use crate::support::workdir::{Dirs, read_csv};
use crate::support::{BucketOpts, CliOutput, PRIMARY_REGION, REPLICA_REGION, create_bucket, list_all_versions};

const RUN_TIMEOUT: Duration = Duration::from_secs(180);
const ACCOUNT: &str = "123456789012";

fn args(source: &str, dest: &str, dirs: &Dirs, run: &str, extra: &[String]) -> Vec<String> {
    let mut a: Vec<String> = [
        "restore",
        "--source",
        source,
        "--dest",
        dest,
        "--source-region",
        REPLICA_REGION,
        "--dest-region",
        PRIMARY_REGION,
        "--endpoint-url",
        crate::support::endpoint(),
        "--path-style",
        "--yes",
        "--state-dir",
        &dirs.state().display().to_string(),
        "--report-dir",
        &dirs.report(run).display().to_string(),
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    a.extend(extra.iter().cloned());
    a
}

fn batch_flags(emulator: &BatchEmulator, work: &str) -> Vec<String> {
    [
        "--engine",
        "batch-operations",
        "--batch-role-arn",
        "arn:aws:iam::123456789012:role/s3-failback-batch",
        "--batch-work",
        work,
        "--account-id",
        ACCOUNT,
        "--batch-endpoint-url",
        &emulator.endpoint(),
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

async fn run(a: Vec<String>, dirs: &Dirs) -> CliOutput {
    let dir = dirs.cwd().to_owned();
    tokio::task::spawn_blocking(move || crate::support::Cli::new(a).current_dir(dir).timeout(RUN_TIMEOUT).run())
        .await
        .expect("cli task")
}

/// A key's entries newest first as (delete marker, etag, size), and its latest grants.
type KeyState = (Vec<(bool, Option<String>, u64)>, Vec<String>);

/// Per key: the entries newest first as (delete marker, etag, size), and the grants of
/// the latest version: what "the same primary state" means here (version ids and times
/// are the server's).
async fn state_of(client: &Client, bucket: &str) -> BTreeMap<String, KeyState> {
    let mut out: BTreeMap<String, KeyState> = BTreeMap::new();
    for v in list_all_versions(client, bucket, "").await {
        let entry = out.entry(v.key.clone()).or_default();
        entry.0.push((v.is_delete_marker, v.etag.clone(), v.size_bytes));
        if v.is_latest && !v.is_delete_marker {
            let acl = client
                .get_object_acl()
                .bucket(bucket)
                .key(&v.key)
                .version_id(&v.version_id)
                .send()
                .await
                .expect("acl");
            let mut grants: Vec<String> = acl
                .grants()
                .iter()
                .map(|g| {
                    let who = g.grantee().and_then(|g| g.uri().or(g.id())).unwrap_or("?");
                    format!("{who}:{}", g.permission().map(|p| p.as_str()).unwrap_or(""))
                })
                .collect();
            grants.sort();
            entry.1 = grants;
        }
    }
    out
}

async fn work_bucket() -> String {
    let name = crate::support::unique_bucket("batch-work");
    create_bucket(
        &crate::support::client(PRIMARY_REGION),
        &name,
        PRIMARY_REGION,
        &BucketOpts::default(),
    )
    .await;
    name
}

async fn seed_mixed(name: &str) -> Seeded {
    let mut sc = Scenario::builder(name);
    for i in 0..12 {
        sc.put(
            &format!("small/{i:02} key+{i}"),
            ObjectSpec::random(200 + i).tag("n", &i.to_string()),
        );
    }
    sc.put("mp/one", ObjectSpec::multipart(&[5 * 1024 * 1024, 1000]));
    sc.put(
        "acl/public",
        ObjectSpec::random(64).canned_acl(ObjectCannedAcl::PublicRead),
    );
    // Deleted on the replica after the primary got the version: a delete marker to write.
    sc.put("gone/x", ObjectSpec::random(30)).delete("gone/x");
    sc.damage("gone/x", Damage::Stale { keep: 1 });
    sc.seed().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_restore_matches_the_local_engine_and_reports_every_object() {
    let seeded = seed_mixed("batch-mixed").await;
    let work = work_bucket().await;
    let emulator = BatchEmulator::start(crate::support::endpoint(), EmulatorOpts::default()).await;
    let dirs = Dirs::new();
    let flags = batch_flags(&emulator, &format!("s3://{work}/jobs"));
    let mut dry = flags.clone();
    dry.push("--dry-run".into());
    let out = run(
        args(&seeded.replica.url(), &seeded.primary.url(), &dirs, "dry", &dry),
        &dirs,
    )
    .await;
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stderr.contains("batch operations: 12 objects"), "{}", out.stderr);
    assert!(emulator.jobs().is_empty(), "a dry run created a job");
    let out = run(
        args(&seeded.replica.url(), &seeded.primary.url(), &dirs, "batch", &flags),
        &dirs,
    )
    .await;
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stderr.contains("batch operations: 12 objects"), "{}", out.stderr);
    assert!(
        out.stderr.contains("multipart-source") && out.stderr.contains("acl-grants"),
        "{}",
        out.stderr
    );

    // A second primary restored by the local engine. gone/x is left out of it: the local
    // engine handled that key in both runs (restore.csv says so below), and a version
    // seeded now would be newer than the replica's delete marker (a conflict).
    let other = crate::support::unique_bucket("batch-local-primary");
    let pclient = crate::support::client(PRIMARY_REGION);
    create_bucket(&pclient, &other, PRIMARY_REGION, &BucketOpts::default()).await;
    let dirs2 = Dirs::new();
    let out2 = run(
        args(&seeded.replica.url(), &format!("s3://{other}"), &dirs2, "local", &[]),
        &dirs2,
    )
    .await;
    assert_eq!(out2.code, 0, "{out2:#?}");

    let mut a = state_of(&pclient, &seeded.primary.name).await;
    let b = state_of(&pclient, &other).await;
    let gone = a.remove("gone/x").expect("gone/x on the primary");
    let shape: Vec<bool> = gone.0.iter().map(|e| e.0).collect();
    assert_eq!(
        shape,
        vec![true, false],
        "gone/x needs a delete marker on top: {gone:?}"
    );
    assert_eq!(a, b, "batch and local engines leave different primaries");

    let rows = read_csv(&dirs.report("batch").join("restore.csv"));
    let keys: HashSet<&str> = rows.iter().map(|r| r["key"].as_str()).collect();
    for k in seeded.replica.keys.keys() {
        assert!(keys.contains(k.as_str()), "restore.csv lacks {k}");
    }
    for r in &rows {
        let want = if r["key"].starts_with("small/") {
            "batch-operations"
        } else {
            "local"
        };
        assert_eq!(r["engine"], want, "{r:?}");
        assert_eq!(r["status"], "done", "{r:?}");
        if r["engine"] == "batch-operations" {
            assert!(
                !r["dest_version_id"].is_empty(),
                "batch row without the new version id: {r:?}"
            );
        }
    }
    let jobs = emulator.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    // The request as the API reference spells it.
    let body = &emulator.create_bodies()[0];
    for part in [
        "<ConfirmationRequired>false</ConfirmationRequired>",
        "<MetadataDirective>COPY</MetadataDirective>",
        "<ReportScope>AllTasks</ReportScope>",
        "<Format>S3BatchOperations_CSV_20180820</Format>",
        "<RoleArn>arn:aws:iam::123456789012:role/s3-failback-batch</RoleArn>",
        "<StorageClass>STANDARD</StorageClass>",
        // The primary reports no default encryption: SSE-S3 is asked for, as locally.
        "<SSEAlgorithm>AES256</SSEAlgorithm>",
        &format!("<TargetResource>arn:aws:s3:::{}</TargetResource>", seeded.primary.name),
    ] {
        assert!(body.contains(part), "CreateJob lacks {part}: {body}");
    }
    assert!(
        !body.contains("NewObjectTagging"),
        "tags must be copied, not replaced: {body}"
    );
    assert_eq!(jobs[0].succeeded, 12);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dirs.report("batch").join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        summary["batch_operations"]["split"]["batch"]["objects"], 12,
        "{summary}"
    );
}

/// The run's journal, or empty before there is one.
fn journal_text(dirs: &Dirs) -> String {
    std::fs::read_dir(dirs.state())
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path().join("journal.jsonl"))
        .find(|p| p.exists())
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
}

/// Polls until `done`; panics after `limit`.
fn wait_until(child: &mut std::process::Child, limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("s3-failback ended ({status}) before {what}");
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_after_create_job_then_rerun_follows_the_same_job() {
    let mut sc = Scenario::builder("batch-kill");
    for i in 0..20 {
        sc.put(&format!("k/{i:02}"), ObjectSpec::random(100 + i));
    }
    let seeded = sc.seed().await;
    let work = work_bucket().await;
    let emulator = BatchEmulator::start(
        crate::support::endpoint(),
        EmulatorOpts {
            start_delay: Duration::from_secs(2),
            // Killed before the answer: the first run never learns the job id, so only
            // the ClientRequestToken can lead the rerun to it.
            answer_delay: Duration::from_secs(2),
            ..EmulatorOpts::default()
        },
    )
    .await;
    let dirs = Dirs::new();
    let a = args(
        &seeded.replica.url(),
        &seeded.primary.url(),
        &dirs,
        "first",
        &batch_flags(&emulator, &format!("s3://{work}/w")),
    );
    let mut child = crate::support::Cli::new(a).current_dir(dirs.cwd()).spawn();
    let em = &emulator;
    tokio::task::block_in_place(|| {
        wait_until(&mut child, Duration::from_secs(60), "CreateJob", || {
            !em.jobs().is_empty()
        });
        child.kill().expect("kill -9");
        let _ = child.wait();
    });
    let text = journal_text(&dirs);
    let jobs: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["type"] == "batch_job")
        .collect();
    assert_eq!(jobs.len(), 1, "the job is journalled before CreateJob: {text}");
    assert!(jobs[0].get("job_id").is_none(), "{text}");
    let a = args(
        &seeded.replica.url(),
        &seeded.primary.url(),
        &dirs,
        "second",
        &batch_flags(&emulator, &format!("s3://{work}/w")),
    );
    let out = run(a, &dirs).await;
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(
        emulator.jobs().len(),
        1,
        "a second job was created: {:?}",
        emulator.jobs()
    );
    // The rerun sent CreateJob again with the same token and got the same job.
    assert_eq!(emulator.create_requests(), 2);
    let versions = list_all_versions(&seeded.primary.client, &seeded.primary.name, "").await;
    assert_eq!(versions.len(), 20, "a key was copied twice: {versions:?}");
    let rows = read_csv(&dirs.report("second").join("restore.csv"));
    assert_eq!(rows.len(), 20);
    // 20 tasks: the new version ids come from one listing of the primary (the sweep).
    let listed: HashSet<&str> = versions.iter().map(|v| v.version_id.as_str()).collect();
    let reported: HashSet<&str> = rows.iter().map(|r| r["dest_version_id"].as_str()).collect();
    assert_eq!(listed, reported, "restore.csv's dest_version_id");
    assert!(
        rows.iter()
            .all(|r| r["status"] == "done" && r["engine"] == "batch-operations"),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_versions_keeps_each_keys_order() {
    let mut sc = Scenario::builder("batch-versions");
    for i in 0..4 {
        sc.versions(&format!("v/{i}"), 3, 50 + i);
    }
    // A delete marker between versions: the later version must stay local, after it.
    sc.put("dm/k", ObjectSpec::random(40))
        .delete("dm/k")
        .put("dm/k", ObjectSpec::random(41));
    let seeded = sc.seed().await;
    let work = work_bucket().await;
    let emulator = BatchEmulator::start(crate::support::endpoint(), EmulatorOpts::default()).await;
    let dirs = Dirs::new();
    let mut extra = batch_flags(&emulator, &format!("s3://{work}/w"));
    extra.extend(["--mode".to_owned(), "all-versions".to_owned()]);
    let out = run(
        args(&seeded.replica.url(), &seeded.primary.url(), &dirs, "av", &extra),
        &dirs,
    )
    .await;
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(
        emulator.jobs().len(),
        3,
        "one job per generation: {:?}",
        emulator.jobs()
    );
    let versions = list_all_versions(&seeded.primary.client, &seeded.primary.name, "").await;
    for (key, history) in &seeded.replica.keys {
        // Newest first on the primary; the replica's history is oldest first.
        let got: Vec<(bool, Option<String>)> = versions
            .iter()
            .filter(|v| &v.key == key)
            .map(|v| (v.is_delete_marker, v.etag.clone()))
            .collect();
        let want: Vec<(bool, Option<String>)> = history
            .iter()
            .rev()
            .map(|v| {
                (
                    v.is_delete_marker,
                    if v.is_delete_marker { None } else { v.etag.clone() },
                )
            })
            .collect();
        assert_eq!(got, want, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_exits_1_naming_it_and_failed_tasks_are_retried_locally() {
    // Failed tasks: retried once by the local engine.
    let mut sc = Scenario::builder("batch-task-fail");
    for i in 0..6 {
        sc.put(&format!("t/{i}"), ObjectSpec::random(80 + i));
    }
    let seeded = sc.seed().await;
    let work = work_bucket().await;
    let emulator = BatchEmulator::start(
        crate::support::endpoint(),
        EmulatorOpts {
            fail_keys: ["t/1".to_owned(), "t/4".to_owned()].into_iter().collect(),
            ..EmulatorOpts::default()
        },
    )
    .await;
    let dirs = Dirs::new();
    let flags = batch_flags(&emulator, &format!("s3://{work}/w"));
    let out = run(
        args(&seeded.replica.url(), &seeded.primary.url(), &dirs, "tasks", &flags),
        &dirs,
    )
    .await;
    assert_eq!(out.code, 0, "{out:#?}");
    let rows = read_csv(&dirs.report("tasks").join("restore.csv"));
    for r in &rows {
        let want = if r["key"] == "t/1" || r["key"] == "t/4" {
            "local"
        } else {
            "batch-operations"
        };
        assert_eq!((r["engine"].as_str(), r["status"].as_str()), (want, "done"), "{r:?}");
    }
    let versions = list_all_versions(&seeded.primary.client, &seeded.primary.name, "").await;
    assert_eq!(versions.len(), 6);

    // A job that fails outright: exit 1 with its id; nothing copied locally.
    let mut sc = Scenario::builder("batch-job-fail");
    for i in 0..5 {
        sc.put(&format!("j/{i}"), ObjectSpec::random(90 + i));
    }
    let seeded = sc.seed().await;
    let emulator = BatchEmulator::start(
        crate::support::endpoint(),
        EmulatorOpts {
            fail_jobs: true,
            ..EmulatorOpts::default()
        },
    )
    .await;
    let dirs = Dirs::new();
    let flags = batch_flags(&emulator, &format!("s3://{work}/w2"));
    let out = run(
        args(&seeded.replica.url(), &seeded.primary.url(), &dirs, "job", &flags),
        &dirs,
    )
    .await;
    assert_eq!(out.code, 1, "{out:#?}");
    let job = &emulator.jobs()[0];
    assert!(out.stderr.contains(&job.id), "{}", out.stderr);
    let rows = read_csv(&dirs.report("job").join("restore.csv"));
    assert_eq!(rows.len(), 5);
    assert!(
        rows.iter()
            .all(|r| r["status"] == "failed" && r["error"].contains(&job.id)),
        "{rows:?}"
    );
    let versions = list_all_versions(&seeded.primary.client, &seeded.primary.name, "").await;
    assert!(
        versions.is_empty(),
        "the local engine copied a failed job's objects: {versions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_leaves_the_job_running_and_a_rerun_follows_it() {
    let mut sc = Scenario::builder("batch-ctrl-c");
    for i in 0..8 {
        sc.put(&format!("c/{i}"), ObjectSpec::random(70 + i));
    }
    let seeded = sc.seed().await;
    let work = work_bucket().await;
    let emulator = BatchEmulator::start(
        crate::support::endpoint(),
        EmulatorOpts {
            start_delay: Duration::from_secs(3),
            ..EmulatorOpts::default()
        },
    )
    .await;
    let dirs = Dirs::new();
    let flags = batch_flags(&emulator, &format!("s3://{work}/w"));
    let a = args(&seeded.replica.url(), &seeded.primary.url(), &dirs, "first", &flags);
    let mut child = crate::support::Cli::new(a).current_dir(dirs.cwd()).spawn();
    let out = tokio::task::block_in_place(|| {
        // Interrupt once the binary has journalled the job id (it is following the job).
        wait_until(&mut child, Duration::from_secs(60), "the job id in the journal", || {
            journal_text(&dirs).contains("\"job_id\"")
        });
        crate::support::interrupt(&child);
        crate::support::wait_cli(child, RUN_TIMEOUT)
    });
    assert_eq!(out.code, 130, "{out:#?}");
    let job = emulator.jobs()[0].clone();
    assert!(
        out.stderr.contains(&job.id) && out.stderr.contains("update-job-status"),
        "{}",
        out.stderr
    );
    let a = args(&seeded.replica.url(), &seeded.primary.url(), &dirs, "second", &flags);
    let out = run(a, &dirs).await;
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(emulator.jobs().len(), 1, "{:?}", emulator.jobs());
    // The journal had the job id: the rerun followed it without a CreateJob.
    assert_eq!(emulator.create_requests(), 1);
    let versions = list_all_versions(&seeded.primary.client, &seeded.primary.name, "").await;
    assert_eq!(versions.len(), 8);
    let rows = read_csv(&dirs.report("second").join("restore.csv"));
    assert_eq!(rows.len(), 8);
    assert!(
        rows.iter()
            .all(|r| r["engine"] == "batch-operations" && r["status"] == "done"),
        "{rows:?}"
    );
}
