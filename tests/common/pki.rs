//! Certificates for TLS tests, made fresh by rcgen for each test.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A CA, a server certificate for localhost and 127.0.0.1 signed by it, a client
/// certificate signed by it, and a client certificate signed by nobody.
pub struct Pki {
    /// Holds `ca.pem`, `server.pem` and `server.key`.
    pub dir: PathBuf,
    pub ca_pem: String,
    pub client: (String, String),
    pub stranger: (String, String),
}

pub fn pki() -> Pki {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("pushgate-tls-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let leaf = |names: Vec<String>, issuer: Option<&Issuer<'_, &KeyPair>>| {
        let key = KeyPair::generate().expect("key");
        let params = CertificateParams::new(names).expect("params");
        let cert = match issuer {
            Some(issuer) => params.signed_by(&key, issuer).expect("signed"),
            None => params.self_signed(&key).expect("self-signed"),
        };
        (cert.pem(), key.serialize_pem())
    };
    let server = leaf(vec!["localhost".into(), "127.0.0.1".into()], Some(&issuer));
    let client = leaf(vec!["producer".into()], Some(&issuer));
    let stranger = leaf(vec!["stranger".into()], None);
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write");
    std::fs::write(dir.join("server.pem"), &server.0).expect("write");
    std::fs::write(dir.join("server.key"), &server.1).expect("write");
    Pki { dir, ca_pem: ca_cert.pem(), client, stranger }
}
