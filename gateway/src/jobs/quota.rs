//! Room for async jobs: the store's size, each tenant's share of it and the bytes jobs hold
//! (request bodies, progress, results), so that neither one client nor all of them together
//! can make the gateway hold unbounded memory.

use serde_json::Value;

use crate::config::AsyncJobsConfig;
use crate::openai::{ApiError, ErrorCode};

/// Why a submission was refused for lack of room (the `reason` label of
/// `async_job_rejections_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// `async_jobs.max_jobs` jobs are stored.
    StoreFull,
    /// The tenant has `async_jobs.max_jobs_per_tenant` jobs stored.
    TenantQuota,
    /// Jobs hold `async_jobs.max_bytes` (at submission, or a finished job's result).
    MemoryFull,
}

impl Rejection {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::StoreFull => "store_full",
            Rejection::TenantQuota => "tenant_quota",
            Rejection::MemoryFull => "memory_full",
        }
    }
}

/// What the store holds when a job is submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Jobs stored.
    pub stored: usize,
    /// Of those, the submitting tenant's.
    pub tenant: usize,
    /// Bytes all jobs hold.
    pub held: u64,
}

/// Whether one more job of `request_bytes` fits; the refusal and its OpenAI error if not.
pub fn check(
    s: &AsyncJobsConfig,
    u: Usage,
    request_bytes: u64,
) -> Result<(), (Rejection, ApiError)> {
    if u.stored >= s.max_jobs {
        Err((
            Rejection::StoreFull,
            ApiError::new(
                ErrorCode::TooManyJobs,
                format!(
                    "{} async jobs are stored (async_jobs.max_jobs); retry when some expire.",
                    u.stored
                ),
            ),
        ))
    } else if u.tenant >= s.max_jobs_per_tenant {
        Err((
            Rejection::TenantQuota,
            ApiError::new(ErrorCode::TenantJobQuotaExceeded, format!(
                    "You have {} async jobs stored (async_jobs.max_jobs_per_tenant); retry when some finish and expire.",
                    u.tenant
                ),
            ),
        ))
    } else if u.held.saturating_add(request_bytes) > s.max_bytes {
        Err((
            Rejection::MemoryFull,
            ApiError::new(ErrorCode::JobMemoryFull, "Async jobs hold as many bytes as the gateway allows (async_jobs.max_bytes); retry when some expire.",
            ),
        ))
    } else {
        Ok(())
    }
}

/// The length of `v` as JSON, without building the text.
pub fn json_len(v: &Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AsyncJobsConfig {
        AsyncJobsConfig {
            max_jobs: 10,
            max_jobs_per_tenant: 3,
            max_bytes: 1000,
            ..crate::jobs::default_settings()
        }
    }

    fn refusal(u: Usage, bytes: u64) -> Option<(Rejection, ErrorCode)> {
        check(&settings(), u, bytes).err().map(|(r, e)| (r, e.code))
    }

    #[test]
    fn each_bound_refuses_with_its_code() {
        let ok = Usage {
            stored: 5,
            tenant: 2,
            held: 500,
        };
        assert_eq!(refusal(ok, 500), None);
        assert_eq!(
            refusal(Usage { stored: 10, ..ok }, 1),
            Some((Rejection::StoreFull, ErrorCode::TooManyJobs))
        );
        assert_eq!(
            refusal(Usage { tenant: 3, ..ok }, 1),
            Some((Rejection::TenantQuota, ErrorCode::TenantJobQuotaExceeded))
        );
        assert_eq!(
            refusal(ok, 501),
            Some((Rejection::MemoryFull, ErrorCode::JobMemoryFull))
        );
        assert_eq!(
            refusal(
                Usage {
                    held: u64::MAX,
                    ..ok
                },
                u64::MAX
            ),
            Some((Rejection::MemoryFull, ErrorCode::JobMemoryFull))
        );
    }

    #[test]
    fn json_len_is_the_serialised_length() {
        let v = serde_json::json!({"a": [1, "é", null], "b": {"c": true}});
        assert_eq!(json_len(&v), serde_json::to_vec(&v).unwrap().len() as u64);
    }
}
