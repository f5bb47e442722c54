//! The local vulnerability index: OSV records imported from osv.dev's `all.zip` dumps
//! (or directories of OSV JSON files) into one compact file per ecosystem, read without
//! any network I/O at scan time.
//!
//! # Format
//! `<dir>/<Ecosystem>.idx` (`Debian.idx`, `crates.io.idx`, ...): the magic
//! `BERTHOSV1\n`, a little-endian `u32` count, then that many entries
//! `(u32 name length, name, u64 offset, u64 length)` sorted by name, then the data: for
//! each package name a JSON array of [`Advisory`] (only the parts of each record that
//! concern that package, severities already computed). Opening reads the file and the
//! name table; a lookup is a binary search and the parse of one package's slice, so a
//! scan costs the packages it asks about, not the size of the dump.
//!
//! `<dir>/meta.json` records, per ecosystem, when it was imported, from where, in how
//! long, and how many records and package names it holds. An import replaces the
//! ecosystems it contains and keeps the others.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::cvss::Severity;
use crate::ecosystem::Ecosystem;
use crate::osv::{self, Range, RangeKind, Record};

const MAGIC: &[u8] = b"BERTHOSV1\n";
const META: &str = "meta.json";
/// The version of the index layout, in `meta.json`; an index of another version is
/// refused (an update rewrites it).
const FORMAT: u32 = 1;

/// Errors of importing or opening the index.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("no vulnerability database in {}: run `berth db update --from DIR|URL` first (osv.dev publishes the dumps at https://osv-vulnerabilities.storage.googleapis.com/<ecosystem>/all.zip)", dir.display())]
    Missing { dir: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read zip archive {}: {source}", path.display())]
    Zip {
        path: PathBuf,
        source: zip::result::ZipError,
    },
    #[error("{} is not a Berth vulnerability index (or was written by another version): {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{} holds no OSV record of a supported ecosystem (Debian, Ubuntu, Alpine, PyPI, npm, Go, crates.io, Maven)", source_list.join(", "))]
    Empty { source_list: Vec<String> },
    #[error("cannot write the index: {0}")]
    Json(#[from] serde_json::Error),
}

/// The parts of an OSV record that concern one package, as stored in the index.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Advisory {
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// One per `affected` entry of the record naming this package.
    pub entries: Vec<Entry>,
}

/// One `affected` entry, reduced to what matching needs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// The distribution release (`12` of `Debian:12`, `3.19` of `Alpine:v3.19`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<Range>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
}

/// What `meta.json` says about one ecosystem.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EcosystemMeta {
    /// RFC 3339 time of the import.
    pub imported: String,
    pub seconds: f64,
    pub records: usize,
    pub packages: usize,
    pub sources: Vec<String>,
}

/// The contents of `meta.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    pub format: u32,
    pub ecosystems: BTreeMap<String, EcosystemMeta>,
}

/// What an import did, for the command to print.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportSummary {
    /// Records per ecosystem imported.
    pub records: BTreeMap<String, usize>,
    /// Records skipped: withdrawn, of an unsupported ecosystem, or unreadable.
    pub skipped: usize,
    pub seconds: f64,
}

/// The default index directory: `$XDG_CACHE_HOME/berth/osv`, else `~/.cache/berth/osv`.
pub fn default_dir() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(cache.join("berth").join("osv"))
}

/// Records being gathered: per ecosystem, per package name, the advisories.
#[derive(Default)]
struct Gathered {
    by_eco: BTreeMap<Ecosystem, BTreeMap<String, Vec<Advisory>>>,
    records: BTreeMap<Ecosystem, usize>,
    skipped: usize,
}

