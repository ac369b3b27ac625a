"""Tiny random evaluation models saved the way the real ones ship, for the eval runner, the verifiers and the bench.

CLAP and Audiobox Aesthetics builders live in tests/test_eval_models.py (imported from there as fixtures); this adds
a tiny full Synchformer (every branch at width 16) written as ``synchformer_state_dict.pth`` + sidecar config.
"""

from __future__ import annotations

from pathlib import Path


def tiny_synchformer_config():
    from models.synchformer import AudioConfig, FullConfig, FusionConfig, VisualConfig

    return FullConfig(visual=VisualConfig(dim=16, depth=1, heads=2, mlp_ratio=1.0, agg_heads=2, agg_ff=32),
                      audio=AudioConfig(dim=16, depth=1, heads=2, intermediate=32, agg_heads=2, agg_ff=32),
                      fusion=FusionConfig(dim=16, depth=1, heads=2))


def write_tiny_synchformer(folder: Path, seed: int = 0) -> Path:
    """A random tiny full Synchformer in ``folder`` (checkpoint + synchformer_config.json); returns the folder."""
    import torch

    from models.desync import write_checkpoint
    from models.synchformer import Synchformer

    cfg = tiny_synchformer_config()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Synchformer(cfg)
        with torch.no_grad():  # the reference initialises tokens to zero; spread them like trained weights
            for name, p in model.named_parameters():
                if p.ndim <= 3 and ("token" in name or "pos" in name or name.endswith("_tok")):
                    p.normal_(0.0, 0.5)
    write_checkpoint(folder, model.state_dict(), cfg)
    return Path(folder)


CAPTIONS = ["a dog barks twice", "footsteps on gravel", "rain on a tin roof", "a door slams shut", "birds sing"]


def write_tiny_clap(folder: Path) -> Path:
    """A tiny ClapModel + ClapProcessor (byte-level BPE RoBERTa tokenizer trained here), saved with save_pretrained."""
    import json

    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    folder = Path(folder)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CAPTIONS * 20, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    vocab = bpe.get_vocab()
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
              for m in json.loads(bpe._tokenizer.to_str())["model"]["merges"]]
    tok = RobertaTokenizer(vocab=vocab, merges=merges)
    fe = ClapFeatureExtractor(feature_size=64, sampling_rate=48000, max_length_s=2, truncation="rand_trunc",
                              padding="repeatpad")
    cfg = ClapConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64, pad_token_id=1, bos_token_id=0,
                         eos_token_id=2),
        audio_config=dict(spec_size=256, num_mel_bins=64, patch_embeds_hidden_size=8, depths=[1, 1],
                          num_attention_heads=[1, 2], hidden_size=16, window_size=4),
        projection_dim=8)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ClapModel(cfg).eval().save_pretrained(folder)
    ClapProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(folder)
    return folder


def tiny_aes_patch():
    """The Audiobox encoder size is a module constant: this MonkeyPatch makes it tiny (for saving and loading);
    call ``.undo()`` when done."""
    import pytest
    from audiobox_aesthetics.model import aes
    from audiobox_aesthetics.model.wavlm import WavLMConfig

    cfg = dict(aes.DEFAULT_AUDIO_CFG.__dict__)
    cfg.update(encoder_layers=2, encoder_embed_dim=16, encoder_ffn_embed_dim=32, encoder_attention_heads=2,
               conv_feature_layers="[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2", conv_pos=16, conv_pos_groups=4,
               num_buckets=32, max_distance=64)
    mp = pytest.MonkeyPatch()
    mp.setattr(aes, "DEFAULT_AUDIO_CFG", WavLMConfig(cfg))
    return mp


def write_tiny_aesthetics(folder: Path) -> Path:
    """A tiny AesMultiOutput with a target transform, saved with save_pretrained (needs ``tiny_aes_patch`` active)."""
    import torch
    from audiobox_aesthetics.model import aes

    with torch.random.fork_rng():
        torch.manual_seed(0)
        tt = {ax: {"mean": 5.0 + i, "std": 1.5} for i, ax in enumerate(["CE", "CU", "PC", "PQ"])}
        aes.AesMultiOutput(nth_layer=3, target_transform=tt).eval().save_pretrained(folder)
    return Path(folder)
