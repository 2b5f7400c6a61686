//! The one table of environment variables. Each is a [`Key`]; its name, aliases, default, help
//! text and secrecy sit together below, so a parser names a variable by the enum and the
//! compiler checks it. The same table feeds the reader, `--help` and the README's table.

/// One environment variable we read.
#[derive(Debug)]
pub struct Var {
    pub key: Key,
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub default: Option<&'static str>,
    pub doc: &'static str,
    /// Its value is never printed.
    pub secret: bool,
}

/// Declares [`Key`] and its table from one list; a field left out is empty (no aliases, no
/// default, not secret).
macro_rules! vars {
    ($(
        $key:ident {
            name: $name:literal,
            $(aliases: [$($alias:literal),*],)?
            $(default: $default:literal,)?
            $(secret: $secret:literal,)?
            doc: $doc:literal,
        }
    )*) => {
        /// Every variable we read, in the order `--help` lists them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Key {
            $($key),*
        }

        impl Key {
            /// Every key, in table order.
            pub const ALL: &'static [Key] = &[$(Key::$key),*];

            /// The variable's entry in the table.
            pub fn var(self) -> &'static Var {
                match self {
                    $(Key::$key => &Var {
                        key: Key::$key,
                        name: $name,
                        aliases: &[$($($alias),*)?],
                        default: vars!(@opt $($default)?),
                        doc: $doc,
                        secret: vars!(@flag $($secret)?),
                    },)*
                }
            }
        }
    };
    (@opt) => { None };
    (@opt $v:literal) => { Some($v) };
    (@flag) => { false };
    (@flag $v:literal) => { $v };
}

impl Key {
    /// The variable's own name (not an alias).
    pub fn name(self) -> &'static str {
        self.var().name
    }

    /// The key whose name or alias this is.
    pub fn named(name: &str) -> Option<Key> {
        Key::ALL
            .iter()
            .copied()
            .find(|k| k.name() == name || k.var().aliases.contains(&name))
    }
}

/// Every variable's entry, in table order.
pub fn vars() -> impl Iterator<Item = &'static Var> {
    Key::ALL.iter().map(|k| k.var())
}

