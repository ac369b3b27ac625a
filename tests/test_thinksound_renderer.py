"""The `thinksound` renderer end to end on tiny random models: video → features → sampling → VAE → WAV → mux.

Tiny sizes keep every width the MM-DiT hard-codes (MetaCLIP 1024, T5 2048, Synchformer 768); depth, hidden size and
VAE channels are cut so the whole file runs in well under a minute on one CPU thread.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from agent import backends, runs
from agent.config import RunConfig
from generator.thinksound import SequenceConfig
from agent.backends import options_for
from contract import memory
from generator.thinksound.pipeline import GenerationRequest, PipelineSpec, ThinkSoundPipeline, latent_window
from generator.thinksound.renderer import ThinkSoundRenderer, describe, make
from generator.thinksound.weights import WeightsDir, write_tiny_weights
from contract.plan import Plan
from contract.errors import BackendError, ModelMissing
from store.media import probe
from tests.helpers import tiny_clip

SR = 44_100
CLIP_S = 1.0  # 25 frames → 2 Synchformer windows: the 768-wide extractor is the slowest part here


def build_tiny_setup(root: Path) -> dict:
    """Tiny weights dir + MetaCLIP + T5 folders and a short clip; `opts` are the renderer options for them."""
    from tests.tiny_models import build_tiny_metaclip, build_tiny_t5

    weights = write_tiny_weights(root / "weights")
    clip, t5 = build_tiny_metaclip(root / "metaclip"), build_tiny_t5(root / "t5")
    video = tiny_clip(root / "clip.mp4", seconds=CLIP_S)
    opts = {"weights": str(weights.root), "metaclip": str(clip), "t5": str(t5), "cache_dir": str(root / "cache")}
    return {"root": root, "weights": weights, "video": video, "opts": opts}


def release_renderer_models() -> list[str]:
    """What agent/devices.py does between runs: the renderer's models leave the one model cache."""
    return memory.SLOTS.release_roles({"renderer"})


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    yield
    backends.clear_cache()
    release_renderer_models()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_setup(tmp_path_factory.mktemp("thinksound"))


@pytest.fixture(scope="module")
def pipe(tiny):
    p = ThinkSoundPipeline.get(PipelineSpec.from_options(tiny["opts"], dtype="fp32"))  # exact on every CPU
    p.load()
    return p


def _cfg(opts: dict, **kw) -> RunConfig:
    return RunConfig(**({"renderer": "thinksound", "critic": "fake", "refiner": "fake", "rounds": 1, "dtype": "fp32"} | kw),
                     options={"renderer": opts})


def _opts(opts: dict):
    """What the renderer factory is given for these renderer options."""
    return options_for("renderer", _cfg(opts))


def _meta(rnd) -> dict:
    return json.loads(rnd.timings_json)["render_meta"]


def _wav(store, rnd) -> tuple[np.ndarray, int]:
    data, sr = sf.read(store.artifact_path(rnd.audio_artifact_id), always_2d=True)
    return data.T, sr


def _tone(seconds: float, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    left = 0.5 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)
    return np.stack([left, np.roll(left, 441)]).astype(np.float32)


# ---- the loop, through the graph -----------------------------------------------------------------------------


