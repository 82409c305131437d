//! Recipes parsed, planned and refused on small models shaped like real ones.

use super::*;

fn model() -> Vec<TensorMeta> {
    let t = |name: &str, dtype, shape: &[u64]| TensorMeta {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
    };
    vec![
        t("layers.0.mlp.weight", Dtype::BF16, &[256, 512]),
        t("layers.1.mlp.weight", Dtype::BF16, &[256, 768]),
        t("norm.weight", Dtype::F32, &[512]),
        t("ids", Dtype::I64, &[4, 4]),
    ]
}

fn parse(json: &str) -> Recipe {
    serde_json::from_str(json).unwrap()
}

#[test]
fn the_design_example_parses_and_round_trips() {
    let r = parse(
        r#"{"stages": [{"prune": {"method": "magnitude", "sparsity": 0.5, "scope": "tensor"}},
                       {"quantize": {"scheme": "int", "bits": 4, "symmetric": true, "granularity": "group", "group_size": 128}}],
            "targets": ["re:.*\\.weight$"], "ignore": ["lm_head.weight"], "format": "safetensors"}"#,
    );
    let again: Recipe = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(r, again);
    assert_eq!(
        r.validate(&model()).unwrap(),
        ["layers.0.mlp.weight", "layers.1.mlp.weight"]
    );
}

