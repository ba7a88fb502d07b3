//! The set of step kinds an engine run knows, handed in by the binary so that the loader and the
//! runner find kinds by name without importing any.

use super::Step;

/// Every step kind of one program, in the order `msae kinds` lists them.
#[derive(Clone, Copy)]
pub struct Registry {
    kinds: &'static [&'static dyn Step],
}

impl Registry {
    pub const fn new(kinds: &'static [&'static dyn Step]) -> Self {
        Registry { kinds }
    }

    /// The kinds, in their listed order.
    pub fn kinds(&self) -> &'static [&'static dyn Step] {
        self.kinds
    }

    /// The kind named `kind = "…"` in an experiment file.
    pub fn find(&self, kind: &str) -> Option<&'static dyn Step> {
        self.kinds.iter().copied().find(|s| s.kind() == kind)
    }

    /// Every kind's name, for "unknown kind" messages.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|s| s.kind()).collect()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}
