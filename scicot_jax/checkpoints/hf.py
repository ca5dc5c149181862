"""Hugging Face T5 v1.1 / Flan-T5 checkpoints <-> our t5x-named parameter tree."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from scicot_jax.model.config import T5Config, read_json_file
from scicot_jax.model.scan import scan_params, unscan_params
from scicot_jax.paths import PathLike, as_path, copy_tree, is_url

Params = dict[str, Any]

# HF keys that hold no information of their own in the v1.1 architecture.
_EMBED_COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
_UNUSED = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)
_SUPPORTED_MODEL_TYPES = ("t5", "mt5")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One parameter: its HF name, t5x path, t5x shape, and whether torch stores it transposed."""

    hf_name: str
    path: tuple[str, ...]
    shape: tuple[int, ...]
    transpose: bool

    @property
    def hf_shape(self) -> tuple[int, ...]:
        return self.shape[::-1] if self.transpose else self.shape


def _attention(hf_prefix: str, path: tuple[str, ...], c: T5Config) -> list[Entry]:
    # torch Linear weights are [out, in]; t5x kernels are [in, out].
    inner = c.num_heads * c.d_kv
    entries = [
        Entry(f"{hf_prefix}.{hf}.weight", (*path, name, "kernel"), (c.d_model, inner), True)
        for hf, name in (("q", "query"), ("k", "key"), ("v", "value"))
    ]
    entries.append(
        Entry(f"{hf_prefix}.o.weight", (*path, "out", "kernel"), (inner, c.d_model), True)
    )
    return entries


def _mlp(hf_prefix: str, path: tuple[str, ...], c: T5Config) -> list[Entry]:
    return [
        Entry(f"{hf_prefix}.wi_0.weight", (*path, "wi_0", "kernel"), (c.d_model, c.d_ff), True),
        Entry(f"{hf_prefix}.wi_1.weight", (*path, "wi_1", "kernel"), (c.d_model, c.d_ff), True),
        Entry(f"{hf_prefix}.wo.weight", (*path, "wo", "kernel"), (c.d_ff, c.d_model), True),
    ]


def _norm(hf_name: str, path: tuple[str, ...], c: T5Config) -> Entry:
    return Entry(hf_name, (*path, "scale"), (c.d_model,), False)


def param_map(config: T5Config) -> list[Entry]:
    """Every parameter of the v1.1 architecture, in HF and t5x naming."""
    c = config
    rel_shape = (c.num_heads, c.relative_attention_num_buckets)  # HF stores [buckets, heads]
    entries = [
        Entry("shared.weight", ("token_embedder", "embedding"), (c.vocab_size, c.d_model), False),
        Entry(
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            ("encoder", "relpos_bias", "rel_embedding"),
            rel_shape,
            True,
        ),
        Entry(
            "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            ("decoder", "relpos_bias", "rel_embedding"),
            rel_shape,
            True,
        ),
    ]
    for i in range(c.num_encoder_layers):
        hf, p = f"encoder.block.{i}", ("encoder", f"layers_{i}")
        entries.append(
            _norm(f"{hf}.layer.0.layer_norm.weight", (*p, "pre_attention_layer_norm"), c)
        )
        entries += _attention(f"{hf}.layer.0.SelfAttention", (*p, "attention"), c)
        entries.append(_norm(f"{hf}.layer.1.layer_norm.weight", (*p, "pre_mlp_layer_norm"), c))
        entries += _mlp(f"{hf}.layer.1.DenseReluDense", (*p, "mlp"), c)
    entries.append(_norm("encoder.final_layer_norm.weight", ("encoder", "encoder_norm"), c))
    for i in range(c.num_decoder_layers):
        hf, p = f"decoder.block.{i}", ("decoder", f"layers_{i}")
        entries.append(
            _norm(f"{hf}.layer.0.layer_norm.weight", (*p, "pre_self_attention_layer_norm"), c)
        )
        entries += _attention(f"{hf}.layer.0.SelfAttention", (*p, "self_attention"), c)
        entries.append(
            _norm(f"{hf}.layer.1.layer_norm.weight", (*p, "pre_cross_attention_layer_norm"), c)
        )
        entries += _attention(f"{hf}.layer.1.EncDecAttention", (*p, "encoder_decoder_attention"), c)
        entries.append(_norm(f"{hf}.layer.2.layer_norm.weight", (*p, "pre_mlp_layer_norm"), c))
        entries += _mlp(f"{hf}.layer.2.DenseReluDense", (*p, "mlp"), c)
    entries.append(_norm("decoder.final_layer_norm.weight", ("decoder", "decoder_norm"), c))
    entries.append(
        Entry(
            "lm_head.weight", ("decoder", "logits_dense", "kernel"), (c.d_model, c.vocab_size), True
        )
    )
    return entries


