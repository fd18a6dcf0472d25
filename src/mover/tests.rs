//! The mover's unit tests: pinned chunking, every path yielding the same ids, round trips through
//! the in-memory and local backends, incremental cost, hostile indexes, corruption.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::*;
use crate::repo::index::{
    self, ChunkRef, DirNode, Entry, FileNode, HardLinkNode, Meta, Mtime, SymlinkNode, VolumeIndex,
};
use crate::repo::{Layout, PackId, RepoConfig};
use crate::storage::local::LocalBackend;
use crate::storage::memory::MemoryBackend;
use crate::storage::{Reader, Writer};

include!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/volume/dataset.rs"
));
use dataset::{Rng, Spec};

fn default_chunker() -> ChunkerConfig {
    ChunkerConfig::from_params(&RepoConfig::new_default().chunker).unwrap()
}

fn options(level: Option<i32>) -> BackupOptions {
    let mut o = BackupOptions::for_repo(&RepoConfig::new_default());
    o.zstd_level = level;
    // Small packs so the small dataset spans several of them.
    o.pack_target = 1 << 20;
    o.workers = 2;
    o
}

fn memory() -> Writer {
    Writer::new(Arc::new(MemoryBackend::new("mover-test")))
}

/// A finished backup with its index read back into memory.
struct Done {
    index: VolumeIndex,
    stats: BackupStats,
}

/// Loads the streamed index, checking it is byte for byte the serde form of what it holds.
fn done(o: BackupOutcome) -> Done {
    let index = o.load_index().unwrap();
    assert_eq!(o.index.read_all().unwrap(), index.to_json());
    let mut listed: Vec<_> = index.pack_entries();
    listed.sort_by(|a, b| a.key.cmp(&b.key));
    listed.dedup();
    assert_eq!(o.pack_entries(), listed);
    Done {
        index,
        stats: o.stats,
    }
}

fn parent_of(index: &VolumeIndex) -> ParentIndex {
    ParentIndex::from_index(index).unwrap()
}

async fn backup(
    src: &Path,
    store: &Writer,
    level: Option<i32>,
    parent: Option<&VolumeIndex>,
) -> Done {
    backup_from(src, store, options(level), parent.map(parent_of)).await
}

/// A full backup that references the chunks `known` lists instead of storing them.
async fn backup_known(src: &Path, store: &Writer, known: KnownChunks) -> Done {
    done(
        backup_volume(src.to_owned(), store.clone(), options(Some(3)), None, known)
            .await
            .unwrap(),
    )
}

async fn backup_from(
    src: &Path,
    store: &Writer,
    opts: BackupOptions,
    parent: Option<ParentIndex>,
) -> Done {
    done(
        backup_volume(
            src.to_owned(),
            store.clone(),
            opts,
            parent,
            KnownChunks::new(),
        )
        .await
        .unwrap(),
    )
}

async fn restore(store: &Writer, index: &VolumeIndex, target: &Path) -> Result<RestoreStats> {
    restore_volume(
        store.reader(),
        Arc::new(index.clone()),
        target.to_owned(),
        RestoreOptions {
            concurrency: 3,
            max_range: 256 << 10,
            ..RestoreOptions::default()
        },
    )
    .await
}

/// Everything tar would record of a tree, keyed by relative path.
#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir {
        mode: u32,
        mtime: (i64, i64),
    },
    File {
        mode: u32,
        mtime: (i64, i64),
        size: u64,
        sha: String,
        nlink: u64,
    },
    Link {
        target: String,
        mtime: (i64, i64),
    },
}

fn tree(root: &Path) -> BTreeMap<String, Node> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
        for e in fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            let m = fs::symlink_metadata(&path).unwrap();
            let mtime = (m.mtime(), m.mtime_nsec());
            let node = if m.is_dir() {
                walk(root, &path, out);
                Node::Dir {
                    mode: m.mode() & 0o7777,
                    mtime,
                }
            } else if m.file_type().is_symlink() {
                Node::Link {
                    target: fs::read_link(&path).unwrap().to_str().unwrap().to_owned(),
                    mtime,
                }
            } else {
                Node::File {
                    mode: m.mode() & 0o7777,
                    mtime,
                    size: m.size(),
                    sha: hex::encode(Sha256::digest(fs::read(&path).unwrap())),
                    nlink: m.nlink(),
                }
            };
            out.insert(rel, node);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn chunk_ids(index: &VolumeIndex) -> BTreeMap<String, Vec<ChunkId>> {
    index
        .files()
        .map(|f| (f.path.clone(), f.chunks.iter().map(|c| c.id).collect()))
        .collect()
}

// --- chunker -------------------------------------------------------------------------------

