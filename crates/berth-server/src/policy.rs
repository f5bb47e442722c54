//! Tag policy, enforced by the server on every manifest push and tag deletion, whichever
//! client sends them: release tags (full semver, `1.2.3`, `v1.2.3-rc.1`) are immutable,
//! and floating tags (`latest`, `1`, `1.2`, also `v1`, `v1.2`) only move forward, within
//! their range, by the version of what they point to.
//!
//! The version of a manifest is what the registry learned at push time (its
//! `org.opencontainers.image.version` annotation, its config's label of that name, or
//! the version all children of an index agree on), else the highest release tag pointing
//! at it (including the tags of the same request). A floating tag that holds a known
//! version does not move to a manifest whose version cannot be known (it could be a
//! rollback in disguise: a list re-wrapped without annotations, an image without its
//! label), unless the repository's rule says `unknown_version = "allow"`. A floating tag
//! whose current version is unknown may move anywhere in its range.
//!
//! The check runs inside the metadata transaction (as a [`TagGuard`]), so no concurrent
//! push can slip between check and write. Administrators can force a change.
//!
//! The trust policy (`[[trust_policy]]`, [`TrustPolicy`]) says, per repository pattern,
//! which keys must have signed a manifest before it can be pulled, and whether release
//! tags wait for that signature (the publish gate). This module only reads the rules and
//! their keys; verifying signatures is the service's (`service::trust`).

use std::path::PathBuf;

use berth_auth::{PatternSet, RepoPatterns};
use berth_meta::{TagChange, TagGuard, TagTarget};
// Re-exported so the rest of the server names tag kinds through the policy that uses them.
pub use berth_oci::version::{classify, TagKind};
use berth_oci::version::{parse_version, release_of};
use semver::Version;
use serde::Deserialize;

/// One rule of the `[[tag_policy]]` list in the config file; the first rule whose
/// `repositories` pattern matches applies, and without any, both checks are on.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagPolicyRule {
    /// Repository pattern or list of them (`*` matches anything, slashes included).
    pub repositories: RepoPatterns,
    #[serde(default = "yes")]
    pub immutable_releases: bool,
    #[serde(default = "yes")]
    pub monotonic_floating: bool,
    /// Whether a floating tag holding a known version may move to a manifest whose
    /// version is unknown.
    #[serde(default)]
    pub unknown_version: UnknownVersion,
}

/// What a floating tag does with a manifest of unknown version (`unknown_version`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownVersion {
    /// Refuse the move while the tag holds a known version (the default).
    #[default]
    Refuse,
    /// Allow it (the policy then only judges moves between known versions).
    Allow,
}

fn yes() -> bool {
    true
}

/// The version of a tag target: its annotation, else its highest release tag.
pub fn version_of(t: &TagTarget) -> Option<Version> {
    if let Some(v) = t.version.as_deref().and_then(parse_version) {
        return Some(v);
    }
    t.tags.iter().filter_map(|tag| release_of(tag)).max()
}

/// The configured rules.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<(PatternSet, TagPolicyRule)>,
}

/// Why a policy configuration is invalid.
#[derive(Debug, thiserror::Error)]
#[error("tag_policy: {0}")]
pub struct PolicyError(String);

