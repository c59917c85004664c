//! Shows that the test support works: the local server, seeding and listing, snapshots,
//! the proxy and running the binary. Later feature tests rely on each of these.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{ObjectCannedAcl, ObjectLockRetentionMode, StorageClass};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Digest;

use crate::support::proxy::{Fault, Proxy, S3Op};
use crate::support::scenario::{Damage, MOTO_OWNER_ID, ObjectSpec, Permission, Scenario, special_keys};
use crate::support::{
    BucketOpts, Cli, DefaultEncryption, PRIMARY_REGION, REPLICA_REGION, VersionShape, Versioning, client, client_for,
    client_with_retries, create_bucket, list_all_versions, list_all_versions_paged, run_cli, server, shapes, snapshot,
    unique_bucket, wait_cli,
};

/// A copy source as S3 wants it: the key percent-encoded, `/` kept, `+` as `%2B`.
fn copy_source(bucket: &str, key: &str, version_id: &str) -> String {
    const KEY: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    format!("{bucket}/{}?versionId={version_id}", utf8_percent_encode(key, KEY))
}

/// Asserts two listings are equal, showing the first difference rather than both lists.
#[track_caller]
fn assert_same_listing(got: &[VersionShape], want: &[VersionShape]) {
    if let Some(i) = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)) {
        let around = |v: &[VersionShape]| v[i.saturating_sub(2)..(i + 3).min(v.len())].to_vec();
        panic!(
            "listings differ at {i} of {} (got) / {} (want)\ngot:  {:#?}\nwant: {:#?}",
            got.len(),
            want.len(),
            around(got),
            around(want)
        );
    }
}

#[tokio::test]
async fn server_starts_once_and_answers_s3() {
    let first = server::shared().endpoint();
    assert_eq!(first, server::shared().endpoint(), "one server per test binary");
    let s3 = client(PRIMARY_REGION);
    let bucket = unique_bucket("selftest-server");
    create_bucket(&s3, &bucket, PRIMARY_REGION, &BucketOpts::default()).await;
    let buckets = s3.list_buckets().send().await.expect("list buckets");
    assert!(buckets.buckets().iter().any(|b| b.name() == Some(bucket.as_str())));
}

#[tokio::test]
async fn separate_server_has_its_own_state_and_stops_when_dropped() {
    let separate = server::start_separate(&[("INITIAL_NO_AUTH_ACTION_COUNT", "1000")]);
    assert_ne!(separate.endpoint(), server::shared().endpoint());
    let bucket = unique_bucket("selftest-separate");
    create_bucket(
        &client_for(separate.endpoint(), PRIMARY_REGION),
        &bucket,
        PRIMARY_REGION,
        &BucketOpts::default(),
    )
    .await;
    let on_shared = client(PRIMARY_REGION).head_bucket().bucket(&bucket).send().await;
    assert!(on_shared.is_err(), "the shared server must not know {bucket}");

    let port = separate.port();
    drop(separate);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server still listening on {port} after drop"
    );
}

#[test]
fn unique_bucket_names_are_valid() {
    let long = unique_bucket(&"Very_Long Test.Name-".repeat(10));
    let short = unique_bucket("x");
    for name in [&long, &short] {
        assert!(name.len() <= 63 && name.starts_with("t-"), "{name}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{name}"
        );
        assert!(!name.ends_with('-') && !name.contains("--"), "{name}");
    }
    assert_ne!(unique_bucket("x"), short);
}

#[tokio::test]
async fn bucket_options_are_applied() {
    let s3 = client(REPLICA_REGION);
    let read_versioning = |bucket: String| {
        let s3 = s3.clone();
        async move {
            let out = s3
                .get_bucket_versioning()
                .bucket(bucket)
                .send()
                .await
                .expect("versioning");
            out.status().map(|s| s.as_str().to_owned())
        }
    };
    let suspended = unique_bucket("selftest-suspended");
    let opts = BucketOpts {
        versioning: Versioning::Suspended,
        ..BucketOpts::default()
    };
    create_bucket(&s3, &suspended, REPLICA_REGION, &opts).await;
    assert_eq!(read_versioning(suspended).await.as_deref(), Some("Suspended"));
    let off = unique_bucket("selftest-off");
    let opts = BucketOpts {
        versioning: Versioning::Off,
        ..BucketOpts::default()
    };
    create_bucket(&s3, &off, REPLICA_REGION, &opts).await;
    assert_eq!(read_versioning(off).await, None);

    let modern = unique_bucket("selftest-modern");
    let opts = BucketOpts {
        encryption: Some(DefaultEncryption::SseKms("alias/test".to_owned())),
        object_lock: true,
        ..BucketOpts::modern()
    };
    create_bucket(&s3, &modern, REPLICA_REGION, &opts).await;
    assert_eq!(read_versioning(modern.clone()).await.as_deref(), Some("Enabled"));
    let location = s3.get_bucket_location().bucket(&modern).send().await.expect("location");
    assert_eq!(location.location_constraint().map(|c| c.as_str()), Some(REPLICA_REGION));
    let ownership = s3
        .get_bucket_ownership_controls()
        .bucket(&modern)
        .send()
        .await
        .expect("ownership");
    let rules = ownership.ownership_controls().map(|c| c.rules()).unwrap_or_default();
    assert_eq!(rules[0].object_ownership().as_str(), "BucketOwnerEnforced");
    let encryption = s3
        .get_bucket_encryption()
        .bucket(&modern)
        .send()
        .await
        .expect("encryption");
    let by_default = encryption
        .server_side_encryption_configuration()
        .and_then(|c| c.rules().first())
        .and_then(|r| r.apply_server_side_encryption_by_default())
        .expect("default encryption");
    assert_eq!(by_default.kms_master_key_id(), Some("alias/test"));
    let lock = s3
        .get_object_lock_configuration()
        .bucket(&modern)
        .send()
        .await
        .expect("object lock");
    let enabled = lock.object_lock_configuration().and_then(|c| c.object_lock_enabled());
    assert_eq!(enabled.map(|e| e.as_str()), Some("Enabled"));
}

