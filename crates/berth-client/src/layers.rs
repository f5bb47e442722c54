//! The layer report of `berth inspect --layers`: per layer its compressed and
//! uncompressed size, the files it adds, the bytes it wastes (its files that a later
//! layer overwrites or deletes), the files whose content an earlier layer or path
//! already holds, and what recompressing it with zstd (level 3) would save; for the
//! image, an efficiency score as dive computes it.
//!
//! Each layer is read once, in order, as a stream: the verified blob is decompressed
//! (gzip, zstd or plain tar, told apart by their magic bytes), teed into a zstd encoder
//! that only counts its output, and walked as a tar stream. Nothing is unpacked to disk;
//! the memory kept is one entry per path of the image (its layer and size) and one
//! sha256 per distinct file content, so a large layer costs no more than a small one
//! with the same number of files. Whiteouts (`.wh.NAME`) and opaque directories
//! (`.wh..wh..opq`) are applied as the OCI image spec defines them: they hide what the
//! lower layers hold at that path, never what their own layer holds.
//!
//! The tar walk is synchronous (the `tar` crate reads a `std::io::Read`), so it runs on
//! the blocking pool, fed chunk by chunk from the async blob stream through a bounded
//! channel. Nothing here prints: [`LayerReport::to_text`] renders for people, serde for
//! scripts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};

use berth_oci::{Descriptor, Digest};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::copy::ImageSource;
use crate::error::{ClientError, Result};
use crate::image::{verify_stream, Manifest, PlatformFilter};
use crate::progress::human_bytes;

/// The zstd level of the recompression estimate: zstd's own default, and what
/// `buildah --compression-format zstd` and containerd's converters use.
pub const ZSTD_LEVEL: i32 = 3;

/// How many of the most wasteful paths the report lists.
const TOP_WASTED: usize = 10;

/// Chunks of a blob in flight between the async reader and the tar walk.
const CHANNEL_CHUNKS: usize = 8;

/// The name of the opaque-directory marker.
const OPAQUE: &str = ".wh..wh..opq";

/// The prefix of a whiteout file.
const WHITEOUT: &str = ".wh.";

/// What one layer holds and costs.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct LayerStats {
    pub digest: String,
    pub media_type: String,
    /// The blob's size, as stored and transferred.
    pub size: u64,
    /// The size of the uncompressed tar stream.
    pub uncompressed_size: u64,
    /// Files, symbolic links and hard links the layer adds (not directories nor
    /// whiteouts).
    pub files: u64,
    /// The bytes of the regular files the layer adds.
    pub file_bytes: u64,
    /// Whiteouts (deleted paths and opaque directories) in the layer.
    pub deletions: u64,
    /// The bytes of this layer's files that a later layer (or a later entry of this one)
    /// overwrites or deletes: shipped, yet never seen in the running container.
    pub wasted_bytes: u64,
    /// Files whose content an earlier file (of this or an earlier layer) already has.
    pub duplicate_files: u64,
    /// The bytes of those duplicate files.
    pub duplicate_bytes: u64,
    /// The size of the uncompressed tar stream compressed with zstd at [`ZSTD_LEVEL`].
    pub zstd_size: u64,
}

/// A path whose bytes are wasted, with how many of its versions were hidden.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WastedPath {
    pub path: String,
    pub bytes: u64,
    pub versions: u64,
}

/// The layer report of one image.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    pub name: String,
    /// The image manifest's digest (the platform's, for an index).
    pub image: Digest,
    pub layers: Vec<LayerStats>,
    /// Sum of the layers' compressed sizes.
    pub size: u64,
    /// Sum of the layers' uncompressed tar sizes.
    pub uncompressed_size: u64,
    pub files: u64,
    /// Sum of the bytes of the files the layers add.
    pub file_bytes: u64,
    pub wasted_bytes: u64,
    pub duplicate_files: u64,
    pub duplicate_bytes: u64,
    pub zstd_size: u64,
    /// `size - zstd_size`: negative when zstd would be larger.
    pub zstd_saving: i64,
    /// `1 - wasted_bytes / file_bytes` (1 for an image without file bytes).
    pub efficiency: f64,
    /// The paths wasting the most bytes, largest first.
    pub top_wasted: Vec<WastedPath>,
}

