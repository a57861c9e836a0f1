//! The adversarial schedules (`tiersweep::testing::schedules`) on the in-memory twins,
//! under paused time: waits cost nothing, so each schedule runs in milliseconds.

use std::time::Duration;

use tiersweep::config::ProtocolConfig;

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
