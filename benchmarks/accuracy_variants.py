"""Choose the embedded model's prompt recipe on the *selection* split, then report the
*evaluation* split for the baseline and the chosen recipe only (issue 13).

    python benchmarks/accuracy_variants.py --json benchmarks/results/accuracy-YYYY-MM-DD.json

For each prompt variant the raw label probabilities of every selection review are
computed once (one forward pass per review; label-word ensembles are free), and the
decision rules are applied to them: the raw argmax, contextual calibration with the
default content-free inputs, with per-language content-free inputs, and a threshold
fitted on the selection part. Prompt ensembles average two variants' calibrated
probabilities (one pass per prompt: their reviews/s is reported). The evaluation part is
scored only after the choice, and only for the baseline and the chosen recipe.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
DATA = {
    "ko": REPO / "tests" / "data" / "nsmc_sample_ko.csv",
    "en": REPO / "tests" / "data" / "sentence_polarity_sample_en.csv",
}
KO_CONTENT_FREE = ("없음", "", "[MASK]", "...")

KO_RESTAURANT = (
    ("양도 많고 맛있어요. 사장님도 친절하세요!", "positive"),
    ("웨이팅 한 시간 했는데 음식이 다 식어서 나왔어요", "negative"),
    ("가격 대비 최고입니다. 재방문 의사 있어요", "positive"),
    ("너무 짜고 비싸요. 다시는 안 갑니다", "negative"),
    ("분위기 좋고 서비스도 빨라서 만족했어요", "positive"),
    ("직원이 불친절하고 위생 상태가 별로네요", "negative"),
    ("인생 맛집 등극! 강추합니다 ㅎㅎ", "positive"),
    ("기대했는데 실망... 돈 아까워요", "negative"),
)


def variants() -> dict[str, dict[str, object]]:
    """Prompt variants per language route (``ko``/``en``); the first is today's recipe."""
    from reviewkit.prompts import ENGLISH_EXAMPLES, KOREAN_EXAMPLES, PromptTemplate

    en_words = {"positive": ("positive", "good", "great"), "negative": ("negative", "bad", "awful")}
    ko_words = {"positive": ("positive", "좋다", "최고", "추천"), "negative": ("negative", "부정", "최악")}
    ko_instruction = "아래 리뷰마다 감정이 표시되어 있습니다: {labels}. 리뷰는 한국어 또는 영어입니다."
    mixed_ko = tuple(x for ab in zip(KOREAN_EXAMPLES, KO_RESTAURANT) for x in ab)
    return {
        "ko": {
            "baseline (today)": PromptTemplate(examples=KOREAN_EXAMPLES),
            "KO+EN label words": PromptTemplate(examples=KOREAN_EXAMPLES, label_words=ko_words),
            "shown 좋다/최악": PromptTemplate(
                examples=KOREAN_EXAMPLES, label_words={"positive": ("좋다",), "negative": ("최악",)}
            ),
            "shown 추천/부정 + words": PromptTemplate(
                examples=KOREAN_EXAMPLES,
                label_words={"positive": ("추천", "좋다", "positive"), "negative": ("부정", "최악", "negative")},
            ),
            "instruction in Korean": PromptTemplate(examples=KOREAN_EXAMPLES, instruction=ko_instruction),
            "restaurant examples (8)": PromptTemplate(examples=KO_RESTAURANT),
            "16 examples (8 + 8 restaurant)": PromptTemplate(examples=mixed_ko),
            "reversed example order": PromptTemplate(examples=tuple(reversed(KOREAN_EXAMPLES))),
            "first 4 examples": PromptTemplate(examples=KOREAN_EXAMPLES[:4]),
        },
        "en": {
            "baseline (today)": PromptTemplate(examples=ENGLISH_EXAMPLES),
            "label words x3": PromptTemplate(examples=ENGLISH_EXAMPLES, label_words=en_words),
            "shown good/bad": PromptTemplate(
                examples=ENGLISH_EXAMPLES, label_words={"positive": ("good",), "negative": ("bad",)}
            ),
            "shown good/bad + words": PromptTemplate(
                examples=ENGLISH_EXAMPLES,
                label_words={"positive": ("good", "great", "positive"), "negative": ("bad", "awful", "negative")},
            ),
            "reversed example order": PromptTemplate(examples=tuple(reversed(ENGLISH_EXAMPLES))),
            "first 4 examples": PromptTemplate(examples=ENGLISH_EXAMPLES[:4]),
        },
    }


def raw_probs(engine, template, texts: list[str], lang: str) -> tuple[dict[str, np.ndarray], float]:
    """Probabilities of every decision rule's input, plus reviews/s of the forward pass."""
    import reviewkit
    from reviewkit import scoring

    started = time.perf_counter()
    scored = reviewkit.score_texts(texts, prompt=template, calibrate_scores=False, cache=False, progress=False)
    seconds = time.perf_counter() - started
    built = template.build(engine.tokenizer, engine.prefix_block_size)
    raw = scored.probs
    out = {"raw": raw, "cc": scoring.calibrate(raw, scoring.content_free_bias(engine, built))}
    if lang == "ko":
        out["cc-ko-inputs"] = scoring.calibrate(raw, scoring.content_free_bias(engine, built, KO_CONTENT_FREE))
    return out, len(texts) / seconds


