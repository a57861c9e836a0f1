//! What each object may read back as, given what its writers were told: the model an
//! acknowledged-write check compares the stores against.
//!
//! A write that returned `Ok` fixes the object's value, except for writes whose outcome was
//! unknown (an error after the call may have landed, a crash) and whose attempts may still
//! land later: the value they carried stays acceptable until no attempt of theirs can.
//! A write refused before HV changed (`Conflict`, `Fenced`, `GuardLost`) cannot appear.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::model::ObjectPath;
use crate::testing::invariants::Acceptable;
use crate::writer::WriteError;

/// Acceptable values per object, and the writes whose outcome nobody knows yet.
#[derive(Debug, Clone)]
pub struct History {
    acceptable: BTreeMap<ObjectPath, Acceptable>,
    /// Values of writes with unknown outcome, and until when an attempt may still land.
    unknown: Vec<(ObjectPath, Option<Bytes>, Instant)>,
    /// How long after its caller saw an error a write's attempt may still land.
    max_straggle: Duration,
}

/// How a write ended, as its caller saw it.
#[derive(Debug)]
pub enum Ending {
    Returned(Result<(), WriteError>),
    /// The writer's process died during the write; any of its calls may have landed.
    Crashed,
}

impl History {
    /// Every object starts absent.
    pub fn new(objects: impl IntoIterator<Item = ObjectPath>, max_straggle: Duration) -> Self {
        Self {
            acceptable: objects.into_iter().map(|p| (p, vec![None])).collect(),
            unknown: Vec::new(),
            max_straggle,
        }
    }

    pub fn acceptable(&self) -> &BTreeMap<ObjectPath, Acceptable> {
        &self.acceptable
    }

    /// Records a write of `value` to `path` that ended at `at`. Writes must be recorded in
    /// the order they ended; writes that ended at the same instant may have landed in either
    /// order, and `tie` says this one did so with the previous one on the same object.
    pub fn settle(
        &mut self,
        at: Instant,
        path: &ObjectPath,
        value: Option<Bytes>,
        ending: Ending,
        tie: bool,
    ) {
        let before = self.acceptable.get(path).cloned().unwrap_or_default();
        let Some(set) = self.acceptable.get_mut(path) else {
            return;
        };
        match ending {
            Ending::Returned(Ok(())) => {
                *set = vec![value];
                self.unknown.retain(|(_, _, until)| *until >= at);
                set.extend(
                    self.unknown
                        .iter()
                        .filter(|(p, ..)| p == path)
                        .map(|(_, v, _)| v.clone()),
                );
            }
            Ending::Returned(Err(
                WriteError::Conflict { .. }
                | WriteError::Fenced { .. }
                | WriteError::GuardLost { .. },
            )) => {}
            Ending::Returned(Err(_)) => {
                set.push(value.clone());
                self.unknown
                    .push((path.clone(), value, at + self.max_straggle));
            }
            // Its effect may have landed at this very instant, as late as (or later than) a
            // write that finishes now, and a straggling call of it later still.
            Ending::Crashed => {
                set.push(value.clone());
                self.unknown
                    .push((path.clone(), value, at + self.max_straggle));
            }
        }
        if tie {
            set.extend(before);
        }
    }
}
