use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::storage::Writer;
use crate::storage::memory::MemoryBackend;

fn memory(name: &str) -> Writer {
    Writer::new(Arc::new(MemoryBackend::new(name)))
}

fn draft() -> Manifest {
    Manifest::draft(
        BackupName::new("placeholder").unwrap(),
        jiff::Timestamp::now(),
    )
}

/// Writes a backup with two objects; returns the committed manifest.
async fn backup(repo: &RepoWriter, name: &str) -> Manifest {
    let mut b = repo
        .begin_backup(BackupName::new(name).unwrap())
        .await
        .unwrap();
    b.put(
        "resources.tar.zst",
        Bytes::from(format!("archive of {name}")),
    )
    .await
    .unwrap();
    b.put("volumes/ns/data.json", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    b.commit(draft()).await.unwrap()
}

/// Backup `b1` begun, with a small `resources.tar.zst` stored.
async fn begun_with_archive(repo: &RepoWriter) -> BackupWriter {
    let mut b = repo
        .begin_backup(BackupName::new("b1").unwrap())
        .await
        .unwrap();
    b.put("resources.tar.zst", Bytes::from_static(b"data"))
        .await
        .unwrap();
    b
}

#[tokio::test]
async fn init_writes_config_once_and_reopens() {
    let store = memory("init");
    let first = RepoWriter::open_or_init(store.clone()).await.unwrap();
    let again = RepoWriter::open_or_init(store.clone()).await.unwrap();
    assert_eq!(first.reader().config(), again.reader().config());
    assert_eq!(first.reader().config().version, FORMAT_VERSION);
}

#[tokio::test]
async fn a_location_without_config_is_not_a_repository() {
    let err = RepoReader::open(memory("empty").reader())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, RepoError::NotARepository { .. }), "{err}");
}

#[tokio::test]
async fn newer_format_or_unknown_encryption_is_refused() {
    for body in [
        r#"{"format":"lifeboat","version":2,"createdBy":"x","createdAt":"2026-01-01T00:00:00Z","chunker":{"algorithm":"a","minSize":1,"avgSize":2,"maxSize":3},"compression":"zstd","encryption":{"scheme":"none"}}"#,
        r#"{"format":"lifeboat","version":1,"createdBy":"x","createdAt":"2026-01-01T00:00:00Z","chunker":{"algorithm":"a","minSize":1,"avgSize":2,"maxSize":3},"compression":"zstd","encryption":{"scheme":"aes-256-gcm"}}"#,
        // Chunk ids this build would not verify (an encrypted repository of another scheme).
        r#"{"format":"lifeboat","version":1,"createdBy":"x","createdAt":"2026-01-01T00:00:00Z","chunker":{"algorithm":"a","minSize":1,"avgSize":2,"maxSize":3},"compression":"zstd","encryption":{"scheme":"age-x25519-v1","recipients":["sha256:00"],"chunkId":"hmac-sha256","chunkIdKeyCheck":"00"}}"#,
    ] {
        let store = memory("future");
        store
            .put_if_absent(Layout::CONFIG, Bytes::from(body))
            .await
            .unwrap();
        let err = RepoReader::open(store.reader()).await.err().unwrap();
        assert!(matches!(err, RepoError::UnsupportedFormat { .. }), "{err}");
        assert!(err.to_string().contains("upgrade lifeboat"));
    }
}

#[tokio::test]
async fn uncommitted_backup_is_invisible_until_its_manifest_is_written() {
    let repo = RepoWriter::open_or_init(memory("commit")).await.unwrap();
    let b = begun_with_archive(&repo).await;
    assert!(
        repo.reader().backup_names().await.unwrap().is_empty(),
        "objects without a manifest must not list"
    );
    let manifest = b.commit(draft()).await.unwrap();
    assert_eq!(manifest.name.as_str(), "b1");
    assert_eq!(manifest.objects.len(), 1);
    assert_eq!(manifest.objects[0].key, "backups/b1/resources.tar.zst");
    let listed = repo.reader().list_backups().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].manifest, manifest);
}

#[tokio::test]
async fn committed_names_and_leftovers_are_not_reused() {
    let repo = RepoWriter::open_or_init(memory("names")).await.unwrap();
    backup(&repo, "b1").await;
    let err = repo
        .begin_backup(BackupName::new("b1").unwrap())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, RepoError::BackupExists { .. }), "{err}");

    // An interrupted run left an object but no manifest: the same name cannot overwrite it.
    let mut dead = repo
        .begin_backup(BackupName::new("b2").unwrap())
        .await
        .unwrap();
    dead.put("resources.tar.zst", Bytes::from_static(b"old"))
        .await
        .unwrap();
    drop(dead);
    let mut retry = repo
        .begin_backup(BackupName::new("b2").unwrap())
        .await
        .unwrap();
    let err = retry
        .put("resources.tar.zst", Bytes::from_static(b"new"))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, RepoError::LeftoverObject { .. }), "{err}");
}

