//! The restore plan: for every backed-up object its tier, action and transforms, and the risks
//! found up front. A pure function of the backup's objects, a view of the target and the
//! options, so `--dry-run` shows exactly what a run would do.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::Value;

use super::order::Tier;
use super::owners::{self, OwnerLink};
use super::point::RestorePoint;
use crate::config::ExistingPolicy;
use crate::filter::{namespace_allowed, resource_allowed};
use crate::repo::archive::BackupObject;
use crate::repo::{VolumeRecord, VolumeStatus};
use crate::transform::{self, Mappings, RESTORED_FROM, TransformOptions};

/// Namespaces that belong to the cluster itself.
const SYSTEM_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease"];

/// `(group, plural, namespace, name)` in the target.
pub type TargetKey = (String, String, String, String);

/// What the target looks like, gathered before planning.
#[derive(Debug, Clone, Default)]
pub struct TargetView {
    /// Served group-versions (`apps/v1`, `v1`).
    pub served: BTreeSet<String>,
    /// Zones of the target's nodes.
    pub zones: BTreeSet<String>,
    /// StorageClasses that exist.
    pub storage_classes: BTreeSet<String>,
    /// VolumeAttributesClasses that exist.
    pub volume_attributes_classes: BTreeSet<String>,
    /// Objects that exist, for the resources of the backup.
    pub existing: HashMap<TargetKey, Value>,
}

/// Which objects to restore (on the backup's names, before mapping).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreFilters {
    /// Namespaces (globs); empty: all.
    pub include_namespaces: Vec<String>,
    /// Namespaces not restored.
    pub exclude_namespaces: Vec<String>,
    /// Resources (`deployments.apps`, `configmaps`, kind, globs); empty: all.
    pub include_resources: Vec<String>,
    /// Resources not restored.
    pub exclude_resources: Vec<String>,
}

/// Options of the planner.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Name mappings.
    pub mappings: Mappings,
    /// Transform switches.
    pub transform: TransformOptions,
    /// Objects that already exist.
    pub existing: ExistingPolicy,
    /// What to restore.
    pub filters: RestoreFilters,
    /// The location read is a replica (configured `readOnly: true`): an absent object is
    /// "not yet replicated" there, "missing" anywhere else.
    pub replica: bool,
    /// CSI drivers of shared storage (`volumes.sharedStorageDrivers`).
    pub shared_storage_drivers: Vec<String>,
    /// PersistentVolumes restored as they are (pre-provisioned), with what each points at.
    pub preprovisioned: BTreeMap<String, String>,
}

/// What happens to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Created in the target.
    Create,
    /// Patched to the backed-up spec (`existing: update`).
    Update,
    /// Left as it is: it exists in the target.
    SkipExists,
    /// Not restored by a rule (reason given).
    SkipRule,
}

/// One object of the plan.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanItem {
    /// Creation tier.
    pub tier: Tier,
    /// Action.
    pub action: Action,
    /// API group.
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural resource name.
    pub resource: String,
    /// Kind.
    pub kind: String,
    /// Namespace in the target (after mapping); empty for cluster-scoped objects.
    pub namespace: String,
    /// Name in the target.
    pub name: String,
    /// Transform rules that changed the object.
    pub transforms: Vec<&'static str>,
    /// Why it is skipped, or what to know about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Its owners in the backup: references attached again once the restore created them, or
    /// dropped (with the reason).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerLink>,
    /// The object to send (after transforms).
    #[serde(skip)]
    pub object: Value,
}

impl PlanItem {
    /// `kind namespace/name` for messages.
    pub fn display(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind, self.name)
        } else {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// A risk found before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Risk {
    /// `api-not-served`, `crd-created`, `storage-class-missing`, `zone-missing`,
    /// `webhook-restored`, `exists-differs`; and those that lose data, ending the run with
    /// exit 3 (`crate::restore::DATA_RISKS`): `no-volume-data`, `partial-backup`,
    /// `claim-not-ours`.
    pub kind: &'static str,
    /// What, and what to do about it.
    pub message: String,
}

