//! Key-range arithmetic shared by KV, Watch and the recipes.

use bytes::Bytes;

use crate::error::{Error, Result};

/// The keys a request covers beyond its key (shared by get, delete and watch options).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum KeyRange {
    /// Just the key.
    #[default]
    Key,
    /// Every key starting with the key.
    Prefix,
    /// Every key from the key on.
    FromKey,
    /// Keys in `[key, end)`.
    End(Bytes),
}

impl KeyRange {
    /// The request's `range_end` for `key`, or why the pair makes no sense: an empty key alone
    /// (etcd rejects it), or an end that does not sort after the key (an empty range).
    pub(crate) fn end(&self, key: &[u8]) -> Result<Bytes> {
        match self {
            KeyRange::Key if key.is_empty() => Err(Error::invalid("empty key")),
            KeyRange::Key => Ok(Bytes::new()),
            KeyRange::Prefix => Ok(prefix_range_end(key)),
            KeyRange::FromKey => Ok(Bytes::from_static(&[0])),
            KeyRange::End(end) if !end.is_empty() && end[..] != [0] && end[..] <= *key => {
                Err(Error::invalid("range end must sort after the key"))
            }
            KeyRange::End(end) => Ok(end.clone()),
        }
    }
}

/// The smallest key greater than every key that starts with `prefix`: the `range_end` that makes
/// a request cover exactly the keys under `prefix`. Increments the last byte below `0xff`, dropping
/// trailing `0xff`s; for an empty or all-`0xff` prefix it is `"\0"`, which etcd reads as "to the
/// end of the keyspace".
pub fn prefix_range_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(&[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn key_ranges_validate() {
        assert!(KeyRange::Key.end(b"").is_err());
        assert_eq!(KeyRange::Key.end(b"k").ok(), Some(Bytes::new()));
        assert_eq!(KeyRange::Prefix.end(b"").ok(), Some(Bytes::from_static(b"\0")));
        assert!(KeyRange::End(Bytes::from_static(b"a")).end(b"b").is_err());
        assert_eq!(KeyRange::End(Bytes::from_static(b"c")).end(b"b").ok(), Some(Bytes::from_static(b"c")));
    }

    #[test]
    fn examples() {
        assert_eq!(prefix_range_end(b"abc"), "abd");
        assert_eq!(prefix_range_end(b"a\xff"), "b");
        assert_eq!(prefix_range_end(b"\xff\xff"), "\0");
        assert_eq!(prefix_range_end(b""), "\0");
    }

    proptest! {
        /// Every key under the prefix sorts below the end, and the end itself is not under it.
        #[test]
        fn covers_exactly_the_prefix(prefix in proptest::collection::vec(any::<u8>(), 1..6),
                                     suffix in proptest::collection::vec(any::<u8>(), 0..6)) {
            let end = prefix_range_end(&prefix);
            let mut key = prefix.clone();
            key.extend(&suffix);
            if end[..] != [0] {
                prop_assert!(key.as_slice() < &end[..]);
                prop_assert!(!end.starts_with(&prefix));
                prop_assert!(prefix.as_slice() < &end[..]);
            }
        }
    }
}
