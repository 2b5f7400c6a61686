use super::*;
use crate::compress::Codec;
use url::Url;

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs.iter().copied().collect()
}

/// A directory with a CA certificate, a client certificate and key, and a non-PEM file.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join("ca.crt"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("client.crt"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("client.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("junk.txt"), "not a certificate").unwrap();
        Pki { dir }
    }
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }
}

fn problems(r: Result<impl std::fmt::Debug, Problems>) -> Vec<String> {
    r.unwrap_err().0.iter().map(|p| p.to_string()).collect()
}

#[test]
fn defaults_for_backup() {
    let pki = Pki::new();
    let cfg = env(&[
        ("BACKUP_BUCKET", "backups"),
        ("ETCD_CACERT", &pki.path("ca.crt")),
    ])
    .backup()
    .unwrap();
    assert_eq!(cfg.etcd.endpoints[0].as_str(), "https://127.0.0.1:2379/");
    assert_eq!(cfg.etcd.dial_timeout, Duration::from_secs(5));
    assert_eq!(cfg.etcd.snapshot_timeout, Duration::from_secs(1800));
    assert_eq!(
        cfg.etcd.pacing,
        Pacing::Adaptive {
            target: Duration::from_millis(1)
        }
    );
    assert!(cfg.etcd.identity.is_none());
    assert_eq!(cfg.store.prefix, "etcd/");
    assert_eq!(cfg.store.region, "us-east-1");
    assert_eq!(cfg.pipeline.codec, Codec::Gzip);
    assert_eq!(cfg.pipeline.level, 4);
    assert_eq!(cfg.pipeline.part_size, 5 << 20);
    assert_eq!(cfg.pipeline.concurrency, 4);
    assert_eq!(
        cfg.policy,
        Policy {
            max_age: Duration::from_secs(30 * 86400),
            keep_last: 3,
            pitr_window: Duration::from_secs(7 * 86_400),
            tiers: Default::default(),
        }
    );
}

#[test]
fn seed_and_etcdctl_names_are_aliases() {
    let pki = Pki::new();
    let cfg = env(&[
        ("BACKUP_BUCKET", "backups"),
        ("ETCD_ENDPOINT", "https://10.0.1.10:2379"),
        ("ETCDCTL_CACERT", &pki.path("ca.crt")),
        ("ETCDCTL_CERT", &pki.path("client.crt")),
        ("ETCDCTL_KEY", &pki.path("client.key")),
        ("ETCDCTL_DIAL_TIMEOUT", "2s"),
    ])
    .backup()
    .unwrap();
    assert_eq!(cfg.etcd.endpoints.len(), 1);
    assert_eq!(cfg.etcd.endpoints[0].host_str(), Some("10.0.1.10"));
    assert!(cfg.etcd.identity.is_some());
    assert_eq!(cfg.etcd.dial_timeout, Duration::from_secs(2));
}

#[test]
fn endpoints_are_a_comma_separated_list() {
    let pki = Pki::new();
    let cfg = env(&[
        ("BACKUP_BUCKET", "backups"),
        ("ETCD_CACERT", &pki.path("ca.crt")),
        (
            "ETCDCTL_ENDPOINTS",
            "https://a:2379, https://b:2379,https://c:2379",
        ),
    ])
    .backup()
    .unwrap();
    let hosts: Vec<_> = cfg
        .etcd
        .endpoints
        .iter()
        .map(|u| u.host_str().unwrap().to_string())
        .collect();
    assert_eq!(hosts, ["a", "b", "c"]);
}

