//! The adversarial schedules (`tiersweep::testing::schedules`) on the in-memory twins,
//! under paused time: waits cost nothing, so each schedule runs in milliseconds.

use std::time::Duration;

use tiersweep::config::ProtocolConfig;
use tiersweep::testing::schedules;

fn protocol() -> ProtocolConfig {
    ProtocolConfig {
        heartbeat_interval: Duration::from_millis(500),
        staleness_threshold: Duration::from_secs(2),
        safety_margin: Duration::from_millis(500),
    }
}

tiersweep::safety_schedules!(
    #[tokio::test(start_paused = true)],
    async { tiersweep::testing::MemoryStores::new().stores() },
    protocol(),
    paused_time
);

/// The writer's and recovery's views of one set of in-memory stores; the writer's process
/// clock is `skew` away. The twin's changelog stamps in its own time, as Bigtable's server
/// does.
fn skewed_pair(ahead: bool) -> (tiersweep::Stores, tiersweep::Stores) {
    let m = tiersweep::testing::MemoryStores::new();
    let clock = tiersweep::testing::SkewedClock::new(m.clock.clone());
    clock.jump(schedules::SKEW, ahead);
    let writer = tiersweep::Stores {
        clock,
        ..m.stores()
    };
    (m.stores(), writer)
}

#[tokio::test(start_paused = true)]
async fn a_writer_clock_running_ahead_does_not_hide_its_crash() {
    let (recovery, writer) = skewed_pair(true);
    schedules::a_writer_clock_running_ahead_does_not_hide_its_crash(recovery, writer, protocol())
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_writer_clock_running_behind_keeps_its_live_write() {
    let (recovery, writer) = skewed_pair(false);
    schedules::a_writer_clock_running_behind_keeps_its_live_write(recovery, writer, protocol())
        .await;
}
