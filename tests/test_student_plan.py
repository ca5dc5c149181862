"""One typed student path: the pipeline's settings reach the train step, whichever trainer runs.

The same plan through the in-process trainer and through the gin train binary gives bitwise-
equal parameters; each knob set by a pipeline flag (dropout, clipping, packing, dtype, batch
size) is what the train step receives.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from scicot_jax.pipeline import plan
from scicot_jax.pipeline.cli import _parser, config_from_args
from scicot_jax.pipeline.config import StudentConfig
from scicot_jax.pipeline.student import T5Student

TASK = "scicot:synthetic_coin_flip:baseline"  # registered by scicot_jax.tasks (demo vocabulary)
LENGTHS = {"inputs": 64, "targets": 8}
SMALL = {"d_model": 16, "num_heads": 2, "d_kv": 8, "d_ff": 32}
SMALL |= {"num_encoder_layers": 1, "num_decoder_layers": 1}


def _student(**kw) -> StudentConfig:
    base = dict(vocab=None, steps=3, batch_size=4, overrides=SMALL, dtype="float32")
    return StudentConfig(**{**base, **kw})


def _params(model_dir, model):
    from scicot_jax.runtime import inference

    return inference.load_model(str(model_dir), model)[1]


@pytest.mark.slow  # two trainings and the SeqIO pipeline: minutes on 2 busy cores
def test_same_plan_through_both_trainers_gives_bitwise_equal_params(tmp_path, tiny_vocab):
    cfg = _student(dropout_rate=0.1, clip_grad_norm=0.5, trainer="gin")
    model = plan.model_config(cfg, tiny_vocab.vocab_size)
    task = plan.SeqioTask(TASK, LENGTHS)
    a = plan.build(cfg, model, tmp_path / "inprocess", "baseline", task)
    b = plan.build(cfg, model, tmp_path / "gin", "baseline", task)
    ra, rb = plan.train_in_process(a), plan.train_with_gin(b)
    assert ra.step == rb.step == 3
    assert "T5Config.dropout_rate = 0.1" in (tmp_path / "gin" / "config.gin").read_text()
    pa, pb = _params(tmp_path / "inprocess", model), _params(tmp_path / "gin", model)
    leaves_a, leaves_b = jax.tree.leaves(pa), jax.tree.leaves(pb)
    assert jax.tree.structure(pa) == jax.tree.structure(pb) and len(leaves_a) > 5
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture
def captured(monkeypatch):
    """What the trainer's step is given: the TrainConfig and the first batch of each run."""
    from scicot_jax.train import trainer

    seen = []

    def fake_train(config, batches, **kw):
        first = next(iter(batches(0) if callable(batches) else batches))
        seen.append((config, first))
        return trainer.TrainResult(config.train_steps, False, {}, {}, config.model_dir)

    monkeypatch.setattr(trainer, "train", fake_train)
    return seen


@pytest.mark.parametrize("trainer", ["inprocess", "gin"])
def test_each_pipeline_flag_reaches_the_step(tmp_path, tiny_vocab_path, captured, trainer):
    flags = [
        "--student.dropout_rate",
        "0.25",
        "--student.clip_grad_norm",
        "0.5",
        "--student.dtype",
        "bfloat16",
    ]
    flags += [
        "--student.batch_size",
        "6",
        "--student.trainer",
        trainer,
        "--student.vocab",
        str(tiny_vocab_path),
    ]
    flags += ["--student.pack", "--student.packed_row_tokens", "512"]
    args = _parser().parse_args(["run", "--task", "synthetic_coin_flip", "--out", "x", *flags])
    cfg = config_from_args(args).student
    cfg = dataclasses.replace(cfg, overrides=SMALL, steps=2)
    student = T5Student(cfg, task="synthetic_coin_flip")
    pairs = [(" ".join(["flip"] * n), "yes") for n in range(20, 30)]  # lengths 64 / 8
    student.train(pairs, tmp_path, stage="baseline", task=lambda vocab: TASK)
    ((config, batch),) = captured
    assert config.model.dropout_rate == 0.25
    assert config.optimizer.clip_grad_norm == 0.5
    assert config.model.dtype == "bfloat16"
    assert batch["encoder_input_tokens"].shape[0] == 6
    # Packed by either trainer, into rows whose lengths were fitted to the data within 512.
    assert batch["encoder_segment_ids"].max() > 1
    assert sum(config.feature_lengths.values()) <= 512
    assert batch["encoder_input_tokens"].shape[1] == config.feature_lengths["inputs"]
    assert config.feature_lengths != {"inputs": 64, "targets": 8}


