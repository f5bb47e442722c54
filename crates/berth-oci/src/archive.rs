//! The layout of image tarballs (`docker-archive` and `oci-archive`) as a plan of byte
//! segments, computed before any byte is written.
//!
//! A tarball is a list of entries, each a 512-byte header, its content and zero padding
//! to the next 512-byte boundary, followed by two zero blocks. [`ArchivePlan`] lists
//! those pieces as [`Segment`]s: fixed bytes (headers, `index.json`, `manifest.json`,
//! manifests), "the blob with digest D" or zeros. So the total length is known before
//! anything is sent, and any byte range maps to the segments that cover it
//! ([`ArchivePlan::pieces`]): the server streams a range of a tarball from its blob
//! store without staging it, and the client packs the layout it staged with the same
//! entries, order and headers.
//!
//! The layouts are those Berth's client writes and Docker 25+ `docker save` produces:
//! an `oci-archive` is an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/<alg>/<hex>`); a `docker-archive` is the same layout plus a `manifest.json`
//! whose `Config` and `Layers` point into `blobs/`, with layers kept as stored
//! (compressed or not), which `docker load`, `podman load` and `skopeo` all read.
//!
//! Entries are ordered top-level files first (by name), then blobs (by name), each blob
//! once. Headers are POSIX ustar with owner 0, mode 0644 and time 0, so a plan's bytes
//! depend only on its content; a name or size ustar cannot hold (a `sha512` blob path,
//! a blob of 8 GiB or more) gets a PAX extended header before it.
//!
//! No I/O: the caller reads blobs and writes bytes.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::manifest::{Descriptor, ManifestError, ParsedManifest};
use crate::media_types as mt;

/// The content of the `oci-layout` file.
pub const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
/// The annotation holding a tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation Docker and containerd use for the full image name in `index.json`.
pub const IMAGE_NAME: &str = "io.containerd.image.name";

const BLOCK: u64 = 512;
/// The largest size a ustar header's 11 octal digits hold.
const USTAR_MAX_SIZE: u64 = 0o77_777_777_777;

/// One entry of a docker-archive `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    pub layers: Vec<String>,
}

/// Why a tarball cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    /// The manifest is an artifact (a Helm chart, a signature, an SBOM): `kind` is its
    /// artifact type or config media type. `docker load` and `podman load` refuse it.
    #[error("{digest} is not a container image but an artifact ({kind})")]
    NotAnImage { digest: Digest, kind: String },
    /// A docker-archive holds one image, not an index.
    #[error("{0} is an index; a docker-archive holds a single image")]
    Index(Digest),
    /// An index child needed for an oci-archive was not given.
    #[error("the index lists manifest {0}, which was not given")]
    MissingChild(Digest),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// A manifest to put into a tarball: its exact bytes, digest and media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestBlob {
    pub digest: Digest,
    pub media_type: String,
    pub content: Arc<[u8]>,
}

impl ManifestBlob {
    fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.content.len() as u64,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
        }
    }

    fn parse(&self) -> Result<ParsedManifest, ManifestError> {
        ParsedManifest::parse(&self.content, Some(&self.media_type))
    }
}

/// `blobs/<alg>/<hex>`: where a blob sits in a layout and in a tarball.
pub fn blob_entry_name(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().as_str(), digest.hex())
}

/// Checks that a parsed manifest is an image `docker load` can load (an image config,
/// no artifact type); an index passes (its children are checked one by one).
pub fn check_image(parsed: &ParsedManifest, digest: &Digest) -> Result<(), ArchiveError> {
    if parsed.kind.is_index() {
        return Ok(());
    }
    let config = parsed.config.as_ref().map(|c| c.media_type.as_str());
    let kind = match (&parsed.artifact_type, config) {
        (Some(t), _) => t.clone(),
        (None, Some(c)) if c == mt::OCI_CONFIG || c == mt::DOCKER_CONFIG => return Ok(()),
        (None, Some(c)) => c.to_owned(),
        (None, None) => "a manifest without config".to_owned(),
    };
    Err(ArchiveError::NotAnImage {
        digest: digest.clone(),
        kind,
    })
}

