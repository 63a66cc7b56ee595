//! Domain certificates and mutual-TLS 1.3 configurations (cargo feature `tls`).
//!
//! Each domain has its own CA. Each node gets a certificate signed by that CA, whose only
//! subject alternative name is the DNS name `<node>.<domain>.m2m` (see [`server_name`]) and
//! whose common name is the node's name. Node and domain names must therefore be valid DNS
//! labels (letters, digits, `-`). A node certificate is valid for [`DEFAULT_VALIDITY_DAYS`]
//! from its issue (or the days given to [`init_dir_with`] or [`reissue_node`]);
//! [`not_after`] tells when it expires, and [`reissue_node`] renews one node's certificate from
//! the CA (the node loads it at its next start). The CA itself carries no expiry (rcgen's
//! default validity, 1975–4096): its key (`ca.key`) is needed only to issue certificates, and
//! belongs offline between issues.
//!
//! A peer is accepted only if its certificate chains to the domain CA **and** names exactly
//! one node of the domain file ([`peer_node`]). The dialer additionally checks that the
//! acceptor's certificate names the node it dialed (the TLS server name).
//!
//! On disk a folder holds `ca.pem`, `ca.key`, and `<node>.pem` + `<node>.key` per node, all PEM
//! (keys PKCS#8, ECDSA P-256, written with mode 0600 on Unix). [`init_dir`] creates what is
//! missing, so running it again after adding a node issues only the new node's certificate.
//!
//! ```no_run
//! use std::sync::Arc;
//! use replication_core::{DomainConfig, NodeId, tls};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (cfg, _) = DomainConfig::load(&std::fs::read_to_string("web.toml")?, "web.toml")?;
//! tls::init_dir(&cfg, std::path::Path::new("certs"))?;            // m2m certs init
//! let me = NodeId::new("app1");
//! let pem = tls::load_node(std::path::Path::new("certs"), &me)?;
//! let cfg = Arc::new(cfg);
//! let server = tls::server_config(&cfg, &me, &pem)?;
//! let client = tls::client_config(&cfg, &me, &pem)?;
//! # let _ = (server, client); Ok(()) }
//! ```

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

use crate::config::{DomainConfig, NodeId, SharedDomain};
use crate::error::Error;
use crate::transport::PemMaterial;

/// The ALPN protocol both transports negotiate.
pub const ALPN: &[u8] = b"m2m/1";

fn tls_err(what: &str) -> impl Fn(rustls::Error) -> Error + '_ {
    move |e| Error::Tls(format!("{what}: {e}"))
}

fn gen_err(what: &str) -> impl Fn(rcgen::Error) -> Error + '_ {
    move |e| Error::Tls(format!("{what}: {e}"))
}

