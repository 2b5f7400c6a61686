//! Credentials, read and checked once at start-up and held where nothing prints them: a
//! [`Secret`] (an S3 key, a private key), and the PEM files mTLS to etcd needs. A leaf module:
//! both [`crate::config`], which reads them, and [`crate::etcd`], which uses them, import it.

use std::fmt;
use std::path::PathBuf;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// A value whose `Debug` never shows it (and which has no `Display`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**redacted**")
    }
}

/// A PEM file's path and contents.
#[derive(Debug, Clone)]
pub struct Pem {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

/// The client certificate and key for mTLS.
#[derive(Clone)]
pub struct ClientCert {
    pub cert: Pem,
    /// The certificate's notAfter: kubeadm's last a year, and an expired one ends every
    /// backup, so we warn ahead and export it.
    pub not_after: chrono::DateTime<chrono::Utc>,
    pub key_path: PathBuf,
    pub key: Secret,
}

impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCert")
            .field("cert", &self.cert.path)
            .field("not_after", &self.not_after)
            .field("key", &self.key_path)
            .finish()
    }
}

/// The notAfter of the first certificate of a PEM file; `None` when it holds none that parses.
pub fn not_after(pem: &[u8]) -> Option<chrono::DateTime<chrono::Utc>> {
    let der = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    chrono::DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
}