impl Gathered {
    fn add_json(&mut self, bytes: &[u8], origin: &str) {
        let record: Record = match serde_json::from_slice(bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%origin, error = %e, "skipping a file that is not an OSV record");
                self.skipped += 1;
                return;
            }
        };
        if record.withdrawn.is_some() {
            self.skipped += 1;
            return;
        }
        let mut counted = Vec::new();
        // Group the record's entries by (ecosystem, package name).
        let mut parts: BTreeMap<(Ecosystem, String), Vec<Entry>> = BTreeMap::new();
        for affected in &record.affected {
            let Some(package) = &affected.package else {
                continue;
            };
            let Some((eco, release)) = Ecosystem::from_osv(&package.ecosystem) else {
                continue;
            };
            let (severity, score) = osv::severity(&record, affected);
            let ranges: Vec<Range> = affected
                .ranges
                .iter()
                .filter(|r| matches!(r.kind, RangeKind::Ecosystem | RangeKind::Semver))
                .cloned()
                .collect();
            parts
                .entry((eco, eco.normalize_name(&package.name)))
                .or_default()
                .push(Entry {
                    release: release.map(str::to_owned),
                    severity,
                    score,
                    ranges,
                    versions: affected.versions.clone(),
                });
            if !counted.contains(&eco) {
                counted.push(eco);
            }
        }
        if counted.is_empty() {
            self.skipped += 1;
            return;
        }
        for eco in counted {
            *self.records.entry(eco).or_default() += 1;
        }
        for ((eco, name), entries) in parts {
            self.by_eco
                .entry(eco)
                .or_default()
                .entry(name)
                .or_default()
                .push(Advisory {
                    id: record.id.clone(),
                    aliases: record.aliases.clone(),
                    summary: record.summary.clone(),
                    entries,
                });
        }
    }

    fn add_zip(&mut self, path: &Path) -> Result<(), DbError> {
        let file = fs::File::open(path).map_err(|source| DbError::Read {
            path: path.to_owned(),
            source,
        })?;
        let zip_err = |source| DbError::Zip {
            path: path.to_owned(),
            source,
        };
        let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(zip_err)?;
        let mut buf = Vec::new();
        for i in 0..archive.len() {
            let mut member = archive.by_index(i).map_err(zip_err)?;
            if !member.is_file() || !member.name().ends_with(".json") {
                continue;
            }
            buf.clear();
            member
                .read_to_end(&mut buf)
                .map_err(|source| DbError::Read {
                    path: path.join(member.name()),
                    source,
                })?;
            let origin = format!("{}!{}", path.display(), member.name());
            self.add_json(&buf, &origin);
        }
        Ok(())
    }

    /// Adds a file (`.zip` or `.json`) or every such file under a directory.
    fn add_path(&mut self, path: &Path) -> Result<(), DbError> {
        let read_err = |source| DbError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = fs::metadata(path).map_err(read_err)?;
        if meta.is_dir() {
            let mut children: Vec<PathBuf> = fs::read_dir(path)
                .map_err(read_err)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()
                .map_err(read_err)?;
            children.sort();
            for child in children {
                let is_dir = child.is_dir();
                let ext = child.extension().and_then(|e| e.to_str());
                if is_dir || matches!(ext, Some("json" | "zip")) {
                    self.add_path(&child)?;
                }
            }
            return Ok(());
        }
        if path.extension().and_then(|e| e.to_str()) == Some("zip") {
            return self.add_zip(path);
        }
        let bytes = fs::read(path).map_err(read_err)?;
        self.add_json(&bytes, &path.display().to_string());
        Ok(())
    }
}

