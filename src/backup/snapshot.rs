//! Listing the selected resources in parallel and streaming their objects to the archive.

use std::collections::BTreeMap;

use futures::StreamExt;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::Progress;
use super::select::{Narrow, Take};
use crate::cluster::{self, ListOptions, ResourceType};
use crate::filter::Filters;
use crate::repo::ResourceSummary;
use crate::repo::archive::{self, Batch, Entry};

/// Objects per list page: large enough to amortise a request, small enough to keep a page's
/// memory low (500 is kubectl's and Velero's choice too).
pub const PAGE_SIZE: u32 = 500;
/// Times a list whose continue token expired (410 Gone) is restarted.
const RESTART_LIMIT: u32 = 3;

/// Lists every take with at most `concurrency` lists in flight; each page goes to `tx` as one
/// tar-encoded batch with entry times `mtime`.
pub async fn list_all(
    client: &kube::Client,
    takes: &[Take],
    filters: &Filters,
    concurrency: usize,
    mtime: u64,
    tx: mpsc::Sender<Batch>,
    progress: &dyn Progress,
) -> Vec<ResourceSummary> {
    futures::stream::iter(takes)
        .map(|t| list_one(client, t, filters, mtime, &tx, progress))
        .buffer_unordered(concurrency)
        .collect()
        .await
}

async fn list_one(
    client: &kube::Client,
    take: &Take,
    filters: &Filters,
    mtime: u64,
    tx: &mpsc::Sender<Batch>,
    progress: &dyn Progress,
) -> ResourceSummary {
    let rt = &take.resource;
    let mut s = ResourceSummary {
        resource: rt.group_resource(),
        group: rt.group.clone(),
        version: rt.version.clone(),
        kind: rt.kind.clone(),
        namespaced: rt.namespaced,
        count: 0,
        list_resource_version: None,
        restarts: 0,
        error: None,
        per_namespace: BTreeMap::new(),
    };
    let opts = ListOptions {
        limit: PAGE_SIZE,
        // lifeboat's own temporary objects (snapshots, claims and Jobs of a backup in progress)
        // are never part of a backup.
        label_selector: Some(crate::cluster::labels::excluding_temporary(
            filters.selector.as_deref().filter(|_| take.use_selector),
        )),
    };
    let mut continue_token: Option<String> = None;
    // After a restart the list starts over; objects up to the last one taken are skipped (the
    // API server lists in (namespace, name) order), so none is written twice.
    let mut last_key: Option<(String, String)> = None;
    loop {
        let page = match cluster::fetch_page_of::<ListedObject>(
            client,
            rt,
            &opts,
            continue_token.as_deref(),
        )
        .await
        {
            Ok(p) => p,
            Err(e) if e.status() == Some(410) && s.restarts < RESTART_LIMIT => {
                tracing::info!(resource = %s.resource, "continue token expired; restarting the list");
                s.restarts += 1;
                continue_token = None;
                continue;
            }
            Err(e) => {
                s.error = Some(format!("{e}"));
                break;
            }
        };
        if s.list_resource_version.is_none() {
            s.list_resource_version = page.resource_version.clone();
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(page.items.len());
        for item in page.items {
            let Some(prepared) = prepare(item, rt) else {
                continue;
            };
            if s.restarts > 0 && last_key.as_ref().is_some_and(|k| prepared.key <= *k) {
                continue;
            }
            if !narrowed_in(&take.narrow, filters, rt, &prepared) {
                continue;
            }
            last_key = Some(prepared.key.clone());
            let (ns, _) = &prepared.key;
            if rt.namespaced {
                *s.per_namespace.entry(ns.clone()).or_default() += 1;
            }
            entries.push(prepared.entry);
        }
        let batch = match archive::encode(&entries, mtime) {
            Ok(b) => b,
            Err(e) => {
                s.error = Some(format!("encoding objects for the archive: {e}"));
                break;
            }
        };
        drop(entries);
        let (objects, bytes) = (batch.entries, batch.raw_bytes);
        if tx.send(batch).await.is_err() {
            // The archive writer stopped; its own error is what gets reported.
            s.error = Some("the archive writer stopped".into());
            return s;
        }
        s.count += objects;
        progress.objects(objects, bytes);
        match page.continue_token {
            Some(c) => continue_token = Some(c),
            None => break,
        }
    }
    progress.resource_done(&s.resource, s.count);
    s
}

struct Prepared {
    key: (String, String),
    entry: Entry,
}

/// A listed object as a backup needs it: `metadata` parsed (to read the name and drop
/// `managedFields`), every other field kept as the server's raw JSON, so the bulk of an
/// object (spec, data) is scanned once and copied, never rebuilt.
pub struct ListedObject {
    metadata: Option<Map<String, Value>>,
    fields: BTreeMap<String, Box<RawValue>>,
}

impl<'de> Deserialize<'de> for ListedObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ListedObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a Kubernetes object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ListedObject, A::Error> {
                let mut obj = ListedObject {
                    metadata: None,
                    fields: BTreeMap::new(),
                };
                while let Some(key) = map.next_key::<String>()? {
                    if key == "metadata" {
                        obj.metadata = Some(map.next_value::<Metadata>()?.0);
                    } else {
                        obj.fields.insert(key, map.next_value()?);
                    }
                }
                Ok(obj)
            }
        }
        d.deserialize_map(V)
    }
}