#[tokio::test]
async fn completeness_reports_missing_and_corrupt_objects_of_a_partial_replica() {
    let primary = memory("primary");
    let repo = RepoWriter::open_or_init(primary.clone()).await.unwrap();
    let manifest = backup(&repo, "nightly").await;

    // A replica that received the config and the manifest but only one data object, and
    // another whose copy of that object was damaged in transit (same size, other bytes).
    let replica = memory("replica");
    for key in [
        Layout::CONFIG.to_owned(),
        Layout::manifest(&manifest.name),
        manifest.objects[0].key.clone(),
    ] {
        replica
            .put_if_absent(&key, primary.get(&key).await.unwrap())
            .await
            .unwrap();
    }
    let reader = RepoReader::open(replica.reader()).await.unwrap();
    let shallow = reader
        .check(&manifest, VerifyOptions::default())
        .await
        .unwrap();
    assert!(!shallow.is_complete());
    assert_eq!(shallow.missing, vec![manifest.objects[1].key.clone()]);
    assert_eq!(shallow.present(), 1);

    let damaged = memory("damaged");
    for o in manifest.required_objects() {
        let mut bytes = primary.get(&o.key).await.unwrap().to_vec();
        if o.key.ends_with(".tar.zst") {
            bytes[0] ^= 0xff;
        }
        damaged
            .put_if_absent(&o.key, Bytes::from(bytes))
            .await
            .unwrap();
    }
    damaged
        .put_if_absent(Layout::CONFIG, primary.get(Layout::CONFIG).await.unwrap())
        .await
        .unwrap();
    let reader = RepoReader::open(damaged.reader()).await.unwrap();
    assert!(
        reader
            .check(&manifest, VerifyOptions::default())
            .await
            .unwrap()
            .is_complete(),
        "sizes match"
    );
    let deep = reader
        .check(&manifest, VerifyOptions { deep: true })
        .await
        .unwrap();
    assert_eq!(
        deep.corrupt,
        vec!["backups/nightly/resources.tar.zst".to_owned()]
    );
}

#[test]
fn layout_keys() {
    let n = BackupName::new("b.1").unwrap();
    assert_eq!(Layout::manifest(&n), "backups/b.1/manifest.json");
    assert_eq!(
        Layout::volume_index(&n, "ns", "data-db-0"),
        "backups/b.1/volumes/ns/data-db-0.json"
    );
    assert_eq!(
        Layout::pack(&PackId::from_hex("3fa9").unwrap()),
        "packs/3f/3fa9"
    );
    // A pack id is hex only: no key can be built from a path-like string.
    for bad in ["", "../x", "AB", "3f/a9"] {
        assert_eq!(PackId::from_hex(bad), None, "{bad:?}");
    }
    let id = PackId::of(b"pack");
    assert_eq!(Layout::pack_of(&Layout::pack(&id)), Some(id.clone()));
    assert_eq!(Layout::retired_pack_of(&Layout::retired(&id)), Some(id));
    assert_eq!(Layout::pack_of("packs/3f"), None);
    assert_eq!(
        Layout::manifest_owner("backups/b.1/manifest.json"),
        Some("b.1")
    );
    assert_eq!(
        Layout::manifest_owner("backups/b.1/volumes/manifest.json"),
        None
    );
}

#[test]
fn backup_names_are_validated() {
    assert!(BackupName::new("nightly-20261120t0300z").is_ok());
    for bad in ["", "-x", "Upper", "a/b", "a b", &"x".repeat(201)] {
        assert!(BackupName::new(bad).is_err(), "{bad:?} should be refused");
    }
}

/// Issue 15: a backup that outlived the grace period may have lost its own archive to a
/// prune; the commit proves every object it names, not only packs.
#[tokio::test]
async fn a_backup_whose_archive_is_gone_is_not_committed() {
    let store = memory("archive-gone");
    let repo = RepoWriter::open_or_init(store.clone()).await.unwrap();
    let b = begun_with_archive(&repo).await;
    let archive = Layout::resources(&BackupName::new("b1").unwrap());
    store.delete(&archive).await.unwrap();
    let err = b.commit(draft()).await.unwrap_err();
    assert!(
        matches!(&err, RepoError::LostBeforeCommit { key, .. } if *key == archive),
        "{err}"
    );
    let manifest = Layout::manifest(&BackupName::new("b1").unwrap());
    assert!(store.reader().head(&manifest).await.unwrap().is_none());
}

