"""The train step's speed-motivated formulations compute what the plain ones do (values, grads)."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scicot_jax.model import T5Config
from scicot_jax.model.layers import MLP_KERNEL_INIT, Dense

CFG = T5Config.preset("tiny", vocab_size=96, dtype="float32")


def test_dense_on_flattened_tokens_matches_einsum():
    """Dense flattens [B, L, in] to [B*L, in]; output and both gradients equal the 3-D einsum."""
    x = jax.random.normal(jax.random.key(0), (2, 3, 5))
    dense = Dense(7, ("embed", "mlp"), MLP_KERNEL_INIT, CFG)
    params = nn.meta.unbox(dense.init(jax.random.key(1), x))
    kernel = params["params"]["kernel"]
    w = jax.random.normal(jax.random.key(2), (2, 3, 7))

    def ours(x, k):
        return jnp.sum(dense.apply({"params": {"kernel": k}}, x) * w)

    def plain(x, k):
        return jnp.sum(jnp.einsum("bli,io->blo", x, k) * w)

    out = dense.apply(params, x)
    assert out.shape == (2, 3, 7)
    np.testing.assert_allclose(out, jnp.einsum("bli,io->blo", x, kernel), rtol=1e-6, atol=1e-6)
    for g_ours, g_plain in zip(
        jax.grad(ours, (0, 1))(x, kernel), jax.grad(plain, (0, 1))(x, kernel), strict=True
    ):
        np.testing.assert_allclose(g_ours, g_plain, rtol=1e-5, atol=1e-6)


def test_dense_keeps_logical_axes():
    """The kernel keeps its [in, out] shape and logical axis names (t5x layout, sharding rules)."""
    x = jnp.ones((2, 3, 5))
    boxed = Dense(7, ("embed", "mlp"), MLP_KERNEL_INIT, CFG).init(jax.random.key(0), x)
    spec = nn.get_partition_spec(boxed)["params"]["kernel"]
    assert tuple(spec) == ("embed", "mlp")
    assert nn.meta.unbox(boxed)["params"]["kernel"].shape == (5, 7)


def _tpu_step(name="tpu_step"):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tpu_step_without_t5x_says_how_to_get_it(tmp_path, capsys):
    """No t5x clones under --t5x: the bench prints how to get them and exits 0, compiling nothing."""
    assert _tpu_step().main(["--t5x", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "git clone https://github.com/google-research/t5x" in out
    assert "--t5x" in out


def test_tpu_lookup_cost_compiles_both_forms_forward_and_gradient(capsys):
    """bench/tpu_lookup_cost.py: gather vs one-hot lookup on one TPU chip, each program costed."""
    rows = _tpu_step("tpu_lookup_cost").main(
        ["--topology", "v5e:2x2", "--tokens", "64", "--vocab", "256", "--d-model", "128"]
    )
    assert [(r["form"], r["program"]) for r in rows] == [
        (form, program)
        for form in ("gather (ours)", "one-hot (t5x)")
        for program in ("forward", "forward + gradient")
    ]
    assert all(r["bytes"] > 0 and r["cycles"] > 0 for r in rows)
    gather, one_hot = rows[0], rows[2]
    assert one_hot["flops"] >= 2 * 64 * 256 * 128 > gather["flops"]  # the one-hot matmul's FLOPs
    assert capsys.readouterr().out.count("| v5e:2x2 | 64 |") == 4


def test_tpu_step_table_ratios():
    """The side-by-side table divides ours by t5x's figure per metric and flags failed cells."""
    mod = _tpu_step()
    base = dict(preset="small", topology="v5e:2x2", chips=4, collective=2**20)
    ours = dict(base, system="ours", flops=2e12, bytes=3 * 2**30, argument=2**30, temp=2**29)
    t5x = dict(base, system="t5x", flops=1e12, bytes=2**30, argument=2**30, temp=2**30)
    text = mod.table([ours, t5x, dict(base, system="ours", topology="v4:2x2x1", error="boom")])
    row = next(line for line in text.splitlines() if "v5e:2x2" in line)
    assert "(2.000)" in row and "(3.000)" in row and "(0.500)" in row and "(1.000)" in row
    assert "boom" in text

    # A variant of ours pairs with t5x's default cell; XLA options only with t5x's same options.
    variant = dict(ours, variant="no-logits-barrier", bytes=2**30)
    no_msa = dict(ours, xla=["xla_msa_enable=false"], bytes=2**31)
    t5x_no_msa = dict(t5x, xla=["xla_msa_enable=false"], bytes=2**32)
    rows = mod.table([ours, variant, no_msa, t5x, t5x_no_msa]).splitlines()[2:]
    assert [r.split(" | ")[0] for r in rows] == [
        "| T5-small",
        "| T5-small, no-logits-barrier",
        "| T5-small, xla_msa_enable=false",
    ]
    assert "(1.000)" in rows[1].split(" | ")[4] and "(0.500)" in rows[2].split(" | ")[4]


