//! The etcd section: endpoints as etcdctl reads them, the mTLS files (read and checked here,
//! typed in [`crate::credentials`]), timeouts, the snapshot's rate cap and the quota; and the
//! defrag rule's settings, which need the same connection.

use std::path::PathBuf;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use url::Url;

use super::reader::{parse_size, Reader};
use super::vars::Key;
use super::Secret;
use crate::credentials::{not_after, ClientCert, Pem};

/// How the snapshot read is paced below `ETCD_SNAPSHOT_RATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// By [`crate::pacing::adaptive`]: slower while the member's probe is more than `target`
    /// above its idle baseline while the member is written to.
    Adaptive { target: Duration },
    /// As fast as the stages take it.
    Off,
}

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    pub endpoints: Vec<Url>,
    pub ca: Option<Pem>,
    pub identity: Option<ClientCert>,
    pub dial_timeout: Duration,
    pub snapshot_timeout: Duration,
    pub stall_timeout: Duration,
    /// Bytes a second the snapshot is read at, at most; `None` for no limit.
    pub snapshot_rate: Option<u64>,
    /// How the snapshot read is paced below that cap.
    pub pacing: Pacing,
    /// The HTTP/2 stream window of the connection that reads the snapshot.
    pub window: u32,
    /// etcd stops accepting writes when its database reaches this size.
    pub quota: u64,
    /// Which members the HashKV check asks.
    pub hashkv_members: Asked,
}

pub(super) fn etcd(r: &mut Reader<'_>) -> Option<EtcdConfig> {
    let before = r.count();
    let ca = read_pem(r, Key::EtcdCacert, PemKind::Cert);
    let cert = read_pem(r, Key::EtcdCert, PemKind::Cert);
    let key = read_pem(r, Key::EtcdKey, PemKind::Key);
    // etcdctl reads an endpoint without a scheme as host:port over TLS when any TLS file is
    // given, and plain otherwise; operators write ETCDCTL_ENDPOINTS=10.0.1.10:2379 that way.
    let any_tls = [Key::EtcdCacert, Key::EtcdCert, Key::EtcdKey]
        .into_iter()
        .any(|k| r.is_set(k));
    let endpoints = endpoints(r, any_tls);
    let tls = endpoints.iter().any(|u| u.scheme() == "https");
    if tls && ca.is_none() && !r.is_set(Key::EtcdCacert) {
        r.problem(Key::EtcdCacert.name(), None, "is not set: expected the path of the CA certificate (PEM) that signed etcd's server certificate, required for https endpoints (kubeadm: /etc/kubernetes/pki/etcd/ca.crt)");
    }
    let identity = client_cert(r, cert, key);
    let dial_timeout = r.duration(Key::EtcdDialTimeout);
    let snapshot_timeout = r.duration(Key::EtcdSnapshotTimeout);
    let stall_timeout = r.duration(Key::EtcdSnapshotStallTimeout);
    // Below 1 MiB/s a 1 GiB database would take over 17 minutes: a unit left off, most likely.
    let snapshot_rate = r.parse(
        Key::EtcdSnapshotRate,
        "expected 0 (no limit) or a size per second of at least 1MiB, such as 30MiB",
        |v| parse_size(v).filter(|&b| b == 0 || b >= 1 << 20),
    );
    let target = r.duration(Key::EtcdSnapshotPacingTarget);
    let adaptive = r.parse(
        Key::EtcdSnapshotPacing,
        "expected adaptive or off",
        |v| match v {
            "adaptive" => Some(true),
            "off" => Some(false),
            _ => None,
        },
    );
    // Below 64 KiB (HTTP/2's initial window) every frame waits for a window update; above
    // 16 MiB a window no longer paces anything a cap could not.
    let window = r.parse(
        Key::EtcdSnapshotWindow,
        "expected a size from 64KiB to 16MiB, such as 256KiB",
        |v| {
            parse_size(v)
                .filter(|b| (64 << 10..=16 << 20).contains(b))
                .map(|b| b as u32)
        },
    );
    let hashkv_members = r.parse(
        Key::EtcdHashkvMembers,
        "expected all, followers or none",
        |v| v.parse::<Asked>().ok(),
    );
    let quota = r.parse(
        Key::EtcdQuotaBackendBytes,
        "expected a size such as 2GiB, 8GiB or 8589934592",
        |v| parse_size(v).filter(|q| *q > 0),
    );
    let (
        Some(dial_timeout),
        Some(snapshot_timeout),
        Some(stall_timeout),
        Some(rate),
        Some(quota),
        Some(hashkv_members),
        Some(target),
        Some(adaptive),
        Some(window),
    ) = (
        dial_timeout,
        snapshot_timeout,
        stall_timeout,
        snapshot_rate,
        quota,
        hashkv_members,
        target,
        adaptive,
        window,
    )
    else {
        return None;
    };
    let pacing = if adaptive {
        Pacing::Adaptive { target }
    } else {
        Pacing::Off
    };
    (r.count() == before).then_some(EtcdConfig {
        endpoints,
        ca: ca.map(|(path, pem)| Pem { path, pem }),
        identity,
        dial_timeout,
        snapshot_timeout,
        stall_timeout,
        snapshot_rate: Some(rate).filter(|&b| b > 0),
        pacing,
        window,
        quota,
        hashkv_members,
    })
}

