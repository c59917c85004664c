//! Command-line types (clap derive) and their conversion into validated `*Config` values.
//!
//! Nothing here touches the network, files or tokio; core code never sees clap types.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use jiff::Timestamp;

use crate::model::{Location, Side};
use crate::s3::{ListConfig, S3Config};

/// A flag value that does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A bad `s3://` location.
    #[error("{flag}: {source}")]
    Location {
        /// The flag.
        flag: &'static str,
        /// The cause.
        source: crate::model::LocationError,
    },
    /// Any other bad value.
    #[error("{flag}: {message}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The command is not built yet.
    #[error("`{0}` is not implemented yet")]
    NotImplemented(&'static str),
}

/// Bring an S3 bucket back from its Cross-Region Replication replica after an outage.
#[derive(Debug, Parser)]
#[command(name = "s3-failback", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
    /// Flags every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
}

/// Flags every command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// No progress; warnings and errors only.
    #[arg(long, short = 'q', global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More log detail (repeat for more).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Longest wait for any byte of a response (90s, 15m, 1h30m).
    #[arg(long, global = true, default_value = "120s", value_parser = parse_duration, value_name = "DURATION")]
    pub read_timeout: Duration,
    /// Longest wait for a connection.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub connect_timeout: Duration,
}

/// The subcommands of DESIGN.md.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every version and delete marker of a bucket or prefix into inventory.csv.
    Scan(ScanArgs),
    /// Decide, for every key, what brings the primary back to the replica's state.
    Plan(PlanArgs),
    /// Execute a plan: copy versions back into the primary.
    Restore(RestoreArgs),
    /// Check that the primary holds the target state.
    Verify(VerifyArgs),
    /// Peacetime: check that replication is complete.
    Audit(AuditArgs),
    /// Rehearse a failback into a scratch location.
    Drill(DrillArgs),
}

/// Connection flags of a one-sided command.
#[derive(Debug, Clone, Args)]
pub struct OneSideArgs {
    /// AWS region of the bucket.
    #[arg(long)]
    pub region: Option<String>,
    /// Named AWS profile.
    #[arg(long)]
    pub profile: Option<String>,
    /// Custom S3 endpoint URL (AWS_ENDPOINT_URL is honoured too).
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Path-style addressing (endpoint/bucket/key).
    #[arg(long)]
    pub path_style: bool,
    /// Entries per list request.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub page_size: u32,
}

/// Connection flags of a two-sided command.
#[derive(Debug, Clone, Args)]
pub struct TwoSideArgs {
    /// Region of the source (replica) bucket.
    #[arg(long)]
    pub source_region: Option<String>,
    /// Profile for the source side.
    #[arg(long)]
    pub source_profile: Option<String>,
    /// Endpoint URL for the source side.
    #[arg(long, value_name = "URL")]
    pub source_endpoint_url: Option<String>,
    /// Region of the destination (primary) bucket.
    #[arg(long)]
    pub dest_region: Option<String>,
    /// Profile for the destination side.
    #[arg(long)]
    pub dest_profile: Option<String>,
    /// Endpoint URL for the destination side.
    #[arg(long, value_name = "URL")]
    pub dest_endpoint_url: Option<String>,
    /// Endpoint URL for both sides.
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Path-style addressing (endpoint/bucket/key).
    #[arg(long)]
    pub path_style: bool,
    /// Entries per list request.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub page_size: u32,
}

/// `scan`.
#[derive(Debug, Clone, Args)]
pub struct ScanArgs {
    /// The bucket or prefix: s3://BUCKET[/PREFIX].
    #[arg(value_name = "S3_URL")]
    pub location: String,
    /// Write the inventory CSV to FILE instead of the report directory (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub out: Option<String>,
    /// Report directory.
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,
    /// Connection flags.
    #[command(flatten)]
    pub conn: OneSideArgs,
}

/// How the target state is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ModeArg {
    /// The primary's current version of every key equals the replica's.
    #[default]
    Latest,
    /// Every replica version the primary lacks is recreated, oldest first.
    AllVersions,
}

