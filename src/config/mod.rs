//! Settings come from the environment, in two phases: [`Env`] holds the raw `(name, value)`
//! pairs (from any iterator, so tests never touch the process environment), and the `parse_*`
//! functions turn them into validated, typed sections. Each command asks only for the sections
//! it uses (`prune` needs no etcd settings), and every problem is reported at once.
//!
//! [`VARS`] is the one table of variables: the parser, `--help` and the README's table all come
//! from it. The names the seed's script and etcdctl use are aliases of ours.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use url::Url;

use crate::compress::Codec;
use crate::retention::Policy;

/// One environment variable we read.
pub struct Var {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub default: Option<&'static str>,
    pub doc: &'static str,
    /// Its value is never printed.
    pub secret: bool,
}

const fn var(
    name: &'static str,
    aliases: &'static [&'static str],
    default: Option<&'static str>,
    doc: &'static str,
) -> Var {
    Var {
        name,
        aliases,
        default,
        doc,
        secret: false,
    }
}

pub const VARS: &[Var] = &[
    var(
        "ETCD_ENDPOINTS",
        &["ETCD_ENDPOINT", "ETCDCTL_ENDPOINTS"],
        Some("https://127.0.0.1:2379"),
        "Comma-separated etcd client URLs, tried in order.",
    ),
    var(
        "ETCD_CACERT",
        &["ETCDCTL_CACERT"],
        None,
        "CA certificate (PEM) that signed etcd's server certificate; required for https.",
    ),
    var(
        "ETCD_CERT",
        &["ETCDCTL_CERT"],
        None,
        "Client certificate (PEM) for mTLS; needs ETCD_KEY.",
    ),
    var(
        "ETCD_KEY",
        &["ETCDCTL_KEY"],
        None,
        "Client private key (PEM) for mTLS; needs ETCD_CERT.",
    ),
    var(
        "ETCD_DIAL_TIMEOUT",
        &["ETCDCTL_DIAL_TIMEOUT"],
        Some("5s"),
        "Time to connect to one endpoint and read its status.",
    ),
    var(
        "ETCD_SNAPSHOT_TIMEOUT",
        &[],
        Some("30m"),
        "Time allowed for the whole snapshot stream.",
    ),
    var(
        "ETCD_SNAPSHOT_STALL_TIMEOUT",
        &[],
        Some("2m"),
        "Give up when the snapshot stream sends nothing for this long.",
    ),
    var(
        "ETCD_SNAPSHOT_RATE",
        &[],
        Some("0"),
        "Read the snapshot at most this fast, per second, e.g. 30MiB; 0 for no limit. A slower read leaves etcd more room (bench/RESULTS.md).",
    ),
    var(
        "BACKUP_RETRIES",
        &[],
        Some("5"),
        "Retries of a failed S3 request (5xx, throttling, timeouts, resets), with backoff; 0-20.",
    ),
    var(
        "BACKUP_S3_TIMEOUT",
        &[],
        Some("5m"),
        "Time allowed for one S3 request (a part upload, a listing).",
    ),
    var(
        "ETCD_QUOTA_BACKEND_BYTES",
        &[],
        Some("2GiB"),
        "etcd's --quota-backend-bytes; status and backup warn when the DB passes 80% of it.",
    ),
    var(
        "ETCD_DEFRAG_MIN_FREE",
        &[],
        Some("256MiB"),
        "defrag: defragment a member only when this much of its database is free (or it is past 80% of the quota).",
    ),
    var(
        "ETCD_DEFRAG_COMPACT",
        &[],
        Some("false"),
        "defrag: compact to the current revision first (true only for etcd without a Kubernetes API server, which compacts itself).",
    ),
    var(
        "BACKUP_BUCKET",
        &[],
        None,
        "Bucket to store backups in (required by backup, prune, list, restore).",
    ),
    var(
        "BACKUP_PREFIX",
        &[],
        Some("etcd/"),
        "Key prefix of our objects: empty, or ending with '/'.",
    ),
    var(
        "BACKUP_STORAGE_CLASS",
        &[],
        None,
        "Storage class of uploaded objects, e.g. STANDARD_IA.",
    ),
    var(
        "BACKUP_COMPRESSION",
        &[],
        Some("gzip"),
        "gzip, zstd or none.",
    ),
    var(
        "BACKUP_COMPRESSION_LEVEL",
        &[],
        None,
        "gzip 1-9 (default 4), zstd 1-19 (default 3).",
    ),
    var(
        "BACKUP_AGE_RECIPIENTS",
        &[],
        None,
        "Encrypt backups with age to these public keys (age1..., separated by commas, spaces or newlines).",
    ),
    var(
        "BACKUP_AGE_RECIPIENTS_FILE",
        &[],
        None,
        "A recipients file as age -R reads it (one age1... key a line, # comments); joins BACKUP_AGE_RECIPIENTS.",
    ),
    var(
        "BACKUP_AGE_IDENTITY_FILE",
        &[],
        None,
        "An identity file as age -i reads it (AGE-SECRET-KEY-1...), for restore and verify of encrypted backups.",
    ),
    var(
        "BACKUP_INCLUDE_PATHS",
        &[],
        None,
        "Files or directories to archive beside each backup, encrypted (needs age recipients), e.g. /etc/kubernetes/pki.",
    ),
    var(
        "BACKUP_RETENTION",
        &[],
        Some("30d"),
        "Delete backups older than this (after keeping BACKUP_KEEP_LAST).",
    ),
    var(
        "BACKUP_KEEP_LAST",
        &[],
        Some("3"),
        "Always keep this many newest backups (at least 1).",
    ),
    var(
        "BACKUP_TMP_DIR",
        &[],
        None,
        "Scratch directory for the spooled snapshot (default: the system temp dir).",
    ),
    var(
        "BACKUP_UPLOAD_PART_SIZE",
        &[],
        Some("8MiB"),
        "Multipart part size, 5MiB-5GiB. Upload memory is about part size x (concurrency + 3).",
    ),
    var(
        "BACKUP_UPLOAD_CONCURRENCY",
        &[],
        Some("2"),
        "Parts uploaded at once, 1-64.",
    ),
    var(
        "BACKUP_COMPRESSION_THREADS",
        &[],
        None,
        "Compression threads, 1-64 (default: the CPUs available to the process, which counts the cgroup's CPU quota).",
    ),
    var(
        "BACKUP_LOG_FORMAT",
        &[],
        Some("text"),
        "text or json (one object a line, on stderr).",
    ),
    var(
        "BACKUP_PUSHGATEWAY_URL",
        &[],
        None,
        "Pushgateway to push run metrics to at the end of every backup, e.g. http://pushgateway.monitoring:9091.",
    ),
    var(
        "BACKUP_METRICS_LABELS",
        &[],
        None,
        "Grouping labels for the push, comma-separated NAME=VALUE, e.g. cluster=prod-eu (not job or instance).",
    ),
    var(
        "BACKUP_PUSHGATEWAY_TIMEOUT",
        &[],
        Some("5s"),
        "Time allowed for the push; a slow or absent Pushgateway only warns.",
    ),
    var(
        "BACKUP_MAX_AGE",
        &[],
        Some("13h"),
        "check: the newest verified backup must be younger than this (two 6-hour periods and an hour's slack).",
    ),
    var(
        "BACKUP_PROGRESS_INTERVAL",
        &[],
        Some("10s"),
        "At most one progress line this often during long transfers; 0s turns them off.",
    ),
    var(
        "BACKUP_NICE",
        &[],
        Some("10"),
        "CPU niceness, 0-19, set at start for every thread (and with it the I/O priority): etcd shares the node and stalls when starved.",
    ),
    var(
        "BACKUP_LOG",
        &[],
        Some("info"),
        "Log filter: error, warn, info, debug or trace, or per module, e.g. info,etcd_backup=debug.",
    ),
    var(
        "AWS_ENDPOINT_URL",
        &["AWS_ENDPOINT"],
        None,
        "S3-compatible endpoint (MinIO, Hetzner, GCS interop); path-style addressing.",
    ),
    var(
        "AWS_REGION",
        &["AWS_DEFAULT_REGION"],
        Some("us-east-1"),
        "Region of the bucket.",
    ),
    var(
        "AWS_ACCESS_KEY_ID",
        &[],
        None,
        "Static credentials; otherwise web identity, pod identity or instance profile.",
    ),
    Var {
        secret: true,
        ..var(
            "AWS_SECRET_ACCESS_KEY",
            &[],
            None,
            "Secret for AWS_ACCESS_KEY_ID.",
        )
    },
    Var {
        secret: true,
        ..var(
            "AWS_SESSION_TOKEN",
            &[],
            None,
            "Session token for temporary credentials.",
        )
    },
    var(
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        &[],
        None,
        "Web identity token (IRSA); with AWS_ROLE_ARN.",
    ),
    var(
        "AWS_ROLE_ARN",
        &[],
        None,
        "Role to assume with the web identity token.",
    ),
    var(
        "AWS_SERVER_SIDE_ENCRYPTION",
        &[],
        None,
        "AES256, aws:kms or aws:kms:dsse.",
    ),
    var(
        "AWS_SSE_KMS_KEY_ID",
        &[],
        None,
        "KMS key for aws:kms encryption.",
    ),
];

