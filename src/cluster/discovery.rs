//! What the cluster serves: every listable resource at its group's preferred version.

use std::collections::BTreeSet;

use futures::StreamExt;
use http::Method;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIGroupList, APIResourceList, APIVersions};
use k8s_openapi::apimachinery::pkg::version::Info;
use serde::Serialize;

use super::ClusterError;

/// Group-version queries in flight at once.
const DISCOVERY_CONCURRENCY: usize = 8;

/// One served resource type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ResourceType {
    /// API group; `""` for the core group.
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural resource name, as in URLs.
    pub plural: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Verbs the server allows.
    pub verbs: Vec<String>,
}

impl ResourceType {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, or `configmaps` for the core group: how kubectl and users name it.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// URL of the collection, across all namespaces.
    pub fn collection_path(&self) -> String {
        collection_path(&self.group, &self.version, &self.plural, "")
    }

    /// Returns true if and only if the server allows `verb` on it.
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }
}

/// URL of a collection: across all namespaces when `namespace` is empty (or the resource is
/// cluster-scoped), else in that namespace.
pub fn collection_path(group: &str, version: &str, plural: &str, namespace: &str) -> String {
    let base = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    if namespace.is_empty() {
        format!("{base}/{plural}")
    } else {
        format!("{base}/namespaces/{namespace}/{plural}")
    }
}

/// The outcome of discovery: what is served, and which groups could not be asked.
#[derive(Debug, Clone, Default)]
pub struct Discovered {
    /// Every resource, one entry per group and plural, at the preferred version of its group
    /// (or the newest version that serves it, if the preferred one does not).
    pub resources: Vec<ResourceType>,
    /// Group-versions whose discovery failed (e.g. an aggregated API answering 503), with why.
    pub failed: Vec<(String, String)>,
    /// The server's `gitVersion`.
    pub server_version: Option<String>,
    /// Every group-version that answered (`apps/v1`, `v1`), preferred or not.
    pub group_versions: BTreeSet<String>,
}

/// How many times one discovery request is retried (429, 5xx): a few quick tries, so that a
/// passing fault does not drop a group while an aggregated API that is down (a common state)
/// costs about a second and a half, not minutes.
const DISCOVERY_RETRIES: u32 = 4;

/// GETs one discovery document.
async fn get<T: serde::de::DeserializeOwned>(
    client: &kube::Client,
    path: &str,
) -> Result<T, ClusterError> {
    let bytes = super::request::send_retrying(
        client,
        "discover",
        Method::GET,
        path,
        None,
        DISCOVERY_RETRIES,
    )
    .await?;
    serde_json::from_slice(&bytes).map_err(|source| ClusterError::Decode {
        op: "discover",
        path: path.to_owned(),
        source,
    })
}

/// Discovers every resource the cluster serves. `/api` and `/apis` must answer; a group-version
/// that fails is reported in [`Discovered::failed`], not fatal.
pub async fn discover(client: &kube::Client) -> Result<Discovered, ClusterError> {
    let core: APIVersions = get(client, "/api").await?;
    let groups: APIGroupList = get(client, "/apis").await?;

    // (group, version) pairs in preference order: the group's preferred version first.
    let mut wanted: Vec<(String, String)> = core
        .versions
        .iter()
        .map(|v| (String::new(), v.clone()))
        .collect();
    for g in &groups.groups {
        let preferred = g.preferred_version.as_ref().map(|p| p.version.clone());
        if let Some(p) = &preferred {
            wanted.push((g.name.clone(), p.clone()));
        }
        for v in &g.versions {
            if Some(&v.version) != preferred.as_ref() {
                wanted.push((g.name.clone(), v.version.clone()));
            }
        }
    }

    let lists: Vec<_> = futures::stream::iter(wanted.iter().cloned())
        .map(|(group, version)| async move {
            let path = if group.is_empty() {
                format!("/api/{version}")
            } else {
                format!("/apis/{group}/{version}")
            };
            let res = get::<APIResourceList>(client, &path).await;
            (group, version, res)
        })
        .buffered(DISCOVERY_CONCURRENCY)
        .collect()
        .await;

    let version: Option<Info> = get(client, "/version").await.ok();
    let mut out = Discovered {
        server_version: version.map(|i| i.git_version),
        ..Default::default()
    };
    let mut seen = BTreeSet::new();
    for (group, version, res) in lists {
        match res {
            Ok(list) => {
                out.group_versions.insert(list.group_version.clone());
                add_resources(&mut out.resources, &mut seen, &group, &version, list)
            }
            Err(e) => {
                let gv = if group.is_empty() {
                    version
                } else {
                    format!("{group}/{version}")
                };
                out.failed.push((gv, e.to_string()));
            }
        }
    }
    Ok(out)
}

fn add_resources(
    out: &mut Vec<ResourceType>,
    seen: &mut BTreeSet<(String, String)>,
    group: &str,
    version: &str,
    list: APIResourceList,
) {
    for r in list.resources {
        // Subresources (`pods/log`, `deployments/scale`) are not objects of their own.
        if r.name.contains('/') {
            continue;
        }
        if !seen.insert((group.to_owned(), r.name.clone())) {
            continue;
        }
        out.push(ResourceType {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: r.kind,
            plural: r.name,
            namespaced: r.namespaced,
            verbs: r.verbs,
        });
    }
}
