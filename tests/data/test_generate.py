"""Template generator, verifier and LLM generator (against a fake OpenAI-compatible server)."""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import pytest

from gmai.data.generate import SUBSETS, Sample, get_generator
from gmai.data.generate.templates import BANKS, TemplateGenerator, box_tag, with_article
from gmai.data.generate.verify import (check_json, check_statement, label_mentions, parse_boxes, verify_sample)
from gmai.data.records import Box, MaskFacts, QAPair, Record

LABELS = ["benign", "malignant", "normal", "no lesion", "lesion"]


def _image() -> np.ndarray:
    return np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)


def cls_record(label: str = "malignant", label_set: list[str] | None = None, **kw) -> Record:
    return Record(image=_image(), ref="x.png", source="toy", task="classification", modality="CT",
                  labels=[label], label_set=label_set or LABELS, organ="breast", **kw)


def det_record() -> Record:
    return Record(image=_image(), ref="d.png", source="toy", task="detection", modality="X-ray",
                  labels=["nodule"], label_set=["nodule", "mass"],
                  boxes=[Box("nodule", 0.1, 0.2, 0.3, 0.4), Box("nodule", 0.6, 0.6, 0.8, 0.9)])


def seg_record() -> Record:
    facts = [MaskFacts("liver", Box("liver", 0.5, 0.3, 0.9, 0.7), 0.12, (0.7, 0.5), "right", 1),
             MaskFacts("tumour", Box("tumour", 0.6, 0.4, 0.7, 0.5), 0.01, (0.65, 0.45), "right", 2)]
    return Record(image=_image(), ref="s.nii#z=3", source="toy", task="segmentation", modality="CT",
                  labels=["liver", "tumour"], label_set=["liver", "tumour", "spleen"], organ="abdomen",
                  boxes=[f.box for f in facts], mask_facts=facts)


def random_record(rng: random.Random) -> Record:
    kind = rng.choice(["cls", "det", "seg"])
    if kind == "cls":
        return cls_record(rng.choice(LABELS))
    return det_record() if kind == "det" else seg_record()


# ------------------------------------------------------------------------------------------------
# Templates


def test_same_seed_same_samples_and_different_seed_differs():
    gen = TemplateGenerator()
    record = cls_record()
    a = [s.to_json() for s in gen.generate(record, random.Random(7))]
    b = [s.to_json() for s in gen.generate(record, random.Random(7))]
    assert a == b
    others = {json.dumps([s.to_json() for s in gen.generate(record, random.Random(seed))]) for seed in range(20)}
    assert len(others) > 10  # the seed really drives the phrasing


