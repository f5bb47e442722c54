//! Severity: the CVSS v3.x base score computed from a vector string (the formula of
//! the CVSS v3.1 specification, §7.1 and Appendix A's Roundup), the CVSS v4.0 score
//! (through RustSec's `cvss` crate, which implements the v4.0 specification's
//! macrovector lookup table and interpolation), and the qualitative rating scale that
//! turns a score into none/low/medium/high/critical.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A qualitative severity. `Unknown` (a record with neither a CVSS v3 vector nor a
/// severity word) sorts below `None`, so `--severity low` does not fail on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Unknown,
    None,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// The rating of a CVSS score (CVSS v3.1 specification, §5).
    pub fn from_score(score: f64) -> Severity {
        if score <= 0.0 {
            Severity::None
        } else if score < 4.0 {
            Severity::Low
        } else if score < 7.0 {
            Severity::Medium
        } else if score < 9.0 {
            Severity::High
        } else {
            Severity::Critical
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "unknown",
            Severity::None => "none",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A severity word that is not one of the scale's.
#[derive(Debug, thiserror::Error)]
#[error("unknown severity {0:?} (expected unknown, none, low, medium, high or critical)")]
pub struct UnknownSeverity(String);

impl FromStr for Severity {
    type Err = UnknownSeverity;

    /// Reads a severity word in any case; `moderate` (GitHub's word) is medium,
    /// `important` (Red Hat's and others') high, `negligible` and `unimportant` low.
    fn from_str(s: &str) -> Result<Severity, UnknownSeverity> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "unknown" => Severity::Unknown,
            "none" => Severity::None,
            // Debian's tracker says `unimportant`, Ubuntu's `negligible`.
            "low" | "negligible" | "unimportant" => Severity::Low,
            "medium" | "moderate" => Severity::Medium,
            "high" | "important" => Severity::High,
            "critical" => Severity::Critical,
            _ => return Err(UnknownSeverity(s.to_owned())),
        })
    }
}

/// The score of a CVSS v4.0 vector (`CVSS:4.0/AV:N/AC:L/AT:N/...`): the base score
/// (CVSS-B) for a vector of base metrics, as OSV records carry them; threat and
/// environmental metrics in the vector are applied as the specification says
/// (CVSS-BT, CVSS-BE).
pub fn score_v4(vector: &str) -> Result<f64, CvssError> {
    let vector = vector.trim();
    if !vector.starts_with("CVSS:4.0/") {
        return Err(CvssError::Version(vector.to_owned()));
    }
    vector
        .parse::<cvss::v4::Vector>()
        .map(|v| v.score().value())
        .map_err(|e| CvssError::V4 {
            vector: vector.to_owned(),
            reason: e.to_string(),
        })
}

/// Why a vector string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CvssError {
    #[error("not a CVSS vector of the expected version: {0}")]
    Version(String),
    #[error("unreadable CVSS v4.0 vector {vector}: {reason}")]
    V4 { vector: String, reason: String },
    #[error("CVSS vector without a valid value for {metric}: {vector}")]
    Metric {
        metric: &'static str,
        vector: String,
    },
}

/// The base score of a CVSS v3.0 or v3.1 vector (`CVSS:3.1/AV:N/AC:L/...`). Temporal and
/// environmental metrics in the vector are ignored.
pub fn base_score(vector: &str) -> Result<f64, CvssError> {
    let mut parts = vector.trim().split('/');
    let v30 = match parts.next() {
        Some("CVSS:3.1") => false,
        Some("CVSS:3.0") => true,
        _ => return Err(CvssError::Version(vector.to_owned())),
    };
    let metrics: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once(':')).collect();
    let get = |metric: &'static str, table: &[(&str, f64)]| -> Result<f64, CvssError> {
        metrics
            .iter()
            .find(|(k, _)| *k == metric)
            .and_then(|(_, v)| table.iter().find(|(t, _)| t == v))
            .map(|(_, w)| *w)
            .ok_or_else(|| CvssError::Metric {
                metric,
                vector: vector.to_owned(),
            })
    };
    let changed = get("S", &[("U", 0.0), ("C", 1.0)])? > 0.0;
    let av = get("AV", &[("N", 0.85), ("A", 0.62), ("L", 0.55), ("P", 0.2)])?;
    let ac = get("AC", &[("L", 0.77), ("H", 0.44)])?;
    let pr = if changed {
        get("PR", &[("N", 0.85), ("L", 0.68), ("H", 0.5)])?
    } else {
        get("PR", &[("N", 0.85), ("L", 0.62), ("H", 0.27)])?
    };
    let ui = get("UI", &[("N", 0.85), ("R", 0.62)])?;
    let cia = [("H", 0.56), ("L", 0.22), ("N", 0.0)];
    let (c, i, a) = (get("C", &cia)?, get("I", &cia)?, get("A", &cia)?);

    let iss = 1.0 - (1.0 - c) * (1.0 - i) * (1.0 - a);
    let impact = if changed {
        7.52 * (iss - 0.029) - 3.25 * (iss - 0.02).powi(15)
    } else {
        6.42 * iss
    };
    let exploitability = 8.22 * av * ac * pr * ui;
    if impact <= 0.0 {
        return Ok(0.0);
    }
    let raw = if changed {
        (1.08 * (impact + exploitability)).min(10.0)
    } else {
        (impact + exploitability).min(10.0)
    };
    Ok(if v30 {
        roundup_30(raw)
    } else {
        roundup_31(raw)
    })
}

