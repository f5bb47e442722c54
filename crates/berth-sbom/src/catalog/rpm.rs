//! RPM's SQLite database (`rpmdb.sqlite`, Fedora 36+ and RHEL 9+): table `Packages`
//! with one header blob per package, in RPM's header format (`il` index entries and `dl`
//! data bytes, both big-endian, then 16-byte entries `tag, type, offset, count`, then
//! the data), as rpm's `headerImport` reads it.
//!
//! Older databases (Berkeley DB `Packages`, SUSE's NDB `Packages.db`) have no pure-Rust
//! reader and are reported as notes by the caller.

use super::Found;
use crate::{Kind, Package};

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_LICENSE: u32 = 1014;
const TAG_ARCH: u32 = 1022;

const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_I18NSTRING: u32 = 9;

/// Reads the packages of an `rpmdb.sqlite` held in memory.
pub fn catalogue(path: &str, bytes: &[u8]) -> Found {
    match read(bytes) {
        Ok(packages) => Found::packages(packages),
        Err(e) => Found::note(format!("/{path}: not a readable RPM SQLite database: {e}")),
    }
}

fn read(bytes: &[u8]) -> Result<Vec<Package>, Box<dyn std::error::Error>> {
    // SQLite opens files only; the copy lives as long as this function.
    let mut file = tempfile::NamedTempFile::new()?;
    std::io::Write::write_all(&mut file, bytes)?;
    let conn = rusqlite::Connection::open_with_flags(
        file.path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let mut stmt = conn.prepare("SELECT blob FROM Packages ORDER BY hnum")?;
    let blobs = stmt.query_map([], |row| row.get::<_, Vec<u8>>(0))?;
    let mut out = Vec::new();
    for blob in blobs {
        if let Some(p) = header(&blob?) {
            out.push(p);
        }
    }
    Ok(out)
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// The package one header describes; `gpg-pubkey` pseudo-packages (imported keys) are
/// not software and are left out.
pub fn header(blob: &[u8]) -> Option<Package> {
    let il = usize::try_from(be32(blob, 0)?).ok()?;
    let dl = usize::try_from(be32(blob, 4)?).ok()?;
    let data_start = 8usize.checked_add(il.checked_mul(16)?)?;
    let data = blob.get(data_start..data_start.checked_add(dl)?)?;
    let mut fields: std::collections::BTreeMap<u32, String> = Default::default();
    for i in 0..il {
        let e = 8 + i * 16;
        let (tag, kind, offset) = (be32(blob, e)?, be32(blob, e + 4)?, be32(blob, e + 8)?);
        let offset = usize::try_from(offset).ok()?;
        let value = match kind {
            TYPE_STRING | TYPE_I18NSTRING => {
                let rest = data.get(offset..)?;
                let end = rest.iter().position(|&b| b == 0)?;
                String::from_utf8_lossy(&rest[..end]).into_owned()
            }
            TYPE_INT32 => be32(data, offset)?.to_string(),
            _ => continue,
        };
        fields.entry(tag).or_insert(value);
    }
    let name = fields.remove(&TAG_NAME)?;
    let version = fields.remove(&TAG_VERSION)?;
    if name == "gpg-pubkey" {
        return None;
    }
    let version = match fields.remove(&TAG_RELEASE) {
        Some(r) => format!("{version}-{r}"),
        None => version,
    };
    let mut p = Package::new(Kind::Rpm, name, version);
    p.arch = fields.remove(&TAG_ARCH);
    p.epoch = fields.remove(&TAG_EPOCH);
    p.licenses = fields.remove(&TAG_LICENSE).into_iter().collect();
    Some(p)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A header blob with these string tags (and an int32 epoch), laid out as rpm
    /// stores it.
    pub(crate) fn blob(strings: &[(u32, &str)], epoch: Option<u32>) -> Vec<u8> {
        let mut entries = Vec::new();
        let mut data = Vec::new();
        if let Some(e) = epoch {
            while !data.len().is_multiple_of(4) {
                data.push(0);
            }
            entries.push((TAG_EPOCH, TYPE_INT32, data.len() as u32));
            data.extend_from_slice(&e.to_be_bytes());
        }
        for (tag, s) in strings {
            entries.push((*tag, TYPE_STRING, data.len() as u32));
            data.extend_from_slice(s.as_bytes());
            data.push(0);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        for (tag, kind, off) in entries {
            for v in [tag, kind, off, 1] {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        out.extend_from_slice(&data);
        out
    }

    /// An `rpmdb.sqlite` with the schema rpm creates for `Packages`.
    pub(crate) fn database(blobs: &[Vec<u8>]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rpmdb.sqlite");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL);",
        )
        .unwrap();
        for b in blobs {
            conn.execute("INSERT INTO Packages (blob) VALUES (?1)", [b])
                .unwrap();
        }
        drop(conn);
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn reads_packages_from_the_sqlite_database() {
        let db = database(&[
            blob(
                &[
                    (TAG_NAME, "bash"),
                    (TAG_VERSION, "5.2.26"),
                    (TAG_RELEASE, "3.fc40"),
                    (TAG_ARCH, "x86_64"),
                    (TAG_LICENSE, "GPL-3.0-or-later"),
                ],
                Some(1),
            ),
            blob(&[(TAG_NAME, "gpg-pubkey"), (TAG_VERSION, "a15b79cc")], None),
        ]);
        let found = catalogue("var/lib/rpm/rpmdb.sqlite", &db);
        assert!(found.notes.is_empty(), "{:?}", found.notes);
        let p = &found.packages;
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].name.as_str(), p[0].version.as_str()),
            ("bash", "5.2.26-3.fc40")
        );
        assert_eq!(p[0].epoch.as_deref(), Some("1"));
        assert_eq!(p[0].licenses, ["GPL-3.0-or-later"]);
    }

    #[test]
    fn damaged_databases_become_notes() {
        let found = catalogue("var/lib/rpm/rpmdb.sqlite", b"not sqlite");
        assert!(found.packages.is_empty());
        assert!(found.notes[0].contains("rpmdb.sqlite"));
        assert!(header(&[0, 0, 0, 9]).is_none());
    }
}
