"""Picture-grounded semantics for the offline critic: what the render sounds like, named by its nearest reference
recordings, against what the picture shows (``picture``), never against the plan's own labels (issue 9).

- ``ReferenceIndex``: aiSFX embeddings of every reference recording the host offers (the renderer's sample bank,
  or the user's labelled recordings), each cached on disk, so rounds never re-embed the bank.
- ``specificity``: whether a heard label names a specific source (dog bark, engine, typing, footsteps) or generic
  foley (rustle, air, room tone, soft thud). A word list, so the verdict is readable and testable.
- ``fit``: how a heard label fits the picture. Generic fits and is neutral; a specific source the picture
  supports fits best; a specific source it does not support costs ("when in doubt, understate").
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from models.text_embed import word_stems
from reasoning.offline.aisfx_embed import FileReferences

log = logging.getLogger(__name__)

# What a generic foley label may say: kinds of sound that fit any picture, and plain descriptive words. A label
# whose content words are mostly outside this list names a source. Stemmed as labels are (``word_stems``).
_GENERIC_TEXT = """
rustle rustling movement move moving cloth fabric clothing brush brushing shuffle shuffling
air airy breeze wind blow blowing whoosh swoosh swish woosh sweep sweeping swing pass passes passing past by
thud thump impact hit hitting knock bump tap click tick blunt dull solid object something contact
room tone ambience ambient atmosphere background bed quiet silence faint light soft gentle low deep heavy
hum drone hiss noise rumble texture
short quick fast slow long small large big sharp sustained steady distant close dark bright hard
outdoor outdoors indoor indoors open space
"""
GENERIC_STEMS = frozenset(word_stems(_GENERIC_TEXT))
SPECIFIC_SHARE = 0.5      # this share of source words (or more) makes a label fully specific
# Neutral: what a generic sound that fits scores. Above a semantic threshold of 0.6 (a generic render does not
# make the loop refine), below a specific source the picture supports.
NEUTRAL = 0.7
SUPPORTED = 0.5           # support below this makes a confidently heard specific source a finding
HEARD = 0.5               # identification confidence (rescaled aiSFX cosine) a finding needs


def specificity(label: str) -> float:
    """0 (generic foley) .. 1 (names a specific source): the share of content words outside GENERIC_STEMS."""
    stems = word_stems(label)
    if not stems:
        return 0.0
    share = sum(s not in GENERIC_STEMS for s in stems) / len(stems)
    return float(min(1.0, share / SPECIFIC_SHARE))


def fit(spec: float, support: float) -> float:
    """How a heard label fits the picture: generic -> max(NEUTRAL, support), specific -> support, blended."""
    return float((1.0 - spec) * max(NEUTRAL, support) + spec * support)


Catalog = Sequence[tuple[str, "str | Path"]]


def catalog_from(references: Any) -> Callable[[], list[tuple[str, Path]]] | None:
    """A catalogue callable from what a host passes: ``{label: [files]}``, a list of (label, file), or a callable
    returning either."""
    if references is None:
        return None

    def flat(refs) -> list[tuple[str, Path]]:
        if isinstance(refs, dict):
            return [(str(label), Path(f)) for label, files in refs.items() for f in files]
        return [(str(label), Path(f)) for label, f in refs]

    if callable(references):
        return lambda: flat(references())
    return lambda: flat(references)


class ReferenceIndex:
    """Unit-norm aiSFX embeddings of labelled recordings; ``nearest`` names what a sound is like."""

    def __init__(self, embedder: Any, catalog: Iterable[tuple[str, "str | Path"]], cache_dir: str | Path | None = None):
        files = FileReferences(embedder, {}, cache_dir=cache_dir)  # its per-file disk cache
        labels, rows = [], []
        for label, path in catalog:
            try:
                emb = np.asarray(files.file_embedding(Path(path)), dtype=np.float32)
            except (OSError, ValueError, RuntimeError) as exc:
                log.warning("reference %s (%r) unreadable (%s): left out", path, label, exc)
                continue
            n = float(np.linalg.norm(emb))
            if n > 0:
                labels.append(label)
                rows.append(emb / n)
        self.labels = labels
        self.matrix = np.stack(rows) if rows else np.zeros((0, 1), np.float32)

    def __len__(self) -> int:
        return len(self.labels)

    def nearest(self, emb: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
        """The k most similar distinct labels as (label, cosine), best first."""
        if not self.labels:
            return []
        q = np.asarray(emb, dtype=np.float32)
        n = float(np.linalg.norm(q))
        sims = self.matrix @ (q / n if n > 0 else q)
        out: list[tuple[str, float]] = []
        for i in np.argsort(-sims, kind="stable"):
            if self.labels[i] not in (lab for lab, _ in out):
                out.append((self.labels[i], float(sims[i])))
                if len(out) == k:
                    break
        return out
