//! Issue 7: the promises held under faults and hostile input, end to end against the local
//! server through the recording, fault-injecting proxy.
//!
//! - a restore of 1,000+ objects with 10-20% of its requests faulted finishes, verifies,
//!   makes exactly one new version per restored key, and never writes to the replica;
//! - keys that break naive code round-trip through every CSV and every command, and
//!   location arguments select what a user expects;
//! - wrong invocations stop with exit 2, one `error: ` line, no panic, nothing written.
//!
//! Kill -9, Ctrl-C, unwritable state, persistent per-key failures and back-pressure live
//! in `resume.rs`; parser fuzzing in `src/fuzz.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;

use crate::support::proxy::{Fault, Proxy, RecordedRequest, S3Op};
use crate::support::scenario::{Damage, ObjectSpec, Scenario, key_of_1024_bytes, special_keys};
use crate::support::workdir::{Dirs, col, conn_args, read_csv};
use crate::support::{
    BucketOpts, Cli, CliOutput, PRIMARY_REGION, REPLICA_REGION, VersionShape, Versioning, client_for, create_bucket,
    endpoint, list_all_versions, server, shapes, unique_bucket,
};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// `s3-failback COMMAND --source SOURCE --dest DEST` through `endpoint`, plus `extra`, run in
/// `dirs` (so that the state a restore leaves is where a later verify looks for it).
fn two_sided(command: &str, source: &str, dest: &str, endpoint: &str, dirs: &Dirs, extra: &[&str]) -> CliOutput {
    let mut args: Vec<String> = [command, "--source", source, "--dest", dest]
        .map(str::to_owned)
        .to_vec();
    args.extend(conn_args(endpoint));
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    Cli::new(args)
        .current_dir(dirs.cwd())
        .env("RUST_BACKTRACE", "1")
        .timeout(Duration::from_secs(240))
        .run()
}

/// The values of one column, in file order.
fn column(rows: &[BTreeMap<String, String>], name: &str) -> Vec<String> {
    rows.iter().map(|r| col(r, name).to_owned()).collect()
}

/// Each key's listing entries, newest first.
fn by_key(listing: &[VersionShape]) -> BTreeMap<String, Vec<VersionShape>> {
    let mut out: BTreeMap<String, Vec<VersionShape>> = BTreeMap::new();
    for v in listing {
        out.entry(v.key.clone()).or_default().push(v.clone());
    }
    out
}

/// Open multipart uploads on `bucket` (straight from the server).
async fn open_uploads(client: &Client, bucket: &str) -> Vec<String> {
    let out = client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("list multipart uploads of {bucket}: {e:?}"));
    out.uploads()
        .iter()
        .map(|u| format!("{:?} {:?}", u.key(), u.upload_id()))
        .collect()
}

