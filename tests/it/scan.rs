//! Issue 3, `scan`: every version and delete marker of a bucket, in S3's order, written as
//! the inventory CSV by the binary and streamed by the library; the report directory; and
//! setup errors as one line with exit code 2.
//!
//! moto copies every version of a bucket for each ListObjectVersions page (0.3 to 0.5 ms a
//! version here), so a page of a 1,000-version bucket costs about half a second whatever
//! its size, and pages of 7 over it would take well over a minute a scan. The smallest
//! pages (7 and 2 entries: page boundaries inside histories, between versions and delete
//! markers, between prefixes; both listing paths) therefore run over a bucket of about 80
//! entries that holds every kind of entry; the 1,000+ version bucket (several versions a
//! key, delete markers, multipart versions, the special keys) goes through pages of 100,
//! about 25 requests for its partitioned scan.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aws_sdk_s3::types::StorageClass;
use jiff::Timestamp;
use s3_failback::inventory::{INVENTORY_COLUMNS, InventoryReader};
use s3_failback::model::VersionRecord;
use sha2::Digest;

use crate::support::proxy::{Fault, Proxy, S3Op};
use crate::support::scenario::{ObjectSpec, Scenario, SeededBucket, key_of_1024_bytes, special_keys};
use crate::support::{
    BucketOpts, Cli, CliOutput, PRIMARY_REGION, REPLICA_REGION, TEST_ACCESS_KEY, TEST_SECRET_KEY, Versioning, client,
    client_for, create_bucket, endpoint, list_all_versions, server, shapes, unique_bucket,
};

/// The inventory columns DESIGN.md requires, in order.
const MINIMUM_COLUMNS: [&str; 8] = [
    "key",
    "version_id",
    "is_latest",
    "is_delete_marker",
    "last_modified",
    "size",
    "etag",
    "storage_class",
];

// ---------------------------------------------------------------------------------------
// Running the binary

/// An AWS config and credentials file that exist and are empty: "no profiles", without
/// the SDK's warning about a configured file that is missing, so that stderr holds only
/// what the tool itself writes.
fn empty_aws_file() -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("scan-empty-aws-file");
    std::fs::write(&path, "").expect("write the empty AWS file");
    path
}

/// `s3-failback scan URL` against `endpoint` in `region`, with `extra` flags.
fn scan_cli(url: &str, endpoint: &str, region: &str, extra: &[&str]) -> Cli {
    let mut args = vec![
        "scan",
        url,
        "--endpoint-url",
        endpoint,
        "--region",
        region,
        "--path-style",
    ];
    args.extend_from_slice(extra);
    let empty = empty_aws_file();
    Cli::new(args)
        .env("AWS_CONFIG_FILE", &empty)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
        // A panic would show its backtrace: the error tests look for one.
        .env("RUST_BACKTRACE", "1")
}

/// Asserts a setup error as DESIGN.md wants it: exit 2, nothing on stdout, and on stderr
/// exactly one line, `error: ...`, that contains every one of `needles`; no panic.
#[track_caller]
fn assert_setup_error(out: &CliOutput, needles: &[&str]) {
    assert_eq!(out.code, 2, "exit code; {out:#?}");
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(!out.stderr.contains("stack backtrace"), "{}", out.stderr);
    assert_eq!(out.stdout, "", "stdout of a failed scan");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got:\n{}", out.stderr);
    assert!(lines[0].starts_with("error: "), "{}", lines[0]);
    for needle in needles {
        assert!(lines[0].contains(needle), "{needle:?} missing in: {}", lines[0]);
    }
}