/// A value whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**redacted**")
    }
}

/// Phase one: the raw variables, as given.
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.vars.keys().map(|k| (k, "…")))
            .finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Env {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Env {
            vars: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

/// One configuration problem: which variable, what it was set to, what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub var: String,
    /// The value as given; `None` when unset, or when the variable is a secret.
    pub value: Option<String>,
    pub expected: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={:?}: {}", self.var, v, self.expected),
            None => write!(f, "{}: {}", self.var, self.expected),
        }
    }
}

/// Every problem found, one a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid configuration ({} problem{}):",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )?;
        for p in &self.0 {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

fn spec(name: &str) -> &'static Var {
    VARS.iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("{name} is not in VARS"))
}

/// Phase two's helper: reads variables, resolving aliases, and collects problems.
struct Reader<'e> {
    env: &'e Env,
    problems: Vec<Problem>,
}

impl<'e> Reader<'e> {
    /// The (name used, value) of `name` or its aliases; empty values count as unset, as in a
    /// shell. Two names with different values are a problem, since we cannot know which one
    /// the operator meant.
    fn raw(&mut self, name: &str) -> Option<(&'static str, &'e str)> {
        let var = spec(name);
        let mut set = std::iter::once(var.name)
            .chain(var.aliases.iter().copied())
            .filter_map(|n| {
                self.env
                    .vars
                    .get(n)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (n, v.as_str()))
            });
        let first = set.next()?;
        if let Some(other) = set.find(|(_, v)| v.trim() != first.1.trim()) {
            let shown = if var.secret {
                "**redacted**".to_string()
            } else {
                format!("{:?}", other.1)
            };
            self.push(Problem {
                var: first.0.into(),
                value: (!var.secret).then(|| first.1.to_string()),
                expected: format!("conflicts with {}={shown}: set one of them", other.0),
            });
        }
        Some((first.0, first.1.trim()))
    }

    /// The value, or the table's default.
    fn get(&mut self, name: &str) -> Option<(&'static str, &'e str)> {
        self.raw(name)
            .or_else(|| spec(name).default.map(|d| (spec(name).name, d)))
    }

    fn problem(&mut self, var: &str, value: Option<&str>, expected: impl Into<String>) {
        let value = if spec_of(var).is_some_and(|v| v.secret) {
            None
        } else {
            value.map(str::to_string)
        };
        self.push(Problem {
            var: var.into(),
            value,
            expected: expected.into(),
        });
    }

    /// Records a problem once: a variable read by two sections (an alias conflict of
    /// ETCD_CERT, say) is still one problem to fix.
    fn push(&mut self, p: Problem) {
        if !self.problems.contains(&p) {
            self.problems.push(p);
        }
    }

    /// Parses a variable with `parse`, recording `expected` when it fails.
    fn parse<T>(
        &mut self,
        name: &str,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Option<T> {
        let (used, value) = self.get(name)?;
        let parsed = parse(value);
        if parsed.is_none() {
            self.problem(used, Some(value), expected);
        }
        parsed
    }

    fn duration(&mut self, name: &str) -> Option<Duration> {
        self.parse(
            name,
            "expected a duration such as 90s, 30m, 30d or 720h, greater than zero",
            |v| humantime::parse_duration(v).ok().filter(|d| !d.is_zero()),
        )
    }

    fn finish<T>(self, value: T) -> Result<T, Problems> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(Problems(self.problems))
        }
    }
}

