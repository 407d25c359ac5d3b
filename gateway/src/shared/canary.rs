//! Fleet mode's canary state in Redis (issue 26): see `crate::shared`.
