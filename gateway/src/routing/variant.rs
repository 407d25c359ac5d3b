//! Canary variant choice: a pure function of the route, the request's headers, the rollback
//! state and an injected random source.

use crate::config::CanaryConfig;

/// Why a variant was chosen (log field; forced choices are not counted in canary windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `x-gateway-variant: NAME`.
    Named,
    /// The canary header (`true`/`false`).
    Header,
    /// The sticky key's hash.
    Sticky,
    /// Weighted random.
    Weighted,
}

impl Reason {
    /// The client chose the variant by header.
    pub fn forced(self) -> bool {
        matches!(self, Reason::Named | Reason::Header)
    }
}

/// Chooses a served variant (an index into `canary.variants`).
///
/// Order: when the route allows forcing (`canary.allow_forcing`), `x-gateway-variant: NAME`,
/// then the canary header (`false` → the first variant, `true` → the second), unless the forced
/// variant is rolled back (`rolled_back`, one per served variant; missing entries are not);
/// then `weights` (one per served variant: configured or the promotion step's, 0 for
/// rolled-back ones; see `CanaryState::live`), either from the sticky key (the same user always
/// lands on the same variant while the weights stay the same) or from `random` (a number in
/// `[0, 1)`).
pub fn pick(
    canary: &CanaryConfig,
    header: &dyn Fn(&str) -> Option<String>,
    weights: &[u32],
    rolled_back: &[bool],
    random: f64,
) -> (usize, Reason) {
    let servable = |i: usize| !rolled_back.get(i).copied().unwrap_or(false);
    if canary.allow_forcing {
        if let Some(name) = header("x-gateway-variant") {
            if let Some(i) = canary.variants.iter().position(|v| v.name == name) {
                if servable(i) {
                    return (i, Reason::Named);
                }
            }
        }
        if let Some(h) = &canary.header {
            match header(h).as_deref().map(str::trim) {
                Some("false") if servable(0) => return (0, Reason::Header),
                Some("true") if canary.variants.len() > 1 && servable(1) => {
                    return (1, Reason::Header)
                }
                _ => {}
            }
        }
    }
    let weights: Vec<u64> = weights.iter().map(|w| u64::from(*w)).collect();
    let total: u64 = weights.iter().sum();
    if total == 0 {
        return (0, Reason::Weighted);
    }
    let sticky = canary
        .sticky_header
        .as_deref()
        .map_or_else(|| header("authorization"), header);
    let (point, reason) = match sticky {
        Some(key) if !key.is_empty() => {
            (crate::util::fnv1a(key.as_bytes()) % total, Reason::Sticky)
        }
        _ => (
            ((random * total as f64) as u64).min(total - 1),
            Reason::Weighted,
        ),
    };
    let mut acc = 0;
    for (i, w) in weights.iter().enumerate() {
        acc += w;
        if point < acc {
            return (i, reason);
        }
    }
    (0, reason)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::config::{RollbackConfig, VariantConfig};

    fn canary(weights: &[u32], sticky: Option<&str>) -> CanaryConfig {
        CanaryConfig {
            allow_forcing: true,
            header: Some("x-canary".into()),
            sticky_header: sticky.map(str::to_owned),
            variants: weights
                .iter()
                .enumerate()
                .map(|(i, w)| VariantConfig {
                    name: ["stable", "canary", "third"][i].into(),
                    upstream: "u".into(),
                    weight: *w,
                    upstream_model: None,
                })
                .collect(),
            shadow: None,
            rollback: RollbackConfig {
                window: Duration::from_secs(60),
                min_requests: 1,
                max_error_rate_delta: 0.1,
                max_p95_ratio: 2.0,
                min_p95_delta: Duration::from_millis(100),
                max_verification_failure_delta: 0.1,
                max_step_timeout_delta: 0.1,
            },
            promotion: None,
        }
    }

    /// The configured weights (nothing rolled back, no promotion).
    fn w(c: &CanaryConfig) -> Vec<u32> {
        c.variants.iter().map(|v| v.weight).collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    #[test]
    fn weights_hold_within_statistical_bounds() {
        let c = canary(&[95, 5], None);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let n = 20_000;
        let canaries = (0..n)
            .filter(|_| pick(&c, &headers(&[]), &w(&c), &[], rng.gen::<f64>()).0 == 1)
            .count();
        // 5 % of 20 000 = 1 000, σ ≈ 31: ±4σ.
        assert!((876..=1124).contains(&canaries), "{canaries}");
    }

    #[test]
    fn headers_force_variants_and_rollback_zeroes_weight() {
        let c = canary(&[50, 50], None);
        let none = w(&c);
        assert_eq!(
            pick(&c, &headers(&[("x-canary", "true")]), &none, &[], 0.0),
            (1, Reason::Header)
        );
        assert_eq!(
            pick(&c, &headers(&[("x-canary", "false")]), &none, &[], 0.99),
            (0, Reason::Header)
        );
        assert_eq!(
            pick(
                &c,
                &headers(&[("x-gateway-variant", "canary")]),
                &none,
                &[],
                0.0
            ),
            (1, Reason::Named)
        );
        let canary_out = [50, 0];
        let out = [false, true];
        for r in [0.0, 0.5, 0.99] {
            assert_eq!(pick(&c, &headers(&[]), &canary_out, &out, r).0, 0);
        }
        // A rolled-back variant cannot be forced, by name or by the canary header: the
        // request is served by weight instead.
        for forcing in [("x-gateway-variant", "canary"), ("x-canary", "true")] {
            assert_eq!(
                pick(&c, &headers(&[forcing]), &canary_out, &out, 0.99),
                (0, Reason::Weighted),
                "{forcing:?}"
            );
        }
        // A variant with weight 0 that is not rolled back can still be reached by name.
        assert_eq!(
            pick(
                &c,
                &headers(&[("x-gateway-variant", "canary")]),
                &canary_out,
                &[],
                0.0
            ),
            (1, Reason::Named)
        );
    }

    #[test]
    fn forcing_headers_are_ignored_unless_the_route_allows_forcing() {
        let mut c = canary(&[100, 0], None);
        c.allow_forcing = false;
        for forcing in [("x-gateway-variant", "canary"), ("x-canary", "true")] {
            assert_eq!(
                pick(&c, &headers(&[forcing]), &w(&c), &[], 0.5),
                (0, Reason::Weighted),
                "{forcing:?}"
            );
        }
        assert!(Reason::Named.forced() && Reason::Header.forced());
        assert!(!Reason::Weighted.forced() && !Reason::Sticky.forced());
    }

    #[test]
    fn sticky_users_keep_their_variant_and_spread_by_weight() {
        let c = canary(&[50, 50], Some("x-user"));
        let mut per_variant = [0; 2];
        for u in 0..1000 {
            let user = format!("user-{u}");
            let h = headers(&[("x-user", user.as_str())]);
            let (first, reason) = pick(&c, &h, &w(&c), &[], 0.0);
            assert_eq!(reason, Reason::Sticky);
            for r in [0.3, 0.9] {
                assert_eq!(pick(&c, &h, &w(&c), &[], r).0, first, "{user} moved");
            }
            per_variant[first] += 1;
        }
        assert!(
            per_variant[0] > 400 && per_variant[1] > 400,
            "{per_variant:?}"
        );
        // Without a sticky header configured, the API key is the key.
        let c = canary(&[50, 50], None);
        let key = headers(&[("authorization", "Bearer sk-1")]);
        assert_eq!(
            pick(&c, &key, &w(&c), &[], 0.1),
            pick(&c, &key, &w(&c), &[], 0.9)
        );
    }

    #[test]
    fn sticky_users_on_the_canary_stay_on_it_as_promotion_grows_its_share() {
        let c = canary(&[0, 0], Some("x-user"));
        let on_canary = |percent: u32| -> Vec<bool> {
            (0..2000)
                .map(|u| {
                    let user = format!("user-{u}");
                    let h = headers(&[("x-user", user.as_str())]);
                    pick(&c, &h, &[100 - percent, percent], &[], 0.5).0 == 1
                })
                .collect()
        };
        let steps = [5, 25, 50, 100].map(on_canary);
        for pair in steps.windows(2) {
            let moved_back = pair[0]
                .iter()
                .zip(&pair[1])
                .filter(|(a, b)| **a && !**b)
                .count();
            assert_eq!(
                moved_back, 0,
                "a canary user went back to stable at a larger step"
            );
        }
        let share = |v: &Vec<bool>| v.iter().filter(|x| **x).count();
        assert!(
            (40..=160).contains(&share(&steps[0])),
            "{}",
            share(&steps[0])
        );
        assert_eq!(share(&steps[3]), 2000);
    }
}