/// The tag part of a `name:tag` (none when the last `:` belongs to a registry port).
pub fn tag_of(repo_tag: &str) -> Option<&str> {
    repo_tag
        .rsplit_once(':')
        .map(|(_, t)| t)
        .filter(|t| !t.contains('/'))
}

/// The `index.json` of a layout listing `entries`.
pub fn layout_index(entries: Vec<Descriptor>) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Index {
        schema_version: u32,
        media_type: &'static str,
        manifests: Vec<Descriptor>,
    }
    let index = Index {
        schema_version: 2,
        media_type: mt::OCI_INDEX,
        manifests: entries,
    };
    // Serialising plain strings and numbers into a Vec cannot fail.
    serde_json::to_vec(&index).unwrap_or_default()
}

/// Plans the docker-archive of one image: its layout (with `tag_of(repo_tag)` as the
/// tag and `repo_tag` as the image name) and a `manifest.json` naming `repo_tag`.
pub fn docker_archive(
    image: &ManifestBlob,
    repo_tag: Option<&str>,
) -> Result<ArchivePlan, ArchiveError> {
    let parsed = image.parse()?;
    if parsed.kind.is_index() {
        return Err(ArchiveError::Index(image.digest.clone()));
    }
    check_image(&parsed, &image.digest)?;
    let config = parsed.config.as_ref().ok_or(ManifestError::MissingConfig)?;
    let entry = ArchiveEntry {
        config: blob_entry_name(&config.digest),
        repo_tags: repo_tag.map(|t| vec![t.to_owned()]),
        layers: parsed
            .layers
            .iter()
            .map(|l| blob_entry_name(&l.digest))
            .collect(),
    };
    let mut root = image.descriptor();
    if let Some(name) = repo_tag {
        root.annotations
            .insert(IMAGE_NAME.to_owned(), name.to_owned());
        if let Some(t) = tag_of(name) {
            root.annotations.insert(REF_NAME.to_owned(), t.to_owned());
        }
    }
    let mut plan = PlanBuilder::new();
    plan.file("oci-layout", OCI_LAYOUT.as_bytes().to_vec());
    plan.file("index.json", layout_index(vec![root]));
    // Serialising plain strings into a Vec cannot fail.
    plan.file(
        "manifest.json",
        serde_json::to_vec(&[entry]).unwrap_or_default(),
    );
    plan.manifest(image);
    for b in parsed.required_blobs() {
        plan.blob(&b.digest, b.size);
    }
    Ok(plan.build())
}

/// Plans the oci-archive of `root` (an image, or an index whose `children` are all
/// given: each child's blobs go in too), listed in `index.json` under `tag`.
pub fn oci_archive(
    root: &ManifestBlob,
    children: &[ManifestBlob],
    tag: Option<&str>,
) -> Result<ArchivePlan, ArchiveError> {
    let parsed = root.parse()?;
    let mut entry = root.descriptor();
    if let Some(t) = tag {
        entry.annotations.insert(REF_NAME.to_owned(), t.to_owned());
    }
    let mut plan = PlanBuilder::new();
    plan.file("oci-layout", OCI_LAYOUT.as_bytes().to_vec());
    plan.file("index.json", layout_index(vec![entry]));
    plan.manifest(root);
    for b in parsed.required_blobs() {
        plan.blob(&b.digest, b.size);
    }
    for d in &parsed.manifests {
        let child = children
            .iter()
            .find(|c| c.digest == d.digest)
            .ok_or_else(|| ArchiveError::MissingChild(d.digest.clone()))?;
        let parsed_child = child.parse()?;
        if parsed_child.kind.is_index() {
            // Nested indexes are rare; their children are not carried.
            return Err(ArchiveError::Index(child.digest.clone()));
        }
        plan.manifest(child);
        for b in parsed_child.required_blobs() {
            plan.blob(&b.digest, b.size);
        }
    }
    Ok(plan.build())
}

/// A piece of a tarball.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Fixed bytes: headers, small files, manifests.
    Bytes(Arc<[u8]>),
    /// The whole content of a blob, `size` bytes.
    Blob { digest: Digest, size: u64 },
    /// Zero bytes: padding and the end-of-archive blocks.
    Zeros(u64),
}

