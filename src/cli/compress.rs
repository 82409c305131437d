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
    let mut inputs = local_inputs(&args.input)?;
    if let Some(path) = &args.calibration {
        anyhow::ensure!(
            path.is_file(),
            "calibration set {} is not a file",
            path.display()
        );
        inputs.push(crate::pipeline::InputFile {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            kind: InputKind::Calibration,
            path: path.clone(),
        });
    }
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let output = OutputDir {
        path: args.output.clone(),
        digests: args.checksums,
        sync: args.sync,
    };
    let outcome = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        // The input's digests (for the provenance in recipe.json) are taken from the bytes
        // the run maps, as it passes them on: one read of the input.
        // BLAKE3 always; sha256 too when the user asks for checksums, as it costs as much CPU
        // as a fast kernel's whole compression.
        let algorithms = if args.checksums {
            vec![Algorithm::Blake3, Algorithm::Sha256]
        } else {
            vec![Algorithm::Blake3]
        };
        // The calibration set is not the model: its digest is recorded on its own.
        let listed: Vec<_> = inputs
            .iter()
            .filter(|i| i.kind != InputKind::Calibration)
            .map(|i| (i.path.clone(), i.name.clone(), i.kind == InputKind::Weights))
            .collect();
        let digest = crate::pipeline::ModelDigest::FromRun(Box::new(InputHashing {
            listed,
            algorithms,
            next: 0,
            current: None,
            per_file: Vec::new(),
            error: None,
        }));
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
struct InputHashing {
    /// Each input's path and name, and whether the run reads it (a weight file).
    listed: Vec<(PathBuf, String, bool)>,
    algorithms: Vec<Algorithm>,
    /// The first input not begun.
    next: usize,
    /// The weight file being passed on.
    current: Option<FileDigest>,
    /// Each finished input's digests, in the order of `listed`.
    per_file: Vec<Vec<String>>,
    error: Option<std::io::Error>,
}

impl InputHashing {
    /// Hashes side files up to the next weight file, then begins that one.
    fn begin_weights(&mut self) -> std::io::Result<FileDigest> {
        while let Some((path, _, weights)) = self.listed.get(self.next) {
            self.next += 1;
            let digest = FileDigest::begin(path, &self.algorithms)?;
            if *weights {
                return Ok(digest);
            }
            self.per_file.push(finished(digest)?);
        }
        Err(std::io::Error::other(
            "the run read more weight files than it was given",
        ))
    }

    fn take_or_fail(&mut self, fed: Fed) -> std::io::Result<()> {
        if self.current.is_none() {
            self.current = Some(self.begin_weights()?);
        }
        match fed {
            Fed::Range { offset, bytes } => {
                if let Some(FileDigest::Hashing(hashing)) = &mut self.current {
                    hashing.update_at(offset, bytes.bytes())?;
                }
            }
            Fed::EndFile => {
                let digest = self.current.take().expect("begun above");
                self.per_file.push(finished(digest)?);
            }
        }
        Ok(())
    }
}

fn finished(digest: FileDigest) -> std::io::Result<Vec<String>> {
    match digest {
        FileDigest::Remembered(digests) => Ok(digests),
        FileDigest::Hashing(hashing) => hashing.finish(),
    }
}

impl crate::pipeline::feed::InputDigester for InputHashing {
    fn take(&mut self, fed: Fed) {
        if self.error.is_none()
            && let Err(e) = self.take_or_fail(fed)
        {
            self.error = Some(e);
        }
    }

    fn finish(mut self: Box<Self>) -> std::io::Result<InputDigests> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if let Some(digest) = self.current.take() {
            self.per_file.push(finished(digest)?);
        }
        for (path, _, _) in &self.listed[self.next..] {
            self.per_file
                .push(finished(FileDigest::begin(path, &self.algorithms)?)?);
        }
        let whole: Vec<String> = match &self.per_file[..] {
            [single] => single.clone(),
            several => (0..self.algorithms.len())
                .map(|k| {
                    let listing: String = several
                        .iter()
                        .zip(&self.listed)
                        .map(|(digests, (_, name, _))| format!("{}  {name}\n", digests[k]))
                        .collect();
                    match self.algorithms[k] {
                        Algorithm::Blake3 => blake3::hash(listing.as_bytes()).to_hex().to_string(),
                        Algorithm::Sha256 => {
                            use sha2::Digest;
                            hex::encode(sha2::Sha256::digest(listing))
                        }
                    }
                })
                .collect(),
        };
        let of = |wanted: Algorithm| {
            self.algorithms
                .iter()
                .position(|&a| a == wanted)
                .map(|i| whole[i].clone())
        };
        Ok(InputDigests {
            sha256: of(Algorithm::Sha256),
            blake3: of(Algorithm::Blake3),
        })
    }
}
