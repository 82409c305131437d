//! The artifact writer on its own thread, one tensor behind the kernels: while the pool
//! compresses tensor n + 1, this thread packs, hashes and writes tensor n, so the output's
//! SHA-256 and the kernel's copy into the page cache no longer stall the cores between tensors.
//! The hand-off is a rendezvous: at most two tensors' buffers are alive at once (the one being
//! written and the one being computed), so memory stays at a few tensors. Buffers come back
//! to be reused, sparing fresh memory's page faults. A writer error (or panic) stops the thread;
//! the pipeline sees it at its next hand-off or at [`WriteBehind::finish`].

use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use crate::compress::encoded::Encoded;
use crate::formats::safetensors::{Header, TensorInfo};
use crate::formats::writer::{ArtifactWriter, OutputFile, TensorOut};
use crate::pipeline::files::{PipelineError, panic_message};

/// A tensor's dense bytes as handed to the writer.
pub(crate) enum Dense {
    /// A buffer of the pipeline's, returned for reuse once written.
    Buffer(Vec<u8>),
    /// The input's own bytes, mapped (a tensor left as it was).
    Mapped(std::sync::Arc<super::MappedRange>),
}

impl Dense {
    fn bytes(&self) -> &[u8] {
        match self {
            Dense::Buffer(b) => b,
            Dense::Mapped(m) => m.bytes(),
        }
    }
}

enum Command {
    BeginFile(String, Header),
    Tensor {
        index: usize,
        info: TensorInfo,
        dense: Dense,
        encoded: Option<Encoded>,
        /// The tensor's bits when the writer has no layout of its own to count.
        theoretical_bits: f64,
    },
    EndFile,
}

/// What the writer reported, per tensor (by the index the pipeline gave it) and per file.
#[derive(Default)]
pub(crate) struct Written {
    /// (index, bytes stored, theoretical bits).
    pub(crate) tensors: Vec<(usize, u64, f64)>,
    pub(crate) files: Vec<OutputFile>,
}

type Finished = (Box<dyn ArtifactWriter + Send>, Written);

/// The writer thread and its two channels.
pub(crate) struct WriteBehind {
    commands: Option<SyncSender<Command>>,
    returned: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<Result<Finished, PipelineError>>>,
}

impl WriteBehind {
    /// Moves `writer` onto its own thread.
    pub(crate) fn start(writer: Box<dyn ArtifactWriter + Send>) -> WriteBehind {
        let (commands, receive) = sync_channel::<Command>(0);
        let (give_back, returned) = channel();
        let thread = std::thread::Builder::new()
            .name("squeeze-writer".into())
            .spawn(move || {
                let mut writer = writer;
                let mut written = Written::default();
                for command in receive {
                    let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        apply(writer.as_mut(), command, &mut written, &give_back)
                    }));
                    match step {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(e),
                        Err(payload) => {
                            return Err(PipelineError::Internal(format!(
                                "writing the artifact: {}",
                                panic_message(payload.as_ref())
                            )));
                        }
                    }
                }
                Ok((writer, written))
            })
            .expect("a thread can be spawned");
        WriteBehind {
            commands: Some(commands),
            returned,
            thread: Some(thread),
        }
    }

    /// A buffer the writer has finished with, or a new one.
    pub(crate) fn buffer(&self) -> Vec<u8> {
        self.returned.try_recv().unwrap_or_default()
    }

    pub(crate) fn begin_file(&mut self, name: &str, header: &Header) -> Result<(), PipelineError> {
        self.send(Command::BeginFile(name.to_owned(), header.clone()))
    }

    /// Hands tensor `index` over; returns once the writer has taken it (having written the
    /// tensor before it).
    pub(crate) fn tensor(
        &mut self,
        index: usize,
        info: &TensorInfo,
        dense: Dense,
        encoded: Option<Encoded>,
        theoretical_bits: f64,
    ) -> Result<(), PipelineError> {
        self.send(Command::Tensor {
            index,
            info: info.clone(),
            dense,
            encoded,
            theoretical_bits,
        })
    }

    pub(crate) fn end_file(&mut self) -> Result<(), PipelineError> {
        self.send(Command::EndFile)
    }

    /// Waits for everything handed over to be written; returns the writer for the side files.
    pub(crate) fn finish(mut self) -> Result<Finished, PipelineError> {
        self.commands.take();
        self.join()
    }

    fn send(&mut self, command: Command) -> Result<(), PipelineError> {
        let sent = self.commands.as_ref().map(|c| c.send(command).is_ok());
        match sent {
            Some(true) => Ok(()),
            // The thread has stopped: its error says why.
            _ => {
                self.commands.take();
                Err(self.join().err().unwrap_or_else(|| {
                    PipelineError::Internal("the artifact writer stopped early".into())
                }))
            }
        }
    }

    fn join(&mut self) -> Result<Finished, PipelineError> {
        let thread = self.thread.take().ok_or_else(|| {
            PipelineError::Internal("the artifact writer was already stopped".into())
        })?;
        thread.join().unwrap_or_else(|payload| {
            Err(PipelineError::Internal(format!(
                "writing the artifact: {}",
                panic_message(payload.as_ref())
            )))
        })
    }
}

impl Drop for WriteBehind {
    /// On an early return (an error, a cancel) the thread is told to stop and waited for, so
    /// no file is still being written when the caller cleans up.
    fn drop(&mut self) {
        self.commands.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn apply(
    writer: &mut dyn ArtifactWriter,
    command: Command,
    written: &mut Written,
    give_back: &std::sync::mpsc::Sender<Vec<u8>>,
) -> Result<(), PipelineError> {
    match command {
        Command::BeginFile(name, header) => writer.begin_file(&name, &header)?,
        Command::Tensor {
            index,
            info,
            dense,
            encoded,
            theoretical_bits,
        } => {
            let stored = writer.tensor(TensorOut {
                info: &info,
                dense: dense.bytes(),
                encoded: encoded.as_ref(),
            })?;
            let bits = writer.layout_bits().unwrap_or(theoretical_bits);
            written.tensors.push((index, stored, bits));
            if let Dense::Buffer(buffer) = dense {
                // The pipeline may have finished; then the buffer is simply dropped.
                let _ = give_back.send(buffer);
            }
            if let Some(encoded) = encoded {
                crate::compress::spare::give_back(encoded);
            }
        }
        Command::EndFile => written.files.extend(writer.end_file()?),
    }
    Ok(())
}
