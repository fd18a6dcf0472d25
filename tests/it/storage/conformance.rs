//! The same assertions over every backend: local directory, in-memory, Azurite primary.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use lifeboat::storage::local::LocalBackend;
use lifeboat::storage::memory::MemoryBackend;
use lifeboat::storage::{PutOutcome, StorageError, TransferOptions, Writer};

use super::{azurite, azurite_writer, pattern};

async fn keys(w: &Writer, prefix: &str) -> Vec<String> {
    w.list(prefix)
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .unwrap()
}

/// The conformance suite. Every backend must pass it unchanged.
async fn suite(w: Writer) {
    w.create_location().await.unwrap();
    assert!(
        !w.create_location().await.unwrap(),
        "a second create_location finds it in place"
    );
    put_if_absent_never_overwrites(&w).await;
    concurrent_creates_have_one_winner(&w).await;
    get_range_and_head(&w).await;
    list_is_ordered_and_filtered_by_prefix(&w).await;
    delete_is_idempotent(&w).await;
    invalid_keys_are_refused(&w).await;
    files_round_trip_in_blocks(&w).await;
}

async fn put_if_absent_never_overwrites(w: &Writer) {
    assert_eq!(
        w.put_if_absent("c/one", Bytes::from_static(b"first"))
            .await
            .unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        w.put_if_absent("c/one", Bytes::from_static(b"second"))
            .await
            .unwrap(),
        PutOutcome::AlreadyExists
    );
    assert_eq!(w.get("c/one").await.unwrap(), Bytes::from_static(b"first"));
    assert_eq!(
        w.put_if_absent("c/empty", Bytes::new()).await.unwrap(),
        PutOutcome::Created
    );
    assert_eq!(w.get("c/empty").await.unwrap(), Bytes::new());
}

