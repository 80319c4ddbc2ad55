"""The reviewkit command line on files, in this process (it reuses the session engine)."""

import pandas as pd
import pytest

from reviewkit.cli import main


def test_analyze_csv_to_parquet_keeps_rows(engine, tmp_path, capsys):
    src = tmp_path / "reviews.csv"
    pd.DataFrame({"review": ["Fantastic dumplings!", None, "Rude staff, cold soup."],
                  "stars": [5, 3, 1]}).to_csv(src, index=False)
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
