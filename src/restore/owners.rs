//! Owner references across a restore. The backup's references name the primary's uids, which
//! the target never has; sent as they are, the target's garbage collector deletes the object.
//!
//! Objects a built-in controller recreates (a ReplicaSet's Pods, a Deployment's ReplicaSets, a
//! CronJob's Jobs, ControllerRevisions) are left to it. Every other owned object is restored:
//! an operator's Secret holds data its volume was written with, and a regenerated one would
//! not match. It is created in its kind's tier without references (an operator that finds its
//! Secret already there uses it instead of generating a new one), and once every tier is done
//! its references are attached again, pointing at the uids its owners got in the target, so it
//! is garbage-collected with its owner as before.

use http::Method;
use serde::Serialize;
use serde_json::Value;

use crate::cluster::{self, ClusterError};

/// Controllers that create the owned object of this kind themselves: `(owner group, owner
/// kind, group, kind)`. A claim of a StatefulSet is not here: it holds data (the controller
/// adopts the restored one).
const RECREATED: &[(&str, &str, &str, &str)] = &[
    ("apps", "ReplicaSet", "", "Pod"),
    ("apps", "StatefulSet", "", "Pod"),
    ("apps", "DaemonSet", "", "Pod"),
    ("batch", "Job", "", "Pod"),
    ("", "ReplicationController", "", "Pod"),
    ("apps", "Deployment", "apps", "ReplicaSet"),
    ("batch", "CronJob", "batch", "Job"),
    ("apps", "StatefulSet", "apps", "ControllerRevision"),
    ("apps", "DaemonSet", "apps", "ControllerRevision"),
];

/// Returns true if and only if a built-in controller of kind `owner` recreates objects of
/// `group`/`kind` it controls.
pub fn recreated_by(owner_group: &str, owner_kind: &str, group: &str, kind: &str) -> bool {
    RECREATED.contains(&(owner_group, owner_kind, group, kind))
}

/// One owner reference of a restored object, and where its owner is in the target.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerLink {
    /// `Kind name` of the owner.
    pub owner: String,
    /// The owner's URL in the target; `None`: the owner is not restored, the reference is
    /// dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Why the reference is dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<String>,
    /// The backup's reference (its uid is replaced by the target's).
    #[serde(skip)]
    pub reference: Value,
}

/// The references of `obj` (before transforms), with their owners looked up by uid in the
/// backup; `owner(uid)` says where the owner is in the target (`Ok(path)`) or why it is not.
pub fn links(obj: &Value, owner: impl Fn(&str) -> Result<String, String>) -> Vec<OwnerLink> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| {
            let name = format!(
                "{} {}",
                r["kind"].as_str().unwrap_or_default(),
                r["name"].as_str().unwrap_or_default()
            );
            let (target, dropped) = match owner(r["uid"].as_str().unwrap_or_default()) {
                Ok(path) => (Some(path), None),
                Err(why) => (None, Some(why)),
            };
            OwnerLink {
                owner: name,
                target,
                dropped,
                reference: r.clone(),
            }
        })
        .collect()
}

/// The references to set on the live object: its own, plus each link whose owner's target uid
/// is not among them. `None` when nothing is missing. A live object that already has a
/// controller (adopted meanwhile) keeps it; the restored reference is then a plain one.
pub fn merged(live: &[Value], links: &[(&OwnerLink, String)]) -> Option<Vec<Value>> {
    let mut refs = live.to_vec();
    let mut added = false;
    for (link, uid) in links {
        if refs.iter().any(|r| r["uid"].as_str() == Some(uid)) {
            continue;
        }
        let mut r = link.reference.clone();
        r["uid"] = Value::from(uid.as_str());
        if refs.iter().any(|l| l["controller"] == true)
            && let Some(m) = r.as_object_mut()
        {
            m.remove("controller");
        }
        refs.push(r);
        added = true;
    }
    added.then_some(refs)
}

