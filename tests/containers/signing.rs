//! Signed backups against a real S3 server: the attack of someone who holds the bucket's keys
//! but not the cluster, and the ways a signed manifest can be misused, refused; the signature
//! checked by `ssh-keygen`; unsigned backups from before still restorable.

use std::path::Path;

use super::rig::{self, Etcd, Pki, S3};
use super::start;
use crate::cli::text;
use crate::common::{age_keygen, tools_dir};

const PLANTED_KEY: &str = "/registry/clusterrolebindings/attacker-is-cluster-admin";

/// `etcd-backup keygen -f DIR/NAME`: (private key file, public key text).
async fn keygen(dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    let path = dir.join(name);
    let o = rig::run(
        tokio::process::Command::from(crate::cli::bin())
            .args(["keygen", "-f"])
            .arg(&path),
        0,
    )
    .await;
    assert!(text(&o).contains("fingerprint: SHA256:"), "{}", text(&o));
    let public = std::fs::read_to_string(dir.join(format!("{name}.pub"))).unwrap();
    (path, public.trim().to_string())
}

fn restore_cmd(
    pki: &Pki,
    etcd: &Etcd,
    s3: &S3,
    identity: &Path,
    verify: Option<&str>,
) -> tokio::process::Command {
    let mut c = rig::cmd(pki, &etcd.url, s3, "backups");
    c.env("BACKUP_AGE_IDENTITY_FILE", identity);
    if let Some(v) = verify {
        c.env("BACKUP_VERIFY_KEY", v);
    }
    c.arg("restore");
    c
}

/// Whether a restored snapshot holds the attacker's key (read straight from the bbolt file:
/// keys are stored in the clear in etcd's values).
fn holds_planted_key(snapshot: &[u8]) -> bool {
    snapshot
        .windows(PLANTED_KEY.len())
        .any(|w| w == PLANTED_KEY.as_bytes())
}