def test_tpu_step_table_from_several_files_pairs_across_them(tmp_path, capsys):
    """--table-from takes several jsonl files: a variant in one pairs with t5x's cell in another."""
    base = dict(preset="small", topology="v5e:2x2", chips=4, collective=1, argument=1, temp=1)
    main = tmp_path / "main.jsonl"
    main.write_text(json.dumps(dict(base, system="t5x", flops=1, bytes=4, cycles=1)) + "\n")
    extra = tmp_path / "variants.jsonl"
    ours = dict(base, system="ours", flops=1, bytes=2, cycles=1, variant="relpos-one-hot")
    extra.write_text(json.dumps(ours) + "\n")
    assert _tpu_step().main(["--table-from", str(main), str(extra)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "relpos-one-hot" in line)
    assert "(0.500)" in row.split(" | ")[4]


# An optimized TPU HLO as compiled.as_text() prints it (tiled layouts; operands with their shapes
# or, as jax 0.10 prints them, by name only).
_HLO = """HloModule jit_train_step, entry_computation_layout={(f32[16,6,512,512]{3,2,1,0})->bf16[2]}

%fused_computation (param_0: f32[16,6,512,512]) -> bf16[16,6,512,512] {
  %param_0 = f32[16,6,512,512]{3,2,1,0:T(8,128)} parameter(0)
  ROOT %convert.1 = bf16[16,6,512,512]{3,2,1,0:T(8,128)(2,1)} convert(f32[16,6,512,512]{3,2,1,0:T(8,128)} %param_0)
}

%body (p: (s32[], f32[1024])) -> (s32[], f32[1024]) {
  %p = (s32[], f32[1024]{0:T(1024)}) parameter(0)
  %x = f32[1024]{0:T(1024)} get-tuple-element((s32[], f32[1024]{0:T(1024)}) %p), index=1
  %y = f32[1024]{0:T(1024)} multiply(%x, %x), metadata={op_name="jit(train_step)/adafactor/mul"}
  %i = s32[] get-tuple-element((s32[], f32[1024]{0:T(1024)}) %p), index=0
  ROOT %t = (s32[], f32[1024]{0:T(1024)}) tuple(s32[] %i, f32[1024]{0:T(1024)} %y)
}

ENTRY %main.9 (Arg_0.1: f32[16,6,512,512]) -> bf16[16,6,512,512] {
  %Arg_0.1 = f32[16,6,512,512]{3,2,1,0:T(8,128)} parameter(0), metadata={op_name="state"}
  %w = (s32[], f32[1024]{0:T(1024)}) while((s32[], f32[1024]{0:T(1024)}) %init), condition=%cond, body=%body
  ROOT %fusion.3 = bf16[16,6,512,512]{3,2,1,0:T(8,128)(2,1)} fusion(f32[16,6,512,512]{3,2,1,0:T(8,128)} %Arg_0.1), kind=kLoop, calls=%fused_computation, metadata={op_name="jit(train_step)/transpose(jvp(Transformer))/encoder/layers_3/attention/convert_element_type" source_file="x.py" source_line=1}, backend_config={"flag_configs":[],"window_config":{"estimated_cycles":"110416"}}
}
"""


def test_hlo_bytes_counts_top_level_instructions_by_region():
    """Operand + output bytes of entry and while-body instructions, grouped by jax's op_name."""
    mod = _tpu_step("hlo_bytes")
    assert mod.shape_bytes("(f32[2,3]{1,0}, bf16[4]{0:T(256)}, pred[])") == 24 + 8 + 1
    ins = {i["name"]: i for i in mod.instructions(_HLO)}
    assert "%convert.1" not in ins  # inside a fusion: counted by the fusion
    n = 16 * 6 * 512 * 512
    assert ins["%fusion.3"]["bytes"] == n * 4 + n * 2
    assert ins["%y"]["bytes"] == 3 * 1024 * 4  # while body reached; bare operands looked up
    assert ins["%Arg_0.1"]["bytes"] == 0 and ins["%x"]["bytes"] == 0
    regions = mod.by_region(_HLO)
    assert regions["bwd encoder attention"] == n * 6
    while_itself = 2 * (4 + 1024 * 4)  # its tuple operand and output; no op_name
    assert regions["optimizer / other"] == 3 * 1024 * 4 + while_itself
    cycles = mod.by_region(_HLO, "cycles")  # the compiler's own per-op estimate
    assert cycles["bwd encoder attention"] == 110416 and cycles["optimizer / other"] == 0


def test_adafactor_one_pass_param_scale_equals_optax_bitwise():
    """Our Adafactor (one RMS pass per parameter) = optax.adafactor: same state tree, same bits.

    Three steps on factored, unfactored and all-zero (RMS below the 1e-3 floor) parameters.
    """
    import optax

    from scicot_jax.train.optimizers import OptimizerConfig, make_optimizer

    keys = jax.random.split(jax.random.key(0), 6)
    params = {
        "kernel": jax.random.normal(keys[0], (256, 128)) * 0.05,
        "scale": jax.random.normal(keys[1], (128,)) + 1.0,
        "zeros": jnp.zeros((128, 4)),
    }
    ours, sched = make_optimizer(OptimizerConfig(learning_rate=1e-2))
    ref = optax.adafactor(learning_rate=sched, min_dim_size_to_factor=128, decay_rate=0.8)
    s_ours, s_ref = ours.init(params), ref.init(params)
    assert jax.tree.structure(s_ours) == jax.tree.structure(s_ref)
    p_ours = p_ref = params
    for i in range(3):
        grads = jax.tree.map(lambda p, k=keys[2 + i]: jax.random.normal(k, p.shape) * 1e-2, params)
        u_ours, s_ours = jax.jit(ours.update)(grads, s_ours, p_ours)
        u_ref, s_ref = jax.jit(ref.update)(grads, s_ref, p_ref)
        p_ours, p_ref = optax.apply_updates(p_ours, u_ours), optax.apply_updates(p_ref, u_ref)
        for a, b in zip(jax.tree.leaves((p_ours, s_ours)), jax.tree.leaves((p_ref, s_ref))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(jnp.abs(p_ours["zeros"]).max()) > 0  # the floor branch moved the zero param


def test_half_precision_dense_equals_the_float32_form():
    """bf16 configs' Dense (t5x's DenseGeneral form) over [B, L, heads, d_kv] equals the flattened one."""
    f32, bf16 = CFG, CFG.replace(dtype="bfloat16")
    assert bf16.half_precision and not f32.half_precision
    x = jax.random.normal(jax.random.key(2), (2, 3, 8))
    heads = (4, 5)
    dense = {
        b: Dense(20, ("embed", "joined_kv"), MLP_KERNEL_INIT, b, out_shape=heads)
        for b in (f32, bf16)
    }
    p = nn.meta.unbox(dense[f32].init(jax.random.key(3), x))
    y = {b: d.apply(p, x) for b, d in dense.items()}
    assert y[bf16].shape == y[f32].shape == (2, 3, 4, 5) and y[bf16].dtype == jnp.bfloat16
    np.testing.assert_allclose(y[bf16].astype(jnp.float32), y[f32], rtol=2e-2, atol=2e-2)
    back = {b: Dense(8, ("joined_kv", "embed"), MLP_KERNEL_INIT, b, in_axes=2) for b in (f32, bf16)}
    q = nn.meta.unbox(back[f32].init(jax.random.key(4), y[f32]))
    assert q["params"]["kernel"].shape == (20, 8)  # the kernel stays 2-D (t5x's stored layout)
    z32 = back[f32].apply(q, y[f32])
    np.testing.assert_allclose(
        back[bf16].apply(q, y[f32]).astype(jnp.float32), z32, rtol=5e-2, atol=5e-2
    )
    np.testing.assert_allclose(
        z32, y[f32].reshape(2, 3, 20) @ q["params"]["kernel"], rtol=1e-5, atol=1e-5
    )


def test_hbm_peak_finds_the_live_peak_and_the_packing_gap(tmp_path):
    """hbm_peak sums the default space's temporaries live at each step; other spaces are left out."""
    mod = _tpu_step("hbm_peak")
    pre = "module_0000.jit_train_step"
    (tmp_path / f"{pre}.after_optimizations-buffer-assignment.txt").write_text(
        "allocation 0: size 1000, parameter 0, shape |f32[250]| at ShapeIndex {}:\n"
        " value: <1 p @0> (size=1000,offset=0): f32[250]{0}\n"
        "allocation 1: size 700, preallocated-temp:\n"
        " value: <2 a @0> (size=400,offset=0): f32[100]{0}\n"
        " value: <3 b{0} @0> (size=200,offset=400): f32[50]{0}\n"
        " value: <4 c @0> (size=300,offset=0): f32[75]{0}\n"
        "allocation 2: size 900, color 1, preallocated-temp:\n"
        " value: <5 v @1> (size=900,offset=0): f32[225]{0:S(1)}\n"
    )
    (tmp_path / f"{pre}.after_optimizations-live-range.txt").write_text(
        "HloLiveRange (max 3):\n  InstructionSequence:\n    0:a\n    1:b\n    2:c\n"
        "  BufferLiveRange:\n    a{}:0-1\n    b{0}:1-2\n    c{}:2-2\n    v{}:0-2\n"
    )
    (tmp_path / f"{pre}.after_optimizations.txt").write_text(
        '  %b = (f32[50]) fusion(%a), metadata={op_name="jit(train_step)/encoder/b"}\n'
    )
    r = mod.peak(tmp_path)
    assert (r["allocation"], r["peak"], r["at"]) == (700, 600, "b")
    assert [(n, name) for n, name, _, _ in r["live"]] == [(400, "a{}"), (200, "b{0}")]
    assert r["live"][1][3] == "jit(train_step)/encoder/b"


def test_batch_shared_bias_gradient_equals_the_broadcast_add():
    """add_batch_shared_bias: forward and both gradients equal `logits + bias` (broadcast over B)."""
    from scicot_jax.model.attention import add_batch_shared_bias, xla_attention

    logits = jax.random.normal(jax.random.key(0), (3, 2, 5, 4))
    bias = jax.random.normal(jax.random.key(1), (1, 2, 5, 4))
    w = jax.random.normal(jax.random.key(2), logits.shape)
    ours = jax.grad(lambda a, b: jnp.sum(add_batch_shared_bias(a, b) ** 2 * w), (0, 1))
    plain = jax.grad(lambda a, b: jnp.sum((a + b) ** 2 * w), (0, 1))
    np.testing.assert_array_equal(add_batch_shared_bias(logits, bias), logits + bias)
    for g_ours, g_plain in zip(ours(logits, bias), plain(logits, bias), strict=True):
        assert g_ours.shape == g_plain.shape
        np.testing.assert_allclose(g_ours, g_plain, rtol=1e-5, atol=1e-5)
    # float32 attention takes this form: the bias gradient is a dot over the batch, no reduce.
    q = k = v = jnp.ones((3, 5, 2, 4))
    mask = jnp.ones((3, 1, 5, 5), bool)
    grad = jax.jit(jax.grad(lambda b: jnp.sum(xla_attention(q, k, v, b, mask))))
    hlo = grad.lower(jnp.zeros((1, 2, 5, 5))).as_text()
    assert "(tensor<3x2x5x5xf32>, tensor<3xf32>) -> tensor<2x5x5xf32>" in hlo
    assert "across dimensions = [0]" not in hlo


def test_train_bench_table_gives_medians_and_ranges_per_thread_count(tmp_path, capsys):
    """bench/train.py --table-from: one line per thread count, medians with [min-max] ranges."""
    runs = tmp_path / "runs.jsonl"

    def run(threads, ours_s, peer_s):
        res = {"ours": {"step_s": ours_s}, "hf_compile": {"step_s": peer_s}}
        return {"threads": threads, "results": res, "ratios": {"ours/hf_compile": peer_s / ours_s}}

    lines = [run(0, 0.4, 0.3), run(0, 0.3, 0.3), run(0, 0.5, 0.4), run(1, 0.6, 0.6)]
    lines.append(dict(run(1, 0.5, 0.6), label="after"))
    runs.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert _tpu_step("train").main(["--table-from", str(runs)]) == {}
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "threads default, 3 runs: ours 400.0 [300.0-500.0] ms; hf_compile 300.0 [300.0-400.0] ms;"
        " ours/hf_compile 0.80 [0.75-1.00]x",
        "threads 1, 1 runs: ours 600.0 [600.0-600.0] ms; hf_compile 600.0 [600.0-600.0] ms;"
        " ours/hf_compile 1.00 [1.00-1.00]x",
        "after: threads 1, 1 runs: ours 500.0 [500.0-500.0] ms; hf_compile 600.0 [600.0-600.0] ms;"
        " ours/hf_compile 1.20 [1.20-1.20]x",
    ]


def test_cpu_step_ab_variants_differ_where_they_say():
    """bench/cpu_step_ab.py: each variant pair traces or compiles the two forms it names."""
    from scicot_jax.model.attention import xla_attention

    ab = _tpu_step("cpu_step_ab")
    q = k = v = jnp.ones((3, 5, 2, 4))
    mask = jnp.ones((3, 1, 5, 5), bool)

    def grad_hlo():  # a new function each time: jax caches traces by function
        grad = jax.grad(lambda b: jnp.sum(xla_attention(q, k, v, b, mask)))
        return jax.jit(grad).lower(jnp.zeros((1, 2, 5, 5))).as_text()

    (_, reduce_context, _), (_, dot_context, _) = ab.variants("bias-gradient")
    with reduce_context():
        reduce_form = grad_hlo()
    with dot_context():
        dot_form = grad_hlo()
    assert "across dimensions = [0]" in reduce_form and "tensor<3xf32>) ->" not in reduce_form
    assert "across dimensions = [0]" not in dot_form and "tensor<3xf32>) ->" in dot_form
    (_, _, none), (_, _, cpu) = ab.variants("copy-insertion")
    assert none is None and cpu == {"xla_cpu_copy_insertion_use_region_analysis": True}

    from model_fixtures import table_gradient_scatters

    from scicot_jax.model import T5Config, Transformer, init_params

    config = T5Config.preset("tiny", vocab_size=40, dtype="float32")
    params = init_params(config, jax.random.key(0))
    enc, dec = jnp.ones((2, 6), jnp.int32), jnp.ones((2, 5), jnp.int32)
    loss = lambda p: Transformer(config).apply({"params": p}, enc, dec, dec).sum()
    # The tried kernel-gradient form: a barrier only for a kernel wider in than out; same values.
    from scicot_jax.model.layers import MLP_KERNEL_INIT, Dense

    (_, plain, _), (_, oriented, _) = ab.variants("kernel-gradient")
    x = jnp.ones((2, 3, 8)) * jnp.arange(8.0)
    for features, barriers in ((4, 1), (16, 0)):
        dense = Dense(features, ("embed", "mlp"), MLP_KERNEL_INIT, config)
        p = dense.init(jax.random.key(0), x)
        grad = jax.grad(lambda p, x, d=dense: jnp.sum(d.apply(p, x) ** 2), argnums=(0, 1))
        with plain():
            want = grad(p, x)
        with oriented():
            got = grad(p, x)
            jaxpr = str(jax.make_jaxpr(grad)(p, x))
        assert jaxpr.count("optimization_barrier") == barriers
        for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6)
    (_, apart, _), (_, joint, _) = ab.variants("embedding-lookup")
    with apart():
        assert table_gradient_scatters(loss, params) == 2
    with joint():
        assert table_gradient_scatters(loss, params) == 1


