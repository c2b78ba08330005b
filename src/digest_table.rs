//! Every digest the listing saw, stored once. The inventory, the manifests'
//! references and the plan refer to digests by a 4-byte id into this table, so
//! that a link costs 8 bytes instead of a 32-byte digest in a hash map: memory is
//! the budget of a collector that holds a whole registry's keys.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::bits::Bits;
use crate::digest::Digest;

/// An index into the `DigestTable`.
pub type DigestId = u32;

#[derive(Default)]
pub struct DigestTable {
    digests: Vec<Digest>,
    index: HashTable<DigestId>,
    /// Keyed (SipHash): digests come from users, and a hash on raw digest bytes
    /// could be made to collide cheaply in its low bits.
    hasher: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for DigestTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestTable")
            .field("len", &self.digests.len())
            .finish()
    }
}

impl DigestTable {
    /// The id of `d`, adding it if it is new.
    pub fn intern(&mut self, d: Digest) -> DigestId {
        let hash = self.hasher.hash_one(d);
        let digests = &self.digests;
        if let Some(id) = self.index.find(hash, |&id| digests[id as usize] == d) {
            return *id;
        }
        let id = DigestId::try_from(self.digests.len()).expect("fewer than 4 billion digests");
        self.digests.push(d);
        let (digests, hasher) = (&self.digests, &self.hasher);
        self.index
            .insert_unique(hash, id, |&id| hasher.hash_one(digests[id as usize]));
        id
    }

    /// The id of `d`, if the listing saw it.
    pub fn find(&self, d: &Digest) -> Option<DigestId> {
        let hash = self.hasher.hash_one(d);
        self.index
            .find(hash, |&id| self.digests[id as usize] == *d)
            .copied()
    }

    pub fn get(&self, id: DigestId) -> &Digest {
        &self.digests[id as usize]
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    pub fn shrink_to_fit(&mut self) {
        self.digests.shrink_to_fit();
        let (digests, hasher) = (&self.digests, &self.hasher);
        self.index
            .shrink_to_fit(|&id| hasher.hash_one(digests[id as usize]));
    }
}

/// One bit per digest id.
#[derive(Debug, Default, Clone)]
pub struct DigestSet(Bits);

impl DigestSet {
    pub fn with_len(n: usize) -> Self {
        DigestSet(Bits::with_len(n))
    }

    /// Adds `id`; returns whether it was new.
    pub fn insert(&mut self, id: DigestId) -> bool {
        self.0.insert(id as usize)
    }

    /// Takes `id` out; returns whether it was in.
    pub fn remove(&mut self, id: DigestId) -> bool {
        self.0.remove(id as usize)
    }

    pub fn contains(&self, id: DigestId) -> bool {
        self.0.contains(id as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::from_bytes([n; 32])
    }

    #[test]
    fn interns_once_and_finds() {
        let mut t = DigestTable::default();
        let a = t.intern(d(1));
        let b = t.intern(d(2));
        assert_ne!(a, b);
        assert_eq!(t.intern(d(1)), a);
        assert_eq!(t.find(&d(2)), Some(b));
        assert_eq!(t.find(&d(3)), None);
        assert_eq!(t.get(b), &d(2));
        assert_eq!(t.len(), 2);
        for n in 0..=255 {
            t.intern(d(n));
        }
        assert_eq!(t.len(), 256);
        assert_eq!(t.find(&d(1)), Some(a));
    }

    #[test]
    fn bitset() {
        let mut s = DigestSet::with_len(10);
        assert!(s.insert(3));
        assert!(!s.insert(3));
        assert!(s.insert(700));
        assert!(s.contains(3) && s.contains(700) && !s.contains(4) && !s.contains(100_000));
    }
}
