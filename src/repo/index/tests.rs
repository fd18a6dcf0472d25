//! The streamed writer and reader agree with the serde types, byte for byte and entry for entry.

use super::*;
use crate::repo::ChunkId;
use crate::repo::RepoConfig;

fn meta(mode: u32) -> Meta {
    Meta {
        mode,
        uid: 1000,
        gid: 1000,
        mtime: Mtime(1_700_000_000, 5),
    }
}

fn chunk(n: u8, pack: u32) -> ChunkRef {
    ChunkRef {
        id: ChunkId([n; 32]),
        pack,
        offset: u32::from(n) * 100,
        length: 90,
        size: 4096,
    }
}

fn sample() -> VolumeIndex {
    let mut ix = VolumeIndex::new(RepoConfig::new_default().chunker);
    ix.packs = vec![
        PackRef {
            id: PackId::from_hex(&"aa".repeat(32)).unwrap(),
            size: 10,
        },
        PackRef {
            id: PackId::from_hex(&"bb".repeat(32)).unwrap(),
            size: 20,
        },
    ];
    ix.entries = vec![
        Entry::Dir(DirNode {
            path: "d".into(),
            meta: meta(0o755),
        }),
        Entry::File(FileNode {
            path: "d/a \"quoted\" ✓".into(),
            meta: meta(0o600),
            size: 8192,
            inode: 7,
            holes: vec![],
            chunks: vec![chunk(1, 0), chunk(2, 1)],
        }),
        Entry::File(FileNode {
            path: "d/empty".into(),
            meta: meta(0o644),
            size: 0,
            inode: 8,
            holes: vec![],
            chunks: vec![],
        }),
        Entry::File(FileNode {
            path: "d/sparse".into(),
            meta: meta(0o644),
            size: 1 << 20,
            inode: 9,
            holes: vec![(0, 4096), (8192, (1 << 20) - 8192)],
            chunks: vec![chunk(3, 1)],
        }),
        Entry::HardLink(HardLinkNode {
            path: "d/link".into(),
            target: "d/empty".into(),
        }),
        Entry::Symlink(SymlinkNode {
            path: "s".into(),
            meta: meta(0o777),
            target: "../x".into(),
        }),
    ];
    ix
}

#[test]
fn the_streamed_writer_writes_exactly_the_serde_json() {
    let ix = sample();
    let written = ix.write_file().unwrap();
    let bytes = written.read_all().unwrap();
    assert_eq!(
        String::from_utf8(bytes.clone()).unwrap(),
        String::from_utf8(ix.to_json()).unwrap()
    );
    assert_eq!(written.size, bytes.len() as u64);
    assert_eq!(written.chunk_refs, 3);
    use sha2::Digest;
    assert_eq!(written.sha256, hex::encode(sha2::Sha256::digest(&bytes)));
}

#[test]
fn a_file_that_shrank_gets_its_final_size() {
    let mut w = IndexWriter::new().unwrap();
    let Entry::File(mut f) = sample().entries[1].clone() else {
        unreachable!()
    };
    f.chunks.clear();
    w.begin_file(f).unwrap();
    w.chunk(&chunk(1, 0)).unwrap();
    w.end_file(Some(4096)).unwrap();
    let ix = VolumeIndex::from_json(
        &w.finish(&sample().chunker, &[])
            .unwrap()
            .read_all()
            .unwrap(),
    )
    .unwrap();
    let f = ix.files().next().unwrap();
    assert_eq!((f.size, f.chunks.len()), (4096, 1));
}

#[test]
fn the_streamed_reader_reads_what_serde_reads() {
    let ix = sample();
    let json = ix.to_json();
    assert_eq!(VolumeIndex::from_reader(&json[..]).unwrap(), ix);
    let header = read_header(&json[..]).unwrap();
    assert_eq!(header.packs, ix.packs);
    let written = ix.write_file().unwrap();
    let (h, mut stream) = IndexStream::open(&written.path).unwrap();
    assert_eq!(h.chunker, ix.chunker);
    let mut kinds = String::new();
    while let Some(e) = stream.next_event().unwrap() {
        kinds.push(match e {
            IndexEvent::Dir(_) => 'd',
            IndexEvent::FileStart(_) => '[',
            IndexEvent::Chunk(_) => 'c',
            IndexEvent::FileEnd => ']',
            IndexEvent::HardLink(_) => 'h',
            IndexEvent::Symlink(_) => 's',
        });
    }
    assert_eq!(kinds, "d[cc][][c]hs");
}

#[test]
fn an_index_in_another_order_or_version_is_refused_not_half_read() {
    let json = String::from_utf8(sample().to_json()).unwrap();
    // Size after chunks: valid JSON for serde, but not streamable.
    let moved = json.replacen("\"size\":8192,", "", 1).replacen(
        "]}},{\"file\":{\"path\":\"d/empty\"",
        "],\"size\":8192}},{\"file\":{\"path\":\"d/empty\"",
        1,
    );
    assert!(VolumeIndex::from_json(moved.as_bytes()).is_ok());
    let err = VolumeIndex::from_reader(moved.as_bytes()).unwrap_err();
    assert!(matches!(err, IndexError::Order(_)), "{err}");

    let newer = json.replacen("\"version\":1", "\"version\":9", 1);
    let err = VolumeIndex::from_reader(newer.as_bytes()).unwrap_err();
    assert!(
        matches!(err, IndexError::Unsupported { version: 9, .. }),
        "{err}"
    );

    let err =
        VolumeIndex::from_reader(&b"{\"format\":\"lifeboat-volume-index\",\"version\":1,"[..])
            .unwrap_err();
    assert!(matches!(err, IndexError::Parse(_)), "{err}");
}

#[test]
fn a_visitor_error_stops_the_read_and_comes_back_unchanged() {
    #[derive(Debug)]
    enum E {
        Mine(usize),
        Index,
    }
    impl From<IndexError> for E {
        fn from(_: IndexError) -> Self {
            E::Index
        }
    }
    struct StopAtSecond(usize);
    impl IndexVisitor for StopAtSecond {
        type Error = E;
        fn header(&mut self, _: &IndexHeader) -> Result<Flow, E> {
            Ok(Flow::Continue)
        }
        fn event(&mut self, _: IndexEvent) -> Result<(), E> {
            self.0 += 1;
            if self.0 == 2 {
                Err(E::Mine(self.0))
            } else {
                Ok(())
            }
        }
    }
    let err = read_index(&sample().to_json()[..], &mut StopAtSecond(0)).unwrap_err();
    assert!(matches!(err, E::Mine(2)), "{err:?}");
}
