//! Retention and garbage collection (`lifeboat prune`) and the pruner lock, on a local directory,
//! in memory and on Azurite.

mod alive;
mod azurite;
mod gc;
mod lock;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::TryStreamExt;
use lifeboat::mover::{BackupOptions, KnownChunks, backup_volume};
use lifeboat::repo::index::VolumeIndex;
use lifeboat::repo::{
    BackupName, BackupWriter, Layout, Manifest, PackId, PruneOptions, PruneReport, RepoReader,
    RepoWriter, RetentionPolicy, VerifyOptions, prune,
};
use lifeboat::storage::Writer;
use lifeboat::storage::local::LocalBackend;

/// A backup with one volume: its index and the packs it references.
pub struct Made {
    pub index: VolumeIndex,
}

/// Backs up a generated directory into `writer` (not committed) with `parent` for dedup: the
/// files `shared-*` are the same in every backup, `own` differs per `seed`.
pub async fn write_volume(
    store: &Writer,
    bw: &mut BackupWriter,
    seed: u64,
    parent: Option<&VolumeIndex>,
) -> VolumeIndex {
    let src = tempfile::tempdir().unwrap();
    for i in 0..3u64 {
        std::fs::write(
            src.path().join(format!("shared-{i}")),
            crate::storage::pattern(150_000, 1000 + i),
        )
        .unwrap();
    }
    std::fs::write(
        src.path().join("own"),
        crate::storage::pattern(150_000, seed),
    )
    .unwrap();
    let repo_cfg = lifeboat::repo::RepoConfig::new_default();
    let mut opts = BackupOptions::for_repo(&repo_cfg);
    // Small packs: the shared files and the own file land in different packs.
    opts.pack_target = 100_000;
    opts.workers = 1;
    opts.zstd_level = None;
    let out = backup_volume(
        src.path().to_owned(),
        store.clone(),
        opts,
        parent.map(|p| lifeboat::mover::ParentIndex::from_index(p).unwrap()),
        KnownChunks::new(),
    )
    .await
    .unwrap();
    let index = out.load_index().unwrap();
    bw.put_volume_index("shop", "data-db-0", &index)
        .await
        .unwrap();
    index
}

/// Writes and commits backup `name` taken at `started`.
pub async fn make_backup(
    store: &Writer,
    repo: &RepoWriter,
    name: &str,
    started: &str,
    seed: u64,
    parent: Option<&VolumeIndex>,
) -> Made {
    let mut bw = repo
        .begin_backup(BackupName::new(name).unwrap())
        .await
        .unwrap();
    bw.put(
        "resources.tar.zst",
        Bytes::from(format!("resources of {name}")),
    )
    .await
    .unwrap();
    let index = write_volume(store, &mut bw, seed, parent).await;
    let draft = Manifest::draft(BackupName::new(name).unwrap(), started.parse().unwrap());
    bw.commit(draft).await.unwrap();
    Made { index }
}

/// Every key under `prefix`.
pub async fn keys(store: &Writer, prefix: &str) -> BTreeSet<String> {
    store
        .list(prefix)
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .unwrap()
}

/// Committed backup names, and asserts each passes the deep check.
pub async fn committed_and_deep_ok(store: &Writer) -> Vec<String> {
    let repo = RepoReader::open(store.reader()).await.unwrap();
    let mut names = Vec::new();
    for b in repo.list_backups().await.unwrap() {
        let c = repo
            .check(&b.manifest, VerifyOptions { deep: true })
            .await
            .unwrap();
        assert!(
            c.is_complete(),
            "{} is not complete: {c:?}",
            b.manifest.name
        );
        names.push(b.manifest.name.to_string());
    }
    names.sort();
    names
}

/// The pack keys the committed manifests reference.
pub async fn referenced_packs(store: &Writer) -> BTreeSet<String> {
    let repo = RepoReader::open(store.reader()).await.unwrap();
    let mut out = BTreeSet::new();
    for b in repo.list_backups().await.unwrap() {
        out.extend(b.manifest.packs.into_iter().map(|p| p.key));
    }
    out
}

pub fn keep_last(n: u32) -> RetentionPolicy {
    RetentionPolicy {
        keep_last: Some(n),
        ..Default::default()
    }
}

