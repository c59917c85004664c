//! Everything that speaks to S3: clients, bucket settings and listings.
//!
//! No file outside this module names an `aws_sdk_s3` type; the rest of the crate sees
//! [`crate::model`] values and [`S3Error`].

pub mod client;
pub mod control;
pub mod error;
pub mod listing;
pub mod ops;

pub use client::{BucketSettings, DefaultEncryption, DestClient, ReplicationRead, S3Config, SourceClient, Versioning};
pub use error::{S3Error, S3ErrorKind};
pub use listing::ListConfig;
