//! The backup pipeline: numbered jobs from the walker, hashed and compressed on all cores, put
//! back in walk order by the packer, which places new chunks into packs and writes the index
//! spool as it goes. In an encrypted repository a full pack's chunks are then laid out in a
//! keyed random order (issue 17) and the references into it already spooled are moved there.
//! A full pack goes to the sealer, which names it (sha256) and, in an encrypted repository,
//! encrypts it while the packer fills the next one: the packer is the one serial stage, so it
//! does no whole-pack pass over the bytes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use super::super::chunker::{ChunkId, ChunkerConfig};
use super::super::known::{KnownChunks, PackTable};
use super::super::{MoverError, Result};
use super::messages::{Event, Job, Work};
use super::parent::ParentCursor;
use super::walk::Walker;
use super::{BackupOptions, BackupStats};
use crate::repo::crypto::ChunkKey;
use crate::repo::index::{ChunkRef, IndexWriter, PackRef, WrittenIndex};
use crate::repo::pack::{FinishedPack, PackBuilder, encode_chunk};

/// References into the open pack, remembered until it is shuffled: beyond this many (one chunk
/// repeated all over a volume), the pack is closed early to keep memory bounded.
const MAX_OPEN_REFS: usize = 1 << 20;

enum Hashed {
    /// In the repository already.
    Known {
        id: ChunkId,
        size: u32,
        pack_row: u32,
        offset: u32,
        length: u32,
    },
    /// Not seen before: stored form attached.
    New {
        id: ChunkId,
        size: u32,
        stored: Vec<u8>,
    },
    /// Stored earlier in this run, as far as the worker saw: raw data kept in case the cache
    /// has forgotten it by the time the packer places it.
    Dup {
        id: ChunkId,
        data: Vec<u8>,
    },
    Events(Vec<Event>),
    Failed(MoverError),
}

/// Chunks stored earlier in this run and where: two generations of a fixed size, the older
/// dropped when the newer fills, so memory is bounded and recent chunks (the likeliest repeats)
/// are remembered.
pub(super) struct RunCache {
    young: HashMap<ChunkId, (u32, u32, u32)>,
    old: HashMap<ChunkId, (u32, u32, u32)>,
    cap: usize,
}

impl RunCache {
    pub(super) fn new(budget: usize) -> Self {
        // A hashbrown slot: 32 + 12 bytes, one control byte; two tables of 2^k slots each,
        // filled to 7/8.
        let slots = ((budget / 2 / 45).max(16) + 1).next_power_of_two() / 2;
        let cap = slots / 8 * 7;
        Self {
            young: HashMap::with_capacity(cap),
            old: HashMap::new(),
            cap,
        }
    }

    fn get(&self, id: &ChunkId) -> Option<(u32, u32, u32)> {
        self.young.get(id).or_else(|| self.old.get(id)).copied()
    }

    /// A chunk of a pack whose chunks were shuffled: its new place, if still remembered.
    fn relocate(&mut self, id: &ChunkId, at: (u32, u32, u32)) {
        if let Some(v) = self.young.get_mut(id).or_else(|| self.old.get_mut(id)) {
            *v = at;
        }
    }

    fn insert(&mut self, id: ChunkId, at: (u32, u32, u32)) {
        if self.young.len() >= self.cap {
            let mut fresh = std::mem::take(&mut self.old);
            fresh.clear();
            self.old = std::mem::replace(&mut self.young, fresh);
        }
        self.young.insert(id, at);
    }
}

