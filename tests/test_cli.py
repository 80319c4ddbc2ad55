"""The reviewkit command line on files, in this process (it reuses the session engine)."""

import pandas as pd
import pytest

import reviewkit
from reviewkit.cli import main


def test_analyze_csv_to_parquet_keeps_rows(engine, tmp_path, capsys):
    src = tmp_path / "reviews.csv"
    pd.DataFrame({"review": ["Fantastic dumplings!", None, "Rude staff, cold soup."], "stars": [5, 3, 1]}).to_csv(
        src, index=False
    )
    dst = tmp_path / "out" / "scored.parquet"
    assert main(["analyze", str(src), "-o", str(dst), "--text", "review", "--no-cache", "-q"]) == 0
    out = pd.read_parquet(dst)
    assert out["stars"].tolist() == [5, 3, 1]
    assert out["sentiment"].tolist()[0] == "positive" and pd.isna(out["sentiment"].tolist()[1])
    assert "wrote 3 rows" in capsys.readouterr().out


def test_default_output_name_and_jsonl(engine, tmp_path):
    src = tmp_path / "r.jsonl"
    pd.DataFrame({"content": ["좋아요", "별로예요"]}).to_json(src, orient="records", lines=True)
    assert main(["analyze", str(src), "-q"]) == 0
    assert len(pd.read_json(tmp_path / "r.sentiment.jsonl", lines=True)) == 2


def test_bad_files_and_columns_exit_with_a_message(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        main(["analyze", str(tmp_path / "missing.csv")])
    bad = tmp_path / "x.txt"
    bad.write_text("hi")
    with pytest.raises(SystemExit, match="cannot read"):
        main(["analyze", str(bad)])
    src = tmp_path / "r.csv"
    pd.DataFrame({"body": ["x"]}).to_csv(src, index=False)
    with pytest.raises(SystemExit, match=r"column 'content' not in .*\['body'\]"):
        main(["analyze", str(src)])


def test_demo_prints_reviews_summary_and_figures(engine, capsys):
    assert main(["demo", "-q", "--no-cache"]) == 0
    out = capsys.readouterr().out
    for needle in ("Seoul Kitchen", "Per restaurant:", "positive_ratio", "reviews/s", "per 1,000 reviews"):
        assert needle in out
    main(["demo", "-q"])
    assert main(["demo", "-q"]) == 0  # the second run is answered by the result cache
    out = capsys.readouterr().out
    assert "all 48 results came from the result cache" in out and "48 cached, 0 computed" in out


def test_aspects_flag_adds_the_aspect_columns(engine, tmp_path, capsys):
    src = tmp_path / "mixed.csv"
    texts = ["맛은 정말 좋은데 직원이 너무 불친절해요", None, "the food was delicious but the waiter was rude"]
    pd.DataFrame({"content": texts, "stars": [3, 1, 2]}).to_csv(src, index=False)
    dst = tmp_path / "some.parquet"
    assert main(["analyze", str(src), "-o", str(dst), "--aspects", "taste,service", "-q"]) == 0
    out = pd.read_parquet(dst)
    assert list(out.columns) == [
        "content",
        "stars",
        "sentiment",
        "sentiment_score",
        "aspect_taste",
        "aspect_taste_score",
        "aspect_service",
        "aspect_service_score",
    ]
    assert out["stars"].tolist() == [3, 1, 2]
    expected = reviewkit.analyze(pd.DataFrame({"content": texts}), aspects=True, progress=False)  # from the cache
    for name in ("taste", "service"):
        assert out[f"aspect_{name}"].tolist()[::2] == expected[f"aspect_{name}"].tolist()[::2]
        assert set(out[f"aspect_{name}"].tolist()[::2]) <= {"positive", "negative"}  # both reviews mention both
        assert pd.isna(out[f"aspect_{name}"][1])
    assert "wrote 3 rows" in capsys.readouterr().out
    dst = tmp_path / "all.csv"  # the flag alone: all five
    assert main(["analyze", str(src), "-o", str(dst), "-q", "--aspects"]) == 0
    out = pd.read_csv(dst)
    assert [c for c in out.columns if c.startswith("aspect_") and not c.endswith("_score")] == [
        "aspect_taste",
        "aspect_service",
        "aspect_price",
        "aspect_portion",
        "aspect_wait",
    ]
    assert out["aspect_taste"].tolist()[::2] == expected["aspect_taste"].tolist()[::2]
    assert out["aspect_price"].tolist()[::2] == ["none", "none"] and pd.isna(out["aspect_price"][1])


@pytest.mark.parametrize(
    "argv, problem",
    [
        (["--aspects", "taste,smell"], "unknown aspect 'smell': choose from taste,service,price,portion,wait"),
        (["--aspects", "wait,wait"], "an aspect is given twice"),
        (["--text", "aspect_taste", "--aspects", "taste"], "would overwrite the column 'aspect_taste'"),
    ],
)
def test_a_bad_aspect_exits_2_with_a_one_line_error_before_loading(tmp_path, capsys, argv, problem):
    src = tmp_path / "r.csv"
    pd.DataFrame({"content": ["x"], "aspect_taste": ["y"]}).to_csv(src, index=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", str(src), *argv])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("reviewkit analyze: error: argument --aspects: ") and problem in error, error
    assert not (tmp_path / "r.sentiment.csv").exists()
