//! Bucket settings that object_store does not read: versioning, object lock, lifecycle rules,
//! and an object's retention. Each is one S3 GET, signed with object_store's SigV4 signer and
//! the store's own credential chain (static keys, IRSA, instance profile), sent path-style as
//! the store's requests are. What the bucket answers is read as hostile: bodies are capped,
//! and a setting we cannot parse is reported as such, never guessed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::aws::{AwsAuthorizer, AwsCredentialProvider};
use object_store::client::HttpRequestBody;
use url::Url;

/// Bucket answers larger than this are not settings we know.
const MAX_BODY: usize = 1 << 20;

/// Signs and sends bucket-level GETs.
#[derive(Clone)]
pub struct Bucket {
    credentials: AwsCredentialProvider,
    http: reqwest::Client,
    /// `{endpoint}/{bucket}`.
    base: Url,
    region: String,
    /// Retries of a failed GET (`BACKUP_RETRIES`), as the store's own requests make.
    retries: usize,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        write!(f, "Bucket({})", self.base)
    }
}

/// Why a bucket setting could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading {what} of {url}: {why}")]
pub struct BucketError {
    pub what: &'static str,
    pub url: String,
    pub why: String,
}

/// A bucket's versioning state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versioning {
    /// Never enabled.
    Off,
    Enabled,
    Suspended,
}

/// A bucket's object lock configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectLock {
    /// The default retention stamped on new objects: mode and its period as S3 gives it
    /// (`1 days`, `2 years`), if there is one.
    pub default_retention: Option<(String, String)>,
}

/// The parts of a lifecycle rule we look for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LifecycleRule {
    pub enabled: bool,
    /// The rule's prefix (filter or legacy form); empty for the whole bucket.
    pub prefix: String,
    pub abort_incomplete_days: Option<u32>,
    pub noncurrent_expiration_days: Option<u32>,
}

