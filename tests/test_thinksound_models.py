"""ThinkSound MM-DiT / Oobleck VAE / sampler vs the reference oracles (spec/oracle/README.md)."""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import ORACLE_DIR
import torch

from generator.thinksound import (
    FULL_CONFIG,
    Inpaint,
    MMDiT,
    RectifiedFlowEuler,
    SequenceConfig,
    StartPoint,
    build_full_mmdit,
    build_full_vae,
    build_mmdit,
    check_oracle,
    load_mmdit,
    load_vae,
    noise_to,
    to_pcm_int16,
)
from generator.thinksound.mmdit import param_count

ORACLE = ORACLE_DIR
MMDIT_ATOL, VAE_ATOL = 1e-4, 1e-6


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(mo) -> MMDiT:
    return load_mmdit(mo["state_dict"], config=mo["config"], dtype="fp32", device="cpu")


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a.double() - b.double()).abs().max().item()


# ---- sequence lengths ---------------------------------------------------------------------


@pytest.mark.parametrize("d,n,c,s", [(9, 194, 72, 216), (10, 215, 80, 240), (9.97, 215, 72, 216),
                                     (5, 108, 40, 120), (2, 43, 16, 48)])
def test_sequence_config_matches_predict_py(d, n, c, s):
    seq = SequenceConfig(d)
    assert (seq.latent_seq_len, seq.clip_seq_len, seq.sync_seq_len) == (n, c, s)
    assert seq.num_samples == n * 2048


def test_sequence_config_rejects_sub_second():
    with pytest.raises(ValueError):
        SequenceConfig(0.5)


# ---- MM-DiT through the library API -------------------------------------------------------


def test_mmdit_forward_matches_oracle(mo, tiny):
    i, o = mo["inputs"], mo["outputs"]
    with torch.no_grad():
        y1 = tiny(i["x"], i["t"], i["clip_f"], i["sync_f"], i["text_f"], i["t5_features"], cfg_scale=1.0)
        y5 = tiny(i["x"], i["t"], i["clip_f"], i["sync_f"], i["text_f"], i["t5_features"], cfg_scale=5.0)
        y5l = tiny(i["x"], i["t"], i["clip_f_long"], i["sync_f_long"], i["text_f"], i["t5_features"], cfg_scale=5.0)
    assert _max_err(y1, o["forward_cfg1"]) < MMDIT_ATOL
    assert _max_err(y5, o["forward_cfg5"]) < MMDIT_ATOL
    assert _max_err(y5l, o["forward_cfg5_long"]) < MMDIT_ATOL


def test_mmdit_sampler_matches_oracle(mo, tiny):
    i = mo["inputs"]
    cond = tiny.prepare_conditions(i["clip_f"][:1], i["sync_f"][:1], i["text_f"][:1], i["t5_features"][:1],
                                   i["cfg_scale"])
    x = RectifiedFlowEuler(i["sample_steps"]).sample(lambda x, t: tiny.predict_velocity(x, t, cond, 5.0), i["noise"])
    assert _max_err(x, mo["outputs"]["sample_euler4_cfg5"]) < MMDIT_ATOL


def test_mmdit_without_cfg_requires_exact_lengths(mo, tiny):
    i = mo["inputs"]
    with pytest.raises(ValueError, match="exactly"):
        tiny(i["x"], i["t"], i["clip_f_long"], i["sync_f"], i["text_f"], i["t5_features"], cfg_scale=1.0)


def test_mmdit_short_features_are_zero_padded_under_cfg(mo, tiny):
    i = mo["inputs"]
    short = i["sync_f"][:, :40]
    padded = torch.cat([short, torch.zeros_like(i["sync_f"][:, 40:])], dim=1)
    with torch.no_grad():
        a = tiny(i["x"], i["t"], i["clip_f"], short, i["text_f"], i["t5_features"], cfg_scale=5.0)
        b = tiny(i["x"], i["t"], i["clip_f"], padded, i["text_f"], i["t5_features"], cfg_scale=5.0)
    assert torch.equal(a, b)


