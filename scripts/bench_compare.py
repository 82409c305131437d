"""Side by side: `squeeze compress` against the tools a user would run instead, on one input, in
one run, rounds interleaved so every tool sees the same machine load; with --evaluate, `squeeze
evaluate` against llama.cpp's `llama-perplexity` on the same tokens and weights.

The input is a synthetic Llama-7B slice (N decoder layers of BF16 weights, rows scaled like
real weights; 4 layers = 1.6 GB) or a real model folder (--model). Each round times, in
turn: `cp` of the input (the disk's pace), `squeeze compress` per kernel, and the peers where
they exist: llama.cpp's `llama-quantize` with the same thread count for every GGUF type (built
by scripts/peer-gguf-types), gguf-py (llama.cpp's Python package) for the legacy block types,
and a plain numpy + safetensors script for int8 per channel and 50% magnitude pruning. Prints medians of wall time, CPU time and peak RSS, each tool's time
against the copy, and squeeze against its peer. Run by scripts/bench-compare.
"""

import argparse
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

GGUF_KERNELS = {"q8_0": "Q8_0", "q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0", "q5_1": "Q5_1",
                "q6_k": "Q6_K", "q5_k_m": "Q5_K_M", "q5_k_s": "Q5_K_S", "q4_k_m": "Q4_K_M",
                "q4_k_s": "Q4_K_S"}
NUMPY_KERNELS = {"int8", "prune-50"}
# The legacy block types gguf-py (llama.cpp's Python package) quantizes in numpy; it has no
# K-quant quantizers.
GGUF_PY_KERNELS = {"q8_0": "Q8_0", "q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0", "q5_1": "Q5_1"}

# Llama-7B's linear layers.
HIDDEN, INTERMEDIATE = 4096, 11008


def layer_tensors(i):
    p = f"model.layers.{i}"
    square = [f"{p}.self_attn.{n}_proj.weight" for n in "qkvo"]
    return ([(n, (HIDDEN, HIDDEN)) for n in square]
            + [(f"{p}.mlp.gate_proj.weight", (INTERMEDIATE, HIDDEN)),
               (f"{p}.mlp.up_proj.weight", (INTERMEDIATE, HIDDEN)),
               (f"{p}.mlp.down_proj.weight", (HIDDEN, INTERMEDIATE))])


def make_synthetic(folder, layers):
    """Writes model.safetensors (BF16) and config.json, streaming one tensor at a time. Runs in
    its own process (--make-synthetic): every tool's peak RSS is read from wait4, which counts
    the memory of the process it was spawned from, so the driver must stay small."""
    import numpy as np

    def to_bf16_bits(x):
        bits = x.astype(np.float32).view(np.uint32)
        return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.safetensors"
    tensors = [t for i in range(layers) for t in layer_tensors(i)]
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        size = shape[0] * shape[1] * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    rng = np.random.default_rng(0)
    with open(path.with_suffix(".part"), "wb") as out:
        out.write(len(text).to_bytes(8, "little") + text)
        for name, (rows, cols) in tensors:
            # Per-row scales spread over a decade, as trained weights' rows are; a few outliers.
            scale = (0.02 * np.exp(rng.normal(0, 0.5, size=(rows, 1)))).astype(np.float32)
            for start in range(0, rows, 1024):
                block = rng.standard_normal((min(1024, rows - start), cols), dtype=np.float32)
                block *= scale[start:start + len(block)]
                out.write(to_bf16_bits(block).tobytes())
    path.with_suffix(".part").rename(path)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE,
              "num_attention_heads": 32, "num_key_value_heads": 32,
              "num_hidden_layers": layers, "vocab_size": 32000, "rms_norm_eps": 1e-5,
              "rope_theta": 10000.0, "max_position_embeddings": 4096,
              "torch_dtype": "bfloat16", "_name_or_path": f"synthetic-llama7b-{layers}-layers"}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")


