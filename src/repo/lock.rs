//! One pruner per location: an exclusive lease on `locks/prune`, renewed in the background.
//!
//! Backends provide the lease ([`crate::storage::ObjectWrite::try_lease`]): a blob lease on Azure
//! (lapses `lease` after the holder stops renewing, so a crashed pruner's lock frees itself), a
//! `flock(2)` locally (freed by the kernel the moment the holder's process ends), an in-process
//! map in memory. Backups take no lock: they only create objects, and prune's grace period
//! protects what a backup in progress writes (see `docs/FORMAT.md`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::storage::{Lease, LeaseAttempt, LeaseHolder, StorageError, Writer};

/// The key of the pruner lock, relative to the location's prefix.
pub const PRUNE_LOCK: &str = "locks/prune";

/// How the lock is taken.
#[derive(Debug, Clone)]
pub struct LockOptions {
    /// How long the lease lasts without renewal; renewed every third of it. Azure accepts 15 to
    /// 60 seconds (values outside are clamped); a local `flock` has no duration.
    pub lease: Duration,
    /// Wait up to this long for a held lock (retrying every second); `None`: fail at once.
    pub wait: Option<Duration>,
    /// Who we are, for the message another pruner shows; default `pid N on host H`.
    pub holder: Option<String>,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(60),
            wait: None,
            holder: None,
        }
    }
}

/// Why the lock could not be taken or kept.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another pruner holds it.
    #[error("another prune holds the lock on {location} ({})", describe(holder))]
    Held {
        /// The location.
        location: String,
        /// What is known of the holder.
        holder: LeaseHolder,
    },
    /// The lease was lost while pruning (renewal failed): the pruner stopped deleting.
    #[error("lost the prune lock on {location} while pruning; stopped before deleting more")]
    Lost {
        /// The location.
        location: String,
        /// Why.
        #[source]
        source: StorageError,
    },
    /// The location cannot hold a lock, or the storage failed.
    #[error("cannot take the prune lock on {location}")]
    Storage {
        /// The location.
        location: String,
        /// The storage error.
        #[source]
        source: StorageError,
    },
}

fn describe(h: &LeaseHolder) -> String {
    let mut parts = Vec::new();
    parts.push(format!(
        "holder {}",
        h.holder.as_deref().unwrap_or("unknown")
    ));
    if let Some(since) = h.since {
        parts.push(format!("since {since}"));
    }
    if h.until_exit {
        parts.push("held until that process exits".to_owned());
    } else if let Some(exp) = h.expires_at {
        let secs = exp.duration_since(jiff::Timestamp::now()).as_secs().max(0);
        parts.push(format!(
            "expires in {secs}s unless renewed; a crashed holder's lease lapses then"
        ));
    }
    parts.join(", ")
}

/// The pruner lock, held until [`PruneLock::release`] or drop. A background task renews it; if
/// a renewal fails, [`PruneLock::check`] fails from then on, and the holder must stop deleting.
#[derive(Debug)]
pub struct PruneLock {
    lease: Arc<dyn Lease>,
    location: String,
    lost: Arc<std::sync::Mutex<Option<StorageError>>>,
    lost_flag: Arc<AtomicBool>,
    renewer: Option<JoinHandle<()>>,
}

impl PruneLock {
    /// Takes the lock on `store`'s location, waiting as `opts.wait` says.
    pub async fn acquire(store: &Writer, opts: &LockOptions) -> Result<Self, LockError> {
        let location = store.location().to_owned();
        let holder = opts.holder.clone().unwrap_or_else(default_holder);
        let deadline = opts.wait.map(|w| tokio::time::Instant::now() + w);
        loop {
            let attempt = store
                .try_lease(PRUNE_LOCK, opts.lease, &holder)
                .await
                .map_err(|source| LockError::Storage {
                    location: location.clone(),
                    source,
                })?;
            match attempt {
                LeaseAttempt::Acquired(lease) => {
                    tracing::info!(location, lease = ?lease.ttl(), "took the prune lock");
                    return Ok(Self::start(Arc::from(lease), location));
                }
                LeaseAttempt::Held(h) => match deadline {
                    Some(d) if tokio::time::Instant::now() < d => {
                        tracing::info!(location, holder = ?h.holder, "the prune lock is held; waiting");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    _ => {
                        return Err(LockError::Held {
                            location,
                            holder: h,
                        });
                    }
                },
            }
        }
    }

    fn start(lease: Arc<dyn Lease>, location: String) -> Self {
        let lost = Arc::new(std::sync::Mutex::new(None));
        let lost_flag = Arc::new(AtomicBool::new(false));
        // Renew at a third of the ttl, so two renewals can fail transiently (each is retried
        // by the SDK) before the lease lapses. A flock has no ttl; it is checked every 10 s.
        let every = lease
            .ttl()
            .map(|t| t / 3)
            .unwrap_or(Duration::from_secs(10))
            .max(Duration::from_millis(100));
        let renewer = {
            let (lease, lost, lost_flag) = (lease.clone(), lost.clone(), lost_flag.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await; // the first tick is immediate
                loop {
                    tick.tick().await;
                    if let Err(e) = lease.renew().await {
                        tracing::error!(error = %e, "could not renew the prune lock");
                        *lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        lost_flag.store(true, Ordering::SeqCst);
                        return;
                    }
                    tracing::trace!("renewed the prune lock");
                }
            })
        };
        Self {
            lease,
            location,
            lost,
            lost_flag,
            renewer: Some(renewer),
        }
    }

    /// Fails once the lease has been lost; call before each destructive step.
    pub fn check(&self) -> Result<(), LockError> {
        if !self.lost_flag.load(Ordering::SeqCst) {
            return Ok(());
        }
        let source = self
            .lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| StorageError::LeaseLost {
                location: self.location.clone(),
                key: PRUNE_LOCK.into(),
                reason: "renewal failed".into(),
            });
        Err(LockError::Lost {
            location: self.location.clone(),
            source,
        })
    }

    /// How long the lease lasts without renewal (`None`: as long as this process).
    pub fn ttl(&self) -> Option<Duration> {
        self.lease.ttl()
    }

    /// Stops renewing and gives the lock up.
    pub async fn release(mut self) -> Result<(), LockError> {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        self.lease
            .release()
            .await
            .map_err(|source| LockError::Storage {
                location: self.location.clone(),
                source,
            })
    }

    /// Stops renewing without releasing, as a crashed holder would: the lock lapses after its
    /// ttl (Azure, memory). For tests of that path.
    #[doc(hidden)]
    pub fn abandon(mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        // Keep a local flock held as a dead process's would not be: there is no way to leak
        // an fd "as if killed", so tests of flock kill a child process instead.
        std::mem::forget(self);
    }
}

impl Drop for PruneLock {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
            // Release in the background when dropped without `release` (an error path); if
            // the runtime is gone, the lease lapses by itself.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let lease = self.lease.clone();
                rt.spawn(async move {
                    if let Err(e) = lease.release().await {
                        tracing::debug!(error = %e, "could not release the prune lock");
                    }
                });
            }
        }
    }
}

fn default_holder() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    format!("lifeboat pid {} on host {host}", std::process::id())
}