/// rustic's `chunk_random` habit: 32 MiB from a fixed seed, every (length, sha256) pinned through
/// one digest, so any drift in boundaries, parameters or hashing fails here.
#[test]
fn chunker_boundaries_are_pinned_for_32_mib_of_seeded_data() {
    let data = Rng::new(0x5eed).bytes(32 << 20);
    let mut digest = Sha256::new();
    let mut count = 0;
    for c in ChunkIter::new(&data[..], default_chunker()) {
        let c = c.unwrap();
        digest.update((c.data.len() as u32).to_le_bytes());
        digest.update(ChunkId::of(&c.data).0);
        count += 1;
    }
    assert_eq!(
        (count, hex::encode(digest.finalize())),
        (
            433,
            "027e6ec1e3fc85ebc0d79bcc01de471fba7976ccf6bda508570522a292d15259".to_owned()
        )
    );
}

/// A reader that hands out bytes in awkward, varying sizes.
struct Trickle<'a> {
    data: &'a [u8],
    rng: Rng,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (1 + self.rng.below(70_000) as usize)
            .min(buf.len())
            .min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// ripgrep's SearcherTester habit: streaming (whole reads or a trickle) and the whole-buffer
/// reference agree on every chunk.
#[test]
fn streaming_and_whole_buffer_chunking_agree() {
    let mut rng = Rng::new(3);
    let mut data = rng.bytes(5 << 20);
    data.extend(vec![0u8; 1 << 20]); // a long run without cut points: cut at max
    data.extend(rng.text(2 << 20));
    let cfg = default_chunker();
    let whole: Vec<&[u8]> = cfg.cut_slice(&data).collect();
    let streamed: Vec<RawChunk> = ChunkIter::new(&data[..], cfg).map(|c| c.unwrap()).collect();
    let trickled: Vec<RawChunk> = ChunkIter::new(
        Trickle {
            data: &data,
            rng: Rng::new(9),
        },
        cfg,
    )
    .map(|c| c.unwrap())
    .collect();
    assert!(whole.len() > 50);
    assert_eq!(streamed.len(), whole.len());
    assert_eq!(trickled, streamed);
    let mut offset = 0;
    for (s, w) in streamed.iter().zip(&whole) {
        assert_eq!(s.data, *w);
        assert_eq!(s.offset, offset);
        offset += w.len() as u64;
        assert!(w.len() <= cfg.max);
    }
    assert_eq!(offset, data.len() as u64);
}

use super::chunker::RawChunk;

#[test]
fn repository_chunker_parameters_are_checked() {
    let mut p = RepoConfig::new_default().chunker;
    assert!(ChunkerConfig::from_params(&p).is_ok());
    p.algorithm = "rabin".into();
    assert!(ChunkerConfig::from_params(&p).is_err());
    let mut p = RepoConfig::new_default().chunker;
    p.min_size = p.avg_size * 2;
    assert!(ChunkerConfig::from_params(&p).is_err());
}

// --- round trips ---------------------------------------------------------------------------

