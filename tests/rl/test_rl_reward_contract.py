"""The reward/evaluation contract on a broad random sample: for every scoring rule, an accuracy reward
is 1.0 exactly when ``scoring.judge`` under that rule counts the reply correct (and None exactly when
the rule does not score the question)."""

import random

import pytest

from gmai.eval import scoring
from gmai.rl import rewards as R

YES_NO = ["yes", "no", "Yes", "No.", "yes.", "NO"]
OPEN = ["MRI", "CT", "x-ray", "ultrasound", "left lung", "right lower lobe", "liver", "brain", "head", "tumor",
        "mass", "pleural effusion", "axial", "2", "the heart", "Magnetic resonance imaging", "left", "chest",
        "fundus photograph", "haemorrhage", "hemorrhage", "coronal plane", "kidney", "normal", "pneumothorax"]
WORDS = ["lesion", "present", "absent", "not", "no", "yes", "seen", "left", "right", "lobe", "scan", "image",
         "there", "is", "the", "a", "without", "cannot", "determined", "maybe", "tumour", "sonography", "MR"]
OPTION_POOL = ["pneumonia", "normal", "pneumothorax", "pleural effusion", "CT", "MRI", "X-ray", "glaucoma",
               "cataract", "melanoma", "nevus", "fracture"]


def variants(rng: random.Random, text: str) -> str:
    """A spelling of ``text`` a model might write: case, punctuation, articles, a synonym."""
    same = [name for canonical, others in scoring.SYNONYMS.items() for name in (canonical, *others)
            if scoring.canonical_answer(name) == scoring.canonical_answer(text)]
    choices = [text, text.upper(), text.lower(), f"{text}.", f"the {text}", f"{text}!", f" {text} ",
               rng.choice(same or [text]), rng.choice(same or [text]), rng.choice(sum(SYNONYM_NAMES, []))]
    return rng.choice(choices)


SYNONYM_NAMES = [[c, *o] for c, o in scoring.SYNONYMS.items()]


def answer_text(rng: random.Random, gold: str, kind: str, options: list[str]) -> str:
    pool = {"closed": ["yes", "no", "Yes, there is.", "No, there is not.", "There is no lesion.", "yes and no",
                       "cannot be determined", "nodule", "Not seen", "absent", "present"],
            "open": OPEN, "choice": options + [f"({l})" for l in "ABCD"] + list("ABCDE")}[kind]
    pick = rng.random()
    if pick < 0.45:
        return variants(rng, gold)
    if pick < 0.7:
        return variants(rng, rng.choice(pool))
    if pick < 0.85 and kind == "choice":
        i = rng.randrange(len(options))
        return rng.choice([f"{chr(65 + i)}) {options[i]}", f"Option {chr(65 + i)}", f"{chr(65 + i)}. {options[i]}"])
    return " ".join(rng.choice(WORDS + [gold]) for _ in range(rng.randint(0, 5)))


def wrap(rng: random.Random, text: str, other: str) -> str:
    return rng.choice([
        text, text, text, f"<think>Looking at it, {other}.</think><answer>{text}</answer>", f"The answer is {text}.",
        f"\\\\boxed{{{text}}}", f"<answer>{other}</answer><answer>{text}</answer>", f"Answer: {text}",
        f"<think>{text}</think>{other}", f"I think {text}", f"{text}, because {other}", "",
        f"<think>x</think>\n<answer>{text}</answer>\nDone.",
    ])


def sample(n: int, seed: int = 0):
    rng = random.Random(seed)
    for _ in range(n):
        kind = rng.choice(["closed", "open", "choice"])
        options: list[str] = []
        if kind == "closed":
            gold = rng.choice(YES_NO)
        elif kind == "open":
            gold = rng.choice(OPEN + YES_NO[:1])  # an open row whose gold is yes/no happens in real data
        else:
            options = rng.sample(OPTION_POOL, rng.randint(2, 5))
            i = rng.randrange(len(options))
            gold = rng.choice([chr(65 + i), options[i]])
        reply = wrap(rng, answer_text(rng, gold, kind, options), answer_text(rng, gold, kind, options))
        yield reply, gold, kind, options


CASES = list(sample(3000))


@pytest.mark.parametrize("rule", list(scoring.RULES))
def test_rewards_and_evaluation_agree_on_every_case(rule):
    seen = {"correct": 0, "wrong": 0, "unscored": 0}
    kinds = {k: {"correct": 0, "wrong": 0} for k in ("closed", "open", "choice")}
    for reply, gold, kind, options in CASES:
        reward = R.accuracy_reward([reply], answer=[gold], answer_type=[kind], options=[options], rule=rule)[0]
        verdict = scoring.judge(reply, gold, kind, R.options_mapping(options), rule)
        if verdict is None:
            assert reward is None, (reply, gold, kind)
            seen["unscored"] += 1
            continue
        assert (reward == 1.0) == verdict.correct, (rule, reply, gold, kind, reward)
        assert 0.0 <= reward <= 1.0
        assert R.is_correct(reply, {"answer": gold, "answer_type": kind, "options": options}, rule) == verdict.correct
        label = "correct" if verdict.correct else "wrong"
        seen[label] += 1
        kinds[kind][label] += 1
    # the sample is broad: every scored question type has replies both right and wrong under the rule
    for kind, counts in kinds.items():
        if counts["correct"] + counts["wrong"]:
            assert counts["correct"] >= 30 and counts["wrong"] >= 30, (rule, kind, counts)
    assert seen["correct"] + seen["wrong"] >= 1800


def test_the_sample_holds_partial_credit_and_synonyms():
    """Not a degenerate sample: open replies get partial credit below 1 and the synonym rule accepts
    some replies gmai@1 rejects."""
    partial = synonym_only = 0
    for reply, gold, kind, options in CASES:
        if kind != "open":
            continue
        score = R.open_reward([reply], answer=[gold], answer_type=["open"])[0]
        partial += score is not None and 0.0 < score < 1.0
        synonym_only += (scoring.judge(reply, gold, "open", rule="gmai-synonyms@1").correct
                         and not scoring.judge(reply, gold, "open").correct)
    assert partial >= 20 and synonym_only >= 20
