//! Exit codes, so that an orchestrator (or an operator's script) can tell a process that
//! will never start as configured from one that failed at work:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done (a worker stopped by SIGTERM/SIGINT after draining) |
//! | 1 | a runtime failure |
//! | 2 | bad command line (clap's usage error) |
//! | 3 | configuration error: a bad setting, or one that disagrees with a resource |
//! | 4 | a resource is missing or refused: a table, bucket, topic or subscription that does not exist, or a permission the role lacks |

use std::fmt;

use tiersweep::{ErrorKind, StoreError};

pub const RUNTIME: u8 = 1;
pub const CONFIG: u8 = 3;
pub const RESOURCE: u8 = 4;

/// Marks an error as a configuration error (attach with `anyhow::Context`).
#[derive(Debug)]
pub struct ConfigFailure(pub String);

impl std::error::Error for ConfigFailure {}

impl fmt::Display for ConfigFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The exit code for a failed command.
pub fn code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<ConfigFailure>().is_some() {
        return CONFIG;
    }
    let refused = e.chain().any(|c| {
        c.downcast_ref::<StoreError>()
            .is_some_and(|s| s.kind == ErrorKind::Permanent)
    });
    if refused { RESOURCE } else { RUNTIME }
}
