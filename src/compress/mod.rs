//! Codecs for the stored object: gzip (default, what the seed stored), zstd, or none.
//!
//! Encoders are `Write` adapters that must be finished: `finish` flushes the last block and
//! returns the inner writer, and its error is the caller's to keep. Decoders pick the codec
//! from the magic bytes, not the name, so a renamed file still restores.

pub mod pgzip;

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::str::FromStr;

/// How a backup is encoded in storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Codec {
    Gzip,
    Zstd,
    None,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Input bytes per multithreaded zstd job.
const ZSTD_JOB: u32 = 2 << 20;

impl Codec {
    pub const ALL: [Codec; 3] = [Codec::Gzip, Codec::Zstd, Codec::None];

    /// The object name's extension, after the time.
    pub fn extension(self) -> &'static str {
        match self {
            Codec::Gzip => ".db.gz",
            Codec::Zstd => ".db.zst",
            Codec::None => ".db",
        }
    }

    /// The level used when `BACKUP_COMPRESSION_LEVEL` is unset. For gzip, libdeflate's 4: on a
    /// 1.2 GB etcd it made an object 0.44% smaller than `gzip -6` (the seed's) at 0.83x the CPU
    /// of its own 6, which is 1.5% smaller still (`bench/RESULTS.md`). zstd's own 3.
    pub fn default_level(self) -> u32 {
        match self {
            Codec::Gzip => 4,
            Codec::Zstd => 3,
            Codec::None => 0,
        }
    }

    /// The levels the codec accepts.
    pub fn levels(self) -> std::ops::RangeInclusive<u32> {
        match self {
            Codec::Gzip => 1..=9,
            Codec::Zstd => 1..=19,
            Codec::None => 0..=0,
        }
    }

    /// The codec whose magic bytes start `head`; `None` (no codec) for anything else.
    pub fn sniff(head: &[u8]) -> Codec {
        if head.starts_with(&GZIP_MAGIC) {
            Codec::Gzip
        } else if head.starts_with(&ZSTD_MAGIC) {
            Codec::Zstd
        } else {
            Codec::None
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
            Codec::None => "none",
        })
    }
}

impl FromStr for Codec {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Codec::ALL
            .into_iter()
            .find(|c| c.to_string() == s)
            .ok_or(())
    }
}

/// A streaming encoder that writes into `W`.
pub enum Encoder<W: Write> {
    Gzip(pgzip::ParallelGzip<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    None(W),
}

impl<W: Write + Send + 'static> Encoder<W> {
    /// An encoder on `threads` threads (gzip: independent members, as pigz writes them, even
    /// with one thread, which then compresses beside the caller's; zstd: its multithreaded mode
    /// past one thread).
    pub fn new(codec: Codec, level: u32, threads: usize, inner: W) -> io::Result<Self> {
        Ok(match codec {
            Codec::Gzip => Encoder::Gzip(pgzip::ParallelGzip::new(inner, level, threads)),
            Codec::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(inner, level as i32)?;
                if threads > 1 {
                    enc.multithread(threads as u32)?;
                    // zstd's default job is 4 windows (8 MiB at level 3), and each worker
                    // holds its job's input and output; 2 MiB jobs keep that a few MiB.
                    enc.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB))?;
                }
                // The checksum lets `zstd -t` and our decoder catch corruption by themselves.
                enc.include_checksum(true)?;
                Encoder::Zstd(enc)
            }
            Codec::None => Encoder::None(inner),
        })
    }

    /// Writes the codec's trailer and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::None(w) => Ok(w),
        }
    }
}

impl<W: Write + Send + 'static> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
            Encoder::None(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
            Encoder::None(w) => w.flush(),
        }
    }
}

/// A reader that decodes whatever codec `inner` starts with (by magic bytes), and the codec.
///
/// Gzip is read as a sequence of members, as `gunzip` does, so concatenated and parallel
/// (pigz-style) streams decode whole.
pub fn decoder<'a, R: BufRead + Send + 'a>(
    mut inner: R,
) -> io::Result<(Codec, Box<dyn Read + Send + 'a>)> {
    let codec = Codec::sniff(inner.fill_buf()?);
    let reader: Box<dyn Read + Send> = match codec {
        Codec::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(inner)),
        Codec::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(inner)?),
        Codec::None => Box::new(inner),
    };
    Ok((codec, reader))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips_and_is_sniffed() {
        let data = sample();
        for codec in Codec::ALL {
            let mut enc = Encoder::new(codec, codec.default_level(), 2, Vec::new()).unwrap();
            enc.write_all(&data).unwrap();
            let stored = enc.finish().unwrap();
            let (found, mut dec) = decoder(io::Cursor::new(stored)).unwrap();
            assert_eq!(found, codec);
            let mut out = Vec::new();
            dec.read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{codec}");
        }
    }

    #[test]
    fn concatenated_gzip_members_decode_whole() {
        let mut stored = Vec::new();
        for part in [&b"hello "[..], b"world"] {
            let mut enc = Encoder::new(Codec::Gzip, 6, 1, Vec::new()).unwrap();
            enc.write_all(part).unwrap();
            stored.extend(enc.finish().unwrap());
        }
        let (_, mut dec) = decoder(io::Cursor::new(stored)).unwrap();
        let mut out = String::new();
        dec.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
    }

    #[test]
    fn truncated_gzip_is_an_error_not_a_short_read() {
        let mut enc = Encoder::new(Codec::Gzip, 6, 1, Vec::new()).unwrap();
        enc.write_all(&sample()).unwrap();
        let mut stored = enc.finish().unwrap();
        stored.truncate(stored.len() / 2);
        let (_, mut dec) = decoder(io::Cursor::new(stored)).unwrap();
        assert!(dec.read_to_end(&mut Vec::new()).is_err());
    }

    #[test]
    fn names_parse() {
        for c in Codec::ALL {
            assert_eq!(c.to_string().parse::<Codec>(), Ok(c));
        }
        assert!("bzip2".parse::<Codec>().is_err());
    }
}