/// Runs walker, workers and packer; returns the written index, its pack table and the figures.
pub(super) fn run(
    source: &Path,
    opts: &BackupOptions,
    chunker: ChunkerConfig,
    mut parent: Option<ParentCursor>,
    known: &KnownChunks,
    pack_tx: tokio::sync::mpsc::Sender<FinishedPack>,
) -> Result<(WrittenIndex, Vec<PackRef>, BackupStats)> {
    let workers = opts.workers.max(1);
    let (job_tx, job_rx) = sync_channel::<Job>(workers * 2);
    let (hashed_tx, hashed_rx) = sync_channel::<(u64, Hashed)>(workers * 2);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let cache = Mutex::new(RunCache::new(opts.run_cache_bytes));
    let parent_packs = parent
        .as_mut()
        .map(ParentCursor::take_packs)
        .unwrap_or_default();
    let index = IndexWriter::new().map_err(|source| MoverError::Spool {
        what: "the new volume index",
        source,
    })?;
    std::thread::scope(|s| {
        // Owned by this closure, so an early return drops it and idle workers end before the
        // scope joins them.
        let job_tx = job_tx;
        for _ in 0..workers {
            let job_rx = job_rx.clone();
            let hashed_tx = hashed_tx.clone();
            let cache = &cache;
            let level = opts.zstd_level;
            let chunk_key = opts.seal.as_ref().map(|k| k.chunk_key());
            std::thread::Builder::new()
                .name("mover-hash".into())
                .spawn_scoped(s, move || {
                    hash_worker(&job_rx, hashed_tx, known, cache, level, chunk_key)
                })
                .map_err(|source| MoverError::Thread { source })?;
        }
        // Only workers may hold the job receiver: if they stop, the walker's send must fail.
        drop(job_rx);
        drop(hashed_tx);
        // A rendezvous: one pack sealed while the next fills, so memory holds at most one
        // pack more than when the packer sealed its own.
        let (seal_tx, seal_rx) = sync_channel::<(PackBuilder, u32)>(0);
        let seal = opts.seal.as_ref();
        let sealer = std::thread::Builder::new()
            .name("mover-seal".into())
            .spawn_scoped(s, move || seal_packs(&seal_rx, seal, &pack_tx))
            .map_err(|source| MoverError::Thread { source })?;
        let packer = Packer {
            index,
            table: PackTable::default(),
            known,
            known_rows: HashMap::new(),
            parent_packs: &parent_packs,
            parent_rows: HashMap::new(),
            cache: &cache,
            level: opts.zstd_level,
            current: None,
            target: opts.pack_target,
            order_key: opts.seal.as_ref().map(|k| k.chunk_key()),
            open_refs: Vec::new(),
            tx: seal_tx,
        };
        let packer = std::thread::Builder::new()
            .name("mover-pack".into())
            .spawn_scoped(s, move || packer.run(hashed_rx))
            .map_err(|source| MoverError::Thread { source })?;
        let walked = Walker::new(source, opts, chunker, parent, job_tx).walk();
        let packed = packer.join().expect("packer does not panic");
        // The packer has dropped its sender: the sealer ends once it has shipped the last pack.
        let sealed = sealer.join().expect("sealer does not panic");
        let mut stats = walked?;
        // A sealing or upload failure stops the packer with `UploadStopped`: report the cause.
        let sealed = sealed?;
        let (index, mut table, p) = packed?;
        for (row, pack) in sealed {
            table.fill(row, pack);
        }
        let packs = table.packs;
        stats.new_chunks = p.new_chunks;
        stats.new_bytes = p.new_bytes;
        stats.new_stored_bytes = p.new_stored_bytes;
        stats.reused_chunks = p.reused_chunks;
        stats.reused_bytes = p.reused_bytes;
        let written = index
            .finish(&opts.chunker, &packs)
            .map_err(|source| MoverError::Spool {
                what: "the new volume index",
                source,
            })?;
        Ok((written, packs, stats))
    })
}

fn hash_worker(
    jobs: &Mutex<Receiver<Job>>,
    out: SyncSender<(u64, Hashed)>,
    known: &KnownChunks,
    cache: &Mutex<RunCache>,
    level: Option<i32>,
    chunk_key: Option<&crate::repo::crypto::ChunkKey>,
) {
    loop {
        // The lock is held only to take one job, not while hashing.
        let job = match jobs.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        let msg = match job.work {
            Work::Events(e) => Hashed::Events(e),
            Work::Chunk(data) => classify(data, known, cache, level, chunk_key),
        };
        if out.send((job.seq, msg)).is_err() {
            return;
        }
    }
}

fn classify(
    data: Vec<u8>,
    known: &KnownChunks,
    cache: &Mutex<RunCache>,
    level: Option<i32>,
    chunk_key: Option<&crate::repo::crypto::ChunkKey>,
) -> Hashed {
    // Keyed in an encrypted repository: the id then reveals nothing about the content.
    let id = match chunk_key {
        Some(k) => k.chunk_id(&data),
        None => ChunkId::of(&data),
    };
    let size = data.len() as u32;
    match known.get(&id) {
        Ok(Some(loc)) => {
            return Hashed::Known {
                id,
                size,
                pack_row: loc.pack_row,
                offset: loc.offset,
                length: loc.length,
            };
        }
        Ok(None) => {}
        Err(source) => {
            return Hashed::Failed(MoverError::Spool {
                what: "the known-chunk set",
                source,
            });
        }
    }
    if cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
        .is_some()
    {
        return Hashed::Dup { id, data };
    }
    let stored = match level {
        Some(l) => encode_chunk(&data, l),
        None => data,
    };
    Hashed::New { id, size, stored }
}

