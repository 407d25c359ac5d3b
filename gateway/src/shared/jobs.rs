//! Fleet mode's jobs state in Redis (issue 26): see `crate::shared`.
