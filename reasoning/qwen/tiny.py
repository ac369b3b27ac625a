"""Tiny random Qwen2.5-VL / Qwen2.5-Omni saved like real checkpoints, for tests and the CPU benchmark.

It drives the real path (from_pretrained, chat template, qwen-vl-utils, generate) in seconds; what it writes
is noise. The tokenizer is trained here with the Qwen-VL special tokens, so nothing comes from the hub.
"""

from __future__ import annotations

import json
from pathlib import Path

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]  # ids 0..7, matching the config below
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% elif c['type'] == 'text' %}"
    "{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CORPUS = [
    '{"caption": "footsteps on gravel and a door slam", "semantic": "boots on gravel", "temporal": "starts at 1 s",',
    '"aesthetic": "crisp close-miked", "spatial": "left to right", "events": [{"id": "e1", "label": "door slam",',
    '"kind": "impact", "start_s": 1.25, "end_s": 1.35, "gain_db": 0.0, "pan": -0.5, "confidence": 0.8}],',
    '"negatives": ["speech", "music"]} The video shows frames at times 0.00, 0.50, 1.00 seconds.',
    "You are a foley sound designer. Reply with one JSON object only, no prose.",
]


OMNI_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_bos|>", "<|vision_eos|>",
                 "<|audio_bos|>", "<|audio_eos|>", "<|AUDIO|>", "<|IMAGE|>", "<|VIDEO|>"]  # ids 0..9
OMNI_TEMPLATE = CHAT_TEMPLATE \
    .replace("<|vision_start|><|video_pad|><|vision_end|>", "<|vision_bos|><|VIDEO|><|vision_eos|>") \
    .replace("<|vision_start|><|image_pad|><|vision_end|>", "<|vision_bos|><|IMAGE|><|vision_eos|>") \
    .replace("{% elif c['type'] == 'text' %}", "{% elif c['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
             "{% elif c['type'] == 'text' %}")
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                 rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]},
                 eos_token_id=2, pad_token_id=0)  # mrope_section sums to head_dim / 2
TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
                   spatial_merge_size=2, temporal_patch_size=2, window_size=56)


def _tokenizer(specials: list[str], **kwargs):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(CORPUS * 20, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    d = json.loads(raw.to_str())
    return Qwen2Tokenizer(vocab=d["model"]["vocab"], merges=[tuple(m) for m in d["model"]["merges"]],
                          unk_token="<|endoftext|>", eos_token="<|im_end|>", pad_token="<|endoftext|>", **kwargs)


def build_tiny_qwen(out_dir: str | Path, seed: int = 0) -> Path:
    import torch
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    out = Path(out_dir)
    tok = _tokenizer(SPECIALS, additional_special_tokens=SPECIALS[1:])
    proc = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(), tokenizer=tok,
                               video_processor=Qwen2VLVideoProcessor(), chat_template=CHAT_TEMPLATE)
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=512, num_hidden_layers=2, bos_token_id=0, **TINY_TEXT),
        vision_config=dict(depth=2, fullatt_block_indexes=[1], **TINY_VISION),
        image_token_id=6, video_token_id=7, vision_start_token_id=3, vision_end_token_id=4)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 0
    proc.save_pretrained(out)
    model.save_pretrained(out)
    return out


def build_tiny_omni(out_dir: str | Path, seed: int = 0) -> Path:
    """Thinker only (``enable_audio_output=False``): the judge needs text out, never speech."""
    import torch
    from transformers import (Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration, Qwen2_5OmniProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor, WhisperFeatureExtractor)

    out = Path(out_dir)
    tok = _tokenizer(OMNI_SPECIALS, extra_special_tokens={
        "image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
        "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
        "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"})
    proc = Qwen2_5OmniProcessor(image_processor=Qwen2VLImageProcessor(), video_processor=Qwen2VLVideoProcessor(),
                                feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tok,
                                chat_template=OMNI_TEMPLATE)
    cfg = Qwen2_5OmniConfig(enable_audio_output=False, thinker_config=dict(
        audio_config=dict(num_mel_bins=128, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32,
                          d_model=16, output_dim=64),
        vision_config=dict(depth=1, fullatt_block_indexes=[0], **TINY_VISION),
        text_config=dict(vocab_size=512, num_hidden_layers=1, **TINY_TEXT),
        audio_token_index=7, image_token_index=8, video_token_index=9, audio_start_token_id=5,
        audio_end_token_id=6, vision_start_token_id=3, vision_end_token_id=4, user_token_id=1))
    torch.manual_seed(seed)
    model = Qwen2_5OmniForConditionalGeneration(cfg).eval()
    model.thinker.generation_config.eos_token_id = 2
    model.thinker.generation_config.pad_token_id = 0
    proc.save_pretrained(out)
    model.save_pretrained(out)
    # from_pretrained insists on the speaker table although the talker is never used here
    torch.save({"Chelsie": {"cond": torch.zeros(1), "ref_mel": torch.zeros(1), "bos_token": 0}}, out / "spk_dict.pt")
    return out