/// 1,000+ versions (many keys, one key with a long history, delete markers in the middle and
/// on top, multipart uploads) list back exactly as seeded, through pages of 97 and of 1,000
/// (moto copies every version of the bucket for each page: small pages over 1,000 versions
/// take about 0.4 s each).
#[tokio::test]
async fn seeded_histories_list_back_in_s3_order() {
    let mut sc = Scenario::builder("selftest-order");
    sc.objects("bulk/", 240, 4, 64)
        .versions("deep/one-key", 60, 16)
        .put("dm/middle", ObjectSpec::text("v0"))
        .delete("dm/middle")
        .put("dm/middle", ObjectSpec::text("v2"))
        .put("dm/middle", ObjectSpec::text("v3"))
        .put("dm/on-top", ObjectSpec::text("v0"))
        .delete("dm/on-top")
        .put("dm/twice", ObjectSpec::text("v0"))
        .delete("dm/twice")
        .delete("dm/twice")
        .put("mp/uniform", ObjectSpec::multipart_uniform(5120, 3))
        .put("mp/uneven", ObjectSpec::multipart(&[6144, 5120, 7168]));
    let seeded = sc.seed().await;
    let replica = &seeded.replica;
    println!(
        "seeded {} entries in {:.2?} with {} requests: {:.0} entries/s",
        replica.entry_count(),
        seeded.elapsed,
        seeded.requests,
        seeded.entries_per_second()
    );
    assert!(replica.entry_count() >= 1000);
    assert!(seeded.primary.keys.is_empty());

    let expected = replica.expected_listing();
    let small_pages = list_all_versions_paged(&replica.client, &replica.name, "", 97).await;
    assert_same_listing(&shapes(&small_pages), &expected);
    let big_pages = list_all_versions(&replica.client, &replica.name, "").await;
    assert_eq!(big_pages, small_pages);
    let prefixed = list_all_versions_paged(&replica.client, &replica.name, "dm/", 2).await;
    let dm_expected: Vec<_> = expected.iter().filter(|v| v.key.starts_with("dm/")).cloned().collect();
    assert_same_listing(&shapes(&prefixed), &dm_expected);

    let uneven = replica.current("mp/uneven").expect("seeded");
    assert!(uneven.etag.as_deref().is_some_and(|e| e.ends_with("-3")), "{uneven:?}");
    assert_eq!(uneven.size_bytes, 6144 + 5120 + 7168);
}

#[tokio::test]
async fn special_keys_round_trip_verbatim() {
    let mut sc = Scenario::builder("selftest-keys");
    sc.special_keys();
    let seeded = sc.seed().await;
    let replica = &seeded.replica;
    let listed = list_all_versions_paged(&replica.client, &replica.name, "", 5).await;
    let mut want = special_keys();
    want.sort();
    let got: Vec<String> = listed.iter().map(|r| r.key.clone()).collect();
    assert_eq!(got, want);
    assert_ne!("caf\u{e9}", "cafe\u{301}");
    assert_eq!(listed.iter().filter(|r| r.key.len() == 1024).count(), 1);

    for (key, version) in replica.live() {
        let got = replica
            .client
            .get_object()
            .bucket(&replica.name)
            .key(key)
            .version_id(&version.version_id)
            .send()
            .await
            .unwrap_or_else(|e| panic!("get {key:?}: {e:?}"));
        let body = got.body.collect().await.expect("body").into_bytes();
        assert_eq!(Some(&body), version.body(), "{key:?}");
    }
}

