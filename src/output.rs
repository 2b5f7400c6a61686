//! What the commands print on stdout: tables for people, JSON for scripts. Logs go to stderr.

use std::fmt::Write;

use serde::Serialize;

use crate::compress::Codec;
use crate::etcd::MemberStatus;
use crate::retention::Plan;
use crate::snapshot::verify::{hex, Verified};
use crate::store::Listed;

/// `-o table|json`: a table for people, one line of JSON for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

impl Format {
    /// `value` as one line of JSON, or as the table that `table` draws of it.
    pub fn render<T: Serialize>(
        self,
        value: &T,
        table: impl FnOnce(&T) -> String,
    ) -> serde_json::Result<String> {
        match self {
            Format::Json => Ok(format!("{}\n", serde_json::to_string(value)?)),
            Format::Table => Ok(table(value)),
        }
    }
}

/// Pads columns to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
    out
}

pub fn verified_json(v: &Verified, codec: Codec) -> serde_json::Value {
    let mut json = serde_json::to_value(&v.status).expect("serializable");
    json["sha256"] = hex(&v.sha256).into();
    json["compression"] = codec.to_string().into();
    json
}

pub fn verified_table(v: &Verified, codec: Codec) -> String {
    let s = &v.status;
    let opt = |o: Option<String>| o.unwrap_or_else(|| "-".into());
    let rows = [
        ("hash", s.hash.to_string()),
        ("revision", s.revision.to_string()),
        ("total keys", s.total_key.to_string()),
        ("total size", s.total_size.to_string()),
        ("sha256", hex(&v.sha256)),
        ("compression", codec.to_string()),
        (
            "consistent index",
            opt(s.consistent_index.map(|c| c.to_string())),
        ),
        ("term", opt(s.term.map(|c| c.to_string()))),
        ("storage version", opt(s.storage_version.clone())),
        (
            "hashKV",
            opt(s
                .hash_kv
                .map(|h| h.hash.to_string())
                .or_else(|| s.hash_kv_skipped.clone())),
        ),
        (
            "hashKVCompactRevision",
            opt(s.hash_kv.map(|h| h.compact_revision.to_string())),
        ),
    ];
    rows.iter().map(|(k, v)| format!("{k:<22} {v}\n")).collect()
}

/// One backup in `list`: the listing, its metadata, and what retention would do with it.
#[derive(Debug, Clone, Serialize)]
pub struct ListRow {
    pub key: String,
    pub time: String,
    pub stored_bytes: u64,
    pub raw_bytes: Option<u64>,
    pub revision: Option<i64>,
    pub compression: String,
    /// "age" when the object is encrypted, "none" otherwise.
    pub encryption: String,
    /// The files archive: "-" when the backup has none, "ok", or "missing" (the backup is
    /// incomplete: its manifest names an archive the bucket does not hold).
    pub files: String,
    pub keep: bool,
    pub reason: String,
    /// On a bucket with object lock: the date before which S3 refuses to delete the backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<String>,
}

pub fn list_rows(
    prefix: &str,
    backups: &[Listed],
    meta: &[Vec<(String, String)>],
    plan: &Plan,
) -> Vec<ListRow> {
    backups
        .iter()
        .zip(meta)
        .map(|(b, m)| {
            let get = |k: &str| m.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let d = plan.decisions.iter().find(|d| d.key == b.key);
            ListRow {
                key: format!("{prefix}{}", b.key),
                time: b.key.time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                stored_bytes: b.size,
                raw_bytes: get("snapshot-size").and_then(|v| v.parse().ok()),
                revision: get("etcd-revision").and_then(|v| v.parse().ok()),
                compression: get("compression").unwrap_or_else(|| b.key.codec.to_string()),
                encryption: if b.key.encrypted { "age" } else { "none" }.to_string(),
                files: match (get("files-archive"), b.files) {
                    (None, _) => "-",
                    (Some(_), true) => "ok",
                    (Some(_), false) => "missing",
                }
                .to_string(),
                keep: d.is_none_or(|d| d.keep),
                reason: d.map(|d| d.reason.to_string()).unwrap_or_default(),
                locked_until: None,
            }
        })
        .collect()
}

pub fn list_table(rows: &[ListRow]) -> String {
    let opt = |o: Option<String>| o.unwrap_or_else(|| "-".into());
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.key.clone(),
                r.time.clone(),
                r.stored_bytes.to_string(),
                opt(r.raw_bytes.map(|v| v.to_string())),
                opt(r.revision.map(|v| v.to_string())),
                r.compression.clone(),
                r.encryption.clone(),
                r.files.clone(),
                format!("{}: {}", if r.keep { "keep" } else { "delete" }, r.reason),
            ]
        })
        .collect();
    let mut header = vec![
        "KEY",
        "TIME",
        "STORED",
        "RAW",
        "REVISION",
        "CODEC",
        "ENCRYPTION",
        "FILES",
        "RETENTION",
    ];
    // The lock column only on a bucket with object lock.
    let mut cells = cells;
    if rows.iter().any(|r| r.locked_until.is_some()) {
        header.insert(8, "LOCKED UNTIL");
        for (row, r) in cells.iter_mut().zip(rows) {
            row.insert(8, opt(r.locked_until.clone()));
        }
    }
    table(&header, &cells)
}

/// One endpoint in `status`.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointRow {
    pub endpoint: String,
    pub healthy: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub status: Option<MemberStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub quota: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// notAfter of the client certificate used (ETCD_CERT), when mTLS is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_not_after: Option<String>,
}

/// The endpoints' table, then the client certificate's expiry (one certificate for all).
pub fn status_table(rows: &[EndpointRow]) -> String {
    let mut out = endpoint_table(rows);
    if let Some(t) = rows.iter().find_map(|r| r.client_cert_not_after.as_ref()) {
        let _ = writeln!(out, "\nclient certificate (ETCD_CERT) valid until {t}");
    }
    out
}

fn endpoint_table(rows: &[EndpointRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| match &r.status {
            Some(s) => vec![
                r.endpoint.clone(),
                if r.warning.is_some() {
                    "healthy (near quota)".into()
                } else {
                    "healthy".into()
                },
                s.member_id.to_string(),
                if s.is_leader {
                    "yes".into()
                } else {
                    "no".into()
                },
                s.version.clone(),
                s.raft_index.to_string(),
                s.raft_term.to_string(),
                s.revision.to_string(),
                s.db_size.to_string(),
                s.db_size_in_use.to_string(),
                s.db_size.saturating_sub(s.db_size_in_use).to_string(),
                format!("{:.0}%", s.db_size as f64 * 100.0 / r.quota as f64),
            ],
            None => vec![
                r.endpoint.clone(),
                format!("unhealthy: {}", r.error.as_deref().unwrap_or("?")),
            ],
        })
        .collect();
    table(
        &[
            "ENDPOINT",
            "HEALTH",
            "MEMBER",
            "LEADER",
            "VERSION",
            "RAFT INDEX",
            "TERM",
            "REVISION",
            "DB SIZE",
            "IN USE",
            "FREE",
            "QUOTA",
        ],
        &cells,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["xxxx".into(), "y".into()],
                vec!["z".into(), "w".into()],
            ],
        );
        assert_eq!(t, "A     LONGER\nxxxx  y\nz     w\n");
    }
}
