//! The real binary: exit codes, messages, `--help`.

use std::process::{Command, Output};

use crate::common::data;

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_etcd-backup"));
    c.env_clear()
        .env("BACKUP_LOG_FORMAT", "text")
        .env("NO_COLOR", "1");
    c
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn help_lists_every_variable_and_default() {
    let o = bin().arg("--help").output().unwrap();
    assert!(o.status.success());
    let out = text(&o);
    for v in etcd_backup::config::vars() {
        assert!(out.contains(v.name), "--help lacks {}", v.name);
    }
    assert!(out.contains("(default: https://127.0.0.1:2379)"));
    let o = bin().arg("--version").output().unwrap();
    assert!(text(&o).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn configuration_errors_exit_2_listing_every_problem() {
    let o = bin()
        .args(["backup"])
        .env("ETCD_ENDPOINTS", "not a url")
        .env("BACKUP_COMPRESSION", "lz4")
        .env("BACKUP_RETENTION", "thirty days")
        .env("AWS_SECRET_ACCESS_KEY", "hunter2")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = text(&o);
    for want in [
        "ETCD_ENDPOINTS=\"not a url\"",
        "BACKUP_BUCKET: is not set",
        "BACKUP_COMPRESSION=\"lz4\": expected gzip, zstd or none",
        "BACKUP_RETENTION=\"thirty days\": expected a duration",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(!out.contains("hunter2"));
}

#[test]
fn no_subcommand_means_backup() {
    let o = bin().output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("BACKUP_BUCKET: is not set"));
}

#[test]
fn usage_errors_exit_2() {
    let o = bin().arg("frobnicate").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = bin()
        .args(["verify", "/nonexistent/file.db"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("/nonexistent/file.db"));
    // The point-in-time flags: each misuse is named, before any setting is read.
    for (args, says) in [
        (&["restore", "--to-revision", "0", "-O", "x"][..], "0"),
        (
            &[
                "restore",
                "--to-revision",
                "5",
                "--to-time",
                "2026-12-04T10:00:00Z",
                "-O",
                "x",
            ],
            "--to-time",
        ),
        (
            &["restore", "latest", "--to-revision", "5", "-O", "x"],
            "--to-revision",
        ),
        (
            &["restore", "--bump-revision", "5", "-O", "x"],
            "--bump-revision goes with",
        ),
        (&["get", "/k", "--at", "yesterday"], "neither a revision"),
        (&["diff", "10"], "<TO>"),
    ] {
        let o = bin()
            .args(args)
            .env("BACKUP_BUCKET", "backups")
            .env("ETCD_ENDPOINTS", "http://127.0.0.1:1")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{args:?}: {}", text(&o));
    }
}

#[test]
fn prune_needs_no_etcd_settings_but_a_bucket() {
    let o = bin()
        .args(["prune", "--dry-run"])
        .env("ETCD_ENDPOINTS", "garbage")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let out = text(&o);
    assert!(out.contains("BACKUP_BUCKET"), "{out}");
    assert!(!out.contains("ETCD_ENDPOINTS"), "{out}");
}

#[test]
fn verify_prints_etcdutl_fields_and_exits_1_on_damage() {
    let o = bin()
        .args(["verify", "-o", "json"])
        .arg(data("medium.db"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let ours: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let theirs = crate::common::golden_status("medium");
    for f in ["hash", "revision", "totalKey", "totalSize"] {
        assert_eq!(ours[f], theirs[f], "{f}");
    }

    let dir = tempfile::tempdir().unwrap();
    let mut bad = std::fs::read(data("medium.db")).unwrap();
    bad[2 * 4096 + 100] ^= 0x40;
    let path = dir.path().join("bad.db");
    std::fs::write(&path, &bad).unwrap();
    let o = bin().arg("verify").arg(&path).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("SHA-256 trailer mismatch"),
        "{}",
        text(&o)
    );
}

#[test]
fn verify_reads_gzip_and_zstd_by_magic_not_name() {
    use std::io::Write;
    let raw = std::fs::read(data("small.db")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for codec in [
        etcd_backup::compress::Codec::Gzip,
        etcd_backup::compress::Codec::Zstd,
    ] {
        let mut enc =
            etcd_backup::compress::Encoder::new(codec, codec.default_level(), 2, Vec::new())
                .unwrap();
        enc.write_all(&raw).unwrap();
        let path = dir.path().join("renamed.bin");
        std::fs::write(&path, enc.finish().unwrap()).unwrap();
        let o = bin()
            .args(["verify", "-o", "json"])
            .arg(&path)
            .env("BACKUP_TMP_DIR", dir.path())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["compression"], codec.to_string());
        assert_eq!(v["hash"], crate::common::golden_status("small")["hash"]);
    }
}

#[test]
fn readme_table_matches_help() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for v in etcd_backup::config::vars() {
        let default = v.default.map(|d| format!("`{d}`")).unwrap_or_default();
        let row = format!("| `{}` |", v.name);
        let line = readme
            .lines()
            .find(|l| l.starts_with(&row))
            .unwrap_or_else(|| panic!("README lacks {}", v.name));
        assert!(
            line.contains(&format!("| {default} |")),
            "README's default for {} differs: {line}",
            v.name
        );
        assert!(
            line.contains(v.doc),
            "README's text for {} differs from --help: {line}",
            v.name
        );
    }
}

#[test]
fn every_bad_setting_exits_2_naming_the_variable() {
    // (variable, bad value): each alone must exit 2 with a message naming it.
    let cases = [
        ("ETCD_ENDPOINTS", "etcd-without-a-port"),
        ("ETCD_ENDPOINTS", "ftp://etcd:2379"),
        ("ETCD_CACERT", "/nonexistent/ca.crt"),
        ("ETCD_CERT", "/nonexistent/client.crt"),
        ("ETCD_KEY", "/nonexistent/client.key"),
        ("ETCD_DIAL_TIMEOUT", "5 parsecs"),
        ("ETCD_SNAPSHOT_TIMEOUT", "0s"),
        ("ETCD_SNAPSHOT_STALL_TIMEOUT", "-1m"),
        ("ETCD_SNAPSHOT_RATE", "30"),
        ("ETCD_SNAPSHOT_RATE", "fast"),
        ("ETCD_QUOTA_BACKEND_BYTES", "lots"),
        ("BACKUP_BUCKET", "Bad_Bucket!"),
        ("BACKUP_PREFIX", "etcd"),
        ("BACKUP_STORAGE_CLASS", "infrequent access"),
        ("BACKUP_COMPRESSION", "brotli"),
        ("BACKUP_COMPRESSION_LEVEL", "fast"),
        ("BACKUP_RETENTION", "a month"),
        ("BACKUP_KEEP_LAST", "-1"),
        ("BACKUP_TMP_DIR", "/nonexistent/scratch"),
        ("BACKUP_UPLOAD_PART_SIZE", "1KiB"),
        ("BACKUP_UPLOAD_CONCURRENCY", "0"),
        ("BACKUP_COMPRESSION_THREADS", "100"),
        ("BACKUP_RETRIES", "many"),
        ("BACKUP_S3_TIMEOUT", "never"),
        ("BACKUP_LOG_FORMAT", "xml"),
        ("BACKUP_LOG", "info,=["),
        ("AWS_SERVER_SIDE_ENCRYPTION", "rot13"),
        ("AWS_SSE_KMS_KEY_ID", "arn:aws:kms:eu-west-1:1:key/x"),
        ("AWS_ENDPOINT_URL", "minio:9000"),
        ("BACKUP_KEEPLAST", "3"),
        ("ETCD_HASHKV_MEMBERS", "leader"),
        ("BACKUP_SIGNING_KEY_FILE", "/nonexistent/signing"),
        // A public key where the private one belongs.
        ("BACKUP_SIGNING_KEY_FILE", "tests/data/signing.pub"),
        ("BACKUP_VERIFY_KEY", "age1qqqq"),
        (
            "BACKUP_VERIFY_KEY",
            "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ",
        ),
    ];
    for (var, value) in cases {
        let o = bin()
            .arg("backup")
            .env("ETCD_ENDPOINTS", "http://127.0.0.1:2379")
            .env("BACKUP_BUCKET", "backups")
            .env(var, value)
            .output()
            .unwrap();
        let out = text(&o);
        assert_eq!(o.status.code(), Some(2), "{var}={value:?}: {out}");
        assert!(out.contains(var), "{var}={value:?} not named: {out}");
    }
}

#[test]
fn sigterm_while_connecting_exits_1_saying_so() {
    // An "etcd" that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let child = bin()
        .arg("backup")
        .env("ETCD_ENDPOINTS", format!("http://127.0.0.1:{port}"))
        .env("ETCD_DIAL_TIMEOUT", "60s")
        .env("BACKUP_BUCKET", "backups")
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("BACKUP_RETRIES", "0")
        // Static credentials: without them the AWS chain would ask an instance metadata address.
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env("BACKUP_LOG", "info,etcd_backup=debug")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The bucket is checked first, and hangs there.
    let (code, out, took) = sigterm_after_line(child, "checking the bucket", |_| {});
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("interrupted by SIGTERM"), "{out}");
    assert!(
        took < std::time::Duration::from_secs(9),
        "took {took:?} to stop"
    );
    drop(listener);
}

/// Reads `child`'s stderr until a line contains `needle`, calls `before` with the log so far
/// (to check the state the signal meets), sends SIGTERM and reads to the end. Returns the exit
/// code, the whole log, and how long the exit took after the signal.
fn sigterm_after_line(
    mut child: std::process::Child,
    needle: &str,
    before: impl FnOnce(&str),
) -> (Option<i32>, String, std::time::Duration) {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains(needle) {
            break;
        }
    }
    assert!(
        log.contains(needle),
        "the process ended before {needle:?}:\n{log}"
    );
    before(&log);
    let signalled = std::time::Instant::now();
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    for line in lines {
        log.push_str(&line.unwrap());
        log.push('\n');
    }
    let code = child.wait().unwrap().code();
    (code, log, signalled.elapsed())
}

#[test]
fn backup_log_works_with_every_command() {
    // A port nothing listens on: each command fails at runtime (exit 1), never on BACKUP_LOG.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    for args in [
        &["status"][..],
        &["list"],
        &["prune", "--dry-run"],
        &["backup"],
    ] {
        let o = bin()
            .args(args)
            .env("BACKUP_LOG", "debug")
            .env("ETCD_ENDPOINTS", &url)
            .env("ETCD_DIAL_TIMEOUT", "1s")
            .env("BACKUP_BUCKET", "backups")
            .env("AWS_ENDPOINT_URL", &url)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test-secret")
            .env("BACKUP_RETRIES", "0")
            .output()
            .unwrap();
        let out = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {out}");
        assert!(!out.contains("unknown variable"), "{args:?}: {out}");
        assert!(
            out.contains("DEBUG"),
            "{args:?}: the filter is applied: {out}"
        );
    }
}

