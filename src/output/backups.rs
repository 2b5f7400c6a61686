//! What the backup commands print: `list`, `verify`, `restore`, `prune`, `check`, `keygen`.

use std::fmt::Write;
use std::time::Duration;

use serde_json::Value;

use super::{table, Render};
use crate::commands::check::Freshness;
use crate::commands::list::ListRow;
use crate::commands::prune::Pruned;
use crate::commands::restore::Restoration;
use crate::commands::verify::VerifiedFile;
use crate::compress::Codec;
use crate::retention::human;
use crate::sign::Generated;
use crate::snapshot::verify::{hex, Verified};

impl Render for Vec<ListRow> {
    fn table(&self) -> String {
        let rows = self;
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
                    r.signed.clone(),
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
            "SIGNED",
            "RETENTION",
        ];
        // The lock column only on a bucket with object lock.
        let mut cells = cells;
        if rows.iter().any(|r| r.locked_until.is_some()) {
            header.insert(9, "LOCKED UNTIL");
            for (row, r) in cells.iter_mut().zip(rows) {
                row.insert(9, opt(r.locked_until.clone()));
            }
        }
        table(&header, &cells)
    }
}

impl Render for VerifiedFile {
    fn table(&self) -> String {
        verified_table(&self.verified, self.codec)
    }
}

impl VerifiedFile {
    fn json_form(&self) -> serde_json::Result<Value> {
        serde_json::to_value(&verified_json(&self.verified, self.codec)?)
    }
}

pub(super) fn verified_json(v: &Verified, codec: Codec) -> serde_json::Result<serde_json::Value> {
    let mut json = serde_json::to_value(&v.status)?;
    json["sha256"] = hex(&v.sha256).into();
    json["compression"] = codec.to_string().into();
    Ok(json)
}

pub(super) fn verified_table(v: &Verified, codec: Codec) -> String {
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

impl Render for Restoration {
    /// The verified figures, the next step, and the files extracted.
    fn table(&self) -> String {
        let r = &self.restored;
        let mut text = format!(
            "{}\n{} is verified. Next, on each member (see the README's runbook):\n\n{}\n",
            verified_table(&r.verified, r.codec),
            r.path.display(),
            self.next
        );
        if let Some(by) = &self.signed_by {
            let _ = writeln!(text, "\nSigned by {by}.");
        }
        for (key, why) in &self.passed_over {
            let _ = writeln!(text, "Passed over {key}: {why}");
        }
        if let Some(f) = &self.files {
            let _ = writeln!(
                text,
                "\n{} files of the backup's files archive are in {}{}",
                f.written,
                f.dir.display(),
                if f.skipped.is_empty() {
                    String::new()
                } else {
                    format!("; skipped: {}", f.skipped.join(", "))
                }
            );
        }
        text
    }
}

impl Restoration {
    fn json_form(&self) -> serde_json::Result<Value> {
        let r = &self.restored;
        let files = self.files.as_ref().map(|f| {
            serde_json::json!({
                "dir": f.dir,
                "written": f.written,
                "skipped": f.skipped,
            })
        });
        Ok(serde_json::json!({
            "key": r.key.to_string(),
            "path": r.path,
            "snapshot": verified_json(&r.verified, r.codec)?,
            "next": self.next,
            "files": files,
            "signed_by": self.signed_by,
            "passed_over": self.passed_over.iter().map(|(k, why)| serde_json::json!({"key": k, "why": why})).collect::<Vec<_>>(),
        }))
    }
}

impl Render for Pruned {
    /// One line a backup: `keep` or `delete`, the name, the reason.
    /// Then one line a stream object to delete (kept ones are not listed: there are thousands).
    fn table(&self) -> String {
        let mut out = self.plan.to_string();
        for (name, why) in &self.stream.delete {
            out.push_str(&format!(
                "{:<6} {}{name}  {why}\n",
                "delete",
                crate::stream::names::DIR
            ));
        }
        out
    }
}

impl Pruned {
    fn json_form(&self) -> serde_json::Result<Value> {
        let mut decisions: Vec<_> = self
            .plan
            .decisions
            .iter()
            .map(|d| {
                serde_json::json!({
                    "key": d.key.to_string(),
                    "keep": d.keep,
                    "reason": d.reason.to_string(),
                    "deleted": self.deleted.contains(&d.key),
                })
            })
            .collect();
        for (name, why) in &self.stream.delete {
            decisions.push(serde_json::json!({
                "key": format!("{}{name}", crate::stream::names::DIR),
                "keep": false,
                "reason": why,
                "deleted": self.stream_deleted.contains(name),
            }));
        }
        Ok(decisions.into())
    }
}

impl Render for Freshness {
    fn table(&self) -> String {
        let max = human(Duration::from_secs(self.max_age_seconds));
        match (&self.newest, self.age_seconds) {
            (Some(key), Some(age)) => format!(
                "{}: newest verified backup {key} is {} old (max {max})\n",
                if self.fresh { "ok" } else { "STALE" },
                human(Duration::from_secs(age))
            ),
            _ => format!("STALE: no verified backup (max age {max})\n"),
        }
    }
}

impl Render for Generated {
    /// Where each key went, and what to do with each.
    fn table(&self) -> String {
        format!(
            "private key: {} (mount it from a Secret as BACKUP_SIGNING_KEY_FILE; never print it)\npublic key:  {} (set BACKUP_VERIFY_KEY to its text where you restore and check, and keep a copy with the runbook)\n{}\nfingerprint: {}\n",
            self.private.display(),
            self.public.display(),
            self.public_key,
            self.fingerprint
        )
    }
}

impl Generated {
    fn json_form(&self) -> serde_json::Result<Value> {
        Ok(serde_json::json!({
            "private_key_file": self.private,
            "public_key_file": self.public,
            "public_key": self.public_key,
            "fingerprint": self.fingerprint,
        }))
    }
}

super::serialize_as_json_form!(VerifiedFile, Restoration, Pruned, Generated);