# ---- check_oracle ------------------------------------------------------------------------


def test_check_oracle_mmdit_file():
    if not (ORACLE / "mmdit_tiny.pt").exists():
        pytest.skip("oracle missing")
    report = check_oracle(ORACLE / "mmdit_tiny.pt")
    assert report.kind == "thinksound_mmdit"
    names = {c.name for c in report.checks}
    assert {"forward_cfg1", "forward_cfg5", "forward_cfg5_long", "sample_euler4_cfg5"} <= names
    assert report.passed, str(report)


def test_check_oracle_vae_file():
    if not (ORACLE / "vae_tiny.pt").exists():
        pytest.skip("oracle missing")
    report = check_oracle(ORACLE / "vae_tiny.pt")
    assert report.kind == "thinksound_vae"
    assert {c.name for c in report.checks} >= {"decoded", "encoder_pre_bottleneck", "pcm_int16"}
    assert report.passed, str(report)


def _with_identity_blocks(mo: dict) -> dict:
    """Same function as the oracle, different depth: an extra joint block at index 0 and an extra
    fused block at the end, both with zeroed adaLN (all gates 0 → exact identity on every stream).

    The expected outputs stay the *reference's*, so this is not circular: a checker that ignored
    the file's config could not even load the new keys, and a wrong block order would change values.
    """
    sd, cfg = mo["state_dict"], dict(mo["config"])
    p = "model.model."
    n_joint = cfg["depth"] - cfg["fused_depth"]
    new = {}
    for k, v in sd.items():
        if k.startswith(p + "joint_blocks."):
            idx, rest = k[len(p + "joint_blocks."):].split(".", 1)
            new[f"{p}joint_blocks.{int(idx) + 1}.{rest}"] = v
        else:
            new[k] = v
    for k, v in sd.items():  # old block 0 is a full (not pre-only) joint block: reuse its shapes, silence it
        if k.startswith(p + "joint_blocks.0."):
            new[k] = torch.zeros_like(v) if ".adaLN_modulation." in k else v + 0.1
    nf = cfg["fused_depth"]
    for k, v in sd.items():
        if k.startswith(p + "fused_blocks.0."):
            new[k.replace("fused_blocks.0.", f"fused_blocks.{nf}.", 1)] = (
                torch.zeros_like(v) if ".adaLN_modulation." in k else v - 0.1)
    cfg["depth"] += 2
    cfg["fused_depth"] += 1
    assert cfg["depth"] - cfg["fused_depth"] == n_joint + 1
    data = {k: v for k, v in mo.items() if k not in ("intermediates_cfg1",)}
    data.update(config=cfg, state_dict=new)
    return data


def test_check_oracle_follows_file_config_depth(mo, tmp_path):
    data = _with_identity_blocks(mo)
    path = tmp_path / "mmdit_deeper.pt"
    torch.save(data, path)
    report = check_oracle(path)
    assert report.passed, str(report)
    # guard: the extra blocks are really there (and not silently skipped)
    assert report.checks and len(load_mmdit(data["state_dict"], config=data["config"], device="cpu").joint_blocks) == 3


def test_check_oracle_can_fail(mo, vo):
    # forward outputs only (no sampler/intermediates) keeps this cheap; one output nudged by 1e-3
    outputs = {k: v + (1e-3 if k == "forward_cfg5" else 0) for k, v in mo["outputs"].items() if "sample" not in k}
    inputs = {k: v for k, v in mo["inputs"].items() if k != "noise"}
    bad = {"config": mo["config"], "state_dict": mo["state_dict"], "inputs": inputs, "outputs": outputs}
    report = check_oracle(bad)
    assert not report.passed and [c.name for c in report.failures()] == ["forward_cfg5"]
    missing = dict(bad, outputs=dict(outputs, sample_euler4_cfg5=mo["outputs"]["sample_euler4_cfg5"]))
    assert "sample_euler4_cfg5" in {c.name for c in check_oracle(missing).failures()}  # recorded but not replayed
    bad_vae = dict(vo, outputs={k: (v + 1e-5 if k == "decoded" else v) for k, v in vo["outputs"].items()})
    report = check_oracle(bad_vae)
    assert "decoded" in {c.name for c in report.failures()}


