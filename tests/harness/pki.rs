//! Certificates for TLS tests, generated fresh by each test (rcgen): a CA, a
//! server certificate for 127.0.0.1 and a client certificate signed by it, an
//! expired server certificate, and an unrelated CA. Written as PEM files to a
//! temporary directory.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, date_time_ymd};
use std::path::PathBuf;
use tempfile::TempDir;

pub struct Pki {
    dir: TempDir,
}

impl Pki {
    pub fn generate() -> Pki {
        let dir = tempfile::tempdir().expect("a directory for certificates");
        let pki = Pki { dir };
        let ca = pki.authority("ca", "rulegate test CA");
        // An authority the gateway does not know signs nothing here: trusting
        // it instead of `ca` is the "wrong CA" case.
        pki.authority("other-ca", "some other CA");
        let server_key = KeyPair::generate().expect("a server key");
        pki.write("server.key", &server_key.serialize_pem());
        let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("server certificate parameters");
        pki.write("server.pem", &signed(&server, &server_key, &ca));
        let mut expired = server;
        expired.not_before = date_time_ymd(2020, 1, 1);
        expired.not_after = date_time_ymd(2021, 1, 1);
        pki.write("expired-server.pem", &signed(&expired, &server_key, &ca));

        let client_key = KeyPair::generate().expect("a client key");
        pki.write("client.key", &client_key.serialize_pem());
        let mut client = CertificateParams::new(Vec::<String>::new()).expect("client parameters");
        client
            .distinguished_name
            .push(DnType::CommonName, "rulegate-gateway");
        pki.write("client.pem", &signed(&client, &client_key, &ca));
        pki
    }

    /// The PEM file `name` (`ca.pem`, `server.pem`, `client.key`, ...).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A self-signed CA written as `<name>.pem`; its issuer for signing.
    fn authority(&self, name: &str, common_name: &str) -> Issuer<'static, KeyPair> {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let certificate = params.self_signed(&key).expect("self-signing the CA");
        self.write(&format!("{name}.pem"), &certificate.pem());
        Issuer::new(params, key)
    }

    fn write(&self, name: &str, pem: &str) {
        std::fs::write(self.path(name), pem).expect("writing a PEM file");
    }
}

fn signed(params: &CertificateParams, key: &KeyPair, issuer: &Issuer<'_, KeyPair>) -> String {
    params
        .signed_by(key, issuer)
        .expect("signing a certificate")
        .pem()
}
