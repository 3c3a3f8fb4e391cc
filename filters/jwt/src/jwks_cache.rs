//! Each worker VM's view of a provider's keys: the inline set, or the last
//! good remote set read from shared data (parsed once per new version), plus
//! a negative cache of unknown `kid`s so a flood of random ones costs
//! neither a refetch nor a shared-data read each.

use crate::jwks::{Alg, KeySet};
use std::collections::HashMap;
use std::rc::Rc;

/// Most unknown `kid`s remembered; past this the memory is cleared (the
/// refetch interval still bounds the identity provider's load).
const MAX_NEGATIVE_KIDS: usize = 1024;

#[derive(Debug)]
pub struct ProviderKeys {
    /// The inline set; with a remote set too, it serves until one arrives.
    local: Option<Rc<KeySet>>,
    remote: Option<Rc<KeySet>>,
    /// Bumped whenever the keys in use change: cached tokens of older
    /// generations are ignored.
    pub generation: u64,
    /// Shared-data version of the remote set parsed last.
    seen_version: Option<u32>,
    negative_kids: HashMap<String, u64>,
    pub allowed: Vec<Alg>,
}

impl ProviderKeys {
    pub fn new(local: Option<KeySet>, allowed: Vec<Alg>) -> ProviderKeys {
        ProviderKeys {
            local: local.map(Rc::new),
            remote: None,
            generation: 1,
            seen_version: None,
            negative_kids: HashMap::new(),
            allowed,
        }
    }

    /// The keys in use: the last good remote set, else the inline one.
    pub fn current(&self) -> Option<Rc<KeySet>> {
        self.remote.clone().or_else(|| self.local.clone())
    }

    pub fn has_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Adopts a remote set published under shared-data `version` (or
    /// fetched by this VM: `None`). A version already adopted is not parsed again.
    pub fn adopt(&mut self, body: &[u8], version: Option<u32>) -> Result<(), String> {
        if version.is_some() && version == self.seen_version {
            return Ok(());
        }
        let set = KeySet::from_bytes(body, &self.allowed)?;
        self.remote = Some(Rc::new(set));
        self.seen_version = version;
        self.generation += 1;
        self.negative_kids.clear();
        Ok(())
    }

    /// Records the shared-data version of the set this VM just adopted and
    /// published, so its next sync does not parse it again.
    pub fn mark_version(&mut self, version: Option<u32>) {
        self.seen_version = version;
    }

    /// Whether this version is the one already in use.
    pub fn is_current_version(&self, version: Option<u32>) -> bool {
        version.is_some() && version == self.seen_version
    }

    pub fn is_negative(&self, kid: &str, now_ns: u64) -> bool {
        self.negative_kids
            .get(kid)
            .is_some_and(|until| now_ns < *until)
    }

    pub fn remember_unknown(&mut self, kid: &str, until_ns: u64) {
        if self.negative_kids.len() >= MAX_NEGATIVE_KIDS {
            self.negative_kids.clear();
        }
        self.negative_kids.insert(kid.to_string(), until_ns);
    }
}
