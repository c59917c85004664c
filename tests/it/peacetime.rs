//! The peacetime commands end to end against the local server, through the recording
//! proxy: `verify` proves (or disproves) that the primary holds the target state, `audit`
//! finds replication gaps and their lag, `drill` rehearses a failback into a scratch
//! location and removes what it wrote. Each command is read-only where DESIGN.md says so,
//! and the tests check that from the request record.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    DeleteMarkerReplication, DeleteMarkerReplicationStatus, Destination, MetadataDirective, ReplicationConfiguration,
    ReplicationRule, ReplicationRuleFilter, ReplicationRuleStatus, StorageClass, Tag, Tagging,
};
use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::proxy::{Proxy, RecordedRequest, S3Op};
use crate::support::scenario::{Damage, ObjectSpec, Scenario, Seeded, random_bytes};
use crate::support::workdir::{Dirs, Row, col, conn_args, read_csv, read_json};
use crate::support::{
    BucketOpts, BucketSnapshot, Cli, CliOutput, PRIMARY_REGION, REPLICA_REGION, client, create_bucket,
    list_all_versions, snapshot, unique_bucket, unquote,
};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// Runs the binary in the test's working directory.
fn run_in(dirs: &Dirs, args: Vec<String>) -> CliOutput {
    Cli::new(args).current_dir(dirs.cwd()).run()
}

/// `restore --yes` from the scenario's replica to its primary.
fn restore(seeded: &Seeded, proxy: &Proxy, dirs: &Dirs, run: &str, extra: &[&str]) -> CliOutput {
    let mut args = strings(&[
        "restore",
        "--source",
        &seeded.replica.url(),
        "--dest",
        &seeded.primary.url(),
        "--yes",
    ]);
    args.extend(conn_args(&proxy.endpoint()));
    args.extend([
        "--state-dir".to_owned(),
        dirs.state().display().to_string(),
        "--report-dir".to_owned(),
        dirs.report(run).display().to_string(),
    ]);
    args.extend(strings(extra));
    run_in(dirs, args)
}

/// `verify` of the scenario's primary against its replica.
fn verify(seeded: &Seeded, proxy: &Proxy, dirs: &Dirs, run: &str, extra: &[&str]) -> CliOutput {
    let mut args = strings(&[
        "verify",
        "--source",
        &seeded.replica.url(),
        "--dest",
        &seeded.primary.url(),
    ]);
    args.extend(conn_args(&proxy.endpoint()));
    args.extend(["--report-dir".to_owned(), dirs.report(run).display().to_string()]);
    args.extend(strings(extra));
    run_in(dirs, args)
}

/// `audit` of `primary` against `replica` (bucket names).
fn audit(primary: &str, replica: &str, proxy: &Proxy, dirs: &Dirs, run: &str, extra: &[&str]) -> CliOutput {
    let mut args = strings(&[
        "audit",
        "--primary",
        &format!("s3://{primary}"),
        "--replica",
        &format!("s3://{replica}"),
    ]);
    args.extend(conn_args(&proxy.endpoint()));
    args.extend(["--report-dir".to_owned(), dirs.report(run).display().to_string()]);
    args.extend(strings(extra));
    run_in(dirs, args)
}

/// `drill` from `source` into `scratch` (both `s3://` URLs), with `--state-dir` and a
/// `--report-dir` named after `run`.
fn drill(source: &str, scratch: &str, proxy: &Proxy, dirs: &Dirs, run: &str, extra: &[&str]) -> CliOutput {
    let mut args = strings(&["drill", "--source", source, "--scratch", scratch]);
    args.extend(conn_args(&proxy.endpoint()));
    args.extend([
        "--state-dir".to_owned(),
        dirs.state().display().to_string(),
        "--report-dir".to_owned(),
        dirs.report(run).display().to_string(),
    ]);
    args.extend(strings(extra));
    run_in(dirs, args)
}

/// The rows of a `latest` report by key, each key once.
#[track_caller]
fn by_key(rows: &[Row]) -> BTreeMap<String, Row> {
    let mut out = BTreeMap::new();
    for r in rows {
        let previous = out.insert(col(r, "key").to_owned(), r.clone());
        assert!(previous.is_none(), "two rows for {:?}: {rows:#?}", col(r, "key"));
    }
    out
}

/// Each key's verify status.
fn statuses(rows: &[Row]) -> BTreeMap<String, String> {
    by_key(rows)
        .into_iter()
        .map(|(k, r)| (k, col(&r, "status").to_owned()))
        .collect()
}

/// Asserts `key`'s row has `status` and a detail containing each of `details`.
#[track_caller]
fn assert_row(rows: &BTreeMap<String, Row>, key: &str, status: &str, details: &[&str]) {
    let row = rows
        .get(key)
        .unwrap_or_else(|| panic!("no row for {key:?} in {rows:#?}"));
    assert_eq!(col(row, "status"), status, "{key:?}: {row:?}");
    let detail = col(row, "detail");
    assert!(!detail.is_empty(), "{key:?} has no detail: {row:?}");
    for d in details {
        assert!(detail.contains(d), "{key:?}: detail {detail:?} lacks {d:?}");
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks the digest `summary.json` lists for `name` against the file.
#[track_caller]
fn assert_digest(summary: &Value, dir: &Path, name: &str) {
    let bytes = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"));
    assert_eq!(
        summary["reports"][name].as_str(),
        Some(sha256_hex(&bytes).as_str()),
        "digest of {name} in summary.json"
    );
}

/// `completeness` of a verify summary as (objects matched, target, bytes matched, target).
fn completeness(summary: &Value) -> (u64, u64, u64, u64) {
    let c = &summary["completeness"];
    let n = |f: &str| {
        c[f].as_u64()
            .unwrap_or_else(|| panic!("completeness.{f} in {summary:#}"))
    };
    (
        n("objects_matched"),
        n("objects_target"),
        n("bytes_matched"),
        n("bytes_target"),
    )
}

/// Write requests of the record (whatever the bucket).
fn writes(requests: &[RecordedRequest]) -> Vec<&RecordedRequest> {
    requests.iter().filter(|r| r.is_write()).collect()
}

#[track_caller]
fn assert_same_snapshot(got: &BucketSnapshot, want: &BucketSnapshot) {
    assert_eq!(
        got.versions.len(),
        want.versions.len(),
        "bucket {}: version count changed",
        want.bucket
    );
    for (g, w) in got.versions.iter().zip(&want.versions) {
        assert_eq!(
            g, w,
            "bucket {}: version {:?} {:?} changed",
            want.bucket, w.record.key, w.record.version_id
        );
    }
}

/// PUT without any additional checksum (the support client computes none); returns the
/// version id and ETag.
async fn put(client: &Client, bucket: &str, key: &str, body: impl Into<Bytes>) -> (String, String) {
    let out = client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.into()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {bucket}/{key}: {e:?}"));
    (
        out.version_id().expect("versioned bucket").to_owned(),
        out.e_tag().map(unquote).expect("etag"),
    )
}

/// Adds a delete marker; returns its version id.
async fn delete_marker(client: &Client, bucket: &str, key: &str) -> String {
    let out = client
        .delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("delete {bucket}/{key}: {e:?}"));
    assert_eq!(out.delete_marker(), Some(true));
    out.version_id().expect("delete marker id").to_owned()
}

/// The version id of `key`'s current entry.
async fn current_version_id(client: &Client, bucket: &str, key: &str) -> String {
    list_all_versions(client, bucket, key)
        .await
        .into_iter()
        .find(|v| v.key == key && v.is_latest)
        .unwrap_or_else(|| panic!("{bucket}/{key} has no current entry"))
        .version_id
}

/// Sleeps into the next whole second (Last-Modified has one-second resolution).
async fn next_second() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970");
    let wait = Duration::from_secs(1) - Duration::from_nanos(u64::from(now.subsec_nanos()));
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
}

