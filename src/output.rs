//! What the commands print on stdout, in one place. Each command returns data; this module
//! draws it ([`Render`]) as a table for people or one line of JSON for scripts, in the format
//! chosen once with `-o`. Logs go to stderr.

use std::fmt::Write;
use std::time::Duration;

use crate::commands::check::Freshness;
use crate::commands::defrag::Defragged;
use crate::commands::doctor::Finding;
use crate::commands::list::ListRow;
use crate::commands::pitr::{CrossCheck, DiffRow, Got, HistoryRow, PointRestored};
use crate::commands::prune::Pruned;
use crate::commands::restore::Restoration;
use crate::commands::status::EndpointRow;
use crate::commands::verify::VerifiedFile;
use crate::compress::Codec;
use crate::pitr::k8s::Decoded;
use crate::retention::human;
use crate::snapshot::verify::{hex, Verified};

/// `-o table|json`: a table for people, one line of JSON for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// A command's result, as people and scripts read it.
pub trait Render {
    /// Aligned columns, or lines, ending in a newline.
    fn table(&self) -> String;
    /// One JSON value, without the newline.
    fn json(&self) -> serde_json::Result<String>;
}

impl Format {
    /// `value` drawn in this format.
    pub fn render(self, value: &impl Render) -> serde_json::Result<String> {
        match self {
            Format::Json => Ok(format!("{}\n", value.json()?)),
            Format::Table => Ok(value.table()),
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

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }
}

impl Render for Vec<EndpointRow> {
    fn table(&self) -> String {
        status_table(self)
    }

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }
}

/// The endpoints' table, then the client certificate's expiry (one certificate for all).
fn status_table(rows: &[EndpointRow]) -> String {
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

impl Render for VerifiedFile {
    fn table(&self) -> String {
        verified_table(&self.verified, self.codec)
    }

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string(&verified_json(&self.verified, self.codec)?)
    }
}

fn verified_json(v: &Verified, codec: Codec) -> serde_json::Result<serde_json::Value> {
    let mut json = serde_json::to_value(&v.status)?;
    json["sha256"] = hex(&v.sha256).into();
    json["compression"] = codec.to_string().into();
    Ok(json)
}

fn verified_table(v: &Verified, codec: Codec) -> String {
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

    fn json(&self) -> serde_json::Result<String> {
        let r = &self.restored;
        let files = self.files.as_ref().map(|f| {
            serde_json::json!({
                "dir": f.dir,
                "written": f.written,
                "skipped": f.skipped,
            })
        });
        serde_json::to_string(&serde_json::json!({
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

    fn json(&self) -> serde_json::Result<String> {
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
        serde_json::to_string(&decisions)
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

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }
}

impl Render for Defragged {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .members
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let m = &d.step.member;
                vec![
                    (i + 1).to_string(),
                    m.member_id.to_string(),
                    m.endpoint.clone(),
                    if m.is_leader { "leader" } else { "follower" }.into(),
                    m.db_size.to_string(),
                    m.db_size_in_use.to_string(),
                    m.free().to_string(),
                    match (d.step.defrag, d.db_size_after, self.dry_run) {
                        (false, _, _) => format!("skip: {}", d.step.reason),
                        (true, _, true) => format!("would defragment: {}", d.step.reason),
                        (true, Some(after), _) => format!(
                            "defragmented to {after} bytes in {:.1}s",
                            d.seconds.unwrap_or_default()
                        ),
                        (true, None, _) => format!("skipped at its turn: {}", d.step.reason),
                    },
                ]
            })
            .collect();
        table(
            &[
                "#", "MEMBER", "ENDPOINT", "ROLE", "DB SIZE", "IN USE", "FREE", "ACTION",
            ],
            &rows,
        )
    }

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }
}

impl Render for Vec<Finding> {
    /// One line per check: `ok`, `warn` or `fail`, the check, what was found and what to do.
    fn table(&self) -> String {
        let findings = self;
        let rows: Vec<Vec<String>> = findings
            .iter()
            .map(|f| {
                let level = serde_json::to_value(f.level).expect("serializes");
                vec![
                    level.as_str().unwrap_or("?").to_string(),
                    f.check.clone(),
                    f.detail.clone(),
                ]
            })
            .collect();
        table(&["RESULT", "CHECK", "DETAIL"], &rows)
    }

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }
}