#[test]
fn every_problem_at_once_with_variable_value_and_form() {
    let pki = Pki::new();
    let got = problems(
        env(&[
            ("ETCD_ENDPOINTS", "ftp://127.0.0.1:2379"),
            ("ETCD_CACERT", "/nonexistent/ca.crt"),
            ("ETCD_CERT", &pki.path("junk.txt")),
            ("ETCD_DIAL_TIMEOUT", "soon"),
            ("BACKUP_COMPRESSION", "bzip2"),
            ("BACKUP_RETENTION", "thirty days"),
            ("BACKUP_KEEP_LAST", "0"),
            ("BACKUP_UPLOAD_PART_SIZE", "1MiB"),
            ("BACKUP_PREFIX", "/etcd"),
            ("BACKUP_RETENTON", "7d"),
        ])
        .backup(),
    );
    let want = [
        "BACKUP_RETENTON: unknown variable; did you mean BACKUP_RETENTION?".to_string(),
        "ETCD_CACERT=\"/nonexistent/ca.crt\": cannot read the file (No such file or directory (os error 2)): expected a readable PEM file".into(),
        format!("ETCD_CERT={:?}: the file is not a PEM certificate (-----BEGIN CERTIFICATE-----)", pki.path("junk.txt")),
        "ETCD_ENDPOINTS=\"ftp://127.0.0.1:2379\": \"ftp://127.0.0.1:2379\" is not an etcd endpoint: expected https://HOST:PORT or HOST:PORT, comma-separated".into(),
        "ETCD_KEY: is not set but ETCD_CERT is: expected the path of the client key (PEM) that goes with the certificate".into(),
        "ETCD_DIAL_TIMEOUT=\"soon\": expected a duration such as 90s, 30m, 30d or 720h, greater than zero".into(),
        "BACKUP_BUCKET: is not set: expected the name of the bucket to store backups in".into(),
        "BACKUP_PREFIX=\"/etcd\": expected a key prefix that is empty or ends with '/', without a leading '/' or '//' (e.g. etcd/ or clusters/prod/)".into(),
        "BACKUP_COMPRESSION=\"bzip2\": expected gzip, zstd or none".into(),
        "BACKUP_UPLOAD_PART_SIZE=\"1MiB\": expected a size from 5MiB to 5GiB such as 8MiB or 64MiB".into(),
        "BACKUP_RETENTION=\"thirty days\": expected a duration such as 90s, 30m, 30d or 720h, greater than zero".into(),
        "BACKUP_KEEP_LAST=\"0\": expected a whole number of at least 1 (the newest backups are never pruned)".into(),
    ];
    assert_eq!(got, want);
}

#[test]
fn https_needs_a_ca() {
    let got = problems(env(&[("BACKUP_BUCKET", "backups")]).backup());
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("ETCD_CACERT: is not set: expected the path of the CA certificate"),
        "{got:?}"
    );
    // Plain http needs none.
    assert!(env(&[
        ("BACKUP_BUCKET", "backups"),
        ("ETCD_ENDPOINTS", "http://127.0.0.1:2379")
    ])
    .backup()
    .is_ok());
}

#[test]
fn key_without_cert_and_bad_key() {
    let pki = Pki::new();
    let got = problems(
        env(&[
            ("BACKUP_BUCKET", "backups"),
            ("ETCD_CACERT", &pki.path("ca.crt")),
            ("ETCD_KEY", &pki.path("client.key")),
        ])
        .backup(),
    );
    assert_eq!(got, ["ETCD_CERT: is not set but ETCD_KEY is: expected the path of the client certificate (PEM) that goes with the key"]);
    let got = problems(
        env(&[
            ("BACKUP_BUCKET", "backups"),
            ("ETCD_CACERT", &pki.path("ca.crt")),
            ("ETCD_CERT", &pki.path("client.crt")),
            ("ETCD_KEY", &pki.path("client.crt")),
        ])
        .backup(),
    );
    assert_eq!(got.len(), 1);
    assert!(
        got[0].contains("ETCD_KEY=") && got[0].contains("is not a PEM private key"),
        "{got:?}"
    );
}

#[test]
fn conflicting_aliases_are_a_problem_and_equal_ones_are_not() {
    let base = [("BACKUP_BUCKET", "backups")];
    let got = problems(
        env(&[
            base[0],
            ("ETCD_ENDPOINTS", "http://a:2379"),
            ("ETCD_ENDPOINT", "http://b:2379"),
        ])
        .backup(),
    );
    assert_eq!(got, ["ETCD_ENDPOINTS=\"http://a:2379\": conflicts with ETCD_ENDPOINT=\"http://b:2379\": set one of them"]);
    assert!(env(&[
        base[0],
        ("ETCD_ENDPOINTS", "http://a:2379"),
        ("ETCD_ENDPOINT", "http://a:2379")
    ])
    .backup()
    .is_ok());
}

