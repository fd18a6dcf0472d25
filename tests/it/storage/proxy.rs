//! A tiny fault-injecting HTTP/1.1 proxy: answers the first `fail_first` requests itself with a
//! given status (or never answers them), forwards the rest to the upstream, and records every
//! request line. [`Proxy::with_rule`] decides per request line instead, and can also forward a
//! request and lose its answer, or run something (another writer) before forwarding it.
//!
//! Each connection carries one request (`Connection: close` is forced on both sides), so every
//! request, retried or not, is seen and counted.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to the requests it does not forward.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Answer with this HTTP status (503 carries the `ServerBusy` error code).
    Status(u16),
    /// Read the request and never answer.
    Hang,
    /// Forward the request, wait for the upstream's whole answer (so the upstream has acted on
    /// it), then close the client's connection without answering: a lost answer.
    DropAnswer,
}

/// What [`Proxy::with_rule`] does with one request.
pub enum Action {
    /// Forward it unchanged.
    Forward,
    /// Apply a fault.
    Fault(Fault),
    /// Run this to completion, then forward the request (e.g. a rival writer's write first).
    ForwardAfter(BoxFuture<'static, ()>),
}

/// Decides, from a request line (`PUT /path?query HTTP/1.1`), what the proxy does with it.
pub type Rule = Arc<dyn Fn(&str) -> Action + Send + Sync>;

/// A running proxy; stops when dropped.
pub struct Proxy {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Starts a proxy to `upstream` (`http://host:port`) that applies `fault` to the first
    /// `fail_first` requests.
    pub async fn start(upstream: &str, fail_first: usize, fault: Fault) -> Proxy {
        Self::spawn(upstream, move |n, _| {
            if n < fail_first {
                Action::Fault(fault)
            } else {
                Action::Forward
            }
        })
        .await
    }

    /// Starts a proxy to `upstream` that asks `rule` what to do with each request.
    pub async fn with_rule(upstream: &str, rule: Rule) -> Proxy {
        Self::spawn(upstream, move |_, line| rule(line)).await
    }

    async fn spawn(
        upstream: &str,
        decide: impl Fn(usize, &str) -> Action + Send + Sync + 'static,
    ) -> Proxy {
        let decide = Arc::new(decide);
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let n = {
                    // The request line is recorded once the head is read; reserve the slot now
                    // so the count decides the fault deterministically in arrival order.
                    let mut s = seen.lock().unwrap();
                    s.push(String::new());
                    s.len() - 1
                };
                let upstream = upstream.clone();
                let seen = seen.clone();
                let decide = decide.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, &upstream, |line| decide(n, line), n, &seen).await;
                });
            }
        });
        Proxy {
            url,
            requests,
            task,
        }
    }

    /// Request lines (`GET /path?query HTTP/1.1`) seen so far, in arrival order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

async fn serve(
    mut conn: TcpStream,
    upstream: &str,
    decide: impl FnOnce(&str) -> Action,
    n: usize,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 8192];
        let r = conn.read(&mut chunk).await?;
        if r == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..r]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let line = head.lines().next().unwrap_or("").to_owned();
    seen.lock().unwrap()[n] = line.clone();
    let fault = match decide(&line) {
        Action::Forward => None,
        Action::Fault(f) => Some(f),
        Action::ForwardAfter(first) => {
            first.await;
            None
        }
    };

    if let Some(Fault::Hang) = fault {
        // Hold the connection open until the client gives up on it.
        let mut sink = [0u8; 1024];
        while conn.read(&mut sink).await? > 0 {}
        return Ok(());
    }
    let content_length: usize = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        })
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    if let Some(Fault::Status(status)) = fault {
        // Drain the request body so the client sees our answer, not a reset.
        let mut have = buf.len() - head_end;
        let mut sink = vec![0u8; 64 * 1024];
        while have < content_length {
            let r = conn.read(&mut sink).await?;
            if r == 0 {
                break;
            }
            have += r;
        }
        let (reason, code) = match status {
            503 => ("Server Busy", "ServerBusy"),
            403 => ("Forbidden", "AuthorizationFailure"),
            _ => ("Injected", "InjectedFault"),
        };
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
        );
        let rsp = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nx-ms-error-code: {code}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(rsp.as_bytes()).await?;
        return conn.shutdown().await;
    }

    let mut up = TcpStream::connect(upstream).await?;
    // One request per connection: drop any keep-alive and ask the upstream to close after it.
    let mut new_head: String = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    new_head.push_str("Connection: close\r\n\r\n");
    up.write_all(new_head.as_bytes()).await?;
    if let Some(Fault::DropAnswer) = fault {
        // The whole body first, then the upstream's whole answer: only then has it acted.
        while buf.len() - head_end < content_length {
            let mut chunk = [0u8; 64 * 1024];
            let r = conn.read(&mut chunk).await?;
            if r == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..r]);
        }
        up.write_all(&buf[head_end..]).await?;
        let mut answer = Vec::new();
        up.read_to_end(&mut answer).await?;
        // Closing without a byte of it: the client sees the connection end before any answer.
        return conn.shutdown().await;
    }
    up.write_all(&buf[head_end..]).await?;
    tokio::io::copy_bidirectional(&mut conn, &mut up).await?;
    Ok(())
}
