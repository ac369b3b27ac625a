"""Replays the Synchformer numerical oracles (spec oracle/SYNCHFORMER.md): dict in, max abs error per output out.

Pure functions so the ThinkSound dispatcher (`generator.thinksound.oracle.check_oracle`) can call them lazily:
`detect(data)` names the oracle kind; `check_visual` / `check_full` rebuild the model from `data["config"]`, load
`data["state_dict"]` strictly, rerun the recorded calls and compare every stored output and intermediate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .config import AudioConfig, FullConfig, FusionConfig, VisualConfig
from .model import Synchformer, desync_from_logits
from .preprocess import num_windows
from .visual import SynchformerVisual

VISUAL = "synchformer_visual"
FULL = "synchformer_full"


def detect(data: Any) -> str | None:
    """'synchformer_full', 'synchformer_visual', or None when `data` is not a Synchformer oracle."""
    if not isinstance(data, Mapping) or not {"config", "state_dict", "inputs", "outputs"} <= set(data):
        return None
    keys = data["state_dict"].keys() if isinstance(data["state_dict"], Mapping) else ()
    if any(k.startswith("afeat_extractor.") for k in keys) and "mel" in data["inputs"]:
        return FULL
    if keys and all(k.startswith("vfeat_extractor.") for k in keys) and "frames_uint8" in data["inputs"]:
        return VISUAL
    return None


# --- config parsing (the oracle files' `config` format) ----------------------------------------------------------


def visual_config(cfg: Mapping[str, Any]) -> VisualConfig:
    vit = dict(cfg.get("vit_overrides", {}))
    dim = int(vit.get("EMBED_DIM", 768))
    temporal_patch = int(cfg.get("temporal_patch", 2))
    frames = int(cfg.get("frames_per_window", temporal_patch * int(cfg.get("temporal_resolution", 8))))
    if frames != temporal_patch * int(cfg.get("temporal_resolution", frames // temporal_patch)):
        raise ValueError("frames_per_window != temporal_patch * temporal_resolution")
    return VisualConfig(
        dim=dim,
        depth=int(vit.get("DEPTH", 12)),
        heads=int(vit.get("NUM_HEADS", 12)),
        mlp_ratio=float(vit.get("MLP_RATIO", 4)),
        image_size=int(cfg.get("image_size", 224)),
        patch_size=int(cfg.get("patch_size", 16)),
        temporal_patch=temporal_patch,
        frames_per_window=frames,
        window_stride=int(cfg.get("window_stride", 8)),
        qkv_bias=bool(cfg.get("qkv_bias", True)),
        ln_eps=float(cfg.get("vit_layernorm_eps", 1e-6)),
        agg_eps=float(cfg.get("agg_layernorm_eps", 1e-6)),
        agg_heads=cfg.get("agg_nhead"),
        agg_ff=cfg.get("agg_ff"),
    )


def full_config(cfg: Mapping[str, Any]) -> FullConfig:
    visual = visual_config(cfg)
    ast = {**cfg.get("ast_fixed", {}), **cfg.get("ast_config_overrides", {})}
    audio = AudioConfig(
        dim=int(ast.get("hidden_size", 768)),
        depth=int(ast.get("num_hidden_layers", 12)),
        heads=int(ast.get("num_attention_heads", 12)),
        intermediate=int(ast.get("intermediate_size", 3072)),
        n_mels=int(ast.get("num_mel_bins", 128)),
        max_frames=int(ast.get("max_spec_t", 66)),
        patch_size=int(ast.get("patch_size", 16)),
        freq_stride=int(ast.get("frequency_stride", 10)),
        time_stride=int(ast.get("time_stride", 10)),
        qkv_bias=bool(ast.get("qkv_bias", True)),
        ln_eps=float(ast.get("layer_norm_eps", 1e-12)),
        agg_eps=float(ast.get("agg_layernorm_eps", 1e-6)),
        agg_heads=ast.get("agg_nhead"),
        agg_ff=ast.get("agg_ff"),
    )
    gt = dict(cfg.get("global_transformer", {}))
    per_window = visual.time_tokens + audio.time_tokens
    pos_len = int(gt.get("pos_emb_len", 2 + 14 * per_window))
    if (pos_len - 2) % per_window:
        raise ValueError(f"pos_emb_len {pos_len} is not 2 + windows * {per_window}")
    grid = cfg.get("class_grid")
    n_classes = int(gt.get("n_classes", len(grid) if grid is not None else 21))
    fusion = FusionConfig(
        dim=int(gt.get("n_embd", cfg.get("D", 768))),
        depth=int(gt.get("n_layer", 3)),
        heads=int(gt.get("n_head", 8)),
        n_classes=n_classes,
        max_offset=float(max(abs(float(g)) for g in grid)) if grid is not None else 2.0,
        ln_eps=float(gt.get("layernorm_eps", 1e-5)),
        n_windows=(pos_len - 2) // per_window,
        visual_tokens=visual.time_tokens,
        audio_tokens=audio.time_tokens,
    )
    return FullConfig(visual=visual, audio=audio, fusion=fusion)


# --- replay helpers ---------------------------------------------------------------------------------------------


def _err(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = torch.as_tensor(got), torch.as_tensor(want)
    if tuple(got.shape) != tuple(want.shape):
        raise AssertionError(f"shape mismatch: got {tuple(got.shape)}, oracle {tuple(want.shape)}")
    return float((got.double() - want.double()).abs().max()) if want.numel() else 0.0


@contextmanager
def _capture(points: Mapping[str, tuple[nn.Module, Callable[..., torch.Tensor], bool]]):
    """Record tensors at named modules: (module, pick(output_or_input), pre_hook?) -> first captured value."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name, (module, pick, pre) in points.items():

        def record(value: torch.Tensor, name: str = name, pick=pick) -> None:
            if name not in seen:
                seen[name] = pick(value).detach().clone()

        if pre:
            handles.append(module.register_forward_pre_hook(lambda _m, args, rec=record: rec(args[0])))
        else:
            handles.append(module.register_forward_hook(lambda _m, _args, out, rec=record: rec(out)))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def _compare_intermediates(seen: Mapping[str, torch.Tensor], want: Mapping[str, torch.Tensor]) -> dict[str, float]:
    return {f"intermediates/{k}": _err(seen[k], v) for k, v in want.items() if k in seen}


