//! Simulated object replication: copies a primary location's objects to a secondary in a
//! random order (as Azure replicates: no ordering guarantee), optionally holding some back.

use futures::TryStreamExt;
use lifeboat::storage::{Reader, Writer};

/// A small deterministic shuffle (xorshift), so a failing order can be replayed by seed.
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

/// Copies every object for which `keep(key)` holds, in a random order; returns how many.
pub async fn replicate(
    from: &Reader,
    to: &Writer,
    seed: u64,
    keep: impl Fn(&str) -> bool,
) -> usize {
    let mut keys: Vec<String> = from.list("").map_ok(|m| m.key).try_collect().await.unwrap();
    keys.retain(|k| keep(k));
    shuffle(&mut keys, seed | 1);
    for k in &keys {
        to.put_if_absent(k, from.get(k).await.unwrap())
            .await
            .unwrap();
    }
    keys.len()
}