async fn round_trip(store: Writer) {
    let src = tempfile::tempdir().unwrap();
    dataset::generate(src.path(), &Spec::small()).unwrap();
    let out = backup(src.path(), &store, Some(3), None).await;
    let stats = &out.stats;
    assert_eq!(stats.hard_links, 1);
    assert_eq!(stats.symlinks, 3);
    assert!(
        stats.packs_written.len() > 1,
        "small packs: several of them"
    );
    for p in &stats.packs_written {
        let bytes = store.get(&p.key).await.unwrap();
        assert_eq!(hex::encode(Sha256::digest(&bytes)), p.sha256);
        assert_eq!(p.key, Layout::pack(&PackId::from_hex(&p.sha256).unwrap()));
    }
    // The index survives its JSON form.
    let index = VolumeIndex::from_json(&out.index.to_json()).unwrap();
    assert_eq!(index, out.index);
    assert_eq!(
        index.pack_entries().len(),
        index.packs.len(),
        "each pack listed once"
    );
    let sparse = index.files().find(|f| f.path == "data/sparse.img").unwrap();
    assert!(!sparse.holes.is_empty(), "holes recorded");
    let stored: u64 = sparse.chunks.iter().map(|c| u64::from(c.size)).sum();
    assert!(
        stored < 200_000,
        "sparse file not inflated: {stored} bytes of chunks"
    );

    let dst = tempfile::tempdir().unwrap();
    let r = restore(&store, &index, dst.path()).await.unwrap();
    assert_eq!(r.hard_links, 1);
    assert_eq!(tree(dst.path()), tree(src.path()));
    let m = fs::metadata(dst.path().join("data/secret.key")).unwrap();
    assert_eq!(m.mode() & 0o777, 0o600);
    let a = fs::metadata(dst.path().join("data/large.bin")).unwrap();
    let b = fs::metadata(dst.path().join("large.hardlink")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard link restored as a link");
    let s = fs::metadata(dst.path().join("data/sparse.img")).unwrap();
    assert!(
        s.blocks() * 512 < s.size() / 2,
        "sparse file restored sparse"
    );
    assert!(dst.path().join("empty-dir").is_dir());
}

#[tokio::test]
async fn dataset_round_trips_through_memory_backend() {
    round_trip(memory()).await;
}

#[tokio::test]
async fn dataset_round_trips_through_local_backend() {
    let repo = tempfile::tempdir().unwrap();
    round_trip(Writer::new(Arc::new(LocalBackend::new(repo.path())))).await;
}

/// The same data through compression on and off yields the same chunk ids per file.
#[tokio::test]
async fn compression_does_not_change_chunk_ids() {
    let src = tempfile::tempdir().unwrap();
    dataset::generate(src.path(), &Spec::small()).unwrap();
    let zstd = backup(src.path(), &memory(), Some(3), None).await;
    let raw = backup(src.path(), &memory(), None, None).await;
    assert_eq!(chunk_ids(&zstd.index), chunk_ids(&raw.index));
    assert!(zstd.stats.new_stored_bytes < raw.stats.new_stored_bytes);
    assert_eq!(raw.stats.new_stored_bytes, raw.stats.new_bytes);
    // And the chunks of a file are those the chunker cuts from its bytes.
    let large = fs::read(src.path().join("data/large.bin")).unwrap();
    let direct: Vec<ChunkId> = default_chunker()
        .cut_slice(&large)
        .map(ChunkId::of)
        .collect();
    assert_eq!(chunk_ids(&zstd.index)["data/large.bin"], direct);
}

/// The repository glue: the index lands at `backups/<name>/volumes/<ns>/<pvc>.json`, the
/// manifest lists every pack, and the index reads back.
#[tokio::test]
async fn index_is_stored_in_the_backup_and_its_packs_in_the_manifest() {
    use crate::repo::{BackupName, Manifest, RepoWriter};
    let store = memory();
    let src = tempfile::tempdir().unwrap();
    dataset::generate(src.path(), &Spec::small()).unwrap();
    let out = backup(src.path(), &store, Some(3), None).await;
    let repo = RepoWriter::open_or_init(store.clone()).await.unwrap();
    let name = BackupName::new("b1").unwrap();
    let mut bw = repo.begin_backup(name.clone()).await.unwrap();
    let entry = bw
        .put_volume_index("shop", "data-db-0", &out.index)
        .await
        .unwrap();
    assert_eq!(entry.key, Layout::volume_index(&name, "shop", "data-db-0"));
    let draft: Manifest = serde_json::from_value(serde_json::json!({
        "formatVersion": 1, "name": "b1", "createdBy": "test",
        "startedAt": "2026-11-20T22:00:00Z", "completedAt": "2026-11-20T22:00:00Z",
        "objects": [], "packs": []
    }))
    .unwrap();
    let manifest = bw.commit(draft).await.unwrap();
    let mut written: Vec<_> = out.stats.packs_written.clone();
    written.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(manifest.packs, written);
    let repo = crate::repo::RepoReader::open(store.reader()).await.unwrap();
    let file = repo
        .volume_index(&manifest, "shop", "data-db-0")
        .await
        .unwrap();
    let back = VolumeIndex::from_json(&fs::read(file.path()).unwrap()).unwrap();
    assert_eq!(back, out.index);
    let none = repo.volume_index(&manifest, "shop", "other").await;
    assert!(
        matches!(none, Err(crate::repo::RepoError::NoSuchVolume { .. })),
        "{none:?}"
    );
}

// --- incremental ---------------------------------------------------------------------------

#[tokio::test]
async fn second_backup_after_changing_one_percent_of_pages_uploads_little() {
    let spec = Spec::small();
    let src = tempfile::tempdir().unwrap();
    dataset::generate(src.path(), &spec).unwrap();
    let store = memory();
    let first = backup(src.path(), &store, Some(3), None).await;
    let changed = dataset::touch_db_pages(src.path(), spec.db_pages, 1, 11).unwrap();
    let second = backup(src.path(), &store, Some(3), Some(&first.index)).await;
    let s = &second.stats;
    let total = s.bytes_total;
    assert!(changed > 0);
    // Only the database file changed: everything else is taken over without reading.
    let db_size = (spec.db_pages * dataset::PAGE) as u64;
    assert_eq!(s.bytes_read, db_size, "only the changed file is read");
    assert_eq!(s.files_unchanged, s.files - 1);
    // 6 rewritten pages of 8 KiB touch about one chunk each (pages are half zero padding, so
    // chunks run larger than the 64 KiB average here).
    assert!(s.new_bytes < total / 10, "new {} of {total}", s.new_bytes);
    assert!(
        s.new_bytes <= 8 * 256 * 1024,
        "at most two max-size chunks per page"
    );
    // The second index restores the new state.
    let dst = tempfile::tempdir().unwrap();
    restore(&store, &second.index, dst.path()).await.unwrap();
    assert_eq!(tree(dst.path()), tree(src.path()));
}

/// The parent index is followed alongside the walk, whose order is depth first with sorted
/// names: `a/…` comes before `a.txt` although `"a.txt" < "a/b"` as strings. Every unchanged file
/// is found and taken over, none is read.
#[tokio::test]
async fn the_parent_is_followed_in_walk_order_so_every_unchanged_file_is_taken_over() {
    let src = tempfile::tempdir().unwrap();
    for (path, n) in [
        ("a/b", 1u64),
        ("a/c/d", 2),
        ("a.txt", 3),
        ("a-b", 4),
        ("b", 5),
        ("a/c.d", 6),
    ] {
        let p = src.path().join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, Rng::new(n).bytes(100_000 + n as usize)).unwrap();
    }
    let store = memory();
    let first = backup(src.path(), &store, Some(3), None).await;
    let second = backup(src.path(), &store, Some(3), Some(&first.index)).await;
    assert_eq!(second.stats.files, 6);
    assert_eq!(second.stats.files_unchanged, 6, "{:?}", second.stats);
    assert_eq!(second.stats.bytes_read, 0);
    assert_eq!(second.index.entries, first.index.entries);
}