/// Asserts that stderr holds log lines only (levels as the tool's logger writes them).
#[track_caller]
fn assert_logs_only(stderr: &str) {
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let level = line.split_whitespace().next().unwrap_or_default();
        assert!(
            ["INFO", "WARN", "DEBUG", "TRACE"].contains(&level),
            "not a log line on stderr: {line:?}\n{stderr}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The library stream, in a child process

/// Carries a listing request to [`library_listing_in_child`].
const CHILD_REQUEST: &str = "S3_FAILBACK_IT_SCAN_CHILD";

/// A listing through `s3_failback::s3::SourceClient::list_versions`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct LibraryListing {
    endpoint: String,
    region: String,
    bucket: String,
    prefix: String,
    page_size: i32,
    partitions: usize,
    out: PathBuf,
}

/// Runs the library's listing and returns its records.
///
/// `SourceClient::connect` takes its credentials from the standard AWS chain, i.e. from
/// the process environment, and a test cannot set its own process's environment (other
/// tests run on other threads; `set_var` is unsafe and unsafe code is forbidden). So the
/// listing runs in a child process of this test binary with the test credentials in its
/// environment: the same library code, in a process of its own.
fn list_with_library(
    endpoint: &str,
    region: &str,
    bucket: &str,
    prefix: &str,
    page_size: i32,
    partitions: usize,
) -> Vec<VersionRecord> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let request = LibraryListing {
        endpoint: endpoint.to_owned(),
        region: region.to_owned(),
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
        page_size,
        partitions,
        out: dir.path().join("records.jsonl"),
    };
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
    cmd.args([
        "scan::library_listing_in_child",
        "--exact",
        "--ignored",
        "--test-threads=1",
    ]);
    for (name, _) in std::env::vars_os() {
        let Some(n) = name.to_str() else { continue };
        if n.starts_with("AWS_") || n.to_ascii_lowercase().ends_with("_proxy") {
            cmd.env_remove(&name);
        }
    }
    let empty = empty_aws_file();
    let out = cmd
        .env(CHILD_REQUEST, serde_json::to_string(&request).expect("json"))
        .env("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY)
        .env("AWS_CONFIG_FILE", &empty)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run the child listing");
    assert!(
        out.status.success(),
        "the library listing failed ({:?}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&request.out).expect("the child's records");
    text.lines()
        .map(|line| {
            let r: ChildRecord = serde_json::from_str(line).expect("a record line");
            r.into()
        })
        .collect()
}

/// A [`VersionRecord`] as the child writes it, one JSON object per line.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ChildRecord {
    key: String,
    version_id: String,
    is_latest: bool,
    is_delete_marker: bool,
    last_modified: String,
    size_bytes: u64,
    etag: Option<String>,
    storage_class: Option<String>,
    checksum_algorithm: Option<String>,
}

impl From<&VersionRecord> for ChildRecord {
    fn from(r: &VersionRecord) -> Self {
        ChildRecord {
            key: r.key.clone(),
            version_id: r.version_id.clone(),
            is_latest: r.is_latest,
            is_delete_marker: r.is_delete_marker,
            last_modified: r.last_modified.to_string(),
            size_bytes: r.size_bytes,
            etag: r.etag.clone(),
            storage_class: r.storage_class.clone(),
            checksum_algorithm: r.checksum_algorithm.clone(),
        }
    }
}

impl From<ChildRecord> for VersionRecord {
    fn from(r: ChildRecord) -> Self {
        VersionRecord {
            key: r.key,
            version_id: r.version_id,
            is_latest: r.is_latest,
            is_delete_marker: r.is_delete_marker,
            last_modified: r.last_modified.parse().expect("timestamp"),
            size_bytes: r.size_bytes,
            etag: r.etag,
            storage_class: r.storage_class,
            checksum_algorithm: r.checksum_algorithm,
        }
    }
}

/// The child side of [`list_with_library`]; does nothing when run on its own.
#[tokio::test]
#[ignore = "run by list_with_library in a child process, with credentials in its environment"]
async fn library_listing_in_child() {
    use futures::StreamExt;
    use s3_failback::model::{Location, Side};
    use s3_failback::s3::{ListConfig, S3Config, SourceClient};

    let Ok(request) = std::env::var(CHILD_REQUEST) else {
        return;
    };
    let request: LibraryListing = serde_json::from_str(&request).expect("listing request");
    let cfg = S3Config {
        region: Some(request.region.clone()),
        endpoint_url: Some(request.endpoint.clone()),
        path_style: true,
        ..S3Config::new(Side::Source)
    };
    let client = SourceClient::connect(&cfg).await.expect("connect");
    let location = Location::new(request.bucket.clone(), request.prefix.clone());
    let list = ListConfig {
        page_size: request.page_size,
        partitions: request.partitions,
    };
    let records: Vec<VersionRecord> = client
        .list_versions(&location, list)
        .map(|r| r.unwrap_or_else(|e| panic!("listing {location}: {e}")))
        .collect()
        .await;
    let mut file = std::fs::File::create(&request.out).expect("records file");
    for r in &records {
        let line = serde_json::to_string(&ChildRecord::from(r)).expect("json");
        writeln!(file, "{line}").expect("write a record");
    }
}

// ---------------------------------------------------------------------------------------
// Comparing inventories

/// Whether `s` is an RFC 3339 time in UTC: `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let fraction_ok = match b.get(19) {
        Some(b'Z') => b.len() == 20,
        Some(b'.') => b.len() > 21 && digits(20..b.len() - 1) && b[b.len() - 1] == b'Z',
        _ => false,
    };
    digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10)
        && b.get(10) == Some(&b'T')
        && digits(11..13)
        && b.get(13) == Some(&b':')
        && digits(14..16)
        && b.get(16) == Some(&b':')
        && digits(17..19)
        && fraction_ok
}

/// Asserts two sequences equal, showing the first difference rather than both lists.
#[track_caller]
fn assert_same<T: PartialEq + std::fmt::Debug + Clone>(what: &str, got: &[T], want: &[T]) {
    if let Some(i) = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)) {
        let around = |v: &[T]| v[i.saturating_sub(2).min(v.len())..(i + 3).min(v.len())].to_vec();
        panic!(
            "{what}: differ at {i} of {} (got) / {} (want)\ngot:  {:#?}\nwant: {:#?}",
            got.len(),
            want.len(),
            around(got),
            around(want)
        );
    }
}

/// Reads an inventory CSV with the `csv` crate alone: the header and each row's fields as
/// bytes, exactly as written.
fn csv_rows(bytes: &[u8]) -> (Vec<String>, Vec<Vec<Vec<u8>>>) {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes);
    let header = reader.headers().expect("header").iter().map(str::to_owned).collect();
    let rows = reader
        .byte_records()
        .map(|r| r.expect("a CSV row").iter().map(<[u8]>::to_vec).collect())
        .collect();
    (header, rows)
}