# ----------------------------------------------------------------------------- config


def _require(hf: Mapping[str, Any], key: str, source: Path) -> Any:
    if key not in hf or hf[key] is None:
        raise ValueError(f"{source}: field '{key}' is missing")
    return hf[key]


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list | tuple) else value


def config_from_hf(hf: Mapping[str, Any], source: Path, **overrides: Any) -> T5Config:
    """Our T5Config from an HF config.json dict; rejects anything but the v1.1 architecture."""
    model_type = hf.get("model_type", "t5")
    if model_type not in _SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"{source}: field 'model_type' is {model_type!r}; only {_SUPPORTED_MODEL_TYPES} "
            "(T5 v1.1 / Flan-T5 / mT5 architecture) can be imported"
        )
    ffn = hf.get("feed_forward_proj", "relu")
    if ffn != "gated-gelu":
        raise ValueError(
            f"{source}: field 'feed_forward_proj' is {ffn!r}; only 'gated-gelu' (T5 v1.1 / "
            "Flan-T5) is supported, not the original T5 (relu)"
        )
    # transformers >= 5 always writes tie_word_embeddings=true and records the v1.1-vs-original
    # difference in scale_decoder_outputs; older files say tie_word_embeddings=false.
    if "scale_decoder_outputs" in hf:
        tied, field = bool(hf["scale_decoder_outputs"]), "scale_decoder_outputs"
    else:
        tied, field = bool(hf.get("tie_word_embeddings", True)), "tie_word_embeddings"
    if tied:
        raise ValueError(
            f"{source}: field '{field}' is true (tied embeddings with rescaled logits, the "
            "original T5); only untied T5 v1.1 / Flan-T5 checkpoints are supported"
        )
    num_layers = _require(hf, "num_layers", source)
    pad_id = hf.get("pad_token_id", 0)
    values = {
        "vocab_size": _require(hf, "vocab_size", source),
        "d_model": _require(hf, "d_model", source),
        "num_heads": _require(hf, "num_heads", source),
        "d_kv": _require(hf, "d_kv", source),
        "d_ff": _require(hf, "d_ff", source),
        "num_encoder_layers": num_layers,
        "num_decoder_layers": hf.get("num_decoder_layers") or num_layers,
        "dropout_rate": float(hf.get("dropout_rate", 0.0)),
        "relative_attention_num_buckets": hf.get("relative_attention_num_buckets", 32),
        "relative_attention_max_distance": hf.get("relative_attention_max_distance", 128),
        "layer_norm_epsilon": hf.get("layer_norm_epsilon", 1e-6),
        "pad_id": 0 if pad_id is None else pad_id,
        "eos_id": _first(hf.get("eos_token_id", 1)),
        "decoder_start_id": hf.get("decoder_start_token_id", pad_id) or 0,
    }
    known = {f.name for f in dataclasses.fields(T5Config)}
    bad = sorted(set(overrides) - known)
    if bad:
        raise TypeError(f"unknown T5Config fields in overrides: {bad}")
    values = {k: v for k, v in values.items() if k in known}
    return T5Config(**{**values, **overrides})


