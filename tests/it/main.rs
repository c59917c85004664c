//! The integration tests: one binary (each `tests/*.rs` would link the SDK again), one
//! module per feature, sharing `support`.

mod batch;
mod peacetime;
mod plan;
mod reliability;
mod replication;
mod restore;
mod resume;
mod scan;
mod support;
mod support_selftest;
