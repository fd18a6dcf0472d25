//! An in-memory object store for tests. Like rustic's `InMemoryBackend`, it refuses to overwrite:
//! a second create of a key leaves the first object untouched, so a test catches code that
//! would rewrite an object.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use super::transfer::{blocking, io_err};
use super::{
    Lease, LeaseAttempt, LeaseHolder, ObjectMeta, ObjectRead, ObjectWrite, PutOutcome, Result,
    StorageError, TransferOptions, validate_key, validate_prefix,
};

/// A lease in the map: its token (which handle holds it), holder, start and expiry.
#[derive(Debug, Clone)]
struct LeaseEntry {
    token: u64,
    holder: String,
    since: jiff::Timestamp,
    expires_at: jiff::Timestamp,
}

type LeaseMap = Arc<Mutex<HashMap<String, LeaseEntry>>>;

fn lock_leases(m: &LeaseMap) -> std::sync::MutexGuard<'_, HashMap<String, LeaseEntry>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Objects in a map, keyed by name.
#[derive(Debug)]
pub struct MemoryBackend {
    location: String,
    objects: Mutex<BTreeMap<String, (Bytes, jiff::Timestamp)>>,
    /// In-process leases with an expiry, like Azure's: separate from objects, so a lease never
    /// shows up in a listing.
    leases: LeaseMap,
}

impl MemoryBackend {
    /// An empty store; `name` appears in messages as `memory:<name>`.
    pub fn new(name: &str) -> Self {
        Self {
            location: format!("memory:{name}"),
            objects: Mutex::new(BTreeMap::new()),
            leases: LeaseMap::default(),
        }
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Bytes, jiff::Timestamp)>> {
        // A panic while holding the lock cannot leave the map half-updated (single inserts).
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lookup(&self, key: &str) -> Result<Bytes> {
        validate_key(key)?;
        self.objects()
            .get(key)
            .map(|(b, _)| b.clone())
            .ok_or_else(|| StorageError::NotFound {
                location: self.location.clone(),
                key: key.to_owned(),
            })
    }
}

#[async_trait]
impl ObjectRead for MemoryBackend {
    fn location(&self) -> &str {
        &self.location
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.lookup(key)
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let data = self.lookup(key)?;
        let size = data.len() as u64;
        if range.start > range.end || range.end > size {
            return Err(StorageError::InvalidRange {
                key: key.to_owned(),
                start: range.start,
                end: range.end,
                size,
            });
        }
        Ok(data.slice(range.start as usize..range.end as usize))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        validate_key(key)?;
        Ok(self.objects().get(key).map(|(b, t)| ObjectMeta {
            key: key.to_owned(),
            size: b.len() as u64,
            last_modified: Some(*t),
        }))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>> {
        if let Err(e) = validate_prefix(prefix) {
            return Box::pin(futures::stream::once(async move { Err(e) }));
        }
        // A snapshot of the matching keys: fine for a test store, and it never holds the lock
        // across an await.
        let items: Vec<Result<ObjectMeta>> = self
            .objects()
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (b, t))| {
                Ok(ObjectMeta {
                    key: k.clone(),
                    size: b.len() as u64,
                    last_modified: Some(*t),
                })
            })
            .collect();
        Box::pin(futures::stream::iter(items))
    }
}

#[async_trait]
impl ObjectWrite for MemoryBackend {
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutOutcome> {
        validate_key(key)?;
        let mut objects = self.objects();
        if objects.contains_key(key) {
            return Ok(PutOutcome::AlreadyExists);
        }
        objects.insert(key.to_owned(), (data, jiff::Timestamp::now()));
        Ok(PutOutcome::Created)
    }

    async fn put_file_if_absent(
        &self,
        key: &str,
        path: &Path,
        _opts: &TransferOptions,
    ) -> Result<PutOutcome> {
        validate_key(key)?;
        let p = path.to_path_buf();
        let data =
            blocking(move || std::fs::read(&p).map_err(io_err("read upload source", &p))).await?;
        self.put_if_absent(key, Bytes::from(data)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.objects().remove(key);
        Ok(())
    }

    async fn try_lease(&self, key: &str, ttl: Duration, holder: &str) -> Result<LeaseAttempt> {
        validate_key(key)?;
        static TOKENS: AtomicU64 = AtomicU64::new(1);
        let now = jiff::Timestamp::now();
        let mut leases = lock_leases(&self.leases);
        if let Some(e) = leases.get(key)
            && e.expires_at > now
        {
            return Ok(LeaseAttempt::Held(LeaseHolder {
                holder: Some(e.holder.clone()),
                since: Some(e.since),
                expires_at: Some(e.expires_at),
                until_exit: false,
            }));
        }
        let token = TOKENS.fetch_add(1, Ordering::Relaxed);
        leases.insert(
            key.to_owned(),
            LeaseEntry {
                token,
                holder: holder.to_owned(),
                since: now,
                expires_at: now + ttl,
            },
        );
        Ok(LeaseAttempt::Acquired(Box::new(MemoryLease {
            leases: self.leases.clone(),
            location: self.location.clone(),
            key: key.to_owned(),
            token,
            ttl,
        })))
    }
}

/// A lease held in a [`MemoryBackend`].
#[derive(Debug)]
struct MemoryLease {
    leases: LeaseMap,
    location: String,
    key: String,
    token: u64,
    ttl: Duration,
}

#[async_trait]
impl Lease for MemoryLease {
    fn ttl(&self) -> Option<Duration> {
        Some(self.ttl)
    }

    async fn renew(&self) -> Result<()> {
        let now = jiff::Timestamp::now();
        let mut leases = lock_leases(&self.leases);
        match leases.get_mut(&self.key) {
            // Like Azure, a lapsed lease nobody else took can still be renewed.
            Some(e) if e.token == self.token => {
                e.expires_at = now + self.ttl;
                Ok(())
            }
            _ => Err(StorageError::LeaseLost {
                location: self.location.clone(),
                key: self.key.clone(),
                reason: "another holder took it after it lapsed".into(),
            }),
        }
    }

    async fn release(&self) -> Result<()> {
        let mut leases = lock_leases(&self.leases);
        if leases.get(&self.key).is_some_and(|e| e.token == self.token) {
            leases.remove(&self.key);
        }
        Ok(())
    }
}
