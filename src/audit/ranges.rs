//! How an audit splits the bucket: contiguous name ranges that cover everything under its
//! prefix exactly once, so ranges can be listed in parallel, checkpointed and resumed by
//! index, and a failure confined to one.

use crate::lt::NameRange;

/// The characters range boundaries are drawn from, in byte order. Object paths usually
/// start with one of them; a name that starts with anything else still falls in exactly
/// one range, by byte order.
const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The most ranges [`split`] makes: one per character of its alphabet.
pub const MAX_RANGES: usize = ALPHABET.len();

/// `n` ranges (clamped to `1..=MAX_RANGES`) that partition the names under `prefix`: the
/// first is open below, the last open above, and each boundary is `prefix` followed by one
/// character of the alphabet.
pub fn split(prefix: &str, n: usize) -> Vec<NameRange> {
    let n = n.clamp(1, MAX_RANGES);
    let boundary = |i: usize| {
        let c = ALPHABET[i * ALPHABET.len() / n] as char;
        format!("{prefix}{c}")
    };
    (0..n)
        .map(|i| NameRange {
            prefix: prefix.to_owned(),
            start: (i > 0).then(|| boundary(i)),
            end: (i + 1 < n).then(|| boundary(i + 1)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_falls_in_exactly_one_range() {
        for n in [1, 2, 3, 7, 16, 62, 100] {
            let ranges = split("tenant/", n);
            assert_eq!(ranges.len(), n.min(MAX_RANGES));
            for name in [
                "tenant/",
                "tenant/0",
                "tenant/-x",
                "tenant/9/a",
                "tenant/A",
                "tenant/Zz",
                "tenant/_",
                "tenant/a",
                "tenant/m/x",
                "tenant/z",
                "tenant/~",
                "tenant/é",
            ] {
                let holding = ranges.iter().filter(|r| r.contains(name)).count();
                assert_eq!(holding, 1, "{name} with {n} ranges");
            }
            assert!(ranges.iter().all(|r| !r.contains("other/a")));
        }
    }

    #[test]
    fn ranges_are_contiguous_and_ordered() {
        let ranges = split("", 4);
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        assert_eq!(ranges[0].start, None);
        assert_eq!(ranges[3].end, None);
    }
}