/// The plan.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The restore point.
    pub restore_point: RestorePoint,
    /// Mappings applied.
    pub mappings: Mappings,
    /// Every object, in tier order.
    pub items: Vec<PlanItem>,
    /// Risks found up front.
    pub risks: Vec<Risk>,
    /// Objects per action.
    pub counts: BTreeMap<Action, usize>,
    /// Claims whose backed-up data is restored once they are created, before any workload.
    pub volumes: Vec<VolumeFill>,
    /// Claims whose data is not restored, and why.
    pub volume_notes: Vec<String>,
    /// Other things to know: owner references dropped, and why.
    pub notes: Vec<String>,
}

/// An object of the backup that owns others: what its uid stands for.
struct OwnerOf {
    group: String,
    kind: String,
    display: String,
}

/// Why an object is never restored, if it is not.
fn rule_skip(
    o: &BackupObject,
    kind: &str,
    owners: &HashMap<String, OwnerOf>,
    filters: &RestoreFilters,
    preprovisioned: &BTreeMap<String, String>,
) -> Option<String> {
    let ns = o.namespace.as_str();
    if !ns.is_empty() && SYSTEM_NAMESPACES.contains(&ns) {
        return Some(format!("in system namespace {ns}"));
    }
    match (o.group.as_str(), kind) {
        ("", "Namespace")
            if SYSTEM_NAMESPACES.contains(&o.name.as_str()) || o.name == "default" =>
        {
            return Some("created by the cluster itself".into());
        }
        ("", "PersistentVolume") if !preprovisioned.contains_key(&o.name) => {
            return Some("volumes are provisioned anew by the target's storage".into());
        }
        ("", "PersistentVolume")
            if o.object["spec"]["claimRef"]["namespace"]
                .as_str()
                .is_some_and(|claim_ns| {
                    !namespace_allowed(
                        &filters.include_namespaces,
                        &filters.exclude_namespaces,
                        claim_ns,
                    )
                }) =>
        {
            return Some(
                "pre-provisioned for a claim in a namespace this restore leaves out".into(),
            );
        }
        ("snapshot.storage.k8s.io", "VolumeSnapshot" | "VolumeSnapshotContent") => {
            return Some(
                "snapshots of the primary region's disks do not exist in the target".into(),
            );
        }
        ("", "Event" | "Endpoints" | "Node")
        | ("events.k8s.io", _)
        | ("discovery.k8s.io", _)
        | ("coordination.k8s.io", "Lease") => {
            return Some("regenerated by the target cluster".into());
        }
        // The API server creates these from its own flags (--service-cluster-ip-range).
        ("", "Service") if ns == "default" && o.name == "kubernetes" => {
            return Some("created by the cluster itself".into());
        }
        ("networking.k8s.io", "ServiceCIDR") if o.name == "kubernetes" => {
            return Some("created by the cluster itself".into());
        }
        ("apiregistration.k8s.io", "APIService") if !o.object["spec"]["service"].is_object() => {
            return Some("a local API of the API server itself".into());
        }
        ("networking.k8s.io", "IPAddress") => {
            return Some("allocated by the target's API server for its Services".into());
        }
        ("", "ServiceAccount") if o.name == "default" => {
            return Some("created by the cluster in every namespace".into());
        }
        ("", "ConfigMap") if o.name == "kube-root-ca.crt" => {
            return Some("created by the cluster in every namespace".into());
        }
        ("", "Secret") if o.object["type"] == "kubernetes.io/service-account-token" => {
            return Some("service account tokens are issued by the target".into());
        }
        // Backups of older versions may hold them; the target gets its own (issue 14).
        ("", "Secret")
            if o.object
                .pointer("/metadata/labels/lifeboat.io~1credentials")
                .is_some() =>
        {
            return Some("lifeboat's own credentials are never restored".into());
        }
        // The cluster marks its own RBAC so; `system:` names of an application's (metrics and
        // monitoring stacks ship them) are the application's.
        (
            "rbac.authorization.k8s.io",
            "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding",
        ) if o
            .object
            .pointer("/metadata/labels/kubernetes.io~1bootstrapping")
            == Some(&Value::from("rbac-defaults")) =>
        {
            return Some("bootstrap RBAC belongs to the target cluster".into());
        }
        _ => {}
    }
    if let Some(refs) = o
        .object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
    {
        for r in refs {
            if r["controller"] == true
                && let Some(owner) = r["uid"].as_str().and_then(|u| owners.get(u))
                && owners::recreated_by(&owner.group, &owner.kind, &o.group, kind)
            {
                return Some(format!(
                    "owned by {} in the backup; its controller recreates it",
                    owner.display
                ));
            }
        }
    }
    let f = filters;
    if !ns.is_empty() && !namespace_allowed(&f.include_namespaces, &f.exclude_namespaces, ns) {
        return Some("excluded by the namespace filters".into());
    }
    if !resource_allowed(
        &f.include_resources,
        &f.exclude_resources,
        &o.group,
        &o.plural,
        kind,
    ) {
        return Some("excluded by the resource filters".into());
    }
    None
}

