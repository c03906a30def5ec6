//! [`Update`] and [`Discovered`]: what a discovery answer changes in the endpoint set. The
//! difference between two answers is computed by [`Discovered`] — linear in their sizes, and
//! apart from the [`Balancer`](super::Balancer), so that an adapter computes it outside
//! whatever lock guards the balancer, which then applies only the difference
//! ([`Balancer::apply`](super::Balancer::apply)), in parts if it is large.

use std::collections::HashSet;

use super::endpoint::Endpoint;

/// What a discovery update changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// Endpoints that were not in the set (in the order discovery gave them).
    pub added: Vec<Endpoint>,
    /// Endpoints that are no longer (their connections may be closed once idle).
    pub removed: Vec<Endpoint>,
}

impl Update {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// The endpoints of discovery's last answer, to tell what its next answer changes.
#[derive(Debug, Clone, Default)]
pub struct Discovered {
    /// The answer, without duplicates, in its order.
    order: Vec<Endpoint>,
    members: HashSet<Endpoint>,
}

impl Discovered {
    /// No answer yet: the first one adds all its endpoints.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the last answer with `answer` (duplicates dropped) and says what changed, in
    /// time linear in the sizes of both.
    pub fn replace(&mut self, answer: impl IntoIterator<Item = Endpoint>) -> Update {
        let mut order = Vec::new();
        let mut members = HashSet::new();
        for e in answer {
            if !members.contains(&e) {
                members.insert(e.clone());
                order.push(e);
            }
        }
        let added = order
            .iter()
            .filter(|e| !self.members.contains(*e))
            .cloned()
            .collect();
        let removed = self
            .order
            .iter()
            .filter(|e| !members.contains(*e))
            .cloned()
            .collect();
        self.order = order;
        self.members = members;
        Update { added, removed }
    }

    /// The endpoints of the last answer.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.order
    }

    /// Whether `endpoint` was in the last answer.
    pub fn contains(&self, endpoint: &Endpoint) -> bool {
        self.members.contains(endpoint)
    }
}
