//! Executing a plan: tier after tier, objects of a tier in parallel with a bound, every
//! failure collected per object, never fatal to the rest.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use http::Method;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::wait::{await_condition, conditions};
use serde::Serialize;
use serde_json::Value;

use super::apiservices;
use super::order::Tier;
use super::owners;
use super::plan::{Action, Plan, PlanItem};
use super::volumes::{self, VolumeResult};
use crate::cluster::{self, ClusterError};
use crate::config::ExistingPolicy;
use crate::mover::credentials::MoverCredentials;
use crate::mover::job::VolumeJobs;
use std::collections::BTreeSet;

/// Options of the executor.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Writes in flight at once inside a tier.
    pub concurrency: usize,
    /// How long to wait for a created CRD to be Established.
    pub crd_timeout: Duration,
    /// How long to wait for a created APIService to be Available.
    pub api_service_timeout: Duration,
    /// What to do when an object turns out to exist at create time.
    pub existing: ExistingPolicy,
    /// How to run the mover Jobs that fill restored claims; `None`: claims stay empty.
    pub volumes: Option<VolumeJobs>,
    /// How the movers open the location (see `mover::credentials`).
    pub credentials: MoverCredentials,
}

impl Default for ExecOptions {
    fn default() -> Self {
        Self {
            concurrency: 16,
            crd_timeout: Duration::from_secs(60),
            api_service_timeout: Duration::from_secs(60),
            existing: ExistingPolicy::Skip,
            volumes: None,
            credentials: MoverCredentials::NotNeeded("no volumes"),
        }
    }
}

/// Receives progress of a running restore.
pub trait RestoreProgress: Send + Sync {
    /// A tier with `writes` objects to create or update begins.
    fn tier(&self, _tier: Tier, _writes: usize) {}
    /// One object is done (whatever its outcome).
    fn object_done(&self) {}
    /// Volume data of `count` claims is being restored.
    fn volumes(&self, _count: usize) {}
}

/// Progress that goes nowhere.
pub struct NoRestoreProgress;
impl RestoreProgress for NoRestoreProgress {}

/// One object that could not be restored.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// `Kind namespace/name`.
    pub object: String,
    /// Its tier.
    pub tier: Tier,
    /// The server's message (or what else went wrong).
    pub message: String,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// Objects created.
    pub created: usize,
    /// Objects updated.
    pub updated: usize,
    /// Objects not written, by reason.
    pub skipped: BTreeMap<String, usize>,
    /// Objects that failed.
    pub failed: Vec<Failure>,
    /// Volume data restored into the created claims.
    pub volumes: Vec<VolumeResult>,
    /// Owner references attached again, pointing at the owners' uids in the target.
    pub owner_references: usize,
    /// Temporary objects of earlier, interrupted runs deleted first (`kind namespace/name`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub swept: Vec<String>,
    /// Wall time of the execution.
    pub duration_seconds: f64,
}

enum Done {
    Created,
    Updated,
    Skipped(String),
}

/// Collection URL of an item in the target.
fn collection(i: &PlanItem) -> String {
    cluster::collection_path(&i.group, &i.version, &i.resource, &i.namespace)
}

async fn create(
    client: &kube::Client,
    i: &PlanItem,
    existing: ExistingPolicy,
) -> Result<Done, ClusterError> {
    let body = serde_json::to_vec(&i.object).expect("objects serialize");
    match cluster::send(
        client,
        "create",
        Method::POST,
        &collection(i),
        Some(("application/json", body)),
    )
    .await
    {
        Ok(_) => Ok(Done::Created),
        // Created meanwhile (another run, a controller): the plan's policy decides.
        Err(e) if e.is_already_exists() => match existing {
            ExistingPolicy::Skip => Ok(Done::Skipped("exists in the target".into())),
            ExistingPolicy::Update => update(client, i).await,
        },
        Err(e) => Err(e),
    }
}

async fn update(client: &kube::Client, i: &PlanItem) -> Result<Done, ClusterError> {
    let mut patch = i.object.clone();
    // Only labels and annotations of metadata are ours to set on an existing object.
    if let Some(m) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
        m.retain(|k, _| k == "labels" || k == "annotations");
    }
    let body = serde_json::to_vec(&patch).expect("objects serialize");
    let uri = format!("{}/{}", collection(i), i.name);
    cluster::send(
        client,
        "update",
        Method::PATCH,
        &uri,
        Some(("application/merge-patch+json", body)),
    )
    .await?;
    Ok(Done::Updated)
}

async fn wait_established(
    client: &kube::Client,
    name: &str,
    timeout: Duration,
) -> Result<(), String> {
    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    match tokio::time::timeout(
        timeout,
        await_condition(api, name, conditions::is_crd_established()),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("waiting for the CRD to be Established: {e}")),
        Err(_) => Err(format!(
            "the CRD was not Established within {}s",
            timeout.as_secs()
        )),
    }
}

