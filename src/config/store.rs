//! The store section: the bucket, our prefix in it, and how to reach and sign for it. The
//! `AWS_*` variables are handed to the S3 client whole (its credential chain reads them), but
//! the combinations it would silently accept half of are checked here.

use std::time::Duration;

use url::Url;

use super::reader::{http_url, Reader};
use super::vars::Key;
use super::Secret;

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

pub(super) fn store(r: &mut Reader<'_>) -> Option<StoreConfig> {
    let before = r.count();
    let bucket = bucket(r);
    let prefix = r.parse(Key::BackupPrefix, "expected a key prefix that is empty or ends with '/', without a leading '/' or '//' (e.g. etcd/ or clusters/prod/)", |p| {
        (p.is_empty() || (p.ends_with('/') && !p.starts_with('/') && !p.contains("//"))).then(|| p.to_string())
    });
    let storage_class = r.parse(
        Key::BackupStorageClass,
        "expected a storage class name such as STANDARD or STANDARD_IA",
        |v| {
            v.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                .then(|| v.to_string())
        },
    );
    let endpoint = r.parse(Key::AwsEndpointUrl, "expected an http(s) URL such as http://127.0.0.1:9000 or https://fsn1.your-objectstorage.com", http_url);
    let region = r.get(Key::AwsRegion).map(|(_, v)| v.to_string());
    credentials(r);
    let retries = r.parse(
        Key::BackupRetries,
        "expected a whole number from 0 to 20",
        |v| v.parse::<usize>().ok().filter(|n| *n <= 20),
    );
    let request_timeout = r.duration(Key::BackupS3Timeout);
    let aws = r
        .env
        .iter()
        .filter(|(k, v)| k.starts_with("AWS_") && !v.is_empty())
        .map(|(k, v)| (k.to_string(), Secret::new(v.to_string())))
        .collect();
    let (Some(bucket), Some(prefix), Some(region), Some(retries), Some(request_timeout)) =
        (bucket, prefix, region, retries, request_timeout)
    else {
        return None;
    };
    (r.count() == before).then_some(StoreConfig {
        bucket,
        prefix,
        storage_class,
        endpoint,
        region,
        retries,
        request_timeout,
        aws,
    })
}

fn bucket(r: &mut Reader<'_>) -> Option<String> {
    let name = Key::BackupBucket.name();
    match r.get(Key::BackupBucket) {
        None => {
            r.problem(
                name,
                None,
                "is not set: expected the name of the bucket to store backups in",
            );
            None
        }
        Some((_, b)) if !valid_bucket(b) => {
            r.problem(
                name,
                Some(b),
                "expected a bucket name: 3-63 lowercase letters, digits, '.', '-' or '_'",
            );
            None
        }
        Some((_, b)) => Some(b.to_string()),
    }
}

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b".-_".contains(&c))
}

/// Server-side encryption and static credentials: pairs that must come whole.
fn credentials(r: &mut Reader<'_>) {
    let sse = r.parse(
        Key::AwsServerSideEncryption,
        "expected AES256 (SSE-S3), aws:kms (SSE-KMS) or aws:kms:dsse (DSSE-KMS)",
        |v| {
            ["AES256", "aws:kms", "aws:kms:dsse"]
                .into_iter()
                .find(|t| *t == v)
        },
    );
    if let Some((used, _)) = r.raw(Key::AwsSseKmsKeyId) {
        if !matches!(sse, Some("aws:kms" | "aws:kms:dsse")) {
            r.problem(
                used,
                None,
                "is set, but AWS_SERVER_SIDE_ENCRYPTION is not aws:kms or aws:kms:dsse: expected both, or neither",
            );
        }
    }
    let secret = r.raw(Key::AwsSecretAccessKey).map(|(_, v)| v);
    let id = r.is_set(Key::AwsAccessKeyId);
    if secret.is_some() && !id {
        // The value goes in like any other; the table marks it secret and it never shows.
        r.problem(
            Key::AwsSecretAccessKey.name(),
            secret,
            "is set but AWS_ACCESS_KEY_ID is not: expected both, or neither (for a role)",
        );
    }
    if id && secret.is_none() {
        r.problem(
            Key::AwsAccessKeyId.name(),
            None,
            "is set but AWS_SECRET_ACCESS_KEY is not: expected both, or neither (for a role)",
        );
    }
}
