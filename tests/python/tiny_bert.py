"""Writes a random BERT-style encoder folder (config.json, model.safetensors, F32) with the
tensor names sentence-transformers checkpoints use (no `bert.` prefix); with --labels N it
adds a pooler and an N-class classification head.
Usage: tiny_bert.py OUT_DIR [--hidden H --layers L --heads N --vocab V --labels N]"""

import argparse
import json
import os

import numpy as np
from safetensors.numpy import save_file


def main(a):
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(4321)
    h, inter = a.hidden, 2 * a.hidden

    def dense(rows, cols):
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def vec(n, scale=0.02, base=0.0):
        return (base + scale * rng.standard_normal(n)).astype(np.float32)

    t = {
        "embeddings.word_embeddings.weight": dense(a.vocab, h) * 8,
        "embeddings.position_embeddings.weight": dense(a.positions, h) * 8,
        "embeddings.token_type_embeddings.weight": dense(2, h) * 8,
        "embeddings.LayerNorm.weight": vec(h, 0.1, 1.0),
        "embeddings.LayerNorm.bias": vec(h),
    }
    for i in range(a.layers):
        p = f"encoder.layer.{i}."
        for part in ["query", "key", "value"]:
            t[p + f"attention.self.{part}.weight"] = dense(h, h)
            t[p + f"attention.self.{part}.bias"] = vec(h)
        t[p + "attention.output.dense.weight"] = dense(h, h)
        t[p + "attention.output.dense.bias"] = vec(h)
        t[p + "attention.output.LayerNorm.weight"] = vec(h, 0.1, 1.0)
        t[p + "attention.output.LayerNorm.bias"] = vec(h)
        t[p + "intermediate.dense.weight"] = dense(inter, h)
        t[p + "intermediate.dense.bias"] = vec(inter)
        t[p + "output.dense.weight"] = dense(h, inter)
        t[p + "output.dense.bias"] = vec(h)
        t[p + "output.LayerNorm.weight"] = vec(h, 0.1, 1.0)
        t[p + "output.LayerNorm.bias"] = vec(h)
    if a.labels:
        t["pooler.dense.weight"] = dense(h, h)
        t["pooler.dense.bias"] = vec(h)
        t["classifier.weight"] = dense(a.labels, h)
        t["classifier.bias"] = vec(a.labels)
    save_file(t, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": a.vocab,
        "hidden_size": h,
        "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads,
        "intermediate_size": inter,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": a.positions,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=300)
    parser.add_argument("--positions", type=int, default=64)
    parser.add_argument("--labels", type=int, default=0)
    main(parser.parse_args())