/// Checks an inventory CSV field by field, read with the `csv` crate alone, against
/// `listing`: DESIGN.md's columns, verbatim keys, `true`/`false`, RFC 3339 UTC times, ETags
/// without quotes, empty size, etag and class on delete markers.
#[track_caller]
fn assert_csv_matches(csv_bytes: &[u8], listing: &[VersionRecord]) {
    let (header, rows) = csv_rows(csv_bytes);
    assert_eq!(header[..8], MINIMUM_COLUMNS, "inventory header");
    assert_eq!(header, INVENTORY_COLUMNS, "inventory header");
    let text = |f: &[u8]| String::from_utf8(f.to_vec()).expect("UTF-8 field");
    let got: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            assert_eq!(row.len(), INVENTORY_COLUMNS.len());
            let mut fields: Vec<String> = row.iter().map(|f| text(f)).collect();
            // The time is checked for its form and value apart: compare it as a value here.
            let lm = &fields[4];
            assert!(is_rfc3339_utc(lm), "last_modified {lm:?} is not RFC 3339 UTC");
            let parsed: Timestamp = lm.parse().expect("last_modified");
            fields[4] = parsed.as_nanosecond().to_string();
            fields
        })
        .collect();
    let want: Vec<Vec<String>> = listing
        .iter()
        .map(|r| {
            let dm = r.is_delete_marker;
            let etag = r.etag.clone().unwrap_or_default();
            assert!(!etag.contains('"'), "the listing's etag {etag:?}");
            vec![
                r.key.clone(),
                r.version_id.clone(),
                r.is_latest.to_string(),
                dm.to_string(),
                r.last_modified.as_nanosecond().to_string(),
                if dm { String::new() } else { r.size_bytes.to_string() },
                if dm { String::new() } else { etag },
                if dm {
                    String::new()
                } else {
                    r.storage_class.clone().unwrap_or_default()
                },
                // ListObjectVersions on moto never names a checksum algorithm (S3-NOTES 43),
                // and these versions were written without one.
                String::new(),
            ]
        })
        .collect();
    assert_same("inventory rows", &got, &want);
}

/// Reads an inventory back with the crate's own reader.
fn read_inventory(path: &Path) -> Vec<VersionRecord> {
    InventoryReader::open(path)
        .expect("open inventory")
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("read inventory {}: {e}", path.display()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()))
}

/// The counts a scan of `listing` reports.
fn counts(listing: &[VersionRecord]) -> (u64, u64, u64, u64) {
    let keys = listing.iter().map(|r| &r.key).collect::<BTreeSet<_>>().len() as u64;
    let markers = listing.iter().filter(|r| r.is_delete_marker).count() as u64;
    let versions = listing.len() as u64 - markers;
    let bytes = listing.iter().map(|r| r.size_bytes).sum();
    (keys, versions, markers, bytes)
}

/// Asserts that the listing the test support reads from the server is what was seeded:
/// every version and delete marker, S3's order, sizes, ETags and classes. The scans are
/// then compared with this listing, which also carries the server's Last-Modified.
async fn seeded_listing(bucket: &SeededBucket, seeding_started: Timestamp) -> Vec<VersionRecord> {
    let listing = list_all_versions(&bucket.client, &bucket.name, "").await;
    assert_same("the server's listing", &shapes(&listing), &bucket.expected_listing());
    let now = Timestamp::now();
    for r in &listing {
        let lm = r.last_modified;
        assert!(
            lm.as_second() >= seeding_started.as_second() - 2 && lm.as_second() <= now.as_second() + 2,
            "{r:?} was not written during seeding ({seeding_started} to {now})"
        );
    }
    listing
}

// ---------------------------------------------------------------------------------------
// The listing, end to end

/// A bucket of every kind of entry: the special keys (one version each, the 1,024-byte key
/// among them), keys with several versions under several prefixes, delete markers on top,
/// in the middle and twice, multipart versions, other storage classes, and keys that a
/// prefix `dir` must and must not select.
fn every_kind_of_entry(sc: &mut crate::support::scenario::ScenarioBuilder) {
    sc.special_keys()
        .objects("a/", 3, 3, 8)
        .objects("b/", 3, 2, 8)
        .objects("c/d/", 2, 2, 8)
        .put("dm/middle", ObjectSpec::text("v0"))
        .delete("dm/middle")
        .put("dm/middle", ObjectSpec::text("v2"))
        .put("dm/middle", ObjectSpec::text("v3"))
        .put("dm/on-top", ObjectSpec::text("v0"))
        .delete("dm/on-top")
        .put("dm/twice", ObjectSpec::text("v0"))
        .delete("dm/twice")
        .delete("dm/twice")
        .put("mp/uneven", ObjectSpec::multipart(&[6144, 5120, 7168]))
        .put("mp/versions", ObjectSpec::multipart_uniform(5120, 2))
        .put("mp/versions", ObjectSpec::text("single part in between"))
        .put("mp/versions", ObjectSpec::multipart_uniform(5120, 3))
        .put(
            "cold/ia",
            ObjectSpec::random(10).storage_class(StorageClass::StandardIa),
        )
        .put(
            "cold/glacier",
            ObjectSpec::random(10).storage_class(StorageClass::Glacier),
        )
        .put("dir", ObjectSpec::text("the key the prefix names"))
        .put("dir-x", ObjectSpec::text("a sibling, not selected"))
        .put("directory/y", ObjectSpec::text("not under dir/"))
        .versions("zz-last", 3, 8)
        .delete("zz-last");
}

