//! The crate's error type and the one place that picks an exit code.

use crate::cli::CliError;
use crate::inventory::InventoryError;
use crate::report::ReportError;
use crate::s3::S3Error;

/// Why a command could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad flag or argument.
    #[error(transparent)]
    Cli(#[from] CliError),
    /// S3 said the setup is wrong before anything was written (missing bucket, access,
    /// credentials, region, endpoint).
    #[error("{0}")]
    Setup(S3Error),
    /// A bucket's versioning does not allow the command.
    #[error("bucket {bucket}: versioning is {state}; {need}")]
    Versioning {
        /// The bucket.
        bucket: String,
        /// Its state.
        state: String,
        /// What the command needs.
        need: &'static str,
    },
    /// S3 failed after the run was under way.
    #[error("{0}")]
    S3(S3Error),
    /// An input file (inventory, plan, rules) cannot be used.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// The report directory could not be set up before the run.
    #[error("{0}")]
    ReportSetup(ReportError),
    /// A report could not be written during the run: the run stops rather than go on
    /// without its record.
    #[error("{0}")]
    Report(ReportError),
    /// A configuration problem found before anything was written.
    #[error("{0}")]
    Config(String),
    /// A plan (file or input listing) cannot be used.
    #[error("{0}")]
    Plan(String),
    /// The state directory cannot be read or written: the run stops rather than go on
    /// without its record.
    #[error("{0}")]
    State(String),
    /// A listing failed during the run.
    #[error("{0}")]
    S3Listing(String),
    /// Ctrl-C: the run stopped cleanly and a rerun resumes.
    #[error("interrupted; the reports written so far are kept, and running the same command again resumes")]
    Interrupted,
}

impl Error {
    /// The process exit code of DESIGN.md for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Cli(_)
            | Error::Setup(_)
            | Error::Versioning { .. }
            | Error::Inventory(_)
            | Error::ReportSetup(_)
            | Error::Config(_)
            | Error::Plan(_) => 2,
            Error::S3(_) | Error::S3Listing(_) | Error::Report(_) | Error::State(_) => 1,
            Error::Interrupted => 130,
        }
    }
}

/// How a command that ran to its end came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything done and verified as asked: exit 0.
    Complete,
    /// Finished, but not everything was done: exit 1; the reports list what.
    Incomplete,
}

impl Outcome {
    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Complete => 0,
            Outcome::Incomplete => 1,
        }
    }
}
