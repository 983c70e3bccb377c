//! TLS 1.3 and mutual TLS for every transport with a wire to encrypt (`tcp`, `grpc`, `quic`):
//! certificate material (a throwaway CA generated with rcgen, or PEM files), the rustls
//! configurations built from the contract's transport-neutral settings
//! ([`ServerTls`], [`ClientTls`]), and the one dial/accept helper the TCP-based transports share
//! ([`dial`], [`Acceptor`]).
//!
//! Depends on `wirebench-core` (the settings and `TransportError`) and on rustls, rcgen and
//! ring; on no transport.
//!
//! Everything here runs on rustls's `ring` provider, passed explicitly to every config: no
//! process-wide provider is needed (see RUST-NOTES on `install_default`). Only TLS 1.3 is
//! offered. Under mutual TLS the server requires a client certificate signed by the configured
//! CA, and the client's identity — the subject common name of its certificate, else its first
//! DNS name — reaches the shared echo as `CallHead::peer_identity`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Resumption};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use wirebench_core::TransportError;

pub use wirebench_core::tls::{
    ClientTls, DEFAULT_SERVER_NAME, GENERATED_CLIENT_IDENTITY, ServerTls, SharedKey, TlsMode,
    Trust, UnknownTlsMode, sha256_from_hex, to_hex,
};

/// Errors building TLS material or configurations.
#[derive(Debug, Error)]
pub enum TlsError {
    /// rcgen could not generate a key or certificate.
    #[error("generating TLS material: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file could not be read or held nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// rustls refused the certificates, key or settings.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// The server name is not a valid DNS name or IP address.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
}

/// The ring provider every config here is built on.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn config_err(e: impl fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

