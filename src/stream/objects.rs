//! The stream's objects in the bucket, by [`Name`]: listed, written, read and deleted through
//! the store's calls by path. Segments are bulk data (the storage class applies); records are
//! small JSON, and anything larger than [`MAX_RECORD`] under a record's name is not ours.

use bytes::Bytes;

use super::names::{Name, DIR};
use crate::store::objects::Kind;
use crate::store::{ByteStream, Store, StoreError};

/// A generation's records (start, base, trimmed, end) and the lock are small; anything larger
/// is not ours.
pub const MAX_RECORD: u64 = 64 << 10;

/// One listed stream object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: Name,
    pub size: u64,
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

fn path(name: &Name) -> String {
    format!("{DIR}{name}")
}

/// The full URL of a stream object, for messages.
pub fn url(store: &Store, name: &Name) -> String {
    store.url_of(&path(name))
}

/// Every stream object under the prefix, sorted by name (so by generation, then revision).
/// Names we did not write are left out.
pub async fn list(store: &Store) -> Result<Vec<Listed>, StoreError> {
    let mut listed: Vec<Listed> = store
        .list_under(DIR)
        .await?
        .into_iter()
        .filter_map(|o| {
            Some(Listed {
                name: Name::parse(o.path.strip_prefix(DIR)?)?,
                size: o.size,
                last_modified: o.last_modified,
            })
        })
        .collect();
    listed.sort_by_key(|o| o.name);
    Ok(listed)
}

/// Writes a stream object whole. Names are unique by construction (a generation by its start
/// time, a segment by its revisions), so this does not ask the server to refuse an existing
/// name, which not every S3-compatible server supports.
pub async fn put(store: &Store, name: &Name, body: Bytes) -> Result<(), StoreError> {
    let kind = match name {
        Name::Segment { .. } => Kind::Data,
        _ => Kind::Record,
    };
    store.put_object(&path(name), body, kind).await
}

/// A record's bytes, at most [`MAX_RECORD`]; `None` when it is not there.
pub async fn get_record(store: &Store, name: &Name) -> Result<Option<Bytes>, StoreError> {
    store.get_small(&path(name), MAX_RECORD).await
}

/// A stream object's bytes as they download, with its length.
pub async fn download(store: &Store, name: &Name) -> Result<(u64, ByteStream), StoreError> {
    store.get_object(&path(name)).await
}

/// The SHA-256 and length of a stream object as stored; `None` when it is not there.
pub async fn sha256(store: &Store, name: &Name) -> Result<Option<([u8; 32], u64)>, StoreError> {
    store.sha256_of(&path(name)).await
}

/// Deletes a stream object (prune); one already gone is not an error.
pub async fn delete(store: &Store, name: &Name) -> Result<(), StoreError> {
    store.delete_object(&path(name)).await
}