/// Small pages over a bucket of every kind of entry: the library sequential (1 partition)
/// with pages of 7 and partitioned (8) with pages of 2, and the binary (partitioned) with
/// pages of 7, `--out FILE` and `--out -`: every run yields exactly the seeded versions,
/// fields and S3's order, so 1 and 8 partitions agree; every special key survives the CSV
/// byte for byte.
#[tokio::test]
async fn small_pages_yield_every_entry_in_s3_order_by_library_and_binary() {
    let mut sc = Scenario::builder("scan-kinds");
    every_kind_of_entry(&mut sc);
    let started = Timestamp::now();
    let seeded = sc.seed().await;
    let replica = &seeded.replica;
    let listing = seeded_listing(replica, started).await;
    assert!(listing.iter().any(|r| r.is_delete_marker && r.is_latest));
    assert!(listing.iter().any(|r| r.is_delete_marker && !r.is_latest));
    assert!(
        listing
            .iter()
            .any(|r| r.etag.as_deref().is_some_and(|e| e.ends_with("-3")))
    );

    // The library: sequential with pages of 7, partitioned with pages of 2 (the binary below
    // runs the partitioned path with pages of 7).
    for (page_size, partitions) in [(7, 1), (2, 8)] {
        let records = list_with_library(endpoint(), REPLICA_REGION, &replica.name, "", page_size, partitions);
        assert_same(
            &format!("library, pages of {page_size}, {partitions} partitions"),
            &records,
            &listing,
        );
    }

    // A prefix without `/` selects the key itself and the keys under `dir/`, nothing else.
    let dir = list_with_library(endpoint(), REPLICA_REGION, &replica.name, "dir", 2, 8);
    let want: Vec<VersionRecord> = listing
        .iter()
        .filter(|r| r.key == "dir" || r.key.starts_with("dir/"))
        .cloned()
        .collect();
    assert!(want.len() >= 4, "{want:?}");
    assert_same("library, prefix dir", &dir, &want);

    // The binary, through the recording proxy to see the requests it makes.
    let proxy = Proxy::start();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let csv_path = tmp.path().join("inventory.csv");
    let url = replica.url();
    let out = scan_cli(
        &url,
        &proxy.endpoint(),
        REPLICA_REGION,
        &["--page-size", "7", "--out", csv_path.to_str().unwrap()],
    )
    .run();
    assert_eq!(out.code, 0, "{out:#?}");
    assert_logs_only(&out.stderr);
    let csv_bytes = std::fs::read(&csv_path).expect("inventory written");
    assert_csv_matches(&csv_bytes, &listing);
    assert_same("inventory read back", &read_inventory(&csv_path), &listing);

    // Every request asked for 7 entries; the first page was truncated, so the listing went
    // through a delimiter listing and one listing per common prefix, each prefix once.
    let lists = proxy.requests_of(S3Op::ListObjectVersions);
    assert!(
        lists.iter().all(|r| r.query_param("max-keys").as_deref() == Some("7")),
        "{lists:#?}"
    );
    let delimited = lists
        .iter()
        .filter(|r| r.query_param("delimiter").as_deref() == Some("/"))
        .count();
    assert!(delimited >= 2, "{delimited} delimiter pages");
    let mut sub_listings: Vec<String> = lists
        .iter()
        .filter(|r| r.query_param("delimiter").is_none() && r.query_param("key-marker").is_none())
        .filter_map(|r| r.query_param("prefix"))
        .filter(|p| !p.is_empty())
        .collect();
    sub_listings.sort();
    let common_prefixes: Vec<String> = listing
        .iter()
        .filter_map(|r| r.key.find('/').map(|i| r.key[..=i].to_owned()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(
        common_prefixes.len() > 8,
        "more prefixes than partitions: {common_prefixes:?}"
    );
    assert_eq!(sub_listings, common_prefixes, "one sub-listing per common prefix");

    // `--out -`: stdout is the CSV alone, the same bytes as the file.
    let out = scan_cli(&url, endpoint(), REPLICA_REGION, &["--page-size", "7", "--out", "-"]).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout.as_bytes(),
        csv_bytes.as_slice(),
        "stdout carries the CSV alone"
    );
    // The summary line goes to stderr instead.
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("scan: "), "{}", out.stderr);

    // Every special key round-trips byte for byte, read with the csv crate and the reader.
    let (_, rows) = csv_rows(&csv_bytes);
    let csv_keys: BTreeSet<Vec<u8>> = rows.iter().map(|row| row[0].clone()).collect();
    let read_keys: BTreeSet<Vec<u8>> = read_inventory(&csv_path)
        .into_iter()
        .map(|r| r.key.into_bytes())
        .collect();
    for key in special_keys() {
        assert!(csv_keys.contains(key.as_bytes()), "csv crate lost {key:?}");
        assert!(read_keys.contains(key.as_bytes()), "InventoryReader lost {key:?}");
    }
    let long = key_of_1024_bytes();
    assert_eq!(long.len(), 1024);
    assert!(csv_keys.contains(long.as_bytes()));
    // Quoted as RFC 4180 wants where needed, verbatim otherwise.
    let text = String::from_utf8(csv_bytes).expect("UTF-8");
    assert!(text.contains("\n\"comma,separated\","), "comma key quoted");
    assert!(text.contains("\n\"double\"\"quote\","), "quote key quoted and doubled");
    assert!(text.contains("\n=cmd|' /C calc'!A0,"), "formula-like key verbatim");
}

