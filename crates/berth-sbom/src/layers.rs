//! Reading layers as streams and merging them in order.
//!
//! [`scan_layer`] reads one layer (gzip, zstd or plain tar, told apart by their magic
//! bytes rather than the media type, which some registries get wrong) and returns what
//! its catalogued files hold and which whiteouts it carries, as [`Event`]s in archive
//! order. Layers are independent, so callers scan them in parallel. [`merge`] then
//! replays the events layer by layer the way a container runtime stacks layers:
//! - a file replaces whatever an earlier layer had at its path (a later
//!   `var/lib/dpkg/status` is the database, not an addition to it);
//! - `.wh.<name>` removes `<name>`, and everything under it, from earlier layers;
//! - `.wh..wh..opq` in a directory hides everything earlier layers put in it.
//!
//! Whiteouts only ever apply to earlier layers, as the OCI image spec says, so a file
//! the same layer adds beside an opaque marker survives it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};

use crate::catalog::{self, Found};
use crate::{Inventory, SbomError};

/// How much of a layer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest package database or metadata file read (dpkg `status`, `rpmdb.sqlite`).
    pub max_database: u64,
    /// Largest executable read for Go build info or `cargo auditable` data.
    pub max_binary: u64,
    /// Largest jar read for `pom.properties`.
    pub max_archive: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_database: 256 << 20,
            max_binary: 256 << 20,
            max_archive: 128 << 20,
        }
    }
}

/// One thing a layer says about the file tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `.wh.<name>`: the path (and anything under it) is deleted.
    Whiteout(String),
    /// `.wh..wh..opq`: the directory's earlier content is hidden.
    Opaque(String),
    /// A catalogued file, with what it holds.
    File { path: String, found: Found },
}

/// What one layer holds, in archive order.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerScan {
    /// The layer's digest, as packages will name it.
    pub digest: String,
    pub events: Vec<Event>,
}

/// Reads a layer from `reader` (compressed or not) and catalogues the files it holds.
pub fn scan_layer(
    reader: impl Read,
    digest: &str,
    limits: &Limits,
) -> Result<LayerScan, SbomError> {
    let err = |source| SbomError::Layer {
        layer: digest.to_owned(),
        source,
    };
    let mut buffered = BufReader::with_capacity(256 << 10, reader);
    let head = buffered.fill_buf().map_err(err)?;
    let decoded: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let zstd = ruzstd::decoding::StreamingDecoder::new(buffered).map_err(|e| {
            err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.to_string(),
            ))
        })?;
        Box::new(BufReader::with_capacity(256 << 10, zstd))
    } else {
        Box::new(buffered)
    };
    let mut archive = tar::Archive::new(decoded);
    let mut events = Vec::new();
    for entry in archive.entries().map_err(err)? {
        let mut entry = entry.map_err(err)?;
        let path = normalise(&String::from_utf8_lossy(&entry.path_bytes()));
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (d, n),
            None => ("", path.as_str()),
        };
        if name == ".wh..wh..opq" {
            events.push(Event::Opaque(dir.to_owned()));
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            events.push(Event::Whiteout(join(dir, hidden)));
            continue;
        }
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            continue;
        }
        let mode = entry.header().mode().unwrap_or(0);
        let size = entry.size();
        let Some(wanted) = catalog::wants(&path, mode) else {
            continue;
        };
        let limit = match wanted {
            catalog::Wanted::Database => limits.max_database,
            catalog::Wanted::Binary => limits.max_binary,
            catalog::Wanted::Archive => limits.max_archive,
        };
        let found = if size > limit {
            Found::note(format!(
                "/{path} in layer {digest}: {size} bytes, more than the {limit} read; skipped"
            ))
        } else {
            let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            (&mut entry)
                .take(limit)
                .read_to_end(&mut bytes)
                .map_err(err)?;
            catalog::catalogue(&path, wanted, &bytes)
        };
        events.push(Event::File { path, found });
    }
    Ok(LayerScan {
        digest: digest.to_owned(),
        events,
    })
}

