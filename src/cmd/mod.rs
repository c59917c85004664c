//! One function per subcommand that plans or writes: connect, check the buckets, run the
//! stages, write the reports. The stages themselves live in their own modules.

pub mod plan;
pub mod restore;
pub mod verify;

use std::path::Path;
use std::sync::Arc;

use crate::cli::{ModeArg, TargetArgs, parse_as_of};
use crate::error::Error;
use crate::model::Location;
use crate::plan::{Mode, PlanConfig, PlanSummary};
use crate::report::human_bytes;
use crate::rules::ReplicationConfig;
use crate::s3::{BucketSettings, DestClient, ReplicationRead, Versioning};

/// The plan configuration the target flags describe.
///
/// `--exclude-from` is read here, so that every command that takes the plan's flags means
/// the same target; the replication rules come later, with the clients
/// ([`load_rules`]).
///
/// # Errors
/// A bad `--as-of`, or an `--exclude-from` report that cannot be read.
pub fn plan_config(
    t: &TargetArgs,
    multipart_threshold_bytes: Option<u64>,
    now: jiff::Timestamp,
) -> Result<PlanConfig, crate::cli::CliError> {
    let exclude = match &t.exclude_from {
        Some(path) => Some(Arc::new(crate::audit::read_exclusions(path).map_err(|message| {
            crate::cli::CliError::Invalid {
                flag: "--exclude-from",
                message,
            }
        })?)),
        None => None,
    };
    Ok(PlanConfig {
        mode: match t.mode {
            ModeArg::Latest => Mode::Latest,
            ModeArg::AllVersions => Mode::AllVersions,
        },
        as_of: t.as_of.as_deref().map(|a| parse_as_of(a, now)).transpose()?,
        no_deletes: t.no_deletes,
        overwrite_newer: t.overwrite_newer,
        multipart_threshold_bytes,
        rules: None,
        exclude,
    })
}

/// The primary's replication rules, and where they came from.
#[derive(Debug, Clone)]
pub struct RulesRead {
    /// The configuration; `None` when there is none or it could not be read.
    pub config: Option<ReplicationConfig>,
    /// `source` (`file PATH`, `GetBucketReplication`, `none`, `unreadable`) and, where it
    /// matters, `detail`: for summaries.
    pub note: serde_json::Value,
    /// Why the rules are not known, where they are not (for a warning).
    pub missing: Option<String>,
    /// Why GetBucketReplication failed, where it did (access denied, say): the rules may
    /// exist, so callers say what they cannot tell without them.
    pub unreadable: Option<String>,
}

/// Reads the rules from `--replication-config FILE`, else from the primary with
/// GetBucketReplication (where a client is at hand).
///
/// # Errors
/// The file cannot be read or is malformed (exit 2, naming the file and the field).
pub async fn load_rules(file: Option<&Path>, primary: Option<(&DestClient, &str)>) -> Result<RulesRead, Error> {
    if let Some(path) = file {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let config =
            crate::rules::parse_json(&text, &path.display().to_string()).map_err(|e| Error::Config(e.to_string()))?;
        return Ok(RulesRead {
            config: Some(config),
            note: serde_json::json!({"source": format!("file {}", path.display())}),
            missing: None,
            unreadable: None,
        });
    }
    let Some((client, bucket)) = primary else {
        return Ok(RulesRead {
            config: None,
            note: serde_json::json!({"source": "none", "detail": "no --replication-config and no primary to read them from"}),
            missing: Some("no --replication-config file was given".to_owned()),
            unreadable: None,
        });
    };
    Ok(match client.replication_rules(bucket).await {
        ReplicationRead::Rules(config) => RulesRead {
            config: Some(config),
            note: serde_json::json!({"source": "GetBucketReplication"}),
            missing: None,
            unreadable: None,
        },
        ReplicationRead::None => RulesRead {
            config: None,
            note: serde_json::json!({"source": "none", "detail": "the primary has no replication configuration"}),
            missing: Some("the primary has no replication configuration: nothing replicates new writes".to_owned()),
            unreadable: None,
        },
        ReplicationRead::Unreadable(why) => RulesRead {
            config: None,
            note: serde_json::json!({"source": "unreadable", "detail": why}),
            missing: Some(format!("the primary's replication rules could not be read ({why})")),
            unreadable: Some(why),
        },
    })
}

/// The flags that define the target state as one string, for the state directory's key
/// (so `restore`, `verify` and `drill` of one target find the same state) and the summary.
pub fn mode_key(cfg: &PlanConfig) -> String {
    format!(
        "mode={};as_of={};no_deletes={};overwrite_newer={}",
        cfg.mode,
        cfg.as_of.map(|t| t.to_string()).unwrap_or_default(),
        cfg.no_deletes,
        cfg.overwrite_newer,
    )
}

