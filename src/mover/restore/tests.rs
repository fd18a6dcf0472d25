//! Windowed restores: a window of a few chunk references (files cut across windows, windows
//! ending inside a file) restores exactly what the default window does, hostile entries in a
//! later window are refused naming them, and a window never holds more than it is allowed.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::tree::{PLACEHOLDER, VerifiedDirs};
use super::*;
use crate::repo::index::{
    ChunkRef, DirNode, Entry, FileNode, HardLinkNode, Meta, Mtime, PackRef, SymlinkNode,
    VolumeIndex,
};
use crate::repo::pack::{PackBuilder, encode_chunk};
use crate::repo::{ChunkId, RepoConfig};
use crate::storage::Writer;
use crate::storage::memory::MemoryBackend;

fn memory() -> Writer {
    Writer::new(Arc::new(MemoryBackend::new("restore-test")))
}

fn meta(mode: u32, secs: i64) -> Meta {
    Meta {
        mode,
        uid: 0,
        gid: 0,
        mtime: Mtime(secs, 123_456_789),
    }
}

/// Incompressible-looking bytes.
fn noise(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed << 20).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Stores one pack of `chunks` and returns a reference to each (pack row `row`).
async fn put_pack(store: &Writer, index: &mut VolumeIndex, chunks: &[Vec<u8>]) -> Vec<ChunkRef> {
    let mut b = PackBuilder::with_capacity(1 << 20);
    let entries: Vec<_> = chunks
        .iter()
        .map(|c| b.add(ChunkId::of(c), c.len() as u32, &encode_chunk(c, 3)))
        .collect();
    let p = b.finish();
    let row = index.packs.len() as u32;
    let pack = PackRef {
        id: p.id.clone(),
        size: p.bytes.len() as u64,
    };
    store.put_if_absent(&pack.key(), p.bytes).await.unwrap();
    index.packs.push(pack);
    entries
        .into_iter()
        .map(|e| ChunkRef {
            id: e.id,
            pack: row,
            offset: e.offset,
            length: e.length,
            size: e.size,
        })
        .collect()
}

fn file(path: &str, m: Meta, holes: Vec<(u64, u64)>, chunks: Vec<ChunkRef>) -> Entry {
    let data: u64 = chunks.iter().map(|c| u64::from(c.size)).sum();
    let size = data + holes.iter().map(|h| h.1).sum::<u64>();
    Entry::File(FileNode {
        path: path.into(),
        meta: m,
        size,
        inode: 1,
        holes,
        chunks,
    })
}

fn dir(path: &str, m: Meta) -> Entry {
    Entry::Dir(DirNode {
        path: path.into(),
        meta: m,
    })
}

fn symlink(path: &str, target: &str) -> Entry {
    Entry::Symlink(SymlinkNode {
        path: path.into(),
        meta: meta(0o777, 50),
        target: target.into(),
    })
}

fn hard_link(path: &str, target: &str) -> Entry {
    Entry::HardLink(HardLinkNode {
        path: path.into(),
        target: target.into(),
    })
}

