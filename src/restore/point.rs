//! Choosing the restore point: the newest backup that is complete *on the location being read*,
//! Completed, and holds the data of the claims the restore creates (issue 14).

use std::collections::BTreeMap;

use serde::Serialize;

use super::RestoreError;
use crate::filter::namespace_allowed;
use crate::repo::{BackupName, Manifest, RepoReader, Unreadable, VerifyOptions, VolumeStatus};
use crate::storage::ReplicationStatus;

/// Why a newer backup was passed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PassReason {
    /// Objects it names are absent here (not yet replicated, or lost).
    Incomplete,
    /// It is PartiallyFailed (without `--allow-partial`).
    PartialBackup,
    /// It lacks the data of a claim the restore would create (without `--no-volumes`).
    NoVolumeData,
}

/// A newer backup passed over, and why.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PassedOver {
    /// The backup.
    pub name: String,
    /// Why.
    pub reason: PassReason,
    /// Objects its manifest names.
    pub total: usize,
    /// Objects not (yet) present here.
    pub missing: usize,
    /// What it lacks, in words (its warnings, the claims without data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
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
        match self.reason {
            PassReason::Incomplete => write!(
                f,
                "{}: {} of {} objects {}",
                self.name,
                self.missing,
                self.total,
                self.absent()
            ),
            PassReason::PartialBackup => write!(
                f,
                "{}: PartiallyFailed ({}); --allow-partial takes it",
                self.name,
                self.detail.as_deref().unwrap_or_default()
            ),
            PassReason::NoVolumeData => write!(
                f,
                "{}: no volume data of {}; --no-volumes restores without it",
                self.name,
                self.detail.as_deref().unwrap_or_default()
            ),
        }
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
    /// `Completed` or `PartiallyFailed`.
    pub status: &'static str,
    /// Backups whose manifest could not be read, passed over with a warning.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<Unreadable>,
}

/// How the restore point is chosen.
#[derive(Debug, Clone, Default)]
pub struct PointOptions {
    /// A named backup is used even if incomplete here.
    pub allow_incomplete: bool,
    /// `latest` may be PartiallyFailed.
    pub allow_partial: bool,
    /// `latest` among backups carrying all these labels (`--selector`, `--from-schedule`).
    pub labels: BTreeMap<String, String>,
    /// The restore fills no claim (`--no-volumes`): volume data does not matter.
    pub no_volumes: bool,
    /// Namespaces restored (as in the backup, globs); empty: all.
    pub include_namespaces: Vec<String>,
    /// Namespaces not restored.
    pub exclude_namespaces: Vec<String>,
    /// Whether claims are restored at all (the resource filters).
    pub claims_restored: bool,
    /// The location is a replica (see [`PassedOver::replica`]).
    pub replica: bool,
}

impl PointOptions {
    /// Claims in the backup's scope that this restore would create but whose data the backup
    /// lacks, as `ns/claim (why)`. A manifest of an older lifeboat, which does not record its
    /// scope, lacks data when it took none but holds claims.
    pub fn claims_without_data(&self, m: &Manifest) -> Vec<String> {
        if self.no_volumes || !self.claims_restored {
            return Vec::new();
        }
        let wanted =
            |ns: &str| namespace_allowed(&self.include_namespaces, &self.exclude_namespaces, ns);
        match &m.details.scope {
            Some(scope) => {
                let mut out: Vec<String> = scope
                    .claims_without_data()
                    .filter(|c| wanted(&c.namespace))
                    .map(|c| {
                        format!(
                            "{}/{} ({})",
                            c.namespace,
                            c.pvc,
                            c.reason.as_deref().unwrap_or("not backed up")
                        )
                    })
                    .collect();
                // Taken without volume data, and its claims could not be listed.
                if !scope.volume_data && scope.claims.is_empty() && holds_claims(m) {
                    out.push("its claims (the backup took no volume data)".into());
                }
                out
            }
            None => match m.details.volumes.as_deref() {
                Some(records) => records
                    .iter()
                    .filter(|r| r.status != VolumeStatus::Completed && wanted(&r.namespace))
                    .map(|r| {
                        format!(
                            "{}/{} ({})",
                            r.namespace,
                            r.pvc,
                            r.error.as_deref().unwrap_or("not backed up")
                        )
                    })
                    .collect(),
                None if holds_claims(m) => {
                    vec!["its claims (the backup took no volume data)".into()]
                }
                None => Vec::new(),
            },
        }
    }

