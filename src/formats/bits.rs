//! Bit streams of narrow unsigned values, the packing both compressed-tensors (int32 words) and
//! compact safetensors (bytes) use: value `i` of a row takes bits `[i·b, (i+1)·b)` of the row's
//! stream, counted from the least significant bit of its first byte (little-endian words are
//! the same stream), and each row is padded with zero bits to a whole number of units.

/// Bytes of one packed row of `cols` values of `bits` each, padded to `unit` bytes.
pub fn row_bytes(cols: usize, bits: u8, unit: usize) -> usize {
    (cols * usize::from(bits)).div_ceil(8 * unit) * unit
}

/// Packs rows of `cols` values (each below 2^bits) into rows of [`row_bytes`].
pub fn pack(values: &[u32], rows: usize, cols: usize, bits: u8, unit: usize) -> Vec<u8> {
    let width = usize::from(bits);
    let stride = row_bytes(cols, bits, unit);
    let mut out = vec![0u8; rows * stride];
    for (row, packed) in values
        .chunks(cols.max(1))
        .zip(out.chunks_mut(stride.max(1)))
    {
        for (i, &v) in row.iter().enumerate() {
            let bit = i * width;
            // A value of up to 32 bits spans at most five bytes from its first.
            let shifted = u64::from(v) << (bit % 8);
            for (k, byte) in packed[bit / 8..].iter_mut().take(5).enumerate() {
                *byte |= (shifted >> (8 * k)) as u8;
            }
        }
    }
    out
}

/// The inverse of [`pack`]; rows shorter than the stride read as zero bits.
pub fn unpack(bytes: &[u8], rows: usize, cols: usize, bits: u8, unit: usize) -> Vec<u32> {
    let width = usize::from(bits);
    let stride = row_bytes(cols, bits, unit);
    let mask = if bits >= 32 {
        u64::from(u32::MAX)
    } else {
        (1u64 << bits) - 1
    };
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let row = bytes.get(r * stride..(r + 1) * stride).unwrap_or(&[]);
        for i in 0..cols {
            let bit = i * width;
            let mut window = 0u64;
            for (k, byte) in row.iter().skip(bit / 8).take(5).enumerate() {
                window |= u64::from(*byte) << (8 * k);
            }
            out.push(((window >> (bit % 8)) & mask) as u32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_width_round_trips_and_pads_rows() {
        for bits in 1..=8u8 {
            let values: Vec<u32> = (0..3 * 11).map(|i| (i * 7 + 3) % (1 << bits)).collect();
            for unit in [1, 4] {
                let packed = pack(&values, 3, 11, bits, unit);
                assert_eq!(packed.len(), 3 * row_bytes(11, bits, unit));
                assert_eq!(
                    unpack(&packed, 3, 11, bits, unit),
                    values,
                    "{bits} bits, unit {unit}"
                );
            }
        }
    }
}
