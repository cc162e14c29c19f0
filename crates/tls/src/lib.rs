//! PKI and TLS of a hangar fleet: the hub's CA (rcgen), host certificates from CSRs,
//! rustls configurations, certificate fingerprints, and [`serve`], the TLS accept loop
//! both the hub and the agent serve their routers through.
//!
//! One crypto provider for the whole tree: aws-lc-rs ([`install_crypto_provider`]).

pub mod forward;
pub mod serve;
pub mod stream;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation failed while trying to {context}")]
    Rcgen {
        context: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot parse {what}: not valid PEM")]
    Pem { what: &'static str },
    #[error("tls configuration failed")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier could not be built")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("'{0}' is neither a DNS name nor an IP address")]
    BadName(String),
}

fn rc(context: &'static str) -> impl FnOnce(rcgen::Error) -> TlsError {
    move |source| TlsError::Rcgen { context, source }
}

/// Installs aws-lc-rs as the process-wide rustls provider; idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertifiedKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("CertifiedKey").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// The fleet's certificate authority.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, common_name);
    d
}

fn sans(names: &[String]) -> Result<Vec<SanType>, TlsError> {
    names
        .iter()
        .map(|n| {
            if let Ok(ip) = n.parse::<std::net::IpAddr>() {
                return Ok(SanType::IpAddress(ip));
            }
            let dns_like = !n.is_empty() && n.len() <= 253 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !dns_like {
                return Err(TlsError::BadName(n.clone()));
            }
            n.clone().try_into().map(SanType::DnsName).map_err(|_| TlsError::BadName(n.clone()))
        })
        .collect()
}

fn leaf_params(common_name: &str, names: &[String], ekus: Vec<ExtendedKeyUsagePurpose>, lifetime: time::Duration) -> Result<CertificateParams, TlsError> {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(common_name);
    p.subject_alt_names = sans(names)?;
    p.is_ca = IsCa::NoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    p.extended_key_usages = ekus;
    p.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    // Backdated a little so hosts with a slightly slow clock accept it at once; by a
    // tenth of a short lifetime at most, so renewal at a third left stays meaningful.
    p.not_before = now - std::cmp::min(lifetime / 10_i32, time::Duration::hours(1));
    p.not_after = now + lifetime;
    Ok(p)
}

impl Ca {
    /// A fresh self-signed CA (ECDSA P-256, 10 years).
    pub fn generate(common_name: &str) -> Result<Ca, TlsError> {
        let key = KeyPair::generate().map_err(rc("generate the CA key"))?;
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(common_name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(3650);
        let cert = p.self_signed(&key).map_err(rc("self-sign the CA"))?;
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        Ca::from_pem(&cert_pem, &key_pem)
    }

    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(rc("read the CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(rc("read the CA certificate"))?;
        Ok(Ca { cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string(), issuer })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// SHA-256 (hex) of the CA certificate: what join tokens pin.
    pub fn fingerprint(&self) -> String {
        fingerprint_pem(&self.cert_pem).unwrap_or_default()
    }

    fn issue(&self, params: CertificateParams) -> Result<CertifiedKey, TlsError> {
        let key = KeyPair::generate().map_err(rc("generate a key"))?;
        let cert = params.signed_by(&key, &self.issuer).map_err(rc("sign a certificate"))?;
        Ok(CertifiedKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A server certificate for `names` (DNS names or IP literals).
    pub fn issue_server(&self, common_name: &str, names: &[String]) -> Result<CertifiedKey, TlsError> {
        self.issue(leaf_params(common_name, names, vec![ExtendedKeyUsagePurpose::ServerAuth], time::Duration::days(3650))?)
    }

    /// A client certificate.
    pub fn issue_client(&self, common_name: &str) -> Result<CertifiedKey, TlsError> {
        self.issue(leaf_params(common_name, &[], vec![ExtendedKeyUsagePurpose::ClientAuth], time::Duration::days(3650))?)
    }

    /// Signs a host's CSR. Only its public key is taken from the request: the subject is
    /// forced to `host:<name>` and the names to `names`, so a host cannot claim another
    /// identity. Client-auth usage only: the hub's clients (CLI, agents) verify server
    /// certificates by usage and by this crate's [`client_config`], so a host's
    /// certificate cannot pass for the hub's; the hub reaches an agent's endpoint with
    /// the certificate pinned by fingerprint ([`pinned_client_config`]), not by usage.
    /// The hosts' CA is not the one the hub's server certificate comes from either.
    pub fn sign_host_csr(&self, csr_pem: &str, host: &str, names: &[String], lifetime: std::time::Duration) -> Result<String, TlsError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(rc("parse the CSR"))?;
        let lifetime = time::Duration::try_from(lifetime).unwrap_or(time::Duration::days(3650));
        csr.params = leaf_params(&format!("{HOST_CN_PREFIX}{host}"), names, vec![ExtendedKeyUsagePurpose::ClientAuth], lifetime)?;
        Ok(csr.signed_by(&self.issuer).map_err(rc("sign the CSR"))?.pem())
    }
}

/// Every host certificate's common name starts with this; the hub's never does.
pub const HOST_CN_PREFIX: &str = "host:";

/// Whether a host certificate should be renewed now: less than a third of its lifetime
/// left, or made by an older hub (server-auth usage, which host certificates no longer
/// carry: those renew at once).
pub fn renewal_due(cert_pem: &str, now: std::time::SystemTime) -> Result<bool, TlsError> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|_| TlsError::Pem { what: "certificate" })?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|_| TlsError::Pem { what: "certificate" })?;
    let legacy = cert.extended_key_usage().ok().flatten().is_some_and(|e| e.value.server_auth);
    let v = cert.validity();
    let (from, to) = (v.not_before.timestamp(), v.not_after.timestamp());
    let now = now.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let left = to - now;
    Ok(legacy || left * 3 < to - from)
}

/// A fresh key pair and a CSR for it: `(csr_pem, key_pem)`.
pub fn generate_csr(common_name: &str) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate().map_err(rc("generate a key"))?;
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(common_name);
    let csr = p.serialize_request(&key).map_err(rc("build the CSR"))?;
    Ok((csr.pem().map_err(rc("encode the CSR"))?, key.serialize_pem()))
}

