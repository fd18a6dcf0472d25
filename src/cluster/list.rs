//! Listing one resource page by page.

use http::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{ClusterError, ResourceType, request};

/// Options of one page request.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Page size.
    pub limit: u32,
    /// Server-side label selector.
    pub label_selector: Option<String>,
}

/// One page of a list, its items decoded as `T` (JSON values by default; a caller that passes
/// most of each object through untouched decodes less).
#[derive(Debug)]
pub struct Page<T = serde_json::Value> {
    /// The objects.
    pub items: Vec<T>,
    /// The list's resourceVersion.
    pub resource_version: Option<String>,
    /// Token for the next page; `None` on the last page.
    pub continue_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct WireList<T> {
    #[serde(default)]
    metadata: WireListMeta,
    #[serde(default = "Option::default")]
    items: Option<Vec<T>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireListMeta {
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default, rename = "continue")]
    continue_: Option<String>,
}

/// Fetches one page of `rt` across all namespaces (retrying throttling and server errors),
/// objects as JSON values. A 410 Gone ([`ClusterError::status`]) means the continue token
/// expired: restart the list.
pub async fn fetch_page(
    client: &kube::Client,
    rt: &ResourceType,
    opts: &ListOptions,
    continue_token: Option<&str>,
) -> Result<Page, ClusterError> {
    fetch_page_of(client, rt, opts, continue_token).await
}

/// [`fetch_page`] with the items decoded as `T`.
pub async fn fetch_page_of<T: DeserializeOwned>(
    client: &kube::Client,
    rt: &ResourceType,
    opts: &ListOptions,
    continue_token: Option<&str>,
) -> Result<Page<T>, ClusterError> {
    let path = rt.collection_path();
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("limit", &opts.limit.to_string());
    if let Some(sel) = &opts.label_selector {
        query.append_pair("labelSelector", sel);
    }
    if let Some(c) = continue_token {
        query.append_pair("continue", c);
    }
    let uri = format!("{path}?{}", query.finish());
    let body = request::send(client, "list", Method::GET, &uri, None).await?;
    let list: WireList<T> =
        serde_json::from_slice(&body).map_err(|source| ClusterError::Decode {
            op: "list",
            path,
            source,
        })?;
    Ok(Page {
        items: list.items.unwrap_or_default(),
        resource_version: list.metadata.resource_version,
        continue_token: list.metadata.continue_.filter(|c| !c.is_empty()),
    })
}

/// Every object of `rt` across all namespaces, page by page (for views that need them all,
/// such as a restore's look at what already exists).
pub async fn list_all(
    client: &kube::Client,
    rt: &ResourceType,
    page_size: u32,
) -> Result<Vec<serde_json::Value>, ClusterError> {
    let opts = ListOptions {
        limit: page_size,
        label_selector: None,
    };
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = fetch_page(client, rt, &opts, token.as_deref()).await?;
        out.extend(page.items);
        match page.continue_token {
            Some(c) => token = Some(c),
            None => return Ok(out),
        }
    }
}