/// A tree with directories (one read-only, holding a file), a file of many chunks (one used
/// twice), a sparse file, an empty file, a hard link, symlinks, a chunk shared by two files,
/// over two packs. Returns the store, the index and each file's expected content.
async fn sample() -> (Writer, VolumeIndex, BTreeMap<String, Vec<u8>>) {
    let store = memory();
    let mut index = VolumeIndex::new(RepoConfig::new_default().chunker);
    let a: Vec<Vec<u8>> = (0..8).map(|n| noise(n, 3000 + 500 * n as usize)).collect();
    let mut b: Vec<Vec<u8>> = (8..11).map(|n| noise(n, 4096)).collect();
    b.push(vec![7u8; 5000]);
    let ra = put_pack(&store, &mut index, &a).await;
    let rb = put_pack(&store, &mut index, &b).await;
    let cat = |parts: &[&Vec<u8>]| parts.iter().flat_map(|p| p.iter().copied()).collect();
    let mut want = BTreeMap::new();
    want.insert(
        "d/big".to_owned(),
        cat(&[&a[3], &a[4], &a[5], &a[6], &a[7], &a[3]]),
    );
    want.insert("d/empty".to_owned(), Vec::new());
    want.insert("d/hl".to_owned(), want["d/big"].clone());
    want.insert("d/ro/f".to_owned(), cat(&[&a[0], &a[1], &a[2]]));
    let mut sparse = vec![0u8; 4096];
    sparse.extend(&b[0]);
    sparse.extend(vec![0u8; 8192]);
    sparse.extend(&b[1]);
    want.insert("d/sparse".to_owned(), sparse);
    want.insert("e/g".to_owned(), cat(&[&a[0], &b[3], &b[3]]));
    want.insert("top".to_owned(), cat(&[&b[2], &a[7]]));
    index.entries = vec![
        dir("d", meta(0o755, 100)),
        file(
            "d/big",
            meta(0o640, 101),
            vec![],
            vec![ra[3], ra[4], ra[5], ra[6], ra[7], ra[3]],
        ),
        file("d/empty", meta(0o600, 102), vec![], vec![]),
        hard_link("d/hl", "d/big"),
        dir("d/ro", meta(0o555, 103)),
        file(
            "d/ro/f",
            meta(0o444, 104),
            vec![],
            vec![ra[0], ra[1], ra[2]],
        ),
        file(
            "d/sparse",
            meta(0o600, 105),
            vec![(0, 4096), (4096 + 4096, 8192)],
            vec![rb[0], rb[1]],
        ),
        symlink("d/zlink", "big"),
        dir("e", meta(0o700, -5)),
        symlink("e/abs", "/etc/passwd"),
        file("e/g", meta(0o604, 106), vec![], vec![ra[0], rb[3], rb[3]]),
        dir("e/sub", meta(0o711, 107)),
        file("top", meta(0o644, 108), vec![], vec![rb[2], ra[7]]),
    ];
    check_index(&index).unwrap();
    (store, index, want)
}

fn options(window_chunks: usize) -> RestoreOptions {
    RestoreOptions {
        concurrency: 3,
        max_range: 16 << 10,
        set_owners: Some(false),
        window_chunks,
        ..RestoreOptions::default()
    }
}

async fn restore_file(
    store: &Writer,
    index: &VolumeIndex,
    target: &Path,
    window_chunks: usize,
) -> Result<RestoreStats> {
    let written = index.write_file().unwrap();
    restore_index_file(
        store.reader(),
        written.path.clone(),
        target.to_owned(),
        options(window_chunks),
    )
    .await
}

/// Everything tar records of a tree, keyed by relative path: kind, mode, mtime, content digest,
/// link count, symlink text; plus which paths share an inode.
fn snapshot(root: &Path) -> (BTreeMap<String, String>, Vec<Vec<String>>) {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (String, u64)>) {
        for e in fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            let m = fs::symlink_metadata(&path).unwrap();
            let times = format!("{}.{:09}", m.mtime(), m.mtime_nsec());
            let desc = if m.is_dir() {
                walk(root, &path, out);
                format!("dir {:o} {times}", m.mode() & 0o7777)
            } else if m.file_type().is_symlink() {
                format!("symlink {:?} {times}", fs::read_link(&path).unwrap())
            } else {
                let sha = hex::encode(Sha256::digest(fs::read(&path).unwrap()));
                format!(
                    "file {:o} {times} {} {sha} nlink {}",
                    m.mode() & 0o7777,
                    m.len(),
                    m.nlink()
                )
            };
            out.insert(rel, (desc, m.ino()));
        }
    }
    let mut all = BTreeMap::new();
    walk(root, root, &mut all);
    let mut by_inode: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (rel, (desc, ino)) in &all {
        if desc.starts_with("file") {
            by_inode.entry(*ino).or_default().push(rel.clone());
        }
    }
    let shared = by_inode.into_values().filter(|v| v.len() > 1).collect();
    (all.into_iter().map(|(k, (d, _))| (k, d)).collect(), shared)
}

