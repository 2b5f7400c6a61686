//! Scratch space: the one place that creates scratch files, measures free space and turns a
//! disk error into a message that names `BACKUP_TMP_DIR`.
//!
//! A backup spools the raw snapshot (the bbolt walk needs random access), and `verify` and
//! `restore` of a compressed file decode into one. Scratch files are `NamedTempFile`s, removed
//! when dropped on every path, success or failure.

use std::io;
use std::path::Path;

use tempfile::NamedTempFile;

use crate::snapshot::verify::TRAILER_LEN;

/// A scratch error: what we were doing in which directory, with the setting to change.
#[derive(Debug, thiserror::Error)]
/// The message names the I/O error before the advice, so it has no `source()`.
#[error("{}", describe(.doing, .dir, .error))]
pub struct ScratchError {
    pub doing: &'static str,
    pub dir: std::path::PathBuf,
    pub error: io::Error,
}

fn describe(doing: &str, dir: &Path, e: &io::Error) -> String {
    let advice = match e.kind() {
        io::ErrorKind::StorageFull => {
            "give it at least the etcd database size, or point BACKUP_TMP_DIR elsewhere"
        }
        io::ErrorKind::NotFound => {
            "the directory does not exist: create it, or point BACKUP_TMP_DIR at one that does"
        }
        _ => "check that the directory exists and is writable",
    };
    format!(
        "{doing} in {} (BACKUP_TMP_DIR): {e}; {advice}",
        dir.display()
    )
}

/// Wraps a disk error of `doing` in `dir`.
pub fn error<'d>(
    doing: &'static str,
    dir: &'d Path,
) -> impl FnOnce(io::Error) -> ScratchError + 'd {
    move |error| ScratchError {
        doing,
        dir: dir.to_path_buf(),
        error,
    }
}

/// A new scratch file in `dir`, removed when dropped.
pub fn file(dir: &Path, suffix: &str) -> Result<NamedTempFile, ScratchError> {
    tempfile::Builder::new()
        .prefix(".etcd-backup-")
        .suffix(suffix)
        .tempfile_in(dir)
        .map_err(error("creating a scratch file", dir))
}

/// Free bytes for an unprivileged writer in `dir`.
pub fn free_space(dir: &Path) -> io::Result<u64> {
    let s = rustix::fs::statvfs(dir)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Scratch space a backup needs: the raw snapshot, kept for the walk. The encoded form goes
/// straight to the upload.
pub fn space_needed(db_size: u64) -> u64 {
    db_size + TRAILER_LEN as u64
}

/// Fails unless `dir` has room for a database of `db_size` bytes.
pub fn ensure_room(dir: &Path, db_size: u64) -> Result<(), ScratchError> {
    let free = free_space(dir).map_err(error("reading the free space", dir))?;
    let need = space_needed(db_size);
    if free < need {
        return Err(ScratchError {
            doing: "not enough scratch space",
            dir: dir.to_path_buf(),
            error: io::Error::new(
                io::ErrorKind::StorageFull,
                format!("{free} bytes free, {need} needed for a {db_size}-byte database"),
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_of_a_real_directory_and_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_space(dir.path()).unwrap() > 0);
        let missing = dir.path().join("missing");
        let e = file(&missing, ".db").unwrap_err().to_string();
        assert!(
            e.contains("BACKUP_TMP_DIR") && e.contains("does not exist"),
            "{e}"
        );
    }

    #[test]
    fn a_database_larger_than_the_disk_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let e = ensure_room(dir.path(), u64::MAX / 2).unwrap_err();
        assert_eq!(e.error.kind(), io::ErrorKind::StorageFull);
        let text = e.to_string();
        // The words tests/image.sh looks for in the image's own run.
        assert!(
            text.starts_with("not enough scratch space in ")
                && text.contains("(BACKUP_TMP_DIR): ")
                && text.contains("needed for a "),
            "{text}"
        );
    }
}
