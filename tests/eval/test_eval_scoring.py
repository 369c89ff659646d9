"""Tricky replies, with the verdict each rule must give (hand-checked against the rule texts)."""

import pytest

from gmai.eval import scoring
from gmai.eval.scoring import (RULES, extract_answer, extract_boxed, extract_choice, judge, lmms_normalize,
                               medevalkit_extract, open_metrics, polarity, score_choice, score_closed,
                               score_open, token_f1, token_recall, vqa_v2_clean)

G, GR, L, M, K = "gmai@1", "gmai-recall@1", "lmms-eval-exact@1", "multimedeval@1", "medevalkit@1"

# (reply, gold, answer_type, {rule: expected verdict})
CLOSED_CASES = [
    ("No, there is no fracture", "no", {G: True, L: False, M: True, K: True}),
    ("No, there is no fracture", "yes", {G: False, L: False, M: False, K: False}),
    ("yes and no", "yes", {G: False, L: False, M: True, K: False}),
    ("yes and no", "no", {G: False, L: False, M: True, K: False}),
    ("Yes.", "yes", {G: True, L: True, M: True, K: True}),
    ("cannot be determined", "no", {G: False, L: False, M: False, K: True}),
    ("cannot be determined", "yes", {G: False, L: False, M: False, K: False}),
    ("nodule", "no", {G: False, L: False, M: False, K: True}),
    ("Normal.", "no", {G: False, L: False, M: False, K: True}),
    ("Not present", "no", {G: True, L: False, M: True, K: True}),
    ("There is no evidence of pneumothorax.", "no", {G: True, L: False, M: True, K: True}),
    ("<answer>yes</answer>", "yes", {G: True, L: False, M: True, K: True}),
    ("\\boxed{no}", "no", {G: True, L: False, M: True, K: True}),
    ("The answer is yes", "yes", {G: True, L: False, M: True, K: True}),
    ("I don't know", "no", {G: False, L: False, M: False, K: True}),
    ("Yes, there is a mass", "yes", {G: True, L: False, M: True, K: True}),
    ("yeah", "yes", {G: True, L: True, M: False, K: False}),
    ("No", "No", {G: True, L: True, M: True, K: True}),
    ("There isn't a fracture", "no", {G: True, L: False, M: False, K: False}),
    ("<think>maybe yes</think><answer>no</answer>", "yes", {G: False, L: False, M: True, K: False}),
]

OPEN_CASES = [
    ("The answer is: left lung", "left lung", {G: True, GR: True, L: False, M: True, K: False}),
    ("Left lung.", "left lung", {G: True, GR: True, L: True, M: True, K: False}),
    ("left lung", "Left lung", {G: True, GR: True, L: True, M: True, K: True}),
    ("The right lung", "right lung", {G: True, GR: True, L: False, M: True, K: False}),
    ("two", "2", {G: False, GR: False, L: False, M: True, K: False}),
    ("x-ray", "X-ray", {G: True, GR: True, L: True, M: True, K: True}),
    ("pulmonary nodules in the right lung", "pulmonary nodules", {G: False, GR: True, L: False, M: True, K: False}),
    ("nodules", "pulmonary nodules", {G: False, GR: False, L: False, M: False, K: False}),
    ("Answer: \\boxed{left lung}", "left lung", {G: True, L: False, M: True, K: True}),
]

OPTIONS = {"A": "Edema", "B": "Pneumonia", "C": "Pneumothorax", "D": "Normal"}
CHOICE_CASES = [
    ("B) Pneumonia", "B", {G: True, K: True}),
    ("Pneumonia", "B", {G: True, K: True}),
    ("The answer is (B).", "B", {G: True, K: False}),  # MedEvalKit: "(b)" is neither letter nor text
    ("C", "B", {G: False, K: False}),
    ("b", "B", {G: True, K: True}),
    ("<answer>B</answer>", "B", {G: True, K: True}),
    ("I would pick B here.", "B", {G: True}),
    ("Option D", "D", {G: True}),
    ("A nodule is not listed", "A", {G: False}),  # "A" as an article is no letter
    ("I think it is pneumonia, not edema", "B", {G: False}),  # two options named: no guess
]


@pytest.mark.parametrize("reply,gold,expected", CLOSED_CASES)
def test_closed_verdicts_per_rule(reply, gold, expected):
    got = {rule: judge(reply, gold, "closed", rule=rule).correct for rule in expected}
    assert got == expected


@pytest.mark.parametrize("reply,gold,expected", OPEN_CASES)
def test_open_verdicts_per_rule(reply, gold, expected):
    got = {rule: judge(reply, gold, "open", rule=rule).correct for rule in expected}
    assert got == expected


@pytest.mark.parametrize("reply,gold,expected", CHOICE_CASES)
def test_choice_verdicts_per_rule(reply, gold, expected):
    got = {rule: judge(reply, gold, "choice", OPTIONS, rule=rule).correct for rule in expected}
    assert got == expected


def test_kit_rules_without_choice_path_say_not_applicable():
    assert judge("B", "B", "choice", OPTIONS, rule=L) is None
    assert judge("B", "B", "choice", OPTIONS, rule=M) is None
    with pytest.raises(ValueError, match="does not score multiple-choice"):
        score_choice("B", "B", OPTIONS, rule=M)


def test_closed_open_kind_follows_each_kits_definition():
    # VQA-RAD has CLOSED questions whose gold is not yes/no ("Left"): only lmms-eval keeps "closed"
    assert judge("left", "Left", "closed", rule=L).kind == "closed"
    assert judge("left", "Left", "closed", rule=M).kind == "open"
    assert judge("left", "Left", "closed", rule=K).kind == "open"
    assert judge("left", "Left", "closed", rule=G).kind == "closed"
    # and an OPEN question with a yes/no gold is closed for MultiMedEval / MedEvalKit
    assert judge("no", "no", "open", rule=M).kind == "closed"


