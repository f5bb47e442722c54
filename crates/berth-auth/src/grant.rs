//! Grants of actions on repository patterns.
//!
//! A pattern is a repository name where `*` matches any run of characters, slashes
//! included: `team/*` covers `team/app` and `team/app/api`, `*` covers everything, and a
//! pattern without `*` covers exactly one repository.

use std::fmt;
use std::str::FromStr;

use crate::action::{Actions, UnknownAction};

/// A repository pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern(String);

/// Why a grant or pattern is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("pattern {0:?} is invalid: use a repository name, with * for any characters")]
    Pattern(String),
    #[error("no repository pattern given: write one (\"team/*\") or a list ([\"a/*\", \"b\"])")]
    NoPattern,
    #[error("grant {0:?} is not of the form PATTERN:ACTIONS, e.g. 'team/*:pull,push'")]
    Form(String),
    #[error(transparent)]
    Action(#[from] UnknownAction),
}

impl Pattern {
    pub fn parse(s: &str) -> Result<Pattern, GrantError> {
        let ok = !s.is_empty()
            && s.len() <= 255
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/*".contains(&b));
        if ok {
            Ok(Pattern(s.to_owned()))
        } else {
            Err(GrantError::Pattern(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `repo` matches (glob with `*` only, iterative two-pointer matching).
    pub fn matches(&self, repo: &str) -> bool {
        let (p, s) = (self.0.as_bytes(), repo.as_bytes());
        let (mut pi, mut si) = (0, 0);
        let (mut star, mut mark) = (None, 0);
        while si < s.len() {
            if pi < p.len() && p[pi] != b'*' && p[pi] == s[si] {
                pi += 1;
                si += 1;
            } else if pi < p.len() && p[pi] == b'*' {
                star = Some(pi);
                mark = si;
                pi += 1;
            } else if let Some(st) = star {
                pi = st + 1;
                mark += 1;
                si = mark;
            } else {
                return false;
            }
        }
        while pi < p.len() && p[pi] == b'*' {
            pi += 1;
        }
        pi == p.len()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `repositories` key of a configuration rule as written: one pattern (`"ci/*"`) or a
/// list of them (`["ci/*", "pr/*"]`); both spellings are accepted because Harbor, zot and
/// Berth's own examples use each. [`RepoPatterns::compile`] validates it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct RepoPatterns(Vec<String>);

impl RepoPatterns {
    /// Whether no pattern was given (a webhook without `repositories` wants every one).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The patterns as written.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// Every pattern parsed; an empty list is refused (a rule must say what it covers).
    pub fn compile(&self) -> Result<PatternSet, GrantError> {
        if self.0.is_empty() {
            return Err(GrantError::NoPattern);
        }
        self.0
            .iter()
            .map(|p| Pattern::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map(PatternSet)
    }
}

impl From<&str> for RepoPatterns {
    fn from(p: &str) -> RepoPatterns {
        RepoPatterns(vec![p.to_owned()])
    }
}

impl FromIterator<String> for RepoPatterns {
    fn from_iter<I: IntoIterator<Item = String>>(i: I) -> RepoPatterns {
        RepoPatterns(i.into_iter().collect())
    }
}

impl From<Vec<String>> for RepoPatterns {
    fn from(p: Vec<String>) -> RepoPatterns {
        RepoPatterns(p)
    }
}

impl fmt::Display for RepoPatterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

impl<'de> serde::Deserialize<'de> for RepoPatterns {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RepoPatterns, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged, expecting = "a repository pattern or a list of them")]
        enum Written {
            One(String),
            Many(Vec<String>),
        }
        Ok(match Written::deserialize(d)? {
            Written::One(p) => RepoPatterns(vec![p]),
            Written::Many(p) => RepoPatterns(p),
        })
    }
}

/// Parsed patterns; a repository matches when any of them does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternSet(Vec<Pattern>);

impl PatternSet {
    pub fn matches(&self, repo: &str) -> bool {
        self.0.iter().any(|p| p.matches(repo))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Pattern> {
        self.0.iter()
    }
}

impl fmt::Display for PatternSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Actions granted on a pattern: `team/*:pull,push`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grant {
    pub pattern: Pattern,
    pub actions: Actions,
}

impl FromStr for Grant {
    type Err = GrantError;
    fn from_str(s: &str) -> Result<Grant, GrantError> {
        let (p, a) = s
            .rsplit_once(':')
            .ok_or_else(|| GrantError::Form(s.to_owned()))?;
        let actions = Actions::parse_list(a)?;
        if actions.is_empty() {
            return Err(GrantError::Form(s.to_owned()));
        }
        Ok(Grant {
            pattern: Pattern::parse(p)?,
            actions,
        })
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.pattern, self.actions)
    }
}

/// The union of the actions `grants` give on `repo`.
pub fn actions_on<'a>(grants: impl IntoIterator<Item = &'a Grant>, repo: &str) -> Actions {
    grants
        .into_iter()
        .filter(|g| g.pattern.matches(repo))
        .fold(Actions::NONE, |acc, g| acc.union(g.actions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Action;

    #[test]
    fn patterns() {
        let p = |s: &str| Pattern::parse(s).unwrap();
        assert!(p("team/*").matches("team/app"));
        assert!(p("team/*").matches("team/app/api"));
        assert!(!p("team/*").matches("team"));
        assert!(!p("team/*").matches("teams/app"));
        assert!(p("*").matches("anything/at/all"));
        assert!(p("team/app").matches("team/app"));
        assert!(!p("team/app").matches("team/app/api"));
        assert!(p("*/public").matches("a/b/public"));
        assert!(p("a*c").matches("abbbc") && !p("a*c").matches("abbbd"));
        assert!(Pattern::parse("Team/*").is_err());
        assert!(Pattern::parse("").is_err());
    }

    #[test]
    fn grants() {
        let g: Grant = "team/*:pull,push".parse().unwrap();
        assert_eq!(g.to_string(), "team/*:pull,push");
        let grants = vec![g, "team/app:delete".parse().unwrap()];
        let a = actions_on(&grants, "team/app");
        assert!(a.allows(Action::Pull) && a.allows(Action::Delete));
        assert!(actions_on(&grants, "other").is_empty());
        assert!("team/*".parse::<Grant>().is_err());
        assert!("team/*:".parse::<Grant>().is_err());
        assert!("team/*:fly".parse::<Grant>().is_err());
    }

    #[test]
    fn repositories_are_one_pattern_or_a_list() {
        #[derive(serde::Deserialize)]
        struct Rule {
            repositories: RepoPatterns,
        }
        let one: Rule = toml::from_str("repositories = \"ci/*\"").unwrap();
        let many: Rule = toml::from_str("repositories = [\"ci/*\", \"pr/app\"]").unwrap();
        assert_eq!(one.repositories, RepoPatterns::from("ci/*"));
        let set = many.repositories.compile().unwrap();
        assert!(set.matches("ci/x/y") && set.matches("pr/app") && !set.matches("pr/other"));
        assert_eq!(set.to_string(), "ci/*, pr/app");
        assert!(toml::from_str::<Rule>("repositories = 3").is_err());
        assert!(RepoPatterns::default().compile().is_err());
        assert!(RepoPatterns::from("Bad Pattern").compile().is_err());
    }
}
