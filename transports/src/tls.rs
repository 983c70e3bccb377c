//! TLS 1.3 and mutual TLS, shared by every transport with a wire to encrypt (`tcp`, `grpc`,
//! `quic`): certificate material (a throwaway CA generated with rcgen, or PEM files), the
//! transport-neutral settings carried by `ServerConfig`/`ClientConfig`, and the rustls
//! configurations built from them.
//!
//! Everything here runs on rustls's `ring` provider, passed explicitly to every config: no
//! process-wide provider is needed (see RUST-NOTES on `install_default`). Only TLS 1.3 is
//! offered. Under mutual TLS the server requires a client certificate signed by the configured
//! CA, and the client's identity — the subject common name of its certificate, else its first
//! DNS name — reaches the shared echo as `CallHead::peer_identity`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

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

/// The server name every generated server certificate is valid for (with `127.0.0.1` and
/// `::1`), and the name clients check by default.
pub const DEFAULT_SERVER_NAME: &str = "localhost";
/// The common name of generated client certificates: the identity a server sees under mTLS.
pub const GENERATED_CLIENT_IDENTITY: &str = "wirebench-client";

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

/// Which TLS a run uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// Plaintext (QUIC still encrypts: it has no plaintext mode).
    #[default]
    None,
    /// TLS 1.3, the server authenticated by its certificate.
    Tls,
    /// Mutual TLS 1.3: the client presents a certificate too.
    Mutual,
}

