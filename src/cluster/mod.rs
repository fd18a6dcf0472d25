//! Talking to a Kubernetes cluster: connecting by kubeconfig context or in-cluster, discovering
//! what it serves, and listing it page by page. Knows nothing of repositories.

mod connect;
mod discovery;
pub mod job;
pub mod labels;
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

    /// Returns true if and only if the server answered 409 `AlreadyExists` (a create of an
    /// object that exists).
    pub fn is_already_exists(&self) -> bool {
        matches!(self, ClusterError::Api { code: 409, reason, .. } if reason == "AlreadyExists")
    }

    /// Returns true if and only if the server answered 409 `Conflict` (an update of a stale
    /// `resourceVersion`).
    pub fn is_conflict(&self) -> bool {
        matches!(self, ClusterError::Api { code: 409, reason, .. } if reason == "Conflict")
    }

    /// Returns true if and only if the server answered 404 (the object or its type does not
    /// exist).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClusterError::Api { code: 404, .. })
    }
}

#[cfg(test)]
mod tests {
    use super::ClusterError;

    fn api(code: u16, reason: &str) -> ClusterError {
        ClusterError::Api {
            op: "create",
            path: "/api/v1/namespaces".into(),
            code,
            reason: reason.into(),
            message: String::new(),
        }
    }

    #[test]
    fn predicates_tell_the_outcomes_a_plan_expects_apart() {
        assert!(api(409, "AlreadyExists").is_already_exists());
        assert!(!api(409, "AlreadyExists").is_conflict());
        assert!(api(409, "Conflict").is_conflict());
        assert!(!api(409, "Conflict").is_already_exists());
        assert!(api(404, "NotFound").is_not_found());
        assert!(!api(410, "Expired").is_not_found());
        let decode = ClusterError::Decode {
            op: "get",
            path: "/".into(),
            source: serde_json::from_str::<u8>("x").unwrap_err(),
        };
        assert!(!decode.is_not_found() && !decode.is_already_exists() && !decode.is_conflict());
    }
}
