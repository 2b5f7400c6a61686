//! What the commands print on stdout. Each command returns data; this module draws it
//! ([`Render`]) as a table for people or one line of JSON for scripts, in the format chosen once
//! with `-o`, one file per area. Logs go to stderr.

mod backups;
mod etcd;
mod pitr;
mod stream;

use std::fmt::Write;

use serde::Serialize;

/// `-o table|json`: a table for people, one line of JSON for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

impl Format {
    /// `value` drawn in this format.
    pub fn render(self, value: &impl Render) -> serde_json::Result<String> {
        match self {
            Format::Json => Ok(format!("{}\n", serde_json::to_string(value)?)),
            Format::Table => Ok(value.table()),
        }
    }
}

/// A command's result, as people and scripts read it: its table here, its JSON its
/// `Serialize` form (the fields as they are, or a form of its own where that reads better).
pub trait Render: Serialize {
    /// Aligned columns, or lines, ending in a newline.
    fn table(&self) -> String;
}

/// `Serialize` for results whose JSON is a form of their own (an inherent `json_form`), not
/// their fields as they are.
macro_rules! serialize_as_json_form {
    ($($t:ty),*) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let form = self.json_form().map_err(serde::ser::Error::custom)?;
                serde::Serialize::serialize(&form, s)
            }
        }
    )*};
}
use serialize_as_json_form;

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