impl Segment {
    fn len(&self) -> u64 {
        match self {
            Segment::Bytes(b) => b.len() as u64,
            Segment::Blob { size, .. } => *size,
            Segment::Zeros(n) => *n,
        }
    }
}

/// Part of a [`Segment`] that a byte range covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// `range` of fixed bytes.
    Bytes {
        data: Arc<[u8]>,
        range: Range<usize>,
    },
    /// `range` of the blob `digest` (whose whole size is `size`).
    Blob {
        digest: Digest,
        size: u64,
        range: Range<u64>,
    },
    /// This many zero bytes.
    Zeros(u64),
}

impl Piece {
    /// The number of bytes of the piece.
    pub fn len(&self) -> u64 {
        match self {
            Piece::Bytes { range, .. } => (range.end - range.start) as u64,
            Piece::Blob { range, .. } => range.end - range.start,
            Piece::Zeros(n) => *n,
        }
    }

    /// True for a piece of no bytes (never returned by [`ArchivePlan::pieces`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The bytes of a tarball as segments, with their offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivePlan {
    /// `(offset, segment)`, in order, without empty segments.
    segments: Vec<(u64, Segment)>,
    /// Entry names in order (for messages and tests).
    names: Vec<String>,
    size: u64,
}

impl ArchivePlan {
    /// The total length of the tarball in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The names of the entries, in the order they are written.
    pub fn entry_names(&self) -> &[String] {
        &self.names
    }

    /// Every segment with its offset.
    pub fn segments(&self) -> &[(u64, Segment)] {
        &self.segments
    }

    /// The blobs the tarball holds, each once, with their sizes.
    pub fn blobs(&self) -> impl Iterator<Item = (&Digest, u64)> {
        self.segments.iter().filter_map(|(_, s)| match s {
            Segment::Blob { digest, size } => Some((digest, *size)),
            _ => None,
        })
    }

    /// The pieces that make up bytes `range` of the tarball (clamped to its size), in
    /// order, none empty.
    pub fn pieces(&self, range: Range<u64>) -> Vec<Piece> {
        let end = range.end.min(self.size);
        let start = range.start.min(end);
        let mut out = Vec::new();
        // The last segment starting at or before `start`.
        let first = self
            .segments
            .partition_point(|(offset, _)| *offset <= start)
            .saturating_sub(1);
        for (offset, segment) in &self.segments[first..] {
            if *offset >= end {
                break;
            }
            let seg_end = offset + segment.len();
            if seg_end <= start {
                continue;
            }
            let a = start.max(*offset) - offset;
            let b = end.min(seg_end) - offset;
            out.push(match segment {
                Segment::Bytes(data) => Piece::Bytes {
                    data: data.clone(),
                    range: a as usize..b as usize,
                },
                Segment::Blob { digest, size } => Piece::Blob {
                    digest: digest.clone(),
                    size: *size,
                    range: a..b,
                },
                Segment::Zeros(_) => Piece::Zeros(b - a),
            });
        }
        out
    }
}

enum Content {
    Bytes(Arc<[u8]>),
    Blob { digest: Digest, size: u64 },
}

/// Collects the files of a tarball, then orders them and lays out their headers.
#[derive(Default)]
pub struct PlanBuilder {
    files: BTreeMap<String, Content>,
}

impl PlanBuilder {
    pub fn new() -> PlanBuilder {
        PlanBuilder::default()
    }

    /// Adds a file with fixed content (replacing one of the same name).
    pub fn file(&mut self, name: &str, content: Vec<u8>) -> &mut PlanBuilder {
        self.files
            .insert(name.to_owned(), Content::Bytes(content.into()));
        self
    }

    /// Adds a manifest's exact bytes under `blobs/`.
    pub fn manifest(&mut self, m: &ManifestBlob) -> &mut PlanBuilder {
        self.files.insert(
            blob_entry_name(&m.digest),
            Content::Bytes(m.content.clone()),
        );
        self
    }

    /// Adds a blob read at write time, under `blobs/` (once, however often it is added).
    pub fn blob(&mut self, digest: &Digest, size: u64) -> &mut PlanBuilder {
        self.files
            .entry(blob_entry_name(digest))
            .or_insert_with(|| Content::Blob {
                digest: digest.clone(),
                size,
            });
        self
    }