def test_plain_function_interface_for_rewards():
    assert score_closed("No, there is no fracture", "no") is True
    assert score_open("The answer is: left lung", "left lung") is True
    assert score_open("The answer is: left lung", "left lung", rule=K) is False
    assert score_choice("B) Pneumonia", "Pneumonia", OPTIONS) is True  # gold given as option text
    assert score_closed("yes and no", "no", rule=M) is True


def test_answer_extraction():
    assert extract_answer("<think>it could be yes</think>\n<answer> left lung </answer>") == "left lung"
    assert extract_answer("<answer>a</answer> then <answer>B</answer>") == "B"
    assert extract_answer("So \\boxed{\\frac{1}{2}} and finally \\boxed{right {upper} lobe}") == "right {upper} lobe"
    assert extract_answer("The final answer is: Edema.") == "Edema"
    assert extract_answer("**Answer**: pneumonia") == "pneumonia"
    assert extract_answer("The answer isn't obvious") == "The answer isn't obvious"
    assert extract_boxed("\\boxed{unbalanced {") is None
    assert extract_boxed("no box") is None


def test_polarity_negation_hedges_and_uncertainty():
    assert polarity("No, there is no fracture") == "no"
    assert polarity("Yes, there is no fracture") == "yes"  # the leading word decides
    assert polarity("There is no fracture") == "no"
    assert polarity("The fracture is present") == "yes"
    assert polarity("There isn't any effusion") == "no"
    assert polarity("yes or no") is None
    assert polarity("It cannot be determined from this image") is None
    assert polarity("unclear") is None
    assert polarity("N/A") is None
    assert polarity("nodule") is None
    assert polarity("") is None


def test_choice_extraction_forms():
    assert extract_choice("B) Pneumonia", OPTIONS) == "B"
    assert extract_choice("(c)", OPTIONS) == "C"
    assert extract_choice("Choice (A)", OPTIONS) == "A"
    assert extract_choice("pneumothorax", OPTIONS) == "C"
    assert extract_choice("It looks like a pneumothorax", OPTIONS) == "C"  # "A" article ignored
    assert extract_choice("E", OPTIONS) is None  # not an option
    nested = {"A": "pneumonia", "B": "viral pneumonia"}
    assert extract_choice("Most likely viral pneumonia", nested) == "B"  # longest containing the rest


def test_vqa_v2_cleaning_quirks():
    assert vqa_v2_clean("3.5 cm.") == "3.5 cm"  # a period before a digit stays
    assert vqa_v2_clean("none") == "0"  # number words, "none" included
    assert vqa_v2_clean("Two nodules") == "2 nodules"
    assert vqa_v2_clean("isnt it") == "isn't it"  # contraction table
    assert vqa_v2_clean("yes/no") == "yes no"  # a mark touching no space becomes a space
    assert vqa_v2_clean("a , b") == "b"  # touching a space: deleted; article "a" dropped
    assert vqa_v2_clean("1,000 cases; left") == "1000 cases left"  # digit,digit anywhere: all deleted
    assert vqa_v2_clean("answer is: left") == "answer is: left"  # ':' is not in the list
    assert vqa_v2_clean("." * 40) == "." * 8  # only 32 periods are deleted (upstream count quirk)


def test_lmms_normalisation():
    assert lmms_normalize(" Yes (definitely) ") == "yes"
    assert lmms_normalize("X ray") == "xray"
    assert lmms_normalize("the left lung.") == "the left lung"  # articles kept
    assert lmms_normalize("true") == "yes" and lmms_normalize("nope") == "no"
    assert lmms_normalize("true story") == "true story"  # only a whole reply is a synonym


def test_medevalkit_extraction_quirks():
    assert medevalkit_extract("The answer is: left lung") == ": left lung"
    assert medevalkit_extract("<answer>a</answer> <answer>b</answer>") == "a b"
    assert medevalkit_extract("\\boxed{Yes}") == "yes"
    assert medevalkit_extract("it is boxed in") == "None"  # "boxed" without \boxed{}: upstream's sentinel


def test_open_metrics_and_token_scores():
    assert token_recall("left lung base", "the left lung") == 1.0
    assert token_f1("left lung base", "left lung") == pytest.approx(0.8)
    m = open_metrics("The answer is left lung", "left lung")
    assert m["exact"] == 1.0 and m["bleu1"] == pytest.approx(1.0) and m["rougeL"] == pytest.approx(1.0)
    m = open_metrics("right kidney", "left lung")
    assert m["exact"] == 0.0 and m["recall"] == 0.0 and m["rougeL"] == 0.0 and m["bleu1"] < 0.01


def test_cli_lists_rules_and_benchmarks():
    from typer.testing import CliRunner

    from gmai.cli import app

    result = CliRunner().invoke(app, ["eval", "rules"])
    assert result.exit_code == 0 and all(name in result.output for name in RULES)
    result = CliRunner().invoke(app, ["eval", "benchmarks"])
    assert result.exit_code == 0 and "gmai-mmbench" in result.output and "flaviagiammarino/vqa-rad" in result.output


def test_rule_registry_is_named_and_versioned():
    assert set(RULES) >= {G, GR, L, M, K}
    for name, rule in RULES.items():
        assert rule.name == name and rule.version >= 1 and rule.description
    assert scoring.describe_rules([G])[G]["version"] == 1
    with pytest.raises(KeyError, match="unknown scoring rule"):
        judge("yes", "yes", "closed", rule="nope@9")