def test_check_oracle_with_other_sequence_lengths(mo, tiny):
    """A 3 s oracle in the same format. Expected values come from our own model at 3 s (so this
    part is self-consistency); what it proves is that lengths are read from the file's config,
    and the perturbed copy shows the comparison is live."""
    seq = SequenceConfig(3)
    cfg = dict(mo["config"], **seq.lengths())
    g = torch.Generator().manual_seed(0)
    n, c, s = seq.latent_seq_len, seq.clip_seq_len, seq.sync_seq_len
    i = {
        "x": torch.randn(2, 64, n, generator=g), "t": torch.tensor([0.2, 0.7]),
        "clip_f": torch.randn(2, c, 1024, generator=g), "sync_f": torch.randn(2, s, 768, generator=g),
        "text_f": mo["inputs"]["text_f"], "t5_features": mo["inputs"]["t5_features"],
        "noise": torch.randn(1, 64, n, generator=g), "sample_steps": 2, "cfg_scale": 5.0,
    }
    model = load_mmdit(mo["state_dict"], config=cfg, device="cpu")
    with torch.no_grad():
        out = {
            "forward_cfg1": model(i["x"], i["t"], i["clip_f"], i["sync_f"], i["text_f"], i["t5_features"], 1.0),
            "forward_cfg5": model(i["x"], i["t"], i["clip_f"], i["sync_f"], i["text_f"], i["t5_features"], 5.0),
        }
        cond = model.prepare_conditions(i["clip_f"][:1], i["sync_f"][:1], i["text_f"][:1], i["t5_features"][:1], 5.0)
        out["sample_euler2_cfg5"] = RectifiedFlowEuler(2).sample(
            lambda x, t: model.predict_velocity(x, t, cond, 5.0), i["noise"])
    data = {"config": cfg, "state_dict": mo["state_dict"], "inputs": i, "outputs": out}
    assert out["forward_cfg1"].shape == (2, 64, n)
    assert check_oracle(data).passed
    bad = dict(data, outputs=dict(out, forward_cfg1=out["forward_cfg1"] * 1.001))
    assert not check_oracle(bad).passed
    # and it is not the 2 s oracle by accident
    assert not torch.allclose(out["forward_cfg1"][..., :43], tiny(i["x"][..., :43], i["t"], i["clip_f"][:, :16],
                                                                   i["sync_f"][:, :48], i["text_f"],
                                                                   i["t5_features"]).detach(), atol=1e-3)


def test_check_oracle_rejects_unknown_file():
    with pytest.raises(ValueError, match="unrecognised"):
        check_oracle({"config": {"foo": 1}, "state_dict": {}, "inputs": {}, "outputs": {}})


# ---- variable duration --------------------------------------------------------------------


def test_set_sequence_rebuilds_without_reloading(mo):
    model = load_mmdit(mo["state_dict"], config=mo["config"], device="cpu")
    i, o = mo["inputs"], mo["outputs"]
    ptrs = {k: v.data_ptr() for k, v in model.state_dict().items()}
    model.set_sequence(SequenceConfig(9))
    assert model.latent_rope.shape[0] == 194 and model.clip_rope.shape[0] == 72
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        y = model(torch.randn(1, 64, 194, generator=g), torch.tensor([0.5]), torch.randn(1, 79, 1024, generator=g),
                  torch.randn(1, 240, 768, generator=g), i["text_f"][:1], i["t5_features"][:1], cfg_scale=5.0)
    assert y.shape == (1, 64, 194) and torch.isfinite(y).all()
    with pytest.raises(ValueError, match="set_sequence"):  # a 2 s latent on the 9 s model
        model(i["x"], i["t"], i["clip_f"], i["sync_f"], i["text_f"], i["t5_features"], cfg_scale=5.0)
    model.set_sequence(latent_seq_len=43, clip_seq_len=16, sync_seq_len=48)
    assert {k: v.data_ptr() for k, v in model.state_dict().items()} == ptrs
    with torch.no_grad():
        y1 = model(i["x"], i["t"], i["clip_f"], i["sync_f"], i["text_f"], i["t5_features"])
    assert _max_err(y1, o["forward_cfg1"]) < MMDIT_ATOL


