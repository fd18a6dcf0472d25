//! Prune and its lock on Azurite: a blob lease on `locks/prune`.

use std::time::{Duration, Instant};

use lifeboat::repo::{LockError, LockOptions, PruneLock, RepoReader, prune};
use lifeboat::storage::LeaseAttempt;

use super::{committed_and_deep_ok, keep_last, keys, now, opts, referenced_packs, seed};
use crate::storage::{azurite, azurite_writer};

#[tokio::test]
async fn prune_on_azurite_keeps_the_policy_and_respects_the_grace_period() {
    let Some(base) = azurite() else { return };
    let (store, _container) = azurite_writer(&base, "prune").await;
    seed(&store).await;
    let all_packs = keys(&store, "packs/").await;
    // Everything is seconds old: with a 1 h grace period, only retention deletes.
    let r = prune(
        &store,
        &keep_last(2),
        &opts(Duration::from_secs(3600)),
        now(),
    )
    .await
    .unwrap();
    assert_eq!(r.deleted.len(), 3);
    assert_eq!(committed_and_deep_ok(&store).await, ["b3", "b4"]);
    assert_eq!(
        keys(&store, "packs/").await,
        all_packs,
        "a young pack was deleted"
    );
    assert_eq!(r.in_progress.len(), 1, "the crashed folder is young: {r:?}");
    assert_eq!(r.packs.deleted, 0);
    // Two hours later on the storage's clock, the garbage is old and goes.
    let mut later = opts(Duration::from_secs(3600));
    later.storage_now = Some(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2));
    let r = prune(&store, &keep_last(2), &later, now()).await.unwrap();
    assert!(r.deleted.is_empty());
    assert_eq!(r.leftovers_deleted.len(), 1);
    assert!(r.packs.deleted > 0);
    assert_eq!(committed_and_deep_ok(&store).await, ["b3", "b4"]);
    assert_eq!(keys(&store, "packs/").await, referenced_packs(&store).await);
    assert!(keys(&store, "backups/crashed/").await.is_empty());
    // The lock blob lies outside backups/ and packs/, so readers never see it.
    RepoReader::open(store.reader()).await.unwrap();
    assert!(keys(&store, "locks/").await.contains("locks/prune"));
}

#[tokio::test]
async fn azure_lease_excludes_a_second_holder_renews_and_releases() {
    let Some(base) = azurite() else { return };
    let (store, _container) = azurite_writer(&base, "lease").await;
    let ttl = Duration::from_secs(15);
    let first = match store.try_lease("locks/prune", ttl, "first").await.unwrap() {
        LeaseAttempt::Acquired(l) => l,
        LeaseAttempt::Held(h) => panic!("held by {h:?}"),
    };
    assert_eq!(first.ttl(), Some(ttl));
    match store.try_lease("locks/prune", ttl, "second").await.unwrap() {
        LeaseAttempt::Held(h) => {
            assert_eq!(h.holder.as_deref(), Some("first"));
            assert!(h.expires_at.is_some() && !h.until_exit, "{h:?}");
        }
        LeaseAttempt::Acquired(_) => panic!("two holders"),
    }
    first.renew().await.unwrap();
    first.release().await.unwrap();
    let second = match store.try_lease("locks/prune", ttl, "second").await.unwrap() {
        LeaseAttempt::Acquired(l) => l,
        LeaseAttempt::Held(h) => panic!("still held by {h:?}"),
    };
    // The first holder's lease id no longer works: renewing it reports the loss.
    assert!(first.renew().await.is_err());
    second.release().await.unwrap();
}

#[tokio::test]
async fn a_prune_during_another_on_azurite_gets_the_lock_error() {
    let Some(base) = azurite() else { return };
    let (store, _container) = azurite_writer(&base, "prune-two").await;
    seed(&store).await;
    let o = LockOptions {
        holder: Some("pruner one".into()),
        ..Default::default()
    };
    let held = PruneLock::acquire(&store, &o).await.unwrap();
    let err = prune(&store, &keep_last(1), &opts(Duration::ZERO), now())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("another prune holds the lock on azure:"),
        "{msg}"
    );
    assert!(
        msg.contains("holder pruner one") && msg.contains("expires in"),
        "{msg}"
    );
    assert_eq!(committed_and_deep_ok(&store).await.len(), 5);
    held.release().await.unwrap();
    prune(&store, &keep_last(1), &opts(Duration::ZERO), now())
        .await
        .unwrap();
    assert_eq!(committed_and_deep_ok(&store).await, ["b4"]);
}

#[tokio::test]
async fn an_abandoned_azure_lease_lapses_after_its_ttl() {
    let Some(base) = azurite() else { return };
    let (store, _container) = azurite_writer(&base, "lease-lapse").await;
    // 15 s is the shortest lease the service grants.
    let o = LockOptions {
        lease: Duration::from_secs(15),
        ..Default::default()
    };
    let lock = PruneLock::acquire(&store, &o).await.unwrap();
    let abandoned = Instant::now();
    lock.abandon();
    assert!(matches!(
        PruneLock::acquire(&store, &o).await.unwrap_err(),
        LockError::Held { .. }
    ));
    let mut waiting = o.clone();
    waiting.wait = Some(Duration::from_secs(40));
    let lock = PruneLock::acquire(&store, &waiting).await.unwrap();
    assert!(
        abandoned.elapsed() >= Duration::from_secs(14),
        "{:?}",
        abandoned.elapsed()
    );
    lock.release().await.unwrap();
}
