//! Actions on repositories and sets of them.

use std::fmt;
use std::str::FromStr;

/// One action on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Pull,
    Push,
    Delete,
    /// Everything, on the repositories it is granted for; on `*` also account administration.
    Admin,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Pull, Action::Push, Action::Delete, Action::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Action::Pull => 1,
            Action::Push => 2,
            Action::Delete => 4,
            Action::Admin => 8,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown action name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action {0:?} (use pull, push, delete or admin)")]
pub struct UnknownAction(pub String);

impl FromStr for Action {
    type Err = UnknownAction;
    fn from_str(s: &str) -> Result<Action, UnknownAction> {
        match s.trim() {
            "pull" => Ok(Action::Pull),
            "push" => Ok(Action::Push),
            "delete" => Ok(Action::Delete),
            "admin" | "*" => Ok(Action::Admin),
            other => Err(UnknownAction(other.to_owned())),
        }
    }
}

/// A set of actions. `admin` implies every other action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);

    pub fn with(self, a: Action) -> Actions {
        Actions(self.0 | a.bit())
    }

    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    /// Whether `a` is allowed by this set (admin allows everything).
    pub fn allows(self, a: Action) -> bool {
        self.0 & a.bit() != 0 || self.0 & Action::Admin.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The actions of `wanted` that this set allows.
    pub fn intersect(self, wanted: Actions) -> Actions {
        Action::ALL
            .into_iter()
            .filter(|a| wanted.contains(*a) && self.allows(*a))
            .fold(Actions::NONE, Actions::with)
    }

    /// Exact membership (no admin implication).
    pub fn contains(self, a: Action) -> bool {
        self.0 & a.bit() != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }

    /// Parses `pull,push` (also `*` for admin).
    pub fn parse_list(s: &str) -> Result<Actions, UnknownAction> {
        s.split(',')
            .filter(|p| !p.trim().is_empty())
            .try_fold(Actions::NONE, |acc, p| Ok(acc.with(p.parse()?)))
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Action::as_str).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_implies_everything() {
        let a = Actions::parse_list("admin").unwrap();
        assert!(a.allows(Action::Pull) && a.allows(Action::Delete));
        let p = Actions::parse_list("pull,push").unwrap();
        assert!(p.allows(Action::Push) && !p.allows(Action::Delete));
        assert_eq!(p.to_string(), "pull,push");
        assert_eq!(
            p.intersect(Actions::parse_list("push,delete").unwrap())
                .to_string(),
            "push"
        );
        assert!(Actions::parse_list("pull,fly").is_err());
    }
}
