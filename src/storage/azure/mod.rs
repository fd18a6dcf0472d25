//! Azure Blob Storage backend on the official SDK (`azure_storage_blob` 1.x).
//!
//! One container (plus an optional prefix) is one location. Writes are conditional creates
//! (`If-None-Match: *`), large files go up as staged blocks committed in one Put Block List, and
//! reads of large objects are parallel ranged GETs. Authentication: Entra ID tokens through
//! `azure_identity`, or the two schemes the SDK lacks, implemented here as pipeline policies:
//! SharedKey signing ([`shared_key`]) and SAS tokens ([`SasPolicy`]).
//!
//! Retries are the SDK's retry policy, configured here: exponential back-off on 408, 429, 500,
//! 502, 503 (ServerBusy), 504 and on transport errors (including the per-try timeout below); no
//! retry on other 4xx.

mod auth;
mod lease;
pub mod shared_key;

use std::num::NonZero;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::error::ErrorKind;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{
    ClientOptions, Context, Etag, ExponentialRetryOptions, HttpClientOptions, NoFormat, Request,
    RequestContent, RetryOptions, StatusCode, Transport, Url, new_http_client,
};
use azure_storage_blob::models::{
    BlobClientDownloadOptions, BlobClientGetPropertiesResultHeaders,
    BlobContainerClientListBlobsOptions, BlockBlobClientCommitBlockListOptions,
    BlockBlobClientUploadOptions, BlockLookupList, HttpRange,
};
use azure_storage_blob::{
    BlobClient, BlobContainerClient, BlobContainerClientOptions, BlobServiceClient,
    BlobServiceClientOptions,
};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use super::transfer::{blocking, io_err};
use super::{
    ObjectMeta, ObjectRead, ObjectWrite, PutOutcome, ReplicationStatus, Result, StorageError,
    TransferOptions, validate_key, validate_prefix,
};
use crate::config::AzureLocation;
use shared_key::SharedKeyPolicy;

use auth::resolve_credential;
pub use auth::{Credential, SasPolicy};

/// How long one try may wait for response headers before it counts as a (retried) timeout.
const TRY_TIMEOUT: Duration = Duration::from_secs(120);

/// Turns a try that gets no response headers within [`TRY_TIMEOUT`] into an I/O error, which the
/// retry policy retries (a hung connection would otherwise hang the operation).
#[derive(Debug)]
struct TryTimeoutPolicy(Duration);

#[async_trait]
impl Policy for TryTimeoutPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        match tokio::time::timeout(self.0, next[0].send(ctx, request, &next[1..])).await {
            Ok(r) => r,
            Err(_) => Err(azure_core::Error::with_message(
                ErrorKind::Io,
                format!("no response within {:?}", self.0),
            )),
        }
    }
}

/// Network behaviour of an [`AzureBackend`]: per-try timeout and retry back-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureOptions {
    /// How long one try may wait for response headers before it is abandoned and retried.
    pub try_timeout: Duration,
    /// First back-off delay; it doubles (with jitter) on each retry.
    pub initial_delay: Duration,
    /// Retries after the first try.
    pub max_retries: u32,
}

impl Default for AzureOptions {
    fn default() -> Self {
        Self {
            try_timeout: TRY_TIMEOUT,
            initial_delay: Duration::from_millis(250),
            max_retries: 8,
        }
    }
}

/// A container (and prefix) of a storage account.
pub struct AzureBackend {
    location: String,
    container: BlobContainerClient,
    service: BlobServiceClient,
    /// Empty, or the configured prefix with a trailing `/`.
    prefix: String,
    secondary: bool,
}