def test_tables_stay_fp32_under_dtype_casts(mo):
    model = load_mmdit(mo["state_dict"], config=mo["config"], device="cpu").to(torch.bfloat16)
    assert model.sync_pos_emb.dtype == torch.bfloat16
    assert model.latent_rope.dtype == model.clip_rope.dtype == model.t_embed.freqs.dtype == torch.float32
    ref = build_mmdit(mo["config"], device="cpu")
    assert torch.equal(model.latent_rope, ref.latent_rope) and torch.equal(model.t_embed.freqs, ref.t_embed.freqs)


# ---- VAE ------------------------------------------------------------------------------------


def test_vae_matches_oracle(vo):
    vae = load_vae(vo["state_dict"], config=vo["config"], dtype="fp32", device="cpu")
    i, o = vo["inputs"], vo["outputs"]
    with torch.no_grad():
        decoded = vae.decode(i["latents"])
        mean, scale = vae.encode(i["audio"])
    assert _max_err(decoded, o["decoded"]) < VAE_ATOL
    assert _max_err(vae.decode(i["latents"], iterate_batch=False), o["decoded"]) < VAE_ATOL
    assert _max_err(torch.cat([mean, scale], 1), o["encoder_pre_bottleneck"]) < VAE_ATOL
    assert decoded.shape[-1] == i["latents"].shape[-1] * 2048
    z = vae.sample(mean, scale, generator=torch.Generator().manual_seed(0))
    assert z.shape == mean.shape and not torch.equal(z, mean)
    # int16: exact from the oracle's own decode, ≤ 1 LSB from ours (truncation at boundaries)
    assert torch.equal(to_pcm_int16(o["decoded"]), o["pcm_int16"])
    assert (to_pcm_int16(decoded).int() - o["pcm_int16"].int()).abs().max() <= 1


def test_pcm_edge_cases():
    assert torch.equal(to_pcm_int16(torch.zeros(1, 2, 8)), torch.zeros(1, 2, 8, dtype=torch.int16))
    pcm = to_pcm_int16(torch.tensor([[[-2.0, 1.0, 0.5]]]))
    assert pcm.tolist() == [[[-32767, 16383, 8191]]]
    with pytest.raises(ValueError):
        to_pcm_int16(torch.tensor([float("nan"), 1.0]))


# ---- full size on the meta device ---------------------------------------------------------


def _manifest(name: str) -> dict:
    path = ORACLE / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    return json.loads(path.read_text())


def test_full_mmdit_matches_manifest_exactly():
    manifest = _manifest("mmdit_manifest.json")
    model = build_full_mmdit(SequenceConfig(9))
    got = {"model.model." + k: list(v.shape) for k, v in model.state_dict().items()}
    assert got == manifest
    assert list(got) == list(manifest)  # same order as the checkpoint, too
    assert param_count(model) == 1_277_117_632
    assert model.sync_pos_emb.is_meta


def test_full_vae_matches_manifest_exactly():
    manifest = _manifest("vae_manifest.json")
    vae = build_full_vae()
    got = {"autoencoder." + k: list(v.shape) for k, v in vae.state_dict().items()}
    assert got == manifest and list(got) == list(manifest)
    assert sum(math.prod(s) for s in got.values()) == 156_112_514


def test_full_config_is_thinksound_json():
    assert (FULL_CONFIG.hidden_dim, FULL_CONFIG.depth, FULL_CONFIG.fused_depth, FULL_CONFIG.num_heads) == (1024, 21, 14, 16)


# ---- sampler ------------------------------------------------------------------------------


