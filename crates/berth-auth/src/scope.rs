//! Docker token scopes: `repository:<name>:<actions>` and `registry:catalog:*`.

use std::fmt;

use crate::action::Actions;

/// One requested or granted scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Repository { name: String, actions: Actions },
    Catalog,
}

impl Scope {
    /// Parses one scope; unknown resource types and actions are ignored (`None`), as
    /// token servers do, so that a client asking for more gets what it may have.
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        match kind {
            "repository" if !name.is_empty() => {
                let actions = actions
                    .split(',')
                    .filter_map(|a| a.trim().parse().ok())
                    .fold(Actions::NONE, Actions::with);
                Some(Scope::Repository {
                    name: name.to_owned(),
                    actions,
                })
            }
            "registry" if name == "catalog" => Some(Scope::Catalog),
            _ => None,
        }
    }

    /// Parses a `scope` parameter, which may hold several space-separated scopes.
    pub fn parse_all<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Scope> {
        values
            .into_iter()
            .flat_map(|v| v.split(' '))
            .filter_map(Scope::parse)
            .collect()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Repository { name, actions } => write!(f, "repository:{name}:{actions}"),
            Scope::Catalog => f.write_str("registry:catalog:*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Action;

    #[test]
    fn parse_scopes() {
        let s = Scope::parse("repository:team/app:pull,push").unwrap();
        assert_eq!(s.to_string(), "repository:team/app:pull,push");
        let all = Scope::parse_all([
            "repository:a:pull repository:b:push,delete",
            "registry:catalog:*",
        ]);
        assert_eq!(all.len(), 3);
        assert!(
            matches!(&all[1], Scope::Repository { actions, .. } if actions.contains(Action::Delete))
        );
        assert_eq!(all[2], Scope::Catalog);
        assert!(Scope::parse("repository::pull").is_none());
        assert!(Scope::parse("weird:x:y").is_none());
    }
}
