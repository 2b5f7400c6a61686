//! Phase two's one reader: it looks a [`Key`] up in the raw [`Env`] (resolving aliases and the
//! table's default), parses it, and collects every problem instead of stopping at the first.
//! Parsers of the sections return `None` when something they needed is missing or wrong, and
//! the problem that says why is already recorded here.

use std::time::Duration;

use url::Url;

use super::vars::Key;
use super::{Env, Problem, Problems};

pub(super) struct Reader<'e> {
    pub(super) env: &'e Env,
    pub(super) problems: Vec<Problem>,
}

impl<'e> Reader<'e> {
    pub(super) fn new(env: &'e Env) -> Reader<'e> {
        Reader {
            env,
            problems: Vec::new(),
        }
    }

    /// The (name used, value) of the key or one of its aliases; empty values count as unset,
    /// as in a shell. Two names with different values are a problem, since we cannot know
    /// which one the operator meant.
    pub(super) fn raw(&mut self, key: Key) -> Option<(&'static str, &'e str)> {
        let var = key.var();
        let env = self.env;
        let mut set = std::iter::once(var.name)
            .chain(var.aliases.iter().copied())
            .filter_map(|n| env.get(n).filter(|v| !v.trim().is_empty()).map(|v| (n, v)));
        let first = set.next()?;
        if let Some(other) = set.find(|(_, v)| v.trim() != first.1.trim()) {
            let shown = if var.secret {
                "**redacted**".to_string()
            } else {
                format!("{:?}", other.1)
            };
            self.problem(
                first.0,
                Some(first.1),
                format!("conflicts with {}={shown}: set one of them", other.0),
            );
        }
        Some((first.0, first.1.trim()))
    }

    /// Whether the key or an alias is set (to something other than blanks).
    pub(super) fn is_set(&mut self, key: Key) -> bool {
        self.raw(key).is_some()
    }

    /// The value, or the table's default.
    pub(super) fn get(&mut self, key: Key) -> Option<(&'static str, &'e str)> {
        self.raw(key)
            .or_else(|| key.var().default.map(|d| (key.name(), d)))
    }

    /// Records a problem with `name` (the variable or alias the operator used). The value is
    /// dropped when the table marks the variable secret, so no caller can leak it.
    pub(super) fn problem(&mut self, name: &str, value: Option<&str>, expected: impl Into<String>) {
        let secret = Key::named(name).is_some_and(|k| k.var().secret);
        let p = Problem {
            var: name.into(),
            value: value.filter(|_| !secret).map(str::to_string),
            expected: expected.into(),
        };
        // A variable read by two sections (an alias conflict of ETCD_CERT, say) is still one
        // problem to fix.
        if !self.problems.contains(&p) {
            self.problems.push(p);
        }
    }

    /// Parses the key's value (or default) with `parse`, recording `expected` when it fails.
    /// `None` when unset without a default, or when a problem was recorded.
    pub(super) fn parse<T>(
        &mut self,
        key: Key,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Option<T> {
        let (used, value) = self.get(key)?;
        let parsed = parse(value);
        if parsed.is_none() {
            self.problem(used, Some(value), expected);
        }
        parsed
    }

    pub(super) fn duration(&mut self, key: Key) -> Option<Duration> {
        self.parse(
            key,
            "expected a duration such as 90s, 30m, 30d or 720h, greater than zero",
            |v| humantime::parse_duration(v).ok().filter(|d| !d.is_zero()),
        )
    }

    pub(super) fn flag(&mut self, key: Key) -> Option<bool> {
        self.parse(key, "expected true or false", |v| match v {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        })
    }

    /// How many problems are recorded: a section compares it before and after.
    pub(super) fn count(&self) -> usize {
        self.problems.len()
    }

    /// Names in our own namespace that we do not know: most likely typos.
    pub(super) fn unknown_names(&mut self) {
        let env = self.env;
        for name in env.names().filter(|k| k.starts_with("BACKUP_")) {
            if Key::named(name).is_some() {
                continue;
            }
            let near = Key::ALL
                .iter()
                .map(|k| k.name())
                .min_by_key(|n| strsim::levenshtein(n, name))
                .filter(|n| strsim::levenshtein(n, name) <= 3);
            let expected = match near {
                Some(n) => format!("unknown variable; did you mean {n}?"),
                None => "unknown variable (see --help for the list)".to_string(),
            };
            self.problem(name, None, expected);
        }
    }

    pub(super) fn finish<T>(self, value: Option<T>) -> Result<T, Problems> {
        match value {
            Some(v) if self.problems.is_empty() => Ok(v),
            _ => Err(Problems(self.problems)),
        }
    }
}

/// An http(s) URL with a host: the form of every URL setting that is not an etcd endpoint.
pub(super) fn http_url(v: &str) -> Option<Url> {
    Url::parse(v)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// `8MiB`, `64M`, `1GiB`, `5242880`: binary units, as part sizes are counted.
pub fn parse_size(v: &str) -> Option<u64> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    n.parse::<u64>().ok()?.checked_mul(1 << shift)
}
