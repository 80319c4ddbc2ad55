"""Aspect accuracy of the embedded model on the bundled labelled set (issue 22).

    python benchmarks/aspect_accuracy.py --part evaluation --json benchmarks/results/aspect-accuracy-YYYY-MM-DD.json

Per language: accuracy over all cells (review × aspect), mention detection (mentioned or
``none``) and polarity on the aspects a review does mention, each with its 95 % Wilson
interval, against the majority baseline (``none`` everywhere). Aspect words and prompt
choices were made on ``--part selection`` only; the README's figures are ``--part evaluation``.
``--variants`` (selection only) compares the recipe's choices: calibration on or off and
``mention="model"``. Variants measured before the default was chosen (a question about the
aspect after the review, with or without the clause quoted) are in
benchmarks/results/aspect-accuracy-selection-variants-2026-12-06.txt.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import reviewkit  # noqa: E402
from reviewkit.aspect_prompts import ASPECTS  # noqa: E402
from reviewkit.evaluation import aspect_accuracy  # noqa: E402

NAMES = [a.name for a in ASPECTS]


def measure(engine, part: str, *, mention: str = "words", calibrate: bool = True) -> dict:
    """Figures per language for one recipe on one part of the labelled set."""
    data = reviewkit.aspect_reviews(part)
    out = reviewkit.analyze(
        data,
        text="text",
        engine=engine,
        aspects=True,
        mention=mention,
        calibrate_scores=calibrate,
        cache=False,
        progress=False,
    )
    figures = {}
    for language in ("ko", "en"):
        rows = (data["language"] == language).to_numpy()
        found = aspect_accuracy(out[rows], data[rows], NAMES)
        figures[language] = {
            name: {"value": acc.value, "interval": acc.interval, "n": acc.total, "text": str(acc)}
            for name, acc in found.items()
        }
    return figures


def show(title: str, figures: dict) -> None:
    print(title)
    for language, found in figures.items():
        for name, acc in found.items():
            print(f"  {language} {name:9s} {acc['text']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("selection", "evaluation"), default="selection")
    parser.add_argument("--variants", action="store_true", help="compare recipe choices (selection part only)")
    parser.add_argument(
        "--model",
        default=os.environ.get("REVIEWKIT_TEST_MODEL"),
        help="the model (default: $REVIEWKIT_TEST_MODEL, else what reviewkit.load() picks)",
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if args.variants and args.part != "selection":
        parser.error("--variants compares choices, which are made on the selection part only")
    engine = reviewkit.load(args.model)
    results = {
        "date": _dt.date.today().isoformat(),
        "part": args.part,
        "model": engine.model_id,
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "load_average": os.getloadavg()[0],
        "recipes": {},
    }
    recipes = {"words: the mentioning clause scored (the default)": {}}
    if args.variants:
        recipes.update(
            {
                "words: the mentioning clause scored, raw": {"calibrate": False},
                "model: three-way question after the review, clause quoted": {"mention": "model"},
            }
        )
    for title, options in recipes.items():
        figures = measure(engine, args.part, **options)
        show(f"{title} ({args.part} part)", figures)
        results["recipes"][title] = figures
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