pub fn opts(grace: Duration) -> PruneOptions {
    PruneOptions {
        grace,
        ..Default::default()
    }
}

pub fn now() -> jiff::Timestamp {
    "2026-11-20T12:00:00Z".parse().unwrap()
}

/// Five daily backups b0..b4 (each deduplicating against the previous one), an unreferenced
/// pack, and the folder of a crashed backup.
pub async fn seed(store: &Writer) -> (RepoWriter, VolumeIndex) {
    let repo = RepoWriter::open_or_init(store.clone()).await.unwrap();
    let mut parent: Option<VolumeIndex> = None;
    for i in 0..5u64 {
        let made = make_backup(
            store,
            &repo,
            &format!("b{i}"),
            &format!("2026-11-1{i}T03:00:00Z"),
            i + 1,
            parent.as_ref(),
        )
        .await;
        parent = Some(made.index);
    }
    store
        .put_if_absent(
            &Layout::pack(&PackId::from_hex(&"ab".repeat(32)).unwrap()),
            Bytes::from_static(b"garbage pack"),
        )
        .await
        .unwrap();
    store
        .put_if_absent(
            "backups/crashed/resources.tar.zst",
            Bytes::from_static(b"never committed"),
        )
        .await
        .unwrap();
    (repo, parent.unwrap())
}

