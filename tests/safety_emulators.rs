//! The adversarial schedules (`tiersweep::testing::schedules`) on the emulators
//! (cbtemulator, fake-gcs-server), in real time with short timings; each schedule gets
//! fresh tables and a fresh bucket.

use std::time::Duration;

use tiersweep::clock;
use tiersweep::config::ProtocolConfig;
use tiersweep::testing::emulators::emulators;

fn protocol() -> ProtocolConfig {
    ProtocolConfig {
        heartbeat_interval: Duration::from_millis(200),
        staleness_threshold: Duration::from_millis(1000),
        safety_margin: Duration::from_millis(300),
    }
}

tiersweep::safety_schedules!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
    async { emulators().await.stores(clock::system()).await },
    protocol()
);
