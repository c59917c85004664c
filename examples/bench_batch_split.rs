//! Batch Operations split benchmark (not a test): splits N synthetic plan rows between the
//! Batch engine and the local one and writes the first job's manifest, printing the time
//! each takes. Every 50th row is a delete marker (local), every 97th carries ACL grants
//! (local); keys hold `+` and non-ASCII characters, so the manifest encodes every key.
//!
//! ```console
//! cargo run --release --example bench_batch_split -- 1000000
//! ```

use std::time::Instant;

use s3_failback::batch::{SplitRules, manifest_csv, split};
use s3_failback::model::Location;
use s3_failback::plan::{ActionKind, PlannedAction};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(Ok(1_000_000), |v| v.replace('_', "").parse())?;
    let actions: Vec<(u64, PlannedAction)> = (0..n)
        .map(|i| {
            let key = format!("data/{i:09} key+ü");
            let kind = if i % 50 == 0 {
                ActionKind::DeleteMarker
            } else {
                ActionKind::Copy
            };
            let action = PlannedAction {
                source_version_id: format!("v-{i}"),
                dest_key: key.clone(),
                key,
                action: kind,
                dest_version_id: String::new(),
                size_bytes: Some(1000 + i % 7),
                etag: Some("0123456789abcdef".into()),
                last_modified: None,
                reason: String::new(),
                storage_class: Some("STANDARD".into()),
                checksum_algorithm: None,
                is_delete_marker: kind == ActionKind::DeleteMarker,
            };
            (i, action)
        })
        .collect();
    let rules = SplitRules {
        source: Location::new("replica", ""),
        dest: Location::new("primary", ""),
        object_lock: false,
    };
    let started = Instant::now();
    let s = split(&actions, &rules, |i| i % 97 == 0, |_| "STANDARD".into());
    let split_s = started.elapsed().as_secs_f64();
    let tasks = s.jobs.first().map(|j| j.tasks.clone()).unwrap_or_default();
    let started = Instant::now();
    let manifest = manifest_csv(
        "replica",
        tasks.iter().map(|i| {
            let a = &actions[*i as usize].1;
            (a.key.as_str(), a.source_version_id.as_str())
        }),
    );
    let manifest_s = started.elapsed().as_secs_f64();
    println!(
        "{n} rows: split {split_s:.2} s ({:.0} rows/s); manifest of {} tasks {manifest_s:.2} s ({:.0} tasks/s), {} bytes",
        n as f64 / split_s,
        tasks.len(),
        tasks.len() as f64 / manifest_s,
        manifest.len()
    );
    Ok(())
}
