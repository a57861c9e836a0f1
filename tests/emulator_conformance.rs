//! The conformance suites against the emulator backends: the same test bodies as
//! `memory_conformance.rs`, on cbtemulator, fake-gcs-server and the Pub/Sub emulator.
//! Each test gets its own tables, bucket or topics.

use tiersweep::clock;
use tiersweep_testkit::emulators::emulators;

mod hv {
    use super::*;
    tiersweep::hv_conformance!(async { emulators().await.hv().await });
}

mod lt {
    use super::*;
    tiersweep::lt_conformance!(async { emulators().await.lt().await });
}

mod changelog {
    use super::*;
    tiersweep::changelog_conformance!(async { emulators().await.changelog(clock::system()).await });
}

mod leases {
    use super::*;
    tiersweep::lease_conformance!(async { emulators().await.leases().await });
}

mod queue {
    use super::*;
    tiersweep::queue_conformance!(async { Box::new(emulators().await.queue().await) });
}