#[test]
fn verify_with_a_missing_scratch_directory_is_a_runtime_failure_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("small.db.gz");
    std::fs::write(&gz, crate::common::gzipped("small.db")).unwrap();
    let o = bin()
        .arg("verify")
        .arg(&gz)
        .env("BACKUP_TMP_DIR", dir.path().join("missing"))
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("BACKUP_TMP_DIR"), "{out}");
    assert!(!out.contains("cannot read"), "{out}");
    // An input that cannot be read is still the operator's to fix: exit 2.
    let o = bin().args(["verify", "/nonexistent.db"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn verify_of_a_crafted_meta_page_exits_1_and_does_not_abort() {
    use etcd_backup::snapshot::bbolt::field;
    let dir = tempfile::tempdir().unwrap();
    for (what, at, value) in [
        ("pgid", field::PGID, 1u64 << 53),
        ("freelist", field::FREELIST, 99),
    ] {
        let path = dir.path().join(format!("{what}.db"));
        let snap =
            crate::mutate::with_meta_field(&crate::common::read_data("small.db"), at, 8, value);
        std::fs::write(&path, snap).unwrap();
        let o = bin().arg("verify").arg(&path).output().unwrap();
        let out = text(&o);
        assert_eq!(o.status.code(), Some(1), "{what}: {out}");
        assert!(out.contains("is not a valid snapshot"), "{what}: {out}");
    }
}

#[test]
fn sigterm_during_a_long_decode_stops_verify_promptly_and_cleans_up() {
    // A gzip of 4 GiB of zeros, 4 MB on disk: 64 identical members of 64 MiB each, which
    // takes the decoder several seconds to expand into the scratch file.
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        std::io::Write::write_all(&mut member, &zeros).unwrap();
    }
    let member = member.finish().unwrap();
    let gz = dir.path().join("zeros.db.gz");
    std::fs::write(&gz, member.repeat(64)).unwrap();

    let child = bin()
        .arg("verify")
        .arg(&gz)
        .env("BACKUP_TMP_DIR", &scratch)
        .env("BACKUP_LOG", "info,etcd_backup=debug")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (code, out, took) = sigterm_after_line(child, "decoding into a scratch file", |_| {
        // Every thread (main, which runs the async runtime, and the decoding thread) runs at
        // the default niceness.
        threads_at_default_niceness(pid)
    });
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("interrupted by SIGTERM"), "{out}");
    // Far inside the 10 s grace period: the decode watched the signal itself.
    assert!(
        took < std::time::Duration::from_secs(5),
        "took {took:?} to stop: {out}"
    );
    let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().collect();
    assert!(left.is_empty(), "scratch files left: {left:?}");
}