/// Every attribute the builder can set is stored, and a snapshot sees a tag change.
#[tokio::test]
async fn attributes_are_stored_and_snapshots_see_changes() {
    let rich = ObjectSpec::text("<html/>")
        .content_type("text/html; charset=utf-8")
        .cache_control("max-age=60")
        .content_disposition("attachment; filename=\"a b.html\"")
        .content_encoding("identity")
        .content_language("de-CH")
        .meta("owner", "team-a")
        .meta("checksum-note", "x")
        .tag("class", "gold")
        .tag("with space", "a/b=c")
        .grant(Permission::Read, &format!("id=\"{MOTO_OWNER_ID}\""))
        .grant(
            Permission::ReadAcp,
            "uri=\"http://acs.amazonaws.com/groups/global/AllUsers\"",
        )
        .sse_s3()
        .storage_class(StorageClass::StandardIa)
        .checksum_sha256();
    let mut sc = Scenario::builder("selftest-attrs");
    sc.put("rich", rich.clone())
        .put("glacier", ObjectSpec::random(100).storage_class(StorageClass::Glacier))
        .put("public", ObjectSpec::random(10).canned_acl(ObjectCannedAcl::PublicRead))
        .put(
            "kms",
            ObjectSpec::random(10).sse_kms("arn:aws:kms:eu-west-1:123456789012:key/test"),
        )
        .put(
            "mp/sha",
            ObjectSpec::multipart(&[6144, 5120, 7168])
                .checksum_sha256()
                .content_type("application/x-mp")
                .tag("mp", "yes"),
        );
    let seeded = sc.seed().await;
    let replica = &seeded.replica;
    let snap = snapshot(&replica.client, &replica.name).await;
    let find = |key: &str| snap.versions.iter().find(|v| v.record.key == key).expect("in snapshot");

    let v = find("rich");
    let head = v.head.as_ref().expect("head");
    assert_eq!(head.content_type.as_deref(), Some("text/html; charset=utf-8"));
    assert_eq!(head.cache_control.as_deref(), Some("max-age=60"));
    assert_eq!(
        head.content_disposition.as_deref(),
        Some("attachment; filename=\"a b.html\"")
    );
    assert_eq!(head.content_encoding.as_deref(), Some("identity"));
    assert_eq!(head.content_language.as_deref(), Some("de-CH"));
    assert_eq!(head.metadata.get("owner").map(String::as_str), Some("team-a"));
    assert_eq!(head.sse.as_deref(), Some("AES256"));
    assert_eq!(head.storage_class.as_deref(), Some("STANDARD_IA"));
    let sha = aws_smithy_types::base64::encode(sha2::Sha256::digest(&rich.body));
    assert_eq!(head.checksums, vec![format!("SHA256={sha}")]);
    assert_eq!(
        v.tags,
        Some(vec![
            ("class".to_owned(), "gold".to_owned()),
            ("with space".to_owned(), "a/b=c".to_owned())
        ])
    );
    let grants = v.grants.as_ref().expect("grants");
    assert!(grants.contains(&format!("READ {MOTO_OWNER_ID}")), "{grants:?}");
    assert!(
        grants.iter().any(|g| g.starts_with("READ_ACP http://acs")),
        "{grants:?}"
    );
    assert_eq!(v.record.storage_class.as_deref(), Some("STANDARD_IA"));

    assert_eq!(find("glacier").record.storage_class.as_deref(), Some("GLACIER"));
    let public = find("public").grants.clone().expect("grants");
    assert!(public.iter().any(|g| g.starts_with("READ http://acs")), "{public:?}");
    // moto refuses tagging and ACL reads of an archived version before a restore.
    assert_eq!((&find("glacier").tags, &find("glacier").grants), (&None, &None));
    assert_eq!(find("kms").head.as_ref().unwrap().sse.as_deref(), Some("aws:kms"));
    let mp = find("mp/sha");
    let mp_head = mp.head.as_ref().unwrap();
    assert_eq!(mp_head.content_type.as_deref(), Some("application/x-mp"));
    assert!(
        mp_head.checksums.iter().any(|c| c.starts_with("SHA256=")),
        "{mp_head:?}"
    );
    assert_eq!(mp.tags, Some(vec![("mp".to_owned(), "yes".to_owned())]));

    assert_eq!(snapshot(&replica.client, &replica.name).await, snap, "nothing changed");
    let current = replica.current("rich").unwrap();
    replica
        .client
        .put_object_tagging()
        .bucket(&replica.name)
        .key("rich")
        .version_id(&current.version_id)
        .tagging(
            aws_sdk_s3::types::Tagging::builder()
                .tag_set(
                    aws_sdk_s3::types::Tag::builder()
                        .key("class")
                        .value("silver")
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("retag");
    assert_ne!(
        snapshot(&replica.client, &replica.name).await,
        snap,
        "a tag change shows"
    );
}

/// Damage follows the outage timeline: stale primary versions are older than the replica's
/// newer ones, newer primary versions are newer than the replica's latest.
#[tokio::test]
async fn damage_follows_the_outage_timeline() {
    let mut sc = Scenario::builder("selftest-damage");
    sc.versions("stale", 3, 32)
        .versions("replicated", 2, 32)
        .versions("restored", 2, 32)
        .versions("conflict", 2, 32)
        .versions("lost", 2, 32)
        .put("deleted", ObjectSpec::text("x"))
        .delete("deleted")
        .damage("stale", Damage::Stale { keep: 1 })
        .damage("replicated", Damage::Replicated)
        .damage("restored", Damage::Restored)
        .damage("conflict", Damage::Stale { keep: 1 })
        .damage("conflict", Damage::Newer(ObjectSpec::text("written on the primary")))
        .damage("deleted", Damage::Replicated)
        .primary_only("primary-only", ObjectSpec::text("p"));
    let seeded = sc.seed().await;
    let (replica, primary) = (&seeded.replica, &seeded.primary);

    let listed = list_all_versions(&primary.client, &primary.name, "").await;
    assert_same_listing(&shapes(&listed), &primary.expected_listing());
    let keys: Vec<&str> = primary.keys.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["conflict", "deleted", "primary-only", "replicated", "restored", "stale"]
    );
    assert_eq!(primary.history("stale")[0].body(), replica.history("stale")[0].body());
    assert_eq!(
        primary.current("restored").unwrap().etag,
        replica.current("restored").unwrap().etag
    );
    assert!(primary.current("deleted").unwrap().is_delete_marker);

    let replica_listed = list_all_versions(&replica.client, &replica.name, "").await;
    let time = |records: &[s3_failback::model::VersionRecord], key: &str, vid: &str| {
        records
            .iter()
            .find(|r| r.key == key && r.version_id == vid)
            .expect("listed")
            .last_modified
    };
    let stale_primary = time(&listed, "stale", &primary.history("stale")[0].version_id);
    let stale_replica_newer = time(&replica_listed, "stale", &replica.history("stale")[1].version_id);
    assert!(stale_primary < stale_replica_newer);
    let newer = time(&listed, "conflict", &primary.current("conflict").unwrap().version_id);
    let replica_latest = time(
        &replica_listed,
        "conflict",
        &replica.current("conflict").unwrap().version_id,
    );
    assert!(newer > replica_latest);
}

#[tokio::test]
async fn proxy_records_and_classifies_operations() {
    let proxy = Proxy::start();
    let s3 = client_for(&proxy.endpoint(), PRIMARY_REGION);
    let bucket = unique_bucket("selftest-proxy");
    create_bucket(&s3, &bucket, PRIMARY_REGION, &BucketOpts::default()).await;
    let key = "dir/a b+c?d#e%2F\u{e9}";
    let put = s3
        .put_object()
        .bucket(&bucket)
        .key(key)
        .storage_class(StorageClass::Glacier)
        .body(vec![7u8; 6000].into())
        .send()
        .await
        .expect("put");
    let vid = put.version_id().unwrap().to_owned();
    s3.put_object()
        .bucket(&bucket)
        .key("plain")
        .body(vec![1u8; 12000].into())
        .send()
        .await
        .expect("put");
    let plain = s3
        .head_object()
        .bucket(&bucket)
        .key("plain")
        .send()
        .await
        .expect("head");
    assert_eq!(
        plain.content_length(),
        Some(12000),
        "HEAD through the proxy keeps Content-Length"
    );
    s3.restore_object()
        .bucket(&bucket)
        .key(key)
        .version_id(&vid)
        .restore_request(aws_sdk_s3::types::RestoreRequest::builder().days(1).build())
        .send()
        .await
        .expect("restore");
    s3.get_object_acl()
        .bucket(&bucket)
        .key(key)
        .version_id(&vid)
        .send()
        .await
        .expect("acl");
    s3.copy_object()
        .bucket(&bucket)
        .key("copy")
        .copy_source(copy_source(&bucket, key, &vid))
        .acl(ObjectCannedAcl::BucketOwnerFullControl)
        .send()
        .await
        .expect("copy");
    let upload = s3
        .create_multipart_upload()
        .bucket(&bucket)
        .key("mp")
        .send()
        .await
        .expect("create");
    let upload_id = upload.upload_id().unwrap();
    let mut parts = Vec::new();
    for (n, range) in [(1, "bytes=0-5119"), (2, "bytes=5120-11999")] {
        let out = s3
            .upload_part_copy()
            .bucket(&bucket)
            .key("mp")
            .upload_id(upload_id)
            .part_number(n)
            .copy_source(format!("{bucket}/plain"))
            .copy_source_range(range)
            .send()
            .await
            .expect("upload part copy");
        let etag = out.copy_part_result().and_then(|r| r.e_tag()).unwrap().to_owned();
        parts.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(n)
                .e_tag(etag)
                .build(),
        );
    }
    s3.complete_multipart_upload()
        .bucket(&bucket)
        .key("mp")
        .upload_id(upload_id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .expect("complete");
    let listed = list_all_versions(&s3, &bucket, "").await;
    s3.delete_object()
        .bucket(&bucket)
        .key("plain")
        .send()
        .await
        .expect("delete");

    use S3Op::*;
    let expected = [
        CreateBucket,
        PutBucketVersioning,
        PutObject,
        PutObject,
        HeadObject,
        RestoreObject,
        GetObjectAcl,
        CopyObject,
        CreateMultipartUpload,
        UploadPartCopy,
        UploadPartCopy,
        CompleteMultipartUpload,
        ListObjectVersions,
        DeleteObject,
    ];
    assert_eq!(proxy.ops(), expected);
    let requests = proxy.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.status.is_some_and(|s| s < 300) && !r.from_proxy),
        "{requests:#?}"
    );
    assert_eq!(requests[2].key.as_deref(), Some(key), "keys are recorded decoded");
    assert_eq!(requests[2].header("x-amz-storage-class"), Some("GLACIER"));
    assert_eq!(requests[2].region.as_deref(), Some(PRIMARY_REGION));
    let copy = &proxy.requests_of(CopyObject)[0];
    assert_eq!(
        copy.copy_source(),
        Some((bucket.clone(), key.to_owned(), Some(vid.clone())))
    );
    assert_eq!(copy.header("x-amz-acl"), Some("bucket-owner-full-control"));
    let part_copies = proxy.requests_of(UploadPartCopy);
    assert_eq!(part_copies[1].op_seq, 1);
    assert_eq!(
        part_copies[1].header("x-amz-copy-source-range"),
        Some("bytes=5120-11999")
    );
    assert_eq!(part_copies[1].query_param("partNumber").as_deref(), Some("2"));
    assert_eq!(requests[12].query_param("versions").as_deref(), Some(""));
    assert_eq!(listed.len(), 4);

    let writes: Vec<S3Op> = proxy.writes_to(&bucket).iter().map(|r| r.op).collect();
    let reads = [HeadObject, GetObjectAcl, ListObjectVersions];
    let want: Vec<S3Op> = expected.into_iter().filter(|op| !reads.contains(op)).collect();
    assert_eq!(writes, want);
    assert!(proxy.writes_to("some-other-bucket").is_empty());
}

