//! Choosing the restore point: the newest backup that is complete *on the location being read*.

use serde::Serialize;

use super::RestoreError;
use crate::repo::{BackupName, Manifest, RepoReader, VerifyOptions};
use crate::storage::ReplicationStatus;

/// A newer backup passed over because it is not completely replicated here.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PassedOver {
    /// The backup.
    pub name: String,
    /// Objects its manifest names.
    pub total: usize,
    /// Objects not (yet) present here.
    pub missing: usize,
    /// Whether the location read is a replica (configured `readOnly: true`): only there may an
    /// absent object still arrive; elsewhere it is lost.
    #[serde(skip)]
    pub replica: bool,
}

impl PassedOver {
    /// What the absent objects are: on a replica they may still arrive, elsewhere they are gone.
    pub fn absent(&self) -> &'static str {
        if self.replica {
            "not yet replicated"
        } else {
            "missing"
        }
    }
}

impl std::fmt::Display for PassedOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} of {} objects {}",
            self.name,
            self.missing,
            self.total,
            self.absent()
        )
    }
}

/// The chosen restore point and how much data its use loses.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestorePoint {
    /// The backup.
    pub name: String,
    /// When its snapshot began: changes after this are not in it.
    pub taken_at: jiff::Timestamp,
    /// Newer backups that were not usable, and why.
    pub passed_over: Vec<PassedOver>,
    /// Replication state of an RA-GRS secondary endpoint, if that is what is read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationStatus>,
    /// The data-loss window if the primary were lost now: seconds since `taken_at`.
    pub rpo_seconds: i64,
    /// Whether it was used although incomplete (`--allow-incomplete`).
    pub incomplete: bool,
}

/// Picks `wanted`, or the newest complete backup. A named incomplete backup is refused unless
/// `allow_incomplete`. `replica` says whether the location is a replica (see
/// [`PassedOver::replica`]).
pub async fn choose(
    repo: &RepoReader,
    wanted: Option<&BackupName>,
    allow_incomplete: bool,
    replica: bool,
) -> Result<(Manifest, RestorePoint), RestoreError> {
    let repo_err = |what| move |source| RestoreError::Repo { what, source };
    let replication = repo.store().replication_status().await.ok().flatten();
    let point = |m: &Manifest, passed_over: Vec<PassedOver>, incomplete: bool| RestorePoint {
        name: m.name.to_string(),
        taken_at: m.started_at,
        passed_over,
        replication: replication.clone(),
        rpo_seconds: jiff::Timestamp::now().as_second() - m.started_at.as_second(),
        incomplete,
    };
    if let Some(name) = wanted {
        let m = repo
            .manifest(name)
            .await
            .map_err(repo_err("reading the backup's manifest"))?;
        let c = repo
            .check(&m, VerifyOptions::default())
            .await
            .map_err(repo_err("checking completeness"))?;
        if !c.is_complete() && !allow_incomplete {
            return Err(RestoreError::Incomplete(PassedOver {
                name: name.to_string(),
                total: c.total,
                missing: c.total - c.present(),
                replica,
            }));
        }
        let p = point(&m, vec![], !c.is_complete());
        return Ok((m, p));
    }
    let mut listings = repo
        .list_backups()
        .await
        .map_err(repo_err("listing backups"))?;
    listings.reverse(); // newest first
    let mut passed_over = Vec::new();
    for l in listings {
        let m = l.manifest;
        let c = repo
            .check(&m, VerifyOptions::default())
            .await
            .map_err(repo_err("checking completeness"))?;
        if c.is_complete() {
            let p = point(&m, passed_over, false);
            return Ok((m, p));
        }
        tracing::info!(backup = %m.name, missing = c.total - c.present(), "incomplete here; trying an older one");
        passed_over.push(PassedOver {
            name: m.name.to_string(),
            total: c.total,
            missing: c.total - c.present(),
            replica,
        });
    }
    Err(RestoreError::NoRestorePoint {
        location: repo.store().location().to_owned(),
        passed_over,
    })
}