    fn labels_match(&self, m: &Manifest) -> bool {
        self.labels
            .iter()
            .all(|(k, v)| m.labels.get(k).is_some_and(|have| have == v))
    }
}

/// Returns true if the backup's resource summary counts any PersistentVolumeClaim.
fn holds_claims(m: &Manifest) -> bool {
    m.details.resources.as_ref().is_some_and(|r| {
        r.resources
            .iter()
            .any(|s| s.group.is_empty() && s.resource == "persistentvolumeclaims" && s.count > 0)
    })
}

/// `detail` of a PartiallyFailed backup: its first warning, and how many more.
pub fn partial_detail(m: &Manifest) -> String {
    match m.warnings.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first}; and {} more warning(s)", rest.len()),
    }
}

/// Picks `wanted`, or the newest backup that is complete here, Completed (unless
/// `allow_partial`) and holds the data of every claim the restore creates (unless
/// `no_volumes`), among those carrying `labels`. A named incomplete backup is refused unless
/// `allow_incomplete`; a named backup that lacks something else is used, and the plan names it
/// as a risk. Manifests that cannot be read are passed over with a warning.
pub async fn choose(
    repo: &RepoReader,
    wanted: Option<&BackupName>,
    opts: &PointOptions,
) -> Result<(Manifest, RestorePoint), RestoreError> {
    let repo_err = |what| move |source| RestoreError::Repo { what, source };
    let replica = opts.replica;
    let replication = repo.store().replication_status().await.ok().flatten();
    let point = |m: &Manifest,
                 passed_over: Vec<PassedOver>,
                 incomplete: bool,
                 unreadable: Vec<Unreadable>| RestorePoint {
        name: m.name.to_string(),
        taken_at: m.started_at,
        passed_over,
        replication: replication.clone(),
        rpo_seconds: jiff::Timestamp::now().as_second() - m.started_at.as_second(),
        incomplete,
        status: m.status(),
        unreadable,
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
        if !c.is_complete() && !opts.allow_incomplete {
            return Err(RestoreError::Incomplete(PassedOver {
                name: name.to_string(),
                reason: PassReason::Incomplete,
                total: c.total,
                missing: c.total - c.present(),
                detail: None,
                replica,
            }));
        }
        let p = point(&m, vec![], !c.is_complete(), vec![]);
        return Ok((m, p));
    }
    let listed = repo
        .list_readable()
        .await
        .map_err(repo_err("listing backups"))?;
    for bad in &listed.unreadable {
        tracing::warn!(backup = %bad.name, error = %bad.error, "passed over: its manifest cannot be read");
    }
    let mut listings = listed.backups;
    listings.reverse(); // newest first
    let mut passed_over = Vec::new();
    for l in listings {
        let m = l.manifest;
        if !opts.labels_match(&m) {
            continue;
        }
        let c = repo
            .check(&m, VerifyOptions::default())
            .await
            .map_err(repo_err("checking completeness"))?;
        let pass = |reason, detail| PassedOver {
            name: m.name.to_string(),
            reason,
            total: c.total,
            missing: c.total - c.present(),
            detail,
            replica,
        };
        let lacking = opts.claims_without_data(&m);
        let passed = if !c.is_complete() {
            pass(PassReason::Incomplete, None)
        } else if m.is_partial() && !opts.allow_partial {
            pass(PassReason::PartialBackup, Some(partial_detail(&m)))
        } else if !lacking.is_empty() {
            pass(PassReason::NoVolumeData, Some(lacking.join(", ")))
        } else {
            let p = point(&m, passed_over, false, listed.unreadable);
            return Ok((m, p));
        };
        tracing::info!(backup = %m.name, why = %passed, "passed over; trying an older one");
        passed_over.push(passed);
    }
    Err(RestoreError::NoRestorePoint {
        location: repo.store().location().to_owned(),
        passed_over,
        unreadable: listed.unreadable,
    })
}