pub fn fingerprint_der(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Fingerprint of the first certificate in `cert_pem`.
pub fn fingerprint_pem(cert_pem: &str) -> Result<String, TlsError> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|_| TlsError::Pem { what: "certificate" })?;
    Ok(fingerprint_der(der.as_ref()))
}

/// The DNS names and IP addresses a PEM certificate is valid for, sorted.
pub fn subject_alt_names(cert_pem: &str) -> Result<Vec<String>, TlsError> {
    use x509_parser::extensions::GeneralName;
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|_| TlsError::Pem { what: "certificate" })?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|_| TlsError::Pem { what: "certificate" })?;
    let mut names: Vec<String> = match cert.subject_alternative_name().ok().flatten() {
        Some(san) => san
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                GeneralName::DNSName(d) => Some(d.to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                    16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        None => vec![],
    };
    names.sort();
    Ok(names)
}

/// The subject common name of a DER certificate.
pub fn common_name_der(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.subject().iter_common_name().next()?.as_str().ok().map(str::to_string)
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let v: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<_, _>>().map_err(|_| TlsError::Pem { what: "certificate" })?;
    if v.is_empty() {
        return Err(TlsError::Pem { what: "certificate" });
    }
    Ok(v)
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| TlsError::Pem { what: "private key" })
}

fn roots(ca_pem: &str) -> Result<rustls::RootCertStore, TlsError> {
    let mut r = rustls::RootCertStore::empty();
    for c in certs(ca_pem)? {
        r.add(c)?;
    }
    Ok(r)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Server config (ALPN h2, http/1.1). With `client_ca_pem`, client certificates are
/// verified against it: mandatory if `require_client_cert`, optional otherwise.
pub fn server_config(cert_pem: &str, key_pem: &str, client_ca_pem: Option<&str>, require_client_cert: bool) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let b = rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let b = match client_ca_pem {
        Some(ca) => {
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider());
            let v = if require_client_cert { v } else { v.allow_unauthenticated() };
            b.with_client_cert_verifier(v.build()?)
        }
        None => b.with_no_client_auth(),
    };
    let mut cfg = b.with_single_cert(certs(cert_pem)?, key(key_pem)?)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Client config for talking to the hub: trusts only `ca_pem`, and refuses a server
/// certificate made for a host (common name `host:...`), so that a host certificate
/// issued by an older hub (same CA, server-auth usage) cannot pose as the hub either.
/// Optionally with a client identity.
pub fn client_config(ca_pem: &str, identity: Option<(&str, &str)>) -> Result<rustls::ClientConfig, TlsError> {
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca_pem)?), provider())
        .build()
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { check: Check::NotAHost(webpki), provider: provider() }));
    finish_client(b, identity)
}

/// Client config for the hub's calls to an agent's endpoint: the server certificate
/// must be one of `fingerprints` (the host's registered certificate, and the renewed
/// one it has not used yet), whatever CA or names it has. Handshake signatures are
/// still checked.
pub fn pinned_client_config(fingerprints: Vec<String>, identity: Option<(&str, &str)>) -> Result<rustls::ClientConfig, TlsError> {
    let p = provider();
    let b = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { check: Check::Pins(fingerprints), provider: p }));
    finish_client(b, identity)
}

