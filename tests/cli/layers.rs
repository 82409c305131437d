//! The source's layering, read from its own `use crate::` lines: every module stands in a
//! layer and may use only the layers below its own, and no two files use each other. `KNOWN` lists the arrows that still point the wrong way while the redesign
//! (issue 18) moves code; it may only shrink: an arrow that disappears must leave the list, and
//! a new wrong arrow fails here with the file and line that drew it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module's layer; a module may use modules of a lower layer.
const LAYERS: &[(&str, u8)] = &[
    // Numbers: dtypes, codecs, SIMD dispatch, the cancel flag, the RNG, figures in JSON.
    ("numeric", 0),
    // Pure kernels, then file formats, then evaluation in candle: no database, no async.
    ("compress", 1),
    ("formats", 2),
    ("eval", 3),
    // Calibrated compression, which runs the model in candle; beside it, PostgreSQL and the
    // blob store.
    ("calibrate", 4),
    ("store", 4),
    // What to do: recipes, the queue, job reports.
    ("jobs", 5),
    // One job's bytes, and the claim loop around it.
    ("pipeline", 6),
    ("worker", 7),
    ("demo", 7),
    // The HTTP edge.
    ("error", 8),
    ("auth", 9),
    ("api", 10),
    ("config", 10),
    ("connections", 11),
    // Entry points.
    ("app", 12),
    ("bench", 13),
    ("cli", 14),
    ("main", 15),
    ("lib", 15),
];

/// Arrows from a module to one at its own layer or above that remain to be removed, as
/// "from -> to".
const KNOWN: &[&str] = &[];

fn layer(module: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(m, _)| *m == module)
        .unwrap_or_else(|| panic!("module {module} has no layer in tests/cli/layers.rs"))
        .1
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to: `src/compress/tensor.rs` is `compress`.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_str().unwrap().trim_end_matches(".rs").to_owned()
}

/// Every `crate::<module>` a file names outside comments, with its line number.
fn uses(text: &str) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().last();
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `$crate::` in a macro is this crate too; `my_crate::` is not.
            rest = &after[name.len()..];
            if !name.is_empty() && before.is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_') {
                found.push((name, number + 1));
            }
        }
    }
    found
}

#[test]
fn every_use_crate_arrow_points_down_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut wrong: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in &files {
        let from = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        for (to, line) in uses(&text) {
            if to == from {
                continue;
            }
            if layer(&to) >= layer(&from) {
                let place = format!("{}:{line}", file.strip_prefix(&src).unwrap().display());
                wrong
                    .entry(format!("{from} -> {to}"))
                    .or_default()
                    .push(place);
            }
        }
    }
    let new: Vec<String> = wrong
        .iter()
        .filter(|(arrow, _)| !KNOWN.contains(&arrow.as_str()))
        .map(|(arrow, places)| {
            format!(
                "{arrow} (layer {} to {}) at {}",
                layer(arrow.split(" -> ").next().unwrap()),
                layer(arrow.split(" -> ").nth(1).unwrap()),
                places.join(", ")
            )
        })
        .collect();
    assert!(
        new.is_empty(),
        "arrows that point up or sideways a layer:\n{}",
        new.join("\n")
    );
    let gone: Vec<&&str> = KNOWN.iter().filter(|k| !wrong.contains_key(**k)).collect();
    assert!(
        gone.is_empty(),
        "no longer drawn, so remove from KNOWN in tests/cli/layers.rs: {gone:?}"
    );
}

/// Every `crate::a::b::c` path a file names outside comments, braces of a `use` expanded one
/// level (`crate::a::{b, c::d}` is `a::b` and `a::c::d`).
fn paths(text: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let stem: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            rest = &after[stem.len()..];
            let base: Vec<String> = stem
                .split("::")
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
            if stem.ends_with("::") && rest.starts_with('{') {
                let group = &rest[1..rest.find('}').unwrap_or(rest.len())];
                for member in group.split(',') {
                    let mut path = base.clone();
                    path.extend(
                        member
                            .trim()
                            .split("::")
                            .map(|p| p.trim().to_owned())
                            .filter(|p| !p.is_empty() && p != "self"),
                    );
                    found.push(path);
                }
            } else if !base.is_empty() {
                found.push(base);
            }
        }
    }
    found
}

/// The file a path leads into: the longest prefix that is a file or a folder's mod.rs.
fn file_of(src: &Path, path: &[String]) -> Option<PathBuf> {
    (1..=path.len()).rev().find_map(|n| {
        let stem = path[..n].join("/");
        [format!("{stem}.rs"), format!("{stem}/mod.rs")]
            .into_iter()
            .map(|candidate| src.join(candidate))
            .find(|candidate| candidate.is_file())
    })
}

#[test]
fn no_two_files_use_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for path in paths(&text) {
            if let Some(target) = file_of(&src, &path)
                && &target != file
            {
                edges.insert((file.clone(), target));
            }
        }
    }
    let cycles: Vec<String> = edges
        .iter()
        .filter(|(a, b)| a < b && edges.contains(&(b.clone(), a.clone())))
        .map(|(a, b)| {
            format!(
                "{} <-> {}",
                a.strip_prefix(&src).unwrap().display(),
                b.strip_prefix(&src).unwrap().display()
            )
        })
        .collect();
    assert!(cycles.is_empty(), "files that use each other: {cycles:?}");
}

#[test]
fn the_layer_reader_sees_uses_in_code_and_not_in_comments() {
    let text = "use crate::numeric::Dtype;\n// crate::api in a comment\nlet x = crate::store::db::pool(); f($crate::compress::x);\n";
    let found: Vec<(String, usize)> = uses(text);
    assert_eq!(
        found,
        [
            ("numeric".to_owned(), 1),
            ("store".to_owned(), 3),
            ("compress".to_owned(), 3)
        ]
    );
    let grouped =
        paths("use crate::compress::{blocks, quantize::{IntScheme}};\nuse crate::numeric::Dtype;");
    assert_eq!(grouped[0], ["compress", "blocks"]);
    assert_eq!(grouped[2], ["numeric", "Dtype"]);
}