/// Imports OSV records from `sources` (each an `all.zip`, an OSV JSON file, or a
/// directory searched recursively for both) into the index in `dir`, replacing the
/// ecosystems the sources contain. `labels` name the sources in `meta.json` (the URL a
/// file was downloaded from, say); when shorter than `sources`, the paths are used.
pub fn import(
    sources: &[PathBuf],
    labels: &[String],
    dir: &Path,
) -> Result<ImportSummary, DbError> {
    let started = Instant::now();
    let mut gathered = Gathered::default();
    for source in sources {
        gathered.add_path(source)?;
    }
    let source_list: Vec<String> = sources
        .iter()
        .enumerate()
        .map(|(i, p)| {
            labels
                .get(i)
                .cloned()
                .unwrap_or_else(|| p.display().to_string())
        })
        .collect();
    if gathered.by_eco.is_empty() {
        return Err(DbError::Empty { source_list });
    }
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| DbError::Write { path, source }
    };
    fs::create_dir_all(dir).map_err(write_err(dir))?;
    // An index of another format, or a damaged meta.json, is started afresh: the
    // ecosystems it lists could not be read alongside the new ones.
    let mut meta = read_meta(dir)
        .ok()
        .flatten()
        .filter(|m| m.format == FORMAT)
        .unwrap_or_default();
    meta.format = FORMAT;
    let mut summary = ImportSummary {
        skipped: gathered.skipped,
        ..ImportSummary::default()
    };
    for (eco, packages) in &gathered.by_eco {
        let path = dir.join(format!("{}.idx", eco.osv_name()));
        write_index(&path, packages)?;
        let records = gathered.records.get(eco).copied().unwrap_or(0);
        summary.records.insert(eco.osv_name().to_owned(), records);
        meta.ecosystems.insert(
            eco.osv_name().to_owned(),
            EcosystemMeta {
                imported: berth_oci::time::rfc3339(berth_oci::time::now()),
                seconds: 0.0,
                records,
                packages: packages.len(),
                sources: source_list.clone(),
            },
        );
    }
    summary.seconds = started.elapsed().as_secs_f64();
    for eco in gathered.by_eco.keys() {
        if let Some(m) = meta.ecosystems.get_mut(eco.osv_name()) {
            m.seconds = summary.seconds;
        }
    }
    let meta_path = dir.join(META);
    write_atomic(&meta_path, &serde_json::to_vec_pretty(&meta)?)?;
    Ok(summary)
}

/// Writes one ecosystem's index file.
fn write_index(path: &Path, packages: &BTreeMap<String, Vec<Advisory>>) -> Result<(), DbError> {
    let mut data = Vec::new();
    let mut table = Vec::with_capacity(packages.len() * 32);
    table.extend_from_slice(MAGIC);
    let count = u32::try_from(packages.len()).map_err(|_| DbError::Corrupt {
        path: path.to_owned(),
        reason: "more than 2^32 package names".into(),
    })?;
    table.extend_from_slice(&count.to_le_bytes());
    for (name, advisories) in packages {
        let start = data.len() as u64;
        serde_json::to_writer(&mut data, advisories)?;
        let len = data.len() as u64 - start;
        table.extend_from_slice(&(name.len() as u32).to_le_bytes());
        table.extend_from_slice(name.as_bytes());
        table.extend_from_slice(&start.to_le_bytes());
        table.extend_from_slice(&len.to_le_bytes());
    }
    table.extend_from_slice(&data);
    write_atomic(path, &table)
}

/// Writes a file under a temporary name and renames it into place, so a scan running
/// during an update reads the old file or the new one, never half of one.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DbError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let err = |source| DbError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::File::create(&tmp).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

fn read_meta(dir: &Path) -> Result<Option<Meta>, DbError> {
    let path = dir.join(META);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| DbError::Corrupt {
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DbError::Read { path, source }),
    }
}

/// One ecosystem's index file in memory: the bytes and the parsed name table.
struct EcoIndex {
    path: PathBuf,
    bytes: Vec<u8>,
    /// (name start, name length, data offset, data length), sorted by name.
    names: Vec<(usize, usize, usize, usize)>,
    data_start: usize,
}

impl EcoIndex {
    fn load(path: PathBuf) -> Result<EcoIndex, DbError> {
        let bytes = fs::read(&path).map_err(|source| DbError::Read {
            path: path.clone(),
            source,
        })?;
        let corrupt = |reason: &str| DbError::Corrupt {
            path: path.clone(),
            reason: reason.to_owned(),
        };
        if bytes.get(..MAGIC.len()) != Some(MAGIC) {
            return Err(corrupt("bad magic"));
        }
        let mut pos = MAGIC.len();
        let truncated = || corrupt("truncated");
        let count = read_u32(&bytes, &mut pos).ok_or_else(truncated)?;
        let mut names = Vec::with_capacity(count.min(bytes.len()));
        for _ in 0..count {
            let len = read_u32(&bytes, &mut pos).ok_or_else(truncated)?;
            let start = pos;
            take(&bytes, &mut pos, len).ok_or_else(truncated)?;
            let off = read_u64(&bytes, &mut pos).ok_or_else(truncated)?;
            let data_len = read_u64(&bytes, &mut pos).ok_or_else(truncated)?;
            names.push((start, len, off, data_len));
        }
        let data_start = pos;
        for &(_, _, off, len) in &names {
            let end = data_start.checked_add(off).and_then(|s| s.checked_add(len));
            if end.is_none_or(|end| end > bytes.len()) {
                return Err(corrupt("an entry points past the end"));
            }
        }
        Ok(EcoIndex {
            path,
            bytes,
            names,
            data_start,
        })
    }