/// The content of an object that a restore sets: everything but metadata and status.
fn content(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
    }
    v
}

/// A claim to fill once it is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeFill {
    /// Namespace of the claim in the backup.
    pub source_namespace: String,
    /// The claim in the backup.
    pub source_pvc: String,
    /// Namespace in the target.
    pub namespace: String,
    /// The claim in the target.
    pub pvc: String,
    /// Its volume index in the backup.
    pub index: String,
    /// File bytes to write.
    pub bytes: u64,
    /// Files to write.
    pub files: u64,
    /// The claim exists: an earlier run created it and did not complete its fill.
    pub again: bool,
}

/// Annotation on a claim a restore creates: the backup its data comes from.
pub const FILLED_FROM: &str = "lifeboat.io/filled-from";
/// Annotation on a claim a restore creates: `pending` until the mover has written and checked
/// every chunk, then `complete`. A rerun fills again every claim still `pending`.
pub const FILL_STATE: &str = "lifeboat.io/fill";
/// [`FILL_STATE`] once the data is in.
pub const FILL_COMPLETE: &str = "complete";

/// Which claims of the plan get data, notes on those that will not, and risks: a claim that
/// exists in the target and that no restore of this backup created is never overwritten.
/// A claim a restore created (it carries [`FILLED_FROM`]) whose fill did not complete is filled
/// (again), whatever `--existing` says.
pub fn plan_volumes(
    records: &[VolumeRecord],
    items: &[PlanItem],
    mappings: &Mappings,
    target: &TargetView,
) -> (Vec<VolumeFill>, Vec<String>, Vec<Risk>) {
    let mut fills = Vec::new();
    let mut notes = Vec::new();
    let mut risks = Vec::new();
    for r in records {
        let ns = mappings.namespace(&r.namespace);
        let Some(item) = items.iter().find(|i| {
            i.kind == "PersistentVolumeClaim"
                && i.group.is_empty()
                && i.namespace == ns
                && i.name == r.pvc
        }) else {
            continue; // filtered out of this restore
        };
        let fill = |index: &String, again: bool| VolumeFill {
            source_namespace: r.namespace.clone(),
            source_pvc: r.pvc.clone(),
            namespace: ns.to_owned(),
            pvc: r.pvc.clone(),
            index: index.clone(),
            bytes: r.figures.bytes,
            files: r.figures.files,
            again,
        };
        match (r.status, &r.index, item.action) {
            (VolumeStatus::Completed, Some(index), Action::Create) => {
                fills.push(fill(index, false))
            }
            (VolumeStatus::Completed, Some(index), Action::SkipExists | Action::Update) => {
                let key = (
                    String::new(),
                    "persistentvolumeclaims".to_owned(),
                    ns.to_owned(),
                    r.pvc.clone(),
                );
                let annotation = |name: &str| {
                    target
                        .existing
                        .get(&key)
                        .and_then(|live| {
                            live.pointer(&format!(
                                "/metadata/annotations/{}",
                                name.replace('/', "~1")
                            ))
                        })
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                };
                match (annotation(FILLED_FROM), annotation(FILL_STATE)) {
                    (Some(_), state) if state.as_deref() != Some(FILL_COMPLETE) => {
                        notes.push(format!(
                            "claim {ns}/{} was created by an earlier restore whose fill did not complete: it is filled again",
                            r.pvc
                        ));
                        fills.push(fill(index, true));
                    }
                    (Some(from), _) if from == target_backup(item) => notes.push(format!(
                        "claim {ns}/{}: its data was restored earlier from this backup",
                        r.pvc
                    )),
                    (Some(from), _) => risks.push(Risk {
                        kind: "claim-not-ours",
                        message: format!(
                            "claim {ns}/{} exists in the target, filled from backup {from}: its data is left as it is, not this backup's",
                            r.pvc
                        ),
                    }),
                    (None, _) => risks.push(Risk {
                        kind: "claim-not-ours",
                        message: format!(
                            "claim {ns}/{} exists in the target and was not created by a restore: its data is left as it is, never overwritten (delete the claim to restore its data)",
                            r.pvc
                        ),
                    }),
                }
            }
            (VolumeStatus::Completed, _, _) => {}
            // Bound again to its restored pre-provisioned volume (the plan's notes say which).
            (_, _, Action::Create) if item.object.pointer("/spec/volumeName").is_some() => {}
            (_, _, Action::Create) => notes.push(format!(
                "claim {ns}/{} is created empty: the backup holds no data of it ({})",
                r.pvc,
                r.error.as_deref().unwrap_or("not backed up")
            )),
            _ => {}
        }
    }
    (fills, notes, risks)
}

