"""Tiny random stand-ins for ThinkSound's feature models, saved like the real ones, built fully offline.

Widths that the MM-DiT hard-codes are kept (MetaCLIP text 1024 / image projection 1024, T5 2048, Synchformer 768
by default); depth, heads, MLPs and vocabularies are cut so each model has a few million parameters and a CPU
forward takes well under a second. Tokenizers are trained here with ``tokenizers`` on a small corpus and wrapped in
the transformers classes the real checkpoints use, so ``AutoProcessor``/``AutoTokenizer`` load them as usual.

    build_tiny_metaclip(dir) -> Path     # CLIPModel + CLIPProcessor (CLIPTokenizer, CLIPImageProcessor 224)
    build_tiny_t5(dir) -> Path           # T5EncoderModel + T5Tokenizer (Unigram, </s> eos, <pad> pad)
    build_tiny_synchformer(dir) -> Path  # synchformer_state_dict.pth (all branches); load with TINY_SYNC_VISUAL
    install_in_hf_cache(dir, repo_id, cache) -> Path   # the folder as an HF-cache snapshot of repo_id
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import torch

SEED = 1234

_SOURCES = ["footsteps on gravel", "a dog barking", "rain on a tin roof", "a door creaking open", "wind in the trees",
            "a car engine idling", "waves on the shore", "birds chirping", "a glass shattering", "horse hooves on dirt",
            "a crackling fire", "keyboard typing", "a train passing", "thunder rumbling", "water dripping"]
_MODS = ["Start with soft", "Layer in distant", "Add occasional", "Keep subtle", "Then bring up close-miked",
         "End with fading"]
_EXTRA = ["Keep human voices minimal.", "Avoid music and hiss.", "The sound moves from left to right at 3 s.",
          "Crisp, dry, light outdoor reverb; 0.5 s later a loud impact!", "Quiet room tone underneath it all."]


def corpus() -> list[str]:
    """A few hundred short sound-design sentences (the register of ThinkSound CoTs and captions)."""
    lines = [f"{m} {s}, then {t}." for (m, s), t in zip(itertools.product(_MODS, _SOURCES),
                                                        itertools.cycle(reversed(_SOURCES)))]
    return lines + _EXTRA + [s.capitalize() for s in _SOURCES]


def _clip_tokenizer():
    """A CLIP BPE (lower-case, ``</w>`` word ends, byte-level) trained on the corpus, as a CLIPTokenizer."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    probe = CLIPTokenizer()  # reuse the real class's normaliser and pre-tokeniser for training
    raw = Tokenizer(models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix=""))
    raw.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    raw.pre_tokenizer = probe.backend_tokenizer.pre_tokenizer
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    raw.train_from_iterator(corpus(), trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<|startoftext|>", "<|endoftext|>"], initial_alphabet=alphabet,
        end_of_word_suffix="</w>", show_progress=False))
    model = json.loads(raw.to_str())["model"]
    vocab = dict(model["vocab"])
    for ch in sorted(alphabet):  # like the real vocab: every byte also as a word end, so nothing maps to unk
        vocab.setdefault(ch + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[tuple(m) for m in model["merges"]])


def build_tiny_metaclip(directory: str | Path) -> Path:
    """CLIPModel: text 1024 wide (1 layer), vision 32 wide at 224²/patch 32, projection 1024. ≈6 M params."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    out = Path(directory)
    tok = _clip_tokenizer()
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=1024, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=224, patch_size=32, hidden_act="quick_gelu"),
        projection_dim=1024)
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = CLIPModel(cfg).eval()
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 224},
                                                                 crop_size={"height": 224, "width": 224}),
                              tokenizer=tok)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _t5_tokenizer():
    """A Unigram model (▁ word starts, ``<pad>``=0, ``</s>``=1, ``<unk>``=2, like T5) as a T5Tokenizer."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import T5Tokenizer

    raw = Tokenizer(models.Unigram())
    raw.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    raw.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    raw.train_from_iterator(corpus(), trainers.UnigramTrainer(
        vocab_size=400, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False))
    vocab = [tuple(v) for v in json.loads(raw.to_str())["model"]["vocab"]]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def build_tiny_t5(directory: str | Path) -> Path:
    """T5EncoderModel (v1.1 gated-GELU): d_model 2048, 1 layer, 2 heads of 8, d_ff 64. ≈1 M params."""
    from transformers import T5Config, T5EncoderModel

    out = Path(directory)
    tok = _t5_tokenizer()
    cfg = T5Config(vocab_size=len(tok), d_model=2048, d_kv=8, d_ff=64, num_layers=1, num_heads=2,
                   feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=tok.pad_token_id,
                   eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = T5EncoderModel(cfg).eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def tiny_sync_config(dim: int = 768):
    """Synchformer config for tests: real 224² / 16-frame windows, one block, small MLPs."""
    from models.synchformer import AudioConfig, FullConfig, FusionConfig, VisualConfig

    visual = VisualConfig(dim=dim, depth=1, heads=2, mlp_ratio=0.25, agg_heads=2, agg_ff=64)
    return FullConfig(visual=visual, audio=AudioConfig(dim=32, depth=1, heads=2, intermediate=64),
                      fusion=FusionConfig(dim=32, depth=1, heads=2))


TINY_SYNC_VISUAL = tiny_sync_config().visual


def build_tiny_synchformer(directory: str | Path, dim: int = 768) -> Path:
    """``synchformer_state_dict.pth`` with every branch (the real file's layout); load with ``tiny_sync_config``.

    ``dim`` 768 matches ThinkSound's sync width (≈9 M params, ≈1.2 s per 16-frame window on 2 CPU cores);
    use 64 where only shapes matter (≈0.25 s per window).
    """
    from models.synchformer import Synchformer

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = Synchformer(tiny_sync_config(dim))
    path = out / "synchformer_state_dict.pth"
    torch.save(model.state_dict(), path)
    return path


def install_in_hf_cache(src: str | Path, repo_id: str, cache_dir: str | Path,
                        commit: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """Copy a model folder (or one file) into ``cache_dir`` as the ``main`` snapshot of ``repo_id``."""
    src, cache_dir = Path(src), Path(cache_dir)
    repo = cache_dir / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, snap, dirs_exist_ok=True)
    else:
        shutil.copy2(src, snap / src.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap
