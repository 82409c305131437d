//! compressed-tensors, the checkpoint layout vLLM and transformers load: which tensors stand for
//! one compressed linear weight (`pack-quantized` codes packed into int32 words,
//! `naive-quantized` int8, `float-quantized` FP8, each with its scales and, when asymmetric,
//! zero-points; `sparse-bitmask` and `sparse-24-bitmask` for pruned weights), and the
//! `quantization_config` block of `config.json` that describes them. Byte facts and their
//! sources: shared/reference/formats.md §2.

use std::borrow::Cow;

use serde_json::{Value, json};

use crate::compress::encoded::Encoded;
use crate::compress::quantize::{Granularity, IntScheme};
use crate::formats::bits;
use crate::numeric::Dtype;
use crate::numeric::codec;
use crate::numeric::simd::multiversion;

pub mod read;
pub mod write;

/// One tensor as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTensor<'a> {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Little-endian data: borrowed where the codes or dense bytes are stored as they are.
    pub data: Cow<'a, [u8]>,
}

/// How a compressed weight's values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantFormat {
    /// Integer codes packed into int32 words (below 8 bits).
    PackQuantized,
    /// int8 codes as an I8 tensor.
    NaiveQuantized,
    /// FP8 E4M3 values as an F8_E4M3 tensor.
    FloatQuantized,
}

impl QuantFormat {
    /// The format's name in `quantization_config`.
    pub fn name(self) -> &'static str {
        match self {
            QuantFormat::PackQuantized => "pack-quantized",
            QuantFormat::NaiveQuantized => "naive-quantized",
            QuantFormat::FloatQuantized => "float-quantized",
        }
    }
}

/// How a pruned weight's zeros are left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SparseFormat {
    /// Non-zeros with a bitmask per row and row offsets.
    Bitmask,
    /// The two kept values of every four, with a bitmask of the kept positions.
    TwoFour,
}

impl SparseFormat {
    /// The format's name in `sparsity_config`.
    pub fn name(self) -> &'static str {
        match self {
            SparseFormat::Bitmask => "sparse-bitmask",
            SparseFormat::TwoFour => "sparse-24-bitmask",
        }
    }

    /// `sparsity_structure` in `sparsity_config`.
    pub fn structure(self) -> &'static str {
        match self {
            SparseFormat::Bitmask => "unstructured",
            SparseFormat::TwoFour => "2:4",
        }
    }
}

/// The module a weight belongs to: its name without `.weight`.
pub fn module_of(weight: &str) -> &str {
    weight.strip_suffix(".weight").unwrap_or(weight)
}

/// The stored form's quantization format, if it is quantized.
pub fn quant_format(encoded: &Encoded) -> Option<QuantFormat> {
    match encoded {
        Encoded::Int { scheme, .. } if scheme.bits < 8 => Some(QuantFormat::PackQuantized),
        Encoded::Int { .. } => Some(QuantFormat::NaiveQuantized),
        Encoded::Fp8 { .. } => Some(QuantFormat::FloatQuantized),
        _ => None,
    }
}

/// Packs each row's `bits`-wide unsigned values into little-endian int32 words, value `i` at
/// bits `[i·bits, (i+1)·bits)` of the row's stream, rows padded to whole words (the layout of
/// compressed-tensors ≥ 0.18, identical to older versions for 2, 4 and 8 bits).
pub fn pack_rows(values: &[u32], rows: usize, cols: usize, bits: u8) -> Vec<u8> {
    bits::pack(values, rows, cols, bits, 4)
}

/// The inverse of [`pack_rows`].
pub fn unpack_rows(bytes: &[u8], rows: usize, cols: usize, bits: u8) -> Vec<u32> {
    bits::unpack(bytes, rows, cols, bits, 4)
}

fn encode_floats(dtype: Dtype, values: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; values.len() * crate::numeric::float_width(dtype)];
    codec::encode(dtype, values, &mut out);
    out
}

fn i64s(values: &[u64]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| (*v as i64).to_le_bytes())
        .collect()
}

/// The tensors that store one compressed weight `name` ([rows, cols], of `dtype`): its codes
/// and parameters when quantized, its dense bytes (`dense`) otherwise, with the zeros left out
/// by `sparse` where the values are stored one per element.
pub fn weight_tensors<'a>(
    name: &str,
    dtype: Dtype,
    rows: usize,
    cols: usize,
    encoded: &'a Encoded,
    dense: &'a [u8],
    sparse: Option<SparseFormat>,
) -> Vec<StoredTensor<'a>> {
    let module = module_of(name);
    let (r, c) = (rows as u64, cols as u64);
    let mut out = Vec::new();
    // The tensor holding one value per element, when there is one: it may be sparse-compressed.
    let mut elementwise: Option<(Dtype, Cow<'a, [u8]>)> = None;
    match encoded {
        Encoded::Int {
            scheme,
            codes,
            params,
        } => {
            let scale_shape = param_shape(scheme, r, c);
            let scales: Vec<f32> = params.iter().map(|p| p.scale).collect();
            out.push(stored(
                module,
                "weight_scale",
                dtype,
                scale_shape.clone(),
                encode_floats(dtype, &scales),
            ));
            let zero_points: Vec<i32> = params.iter().map(|p| p.zero_point).collect();
            if scheme.bits < 8 {
                let offset = 1i32 << (scheme.bits - 1);
                let unsigned: Vec<u32> = codes
                    .iter()
                    .map(|&q| (i32::from(q) + offset) as u32)
                    .collect();
                out.insert(
                    0,
                    stored(
                        module,
                        "weight_packed",
                        Dtype::I32,
                        vec![r, (c * u64::from(scheme.bits)).div_ceil(32)],
                        pack_rows(&unsigned, rows, cols, scheme.bits),
                    ),
                );
                out.push(stored(
                    module,
                    "weight_shape",
                    Dtype::I64,
                    vec![2],
                    i64s(&[r, c]),
                ));
                if !scheme.symmetric {
                    out.push(packed_zero_points(
                        module,
                        scheme,
                        &zero_points,
                        &scale_shape,
                    ));
                }
            } else {
                elementwise = Some((Dtype::I8, Cow::Borrowed(bytemuck::cast_slice(codes))));
                if !scheme.symmetric {
                    out.push(stored(
                        module,
                        "weight_zero_point",
                        Dtype::I8,
                        scale_shape,
                        zero_points
                            .iter()
                            .map(|&z| z as i8 as u8)
                            .collect::<Vec<u8>>(),
                    ));
                }
            }
        }
        Encoded::Fp8 { codes, scales } => {
            let shape = if scales.len() == 1 {
                vec![1]
            } else {
                vec![r, 1]
            };
            out.push(stored(
                module,
                "weight_scale",
                dtype,
                shape,
                encode_floats(dtype, scales),
            ));
            elementwise = Some((Dtype::F8_E4M3, Cow::Borrowed(codes)));
        }
        _ => elementwise = Some((dtype, Cow::Borrowed(dense))),
    }
    if let Some((element_dtype, data)) = elementwise {
        match sparse {
            None => out.insert(0, stored(module, "weight", element_dtype, vec![r, c], data)),
            Some(format) => {
                let width = (element_dtype.bits() / 8) as usize;
                let mut parts = sparse_tensors(format, element_dtype, width, rows, cols, &data);
                for p in &mut parts {
                    p.name = format!("{module}.{}", p.name);
                }
                // Parameters come after the values, as compressed-tensors writes them.
                parts.append(&mut out);
                out = parts;
            }
        }
    }
    out
}

/// A tensor of `module`'s.
fn stored<'a>(
    module: &str,
    suffix: &str,
    dtype: Dtype,
    shape: Vec<u64>,
    data: impl Into<Cow<'a, [u8]>>,
) -> StoredTensor<'a> {
    StoredTensor {
        name: format!("{module}.{suffix}"),
        dtype,
        shape,
        data: data.into(),
    }
}