#[test]
fn a_conflict_of_pki_aliases_is_reported_once() {
    let pki = Pki::new();
    for name in ["ETCD_CERT", "ETCD_KEY", "ETCD_CACERT"] {
        let (file, other) = match name {
            "ETCD_KEY" => ("client.key", "ca.crt"),
            _ => ("client.crt", "ca.crt"),
        };
        let got = problems(
            env(&[
                ("BACKUP_BUCKET", "backups"),
                ("ETCD_CACERT", &pki.path("ca.crt")),
                ("ETCD_CERT", &pki.path("client.crt")),
                ("ETCD_KEY", &pki.path("client.key")),
                (name, &pki.path(file)),
                (&format!("ETCDCTL_{}", &name[5..]), &pki.path(other)),
            ])
            .backup(),
        );
        let conflicts = got.iter().filter(|p| p.contains("conflicts with")).count();
        assert_eq!(conflicts, 1, "{name}: {got:?}");
    }
}

#[test]
fn compression_levels_follow_the_codec() {
    let base = [
        ("BACKUP_BUCKET", "backups"),
        ("ETCD_ENDPOINTS", "http://e:2379"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| env(&[&base[..], extra].concat()).backup();
    assert_eq!(
        with(&[("BACKUP_COMPRESSION", "zstd")])
            .unwrap()
            .pipeline
            .level,
        3
    );
    assert_eq!(
        with(&[
            ("BACKUP_COMPRESSION", "zstd"),
            ("BACKUP_COMPRESSION_LEVEL", "19")
        ])
        .unwrap()
        .pipeline
        .level,
        19
    );
    assert_eq!(
        problems(with(&[("BACKUP_COMPRESSION_LEVEL", "12")])),
        ["BACKUP_COMPRESSION_LEVEL=\"12\": expected a gzip level from 1 to 9"]
    );
}

#[test]
fn prune_needs_no_etcd_settings() {
    let cfg = env(&[("BACKUP_BUCKET", "backups"), ("ETCD_ENDPOINTS", "nonsense")])
        .prune()
        .unwrap();
    assert_eq!(cfg.store.bucket, "backups");
    assert_eq!(
        problems(env(&[]).prune()),
        ["BACKUP_BUCKET: is not set: expected the name of the bucket to store backups in"]
    );
}

#[test]
fn secrets_never_show() {
    let cfg = env(&[
        ("BACKUP_BUCKET", "backups"),
        ("ETCD_ENDPOINTS", "http://e:2379"),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "hunter2-very-secret"),
    ])
    .backup()
    .unwrap();
    let debug = format!("{cfg:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("**redacted**"));
    // Nor in problems about them: a secret without its key id is a problem about the secret,
    // and its value goes through the same reader as every other value.
    let got = problems(
        env(&[
            ("BACKUP_BUCKET", "backups"),
            ("AWS_SECRET_ACCESS_KEY", "hunter2-very-secret"),
        ])
        .prune(),
    );
    assert_eq!(
        got,
        ["AWS_SECRET_ACCESS_KEY: is set but AWS_ACCESS_KEY_ID is not: expected both, or neither (for a role)"]
    );
    let pki = Pki::new();
    let cfg = env(&[
        ("BACKUP_BUCKET", "backups"),
        ("ETCD_CACERT", &pki.path("ca.crt")),
        ("ETCD_CERT", &pki.path("client.crt")),
        ("ETCD_KEY", &pki.path("client.key")),
    ])
    .backup()
    .unwrap();
    assert!(!format!("{cfg:?}").contains("PRIVATE KEY"));
}

#[test]
fn a_secret_variable_is_redacted_by_the_table_not_by_the_caller() {
    // `problem` is handed the value; only the table's `secret` flag keeps it out.
    let e = env(&[("AWS_SECRET_ACCESS_KEY", "hunter2")]);
    let mut r = Reader {
        env: &e,
        problems: vec![],
    };
    r.problem("AWS_SECRET_ACCESS_KEY", Some("hunter2"), "bad");
    r.problem("AWS_ACCESS_KEY_ID", Some("AKID"), "bad");
    let shown = Problems(r.problems).to_string();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("AWS_ACCESS_KEY_ID=\"AKID\""), "{shown}");
}

#[test]
fn an_endpoint_without_a_scheme_reads_as_etcdctl_reads_it() {
    let pki = Pki::new();
    let tls = env(&[
        ("BACKUP_BUCKET", "backups"),
        ("ETCDCTL_ENDPOINTS", "127.0.0.1:2379,10.0.1.11:2379"),
        ("ETCDCTL_CACERT", &pki.path("ca.crt")),
    ])
    .backup()
    .unwrap();
    let urls: Vec<_> = tls.etcd.endpoints.iter().map(Url::as_str).collect();
    assert_eq!(urls, ["https://127.0.0.1:2379/", "https://10.0.1.11:2379/"]);
    let plain = env(&[
        ("BACKUP_BUCKET", "backups"),
        ("ETCDCTL_ENDPOINTS", "localhost:2379"),
    ])
    .backup()
    .unwrap();
    assert_eq!(plain.etcd.endpoints[0].as_str(), "http://localhost:2379/");
    for bad in ["localhost", "ftp://a:1", "https://a:2379/v3", "a:2379?x=1"] {
        let got = problems(env(&[("BACKUP_BUCKET", "backups"), ("ETCD_ENDPOINTS", bad)]).etcd());
        assert!(got[0].starts_with("ETCD_ENDPOINTS="), "{bad}: {got:?}");
    }
}

#[test]
fn niceness_defaults_to_10_and_is_checked_with_the_log_settings() {
    assert_eq!(env(&[]).process().unwrap().nice, 10);
    assert_eq!(env(&[("BACKUP_NICE", "0")]).process().unwrap().nice, 0);
    let got = problems(env(&[("BACKUP_NICE", "20"), ("BACKUP_LOG_FORMAT", "xml")]).process());
    assert_eq!(got.len(), 2, "every problem at once: {got:?}");
    assert!(
        got.iter()
            .any(|p| p.starts_with("BACKUP_NICE=\"20\": expected a whole number from 0 to 19")),
        "{got:?}"
    );
}

#[test]
fn backup_log_is_a_known_variable_and_is_checked() {
    let e = env(&[("BACKUP_LOG", "debug"), ("BACKUP_BUCKET", "backups")]);
    assert!(
        e.prune().is_ok(),
        "BACKUP_LOG must not be an unknown variable"
    );
    assert_eq!(e.process().unwrap().filter, "debug");
    assert_eq!(
        e.process().unwrap().format,
        LogFormat::Text,
        "the default format"
    );
    let per_module = env(&[("BACKUP_LOG", "info,etcd_backup=debug")]);
    assert_eq!(
        per_module.process().unwrap().filter,
        "info,etcd_backup=debug"
    );
    let got = problems(env(&[("BACKUP_LOG", "info,=[")]).process());
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("BACKUP_LOG=\"info,=[\": expected a level"),
        "{got:?}"
    );
}