impl Render for crate::sign::Generated {
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

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string(&serde_json::json!({
            "private_key_file": self.private,
            "public_key_file": self.public,
            "public_key": self.public_key,
            "fingerprint": self.fingerprint,
        }))
    }
}

impl Render for Vec<crate::commands::generations::GenerationRow> {
    fn table(&self) -> String {
        let opt = |o: Option<i64>| o.map_or_else(|| "-".into(), |v| v.to_string());
        let cells: Vec<Vec<String>> = self
            .iter()
            .map(|r| {
                vec![
                    r.generation.clone(),
                    r.ended
                        .as_ref()
                        .map_or_else(|| "open".to_string(), |why| format!("ended: {why}")),
                    format!("{}..{}", opt(r.base_revision), opt(r.last_revision)),
                    r.last_upload.map_or_else(
                        || "-".into(),
                        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                    ),
                    r.segments.to_string(),
                    r.bytes.to_string(),
                    (1 + r.bases.len()).to_string(),
                    r.verdict(),
                ]
            })
            .collect();
        let header = [
            "GENERATION",
            "STATE",
            "REVISIONS",
            "LAST UPLOAD",
            "SEGMENTS",
            "BYTES",
            "BASES",
            "CONTINUITY",
        ];
        table(&header, &cells)
    }

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }
}

impl Render for crate::commands::generations::Lag {
    fn table(&self) -> String {
        match &self.problem {
            None => format!(
                "ok: generation {} holds revision {} in the bucket, its newest segment {}s old (max {}s)\n",
                self.generation.as_deref().unwrap_or_default(),
                self.last_revision.unwrap_or_default(),
                self.age_seconds.unwrap_or_default(),
                self.max_lag_seconds
            ),
            Some(p) => format!("LAGGING: {p}\n"),
        }
    }

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }
}

impl Render for PointRestored {
    /// The rebuilt file's figures, how it was made, and the Kubernetes checklist.
    fn table(&self) -> String {
        let r = &self.rebuilt;
        let rate = r.revisions as f64 / self.seconds.max(1e-3);
        let mut text = verified_table(&self.verified, Codec::None);
        let _ = writeln!(
            text,
            "{:<22} {} (generation {}, base {} at revision {}, {} segments)",
            "rebuilt from",
            self.plan.cluster_id,
            self.plan.generation,
            self.plan.base,
            self.plan.base_revision,
            self.plan.segments.len()
        );
        let _ = writeln!(
            text,
            "{:<22} {} revisions, {} events, {} leases added ({} with unknown TTL, given 1 s) in {:.1} s ({rate:.0} revisions/s)",
            "replayed", r.revisions, r.events, r.leases_added, r.leases_unknown, self.seconds
        );
        let bump = if self.bumped_in_file {
            format!("The file already marks revisions up to {} compacted (--bump-revision {}): etcd restored from it continues at {}.", self.plan.revision + self.bump, self.bump, self.plan.revision + self.bump + 1)
        } else {
            format!("--bump-revision {} is the newest revision the stream saw ({}) minus {}, plus {} for writes after its last segment; it needs etcdutl 3.5.10 or later (etcdctl 3.4.27 or later). With an older one, rebuild with `--bump-revision {}` and leave both flags out.", self.bump, self.newest, self.plan.revision, crate::commands::pitr::BUMP_MARGIN, self.bump)
        };
        let _ = write!(
            text,
            "\n{} is the database at revision {}, verified. Next, on each member (see the README's runbook, \"Restore to a point in time\"):\n\n{}\n\n{bump}\n\nThen, for Kubernetes:\n  1. stop every kube-apiserver before etcd is restored, and restart every one after;\n  2. controllers and informers see their history compacted and relist (expected);\n  3. what changed outside the cluster after revision {} (load balancers, volumes, DNS) is not rolled back.\n",
            self.path.display(),
            self.plan.revision,
            self.next,
            self.plan.revision
        );
        text
    }

