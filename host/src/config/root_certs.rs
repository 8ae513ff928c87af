//! Certificate authorities read from a PEM file the operator names: PostgreSQL's
//! `sslrootcert` (`store_url`) and `[http] ca_file`, the authorities plugins' `https` APIs
//! may be signed by besides the public web's. Read and checked when the config is, so a file
//! that is missing, too large or holds no usable certificate is a config error, not a
//! failure at the first connection.

use std::fmt;
use std::path::PathBuf;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The most a CA file may hold (a CA bundle; a cloud provider's is ~200 KiB).
const MAX_ROOT_CERT_BYTES: u64 = 4 << 20;

/// The CA certificates of a PEM file.
#[derive(Clone, PartialEq, Eq)]
pub struct RootCerts {
    pub path: PathBuf,
    pub certs: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for RootCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RootCerts({}, {} certificate(s))",
            self.path.display(),
            self.certs.len()
        )
    }
}

impl RootCerts {
    /// Reads `path`; errors begin with `key`, the setting that named it.
    pub(crate) fn read(path: PathBuf, key: &str) -> Result<Self, String> {
        use std::io::Read;
        let shown = path.display();
        let mut pem = Vec::new();
        super::open_regular(&path)
            .and_then(|f| f.take(MAX_ROOT_CERT_BYTES + 1).read_to_end(&mut pem))
            .map_err(|e| format!("{key} {shown}: cannot read it: {e}"))?;
        if pem.len() as u64 > MAX_ROOT_CERT_BYTES {
            return Err(format!(
                "{key} {shown}: holds more than {} MiB; it should hold CA certificates",
                MAX_ROOT_CERT_BYTES >> 20
            ));
        }
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{key} {shown}: not valid PEM: {e}"))?;
        if certs.is_empty() {
            return Err(format!(
                "{key} {shown}: holds no certificate (PEM, `-----BEGIN CERTIFICATE-----`)"
            ));
        }
        // What a connection will do with them.
        Self::store_of(&certs)
            .map_err(|(n, e)| format!("{key} {shown}: certificate {n} of the file: {e}"))?;
        Ok(Self { path, certs })
    }

    /// The certificates as rustls's trust anchors.
    pub(crate) fn root_store(&self) -> rustls::RootCertStore {
        Self::store_of(&self.certs).expect("checked when the file was read")
    }

    fn store_of(
        certs: &[CertificateDer<'static>],
    ) -> Result<rustls::RootCertStore, (usize, rustls::Error)> {
        let mut roots = rustls::RootCertStore::empty();
        for (n, cert) in certs.iter().enumerate() {
            roots.add(cert.clone()).map_err(|e| (n + 1, e))?;
        }
        Ok(roots)
    }
}
