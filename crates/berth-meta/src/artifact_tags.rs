//! Tags by which registries without the referrers API attach artifacts to a manifest.
//!
//! - cosign v2 keeps signatures, attestations and SBOMs of `sha256:<hex>` under the tags
//!   `sha256-<hex>.sig`, `.att` and `.sbom` ([`legacy_subject`]). The manifests they point
//!   at carry no `subject` field, so a store lists them as referrers of the digest their
//!   tag names.
//! - the OCI referrers tag schema keeps an index of a subject's referrers under
//!   `<alg>-<hex>` (the hex cut to 64 characters), maintained by clients.
//!
//! Both are bookkeeping rather than releases, so stores hide them from the default tags
//! list ([`is_hidden`]). These rules are plain functions of the tag's name, shared by
//! every backend; the SQLite migration `0007_artifact_tags.sql` applies the same rules to
//! tags written before them, and a test checks that the two agree.

use berth_oci::Digest;

/// The suffixes of cosign v2's artifact tags: signatures, attestations, SBOMs.
pub const LEGACY_SUFFIXES: [&str; 3] = ["sig", "att", "sbom"];

/// Length of the hex part of both kinds of tags.
const HEX_LEN: usize = 64;

fn is_hex64(s: &str) -> bool {
    s.len() == HEX_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The subject named by a cosign v2 artifact tag (`sha256-<hex>.sig`, `.att`, `.sbom`),
/// or `None` for any other tag.
pub fn legacy_subject(tag: &str) -> Option<Digest> {
    let (stem, suffix) = tag.rsplit_once('.')?;
    if !LEGACY_SUFFIXES.contains(&suffix) {
        return None;
    }
    let hex = stem.strip_prefix("sha256-").filter(|h| is_hex64(h))?;
    format!("sha256:{hex}").parse().ok()
}

/// True for a tag of the referrers tag schema: `sha256-<hex>` or `sha512-<hex>` with 64
/// lowercase hex digits and nothing after them.
pub fn is_tag_schema(tag: &str) -> bool {
    ["sha256-", "sha512-"]
        .iter()
        .any(|p| tag.strip_prefix(p).is_some_and(is_hex64))
}

/// True for tags hidden from the default tags list: cosign v2 artifact tags and the
/// referrers tag schema's tags.
pub fn is_hidden(tag: &str) -> bool {
    legacy_subject(tag).is_some() || is_tag_schema(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_tags_name_their_subject() {
        let d = Digest::sha256(b"image");
        for s in LEGACY_SUFFIXES {
            let tag = format!("sha256-{}.{s}", d.hex());
            assert_eq!(legacy_subject(&tag), Some(d.clone()), "{tag}");
            assert!(is_hidden(&tag));
            assert!(!is_tag_schema(&tag));
        }
        let hex = d.hex();
        for other in [
            format!("sha256-{hex}"),
            format!("sha256-{hex}.sig2"),
            format!("sha256-{hex}.SIG"),
            format!("sha256-{}.sig", &hex[1..]),
            format!("sha256-{}.sig", hex.to_uppercase()),
            format!("sha512-{hex}.sig"),
            format!("v1-{hex}.sig"),
            "latest".to_owned(),
        ] {
            assert_eq!(legacy_subject(&other), None, "{other}");
        }
    }

    #[test]
    fn tag_schema_tags_are_hidden_and_lookalikes_are_not() {
        let hex = Digest::sha256(b"x").hex().to_owned();
        assert!(is_tag_schema(&format!("sha256-{hex}")));
        assert!(is_tag_schema(&format!("sha512-{hex}")));
        assert!(is_hidden(&format!("sha512-{hex}")));
        for visible in [
            format!("sha256-{}", &hex[..63]),
            format!("sha256-{hex}0"),
            format!("sha256-{hex}-debug"),
            format!("sha1-{hex}"),
            "sha256-abc".to_owned(),
            "1.0".to_owned(),
        ] {
            assert!(!is_hidden(&visible), "{visible}");
        }
    }
}