/// One visible path: the layer that last wrote it and its size.
#[derive(Debug, Clone, Copy)]
struct Live {
    layer: usize,
    size: u64,
}

/// The state carried from one layer to the next.
#[derive(Debug, Default)]
pub struct LayerAnalyzer {
    /// Every path visible after the layers seen so far (directories excluded).
    live: BTreeMap<String, Live>,
    /// The sha256 of every distinct non-empty file content seen.
    contents: HashSet<[u8; 32]>,
    /// Wasted bytes and hidden versions per path.
    wasted: HashMap<String, (u64, u64)>,
    layers: Vec<LayerStats>,
}

/// Normalizes a tar path: no `./` or `/` prefix, no trailing `/`.
fn normalize(path: &str) -> String {
    let mut p = path;
    loop {
        if let Some(rest) = p.strip_prefix("./") {
            p = rest;
        } else if let Some(rest) = p.strip_prefix('/') {
            p = rest;
        } else {
            break;
        }
    }
    p.trim_end_matches('/').to_owned()
}

/// Splits `dir/name` into `("dir", "name")` (`""` for the root).
fn split_parent(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// A reader that counts what passes through it and feeds it to a zstd encoder.
struct Tee<'a, R> {
    inner: R,
    count: u64,
    zstd: &'a mut zstd::stream::write::Encoder<'static, Counter>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        self.zstd.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// A writer that keeps nothing but the number of bytes written.
#[derive(Debug, Default)]
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A writer that hashes what is written.
struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The decompressed tar stream of a layer blob, by its magic bytes rather than its media
/// type (Docker media types say gzip even for the rare uncompressed layer).
fn decompressed<'r, R: Read + 'r>(blob: R) -> io::Result<Box<dyn Read + 'r>> {
    let mut buffered = BufReader::with_capacity(64 << 10, blob);
    let head = buffered.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(buffered)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(
            buffered,
        )?))
    } else {
        Ok(Box::new(buffered))
    }
}

impl LayerAnalyzer {
    /// An analyzer before the first layer.
    pub fn new() -> LayerAnalyzer {
        LayerAnalyzer::default()
    }

    /// Marks the live entry at `path` as hidden by a later write or deletion.
    fn hide(&mut self, path: &str, live: Live) {
        self.layers[live.layer].wasted_bytes += live.size;
        let w = self.wasted.entry(path.to_owned()).or_default();
        w.0 += live.size;
        w.1 += 1;
    }

    /// Hides everything below `dir` (and `dir` itself when `itself`) that a layer before
    /// `current` wrote.
    fn hide_tree(&mut self, dir: &str, itself: bool, current: usize) {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut hidden: Vec<(String, Live)> = self
            .live
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter(|(_, l)| l.layer < current)
            .map(|(p, l)| (p.clone(), *l))
            .collect();
        if itself {
            if let Some(l) = self.live.get(dir).filter(|l| l.layer < current) {
                hidden.push((dir.to_owned(), *l));
            }
        }
        for (p, l) in hidden {
            self.live.remove(&p);
            self.hide(&p, l);
        }
    }