#[tokio::test]
async fn proxy_answers_slow_down_above_k_in_flight() {
    let s3 = client(PRIMARY_REGION);
    let bucket = unique_bucket("selftest-throttle");
    create_bucket(&s3, &bucket, PRIMARY_REGION, &BucketOpts::default()).await;
    s3.put_object()
        .bucket(&bucket)
        .key("k")
        .body(b"x".to_vec().into())
        .send()
        .await
        .expect("put");

    let proxy = Proxy::start();
    proxy.set_throttle_above(Some(2));
    // Hold each forwarded request long enough for the others to arrive meanwhile.
    proxy.set_fault_hook(|_| Fault::Delay(Duration::from_millis(800)));
    let once = client_with_retries(&proxy.endpoint(), PRIMARY_REGION, 1);
    let heads = (0..6).map(|_| once.head_object().bucket(&bucket).key("k").send());
    let results = futures::future::join_all(heads).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let slow_down = results
        .iter()
        .filter(|r| {
            r.as_ref()
                .err()
                .and_then(|e| e.raw_response())
                .is_some_and(|r| r.status().as_u16() == 503)
        })
        .count();
    assert_eq!(ok + slow_down, 6, "{results:?}");
    assert!(ok >= 1 && slow_down >= 1, "ok {ok}, slow down {slow_down}");
    assert!(
        proxy.max_in_flight() <= 2,
        "{} forwarded at once",
        proxy.max_in_flight()
    );
    let recorded_503 = proxy
        .requests()
        .iter()
        .filter(|r| r.status == Some(503) && r.from_proxy)
        .count();
    assert_eq!(recorded_503, slow_down);

    // The body is S3's: the SDK reads the code from it.
    let put = once.put_object().bucket(&bucket).key("k2").body(b"y".to_vec().into());
    proxy.clear_fault_hook();
    proxy.set_throttle_above(Some(0));
    let err = put.send().await.expect_err("throttled");
    assert_eq!(err.code(), Some("SlowDown"));
    proxy.set_throttle_above(None);
}