/// 1,000+ versions (many keys under nested prefixes, keys at the top level, a long history,
/// delete markers on top and in the middle, multipart versions, the special keys with the
/// 1,024-byte key) through pages of 100: the binary (`--out FILE`, partitioned: a delimiter
/// listing, then one listing per prefix, 8 at a time) and the library (1 partition) give
/// exactly the seeded versions, fields and order, and the same records; the summary counts
/// them.
#[tokio::test]
async fn a_thousand_versions_scan_in_s3_order_by_binary_and_library() {
    let mut sc = Scenario::builder("scan-large");
    sc.objects("data/", 180, 3, 8)
        .objects("logs/2025/", 60, 4, 8)
        .objects("img/", 50, 2, 8)
        .objects("top-", 30, 2, 8)
        .versions("data/history", 20, 8)
        .special_keys();
    for i in (0..180).step_by(20) {
        sc.delete(&format!("data/{i:05}"));
    }
    // Under existing prefixes: each prefix of its own costs the partitioned scan a request.
    sc.put("data/dm-middle", ObjectSpec::text("v0"))
        .delete("data/dm-middle")
        .put("data/dm-middle", ObjectSpec::text("v2"))
        .delete("top-00003")
        .put("img/mp-uneven", ObjectSpec::multipart(&[6144, 5120, 7168]))
        .put("img/mp-uniform", ObjectSpec::multipart_uniform(5120, 2));
    let started = Timestamp::now();
    let seeded = sc.seed().await;
    let seeded_at = Timestamp::now();
    let replica = &seeded.replica;
    assert!(replica.entry_count() >= 1000, "{} entries", replica.entry_count());
    let expected = replica.expected_listing();

    let tmp = tempfile::tempdir().expect("temporary directory");
    let csv_path = tmp.path().join("large.csv");
    let report_dir = tmp.path().join("reports");
    let out = scan_cli(
        &replica.url(),
        endpoint(),
        REPLICA_REGION,
        &[
            "--page-size",
            "100",
            "--out",
            csv_path.to_str().unwrap(),
            "--report-dir",
            report_dir.to_str().unwrap(),
        ],
    )
    .run();
    assert_eq!(out.code, 0, "{out:#?}");
    assert_logs_only(&out.stderr);

    // The binary's inventory, read back, is the seeded listing; its times are the server's
    // times of the seeding (this test spares the extra reference listing the small-page test
    // compares times with: each page costs moto a copy of the whole bucket).
    let csv_bytes = std::fs::read(&csv_path).expect("inventory written");
    let inventory = read_inventory(&csv_path);
    assert_same("inventory", &shapes(&inventory), &expected);
    for r in &inventory {
        let lm = r.last_modified.as_second();
        assert!(
            lm >= started.as_second() - 2 && lm <= seeded_at.as_second() + 2,
            "{r:?} was not written during seeding"
        );
    }
    assert_csv_matches(&csv_bytes, &inventory);

    // The library, sequential, gives the very same records.
    let records = list_with_library(endpoint(), REPLICA_REGION, &replica.name, "", 100, 1);
    assert_same("library, 1 partition, against the binary's 8", &records, &inventory);

    // stdout: the CSV's path, the summary's path, one summary line.
    let (keys, versions, markers, bytes) = counts(&inventory);
    let summary_path = report_dir.join("summary.json");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert_eq!(Path::new(lines[0]), csv_path);
    assert_eq!(Path::new(lines[1]), summary_path);
    assert!(
        lines[2].starts_with(&format!(
            "scan: {keys} keys, {versions} versions, {markers} delete markers,"
        )) && lines[2].ends_with(&format!("({bytes} bytes)")),
        "{}",
        lines[2]
    );
    let summary = read_json(&summary_path);
    assert_eq!(summary["counts"]["keys"], keys);
    assert_eq!(summary["counts"]["versions"], versions);
    assert_eq!(summary["counts"]["delete_markers"], markers);
    assert_eq!(summary["bytes"]["versions"], bytes);
    assert_eq!(
        summary["reports"]["large.csv"].as_str(),
        Some(sha256_hex(&csv_bytes).as_str()),
        "{summary:#}"
    );
}

// ---------------------------------------------------------------------------------------
// The report directory

/// A small seeded bucket for the report tests: two keys, a delete marker, a multipart.
async fn small_bucket(name: &str) -> (SeededBucket, Vec<VersionRecord>) {
    let mut sc = Scenario::builder(name);
    sc.versions("a", 2, 10)
        .put("b/c", ObjectSpec::text("x"))
        .delete("b/c")
        .put("m", ObjectSpec::multipart_uniform(5120, 2));
    let started = Timestamp::now();
    let seeded = sc.seed().await;
    let listing = seeded_listing(&seeded.replica, started).await;
    (seeded.replica, listing)
}