/// The DNS name a node's certificate carries: `<node>.<domain>.m2m`.
pub fn server_name(domain: &str, node: &NodeId) -> Result<ServerName<'static>, Error> {
    let name = format!("{node}.{domain}.m2m");
    ServerName::try_from(name.clone()).map_err(|_| {
        Error::Tls(format!("`{name}` is not a valid DNS name: node and domain names must be DNS labels"))
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The node of `cfg` that `cert` names, if exactly one. Does not check the chain (the TLS
/// handshake did).
pub fn peer_node(cfg: &DomainConfig, cert: &CertificateDer<'_>) -> Option<NodeId> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    let mut found = None;
    for n in &cfg.nodes {
        let Ok(name) = server_name(&cfg.domain.name, &n.name) else { continue };
        if ee.verify_is_valid_for_subject_name(&name).is_ok() {
            if found.is_some() {
                return None; // ambiguous (names differing only in case): refuse
            }
            found = Some(n.name.clone());
        }
    }
    found
}

fn ca_params(domain: &str) -> Result<CertificateParams, Error> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(gen_err("CA parameters"))?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.distinguished_name.push(DnType::CommonName, format!("m2m CA of domain {domain}"));
    p.distinguished_name.push(DnType::OrganizationName, "m2m");
    p.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(p)
}

/// A new CA for `domain`: (certificate PEM, key PEM).
pub fn generate_ca(domain: &str) -> Result<(String, String), Error> {
    let key = KeyPair::generate().map_err(gen_err("CA key"))?;
    let cert = ca_params(domain)?.self_signed(&key).map_err(gen_err("CA certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// How long a node certificate is valid when no other length is given: 365 days.
pub const DEFAULT_VALIDITY_DAYS: u32 = 365;

/// A certificate for `node` of `domain`, signed by the CA whose key is `ca_key_pem`, valid
/// from `now` (less an hour, for clocks a little behind) for `days`: (certificate PEM, key
/// PEM).
pub fn issue_node(
    domain: &str,
    node: &NodeId,
    ca_key_pem: &str,
    now: SystemTime,
    days: u32,
) -> Result<(String, String), Error> {
    let name = server_name(domain, node)?;
    let ServerName::DnsName(dns) = &name else {
        return Err(Error::Tls(format!("node `{node}`: not a DNS name")));
    };
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(gen_err("CA key"))?;
    let issuer = Issuer::new(ca_params(domain)?, ca_key);
    let mut p = CertificateParams::new(vec![dns.as_ref().to_owned()]).map_err(gen_err("node parameters"))?;
    p.distinguished_name.push(DnType::CommonName, node.as_str());
    p.distinguished_name.push(DnType::OrganizationName, format!("m2m domain {domain}"));
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::from(now);
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(i64::from(days));
    let key = KeyPair::generate().map_err(gen_err("node key"))?;
    let cert = p.signed_by(&key, &issuer).map_err(gen_err("node certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.display().to_string(), source }
}

fn write_file(path: &Path, text: &str, secret: bool) -> Result<(), Error> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts.open(path).map_err(io_err(path))?;
    f.write_all(text.as_bytes()).map_err(io_err(path))
}

fn read_file(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(io_err(path))
}

/// Creates `dir` if needed, a CA (`ca.pem`, `ca.key`) unless one is there, and a certificate
/// and key for every node of `cfg` that has none, valid for [`DEFAULT_VALIDITY_DAYS`] from
/// now. Existing files are never overwritten. Returns the nodes a certificate was issued for.
pub fn init_dir(cfg: &DomainConfig, dir: &Path) -> Result<Vec<NodeId>, Error> {
    init_dir_with(cfg, dir, SystemTime::now(), DEFAULT_VALIDITY_DAYS)
}

/// [`init_dir`], with node certificates valid for `days` from `now`.
pub fn init_dir_with(
    cfg: &DomainConfig,
    dir: &Path,
    now: SystemTime,
    days: u32,
) -> Result<Vec<NodeId>, Error> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let domain = &cfg.domain.name;
    let (ca_pem, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let ca_key_text = if ca_key.exists() {
        read_file(&ca_key)?
    } else {
        if ca_pem.exists() {
            return Err(Error::Tls(format!("{} exists without ca.key", ca_pem.display())));
        }
        let (cert, key) = generate_ca(domain)?;
        write_file(&ca_key, &key, true)?;
        write_file(&ca_pem, &cert, false)?;
        key
    };
    let mut issued = Vec::new();
    for n in &cfg.nodes {
        let (cert_path, key_path) = node_paths(dir, &n.name);
        if cert_path.exists() && key_path.exists() {
            continue;
        }
        let (cert, key) = issue_node(domain, &n.name, &ca_key_text, now, days)?;
        let _ = std::fs::remove_file(&cert_path);
        let _ = std::fs::remove_file(&key_path);
        write_file(&key_path, &key, true)?;
        write_file(&cert_path, &cert, false)?;
        issued.push(n.name.clone());
    }
    Ok(issued)
}

/// Issues `node` a new certificate and key from the CA in `dir` (which needs `ca.key`), valid
/// for `days` from `now`, replacing the ones there: each new file is written beside the old
/// one and renamed over it, so a node starting meanwhile reads the old pair or the new one.
/// Returns the certificate's path.
pub fn reissue_node(
    cfg: &DomainConfig,
    dir: &Path,
    node: &NodeId,
    now: SystemTime,
    days: u32,
) -> Result<std::path::PathBuf, Error> {
    if cfg.node(node).is_none() {
        return Err(Error::UnknownPeer { peer: node.to_string() });
    }
    let ca_key = dir.join("ca.key");
    if !ca_key.exists() {
        return Err(Error::Tls(format!(
            "{}: no CA key; re-issuing a certificate needs the CA key of the domain in this folder",
            ca_key.display()
        )));
    }
    let (cert, key) = issue_node(&cfg.domain.name, node, &read_file(&ca_key)?, now, days)?;
    let (cert_path, key_path) = node_paths(dir, node);
    for (path, text, secret) in [(&key_path, &key, true), (&cert_path, &cert, false)] {
        let tmp = path.with_extension("new");
        let _ = std::fs::remove_file(&tmp);
        write_file(&tmp, text, secret)?;
        std::fs::rename(&tmp, path).map_err(io_err(path))?;
    }
    Ok(cert_path)
}

/// When the first certificate of `cert_pem` expires (its `notAfter`).
pub fn not_after(cert_pem: &str) -> Result<SystemTime, Error> {
    let der = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .next()
        .ok_or_else(|| Error::Tls("the PEM holds no certificate".into()))?
        .map_err(|e| Error::Tls(format!("certificate: {e}")))?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| Error::Tls(format!("certificate: {e}")))?;
    let secs = cert.validity().not_after.timestamp();
    let t = if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    t.ok_or_else(|| Error::Tls(format!("certificate: expiry {secs} s from 1970 is out of range")))
}

/// Whole days from `now` until `not_after` (negative once it has passed).
pub fn days_left(not_after: SystemTime, now: SystemTime) -> i64 {
    match not_after.duration_since(now) {
        Ok(d) => (d.as_secs() / 86_400) as i64,
        Err(e) => -(e.duration().as_secs().div_ceil(86_400) as i64),
    }
}

fn node_paths(dir: &Path, node: &NodeId) -> (std::path::PathBuf, std::path::PathBuf) {
    (dir.join(format!("{node}.pem")), dir.join(format!("{node}.key")))
}

/// Reads `ca.pem`, `<node>.pem` and `<node>.key` from `dir`. A file that is not what it
/// should be (no certificate, no private key, malformed PEM) is an error naming the file.
pub fn load_node(dir: &Path, node: &NodeId) -> Result<PemMaterial, Error> {
    let (cert_path, key_path) = node_paths(dir, node);
    let ca_path = dir.join("ca.pem");
    let certs = |path: &Path| -> Result<String, Error> {
        let text = read_file(path)?;
        let mut n = 0;
        for c in CertificateDer::pem_slice_iter(text.as_bytes()) {
            c.map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
            n += 1;
        }
        if n == 0 {
            return Err(Error::Tls(format!("{}: holds no certificate", path.display())));
        }
        Ok(text)
    };
    let (ca_cert, cert) = (certs(&ca_path)?, certs(&cert_path)?);
    let key = read_file(&key_path)?;
    PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| Error::Tls(format!("{}: no private key: {e}", key_path.display())))?;
    Ok(PemMaterial { ca_cert, cert, key })
}

struct Parsed {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn parse(cfg: &DomainConfig, local: &NodeId, pem: &PemMaterial) -> Result<Parsed, Error> {
    let pem_err =
        |what: &'static str| move |e: rustls::pki_types::pem::Error| Error::Tls(format!("{what}: {e}"));
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem.ca_cert.as_bytes()) {
        roots.add(c.map_err(pem_err("CA certificate"))?).map_err(tls_err("CA certificate"))?;
    }
    if roots.is_empty() {
        return Err(Error::Tls("the CA PEM holds no certificate".into()));
    }
    let chain = CertificateDer::pem_slice_iter(pem.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err("node certificate"))?;
    let first = chain.first().ok_or_else(|| Error::Tls("the node PEM holds no certificate".into()))?;
    match peer_node(cfg, first) {
        Some(n) if &n == local => {}
        Some(n) => {
            return Err(Error::Tls(format!("the certificate names node `{n}`, not this node `{local}`")));
        }
        None => {
            return Err(Error::Tls(format!(
                "the certificate names no node of domain `{}` (expected `{}`)",
                cfg.domain.name,
                server_name(&cfg.domain.name, local).map(|n| n.to_str().into_owned()).unwrap_or_default()
            )));
        }
    }
    let key = PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).map_err(pem_err("node key"))?;
    Ok(Parsed { roots: Arc::new(roots), chain, key })
}

/// Accepts a client certificate only if it chains to the domain CA and names a node of the
/// domain.
struct DomainClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    /// Follows the nodes a reload adds.
    cfg: SharedDomain,
}

impl fmt::Debug for DomainClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DomainClientVerifier").field("domain", &self.cfg.load().domain.name).finish()
    }
}