/// Refuses a source that was never versioned (plan, restore, verify and drill need it).
///
/// # Errors
/// Versioning off.
pub fn require_source_versioned(loc: &Location, s: &BucketSettings) -> Result<(), Error> {
    if s.versioning == Versioning::Off {
        return Err(Error::Versioning {
            bucket: loc.bucket.clone(),
            state: "off".into(),
            need: "the source must be versioned (Enabled or Suspended)",
        });
    }
    Ok(())
}

/// Refuses a destination without versioning Enabled (restore and drill write there).
///
/// # Errors
/// Versioning not Enabled.
pub fn require_dest_enabled(loc: &Location, s: &BucketSettings) -> Result<(), Error> {
    if s.versioning != Versioning::Enabled {
        return Err(Error::Versioning {
            bucket: loc.bucket.clone(),
            state: s.versioning.to_string(),
            need: "restores write new versions, so the destination needs versioning Enabled (aws s3api put-bucket-versioning --versioning-configuration Status=Enabled)",
        });
    }
    Ok(())
}

/// The plan's totals as a table for people (stderr).
pub fn plan_table(summary: &PlanSummary) -> String {
    use crate::plan::ActionKind;
    let mut out = String::from("  action          objects         bytes\n");
    for kind in ActionKind::ALL {
        let t = summary.totals(kind);
        if t.objects > 0 {
            out.push_str(&format!(
                "  {:<14} {:>8} {:>13}\n",
                kind.as_str(),
                t.objects,
                human_bytes(t.bytes)
            ));
        }
    }
    out.push_str(&format!("  requests a restore will make: {}\n", summary.requests));
    if summary.primary_only > 0 {
        out.push_str(&format!(
            "  keys only in the primary (left alone): {}\n",
            summary.primary_only
        ));
    }
    if summary.excluded > 0 {
        out.push_str(&format!(
            "  rows skipped by --exclude-from (keys the audit lists as delete-not-replicated): {}\n",
            summary.excluded
        ));
    }
    if summary.written_on_replica.objects > 0 {
        out.push_str(&format!(
            "  copies of versions written on the replica during the outage (they exist nowhere else): {} ({})\n",
            summary.written_on_replica.objects,
            human_bytes(summary.written_on_replica.bytes)
        ));
    }
    if summary.conflicts > 0 {
        out.push_str(&format!(
            "  conflicts (newer primary data kept; --overwrite-newer replaces it): {}\n",
            summary.conflicts
        ));
        for key in summary.conflict_keys.iter().take(10) {
            out.push_str(&format!("    {key:?}\n"));
        }
        if summary.conflicts > 10 {
            out.push_str(&format!("    ... and {} more (see the plan)\n", summary.conflicts - 10));
        }
    }
    out
}

/// What a plan's totals call for a warning about (each goes to the log at `warn`, so
/// `--quiet` keeps them).
pub fn plan_warnings(summary: &PlanSummary) -> Vec<String> {
    let mut out = Vec::new();
    if summary.unreplicated_deletes_kept > 0 {
        out.push(format!(
            "{} keys were deleted in the primary under a replication rule that does not replicate delete markers: the replica still holds them, and they stay deleted (conflict; the reason names the rule; --overwrite-newer would bring them back)",
            summary.unreplicated_deletes_kept
        ));
    }
    if summary.unreplicated_deletes_undone > 0 {
        out.push(format!(
            "{} keys deleted in the primary (their rule does not replicate delete markers) will be brought back from the replica: --overwrite-newer",
            summary.unreplicated_deletes_undone
        ));
    }
    out
}

/// The one-line form of a plan's totals.
pub fn plan_line(summary: &PlanSummary) -> String {
    use crate::plan::ActionKind;
    let parts: Vec<String> = ActionKind::ALL
        .into_iter()
        .map(|k| (k, summary.totals(k)))
        .filter(|(_, t)| t.objects > 0)
        .map(|(k, t)| format!("{} {}", t.objects, k.as_str()))
        .collect();
    let body = if parts.is_empty() {
        "nothing under the source".to_owned()
    } else {
        parts.join(", ")
    };
    format!("{body}; {} requests", summary.requests)
}

/// Puts a plan's totals into a summary's `counts` and `bytes`.
pub fn summary_counts(summary: &PlanSummary, out: &mut crate::report::Summary) {
    use crate::plan::ActionKind;
    for kind in ActionKind::ALL {
        let t = summary.totals(kind);
        out.counts.insert(kind.as_str().to_owned(), t.objects);
        out.bytes.insert(kind.as_str().to_owned(), t.bytes);
    }
    out.counts.insert("primary_only".to_owned(), summary.primary_only);
    out.extra.insert(
        "replication_findings".into(),
        serde_json::json!({
            "unreplicated_deletes_kept": summary.unreplicated_deletes_kept,
            "unreplicated_deletes_undone": summary.unreplicated_deletes_undone,
            "excluded": summary.excluded,
            "written_on_replica": {"objects": summary.written_on_replica.objects, "bytes": summary.written_on_replica.bytes},
        }),
    );
}