    /// Reads one layer blob (compressed or not) to its end and records what it holds.
    pub fn add_layer<R: Read>(&mut self, desc: &Descriptor, blob: R) -> io::Result<()> {
        let current = self.layers.len();
        self.layers.push(LayerStats {
            digest: desc.digest.to_string(),
            media_type: desc.media_type.clone(),
            size: desc.size,
            ..LayerStats::default()
        });
        let mut zstd = zstd::stream::write::Encoder::new(Counter::default(), ZSTD_LEVEL)?;
        let mut tee = Tee {
            inner: decompressed(blob)?,
            count: 0,
            zstd: &mut zstd,
        };
        {
            let mut archive = tar::Archive::new(&mut tee);
            for entry in archive.entries()? {
                let mut entry = entry?;
                let path = normalize(&String::from_utf8_lossy(&entry.path_bytes()));
                let kind = entry.header().entry_type();
                if kind.is_dir() {
                    continue;
                }
                let (parent, name) = split_parent(&path);
                if name == OPAQUE {
                    self.layers[current].deletions += 1;
                    let parent = parent.to_owned();
                    self.hide_tree(&parent, false, current);
                    continue;
                }
                if let Some(target) = name.strip_prefix(WHITEOUT) {
                    self.layers[current].deletions += 1;
                    let target = if parent.is_empty() {
                        target.to_owned()
                    } else {
                        format!("{parent}/{target}")
                    };
                    self.hide_tree(&target, true, current);
                    continue;
                }
                let size = if kind.is_file() || kind == tar::EntryType::Continuous {
                    let mut h = HashWriter(Sha256::new());
                    let size = io::copy(&mut entry, &mut h)?;
                    if size > 0 && !self.contents.insert(h.0.finalize().into()) {
                        self.layers[current].duplicate_files += 1;
                        self.layers[current].duplicate_bytes += size;
                    }
                    size
                } else {
                    0
                };
                let stats = &mut self.layers[current];
                stats.files += 1;
                stats.file_bytes += size;
                if let Some(old) = self.live.insert(
                    path.clone(),
                    Live {
                        layer: current,
                        size,
                    },
                ) {
                    self.hide(&path, old);
                }
            }
        }
        // The tar reader stops at the end-of-archive blocks; the rest (padding to the
        // record size) is part of the uncompressed stream and of the blob to verify.
        io::copy(&mut tee, &mut io::sink())?;
        let uncompressed = tee.count;
        let zstd_size = zstd.finish()?.0;
        let stats = &mut self.layers[current];
        stats.uncompressed_size = uncompressed;
        stats.zstd_size = zstd_size;
        Ok(())
    }

    /// The report over the layers added so far.
    pub fn finish(self, name: String, image: Digest) -> LayerReport {
        let sum = |f: fn(&LayerStats) -> u64| self.layers.iter().map(f).sum::<u64>();
        let size = sum(|l| l.size);
        let file_bytes = sum(|l| l.file_bytes);
        let wasted_bytes = sum(|l| l.wasted_bytes);
        let zstd_size = sum(|l| l.zstd_size);
        let mut top_wasted: Vec<WastedPath> = self
            .wasted
            .into_iter()
            .filter(|(_, (bytes, _))| *bytes > 0)
            .map(|(path, (bytes, versions))| WastedPath {
                path,
                bytes,
                versions,
            })
            .collect();
        top_wasted.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));
        top_wasted.truncate(TOP_WASTED);
        LayerReport {
            name,
            image,
            size,
            uncompressed_size: sum(|l| l.uncompressed_size),
            files: sum(|l| l.files),
            file_bytes,
            wasted_bytes,
            duplicate_files: sum(|l| l.duplicate_files),
            duplicate_bytes: sum(|l| l.duplicate_bytes),
            zstd_size,
            zstd_saving: i64::try_from(size)
                .unwrap_or(i64::MAX)
                .saturating_sub(i64::try_from(zstd_size).unwrap_or(i64::MAX)),
            efficiency: if file_bytes == 0 {
                1.0
            } else {
                1.0 - wasted_bytes as f64 / file_bytes as f64
            },
            top_wasted,
            layers: self.layers,
        }
    }
}

/// A `Read` over the chunks an async task sends; an `Err` chunk ends the stream with it.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// The image manifest to report on: the root, or for an index the `platform` entry.
async fn image_manifest(
    src: &dyn ImageSource,
    platform: Option<&PlatformFilter>,
) -> Result<Manifest> {
    let root = src.root().await?;
    if !root.is_index() {
        return Ok(root);
    }
    let parsed = root.parse()?;
    let Some(f) = platform else {
        return Err(ClientError::Usage(format!(
            "{} is an index: choose its image with --platform",
            src.describe()
        )));
    };
    let d = parsed
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| f.matches(p)))
        .ok_or_else(|| ClientError::NotFound(format!("platform {f} in {}", src.describe())))?;
    src.manifest(d).await
}

