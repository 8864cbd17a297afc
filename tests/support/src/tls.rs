//! A throwaway certificate authority and a loopback server certificate, as PEM files.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

/// A CA and a server certificate it signed, for `localhost` and `127.0.0.1`,
/// written to a private temporary directory (removed on drop).
///
/// Clients trust [`ca_cert`](Self::ca_cert); servers (`redis-server --tls-port`)
/// present [`server_cert`](Self::server_cert) with [`server_key`](Self::server_key).
/// Nothing here is trusted by the system: a client that uses its default roots
/// refuses the server, which is what a test of the trust setting needs.
#[derive(Debug)]
pub struct TestPki {
    dir: TempDir,
    ca_cert: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl TestPki {
    /// Generates the CA and the server certificate (ECDSA P-256) and writes
    /// `ca.pem`, `server.pem` and `server.key`.
    ///
    /// # Errors
    ///
    /// Fails when a key cannot be generated or a file cannot be written.
    pub fn generate() -> anyhow::Result<Self> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "enrichment-fleet test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let ca_key = KeyPair::generate()?;
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut server_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server_params.use_authority_key_identifier_extension = true;
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate()?;
        let server = server_params.signed_by(&server_key, &issuer)?;

        let dir = tempfile::Builder::new()
            .prefix("test-pki-")
            .tempdir()
            .context("creating a temporary dir for the test PKI")?;
        let write = |name: &str, pem: &str| -> anyhow::Result<PathBuf> {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
            Ok(path)
        };
        let ca_cert = write("ca.pem", &ca.pem())?;
        let server_cert = write("server.pem", &server.pem())?;
        let server_key = write("server.key", &server_key.serialize_pem())?;
        Ok(Self {
            dir,
            ca_cert,
            server_cert,
            server_key,
        })
    }

    /// The CA certificate (PEM) a client must trust.
    pub fn ca_cert(&self) -> &Path {
        &self.ca_cert
    }

    /// The server certificate (PEM), for `localhost` and `127.0.0.1`.
    pub fn server_cert(&self) -> &Path {
        &self.server_cert
    }

    /// The server's private key (PEM, PKCS#8).
    pub fn server_key(&self) -> &Path {
        &self.server_key
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_three_pem_files() {
        let pki = TestPki::generate().expect("generate");
        let read = |p: &Path| std::fs::read_to_string(p).expect("read");
        assert!(read(pki.ca_cert()).starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(read(pki.server_cert()).starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(read(pki.server_key()).starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(read(pki.ca_cert()), read(pki.server_cert()));
        assert!(pki.ca_cert().starts_with(pki.dir()));
    }
}
