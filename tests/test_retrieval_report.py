import json

import pytest

TOPICS = [
    "Paris",
    "Berlin",
    "Rome",
    "Madrid",
    "Vienna",
    "Lisbon",
    "Prague",
    "Dublin",
    "Oslo",
    "Athens",
    "Warsaw",
    "Bern",
]


@pytest.mark.integration
def test_eval_retrieval_trains_the_reranker_outside_dev_and_test_and_writes_json(tmp_path, monkeypatch, request):
    monkeypatch.setenv("DSPYC_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    from dspyc.settings import get_settings

    get_settings.cache_clear()
    request.addfinalizer(get_settings.cache_clear)  # later tests must not see this test's artifact folder
    corpus = [
        {"title": t, "text": f"{t} is a European capital. The river of {t} is called the {t} river."} for t in TOPICS
    ]
    questions = [
        {
            "id": f"q{i}",
            "question": f"Which river flows through {t}?",
            "answer": f"the {t} river",
            "supporting_titles": [t],
        }
        for i, t in enumerate(TOPICS * 2)
    ]
    data = tmp_path / "caps"
    data.mkdir()
    (data / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (data / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus))
    from dspyc.retrieval_report import report

    [point] = report("rag", data=str(data), split="dev")  # no --add-corpus: one point, the program's corpus
    scores = point.scores
    assert list(scores) == ["bm25", "dense", "hybrid", "hybrid+rerank"]
    assert all(0.0 <= v <= 1.0 for row in scores.values() for v in row.values())
    saved = json.loads((tmp_path / "artifacts" / "rag" / "report" / "retrieval-caps-dev.json").read_text())
    [saved_point] = saved["points"]
    assert {k: v for k, v in saved_point.items() if k != "scale"} == {
        "corpus": "caps",
        "passages": len(TOPICS),
        "titles": len(TOPICS),
        "scores": scores,
        "program": {},  # the program itself runs only with --with-program
    }
    assert saved_point["scale"]["hybrid_p50_ms"] > 0 and "index_s" not in saved_point["scale"]  # built before
    # 24 questions split 8/8/8 (train is capped at a third, dev at half the rest): the reranker trains on the
    # 8 outside dev and test
    assert saved["questions"] == 8 and saved["reranker_train_questions"] == 8