def test_defaults_are_one_and_the_same(tmp_path, tiny_vocab):
    """No flags: both trainers get dropout 0, clipping 1.0, no packing, fp32 on CPU."""
    for trainer in ("inprocess", "gin"):
        cfg = StudentConfig(vocab=None, trainer=trainer)
        model = plan.model_config(cfg, tiny_vocab.vocab_size)
        assert (model.dropout_rate, model.dtype) == (0.0, "float32")
        p = plan.build(cfg, model, tmp_path, "baseline", plan.SeqioTask(TASK, LENGTHS))
        assert p.train.optimizer.clip_grad_norm == 1.0 and p.data.pack is False
        assert p.data.batch_size == p.batch_size == cfg.batch_size


def test_gin_bindings_carry_every_train_config_field(tmp_path, tiny_vocab):
    """Each TrainConfig field reaches the gin binary, or is one the binary sets itself."""
    from scicot_jax.train.trainer import TrainConfig

    cfg = _student(trainer="gin")
    p = plan.build(
        cfg,
        plan.model_config(cfg, tiny_vocab.vocab_size),
        tmp_path,
        "baseline",
        plan.SeqioTask(TASK, LENGTHS),
    )
    objects = {"model", "optimizer", "loss", "checkpoint", "partitioning"}
    carried = objects | set(plan.BINARY_SCALARS) | set(plan.BINARY_OWN_FIELDS)
    assert {f.name for f in dataclasses.fields(TrainConfig)} == carried | {"dropout_rng_impl"}
    bindings = plan.gin_bindings(p)
    assert "train.use_hardware_rng = True" in bindings and "train.total_steps = 3" in bindings

    def with_rng(impl):
        return dataclasses.replace(p, train=dataclasses.replace(p.train, dropout_rng_impl=impl))

    assert "train.use_hardware_rng = False" in plan.gin_bindings(with_rng("threefry2x32"))
    with pytest.raises(ValueError, match="unsafe_rbg.*use_hardware_rng"):
        plan.gin_bindings(with_rng("unsafe_rbg"))


def test_an_owned_knob_in_overrides_is_refused(tiny_vocab):
    with pytest.raises(ValueError, match="dropout_rate"):
        plan.model_config(_student(overrides={"dropout_rate": 0.1}), tiny_vocab.vocab_size)


@pytest.mark.slow  # trains, decodes and scores twice: about a minute on 2 busy cores
def test_trained_student_decodes_and_scores_after_a_restart(tmp_path, tiny_vocab_path):
    """Decoding and scoring read the checkpoint's own config: a fresh student (a resumed
    pipeline) gives the same outputs as the one that trained."""
    cfg = _student(steps=2, vocab=str(tiny_vocab_path), eval_batch_size=4)
    student = T5Student(cfg, task="synthetic_coin_flip")
    pairs = [("a coin is heads up. flip it.", "no"), ("a coin is tails up.", "yes")]
    out = student.train(pairs, tmp_path, stage="baseline", task=lambda vocab: TASK)
    ckpt = out["checkpoint"]
    again = T5Student(cfg, task="synthetic_coin_flip")
    assert again.model_for(ckpt) == student.model_for(ckpt)
    texts = [p[0] for p in pairs]
    got = [  # each decodes itself (through infer's files, in separate directories)
        s.predict(ckpt, texts, stage="baseline", infer_input=tmp_path / name / "in.jsonl")
        for s, name in ((again, "again"), (student, "first"))
    ]
    assert got[0] == got[1] and len(got[0]) == 2
    np.testing.assert_allclose(again.score(ckpt, pairs), student.score(ckpt, pairs), rtol=1e-6)