def test_dub_two_rounds_through_graph_hits_feature_cache(tiny, store, fake_backends, tmp_path):
    from generator.features import T5Features

    opts = tiny["opts"] | {"cache_dir": str(tmp_path / "features")}  # fresh cache: round 1 must miss
    cfg = _cfg(opts, watcher="fake", rounds=2)  # fake critic scores 0.3 < thresholds → a second round
    out = tmp_path / "dubbed.mp4"
    run_id, _ = runs.dub(store, tiny["video"], cfg, out=out)
    run = store.get_run(run_id)
    rounds = store.rounds(run_id)
    assert run.status == "done" and [r.author for r in rounds] == ["watcher", "refiner"]
    m1, m2 = _meta(rounds[0]), _meta(rounds[1])
    assert m1["feature_cache"]["video"] == "miss" and m1["feature_cache"]["misses"] == 3
    # round 2: same clip (hit) and CoT (hit); the fake refiner rewrote only the caption (miss)
    assert m2["feature_cache"] == {"hits": 2, "misses": 1, "video": "hit", "text_hits": 1, "text_misses": 1}
    assert {"features_video_s", "features_text_s", "sampling_s", "decode_s", "load_s"} <= set(m2["timings"])
    assert m2["timings"]["features_video_s"] < m1["timings"]["features_video_s"]
    plan = Plan.from_json(rounds[1].plan_json)
    t5 = T5Features(tiny["opts"]["t5"])
    assert m2["t5_tokens"]["tokens"] == len(t5.token_ids(plan.cot_text()))  # the real tokenizer's count
    assert m2["video"] is True and m2["steps"] == 24 and m2["cfg_scale"] == 5.0 and m2["seed"] == rounds[1].seed
    for rnd in rounds:
        audio, sr = _wav(store, rnd)
        assert sr == SR and audio.shape == (2, SequenceConfig(CLIP_S).num_samples)  # predict.py's length
        assert np.abs(audio).max() == pytest.approx(1.0, abs=1e-3)  # peak-normalised like predict.py
    a1, _ = _wav(store, rounds[0])
    a2, _ = _wav(store, rounds[1])
    assert not np.allclose(a1, a2)  # new seed and caption → new audio
    info = probe(out)
    assert info.has_audio and info.audio_rate == SR and info.audio_channels == 2
    assert rounds[0].model_id == "fake-watcher" and run.backends()["renderer_model_id"].startswith("thinksound:")


def test_text_to_audio_run(tiny, store, fake_backends, tmp_path):
    from agent.runs import plan_from_prompt

    plan = plan_from_prompt("rain on a tin roof, distant thunder", 2.0)
    out = tmp_path / "rain.wav"
    run_id, _ = runs.text_to_audio(store, plan, _cfg(tiny["opts"]), out)
    run = store.get_run(run_id)
    (rnd,) = store.rounds(run_id)
    assert run.kind == "text" and run.status == "done" and run.output_path == str(out.resolve())
    meta = _meta(rnd)
    assert meta["video"] is False and meta["feature_cache"]["video"] == "none" and meta["latent_seq_len"] == 43
    data, sr = sf.read(out, always_2d=True)
    assert sr == SR and data.shape == (SequenceConfig(2.0).num_samples, 2) and np.abs(data).max() > 0.99


def test_text_only_uses_the_checkpoints_null_video_features(pipe, monkeypatch):
    """No video → empty_clip_feat / empty_sync_feat feed the conditional branch: changing them changes the audio."""
    base = pipe.generate("a door creaking open", "Start with a door creaking.", 1.0, seed=4, steps=4)
    again = pipe.generate("a door creaking open", "Start with a door creaking.", 1.0, seed=4, steps=4)
    np.testing.assert_array_equal(base.audio, again.audio)  # seeded: deterministic
    with torch.no_grad():
        saved = pipe.mmdit.empty_clip_feat.clone()
        pipe.mmdit.empty_clip_feat.add_(1.0)
    try:
        moved = pipe.generate("a door creaking open", "Start with a door creaking.", 1.0, seed=4, steps=4)
    finally:
        with torch.no_grad():
            pipe.mmdit.empty_clip_feat.copy_(saved)
    assert not np.allclose(base.audio, moved.audio)


def test_short_plan_renders_at_the_minimum_and_is_trimmed(pipe):
    gen = pipe.generate("a glass shattering", "", 0.6, seed=0, steps=2)
    assert gen.audio.shape == (2, round(0.6 * SR)) and gen.meta["latent_seq_len"] == SequenceConfig(1.0).latent_seq_len


# ---- audio-to-audio ------------------------------------------------------------------------------------------


def test_variation_strength_0_is_the_input_decode_and_1_ignores_the_input(pipe):
    audio = _tone(1.5)
    n = pipe.latents_for(audio.shape[1])
    assert n == 33 and n * 2048 >= audio.shape[1] > (n - 1) * 2048  # every input sample is covered
    x0 = pipe.encode(audio, n)
    keep = pipe.variation(audio, "waves on the shore", "Add distant waves.", 0.0, seed=1)
    np.testing.assert_array_equal(keep.audio, pipe.decode(x0)[:, : audio.shape[1]])
    assert torch.equal(keep.latents, x0) and keep.audio.shape == audio.shape
    full = pipe.variation(audio, "waves on the shore", "Add distant waves.", 1.0, seed=1)
    other = pipe.variation(_tone(1.5, seed=9) * 0.1, "waves on the shore", "Add distant waves.", 1.0, seed=1)
    np.testing.assert_array_equal(full.audio, other.audio)  # t=1 is pure noise: the input is unused
    assert np.abs(full.audio - keep.audio).max() > 0.1 * np.abs(keep.audio).max()
    half = pipe.variation(audio, "waves on the shore", "Add distant waves.", 0.5, seed=1)
    d_half, d_full = (float((g.latents - x0).norm()) for g in (half, full))
    assert 0 < d_half < d_full and half.meta["edit"] == {"mode": "variation", "strength": 0.5}