impl Policy {
    pub fn new(rules: &[TagPolicyRule]) -> Result<Policy, PolicyError> {
        let rules = rules
            .iter()
            .map(|r| {
                r.repositories
                    .compile()
                    .map(|p| (p, r.clone()))
                    .map_err(|e| PolicyError(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Policy { rules })
    }

    /// The guard for one repository; `force` skips every check.
    pub fn guard(&self, repo: &str, force: bool) -> Guard {
        let (immutable, monotonic, unknown) = self
            .rules
            .iter()
            .find(|(p, _)| p.matches(repo))
            .map(|(_, r)| {
                (
                    r.immutable_releases,
                    r.monotonic_floating,
                    r.unknown_version,
                )
            })
            .unwrap_or((true, true, UnknownVersion::Refuse));
        Guard {
            immutable: immutable && !force,
            monotonic: monotonic && !force,
            allow_unknown: unknown == UnknownVersion::Allow,
        }
    }
}

/// The checks for one repository.
#[derive(Debug, Clone, Copy)]
pub struct Guard {
    immutable: bool,
    monotonic: bool,
    allow_unknown: bool,
}

const FORCE_HINT: &str = "an administrator can force it with ?force=true";

impl TagGuard for Guard {
    fn concerns(&self, tag: &str) -> bool {
        match classify(tag) {
            TagKind::Release(_) => self.immutable,
            TagKind::Latest | TagKind::Major(_) | TagKind::Minor(..) => self.monotonic,
            TagKind::Other => false,
        }
    }

    fn check(&self, c: &TagChange) -> Result<(), String> {
        match classify(&c.tag) {
            TagKind::Release(_) if self.immutable => match (&c.current, &c.new) {
                (Some(cur), Some(_)) => Err(format!(
                    "tag {} of {} is a release tag and already holds {}; release tags are immutable ({FORCE_HINT})",
                    c.tag, c.repo, cur.digest
                )),
                (Some(cur), None) => Err(format!(
                    "tag {} of {} is a release tag holding {}; release tags cannot be deleted ({FORCE_HINT})",
                    c.tag, c.repo, cur.digest
                )),
                _ => Ok(()),
            },
            kind @ (TagKind::Latest | TagKind::Major(_) | TagKind::Minor(..)) if self.monotonic => {
                let Some(new) = &c.new else { return Ok(()) };
                let current = c.current.as_ref().and_then(|cur| version_of(cur).map(|v| (v, cur)));
                let Some(nv) = version_of(new) else {
                    return match current {
                        Some((cv, cur)) if !self.allow_unknown && cur.digest != new.digest => Err(format!(
                            "tag {} of {} holds version {cv} ({}); the registry cannot tell the version of {}, so moving the tag could roll users back: \
                             give the image its version (the org.opencontainers.image.version annotation, or LABEL org.opencontainers.image.version in its config), \
                             push it with its release tag in the same request, set unknown_version = \"allow\" in this repository's tag policy, or {FORCE_HINT}",
                            c.tag, c.repo, cur.digest, new.digest
                        )),
                        _ => Ok(()),
                    };
                };
                let in_range = match kind {
                    TagKind::Major(m) => nv.major == m,
                    TagKind::Minor(a, b) => nv.major == a && nv.minor == b,
                    _ => true,
                };
                if !in_range {
                    return Err(format!(
                        "tag {} of {} can only hold versions of its own range, not {nv}",
                        c.tag, c.repo
                    ));
                }
                match current {
                    Some((cv, cur)) if nv < cv => Err(format!(
                        "tag {} of {} holds version {cv} ({}); moving it to {nv} would roll users back; floating tags only move forward ({FORCE_HINT})",
                        c.tag, c.repo, cur.digest
                    )),
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }
}

/// One rule of the `[[trust_policy]]` list; the first rule whose `repositories` pattern
/// matches applies (a rule with no keys exempts the repositories it matches).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustPolicyRule {
    /// Repository pattern or list of them (`*` matches anything, slashes included).
    pub repositories: RepoPatterns,
    /// Public key files (PEM: PKIX, as `cosign generate-key-pair` and `berth key generate`
    /// write them); a manifest needs a valid signature by any one of them to be pulled.
    /// Relative paths are relative to the config file.
    #[serde(default)]
    pub require_signature: Vec<PathBuf>,
    /// Hold release tags pushed onto an unsigned manifest, with the other tags of their
    /// push, until a valid signature arrives (needs `require_signature`).
    #[serde(default)]
    pub gate_release_tags: bool,
}

/// What the trust policy asks of one repository.
#[derive(Debug, Clone)]
pub struct TrustRule {
    /// The accepted keys, at least one.
    pub keys: Vec<berth_trust::keys::PublicKey>,
    /// Their fingerprints, in the order of `keys`.
    pub fingerprints: Vec<String>,
    /// Whether release tags wait for a signature.
    pub gate: bool,
}

/// The configured trust rules, with their keys read.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    rules: Vec<(PatternSet, Option<TrustRule>)>,
}

/// Why a trust policy configuration is invalid; each names the rule or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TrustPolicyError {
    #[error("trust_policy for {repositories:?}: {message}")]
    Rule {
        repositories: String,
        message: String,
    },
    #[error("trust_policy: cannot read key file {path}: {source}")]
    KeyRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("trust_policy: key file {path} is not a public key: {source}")]
    KeyInvalid {
        path: PathBuf,
        #[source]
        source: berth_trust::KeyError,
    },
}

impl TrustPolicy {
    /// Reads the rules and every key they name, refusing a rule that gates release tags
    /// without any key.
    pub fn new(rules: &[TrustPolicyRule]) -> Result<TrustPolicy, TrustPolicyError> {
        let mut out = Vec::with_capacity(rules.len());
        for r in rules {
            let rule_error = |message: String| TrustPolicyError::Rule {
                repositories: r.repositories.to_string(),
                message,
            };
            let pattern = r
                .repositories
                .compile()
                .map_err(|e| rule_error(e.to_string()))?;
            if r.require_signature.is_empty() {
                if r.gate_release_tags {
                    return Err(rule_error(
                        "gate_release_tags = true needs require_signature (the keys whose signature opens the gate)".into(),
                    ));
                }
                out.push((pattern, None));
                continue;
            }
            let mut keys = Vec::new();
            for path in &r.require_signature {
                let pem = std::fs::read(path).map_err(|source| TrustPolicyError::KeyRead {
                    path: path.clone(),
                    source,
                })?;
                let key = berth_trust::keys::PublicKey::from_pem(&pem).map_err(|source| {
                    TrustPolicyError::KeyInvalid {
                        path: path.clone(),
                        source,
                    }
                })?;
                keys.push(key);
            }
            let fingerprints = keys.iter().map(|k| k.fingerprint()).collect();
            out.push((
                pattern,
                Some(TrustRule {
                    keys,
                    fingerprints,
                    gate: r.gate_release_tags,
                }),
            ));
        }
        Ok(TrustPolicy { rules: out })
    }

    /// The rule for `repo`, if the first matching rule requires signatures.
    pub fn rule(&self, repo: &str) -> Option<&TrustRule> {
        self.rules
            .iter()
            .find(|(p, _)| p.matches(repo))
            .and_then(|(_, r)| r.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(digest: &str, version: Option<&str>, tags: &[&str]) -> TagTarget {
        TagTarget {
            digest: digest.into(),
            version: version.map(str::to_owned),
            tags: tags.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn change(tag: &str, current: Option<TagTarget>, new: Option<TagTarget>) -> TagChange {
        TagChange {
            repo: "r".into(),
            tag: tag.into(),
            current,
            new,
        }
    }

    #[test]
    fn a_guard_concerns_exactly_the_tags_it_can_refuse() {
        let other = target("sha256:o", Some("9.9.9"), &["9.9.9"]);
        let low = target("sha256:l", Some("0.0.1"), &["0.0.1"]);
        for (immutable, monotonic) in [(true, true), (true, false), (false, true), (false, false)] {
            let g = Guard {
                immutable,
                monotonic,
                allow_unknown: false,
            };
            for tag in [
                "1.2.3",
                "v2.0.0-rc.1",
                "latest",
                "1",
                "v1.2",
                "main",
                "sha-1",
                "01",
            ] {
                let changes = [
                    change(tag, Some(other.clone()), Some(low.clone())),
                    change(tag, Some(other.clone()), None),
                    change(tag, None, Some(low.clone())),
                ];
                let refusable = changes.iter().any(|c| g.check(c).is_err());
                if !g.concerns(tag) {
                    assert!(!refusable, "{tag} is refusable but not of concern");
                }
            }
            assert_eq!(g.concerns("1.2.3"), immutable);
            assert_eq!(g.concerns("latest"), monotonic);
            assert!(!g.concerns("main"));
        }
    }

    #[test]
    fn releases_are_immutable() {
        let g = Policy::default().guard("r", false);
        let old = target("sha256:a", None, &["1.2.3"]);
        let new = target("sha256:b", None, &["1.2.3"]);
        assert!(g.check(&change("1.2.3", None, Some(new.clone()))).is_ok());
        let e = g
            .check(&change("1.2.3", Some(old.clone()), Some(new.clone())))
            .unwrap_err();
        assert!(e.contains("1.2.3") && e.contains("sha256:a"), "{e}");
        assert!(g.check(&change("1.2.3", Some(old.clone()), None)).is_err());
        assert!(Policy::default()
            .guard("r", true)
            .check(&change("1.2.3", Some(old), Some(new)))
            .is_ok());
    }

    #[test]
    fn floating_tags_move_forward_within_range() {
        let g = Policy::default().guard("r", false);
        let v = |d: &str, ver: &str| target(d, Some(ver), &[]);
        assert!(g
            .check(&change("1.2", Some(v("a", "1.2.3")), Some(v("b", "1.2.4"))))
            .is_ok());
        assert!(g
            .check(&change("1.2", Some(v("a", "1.2.3")), Some(v("b", "1.2.2"))))
            .is_err());
        assert!(g
            .check(&change("1.2", None, Some(v("b", "1.3.0"))))
            .is_err());
        assert!(g
            .check(&change("1", Some(v("a", "1.2.3")), Some(v("b", "1.3.0"))))
            .is_ok());
        assert!(g
            .check(&change(
                "latest",
                Some(v("a", "2.0.0")),
                Some(v("b", "1.9.9"))
            ))
            .is_err());
        // The version comes from release tags when there is no annotation.
        let tagged = |d: &str, t: &str| target(d, None, &[t, "latest"]);
        assert!(g
            .check(&change(
                "latest",
                Some(tagged("a", "v2.0.0")),
                Some(tagged("b", "1.5.0"))
            ))
            .is_err());
        // A tag of unknown version may move anywhere; deleting a floating tag is fine.
        assert!(g
            .check(&change(
                "latest",
                Some(target("a", None, &[])),
                Some(v("b", "0.1.0"))
            ))
            .is_ok());
        // A known version does not give way to an unknown one (the two-step bypass:
        // an unversioned push, then an older release), unless the rule allows it.
        let e = g
            .check(&change(
                "latest",
                Some(v("a", "2.0.0")),
                Some(target("b", None, &["latest"])),
            ))
            .unwrap_err();
        assert!(
            e.contains("annotation") && e.contains("unknown_version"),
            "{e}"
        );
        assert!(g
            .check(&change(
                "2",
                Some(v("a", "2.0.0")),
                Some(target("b", None, &[]))
            ))
            .is_err());
        let lenient = Policy::new(&[TagPolicyRule {
            repositories: "*".into(),
            immutable_releases: true,
            monotonic_floating: true,
            unknown_version: UnknownVersion::Allow,
        }])
        .unwrap()
        .guard("r", false);
        assert!(lenient
            .check(&change(
                "latest",
                Some(v("a", "2.0.0")),
                Some(target("b", None, &[]))
            ))
            .is_ok());
        // Re-pushing what the tag already holds is never refused.
        assert!(g
            .check(&change(
                "latest",
                Some(v("a", "2.0.0")),
                Some(target("a", None, &[]))
            ))
            .is_ok());
        assert!(g
            .check(&change("latest", Some(v("a", "2.0.0")), None))
            .is_ok());
    }

    #[test]
    fn rules_by_repository() {
        let p = Policy::new(&[TagPolicyRule {
            repositories: "sandbox/*".into(),
            immutable_releases: false,
            monotonic_floating: false,
            unknown_version: UnknownVersion::Refuse,
        }])
        .unwrap();
        let old = target("sha256:a", None, &[]);
        let new = target("sha256:b", None, &[]);
        assert!(p
            .guard("sandbox/x", false)
            .check(&change("1.0.0", Some(old.clone()), Some(new.clone())))
            .is_ok());
        assert!(p
            .guard("prod/x", false)
            .check(&change("1.0.0", Some(old), Some(new)))
            .is_err());
    }

    fn write_key(dir: &std::path::Path, name: &str) -> (PathBuf, String) {
        let key = berth_trust::keys::PrivateKey::generate_p256()
            .unwrap()
            .public_key();
        let path = dir.join(name);
        std::fs::write(&path, key.to_pem()).unwrap();
        (path, key.fingerprint())
    }

    fn trust_rule(repositories: &str, keys: Vec<PathBuf>, gate: bool) -> TrustPolicyRule {
        TrustPolicyRule {
            repositories: repositories.into(),
            require_signature: keys,
            gate_release_tags: gate,
        }
    }

    #[test]
    fn trust_rules_read_their_keys_and_the_first_match_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (a, fa) = write_key(dir.path(), "a.pub");
        let (b, fb) = write_key(dir.path(), "b.pub");
        let p = TrustPolicy::new(&[
            trust_rule("release/dev/*", vec![], false),
            trust_rule("release/*", vec![a, b], true),
        ])
        .unwrap();
        assert!(p.rule("release/dev/x").is_none(), "an empty rule exempts");
        let r = p.rule("release/app").unwrap();
        assert_eq!(r.fingerprints, [fa, fb]);
        assert!(r.gate);
        assert!(p.rule("other").is_none());
    }

    #[test]
    fn a_bad_trust_rule_is_refused_naming_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let e = TrustPolicy::new(&[trust_rule("release/*", vec![], true)]).unwrap_err();
        assert!(e.to_string().contains("needs require_signature"), "{e}");
        let missing = dir.path().join("missing.pub");
        let e = TrustPolicy::new(&[trust_rule("r", vec![missing.clone()], false)]).unwrap_err();
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );
        let bad = dir.path().join("bad.pub");
        std::fs::write(
            &bad,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let e = TrustPolicy::new(&[trust_rule("r", vec![bad.clone()], false)]).unwrap_err();
        assert!(
            matches!(e, TrustPolicyError::KeyInvalid { .. }) && e.to_string().contains("bad.pub"),
            "{e}"
        );
    }
}