/// The flags that define a target state ("plan's flags").
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// latest (current versions) or all-versions (whole history).
    #[arg(long, value_enum, default_value_t = ModeArg::Latest)]
    pub mode: ModeArg,
    /// The replica's state at this moment (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    pub as_of: Option<String>,
    /// Never add delete markers to the primary.
    #[arg(long)]
    pub no_deletes: bool,
    /// Overwrite primary versions that are newer than the replica's.
    #[arg(long)]
    pub overwrite_newer: bool,
    /// Also compare content headers, user metadata and tags (HEAD and GetObjectTagging).
    #[arg(long)]
    pub metadata: bool,
    /// Skip the keys an audit report lists as delete-not-replicated.
    #[arg(long, value_name = "FILE")]
    pub exclude_from: Option<PathBuf>,
    /// Replication rules from a file (the JSON of `aws s3api get-bucket-replication`).
    #[arg(long, value_name = "FILE")]
    pub replication_config: Option<PathBuf>,
    /// Report directory.
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,
}

/// `plan`.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// The replica: s3://BUCKET[/PREFIX].
    #[arg(long, value_name = "S3_URL")]
    pub source: String,
    /// The primary: s3://BUCKET[/PREFIX].
    #[arg(long, value_name = "S3_URL")]
    pub dest: String,
    /// Read the source side from an inventory CSV instead of listing it.
    #[arg(long, value_name = "FILE")]
    pub source_inventory: Option<PathBuf>,
    /// Read the destination side from an inventory CSV instead of listing it.
    #[arg(long, value_name = "FILE")]
    pub dest_inventory: Option<PathBuf>,
    /// Write the plan CSV to FILE instead of the report directory (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub out: Option<String>,
    /// Target state.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Connection flags.
    #[command(flatten)]
    pub conn: TwoSideArgs,
}

/// How ACL grants are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AclsArg {
    /// Copy grants where the destination accepts ACLs.
    Copy,
    /// Never copy grants.
    Skip,
}

/// Server-side encryption asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SseArg {
    /// SSE-S3.
    #[value(name = "AES256")]
    Aes256,
    /// SSE-KMS.
    #[value(name = "aws:kms")]
    AwsKms,
}

/// Which engine executes copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum EngineArg {
    /// This process.
    #[default]
    Local,
    /// S3 Batch Operations jobs.
    BatchOperations,
}

/// Archive retrieval tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TierArg {
    /// Standard.
    #[value(name = "Standard")]
    Standard,
    /// Bulk.
    #[value(name = "Bulk")]
    Bulk,
    /// Expedited.
    #[value(name = "Expedited")]
    Expedited,
}

/// `restore`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The replica: s3://BUCKET[/PREFIX].
    #[arg(long, value_name = "S3_URL")]
    pub source: String,
    /// The primary: s3://BUCKET[/PREFIX].
    #[arg(long, value_name = "S3_URL")]
    pub dest: String,
    /// Execute this plan file instead of planning.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Requests in flight at most (default 256; lowered by itself while S3 answers SlowDown).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Split single-part sources above SIZE into parts (new ETag; default off).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub multipart_threshold: Option<u64>,
    /// Part size for split copies (default: the larger of 64 MiB and size / 10,000).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub part_size: Option<u64>,
    /// Copy ACL grants (where the destination accepts ACLs) or skip them.
    #[arg(long, value_enum)]
    pub acls: Option<AclsArg>,
    /// Storage class for every copy.
    #[arg(long, value_name = "CLASS")]
    pub storage_class: Option<String>,
    /// Server-side encryption for every copy.
    #[arg(long, value_enum)]
    pub sse: Option<SseArg>,
    /// KMS key for `--sse aws:kms` (a key of the primary's region).
    #[arg(long, value_name = "KEY")]
    pub sse_kms_key_id: Option<String>,
    /// Request restores of archived versions, kept for DAYS.
    #[arg(long, value_name = "DAYS")]
    pub restore_archived: Option<u32>,
    /// Retrieval tier for --restore-archived.
    #[arg(long, value_enum)]
    pub restore_tier: Option<TierArg>,
    /// State directory.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Discard an unfinished run's state and plan again.
    #[arg(long)]
    pub fresh: bool,
    /// Which engine copies.
    #[arg(long, value_enum, default_value_t = EngineArg::Local)]
    pub engine: EngineArg,
    /// IAM role Batch Operations jobs assume.
    #[arg(long, value_name = "ARN")]
    pub batch_role_arn: Option<String>,
    /// Where manifests and completion reports live.
    #[arg(long, value_name = "S3_URL")]
    pub batch_work: Option<String>,
    /// AWS account id for Batch Operations.
    #[arg(long, value_name = "ID")]
    pub account_id: Option<String>,
    /// S3 Control endpoint URL.
    #[arg(long, value_name = "URL")]
    pub batch_endpoint_url: Option<String>,
    /// Write the plan and say what would be done; write nothing to S3.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask before writing.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Target state.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Connection flags.
    #[command(flatten)]
    pub conn: TwoSideArgs,
}