#[tokio::test]
async fn a_bucket_writer_cannot_hand_a_cluster_to_a_restore_with_a_verify_key() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    let attackers = Etcd::start(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let (identity, recipient) = age_keygen(dir.path(), "age.txt");
    let (signing, public) = keygen(dir.path(), "signing").await;
    let (other_signing, other_public) = keygen(dir.path(), "other").await;
    etcd.load(300).await;
    let pkidir = dir.path().join("pki");
    std::fs::create_dir(&pkidir).unwrap();
    std::fs::write(pkidir.join("ca.key"), b"not a real key").unwrap();

    // Before signing: one unsigned backup. Then signed ones, with a files archive.
    let backup = |secs: i64| {
        let mut c = rig::backup_cmd(&pki, &etcd.url, &s3, "backups");
        c.args(["--now", &rig::later(secs)])
            .env("BACKUP_AGE_RECIPIENTS", &recipient);
        c
    };
    rig::run(backup(0), 0).await;
    let unsigned = s3.backups("backups").await[0].clone();
    rig::run(
        backup(10)
            .env("BACKUP_SIGNING_KEY_FILE", &signing)
            .env("BACKUP_INCLUDE_PATHS", &pkidir),
        0,
    )
    .await;
    let real = newest(&s3).await;
    let real_manifest = s3.get("backups", &format!("{real}.json")).await.0;
    let real_signature = s3.get("backups", &format!("{real}.json.sig")).await.0;
    let manifest: serde_json::Value = serde_json::from_slice(&real_manifest).unwrap();
    assert_eq!(manifest["object-key"], real.as_str());
    assert_eq!(
        manifest["stored-sha256"],
        etcd_backup::snapshot::verify::hex(&sha2::Digest::finalize(sha2::Digest::chain_update(
            <sha2::Sha256 as sha2::Digest>::new(),
            s3.get("backups", &real).await.0
        )))
    );

    // The operator's own tool checks a signature: ssh-keygen -Y verify.
    let allowed = dir.path().join("allowed_signers");
    std::fs::write(&allowed, format!("etcd-backup {public}\n")).unwrap();
    let sig_file = dir.path().join("manifest.sig");
    std::fs::write(&sig_file, &real_signature).unwrap();
    let verify = |signature: &Path, body: &[u8]| {
        let mut child = std::process::Command::new("ssh-keygen")
            .args(["-Y", "verify", "-f"])
            .arg(&allowed)
            .args(["-I", "etcd-backup", "-n", "etcd-backup", "-s"])
            .arg(signature)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ssh-keygen (openssh-client; .ci/setup.sh installs it)");
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), body).unwrap();
        child.wait_with_output().unwrap()
    };
    let o = verify(&sig_file, &real_manifest);
    assert!(o.status.success(), "ssh-keygen: {}", text(&o));
    let mut changed = real_manifest.clone();
    changed.extend_from_slice(b" ");
    assert!(!verify(&sig_file, &changed).status.success());

    // The attack: another etcd with one extra ClusterRoleBinding, gzipped, encrypted to the
    // recipient every manifest lists, under a newer name, with a manifest of its own figures
    // (computed by our own `verify`) and, for good measure, the real backup's signature.
    attackers.load(10).await;
    attackers
        .client()
        .clone()
        .put(PLANTED_KEY, "cluster-admin for the attacker", None)
        .await
        .unwrap();
    let planted_db = attackers.snapshot().await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &planted_db).unwrap();
    let gz_file = dir.path().join("planted.db.gz");
    std::fs::write(&gz_file, gz.finish().unwrap()).unwrap();
    let age_file = dir.path().join("planted.db.gz.age");
    let o = std::process::Command::new(tools_dir().join("age"))
        .args(["-r", &recipient, "-o"])
        .arg(&age_file)
        .arg(&gz_file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = rig::run(
        tokio::process::Command::from(crate::cli::bin())
            .env("BACKUP_AGE_IDENTITY_FILE", &identity)
            .args(["verify", "-o", "json"])
            .arg(&age_file),
        0,
    )
    .await;
    let figures: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let planted = name_at(&real, 3600);
    let object = std::fs::read(&age_file).unwrap();
    let mut forged = manifest.clone();
    forged["object-key"] = planted.clone().into();
    forged["snapshot-sha256"] = figures["sha256"].clone();
    forged["stored-size"] = object.len().to_string().into();
    for (ours, theirs) in [
        ("etcd-revision", "revision"),
        ("etcd-hash", "hash"),
        ("etcd-total-keys", "totalKey"),
        ("etcd-db-size", "totalSize"),
        ("etcd-hashkv", "hashKV"),
        ("etcd-hashkv-compact-revision", "hashKVCompactRevision"),
        ("etcd-hashkv-revision", "hashKVRevision"),
    ] {
        forged[ours] = figures[theirs].to_string().into();
    }
    forged.as_object_mut().unwrap().remove("files-archive");
    s3.put("backups", &planted.clone(), object.clone()).await;
    s3.put(
        "backups",
        &format!("{planted}.json"),
        serde_json::to_vec_pretty(&forged).unwrap(),
    )
    .await;
    s3.put(
        "backups",
        &format!("{planted}.json.sig"),
        real_signature.clone(),
    )
    .await;

    // Without a verify key, the attack works, and restore says the origin was not checked.
    let out = dir.path().join("restored.db");
    let o = rig::run(
        restore_cmd(&pki, &etcd, &s3, &identity, None)
            .args(["latest", "--output"])
            .arg(&out),
        0,
    )
    .await;
    assert!(
        text(&o).contains("BACKUP_VERIFY_KEY is not set"),
        "{}",
        text(&o)
    );
    assert!(holds_planted_key(&std::fs::read(&out).unwrap()));
    std::fs::remove_file(&out).unwrap();
    // And a backup from before signing restores as it always did.
    rig::run(
        restore_cmd(&pki, &etcd, &s3, &identity, None)
            .arg(&unsigned)
            .arg("--output")
            .arg(&out),
        0,
    )
    .await;
    std::fs::remove_file(&out).unwrap();

    // More ways to misuse a signed manifest: the real manifest and signature, unchanged, beside
    // the planted object; the real backup copied under a newer name with its manifest and
    // signature; a backup signed by a key that is not a verify key.
    let moved = name_at(&real, 1800);
    s3.put("backups", &moved, object.clone()).await;
    s3.put("backups", &format!("{moved}.json"), real_manifest.clone())
        .await;
    s3.put(
        "backups",
        &format!("{moved}.json.sig"),
        real_signature.clone(),
    )
    .await;
    let copied = name_at(&real, 7200);
    for suffix in ["", ".json", ".json.sig"] {
        let (body, _) = s3.get("backups", &format!("{real}{suffix}")).await;
        s3.put("backups", &format!("{copied}{suffix}"), body).await;
    }
    rig::run(
        backup(10_800).env("BACKUP_SIGNING_KEY_FILE", &other_signing),
        0,
    )
    .await;
    let foreign = newest(&s3).await;

    // With the verify key, latest is the real backup, and each newer one is named with why.
    let o = rig::run(
        restore_cmd(&pki, &etcd, &s3, &identity, Some(&public))
            .args(["latest", "--output"])
            .arg(&out),
        0,
    )
    .await;
    let said = text(&o);
    assert!(!holds_planted_key(&std::fs::read(&out).unwrap()));
    assert!(
        said.contains(&format!("Passed over {foreign}: it is signed by")),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "Passed over {copied}: its signed manifest is for {real}"
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "Passed over {planted}: its signature does not match"
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "Passed over {moved}: its signed manifest is for {real}"
        )),
        "{said}"
    );
    let restored = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    let (real_object, _) = s3.get("backups", &real).await;
    assert_eq!(
        restored.len(),
        crate::common::age_decrypt_gunzip(&identity, &real_object, dir.path()).len()
    );

    // Named, each of them is refused, exit 1, nothing written.
    for (name, why) in [
        (&planted, "its signature does not match its manifest"),
        (&copied, "not this object"),
        (&moved, "not this object"),
        (&foreign, "which is not one of BACKUP_VERIFY_KEY"),
        (&unsigned, "--allow-unsigned"),
    ] {
        let o = rig::run(
            restore_cmd(&pki, &etcd, &s3, &identity, Some(&public))
                .arg(name.as_str())
                .arg("--output")
                .arg(&out),
            1,
        )
        .await;
        assert!(text(&o).contains(why), "{name}: {}", text(&o));
        assert!(!out.exists() && !dir.path().join("restored.db.part").exists());
    }
    // A bad signature is never allowed; the unsigned backup from before is, when named.
    rig::run(
        restore_cmd(&pki, &etcd, &s3, &identity, Some(&public))
            .arg(&planted)
            .args(["--allow-unsigned", &planted, "--output"])
            .arg(&out),
        1,
    )
    .await;
    rig::run(
        restore_cmd(&pki, &etcd, &s3, &identity, Some(&public))
            .arg(&unsigned)
            .args(["--allow-unsigned", &unsigned, "--output"])
            .arg(&out),
        0,
    )
    .await;
    std::fs::remove_file(&out).unwrap();

    // The files archive is checked before a byte is extracted: once with one changed byte.
    let files_dir = dir.path().join("files");
    rig::run(
        restore_cmd(&pki, &etcd, &s3, &identity, Some(&public))
            .arg(&real)
            .arg("--files")
            .arg(&files_dir)
            .arg("--output")
            .arg(&out),
        0,
    )
    .await;
    let extracted = files_dir
        .join(pkidir.strip_prefix("/").unwrap())
        .join("ca.key");
    assert_eq!(std::fs::read(&extracted).unwrap(), b"not a real key");
    let files_name = manifest["files-archive"].as_str().unwrap().to_string();
    let (mut archive, _) = s3.get("backups", &format!("etcd/{files_name}")).await;
    let at = archive.len() / 2;
    archive[at] ^= 1;
    s3.put("backups", &format!("etcd/{files_name}"), archive)
        .await;
    let files_dir2 = dir.path().join("files2");
    std::fs::remove_file(&out).unwrap();
    let o = rig::run(
        restore_cmd(&pki, &etcd, &s3, &identity, Some(&public))
            .arg(&real)
            .arg("--files")
            .arg(&files_dir2)
            .arg("--output")
            .arg(&out),
        1,
    )
    .await;
    assert!(text(&o).contains("refusing to extract"), "{}", text(&o));
    assert_eq!(std::fs::read_dir(&files_dir2).unwrap().count(), 0);

    // check counts only what passes; list shows which are signed.
    let o = rig::run(
        rig::cmd(&pki, &etcd.url, &s3, "backups")
            .env("BACKUP_VERIFY_KEY", format!("{other_public},{public}"))
            .args([
                "check",
                "--max-age",
                "1000d",
                "-o",
                "json",
                "--now",
                &rig::later(20_000),
            ]),
        0,
    )
    .await;
    let f: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(f["newest"], foreign.as_str(), "both keys count (rotation)");
    let o = rig::run(
        rig::cmd(&pki, &etcd.url, &s3, "backups")
            .env("BACKUP_VERIFY_KEY", &public)
            .args(["check", "--max-age", "1000d", "-o", "json"]),
        0,
    )
    .await;
    let f: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(f["newest"], real.as_str());
    assert_eq!(f["refused"].as_array().unwrap().len(), 4, "{f}");
    let o = rig::run(
        rig::cmd(&pki, &etcd.url, &s3, "backups")
            .env("BACKUP_VERIFY_KEY", &public)
            .args(["list", "-o", "json"]),
        0,
    )
    .await;
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let signed: Vec<(&str, &str)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["key"].as_str().unwrap(), r["signed"].as_str().unwrap()))
        .collect();
    assert_eq!(
        signed,
        [
            (foreign.as_str(), "BAD"),
            (copied.as_str(), "BAD"),
            (planted.as_str(), "BAD"),
            (moved.as_str(), "BAD"),
            (real.as_str(), "ok"),
            (unsigned.as_str(), "no"),
        ]
    );

    // doctor: the two keys must match.
    let o = rig::run(
        rig::cmd(&pki, &etcd.url, &s3, "backups")
            .env("BACKUP_SIGNING_KEY_FILE", &signing)
            .env("BACKUP_VERIFY_KEY", &other_public)
            .args(["doctor", "-o", "json"]),
        1,
    )
    .await;
    assert!(
        text(&o).contains("which is not one of BACKUP_VERIFY_KEY"),
        "{}",
        text(&o)
    );
}