impl std::fmt::Debug for AzureBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureBackend")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl AzureBackend {
    /// Opens location `name`, taking credentials as its `auth` says (environment, files,
    /// identity endpoints).
    pub fn new(name: &str, loc: &AzureLocation) -> Result<Self> {
        let cred = resolve_credential(name, loc)?;
        Self::with_credential(name, loc, cred)
    }

    /// Opens location `name` with explicit credentials (`loc.auth` and secret sources ignored).
    pub fn with_credential(name: &str, loc: &AzureLocation, cred: Credential) -> Result<Self> {
        Self::with_options(name, loc, cred, &AzureOptions::default())
    }

    /// Opens location `name` with explicit credentials and network behaviour.
    pub fn with_options(
        name: &str,
        loc: &AzureLocation,
        cred: Credential,
        opts: &AzureOptions,
    ) -> Result<Self> {
        let config_err = |reason: String| StorageError::Config {
            location: name.to_owned(),
            reason,
        };
        let account_url = loc.endpoint.account_url(&loc.account);
        let service_url = Url::parse(&format!("{account_url}/"))
            .map_err(|e| config_err(format!("endpoint {account_url:?} is not a URL: {e}")))?;
        let mut container_url = service_url.clone();
        container_url
            .path_segments_mut()
            .map_err(|()| config_err(format!("endpoint {account_url:?} cannot hold a path")))?
            .pop_if_empty()
            .push(&loc.container);

        let mut per_try: Vec<Arc<dyn Policy>> = vec![Arc::new(TryTimeoutPolicy(opts.try_timeout))];
        let mut token = None;
        match cred {
            Credential::SharedKey(key) => per_try.push(Arc::new(
                SharedKeyPolicy::new(&loc.account, &key).map_err(|e| config_err(e.to_string()))?,
            )),
            Credential::Sas(t) => per_try.push(Arc::new(SasPolicy::new(&t))),
            Credential::Token(t) => token = Some(t),
        }
        let client_options = ClientOptions {
            per_try_policies: per_try,
            retry: RetryOptions::exponential(ExponentialRetryOptions {
                initial_delay: azure_core::time::Duration::milliseconds(
                    opts.initial_delay
                        .as_millis()
                        .try_into()
                        .unwrap_or(i64::MAX),
                ),
                max_retries: opts.max_retries,
                max_total_elapsed: azure_core::time::Duration::seconds(180),
                max_delay: azure_core::time::Duration::seconds(30),
            }),
            // One connection pool for the container and service clients; no automatic
            // decompression, which the SDK's ranged downloads require.
            transport: Some(Transport::new(new_http_client(Some(HttpClientOptions {
                automatic_decompression: false,
            })))),
            ..Default::default()
        };
        let container = BlobContainerClient::new(
            container_url,
            token.clone(),
            Some(BlobContainerClientOptions {
                client_options: client_options.clone(),
                ..Default::default()
            }),
        )
        .map_err(|e| config_err(format!("cannot build a container client: {e}")))?;
        let service = BlobServiceClient::new(
            service_url,
            token,
            Some(BlobServiceClientOptions {
                client_options,
                ..Default::default()
            }),
        )
        .map_err(|e| config_err(format!("cannot build a service client: {e}")))?;

        let prefix = match loc.prefix.as_deref().map(|p| p.trim_matches('/')) {
            None | Some("") => String::new(),
            Some(p) => format!("{p}/"),
        };
        let location = format!(
            "azure:{}/{}/{}",
            account_url,
            loc.container,
            prefix.trim_end_matches('/')
        );
        let location = location.trim_end_matches('/').to_owned();
        Ok(Self {
            location,
            container,
            service,
            prefix,
            secondary: loc.endpoint.is_secondary(&loc.account),
        })
    }

    /// Creates the container; returns true if and only if it did not exist before.
    pub async fn create_container(&self) -> Result<bool> {
        match self.container.create(None).await {
            Ok(_) => Ok(true),
            Err(e) if e.http_status() == Some(StatusCode::Conflict) => Ok(false),
            Err(e) => Err(self.map_err("create container", "", e)),
        }
    }

    fn blob(&self, key: &str) -> Result<BlobClient> {
        validate_key(key)?;
        Ok(self.container.blob_client(&format!("{}{key}", self.prefix)))
    }

    fn map_err(&self, op: &'static str, key: &str, e: azure_core::Error) -> StorageError {
        match e.http_status() {
            Some(s @ (StatusCode::Unauthorized | StatusCode::Forbidden)) => StorageError::Denied {
                location: self.location.clone(),
                op,
                key: key.to_owned(),
                status: u16::from(s),
            },
            // A missing container is a location problem, not a missing object: keep the
            // service's error code in the chain.
            Some(StatusCode::NotFound) if !is_container_not_found(&e) => StorageError::NotFound {
                location: self.location.clone(),
                key: key.to_owned(),
            },
            _ => StorageError::Azure {
                location: self.location.clone(),
                op,
                key: key.to_owned(),
                source: Box::new(e),
            },
        }
    }

    fn size_err(&self, key: &str, range: &Range<u64>, size: u64) -> StorageError {
        StorageError::InvalidRange {
            key: key.to_owned(),
            start: range.start,
            end: range.end,
            size,
        }
    }
}