/// `verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The replica: s3://BUCKET[/PREFIX].
    #[arg(long, value_name = "S3_URL")]
    pub source: String,
    /// The primary: s3://BUCKET[/PREFIX].
    #[arg(long, value_name = "S3_URL")]
    pub dest: String,
    /// Also compare SHA-256 of the bytes.
    #[arg(long)]
    pub deep: bool,
    /// Target state.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Connection flags.
    #[command(flatten)]
    pub conn: TwoSideArgs,
}

/// `audit`.
#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// The primary: s3://BUCKET[/PREFIX] (reached with the --dest-* flags).
    #[arg(long, value_name = "S3_URL")]
    pub primary: String,
    /// The replica: s3://BUCKET[/PREFIX] (reached with the --source-* flags).
    #[arg(long, value_name = "S3_URL")]
    pub replica: String,
    /// A gap younger than this is `lagging`, older is `missing`.
    #[arg(long, default_value = "15m", value_parser = parse_duration, value_name = "DURATION")]
    pub max_lag: Duration,
    /// Replication rules from a file.
    #[arg(long, value_name = "FILE")]
    pub replication_config: Option<PathBuf>,
    /// Also list every version that is fine (status ok).
    #[arg(long)]
    pub all: bool,
    /// Report directory.
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,
    /// Connection flags.
    #[command(flatten)]
    pub conn: TwoSideArgs,
}

/// `drill`.
#[derive(Debug, Clone, Args)]
pub struct DrillArgs {
    /// The replica: s3://BUCKET[/PREFIX].
    #[arg(long, value_name = "S3_URL")]
    pub source: String,
    /// The scratch location: s3://BUCKET/PREFIX.
    #[arg(long, value_name = "S3_URL")]
    pub scratch: String,
    /// Restore a random sample of N keys.
    #[arg(long, value_name = "N")]
    pub sample: Option<u64>,
    /// Delete what the drill wrote, afterwards.
    #[arg(long)]
    pub cleanup: bool,
    /// State directory.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Target state.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Connection flags.
    #[command(flatten)]
    pub conn: TwoSideArgs,
}

/// Parses SIZE: a number with an optional unit, case-insensitive: B, KB/MB/GB/TB (powers
/// of 1,000), KiB/MiB/GiB/TiB (powers of 1,024).
///
/// # Errors
/// Not a number, an unknown unit, or a value over u64.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let factor: u64 = match unit.as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "{text:?} has an unknown unit (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ));
        }
    };
    if num.is_empty() {
        return Err(format!(
            "{text:?} is not a size (a number with an optional unit, like 64MiB)"
        ));
    }
    let value = if let Some((int, frac)) = num.split_once('.') {
        let whole: f64 = format!("{}.{}", if int.is_empty() { "0" } else { int }, frac)
            .parse()
            .map_err(|_| format!("{text:?} is not a size"))?;
        let bytes = whole * factor as f64;
        if !bytes.is_finite() || bytes > u64::MAX as f64 {
            return Err(format!("{text:?} is too large"));
        }
        bytes.round() as u64
    } else {
        let n: u64 = num.parse().map_err(|_| format!("{text:?} is not a size"))?;
        n.checked_mul(factor).ok_or_else(|| format!("{text:?} is too large"))?
    };
    Ok(value)
}

