//! Exclusive leases: the primitive under the repository's pruner lock. Each backend implements
//! [`super::ObjectWrite::try_lease`] with what it has: a blob lease on Azure, `flock(2)` on a
//! local directory, a map entry in memory.

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use super::Result;

/// A lease this process holds. Dropping it without [`Lease::release`] is allowed: the backend
/// then frees it when the lease lapses (Azure, memory) or the file closes (local).
#[async_trait]
pub trait Lease: Send + Sync + std::fmt::Debug {
    /// How long the lease lasts without a renewal (`None`: until released or the process ends).
    fn ttl(&self) -> Option<Duration>;
    /// Extends the lease by its ttl from now. An error means the lease is (or may be) lost: the
    /// holder must stop acting under it.
    async fn renew(&self) -> Result<()>;
    /// Gives the lease up now.
    async fn release(&self) -> Result<()>;
}

/// What is known about the holder of a lease someone else has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseHolder {
    /// Who took it, as they described themselves (`pid 4242 on host backup-7f9c`).
    pub holder: Option<String>,
    /// When they took it.
    pub since: Option<jiff::Timestamp>,
    /// The latest time it lapses unless renewed again, where known.
    pub expires_at: Option<jiff::Timestamp>,
    /// Returns true if the lease lasts as long as the holder's process (a local `flock`), so it
    /// is freed the moment that process exits or is killed, not after a ttl.
    pub until_exit: bool,
}

/// Outcome of one [`super::ObjectWrite::try_lease`].
#[derive(Debug)]
pub enum LeaseAttempt {
    /// Taken: this process holds it.
    Acquired(Box<dyn Lease>),
    /// Someone else holds it.
    Held(LeaseHolder),
}

/// The metadata/content a holder records, shared by the backends that store it as JSON.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HolderRecord {
    pub holder: String,
    pub since: jiff::Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<jiff::Timestamp>,
}