/// Bounded memory changes cost, never content: a run cache of a few entries forgets repeated
/// chunks (so they are stored again), a known set of a few kilobytes spills to disk, and both
/// backups restore the tree exactly, with the same chunks per file.
#[tokio::test]
async fn a_tiny_run_cache_and_a_spilled_known_set_change_cost_not_content() {
    let spec = Spec::small();
    let src = tempfile::tempdir().unwrap();
    dataset::generate(src.path(), &spec).unwrap();
    // Repeated content far apart: the same 600 KB three times, between other files.
    let repeated = Rng::new(77).bytes(600_000);
    for name in ["aa-copy", "mm-copy", "zz-copy"] {
        fs::write(src.path().join(name), &repeated).unwrap();
    }
    let roomy = backup(src.path(), &memory(), Some(3), None).await;
    let store = memory();
    let mut opts = options(Some(3));
    opts.run_cache_bytes = 0;
    let tight = backup_from(src.path(), &store, opts, None).await;
    assert_eq!(chunk_ids(&tight.index), chunk_ids(&roomy.index));
    assert!(
        tight.stats.new_chunks > roomy.stats.new_chunks,
        "a forgetful cache stores repeats again: {} vs {}",
        tight.stats.new_chunks,
        roomy.stats.new_chunks
    );
    let dst = tempfile::tempdir().unwrap();
    restore(&store, &tight.index, dst.path()).await.unwrap();
    assert_eq!(tree(dst.path()), tree(src.path()));

    // Incremental with the known set spilled to disk in runs of 4096 rows.
    dataset::touch_db_pages(src.path(), spec.db_pages, 1, 12).unwrap();
    let spilled = KnownChunks::with_budget(4096 * 48);
    let next = done(
        backup_volume(
            src.path().to_owned(),
            store.clone(),
            options(Some(3)),
            Some(parent_of(&tight.index)),
            spilled,
        )
        .await
        .unwrap(),
    );
    let db_size = (spec.db_pages * dataset::PAGE) as u64;
    assert_eq!(
        next.stats.bytes_read, db_size,
        "only the changed file is read"
    );
    assert!(next.stats.new_bytes <= 8 * 256 * 1024, "{:?}", next.stats);
    let dst = tempfile::tempdir().unwrap();
    restore(&store, &next.index, dst.path()).await.unwrap();
    assert_eq!(tree(dst.path()), tree(src.path()));
}

/// Chunks known from another volume's index are referenced, not stored again.
#[tokio::test]
async fn known_chunks_from_another_index_are_not_uploaded() {
    let src = tempfile::tempdir().unwrap();
    dataset::generate(src.path(), &Spec::small()).unwrap();
    let store = memory();
    let first = backup(src.path(), &store, Some(3), None).await;
    let mut known = KnownChunks::new();
    known.add_index(&first.index).unwrap();
    // A copy of the tree has new inodes, so every file is read, yet nothing is new.
    let copy = tempfile::tempdir().unwrap();
    dataset::generate(copy.path(), &Spec::small()).unwrap();
    let second = backup_known(copy.path(), &store, known).await;
    assert_eq!(second.stats.new_chunks, 0);
    assert!(second.stats.packs_written.is_empty());
    assert_eq!(second.stats.bytes_read, first.stats.bytes_read);
    let dst = tempfile::tempdir().unwrap();
    restore(&store, &second.index, dst.path()).await.unwrap();
    assert_eq!(tree(dst.path()), tree(copy.path()));
}

