"""The optional LLM judge for multiple choice, against a mock OpenAI-compatible endpoint."""

import csv
import json

import httpx
import pytest

from gmai.eval.judge import JUDGE_RULE, ChoiceJudge, judge_choice
from gmai.eval.runner import BenchSpec, EvalOptions, score_file

OPTIONS = {"A": "Edema", "B": "Pneumonia", "C": "Pneumothorax"}


def mock_endpoint(reply: str, seen: list):
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        assert request.url.path == "/v1/chat/completions"
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": reply}}]})
    return httpx.MockTransport(handler)


def test_judge_is_asked_only_when_rules_fail_and_its_reply_is_cached(tmp_path):
    seen = []
    cache = tmp_path / "judge_cache.jsonl"
    judge = ChoiceJudge("http://judge/v1", "judge-model", cache_path=cache, transport=mock_endpoint("B", seen))
    assert judge_choice("B) Pneumonia", "B", OPTIONS, "What is it?", judge) == (True, "rule")
    assert seen == []  # the rules read it: no call
    reply = "I'd go with the infectious one"
    assert judge_choice(reply, "B", OPTIONS, "What is it?", judge) == (True, "judge")
    assert len(seen) == 1 and seen[0]["model"] == "judge-model" and reply in seen[0]["messages"][0]["content"]
    assert "Pneumonia" in seen[0]["messages"][0]["content"] and "gold" not in seen[0]["messages"][0]["content"].lower()
    entry = json.loads(cache.read_text().splitlines()[0])
    assert entry["raw"] == "B" and entry["letter"] == "B"
    # a new judge over the same cache answers without any HTTP call
    again = ChoiceJudge("http://judge/v1", "judge-model", cache_path=cache, transport=mock_endpoint("C", seen))
    assert judge_choice(reply, "B", OPTIONS, "What is it?", again) == (True, "judge") and len(seen) == 1


def test_judge_http_errors_are_reported():
    judge = ChoiceJudge("http://judge/v1", "m", transport=httpx.MockTransport(lambda r: httpx.Response(503, text="busy")))
    with pytest.raises(RuntimeError, match="HTTP 503"):
        judge.pick("q", OPTIONS, "something")


def test_score_file_adds_the_judge_rule(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "f.jpg")
    with (tmp_path / "test_clean.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label"])
        for _ in range(2):
            w.writerow(["f.jpg", "What is it?", "Pneumonia", "A:Edema", "B:Pneumonia", "C:Pneumothorax", "D:Mass", "B"])
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"qid": "test_clean-000000", "prediction": "B"}) + "\n"
                     + json.dumps({"qid": "test_clean-000001", "prediction": "the infectious one"}) + "\n")
    seen = []
    judge = ChoiceJudge("http://judge/v1", "jm", cache_path=tmp_path / "c.jsonl", transport=mock_endpoint("B", seen))
    report = score_file(preds, [BenchSpec("pmc-vqa", str(tmp_path))], tmp_path / "out",
                        EvalOptions(rules=("gmai@1",), judge=judge, baselines=False))
    rules = report["benchmarks"]["pmc-vqa"]["rules"]
    assert rules["gmai@1"]["accuracy"] == 0.5 and rules[JUDGE_RULE]["accuracy"] == 1.0
    assert report["rules"][JUDGE_RULE]["judge"]["model"] == "jm" and len(seen) == 1
