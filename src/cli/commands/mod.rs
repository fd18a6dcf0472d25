//! One module per command: each turns parsed args into library calls and renders the result.

pub mod backup;
pub mod demo;
pub mod describe;
pub mod doctor;
pub mod list;
pub mod mover;
pub mod prune;
pub mod restore;
pub mod schedule;
pub mod sim;
pub mod verify;

use anyhow::Context as _;

use super::Context;
use crate::repo::RepoReader;
use crate::storage;

/// Opens a configured location read-only as a repository.
pub async fn open_repo_reader(
    ctx: &Context,
    location: Option<&str>,
) -> anyhow::Result<(String, RepoReader)> {
    let (name, loc) = ctx.config.location(location)?;
    let store =
        storage::open_reader(name, loc).with_context(|| format!("opening location {name:?}"))?;
    let repo = RepoReader::open(store)
        .await
        .with_context(|| format!("reading location {name:?}"))?;
    Ok((name.to_owned(), repo))
}
