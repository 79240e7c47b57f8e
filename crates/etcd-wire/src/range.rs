//! Key-range arithmetic shared by KV, Watch and the recipes.

use bytes::Bytes;

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
