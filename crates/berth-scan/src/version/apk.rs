//! Alpine package versions, ordered as apk-tools (2.14 and 3) orders them:
//! `digit{.digit}...{letter}{_suffix{number}}...{~hash}{-rN}`. Suffixes `_alpha`,
//! `_beta`, `_pre`, `_rc` sort before the plain release, `_cvs`, `_svn`, `_git`, `_hg`,
//! `_p` after it; the revision `-rN` sorts after the release and before any suffix or
//! letter (`1.0 < 1.0-r1 < 1.0_p1 < 1.0a < 1.0.1`).
//!
//! A version is read as a stream of typed tokens and two versions compare token by
//! token. When one version ends or goes on with a different kind of token, the one
//! that goes on is newer, unless what follows is a pre-release suffix; the order of the
//! token kinds ([`Kind`]) decides between a letter, a suffix and a revision. A number
//! with a leading zero after the first compares as a string (`1.01 < 1.1`), as in
//! Gentoo's rules apk follows.

use std::cmp::Ordering;

/// Token kinds, in the order that decides which version is newer when two versions
/// diverge in kind: a *lower* kind where the other has a higher one is the newer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    InitialDigit,
    Digit,
    Letter,
    Suffix,
    SuffixNo,
    CommitHash,
    RevisionNo,
    End,
    Invalid,
}

/// Suffixes in order; `""` is the plain release, which no suffix spells.
const SUFFIXES: [&str; 10] = [
    "alpha", "beta", "pre", "rc", "", "cvs", "svn", "git", "hg", "p",
];
/// The rank of the plain release among [`SUFFIXES`].
const RELEASE: usize = 4;

/// One token: its kind and its text (digits, a letter, a suffix word, a hash).
#[derive(Clone, Copy, Debug)]
struct Token<'a> {
    kind: Kind,
    text: &'a str,
}

impl Token<'_> {
    fn suffix_rank(&self) -> usize {
        SUFFIXES
            .iter()
            .position(|s| !s.is_empty() && *s == self.text)
            .unwrap_or(RELEASE)
    }

    fn number(&self) -> u128 {
        // Longer numbers than u128 holds compare as the largest.
        self.text.parse().unwrap_or(u128::MAX)
    }

    /// Compares two tokens of the same kind.
    fn cmp_same_kind(&self, other: &Token<'_>) -> Ordering {
        match self.kind {
            Kind::Digit if self.text.starts_with('0') || other.text.starts_with('0') => {
                self.text.cmp(other.text)
            }
            Kind::InitialDigit | Kind::Digit | Kind::SuffixNo | Kind::RevisionNo => {
                self.number().cmp(&other.number())
            }
            Kind::Suffix => self.suffix_rank().cmp(&other.suffix_rank()),
            Kind::Letter | Kind::CommitHash | Kind::End | Kind::Invalid => {
                self.text.cmp(other.text)
            }
        }
    }
}

/// Reads a version token by token.
struct Reader<'a> {
    rest: &'a str,
    prev: Kind,
}

impl<'a> Reader<'a> {
    fn new(v: &'a str) -> Self {
        Reader {
            rest: v,
            prev: Kind::InitialDigit,
        }
    }

    /// Splits off the longest prefix whose bytes satisfy `f`.
    fn span(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let end = self
            .rest
            .bytes()
            .position(|c| !f(c))
            .unwrap_or(self.rest.len());
        let (head, tail) = self.rest.split_at(end);
        self.rest = tail;
        head
    }

    fn token(&mut self, kind: Kind, text: &'a str) -> Token<'a> {
        let kind = if text.is_empty() { Kind::Invalid } else { kind };
        self.prev = kind;
        Token { kind, text }
    }

    fn invalid(&mut self) -> Token<'a> {
        self.prev = Kind::Invalid;
        Token {
            kind: Kind::Invalid,
            text: "",
        }
    }