/// What a weight's last step stores, as far as the names, dtypes and shapes of its tensors
/// depend on it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StoredForm {
    /// Values, one per element, in the weight's dtype.
    Dense,
    /// Integer codes.
    Int(IntScheme),
    /// E4M3 bytes with one scale per row, or one for the tensor.
    Fp8 {
        /// One scale per row.
        per_channel: bool,
    },
}

/// The tensors [`weight_tensors`] stores for weight `name` ([rows, cols], of `dtype`) in
/// `form` when no zeros are left out, as (name, dtype, shape), in order. They do not depend
/// on the values, so a writer can put a file's header before its data.
pub fn planned_tensors(
    name: &str,
    dtype: Dtype,
    rows: u64,
    cols: u64,
    form: StoredForm,
) -> Vec<(String, Dtype, Vec<u64>)> {
    let module = module_of(name);
    let tensor =
        |suffix: &str, dtype: Dtype, shape: Vec<u64>| (format!("{module}.{suffix}"), dtype, shape);
    match form {
        StoredForm::Dense => vec![tensor("weight", dtype, vec![rows, cols])],
        StoredForm::Fp8 { per_channel } => {
            let scale_shape = if per_channel && rows != 1 {
                vec![rows, 1]
            } else {
                vec![1]
            };
            vec![
                tensor("weight", Dtype::F8_E4M3, vec![rows, cols]),
                tensor("weight_scale", dtype, scale_shape),
            ]
        }
        StoredForm::Int(scheme) if scheme.bits < 8 => {
            let bits = u64::from(scheme.bits);
            let scale_shape = param_shape(&scheme, rows, cols);
            let mut out = vec![
                tensor(
                    "weight_packed",
                    Dtype::I32,
                    vec![rows, (cols * bits).div_ceil(32)],
                ),
                tensor("weight_scale", dtype, scale_shape.clone()),
                tensor("weight_shape", Dtype::I64, vec![2]),
            ];
            if !scheme.symmetric {
                out.push(if scale_shape == [1] {
                    tensor("weight_zero_point", Dtype::I8, vec![1])
                } else {
                    let words = (scale_shape[0] * bits).div_ceil(32);
                    tensor("weight_zero_point", Dtype::I32, vec![words, scale_shape[1]])
                });
            }
            out
        }
        StoredForm::Int(scheme) => {
            let scale_shape = param_shape(&scheme, rows, cols);
            let mut out = vec![
                tensor("weight", Dtype::I8, vec![rows, cols]),
                tensor("weight_scale", dtype, scale_shape.clone()),
            ];
            if !scheme.symmetric {
                out.push(tensor("weight_zero_point", Dtype::I8, scale_shape));
            }
            out
        }
    }
}

fn param_shape(scheme: &IntScheme, rows: u64, cols: u64) -> Vec<u64> {
    match scheme.granularity {
        Granularity::Tensor => vec![1],
        Granularity::Channel => vec![rows, 1],
        Granularity::Group(n) => vec![rows, cols / n as u64],
    }
}

/// Zero-points of a packed asymmetric scheme: per tensor a plain int8 `[1]`; otherwise the
/// `[rows, groups]` matrix offset to unsigned and packed down its columns (along the output
/// dimension) into `[ceil(rows·bits/32), groups]` int32 words.
fn packed_zero_points(
    module: &str,
    scheme: &IntScheme,
    zero_points: &[i32],
    shape: &[u64],
) -> StoredTensor<'static> {
    if shape == [1] {
        return StoredTensor {
            name: format!("{module}.weight_zero_point"),
            dtype: Dtype::I8,
            shape: vec![1],
            data: Cow::Owned(vec![zero_points[0] as i8 as u8]),
        };
    }
    let (rows, groups) = (shape[0] as usize, shape[1] as usize);
    let offset = 1i32 << (scheme.bits - 1);
    // Transpose so each column becomes a row of the bit stream, pack, transpose the words back.
    let columns: Vec<u32> = (0..groups)
        .flat_map(|g| (0..rows).map(move |r| (zero_points[r * groups + g] + offset) as u32))
        .collect();
    let packed = pack_rows(&columns, groups, rows, scheme.bits);
    let words = (rows * usize::from(scheme.bits)).div_ceil(32);
    let mut data = vec![0u8; words * groups * 4];
    for g in 0..groups {
        for w in 0..words {
            let from = (g * words + w) * 4;
            let to = (w * groups + g) * 4;
            data[to..to + 4].copy_from_slice(&packed[from..from + 4]);
        }
    }
    StoredTensor {
        name: format!("{module}.weight_zero_point"),
        dtype: Dtype::I32,
        shape: vec![words as u64, groups as u64],
        data: Cow::Owned(data),
    }
}