#[test]
fn by_default_only_float_tensors_of_two_or_more_dimensions_are_selected() {
    let r = parse(r#"{"stages": [{"quantize": {"scheme": "int", "bits": 8}}]}"#);
    assert_eq!(
        r.validate(&model()).unwrap(),
        ["layers.0.mlp.weight", "layers.1.mlp.weight"]
    );
    let named = parse(
        r#"{"stages": [{"quantize": {"scheme": "int", "bits": 8}}], "targets": ["norm.weight"], "format": "safetensors"}"#,
    );
    assert_eq!(named.validate(&model()).unwrap(), ["norm.weight"]);
}

#[test]
fn rules_that_cannot_hold_name_the_tensor_and_the_rule() {
    let group = parse(
        r#"{"stages": [{"quantize": {"scheme": "int", "bits": 4, "granularity": "group", "group_size": 512}}]}"#,
    );
    // 512 does not divide 768: every tensor gets the largest group that divides both.
    let plan = group.plan(&model()).unwrap();
    assert!(plan.scheme().contains("group 256"), "{}", plan.scheme());
    let note = |name: &str| plan.tensor(name).unwrap().note.clone();
    assert_eq!(note("layers.0.mlp.weight"), None);
    assert!(
        note("layers.1.mlp.weight")
            .unwrap()
            .contains("groups of 256")
    );
    let mut odd = model();
    odd.push(TensorMeta {
        name: "odd.weight".into(),
        dtype: Dtype::F16,
        shape: vec![8, 100],
    });
    let err = group.validate(&odd).unwrap_err();
    assert_eq!(err.code(), "group_size_does_not_divide_row");
    assert_eq!(err.tensor(), Some("odd.weight"));
    let cases = [
        (r#"{"stages": []}"#, "no_stages"),
        (
            r#"{"stages": [{"quantize": {"scheme": "int", "bits": 9}}]}"#,
            "bits_out_of_range",
        ),
        (
            r#"{"stages": [{"quantize": {"scheme": "int", "bits": 1}}]}"#,
            "bits_out_of_range",
        ),
        (
            r#"{"stages": [{"prune": {"method": "magnitude", "sparsity": 1.0}}]}"#,
            "sparsity_out_of_range",
        ),
        (
            r#"{"stages": [{"prune": {"method": "magnitude", "sparsity": -0.1}}]}"#,
            "sparsity_out_of_range",
        ),
        (
            r#"{"stages": [{"quantize": {"scheme": "int", "bits": 4, "granularity": "group"}}]}"#,
            "bad_group_size",
        ),
        (
            r#"{"stages": [{"quantize": {"scheme": "int", "bits": 4, "group_size": 64}}]}"#,
            "bad_group_size",
        ),
        (
            r#"{"stages": [{"quantize": {"scheme": "int", "bits": 8}}], "targets": ["nope"]}"#,
            "target_matches_nothing",
        ),
        (
            r#"{"stages": [{"quantize": {"scheme": "int", "bits": 8}}], "targets": ["re:("]}"#,
            "bad_pattern",
        ),
        (
            r#"{"stages": [{"quantize": {"scheme": "int", "bits": 8}}], "targets": ["ids"]}"#,
            "not_float",
        ),
        (
            r#"{"stages": [{"quantize": {"scheme": "int", "bits": 8}}], "ignore": ["re:layers"]}"#,
            "nothing_selected",
        ),
    ];
    for (json, code) in cases {
        assert_eq!(
            parse(json).validate(&model()).unwrap_err().code(),
            code,
            "{json}"
        );
    }
}

#[test]
fn unknown_stages_fields_and_formats_are_parse_errors() {
    for json in [
        r#"{"stages": [{"smash": {}}]}"#,
        r#"{"stages": [{"quantize": {"scheme": "int", "bits": 8, "colour": "red"}}]}"#,
        r#"{"stages": [{"quantize": {"scheme": "int8"}}]}"#,
        r#"{"stages": [], "format": "onnx"}"#,
    ] {
        assert!(serde_json::from_str::<Recipe>(json).is_err(), "{json}");
    }
}

#[test]
fn every_preset_validates_on_a_typical_model() {
    for p in presets() {
        p.recipe
            .validate(&model())
            .unwrap_or_else(|e| panic!("{}: {e}", p.name));
    }
    assert!(preset("int8").is_ok());
    assert_eq!(preset("int3").unwrap_err().code(), "unknown_preset");
}

#[test]
fn pruning_methods_parse_and_check_their_rules() {
    let global = parse(
        r#"{"stages": [{"prune": {"method": "magnitude", "sparsity": 0.5, "scope": "global"}},
                       {"quantize": {"scheme": "int", "bits": 8, "scale_dtype": "bf16"}}]}"#,
    );
    assert_eq!(global.validate(&model()).unwrap().len(), 2);
    assert_eq!(global.stages[0].describe(), "magnitude prune 50% (global)");
    assert_eq!(
        global.stages[1].describe(),
        "int8 sym per channel bf16 scales"
    );
    let late = parse(
        r#"{"stages": [{"quantize": {"scheme": "int", "bits": 8}},
                       {"prune": {"method": "magnitude", "sparsity": 0.5, "scope": "global"}}]}"#,
    );
    assert_eq!(
        late.validate(&model()).unwrap_err().code(),
        "stage_must_be_first"
    );
    let nm = parse(r#"{"stages": [{"prune": {"method": "semi_structured", "pattern": "2:4"}}]}"#);
    assert_eq!(nm.validate(&model()).unwrap().len(), 2);
    assert_eq!(
        serde_json::to_value(&nm).unwrap()["stages"][0]["prune"]["pattern"],
        "2:4"
    );
    let odd = vec![TensorMeta {
        name: "odd.weight".into(),
        dtype: Dtype::F16,
        shape: vec![8, 6],
    }];
    let wide = parse(r#"{"stages": [{"prune": {"method": "semi_structured", "pattern": "4:8"}}]}"#);
    let err = wide.validate(&odd).unwrap_err();
    assert_eq!(err.code(), "row_not_multiple_of_block");
    assert!(err.to_string().contains("multiple of 8"), "{err}");
    for bad in ["4:4", "0:4", "2-4", "2:65", "x:4"] {
        let json = format!(
            r#"{{"stages": [{{"prune": {{"method": "semi_structured", "pattern": "{bad}"}}}}]}}"#
        );
        assert!(serde_json::from_str::<Recipe>(&json).is_err(), "{bad}");
    }
    let channels =
        parse(r#"{"stages": [{"prune": {"method": "channels", "sparsity": 1.5, "norm": "l1"}}]}"#);
    assert_eq!(
        channels.validate(&model()).unwrap_err().code(),
        "sparsity_out_of_range"
    );
}

#[test]
fn mlp_shrinking_needs_gated_mlps_and_comes_first() {
    let t = |name: &str, shape: &[u64]| TensorMeta {
        name: name.into(),
        dtype: Dtype::BF16,
        shape: shape.to_vec(),
    };
    let llama = vec![
        t("model.layers.0.mlp.gate_proj.weight", &[64, 16]),
        t("model.layers.0.mlp.up_proj.weight", &[64, 16]),
        t("model.layers.0.mlp.down_proj.weight", &[16, 64]),
    ];
    let shrink = parse(
        r#"{"stages": [{"prune": {"method": "mlp_channels", "sparsity": 0.5, "norm": "l1"}},
                       {"quantize": {"scheme": "int", "bits": 8}}]}"#,
    );
    assert_eq!(shrink.validate(&llama).unwrap().len(), 3);
    assert_eq!(shrink.stages[0].describe(), "MLP channel shrink 50% by L1");
    assert_eq!(shrink.stages[0].step(), None);
    assert_eq!(
        shrink.validate(&model()).unwrap_err().code(),
        "no_gated_mlp"
    );
    let late = parse(
        r#"{"stages": [{"quantize": {"scheme": "int", "bits": 8}},
                       {"prune": {"method": "mlp_channels", "sparsity": 0.5}}]}"#,
    );
    assert_eq!(
        late.validate(&llama).unwrap_err().code(),
        "stage_must_be_first"
    );
    // Later stages are checked against the shrunk shapes: [64, 16] allows rank 12, the
    // [32, 16] that halving leaves only rank 10.
    let rank = |r: usize| {
        parse(&format!(
            r#"{{"stages": [{{"prune": {{"method": "mlp_channels", "sparsity": 0.5}}}},
                           {{"low_rank": {{"rank": {r}}}}}]}}"#
        ))
    };
    assert!(rank(10).validate(&llama).is_ok());
    let err = rank(11).validate(&llama).unwrap_err();
    assert_eq!(err.code(), "rank_grows_tensor");
    assert!(err.to_string().contains("(32 × 16)"), "{err}");
}