fn spec_of(name: &str) -> Option<&'static Var> {
    VARS.iter()
        .find(|v| v.name == name || v.aliases.contains(&name))
}

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    pub endpoints: Vec<Url>,
    pub ca: Option<Pem>,
    pub identity: Option<Identity>,
    pub dial_timeout: Duration,
    pub snapshot_timeout: Duration,
    pub stall_timeout: Duration,
    /// Bytes a second the snapshot is read at, at most; `None` for no limit.
    pub snapshot_rate: Option<u64>,
    /// etcd stops accepting writes when its database reaches this size.
    pub quota: u64,
}

/// A PEM file's path and contents, read and checked at start-up.
#[derive(Debug, Clone)]
pub struct Pem {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

/// The client certificate and key for mTLS.
#[derive(Clone)]
pub struct Identity {
    pub cert: Pem,
    /// The client certificate's notAfter: kubeadm's last a year, and an expired one ends every
    /// backup, so we warn ahead and export it.
    pub not_after: chrono::DateTime<chrono::Utc>,
    pub key_path: PathBuf,
    pub key: Secret,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("cert", &self.cert.path)
            .field("not_after", &self.not_after)
            .field("key", &self.key_path)
            .finish()
    }
}

/// Where backups are stored.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub bucket: String,
    pub prefix: String,
    pub storage_class: Option<String>,
    pub endpoint: Option<Url>,
    pub region: String,
    pub retries: usize,
    pub request_timeout: Duration,
    /// Every `AWS_*` variable given, passed to the S3 client (credentials chain, SSE, ...).
    pub aws: Vec<(String, Secret)>,
}

/// How a snapshot is processed.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub codec: Codec,
    pub level: u32,
    pub tmp_dir: PathBuf,
    pub part_size: usize,
    pub concurrency: usize,
    /// Compression threads.
    pub threads: usize,
    /// How often a long transfer logs its progress; `None` for never.
    pub progress: Option<Duration>,
    /// age X25519 public keys to encrypt to; empty for no encryption.
    pub recipients: Vec<String>,
}

