//! Planning benchmark (not a test): writes two synthetic inventories of N versions each,
//! plans them through the path `plan --source-inventory --dest-inventory` takes
//! (`target::plan_actions`: `InventoryReader` → `reconcile` → `plan_key` → `PlanWriter`
//! into a file), and prints versions per second and the process's peak RSS.
//!
//! ```console
//! cargo run --release --example bench_plan -- --versions 1000000
//! ```
//!
//! Each size (100,000 and `--versions`) runs in a fresh process (this program spawns
//! itself), so each peak RSS (`VmHWM`) is that size's own: a merge-join holds one key's
//! versions at a time, so the figure must not grow with the count. Flags: `--versions N`
//! (default 1,000,000), `--mode latest|all-versions` (default latest), `--dir DIR` for the
//! generated files (default: a temporary directory, removed afterwards).
//!
//! Per size it also prints one machine-readable line, for harnesses to parse:
//! `result versions=<N per side> total_versions=<both inventories> plan_s=<s>
//! versions_per_s=<v> peak_rss_mib=<m>`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use s3_failback::inventory::InventoryRow;
use s3_failback::model::Location;
use s3_failback::plan::{Mode, NoEvidence, PlanConfig, PlanWriter};
use s3_failback::s3::{DestClient, ListConfig, SourceClient};
use s3_failback::target::{SideInput, plan_actions};

/// The smaller size every run measures first, for comparison.
const SMALL: u64 = 100_000;

type BoxError = Box<dyn std::error::Error>;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let versions: u64 = flag("--versions").map_or(Ok(1_000_000), |v| v.replace('_', "").parse())?;
    let mode = flag("--mode").unwrap_or_else(|| "latest".to_owned());
    let mode: Mode = mode.parse()?;
    if let Some(n) = flag("--child") {
        let dir = PathBuf::from(flag("--dir").ok_or("--child needs --dir")?);
        return child(n.parse()?, mode, &dir);
    }

    let temp;
    let dir = match flag("--dir") {
        Some(d) => PathBuf::from(d),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_owned()
        }
    };
    let mut sizes = vec![SMALL.min(versions)];
    if versions > SMALL {
        sizes.push(versions);
    }
    println!(
        "bench_plan: {} mode, two synthetic inventories per size, planned by target::plan_actions into plan.csv",
        mode
    );
    println!(
        "{:>10} {:>10} {:>10} {:>9} {:>8} {:>10} {:>12} {:>14} {:>14}",
        "versions", "dest", "rows", "gen s", "plan s", "plan CPU s", "versions/s", "RSS gen MiB", "RSS peak MiB"
    );
    let mut peaks = Vec::new();
    for n in sizes {
        let sub = dir.join(format!("n{n}"));
        std::fs::create_dir_all(&sub)?;
        let out = Command::new(std::env::current_exe()?)
            .args(["--child", &n.to_string(), "--mode", mode.as_str(), "--dir"])
            .arg(&sub)
            .output()?;
        if !out.status.success() {
            return Err(format!("size {n} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        let line = String::from_utf8(out.stdout)?;
        let get = |k: &str| -> f64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN)
        };
        let (plan_s, total) = (get("plan_s"), get("source") + get("dest"));
        println!(
            "{:>10} {:>10} {:>10} {:>9.1} {:>8.2} {:>10.2} {:>12.0} {:>14.1} {:>14.1}",
            get("source"),
            get("dest"),
            get("rows"),
            get("gen_s"),
            plan_s,
            get("plan_cpu_s"),
            total / plan_s,
            get("rss_gen_kib") / 1024.0,
            get("rss_peak_kib") / 1024.0
        );
        // One machine-readable line per size, for the benchmark harness to parse.
        println!(
            "result versions={n} total_versions={total} plan_s={plan_s:.3} versions_per_s={:.0} peak_rss_mib={:.1}",
            total / plan_s,
            get("rss_peak_kib") / 1024.0
        );
        peaks.push((n, get("rss_peak_kib") / 1024.0));
        std::fs::remove_dir_all(&sub)?;
    }
    println!(
        "versions/s counts the versions of both inventories read, joined and planned, per second of wall time; \
         plan CPU s is the process's CPU time over the same span (every thread: each inventory is read on its own), \
         which other load on the machine does not inflate."
    );
    if let [(n0, small), .., (n1, large)] = peaks[..] {
        println!(
            "peak RSS at {n1} versions is {:.2}x the peak at {n0} ({large:.1} MiB vs {small:.1} MiB)",
            large / small
        );
    }
    Ok(())
}

