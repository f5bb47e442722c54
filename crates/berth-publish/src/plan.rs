//! The tag plan: which tags a publish applies, in which order, and which it leaves out
//! and why.
//!
//! With a release version `1.2.3` (or `v1.2.3`): `1.2.3`, `1.2`, `1` and `latest`, each
//! floating tag only when no higher stable release of its range is already published
//! (patching 1.x after 2.0 moves `1.2` and `1`, never `latest`). A pre-release gets only
//! its exact tag; `0.x` releases get no `0` unless asked. Without a version: the branch
//! (sanitised), `pr-<N>`, and `edge` on the default branch if asked. Every run with a
//! known commit also gets `sha-<7 hex>` (exact), a release too.
//! Exact tags come first and floating tags last, the order a registry without atomic
//! multi-tag pushes must apply them in.

use berth_oci::version::{parse_version, release_of};
use semver::Version;

use crate::context::{Context, RefKind};

/// Choices beyond the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// Replace the default release tags: `{{version}}`, `{{raw}}` (the version as given,
    /// e.g. `v1.2.3`), `{{major}}`, `{{minor}}`, `{{patch}}`, `{{sha}}`, `{{branch}}` are
    /// substituted; other text is literal.
    pub templates: Vec<String>,
    /// Never plan `latest`.
    pub no_latest: bool,
    /// Give `0.x.y` releases the `0` tag too.
    pub major_zero: bool,
    /// Give the default branch the `edge` tag.
    pub edge: bool,
    /// Hex digits of the commit in `sha-` tags.
    pub sha_length: usize,
}

impl Default for PlanOptions {
    fn default() -> PlanOptions {
        PlanOptions {
            templates: Vec::new(),
            no_latest: false,
            major_zero: false,
            edge: false,
            sha_length: 7,
        }
    }
}

/// One tag to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTag {
    pub tag: String,
    /// Floating tags (`1.2`, `latest`, branch names) move; exact ones never should.
    pub floating: bool,
}

/// A tag the plan left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub tag: String,
    pub reason: String,
}

/// The outcome of planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The release version, if this is a release.
    pub version: Option<Version>,
    pub tags: Vec<PlannedTag>,
    pub skipped: Vec<Skipped>,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("version {0:?} is not semver (MAJOR.MINOR.PATCH, optionally with a v prefix, -prerelease and +build)")]
    InvalidVersion(String),
    #[error("nothing to publish: give --version or --tag-template, or run in a CI that sets a tag, branch or pull request")]
    Empty,
}

/// Makes any string a valid tag: invalid characters become `-`, a leading `.` or `-`
/// is dropped, at most 128 characters.
pub fn sanitize(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_start_matches(['.', '-']);
    trimmed.chars().take(128).collect()
}

fn short_sha(sha: &str, n: usize) -> String {
    sha.chars().take(n).collect::<String>().to_ascii_lowercase()
}

/// The release versions among a repository's tags (`1.2.3`, `v1.2.3-rc.1`, `V2.0.0`), read
/// as the server's tag policy reads them; floating and other tags are left out.
pub fn released_versions<'a>(tags: impl IntoIterator<Item = &'a str>) -> Vec<Version> {
    tags.into_iter().filter_map(release_of).collect()
}

/// What the newest stable release of a range is, among `existing`.
fn higher_in<'a>(
    existing: &'a [Version],
    v: &Version,
    in_range: impl Fn(&Version) -> bool,
) -> Option<&'a Version> {
    existing
        .iter()
        .filter(|e| e.pre.is_empty() && in_range(e) && *e > v)
        .max()
}

fn render(t: &str, v: Option<&Version>, ctx: &Context, opts: &PlanOptions) -> Option<String> {
    let mut out = t.to_owned();
    let needs = |k: &str| t.contains(k);
    if needs("{{raw}}") {
        out = out.replace("{{raw}}", ctx.version.as_deref()?);
    }
    if let Some(v) = v {
        let exact = format!(
            "{}.{}.{}{}",
            v.major,
            v.minor,
            v.patch,
            if v.pre.is_empty() {
                String::new()
            } else {
                format!("-{}", v.pre)
            }
        );
        out = out
            .replace("{{version}}", &exact)
            .replace("{{major}}", &v.major.to_string())
            .replace("{{minor}}", &v.minor.to_string())
            .replace("{{patch}}", &v.patch.to_string());
    } else if needs("{{version}}") || needs("{{major}}") || needs("{{minor}}") || needs("{{patch}}")
    {
        return None;
    }
    if needs("{{sha}}") {
        out = out.replace("{{sha}}", &short_sha(ctx.sha.as_deref()?, opts.sha_length));
    }
    if needs("{{branch}}") {
        match &ctx.git_ref {
            Some(RefKind::Branch(b)) => out = out.replace("{{branch}}", &sanitize(b)),
            _ => return None,
        }
    }
    let s = sanitize(&out);
    (!s.is_empty()).then_some(s)
}

