//! From a configured location to a backend, chosen by the location's kind (as rustic's
//! `choose.rs` chooses by URL scheme).

use std::sync::Arc;

use bytes::Bytes;

use super::azure::AzureBackend;
use super::local::LocalBackend;
use super::{ObjectWrite, PutOutcome, Reader, Result, StorageError, Writer};
use crate::config::{Location, LocationKind};

/// Opens location `name` for reading. Works on read-only locations.
pub fn open_reader(name: &str, loc: &Location) -> Result<Reader> {
    Ok(Reader::new(backend(name, loc)?))
}

/// Opens location `name` for reading and writing; a location configured `readOnly: true` is
/// refused with [`StorageError::ReadOnly`].
pub fn open_writer(name: &str, loc: &Location) -> Result<Writer> {
    if loc.read_only {
        return Err(StorageError::ReadOnly {
            location: name.to_owned(),
        });
    }
    Ok(Writer::new(backend(name, loc)?))
}

/// Observes whether location `name` accepts writes, ignoring its `readOnly` setting on purpose
/// (`lifeboat doctor` uses it to prove that a read-only location really refuses writes).
///
/// Creates and then deletes a `.lifeboat-probe-<random>` object. Returns `Ok(true)` if the write
/// succeeded, `Ok(false)` if it was refused (HTTP 401/403, a read-only or unwritable file
/// system), and `Err` for any other failure (unreachable, bad configuration).
pub async fn probe_write(name: &str, loc: &Location) -> Result<bool> {
    let backend = backend(name, loc)?;
    let key = format!(
        "{}{}",
        super::PROBE_PREFIX,
        azure_core::Uuid::new_v4().simple()
    );
    match backend
        .put_if_absent(&key, Bytes::from_static(b"lifeboat write probe\n"))
        .await
    {
        Ok(PutOutcome::Created) => {
            // Creating proved writability; a failed cleanup only leaves a tiny object behind.
            if let Err(e) = backend.delete(&key).await {
                tracing::warn!(location = name, key, error = %e, "could not delete the write probe");
            }
            Ok(true)
        }
        // A random key that exists: someone else's probe; the service still accepted a
        // conditional create, which only a writable location answers.
        Ok(PutOutcome::AlreadyExists) => Ok(true),
        Err(e) if is_refusal(&e) => {
            tracing::debug!(location = name, error = %e, "write probe refused");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Returns true if and only if the error says "you may not write here" rather than "something broke".
fn is_refusal(e: &StorageError) -> bool {
    use std::io::ErrorKind;
    match e {
        StorageError::Denied { .. } | StorageError::ReadOnly { .. } => true,
        StorageError::Io { source, .. } => {
            matches!(
                source.kind(),
                ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
            )
        }
        _ => false,
    }
}

fn backend(name: &str, loc: &Location) -> Result<Arc<dyn ObjectWrite>> {
    match loc.kind() {
        Some(LocationKind::Local(l)) => Ok(Arc::new(LocalBackend::new(&l.path))),
        Some(LocationKind::Azure(a)) => Ok(Arc::new(AzureBackend::new(name, a)?)),
        None => Err(StorageError::Config {
            location: name.to_owned(),
            reason: "neither `local` nor `azure` is set".to_owned(),
        }),
    }
}