/// One size in its own process: generate, plan, print one line of `key=value` figures.
fn child(versions: u64, mode: Mode, dir: &Path) -> Result<(), BoxError> {
    let (src, dst) = (dir.join("replica.csv"), dir.join("primary.csv"));
    let started = Instant::now();
    let (source_count, dest_count) = generate(versions, &src, &dst)?;
    let gen_s = started.elapsed().as_secs_f64();
    let rss_gen = peak_rss_kib()?;

    let source: Location = "s3://bench-replica".parse()?;
    let dest: Location = "s3://bench-primary".parse()?;
    let cfg = PlanConfig {
        mode,
        ..PlanConfig::default()
    };
    let plan_path = dir.join("plan.csv");
    let file = BufWriter::with_capacity(1 << 16, File::create(&plan_path)?);
    let mut writer = PlanWriter::new(file, plan_path.display().to_string(), &source, &dest)?;
    let mut rows = 0u64;
    let cpu_before = cpu_seconds()?;
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let summary = runtime.block_on(plan_actions(
        SideInput::<SourceClient>::Inventory(src.clone()),
        SideInput::<DestClient>::Inventory(dst.clone()),
        &source,
        &dest,
        ListConfig::default(),
        &cfg,
        false,
        &NoEvidence,
        |action| {
            rows += 1;
            writer
                .write(&action)
                .map_err(|e| s3_failback::Error::Plan(e.to_string()))
        },
    ))?;
    writer.finish()?.flush()?;
    let plan_s = started.elapsed().as_secs_f64();
    let plan_cpu_s = cpu_seconds()? - cpu_before;
    let rss_peak = peak_rss_kib()?;
    println!(
        "source={source_count} dest={dest_count} rows={rows} primary_only={} gen_s={gen_s:.3} \
         plan_s={plan_s:.3} plan_cpu_s={plan_cpu_s:.2} rss_gen_kib={rss_gen} rss_peak_kib={rss_peak}",
        summary.primary_only
    );
    Ok(())
}

/// CPU seconds (user and system, all threads) the process has used so far, from
/// `/proc/self/stat` in clock ticks of 1/100 s (Linux's `USER_HZ`).
fn cpu_seconds() -> Result<f64, BoxError> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let rest = stat.rsplit_once(')').ok_or("no ')' in /proc/self/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 =
        fields.get(11).ok_or("no utime")?.parse::<u64>()? + fields.get(12).ok_or("no stime")?.parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

/// The process's peak resident set size (`VmHWM`), in KiB.
fn peak_rss_kib() -> Result<u64, BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .ok_or("no VmHWM in /proc/self/status")?;
    Ok(line.split_whitespace().nth(1).ok_or("VmHWM without a value")?.parse()?)
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn hex(&mut self) -> String {
        format!("{:016x}{:016x}", self.next(), self.next())
    }
}

/// One entry of a synthetic history.
#[derive(Clone)]
struct Entry {
    version_id: String,
    delete_marker: bool,
    time: Timestamp,
    size: u64,
    etag: String,
    class: &'static str,
}

impl Entry {
    fn row(&self, key: &str, latest: bool) -> InventoryRow {
        let object = !self.delete_marker;
        InventoryRow {
            key: key.to_owned(),
            version_id: self.version_id.clone(),
            is_latest: latest,
            is_delete_marker: self.delete_marker,
            last_modified: self.time.to_string(),
            size: object.then_some(self.size),
            etag: object.then(|| self.etag.clone()),
            storage_class: object.then(|| self.class.to_owned()),
            checksum_algorithm: None,
        }
    }
}