/// Makes the plan for `ctx`, given the release versions already in the repository.
pub fn plan(ctx: &Context, existing: &[Version], opts: &PlanOptions) -> Result<Plan, PlanError> {
    let mut tags: Vec<PlannedTag> = Vec::new();
    let mut skipped = Vec::new();
    let push = |tags: &mut Vec<PlannedTag>, tag: String, floating: bool| {
        if !tags.iter().any(|t| t.tag == tag) {
            tags.push(PlannedTag { tag, floating });
        }
    };
    let version = match &ctx.version {
        Some(raw) => {
            let v = parse_version(raw).ok_or_else(|| PlanError::InvalidVersion(raw.clone()))?;
            Some(v)
        }
        None => None,
    };
    if let Some(v) = &version {
        let exact = render("{{version}}", Some(v), ctx, opts).unwrap_or_default();
        let prerelease = !v.pre.is_empty();
        if opts.templates.is_empty() {
            push(&mut tags, exact.clone(), false);
            let minor = format!("{}.{}", v.major, v.minor);
            let major = v.major.to_string();
            if prerelease {
                for t in [minor, major] {
                    skipped.push(Skipped {
                        tag: t,
                        reason: "a pre-release gets only its exact tag".into(),
                    });
                }
            } else {
                match higher_in(existing, v, |e| e.major == v.major && e.minor == v.minor) {
                    Some(h) => skipped.push(Skipped {
                        tag: minor,
                        reason: format!(
                            "{h} is already published; {}.{} stays on it",
                            v.major, v.minor
                        ),
                    }),
                    None => push(&mut tags, minor, true),
                }
                if v.major == 0 && !opts.major_zero {
                    skipped.push(Skipped {
                        tag: major,
                        reason: "0.x releases get no major tag unless asked (--major-zero)".into(),
                    });
                } else {
                    match higher_in(existing, v, |e| e.major == v.major) {
                        Some(h) => skipped.push(Skipped {
                            tag: major,
                            reason: format!("{h} is already published; {} stays on it", v.major),
                        }),
                        None => push(&mut tags, major, true),
                    }
                }
            }
        } else {
            for t in &opts.templates {
                // Exact templates name one release; the rest (`{{major}}.{{minor}}`,
                // `stable`) float and are not for pre-releases.
                let exact =
                    t.contains("{{version}}") || t.contains("{{patch}}") || t.contains("{{raw}}");
                if prerelease && !exact {
                    skipped.push(Skipped {
                        tag: t.clone(),
                        reason: "a pre-release gets only exact tags".into(),
                    });
                    continue;
                }
                if let Some(tag) = render(t, Some(v), ctx, opts) {
                    let floating = !exact;
                    // A floating template tag moves only forward, like `latest`.
                    if floating && !prerelease {
                        if let Some(h) = higher_in(existing, v, |_| true) {
                            skipped.push(Skipped {
                                tag,
                                reason: format!("{h} is already published; this tag stays on it"),
                            });
                            continue;
                        }
                    }
                    push(&mut tags, tag, floating);
                }
            }
        }
        if opts.no_latest {
            skipped.push(Skipped {
                tag: "latest".into(),
                reason: "--no-latest".into(),
            });
        } else if prerelease {
            skipped.push(Skipped {
                tag: "latest".into(),
                reason: "a pre-release never takes latest".into(),
            });
        } else {
            match higher_in(existing, v, |_| true) {
                Some(h) => skipped.push(Skipped {
                    tag: "latest".into(),
                    reason: format!("{h} is already published; latest stays on it"),
                }),
                None => push(&mut tags, "latest".into(), true),
            }
        }
        // A release is also reachable by its commit, as docker/metadata-action's `type=sha`
        // gives every build: exact, since one commit is one image.
        if let Some(sha) = &ctx.sha {
            push(
                &mut tags,
                format!("sha-{}", short_sha(sha, opts.sha_length)),
                false,
            );
        }
    } else {
        match &ctx.git_ref {
            Some(RefKind::Branch(b)) => {
                push(&mut tags, sanitize(b), true);
                if opts.edge && ctx.default_branch.as_deref() == Some(b.as_str()) {
                    push(&mut tags, "edge".into(), true);
                }
            }
            Some(RefKind::PullRequest(n)) => push(&mut tags, format!("pr-{n}"), true),
            Some(RefKind::Tag(t)) => push(&mut tags, sanitize(t), false),
            None => {}
        }
        if let Some(sha) = &ctx.sha {
            push(
                &mut tags,
                format!("sha-{}", short_sha(sha, opts.sha_length)),
                false,
            );
        }
        for t in &opts.templates {
            if let Some(tag) = render(t, None, ctx, opts) {
                push(&mut tags, tag, true);
            } else {
                skipped.push(Skipped {
                    tag: t.clone(),
                    reason: "the template needs a version, commit or branch this run does not have"
                        .into(),
                });
            }
        }
    }
    // Exact tags first, floating tags last.
    tags.sort_by_key(|t| t.floating);
    if tags.is_empty() {
        return Err(PlanError::Empty);
    }
    Ok(Plan {
        version,
        tags,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(v: &str) -> Context {
        Context {
            version: Some(v.into()),
            ..Context::default()
        }
    }

    fn names(p: &Plan) -> Vec<&str> {
        p.tags.iter().map(|t| t.tag.as_str()).collect()
    }

    fn vs(list: &[&str]) -> Vec<Version> {
        list.iter().map(|s| Version::parse(s).unwrap()).collect()
    }

    #[test]
    fn released_versions_are_the_release_tags() {
        let tags = [
            "1.2.3",
            "v1.3.0",
            "V2.0.0-rc.1",
            "1.2",
            "latest",
            "main",
            "vnext",
        ];
        assert_eq!(
            released_versions(tags),
            vs(&["1.2.3", "1.3.0", "2.0.0-rc.1"])
        );
    }

    #[test]
    fn releases_from_metadata_action_docs() {
        // type=semver with {{version}}, {{major}}.{{minor}}, {{major}} and latest=auto.
        let p = plan(&release("v1.2.3"), &[], &PlanOptions::default()).unwrap();
        assert_eq!(names(&p), ["1.2.3", "1.2", "1", "latest"]);
        assert!(!p.tags[0].floating && p.tags[3].floating);
        let p = plan(&release("v2.0.8-beta.67"), &[], &PlanOptions::default()).unwrap();
        assert_eq!(names(&p), ["2.0.8-beta.67"]);
        assert_eq!(p.skipped.len(), 3);
        let p = plan(&release("1.2.3+build.5"), &[], &PlanOptions::default()).unwrap();
        assert_eq!(names(&p)[0], "1.2.3", "build metadata cannot be in a tag");
    }

    #[test]
    fn a_release_with_a_commit_gets_its_sha_tag() {
        let ctx = Context {
            sha: Some("860C1904a1ce19322e91ac35af1ab07466440c37".into()),
            ..release("v1.2.3")
        };
        let p = plan(&ctx, &[], &PlanOptions::default()).unwrap();
        assert_eq!(names(&p), ["1.2.3", "sha-860c190", "1.2", "1", "latest"]);
        let sha = p.tags.iter().find(|t| t.tag == "sha-860c190").unwrap();
        assert!(!sha.floating, "a commit names one image");
        // An old release re-run still gets its commit tag, and nothing floating.
        let existing = vs(&["1.2.3", "1.2.4", "2.0.0"]);
        let p = plan(&ctx, &existing, &PlanOptions::default()).unwrap();
        assert_eq!(names(&p), ["1.2.3", "sha-860c190"]);
        // Pre-releases and templates keep it too.
        let pre = Context {
            version: Some("2.0.0-rc.1".into()),
            ..ctx.clone()
        };
        let p = plan(&pre, &[], &PlanOptions::default()).unwrap();
        assert_eq!(names(&p), ["2.0.0-rc.1", "sha-860c190"]);
    }

    #[test]
    fn zero_x_and_floating_ranges() {
        let p = plan(&release("0.4.1"), &[], &PlanOptions::default()).unwrap();
        assert_eq!(names(&p), ["0.4.1", "0.4", "latest"]);
        let p = plan(
            &release("0.4.1"),
            &[],
            &PlanOptions {
                major_zero: true,
                ..PlanOptions::default()
            },
        )
        .unwrap();
        assert_eq!(names(&p), ["0.4.1", "0.4", "0", "latest"]);
        // Patching 1.x after 2.0: 1.2 and 1 move, latest does not.
        let existing = vs(&["1.2.3", "2.0.0"]);
        let p = plan(&release("1.2.4"), &existing, &PlanOptions::default()).unwrap();
        assert_eq!(names(&p), ["1.2.4", "1.2", "1"]);
        assert!(p
            .skipped
            .iter()
            .any(|s| s.tag == "latest" && s.reason.contains("2.0.0")));
        // An old release re-run moves nothing floating.
        let existing = vs(&["1.2.3", "1.2.4", "1.3.0", "2.0.0"]);
        let p = plan(&release("1.2.3"), &existing, &PlanOptions::default()).unwrap();
        assert_eq!(names(&p), ["1.2.3"]);
        assert_eq!(p.skipped.len(), 3);
        // Pre-releases in the repository do not hold ranges back.
        let p = plan(
            &release("1.3.0"),
            &vs(&["1.3.1-rc.1"]),
            &PlanOptions::default(),
        )
        .unwrap();
        assert_eq!(names(&p), ["1.3.0", "1.3", "1", "latest"]);
        let p = plan(
            &release("1.0.0"),
            &[],
            &PlanOptions {
                no_latest: true,
                ..PlanOptions::default()
            },
        )
        .unwrap();
        assert_eq!(names(&p), ["1.0.0", "1.0", "1"]);
    }

    #[test]
    fn refs_without_a_version() {
        let sha = Some("860c1904a1ce19322e91ac35af1ab07466440c37".to_owned());
        let ctx = Context {
            git_ref: Some(RefKind::Branch("master".into())),
            sha: sha.clone(),
            ..Context::default()
        };
        let p = plan(&ctx, &[], &PlanOptions::default()).unwrap();
        assert_eq!(names(&p), ["sha-860c190", "master"]);
        let ctx = Context {
            git_ref: Some(RefKind::Branch("feature/Login-UI".into())),
            ..Context::default()
        };
        assert_eq!(
            names(&plan(&ctx, &[], &PlanOptions::default()).unwrap()),
            ["feature-Login-UI"]
        );
        let ctx = Context {
            git_ref: Some(RefKind::PullRequest(2)),
            sha: sha.clone(),
            ..Context::default()
        };
        assert_eq!(
            names(&plan(&ctx, &[], &PlanOptions::default()).unwrap()),
            ["sha-860c190", "pr-2"]
        );
        let ctx = Context {
            git_ref: Some(RefKind::Branch("main".into())),
            default_branch: Some("main".into()),
            ..Context::default()
        };
        let p = plan(
            &ctx,
            &[],
            &PlanOptions {
                edge: true,
                ..PlanOptions::default()
            },
        )
        .unwrap();
        assert_eq!(names(&p), ["main", "edge"]);
        assert_eq!(
            plan(&Context::default(), &[], &PlanOptions::default()),
            Err(PlanError::Empty)
        );
        assert!(matches!(
            plan(&release("one"), &[], &PlanOptions::default()),
            Err(PlanError::InvalidVersion(_))
        ));
        assert_eq!(sanitize("refs/.hidden"), "refs-.hidden");
        assert_eq!(sanitize("..x/y"), "x-y");
    }

    #[test]
    fn metadata_action_semver_patterns() {
        // The patterns of docker/metadata-action's `type=semver` documentation.
        let cases = [
            ("v1.2.3", "{{raw}}", Some("v1.2.3")),
            ("v1.2.3", "{{version}}", Some("1.2.3")),
            ("v1.2.3", "{{major}}.{{minor}}", Some("1.2")),
            ("v1.2.3", "v{{major}}", Some("v1")),
            ("v1.2.3", "{{minor}}", Some("2")),
            ("v1.2.3", "{{patch}}", Some("3")),
            ("v1.2.3", "{{major}}.{{minor}}.{{patch}}", Some("1.2.3")),
            ("v2.0.8-beta.67", "{{raw}}", Some("v2.0.8-beta.67")),
            ("v2.0.8-beta.67", "{{version}}", Some("2.0.8-beta.67")),
            ("v2.0.8-beta.67", "{{major}}.{{minor}}", None),
        ];
        for (version, template, want) in cases {
            let opts = PlanOptions {
                templates: vec![template.into()],
                no_latest: true,
                ..PlanOptions::default()
            };
            let p = plan(&release(version), &[], &opts).unwrap_or(Plan {
                version: None,
                tags: vec![],
                skipped: vec![],
            });
            assert_eq!(names(&p).first().copied(), want, "{version} {template}");
        }
    }

    #[test]
    fn templates() {
        let opts = PlanOptions {
            templates: vec![
                "{{major}}.{{minor}}".into(),
                "stable".into(),
                "v{{version}}".into(),
            ],
            ..PlanOptions::default()
        };
        let p = plan(&release("1.4.2"), &[], &opts).unwrap();
        assert_eq!(names(&p), ["v1.4.2", "1.4", "stable", "latest"]);
        let p = plan(&release("1.4.2"), &vs(&["2.0.0"]), &opts).unwrap();
        assert_eq!(names(&p), ["v1.4.2"]);
        let p = plan(&release("1.5.0-rc.1"), &[], &opts).unwrap();
        assert_eq!(names(&p), ["v1.5.0-rc.1"]);
        let ctx = Context {
            git_ref: Some(RefKind::Branch("dev".into())),
            sha: Some("ABCDEF123".into()),
            ..Context::default()
        };
        let p = plan(
            &ctx,
            &[],
            &PlanOptions {
                templates: vec!["{{branch}}-{{sha}}".into(), "{{major}}".into()],
                ..PlanOptions::default()
            },
        )
        .unwrap();
        assert!(names(&p).contains(&"dev-abcdef1"));
        assert!(p.skipped.iter().any(|s| s.tag == "{{major}}"));
    }
}