#[derive(Default)]
struct Placed {
    new_chunks: u64,
    new_bytes: u64,
    new_stored_bytes: u64,
    reused_chunks: u64,
    reused_bytes: u64,
}

struct Packer<'a> {
    index: IndexWriter,
    table: PackTable,
    known: &'a KnownChunks,
    /// Known-set pack row → this index's pack row.
    known_rows: HashMap<u32, u32>,
    parent_packs: &'a [PackRef],
    /// Parent pack row → this index's pack row.
    parent_rows: HashMap<u32, u32>,
    cache: &'a Mutex<RunCache>,
    level: Option<i32>,
    /// The pack being filled and its reserved row.
    current: Option<(PackBuilder, u32)>,
    target: usize,
    /// Encrypted repository: the key that orders each pack's chunks.
    order_key: Option<&'a ChunkKey>,
    /// With `order_key`: the spooled references into the open pack (number, offset given).
    open_refs: Vec<(u64, u32)>,
    /// Full packs and their reserved rows, to the sealer.
    tx: SyncSender<(PackBuilder, u32)>,
}

impl Packer<'_> {
    /// Takes hashed jobs in any order and handles them in walk order.
    fn run(mut self, rx: Receiver<(u64, Hashed)>) -> Result<(IndexWriter, PackTable, Placed)> {
        let mut placed = Placed::default();
        let mut pending: BTreeMap<u64, Hashed> = BTreeMap::new();
        let mut next = 0u64;
        for (seq, h) in rx {
            pending.insert(seq, h);
            while let Some(h) = pending.remove(&next) {
                next += 1;
                self.handle(h, &mut placed)?;
            }
        }
        if !pending.is_empty() {
            return Err(MoverError::UploadStopped);
        }
        if let Some((b, row)) = self.current.take() {
            self.ship(b, row)?;
        }
        Ok((self.index, self.table, placed))
    }

    fn spool<T>(r: std::io::Result<T>) -> Result<T> {
        r.map_err(|source| MoverError::Spool {
            what: "the new volume index",
            source,
        })
    }

    fn handle(&mut self, h: Hashed, placed: &mut Placed) -> Result<()> {
        match h {
            Hashed::Failed(e) => return Err(e),
            Hashed::Events(events) => {
                for e in events {
                    self.event(e, placed)?;
                }
            }
            Hashed::Known {
                id,
                size,
                pack_row,
                offset,
                length,
            } => {
                let pack = row_in(
                    &mut self.table,
                    &mut self.known_rows,
                    pack_row,
                    self.known.pack(pack_row),
                )
                .ok_or_else(|| MoverError::Internal {
                    what: format!("known chunk {id} names no pack"),
                })?;
                self.reuse(
                    ChunkRef {
                        id,
                        pack,
                        offset,
                        length,
                        size,
                    },
                    placed,
                )?;
            }
            Hashed::New { id, size, stored } => self.place(id, size, stored, placed)?,
            Hashed::Dup { id, data } => {
                let size = data.len() as u32;
                // Forgotten since the worker looked: store it (again), compressed here.
                let stored = match self.level {
                    Some(l) => encode_chunk(&data, l),
                    None => data,
                };
                self.place(id, size, stored, placed)?;
            }
        }
        Ok(())
    }

    fn event(&mut self, e: Event, placed: &mut Placed) -> Result<()> {
        match e {
            Event::Entry(e) => Self::spool(self.index.push(e))?,
            Event::FileStart(f) => Self::spool(self.index.begin_file(f))?,
            Event::FileEnd(size) => Self::spool(self.index.end_file(size))?,
            Event::Adopt(chunks) => {
                for c in chunks {
                    let pack = row_in(
                        &mut self.table,
                        &mut self.parent_rows,
                        c.pack,
                        self.parent_packs.get(c.pack as usize),
                    )
                    .ok_or_else(|| MoverError::Internal {
                        what: format!("parent chunk {} names no pack", c.id),
                    })?;
                    self.reuse(ChunkRef { pack, ..c }, placed)?;
                }
            }
        }
        Ok(())
    }

    fn reuse(&mut self, c: ChunkRef, placed: &mut Placed) -> Result<()> {
        placed.reused_chunks += 1;
        placed.reused_bytes += u64::from(c.size);
        let number = Self::spool(self.index.chunk(&c))?;
        self.remember(number, &c)
    }

    /// Keeps a reference into the open pack until its chunks are shuffled.
    fn remember(&mut self, number: u64, c: &ChunkRef) -> Result<()> {
        let Some((_, row)) = &self.current else {
            return Ok(());
        };
        if self.order_key.is_none() || c.pack != *row {
            return Ok(());
        }
        self.open_refs.push((number, c.offset));
        if self.open_refs.len() >= MAX_OPEN_REFS
            && let Some((b, row)) = self.current.take()
        {
            self.ship(b, row)?;
        }
        Ok(())
    }

    /// Places a chunk unless this run stored it already (then it is referenced).
    fn place(
        &mut self,
        id: ChunkId,
        size: u32,
        stored: Vec<u8>,
        placed: &mut Placed,
    ) -> Result<()> {
        let seen = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id);
        if let Some((pack, offset, length)) = seen {
            return self.reuse(
                ChunkRef {
                    id,
                    pack,
                    offset,
                    length,
                    size,
                },
                placed,
            );
        }
        let (builder, row) = match &mut self.current {
            Some(c) => c,
            None => {
                let row = self.table.reserve();
                self.current
                    .insert((PackBuilder::with_capacity(self.target + (1 << 20)), row))
            }
        };
        let row = *row;
        let e = builder.add(id, size, &stored);
        let full = builder.len() >= self.target;
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, (row, e.offset, e.length));
        placed.new_chunks += 1;
        placed.new_bytes += u64::from(size);
        placed.new_stored_bytes += stored.len() as u64;
        let r = ChunkRef {
            id,
            pack: row,
            offset: e.offset,
            length: e.length,
            size,
        };
        let number = Self::spool(self.index.chunk(&r))?;
        self.remember(number, &r)?;
        if full && let Some((b, row)) = self.current.take() {
            self.ship(b, row)?;
        }
        Ok(())
    }

    fn ship(&mut self, mut b: PackBuilder, row: u32) -> Result<()> {
        if let Some(key) = self.order_key {
            self.shuffle(key, &mut b, row)?;
        }
        self.tx
            .send((b, row))
            .map_err(|_| MoverError::UploadStopped)
    }

    /// Lays the full pack's chunks out in an order drawn from the chunk-id key and its chunks
    /// (unpredictable without the key), and moves the references already spooled.
    fn shuffle(&mut self, key: &ChunkKey, b: &mut PackBuilder, row: u32) -> Result<()> {
        let mut ids = Vec::with_capacity(32 + 32 * b.entries().len());
        ids.extend_from_slice(b"lifeboat pack order\0");
        for e in b.entries() {
            ids.extend_from_slice(&e.id.0);
        }
        let seed = u64::from_le_bytes(key.chunk_id(&ids).0[..8].try_into().unwrap_or_default());
        let moved = b.shuffle(seed);
        let to: HashMap<u32, u32> = moved.iter().map(|m| (m.from, m.to)).collect();
        let refs = std::mem::take(&mut self.open_refs);
        let moves = refs
            .into_iter()
            .map(|(number, from)| {
                to.get(&from)
                    .map(|&t| (number, t))
                    .ok_or_else(|| MoverError::Internal {
                        what: format!("a reference into pack row {row} names no chunk at {from}"),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::spool(self.index.move_chunks(moves))?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        for e in b.entries() {
            cache.relocate(&e.id, (row, e.offset, e.length));
        }
        Ok(())
    }
}

/// Names (and, with a writer key, encrypts) each full pack and hands it to the uploads; returns
/// the name of each pack's reserved row.
fn seal_packs(
    rx: &Receiver<(PackBuilder, u32)>,
    seal: Option<&crate::repo::crypto::WriterKey>,
    tx: &tokio::sync::mpsc::Sender<FinishedPack>,
) -> Result<Vec<(u32, PackRef)>> {
    let mut named = Vec::new();
    for (b, row) in rx {
        let p = b
            .finish_sealed(seal)
            .map_err(|e| MoverError::Seal(e.to_string()))?;
        named.push((
            row,
            PackRef {
                id: p.id.clone(),
                size: p.bytes.len() as u64,
            },
        ));
        tx.blocking_send(p).map_err(|_| MoverError::UploadStopped)?;
    }
    Ok(named)
}

/// The row in `table` of pack `row` of another table (`pack`), remembered in `seen`.
fn row_in(
    table: &mut PackTable,
    seen: &mut HashMap<u32, u32>,
    row: u32,
    pack: Option<&PackRef>,
) -> Option<u32> {
    if let Some(&r) = seen.get(&row) {
        return Some(r);
    }
    let r = table.intern(pack?);
    seen.insert(row, r);
    Some(r)
}