/// Certificates and keys for one run: a CA, a server certificate it signed, and optionally a
/// client certificate it signed (for mutual TLS).
#[derive(Clone, Debug)]
pub struct TlsMaterial {
    ca: Arc<[CertificateDer<'static>]>,
    server_chain: Arc<[CertificateDer<'static>]>,
    server_key: SharedKey,
    client: Option<(Arc<[CertificateDer<'static>]>, SharedKey)>,
    server_name: String,
}

fn leaf_params(
    names: Vec<String>,
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn key_der(key: &KeyPair) -> SharedKey {
    SharedKey::new(PrivateKeyDer::Pkcs8(key.serialize_der().into()))
}

impl TlsMaterial {
    /// A fresh throwaway CA (ECDSA P-256), a server certificate for `localhost`, `127.0.0.1`
    /// and `::1`, and a client certificate with common name [`GENERATED_CLIENT_IDENTITY`].
    pub fn generate() -> Result<TlsMaterial, TlsError> {
        TlsMaterial::generate_for(GENERATED_CLIENT_IDENTITY)
    }

    /// As [`generate`](Self::generate), with the client certificate's common name chosen.
    pub fn generate_for(client_identity: &str) -> Result<TlsMaterial, TlsError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        // A name of its own per CA: a client trusting another throwaway CA then fails with
        // "unknown issuer", not with a confusing signature error against a namesake.
        let tag = to_hex(&sha256(ca_key.public_key_raw())[..8]);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("wirebench throwaway CA {tag}"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let server_cert = leaf_params(
            vec![
                DEFAULT_SERVER_NAME.to_owned(),
                "127.0.0.1".to_owned(),
                "::1".to_owned(),
            ],
            "wirebench server",
            ExtendedKeyUsagePurpose::ServerAuth,
        )?
        .signed_by(&server_key, &issuer)?;

        let client_key = KeyPair::generate()?;
        let client_cert = leaf_params(
            vec![client_identity.to_owned()],
            client_identity,
            ExtendedKeyUsagePurpose::ClientAuth,
        )?
        .signed_by(&client_key, &issuer)?;

        Ok(TlsMaterial {
            ca: Arc::from(vec![ca_cert.der().clone()]),
            server_chain: Arc::from(vec![server_cert.der().clone()]),
            server_key: key_der(&server_key),
            client: Some((
                Arc::from(vec![client_cert.der().clone()]),
                key_der(&client_key),
            )),
            server_name: DEFAULT_SERVER_NAME.to_owned(),
        })
    }

    /// Material from PEM files: the CA that signed both sides, the server's chain and key, and
    /// optionally the client's chain and key (needed for mutual TLS). Clients check the server
    /// certificate against `server_name`.
    pub fn from_pem_files(
        ca: &Path,
        server_cert: &Path,
        server_key: &Path,
        client: Option<(&Path, &Path)>,
        server_name: &str,
    ) -> Result<TlsMaterial, TlsError> {
        ServerName::try_from(server_name.to_owned())
            .map_err(|_| TlsError::ServerName(server_name.to_owned()))?;
        let client = match client {
            Some((cert, key)) => Some((read_certs(cert)?, read_key(key)?)),
            None => None,
        };
        Ok(TlsMaterial {
            ca: read_certs(ca)?,
            server_chain: read_certs(server_cert)?,
            server_key: read_key(server_key)?,
            client,
            server_name: server_name.to_owned(),
        })
    }

    /// Material from a directory holding `ca.pem`, `server.pem`, `server.key` and, for mutual
    /// TLS, `client.pem` and `client.key`.
    pub fn from_pem_dir(dir: &Path, server_name: &str) -> Result<TlsMaterial, TlsError> {
        let client_cert = dir.join("client.pem");
        let client_key = dir.join("client.key");
        let client = (client_cert.exists() || client_key.exists())
            .then_some((client_cert.as_path(), client_key.as_path()));
        TlsMaterial::from_pem_files(
            &dir.join("ca.pem"),
            &dir.join("server.pem"),
            &dir.join("server.key"),
            client,
            server_name,
        )
    }

    /// Writes the material as PEM files into `dir` (created if needed), in the layout
    /// [`from_pem_dir`](Self::from_pem_dir) reads: so external clients (grpcurl, a browser,
    /// another language) can use the certificates of a run.
    pub fn write_pem_dir(&self, dir: &Path) -> Result<(), TlsError> {
        let io = |path: &Path, e: std::io::Error| TlsError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| io(&path, e))
        };
        let certs = |chain: &[CertificateDer<'static>]| {
            chain
                .iter()
                .map(|c| pem_block("CERTIFICATE", c))
                .collect::<String>()
        };
        let key = |k: &SharedKey| {
            let label = match k.get() {
                PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
                PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
                _ => "PRIVATE KEY",
            };
            pem_block(label, k.get().secret_der())
        };
        write("ca.pem", certs(&self.ca))?;
        write("server.pem", certs(&self.server_chain))?;
        write("server.key", key(&self.server_key))?;
        if let Some((chain, k)) = &self.client {
            write("client.pem", certs(chain))?;
            write("client.key", key(k))?;
        }
        Ok(())
    }

    /// The name clients check the server certificate against.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// The identity a server sees from this material's client certificate under mTLS.
    pub fn client_identity(&self) -> Option<String> {
        self.client
            .as_ref()
            .and_then(|(chain, _)| chain.first())
            .and_then(|c| peer_identity(std::slice::from_ref(c)))
    }

    /// Server settings: TLS, or mutual TLS requiring a client certificate signed by the CA.
    pub fn server(&self, mode: TlsMode) -> Option<ServerTls> {
        let tls = ServerTls::shared(self.server_chain.clone(), self.server_key.clone());
        match mode {
            TlsMode::None => None,
            TlsMode::Tls => Some(tls),
            TlsMode::Mutual => Some(tls.require_client_certs(self.ca.to_vec())),
        }
    }

    /// Client settings trusting the CA; under mutual TLS presenting the client certificate
    /// (when the material has one).
    pub fn client(&self, mode: TlsMode) -> Option<ClientTls> {
        let tls = ClientTls::new(self.ca.to_vec(), &self.server_name);
        match mode {
            TlsMode::None => None,
            TlsMode::Tls => Some(tls),
            TlsMode::Mutual => Some(match &self.client {
                Some((chain, key)) => tls.with_shared_identity(chain.clone(), key.clone()),
                None => tls,
            }),
        }
    }

    /// True when the material has a client certificate (mutual TLS is possible).
    pub fn has_client_cert(&self) -> bool {
        self.client.is_some()
    }
}

/// One PEM block: base64 in 64-character lines between BEGIN/END markers.
fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn read_certs(path: &Path) -> Result<Arc<[CertificateDer<'static>]>, TlsError> {
    let bytes = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            reason: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    Ok(Arc::from(certs))
}

fn read_key(path: &Path) -> Result<SharedKey, TlsError> {
    let bytes = read_file(path)?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        reason: format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
    })?;
    Ok(SharedKey::new(key))
}

/// The identity of a peer from its certificate chain: the leaf's subject common name, else its
/// first DNS name; `None` when there is no certificate or neither is printable.
pub fn peer_identity(chain: &[CertificateDer<'_>]) -> Option<String> {
    let leaf = chain.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let printable = |s: &String| !s.is_empty() && s.bytes().all(|b| (0x20..=0x7e).contains(&b));
    cn.filter(printable).or_else(|| {
        let san = cert.subject_alternative_name().ok()??;
        san.value
            .general_names
            .iter()
            .find_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                _ => None,
            })
            .filter(printable)
    })
}

