//! Maven versions, ordered as Maven's `ComparableVersion` orders them: the version is
//! split into items at `.`, at `-` (which opens a sub-list) and where digits meet
//! letters; numbers compare numerically; qualifiers in the order
//! `alpha < beta < milestone < rc < snapshot < "" (release) < sp`, then any other word
//! alphabetically; `a1`, `b1`, `m1` mean alpha, beta, milestone; `ga`, `final`,
//! `release` mean the release and `cr` means rc. Trailing zeros and release qualifiers
//! are dropped, so `1`, `1.0`, `1.0.0`, `1-ga` and `1.0-final` are equal.

use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Int(u128),
    Str(String),
    List(Vec<Item>),
}

/// The known qualifiers, in order; the empty one is the release.
const QUALIFIERS: [&str; 7] = ["alpha", "beta", "milestone", "rc", "snapshot", "", "sp"];

/// The sort key of a qualifier: its rank among the known ones, or after all of them in
/// alphabetical order.
fn qualifier_key(q: &str) -> (usize, &str) {
    match QUALIFIERS.iter().position(|k| *k == q) {
        Some(p) => (p, ""),
        None => (QUALIFIERS.len(), q),
    }
}

fn string_item(s: &str, followed_by_digit: bool) -> Item {
    let s = match s {
        "a" if followed_by_digit => "alpha",
        "b" if followed_by_digit => "beta",
        "m" if followed_by_digit => "milestone",
        "ga" | "final" | "release" => "",
        "cr" => "rc",
        other => other,
    };
    Item::Str(s.to_owned())
}

fn parse_item(digits: bool, s: &str) -> Item {
    if digits {
        // Numbers beyond u128 are rare enough to compare as the largest value.
        Item::Int(s.parse().unwrap_or(u128::MAX))
    } else {
        string_item(s, false)
    }
}

impl Item {
    fn is_null(&self) -> bool {
        match self {
            Item::Int(n) => *n == 0,
            Item::Str(s) => s.is_empty(),
            Item::List(l) => l.is_empty(),
        }
    }

    /// Compares with a missing item (the shorter version's end).
    fn cmp_null(&self) -> Ordering {
        match self {
            Item::Int(n) => n.cmp(&0),
            Item::Str(s) => qualifier_key(s).cmp(&qualifier_key("")),
            Item::List(l) => l.first().map_or(Ordering::Equal, Item::cmp_null),
        }
    }

    fn cmp_item(&self, other: Option<&Item>) -> Ordering {
        let Some(other) = other else {
            return self.cmp_null();
        };
        match (self, other) {
            (Item::Int(a), Item::Int(b)) => a.cmp(b),
            (Item::Int(_), _) => Ordering::Greater,
            (Item::Str(_), Item::Int(_)) => Ordering::Less,
            (Item::Str(a), Item::Str(b)) => qualifier_key(a).cmp(&qualifier_key(b)),
            (Item::Str(_), Item::List(_)) => Ordering::Less,
            (Item::List(_), Item::Int(_)) => Ordering::Less,
            (Item::List(_), Item::Str(_)) => Ordering::Greater,
            (Item::List(a), Item::List(b)) => list_cmp(a, b),
        }
    }
}

fn list_cmp(a: &[Item], b: &[Item]) -> Ordering {
    for i in 0..a.len().max(b.len()) {
        let r = match (a.get(i), b.get(i)) {
            (Some(x), y) => x.cmp_item(y),
            (None, Some(y)) => y.cmp_item(None).reverse(),
            (None, None) => Ordering::Equal,
        };
        if r != Ordering::Equal {
            return r;
        }
    }
    Ordering::Equal
}

/// Drops trailing null items of a list, stopping at the first non-null item that is
/// not a sub-list (Maven's `ListItem.normalize`).
fn normalize(list: &mut Vec<Item>) {
    for item in list.iter_mut() {
        if let Item::List(sub) = item {
            normalize(sub);
        }
    }
    let mut i = list.len();
    while i > 0 {
        i -= 1;
        if list[i].is_null() {
            list.remove(i);
        } else if !matches!(list[i], Item::List(_)) {
            break;
        }
    }
}

