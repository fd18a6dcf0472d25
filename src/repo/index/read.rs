//! Reads a volume index as a stream of events, so a 1 TB volume's index is never held whole.
//!
//! The index is one JSON object; serde's visitors walk it and hand each entry, and each chunk
//! reference of a file, to an [`IndexVisitor`] as they are parsed. That needs the order every
//! lifeboat writes (`format`, `version`, `chunker`, `packs` before `entries`; a file's `path`,
//! `meta`, `size`, `inode` and `holes` before its `chunks`); an index in another order is refused
//! as [`IndexError::Order`](super::IndexError::Order), never half-read.

use std::fmt;
use std::io::Read;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{
    ChunkRef, DirNode, FileNode, HardLinkNode, INDEX_FORMAT, INDEX_VERSION, IndexError, Meta,
    PackRef, SymlinkNode,
};
use crate::repo::ChunkerParams;

/// What precedes the entries of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexHeader {
    /// The chunker the data was cut with.
    pub chunker: ChunkerParams,
    /// The pack table chunk references point into.
    pub packs: Vec<PackRef>,
}

/// One step through an index's tree, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexEvent {
    /// A directory.
    Dir(DirNode),
    /// A symbolic link.
    Symlink(SymlinkNode),
    /// A hard link to an earlier file.
    HardLink(HardLinkNode),
    /// A regular file begins (its `chunks` are empty here and follow as [`IndexEvent::Chunk`]).
    FileStart(FileNode),
    /// The next chunk of the current file.
    Chunk(ChunkRef),
    /// The current file ends.
    FileEnd,
}

/// Whether to go on reading after the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the entries.
    Continue,
    /// Stop: only the header was wanted.
    Stop,
}

/// Receives an index as it is read.
pub trait IndexVisitor {
    /// The visitor's own error, passed through unchanged.
    type Error: From<IndexError>;
    /// Called once, before any event.
    fn header(&mut self, header: &IndexHeader) -> Result<Flow, Self::Error>;
    /// Called for each event, in tree order.
    fn event(&mut self, event: IndexEvent) -> Result<(), Self::Error>;
}

/// Reads the index from `reader` into `visitor`; returns its header.
pub fn read_index<V: IndexVisitor>(
    reader: impl Read,
    visitor: &mut V,
) -> Result<IndexHeader, V::Error> {
    let mut ctx = Ctx {
        visitor,
        failure: None,
        header: None,
        stopped: false,
    };
    let mut de = serde_json::Deserializer::from_reader(reader);
    let parsed = de::Deserializer::deserialize_map(&mut de, Top(&mut ctx));
    let parsed = parsed.and_then(|()| if ctx.stopped { Ok(()) } else { de.end() });
    if let Some(f) = ctx.failure.take() {
        return Err(match f {
            Failure::Visitor(e) => e,
            Failure::Index(e) => e.into(),
        });
    }
    if let Err(e) = parsed
        && !ctx.stopped
    {
        return Err(IndexError::Parse(e).into());
    }
    ctx.header
        .ok_or_else(|| IndexError::Order("the index has no entries list").into())
}

/// Reads only the header (format, chunker, packs) and stops before the entries.
pub fn read_header(reader: impl Read) -> Result<IndexHeader, IndexError> {
    struct HeaderOnly;
    impl IndexVisitor for HeaderOnly {
        type Error = IndexError;
        fn header(&mut self, _: &IndexHeader) -> Result<Flow, IndexError> {
            Ok(Flow::Stop)
        }
        fn event(&mut self, _: IndexEvent) -> Result<(), IndexError> {
            Ok(())
        }
    }
    read_index(reader, &mut HeaderOnly)
}

enum Failure<E> {
    Visitor(E),
    Index(IndexError),
}

struct Ctx<'v, V: IndexVisitor> {
    visitor: &'v mut V,
    failure: Option<Failure<V::Error>>,
    header: Option<IndexHeader>,
    stopped: bool,
}

impl<V: IndexVisitor> Ctx<'_, V> {
    /// Hands an event to the visitor; its error is kept and serde is stopped with a marker.
    fn emit<E: de::Error>(&mut self, e: IndexEvent) -> Result<(), E> {
        self.visitor.event(e).map_err(|err| {
            self.failure = Some(Failure::Visitor(err));
            E::custom("stopped by the visitor")
        })
    }
    fn fail<E: de::Error>(&mut self, e: IndexError) -> E {
        let msg = e.to_string();
        self.failure = Some(Failure::Index(e));
        E::custom(msg)
    }
}

struct Top<'c, 'v, V: IndexVisitor>(&'c mut Ctx<'v, V>);

