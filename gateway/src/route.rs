//! Routes: a path prefix on the gateway, a provider and an upstream, with
//! the HTTP(S) client and the credential to use for it.

use std::sync::Arc;

use anyhow::{bail, Context};
use http::{HeaderName, HeaderValue};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use vigil_quantum::Provider;

use super::sigv4::{AwsCredential, Target};
use crate::config::{CredentialConfig, CredentialKind, RouteConfig};
use crate::server::Body;
use vigil_quantum::path::NormalPath;

pub type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

pub struct Route {
    /// The prefix as configured, for records and logs.
    pub prefix_text: String,
    /// The prefix as normalised segments, matched against normalised paths.
    pub prefix: NormalPath,
    pub provider: Provider,
    /// Upstream base URL without a trailing slash.
    pub upstream: String,
    pub client: HttpsClient,
    /// The credential the gateway holds for this upstream.
    pub credential: Option<Credential>,
    /// `host[:port]` of the upstream (what AWS signatures cover).
    authority: String,
}

/// A brokered credential: set upstream in place of whatever the caller sent.
pub enum Credential {
    /// One header, e.g. `Authorization: Bearer <token>`; the format's text
    /// around the secret (`Bearer `, ``) tells a caller's token apart.
    Header {
        name: HeaderName,
        value: HeaderValue,
        before: String,
        after: String,
    },
    /// Every request re-signed with AWS Signature Version 4.
    AwsSigV4(AwsCredential),
}

impl Route {
    pub fn new(config: &RouteConfig) -> anyhow::Result<Route> {
        let provider = Provider::from_name(&config.provider, config.fields.clone())
            .with_context(|| format!("unknown provider {:?}", config.provider))?;
        let credential = config
            .credential
            .as_ref()
            .map(load_credential)
            .transpose()
            .with_context(|| format!("route {}", config.prefix))?;
        let authority = config
            .upstream
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.authority().map(|a| a.to_string()))
            .with_context(|| format!("route {}: upstream has no host", config.prefix))?;
        let prefix = vigil_quantum::path::normalise(&config.prefix)
            .map_err(|e| anyhow::anyhow!("route {}: prefix: {e}", config.prefix))?;
        Ok(Route {
            prefix_text: config.prefix.clone(),
            prefix,
            provider,
            upstream: config.upstream.trim_end_matches('/').to_string(),
            authority,
            client: client(config.ca_file.as_deref())
                .with_context(|| format!("route {}: TLS setup", config.prefix))?,
            credential,
        })
    }

    /// Whether requests must be read whole before they are relayed (an AWS
    /// signature covers the body's hash).
    pub fn signs_body(&self) -> bool {
        matches!(self.credential, Some(Credential::AwsSigV4(_)))
    }

    /// Put the held credential on a request about to go upstream.
    pub fn authorize(&self, parts: &mut http::request::Parts, body: &[u8]) {
        match &self.credential {
            None => {}
            Some(Credential::Header { name, value, .. }) => {
                parts.headers.remove(name);
                parts.headers.insert(name.clone(), value.clone());
            }
            Some(Credential::AwsSigV4(aws)) => {
                let target = Target {
                    method: parts.method.as_str(),
                    host: &self.authority,
                    path: parts.uri.path(),
                    query: parts.uri.query(),
                };
                aws.sign(
                    &target,
                    &mut parts.headers,
                    body,
                    std::time::SystemTime::now(),
                )
            }
        }
    }

    /// What the caller sent where the brokered credential goes: its gateway
    /// token, if it has one (the header's secret part; for AWS, the access
    /// key id of its signature).
    pub fn presented_token(&self, headers: &http::HeaderMap) -> Option<String> {
        match self.credential.as_ref()? {
            Credential::Header {
                name,
                before,
                after,
                ..
            } => {
                let v = headers.get(name)?.to_str().ok()?;
                let secret = v
                    .strip_prefix(before.as_str())?
                    .strip_suffix(after.as_str())?
                    .trim();
                // a bearer this gateway minted at the IAM exchange
                Some(crate::iam::token_in_bearer(secret).unwrap_or_else(|| secret.to_string()))
            }
            Credential::AwsSigV4(_) => {
                let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
                let (_, rest) = v.split_once("Credential=")?;
                Some(rest.split('/').next()?.trim().to_string())
            }
        }
    }
}