/// Parses a version into nested lists: a `-` and a change between digits and letters
/// open a sub-list inside the current one.
fn parse(version: &str) -> Vec<Item> {
    let v = version.trim().to_lowercase();
    // The path of open lists: each new sub-list is pushed and filled until the end.
    let mut stack: Vec<Vec<Item>> = vec![Vec::new()];
    let push = |stack: &mut Vec<Vec<Item>>, item: Item| {
        if let Some(top) = stack.last_mut() {
            top.push(item);
        }
    };
    let mut digits = false;
    let mut start = 0;
    let chars: Vec<(usize, char)> = v.char_indices().collect();
    for &(i, c) in &chars {
        if c == '.' || c == '-' {
            let item = if i == start {
                Item::Int(0)
            } else {
                parse_item(digits, &v[start..i])
            };
            push(&mut stack, item);
            start = i + 1;
            if c == '-' {
                stack.push(Vec::new());
            }
        } else if c.is_ascii_digit() {
            if !digits && i > start {
                push(&mut stack, string_item(&v[start..i], true));
                start = i;
                stack.push(Vec::new());
            }
            digits = true;
        } else {
            if digits && i > start {
                push(&mut stack, parse_item(true, &v[start..i]));
                start = i;
                stack.push(Vec::new());
            }
            digits = false;
        }
    }
    if v.len() > start {
        push(&mut stack, parse_item(digits, &v[start..]));
    }
    // Close the open sub-lists from the innermost out.
    while stack.len() > 1 {
        if let Some(mut inner) = stack.pop() {
            normalize(&mut inner);
            push(&mut stack, Item::List(inner));
        }
    }
    let mut top = stack.pop().unwrap_or_default();
    normalize(&mut top);
    top
}

/// Compares two Maven versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    list_cmp(&parse(a), &parse(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ascending(order: &[&str]) {
        for (i, a) in order.iter().enumerate() {
            for b in &order[i + 1..] {
                assert_eq!(compare(a, b), Ordering::Less, "{a} < {b}");
                assert_eq!(compare(b, a), Ordering::Greater, "{b} > {a}");
            }
        }
    }

    #[test]
    fn comparable_version_test_qualifiers() {
        // Maven's ComparableVersionTest.VERSIONS_QUALIFIER.
        ascending(&[
            "1-alpha2snapshot",
            "1-alpha2",
            "1-alpha-123",
            "1-beta-2",
            "1-beta123",
            "1-m2",
            "1-m11",
            "1-rc",
            "1-cr2",
            "1-rc123",
            "1-SNAPSHOT",
            "1",
            "1-sp",
            "1-sp2",
            "1-sp123",
            "1-abc",
            "1-def",
            "1-pom-1",
            "1-1-snapshot",
            "1-1",
            "1-2",
            "1-123",
        ]);
    }

    #[test]
    fn comparable_version_test_equal_spellings() {
        // Maven's ComparableVersionTest.testVersionsEqual, in part.
        for group in [
            &[
                "1",
                "1.0",
                "1.0.0",
                "1-0",
                "1.0-0",
                "1-ga",
                "1-final",
                "1-release",
                "1.0-ga",
            ][..],
            &[
                "1a1",
                "1-a1",
                "1.0-a1",
                "1-alpha-1",
                "1.0alpha1",
                "1-ALPHA1",
            ],
            &["1b2", "1-beta-2", "1.0-b2", "1.0beta2"],
            &["1m3", "1-milestone-3", "1.0-m3", "1.0milestone3"],
            &["1rc4", "1-rc-4", "1.0-cr4", "1.0cr4"],
            &["1x", "1.0x", "1-x"],
        ] {
            for v in group {
                assert_eq!(compare(group[0], v), Ordering::Equal, "{} == {v}", group[0]);
            }
        }
    }

    #[test]
    fn real_release_lines() {
        ascending(&[
            "2.0-beta9",
            "2.0-rc1",
            "2.0",
            "2.14.1",
            "2.15.0",
            "2.16.0",
            "2.17.1",
        ]);
        ascending(&["5.3.0-SNAPSHOT", "5.3.0", "5.3.0-sp1", "5.3.1"]);
    }
}