/// The backup a plan item is restored from (its `restored-from` label, set by the transforms).
fn target_backup(item: &PlanItem) -> &str {
    item.object
        .pointer(&format!(
            "/metadata/labels/{}",
            RESTORED_FROM.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Plans the restore of `objects` into the target.
pub fn plan(
    objects: Vec<BackupObject>,
    point: RestorePoint,
    target: &TargetView,
    opts: &PlanOptions,
) -> Plan {
    let owners: HashMap<String, OwnerOf> = objects
        .iter()
        .filter_map(|o| {
            let uid = o.object.pointer("/metadata/uid")?.as_str()?.to_owned();
            let kind = o.object["kind"].as_str().unwrap_or_default();
            Some((
                uid,
                OwnerOf {
                    group: o.group.clone(),
                    kind: kind.to_owned(),
                    display: format!("{kind} {}", o.name),
                },
            ))
        })
        .collect();
    // Item index of each uid, and the references of each item restored, to resolve once every
    // item's action is known.
    let mut item_of_uid: HashMap<String, usize> = HashMap::new();
    let mut references: Vec<(usize, Value)> = Vec::new();
    let ctx = transform::Context {
        mappings: &opts.mappings,
        options: &opts.transform,
    };
    let mut items = Vec::with_capacity(objects.len());
    let mut risks = BTreeSet::new();
    for o in objects {
        let kind = o.object["kind"].as_str().unwrap_or_default().to_owned();
        let tier = Tier::of(&o.group, &kind);
        let mut item = PlanItem {
            tier,
            action: Action::SkipRule,
            group: o.group.clone(),
            version: o.version.clone(),
            resource: o.plural.clone(),
            kind: kind.clone(),
            namespace: opts.mappings.namespace(&o.namespace).to_owned(),
            name: o.name.clone(),
            transforms: vec![],
            reason: None,
            owner_references: vec![],
            object: Value::Null,
        };
        if let Some(uid) = o.object.pointer("/metadata/uid").and_then(Value::as_str) {
            item_of_uid.insert(uid.to_owned(), items.len());
        }
        if let Some(reason) = rule_skip(&o, &kind, &owners, &opts.filters, &opts.preprovisioned) {
            item.reason = Some(reason);
            items.push(item);
            continue;
        }
        let mut obj = o.object;
        let refs = obj.pointer("/metadata/ownerReferences").cloned();
        item.transforms = transform::apply_all(&mut obj, &ctx);
        // A rename (storage class, namespace) changes the target name.
        item.name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or(&item.name)
            .to_owned();
        let key = (
            item.group.clone(),
            item.resource.clone(),
            item.namespace.clone(),
            item.name.clone(),
        );
        match target.existing.get(&key) {
            Some(live)
                if live
                    .pointer(&format!(
                        "/metadata/labels/{}",
                        RESTORED_FROM.replace('/', "~1")
                    ))
                    .and_then(Value::as_str)
                    == Some(opts.transform.backup.as_str()) =>
            {
                item.action = Action::SkipExists;
                item.reason = Some("restored earlier from this backup".into());
            }
            Some(live) => {
                let differs = content(live) != content(&obj);
                item.action = match opts.existing {
                    ExistingPolicy::Skip => Action::SkipExists,
                    ExistingPolicy::Update => Action::Update,
                };
                if differs {
                    item.reason = Some("exists in the target and differs from the backup".into());
                    if item.action == Action::SkipExists {
                        risks.insert(Risk {
                            kind: "exists-differs",
                            message: format!("{} exists in the target and differs from the backup; it is left as it is (use --existing update to overwrite)", item.display()),
                        });
                    }
                } else {
                    item.reason = Some("exists in the target".into());
                }
            }
            None => item.action = Action::Create,
        }
        // References are attached to what this restore writes or wrote, never to an object
        // of someone else's that it leaves as it is.
        let ours = matches!(item.action, Action::Create | Action::Update)
            || item.reason.as_deref() == Some("restored earlier from this backup");
        if let Some(refs) = refs.filter(|_| ours) {
            references.push((
                items.len(),
                serde_json::json!({"metadata": {"ownerReferences": refs}}),
            ));
        }
        item.object = obj;
        items.push(item);
    }
    let mut notes = Vec::new();
    for i in items
        .iter_mut()
        .filter(|i| i.kind == "PersistentVolume" && i.action != Action::SkipRule)
    {
        let points = opts
            .preprovisioned
            .get(&i.name)
            .cloned()
            .unwrap_or_default();
        let claim = i
            .object
            .pointer("/spec/claimRef")
            .map(|r| {
                format!(
                    ", bound again to claim {}/{}",
                    r["namespace"].as_str().unwrap_or_default(),
                    r["name"].as_str().unwrap_or_default()
                )
            })
            .unwrap_or_default();
        notes.push(format!(
            "PersistentVolume {} is pre-provisioned and restored as it is: it points at {points}{claim}; its data is not copied",
            i.name
        ));
        if i.reason.is_none() {
            i.reason = Some(format!("pre-provisioned: {points}"));
        }
    }
    for (at, refs) in references {
        let links = owners::links(&refs, |uid| {
            let Some(owner) = item_of_uid.get(uid).map(|&j| &items[j]) else {
                return Err("the owner is not in the backup".into());
            };
            match owner.action {
                Action::SkipRule => Err(format!(
                    "the owner {} is not restored ({})",
                    owner.display(),
                    owner.reason.as_deref().unwrap_or("a rule")
                )),
                _ => Ok(format!(
                    "{}/{}",
                    crate::cluster::collection_path(
                        &owner.group,
                        &owner.version,
                        &owner.resource,
                        &owner.namespace
                    ),
                    owner.name
                )),
            }
        });
        for l in links.iter().filter(|l| l.target.is_none()) {
            notes.push(format!(
                "{}: its owner reference to {} is dropped: {}",
                items[at].display(),
                l.owner,
                l.dropped.as_deref().unwrap_or_default()
            ));
        }
        items[at].owner_references = links;
    }
    find_risks(&items, target, &mut risks);
    items.sort_by(|a, b| {
        (a.tier, &a.group, &a.resource, &a.namespace, &a.name).cmp(&(
            b.tier,
            &b.group,
            &b.resource,
            &b.namespace,
            &b.name,
        ))
    });
    let mut counts = BTreeMap::new();
    for i in &items {
        *counts.entry(i.action).or_default() += 1;
    }
    Plan {
        restore_point: point,
        mappings: opts.mappings.clone(),
        items,
        risks: risks.into_iter().collect(),
        counts,
        volumes: Vec::new(),
        volume_notes: Vec::new(),
        notes,
    }
}

fn find_risks(items: &[PlanItem], target: &TargetView, risks: &mut BTreeSet<Risk>) {
    let writes = || {
        items
            .iter()
            .filter(|i| matches!(i.action, Action::Create | Action::Update))
    };
    let crd_group = |i: &PlanItem| {
        i.object
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    // Groups whose CRD this restore writes: served once it is Established. A CRD left as it is
    // in the target serves what the target says (its discovery), maybe not the backup's version.
    let crd_groups: BTreeSet<String> = items
        .iter()
        .filter(|i| i.kind == "CustomResourceDefinition")
        .filter(|i| matches!(i.action, Action::Create | Action::Update))
        .filter_map(crd_group)
        .collect();
    let kept_crds: BTreeMap<String, String> = items
        .iter()
        .filter(|i| i.kind == "CustomResourceDefinition" && i.action == Action::SkipExists)
        .filter_map(|i| Some((crd_group(i)?, i.name.clone())))
        .collect();
    let mut unserved: BTreeMap<String, usize> = BTreeMap::new();
    for i in writes() {
        let gv = if i.group.is_empty() {
            i.version.clone()
        } else {
            format!("{}/{}", i.group, i.version)
        };
        if !target.served.contains(&gv) && !crd_groups.contains(&i.group) {
            *unserved.entry(gv).or_default() += 1;
        }
        match (i.group.as_str(), i.kind.as_str()) {
            ("apiextensions.k8s.io", "CustomResourceDefinition") if i.action == Action::Create => {
                risks.insert(Risk {
                    kind: "crd-created",
                    message: format!(
                        "CRD {} will be created (its controller is not part of the backup)",
                        i.name
                    ),
                });
            }
            ("admissionregistration.k8s.io", _) => {
                risks.insert(Risk {
                    kind: "webhook-restored",
                    message: format!("admission webhook {} {} will be restored last; its service must be reachable or it may block later writes", i.kind, i.name),
                });
            }
            ("storage.k8s.io", "StorageClass") => {
                for v in i
                    .object
                    .pointer("/allowedTopologies")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .flat_map(|t| t["matchLabelExpressions"].as_array().into_iter().flatten())
                    .filter(|e| e["key"].as_str().is_some_and(|k| k.ends_with("/zone")))
                    .flat_map(|e| e["values"].as_array().into_iter().flatten())
                    .filter_map(Value::as_str)
                {
                    if !target.zones.contains(v) {
                        risks.insert(Risk {
                            kind: "zone-missing",
                            message: format!("StorageClass {} allows zone {v}, which the target does not have; claims using it will not bind (add --zone-map {v}=<target zone>)", i.name),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    for (gv, n) in unserved {
        let group = gv.rsplit_once('/').map_or("", |(g, _)| g);
        match kept_crds.get(group) {
            Some(crd) => risks.insert(Risk {
                kind: "crd-version-not-served",
                message: format!("CRD {crd} exists in the target, which does not serve {gv} (the version the backup holds {n} object(s) at); they will fail: add that version to the target's CRD, or pass --existing update to replace the CRD with the backup's"),
            }),
            None => risks.insert(Risk {
                kind: "api-not-served",
                message: format!("the target does not serve {gv} and the backup has no CRD for it; {n} object(s) will fail"),
            }),
        };
    }
    for (class, users) in missing_classes(
        items,
        "StorageClass",
        "storageClassName",
        &target.storage_classes,
    ) {
        risks.insert(Risk {
            kind: "storage-class-missing",
            message: format!("StorageClass {class} neither exists in the target nor is restored, and no --storage-class-map covers it; used by {}", users.join(", ")),
        });
    }
    for (class, users) in missing_classes(
        items,
        "VolumeAttributesClass",
        "volumeAttributesClassName",
        &target.volume_attributes_classes,
    ) {
        risks.insert(Risk {
            kind: "volume-attributes-class-missing",
            message: format!("VolumeAttributesClass {class} neither exists in the target nor is restored, and no --volume-attributes-class-map covers it; claims naming it stay Pending: {}", users.join(", ")),
        });
    }
}

/// Classes of kind `class_kind` that claims (and StatefulSet claim templates) about to be
/// written name in `spec.<field>` but that neither exist in the target (`existing`) nor are
/// restored, each with who names it: the API server accepts such claims, they never bind.
fn missing_classes<'a>(
    items: &'a [PlanItem],
    class_kind: &str,
    field: &str,
    existing: &BTreeSet<String>,
) -> BTreeMap<&'a str, Vec<String>> {
    let planned: BTreeSet<&str> = items
        .iter()
        .filter(|i| i.kind == class_kind && i.action != Action::SkipRule)
        .map(|i| i.name.as_str())
        .collect();
    let pointer = format!("/spec/{field}");
    let mut users: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for i in items
        .iter()
        .filter(|i| matches!(i.action, Action::Create | Action::Update))
    {
        let classes: Vec<&str> = match (i.group.as_str(), i.kind.as_str()) {
            ("", "PersistentVolumeClaim") => i
                .object
                .pointer(&pointer)
                .and_then(Value::as_str)
                .into_iter()
                .collect(),
            ("apps", "StatefulSet") => i
                .object
                .pointer("/spec/volumeClaimTemplates")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|t| t.pointer(&pointer).and_then(Value::as_str))
                .collect(),
            _ => vec![],
        };
        for c in classes {
            if !c.is_empty() && !existing.contains(c) && !planned.contains(c) {
                users.entry(c).or_default().push(i.display());
            }
        }
    }
    users
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(group: &str, plural: &str, ns: &str, name: &str) -> BackupObject {
        BackupObject {
            group: group.into(),
            version: "v1".into(),
            plural: plural.into(),
            namespace: ns.into(),
            name: name.into(),
            object: serde_json::json!({"metadata": {"name": name, "namespace": ns}}),
        }
    }

    fn skip(group: &str, plural: &str, kind: &str, ns: &str, name: &str) -> Option<String> {
        let o = object(group, plural, ns, name);
        rule_skip(
            &o,
            kind,
            &HashMap::new(),
            &RestoreFilters::default(),
            &BTreeMap::new(),
        )
    }

    fn point() -> RestorePoint {
        RestorePoint {
            name: "b".into(),
            taken_at: jiff::Timestamp::UNIX_EPOCH,
            passed_over: vec![],
            replication: None,
            rpo_seconds: 0,
            incomplete: false,
            status: "Completed",
            unreadable: vec![],
        }
    }

    fn typed(
        group: &str,
        plural: &str,
        kind: &str,
        ns: &str,
        name: &str,
        spec: Value,
    ) -> BackupObject {
        let api_version = if group.is_empty() {
            "v1".to_owned()
        } else {
            format!("{group}/v1")
        };
        let mut o = object(group, plural, ns, name);
        o.object["apiVersion"] = Value::from(api_version);
        o.object["kind"] = Value::from(kind);
        o.object["spec"] = spec;
        o
    }

    /// VolumeAttributesClasses come before the claims naming them; a claim naming one the
    /// target lacks and the backup does not hold is a risk.
    #[test]
    fn volume_attributes_classes_are_restored_before_claims_and_missing_ones_are_risks() {
        let objects = vec![
            typed(
                "",
                "persistentvolumeclaims",
                "PersistentVolumeClaim",
                "db",
                "gold-claim",
                serde_json::json!({"volumeAttributesClassName": "gold"}),
            ),
            typed(
                "",
                "persistentvolumeclaims",
                "PersistentVolumeClaim",
                "db",
                "silver-claim",
                serde_json::json!({"volumeAttributesClassName": "silver"}),
            ),
            typed(
                "",
                "persistentvolumeclaims",
                "PersistentVolumeClaim",
                "db",
                "bronze-claim",
                serde_json::json!({"volumeAttributesClassName": "bronze"}),
            ),
            typed(
                "storage.k8s.io",
                "volumeattributesclasses",
                "VolumeAttributesClass",
                "",
                "gold",
                Value::Null,
            ),
        ];
        let target = TargetView {
            volume_attributes_classes: ["bronze".to_owned()].into(),
            ..Default::default()
        };
        let plan = plan(objects, point(), &target, &PlanOptions::default());
        let tier = |name: &str| plan.items.iter().find(|i| i.name == name).unwrap().tier;
        assert!(tier("gold") < tier("gold-claim"));
        let risks: Vec<&Risk> = plan
            .risks
            .iter()
            .filter(|r| r.kind == "volume-attributes-class-missing")
            .collect();
        assert_eq!(risks.len(), 1, "{:?}", plan.risks);
        assert!(
            risks[0].message.contains("VolumeAttributesClass silver"),
            "{:?}",
            risks[0]
        );
        assert!(
            risks[0].message.contains("db/silver-claim"),
            "{:?}",
            risks[0]
        );
    }

    /// A CRD the target already has, serving other versions than the one the backup holds its
    /// custom resources at, is a named risk; a CRD the restore creates serves them.
    #[test]
    fn a_kept_crd_that_does_not_serve_the_backups_version_is_a_risk() {
        let crd = |name: &str| {
            typed(
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                "",
                name,
                serde_json::json!({"group": "multi.example.com"}),
            )
        };
        let objects = || {
            let mut cr = typed(
                "multi.example.com",
                "gadgets",
                "Gadget",
                "shop",
                "g1",
                Value::Null,
            );
            cr.version = "v2".into();
            vec![crd("gadgets.multi.example.com"), cr]
        };
        let mut target = TargetView::default();
        let key = (
            "apiextensions.k8s.io".to_owned(),
            "customresourcedefinitions".to_owned(),
            String::new(),
            "gadgets.multi.example.com".to_owned(),
        );
        target.existing.insert(key, serde_json::json!({"spec": {"group": "multi.example.com", "versions": [{"name": "v1"}]}}));
        target.served.insert("multi.example.com/v1".into());
        target.served.insert("apiextensions.k8s.io/v1".into());
        let kept = plan(objects(), point(), &target, &PlanOptions::default());
        let risk = kept
            .risks
            .iter()
            .find(|r| r.kind == "crd-version-not-served")
            .expect("the risk");
        assert!(risk.message.contains("multi.example.com/v2"), "{risk:?}");
        assert!(
            risk.message.contains("gadgets.multi.example.com"),
            "{risk:?}"
        );
        // The target has no such CRD: the restore creates it, nothing is at risk.
        let bare = TargetView {
            served: ["apiextensions.k8s.io/v1".to_owned()].into(),
            ..Default::default()
        };
        let created = plan(objects(), point(), &bare, &PlanOptions::default());
        assert!(
            !created
                .risks
                .iter()
                .any(|r| r.kind == "crd-version-not-served" || r.kind == "api-not-served"),
            "{:?}",
            created.risks
        );
    }

    /// What a real kube-apiserver creates from its own flags is the target's, never restored
    /// (found against a real control plane: restoring these created a foreign IPAddress).
    #[test]
    fn the_api_servers_own_service_objects_are_not_restored() {
        let ns = "networking.k8s.io";
        assert!(skip("", "services", "Service", "default", "kubernetes").is_some());
        assert!(skip(ns, "servicecidrs", "ServiceCIDR", "", "kubernetes").is_some());
        assert!(skip(ns, "ipaddresses", "IPAddress", "", "10.0.108.64").is_some());
        // An application's own Service and an extra ServiceCIDR are restored.
        assert_eq!(skip("", "services", "Service", "shop", "kubernetes"), None);
        assert_eq!(skip(ns, "servicecidrs", "ServiceCIDR", "", "extra"), None);
    }

    /// Bootstrap RBAC is the cluster's by its label; an application's `system:` roles are not.
    #[test]
    fn bootstrap_rbac_is_recognised_by_its_label_not_its_name() {
        let rbac = "rbac.authorization.k8s.io";
        let mut bootstrap = object(rbac, "clusterroles", "", "admin");
        bootstrap.object["metadata"]["labels"] =
            serde_json::json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
        let filters = RestoreFilters::default();
        assert!(
            rule_skip(
                &bootstrap,
                "ClusterRole",
                &HashMap::new(),
                &filters,
                &BTreeMap::new()
            )
            .is_some()
        );
        assert_eq!(
            skip(
                rbac,
                "clusterroles",
                "ClusterRole",
                "",
                "system:metrics-server"
            ),
            None
        );
        assert_eq!(
            skip(
                rbac,
                "clusterrolebindings",
                "ClusterRoleBinding",
                "",
                "system:metrics-server"
            ),
            None
        );
    }
}