/// Returns true if and only if the service answered `ContainerNotFound`.
fn is_container_not_found(e: &azure_core::Error) -> bool {
    matches!(e.kind(), ErrorKind::HttpResponse { error_code: Some(c), .. } if c == "ContainerNotFound")
}

/// Returns true if and only if a conditional create failed because the blob exists.
fn is_already_exists(e: &azure_core::Error) -> bool {
    match e.kind() {
        ErrorKind::HttpResponse {
            status: StatusCode::PreconditionFailed,
            ..
        } => true,
        ErrorKind::HttpResponse {
            status: StatusCode::Conflict,
            error_code,
            ..
        } => error_code
            .as_deref()
            .is_none_or(|c| c == "BlobAlreadyExists"),
        _ => false,
    }
}

fn to_jiff(t: azure_core::time::OffsetDateTime) -> Option<jiff::Timestamp> {
    jiff::Timestamp::from_nanosecond(t.unix_timestamp_nanos()).ok()
}

#[async_trait]
impl ObjectRead for AzureBackend {
    fn location(&self) -> &str {
        &self.location
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let blob = self.blob(key)?;
        let rsp = blob
            .download(None)
            .await
            .map_err(|e| self.map_err("get", key, e))?;
        rsp.body
            .collect()
            .await
            .map_err(|e| self.map_err("read body of", key, e))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let blob = self.blob(key)?;
        let len = range.end.saturating_sub(range.start);
        let Some(partition) = NonZero::new(len as usize) else {
            // HTTP cannot express an empty range; check the bounds with a HEAD instead.
            let meta = self
                .head(key)
                .await?
                .ok_or_else(|| self.map_err_not_found(key))?;
            if range.start > range.end || range.end > meta.size {
                return Err(self.size_err(key, &range, meta.size));
            }
            return Ok(Bytes::new());
        };
        let opts = BlobClientDownloadOptions {
            range: Some(HttpRange::new(range.start, len)),
            // One GET for the whole range; callers parallelise across ranges.
            parallel: Some(NonZero::<usize>::MIN),
            partition_size: Some(partition),
            ..Default::default()
        };
        let data = match blob.download(Some(opts)).await {
            Ok(rsp) => rsp
                .body
                .collect()
                .await
                .map_err(|e| self.map_err("read body of", key, e))?,
            Err(e) if e.http_status() == Some(StatusCode::RequestedRangeNotSatisfiable) => {
                Bytes::new()
            }
            Err(e) => return Err(self.map_err("get range of", key, e)),
        };
        if data.len() as u64 != len {
            // The service clips a range that runs past the end; report it like the other backends.
            let size = self.head(key).await?.map(|m| m.size).unwrap_or(0);
            return Err(self.size_err(key, &range, size));
        }
        Ok(data)
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let blob = self.blob(key)?;
        match blob.get_properties(None).await {
            Ok(rsp) => {
                let size = rsp
                    .content_length()
                    .map_err(|e| self.map_err("read properties of", key, e))?
                    .unwrap_or(0);
                let last_modified = rsp.last_modified().ok().flatten().and_then(to_jiff);
                Ok(Some(ObjectMeta {
                    key: key.to_owned(),
                    size,
                    last_modified,
                }))
            }
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => Ok(None),
            Err(e) => Err(self.map_err("head", key, e)),
        }
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>> {
        if let Err(e) = validate_prefix(prefix) {
            return Box::pin(futures::stream::once(async move { Err(e) }));
        }
        let full_prefix = format!("{}{prefix}", self.prefix);
        let opts = BlobContainerClientListBlobsOptions {
            // An empty `prefix=` goes out as a bare `prefix`, which breaks the SharedKey
            // canonical query; leave it out instead.
            prefix: (!full_prefix.is_empty()).then_some(full_prefix),
            ..Default::default()
        };
        let pages = match self.container.list_blobs(Some(opts)) {
            Ok(p) => p.into_pages(),
            Err(e) => {
                return Box::pin(futures::stream::once(async move {
                    Err(self.map_err("list", prefix, e))
                }));
            }
        };
        // Pages (up to 5,000 blobs each) are fetched as the stream is consumed.
        pages
            .map_err(move |e| self.map_err("list", prefix, e))
            .and_then(move |page| async move {
                let page = page
                    .into_model()
                    .map_err(|e| self.map_err("parse listing of", prefix, e))?;
                let items: Vec<Result<ObjectMeta>> = page
                    .blob_items
                    .into_iter()
                    .filter_map(|b| {
                        let name = b.name?;
                        let key = name.strip_prefix(&self.prefix)?.to_owned();
                        let props = b.properties.unwrap_or_default();
                        Some(Ok(ObjectMeta {
                            key,
                            size: props.content_length.unwrap_or(0),
                            last_modified: props.last_modified.and_then(to_jiff),
                        }))
                    })
                    .collect();
                Ok(futures::stream::iter(items))
            })
            .try_flatten()
            .boxed()
    }

    async fn replication_status(&self) -> Result<Option<ReplicationStatus>> {
        if !self.secondary {
            return Ok(None);
        }
        let rsp = self
            .service
            .get_statistics(None)
            .await
            .map_err(|e| self.map_err("get service stats", "", e))?;
        let stats = rsp
            .into_model()
            .map_err(|e| self.map_err("parse service stats", "", e))?;
        let geo = stats.geo_replication.unwrap_or_default();
        Ok(Some(ReplicationStatus {
            status: geo
                .status
                .map(|s| s.to_string().to_lowercase())
                .unwrap_or_else(|| "unknown".to_owned()),
            last_sync_time: geo.last_sync_time.and_then(to_jiff),
        }))
    }
}

impl AzureBackend {
    fn map_err_not_found(&self, key: &str) -> StorageError {
        StorageError::NotFound {
            location: self.location.clone(),
            key: key.to_owned(),
        }
    }
}

#[async_trait]
impl ObjectWrite for AzureBackend {
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutOutcome> {
        let blob = self.blob(key)?;
        let opts = BlockBlobClientUploadOptions {
            if_none_match: Some(Etag::from("*")),
            // Objects up to this size go in one Put Blob; larger ones in staged blocks.
            partition_size: Some(
                NonZero::new(super::transfer::DEFAULT_BLOCK_SIZE).expect("non-zero"),
            ),
            ..Default::default()
        };
        let content: RequestContent<Bytes, NoFormat> = data.into();
        match blob.block_blob_client().upload(content, Some(opts)).await {
            Ok(_) => Ok(PutOutcome::Created),
            Err(e) if is_already_exists(&e) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(self.map_err("put", key, e)),
        }
    }

