//! One module per command: each turns parsed args into library calls and renders the result.

pub mod backup;
pub mod describe;
pub mod doctor;
pub mod list;
pub mod restore;
pub mod sim;
pub mod verify;

use anyhow::Context as _;

use super::{Context, Exit};
use crate::repo::RepoReader;
use crate::storage;

/// A command whose issue has not landed: says so plainly and fails.
pub fn pending(command: &str, issue: u32) -> anyhow::Result<Exit> {
    anyhow::bail!(
        "`lifeboat {command}` is not available in lifeboat {} yet (tracked in issue #{issue}); \
         `lifeboat --help` lists what this build can do",
        env!("CARGO_PKG_VERSION")
    )
}

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
