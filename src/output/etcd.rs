//! What the commands on etcd itself print: `status`, `defrag`, `doctor`.

use std::fmt::Write;

use super::{table, Render};
use crate::commands::defrag::Defragged;
use crate::commands::doctor::Finding;
use crate::commands::status::EndpointRow;

impl Render for Vec<EndpointRow> {
    fn table(&self) -> String {
        status_table(self)
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
}
