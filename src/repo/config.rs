//! `lifeboat.json`: what a reader must know before it reads anything else.

use serde::{Deserialize, Serialize};

/// The repository format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The repository config, written once when the repository is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepoConfig {
    /// Always `"lifeboat"`: tells a human what this container holds.
    pub format: String,
    /// Format version; readers refuse versions above theirs.
    pub version: u32,
    /// `lifeboat <version>` that created the repository.
    pub created_by: String,
    /// When.
    pub created_at: jiff::Timestamp,
    /// How volume data is cut into chunks (recorded so it can evolve).
    pub chunker: ChunkerParams,
    /// Compression of chunks and archives.
    pub compression: String,
    /// Client-side encryption: `none` in v1. A reader that meets a scheme it does not know
    /// refuses the repository instead of misreading ciphertext.
    pub encryption: Encryption,
}

/// Content-defined chunking parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkerParams {
    /// Algorithm name (`fastcdc-2020`).
    pub algorithm: String,
    /// Minimum chunk size in bytes.
    pub min_size: u32,
    /// Average (target) chunk size in bytes.
    pub avg_size: u32,
    /// Maximum chunk size in bytes.
    pub max_size: u32,
}

/// Encryption scheme of the repository's objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    /// `none`, or `age-x25519-v1` (see `docs/FORMAT.md`, "Encryption").
    pub scheme: String,
    /// Fingerprints (`sha256:` of the `age1…` string) of the recipients objects are encrypted
    /// to: tells which identity reads this repository, without naming it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// How chunk ids are made: `blake3-keyed` when encrypted; absent means sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_id: Option<String>,
    /// HMAC of a fixed label under the chunk-id key: a writer with another key is refused
    /// instead of silently writing chunks no other backup deduplicates against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_id_key_check: Option<String>,
}

impl Encryption {
    /// Returns true if and only if objects of the repository are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.scheme != "none"
    }
}

impl RepoConfig {
    /// The config a new repository gets from this build.
    pub fn new_default() -> Self {
        Self {
            format: "lifeboat".into(),
            version: FORMAT_VERSION,
            created_by: format!("lifeboat {}", env!("CARGO_PKG_VERSION")),
            created_at: jiff::Timestamp::now(),
            // Measured (`cargo bench --bench mover -- --sweep`: 1 % random 8 KiB page rewrites
            // of a database file): 16/64/256 KiB stores 17x the change (restic's ~1 MiB: 90x)
            // at ~10-16 M chunks per TB; 8/32/128 KiB halves that but doubles the chunks, and
            // so the index memory, per TB.
            chunker: ChunkerParams {
                algorithm: "fastcdc-2020".into(),
                min_size: 16 * 1024,
                avg_size: 64 * 1024,
                max_size: 256 * 1024,
            },
            compression: "zstd".into(),
            encryption: Encryption {
                scheme: "none".into(),
                recipients: Vec::new(),
                chunk_id: None,
                chunk_id_key_check: None,
            },
        }
    }

    /// The config of a new repository encrypted with `key`.
    pub fn new_encrypted(key: &super::crypto::WriterKey) -> Self {
        let mut c = Self::new_default();
        c.encryption = Encryption {
            scheme: super::crypto::SCHEME.into(),
            recipients: key.fingerprints(),
            chunk_id: Some(super::crypto::CHUNK_ID_SCHEME.into()),
            chunk_id_key_check: Some(key.chunk_key().check()),
        };
        c
    }

    /// Returns true if and only if this build can read a repository with this config.
    pub fn is_supported(&self) -> bool {
        self.format == "lifeboat"
            && self.version <= FORMAT_VERSION
            && (self.encryption.scheme == "none"
                || (self.encryption.scheme == super::crypto::SCHEME
                    && self.encryption.chunk_id.as_deref() == Some(super::crypto::CHUNK_ID_SCHEME)))
    }
}
