//! The bytes a run maps from its weight files, passed on in file order to a digester. The CLI
//! hashes its input from them for recipe.json's provenance, so each page of the input is read
//! (and faulted into the process, which on a VM costs about as much as hashing it) once, not
//! once by the kernels and again by the digest. A tensor is passed on as the kernels start on
//! it, as a task of the run's own pool beside the tensor's chunks: the pool's threads share
//! the work (a thread of its own would make three busy threads on a two-core machine, the
//! scheduler slicing them and the kernels' joins waiting), and the digester reads the pages
//! the kernels are reading, holding no mapping the run does not hold.

use std::io;
use std::sync::Arc;

use super::MappedRange;
use super::files::InputDigests;

/// One tensor's bytes as the run mapped them.
#[derive(Clone)]
pub struct InputBytes(pub(super) Arc<MappedRange>);

impl InputBytes {
    pub fn bytes(&self) -> &[u8] {
        self.0.bytes()
    }
}

/// What the run passes on, weight file by weight file in the order of its inputs.
pub enum Fed {
    /// The bytes at `offset` in the current file (ranges come in ascending order and do not
    /// overlap; the header and any gaps between them are not passed).
    Range { offset: u64, bytes: InputBytes },
    /// The current weight file has no more ranges.
    EndFile,
}

/// Takes the run's bytes and gives the input's digests at the end.
pub trait InputDigester: Send {
    /// Takes what the run passes on (an error is kept for [`InputDigester::finish`]).
    fn take(&mut self, fed: Fed);
    /// Reads whatever was not passed on (side files, headers, gaps) and gives the digests.
    fn finish(self: Box<Self>) -> io::Result<InputDigests>;
}
