//! `squeeze compress`: a recipe or preset over a model folder or file, offline.

use super::*;
use crate::pipeline::feed::Fed;
use crate::pipeline::{InputDigests, InputKind};
use digests::{Algorithm, FileDigest};
use std::path::PathBuf;

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
        // The input's digests (for the provenance in recipe.json) are taken on their own
        // thread from the bytes the run maps, as it passes them on: one read of the input.
        // BLAKE3 always; sha256 too when the user asks for checksums, as it costs as much CPU
        // as a fast kernel's whole compression.
        let algorithms = if args.checksums {
            vec![Algorithm::Blake3, Algorithm::Sha256]
        } else {
            vec![Algorithm::Blake3]
        };
        let listed: Vec<_> = inputs
            .iter()
            .map(|i| (i.path.clone(), i.name.clone(), i.kind == InputKind::Weights))
            .collect();
        let (feed, fed) = crate::pipeline::feed::channel();
        let thread = std::thread::spawn(move || input_digests(&listed, &algorithms, &fed));
        let digest = crate::pipeline::ModelDigest::FromRun {
            thread,
            feed: Some(feed),
        };
        let cancel = crate::numeric::Cancel::new();
        crate::worker::cpu_pool()
            .install(|| {
                crate::pipeline::run(&inputs, &recipe, digest, &output, &cancel, &mut |_| {})
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

/// Each input's digests, the weight files' from the bytes the run passes on (in the order of
/// its inputs), then the whole input's: one file's own, or for several the digest of their
/// listing as `b3sum` or `sha256sum` prints it.
fn input_digests(
    listed: &[(PathBuf, String, bool)],
    algorithms: &[Algorithm],
    fed: &std::sync::mpsc::Receiver<Fed>,
) -> std::io::Result<InputDigests> {
    let mut listings = vec![String::new(); algorithms.len()];
    let mut single = Vec::new();
    for (path, name, weights) in listed {
        let mut digest = FileDigest::begin(path, algorithms)?;
        // A weight file's bytes come from the run; a side file is read here.
        if *weights {
            loop {
                match fed.recv() {
                    Ok(Fed::Range { offset, bytes }) => {
                        if let FileDigest::Hashing(hashing) = &mut digest {
                            hashing.update_at(offset, bytes.bytes())?;
                        }
                    }
                    Ok(Fed::EndFile) => break,
                    Err(_) => return Err(std::io::Error::other("the run stopped before its end")),
                }
            }
        }
        let digests = match digest {
            FileDigest::Remembered(digests) => digests,
            FileDigest::Hashing(hashing) => hashing.finish()?,
        };
        for (listing, digest) in listings.iter_mut().zip(&digests) {
            *listing += &format!("{digest}  {name}\n");
        }
        single = digests;
    }
    let whole: Vec<String> = if listed.len() == 1 {
        single
    } else {
        algorithms
            .iter()
            .zip(&listings)
            .map(|(algorithm, listing)| match algorithm {
                Algorithm::Blake3 => blake3::hash(listing.as_bytes()).to_hex().to_string(),
                Algorithm::Sha256 => {
                    use sha2::Digest;
                    hex::encode(sha2::Sha256::digest(listing))
                }
            })
            .collect()
    };
    let of = |wanted: Algorithm| {
        algorithms
            .iter()
            .position(|&a| a == wanted)
            .map(|i| whole[i].clone())
    };
    Ok(InputDigests {
        sha256: of(Algorithm::Sha256),
        blake3: of(Algorithm::Blake3),
    })
}
