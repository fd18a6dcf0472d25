//! The controllers' requests to a real API server: paths by [`Kind`], one JSON request, and the
//! HTTP status of a refusal.

use serde_json::Value;

use super::Kind;

/// The REST path of a kind's collection (`name` None) or of one object, in namespace `ns` when
/// the kind is namespaced and `ns` is given (every namespace otherwise).
pub(super) fn path(k: Kind, ns: Option<&str>, name: Option<&str>) -> String {
    let (group, plural, _) = k.gpk();
    let mut p = if group.is_empty() {
        "/api/v1".to_owned()
    } else {
        format!("/apis/{}", k.api_version())
    };
    if let Some(ns) = ns.filter(|_| k.namespaced()) {
        p.push_str("/namespaces/");
        p.push_str(ns);
    }
    p.push('/');
    p.push_str(plural);
    if let Some(name) = name {
        p.push('/');
        p.push_str(name);
    }
    p
}

/// Sends one request with an optional JSON body and returns the JSON answer.
pub(super) async fn send(
    client: &kube::Client,
    method: http::Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, kube::Error> {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(bytes)
        .map_err(kube::Error::HttpError)?;
    client.request::<Value>(req).await
}

/// The HTTP status of an API server's refusal (None for a transport error).
pub(super) fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_rest_layout() {
        assert_eq!(
            path(Kind::Pod, Some("a"), Some("p")),
            "/api/v1/namespaces/a/pods/p"
        );
        assert_eq!(path(Kind::Pod, None, None), "/api/v1/pods");
        assert_eq!(
            path(Kind::Pv, Some("ignored"), Some("pv-1")),
            "/api/v1/persistentvolumes/pv-1"
        );
        assert_eq!(
            path(Kind::VolumeSnapshotContent, None, Some("c")),
            "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents/c"
        );
        assert_eq!(
            path(Kind::Job, Some("b"), None),
            "/apis/batch/v1/namespaces/b/jobs"
        );
    }
}