def test_euler_schedule():
    s = RectifiedFlowEuler(24)
    assert torch.allclose(s.timesteps(), torch.linspace(1, 0, 25))
    assert len(s.timesteps(0.5)) == 13 and s.timesteps(0.5)[0] == 0.5
    with pytest.raises(ValueError):
        s.timesteps(0.0)


def test_sampler_from_intermediate_t_follows_straight_path():
    """With the exact rectified-flow velocity (ε − x0), Euler from x_s lands on x0 for any s."""
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 64, 30, generator=g), torch.randn(2, 64, 30, generator=g)
    calls = []

    def v(x, t):
        calls.append(float(t[0]))
        return eps - x0

    out = RectifiedFlowEuler(24).sample(v, eps, x0=x0, t_start=0.3)
    assert torch.allclose(out, x0, atol=1e-5)
    assert len(calls) == math.ceil(24 * 0.3) and abs(calls[0] - 0.3) < 1e-6
    with pytest.raises(ValueError):
        RectifiedFlowEuler(4).sample(v, eps, t_start=0.5)
    assert torch.allclose(noise_to(x0, eps, 1.0), eps) and torch.allclose(noise_to(x0, eps, 0.0), x0)


def test_sampler_inpaint_keeps_known_region(mo, tiny):
    i = mo["inputs"]
    g = torch.Generator().manual_seed(3)
    known = torch.randn(1, 64, 43, generator=g)
    mask = torch.zeros(1, 1, 43)
    mask[..., 10:30] = 1.0
    cond = tiny.prepare_conditions(i["clip_f"][:1], i["sync_f"][:1], i["text_f"][:1], i["t5_features"][:1], 5.0)
    seen = []

    def check_step(step, t, t_next, x):  # known region sits on the path at every step
        seen.append(step)
        expect = noise_to(known, i["noise"], t_next)
        assert torch.allclose(x[..., :10], expect[..., :10], atol=1e-6)

    out = RectifiedFlowEuler(4).sample(lambda x, t: tiny.predict_velocity(x, t, cond, 5.0), i["noise"],
                                       inpaint=Inpaint(known=known, mask=mask), callback=check_step)
    assert seen == [0, 1, 2, 3]
    assert torch.equal(out[..., :10], known[..., :10]) and torch.equal(out[..., 30:], known[..., 30:])
    assert (out[..., 10:30] - known[..., 10:30]).abs().max() > 0.1
    # variation + inpaint: start at 0.5, still exact outside the window
    out2 = RectifiedFlowEuler(4).sample(lambda x, t: tiny.predict_velocity(x, t, cond, 5.0), i["noise"],
                                        t_start=0.5, inpaint=Inpaint(known=known, mask=mask))
    assert torch.equal(out2[..., 30:], known[..., 30:])


# ---- speed paths keep the oracle ----------------------------------------------------------------