/// The full key of the newest backup.
async fn newest(s3: &S3) -> String {
    let mut names = s3.backups("backups").await;
    names.sort();
    names.pop().unwrap()
}

/// A backup's full key `secs` later than `name`'s, same prefix and suffix.
fn name_at(name: &str, secs: i64) -> String {
    let (prefix, name) = name.rsplit_once('/').unwrap();
    let key: etcd_backup::key::BackupKey = name.parse().unwrap();
    let later = etcd_backup::key::BackupKey {
        time: key.time + chrono::TimeDelta::seconds(secs),
        ..key
    };
    format!("{prefix}/{later}")
}

/// A job whose signature cannot be written publishes nothing: the backup it uploaded is deleted
/// again, with its files archive, and the run fails saying what to check.
#[tokio::test]
async fn a_backup_whose_signature_cannot_be_written_is_taken_back() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let (signing, _) = keygen(dir.path(), "signing").await;
    let (_, recipient) = age_keygen(dir.path(), "age.txt");
    let pkidir = dir.path().join("pki");
    std::fs::create_dir(&pkidir).unwrap();
    std::fs::write(pkidir.join("ca.crt"), b"certificate").unwrap();
    etcd.load(100).await;
    let proxy = super::proxy::refuse_puts(rig::port(&s3.endpoint), ".json.sig").await;
    let o = rig::run(
        rig::backup_cmd(&pki, &etcd.url, &s3, "backups")
            .env(
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", proxy.port),
            )
            .env("BACKUP_SIGNING_KEY_FILE", &signing)
            .env("BACKUP_AGE_RECIPIENTS", &recipient)
            .env("BACKUP_INCLUDE_PATHS", &pkidir)
            .env("BACKUP_RETRIES", "0"),
        1,
    )
    .await;
    let said = text(&o);
    assert!(
        said.contains("writing the signature failed, so the backup is deleted again"),
        "{said}"
    );
    assert!(said.contains("check the bucket's permissions"), "{said}");
    assert!(
        proxy.connections.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "no signature was refused"
    );
    assert_eq!(s3.list("backups").await, Vec::<String>::new(), "{said}");
    assert_eq!(s3.open_uploads("backups").await, Vec::<String>::new());
}