/// `metadata` without `managedFields`, which is skipped while parsing: on a real cluster it is
/// often the largest part of an object and a restore has no use for it.
struct Metadata(Map<String, Value>);

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Metadata;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("object metadata")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Metadata, A::Error> {
                let mut m = Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "managedFields" {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    } else {
                        m.insert(key, map.next_value()?);
                    }
                }
                Ok(Metadata(m))
            }
        }
        d.deserialize_map(V)
    }
}

/// Makes the object self-describing (list items of built-in types lack apiVersion and kind),
/// drops `managedFields` (large, useless to a restore) and serialises it.
fn prepare(obj: ListedObject, rt: &ResourceType) -> Option<Prepared> {
    let ListedObject {
        metadata,
        mut fields,
    } = obj;
    let meta = metadata?;
    let name = meta.get("name")?.as_str()?.to_owned();
    let ns = meta
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    // to_raw_value serialises straight into a RawValue (from_string would parse it again).
    fields.insert(
        "metadata".into(),
        serde_json::value::to_raw_value(&meta).ok()?,
    );
    if !fields.contains_key("apiVersion") {
        fields.insert(
            "apiVersion".into(),
            serde_json::value::to_raw_value(&rt.api_version()).ok()?,
        );
    }
    if !fields.contains_key("kind") {
        fields.insert(
            "kind".into(),
            serde_json::value::to_raw_value(&rt.kind).ok()?,
        );
    }
    let ns_of_path = if rt.namespaced { ns.as_str() } else { "" };
    let path = archive::entry_path(&rt.group, &rt.version, &rt.plural, ns_of_path, &name);
    let data = serde_json::to_vec(&fields).ok()?;
    Some(Prepared {
        key: (ns, name),
        entry: Entry { path, data },
    })
}

fn narrowed_in(narrow: &Narrow, filters: &Filters, rt: &ResourceType, prepared: &Prepared) -> bool {
    let (ns, name) = &prepared.key;
    match narrow {
        Narrow::Filters => !rt.namespaced || filters.namespace_included(ns),
        Narrow::IncludedNamespaces => filters.namespace_included(name),
        Narrow::CrdNames(names) => names.contains(name),
        // A handful of objects: reading one back is cheap.
        Narrow::Aggregated => serde_json::from_slice::<Value>(&prepared.entry.data)
            .is_ok_and(|o| o["spec"]["service"].is_object()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_aggregated_api_services_are_taken() {
        let rt = ResourceType {
            group: "apiregistration.k8s.io".into(),
            version: "v1".into(),
            kind: "APIService".into(),
            plural: "apiservices".into(),
            namespaced: false,
            verbs: vec![],
        };
        let raw = |v: Value| serde_json::from_str::<ListedObject>(&v.to_string()).unwrap();
        let metrics = json!({"metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {"group": "metrics.k8s.io", "service": {"name": "metrics-server", "namespace": "m"}}});
        let local = json!({"metadata": {"name": "v1.apps", "labels": {"kube-aggregator.kubernetes.io/automanaged": "onstart"}},
            "spec": {"group": "apps", "service": null}});
        let f = Filters::default();
        let taken = |o| narrowed_in(&Narrow::Aggregated, &f, &rt, &prepare(raw(o), &rt).unwrap());
        assert!(taken(metrics));
        assert!(!taken(local));
    }

    #[test]
    fn prepare_adds_type_drops_managed_fields_and_names_the_path() {
        let rt = ResourceType {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            plural: "deployments".into(),
            namespaced: true,
            verbs: vec![],
        };
        let item = json!({"metadata": {"name": "web", "namespace": "shop", "managedFields": [{"manager": "kubectl"}], "uid": "u1"}, "spec": {"replicas": 2}});
        let raw = |v: Value| serde_json::from_str::<ListedObject>(&v.to_string()).unwrap();
        let p = prepare(raw(item), &rt).unwrap();
        assert_eq!(p.entry.path, "apps/v1/deployments/shop/web.json");
        let back: Value = serde_json::from_slice(&p.entry.data).unwrap();
        assert_eq!(back["apiVersion"], "apps/v1");
        assert_eq!(back["kind"], "Deployment");
        assert!(back["metadata"].get("managedFields").is_none());
        assert_eq!(
            back["metadata"]["uid"], "u1",
            "everything else is kept as returned"
        );
        assert_eq!(back["spec"]["replicas"], 2);
        let core = ResourceType {
            group: String::new(),
            kind: "Namespace".into(),
            plural: "namespaces".into(),
            namespaced: false,
            ..rt
        };
        let p = prepare(raw(json!({"metadata": {"name": "shop"}})), &core).unwrap();
        assert_eq!(p.entry.path, "core/v1/namespaces/shop.json");
        assert!(
            prepare(raw(json!({"metadata": {}})), &core).is_none(),
            "an object without a name is not taken"
        );
        let kept = prepare(
            raw(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}, "spec": {"finalizers": ["kubernetes"]}})),
            &core,
        )
        .unwrap();
        let back: Value = serde_json::from_slice(&kept.entry.data).unwrap();
        assert_eq!(
            back["spec"]["finalizers"][0], "kubernetes",
            "fields other than metadata pass through"
        );
    }
}
