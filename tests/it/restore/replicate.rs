//! Simulated object replication: copies a primary location's objects to a secondary in a
//! random order (as Azure replicates: no ordering guarantee), optionally holding some back.

use lifeboat::storage::{Reader, Writer};

/// Copies every object for which `keep(key)` holds, in a random order; returns how many.
pub async fn replicate(
    from: &Reader,
    to: &Writer,
    seed: u64,
    keep: impl Fn(&str) -> bool,
) -> usize {
    lifeboat::demo::replicate::copy_shuffled(from, to, seed, keep)
        .await
        .unwrap_or_else(|(key, e)| panic!("replicating {key}: {e}"))
}