PACKED_TEXTS = [(" ".join(["flip"] * n), "yes " * (n % 4 + 1)) for n in range(5, 45)]


def _packed_plan(tmp_path, tiny_vocab):
    cfg = _student(pack=True, packed_row_tokens=128, steps=2)
    model = plan.model_config(cfg, tiny_vocab.vocab_size)
    pairs = plan.TokenizedPairs(tiny_vocab, model, PACKED_TEXTS, 64, 16)
    return plan.build(cfg, model, tmp_path, "baseline", pairs)


def test_inprocess_student_packs_and_resumes_exactly(tmp_path, tiny_vocab):
    """--student.pack with the in-process trainer: pairs packed best-fit into rows fitted to them,
    batch k replayed exactly on resume, each host its rows."""
    p = _packed_plan(tmp_path, tiny_vocab)
    data = p.data
    assert isinstance(data, plan.PackedPairs) and p.train.feature_lengths == data.lengths
    assert sum(data.lengths.values()) <= 128 and data.examples_per_row > 1.5
    stream = data.batches(4, seed=0)
    first = [next(stream) for _ in range(6)]
    assert np.mean([b["encoder_segment_ids"].max(axis=1).mean() for b in first]) > 1.5
    resumed = next(data.batches(4, seed=0, start=4))
    for k, v in first[4].items():
        np.testing.assert_array_equal(resumed[k], v, err_msg=k)
    host1 = next(data.batches(4, seed=0, host=1, hosts=2))
    want = first[0]["decoder_target_tokens"][1::2]
    np.testing.assert_array_equal(host1["decoder_target_tokens"], want)


@pytest.mark.slow  # compiles and runs a train step: about a minute on 2 busy cores
def test_inprocess_student_trains_on_packed_rows(tmp_path, tiny_vocab_path):
    """The packed student trains, and counts the tokens the budget planned for its rows."""
    cfg = _student(pack=True, packed_row_tokens=128, steps=2, vocab=str(tiny_vocab_path))
    cfg = dataclasses.replace(cfg, inputs_length=64, targets_length=16)  # as _packed_plan's
    student = T5Student(cfg, task="synthetic_coin_flip")
    rows = student.prepare(PACKED_TEXTS)
    res = student.train(rows, tmp_path, stage="baseline")
    assert res["steps"] == 2 and np.isfinite(res["final_loss"])
    per_row = rows.tokens_per_example * rows.examples_per_row
    assert isinstance(rows, plan.PackedPairs) and rows.examples_per_row > 1.5
    assert res["train_tokens"] == int(2 * 4 * per_row)


def test_demo_pack_flag_packs_the_in_process_student(tmp_path, tiny_vocab):
    """`run_pipeline.py demo --pack`: the demo's in-process students train on packed rows."""
    from scicot_jax.data import formats, packing, synthetic
    from scicot_jax.data.cards import load_card
    from scicot_jax.data.sources import read_examples
    from scicot_jax.pipeline.demo import demo_config

    args = _parser().parse_args(["demo", "--pack"])
    run = demo_config(args.out, args.seed, args.pack)
    cfg = run.student
    assert cfg.pack and cfg.trainer == "inprocess"
    model = plan.model_config(cfg, tiny_vocab.vocab_size)
    card = load_card("synthetic_compass")
    exs = list(read_examples(card, "train"))  # the whole split: 60 examples packed to 0.94
    texts = [formats.one_stage(ex, synthetic.write_rationale("compass", ex, 0)) for ex in exs]
    pairs = plan.TokenizedPairs(tiny_vocab, model, texts, 128, 128)
    p = plan.build(cfg, model, tmp_path, "one_stage", pairs, steps=2)
    assert isinstance(p.data, plan.PackedPairs)
    batch = next(p.data.batches(cfg.batch_size, run.seed))
    assert batch["encoder_segment_ids"].max(axis=1).min() > 1  # every row holds several
    assert packing.density(batch) >= 0.95 > packing.density(pairs.batch(np.arange(32)))
