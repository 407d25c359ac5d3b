//! The fleet's rule on merged counts, and the window's buckets.

use super::*;
use crate::canary::Outcome;
use crate::config::{PromotionConfig, RollbackConfig, VariantConfig};
use std::time::Instant;

fn route(steps: Option<&[u32]>) -> CanaryConfig {
    let v = |name: &str| VariantConfig {
        name: name.into(),
        upstream: "u".into(),
        weight: 50,
        upstream_model: None,
    };
    CanaryConfig {
        allow_forcing: false,
        header: None,
        sticky_header: None,
        variants: vec![v("stable"), v("canary")],
        shadow: None,
        rollback: RollbackConfig {
            window: Duration::from_secs(60),
            min_requests: 10,
            max_error_rate_delta: 0.1,
            max_p95_ratio: 2.0,
            min_p95_delta: Duration::from_millis(100),
            max_verification_failure_delta: 0.1,
            max_step_timeout_delta: 0.1,
        },
        promotion: steps.map(|s| PromotionConfig {
            steps: s.to_vec(),
            interval: Duration::from_secs(1),
            min_requests: 10,
        }),
    }
}

/// Three replicas' counts of `n` outcomes each, `failing` of them failed, summed.
fn fleet(n: u64, failing: u64) -> FleetVariant {
    let mut tally = Tally::default();
    for replica in 0..3 {
        let mut t = Tally::default();
        for i in 0..n {
            t.add(&Outcome {
                at: Instant::now(),
                ok: i >= failing,
                latency: Duration::from_millis(100 + replica),
                verification_failed: false,
                step_timeout: false,
            });
        }
        tally.merge(&t);
    }
    FleetVariant {
        tally,
        step_requests: 3 * n,
        step_since_ms: Some(0),
        ..FleetVariant::default()
    }
}

#[test]
fn counts_no_replica_could_decide_on_alone_roll_the_canary_back() {
    // 4 outcomes a replica: below min_requests (10) on each, 12 for the fleet.
    let view: FleetRoute = [
        ("stable".to_string(), fleet(4, 0)),
        ("canary".to_string(), fleet(4, 4)),
    ]
    .into();
    let d = decide(&route(None), &view, 10_000);
    assert!(
        matches!(&d[..], [Decision::RollBack { variant, reason }] if variant == "canary" && reason.starts_with("error rate 100.0 %")),
        "{d:?}"
    );
    // Once published, the rule does not decide it again.
    let mut decided = view.clone();
    decided.get_mut("canary").unwrap().verdict = Some(Verdict {
        reason: "x".into(),
        at_ms: 1,
        by: "r".into(),
        local: false,
    });
    assert_eq!(decide(&route(None), &decided, 10_000), vec![]);
}

#[test]
fn a_healthy_canary_is_promoted_once_the_interval_is_over() {
    let view: FleetRoute = [
        ("stable".to_string(), fleet(4, 0)),
        ("canary".to_string(), fleet(4, 0)),
    ]
    .into();
    let c = route(Some(&[10, 50, 100]));
    assert_eq!(decide(&c, &view, 999), vec![], "interval not over");
    assert_eq!(
        decide(&c, &view, 1_000),
        vec![Decision::Promote {
            variant: "canary".into(),
            from: 0
        }]
    );
    // The last step is the end.
    let mut last = view.clone();
    last.get_mut("canary").unwrap().step = 2;
    assert_eq!(decide(&c, &last, 10_000), vec![]);
    // Too few outcomes on the step.
    let mut few = view;
    few.get_mut("canary").unwrap().step_requests = 9;
    assert_eq!(decide(&c, &few, 10_000), vec![]);
}

#[test]
fn a_window_is_ten_buckets_of_a_tenth_of_it_at_least_a_second_wide() {
    assert_eq!(bucket_width(Duration::from_secs(60)), 6);
    assert_eq!(bucket_width(Duration::from_secs(5)), 1);
    let b = window_buckets(Duration::from_secs(60), 1_000_003);
    assert_eq!(b.len(), 10);
    assert_eq!(b[0], 1_000_002);
    assert_eq!(b[9], 1_000_002 - 54);
    assert_eq!(
        window_buckets(Duration::from_secs(5), 100),
        vec![100, 99, 98, 97, 96]
    );
    assert_eq!(window_buckets(Duration::from_millis(300), 100), vec![100]);
}
