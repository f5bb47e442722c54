//! The OSV schema (<https://ossf.github.io/osv-schema/>), the fields the matcher reads,
//! and the evaluation of an `affected` entry against a version: the `versions` list,
//! and `ECOSYSTEM`/`SEMVER` ranges by the schema's algorithm (events sorted by version,
//! the last event at or below the version decides). `GIT` ranges name commits, which an
//! installed package does not have, and are ignored.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::cvss::{self, Severity};
use crate::version::Scheme;

/// One OSV record, as osv.dev publishes it.
#[derive(Clone, Debug, Deserialize)]
pub struct Record {
    pub id: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub modified: Option<String>,
    #[serde(default)]
    pub withdrawn: Option<String>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub details: Option<String>,
    #[serde(default)]
    pub severity: Vec<SeverityScore>,
    #[serde(default)]
    pub affected: Vec<Affected>,
    #[serde(default)]
    pub database_specific: Option<serde_json::Value>,
}

/// A `severity` entry: a scoring system and its vector.
#[derive(Clone, Debug, Deserialize)]
pub struct SeverityScore {
    #[serde(rename = "type")]
    pub kind: String,
    pub score: String,
}

/// An `affected` entry: one package and the versions of it the record concerns.
#[derive(Clone, Debug, Deserialize)]
pub struct Affected {
    pub package: Option<Package>,
    #[serde(default)]
    pub severity: Vec<SeverityScore>,
    #[serde(default)]
    pub ranges: Vec<Range>,
    #[serde(default)]
    pub versions: Vec<String>,
    #[serde(default)]
    pub ecosystem_specific: Option<serde_json::Value>,
    #[serde(default)]
    pub database_specific: Option<serde_json::Value>,
}

/// `affected[].package`.
#[derive(Clone, Debug, Deserialize)]
pub struct Package {
    pub ecosystem: String,
    pub name: String,
    #[serde(default)]
    pub purl: Option<String>,
}

/// A range of affected versions: events in version order.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Range {
    #[serde(rename = "type")]
    pub kind: RangeKind,
    pub events: Vec<Event>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum RangeKind {
    Ecosystem,
    Semver,
    Git,
    /// A range type this version of the schema does not know; ignored.
    #[serde(other)]
    Other,
}

/// A range event. Exactly one field is set in a valid record.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introduced: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_affected: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

impl Event {
    /// The version the event is at; `introduced: "0"` is before every version.
    fn version(&self) -> Option<&str> {
        self.introduced
            .as_deref()
            .or(self.fixed.as_deref())
            .or(self.last_affected.as_deref())
            .or(self.limit.as_deref())
    }
}

/// Orders events by version, `0` first; at the same version an `introduced` comes
/// first, so `introduced: X, fixed: X` (an empty range) leaves the version unaffected.
fn event_cmp(scheme: Scheme, a: &Event, b: &Event) -> Ordering {
    let zero = |e: &Event| e.introduced.as_deref() == Some("0");
    match (zero(a), zero(b)) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => {
            let (va, vb) = (a.version().unwrap_or(""), b.version().unwrap_or(""));
            scheme
                .compare(va, vb)
                .then_with(|| b.introduced.is_some().cmp(&a.introduced.is_some()))
        }
    }
}

/// Whether `version` falls in a range, and the fixed version that ends the stretch it
/// falls in (if the range has one).
pub fn range_affects(scheme: Scheme, range: &Range, version: &str) -> Option<Option<String>> {
    if !matches!(range.kind, RangeKind::Ecosystem | RangeKind::Semver) {
        return None;
    }
    let mut events: Vec<&Event> = range.events.iter().collect();
    events.sort_by(|a, b| event_cmp(scheme, a, b));
    let mut affected = false;
    let mut at = 0;
    for (i, e) in events.iter().enumerate() {
        if let Some(intro) = &e.introduced {
            if intro == "0" || scheme.compare(version, intro) != Ordering::Less {
                affected = true;
                at = i;
            }
        } else if let Some(fixed) = &e.fixed {
            if scheme.compare(version, fixed) != Ordering::Less {
                affected = false;
            }
        } else if let Some(last) = &e.last_affected {
            if scheme.compare(version, last) == Ordering::Greater {
                affected = false;
            }
        }
    }
    if !affected {
        return None;
    }
    // The fix of this stretch: the first `fixed` event after the `introduced` that
    // opened it.
    let fixed = events[at..].iter().find_map(|e| e.fixed.clone());
    Some(fixed)
}