def test_window_edit_keeps_audio_outside_the_window(pipe):
    audio = _tone(3.0, seed=2)
    n = pipe.latents_for(audio.shape[1])
    x0 = pipe.encode(audio, n)
    gen = pipe.inpaint(audio, (1.0, 1.5), "a dog barking", "A single loud bark.", seed=5)
    lo, hi = latent_window(1.0, 1.5, n)
    assert gen.meta["edit"]["latent_window"] == [lo, hi]
    outside = torch.ones(n, dtype=torch.bool)
    outside[lo:hi] = False
    assert torch.equal(gen.latents[..., outside], x0[..., outside])  # known latents re-imposed exactly
    assert not torch.allclose(gen.latents[..., lo:hi], x0[..., lo:hi])
    ref = pipe.decode(x0)[:, : audio.shape[1]]
    margin = 10 * 2048  # the Oobleck decoder's receptive field reaches ≈9.3 latent frames to each side
    a, b = lo * 2048 - margin, hi * 2048 + margin
    assert a > 0 and b < audio.shape[1]
    tol = 1e-5 * np.abs(ref).max()  # random VAE weights: decoded amplitudes are far from ±1
    np.testing.assert_allclose(gen.audio[:, :a], ref[:, :a], atol=tol, rtol=0)
    np.testing.assert_allclose(gen.audio[:, b:], ref[:, b:], atol=tol, rtol=0)
    inside = slice(lo * 2048, hi * 2048)
    assert np.abs(gen.audio[:, inside] - ref[:, inside]).max() > 0.1 * np.abs(ref).max()


def test_window_outside_the_audio_is_refused(pipe):
    with pytest.raises(ValueError, match="outside"):
        pipe.inpaint(_tone(1.0), (5.0, 6.0), "x", "y")
    with pytest.raises(ValueError, match="0 <= start < end"):
        latent_window(1.0, 0.5, 40)


# ---- weights, errors -----------------------------------------------------------------------------------------


def _copy_weights(tiny, dst: Path, light: dict | None = None) -> Path:
    shutil.copytree(tiny["weights"].root, dst)
    if light is not None:
        torch.save(light, dst / "thinksound_light.ckpt")
    return dst


def _render_text(opts: dict, tmp_path: Path):
    renderer = make(_opts(opts))
    plan = Plan(caption="wind", semantic="wind in the trees", duration_s=1.0)
    return renderer.render(plan, None, None, 0, tmp_path / "o.wav")


def _light(tiny) -> dict:
    return dict(torch.load(tiny["weights"].light, weights_only=True))


@pytest.mark.parametrize("damage, message", [
    ("missing", r"missing 1: fused_blocks\.0\.attn\.qkv\.weight"),
    ("shape", r"wrong shape 1: final_layer\.conv\.weight \(file \(64, 64, 3\), model \(64, 64, 7\)\)"),
    ("pickle", r"pickled Python objects.*foleyloop convert --trust-pickle"),
])
def test_bad_checkpoints_refused_through_the_renderer(tiny, tmp_path, damage, message):
    sd = _light(tiny)
    if damage == "missing":
        del sd["model.model.fused_blocks.0.attn.qkv.weight"]
    elif damage == "shape":
        sd["model.model.final_layer.conv.weight"] = torch.zeros(64, 64, 3)
    else:  # a Lightning-style hparams object: loading it would unpickle code
        sd = {"state_dict": sd, "hparams": argparse.Namespace(lr=1e-4)}
    weights = _copy_weights(tiny, tmp_path / damage, sd)
    with pytest.raises(BackendError, match=message) as err:
        _render_text(tiny["opts"] | {"weights": str(weights)}, tmp_path)
    assert str(weights) in str(err.value)
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.parametrize("damage, message", [
    ("pickle", r"Synchformer checkpoint .* was refused \(UnpicklingError"),
    ("shape", r"Synchformer checkpoint .* was refused \(CheckpointMismatchError.*wrong shape"),
])
def test_bad_synchformer_refused_through_the_renderer(tiny, tmp_path, damage, message):
    weights = _copy_weights(tiny, tmp_path / damage)
    sync = weights / "synchformer_state_dict.pth"
    sd = torch.load(sync, weights_only=True)
    if damage == "pickle":
        torch.save({**sd, "args": argparse.Namespace(fps=25)}, sync)
    else:
        key = next(k for k in sd if k.startswith("vfeat_extractor") and k.endswith("weight"))
        torch.save({**sd, key: torch.zeros(3, 3)}, sync)
    renderer = make(_opts(tiny["opts"] | {"weights": str(weights)}))
    with pytest.raises(BackendError, match=message):
        renderer.render(Plan(caption="wind", duration_s=1.0), tiny["video"], probe(tiny["video"]), 0,
                        tmp_path / "v.wav")


