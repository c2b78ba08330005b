//! A set of small indexes, one bit each: which digests a phase has seen,
//! which of a plan's deletions to look at again.

#[derive(Debug, Default, Clone)]
pub struct Bits {
    words: Vec<u64>,
}

impl Bits {
    /// Room for indexes below `n` without growing.
    pub fn with_len(n: usize) -> Self {
        Bits {
            words: vec![0; n.div_ceil(64)],
        }
    }

    /// Adds `i` (growing to hold it); returns whether it was new.
    pub fn insert(&mut self, i: usize) -> bool {
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let new = self.words[w] & bit == 0;
        self.words[w] |= bit;
        new
    }

    /// Takes `i` out; returns whether it was in.
    pub fn remove(&mut self, i: usize) -> bool {
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        let Some(word) = self.words.get_mut(w) else {
            return false;
        };
        let was = *word & bit != 0;
        *word &= !bit;
        was
    }

    pub fn contains(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Keeps the elements of `v` whose index is in the set.
    pub fn retain_in<T>(&self, v: &mut Vec<T>) {
        let mut i = 0;
        v.retain(|_| {
            i += 1;
            self.contains(i - 1)
        });
    }

    /// The indexes in the set, in increasing order, without a list of them.
    pub fn into_indexes(self) -> impl Iterator<Item = usize> {
        self.words
            .into_iter()
            .enumerate()
            .flat_map(|(w, mut word)| {
                std::iter::from_fn(move || {
                    let bit = (word != 0).then(|| word.trailing_zeros() as usize)?;
                    word &= word - 1;
                    Some(w * 64 + bit)
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_finds_and_lists_in_order() {
        let mut s = Bits::with_len(10);
        assert!(s.insert(3));
        assert!(!s.insert(3));
        assert!(s.insert(700));
        assert!(s.insert(63) && s.insert(64) && s.insert(0));
        assert!(s.contains(3) && s.contains(700) && !s.contains(4) && !s.contains(100_000));
        assert!(s.insert(5) && s.remove(5) && !s.contains(5));
        assert!(!s.remove(5) && !s.remove(100_000));
        assert_eq!(
            s.into_indexes().collect::<Vec<_>>(),
            vec![0, 3, 63, 64, 700]
        );
        assert_eq!(Bits::default().into_indexes().count(), 0);
    }
}
