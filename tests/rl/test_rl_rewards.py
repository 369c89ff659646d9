"""Rewards over tricky completions: each reward must agree with the eval suite's verdicts."""

import pytest

from gmai.eval import scoring
from gmai.rl import rewards as R

OPTS = ["pneumonia", "normal", "pneumothorax", "pleural effusion"]


def chat(text):
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize("text,ok", [
    ("<think>The lung is dark.</think><answer>B</answer>", True),
    ("  <think>a\nb</think>\n<answer>yes</answer>\n", True),
    ("<answer>B</answer><think>reasons</think>", False),  # wrong order
    ("<think>x</think><answer>B</answer><answer>C</answer>", False),  # answer twice
    ("<think>x</think>B", False),  # no answer block
    ("<think></think><answer>B</answer>", False),  # empty reasoning
    ("<think>x</think><answer> </answer>", False),  # empty answer
    ("Sure! <think>x</think><answer>B</answer>", False),  # text outside the blocks
    ("<think>x<think>y</think><answer>B</answer>", False),  # nested/duplicated tag
    ("", False),
])
def test_format_reward(text, ok):
    assert R.format_reward([text, chat(text)]) == [float(ok)] * 2


def test_format_partial_reward_is_shaped_and_strict_at_the_top():
    texts = ["<think>a</think><answer>B</answer>", "<think>a</think> B", "<think>a<think>b", "B",
             "<answer>B</answer><think>a</think>"]
    assert R.format_partial_reward(texts) == [1.0, 0.4, 0.0, 0.0, 0.8]


def test_choice_reward_letters_text_and_distractor_mentions():
    replies = [
        "<think>air in pleural space</think><answer>C</answer>",
        "<think>...</think><answer>(C) pneumothorax</answer>",
        "<think>...</think><answer>pneumothorax</answer>",
        "The answer is C.",
        "<think>could be C</think><answer>A</answer>",  # the tag wins over the reasoning
        "<think>..</think><answer>pneumonia or pneumothorax</answer>",  # two options: no verdict
        "<think>..</think><answer></answer>",
    ]
    n = len(replies)
    got = R.choice_reward(replies, answer=["C"] * n, options=[OPTS] * n, answer_type=["choice"] * n)
    assert got == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    # gold given as option text, options as "A. text" strings
    lettered = [f"{chr(65 + i)}. {t}" for i, t in enumerate(OPTS)]
    assert R.choice_reward(["C"], answer=["pneumothorax"], options=[lettered], answer_type=["choice"]) == [1.0]
    # not a choice row -> not scored
    assert R.choice_reward(["C"], answer=["yes"], options=[[]], answer_type=["closed"]) == [None]


def test_yes_no_reward_matches_eval_polarity():
    replies = ["<think>no air</think><answer>No</answer>", "There is no pneumothorax.",
               "<think>...</think><answer>yes and no</answer>", "cannot be determined",
               "<think>nodule seen</think><answer>nodule</answer>", "Yes, there is no fracture",
               "<think>The answer is no</think><answer>yes</answer>"]
    got = R.yes_no_reward(replies, answer=["no"] * 7, answer_type=["closed"] * 7)
    assert got == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    for reply, reward in zip(replies, got):  # one implementation, two uses
        assert bool(reward) == scoring.score_closed(reply, "no")
    assert R.yes_no_reward(["yes"], answer=["left lung"], answer_type=["open"]) == [None]


def test_open_reward_full_point_only_where_the_named_rule_agrees():
    replies = ["<think>.</think><answer>Magnetic resonance imaging</answer>", "<answer>MRI.</answer>",
               "<think>.</think><answer>the left lung</answer>", "<answer>right lower lobe</answer>",
               "<answer>kidney</answer>"]
    golds = ["MRI", "mr", "left lung", "left lower lobe", "liver"]
    plain = R.open_reward(replies, answer=golds, answer_type=["open"] * 5)  # gmai@1: no synonyms
    assert plain[0] < 1.0 and plain[1] < 1.0 and plain[2] == 1.0
    assert 0.5 < plain[3] < 1.0  # two of three tokens: partial credit, never a full point
    assert plain[4] == 0.0
    synonyms = R.open_reward(replies, answer=golds, answer_type=["open"] * 5, rule="gmai-synonyms@1")
    assert synonyms[:3] == [1.0, 1.0, 1.0] and synonyms[3] < 1.0
    for reply, gold, p, q in zip(replies, golds, plain, synonyms):  # 1.0 exactly where the named rule agrees
        assert (p == 1.0) == scoring.judge(reply, gold, "open", rule="gmai@1").correct
        assert (q == 1.0) == scoring.judge(reply, gold, "open", rule="gmai-synonyms@1").correct
    assert R.open_reward(["yes"], answer=["yes"], answer_type=["closed"]) == [None]


@pytest.mark.parametrize("reply,gold", [("brain", "head"), ("mass", "tumor"), ("l", "left"), ("lungs", "chest"),
                                        ("Magnetic resonance imaging", "MRI")])