/// Writes a key's history (oldest first in `entries`) in S3's order: newest first.
fn write_key(out: &mut csv::Writer<BufWriter<File>>, key: &str, entries: &[Entry]) -> Result<u64, BoxError> {
    for (i, e) in entries.iter().rev().enumerate() {
        out.serialize(e.row(key, i == 0))?;
    }
    Ok(entries.len() as u64)
}

/// Key `i`, in UTF-8 order as `i` grows: 50,000 keys per tenant, four kinds each.
fn key_of(i: u64) -> String {
    const KINDS: [&str; 4] = ["docs", "images", "logs", "parquet"];
    let kind = KINDS[((i % 50_000) / 12_500) as usize];
    format!("tenant-{:04}/{kind}/{i:010}.dat", i / 50_000)
}

/// Writes both inventories, sorted as S3 lists: about `versions` versions each. Per key 1-3
/// versions, about 8% of them deleted in the replica; the primary holds 55% of the keys
/// replicated (same ids), 20% stale (older versions only), 10% lost, 5% newer (conflict),
/// 10% restored copies (new ids, same content); keys only in the primary fill its count up.
fn generate(versions: u64, src: &Path, dst: &Path) -> Result<(u64, u64), BoxError> {
    let writer = |p: &Path| -> Result<_, BoxError> {
        Ok(csv::Writer::from_writer(BufWriter::with_capacity(
            1 << 16,
            File::create(p)?,
        )))
    };
    let (mut s, mut d) = (writer(src)?, writer(dst)?);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let base: Timestamp = "2026-01-01T00:00:00Z".parse()?;
    let (mut source_count, mut dest_count) = (0u64, 0u64);
    let mut i = 0u64;
    while source_count < versions {
        let key = key_of(i);
        let t0 = base + SignedDuration::from_secs((i * 10) as i64);
        let n = (1 + rng.below(3)).min(versions - source_count);
        let mut history: Vec<Entry> = (0..n)
            .map(|j| {
                let multipart = rng.below(100) < 5;
                Entry {
                    version_id: rng.hex(),
                    delete_marker: false,
                    time: t0 + SignedDuration::from_secs(j as i64),
                    size: 1 + rng.below(10 << 20),
                    etag: if multipart {
                        format!("{}-{}", rng.hex(), 2 + rng.below(20))
                    } else {
                        rng.hex()
                    },
                    class: if rng.below(1000) < 5 { "GLACIER" } else { "STANDARD" },
                }
            })
            .collect();
        if n >= 2 && rng.below(100) < 8 {
            let last = history.last_mut().expect("n >= 2");
            last.delete_marker = true;
        }
        source_count += write_key(&mut s, &key, &history)?;

        let roll = rng.below(100);
        let dest: Vec<Entry> = if roll < 55 {
            history.clone()
        } else if roll < 75 {
            history[..history.len() - 1].to_vec()
        } else if roll < 85 {
            Vec::new()
        } else if roll < 90 {
            let mut h = history.clone();
            h.push(Entry {
                version_id: rng.hex(),
                time: t0 + SignedDuration::from_secs(9),
                etag: rng.hex(),
                ..history[0].clone()
            });
            h
        } else {
            history
                .iter()
                .map(|e| Entry {
                    version_id: rng.hex(),
                    time: e.time + SignedDuration::from_secs(86_400 * 400),
                    ..e.clone()
                })
                .collect()
        };
        dest_count += write_key(&mut d, &key, &dest)?;

        // Keys only in the primary, right after this key in UTF-8 order, keep the
        // primary's count level with the replica's.
        let mut extra = 0;
        while dest_count < source_count {
            let own = (source_count - dest_count).min(3);
            let entries: Vec<Entry> = (0..own)
                .map(|j| Entry {
                    version_id: rng.hex(),
                    delete_marker: false,
                    time: t0 + SignedDuration::from_secs(j as i64),
                    size: 1 + rng.below(1 << 20),
                    etag: rng.hex(),
                    class: "STANDARD",
                })
                .collect();
            dest_count += write_key(&mut d, &format!("{key}.orphan{extra}"), &entries)?;
            extra += 1;
        }
        i += 1;
    }
    s.flush()?;
    d.flush()?;
    Ok((source_count, dest_count))
}
