//! An engine-agnostic, owned batch of modifications.

use crate::CfName;

/// One modification of the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modify {
    /// Sets `key` to `value` in `cf`.
    Put {
        /// Column family.
        cf: CfName,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Removes `key` from `cf`.
    Delete {
        /// Column family.
        cf: CfName,
        /// Key.
        key: Vec<u8>,
    },
    /// Removes every key in `[start, end)` of `cf`.
    DeleteRange {
        /// Column family.
        cf: CfName,
        /// Inclusive start.
        start: Vec<u8>,
        /// Exclusive end.
        end: Vec<u8>,
    },
}

impl Modify {
    /// Column family this modification touches.
    pub fn cf(&self) -> CfName {
        match self {
            Modify::Put { cf, .. } | Modify::Delete { cf, .. } | Modify::DeleteRange { cf, .. } => {
                cf
            }
        }
    }

    /// Bytes of keys and values carried.
    pub fn size_bytes(&self) -> usize {
        match self {
            Modify::Put { key, value, .. } => key.len() + value.len(),
            Modify::Delete { key, .. } => key.len(),
            Modify::DeleteRange { start, end, .. } => start.len() + end.len(),
        }
    }
}

/// Modifications applied in order, atomically, by [`crate::KvEngine::write`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    modifies: Vec<Modify>,
    data_size_bytes: usize,
}

impl WriteBatch {
    /// An empty batch with room for `cap` modifications.
    pub fn with_capacity(cap: usize) -> Self {
        WriteBatch {
            modifies: Vec::with_capacity(cap),
            data_size_bytes: 0,
        }
    }

    /// Appends one modification.
    pub fn push(&mut self, modify: Modify) {
        self.data_size_bytes += modify.size_bytes();
        self.modifies.push(modify);
    }

    /// Sets `key` to `value` in `cf`.
    pub fn put_cf(&mut self, cf: CfName, key: &[u8], value: &[u8]) {
        self.push(Modify::Put {
            cf,
            key: key.to_vec(),
            value: value.to_vec(),
        });
    }

    /// Removes `key` from `cf`.
    pub fn delete_cf(&mut self, cf: CfName, key: &[u8]) {
        self.push(Modify::Delete {
            cf,
            key: key.to_vec(),
        });
    }

    /// Removes every key in `[start, end)` of `cf`.
    pub fn delete_range_cf(&mut self, cf: CfName, start: &[u8], end: &[u8]) {
        self.push(Modify::DeleteRange {
            cf,
            start: start.to_vec(),
            end: end.to_vec(),
        });
    }

    /// Whether the batch holds no modification.
    pub fn is_empty(&self) -> bool {
        self.modifies.is_empty()
    }

    /// Number of modifications.
    pub fn count(&self) -> usize {
        self.modifies.len()
    }

    /// Bytes of keys and values in the batch.
    pub fn data_size(&self) -> usize {
        self.data_size_bytes
    }

    /// Removes every modification, keeping the allocation.
    pub fn clear(&mut self) {
        self.modifies.clear();
        self.data_size_bytes = 0;
    }

    /// The modifications, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Modify> {
        self.modifies.iter()
    }

    /// Moves every modification of `other` to the end of this batch, leaving `other` empty.
    pub fn append(&mut self, other: &mut WriteBatch) {
        self.data_size_bytes += other.data_size_bytes;
        self.modifies.append(&mut other.modifies);
        other.clear();
    }

    /// Consumes the batch into its modifications.
    pub fn into_modifies(self) -> Vec<Modify> {
        self.modifies
    }
}

impl Extend<Modify> for WriteBatch {
    fn extend<I: IntoIterator<Item = Modify>>(&mut self, iter: I) {
        for modify in iter {
            self.push(modify);
        }
    }
}

impl<'a> IntoIterator for &'a WriteBatch {
    type Item = &'a Modify;
    type IntoIter = std::slice::Iter<'a, Modify>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CF_DEFAULT, CF_LOCK};

    #[test]
    fn accounting() {
        let mut wb = WriteBatch::default();
        assert!(wb.is_empty());
        wb.put_cf(CF_DEFAULT, b"k1", b"value");
        wb.delete_cf(CF_LOCK, b"k2");
        wb.delete_range_cf(CF_DEFAULT, b"a", b"b");
        assert_eq!((wb.count(), wb.data_size()), (3, 7 + 2 + 2));
        let mut other = WriteBatch::default();
        other.put_cf(CF_LOCK, b"x", b"y");
        wb.append(&mut other);
        assert!(other.is_empty() && other.data_size() == 0);
        assert_eq!((wb.count(), wb.data_size()), (4, 13));
        assert_eq!(wb.iter().last().unwrap().cf(), CF_LOCK);
        let modifies = wb.clone().into_modifies();
        let mut rebuilt = WriteBatch::default();
        rebuilt.extend(modifies);
        assert_eq!(rebuilt, wb);
        wb.clear();
        assert!(wb.is_empty() && wb.data_size() == 0);
    }
}
