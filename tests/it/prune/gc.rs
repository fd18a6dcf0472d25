//! Issue 12: prune and pack retirement are one garbage-collection run, under one lock. Every
//! marker written or deleted by the retirement happens while the prune lock is held: a second
//! pruner started at that moment is refused, naming the first.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use lifeboat::repo::index::{ChunkRef, Entry, FileNode, Meta, Mtime, PackRef, VolumeIndex};
use lifeboat::repo::{
    BackupName, ChunkId, GcPhase, Layout, LockError, LockOptions, Manifest, PackId, PhaseHook,
    PruneError, PruneOptions, RepoConfig, RepoWriter, RetentionPolicy, VolumeRecord, VolumeStatus,
    prune,
};
use lifeboat::storage::Writer;
use lifeboat::storage::local::LocalBackend;
use lifeboat::storage::memory::MemoryBackend;

use super::{keys, now};

const HOLDER: &str = "the garbage collector under test";

/// One committed backup whose volume uses 100 bytes of a 10 kB pack (mostly garbage, so the run
/// retires it), and a marker left for a pack that is gone (so the run deletes it). Returns the
/// pack's id and the stale marker's key.
async fn seed_sparse(store: &Writer) -> (PackId, String) {
    let repo = RepoWriter::open_or_init(store.clone()).await.unwrap();
    let pack = Bytes::from(vec![7u8; 10_000]);
    let id = PackId::of(&pack);
    store.put_if_absent(&Layout::pack(&id), pack).await.unwrap();
    let mut index = VolumeIndex::new(RepoConfig::new_default().chunker);
    index.packs.push(PackRef {
        id: id.clone(),
        size: 10_000,
    });
    index.entries.push(Entry::File(FileNode {
        path: "data".into(),
        meta: Meta {
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime: Mtime(0, 0),
        },
        size: 100,
        inode: 1,
        holes: vec![],
        chunks: vec![ChunkRef {
            id: ChunkId::of(b"live"),
            pack: 0,
            offset: 0,
            length: 100,
            size: 100,
        }],
    }));
    let name = BackupName::new("b1").unwrap();
    let mut bw = repo.begin_backup(name.clone()).await.unwrap();
    let entry = bw.put_volume_index("ns", "p", &index).await.unwrap();
    let mut record = VolumeRecord::new("ns", "p", VolumeStatus::Completed);
    record.index = Some(entry.key);
    let mut draft = Manifest::draft(name, now());
    draft.details.volumes = Some(vec![record]);
    bw.commit(draft).await.unwrap();
    let stale = Layout::retired(&PackId::from_hex(&"cd".repeat(32)).unwrap());
    store
        .put_if_absent(&stale, Bytes::from_static(b"{}"))
        .await
        .unwrap();
    (id, stale)
}

/// What a second prune, started inside the first one's retirement, got.
type Seen = Arc<Mutex<Vec<(GcPhase, Result<(), String>)>>>;

fn second_prune_at_each_phase(store: &Writer, seen: &Seen) -> PhaseHook {
    let (store, seen) = (store.clone(), seen.clone());
    PhaseHook::new(move |phase| {
        let (store, seen) = (store.clone(), seen.clone());
        async move {
            let outcome = match prune(
                &store,
                &RetentionPolicy::default(),
                &PruneOptions::default(),
                now(),
            )
            .await
            {
                Err(PruneError::Lock(e @ LockError::Held { .. })) => Err(e.to_string()),
                Err(other) => Err(format!("not the lock error: {other}")),
                Ok(_) => Ok(()),
            };
            seen.lock().unwrap().push((phase, outcome));
        }
        .boxed()
    })
}

#[tokio::test]
async fn issue12_retirement_and_marker_deletion_run_under_the_prune_lock() {
    let dir = tempfile::tempdir().unwrap();
    for store in [
        Writer::new(Arc::new(LocalBackend::new(dir.path()))),
        Writer::new(Arc::new(MemoryBackend::new("gc-lock"))),
    ] {
        let (pack_id, stale) = seed_sparse(&store).await;
        let seen: Seen = Arc::default();
        let opts = PruneOptions {
            grace: Duration::ZERO,
            // Every object counts as older than the grace period.
            storage_now: Some(jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60)),
            lock: LockOptions {
                holder: Some(HOLDER.into()),
                ..LockOptions::default()
            },
            hook: Some(second_prune_at_each_phase(&store, &seen)),
            ..PruneOptions::default()
        };
        let report = prune(&store, &RetentionPolicy::default(), &opts, now())
            .await
            .unwrap();

        assert_eq!(report.repack.retired, 1, "{:?}", report.repack);
        assert_eq!(report.repack.markers_cleared, 1, "{:?}", report.repack);
        let markers = keys(&store, Layout::RETIRED).await;
        assert!(markers.contains(&Layout::retired(&pack_id)), "{markers:?}");
        assert!(!markers.contains(&stale), "{markers:?}");

        let seen = seen.lock().unwrap().clone();
        let phases: Vec<GcPhase> = seen.iter().map(|(p, _)| *p).collect();
        assert_eq!(phases, [GcPhase::Retiring, GcPhase::ClearingMarkers]);
        for (phase, outcome) in seen {
            let msg = outcome.expect_err("a second prune ran while the first was retiring packs");
            assert!(
                msg.contains("another prune holds the lock on") && msg.contains(HOLDER),
                "{phase:?}: {msg}"
            );
        }
        // Released at the end of the run: a later prune takes the lock.
        prune(
            &store,
            &RetentionPolicy::default(),
            &PruneOptions::default(),
            now(),
        )
        .await
        .unwrap();
    }
}