/// Makes a restored tree deletable again (it holds read-only directories).
fn writable(root: &Path) {
    for e in fs::read_dir(root).unwrap() {
        let path = e.unwrap().path();
        let m = fs::symlink_metadata(&path).unwrap();
        if m.is_dir() {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            writable(&path);
        }
    }
}

#[tokio::test]
async fn a_window_of_three_chunk_references_restores_the_same_tree_as_the_default() {
    let (store, index, want) = sample().await;
    let whole = tempfile::tempdir().unwrap();
    let a = restore_volume(
        store.reader(),
        Arc::new(index.clone()),
        whole.path().to_owned(),
        options(RestoreOptions::default().window_chunks),
    )
    .await
    .unwrap();
    let (expected, shared) = snapshot(whole.path());
    assert_eq!(shared, vec![vec!["d/big".to_owned(), "d/hl".to_owned()]]);
    for (path, content) in &want {
        assert_eq!(
            &fs::read(whole.path().join(path)).unwrap(),
            content,
            "{path}"
        );
    }
    assert_eq!(expected["d"], "dir 755 100.123456789");
    assert_eq!(expected["d/ro"], "dir 555 103.123456789");
    assert_eq!(expected["e"], "dir 700 -5.123456789");
    assert!(expected["d/ro/f"].starts_with("file 444 104.123456789 "));
    assert_eq!(expected["d/zlink"], "symlink \"big\" 50.123456789");
    assert_eq!(expected["e/abs"], "symlink \"/etc/passwd\" 50.123456789");
    let sparse = fs::metadata(whole.path().join("d/sparse")).unwrap();
    assert!(
        sparse.blocks() * 512 < sparse.len(),
        "sparse file restored sparse"
    );
    assert_eq!(
        (a.files, a.dirs, a.symlinks, a.hard_links),
        (6, 4, 2, 1),
        "{a:?}"
    );
    let data: u64 = want
        .iter()
        .filter(|(p, _)| *p != "d/hl")
        .map(|(_, c)| c.len() as u64)
        .sum();
    assert_eq!(a.bytes_written, data - 4096 - 8192, "holes are not written");

    for window in [1, 2, 3, 5] {
        let small = tempfile::tempdir().unwrap();
        let b = restore_file(&store, &index, small.path(), window)
            .await
            .unwrap();
        assert_eq!(
            snapshot(small.path()),
            (expected.clone(), shared.clone()),
            "window of {window}"
        );
        assert_eq!(
            (b.files, b.dirs, b.symlinks, b.hard_links, b.bytes_written),
            (a.files, a.dirs, a.symlinks, a.hard_links, a.bytes_written)
        );
        assert!(b.reads > a.reads, "reads do not merge across windows");
        writable(small.path());
    }
    writable(whole.path());
}

#[tokio::test]
async fn windows_hold_at_most_their_budget_and_cut_files_anywhere() {
    let (_, index, _) = sample().await;
    let written = index.write_file().unwrap();
    let target = tempfile::tempdir().unwrap();
    let opts = options(3);
    let mut tree = Tree::open(
        &written.path,
        target.path().to_owned(),
        &opts,
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    let mut uses = 0;
    let mut cut_inside_a_file = 0;
    let mut finished = Vec::new();
    while !tree.done {
        let w = tree.next_window().unwrap();
        // An event adds at most two items (a chunk, and its file's row in the window).
        assert!(w.items() <= 3 + 1, "{w:?}");
        assert!(
            w.uses
                .windows(2)
                .all(|p| p[0].chunk_key() <= p[1].chunk_key())
        );
        let covered: usize = w.reads.iter().map(|r| r.uses.len()).sum();
        assert_eq!(covered, w.uses.len());
        cut_inside_a_file += usize::from(tree.open.is_some());
        uses += w.uses.len();
        finished.extend(w.finished.iter().map(|(f, _)| f.rel.clone()));
    }
    assert_eq!(uses, index.files().map(|f| f.chunks.len()).sum::<usize>());
    assert!(cut_inside_a_file > 2, "{cut_inside_a_file}");
    let files: Vec<String> = index.files().map(|f| f.path.clone()).collect();
    assert_eq!(finished, files);
}

/// Many harmless files, so that whatever follows them comes in a later window.
fn padding(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| file(&format!("pad/f{i:03}"), meta(0o644, 1), vec![], vec![]))
        .collect()
}