impl Bucket {
    pub fn new(
        credentials: AwsCredentialProvider,
        endpoint: Option<&Url>,
        bucket: &str,
        region: &str,
        timeout: Duration,
        retries: usize,
    ) -> Bucket {
        let endpoint = endpoint
            .map(|e| e.as_str().trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let base = Url::parse(&format!("{endpoint}/{bucket}")).expect("a validated endpoint");
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("a client without custom TLS builds");
        Bucket {
            credentials,
            http,
            base,
            region: region.to_string(),
            retries,
        }
    }

    /// [`Bucket::get_once`], retried with [`backoff`] while the failure is [`retryable`].
    async fn get(
        &self,
        what: &'static str,
        path: &str,
        query: &str,
    ) -> Result<Option<String>, BucketError> {
        let mut n = 0;
        loop {
            match self.get_once(what, path, query).await {
                Err((e, status)) if retryable(status) && n < self.retries => {
                    tracing::debug!("{e}; retrying");
                    tokio::time::sleep(backoff(n as u32)).await;
                    n += 1;
                }
                r => return r.map_err(|(e, _)| e),
            }
        }
    }

    /// GET `{base}{path}?{query}=`; `None` when S3 says the setting or object is not there.
    /// A failure comes with the HTTP status, if one came back.
    async fn get_once(
        &self,
        what: &'static str,
        path: &str,
        query: &str,
    ) -> Result<Option<String>, (BucketError, Option<u16>)> {
        let url = format!("{}{path}?{query}=", self.base);
        let fail = |why: String| {
            (
                BucketError {
                    what,
                    url: url.clone(),
                    why,
                },
                None,
            )
        };
        let credential = self
            .credentials
            .get_credential()
            .await
            .map_err(|e| fail(format!("getting credentials: {e}")))?;
        let mut request = http::Request::get(&url)
            .body(HttpRequestBody::empty())
            .map_err(|e| fail(e.to_string()))?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| fail(format!("signing: {e}")))?;
        let mut send = self.http.get(&url);
        for (name, value) in request.headers() {
            send = send.header(name, value);
        }
        let mut response = send.send().await.map_err(|e| fail(crate::describe(&e)))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| fail(e.to_string()))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(fail(format!("an answer over {MAX_BODY} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        match status.as_u16() {
            200 => Ok(Some(body)),
            404 => Ok(None),
            code => {
                let (e, _) = fail(format!(
                    "HTTP {status}: {}",
                    tag(&body, "Code")
                        .unwrap_or(body.trim())
                        .chars()
                        .take(200)
                        .collect::<String>()
                ));
                Err((e, Some(code)))
            }
        }
    }

    pub async fn versioning(&self) -> Result<Versioning, BucketError> {
        let body = self.get("the versioning", "", "versioning").await?;
        Ok(parse_versioning(body.as_deref().unwrap_or_default()))
    }

    /// `None` when object lock is not enabled on the bucket.
    pub async fn object_lock(&self) -> Result<Option<ObjectLock>, BucketError> {
        let body = self
            .get("the object lock configuration", "", "object-lock")
            .await?;
        Ok(body.as_deref().and_then(parse_object_lock))
    }

    pub async fn lifecycle(&self) -> Result<Vec<LifecycleRule>, BucketError> {
        let body = self.get("the lifecycle rules", "", "lifecycle").await?;
        Ok(parse_lifecycle(body.as_deref().unwrap_or_default()))
    }

    /// The date before which the object `key` (its current version) may not be deleted, if
    /// it has one.
    pub async fn retain_until(&self, key: &str) -> Result<Option<DateTime<Utc>>, BucketError> {
        let path = format!("/{}", encode_path(key));
        let body = self.get("the retention", &path, "retention").await?;
        Ok(body
            .as_deref()
            .and_then(|b| tag(b, "RetainUntilDate"))
            .and_then(|d| DateTime::parse_from_rfc3339(d.trim()).ok())
            .map(|d| d.with_timezone(&Utc)))
    }
}

/// What a SigV4 path leaves as it is: RFC 3986's unreserved characters and `/`.
const PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Percent-encodes a key for a path, keeping `/` (S3's rule for SigV4 paths).
fn encode_path(key: &str) -> String {
    percent_encoding::utf8_percent_encode(key, PATH).to_string()
}

/// Whether a failed attempt is worth another: the network, a timeout, throttling and server
/// errors are passing; a refusal (403, a bad request) is not.
pub fn retryable(status: Option<u16>) -> bool {
    match status {
        None => true,
        Some(s) => s == 429 || (500..=599).contains(&s),
    }
}

/// The wait before retry `n` (from 0): object_store's schedule, 100 ms doubling up to 15 s.
pub fn backoff(n: u32) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(1u32.checked_shl(n).unwrap_or(u32::MAX))
        .min(Duration::from_secs(15))
}

/// The text of the first `<name>...</name>` in `xml`, if any.
pub fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    tags(xml, name).next()
}

/// The text of every `<name>...</name>` in `xml`, in order (S3's answers are flat enough).
pub fn tags<'a>(xml: &'a str, name: &str) -> impl Iterator<Item = &'a str> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut rest = xml;
    std::iter::from_fn(move || {
        let start = rest.find(&open)? + open.len();
        let len = rest[start..].find(&close)?;
        let text = &rest[start..start + len];
        rest = &rest[start + len + close.len()..];
        Some(text)
    })
}

pub fn parse_versioning(xml: &str) -> Versioning {
    match tag(xml, "Status").map(str::trim) {
        Some("Enabled") => Versioning::Enabled,
        Some("Suspended") => Versioning::Suspended,
        _ => Versioning::Off,
    }
}

