//! Runtime CPU-feature dispatch for the hot loops.
//!
//! Each hot loop is written once, as plain Rust shaped so the compiler can vectorise it
//! (independent lanes, selects instead of branches). [`multiversion!`] compiles that body three
//! times: for the baseline x86-64 target (SSE2), with AVX2, FMA and F16C, and with AVX-512
//! (F, BW, VL) on top; the caller gets the best version the CPU runs, detected once. All versions
//! compute bit-identical results: Rust never contracts `a * b + c` into a fused multiply-add nor
//! reassociates float operations on its own, so the instruction set changes the speed, not the
//! values. `SQUEEZE_SIMD=baseline` or `=avx2` caps the level; a CLI test compresses the same
//! model at every level and compares bytes.

use std::sync::OnceLock;

/// Which compiled version of the hot loops runs on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// The baseline target only.
    Baseline,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512 (F, BW, VL) on top of AVX2.
    Avx512,
}

impl Level {
    /// Name for benchmark output.
    pub fn name(self) -> &'static str {
        match self {
            Level::Baseline => "baseline (SSE2)",
            Level::Avx2 => "AVX2+FMA+F16C",
            Level::Avx512 => "AVX-512",
        }
    }
}

/// The level this process uses: the best the CPU supports, unless `SQUEEZE_SIMD` (`baseline` or
/// `avx2`) caps it (for comparing the versions in benchmarks and tests).
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| match std::env::var("SQUEEZE_SIMD").as_deref() {
        Ok("baseline") => Level::Baseline,
        Ok("avx2") => detect().min(Level::Avx2),
        _ => detect(),
    })
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Level {
    if !(is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c"))
    {
        Level::Baseline
    } else if is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
    {
        Level::Avx512
    } else {
        Level::Avx2
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Level {
    Level::Baseline
}

/// Defines `fn name(args) -> ret` whose body is compiled for the baseline target, for AVX2 and
/// for AVX-512, dispatching on [`level`]. The body must be plain code (no generics on the function).
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
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                match $crate::numeric::simd::level() {
                    // SAFETY: `level` returns Avx512 only when the CPU has AVX-512 F/BW/VL and
                    // AVX2, FMA and F16C.
                    $crate::numeric::simd::Level::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: `level` returns Avx2 only when the CPU has AVX2, FMA and F16C.
                    $crate::numeric::simd::Level::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::numeric::simd::Level::Baseline => {}
                }
            }
            body($($arg),*)
        }
    };
}

pub(crate) use multiversion;
