//! Replication-aware failback (issue 14) end to end: rules from `--replication-config`
//! files (moto keeps only part of a configuration, S3-NOTES 47) name the deletes they never
//! replicated, `--exclude-from` takes an audit report's `delete-not-replicated` keys out of
//! a failback, a rule's destination storage class restores STANDARD, an owner-override
//! rule keeps the replica owner's ACLs out, and a restore warns before its writes
//! replicate back. Rules read with GetBucketReplication are covered in `peacetime.rs`
//! (audit) and at the end here (restore).

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_s3::types::{
    DeleteMarkerReplication, DeleteMarkerReplicationStatus, Destination, ObjectCannedAcl, ReplicationConfiguration,
    ReplicationRule, ReplicationRuleFilter, ReplicationRuleStatus, StorageClass,
};
use serde_json::{Value, json};

use crate::support::proxy::{Proxy, S3Op};
use crate::support::scenario::{ALL_USERS_URI, Damage, ObjectSpec, Scenario, Seeded};
use crate::support::workdir::{Dirs, Row, conn_args, read_csv, read_json};
use crate::support::{BucketOpts, Cli, CliOutput, PRIMARY_REGION, create_bucket, list_all_versions, unique_bucket};

/// Runs `command` (`plan`, `restore`, `audit`) with the connection flags through `proxy`,
/// `--report-dir` named after `run` (and `--state-dir` for restore), plus `args`.
fn tool(command: &str, proxy: &Proxy, dirs: &Dirs, run: &str, args: &[&str]) -> CliOutput {
    let mut all: Vec<String> = vec![command.to_owned()];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    all.extend(conn_args(&proxy.endpoint()));
    all.extend(["--report-dir".to_owned(), dirs.report(run).display().to_string()]);
    if command == "restore" {
        all.extend(["--state-dir".to_owned(), dirs.state().display().to_string()]);
    }
    Cli::new(all).run()
}

/// `plan` or `restore` from the scenario's replica to `primary` (a bucket name).
fn failback(
    command: &str,
    seeded: &Seeded,
    primary: &str,
    proxy: &Proxy,
    dirs: &Dirs,
    run: &str,
    extra: &[&str],
) -> CliOutput {
    let (source, dest) = (seeded.replica.url(), format!("s3://{primary}"));
    let mut args = vec!["--source", source.as_str(), "--dest", dest.as_str()];
    args.extend_from_slice(extra);
    tool(command, proxy, dirs, run, &args)
}

/// key → (action or status, reason or detail) of a plan or restore report.
fn by_key(rows: &[Row], word: &str, why: &str) -> BTreeMap<String, (String, String)> {
    rows.iter()
        .map(|r| (r["key"].clone(), (r[word].clone(), r[why].clone())))
        .collect()
}

/// A `--replication-config` file in the form `aws s3api get-bucket-replication` prints,
/// every rule towards `replica`.
fn rules_file(dirs: &Dirs, replica: &str, rules: Value) -> String {
    let mut rules = rules;
    for rule in rules.as_array_mut().unwrap() {
        rule["Status"] = json!("Enabled");
        rule["Destination"]["Bucket"] = json!(format!("arn:aws:s3:::{replica}"));
    }
    let path = dirs.path("replication.json");
    let doc = json!({"ReplicationConfiguration": {"Role": "arn:aws:iam::123456789012:role/crr", "Rules": rules}});
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    path.display().to_string()
}

/// The current entry of each key in `bucket`: Some(storage class) for an object, None for a
/// delete marker.
async fn current(seeded: &Seeded, bucket: &str) -> BTreeMap<String, Option<String>> {
    list_all_versions(&seeded.primary.client, bucket, "")
        .await
        .into_iter()
        .filter(|v| v.is_latest)
        .map(|v| {
            let class = (!v.is_delete_marker).then(|| v.storage_class.clone().unwrap_or_else(|| "STANDARD".into()));
            (v.key, class)
        })
        .collect()
}