/// Streams every layer of the image `src` names (the `platform` image of an index) once
/// and reports on them.
pub async fn layer_report(
    src: &dyn ImageSource,
    platform: Option<&PlatformFilter>,
) -> Result<LayerReport> {
    let manifest = image_manifest(src, platform).await?;
    let parsed = manifest.parse()?;
    if parsed.artifact_type.is_some()
        || parsed.config.as_ref().is_some_and(|c| {
            c.media_type != berth_oci::media_types::OCI_CONFIG
                && c.media_type != berth_oci::media_types::DOCKER_CONFIG
        })
    {
        return Err(ClientError::Unsupported(format!(
            "{} is an artifact, not an image: its layers are not file systems",
            src.describe()
        )));
    }
    let mut analyzer = LayerAnalyzer::new();
    for desc in &parsed.layers {
        let mut stream = verify_stream(src.blob(desc).await?, desc, Box::new(|_| {}));
        let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_CHUNKS);
        let layer = desc.clone();
        let walk = tokio::task::spawn_blocking(move || {
            let reader = ChannelReader {
                rx,
                current: Bytes::new(),
            };
            let result = analyzer.add_layer(&layer, reader);
            (analyzer, result)
        });
        let mut stream_error = None;
        while let Some(chunk) = stream.next().await {
            let failed = chunk.is_err();
            if let Err(e) = &chunk {
                stream_error = Some(e.to_string());
            }
            // The walk stops reading when the tar stream is bad; its error tells why.
            if tx.send(chunk).await.is_err() || failed {
                break;
            }
        }
        drop(tx);
        let (back, result) = walk
            .await
            .map_err(|e| ClientError::invalid(desc.digest.to_string(), e))?;
        analyzer = back;
        if let Err(e) = result {
            let detail = stream_error.unwrap_or_else(|| e.to_string());
            return Err(ClientError::invalid(
                format!("layer {}", desc.digest),
                detail,
            ));
        }
    }
    Ok(analyzer.finish(src.describe(), manifest.digest.clone()))
}

/// A percentage of `part` in `whole`, one decimal.
fn percent(part: f64, whole: f64) -> String {
    if whole == 0.0 {
        "0.0 %".to_owned()
    } else {
        format!("{:.1} %", 100.0 * part / whole)
    }
}

/// The first 12 hex digits of a digest string, as `docker images` shows them.
fn short(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.get(..12).unwrap_or(hex)
}