/// The parts of a signed segment's plaintext: (everything up to and including END, the SHA-256
/// after it, the signature's length field and armor).
fn segment_parts(plain: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let armor = b"-----BEGIN SSH SIGNATURE-----";
    let sig_at = plain
        .windows(armor.len())
        .rposition(|w| w == armor)
        .expect("a signed segment")
        - 4;
    (
        &plain[..sig_at - 32],
        &plain[sig_at - 32..sig_at],
        &plain[sig_at..],
    )
}

#[tokio::test]
async fn a_rewritten_segment_of_a_signed_stream_is_refused_with_a_verify_key() {
    require_docker!();
    let (pki, etcd, s3) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let (signing, public) = keygen(dir.path(), "signing").await;
    let mut c = rig::cmd(&pki, &etcd.url, &s3, "backups");
    c.env("BACKUP_SIGNING_KEY_FILE", &signing);
    let stream = super::stream::Streaming::spawn_with(c);
    stream.until("watching", 1).await;
    let mut kv = etcd.client().kv_client();
    let mut last = 0;
    for i in 0..20 {
        let r = kv.put(format!("/v/{i}"), "value-ok", None).await.unwrap();
        last = r.header().unwrap().revision();
    }
    super::stream::until_safe(&s3, last, &stream).await;
    let (code, _, log) = stream.stop().await;
    assert_eq!(code, Some(0), "{log}");

    // `list --generations` checks the start record's signature with the verify key.
    for (key, want) in [(Some(&public), "ok"), (None, "unchecked")] {
        let mut c = rig::cmd(&pki, &etcd.url, &s3, "backups");
        if let Some(k) = key {
            c.env("BACKUP_VERIFY_KEY", k);
        }
        let o = rig::run(c.args(["list", "--generations", "-o", "json"]), 0).await;
        let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(rows[0]["signed"], want, "{}", text(&o));
    }

    // The newest segment, as a bucket writer finds it.
    let newest = s3
        .list("backups")
        .await
        .into_iter()
        .filter(|k| k.contains("/stream/") && k.ends_with(".seg.zst"))
        .max()
        .unwrap();
    let stored = s3.get("backups", &newest).await.0;
    let plain = zstd::decode_all(&stored[..]).unwrap();
    assert_eq!(&plain[..16], b"etcd-backup-seg2", "signed segments say so");
    let (signed_part, sha, sig) = segment_parts(&plain);

    // The operator's own tool checks a segment's signature: its header and SHA-256, each on a
    // line, in namespace etcd-backup-segment.
    let header_len = u32::from_be_bytes(plain[16..20].try_into().unwrap()) as usize;
    let mut message = plain[20..20 + header_len].to_vec();
    message.push(b'\n');
    message.extend(
        sha.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .bytes(),
    );
    message.push(b'\n');
    let allowed = dir.path().join("allowed_signers");
    std::fs::write(&allowed, format!("etcd-backup {public}\n")).unwrap();
    let sig_file = dir.path().join("segment.sig");
    std::fs::write(&sig_file, &sig[4..]).unwrap();
    let verify = |body: &[u8]| {
        let mut child = std::process::Command::new("ssh-keygen")
            .args(["-Y", "verify", "-f"])
            .arg(&allowed)
            .args(["-I", "etcd-backup", "-n", "etcd-backup-segment", "-s"])
            .arg(&sig_file)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), body).unwrap();
        child.wait_with_output().unwrap()
    };
    let o = verify(&message);
    assert!(o.status.success(), "ssh-keygen: {}", text(&o));

    // The attack: one value changed, the inner SHA-256 recomputed, the signature kept (the
    // writer has no key), zstd again, the same name.
    let at = signed_part
        .windows(8)
        .position(|w| w == b"value-ok")
        .unwrap();
    let mut forged = signed_part.to_vec();
    forged[at..at + 8].copy_from_slice(b"value-no");
    let new_sha = <sha2::Sha256 as sha2::Digest>::digest(&forged);
    assert!(!verify(&{
        let mut m = plain[20..20 + header_len].to_vec();
        m.push(b'\n');
        m.extend(
            new_sha
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .bytes(),
        );
        m.push(b'\n');
        m
    })
    .status
    .success());
    forged.extend_from_slice(&new_sha);
    forged.extend_from_slice(sig);
    s3.put(
        "backups",
        &newest,
        zstd::encode_all(&forged[..], 3).unwrap(),
    )
    .await;

    let restore = |verify_key: Option<&str>, out: &Path| {
        let mut c = rig::cmd(&pki, &etcd.url, &s3, "backups");
        if let Some(v) = verify_key {
            c.env("BACKUP_VERIFY_KEY", v);
        }
        c.args(["restore", "--to-revision", &last.to_string(), "-O"])
            .arg(out);
        c
    };
    let refused = dir.path().join("refused.db");
    let o = rig::run(restore(Some(&public), &refused), 1).await;
    assert!(
        text(&o).contains("its signature does not match its contents")
            && text(&o).contains(newest.rsplit('/').next().unwrap()),
        "{}",
        text(&o)
    );
    assert!(!refused.exists());
    // The bite: without the verify key the planted value is restored.
    let planted = dir.path().join("planted.db");
    rig::run(restore(None, &planted), 0).await;
    let bytes = std::fs::read(&planted).unwrap();
    assert!(bytes.windows(8).any(|w| w == b"value-no"));
}