/// Keys whose objects replicated, then were deleted in the primary: under a rule that does
/// not replicate delete markers (`docs/a`, `docs/b`), or under one that does (`logs/x`,
/// where the delete marker's absence from the replica is an ordinary newer delete).
fn deleted_in_primary_scenario(name: &str) -> crate::support::scenario::ScenarioBuilder {
    let mut sc = Scenario::builder(name);
    for key in ["docs/a", "docs/b", "docs/kept", "logs/x", "new/y"] {
        sc.put(key, ObjectSpec::random(100));
    }
    sc.damage("docs/a", Damage::Replicated)
        .damage("docs/a", Damage::DeletedAfter)
        .damage("docs/b", Damage::Replicated)
        .damage("docs/b", Damage::DeletedAfter)
        .damage("docs/kept", Damage::Replicated)
        .damage("logs/x", Damage::Replicated)
        .damage("logs/x", Damage::DeletedAfter);
    sc
}

fn delete_rules(dirs: &Dirs, replica: &str) -> String {
    rules_file(
        dirs,
        replica,
        json!([
            {"ID": "docs-no-dm", "Priority": 2, "Filter": {"Prefix": "docs/"},
             "DeleteMarkerReplication": {"Status": "Disabled"}, "Destination": {}},
            {"ID": "logs", "Priority": 1, "Filter": {"Prefix": "logs/"},
             "DeleteMarkerReplication": {"Status": "Enabled"}, "Destination": {}},
            {"ID": "new", "Priority": 0, "Filter": {"Prefix": "new/"},
             "DeleteMarkerReplication": {"Status": "Disabled"}, "Destination": {}},
        ]),
    )
}

