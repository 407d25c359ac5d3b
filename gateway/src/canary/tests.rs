//! Unit tests of the local windows, the comparison and promotion.

use super::*;

fn outcome(ok: bool, ms: u64) -> Outcome {
    Outcome {
        at: Instant::now(),
        ok,
        latency: Duration::from_millis(ms),
        verification_failed: false,
        step_timeout: false,
    }
}

fn cfg() -> RollbackConfig {
    RollbackConfig {
        window: Duration::from_secs(60),
        min_requests: 10,
        max_error_rate_delta: 0.1,
        max_p95_ratio: 2.0,
        min_p95_delta: Duration::from_millis(100),
        max_verification_failure_delta: 0.1,
        max_step_timeout_delta: 0.1,
    }
}

#[test]
fn rates_and_p95_are_exact() {
    let events: Vec<_> = (1..=100).map(|ms| outcome(ms % 10 != 0, ms)).collect();
    let r = rates(events.iter());
    assert_eq!(r.requests, 100);
    assert!((r.error_rate - 0.1).abs() < 1e-9);
    assert!((r.p95 - 0.095).abs() < 1e-9);
}

#[test]
fn a_worse_canary_is_rolled_back_and_a_similar_one_is_not() {
    let stable: Vec<_> = (0..20).map(|_| outcome(true, 100)).collect();
    let s = rates(stable.iter());
    let failing: Vec<_> = (0..20).map(|i| outcome(i % 2 == 0, 100)).collect();
    assert!(compare(&s, &rates(failing.iter()), &cfg())
        .unwrap()
        .starts_with("error rate 50.0 %"));
    let slow: Vec<_> = (0..20).map(|_| outcome(true, 500)).collect();
    assert!(compare(&s, &rates(slow.iter()), &cfg())
        .unwrap()
        .starts_with("p95 latency"));
    let similar: Vec<_> = (0..20).map(|i| outcome(i != 0, 150)).collect();
    assert_eq!(compare(&s, &rates(similar.iter()), &cfg()), None);
    // Three times slower, but by 2 ms: noise, not a regression.
    let fast_stable: Vec<_> = (0..20).map(|_| outcome(true, 1)).collect();
    let fast_canary: Vec<_> = (0..20).map(|_| outcome(true, 3)).collect();
    assert_eq!(
        compare(
            &rates(fast_stable.iter()),
            &rates(fast_canary.iter()),
            &cfg()
        ),
        None
    );
    let few: Vec<_> = (0..5).map(|_| outcome(false, 100)).collect();
    assert_eq!(
        compare(&s, &rates(few.iter()), &cfg()),
        None,
        "not enough canary requests yet"
    );
}

fn promoted_route(steps: &[u32]) -> CanaryConfig {
    use crate::config::{PromotionConfig, VariantConfig};
    let v = |name: &str| VariantConfig {
        name: name.into(),
        upstream: "u".into(),
        weight: 0,
        upstream_model: None,
    };
    CanaryConfig {
        allow_forcing: true,
        header: None,
        sticky_header: None,
        variants: vec![v("stable"), v("canary")],
        shadow: None,
        rollback: cfg(),
        promotion: Some(PromotionConfig {
            steps: steps.to_vec(),
            interval: Duration::from_secs(60),
            min_requests: 10,
        }),
    }
}

fn at(base: Instant, secs: u64, ok: bool) -> Outcome {
    Outcome {
        at: base + Duration::from_secs(secs),
        ..outcome(ok, 100)
    }
}

#[test]
fn a_healthy_canary_climbs_the_steps_only_after_the_interval_and_enough_requests() {
    let c = promoted_route(&[10, 50, 100]);
    let state = CanaryState::default();
    assert_eq!(state.weights("r", &c), vec![90, 10]);
    let base = Instant::now();
    // Both sides well past min_requests at t = 0..30 s: too early for the 60 s interval.
    for s in 0..30 {
        assert_eq!(state.record("r", &c, "stable", at(base, s, true)), None);
        assert_eq!(state.record("r", &c, "canary", at(base, s, true)), None);
    }
    assert_eq!(state.weights("r", &c), vec![90, 10]);
    // At 60 s after the step's first canary request, the next canary outcome promotes it.
    assert_eq!(
        state.record("r", &c, "canary", at(base, 60, true)),
        Some(Change::Promoted(50))
    );
    assert_eq!(state.weights("r", &c), vec![50, 50]);
    // The new step needs its own interval and its own 10 requests.
    for s in 61..125 {
        state.record("r", &c, "stable", at(base, s, true));
    }
    for s in 0..9 {
        assert_eq!(
            state.record("r", &c, "canary", at(base, 121 + s, true)),
            None
        );
    }
    assert_eq!(
        state.record("r", &c, "canary", at(base, 130, true)),
        Some(Change::Promoted(100))
    );
    assert_eq!(state.weights("r", &c), vec![0, 100]);
    // The last step is the end: nothing further happens.
    for s in 131..300 {
        assert_eq!(state.record("r", &c, "canary", at(base, s, true)), None);
    }
    assert_eq!(state.weights("r", &c), vec![0, 100]);
}

#[test]
fn a_failing_canary_is_rolled_back_mid_promotion_and_restarts_from_the_first_step() {
    let c = promoted_route(&[10, 50, 100]);
    let state = CanaryState::default();
    let base = Instant::now();
    for s in 0..=60 {
        state.record("r", &c, "stable", at(base, s, true));
        state.record("r", &c, "canary", at(base, s, true));
    }
    assert_eq!(state.weights("r", &c), vec![50, 50]);
    let mut change = None;
    for s in 61..80 {
        change = change.or(state.record("r", &c, "canary", at(base, s, false)));
    }
    assert!(matches!(change, Some(Change::RolledBack(ref r)) if r.starts_with("error rate")));
    assert_eq!(
        state.weights("r", &c),
        vec![50, 0],
        "stable serves everything"
    );
    assert!(state.enable("r", "canary"));
    assert_eq!(
        state.weights("r", &c),
        vec![90, 10],
        "back to the first step"
    );
}

#[test]
fn without_enough_stable_traffic_to_compare_there_is_no_promotion() {
    let c = promoted_route(&[10, 100]);
    let state = CanaryState::default();
    let base = Instant::now();
    for s in 0..200 {
        assert_eq!(state.record("r", &c, "canary", at(base, s, true)), None);
    }
    assert_eq!(state.weights("r", &c), vec![90, 10]);
}

#[test]
fn a_reload_with_fewer_steps_keeps_the_canary_within_the_new_list() {
    let long = promoted_route(&[10, 20, 30, 40]);
    let state = CanaryState::default();
    let base = Instant::now();
    let mut t = 0;
    for _ in 0..3 {
        for _ in 0..61 {
            state.record("r", &long, "stable", at(base, t, true));
            state.record("r", &long, "canary", at(base, t, true));
            t += 1;
        }
    }
    assert_eq!(state.weights("r", &long), vec![60, 40]);
    let short = promoted_route(&[5, 25]);
    assert_eq!(state.weights("r", &short), vec![75, 25]);
    // Without promotion the configured weights apply again.
    let mut plain = promoted_route(&[5]);
    plain.promotion = None;
    plain.variants[0].weight = 3;
    plain.variants[1].weight = 1;
    assert_eq!(state.weights("r", &plain), vec![3, 1]);
}
