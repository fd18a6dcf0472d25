//! Validated names used in object keys.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A backup's name: 1-200 characters of `[a-z0-9._-]`, starting with a letter or digit, so it
/// is safe as a blob-name segment, a Kubernetes label value prefix and a file name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BackupName(String);

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid backup name {name:?}: expected 1-200 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
)]
pub struct NameError {
    /// The refused name.
    pub name: String,
}

impl BackupName {
    /// Validates a name.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= 200
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            });
        if ok {
            Ok(Self(name))
        } else {
            Err(NameError { name })
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BackupName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::new(s)
    }
}

impl From<BackupName> for String {
    fn from(n: BackupName) -> String {
        n.0
    }
}

impl fmt::Display for BackupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for BackupName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::new(s)
    }
}