def test_no_full_point_for_what_evaluation_marks_wrong(reply, gold):
    """The old synonym table gave these 1.0 while scoring.judge marks them wrong; under gmai@1 they
    stay partial credit. Only MRI is a true synonym, accepted by the named rule gmai-synonyms@1."""
    got = R.open_reward([f"<answer>{reply}</answer>"], answer=[gold], answer_type=["open"])[0]
    assert got < 1.0 and not scoring.judge(reply, gold, "open").correct
    synonym_rule = R.open_reward([reply], answer=[gold], answer_type=["open"], rule="gmai-synonyms@1")[0]
    assert (synonym_rule == 1.0) == (gold == "MRI") == scoring.judge(reply, gold, "open", rule="gmai-synonyms@1").correct


def test_numeric_reward_tolerance_and_words():
    replies = ["<think>measure</think><answer>3.1 cm</answer>", "<answer>about 4</answer>",
               "<answer>two</answer>", "<answer>none seen</answer>", "no number here"]
    golds = ["3", "3", "2", "0", "3"]
    got = R.numeric_reward(replies, answer=golds, answer_type=["numeric"] * 5, tolerance=[0.05] * 5)
    assert got == [1.0, 0.0, 1.0, 1.0, 0.0]


def test_box_iou_reward():
    gold = "[0.1,0.1,0.5,0.5]"
    replies = ["<think>upper left</think><answer><box>[[0.1,0.1,0.5,0.5]]</box></answer>",
               "<answer>[0.3,0.3,0.7,0.7]</answer>", "<answer>[0.5,0.5,0.1,0.1]</answer>",
               "<answer>upper left</answer>"]
    got = R.box_iou_reward(replies, answer=[gold] * 4, answer_type=["box"] * 4)
    assert got[0] == pytest.approx(1.0)
    assert got[1] == pytest.approx(0.04 / 0.28)  # 0.2x0.2 overlap of two 0.4x0.4 boxes
    assert got[2] == pytest.approx(1.0)  # swapped corners are reordered
    assert got[3] == 0.0
    with pytest.raises(ValueError, match="unparseable gold box"):
        R.box_iou_reward(["[0,0,1,1]"], answer=["upper left"], answer_type=["box"])


def test_accuracy_routes_by_type_and_composes_with_weights():
    completions = ["<answer>C</answer>", "<answer>no</answer>", "<answer>CT</answer>", "<answer>7</answer>",
                   "<answer>[0,0,1,1]</answer>"]
    kw = dict(answer=["C", "no", "computed tomography", "7", "[0,0,1,1]"],
              answer_type=["choice", "closed", "open", "numeric", "box"],
              options=[OPTS, [], [], [], []], tolerance=[None, None, None, 0.0, None])
    assert R.accuracy_reward(completions, **kw) == [1.0, 1.0, 0.0, 1.0, 1.0]  # CT != computed tomography...
    assert R.accuracy_reward(completions, rule="gmai-synonyms@1", **kw) == [1.0] * 5  # ...except by synonyms
    funcs, weights, names = R.get_rewards({"format": 0.5, "accuracy": 1.0})
    assert names == ["format", "accuracy"] and weights == [0.5, 1.0]
    assert [f.__name__ for f in funcs] == names
    with pytest.raises(ValueError, match="unknown reward"):
        R.get_rewards({"fromat": 1.0})
    (accuracy,), _, _ = R.get_rewards({"accuracy": 1.0}, rule="gmai-synonyms@1")
    assert accuracy(completions, **kw) == [1.0] * 5  # the recipe's scoring_rule reaches the reward
    with pytest.raises(ValueError, match="unknown scoring rule"):
        R.get_rewards({"accuracy": 1.0}, rule="gmai@9")
    with pytest.raises(ValueError, match="unknown answer_type"):
        R.accuracy_reward(["x"], answer=["x"], answer_type=["essay"])


def test_strict_accuracy_needs_the_format():
    right_no_tags, right_tagged = "C", "<think>the lesion is round</think><answer>C</answer>"
    wrong_tagged, right_tags_twice = "<think>x</think><answer>A</answer>", "<answer>C</answer><answer>C</answer>"
    completions = [right_no_tags, right_tagged, wrong_tagged, right_tags_twice, "yes"]
    kw = dict(answer=["C"] * 4 + ["yes"], answer_type=["choice"] * 4 + ["closed"], options=[OPTS] * 4 + [[]])
    assert R.accuracy_reward(completions, **kw) == [1.0, 1.0, 0.0, 1.0, 1.0]
    assert R.accuracy_strict_reward(completions, **kw) == [0.0, 1.0, 0.0, 0.0, 0.0]
    # no verdict (None: TRL skips the row) stays None rather than becoming a 0
    assert R.accuracy_strict_reward(["A"], answer=[None], answer_type=["choice"], options=[OPTS]) == [None]


def test_column_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="answer"):
        R.yes_no_reward(["yes", "no"], answer=["yes"])


def test_is_correct_agrees_with_judge():
    q = {"answer": "B", "answer_type": "choice", "options": OPTS}
    assert R.is_correct("<think>.</think><answer>B</answer>", q)
    assert not R.is_correct("<think>.</think><answer>A</answer>", q)
    assert R.is_correct("<answer>[0,0,0.5,0.5]</answer>", {"answer": "[0,0,0.5,0.6]", "answer_type": "box"})
