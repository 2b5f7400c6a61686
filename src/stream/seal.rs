//! Sealing a segment: its records, framed by [`super::segment`] (signed with a signing key),
//! through zstd and (with recipients) age into a spool file, hashed as stored, so that the
//! next segment can name it.

use std::io::{self, BufWriter, Write};
use std::path::Path;

use sha2::Digest;
use tempfile::TempPath;

use super::names::Name;
use super::segment::{HashWriter, Header, Records};
use crate::crypt::Sealer;
use crate::sign::SigningKey;

/// zstd's own default: a segment is small, and the stream runs all day beside etcd.
const LEVEL: i32 = 3;

/// A sealed segment on scratch disk, waiting for the bucket; the file goes when this does.
#[derive(Debug)]
pub struct Sealed {
    pub name: Name,
    pub path: TempPath,
    pub len: u64,
    pub sha256: [u8; 32],
    pub last: i64,
    /// When the stream received the newest revision in it (Unix ms).
    pub last_received_ms: i64,
    pub revisions: u64,
}

/// Who may read a segment (age recipients; none: plain) and who vouches for it.
#[derive(Debug, Clone, Copy)]
pub struct Keys<'a> {
    pub recipients: &'a [String],
    pub signing: Option<&'a SigningKey>,
}

/// Writes the segment of `records` under `header` to a new file in `dir`: signed when there is
/// a signing key, compressed, then encrypted when there are recipients. Blocking (compression).
pub fn seal(
    records: Records,
    header: &Header,
    name: Name,
    dir: &Path,
    keys: &Keys<'_>,
    last_received_ms: i64,
) -> anyhow::Result<Sealed> {
    let file = crate::scratch::file(dir, ".seg")?;
    let counted = HashWriter::new(BufWriter::new(file.as_file().try_clone()?));
    let sealer = Sealer::new(counted, keys.recipients)?;
    let mut z = zstd::stream::write::Encoder::new(sealer, LEVEL)?;
    records.seal(header, keys.signing, &mut z)?;
    let mut counted = z.finish()?.finish()?;
    counted.flush()?;
    let HashWriter { inner, sha, len } = counted;
    drop(inner);
    let sha256 = sha.finalize().into();
    file.as_file().sync_data()?;
    Ok(Sealed {
        name,
        path: file.into_temp_path(),
        len,
        sha256,
        last: header.last,
        last_received_ms,
        revisions: header.revisions,
    })
}

/// A stored segment's plaintext reader: age (when it is encrypted; the identities open it)
/// then zstd, then [`super::segment::Reader`].
pub fn open<'a, R: io::BufRead + Send + 'a>(
    stored: R,
    identities: Option<&'a crate::crypt::Identities>,
) -> anyhow::Result<super::segment::Reader<Box<dyn io::Read + Send + 'a>>> {
    let (_, plain) = crate::crypt::open(stored, identities)?;
    let z: Box<dyn io::Read + Send + 'a> = Box::new(zstd::stream::read::Decoder::new(plain)?);
    Ok(super::segment::Reader::new(z)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::names::Generation;
    use crate::stream::segment::{tests::put, Record, Revision};
    use sha2::Sha256;

    #[test]
    fn sealed_segments_open_plain_and_encrypted_and_hash_as_stored() {
        let dir = tempfile::tempdir().unwrap();
        let key = age::x25519::Identity::generate();
        let ids = crate::crypt::Identities {
            path: "k".into(),
            keys: vec![Box::new(key.clone())],
        };
        for recipients in [vec![], vec![key.to_public().to_string()]] {
            let mut records = Records::new(dir.path()).unwrap();
            let rev = Record::Revision(Revision {
                revision: 7,
                received_ms: 5,
                events: vec![put(7, "k", &[1; 100_000])],
            });
            records.push(&rev).unwrap();
            let generation = Generation::parse("20261204T170000Z").unwrap();
            let header = Header {
                generation: generation.to_string(),
                cluster_id: "c".into(),
                first: 7,
                last: 7,
                revisions: 1,
                events: 1,
                previous: "base:6".into(),
            };
            let name = Name::Segment {
                generation,
                first: 7,
                last: 7,
                encrypted: !recipients.is_empty(),
            };
            let keys = Keys {
                recipients: &recipients,
                signing: None,
            };
            let s = seal(records, &header, name, dir.path(), &keys, 5).unwrap();
            let stored = std::fs::read(&s.path).unwrap();
            assert_eq!(stored.len() as u64, s.len);
            assert_eq!(<[u8; 32]>::from(Sha256::digest(&stored)), s.sha256);
            assert!(s.len < 10_000, "compressed: {}", s.len);
            let mut r = open(&stored[..], Some(&ids)).unwrap();
            assert_eq!(r.header(), &header);
            assert_eq!(r.next_record().unwrap(), Some(rev));
            assert_eq!(r.next_record().unwrap(), None);
        }
    }
}
