"""Trains the demo classifier that `squeeze demo` and the dashboard's demo button load.

Data: scikit-learn's copy of the UCI "Optical Recognition of Handwritten Digits" test set
(1,797 images of 8x8 pixels, 16 grey levels, digits 0-9), shipped in scikit-learn under the
BSD 3-Clause licence (sklearn.datasets.load_digits). `--export` writes it from an installed
scikit-learn to static/demo/digits.safetensors (inputs U8 [1797, 64], labels U8 [1797]); that
file is committed, so training needs only NumPy.

Training: a 64-256-128-10 ReLU network, Adam, cross-entropy, 60 epochs of mini-batches of 32
on a fixed 70 % split (seeded), in NumPy float64. Writes static/demo/digits-mlp/model.safetensors
(F32) and config.json, static/demo/digits-test.safetensors (the held-out 30 %: inputs F32 scaled
to [0, 1], labels I64) and static/demo/training.json (the held-out accuracy it reached).
Usage: train_digits.py [--export] [--out static/demo]"""

import argparse
import json
import os

import numpy as np
from safetensors.numpy import load_file, save_file

LAYERS = [64, 256, 128, 10]


def export(out):
    from sklearn.datasets import load_digits

    digits = load_digits()
    save_file(
        {"inputs": digits.data.astype(np.uint8), "labels": digits.target.astype(np.uint8)},
        os.path.join(out, "digits.safetensors"),
        metadata={"source": "scikit-learn load_digits (UCI optdigits test set)", "licence": "BSD-3-Clause"},
    )


def train(out):
    data = load_file(os.path.join(out, "digits.safetensors"))
    x = data["inputs"].astype(np.float64) / 16.0
    y = data["labels"].astype(np.int64)
    rng = np.random.default_rng(20261202)
    order = rng.permutation(len(y))
    cut = int(round(0.7 * len(y)))
    train_idx, test_idx = order[:cut], order[cut:]

    params = []
    for fan_in, fan_out in zip(LAYERS[:-1], LAYERS[1:]):
        w = rng.standard_normal((fan_out, fan_in)) * np.sqrt(2.0 / fan_in)
        params.append([w, np.zeros(fan_out)])
    moments = [[np.zeros_like(p) for p in layer] for layer in params]
    squares = [[np.zeros_like(p) for p in layer] for layer in params]
    lr, beta1, beta2, eps, step = 1e-3, 0.9, 0.999, 1e-8, 0

    def forward(batch):
        acts = [batch]
        for i, (w, b) in enumerate(params):
            z = acts[-1] @ w.T + b
            acts.append(np.maximum(z, 0.0) if i + 1 < len(params) else z)
        return acts

    for _epoch in range(60):
        rng.shuffle(train_idx)
        for start in range(0, len(train_idx), 32):
            idx = train_idx[start:start + 32]
            acts = forward(x[idx])
            logits = acts[-1]
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            grad = p
            grad[np.arange(len(idx)), y[idx]] -= 1.0
            grad /= len(idx)
            step += 1
            for i in reversed(range(len(params))):
                w, b = params[i]
                gw, gb = grad.T @ acts[i], grad.sum(0)
                if i > 0:
                    grad = (grad @ w) * (acts[i] > 0)
                for j, g in enumerate([gw, gb]):
                    moments[i][j] = beta1 * moments[i][j] + (1 - beta1) * g
                    squares[i][j] = beta2 * squares[i][j] + (1 - beta2) * g * g
                    m_hat = moments[i][j] / (1 - beta1 ** step)
                    v_hat = squares[i][j] / (1 - beta2 ** step)
                    params[i][j] -= lr * m_hat / (np.sqrt(v_hat) + eps)

    test_x = x[test_idx].astype(np.float32)
    # Accuracy as the runtime computes it: float32 weights and inputs.
    h = test_x
    for i, (w, b) in enumerate(params):
        h = h @ w.astype(np.float32).T + b.astype(np.float32)
        if i + 1 < len(params):
            h = np.maximum(h, 0.0)
    accuracy = float((h.argmax(1) == y[test_idx]).mean())

    model_dir = os.path.join(out, "digits-mlp")
    os.makedirs(model_dir, exist_ok=True)
    tensors = {}
    names = [f"fc{i + 1}" for i in range(len(params))]
    for name, (w, b) in zip(names, params):
        tensors[f"{name}.weight"] = w.astype(np.float32)
        tensors[f"{name}.bias"] = b.astype(np.float32)
    save_file(tensors, os.path.join(model_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump({"model_type": "mlp", "architectures": ["DigitsMlp"], "layers": names,
                   "activation": "relu", "num_labels": 10}, f, indent=2)
        f.write("\n")
    save_file({"inputs": test_x, "labels": y[test_idx]}, os.path.join(out, "digits-test.safetensors"))
    report = {"train_rows": int(cut), "test_rows": int(len(test_idx)), "test_accuracy": accuracy,
              "parameters": int(sum(w.size + b.size for w, b in params)), "epochs": 60}
    with open(os.path.join(out, "training.json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(json.dumps(report))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--export", action="store_true")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "static", "demo"))
    a = parser.parse_args()
    if a.export:
        export(a.out)
    train(a.out)
