//! The conformance suites against the in-memory backends.

use std::sync::Arc;

use tiersweep::clock;

mod hv {
    use super::*;
    tiersweep::hv_conformance!(async { Arc::new(tiersweep::hv::MemoryHv::new()) });
}

mod lt {
    use super::*;
    tiersweep::lt_conformance!(async { Arc::new(tiersweep::lt::MemoryLt::new()) });
}

mod changelog {
    use super::*;
    tiersweep::changelog_conformance!(async {
        Arc::new(tiersweep::changelog::MemoryChangelog::new(clock::system()))
    });
}

mod leases {
    use super::*;
    tiersweep::lease_conformance!(async {
        Arc::new(tiersweep::shard_lease::MemoryShardLeases::new(
            clock::system(),
        ))
    });
}

mod queue {
    tiersweep::queue_conformance!(async { Box::new(tiersweep::queue::MemoryQueue::new(16, 5)) });
}
