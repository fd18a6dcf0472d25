//! The kubelet's HTTPS endpoint, as far as lifeboat needs it: the real API server serves
//! `pods/{name}/log` by asking the pod's node at `status.daemonEndpoints.kubeletEndpoint`, so the
//! agent answers `GET /containerLogs/{namespace}/{pod}/{container}` (with `tailLines`) from the
//! logs its kubelet writes. `pods/exec` (backup hooks) is not served: it needs the SPDY or
//! WebSocket streaming protocol of a real kubelet, so hook tests stay on the simulator.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::AgentError;

/// Binds 127.0.0.1:`port` (0: any free port) with the serving certificate and key (PEM files),
/// and serves the container logs under `state_dir` until `shutdown`. Returns the bound port.
pub(super) async fn serve(
    port: u16,
    cert: &Path,
    key: &Path,
    state_dir: PathBuf,
    shutdown: crate::sim::Shutdown,
) -> Result<u16, AgentError> {
    let tls_err = |detail: String| AgentError::Endpoint(detail);
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            tls_err(format!(
                "reading the serving certificate {}: {e}",
                cert.display()
            ))
        })?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| tls_err(format!("reading the serving key {}: {e}", key.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
    .map_err(|e| tls_err(format!("the serving certificate: {e}")))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| tls_err(format!("binding 127.0.0.1:{port}: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| tls_err(format!("the bound address: {e}")))?
        .port();
    let state_dir = Arc::new(state_dir);
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.wait() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "kubelet endpoint: accept failed");
                        continue;
                    }
                },
            };
            let (acceptor, state_dir) = (acceptor.clone(), state_dir.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    let state_dir = state_dir.clone();
                    async move { Ok::<_, Infallible>(answer(&state_dir, &req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(port)
}

async fn answer<B>(state_dir: &Path, req: &Request<B>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "text/plain")
            .body(Full::new(Bytes::from(body)))
            .expect("a static response")
    };
    let segs: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
    let ["containerLogs", ns, pod, container] = segs.as_slice() else {
        return reply(
            StatusCode::NOT_FOUND,
            b"not served by the lifeboat node agent\n".to_vec(),
        );
    };
    if [ns, pod, container]
        .iter()
        .any(|s| s.is_empty() || s.contains(".."))
    {
        return reply(StatusCode::BAD_REQUEST, b"bad path\n".to_vec());
    }
    let tail = req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "tailLines")
            .and_then(|(_, v)| v.parse::<usize>().ok())
    });
    let path = crate::sim::store::log_path(state_dir, ns, pod, container);
    match tokio::fs::read(&path).await {
        Ok(bytes) => reply(StatusCode::OK, crate::sim::store::tail_lines(bytes, tail)),
        Err(_) => reply(
            StatusCode::NOT_FOUND,
            format!("container {container:?} in pod {pod:?} has no log yet\n").into_bytes(),
        ),
    }
}
