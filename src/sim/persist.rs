//! `--state DIR` persistence: the whole store as one JSON-lines file, replaced atomically.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::catalogue::Catalogue;
use super::lifecycle::{crd_resource_type, is_established};
use super::store::{Store, full_form};

/// Why the state could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Reading or writing the file failed.
    #[error("accessing the state file {path}")]
    Io {
        /// The state file.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a saved store.
    #[error("parsing the state file {path}")]
    Parse {
        /// The state file.
        path: PathBuf,
        /// The JSON failure.
        #[source]
        source: serde_json::Error,
    },
}

/// `<state_dir>/store.jsonl`.
pub fn state_file(state_dir: &Path) -> PathBuf {
    state_dir.join("store.jsonl")
}

/// Saves every object and the resourceVersion counter as JSON lines: a header line with the
/// counter, then one `{"group","plural","object"}` line per object. The objects' cached
/// serializations are written as they are, so a save costs I/O, not re-serialization.
pub fn save(store: &Store, path: &Path) -> Result<(), PersistError> {
    use std::io::Write as _;
    let (rv, objects) = store.snapshot();
    let tmp = path.with_extension("jsonl.tmp");
    let io = |source| PersistError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let mut out = std::io::BufWriter::new(file);
    writeln!(out, "{}", json!({"resourceVersion": rv})).map_err(io)?;
    for (rt, raw) in objects {
        let head = json!({"group": rt.group, "plural": rt.plural}).to_string();
        // `{"group":..,"plural":..` + `,"object":` + raw + `}`
        out.write_all(&head.as_bytes()[..head.len() - 1])
            .map_err(io)?;
        out.write_all(b",\"object\":").map_err(io)?;
        out.write_all(&full_form(&rt, &raw)).map_err(io)?;
        out.write_all(b"}\n").map_err(io)?;
    }
    out.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Loads a saved store, registering established CRDs' types first so their objects resolve.
/// Returns false if there is no saved state.
pub fn load(store: &Store, catalogue: &Catalogue, path: &Path) -> Result<bool, PersistError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(PersistError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let parse = |line: &[u8]| {
        serde_json::from_slice::<Value>(line).map_err(|source| PersistError::Parse {
            path: path.to_path_buf(),
            source,
        })
    };
    let mut lines = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let rv = match lines.next() {
        Some(l) => parse(l)?["resourceVersion"].as_u64().unwrap_or(1),
        None => 1,
    };
    let entries = lines.map(parse).collect::<Result<Vec<_>, _>>()?;
    for e in &entries {
        if e["group"] == "apiextensions.k8s.io"
            && e["plural"] == "customresourcedefinitions"
            && is_established(&e["object"])
            && let Some(rt) = crd_resource_type(&e["object"])
        {
            catalogue.add(rt);
        }
    }
    let mut objects = Vec::with_capacity(entries.len());
    for e in entries {
        let group = e["group"].as_str().unwrap_or_default();
        let plural = e["plural"].as_str().unwrap_or_default();
        match catalogue.find(group, plural) {
            Some(rt) => objects.push((rt, e["object"].clone())),
            None => {
                tracing::warn!(%group, %plural, "sim state holds objects of an unknown type; dropped")
            }
        }
    }
    store.load(rv, objects);
    Ok(true)
}