/// Parses DURATION: `90s`, `15m`, `1h30m` and the like.
///
/// # Errors
/// Not a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration like 90s, 15m or 1h30m: {e}"))
}

/// Parses an `--as-of` time: RFC 3339, not in the future.
///
/// # Errors
/// Unparsable, or later than `now`.
pub fn parse_as_of(text: &str, now: Timestamp) -> Result<Timestamp, CliError> {
    let t: Timestamp = text.trim().parse().map_err(|e| CliError::Invalid {
        flag: "--as-of",
        message: format!("{text:?} is not an RFC 3339 time like 2026-11-20T14:00:00Z: {e}"),
    })?;
    if t > now {
        return Err(CliError::Invalid {
            flag: "--as-of",
            message: format!("{text} is in the future"),
        });
    }
    Ok(t)
}

/// Parses a location flag.
///
/// # Errors
/// Not an `s3://` URL with a valid bucket.
pub fn parse_location(flag: &'static str, text: &str) -> Result<Location, CliError> {
    text.parse().map_err(|source| CliError::Location { flag, source })
}

fn page_size(n: u32) -> Result<i32, CliError> {
    if (1..=1000).contains(&n) {
        Ok(n as i32)
    } else {
        Err(CliError::Invalid {
            flag: "--page-size",
            message: format!("{n} is outside 1..=1000"),
        })
    }
}

impl OneSideArgs {
    /// The S3 configuration for the one side.
    pub fn s3_config(&self, side: Side, global: &GlobalArgs) -> S3Config {
        S3Config {
            region: self.region.clone(),
            profile: self.profile.clone(),
            endpoint_url: self.endpoint_url.clone(),
            path_style: self.path_style,
            connect_timeout: global.connect_timeout,
            read_timeout: global.read_timeout,
            ..S3Config::new(side)
        }
    }

    /// The listing configuration.
    ///
    /// # Errors
    /// A page size outside 1..=1000.
    pub fn list_config(&self) -> Result<ListConfig, CliError> {
        Ok(ListConfig {
            page_size: page_size(self.page_size)?,
            ..ListConfig::default()
        })
    }
}

impl TwoSideArgs {
    /// The S3 configuration for `side`.
    pub fn s3_config(&self, side: Side, global: &GlobalArgs) -> S3Config {
        let (region, profile, endpoint) = match side {
            Side::Source => (&self.source_region, &self.source_profile, &self.source_endpoint_url),
            Side::Dest => (&self.dest_region, &self.dest_profile, &self.dest_endpoint_url),
        };
        S3Config {
            region: region.clone(),
            profile: profile.clone(),
            endpoint_url: endpoint.clone().or_else(|| self.endpoint_url.clone()),
            path_style: self.path_style,
            connect_timeout: global.connect_timeout,
            read_timeout: global.read_timeout,
            ..S3Config::new(side)
        }
    }

    /// The listing configuration.
    ///
    /// # Errors
    /// A page size outside 1..=1000.
    pub fn list_config(&self) -> Result<ListConfig, CliError> {
        Ok(ListConfig {
            page_size: page_size(self.page_size)?,
            ..ListConfig::default()
        })
    }
}

/// Where `--out` sends a CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutTarget {
    /// Into the report directory under the report's own name.
    ReportDir,
    /// To this file.
    File(PathBuf),
    /// To stdout, alone.
    Stdout,
}

