//! The files mTLS to etcd needs, read and checked once at start-up: the CA certificate and the
//! client certificate with its key. The key is a [`Secret`] and never printed.

use std::fmt;
use std::path::PathBuf;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::config::Secret;

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