def config_to_hf(config: T5Config) -> dict[str, Any]:
    """HF config.json dict for our config (T5 v1.1 architecture)."""
    c = config
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": c.vocab_size,
        "d_model": c.d_model,
        "d_kv": c.d_kv,
        "d_ff": c.d_ff,
        "num_layers": c.num_encoder_layers,
        "num_decoder_layers": c.num_decoder_layers,
        "num_heads": c.num_heads,
        "relative_attention_num_buckets": c.relative_attention_num_buckets,
        "relative_attention_max_distance": c.relative_attention_max_distance,
        "dropout_rate": c.dropout_rate,
        "layer_norm_epsilon": c.layer_norm_epsilon,
        "initializer_factor": 1.0,
        "feed_forward_proj": "gated-gelu",
        "dense_act_fn": "gelu_new",
        "is_gated_act": True,
        "is_encoder_decoder": True,
        "tie_word_embeddings": False,
        "use_cache": True,
        "pad_token_id": c.pad_id,
        "eos_token_id": c.eos_id,
        "decoder_start_token_id": c.decoder_start_id,
        "torch_dtype": "float32",
    }


# ----------------------------------------------------------------------------- weights


class _Tensors:
    """Read-on-demand view of the tensors in an HF checkpoint directory."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._files: dict[str, Path] = {}  # tensor name -> file
        self._torch: dict[str, Any] = {}
        d = directory
        if (d / "model.safetensors").exists():
            self._add_safetensors(d / "model.safetensors")
        elif (d / "model.safetensors.index.json").exists():
            for f in sorted(set(self._weight_map(d / "model.safetensors.index.json").values())):
                self._add_safetensors(d / f)
        elif (d / "pytorch_model.bin").exists():
            self._add_torch(d / "pytorch_model.bin")
        elif (d / "pytorch_model.bin.index.json").exists():
            for f in sorted(set(self._weight_map(d / "pytorch_model.bin.index.json").values())):
                self._add_torch(d / f)
        else:
            found = sorted(p.name for p in d.iterdir()) if d.is_dir() else "not a directory"
            raise FileNotFoundError(
                f"{d}: no model.safetensors, model.safetensors.index.json, pytorch_model.bin or "
                f"pytorch_model.bin.index.json (found: {found})"
            )

    @staticmethod
    def _weight_map(index: Path) -> dict[str, str]:
        try:
            return json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(
                f"{index}: not a sharded-checkpoint index with 'weight_map' ({e})"
            ) from e

    def _add_safetensors(self, file: Path) -> None:
        from safetensors import safe_open

        if not file.exists():
            raise FileNotFoundError(f"{file}: shard listed in the index is missing")
        with safe_open(str(file), framework="numpy") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                self._files[name] = file

    def _add_torch(self, file: Path) -> None:
        try:
            import torch
        except ImportError as e:
            raise ImportError(
                f"{file}: reading pytorch_model.bin needs torch (pip install torch); "
                "safetensors checkpoints do not"
            ) from e
        if not file.exists():
            raise FileNotFoundError(f"{file}: shard listed in the index is missing")
        state = torch.load(str(file), map_location="cpu", weights_only=True, mmap=True)
        for name, tensor in state.items():
            self._torch[name] = tensor
            self._files[name] = file

    def names(self) -> set[str]:
        return set(self._files)

    def get(self, name: str) -> np.ndarray:
        if name in self._torch:
            t = self._torch[name]
            # numpy has no bfloat16 view of torch storage; widen to float32 (exact).
            return t.float().numpy() if t.is_floating_point() else t.numpy()
        from safetensors import safe_open

        with safe_open(str(self._files[name]), framework="numpy") as f:
            return f.get_tensor(name)


def _param_dtype(config: T5Config) -> Any:
    import jax.numpy as jnp

    return jnp.dtype(config.param_dtype)


def _set(tree: Params, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def flatten(
    params: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, leaf) pairs of a nested mapping, in insertion order."""
    for key, value in params.items():
        if isinstance(value, Mapping):
            yield from flatten(value, (*prefix, str(key)))
        else:
            yield (*prefix, str(key)), value


