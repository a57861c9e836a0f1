//! What each object may read back as, given what its writers were told: the model the
//! acknowledged-write check compares the stores against (linearizability of one register
//! per object).
//!
//! Every write that may have taken effect is a candidate, alive until some acknowledged
//! write *started* after it could last have landed. For an acknowledged write that is when
//! it returned; for a write whose outcome its caller could not know (an error after the call
//! may have landed, a crash) it is later: an attempt of it may land until a straggler no
//! longer can. Writes that overlap in time may have landed in either order, so both stay
//! candidates. A write refused before HV changed (`Conflict`, `Fenced`, `GuardLost`) is
//! none. The object may read back as the value of any live candidate.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use tiersweep::model::ObjectPath;
use tiersweep::testing::invariants::Acceptable;
use tiersweep::writer::WriteError;

#[derive(Debug, Clone)]
struct Candidate {
    value: Option<Bytes>,
    /// The latest moment the write may have landed.
    until: Instant,
}

#[derive(Debug, Clone)]
pub struct History {
    candidates: BTreeMap<ObjectPath, Vec<Candidate>>,
    /// How long after its caller saw an error a write's attempt may still land.
    max_straggle: Duration,
}

/// How a write ended, as its caller saw it.
#[derive(Debug)]
pub enum WriteEnding {
    Returned(Result<(), WriteError>),
    /// The writer's process died during the write; any of its calls may have landed.
    Crashed,
}

impl History {
    /// Every object starts absent.
    pub fn new(objects: impl IntoIterator<Item = ObjectPath>, max_straggle: Duration) -> Self {
        let origin = Instant::now();
        Self {
            candidates: objects
                .into_iter()
                .map(|p| {
                    (
                        p,
                        vec![Candidate {
                            value: None,
                            until: origin,
                        }],
                    )
                })
                .collect(),
            max_straggle,
        }
    }

    /// The values each object may read back as now.
    pub fn acceptable(&self) -> BTreeMap<ObjectPath, Acceptable> {
        self.candidates
            .iter()
            .map(|(p, cs)| {
                let mut values: Acceptable = Vec::with_capacity(cs.len());
                for c in cs {
                    if !values.contains(&c.value) {
                        values.push(c.value.clone());
                    }
                }
                (p.clone(), values)
            })
            .collect()
    }

    /// Records a write of `value` to `path` that started at `start` and ended at `end`.
    /// Writes must be recorded in the order they ended.
    pub fn settle(
        &mut self,
        start: Instant,
        end: Instant,
        path: &ObjectPath,
        value: Option<Bytes>,
        ending: WriteEnding,
    ) {
        let Some(cs) = self.candidates.get_mut(path) else {
            return;
        };
        match ending {
            WriteEnding::Returned(Ok(())) => {
                // Whatever could last have landed before this write started is overwritten.
                cs.retain(|c| c.until >= start);
                cs.push(Candidate { value, until: end });
            }
            WriteEnding::Returned(Err(
                WriteError::Conflict { .. }
                | WriteError::Fenced { .. }
                | WriteError::GuardLost { .. },
            )) => {}
            WriteEnding::Returned(Err(_)) | WriteEnding::Crashed => cs.push(Candidate {
                value,
                until: end + self.max_straggle,
            }),
        }
    }
}
