//! `squeeze inspect` (a model's or an artifact's tensors and totals) and `squeeze decompress`
//! (an artifact back to dense safetensors).

use super::*;

/// Width of a table's name column: the longest name, within 4 to 80 characters.
fn column_width<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    names.map(str::len).max().unwrap_or(4).clamp(4, 80)
}

pub(super) fn inspect(args: &InspectArgs) -> anyhow::Result<()> {
    use crate::formats::reader::{ArtifactFile, ArtifactKind};
    // Its reader names a malformed file's defect (and a missing file's error).
    let artifact = ArtifactFile::open(&args.file).with_context(|| {
        format!(
            "{} is not a valid safetensors or GGUF file",
            args.file.display()
        )
    })?;
    let file_bytes = std::fs::metadata(&args.file)?.len();
    if artifact.kind != ArtifactKind::Safetensors {
        let weights_bytes: u64 = artifact.weights.iter().map(|w| w.bytes).sum();
        let parameters: u64 = artifact
            .weights
            .iter()
            .map(|w| w.shape.iter().product::<u64>())
            .sum();
        if args.json {
            let out = serde_json::json!({
                "file": args.file, "kind": artifact.kind, "bytes": file_bytes,
                "parameters": parameters, "weights": artifact.weights,
                "bits_per_weight": file_bytes as f64 * 8.0 / parameters.max(1) as f64,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(());
        }
        let name_width = column_width(artifact.weights.iter().map(|w| w.name.as_str()));
        println!(
            "{:<name_width$}  {:<44}  {:<5}  {:<14}  {:>12}  {:>6}",
            "WEIGHT", "STORED AS", "DTYPE", "SHAPE", "BYTES", "BITS"
        );
        for w in &artifact.weights {
            let n = w.shape.iter().product::<u64>().max(1);
            println!(
                "{:<name_width$}  {:<44}  {:<5}  {:<14}  {:>12}  {:>6.2}",
                w.name,
                w.scheme,
                w.dtype,
                format!("{:?}", w.shape),
                w.bytes,
                w.bytes as f64 * 8.0 / n as f64
            );
        }
        println!(
            "{:?}: {} weights, {} parameters, {} bytes of weights, {} bytes in the file ({:.2} bits per parameter)",
            artifact.kind,
            artifact.weights.len(),
            parameters,
            weights_bytes,
            file_bytes,
            file_bytes as f64 * 8.0 / parameters.max(1) as f64
        );
        return Ok(());
    }
    let header = safetensors::read_header(&args.file)
        .with_context(|| format!("{} is not a valid safetensors file", args.file.display()))?;
    if args.json {
        let tensors: Vec<_> = header
            .tensors
            .iter()
            .map(|t| serde_json::json!({"name": t.name, "dtype": t.dtype.as_str(), "shape": t.shape, "bytes": t.bytes()}))
            .collect();
        let out = serde_json::json!({
            "file": args.file,
            "bytes": header.file_len(),
            "tensor_bytes": header.data_len(),
            "parameters": header.tensors.iter().map(|t| t.elements()).sum::<u64>(),
            "metadata": header.metadata,
            "tensors": tensors,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let name_width = column_width(header.tensors.iter().map(|t| t.name.as_str()));
    println!(
        "{:<name_width$}  {:<11}  {:<24}  {:>14}",
        "NAME", "DTYPE", "SHAPE", "BYTES"
    );
    for t in &header.tensors {
        let shape = format!("{:?}", t.shape);
        println!(
            "{:<name_width$}  {:<11}  {:<24}  {:>14}",
            t.name,
            t.dtype.as_str(),
            shape,
            t.bytes()
        );
    }
    let params: u64 = header.tensors.iter().map(|t| t.elements()).sum();
    println!(
        "{} tensors, {} parameters, {} bytes of tensor data, {} bytes in the file",
        header.tensors.len(),
        params,
        header.data_len(),
        header.file_len()
    );
    Ok(())
}

pub(super) fn decompress(args: &crate::config::DecompressArgs) -> anyhow::Result<()> {
    use crate::formats::reader::ArtifactFile;
    use crate::formats::safetensors::TensorInfo;
    use crate::numeric::Dtype;
    let artifact = ArtifactFile::open(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    // Sizes follow from shapes, so the header goes first and one weight at a time after it.
    let mut infos = Vec::new();
    let mut offset = 0u64;
    for w in &artifact.weights {
        let dtype = Dtype::parse(&w.dtype)
            .filter(|d| crate::numeric::is_float(*d))
            .unwrap_or(Dtype::F32);
        let len = w.shape.iter().product::<u64>() * crate::numeric::float_width(dtype) as u64;
        infos.push(TensorInfo {
            name: w.name.clone(),
            dtype,
            shape: w.shape.clone(),
            begin: offset,
            end: offset + len,
        });
        offset += len;
    }
    let temp = args.output.with_extension("part");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&temp)?);
    let header = crate::formats::safetensors::write::header_bytes(None, &infos);
    std::io::Write::write_all(&mut out, &header)?;
    for (w, info) in artifact.weights.iter().zip(&infos) {
        let values = artifact
            .decode(w)
            .with_context(|| format!("decoding {}", w.name))?;
        let mut bytes = vec![0u8; info.bytes() as usize];
        crate::numeric::codec::encode(info.dtype, &values, &mut bytes);
        std::io::Write::write_all(&mut out, &bytes)?;
    }
    std::io::Write::flush(&mut out)?;
    drop(out);
    std::fs::rename(&temp, &args.output)?;
    println!(
        "{} weights decoded to {} ({} bytes)",
        infos.len(),
        args.output.display(),
        header.len() as u64 + offset
    );
    Ok(())
}
