//! Which backups a restore may rely on: the bucket's side of [`crate::sign`].
//!
//! With `BACKUP_VERIFY_KEY` set, a backup is accepted when its signed manifest passes
//! [`sign::judge`], or, if it has no signature at all, when the operator named it with
//! `--allow-unsigned` (backups from before signing). Without verify keys nothing is checked,
//! and restore says so once.

use crate::key::BackupKey;
use crate::sign::{self, Refused, VerifyKeys, Vouched};
use crate::store::{Listing, Store, StoreError};

/// What a restore relies on for one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Its signed manifest passed: what the restore compares its bytes with.
    Vouched(Box<Vouched>),
    /// Not checked: no verify keys are set.
    Unchecked,
    /// Unsigned, and named by `--allow-unsigned`.
    AllowedUnsigned,
}

impl Trust {
    pub fn vouched(&self) -> Option<&Vouched> {
        match self {
            Trust::Vouched(v) => Some(v),
            _ => None,
        }
    }
}

/// The judgement of `key` as the bucket holds it now.
pub async fn judge(
    store: &Store,
    key: &BackupKey,
    keys: &VerifyKeys,
) -> Result<Result<Vouched, Refused>, StoreError> {
    let signed = store.signed(key).await?;
    let object = format!("{}{key}", store.prefix());
    Ok(sign::judge(
        &object,
        &key.files_name(),
        signed.manifest.as_deref(),
        signed.signature.as_deref(),
        keys,
    ))
}

/// The verdict on one backup, `--allow-unsigned` applied: `Err` is why it is refused.
pub async fn accept(
    store: &Store,
    key: &BackupKey,
    keys: &VerifyKeys,
    allow_unsigned: &[BackupKey],
) -> Result<Result<Trust, Refused>, StoreError> {
    Ok(match judge(store, key, keys).await? {
        Ok(v) => Ok(Trust::Vouched(Box::new(v))),
        Err(r) if r.is_unsigned() && allow_unsigned.contains(key) => {
            tracing::warn!(
                "{} is not signed ({r}); restoring it because --allow-unsigned names it",
                store.url(key)
            );
            Ok(Trust::AllowedUnsigned)
        }
        Err(r) => Err(r),
    })
}

/// The newest backup of `listing` that [`accept`] takes, and the newer ones passed over with
/// why. `None` when none passes.
pub async fn newest_accepted(
    store: &Store,
    listing: &Listing,
    keys: &VerifyKeys,
    allow_unsigned: &[BackupKey],
) -> Result<(Option<(BackupKey, Trust)>, Vec<(BackupKey, Refused)>), StoreError> {
    let mut passed_over = Vec::new();
    for b in &listing.backups {
        match accept(store, &b.key, keys, allow_unsigned).await? {
            Ok(trust) => return Ok((Some((b.key, trust)), passed_over)),
            Err(why) => passed_over.push((b.key, why)),
        }
    }
    Ok((None, passed_over))
}