    /// Lays the files out: top-level files first, then everything under `blobs/`, each
    /// group by name; then the end-of-archive blocks.
    pub fn build(self) -> ArchivePlan {
        let mut files: Vec<(String, Content)> = self.files.into_iter().collect();
        // BTreeMap order is by name; a stable sort keeps it within each group.
        files.sort_by_key(|(name, _)| name.starts_with("blobs/"));
        let mut plan = ArchivePlan {
            segments: Vec::new(),
            names: Vec::new(),
            size: 0,
        };
        let push = |plan: &mut ArchivePlan, segment: Segment| {
            let len = segment.len();
            if len > 0 {
                plan.segments.push((plan.size, segment));
                plan.size += len;
            }
        };
        for (name, content) in files {
            let (size, segment) = match content {
                Content::Bytes(b) => (b.len() as u64, Segment::Bytes(b)),
                Content::Blob { digest, size } => (size, Segment::Blob { digest, size }),
            };
            push(&mut plan, Segment::Bytes(entry_header(&name, size).into()));
            push(&mut plan, segment);
            push(&mut plan, Segment::Zeros(padding(size)));
            plan.names.push(name);
        }
        push(&mut plan, Segment::Zeros(2 * BLOCK));
        plan
    }
}

/// Zero bytes after `size` bytes of content, up to the next block.
fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// The header block(s) of a regular file: a PAX extended header first when the name
/// or size does not fit ustar, then the ustar header.
fn entry_header(name: &str, size: u64) -> Vec<u8> {
    let split = split_name(name);
    let mut out = Vec::with_capacity(BLOCK as usize);
    let mut records = String::new();
    if split.is_none() {
        records.push_str(&pax_record("path", name));
    }
    if size > USTAR_MAX_SIZE {
        records.push_str(&pax_record("size", &size.to_string()));
    }
    if !records.is_empty() {
        let pax_name = format!("PaxHeaders/{}", truncate(name, 80));
        out.extend_from_slice(&ustar_header("", &pax_name, records.len() as u64, b'x'));
        out.extend_from_slice(records.as_bytes());
        out.resize(out.len() + padding(records.len() as u64) as usize, 0);
    }
    let (prefix, short) = split.unwrap_or(("", truncate(name, 100)));
    let ustar_size = if size > USTAR_MAX_SIZE { 0 } else { size };
    out.extend_from_slice(&ustar_header(prefix, short, ustar_size, b'0'));
    out
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `name` as ustar's (prefix, name) fields, if it fits them.
fn split_name(name: &str) -> Option<(&str, &str)> {
    if name.len() <= 100 {
        return Some(("", name));
    }
    name.match_indices('/')
        .map(|(i, _)| (&name[..i], &name[i + 1..]))
        .find(|(prefix, rest)| prefix.len() <= 155 && !rest.is_empty() && rest.len() <= 100)
}

/// One PAX record: `<length> <key>=<value>\n`, where the length counts itself.
fn pax_record(key: &str, value: &str) -> String {
    let body = key.len() + value.len() + 3; // space, '=' and newline
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    format!("{len} {key}={value}\n")
}

/// A POSIX ustar header block for an entry of owner 0, mode 0644 and time 0.
fn ustar_header(prefix: &str, name: &str, size: u64, kind: u8) -> [u8; BLOCK as usize] {
    let mut h = [0u8; BLOCK as usize];
    let put = |h: &mut [u8; BLOCK as usize], at: usize, bytes: &[u8]| {
        h[at..at + bytes.len()].copy_from_slice(bytes);
    };
    put(&mut h, 0, name.as_bytes());
    put(&mut h, 100, b"0000644\0");
    put(&mut h, 108, b"0000000\0");
    put(&mut h, 116, b"0000000\0");
    put(&mut h, 124, format!("{size:011o}\0").as_bytes());
    put(&mut h, 136, b"00000000000\0");
    h[156] = kind;
    put(&mut h, 257, b"ustar\0");
    put(&mut h, 263, b"00");
    put(&mut h, 329, b"0000000\0");
    put(&mut h, 337, b"0000000\0");
    put(&mut h, 345, prefix.as_bytes());
    // The checksum is computed with its own field read as spaces.
    put(&mut h, 148, b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{Algorithm, Hasher};
    use std::io::Read;

    fn digest_of(bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(bytes);
        h.finish()
    }

    /// Writes a plan out with blob contents from `blobs`, as a caller would.
    fn render(plan: &ArchivePlan, range: Range<u64>, blobs: &[(Digest, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in plan.pieces(range) {
            match piece {
                Piece::Bytes { data, range } => out.extend_from_slice(&data[range]),
                Piece::Blob { digest, range, .. } => {
                    let (_, bytes) = blobs.iter().find(|(d, _)| *d == digest).unwrap();
                    out.extend_from_slice(&bytes[range.start as usize..range.end as usize]);
                }
                Piece::Zeros(n) => out.resize(out.len() + n as usize, 0),
            }
        }
        out
    }

    fn image() -> (ManifestBlob, Vec<(Digest, Vec<u8>)>) {
        let config =
            br#"{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec();
        let layer = vec![7u8; 1500];
        let (cd, ld) = (digest_of(&config), digest_of(&layer));
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{cd}","size":{}}},"layers":[{{"mediaType":"{}","digest":"{ld}","size":{}}}]}}"#,
            mt::OCI_MANIFEST,
            mt::OCI_CONFIG,
            config.len(),
            mt::OCI_LAYER_GZIP,
            layer.len()
        );
        let m = ManifestBlob {
            digest: digest_of(manifest.as_bytes()),
            media_type: mt::OCI_MANIFEST.to_owned(),
            content: manifest.into_bytes().into(),
        };
        (m, vec![(cd, config), (ld, layer)])
    }

    fn entries(tarball: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut archive = tar::Archive::new(tarball);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().to_string_lossy().into_owned();
                let mut content = Vec::new();
                e.read_to_end(&mut content).unwrap();
                (name, content)
            })
            .collect()
    }

    #[test]
    fn a_docker_archive_is_a_layout_with_a_manifest_json() {
        let (m, blobs) = image();
        let plan = docker_archive(&m, Some("localhost:5000/team/app:1.0")).unwrap();
        let bytes = render(&plan, 0..plan.size(), &blobs);
        assert_eq!(bytes.len() as u64, plan.size());
        assert_eq!(plan.size() % BLOCK, 0);
        let got = entries(&bytes);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        let mut blob_names: Vec<String> = [&m.digest, &blobs[0].0, &blobs[1].0]
            .iter()
            .map(|d| blob_entry_name(d))
            .collect();
        blob_names.sort();
        let mut want = vec!["index.json", "manifest.json", "oci-layout"];
        want.extend(blob_names.iter().map(String::as_str));
        assert_eq!(names, want);
        assert_eq!(plan.entry_names(), want.as_slice());
        let manifest_json: Vec<ArchiveEntry> = serde_json::from_slice(&got[1].1).unwrap();
        assert_eq!(manifest_json[0].config, blob_entry_name(&blobs[0].0));
        assert_eq!(manifest_json[0].layers, vec![blob_entry_name(&blobs[1].0)]);
        assert_eq!(
            manifest_json[0].repo_tags,
            Some(vec!["localhost:5000/team/app:1.0".to_owned()])
        );
        let index: serde_json::Value = serde_json::from_slice(&got[0].1).unwrap();
        let root = &index["manifests"][0];
        assert_eq!(root["digest"], m.digest.to_string());
        assert_eq!(root["annotations"][REF_NAME], "1.0");
        assert_eq!(
            root["annotations"][IMAGE_NAME],
            "localhost:5000/team/app:1.0"
        );
        // Every blob's bytes are exactly the stored ones.
        for (d, content) in &blobs {
            let (_, got_content) = got.iter().find(|(n, _)| *n == blob_entry_name(d)).unwrap();
            assert_eq!(got_content, content);
        }
    }

    #[test]
    fn any_range_renders_the_same_bytes_as_the_whole() {
        let (m, blobs) = image();
        let plan = docker_archive(&m, None).unwrap();
        let whole = render(&plan, 0..plan.size(), &blobs);
        for cut in [
            0,
            1,
            511,
            512,
            513,
            1000,
            2048,
            3333,
            plan.size() - 1,
            plan.size(),
        ] {
            let mut joined = render(&plan, 0..cut, &blobs);
            joined.extend(render(&plan, cut..plan.size(), &blobs));
            assert_eq!(joined, whole, "split at {cut}");
        }
        assert_eq!(render(&plan, 700..900, &blobs), whole[700..900]);
        assert!(plan.pieces(plan.size()..plan.size() + 10).is_empty());
        assert!(plan.pieces(0..plan.size()).iter().all(|p| !p.is_empty()));
    }

    #[test]
    fn an_oci_archive_of_an_index_carries_every_child() {
        let (child, blobs) = image();
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{}","size":{},"platform":{{"os":"linux","architecture":"arm64"}}}}]}}"#,
            mt::OCI_INDEX,
            mt::OCI_MANIFEST,
            child.digest,
            child.content.len()
        );
        let root = ManifestBlob {
            digest: digest_of(index.as_bytes()),
            media_type: mt::OCI_INDEX.to_owned(),
            content: index.into_bytes().into(),
        };
        assert_eq!(
            oci_archive(&root, &[], Some("1")).unwrap_err(),
            ArchiveError::MissingChild(child.digest.clone())
        );
        let plan = oci_archive(&root, std::slice::from_ref(&child), Some("1")).unwrap();
        let got = entries(&render(&plan, 0..plan.size(), &blobs));
        assert_eq!(
            got.len(),
            2 + 4,
            "oci-layout, index.json, index, child, 2 blobs"
        );
        assert!(got
            .iter()
            .any(|(n, c)| *n == blob_entry_name(&root.digest) && c[..] == root.content[..]));
        assert_eq!(plan.blobs().count(), 2);
        assert_eq!(
            docker_archive(&root, None).unwrap_err(),
            ArchiveError::Index(root.digest.clone())
        );
    }

    #[test]
    fn artifacts_are_not_images() {
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","artifactType":"application/vnd.cncf.helm.config.v1+json","config":{{"mediaType":"{}","digest":"{}","size":2}},"layers":[]}}"#,
            mt::OCI_MANIFEST,
            mt::OCI_EMPTY,
            digest_of(b"{}")
        );
        let m = ManifestBlob {
            digest: digest_of(manifest.as_bytes()),
            media_type: mt::OCI_MANIFEST.to_owned(),
            content: manifest.into_bytes().into(),
        };
        let e = docker_archive(&m, None).unwrap_err();
        assert!(
            matches!(&e, ArchiveError::NotAnImage { kind, .. } if kind == "application/vnd.cncf.helm.config.v1+json"),
            "{e:?}"
        );
    }

    #[test]
    fn long_names_and_huge_sizes_get_pax_headers() {
        let long = format!("blobs/sha512/{}", "ab".repeat(64));
        let header = entry_header(&long, 10);
        assert_eq!(header.len() as u64 % BLOCK, 0);
        assert!(header.len() as u64 > BLOCK);
        let mut tarball = header;
        tarball.extend_from_slice(&[1u8; 10]);
        tarball.resize(tarball.len() + padding(10) as usize + 1024, 0);
        let got = entries(&tarball);
        assert_eq!(got, vec![(long, vec![1u8; 10])]);
        // A size beyond ustar's field is carried by the PAX header.
        let big = entry_header("blobs/sha256/x", USTAR_MAX_SIZE + 1);
        let mut archive = tar::Archive::new(&big[..]);
        let first = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(first.header().entry_size().unwrap(), 0);
        assert_eq!(first.size(), USTAR_MAX_SIZE + 1);
    }

    #[test]
    fn pax_records_count_their_own_length() {
        assert_eq!(pax_record("path", "a"), "9 path=a\n");
        assert_eq!(pax_record("path", "abc"), "12 path=abc\n");
        let r = pax_record("path", &"x".repeat(90));
        assert_eq!(r.len().to_string(), r.split(' ').next().unwrap());
        assert_eq!(tag_of("localhost:5000/app"), None);
        assert_eq!(tag_of("localhost:5000/app:1"), Some("1"));
    }
}