/// age identities (private keys) read from BACKUP_AGE_IDENTITY_FILE. Never printed.
pub struct Identities {
    pub path: PathBuf,
    pub keys: Vec<Box<dyn age::Identity + Send + Sync>>,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("path", &self.path)
            .field("keys", &"**redacted**")
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// What the process needs before anything runs: how to log (the format and the filter,
/// `BACKUP_LOG`, checked) and its niceness (`BACKUP_NICE`), which threads inherit only if set
/// before they start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub format: LogFormat,
    pub filter: String,
    pub nice: i32,
}

/// What `backup` needs.
#[derive(Debug, Clone)]
pub struct BackupConfig {
    pub etcd: EtcdConfig,
    pub store: StoreConfig,
    pub pipeline: PipelineConfig,
    pub policy: Policy,
    pub metrics: MetricsConfig,
    /// Files and directories archived beside each backup (only with encryption).
    pub include: Vec<PathBuf>,
}

/// Where run metrics go: nowhere unless a Pushgateway is set.
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    pub pushgateway: Option<Url>,
    /// Grouping labels after `job`, in the order given.
    pub labels: Vec<(String, String)>,
    pub timeout: Duration,
}

/// What `defrag` needs.
#[derive(Debug, Clone)]
pub struct DefragConfig {
    pub etcd: EtcdConfig,
    /// Defragment a member only when at least this many bytes of its database are free.
    pub min_free: u64,
    pub compact: bool,
    pub metrics: MetricsConfig,
}

/// What `restore` needs.
#[derive(Debug)]
pub struct RestoreConfig {
    pub store: StoreConfig,
    pub progress: Option<Duration>,
    pub identities: Option<std::sync::Arc<Identities>>,
}

/// What `check` needs.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    pub store: StoreConfig,
    pub max_age: Duration,
}

/// What `prune` needs.
#[derive(Debug, Clone)]
pub struct PruneConfig {
    pub store: StoreConfig,
    pub policy: Policy,
}

impl Env {
    pub fn from_process() -> Env {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect()
    }

    /// Names in our own namespace that we do not know: most likely typos.
    fn unknown(&self, r: &mut Reader<'_>) {
        for name in self.vars.keys().filter(|k| k.starts_with("BACKUP_")) {
            if spec_of(name).is_none() {
                let near = VARS
                    .iter()
                    .map(|v| v.name)
                    .min_by_key(|v| distance(v, name))
                    .filter(|v| distance(v, name) <= 3);
                let expected = match near {
                    Some(n) => format!("unknown variable; did you mean {n}?"),
                    None => "unknown variable (see --help for the list)".to_string(),
                };
                r.problems.push(Problem {
                    var: name.clone(),
                    value: None,
                    expected,
                });
            }
        }
    }

    /// The process settings, read before anything else so that every later problem is logged
    /// as the operator asked and every thread runs at the niceness asked.
    pub fn process(&self) -> Result<Process, Problems> {
        let mut r = Reader {
            env: self,
            problems: vec![],
        };
        let format = r.parse("BACKUP_LOG_FORMAT", "expected text or json", |v| match v {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        });
        let filter = r.parse(
            "BACKUP_LOG",
            "expected a level (error, warn, info, debug, trace) or a filter such as info,etcd_backup=debug",
            |v| {
                tracing_subscriber::EnvFilter::builder()
                    .parse(v)
                    .ok()
                    .map(|_| v.to_string())
            },
        );
        let nice = r.parse("BACKUP_NICE", "expected a whole number from 0 to 19", |v| {
            v.parse::<i32>().ok().filter(|n| (0..=19).contains(n))
        });
        r.finish(Process {
            format: format.unwrap_or(LogFormat::Text),
            filter: filter.unwrap_or_else(|| "info".into()),
            nice: nice.unwrap_or(10),
        })
    }

