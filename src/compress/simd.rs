//! Runtime CPU-feature dispatch for the hot loops.
//!
//! Each hot loop is written once, as plain Rust shaped so the compiler can vectorise it
//! (independent lanes, selects instead of branches). [`multiversion!`] compiles that body twice:
//! for the baseline x86-64 target (SSE2), and with AVX2, FMA and F16C enabled; the caller gets
//! the best version the CPU runs, detected once. Both versions compute bit-identical results:
//! Rust never contracts `a * b + c` into a fused multiply-add nor reassociates float operations
//! on its own, so the instruction set changes the speed, not the values. `SQUEEZE_SIMD=baseline`
//! forces the baseline twin; a CLI test compresses the same model both ways and compares bytes.

use std::sync::OnceLock;

/// Which compiled version of the hot loops runs on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The baseline target only.
    Baseline,
    /// AVX2 + FMA + F16C.
    Avx2,
}

impl Level {
    /// Name for benchmark output.
    pub fn name(self) -> &'static str {
        match self {
            Level::Baseline => "baseline (SSE2)",
            Level::Avx2 => "AVX2+FMA+F16C",
        }
    }
}

/// The level this process uses: the best the CPU supports, unless `SQUEEZE_SIMD=baseline`
/// forces the baseline (for comparing the two in benchmarks and tests).
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        if std::env::var("SQUEEZE_SIMD").is_ok_and(|v| v == "baseline") {
            return Level::Baseline;
        }
        detect()
    })
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Level {
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        Level::Avx2
    } else {
        Level::Baseline
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Level {
    Level::Baseline
}

/// Defines `fn name(args) -> ret` whose body is compiled for the baseline target and for AVX2,
/// dispatching on [`level`]. The body must be plain code (no generics on the function).
macro_rules! multiversion {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma,f16c")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if $crate::compress::simd::level() == $crate::compress::simd::Level::Avx2 {
                    // SAFETY: `level` returns Avx2 only when the CPU has AVX2, FMA and F16C.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

pub(crate) use multiversion;
