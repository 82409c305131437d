//! The fidelity sums of a chunk: the stored values against the original ones (energies, dot
//! product, largest error, zeros, non-finite count), accumulated in vector lanes, fused with
//! storing the values in the output dtype where that dtype allows it, so the original is re-read
//! from the input bytes rather than kept as a decoded copy.

use crate::numeric::Dtype;
use crate::numeric::codec;
use crate::numeric::simd::multiversion;

/// Partial sums for the fidelity metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Sums {
    pub(crate) orig_sq: f64,
    pub(crate) out_sq: f64,
    pub(crate) err_sq: f64,
    pub(crate) dot: f64,
    pub(crate) max_abs: f64,
    pub(crate) zeros: u64,
    pub(crate) non_finite: u64,
    /// Stored values that are not finite where the original was: the method or the format
    /// cannot represent the tensor (see [`settle_overflow`]).
    pub(crate) unrepresentable: u64,
    pub(crate) count: u64,
}

impl Sums {
    pub(crate) fn merge(mut self, o: Sums) -> Sums {
        self.orig_sq += o.orig_sq;
        self.out_sq += o.out_sq;
        self.err_sq += o.err_sq;
        self.dot += o.dot;
        self.max_abs = self.max_abs.max(o.max_abs);
        self.zeros += o.zeros;
        self.non_finite += o.non_finite;
        self.unrepresentable += o.unrepresentable;
        self.count += o.count;
        self
    }

    /// Whether some figure left the range of the f32 lanes although every original value was
    /// finite: weights near the dtype's maximum square past f32's range, or a stored value
    /// rounded past the output dtype's largest finite value.
    pub(crate) fn overflowed(&self) -> bool {
        self.non_finite == 0
            && ![
                self.orig_sq,
                self.out_sq,
                self.err_sq,
                self.dot,
                self.max_abs,
            ]
            .iter()
            .all(|v| v.is_finite())
    }
}

/// The largest finite value of a float dtype, as f32 (values are computed in f32).
fn finite_max(dtype: Dtype) -> f32 {
    match dtype {
        Dtype::F16 => 65504.0,
        Dtype::BF16 => f32::from_bits(0x7F7F_0000),
        _ => f32::MAX,
    }
}

/// The rare path of a chunk whose figures [`Sums::overflowed`]: stored infinities where the
/// original was finite are saturated to the dtype's largest finite value (the rounding that
/// overflowed moved the value by less than one step of the dtype), then the sums are taken
/// again over the stored bytes in f64, whose range holds the square of any f32. Any other
/// non-finite stored value where the original was finite is counted as unrepresentable, for
/// the caller to refuse.
pub(crate) fn settle_overflow(dtype: Dtype, input: &[u8], out: &mut [u8]) -> Sums {
    let width = crate::numeric::float_width(dtype);
    let count = input.len() / width;
    let mut original = vec![0f32; count];
    let mut stored = vec![0f32; count];
    codec::decode(dtype, input, &mut original);
    codec::decode(dtype, out, &mut stored);
    let max = finite_max(dtype);
    // Only a store into a narrower dtype rounds a finite f32 up to infinity; an infinity in
    // F32 came from a computation that overflowed, which no saturation makes right.
    let narrower = matches!(dtype, Dtype::F16 | Dtype::BF16);
    let mut saturated = false;
    for (s, o) in stored.iter_mut().zip(&original) {
        if narrower && s.is_infinite() && o.is_finite() {
            *s = max.copysign(*s);
            saturated = true;
        }
    }
    if saturated {
        codec::encode(dtype, &stored, out);
    }
    let mut sums = Sums {
        count: count as u64,
        ..Sums::default()
    };
    for (&x, &y) in original.iter().zip(&stored) {
        if !x.is_finite() {
            sums.non_finite += 1;
            continue;
        }
        if !y.is_finite() {
            sums.unrepresentable += 1;
            continue;
        }
        let (x, y) = (f64::from(x), f64::from(y));
        let e = x - y;
        sums.orig_sq += x * x;
        sums.out_sq += y * y;
        sums.err_sq += e * e;
        sums.dot += x * y;
        sums.max_abs = sums.max_abs.max(e.abs());
        sums.zeros += u64::from(y == 0.0);
    }
    sums
}

/// Independent f32 accumulators for the metric sums: lanes the compiler keeps in vector
/// registers. Each lane sums at most two thousand values of a chunk before the fold into f64, so the
/// norms carry a relative rounding error around 1e-5 at worst: ample for error metrics.
pub(crate) const LANES: usize = 8;