/// `--report-dir DIR`: `inventory.csv` and `summary.json` there, the summary with its
/// fields, counts and the CSV's SHA-256; stdout the two paths and one summary line; stderr
/// logs only.
#[tokio::test]
async fn report_dir_holds_inventory_and_summary() {
    let (bucket, listing) = small_bucket("scan-report").await;
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = tmp.path().join("given/reports");
    let before = Timestamp::now();
    let out = scan_cli(
        &bucket.url(),
        endpoint(),
        REPLICA_REGION,
        &["--report-dir", dir.to_str().unwrap()],
    )
    .run();
    let after = Timestamp::now();
    assert_eq!(out.code, 0, "{out:#?}");
    assert_logs_only(&out.stderr);
    assert!(!out.stderr.contains("key,version_id"), "{}", out.stderr);

    let csv_path = dir.join("inventory.csv");
    let summary_path = dir.join("summary.json");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert_eq!(Path::new(lines[0]), csv_path);
    assert_eq!(Path::new(lines[1]), summary_path);
    let (keys, versions, markers, bytes) = counts(&listing);
    assert_eq!((keys, versions, markers), (3, 4, 1));
    assert!(lines[2].starts_with(&format!(
        "scan: {keys} keys, {versions} versions, {markers} delete markers,"
    )));
    assert!(lines[2].ends_with(&format!("({bytes} bytes)")), "{}", lines[2]);

    let csv_bytes = std::fs::read(&csv_path).expect("inventory.csv");
    assert_csv_matches(&csv_bytes, &listing);
    let mut entries: Vec<String> = std::fs::read_dir(&dir)
        .expect("report dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["inventory.csv", "summary.json"]);

    let s = read_json(&summary_path);
    assert_eq!(s["command"], "scan");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    let time = |field: &str| -> Timestamp {
        let text = s[field].as_str().unwrap_or_else(|| panic!("{field} in {s:#}"));
        assert!(is_rfc3339_utc(text), "{field} {text:?}");
        text.parse().expect("time")
    };
    let (started, finished) = (time("started"), time("finished"));
    assert!(before <= started && started <= finished && finished <= after, "{s:#}");
    let args: Vec<&str> = s["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("arg"))
        .collect();
    assert!(
        args.contains(&"scan") && args.contains(&bucket.url().as_str()),
        "{args:?}"
    );
    assert_eq!(s["counts"]["keys"], keys);
    assert_eq!(s["counts"]["versions"], versions);
    assert_eq!(s["counts"]["delete_markers"], markers);
    assert_eq!(s["bytes"]["versions"], bytes);
    assert_eq!(
        s["reports"]["inventory.csv"].as_str(),
        Some(sha256_hex(&csv_bytes).as_str()),
        "the summary's digest is the file's"
    );
}

/// Without `--report-dir`, each run gets a fresh `s3-failback-reports/scan-<UTC>/` under
/// the working directory, named after the run's start.
#[tokio::test]
async fn default_report_dir_is_fresh_per_run_under_the_working_directory() {
    let (bucket, listing) = small_bucket("scan-default-dir").await;
    let cwd = tempfile::tempdir().expect("temporary directory");
    let run = || {
        let out = scan_cli(&bucket.url(), endpoint(), REPLICA_REGION, &[])
            .current_dir(cwd.path())
            .run();
        assert_eq!(out.code, 0, "{out:#?}");
        assert_logs_only(&out.stderr);
        out
    };
    let first = run();
    let second = run();

    let base = cwd.path().join("s3-failback-reports");
    let mut dirs: Vec<String> = std::fs::read_dir(&base)
        .expect("s3-failback-reports")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 2, "one directory per run: {dirs:?}");
    for (out, name) in [(&first, &dirs[0]), (&second, &dirs[1])] {
        // scan-YYYYMMDDTHHMMSSZ, with -N when a run of the same second made that one.
        let stamp = name.strip_prefix("scan-").expect("scan-");
        let (stamp, suffix) = stamp.split_at(16.min(stamp.len()));
        assert!(
            suffix.is_empty() || suffix.strip_prefix('-').is_some_and(|n| n.parse::<u32>().is_ok()),
            "{name}"
        );
        let dir = base.join(name);
        let summary = read_json(&dir.join("summary.json"));
        let started: Timestamp = summary["started"].as_str().expect("started").parse().expect("time");
        assert_eq!(started.strftime("%Y%m%dT%H%M%SZ").to_string(), stamp, "{name}");
        let csv_bytes = std::fs::read(dir.join("inventory.csv")).expect("inventory.csv");
        assert_csv_matches(&csv_bytes, &listing);
        // stdout names the files (relative to the working directory).
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{}", out.stdout);
        assert_eq!(cwd.path().join(lines[0]), dir.join("inventory.csv"));
        assert_eq!(cwd.path().join(lines[1]), dir.join("summary.json"));
        assert!(
            lines[2].starts_with("scan: 3 keys, 4 versions, 1 delete markers,"),
            "{}",
            lines[2]
        );
    }
}

/// A bucket whose versioning was never enabled scans fine: every version id is `null`.
#[tokio::test]
async fn unversioned_bucket_scans_with_null_version_ids() {
    let s3 = client(PRIMARY_REGION);
    let bucket = unique_bucket("scan-unversioned");
    let opts = BucketOpts {
        versioning: Versioning::Off,
        ..BucketOpts::default()
    };
    create_bucket(&s3, &bucket, PRIMARY_REGION, &opts).await;
    for (key, body) in [("a", "first"), ("a", "overwritten"), ("b/c", "x")] {
        s3.put_object()
            .bucket(&bucket)
            .key(key)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .expect("put");
    }
    let tmp = tempfile::tempdir().expect("temporary directory");
    let csv_path = tmp.path().join("inventory.csv");
    let out = scan_cli(
        &format!("s3://{bucket}"),
        endpoint(),
        PRIMARY_REGION,
        &["--out", csv_path.to_str().unwrap()],
    )
    .run();
    assert_eq!(out.code, 0, "{out:#?}");
    let records = read_inventory(&csv_path);
    let got: Vec<(&str, &str, bool, u64)> = records
        .iter()
        .map(|r| (r.key.as_str(), r.version_id.as_str(), r.is_latest, r.size_bytes))
        .collect();
    assert_eq!(got, [("a", "null", true, 11), ("b/c", "null", true, 1)]);
    assert!(records.iter().all(|r| !r.is_delete_marker));
}

/// S3 refuses a list request once the scan is under way (the proxy answers the fifth
/// ListObjectVersions with S3's 403 AccessDenied): exit 1, the error in one line, and a
/// report that says it is incomplete and holds what was listed before, in order.
#[tokio::test]
async fn a_listing_that_fails_midway_exits_1_with_an_incomplete_report() {
    let mut sc = Scenario::builder("scan-midway");
    sc.objects("a/", 4, 2, 8).objects("b/", 4, 2, 8).objects("c/", 4, 2, 8);
    let started = Timestamp::now();
    let seeded = sc.seed().await;
    let listing = seeded_listing(&seeded.replica, started).await;
    let proxy = Proxy::start();
    proxy.set_fault_hook(|r| match r.op {
        S3Op::ListObjectVersions if r.op_seq >= 4 => Fault::error(403, "AccessDenied", "Access Denied"),
        _ => Fault::Forward,
    });
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = tmp.path().join("reports");
    let out = scan_cli(
        &seeded.replica.url(),
        &proxy.endpoint(),
        REPLICA_REGION,
        &["--page-size", "2", "--report-dir", dir.to_str().unwrap()],
    )
    .run();
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    let errors: Vec<&str> = out.stderr.lines().filter(|l| !l.starts_with(" INFO")).collect();
    assert_eq!(errors.len(), 1, "{}", out.stderr);
    assert!(
        errors[0].starts_with(&format!("error: access denied to bucket {}", seeded.replica.name)),
        "{}",
        errors[0]
    );
    let last = out.stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("scan (incomplete): "), "{}", out.stdout);

    let written = read_inventory(&dir.join("inventory.csv"));
    assert!(written.len() < listing.len(), "{} of {}", written.len(), listing.len());
    assert_same(
        "what was listed before the failure",
        &written,
        &listing[..written.len()],
    );
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(summary["complete"], false, "{summary:#}");
    assert!(
        summary["error"].as_str().is_some_and(|e| e.contains("access denied")),
        "{summary:#}"
    );
}