def _tiny_cpu_step() -> tuple:
    """(jitted step, setup, state, batch) of a tiny float32 T5 on one CPU device."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from model_fixtures import tiny_spec
    from train_toy import toy_batches

    from scicot_jax.runtime import partitioning as part
    from scicot_jax.train.data_iter import to_global
    from scicot_jax.train.trainer import TrainConfig, init_state, jit_train_step, make_setup

    spec = tiny_spec(dtype="float32")
    cfg = TrainConfig(model_dir="", train_steps=2)
    su = make_setup(cfg, spec, part.make_mesh(devices=jax.devices()[:1]))
    state = init_state(su, spec, seed=0)
    batch = to_global(next(iter(toy_batches(batch_size=4))), su.data)
    return jit_train_step(su, spec, cfg), su, state, batch


def test_cpu_train_step_updates_donated_parameters_without_copying_them():
    """compile_step on CPU: copy insertion by region analysis, so no parameter is copied first."""
    import re

    from scicot_jax.train.trainer import compile_step

    jitted, su, state, batch = _tiny_cpu_step()
    param_copy = re.compile(r"= \S+ copy\(%state_params")
    plain = jitted.lower(state, batch).compile().as_text()
    assert param_copy.search(plain), "XLA:CPU no longer copies donated parameters: drop the option"
    assert not param_copy.search(compile_step(jitted, su, state, batch).as_text())


def test_train_step_compiles_on_an_xla_without_the_cpu_option(monkeypatch, caplog):
    """An XLA that lacks a compiler option: the step compiles without it, with one warning."""
    from scicot_jax import platforms
    from scicot_jax.train.trainer import compile_step

    monkeypatch.setitem(platforms.COMPILER_OPTIONS, "cpu", {"xla_cpu_no_such_option": True})
    jitted, su, state, batch = _tiny_cpu_step()
    step = compile_step(jitted, su, state, batch)
    state, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"]))
    assert "compiled without ['xla_cpu_no_such_option']" in caplog.text


def test_tpu_variants_put_back_the_replaced_forms():
    """bench/variants.py: each TPU variant traces the form it names, with the same values."""
    import re

    from model_fixtures import table_gradient_scatters

    from scicot_jax.model import T5Config, Transformer, init_params

    forms = _tpu_step("variants")
    config = T5Config.preset("tiny", vocab_size=40, dtype="bfloat16")
    params = init_params(config, jax.random.key(0))
    enc, dec = jnp.ones((2, 6), jnp.int32), jnp.ones((2, 5), jnp.int32)
    logits = lambda p: Transformer(config).apply({"params": p}, enc, dec, dec)
    loss = lambda p: logits(p).sum()
    default_jaxpr = str(jax.make_jaxpr(jax.grad(loss))(params))
    assert "optimization_barrier" in default_jaxpr
    bias_gather = re.compile(rf"f32\[{config.num_heads},\d+,\d+\] = gather")  # [heads, Q, K]
    assert bias_gather.search(default_jaxpr)
    with forms.TPU_VARIANTS["lookup-per-stack"]():
        assert table_gradient_scatters(loss, params) == 2
    with forms.TPU_VARIANTS["no-logits-barrier"]():
        assert "optimization_barrier" not in str(jax.make_jaxpr(jax.grad(loss))(params))
    with forms.TPU_VARIANTS["relpos-one-hot"]():
        jaxpr = str(jax.make_jaxpr(jax.grad(loss))(params))
        one_hot_logits = logits(params)
    assert not bias_gather.search(jaxpr)
    np.testing.assert_array_equal(one_hot_logits, logits(params))  # the bias values are exact


def test_step_profile_moves_the_profilers_threads_off_the_steps_cores():
    """bench/step_profile.py: threads born with the trace leave the cores the step runs on."""
    import os
    import threading

    import pytest

    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs a core the step does not use")
    prof = _tpu_step("step_profile")
    mine = os.sched_getaffinity(0)
    stop, started = threading.Event(), threading.Event()
    try:
        os.sched_setaffinity(0, {0})  # this thread, and those it starts: the "step's" core
        before = prof._thread_ids()
        thread = threading.Thread(target=lambda: (started.set(), stop.wait()))
        thread.start()
        started.wait()
        born = prof._thread_ids() - before
        assert born == {thread.native_id}
        prof._move_off_our_cores(born)
        assert os.sched_getaffinity(thread.native_id) == set(range(1, os.cpu_count()))
        assert os.sched_getaffinity(0) == {0}
    finally:
        stop.set()
        os.sched_setaffinity(0, mine)


_DOTS_HLO = """HloModule jit_train_step

