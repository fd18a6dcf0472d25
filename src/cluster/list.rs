//! Listing one resource page by page, with the retries a busy API server asks for.

use std::time::Duration;

use http::Request;
use serde::Deserialize;

use super::{ClusterError, ResourceType};

/// How many times a throttled (429) or failing (5xx) page request is retried.
pub const RETRY_LIMIT: u32 = 8;
/// Longest wait between retries, whatever Retry-After says.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Options of one page request.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Page size.
    pub limit: u32,
    /// Server-side label selector.
    pub label_selector: Option<String>,
}

/// One page of a list.
#[derive(Debug, Default)]
pub struct Page {
    /// The objects, as the server sent them.
    pub items: Vec<serde_json::Value>,
    /// The list's resourceVersion.
    pub resource_version: Option<String>,
    /// Token for the next page; `None` on the last page.
    pub continue_token: Option<String>,
}

#[derive(Deserialize)]
struct WireList {
    #[serde(default)]
    metadata: WireListMeta,
    #[serde(default)]
    items: Option<Vec<serde_json::Value>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireListMeta {
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default, rename = "continue")]
    continue_: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireStatus {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

/// Fetches one page of `rt` across all namespaces. Retries 429 (honouring Retry-After) and
/// 5xx with exponential back-off; any other error status is returned as
/// [`ClusterError::Api`] (410 Gone means the continue token expired: restart the list).
pub async fn fetch_page(
    client: &kube::Client,
    rt: &ResourceType,
    opts: &ListOptions,
    continue_token: Option<&str>,
) -> Result<Page, ClusterError> {
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
    let mut attempt = 0;
    loop {
        let req = Request::get(&uri)
            .body(kube::client::Body::empty())
            .expect("a GET with a valid path builds");
        let res = client
            .send(req)
            .await
            .map_err(|source| ClusterError::Request {
                op: "list",
                path: path.clone(),
                source,
            })?;
        let status = res.status();
        let retry_after = res
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body =
            res.into_body()
                .collect_bytes()
                .await
                .map_err(|source| ClusterError::Request {
                    op: "list",
                    path: path.clone(),
                    source,
                })?;
        if status.is_success() {
            let list: WireList =
                serde_json::from_slice(&body).map_err(|source| ClusterError::Decode {
                    op: "list",
                    path: path.clone(),
                    source,
                })?;
            return Ok(Page {
                items: list.items.unwrap_or_default(),
                resource_version: list.metadata.resource_version,
                continue_token: list.metadata.continue_.filter(|c| !c.is_empty()),
            });
        }
        let retryable = status.as_u16() == 429 || status.is_server_error();
        if retryable && attempt < RETRY_LIMIT {
            let backoff = match retry_after {
                Some(s) => Duration::from_secs(s),
                None => Duration::from_millis(100 << attempt.min(8)),
            }
            .min(MAX_BACKOFF);
            tracing::debug!(
                path,
                status = status.as_u16(),
                ?backoff,
                attempt,
                "list throttled or failing; retrying"
            );
            attempt += 1;
            tokio::time::sleep(backoff).await;
            continue;
        }
        let st: WireStatus = serde_json::from_slice(&body).unwrap_or_default();
        return Err(ClusterError::Api {
            op: "list",
            path,
            code: status.as_u16(),
            reason: st.reason,
            message: st.message,
        });
    }
}
