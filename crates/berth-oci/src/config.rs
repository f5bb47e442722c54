//! Image configs (`application/vnd.oci.image.config.v1+json` and Docker's
//! `application/vnd.docker.container.image.v1+json`): the platform they declare.
//!
//! The server records it when an image is pushed and the client reads it to build an
//! index, so both read the config's top-level `os`, `architecture`, `variant`,
//! `os.version` and `os.features` here, the same way.

use crate::manifest::Platform;

/// The platform an image config declares, or `None` when the bytes are not a JSON
/// object with non-empty string `os` and `architecture` fields.
pub fn platform_of_config(bytes: &[u8]) -> Option<Platform> {
    // The fields of a platform sit at the top level of an image config under the same
    // names as in an index entry, so `Platform` reads them directly; other fields are
    // ignored.
    let p: Platform = serde_json::from_slice(bytes).ok()?;
    (!p.os.is_empty() && !p.architecture.is_empty()).then_some(p)
}

/// The label that carries an image's release version (`LABEL org.opencontainers.image.version=…`
/// in a Dockerfile).
pub const VERSION_LABEL: &str = "org.opencontainers.image.version";

/// The version an image config records in its labels (`config.Labels`), if any.
pub fn version_of_config(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(default)]
        config: Option<Inner>,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        #[serde(rename = "Labels", default)]
        labels: Option<std::collections::BTreeMap<String, String>>,
    }
    let c: Config = serde_json::from_slice(bytes).ok()?;
    let v = c.config?.labels?.remove(VERSION_LABEL)?;
    (!v.trim().is_empty()).then(|| v.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_from_labels() {
        let c = br#"{"architecture":"amd64","os":"linux",
            "config":{"Labels":{"org.opencontainers.image.version":"0.9.0","x":"y"}}}"#;
        assert_eq!(version_of_config(c).as_deref(), Some("0.9.0"));
        assert_eq!(version_of_config(br#"{"config":{"Labels":null}}"#), None);
        assert_eq!(version_of_config(br#"{"config":{}}"#), None);
        assert_eq!(version_of_config(br#"{"os":"linux"}"#), None);
        assert_eq!(version_of_config(b"not json"), None);
    }

    #[test]
    fn platform_of_an_image_config() {
        let p = platform_of_config(
            br#"{"architecture":"arm64","os":"linux","variant":"v8","os.version":"6.1",
                 "rootfs":{"type":"layers","diff_ids":[]},"config":{"Env":["A=1"]}}"#,
        )
        .unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(p.os_version.as_deref(), Some("6.1"));
        let p = platform_of_config(br#"{"architecture":"amd64","os":"linux"}"#).unwrap();
        assert_eq!(p.to_string(), "linux/amd64");
        assert_eq!(p.variant, None);
    }

    #[test]
    fn no_platform_without_os_and_architecture() {
        assert_eq!(platform_of_config(br#"{"architecture":"amd64"}"#), None);
        assert_eq!(
            platform_of_config(br#"{"architecture":"","os":"linux"}"#),
            None
        );
        assert_eq!(
            platform_of_config(br#"{"architecture":1,"os":"linux"}"#),
            None
        );
        assert_eq!(platform_of_config(b"{}"), None);
        assert_eq!(platform_of_config(b"not json"), None);
    }
}
