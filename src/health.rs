//! What is wrong with this node right now, as its components report it.
//!
//! Owns: one list of current problems (a name per component, a message an operator can act
//! on), read by `/readyz` (503 while any is present), `/status` and the metrics.
//! Does not: decide anything; a component sets its problem and clears it when it recovers,
//! and logs the change once.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// The component that reports a data directory too full to apply entries (the state machine).
pub const DISK: &str = "disk";
/// The component that reports a Raft log that cannot be written (its writer thread).
pub const RAFT_LOG: &str = "raft-log";

/// The node's current problems.
#[derive(Debug, Default)]
pub struct Health {
    problems: Mutex<BTreeMap<&'static str, String>>,
}

impl Health {
    /// Records (or updates) `component`'s problem; logs it when it is new.
    pub fn set(&self, component: &'static str, problem: impl Into<String>) {
        let problem = problem.into();
        let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if p.get(component) != Some(&problem) {
            tracing::error!(component, problem = %problem, "node unhealthy");
            p.insert(component, problem);
        }
    }

    /// `component` recovered.
    pub fn clear(&self, component: &'static str) {
        let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if p.remove(component).is_some() {
            tracing::warn!(component, "node recovered");
        }
    }

    /// Every current problem, `component: message`.
    pub fn problems(&self) -> Vec<String> {
        self.problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(c, m)| format!("{c}: {m}"))
            .collect()
    }

    pub fn is_healthy(&self) -> bool {
        self.problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}
