//! What the stream's commands print: `list --generations`, `check --max-lag`.

use super::{table, Render};
use crate::stream::report::{GenerationRow, Lag};

impl Render for Vec<GenerationRow> {
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
                    format!("{}..{}", opt(r.restorable_from), opt(r.restorable_to)),
                    r.last_upload.map_or_else(
                        || "-".into(),
                        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                    ),
                    r.segments.to_string(),
                    r.bytes.to_string(),
                    (1 + r.bases.len()).to_string(),
                    r.signed.clone(),
                    r.verdict(),
                ]
            })
            .collect();
        let header = [
            "GENERATION",
            "STATE",
            "REVISIONS",
            "RESTORABLE",
            "LAST UPLOAD",
            "SEGMENTS",
            "BYTES",
            "BASES",
            "SIGNED",
            "CONTINUITY",
        ];
        table(&header, &cells)
    }
}

impl Render for Lag {
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
}
