"""Checks the t5x interop against t5x's own code (not part of `make test`; needs t5x sources).

  python tools/verify_t5x.py --t5x /path/to/t5x [--t5x airio/ jestimator/ site/ ...] \
      --workdir /tmp/t5x_verify [--write-reference tests/data/t5x_adafactor_reference.npz]

`--t5x` takes the folders to put on sys.path: a clone of google-research/t5x, plus airio and
jestimator git sources and anything else t5x imports that the venv lacks (t5x is never vendored
into this project). Without them it prints how to get them and exits 0 (skipped).

1. Real t5x (EncoderDecoderModel over t5x.examples.t5.network, its Adafactor with the standard
   factor rules; emb 128, heads 4 x 32, mlp 256: all attention kernels square) takes 3 updates and
   its Checkpointer writes checkpoint_3. The layout it wrote is printed (which leaves are inline in
   the msgpack, which are zarr).
2. This project restores that state (`checkpoints.t5x.read` + `t5x_adafactor.from_t5x`, what the
   train binary's INITIAL_CHECKPOINT_PATH does) and applies its optax Adafactor to t5x's 4th
   gradient; every param is compared with t5x's own 4th update.
3. The project's `convert.to_t5x` output of that restored state is restored by t5x's Checkpointer
   into its train state and `t5x.train.train` runs 2 steps from it.
With --write-reference, t5x's Adafactor also computes the small fixed reference the project's
tests keep (see tests/data/README.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HOWTO = """SKIPPED: t5x is not importable. To run this check:
  git clone https://github.com/google-research/t5x && git -C t5x checkout cc342d4
  git clone https://github.com/google/airio; git clone https://github.com/google-research/jestimator
  pip install --target site --no-deps grain==0.2.18 cached_property fiddle jaxtyping chex wadler_lindig \\
      typeguard toolz cloudpickle portpicker tensorboard
  python tools/verify_t5x.py --t5x t5x airio jestimator site --workdir /tmp/t5x_verify"""

LR = 0.01
SHAPE = dict(vocab=384, emb=128, heads=4, head_dim=32, mlp=256, layers=2)
BATCH, IN_LEN, OUT_LEN = 4, 16, 8
# Params the fixed reference keeps: square, tall and wide kernels, and unfactored ones.
REFERENCE_PARAMS = (
    "encoder/layers_0/attention/out/kernel",  # 128 x 128
    "decoder/layers_1/encoder_decoder_attention/query/kernel",  # 128 x 128
    "encoder/layers_1/mlp/wi_0/kernel",  # 128 x 256
    "decoder/layers_0/mlp/wo/kernel",  # 256 x 128
    "decoder/logits_dense/kernel",  # 128 x 384
    "token_embedder/embedding",  # 384 x 128
    "encoder/layers_0/pre_attention_layer_norm/scale",  # 128, full v
    "encoder/relpos_bias/rel_embedding",  # 4 x 32, full v
)
TASK_NAME = "verify_t5x:random_tokens"
N_SAMPLED = 512  # next-step values kept per reference param


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--t5x", nargs="+", default=[], help="folders to put on sys.path")
    ap.add_argument("--workdir", default="/tmp/t5x_verify")
    ap.add_argument("--write-reference", default=None)
    args = ap.parse_args()
    sys.path[1:1] = [os.path.abspath(p) for p in args.t5x]
    try:
        import t5x.train  # noqa: F401
    except ImportError as e:
        print(f"{HOWTO}\n({type(e).__name__}: {e})")
        return 0
    work = Path(args.workdir)
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"{work}: not empty; give a fresh --workdir")
    work.mkdir(parents=True, exist_ok=True)
    t5 = T5xSide(work)
    state3, grads4, state4 = t5.three_updates_then_fourth()
    show_layout(work / "t5x" / "checkpoint_3")
    restored = project_next_step(work / "t5x" / "checkpoint_3", grads4, state4)
    if args.write_reference:
        write_reference(t5, state3, args.write_reference)
    t5x_trains_from_converted(t5, restored, work)
    return 0


class T5xSide:
    """t5x's model, optimizer, partitioner and train state at the verification size."""

    def __init__(self, work: Path) -> None:
        import jax
        import seqio
        from t5x import adafactor, models, partitioning, utils
        from t5x.examples.t5 import network

        self.work = work
        cfg = network.T5Config(
            vocab_size=SHAPE["vocab"],
            dtype="float32",
            emb_dim=SHAPE["emb"],
            num_heads=SHAPE["heads"],
            num_encoder_layers=SHAPE["layers"],
            num_decoder_layers=SHAPE["layers"],
            head_dim=SHAPE["head_dim"],
            mlp_dim=SHAPE["mlp"],
            mlp_activations=("gelu", "linear"),
            dropout_rate=0.0,
            logits_via_embedding=False,
        )
        self.optimizer_def = adafactor.Adafactor(
            decay_rate=0.8,
            step_offset=0,
            logical_factor_rules=adafactor.standard_logical_factor_rules(),
        )
        vocab = seqio.PassThroughVocabulary(size=SHAPE["vocab"], eos_id=1)
        self.model = models.EncoderDecoderModel(
            module=network.Transformer(cfg),
            input_vocabulary=vocab,
            output_vocabulary=vocab,
            optimizer_def=self.optimizer_def,
        )
        self.partitioner = partitioning.PjitPartitioner(
            num_partitions=1, logical_axis_rules=partitioning.standard_logical_axis_rules()
        )
        shapes = {
            "encoder_input_tokens": (BATCH, IN_LEN),
            "decoder_input_tokens": (BATCH, OUT_LEN),
        }
        self.initializer = utils.TrainStateInitializer(
            optimizer_def=self.optimizer_def,
            init_fn=self.model.get_initial_variables,
            input_shapes=shapes,
            partitioner=self.partitioner,
        )
        self.jax = jax

    def batch(self, i: int) -> dict:
        import numpy as np

        rng = np.random.default_rng(100 + i)
        tokens = lambda n: rng.integers(2, SHAPE["vocab"], (BATCH, n), dtype=np.int32)  # noqa: E731
        targets = tokens(OUT_LEN)
        dec_in = np.concatenate([np.zeros((BATCH, 1), np.int32), targets[:, :-1]], axis=1)
        return {
            "encoder_input_tokens": tokens(IN_LEN),
            "decoder_input_tokens": dec_in,
            "decoder_target_tokens": targets,
            "decoder_loss_weights": np.ones((BATCH, OUT_LEN), np.float32),
        }

    def grads(self, state, i: int):
        jax = self.jax
        fn = lambda p: self.model.loss_fn(p, self.batch(i), None)[0]  # noqa: E731
        return jax.jit(jax.grad(fn))(state.params)

    def three_updates_then_fourth(self):
        from t5x import checkpoints

        state = self.initializer.from_scratch(self.jax.random.PRNGKey(0))
        for i in range(3):
            state = state.apply_gradient(self.grads(state, i), learning_rate=LR)
        ckpt = checkpoints.Checkpointer(state, self.partitioner, self.work / "t5x")
        ckpt.save(state)
        print(f"t5x: 3 Adafactor updates, wrote {self.work / 't5x' / 'checkpoint_3'}")
        grads4 = self.grads(state, 3)
        return state, grads4, state.apply_gradient(grads4, learning_rate=LR)


