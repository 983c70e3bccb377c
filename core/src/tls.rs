//! TLS settings as data: what `ServerConfig::tls` and `ClientConfig::tls` carry — certificate
//! chains, keys, whom a client trusts and the name it checks — with no TLS library behind them.
//!
//! The `wirebench-tls` crate turns these into rustls configurations, generates throwaway
//! material and holds the dial/accept helper every TLS transport uses. Keeping the settings
//! here lets the contract (and every crate that only needs it: scenarios, fuzz, benches) stay
//! free of rustls, rcgen and ring.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The server name every generated server certificate is valid for (with `127.0.0.1` and
/// `::1`), and the name clients check by default.
pub const DEFAULT_SERVER_NAME: &str = "localhost";
/// The common name of generated client certificates: the identity a server sees under mTLS.
pub const GENERATED_CLIENT_IDENTITY: &str = "wirebench-client";

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

/// A TLS mode that is not `none`, `tls` or `mtls`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown TLS mode {0:?} (none, tls, mtls)")]
pub struct UnknownTlsMode(pub String);

impl FromStr for TlsMode {
    type Err = UnknownTlsMode;
    fn from_str(s: &str) -> Result<TlsMode, UnknownTlsMode> {
        match s {
            "none" => Ok(TlsMode::None),
            "tls" => Ok(TlsMode::Tls),
            "mtls" => Ok(TlsMode::Mutual),
            _ => Err(UnknownTlsMode(s.to_owned())),
        }
    }
}

/// A private key that clones of a config share (keys are not `Clone`).
#[derive(Clone)]
pub struct SharedKey(Arc<PrivateKeyDer<'static>>);

impl SharedKey {
    /// Wraps a key.
    pub fn new(key: PrivateKeyDer<'static>) -> SharedKey {
        SharedKey(Arc::new(key))
    }

    /// A copy of the key (what TLS libraries take by value).
    pub fn key(&self) -> PrivateKeyDer<'static> {
        self.0.clone_key()
    }

    /// The key itself.
    pub fn get(&self) -> &PrivateKeyDer<'static> {
        &self.0
    }
}

impl fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.write_str("SharedKey(..)")
    }
}

/// A certificate chain, leaf first, shared by clones.
pub type Chain = Arc<[CertificateDer<'static>]>;

/// A server's TLS settings: its certificate chain and key, and under mutual TLS the roots
/// client certificates must chain to.
#[derive(Clone, Debug)]
pub struct ServerTls {
    chain: Chain,
    key: SharedKey,
    client_roots: Option<Chain>,
}

impl ServerTls {
    /// TLS with this chain (leaf first) and key.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> ServerTls {
        ServerTls::shared(Arc::from(chain), SharedKey::new(key))
    }

    /// TLS with a chain and key already shared (no copy).
    pub fn shared(chain: Chain, key: SharedKey) -> ServerTls {
        ServerTls {
            chain,
            key,
            client_roots: None,
        }
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

    /// The certificate chain, leaf first.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// The private key.
    pub fn key(&self) -> &SharedKey {
        &self.key
    }

    /// Under mutual TLS, the roots client certificates must chain to.
    pub fn client_roots(&self) -> Option<&Chain> {
        self.client_roots.as_ref()
    }
}

/// How a client decides to trust the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Certificates chaining to these roots, valid for the server name.
    Roots(Chain),
    /// Exactly the certificate with this SHA-256 (the handshake signature is still checked).
    Pinned([u8; 32]),
}

/// What a TLS library builds from one [`ClientTls`] and keeps with it: configurations and the
/// session cache every clone shares, so a reconnection can resume (and QUIC can send 0-RTT
/// data) — libraries resume a session only under the very config that made it. The TLS crate
/// owns its content; the contract only carries it, so it is opaque here.
#[derive(Default)]
pub struct BuiltCache(Mutex<Option<Box<dyn Any + Send>>>);

impl BuiltCache {
    /// Runs `f` on the cache's content (created by `f` on first use), under its lock.
    pub fn with<R>(&self, f: impl FnOnce(&mut Option<Box<dyn Any + Send>>) -> R) -> R {
        // A panic while holding this lock would be a bug; the cache stays usable.
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }
}

impl fmt::Debug for BuiltCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BuiltCache(..)")
    }
}

/// A client's TLS settings: whom to trust, the name to check, and under mutual TLS the
/// certificate to present. Clones share one [`BuiltCache`].
#[derive(Clone)]
pub struct ClientTls {
    trust: Trust,
    server_name: String,
    identity: Option<(Chain, SharedKey)>,
    built: Arc<BuiltCache>,
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
            built: Arc::default(),
        }
    }

    /// Trusts exactly the certificate whose SHA-256 is `sha256`, whatever its name or issuer.
    /// Connections made with the same pin share one cache (and so can resume).
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
        self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> ClientTls {
        self.with_shared_identity(Arc::from(chain), SharedKey::new(key))
    }

    /// Presents a chain and key already shared (no copy).
    pub fn with_shared_identity(mut self, chain: Chain, key: SharedKey) -> ClientTls {
        self.identity = Some((chain, key));
        // Sessions and configs of other credentials are not this client's.
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

    /// Whom the client trusts.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// The certificate chain and key presented under mutual TLS.
    pub fn identity(&self) -> Option<&(Chain, SharedKey)> {
        self.identity.as_ref()
    }

    /// True when a client certificate is presented.
    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// What the TLS library built from these settings, shared by every clone.
    pub fn built(&self) -> &BuiltCache {
        &self.built
    }
}

/// Hex of bytes (for endpoints carrying a certificate pin).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        for m in [TlsMode::None, TlsMode::Tls, TlsMode::Mutual] {
            assert_eq!(m.name().parse::<TlsMode>(), Ok(m));
        }
        assert_eq!(
            "TLS".parse::<TlsMode>().unwrap_err().to_string(),
            "unknown TLS mode \"TLS\" (none, tls, mtls)"
        );
    }

    #[test]
    fn hex_round_trips() {
        let h = [0xab_u8; 32];
        assert_eq!(sha256_from_hex(&to_hex(&h)), Some(h));
        assert_eq!(sha256_from_hex("ab"), None);
        assert_eq!(sha256_from_hex(&"zz".repeat(32)), None);
    }

    #[test]
    fn pinned_clients_share_their_cache() {
        let a = ClientTls::pinned([7; 32]);
        let b = ClientTls::pinned([7; 32]);
        assert!(std::ptr::eq(a.built(), b.built()));
        let c = ClientTls::pinned([8; 32]);
        assert!(!std::ptr::eq(a.built(), c.built()));
    }
}