// ---------------------------------------------------------------------------------------
// Errors users understand: one line, exit 2, before anything is written

/// A run in a fresh directory, which must still be empty afterwards: a setup error stops
/// the scan before it writes a report.
fn run_in_empty_dir(cli: Cli) -> CliOutput {
    let cwd = tempfile::tempdir().expect("temporary directory");
    let out = cli.current_dir(cwd.path()).timeout(Duration::from_secs(120)).run();
    let left: Vec<_> = std::fs::read_dir(cwd.path()).expect("cwd").collect();
    assert!(left.is_empty(), "a failed setup wrote {left:?}; {out:#?}");
    out
}

#[test]
fn missing_bucket_is_named() {
    let bucket = unique_bucket("scan-missing");
    let out = run_in_empty_dir(scan_cli(
        &format!("s3://{bucket}/some/prefix"),
        endpoint(),
        REPLICA_REGION,
        &[],
    ));
    assert_setup_error(&out, &[&format!("bucket {bucket} does not exist")]);
}

#[test]
fn malformed_s3_urls_are_named() {
    let cases = [
        "bucket",
        "bucket/prefix",
        "http://bucket/x",
        "s3:/bucket",
        "s3//bucket",
        "s3://",
        "s3:///x",
        "s3://a",
        "s3://bad bucket/x",
        "s3://-x-/y",
        "s3://bucket!/y",
        "",
    ];
    for url in cases {
        // An endpoint nobody listens on: a URL error stops the run before any request.
        let out = run_in_empty_dir(scan_cli(url, "http://127.0.0.1:9", REPLICA_REGION, &[]));
        assert_setup_error(&out, &[&format!("{url:?}")]);
    }
}