    /// Reads what `read` asks for, collecting every problem (unknown `BACKUP_*` names
    /// included); each command names the sections it needs.
    fn section<T>(&self, read: impl FnOnce(&mut Reader<'_>) -> Option<T>) -> Result<T, Problems> {
        let mut r = Reader {
            env: self,
            problems: vec![],
        };
        self.unknown(&mut r);
        match read(&mut r) {
            Some(value) if r.problems.is_empty() => Ok(value),
            _ => Err(Problems(r.problems)),
        }
    }

    /// What `backup` needs. Every section is read before any is checked, so that all
    /// problems are reported at once.
    pub fn backup(&self) -> Result<BackupConfig, Problems> {
        self.section(|r| {
            let (etcd, store, pipeline, policy) = (etcd(r), store(r), pipeline(r), policy(r));
            let metrics = metrics(r);
            let include = include(r, pipeline.as_ref());
            Some(BackupConfig {
                include,
                etcd: etcd?,
                store: store?,
                pipeline: pipeline?,
                policy: policy?,
                metrics: metrics?,
            })
        })
    }

    /// What `defrag` needs: etcd, the rule's threshold, and where to push metrics.
    pub fn defrag(&self) -> Result<DefragConfig, Problems> {
        self.section(|r| {
            let (etcd, metrics) = (etcd(r), metrics(r));
            let min_free = r.parse(
                "ETCD_DEFRAG_MIN_FREE",
                "expected a size such as 256MiB or 1GiB",
                parse_size,
            );
            let compact = r.parse(
                "ETCD_DEFRAG_COMPACT",
                "expected true or false",
                |v| match v {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => None,
                },
            );
            Some(DefragConfig {
                etcd: etcd?,
                min_free: min_free?,
                compact: compact?,
                metrics: metrics?,
            })
        })
    }

    /// What `check` needs: the store and the age limit (`--max-age` overrides the variable).
    pub fn check(&self, max_age: Option<Duration>) -> Result<CheckConfig, Problems> {
        self.section(|r| {
            let store = store(r);
            let max_age = match max_age {
                Some(d) => Some(d),
                None => r.duration("BACKUP_MAX_AGE"),
            };
            Some(CheckConfig {
                store: store?,
                max_age: max_age?,
            })
        })
    }

    /// What `restore` needs: the store, how often to log progress, and the identities for
    /// encrypted backups.
    pub fn restore(&self) -> Result<RestoreConfig, Problems> {
        self.section(|r| {
            let (store, progress, identities) = (store(r), progress(r), identities(r));
            Some(RestoreConfig {
                store: store?,
                progress: progress?,
                identities: identities?,
            })
        })
    }

    /// What `verify` needs: the identities for encrypted files (the scratch directory is read
    /// apart, see [`Env::tmp_dir`]).
    pub fn verify(&self) -> Result<Option<std::sync::Arc<Identities>>, Problems> {
        self.section(identities)
    }

    /// What `prune` and `list` need.
    pub fn prune(&self) -> Result<PruneConfig, Problems> {
        self.section(|r| {
            let (store, policy) = (store(r), policy(r));
            Some(PruneConfig {
                store: store?,
                policy: policy?,
            })
        })
    }

    /// What `status` needs: etcd alone.
    pub fn etcd(&self) -> Result<EtcdConfig, Problems> {
        self.section(etcd)
    }

    /// The scratch directory alone (for `verify` of compressed files).
    pub fn tmp_dir(&self) -> PathBuf {
        let mut r = Reader {
            env: self,
            problems: vec![],
        };
        r.get("BACKUP_TMP_DIR")
            .map(|(_, v)| PathBuf::from(v))
            .unwrap_or_else(std::env::temp_dir)
    }
}

fn etcd(r: &mut Reader<'_>) -> Option<EtcdConfig> {
    let before = r.problems.len();
    let ca = read_pem(r, "ETCD_CACERT", PemKind::Cert);
    let cert = read_pem(r, "ETCD_CERT", PemKind::Cert);
    let key = read_pem(r, "ETCD_KEY", PemKind::Key);
    // etcdctl reads an endpoint without a scheme as host:port over TLS when any TLS file is
    // given, and plain otherwise; operators write ETCDCTL_ENDPOINTS=10.0.1.10:2379 that way.
    let any_tls = ["ETCD_CACERT", "ETCD_CERT", "ETCD_KEY"]
        .iter()
        .any(|n| r.raw(n).is_some());
    let (used, list) = r.get("ETCD_ENDPOINTS").expect("has a default");
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
    if endpoints.is_empty() && r.problems.len() == before {
        r.problem(
            used,
            Some(list),
            "expected at least one URL such as https://127.0.0.1:2379",
        );
    }
    let tls = endpoints.iter().any(|u| u.scheme() == "https");
    if tls && ca.is_none() && r.raw("ETCD_CACERT").is_none() {
        r.problem("ETCD_CACERT", None, "is not set: expected the path of the CA certificate (PEM) that signed etcd's server certificate, required for https endpoints (kubeadm: /etc/kubernetes/pki/etcd/ca.crt)");
    }
    let identity = match (
        cert,
        key,
        r.raw("ETCD_CERT").is_some(),
        r.raw("ETCD_KEY").is_some(),
    ) {
        (Some((cert_path, cert)), Some((key_path, key)), _, _) => match not_after(&cert) {
            Some(not_after) => Some(Identity {
                cert: Pem {
                    path: cert_path,
                    pem: cert,
                },
                not_after,
                key_path,
                key: Secret(String::from_utf8_lossy(&key).into_owned()),
            }),
            None => {
                let (used, path) = r.raw("ETCD_CERT").expect("read above");
                r.problem(
                    used,
                    Some(path),
                    "the first certificate in the file is not a valid X.509 certificate",
                );
                None
            }
        },
        (_, _, true, false) => {
            r.problem("ETCD_KEY", None, "is not set but ETCD_CERT is: expected the path of the client key (PEM) that goes with the certificate");
            None
        }
        (_, _, false, true) => {
            r.problem("ETCD_CERT", None, "is not set but ETCD_KEY is: expected the path of the client certificate (PEM) that goes with the key");
            None
        }
        _ => None,
    };
    let dial_timeout = r.duration("ETCD_DIAL_TIMEOUT");
    let snapshot_timeout = r.duration("ETCD_SNAPSHOT_TIMEOUT");
    let stall_timeout = r.duration("ETCD_SNAPSHOT_STALL_TIMEOUT");
    // Below 1 MiB/s a 1 GiB database would take over 17 minutes: a unit left off, most likely.
    let snapshot_rate = r.parse(
        "ETCD_SNAPSHOT_RATE",
        "expected 0 (no limit) or a size per second of at least 1MiB, such as 30MiB",
        |v| parse_size(v).filter(|&b| b == 0 || b >= 1 << 20),
    );
    let quota = r.parse(
        "ETCD_QUOTA_BACKEND_BYTES",
        "expected a size such as 2GiB, 8GiB or 8589934592",
        |v| parse_size(v).filter(|q| *q > 0),
    );
    (r.problems.len() == before).then(|| EtcdConfig {
        quota: quota.expect("no problems"),
        stall_timeout: stall_timeout.expect("no problems"),
        snapshot_rate: Some(snapshot_rate.expect("no problems")).filter(|&b| b > 0),
        endpoints,
        ca: ca.map(|(path, pem)| Pem { path, pem }),
        identity,
        dial_timeout: dial_timeout.expect("no problems"),
        snapshot_timeout: snapshot_timeout.expect("no problems"),
    })
}

/// The notAfter of the first certificate of a PEM file.
fn not_after(pem: &[u8]) -> Option<chrono::DateTime<chrono::Utc>> {
    let der = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    chrono::DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
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
fn read_pem(r: &mut Reader<'_>, name: &str, kind: PemKind) -> Option<(PathBuf, Vec<u8>)> {
    let (used, path) = r.raw(name)?;
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

fn store(r: &mut Reader<'_>) -> Option<StoreConfig> {
    let before = r.problems.len();
    let bucket = r.get("BACKUP_BUCKET").map(|(_, v)| v.to_string());
    match &bucket {
        None => r.problem(
            "BACKUP_BUCKET",
            None,
            "is not set: expected the name of the bucket to store backups in",
        ),
        Some(b) if !valid_bucket(b) => r.problem(
            "BACKUP_BUCKET",
            Some(b),
            "expected a bucket name: 3-63 lowercase letters, digits, '.', '-' or '_'",
        ),
        _ => {}
    }
    let prefix = r
        .parse("BACKUP_PREFIX", "expected a key prefix that is empty or ends with '/', without a leading '/' or '//' (e.g. etcd/ or clusters/prod/)", |p| {
            (p.is_empty() || (p.ends_with('/') && !p.starts_with('/') && !p.contains("//"))).then(|| p.to_string())
        })
        .unwrap_or_default();
    let storage_class = r.parse(
        "BACKUP_STORAGE_CLASS",
        "expected a storage class name such as STANDARD or STANDARD_IA",
        |v| {
            v.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                .then(|| v.to_string())
        },
    );
    let endpoint = r.parse("AWS_ENDPOINT_URL", "expected an http(s) URL such as http://127.0.0.1:9000 or https://fsn1.your-objectstorage.com", |v| {
        Url::parse(v).ok().filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
    });
    let region = r
        .get("AWS_REGION")
        .map(|(_, v)| v.to_string())
        .expect("has a default");
    let aws = r
        .env
        .vars
        .iter()
        .filter(|(k, v)| k.starts_with("AWS_") && !v.is_empty())
        .map(|(k, v)| (k.clone(), Secret(v.clone())))
        .collect();
    let sse = r.parse(
        "AWS_SERVER_SIDE_ENCRYPTION",
        "expected AES256 (SSE-S3), aws:kms (SSE-KMS) or aws:kms:dsse (DSSE-KMS)",
        |v| {
            ["AES256", "aws:kms", "aws:kms:dsse"]
                .into_iter()
                .find(|t| *t == v)
        },
    );
    if let Some((used, _)) = r.raw("AWS_SSE_KMS_KEY_ID") {
        if !matches!(sse, Some("aws:kms" | "aws:kms:dsse")) {
            r.problem(
                used,
                None,
                "is set, but AWS_SERVER_SIDE_ENCRYPTION is not aws:kms or aws:kms:dsse: expected both, or neither",
            );
        }
    }
    let secret = r.raw("AWS_SECRET_ACCESS_KEY").map(|(_, v)| v);
    if secret.is_some() && r.raw("AWS_ACCESS_KEY_ID").is_none() {
        // The value goes in like any other; the table marks it secret and it never shows.
        r.problem(
            "AWS_SECRET_ACCESS_KEY",
            secret,
            "is set but AWS_ACCESS_KEY_ID is not: expected both, or neither (for a role)",
        );
    }
    if r.raw("AWS_ACCESS_KEY_ID").is_some() && r.raw("AWS_SECRET_ACCESS_KEY").is_none() {
        r.problem(
            "AWS_ACCESS_KEY_ID",
            None,
            "is set but AWS_SECRET_ACCESS_KEY is not: expected both, or neither (for a role)",
        );
    }
    let retries = r.parse(
        "BACKUP_RETRIES",
        "expected a whole number from 0 to 20",
        |v| v.parse::<usize>().ok().filter(|n| *n <= 20),
    );
    let request_timeout = r.duration("BACKUP_S3_TIMEOUT");
    (r.problems.len() == before).then(|| StoreConfig {
        retries: retries.expect("no problems"),
        request_timeout: request_timeout.expect("no problems"),
        bucket: bucket.expect("checked"),
        prefix,
        storage_class,
        endpoint,
        region,
        aws,
    })
}

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b".-_".contains(&c))
}

fn pipeline(r: &mut Reader<'_>) -> Option<PipelineConfig> {
    let before = r.problems.len();
    let codec = r.parse("BACKUP_COMPRESSION", "expected gzip, zstd or none", |v| {
        v.parse::<Codec>().ok()
    });
    let level = codec.and_then(|c| {
        let range = c.levels();
        let expected = match c {
            Codec::None => "expected no level with BACKUP_COMPRESSION=none".to_string(),
            _ => format!(
                "expected a {c} level from {} to {}",
                range.start(),
                range.end()
            ),
        };
        r.parse("BACKUP_COMPRESSION_LEVEL", &expected, |v| {
            v.parse::<u32>().ok().filter(|l| range.contains(l))
        })
        .or(Some(c.default_level()))
    });
    let tmp_dir = r
        .get("BACKUP_TMP_DIR")
        .map(|(_, v)| PathBuf::from(v))
        .unwrap_or_else(std::env::temp_dir);
    if !tmp_dir.is_dir() {
        r.problem(
            "BACKUP_TMP_DIR",
            tmp_dir.to_str(),
            "expected an existing directory for scratch files",
        );
    }
    let part_size = r.parse(
        "BACKUP_UPLOAD_PART_SIZE",
        "expected a size from 5MiB to 5GiB such as 8MiB or 64MiB",
        |v| {
            parse_size(v)
                .filter(|s| (5 << 20..=5 << 30).contains(s))
                .map(|s| s as usize)
        },
    );
    let concurrency = r.parse(
        "BACKUP_UPLOAD_CONCURRENCY",
        "expected a whole number from 1 to 64",
        |v| v.parse::<usize>().ok().filter(|n| (1..=64).contains(n)),
    );
    let threads = r
        .parse(
            "BACKUP_COMPRESSION_THREADS",
            "expected a whole number from 1 to 64",
            |v| v.parse::<usize>().ok().filter(|n| (1..=64).contains(n)),
        )
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(64)));
    let progress = progress(r);
    let recipients = recipients(r);
    (r.problems.len() == before).then(|| PipelineConfig {
        recipients,
        progress: progress.expect("no problems"),
        threads,
        codec: codec.expect("no problems"),
        level: level.expect("no problems"),
        tmp_dir,
        part_size: part_size.expect("no problems"),
        concurrency: concurrency.expect("no problems"),
    })
}