#[test]
fn server_side_encryption_is_checked_by_us() {
    let got = problems(
        env(&[
            ("BACKUP_BUCKET", "backups"),
            ("AWS_SERVER_SIDE_ENCRYPTION", "rot13"),
        ])
        .prune(),
    );
    assert_eq!(
        got,
        ["AWS_SERVER_SIDE_ENCRYPTION=\"rot13\": expected AES256 (SSE-S3), aws:kms (SSE-KMS) or aws:kms:dsse (DSSE-KMS)"]
    );
    for ok in ["AES256", "aws:kms", "aws:kms:dsse"] {
        let e = env(&[("BACKUP_BUCKET", "b12"), ("AWS_SERVER_SIDE_ENCRYPTION", ok)]);
        assert!(e.prune().is_ok(), "{ok}");
    }
    let got = problems(
        env(&[
            ("BACKUP_BUCKET", "backups"),
            ("AWS_SERVER_SIDE_ENCRYPTION", "AES256"),
            ("AWS_SSE_KMS_KEY_ID", "arn:aws:kms:eu-west-1:1:key/x"),
        ])
        .prune(),
    );
    assert!(
        got[0].starts_with("AWS_SSE_KMS_KEY_ID: is set, but"),
        "{got:?}"
    );
}

#[test]
fn sizes() {
    assert_eq!(parse_size("8MiB"), Some(8 << 20));
    assert_eq!(parse_size("64M"), Some(64 << 20));
    assert_eq!(parse_size("1GiB"), Some(1 << 30));
    assert_eq!(parse_size("5242880"), Some(5 << 20));
    assert_eq!(parse_size("8 MiB"), Some(8 << 20));
    assert_eq!(parse_size("eight"), None);
    assert_eq!(parse_size("8TB"), None);
}

