//! s3-failback: bring an S3 bucket back from its Cross-Region Replication replica.
//!
//! The pipeline runs one way: scan, reconcile, plan, restore, verify, reports.

pub mod model;
pub mod plan;
pub mod reconcile;
