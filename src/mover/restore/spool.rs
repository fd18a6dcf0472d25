//! Entries a restore comes back to after all data is written (symlinks, then directories'
//! metadata, deepest first), kept in unnamed temporary files rather than in memory.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Seek, Write};
use std::os::unix::fs::FileExt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::super::{MoverError, Result};

/// Records appended in order, read back in order ([`Spool::forward`]) or last first
/// ([`Spool::backward`]). Each record is its JSON (one line: JSON strings escape newlines), then
/// a newline, then its length as 4 bytes, little-endian.
#[derive(Debug)]
pub(super) struct Spool {
    out: BufWriter<File>,
    len: u64,
    /// Records written.
    pub(super) count: u64,
}

fn spool_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("restore spool: {e}"))
}

/// A spool's I/O error, as a failure to write the restore's own temporary file.
pub(super) fn spool_io(source: io::Error) -> MoverError {
    MoverError::Write {
        path: "a restore spool in the temporary directory".into(),
        source,
    }
}

impl Spool {
    /// An empty spool in the system's temporary directory (`TMPDIR`), gone when dropped.
    pub(super) fn new() -> io::Result<Self> {
        Ok(Self {
            out: BufWriter::with_capacity(64 << 10, tempfile::tempfile()?),
            len: 0,
            count: 0,
        })
    }

    pub(super) fn push(&mut self, record: &impl Serialize) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(spool_err)?;
        line.push(b'\n');
        let n = u32::try_from(line.len()).map_err(spool_err)?;
        self.out.write_all(&line)?;
        self.out.write_all(&n.to_le_bytes())?;
        self.len += u64::from(n) + 4;
        self.count += 1;
        Ok(())
    }

    fn finish(self) -> io::Result<(File, u64)> {
        let mut file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        Ok((file, self.len))
    }

    /// Calls `f` on every record, first to last.
    pub(super) fn forward<T: DeserializeOwned>(
        self,
        mut f: impl FnMut(T) -> Result<()>,
    ) -> Result<()> {
        let (file, _) = self.finish().map_err(spool_io)?;
        let mut r = BufReader::with_capacity(64 << 10, file);
        let mut line = Vec::new();
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line).map_err(spool_io)? == 0 {
                return Ok(());
            }
            f(serde_json::from_slice(&line).map_err(|e| spool_io(spool_err(e)))?)?;
            let mut n = [0u8; 4];
            io::Read::read_exact(&mut r, &mut n).map_err(spool_io)?;
        }
    }

    /// Calls `f` on every record, last to first.
    pub(super) fn backward<T: DeserializeOwned>(
        self,
        mut f: impl FnMut(T) -> Result<()>,
    ) -> Result<()> {
        let (file, mut pos) = self.finish().map_err(spool_io)?;
        let mut buf = Vec::new();
        while pos > 0 {
            let torn = || spool_io(spool_err("torn record"));
            let mut n = [0u8; 4];
            file.read_exact_at(&mut n, pos.checked_sub(4).ok_or_else(torn)?)
                .map_err(spool_io)?;
            let n = u64::from(u32::from_le_bytes(n));
            let start = pos.checked_sub(4 + n).ok_or_else(torn)?;
            buf.resize(n as usize, 0);
            file.read_exact_at(&mut buf, start).map_err(spool_io)?;
            f(serde_json::from_slice(&buf).map_err(|e| spool_io(spool_err(e)))?)?;
            pos = start;
        }
        Ok(())
    }
}