def accuracy_of(probs: np.ndarray, gold: pd.Series, threshold: float = 0.5) -> float:
    predicted = np.where(probs[:, 0] >= threshold, "positive", "negative")  # column 0 = positive
    return float((predicted == gold.to_numpy()).mean())


def fit_threshold(probs: np.ndarray, gold: pd.Series) -> float:
    """The P(positive) threshold with the best selection accuracy (a fitted per-language bias)."""
    candidates = np.unique(np.concatenate([[0.5], probs[:, 0]]))
    return float(max(candidates, key=lambda t: (accuracy_of(probs, gold, t), -abs(t - 0.5))))


def main(argv=None) -> int:
    import reviewkit
    from reviewkit import evaluation

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    engine = reviewkit.load("embedded")
    report: dict[str, object] = {
        "date": _dt.date.today().isoformat(),
        "command": " ".join(sys.argv),
        "selection": [],
        "evaluation": {},
    }
    for lang, path in DATA.items():
        selection, evaluation_part = evaluation.split(pd.read_csv(path))
        rows, calibrated = [], {}
        for name, template in variants()[lang].items():
            try:
                probs, rate = raw_probs(engine, template, selection["text"].tolist(), lang)
            except ValueError as exc:
                rows.append({"language": lang, "variant": name, "error": str(exc)})
                continue
            calibrated[name] = probs["cc"]
            for rule, p in probs.items():
                rows.append(
                    {
                        "language": lang,
                        "variant": name,
                        "rule": rule,
                        "reviews_per_s": rate,
                        "accuracy": accuracy_of(p, selection["label"]),
                    }
                )
            threshold = fit_threshold(probs["cc"], selection["label"])
            rows.append(
                {
                    "language": lang,
                    "variant": name,
                    "rule": f"cc + fitted threshold {threshold:.3f}",
                    "reviews_per_s": rate,
                    "accuracy": accuracy_of(probs["cc"], selection["label"], threshold),
                    "threshold": threshold,
                }
            )
            print(rows[-4:] if lang == "ko" else rows[-3:], flush=True)
        best_two = sorted(calibrated, key=lambda n: -accuracy_of(calibrated[n], selection["label"]))[:2]
        ensemble = (calibrated[best_two[0]] + calibrated[best_two[1]]) / 2
        rows.append(
            {
                "language": lang,
                "variant": f"ensemble of {best_two[0]!r} + {best_two[1]!r}",
                "rule": "cc",
                "accuracy": accuracy_of(ensemble, selection["label"]),
                "reviews_per_s": None,
            }
        )
        report["selection"] += rows
        table = pd.DataFrame([r for r in rows if "accuracy" in r])
        print(table.to_string(float_format=lambda x: f"{x:.3f}"), flush=True)
        # Today's recipe is kept unless a variant beats it on the selection part by more
        # than one review in a hundred (smaller gains are within noise here).
        baseline = table[(table.variant == "baseline (today)") & (table.rule == "cc")].accuracy.iloc[0]
        best = table.loc[table.accuracy.idxmax()]
        chosen = (
            best
            if best.accuracy > baseline + 0.01
            else table[(table.variant == "baseline (today)") & (table.rule == "cc")].iloc[0]
        )
        print(
            f"{lang}: chosen on the selection split: {chosen.variant!r} / {chosen.rule!r} "
            f"({chosen.accuracy:.3f} vs baseline {baseline:.3f})",
            flush=True,
        )
        for label, pick in (("baseline", ("baseline (today)", "cc")), ("chosen", (chosen.variant, chosen.rule))):
            if pick[0] not in variants()[lang]:
                continue  # an ensemble: evaluated below
            probs, rate = raw_probs(engine, variants()[lang][pick[0]], evaluation_part["text"].tolist(), lang)
            rule = pick[1]
            threshold = float(rule.rsplit(" ", 1)[1]) if rule.startswith("cc + fitted") else 0.5
            p = probs["cc" if rule.startswith("cc + fitted") else rule]
            predicted = np.where(p[:, 0] >= threshold, "positive", "negative")
            acc = evaluation.accuracy(predicted, evaluation_part["label"])
            report["evaluation"][f"{lang} {label}"] = {
                "variant": pick[0],
                "rule": rule,
                "accuracy": acc.value,
                "interval": acc.interval,
                "n": acc.total,
                "reviews_per_s": rate,
            }
            print(f"evaluation {lang} {label} ({pick[0]} / {rule}): {acc}, {rate:.1f} reviews/s", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=float, ensure_ascii=False))
    reviewkit.unload()
    return 0


if __name__ == "__main__":
    sys.exit(main())
