//! A tiny fault-injecting HTTP/1.1 proxy: answers the first `fail_first` requests itself with a
//! given status (or never answers them), forwards the rest to the upstream, and records every
//! request line.
//!
//! Each connection carries one request (`Connection: close` is forced on both sides), so every
//! request, retried or not, is seen and counted.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to the requests it does not forward.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Answer with this HTTP status (503 carries the `ServerBusy` error code).
    Status(u16),
    /// Read the request and never answer.
    Hang,
}

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
                tokio::spawn(async move {
                    let fault = (n < fail_first).then_some(fault);
                    let _ = serve(conn, &upstream, fault, n, &seen).await;
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
    fault: Option<Fault>,
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
    seen.lock().unwrap()[n] = head.lines().next().unwrap_or("").to_owned();

    if let Some(Fault::Hang) = fault {
        // Hold the connection open until the client gives up on it.
        let mut sink = [0u8; 1024];
        while conn.read(&mut sink).await? > 0 {}
        return Ok(());
    }
    if let Some(Fault::Status(status)) = fault {
        // Drain the request body so the client sees our answer, not a reset.
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            })
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        let mut have = buf.len() - head_end;
        let mut sink = vec![0u8; 64 * 1024];
        while have < len {
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
    up.write_all(&buf[head_end..]).await?;
    tokio::io::copy_bidirectional(&mut conn, &mut up).await?;
    Ok(())
}