#[tokio::test]
async fn proxy_fault_hook_fails_delays_and_resets_chosen_requests() {
    let proxy = Proxy::start();
    let s3 = client_for(&proxy.endpoint(), PRIMARY_REGION);
    let bucket = unique_bucket("selftest-faults");
    create_bucket(&s3, &bucket, PRIMARY_REGION, &BucketOpts::default()).await;
    let resets_left = Arc::new(AtomicUsize::new(1));
    {
        let resets_left = resets_left.clone();
        proxy.set_fault_hook(move |r| match (r.op, r.key.as_deref(), r.op_seq) {
            (S3Op::PutObject, Some("retried"), _) if r.header("x-amz-meta-try").is_some() => Fault::internal_error(),
            (S3Op::PutObject, Some("twice"), _) if resets_left.fetch_sub(1, Ordering::SeqCst) == 1 => {
                Fault::ForwardThenReset
            }
            (S3Op::HeadObject, _, 0) => Fault::ResetConnection,
            (S3Op::HeadObject, _, 1) => Fault::Delay(Duration::from_millis(300)),
            _ => Fault::Forward,
        });
    }
    // A 500 on every attempt: the SDK gives up with the proxy's error.
    let err = s3
        .put_object()
        .bucket(&bucket)
        .key("retried")
        .metadata("try", "1")
        .body(b"a".to_vec().into())
        .send()
        .await
        .expect_err("always 500");
    assert_eq!(err.code(), Some("InternalError"));
    let attempts = proxy.requests_of(S3Op::PutObject);
    assert_eq!(attempts.len(), 5, "the SDK retried");
    assert!(attempts.iter().all(|r| r.status == Some(500) && r.from_proxy));

    // The write happens, the answer is lost, the SDK retries: two versions (S3-NOTES 31).
    s3.put_object()
        .bucket(&bucket)
        .key("twice")
        .body(b"b".to_vec().into())
        .send()
        .await
        .expect("retried put");
    let versions = list_all_versions(&client(PRIMARY_REGION), &bucket, "twice").await;
    assert_eq!(versions.len(), 2, "{versions:?}");

    // First HEAD: reset, retried; the retry is delayed.
    let started = Instant::now();
    s3.head_object()
        .bucket(&bucket)
        .key("twice")
        .send()
        .await
        .expect("head after reset");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let heads = proxy.requests_of(S3Op::HeadObject);
    assert_eq!(heads.len(), 2);
    assert_eq!((heads[0].status, heads[0].from_proxy), (None, true));
    assert_eq!((heads[1].status, heads[1].from_proxy), (Some(200), false));
}