    async fn put_file_if_absent(
        &self,
        key: &str,
        path: &Path,
        opts: &TransferOptions,
    ) -> Result<PutOutcome> {
        let blob = self.blob(key)?;
        // Cheap early exit: do not send gigabytes that the final commit would refuse.
        if self.head(key).await?.is_some() {
            return Ok(PutOutcome::AlreadyExists);
        }
        let p = path.to_path_buf();
        let file =
            blocking(move || std::fs::File::open(&p).map_err(io_err("open upload source", &p)))
                .await?;
        let size = file
            .metadata()
            .map_err(io_err("stat upload source", path))?
            .len();
        if size <= opts.block_size() {
            let p = path.to_path_buf();
            let data =
                blocking(move || std::fs::read(&p).map_err(io_err("read upload source", &p)))
                    .await?;
            return self.put_if_absent(key, Bytes::from(data)).await;
        }

        let file = Arc::new(file);
        let block_blob = blob.block_blob_client();
        // A per-upload nonce keeps concurrent uploads of one key from sharing uncommitted blocks.
        let nonce = azure_core::Uuid::new_v4().simple().to_string();
        let block_id = |i: u64| format!("{nonce}-{i:010}").into_bytes();
        let ranges: Vec<Range<u64>> = opts.ranges(size).collect();
        let block_ids: Vec<Vec<u8>> = (0..ranges.len() as u64).map(block_id).collect();
        futures::stream::iter(ranges.into_iter().zip(block_ids.iter().cloned()))
            .map(|(range, id)| {
                let file = file.clone();
                let block_blob = &block_blob;
                let path = path.to_path_buf();
                async move {
                    let len = range.end - range.start;
                    let data = blocking(move || {
                        use std::os::unix::fs::FileExt;
                        let mut buf = vec![0u8; len as usize];
                        file.read_exact_at(&mut buf, range.start)
                            .map_err(io_err("read upload source", &path))?;
                        Ok(Bytes::from(buf))
                    })
                    .await?;
                    block_blob
                        .stage_block(&id, len, data.into(), None)
                        .await
                        .map_err(|e| self.map_err("put block of", key, e))?;
                    Ok::<_, StorageError>(())
                }
            })
            .buffer_unordered(opts.concurrency())
            .try_collect::<()>()
            .await?;

        let list = BlockLookupList {
            latest: Some(block_ids),
            ..Default::default()
        };
        let body = list
            .try_into()
            .map_err(|e| self.map_err("encode block list of", key, e))?;
        let commit_opts = BlockBlobClientCommitBlockListOptions {
            if_none_match: Some(Etag::from("*")),
            ..Default::default()
        };
        match block_blob.commit_block_list(body, Some(commit_opts)).await {
            Ok(_) => Ok(PutOutcome::Created),
            Err(e) if is_already_exists(&e) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(self.map_err("put block list of", key, e)),
        }
    }

    async fn create_location(&self) -> Result<bool> {
        self.create_container().await
    }

    async fn try_lease(
        &self,
        key: &str,
        ttl: std::time::Duration,
        holder: &str,
    ) -> Result<super::LeaseAttempt> {
        self.acquire_lease(key, ttl, holder).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let blob = self.blob(key)?;
        match blob.delete(None).await {
            Ok(_) => Ok(()),
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => Ok(()),
            Err(e) => Err(self.map_err("delete", key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_codes_mean_already_exists() {
        let err = |status, code: Option<&str>| {
            azure_core::Error::new(
                ErrorKind::HttpResponse {
                    status,
                    error_code: code.map(str::to_owned),
                    raw_response: None,
                },
                "x",
            )
        };
        assert!(is_already_exists(&err(
            StatusCode::Conflict,
            Some("BlobAlreadyExists")
        )));
        assert!(is_already_exists(&err(
            StatusCode::PreconditionFailed,
            Some("ConditionNotMet")
        )));
        assert!(!is_already_exists(&err(
            StatusCode::Conflict,
            Some("LeaseIdMissing")
        )));
        assert!(!is_already_exists(&err(StatusCode::Forbidden, None)));
    }
}
