//! The object name format: `{prefix}{UTC %Y%m%d-%H%M%S}.db{.gz|.zst}{.age}`, `.age` when the
//! object is encrypted with age.
//!
//! This is exactly the naming of the seed's shell CronJob, so buckets it filled are listed and
//! pruned by us. One type prints and parses it; listing skips every key that does not parse,
//! which is how prune guarantees it never touches an object we did not name.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::compress::Codec;

const TIME_FORMAT: &str = "%Y%m%d-%H%M%S";
/// `20260529-060000`: the length of the formatted time, which has no variable-width fields.
const TIME_LEN: usize = 15;

/// The name of one backup, relative to the configured prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupKey {
    /// When the backup was taken, to the second (UTC).
    pub time: DateTime<Utc>,
    /// The codec the stored object is encoded with, as its extension says.
    pub codec: Codec,
    /// Whether the object is an age file (the `.age` suffix), encrypted after compression.
    pub encrypted: bool,
}

/// The suffix of an encrypted backup.
pub const AGE_SUFFIX: &str = ".age";

/// A backup's files archive (BACKUP_INCLUDE_PATHS) is its time with this suffix.
pub const FILES_SUFFIX: &str = ".files.tar.age";

impl BackupKey {
    /// The key of a backup taken at `time`, truncated to the second as the name is.
    pub fn new(time: DateTime<Utc>, codec: Codec) -> Self {
        let time = DateTime::from_timestamp(time.timestamp(), 0).expect("in range");
        BackupKey {
            time,
            codec,
            encrypted: false,
        }
    }

    /// The name of this backup's files archive: `{time}.files.tar.age`.
    pub fn files_name(&self) -> String {
        format!("{}{FILES_SUFFIX}", self.time.format(TIME_FORMAT))
    }

    /// The time of a files archive's name, if `name` is one.
    pub fn files_time(name: &str) -> Option<DateTime<Utc>> {
        parse_time(name.strip_suffix(FILES_SUFFIX)?)
    }

    /// The same key, for an object encrypted with age or not.
    pub fn encrypted(self, encrypted: bool) -> Self {
        BackupKey { encrypted, ..self }
    }
}

impl fmt::Display for BackupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{}",
            self.time.format(TIME_FORMAT),
            self.codec.extension(),
            if self.encrypted { AGE_SUFFIX } else { "" }
        )
    }
}

/// Why a name is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a backup name of the form 20260529-060000.db.gz (.db.zst, .db, each with .age when encrypted)")]
pub struct NotOurs {
    pub name: String,
}

impl FromStr for BackupKey {
    type Err = NotOurs;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let not_ours = || NotOurs {
            name: name.to_string(),
        };
        let (time, ext) = name.split_at_checked(TIME_LEN).ok_or_else(not_ours)?;
        let (ext, encrypted) = match ext.strip_suffix(AGE_SUFFIX) {
            Some(ext) => (ext, true),
            None => (ext, false),
        };
        let codec = Codec::ALL
            .into_iter()
            .find(|c| c.extension() == ext)
            .ok_or_else(not_ours)?;
        Ok(BackupKey {
            time: parse_time(time).ok_or_else(not_ours)?,
            codec,
            encrypted,
        })
    }
}

/// `20260529-060000`, exactly: chrono accepts some variations (signs, fewer digits), so the
/// shape is checked first, so that the name round-trips and nothing that merely looks similar
/// is ever pruned.
fn parse_time(time: &str) -> Option<DateTime<Utc>> {
    let shaped = time.len() == TIME_LEN
        && time.bytes().enumerate().all(|(i, b)| {
            if i == 8 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    shaped.then_some(())?;
    let time = NaiveDateTime::parse_from_str(time, TIME_FORMAT).ok()?;
    Some(time.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn prints_the_seed_naming() {
        let t = Utc.with_ymd_and_hms(2026, 5, 29, 6, 0, 0).unwrap();
        assert_eq!(
            BackupKey::new(t, Codec::Gzip).to_string(),
            "20260529-060000.db.gz"
        );
        assert_eq!(
            BackupKey::new(t, Codec::Zstd).to_string(),
            "20260529-060000.db.zst"
        );
        assert_eq!(
            BackupKey::new(t, Codec::None).to_string(),
            "20260529-060000.db"
        );
    }

    #[test]
    fn round_trips() {
        for name in [
            "20260529-060000.db.gz",
            "19991231-235959.db.zst",
            "20000101-000000.db",
            "20260529-060000.db.gz.age",
            "20260529-060000.db.zst.age",
            "20260529-060000.db.age",
        ] {
            let key: BackupKey = name.parse().unwrap();
            assert_eq!(key.encrypted, name.ends_with(".age"));
            assert_eq!(key.to_string(), name);
        }
    }

    #[test]
    fn truncates_to_the_second() {
        let t = Utc.timestamp_opt(1_780_000_000, 999_000_000).unwrap();
        let key = BackupKey::new(t, Codec::Gzip);
        assert_eq!(key.to_string().parse::<BackupKey>().unwrap(), key);
    }

    #[test]
    fn files_archive_names_round_trip_and_are_strict() {
        let key: BackupKey = "20260529-060000.db.zst.age".parse().unwrap();
        assert_eq!(key.files_name(), "20260529-060000.files.tar.age");
        assert_eq!(BackupKey::files_time(&key.files_name()), Some(key.time));
        for name in [
            "20260529-060000.files.tar",
            "2026052-060000.files.tar.age",
            "20260529-0600001.files.tar.age",
            "20260529-060000.db.gz.age",
        ] {
            assert_eq!(BackupKey::files_time(name), None, "{name:?}");
        }
    }

    #[test]
    fn rejects_what_we_did_not_write() {
        for name in [
            "",
            "20260529-060000.db.gz.tmp",
            "20260529-060000.db.bz2",
            "20260529-060000.tar.gz",
            "20261329-060000.db.gz",
            "20260529-250000.db.gz",
            "2026052-0060000.db.gz",
            "+2026052-060000.db.gz",
            "20260529_060000.db.gz",
            "20260529-060000",
            "latest.db.gz",
            "sub/20260529-060000.db.gz",
            "20260529-06000é.db.gz",
            "20260529-060000.db.gz.age.age",
            "20260529-060000.db.age.gz",
            "20260529-060000.age",
            "20260529-060000.db.gz.AGE",
        ] {
            assert!(name.parse::<BackupKey>().is_err(), "{name:?} parsed");
        }
    }
}