/// The union of BACKUP_AGE_RECIPIENTS and BACKUP_AGE_RECIPIENTS_FILE, each checked. A variable
/// that is set, even to nothing, must hold at least one recipient: a typo or an unset shell
/// variable must never turn into a plaintext upload.
fn recipients(r: &mut Reader<'_>) -> Vec<String> {
    const FORM: &str = "expected age X25519 public keys (age1..., as age-keygen -y prints them)";
    let mut keys: Vec<String> = Vec::new();
    let mut take = |r: &mut Reader<'_>, var: &str, shown: &str, items: Vec<&str>| {
        if items.is_empty() {
            r.problem(var, Some(shown), format!("is set but holds no recipient: {FORM}, or unset it to store backups unencrypted"));
        }
        for item in items {
            if item.parse::<age::x25519::Recipient>().is_err() {
                r.problem(
                    var,
                    Some(shown),
                    format!("{item:?} is not an age recipient: {FORM}"),
                );
            } else if !keys.iter().any(|k| k == item) {
                keys.push(item.to_string());
            }
        }
    };
    let env = r.env;
    if let Some(v) = env.vars.get("BACKUP_AGE_RECIPIENTS") {
        let items = v
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|i| !i.is_empty())
            .collect();
        take(r, "BACKUP_AGE_RECIPIENTS", v, items);
    }
    if let Some(path) = env.vars.get("BACKUP_AGE_RECIPIENTS_FILE") {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let items = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .collect();
                take(r, "BACKUP_AGE_RECIPIENTS_FILE", path, items);
            }
            Err(e) => r.problem(
                "BACKUP_AGE_RECIPIENTS_FILE",
                Some(path),
                format!("cannot read the file ({e}): expected a recipients file, one age1... key a line"),
            ),
        }
    }
    keys
}