/// No credentials anywhere: no keys in the environment, no profile files, no instance
/// metadata.
#[tokio::test]
async fn no_credentials_say_so() {
    let s3 = client(REPLICA_REGION);
    let bucket = unique_bucket("scan-no-credentials");
    create_bucket(&s3, &bucket, REPLICA_REGION, &BucketOpts::default()).await;
    let cli = scan_cli(&format!("s3://{bucket}"), endpoint(), REPLICA_REGION, &[])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let out = run_in_empty_dir(cli);
    assert_setup_error(&out, &[&format!("bucket {bucket}"), "no usable AWS credentials"]);
}

/// The bucket lives in eu-west-1 and the scan asks us-east-1: S3 answers 301 with
/// `x-amz-bucket-region` (moto never does; the proxy answers as S3 would). The message
/// names the bucket and the right region; with that region the scan works.
#[tokio::test]
async fn wrong_region_names_the_right_one() {
    let proxy = Proxy::start();
    let s3 = client_for(&proxy.endpoint(), REPLICA_REGION);
    let bucket = unique_bucket("scan-region");
    create_bucket(&s3, &bucket, REPLICA_REGION, &BucketOpts::default()).await;
    proxy.set_bucket_region(&bucket, REPLICA_REGION);
    let url = format!("s3://{bucket}");
    let out = run_in_empty_dir(scan_cli(&url, &proxy.endpoint(), PRIMARY_REGION, &[]));
    assert_setup_error(&out, &[&format!("bucket {bucket} is in region {REPLICA_REGION}")]);

    let out = scan_cli(&url, &proxy.endpoint(), REPLICA_REGION, &["--out", "-"]).run();
    assert_eq!(out.code, 0, "{out:#?}");
}

/// Nothing listens on the endpoint's port: the message names the endpoint and the bucket.
/// The timeouts do not shorten this: the SDK retries a refused connection (10 attempts,
/// backoff up to 20 s) before the scan reports it, 5 to 45 s.
#[test]
fn an_unreachable_endpoint_is_named() {
    let port = server::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let bucket = unique_bucket("scan-unreachable");
    let cli = scan_cli(
        &format!("s3://{bucket}"),
        &endpoint,
        REPLICA_REGION,
        &["--connect-timeout", "1s", "--read-timeout", "2s"],
    );
    let out = run_in_empty_dir(cli);
    assert_setup_error(&out, &[&format!("cannot reach the S3 endpoint {endpoint}"), &bucket]);
}

/// An IAM query-API call to moto. While `INITIAL_NO_AUTH_ACTION_COUNT` lasts moto checks
/// no signature, but it picks the service from the Authorization header's scope.
fn iam_call(endpoint: &str, params: &[(&str, &str)]) -> String {
    let host = endpoint.strip_prefix("http://").expect("http endpoint");
    let mut body = String::from("Version=2010-05-08");
    for (name, value) in params {
        body.push_str(&format!("&{name}={value}"));
    }
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/iam/aws4_request, \
         SignedHeaders=host, Signature=0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(host).expect("connect to moto");
    stream.write_all(request.as_bytes()).expect("send IAM request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("IAM answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{params:?}: {answer}");
    answer
}

fn xml_value<'a>(xml: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = xml.find(&open).unwrap_or_else(|| panic!("no {tag} in {xml}")) + open.len();
    let end = start + xml[start..].find('<').expect("closing tag");
    &xml[start..end]
}

/// Credentials S3 rejects, on a server of its own that checks them after its first three
/// requests (S3-NOTES 51): a key it does not know (`InvalidAccessKeyId`), and a real key of
/// an IAM user without any policy (`AccessDenied`, a bare 403 on moto).
#[tokio::test]
async fn rejected_credentials_and_access_denied_are_named() {
    // Exactly three requests pass unchecked: CreateBucket, CreateUser, CreateAccessKey.
    let separate = server::start_separate(&[("INITIAL_NO_AUTH_ACTION_COUNT", "3")]);
    let endpoint = separate.endpoint();
    let bucket = unique_bucket("scan-denied");
    let opts = BucketOpts {
        versioning: Versioning::Off,
        ..BucketOpts::default()
    };
    create_bucket(&client_for(endpoint, PRIMARY_REGION), &bucket, PRIMARY_REGION, &opts).await;
    iam_call(endpoint, &[("Action", "CreateUser"), ("UserName", "scanner")]);
    let key = iam_call(endpoint, &[("Action", "CreateAccessKey"), ("UserName", "scanner")]);
    let (key_id, secret) = (xml_value(&key, "AccessKeyId"), xml_value(&key, "SecretAccessKey"));
    let url = format!("s3://{bucket}");

    let unknown = scan_cli(&url, endpoint, PRIMARY_REGION, &[])
        .env("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
        .env("AWS_SECRET_ACCESS_KEY", "not-a-secret");
    let out = run_in_empty_dir(unknown);
    assert_setup_error(
        &out,
        &[
            &format!("credentials rejected for bucket {bucket}"),
            "InvalidAccessKeyId",
        ],
    );
    assert!(!out.stderr.contains("not-a-secret"), "the secret is never shown");

    let denied = scan_cli(&url, endpoint, PRIMARY_REGION, &[])
        .env("AWS_ACCESS_KEY_ID", key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret);
    let out = run_in_empty_dir(denied);
    assert_setup_error(&out, &[&format!("access denied to bucket {bucket}")]);
    assert!(!out.stderr.contains(secret), "the secret is never shown");
}
