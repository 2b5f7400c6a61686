//! Encryption with age: a stage between the compressor and the upload ([`Sealer`]), and the
//! way back for `restore` and `verify` ([`open`]).
//!
//! A backup holds every Secret of the cluster, so with BACKUP_AGE_RECIPIENTS set the compressed
//! stream is encrypted to those X25519 public keys as it flows: no plaintext reaches the disk
//! beyond the raw spool the walk needs (as without encryption), and memory grows by one 64 KiB
//! age chunk. The object is a standard age file: `age -d -i key.txt OBJECT | gunzip` restores
//! it without this tool. Backups never need a private key; reading one does.

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::path::PathBuf;

/// The first line of every age file.
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1";

/// The upload side: plain, or encrypting to the recipients. Must be finished.
pub enum Sealer<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> Sealer<W> {
    /// Encrypts to `recipients` (checked age1... keys), or passes through when there are none.
    pub fn new(out: W, recipients: &[String]) -> io::Result<Self> {
        if recipients.is_empty() {
            return Ok(Sealer::Plain(out));
        }
        let keys: Vec<age::x25519::Recipient> = recipients
            .iter()
            .map(|r| r.parse().map_err(|e: &str| io::Error::other(e.to_string())))
            .collect::<io::Result<_>>()?;
        let encryptor =
            age::Encryptor::with_recipients(keys.iter().map(|k| k as &dyn age::Recipient))
                .map_err(io::Error::other)?;
        Ok(Sealer::Age(encryptor.wrap_output(out)?))
    }

    /// Writes the last age chunk (without it the file would not decrypt) and returns the
    /// inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Sealer::Plain(w) => Ok(w),
            Sealer::Age(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for Sealer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sealer::Plain(w) => w.write(buf),
            Sealer::Age(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sealer::Plain(w) => w.flush(),
            Sealer::Age(w) => w.flush(),
        }
    }
}

/// The age private keys (`BACKUP_AGE_IDENTITY_FILE`) that open encrypted backups. Never
/// printed.
pub struct Identities {
    pub path: PathBuf,
    pub keys: Vec<Box<dyn age::Identity + Send + Sync>>,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("path", &self.path)
            .field("keys", &"**redacted**")
            .finish()
    }
}

/// Why an identity file could not be used. The messages never quote the file: age's parse
/// errors do not, and an I/O error names the file only.
#[derive(Debug, thiserror::Error)]
pub enum IdentityFileError {
    #[error("cannot read identities ({0}): expected an unencrypted identity file, as age-keygen writes it")]
    Io(io::Error),
    #[error("cannot read identities ({0}): expected an unencrypted identity file, as age-keygen writes it")]
    Parse(age::DecryptError),
    #[error(
        "the file holds no identity: expected AGE-SECRET-KEY-1... lines, as age-keygen writes them"
    )]
    Empty,
}

impl Identities {
    /// Reads an identity file as `age -i` does.
    pub fn read(path: PathBuf) -> Result<Identities, IdentityFileError> {
        let keys = age::IdentityFile::from_file(path.display().to_string())
            .map_err(IdentityFileError::Io)?
            .into_identities()
            .map_err(IdentityFileError::Parse)?;
        if keys.is_empty() {
            return Err(IdentityFileError::Empty);
        }
        Ok(Identities { path, keys })
    }
}

/// Why an age file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("it is encrypted with age, and BACKUP_AGE_IDENTITY_FILE is not set: set it to the identity file (AGE-SECRET-KEY-1...) whose public key the backup was encrypted to")]
    NoIdentity,
    #[error("no identity matches: none of the keys in {0} is a recipient of this file; check BACKUP_AGE_IDENTITY_FILE (after a key rotation, older backups need the older key)")]
    NoMatch(String),
    #[error("its age header is not valid: {0}")]
    Header(String),
    #[error("reading it: {0}")]
    Io(io::Error),
}