pub fn parse_object_lock(xml: &str) -> Option<ObjectLock> {
    if tag(xml, "ObjectLockEnabled").map(str::trim) != Some("Enabled") {
        return None;
    }
    let default_retention = tag(xml, "DefaultRetention").and_then(|d| {
        let mode = tag(d, "Mode")?.trim().to_string();
        let period = match (tag(d, "Days"), tag(d, "Years")) {
            (Some(n), _) => format!("{} days", n.trim()),
            (_, Some(n)) => format!("{} years", n.trim()),
            _ => return None,
        };
        Some((mode, period))
    });
    Some(ObjectLock { default_retention })
}

pub fn parse_lifecycle(xml: &str) -> Vec<LifecycleRule> {
    let days = |rule: &str, outer: &str, inner: &str| {
        tag(rule, outer)
            .and_then(|o| tag(o, inner))
            .and_then(|d| d.trim().parse().ok())
    };
    tags(xml, "Rule")
        .map(|rule| LifecycleRule {
            enabled: tag(rule, "Status").map(str::trim) == Some("Enabled"),
            prefix: tag(rule, "Prefix").unwrap_or_default().trim().to_string(),
            abort_incomplete_days: days(
                rule,
                "AbortIncompleteMultipartUpload",
                "DaysAfterInitiation",
            ),
            noncurrent_expiration_days: days(rule, "NoncurrentVersionExpiration", "NoncurrentDays"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_retried_and_how_long_it_waits() {
        for (status, again) in [
            (None, true),
            (Some(500), true),
            (Some(503), true),
            (Some(429), true),
            (Some(400), false),
            (Some(403), false),
            (Some(301), false),
        ] {
            assert_eq!(retryable(status), again, "{status:?}");
        }
        let waits: Vec<u64> = [0, 1, 2, 7, 8, 40]
            .into_iter()
            .map(|n| backoff(n).as_millis() as u64)
            .collect();
        assert_eq!(waits, [100, 200, 400, 12_800, 15_000, 15_000]);
    }

    #[test]
    fn settings_parse_from_s3s_answers() {
        assert_eq!(
            parse_versioning(
                "<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>"
            ),
            Versioning::Enabled
        );
        assert_eq!(
            parse_versioning("<VersioningConfiguration/>"),
            Versioning::Off
        );
        assert_eq!(
            parse_object_lock("<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>GOVERNANCE</Mode><Days>1</Days></DefaultRetention></Rule></ObjectLockConfiguration>"),
            Some(ObjectLock { default_retention: Some(("GOVERNANCE".into(), "1 days".into())) })
        );
        assert_eq!(
            parse_object_lock("<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled></ObjectLockConfiguration>"),
            Some(ObjectLock { default_retention: None })
        );
        assert_eq!(parse_object_lock("<ObjectLockConfiguration/>"), None);
        let rules = parse_lifecycle("<LifecycleConfiguration><Rule><ID>a</ID><Filter><Prefix>etcd/</Prefix></Filter><Status>Enabled</Status><AbortIncompleteMultipartUpload><DaysAfterInitiation>7</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule><Rule><Status>Disabled</Status><NoncurrentVersionExpiration><NoncurrentDays>30</NoncurrentDays></NoncurrentVersionExpiration></Rule></LifecycleConfiguration>");
        assert_eq!(
            rules,
            [
                LifecycleRule {
                    enabled: true,
                    prefix: "etcd/".into(),
                    abort_incomplete_days: Some(7),
                    noncurrent_expiration_days: None
                },
                LifecycleRule {
                    enabled: false,
                    prefix: "".into(),
                    abort_incomplete_days: None,
                    noncurrent_expiration_days: Some(30)
                }
            ]
        );
        // Hostile: unclosed tags and garbage parse to nothing rather than panic.
        assert_eq!(parse_lifecycle("<Rule><Status>Enabled"), []);
        assert_eq!(
            encode_path("etcd/20260529-060000.db.gz"),
            "etcd/20260529-060000.db.gz"
        );
        assert_eq!(encode_path("a b+c"), "a%20b%2Bc");
    }
}
