//! Licences as packages record them, turned into SPDX licence expressions where they
//! are ones.
//!
//! Both formats' validators check identifiers against the SPDX licence list, so an
//! expression is only passed on as one when every identifier in it is a known one
//! ([`KNOWN`], the list's commonly used entries); anything else (`BSD License`,
//! `Apache 2.0`) is kept as free text, which each writer marks as such.

/// SPDX licence identifiers recognised in expressions (a subset of the SPDX licence
/// list 3.24: the licences packages in Debian, Alpine, Fedora, PyPI, npm, crates.io
/// and Maven Central commonly declare).
pub const KNOWN: &[&str] = &[
    "0BSD",
    "AFL-2.1",
    "AFL-3.0",
    "AGPL-3.0-only",
    "AGPL-3.0-or-later",
    "Apache-1.1",
    "Apache-2.0",
    "APSL-2.0",
    "Artistic-1.0",
    "Artistic-1.0-Perl",
    "Artistic-2.0",
    "Beerware",
    "BlueOak-1.0.0",
    "BSD-1-Clause",
    "BSD-2-Clause",
    "BSD-2-Clause-Patent",
    "BSD-3-Clause",
    "BSD-3-Clause-Clear",
    "BSD-4-Clause",
    "BSL-1.0",
    "bzip2-1.0.6",
    "CC-BY-3.0",
    "CC-BY-4.0",
    "CC-BY-SA-3.0",
    "CC-BY-SA-4.0",
    "CC0-1.0",
    "CDDL-1.0",
    "CDDL-1.1",
    "curl",
    "EPL-1.0",
    "EPL-2.0",
    "EUPL-1.1",
    "EUPL-1.2",
    "FSFAP",
    "FSFUL",
    "FSFULLR",
    "FTL",
    "GFDL-1.2-only",
    "GFDL-1.2-or-later",
    "GFDL-1.3-only",
    "GFDL-1.3-or-later",
    "GPL-1.0-only",
    "GPL-1.0-or-later",
    "GPL-2.0-only",
    "GPL-2.0-or-later",
    "GPL-3.0-only",
    "GPL-3.0-or-later",
    "HPND",
    "ICU",
    "IJG",
    "ISC",
    "LGPL-2.0-only",
    "LGPL-2.0-or-later",
    "LGPL-2.1-only",
    "LGPL-2.1-or-later",
    "LGPL-3.0-only",
    "LGPL-3.0-or-later",
    "Libpng",
    "libpng-2.0",
    "libtiff",
    "LPPL-1.3c",
    "MIT",
    "MIT-0",
    "MIT-CMU",
    "MPL-1.1",
    "MPL-2.0",
    "MPL-2.0-no-copyleft-exception",
    "NCSA",
    "OFL-1.1",
    "OLDAP-2.8",
    "OpenSSL",
    "PHP-3.01",
    "PostgreSQL",
    "PSF-2.0",
    "Python-2.0",
    "Python-2.0.1",
    "Ruby",
    "SGI-B-2.0",
    "Sleepycat",
    "SSPL-1.0",
    "TCL",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "Unlicense",
    "UPL-1.0",
    "Vim",
    "W3C",
    "WTFPL",
    "X11",
    "XFree86-1.1",
    "Zlib",
    "zlib-acknowledgement",
    "ZPL-2.1",
    // Deprecated identifiers, still valid in SPDX 2.3 documents and common in metadata.
    "GPL-2.0",
    "GPL-2.0+",
    "GPL-3.0",
    "GPL-3.0+",
    "LGPL-2.1",
    "LGPL-2.1+",
    "LGPL-3.0",
    "LGPL-3.0+",
    "LGPL-2.0",
    "LGPL-2.0+",
    "AGPL-3.0",
];

/// SPDX licence exceptions recognised after `WITH`.
pub const EXCEPTIONS: &[&str] = &[
    "Autoconf-exception-3.0",
    "Bison-exception-2.2",
    "Classpath-exception-2.0",
    "GCC-exception-3.1",
    "LLVM-exception",
    "OpenJDK-assembly-exception-1.0",
    "openvpn-openssl-exception",
    "Qt-LGPL-exception-1.1",
];

