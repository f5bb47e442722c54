//! Semantic versions (npm, crates.io, Go modules), ordered by the precedence rules of
//! SemVer 2.0.0 §11: major, minor and patch numerically; a pre-release before its
//! release; pre-release identifiers one by one, numbers numerically and below words;
//! build metadata ignored.
//!
//! It is lenient where the ecosystems are: a leading `v` (Go) or `=` (npm) is dropped
//! and a missing minor or patch counts as 0. Go pseudo-versions
//! (`v0.0.0-20231010123456-0123456789ab`) are SemVer pre-releases and need no special
//! case: their timestamps order them, and they sort before the release they precede.

use std::cmp::Ordering;

/// A pre-release identifier.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ident<'a> {
    Number(u64),
    Word(&'a str),
}

/// Compares two semantic versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ca, pa) = split(a);
    let (cb, pb) = split(b);
    ca.cmp(&cb)
        .then_with(|| match (pa.is_empty(), pb.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => pa.cmp(&pb),
        })
}

/// The numeric core (three numbers) and the pre-release identifiers.
fn split(v: &str) -> ([u64; 3], Vec<Ident<'_>>) {
    let v = v.trim().trim_start_matches(['v', 'V', '=']);
    let v = v.split_once('+').map_or(v, |(v, _build)| v);
    let (core, pre) = v.split_once('-').unwrap_or((v, ""));
    let mut numbers = [0; 3];
    for (slot, part) in numbers.iter_mut().zip(core.split('.')) {
        *slot = part.parse().unwrap_or(0);
    }
    let pre = if pre.is_empty() {
        Vec::new()
    } else {
        pre.split('.')
            .map(|id| match id.parse() {
                Ok(n) if id.bytes().all(|c| c.is_ascii_digit()) => Ident::Number(n),
                _ => Ident::Word(id),
            })
            .collect()
    };
    (numbers, pre)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_2_precedence_examples() {
        // SemVer 2.0.0 §11's two example chains.
        let chains: [&[&str]; 2] = [
            &["1.0.0", "2.0.0", "2.1.0", "2.1.1"],
            &[
                "1.0.0-alpha",
                "1.0.0-alpha.1",
                "1.0.0-alpha.beta",
                "1.0.0-beta",
                "1.0.0-beta.2",
                "1.0.0-beta.11",
                "1.0.0-rc.1",
                "1.0.0",
            ],
        ];
        for chain in chains {
            for w in chain.windows(2) {
                assert_eq!(compare(w[0], w[1]), Ordering::Less, "{} < {}", w[0], w[1]);
                assert_eq!(
                    compare(w[1], w[0]),
                    Ordering::Greater,
                    "{} > {}",
                    w[1],
                    w[0]
                );
            }
        }
        assert_eq!(compare("1.0.0+build.1", "1.0.0+build.2"), Ordering::Equal);
    }

    #[test]
    fn go_versions_with_a_v_and_pseudo_versions() {
        assert_eq!(compare("v0.17.0", "0.17.0"), Ordering::Equal);
        assert_eq!(compare("v0.9.0", "v0.17.0"), Ordering::Less);
        // A pseudo-version based on no tag sorts before v0.0.1, one after v0.16.0 between
        // v0.16.0 and v0.16.1; later commits sort later.
        assert_eq!(
            compare("v0.0.0-20231010123456-0123456789ab", "v0.0.1"),
            Ordering::Less
        );
        assert_eq!(
            compare("v0.16.1-0.20231010123456-0123456789ab", "v0.16.1"),
            Ordering::Less
        );
        assert_eq!(
            compare("v0.16.1-0.20231010123456-0123456789ab", "v0.16.0"),
            Ordering::Greater
        );
        assert_eq!(
            compare(
                "v0.0.0-20230101000000-aaaaaaaaaaaa",
                "v0.0.0-20231010123456-0123456789ab"
            ),
            Ordering::Less
        );
        assert_eq!(compare("v2.0.0+incompatible", "v2.0.0"), Ordering::Equal);
    }
}
