//! Findings for people and for tools: an aligned table, a JSON document, and SARIF
//! 2.1.0 (what code-scanning dashboards read), plus the `--severity` threshold.

use serde_json::{json, Value};

use crate::{Finding, Severity};

/// The findings at or above `threshold`.
pub fn at_or_above(findings: &[Finding], threshold: Severity) -> usize {
    findings.iter().filter(|f| f.severity >= threshold).count()
}

/// An aligned table with the columns ID, PACKAGE, INSTALLED, FIXED, SEVERITY (a score
/// in parentheses when the record has a CVSS vector).
pub fn table(findings: &[Finding]) -> String {
    let rows: Vec<[String; 5]> = findings
        .iter()
        .map(|f| {
            let severity = match f.score {
                Some(score) => format!("{} ({score:.1})", f.severity),
                None => f.severity.to_string(),
            };
            [
                f.id.clone(),
                f.package.clone(),
                f.installed.clone(),
                f.fixed.clone().unwrap_or_else(|| "-".into()),
                severity,
            ]
        })
        .collect();
    let header = ["ID", "PACKAGE", "INSTALLED", "FIXED", "SEVERITY"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The JSON report: how many packages were scanned and the findings.
pub fn json(findings: &[Finding], packages: usize) -> Value {
    json!({ "packages": packages, "findings": findings })
}

/// SARIF's level for a severity: high and critical are errors, medium and unknown
/// (which may be anything) warnings, the rest notes.
fn level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium | Severity::Unknown => "warning",
        Severity::Low | Severity::None => "note",
    }
}

/// A SARIF 2.1.0 log with one run: a rule per vulnerability id (with the
/// `security-severity` property GitHub code scanning ranks by) and a result per finding,
/// located at the package's purl as a logical location (a package has no file).
pub fn sarif(findings: &[Finding], tool_version: &str) -> Value {
    let mut rule_ids: Vec<&str> = Vec::new();
    let mut rules = Vec::new();
    for f in findings {
        if rule_ids.contains(&f.id.as_str()) {
            continue;
        }
        rule_ids.push(&f.id);
        let text = f.summary.clone().unwrap_or_else(|| f.id.clone());
        let mut properties = json!({ "tags": ["security", "vulnerability"] });
        if let Some(score) = f.score {
            properties["security-severity"] = json!(format!("{score:.1}"));
        }
        rules.push(json!({
            "id": f.id,
            "name": f.id,
            "shortDescription": { "text": text },
            "helpUri": format!("https://osv.dev/vulnerability/{}", f.id),
            "defaultConfiguration": { "level": level(f.severity) },
            "properties": properties,
        }));
    }
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let fix = match &f.fixed {
                Some(v) => format!("fixed in {v}"),
                None => "no fixed version".to_owned(),
            };
            json!({
                "ruleId": f.id,
                "ruleIndex": rule_ids.iter().position(|r| *r == f.id),
                "level": level(f.severity),
                "message": { "text": format!(
                    "{} {} is affected by {} ({} severity; {fix})",
                    f.package, f.installed, f.id, f.severity
                ) },
                "locations": [{
                    "logicalLocations": [{ "fullyQualifiedName": f.purl, "kind": "package" }]
                }],
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "berth",
                "version": tool_version,
                "informationUri": "https://osv.dev",
                "rules": rules,
            } },
            "results": results,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(id: &str, severity: Severity, score: Option<f64>) -> Finding {
        Finding {
            id: id.into(),
            aliases: vec![],
            summary: Some(format!("summary of {id}")),
            purl: "pkg:pypi/requests@2.31.0".into(),
            package: "requests".into(),
            ecosystem: "PyPI".into(),
            installed: "2.31.0".into(),
            fixed: Some("2.32.0".into()),
            severity,
            score,
        }
    }

    #[test]
    fn the_table_aligns_columns() {
        let t = table(&[finding("GHSA-9wx4-h78v-vm56", Severity::Medium, Some(5.6))]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "ID                   PACKAGE   INSTALLED  FIXED   SEVERITY"
        );
        assert_eq!(
            lines[1],
            "GHSA-9wx4-h78v-vm56  requests  2.31.0     2.32.0  medium (5.6)"
        );
    }

    #[test]
    fn sarif_has_one_rule_per_id_and_results_pointing_at_them() {
        let f = [
            finding("A", Severity::High, Some(7.5)),
            finding("A", Severity::High, Some(7.5)),
            finding("B", Severity::Low, None),
        ];
        let log = sarif(&f, "0.1.0");
        let run = &log["runs"][0];
        assert_eq!(run["tool"]["driver"]["rules"].as_array().unwrap().len(), 2);
        assert_eq!(
            run["tool"]["driver"]["rules"][0]["properties"]["security-severity"],
            "7.5"
        );
        assert_eq!(run["results"][2]["ruleIndex"], 1);
        assert_eq!(run["results"][2]["level"], "note");
        assert_eq!(
            run["results"][0]["locations"][0]["logicalLocations"][0]["fullyQualifiedName"],
            "pkg:pypi/requests@2.31.0"
        );
    }

    #[test]
    fn the_threshold_counts_findings_at_or_above() {
        let f = [
            finding("A", Severity::Critical, None),
            finding("B", Severity::Medium, None),
            finding("C", Severity::Unknown, None),
        ];
        assert_eq!(at_or_above(&f, Severity::High), 1);
        assert_eq!(at_or_above(&f, Severity::Medium), 2);
        assert_eq!(at_or_above(&f, Severity::Unknown), 3);
    }
}
