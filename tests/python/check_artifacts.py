"""Independent checks of squeeze's artifacts, written from the published layouts (not from
squeeze's code): decodes a compressed-tensors folder, a GGUF file (with the `gguf` package's
GGUFReader and dequantizer) or a compact-safetensors file back to dense values and compares
them with the dense safetensors output of the same recipe, which holds the values squeeze
measured. Every safetensors file is also opened with the `safetensors` package (numpy).

Usage: check_artifacts.py SPEC_JSON
SPEC_JSON: {"kind": "compressed-tensors" | "gguf" | "compact", "artifact": dir, "dense": dir,
            "original": dir, "expect": {...}}
Prints one JSON line of findings; exits 1 with a message on the first mismatch."""

import json
import os
import struct
import sys

import ml_dtypes
import numpy as np
from safetensors import safe_open

DTYPES = {
    "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn, "I8": np.int8, "U8": np.uint8, "I16": np.int16,
    "I32": np.int32, "I64": np.int64, "F64": np.float64,
}

QUANT_CONFIG_KEYS = {
    "quant_method", "format", "quantization_status", "config_groups", "ignore",
    "kv_cache_scheme", "global_compression_ratio", "sparsity_config", "transform_config",
    "version",
}
SCHEME_KEYS = {"targets", "weights", "input_activations", "output_activations", "format"}
ARGS_KEYS = {
    "num_bits", "type", "symmetric", "strategy", "group_size", "block_structure", "dynamic",
    "actorder", "observer", "observer_kwargs", "scale_dtype", "zp_dtype",
}
SPARSITY_KEYS = {"format", "targets", "ignore", "global_sparsity", "sparsity_structure"}


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def read_safetensors(path):
    """Raw reader: header JSON and numpy arrays from the bytes, per the format's README."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    start = 8 + n
    tensors = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        raw = data[start + b:start + e]
        tensors[name] = np.frombuffer(raw, dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    if start + max([i["data_offsets"][1] for i in header.values()] + [0]) != len(data):
        fail(f"{path}: data does not end where the file does")
    return meta, header, tensors


def open_with_package(path, tensors):
    """The safetensors package opens the file and agrees on every tensor it can hold in numpy."""
    with safe_open(path, framework="numpy") as f:
        keys = set(f.keys())
        if keys != set(tensors):
            fail(f"{path}: the safetensors package sees other tensors")
        for k in keys:
            if tensors[k].dtype == ml_dtypes.float8_e4m3fn:
                continue  # numpy has no FP8 type: decoded from raw bytes with ml_dtypes instead
            if not np.array_equal(f.get_tensor(k).view(np.uint8), tensors[k].view(np.uint8)):
                fail(f"{path}: tensor {k} differs between readers")


def load_dir(d):
    out = {}
    for name in sorted(os.listdir(d)):
        if name.endswith(".safetensors"):
            meta, header, tensors = read_safetensors(os.path.join(d, name))
            open_with_package(os.path.join(d, name), tensors)
            out.update(tensors)
    return out


def same_numbers(a, b, what):
    a32, b32 = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a32.shape != b32.shape:
        fail(f"{what}: shape {a32.shape} vs {b32.shape}")
    if not np.array_equal(a32, b32):
        bad = np.argwhere(a32 != b32)[0]
        fail(f"{what}: differs at {tuple(bad)}: {a32[tuple(bad)]} vs {b32[tuple(bad)]}")


def unpack_bits(words, count, bits):
    """Rows of int32 words → `count` unsigned values of `bits` each, from the least significant
    bit of word 0 upward (compressed-tensors pack_to_int32)."""
    as_bytes = np.ascontiguousarray(words).view(np.uint8).reshape(words.shape[0], -1)
    stream = np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :count * bits]
    stream = stream.reshape(words.shape[0], count, bits).astype(np.int64)
    return (stream << np.arange(bits)).sum(axis=2)


def expand(params, rows, cols):
    params = np.asarray(params, np.float32)
    if params.size == 1:
        return np.full((rows, cols), params.reshape(-1)[0], np.float32)
    return np.repeat(params, cols // params.shape[1], axis=1)


def bitmask_dense(t, prefix, dtype, two_four):
    shape = t[prefix + ".shape"].reshape(-1)
    rows, cols = int(shape[0]), int(shape[1])
    mask = np.unpackbits(t[prefix + ".bitmask"], axis=1, bitorder="little")[:, :cols].astype(bool)
    values = t[prefix + ".compressed"]
    dense = np.zeros((rows, cols), dtype=values.dtype)
    if two_four:
        if not (mask.reshape(rows, -1, 4).sum(axis=2) == 2).all():
            fail(f"{prefix}: a 2:4 bitmask does not keep exactly two of every four")
        dense[mask] = values.reshape(-1)
    else:
        offsets = t[prefix + ".row_offsets"]
        counts = mask.sum(axis=1)
        if not np.array_equal(offsets, np.concatenate([[0], np.cumsum(counts)[:-1]])):
            fail(f"{prefix}: row_offsets are not the prefix sums of the row counts")
        dense[mask] = values
    return dense


def check_compressed_tensors(spec):
    art, dense_dir, original = spec["artifact"], spec["dense"], spec["original"]
    expect = spec["expect"]
    config = json.load(open(os.path.join(art, "config.json")))
    original_config = json.load(open(os.path.join(original, "config.json")))
    qc = config.pop("quantization_config")
    if config != original_config:
        fail("config.json lost or changed keys besides quantization_config")
    if set(qc) != QUANT_CONFIG_KEYS:
        fail(f"quantization_config keys {sorted(qc)}")
    if qc["quant_method"] != "compressed-tensors" or qc["quantization_status"] != "compressed":
        fail("quant_method/quantization_status")
    groups = qc["config_groups"]
    targets = []
    args = None
    for g in groups.values():
        if not set(g) <= SCHEME_KEYS or not set(g["weights"]) <= ARGS_KEYS:
            fail(f"unknown scheme keys {sorted(g)} / {sorted(g['weights'])}")
        targets += g["targets"]
        args = g["weights"]
    sparse = qc["sparsity_config"]
    if sparse and not set(sparse) <= SPARSITY_KEYS:
        fail(f"unknown sparsity keys {sorted(sparse)}")
    if qc["format"] != expect["format"]:
        fail(f"format {qc['format']}, expected {expect['format']}")
    if (sparse.get("format") if sparse else None) != expect.get("sparse"):
        fail(f"sparsity format {sparse}")
    for name in ["tokenizer.json", "generation_config.json"]:
        if open(os.path.join(art, name), "rb").read() != open(os.path.join(original, name), "rb").read():
            fail(f"{name} not copied unchanged")
    t = load_dir(art)
    dense = load_dir(dense_dir)
    modules = set(targets) | set(sparse.get("targets") or [] if sparse else [])
    covered = set()
    for m in sorted(modules):
        ref = dense[m + ".weight"]
        rows, cols = ref.shape
        dtype = ref.dtype
        if args is not None and m in targets:
            bits, sym = args["num_bits"], args["symmetric"]
            for k in ["num_bits", "type", "symmetric", "strategy", "group_size"]:
                if k in expect and args[k] != expect[k]:
                    fail(f"weights.{k} = {args[k]}, expected {expect[k]}")
            scale = t[m + ".weight_scale"]
            if scale.dtype != dtype:
                fail(f"{m}: scale dtype {scale.dtype}, weight {dtype}")
            covered |= {m + ".weight_scale"}
            if qc["format"] == "pack-quantized":
                packed = t[m + ".weight_packed"]
                if packed.dtype != np.int32 or packed.shape != (rows, -(-cols * bits // 32)):
                    fail(f"{m}: weight_packed {packed.dtype} {packed.shape}")
                if list(t[m + ".weight_shape"]) != [rows, cols] or t[m + ".weight_shape"].dtype != np.int64:
                    fail(f"{m}: weight_shape")
                q = unpack_bits(packed, cols, bits) - (1 << (bits - 1))
                covered |= {m + ".weight_packed", m + ".weight_shape"}
            elif args["type"] == "int":
                key = m + ".weight" if m + ".weight" in t else None
                q = t[key].astype(np.int64) if key else bitmask_dense(t, m, np.int8, sparse.get("format") == "sparse-24-bitmask").astype(np.int64)
                covered |= {key} if key else {m + s for s in [".shape", ".compressed", ".bitmask", ".row_offsets"]}
            else:
                key = m + ".weight" if m + ".weight" in t else None
                f8 = t[key] if key else bitmask_dense(t, m, None, sparse.get("format") == "sparse-24-bitmask")
                if f8.dtype != ml_dtypes.float8_e4m3fn:
                    fail(f"{m}: FP8 weight stored as {f8.dtype}")
                q = f8.astype(np.float32)
                covered |= {key} if key else {m + s for s in [".shape", ".compressed", ".bitmask", ".row_offsets"]}
            zp = np.zeros((1, 1), np.float32)
            if not sym:
                z = t[m + ".weight_zero_point"]
                covered.add(m + ".weight_zero_point")
                if qc["format"] == "pack-quantized" and z.dtype == np.int32:
                    groups_n = z.shape[1]
                    zp = (unpack_bits(np.ascontiguousarray(z.T), rows, bits) - (1 << (bits - 1))).T
                    if zp.shape != (rows, groups_n):
                        fail(f"{m}: zero-point shape")
                else:
                    zp = z.astype(np.int64).reshape(scale.shape)
            else:
                if m + ".weight_zero_point" in t:
                    fail(f"{m}: symmetric scheme with a zero point")
            decoded = ((q - expand(zp, rows, cols)).astype(np.float32) * expand(scale, rows, cols)).astype(dtype)
        elif sparse["format"] == "dense":
            # Pruned, stored as it is: every value in the weight's own dtype.
            decoded = t[m + ".weight"]
            if decoded.dtype != dtype or decoded.shape != ref.shape:
                fail(f"{m}: dense weight {decoded.dtype} {decoded.shape}")
            covered.add(m + ".weight")
        else:
            decoded = bitmask_dense(t, m, dtype, sparse["format"] == "sparse-24-bitmask")
            covered |= {m + s for s in [".shape", ".compressed", ".bitmask", ".row_offsets"]}
        same_numbers(decoded, ref, m)
    covered = {c for c in covered if c in t}
    for name, value in t.items():
        if name in covered:
            continue
        if name not in dense or not np.array_equal(value.view(np.uint8), dense[name].view(np.uint8)):
            fail(f"tensor {name} is neither compressed nor the original")
    unlisted = [m for m in modules]
    return {"modules": len(unlisted), "tensors": len(t), "format": qc["format"], "ignore": qc["ignore"]}


def check_gguf(spec):
    from gguf import GGUFReader
    from gguf.quants import dequantize

    art, dense_dir = spec["artifact"], spec["dense"]
    expect = spec["expect"]
    reader = GGUFReader(os.path.join(art, "model.gguf"))

    def field(key):
        f = reader.fields[key]
        if f.types and f.types[0].name == "STRING":
            return bytes(f.parts[f.data[0]]).decode()
        if f.types and f.types[0].name == "ARRAY":
            return len(f.data)
        return f.parts[f.data[0]][0]

    for key, value in expect.get("metadata", {}).items():
        got = field(key)
        if isinstance(value, float):
            ok = abs(float(got) - value) < 1e-6 * max(1.0, abs(value))
        else:
            ok = got == value
        if not ok:
            fail(f"metadata {key} = {got!r}, expected {value!r}")
    dense = load_dir(dense_dir)
    heads = expect.get("heads")
    names = {t.name: t for t in reader.tensors}
    hf_to_gguf = expect["names"]
    if not expect.get("subset") and set(hf_to_gguf.values()) != set(names):
        fail(f"GGUF tensors {sorted(names)}")
    types = {}
    for hf, name in hf_to_gguf.items():
        t = names[name]
        ref = dense[hf]
        values = dequantize(t.data, t.tensor_type).reshape(ref.shape)
        if heads and ("q_proj" in hf or "k_proj" in hf):
            n = heads[0] if "q_proj" in hf else heads[1]
            # llama.cpp's converter permutation, undone: ggml interleaves the rotary halves.
            rows = ref.shape[0]
            values = values.reshape(n, rows // n // 2, 2, -1).swapaxes(1, 2).reshape(ref.shape)
        same_numbers(values.astype(ref.dtype), ref, name)
        types[name] = t.tensor_type.name
    for name, kind in expect.get("types", {}).items():
        if types[name] != kind:
            fail(f"{name} is {types[name]}, expected {kind}")
    return {"tensors": len(names), "types": sorted(set(types.values()))}


def check_compact(spec):
    art, dense_dir = spec["artifact"], spec["dense"]
    meta, _, t = read_safetensors(os.path.join(art, "model.safetensors"))
    open_with_package(os.path.join(art, "model.safetensors"), t)
    dense = load_dir(dense_dir)
    layouts = json.loads(meta["squeeze.compact"])
    if not layouts:
        fail("no substituted tensor described")
    used = set()
    for name, lay in layouts.items():
        rows, cols = lay["shape"]
        dtype = DTYPES[lay["dtype"]]
        if lay["kind"] == "clustered":
            bits = lay["bits"]
            book = t[lay["codebook"]]
            packed = t[lay["indices"]]
            stream = np.unpackbits(packed, axis=1, bitorder="little")[:, :cols * bits]
            idx = (stream.reshape(rows, cols, bits).astype(np.int64) << np.arange(bits)).sum(axis=2)
            per_row = book.shape[0] == rows and lay["per_row"]
            values = np.take_along_axis(book, idx, axis=1) if per_row else book[0][idx]
            same_numbers(values.astype(dtype), dense[name], name)
            used |= {lay["codebook"], lay["indices"]}
        elif lay["kind"] == "low_rank":
            a, b = t[lay["a"]].astype(np.float64), t[lay["b"]].astype(np.float64)
            if a.shape != (rows, lay["rank"]) or b.shape != (lay["rank"], cols):
                fail(f"{name}: factor shapes")
            values = (a @ b).astype(np.float32)
            ref = np.asarray(dense[name], np.float32)
            # A different summation order: equal to the stored precision's rounding.
            tol = np.abs(ref).max() * float(np.finfo(dtype).eps) * 2 + 1e-6
            if np.abs(values - ref).max() > tol:
                fail(f"{name}: A·B differs from the dense values by {np.abs(values - ref).max()}")
            used |= {lay["a"], lay["b"]}
        else:
            fail(f"unknown layout {lay['kind']}")
    for name, value in t.items():
        if name not in used and not np.array_equal(value.view(np.uint8), dense[name].view(np.uint8)):
            fail(f"{name} is neither substituted nor the original")
    return {"substituted": len(layouts), "tensors": len(t)}


def check_decompressed(spec):
    """`squeeze decompress` (squeeze's own reader) gives the same numbers as the dense output."""
    _, _, t = read_safetensors(spec["decompressed"])
    dense = load_dir(spec["dense"])
    names = spec["expect"].get("names") or {k: k for k in dense}
    heads = spec["expect"].get("heads")
    for hf, name in names.items():
        ref = dense[hf]
        values = t[name].reshape(ref.shape)
        if heads and ("q_proj" in hf or "k_proj" in hf):
            n = heads[0] if "q_proj" in hf else heads[1]
            values = values.reshape(n, ref.shape[0] // n // 2, 2, -1).swapaxes(1, 2).reshape(ref.shape)
        same_numbers(np.asarray(values).astype(ref.dtype), ref, f"decompressed {name}")


def main():
    spec = json.loads(sys.argv[1])
    check = {"compressed-tensors": check_compressed_tensors, "gguf": check_gguf,
             "compact": check_compact}[spec["kind"]]
    findings = check(spec)
    if spec.get("decompressed"):
        check_decompressed(spec)
    print(json.dumps(findings))


if __name__ == "__main__":
    main()