fn set_mtime_back(root: &Path, by: Duration) {
    let when = SystemTime::now() - by;
    for entry in walk(root) {
        let f = std::fs::File::options().write(true).open(&entry).unwrap();
        f.set_modified(when).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn names(r: &PruneReport) -> (Vec<String>, Vec<String>) {
    let mut kept: Vec<String> = r.kept.iter().map(|d| d.name.to_string()).collect();
    let mut deleted: Vec<String> = r
        .deleted
        .iter()
        .map(|d| d.decision.name.to_string())
        .collect();
    kept.sort();
    deleted.sort();
    (kept, deleted)
}

#[tokio::test]
async fn prune_keeps_the_policy_and_collects_old_garbage_but_not_a_backup_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let store = Writer::new(Arc::new(LocalBackend::new(dir.path())));
    let (repo, last) = seed(&store).await;
    // Everything so far is two days old; what follows is a backup in progress, young.
    set_mtime_back(dir.path(), Duration::from_secs(48 * 3600));
    let mut in_progress = repo
        .begin_backup(BackupName::new("b5").unwrap())
        .await
        .unwrap();
    in_progress
        .put("resources.tar.zst", Bytes::from_static(b"resources of b5"))
        .await
        .unwrap();
    let packs_before = keys(&store, "packs/").await;
    write_volume(&store, &mut in_progress, 6, Some(&last)).await;
    let young: BTreeSet<String> = keys(&store, "packs/")
        .await
        .difference(&packs_before)
        .cloned()
        .collect();
    assert!(!young.is_empty(), "the backup in progress wrote packs");
    let referenced_by_dropped = referenced_packs(&store).await;

    let policy = keep_last(2);
    // A dry run reports and deletes nothing.
    let mut dry = opts(Duration::from_secs(3600));
    dry.dry_run = true;
    let before = keys(&store, "").await;
    let plan = prune(&store, &policy, &dry, now()).await.unwrap();
    assert_eq!(
        keys(&store, "").await,
        before,
        "a dry run deleted something"
    );
    assert_eq!(
        names(&plan),
        (
            vec!["b3".into(), "b4".into()],
            vec!["b0".into(), "b1".into(), "b2".into()]
        )
    );
    assert_eq!(
        plan.packs.deleted_keys,
        [Layout::pack(&PackId::from_hex(&"ab".repeat(32)).unwrap())]
    );

    let report = prune(&store, &policy, &opts(Duration::from_secs(3600)), now())
        .await
        .unwrap();
    assert_eq!(names(&report), names(&plan));
    assert_eq!(committed_and_deep_ok(&store).await, ["b3", "b4"]);
    // Leftovers of the crashed backup and the old garbage pack are gone.
    assert!(keys(&store, "backups/crashed/").await.is_empty());
    assert!(
        !keys(&store, "packs/")
            .await
            .contains(&Layout::pack(&PackId::from_hex(&"ab".repeat(32)).unwrap()))
    );
    assert_eq!(report.leftovers_deleted.len(), 1);
    // The backup in progress keeps its folder and its young packs, and (because it is in
    // progress and may deduplicate against them) the packs of the backups deleted now.
    assert_eq!(
        report
            .in_progress
            .iter()
            .map(|u| u.name.as_str())
            .collect::<Vec<_>>(),
        ["b5"]
    );
    let after = keys(&store, "packs/").await;
    assert!(young.is_subset(&after), "young packs were deleted");
    assert!(referenced_by_dropped.is_subset(&after));
    assert_eq!(report.packs.young as usize, young.len());
    assert!(report.bytes_freed > 0);

    // The backup in progress commits and passes the deep check.
    let draft = Manifest::draft(
        BackupName::new("b5").unwrap(),
        "2026-11-15T03:00:00Z".parse().unwrap(),
    );
    in_progress.commit(draft).await.unwrap();
    // Nothing in progress now: the next prune collects the packs only deleted backups used.
    let report = prune(
        &store,
        &keep_last(3),
        &opts(Duration::from_secs(3600)),
        now(),
    )
    .await
    .unwrap();
    assert!(report.deleted.is_empty());
    assert!(report.packs.deleted > 0, "{report:?}");
    assert_eq!(committed_and_deep_ok(&store).await, ["b3", "b4", "b5"]);
    assert_eq!(keys(&store, "packs/").await, referenced_packs(&store).await);
}

#[tokio::test]
async fn own_expiry_and_selection_decide_what_prune_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Writer::new(Arc::new(LocalBackend::new(dir.path())));
    let repo = RepoWriter::open_or_init(store.clone()).await.unwrap();
    for (name, started, expires) in [
        ("nightly-1", "2026-11-18T03:00:00Z", None),
        ("nightly-2", "2026-11-19T03:00:00Z", None),
        (
            "release-a",
            "2026-11-01T03:00:00Z",
            Some("2026-11-20T00:00:00Z"),
        ),
        (
            "release-b",
            "2026-11-02T03:00:00Z",
            Some("2026-12-01T00:00:00Z"),
        ),
    ] {
        let mut bw = repo
            .begin_backup(BackupName::new(name).unwrap())
            .await
            .unwrap();
        bw.put("resources.tar.zst", Bytes::from(name.to_owned()))
            .await
            .unwrap();
        let mut draft = Manifest::draft(BackupName::new(name).unwrap(), started.parse().unwrap());
        draft.expires_at = expires.map(|e| e.parse().unwrap());
        bw.commit(draft).await.unwrap();
    }
    // Only the nightly backups are the policy's; the release ones follow their own expiry
    // under an empty policy.
    let mut o = opts(Duration::from_secs(3600));
    o.select.name_prefix = Some("nightly-".into());
    let r = prune(&store, &keep_last(1), &o, now()).await.unwrap();
    assert_eq!(
        names(&r),
        (vec!["nightly-2".into()], vec!["nightly-1".into()])
    );
    assert_eq!(r.not_selected, ["release-a", "release-b"]);
    let r = prune(
        &store,
        &RetentionPolicy::default(),
        &opts(Duration::from_secs(3600)),
        now(),
    )
    .await
    .unwrap();
    assert_eq!(
        names(&r),
        (
            vec!["nightly-2".into(), "release-b".into()],
            vec!["release-a".into()]
        )
    );
    assert_eq!(
        committed_and_deep_ok(&store).await,
        ["nightly-2", "release-b"]
    );
    assert!(keys(&store, "backups/release-a/").await.is_empty());
}

#[tokio::test]
async fn an_invalid_policy_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Writer::new(Arc::new(LocalBackend::new(dir.path())));
    seed(&store).await;
    let before = keys(&store, "").await;
    let policy = RetentionPolicy {
        keep_daily: Some(0),
        ..Default::default()
    };
    let err = prune(&store, &policy, &opts(Duration::ZERO), now())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("keepDaily: must be at least 1"),
        "{err}"
    );
    assert_eq!(keys(&store, "").await, before);
}