/// Parses `--out`.
pub fn out_target(out: Option<&str>) -> OutTarget {
    match out {
        None => OutTarget::ReportDir,
        Some("-") => OutTarget::Stdout,
        Some(p) => OutTarget::File(PathBuf::from(p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases = [
            ("0", Some(0)),
            ("5", Some(5)),
            ("5B", Some(5)),
            ("64MiB", Some(64 << 20)),
            ("64mib", Some(64 << 20)),
            ("5GB", Some(5_000_000_000)),
            ("1.5KiB", Some(1536)),
            ("5 GiB", Some(5 << 30)),
            ("5XB", None),
            ("", None),
            ("MiB", None),
            ("-1", None),
            ("99999999999TiB", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text).ok(), want, "{text}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn as_of() {
        let now: Timestamp = "2026-11-26T00:00:00Z".parse().unwrap();
        assert!(parse_as_of("2026-11-20T14:00:00Z", now).is_ok());
        assert!(parse_as_of("2026-11-20T14:00:00+02:00", now).is_ok());
        assert!(
            parse_as_of("2027-01-01T00:00:00Z", now)
                .unwrap_err()
                .to_string()
                .contains("future")
        );
        assert!(parse_as_of("yesterday", now).is_err());
    }

    /// Splits a command line the way a POSIX shell does for the simple cases runbooks use:
    /// words, single and double quotes, backslash-newline continuations.
    fn shell_words(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut cur = String::new();
        let mut quote: Option<char> = None;
        let mut in_word = false;
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), c) => cur.push(c),
                (None, '\'' | '"') => {
                    quote = Some(c);
                    in_word = true;
                }
                (None, c) if c.is_whitespace() => {
                    if in_word {
                        words.push(std::mem::take(&mut cur));
                        in_word = false;
                    }
                }
                (None, c) => {
                    cur.push(c);
                    in_word = true;
                }
            }
        }
        if in_word {
            words.push(cur);
        }
        words
    }

    #[test]
    fn runbook_and_readme_commands_parse() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<_> = std::fs::read_dir(root.join("runbooks"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .collect();
        files.push(root.join("README.md"));
        let mut checked = 0;
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let joined = text.replace("\\\n", " ");
            let mut in_block = false;
            for line in joined.lines() {
                let t = line.trim();
                if t.starts_with("```") {
                    in_block = t == "```console";
                    continue;
                }
                if in_block && t.starts_with("s3-failback ") {
                    let words = shell_words(t.split(';').next().unwrap_or(t));
                    if let Err(e) = Cli::try_parse_from(&words) {
                        panic!("{}: {t}\n{e}", file.display());
                    }
                    checked += 1;
                }
            }
        }
        assert!(
            checked >= 12,
            "only {checked} command lines found in the runbooks and README"
        );
    }

    #[test]
    fn contract_command_lines_parse() {
        let lines = [
            "s3-failback scan s3://bucket/prefix --out - --page-size 10",
            "s3-failback plan --source s3://rep/data --dest s3://pri/data --mode all-versions --as-of 2026-01-01T00:00:00Z --no-deletes --overwrite-newer --metadata --out plan.csv",
            "s3-failback restore --source s3://rep --dest s3://pri --plan plan.csv --concurrency 64 --multipart-threshold 1GiB --part-size 64MiB --acls skip --storage-class STANDARD --sse aws:kms --sse-kms-key-id k --restore-archived 2 --restore-tier Bulk --fresh --engine batch-operations --dry-run --yes",
            "s3-failback verify --source s3://rep --dest s3://pri --deep --report-dir r",
            "s3-failback audit --primary s3://pri --replica s3://rep --max-lag 1h --all",
            "s3-failback drill --source s3://rep --scratch s3://scratch/drill --sample 100 --cleanup",
            "s3-failback -q scan s3://b --read-timeout 30s --connect-timeout 2s",
        ];
        for line in lines {
            let argv = line.split_whitespace();
            if let Err(e) = Cli::try_parse_from(argv) {
                panic!("{line}: {e}");
            }
        }
    }
}
