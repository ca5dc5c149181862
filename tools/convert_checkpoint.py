"""Convert T5 weights between Hugging Face and our orbax parameter checkpoints.

  python tools/convert_checkpoint.py hf-to-orbax HF_DIR OUT_DIR   # OUT_DIR: INITIAL_CHECKPOINT_PATH
  python tools/convert_checkpoint.py orbax-to-hf CKPT_DIR OUT_DIR  # loadable by transformers

CKPT_DIR is a save_params directory (config.json + params/) or a trainer checkpoint: a step
directory `<model_dir>/checkpoints/<step>`, or a model/checkpoints directory (latest step);
a trainer step's model config comes from its meta item.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from scicot_jax.model import checkpoint_io, hf  # noqa: E402
from scicot_jax.model.config import T5Config  # noqa: E402


def hf_to_orbax(hf_dir: Path, out_dir: Path, param_dtype: str, force: bool) -> None:
    """Import an HF T5 v1.1 / Flan-T5 directory and save it as a params checkpoint."""
    config, params = hf.import_hf(hf_dir, param_dtype=param_dtype)
    checkpoint_io.save_params(out_dir, params, config, force=force)
    print(
        f"{hf_dir} -> {out_dir} ({config.num_encoder_layers}+{config.num_decoder_layers} "
        f"layers, d_model {config.d_model}, vocab {config.vocab_size})"
    )


def load_any(ckpt_dir: Path) -> tuple[T5Config, dict]:
    """(config, params) from a save_params directory or a trainer checkpoint."""
    if (ckpt_dir / checkpoint_io.CONFIG_FILE).exists() or not ckpt_dir.is_dir():
        return checkpoint_io.load_params(ckpt_dir)
    from scicot_jax.runtime import checkpoints

    step_dir = checkpoints.resolve_step_dir(ckpt_dir)
    if step_dir is None:
        raise FileNotFoundError(
            f"{ckpt_dir}: neither a save_params directory (config.json) nor a trainer checkpoint"
        )
    model = checkpoints.read_meta(step_dir).get("model")
    if not model:
        raise ValueError(f"{step_dir}/meta: no 'model' config recorded; cannot export")
    config = T5Config.from_dict(model, source=f"{step_dir}/meta")
    return config, checkpoint_io.restore_tree(step_dir / "params")


def orbax_to_hf(ckpt_dir: Path, out_dir: Path) -> None:
    """Export a params or trainer checkpoint to config.json + model.safetensors."""
    config, params = load_any(ckpt_dir)
    hf.export_hf(config, params, out_dir)
    print(f"{ckpt_dir} -> {out_dir}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    to_orbax = sub.add_parser("hf-to-orbax", help="Hugging Face directory -> orbax params")
    to_orbax.add_argument("hf_dir", type=Path)
    to_orbax.add_argument("out_dir", type=Path)
    to_orbax.add_argument("--param-dtype", default="float32", choices=["float32", "bfloat16"])
    to_orbax.add_argument("--force", action="store_true", help="overwrite OUT_DIR/params")
    to_hf = sub.add_parser("orbax-to-hf", help="orbax params or trainer checkpoint -> Hugging Face")
    to_hf.add_argument("ckpt_dir", type=Path)
    to_hf.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "hf-to-orbax":
            hf_to_orbax(args.hf_dir, args.out_dir, args.param_dtype, args.force)
        else:
            orbax_to_hf(args.ckpt_dir, args.out_dir)
    except (FileNotFoundError, FileExistsError, KeyError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
