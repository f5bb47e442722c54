//! `berth publish`: pushes one image, or per-platform images as one index, under the tag
//! plan the version and CI context call for, with the standard OCI annotations, in one
//! atomic multi-tag push where the registry supports it (ordered pushes elsewhere).
//!
//! With `--sign-key`, every manifest it pushes (the index and each platform's manifest)
//! is signed, and the `--attest` predicates attached to each, **before** any tag is
//! pushed: the top manifest is first pushed by digest only, then signed, then tagged, so
//! no tag ever names an unsigned release (and a registry that gates release tags on a
//! signature never has to hide one).

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context as _};
use berth_client::index::{bring_into, build_index, collect, entries_of};
use berth_client::registry::repo_scope;
use berth_client::sign::{sign_subject, Claim, Format, SignOptions, Signed};
use berth_client::transport::open_source;
use berth_client::{ClientError, ImageRef, Location, Manifest};
use berth_publish::{plan, Context, PlanOptions, RefKind};
use clap::Args;

use crate::cmd::{block_on, default_jobs, print_json, registry_ref, Common};

/// Publish a release: one image, or several per-platform images as one multi-arch index,
/// under every tag its version and CI context call for.
///
/// A release version (--version, or a CI tag such as GITHUB_REF=refs/tags/v1.2.3) gives
/// 1.2.3, 1.2, 1 and latest, each floating tag only while no higher release of its range
/// is published; a pre-release gets only its exact tag. Without a version: the branch
/// and pr-<N>. With a known commit, sha-<7 hex> too (a release included). The manifest or index carries the org.opencontainers.image.*
/// annotations. Publishing twice with the same inputs changes nothing.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  berth publish oci:./build/amd64 oci:./build/arm64 --repo registry.example.com/team/app --version v1.2.3
  berth publish localhost:5000/tmp/app:ci --repo localhost:5000/team/app --dry-run
  GITHUB_REF=refs/tags/v2.0.0 GITHUB_SHA=$SHA berth publish oci:./img --repo ghcr.io/org/app --json
  berth publish oci:./img --repo localhost:5000/app --version 1.4.0 --tag-template '{{major}}.{{minor}}' --tag-template stable
  berth publish oci:./amd64 oci:./arm64 --repo localhost:5000/app --version 2.0.0 --sign-key cosign.key --attest sbom.spdx.json:spdxjson
  berth publish oci:./amd64 oci:./arm64 --repo localhost:5000/app --version 2.1.0 --sbom --sign-key cosign.key