    fn json(&self) -> serde_json::Result<String> {
        let r = &self.rebuilt;
        serde_json::to_string(&serde_json::json!({
            "path": self.path,
            "revision": self.plan.revision,
            "generation": self.plan.generation.to_string(),
            "base": self.plan.base,
            "base_revision": self.plan.base_revision,
            "segments": self.plan.segments.len(),
            "revisions": r.revisions,
            "events": r.events,
            "leases_added": r.leases_added,
            "leases_unknown_ttl": r.leases_unknown,
            "seconds": self.seconds,
            "bump_revision": self.bump,
            "bumped_in_file": self.bumped_in_file,
            "snapshot": verified_json(&self.verified, Codec::None)?,
            "next": self.next,
        }))
    }
}

fn object_cells(o: &Decoded) -> [String; 4] {
    match o {
        Decoded::Object(o) => [
            o.kind.clone(),
            o.namespace.clone(),
            o.name.clone(),
            if o.deleting { "deleting" } else { "" }.into(),
        ],
        Decoded::Encrypted { provider } => [
            format!("encrypted ({provider})"),
            "".into(),
            "".into(),
            "".into(),
        ],
        Decoded::Other => Default::default(),
    }
}

impl Render for Vec<HistoryRow> {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .iter()
            .map(|r| {
                let mut row = vec![
                    r.revision.to_string(),
                    r.received.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                    r.action.to_string(),
                    r.key.clone(),
                    r.size.to_string(),
                    if r.lease == 0 {
                        "-".into()
                    } else {
                        format!("{:x}", r.lease)
                    },
                ];
                row.extend(object_cells(&r.object));
                row
            })
            .collect();
        table(
            &[
                "REVISION",
                "RECEIVED",
                "ACTION",
                "KEY",
                "SIZE",
                "LEASE",
                "KIND",
                "NAMESPACE",
                "NAME",
                "DELETION",
            ],
            &rows,
        )
    }

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }
}

impl Render for Got {
    fn table(&self) -> String {
        let Some(v) = &self.found else {
            return format!("{} did not exist at revision {}\n", self.key, self.revision);
        };
        let [kind, ns, name, deleting] = object_cells(&v.object);
        let rows = [
            ("key", self.key.clone()),
            ("at revision", self.revision.to_string()),
            ("mod revision", v.mod_revision.to_string()),
            ("create revision", v.create_revision.to_string()),
            ("version", v.version.to_string()),
            (
                "lease",
                if v.lease == 0 {
                    "-".into()
                } else {
                    format!("{:x}", v.lease)
                },
            ),
            ("size", v.size.to_string()),
            (
                "object",
                format!("{kind} {ns}/{name} {deleting}").trim().to_string(),
            ),
        ];
        rows.iter().map(|(k, v)| format!("{k:<16} {v}\n")).collect()
    }

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }
}

impl Render for Vec<DiffRow> {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .iter()
            .map(|r| {
                vec![
                    format!("{:?}", r.change).to_lowercase(),
                    r.revision.to_string(),
                    r.key.clone(),
                ]
            })
            .collect();
        table(&["CHANGE", "REVISION", "KEY"], &rows)
    }

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }
}

impl Render for Vec<CrossCheck> {
    fn table(&self) -> String {
        if self.is_empty() {
            return "no generation has two bases with whole segments between them: nothing to cross-check yet\n".into();
        }
        let opt = |o: Option<String>| o.unwrap_or_else(|| "-".into());
        let rows: Vec<Vec<String>> = self
            .iter()
            .map(|c| {
                vec![
                    c.generation.clone(),
                    c.from.to_string(),
                    c.to.to_string(),
                    opt(c.base_hash_kv.map(|h| h.to_string())),
                    opt(c.rebuilt_hash_kv.map(|h| h.to_string())),
                    c.verdict.clone(),
                ]
            })
            .collect();
        table(
            &[
                "GENERATION",
                "FROM",
                "TO",
                "BASE_HASHKV",
                "REBUILT_HASHKV",
                "VERDICT",
            ],
            &rows,
        )
    }

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }
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
