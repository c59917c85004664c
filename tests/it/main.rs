//! The integration tests: one binary (each `tests/*.rs` would link the SDK again), one
//! module per feature, sharing `support`.

mod restore;
mod resume;
mod support;
mod support_selftest;
