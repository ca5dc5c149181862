"""T5 network: config presets, t5x param tree, packing, scan/remat equivalence, dtypes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_fixtures import table_gradient_scatters

from scicot_jax.data.tokens import shift_right
from scicot_jax.model import (
    T5Config,
    Transformer,
    init_params,
    logical_axes,
    num_params,
    param_shapes,
)
from scicot_jax.model.scan import scan_params, unscan_params

CFG = T5Config.preset("tiny", vocab_size=96, dtype="float32")


ENC_LEN, DEC_LEN = 12, 11  # one shape for every test keeps the number of compilations low


@functools.partial(jax.jit, static_argnums=(0, 7))
def forward(cfg, params, enc, dec_in, dec_tgt, enc_seg=None, dec_seg=None, dropout=False, rng=None):
    rngs = {"dropout": rng} if dropout else {}
    return Transformer(cfg).apply(
        {"params": params},
        enc,
        dec_in,
        dec_tgt,
        enc_seg,
        dec_seg,
        enable_dropout=dropout,
        rngs=rngs,
    )


def padded(rows, length):
    """Stack 1-D token rows into [2, length] (a second copy of the last row fills the batch)."""
    rows = list(rows) + list(rows[-1:]) * (2 - len(rows))
    return np.stack([np.pad(np.asarray(r), (0, length - len(r))) for r in rows]).astype(np.int32)


def example_batch():
    enc = padded([[5, 6, 7, 1], [9, 3, 11, 12, 4, 1]], ENC_LEN)
    tgt = padded([[8, 9, 1], [4, 30, 31, 1]], DEC_LEN)
    return enc, shift_right(tgt, CFG.decoder_start_id), tgt


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.key(0))


def test_presets_are_t5_v1_1_sizes():
    expected = {  # Hugging Face google/t5-v1_1-* / flan-t5-* parameter counts
        "small": 76_961_152,
        "base": 247_577_856,
        "large": 783_150_080,
    }
    for name, count in expected.items():
        assert num_params(T5Config.preset(name)) == count, name
    xl = T5Config.preset("xl")
    assert (xl.d_model, xl.num_heads, xl.d_ff, xl.num_encoder_layers) == (2048, 32, 5120, 24)
    xxl = T5Config.preset("xxl")
    assert (xxl.d_model, xxl.num_heads, xxl.d_ff, xxl.vocab_size) == (4096, 64, 10240, 32128)


def test_config_roundtrip_and_validation():
    cfg = T5Config.preset("small", dropout_rate=0.1, scan_layers=True)
    assert T5Config.from_dict(cfg.to_dict()) == cfg
    assert hash(cfg) == hash(T5Config.from_dict(cfg.to_dict()))
    with pytest.raises(ValueError, match="attention_impl"):
        T5Config(attention_impl="flash")
    with pytest.raises(ValueError, match="remat_policy"):
        T5Config(remat_policy="some")
    with pytest.raises(ValueError, match="unknown T5 preset"):
        T5Config.preset("huge")
    with pytest.raises(
        ValueError, match=r"ckpt/config.json: unknown T5Config field\(s\) \['d_mdl'\]"
    ):
        T5Config.from_dict({"d_mdl": 3}, source="ckpt/config.json")


def test_param_tree_has_t5x_names_and_shapes(params):
    d, hd, ff, v = CFG.d_model, CFG.num_heads * CFG.d_kv, CFG.d_ff, CFG.vocab_size
    flat = {
        jax.tree_util.keystr(k, simple=True, separator="/"): x.shape
        for k, x in jax.tree_util.tree_leaves_with_path(params)
    }
    expected = {"token_embedder/embedding": (v, d), "decoder/logits_dense/kernel": (d, v)}
    mlp = {"mlp/wi_0/kernel": (d, ff), "mlp/wi_1/kernel": (d, ff), "mlp/wo/kernel": (ff, d)}
    attn = {
        "query/kernel": (d, hd),
        "key/kernel": (d, hd),
        "value/kernel": (d, hd),
        "out/kernel": (hd, d),
    }
    for stack, n, blocks, norms in (
        (
            "encoder",
            CFG.num_encoder_layers,
            ["attention"],
            ["pre_attention_layer_norm", "pre_mlp_layer_norm"],
        ),
        (
            "decoder",
            CFG.num_decoder_layers,
            ["self_attention", "encoder_decoder_attention"],
            [
                "pre_self_attention_layer_norm",
                "pre_cross_attention_layer_norm",
                "pre_mlp_layer_norm",
            ],
        ),
    ):
        expected[f"{stack}/relpos_bias/rel_embedding"] = (CFG.num_heads, 32)
        expected[f"{stack}/{stack}_norm/scale"] = (d,)
        for i in range(n):
            pre = f"{stack}/layers_{i}"
            expected.update({f"{pre}/{k}": s for k, s in mlp.items()})
            expected.update({f"{pre}/{b}/{k}": s for b in blocks for k, s in attn.items()})
            expected.update({f"{pre}/{nm}/scale": (d,) for nm in norms})
    assert flat == expected
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))


def test_logical_axes_cover_every_param(params):
    axes = logical_axes(CFG)
    assert jax.tree.structure(axes, is_leaf=lambda x: isinstance(x, tuple)) == jax.tree.structure(
        params
    )
    assert tuple(axes["token_embedder"]["embedding"]) == ("vocab", "embed")
    assert tuple(axes["encoder"]["layers_0"]["attention"]["out"]["kernel"]) == (
        "joined_kv",
        "embed",
    )
    assert tuple(axes["decoder"]["layers_1"]["mlp"]["wi_0"]["kernel"]) == ("embed", "mlp")
    assert tuple(axes["decoder"]["relpos_bias"]["rel_embedding"]) == ("heads", "relpos_buckets")
    assert tuple(axes["decoder"]["logits_dense"]["kernel"]) == ("embed", "vocab")
    scanned = logical_axes(CFG.replace(scan_layers=True))
    assert tuple(scanned["encoder"]["layers"]["mlp"]["wo"]["kernel"]) == ("layers", "mlp", "embed")


def test_init_follows_t5x(params):
    attn = params["encoder"]["layers_0"]["attention"]
    # fan-in normal init with the 1/sqrt(d_kv) logit scale folded into the query.
    np.testing.assert_allclose(np.std(attn["key"]["kernel"]), CFG.d_model**-0.5, rtol=0.1)
    np.testing.assert_allclose(
        np.std(attn["query"]["kernel"]), (CFG.d_model * CFG.d_kv) ** -0.5, rtol=0.1
    )
    np.testing.assert_allclose(np.std(params["token_embedder"]["embedding"]), 1.0, rtol=0.1)
    assert np.all(params["decoder"]["decoder_norm"]["scale"] == 1.0)


def test_packed_segments_match_separate_runs(params):
    rng = np.random.default_rng(0)
    a_in, a_tgt = rng.integers(2, 96, 5), np.append(rng.integers(2, 96, 3), 1)
    b_in, b_tgt = rng.integers(2, 96, 4), np.append(rng.integers(2, 96, 4), 1)
    # packed row: [a | b | pad]; decoder inputs shifted right per segment.
    enc = padded([np.concatenate([a_in, b_in])], ENC_LEN)
    enc_seg = padded([np.repeat([1, 2], [5, 4])], ENC_LEN)
    tgt = padded([np.concatenate([a_tgt, b_tgt])], DEC_LEN)
    dec_seg = padded([np.repeat([1, 2], [4, 5])], DEC_LEN)
    dec_in = padded(
        [
            np.concatenate(
                [shift_right(a_tgt, CFG.decoder_start_id), shift_right(b_tgt, CFG.decoder_start_id)]
            )
        ],
        DEC_LEN,
    )
    packed = np.asarray(forward(CFG, params, enc, dec_in, tgt, enc_seg, dec_seg))[0]
    alone_tgt = padded([a_tgt, b_tgt], DEC_LEN)
    alone = np.asarray(
        forward(
            CFG,
            params,
            padded([a_in, b_in], ENC_LEN),
            shift_right(alone_tgt, CFG.decoder_start_id),
            alone_tgt,
        )
    )
    np.testing.assert_allclose(packed[:4], alone[0, :4], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(packed[4:9], alone[1, :5], atol=1e-5, rtol=1e-5)


def test_padding_tokens_do_not_leak(params):
    enc, dec_in, tgt = example_batch()
    base = np.asarray(forward(CFG, params, enc, dec_in, tgt))
    # Garbage in padded positions (tokens where the target is 0) changes nothing real.
    noisy_dec_in = np.where(tgt == 0, 77, dec_in)
    other = np.asarray(forward(CFG, params, enc, noisy_dec_in, tgt))
    real = tgt != 0
    np.testing.assert_allclose(base[real], other[real], atol=1e-5)
    # Extra encoder padding changes nothing either.
    longer = np.asarray(forward(CFG, params, np.pad(enc, ((0, 0), (0, 4))), dec_in, tgt))
    np.testing.assert_allclose(base[real], longer[real], atol=1e-5)


def test_scan_conversion_roundtrip_and_forward(params):
    enc, dec_in, tgt = example_batch()
    scanned = scan_params(params, CFG)
    assert scanned["decoder"]["layers"]["mlp"]["wo"]["kernel"].shape == (2, CFG.d_ff, CFG.d_model)
    back = unscan_params(scanned, CFG)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), back, params))
    scan_cfg = CFG.replace(scan_layers=True)
    assert jax.tree.structure(param_shapes(scan_cfg)) == jax.tree.structure(scanned)
    ref = forward(CFG, params, enc, dec_in, tgt)
    got = forward(scan_cfg, scanned, enc, dec_in, tgt)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="already scanned"):
        scan_params(scanned, CFG)


def test_remat_and_scan_give_same_gradients(params):
    enc, dec_in, tgt = example_batch()

    def loss(cfg, p):
        logits = Transformer(cfg).apply({"params": p}, enc, dec_in, tgt, enable_dropout=False)
        return -(
            jnp.take_along_axis(jax.nn.log_softmax(logits), tgt[..., None], -1)[..., 0] * (tgt > 0)
        ).sum()

    ref = jax.jit(jax.grad(functools.partial(loss, CFG)))(params)
    remat_cfg = CFG.replace(scan_layers=True, remat_policy="dots")
    got = jax.jit(jax.grad(functools.partial(loss, remat_cfg)))(scan_params(params, CFG))
    got = unscan_params(got, CFG)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4), got, ref)


def test_bfloat16_activations_keep_fp32_params_and_logits(params):
    cfg = CFG.replace(dtype="bfloat16")
    enc, dec_in, tgt = example_batch()
    ref = forward(CFG, params, enc, dec_in, tgt)
    got = forward(cfg, params, enc, dec_in, tgt)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, ref, atol=0.15)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(param_shapes(cfg)))


def test_dropout_only_when_enabled(params):
    cfg = CFG.replace(dropout_rate=0.3)
    enc, dec_in, tgt = example_batch()
    ref = forward(CFG, params, enc, dec_in, tgt)
    np.testing.assert_allclose(forward(cfg, params, enc, dec_in, tgt), ref, atol=1e-6)
    # rbg keys: XLA:CPU compiles threefry dropout masks ~5x slower.
    key = lambda seed: jax.random.key(seed, impl="rbg")
    one = forward(cfg, params, enc, dec_in, tgt, None, None, True, key(0))
    two = forward(cfg, params, enc, dec_in, tgt, None, None, True, key(1))
    assert not np.allclose(one, two)
    np.testing.assert_array_equal(
        forward(cfg, params, enc, dec_in, tgt, None, None, True, key(0)), one
    )


def test_teacher_forced_forward_looks_up_both_stacks_at_once(params):
    """One lookup of the shared table: its gradient is one scatter-add, the same as two."""
    enc, dec_in, dec_tgt = example_batch()

    def loss(p, joint):
        model = Transformer(CFG)
        if joint:
            return model.apply({"params": p}, enc, dec_in, dec_tgt, enable_dropout=False).sum()
        encoded = model.apply({"params": p}, enc, enable_dropout=False, method=Transformer.encode)
        logits = model.apply(
            {"params": p},
            encoded,
            enc,
            dec_in,
            dec_tgt,
            enable_dropout=False,
            method=Transformer.decode,
        )
        return logits.sum()

    assert table_gradient_scatters(lambda p: loss(p, True), params) == 1
    assert table_gradient_scatters(lambda p: loss(p, False), params) == 2
    g_joint, g_apart = (jax.grad(loss)(params, j)["token_embedder"]["embedding"] for j in (1, 0))
    assert g_joint.shape == params["token_embedder"]["embedding"].shape
    np.testing.assert_allclose(g_joint, g_apart, rtol=1e-5, atol=1e-6)