#[derive(Default)]
pub(crate) struct Lanes {
    pub(crate) orig_sq: [f32; LANES],
    pub(crate) out_sq: [f32; LANES],
    pub(crate) err_sq: [f32; LANES],
    pub(crate) dot: [f32; LANES],
    pub(crate) max_abs: [f32; LANES],
    pub(crate) zeros: [u32; LANES],
    pub(crate) non_finite: [u32; LANES],
    pub(crate) padding: u64,
}

impl Lanes {
    #[inline(always)]
    pub(crate) fn add(&mut self, a: &[f32; LANES], b: &[f32; LANES]) {
        for i in 0..LANES {
            let (x, y) = (a[i], b[i]);
            let e = x - y;
            // Fused multiply-adds: one instruction where the CPU has them, and the same
            // result on every CPU (a software FMA on the baseline).
            self.orig_sq[i] = x.mul_add(x, self.orig_sq[i]);
            self.out_sq[i] = y.mul_add(y, self.out_sq[i]);
            self.err_sq[i] = e.mul_add(e, self.err_sq[i]);
            self.dot[i] = x.mul_add(y, self.dot[i]);
            let ae = e.abs();
            self.max_abs[i] = if ae > self.max_abs[i] {
                ae
            } else {
                self.max_abs[i]
            };
            self.zeros[i] += u32::from(y == 0.0);
            // Finite values have an exponent below all ones.
            self.non_finite[i] += u32::from(x.to_bits() & 0x7F80_0000 == 0x7F80_0000);
        }
    }

    /// Fewer than LANES values (the end of a chunk), zero-padded; the padding's zeros are
    /// taken back from the count.
    #[inline(always)]
    pub(crate) fn add_partial(&mut self, a: &[f32], b: &[f32]) {
        let mut x = [0f32; LANES];
        let mut y = [0f32; LANES];
        x[..a.len()].copy_from_slice(a);
        y[..b.len()].copy_from_slice(b);
        self.add(&x, &y);
        self.padding += (LANES - a.len()) as u64;
    }

    #[inline(always)]
    pub(crate) fn finish(self, count: usize) -> Sums {
        let sum = |lanes: &[f32; LANES]| lanes.iter().map(|&v| f64::from(v)).sum::<f64>();
        Sums {
            orig_sq: sum(&self.orig_sq),
            out_sq: sum(&self.out_sq),
            err_sq: sum(&self.err_sq),
            dot: sum(&self.dot),
            max_abs: self.max_abs.iter().fold(0f64, |m, &v| m.max(f64::from(v))),
            zeros: self.zeros.iter().map(|&z| u64::from(z)).sum::<u64>() - self.padding,
            non_finite: self.non_finite.iter().map(|&z| u64::from(z)).sum(),
            unrepresentable: 0,
            count: count as u64,
        }
    }
}

multiversion! {
    /// The metric sums of one chunk, for stored values already in `output`.
    fn chunk_sums(original: &[f32], output: &[f32]) -> Sums {
        let mut lanes = Lanes::default();
        let mut a_chunks = original.chunks_exact(LANES);
        let mut b_chunks = output.chunks_exact(LANES);
        for (a, b) in (&mut a_chunks).zip(&mut b_chunks) {
            lanes.add(a.try_into().expect("LANES"), b.try_into().expect("LANES"));
        }
        lanes.add_partial(a_chunks.remainder(), b_chunks.remainder());
        lanes.finish(original.len())
    }
}

/// Writes `values` in `dtype` into `out` and returns the metric sums of the stored values
/// against the original ones, decoded again from `input`; one pass where the dtype allows it
/// (`scratch` holds the decoded original otherwise).
pub(crate) fn store_and_measure(
    dtype: Dtype,
    input: &[u8],
    scratch: &mut Vec<f32>,
    values: &mut [f32],
    out: &mut [u8],
) -> Sums {
    match dtype {
        Dtype::BF16 => store_bf16_and_measure(input, values, out),
        Dtype::F32 => store_f32_and_measure(input, values, out),
        _ => {
            scratch.resize(values.len(), 0.0);
            codec::decode(dtype, input, scratch);
            codec::encode_rounding(dtype, values, out);
            chunk_sums(scratch, values)
        }
    }
}

/// How a stored dtype is read and written, value by value: inlined into each dtype's
/// multiversioned loop. Rounding and storing are separate steps so the loops round in 32-bit
/// vector lanes and narrow only to store (the vectoriser scalarises a fused round-and-store).
pub(crate) trait Codec: Copy {
    /// Bytes per value.
    const WIDTH: usize;

