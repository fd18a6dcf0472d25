//! Hostile indexes and corrupted chunks, through the command line: `mover restore` refuses and
//! names the entry or the file; `verify --deep` names the volume and the file.

use std::path::Path;
use std::sync::Arc;

use lifeboat::mover::{self, BackupOptions, KnownChunks};
use lifeboat::repo::index::VolumeIndex;
use lifeboat::repo::index::{DirNode, Entry, FileNode, Meta, Mtime, SymlinkNode};
use lifeboat::repo::{BackupName, Manifest, RepoConfig, RepoWriter, VolumeRecord, VolumeStatus};
use lifeboat::storage::Writer;
use lifeboat::storage::local::LocalBackend;

use super::dataset;
use crate::support::{lifeboat, stderr, stdout};

const CONFIG: &str = "locations:\n  l: { local: { path: repo } }\n";

async fn repo(dir: &Path) -> RepoWriter {
    std::fs::write(dir.join("lifeboat.yaml"), CONFIG).unwrap();
    let store = Writer::new(Arc::new(LocalBackend::new(dir.join("repo"))));
    RepoWriter::open_or_init(store).await.unwrap()
}

/// Commits backup `name` holding `index` as volume ns/p.
async fn commit_with_index(repo: &RepoWriter, name: &str, index: &VolumeIndex) {
    let name = BackupName::new(name).unwrap();
    let mut b = repo.begin_backup(name.clone()).await.unwrap();
    let entry = b.put_volume_index("ns", "p", index).await.unwrap();
    let mut record = VolumeRecord::new("ns", "p", VolumeStatus::Completed);
    record.index = Some(entry.key);
    let mut draft = Manifest::draft(name, jiff::Timestamp::now());
    draft.details.volumes = Some(vec![record]);
    b.commit(draft).await.unwrap();
}

fn meta() -> Meta {
    Meta {
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: Mtime(1, 0),
    }
}

fn file(path: &str) -> Entry {
    Entry::File(FileNode {
        path: path.into(),
        meta: meta(),
        size: 0,
        inode: 1,
        holes: vec![],
        chunks: vec![],
    })
}

#[tokio::test]
async fn hostile_indexes_restore_nothing_outside_the_target_and_name_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path()).await;
    let cases: Vec<(&str, Vec<Entry>, &str)> = vec![
        (
            "dotdot",
            vec![file("ok"), file("../escaped")],
            "\"../escaped\"",
        ),
        (
            "absolute",
            vec![file("/tmp/lifeboat-absolute-escape")],
            "\"/tmp/lifeboat-absolute-escape\"",
        ),
        (
            "through-symlink",
            vec![
                Entry::Symlink(SymlinkNode {
                    path: "out".into(),
                    meta: meta(),
                    target: "..".into(),
                }),
                Entry::Dir(DirNode {
                    path: "d".into(),
                    meta: meta(),
                }),
                file("out/pwned"),
            ],
            "\"out/pwned\"",
        ),
    ];
    for (name, entries, named) in cases {
        let mut index = VolumeIndex::new(RepoConfig::new_default().chunker);
        index.entries = entries;
        commit_with_index(&repo, name, &index).await;
        let outer = dir.path().join(format!("outer-{name}"));
        let target = outer.join("target");
        std::fs::create_dir_all(&target).unwrap();
        let target_arg = target.to_str().unwrap();
        let out = lifeboat(
            dir.path(),
            &[
                "mover",
                "restore",
                "--location",
                "l",
                "--backup",
                name,
                "--namespace",
                "ns",
                "--pvc",
                "p",
                "--target",
                target_arg,
            ],
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(stderr(&out).contains(named), "{name}: {}", stderr(&out));
        let outside: Vec<String> = std::fs::read_dir(&outer)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "target")
            .collect();
        assert!(
            outside.is_empty(),
            "{name} wrote outside the target: {outside:?}"
        );
    }
    assert!(!Path::new("/tmp/lifeboat-absolute-escape").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_chunk_is_named_by_volume_and_file_in_verify_deep_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path()).await;
    let source = dir.path().join("source");
    std::fs::create_dir(&source).unwrap();
    dataset::generate(&source, &dataset::Spec::small()).unwrap();
    let store = Writer::new(Arc::new(LocalBackend::new(dir.path().join("repo"))));
    let outcome = mover::backup_volume(
        source.clone(),
        store,
        BackupOptions::for_repo(repo.reader().config()),
        None,
        KnownChunks::new(),
    )
    .await
    .unwrap()
    .load_index()
    .unwrap();
    commit_with_index(&repo, "c1", &outcome).await;

    let out = lifeboat(dir.path(), &["verify", "c1", "--deep", "-o", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "intact: {}{}",
        stdout(&out),
        stderr(&out)
    );

    // Flip one byte in the middle of the stored chunk of data/secret.key.
    let f = outcome
        .files()
        .find(|f| f.path == "data/secret.key")
        .unwrap()
        .clone();
    let chunk = f.chunks[0];
    let pack = dir
        .path()
        .join("repo")
        .join(outcome.packs[chunk.pack as usize].key());
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[(chunk.offset + chunk.length / 2) as usize] ^= 0x5a;
    std::fs::write(&pack, bytes).unwrap();

    let out = lifeboat(dir.path(), &["verify", "c1", "--deep", "-o", "json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let damaged = doc["volumeData"]["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{doc}");
    assert_eq!(damaged[0]["chunk"], chunk.id.to_string());
    assert_eq!(damaged[0]["volumes"], serde_json::json!(["ns/p"]));
    assert_eq!(
        damaged[0]["files"],
        serde_json::json!(["ns/p:data/secret.key"])
    );

    let target = dir.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let out = lifeboat(
        dir.path(),
        &[
            "mover",
            "restore",
            "-l",
            "l",
            "--backup",
            "c1",
            "--namespace",
            "ns",
            "--pvc",
            "p",
            "--target",
            target.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("data/secret.key") && err.contains(&chunk.id.to_string()),
        "{err}"
    );
    assert!(err.contains("ns/p"), "{err}");
}
