"""Synchformer re-implementation vs the reference oracles (spec/oracle/SYNCHFORMER.md) and the spec's shape rules."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.conftest import ORACLE_DIR, load_oracle
import torch

from models.synchformer import (
    CheckpointMismatchError,
    Synchformer,
    SynchformerVisual,
    build_full,
    build_full_visual,
    desync_from_logits,
    num_sync_frames,
    num_windows,
    pad_or_trim,
    preprocess_sync_frames,
)
from models.synchformer import audio_frontend as af
from models.synchformer import oracle

ORACLE = ORACLE_DIR
ATOL = 1e-5

_load = load_oracle


@pytest.fixture(scope="module")
def visual_oracle() -> dict:
    return _load("synchformer_visual_tiny.pt")


@pytest.fixture(scope="module")
def full_oracle() -> dict:
    return _load("synchformer_full_tiny.pt")


@pytest.fixture(scope="module")
def full_tiny(full_oracle) -> Synchformer:
    return Synchformer.from_state_dict(full_oracle["state_dict"], oracle.full_config(full_oracle["config"]))


# --- numerical oracles ----------------------------------------------------------------------------------------------


def test_visual_oracle_all_outputs(visual_oracle):
    assert oracle.detect(visual_oracle) == oracle.VISUAL
    errors = oracle.check_visual(visual_oracle)
    expected = {"sync_features", "per_window"} | {f"intermediates/{k}" for k in visual_oracle["intermediates"]}
    assert set(errors) == expected
    bad = {k: v for k, v in errors.items() if not v <= ATOL}
    assert not bad, bad


def test_visual_api_layouts(visual_oracle):
    cfg = oracle.visual_config(visual_oracle["config"])
    model = SynchformerVisual.from_state_dict(visual_oracle["state_dict"], cfg)
    frames = visual_oracle["inputs"]["frames_uint8"]
    want = visual_oracle["outputs"]
    sync = model.extract(frames[0], chunk_windows=2)  # (T, 3, H, W) input, uneven chunks
    assert sync.shape == (1, 24, 128)
    torch.testing.assert_close(sync, want["sync_features"], atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(sync.view(1, 3, 8, 128), want["per_window"], atol=ATOL, rtol=ATOL)


def test_full_oracle_all_outputs(full_oracle):
    assert oracle.detect(full_oracle) == oracle.FULL
    errors = oracle.check_full(full_oracle)
    expected = {"afeats_from_mel", "logits_first", "logits_last", "desync"}
    expected |= {f"intermediates/{k}" for k in full_oracle["intermediates"]}
    assert set(errors) == expected
    bad = {k: v for k, v in errors.items() if not v <= ATOL}
    assert not bad, bad
    assert errors["desync"] == 0.0


def test_full_api_desync_value(full_oracle, full_tiny):
    vis, aud = full_oracle["inputs"]["vfeats"], full_oracle["inputs"]["afeats"]
    logits = full_tiny.logits_first_last(vis, aud)
    assert logits.shape == (2, 2, 21)
    torch.testing.assert_close(logits[:, 0], full_oracle["outputs"]["logits_first"], atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(logits[:, 1], full_oracle["outputs"]["logits_last"], atol=ATOL, rtol=ATOL)
    value = desync_from_logits(logits[:, 0], logits[:, 1], full_tiny.class_grid)
    assert value == pytest.approx(float(full_oracle["outputs"]["desync"]))
    with torch.inference_mode():
        afeats = full_tiny.extract_afeats(full_oracle["inputs"]["mel"])
    torch.testing.assert_close(afeats, full_oracle["outputs"]["afeats_from_mel"], atol=ATOL, rtol=ATOL)


def test_detect_rejects_other_data(visual_oracle):
    assert oracle.detect({"config": {}, "state_dict": {"model.x": torch.zeros(1)}, "inputs": {}, "outputs": {}}) is None
    assert oracle.detect([1, 2]) is None
    with pytest.raises(ValueError):
        oracle.check({"foo": 1})


def _randomize(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(v.shape, generator=g) * 0.2 for k, v in model.state_dict().items()}


def test_oracle_replay_follows_any_config(visual_oracle, full_oracle):
    """Another config in the oracle format (other widths/depths/heads) is rebuilt from `config`, not hard-coded."""
    vcfg = {**visual_oracle["config"], "vit_overrides": {"EMBED_DIM": 64, "NUM_HEADS": 2, "DEPTH": 1, "MLP_RATIO": 2},
            "agg_nhead": 2, "agg_ff": 96}
    model = SynchformerVisual(oracle.visual_config(vcfg))
    sd = _randomize(model)
    model = SynchformerVisual.from_state_dict(sd, model.cfg)
    frames = visual_oracle["inputs"]["frames_uint8"][:, :24]
    fake = {"config": vcfg, "state_dict": sd, "inputs": {"frames_uint8": frames},
            "outputs": {"sync_features": model.extract(frames), "per_window": model.extract_per_window(frames)}}
    assert model.state_dict()["vfeat_extractor.blocks.0.mlp.fc1.weight"].shape == (128, 64)
    assert max(oracle.check(fake).values()) <= ATOL

    fcfg = {**full_oracle["config"], "D": 64, "vit_overrides": {"EMBED_DIM": 64, "NUM_HEADS": 2, "DEPTH": 1},
            "ast_config_overrides": {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                                     "intermediate_size": 96},
            "global_transformer": {**full_oracle["config"]["global_transformer"], "n_layer": 1, "n_head": 2,
                                   "n_embd": 64}}
    full = Synchformer(oracle.full_config(fcfg))
    sd = _randomize(full)
    full = Synchformer.from_state_dict(sd, full.cfg)
    g = torch.Generator().manual_seed(2)
    vis, aud = torch.randn(1, 16, 8, 64, generator=g), torch.randn(1, 16, 6, 64, generator=g)
    mel = full_oracle["inputs"]["mel"]
    logits = full.logits_first_last(vis, aud)
    with torch.inference_mode():
        afeats = full.extract_afeats(mel)
    fake = {"config": fcfg, "state_dict": sd, "inputs": {"mel": mel, "vfeats": vis, "afeats": aud},
            "outputs": {"afeats_from_mel": afeats, "logits_first": logits[:, 0], "logits_last": logits[:, 1],
                        "desync": torch.tensor(desync_from_logits(logits[:, 0], logits[:, 1], full.class_grid))}}
    assert oracle.detect(fake) == oracle.FULL
    assert max(oracle.check(fake).values()) <= ATOL


# --- manifests (real size, meta device) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("manifest", "build", "count", "elements"),
    [
        ("synchformer_visual_manifest.json", build_full_visual, 238, 122_440_704),
        ("synchformer_full_manifest.json", build_full, 513, 237_460_245),
    ],
)
def test_real_size_matches_manifest(manifest, build, count, elements):
    path = ORACLE / manifest
    if not path.exists():
        pytest.skip(f"{path} not available")
    want = json.loads(path.read_text())
    model = build()
    sd = model.state_dict()
    assert all(t.is_meta for t in sd.values())
    assert {k: list(v.shape) for k, v in sd.items()} == want
    assert len(sd) == count
    assert sum(t.numel() for t in sd.values()) == elements


# --- strict loading -------------------------------------------------------------------------------------------------


def test_strict_loading_reports_bad_keys(full_oracle):
    cfg = oracle.full_config(full_oracle["config"])
    sd = dict(full_oracle["state_dict"])
    missing = {k: v for k, v in sd.items() if k != "transformer.off_head.bias"}
    with pytest.raises(CheckpointMismatchError, match=r"missing \(1\): transformer\.off_head\.bias"):
        Synchformer.from_state_dict(missing, cfg)
    wrong = {**sd, "vproj.weight": torch.zeros(3, 3)}
    with pytest.raises(CheckpointMismatchError, match=r"wrong shape.*vproj\.weight: checkpoint \(3, 3\)"):
        Synchformer.from_state_dict(wrong, cfg)
    extra = {**sd, "transformer.blocks.9.ln1.weight": torch.zeros(128)}
    with pytest.raises(CheckpointMismatchError, match="unexpected"):
        Synchformer.from_state_dict(extra, cfg)
    # the visual branch alone needs its own keys complete but silently drops the other branches (ThinkSound rule)
    vis_missing = {k: v for k, v in sd.items() if k != "vfeat_extractor.norm.weight"}
    with pytest.raises(CheckpointMismatchError, match="vfeat_extractor.norm.weight"):
        SynchformerVisual.from_state_dict(vis_missing, cfg.visual)


def test_from_checkpoint_file(full_oracle, tmp_path):
    cfg = oracle.full_config(full_oracle["config"])
    path = tmp_path / "synchformer_state_dict.pth"
    torch.save(dict(full_oracle["state_dict"]), path)
    visual = SynchformerVisual.from_checkpoint(path, torch.float32, "cpu", cfg=cfg.visual)
    full = Synchformer.from_checkpoint(path, cfg=cfg)
    assert not visual.training and not any(p.requires_grad for p in visual.parameters())
    assert len(visual.state_dict()) == 58 and len(full.state_dict()) == 157
    torch.testing.assert_close(
        visual.state_dict()["vfeat_extractor.pos_embed"], full_oracle["state_dict"]["vfeat_extractor.pos_embed"]
    )
    half = SynchformerVisual.from_checkpoint(path, torch.float16, cfg=cfg.visual)
    assert half.vfeat_extractor.cls_token.dtype == torch.float16


# --- video preprocessing --------------------------------------------------------------------------------------------


def test_window_counts_from_spec():
    assert [num_windows(num_sync_frames(d)) for d in (8, 9, 10, 5)] == [24, 27, 30, 14]
    assert num_windows(15) == 0


def test_preprocess_non_square_and_layouts():
    rng = np.random.default_rng(0)
    landscape = rng.integers(0, 256, (3, 180, 320, 3), dtype=np.uint8)
    out = preprocess_sync_frames(landscape)
    assert out.shape == (3, 3, 224, 224) and out.dtype == torch.uint8
    portrait = [rng.integers(0, 256, (300, 200, 3), dtype=np.uint8) for _ in range(2)]
    assert preprocess_sync_frames(portrait).shape == (2, 3, 224, 224)
    # shorter side already 224: resize is a no-op, the crop takes the centre 224 columns
    wide = torch.randint(0, 256, (2, 3, 224, 300), dtype=torch.uint8)
    torch.testing.assert_close(preprocess_sync_frames(wide), wide[..., 38:262])


def test_pad_or_trim_repeats_last_frame():
    frames = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 3, 4, 6).contiguous()
    padded = pad_or_trim(frames, 8)
    assert padded.shape == (8, 3, 4, 6)
    assert padded[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
    assert pad_or_trim(frames, 3)[:, 0, 0, 0].tolist() == [0, 1, 2]
    short = preprocess_sync_frames(frames.permute(0, 2, 3, 1).numpy(), n_frames=num_sync_frames(0.4))
    assert short.shape == (10, 3, 224, 224)
    assert torch.equal(short[-1], short[4])


# --- audio front-end ------------------------------------------------------------------------------------------------


def _spec_log_mel(windows: torch.Tensor) -> torch.Tensor:
    """§5 written out by hand: periodic Hann 400 centred in 1024, reflect pad 512, power 2, HTK mel, no norm."""
    win = torch.nn.functional.pad(torch.hann_window(400, periodic=True), (312, 312))
    x = torch.nn.functional.pad(windows[:, None], (512, 512), mode="reflect")[:, 0]
    power = torch.stft(x, 1024, 160, 1024, window=win, center=False, return_complex=True).abs() ** 2

    def mel(f: float) -> float:
        return 2595 * math.log10(1 + f / 700)

    hz = 700 * (10 ** (torch.linspace(0, mel(8000), 130, dtype=torch.float64) / 2595) - 1)
    freqs = torch.linspace(0, 8000, 513, dtype=torch.float64)
    up = (freqs[:, None] - hz[None, :-2]) / (hz[1:-1] - hz[:-2])
    down = (hz[None, 2:] - freqs[:, None]) / (hz[2:] - hz[1:-1])
    fb = torch.clamp(torch.minimum(up, down), min=0).float()
    logmel = torch.log((power.transpose(1, 2) @ fb).transpose(1, 2) + 1e-6)
    logmel = torch.nn.functional.pad(logmel, (0, 1))
    return (logmel + 4.2677393) / (2 * 4.5689974)


def test_log_mel_front_end_matches_spec_formula():
    wave = torch.randn(3, 10240, generator=torch.Generator().manual_seed(0))
    got = af.log_mel(wave)
    assert got.shape == (3, 1, 128, 66)
    torch.testing.assert_close(got[:, 0], _spec_log_mel(wave), atol=ATOL, rtol=ATOL)
    assert torch.allclose(got[..., -1], torch.tensor(0.46702), atol=1e-5)  # the zero-padded 66th column


def test_audio_windows_and_resampling():
    stereo_44k = torch.randn(2, 44100 * 8) * 0.1
    mels = af.waveform_to_mel_windows(stereo_44k, 44100, duration_s=8.0)
    assert mels.shape == (1, 24, 1, 128, 66)
    with pytest.raises(ValueError, match="shorter"):
        af.waveform_to_mel_windows(stereo_44k, 44100, duration_s=9.0)


# --- DeSync end to end (tiny weights) -------------------------------------------------------------------------------


def test_desync_end_to_end(full_tiny):
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (num_sync_frames(4.8), 3, 224, 224), dtype=torch.uint8, generator=g)
    audio = torch.randn(2, 48000 * 5, generator=g) * 0.1  # stereo 48 kHz, longer than the video
    vis, aud = full_tiny.features(frames, audio, 48000)
    assert vis.shape == (1, 14, 8, 128) and aud.shape == (1, 14, 6, 128)
    logits = full_tiny.logits_first_last(vis, aud)
    assert logits.shape == (1, 2, 21)
    torch.testing.assert_close(logits[:, 0], logits[:, 1])  # S == 14: first and last windows coincide
    desync = full_tiny.desync_seconds(frames, audio, 48000)  # the critic's one-call path
    assert desync.shape == (1,)
    assert torch.isclose(desync[0], full_tiny.class_grid[logits[0, 0].argmax()].abs())
    with pytest.raises(ValueError, match="at least 14 windows"):
        full_tiny.offset_logits(frames[:100], audio, 48000)