/// A snapshot that copies files (new inode numbers) can still skip unchanged files by size and
/// mtime when asked; by default a new inode means the file is read.
#[tokio::test]
async fn unchanged_rule_decides_whether_copied_files_are_read() {
    let src = tempfile::tempdir().unwrap();
    dataset::generate(src.path(), &Spec::small()).unwrap();
    let store = memory();
    let first = backup(src.path(), &store, Some(3), None).await;
    let copy = tempfile::tempdir().unwrap();
    dataset::generate(copy.path(), &Spec::small()).unwrap();
    let strict = backup(copy.path(), &store, Some(3), Some(&first.index)).await;
    assert_eq!(strict.stats.files_unchanged, 0);
    assert_eq!(strict.stats.bytes_read, first.stats.bytes_read);
    let mut opts = options(Some(3));
    opts.unchanged = UnchangedRule::SizeMtime;
    let loose = backup_from(copy.path(), &store, opts, Some(parent_of(&first.index))).await;
    assert_eq!(loose.stats.bytes_read, 0);
    assert_eq!(loose.stats.files_unchanged, loose.stats.files);
    assert_eq!(chunk_ids(&loose.index), chunk_ids(&first.index));
}

// --- hostile indexes -----------------------------------------------------------------------

fn meta() -> Meta {
    Meta {
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: Mtime(1, 0),
    }
}

fn hostile(entries: Vec<Entry>) -> VolumeIndex {
    let mut i = VolumeIndex::new(RepoConfig::new_default().chunker);
    i.entries = entries;
    i
}

fn empty_file(path: &str) -> Entry {
    Entry::File(FileNode {
        path: path.into(),
        meta: meta(),
        size: 0,
        inode: 1,
        holes: vec![],
        chunks: vec![],
    })
}

/// Restores `index` into `outer/target`; returns the error and everything that now exists in
/// `outer` besides the target.
async fn restore_hostile(index: VolumeIndex) -> (MoverError, Vec<String>) {
    let outer = tempfile::tempdir().unwrap();
    let target = outer.path().join("target");
    fs::create_dir(&target).unwrap();
    let err = restore(&memory(), &index, &target).await.unwrap_err();
    let mut outside: Vec<String> = fs::read_dir(outer.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "target")
        .collect();
    outside.sort();
    (err, outside)
}

#[tokio::test]
async fn hostile_index_with_dotdot_is_refused_naming_the_entry() {
    let (err, outside) = restore_hostile(hostile(vec![empty_file("ok"), empty_file("../x")])).await;
    assert!(
        matches!(&err, MoverError::UnsafePath { entry, .. } if entry == "../x"),
        "{err}"
    );
    assert!(err.to_string().contains("\"../x\""));
    assert!(outside.is_empty(), "{outside:?}");
}

#[tokio::test]
async fn hostile_index_with_absolute_path_is_refused_naming_the_entry() {
    let (err, outside) = restore_hostile(hostile(vec![empty_file("/etc/x")])).await;
    assert!(
        matches!(&err, MoverError::UnsafePath { entry, .. } if entry == "/etc/x"),
        "{err}"
    );
    assert!(outside.is_empty());
}

#[tokio::test]
async fn hostile_index_writing_through_a_symlink_is_refused_naming_the_entry() {
    let index = hostile(vec![
        Entry::Symlink(SymlinkNode {
            path: "escape".into(),
            meta: meta(),
            target: "..".into(),
        }),
        Entry::Dir(DirNode {
            path: "d".into(),
            meta: meta(),
        }),
        empty_file("escape/pwned"),
    ]);
    let (err, outside) = restore_hostile(index).await;
    assert!(
        matches!(&err, MoverError::ThroughSymlink { entry, link } if entry == "escape/pwned" && link == "escape"),
        "{err}"
    );
    assert!(outside.is_empty(), "{outside:?}");
}

/// Defence in depth: a symlink already in the target (not from the index) is not followed.
#[tokio::test]
async fn symlink_planted_in_the_target_is_not_followed() {
    let outer = tempfile::tempdir().unwrap();
    let target = outer.path().join("target");
    fs::create_dir(&target).unwrap();
    std::os::unix::fs::symlink(outer.path(), target.join("dir")).unwrap();
    std::os::unix::fs::symlink(outer.path().join("f"), target.join("file")).unwrap();
    let err = restore(&memory(), &hostile(vec![empty_file("dir/x")]), &target)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, MoverError::ThroughSymlink { entry, .. } if entry == "dir/x"),
        "{err}"
    );
    let link = hostile(vec![
        empty_file("f0"),
        Entry::HardLink(HardLinkNode {
            path: "dir/l".into(),
            target: "f0".into(),
        }),
    ]);
    let err = restore(&memory(), &link, &target).await.unwrap_err();
    assert!(
        matches!(&err, MoverError::ThroughSymlink { entry, .. } if entry == "dir/l"),
        "{err}"
    );
    assert!(!outer.path().join("l").exists());
    let err = restore(&memory(), &hostile(vec![empty_file("file")]), &target)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, MoverError::TargetExists { entry } if entry == "file"),
        "{err}"
    );
    assert!(!outer.path().join("x").exists() && !outer.path().join("f").exists());
}