async fn concurrent_creates_have_one_winner(w: &Writer) {
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let w = w.clone();
            tokio::spawn(async move {
                (
                    i,
                    w.put_if_absent("race/k", Bytes::from(vec![i; 1000]))
                        .await
                        .unwrap(),
                )
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let (i, outcome) = t.await.unwrap();
        if outcome == PutOutcome::Created {
            winners.push(i);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one concurrent create must win: {winners:?}"
    );
    assert_eq!(
        w.get("race/k").await.unwrap(),
        Bytes::from(vec![winners[0]; 1000]),
        "the winner's data must be intact"
    );
}

async fn get_range_and_head(w: &Writer) {
    w.put_if_absent("r/obj", Bytes::from_static(b"0123456789"))
        .await
        .unwrap();
    assert_eq!(
        w.get_range("r/obj", 2..5).await.unwrap(),
        Bytes::from_static(b"234")
    );
    assert_eq!(
        w.get_range("r/obj", 0..10).await.unwrap(),
        Bytes::from_static(b"0123456789")
    );
    assert_eq!(w.get_range("r/obj", 10..10).await.unwrap(), Bytes::new());
    let err = w.get_range("r/obj", 5..11).await.unwrap_err();
    assert!(
        matches!(err, StorageError::InvalidRange { size: 10, .. }),
        "{err:?}"
    );
    let meta = w.head("r/obj").await.unwrap().expect("object exists");
    assert_eq!((meta.key.as_str(), meta.size), ("r/obj", 10));
    assert!(meta.last_modified.is_some());
    assert_eq!(w.head("r/missing").await.unwrap(), None);
    assert!(matches!(
        w.get("r/missing").await.unwrap_err(),
        StorageError::NotFound { .. }
    ));
    assert!(matches!(
        w.get_range("r/missing", 0..1).await.unwrap_err(),
        StorageError::NotFound { .. }
    ));
}

async fn list_is_ordered_and_filtered_by_prefix(w: &Writer) {
    // Inserted out of order; `a-y` sorts before `a/x` (b'-' < b'/'), which a naive directory walk gets wrong.
    for k in ["l/c", "l/a/x", "l/b", "l/a-y", "l/a0", "m/z", "l/a/w/deep"] {
        w.put_if_absent(k, Bytes::from(k.as_bytes().to_vec()))
            .await
            .unwrap();
    }
    assert_eq!(
        keys(w, "l/").await,
        ["l/a-y", "l/a/w/deep", "l/a/x", "l/a0", "l/b", "l/c"]
    );
    assert_eq!(
        keys(w, "l/a").await,
        ["l/a-y", "l/a/w/deep", "l/a/x", "l/a0"]
    );
    assert_eq!(keys(w, "l/a/").await, ["l/a/w/deep", "l/a/x"]);
    assert_eq!(keys(w, "m").await, ["m/z"]);
    assert!(keys(w, "nothing/").await.is_empty());
    let sizes: Vec<u64> = w
        .list("l/b")
        .map_ok(|m| m.size)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(sizes, [3]);
    let all = keys(w, "").await;
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "a full listing is in key order");
    assert!(all.contains(&"c/one".to_owned()) && all.contains(&"m/z".to_owned()));
}

async fn delete_is_idempotent(w: &Writer) {
    w.put_if_absent("d/gone", Bytes::from_static(b"x"))
        .await
        .unwrap();
    w.delete("d/gone").await.unwrap();
    assert_eq!(w.head("d/gone").await.unwrap(), None);
    w.delete("d/gone").await.unwrap();
    w.delete("d/never-existed").await.unwrap();
    // Write-once forbids overwrite, not re-creation after a delete.
    assert_eq!(
        w.put_if_absent("d/gone", Bytes::from_static(b"y"))
            .await
            .unwrap(),
        PutOutcome::Created
    );
    assert!(!keys(w, "d/").await.is_empty());
}

async fn invalid_keys_are_refused(w: &Writer) {
    for key in ["", "/abs", "a/../b", "a//b", "./a", "a/", "back\\slash"] {
        let invalid =
            |r: Result<(), StorageError>| matches!(r, Err(StorageError::InvalidKey { .. }));
        assert!(
            invalid(w.put_if_absent(key, Bytes::new()).await.map(drop)),
            "put {key:?}"
        );
        assert!(invalid(w.get(key).await.map(drop)), "get {key:?}");
        assert!(invalid(w.head(key).await.map(drop)), "head {key:?}");
        assert!(invalid(w.delete(key).await), "delete {key:?}");
    }
    for prefix in ["../", "/", "a//", "a/../"] {
        let r: Result<Vec<_>, _> = w.list(prefix).try_collect().await;
        assert!(
            matches!(r, Err(StorageError::InvalidKey { .. })),
            "list {prefix:?}: {r:?}"
        );
    }
}

async fn files_round_trip_in_blocks(w: &Writer) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let data = pattern(100_003, 7);
    std::fs::write(&src, &data).unwrap();
    // Small blocks so that every backend goes through its multi-block paths.
    let opts = TransferOptions {
        block_size: 10_000,
        concurrency: 3,
    };
    assert_eq!(
        w.put_file_if_absent("f/big", &src, &opts).await.unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        w.put_file_if_absent("f/big", &src, &opts).await.unwrap(),
        PutOutcome::AlreadyExists
    );
    let dst = dir.path().join("dst");
    assert_eq!(
        w.get_to_file("f/big", &dst, &opts).await.unwrap(),
        data.len() as u64
    );
    assert!(
        std::fs::read(&dst).unwrap() == data,
        "downloaded file differs"
    );
    assert!(matches!(
        w.get_to_file("f/missing", &dir.path().join("x"), &opts)
            .await
            .unwrap_err(),
        StorageError::NotFound { .. }
    ));
}

#[tokio::test]
async fn conformance_local() {
    let dir = tempfile::tempdir().unwrap();
    suite(Writer::new(Arc::new(LocalBackend::new(
        dir.path().join("repo"),
    ))))
    .await;
}

#[tokio::test]
async fn conformance_memory() {
    suite(Writer::new(Arc::new(MemoryBackend::new("conformance")))).await;
}

#[tokio::test]
async fn conformance_azurite_primary() {
    let Some(base) = azurite() else { return };
    let (w, _) = azurite_writer(&base, "conf").await;
    suite(w).await;
}

#[tokio::test]
async fn conformance_azurite_with_prefix() {
    let Some(base) = azurite() else { return };
    let (outer, container) = azurite_writer(&base, "confp").await;
    // A prefixed location must see only its own objects, with keys relative to the prefix.
    outer
        .put_if_absent("outside", Bytes::from_static(b"x"))
        .await
        .unwrap();
    let mut loc = super::azurite_location(&base, &container, false);
    loc.prefix = Some("/team/a/".to_owned());
    let backend = lifeboat::storage::azure::AzureBackend::with_credential(
        "prefixed",
        &loc,
        lifeboat::storage::azure::Credential::SharedKey(super::KEY.into()),
    )
    .unwrap();
    let w = Writer::new(Arc::new(backend));
    suite(w.clone()).await;
    assert!(outer.head("team/a/c/one").await.unwrap().is_some());
    assert!(
        keys(&w, "")
            .await
            .iter()
            .all(|k| !k.starts_with("team/") && k != "outside")
    );
}