fn threads_at_default_niceness(pid: u32) {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let nice: Vec<String> = tasks
        .map(|t| {
            let stat = std::fs::read_to_string(t.unwrap().path().join("stat")).unwrap();
            // Field 19, counted from the state (field 3) after the command name's ')'.
            let after = &stat[stat.rfind(')').unwrap() + 1..];
            after.split_whitespace().nth(16).unwrap().to_string()
        })
        .collect();
    assert!(nice.len() >= 2, "{nice:?}");
    assert!(
        nice.iter().all(|n| n == "10"),
        "BACKUP_NICE's default on every thread: {nice:?}"
    );
}

#[test]
fn a_client_certificate_expiring_in_days_is_warned_about_and_shown() {
    use chrono::Datelike;
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["etcd-client".into()]).unwrap();
    let expires = chrono::Utc::now() + chrono::TimeDelta::days(3);
    params.not_after =
        rcgen::date_time_ymd(expires.year(), expires.month() as u8, expires.day() as u8);
    let cert = params.self_signed(&key).unwrap();
    let path = |n: &str| dir.path().join(n);
    std::fs::write(path("client.crt"), cert.pem()).unwrap();
    std::fs::write(path("client.key"), key.serialize_pem()).unwrap();
    std::fs::write(path("ca.crt"), cert.pem()).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("https://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let o = bin()
        .args(["status", "-o", "json"])
        .env("ETCD_ENDPOINTS", &endpoint)
        .env("ETCD_CACERT", path("ca.crt"))
        .env("ETCD_CERT", path("client.crt"))
        .env("ETCD_KEY", path("client.key"))
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "no endpoint answers: {out}");
    assert!(out.contains("(ETCD_CERT) expires on"), "{out}");
    assert!(
        out.contains("in 2 days") || out.contains("in 3 days"),
        "{out}"
    );
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let shown = rows[0]["client_cert_not_after"].as_str().unwrap();
    assert!(
        shown.starts_with(&expires.format("%Y-%m-%d").to_string()),
        "{shown}"
    );
    // A certificate valid for a year is not warned about.
    let mut params = rcgen::CertificateParams::new(vec!["etcd-client".into()]).unwrap();
    let later = chrono::Utc::now() + chrono::TimeDelta::days(365);
    params.not_after = rcgen::date_time_ymd(later.year(), later.month() as u8, later.day() as u8);
    std::fs::write(path("client.crt"), params.self_signed(&key).unwrap().pem()).unwrap();
    let o = bin()
        .arg("status")
        .env("ETCD_ENDPOINTS", &endpoint)
        .env("ETCD_CACERT", path("ca.crt"))
        .env("ETCD_CERT", path("client.crt"))
        .env("ETCD_KEY", path("client.key"))
        .output()
        .unwrap();
    let out = text(&o);
    assert!(!out.contains("expires on"), "{out}");
    assert!(
        out.contains("client certificate (ETCD_CERT) valid until"),
        "{out}"
    );
}