/// A primary delete marker newer than the replica's object, under a rule that does not
/// replicate delete markers, is a conflict whose reason names the rule; the plan warns
/// once with the count; restore leaves those keys deleted; only `--overwrite-newer`
/// brings them back.
#[tokio::test]
async fn unreplicated_primary_deletes_are_not_resurrected() {
    let seeded = deleted_in_primary_scenario("repl-deletes").seed().await;
    let proxy = Proxy::start();
    let dirs = Dirs::new();
    let rules = delete_rules(&dirs, &seeded.replica.name);
    let primary = seeded.primary.name.clone();

    let out = failback(
        "plan",
        &seeded,
        &primary,
        &proxy,
        &dirs,
        "plan",
        &["--replication-config", &rules],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let plan = by_key(&read_csv(&dirs.report("plan").join("plan.csv")), "action", "reason");
    let named = "deleted in the primary; rule docs-no-dm does not replicate delete markers";
    let want: BTreeMap<String, (String, String)> = [
        ("docs/a", "conflict", named),
        ("docs/b", "conflict", named),
        ("docs/kept", "skip", "identical"),
        // The logs rule replicates delete markers: this one is an ordinary newer delete.
        (
            "logs/x",
            "conflict",
            "primary delete marker is newer than the replica version",
        ),
        ("new/y", "copy", "missing in primary"),
    ]
    .into_iter()
    .map(|(k, a, r)| (k.to_owned(), (a.to_owned(), r.to_owned())))
    .collect();
    assert_eq!(plan, want);
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("were deleted in the primary"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning: {}", out.stderr);
    assert!(warnings[0].contains("2 keys"), "{}", warnings[0]);
    let summary = read_json(&dirs.report("plan").join("summary.json"));
    assert_eq!(
        summary["replication_findings"]["unreplicated_deletes_kept"], 2,
        "{summary:#}"
    );
    assert_eq!(summary["rules"]["source"], format!("file {rules}"));

    // The restore keeps them deleted and restores the rest.
    let out = failback(
        "restore",
        &seeded,
        &primary,
        &proxy,
        &dirs,
        "restore",
        &["--replication-config", &rules, "--yes"],
    );
    assert_eq!(out.code, 0, "a kept conflict is as asked: {out:#?}");
    let statuses = by_key(&read_csv(&dirs.report("restore").join("restore.csv")), "status", "key");
    assert_eq!(statuses["docs/a"].0, "conflict");
    assert_eq!(statuses["new/y"].0, "done");
    let now = current(&seeded, &primary).await;
    assert_eq!(now["docs/a"], None, "still deleted");
    assert_eq!(now["docs/b"], None, "still deleted");
    assert!(now["new/y"].is_some());

    // Only --overwrite-newer plans them back, and says so.
    let out = failback(
        "plan",
        &seeded,
        &primary,
        &proxy,
        &dirs,
        "overwrite",
        &["--replication-config", &rules, "--overwrite-newer"],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let plan = by_key(
        &read_csv(&dirs.report("overwrite").join("plan.csv")),
        "action",
        "reason",
    );
    assert_eq!(plan["docs/a"].0, "copy");
    assert!(plan["docs/a"].1.starts_with(named), "{:?}", plan["docs/a"]);
    assert!(out.stderr.contains("2 keys deleted in the primary"), "{}", out.stderr);
}

/// When the primary is lost entirely, the last audit report is the only record of its
/// deletes: `plan --exclude-from audit.csv` skips exactly the keys it lists as
/// `delete-not-replicated`, and `restore` with it writes none of them.
#[tokio::test]
async fn exclude_from_skips_exactly_the_audits_unreplicated_deletes() {
    let seeded = deleted_in_primary_scenario("repl-exclude").seed().await;
    let proxy = Proxy::start();
    let dirs = Dirs::new();
    let rules = delete_rules(&dirs, &seeded.replica.name);

    // Peacetime: the audit records the deletes that never reached the replica.
    let out = tool(
        "audit",
        &proxy,
        &dirs,
        "audit",
        &[
            "--primary",
            &seeded.primary.url(),
            "--replica",
            &seeded.replica.url(),
            "--replication-config",
            &rules,
        ],
    );
    assert!(out.code <= 1, "{out:#?}");
    let audit_csv = dirs.report("audit").join("audit.csv");
    let listed: BTreeSet<String> = read_csv(&audit_csv)
        .into_iter()
        .filter(|r| r["status"] == "delete-not-replicated")
        .map(|r| r["key"].clone())
        .collect();
    assert_eq!(listed, BTreeSet::from(["docs/a".to_owned(), "docs/b".to_owned()]));

    // The outage: the primary is rebuilt empty.
    let rebuilt = unique_bucket("repl-rebuilt");
    create_bucket(&seeded.primary.client, &rebuilt, PRIMARY_REGION, &BucketOpts::default()).await;
    let audit_arg = audit_csv.display().to_string();
    let out = failback(
        "plan",
        &seeded,
        &rebuilt,
        &proxy,
        &dirs,
        "plan",
        &["--exclude-from", &audit_arg],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let plan = by_key(&read_csv(&dirs.report("plan").join("plan.csv")), "action", "reason");
    let excluded: BTreeSet<String> = plan
        .iter()
        .filter(|(_, (_, reason))| reason.starts_with("excluded:"))
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(excluded, listed, "exactly the listed keys");
    for key in &listed {
        assert_eq!(plan[key].0, "skip");
        assert!(plan[key].1.contains(&audit_arg), "{:?}", plan[key]);
    }
    for key in ["docs/kept", "logs/x", "new/y"] {
        assert_eq!(plan[key].0, "copy", "{key}: {:?}", plan[key]);
    }
    assert!(
        out.stderr
            .contains("rows skipped by --exclude-from (keys the audit lists as delete-not-replicated): 2"),
        "{}",
        out.stderr
    );

    let out = failback(
        "restore",
        &seeded,
        &rebuilt,
        &proxy,
        &dirs,
        "restore",
        &["--exclude-from", &audit_arg, "--yes"],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let now = current(&seeded, &rebuilt).await;
    assert_eq!(
        now.keys().map(String::as_str).collect::<Vec<_>>(),
        ["docs/kept", "logs/x", "new/y"],
        "the excluded keys were never written"
    );

    // A report that cannot be read is a one-line error before anything runs.
    let out = failback(
        "plan",
        &seeded,
        &rebuilt,
        &proxy,
        &dirs,
        "bad",
        &["--exclude-from", "no-such-audit.csv"],
    );
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(
        out.stderr.contains("--exclude-from: cannot read no-such-audit.csv"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
}

/// A rule that set a destination storage class chose the replica's class: the plan shows
/// the class mix it will write, and the restore writes STANDARD there (a class the rule
/// did not choose is kept; `--storage-class` overrides both).
#[tokio::test]
async fn rule_storage_class_restores_standard() {
    let mut sc = Scenario::builder("repl-class");
    sc.put(
        "cold/a",
        ObjectSpec::random(100).storage_class(StorageClass::StandardIa),
    )
    .put(
        "cold/b",
        ObjectSpec::random(200).storage_class(StorageClass::StandardIa),
    )
    .put(
        "warm/c",
        ObjectSpec::random(300).storage_class(StorageClass::StandardIa),
    );
    let seeded = sc.seed().await;
    let proxy = Proxy::start();
    let dirs = Dirs::new();
    let rules = rules_file(
        &dirs,
        &seeded.replica.name,
        json!([
            {"ID": "cold", "Priority": 2, "Filter": {"Prefix": "cold/"},
             "DeleteMarkerReplication": {"Status": "Disabled"}, "Destination": {"StorageClass": "STANDARD_IA"}},
            {"ID": "warm", "Priority": 1, "Filter": {"Prefix": "warm/"},
             "DeleteMarkerReplication": {"Status": "Disabled"}, "Destination": {}},
        ]),
    );
    let primary = seeded.primary.name.clone();

    let out = failback(
        "plan",
        &seeded,
        &primary,
        &proxy,
        &dirs,
        "plan",
        &["--replication-config", &rules],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stderr
            .contains("storage classes written: STANDARD 2 (300 B), STANDARD_IA 1 (300 B); 2 copies go to STANDARD"),
        "{}",
        out.stderr
    );
    let summary = read_json(&dirs.report("plan").join("summary.json"));
    assert_eq!(
        summary["replication"]["storage_classes"]["STANDARD"]["objects"], 2,
        "{summary:#}"
    );

    let out = failback(
        "restore",
        &seeded,
        &primary,
        &proxy,
        &dirs,
        "restore",
        &["--replication-config", &rules, "--yes"],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let now = current(&seeded, &primary).await;
    assert_eq!(now["cold/a"].as_deref(), Some("STANDARD"));
    assert_eq!(now["cold/b"].as_deref(), Some("STANDARD"));
    assert_eq!(
        now["warm/c"].as_deref(),
        Some("STANDARD_IA"),
        "a class the rule did not choose is kept"
    );
}

/// A rule that hands the replicas to the replica bucket's owner makes their ACLs that
/// owner's: by default the restore neither reads nor sends them (no GetObjectAcl), and
/// says so; `--acls copy` restores them.
#[tokio::test]
async fn owner_override_rule_skips_acls_unless_asked() {
    let mut sc = Scenario::builder("repl-owner");
    sc.put(
        "shared/a",
        ObjectSpec::random(64).canned_acl(ObjectCannedAcl::PublicRead),
    )
    .put("own/b", ObjectSpec::random(64).canned_acl(ObjectCannedAcl::PublicRead));
    // The primary accepts ACLs (moto's default; S3-NOTES 41).
    let seeded = sc.seed().await;
    let proxy = Proxy::start();
    let dirs = Dirs::new();
    let rules = rules_file(
        &dirs,
        &seeded.replica.name,
        json!([
            {"ID": "shared", "Priority": 2, "Filter": {"Prefix": "shared/"},
             "DeleteMarkerReplication": {"Status": "Disabled"},
             "Destination": {"Account": "210987654321", "AccessControlTranslation": {"Owner": "Destination"}}},
            {"ID": "own", "Priority": 1, "Filter": {"Prefix": "own/"},
             "DeleteMarkerReplication": {"Status": "Disabled"}, "Destination": {}},
        ]),
    );
    let public = |grants: &[aws_sdk_s3::types::Grant]| {
        grants
            .iter()
            .any(|g| g.grantee().and_then(|e| e.uri()) == Some(ALL_USERS_URI))
    };
    let acl_reads = |since: usize| -> BTreeSet<String> {
        proxy
            .requests_since(since)
            .into_iter()
            .filter(|r| r.op == S3Op::GetObjectAcl)
            .filter_map(|r| r.key)
            .collect()
    };

    let mark = proxy.mark();
    let primary = seeded.primary.name.clone();
    let out = failback(
        "restore",
        &seeded,
        &primary,
        &proxy,
        &dirs,
        "default",
        &["--replication-config", &rules, "--yes"],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(acl_reads(mark), BTreeSet::from(["own/b".to_owned()]));
    assert!(
        out.stderr.contains("ACLs not copied for 1 versions") && out.stderr.contains("rule shared"),
        "{}",
        out.stderr
    );
    let client = &seeded.primary.client;
    let acl = |bucket: String, key: &'static str| async move {
        client
            .get_object_acl()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .expect("get acl")
            .grants()
            .to_vec()
    };
    assert!(
        public(&acl(primary.clone(), "own/b").await),
        "grants of an ordinary rule's keys are copied"
    );
    assert!(
        !public(&acl(primary.clone(), "shared/a").await),
        "the replica owner's grants stay out"
    );

    let second = unique_bucket("repl-owner-copy");
    create_bucket(client, &second, PRIMARY_REGION, &BucketOpts::default()).await;
    let mark = proxy.mark();
    let out = failback(
        "restore",
        &seeded,
        &second,
        &proxy,
        &dirs,
        "copy",
        &["--replication-config", &rules, "--acls", "copy", "--yes"],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(
        acl_reads(mark),
        BTreeSet::from(["own/b".to_owned(), "shared/a".to_owned()])
    );
    assert!(
        public(&acl(second.clone(), "shared/a").await),
        "--acls copy restores them"
    );
}

/// A primary that replicates to the replica will replicate every restored object back:
/// the restore says so before it writes, with the count, from rules it reads with
/// GetBucketReplication (moto keeps the rule's id and destination: it covers every key).
#[tokio::test]
async fn restore_warns_that_its_writes_will_replicate_back() {
    let mut sc = Scenario::builder("repl-back");
    sc.objects("k/", 3, 1, 50);
    let seeded = sc.seed().await;
    let proxy = Proxy::start();
    let dirs = Dirs::new();
    seeded
        .primary
        .client
        .put_bucket_replication()
        .bucket(&seeded.primary.name)
        .replication_configuration(
            ReplicationConfiguration::builder()
                .role("arn:aws:iam::123456789012:role/crr")
                .rules(
                    ReplicationRule::builder()
                        .id("to-replica")
                        .priority(1)
                        .status(ReplicationRuleStatus::Enabled)
                        .filter(ReplicationRuleFilter::builder().prefix("").build())
                        .delete_marker_replication(
                            DeleteMarkerReplication::builder()
                                .status(DeleteMarkerReplicationStatus::Disabled)
                                .build(),
                        )
                        .destination(
                            Destination::builder()
                                .bucket(format!("arn:aws:s3:::{}", seeded.replica.name))
                                .build()
                                .unwrap(),
                        )
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("put bucket replication");
    let primary = seeded.primary.name.clone();
    let out = failback("restore", &seeded, &primary, &proxy, &dirs, "run", &["--yes"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let warning = out
        .stderr
        .lines()
        .find(|l| l.contains("will be replicated back"))
        .unwrap_or_else(|| panic!("no re-replication warning: {}", out.stderr));
    assert!(
        warning.contains("rule to-replica") && warning.contains("the 3 writes"),
        "{warning}"
    );
    let summary = read_json(&dirs.report("run").join("summary.json"));
    assert_eq!(summary["replication"]["rereplicated"]["objects"], 3, "{summary:#}");
}
