//! The three stores a two-tier mutation touches, bundled, because the writer, converge and
//! every recovery worker need all three and must agree on which.

use std::sync::Arc;

use crate::changelog::Changelog;
use crate::clock::SharedClock;
use crate::hv::HvStore;
use crate::lt::LtStore;

#[derive(Debug, Clone)]
pub struct Stores {
    pub hv: Arc<dyn HvStore>,
    pub lt: Arc<dyn LtStore>,
    pub changelog: Arc<dyn Changelog>,
    /// The wall clock that stamps and judges changelog entries.
    pub clock: SharedClock,
}