/// Two 128-byte blocks with the same MD5 (a published collision, S3-NOTES 49).
const COLLISION_A: &str = "d131dd02c5e6eec4693d9a0698aff95c2fcab58712467eab4004583eb8fb7f8955ad340609f4b30283e488832571415a085125e8f7cdc99fd91dbdf280373c5bd8823e3156348f5bae6dacd436c919c6dd53e2b487da03fd02396306d248cda0e99f33420f577ee8ce54b67080a80d1ec69821bcb6a8839396f9652b6ff72a70";
const COLLISION_MD5: &str = "79054025255fb1a26e4bc422aef54eb4";
const COLLISION_B: &str = "d131dd02c5e6eec4693d9a0698aff95c2fcab50712467eab4004583eb8fb7f8955ad340609f4b30283e4888325f1415a085125e8f7cdc99fd91dbd7280373c5bd8823e3156348f5bae6dacd436c919c6dd53e23487da03fd02396306d248cda0e99f33420f577ee8ce54b67080280d1ec69821bcb6a8839396f965ab6ff72a70";

// ---------------------------------------------------------------------------------------
// verify
// ---------------------------------------------------------------------------------------

/// Before a restore, verify fails and names every key the primary lacks or holds wrongly
/// (`missing`, `differs`, `unexpected`), with exact completeness figures; after the
/// restore it passes at 100%, with `--metadata --deep` too, and never writes.
#[tokio::test]
async fn verify_names_each_gap_then_passes_at_100_percent_after_restore() {
    let mut sc = Scenario::builder("verify-pass");
    let mut live_bytes = 0u64;
    for i in 0..8 {
        let size = 100 + i * 10;
        sc.versions(&format!("live/{i:02}"), 1 + i % 2, size);
        live_bytes += size as u64;
    }
    // The primary holds the replica's older version: it differs.
    sc.put("stale/a", ObjectSpec::random(300))
        .put("stale/a", ObjectSpec::random(310))
        .damage("stale/a", Damage::Stale { keep: 1 });
    sc.put("same/a", ObjectSpec::random(200))
        .damage("same/a", Damage::Replicated);
    // Deleted on the replica, the primary still holds the old version.
    sc.put("gone/kept", ObjectSpec::random(50))
        .delete("gone/kept")
        .damage("gone/kept", Damage::Stale { keep: 1 });
    // Deleted on the replica, the primary holds a write of its own under the key (older
    // than the replica's delete marker, so not a conflict).
    sc.put("gone/extra", ObjectSpec::random(60))
        .delete("gone/extra")
        .primary_only("gone/extra", ObjectSpec::random(70));
    // Deleted on the replica and absent in the primary: nothing to do.
    sc.put("absent/a", ObjectSpec::random(40)).delete("absent/a");
    // Outside the target: counted, never a row.
    sc.primary_only("ponly/x", ObjectSpec::random(33));
    let seeded = sc.seed().await;
    let proxy = Proxy::start();
    let dirs = Dirs::new();
    let target_keys = 13u64;
    let target_bytes = live_bytes + 310 + 200;

    // Before the restore.
    let mark = proxy.mark();
    let out = verify(&seeded, &proxy, &dirs, "before", &[]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(writes(&proxy.requests_since(mark)).is_empty(), "verify wrote");
    let rows = read_csv(&dirs.report("before").join("verify.csv"));
    let rows = by_key(&rows);
    let keys: BTreeSet<&str> = rows.keys().map(String::as_str).collect();
    assert!(!keys.contains("ponly/x"), "a primary-only key gets no row");
    assert_eq!(keys.len() as u64, target_keys, "{keys:?}");
    for i in 0..8 {
        assert_row(&rows, &format!("live/{i:02}"), "missing", &["no current version"]);
    }
    assert_row(
        &rows,
        "stale/a",
        "differs",
        &["size 300 in the primary, 310 in the replica", "etag"],
    );
    assert_row(&rows, "gone/kept", "unexpected", &["absent in the target"]);
    assert_row(&rows, "gone/extra", "unexpected", &["absent in the target"]);
    assert_eq!(col(&rows["same/a"], "status"), "match");
    assert_eq!(col(&rows["absent/a"], "status"), "match");
    // The keys are named on stderr too.
    for key in ["live/00", "stale/a", "gone/extra"] {
        assert!(
            out.stderr.contains(&format!("{key:?}")),
            "{key} not named: {}",
            out.stderr
        );
    }
    let summary = read_json(&dirs.report("before").join("summary.json"));
    assert_eq!(completeness(&summary), (2, target_keys, 200, target_bytes));
    assert_eq!(summary["completeness"]["percent"].as_f64(), Some(15.384));
    assert_eq!(summary["counts"]["missing"], 8);
    assert_eq!(summary["counts"]["differs"], 1);
    assert_eq!(summary["counts"]["unexpected"], 2);
    assert_eq!(summary["counts"]["match"], 2);
    assert_eq!(summary["counts"]["primary_only"], 1);
    assert!(out.stdout.contains("15.384% (2 of 13 versions"), "{}", out.stdout);

    // The restore, then verify in the same working directory (it reads the journal).
    let out = restore(&seeded, &proxy, &dirs, "restore", &[]);
    assert_eq!(out.code, 0, "{out:#?}");
    let mut deep_gets = BTreeSet::new();
    for (run, extra) in [("after", &[][..]), ("after-deep", &["--metadata", "--deep"][..])] {
        let mark = proxy.mark();
        let out = verify(&seeded, &proxy, &dirs, run, extra);
        assert_eq!(out.code, 0, "{run}: {out:#?}");
        let requests = proxy.requests_since(mark);
        assert!(writes(&requests).is_empty(), "verify wrote");
        if run == "after-deep" {
            deep_gets = requests
                .iter()
                .filter(|r| r.op == S3Op::GetObject)
                .map(|r| (r.bucket.clone().unwrap(), r.key.clone().unwrap()))
                .collect();
        }
        assert!(
            out.stdout.contains("verify: 100.000% (13 of 13 versions"),
            "{run}: {}",
            out.stdout
        );
        let dir = dirs.report(run);
        let rows = read_csv(&dir.join("verify.csv"));
        let st = statuses(&rows);
        assert_eq!(st.len() as u64, target_keys);
        assert!(st.values().all(|s| s == "match"), "{run}: {st:#?}");
        let summary = read_json(&dir.join("summary.json"));
        assert_eq!(summary["command"], "verify");
        assert_eq!(
            completeness(&summary),
            (target_keys, target_keys, target_bytes, target_bytes)
        );
        assert_eq!(summary["completeness"]["percent"].as_f64(), Some(100.0));
        assert_eq!(summary["counts"]["match"], 13);
        for s in ["missing", "differs", "unexpected", "conflict-kept"] {
            assert_eq!(summary["counts"][s], 0, "{run}: {s}");
        }
        assert_eq!(summary["counts"]["primary_only"], 1);
        assert_eq!(summary["bytes"]["match"], target_bytes);
        assert_digest(&summary, &dir, "verify.csv");
    }
    // --deep read the bytes of every live key on both sides.
    let live: BTreeSet<(String, String)> = seeded
        .replica
        .live()
        .keys()
        .flat_map(|k| [&seeded.replica.name, &seeded.primary.name].map(|b| (b.clone(), (*k).to_owned())))
        .collect();
    assert_eq!(deep_gets, live);
}

/// After a successful restore, the primary is tampered with. The default target keeps
/// newer primary writes (DESIGN.md: a newer primary version that differs is a conflict,
/// never overwritten): an overwrite, a delete marker and a write under a key the replica
/// deleted are `conflict-kept`, named with why; under `--overwrite-newer`, the target
/// where the replica wins, the same keys are `differs`, `missing` and `unexpected`
/// (`verify_names_each_gap_then_passes_at_100_percent_after_restore` shows those
/// statuses for primary states older than the replica's). A destroyed version is
/// `missing` either way. Tags, user
/// metadata and Content-Type changes are invisible to the listing and `differs` with
/// `--metadata`. A newer primary object left by the restore counts in the target, not as
/// matched.
#[tokio::test]
async fn verify_after_tampering_names_each_key_with_its_status() {
    let mut sc = Scenario::builder("verify-tamper");
    sc.put(
        "ok/a",
        ObjectSpec::random(100).content_type("text/plain").meta("k", "v"),
    )
    .put("ok/b", ObjectSpec::random(110).tag("class", "gold"))
    .put("t/overwritten", ObjectSpec::random(120))
    .put("t/deleted", ObjectSpec::random(130))
    .put("t/destroyed", ObjectSpec::random(140))
    .put("t/retagged", ObjectSpec::random(150).tag("class", "gold"))
    .put(
        "t/meta-lost",
        ObjectSpec::random(160)
            .content_type("text/plain")
            .meta("owner", "team-a")
            .meta("note", "keep me"),
    )
    .put(
        "t/ctype-lost",
        ObjectSpec::random(170).content_type("text/csv").meta("owner", "team-b"),
    )
    .put("t/conflict", ObjectSpec::random(180))
    .damage("t/conflict", Damage::Newer(ObjectSpec::random(190)))
    .put("t/resurrected", ObjectSpec::random(60))
    .delete("t/resurrected");
    let seeded = sc.seed().await;
    let proxy = Proxy::start();
    let dirs = Dirs::new();
    let out = restore(&seeded, &proxy, &dirs, "restore", &[]);
    assert_eq!(out.code, 0, "a kept conflict is as asked: {out:#?}");

    // Tampering, in a later second than the restored copies.
    next_second().await;
    let (c, b) = (&seeded.primary.client, seeded.primary.name.as_str());
    put(c, b, "t/overwritten", random_bytes(125)).await;
    put(c, b, "t/resurrected", random_bytes(65)).await;
    delete_marker(c, b, "t/deleted").await;
    let destroyed = current_version_id(c, b, "t/destroyed").await;
    c.delete_object()
        .bucket(b)
        .key("t/destroyed")
        .version_id(&destroyed)
        .send()
        .await
        .expect("destroy the restored version");
    let retagged = current_version_id(c, b, "t/retagged").await;
    c.put_object_tagging()
        .bucket(b)
        .key("t/retagged")
        .version_id(&retagged)
        .tagging(
            Tagging::builder()
                .tag_set(Tag::builder().key("class").value("bronze").build().unwrap())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("retag");
    // In-place copies with REPLACE: new versions, same bytes, so the same size and ETag.
    let meta = current_version_id(c, b, "t/meta-lost").await;
    c.copy_object()
        .bucket(b)
        .key("t/meta-lost")
        .copy_source(format!("{b}/t/meta-lost?versionId={meta}"))
        .metadata_directive(MetadataDirective::Replace)
        .content_type("text/plain")
        .metadata("owner", "team-a")
        .send()
        .await
        .expect("drop a metadata field");
    let ctype = current_version_id(c, b, "t/ctype-lost").await;
    c.copy_object()
        .bucket(b)
        .key("t/ctype-lost")
        .copy_source(format!("{b}/t/ctype-lost?versionId={ctype}"))
        .metadata_directive(MetadataDirective::Replace)
        .metadata("owner", "team-b")
        .send()
        .await
        .expect("drop Content-Type");
    let head = c
        .head_object()
        .bucket(b)
        .key("t/ctype-lost")
        .send()
        .await
        .expect("head");
    assert_ne!(head.content_type(), Some("text/csv"), "the copy dropped Content-Type");

    let n = 10u64;
    let all_bytes: u64 = (0..9).map(|i| 100 + 10 * i).sum();

    // Listing only.
    let mark = proxy.mark();
    let out = verify(&seeded, &proxy, &dirs, "shallow", &[]);
    assert_eq!(out.code, 1, "{out:#?}");
    let rows = by_key(&read_csv(&dirs.report("shallow").join("verify.csv")));
    assert_eq!(rows.len() as u64, n);
    assert_row(
        &rows,
        "t/overwritten",
        "conflict-kept",
        &["primary version is newer and differs"],
    );
    assert_row(
        &rows,
        "t/deleted",
        "conflict-kept",
        &["primary delete marker is newer than the replica version"],
    );
    assert_row(&rows, "t/destroyed", "missing", &["no current version in the primary"]);
    assert_row(
        &rows,
        "t/conflict",
        "conflict-kept",
        &["primary version is newer and differs"],
    );
    assert_row(
        &rows,
        "t/resurrected",
        "conflict-kept",
        &["primary version is newer than the replica's delete marker"],
    );
    for key in ["ok/a", "ok/b", "t/retagged", "t/meta-lost", "t/ctype-lost"] {
        assert_eq!(col(&rows[key], "status"), "match", "{key}: the listing cannot see it");
    }
    let summary = read_json(&dirs.report("shallow").join("summary.json"));
    // conflict-kept keys count in the target, not as matched.
    assert_eq!(completeness(&summary), (5, n, 100 + 110 + 150 + 160 + 170, all_bytes));
    assert_eq!(summary["counts"]["conflict-kept"], 4);
    assert_eq!(summary["bytes"]["conflict-kept"], 120 + 130 + 180);
    assert_eq!(summary["counts"]["missing"], 1);

    // With --metadata: what HEAD and GetObjectTagging show.
    let out = verify(&seeded, &proxy, &dirs, "metadata", &["--metadata"]);
    assert_eq!(out.code, 1, "{out:#?}");
    let rows = by_key(&read_csv(&dirs.report("metadata").join("verify.csv")));
    assert_row(&rows, "t/retagged", "differs", &["tags", "bronze", "gold"]);
    assert_row(&rows, "t/meta-lost", "differs", &["user metadata", "note"]);
    assert_row(&rows, "t/ctype-lost", "differs", &["Content-Type", "text/csv"]);
    for key in ["ok/a", "ok/b"] {
        assert_eq!(
            col(&rows[key], "status"),
            "match",
            "{key}: a restored copy carries it all"
        );
    }
    assert_eq!(col(&rows["t/retagged"], "dest_version_id"), retagged);
    let summary = read_json(&dirs.report("metadata").join("summary.json"));
    assert_eq!(completeness(&summary), (2, n, 210, all_bytes));

    // The target in which the replica wins over newer primary data.
    let out = verify(&seeded, &proxy, &dirs, "overwrite", &["--overwrite-newer"]);
    assert_eq!(out.code, 1, "{out:#?}");
    let rows = by_key(&read_csv(&dirs.report("overwrite").join("verify.csv")));
    assert_row(
        &rows,
        "t/overwritten",
        "differs",
        &["size 125 in the primary, 120 in the replica", "etag"],
    );
    assert_row(&rows, "t/deleted", "missing", &["no current version in the primary"]);
    assert_row(&rows, "t/destroyed", "missing", &["no current version in the primary"]);
    assert_row(
        &rows,
        "t/conflict",
        "differs",
        &["size 190 in the primary, 180 in the replica"],
    );
    assert_row(
        &rows,
        "t/resurrected",
        "unexpected",
        &["present in the primary, absent in the target"],
    );
    assert!(
        writes(&proxy.requests_since(mark)).is_empty(),
        "verify wrote: {:#?}",
        writes(&proxy.requests_since(mark))
    );
}

/// A copy split into parts (`--multipart-threshold`) gets a new ETag: only the restore's
/// journal shows that it is the replica's version. `verify` has no `--state-dir` and
/// reads the journal from `./.s3-failback`: in the working directory whose state
/// directory the restore used it matches (the bytes too, with `--deep`); from another
/// working directory the same primary is a newer version that differs.
#[tokio::test]
async fn verify_reads_the_restore_journal_from_its_working_directory() {
    let mut sc = Scenario::builder("verify-journal");
    sc.put("split/big", ObjectSpec::random(12_000))
        .put("plain", ObjectSpec::random(100));
    let seeded = sc.seed().await;
    // Last-Modified has one-second resolution (S3-NOTES 38): the copy must land in a later
    // second than the replica's version for "newer" to hold elsewhere.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let proxy = Proxy::start();
    let dirs = Dirs::new();
    let out = restore(
        &seeded,
        &proxy,
        &dirs,
        "restore",
        &["--multipart-threshold", "5KiB", "--part-size", "5KiB"],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let listed = list_all_versions(&seeded.primary.client, &seeded.primary.name, "split/").await;
    let etag = listed[0].etag.clone().unwrap();
    assert!(etag.ends_with("-3"), "split into three parts: {etag}");
    assert_ne!(Some(etag), seeded.replica.current("split/big").unwrap().etag);

    let out = verify(&seeded, &proxy, &dirs, "here", &["--deep"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout.contains("verify: 100.000% (2 of 2 versions"),
        "{}",
        out.stdout
    );

    let elsewhere = Dirs::new();
    let mut args = strings(&[
        "verify",
        "--source",
        &seeded.replica.url(),
        "--dest",
        &seeded.primary.url(),
    ]);
    args.extend(conn_args(&proxy.endpoint()));
    args.extend([
        "--report-dir".to_owned(),
        dirs.report("elsewhere").display().to_string(),
    ]);
    let out = Cli::new(args).current_dir(elsewhere.cwd()).run();
    assert_eq!(out.code, 1, "{out:#?}");
    let rows = by_key(&read_csv(&dirs.report("elsewhere").join("verify.csv")));
    assert_row(
        &rows,
        "split/big",
        "conflict-kept",
        &["primary version is newer and differs"],
    );
    assert_eq!(col(&rows["plain"], "status"), "match");
}

/// Two different 128-byte blocks with the same MD5 have the same size and ETag: the
/// listing, and so a shallow verify, cannot tell them apart (100%); `--deep` compares
/// SHA-256 of the bytes and names the key. No additional checksum is stored (the SDK
/// sends none with `WhenRequired`), so nothing else could tell them apart either.
#[tokio::test]
async fn deep_verify_catches_same_size_same_etag_tampering() {
    let a = Bytes::from(hex::decode(COLLISION_A).unwrap());
    let b = Bytes::from(hex::decode(COLLISION_B).unwrap());
    assert_ne!(a, b);
    let mut sc = Scenario::builder("verify-deep");
    sc.put("plain", ObjectSpec::random(256))
        .damage("plain", Damage::Replicated)
        .put("collide", ObjectSpec::bytes(a.clone()))
        .primary_only("collide", ObjectSpec::bytes(b.clone()));
    let seeded = sc.seed().await;
    // The precondition: same size and ETag (the MD5 of either block), no checksum.
    let etag = |s: &Seeded, primary: bool| {
        let side = if primary { &s.primary } else { &s.replica };
        side.current("collide").unwrap().etag.clone().unwrap()
    };
    assert_eq!(etag(&seeded, true), etag(&seeded, false));
    // The published MD5 of both blocks.
    assert_eq!(etag(&seeded, true), COLLISION_MD5);
    for side in [&seeded.primary, &seeded.replica] {
        let snap = snapshot(&side.client, &side.name).await;
        for v in &snap.versions {
            assert!(v.head.as_ref().unwrap().checksums.is_empty(), "{v:?}");
        }
    }
    let proxy = Proxy::start();
    let dirs = Dirs::new();

    let out = verify(&seeded, &proxy, &dirs, "shallow", &[]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout.contains("verify: 100.000% (2 of 2 versions"),
        "{}",
        out.stdout
    );

    let out = verify(&seeded, &proxy, &dirs, "deep", &["--deep"]);
    assert_eq!(out.code, 1, "{out:#?}");
    let rows = by_key(&read_csv(&dirs.report("deep").join("verify.csv")));
    assert_row(
        &rows,
        "collide",
        "differs",
        &[
            "bytes differ",
            &format!(
                "sha256 {} in the primary, {} in the replica",
                sha256_hex(&b),
                sha256_hex(&a)
            ),
        ],
    );
    assert_eq!(col(&rows["plain"], "status"), "match");
    let summary = read_json(&dirs.report("deep").join("summary.json"));
    assert_eq!(completeness(&summary), (1, 2, 256, 384));
    assert_eq!(summary["deep"], true);
    assert!(writes(&proxy.requests()).is_empty(), "verify wrote");
}

/// `--mode all-versions`: after an all-versions restore, every replica version and
/// delete marker is in the primary's history in order, and verify in the same mode says
/// 100% with one target row per replica entry.
#[tokio::test]
async fn all_versions_verify_passes_after_all_versions_restore() {
    let mut sc = Scenario::builder("verify-all-versions");
    for i in 0..6 {
        let key = format!("h/{i:02}");
        for v in 0..3 {
            sc.put(&key, ObjectSpec::random(100 + 10 * v + i));
        }
    }
    sc.put("dm/mid", ObjectSpec::random(50))
        .delete("dm/mid")
        .put("dm/mid", ObjectSpec::random(55))
        .damage("dm/mid", Damage::Stale { keep: 1 });
    sc.put("dm/end", ObjectSpec::random(60)).delete("dm/end");
    sc.put("rep/a", ObjectSpec::random(70))
        .put("rep/a", ObjectSpec::random(75))
        .damage("rep/a", Damage::Replicated);
    let seeded = sc.seed().await;
    let proxy = Proxy::start();
    let dirs = Dirs::new();
    let entries = seeded.replica.entry_count() as u64;
    let bytes: u64 = seeded.replica.keys.values().flatten().map(|v| v.size_bytes).sum();

    // Before the restore: every version the primary's history lacks is missing, delete
    // markers included (the primary holds nothing of dm/end at all).
    let out = verify(&seeded, &proxy, &dirs, "before", &["--mode", "all-versions"]);
    assert_eq!(out.code, 1, "{out:#?}");
    let rows = read_csv(&dirs.report("before").join("verify.csv"));
    assert_eq!(rows.len() as u64, entries, "{rows:#?}");
    for r in &rows {
        let key = col(r, "key");
        let history = seeded.replica.history(key);
        let v = history
            .iter()
            .find(|v| v.version_id == col(r, "source_version_id"))
            .unwrap_or_else(|| panic!("row for an unknown version: {r:?}"));
        let held = match key {
            "rep/a" => 2,
            "dm/mid" => 1,
            _ => 0,
        };
        let position = history.iter().position(|h| h == v).unwrap();
        let want = if position < held { "match" } else { "missing" };
        assert_eq!(col(r, "status"), want, "{r:?}");
        if want == "missing" && v.is_delete_marker {
            assert!(col(r, "detail").contains("not in the primary's history"), "{r:?}");
        }
    }

    let out = restore(&seeded, &proxy, &dirs, "restore", &["--mode", "all-versions"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let out = verify(&seeded, &proxy, &dirs, "after", &["--mode", "all-versions"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let rows = read_csv(&dirs.report("after").join("verify.csv"));
    assert_eq!(rows.len() as u64, entries, "{rows:#?}");
    assert!(rows.iter().all(|r| col(r, "status") == "match"), "{rows:#?}");
    let summary = read_json(&dirs.report("after").join("summary.json"));
    assert_eq!(completeness(&summary), (entries, entries, bytes, bytes));
    assert_eq!(summary["completeness"]["percent"].as_f64(), Some(100.0));
    // The history really is the replica's, in order: same sizes and ETags, oldest first.
    for (key, history) in &seeded.replica.keys {
        let primary = list_all_versions(&seeded.primary.client, &seeded.primary.name, key).await;
        let shape = |dm: bool, size: u64, etag: Option<String>| (dm, size, etag);
        let want: Vec<_> = history
            .iter()
            .rev()
            .map(|v| shape(v.is_delete_marker, v.size_bytes, v.etag.clone()))
            .collect();
        let got: Vec<_> = primary
            .iter()
            .filter(|v| &v.key == key)
            .map(|v| shape(v.is_delete_marker, v.size_bytes, v.etag.clone()))
            .collect();
        assert_eq!(got, want, "{key:?}: the primary's history, newest first");
    }
}

// ---------------------------------------------------------------------------------------
// audit
// ---------------------------------------------------------------------------------------

/// A primary and a replica, both versioned, in their regions.
async fn audit_buckets(name: &str) -> (Client, String, Client, String) {
    let (pc, rc) = (client(PRIMARY_REGION), client(REPLICA_REGION));
    let (pb, rb) = (
        unique_bucket(&format!("{name}-primary")),
        unique_bucket(&format!("{name}-replica")),
    );
    let opts = BucketOpts::default();
    futures::join!(
        create_bucket(&pc, &pb, PRIMARY_REGION, &opts),
        create_bucket(&rc, &rb, REPLICA_REGION, &opts),
    );
    (pc, pb, rc, rb)
}

/// Writes the same bytes to both sides: what replication would have done, except that
/// moto cannot keep the version id (S3-NOTES 48), so audit matches them by content.
async fn replicated(pc: &Client, pb: &str, rc: &Client, rb: &str, key: &str, body: Bytes) {
    let (_, pe) = put(pc, pb, key, body.clone()).await;
    let (_, re) = put(rc, rb, key, body).await;
    assert_eq!(pe, re);
}

/// Rows of an audit report as (key, status, side).
fn audit_findings(rows: &[Row]) -> BTreeSet<(String, String, String)> {
    rows.iter()
        .map(|r| {
            (
                col(r, "key").to_owned(),
                col(r, "status").to_owned(),
                col(r, "side").to_owned(),
            )
        })
        .collect()
}

fn finding(key: &str, status: &str, side: &str) -> (String, String, String) {
    (key.to_owned(), status.to_owned(), side.to_owned())
}

/// Seeded gaps: an old and a young primary version the replica lacks, a version written
/// on the replica alone, and a replica delete marker the primary lacks. `--max-lag`
/// splits the gaps into `missing` and `lagging`; the summary gives the lag (the oldest
/// gap's age); exit 1 only with `missing`; `--all` adds the `ok` rows. moto never sets
/// `x-amz-replication-status`, so a replica-only version's HEAD shows no `REPLICA`
/// status and audit calls it `written-on-replica` (on S3 a replica the primary lost is
/// `extra`; `src/audit.rs` covers that with canned HEADs). Audit writes nothing.
#[tokio::test]
async fn audit_finds_gaps_and_their_lag() {
    let (pc, pb, rc, rb) = audit_buckets("audit-gaps").await;
    for key in ["rep/a", "rep/b"] {
        replicated(&pc, &pb, &rc, &rb, key, random_bytes(64)).await;
    }
    let (old_gap, _) = put(&pc, &pb, "old/gap", random_bytes(100)).await;
    let old_written = Instant::now();
    put(&rc, &rb, "ronly/x", random_bytes(30)).await;
    delete_marker(&rc, &rb, "rep/b").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (new_gap, _) = put(&pc, &pb, "new/gap", random_bytes(110)).await;
    let proxy = Proxy::start();
    let dirs = Dirs::new();

    // The old gap is older than 3 s, the young one is not.
    let out = audit(&pb, &rb, &proxy, &dirs, "lag3s", &["--max-lag", "3s"]);
    let elapsed = old_written.elapsed().as_secs();
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("no replication configuration"),
        "warns that nothing replicates: {}",
        out.stderr
    );
    let rows = read_csv(&dirs.report("lag3s").join("audit.csv"));
    assert_eq!(
        audit_findings(&rows),
        BTreeSet::from([
            finding("old/gap", "missing", "primary"),
            finding("new/gap", "lagging", "primary"),
            finding("ronly/x", "written-on-replica", "replica"),
            finding("rep/b", "extra", "replica"),
        ])
    );
    let keyed = by_key(&rows);
    assert_eq!(col(&keyed["old/gap"], "version_id"), old_gap);
    assert_eq!(col(&keyed["old/gap"], "size"), "100");
    assert!(col(&keyed["old/gap"], "detail").contains("not in the replica after"));
    assert_eq!(col(&keyed["new/gap"], "version_id"), new_gap);
    assert!(col(&keyed["new/gap"], "detail").contains("not in the replica yet"));
    assert_eq!(col(&keyed["ronly/x"], "replication_status"), "");
    assert!(col(&keyed["ronly/x"], "detail").contains("written on the replica directly"));
    assert_eq!(col(&keyed["rep/b"], "size"), "", "a delete marker has no size");
    let summary = read_json(&dirs.report("lag3s").join("summary.json"));
    assert_eq!(summary["command"], "audit");
    assert_eq!(summary["rules"]["source"], "none");
    for (status, n) in [
        ("missing", 1),
        ("lagging", 1),
        ("written-on-replica", 1),
        ("extra", 1),
        ("ok", 0),
        ("unprotected", 0),
        ("failed", 0),
    ] {
        assert_eq!(summary["counts"][status], n, "{status}");
    }
    assert_eq!(summary["bytes"]["missing"], 100);
    let lag = summary["lag_seconds"].as_u64().expect("lag_seconds");
    assert!(
        (5..=elapsed + 2).contains(&lag),
        "lag {lag} s, {elapsed} s since the old gap"
    );
    assert_eq!(summary["max_lag_seconds"], 3);
    assert_digest(&summary, &dirs.report("lag3s"), "audit.csv");
    assert!(out.stdout.contains("1 missing, 1 lagging"), "{}", out.stdout);

    // A generous --max-lag: every gap is lagging, and lagging or extra versions do not
    // fail the run.
    let out = audit(&pb, &rb, &proxy, &dirs, "lag1h", &["--max-lag", "1h"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let rows = read_csv(&dirs.report("lag1h").join("audit.csv"));
    assert_eq!(
        audit_findings(&rows),
        BTreeSet::from([
            finding("old/gap", "lagging", "primary"),
            finding("new/gap", "lagging", "primary"),
            finding("ronly/x", "written-on-replica", "replica"),
            finding("rep/b", "extra", "replica"),
        ])
    );

    // --max-lag 0s: every gap is missing; --all lists the versions that are fine.
    let out = audit(&pb, &rb, &proxy, &dirs, "all", &["--max-lag", "0s", "--all"]);
    assert_eq!(out.code, 1, "{out:#?}");
    let rows = read_csv(&dirs.report("all").join("audit.csv"));
    assert_eq!(
        audit_findings(&rows),
        BTreeSet::from([
            finding("rep/a", "ok", "primary"),
            finding("rep/b", "ok", "primary"),
            finding("old/gap", "missing", "primary"),
            finding("new/gap", "missing", "primary"),
            finding("ronly/x", "written-on-replica", "replica"),
            finding("rep/b", "extra", "replica"),
        ])
    );
    assert!(writes(&proxy.requests()).is_empty(), "audit wrote");
}

/// A `--replication-config` file in the form `aws s3api get-bucket-replication` prints.
fn rules_file(dirs: &Dirs, name: &str, rules: Value) -> String {
    let path = dirs.path(name);
    let doc = json!({
        "ReplicationConfiguration": {
            "Role": "arn:aws:iam::123456789012:role/replication",
            "Rules": rules,
        }
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    path.display().to_string()
}

/// Replication rules from files: keys outside a prefix-scoped rule are `unprotected` (one
/// row each, counted with bytes per prefix, never `missing`); a rule without delete-marker
/// replication makes an unreplicated primary delete marker `delete-not-replicated`; a
/// rule towards another bucket leaves every key unprotected; a malformed or missing
/// file is exit 2 naming it, before any report.
#[tokio::test]
async fn audit_judges_by_replication_rules_files() {
    let (pc, pb, rc, rb) = audit_buckets("audit-rules").await;
    replicated(&pc, &pb, &rc, &rb, "data/a", random_bytes(50)).await;
    put(&pc, &pb, "data/gap", random_bytes(10)).await;
    replicated(&pc, &pb, &rc, &rb, "data/del", random_bytes(20)).await;
    next_second().await;
    let marker = delete_marker(&pc, &pb, "data/del").await;
    put(&pc, &pb, "logs/x", random_bytes(100)).await;
    put(&pc, &pb, "logs/y", random_bytes(30)).await;
    let (logs_y, _) = put(&pc, &pb, "logs/y", random_bytes(40)).await;
    put(&pc, &pb, "top.txt", random_bytes(7)).await;
    let proxy = Proxy::start();
    let dirs = Dirs::new();
    let replica_arn = format!("arn:aws:s3:::{rb}");

    // Only data/ replicates, delete markers included.
    let prefix_rule = rules_file(
        &dirs,
        "prefix.json",
        json!([{
            "ID": "data-only",
            "Priority": 1,
            "Status": "Enabled",
            "Filter": {"Prefix": "data/"},
            "DeleteMarkerReplication": {"Status": "Enabled"},
            "Destination": {"Bucket": replica_arn},
        }]),
    );
    let out = audit(
        &pb,
        &rb,
        &proxy,
        &dirs,
        "prefix",
        &["--max-lag", "0s", "--replication-config", &prefix_rule],
    );
    assert_eq!(out.code, 1, "{out:#?}");
    let rows = read_csv(&dirs.report("prefix").join("audit.csv"));
    assert_eq!(
        audit_findings(&rows),
        BTreeSet::from([
            finding("data/gap", "missing", "primary"),
            finding("data/del", "missing", "primary"),
            finding("logs/x", "unprotected", "primary"),
            finding("logs/y", "unprotected", "primary"),
            finding("top.txt", "unprotected", "primary"),
        ]),
        "one unprotected row per key outside data/, no missing rows for them"
    );
    let keyed = by_key(&rows);
    assert_eq!(col(&keyed["logs/y"], "version_id"), logs_y, "the current version");
    assert_eq!(col(&keyed["logs/y"], "size"), "40");
    assert_eq!(col(&keyed["data/del"], "version_id"), marker);
    assert_eq!(col(&keyed["data/gap"], "rule_id"), "data-only");
    assert_eq!(col(&keyed["logs/x"], "rule_id"), "");
    let summary = read_json(&dirs.report("prefix").join("summary.json"));
    assert_eq!(
        summary["unprotected_by_prefix"],
        json!({"logs/": {"objects": 2, "bytes": 140}, "": {"objects": 1, "bytes": 7}})
    );
    assert_eq!(summary["counts"]["unprotected"], 3);
    assert_eq!(summary["bytes"]["unprotected"], 147);
    assert_eq!(summary["counts"]["missing"], 2);
    assert!(
        summary["rules"]["source"].as_str().unwrap().contains(&prefix_rule),
        "{:#}",
        summary["rules"]
    );

    // The whole bucket replicates, delete markers do not.
    let no_dm_rule = rules_file(
        &dirs,
        "no-dm.json",
        json!([{
            "ID": "no-deletes",
            "Priority": 1,
            "Status": "Enabled",
            "Filter": {},
            "DeleteMarkerReplication": {"Status": "Disabled"},
            "Destination": {"Bucket": replica_arn},
        }]),
    );
    let out = audit(
        &pb,
        &rb,
        &proxy,
        &dirs,
        "no-dm",
        &["--max-lag", "1h", "--replication-config", &no_dm_rule],
    );
    assert_eq!(out.code, 0, "delete-not-replicated and lagging do not fail: {out:#?}");
    let rows = read_csv(&dirs.report("no-dm").join("audit.csv"));
    let found = audit_findings(&rows);
    assert!(
        found.contains(&finding("data/del", "delete-not-replicated", "primary")),
        "{found:#?}"
    );
    let del = rows.iter().find(|r| col(r, "key") == "data/del").expect("data/del row");
    assert!(col(del, "detail").contains("no-deletes"), "{del:?}");
    assert_eq!(col(del, "version_id"), marker);
    let lagging: BTreeSet<&str> = rows
        .iter()
        .filter(|r| col(r, "status") == "lagging")
        .map(|r| col(r, "key"))
        .collect();
    assert_eq!(lagging, BTreeSet::from(["data/gap", "logs/x", "logs/y", "top.txt"]));
    assert_eq!(rows.len(), 6, "logs/y has two versions: {rows:#?}");

    // The only rule replicates to another bucket: nothing protects this replica.
    let elsewhere = rules_file(
        &dirs,
        "elsewhere.json",
        json!([{
            "ID": "to-elsewhere",
            "Priority": 1,
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "DeleteMarkerReplication": {"Status": "Enabled"},
            "Destination": {"Bucket": "arn:aws:s3:::some-other-bucket"},
        }]),
    );
    let out = audit(
        &pb,
        &rb,
        &proxy,
        &dirs,
        "elsewhere",
        &["--max-lag", "0s", "--replication-config", &elsewhere],
    );
    assert_eq!(out.code, 1, "{out:#?}");
    let rows = read_csv(&dirs.report("elsewhere").join("audit.csv"));
    assert_eq!(
        audit_findings(&rows),
        ["data/a", "data/del", "data/gap", "logs/x", "logs/y", "top.txt"]
            .into_iter()
            .map(|k| finding(k, "unprotected", "primary"))
            .collect::<BTreeSet<_>>()
    );
    let summary = read_json(&dirs.report("elsewhere").join("summary.json"));
    let why = summary["rules"]["detail"].as_str().unwrap_or_default();
    assert!(
        why.contains(&rb) && why.contains("unprotected"),
        "{:#}",
        summary["rules"]
    );
    assert_eq!(
        summary["unprotected_by_prefix"],
        json!({
            "data/": {"objects": 3, "bytes": 60},
            "logs/": {"objects": 2, "bytes": 140},
            "": {"objects": 1, "bytes": 7},
        })
    );

    // A malformed file, and a missing one: exit 2 naming the file, nothing written.
    let malformed = dirs.path("malformed.json");
    std::fs::write(
        &malformed,
        r#"{"ReplicationConfiguration": {"Rules": [{"ID": "r", "Status": "Sometimes", "Destination": {"Bucket": "x"}}]}}"#,
    )
    .unwrap();
    let malformed = malformed.display().to_string();
    let missing_file = dirs.path("no-such-rules.json").display().to_string();
    for (run, file) in [("malformed", &malformed), ("missing-file", &missing_file)] {
        let out = audit(&pb, &rb, &proxy, &dirs, run, &["--replication-config", file]);
        assert_eq!(out.code, 2, "{run}: {out:#?}");
        assert!(out.stderr.contains(file.as_str()), "{run}: {}", out.stderr);
        assert!(!dirs.report(run).exists(), "{run}: a report was written");
    }
    assert!(writes(&proxy.requests()).is_empty(), "audit wrote");
}

/// Without `--replication-config`, audit reads the rules with GetBucketReplication. moto
/// keeps only the rule's id, priority, status and destination bucket (S3-NOTES 47): the
/// `data/` filter comes back empty, so the rule covers every key (`logs/x` is `missing`
/// under it, not `unprotected`), and delete-marker replication reads Disabled, so the
/// primary's delete marker is `delete-not-replicated`. A configuration towards another
/// bucket, which moto does keep, leaves every key unprotected.
#[tokio::test]
async fn audit_reads_rules_from_get_bucket_replication() {
    let (pc, pb, rc, rb) = audit_buckets("audit-server-rules").await;
    replicated(&pc, &pb, &rc, &rb, "data/a", random_bytes(50)).await;
    replicated(&pc, &pb, &rc, &rb, "data/del", random_bytes(20)).await;
    next_second().await;
    delete_marker(&pc, &pb, "data/del").await;
    put(&pc, &pb, "logs/x", random_bytes(100)).await;
    let proxy = Proxy::start();
    let dirs = Dirs::new();

    let put_rule = |bucket_arn: String| {
        let pc = pc.clone();
        let pb = pb.clone();
        async move {
            let rule = ReplicationRule::builder()
                .id("to-replica")
                .priority(1)
                .status(ReplicationRuleStatus::Enabled)
                .filter(ReplicationRuleFilter::builder().prefix("data/").build())
                .delete_marker_replication(
                    DeleteMarkerReplication::builder()
                        .status(DeleteMarkerReplicationStatus::Enabled)
                        .build(),
                )
                .destination(
                    Destination::builder()
                        .bucket(bucket_arn)
                        .storage_class(StorageClass::StandardIa)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap();
            pc.put_bucket_replication()
                .bucket(&pb)
                .replication_configuration(
                    ReplicationConfiguration::builder()
                        .role("arn:aws:iam::123456789012:role/replication")
                        .rules(rule)
                        .build()
                        .unwrap(),
                )
                .send()
                .await
                .expect("put bucket replication");
        }
    };
    put_rule(format!("arn:aws:s3:::{rb}")).await;
    // What the server kept, so that a change in moto shows here first.
    let kept = pc
        .get_bucket_replication()
        .bucket(&pb)
        .send()
        .await
        .expect("get bucket replication");
    let rule = &kept.replication_configuration().unwrap().rules()[0];
    assert_eq!(rule.id(), Some("to-replica"));
    assert_ne!(
        rule.filter().and_then(|f| f.prefix()),
        Some("data/"),
        "moto now keeps the filter: audit should then report logs/x as unprotected"
    );

    let out = audit(&pb, &rb, &proxy, &dirs, "server", &["--max-lag", "0s"]);
    assert_eq!(out.code, 1, "{out:#?}");
    let rows = read_csv(&dirs.report("server").join("audit.csv"));
    assert_eq!(
        audit_findings(&rows),
        BTreeSet::from([
            finding("logs/x", "missing", "primary"),
            finding("data/del", "delete-not-replicated", "primary"),
        ])
    );
    assert!(rows.iter().all(|r| col(r, "rule_id") == "to-replica"), "{rows:#?}");
    let summary = read_json(&dirs.report("server").join("summary.json"));
    assert_eq!(summary["rules"]["source"], "GetBucketReplication");
    assert_eq!(summary["unprotected_by_prefix"], json!({}));

    put_rule("arn:aws:s3:::some-other-bucket".to_owned()).await;
    let out = audit(&pb, &rb, &proxy, &dirs, "elsewhere", &["--max-lag", "0s"]);
    assert_eq!(out.code, 1, "{out:#?}");
    let rows = read_csv(&dirs.report("elsewhere").join("audit.csv"));
    assert_eq!(
        audit_findings(&rows),
        ["data/a", "data/del", "logs/x"]
            .into_iter()
            .map(|k| finding(k, "unprotected", "primary"))
            .collect::<BTreeSet<_>>()
    );
    let summary = read_json(&dirs.report("elsewhere").join("summary.json"));
    assert!(
        summary["rules"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("no enabled replication rule")),
        "{:#}",
        summary["rules"]
    );
    assert!(
        writes(&proxy.requests()).is_empty(),
        "audit wrote: {:#?}",
        writes(&proxy.requests())
    );
}

// ---------------------------------------------------------------------------------------
// drill
// ---------------------------------------------------------------------------------------

/// A scratch bucket (versioned, ACLs disabled) with `extra` objects written first.
async fn scratch_bucket(name: &str, extra: &[(&str, usize)]) -> (Client, String) {
    let c = client(PRIMARY_REGION);
    let b = unique_bucket(&format!("{name}-scratch"));
    create_bucket(&c, &b, PRIMARY_REGION, &BucketOpts::modern()).await;
    for (key, size) in extra {
        put(&c, &b, key, random_bytes(*size)).await;
    }
    (c, b)
}

/// The `f64` field `name` of a JSON report.
#[track_caller]
fn number(report: &Value, name: &str) -> f64 {
    report[name]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {name:?} in {report:#}"))
}

/// A full drill into `s3://SCRATCH/drill` restores every live replica key there,
/// verifies it and reports (restore.csv, verify.csv, drill.md, drill.json, summary.json
/// with the RTO, RPO and throughput figures). A second drill over its own earlier output
/// is allowed, finds nothing to copy, and with `--cleanup` deletes, by version id,
/// exactly what the drills wrote: the scratch prefix ends with no version and no delete
/// marker. The replica and the primary are untouched (no write request, same snapshot),
/// and so is the scratch bucket's other data, `drill-other/` included, which the prefix
/// `drill` does not select. A third drill after cleanup works again.
#[tokio::test]
async fn drill_restores_verifies_reports_and_cleans_up() {
    let mut sc = Scenario::builder("drill-full");
    for i in 0..10 {
        sc.versions(&format!("d/{i:02}"), 1 + i % 2, 200 + i);
    }
    sc.put("d/gone", ObjectSpec::random(80)).delete("d/gone");
    sc.put("mp/x", ObjectSpec::multipart_uniform(5120, 2));
    sc.damage_all(Damage::Replicated);
    let seeded = sc.seed().await;
    let (sc_client, scratch) = scratch_bucket("drill-full", &[("keep/outside", 40), ("drill-other/x", 41)]).await;
    let source = seeded.replica.url();
    let scratch_url = format!("s3://{scratch}/drill");
    let replica_before = snapshot(&seeded.replica.client, &seeded.replica.name).await;
    let primary_before = snapshot(&seeded.primary.client, &seeded.primary.name).await;
    let scratch_before = snapshot(&sc_client, &scratch).await;
    let live = seeded.replica.live();
    let live_bytes: u64 = live.values().map(|v| v.size_bytes).sum();
    let newest = list_all_versions(&seeded.replica.client, &seeded.replica.name, "")
        .await
        .iter()
        .map(|v| v.last_modified)
        .max()
        .unwrap();
    let proxy = Proxy::start();
    let dirs = Dirs::new();

    // 1. The drill, kept.
    let rpo_floor = jiff::Timestamp::now().duration_since(newest).as_secs() as u64;
    let out = drill(&source, &scratch_url, &proxy, &dirs, "first", &[]);
    let rpo_ceiling = jiff::Timestamp::now().duration_since(newest).as_secs() as u64 + 1;
    assert_eq!(out.code, 0, "{out:#?}");
    let dir = dirs.report("first");
    for name in ["restore.csv", "verify.csv", "drill.md", "drill.json", "summary.json"] {
        assert!(dir.join(name).is_file(), "{name} missing");
        assert!(
            out.stdout.contains(&dir.join(name).display().to_string()),
            "{name} not on stdout"
        );
    }
    let restored = read_csv(&dir.join("restore.csv"));
    let done: BTreeSet<&str> = restored
        .iter()
        .filter(|r| col(r, "status") == "done")
        .map(|r| col(r, "key"))
        .collect();
    assert_eq!(done, live.keys().copied().collect::<BTreeSet<_>>());
    let st = statuses(&read_csv(&dir.join("verify.csv")));
    assert_eq!(st.len(), seeded.replica.keys.len());
    assert!(st.values().all(|s| s == "match"), "{st:#?}");
    let in_scratch: BTreeMap<String, (u64, Option<String>)> = list_all_versions(&sc_client, &scratch, "drill/")
        .await
        .into_iter()
        .map(|v| {
            assert!(v.is_latest && !v.is_delete_marker, "{v:?}");
            (v.key.clone(), (v.size_bytes, v.etag.clone()))
        })
        .collect();
    let want: BTreeMap<String, (u64, Option<String>)> = live
        .iter()
        .map(|(k, v)| (format!("drill/{k}"), (v.size_bytes, v.etag.clone())))
        .collect();
    assert_eq!(in_scratch, want, "the scratch prefix holds the replica's current state");

    let report = read_json(&dir.join("drill.json"));
    assert_eq!(report["objects_restored"], live.len());
    assert_eq!(report["bytes_restored"], live_bytes);
    assert_eq!(report["objects_failed"], 0);
    assert_eq!(report["verify_complete"], true);
    assert_eq!(number(&report, "verify_percent"), 100.0);
    assert_eq!(report["replica_objects_to_restore"], live.len());
    let wall = number(&report, "wall_seconds");
    let ops = number(&report, "throughput_objects_per_s");
    let bps = number(&report, "throughput_bytes_per_s");
    assert!(wall > 0.0 && ops > 0.0 && bps > 0.0, "{report:#}");
    assert!(
        (ops - live.len() as f64 / wall).abs() < 1e-6 * ops.max(1.0),
        "{report:#}"
    );
    assert!(
        (bps - live_bytes as f64 / wall).abs() < 1e-6 * bps.max(1.0),
        "{report:#}"
    );
    // The whole replica was restored: the projection is the time it took.
    assert!((number(&report, "rto_seconds") - wall).abs() < 1e-6, "{report:#}");
    let rpo = report["rpo_seconds"].as_i64().expect("rpo_seconds") as u64;
    assert!(
        (rpo_floor..=rpo_ceiling).contains(&rpo),
        "rpo {rpo} outside {rpo_floor}..={rpo_ceiling}"
    );
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(summary["command"], "drill");
    for f in ["rto_seconds", "throughput_objects_per_s", "throughput_bytes_per_s"] {
        assert_eq!(summary[f], report[f], "{f}");
    }
    assert_eq!(summary["rpo_seconds"], report["rpo_seconds"]);
    assert_eq!(
        completeness(&summary),
        (
            seeded.replica.keys.len() as u64,
            seeded.replica.keys.len() as u64,
            live_bytes,
            live_bytes
        )
    );
    for name in ["restore.csv", "verify.csv"] {
        assert_digest(&summary, &dir, name);
    }
    let md = std::fs::read_to_string(dir.join("drill.md")).unwrap();
    assert!(md.contains("# Restore drill") && md.contains("projected RTO"), "{md}");

    // 2. Again with --cleanup: its own earlier output is no reason to refuse.
    let out = drill(&source, &scratch_url, &proxy, &dirs, "second", &["--cleanup"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let report = read_json(&dirs.report("second").join("drill.json"));
    assert_eq!(report["objects_restored"], 0, "nothing new to copy: {report:#}");
    assert_eq!(report["verify_complete"], true);
    assert_eq!(
        report["cleanup"],
        json!({"versions_deleted": live.len(), "versions_failed": 0, "scratch_empty": true})
    );
    assert!(
        list_all_versions(&sc_client, &scratch, "drill/").await.is_empty(),
        "the scratch prefix is empty: no versions, no delete markers"
    );
    assert_same_snapshot(&snapshot(&sc_client, &scratch).await, &scratch_before);

    // 3. A drill after cleanup restores and cleans up again.
    let out = drill(&source, &scratch_url, &proxy, &dirs, "third", &["--cleanup"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let report = read_json(&dirs.report("third").join("drill.json"));
    assert_eq!(report["objects_restored"], live.len());
    assert_eq!(report["verify_complete"], true);
    assert_eq!(report["cleanup"]["scratch_empty"], true);
    assert_eq!(report["cleanup"]["versions_failed"], 0);
    assert!(list_all_versions(&sc_client, &scratch, "drill/").await.is_empty());
    assert_same_snapshot(&snapshot(&sc_client, &scratch).await, &scratch_before);

    // 4. An all-versions drill recreates the whole history, delete markers included, and
    // its cleanup removes those delete markers too.
    let out = drill(
        &source,
        &scratch_url,
        &proxy,
        &dirs,
        "history",
        &["--mode", "all-versions", "--cleanup"],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let report = read_json(&dirs.report("history").join("drill.json"));
    let entries = seeded.replica.entry_count();
    assert_eq!(report["objects_restored"], entries, "{report:#}");
    assert_eq!(report["verify_complete"], true);
    assert_eq!(
        report["cleanup"],
        json!({"versions_deleted": entries, "versions_failed": 0, "scratch_empty": true})
    );
    let markers_written = proxy
        .requests_of(S3Op::DeleteObject)
        .iter()
        .filter(|r| r.version_id().is_none())
        .count();
    assert_eq!(markers_written, 1, "d/gone's delete marker was recreated");
    assert!(list_all_versions(&sc_client, &scratch, "drill/").await.is_empty());
    assert_same_snapshot(&snapshot(&sc_client, &scratch).await, &scratch_before);

    // Nothing but the scratch prefix was written; versioned deletes only there.
    let requests = proxy.requests();
    for w in writes(&requests) {
        assert_eq!(w.bucket.as_deref(), Some(scratch.as_str()), "{w:#?}");
        let key = w.key.as_deref().unwrap_or_default();
        assert!(key.starts_with("drill/"), "write outside the scratch prefix: {w:#?}");
    }
    assert_same_snapshot(
        &snapshot(&seeded.replica.client, &seeded.replica.name).await,
        &replica_before,
    );
    assert_same_snapshot(
        &snapshot(&seeded.primary.client, &seeded.primary.name).await,
        &primary_before,
    );
}

/// `--sample 5` restores the versions of exactly five keys and verifies only those. A
/// drill refuses, with exit 2 and nothing written (no report, no state, no request that
/// writes), a scratch location in the source bucket and a prefix holding data it did not
/// write.
#[tokio::test]
async fn drill_sample_and_refusals() {
    let mut sc = Scenario::builder("drill-sample");
    for i in 0..12 {
        sc.put(&format!("s/{i:02}"), ObjectSpec::random(100 + i));
    }
    let seeded = sc.seed().await;
    let (sc_client, scratch) = scratch_bucket("drill-sample", &[("foreign/x", 10)]).await;
    let source = seeded.replica.url();
    let proxy = Proxy::start();

    let dirs = Dirs::new();
    let out = drill(
        &source,
        &format!("s3://{scratch}/sample"),
        &proxy,
        &dirs,
        "sample",
        &["--sample", "5"],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let dir = dirs.report("sample");
    let restored = read_csv(&dir.join("restore.csv"));
    let keys: BTreeSet<&str> = restored.iter().map(|r| col(r, "key")).collect();
    assert_eq!(keys.len(), 5, "{restored:#?}");
    assert_eq!(restored.len(), 5, "{restored:#?}");
    assert!(restored.iter().all(|r| col(r, "status") == "done"), "{restored:#?}");
    let verified = read_csv(&dir.join("verify.csv"));
    assert_eq!(
        verified.iter().map(|r| col(r, "key")).collect::<BTreeSet<_>>(),
        keys,
        "verify checks the sample only"
    );
    assert!(verified.iter().all(|r| col(r, "status") == "match"));
    let in_scratch: BTreeSet<String> = list_all_versions(&sc_client, &scratch, "sample/")
        .await
        .into_iter()
        .map(|v| v.key)
        .collect();
    assert_eq!(
        in_scratch,
        keys.iter().map(|k| format!("sample/{k}")).collect::<BTreeSet<_>>()
    );
    let report = read_json(&dir.join("drill.json"));
    assert_eq!(report["sample_keys"], 5);
    assert_eq!(report["objects_restored"], 5);
    assert_eq!(report["replica_objects_to_restore"], 12);
    let ops = number(&report, "throughput_objects_per_s");
    let bps = number(&report, "throughput_bytes_per_s");
    let all_bytes: f64 = (0..12).map(|i| 100.0 + i as f64).sum();
    let projected = (12.0 / ops).max(all_bytes / bps);
    assert!(
        (number(&report, "rto_seconds") - projected).abs() < 1e-6 * projected,
        "the RTO projects the whole replica: {report:#}"
    );
    assert!(number(&report, "rto_seconds") > number(&report, "wall_seconds"));
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(completeness(&summary).0, 5);
    assert_eq!(completeness(&summary).1, 5);

    // Refusals.
    let replica_before = snapshot(&seeded.replica.client, &seeded.replica.name).await;
    let scratch_before = snapshot(&sc_client, &scratch).await;
    let mark = proxy.mark();
    let in_source = format!("{}/scratch", seeded.replica.url());
    let foreign = format!("s3://{scratch}/foreign");
    for (run, scratch_url, says) in [
        ("in-source", in_source.as_str(), "source bucket"),
        ("foreign", foreign.as_str(), "did not write"),
    ] {
        let dirs = Dirs::new();
        let out = drill(&source, scratch_url, &proxy, &dirs, run, &["--cleanup"]);
        assert_eq!(out.code, 2, "{run}: {out:#?}");
        assert!(out.stderr.contains(says), "{run}: {}", out.stderr);
        assert!(!dirs.report(run).exists(), "{run}: a report was written");
        assert!(!dirs.state().exists(), "{run}: a state directory was written");
    }
    let foreign_out = drill(&source, &foreign, &proxy, &Dirs::new(), "foreign-again", &[]);
    assert!(
        foreign_out.stderr.contains("foreign/x"),
        "names the data: {}",
        foreign_out.stderr
    );
    assert!(writes(&proxy.requests_since(mark)).is_empty(), "a refused drill wrote");
    assert_same_snapshot(
        &snapshot(&seeded.replica.client, &seeded.replica.name).await,
        &replica_before,
    );
    assert_same_snapshot(&snapshot(&sc_client, &scratch).await, &scratch_before);
}