def test_empty_weights_dir_is_model_missing(tiny, tmp_path):
    (tmp_path / "empty").mkdir()
    cfg = _cfg(tiny["opts"] | {"weights": str(tmp_path / "empty")})
    with pytest.raises(ModelMissing) as err:
        make(options_for("renderer", cfg))
    msg = str(err.value)
    assert "\n" not in msg and "thinksound_light.ckpt" in msg and str(tmp_path / "empty") in msg
    assert "hf download liuhuadai/ThinkSound" in msg and "iic/ThinkSound" in msg
    info = describe(options_for("renderer", cfg))
    assert info["available"] is False and info["why"] == msg
    good = describe(_opts(tiny["opts"]))
    assert good["available"] is True and good["where"] == str(tiny["weights"].root)
    assert good["model_id"].startswith("thinksound:thinksound_light.ckpt@")


def test_missing_synchformer_only_blocks_video_renders(tiny, tmp_path):
    weights = _copy_weights(tiny, tmp_path / "nosync")
    (weights / "synchformer_state_dict.pth").unlink()
    opts = tiny["opts"] | {"weights": str(weights)}
    assert "text-to-audio only" in describe(_opts(opts))["why"]
    renderer = make(_opts(opts))
    assert renderer.render(Plan(caption="wind", duration_s=1.0), None, None, 0, tmp_path / "t.wav").duration_s > 0
    info = probe(tiny["video"])
    with pytest.raises(ModelMissing, match="synchformer_state_dict.pth"):
        renderer.render(Plan(caption="wind", duration_s=1.0), tiny["video"], info, 0, tmp_path / "v.wav")


def test_safetensors_weights_and_separate_vae_override_the_light_copy(tiny, tmp_path):
    w = write_tiny_weights(tmp_path / "st", fmt="safetensors", separate_vae=True, sync_dim=None)
    assert w.light.name == "thinksound_light.safetensors" and w.vae.name == "vae.safetensors" and w.synchformer is None
    assert WeightsDir.open(w.root).mmdit_config.hidden_dim == 64
    p = ThinkSoundPipeline.get(PipelineSpec.from_options(tiny["opts"] | {"weights": str(w.root)}))
    p.load()
    from safetensors.torch import load_file

    want = load_file(w.vae)["autoencoder.decoder.layers.0.weight_v"]
    assert torch.equal(p.vae.decoder.layers[0].weight_v, want)  # not the light file's 0.5× copy
    gen = p.generate("wind", "", 1.0, seed=0, steps=2)
    assert gen.audio.shape == (2, SequenceConfig(1.0).num_samples) and np.isfinite(gen.audio).all()


def test_renderer_options_and_shared_models(tiny):
    r1 = make(_opts(tiny["opts"] | {"steps": 8, "cfg_scale": 1.0}))
    r2 = make(_opts(tiny["opts"]))
    assert (r1.steps, r1.cfg_scale, r2.steps, r2.cfg_scale) == (8, 1.0, 24, 5.0)
    # one set of loaded models per weights configuration: shared through the model cache's keys
    assert r1.pipeline.mmdit is r2.pipeline.mmdit and r1.pipeline.vae is r2.pipeline.vae
    assert isinstance(r1, ThinkSoundRenderer) and r1.name == "thinksound"
    with pytest.raises(ValueError, match="steps"):
        ThinkSoundRenderer(r1.spec, steps=0)
    with pytest.raises(ValueError, match="cfg_scale"):
        ThinkSoundRenderer(r1.spec, cfg_scale=float("nan"))


