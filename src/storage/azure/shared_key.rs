//! SharedKey request signing for Azure Storage, as an `azure_core` pipeline policy.
//!
//! The official Rust SDK only authenticates with Entra ID tokens; account keys (what Azurite and
//! many operators use) need the "Shared Key" scheme: an HMAC-SHA256, keyed with the account key,
//! over a canonical form of the request. The canonical form follows
//! <https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key> (service
//! versions 2015-02-21 and later: a zero Content-Length is signed as empty).
//!
//! The policy runs once per try (after the retry policy), so each try carries a fresh `x-ms-date`.

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request, Url};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Signs every request with `Authorization: SharedKey <account>:<signature>`.
pub struct SharedKeyPolicy {
    account: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for SharedKeyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("SharedKeyPolicy")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// The account key given is not valid base64.
#[derive(Debug, thiserror::Error)]
#[error("the account key of {account} is not valid base64")]
pub struct InvalidAccountKey {
    /// The storage account.
    pub account: String,
    #[source]
    source: base64::DecodeError,
}

impl SharedKeyPolicy {
    /// A policy for `account` with its base64 account key (as the portal shows it).
    pub fn new(account: &str, base64_key: &str) -> Result<Self, InvalidAccountKey> {
        let key = STANDARD
            .decode(base64_key.trim())
            .map_err(|source| InvalidAccountKey {
                account: account.to_owned(),
                source,
            })?;
        Ok(Self {
            account: account.to_owned(),
            key,
        })
    }

    /// The signature (base64 HMAC-SHA256 with the account key) of a string to sign.
    pub fn sign(&self, string_to_sign: &str) -> String {
        sign(&self.key, string_to_sign)
    }
}

#[async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let now = azure_core::time::OffsetDateTime::now_utc();
        request.insert_header("x-ms-date", azure_core::time::to_rfc7231(&now));
        let content_length = request.body().len().unwrap_or(0);
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
            .collect();
        let sts = string_to_sign(
            &self.account,
            request.method().as_ref(),
            request.url(),
            &headers,
            content_length,
        );
        request.insert_header(
            "authorization",
            format!("SharedKey {}:{}", self.account, self.sign(&sts)),
        );
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// Base64 HMAC-SHA256 of `data` keyed with `key`.
pub fn sign(key: &[u8], data: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The Shared Key string to sign for a Blob service request.
///
/// `headers` are lowercase names with values; `content_length` is the body size (signed as
/// empty when 0).
pub fn string_to_sign(
    account: &str,
    method: &str,
    url: &Url,
    headers: &[(String, String)],
    content_length: u64,
) -> String {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let length = match content_length {
        0 => String::new(),
        n => n.to_string(),
    };
    // With x-ms-date present (we always set it) the Date line is empty.
    let date = if headers.iter().any(|(k, _)| k == "x-ms-date") {
        ""
    } else {
        header("date")
    };
    let mut out = [
        method.to_ascii_uppercase().as_str(),
        header("content-encoding"),
        header("content-language"),
        &length,
        header("content-md5"),
        header("content-type"),
        date,
        header("if-modified-since"),
        header("if-match"),
        header("if-none-match"),
        header("if-unmodified-since"),
        header("range"),
    ]
    .join("\n");
    out.push('\n');

    let mut ms: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| k.starts_with("x-ms-"))
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    ms.sort();
    for (k, v) in ms {
        out.push_str(&k);
        out.push(':');
        out.push_str(&v);
        out.push('\n');
    }

    out.push('/');
    out.push_str(account);
    out.push_str(url.path());
    let mut params: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.to_lowercase(), v.into_owned()))
        .collect();
    params.sort();
    let mut i = 0;
    while i < params.len() {
        let name = params[i].0.clone();
        let mut values = Vec::new();
        while i < params.len() && params[i].0 == name {
            values.push(params[i].1.clone());
            i += 1;
        }
        out.push('\n');
        out.push_str(&name);
        out.push(':');
        out.push_str(&values.join(","));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Azurite's published, well-known development key.
    const AZURITE_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    fn put_block_request() -> (Url, Vec<(String, String)>) {
        let url = Url::parse("http://127.0.0.1:10000/devstoreaccount1/c1/a%2Fb?comp=block&blockid=QUJD%3D&timeout=30")
            .unwrap();
        let headers = [
            ("x-ms-version", "2026-02-06"),
            ("x-ms-date", "Fri, 20 Nov 2026 22:00:00 GMT"),
            ("content-type", "application/octet-stream"),
            ("if-none-match", "*"),
            ("x-ms-client-request-id", "  id   with  spaces "),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec();
        (url, headers)
    }

    #[test]
    fn string_to_sign_follows_the_documented_layout() {
        let (url, headers) = put_block_request();
        let sts = string_to_sign("devstoreaccount1", "put", &url, &headers, 5);
        let expected = "PUT\n\n\n5\n\napplication/octet-stream\n\n\n\n*\n\n\n\
            x-ms-client-request-id:id with spaces\n\
            x-ms-date:Fri, 20 Nov 2026 22:00:00 GMT\n\
            x-ms-version:2026-02-06\n\
            /devstoreaccount1/devstoreaccount1/c1/a%2Fb\nblockid:QUJD=\ncomp:block\ntimeout:30";
        assert_eq!(sts, expected);
    }

    #[test]
    fn zero_length_is_signed_as_empty_and_repeated_params_are_sorted_and_joined() {
        let url = Url::parse(
            "https://acct.blob.core.windows.net/c?restype=container&comp=list&include=b&include=a",
        )
        .unwrap();
        let headers = vec![("x-ms-date".to_owned(), "d".to_owned())];
        let sts = string_to_sign("acct", "GET", &url, &headers, 0);
        assert_eq!(
            sts,
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:d\n/acct/c\ncomp:list\ninclude:a,b\nrestype:container"
        );
    }

    #[test]
    fn signature_matches_a_known_vector() {
        // Expected value computed independently:
        //   printf '%s' "$STS" | openssl dgst -sha256 -mac HMAC -macopt hexkey:$(base64 -d <<<KEY | xxd -p -c 256) -binary | base64
        let (url, headers) = put_block_request();
        let sts = string_to_sign("devstoreaccount1", "PUT", &url, &headers, 5);
        let policy = SharedKeyPolicy::new("devstoreaccount1", AZURITE_KEY).unwrap();
        assert_eq!(policy.sign(&sts), KNOWN_SIGNATURE);
    }

    const KNOWN_SIGNATURE: &str = "/fVwruTrEfi+t/ksjV4+pYU5EfosS6q6WQOg62HOqQE=";

    #[test]
    fn a_bad_key_is_refused_and_never_printed() {
        assert!(SharedKeyPolicy::new("a", "not base64!").is_err());
        let p = SharedKeyPolicy::new("acct", AZURITE_KEY).unwrap();
        assert!(!format!("{p:?}").contains("Eby8"));
    }
}
