"""Convert T5 checkpoints between t5x, Hugging Face and our orbax formats (local or gs://).

  python tools/convert_checkpoint.py hf-to-orbax HF_DIR OUT_DIR     # OUT_DIR: INITIAL_CHECKPOINT_PATH
  python tools/convert_checkpoint.py orbax-to-hf CKPT OUT_DIR       # loadable by transformers
  python tools/convert_checkpoint.py t5x-to-orbax T5X_CKPT OUT_DIR  # a save_params directory
  python tools/convert_checkpoint.py orbax-to-t5x CKPT DST          # t5x's CHECKPOINT_PATH

CKPT is any checkpoint this project reads: a save_params directory (config.json + params/), a
trainer model dir, checkpoints dir or step dir (latest step), a t5x checkpoint_<step> (legacy
or orbax) or a Hugging Face directory. DST for orbax-to-t5x is a `checkpoint_<step>` directory
or a model dir that gets one; Adafactor state of a trainer checkpoint goes along.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from scicot_jax.checkpoints import convert  # noqa: E402
from scicot_jax.clihelp import show_defaults


def hf_to_orbax(hf_dir: str, out_dir: str, param_dtype: str, force: bool) -> None:
    """Import an HF T5 v1.1 / Flan-T5 directory and save it as a params checkpoint."""
    from scicot_jax.checkpoints import hf, params_io

    config, params = hf.import_hf(hf_dir, param_dtype=param_dtype)
    params_io.save_params(out_dir, params, config, force=force)
    print(
        f"{hf_dir} -> {out_dir} ({config.num_encoder_layers}+{config.num_decoder_layers} "
        f"layers, d_model {config.d_model}, vocab {config.vocab_size})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    to_orbax = sub.add_parser("hf-to-orbax", help="Hugging Face directory -> orbax params")
    to_orbax.add_argument("hf_dir")
    to_orbax.add_argument("out_dir")
    to_orbax.add_argument("--param-dtype", default="float32", choices=["float32", "bfloat16"])
    to_orbax.add_argument("--force", action="store_true", help="overwrite OUT_DIR/params")
    to_hf = sub.add_parser("orbax-to-hf", help="any checkpoint -> Hugging Face")
    to_hf.add_argument("ckpt_dir")
    to_hf.add_argument("out_dir")
    t5x_in = sub.add_parser("t5x-to-orbax", help="t5x checkpoint -> orbax params")
    t5x_in.add_argument("ckpt_dir")
    t5x_in.add_argument("out_dir")
    t5x_in.add_argument("--force", action="store_true", help="overwrite OUT_DIR/params")
    t5x_out = sub.add_parser("orbax-to-t5x", help="any checkpoint -> t5x legacy checkpoint")
    t5x_out.add_argument("ckpt_dir")
    t5x_out.add_argument("out_dir")
    t5x_out.add_argument("--dtype", choices=["float32", "bfloat16"], help="cast params on save")
    args = show_defaults(parser).parse_args(argv)
    try:
        if args.command == "hf-to-orbax":
            hf_to_orbax(args.hf_dir, args.out_dir, args.param_dtype, args.force)
        elif args.command == "orbax-to-hf":
            from scicot_jax.checkpoints import hf

            loaded = convert.load_any(args.ckpt_dir)
            hf.export_hf(loaded.config, loaded.params, args.out_dir)
            print(f"{args.ckpt_dir} -> {args.out_dir}")
        elif args.command == "t5x-to-orbax":
            loaded = convert.to_orbax(args.ckpt_dir, args.out_dir, force=args.force)
            print(f"{args.ckpt_dir} (step {loaded.step}) -> {args.out_dir}")
        else:
            out = convert.to_t5x(args.ckpt_dir, args.out_dir, dtype=args.dtype)
            print(f"{args.ckpt_dir} -> {out}")
    except (FileNotFoundError, FileExistsError, KeyError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
