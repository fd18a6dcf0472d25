//! The target cluster as the planner needs to see it: what it serves, its zones and storage
//! classes, and which of the backup's objects already exist.

use std::collections::BTreeSet;

use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

use super::RestoreError;
use super::plan::TargetView;
use crate::cluster::{self, ResourceType};
use crate::repo::archive::BackupObject;

/// Lists done at once while looking at the target.
const VIEW_CONCURRENCY: usize = 8;

/// Looks at the target: discovery, node zones, storage classes, and the existing objects of
/// every resource the backup holds.
pub async fn view(
    client: &kube::Client,
    objects: &[BackupObject],
) -> Result<TargetView, RestoreError> {
    let target_err = |what| move |source| RestoreError::Target { what, source };
    let discovered = cluster::discover(client)
        .await
        .map_err(target_err("discovering the target's APIs"))?;
    let find = |group: &str, plural: &str| -> Option<&ResourceType> {
        discovered
            .resources
            .iter()
            .find(|r| r.group == group && r.plural == plural)
    };
    let mut view = TargetView {
        served: discovered.group_versions.clone(),
        ..Default::default()
    };
    if let Some(nodes) = find("", "nodes") {
        for n in cluster::list_all(client, nodes, 500)
            .await
            .map_err(target_err("listing the target's nodes"))?
        {
            if let Some(z) = n
                .pointer("/metadata/labels/topology.kubernetes.io~1zone")
                .and_then(Value::as_str)
            {
                view.zones.insert(z.to_owned());
            }
        }
    }
    let mut wanted: BTreeSet<(&str, &str)> = objects
        .iter()
        .map(|o| (o.group.as_str(), o.plural.as_str()))
        .collect();
    // The classes claims name, whether or not the backup holds any.
    wanted.insert(("storage.k8s.io", "storageclasses"));
    wanted.insert(("storage.k8s.io", "volumeattributesclasses"));
    let types: Vec<&ResourceType> = wanted.iter().filter_map(|(g, p)| find(g, p)).collect();
    let lists: Vec<(&ResourceType, Vec<Value>)> = futures::stream::iter(types)
        .map(|rt| async move {
            cluster::list_all(client, rt, 500)
                .await
                .map(|items| (rt, items))
        })
        .buffer_unordered(VIEW_CONCURRENCY)
        .try_collect()
        .await
        .map_err(target_err("listing the target's existing objects"))?;
    for (rt, items) in lists {
        for obj in items {
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let ns = obj
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            match (rt.group.as_str(), rt.plural.as_str()) {
                ("storage.k8s.io", "storageclasses") => {
                    view.storage_classes.insert(name.clone());
                }
                ("storage.k8s.io", "volumeattributesclasses") => {
                    view.volume_attributes_classes.insert(name.clone());
                }
                _ => {}
            }
            view.existing
                .insert((rt.group.clone(), rt.plural.clone(), ns, name), obj);
        }
    }
    Ok(view)
}
