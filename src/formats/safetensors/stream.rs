//! A safetensors file checked as its bytes stream past (an upload as it arrives, a local file
//! as it is read): the header is parsed once complete, the file's length held to what the header
//! says, and floating-point tensors that hold a NaN or an infinity noted. Memory stays at the
//! header whatever the file's size.

use std::io::Read;

use crate::formats::safetensors::{
    Header, MAX_HEADER_BYTES, SafetensorsError, looks_like_safetensors, parse_header, sniff_foreign,
};
use crate::numeric::Dtype;

/// Validates a safetensors byte stream as it passes, holding at most the header in memory,
/// and notes the floating-point tensors that hold a NaN or an infinity.
#[derive(Debug, Default)]
pub struct StreamValidator {
    prefix: Vec<u8>,
    header_len: Option<u64>,
    header: Option<Header>,
    seen: u64,
    finite: FiniteScan,
}

/// Finds non-finite values in the data section as it streams past, one element width at a
/// time; an element split between chunks waits in `pending`.
#[derive(Debug, Default)]
struct FiniteScan {
    /// Position in the data section.
    pos: u64,
    /// The tensor `pos` is in or before (tensors are sorted by offset).
    tensor: usize,
    pending: Vec<u8>,
    flagged: Vec<bool>,
}

/// A test of one element's little-endian bytes.
type ElementTest = fn(&[u8]) -> bool;

/// The element width of `dtype` and the test of whether an element is NaN or infinite; None
/// for dtypes that have no such values.
fn non_finite_test(dtype: Dtype) -> Option<(usize, ElementTest)> {
    Some(match dtype {
        Dtype::F64 => (8, |b| {
            u64::from_le_bytes(b.try_into().expect("8 bytes")) & 0x7FF0_0000_0000_0000
                == 0x7FF0_0000_0000_0000
        }),
        Dtype::F32 => (4, |b| {
            u32::from_le_bytes(b.try_into().expect("4 bytes")) & 0x7F80_0000 == 0x7F80_0000
        }),
        Dtype::F16 => (2, |b| u16::from_le_bytes([b[0], b[1]]) & 0x7C00 == 0x7C00),
        Dtype::BF16 => (2, |b| u16::from_le_bytes([b[0], b[1]]) & 0x7F80 == 0x7F80),
        // E4M3 has no infinity; S.1111.111 is NaN.
        Dtype::F8_E4M3 => (1, |b| b[0] & 0x7F == 0x7F),
        _ => return None,
    })
}

impl FiniteScan {
    fn feed(&mut self, header: &Header, mut data: &[u8]) {
        if self.flagged.len() != header.tensors.len() {
            self.flagged = vec![false; header.tensors.len()];
        }
        while !data.is_empty() {
            while header
                .tensors
                .get(self.tensor)
                .is_some_and(|t| t.end <= self.pos)
            {
                self.tensor += 1;
                self.pending.clear();
            }
            let Some(t) = header.tensors.get(self.tensor) else {
                return;
            };
            if self.pos < t.begin {
                let skip = (t.begin - self.pos).min(data.len() as u64) as usize;
                self.pos += skip as u64;
                data = &data[skip..];
                continue;
            }
            let take = (t.end - self.pos).min(data.len() as u64) as usize;
            let (mut now, rest) = data.split_at(take);
            self.pos += take as u64;
            data = rest;
            let Some((width, bad)) = non_finite_test(t.dtype) else {
                continue;
            };
            if self.flagged[self.tensor] {
                continue;
            }
            if !self.pending.is_empty() {
                let fill = (width - self.pending.len()).min(now.len());
                self.pending.extend_from_slice(&now[..fill]);
                now = &now[fill..];
                if self.pending.len() < width {
                    continue;
                }
                if bad(&self.pending) {
                    self.flagged[self.tensor] = true;
                }
                self.pending.clear();
            }
            let whole = now.len() / width * width;
            if now[..whole].chunks_exact(width).any(bad) {
                self.flagged[self.tensor] = true;
            }
            self.pending.extend_from_slice(&now[whole..]);
        }
    }
}