def show_layout(step_dir: Path) -> None:
    """What t5x's Checkpointer put inline in the msgpack and what in zarr stores."""
    from scicot_jax.checkpoints import t5x as tc

    tree = tc._msgpack(step_dir)
    kinds: dict = {}
    for key, leaf in tc._leaves(tree):
        where = "zarr" if tc._is_spec(leaf) else f"inline{tuple(getattr(leaf, 'shape', ()))}"
        slot = key[-1] if key[0] == "state" else key[0]
        kinds.setdefault((slot, where.split("(")[0]), []).append(where)
    print("t5x layout (leaf kind: where, count, example):")
    for (slot, where), ex in sorted(kinds.items()):
        print(f"  {slot:>12}: {where:<6} x{len(ex):<3} e.g. {ex[0]}")
    square = tree["state"]["param_states"]["encoder"]["layers_0"]["attention"]["out"]["kernel"]
    print(
        "  attention/out/kernel (128x128) v_row, v_col inline:",
        {k: getattr(v, "shape", v) for k, v in square.items()},
    )


def project_next_step(step_dir: Path, grads4, state4):
    """The project restores t5x's state and takes the 4th step with t5x's gradient."""
    import jax
    import numpy as np
    import optax

    from scicot_jax.checkpoints import t5x as tc
    from scicot_jax.checkpoints import t5x_adafactor
    from scicot_jax.model import T5Config, logical_axes
    from scicot_jax.train.optimizers import OptimizerConfig, make_optimizer

    read = tc.read(step_dir)
    config = project_config()
    assert isinstance(config, T5Config)
    opt, _ = make_optimizer(OptimizerConfig(learning_rate=LR))
    params = jax.tree.map(lambda x: np.asarray(x, np.float32), read.params)
    abstract = jax.eval_shape(opt.init, params)
    opt_state = t5x_adafactor.from_t5x(
        abstract, read.param_states, read.step, params, logical_axes(config)
    )
    from flax.core import unfreeze

    grads = jax.tree.map(np.asarray, unfreeze(jax.device_get(grads4)))
    updates, new_state = opt.update(grads, opt_state, params)
    ours = optax.apply_updates(params, updates)
    theirs = unfreeze(jax.device_get(state4.params))
    worst = []
    for (kp, a), b in zip(
        jax.tree_util.tree_flatten_with_path(ours)[0], jax.tree.leaves(theirs), strict=True
    ):
        a, b, p = np.asarray(a), np.asarray(b), np.asarray(_at(params, kp))
        step_diff = np.abs((a - p) - (b - p)).max() / max(np.abs(b - p).max(), 1e-30)
        worst.append((float(step_diff), jax.tree_util.keystr(kp), a.shape))
    worst.sort(reverse=True)
    print(f"project: restored step {read.step}; 4th update vs t5x's, max |diff| / max |t5x step|:")
    for d, k, s in worst[:6]:
        print(f"  {d:.2e} {k} {s}")
    n_square = sum(1 for _, _, s in worst if len(s) == 2 and s[0] == s[1] == SHAPE["emb"])
    print(
        f"  all {len(worst)} params (of which {n_square} square 128x128 kernels) <= {worst[0][0]:.2e}"
    )
    assert worst[0][0] < 1e-4, worst[:3]
    return config, ours, new_state, read.step + 1


