//! Executables: Go's embedded build info and `cargo auditable`'s dependency list.
//!
//! **Go** (as `debug/buildinfo` and `cmd/go/internal/version` read it): the linker
//! writes a 32-byte header into the `.go.buildinfo` section, 16-byte aligned: the magic
//! `\xff Go buildinf:` (14 bytes), the pointer size, and flags. Since Go 1.18 (flag bit
//! 2) the Go version and the module info follow inline as varint-length-prefixed
//! strings; the module info is framed by 16-byte sentinels and holds tab-separated
//! lines (`path`, `mod`, `dep`, `=>` for a replacement of the line before, `build`).
//! In a file without section headers the magic is searched for at 16-byte aligned
//! offsets, as Go's reader does in the data segment. Binaries of older Go versions keep pointers
//! instead of strings and are reported in a note.
//!
//! **Rust**: `cargo auditable` stores zlib-compressed JSON in the `.dep-v0` section:
//! `{"packages":[{"name","version","source","kind","dependencies","root"}]}`. Build-time
//! dependencies are not in the binary and are left out.

use std::io::Read;

use serde::Deserialize;

use super::Found;
use crate::{elf, Kind, Package};

const GO_MAGIC: &[u8] = b"\xff Go buildinf:";
const GO_FLAG_INLINE: u8 = 0x2;
/// Largest decompressed `cargo auditable` JSON read (its own format's limit).
const MAX_AUDIT_JSON: u64 = 8 << 20;

/// What an executable says it was built from.
pub fn catalogue(path: &str, bytes: &[u8]) -> Found {
    if !elf::is_elf(bytes) {
        return Found::default();
    }
    let mut found = Found::default();
    if let Some(info) = go_buildinfo(bytes) {
        match info {
            Ok(packages) => found.packages.extend(packages),
            Err(why) => found.notes.push(format!("/{path}: {why}")),
        }
    }
    if let Some(section) = elf::section(bytes, ".dep-v0") {
        match auditable(section) {
            Some(packages) => found.packages.extend(packages),
            None => found
                .notes
                .push(format!("/{path}: unreadable cargo auditable data")),
        }
    }
    found
}

/// The Go build info, if the file has some: the main module, its dependencies and the
/// standard library.
pub fn go_buildinfo(bytes: &[u8]) -> Option<Result<Vec<Package>, String>> {
    let data = match elf::section(bytes, ".go.buildinfo") {
        Some(s) if s.starts_with(GO_MAGIC) => s,
        // Sections are listed and none is Go's: not a Go binary (searching every C
        // binary's bytes for the magic would cost more than reading it).
        _ if elf::has_section_headers(bytes) => return None,
        _ => {
            let at = (0..bytes.len().saturating_sub(32))
                .step_by(16)
                .find(|&i| bytes[i..].starts_with(GO_MAGIC))?;
            &bytes[at..]
        }
    };
    let flags = *data.get(15)?;
    if flags & GO_FLAG_INLINE == 0 {
        return Some(Err(
            "a Go binary from before Go 1.18, whose build info is not read".to_owned(),
        ));
    }
    let (version, rest) = varint_string(data.get(32..)?)?;
    let (modinfo, _) = varint_string(rest)?;
    // The module info is framed by two 16-byte sentinels around a text ending in '\n'.
    let modinfo = if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        &modinfo[16..modinfo.len() - 16]
    } else {
        modinfo
    };
    let mut packages = go_modules(&String::from_utf8_lossy(modinfo));
    // The standard library is built in too, at the toolchain's version (as syft lists it).
    let version = String::from_utf8_lossy(version);
    if !version.is_empty() {
        packages.push(Package::new(Kind::Go, "stdlib", version));
    }
    Some(Ok(packages))
}

/// A string prefixed with its length as an unsigned LEB128 varint.
fn varint_string(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (mut len, mut shift, mut i) = (0u64, 0u32, 0usize);
    loop {
        let byte = *b.get(i)?;
        len |= u64::from(byte & 0x7f).checked_shl(shift)?;
        i += 1;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    let end = i.checked_add(usize::try_from(len).ok()?)?;
    Some((b.get(i..end)?, b.get(end..)?))
}

/// The `mod` and `dep` lines of Go's module info, each replaced by the `=>` line that
/// follows it, if any.
pub fn go_modules(modinfo: &str) -> Vec<Package> {
    let mut out: Vec<Package> = Vec::new();
    for line in modinfo.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["mod" | "dep", path, version, ..] => out.push(Package::new(Kind::Go, *path, *version)),
            ["=>", path, version, ..] => {
                if let Some(last) = out.last_mut() {
                    last.name = (*path).to_owned();
                    last.version = (*version).to_owned();
                }
            }
            _ => {}
        }
    }
    out
}

