"""Loads squeeze's compressed-tensors artifacts in the runtimes users deploy on, outside CI
(torch and transformers are gigabytes): each ARTIFACT=DENSE pair is loaded with transformers'
AutoModelForCausalLM.from_pretrained and its logits on random token ids compared with the dense
output of the same recipe; an artifact transformers cannot load is also decompressed with
compressed-tensors' own ModelCompressor and its weights compared exactly.

Usage (in a venv with torch, transformers, compressed-tensors, accelerate, psutil):
  runtime_check.py ARTIFACT_DIR=DENSE_DIR ...     prints one JSON line per pair"""

import json
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM


def logits(path, ids):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        return model(ids).logits, model


def decompressed_weights(path):
    from compressed_tensors.compressors import ModelCompressor

    from compressed_tensors.quantization import apply_quantization_config

    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=torch.float16)
    compressor = ModelCompressor.from_pretrained(path)
    if compressor.quantization_config is not None:
        apply_quantization_config(model, compressor.quantization_config)
    compressor.decompress(model_path=path, model=model)
    return model.state_dict()


def main():
    torch.manual_seed(0)
    ids = torch.randint(3, 128, (1, 32))
    for pair in sys.argv[1:]:
        artifact, dense = pair.split("=")
        result = {"artifact": artifact}
        reference, _ = logits(dense, ids)
        try:
            got, model = logits(artifact, ids)
            result["transformers_max_abs_logit_diff"] = float((got - reference).abs().max())
            result["logit_scale"] = float(reference.abs().max())
            result["quantized_modules"] = sum(
                1 for _, m in model.named_modules() if hasattr(m, "quantization_scheme"))
        except Exception as e:  # noqa: BLE001 - the failure is the finding
            result["transformers_error"] = f"{type(e).__name__}: {e}"[:300]
            weights = decompressed_weights(artifact)
            ref = load_file(f"{dense}/model.safetensors")
            result["compressed_tensors_max_abs_weight_diff"] = max(
                float((weights[k].float() - v.float()).abs().max()) for k, v in ref.items() if k in weights)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
