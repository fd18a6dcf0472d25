//! The backup repository format (v1), on top of [`crate::storage`].
//!
//! Every object is written once and never rewritten (see `docs/FORMAT.md`):
//!
//! ```text
//! lifeboat.json                          RepoConfig: format version, chunker, encryption scheme
//! packs/<aa>/<sha256>                    immutable packs of volume-data chunks
//! backups/<name>/resources.tar.zst       every object of the cluster as JSON
//! backups/<name>/volumes/<ns>/<pvc>.json volume indexes
//! backups/<name>/manifest.json           written last: the commit point
//! ```
//!
//! [`RepoReader`] wraps a [`crate::storage::Reader`] and so cannot write; [`RepoWriter`] is the
//! only way to create objects, and a backup only exists once [`BackupWriter::commit`] has
//! written its manifest.
//!
//! This part owns every stored format, so a change of format (encryption, say) touches it alone:
//! keys ([`Layout`], the only place they are built), ids ([`ChunkId`], [`PackId`]), the manifest
//! and its typed details, the resource archive ([`archive`]), volume indexes ([`index`]), packs
//! ([`pack`]). Deletion is here too, writer side only, under the prune lock ([`lock`]):
//! retention ([`retention`]) and one garbage-collection run ([`prune()`], ending with
//! [`retire`]).

pub mod alive;
pub mod archive;
mod config;
pub mod crypto;
mod details;
mod ids;
pub mod index;
mod layout;
pub mod lock;
mod manifest;
mod names;
pub mod pack;
pub mod prune;
mod reader;
pub mod retention;
pub mod retire;
mod volumes;
mod writer;

pub use config::{ChunkerParams, Encryption, FORMAT_VERSION, RepoConfig};
pub use details::{
    ClaimScope, ManifestDetails, ResourceSummary, ResourcesDetail, ScopeDetail, Skipped,
};
pub use ids::{ChunkId, PackId};
pub use layout::Layout;
pub use lock::{LockError, LockOptions, PruneLock};
pub use manifest::{ClusterFacts, Manifest, ObjectEntry};
pub use names::{BackupName, NameError};
pub use prune::{BackupSelector, PruneError, PruneOptions, PruneReport, prune};
pub use reader::{
    BackupListing, Completeness, IndexFile, Listed, RepoKeys, RepoReader, Unreadable, VerifyOptions,
};
pub use retention::{RetentionError, RetentionPolicy};
pub use retire::{GcPhase, PhaseHook, RetireError, RetireReport};
pub use volumes::{VolumeFigures, VolumeRecord, VolumeStatus};
pub use writer::{BackupWriter, RepoWriter};

use crate::storage::StorageError;