/// Sends a raw GET through the proxy (moto checks no signature, but wants one present) and
/// returns the response head and the body bytes that arrived before the connection closed.
fn raw_get(endpoint: &str, path: &str) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let host = endpoint.strip_prefix("http://").expect("http endpoint");
    let mut stream = std::net::TcpStream::connect(host).expect("connect to the proxy");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, \
         SignedHeaders=host, Signature=0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = Vec::new();
    // The proxy closes the connection after the cut: read to the end (an error is an end too).
    let _ = stream.read_to_end(&mut answer);
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    (head, answer[split + 4..].to_vec())
}

/// `Fault::TruncateBody(n)`: the server's status and headers, Content-Length included, and
/// only the first n bytes of its body, then the connection closes; the client sees an
/// incomplete answer (the SDK an error), the record says the proxy cut it, and a body no
/// longer than n goes through whole.
#[tokio::test]
async fn proxy_cuts_response_bodies_short() {
    let s3 = client(PRIMARY_REGION);
    let bucket = unique_bucket("selftest-truncate");
    create_bucket(&s3, &bucket, PRIMARY_REGION, &BucketOpts::default()).await;
    let body: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    for key in ["big", "small"] {
        let data = if key == "big" {
            body.clone()
        } else {
            body[..40].to_vec()
        };
        s3.put_object()
            .bucket(&bucket)
            .key(key)
            .body(data.into())
            .send()
            .await
            .expect("put");
    }
    let proxy = Proxy::start();
    proxy.set_fault_hook(|r| match r.op {
        S3Op::GetObject | S3Op::ListObjectVersions => Fault::TruncateBody(100),
        _ => Fault::Forward,
    });

    let (head, got) = raw_get(&proxy.endpoint(), &format!("/{bucket}/big"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 1000"),
        "the server's Content-Length: {head}"
    );
    assert_eq!(got, body[..100], "exactly the first 100 bytes, then the end");

    let (head, got) = raw_get(&proxy.endpoint(), &format!("/{bucket}/small"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(got, body[..40], "a body shorter than the cut goes through whole");

    // Through the SDK: the streamed GET body fails, and so does a listing (one attempt).
    let once = client_with_retries(&proxy.endpoint(), PRIMARY_REGION, 1);
    let get = once
        .get_object()
        .bucket(&bucket)
        .key("big")
        .send()
        .await
        .expect("head of the answer");
    assert!(get.body.collect().await.is_err(), "a cut body is an error");
    let listed = once.list_object_versions().bucket(&bucket).send().await;
    assert!(listed.is_err(), "a cut listing is an error: {listed:?}");

    let gets = proxy.requests_of(S3Op::GetObject);
    assert_eq!(gets.len(), 3);
    assert!(
        gets.iter().all(|r| r.status == Some(200) && r.from_proxy),
        "the server answered 200, the proxy cut it: {gets:#?}"
    );
    let lists = proxy.requests_of(S3Op::ListObjectVersions);
    assert_eq!(
        (lists.len(), lists[0].status, lists[0].from_proxy),
        (1, Some(200), true)
    );

    // Without the hook the same requests go through whole.
    proxy.clear_fault_hook();
    let get = once.get_object().bucket(&bucket).key("big").send().await.expect("get");
    assert_eq!(get.body.collect().await.expect("whole body").into_bytes(), body);
}

/// `Fault::Delay` holds a request before the server sees it, and drops it unsent when the
/// client gives up; `Fault::DelayResponse` lets the server do the work and holds the answer:
/// the client times out although the write happened.
#[tokio::test]
async fn proxy_delays_before_or_after_forwarding() {
    let proxy = Proxy::start();
    let bucket = unique_bucket("selftest-delays");
    create_bucket(&client(PRIMARY_REGION), &bucket, PRIMARY_REGION, &BucketOpts::default()).await;
    proxy.set_fault_hook(|r| match r.key.as_deref() {
        Some("before") => Fault::Delay(Duration::from_secs(2)),
        Some("after") => Fault::DelayResponse(Duration::from_secs(2)),
        _ => Fault::Forward,
    });
    let http = aws_smithy_http_client::Builder::new().build_http();
    let impatient = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(PRIMARY_REGION))
        .endpoint_url(proxy.endpoint())
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "selftest",
        ))
        .http_client(http)
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .read_timeout(Duration::from_millis(500))
                .build(),
        )
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(1))
        .build();
    let impatient = aws_sdk_s3::Client::from_conf(impatient);
    for key in ["before", "after"] {
        let started = Instant::now();
        let put = impatient
            .put_object()
            .bucket(&bucket)
            .key(key)
            .body(b"x".to_vec().into())
            .send()
            .await;
        assert!(put.is_err(), "{key}: the client gives up");
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{key}: {:?}",
            started.elapsed()
        );
    }
    // Longer than both delays: a dropped request would have landed by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let keys: Vec<String> = list_all_versions(&client(PRIMARY_REGION), &bucket, "")
        .await
        .into_iter()
        .map(|v| v.key)
        .collect();
    assert_eq!(
        keys,
        ["after"],
        "only the request forwarded before the wait reached the server"
    );
}