#[test]
fn hard_link_to_a_path_that_is_not_an_earlier_file_is_refused() {
    let index = hostile(vec![Entry::HardLink(HardLinkNode {
        path: "l".into(),
        target: "/etc/passwd".into(),
    })]);
    let err = check_index(&index).unwrap_err();
    assert!(
        matches!(&err, MoverError::BadHardLink { entry, .. } if entry == "l"),
        "{err}"
    );
}

#[test]
fn file_whose_chunks_do_not_add_up_is_refused() {
    let mut f = FileNode {
        path: "f".into(),
        meta: meta(),
        size: 10,
        inode: 1,
        holes: vec![],
        chunks: vec![ChunkRef {
            id: ChunkId([0; 32]),
            pack: 0,
            offset: 0,
            length: 4,
            size: 4,
        }],
    };
    let mut index = hostile(vec![]);
    index.packs.push(index::PackRef {
        id: PackId::from_hex(&"00".repeat(32)).unwrap(),
        size: 4,
    });
    index.entries = vec![Entry::File(f.clone())];
    assert!(matches!(
        check_index(&index),
        Err(MoverError::BadFileEntry { .. })
    ));
    f.chunks[0].pack = 7;
    f.size = 4;
    index.entries = vec![Entry::File(f)];
    assert!(matches!(
        check_index(&index),
        Err(MoverError::BadFileEntry { .. })
    ));
}

// --- corruption ----------------------------------------------------------------------------

#[tokio::test]
async fn corrupted_chunk_is_named_with_its_file_by_verify_and_restore() {
    let repo = tempfile::tempdir().unwrap();
    let store = Writer::new(Arc::new(LocalBackend::new(repo.path())));
    let src = tempfile::tempdir().unwrap();
    dataset::generate(src.path(), &Spec::small()).unwrap();
    let out = backup(src.path(), &store, Some(3), None).await;
    let reader: Reader = store.reader();
    let clean = verify_index(&reader, &out.index).await.unwrap();
    assert!(clean.is_ok(), "{clean:?}");
    assert!(clean.chunks > 0);

    // Flip one byte in the middle of the secret key's only chunk, in the pack on disk.
    let victim = out
        .index
        .files()
        .find(|f| f.path == "data/secret.key")
        .unwrap();
    let c = victim.chunks[0];
    let pack = &out.index.packs[c.pack as usize];
    let path = repo.path().join(pack.key());
    let mut bytes = fs::read(&path).unwrap();
    bytes[(c.offset + c.length / 2) as usize] ^= 0x55;
    let mut perms = fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    fs::set_permissions(&path, perms).unwrap();
    fs::write(&path, &bytes).unwrap();

    let report = verify_index(&reader, &out.index).await.unwrap();
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    let d = &report.damaged[0];
    assert_eq!(d.chunk, c.id.to_hex());
    assert_eq!(d.pack, pack.key());
    assert_eq!(d.files, vec!["data/secret.key".to_owned()]);
    let bare = verify_packs(&reader, &[pack.key()]).await.unwrap();
    assert_eq!(bare.damaged.len(), 1);

    let dst = tempfile::tempdir().unwrap();
    let err = restore(&store, &out.index, dst.path()).await.unwrap_err();
    match &err {
        MoverError::CorruptChunk {
            file,
            chunk,
            pack: p,
            ..
        } => {
            assert_eq!(file, "data/secret.key");
            assert_eq!(chunk, &c.id.to_hex());
            assert_eq!(p, &pack.key());
        }
        other => panic!("expected a corrupt chunk, got {other}"),
    }
    assert!(err.to_string().contains("data/secret.key"));
}