/// Attaches `links` (those with a target) to the object at `path`: reads each owner's uid in
/// the target, then patches the object's references (with its resourceVersion, so a
/// concurrent change is not overwritten). Returns how many references were added.
pub async fn attach(
    client: &kube::Client,
    path: &str,
    links: &[OwnerLink],
) -> Result<usize, ClusterError> {
    let mut uids = Vec::new();
    for link in links {
        let Some(owner) = &link.target else { continue };
        let body = cluster::send(client, "read the owner", Method::GET, owner, None).await?;
        let live: Value = decode(&body, owner)?;
        if let Some(uid) = live.pointer("/metadata/uid").and_then(Value::as_str) {
            uids.push((link, uid.to_owned()));
        }
    }
    if uids.is_empty() {
        return Ok(0);
    }
    let body = cluster::send(client, "read the owned object", Method::GET, path, None).await?;
    let live: Value = decode(&body, path)?;
    let current: Vec<Value> = live
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(refs) = merged(&current, &uids) else {
        return Ok(0);
    };
    let added = refs.len() - current.len();
    let patch = serde_json::json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": live.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null),
    }});
    let body = serde_json::to_vec(&patch).expect("references serialize");
    cluster::send(
        client,
        "attach owner references",
        Method::PATCH,
        path,
        Some(("application/merge-patch+json", body)),
    )
    .await?;
    Ok(added)
}

fn decode(body: &[u8], path: &str) -> Result<Value, ClusterError> {
    serde_json::from_slice(body).map_err(|source| ClusterError::Decode {
        op: "get",
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn built_in_controllers_recreate_only_what_they_create() {
        assert!(recreated_by("apps", "ReplicaSet", "", "Pod"));
        assert!(recreated_by("apps", "Deployment", "apps", "ReplicaSet"));
        assert!(recreated_by("batch", "CronJob", "batch", "Job"));
        // Data-bearing kinds and whatever an operator owns are restored.
        assert!(!recreated_by(
            "apps",
            "StatefulSet",
            "",
            "PersistentVolumeClaim"
        ));
        assert!(!recreated_by("postgresql.cnpg.io", "Cluster", "", "Secret"));
        assert!(!recreated_by("postgresql.cnpg.io", "Cluster", "", "Pod"));
    }

    #[test]
    fn links_say_where_each_owner_is_or_why_the_reference_goes() {
        let obj = json!({"metadata": {"ownerReferences": [
            {"apiVersion": "example.com/v1", "kind": "Db", "name": "a", "uid": "u1", "controller": true},
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": "u2"},
        ]}});
        let l = links(&obj, |uid| {
            if uid == "u1" {
                Ok("/apis/example.com/v1/namespaces/n/dbs/a".into())
            } else {
                Err("not in the backup".into())
            }
        });
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].owner, "Db a");
        assert_eq!(
            l[0].target.as_deref(),
            Some("/apis/example.com/v1/namespaces/n/dbs/a")
        );
        assert_eq!(l[1].target, None);
        assert_eq!(l[1].dropped.as_deref(), Some("not in the backup"));
    }

    #[test]
    fn merged_references_point_at_target_uids_and_keep_a_live_controller() {
        let link = OwnerLink {
            owner: "Db a".into(),
            target: Some("/x".into()),
            dropped: None,
            reference: json!({"apiVersion": "example.com/v1", "kind": "Db", "name": "a", "uid": "old", "controller": true, "blockOwnerDeletion": true}),
        };
        let refs = merged(&[], &[(&link, "new".into())]).expect("one added");
        assert_eq!(refs[0]["uid"], "new");
        assert_eq!(refs[0]["controller"], true);
        assert_eq!(refs[0]["blockOwnerDeletion"], true);
        // Already there: nothing to do.
        assert_eq!(merged(&refs, &[(&link, "new".into())]), None);
        // Adopted meanwhile by another controller: ours is added as a plain reference.
        let live = [json!({"kind": "Other", "uid": "o", "controller": true})];
        let refs = merged(&live, &[(&link, "new".into())]).expect("added");
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[1].get("controller"), None);
    }
}