impl LayerReport {
    /// A human-readable report: one line per layer, totals, the zstd estimate, the
    /// efficiency score and the most wasteful paths.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "Layers of {} ({})", self.name, self.image);
        let _ = writeln!(
            s,
            "{:>3}  {:<12}  {:>10}  {:>10}  {:>6}  {:>10}  {:>10}  {:>10}",
            "#", "LAYER", "SIZE", "UNPACKED", "FILES", "WASTED", "DUPLICATE", "ZSTD"
        );
        for (i, l) in self.layers.iter().enumerate() {
            let _ = writeln!(
                s,
                "{:>3}  {:<12}  {:>10}  {:>10}  {:>6}  {:>10}  {:>10}  {:>10}",
                i + 1,
                short(&l.digest),
                human_bytes(l.size),
                human_bytes(l.uncompressed_size),
                l.files,
                human_bytes(l.wasted_bytes),
                human_bytes(l.duplicate_bytes),
                human_bytes(l.zstd_size),
            );
        }
        let _ = writeln!(
            s,
            "Total:      {} layers, {} compressed, {} unpacked, {} files ({})",
            self.layers.len(),
            human_bytes(self.size),
            human_bytes(self.uncompressed_size),
            self.files,
            human_bytes(self.file_bytes)
        );
        let _ = writeln!(
            s,
            "Wasted:     {} ({} of the file bytes: overwritten or deleted by a later layer)",
            human_bytes(self.wasted_bytes),
            percent(self.wasted_bytes as f64, self.file_bytes as f64)
        );
        let _ = writeln!(
            s,
            "Duplicates: {} files, {} (content already in another file)",
            self.duplicate_files,
            human_bytes(self.duplicate_bytes)
        );
        let verb = if self.zstd_saving >= 0 { "save" } else { "add" };
        let _ = writeln!(
            s,
            "zstd -{ZSTD_LEVEL}:    {} (recompressing would {verb} {}, {})",
            human_bytes(self.zstd_size),
            human_bytes(self.zstd_saving.unsigned_abs()),
            percent(self.zstd_saving.unsigned_abs() as f64, self.size as f64)
        );
        let _ = writeln!(s, "Efficiency: {:.1} %", 100.0 * self.efficiency);
        if !self.top_wasted.is_empty() {
            let _ = writeln!(s, "Most wasted:");
            for w in &self.top_wasted {
                let _ = writeln!(
                    s,
                    "  {:>10}  {}x  {}",
                    human_bytes(w.bytes),
                    w.versions,
                    w.path
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One tar entry of a test layer.
    enum E<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
        Link(&'a str, &'a str),
    }

    fn tar_bytes(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            match e {
                E::File(p, data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    h.set_mode(0o644);
                    b.append_data(&mut h, p, *data).unwrap();
                }
                E::Dir(p) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    b.append_data(&mut h, p, io::empty()).unwrap();
                }
                E::Link(p, target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    h.set_mode(0o777);
                    b.append_link(&mut h, p, target).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn desc(blob: &[u8]) -> Descriptor {
        Descriptor {
            media_type: berth_oci::media_types::OCI_LAYER_GZIP.to_owned(),
            digest: Digest::sha256(blob),
            size: blob.len() as u64,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
        }
    }

    fn analyze(layers: &[Vec<u8>]) -> LayerReport {
        let mut a = LayerAnalyzer::new();
        for blob in layers {
            a.add_layer(&desc(blob), &blob[..]).unwrap();
        }
        a.finish("test".to_owned(), Digest::sha256(b"m"))
    }

    #[test]
    fn overwrites_whiteouts_duplicates_and_opaque_dirs_are_counted_exactly() {
        let big = vec![b'a'; 1000];
        let other = vec![b'b'; 300];
        // Layer 1: a base with a config file, a log, a cache dir and a binary.
        let l1 = tar_bytes(&[
            E::Dir("etc/"),
            E::File("etc/app.conf", &[b'c'; 100]),
            E::File("var/log/big.log", &big),
            E::Dir("cache/"),
            E::File("cache/x", &[b'x'; 50]),
            E::File("cache/sub/y", &[b'y'; 70]),
            E::File("bin/tool", &other),
        ]);
        // Layer 2: overwrites the config (100 wasted), deletes the log by whiteout
        // (1000 wasted), makes cache opaque (120 wasted) and adds a file in it, copies
        // the binary's content to a second path (a duplicate of 300), adds a symlink.
        let l2 = tar_bytes(&[
            E::File("etc/app.conf", &[b'd'; 40]),
            E::File("var/log/.wh.big.log", b""),
            E::File("cache/.wh..wh..opq", b""),
            E::File("cache/new", &[b'n'; 10]),
            E::File("usr/bin/tool-copy", &other),
            E::Link("usr/bin/t", "tool-copy"),
        ]);
        let r = analyze(&[gzip(&l1), l2.clone()]);
        assert_eq!(r.layers.len(), 2);
        let (a, b) = (&r.layers[0], &r.layers[1]);
        assert_eq!((a.files, a.file_bytes), (5, 100 + 1000 + 50 + 70 + 300));
        assert_eq!(a.wasted_bytes, 100 + 1000 + 50 + 70);
        assert_eq!(a.uncompressed_size, l1.len() as u64);
        assert_eq!(a.size, gzip(&l1).len() as u64);
        assert_eq!((a.duplicate_files, a.duplicate_bytes), (0, 0));
        assert_eq!((b.files, b.file_bytes), (4, 40 + 10 + 300));
        assert_eq!(b.deletions, 2);
        assert_eq!(b.wasted_bytes, 0);
        assert_eq!((b.duplicate_files, b.duplicate_bytes), (1, 300));
        assert_eq!(b.uncompressed_size, l2.len() as u64);
        assert_eq!(r.file_bytes, 1520 + 350);
        assert_eq!(r.wasted_bytes, 1220);
        assert!((r.efficiency - (1.0 - 1220.0 / 1870.0)).abs() < 1e-12);
        assert_eq!(
            r.top_wasted[0],
            WastedPath {
                path: "var/log/big.log".to_owned(),
                bytes: 1000,
                versions: 1
            }
        );
        assert_eq!(r.top_wasted.len(), 4);
    }

    #[test]
    fn a_whiteout_of_a_directory_hides_everything_below_it_but_not_its_own_layer() {
        let l1 = tar_bytes(&[
            E::File("opt/a/1", &[1; 10]),
            E::File("opt/a/2", &[2; 20]),
            E::File("opt/ab", &[3; 5]),
        ]);
        // The whiteout comes after a file of the same layer in the deleted directory:
        // that file is the layer's own and stays.
        let l2 = tar_bytes(&[E::File("opt/a/3", &[4; 7]), E::File("opt/.wh.a", b"")]);
        let r = analyze(&[l1, l2]);
        assert_eq!(
            r.layers[0].wasted_bytes, 30,
            "opt/ab is a sibling, not a child"
        );
        assert_eq!(r.layers[1].wasted_bytes, 0);
        assert_eq!(r.wasted_bytes, 30);
    }

    #[test]
    fn the_same_content_in_two_paths_of_one_layer_is_a_duplicate() {
        let l = tar_bytes(&[
            E::File("a", b"same bytes"),
            E::File("./b", b"same bytes"),
            E::File("empty1", b""),
            E::File("empty2", b""),
        ]);
        let r = analyze(&[l]);
        assert_eq!((r.duplicate_files, r.duplicate_bytes), (1, 10));
        assert_eq!(r.efficiency, 1.0);
    }

    #[test]
    fn zstd_layers_are_read_and_the_estimate_compresses_the_uncompressed_stream() {
        let data: Vec<u8> = (0..20_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let l = tar_bytes(&[E::File("data", &data)]);
        let zst = zstd::encode_all(&l[..], ZSTD_LEVEL).unwrap();
        let r = analyze(&[zst.clone(), l.clone()]);
        assert_eq!(r.layers[0].uncompressed_size, l.len() as u64);
        // The estimate is the same encoder at the same level over the same bytes.
        assert_eq!(r.layers[0].zstd_size, r.layers[1].zstd_size);
        assert_eq!(r.layers[0].duplicate_bytes, 0);
        assert_eq!(r.layers[1].duplicate_bytes, data.len() as u64);
        assert_eq!(r.layers[0].wasted_bytes, data.len() as u64);
        assert_eq!(
            r.zstd_saving,
            (zst.len() + l.len()) as i64 - 2 * r.layers[0].zstd_size as i64
        );
        assert!(r.layers[1].zstd_size < l.len() as u64 / 4);
    }

    #[test]
    fn a_truncated_layer_is_an_error() {
        let l = gzip(&tar_bytes(&[E::File("f", &[7; 5000])]));
        let mut a = LayerAnalyzer::new();
        assert!(a.add_layer(&desc(&l), &l[..l.len() / 2]).is_err());
    }

    #[test]
    fn the_text_report_shows_totals_the_estimate_and_the_score() {
        let l1 = tar_bytes(&[E::File("f", &[1; 2048])]);
        let l2 = tar_bytes(&[E::File(".wh.f", b"")]);
        let text = analyze(&[l1, l2]).to_text();
        assert!(text.contains("Efficiency: 0.0 %"), "{text}");
        assert!(
            text.contains("Wasted:     2.0 KiB (100.0 % of the file bytes"),
            "{text}"
        );
        assert!(text.contains("  2.0 KiB  1x  f"), "{text}");
    }
}
