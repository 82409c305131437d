"""Writes a random Llama-style model folder: config.json, tokenizer.json (a byte-level BPE
vocabulary), generation_config.json and model.safetensors, with the Hugging Face tensor names.
Tiny (1.2 M parameters, F16) by default; the sizes can be raised for measurements.
Usage: tiny_llama.py OUT_DIR [--hidden H --intermediate I --layers L --heads N --kv-heads K
                              --vocab V --dtype f16|bf16 --head-scale S
                              --no-outliers --activation-outliers]"""

import argparse
import json
import os

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS, VOCAB, DTYPE = 256, 512, 2, 4, 2, 128, np.float16
# Scale of the output head: larger gives peaked next-token distributions, as trained models
# have (random ones are near uniform, where any rounding flips the top token).
HEAD_SCALE = 1.0
OUTLIERS = True
# Norm gains with a few large entries: a few input channels of every projection then carry
# much larger activations than the rest, as in trained LLMs (what Wanda and SparseGPT exploit).
ACTIVATION_OUTLIERS = False


def main(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(1234)
    head_dim = HIDDEN // HEADS

    def weight(rows, cols):
        w = rng.standard_normal((rows, cols)) * (1.0 / np.sqrt(cols))
        # A few outliers, as trained weights have.
        if OUTLIERS:
            w.flat[rng.integers(0, w.size, max(1, w.size // 500))] *= 12.0
        return w.astype(DTYPE)

    tensors = {
        "model.embed_tokens.weight": weight(VOCAB, HIDDEN),
        "model.norm.weight": (1.0 + 0.1 * rng.standard_normal(HIDDEN)).astype(DTYPE),
        "lm_head.weight": (weight(VOCAB, HIDDEN).astype(np.float32) * HEAD_SCALE).astype(DTYPE),
    }
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        for norm in ["input_layernorm", "post_attention_layernorm"]:
            gain = np.ones(HIDDEN)
            if ACTIVATION_OUTLIERS:
                gain[rng.choice(HIDDEN, max(1, HIDDEN // 32), replace=False)] = 20.0
            tensors[p + norm + ".weight"] = gain.astype(DTYPE)
        tensors[p + "self_attn.q_proj.weight"] = weight(HEADS * head_dim, HIDDEN)
        tensors[p + "self_attn.k_proj.weight"] = weight(KV_HEADS * head_dim, HIDDEN)
        tensors[p + "self_attn.v_proj.weight"] = weight(KV_HEADS * head_dim, HIDDEN)
        tensors[p + "self_attn.o_proj.weight"] = weight(HIDDEN, HEADS * head_dim)
        tensors[p + "mlp.gate_proj.weight"] = weight(INTERMEDIATE, HIDDEN)
        tensors[p + "mlp.up_proj.weight"] = weight(INTERMEDIATE, HIDDEN)
        tensors[p + "mlp.down_proj.weight"] = weight(HIDDEN, INTERMEDIATE)
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})

    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "vocab_size": VOCAB,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "torch_dtype": "float16" if DTYPE == np.float16 else "bfloat16",
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    # Byte-level BPE: 3 special tokens, then printable characters, then merges of pairs.
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["Ġ"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for c in letters:
        vocab[c] = len(vocab)
    merges = []
    for a in letters:
        for b in "aeiou":
            if len(vocab) >= VOCAB:
                break
            if a + b not in vocab:
                merges.append(f"{a} {b}")
                vocab[a + b] = len(vocab)
    tokenizer = {
        "version": "1.0",
        "added_tokens": [
            {"id": i, "content": t, "special": True, "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False}
            for t, i in [("<unk>", 0), ("<s>", 1), ("</s>", 2)]
        ],
        "model": {"type": "BPE", "vocab": vocab, "merges": merges, "byte_fallback": False},
    }
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tokenizer, f)
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2}, f)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--hidden", type=int, default=HIDDEN)
    parser.add_argument("--intermediate", type=int, default=INTERMEDIATE)
    parser.add_argument("--layers", type=int, default=LAYERS)
    parser.add_argument("--heads", type=int, default=HEADS)
    parser.add_argument("--kv-heads", type=int, default=KV_HEADS)
    parser.add_argument("--vocab", type=int, default=VOCAB)
    parser.add_argument("--dtype", choices=["f16", "bf16"], default="f16")
    parser.add_argument("--head-scale", type=float, default=HEAD_SCALE)
    parser.add_argument("--no-outliers", action="store_true")
    parser.add_argument("--activation-outliers", action="store_true")
    a = parser.parse_args()
    HEAD_SCALE, OUTLIERS = a.head_scale, not a.no_outliers
    ACTIVATION_OUTLIERS = a.activation_outliers
    HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS, VOCAB = (
        a.hidden, a.intermediate, a.layers, a.heads, a.kv_heads, a.vocab)
    DTYPE = np.float16 if a.dtype == "f16" else ml_dtypes.bfloat16
    main(a.out)
