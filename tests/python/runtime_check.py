"""Loads squeeze's compressed-tensors artifacts in the runtime users deploy on, outside CI
(torch and transformers are gigabytes): each ARTIFACT=DENSE pair is loaded with transformers'
AutoModelForCausalLM.from_pretrained and its logits on random token ids compared with the dense
output of the same recipe (give the dense recipe the scale dtype compressed-tensors stores: the
weight's). A file that loads with missing, unexpected or resized weights fails, whatever its
logits: transformers fills such weights with random values.

Usage (in a venv with torch, transformers, compressed-tensors, accelerate, psutil):
  runtime_check.py ARTIFACT_DIR=DENSE_DIR ...     prints the versions, then one JSON line per
                                                  pair; exits 1 when any pair does not load
                                                  cleanly"""

import json
import sys

import compressed_tensors
import torch
import transformers
from transformers import AutoModelForCausalLM


def load(path):
    model, info = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, output_loading_info=True)
    return model, {k: sorted(v) if not isinstance(v, list) else v for k, v in info.items() if v}


def main():
    print(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__,
                      "compressed_tensors": compressed_tensors.__version__}), flush=True)
    torch.manual_seed(0)
    ids = torch.randint(3, 128, (1, 32))
    failed = False
    for pair in sys.argv[1:]:
        artifact, dense = pair.split("=")
        result = {"artifact": artifact}
        reference_model, _ = load(dense)
        with torch.no_grad():
            reference = reference_model(ids).logits
        try:
            model, problems = load(artifact)
            with torch.no_grad():
                got = model(ids).logits
            result["loads_cleanly"] = not problems
            if problems:
                result["loading_problems"] = {k: [str(x) for x in v][:5] for k, v in problems.items()}
            result["max_abs_logit_diff"] = float((got - reference).abs().max())
            result["logit_scale"] = float(reference.abs().max())
            result["quantized_modules"] = sum(
                1 for _, m in model.named_modules() if hasattr(m, "quantization_scheme"))
        except Exception as e:  # noqa: BLE001 - the failure is the finding
            result["loads_cleanly"] = False
            result["error"] = f"{type(e).__name__}: {e}"[:300]
        failed |= not result["loads_cleanly"]
        print(json.dumps(result), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