/// How many of the elements in `bytes` (of `dtype`) are zeros, as [`is_zero`] counts them.
pub fn count_zeros(dtype: Dtype, bytes: &[u8]) -> usize {
    match dtype {
        Dtype::F16 | Dtype::BF16 => count_zero_halves(bytes),
        Dtype::F32 => count_zero_singles(bytes),
        _ => {
            let width = usize::try_from(dtype.bits() / 8).unwrap_or(1).max(1);
            bytes.chunks(width).filter(|e| is_zero(dtype, e)).count()
        }
    }
}

multiversion! {
    /// Zeros of either sign among 16-bit floats.
    fn count_zero_halves(bytes: &[u8]) -> usize {
        bytes
            .chunks_exact(2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]]) << 1 == 0))
            .sum()
    }
}

multiversion! {
    /// Zeros of either sign among 32-bit floats.
    fn count_zero_singles(bytes: &[u8]) -> usize {
        bytes
            .chunks_exact(4)
            .map(|b| usize::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) << 1 == 0))
            .sum()
    }
}

/// Whether an element's bytes are a zero (for floats, either sign).
pub fn is_zero(dtype: Dtype, bytes: &[u8]) -> bool {
    match dtype {
        Dtype::F32 => u32::from_le_bytes(bytes.try_into().expect("4 bytes")) << 1 == 0,
        Dtype::F16 | Dtype::BF16 => {
            u16::from_le_bytes(bytes.try_into().expect("2 bytes")) << 1 == 0
        }
        Dtype::F8_E4M3 => bytes[0] << 1 == 0,
        _ => bytes.iter().all(|&b| b == 0),
    }
}

fn magnitude_rank(dtype: Dtype, bytes: &[u8]) -> f32 {
    match dtype {
        Dtype::F32 | Dtype::F16 | Dtype::BF16 => {
            let mut v = [0f32];
            codec::decode(dtype, bytes, &mut v);
            v[0].abs()
        }
        Dtype::F8_E4M3 => crate::compress::fp8::e4m3_to_f32(bytes[0]).abs(),
        _ => f32::from(bytes[0] as i8).abs(),
    }
}