/// Two volumes sharing packs: each pack is read once and a damaged chunk names both volumes.
#[tokio::test]
async fn verify_volumes_names_every_volume_holding_a_damaged_chunk() {
    let repo = tempfile::tempdir().unwrap();
    let store = Writer::new(Arc::new(LocalBackend::new(repo.path())));
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    dataset::generate(a.path(), &Spec::small()).unwrap();
    dataset::generate(b.path(), &Spec::small()).unwrap();
    let va = backup(a.path(), &store, Some(3), None).await.index;
    let mut known = KnownChunks::new();
    known.add_index(&va).unwrap();
    let vb = backup_known(b.path(), &store, known).await.index;
    let c = va
        .files()
        .find(|f| f.path == "data/secret.key")
        .unwrap()
        .chunks[0];
    let path = repo.path().join(va.packs[c.pack as usize].key());
    let mut bytes = fs::read(&path).unwrap();
    bytes[(c.offset + 3) as usize] ^= 0xff;
    fs::remove_file(&path).unwrap();
    fs::write(&path, &bytes).unwrap();
    let report = verify_volumes(&store.reader(), &[("ns/a", &va), ("ns/b", &vb)])
        .await
        .unwrap();
    assert_eq!(
        report.packs as usize,
        va.packs.len(),
        "shared packs read once"
    );
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert_eq!(report.damaged[0].volumes, vec!["ns/a", "ns/b"]);
    assert_eq!(
        report.damaged[0].files,
        vec!["ns/a:data/secret.key", "ns/b:data/secret.key"]
    );
}

#[tokio::test]
async fn missing_pack_is_reported_with_its_files() {
    let store = memory();
    let src = tempfile::tempdir().unwrap();
    dataset::generate(src.path(), &Spec::small()).unwrap();
    let mut out = backup(src.path(), &store, Some(3), None).await;
    let victim = out
        .index
        .files()
        .find(|f| f.path == "data/secret.key")
        .unwrap();
    let row = victim.chunks[0].pack as usize;
    out.index.packs[row].id = PackId::from_hex(&"ff".repeat(32)).unwrap();
    let report = verify_index(&store.reader(), &out.index).await.unwrap();
    assert_eq!(
        report.missing_packs,
        vec![Layout::pack(&PackId::from_hex(&"ff".repeat(32)).unwrap())]
    );
    assert!(
        report.damaged[0]
            .files
            .contains(&"data/secret.key".to_owned())
    );
}

#[test]
fn known_chunks_lookup_is_exact() {
    let mut index = hostile(vec![]);
    index.packs.push(index::PackRef {
        id: PackId::from_hex(&"ab".repeat(32)).unwrap(),
        size: 100,
    });
    let id = ChunkId::of(b"x");
    index.entries.push(Entry::File(FileNode {
        path: "f".into(),
        meta: meta(),
        size: 1,
        inode: 1,
        holes: vec![],
        chunks: vec![ChunkRef {
            id,
            pack: 0,
            offset: 5,
            length: 1,
            size: 1,
        }],
    }));
    let mut k = KnownChunks::new();
    k.add_index(&index).unwrap();
    k.add_index(&index).unwrap();
    k.seal().unwrap();
    assert_eq!(k.len(), 1);
    let loc = k.get(&id).unwrap().unwrap();
    assert_eq!(
        (loc.pack.id.as_str(), loc.offset),
        ("ab".repeat(32).as_str(), 5)
    );
    let mut other = id;
    other.0[31] ^= 1;
    assert!(!k.contains(&other).unwrap());
}

// --- repacking forward ---------------------------------------------------------------------

/// Commits backup `name` of volume ns/p with `index` (a volume record pointing at it).
async fn commit_volume(repo: &crate::repo::RepoWriter, name: &str, index: &VolumeIndex) {
    use crate::repo::{BackupName, Manifest, VolumeRecord, VolumeStatus};
    let name = BackupName::new(name).unwrap();
    let mut bw = repo.begin_backup(name.clone()).await.unwrap();
    let entry = bw.put_volume_index("ns", "p", index).await.unwrap();
    let mut record = VolumeRecord::new("ns", "p", VolumeStatus::Completed);
    record.index = Some(entry.key);
    let mut draft = Manifest::draft(name, jiff::Timestamp::now());
    draft.details.volumes = Some(vec![record]);
    bw.commit(draft).await.unwrap();
}

async fn drop_backup(store: &Writer, name: &str) {
    use futures::TryStreamExt;
    let keys: Vec<String> = store
        .list(&format!("backups/{name}/"))
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .unwrap();
    for k in keys {
        store.delete(&k).await.unwrap();
    }
}

/// One retirement pass, under the prune lock as a garbage-collection run takes it.
async fn retire(
    store: &Writer,
    opts: &crate::repo::retire::RetireOptions,
) -> crate::repo::RetireReport {
    let lock = crate::repo::PruneLock::acquire(store, &Default::default())
        .await
        .unwrap();
    let report = crate::repo::retire::retire_sparse_packs(store, opts, Some(&lock), None)
        .await
        .unwrap();
    lock.release().await.unwrap();
    report
}

async fn retired_packs(store: &Writer) -> std::collections::HashSet<PackId> {
    let repo = crate::repo::RepoReader::open(store.reader()).await.unwrap();
    repo.retired_packs().await.unwrap()
}

