"""Checkpoint layouts, strict key checks, pickle refusal, dtypes (tiny oracle weights, CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ORACLE_DIR
import torch

from generator.thinksound import (
    CheckpointError,
    TensorFile,
    convert_to_safetensors,
    load_mmdit,
    load_thinksound,
    load_vae,
    resolve_auto_dtype,
    resolve_dtype,
)

ORACLE = ORACLE_DIR
MMDIT_ATOL, VAE_ATOL = 1e-4, 1e-6


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _vae_body(vo: dict) -> dict[str, torch.Tensor]:
    return {k[len("autoencoder."):]: v for k, v in vo["state_dict"].items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory, mo, vo) -> dict[str, Path]:
    """The published layouts, with tiny weights: light ckpt, Lightning vae.ckpt."""
    d = tmp_path_factory.mktemp("ckpts")
    light = dict(mo["state_dict"])
    # the light ckpt's own VAE copy differs from vae.ckpt, like the real files may
    light.update({"pretransform.model." + k: v * 0.5 for k, v in _vae_body(vo).items()})
    torch.save(light, d / "thinksound_light.ckpt")
    torch.save({"state_dict": dict(vo["state_dict"]), "epoch": 7, "global_step": 1234,
                "hyper_parameters": {"lr": 1e-4, "name": "vae"}}, d / "vae.ckpt")
    return {"light": d / "thinksound_light.ckpt", "vae": d / "vae.ckpt", "dir": d}


def _forward(model, i, cfg=1.0):
    with torch.no_grad():
        return model(i["x"], i["t"], i["clip_f"], i["sync_f"], i["text_f"], i["t5_features"], cfg_scale=cfg)


# ---- the three layouts ---------------------------------------------------------------------


def test_light_plus_vae_ckpt(files, mo, vo):
    m = load_thinksound(files["light"], files["vae"], config=mo["config"], vae_config=vo["config"],
                        dtype="fp32", device="cpu")
    assert (_forward(m.mmdit, mo["inputs"], 5.0) - mo["outputs"]["forward_cfg5"]).abs().max() < MMDIT_ATOL
    with torch.no_grad():  # vae.ckpt overrides the light ckpt's VAE copy, as in predict.py
        assert (m.vae.decode(vo["inputs"]["latents"]) - vo["outputs"]["decoded"]).abs().max() < VAE_ATOL
    assert not any(p.is_meta for p in m.mmdit.parameters()) and not m.mmdit.latent_rope.is_meta
    assert not any(p.requires_grad for p in m.mmdit.parameters()) and not m.mmdit.training


def test_light_ckpt_alone_uses_its_vae_copy(files, vo):
    vae = load_vae(files["light"], config=vo["config"], device="cpu")
    ref = load_vae(files["vae"], config=vo["config"], device="cpu")
    assert torch.equal(vae.decoder.layers[0].weight_v, ref.decoder.layers[0].weight_v * 0.5)


def test_safetensors_roundtrip(files, mo, vo):
    dst = files["dir"] / "light.safetensors"
    info = convert_to_safetensors(files["light"], dst)
    assert info["tensors"] == len(mo["state_dict"]) + len(vo["state_dict"]) and info["dropped"] == 0
    model = load_mmdit(dst, config=mo["config"], device="cpu")
    assert (_forward(model, mo["inputs"]) - mo["outputs"]["forward_cfg1"]).abs().max() < MMDIT_ATOL
    vdst = files["dir"] / "vae.safetensors"
    convert_to_safetensors(files["vae"], vdst, dtype="fp16")  # Lightning dict, no pickled objects
    vae = load_vae(vdst, config=vo["config"], dtype="fp32", device="cpu")
    assert (vae.decode(vo["inputs"]["latents"]) - vo["outputs"]["decoded"]).abs().max() < 1e-3


def test_load_is_zero_copy_for_matching_dtype(files, mo):
    """mmap + assign: fp32 file into fp32 model on CPU shares the file's storage, no second copy."""
    src = TensorFile(files["light"])
    model = load_mmdit(src, config=mo["config"], dtype="fp32", device="cpu")
    key = "model.model.joint_blocks.0.latent_block.attn.qkv.weight"
    assert model.joint_blocks[0].latent_block.attn.qkv.weight.data_ptr() == src.get(key).data_ptr()


# ---- refusals with clear errors ----------------------------------------------------------


