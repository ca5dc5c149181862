"""SeqIO registry: names, run tasks and degrees, correctness filter, packing, postprocess, metrics."""

import json
import warnings

import numpy as np
import pytest

seqio = pytest.importorskip("seqio")

from scicot_jax import tasks as T  # noqa: E402 (after the importorskip)
from scicot_jax.data import synthetic  # noqa: E402
from scicot_jax.data.cards import load_card  # noqa: E402
from scicot_jax.data.sources import read_examples  # noqa: E402
from scicot_jax.data.store import RationaleRecord, RationaleStore  # noqa: E402

CARD = """
name = "tiny_mc"
answer_type = "multiple_choice"
[source]
type = "synthetic"
task = "mc_reasoning"
difficulty = 2
sizes = { train = 8, validation = 3, test = 3 }
[splits]
train = "train"
validation = "validation"
test = "test"
[feature_lengths]
inputs = 64
targets = 64
"""
LENGTHS = {"inputs": 96, "targets": 96}


@pytest.fixture(scope="module")
def card_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cards") / "tiny_mc.toml"
    path.write_text(CARD)
    return path


def _teacher_run(run_dir, card_path, samples=3):
    """A teacher run: `samples` rationales per train question; sample 1 of example 0 is wrong."""
    card = load_card(card_path)
    store = RationaleStore.create(run_dir, {"card": str(card_path), "teacher": "oracle"})
    for ex in read_examples(card, "train"):
        for i in range(samples):
            wrong = ex.id.endswith("00000") and i == 1
            store.append(
                RationaleRecord(
                    ex.id,
                    i,
                    synthetic.write_rationale("mc_reasoning", ex, i),
                    "A" if wrong else ex.answer,
                    not wrong,
                    "teacher:oracle",
                    "zero_shot_cot",
                    0.7,
                )
            )
    store.close()
    return card


def _count(name, split, lengths=LENGTHS):
    task = seqio.get_mixture_or_task(name)
    return sum(1 for _ in task.get_dataset(lengths, split=split, shuffle=False))


def test_names_are_legal_and_stable():
    assert T.task_name("arc-easy", "one_stage", "teacher run/1", 4) == (
        "scicot:arc_easy:one_stage:teacher_run_1_d4"
    )
    assert T.task_name("arc_easy", "baseline") == "scicot:arc_easy:baseline"
    assert T.degrees_for(1) == [1] and T.degrees_for(10) == [1, 2, 4, 8, 10]
    # a baseline's run names a pipeline run's own splits of the card
    assert T.task_name("x", "baseline", "run") == "scicot:x:baseline:run"
    with pytest.raises(ValueError):
        T.task_name("x", "one_stage")
    assert "scicot:synthetic_mc:baseline" in seqio.TaskRegistry.names()  # on import


def test_run_tasks_degrees_and_filter(tmp_path, card_path, tiny_vocab):
    _teacher_run(tmp_path / "oracle-run", card_path)
    names = T.register_run_dir(tmp_path / "oracle-run", vocabulary=tiny_vocab)
    base = "scicot:tiny_mc:one_stage:oracle_run"
    assert {base, f"{base}_d1", f"{base}_d2", f"{base}_d3"} <= set(names)
    assert "scicot:tiny_mc:stage2:oracle_run_d2" in names
    assert _count(base, "train") == 8 * 3 - 1  # the wrong sample is filtered out
    assert _count(f"{base}_d1", "train") == 8
    assert _count(f"{base}_d2", "train") == 8 * 2 - 1
    assert _count(base, "validation") == 3  # eval splits come from the card
    assert T.task_info(f"{base}_d2").degree == 2
    stage2 = seqio.get_mixture_or_task("scicot:tiny_mc:stage2:oracle_run")
    assert list(stage2.splits) == ["train"]  # only splits with rationales
    T.register_run_dir(
        tmp_path / "oracle-run",
        name="all",
        correct_only=False,
        vocabulary=tiny_vocab,
        methods=["stage1"],
    )
    assert _count("scicot:tiny_mc:stage1:all", "train") == 8 * 3

    ex = next(
        seqio.get_mixture_or_task(f"{base}_d1")
        .get_dataset(LENGTHS, split="train", shuffle=False)
        .as_numpy_iterator()
    )
    assert ex["targets_pretokenized"].decode().endswith(" --> " + ex["answer"].decode())
    assert ex["inputs"][-1] == 1 and ex["targets"][-1] == 1  # EOS appended


