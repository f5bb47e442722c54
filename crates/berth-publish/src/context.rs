//! The CI context of a publish: which version, branch, pull request and commit.

use std::collections::HashMap;

/// What the run was triggered by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefKind {
    /// A git tag; its name (e.g. `v1.2.3`).
    Tag(String),
    /// A branch; its name (e.g. `main`, `feature/Login`).
    Branch(String),
    /// A pull or merge request; its number.
    PullRequest(u64),
}

/// Everything the tag plan needs to know about the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// A release version given explicitly (`--version`), else from a git tag.
    pub version: Option<String>,
    pub git_ref: Option<RefKind>,
    /// The full commit SHA.
    pub sha: Option<String>,
    /// The repository's default branch, when known (`edge` goes there).
    pub default_branch: Option<String>,
}

impl Context {
    /// Reads GitHub Actions or GitLab CI variables from `env`, as docker/metadata-action
    /// does for GitHub (`GITHUB_REF`, `GITHUB_SHA`, `GITHUB_EVENT_NAME`) and with GitLab's
    /// own (`CI_COMMIT_TAG`, `CI_COMMIT_SHA`, `CI_COMMIT_BRANCH`, `CI_MERGE_REQUEST_IID`,
    /// `CI_DEFAULT_BRANCH`). `None` when neither CI is recognised.
    pub fn from_ci(env: &HashMap<String, String>) -> Option<Context> {
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        if env.get("GITHUB_ACTIONS").map(String::as_str) == Some("true")
            || get("GITHUB_REF").is_some()
        {
            let git_ref = get("GITHUB_REF").and_then(|r| parse_github_ref(&r));
            let version = match &git_ref {
                Some(RefKind::Tag(t)) => Some(t.clone()),
                _ => None,
            };
            return Some(Context {
                version,
                git_ref,
                sha: get("GITHUB_SHA"),
                default_branch: get("BERTH_DEFAULT_BRANCH"),
            });
        }
        if env.get("GITLAB_CI").map(String::as_str) == Some("true")
            || get("CI_COMMIT_SHA").is_some()
        {
            let git_ref = if let Some(t) = get("CI_COMMIT_TAG") {
                Some(RefKind::Tag(t))
            } else if let Some(iid) = get("CI_MERGE_REQUEST_IID").and_then(|v| v.parse().ok()) {
                Some(RefKind::PullRequest(iid))
            } else {
                get("CI_COMMIT_BRANCH").map(RefKind::Branch)
            };
            let version = get("CI_COMMIT_TAG");
            return Some(Context {
                version,
                git_ref,
                sha: get("CI_COMMIT_SHA"),
                default_branch: get("CI_DEFAULT_BRANCH"),
            });
        }
        None
    }
}

/// `refs/tags/v1`, `refs/heads/main`, `refs/pull/12/merge`.
pub fn parse_github_ref(r: &str) -> Option<RefKind> {
    if let Some(t) = r.strip_prefix("refs/tags/") {
        return Some(RefKind::Tag(t.to_owned()));
    }
    if let Some(b) = r.strip_prefix("refs/heads/") {
        return Some(RefKind::Branch(b.to_owned()));
    }
    if let Some(rest) = r.strip_prefix("refs/pull/") {
        return rest
            .split('/')
            .next()?
            .parse()
            .ok()
            .map(RefKind::PullRequest);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn github() {
        let c = Context::from_ci(&env(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_REF", "refs/tags/v1.2.3"),
            ("GITHUB_SHA", "860c1904a1ce19322e91ac35af1ab07466440c37"),
        ]))
        .unwrap();
        assert_eq!(c.version.as_deref(), Some("v1.2.3"));
        assert_eq!(c.git_ref, Some(RefKind::Tag("v1.2.3".into())));
        let c = Context::from_ci(&env(&[
            ("GITHUB_REF", "refs/pull/2/merge"),
            ("GITHUB_EVENT_NAME", "pull_request"),
        ]))
        .unwrap();
        assert_eq!(c.git_ref, Some(RefKind::PullRequest(2)));
        let c = Context::from_ci(&env(&[("GITHUB_REF", "refs/heads/feature/Login")])).unwrap();
        assert_eq!(c.git_ref, Some(RefKind::Branch("feature/Login".into())));
        assert_eq!(c.version, None);
    }

    #[test]
    fn gitlab() {
        let c = Context::from_ci(&env(&[
            ("GITLAB_CI", "true"),
            ("CI_COMMIT_TAG", "1.0.0"),
            ("CI_COMMIT_SHA", "abc"),
        ]))
        .unwrap();
        assert_eq!(c.version.as_deref(), Some("1.0.0"));
        let c = Context::from_ci(&env(&[
            ("GITLAB_CI", "true"),
            ("CI_MERGE_REQUEST_IID", "7"),
            ("CI_COMMIT_SHA", "abc"),
        ]))
        .unwrap();
        assert_eq!(c.git_ref, Some(RefKind::PullRequest(7)));
        let c = Context::from_ci(&env(&[
            ("GITLAB_CI", "true"),
            ("CI_COMMIT_BRANCH", "main"),
            ("CI_DEFAULT_BRANCH", "main"),
        ]))
        .unwrap();
        assert_eq!(c.git_ref, Some(RefKind::Branch("main".into())));
        assert_eq!(c.default_branch.as_deref(), Some("main"));
        assert!(Context::from_ci(&env(&[])).is_none());
    }
}