%fused_computation.1 (param_0.1: f32[8,4,128,64], param_1.1: f32[8,4,64,128]) -> f32[8,4,128,128] {
  %param_0.1 = f32[8,4,128,64]{3,2,1,0} parameter(0)
  %param_1.1 = f32[8,4,64,128]{3,2,1,0} parameter(1)
  ROOT %dot_general.1 = f32[8,4,128,128]{3,2,1,0} dot(%param_0.1, %param_1.1), lhs_batch_dims={0,1}, lhs_contracting_dims={3}, rhs_batch_dims={0,1}, rhs_contracting_dims={2}
}

ENTRY %main (h: f32[1024,1024], g: f32[1024,256], q: f32[8,4,128,64], k: f32[8,4,64,128]) -> (f32[1024,256], f32[8,4,128,128]) {
  %h = f32[1024,1024]{1,0} parameter(0)
  %g = f32[1024,256]{1,0} parameter(1)
  %q = f32[8,4,128,64]{3,2,1,0} parameter(2)
  %k = f32[8,4,64,128]{3,2,1,0} parameter(3)
  %dot.126 = f32[1024,256]{1,0} dot(%h, %g), lhs_contracting_dims={0}, rhs_contracting_dims={0}
  %ynn_fusion.1 = f32[8,4,128,128]{3,2,1,0} fusion(%q, %k), kind=kCustom, calls=%fused_computation.1
  ROOT %tuple = (f32[1024,256]{1,0}, f32[8,4,128,128]{3,2,1,0}) tuple(%dot.126, %ynn_fusion.1)
}
"""


def test_step_profile_sizes_each_matmul_as_torch_does():
    """bench/step_profile.py: a dot (or a fusion's) as (batch, M, K, N), keyed like torch's mm."""
    prof = _tpu_step("step_profile")
    problems = prof.matmul_problems(_DOTS_HLO)
    # h^T g: the left operand contracts its dim 0, so M is its dim 1.
    assert problems["dot.126"] == (1, 1024, 1024, 256)
    assert problems["ynn_fusion.1"] == problems["dot_general.1"] == (32, 128, 64, 128)
    assert "tuple" not in problems
    # torch's linear backward, the same product as [256, 1024] x [1024, 1024]: the same key.
    mm = prof.TORCH_MATMULS["aten::mm"]([256, 1024], [1024, 1024])
    assert prof.problem_key(*mm) == prof.problem_key(*problems["dot.126"]) == "1 x 256x1024x1024"
    bmm = prof.TORCH_MATMULS["aten::bmm"]([32, 128, 64], [32, 64, 128])
    assert prof.problem_key(*bmm) == prof.problem_key(*problems["ynn_fusion.1"])
    addmm = prof.TORCH_MATMULS["aten::addmm"]([4096], [256, 256], [256, 4096], [], [])
    assert addmm == (1, 256, 256, 4096)