#[tokio::test]
async fn a_backup_referencing_a_pack_that_is_gone_is_not_committed() {
    let store = memory("gone");
    let repo = RepoWriter::open_or_init(store.clone()).await.unwrap();
    let name = BackupName::new("b1").unwrap();
    let mut w = repo.begin_backup(name.clone()).await.unwrap();
    let present = ObjectEntry {
        key: Layout::pack(&PackId::from_hex(&"ab".repeat(32)).unwrap()),
        size: 3,
        sha256: "00".into(),
    };
    store
        .put_if_absent(&present.key, bytes::Bytes::from_static(b"abc"))
        .await
        .unwrap();
    w.reference_pack(present);
    let gone = Layout::pack(&PackId::from_hex(&"cd".repeat(32)).unwrap());
    w.reference_pack(ObjectEntry {
        key: gone.clone(),
        size: 3,
        sha256: "00".into(),
    });
    let err = w
        .commit(Manifest::draft(name.clone(), jiff::Timestamp::now()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RepoError::MissingPack { key, .. } if *key == gone),
        "{err}"
    );
    assert!(
        store
            .reader()
            .head(&Layout::manifest(&name))
            .await
            .unwrap()
            .is_none()
    );
}

/// A store whose manifest writes land but whose answers are lost: the first `once` such writes
/// answer what the SDK's retry then sees (409, "already exists"); after those, every write
/// fails as a connection that keeps dropping the answer would, once retries run out.
struct LostAnswers {
    inner: MemoryBackend,
    once: std::sync::atomic::AtomicUsize,
    /// Another writer's manifest, stored just before ours arrives (a genuine race).
    rival: Option<Bytes>,
}

#[async_trait::async_trait]
impl crate::storage::ObjectRead for LostAnswers {
    fn location(&self) -> &str {
        self.inner.location()
    }
    async fn get(&self, key: &str) -> crate::storage::Result<Bytes> {
        self.inner.get(key).await
    }
    async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> crate::storage::Result<Bytes> {
        self.inner.get_range(key, range).await
    }
    async fn head(&self, key: &str) -> crate::storage::Result<Option<crate::storage::ObjectMeta>> {
        self.inner.head(key).await
    }
    fn list<'a>(
        &'a self,
        prefix: &'a str,
    ) -> futures::stream::BoxStream<'a, crate::storage::Result<crate::storage::ObjectMeta>> {
        self.inner.list(prefix)
    }
}

#[async_trait::async_trait]
impl crate::storage::ObjectWrite for LostAnswers {
    async fn put_if_absent(
        &self,
        key: &str,
        data: Bytes,
    ) -> crate::storage::Result<crate::storage::PutOutcome> {
        if !key.ends_with("/manifest.json") {
            return self.inner.put_if_absent(key, data).await;
        }
        if let Some(rival) = &self.rival {
            self.inner.put_if_absent(key, rival.clone()).await?;
        }
        self.inner.put_if_absent(key, data).await?;
        use std::sync::atomic::Ordering;
        if self
            .once
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Ok(crate::storage::PutOutcome::AlreadyExists);
        }
        Err(crate::storage::StorageError::Io {
            op: "put object",
            path: key.to_owned(),
            source: std::io::ErrorKind::ConnectionReset.into(),
        })
    }
    async fn put_file_if_absent(
        &self,
        key: &str,
        path: &std::path::Path,
        opts: &crate::storage::TransferOptions,
    ) -> crate::storage::Result<crate::storage::PutOutcome> {
        self.inner.put_file_if_absent(key, path, opts).await
    }
    async fn delete(&self, key: &str) -> crate::storage::Result<()> {
        self.inner.delete(key).await
    }
}

async fn commit_through(once: usize, rival: Option<&str>) -> (Result<Manifest>, RepoReader) {
    let store = Writer::new(Arc::new(LostAnswers {
        inner: MemoryBackend::new("lost"),
        once: once.into(),
        rival: rival.map(|r| Bytes::from(r.to_owned())),
    }));
    let repo = RepoWriter::open_or_init(store).await.unwrap();
    let b = begun_with_archive(&repo).await;
    (b.commit(draft()).await, repo.reader().clone())
}

#[tokio::test]
async fn a_lost_answer_to_the_manifest_write_is_settled_by_reading_it_back() {
    // Answer lost once (the retry got 409), then lost on every try (an error): both committed.
    for once in [1, 0] {
        let (result, reader) = commit_through(once, None).await;
        let committed = result.unwrap_or_else(|e| panic!("once={once}: {e}"));
        assert_eq!(reader.manifest(&committed.name).await.unwrap(), committed);
    }
}

