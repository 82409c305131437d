//! Accuracy-aware compression: methods that look at what a layer's inputs really are, taken
//! from a calibration set run through the model, rather than at the weights alone. Pure and
//! synchronous like `compress`: the statistics come in as plain sums, the layers go out as
//! codes and values, and the worker or CLI runs it on the rayon pool.
//!
//! - [`gptq`]: integer quantization with each column's rounding error compensated by the
//!   columns after it, through the inverse Hessian of the layer's inputs.

pub mod gptq;
