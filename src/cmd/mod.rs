//! One function per subcommand that plans or writes: connect, check the buckets, run the
//! stages, write the reports. The stages themselves live in their own modules.

pub mod plan;
pub mod restore;
pub mod verify;

use crate::cli::{ModeArg, TargetArgs, parse_as_of};
use crate::error::Error;
use crate::model::Location;
use crate::plan::{Mode, PlanConfig, PlanSummary};
use crate::report::human_bytes;
use crate::s3::{BucketSettings, Versioning};

/// The plan configuration the target flags describe.
///
/// # Errors
/// A bad `--as-of`, or a flag not built yet.
pub fn plan_config(
    t: &TargetArgs,
    multipart_threshold_bytes: Option<u64>,
    now: jiff::Timestamp,
) -> Result<PlanConfig, crate::cli::CliError> {
    if t.exclude_from.is_some() {
        return Err(crate::cli::CliError::NotImplemented("--exclude-from"));
    }
    Ok(PlanConfig {
        mode: match t.mode {
            ModeArg::Latest => Mode::Latest,
            ModeArg::AllVersions => Mode::AllVersions,
        },
        as_of: t.as_of.as_deref().map(|a| parse_as_of(a, now)).transpose()?,
        no_deletes: t.no_deletes,
        overwrite_newer: t.overwrite_newer,
        multipart_threshold_bytes,
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
}
