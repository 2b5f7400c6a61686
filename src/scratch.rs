//! Scratch space: the one place that creates scratch files, measures free space and turns a
//! disk error into a message that names `BACKUP_TMP_DIR`.
//!
//! A backup spools the raw snapshot (the bbolt walk needs random access), and `verify` and
//! `restore` of a compressed file decode into one. Scratch files are `NamedTempFile`s, removed
//! when dropped on every path, success or failure. A process killed outright (OOM, SIGKILL)
//! drops nothing, so each name carries its process id, and [`sweep`] removes at start the files
//! of processes that no longer run: a container restarted in its pod finds its emptyDir as the
//! killed one left it.

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

/// The start of every scratch file's name; the process id and a '-' follow.
const PREFIX: &str = ".etcd-backup-";

/// A new scratch file in `dir`, removed when dropped.
pub fn file(dir: &Path, suffix: &str) -> Result<NamedTempFile, ScratchError> {
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-", std::process::id()))
        .suffix(suffix)
        .tempfile_in(dir)
        .map_err(error("creating a scratch file", dir))
}

/// Whether a process of this id runs on this host (signal 0: nothing is sent).
pub fn running(pid: u32) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        // It runs, under another user: running all the same.
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

/// Removes the scratch files in `dir` that earlier processes left: ours by name, of this very
/// process id (a restarted container is process 1 again; call this before making any) or of
/// one that no longer runs. Returns how many files and bytes went. Files of running processes,
/// and names we did not make, are left alone.
pub fn sweep(dir: &Path) -> io::Result<(usize, u64)> {
    let me = std::process::id();
    let (mut n, mut bytes) = (0, 0);
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let meta = entry.metadata()?;
        if meta.is_file() && (pid == me || !running(pid)) {
            std::fs::remove_file(entry.path())?;
            n += 1;
            bytes += meta.len();
        }
    }
    Ok((n, bytes))
}

/// [`sweep`], logged; a sweep that fails is only a warning (the run goes on with less room).
pub fn sweep_logged(dir: &Path) {
    match sweep(dir) {
        Ok((0, _)) => {}
        Ok((n, bytes)) => tracing::info!(
            files = n,
            bytes,
            dir = %dir.display(),
            "removed the scratch files of earlier runs that were killed"
        ),
        Err(e) => tracing::warn!(
            "removing earlier runs' scratch files from {} (BACKUP_TMP_DIR) failed: {e}",
            dir.display()
        ),
    }
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
    fn a_sweep_removes_only_the_files_of_processes_gone_or_of_this_id() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let dead = u32::MAX >> 2;
        let live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let names = [
            (format!(".etcd-backup-{dead}-abc.db"), false),
            (format!(".etcd-backup-{me}-abc.seg"), false),
            (format!(".etcd-backup-{}-abc.db", live.id()), true),
            (".etcd-backup-abc.db".to_string(), true),
            ("notes.txt".to_string(), true),
        ];
        for (n, _) in &names {
            std::fs::write(dir.path().join(n), b"12345").unwrap();
        }
        assert_eq!(sweep(dir.path()).unwrap(), (2, 10));
        for (n, stays) in &names {
            assert_eq!(dir.path().join(n).exists(), *stays, "{n}");
        }
        let mut live = live;
        let _ = live.kill();
        let _ = live.wait();
        // A file made now carries this process's id.
        let f = file(dir.path(), ".db").unwrap();
        let name = f.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(&format!(".etcd-backup-{me}-")), "{name}");
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
