//! The bytes a run maps from its weight files, passed on in file order to another thread. The
//! CLI hashes its input from them for recipe.json's provenance, so each page of the input is
//! read (and faulted into the process, which on a VM costs about as much as hashing it) once,
//! not once by the kernels and again by the digest. A tensor is passed on, through a
//! rendezvous, as the kernels start on it: the consumer reads the pages the kernels are
//! reading (whichever touches a page first maps it for both), holds no mapping the run does
//! not hold, and, hashing faster on one core than the kernels compress on the rest, is ready
//! for the next tensor by the time the run is.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::MappedRange;

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

/// The sending end, given to the run inside its [`super::ModelDigest`].
pub type InputFeed = SyncSender<Fed>;

/// A feed and its receiving end.
pub fn channel() -> (InputFeed, Receiver<Fed>) {
    sync_channel(0)
}