/// BACKUP_INCLUDE_PATHS: existing paths, and only with encryption, so that private keys never
/// reach the bucket in plaintext.
fn include(r: &mut Reader<'_>, pipeline: Option<&PipelineConfig>) -> Vec<PathBuf> {
    let Some((used, list)) = r.raw("BACKUP_INCLUDE_PATHS") else {
        return Vec::new();
    };
    let paths: Vec<PathBuf> = list
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    if pipeline.is_some_and(|p| p.recipients.is_empty()) {
        r.problem(used, Some(list), "needs encryption: set BACKUP_AGE_RECIPIENTS or BACKUP_AGE_RECIPIENTS_FILE (these files hold private keys, which never go to the bucket in plaintext)");
    }
    for p in &paths {
        if !p.is_absolute() || !p.exists() {
            r.problem(used, Some(list), format!("{:?} is not an existing absolute path: expected files or directories, comma-separated, such as /etc/kubernetes/pki", p.display().to_string()));
        }
    }
    paths
}

/// Reads BACKUP_AGE_IDENTITY_FILE, if set. The file's contents never reach a message.
fn identities(r: &mut Reader<'_>) -> Option<Option<std::sync::Arc<Identities>>> {
    let Some((used, path)) = r.raw("BACKUP_AGE_IDENTITY_FILE") else {
        return Some(None);
    };
    let parsed = age::IdentityFile::from_file(path.to_string())
        .map_err(|e| e.to_string())
        .and_then(|f| f.into_identities().map_err(|e| e.to_string()));
    match parsed {
        Ok(keys) if !keys.is_empty() => Some(Some(std::sync::Arc::new(Identities {
            path: PathBuf::from(path),
            keys,
        }))),
        Ok(_) => {
            r.problem(used, Some(path), "the file holds no identity: expected AGE-SECRET-KEY-1... lines, as age-keygen writes them");
            None
        }
        Err(e) => {
            // age's parse errors do not quote the key; an I/O error names the file only.
            r.problem(used, Some(path), format!("cannot read identities ({e}): expected an unencrypted identity file, as age-keygen writes it"));
            None
        }
    }
}