With --sign-key, the password of an encrypted key comes from COSIGN_PASSWORD or a prompt,
and every manifest is signed before any tag is pushed. Keyless signing (Fulcio, Rekor)
needs the public Sigstore services and is not supported.")]
pub struct PublishArgs {
    /// Images to publish; several are assembled into one index (platforms from their configs).
    #[arg(required = true)]
    sources: Vec<String>,
    /// Target repository, REGISTRY/NAME.
    #[arg(long)]
    repo: String,
    /// Release version (v1.2.3 or 1.2.3); default: from the CI's git tag.
    #[arg(long)]
    version: Option<String>,
    /// Branch name (default: from the CI, else the local git checkout).
    #[arg(long)]
    branch: Option<String>,
    /// Commit SHA (default: from the CI, else `git rev-parse HEAD`).
    #[arg(long)]
    sha: Option<String>,
    /// Pull/merge request number.
    #[arg(long)]
    pr: Option<u64>,
    /// The default branch, which gets `edge` with --edge.
    #[arg(long)]
    default_branch: Option<String>,
    /// Give the default branch the `edge` tag.
    #[arg(long)]
    edge: bool,
    /// Replace the release tags with templates ({{version}}, {{major}}, {{minor}},
    /// {{patch}}, {{sha}}, {{branch}}); repeat.
    #[arg(long = "tag-template", value_name = "TEMPLATE")]
    templates: Vec<String>,
    /// Never tag latest.
    #[arg(long)]
    no_latest: bool,
    /// Give 0.x releases the `0` tag too.
    #[arg(long)]
    major_zero: bool,
    /// Extra or overriding annotations, KEY=VALUE; repeat.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// org.opencontainers.image.created (default: SOURCE_DATE_EPOCH, else the commit time).
    #[arg(long)]
    created: Option<String>,
    /// org.opencontainers.image.source (default: from the CI).
    #[arg(long)]
    source: Option<String>,
    /// org.opencontainers.image.title (default: the repository's last name component).
    #[arg(long)]
    title: Option<String>,
    /// org.opencontainers.image.url.
    #[arg(long)]
    url: Option<String>,
    /// org.opencontainers.image.licenses (SPDX expression).
    #[arg(long)]
    licenses: Option<String>,
    /// Do not copy the referrers (signatures, attestations, SBOMs) of the source images.
    #[arg(long)]
    no_referrers: bool,
    /// Sign every pushed manifest (the index and each platform) with this private key
    /// before any tag is pushed, as `berth sign` does.
    #[arg(long, value_name = "FILE")]
    sign_key: Option<std::path::PathBuf>,
    /// Sign in cosign v2's layout (sha256-<hex>.sig/.att tags) instead of cosign v3
    /// bundle referrers.
    #[arg(long, requires = "sign_key")]
    sign_legacy: bool,
    /// Attach this predicate file as a signed attestation to every pushed manifest, with
    /// its type (as `berth attest --type`; default: guessed from the file name, else
    /// custom); repeat. Needs --sign-key.
    #[arg(long = "attest", value_name = "FILE[:TYPE]", requires = "sign_key")]
    attest: Vec<String>,
    /// Make an SBOM of every published platform's image (as `berth sbom`: spdx-json, the
    /// default, or cyclonedx-json) and attach it as a referrer before any tag is pushed;
    /// with --sign-key it is also signed as an attestation.
    #[arg(long, value_name = "FORMAT", num_args = 0..=1, default_missing_value = "spdx-json")]
    sbom: Option<berth_sbom::Format>,
    /// Print the plan and push nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the plan and the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: Common,
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Flags first, then the CI's variables, then the local git checkout.
fn context(args: &PublishArgs) -> Context {
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut ctx = Context::from_ci(&env).unwrap_or_else(|| Context {
        version: git(&["describe", "--exact-match", "--tags", "HEAD"]),
        git_ref: git(&["rev-parse", "--abbrev-ref", "HEAD"])
            .filter(|b| b != "HEAD")
            .map(RefKind::Branch),
        sha: git(&["rev-parse", "HEAD"]),
        default_branch: None,
    });
    if let Some(v) = &args.version {
        ctx.version = Some(v.clone());
    }
    if let Some(b) = &args.branch {
        ctx.git_ref = Some(RefKind::Branch(b.clone()));
    }
    if let Some(n) = args.pr {
        ctx.git_ref = Some(RefKind::PullRequest(n));
    }
    if let Some(s) = &args.sha {
        ctx.sha = Some(s.clone());
    }
    if let Some(d) = &args.default_branch {
        ctx.default_branch = Some(d.clone());
    }
    ctx
}

fn annotations(
    args: &PublishArgs,
    ctx: &Context,
    version: Option<String>,
    target: &ImageRef,
) -> anyhow::Result<BTreeMap<String, String>> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut a = BTreeMap::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            a.insert(format!("org.opencontainers.image.{k}"), v);
        }
    };
    put("version", version);
    put("revision", ctx.sha.clone());
    // Deterministic, so that publishing the same inputs twice gives the same digest.
    let created = args.created.clone().or_else(|| {
        env("SOURCE_DATE_EPOCH")
            .and_then(|s| s.parse::<i64>().ok())
            .map(berth_oci::time::rfc3339)
            .or_else(|| git(&["log", "-1", "--format=%cI"]))
    });
    put("created", created);
    let source = args.source.clone().or_else(|| {
        match (env("GITHUB_SERVER_URL"), env("GITHUB_REPOSITORY")) {
            (Some(s), Some(r)) => Some(format!("{s}/{r}")),
            _ => env("CI_PROJECT_URL"),
        }
    });
    put("source", source.clone());
    put("url", args.url.clone().or(source));
    put(
        "title",
        Some(args.title.clone().unwrap_or_else(|| {
            target
                .repository
                .as_str()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned()
        })),
    );
    put("licenses", args.licenses.clone());
    for kv in &args.annotations {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("annotation {kv:?} is not KEY=VALUE"))?;
        a.insert(k.to_owned(), v.to_owned());
    }
    Ok(a)
}