fn canonical(list: &[&'static str], id: &str) -> Option<&'static str> {
    list.iter().copied().find(|k| k.eq_ignore_ascii_case(id))
}

/// `text` as an SPDX expression with canonical identifiers and upper-case operators,
/// if it is one made only of known identifiers.
pub fn expression(text: &str) -> Option<String> {
    let spaced = text.replace('(', " ( ").replace(')', " ) ");
    let mut out: Vec<String> = Vec::new();
    let (mut depth, mut want_operand, mut after_with) = (0i32, true, false);
    for tok in spaced.split_whitespace() {
        let upper = tok.to_ascii_uppercase();
        match upper.as_str() {
            "(" if want_operand => {
                depth += 1;
                out.push("(".into());
            }
            ")" if !want_operand && depth > 0 => {
                depth -= 1;
                out.push(")".into());
            }
            "AND" | "OR" if !want_operand => {
                want_operand = true;
                out.push(upper);
            }
            "WITH" if !want_operand => {
                want_operand = true;
                after_with = true;
                out.push(upper);
            }
            _ if want_operand && after_with => {
                out.push(canonical(EXCEPTIONS, tok)?.to_owned());
                (want_operand, after_with) = (false, false);
            }
            _ if want_operand => {
                let id = match canonical(KNOWN, tok) {
                    Some(id) => id.to_owned(),
                    None => format!("{}+", canonical(KNOWN, tok.strip_suffix('+')?)?),
                };
                out.push(id);
                want_operand = false;
            }
            _ => return None,
        }
    }
    (!want_operand && depth == 0).then(|| out.join(" ").replace("( ", "(").replace(" )", ")"))
}

/// What a package's recorded licences amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Declared {
    /// Nothing recorded.
    None,
    /// One SPDX expression (several recorded expressions joined with `AND`).
    Expression(String),
    /// Free text that is not an SPDX expression of known licences.
    Text(Vec<String>),
}

/// Combines recorded licences: one expression if all of them are expressions.
pub fn declared(licenses: &[String]) -> Declared {
    if licenses.is_empty() {
        return Declared::None;
    }
    let exprs: Option<Vec<String>> = licenses.iter().map(|l| expression(l)).collect();
    match exprs {
        Some(e) if e.len() == 1 => Declared::Expression(e.into_iter().collect()),
        Some(e) => Declared::Expression(
            e.iter()
                .map(|x| {
                    if x.contains(' ') {
                        format!("({x})")
                    } else {
                        x.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(" AND "),
        ),
        None => Declared::Text(licenses.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_of_known_licences() {
        assert_eq!(expression("MIT").as_deref(), Some("MIT"));
        assert_eq!(
            expression("apache-2.0 or mit").as_deref(),
            Some("Apache-2.0 OR MIT")
        );
        assert_eq!(
            expression("(MIT OR Apache-2.0) AND GPL-2.0-only WITH Classpath-exception-2.0")
                .as_deref(),
            Some("(MIT OR Apache-2.0) AND GPL-2.0-only WITH Classpath-exception-2.0")
        );
        assert_eq!(expression("LGPL-2.1+").as_deref(), Some("LGPL-2.1+"));
        assert_eq!(expression("MPL-2.0+").as_deref(), Some("MPL-2.0+"));
        for bad in [
            "BSD License",
            "Apache 2.0",
            "MIT AND",
            "(MIT",
            "MIT OR OR ISC",
            "",
            "MIT WITH Foo",
        ] {
            assert_eq!(expression(bad), None, "{bad}");
        }
    }

    #[test]
    fn recorded_licences_combine() {
        assert_eq!(declared(&[]), Declared::None);
        assert_eq!(
            declared(&["MIT".into(), "Apache-2.0 OR ISC".into()]),
            Declared::Expression("MIT AND (Apache-2.0 OR ISC)".into())
        );
        assert_eq!(
            declared(&["MIT".into(), "BSD License".into()]),
            Declared::Text(vec!["MIT".into(), "BSD License".into()])
        );
    }
}
