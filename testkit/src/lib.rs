//! tiersweep's test kit: the protocol's scenarios and named schedules (each written once,
//! run on the in-memory twins and on the emulators), the whole-pipeline simulation, the
//! emulator fixtures, the TCP chaos proxy, and the crash and claim machinery the
//! benchmark shares.
//!
//! What every backend must pass stays in the library, behind its `testing` feature: the
//! conformance suites, the in-memory stores, the fault and interception wrappers and the
//! invariant checker. This crate builds on them and on the internals that feature makes
//! public; nothing here is compiled into the library or the release binary.

pub mod audit_fanout;
pub mod audits;
pub mod backlog;
pub mod claims;
pub mod crash;
pub mod emulators;
pub mod gated_writes;
pub mod membership;
pub mod otlp;
pub mod proxy;
pub mod recovery_clocks;
pub mod scans;
pub mod schedules;
pub mod simulation;