/// Errors of the repository layer.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The location holds no `lifeboat.json`.
    #[error(
        "{location} is not a lifeboat repository (no lifeboat.json); a first `lifeboat backup` to it creates one"
    )]
    NotARepository {
        /// The location.
        location: String,
    },
    /// A location that holds something but no repository: the first backup would mix its
    /// objects with someone else's files (and prune could later delete theirs).
    #[error(
        "{location} is not empty and is not a lifeboat repository (it holds {found:?} but no lifeboat.json): point the location at a new or empty directory, or at an existing repository"
    )]
    ForeignLocation {
        /// The location.
        location: String,
        /// An entry found at its top.
        found: String,
    },
    /// `lifeboat.json` is of a newer format or uses a feature this build lacks.
    #[error(
        "{location}: repository format {found} is not supported by this lifeboat (it reads format {supported}); upgrade lifeboat"
    )]
    UnsupportedFormat {
        /// The location.
        location: String,
        /// What the repository says.
        found: String,
        /// What this build reads.
        supported: u32,
    },
    /// A stored JSON document does not parse.
    #[error("{location}: {key} is not a valid {what}")]
    Corrupt {
        /// The location.
        location: String,
        /// The object.
        key: String,
        /// What it should have been.
        what: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A manifest is well-formed JSON but one of its fields is not what this format says (a
    /// damaged or hand-edited manifest). Nothing reads on from a half-understood manifest: a
    /// restore would otherwise plan without the part it could not read.
    #[error("backup {backup:?} in {location}: the manifest's field `{field}` is invalid")]
    BadManifest {
        /// The backup.
        backup: String,
        /// The location.
        location: String,
        /// The field's path, e.g. `details.volumes[0].status`.
        field: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The manifest does not match the digest of its own content it carries: it was damaged
    /// after the commit (the objects it names are not to blame).
    #[error(
        "the manifest of backup {backup:?} ({key} in {location}) is damaged: its content's sha256 is {actual}, it records {recorded}; restore from another backup or another copy of this one"
    )]
    ManifestDamaged {
        /// The backup.
        backup: String,
        /// The location.
        location: String,
        /// The manifest's key.
        key: String,
        /// The digest it records (as found, JSON).
        recorded: String,
        /// The digest of its content.
        actual: String,
    },
    /// The backup has no manifest: never committed, or not (yet) replicated here.
    #[error("backup {name:?} does not exist in {location} (no committed manifest)")]
    NoSuchBackup {
        /// The backup.
        name: String,
        /// The location.
        location: String,
    },
    /// The backup holds no data of that volume.
    #[error("backup {backup} holds no data of volume {volume} ({key} is not in its manifest)")]
    NoSuchVolume {
        /// The backup.
        backup: String,
        /// `namespace/claim`.
        volume: String,
        /// The index key looked for.
        key: String,
    },
    /// An object the manifest lists is not on this location (not replicated yet, or lost).
    #[error("{key} is listed in the manifest of backup {backup} but missing from {location}")]
    MissingObject {
        /// The backup.
        backup: String,
        /// The object.
        key: String,
        /// The location.
        location: String,
    },
    /// A backup of that name is already committed.
    #[error("backup {name:?} already exists in {location}; choose another name")]
    BackupExists {
        /// The backup.
        name: String,
        /// The location.
        location: String,
    },
    /// An object of the backup being written already exists: left by an interrupted run of the
    /// same name. Objects are write-once, so the backup needs a new name.
    #[error(
        "{key} already exists in {location}, left by an interrupted backup of the same name; use another --name (prune removes the leftovers)"
    )]
    LeftoverObject {
        /// The object.
        key: String,
        /// The location.
        location: String,
    },
    /// A pack the backup references is gone (collected by a prune while the backup ran).
    #[error(
        "backup {backup} references {key}, which no longer exists (a prune collected it while the backup ran); nothing was committed, run the backup again"
    )]
    MissingPack {
        /// The pack.
        key: String,
        /// The backup.
        backup: String,
    },
    /// An object of the backup's own (its archive or a volume index) is gone before the commit.
    #[error(
        "backup {backup}'s {key} no longer exists (a prune collected it while the backup ran longer than its grace period); nothing was committed, run the backup again"
    )]
    LostBeforeCommit {
        /// The object.
        key: String,
        /// The backup.
        backup: String,
    },
    /// An object does not hold what was recorded for it: what its mover reported (when a backup
    /// adopts it), or what the manifest lists (when a reader downloads it). Corrupt or tampered.
    #[error("{key} is corrupted: its sha256 is {actual}, {expected} was recorded")]
    DigestMismatch {
        /// The object.
        key: String,
        /// The digest recorded.
        expected: String,
        /// The digest read back.
        actual: String,
    },
    /// The manifest changed under us (another writer committed the same name first).
    #[error("another writer committed backup {name:?} in {location} first")]
    CommitRace {
        /// The backup.
        name: String,
        /// The location.
        location: String,
    },
    /// The resource archive is unreadable or does not match its digest.
    #[error("backup {backup}: {detail}")]
    Archive {
        /// The backup.
        backup: String,
        /// What is wrong.
        detail: String,
    },
    /// A volume index does not parse.
    #[error("the volume index {key} does not parse")]
    Index {
        /// The index.
        key: String,
        /// Why.
        #[source]
        source: index::IndexError,
    },
    /// The repository is encrypted and reading it needs the identity, which was not given.
    #[error(
        "{location} is an encrypted repository: {what} needs its identity (the location's `encryption.identity: {{ file: PATH }}` or `{{ env: VAR }}`); a writer key can write backups but never read them"
    )]
    IdentityNeeded {
        /// The location.
        location: String,
        /// What needed it.
        what: String,
    },
    /// The repository is encrypted and writing it needs the writer key.
    #[error(
        "{location} is an encrypted repository: writing a backup needs its writer key (the location's `encryption.writerKey: {{ file: PATH }}` or `{{ env: VAR }}`); an identity alone does not write"
    )]
    WriterKeyNeeded {
        /// The location.
        location: String,
    },
    /// A key was given for a repository that is not encrypted: a repository is never mixed.
    #[error(
        "{location} is an unencrypted repository but an encryption key is configured: a repository is created encrypted or not and never mixed; point the location at a new, empty place for encrypted backups, or remove `encryption` from it"
    )]
    NotEncrypted {
        /// The location.
        location: String,
    },
    /// The key given is not this repository's.
    #[error("{location}: {what} is not this repository's key: {detail}")]
    WrongKey {
        /// The location.
        location: String,
        /// Which key.
        what: &'static str,
        /// What does not match.
        detail: String,
    },
    /// An object of an encrypted repository does not decrypt.
    #[error("backup {backup}: cannot decrypt {key}: {source}")]
    Decrypt {
        /// The backup.
        backup: String,
        /// The object.
        key: String,
        /// Why.
        #[source]
        source: crypto::CryptoError,
    },
    /// A storage failure.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A local file could not be read.
    #[error("cannot read {path}")]
    File {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// An error with its causes, `: `-separated (what a warning about a skipped manifest says).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

impl RepoError {
    /// True if and only if the location was refused before anything was written to it (see
    /// [`StorageError::is_location_refused`]): a configuration mistake, not a failure.
    pub fn is_location_refused(&self) -> bool {
        match self {
            Self::ForeignLocation { .. }
            | Self::IdentityNeeded { .. }
            | Self::WriterKeyNeeded { .. }
            | Self::NotEncrypted { .. }
            | Self::WrongKey { .. } => true,
            Self::Storage(e) => e.is_location_refused(),
            _ => false,
        }
    }
}

/// Repository result.
pub type Result<T, E = RepoError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
