//! Temporary objects (VolumeSnapshots, claims, Jobs) carry a lease: an `alive-until` annotation
//! their run renews while it works on them. A run that is killed stops renewing; the next run
//! deletes whatever is past its lease, so nothing of lifeboat's stays behind for long.

use std::time::Duration;

use serde_json::{Value, json};

use super::ClusterError;
use super::objects::{self, Kind};

/// How long deleting a temporary object may take before it is reported as still terminating.
pub const GONE_TIMEOUT: Duration = Duration::from_secs(60);

/// Annotation holding the lease's end (RFC 3339).
pub const ALIVE_UNTIL: &str = "lifeboat.io/alive-until";

/// The annotation value for a lease of `lease` from now.
pub fn alive_until(lease: Duration) -> String {
    let until = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::try_from(lease).unwrap_or_default())
        .unwrap_or_else(|_| jiff::Timestamp::now());
    until.to_string()
}

/// The metadata annotations of a new temporary object.
pub fn lease_annotations(lease: Duration) -> Value {
    json!({ ALIVE_UNTIL: alive_until(lease) })
}

/// Whether `obj`'s lease has ended (a missing or unreadable lease has).
fn expired(obj: &Value, now: jiff::Timestamp) -> bool {
    obj["metadata"]["annotations"][ALIVE_UNTIL]
        .as_str()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .is_none_or(|until| until < now)
}

/// What a sweep found and removed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Swept {
    /// `kind namespace/name` of each deleted leftover.
    pub deleted: Vec<String>,
    /// Leftovers still within their lease (another run may be using them).
    pub live: usize,
}

/// Deletes every object of `kinds` (in this order), in all namespaces, that matches `selector`
/// and whose lease has ended.
pub async fn sweep(
    client: &kube::Client,
    selector: &str,
    kinds: &[Kind],
) -> Result<Swept, ClusterError> {
    let now = jiff::Timestamp::now();
    let mut swept = Swept::default();
    for &kind in kinds {
        let found = match objects::list(client, kind, "", Some(selector)).await {
            Ok(found) => found,
            // A cluster without the snapshot CRDs has no snapshots to sweep.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        for obj in found {
            if !expired(&obj, now) {
                swept.live += 1;
                continue;
            }
            let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            match remove(client, kind, ns, name).await? {
                Removed::Absent => continue,
                Removed::Gone => {}
                Removed::Terminating => {
                    tracing::warn!(kind = kind.plural, %ns, %name, "a swept leftover is still terminating")
                }
            }
            tracing::info!(kind = kind.plural, %ns, %name, "deleted a leftover of an interrupted run");
            swept.deleted.push(format!("{} {ns}/{name}", kind.plural));
        }
    }
    Ok(swept)
}

/// What [`remove`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// It did not exist.
    Absent,
    /// Deleted and gone.
    Gone,
    /// Deleted, but still there after [`GONE_TIMEOUT`] (finalizers).
    Terminating,
}

/// Deletes an object and waits (bounded) until it is gone: a claim goes only once no pod uses
/// it, a snapshot once no claim is restoring from it, so removing in order and waiting keeps the
/// order meaningful and leaves nothing behind once the caller returns.
pub async fn remove(
    client: &kube::Client,
    kind: Kind,
    ns: &str,
    name: &str,
) -> Result<Removed, ClusterError> {
    if !objects::delete(client, kind, ns, name).await? {
        return Ok(Removed::Absent);
    }
    Ok(
        if objects::wait_gone(client, kind, ns, name, GONE_TIMEOUT).await? {
            Removed::Gone
        } else {
            Removed::Terminating
        },
    )
}

/// Runs `work` while renewing the leases of the temporary `objects` (in `ns`), then removes
/// them in the order given, whatever `work` returned. A failure to remove is logged: the next
/// run's [`sweep`] deletes what is left once its lease lapses.
pub async fn holding<T>(
    client: &kube::Client,
    ns: &str,
    objects: Vec<(Kind, String)>,
    lease: Duration,
    work: impl std::future::Future<Output = T>,
) -> T {
    let renewal = renew(client.clone(), ns.to_owned(), objects.clone(), lease);
    let out = tokio::select! {
        r = work => r,
        _ = renewal => unreachable!("lease renewal runs until cancelled"),
    };
    for (kind, name) in &objects {
        match remove(client, *kind, ns, name).await {
            Ok(Removed::Absent | Removed::Gone) => {}
            Ok(Removed::Terminating) => {
                tracing::warn!(kind = kind.plural, %ns, %name, "a temporary object is still terminating; a later run sweeps it")
            }
            Err(e) => {
                tracing::warn!(kind = kind.plural, %ns, %name, error = %e, "could not delete a temporary object; a later run sweeps it")
            }
        }
    }
    out
}

/// Renews the leases of the objects `(kind, name)` in `ns` every third of `lease`, forever: run
/// it beside the work and drop it when the work ends.
pub async fn renew(
    client: kube::Client,
    ns: String,
    objects: Vec<(Kind, String)>,
    lease: Duration,
) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.tick().await; // the first tick is immediate: the objects were just created
    loop {
        tick.tick().await;
        let mut annotations = serde_json::Map::new();
        annotations.insert(ALIVE_UNTIL.into(), Value::String(alive_until(lease)));
        for (kind, name) in &objects {
            if let Err(e) = super::objects::annotate(&client, *kind, &ns, name, &annotations).await
            {
                tracing::warn!(kind = kind.plural, %ns, %name, error = %e, "could not renew the lease of a temporary object");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_expire() {
        let now = jiff::Timestamp::now();
        let live = json!({"metadata": {"annotations": {ALIVE_UNTIL: alive_until(Duration::from_secs(60))}}});
        let dead = json!({"metadata": {"annotations": {ALIVE_UNTIL: "2020-01-01T00:00:00Z"}}});
        assert!(!expired(&live, now));
        assert!(expired(&dead, now));
        assert!(expired(&json!({"metadata": {}}), now));
    }
}