#[tokio::test]
async fn another_writers_manifest_is_a_commit_race_even_when_our_answer_is_lost() {
    let rival = serde_json::to_string(&Manifest::draft(
        BackupName::new("b1").unwrap(),
        jiff::Timestamp::now(),
    ))
    .unwrap();
    for once in [1, 0] {
        let (result, reader) = commit_through(once, Some(&rival)).await;
        let err = result.unwrap_err();
        assert!(matches!(err, RepoError::CommitRace { .. }), "{err}");
        // The rival's manifest is left as it was.
        let stored = reader
            .manifest(&BackupName::new("b1").unwrap())
            .await
            .unwrap();
        assert!(stored.objects.is_empty(), "{stored:?}");
    }
}

/// Replaces `key` in `store` with `f` applied to its text.
async fn rewrite(store: &Writer, key: &str, f: impl FnOnce(String) -> String) {
    let text = String::from_utf8(store.get(key).await.unwrap().to_vec()).unwrap();
    store.delete(key).await.unwrap();
    store
        .put_if_absent(key, Bytes::from(f(text)))
        .await
        .unwrap();
}

#[tokio::test]
async fn damage_to_the_manifest_is_named_as_damage_to_the_manifest() {
    let store = memory("damaged");
    let repo = RepoWriter::open_or_init(store.clone()).await.unwrap();
    let committed = backup(&repo, "b1").await;
    let digest = committed
        .manifest_sha256
        .clone()
        .expect("the commit records it");
    assert_eq!(digest.len(), 64);
    let name = BackupName::new("b1").unwrap();
    assert_eq!(repo.reader().manifest(&name).await.unwrap(), committed);

    // One hex digit of the archive's recorded sha256 flipped: the JSON still parses.
    let recorded = committed.objects[0].sha256.clone();
    let flipped = format!(
        "{}{}",
        if recorded.starts_with('0') { '1' } else { '0' },
        &recorded[1..]
    );
    rewrite(&store, &Layout::manifest(&name), |t| {
        t.replacen(&recorded, &flipped, 1)
    })
    .await;
    let err = repo.reader().manifest(&name).await.unwrap_err();
    assert!(matches!(err, RepoError::ManifestDamaged { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(
            "the manifest of backup \"b1\" (backups/b1/manifest.json in memory:damaged) is damaged"
        ),
        "{msg}"
    );
    assert!(!msg.contains("resources.tar.zst"), "{msg}");
}

#[tokio::test]
async fn a_manifest_without_its_own_digest_still_reads() {
    let store = memory("old");
    let repo = RepoWriter::open_or_init(store.clone()).await.unwrap();
    let mut committed = backup(&repo, "b1").await;
    let name = BackupName::new("b1").unwrap();
    // As written before the field existed.
    rewrite(&store, &Layout::manifest(&name), |t| {
        let mut doc: serde_json::Value = serde_json::from_str(&t).unwrap();
        doc.as_object_mut().unwrap().remove("manifestSha256");
        serde_json::to_string_pretty(&doc).unwrap()
    })
    .await;
    committed.manifest_sha256 = None;
    assert_eq!(repo.reader().manifest(&name).await.unwrap(), committed);
}

#[test]
fn the_manifest_digest_does_not_depend_on_layout_or_key_order() {
    let a: serde_json::Value =
        serde_json::from_str(r#"{"b":[1,{"y":"é\"","x":2.5}],"a":null,"manifestSha256":"x"}"#)
            .unwrap();
    let b: serde_json::Value = serde_json::from_str(
        "{\n  \"a\": null,\n  \"b\": [1, {\"x\": 2.5, \"y\": \"\\u00e9\\\"\"}]\n}",
    )
    .unwrap();
    assert_eq!(manifest::content_sha256(&a), manifest::content_sha256(&b));
    let c: serde_json::Value =
        serde_json::from_str(r#"{"a":null,"b":[1,{"x":2.5,"y":"e"}]}"#).unwrap();
    assert_ne!(manifest::content_sha256(&a), manifest::content_sha256(&c));
}

#[tokio::test]
async fn the_manifest_digest_survives_a_float_that_does_not_parse_back_exactly() {
    // serde_json (without `float_roundtrip`) parses this value's text one ulp away from it;
    // a digest over the written value would not match the one read back.
    let seconds = 94624.09633333333_f64;
    let store = memory("float");
    let repo = RepoWriter::open_or_init(store.clone()).await.unwrap();
    let name = BackupName::new("b1").unwrap();
    let b = repo.begin_backup(name.clone()).await.unwrap();
    let mut draft = draft();
    draft.details.duration_seconds = Some(seconds);
    b.commit(draft).await.unwrap();
    let read = repo.reader().manifest(&name).await.unwrap();
    assert!(read.manifest_sha256.is_some());
}
