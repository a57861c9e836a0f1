//! Typed configuration, validated once at start so that a bad value fails with the name of
//! the field instead of surfacing later as a wrong deletion or a stuck loop.

pub mod file;

pub use file::{Config, LoadError, WorkerConfig};

pub use crate::error::ConfigError;
pub use crate::protocol::ProtocolConfig;