def _first(n: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda t: t[:n]


# --- the two oracles --------------------------------------------------------------------------------------------


def check_visual(data: Mapping[str, Any]) -> dict[str, float]:
    """ThinkSound `encode_video_with_sync` replay: sync_features, per_window and window-0 intermediates."""
    cfg = visual_config(data["config"])
    model = SynchformerVisual.from_state_dict(dict(data["state_dict"]), cfg)
    frames = data["inputs"]["frames_uint8"]
    out, want = {}, data["outputs"]
    b = frames.shape[0] if frames.ndim == 5 else 1
    with torch.inference_mode():
        # ThinkSound: windows as (B*S) rows, forwarded in chunks of B rows, then (B, S*8, D)
        out["sync_features"] = _err(model.extract(frames, chunk_windows=b), want["sync_features"])
        mf = model.vfeat_extractor
        points = {
            "patch_tokens": (mf.patch_embed_3d, _first(1), False),
            "final_norm_out": (mf.norm, _first(1), False),
            "spatial_agg_out": (mf.spatial_attn_agg, lambda t: t[: cfg.time_tokens][None], False),
        }
        if len(mf.blocks):
            points["tokens_with_cls_and_pos"] = (mf.blocks[0], _first(1), True)
        for i, blk in enumerate(mf.blocks):
            points[f"block{i}_timeattn_out"] = (blk.timeattn, _first(1), False)
            points[f"block{i}_spaceattn_out"] = (blk.attn, _first(1), False)
            points[f"block{i}_out"] = (blk, _first(1), False)
        with _capture(points) as seen:  # av-benchmark layout: one call over all windows
            s = num_windows(frames.shape[-4], cfg.frames_per_window, cfg.window_stride)
            per_window = model.extract_per_window(frames, chunk_windows=b * s)
        out["per_window"] = _err(per_window, want["per_window"])
    out.update(_compare_intermediates(seen, data.get("intermediates", {})))
    return out


def check_full(data: Mapping[str, Any]) -> dict[str, float]:
    """av-benchmark replay: extract_afeats(mel), compare_v_a on first/last 14 windows, DeSync, intermediates."""
    cfg = full_config(data["config"])
    model = Synchformer.from_state_dict(dict(data["state_dict"]), cfg)
    inputs, want = data["inputs"], data["outputs"]
    grid = torch.as_tensor(data["config"].get("class_grid", cfg.fusion.class_grid()), dtype=torch.float32)
    n = cfg.fusion.n_windows
    ast, gt = model.afeat_extractor.ast, model.transformer
    out: dict[str, float] = {}
    with torch.inference_mode():
        with _capture(
            {
                "ast_embeddings_out": (ast.embeddings, _first(1), False),
                "ast_layer0_out": (ast.encoder.layer[0], _first(1), False),
                "ast_final_layernorm_out": (ast.layernorm, _first(1), False),
            }
            if len(ast.encoder.layer)
            else {}
        ) as seen_a:
            out["afeats_from_mel"] = _err(model.extract_afeats(inputs["mel"]), want["afeats_from_mel"])
        vis, aud = inputs["vfeats"], inputs["afeats"]
        with _capture(
            {"gt_block0_out": (gt.blocks[0], lambda t: t, False), "gt_ln_f_out": (gt.ln_f, lambda t: t, False)}
            if len(gt.blocks)
            else {}
        ) as seen_t:
            first = model.compare_v_a(vis[:, :n], aud[:, :n])
        last = model.compare_v_a(vis[:, -n:], aud[:, -n:])
    out["logits_first"] = _err(first, want["logits_first"])
    out["logits_last"] = _err(last, want["logits_last"])
    out["desync"] = abs(desync_from_logits(first, last, grid) - float(want["desync"]))
    out.update(_compare_intermediates({**seen_a, **seen_t}, data.get("intermediates", {})))
    return out


def check(data: Mapping[str, Any]) -> dict[str, float]:
    """Dispatch on `detect`; raises ValueError for non-Synchformer data."""
    kind = detect(data)
    if kind == VISUAL:
        return check_visual(data)
    if kind == FULL:
        return check_full(data)
    raise ValueError("not a Synchformer oracle")