LLAMA_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
               "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
               "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
               "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def gguf_name(name):
    """llama.cpp's name for a Llama-family tensor."""
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    if name in top:
        return top[name]
    parts = name.split(".")
    if parts[:2] == ["model", "layers"]:
        inner = ".".join(parts[3:-1])
        if inner in LLAMA_NAMES:
            return f"blk.{parts[2]}.{LLAMA_NAMES[inner]}.{parts[-1]}"
    return name


def make_gguf(folder, out):
    """The model's weights unchanged in a GGUF file for llama-quantize (which reads only GGUF),
    named and described as llama.cpp's converter would (the rotary permutation is left out: it
    moves rows, which costs a quantizer nothing). Runs in its own process (--make-gguf)."""
    import gguf
    import numpy as np
    config = json.loads((folder / "config.json").read_text())
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config.get("max_position_embeddings", 4096))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config.get("num_key_value_heads", config["num_attention_heads"]))
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-5))
    writer.add_rope_dimension_count(config["hidden_size"] // config["num_attention_heads"])
    writer.add_vocab_size(config.get("vocab_size", 32000))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    kinds = {"BF16": (np.uint16, gguf.GGMLQuantizationType.BF16),
             "F16": (np.float16, gguf.GGMLQuantizationType.F16),
             "F32": (np.float32, gguf.GGMLQuantizationType.F32)}
    for path in sorted(folder.glob("*.safetensors")):
        for name, t, raw in raw_tensors(path):
            view, kind = kinds[t["dtype"]]
            writer.add_tensor(gguf_name(name), raw.view(view).reshape(t["shape"]), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def make_f32_gguf(folder, template, out):
    """The model's float weights as an F32 GGUF for llama-perplexity, with the metadata
    (tokenizer included) and tensor names of `template`, a GGUF squeeze wrote from the same
    folder; query and key rows permuted into llama.cpp's rotary order, as its converter does.
    Runs in its own process (--make-f32-gguf)."""
    import gguf
    import numpy as np
    config = json.loads((folder / "config.json").read_text())
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    reader = gguf.GGUFReader(str(template))
    writer = gguf.GGUFWriter(str(out), "llama")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        kinds = field.types
        writer.add_key_value(field.name, field.contents(), kinds[0],
                             sub_type=kinds[1] if len(kinds) > 1 else None)
    values = {}
    for path in sorted(folder.glob("*.safetensors")):
        for name, t, raw in raw_tensors(path):
            values[gguf_name(name)] = (name, t, raw)
    if "output.weight" not in values:
        values["output.weight"] = values["token_embd.weight"]
    for info in reader.tensors:
        name, t, raw = values[info.name]
        w = as_f32(t, raw)
        for proj, n in (("q_proj", heads), ("k_proj", kv_heads)):
            if name.endswith(f"self_attn.{proj}.weight"):
                w = w.reshape(n, 2, w.shape[0] // n // 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)
        writer.add_tensor(info.name, np.ascontiguousarray(w, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def make_eval_set(folder, text_out, tokens_out, sequences, length):
    """An evaluation text (CPython's bundled documentation topics: plain English prose and code,
    on every machine with Python) and the same text as `sequences` windows of `length` tokens
    of the model's tokenizer, the JSONL squeeze evaluates (llama-perplexity tokenizes the text
    itself, into the same windows)."""
    import pydoc_data.topics as topics
    from tokenizers import Tokenizer
    text = "\n\n".join(topics.topics[k] for k in sorted(topics.topics))
    ids = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text).ids
    if len(ids) < sequences * length:
        sys.exit(f"bench-compare: the text has {len(ids)} tokens, fewer than {sequences} × {length}")
    text_out.write_text(text)
    with open(tokens_out, "w") as f:
        for i in range(sequences):
            f.write(json.dumps({"tokens": ids[i * length:(i + 1) * length]}) + "\n")


def raw_tensors(path):
    """Each tensor of a safetensors file: its name, header entry and raw bytes (read by hand,
    as numpy has no BF16)."""
    import numpy as np
    data = np.memmap(path, dtype=np.uint8, mode="r")
    n = int.from_bytes(data[:8].tobytes(), "little")
    header = json.loads(data[8:8 + n].tobytes())
    header.pop("__metadata__", None)
    for name, t in header.items():
        a, b = t["data_offsets"]
        yield name, t, data[8 + n + a:8 + n + b]


def as_f32(t, raw):
    """A tensor's raw bytes as f32 values in its shape."""
    import numpy as np
    if t["dtype"] == "BF16":
        w = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    else:
        w = raw.view({"F32": np.float32, "F16": np.float16}[t["dtype"]]).astype(np.float32)
    return w.reshape(t["shape"])


# The peers: what a user writes in twenty lines when no tool does the job. `int8` and
# `prune-50` in numpy + safetensors; a GGUF type name with gguf-py, every weight matrix
# quantized by gguf.quants (vectors stay F32), names as they are (no rules, no mixes: the
# plainest use).
PEERS = """import json, sys
import numpy as np
""" + inspect.getsource(raw_tensors) + inspect.getsource(as_f32) + r'''
src, kind, out = sys.argv[1:]
if kind in ("int8", "prune-50"):
    from safetensors.numpy import save_file
    result = {}
    for name, t, raw in raw_tensors(src):
        w = as_f32(t, raw)
        if w.ndim != 2:
            result[name] = w
        elif kind == "int8":
            scale = np.abs(w).max(axis=1, keepdims=True) / 127
            scale[scale == 0] = 1
            result[name] = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
            result[name.replace(".weight", ".weight_scale")] = scale.astype(np.float32)
        else:
            magnitude = np.abs(w)
            cut = np.partition(magnitude.ravel(), magnitude.size // 2)[magnitude.size // 2]
            w = np.where(magnitude < cut, 0, w).astype(np.float32)
            if t["dtype"] == "BF16":
                bits = w.view(np.uint32)
                w = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
            result[name] = w
    save_file(result, out)
else:
    import gguf
    from gguf import quants
    kind = gguf.GGMLQuantizationType[kind]
    writer = gguf.GGUFWriter(out, "llama")
    for name, t, raw in raw_tensors(src):
        w = as_f32(t, raw)
        if w.ndim == 2 and w.shape[1] % 32 == 0:
            writer.add_tensor(name, quants.quantize(w, kind), raw_dtype=kind)
        else:
            writer.add_tensor(name, w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
'''


def run(cmd, cwd=None, output=None):
    """Runs `cmd`; its wall seconds, CPU seconds and peak RSS in MiB (children included). With
    `output` (a list), its stdout and stderr are appended to it."""
    import tempfile
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out if output is not None else
                                subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"bench-compare: {' '.join(map(str, cmd))} failed:\n{stderr[-2000:]}")
    if output is not None:
        output.append((stdout, stderr))
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def warm_memory():
    """Touches the free memory once and frees it. On a VM whose host backs guest memory at first
    touch, the first writes into never-used pages cost several times more (a 1.6 GB `dd` to
    ext4: 2.8 s before, 0.28 s after), which would charge whichever tool runs first, and every
    tool that writes, for the machine's history rather than its own work."""
    # In a child: a peak in this process would be inherited by every tool it starts, whose
    # peak RSS (wait4's ru_maxrss) would then report it.
    subprocess.run([sys.executable, "-c", """
import sys, numpy as np
available = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo")
                 if line.startswith("MemAvailable:"))
held = [np.ones(1 << 30, dtype=np.uint8) for _ in range(max(0, available - (3 << 30)) >> 30)]
print(f"touched {len(held)} GiB of free memory once", file=sys.stderr)
"""], check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4, help="synthetic Llama-7B decoder layers (4 = 1.6 GB)")
    parser.add_argument("--model", type=Path, help="a real model folder (safetensors + config.json) instead")
    parser.add_argument("--kernels", default="int8,fp8,q8_0,q4_0,q6_k,q4_k_m,prune-50")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--squeeze", type=Path, default=Path("target/release/squeeze"))
    parser.add_argument("--baseline", type=Path,
                        help="another squeeze binary timed beside it (an A/B of a change)")
    parser.add_argument("--llama-bin", type=Path,
                        default=Path.home() / ".cache/squeeze/peer/build/bin")
    parser.add_argument("--work", type=Path, default=Path("target/bench-compare"))
    parser.add_argument("--json", type=Path, help="also write every sample here")
    parser.add_argument("--evaluate", action="store_true",
                        help="time evaluation instead: squeeze evaluate against llama-perplexity "
                             "on the same tokens, F32 and Q8_0 (needs --model with tokenizer.json)")
    parser.add_argument("--rerun-original", action="store_true",
                        help="with --evaluate: also time squeeze running the original beside Q8_0")
    parser.add_argument("--digest-cache", action="store_true",
                        help="let squeeze reuse the input's sha256 from an earlier run (by default "
                             "every run hashes its input, as a first run does)")
    parser.add_argument("--no-warm-memory", action="store_true",
                        help="skip touching the free memory once before timing")
    parser.add_argument("--sequences", type=int, default=64, help="evaluation windows")
    parser.add_argument("--length", type=int, default=512, help="tokens per evaluation window")
    parser.add_argument("--make-f32-gguf", type=Path, nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--make-eval-set", type=Path, nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--make-synthetic", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--make-gguf", type=Path, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_gguf:
        make_gguf(*args.make_gguf)
        return
    if args.make_synthetic:
        make_synthetic(args.make_synthetic, args.layers)
        return
    if args.make_f32_gguf:
        make_f32_gguf(*args.make_f32_gguf)
        return
    if args.make_eval_set:
        make_eval_set(*args.make_eval_set, args.sequences, args.length)
        return
    if not args.digest_cache:
        os.environ["SQUEEZE_DIGEST_CACHE"] = "off"
    if not args.no_warm_memory:
        warm_memory()
    if args.evaluate:
        evaluate(args)
        return
    kernels = [k for k in args.kernels.split(",") if k]
    args.work.mkdir(parents=True, exist_ok=True)

    if args.model:
        model = args.model
    else:
        model = args.work / f"llama7b-{args.layers}-layers"
        if not (model / "model.safetensors").exists():
            print(f"making {model} ...", file=sys.stderr)
            subprocess.run([sys.executable, __file__, "--layers", str(args.layers),
                            "--make-synthetic", model], check=True)
    weights = sorted(model.glob("*.safetensors"))
    input_bytes = sum(p.stat().st_size for p in weights)

    quantize = args.llama_bin / "llama-quantize"
    have_llama = quantize.exists() and any(k in GGUF_KERNELS for k in kernels)
    gguf_input = args.work / f"{model.name}.bf16.gguf"
    if have_llama and not gguf_input.exists():
        print(f"making {gguf_input} ...", file=sys.stderr)
        subprocess.run([sys.executable, __file__, "--make-gguf", model, gguf_input], check=True)
    peers = args.work / "peers.py"
    peers.write_text(PEERS)

    tasks = [("copy", "cp", [["cp", *weights, args.work / "copy"]])]
    for k in kernels:
        tasks.append((k, "squeeze", [[args.squeeze, "compress", "--preset", k, model,
                                      "-o", args.work / f"out-{k}"]]))
        if args.baseline:
            tasks.append((k, "squeeze-baseline", [[args.baseline, "compress", "--preset", k, model,
                                                   "-o", args.work / f"out-{k}"]]))
        if have_llama and k in GGUF_KERNELS:
            tasks.append((k, "llama-quantize", [[quantize, gguf_input, args.work / f"llama-{k}.gguf",
                                                 GGUF_KERNELS[k], str(args.threads)]]))
        if k in GGUF_PY_KERNELS and len(weights) == 1:
            tasks.append((k, "gguf-py", [[sys.executable, peers, weights[0], GGUF_PY_KERNELS[k],
                                          args.work / f"ggufpy-{k}.gguf"]]))
        if k in NUMPY_KERNELS and len(weights) == 1:
            tasks.append((k, "numpy", [[sys.executable, peers, weights[0], k,
                                        args.work / f"numpy-{k}.safetensors"]]))

    def clear_outputs():
        for path in [args.work / "copy", *args.work.glob("out-*")]:
            shutil.rmtree(path, ignore_errors=True)
        for path in [args.work / "copy.safetensors", *args.work.glob("llama-*.gguf"),
                     *args.work.glob("ggufpy-*.gguf"),
                     *args.work.glob("numpy-*.safetensors")]:
            path.unlink(missing_ok=True)
        (args.work / "copy").mkdir()

    samples = {}
    clear_outputs()
    for r in range(args.rounds):
        # Rotate the order so no tool always runs first or last in a round.
        order = tasks[r % len(tasks):] + tasks[:r % len(tasks)]
        for kernel, tool, commands in order:
            wall = cpu = rss = 0.0
            for cmd in commands:
                w, c, m = run(cmd)
                wall, cpu, rss = wall + w, cpu + c, max(rss, m)
            samples.setdefault((kernel, tool), []).append((wall, cpu, rss))
            print(f"round {r + 1}: {kernel:9} {tool:15} {wall:7.2f} s wall {cpu:7.2f} s CPU "
                  f"{rss:7.0f} MiB", file=sys.stderr)
            clear_outputs()

    median = {key: tuple(statistics.median(s[i] for s in v) for i in range(3))
              for key, v in samples.items()}
    copy_wall = median[("copy", "cp")][0]
    print(f"\n{input_bytes / 1e9:.2f} GB input ({model}), {args.rounds} interleaved rounds, "
          f"{args.threads} threads for the peers; medians. Peak RSS includes the driver's "
          f"~10 MiB (wait4 counts the process a tool is spawned from).")
    print("| kernel | tool | wall s | CPU s | peak RSS MiB | ÷ cp | squeeze ÷ peer |")
    print("|---|---|---|---|---|---|---|")
    for (kernel, tool), (wall, cpu, rss) in median.items():
        versus = ""
        if tool != "squeeze" and (kernel, "squeeze") in median and tool != "cp":
            versus = f"{median[(kernel, 'squeeze')][0] / wall:.2f}×"
        print(f"| {kernel} | {tool} | {wall:.2f} | {cpu:.2f} | {rss:.0f} | "
              f"{wall / copy_wall:.1f}× | {versus} |")
    if args.json:
        args.json.write_text(json.dumps({"input_bytes": input_bytes, "rounds": args.rounds,
                                         "samples": {f"{k}/{t}": v for (k, t), v in samples.items()}},
                                        indent=2))


def evaluate(args):
    """Evaluation side by side: llama-perplexity over `sequences` windows of `length` tokens,
    on the F32 weights and on Q8_0, against `squeeze evaluate` of the same weights on the same
    windows with the original's outputs kept from a first run (as llama-perplexity's
    --kl-divergence-base keeps them), and with --rerun-original once more without them."""
    if not args.model or not (args.model / "tokenizer.json").exists():
        sys.exit("bench-compare: --evaluate needs --model, a decoder folder with tokenizer.json")
    model, work = args.model, args.work / "evaluate"
    work.mkdir(parents=True, exist_ok=True)
    text, tokens = work / "text.txt", work / "tokens.jsonl"
    me = [sys.executable, __file__, "--sequences", str(args.sequences), "--length", str(args.length)]
    subprocess.run([*me, "--make-eval-set", model, text, tokens], check=True)
    q8 = work / "q8_0"
    if not (q8 / "model.gguf").exists():
        subprocess.run([args.squeeze, "compress", "--preset", "q8_0", model, "-o", q8], check=True,
                       stdout=subprocess.DEVNULL)
    f32 = work / "f32.gguf"
    if not f32.exists():
        subprocess.run([*me, "--make-f32-gguf", model, q8 / "model.gguf", f32], check=True)
    perplexity = args.llama_bin / "llama-perplexity"
    kept = work / "original.ref"
    kept.unlink(missing_ok=True)
    evaluate = [args.squeeze, "evaluate", model]
    sets = ["--dataset", tokens, "--json"]
    print("keeping the original's outputs ...", file=sys.stderr)
    run([*evaluate, model, *sets, "--reference", kept])
    tasks = []
    for weights, gguf_file, artifact in (("F32", f32, model), ("Q8_0", q8 / "model.gguf", q8)):
        if perplexity.exists():
            tasks.append((weights, "llama-perplexity",
                          [perplexity, "-m", gguf_file, "-f", text, "-c", str(args.length),
                           "-b", str(args.length), "--chunks", str(args.sequences),
                           "-t", str(args.threads)]))
        tasks.append((weights, "squeeze, original kept", [*evaluate, artifact, *sets, "--reference", kept]))
        if args.baseline:
            tasks.append((weights, "squeeze baseline, original kept",
                          [args.baseline, "evaluate", model, artifact, *sets, "--reference", kept]))
    if args.rerun_original:
        tasks.append(("Q8_0", "squeeze, original run too", [*evaluate, q8, *sets]))
    samples, figures = {}, {}
    for r in range(args.rounds):
        order = tasks[r % len(tasks):] + tasks[:r % len(tasks)]
        for weights, tool, cmd in order:
            output = []
            wall, cpu, rss = run(cmd, output=output)
            extra = ()
            if tool.startswith("squeeze"):
                report = json.loads(output[0][0])
                extra = (report["accuracy_seconds"], report["latency_seconds"])
                figures[(weights, tool)] = report["compressed"]["metrics"]["perplexity"]
            else:
                final = [line for line in output[0][1].splitlines() if "Final estimate" in line]
                if final:
                    figures[(weights, tool)] = float(final[-1].split("PPL = ")[1].split()[0])
            samples.setdefault((weights, tool), []).append((wall, cpu, rss, *extra))
            print(f"round {r + 1}: {weights:5} {tool:27} {wall:7.2f} s wall {cpu:7.2f} s CPU "
                  f"{rss:7.0f} MiB", file=sys.stderr)
    print(f"\n{model.name}: {args.sequences} × {args.length} tokens, {args.rounds} interleaved "
          f"rounds, {args.threads} threads; medians. squeeze's wall time includes loading both "
          f"models and its latency measurements; its accuracy pass is the part that does "
          f"llama-perplexity's work. Perplexities differ by method: llama-perplexity scores the "
          f"second half of each window, squeeze every position.")
    print("| weights | tool | wall s | CPU s | peak RSS MiB | accuracy pass s | perplexity "
          "| wall ÷ llama-perplexity | accuracy pass ÷ llama-perplexity |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (weights, tool), v in samples.items():
        med = [statistics.median(x[i] for x in v) for i in range(len(v[0]))]
        peer = samples.get((weights, "llama-perplexity"))
        peer_wall = statistics.median(x[0] for x in peer) if peer else None
        accuracy = f"{med[3]:.2f}" if len(med) > 3 else ""
        ratio = f"{med[0] / peer_wall:.2f}×" if peer_wall and tool != "llama-perplexity" else ""
        ratio_acc = (f"{med[3] / peer_wall:.2f}×" if peer_wall and len(med) > 3 else "")
        ppl = figures.get((weights, tool))
        print(f"| {weights} | {tool} | {med[0]:.2f} | {med[1]:.2f} | {med[2]:.0f} | {accuracy} | "
              f"{'' if ppl is None else f'{ppl:.3f}'} | {ratio} | {ratio_acc} |")
    if args.json:
        args.json.write_text(json.dumps({"samples": {f"{w}/{t}": v for (w, t), v in samples.items()}},
                                        indent=2))


if __name__ == "__main__":
    main()