/// moto lists every multipart upload as initiated at the same fixed moment in 2010; the
/// proxy can report when each upload it saw created was initiated, as S3 does, also for an
/// upload whose CreateMultipartUpload answer the client never got.
#[tokio::test]
async fn proxy_reports_when_uploads_were_initiated() {
    let proxy = Proxy::start();
    let bucket = unique_bucket("selftest-initiated");
    let direct = client(PRIMARY_REGION);
    create_bucket(&direct, &bucket, PRIMARY_REGION, &BucketOpts::default()).await;
    let old = direct
        .create_multipart_upload()
        .bucket(&bucket)
        .key("before")
        .send()
        .await
        .expect("create");
    proxy.emulate_upload_initiated(&bucket);
    proxy.set_fault_hook(|r| match r.key.as_deref() {
        Some("lost") => Fault::ForwardThenReset,
        _ => Fault::Forward,
    });
    let s3 = client_with_retries(&proxy.endpoint(), PRIMARY_REGION, 1);
    let started = jiff::Timestamp::now();
    let new = s3
        .create_multipart_upload()
        .bucket(&bucket)
        .key("new")
        .send()
        .await
        .expect("create");
    assert!(
        s3.create_multipart_upload()
            .bucket(&bucket)
            .key("lost")
            .send()
            .await
            .is_err()
    );
    let initiated = |list: &aws_sdk_s3::operation::list_multipart_uploads::ListMultipartUploadsOutput| {
        list.uploads()
            .iter()
            .map(|u| {
                let t = u.initiated().expect("Initiated");
                (u.key().unwrap().to_owned(), jiff::Timestamp::new(t.secs(), 0).unwrap())
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let moto = initiated(
        &direct
            .list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .expect("list"),
    );
    assert_eq!(moto.len(), 3);
    assert!(
        moto.values().all(|t| t.to_string() == "2010-11-10T20:48:33Z"),
        "{moto:?}"
    );
    let proxied = initiated(&s3.list_multipart_uploads().bucket(&bucket).send().await.expect("list"));
    let recent = |t: &jiff::Timestamp| {
        *t >= started.checked_sub(jiff::SignedDuration::from_secs(1)).unwrap() && *t <= jiff::Timestamp::now()
    };
    assert!(recent(&proxied["new"]) && recent(&proxied["lost"]), "{proxied:?}");
    assert_eq!(
        proxied["before"], moto["before"],
        "an upload the proxy did not see keeps moto's time"
    );
    for (key, upload) in [("before", old.upload_id()), ("new", new.upload_id())] {
        direct
            .abort_multipart_upload()
            .bucket(&bucket)
            .key(key)
            .upload_id(upload.unwrap())
            .send()
            .await
            .expect("abort");
    }
}

#[tokio::test]
async fn proxy_fakes_wrong_region_redirects_and_adds_lock_checksum_header() {
    let proxy = Proxy::start();
    let bucket = unique_bucket("selftest-lock");
    let opts = BucketOpts {
        default_retention: Some((ObjectLockRetentionMode::Governance, 1)),
        ..BucketOpts::default()
    };
    let eu = client_for(&proxy.endpoint(), REPLICA_REGION);
    create_bucket(&eu, &bucket, REPLICA_REGION, &opts).await;
    proxy.set_bucket_region(&bucket, REPLICA_REGION);

    let us = client_for(&proxy.endpoint(), PRIMARY_REGION);
    let err = us.head_bucket().bucket(&bucket).send().await.expect_err("wrong region");
    let raw = err.raw_response().expect("http response");
    assert_eq!(raw.status().as_u16(), 301);
    assert_eq!(raw.headers().get("x-amz-bucket-region"), Some(REPLICA_REGION));
    let err = us
        .list_object_versions()
        .bucket(&bucket)
        .send()
        .await
        .expect_err("wrong region");
    assert_eq!(err.code(), Some("PermanentRedirect"));
    eu.head_bucket().bucket(&bucket).send().await.expect("right region");

    let put = eu
        .put_object()
        .bucket(&bucket)
        .key("src")
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .checksum_sha256(aws_smithy_types::base64::encode(sha2::Sha256::digest(b"locked")))
        .body(b"locked".to_vec().into())
        .send()
        .await
        .expect("put with checksum into a lock bucket");
    let source = copy_source(&bucket, "src", put.version_id().unwrap());
    let copy = || eu.copy_object().bucket(&bucket).key("dst").copy_source(&source).send();
    let err = copy()
        .await
        .expect_err("moto wants a checksum header on copies into a lock bucket");
    assert_eq!(err.code(), Some("MissingUploadObjectWithObjectLockHeaders"));
    proxy.add_copy_checksum_header(&bucket);
    copy().await.expect("copy with the header added by the proxy");
    let copies = proxy.requests_of(S3Op::CopyObject);
    assert_eq!(
        copies.last().unwrap().header("x-amz-sdk-checksum-algorithm"),
        None,
        "recorded as sent"
    );
}

/// moto answers HEAD with `partNumber` from the part alone; the proxy can give it the
/// object's metadata, as S3 does, keeping the part's length and the parts count.
#[tokio::test]
async fn proxy_gives_part_heads_the_object_metadata() {
    let mut sc = Scenario::builder("selftest-part-head");
    sc.put(
        "mp",
        ObjectSpec::multipart(&[6144, 5120])
            .content_type("application/x-tar")
            .cache_control("no-cache")
            .meta("origin", "mp"),
    );
    let seeded = sc.seed().await;
    let replica = &seeded.replica;
    let proxy = Proxy::start();
    let s3 = client_for(&proxy.endpoint(), REPLICA_REGION);
    let vid = replica.current("mp").unwrap().version_id.clone();
    let head = |part: i32| {
        s3.head_object()
            .bucket(&replica.name)
            .key("mp")
            .version_id(&vid)
            .part_number(part)
            .send()
    };
    let plain = head(2).await.expect("part head");
    assert_eq!(plain.content_type(), Some("binary/octet-stream"), "moto's own answer");
    assert!(plain.metadata().is_none_or(|m| m.is_empty()));

    proxy.emulate_part_head_metadata(&replica.name);
    let part = head(2).await.expect("part head");
    assert_eq!(part.content_type(), Some("application/x-tar"));
    assert_eq!(part.cache_control(), Some("no-cache"));
    assert_eq!(
        part.metadata().and_then(|m| m.get("origin")).map(String::as_str),
        Some("mp")
    );
    assert_eq!(part.content_length(), Some(5120), "the part's own length");
    assert_eq!(part.parts_count(), Some(2));
    assert_eq!(
        proxy.requests_of(S3Op::HeadObject).len(),
        2,
        "the proxy's own HEAD is not recorded"
    );
}

#[test]
fn run_cli_runs_the_built_binary() {
    let out = run_cli(&["--help"], &[("AWS_REGION", "eu-west-1")]);
    assert_eq!(out.code, 0, "{out:?}");
    let child = Cli::new(["--help"]).spawn();
    let out = wait_cli(child, Duration::from_secs(60));
    assert_eq!(out.code, 0, "{out:?}");
}