def test_gemm_convs_match_the_oracle_and_keep_the_state_dict(mo):
    """Conv-as-GEMM (the CPU path) is the same function: oracle within tolerance, same keys/shapes/values."""
    model = load_mmdit(mo["state_dict"], config=mo["config"], dtype="fp32", device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.use_gemm_convs(True) == 28  # every kernel-3/7 conv of the tiny config
    assert model.use_gemm_convs(True) == 0  # idempotent
    conv = model.joint_blocks[0].latent_block.linear1
    assert conv.gemm_layout and conv.weight.shape == (64, 64, 3) and not conv.weight.is_contiguous()
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    i, o = mo["inputs"], mo["outputs"]
    with torch.inference_mode():
        y1 = model(i["x"], i["t"], i["clip_f"], i["sync_f"], i["text_f"], i["t5_features"], cfg_scale=1.0)
        y5 = model(i["x"], i["t"], i["clip_f"], i["sync_f"], i["text_f"], i["t5_features"], cfg_scale=5.0)
    assert _max_err(y1, o["forward_cfg1"]) < MMDIT_ATOL and _max_err(y5, o["forward_cfg5"]) < MMDIT_ATOL
    half = model.to(torch.bfloat16)  # dtype casts keep the layout (preserve_format)
    assert half.joint_blocks[0].latent_block.linear1.gemm_layout
    model.use_gemm_convs(False)
    assert not conv.gemm_layout and conv.weight.is_contiguous()


def test_conditions_carry_their_own_sequence(mo, tiny):
    """A render passes its SequenceConfig; the shared model's default lengths are not touched."""
    i = mo["inputs"]
    seq = SequenceConfig(3)
    g = torch.Generator().manual_seed(5)
    clip_f, sync_f = torch.randn(1, 24, 1024, generator=g), torch.randn(1, 72, 768, generator=g)
    x = torch.randn(1, 64, seq.latent_seq_len, generator=g)
    with torch.inference_mode():
        cond = tiny.prepare_conditions(clip_f, sync_f, i["text_f"][:1], i["t5_features"][:1], 5.0, seq=seq)
        v = tiny.predict_velocity(x, torch.tensor([0.4]), cond, 5.0)
    assert tiny.config.latent_seq_len == 43 and cond.latent_rope.shape[0] == seq.latent_seq_len == 65
    assert torch.allclose(cond.clip_rope, tiny.rope_tables(65, 24)[1])
    ref = load_mmdit(mo["state_dict"], config=dict(mo["config"], **seq.lengths()), dtype="fp32", device="cpu")
    with torch.inference_mode():
        want = ref(x, torch.tensor([0.4]), clip_f, sync_f, i["text_f"][:1], i["t5_features"][:1], cfg_scale=5.0)
    assert _max_err(v, want) < 1e-5
    with pytest.raises(ValueError, match="latent length"):
        tiny.predict_velocity(x[..., :43], torch.tensor([0.4]), cond, 5.0)


def test_sequence_config_derives_every_length():
    seq = SequenceConfig(9)
    assert (seq.text_seq_len, seq.joint_text_len, seq.joint_seq_len) == (77, 154, 194 + 72 + 154)
    assert seq.sync_windows == 27 and seq.clip_rope_scale == 194 / 72 and seq.bucket == (194, 72, 216)
    edit = SequenceConfig.for_samples(3 * 44100)
    assert edit.latent_seq_len == math.ceil(3 * 44100 / 2048) == 65 and edit.clip_seq_len == 24
    short = SequenceConfig.for_samples(20_000)  # < 1 s of audio: CLIP/sync at the 1 s minimum
    assert short.latent_seq_len == 10 and short.clip_seq_len == 8 and short.duration_s == 1.0
    with pytest.raises(ValueError):
        SequenceConfig(2.0, latent_frames=0)


def test_start_point_validates_and_skips():
    x0 = torch.zeros(1, 64, 10)
    assert StartPoint().t_start == 1.0 and not StartPoint().skip_sampling and StartPoint().inpaint is None
    assert StartPoint(x0, 0.0).skip_sampling
    sp = StartPoint(x0, 0.5, mask=torch.ones(1, 1, 10))
    assert sp.inpaint is not None and torch.equal(sp.inpaint.known, x0)
    for bad in (dict(t_start=1.5, x0=x0), dict(t_start=float("nan"), x0=x0), dict(t_start=0.5),
                dict(mask=torch.ones(1, 1, 10))):
        with pytest.raises(ValueError):
            StartPoint(**bad)
    called = []
    out = RectifiedFlowEuler(4).sample_from(lambda x, t: called.append(1) or x, torch.randn(1, 64, 10),
                                            StartPoint(x0 + 2, 0.0))
    assert torch.equal(out, x0 + 2) and not called


def test_vae_decode_in_chunks_matches_oracle(vo):
    vae = load_vae(vo["state_dict"], config=vo["config"], dtype="fp32", device="cpu")
    z = vo["inputs"]["latents"]
    with torch.inference_mode():
        for bs in (1, 2, 5):
            assert _max_err(vae.decode(z, batch_size=bs), vo["outputs"]["decoded"]) < VAE_ATOL
    with pytest.raises(ValueError):
        vae.decode(z, batch_size=0)
