//! Connections the gateway opens itself to a pool's endpoints (health checks, shadow copies):
//! plain TCP, or TLS with the pool's `tls` settings, the same ones the proxy's connections use.

use std::sync::Arc;

use pingora::tls::{
    ClientConfig, DigitallySignedStruct, HandshakeSignatureValid, RootCertStore,
    ServerCertVerified, ServerCertVerifier, ServerName, SignatureScheme, TlsConnector, UnixTime,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{Endpoint, Pool};
use crate::config::TlsConfig;

/// A byte stream to an endpoint.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A TLS client configuration, built once (per pool, and for async-job callbacks).
pub struct TlsClient {
    connector: TlsConnector,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsClient")
    }
}

impl TlsClient {
    /// Trusts `roots` (DER certificates) when given, else the system's; `verify: false` accepts
    /// any certificate.
    pub fn new<'a>(roots: Option<impl IntoIterator<Item = &'a [u8]>>, verify: bool) -> TlsClient {
        pingora::tls::install_default_crypto_provider();
        let mut store = RootCertStore::empty();
        match roots {
            Some(roots) => {
                for der in roots {
                    // Each was accepted as a root when the config was validated.
                    let _ = store.add(der.to_vec().into());
                }
            }
            None => {
                // No system store (a slim image without ca-certificates) leaves no roots: every
                // handshake then fails with UnknownIssuer, which the log names.
                for cert in pingora::tls::load_native_certs().unwrap_or_default() {
                    let _ = store.add(cert);
                }
            }
        }
        let mut config = ClientConfig::builder()
            .with_root_certificates(store)
            .with_no_client_auth();
        if !verify {
            config
                .dangerous()
                .set_certificate_verifier(Arc::new(AcceptAnyCertificate));
        }
        TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
        }
    }

    /// The client for a pool's `tls` settings.
    pub fn for_pool(settings: &TlsConfig) -> TlsClient {
        let roots = settings
            .ca
            .as_ref()
            .map(|ca| ca.iter().map(|c| c.borrow_raw_cert().as_slice()));
        TlsClient::new(roots, settings.verify)
    }

    /// A TLS handshake over `tcp`, checking the certificate against `server_name`.
    pub async fn handshake(
        &self,
        server_name: &str,
        tcp: TcpStream,
    ) -> std::io::Result<Box<dyn Io>> {
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        Ok(Box::new(self.connector.connect(name, tcp).await?))
    }
}

/// Opens a connection to `ep` of `pool` (not bounded in time: callers wrap it in their timeout).
pub async fn open(pool: &Pool, ep: &Endpoint) -> std::io::Result<Box<dyn Io>> {
    let tcp = TcpStream::connect(ep.addr).await?;
    match (&pool.tls, &pool.config.tls) {
        (Some(client), Some(settings)) => {
            client
                .handshake(settings.server_name_for(&ep.name), tcp)
                .await
        }
        _ => Ok(Box::new(tcp)),
    }
}

/// `tls.verify: false`: any certificate is accepted (testing only; the config says so loudly).
#[derive(Debug)]
struct AcceptAnyCertificate;

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &pingora::tls::CertificateDer<'_>,
        _intermediates: &[pingora::tls::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, pingora::tls::RusTlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &pingora::tls::CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, pingora::tls::RusTlsError> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &pingora::tls::CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, pingora::tls::RusTlsError> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        use SignatureScheme::*;
        vec![
            ECDSA_NISTP256_SHA256,
            ECDSA_NISTP384_SHA384,
            ED25519,
            RSA_PSS_SHA256,
            RSA_PSS_SHA384,
            RSA_PSS_SHA512,
            RSA_PKCS1_SHA256,
            RSA_PKCS1_SHA384,
            RSA_PKCS1_SHA512,
        ]
    }
}
