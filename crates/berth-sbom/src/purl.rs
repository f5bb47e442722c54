//! Package URLs (the purl specification): `pkg:<type>/<namespace>/<name>@<version>?
//! <qualifiers>`, each component percent-encoded except for unreserved characters.
//! OS packages take their namespace and `distro` qualifier from the OS release:
//! `pkg:deb/debian/openssl@3.0.11-1?arch=amd64&distro=debian-12`.

use crate::{Kind, OsRelease, Package};

/// Percent-encodes everything but `A-Z a-z 0-9 . - _ ~`.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The package URL of `p`, in an image whose OS release is `os`.
pub fn of(p: &Package, os: Option<&OsRelease>) -> String {
    let kind = p.kind;
    let mut qualifiers: Vec<(&str, String)> = Vec::new();
    let namespace = match kind {
        Kind::Deb | Kind::Rpm | Kind::Apk => {
            if let Some(arch) = &p.arch {
                qualifiers.push(("arch", arch.clone()));
            }
            if let Some(epoch) = &p.epoch {
                qualifiers.push(("epoch", epoch.clone()));
            }
            if let Some(upstream) = &p.upstream {
                qualifiers.push(("upstream", upstream.clone()));
            }
            let os = os.filter(|o| !o.id.is_empty());
            if let Some(os) = os {
                let distro = if os.version_id.is_empty() {
                    os.id.clone()
                } else {
                    format!("{}-{}", os.id, os.version_id)
                };
                qualifiers.push(("distro", distro));
            }
            let fallback = match kind {
                Kind::Deb => "debian",
                Kind::Apk => "alpine",
                _ => "redhat",
            };
            Some(os.map_or(fallback.to_owned(), |o| o.id.to_lowercase()))
        }
        _ => p.namespace.clone(),
    };
    let mut out = format!("pkg:{}/", kind.purl_type());
    if let Some(ns) = namespace {
        for seg in ns.split('/').filter(|s| !s.is_empty()) {
            out.push_str(&encode(seg));
            out.push('/');
        }
    }
    let name = match kind {
        // PEP 503 normalisation, as the purl spec asks for pypi names.
        Kind::Python => p.name.to_lowercase().replace(['_', '.'], "-"),
        _ => p.name.clone(),
    };
    if kind == Kind::Go {
        // Go module paths keep their slashes as namespace segments.
        let segs: Vec<String> = name.split('/').map(encode).collect();
        out.push_str(&segs.join("/"));
    } else {
        out.push_str(&encode(&name));
    }
    if !p.version.is_empty() {
        out.push('@');
        out.push_str(&encode(&p.version));
    }
    qualifiers.sort();
    for (i, (k, v)) in qualifiers.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        out.push_str(&encode(v));
    }
    out
}

/// The package URL of an OCI image: `pkg:oci/<last path segment>@<digest>?
/// repository_url=<registry/repository>`.
pub fn image(name: &str, digest: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    format!(
        "pkg:oci/{}@{}?repository_url={}",
        encode(&last.to_lowercase()),
        encode(digest),
        encode(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debian() -> OsRelease {
        OsRelease {
            id: "debian".into(),
            version_id: "12".into(),
            pretty_name: String::new(),
        }
    }

    #[test]
    fn os_packages_name_their_distro() {
        let mut p = Package::new(Kind::Deb, "openssl", "3.0.11-1");
        p.arch = Some("amd64".into());
        assert_eq!(
            of(&p, Some(&debian())),
            "pkg:deb/debian/openssl@3.0.11-1?arch=amd64&distro=debian-12"
        );
        let mut p = Package::new(Kind::Deb, "libssl3", "3.0.11-1");
        p.upstream = Some("openssl".into());
        assert_eq!(
            of(&p, Some(&debian())),
            "pkg:deb/debian/libssl3@3.0.11-1?distro=debian-12&upstream=openssl"
        );
        let mut p = Package::new(Kind::Deb, "libc6", "1:2.36+b1");
        assert_eq!(of(&p, None), "pkg:deb/debian/libc6@1%3A2.36%2Bb1");
        p.kind = Kind::Rpm;
        p.epoch = Some("1".into());
        p.arch = Some("x86_64".into());
        let fedora = OsRelease {
            id: "fedora".into(),
            version_id: "40".into(),
            pretty_name: String::new(),
        };
        assert_eq!(
            of(&p, Some(&fedora)),
            "pkg:rpm/fedora/libc6@1%3A2.36%2Bb1?arch=x86_64&distro=fedora-40&epoch=1"
        );
    }

    #[test]
    fn language_packages() {
        let mut p = Package::new(Kind::Npm, "node", "20.1.0");
        p.namespace = Some("@types".into());
        assert_eq!(of(&p, None), "pkg:npm/%40types/node@20.1.0");
        let p = Package::new(Kind::Python, "Zope.Interface", "6.0");
        assert_eq!(of(&p, Some(&debian())), "pkg:pypi/zope-interface@6.0");
        let p = Package::new(Kind::Go, "golang.org/x/sys", "v0.20.0");
        assert_eq!(of(&p, None), "pkg:golang/golang.org/x/sys@v0.20.0");
        let mut p = Package::new(Kind::Maven, "guava", "33.0.0-jre");
        p.namespace = Some("com.google.guava".into());
        assert_eq!(of(&p, None), "pkg:maven/com.google.guava/guava@33.0.0-jre");
        assert_eq!(
            image("localhost:5000/team/app", "sha256:ab"),
            "pkg:oci/app@sha256%3Aab?repository_url=localhost%3A5000%2Fteam%2Fapp"
        );
    }
}