/// The bitmask tensors of a `rows × cols` matrix of `width`-byte elements (names without the
/// module prefix): `shape`, `compressed`, `bitmask` (bit `j % 8` of byte `j / 8` of a row, least
/// significant first, marks column `j`), and `row_offsets` for the unstructured form.
pub fn sparse_tensors(
    format: SparseFormat,
    dtype: Dtype,
    width: usize,
    rows: usize,
    cols: usize,
    data: &[u8],
) -> Vec<StoredTensor<'static>> {
    let mask_row = cols.div_ceil(8);
    let mut bitmask = vec![0u8; rows * mask_row];
    let mut compressed = Vec::new();
    let mut row_offsets = Vec::with_capacity(rows);
    for (r, row) in data.chunks(cols * width).enumerate() {
        row_offsets.push((compressed.len() / width) as u64);
        let mask = &mut bitmask[r * mask_row..(r + 1) * mask_row];
        let keep: Vec<bool> = match format {
            SparseFormat::Bitmask => row.chunks(width).map(|e| !is_zero(dtype, e)).collect(),
            SparseFormat::TwoFour => row
                .chunks(4 * width)
                .flat_map(|group| {
                    // The two largest magnitudes of each four (first on ties), as topk(|x|, 2).
                    let mut order: Vec<usize> = (0..4).collect();
                    order.sort_by(|&a, &b| {
                        magnitude_rank(dtype, &group[b * width..(b + 1) * width])
                            .total_cmp(&magnitude_rank(dtype, &group[a * width..(a + 1) * width]))
                    });
                    (0..4).map(move |i| order[..2].contains(&i))
                })
                .collect(),
        };
        for (j, (&k, e)) in keep.iter().zip(row.chunks(width)).enumerate() {
            if k {
                mask[j / 8] |= 1 << (j % 8);
                compressed.extend_from_slice(e);
            }
        }
    }
    let (r, c) = (rows as u64, cols as u64);
    let named = |name: &str, dtype: Dtype, shape: Vec<u64>, data: Vec<u8>| StoredTensor {
        name: name.to_owned(),
        dtype,
        shape,
        data: Cow::Owned(data),
    };
    let nnz = (compressed.len() / width) as u64;
    match format {
        SparseFormat::Bitmask => vec![
            named("shape", Dtype::I64, vec![2], i64s(&[r, c])),
            named("compressed", dtype, vec![nnz], compressed),
            named("bitmask", Dtype::U8, vec![r, mask_row as u64], bitmask),
            named("row_offsets", Dtype::I64, vec![r], i64s(&row_offsets)),
        ],
        SparseFormat::TwoFour => vec![
            named("shape", Dtype::I64, vec![2, 1], i64s(&[r, c])),
            named("compressed", dtype, vec![r, c / 2], compressed),
            named("bitmask", Dtype::U8, vec![r, mask_row as u64], bitmask),
        ],
    }
}

/// What the quantized weights of a model share, for `quantization_config`.
#[derive(Debug, Clone)]
pub struct QuantGroup {
    /// Stored as.
    pub format: QuantFormat,
    /// `int` codes (with their scheme) or FP8 (`None`).
    pub int: Option<IntScheme>,
    /// FP8 with one scale per row (else per tensor).
    pub fp8_per_channel: bool,
    /// Module names of the quantized weights.
    pub targets: Vec<String>,
}

/// The sparse-compressed weights of a model, for `sparsity_config`.
#[derive(Debug, Clone)]
pub struct SparseGroup {
    /// Layout.
    pub format: SparseFormat,
    /// Module names.
    pub targets: Vec<String>,
    /// Fraction of zeros over them.
    pub global_sparsity: f64,
    /// Whether the zeros are left out (the bitmask layouts); otherwise every value is stored
    /// and `sparsity_config` only describes them (format `dense`).
    pub zeros_left_out: bool,
}

/// The compressed-tensors version whose reader the file is written for: sparse layouts were
/// dropped in 0.15, and 3/5/6/7-bit packing changed in 0.18.0 (formats.md §2.1 says 0.17, but the
/// published 0.17.1 still packs `32 // b` values per word; 0.18.0 packs across words).
pub fn reader_version(quant: Option<&QuantGroup>, sparse: Option<&SparseGroup>) -> &'static str {
    let odd_bits = quant
        .and_then(|q| q.int)
        .is_some_and(|s| ![2, 4, 8].contains(&s.bits));
    match (sparse.is_some_and(|s| s.zeros_left_out), odd_bits) {
        (true, _) => "0.14.0",
        (false, true) => "0.18.0",
        (false, false) => "0.12.2",
    }
}

