//! Python package versions, ordered as PEP 440 says (and as the `packaging` library
//! implements it): `[N!]N(.N)*[{a|b|rc}N][.postN][.devN][+local]`, with the spellings
//! PEP 440 normalizes (`alpha`, `c`, `pre`, `preview`, `-N` for a post release, `_` and
//! `-` as separators, a leading `v`, any letter case).

use std::cmp::Ordering;

/// A parsed PEP 440 version, in the fields that order it.
#[derive(Debug, PartialEq, Eq)]
struct Version {
    epoch: u64,
    /// The release numbers without trailing zeros (`1.0` equals `1`).
    release: Vec<u64>,
    /// Pre-release phase (0 alpha, 1 beta, 2 rc) and number.
    pre: Option<(u8, u64)>,
    post: Option<u64>,
    dev: Option<u64>,
    local: Vec<Local>,
}

/// A segment of a local version: numbers sort after words and between themselves
/// numerically.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Local {
    Word(String),
    Number(u64),
}

/// Compares two Python versions; a version that does not parse sorts as a string
/// after every valid one (so it never falls inside a range by accident).
pub fn compare(a: &str, b: &str) -> Ordering {
    match (parse(a), parse(b)) {
        (Some(a), Some(b)) => key_cmp(&a, &b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// Orders by `packaging`'s comparison key: a dev release without pre or post release
/// sorts before every pre-release of its release; no pre-release sorts after any;
/// no post release before any; no dev release after any; no local part before any.
fn key_cmp(a: &Version, b: &Version) -> Ordering {
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    enum Pre {
        BeforeAll,
        Phase(u8, u64),
        Release,
    }
    let pre = |v: &Version| match (v.pre, v.post, v.dev) {
        (None, None, Some(_)) => Pre::BeforeAll,
        (Some((p, n)), _, _) => Pre::Phase(p, n),
        (None, _, _) => Pre::Release,
    };
    // `None` sorts before `Some` for the post release, after it for the dev release.
    let dev = |v: &Version| v.dev.map_or((1, 0), |d| (0, d));
    a.epoch
        .cmp(&b.epoch)
        .then_with(|| a.release.cmp(&b.release))
        .then_with(|| pre(a).cmp(&pre(b)))
        .then_with(|| a.post.cmp(&b.post))
        .then_with(|| dev(a).cmp(&dev(b)))
        .then_with(|| a.local.cmp(&b.local))
}

/// Splits off a leading run of ASCII digits as a number.
fn number(s: &str) -> (Option<u64>, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 {
        return (None, s);
    }
    (s[..end].parse().ok(), &s[end..])
}

/// Strips one optional separator (`.`, `-`, `_`).
fn sep(s: &str) -> &str {
    s.strip_prefix(['.', '-', '_']).unwrap_or(s)
}

fn parse(v: &str) -> Option<Version> {
    let lower = v.trim().to_ascii_lowercase();
    let mut s = lower.strip_prefix('v').unwrap_or(&lower);
    let (public, local) = match s.split_once('+') {
        Some((p, l)) => (p, Some(l)),
        None => (s, None),
    };
    s = public;
    let mut epoch = 0;
    if let Some((e, rest)) = s.split_once('!') {
        epoch = e.parse().ok()?;
        s = rest;
    }
    let mut release = Vec::new();
    loop {
        let (n, rest) = number(s);
        release.push(n?);
        s = rest;
        match s.strip_prefix('.') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => s = rest,
            _ => break,
        }
    }
    while release.last() == Some(&0) {
        release.pop();
    }
    let mut pre = None;
    let t = sep(s);
    for (spelling, phase) in [
        ("alpha", 0),
        ("a", 0),
        ("beta", 1),
        ("b", 1),
        ("preview", 2),
        ("pre", 2),
        ("rc", 2),
        ("c", 2),
    ] {
        if let Some(rest) = t.strip_prefix(spelling) {
            // The number is optional (`1.0a` is `1.0a0`); a separator without one is not
            // consumed, so it can introduce the post or dev release.
            let (n, rest2) = number(sep(rest));
            pre = Some((phase, n.unwrap_or(0)));
            s = if n.is_some() { rest2 } else { rest };
            break;
        }
    }
    let mut post = None;
    if let Some(rest) = s
        .strip_prefix('-')
        .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    {
        let (n, rest) = number(rest);
        post = n;
        s = rest;
    } else {
        let t = sep(s);
        for spelling in ["post", "rev", "r"] {
            if let Some(rest) = t.strip_prefix(spelling) {
                let (n, rest2) = number(sep(rest));
                post = Some(n.unwrap_or(0));
                s = if n.is_some() { rest2 } else { rest };
                break;
            }
        }
    }
    let mut dev = None;
    if let Some(rest) = sep(s).strip_prefix("dev") {
        let (n, rest2) = number(sep(rest));
        dev = Some(n.unwrap_or(0));
        s = if n.is_some() { rest2 } else { rest };
    }
    if !s.is_empty() {
        return None;
    }
    let local = match local {
        None => Vec::new(),
        Some("") => return None,
        Some(l) => l
            .split(['.', '-', '_'])
            .map(|part| match part.parse() {
                Ok(n) if part.bytes().all(|c| c.is_ascii_digit()) => Some(Local::Number(n)),
                _ if !part.is_empty() && part.bytes().all(|c| c.is_ascii_alphanumeric()) => {
                    Some(Local::Word(part.to_owned()))
                }
                _ => None,
            })
            .collect::<Option<_>>()?,
    };
    Some(Version {
        epoch,
        release,
        pre,
        post,
        dev,
        local,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pep_440_summary_of_permitted_suffixes_and_relative_ordering() {
        // The example list of PEP 440's "Summary of permitted suffixes and relative
        // ordering", with the local versions of `packaging`'s documentation.
        let order = [
            "1.dev0",
            "1.0.dev456",
            "1.0a1",
            "1.0a2.dev456",
            "1.0a12.dev456",
            "1.0a12",
            "1.0b1.dev456",
            "1.0b2",
            "1.0b2.post345.dev456",
            "1.0b2.post345",
            "1.0rc1.dev456",
            "1.0rc1",
            "1.0",
            "1.0+abc.5",
            "1.0+abc.7",
            "1.0+5",
            "1.0.post456.dev34",
            "1.0.post456",
            "1.0.15",
            "1.1.dev1",
        ];
        for w in order.windows(2) {
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

    #[test]
    fn epochs_and_normalized_spellings() {
        assert_eq!(compare("1!1.0", "2.0"), Ordering::Greater);
        assert_eq!(compare("1.0", "1.0.0"), Ordering::Equal);
        for (a, b) in [
            ("1.0alpha1", "1.0a1"),
            ("1.0-beta.2", "1.0b2"),
            ("1.0c1", "1.0rc1"),
            ("1.0-pre1", "1.0rc1"),
            ("1.0-1", "1.0.post1"),
            ("1.0.rev1", "1.0.post1"),
            ("1.0a", "1.0a0"),
            ("v1.0", "1.0"),
            ("1.0-DEV", "1.0.dev0"),
        ] {
            assert_eq!(compare(a, b), Ordering::Equal, "{a} == {b}");
        }
        assert_eq!(compare("2.31.0", "2.32.0"), Ordering::Less);
    }

    #[test]
    fn an_invalid_version_sorts_after_every_valid_one() {
        assert_eq!(compare("not a version", "99"), Ordering::Greater);
    }
}
