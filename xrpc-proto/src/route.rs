//! Method routing: which handler serves a method name, and for which kind of call.
//!
//! The table holds whatever the adapter runs as a handler (`H`); the
//! [`ServerSession`](crate::ServerSession) consults it through [`Routes`] and answers unknown
//! methods, calls of the wrong kind, foreign codecs and calls whose [`Signature`] differs from
//! the method's itself.

use std::collections::HashMap;

use crate::client::CallKind;
use crate::idmap::IdHashState;
use crate::metadata::Signature;

/// Looks up the handler of a method.
pub trait Routes {
    /// What the adapter runs for a call.
    type Handler;

    /// The handler of `method` and the kind of call it serves, if one is registered.
    fn route(&self, method: &str) -> Option<(CallKind, Self::Handler)>;

    /// The signature registered for `method`, if any: a call that carries another
    /// fingerprint is refused with `ErrorCode::TypeMismatch`.
    fn signature(&self, method: &str) -> Option<Signature> {
        let _ = method;
        None
    }
}

/// A table of methods: name → (call kind, handler).
#[derive(Debug, Clone)]
pub struct MethodTable<H> {
    /// Looked up by names a peer sends; only registered names are stored, so a fast keyed hash
    /// is enough.
    methods: HashMap<String, (CallKind, H), IdHashState>,
    /// The signatures set for methods (kept apart: most tables have none).
    signatures: HashMap<String, Signature, IdHashState>,
}

impl<H> Default for MethodTable<H> {
    fn default() -> Self {
        Self {
            methods: HashMap::with_hasher(IdHashState::new()),
            signatures: HashMap::with_hasher(IdHashState::new()),
        }
    }
}

impl<H> MethodTable<H> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) `method`.
    pub fn insert(&mut self, method: impl Into<String>, kind: CallKind, handler: H) {
        self.methods.insert(method.into(), (kind, handler));
    }

    /// Removes `method` (and its signature); returns whether it was registered.
    pub fn remove(&mut self, method: &str) -> bool {
        self.signatures.remove(method);
        self.methods.remove(method).is_some()
    }

    /// Sets the signature of `method` (registered or to be registered): calls that carry
    /// another fingerprint are refused.
    pub fn set_signature(&mut self, method: impl Into<String>, signature: Signature) {
        self.signatures.insert(method.into(), signature);
    }

    /// The registered method names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.methods.keys().map(String::as_str)
    }

    /// The registered methods with their kinds and signatures, sorted by name, as the
    /// introspection method [`METHODS`](crate::introspect::METHODS) answers them.
    pub fn infos(&self) -> Vec<crate::introspect::MethodInfo> {
        let mut v: Vec<_> = self
            .methods
            .iter()
            .map(|(name, (kind, _))| crate::introspect::MethodInfo {
                name: name.clone(),
                kind: crate::server_session::kind_label(*kind).to_owned(),
                signature: self.signatures.get(name).map(|s| s.text.to_owned()),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The registered methods and their handlers.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &H)> {
        self.methods.iter().map(|(n, (_, h))| (n.as_str(), h))
    }

    /// How many methods are registered.
    pub fn len(&self) -> usize {
        self.methods.len()
    }

    /// Whether no method is registered.
    pub fn is_empty(&self) -> bool {
        self.methods.is_empty()
    }
}

impl<H: Clone> Routes for MethodTable<H> {
    type Handler = H;

    fn route(&self, method: &str) -> Option<(CallKind, H)> {
        self.methods.get(method).map(|(k, h)| (*k, h.clone()))
    }

    fn signature(&self, method: &str) -> Option<Signature> {
        if self.signatures.is_empty() {
            return None;
        }
        self.signatures.get(method).copied()
    }
}

impl<R: Routes + ?Sized> Routes for &R {
    type Handler = R::Handler;

    fn route(&self, method: &str) -> Option<(CallKind, R::Handler)> {
        (**self).route(method)
    }

    fn signature(&self, method: &str) -> Option<crate::Signature> {
        (**self).signature(method)
    }
}