def project_config():
    from scicot_jax.model import T5Config

    return T5Config(
        vocab_size=SHAPE["vocab"],
        d_model=SHAPE["emb"],
        num_heads=SHAPE["heads"],
        d_kv=SHAPE["head_dim"],
        d_ff=SHAPE["mlp"],
        num_encoder_layers=SHAPE["layers"],
        num_decoder_layers=SHAPE["layers"],
        dtype="float32",
    )


def _at(tree, keypath):
    for k in keypath:
        tree = tree[k.key]
    return tree


def write_reference(t5: T5xSide, state3, out: str) -> None:
    """t5x's next step on regenerable inputs from its real step-3 state (tests/data/README.md)."""
    import jax.numpy as jnp
    import numpy as np
    from flax import traverse_util

    states = traverse_util.flatten_dict(state3.state_dict()["state"]["param_states"], sep="/")
    optimizer_def = state3._optimizer.optimizer_def  # as the train state set it up
    hyper = optimizer_def.hyper_params.replace(learning_rate=LR)
    arrays: dict = {"step": np.asarray(3), "learning_rate": np.asarray(LR)}
    for i, path in enumerate(REFERENCE_PARAMS):
        slots = {
            s: np.asarray(states[f"{path}/{s}"], np.float32) for s in ("v_row", "v_col", "v", "m")
        }
        shape = np.shape(_param(state3, path))
        param, grad = reference_inputs(i, shape)
        from t5x.adafactor import _AdafactorParamState

        new_param, new_state = optimizer_def.apply_param_gradient(
            3, hyper, jnp.asarray(param), _AdafactorParamState(**slots), jnp.asarray(grad), path
        )
        idx = np.random.default_rng(1000 + i).choice(
            param.size, min(N_SAMPLED, param.size), replace=False
        )
        arrays[f"{path}|shape"] = np.asarray(shape)
        for s, a in slots.items():
            arrays[f"{path}|{s}"] = a
        arrays[f"{path}|index"] = idx
        arrays[f"{path}|next"] = np.asarray(new_param).reshape(-1)[idx]
        for s in ("v_row", "v_col", "v"):
            arrays[f"{path}|next_{s}"] = np.asarray(getattr(new_state, s))
    np.savez_compressed(out, **arrays)
    print(f"reference: {out} ({os.path.getsize(out)} bytes)")