def test_models_live_in_the_one_cache_and_the_device_manager_frees_them(tiny):
    """No second cache: the pipeline's modules are SLOTS entries (role renderer), gone after release_roles."""
    import gc
    import weakref

    from agent.config import RunConfig
    from agent.devices import DeviceManager

    p = ThinkSoundPipeline.get(PipelineSpec.from_options(tiny["opts"], dtype="fp32"))
    p.load()
    roles = memory.SLOTS.roles()
    mine = {c["component"]: c["key"] for c in p.memory()}
    assert [c["component"] for c in p.memory()] == ["t5", "metaclip", "synchformer", "mmdit", "vae"]
    assert all(roles.get(mine[n]) == "renderer" for n in ("t5", "metaclip", "mmdit", "vae"))
    assert mine["synchformer"] not in roles  # text-only so far: the video encoder is not loaded
    dit = weakref.ref(p.mmdit)
    released = DeviceManager(RunConfig(renderer="thinksound")).release_all()
    assert {mine[n] for n in ("t5", "metaclip", "mmdit", "vae")} <= set(released)
    gc.collect()
    assert dit() is None and not p.loaded  # nothing else held the model
    assert p.mmdit is not None and p.components["mmdit"].loaded  # the next use loads it again


def test_bad_inputs_fail_before_anything_loads(tiny):
    release_renderer_models()
    p = ThinkSoundPipeline.get(PipelineSpec.from_options(tiny["opts"], dtype="fp32"))
    audio = _tone(1.0)
    cases = [
        (lambda: p.generate("x", "", float("nan")), "duration must be a positive number"),
        (lambda: p.generate("x", "", 0.0), "duration must be a positive number"),
        (lambda: p.generate("x", "", 1.0, steps=0), "steps must be an integer >= 1"),
        (lambda: p.generate("x", "", 1.0, steps=2.5), "steps must be an integer >= 1"),
        (lambda: p.generate("x", "", 1.0, cfg_scale=float("inf")), "cfg_scale must be a finite number"),
        (lambda: p.generate("x", "", 1.0, cfg_scale=-1.0), "cfg_scale must be a finite number"),
        (lambda: p.variation(audio, "x", "", 1.5), r"strength must be in 0\.\.1"),
        (lambda: p.inpaint(audio, (0.2, 0.4), "x", "", strength=0.0), r"strength for a window edit"),
        (lambda: p.inpaint(audio, (5.0, 6.0), "x", ""), "outside"),
        (lambda: p.inpaint(audio, (0.6, 0.2), "x", ""), "0 <= start < end"),
        (lambda: p.generate_batch([GenerationRequest("a", "", 1.0), GenerationRequest("b", "", -2.0)]),
         "duration must be a positive number"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    assert not p.loaded and "renderer" not in memory.SLOTS.roles().values()  # refused up front


# ---- batched rendering ---------------------------------------------------------------------------------------


def _count_forwards(monkeypatch, p) -> list[int]:
    dit = p.mmdit
    calls: list[int] = []
    real = dit.predict_flow

    def counted(x, t, cond):
        calls.append(x.shape[0])
        return real(x, t, cond)

    monkeypatch.setattr(dit, "predict_flow", counted)
    return calls


def test_generate_batch_shares_forwards_and_matches_separate_renders(pipe, monkeypatch):
    reqs = [GenerationRequest(f"sound number {i}", f"Start with sound {i}.", 1.0, seed=10 + i, steps=2)
            for i in range(8)]
    calls = _count_forwards(monkeypatch, pipe)
    separate = [pipe.generate(r.caption, r.cot, r.duration_s, seed=r.seed, steps=r.steps) for r in reqs]
    n_separate = len(calls)
    assert n_separate == 8 * 2 and set(calls) == {2}  # one CFG pair per forward
    calls.clear()
    batched = pipe.generate_batch(reqs)
    assert len(calls) == 2 < n_separate and calls == [16, 16]  # 8 clips × (cond, uncond) in each forward
    for one, many in zip(separate, batched):
        _assert_same_render(many, one)  # fp32 GEMMs block differently at batch 16 than at batch 2
        assert many.meta["batch_size"] == 8 and one.meta["batch_size"] == 1 and many.meta["seed"] == one.meta["seed"]
    assert not np.allclose(batched[0].audio, batched[1].audio)  # different seeds and texts stay different


def test_generate_batch_groups_by_duration_and_keeps_order(pipe, monkeypatch):
    reqs = [GenerationRequest("a", "", 1.0, seed=1, steps=1), GenerationRequest("b", "", 1.5, seed=2, steps=1),
            GenerationRequest("c", "", 1.0, seed=3, steps=1), GenerationRequest("d", "", 0.6, seed=4, steps=1)]
    calls = _count_forwards(monkeypatch, pipe)
    out = pipe.generate_batch(reqs)
    # 1.0 s and 0.6 s (rendered at the 1 s minimum) share a bucket; 1.5 s has its own
    assert sorted(calls) == [2, 6]
    assert [g.meta["seed"] for g in out] == [1, 2, 3, 4]
    assert [g.audio.shape[1] for g in out] == [SequenceConfig(1.0).num_samples, SequenceConfig(1.5).num_samples,
                                               SequenceConfig(1.0).num_samples, round(0.6 * SR)]
    assert [g.meta["batch_size"] for g in out] == [3, 1, 3, 3]


def test_render_batch_writes_each_plan(tiny, tmp_path):
    renderer = make(_opts(tiny["opts"] | {"steps": 2}))
    jobs = [(Plan(caption=c, semantic=c, duration_s=1.0), None, None, i, tmp_path / f"{i}.wav")
            for i, c in enumerate(["wind", "rain", "birds"])]
    results = renderer.render_batch(jobs)
    assert [r.audio_path for r in results] == [j[4] for j in jobs]
    for r in results:
        data, sr = sf.read(r.audio_path, always_2d=True)
        assert sr == SR and data.shape == (SequenceConfig(1.0).num_samples, 2) and np.abs(data).max() > 0.99
        assert r.meta["batch_size"] == 3 and r.meta["caption"] in ("wind", "rain", "birds")


# ---- injected components, compile ------------------------------------------------------------------------------


def _assert_same_render(a, b) -> None:
    """Equal up to fp32 rounding (conv vs GEMM path, batch blocking); the random tiny VAE has a gain ~100."""
    err = (a.latents - b.latents).abs().max().item()
    assert err < 1e-4 * b.latents.abs().max().item(), err
    np.testing.assert_allclose(a.audio, b.audio, atol=1e-3 * np.abs(b.audio).max(), rtol=0)


def _injected(tiny, **kw) -> ThinkSoundPipeline:
    """A pipeline built from objects, not a weights folder (diffusers-style components)."""
    from generator.features import FeatureCache, MetaCLIPFeatures, T5Features
    from generator.thinksound import load_mmdit, load_vae

    w = tiny["weights"]
    return ThinkSoundPipeline(
        mmdit=load_mmdit(w.light, config=w.mmdit_config, dtype="fp32", device="cpu"),
        vae=load_vae(w.light, config=w.vae_config, dtype="fp32", device="cpu"),
        metaclip=MetaCLIPFeatures(tiny["opts"]["metaclip"]), t5=T5Features(tiny["opts"]["t5"]),
        feature_cache=FeatureCache(tiny["root"] / "injected-cache"), **kw)


def test_injected_components_render_like_the_weights_folder(tiny, pipe):
    p = _injected(tiny)
    assert p.loaded and p.device.type == "cpu" and p.dtype == torch.float32
    a = p.generate("a door creaking open", "Start with a door creaking.", 1.0, seed=4, steps=2)
    b = pipe.generate("a door creaking open", "Start with a door creaking.", 1.0, seed=4, steps=2)
    _assert_same_render(a, b)
    assert "renderer" not in {memory.SLOTS.roles().get(c["key"]) for c in p.memory()}  # none of it cached


def test_compile_option_compiles_and_matches_eager(tiny, monkeypatch):
    from generator.thinksound import pipeline as pl

    monkeypatch.setattr(pl, "COMPILE_BACKEND", "eager")  # dynamo tracing only: seconds, no C++ compiler
    eager = _injected(tiny)
    compiled = _injected(tiny, compile=True)
    a = eager.generate("rain", "Soft rain.", 1.0, seed=2, steps=2)
    b = compiled.generate("rain", "Soft rain.", 1.0, seed=2, steps=2)
    assert b.meta["compile"] == "compiled" and "compile" not in a.meta
    assert b.meta["timings"]["compile_warmup_s"] > 0 and b.meta["timings"]["decode_warmup_s"] > 0
    _assert_same_render(b, a)
    again = compiled.generate("rain", "Soft rain.", 1.0, seed=2, steps=2)
    assert again.meta["timings"]["compile_warmup_s"] == 0.0  # warm for this shape: not compiled twice


def test_compile_failure_falls_back_with_a_warning(tiny, monkeypatch):
    from generator.thinksound import pipeline as pl

    def broken(gm, example_inputs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(pl, "COMPILE_BACKEND", broken)
    p = _injected(tiny, compile=True)
    with pytest.warns(RuntimeWarning) as record:
        gen = p.generate("rain", "Soft rain.", 1.0, seed=2, steps=2)
    messages = " | ".join(str(w.message) for w in record)
    assert "torch.compile of the MM-DiT forward failed" in messages and "no C++ compiler here" in messages
    assert "torch.compile of the VAE decoder failed" in messages and "running it eagerly" in messages
    ref = _injected(tiny).generate("rain", "Soft rain.", 1.0, seed=2, steps=2)
    assert gen.meta["compile"] == "eager (compile failed)"
    _assert_same_render(gen, ref)


def test_auto_dtype_follows_the_hardware_check(tiny, monkeypatch):
    from generator.thinksound import pipeline as pl

    monkeypatch.setattr(pl, "resolve_auto_dtype", lambda device: (torch.bfloat16, "test: bf16 units"))
    p = ThinkSoundPipeline.get(PipelineSpec.from_options(tiny["opts"]))  # dtype "auto" is the default
    assert p.spec.dtype == "auto" and p.dtype == torch.bfloat16 and p.dtype_why == "test: bf16 units"
    gen = p.generate("wind", "", 1.0, seed=0, steps=2)
    assert gen.meta["dtype"] == "bfloat16" and gen.meta["dtype_why"] == "test: bf16 units"
    assert p.mmdit.dtype == torch.bfloat16 and p.vae.dtype == torch.float32  # the VAE stays fp32 (vae_dtype)
    assert np.isfinite(gen.audio).all() and gen.audio.dtype == np.float32
    monkeypatch.setattr(pl, "resolve_auto_dtype", lambda device: (torch.float32, "test: no bf16 units"))
    assert ThinkSoundPipeline.get(PipelineSpec.from_options(tiny["opts"])).dtype == torch.float32
    info = describe(_opts(tiny["opts"] | {"dtype": "bf16"}))
    assert (info["dtype"], info["dtype_why"]) == ("bfloat16", "as configured")


def test_a_multi_shot_video_is_rendered_segment_by_segment_inside_the_window(tiny, store, fake_backends, tmp_path):
    from agent import segments
    from contract.plan import Critique
    from tests.segment_clips import join_report, make_multiscene_clip

    clip = make_multiscene_clip(tmp_path / "two_shots.mp4", shots=[(3.0, (30, 90, 40), "bounce"),
                                                                  (3.0, (40, 40, 160), "glide")], size=(64, 64))
    opts = tiny["opts"] | {"cache_dir": str(tmp_path / "features"), "steps": 2}
    cfg = RunConfig(renderer="thinksound", watcher="fake", critic="fake", refiner="fake", rounds=1,
                    options={"renderer": opts, "segments": {"max_s": 5.0}})
    run_id, _ = runs.dub(store, clip, cfg, out=tmp_path / "dubbed.mp4")
    rnd = store.rounds(run_id)[0]
    plan = Plan.from_stored(rnd.plan_json)
    assert [s.start_s for s in plan.segments] == [0.0, pytest.approx(3.0, abs=0.21)] and plan.segments[1].cut
    assert all(s.render_s <= 5.0 for s in plan.segments)
    meta = _meta(rnd)["segments"]
    assert meta["rendered"] == [0, 1] and meta["count"] == 2
    audio, sr = _wav(store, rnd)
    assert sr == SR and audio.shape[1] == round(6.0 * SR)
    for j in join_report(audio, sr, plan.segments):
        assert j["join_step"] <= j["inside_step"], j
    crit = Critique.from_json(rnd.critique_json)
    assert [p.index for p in crit.segments] == [0, 1]
    # each segment was conditioned on its own stretch of video (a proxy of its render window)
    run = segments.prepare(plan, clip, probe(clip), store.home / "cache")
    assert [p.info.duration_s for p in run.proxies] == [pytest.approx(s.render_s, abs=0.1) for s in plan.segments]
