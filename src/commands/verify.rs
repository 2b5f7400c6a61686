//! `verify`: check a snapshot file on disk, raw or compressed (the codec is found by magic
//! bytes, not the name). A compressed file is decoded into a scratch file first, since the walk
//! needs random access.
//!
//! Three outcomes, kept apart because they mean different things to the operator: the input
//! cannot be read ([`crate::Usage`], exit 2), the scratch space failed ([`ScratchError`],
//! exit 1, names `BACKUP_TMP_DIR`), or the file was read and judged ([`Checked`]).

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;

use super::{Context, Outcome};
use crate::compress::{self, Codec};
use crate::config::VerifyConfig;
use crate::crypt::{self, Identities};
use crate::scratch::{self, ScratchError};
use crate::shutdown::{Shutdown, StopOnShutdown};
use crate::snapshot::verify::{self as check, CopyError, Invalid, Verified};
use crate::Usage;

/// The verdict on one file.
#[derive(Debug)]
pub struct Checked {
    /// The file, as named on the command line.
    pub path: String,
    pub codec: Codec,
    pub verdict: Result<Verified, Invalid>,
}

/// The file was judged and found invalid: exit 1.
#[derive(Debug, thiserror::Error)]
#[error("{path} is not a valid snapshot: {why}")]
pub struct NotValid {
    pub path: String,
    pub why: Invalid,
}

/// A file that passed, with its codec: what `verify` prints.
#[derive(Debug, Clone)]
pub struct VerifiedFile {
    pub verified: Verified,
    pub codec: Codec,
}

impl Checked {
    /// The figures of a file that passed, or the verdict as an error (exit 1).
    pub fn valid(self) -> Result<VerifiedFile, NotValid> {
        let codec = self.codec;
        self.into_valid()
            .map(|verified| VerifiedFile { verified, codec })
    }

    /// The verified figures, or the verdict as an error.
    pub fn into_valid(self) -> Result<Verified, NotValid> {
        let path = self.path;
        self.verdict.map_err(|why| NotValid { path, why })
    }
}

/// The `verify` command: [`verify`] on a blocking thread; a file judged invalid is an error
/// (exit 1), printed as nothing else.
pub async fn run(cfg: &VerifyConfig, path: &Path, ctx: &Context) -> anyhow::Result<VerifiedFile> {
    let (stop, path, tmp, ids) = (
        ctx.shutdown.clone(),
        path.to_path_buf(),
        cfg.tmp_dir.clone(),
        cfg.identities.clone(),
    );
    let checked =
        tokio::task::spawn_blocking(move || verify(&path, &tmp, ids.as_deref(), &stop)).await??;
    Ok(checked.valid()?)
}

impl Outcome for VerifiedFile {}

/// Checks the snapshot at `path`, decoding into `tmp` when compressed. Blocking: run it on a
/// blocking thread. A shutdown stops the decode at its next read.
pub fn verify(
    path: &Path,
    tmp: &Path,
    identities: Option<&Identities>,
    shutdown: &Shutdown,
) -> anyhow::Result<Checked> {
    let shown = path.display();
    let unreadable = |e: std::io::Error| Usage(format!("cannot read {shown}: {e}"));
    let judged = |codec, verdict| Checked {
        path: shown.to_string(),
        codec,
        verdict,
    };
    let input = File::open(path).map_err(unreadable)?;
    let (encrypted, opened) = match crypt::open(BufReader::new(input), identities) {
        Ok(o) => o,
        Err(crypt::OpenError::Io(e)) => return Err(unreadable(e).into()),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot open {shown}"))),
    };
    let (codec, reader) = match compress::decoder(BufReader::new(opened)) {
        Ok(d) => d,
        // Reading the first decrypted bytes checks the first chunk: damage, not the input's
        // fault. (The codec is unknown: it was never reached.)
        Err(e) if encrypted => {
            let e = std::io::Error::new(e.kind(), format!("decrypting: {e}"));
            return Ok(judged(Codec::None, Err(Invalid::Io(e))));
        }
        Err(e) => return Err(unreadable(e).into()),
    };
    if codec == Codec::None && !encrypted {
        drop(reader);
        let mut file = File::open(path).map_err(unreadable)?;
        return Ok(judged(codec, check::check_file(&mut file)));
    }
    let scratch = scratch::file(tmp, ".db")?;
    let disk = |e| -> ScratchError { scratch::error("decoding into a scratch file", tmp)(e) };
    let mut out = std::io::BufWriter::new(scratch.reopen().map_err(disk)?);
    let mut reader = StopOnShutdown {
        inner: reader,
        shutdown: shutdown.clone(),
    };
    tracing::debug!(%codec, scratch = %scratch.path().display(), "decoding into a scratch file");
    let trailer = match check::copy_hashed(&mut reader, &mut out) {
        Ok(t) => t,
        Err(CopyError::Read(e)) => {
            if let Some(why) = shutdown.fired() {
                return Err(crate::shutdown::Interrupted(why).into());
            }
            let what = if encrypted {
                "decrypting and decoding"
            } else {
                "decoding"
            };
            let e = std::io::Error::new(e.kind(), format!("{what} {codec}: {e}"));
            return Ok(judged(codec, Err(Invalid::Io(e))));
        }
        Err(CopyError::Write(e)) => return Err(disk(e).into()),
    };
    out.flush().map_err(disk)?;
    Ok(judged(
        codec,
        check::check_spooled(scratch.as_file(), trailer),
    ))
}