/// An HTTP/1 client for http and https upstreams, trusting the system's
/// CAs and `ca_file`'s.
fn client(ca_file: Option<&std::path::Path>) -> anyhow::Result<HttpsClient> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // a system store with an odd certificate still serves the rest
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let mut n = 0;
        for cert in CertificateDer::pem_file_iter(path)
            .with_context(|| format!("cannot read CA file {}", path.display()))?
        {
            let cert = cert.with_context(|| format!("bad PEM in CA file {}", path.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("bad certificate in CA file {}", path.display()))?;
            n += 1;
        }
        if n == 0 {
            bail!("CA file {} holds no certificate", path.display());
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// Read the secret; refuse a file others could read.
fn load_credential(c: &CredentialConfig) -> anyhow::Result<Credential> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&c.file)
        .with_context(|| format!("cannot read credential file {}", c.file.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "credential file {} is readable by group or others (mode {mode:03o}): chmod 600 it",
            c.file.display()
        );
    }
    let secret = std::fs::read_to_string(&c.file)
        .with_context(|| format!("cannot read credential file {}", c.file.display()))?;
    let secret = secret.trim();
    if secret.is_empty() {
        bail!("credential file {} is empty", c.file.display());
    }
    if c.kind == CredentialKind::AwsSigv4 {
        let region = c.region.as_deref().context("aws_sigv4 needs a region")?;
        let aws = AwsCredential::parse(secret, region, &c.service)
            .map_err(|e| anyhow::anyhow!("credential file {}: {e}", c.file.display()))?;
        return Ok(Credential::AwsSigV4(aws));
    }
    let header = c
        .header
        .as_deref()
        .context("a header credential needs `header`")?;
    let name = HeaderName::from_bytes(header.as_bytes())
        .with_context(|| format!("invalid header name {header:?}"))?;
    let mut value = HeaderValue::from_str(&c.format.replace("{}", secret)).with_context(|| {
        format!(
            "credential from {} is not a valid header value",
            c.file.display()
        )
    })?;
    value.set_sensitive(true);
    let (before, after) = c.format.split_once("{}").unwrap_or((c.format.as_str(), ""));
    Ok(Credential::Header {
        name,
        value,
        before: before.to_string(),
        after: after.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn credential(dir: &std::path::Path, content: &str, mode: u32) -> CredentialConfig {
        let file = dir.join("secret");
        std::fs::write(&file, content).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        CredentialConfig {
            kind: CredentialKind::Header,
            header: Some("Authorization".into()),
            file,
            format: "Bearer {}".into(),
            region: None,
            service: "braket".into(),
        }
    }

    fn refusal(c: &CredentialConfig) -> String {
        match load_credential(c) {
            Ok(_) => panic!("{} accepted", c.file.display()),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn a_credential_file_others_could_read_is_refused_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            let message = refusal(&credential(dir.path(), "s3cret-value\n", mode));
            assert!(
                message.contains(&format!("(mode {mode:03o})")) && message.contains("chmod 600"),
                "{message}"
            );
            // the reason names the file, never the secret
            assert!(message.contains("secret") && !message.contains("s3cret-value"));
        }
        assert!(load_credential(&credential(dir.path(), "s3cret-value\n", 0o600)).is_ok());
        assert!(load_credential(&credential(dir.path(), "s3cret-value\n", 0o400)).is_ok());
    }

    #[test]
    fn an_empty_or_missing_credential_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(refusal(&credential(dir.path(), " \n", 0o600)).contains("is empty"));
        let mut missing = credential(dir.path(), "x", 0o600);
        missing.file = dir.path().join("nowhere");
        assert!(refusal(&missing).contains("cannot read credential file"));
    }
}