impl ClientCertVerifier for DomainClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let cfg = self.cfg.load();
        if peer_node(&cfg, end_entity).is_none() {
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                rustls::OtherError(Arc::new(NotANode(cfg.domain.name.clone()))),
            )));
        }
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

struct NotANode(String);

// rustls prints certificate errors with `Debug`: make it the sentence.
impl fmt::Debug for NotANode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for NotANode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the certificate names no node of domain `{}`", self.0)
    }
}

impl std::error::Error for NotANode {}

/// The acceptor side: TLS 1.3 only, client certificates required and checked as described in
/// the module docs, ALPN [`ALPN`].
pub fn server_config(
    cfg: &Arc<DomainConfig>,
    local: &NodeId,
    pem: &PemMaterial,
) -> Result<Arc<ServerConfig>, Error> {
    server_config_following(&SharedDomain::new(cfg.clone()), local, pem)
}

/// [`server_config`] checking client certificates against the current file of `domain`, so
/// that it accepts the nodes a reload adds.
pub fn server_config_following(
    domain: &SharedDomain,
    local: &NodeId,
    pem: &PemMaterial,
) -> Result<Arc<ServerConfig>, Error> {
    let p = parse(&domain.load(), local, pem)?;
    let inner = WebPkiClientVerifier::builder_with_provider(p.roots, provider())
        .build()
        .map_err(|e| Error::Tls(format!("client verifier: {e}")))?;
    let verifier = Arc::new(DomainClientVerifier { inner, cfg: domain.clone() });
    let mut sc = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err("server config"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(p.chain, p.key)
        .map_err(tls_err("server certificate"))?;
    sc.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(sc))
}