    /// The value at the start of `b`.
    fn read(b: &[u8]) -> f32;

    /// `v` as this dtype stores it.
    fn round(v: f32) -> f32;

    /// Stores `rounded` (a value [`Codec::round`] returned) in `o`.
    fn store(rounded: f32, o: &mut [u8]);
}

/// bfloat16, rounded to nearest even.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bf16;

impl Codec for Bf16 {
    const WIDTH: usize = 2;

    #[inline(always)]
    fn read(b: &[u8]) -> f32 {
        f32::from_bits(u32::from(u16::from_le_bytes(b[..2].try_into().expect("two bytes"))) << 16)
    }

    #[inline(always)]
    fn round(v: f32) -> f32 {
        codec::bf16_rounded(v)
    }

    #[inline(always)]
    fn store(rounded: f32, o: &mut [u8]) {
        o.copy_from_slice(&((rounded.to_bits() >> 16) as u16).to_le_bytes());
    }
}

/// Little-endian IEEE single precision.
#[derive(Debug, Clone, Copy)]
pub(crate) struct F32;

impl Codec for F32 {
    const WIDTH: usize = 4;

    #[inline(always)]
    fn read(b: &[u8]) -> f32 {
        f32::from_le_bytes(b[..4].try_into().expect("four bytes"))
    }

    #[inline(always)]
    fn round(v: f32) -> f32 {
        v
    }

    #[inline(always)]
    fn store(rounded: f32, o: &mut [u8]) {
        o.copy_from_slice(&rounded.to_le_bytes());
    }
}

/// Stores LANES values, already rounded by `C`, into their output bytes.
#[inline(always)]
pub(crate) fn store_lanes<C: Codec>(stored: &[f32; LANES], out: &mut [u8]) {
    for (v, o) in stored.iter().zip(out.chunks_exact_mut(C::WIDTH)) {
        C::store(*v, o);
    }
}

/// [`chunk_sums`] fused with storing `values` in `C`, the original decoded again from `input`.
#[inline(always)]
pub(crate) fn store_and_measure_as<C: Codec>(input: &[u8], values: &[f32], out: &mut [u8]) -> Sums {
    let width = C::WIDTH;
    let mut lanes = Lanes::default();
    let mut i_chunks = input.chunks_exact(width * LANES);
    let mut v_chunks = values.chunks_exact(LANES);
    let mut o_chunks = out.chunks_exact_mut(width * LANES);
    for ((inp, v), o) in (&mut i_chunks).zip(&mut v_chunks).zip(&mut o_chunks) {
        let mut original = [0f32; LANES];
        let mut stored = [0f32; LANES];
        for i in 0..LANES {
            original[i] = C::read(&inp[width * i..]);
            stored[i] = C::round(v[i]);
        }
        store_lanes::<C>(&stored, o);
        lanes.add(&original, &stored);
    }
    store_and_measure_rest::<C>(
        &mut lanes,
        i_chunks.remainder(),
        v_chunks.remainder(),
        o_chunks.into_remainder(),
    );
    lanes.finish(values.len())
}

/// The last values of a chunk, fewer than [`LANES`]: rounded, stored and added to `lanes`
/// zero-padded, as [`store_and_measure_as`] ends (the AVX2 kernel ends the same way).
#[inline(always)]
pub(crate) fn store_and_measure_rest<C: Codec>(
    lanes: &mut Lanes,
    input: &[u8],
    values: &[f32],
    out: &mut [u8],
) {
    let mut original = [0f32; LANES];
    let mut stored = [0f32; LANES];
    for (i, o) in out.chunks_exact_mut(C::WIDTH).enumerate() {
        original[i] = C::read(&input[C::WIDTH * i..]);
        stored[i] = C::round(values[i]);
        C::store(stored[i], o);
    }
    lanes.add_partial(&original[..values.len()], &stored[..values.len()]);
}

multiversion! {
    /// [`store_and_measure_as`] BF16.
    fn store_bf16_and_measure(input: &[u8], values: &[f32], out: &mut [u8]) -> Sums {
        store_and_measure_as::<Bf16>(input, values, out)
    }
}

multiversion! {
    /// [`store_and_measure_as`] F32.
    fn store_f32_and_measure(input: &[u8], values: &[f32], out: &mut [u8]) -> Sums {
        store_and_measure_as::<F32>(input, values, out)
    }
}