def _param(state, path: str):
    node = state.params
    for k in path.split("/"):
        node = node[k]
    return node


def reference_inputs(i: int, shape: tuple):
    """The param and gradient the reference step is taken from (regenerated by the tests)."""
    import numpy as np

    rng = np.random.default_rng(i)
    param = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    grad = (rng.standard_normal(shape) * 0.01).astype(np.float32)
    return param, grad


def t5x_trains_from_converted(t5: T5xSide, restored, work: Path) -> None:
    """The project's state, written as orbax-to-t5x writes it (`t5x_adafactor.to_t5x` +
    `checkpoints.t5x.write_legacy`), restored by t5x's Checkpointer; `t5x.train` runs 2 steps."""
    from scicot_jax.checkpoints import t5x as tc
    from scicot_jax.checkpoints import t5x_adafactor
    from scicot_jax.model import logical_axes

    config, params, opt_state, step = restored
    states = t5x_adafactor.to_t5x(opt_state, params, logical_axes(config))
    out = tc.write_legacy(work / "ours" / f"checkpoint_{step}", params, step, states)
    t5x_train_from(t5, out, step, params, work)
    t5x_eval_infer_files(t5, out, step, work)


def t5x_eval_infer_files(t5: T5xSide, out: Path, step: int, work: Path) -> None:
    """`t5x.infer` and `t5x.eval` on the same checkpoint and task: the files they write, beside
    the names our binaries give theirs (README's status table)."""
    import functools

    import seqio
    from t5x import eval as t5x_eval
    from t5x import infer as t5x_infer
    from t5x import utils

    from scicot_jax.runtime.task_eval import write_t5x_outputs

    name = _register_task()
    restore = utils.RestoreCheckpointConfig(path=str(out), mode="specific", dtype="float32")
    ds = _t5x_dataset(utils, name)
    common = dict(model=t5.model, restore_checkpoint_cfg=restore, partitioner=t5.partitioner)
    infer_dir = work / "t5x_infer"
    infer_dir.mkdir()  # t5x's gin summary makes it in the binary
    t5x_infer.infer(
        mode="predict",
        dataset_cfg=ds,
        output_dir=str(infer_dir),
        checkpoint_period=100,
        summarize_config_fn=lambda *a, **k: None,
        **common,
    )
    theirs = sorted(p.name for p in infer_dir.iterdir() if p.is_file())
    ours = f"{name}-predict.jsonl-{0:05}-of-{1:05}"  # scicot_jax/infer.py's name
    print(
        f"t5x.infer wrote {theirs}; ours writes {ours!r}: {'same' if ours in theirs else 'DIFFER'}"
    )
    eval_dir = work / "t5x_eval"
    eval_dir.mkdir()
    t5x_eval.evaluate(
        dataset_cfg=dataclasses.replace(ds, task_feature_lengths=None),  # t5x eval's default
        inference_evaluator_cls=functools.partial(  # as t5x's runs/eval.gin binds it
            seqio.Evaluator,
            logger_cls=[seqio.PyLoggingLogger, seqio.TensorBoardLogger, seqio.JSONLogger],
        ),
        output_dir=str(eval_dir),
        summarize_config_fn=lambda *a, **k: None,
        **common,
    )
    theirs = sorted(p.name for p in eval_dir.rglob("*.jsonl"))
    mine = work / "ours_eval"
    keys = ("input", "target", "prediction", "score", "split", "parsed", "gold", "correct")
    rows = [{"task": name, **dict.fromkeys(keys, 0)}]
    write_t5x_outputs(mine, step, {f"{name}/accuracy": 0.0}, rows, None)
    ours = sorted(p.name for p in mine.rglob("*.jsonl"))
    print(f"t5x.eval wrote {theirs}; ours writes {ours}: {'same' if ours == theirs else 'DIFFER'}")