/// ETCD_ENDPOINTS, every item checked; a problem when none is left.
fn endpoints(r: &mut Reader<'_>, any_tls: bool) -> Vec<Url> {
    let before = r.count();
    let Some((used, list)) = r.get(Key::EtcdEndpoints) else {
        return Vec::new();
    };
    let mut endpoints = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match endpoint_url(item, any_tls) {
            Some(u) => endpoints.push(u),
            None => r.problem(
                used,
                Some(list),
                format!("{item:?} is not an etcd endpoint: expected https://HOST:PORT or HOST:PORT, comma-separated"),
            ),
        }
    }
    if endpoints.is_empty() && r.count() == before {
        r.problem(
            used,
            Some(list),
            "expected at least one URL such as https://127.0.0.1:2379",
        );
    }
    endpoints
}

/// The client certificate and key, which come as a pair.
fn client_cert(
    r: &mut Reader<'_>,
    cert: Option<(PathBuf, Vec<u8>)>,
    key: Option<(PathBuf, Vec<u8>)>,
) -> Option<ClientCert> {
    match (cert, key, r.raw(Key::EtcdCert), r.is_set(Key::EtcdKey)) {
        (Some((cert_path, cert)), Some((key_path, key)), Some((used, path)), _) => {
            match not_after(&cert) {
                Some(not_after) => Some(ClientCert {
                    cert: Pem {
                        path: cert_path,
                        pem: cert,
                    },
                    not_after,
                    key_path,
                    key: Secret::new(String::from_utf8_lossy(&key).into_owned()),
                }),
                None => {
                    r.problem(
                        used,
                        Some(path),
                        "the first certificate in the file is not a valid X.509 certificate",
                    );
                    None
                }
            }
        }
        (_, _, Some(_), false) => {
            r.problem(Key::EtcdKey.name(), None, "is not set but ETCD_CERT is: expected the path of the client key (PEM) that goes with the certificate");
            None
        }
        (_, _, None, true) => {
            r.problem(Key::EtcdCert.name(), None, "is not set but ETCD_KEY is: expected the path of the client certificate (PEM) that goes with the key");
            None
        }
        _ => None,
    }
}

/// An endpoint as etcdctl reads it: a URL with http or https, or `HOST:PORT` whose scheme
/// follows from whether TLS files are given.
fn endpoint_url(item: &str, tls: bool) -> Option<Url> {
    let full = if item.contains("://") {
        item.to_string()
    } else if !item
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
    {
        // Without a scheme there is no default port to fall back on: HOST:PORT, as etcdctl.
        return None;
    } else {
        format!("{}://{item}", if tls { "https" } else { "http" })
    };
    Url::parse(&full).ok().filter(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host().is_some()
            && u.path() == "/"
            && u.query().is_none()
            && u.username().is_empty()
    })
}

#[derive(Clone, Copy)]
enum PemKind {
    Cert,
    Key,
}

/// Reads a PEM file named by a variable; missing, unreadable and non-PEM files are problems.
/// A key file's contents never reach a message.
fn read_pem(r: &mut Reader<'_>, key: Key, kind: PemKind) -> Option<(PathBuf, Vec<u8>)> {
    let (used, path) = r.raw(key)?;
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            r.problem(
                used,
                Some(path),
                format!("cannot read the file ({e}): expected a readable PEM file"),
            );
            return None;
        }
    };
    let ok = match kind {
        PemKind::Cert => {
            let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes).collect();
            !certs.is_empty() && certs.iter().all(Result::is_ok)
        }
        PemKind::Key => PrivateKeyDer::from_pem_slice(&bytes).is_ok(),
    };
    if !ok {
        let what = match kind {
            PemKind::Cert => "a PEM certificate (-----BEGIN CERTIFICATE-----)",
            PemKind::Key => "a PEM private key (-----BEGIN PRIVATE KEY----- or RSA/EC PRIVATE KEY)",
        };
        r.problem(used, Some(path), format!("the file is not {what}"));
        return None;
    }
    Some((PathBuf::from(path), bytes))
}

/// What `defrag` needs beyond etcd: the rule's threshold and whether to compact first.
pub(super) fn defrag_rule(r: &mut Reader<'_>) -> Option<(u64, bool)> {
    let min_free = r.parse(
        Key::EtcdDefragMinFree,
        "expected a size such as 256MiB or 1GiB",
        parse_size,
    );
    let compact = r.flag(Key::EtcdDefragCompact);
    Some((min_free?, compact?))
}

/// Which members the check asks (`ETCD_HASHKV_MEMBERS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Asked {
    #[default]
    All,
    /// Every voter but the leader.
    Followers,
    /// None: the snapshot is not compared with the cluster.
    None,
}

impl std::str::FromStr for Asked {
    type Err = ();
    fn from_str(s: &str) -> Result<Asked, ()> {
        match s {
            "all" => Ok(Asked::All),
            "followers" => Ok(Asked::Followers),
            "none" => Ok(Asked::None),
            _ => Err(()),
        }
    }
}

impl std::fmt::Display for Asked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Asked::All => "all",
            Asked::Followers => "followers",
            Asked::None => "none",
        })
    }
}
