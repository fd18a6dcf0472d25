//! Blob leases: the pruner lock on Azure. The lease blob (`locks/prune`) is an empty blob whose
//! metadata names the holder; the lease itself is the service's, so a holder that crashes loses
//! it when the lease duration lapses without renewal, with no clock of ours involved.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::error::ErrorKind;
use azure_core::http::StatusCode;
use azure_storage_blob::BlobClient;
use azure_storage_blob::models::{
    BlobClientAcquireLeaseOptions, BlobClientGetPropertiesResultHeaders,
    BlobClientSetMetadataOptions,
};
use bytes::Bytes;

use super::AzureBackend;
use crate::storage::{Lease, LeaseAttempt, LeaseHolder, ObjectWrite, Result, StorageError};

/// The service accepts lease durations of 15 to 60 seconds (or infinite, which a crashed
/// holder would never give back).
const MIN_LEASE: u64 = 15;
const MAX_LEASE: u64 = 60;

impl AzureBackend {
    pub(super) async fn acquire_lease(
        &self,
        key: &str,
        ttl: Duration,
        holder: &str,
    ) -> Result<LeaseAttempt> {
        let blob = self.blob(key)?;
        let secs = ttl.as_secs().clamp(MIN_LEASE, MAX_LEASE);
        if secs != ttl.as_secs() {
            tracing::debug!(
                requested = ttl.as_secs(),
                used = secs,
                "Azure leases last 15 to 60 seconds"
            );
        }
        let ttl = Duration::from_secs(secs);
        // At most twice: the first try may find no lease blob and create it.
        for _ in 0..2 {
            let proposed = azure_core::Uuid::new_v4().to_string();
            let opts = BlobClientAcquireLeaseOptions {
                proposed_lease_id: Some(proposed.clone()),
                ..Default::default()
            };
            match blob.acquire_lease(secs as i32, Some(opts)).await {
                Ok(_) => {
                    let lease = AzureLease {
                        blob,
                        lease_id: proposed,
                        ttl,
                        holder: holder.to_owned(),
                        since: jiff::Timestamp::now(),
                        location: self.location.clone(),
                        key: key.to_owned(),
                    };
                    // The holder's name is for messages only; failing to record it is no reason
                    // to give the lock up.
                    if let Err(e) = lease.record().await {
                        tracing::debug!(error = %e, "could not record the lease holder");
                    }
                    return Ok(LeaseAttempt::Acquired(Box::new(lease)));
                }
                Err(e) if e.http_status() == Some(StatusCode::NotFound) => {
                    if super::is_container_not_found(&e) {
                        return Err(self.map_err("acquire lease on", key, e));
                    }
                    // Two processes may both create it; a conditional create makes that harmless.
                    self.put_if_absent(key, Bytes::new()).await?;
                }
                Err(e) if e.http_status() == Some(StatusCode::Conflict) => {
                    return Ok(LeaseAttempt::Held(self.lease_holder(&blob, key).await));
                }
                Err(e) => return Err(self.map_err("acquire lease on", key, e)),
            }
        }
        Err(StorageError::NotFound {
            location: self.location.clone(),
            key: key.to_owned(),
        })
    }

    async fn lease_holder(&self, blob: &BlobClient, key: &str) -> LeaseHolder {
        let mut out = LeaseHolder::default();
        match blob.get_properties(None).await {
            Ok(rsp) => {
                let meta = rsp.metadata().unwrap_or_default();
                out.holder = meta.get("holder").cloned();
                out.since = meta.get("since").and_then(|s| s.parse().ok());
                out.expires_at = meta.get("expiresat").and_then(|s| s.parse().ok());
            }
            Err(e) => tracing::debug!(key, error = %e, "could not read the lease holder"),
        }
        out
    }
}

/// A blob lease this process holds.
struct AzureLease {
    blob: BlobClient,
    lease_id: String,
    ttl: Duration,
    holder: String,
    since: jiff::Timestamp,
    location: String,
    key: String,
}

impl std::fmt::Debug for AzureLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureLease")
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl AzureLease {
    /// Writes holder, start and the latest expiry into the blob's metadata, so a contender can
    /// say who holds the lock and until when at the latest.
    async fn record(&self) -> azure_core::Result<()> {
        let expires = jiff::Timestamp::now() + self.ttl;
        let meta = HashMap::from([
            ("holder".to_owned(), ascii(&self.holder)),
            ("since".to_owned(), self.since.to_string()),
            ("expiresat".to_owned(), expires.to_string()),
        ]);
        let opts = BlobClientSetMetadataOptions {
            lease_id: Some(self.lease_id.clone()),
            ..Default::default()
        };
        self.blob.set_metadata(&meta, Some(opts)).await.map(drop)
    }

    fn lost(&self, e: &azure_core::Error) -> StorageError {
        StorageError::LeaseLost {
            location: self.location.clone(),
            key: self.key.clone(),
            reason: match e.kind() {
                ErrorKind::HttpResponse {
                    error_code: Some(c),
                    ..
                } => format!("the service answered {c}"),
                _ => e.to_string(),
            },
        }
    }
}

#[async_trait]
impl Lease for AzureLease {
    fn ttl(&self) -> Option<Duration> {
        Some(self.ttl)
    }

    async fn renew(&self) -> Result<()> {
        self.blob
            .renew_lease(self.lease_id.clone(), None)
            .await
            .map_err(|e| self.lost(&e))?;
        if let Err(e) = self.record().await {
            tracing::debug!(error = %e, "could not record the lease's new expiry");
        }
        Ok(())
    }

    async fn release(&self) -> Result<()> {
        self.blob
            .release_lease(self.lease_id.clone(), None)
            .await
            .map(drop)
            .map_err(|e| self.lost(&e))
    }
}

/// Metadata values travel as HTTP headers: keep them printable ASCII.
fn ascii(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}
