//! Settings come from the environment, in two phases: [`Env`] holds the raw `(name, value)`
//! pairs (from any iterator, so tests never touch the process environment), and the methods
//! of `Env` turn them into validated, typed sections. Each command asks only for the sections
//! it uses (`prune` needs no etcd settings), and every problem is reported at once.
//!
//! [`Key`] names every variable; its table ([`vars`]) feeds the [`reader`], `--help` and the
//! README's table. The names the seed's script and etcdctl use are aliases of ours. One parser
//! module per feature reads its section: [`etcd`](self::etcd) (with defrag's rule),
//! [`store`](self::store), [`pipeline`](self::pipeline) (with encryption),
//! [`metrics`](self::metrics) and [`stream`](self::stream).

mod etcd;
mod metrics;
mod pipeline;
mod reader;
mod store;
mod stream;
mod vars;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use self::etcd::{Asked, EtcdConfig, Pacing};
pub use self::metrics::MetricsConfig;
pub use self::pipeline::PipelineConfig;
pub use self::reader::parse_size;
pub use self::store::StoreConfig;
pub use self::stream::StreamSettings;
pub use self::vars::{help_table, vars, Key, Var};

use self::reader::Reader;
pub use crate::credentials::Secret;
use crate::crypt::Identities;
use crate::retention::Policy;
use crate::sign::VerifyKeys;

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

/// What `backup` (and `doctor`, which checks the same install) needs.
#[derive(Debug, Clone)]
pub struct BackupConfig {
    pub etcd: EtcdConfig,
    pub store: StoreConfig,
    pub pipeline: PipelineConfig,
    pub policy: Policy,
    pub metrics: MetricsConfig,
    /// Files and directories archived beside each backup (only with encryption).
    pub include: Vec<PathBuf>,
    /// The keys restores accept: `doctor` checks that the signing key is one of them, and
    /// only backups they accept fill prune's BACKUP_KEEP_LAST places.
    pub verify_keys: Option<VerifyKeys>,
}

/// What `stream` needs: what `backup` needs (its bases are backups), and the stream's own.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub backup: BackupConfig,
    pub stream: StreamSettings,
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
    /// Where a point-in-time restore keeps its base and segments while it reads them.
    pub tmp_dir: PathBuf,
    pub progress: Option<Duration>,
    pub identities: Option<Arc<Identities>>,
    /// Accept only backups signed by one of these.
    pub verify_keys: Option<VerifyKeys>,
}

/// What `verify` of a local file needs.
#[derive(Debug)]
pub struct VerifyConfig {
    /// Where a compressed or encrypted file is decoded to for the walk.
    pub tmp_dir: PathBuf,
    pub identities: Option<Arc<Identities>>,
}

/// What `check` needs.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    pub store: StoreConfig,
    pub max_age: Duration,
    /// Count only backups signed by one of these.
    pub verify_keys: Option<VerifyKeys>,
}

/// What `prune` and `list` need.
#[derive(Debug, Clone)]
pub struct PruneConfig {
    pub store: StoreConfig,
    pub policy: Policy,
    /// For `list`'s SIGNED column; only backups they accept fill BACKUP_KEEP_LAST's places.
    pub verify_keys: Option<VerifyKeys>,
}

impl Env {
    pub fn from_process() -> Env {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect()
    }

    /// The value of exactly this name, as given.
    fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.keys().map(String::as_str)
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The process settings, read before anything else so that every later problem is logged
    /// as the operator asked and every thread runs at the niceness asked.
    pub fn process(&self) -> Result<Process, Problems> {
        let mut r = Reader::new(self);
        let format = r.parse(Key::BackupLogFormat, "expected text or json", |v| match v {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        });
        let filter = r.parse(
            Key::BackupLog,
            "expected a level (error, warn, info, debug, trace) or a filter such as info,etcd_backup=debug",
            |v| {
                tracing_subscriber::EnvFilter::builder()
                    .parse(v)
                    .ok()
                    .map(|_| v.to_string())
            },
        );
        let nice = r.parse(
            Key::BackupNice,
            "expected a whole number from 0 to 19",
            |v| v.parse::<i32>().ok().filter(|n| (0..=19).contains(n)),
        );
        let process = (|| {
            Some(Process {
                format: format?,
                filter: filter?,
                nice: nice?,
            })
        })();
        r.finish(process)
    }

