//! Byte buffers for stored forms (integer and FP8 codes, GGUF blocks), handed back once the
//! writer has written them and taken again for the next tensor. A tensor's stored form is tens
//! of megabytes; fresh memory of that size comes from the kernel as zeroed pages, a fault per
//! 4 KiB on first touch and an unmap when freed, which cost a tenth of a fast preset's CPU.
//! The pool keeps at most two buffers (the write-behind has one tensor being written while the
//! next is computed) and a run empties it when it ends, so nothing stays resident between jobs.

use std::sync::Mutex;

use crate::compress::encoded::Encoded;

/// Buffers kept at most.
const KEPT: usize = 2;

static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn pool() -> std::sync::MutexGuard<'static, Vec<Vec<u8>>> {
    // A panic elsewhere while the lock was held leaves a list of buffers, still valid.
    SPARE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A buffer of `len` bytes for the caller to overwrite whole, reusing a returned one when
/// there is one. Its bytes are whatever they were (zeroing them again cost a fortieth of a
/// fast preset's CPU); test builds fill them with a marker, so a byte a kernel leaves unwritten
/// shows up against the general path.
pub(crate) fn for_overwrite(len: usize) -> Vec<u8> {
    let reused = {
        let mut spare = pool();
        // The smallest that holds `len` without growing, else the largest (grown once).
        let fitting = (0..spare.len())
            .filter(|&i| spare[i].capacity() >= len)
            .min_by_key(|&i| spare[i].capacity())
            .or_else(|| (0..spare.len()).max_by_key(|&i| spare[i].capacity()));
        fitting.map(|i| spare.swap_remove(i))
    };
    let mut buffer = match reused {
        Some(mut buffer) => {
            buffer.resize(len, 0);
            buffer
        }
        None => vec![0u8; len],
    };
    if cfg!(any(test, debug_assertions)) {
        buffer.fill(UNWRITTEN);
    }
    buffer
}

/// What a test build's buffers hold before they are written.
const UNWRITTEN: u8 = 0xA5;

/// Takes back the largest byte buffer of a stored form that has been written.
pub(crate) fn give_back(encoded: Encoded) {
    let buffer = match encoded {
        Encoded::Int { codes, .. } => codes.into_iter().map(|c| c as u8).collect(),
        Encoded::Fp8 { codes, .. } => codes,
        Encoded::Gguf { blocks, .. } => blocks,
        _ => return,
    };
    let mut spare = pool();
    if spare.len() < KEPT {
        spare.push(buffer);
    } else if let Some(smallest) = spare.iter_mut().min_by_key(|b| b.capacity())
        && smallest.capacity() < buffer.capacity()
    {
        *smallest = buffer;
    }
}

/// Frees every kept buffer.
pub(crate) fn release() {
    pool().clear();
}

/// Frees the kept buffers when dropped: a run holds one, so whichever way it ends (done,
/// failed, canceled) its buffers do not outlive it.
pub(crate) struct ReleaseOnDrop;

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::blocks::BlockType;

    #[test]
    fn a_returned_buffer_is_reused_marked_and_the_pool_stays_small() {
        // The pool is shared by every test thread: assert only on what this test can see.
        let mut blocks = for_overwrite(1 << 16);
        assert!(blocks.iter().all(|&b| b == UNWRITTEN));
        blocks.fill(0);
        let pointer = blocks.as_ptr();
        give_back(Encoded::Gguf {
            kind: BlockType::Q8_0,
            blocks,
        });
        let again = for_overwrite(1 << 12);
        assert_eq!(again.len(), 1 << 12);
        assert!(again.iter().all(|&b| b == UNWRITTEN));
        // Another test may have taken it first; when this one got it, it is the same memory.
        if again.capacity() >= 1 << 16 {
            assert_eq!(again.as_ptr(), pointer);
        }
        for _ in 0..5 {
            give_back(Encoded::Fp8 {
                codes: vec![1; 64],
                scales: vec![1.0],
            });
        }
        assert!(pool().len() <= KEPT);
        release();
    }
}