fn hostile(entries: Vec<Entry>) -> VolumeIndex {
    let mut index = VolumeIndex::new(RepoConfig::new_default().chunker);
    index.entries = entries;
    index
}

/// Restores `index` streamed, with a window of 2, into `outer/target`; returns the error and
/// what now exists in `outer` besides the target.
async fn restore_hostile(index: VolumeIndex) -> (MoverError, tempfile::TempDir, Vec<String>) {
    let outer = tempfile::tempdir().unwrap();
    let target = outer.path().join("target");
    fs::create_dir(&target).unwrap();
    let err = restore_file(&memory(), &index, &target, 2)
        .await
        .unwrap_err();
    let outside = fs::read_dir(outer.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "target")
        .collect();
    (err, outer, outside)
}

#[tokio::test]
async fn a_malformed_entry_in_a_later_window_is_refused_before_anything_is_written() {
    let mut entries = vec![dir("pad", meta(0o755, 1))];
    entries.extend(padding(20));
    entries.push(file("../x", meta(0o644, 1), vec![], vec![]));
    let (err, outer, outside) = restore_hostile(hostile(entries)).await;
    assert!(
        matches!(&err, MoverError::UnsafePath { entry, .. } if entry == "../x"),
        "{err}"
    );
    assert!(outside.is_empty(), "{outside:?}");
    // The checking pass refused the index: not even the first window was written.
    assert_eq!(
        fs::read_dir(outer.path().join("target")).unwrap().count(),
        0
    );

    let mut entries = padding(20);
    entries.push(file(
        "late",
        meta(0o644, 1),
        vec![],
        vec![ChunkRef {
            id: ChunkId([1; 32]),
            pack: 3,
            offset: 0,
            length: 1,
            size: 1,
        }],
    ));
    let (err, _, outside) = restore_hostile(hostile(entries)).await;
    assert!(
        matches!(&err, MoverError::BadFileEntry { entry, .. } if entry == "late"),
        "{err}"
    );
    assert!(outside.is_empty(), "{outside:?}");
}

#[tokio::test]
async fn a_path_through_a_symlink_of_an_earlier_window_is_refused_naming_both() {
    let mut entries = vec![symlink("escape", ".."), dir("pad", meta(0o755, 1))];
    entries.extend(padding(20));
    entries.push(file("escape/pwned", meta(0o644, 1), vec![], vec![]));
    let (err, outer, outside) = restore_hostile(hostile(entries)).await;
    assert!(
        matches!(&err, MoverError::ThroughSymlink { entry, link } if entry == "escape/pwned" && link == "escape"),
        "{err}"
    );
    assert!(outside.is_empty(), "{outside:?}");
    // The symlink itself was never made: only its placeholder, which leads nowhere.
    let left = fs::read_link(outer.path().join("target/escape")).unwrap();
    assert_eq!(left, Path::new(PLACEHOLDER));
}

#[tokio::test]
async fn a_symlink_listed_after_entries_under_it_is_refused() {
    let mut entries = vec![dir("pad", meta(0o755, 1))];
    entries.extend(padding(5));
    entries.push(file("d/x", meta(0o644, 1), vec![], vec![]));
    entries.extend(padding(5).into_iter().map(|e| match e {
        Entry::File(mut f) => {
            f.path = format!("{}b", f.path);
            Entry::File(f)
        }
        e => e,
    }));
    entries.push(symlink("d", ".."));
    let (err, outer, outside) = restore_hostile(hostile(entries)).await;
    assert!(
        matches!(&err, MoverError::ThroughSymlink { entry, link } if entry == "d/x" && link == "d"),
        "{err}"
    );
    assert!(outside.is_empty(), "{outside:?}");
    assert!(
        fs::symlink_metadata(outer.path().join("target/d"))
            .unwrap()
            .is_dir()
    );
}