    /// Reads what `read` asks for, collecting every problem (unknown `BACKUP_*` names
    /// included); each command names the sections it needs.
    fn section<T>(&self, read: impl FnOnce(&mut Reader<'_>) -> Option<T>) -> Result<T, Problems> {
        let mut r = Reader::new(self);
        r.unknown_names();
        let value = read(&mut r);
        r.finish(value)
    }

    /// What `backup` needs. Every section is read before any is checked, so that all
    /// problems are reported at once.
    pub fn backup(&self) -> Result<BackupConfig, Problems> {
        self.section(backup_section)
    }

    /// What `stream` needs, every problem of both sections at once.
    pub fn stream(&self) -> Result<StreamConfig, Problems> {
        self.section(|r| {
            let backup = backup_section(r);
            let stream = stream::stream(r);
            Some(StreamConfig {
                backup: backup?,
                stream: stream?,
            })
        })
    }

    /// What `defrag` needs: etcd, the rule's threshold, and where to push metrics.
    pub fn defrag(&self) -> Result<DefragConfig, Problems> {
        self.section(|r| {
            let (etcd, metrics) = (etcd::etcd(r), metrics::metrics(r));
            let (min_free, compact) = etcd::defrag_rule(r)?;
            Some(DefragConfig {
                etcd: etcd?,
                min_free,
                compact,
                metrics: metrics?,
            })
        })
    }

    /// What `check` needs: the store and the age limit (`--max-age` overrides the variable).
    pub fn check(&self, max_age: Option<Duration>) -> Result<CheckConfig, Problems> {
        self.section(|r| {
            let store = store::store(r);
            let max_age = max_age.or_else(|| r.duration(Key::BackupMaxAge));
            let verify_keys = pipeline::verify_keys(r);
            Some(CheckConfig {
                store: store?,
                max_age: max_age?,
                verify_keys: verify_keys?,
            })
        })
    }

    /// What `restore` needs: the store, how often to log progress, and the identities for
    /// encrypted backups.
    pub fn restore(&self) -> Result<RestoreConfig, Problems> {
        self.section(|r| {
            let store = store::store(r);
            let progress = pipeline::progress(r);
            let identities = pipeline::identities(r);
            let verify_keys = pipeline::verify_keys(r);
            let tmp_dir = pipeline::scratch_dir(r);
            Some(RestoreConfig {
                store: store?,
                tmp_dir,
                progress: progress?,
                identities: identities?,
                verify_keys: verify_keys?,
            })
        })
    }

    /// What `verify` needs: the scratch directory and the identities for encrypted files.
    pub fn verify(&self) -> Result<VerifyConfig, Problems> {
        self.section(|r| {
            let identities = pipeline::identities(r);
            let tmp_dir = pipeline::scratch_dir(r);
            Some(VerifyConfig {
                tmp_dir,
                identities: identities?,
            })
        })
    }

    /// What `prune` and `list` need.
    pub fn prune(&self) -> Result<PruneConfig, Problems> {
        self.section(|r| {
            let (store, policy) = (store::store(r), policy(r));
            let verify_keys = pipeline::verify_keys(r);
            Some(PruneConfig {
                store: store?,
                policy: policy?,
                verify_keys: verify_keys?,
            })
        })
    }

    /// What `status` needs: etcd alone.
    pub fn etcd(&self) -> Result<EtcdConfig, Problems> {
        self.section(etcd::etcd)
    }
}

fn backup_section(r: &mut Reader<'_>) -> Option<BackupConfig> {
    let etcd = etcd::etcd(r);
    let store = store::store(r);
    let pipeline = pipeline::pipeline(r);
    let policy = policy(r);
    let metrics = metrics::metrics(r);
    let include = pipeline::include(r, pipeline.as_ref());
    let verify_keys = pipeline::verify_keys(r);
    Some(BackupConfig {
        include,
        verify_keys: verify_keys?,
        etcd: etcd?,
        store: store?,
        pipeline: pipeline?,
        policy: policy?,
        metrics: metrics?,
    })
}

/// The retention policy of CronJob backups.
fn policy(r: &mut Reader<'_>) -> Option<Policy> {
    let max_age = r.duration(Key::BackupRetention);
    let keep_last = r.parse(
        Key::BackupKeepLast,
        "expected a whole number of at least 1 (the newest backups are never pruned)",
        |v| v.parse::<usize>().ok().filter(|n| *n >= 1),
    );
    let pitr_window = r.parse(
        Key::BackupPitrWindow,
        "expected a duration of at least 1h, such as 7d",
        |v| {
            humantime::parse_duration(v)
                .ok()
                .filter(|d| *d >= Duration::from_secs(3600))
        },
    );
    let mut tier = |key| {
        r.parse(
            key,
            "expected a whole number (0 keeps no backup for this tier)",
            |v| v.parse::<usize>().ok(),
        )
    };
    let tiers = (|| {
        Some(crate::retention::Tiers {
            hourly: tier(Key::BackupKeepHourly)?,
            daily: tier(Key::BackupKeepDaily)?,
            weekly: tier(Key::BackupKeepWeekly)?,
            monthly: tier(Key::BackupKeepMonthly)?,
        })
    })();
    Some(Policy {
        max_age: max_age?,
        keep_last: keep_last?,
        tiers: tiers?,
        pitr_window: pitr_window?,
    })
}

#[cfg(test)]
mod tests;