impl<'de, V: IndexVisitor> Visitor<'de> for Top<'_, '_, V> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a volume index object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.0;
        let mut format: Option<String> = None;
        let mut version: Option<u32> = None;
        let mut chunker: Option<ChunkerParams> = None;
        let mut packs: Option<Vec<PackRef>> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "format" => format = Some(map.next_value()?),
                "version" => version = Some(map.next_value()?),
                "chunker" => chunker = Some(map.next_value()?),
                "packs" => packs = Some(map.next_value()?),
                "entries" => {
                    let (Some(format), Some(version)) = (format.take(), version) else {
                        return Err(
                            ctx.fail(IndexError::Order("entries before format and version"))
                        );
                    };
                    if format != INDEX_FORMAT || version > INDEX_VERSION {
                        return Err(ctx.fail(IndexError::Unsupported { format, version }));
                    }
                    let (Some(chunker), Some(packs)) = (chunker.take(), packs.take()) else {
                        return Err(ctx.fail(IndexError::Order("entries before chunker and packs")));
                    };
                    let header = IndexHeader { chunker, packs };
                    let flow = ctx.visitor.header(&header).map_err(|err| {
                        ctx.failure = Some(Failure::Visitor(err));
                        de::Error::custom("stopped by the visitor")
                    })?;
                    ctx.header = Some(header);
                    if flow == Flow::Stop {
                        ctx.stopped = true;
                        return Err(de::Error::custom("header read"));
                    }
                    map.next_value_seed(Entries(&mut *ctx))?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct Entries<'c, 'v, V: IndexVisitor>(&'c mut Ctx<'v, V>);

impl<'de, V: IndexVisitor> DeserializeSeed<'de> for Entries<'_, '_, V> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, V: IndexVisitor> Visitor<'de> for Entries<'_, '_, V> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of index entries")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(OneEntry(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

struct OneEntry<'c, 'v, V: IndexVisitor>(&'c mut Ctx<'v, V>);

impl<'de, V: IndexVisitor> DeserializeSeed<'de> for OneEntry<'_, '_, V> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, V: IndexVisitor> Visitor<'de> for OneEntry<'_, '_, V> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an index entry ({\"file\": …}, {\"dir\": …}, …)")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.0;
        let Some(kind) = map.next_key::<String>()? else {
            return Err(de::Error::custom("an empty index entry"));
        };
        match kind.as_str() {
            "dir" => {
                let d: DirNode = map.next_value()?;
                ctx.emit(IndexEvent::Dir(d))?;
            }
            "symlink" => {
                let s: SymlinkNode = map.next_value()?;
                ctx.emit(IndexEvent::Symlink(s))?;
            }
            "hardlink" => {
                let h: HardLinkNode = map.next_value()?;
                ctx.emit(IndexEvent::HardLink(h))?;
            }
            "file" => map.next_value_seed(OneFile(&mut *ctx))?,
            other => {
                return Err(de::Error::unknown_variant(
                    other,
                    &["dir", "file", "symlink", "hardlink"],
                ));
            }
        }
        if map.next_key::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("an index entry with more than one kind"));
        }
        Ok(())
    }
}

struct OneFile<'c, 'v, V: IndexVisitor>(&'c mut Ctx<'v, V>);

impl<'de, V: IndexVisitor> DeserializeSeed<'de> for OneFile<'_, '_, V> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, V: IndexVisitor> Visitor<'de> for OneFile<'_, '_, V> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a file entry")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.0;
        let mut path: Option<String> = None;
        let mut meta: Option<Meta> = None;
        let mut size: Option<u64> = None;
        let mut inode: Option<u64> = None;
        let mut holes: Vec<(u64, u64)> = Vec::new();
        let mut started = false;
        while let Some(key) = map.next_key::<String>()? {
            if started && key != "chunks" {
                return Err(ctx.fail(IndexError::Order("a file field after its chunks")));
            }
            match key.as_str() {
                "path" => path = Some(map.next_value()?),
                "meta" => meta = Some(map.next_value()?),
                "size" => size = Some(map.next_value()?),
                "inode" => inode = Some(map.next_value()?),
                "holes" => holes = map.next_value()?,
                "chunks" => {
                    if started {
                        return Err(de::Error::duplicate_field("chunks"));
                    }
                    let Some(path) = path.take() else {
                        return Err(de::Error::missing_field("path"));
                    };
                    let (Some(meta), Some(size), Some(inode)) = (meta.take(), size, inode) else {
                        return Err(ctx.fail(IndexError::Order(
                            "a file's chunks before its meta, size or inode",
                        )));
                    };
                    ctx.emit(IndexEvent::FileStart(FileNode {
                        path,
                        meta,
                        size,
                        inode,
                        holes: std::mem::take(&mut holes),
                        chunks: Vec::new(),
                    }))?;
                    started = true;
                    map.next_value_seed(Chunks(&mut *ctx))?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !started {
            return Err(de::Error::missing_field("chunks"));
        }
        ctx.emit(IndexEvent::FileEnd)
    }
}

struct Chunks<'c, 'v, V: IndexVisitor>(&'c mut Ctx<'v, V>);

impl<'de, V: IndexVisitor> DeserializeSeed<'de> for Chunks<'_, '_, V> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, V: IndexVisitor> Visitor<'de> for Chunks<'_, '_, V> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of chunk references")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(c) = seq.next_element::<ChunkRef>()? {
            self.0.emit(IndexEvent::Chunk(c))?;
        }
        Ok(())
    }
}

