"""T5-v1.1 encoder states of the CoT text (spec thinksound.md §1.3, §4): exactly 77 tokens, the rest is lost.

The token count comes from the real tokenizer, so the studio and the refiner can show and respect the true budget
instead of the word-count estimate in ``contract.plan``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from contract.errors import BackendError

from models.hub import fingerprint_dir, resolve_model

DEFAULT_ID = "google/t5-v1_1-xl"
TEXT_TOKENS = 77


def _load_tokenizer(auto, path: Path, model_id: str):
    """google/t5-v1_1-* ship only ``spiece.model``; turning it into a fast tokenizer needs ``sentencepiece``."""
    try:
        return auto.from_pretrained(path)
    except Exception as exc:  # transformers raises ImportError/ValueError/OSError/... depending on what is missing
        hint = (" (its spiece.model needs the `sentencepiece` package, or save a tokenizer.json next to it)"
                if (path / "spiece.model").exists() and not (path / "tokenizer.json").exists() else "")
        raise BackendError(f"T5 tokenizer of {model_id} could not be loaded from {path}{hint}: "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc


class T5Features:
    """HF T5EncoderModel + tokenizer; ``encode`` gives (77, d_model) with the padded positions kept."""

    def __init__(self, model_id_or_path: str | Path = DEFAULT_ID, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = torch.float32, *, allow_download: bool = False) -> None:
        from transformers import AutoTokenizer, T5EncoderModel

        from generator.thinksound.checkpoint import resolve_device, resolve_dtype

        self.model_id = str(model_id_or_path)
        self.path = resolve_model(model_id_or_path, "t5", allow_download=allow_download)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.tokenizer = _load_tokenizer(AutoTokenizer, self.path, self.model_id)
        self.model = T5EncoderModel.from_pretrained(self.path, dtype=self.dtype).to(self.device).eval()
        self.fingerprint = f"{self.model_id}@{fingerprint_dir(self.path)}"

    @property
    def width(self) -> int:
        return int(self.model.config.d_model)

    def cache_id(self) -> dict:
        return {"model": self.fingerprint, "dtype": str(self.dtype)}

    def token_ids(self, text: str) -> list[int]:
        """All ids the tokenizer produces, ``</s>`` included, before truncation."""
        return list(self.tokenizer(text, truncation=False)["input_ids"])

    def token_budget(self, text: str) -> dict:
        """Same fields as ``Plan.cot_budget_report`` (exact here), plus ``kept``: the text the model really sees."""
        ids = self.token_ids(text)
        kept = self.tokenizer.decode(ids[:TEXT_TOKENS], skip_special_tokens=True)
        return {"tokens": len(ids), "budget": TEXT_TOKENS, "fits": len(ids) <= TEXT_TOKENS,
                "overflow": max(0, len(ids) - TEXT_TOKENS), "kept": kept}

    @torch.inference_mode()
    def encode(self, text: str) -> torch.Tensor:
        """CoT → last_hidden_state (77, d_model) float32; truncation keeps ``</s>`` as the 77th token."""
        tok = self.tokenizer([text], max_length=TEXT_TOKENS, padding="max_length", truncation=True,
                             return_tensors="pt")
        out = self.model(input_ids=tok["input_ids"].to(self.device),
                         attention_mask=tok["attention_mask"].to(self.device))
        return out.last_hidden_state[0].float().cpu()
