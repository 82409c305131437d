//! The leaf every computing module stands on: the element types of stored tensors, the
//! f16/bf16/f32 codecs with their SIMD and scalar twins, the CPU-feature dispatch, the cancel
//! flag long work polls, the seeded random generator, and how figures cross JSON. It imports
//! nothing of squeeze's; `compress`, `formats`, `eval` and everything above import it.

pub mod cancel;
pub mod codec;
pub mod dtype;
pub mod figure;
pub mod rng;
pub mod simd;

pub use cancel::{Cancel, Canceled};
pub use dtype::{Dtype, float_width, is_float};
pub use figure::{Metric, NonFinite, metric};
pub use rng::SplitMix;