#[test]
fn help_shows_name_aliases_doc_and_default_of_each_variable() {
    let help = help_table();
    // Literal lines, as an operator reads them: a variable with aliases and a default, one
    // without either, and a secret (whose doc shows, never a value).
    for want in [
        "  ETCD_ENDPOINTS [ETCD_ENDPOINT, ETCDCTL_ENDPOINTS]\n      Comma-separated etcd client URLs, tried in order. (default: https://127.0.0.1:2379)\n",
        "  BACKUP_BUCKET\n      Bucket to store backups in (required by backup, prune, list, restore).\n",
        "  BACKUP_LOG\n      Log filter: error, warn, info, debug or trace, or per module, e.g. info,etcd_backup=debug. (default: info)\n",
        "  AWS_SECRET_ACCESS_KEY\n      Secret for AWS_ACCESS_KEY_ID.\n",
    ] {
        assert!(help.contains(want), "missing {want:?} in\n{help}");
    }
    // One entry per variable: the name lines are exactly the table's names, in order.
    let names: Vec<&str> = help
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names.len(), Key::ALL.len());
    assert_eq!(names.first(), Some(&"ETCD_ENDPOINTS"));
    assert!(names.contains(&"BACKUP_LOG"));
}

#[test]
fn age_recipients_from_the_variable_and_the_file_or_a_problem() {
    let (a, b) = (
        age::x25519::Identity::generate().to_public().to_string(),
        age::x25519::Identity::generate().to_public().to_string(),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("recipients.txt");
    std::fs::write(&file, format!("# the offline key\n{b}\n\n{a}\n")).unwrap();
    let base = [
        ("BACKUP_BUCKET", "backups"),
        ("ETCD_ENDPOINTS", "http://e:2379"),
    ];
    let with = |extra: &[(&str, &str)]| {
        let mut pairs = base.to_vec();
        pairs.extend_from_slice(extra);
        env(&pairs).backup()
    };
    let spaced = format!("{a}, \n{b}");
    let cfg = with(&[("BACKUP_AGE_RECIPIENTS", &spaced)]).unwrap();
    assert_eq!(cfg.pipeline.recipients, [a.clone(), b.clone()]);
    // The union, each key once.
    let cfg = with(&[
        ("BACKUP_AGE_RECIPIENTS", &a),
        ("BACKUP_AGE_RECIPIENTS_FILE", file.to_str().unwrap()),
    ])
    .unwrap();
    assert_eq!(cfg.pipeline.recipients, [a.clone(), b.clone()]);
    assert!(with(&[]).unwrap().pipeline.recipients.is_empty());
    // Set but empty, a typo in a key, a file without keys: never a plaintext upload.
    let typo = format!("{a},age1notakey");
    let empty_file = dir.path().join("empty.txt");
    std::fs::write(&empty_file, "# nothing yet\n").unwrap();
    for (var, value, want) in [
        ("BACKUP_AGE_RECIPIENTS", "", "is set but holds no recipient"),
        (
            "BACKUP_AGE_RECIPIENTS",
            " , ",
            "is set but holds no recipient",
        ),
        (
            "BACKUP_AGE_RECIPIENTS",
            typo.as_str(),
            "\"age1notakey\" is not an age recipient",
        ),
        (
            "BACKUP_AGE_RECIPIENTS_FILE",
            empty_file.to_str().unwrap(),
            "is set but holds no recipient",
        ),
        (
            "BACKUP_AGE_RECIPIENTS_FILE",
            "/nonexistent/r.txt",
            "cannot read the file",
        ),
    ] {
        let got = problems(with(&[(var, value)]));
        assert_eq!(got.len(), 1, "{var}={value:?}: {got:?}");
        assert!(
            got[0].starts_with(var) && got[0].contains(want),
            "{var}={value:?}: {got:?}"
        );
    }
}

#[test]
fn an_identity_file_is_read_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let key = age::x25519::Identity::generate();
    let secret = age::secrecy::ExposeSecret::expose_secret(&key.to_string()).to_string();
    let path = dir.path().join("key.txt");
    std::fs::write(
        &path,
        format!(
            "# created: now\n# public key: {}\n{secret}\n",
            key.to_public()
        ),
    )
    .unwrap();
    let ids = env(&[("BACKUP_AGE_IDENTITY_FILE", path.to_str().unwrap())])
        .verify()
        .unwrap()
        .identities
        .unwrap();
    assert_eq!(ids.keys.len(), 1);
    assert!(!format!("{ids:?}").contains(&secret));
    let junk = dir.path().join("junk.txt");
    std::fs::write(&junk, "AGE-SECRET-KEY-1NOTAKEY\n").unwrap();
    let got = problems(env(&[("BACKUP_AGE_IDENTITY_FILE", junk.to_str().unwrap())]).verify());
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("BACKUP_AGE_IDENTITY_FILE="), "{got:?}");
    assert!(
        !got[0].contains("NOTAKEY"),
        "the file's contents must not show: {got:?}"
    );
    assert!(env(&[]).verify().unwrap().identities.is_none());
}