/// The variable table as text, for `--help` and the README.
pub fn help_table() -> String {
    let mut out = String::from("Environment variables (aliases in brackets):\n");
    for v in vars() {
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

vars! {
    EtcdEndpoints {
        name: "ETCD_ENDPOINTS",
        aliases: ["ETCD_ENDPOINT", "ETCDCTL_ENDPOINTS"],
        default: "https://127.0.0.1:2379",
        doc: "Comma-separated etcd client URLs, tried in order.",
    }
    EtcdCacert {
        name: "ETCD_CACERT",
        aliases: ["ETCDCTL_CACERT"],
        doc: "CA certificate (PEM) that signed etcd's server certificate; required for https.",
    }
    EtcdCert {
        name: "ETCD_CERT",
        aliases: ["ETCDCTL_CERT"],
        doc: "Client certificate (PEM) for mTLS; needs ETCD_KEY.",
    }
    EtcdKey {
        name: "ETCD_KEY",
        aliases: ["ETCDCTL_KEY"],
        doc: "Client private key (PEM) for mTLS; needs ETCD_CERT.",
    }
    EtcdDialTimeout {
        name: "ETCD_DIAL_TIMEOUT",
        aliases: ["ETCDCTL_DIAL_TIMEOUT"],
        default: "5s",
        doc: "Time to connect to one endpoint and read its status.",
    }
    EtcdSnapshotTimeout {
        name: "ETCD_SNAPSHOT_TIMEOUT",
        default: "30m",
        doc: "Time allowed for the whole snapshot stream. Adaptive pacing never reads so slowly that the rest of the snapshot would not arrive within 80% of it.",
    }
    EtcdSnapshotStallTimeout {
        name: "ETCD_SNAPSHOT_STALL_TIMEOUT",
        default: "2m",
        doc: "Give up when the snapshot stream sends nothing for this long.",
    }
    EtcdSnapshotPacing {
        name: "ETCD_SNAPSHOT_PACING",
        default: "adaptive",
        doc: "adaptive: read the snapshot as fast as the member stays responsive, slowing down while a probe of it is slower than its idle baseline by more than ETCD_SNAPSHOT_PACING_TARGET and someone writes; off: as fast as the stages take it (ETCD_SNAPSHOT_RATE still caps both).",
    }
    EtcdSnapshotPacingTarget {
        name: "ETCD_SNAPSHOT_PACING_TARGET",
        default: "1ms",
        doc: "How much slower than its idle baseline the probe of the member being read may get before adaptive pacing slows down (1ms: a third fewer slow writes than 2ms and twice the read time while someone writes; no effect while nobody writes).",
    }
    EtcdSnapshotRate {
        name: "ETCD_SNAPSHOT_RATE",
        default: "0",
        doc: "Read the snapshot at most this fast, per second, e.g. 30MiB; 0 for no cap. A cap on adaptive pacing too.",
    }
    EtcdSnapshotWindow {
        name: "ETCD_SNAPSHOT_WINDOW",
        default: "256KiB",
        doc: "HTTP/2 stream window of the connection that reads the snapshot: the most etcd sends ahead of a paced reader, 64KiB-16MiB (bench/RESULTS.md).",
    }
    EtcdHashkvMembers {
        name: "ETCD_HASHKV_MEMBERS",
        default: "all",
        doc: "Which members the HashKV check asks, followers before the leader: all, followers or none. Each one's scan holds its read lock, about 0.3 s per GB here.",
    }
    BackupRetries {
        name: "BACKUP_RETRIES",
        default: "5",
        doc: "Retries of a failed S3 request (5xx, throttling, timeouts, resets), with backoff; 0-20.",
    }
    BackupS3Timeout {
        name: "BACKUP_S3_TIMEOUT",
        default: "5m",
        doc: "Time allowed for one S3 request (a part upload, a listing).",
    }
    EtcdQuotaBackendBytes {
        name: "ETCD_QUOTA_BACKEND_BYTES",
        default: "2GiB",
        doc: "etcd's --quota-backend-bytes; status and backup warn when the DB passes 80% of it.",
    }
    EtcdDefragMinFree {
        name: "ETCD_DEFRAG_MIN_FREE",
        default: "256MiB",
        doc: "defrag: defragment a member only when this much of its database is free (or it is past 80% of the quota).",
    }
    EtcdDefragCompact {
        name: "ETCD_DEFRAG_COMPACT",
        default: "false",
        doc: "defrag: compact to the current revision first (true only for etcd without a Kubernetes API server, which compacts itself).",
    }
    BackupBucket {
        name: "BACKUP_BUCKET",
        doc: "Bucket to store backups in (required by backup, prune, list, restore).",
    }
    BackupPrefix {
        name: "BACKUP_PREFIX",
        default: "etcd/",
        doc: "Key prefix of our objects: empty, or ending with '/'.",
    }
    BackupStorageClass {
        name: "BACKUP_STORAGE_CLASS",
        doc: "Storage class of uploaded objects, e.g. STANDARD_IA.",
    }
    BackupCompression {
        name: "BACKUP_COMPRESSION",
        default: "gzip",
        doc: "gzip, zstd or none.",
    }
    BackupCompressionLevel {
        name: "BACKUP_COMPRESSION_LEVEL",
        doc: "gzip 1-9 (default 4), zstd 1-19 (default 3).",
    }
    BackupAgeRecipients {
        name: "BACKUP_AGE_RECIPIENTS",
        doc: "Encrypt backups with age to these public keys (age1..., separated by commas, spaces or newlines).",
    }
    BackupAgeRecipientsFile {
        name: "BACKUP_AGE_RECIPIENTS_FILE",
        doc: "A recipients file as age -R reads it (one age1... key a line, # comments); joins BACKUP_AGE_RECIPIENTS.",
    }
    BackupAgeIdentityFile {
        name: "BACKUP_AGE_IDENTITY_FILE",
        doc: "An identity file as age -i reads it (AGE-SECRET-KEY-1...), for restore and verify of encrypted backups.",
    }
    BackupIncludePaths {
        name: "BACKUP_INCLUDE_PATHS",
        doc: "Files or directories to archive beside each backup, encrypted (needs age recipients), e.g. /etc/kubernetes/pki.",
    }
    BackupSigningKeyFile {
        name: "BACKUP_SIGNING_KEY_FILE",
        doc: "An Ed25519 private key (etcd-backup keygen -f FILE) to sign each backup's manifest with, so that a restore can tell our backups from planted ones.",
    }
    BackupVerifyKey {
        name: "BACKUP_VERIFY_KEY",
        doc: "Public keys (ssh-ed25519 AAAA..., as keygen wrote FILE.pub; several separated by newlines or commas): restore and check accept only backups signed by one of them, and only those fill prune's BACKUP_KEEP_LAST places.",
    }
    BackupRetention {
        name: "BACKUP_RETENTION",
        default: "30d",
        doc: "Delete backups older than this (after keeping BACKUP_KEEP_LAST).",
    }
    BackupKeepLast {
        name: "BACKUP_KEEP_LAST",
        default: "3",
        doc: "Always keep this many newest backups (at least 1).",
    }
    BackupKeepHourly {
        name: "BACKUP_KEEP_HOURLY",
        default: "0",
        doc: "Also keep the newest backup of each of the last N hours that have one (as restic's --keep-hourly); 0 for none.",
    }
    BackupKeepDaily {
        name: "BACKUP_KEEP_DAILY",
        default: "0",
        doc: "Also keep the newest backup of each of the last N days that have one (as restic's --keep-daily); 0 for none.",
    }
    BackupKeepWeekly {
        name: "BACKUP_KEEP_WEEKLY",
        default: "0",
        doc: "Also keep the newest backup of each of the last N ISO weeks that have one (as restic's --keep-weekly); 0 for none.",
    }
    BackupKeepMonthly {
        name: "BACKUP_KEEP_MONTHLY",
        default: "0",
        doc: "Also keep the newest backup of each of the last N months that have one (as restic's --keep-monthly); 0 for none.",
    }
    BackupPitrWindow {
        name: "BACKUP_PITR_WINDOW",
        default: "7d",
        doc: "How far back a stream's history is kept: prune keeps every base and segment needed to reach any moment of it, deletes generations that ended before it, and keeps the bases it needs whatever BACKUP_RETENTION says.",
    }
    BackupTmpDir {
        name: "BACKUP_TMP_DIR",
        doc: "Scratch directory for the spooled snapshot (default: the system temp dir).",
    }
    BackupUploadPartSize {
        name: "BACKUP_UPLOAD_PART_SIZE",
        default: "5MiB",
        doc: "Multipart part size, 5MiB-5GiB. Upload memory is about part size x (concurrency + 3).",
    }
    BackupUploadConcurrency {
        name: "BACKUP_UPLOAD_CONCURRENCY",
        default: "4",
        doc: "Parts uploaded at once, 1-64 (4 keeps a 200 Mbit/s-per-connection link from slowing the backup).",
    }
    BackupCompressionThreads {
        name: "BACKUP_COMPRESSION_THREADS",
        doc: "Compression threads, 1-64 (default: the CPUs available to the process, which counts the cgroup's CPU quota).",
    }
    BackupLogFormat {
        name: "BACKUP_LOG_FORMAT",
        default: "text",
        doc: "text or json (one object a line, on stderr).",
    }
    BackupPushgatewayUrl {
        name: "BACKUP_PUSHGATEWAY_URL",
        doc: "Pushgateway to push run metrics to at the end of every backup, e.g. http://pushgateway.monitoring:9091.",
    }
    BackupMetricsLabels {
        name: "BACKUP_METRICS_LABELS",
        doc: "Grouping labels for the push, comma-separated NAME=VALUE, e.g. cluster=prod-eu (not job or instance).",
    }
    BackupPushgatewayTimeout {
        name: "BACKUP_PUSHGATEWAY_TIMEOUT",
        default: "5s",
        doc: "Time allowed for the push; a slow or absent Pushgateway only warns.",
    }
    BackupMaxAge {
        name: "BACKUP_MAX_AGE",
        default: "13h",
        doc: "check: the newest verified backup must be younger than this (two 6-hour periods and an hour's slack).",
    }
    BackupSegmentInterval {
        name: "BACKUP_SEGMENT_INTERVAL",
        default: "10s",
        doc: "stream: how often the revisions received so far become a segment in the bucket (the changes a lost node can lose), 1s to 1h.",
    }
    BackupSegmentMaxBytes {
        name: "BACKUP_SEGMENT_MAX_BYTES",
        default: "8MiB",
        doc: "stream: a segment is cut early once its records reach this size (a revision is never split), 64KiB to 1GiB.",
    }
    BackupBaseInterval {
        name: "BACKUP_BASE_INTERVAL",
        default: "1h",
        doc: "stream: how often a new base snapshot is taken inside a generation, so that a restore replays at most this much.",
    }
    BackupSpoolMaxBytes {
        name: "BACKUP_SPOOL_MAX_BYTES",
        default: "1GiB",
        doc: "stream: sealed segments waiting for the bucket may fill this much of BACKUP_TMP_DIR; beyond it the watch pauses until the bucket takes them (if etcd compacts past that revision meanwhile, a new generation starts from a fresh base).",
    }
    BackupMetricsListen {
        name: "BACKUP_METRICS_LISTEN",
        doc: "stream: address to serve /metrics and /healthz on, such as 0.0.0.0:9402 (default: none).",
    }
    BackupProgressInterval {
        name: "BACKUP_PROGRESS_INTERVAL",
        default: "10s",
        doc: "At most one progress line this often during long transfers; 0s turns them off.",
    }
    BackupNice {
        name: "BACKUP_NICE",
        default: "10",
        doc: "CPU niceness, 0-19, set at start for every thread (and with it the I/O priority). It ranks our threads only against others in our own cgroup: against etcd in another pod, only the CPU request counts.",
    }
    BackupLog {
        name: "BACKUP_LOG",
        default: "info",
        doc: "Log filter: error, warn, info, debug or trace, or per module, e.g. info,etcd_backup=debug.",
    }
    AwsEndpointUrl {
        name: "AWS_ENDPOINT_URL",
        aliases: ["AWS_ENDPOINT"],
        doc: "S3-compatible endpoint (MinIO, Hetzner, GCS interop); path-style addressing.",
    }
    AwsRegion {
        name: "AWS_REGION",
        aliases: ["AWS_DEFAULT_REGION"],
        default: "us-east-1",
        doc: "Region of the bucket.",
    }
    AwsAccessKeyId {
        name: "AWS_ACCESS_KEY_ID",
        doc: "Static credentials; otherwise web identity, pod identity or instance profile.",
    }
    AwsSecretAccessKey {
        name: "AWS_SECRET_ACCESS_KEY",
        secret: true,
        doc: "Secret for AWS_ACCESS_KEY_ID.",
    }
    AwsSessionToken {
        name: "AWS_SESSION_TOKEN",
        secret: true,
        doc: "Session token for temporary credentials.",
    }
    AwsWebIdentityTokenFile {
        name: "AWS_WEB_IDENTITY_TOKEN_FILE",
        doc: "Web identity token (IRSA); with AWS_ROLE_ARN.",
    }
    AwsRoleArn {
        name: "AWS_ROLE_ARN",
        doc: "Role to assume with the web identity token.",
    }
    AwsServerSideEncryption {
        name: "AWS_SERVER_SIDE_ENCRYPTION",
        doc: "AES256, aws:kms or aws:kms:dsse.",
    }
    AwsSseKmsKeyId {
        name: "AWS_SSE_KMS_KEY_ID",
        doc: "KMS key for aws:kms encryption.",
    }
}