    fn name(&self, i: usize) -> &[u8] {
        let (start, len, _, _) = self.names[i];
        &self.bytes[start..start + len]
    }

    fn lookup(&self, name: &str) -> Result<Vec<Advisory>, DbError> {
        let found = {
            let (mut lo, mut hi) = (0, self.names.len());
            let mut found = None;
            while lo < hi {
                let mid = (lo + hi) / 2;
                match self.name(mid).cmp(name.as_bytes()) {
                    std::cmp::Ordering::Less => lo = mid + 1,
                    std::cmp::Ordering::Greater => hi = mid,
                    std::cmp::Ordering::Equal => {
                        found = Some(mid);
                        break;
                    }
                }
            }
            found
        };
        let Some(i) = found else {
            return Ok(Vec::new());
        };
        let (_, _, off, len) = self.names[i];
        let slice = &self.bytes[self.data_start + off..self.data_start + off + len];
        serde_json::from_slice(slice).map_err(|e| DbError::Corrupt {
            path: self.path.clone(),
            reason: format!("entry {name}: {e}"),
        })
    }
}

/// Advances `pos` over `n` bytes, returning them; `None` past the end.
fn take<'a>(bytes: &'a [u8], pos: &mut usize, n: usize) -> Option<&'a [u8]> {
    let slice = bytes.get(*pos..pos.checked_add(n)?)?;
    *pos += n;
    Some(slice)
}

fn read_u32(bytes: &[u8], pos: &mut usize) -> Option<usize> {
    let b: [u8; 4] = take(bytes, pos, 4)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(b)).ok()
}

fn read_u64(bytes: &[u8], pos: &mut usize) -> Option<usize> {
    let b: [u8; 8] = take(bytes, pos, 8)?.try_into().ok()?;
    usize::try_from(u64::from_le_bytes(b)).ok()
}

/// An opened index: the ecosystems' files, loaded when opened.
pub struct Db {
    dir: PathBuf,
    meta: Meta,
    indexes: BTreeMap<Ecosystem, EcoIndex>,
}

impl Db {
    /// Opens the index in `dir`; [`DbError::Missing`] when no import was made there.
    pub fn open(dir: &Path) -> Result<Db, DbError> {
        let meta = read_meta(dir)?.ok_or_else(|| DbError::Missing {
            dir: dir.to_owned(),
        })?;
        if meta.format != FORMAT {
            return Err(DbError::Corrupt {
                path: dir.join(META),
                reason: format!(
                    "index format {} where this berth reads {FORMAT}: run `berth db update` again",
                    meta.format
                ),
            });
        }
        let mut indexes = BTreeMap::new();
        for eco in Ecosystem::ALL {
            if meta.ecosystems.contains_key(eco.osv_name()) {
                let path = dir.join(format!("{}.idx", eco.osv_name()));
                indexes.insert(eco, EcoIndex::load(path)?);
            }
        }
        Ok(Db {
            dir: dir.to_owned(),
            meta,
            indexes,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What `meta.json` says: the imported ecosystems, when and from where.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Whether the index holds records of `eco`.
    pub fn has(&self, eco: Ecosystem) -> bool {
        self.indexes.contains_key(&eco)
    }

    /// The advisories filed under a package name (already normalized for `eco`).
    pub fn lookup(&self, eco: Ecosystem, name: &str) -> Result<Vec<Advisory>, DbError> {
        match self.indexes.get(&eco) {
            Some(index) => index.lookup(name),
            None => Ok(Vec::new()),
        }
    }
}