def _write(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def test_missing_key_is_named(tmp_path, mo):
    sd = dict(mo["state_dict"])
    del sd["model.model.fused_blocks.0.attn.qkv.weight"]
    with pytest.raises(CheckpointError, match=r"missing 1: fused_blocks\.0\.attn\.qkv\.weight"):
        load_mmdit(_write(tmp_path / "m.ckpt", sd), config=mo["config"], device="cpu")


def test_wrong_shape_is_named(tmp_path, mo):
    sd = dict(mo["state_dict"])
    sd["model.model.final_layer.conv.weight"] = torch.zeros(64, 64, 3)
    with pytest.raises(CheckpointError, match=r"wrong shape 1: final_layer\.conv\.weight \(file \(64, 64, 3\), "
                                              r"model \(64, 64, 7\)\)"):
        load_mmdit(_write(tmp_path / "m.ckpt", sd), config=mo["config"], device="cpu")


def test_unexpected_key_is_named(tmp_path, mo):
    sd = dict(mo["state_dict"], **{"model.model.extra_head.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"unexpected 1: extra_head\.weight"):
        load_mmdit(_write(tmp_path / "m.ckpt", sd), config=mo["config"], device="cpu")


def test_config_mismatch_lists_first_few(tmp_path, mo):
    cfg = dict(mo["config"], depth=4, fused_depth=2)  # file has one fused block fewer
    with pytest.raises(CheckpointError) as e:
        load_mmdit(mo["state_dict"], config=cfg, device="cpu")
    assert "missing 11" in str(e.value) and "more)" in str(e.value)


def test_wrong_model_file(files):
    with pytest.raises(CheckpointError, match="no MM-DiT weights"):
        load_mmdit(files["vae"], device="cpu")


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_vae(junk, device="cpu")
    with pytest.raises(CheckpointError, match="not found"):
        load_vae(tmp_path / "nope.ckpt", device="cpu")



def _touch(path: str) -> str:
    """Runs only if a file is unpickled with full trust."""
    Path(path).write_text("executed")
    return "callback"


class Payload:
    """An arbitrary object, like Lightning callbacks / hyper-parameter namespaces in a .ckpt."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_touch, (str(self.marker),))


def test_pickle_payload_is_refused(tmp_path, vo):
    marker = tmp_path / "marker"
    path = _write(tmp_path / "vae.ckpt", {"state_dict": dict(vo["state_dict"]), "callbacks": Payload(marker)})
    with pytest.raises(CheckpointError, match="foleyloop convert --trust-pickle") as e:
        load_vae(path, config=vo["config"], device="cpu")
    assert "weights_only" in str(e.value)
    with pytest.raises(CheckpointError, match="trust-pickle"):
        convert_to_safetensors(path, tmp_path / "vae.safetensors")
    assert not marker.exists()  # nothing from the file ran

    # the deliberate opt-in path: unpickle once, keep tensors only
    with pytest.warns(UserWarning, match="trust-pickle"):
        info = convert_to_safetensors(path, tmp_path / "vae.safetensors", trust_pickle=True)
    assert marker.exists() and info["tensors"] == len(vo["state_dict"])
    vae = load_vae(tmp_path / "vae.safetensors", config=vo["config"], device="cpu")
    assert (vae.decode(vo["inputs"]["latents"]) - vo["outputs"]["decoded"]).abs().max() < VAE_ATOL


def test_convert_drops_training_state(tmp_path, vo):
    sd = dict(vo["state_dict"], **{"discriminator.w": torch.zeros(4), "autoencoder_ema.x": torch.ones(2)})
    info = convert_to_safetensors(_write(tmp_path / "v.ckpt", {"state_dict": sd}), tmp_path / "v.safetensors")
    assert info["dropped"] == 2 and info["tensors"] == len(vo["state_dict"])


# ---- dtypes --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,tol", [("fp16", 0.02), ("bf16", 0.1)])  # measured: 0.004 / 0.03
def test_reduced_precision_loads(files, mo, vo, dtype, tol):
    want = resolve_dtype(dtype, torch.device("cpu"))
    m = load_thinksound(files["light"], files["vae"], config=mo["config"], vae_config=vo["config"],
                        dtype=dtype, device="cpu")
    assert {p.dtype for p in m.mmdit.parameters()} == {want} and {p.dtype for p in m.vae.parameters()} == {want}
    assert m.mmdit.latent_rope.dtype == torch.float32 and m.mmdit.t_embed.freqs.dtype == torch.float32
    y = _forward(m.mmdit, mo["inputs"], 5.0)
    ref = mo["outputs"]["forward_cfg5"]
    assert y.dtype == torch.float32 and torch.isfinite(y).all()  # output keeps the input latent's dtype
    assert (y - ref).abs().max() / ref.abs().max() < tol
    with torch.no_grad():
        audio = m.vae.decode(vo["inputs"]["latents"]).float()
    dec = vo["outputs"]["decoded"]
    assert torch.isfinite(audio).all() and (audio - dec).abs().max() / dec.abs().max() < tol


def test_resolve_dtype():
    cpu = torch.device("cpu")
    assert resolve_dtype(None, cpu) == torch.float32
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16 and resolve_dtype(torch.float16, cpu) == torch.float16
    with pytest.raises(ValueError):
        resolve_dtype("int8", cpu)


# ---- dtype "auto" ----------------------------------------------------------------------------


@pytest.mark.parametrize("flags, want", [
    ("fpu sse avx2 avx512f avx512_bf16", torch.bfloat16),
    ("fpu sse avx2 amx_bf16 amx_tile", torch.bfloat16),
    ("fpu sse avx2 avx512f", torch.float32),
])
def test_resolve_auto_dtype_reads_cpu_flags(tmp_path, flags, want):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    dtype, why = resolve_auto_dtype("cpu", cpuinfo=info)
    assert dtype == want
    assert f"bf16 units {'no' if want == torch.float32 else 'yes'}" in why


def test_resolve_auto_dtype_without_cpuinfo_is_fp32(tmp_path):
    dtype, why = resolve_auto_dtype("cpu", cpuinfo=tmp_path / "missing")
    assert dtype == torch.float32 and "bf16 units no" in why
    assert resolve_dtype("auto", torch.device("cpu")) == resolve_auto_dtype("cpu")[0]
