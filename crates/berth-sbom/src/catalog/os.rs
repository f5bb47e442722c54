//! `etc/os-release` (or `usr/lib/os-release`): shell-style `KEY=value` lines, values
//! optionally quoted, per the os-release(5) manual.

use crate::OsRelease;

/// Reads the fields an SBOM uses.
pub fn parse(text: &str) -> OsRelease {
    let mut os = OsRelease::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v)
            .replace("\\\"", "\"");
        match k.trim() {
            "ID" => os.id = v,
            "VERSION_ID" => os.version_id = v,
            "PRETTY_NAME" => os.pretty_name = v,
            _ => {}
        }
    }
    os
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_quoted_and_bare_values() {
        let os = parse("PRETTY_NAME=\"Alpine Linux v3.20\"\nID=alpine\nVERSION_ID='3.20.3'\n# c\n");
        assert_eq!(os.id, "alpine");
        assert_eq!(os.version_id, "3.20.3");
        assert_eq!(os.pretty_name, "Alpine Linux v3.20");
    }

    #[test]
    fn this_machines_release() {
        let Ok(text) = std::fs::read_to_string("/etc/os-release") else {
            return;
        };
        assert!(!parse(&text).id.is_empty());
    }
}