/// A throwaway self-signed certificate for `localhost`, `127.0.0.1` and `::1` (what QUIC
/// uses when no TLS is configured: it cannot run without).
pub fn self_signed_server() -> Result<ServerTls, TlsError> {
    let key = KeyPair::generate()?;
    let params = leaf_params(
        vec![
            DEFAULT_SERVER_NAME.to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ],
        "wirebench self-signed server",
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let cert = params.self_signed(&key)?;
    Ok(ServerTls::shared(
        Arc::from(vec![cert.der().clone()]),
        key_der(&key),
    ))
}

/// SHA-256 of a server's leaf certificate (what a pinning client checks).
pub fn leaf_sha256(tls: &ServerTls) -> Option<[u8; 32]> {
    tls.chain().first().map(|c| sha256(c))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// A rustls server config for `tls`: TLS 1.3 only, these ALPN protocols, client certificates
/// required under mutual TLS.
pub fn server_config(tls: &ServerTls, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_err)?;
    let builder = match tls.client_roots() {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let mut store = RootCertStore::empty();
            for c in roots.iter() {
                store.add(c.clone()).map_err(config_err)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
                .build()
                .map_err(config_err)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(tls.chain().to_vec(), tls.key().key())
        .map_err(config_err)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Sessions kept per client settings.
const SESSION_CACHE: usize = 64;

/// What this crate keeps in a [`ClientTls`]'s shared cache: the session store and the configs
/// built so far, by (ALPN protocols, early data).
struct Built {
    sessions: Arc<ClientSessionMemoryCache>,
    configs: Vec<(Vec<Vec<u8>>, bool, Arc<rustls::ClientConfig>)>,
}

/// The rustls client config for `tls`: TLS 1.3 only, these ALPN protocols, 0-RTT early data
/// when `early_data` (QUIC only). Built once per (ALPN, early data) and shared by every clone
/// of `tls`, with one session cache, so a reconnection can resume.
pub fn client_config(
    tls: &ClientTls,
    alpn: &[&[u8]],
    early_data: bool,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    tls.built().with(|slot| {
        let built = slot
            .get_or_insert_with(|| {
                Box::new(Built {
                    sessions: Arc::new(ClientSessionMemoryCache::new(SESSION_CACHE)),
                    configs: Vec::new(),
                })
            })
            .downcast_mut::<Built>()
            .ok_or_else(|| {
                TlsError::Config("the TLS settings' cache holds something else".into())
            })?;
        if let Some((_, _, c)) = built.configs.iter().find(|(a, e, _)| {
            *e == early_data && a.iter().map(Vec::as_slice).eq(alpn.iter().copied())
        }) {
            return Ok(c.clone());
        }
        let config = Arc::new(build_client_config(tls, &built.sessions, alpn, early_data)?);
        built.configs.push((
            alpn.iter().map(|p| p.to_vec()).collect(),
            early_data,
            config.clone(),
        ));
        Ok(config)
    })
}

fn build_client_config(
    tls: &ClientTls,
    sessions: &Arc<ClientSessionMemoryCache>,
    alpn: &[&[u8]],
    early_data: bool,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_err)?;
    let builder = match tls.trust() {
        Trust::Roots(roots) => {
            let mut store = RootCertStore::empty();
            for c in roots.iter() {
                store.add(c.clone()).map_err(config_err)?;
            }
            builder.with_root_certificates(store)
        }
        Trust::Pinned(hash) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                sha256: *hash,
                provider: provider(),
            })),
    };
    let mut config = match tls.identity() {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.to_vec(), key.key())
            .map_err(config_err)?,
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.resumption = Resumption::store(sessions.clone() as Arc<dyn ClientSessionStore>);
    config.enable_early_data = early_data;
    Ok(config)
}

/// The name `tls` checks, as rustls wants it.
pub fn server_name(tls: &ClientTls) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(tls.server_name().to_owned())
        .map_err(|_| TlsError::ServerName(tls.server_name().to_owned()))
}