/// An index read on its own thread and taken event by event (the walker of a backup pulls its
/// parent's entries as it reaches them). Memory: a few batches of events in flight.
#[derive(Debug)]
pub struct IndexStream {
    rx: std::sync::mpsc::Receiver<Msg>,
    buf: std::collections::VecDeque<IndexEvent>,
    done: bool,
}

#[derive(Debug)]
enum Msg {
    Header(IndexHeader),
    Events(Vec<IndexEvent>),
    Failed(IndexError),
}

/// Events per message between the reading thread and the consumer.
const BATCH: usize = 1024;

struct Sender {
    tx: std::sync::mpsc::SyncSender<Msg>,
    batch: Vec<IndexEvent>,
}

/// The consumer went away; the reading thread just stops.
#[derive(Debug)]
enum SendError {
    Index(IndexError),
    Gone,
}

impl From<IndexError> for SendError {
    fn from(e: IndexError) -> Self {
        SendError::Index(e)
    }
}

impl IndexVisitor for Sender {
    type Error = SendError;
    fn header(&mut self, h: &IndexHeader) -> Result<Flow, SendError> {
        self.tx
            .send(Msg::Header(h.clone()))
            .map_err(|_| SendError::Gone)?;
        Ok(Flow::Continue)
    }
    fn event(&mut self, e: IndexEvent) -> Result<(), SendError> {
        self.batch.push(e);
        if self.batch.len() >= BATCH {
            let full = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
            self.tx
                .send(Msg::Events(full))
                .map_err(|_| SendError::Gone)?;
        }
        Ok(())
    }
}

impl IndexStream {
    /// Starts reading the index file at `path`; returns its header and the stream of its events.
    pub fn open(path: &std::path::Path) -> Result<(IndexHeader, Self), IndexError> {
        let file = std::fs::File::open(path).map_err(IndexError::Io)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        std::thread::Builder::new()
            .name("index-read".into())
            .spawn(move || {
                let reader = std::io::BufReader::with_capacity(256 << 10, file);
                let mut s = Sender {
                    tx,
                    batch: Vec::with_capacity(BATCH),
                };
                match read_index(reader, &mut s) {
                    Ok(_) => {
                        let rest = std::mem::take(&mut s.batch);
                        let _ = s.tx.send(Msg::Events(rest));
                    }
                    Err(SendError::Index(e)) => {
                        let _ = s.tx.send(Msg::Failed(e));
                    }
                    Err(SendError::Gone) => {}
                }
            })
            .map_err(IndexError::Io)?;
        let mut stream = Self {
            rx,
            buf: Default::default(),
            done: false,
        };
        match stream.rx.recv() {
            Ok(Msg::Header(h)) => Ok((h, stream)),
            Ok(Msg::Failed(e)) => Err(e),
            Ok(Msg::Events(_)) | Err(_) => {
                stream.done = true;
                Err(IndexError::Order("the index has no entries list"))
            }
        }
    }

    fn fill(&mut self) -> Result<(), IndexError> {
        while self.buf.is_empty() && !self.done {
            match self.rx.recv() {
                Ok(Msg::Events(b)) => self.buf.extend(b),
                Ok(Msg::Failed(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Ok(Msg::Header(_)) => {}
                Err(_) => self.done = true,
            }
        }
        Ok(())
    }

    /// The next event, or `None` at the end of the index.
    pub fn next_event(&mut self) -> Result<Option<IndexEvent>, IndexError> {
        self.fill()?;
        Ok(self.buf.pop_front())
    }

    /// The next event without taking it.
    pub fn peek(&mut self) -> Result<Option<&IndexEvent>, IndexError> {
        self.fill()?;
        Ok(self.buf.front())
    }
}