#[derive(Deserialize)]
struct Audit {
    packages: Vec<AuditPackage>,
}

#[derive(Deserialize)]
struct AuditPackage {
    name: String,
    version: String,
    #[serde(default)]
    kind: Option<String>,
}

/// The crates a `cargo auditable` section lists (runtime ones only).
pub fn auditable(section: &[u8]) -> Option<Vec<Package>> {
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(section)
        .take(MAX_AUDIT_JSON)
        .read_to_end(&mut json)
        .ok()?;
    let audit: Audit = serde_json::from_slice(&json).ok()?;
    Some(
        audit
            .packages
            .into_iter()
            .filter(|p| p.kind.as_deref() != Some("build"))
            .map(|p| Package::new(Kind::Rust, p.name, p.version))
            .collect(),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::elf::tests::elf64;
    use std::io::Write;

    fn varint(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
    }

    /// A `.go.buildinfo` section as Go 1.18+ linkers write it: the 32-byte header
    /// (magic, pointer size 8, flags with the inline bit), then the version and the
    /// sentinel-framed module info as varint-prefixed strings.
    pub(crate) fn go_section(version: &str, modinfo: &str) -> Vec<u8> {
        let mut s = GO_MAGIC.to_vec();
        s.push(8);
        s.push(GO_FLAG_INLINE);
        s.resize(32, 0);
        varint(version.len(), &mut s);
        s.extend_from_slice(version.as_bytes());
        let start = b"\x30\x77\xaf\x0c\x92\x74\x08\x02\x41\xe1\xc1\x07\xe6\xd6\x18\xe6";
        let end = b"\xf9\x32\x43\x31\x86\x18\x20\x72\x00\x82\x42\x10\x41\x16\xd8\xf2";
        let framed = [&start[..], modinfo.as_bytes(), &end[..]].concat();
        varint(framed.len(), &mut s);
        s.extend_from_slice(&framed);
        s
    }

    pub(crate) const MODINFO: &str = "path\texample.com/app\nmod\texample.com/app\t(devel)\t\ndep\tgolang.org/x/sys\tv0.20.0\th1:abc=\ndep\tgithub.com/old/lib\tv1.0.0\t\n=>\tgithub.com/new/lib\tv1.2.0\th1:def=\nbuild\t-compiler=gc\nbuild\tGOOS=linux\n";

    #[test]
    fn reads_go_build_info_from_the_section() {
        let bin = elf64(&[
            (".text", b"\x90\x90"),
            (".go.buildinfo", &go_section("go1.22.4", MODINFO)),
        ]);
        let found = catalogue("usr/bin/app", &bin);
        let got: Vec<_> = found
            .packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("example.com/app", "(devel)"),
                ("golang.org/x/sys", "v0.20.0"),
                ("github.com/new/lib", "v1.2.0"),
                ("stdlib", "go1.22.4")
            ]
        );
        assert!(found.packages.iter().all(|p| p.kind == Kind::Go));
    }

    #[test]
    fn finds_go_build_info_without_section_headers() {
        // Section headers stripped: the magic sits 16-byte aligned in the data.
        let mut bin = b"\x7fELF".to_vec();
        bin.resize(64, 0);
        bin.extend_from_slice(&go_section("go1.21.0", MODINFO));
        assert_eq!(catalogue("app", &bin).packages.len(), 4);
        let mut old = go_section("go1.16", MODINFO);
        old[15] = 0;
        let mut bin = b"\x7fELF".to_vec();
        bin.resize(32, 0);
        bin.extend_from_slice(&old);
        assert!(catalogue("old", &bin).notes[0].contains("before Go 1.18"));
    }

    #[test]
    fn reads_cargo_auditable_data() {
        let json = br#"{"packages":[{"name":"app","version":"0.1.0","source":"local","root":true},{"name":"serde","version":"1.0.200","source":"crates.io","dependencies":[]},{"name":"cc","version":"1.0.90","source":"crates.io","kind":"build"}]}"#;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(json).unwrap();
        let bin = elf64(&[(".dep-v0", &z.finish().unwrap())]);
        let found = catalogue("usr/bin/app", &bin);
        let got: Vec<_> = found
            .packages
            .iter()
            .map(|p| (p.kind, p.name.as_str()))
            .collect();
        assert_eq!(got, [(Kind::Rust, "app"), (Kind::Rust, "serde")]);
        let broken = elf64(&[(".dep-v0", b"not zlib")]);
        assert!(catalogue("x", &broken).notes[0].contains("cargo auditable"));
    }

    #[test]
    fn scripts_are_not_binaries() {
        assert_eq!(
            catalogue("usr/bin/s", b"#!/bin/sh\necho\n"),
            Found::default()
        );
    }
}