/// Every write of the record that permanently deletes data: DeleteObject with a version id,
/// DeleteObjects.
fn permanent_deletes(requests: &[RecordedRequest]) -> Vec<&RecordedRequest> {
    requests
        .iter()
        .filter(|r| (r.op == S3Op::DeleteObject && r.version_id().is_some()) || r.op == S3Op::DeleteObjects)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Faulted restore at scale
// ---------------------------------------------------------------------------------------

/// The faults of the mix, in the order the hash picks them.
const FAULT_KINDS: [&str; 7] = [
    "503 SlowDown",
    "500 InternalError",
    "reset before forwarding",
    "forward then reset",
    "delay past the read timeout, then forward",
    "forward, then delay the answer past the read timeout",
    "body cut short",
];

/// A deterministic 64-bit hash (FNV-1a, then a splitmix64 finaliser): the same request
/// identity and seed give the same fate on every run and machine.
fn stable_hash(seed: u64, text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Decides each request's fate from a seeded hash of its identity: which bucket (by role,
/// since bucket names are random), the operation, the key, the part number, and how many
/// times the same request came before. The fate of a request does not depend on when it
/// arrives among concurrent ones, so a run is reproducible from its seed.
struct FaultPlan {
    seed: u64,
    per_mille: u64,
    read_timeout: Duration,
    roles: HashMap<String, &'static str>,
    seen: Mutex<HashMap<String, u32>>,
    injected: [AtomicUsize; FAULT_KINDS.len()],
    /// Faults on writes, by operation: what the engine had to recover from.
    write_faults: Mutex<BTreeMap<(S3Op, &'static str), usize>>,
}

impl FaultPlan {
    fn decide(&self, r: &RecordedRequest) -> Fault {
        let role = r
            .bucket
            .as_ref()
            .and_then(|b| self.roles.get(b))
            .copied()
            .unwrap_or("other");
        let identity = format!(
            "{role}|{:?}|{}|{}",
            r.op,
            r.key.as_deref().unwrap_or(""),
            r.query_param("partNumber").unwrap_or_default()
        );
        let n = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let n = seen.entry(identity.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let h = stable_hash(self.seed, &format!("{identity}|{n}"));
        if h % 1000 >= self.per_mille {
            return Fault::Forward;
        }
        let mut kind = ((h >> 20) % FAULT_KINDS.len() as u64) as usize;
        // A HEAD answer has no body to cut: it gets its answer delayed instead.
        if kind == 6 && r.op == S3Op::HeadObject {
            kind = 5;
        }
        self.injected[kind].fetch_add(1, Ordering::SeqCst);
        if r.is_write() {
            *self
                .write_faults
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry((r.op, FAULT_KINDS[kind]))
                .or_insert(0) += 1;
        }
        match kind {
            0 => Fault::slow_down(),
            1 => Fault::internal_error(),
            2 => Fault::ResetConnection,
            3 => Fault::ForwardThenReset,
            // The client gives up first: the proxy then drops the request unsent.
            4 => Fault::Delay(self.read_timeout * 2),
            // The server did the work; the client gives up before the answer comes.
            5 => Fault::DelayResponse(self.read_timeout * 2),
            // Cut inside the first few dozen bytes: every S3 answer with a body is longer.
            _ => Fault::TruncateBody(8 + ((h >> 40) % 48) as usize),
        }
    }
}

/// 1,000+ objects (a few multipart, some stale, some deleted on the replica) restored
/// through a proxy that faults about 15% of all requests with a seeded, deterministic mix
/// of 503 SlowDown, 500 InternalError, connection resets before forwarding, forward then
/// reset (the write happens, its answer is lost), delays past `--read-timeout` before
/// forwarding (the request never arrives) and after it (the write happens, the client has
/// given up), and response bodies cut short. The restore exits 0; verify (through a clean
/// endpoint) exits 0 with every key `match`; every restored key has exactly one new
/// version (a retried copy whose first try went through must not make a second one,
/// S3-NOTES 31); retries show in `restore.csv`; no multipart upload is left open; and no
/// write of any kind reached the replica, whose listing is unchanged.
///
/// Under load moto itself answers some requests later than the 2 s read timeout: those are
/// faults too, and the assertions hold for them alike.
#[tokio::test]
async fn faulted_restore_at_scale_completes_with_one_version_per_key() {
    const BULK: usize = 1000;
    let started = Instant::now();
    let mut sc = Scenario::builder("rel-scale");
    // ACLs disabled, as S3 makes buckets today: one CopyObject per single-part object.
    sc.primary_opts(BucketOpts::modern());
    sc.objects("bulk/", BULK, 1, 200);
    for i in 0..24 {
        // The primary holds the first of two versions: the newer one is copied.
        let key = format!("stale/{i:03}");
        sc.versions(&key, 2, 120).damage(&key, Damage::Stale { keep: 1 });
    }
    for i in 0..12 {
        // Deleted on the replica, still live on the primary: a delete marker is added.
        let key = format!("gone/{i:03}");
        sc.put(&key, ObjectSpec::random(60))
            .delete(&key)
            .damage(&key, Damage::Stale { keep: 1 });
    }
    for i in 0..4 {
        sc.put(&format!("mp/{i}"), ObjectSpec::multipart(&[5120, 5120, 700 + i]));
    }
    for i in 0..10 {
        // Already identical on the primary: skipped, nothing written.
        let key = format!("same/{i:03}");
        sc.versions(&key, 1, 90).damage(&key, Damage::Replicated);
    }
    let seeded = sc.seed().await;
    let (replica, primary) = (&seeded.replica, &seeded.primary);
    let seeding = started.elapsed();
    let replica_before = shapes(&list_all_versions(&replica.client, &replica.name, "").await);
    let primary_before = by_key(&shapes(&list_all_versions(&primary.client, &primary.name, "").await));

    let read_timeout = Duration::from_secs(2);
    let plan = Arc::new(FaultPlan {
        seed: 0x5eed_0007,
        per_mille: 150,
        read_timeout,
        roles: HashMap::from([(replica.name.clone(), "replica"), (primary.name.clone(), "primary")]),
        seen: Mutex::new(HashMap::new()),
        injected: Default::default(),
        write_faults: Mutex::new(BTreeMap::new()),
    });
    let proxy = Proxy::start();
    // moto lists every upload as initiated in 2010; S3 gives the real time, which restore
    // uses to abort the uploads of its own run that it lost track of.
    proxy.emulate_upload_initiated(&primary.name);
    {
        let plan = plan.clone();
        proxy.set_fault_hook(move |r| plan.decide(r));
    }
    let dirs = Dirs::new();
    let restore_started = Instant::now();
    let out = two_sided(
        "restore",
        &replica.url(),
        &primary.url(),
        &proxy.endpoint(),
        &dirs,
        &[
            "--yes",
            "--quiet",
            "--concurrency",
            "16",
            "--read-timeout",
            "2s",
            "--connect-timeout",
            "2s",
            "--state-dir",
            &dirs.arg("state"),
            "--report-dir",
            &dirs.arg("restore"),
        ],
    );
    let restore_took = restore_started.elapsed();
    proxy.clear_fault_hook();
    let requests = proxy.requests();
    let injected: Vec<(&str, usize)> = FAULT_KINDS
        .iter()
        .zip(&plan.injected)
        .map(|(k, n)| (*k, n.load(Ordering::SeqCst)))
        .collect();
    let write_faults = plan.write_faults.lock().unwrap().clone();
    assert_eq!(out.code, 0, "faults {injected:?}; {out:#?}");
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);

    // The mix happened as meant: 10-20% of the requests, every kind, writes among them.
    let faulted: usize = injected.iter().map(|(_, n)| n).sum();
    let share = faulted as f64 / requests.len() as f64;
    assert!(
        (0.10..=0.20).contains(&share),
        "{faulted} of {} requests faulted ({share:.3}): {injected:?}",
        requests.len()
    );
    assert!(injected.iter().all(|(_, n)| *n > 0), "{injected:?}");
    for kind in FAULT_KINDS {
        assert!(
            write_faults.get(&(S3Op::CopyObject, kind)).is_some_and(|n| *n > 0),
            "no CopyObject met {kind:?}: {write_faults:?}"
        );
    }
    let multipart_ops = [
        S3Op::CreateMultipartUpload,
        S3Op::UploadPartCopy,
        S3Op::CompleteMultipartUpload,
    ];
    assert!(
        write_faults.keys().any(|(op, _)| multipart_ops.contains(op)),
        "no multipart write was faulted: {write_faults:?}"
    );
    assert!(
        write_faults.keys().any(|(op, _)| *op == S3Op::DeleteObject),
        "no delete marker write was faulted: {write_faults:?}"
    );

    // restore.csv accounts for every key; retries are visible in it.
    let rows = read_csv(&dirs.path("restore").join("restore.csv"));
    let replica_keys: BTreeSet<String> = replica_before.iter().map(|v| v.key.clone()).collect();
    let row_keys: BTreeSet<String> = column(&rows, "key").into_iter().collect();
    assert_eq!(row_keys, replica_keys, "one row per replica key");
    assert_eq!(rows.len(), replica_keys.len(), "one row per key in latest mode");
    let not_ok: Vec<_> = rows
        .iter()
        .filter(|r| !["done", "skipped"].contains(&col(r, "status")))
        .collect();
    assert!(not_ok.is_empty(), "{not_ok:#?}");
    let done: BTreeSet<String> = rows
        .iter()
        .filter(|r| col(r, "status") == "done")
        .map(|r| col(r, "key").to_owned())
        .collect();
    assert_eq!(done.len(), BULK + 24 + 12 + 4, "every writing action is done");
    let retried = rows
        .iter()
        .filter(|r| col(r, "attempts").parse::<u32>().expect("attempts is a number") > 1)
        .count();
    assert!(retried > 0, "no row shows a retry although {faulted} requests failed");

    // Exactly one new version (or delete marker) per restored key, and none elsewhere.
    let primary_after = by_key(&shapes(&list_all_versions(&primary.client, &primary.name, "").await));
    let mut wrong = Vec::new();
    for key in &replica_keys {
        let before = primary_before.get(key).map_or(0, Vec::len);
        let after = primary_after.get(key).map_or(0, Vec::len);
        let want = before + usize::from(done.contains(key));
        if after != want {
            wrong.push(format!("{key}: {before} versions before, {after} after, want {want}"));
        }
    }
    assert!(wrong.is_empty(), "{} keys: {wrong:#?}", wrong.len());
    assert_eq!(
        primary_after.keys().collect::<BTreeSet<_>>(),
        replica_keys.iter().collect::<BTreeSet<_>>(),
        "the primary has no key the replica lacks"
    );
    let open = open_uploads(&primary.client, &primary.name).await;
    assert!(
        open.is_empty(),
        "multipart uploads left open on the primary: {open:#?}\nstderr: {}\nrequests: {:#?}",
        out.stderr,
        requests
            .iter()
            .filter(|r| matches!(
                r.op,
                S3Op::CreateMultipartUpload
                    | S3Op::CompleteMultipartUpload
                    | S3Op::AbortMultipartUpload
                    | S3Op::ListMultipartUploads
            ))
            .map(|r| format!(
                "{} {:?} {:?} {} {:?} proxy={}",
                r.seq, r.op, r.key, r.query, r.status, r.from_proxy
            ))
            .collect::<Vec<_>>()
    );

    // The replica: no write request of any kind, and its listing as it was.
    let writes = proxy.writes_to(&replica.name);
    assert!(writes.is_empty(), "write requests reached the replica: {writes:#?}");
    assert!(permanent_deletes(&requests).is_empty());
    assert_eq!(
        shapes(&list_all_versions(&replica.client, &replica.name, "").await),
        replica_before
    );

    // Verify through a clean endpoint: every key matches.
    let out = two_sided(
        "verify",
        &replica.url(),
        &primary.url(),
        endpoint(),
        &dirs,
        &["--report-dir", &dirs.arg("verify")],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let verified = read_csv(&dirs.path("verify").join("verify.csv"));
    assert_eq!(verified.len(), replica_keys.len());
    assert!(verified.iter().all(|r| col(r, "status") == "match"));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dirs.path("restore").join("summary.json")).expect("summary.json"))
            .expect("summary.json is JSON");
    eprintln!(
        "faulted restore: seeding {seeding:?}, restore {restore_took:?} for {} requests ({faulted} faulted: \
         {injected:?}; {retried} rows retried; concurrency {}), total {:?}; faulted writes {write_faults:?}",
        requests.len(),
        summary["concurrency"],
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// Hostile names
// ---------------------------------------------------------------------------------------

/// Pads `head` with `fill`, then `x`, to exactly 1,024 bytes (S3's longest key).
fn pad_to_1024(head: &str, fill: char) -> String {
    let mut key = head.to_owned();
    while key.len() + fill.len_utf8() <= 1024 {
        key.push(fill);
    }
    while key.len() < 1024 {
        key.push('x');
    }
    assert_eq!(key.len(), 1024, "{key:?}");
    key
}

/// At least 500 distinct keys that break naive code: encoding (`+`, `%`, `%2F`, `?`, `#`,
/// `&`, `=`, `;`, spaces), CSV (quotes, commas, tabs), normalisation (NFC and NFD forms of
/// the same words are different keys), paths that must never be normalised (a leading `/`,
/// `//`, `./`, `../`, a trailing `/`), keys that start like spreadsheet formulas, and keys
/// of exactly 1,024 bytes. No control characters but tab: moto ignores `encoding-type=url`
/// (S3-NOTES 38) and XML 1.0 cannot carry them, so on moto they could not be listed at all.
fn hostile_keys() -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = special_keys().into_iter().collect();
    let fragments = [
        " ",
        "  ",
        "+",
        "%",
        "%2F",
        "%25",
        "%20",
        "?",
        "#",
        "&",
        "=",
        ";",
        "\"",
        "'",
        ",",
        "\t",
        "~",
        "*",
        "!",
        "$",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        "<",
        ">",
        "\\",
        "|",
        "^",
        "`",
        ":",
        "@",
        "caf\u{e9}",
        "cafe\u{301}",
        "\u{65e5}\u{672c}",
        "\u{1f389}",
        "\u{fffd}",
        "\u{a0}",
    ];
    let templates = [
        "h/{f}",
        "h/{f}x",
        "h/x{f}",
        "h/x{f}y",
        "h/{f}{f}",
        "h/{f}/x",
        "h/d{f}/f{f}",
        "{f}lead",
        "h/x{f}.txt",
        "h/x.{f}",
        "h/a{f}b{f}c",
    ];
    for f in fragments {
        for t in templates {
            keys.insert(t.replace("{f}", f));
        }
    }
    let words = ["w", "a b", "x+y", "q?r#s", "caf\u{e9}"];
    let paths = [
        "/{w}",
        "//{w}",
        "{w}//{w}",
        "./{w}",
        "{w}/./{w}",
        "../{w}",
        "{w}/../{w}",
        "{w}/",
        "{w}//",
        "/{w}/",
        ".{w}",
        "..{w}",
        "p/{w}/../../{w}",
        "///{w}",
    ];
    for w in words {
        for p in paths {
            keys.insert(p.replace("{w}", w));
        }
    }
    // Spreadsheet formulas: kept verbatim in every CSV (no quote or apostrophe added).
    for w in [
        "1+1",
        "SUM(A1:A9)",
        "cmd|' /C calc'!A0",
        "HYPERLINK(\"http://x\",\"y\")",
        "x,y",
    ] {
        for lead in ["=", "+", "-", "@", "\t="] {
            keys.insert(format!("{lead}{w}"));
        }
    }
    // The same words composed (NFC) and decomposed (NFD): different keys, different bytes.
    let pairs = [
        ("caf\u{e9}", "cafe\u{301}"),
        ("na\u{ef}ve", "nai\u{308}ve"),
        ("\u{c5}ngstr\u{f6}m", "A\u{30a}ngstro\u{308}m"),
        ("r\u{e9}sum\u{e9}", "re\u{301}sume\u{301}"),
        ("\u{f1}and\u{fa}", "n\u{303}andu\u{301}"),
        ("Zo\u{eb}", "Zoe\u{308}"),
        ("\u{1e9b}\u{323}", "\u{17f}\u{323}\u{307}"),
    ];
    for (nfc, nfd) in pairs {
        assert_ne!(nfc, nfd);
        for form in [nfc, nfd] {
            keys.insert(format!("nf/{form}"));
            keys.insert(format!("nf/{form}/{form}.txt"));
            keys.insert(form.to_owned());
        }
    }
    for (head, fill) in [
        ("", 'a'),
        ("=1024/formula ", 'b'),
        ("1024/sp ace+plus%2Fq?h#a&e=s;c\"q',c\tt/", 'z'),
        ("1024/nfc caf\u{e9}/", '\u{e9}'),
        ("1024/nfd cafe\u{301}/", '\u{301}'),
        ("1024/emoji/", '\u{1f389}'),
        ("/1024//lead/./../", '/'),
    ] {
        keys.insert(pad_to_1024(head, fill));
    }
    keys.insert(key_of_1024_bytes());
    keys
}

/// 500+ hostile keys round-trip unchanged, byte for byte: scan's inventory CSV, plan's CSV
/// (fed back to `restore --plan`), restore.csv (key and dest_key), the keys restore wrote
/// on the primary (each one new version with the replica's ETag, copied from the right
/// source: the proxy decodes every `x-amz-copy-source`), and verify's CSV with exit 0.
#[tokio::test]
async fn hostile_keys_round_trip_through_every_csv_and_command() {
    let keys = hostile_keys();
    assert!(keys.len() >= 500, "{} keys", keys.len());
    assert!(keys.iter().filter(|k| k.len() == 1024).count() >= 8);
    let mut sc = Scenario::builder("rel-hostile");
    for key in &keys {
        // Content that differs per key: a copy from the wrong key shows in the ETag.
        sc.put(key, ObjectSpec::text(&format!("content of {key:?}")));
    }
    let seeded = sc.seed().await;
    let (replica, primary) = (&seeded.replica, &seeded.primary);
    let replica_listing = shapes(&list_all_versions(&replica.client, &replica.name, "").await);
    let listed: Vec<String> = replica_listing.iter().map(|v| v.key.clone()).collect();
    let want: Vec<String> = keys.iter().cloned().collect();
    assert_eq!(listed, want, "the server keeps every key verbatim, in UTF-8 byte order");
    let proxy = Proxy::start();
    let dirs = Dirs::new();

    // scan: the inventory holds every key verbatim, in S3's order.
    let out = Cli::new([
        "scan",
        &replica.url(),
        "--endpoint-url",
        &proxy.endpoint(),
        "--region",
        REPLICA_REGION,
        "--path-style",
        "--out",
        &dirs.arg("inventory.csv"),
        "--report-dir",
        &dirs.arg("scan"),
    ])
    .run();
    assert_eq!(out.code, 0, "{out:#?}");
    let inventory = read_csv(&dirs.path("inventory.csv"));
    assert_eq!(column(&inventory, "key"), want, "inventory.csv keys");

    // plan: one copy row per key, dest_key the same bytes.
    let out = two_sided(
        "plan",
        &replica.url(),
        &primary.url(),
        &proxy.endpoint(),
        &dirs,
        &["--out", &dirs.arg("plan.csv"), "--report-dir", &dirs.arg("plan")],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let plan = read_csv(&dirs.path("plan.csv"));
    assert_eq!(column(&plan, "key"), want, "plan.csv keys");
    assert_eq!(column(&plan, "dest_key"), want, "plan.csv dest_key");
    assert!(plan.iter().all(|r| col(r, "action") == "copy"));

    // restore the plan file as written.
    let out = two_sided(
        "restore",
        &replica.url(),
        &primary.url(),
        &proxy.endpoint(),
        &dirs,
        &[
            "--yes",
            "--quiet",
            "--plan",
            &dirs.arg("plan.csv"),
            "--concurrency",
            "16",
            "--state-dir",
            &dirs.arg("state"),
            "--report-dir",
            &dirs.arg("restore"),
        ],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let rows = read_csv(&dirs.path("restore").join("restore.csv"));
    let mut row_keys = column(&rows, "key");
    row_keys.sort();
    assert_eq!(row_keys, want, "restore.csv keys");
    assert!(rows.iter().all(|r| col(r, "key") == col(r, "dest_key")));
    assert!(rows.iter().all(|r| col(r, "status") == "done"), "{rows:#?}");

    // The primary: the same keys, one version each, with the replica's content.
    let primary_listing = shapes(&list_all_versions(&primary.client, &primary.name, "").await);
    assert_eq!(
        primary_listing.iter().map(|v| v.key.clone()).collect::<Vec<_>>(),
        want,
        "primary keys"
    );
    for (p, r) in primary_listing.iter().zip(&replica_listing) {
        assert_eq!((&p.key, p.size_bytes, &p.etag), (&r.key, r.size_bytes, &r.etag));
    }
    let copies = proxy.requests_of(S3Op::CopyObject);
    assert_eq!(copies.len(), want.len());
    for c in &copies {
        let (bucket, key, version) = c.copy_source().expect("a copy source");
        assert_eq!(bucket, replica.name);
        assert_eq!(Some(&key), c.key.as_ref(), "copied from the key it writes");
        let seeded = &replica
            .current(&key)
            .unwrap_or_else(|| panic!("no such key {key:?}"))
            .version_id;
        assert_eq!(version.as_ref(), Some(seeded), "{key:?}");
    }
    let writes = proxy.writes_to(&replica.name);
    assert!(writes.is_empty(), "write requests reached the replica: {writes:#?}");

    // verify: every key matches.
    let out = two_sided(
        "verify",
        &replica.url(),
        &primary.url(),
        &proxy.endpoint(),
        &dirs,
        &["--report-dir", &dirs.arg("verify")],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let verified = read_csv(&dirs.path("verify").join("verify.csv"));
    assert_eq!(column(&verified, "key"), want, "verify.csv keys");
    assert_eq!(column(&verified, "dest_key"), want, "verify.csv dest_key");
    assert!(verified.iter().all(|r| col(r, "status") == "match"));
    assert!(proxy.writes_to(&replica.name).is_empty());
}

/// Bucket and prefix arguments select what a user expects (DESIGN.md, command-line
/// contract): `s3://b` and `s3://b/` are the whole bucket; `s3://b/data` selects the key
/// `data` and the keys under `data/`, never `database/x` or `data-x`; `s3://b/data/` selects
/// only keys under `data/`; a prefix that is itself a full key (`s3://b/data/x`) selects that
/// key and the keys under it; `s3://b//data` is the prefix `/data` (keys are never
/// normalised). scan and plan agree, and a restore maps keys onto the destination prefix the
/// same way whether or not it ends in `/` (`data/x` onto `restored/x`, `data` onto
/// `restored`), then verifies.
#[tokio::test]
async fn location_arguments_select_what_a_user_expects() {
    let all = [
        "data",
        "data/",
        "data/x",
        "data/x/deeper",
        "data/y/z",
        "data//double",
        "database/x",
        "data-x",
        "datafile",
        "data x",
        "dat",
        "other/data/x",
        "/data",
        "/data/abs",
        "/database",
    ];
    let mut sc = Scenario::builder("rel-locations");
    for key in all {
        sc.put(key, ObjectSpec::text(&format!("content of {key:?}")));
    }
    let seeded = sc.seed().await;
    let (replica, primary) = (&seeded.replica, &seeded.primary);
    let proxy = Proxy::start();
    let dirs = Dirs::new();
    let r = &replica.name;
    let set = |keys: &[&str]| keys.iter().map(|k| (*k).to_owned()).collect::<BTreeSet<String>>();
    let data_dir = ["data/", "data/x", "data/x/deeper", "data/y/z", "data//double"];
    let mut data_all = vec!["data"];
    data_all.extend(data_dir);
    let cases: Vec<(String, BTreeSet<String>)> = vec![
        (format!("s3://{r}"), set(&all)),
        (format!("s3://{r}/"), set(&all)),
        (format!("s3://{r}/data"), set(&data_all)),
        (format!("s3://{r}/data/"), set(&data_dir)),
        (format!("s3://{r}/data/x"), set(&["data/x", "data/x/deeper"])),
        (format!("s3://{r}//data"), set(&["/data", "/data/abs"])),
        (format!("s3://{r}/dat"), set(&["dat"])),
        (format!("s3://{r}/data x"), set(&["data x"])),
        (format!("s3://{r}/nothing"), BTreeSet::new()),
    ];
    for (i, (url, want)) in cases.iter().enumerate() {
        let out = Cli::new([
            "scan",
            url,
            "--endpoint-url",
            &proxy.endpoint(),
            "--region",
            REPLICA_REGION,
            "--path-style",
            "--out",
            &dirs.arg(&format!("inventory-{i}.csv")),
            "--report-dir",
            &dirs.arg(&format!("scan-{i}")),
        ])
        .run();
        assert_eq!(out.code, 0, "scan {url}: {out:#?}");
        let got: BTreeSet<String> = column(&read_csv(&dirs.path(&format!("inventory-{i}.csv"))), "key")
            .into_iter()
            .collect();
        assert_eq!(&got, want, "scan {url}");

        // Onto a prefix of the primary: a source key equal to the source prefix (`data`)
        // has no name at the primary's root (`bad_input_catalogue` covers that refusal).
        let plan = dirs.arg(&format!("plan-{i}.csv"));
        let out = two_sided(
            "plan",
            url,
            &format!("s3://{}/sel", primary.name),
            &proxy.endpoint(),
            &dirs,
            &["--out", &plan, "--report-dir", &dirs.arg(&format!("plan-{i}"))],
        );
        assert_eq!(out.code, 0, "plan {url}: {out:#?}");
        let rows = read_csv(Path::new(&plan));
        let got: BTreeSet<String> = column(&rows, "key").into_iter().collect();
        assert_eq!(&got, want, "plan {url}");
    }

    // Onto another prefix: with and without a trailing `/`, the same mapping.
    let mapped = |prefix: &str| -> BTreeMap<String, String> {
        data_all
            .iter()
            .map(|k| {
                let rest = k.strip_prefix("data").unwrap();
                ((*k).to_owned(), format!("{prefix}{rest}"))
            })
            .collect()
    };
    let want = mapped("restored");
    for dest in [
        format!("s3://{}/restored", primary.name),
        format!("s3://{}/restored/", primary.name),
    ] {
        let plan = dirs.arg("plan-mapped.csv");
        let out = two_sided(
            "plan",
            &format!("s3://{r}/data"),
            &dest,
            &proxy.endpoint(),
            &dirs,
            &["--out", &plan, "--report-dir", &dirs.arg("plan-mapped")],
        );
        assert_eq!(out.code, 0, "{out:#?}");
        let got: BTreeMap<String, String> = read_csv(Path::new(&plan))
            .iter()
            .map(|row| (col(row, "key").to_owned(), col(row, "dest_key").to_owned()))
            .collect();
        assert_eq!(got, want, "--dest {dest}");
    }
    let (source, dest) = (format!("s3://{r}/data"), format!("s3://{}/restored/", primary.name));
    let out = two_sided(
        "restore",
        &source,
        &dest,
        &proxy.endpoint(),
        &dirs,
        &[
            "--yes",
            "--quiet",
            "--state-dir",
            &dirs.arg("state"),
            "--report-dir",
            &dirs.arg("restore"),
        ],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let primary_keys: BTreeSet<String> = list_all_versions(&primary.client, &primary.name, "")
        .await
        .into_iter()
        .map(|v| v.key)
        .collect();
    assert_eq!(primary_keys, want.values().cloned().collect::<BTreeSet<_>>());
    for (src, dst) in &want {
        let copy = proxy
            .requests_of(S3Op::CopyObject)
            .into_iter()
            .find(|c| c.key.as_ref() == Some(dst))
            .unwrap_or_else(|| panic!("no copy to {dst:?}"));
        assert_eq!(copy.copy_source().map(|(_, k, _)| k).as_ref(), Some(src));
    }
    // The same locations without the trailing `/`: verify agrees.
    let out = two_sided(
        "verify",
        &source,
        &format!("s3://{}/restored", primary.name),
        &proxy.endpoint(),
        &dirs,
        &["--report-dir", &dirs.arg("verify")],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let verified = read_csv(&dirs.path("verify").join("verify.csv"));
    assert_eq!(verified.len(), want.len());
    assert!(verified.iter().all(|r| col(r, "status") == "match"), "{verified:#?}");
    assert!(proxy.writes_to(r).is_empty(), "{:#?}", proxy.writes_to(r));
}

// ---------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------

/// What a wrong invocation must print.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The tool's own error: exactly one stderr line, `error: ...`, holding every needle.
    Line(&'static [&'static str]),
    /// clap's usage error: `error: ...` first, holding every needle, then usage lines
    /// (clap's own format, kept as clap prints it); exit 2 all the same.
    Clap(&'static [&'static str]),
}

/// One row of the catalogue: a name, the arguments after the command, extra environment,
/// what stderr must say (needles may use `{…}` placeholders, filled from `vars`).
struct Case {
    name: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    expect: Expect,
    proxy: usize,
}

fn fill(text: &str, vars: &[(&str, String)]) -> String {
    let mut out = text.to_owned();
    for (name, value) in vars {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// A plan file edited by hand: `edit` gets the header and the rows and changes them.
fn edit_plan(from: &Path, to: &Path, edit: impl FnOnce(&mut Vec<String>, &mut Vec<Vec<String>>)) -> String {
    let mut reader = csv::Reader::from_path(from).expect("plan");
    let mut header: Vec<String> = reader.headers().expect("header").iter().map(str::to_owned).collect();
    let mut rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.expect("row").iter().map(str::to_owned).collect())
        .collect();
    edit(&mut header, &mut rows);
    let mut w = csv::Writer::from_path(to).expect("write plan");
    w.write_record(&header).unwrap();
    for r in &rows {
        w.write_record(r).unwrap();
    }
    w.flush().unwrap();
    to.display().to_string()
}

/// One table of wrong invocations of plan, restore and verify. Each must exit 2 with one
/// line on stderr, `error: ` and a message that names what is wrong (clap's own usage
/// errors print a usage block after their `error: ` line: for those, exit 2, the first
/// line, and no panic), print nothing on stdout, never panic or show a backtrace
/// (`RUST_BACKTRACE=1` is set, so a panic would), and send no write request to any bucket;
/// at the end every bucket lists as it did before.
///
/// moto never answers a wrong region (S3-NOTES 51): the proxy answers 301 with
/// `x-amz-bucket-region` as S3 does. Invalid credentials run on a server of their own that
/// checks them after its first four requests (the buckets' setup).
#[tokio::test]
async fn bad_input_catalogue() {
    let s3_replica = crate::support::client(REPLICA_REGION);
    let s3_primary = crate::support::client(PRIMARY_REGION);
    let mut sc = Scenario::builder("rel-bad-input");
    sc.objects("k/", 4, 1, 40);
    let seeded = sc.seed().await;
    let (replica, primary) = (&seeded.replica, &seeded.primary);
    let made = |name: &str, region: &'static str, versioning: Versioning| {
        let bucket = unique_bucket(name);
        let client = if region == REPLICA_REGION {
            s3_replica.clone()
        } else {
            s3_primary.clone()
        };
        async move {
            let opts = BucketOpts {
                versioning,
                ..BucketOpts::default()
            };
            create_bucket(&client, &bucket, region, &opts).await;
            client
                .put_object()
                .bucket(&bucket)
                .key("k/0")
                .body(b"unversioned".to_vec().into())
                .send()
                .await
                .expect("put");
            bucket
        }
    };
    let replica_off = made("rel-bad-replica-off", REPLICA_REGION, Versioning::Off).await;
    let primary_suspended = made("rel-bad-primary-suspended", PRIMARY_REGION, Versioning::Suspended).await;
    let primary_off = made("rel-bad-primary-off", PRIMARY_REGION, Versioning::Off).await;
    let other_primary = unique_bucket("rel-bad-other-primary");
    create_bucket(&s3_primary, &other_primary, PRIMARY_REGION, &BucketOpts::default()).await;
    let missing = unique_bucket("rel-bad-missing");

    // A server of its own that checks credentials after the buckets are made.
    let separate = server::start_separate(&[("INITIAL_NO_AUTH_ACTION_COUNT", "4")]);
    let (creds_replica, creds_primary) = (unique_bucket("rel-bad-creds-r"), unique_bucket("rel-bad-creds-p"));
    create_bucket(
        &client_for(separate.endpoint(), REPLICA_REGION),
        &creds_replica,
        REPLICA_REGION,
        &BucketOpts::default(),
    )
    .await;
    create_bucket(
        &client_for(separate.endpoint(), PRIMARY_REGION),
        &creds_primary,
        PRIMARY_REGION,
        &BucketOpts::default(),
    )
    .await;

    let buckets = [
        (&s3_replica, replica.name.clone()),
        (&s3_primary, primary.name.clone()),
        (&s3_replica, replica_off.clone()),
        (&s3_primary, primary_suspended.clone()),
        (&s3_primary, primary_off.clone()),
        (&s3_primary, other_primary.clone()),
    ];
    let mut before = Vec::new();
    for (client, bucket) in &buckets {
        before.push(shapes(&list_all_versions(client, bucket, "").await));
    }

    let proxy = Proxy::start();
    proxy.set_bucket_region(&replica.name, REPLICA_REGION);
    proxy.set_bucket_region(&primary.name, PRIMARY_REGION);
    let creds_proxy = Proxy::start_in_front_of(separate.endpoint());
    let proxies = [&proxy, &creds_proxy];
    let dirs = Dirs::new();
    // Existing, empty AWS files: no profiles, and no SDK warning about missing files, so
    // that stderr holds only what the tool says.
    std::fs::write(dirs.path("aws-empty"), "").expect("empty AWS file");

    // A good plan, then hand-made bad ones.
    let out = two_sided(
        "plan",
        &replica.url(),
        &primary.url(),
        &proxy.endpoint(),
        &dirs,
        &["--out", &dirs.arg("good-plan.csv"), "--report-dir", &dirs.arg("plan")],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let good = dirs.path("good-plan.csv");
    let good_text = std::fs::read_to_string(&good).expect("plan text");
    assert_eq!(good_text.lines().count(), 5, "{good_text}");
    std::fs::write(dirs.path("cut-row.csv"), &good_text[..good_text.len() - 40]).unwrap();
    std::fs::write(dirs.path("cut-header.csv"), &good_text[..20]).unwrap();
    std::fs::write(dirs.path("empty.csv"), "").unwrap();
    let bad_action = edit_plan(&good, &dirs.path("bad-action.csv"), |h, rows| {
        let a = h.iter().position(|c| c == "action").unwrap();
        rows[1][a] = "cpoy".to_owned();
    });
    let no_action = edit_plan(&good, &dirs.path("no-action-column.csv"), |h, rows| {
        let a = h.iter().position(|c| c == "action").unwrap();
        h.remove(a);
        rows.iter_mut().for_each(|r| {
            r.remove(a);
        });
    });
    let other_dest_row = edit_plan(&good, &dirs.path("other-dest-row.csv"), |h, rows| {
        let d = h.iter().position(|c| c == "dest").unwrap();
        rows[2][d] = format!("s3://{other_primary}");
    });

    let (r, p) = (replica.url(), primary.url());
    let with_regions = |command: &str, source: &str, dest: &str, regions: [&str; 2], extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [command, "--source", source, "--dest", dest]
            .map(str::to_owned)
            .to_vec();
        args.extend(
            [
                "--endpoint-url",
                &proxy.endpoint(),
                "--path-style",
                "--source-region",
                regions[0],
                "--dest-region",
                regions[1],
            ]
            .map(str::to_owned),
        );
        if command == "restore" {
            args.extend(["--yes", "--state-dir", &dirs.arg("state")].map(str::to_owned));
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let with = |command: &str, source: &str, dest: &str, extra: &[&str]| {
        with_regions(command, source, dest, [REPLICA_REGION, PRIMARY_REGION], extra)
    };
    let case = |name: &'static str, args: Vec<String>, expect: Expect| Case {
        name,
        args,
        env: Vec::new(),
        expect,
        proxy: 0,
    };
    let url = |b: &str| format!("s3://{b}");
    let mut cases = vec![
        case(
            "plan without --dest",
            vec!["plan".into(), "--source".into(), r.clone()],
            Expect::Clap(&["--dest"]),
        ),
        case(
            "restore without --source",
            vec!["restore".into(), "--dest".into(), p.clone(), "--yes".into()],
            Expect::Clap(&["--source"]),
        ),
        case(
            "plan: --source without s3://",
            with("plan", &replica.name, &p, &[]),
            Expect::Line(&["--source", "not an s3:// URL"]),
        ),
        case(
            "plan: --source empty",
            with("plan", "", &p, &[]),
            Expect::Line(&["--source", "\"\""]),
        ),
        case(
            "restore: --source http://",
            with("restore", "http://bucket/x", &p, &[]),
            Expect::Line(&["--source", "http://bucket/x"]),
        ),
        case(
            "verify: --dest s3://",
            with("verify", &r, "s3://", &[]),
            Expect::Line(&["--dest", "s3://"]),
        ),
        case(
            "restore: --dest with an invalid bucket name",
            with("restore", &r, "s3://Bad_Bucket!/x", &[]),
            Expect::Line(&["--dest", "invalid bucket name", "Bad_Bucket!"]),
        ),
        case(
            "plan: source bucket does not exist",
            with("plan", &url(&missing), &p, &[]),
            Expect::Line(&["bucket {missing} does not exist"]),
        ),
        case(
            "restore: dest bucket does not exist",
            with("restore", &r, &url(&missing), &[]),
            Expect::Line(&["bucket {missing} does not exist"]),
        ),
        case(
            "verify: source bucket does not exist",
            with("verify", &url(&missing), &p, &[]),
            Expect::Line(&["bucket {missing} does not exist"]),
        ),
        case(
            "plan: replica not versioned",
            with("plan", &url(&replica_off), &p, &[]),
            Expect::Line(&["bucket {replica_off}", "versioning is off"]),
        ),
        case(
            "restore: replica not versioned",
            with("restore", &url(&replica_off), &p, &[]),
            Expect::Line(&["bucket {replica_off}", "versioning is off"]),
        ),
        case(
            "verify: replica not versioned",
            with("verify", &url(&replica_off), &p, &[]),
            Expect::Line(&["bucket {replica_off}", "versioning is off"]),
        ),
        case(
            "restore: primary versioning suspended",
            with("restore", &r, &url(&primary_suspended), &[]),
            Expect::Line(&["bucket {primary_suspended}", "Suspended", "Enabled"]),
        ),
        case(
            "restore: primary never versioned",
            with("restore", &r, &url(&primary_off), &[]),
            Expect::Line(&["bucket {primary_off}", "versioning is off", "Enabled"]),
        ),
        case(
            "restore: replica asked in the wrong region",
            with_regions("restore", &r, &p, [PRIMARY_REGION, PRIMARY_REGION], &[]),
            Expect::Line(&["bucket {replica} is in region eu-west-1"]),
        ),
        case(
            "plan: primary asked in the wrong region",
            with_regions("plan", &r, &p, [REPLICA_REGION, REPLICA_REGION], &[]),
            Expect::Line(&["bucket {primary} is in region us-east-1"]),
        ),
        case(
            "plan: --as-of in the future",
            with("plan", &r, &p, &["--as-of", "2999-01-01T00:00:00Z"]),
            Expect::Line(&["--as-of", "2999-01-01T00:00:00Z", "future"]),
        ),
        case(
            "restore: --as-of unparsable",
            with("restore", &r, &p, &["--as-of", "yesterday"]),
            Expect::Line(&["--as-of", "yesterday", "RFC 3339"]),
        ),
        case(
            "verify: --as-of with month 13",
            with("verify", &r, &p, &["--as-of", "2026-13-01T00:00:00Z"]),
            Expect::Line(&["--as-of", "2026-13-01T00:00:00Z"]),
        ),
        case(
            "restore: plan cut short in its last row",
            with("restore", &r, &p, &["--plan", &dirs.arg("cut-row.csv")]),
            Expect::Line(&["{dir}/cut-row.csv", "line 5"]),
        ),
        case(
            "restore: plan cut short in its header",
            with("restore", &r, &p, &["--plan", &dirs.arg("cut-header.csv")]),
            Expect::Line(&["{dir}/cut-header.csv", "line 1"]),
        ),
        case(
            "restore: empty plan file",
            with("restore", &r, &p, &["--plan", &dirs.arg("empty.csv")]),
            Expect::Line(&["{dir}/empty.csv"]),
        ),
        case(
            "restore: plan with a bad action word",
            with("restore", &r, &p, &["--plan", &bad_action]),
            Expect::Line(&["{dir}/bad-action.csv", "line 3", "cpoy"]),
        ),
        case(
            "restore: plan without the action column",
            with("restore", &r, &p, &["--plan", &no_action]),
            Expect::Line(&["{dir}/no-action-column.csv", "line 1", "action"]),
        ),
        case(
            "restore: plan row naming another dest",
            with("restore", &r, &p, &["--plan", &other_dest_row]),
            Expect::Line(&["{dir}/other-dest-row.csv", "line 4", "dest", "{other_primary}"]),
        ),
        case(
            "restore: plan made for another bucket pair",
            with(
                "restore",
                &r,
                &url(&other_primary),
                &["--plan", &good.display().to_string()],
            ),
            Expect::Line(&["{dir}/good-plan.csv", "line 2", "dest"]),
        ),
        case(
            "restore: plan file that does not exist",
            with("restore", &r, &p, &["--plan", &dirs.arg("no-such-plan.csv")]),
            Expect::Line(&["{dir}/no-such-plan.csv"]),
        ),
        case(
            "restore: source key with no name under the dest root",
            with("restore", &format!("{r}/k/00000"), &p, &[]),
            Expect::Line(&["\"k/00000\"", "empty key"]),
        ),
        case(
            "restore: --part-size 5XB",
            with("restore", &r, &p, &["--part-size", "5XB"]),
            Expect::Clap(&["--part-size", "5XB"]),
        ),
        case(
            "restore: --multipart-threshold 5XB",
            with("restore", &r, &p, &["--multipart-threshold", "5XB"]),
            Expect::Clap(&["--multipart-threshold", "5XB"]),
        ),
        case(
            "restore: --concurrency 0",
            with("restore", &r, &p, &["--concurrency", "0"]),
            Expect::Line(&["--concurrency"]),
        ),
        case(
            "restore: --concurrency -1",
            with("restore", &r, &p, &["--concurrency", "-1"]),
            Expect::Clap(&["-1"]),
        ),
        case(
            "plan: --page-size 0",
            with("plan", &r, &p, &["--page-size", "0"]),
            Expect::Line(&["--page-size", "0"]),
        ),
        case(
            "verify: --page-size 1001",
            with("verify", &r, &p, &["--page-size", "1001"]),
            Expect::Line(&["--page-size", "1001"]),
        ),
        case(
            "restore: --read-timeout soon",
            with("restore", &r, &p, &["--read-timeout", "soon"]),
            Expect::Clap(&["--read-timeout", "soon"]),
        ),
        case(
            "restore: --sse-kms-key-id without --sse aws:kms",
            with("restore", &r, &p, &["--sse-kms-key-id", "key-1"]),
            Expect::Line(&["--sse-kms-key-id"]),
        ),
    ];
    let mut creds = case(
        "restore: credentials the server does not know",
        {
            let mut args: Vec<String> = [
                "restore",
                "--source",
                &url(&creds_replica),
                "--dest",
                &url(&creds_primary),
            ]
            .map(str::to_owned)
            .to_vec();
            args.extend(conn_args(&creds_proxy.endpoint()));
            args.extend(["--yes", "--state-dir", &dirs.arg("state")].map(str::to_owned));
            args
        },
        Expect::Line(&["credentials rejected", "InvalidAccessKeyId"]),
    );
    creds.env = vec![
        ("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "not-a-secret".to_owned()),
    ];
    creds.proxy = 1;
    cases.push(creds);

    let vars = [
        ("missing", missing.clone()),
        ("replica_off", replica_off.clone()),
        ("primary_suspended", primary_suspended.clone()),
        ("primary_off", primary_off.clone()),
        ("other_primary", other_primary.clone()),
        ("replica", replica.name.clone()),
        ("primary", primary.name.clone()),
        ("dir", dirs.cwd().display().to_string()),
    ];
    let mut failures = Vec::new();
    for case in &cases {
        let proxy = proxies[case.proxy];
        let mark = proxy.mark();
        let mut cli = Cli::new(&case.args)
            .env("AWS_CONFIG_FILE", dirs.path("aws-empty"))
            .env("AWS_SHARED_CREDENTIALS_FILE", dirs.path("aws-empty"))
            .env("RUST_BACKTRACE", "1")
            .timeout(Duration::from_secs(120));
        for (name, value) in &case.env {
            cli = cli.env(name, value);
        }
        let out = cli.run();
        let mut wrong = Vec::new();
        if out.code != 2 {
            wrong.push(format!("exit code {}", out.code));
        }
        for bad in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
            if out.stderr.contains(bad) {
                wrong.push(format!("stderr shows {bad:?}"));
            }
        }
        if !out.stdout.is_empty() {
            wrong.push("stdout is not empty".to_owned());
        }
        let lines: Vec<&str> = out.stderr.lines().collect();
        let (Expect::Line(needles) | Expect::Clap(needles)) = case.expect;
        let first = lines.first().copied().unwrap_or_default();
        if !first.starts_with("error: ") {
            wrong.push("stderr does not start with `error: `".to_owned());
        }
        if matches!(case.expect, Expect::Line(_)) && lines.len() != 1 {
            wrong.push(format!("{} lines on stderr", lines.len()));
        }
        // clap names the missing argument on a line of its own.
        let said = match case.expect {
            Expect::Line(_) => first,
            Expect::Clap(_) => out.stderr.as_str(),
        };
        for needle in needles {
            let needle = fill(needle, &vars);
            if !said.contains(&needle) {
                wrong.push(format!("the error lacks {needle:?}"));
            }
        }
        if out.stderr.contains("not-a-secret") {
            wrong.push("the secret is shown".to_owned());
        }
        let writes: Vec<RecordedRequest> = proxy
            .requests_since(mark)
            .into_iter()
            .filter(RecordedRequest::is_write)
            .collect();
        if !writes.is_empty() {
            wrong.push(format!("writes: {writes:#?}"));
        }
        if !wrong.is_empty() {
            failures.push(format!("{}: {}\n{out:#?}", case.name, wrong.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );

    for ((client, bucket), before) in buckets.iter().zip(&before) {
        assert_eq!(
            &shapes(&list_all_versions(client, bucket, "").await),
            before,
            "{bucket} changed"
        );
    }
    for p in proxies {
        let writes: Vec<RecordedRequest> = p.requests().into_iter().filter(RecordedRequest::is_write).collect();
        assert!(writes.is_empty(), "{writes:#?}");
    }
}