/// Runs the client side of a TLS handshake over `stream` (already connected to `endpoint`),
/// offering `alpn`, and checks that the server chose it. Every failure is a
/// [`TransportError::Tls`] naming the endpoint and the usual cause.
pub async fn dial<IO>(
    stream: IO,
    tls: &ClientTls,
    alpn: &[u8],
    endpoint: &str,
) -> Result<tokio_rustls::client::TlsStream<IO>, TransportError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let tls_err = |reason: String| TransportError::Tls {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let config = client_config(tls, &[alpn], false).map_err(|e| tls_err(e.to_string()))?;
    let name = server_name(tls).map_err(|e| tls_err(e.to_string()))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| tls_err(describe_handshake_error(&e)))?;
    if let Some(p) = stream.get_ref().1.alpn_protocol()
        && p != alpn
    {
        return Err(tls_err(format!(
            "server chose ALPN protocol {:?}, not {:?}",
            String::from_utf8_lossy(p),
            String::from_utf8_lossy(alpn)
        )));
    }
    Ok(stream)
}

/// The server side of TLS for a TCP-based transport: built once per server from its settings.
#[derive(Clone)]
pub struct Acceptor(tokio_rustls::TlsAcceptor);

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Acceptor(..)")
    }
}

impl Acceptor {
    /// An acceptor for `tls` offering `alpn`; `listen` names the server in errors.
    pub fn new(tls: &ServerTls, alpn: &[u8], listen: &str) -> Result<Acceptor, TransportError> {
        let config = server_config(tls, &[alpn]).map_err(|e| TransportError::Tls {
            endpoint: listen.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Acceptor(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }

    /// An acceptor when the server has TLS settings, else `None` (plaintext).
    pub fn for_server(
        tls: Option<&ServerTls>,
        alpn: &[u8],
        listen: &str,
    ) -> Result<Option<Acceptor>, TransportError> {
        tls.map(|t| Acceptor::new(t, alpn, listen)).transpose()
    }

    /// Runs the server side of a handshake over an accepted stream.
    pub async fn accept<IO>(
        &self,
        stream: IO,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.0.accept(stream).await
    }
}

/// Accepts exactly one certificate, by hash; the TLS 1.3 handshake signature is still verified
/// with it, so only the holder of its key can complete the handshake.
#[derive(Debug)]
struct PinnedVerifier {
    sha256: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if sha256(end_entity) == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is offered.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Describes a TLS failure for a status message, naming the usual causes.
pub fn describe_handshake_error(e: &std::io::Error) -> String {
    let inner = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .map(ToString::to_string);
    match inner {
        Some(r) => format!("TLS handshake failed: {r}"),
        None => format!("TLS handshake failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_material_builds_configs_and_names_the_client() {
        let m = TlsMaterial::generate().unwrap();
        assert_eq!(
            m.client_identity().as_deref(),
            Some(GENERATED_CLIENT_IDENTITY)
        );
        for mode in [TlsMode::Tls, TlsMode::Mutual] {
            let s = m.server(mode).unwrap();
            assert_eq!(s.is_mutual(), mode == TlsMode::Mutual);
            server_config(&s, &[b"h2"]).unwrap();
            let c = m.client(mode).unwrap();
            assert_eq!(c.has_identity(), mode == TlsMode::Mutual);
            client_config(&c, &[b"h2"], false).unwrap();
        }
        assert!(m.server(TlsMode::None).is_none());
        let pinned = self_signed_server().unwrap();
        let hash = leaf_sha256(&pinned).unwrap();
        assert_eq!(sha256_from_hex(&to_hex(&hash)), Some(hash));
        let c = ClientTls::pinned(hash);
        let a = client_config(&c, &[b"x"], true).unwrap();
        let b = client_config(&c.clone(), &[b"x"], true).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "clones share what was built");
    }

    #[test]
    fn pem_files_round_trip() {
        let dir = std::env::temp_dir().join(format!("wb-tls-pem-{}", std::process::id()));
        let m = TlsMaterial::generate().unwrap();
        m.write_pem_dir(&dir).unwrap();
        let back = TlsMaterial::from_pem_dir(&dir, DEFAULT_SERVER_NAME).unwrap();
        assert_eq!(back.client_identity(), m.client_identity());
        assert_eq!(back.ca[..], m.ca[..]);
        assert_eq!(
            back.server_key.get().secret_der(),
            m.server_key.get().secret_der()
        );
        server_config(&back.server(TlsMode::Mutual).unwrap(), &[b"h2"]).unwrap();
        client_config(&back.client(TlsMode::Mutual).unwrap(), &[b"h2"], false).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pem_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("wb-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), "not pem").unwrap();
        let e = TlsMaterial::from_pem_dir(&dir, "localhost").unwrap_err();
        assert!(e.to_string().contains("ca.pem"), "{e}");
        let e = TlsMaterial::from_pem_dir(&dir.join("missing"), "localhost").unwrap_err();
        assert!(e.to_string().contains("ca.pem"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
