//! Object storage: the only layer that talks to a directory or to Azure Blob.
//!
//! Objects are addressed by a key relative to the location's prefix (`backups/x/manifest.json`);
//! this layer knows nothing of backups. Reading and writing are split: [`Reader`] exposes only
//! [`ObjectRead`], [`Writer`] adds [`ObjectWrite`]. Code handed a `Reader` (every restore) cannot
//! write, and the compiler, not a runtime flag, enforces it.
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use lifeboat::storage::{PutOutcome, Writer, memory::MemoryBackend};
//! # #[tokio::main] async fn main() -> lifeboat::storage::Result<()> {
//! let w = Writer::new(Arc::new(MemoryBackend::new("doc")));
//! assert_eq!(w.put_if_absent("a/b", Bytes::from_static(b"x")).await?, PutOutcome::Created);
//! // Write-once: a second create leaves the first object alone.
//! assert_eq!(w.put_if_absent("a/b", Bytes::from_static(b"y")).await?, PutOutcome::AlreadyExists);
//! let r = w.reader(); // a `Reader` has no write methods at all
//! assert_eq!(r.get("a/b").await?, Bytes::from_static(b"x"));
//! # Ok(()) }
//! ```
//!
//! Writing through a `Reader` does not compile:
//!
//! ```compile_fail
//! # async fn restore(r: lifeboat::storage::Reader) {
//! r.put_if_absent("k", bytes::Bytes::new()).await;
//! # }
//! ```

pub mod azure;
mod lease;
pub mod local;
pub mod memory;
mod open;
pub mod transfer;

use std::ops::{Deref, Range};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub use lease::{Lease, LeaseAttempt, LeaseHolder};
pub use open::{open_reader, open_writer, probe_write};
pub use transfer::{LocalCopy, TransferOptions, download_to_temp, sha256_file};

/// Names of `probe_write`'s objects start with this; a leftover one (its delete failed) does not
/// make a location foreign.
pub(crate) const PROBE_PREFIX: &str = ".lifeboat-probe-";

/// What a listing or a `head` tells about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the location's prefix.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time, where the backend knows it.
    pub last_modified: Option<jiff::Timestamp>,
}

/// Result of a conditional create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object did not exist and now holds the data.
    Created,
    /// An object of that key already existed; it was left untouched.
    AlreadyExists,
}

/// Replication facts of a geo-replicated (RA-GRS) secondary endpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationStatus {
    /// `live`, `bootstrap` or `unavailable`, as the service reports it.
    pub status: String,
    /// Every write to the primary before this instant is readable on the secondary.
    pub last_sync_time: Option<jiff::Timestamp>,
}

/// Errors of the storage layer. Each names the object (or location) involved.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The object does not exist.
    #[error("object {key:?} not found in {location}")]
    NotFound {
        /// The location, as [`ObjectRead::location`] names it.
        location: String,
        /// The object's key.
        key: String,
    },
    /// The location was configured or opened read-only and a write was attempted.
    #[error("location {location} is read-only")]
    ReadOnly {
        /// The location's configured name.
        location: String,
    },
    /// The service refused the credentials or the operation (401/403).
    #[error(
        "{op} {key:?} on {location} was refused (HTTP {status}): check the credentials and their permissions"
    )]
    Denied {
        /// The location.
        location: String,
        /// The operation refused (`get`, `put`, `list`, ...).
        op: &'static str,
        /// The object's key (empty for account- or container-level operations).
        key: String,
        /// The HTTP status (401 or 403).
        status: u16,
    },
    /// A key that cannot be stored (empty, absolute, `..`).
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A requested byte range lies outside the object.
    #[error("range {start}..{end} is outside object {key:?} of {size} bytes")]
    InvalidRange {
        /// The object's key.
        key: String,
        /// First byte requested.
        start: u64,
        /// One past the last byte requested.
        end: u64,
        /// The object's size.
        size: u64,
    },
    /// Local file-system failure.
    #[error("{op} {path}")]
    Io {
        /// What was being done (`read object`, `sync directory`, ...).
        op: &'static str,
        /// The file or directory involved.
        path: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The backend cannot do this operation (e.g. leases on a backend without them).
    #[error("{op} is not supported by {location}")]
    Unsupported {
        /// The location.
        location: String,
        /// The operation.
        op: &'static str,
    },
    /// A lease this process held was taken over or has lapsed: the holder must stop.
    #[error("the lease on {key:?} in {location} was lost: {reason}")]
    LeaseLost {
        /// The location.
        location: String,
        /// The lease's key.
        key: String,
        /// What happened.
        reason: String,
    },
    /// A location that must never hold a repository (the file-system root, a home directory):
    /// a repository writes `lifeboat.json` and `backups/` at its top.
    #[error(
        "location {location} is {what}; lifeboat will not write a repository there: set its `path` to a new or empty directory (e.g. {suggestion})"
    )]
    Unsuitable {
        /// The location.
        location: String,
        /// What it is (`the file-system root`, `the home directory`).
        what: &'static str,
        /// A directory that would do.
        suggestion: String,
    },
    /// Azure request failure (after retries, where retrying made sense).
    #[error("{op} {key:?} on {location} failed")]
    Azure {
        /// The location.
        location: String,
        /// The operation that failed.
        op: &'static str,
        /// The object's key (empty for account- or container-level operations).
        key: String,
        /// The SDK's error, with the service's status and error code (boxed: it is large).
        #[source]
        source: Box<azure_core::Error>,
    },
    /// The location's configuration cannot be turned into a client (missing credentials, bad URL).
    #[error("cannot open location {location}: {reason}")]
    Config {
        /// The location's configured name.
        location: String,
        /// What is missing or wrong.
        reason: String,
    },
}