/// CVSS v3.1's Roundup (Appendix A): the smallest one-decimal number not below the
/// input, computed on integers so that floating-point noise (4.000000000000001) does
/// not round a score up.
fn roundup_31(x: f64) -> f64 {
    let int = (x * 100_000.0).round() as i64;
    if int % 10_000 == 0 {
        int as f64 / 100_000.0
    } else {
        ((int / 10_000) + 1) as f64 / 10.0
    }
}

/// CVSS v3.0's Roundup: the plain ceiling to one decimal.
fn roundup_30(x: f64) -> f64 {
    (x * 10.0).ceil() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_of_the_cvss_v3_1_examples_document() {
        // Vectors and scores from FIRST's "CVSS v3.1 Examples".
        for (vector, score) in [
            // CVE-2013-1937, phpMyAdmin reflected XSS.
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
            // CVE-2013-0375, MySQL stored SQL injection.
            ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:L/I:L/A:N", 6.4),
            // CVE-2014-0160, OpenSSL Heartbleed.
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N", 7.5),
            // CVE-2014-6271, GNU Bash Shellshock.
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
            // CVE-2012-1516, VMware guest to host escape.
            ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H", 9.9),
            // CVE-2016-1645, Google Chrome PDFium JPEG 2000 remote code execution.
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H", 8.8),
            // CVE-2015-1098, Apple iWork denial of service.
            ("CVSS:3.1/AV:L/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H", 7.8),
            // Scope changed, everything high: the maximum.
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
            // No impact at all.
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
            ("CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N", 7.5),
        ] {
            assert_eq!(base_score(vector), Ok(score), "{vector}");
        }
    }

    #[test]
    fn scores_of_cvss_v4_vectors() {
        // Vectors and scores of FIRST's CVSS v4.0 calculator.
        for (vector, score) in [
            // Everything high on the vulnerable system, nothing on others.
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
                9.3,
            ),
            // And on subsequent systems too: the maximum.
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H",
                10.0,
            ),
            // The v4.0 examples document's CVE-2022-41741 (nginx, local).
            (
                "CVSS:4.0/AV:L/AC:L/AT:N/PR:L/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
                8.5,
            ),
            // No impact at all.
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:N/SC:N/SI:N/SA:N",
                0.0,
            ),
        ] {
            assert_eq!(score_v4(vector), Ok(score), "{vector}");
        }
        assert!(matches!(
            score_v4("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),
            Err(CvssError::Version(_))
        ));
        assert!(matches!(
            score_v4("CVSS:4.0/AV:Q/AC:L"),
            Err(CvssError::V4 { .. })
        ));
    }

    #[test]
    fn ratings_follow_the_qualitative_scale() {
        assert_eq!(Severity::from_score(0.0), Severity::None);
        assert_eq!(Severity::from_score(3.9), Severity::Low);
        assert_eq!(Severity::from_score(4.0), Severity::Medium);
        assert_eq!(Severity::from_score(7.0), Severity::High);
        assert_eq!(Severity::from_score(9.0), Severity::Critical);
        assert!(Severity::Unknown < Severity::Low);
        assert_eq!("MODERATE".parse::<Severity>().ok(), Some(Severity::Medium));
    }

    #[test]
    fn the_roundup_ignores_floating_point_noise() {
        assert_eq!(roundup_31(4.000_000_000_000_001), 4.0);
        assert_eq!(roundup_31(4.02), 4.1);
    }

    #[test]
    fn bad_vectors_are_refused() {
        assert!(matches!(
            base_score("AV:N/AC:L"),
            Err(CvssError::Version(_))
        ));
        assert!(matches!(
            base_score("CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),
            Err(CvssError::Metric { metric: "AV", .. })
        ));
    }
}