def test_packing_with_enc_dec_feature_converter(tmp_path, card_path, tiny_vocab):
    _teacher_run(tmp_path / "run", card_path, samples=2)
    T.register_run_dir(tmp_path / "run", vocabulary=tiny_vocab, methods=["one_stage"])
    task = seqio.get_mixture_or_task("scicot:tiny_mc:one_stage:run")
    lengths = {"inputs": 256, "targets": 256}
    ds = task.get_dataset(lengths, split="train", shuffle=False)
    converter = seqio.EncDecFeatureConverter(pack=True)
    batches = list(converter(ds, lengths).batch(4).as_numpy_iterator())
    b = batches[0]
    assert set(b) == {
        "encoder_input_tokens",
        "encoder_segment_ids",
        "encoder_positions",
        "decoder_input_tokens",
        "decoder_target_tokens",
        "decoder_loss_weights",
        "decoder_segment_ids",
        "decoder_positions",
    }
    assert b["encoder_input_tokens"].shape == (4, 256)
    assert all(v.dtype == np.int32 for v in b.values())
    assert b["encoder_segment_ids"].max() >= 2  # several examples per row
    # Decoder inputs are the targets shifted right, with 0 at each segment start.
    tgt, dec, seg = (
        b["decoder_target_tokens"][0],
        b["decoder_input_tokens"][0],
        b["decoder_segment_ids"][0],
    )
    starts = np.flatnonzero((seg > 0) & (np.r_[0, seg[:-1]] != seg))
    assert (dec[starts] == 0).all()
    inner = np.setdiff1d(np.flatnonzero(seg > 0), starts)
    assert (dec[inner] == tgt[inner - 1]).all()
    packed = sum(int((bb["decoder_target_tokens"] == 1).sum()) for bb in batches)
    assert packed == 8 * 2 - 1  # every kept example (one filtered as wrong), one EOS each


def test_postprocess_and_metrics(card_path):
    card = load_card(card_path)
    example = {
        "answer": np.bytes_(b"C"),
        "choices": json.dumps([["A", "3"], ["B", "5"], ["C", "7"], ["D", "9"]]).encode(),
    }
    post = T.make_postprocessor(card, "one_stage")
    assert post("5 + 2 = 7. Therefore, the answer is C. --> C", example=example) == "C"
    assert post("ignored", example=example, is_target=True) == "C"
    assert post("no answer here", example=example) == ""
    metric = T.make_metric(card, "one_stage")
    assert metric(["C", "A"], ["C", ""]) == {"accuracy": 50.0}
    s1 = T.make_postprocessor(card, "stage1")
    assert s1("5 + 2 = 7, which is choice (C).", example=example) == "C"
    assert T.make_metric(card, "stage1")(["C"], ["C"]) == {"rationale_answer_accuracy": 100.0}


def test_register_all_finds_runs_and_skips_broken(tmp_path, card_path, tiny_vocab):
    _teacher_run(tmp_path / "root" / "tiny" / "teacher1", card_path, samples=1)
    RationaleStore.create(tmp_path / "root" / "nocard", {})  # no card in the manifest
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = T.register_all(tmp_path / "root", vocabulary=tiny_vocab)
    assert "scicot:tiny_mc:stage1:teacher1_d1" in names
    assert any("nocard" in str(w.message) for w in caught)


def test_imported_real_run_degrees(shared_data, tmp_path, tiny_vocab):
    from scicot_jax.data import importers

    run = importers.svamp_multi_cot()
    importers.write_run(run, tmp_path / "mcot")
    names = T.register_run_dir(tmp_path / "mcot", vocabulary=tiny_vocab, methods=["one_stage"])
    assert "scicot:svamp_multi_cot:one_stage:mcot_d8" in names
    ok0 = sum(r.correct for r in run.records if r.sample_index == 0)
    ok4 = sum(r.correct for r in run.records if r.sample_index < 4)
    lengths = {"inputs": 512, "targets": 512}
    assert _count("scicot:svamp_multi_cot:one_stage:mcot_d1", "train", lengths) == ok0
    assert _count("scicot:svamp_multi_cot:one_stage:mcot_d4", "train", lengths) == ok4
    assert _count("scicot:svamp_multi_cot:one_stage:mcot", "test", lengths) == 150