#[test]
fn low_rank_stages_check_the_rank_against_every_tensor() {
    let fixed = parse(r#"{"stages": [{"low_rank": {"rank": 64}}]}"#);
    assert_eq!(fixed.validate(&model()).unwrap().len(), 2);
    assert_eq!(fixed.stages[0].describe(), "low-rank 64");
    let big = parse(r#"{"stages": [{"low_rank": {"rank": 200}}]}"#);
    let err = big.validate(&model()).unwrap_err();
    assert_eq!(err.code(), "rank_grows_tensor");
    assert_eq!(err.tensor(), Some("layers.0.mlp.weight"));
    assert!(err.to_string().contains("at most rank 170"), "{err}");
    let energy = parse(r#"{"stages": [{"low_rank": {"energy": 0.9}}]}"#);
    assert_eq!(energy.stages[0].describe(), "low-rank keeping 90.0% energy");
    for bad in [
        r#"{"low_rank": {}}"#,
        r#"{"low_rank": {"rank": 4, "energy": 0.5}}"#,
        r#"{"low_rank": {"rank": 0}}"#,
        r#"{"low_rank": {"energy": 1.5}}"#,
    ] {
        let recipe = parse(&format!(r#"{{"stages": [{bad}]}}"#));
        assert_eq!(
            recipe.validate(&model()).unwrap_err().code(),
            "bad_rank",
            "{bad}"
        );
    }
}

#[test]
fn cluster_stages_parse_and_check_their_rules() {
    let r = parse(
        r#"{"stages": [{"cluster": {"bits": 3, "granularity": "channel", "seed": 5}},
                       {"quantize": {"scheme": "int", "bits": 8}}]}"#,
    );
    assert_eq!(r.validate(&model()).unwrap().len(), 2);
    // No compact format stores a quantized codebook: auto writes it dense.
    assert_eq!(
        r.plan(&model()).unwrap().recipe.format,
        OutputFormat::Safetensors
    );
    assert_eq!(r.stages[0].describe(), "k-means 8 centroids per channel");
    for (json, code) in [
        (r#"{"cluster": {"bits": 0}}"#, "bits_out_of_range"),
        (r#"{"cluster": {"bits": 9}}"#, "bits_out_of_range"),
        (
            r#"{"cluster": {"bits": 4, "granularity": "group"}}"#,
            "bad_granularity",
        ),
    ] {
        let recipe = parse(&format!(r#"{{"stages": [{json}]}}"#));
        assert_eq!(
            recipe.validate(&model()).unwrap_err().code(),
            code,
            "{json}"
        );
    }
}

#[test]
fn fp8_and_gguf_stages_parse_and_check_their_rules() {
    let fp8 = parse(r#"{"stages": [{"quantize": {"scheme": "fp8"}}]}"#);
    assert_eq!(fp8.validate(&model()).unwrap().len(), 2);
    let grouped = parse(r#"{"stages": [{"quantize": {"scheme": "fp8", "granularity": "group"}}]}"#);
    assert_eq!(
        grouped.validate(&model()).unwrap_err().code(),
        "bad_granularity"
    );
    let q8 = parse(r#"{"stages": [{"quantize": {"scheme": "gguf", "type": "Q8_0"}}]}"#);
    assert_eq!(q8.validate(&model()).unwrap().len(), 2);
    let odd = vec![TensorMeta {
        name: "odd.weight".into(),
        dtype: Dtype::F16,
        shape: vec![8, 100],
    }];
    // Rows that fit no block type stay unquantized, with the reason.
    let plan = q8.plan(&odd).unwrap();
    let odd_plan = plan.tensor("odd.weight").unwrap();
    assert!(odd_plan.steps.is_empty());
    assert!(odd_plan.note.as_ref().unwrap().contains("rows of 100"));
    assert_eq!(
        plan.recipe.format,
        OutputFormat::Gguf,
        "auto resolves to gguf"
    );
    assert!(
        serde_json::from_str::<Recipe>(
            r#"{"stages": [{"quantize": {"scheme": "gguf", "type": "Q3_X"}}]}"#
        )
        .is_err()
    );
}

#[test]
fn calibrated_pruning_takes_one_amount_comes_first_and_writes_compressed_tensors() {
    let wanda = parse(
        r#"{"stages": [{"prune": {"method": "wanda", "sparsity": 0.5}}], "calibration": {"samples": 16}}"#,
    );
    let plan = wanda.plan(&model()).unwrap();
    assert_eq!(plan.recipe.format, OutputFormat::CompressedTensors);
    assert_eq!(plan.scheme(), "wanda prune 50%");
    let settings = wanda.calibration.unwrap();
    assert_eq!(
        (
            settings.samples,
            settings.sequence_length,
            settings.dampening,
            settings.act_order
        ),
        (16, 512, 0.01, true)
    );
    let again: Recipe = serde_json::from_str(&serde_json::to_string(&wanda).unwrap()).unwrap();
    assert_eq!(again, wanda);
    let two_four = parse(r#"{"stages": [{"prune": {"method": "sparsegpt", "pattern": "2:4"}}]}"#);
    assert_eq!(
        two_four.plan(&model()).unwrap().scheme(),
        "sparsegpt 2:4 prune"
    );
    let cases = [
        (
            r#"{"stages": [{"prune": {"method": "wanda"}}]}"#,
            "bad_sparsity",
        ),
        (
            r#"{"stages": [{"prune": {"method": "sparsegpt", "sparsity": 0.5, "pattern": "2:4"}}]}"#,
            "bad_sparsity",
        ),
        (
            r#"{"stages": [{"prune": {"method": "wanda", "sparsity": 1.0}}]}"#,
            "sparsity_out_of_range",
        ),
        (
            r#"{"stages": [{"quantize": {"scheme": "int", "bits": 8}}, {"prune": {"method": "wanda", "sparsity": 0.5}}]}"#,
            "stage_must_be_first",
        ),
        (
            r#"{"stages": [{"prune": {"method": "sparsegpt", "pattern": "3:7"}}]}"#,
            "row_not_multiple_of_block",
        ),
    ];
    for (json, code) in cases {
        assert_eq!(
            parse(json).validate(&model()).unwrap_err().code(),
            code,
            "{json}"
        );
    }
    assert!(
        serde_json::from_str::<Recipe>(r#"{"stages": [{"prune": {"method": "wanda", "sparsity": 0.5}}], "calibration": {"rows": 3}}"#)
            .is_err()
    );
    let gptq = parse(
        r#"{"stages": [{"quantize": {"scheme": "int", "bits": 4, "granularity": "group", "group_size": 128, "method": "gptq"}}]}"#,
    );
    assert!(gptq.stages[0].is_calibrated());
    assert_eq!(
        gptq.plan(&model()).unwrap().scheme(),
        "int4 sym group 128 gptq"
    );
    // Round to nearest is the default and is not written out: stored recipes stay as they were.
    let rtn = parse(r#"{"stages": [{"quantize": {"scheme": "int", "bits": 4}}]}"#);
    assert!(!serde_json::to_string(&rtn).unwrap().contains("method"));
    let after = parse(
        r#"{"stages": [{"quantize": {"scheme": "int", "bits": 4, "method": "gptq"}}, {"quantize": {"scheme": "int", "bits": 8}}]}"#,
    );
    assert_eq!(
        after.validate(&model()).unwrap_err().code(),
        "stage_must_be_first"
    );
}