/// The dialer side: TLS 1.3 only, presents this node's certificate, and accepts the peer only
/// if its certificate chains to the domain CA and names the node dialed (connect with
/// [`server_name`] of that node).
pub fn client_config(
    cfg: &Arc<DomainConfig>,
    local: &NodeId,
    pem: &PemMaterial,
) -> Result<Arc<ClientConfig>, Error> {
    let p = parse(cfg, local, pem)?;
    let verifier = WebPkiServerVerifier::builder_with_provider(p.roots, provider())
        .build()
        .map_err(|e| Error::Tls(format!("server verifier: {e}")))?;
    let mut cc = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err("client config"))?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(p.chain, p.key)
        .map_err(tls_err("client certificate"))?;
    cc.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(cc))
}

/// Accepts any server certificate. Only for [`insecure_configs`].
#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Configs for transports that must speak TLS but are run insecure (QUIC with
/// [`crate::transport::Security::Insecure`]): a throwaway self-signed certificate, no client
/// authentication, and **no verification of the server**. Loopback demos only.
pub fn insecure_configs() -> Result<(Arc<ServerConfig>, Arc<ClientConfig>), Error> {
    let key = KeyPair::generate().map_err(gen_err("throwaway key"))?;
    let params = CertificateParams::new(vec!["insecure.m2m".to_owned()]).map_err(gen_err("throwaway"))?;
    let cert = params.self_signed(&key).map_err(gen_err("throwaway certificate"))?;
    let key = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| Error::Tls(format!("throwaway key: {e}")))?;
    let mut sc = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err("server config"))?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .map_err(tls_err("server certificate"))?;
    sc.alpn_protocols = vec![ALPN.to_vec()];
    let mut cc = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err("client config"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider())))
        .with_no_client_auth();
    cc.alpn_protocols = vec![ALPN.to_vec()];
    Ok((Arc::new(sc), Arc::new(cc)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(domain: &str) -> Arc<DomainConfig> {
        let text = format!(
            "[domain]\nname='{domain}'\n[[node]]\nname='a'\naddress='127.0.0.1:1'\n\
             [[node]]\nname='b'\naddress='127.0.0.1:2'\n"
        );
        Arc::new(DomainConfig::parse(&text, "t").expect("valid"))
    }

    fn tmp(tag: &str) -> std::path::PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        std::env::temp_dir().join(format!("m2m-tls-{tag}-{}-{nanos}", std::process::id()))
    }

    #[test]
    fn init_load_and_build_configs() {
        let c = cfg("web");
        let dir = tmp("init");
        let issued = init_dir(&c, &dir).expect("init");
        assert_eq!(issued, vec![NodeId::new("a"), NodeId::new("b")]);
        assert!(init_dir(&c, &dir).expect("again").is_empty(), "idempotent");
        let a = NodeId::new("a");
        let pem = load_node(&dir, &a).expect("load");
        server_config(&c, &a, &pem).expect("server");
        client_config(&c, &a, &pem).expect("client");
        // b's credentials do not pass for a.
        let err =
            server_config(&c, &a, &load_node(&dir, &NodeId::new("b")).expect("b")).expect_err("wrong node");
        assert!(err.to_string().contains("names node `b`"), "{err}");
        // a cert of domain web names no node of domain shop.
        let err = client_config(&cfg("shop"), &a, &pem).expect_err("other domain");
        assert!(err.to_string().contains("names no node"), "{err}");
        let chain: Vec<_> =
            CertificateDer::pem_slice_iter(pem.cert.as_bytes()).collect::<Result<_, _>>().expect("pem");
        assert_eq!(peer_node(&c, &chain[0]), Some(a));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn node_certificates_expire_and_are_reissued_from_the_ca() {
        let cfg = cfg("web");
        let dir = tmp("expiry");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        init_dir_with(&cfg, &dir, t0, 30).expect("init");
        let a = NodeId::new("a");
        let old = load_node(&dir, &a).expect("load");
        let end = not_after(&old.cert).expect("expiry");
        assert_eq!(end, t0 + Duration::from_secs(30 * 86_400));
        assert_eq!(days_left(end, t0), 30);
        assert_eq!(days_left(end, t0 + Duration::from_secs(31 * 86_400)), -1);

        let path = reissue_node(&cfg, &dir, &a, t0 + Duration::from_secs(86_400), 90).expect("reissue");
        assert_eq!(path, dir.join("a.pem"));
        let new = load_node(&dir, &a).expect("load the new pair");
        assert_ne!(new.key, old.key);
        assert_eq!(not_after(&new.cert).expect("expiry"), t0 + Duration::from_secs(91 * 86_400));
        assert!(server_config(&cfg, &a, &new).is_ok() && client_config(&cfg, &a, &new).is_ok());
        assert!(!dir.join("a.new").exists());

        assert!(matches!(
            reissue_node(&cfg, &dir, &NodeId::new("zz"), t0, 1),
            Err(Error::UnknownPeer { .. })
        ));
        std::fs::remove_file(dir.join("ca.key")).expect("rm");
        let err = reissue_node(&cfg, &dir, &a, t0, 1).expect_err("no CA key");
        assert!(err.to_string().contains("ca.key"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_that_is_not_what_it_should_be_is_named() {
        let cfg = cfg("web");
        let dir = tmp("named");
        init_dir(&cfg, &dir).expect("init");
        let a = NodeId::new("a");
        std::fs::write(dir.join("a.pem"), "not a certificate").expect("write");
        let err = load_node(&dir, &a).expect_err("no certificate");
        assert!(err.to_string().contains(&dir.join("a.pem").display().to_string()), "{err}");
        let b = NodeId::new("b");
        std::fs::write(dir.join("b.key"), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .expect("write");
        let err = load_node(&dir, &b).expect_err("no key");
        assert!(err.to_string().contains(&dir.join("b.key").display().to_string()), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn insecure_configs_build() {
        insecure_configs().expect("builds");
    }
}
