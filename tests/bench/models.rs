//! The benchmark's models checked at test size: the drain of an outage's backlog against
//! the capacity-limited cloud model, and a leased scanner pool resized and killed
//! mid-drain. They run on paused time, so what they assert is the model's verdict, not
//! this machine's speed.

/// An outage's backlog drained against the capacity-limited cloud model, with writers and
/// fresh crashes going on (`tiersweep bench`'s drain at smoke size): no queued job's row is
/// claimed again, every fresh crash is recovered. No timing is asserted.
#[tokio::test(start_paused = true)]
async fn a_backlog_drained_at_the_services_limits_re_claims_nothing() {
    use tiersweep_bench::drain::{DrainPlan, run};
    let r = run(DrainPlan::new(3_000)).await;
    assert_eq!(r.reclaims, 0, "{r:#?}");
    assert_eq!(r.claimed_twice_at_once, 0, "{r:#?}");
    // With production's settle, every backlog change is claimed twice (its pass after the
    // settle is a new claim, not a re-claim), and its row goes a settle after its blob.
    assert!(r.claims_won >= 6_000, "{r:#?}");
    assert!(
        r.done_s >= r.took_s + r.plan.upload_settle.as_secs_f64(),
        "{r:#?}"
    );
    assert!(r.fresh_crashed > 0, "{r:#?}");
    assert_eq!(r.fresh_converged, r.fresh_crashed, "{r:#?}");
    // The deletes ran near the bucket's limit, paced: few refused (virtual time, so this is
    // the model's verdict, not this machine's speed).
    assert!(r.gcs_utilisation > 0.5, "the limit was approached: {r:#?}");
    assert!(
        r.admissions.gcs_mutations_refused * 10 <= r.admissions.gcs_mutations,
        "paced deletes are rarely refused: {r:#?}"
    );
}

/// A leased scanner pool drains a backlog while it grows 1 -> 4, loses a member to a kill
/// and shrinks to 1 (`tiersweep bench`'s elasticity run at smoke size).
#[tokio::test(start_paused = true)]
async fn a_leased_pool_resized_and_killed_mid_drain_claims_no_row_twice_at_once() {
    use tiersweep_bench::elastic::{ElasticPlan, run};
    let plan = ElasticPlan::smoke();
    let r = run(plan).await;
    assert_eq!(r.left, 0, "every change converged: {r:?}");
    assert_eq!(r.claimed_twice_at_once, 0, "{r:?}");
    assert_eq!(r.shared_shard_instants, 0, "{r:?}");
    assert!(r.claims_won >= plan.backlog, "{r:?}");
    assert!(
        r.takeover <= plan.lease_period,
        "a killed member's shards are covered within a lease period: {r:?}"
    );
}