#[tokio::test]
async fn hard_links_to_anything_but_an_earlier_file_are_refused() {
    for (target, why) in [
        ("later", "a file listed later"),
        ("s", "a symlink"),
        ("dir", "a directory"),
        ("missing", "nothing"),
        ("s/x", "a path through a symlink"),
        ("../f", "a path out of the target"),
    ] {
        let mut entries = vec![
            dir("dir", meta(0o755, 1)),
            symlink("s", "dir"),
            dir("pad", meta(0o755, 1)),
        ];
        entries.extend(padding(6));
        entries.push(hard_link("link", target));
        entries.push(file("later", meta(0o644, 1), vec![], vec![]));
        let (err, outer, outside) = restore_hostile(hostile(entries)).await;
        assert!(
            matches!(&err, MoverError::BadHardLink { entry, target: t } if entry == "link" && t == target),
            "{why}: {err}"
        );
        assert!(outside.is_empty(), "{why}: {outside:?}");
        assert!(!outer.path().join("target/link").exists(), "{why}");
    }
}

#[tokio::test]
async fn a_corrupted_chunk_in_a_later_window_is_named_with_its_file() {
    let (store, mut index, _) = sample().await;
    // The last file's first chunk claims another chunk's id.
    let Some(Entry::File(f)) = index.entries.last_mut() else {
        panic!("the sample ends with a file");
    };
    f.chunks[0].id = ChunkId([9; 32]);
    let target = tempfile::tempdir().unwrap();
    let err = restore_file(&store, &index, target.path(), 2)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, MoverError::CorruptChunk { file, .. } if file == "top"),
        "{err}"
    );
    writable(target.path());
}

#[test]
fn spools_read_back_forward_and_backward() {
    let mut s = spool::Spool::new().unwrap();
    let names: Vec<String> = (0..1000)
        .map(|i| format!("d{i}\n\u{e9}\"{}", "x".repeat(i % 7)))
        .collect();
    for n in &names {
        s.push(n).unwrap();
    }
    let mut back = Vec::new();
    s.backward(|n: String| {
        back.push(n);
        Ok(())
    })
    .unwrap();
    back.reverse();
    assert_eq!(back, names);
    let mut s = spool::Spool::new().unwrap();
    for n in &names {
        s.push(n).unwrap();
    }
    let mut fwd = Vec::new();
    s.forward(|n: String| {
        fwd.push(n);
        Ok(())
    })
    .unwrap();
    assert_eq!(fwd, names);
}

#[test]
fn verified_directories_are_the_ancestors_of_the_last_entry_only() {
    let target = tempfile::tempdir().unwrap();
    let mut v = VerifiedDirs::default();
    v.ensure_parent(target.path(), "a/b/c/f").unwrap();
    assert_eq!(v.chain, ["a", "a/b", "a/b/c"]);
    v.ensure_parent(target.path(), "a/x/g").unwrap();
    assert_eq!(v.chain, ["a", "a/x"]);
    v.verified("a/x/y");
    assert_eq!(v.chain, ["a", "a/x", "a/x/y"]);
    v.ensure_parent(target.path(), "top").unwrap();
    assert_eq!(
        v.chain,
        ["a", "a/x", "a/x/y"],
        "a top-level entry verifies nothing"
    );
    std::os::unix::fs::symlink("/", target.path().join("l")).unwrap();
    let err = v.ensure_parent(target.path(), "l/z/f").unwrap_err();
    assert!(
        matches!(&err, MoverError::ThroughSymlink { entry, link } if entry == "l/z/f" && link == "l"),
        "{err}"
    );
}
