//! What the way back prints: `restore --to-revision`, `history`, `get`, `diff`, `list
//! --generations --check`.

use std::fmt::Write;

use serde_json::Value;

use super::backups::{verified_json, verified_table};
use super::{table, Render};
use crate::commands::diff::DiffRow;
use crate::commands::get::Got;
use crate::commands::history::HistoryRow;
use crate::commands::pitr::{CrossCheck, PointRestored};
use crate::commands::restore::Restoring;
use crate::compress::Codec;
use crate::pitr::k8s::Decoded;

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
}

impl PointRestored {
    fn json_form(&self) -> serde_json::Result<Value> {
        let r = &self.rebuilt;
        Ok(serde_json::json!({
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
}

impl Render for Restoring {
    fn table(&self) -> String {
        match self {
            Restoring::Backup(r) => r.table(),
            Restoring::Point(r) => r.table(),
        }
    }
}

super::serialize_as_json_form!(PointRestored);
