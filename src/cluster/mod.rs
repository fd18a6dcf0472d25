//! Talking to a Kubernetes cluster: connecting by kubeconfig context or in-cluster, discovering
//! what it serves, and listing it page by page. Knows nothing of repositories.

mod connect;
mod discovery;
pub mod job;
pub mod lease;
mod list;
pub mod objects;
mod request;
pub mod status;

pub use connect::{Connected, connect};
pub use discovery::{Discovered, ResourceType, collection_path, discover};
pub use list::{ListOptions, Page, fetch_page, fetch_page_of, list_all};
pub use request::{RETRY_LIMIT, send};

/// Errors talking to a cluster. Each names the phase and the object involved.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The kubeconfig or in-cluster config could not be loaded.
    #[error("cannot load the credentials of cluster {cluster:?}: {detail}")]
    Config {
        /// Config name of the cluster.
        cluster: String,
        /// What went wrong (from kube's config loader).
        detail: String,
    },
    /// A client could not be built.
    #[error("cannot create a client for cluster {cluster:?}")]
    Client {
        /// Config name of the cluster.
        cluster: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// A request failed in transport.
    #[error("{op} {path} failed")]
    Request {
        /// What was being done.
        op: &'static str,
        /// The request path.
        path: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The API server answered with an error status.
    #[error("{op} {path}: the API server answered {code} {reason}: {message}")]
    Api {
        /// What was being done.
        op: &'static str,
        /// The request path.
        path: String,
        /// HTTP status.
        code: u16,
        /// `Status.reason`.
        reason: String,
        /// `Status.message`.
        message: String,
    },
    /// The answer did not parse.
    #[error("{op} {path}: unreadable answer")]
    Decode {
        /// What was being done.
        op: &'static str,
        /// The request path.
        path: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

impl ClusterError {
    /// The HTTP status the server answered, if this is an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClusterError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}
