//! The snapshot state file: a versioned, checksummed container around one serde value.
//!
//! Layout (all integers little-endian):
//! ```text
//! 0   magic        8 bytes  "HEARTHSS"
//! 8   format       u16      FORMAT_VERSION of the writer
//! 10  writer_len   u16      length of the writer's version string
//! 12  writer       ...      e.g. "hearth 0.1.0"
//! ..  payload_len  u64
//! ..  payload      ...      postcard encoding of the state
//! ..  crc64        u64      CRC-64/XZ of every byte before it
//! ```
//! A reader checks the magic, then the CRC over the whole file (so truncated or corrupted
//! files never load), then the format version (a newer format is refused, naming both
//! versions), and only then decodes. Files are written atomically: a temporary file in the
//! same directory, fsync, rename, fsync of the directory — a crash mid-write leaves either the
//! old file or none, never a file that loads.
//!
//! This crate knows nothing about VMs: what goes in the payload is the vmm crate's business
//! (`crates/vmm/src/persist.rs`).

pub mod crc64;
mod write;

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use write::{write_atomic, AtomicFile};

pub const MAGIC: &[u8; 8] = b"HEARTHSS";
/// The state-file format this build writes and the newest it reads. Bump it whenever the
/// payload's types change shape (postcard is not self-describing).
/// History: 1 first format; 2 adds each vCPU's CPUID (restored, and checked against the host);
/// 3 adds the ACPI state (VM generation ID address, GED interrupt).
pub const FORMAT_VERSION: u16 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read snapshot file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write snapshot file {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a hearth snapshot state file (bad magic)")]
    BadMagic { path: String },
    #[error("{path} is truncated or corrupted (CRC64 mismatch or short file)")]
    Corrupt { path: String },
    #[error("{path} has snapshot format v{found} (written by {writer}); this hearth {ours} reads up to v{supported}")]
    TooNew {
        path: String,
        found: u16,
        writer: String,
        ours: String,
        supported: u16,
    },
    #[error("{path} has snapshot format v{found} (written by {writer}), which this hearth {ours} no longer reads")]
    TooOld {
        path: String,
        found: u16,
        writer: String,
        ours: String,
    },
    #[error("cannot encode the snapshot state")]
    Encode(#[source] postcard::Error),
    #[error("{path}: the state does not decode (written by {writer})")]
    Decode {
        path: String,
        writer: String,
        #[source]
        source: postcard::Error,
    },
}

/// What the header says about who wrote the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub format: u16,
    pub writer: String,
}

/// Encodes `state` into the container format; `writer` names the writing program and version.
pub fn encode<T: Serialize>(writer: &str, state: &T) -> Result<Vec<u8>, SnapshotError> {
    let payload = postcard::to_stdvec(state).map_err(SnapshotError::Encode)?;
    let writer = &writer.as_bytes()[..writer.len().min(usize::from(u16::MAX))];
    let mut out = Vec::with_capacity(payload.len() + writer.len() + 40);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&u16::try_from(writer.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(writer);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&payload);
    let crc = crc64::crc64(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Checks and decodes a container read from `path` (the path is only used in messages).
pub fn decode<T: DeserializeOwned>(path: &str, bytes: &[u8], ours: &str) -> Result<(Header, T), SnapshotError> {
    let corrupt = || SnapshotError::Corrupt { path: path.to_string() };
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(SnapshotError::BadMagic { path: path.to_string() });
    }
    let body_len = bytes.len().checked_sub(8).ok_or_else(corrupt)?;
    let (body, crc) = bytes.split_at(body_len);
    let crc = u64::from_le_bytes(crc.try_into().map_err(|_| corrupt())?);
    if crc64::crc64(body) != crc {
        return Err(corrupt());
    }
    let mut r = Reader {
        buf: body,
        pos: MAGIC.len(),
    };
    let format = u16::from_le_bytes(r.take(2).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?);
    let wlen = u16::from_le_bytes(r.take(2).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?);
    let writer = String::from_utf8_lossy(r.take(usize::from(wlen)).ok_or_else(corrupt)?).into_owned();
    let plen = u64::from_le_bytes(r.take(8).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?);
    let payload = r
        .take(usize::try_from(plen).map_err(|_| corrupt())?)
        .ok_or_else(corrupt)?;
    if r.pos != body.len() {
        return Err(corrupt());
    }
    if format > FORMAT_VERSION {
        return Err(SnapshotError::TooNew {
            path: path.to_string(),
            found: format,
            writer,
            ours: ours.to_string(),
            supported: FORMAT_VERSION,
        });
    }
    if format < FORMAT_VERSION {
        return Err(SnapshotError::TooOld {
            path: path.to_string(),
            found: format,
            writer,
            ours: ours.to_string(),
        });
    }
    let state = postcard::from_bytes(payload).map_err(|source| SnapshotError::Decode {
        path: path.to_string(),
        writer: writer.clone(),
        source,
    })?;
    Ok((Header { format, writer }, state))
}

/// Writes `state` to `path` atomically (see the module docs).
pub fn save<T: Serialize>(path: &Path, writer: &str, state: &T) -> Result<(), SnapshotError> {
    let bytes = encode(writer, state)?;
    write_atomic(path, &bytes).map_err(|source| SnapshotError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Reads, checks and decodes the state file at `path`; `ours` names this program in messages.
pub fn load<T: DeserializeOwned>(path: &Path, ours: &str) -> Result<(Header, T), SnapshotError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| SnapshotError::Read {
        path: shown.clone(),
        source,
    })?;
    decode(&shown, &bytes, ours)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct State {
        regs: Vec<u64>,
        name: String,
        flag: Option<bool>,
    }

    fn sample() -> State {
        State {
            regs: (0..100).map(|i| i * 0x1111).collect(),
            name: "vcpu0".into(),
            flag: Some(true),
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode("hearth 9.9", &sample()).unwrap();
        let (h, s): (Header, State) = decode("f", &bytes, "hearth 0.1").unwrap();
        assert_eq!(s, sample());
        assert_eq!(h.writer, "hearth 9.9");
        assert_eq!(h.format, FORMAT_VERSION);
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_refused() {
        let bytes = encode("hearth", &sample()).unwrap();
        for len in 0..bytes.len() {
            assert!(decode::<State>("f", &bytes[..len], "x").is_err(), "truncated to {len}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode::<State>("f", &b, "x").is_err(), "flip at {i}");
        }
    }

    #[test]
    fn newer_format_names_both_versions() {
        let mut bytes = encode("hearth 7.0", &sample()).unwrap();
        bytes[8..10].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let n = bytes.len() - 8;
        let crc = crc64::crc64(&bytes[..n]);
        bytes[n..].copy_from_slice(&crc.to_le_bytes());
        let e = decode::<State>("snap.state", &bytes, "hearth 0.1")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("hearth 7.0") && e.contains("hearth 0.1") && e.contains("snap.state"),
            "{e}"
        );
    }

    #[test]
    fn not_a_snapshot() {
        let e = decode::<State>("x", b"ELF\x7f garbage", "h").unwrap_err();
        assert!(matches!(e, SnapshotError::BadMagic { .. }));
    }

    #[test]
    fn save_and_load_files_atomically() {
        let dir = std::env::temp_dir().join(format!("hearth-snap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("vm.state");
        save(&p, "hearth", &sample()).unwrap();
        let (_, s): (Header, State) = load(&p, "hearth").unwrap();
        assert_eq!(s, sample());
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