/// `BACKUP_PROGRESS_INTERVAL`: `Some(None)` when turned off with 0s.
fn progress(r: &mut Reader<'_>) -> Option<Option<Duration>> {
    r.parse(
        "BACKUP_PROGRESS_INTERVAL",
        "expected a duration such as 10s or 1m, or 0s to turn progress lines off",
        |v| humantime::parse_duration(v).ok(),
    )
    .map(|d| (!d.is_zero()).then_some(d))
}

/// A label name as Prometheus accepts it.
fn label_name(n: &str) -> bool {
    let mut bytes = n.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !n.starts_with("__")
}

fn metrics(r: &mut Reader<'_>) -> Option<MetricsConfig> {
    let before = r.problems.len();
    let pushgateway = r.parse(
        "BACKUP_PUSHGATEWAY_URL",
        "expected an http(s) URL such as http://pushgateway.monitoring:9091",
        |v| {
            Url::parse(v)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        },
    );
    let mut labels = Vec::new();
    if let Some((used, list)) = r.raw("BACKUP_METRICS_LABELS") {
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item.split_once('=') {
                Some((n, v)) if label_name(n.trim()) && !matches!(n.trim(), "job" | "instance") => {
                    labels.push((n.trim().to_string(), v.trim().to_string()))
                }
                _ => r.problem(
                    used,
                    Some(list),
                    format!("{item:?}: expected NAME=VALUE pairs, comma-separated, with NAME a Prometheus label name other than job and instance (e.g. cluster=prod-eu)"),
                ),
            }
        }
    }
    let timeout = r.duration("BACKUP_PUSHGATEWAY_TIMEOUT");
    (r.problems.len() == before).then(|| MetricsConfig {
        pushgateway,
        labels,
        timeout: timeout.expect("no problems"),
    })
}

fn policy(r: &mut Reader<'_>) -> Option<Policy> {
    let max_age = r.duration("BACKUP_RETENTION");
    let keep_last = r.parse(
        "BACKUP_KEEP_LAST",
        "expected a whole number of at least 1 (the newest backups are never pruned)",
        |v| v.parse::<usize>().ok().filter(|n| *n >= 1),
    );
    Some(Policy {
        max_age: max_age?,
        keep_last: keep_last?,
    })
}

/// `8MiB`, `64M`, `1GiB`, `5242880`: binary units, as part sizes are counted.
pub fn parse_size(v: &str) -> Option<u64> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    n.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + (ca != *cb) as usize).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The variable table as text, for `--help` and the README.
pub fn help_table() -> String {
    let mut out = String::from("Environment variables (aliases in brackets):\n");
    for v in VARS {
        let aliases = if v.aliases.is_empty() {
            String::new()
        } else {
            format!(" [{}]", v.aliases.join(", "))
        };
        let default = v
            .default
            .map(|d| format!(" (default: {d})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {}{}\n      {}{}\n",
            v.name, aliases, v.doc, default
        ));
    }
    out
}

#[cfg(test)]
mod tests;