/// The top manifest with `annotations` merged in (new bytes, new digest).
fn annotate(m: &Manifest, annotations: &BTreeMap<String, String>) -> anyhow::Result<Manifest> {
    let mut json: serde_json::Value = serde_json::from_slice(&m.bytes)?;
    let obj = json
        .as_object_mut()
        .context("manifest is not a JSON object")?;
    let entry = obj
        .entry("annotations")
        .or_insert_with(|| serde_json::json!({}));
    let map = entry
        .as_object_mut()
        .context("manifest annotations are not an object")?;
    for (k, v) in annotations {
        map.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    let bytes = serde_json::to_vec_pretty(&json)?;
    Ok(Manifest::from_bytes(bytes.into(), Some(&m.media_type))?)
}

pub fn run(args: PublishArgs) -> anyhow::Result<()> {
    block_on(async move {
        let target = registry_ref(&args.repo)?;
        let ctx = context(&args);
        let clients = args.common.clients()?;
        let reg = clients.registry(&target.registry)?;
        let existing: Vec<semver::Version> = match reg.tags(&target.repository).await {
            Ok(tags) => berth_publish::released_versions(tags.iter().map(String::as_str)),
            Err(ClientError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let opts = PlanOptions {
            templates: args.templates.clone(),
            no_latest: args.no_latest,
            major_zero: args.major_zero,
            edge: args.edge,
            ..PlanOptions::default()
        };
        let plan = plan(&ctx, &existing, &opts)?;
        let plan_json = serde_json::json!({
            "version": plan.version.as_ref().map(|v| v.to_string()),
            "tags": plan.tags.iter().map(|t| serde_json::json!({"tag": t.tag, "floating": t.floating})).collect::<Vec<_>>(),
            "skipped": plan.skipped.iter().map(|s| serde_json::json!({"tag": s.tag, "reason": s.reason})).collect::<Vec<_>>(),
        });
        if args.dry_run {
            if args.json {
                return print_json(&serde_json::json!({ "plan": plan_json, "dry_run": true }));
            }
            print_plan(&plan);
            return Ok(());
        }

        // The key and the predicates are read before anything is pushed, so that a wrong
        // password or a bad file leaves the registry untouched.
        let signer = match &args.sign_key {
            Some(path) => Some(berth_trust::KeySigner::new(
                crate::cmd::key::read_private_key(path)?,
            )),
            None => None,
        };
        let attestations = args
            .attest
            .iter()
            .map(|spec| attestation(spec))
            .collect::<anyhow::Result<Vec<Claim>>>()?;

        let copy_opts = berth_client::CopyOptions {
            jobs: default_jobs(),
            referrers: !args.no_referrers,
            ..Default::default()
        };
        let progress = args.common.progress();
        let locations: Vec<Location> = args
            .sources
            .iter()
            .map(|s| Location::parse(s))
            .collect::<Result<_, _>>()?;
        let (top, platforms) = if locations.len() == 1 {
            let src = open_source(&clients, &locations[0]).await?;
            let (root, entries) = entries_of(src.as_ref()).await?;
            bring_into(
                &clients,
                &target,
                &locations[0],
                src.as_ref(),
                &root,
                &copy_opts,
                progress.clone(),
            )
            .await?;
            (root, entries)
        } else {
            let entries =
                collect(&clients, &target, &locations, &copy_opts, progress.clone()).await?;
            (build_index(&entries)?, entries)
        };
        let version = plan.version.as_ref().map(|v| v.to_string());
        let top = annotate(&top, &annotations(&args, &ctx, version, &target)?)?;
        let tags: Vec<&str> = plan.tags.iter().map(|t| t.tag.as_str()).collect();

        let mut signed: Vec<Signed> = Vec::new();
        if signer.is_some() || args.sbom.is_some() {
            // By digest first, so that signatures and SBOMs exist before any tag does.
            reg.put_manifest(
                &target.repository,
                &berth_oci::Reference::Digest(top.digest.clone()),
                &top,
            )
            .await?;
        }
        let sboms = match args.sbom {
            Some(format) => sboms(&reg, &target, &top, format, &args.common).await?,
            None => Vec::new(),
        };
        if let Some(signer) = &signer {
            let mut subjects = vec![top.descriptor()];
            if top.is_index() {
                subjects.extend(top.parse()?.manifests);
            }
            let opts = SignOptions {
                format: if args.sign_legacy {
                    Format::Legacy
                } else {
                    Format::Bundle
                },
                ..SignOptions::default()
            };
            let name = target.name();
            for subject in &subjects {
                let sbom = sboms
                    .iter()
                    .filter(|s| s.subject == subject.digest)
                    .map(|s| s.claim.clone());
                let claims: Vec<Claim> = std::iter::once(Claim::Signature)
                    .chain(attestations.iter().cloned())
                    .chain(sbom)
                    .collect();
                for claim in &claims {
                    signed.push(
                        sign_subject(
                            &reg,
                            &target.repository,
                            &name,
                            subject,
                            signer,
                            claim,
                            &opts,
                        )
                        .await?,
                    );
                }
            }
        }

        // One PUT by digest carrying every tag: atomic on registries that apply `?tag=`
        // (they answer one OCI-Tag header per tag); elsewhere, ordered PUTs by tag.
        let query: Vec<String> = tags.iter().map(|t| format!("tag={t}")).collect();
        let url = reg.url(&format!(
            "/v2/{}/manifests/{}?{}",
            target.repository,
            top.digest,
            query.join("&")
        ));
        let resp = reg
            .send(&[repo_scope(&target.repository, true)], |c| {
                c.put(&url)
                    .header("content-type", &top.media_type)
                    .body(top.bytes.clone())
            })
            .await?;
        let resp = reg
            .check(resp, "PUT manifest", &format!("release {}", top.digest))
            .await?;
        let applied: Vec<String> = resp
            .headers()
            .get_all("oci-tag")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let atomic = tags.iter().all(|t| applied.iter().any(|a| a == t));
        if !atomic {
            for t in &plan.tags {
                let tag: berth_oci::Tag = t.tag.parse()?;
                reg.put_manifest(&target.repository, &berth_oci::Reference::Tag(tag), &top)
                    .await?;
            }
        }
        let platforms: Vec<String> = platforms
            .iter()
            .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
            .collect();
        if args.json {
            return print_json(&serde_json::json!({
                "plan": plan_json,
                "repository": format!("{}/{}", target.registry, target.repository),
                "digest": top.digest.to_string(),
                "media_type": top.media_type,
                "platforms": platforms,
                "tags": tags,
                "atomic": atomic,
                "signed": signed,
                "sboms": sboms.iter().map(|s| serde_json::json!({
                    "subject": s.subject.to_string(),
                    "referrer": s.referrer.to_string(),
                    "packages": s.packages,
                })).collect::<Vec<_>>(),
            }));
        }
        print_plan(&plan);
        println!(
            "published {}/{}@{} ({}) as {}{}",
            target.registry,
            target.repository,
            top.digest,
            if platforms.is_empty() {
                "no platform".into()
            } else {
                platforms.join(", ")
            },
            tags.join(", "),
            if atomic {
                " in one atomic push"
            } else {
                " (ordered pushes: the registry has no multi-tag push)"
            }
        );
        for s in &sboms {
            println!(
                "SBOM of {} ({} packages): referrer {}",
                s.subject, s.packages, s.referrer
            );
        }
        if let Some(signer) = &signer {
            println!(
                "signed {} manifests with key {} ({} signatures and attestations)",
                signed
                    .iter()
                    .map(|s| &s.subject)
                    .collect::<std::collections::BTreeSet<_>>()
                    .len(),
                signer.public_key().fingerprint(),
                signed.len()
            );
        }
        if tags.is_empty() {
            bail!("the plan has no tag");
        }
        Ok(())
    })
}

/// An SBOM `--sbom` attached to one published image.
struct Sbom {
    /// The platform image it describes.
    subject: berth_oci::Digest,
    /// The referrer pushed.
    referrer: berth_oci::Digest,
    packages: usize,
    /// The document as an attestation, for --sign-key.
    claim: Claim,
}

/// Makes and attaches the SBOM of each platform image of `top` (already pushed with its
/// images), reading the layers back from the target repository.
async fn sboms(
    reg: &berth_client::Registry,
    target: &ImageRef,
    top: &Manifest,
    format: berth_sbom::Format,
    common: &Common,
) -> anyhow::Result<Vec<Sbom>> {
    let src = berth_client::transport::RegistrySource::new(
        reg.clone(),
        target.with_digest(top.digest.clone()),
    );
    let images: Vec<(Manifest, Option<berth_oci::Platform>)> = if top.is_index() {
        let mut out = Vec::new();
        // Attestation manifests of build tools (platform unknown/unknown) are no images.
        for d in top.parse()?.manifests {
            if d.platform.as_ref().is_some_and(|p| p.os == "unknown") {
                continue;
            }
            out.push((
                berth_client::ImageSource::manifest(&src, &d).await?,
                d.platform,
            ));
        }
        out
    } else {
        vec![(top.clone(), None)]
    };
    let stamp = crate::cmd::sbom::stamp();
    let mut out = Vec::new();
    for (image, platform) in images {
        let scanned =
            berth_client::sbom::inventory_of(&src, &image, platform, default_jobs()).await?;
        let subject = berth_sbom::Subject {
            name: target.name(),
            digest: image.digest.to_string(),
            tag: None,
            platform: scanned.platform.as_ref().map(|p| p.to_string()),
        };
        let doc = format.write(&scanned.inventory, &subject, &stamp)?;
        let claim = Claim::Attestation {
            predicate_type: format.predicate_type().to_owned(),
            predicate: serde_json::from_slice(&doc)?,
        };
        let referrer = berth_client::sbom::attach(
            reg,
            &target.repository,
            &scanned.manifest,
            format,
            doc,
            &stamp.created,
        )
        .await?;
        if !common.quiet {
            for note in &scanned.inventory.notes {
                eprintln!("note: {note}");
            }
        }
        out.push(Sbom {
            subject: image.digest.clone(),
            referrer,
            packages: scanned.inventory.packages.len(),
            claim,
        });
    }
    Ok(out)
}

/// An `--attest FILE[:TYPE]` argument as the claim to sign. The type is what follows
/// the first `:` that starts a valid type (so `sbom.json:https://spdx.dev/Document`
/// works), else it is guessed from the file name.
fn attestation(spec: &str) -> anyhow::Result<Claim> {
    let split = spec.match_indices(':').find_map(|(i, _)| {
        let uri = berth_trust::intoto::predicate_type_uri(&spec[i + 1..]).ok()?;
        Some((&spec[..i], uri))
    });
    let (file, predicate_type) = match split {
        Some((file, uri)) if !file.is_empty() => (file, uri),
        _ => (
            spec,
            berth_trust::intoto::predicate_type_uri(berth_publish::attestation_type(spec))?,
        ),
    };
    let predicate = crate::cmd::sign::read_predicate(std::path::Path::new(file))?;
    Ok(Claim::Attestation {
        predicate_type,
        predicate,
    })
}

fn print_plan(plan: &berth_publish::Plan) {
    if let Some(v) = &plan.version {
        eprintln!("version {v}");
    }
    for t in &plan.tags {
        eprintln!(
            "  tag  {}{}",
            t.tag,
            if t.floating { " (floating)" } else { "" }
        );
    }
    for s in &plan.skipped {
        eprintln!("  skip {}: {}", s.tag, s.reason);
    }
}
