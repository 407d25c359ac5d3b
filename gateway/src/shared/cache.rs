//! Fleet mode's cache state in Redis (issue 26): see `crate::shared`.
