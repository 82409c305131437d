//! `squeeze compress`: a recipe or preset over a model folder or file, offline.

use super::*;
use crate::pipeline::InputDigests;
use digests::{Algorithm, file_digests};

pub(super) async fn compress(args: CompressArgs) -> anyhow::Result<()> {
    use crate::jobs::recipe::{self, Recipe};
    let recipe: Recipe = match (&args.recipe, &args.preset) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            // An artifact's recipe.json holds the recipe with its provenance: take either.
            let value: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            let recipe = match value.get("recipe") {
                Some(inner) if value.get("stages").is_none() => inner.clone(),
                _ => value,
            };
            serde_json::from_value(recipe)
                .with_context(|| format!("{} is not a valid recipe", path.display()))?
        }
        (None, Some(name)) => recipe::preset(name)?,
        (None, None) => anyhow::bail!("give --recipe FILE or --preset NAME"),
    };
    let inputs = local_inputs(&args.input)?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let output = OutputDir {
        path: args.output.clone(),
        digests: args.checksums,
        sync: args.sync,
    };
    let outcome = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        // The input's digests (for the provenance in recipe.json) are computed beside the run,
        // on their own thread: that reads the whole input once more, which need not come first.
        // BLAKE3 always; sha256 too when the user asks for checksums, as it costs as much CPU as
        // a fast kernel's whole compression.
        let hashed: Vec<_> = inputs
            .iter()
            .map(|i| (i.path.clone(), i.name.clone()))
            .collect();
        let with_sha256 = args.checksums;
        let digest = std::thread::spawn(move || -> std::io::Result<InputDigests> {
            let (mut sha256_lines, mut blake3_lines) = (String::new(), String::new());
            for (path, name) in &hashed {
                let [blake3, sha256] = if with_sha256 {
                    file_digests(path, [Algorithm::Blake3, Algorithm::Sha256])?
                } else {
                    let [blake3] = file_digests(path, [Algorithm::Blake3])?;
                    [blake3, String::new()]
                };
                blake3_lines += &format!("{blake3}  {name}\n");
                sha256_lines += &format!("{sha256}  {name}\n");
            }
            // One file: its digest. Several: the digest of their listing, as `sha256sum` or
            // `b3sum` prints it.
            let single = hashed.len() == 1;
            let sha256 = with_sha256.then(|| match single {
                true => sha256_lines[..64].to_owned(),
                false => {
                    use sha2::Digest;
                    hex::encode(sha2::Sha256::digest(&sha256_lines))
                }
            });
            let blake3 = Some(match single {
                true => blake3_lines[..64].to_owned(),
                false => blake3::hash(blake3_lines.as_bytes()).to_hex().to_string(),
            });
            Ok(InputDigests { sha256, blake3 })
        });
        let cancel = crate::numeric::Cancel::new();
        crate::worker::cpu_pool()
            .install(|| {
                crate::pipeline::run(
                    &inputs,
                    &recipe,
                    crate::pipeline::ModelDigest::Computing(digest),
                    &output,
                    &cancel,
                    &mut |_| {},
                )
            })
            .map_err(anyhow::Error::from)
    })
    .await??;
    let s = &outcome.summary;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"summary": s, "files": outcome.files, "tensors": outcome.tensors})
            )?
        );
        return Ok(());
    }
    for f in &outcome.files {
        match &f.sha256 {
            Some(sha256) => println!("{:<40} {:>14} bytes  sha256 {sha256}", f.name, f.bytes),
            None => println!("{:<40} {:>14} bytes", f.name, f.bytes),
        }
    }
    println!(
        "{} of {} tensors compressed; {} -> {} bytes (ratio {:.2}, {:.2} bits/weight on disk, {:.2} in theory); sparsity {:.1}%; relative error mean {:.2e}, worst {:.2e}{}; {:.2} s",
        s.compressed_tensors,
        outcome.tensors.len(),
        s.bytes_in,
        s.bytes_out,
        s.ratio,
        s.bits_per_weight,
        s.theoretical_bits_per_weight,
        s.sparsity * 100.0,
        s.mean_rel_error,
        s.worst_rel_error,
        s.worst_tensor
            .as_ref()
            .map(|t| format!(" ({t})"))
            .unwrap_or_default(),
        s.wall_seconds
    );
    Ok(())
}