fn finish_client(
    b: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    identity: Option<(&str, &str)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut cfg = match identity {
        Some((c, k)) => b.with_client_auth_cert(certs(c)?, key(k)?)?,
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// How a client checks the server's certificate; handshake signatures are checked by
/// the provider's algorithms in every case.
#[derive(Debug)]
struct Verifier {
    check: Check,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

#[derive(Debug)]
enum Check {
    /// Any certificate (only for fetching the CA during a join).
    Any,
    /// One of these fingerprints, unexpired.
    Pins(Vec<String>),
    /// Web PKI verification, then: the certificate is not a host's.
    NotAHost(Arc<rustls::client::WebPkiServerVerifier>),
}

impl rustls::client::danger::ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let fingerprints = match &self.check {
            Check::Any => return Ok(rustls::client::danger::ServerCertVerified::assertion()),
            Check::NotAHost(webpki) => {
                let ok = webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
                if common_name_der(end_entity.as_ref()).is_some_and(|cn| cn.starts_with(HOST_CN_PREFIX)) {
                    return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure));
                }
                return Ok(ok);
            }
            Check::Pins(f) => f,
        };
        if !fingerprints.contains(&fingerprint_der(end_entity.as_ref())) {
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure));
        }
        unexpired(end_entity, now)?;
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A server certificate that can be replaced while serving (an agent's endpoint after
/// its host certificate is renewed): new handshakes get the new one.
#[derive(Debug)]
pub struct SwappableCert(std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>);

impl SwappableCert {
    pub fn new(cert_pem: &str, key_pem: &str) -> Result<Arc<SwappableCert>, TlsError> {
        Ok(Arc::new(SwappableCert(std::sync::RwLock::new(Self::load(cert_pem, key_pem)?))))
    }
    fn load(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
        Ok(Arc::new(rustls::sign::CertifiedKey::from_der(certs(cert_pem)?, key(key_pem)?, &provider())?))
    }
    pub fn replace(&self, cert_pem: &str, key_pem: &str) -> Result<(), TlsError> {
        let k = Self::load(cert_pem, key_pem)?;
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = k;
        Ok(())
    }
}

impl rustls::server::ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// Like [`server_config`], serving whatever `cert` holds at each handshake; client
/// certificates are mandatory and verified against `client_ca_pem`.
pub fn server_config_swappable(cert: Arc<SwappableCert>, client_ca_pem: &str) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(client_ca_pem)?), provider()).build()?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?.with_client_cert_verifier(v).with_cert_resolver(cert);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Accepts any server certificate (signatures are still checked). Only for fetching the
/// CA during a join, whose fingerprint the caller then checks against the token's pin
/// before trusting anything it says.
pub fn insecure_fetch_config() -> rustls::ClientConfig {
    let p = provider();
    let mut cfg = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { check: Check::Any, provider: p }))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg
}

/// Writes a secret file with mode 0600 from the start, replacing atomically.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("secret")));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A pinned certificate still expires.
fn unexpired(end_entity: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(end_entity.as_ref()).map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
    if !cert.validity().is_valid_at(x509_parser::time::ASN1Time::from_timestamp(now.as_secs() as i64).map_err(|_| rustls::Error::General("bad clock".into()))?) {
        return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Expired));
    }
    Ok(())
}

/// Client certificates an agent's endpoint accepts besides those of its CA: the
/// fingerprints of the source hosts of the transfers it expects (host certificates come
/// from the hosts' CA, which agents do not trust). Counted, so two transfers from one
/// host keep the pin until both are gone.
#[derive(Debug, Default)]
pub struct PeerPins(std::sync::RwLock<std::collections::HashMap<String, usize>>);

impl PeerPins {
    pub fn add(&self, fingerprint: &str) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()).entry(fingerprint.to_string()).or_insert(0) += 1;
    }
    pub fn remove(&self, fingerprint: &str) {
        let mut m = self.0.write().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(fingerprint) {
            *n -= 1;
            if *n == 0 {
                m.remove(fingerprint);
            }
        }
    }
    pub fn contains(&self, fingerprint: &str) -> bool {
        self.0.read().unwrap_or_else(|e| e.into_inner()).contains_key(fingerprint)
    }
}

#[derive(Debug)]
struct CaOrPeers {
    ca: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    peers: Arc<PeerPins>,
}

impl rustls::server::danger::ClientCertVerifier for CaOrPeers {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.ca.root_hint_subjects()
    }
    fn verify_client_cert(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>], now: UnixTime) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        if self.peers.contains(&fingerprint_der(end_entity.as_ref())) {
            unexpired(end_entity, now)?;
            return Ok(rustls::server::danger::ClientCertVerified::assertion());
        }
        self.ca.verify_client_cert(end_entity, intermediates, now)
    }
    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &rustls::DigitallySignedStruct) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.ca.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &rustls::DigitallySignedStruct) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.ca.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.ca.supported_verify_schemes()
    }
}

/// Like [`server_config_swappable`], also accepting the client certificates `peers`
/// pins (an agent's endpoint: the hub's certificate by its CA, the source hosts of
/// expected transfers by fingerprint; handlers still check which one called).
pub fn server_config_swappable_with_peers(cert: Arc<SwappableCert>, client_ca_pem: &str, peers: Arc<PeerPins>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let ca = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(client_ca_pem)?), provider()).build()?;
    let v = Arc::new(CaOrPeers { ca, peers });
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?.with_client_cert_verifier(v).with_cert_resolver(cert);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