#[test]
fn verify_reads_a_file_the_age_cli_encrypted_and_refuses_without_the_key() {
    let tools = crate::common::tools_dir();
    let dir = tempfile::tempdir().unwrap();
    let (key, recipient) = crate::common::age_keygen(dir.path(), "key.txt");
    let (wrong, _) = crate::common::age_keygen(dir.path(), "wrong.txt");
    // small.db, gzip'd by us, encrypted by the reference age CLI.
    let plain = dir.path().join("small.db.gz");
    std::fs::write(&plain, crate::common::gzipped("small.db")).unwrap();
    let sealed = dir.path().join("small.db.gz.age");
    let o = Command::new(tools.join("age"))
        .args(["-r", &recipient, "-o"])
        .arg(&sealed)
        .arg(&plain)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let verify = |path: &std::path::Path, identity: Option<&std::path::Path>| {
        let mut c = bin();
        c.args(["verify", "-o", "json"])
            .arg(path)
            .env("BACKUP_TMP_DIR", &scratch);
        if let Some(i) = identity {
            c.env("BACKUP_AGE_IDENTITY_FILE", i);
        }
        c.output().unwrap()
    };
    let o = verify(&sealed, Some(&key));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["hash"], crate::common::golden_status("small")["hash"]);
    // Without the identity, with a wrong one, and with one flipped byte: exit 1, said why.
    let mut bytes = std::fs::read(&sealed).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 1;
    let tampered = dir.path().join("tampered.db.gz.age");
    std::fs::write(&tampered, bytes).unwrap();
    for (path, id, want) in [
        (&sealed, None, "BACKUP_AGE_IDENTITY_FILE is not set"),
        (&sealed, Some(wrong.as_path()), "no identity matches"),
        (&tampered, Some(key.as_path()), "is not a valid snapshot"),
    ] {
        let o = verify(path, id);
        assert_eq!(o.status.code(), Some(1), "{want}: {}", text(&o));
        assert!(text(&o).contains(want), "{want}: {}", text(&o));
    }
    assert!(
        std::fs::read_dir(&scratch).unwrap().next().is_none(),
        "a scratch file was left"
    );
}
