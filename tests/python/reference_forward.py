"""An independent forward pass in NumPy (float64) of a Llama-family decoder or a BERT encoder,
checked against the outputs squeeze's candle runtime wrote (`squeeze evaluate --outputs`).
Follows Hugging Face's modelling code: RMSNorm, rotate-half rotary embeddings, grouped-query
attention and a SiLU-gated MLP; BERT's post-LayerNorm blocks with exact (erf) GELU and mean
pooling. Prints the relative error and exits 1 above the tolerance.
Usage: reference_forward.py MODEL_DIR TOKENS_JSONL OUTPUTS.safetensors [--tolerance 1e-4]"""

import argparse
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file


def load(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    weights = load_file(os.path.join(model_dir, "model.safetensors"))
    return config, {k: v.astype(np.float64) for k, v in weights.items()}


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * w


def llama(config, w, tokens):
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    hd = config.get("head_dim", hidden // heads)
    eps, theta = config.get("rms_norm_eps", 1e-6), config.get("rope_theta", 10000.0)
    t = len(tokens)
    inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    angles = np.outer(np.arange(t), inv)
    cos, sin = np.cos(np.concatenate([angles, angles], -1)), np.sin(np.concatenate([angles, angles], -1))

    def rope(x):  # [heads, t, hd]
        half = hd // 2
        rotated = np.concatenate([-x[..., half:], x[..., :half]], -1)
        return x * cos + rotated * sin

    x = w["model.embed_tokens.weight"][tokens]
    mask = np.triu(np.full((t, t), -np.inf), 1)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)

        def proj(name, n):
            y = h @ w[p + f"self_attn.{name}.weight"].T
            if p + f"self_attn.{name}.bias" in w:
                y = y + w[p + f"self_attn.{name}.bias"]
            return y.reshape(t, n, hd).transpose(1, 0, 2)

        q, k, v = rope(proj("q_proj", heads)), rope(proj("k_proj", kv_heads)), proj("v_proj", kv_heads)
        k, v = np.repeat(k, heads // kv_heads, 0), np.repeat(v, heads // kv_heads, 0)
        att = softmax(q @ k.transpose(0, 2, 1) / math.sqrt(hd) + mask) @ v
        x = x + att.transpose(1, 0, 2).reshape(t, heads * hd) @ w[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        up = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return {"logits": x @ head.T}


def layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def bert(config, w, tokens):
    h, heads = config["hidden_size"], config["num_attention_heads"]
    eps, hd, t = config.get("layer_norm_eps", 1e-12), h // heads, len(tokens)
    pre = "bert." if "bert.embeddings.word_embeddings.weight" in w else ""
    e = pre + "embeddings."
    x = w[e + "word_embeddings.weight"][tokens] + w[e + "position_embeddings.weight"][:t]
    x = layer_norm(x + w[e + "token_type_embeddings.weight"][0], w[e + "LayerNorm.weight"], w[e + "LayerNorm.bias"], eps)
    erf = np.vectorize(math.erf)
    for i in range(config["num_hidden_layers"]):
        p = f"{pre}encoder.layer.{i}."

        def lin(name, y):
            return y @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        def split(y):
            return y.reshape(t, heads, hd).transpose(1, 0, 2)

        q, k, v = (split(lin(f"attention.self.{n}", x)) for n in ["query", "key", "value"])
        ctx = (softmax(q @ k.transpose(0, 2, 1) / math.sqrt(hd)) @ v).transpose(1, 0, 2).reshape(t, h)
        x = layer_norm(x + lin("attention.output.dense", ctx), w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
        inter = lin("intermediate.dense", x)
        inter = 0.5 * inter * (1 + erf(inter / math.sqrt(2)))
        x = layer_norm(x + lin("output.dense", inter), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    return {"hidden": x[None], "embedding": x.mean(0, keepdims=True)}


def main(a):
    config, w = load(a.model)
    with open(a.tokens) as f:
        first = json.loads(f.readline())
    tokens = np.array(first["tokens"] if isinstance(first, dict) else first)
    expected = (bert if config["model_type"] == "bert" else llama)(config, w, tokens)
    got = load_file(a.outputs)
    worst = 0.0
    for name, ref in expected.items():
        out = got["original." + name].astype(np.float64)
        if out.shape != ref.shape:
            sys.exit(f"{name}: shape {out.shape}, reference {ref.shape}")
        rel = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
        print(f"{name}: relative error {rel:.3e} over {ref.size} values")
        worst = max(worst, rel)
    if worst > a.tolerance:
        sys.exit(f"relative error {worst:.3e} is above {a.tolerance}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("tokens")
    parser.add_argument("outputs")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    main(parser.parse_args())