def _t5x_dataset(utils, name: str):  # utils: t5x.utils (imported only where t5x is on the path)
    """t5x's DatasetConfig of the check's task: train split, in order, BATCH rows."""
    return utils.DatasetConfig(
        mixture_or_task_name=name,
        task_feature_lengths={"inputs": IN_LEN, "targets": OUT_LEN},
        split="train",
        batch_size=BATCH,
        shuffle=False,
        seed=0,
    )


def _register_task() -> str:
    """A SeqIO task of random token rows for t5x's binaries (PassThroughVocabulary)."""
    import numpy as np
    import seqio
    import tensorflow as tf

    def dataset_fn(split, shuffle_files, seed=None):
        rng = np.random.default_rng(7)
        rows = {
            "inputs": rng.integers(2, SHAPE["vocab"], (64, IN_LEN - 1), dtype=np.int32),
            "targets": rng.integers(2, SHAPE["vocab"], (64, OUT_LEN - 1), dtype=np.int32),
        }
        return tf.data.Dataset.from_tensor_slices(rows)

    vocab = seqio.PassThroughVocabulary(size=SHAPE["vocab"], eos_id=1)
    features = {k: seqio.Feature(vocab, add_eos=True) for k in ("inputs", "targets")}
    name = TASK_NAME
    if name not in seqio.TaskRegistry.names():
        seqio.TaskRegistry.add(
            name,
            source=seqio.FunctionDataSource(dataset_fn, splits=["train"]),
            output_features=features,
            preprocessors=[seqio.preprocessors.append_eos],
            metric_fns=[_token_accuracy],
        )
    return name


def t5x_train_from(t5: T5xSide, out: Path, step: int, params, work: Path) -> None:
    """t5x's Checkpointer restores the legacy checkpoint `out`; `t5x.train` runs 2 steps."""
    import functools

    import jax
    import numpy as np
    from flax.core import unfreeze
    from t5x import checkpoints, trainer, utils
    from t5x import train as t5x_train

    template = t5.initializer.from_scratch(jax.random.PRNGKey(1))
    back = checkpoints.Checkpointer(template, t5.partitioner, work / "ours").restore(path=str(out))
    got = jax.tree.leaves(unfreeze(jax.device_get(back.params)))
    same = all(np.array_equal(a, b) for a, b in zip(got, jax.tree.leaves(params), strict=True))
    print(f"t5x Checkpointer.restore of ours: step {int(back.step)}, params bitwise equal: {same}")

    name = _register_task()
    model_dir = work / "t5x_train"
    final_step, final = t5x_train.train(
        model=t5.model,
        train_dataset_cfg=_t5x_dataset(utils, name),
        train_eval_dataset_cfg=None,
        infer_eval_dataset_cfg=None,
        checkpoint_cfg=utils.CheckpointConfig(
            save=utils.SaveCheckpointConfig(period=2, dtype="float32"),
            restore=utils.RestoreCheckpointConfig(path=str(out), mode="specific", dtype="float32"),
        ),
        partitioner=t5.partitioner,
        trainer_cls=functools.partial(
            trainer.Trainer,
            num_microbatches=None,
            learning_rate_fn=utils.create_learning_rate_scheduler(
                factors="constant", base_learning_rate=LR
            ),
        ),
        model_dir=str(model_dir),
        total_steps=step + 2,
        eval_steps=1,
        eval_period=1000,
        random_seed=0,
        summarize_config_fn=lambda *a, **k: None,
    )
    moved = max(
        float(np.abs(np.asarray(a) - np.asarray(b)).max())
        for a, b in zip(
            jax.tree.leaves(unfreeze(jax.device_get(final.params))), jax.tree.leaves(params)
        )
    )
    print(
        f"t5x.train from ours: restored step {step}, ran to step {int(final.step)} "
        f"(returned {final_step}); params moved by up to {moved:.2e}; "
        f"wrote {sorted(p.name for p in model_dir.iterdir() if p.name.startswith('checkpoint'))}"
    )
    assert int(final.step) == step + 2


def _token_accuracy(targets, predictions) -> dict:
    return {"accuracy": 100.0 * sum(list(t) == list(p) for t, p in zip(targets, predictions))}


if __name__ == "__main__":
    sys.exit(main())
