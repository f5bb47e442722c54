//! Maven artifacts in jars (and wars, ears): the `META-INF/maven/<group>/<artifact>/
//! pom.properties` entries Maven writes, read with a small zip reader (the central
//! directory, then stored or deflated entries) over the jar held in memory.
//!
//! Why not the `zip` crate: only two entry kinds of one file are needed, while the
//! crate's current versions need a newer Rust than the workspace's and pull in
//! compression formats jars never use. Zip64 jars (over 4 GiB) are not read; jars
//! nested in jars (Spring Boot's `BOOT-INF/lib`) are read one level deep.

use std::io::Read;

use super::Found;
use crate::{Kind, Package};

/// Largest `pom.properties` or nested jar inflated.
const MAX_ENTRY: u64 = 64 << 20;

/// The Maven artifacts a jar carries.
pub fn catalogue(path: &str, bytes: &[u8]) -> Found {
    let mut found = Found::default();
    read_jar(path, bytes, 1, &mut found);
    found
}

fn read_jar(path: &str, bytes: &[u8], depth: u8, found: &mut Found) {
    let entries = match central_directory(bytes) {
        Some(e) => e,
        None => {
            found.notes.push(format!("/{path}: not a readable jar"));
            return;
        }
    };
    for e in entries {
        let wanted_pom =
            e.name.starts_with("META-INF/maven/") && e.name.ends_with("/pom.properties");
        let nested = depth > 0 && e.name.ends_with(".jar");
        if !(wanted_pom || nested) {
            continue;
        }
        let Some(data) = entry_data(bytes, &e) else {
            found
                .notes
                .push(format!("/{path}!{}: unreadable entry", e.name));
            continue;
        };
        if wanted_pom {
            if let Some(p) = pom_properties(&String::from_utf8_lossy(&data)) {
                found.packages.push(p);
            }
        } else {
            read_jar(&format!("{path}!{}", e.name), &data, depth - 1, found);
        }
    }
}

struct Entry {
    name: String,
    method: u16,
    compressed: u64,
    local_offset: u64,
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The entries of the central directory, found through the end-of-central-directory
/// record (searched backwards past a comment of at most 64 KiB).
fn central_directory(b: &[u8]) -> Option<Vec<Entry>> {
    let lowest = b.len().saturating_sub(22 + 0xffff);
    let eocd = (lowest..=b.len().checked_sub(22)?)
        .rev()
        .find(|&i| le32(b, i) == Some(0x0605_4b50))?;
    let count = usize::from(le16(b, eocd + 10)?);
    let mut at = usize::try_from(le32(b, eocd + 16)?).ok()?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        if le32(b, at)? != 0x0201_4b50 {
            return None;
        }
        let name_len = usize::from(le16(b, at + 28)?);
        let extra_len = usize::from(le16(b, at + 30)?);
        let comment_len = usize::from(le16(b, at + 32)?);
        out.push(Entry {
            method: le16(b, at + 10)?,
            compressed: u64::from(le32(b, at + 20)?),
            local_offset: u64::from(le32(b, at + 42)?),
            name: String::from_utf8_lossy(b.get(at + 46..at + 46 + name_len)?).into_owned(),
        });
        at += 46 + name_len + extra_len + comment_len;
    }
    Some(out)
}

/// An entry's bytes, stored or inflated, up to [`MAX_ENTRY`].
fn entry_data(b: &[u8], e: &Entry) -> Option<Vec<u8>> {
    let at = usize::try_from(e.local_offset).ok()?;
    if le32(b, at)? != 0x0403_4b50 {
        return None;
    }
    let start = at + 30 + usize::from(le16(b, at + 26)?) + usize::from(le16(b, at + 28)?);
    let raw = b.get(start..start.checked_add(usize::try_from(e.compressed).ok()?)?)?;
    match e.method {
        0 => (raw.len() as u64 <= MAX_ENTRY).then(|| raw.to_vec()),
        8 => {
            let mut out = Vec::new();
            flate2::read::DeflateDecoder::new(raw)
                .take(MAX_ENTRY)
                .read_to_end(&mut out)
                .ok()?;
            Some(out)
        }
        _ => None,
    }
}

/// `groupId`, `artifactId` and `version` of a `pom.properties` (Java properties).
fn pom_properties(text: &str) -> Option<Package> {
    let get = |k: &str| {
        text.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once(['=', ':']))
            .find(|(key, _)| key.trim() == k)
            .map(|(_, v)| v.trim().to_owned())
    };
    let mut p = Package::new(Kind::Maven, get("artifactId")?, get("version")?);
    p.namespace = get("groupId");
    Some(p)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A zip with `(name, bytes, deflate)` entries, in the layout APPNOTE.TXT describes.
    pub(crate) fn zip(entries: &[(&str, &[u8], bool)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data, deflate) in entries {
            let body = if *deflate {
                let mut e =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            } else {
                data.to_vec()
            };
            let method: u16 = if *deflate { 8 } else { 0 };
            let crc = {
                let mut h = flate2::Crc::new();
                h.update(data);
                h.sum()
            };
            let offset = out.len() as u32;
            out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
            out.extend_from_slice(&[20, 0, 0, 0]);
            out.extend_from_slice(&method.to_le_bytes());
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&body);
            central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            central.extend_from_slice(&[20, 0, 20, 0, 0, 0]);
            central.extend_from_slice(&method.to_le_bytes());
            central.extend_from_slice(&[0; 4]);
            central.extend_from_slice(&crc.to_le_bytes());
            central.extend_from_slice(&(body.len() as u32).to_le_bytes());
            central.extend_from_slice(&(data.len() as u32).to_le_bytes());
            central.extend_from_slice(&(name.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 12]);
            central.extend_from_slice(&offset.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
        }
        let cd_offset = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&cd_offset.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    const POM: &[u8] =
        b"#Generated by Maven\ngroupId=org.slf4j\nartifactId=slf4j-api\nversion=2.0.13\n";

    #[test]
    fn reads_pom_properties_stored_deflated_and_nested() {
        let inner = zip(&[(
            "META-INF/maven/com.google.guava/guava/pom.properties",
            b"groupId=com.google.guava\nartifactId=guava\nversion=33.0.0-jre\n",
            true,
        )]);
        let jar = zip(&[
            ("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\n", false),
            (
                "META-INF/maven/org.slf4j/slf4j-api/pom.properties",
                POM,
                true,
            ),
            ("BOOT-INF/lib/guava.jar", &inner, false),
        ]);
        let found = catalogue("app/app.jar", &jar);
        let got: Vec<_> = found
            .packages
            .iter()
            .map(|p| {
                (
                    p.namespace.clone().unwrap_or_default(),
                    p.name.clone(),
                    p.version.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("org.slf4j".into(), "slf4j-api".into(), "2.0.13".into()),
                (
                    "com.google.guava".into(),
                    "guava".into(),
                    "33.0.0-jre".into()
                )
            ]
        );
        assert!(catalogue("x.jar", b"PK not really").notes[0].contains("not a readable jar"));
    }
}