/// Runs the plan's writes against the target.
pub async fn execute(
    client: &kube::Client,
    plan: &Plan,
    opts: &ExecOptions,
    progress: &dyn RestoreProgress,
) -> Outcome {
    let t0 = Instant::now();
    let mut out = Outcome::default();
    match volumes::sweep(client).await {
        Ok(swept) => out.swept = swept.deleted,
        Err(e) => {
            tracing::warn!(error = %e, "could not sweep leftovers of interrupted runs");
        }
    }
    for item in plan
        .items
        .iter()
        .filter(|i| matches!(i.action, Action::SkipExists | Action::SkipRule))
    {
        *out.skipped
            .entry(item.reason.clone().unwrap_or_else(|| "skipped".into()))
            .or_default() += 1;
    }
    // Claims whose data did not arrive: the workloads mounting them are held back.
    let mut failed_claims: BTreeSet<(String, String)> = BTreeSet::new();
    for tier in Tier::ALL {
        let mut writes: Vec<&PlanItem> = plan
            .items
            .iter()
            .filter(|i| i.tier == tier && matches!(i.action, Action::Create | Action::Update))
            .collect();
        if tier == Tier::Workloads {
            writes.retain(|i| match volumes::held_back_by(i, &failed_claims) {
                None => true,
                Some(claim) => {
                    out.failed.push(Failure {
                        object: i.display(),
                        tier,
                        message: format!(
                            "held back: it mounts claim {claim}, whose data could not be restored"
                        ),
                    });
                    false
                }
            });
        }
        // Claims of an earlier run may still need their data: the fills below run even when
        // this tier writes nothing.
        let fills_here = tier == Tier::Claims && !plan.volumes.is_empty();
        if writes.is_empty() && !fills_here {
            continue;
        }
        progress.tier(tier, writes.len());
        tracing::info!(?tier, objects = writes.len(), "restoring tier");
        let results: Vec<(&PlanItem, Result<Done, String>)> = futures::stream::iter(writes)
            .map(|i| async move {
                let r = match i.action {
                    Action::Update => update(client, i).await,
                    _ => create(client, i, opts.existing).await,
                }
                .map_err(|e| e.to_string());
                // A restored CRD is only useful once Established: its custom resources follow.
                let r = match r {
                    Ok(d) if tier == Tier::Crds => {
                        wait_established(client, &i.name, opts.crd_timeout)
                            .await
                            .map(|_| d)
                    }
                    Ok(d) if tier == Tier::ApiServices => {
                        apiservices::wait_available(client, &i.name, opts.api_service_timeout)
                            .await
                            .map(|_| d)
                    }
                    other => other,
                };
                progress.object_done();
                (i, r)
            })
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
        for (i, r) in results {
            match r {
                Ok(Done::Created) => out.created += 1,
                Ok(Done::Updated) => out.updated += 1,
                Ok(Done::Skipped(why)) => *out.skipped.entry(why).or_default() += 1,
                Err(message) => {
                    tracing::warn!(object = %i.display(), %message, "restore of an object failed");
                    if tier == Tier::Claims {
                        failed_claims.insert((i.namespace.clone(), i.name.clone()));
                    }
                    out.failed.push(Failure {
                        object: i.display(),
                        tier,
                        message,
                    });
                }
            }
        }
        if fills_here {
            let fills: Vec<&super::plan::VolumeFill> = plan
                .volumes
                .iter()
                .filter(|f| !failed_claims.contains(&(f.namespace.clone(), f.pvc.clone())))
                .collect();
            match &opts.volumes {
                Some(jobs) => {
                    progress.volumes(fills.len());
                    let results = volumes::fill(
                        client,
                        &plan.restore_point.name,
                        &fills,
                        jobs,
                        &opts.credentials,
                    )
                    .await;
                    for r in &results {
                        if r.error.is_some() {
                            failed_claims.insert((r.namespace.clone(), r.pvc.clone()));
                            out.failed.push(Failure {
                                object: format!(
                                    "PersistentVolumeClaim {}/{} (data)",
                                    r.namespace, r.pvc
                                ),
                                tier,
                                message: r.error.clone().unwrap_or_default(),
                            });
                        }
                    }
                    out.volumes = results;
                }
                None => {
                    *out.skipped
                        .entry("volume data not restored (--no-volumes)".into())
                        .or_default() += fills.len();
                }
            }
        }
    }
    attach_owner_references(client, plan, opts, &mut out).await;
    out.duration_seconds = t0.elapsed().as_secs_f64();
    out
}

/// Once every tier is done, each restored owned object gets its references back, pointing at
/// its owners' uids in the target (see `owners`).
async fn attach_owner_references(
    client: &kube::Client,
    plan: &Plan,
    opts: &ExecOptions,
    out: &mut Outcome,
) {
    let failed: BTreeSet<String> = out.failed.iter().map(|f| f.object.clone()).collect();
    let owned = plan.items.iter().filter(|i| {
        i.owner_references.iter().any(|l| l.target.is_some()) && !failed.contains(&i.display())
    });
    let results: Vec<(&PlanItem, Result<usize, ClusterError>)> = futures::stream::iter(owned)
        .map(|i| async move {
            let path = format!("{}/{}", collection(i), i.name);
            (i, owners::attach(client, &path, &i.owner_references).await)
        })
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
    for (i, r) in results {
        match r {
            Ok(n) => out.owner_references += n,
            Err(e) => out.failed.push(Failure {
                object: i.display(),
                tier: i.tier,
                message: format!("attaching its owner references: {e}"),
            }),
        }
    }
}