/// `./usr/bin/` and `/usr/bin` are both `usr/bin`.
fn normalise(path: &str) -> String {
    let p = path.trim_start_matches("./").trim_start_matches('/');
    p.trim_end_matches('/').to_owned()
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// What a path holds after the layers so far: which layer wrote it and what it held.
struct Held {
    layer: usize,
    found: Found,
}

/// Stacks the layers' scans (in the image's order, lowest first) and lists what the
/// resulting file tree holds: the OS release, then packages in path order, each with
/// the layer it came from and its package URL.
pub fn merge(layers: Vec<LayerScan>) -> Inventory {
    let mut tree: BTreeMap<String, Held> = BTreeMap::new();
    let mut digests = Vec::with_capacity(layers.len());
    for (index, layer) in layers.into_iter().enumerate() {
        digests.push(layer.digest);
        for event in layer.events {
            match event {
                Event::Whiteout(path) => {
                    remove_under(&mut tree, &path, true, index);
                }
                Event::Opaque(dir) => {
                    remove_under(&mut tree, &dir, false, index);
                }
                Event::File { path, found } => {
                    tree.insert(
                        path,
                        Held {
                            layer: index,
                            found,
                        },
                    );
                }
            }
        }
    }
    let mut inventory = Inventory::default();
    // os-release first: OS packages' URLs name the distribution.
    for name in ["etc/os-release", "usr/lib/os-release"] {
        if inventory.os.is_none() {
            inventory.os = tree.get(name).and_then(|h| h.found.os.clone());
        }
    }
    for (path, held) in tree {
        inventory.notes.extend(held.found.notes);
        for mut p in held.found.packages {
            p.layer.clone_from(&digests[held.layer]);
            p.path.clone_from(&path);
            p.purl = crate::purl::of(&p, inventory.os.as_ref());
            inventory.packages.push(p);
        }
    }
    inventory
}

/// Removes from `tree` what layers before `layer` put at `path` (with `itself`) and
/// under it.
fn remove_under(tree: &mut BTreeMap<String, Held>, path: &str, itself: bool, layer: usize) {
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    let doomed: Vec<String> = tree
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .filter(|(_, h)| h.layer < layer)
        .map(|(k, _)| k.clone())
        .collect();
    for k in doomed {
        tree.remove(&k);
    }
    if itself && tree.get(path).is_some_and(|h| h.layer < layer) {
        tree.remove(path);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Kind;
    use std::io::Write;

    /// A tar layer of `(path, mode, bytes)` entries, gzip-compressed.
    pub(crate) fn layer(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, mode, bytes) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(*mode);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, *bytes).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        gz.finish().unwrap()
    }

    const STATUS: &[u8] = b"Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n\nPackage: b\nStatus: install ok installed\nVersion: 2\nArchitecture: all\n";
    const OS: &[u8] =
        b"ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";

    fn names(inv: &Inventory) -> Vec<String> {
        inv.packages.iter().map(|p| p.name.clone()).collect()
    }

    fn scan(bytes: &[u8], digest: &str) -> LayerScan {
        scan_layer(bytes, digest, &Limits::default()).unwrap()
    }

    fn npm(name: &str) -> Vec<u8> {
        format!(r#"{{"name":"{name}","version":"1.0.0","license":"MIT"}}"#).into_bytes()
    }

    #[test]
    fn packages_name_their_layer_and_distro() {
        let l1 = layer(&[
            ("etc/os-release", 0o644, OS),
            ("var/lib/dpkg/status", 0o644, STATUS),
        ]);
        let inv = merge(vec![scan(&l1, "sha256:one")]);
        assert_eq!(names(&inv), ["a", "b"]);
        assert_eq!(inv.packages[0].layer, "sha256:one");
        assert_eq!(inv.packages[0].path, "var/lib/dpkg/status");
        assert_eq!(
            inv.packages[0].purl,
            "pkg:deb/debian/a@1?arch=amd64&distro=debian-12"
        );
        assert_eq!(inv.os.unwrap().id, "debian");
    }

    #[test]
    fn a_later_database_replaces_an_earlier_one() {
        let l1 = layer(&[("var/lib/dpkg/status", 0o644, STATUS)]);
        let later = b"Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n";
        let l2 = layer(&[("./var/lib/dpkg/status", 0o644, later)]);
        let inv = merge(vec![scan(&l1, "sha256:one"), scan(&l2, "sha256:two")]);
        assert_eq!(names(&inv), ["a"]);
        assert_eq!(inv.packages[0].layer, "sha256:two");
    }

    #[test]
    fn whiteouts_remove_packages_of_earlier_layers() {
        let l1 = layer(&[
            (
                "usr/lib/node_modules/left-pad/package.json",
                0o644,
                &npm("left-pad"),
            ),
            (
                "usr/lib/node_modules/lodash/package.json",
                0o644,
                &npm("lodash"),
            ),
            (
                "app/node_modules/@types/node/package.json",
                0o644,
                &npm("@types/node"),
            ),
        ]);
        let l2 = layer(&[
            ("usr/lib/node_modules/.wh.left-pad", 0o644, b""),
            ("app/.wh.node_modules", 0o644, b""),
        ]);
        let inv = merge(vec![scan(&l1, "sha256:one"), scan(&l2, "sha256:two")]);
        assert_eq!(names(&inv), ["lodash"]);
    }

    #[test]
    fn opaque_directories_hide_only_earlier_layers() {
        let l1 = layer(&[
            ("srv/node_modules/old/package.json", 0o644, &npm("old")),
            ("srv2/node_modules/kept/package.json", 0o644, &npm("kept")),
        ]);
        let l2 = layer(&[
            ("srv/node_modules/new/package.json", 0o644, &npm("new")),
            ("srv/.wh..wh..opq", 0o644, b""),
        ]);
        let inv = merge(vec![scan(&l1, "sha256:one"), scan(&l2, "sha256:two")]);
        assert_eq!(names(&inv), ["new", "kept"]);
        let new = &inv.packages[0];
        assert_eq!((new.kind, new.layer.as_str()), (Kind::Npm, "sha256:two"));
    }

    #[test]
    fn plain_and_zstd_tars_are_read_too() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(STATUS.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "var/lib/dpkg/status", STATUS)
            .unwrap();
        let tar = b.into_inner().unwrap();
        assert_eq!(names(&merge(vec![scan(&tar, "sha256:p")])), ["a", "b"]);
        // zstd's frame format with raw (uncompressed) blocks, written by hand because
        // the pure-Rust decoder has no encoder: magic, a header with a single-segment
        // content size, then blocks of at most 128 KiB.
        let mut z = vec![0x28, 0xb5, 0x2f, 0xfd, 0xa0];
        z.extend_from_slice(&(tar.len() as u32).to_le_bytes());
        let chunks: Vec<&[u8]> = tar.chunks(100_000).collect();
        for (i, c) in chunks.iter().enumerate() {
            let last = u32::from(i + 1 == chunks.len());
            let header = last | ((c.len() as u32) << 3);
            z.extend_from_slice(&header.to_le_bytes()[..3]);
            z.extend_from_slice(c);
        }
        assert_eq!(names(&merge(vec![scan(&z, "sha256:z")])), ["a", "b"]);
    }

    #[test]
    fn garbage_is_an_error_naming_the_layer() {
        let e = scan_layer(&[0x1f, 0x8b, 0, 1, 2][..], "sha256:bad", &Limits::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("sha256:bad"), "{e}");
    }

    #[test]
    fn files_beyond_the_limit_are_skipped_with_a_note() {
        let l1 = layer(&[("var/lib/dpkg/status", 0o644, STATUS)]);
        let limits = Limits {
            max_database: 10,
            ..Limits::default()
        };
        let inv = merge(vec![scan_layer(&l1[..], "sha256:one", &limits).unwrap()]);
        assert!(inv.packages.is_empty());
        assert!(inv.notes[0].contains("skipped"), "{:?}", inv.notes);
    }
}
