//! s3-failback: bring an S3 bucket back from its Cross-Region Replication replica.
//!
//! The pipeline runs one way: scan, reconcile, plan, restore, verify, reports. Each stage
//! is a module; [`run`] calls one function per subcommand.

pub mod audit;
pub mod batch;
pub mod cli;
pub mod cmd;
pub mod compare;
pub mod drill;
pub mod error;
#[cfg(test)]
mod fuzz;
pub mod impact;
pub mod inventory;
pub mod model;
pub mod parts;
pub mod plan;
pub mod progress;
pub mod reconcile;
pub mod report;
pub mod restore;
pub mod rules;
pub mod s3;
pub mod scan;
pub mod state;
pub mod target;

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command};
pub use crate::error::{Error, Outcome};

/// What every command gets besides its own configuration.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// When the run started.
    pub started: Timestamp,
    /// The command line, secrets removed, for `summary.json`.
    pub args: Vec<String>,
    /// Cancelled on Ctrl-C: no new work, flush, stop.
    pub cancel: CancellationToken,
    /// `--quiet`: no tables or notes for people on stderr, only warnings and errors.
    pub quiet: bool,
}

impl RunContext {
    /// Writes text for people to stderr, unless `--quiet`.
    pub fn say(&self, text: &str) {
        if !self.quiet {
            eprint!("{text}");
        }
    }
}

/// Runs one parsed command line.
///
/// # Errors
/// Whatever stopped the command; [`Error::exit_code`] says how to exit.
pub async fn run(cli: Cli, ctx: RunContext) -> Result<Outcome, Error> {
    match cli.command {
        Command::Scan(args) => scan::run(scan::ScanConfig::try_from_args(args, &cli.global)?, &ctx).await,
        Command::Plan(args) => {
            cmd::plan::run(
                cmd::plan::PlanCmdConfig::try_from_args(args, &cli.global, ctx.started)?,
                &ctx,
            )
            .await
        }
        Command::Restore(args) => {
            cmd::restore::run(
                cmd::restore::RestoreCmdConfig::try_from_args(args, &cli.global, ctx.started)?,
                &ctx,
            )
            .await
        }
        Command::Verify(args) => {
            cmd::verify::run(
                cmd::verify::VerifyCmdConfig::try_from_args(args, &cli.global, ctx.started)?,
                &ctx,
            )
            .await
        }
        Command::Audit(args) => audit::run(audit::AuditConfig::try_from_args(args, &cli.global)?, &ctx).await,
        Command::Drill(args) => {
            drill::run(drill::DrillConfig::try_from_args(args, &cli.global, ctx.started)?, &ctx).await
        }
    }
}