/// The severity of a record for one of its `affected` entries: a CVSS v3 vector (of the
/// entry, else of the record), else a CVSS v4.0 one, gives a score and its rating; otherwise a severity word in
/// `database_specific.severity` (GitHub, Alpine's secdb and others) or
/// `ecosystem_specific.severity`/`urgency` (Ubuntu, Debian) gives the rating alone.
pub fn severity(record: &Record, affected: &Affected) -> (Severity, Option<f64>) {
    // A v3 vector first, so that the scores of records carrying both stay those every
    // v3-era tool shows; a v4.0 vector alone (more and more records) is scored as v4.0.
    for kind in ["CVSS_V3", "CVSS_V4"] {
        let vectors = affected.severity.iter().chain(&record.severity);
        for s in vectors.filter(|s| s.kind == kind) {
            let score = if kind == "CVSS_V3" {
                cvss::base_score(&s.score)
            } else {
                cvss::score_v4(&s.score)
            };
            match score {
                Ok(score) => return (Severity::from_score(score), Some(score)),
                Err(e) => tracing::debug!(id = %record.id, error = %e, "unreadable CVSS vector"),
            }
        }
    }
    let word = |v: &Option<serde_json::Value>, keys: &[&str]| {
        let v = v.as_ref()?;
        keys.iter()
            .find_map(|k| v.get(*k)?.as_str()?.parse::<Severity>().ok())
    };
    let rating = word(&affected.ecosystem_specific, &["severity", "urgency"])
        .or_else(|| word(&affected.database_specific, &["severity"]))
        .or_else(|| word(&record.database_specific, &["severity"]))
        .unwrap_or(Severity::Unknown);
    (rating, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(events: serde_json::Value) -> Range {
        serde_json::from_value(serde_json::json!({"type": "ECOSYSTEM", "events": events})).unwrap()
    }

    #[test]
    fn introduced_and_fixed_pairs_and_last_affected() {
        let r = range(serde_json::json!([
            {"introduced": "0"}, {"fixed": "1.2.0"},
            {"introduced": "2.0.0"}, {"fixed": "2.3.1"},
            {"introduced": "3.0.0"}, {"last_affected": "3.1.0"}
        ]));
        let s = Scheme::Semver;
        assert_eq!(range_affects(s, &r, "1.0.0"), Some(Some("1.2.0".into())));
        assert_eq!(range_affects(s, &r, "1.2.0"), None);
        assert_eq!(range_affects(s, &r, "1.9.9"), None);
        assert_eq!(range_affects(s, &r, "2.3.0"), Some(Some("2.3.1".into())));
        assert_eq!(range_affects(s, &r, "2.3.1"), None);
        assert_eq!(range_affects(s, &r, "3.1.0"), Some(None));
        assert_eq!(range_affects(s, &r, "3.1.1"), None);
    }

    #[test]
    fn events_are_ordered_by_the_ecosystem_not_as_written() {
        // Listed out of order, and only dpkg's `~` rule puts the fix before 1.0.
        let r = range(serde_json::json!([{"fixed": "1.0~rc2-1"}, {"introduced": "0"}]));
        assert!(range_affects(Scheme::Dpkg, &r, "1.0~rc1-1").is_some());
        assert!(range_affects(Scheme::Dpkg, &r, "1.0-1").is_none());
    }

    #[test]
    fn cvss_v4_vectors_score_when_no_v3_one_does() {
        let v4 = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N";
        let v3 = "CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N";
        let record = |severity: serde_json::Value| -> Record {
            serde_json::from_value(serde_json::json!({
                "id": "GHSA-test",
                "severity": severity,
                "affected": [{"package": {"ecosystem": "npm", "name": "a"}}],
            }))
            .unwrap()
        };
        let only_v4 = record(serde_json::json!([{"type": "CVSS_V4", "score": v4}]));
        assert_eq!(
            severity(&only_v4, &only_v4.affected[0]),
            (Severity::Critical, Some(9.3))
        );
        let both = record(serde_json::json!([
            {"type": "CVSS_V4", "score": v4},
            {"type": "CVSS_V3", "score": v3},
        ]));
        assert_eq!(
            severity(&both, &both.affected[0]),
            (Severity::Medium, Some(6.5))
        );
        let broken = record(serde_json::json!([{"type": "CVSS_V4", "score": "CVSS:4.0/AV:N"}]));
        assert_eq!(
            severity(&broken, &broken.affected[0]),
            (Severity::Unknown, None)
        );
    }

    #[test]
    fn git_ranges_are_ignored() {
        let r: Range = serde_json::from_value(serde_json::json!(
            {"type": "GIT", "repo": "https://example.invalid/x", "events": [{"introduced": "0"}]}
        ))
        .unwrap();
        assert_eq!(range_affects(Scheme::Semver, &r, "1.0.0"), None);
    }
}
