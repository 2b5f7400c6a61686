//! The `keygen` command: a new signing key for BACKUP_SIGNING_KEY_FILE and its public half for
//! BACKUP_VERIFY_KEY ([`crate::sign::keygen`]). It needs no settings and no store.

use std::path::Path;

use super::Outcome;
use crate::sign::Generated;

/// Writes the key pair at `file` and `file.pub`; never replaces a key.
pub fn run(file: &Path) -> anyhow::Result<Generated> {
    crate::sign::keygen(file)
}

impl Outcome for Generated {}
