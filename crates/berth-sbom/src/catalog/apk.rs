//! Alpine's database, `lib/apk/db/installed`: stanzas of `K:value` lines separated by
//! blank lines (`P` name, `V` version, `A` arch, `L` licence), as apk's documentation
//! of the installed database describes.

use crate::{Kind, Package};

/// The packages of an `installed` file.
pub fn parse(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut p = Package::new(Kind::Apk, "", "");
        for line in stanza.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            match k {
                "P" => p.name = v.to_owned(),
                "V" => p.version = v.to_owned(),
                "A" => p.arch = Some(v.to_owned()),
                "L" if !v.is_empty() => p.licenses = vec![v.to_owned()],
                "o" if !v.is_empty() => p.upstream = Some(v.to_owned()),
                _ => {}
            }
        }
        if !p.name.is_empty() && !p.version.is_empty() {
            // The origin is worth saying only when it is another package.
            if p.upstream.as_deref() == Some(p.name.as_str()) {
                p.upstream = None;
            }
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two stanzas as apk writes them (fields from apk-tools' `apk_db_write_fdb`).
    pub(crate) const INSTALLED: &str = "C:Q1hdUpqRv5mYgJEqW52UmVsvmy6WE=\nP:musl\nV:1.2.5-r0\nA:x86_64\nS:411323\nI:643072\nT:the musl c library (libc) implementation\nU:https://musl.libc.org/\nL:MIT\no:musl\nm:Natanael Copa <ncopa@alpinelinux.org>\nt:1712317592\nc:7b1aefb8bcb73a4c1ac8cb2fc3b32e17d4f5e0e0\np:so:libc.musl-x86_64.so.1=1\nF:lib\nR:ld-musl-x86_64.so.1\na:0:0:755\nZ:Q1xyz=\n\nC:Q1abc=\nP:busybox\nV:1.36.1-r28\nA:x86_64\nL:GPL-2.0-only\no:busybox\nD:so:libc.musl-x86_64.so.1\n\n";

    #[test]
    fn reads_name_version_arch_licence() {
        let p = parse(INSTALLED);
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].name.as_str(), p[0].version.as_str()),
            ("musl", "1.2.5-r0")
        );
        assert_eq!(p[0].arch.as_deref(), Some("x86_64"));
        assert_eq!(p[1].licenses, ["GPL-2.0-only"]);
    }
}