impl TlsMode {
    /// `none`, `tls` or `mtls`.
    pub fn name(self) -> &'static str {
        match self {
            TlsMode::None => "none",
            TlsMode::Tls => "tls",
            TlsMode::Mutual => "mtls",
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TlsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<TlsMode, String> {
        match s {
            "none" => Ok(TlsMode::None),
            "tls" => Ok(TlsMode::Tls),
            "mtls" => Ok(TlsMode::Mutual),
            _ => Err(format!("unknown TLS mode {s:?} (none, tls, mtls)")),
        }
    }
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

/// A private key that can be shared by clones of a config (rustls keys are not `Clone`).
#[derive(Clone)]
struct SharedKey(Arc<PrivateKeyDer<'static>>);

impl SharedKey {
    fn key(&self) -> PrivateKeyDer<'static> {
        self.0.clone_key()
    }
}

impl fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.write_str("SharedKey(..)")
    }
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
    SharedKey(Arc::new(PrivateKeyDer::Pkcs8(key.serialize_der().into())))
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
            let label = match &*k.0 {
                PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
                PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
                _ => "PRIVATE KEY",
            };
            pem_block(label, k.0.secret_der())
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
        let tls = ServerTls {
            chain: self.server_chain.clone(),
            key: self.server_key.clone(),
            client_roots: None,
        };
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
                Some((chain, key)) => ClientTls {
                    identity: Some((chain.clone(), key.clone())),
                    ..tls
                },
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
    Ok(SharedKey(Arc::new(key)))
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

/// A server's TLS settings (transport-neutral): its certificate chain and key, and under
/// mutual TLS the roots client certificates must chain to.
#[derive(Clone, Debug)]
pub struct ServerTls {
    chain: Arc<[CertificateDer<'static>]>,
    key: SharedKey,
    client_roots: Option<Arc<[CertificateDer<'static>]>>,
}

impl ServerTls {
    /// TLS with this chain (leaf first) and key.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> ServerTls {
        ServerTls {
            chain: Arc::from(chain),
            key: SharedKey(Arc::new(key)),
            client_roots: None,
        }
    }

    /// A throwaway self-signed certificate for `localhost`, `127.0.0.1` and `::1` (what QUIC
    /// uses when no TLS is configured: it cannot run without).
    pub fn self_signed() -> Result<ServerTls, TlsError> {
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
        Ok(ServerTls {
            chain: Arc::from(vec![cert.der().clone()]),
            key: key_der(&key),
            client_roots: None,
        })
    }

    /// Requires client certificates chaining to `roots` (mutual TLS).
    pub fn require_client_certs(mut self, roots: Vec<CertificateDer<'static>>) -> ServerTls {
        self.client_roots = Some(Arc::from(roots));
        self
    }

    /// True under mutual TLS.
    pub fn is_mutual(&self) -> bool {
        self.client_roots.is_some()
    }

    /// SHA-256 of the leaf certificate (what a pinning client checks).
    pub fn leaf_sha256(&self) -> Option<[u8; 32]> {
        self.chain.first().map(|c| sha256(c))
    }

    /// A rustls server config: TLS 1.3 only, these ALPN protocols, client certificates
    /// required under mutual TLS.
    pub fn rustls_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_err)?;
        let builder = match &self.client_roots {
            None => builder.with_no_client_auth(),
            Some(roots) => {
                let mut store = RootCertStore::empty();
                for c in roots.iter() {
                    store.add(c.clone()).map_err(config_err)?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
                        .build()
                        .map_err(config_err)?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(self.chain.to_vec(), self.key.key())
            .map_err(config_err)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// How a client decides to trust the server.
#[derive(Clone, Debug)]
enum Trust {
    /// Certificates chaining to these roots, valid for the server name.
    Roots(Arc<[CertificateDer<'static>]>),
    /// Exactly the certificate with this SHA-256 (the handshake signature is still checked).
    Pinned([u8; 32]),
}

/// rustls configs built from one [`ClientTls`], by (ALPN protocols, early data).
type BuiltConfigs = Arc<Mutex<Vec<(Vec<Vec<u8>>, bool, Arc<rustls::ClientConfig>)>>>;

/// A client's TLS settings (transport-neutral): whom to trust, the name to check, and under
/// mutual TLS the certificate to present. Clones share one TLS session cache and the rustls
/// configs built from them, so a reconnection can resume (and QUIC can send 0-RTT data):
/// rustls only resumes a session under the very config that made it.
#[derive(Clone)]
pub struct ClientTls {
    trust: Trust,
    server_name: String,
    identity: Option<(Arc<[CertificateDer<'static>]>, SharedKey)>,
    sessions: Arc<ClientSessionMemoryCache>,
    built: BuiltConfigs,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("trust", &self.trust)
            .field("server_name", &self.server_name)
            .field("client_cert", &self.identity.is_some())
            .finish()
    }
}

/// Sessions kept per client settings.
const SESSION_CACHE: usize = 64;

impl ClientTls {
    /// Trusts certificates chaining to `roots` and valid for `server_name`.
    pub fn new(roots: Vec<CertificateDer<'static>>, server_name: &str) -> ClientTls {
        ClientTls::with_trust(Trust::Roots(Arc::from(roots)), server_name)
    }

    fn with_trust(trust: Trust, server_name: &str) -> ClientTls {
        ClientTls {
            trust,
            server_name: server_name.to_owned(),
            identity: None,
            sessions: Arc::new(ClientSessionMemoryCache::new(SESSION_CACHE)),
            built: Arc::default(),
        }
    }

    /// Trusts exactly the certificate whose SHA-256 is `sha256`, whatever its name or issuer.
    /// Connections made with the same pin share one session cache (and so can resume).
    pub fn pinned(sha256: [u8; 32]) -> ClientTls {
        static PINNED: OnceLock<Mutex<HashMap<[u8; 32], ClientTls>>> = OnceLock::new();
        let fresh = || ClientTls::with_trust(Trust::Pinned(sha256), DEFAULT_SERVER_NAME);
        PINNED
            .get_or_init(Default::default)
            .lock()
            .map(|mut m| {
                if m.len() > 1024 {
                    // A process that pins many short-lived servers must not grow without bound.
                    m.clear();
                }
                m.entry(sha256).or_insert_with(fresh).clone()
            })
            .unwrap_or_else(|_| fresh())
    }

    /// Presents this certificate chain and key (mutual TLS).
    pub fn with_identity(
        mut self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> ClientTls {
        self.identity = Some((Arc::from(chain), SharedKey(Arc::new(key))));
        // Sessions and configs of other credentials are not this client's.
        self.sessions = Arc::new(ClientSessionMemoryCache::new(SESSION_CACHE));
        self.built = Arc::default();
        self
    }

    /// Checks the server certificate against another name.
    pub fn with_server_name(mut self, name: &str) -> ClientTls {
        name.clone_into(&mut self.server_name);
        self
    }

    /// The name checked against the server's certificate (also sent as SNI).
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// The name as rustls wants it.
    pub fn rustls_server_name(&self) -> Result<ServerName<'static>, TlsError> {
        ServerName::try_from(self.server_name.clone())
            .map_err(|_| TlsError::ServerName(self.server_name.clone()))
    }

    /// True when a client certificate is presented.
    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// The rustls client config for these settings: TLS 1.3 only, these ALPN protocols, 0-RTT
    /// early data when `early_data` (QUIC only). Built once per (ALPN, early data) and shared
    /// by every clone, with the session cache.
    pub fn rustls_config(
        &self,
        alpn: &[&[u8]],
        early_data: bool,
    ) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let mut built = self
            .built
            .lock()
            .map_err(|_| TlsError::Config("TLS config cache poisoned".into()))?;
        if let Some((_, _, c)) = built.iter().find(|(a, e, _)| {
            *e == early_data && a.iter().map(Vec::as_slice).eq(alpn.iter().copied())
        }) {
            return Ok(c.clone());
        }
        let config = Arc::new(self.build_config(alpn, early_data)?);
        built.push((
            alpn.iter().map(|p| p.to_vec()).collect(),
            early_data,
            config.clone(),
        ));
        Ok(config)
    }

    fn build_config(
        &self,
        alpn: &[&[u8]],
        early_data: bool,
    ) -> Result<rustls::ClientConfig, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_err)?;
        let builder = match &self.trust {
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
        let mut config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.to_vec(), key.key())
                .map_err(config_err)?,
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.resumption = Resumption::store(self.sessions.clone() as Arc<dyn ClientSessionStore>);
        config.enable_early_data = early_data;
        Ok(config)
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

/// Hex of a hash (for endpoints carrying a certificate pin).
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits into a SHA-256.
pub fn sha256_from_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
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
            s.rustls_config(&[b"h2"]).unwrap();
            let c = m.client(mode).unwrap();
            assert_eq!(c.has_identity(), mode == TlsMode::Mutual);
            c.rustls_config(&[b"h2"], false).unwrap();
        }
        assert!(m.server(TlsMode::None).is_none());
        let pinned = ServerTls::self_signed().unwrap();
        let hash = pinned.leaf_sha256().unwrap();
        assert_eq!(sha256_from_hex(&to_hex(&hash)), Some(hash));
        ClientTls::pinned(hash)
            .rustls_config(&[b"x"], true)
            .unwrap();
    }

    #[test]
    fn modes_parse() {
        for m in [TlsMode::None, TlsMode::Tls, TlsMode::Mutual] {
            assert_eq!(m.name().parse::<TlsMode>(), Ok(m));
        }
        assert!("ssl".parse::<TlsMode>().is_err());
        assert_eq!(sha256_from_hex("zz"), None);
        assert_eq!(sha256_from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn pem_files_round_trip() {
        let dir = std::env::temp_dir().join(format!("wb-tls-pem-{}", std::process::id()));
        let m = TlsMaterial::generate().unwrap();
        m.write_pem_dir(&dir).unwrap();
        let back = TlsMaterial::from_pem_dir(&dir, DEFAULT_SERVER_NAME).unwrap();
        assert_eq!(back.client_identity(), m.client_identity());
        assert_eq!(back.ca[..], m.ca[..]);
        assert_eq!(back.server_key.0.secret_der(), m.server_key.0.secret_der());
        back.server(TlsMode::Mutual)
            .unwrap()
            .rustls_config(&[b"h2"])
            .unwrap();
        back.client(TlsMode::Mutual)
            .unwrap()
            .rustls_config(&[b"h2"], false)
            .unwrap();
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