impl StreamValidator {
    /// A validator that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes seen so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The header, once it has arrived and passed validation.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// Feeds the next chunk. Fails as soon as the bytes seen prove the file bad.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), SafetensorsError> {
        self.seen += chunk.len() as u64;
        let mut rest = chunk;
        while self.header.is_none() && !rest.is_empty() {
            // Nine bytes tell a header length followed by `{` from the formats we sniff for.
            let wanted = self.header_len.map_or(9, |len| 8 + len as usize);
            let take = rest.len().min(wanted.saturating_sub(self.prefix.len()));
            self.prefix.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.header_len.is_none() && self.prefix.len() >= 9 {
                self.decide_header_len()?;
            }
            self.parse_when_complete()?;
        }
        if let Some(header) = &self.header {
            if self.seen > header.file_len() {
                return Err(SafetensorsError::TrailingBytes {
                    expected: header.file_len(),
                    actual: self.seen,
                });
            }
            self.finite.feed(header, rest);
        }
        Ok(())
    }

    /// The floating-point tensors seen so far that hold a NaN or an infinity.
    pub fn non_finite(&self) -> Vec<String> {
        let Some(header) = &self.header else {
            return Vec::new();
        };
        header
            .tensors
            .iter()
            .zip(&self.finite.flagged)
            .filter(|(_, flagged)| **flagged)
            .map(|(t, _)| t.name.clone())
            .collect()
    }

    fn decide_header_len(&mut self) -> Result<(), SafetensorsError> {
        if !looks_like_safetensors(&self.prefix)
            && let Some(foreign) = sniff_foreign(&self.prefix)
        {
            return Err(SafetensorsError::Foreign(foreign));
        }
        let len = u64::from_le_bytes(self.prefix[..8].try_into().expect("8 bytes"));
        if len > MAX_HEADER_BYTES {
            return Err(SafetensorsError::HeaderTooLarge { len });
        }
        self.header_len = Some(len);
        let full = 8 + len as usize;
        if self.prefix.len() > full {
            self.prefix.truncate(full);
        } else {
            self.prefix.reserve_exact(full - self.prefix.len());
        }
        Ok(())
    }

    fn parse_when_complete(&mut self) -> Result<(), SafetensorsError> {
        let Some(len) = self.header_len else {
            return Ok(());
        };
        if self.header.is_none() && self.prefix.len() as u64 == 8 + len {
            let header = parse_header(&self.prefix[8..])?;
            if header.tensors.is_empty() {
                return Err(SafetensorsError::NoTensors);
            }
            self.header = Some(header);
            self.prefix = Vec::new();
        }
        Ok(())
    }

    /// Ends the stream: the file must be complete and exactly as long as its header says.
    pub fn finish(mut self) -> Result<Header, SafetensorsError> {
        if self.seen == 0 {
            return Err(SafetensorsError::Empty);
        }
        if self.header.is_none() && self.header_len.is_none() {
            if self.seen < 8 {
                return Err(match sniff_foreign(&self.prefix) {
                    Some(foreign) => SafetensorsError::Foreign(foreign),
                    None => SafetensorsError::HeaderTooSmall { len: self.seen },
                });
            }
            self.decide_header_len()?;
            self.parse_when_complete()?;
        }
        let Some(header) = self.header else {
            return Err(SafetensorsError::HeaderPastEnd {
                header_len: self.header_len.unwrap_or_default(),
                file_len: self.seen,
            });
        };
        header.check_file_len(self.seen)?;
        Ok(header)
    }
}

/// Reads and validates the header of a local file without reading its tensor data.
pub fn read_header(path: &std::path::Path) -> Result<Header, ReadError> {
    let mut file = std::fs::File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut validator = StreamValidator::new();
    let mut buf = vec![0u8; 64 * 1024];
    while validator.header().is_none() {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        validator.feed(&buf[..n])?;
    }
    let header = match validator.header.take() {
        Some(header) => header,
        None => validator.finish()?,
    };
    header.check_file_len(file_len)?;
    Ok(header)
}

/// Reading a local safetensors file failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Invalid(#[from] SafetensorsError),
}