    fn first(&mut self) -> Token<'a> {
        let digits = self.span(|c| c.is_ascii_digit());
        self.token(Kind::InitialDigit, digits)
    }

    /// The next token; each kind may only follow certain others.
    fn next(&mut self) -> Token<'a> {
        let prev = self.prev;
        let Some(c) = self.rest.bytes().next() else {
            self.prev = Kind::End;
            return Token {
                kind: Kind::End,
                text: "",
            };
        };
        match c {
            b'a'..=b'z' if prev <= Kind::Digit => {
                let (letter, rest) = self.rest.split_at(1);
                self.rest = rest;
                self.token(Kind::Letter, letter)
            }
            b'.' | b'0'..=b'9' => {
                if c == b'.' {
                    if prev > Kind::Digit {
                        return self.invalid();
                    }
                    self.rest = &self.rest[1..];
                }
                let kind = match prev {
                    Kind::InitialDigit | Kind::Digit => Kind::Digit,
                    Kind::Suffix => Kind::SuffixNo,
                    _ => return self.invalid(),
                };
                let digits = self.span(|c| c.is_ascii_digit());
                self.token(kind, digits)
            }
            b'_' if prev <= Kind::SuffixNo => {
                self.rest = &self.rest[1..];
                let word = self.span(|c| c.is_ascii_lowercase());
                if SUFFIXES.iter().any(|s| !s.is_empty() && *s == word) {
                    self.token(Kind::Suffix, word)
                } else {
                    self.invalid()
                }
            }
            b'~' if prev < Kind::CommitHash => {
                self.rest = &self.rest[1..];
                let hash = self.span(|c| c.is_ascii_hexdigit());
                self.token(Kind::CommitHash, hash)
            }
            b'-' if prev < Kind::RevisionNo && self.rest.starts_with("-r") => {
                self.rest = &self.rest[2..];
                let digits = self.span(|c| c.is_ascii_digit());
                self.token(Kind::RevisionNo, digits)
            }
            _ => self.invalid(),
        }
    }
}

/// Compares two Alpine versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (mut ra, mut rb) = (Reader::new(a.trim()), Reader::new(b.trim()));
    let (mut ta, mut tb) = (ra.first(), rb.first());
    while ta.kind == tb.kind && ta.kind < Kind::End {
        let r = ta.cmp_same_kind(&tb);
        if r != Ordering::Equal {
            return r;
        }
        ta = ra.next();
        tb = rb.next();
    }
    if ta.kind == tb.kind {
        return Ordering::Equal;
    }
    // The versions diverge in kind: the one that goes on is newer, unless it goes on
    // with a pre-release suffix.
    if ta.kind == Kind::Suffix && ta.suffix_rank() < RELEASE {
        return Ordering::Less;
    }
    if tb.kind == Kind::Suffix && tb.suffix_rank() < RELEASE {
        return Ordering::Greater;
    }
    tb.kind.cmp(&ta.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lt(a: &str, b: &str) {
        assert_eq!(compare(a, b), Ordering::Less, "{a} < {b}");
        assert_eq!(compare(b, a), Ordering::Greater, "{b} > {a}");
    }

    #[test]
    fn apk_tools_version_data_examples() {
        // Lines of apk-tools' test/version.data.
        lt("0.1.0_alpha", "2.34");
        assert_eq!(compare("0.1.0_alpha", "0.1.0_alpha"), Ordering::Equal);
        lt("0.1.0_alpha", "0.1.3_alpha");
        lt("0.1.0_alpha", "0.1.0_alpha2");
        lt("0.1.0_alpha", "2.2.39-r1");
        lt("1.0.4-r3", "2.2.39-r1");
        lt("1.0_alpha", "1.0");
        lt("1.0", "1.0.1");
        lt("1.0", "1.0-r1");
        lt("1.0-r1", "1.0-r2");
        lt("1.0-r9", "1.0-r10");
    }

    #[test]
    fn suffixes_order_alpha_beta_pre_rc_release_then_post_suffixes() {
        let order = [
            "1.0_alpha1",
            "1.0_beta",
            "1.0_beta2",
            "1.0_pre1",
            "1.0_rc1",
            "1.0",
            "1.0-r1",
            "1.0_cvs",
            "1.0_svn",
            "1.0_git20240101",
            "1.0_hg",
            "1.0_p1",
            "1.0_p2",
            "1.0a",
            "1.0.1",
        ];
        for w in order.windows(2) {
            lt(w[0], w[1]);
        }
    }

    #[test]
    fn letters_and_leading_zeros() {
        lt("1.2.3a", "1.2.3b");
        lt("1.2.3", "1.2.3a");
        lt("1.01", "1.1");
        lt("1.2", "1.10");
        lt("1.2.4-r2", "1.2.4_p1-r0");
    }
}
