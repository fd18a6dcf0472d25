//! Credentials of an Azure location: which one `auth:` names, where its secret comes from (a file
//! or an environment variable, never the config file), and the SAS policy that signs requests
//! with a token. SharedKey signing is [`super::shared_key`]; the client is [`super::AzureBackend`].

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};

use super::super::{Result, StorageError};
use crate::config::{AzureAuth, AzureLocation, SecretSource};

/// The credentials a backend signs its requests with.
pub enum Credential {
    /// The storage account key (base64), used for SharedKey signing.
    SharedKey(String),
    /// A SAS token (query string, with or without the leading `?`).
    Sas(String),
    /// An Entra ID token source (workload identity, managed identity, Azure CLI, service principal).
    Token(Arc<dyn TokenCredential>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs.
        f.write_str(match self {
            Credential::SharedKey(_) => "SharedKey(..)",
            Credential::Sas(_) => "Sas(..)",
            Credential::Token(_) => "Token(..)",
        })
    }
}

/// Appends a SAS token to every request's query string.
#[derive(Clone)]
pub struct SasPolicy {
    token: String,
}

impl std::fmt::Debug for SasPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SasPolicy(..)")
    }
}

impl SasPolicy {
    /// A policy for `token` (`sv=...&sig=...`, a leading `?` is ignored).
    pub fn new(token: &str) -> Self {
        Self {
            token: token.trim().trim_start_matches('?').to_owned(),
        }
    }
}

#[async_trait]
impl Policy for SasPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        // Appended verbatim: re-encoding through a query builder could alter the signature.
        // The same request comes back on every retry, so append only once.
        let url = request.url_mut();
        let query = url.query().unwrap_or("");
        if !query.contains(&self.token) {
            let q = if query.is_empty() {
                self.token.clone()
            } else {
                format!("{query}&{}", self.token)
            };
            url.set_query(Some(&q));
        }
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// Reads a secret from a file (trailing whitespace dropped) or an environment variable.
fn read_secret(
    name: &str,
    src: Option<&SecretSource>,
    default_env: &str,
    what: &str,
) -> Result<String> {
    let config_err = |reason: String| StorageError::Config {
        location: name.to_owned(),
        reason,
    };
    if let Some(file) = src.and_then(|s| s.file.as_ref()) {
        let s = std::fs::read_to_string(file)
            .map_err(|e| config_err(format!("cannot read {what} from {}: {e}", file.display())))?;
        return Ok(s.trim_end().to_owned());
    }
    let var = src.and_then(|s| s.env.as_deref()).unwrap_or(default_env);
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => Err(config_err(format!(
            "{what} expected in environment variable {var}, which is not set"
        ))),
    }
}

/// The credential `loc.auth` names, with its secret read from where the config says.
pub(super) fn resolve_credential(name: &str, loc: &AzureLocation) -> Result<Credential> {
    let config_err = |what: &str, e: azure_core::Error| StorageError::Config {
        location: name.to_owned(),
        reason: format!("cannot set up {what} credentials: {e}"),
    };
    Ok(match loc.auth {
        AzureAuth::AccountKey => Credential::SharedKey(read_secret(
            name,
            loc.account_key.as_ref(),
            "AZURE_STORAGE_KEY",
            "the account key",
        )?),
        AzureAuth::Sas => Credential::Sas(read_secret(
            name,
            loc.sas_token.as_ref(),
            "AZURE_STORAGE_SAS_TOKEN",
            "the SAS token",
        )?),
        AzureAuth::AzureCli => Credential::Token(
            azure_identity::AzureCliCredential::new(None)
                .map_err(|e| config_err("Azure CLI", e))?,
        ),
        AzureAuth::ManagedIdentity => {
            let opts = azure_identity::ManagedIdentityCredentialOptions {
                user_assigned_id: loc
                    .client_id
                    .clone()
                    .map(azure_identity::UserAssignedId::ClientId),
                ..Default::default()
            };
            Credential::Token(
                azure_identity::ManagedIdentityCredential::new(Some(opts))
                    .map_err(|e| config_err("managed identity", e))?,
            )
        }
        AzureAuth::WorkloadIdentity => {
            let opts = azure_identity::WorkloadIdentityCredentialOptions {
                client_id: loc.client_id.clone(),
                ..Default::default()
            };
            Credential::Token(
                azure_identity::WorkloadIdentityCredential::new(Some(opts))
                    .map_err(|e| config_err("workload identity", e))?,
            )
        }
        AzureAuth::ClientSecret => {
            let env = |var: &str| {
                std::env::var(var).map_err(|_| StorageError::Config {
                    location: name.to_owned(),
                    reason: format!(
                        "auth client-secret needs environment variable {var}, which is not set"
                    ),
                })
            };
            let (tenant, client, secret) = (
                env("AZURE_TENANT_ID")?,
                env("AZURE_CLIENT_ID")?,
                env("AZURE_CLIENT_SECRET")?,
            );
            Credential::Token(
                azure_identity::ClientSecretCredential::new(
                    &tenant,
                    client,
                    Secret::new(secret),
                    None,
                )
                .map_err(|e| config_err("client secret", e))?,
            )
        }
    })
}
