//! One API request with the retries a busy API server asks for: 429 honouring Retry-After,
//! 5xx with exponential back-off; other statuses come back as [`ClusterError::Api`] with the
//! server's `Status` reason and message.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use serde::Deserialize;

use super::ClusterError;

/// How many times a throttled (429) or failing (5xx) request is retried.
pub const RETRY_LIMIT: u32 = 8;
/// Longest wait between retries, whatever Retry-After says.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Deserialize, Default)]
struct WireStatus {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

/// Sends `method uri` with an optional JSON (or `content_type`) body; returns the response body
/// of a 2xx answer.
pub async fn send(
    client: &kube::Client,
    op: &'static str,
    method: Method,
    uri: &str,
    body: Option<(&'static str, Vec<u8>)>,
) -> Result<Bytes, ClusterError> {
    send_retrying(client, op, method, uri, body, RETRY_LIMIT).await
}

/// [`send`] with at most `retries` retries of a throttled or failing answer.
pub async fn send_retrying(
    client: &kube::Client,
    op: &'static str,
    method: Method,
    uri: &str,
    body: Option<(&'static str, Vec<u8>)>,
    retries: u32,
) -> Result<Bytes, ClusterError> {
    let path = uri.split('?').next().unwrap_or(uri).to_owned();
    let mut attempt = 0;
    loop {
        let mut builder = Request::builder().method(method.clone()).uri(uri);
        if let Some((ct, _)) = &body {
            builder = builder.header(http::header::CONTENT_TYPE, *ct);
        }
        let req_body = match &body {
            Some((_, b)) => kube::client::Body::from(b.clone()),
            None => kube::client::Body::empty(),
        };
        let req = builder
            .body(req_body)
            .expect("a request with a valid path builds");
        let res = client
            .send(req)
            .await
            .map_err(|source| ClusterError::Request {
                op,
                path: path.clone(),
                source,
            })?;
        let status = res.status();
        let retry_after = res
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let bytes =
            res.into_body()
                .collect_bytes()
                .await
                .map_err(|source| ClusterError::Request {
                    op,
                    path: path.clone(),
                    source,
                })?;
        if status.is_success() {
            return Ok(bytes);
        }
        let retryable = status.as_u16() == 429 || status.is_server_error();
        if retryable && attempt < retries {
            let backoff = match retry_after {
                Some(s) => Duration::from_secs(s),
                None => Duration::from_millis(100 << attempt.min(8)),
            }
            .min(MAX_BACKOFF);
            tracing::debug!(
                op,
                path,
                status = status.as_u16(),
                ?backoff,
                attempt,
                "throttled or failing; retrying"
            );
            attempt += 1;
            tokio::time::sleep(backoff).await;
            continue;
        }
        let st: WireStatus = serde_json::from_slice(&bytes).unwrap_or_default();
        return Err(ClusterError::Api {
            op,
            path,
            code: status.as_u16(),
            reason: st.reason,
            message: st.message,
        });
    }
}