/// Old enough: every object counts as older than the grace period.
fn judge_all(dry_run: bool) -> crate::repo::retire::RetireOptions {
    crate::repo::retire::RetireOptions {
        garbage_threshold: 0.5,
        cutoff: jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60),
        dry_run,
    }
}

#[tokio::test]
async fn a_mostly_garbage_pack_is_retired_and_later_backups_store_its_live_chunks_again() {
    let store = memory();
    let repo = crate::repo::RepoWriter::open_or_init(store.clone())
        .await
        .unwrap();
    // One 2.5 MB file in 1 MiB packs, then cut to its first 300 KB: its first chunks are the
    // same, so b2 references them in b1's first pack, which is then mostly garbage.
    let src = tempfile::tempdir().unwrap();
    let data = Rng::new(5).bytes(2_500_000);
    fs::write(src.path().join("data.bin"), &data).unwrap();
    let b1 = backup(src.path(), &store, Some(3), None).await;
    assert!(b1.index.packs.len() >= 2, "{:?}", b1.index.packs);
    commit_volume(&repo, "b1", &b1.index).await;
    fs::write(src.path().join("data.bin"), &data[..300_000]).unwrap();
    let b2 = backup(src.path(), &store, Some(3), Some(&b1.index)).await;
    // Only the chunk cut at the new end of file is new.
    assert!(b2.stats.new_chunks <= 1, "{:?}", b2.stats);
    commit_volume(&repo, "b2", &b2.index).await;
    drop_backup(&store, "b1").await;

    let dry = retire(&store, &judge_all(true)).await;
    // b1's pack(s) holding the first 300 KB (hashing in parallel may spread them over two) are
    // retired; b2's own small pack (its new last chunk) is all live.
    assert!(dry.retired >= 1, "{dry:?}");
    assert!(
        retired_packs(&store).await.is_empty(),
        "a dry run writes nothing"
    );
    let report = retire(&store, &judge_all(false)).await;
    assert_eq!(report.retired, dry.retired);
    let retired = retired_packs(&store).await;
    assert_eq!(retired.len() as u64, report.retired);
    assert!(
        retired
            .iter()
            .all(|id| b1.index.packs.iter().any(|p| &p.id == id)),
        "only b1's packs are mostly garbage: {retired:?}"
    );

    // The next backup neither references a retired pack nor loses data.
    let parent = parent_of(&b2.index).without_packs(&retired);
    let b3 = backup_from(src.path(), &store, options(Some(3)), Some(parent)).await;
    assert!(b3.stats.new_chunks > 0, "{:?}", b3.stats);
    assert!(
        b3.index.packs.iter().all(|p| !retired.contains(&p.id)),
        "b3 references a retired pack"
    );
    let out = tempfile::tempdir().unwrap();
    restore(&store, &b3.index, out.path()).await.unwrap();
    assert_eq!(tree(out.path()), tree(src.path()));

    // Once b2 goes, the retired packs are unreferenced (prune deletes them) and the markers
    // of packs that are gone are cleared.
    commit_volume(&repo, "b3", &b3.index).await;
    drop_backup(&store, "b2").await;
    for id in &retired {
        store.delete(&Layout::pack(id)).await.unwrap();
    }
    let again = retire(&store, &judge_all(false)).await;
    assert_eq!(again.markers_cleared, report.retired);
    assert!(retired_packs(&store).await.is_empty());
}

// --- encrypted packs -----------------------------------------------------------------------

#[tokio::test]
async fn encrypted_packs_hold_their_chunks_in_shuffled_order_and_restore_whole() {
    let src = tempfile::tempdir().unwrap();
    dataset::generate(src.path(), &Spec::small()).unwrap();
    let store = memory();
    let (identity, writer) = crate::repo::crypto::generate().unwrap();
    let mut opts = options(Some(3));
    opts.seal = Some(writer);
    let out = backup_from(src.path(), &store, opts, None).await;
    assert!(out.stats.packs_written.len() > 1, "several packs");

    // Walk order is the order chunks were added: in some pack it is no longer the offsets'.
    let mut last: BTreeMap<u32, u32> = BTreeMap::new();
    let mut out_of_order = 0;
    let mut seen = std::collections::HashSet::new();
    for f in out.index.files() {
        for c in &f.chunks {
            if !seen.insert(c.id) {
                continue;
            }
            if last.get(&c.pack).is_some_and(|&o| c.offset < o) {
                out_of_order += 1;
            }
            last.insert(c.pack, c.offset);
        }
    }
    assert!(out_of_order > 0, "chunks are laid out shuffled");

    let dst = tempfile::tempdir().unwrap();
    restore_volume(
        store.reader(),
        Arc::new(out.index.clone()),
        dst.path().to_owned(),
        RestoreOptions {
            concurrency: 3,
            max_range: 256 << 10,
            identity: Some(identity),
            ..RestoreOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(tree(dst.path()), tree(src.path()));
}