#[test]
fn stream_settings_are_checked_with_the_backups_and_defaulted() {
    let got = problems(
        env(&[
            ("ETCD_ENDPOINTS", "http://127.0.0.1:2379"),
            ("BACKUP_SEGMENT_INTERVAL", "0s"),
            ("BACKUP_SEGMENT_MAX_BYTES", "2GiB"),
            ("BACKUP_BASE_INTERVAL", "5s"),
            ("BACKUP_SPOOL_MAX_BYTES", "1MiB"),
            ("BACKUP_METRICS_LISTEN", "9402"),
            ("BACKUP_KEEP_DAILY", "seven"),
            ("BACKUP_PITR_WINDOW", "10m"),
        ])
        .stream(),
    );
    let want = [
        "BACKUP_BUCKET: is not set: expected the name of the bucket to store backups in",
        "BACKUP_PITR_WINDOW=\"10m\": expected a duration of at least 1h, such as 7d",
        "BACKUP_KEEP_DAILY=\"seven\": expected a whole number (0 keeps no backup for this tier)",
        "BACKUP_SEGMENT_INTERVAL=\"0s\": expected a duration from 1s to 1h, such as 10s",
        "BACKUP_SEGMENT_MAX_BYTES=\"2GiB\": expected a size from 64KiB to 1GiB, such as 8MiB",
        "BACKUP_BASE_INTERVAL=\"5s\": expected a duration of at least 10s, such as 1h",
        "BACKUP_SPOOL_MAX_BYTES=\"1MiB\": expected a size of at least 16MiB, such as 1GiB",
        "BACKUP_METRICS_LISTEN=\"9402\": expected an address and port such as 0.0.0.0:9402 or 127.0.0.1:9402",
    ];
    assert_eq!(got, want);
    let cfg = env(&[
        ("ETCD_ENDPOINTS", "http://127.0.0.1:2379"),
        ("BACKUP_BUCKET", "backups"),
    ])
    .stream()
    .unwrap();
    let s = cfg.stream;
    assert_eq!(
        (
            s.segment_interval,
            s.segment_max_bytes,
            s.base_interval,
            s.spool_max_bytes,
            s.listen
        ),
        (
            std::time::Duration::from_secs(10),
            8 << 20,
            std::time::Duration::from_secs(3600),
            1 << 30,
            None
        )
    );
}