def test_formats_and_subsets_cover_the_paper():
    gen = TemplateGenerator()
    formats, subsets = Counter(), Counter()
    for seed in range(200):
        for record in (cls_record(), det_record(), seg_record()):
            for s in gen.generate(record, random.Random(seed)):
                formats[s.format] += 1
                subsets[s.subset] += 1
                assert s.conversations[0]["from"] == "human" and s.conversations[0]["value"].startswith("<image>\n")
                assert [t["from"] for t in s.conversations] == ["human", "gpt"] * (len(s.conversations) // 2)
    for fmt in ("caption", "region_caption", "grounding", "qa_open", "qa_yesno", "qa_choice", "percept_modality",
                "percept_organ", "percept_location", "percept_count", "multi_turn"):
        assert formats[fmt] > 0, fmt
    assert set(subsets) == set(SUBSETS)


def test_region_caption_uses_box_and_ref_and_starts_with_this_region():
    record = det_record()
    gen = TemplateGenerator()
    regions = [s for seed in range(30) for s in gen.generate(record, random.Random(seed)) if s.format == "region_caption"]
    assert regions
    for s in regions:
        human, gpt = s.conversations[0]["value"], s.conversations[1]["value"]
        assert gpt.startswith("This region") and "<ref>nodule</ref>" in gpt
        (box,) = parse_boxes(human)
        assert box in [(0.1, 0.2, 0.3, 0.4), (0.6, 0.6, 0.8, 0.9)]
    assert box_tag([Box("a", 0.1, 0.2, 0.3, 0.45)]) == "<box>[[0.100,0.200,0.300,0.450]]</box>"


def test_multiple_choice_distractors_come_from_the_label_set():
    gen = TemplateGenerator()
    seen = 0
    for seed in range(300):
        for s in gen.generate(cls_record("benign"), random.Random(seed)):
            if s.format != "qa_choice":
                continue
            seen += 1
            options = [o.split(". ", 1)[1] for o in s.options]
            assert "benign" in options and set(options) <= set(LABELS) and len(set(options)) == len(options)
            assert s.options[ord(s.answer) - ord("A")].endswith("benign")
    assert seen > 20


def test_yes_no_answers_are_balanced_and_correct():
    gen = TemplateGenerator()
    golds = Counter()
    for seed in range(400):
        for s in gen.generate(cls_record("malignant"), random.Random(seed)):
            if s.format == "qa_yesno":
                golds[s.answer] += 1
                assert s.conversations[1]["value"].lower().startswith(s.answer)
    assert golds["yes"] > 30 and golds["no"] > 30


def test_every_template_sample_passes_the_verifier():
    gen = TemplateGenerator()
    rng = random.Random(0)
    for _ in range(600):
        record = random_record(rng)
        for s in gen.generate(record, random.Random(rng.randrange(10**9))):
            assert verify_sample(s, record) == [], (s.to_json(), record.labels)


def test_no_template_dominates_its_family():
    gen = TemplateGenerator()
    rng = random.Random(1)
    usage: Counter = Counter()
    for _ in range(1500):
        for s in gen.generate(random_record(rng), random.Random(rng.randrange(10**9))):
            usage.update(s.templates)
    families: dict[str, Counter] = {}
    for template_id, n in usage.items():
        families.setdefault(template_id.rpartition(".")[0], Counter())[template_id] = n
    for family, counts in families.items():
        total = sum(counts.values())
        variants = len(BANKS.get(family, [None]))
        if variants < 2 or total < 100:
            continue
        assert max(counts.values()) / total < 2.0 / variants, (family, counts)
        assert len(counts) == variants, f"{family}: some phrasings never used"


def test_vqa_report_and_llava_pass_through():
    gen = TemplateGenerator()
    vqa = Record(image=_image(), ref="v.jpg", source="vqa-rad", task="vqa", modality="radiology", organ="chest",
                 qa=[QAPair("Is there a pneumothorax?", "no", "closed"), QAPair("What organ?", "lung", "open")])
    samples = gen.generate(vqa, random.Random(0))
    passed = [s for s in samples if s.format == "vqa"]
    assert [(s.answer, s.answer_type, s.subset) for s in passed] == [("no", "closed", "MM-Instruct"),
                                                                     ("lung", "open", "MM-Instruct")]
    report = Record(image=_image(), ref="r.png", source="iu", task="report", modality="X-ray",
                    report="Heart size normal. No effusion.")
    (rep,) = [s for s in gen.generate(report, random.Random(0)) if s.format == "report"]
    assert rep.subset == "MM-Caption" and rep.conversations[1]["value"] == "Heart size normal. No effusion."
    llava = Record(image=_image(), ref="l.png", source="llava", task="conversation", modality="CT",
                   conversations=[{"from": "human", "value": "What is this?"}, {"from": "gpt", "value": "A CT."}])
    (conv,) = gen.generate(llava, random.Random(0))
    assert conv.conversations[0]["value"] == "<image>\nWhat is this?" and conv.generator == "passthrough"


def test_articles():
    assert [with_article(x) for x in ("CT scan", "MRI scan", "X-ray", "ultrasound image", "fundus photograph")] == [
        "a CT scan", "an MRI scan", "an X-ray", "an ultrasound image", "a fundus photograph"]


# ------------------------------------------------------------------------------------------------
# Verifier


def _sample(reply: str, question: str = "Describe this image.", fmt: str = "caption", **kw) -> Sample:
    conv = [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": reply}]
    return Sample("MM-Caption", conv, fmt, **kw)


@pytest.mark.parametrize("text,ok", [
    ("A CT scan of the breast showing malignant tissue.", True),
    ("This is benign.", False),  # asserts another label, true label missing
    ("Malignant, not benign.", True),  # negated other label is fine
    ("There is no evidence of a benign process; the finding is malignant.", True),
    ("The lesion looks malignant.", False),  # 'lesion' is another label of this dataset
    ("Malignant. It is unclear whether it spread.", False),  # vague
    ("Malignant. Breast cancer is a common disease.", False),  # textbook fact
])
def test_verifier_caption_cases(text, ok):
    assert (verify_sample(_sample(text), cls_record("malignant")) == []) is ok


def test_verifier_negated_labels_and_substrings():
    record = cls_record("no lesion")
    assert verify_sample(_sample("No lesion is seen."), record) == []
    assert verify_sample(_sample("The scan is free of any lesion."), record) == []  # implied by negation
    assert verify_sample(_sample("There is a lesion."), record) != []
    assert label_mentions("no lesion here, not a lesion", ["lesion", "no lesion"]) == [("no lesion", False),
                                                                                       ("lesion", True)]
    # 'normal' must not be found inside 'abnormal'
    assert check_statement("Abnormal.", cls_record("normal", ["normal", "abnormal"]), must_state=True) != []
    assert check_statement("Normal.", cls_record("normal", ["normal", "abnormal"]), must_state=True) == []


def test_verifier_yes_no_consistency_and_choice():
    record = cls_record("malignant")
    assert verify_sample(_sample("Yes.", "Does this image show malignant?", "qa_yesno"), record) == []
    assert verify_sample(_sample("Yes.", "Does this image show benign?", "qa_yesno"), record) != []
    assert verify_sample(_sample("No, it is malignant.", "Is this benign?", "qa_yesno"), record) == []
    good = _sample("B", "Which?", "qa_choice", answer="B", options=["A. benign", "B. malignant"])
    bad = _sample("A", "Which?", "qa_choice", answer="A", options=["A. benign", "B. malignant"])
    assert verify_sample(good, record) == [] and verify_sample(bad, record) != []


def test_verifier_boxes_must_match():
    record = det_record()
    ok = _sample("This region shows <ref>nodule</ref>.", "Describe <box>[[0.100,0.200,0.300,0.400]]</box>.",
                 "region_caption")
    moved = _sample("This region shows <ref>nodule</ref>.", "Describe <box>[[0.500,0.200,0.700,0.400]]</box>.",
                    "region_caption")
    thousand = _sample("This region shows <ref>nodule</ref>.", "Describe <box>[[100,200,300,400]]</box>.",
                       "region_caption")
    wrong_ref = _sample("This region shows <ref>mass</ref>.", "Describe <box>[[0.1,0.2,0.3,0.4]]</box>.",
                        "region_caption")
    no_prefix = _sample("A <ref>nodule</ref>.", "Describe <box>[[0.1,0.2,0.3,0.4]]</box>.", "region_caption")
    assert verify_sample(ok, record) == [] and verify_sample(thousand, record) == []
    assert any("matches no annotated box" in p for p in verify_sample(moved, record))
    assert verify_sample(wrong_ref, record) != [] and verify_sample(no_prefix, record) != []


def test_check_json():
    assert check_json('```json\n{"caption": "x"}\n```') == ({"caption": "x"}, [])
    value, problems = check_json("Sure! Here is the caption: ...")
    assert value is None and "not JSON" in problems[0]
    assert check_json("[1, 2]")[0] is None


def test_get_generator_rejects_unknown():
    with pytest.raises(ValueError):
        get_generator("gpt-magic")


# ------------------------------------------------------------------------------------------------
# LLM generator against a fake OpenAI-compatible server


class FakeOpenAI:
    """A tiny /v1/chat/completions server on 127.0.0.1 that plays canned replies in order."""

    def __init__(self, replies: list[object]):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.replies = list(replies)
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server API)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                reply = fake.replies.pop(0) if len(fake.replies) > 1 else fake.replies[0]
                status, content = (reply if isinstance(reply, tuple) else (200, reply))
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


GOOD = json.dumps({"caption": "A CT scan of the breast showing malignant tissue.",
                   "regions": [], "qa": [{"question": "Is this malignant?", "answer": "Yes."},
                                         {"question": "What is the finding?", "answer": "Malignant."}]})
WRONG_LABEL = json.dumps({"caption": "A CT scan of the breast showing a benign mass.", "regions": [], "qa": []})


@pytest.fixture
def fake_server():
    servers = []

    def start(replies):
        servers.append(FakeOpenAI(replies))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _llm(server, tmp_path, **kw):
    from gmai.data.generate.llm import LLMGenerator

    options = dict(base_url=server.base_url, model="fake", api_key="sk-test", rate=0, backoff=0.01,
                   cache_dir=str(tmp_path / "cache"))
    options.update(kw)
    return LLMGenerator(**options)


def test_llm_bad_reply_is_retried_then_accepted(fake_server, tmp_path):
    server = fake_server([WRONG_LABEL, GOOD])
    gen = _llm(server, tmp_path)
    samples = gen.generate(cls_record("malignant"), random.Random(0))
    llm = [s for s in samples if s.generator == "llm"]
    assert [s.format for s in llm] == ["caption", "qa_yesno", "qa_open"]
    assert llm[1].answer == "yes"
    assert gen.stats["llm_verify_failed"] == 1 and gen.stats["llm_ok"] == 1 and gen.stats["llm_ok_after_retry"] == 1
    assert any(s.format.startswith("percept_") for s in samples)  # perception still from templates
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-test"
    prompt = request["body"]["messages"][1]["content"]
    assert '"labels": ["malignant"]' in prompt and "x.png" not in prompt  # grounded, no file refs
    assert "JSON" in request["body"]["messages"][0]["content"]


def test_llm_keeps_failing_falls_back_to_templates(fake_server, tmp_path):
    server = fake_server(["this is not json", WRONG_LABEL])
    gen = _llm(server, tmp_path, max_retries=2)
    samples = gen.generate(cls_record("malignant"), random.Random(0))
    assert len(server.requests) == 3
    assert gen.stats["llm_fallback_to_template"] == 1 and gen.stats["llm_verify_failed"] == 3
    assert gen.stats["verify: reply is not JSON"] == 1
    assert samples and all(s.generator in ("template-fallback", "passthrough") for s in samples)
    assert all(verify_sample(s, cls_record("malignant")) == [] for s in samples)


def test_llm_region_boxes_are_verified(fake_server, tmp_path):
    bad_box = json.dumps({"caption": "An X-ray with nodule.", "qa": [],
                          "regions": [{"box": [0.5, 0.5, 0.9, 0.9], "label": "nodule",
                                       "caption": "This region shows <ref>nodule</ref>."}]})
    good_box = json.dumps({"caption": "An X-ray with nodule.", "qa": [],
                           "regions": [{"box": [0.1, 0.2, 0.3, 0.4], "label": "nodule",
                                        "caption": "This region shows <ref>nodule</ref>."}]})
    server = fake_server([bad_box, good_box])
    gen = _llm(server, tmp_path)
    samples = gen.generate(det_record(), random.Random(0))
    (region,) = [s for s in samples if s.format == "region_caption"]
    assert "<box>[[0.100,0.200,0.300,0.400]]</box>" in region.conversations[0]["value"]
    assert gen.stats["verify: box matches no annotated box"] == 1


def test_llm_cache_and_http_retry(fake_server, tmp_path):
    server = fake_server([(500, "overloaded"), (429, "slow down"), GOOD])
    gen = _llm(server, tmp_path)
    first = gen.generate(cls_record("malignant"), random.Random(0))
    assert gen.stats["llm_http_retry"] == 2 and gen.stats["llm_ok"] == 1
    calls = len(server.requests)
    again = _llm(server, tmp_path).generate(cls_record("malignant"), random.Random(0))
    assert len(server.requests) == calls  # served from the on-disk cache
    assert [s.to_json() for s in again] == [s.to_json() for s in first]


def test_llm_rate_limit_spaces_requests(fake_server, tmp_path):
    import time

    server = fake_server([GOOD])
    gen = _llm(server, tmp_path, rate=20, cache_dir=None)
    start = time.monotonic()
    for _ in range(5):
        gen.complete([{"role": "user", "content": "hi"}])
    assert time.monotonic() - start >= 4 / 20 * 0.9


def test_llm_unreachable_endpoint_falls_back(tmp_path):
    from gmai.data.generate.llm import LLMGenerator

    gen = LLMGenerator(base_url="http://127.0.0.1:9/v1", rate=0, http_retries=1, backoff=0.01, timeout=2,
                       cache_dir=None)
    samples = gen.generate(cls_record("malignant"), random.Random(0))
    assert samples and gen.stats["llm_http_failed"] == 1 and gen.stats["llm_fallback_to_template"] == 1


def test_build_with_llm_generator_counts_fallbacks_in_stats(fake_server, tmp_path):
    from gmai.data.build import BuildConfig, SourceSpec, run_build

    images = np.stack([np.kron(np.random.default_rng(i).integers(0, 255, (8, 8)), np.ones((4, 4))).astype(np.uint8)
                       for i in range(4)])
    np.savez(tmp_path / "toy.npz", train_images=images, train_labels=np.array([1, 1, 0, 1]))
    good = json.dumps({"caption": "A CT scan showing malignant.", "regions": [],
                       "qa": [{"question": "Is this malignant?", "answer": "Yes."}]})
    server = fake_server([good])  # right for label 1 (malignant), wrong for label 0 (benign) -> fallback
    out = tmp_path / "out"
    result = run_build(BuildConfig(
        sources=[SourceSpec.parse(f"npz:{tmp_path / 'toy.npz'}?classes=benign,malignant&modality=CT")], out=out,
        generator="llm", plots=False,
        generator_options={"base_url": server.base_url, "rate": 0, "max_retries": 1, "cache_dir": str(tmp_path / "c")}),
        progress=False, log=lambda _: None)
    generation = result.stats["generation"]
    assert generation["llm_ok"] == 3 and generation["llm_fallback_to_template"] == 1
    rows = [json.loads(line) for line in (out / "MM-Caption.jsonl").read_text().splitlines()]
    by_label = {(tuple(r["labels"]), r["generator"]) for r in rows}
    assert by_label == {(("malignant",), "llm"), (("benign",), "template-fallback")}
    assert "llm_fallback_to_template" in (out / "README.md").read_text()


def test_single_turn_answers_contain_their_gold_answer():
    """The held-out split scores replies against `answer`: the training text must say it verbatim."""
    gen = TemplateGenerator()
    rng = random.Random(5)
    checked = Counter()
    for _ in range(400):
        record = random_record(rng)
        for s in gen.generate(record, random.Random(rng.randrange(10**9))):
            if s.answer_type in ("open",) and s.format != "grounding":
                reply = s.conversations[1]["value"]
                assert s.answer.lower() in reply.lower(), (s.format, s.answer, reply)
                checked[s.format] += 1
    assert {"qa_open", "percept_modality", "percept_organ", "percept_location", "percept_count"} <= set(checked)