def import_hf(path: str | Path, **config_overrides: Any) -> tuple[T5Config, Params]:
    """(config, params) from an HF T5 v1.1 / Flan-T5 directory (local or gs://, copied to a temp
    dir first: safetensors and torch read local files); per-layer params are numpy arrays."""
    if is_url(path):
        import tempfile

        path = copy_tree(path, tempfile.mkdtemp(prefix="scicot_hf_"))
    directory = Path(path)
    config_file = directory / "config.json"
    hf_config = read_json_file(config_file, "expected a Hugging Face T5 directory")
    config = config_from_hf(hf_config, config_file, **config_overrides)
    tensors = _Tensors(directory)
    entries = param_map(config)
    names = tensors.names()
    missing = [e.hf_name for e in entries if e.hf_name not in names]
    if missing:
        raise KeyError(f"{directory}: checkpoint lacks {len(missing)} tensors: {missing[:8]}")
    unexpected = sorted(names - {e.hf_name for e in entries} - set(_EMBED_COPIES) - set(_UNUSED))
    if unexpected:
        raise KeyError(
            f"{directory}: checkpoint has {len(unexpected)} tensors the T5 v1.1 architecture "
            f"with this config.json does not: {unexpected[:8]}"
        )
    dtype = _param_dtype(config)
    params: Params = {}
    for e in entries:
        array = tensors.get(e.hf_name)
        if tuple(array.shape) != e.hf_shape:
            raise ValueError(
                f"{directory}: {e.hf_name} -> {'/'.join(e.path)}: checkpoint shape "
                f"{tuple(array.shape)}, config.json implies {e.hf_shape}"
            )
        _set(params, e.path, np.ascontiguousarray(array.T if e.transpose else array).astype(dtype))
    shared = params["token_embedder"]["embedding"]
    for name in sorted(names & set(_EMBED_COPIES)):
        # Old checkpoints store copies of the shared embedding; refuse silently divergent ones.
        copy = tensors.get(name)
        if copy.shape != shared.shape or not np.array_equal(copy.astype(dtype), shared):
            raise ValueError(f"{directory}: {name} differs from shared.weight; cannot import")
    if config.scan_layers:
        params = scan_params(params, config)
    return config, params


def export_hf(config: T5Config, params: Mapping[str, Any], out_dir: PathLike) -> Path:
    """Write config.json, generation_config.json and model.safetensors (float32) for HF."""
    from safetensors.numpy import save

    out = as_path(out_dir)
    entries = param_map(config)
    if "layers" in params.get("encoder", {}):
        params = unscan_params(dict(params), config)
    leaves = {path: leaf for path, leaf in flatten(params)}
    expected = {e.path for e in entries}
    missing = sorted("/".join(p) for p in expected - set(leaves))
    unexpected = sorted("/".join(p) for p in set(leaves) - expected)
    if missing or unexpected:
        raise KeyError(
            f"params do not match the T5 v1.1 layout for this config: missing {missing[:8]}, "
            f"unexpected {unexpected[:8]}"
        )
    tensors = {}
    for e in entries:
        leaf = leaves[e.path]
        if tuple(leaf.shape) != e.shape:
            raise ValueError(
                f"params/{'/'.join(e.path)} -> {e.hf_name}: shape {tuple(leaf.shape)}, "
                f"config implies {e.shape}"
            )
        array = np.asarray(leaf, dtype=np.float32)
        tensors[e.hf_name] = np.ascontiguousarray(array.T if e.transpose else array)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.safetensors").write_bytes(save(tensors, metadata={"format": "pt"}))
    (out / "config.json").write_text(json.dumps(config_to_hf(config), indent=2) + "\n")
    generation = {
        "decoder_start_token_id": config.decoder_start_id,
        "eos_token_id": config.eos_id,
        "pad_token_id": config.pad_id,
    }
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    return out
