//! Recipe parsing and validation against a model: JSON from a client, checked as the API
//! checks it, then planned into the kernel steps a worker would run.
#![no_main]

use libfuzzer_sys::fuzz_target;
use squeeze::numeric::Dtype;
use squeeze::formats::TensorMeta;
use squeeze::jobs::recipe::Recipe;

fuzz_target!(|data: &[u8]| {
    let Ok(recipe) = serde_json::from_slice::<Recipe>(data) else {
        return;
    };
    let model = [
        ("model.embed_tokens.weight", Dtype::BF16, vec![49152, 576]),
        ("model.layers.0.self_attn.q_proj.weight", Dtype::BF16, vec![576, 576]),
        ("model.layers.0.mlp.gate_proj.weight", Dtype::F32, vec![1536, 576]),
        ("model.layers.0.mlp.down_proj.weight", Dtype::F16, vec![576, 1536]),
        ("model.layers.0.input_layernorm.weight", Dtype::F32, vec![576]),
        ("model.layers.0.odd.weight", Dtype::BF16, vec![7, 0]),
        ("model.layers.0.cube.weight", Dtype::F32, vec![4, 6, 10]),
        ("model.positions", Dtype::I64, vec![2048]),
    ]
    .map(|(name, dtype, shape)| TensorMeta {
        name: name.to_owned(),
        dtype,
        shape,
    });
    if let Ok(plan) = recipe.plan(&model) {
        let selection = plan
            .recipe
            .selection()
            .expect("a valid recipe compiles its patterns");
        for t in &model {
            let chosen = selection.selects(&t.name, t.dtype, &t.shape);
            assert_eq!(chosen, plan.tensor(&t.name).is_some(), "{}", t.name);
        }
        // The API stores the planned recipe and a worker plans it again: the same recipe.
        let again = plan.recipe.plan(&model).expect("a planned recipe plans again");
        assert_eq!(again.recipe, plan.recipe);
    }
});