impl StorageError {
    /// True if and only if the location itself was refused before anything was written to it
    /// (read-only, or a place no repository belongs): a configuration mistake, not a failure.
    pub fn is_location_refused(&self) -> bool {
        matches!(self, Self::ReadOnly { .. } | Self::Unsuitable { .. })
    }
}

/// Storage result.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// The read side of an object store.
#[async_trait]
pub trait ObjectRead: Send + Sync + 'static {
    /// Human-readable name of the location, for messages (`local:/srv/backups`, `azure:acct/container/prefix`).
    fn location(&self) -> &str;
    /// Whole object.
    async fn get(&self, key: &str) -> Result<Bytes>;
    /// Bytes `range.start..range.end` of an object.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes>;
    /// Size and time of an object, `None` if it does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>>;
    /// Every object whose key starts with `prefix`, streamed page by page, in key order.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>>;
    /// The name of some entry at the top of the location, or `None` if it is empty. Backends
    /// that cannot tell cheaply answer `None` (a container is made for the purpose; only a
    /// directory is commonly shared with other things).
    async fn top_entry(&self) -> Result<Option<String>> {
        Ok(None)
    }
    /// Replication facts for a geo-secondary endpoint; `None` where the notion does not apply.
    async fn replication_status(&self) -> Result<Option<ReplicationStatus>> {
        Ok(None)
    }
    /// Downloads an object into a file with parallel ranged reads; returns its size.
    async fn get_to_file(&self, key: &str, path: &Path, opts: &TransferOptions) -> Result<u64> {
        transfer::download_ranged(self, key, path, opts).await
    }
}

/// The write side. Objects are write-once: there is no overwrite, only create-if-absent and delete.
#[async_trait]
pub trait ObjectWrite: ObjectRead {
    /// Creates the object unless one of that key exists (then nothing is written).
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutOutcome>;
    /// Creates the object from a file, in staged blocks with bounded parallelism where the backend
    /// supports it, unless one of that key exists.
    async fn put_file_if_absent(
        &self,
        key: &str,
        path: &Path,
        opts: &TransferOptions,
    ) -> Result<PutOutcome>;
    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Creates what the location needs before its first object (an Azure container, a local
    /// root directory); returns true if and only if something was created. Idempotent.
    async fn create_location(&self) -> Result<bool> {
        Ok(false)
    }
    /// Tries once to take the exclusive lease `key` (an object outside the repository's data,
    /// e.g. `locks/prune`) for `ttl`, recording `holder` for whoever finds it taken. Never
    /// waits: a lease someone else holds is [`LeaseAttempt::Held`]. How long a holder that
    /// stops renewing keeps it is the backend's (see [`Lease::ttl`]).
    async fn try_lease(
        &self,
        key: &str,
        ttl: std::time::Duration,
        holder: &str,
    ) -> Result<LeaseAttempt> {
        let _ = (key, ttl, holder);
        Err(StorageError::Unsupported {
            location: self.location().to_owned(),
            op: "locking",
        })
    }
}

/// A handle that can only read. Cheap to clone.
#[derive(Clone)]
pub struct Reader(Arc<dyn ObjectRead>);

/// A handle that can read and write. Cheap to clone.
#[derive(Clone)]
pub struct Writer(Arc<dyn ObjectWrite>);

impl Reader {
    /// Wraps a backend as read-only.
    pub fn new(inner: Arc<dyn ObjectRead>) -> Self {
        Self(inner)
    }
}

impl Writer {
    /// Wraps a backend as writable.
    pub fn new(inner: Arc<dyn ObjectWrite>) -> Self {
        Self(inner)
    }
    /// The same location, read-only.
    pub fn reader(&self) -> Reader {
        Reader(self.0.clone())
    }
}

impl Deref for Reader {
    type Target = dyn ObjectRead;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl Deref for Writer {
    type Target = dyn ObjectWrite;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// Checks a key before it reaches a backend: relative, `/`-separated, no empty or `..` segments.
pub fn validate_key(key: &str) -> Result<()> {
    let bad = |reason| {
        Err(StorageError::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("empty");
    }
    if key.starts_with('/') {
        return bad("absolute");
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return bad("empty, '.' or '..' segment");
    }
    if key.contains('\\') || key.contains('\0') {
        return bad("backslash or NUL");
    }
    Ok(())
}

/// Checks a listing prefix: empty, or the start of a valid key (so `../` cannot walk out of a
/// local root).
pub fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    // Any valid key can follow the prefix; "x" stands in for the rest.
    validate_key(&format!("{prefix}x")).map_err(|e| match e {
        StorageError::InvalidKey { reason, .. } => StorageError::InvalidKey {
            key: prefix.to_owned(),
            reason,
        },
        other => other,
    })
}