/// The `quantization_config` block: one config group whose targets are the quantized modules by
/// exact name, every other linear-shaped module in `ignore` (vLLM refuses a linear layer that
/// no target or ignore entry names), and the sparsity block when weights were pruned.
pub fn quantization_config(
    quant: Option<&QuantGroup>,
    sparse: Option<&SparseGroup>,
    ignore: &[String],
) -> Value {
    let config_groups = match quant {
        None => json!({}),
        Some(q) => {
            let weights = match q.int {
                Some(scheme) => {
                    let (strategy, group_size) = match scheme.granularity {
                        Granularity::Tensor => ("tensor", Value::Null),
                        Granularity::Channel => ("channel", Value::Null),
                        Granularity::Group(n) => ("group", json!(n)),
                    };
                    json!({"num_bits": scheme.bits, "type": "int", "symmetric": scheme.symmetric,
                           "strategy": strategy, "group_size": group_size, "dynamic": false,
                           "actorder": null, "block_structure": null})
                }
                None => json!({"num_bits": 8, "type": "float", "symmetric": true,
                               "strategy": if q.fp8_per_channel { "channel" } else { "tensor" },
                               "group_size": null, "dynamic": false, "actorder": null,
                               "block_structure": null}),
            };
            json!({"group_0": {"targets": q.targets, "weights": weights,
                               "input_activations": null, "output_activations": null,
                               "format": q.format.name()}})
        }
    };
    let sparsity_config = match sparse {
        None => json!({}),
        Some(s) => json!({"format": if s.zeros_left_out { s.format.name() } else { "dense" },
                          "targets": s.targets, "ignore": [],
                          "global_sparsity": s.global_sparsity,
                          "sparsity_structure": s.format.structure()}),
    };
    let format = quant.map_or("dense", |q| q.format.name());
    json!({
        "quant_method": "compressed-tensors",
        "format": format,
        "quantization_status": "compressed",
        "config_groups": config_groups,
        "ignore": ignore,
        "kv_cache_scheme": null,
        "global_compression_ratio": null,
        "sparsity_config": sparsity_config,
        "transform_config": {},
        "version": reader_version(quant, sparse),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::quantize::{Granularity, ScaleDtype};
    use crate::compress::step::Step;
    use crate::compress::tensor::{TensorView, transform_encoded};
    use crate::numeric::Cancel;

    /// The header a writer plans before the data names exactly the tensors `weight_tensors`
    /// then stores, with their dtypes, shapes and byte lengths, for every integer scheme, FP8
    /// and dense weights, in BF16 and F32, with one row and with many.
    #[test]
    fn planned_tensors_are_the_stored_ones() {
        let int = |bits, symmetric, granularity| {
            Step::Int(IntScheme {
                bits,
                symmetric,
                granularity,
                scale_dtype: ScaleDtype::F32,
            })
        };
        let mut steps = Vec::new();
        for bits in [2, 3, 4, 8] {
            for symmetric in [true, false] {
                for granularity in [
                    Granularity::Tensor,
                    Granularity::Channel,
                    Granularity::Group(32),
                ] {
                    steps.push(int(bits, symmetric, granularity));
                }
            }
        }
        for per_channel in [true, false] {
            steps.push(Step::Fp8 {
                per_channel,
                scale_dtype: ScaleDtype::F32,
            });
        }
        steps.push(Step::SemiStructured { n: 2, m: 4 });
        for (dtype, rows, cols) in [
            (Dtype::BF16, 5, 96),
            (Dtype::F32, 1, 64),
            (Dtype::F32, 37, 32),
        ] {
            let width = crate::numeric::float_width(dtype);
            let values: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 7919) % 201) as f32 / 50.0 - 2.0)
                .collect();
            let mut bytes = vec![0u8; values.len() * width];
            codec::encode(dtype, &values, &mut bytes);
            let shape = [rows as u64, cols as u64];
            for step in &steps {
                let view = TensorView {
                    calibrated: None,
                    bytes: &bytes,
                    dtype,
                    shape: &shape,
                };
                let mut dense = vec![0u8; bytes.len()];
                let (_, encoded) = transform_encoded(
                    &view,
                    std::slice::from_ref(step),
                    &Cancel::new(),
                    &mut dense,
                )
                .expect("transforms");
                let form = match step {
                    Step::Int(scheme) => StoredForm::Int(*scheme),
                    Step::Fp8 { per_channel, .. } => StoredForm::Fp8 {
                        per_channel: *per_channel,
                    },
                    _ => StoredForm::Dense,
                };
                let name = "model.layers.0.mlp.up_proj.weight";
                let stored: Vec<_> =
                    weight_tensors(name, dtype, rows, cols, &encoded, &dense, None)
                        .into_iter()
                        .map(|t| {
                            let elements: u64 = t.shape.iter().product();
                            assert_eq!(
                                t.data.len() as u64,
                                elements * t.dtype.bits() / 8,
                                "{step:?} {}",
                                t.name
                            );
                            (t.name, t.dtype, t.shape)
                        })
                        .collect();
                let planned = planned_tensors(name, dtype, shape[0], shape[1], form);
                assert_eq!(planned, stored, "{dtype} {rows}x{cols} {step:?}");
            }
        }
    }

    #[test]
    fn zeros_are_counted_as_is_zero_counts_them() {
        // Zeros of both signs among values, subnormals and NaN-like patterns, odd lengths.
        let mut state = 7u64;
        let bytes: Vec<u8> = (0..4099)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                match state >> 61 {
                    0 => 0x00,
                    1 => 0x80,
                    _ => (state >> 33) as u8,
                }
            })
            .collect();
        for dtype in [Dtype::BF16, Dtype::F16, Dtype::F32, Dtype::F8_E4M3] {
            let width = (dtype.bits() / 8) as usize;
            let whole = &bytes[..bytes.len() / width * width];
            let expected = whole.chunks(width).filter(|e| is_zero(dtype, e)).count();
            assert_eq!(count_zeros(dtype, whole), expected, "{dtype}");
        }
        let zeros = [0u8, 0x80, 0, 0, 0, 0x80, 0, 0, 1, 0, 0, 0];
        assert_eq!(count_zeros(Dtype::BF16, &zeros), 5);
        // Little-endian −0.0, +0.0 and the smallest subnormal.
        let singles = [0u8, 0, 0, 0x80, 0, 0, 0, 0, 1, 0, 0, 0];
        assert_eq!(count_zeros(Dtype::F32, &singles), 2);
    }

    fn hex_words(bytes: &[u8]) -> Vec<u32> {
        bytes
            .chunks(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn packing_matches_the_worked_examples() {
        // formats.md §2.4: int4 [-8,-7,0,7,1,2,3,4] → 0xCBA9F810; int8 [-128,-1,0,127] → 00 7F 80 FF.
        let int4: Vec<u32> = [-8, -7, 0, 7, 1, 2, 3, 4]
            .iter()
            .map(|q| (q + 8) as u32)
            .collect();
        assert_eq!(hex_words(&pack_rows(&int4, 1, 8, 4)), vec![0xCBA9_F810]);
        let int8: Vec<u32> = [-128, -1, 0, 127]
            .iter()
            .map(|q| (q + 128) as u32)
            .collect();
        assert_eq!(pack_rows(&int8, 1, 4, 8), vec![0x00, 0x7F, 0x80, 0xFF]);
        // 0.18.s dense layout for 3 bits: [3,-4,1,0,2,-1,3,-4,1,0,2] → 0xA51DE947, 0x00000001.
        let int3: Vec<u32> = [3, -4, 1, 0, 2, -1, 3, -4, 1, 0, 2]
            .iter()
            .map(|q| (q + 4) as u32)
            .collect();
        let packed = pack_rows(&int3, 1, 11, 3);
        assert_eq!(hex_words(&packed), vec![0xA51D_E947, 0x0000_0001]);
        assert_eq!(unpack_rows(&packed, 1, 11, 3), int3);
    }

    #[test]
    fn bitmask_marks_columns_least_significant_bit_first() {
        let values: Vec<f32> = vec![0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, -0.0, 3.0, 0.0];
        let data = encode_floats(Dtype::F32, &values);
        let parts = sparse_tensors(SparseFormat::Bitmask, Dtype::F32, 4, 2, 6, &data);
        assert_eq!(parts[1].shape, vec![3]);
        assert_eq!(parts[2].data, vec![0b10, 0b1_0100]);
        assert_eq!(parts[3].data, i64s(&[0, 1]));
        let two_four = sparse_tensors(SparseFormat::TwoFour, Dtype::F32, 4, 1, 8, &data[..32]);
        // Row [0,1,0,0 | 0,0,0,0]: 1 and the first zero of the first four, the first two of the next.
        assert_eq!(two_four[2].data, vec![0b0011_0011]);
        assert_eq!(two_four[1].shape, vec![1, 4]);
    }
}
