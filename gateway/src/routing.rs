//! The route table: a request's `model` → the first matching route; canary variant choice.

pub mod variant;

use std::sync::Arc;

use crate::config::{Config, RouteConfig};

/// Routes in config order.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Arc<RouteConfig>>,
}

impl RouteTable {
    /// Builds the table from a validated config.
    pub fn new(config: &Config) -> Self {
        RouteTable {
            routes: config.routes.iter().cloned().map(Arc::new).collect(),
        }
    }

    /// The first route whose pattern matches `model`.
    pub fn find(&self, model: &str) -> Option<&Arc<RouteConfig>> {
        self.routes
            .iter()
            .find(|r| glob_match(r.model.as_bytes(), model.as_bytes()))
    }

    /// Model names for `GET /v1/models`: every route pattern without wildcards.
    pub fn model_names(&self) -> impl Iterator<Item = &str> {
        self.routes
            .iter()
            .map(|r| r.model.as_str())
            .filter(|m| !m.contains(['*', '?']))
    }
}

/// `*` matches any run of bytes, `?` one byte; everything else literally.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative matcher with one backtrack point: linear for patterns with a single `*`,
    // and never exponential.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_like_shell_patterns() {
        assert!(glob_match(b"deepseek-r1", b"deepseek-r1"));
        assert!(!glob_match(b"deepseek-r1", b"deepseek-r1x"));
        assert!(glob_match(b"deepseek-*", b"deepseek-r1-distill"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"qwen?-*b", b"qwen3-32b"));
        assert!(!glob_match(b"qwen?-*b", b"qwen3-32k"));
        assert!(glob_match(b"*a*b*", b"xxaxxbxx"));
        assert!(!glob_match(b"*a*b", b"xxaxxbxxc"));
    }
}
