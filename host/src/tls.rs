//! The gateway's one TLS stack: rustls with the ring crypto provider, for the
//! MQTT connections, the AWS SDK's HTTP client and `rulegate deploy`.
//!
//! Every client names its provider here rather than relying on crate
//! features: a second TLS stack (the AWS SDK's defaults bring hyper 0.14 with
//! rustls 0.21, and aws-lc) costs megabytes on a Raspberry Pi, and with two
//! providers compiled in rustls cannot pick a default by itself.

use anyhow::{Context as _, bail};
use aws_sdk_s3::config::SharedHttpClient;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use rustls::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A builder of HTTP(S) clients over this stack. reqwest takes its provider
/// from the process's default, so this makes ring the default first (once).
pub fn http_client_builder() -> reqwest::ClientBuilder {
    // An error only says a default is installed already, which is all we need.
    let _ = provider().install_default();
    reqwest::Client::builder()
}

/// The HTTPS client for the AWS SDK (hyper with rustls and ring), which would
/// otherwise build its own with aws-lc.
pub fn aws_http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// A client configuration that trusts only the certificates in `ca_pem` and,
/// when given, presents `client_auth` (certificate chain, private key; PEM).
/// Errors say which of them holds nothing usable.
pub(crate) fn client_config(
    ca_pem: &[u8],
    client_auth: Option<(&[u8], &[u8])>,
) -> anyhow::Result<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem) {
        let certificate = certificate.context("ca_file: not a PEM certificate")?;
        roots
            .add(certificate)
            .context("ca_file: not a usable CA certificate")?;
    }
    if roots.is_empty() {
        bail!("ca_file: holds no PEM certificate");
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let Some((chain_pem, key_pem)) = client_auth else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("client_cert_file: not a PEM certificate chain")?;
    if chain.is_empty() {
        bail!("client_cert_file: holds no PEM certificate");
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .context("client_key_file: holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")?;
    builder.with_client_auth_cert(chain, key).context(
        "client_key_file: does not match the client certificate, or its type is not supported",
    )
}