// By hand, not `#[from]`, which would also return the cause from `source()` and print it twice.
impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        OpenError::Io(e)
    }
}

/// Whether `input` starts like an age file, without consuming it.
pub fn sniff(input: &mut dyn BufRead) -> io::Result<bool> {
    let head = input.fill_buf()?;
    Ok(head.len() >= AGE_MAGIC.len() && head.starts_with(AGE_MAGIC)
        || (!head.is_empty() && head.len() < AGE_MAGIC.len() && AGE_MAGIC.starts_with(head)))
}

/// `input`, decrypted when it is an age file (found by its first line, not the name). The
/// payload's authentication is checked chunk by chunk as it is read: a tampered byte is a read
/// error, never wrong data.
pub fn open<'a, R: BufRead + Send + 'a>(
    mut input: R,
    identities: Option<&'a Identities>,
) -> Result<(bool, Box<dyn Read + Send + 'a>), OpenError> {
    if !sniff(&mut input)? {
        return Ok((false, Box::new(input)));
    }
    let ids = identities.ok_or(OpenError::NoIdentity)?;
    let decryptor = age::Decryptor::new(input).map_err(|e| OpenError::Header(e.to_string()))?;
    let reader = decryptor
        .decrypt(ids.keys.iter().map(|k| k.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => OpenError::NoMatch(ids.path.display().to_string()),
            e => OpenError::Header(e.to_string()),
        })?;
    Ok((true, Box::new(reader)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    fn identities(keys: &[&age::x25519::Identity]) -> Identities {
        Identities {
            path: "key.txt".into(),
            keys: keys
                .iter()
                .map(|k| Box::new((*k).clone()) as Box<dyn age::Identity + Send + Sync>)
                .collect(),
        }
    }

    fn sealed(data: &[u8], to: &[&age::x25519::Identity]) -> Vec<u8> {
        let recipients: Vec<String> = to.iter().map(|k| k.to_public().to_string()).collect();
        let mut s = Sealer::new(Vec::new(), &recipients).unwrap();
        s.write_all(data).unwrap();
        s.finish().unwrap()
    }

    #[test]
    fn round_trip_to_each_of_several_recipients() {
        let (a, b) = (
            age::x25519::Identity::generate(),
            age::x25519::Identity::generate(),
        );
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 31) as u8).collect();
        let file = sealed(&data, &[&a, &b]);
        assert!(file.starts_with(AGE_MAGIC));
        for key in [&a, &b] {
            let ids = identities(&[key]);
            let (enc, mut r) = open(&file[..], Some(&ids)).unwrap();
            assert!(enc);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
        }
        // Plain data passes through, identity or not.
        let (enc, mut r) = open(&b"plain bytes"[..], None).unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert!(!enc);
        assert_eq!(out, b"plain bytes");
    }

    #[test]
    fn a_wrong_key_a_missing_key_and_a_flipped_byte_fail() {
        let (a, other) = (
            age::x25519::Identity::generate(),
            age::x25519::Identity::generate(),
        );
        let file = sealed(&[7u8; 100_000], &[&a]);
        assert!(matches!(open(&file[..], None), Err(OpenError::NoIdentity)));
        let wrong = identities(&[&other]);
        let e = open(&file[..], Some(&wrong)).err().unwrap();
        assert!(e.to_string().contains("no identity matches"), "{e}");
        // A flipped byte in the payload: a read error, before or at the damaged chunk.
        let mut bad = file.clone();
        let at = bad.len() - 100;
        bad[at] ^= 1;
        let ids = identities(&[&a]);
        let (_, mut r) = open(&bad[..], Some(&ids)).unwrap();
        assert!(r.read_to_end(&mut Vec::new()).is_err());
        // The secret key never shows in the error or the identities' Debug.
        let secret = a.to_string();
        assert!(!format!("{ids:?}").contains(secret.expose_secret()));
    }
}
