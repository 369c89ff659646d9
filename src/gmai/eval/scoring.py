"""Scoring rules for medical VQA: plain, importable functions; every rule named and versioned.

Why several rules: published medical-VLM numbers disagree mostly because every kit scores the same
reply differently (see ``shared/docs/paper-notes.md`` section 3). We ship our own default rule and
faithful re-implementations of three kits' rules, quirks included, and every report names the rules
that produced it. A rule's behaviour never changes under the same name: a change means ``@2``.

Rules (``RULES``):

- ``gmai@1`` (default). Extraction: ``<think>`` blocks dropped; the last ``<answer>...</answer>``
  block, else the last balanced ``\\boxed{}``, else the whole reply; then the text after the last
  "answer is" / "answer:" / "final answer". Yes/no questions (gold normalises to yes or no): the
  reply's *polarity* (see :func:`polarity`): uncertainty ("cannot be determined") and hedges
  ("yes and no") give no verdict (wrong); a leading yes-/no-word decides; otherwise the first
  yes-like or negation word ("no", "not", "n't", "without", "absent", ...) decides; a reply
  without any polarity word ("nodule") gives no verdict. Other questions: exact match after
  :func:`normalize_text` (lower case, punctuation to spaces, articles dropped). Multiple choice:
  :func:`extract_choice` (letter, "B) Pneumonia", "(B)", "Option B", or an option's text).
- ``gmai-recall@1``: as ``gmai@1`` but non-yes/no questions are correct when token recall of
  the gold answer (after :func:`normalize_text`) is >= 0.75.
- ``gmai-synonyms@1``: as ``gmai@1``, and a non-yes/no answer is also correct when the whole
  extracted answer and the whole gold are names of the same thing in :data:`SYNONYMS` (imaging
  modalities from :mod:`gmai.data.modalities`, British/American spellings, plane names). Only true
  equivalents are listed: a part is not its whole ("brain" is not "head"), a finding not a
  diagnosis ("mass" is not "tumor"), and single letters ("l") are not names.
- ``lmms-eval-exact@1``: lmms-eval's SLAKE scorer. Exact match after :func:`lmms_normalize`.
  Closed vs open from the dataset's ``answer_type``. No tag extraction.
- ``multimedeval@1``: MultiMedEval's VQA scorer. VQA-v2 cleaning (:func:`vqa_v2_clean`), tokens
  compared as sets; closed when the cleaned gold is yes/no: correct when recall >= 0.4, a gold
  "no" also matched by "not"; open: correct when recall >= 0.75.
- ``medevalkit@1``: MedEvalKit's VQA scorer. :func:`medevalkit_extract`, then closed (gold
  yes/no): substring tests (exactly one of ``"yes" in r`` / ``"no" in r`` and the gold in r); open:
  exact string equality with no punctuation removal; multiple choice: its ``judge_multi_choice``.

The kits' rules are written from their documented behaviour (paper-notes section 3 and reading
their code); none of their code is copied here.
"""

from __future__ import annotations

import difflib
import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

YES, NO = "yes", "no"

# ---------------------------------------------------------------------------------------------
# Answer extraction
# ---------------------------------------------------------------------------------------------

_THINK_RE = re.compile(r"<think>.*?(</think>|$)", re.S | re.I)
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
# "The answer is: X", "Final answer: X", "**Answer**: X", "answer - X"
_ANSWER_IS_RE = re.compile(r"(?:final\s+answer|answer)\s*(?:\*\*)?\s*(?:is\b\s*:?|:|-)\s*", re.I)
_EDGE_JUNK = " \t\r\n\"'`*_.,;:!?"


def extract_tag(text: str, tag: str = "answer") -> str | None:
    """Content of the last ``<tag>...</tag>`` block, or None when there is none."""
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", text, re.S | re.I)
    return blocks[-1].strip() if blocks else None


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` with balanced braces, or None (absent or unbalanced)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for i in range(begin, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return text[begin:i].strip()
            depth -= 1
    return None


def strip_answer_preamble(text: str) -> str:
    """The text after the last "answer is" / "answer:" / "final answer:" marker (else ``text``)."""
    matches = list(_ANSWER_IS_RE.finditer(text))
    if not matches:
        return text
    tail = text[matches[-1].end():]
    return tail if tail.strip() else text


def extract_answer(text: str, rule: str = "gmai@1") -> str:
    """The answer span of a reply, as the named rule sees it.

    ``gmai@1``/``gmai-recall@1``: drop ``<think>``, take the last ``<answer>`` block, else the last
    balanced ``\\boxed{}``, else the reply; then the text after the last "answer is"; edge
    punctuation and markdown stripped. ``medevalkit@1``: :func:`medevalkit_extract`.
    ``lmms-eval-exact@1`` and ``multimedeval@1`` do no extraction (the reply itself).
    """
    text = "" if text is None else str(text)
    if rule.startswith("medevalkit"):
        return medevalkit_extract(text)
    if rule.startswith(("lmms-eval", "multimedeval")):
        return text
    text = _THINK_RE.sub(" ", text)
    span = extract_tag(text, "answer")
    if span is None:
        span = extract_boxed(text)
        if span is not None:  # \boxed{\text{left lung}} -> left lung
            span = re.sub(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}", r"\1", span)
    if span is None:
        span = text
    span = strip_answer_preamble(span)
    return span.strip(_EDGE_JUNK)


# ---------------------------------------------------------------------------------------------
# Our normalisation and the default closed-question rule
# ---------------------------------------------------------------------------------------------

_ARTICLES = {"a", "an", "the"}
_PUNCT_TO_SPACE = str.maketrans({c: " " for c in string.punctuation})


def normalize_text(text: str, drop_articles: bool = True) -> str:
    """Lower case, "n't" -> " not", punctuation to spaces, articles dropped, spaces collapsed."""
    text = str(text).lower().replace("n't", " not").replace("’", "'")
    tokens = text.translate(_PUNCT_TO_SPACE).split()
    if drop_articles:
        tokens = [t for t in tokens if t not in _ARTICLES]
    return " ".join(tokens)


def tokens(text: str) -> list[str]:
    return normalize_text(text).split()


_YES_LEAD = {"yes", "yeah", "yep", "yup", "true", "correct", "affirmative", "y"}
_NO_LEAD = {"no", "nope", "false", "incorrect", "negative", "n", "not", "none", "absent", "never"}
_YES_ANYWHERE = {"yes", "yeah", "yep", "true", "correct", "present", "positive", "seen", "visible"}
_NO_ANYWHERE = {"no", "not", "nope", "none", "never", "without", "absent", "negative", "false",
                "cannot", "neither", "nor"}
_UNCERTAIN_RE = re.compile(
    r"\b(cannot|can not|unable to|impossible to|hard to|difficult to)\s+(be\s+)?"
    r"(determine|determined|tell|say|assess|assessed|evaluate|evaluated|answer)"
    r"|\b(not sure|unsure|uncertain|unclear|unknown|indeterminate|inconclusive|don't know|do not know)\b"
    r"|(?<![a-z])n/a(?![a-z])")
_HEDGE_RE = re.compile(r"\b(yes\s*(and|or|/)\s*no|no\s*(and|or|/)\s*yes)\b")


def polarity(reply: str, rule: str = "gmai@1") -> str | None:
    """``"yes"``, ``"no"`` or None (no verdict) for a reply to a yes/no question (default rule).

    Order: extract the answer span; uncertainty phrases and "yes and no"/"yes or no" hedges -> None;
    a leading yes-word or no-word decides ("No, there is no fracture" -> no; "Yes, there is no
    fracture" -> yes); otherwise the first polarity word anywhere ("There is no fracture" -> no,
    "Fracture is present" -> yes); none at all ("nodule") -> None.
    """
    span = extract_answer(reply, rule).lower()
    if _UNCERTAIN_RE.search(span) or _HEDGE_RE.search(span):
        return None
    words = tokens(span)
    if not words:
        return None
    if words[0] in _YES_LEAD:
        return YES
    if words[0] in _NO_LEAD:
        return NO
    for word in words:
        if word in _NO_ANYWHERE:
            return NO
        if word in _YES_ANYWHERE:
            return YES
    return None


def gold_polarity(gold: str) -> str | None:
    """yes/no when the gold answer normalises to exactly one of them, else None."""
    norm = normalize_text(gold)
    return norm if norm in (YES, NO) else None


def token_recall(pred: str, gold: str) -> float:
    """Share of the gold's distinct tokens found in the prediction (both :func:`normalize_text`)."""
    gold_set, pred_set = set(tokens(gold)), set(tokens(pred))
    return len(gold_set & pred_set) / len(gold_set) if gold_set else 0.0


def token_f1(pred: str, gold: str) -> float:
    """SQuAD-style token F1 over token multisets (both :func:`normalize_text`)."""
    p, g = tokens(pred), tokens(gold)
    common = sum((Counter(p) & Counter(g)).values())
    if not p or not g or common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def exact_match(pred: str, gold: str) -> bool:
    return normalize_text(pred) == normalize_text(gold)


# ---------------------------------------------------------------------------------------------
# Multiple choice
# ---------------------------------------------------------------------------------------------

_LEADING_LETTER_RE = re.compile(r"^\s*(?:\(([A-Za-z])\)|([A-Z])\s*[\).:\]]"
                                r"|(?:[Oo]ption|[Cc]hoice)\s*\(?([A-Za-z])\b\)?)")
_LONE_CAPITAL_RE = re.compile(r"(?<![A-Za-z0-9])([A-Z])(?![A-Za-z0-9])")


def extract_choice(reply: str, options: Mapping[str, str], rule: str = "gmai@1") -> str | None:
    """The option letter a reply picks, or None when the rules cannot tell.

    Tried in order on the extracted answer span: a bare letter ("B", "(b)", "B."); a leading
    letter ("B) Pneumonia", "(B) ...", "Option B"); the span equals one option's text; exactly one
    option's text (or the longest one containing all others found) occurs in the span; exactly one
    lone capital letter that is an option ("I pick C"), ignoring "A"/"I" used as words.
    """
    letters = {k.upper(): v for k, v in options.items()}
    span = extract_answer(reply, rule)
    bare = re.fullmatch(r"\(?\s*([A-Za-z])\s*[\).:]?", span.strip())
    if bare and bare.group(1).upper() in letters:
        return bare.group(1).upper()
    lead = _LEADING_LETTER_RE.match(span)
    if lead:
        letter = next(g for g in lead.groups() if g).upper()
        if letter in letters:
            return letter
    norm_span = normalize_text(span)
    norm_opts = {k: normalize_text(v) for k, v in letters.items() if normalize_text(v)}
    exact = [k for k, v in norm_opts.items() if v == norm_span]
    if len(exact) == 1:
        return exact[0]
    padded = f" {norm_span} "
    found = [k for k, v in norm_opts.items() if f" {v} " in padded]
    if len(found) == 1:
        return found[0]
    if found:
        longest = max(found, key=lambda k: len(norm_opts[k]))
        if all(f" {norm_opts[k]} " in f" {norm_opts[longest]} " for k in found):
            return longest
        return None
    capitals = set()
    for m in _LONE_CAPITAL_RE.finditer(span):
        letter, after = m.group(1), span[m.end():m.end() + 2]
        if letter in ("A", "I") and re.match(r"\s[a-z]", after):
            continue  # the article / pronoun, not an option
        if letter in letters:
            capitals.add(letter)
    return capitals.pop() if len(capitals) == 1 else None


def gold_letter(gold: str, options: Mapping[str, str]) -> str | None:
    """The gold option letter: ``gold`` itself when it is a letter, else the option with its text."""
    g = str(gold).strip()
    letters = {k.upper(): v for k, v in options.items()}
    if g.upper() in letters:
        return g.upper()
    hits = [k for k, v in letters.items() if normalize_text(v) == normalize_text(g)]
    return hits[0] if len(hits) == 1 else None


# ---------------------------------------------------------------------------------------------
# lmms-eval (its SLAKE scorer) exact match
# ---------------------------------------------------------------------------------------------

_ZH_PUNCT = "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～、，。；：《》？【】（）"
_LMMS_PUNCT = str.maketrans({c: " " for c in string.punctuation + _ZH_PUNCT})
_LMMS_YES = {"yes", "yeah", "yep", "true", "是", "是的", "有", "包含", "可以", "能", "会", "正常"}
_LMMS_NO = {"no", "nope", "false", "否", "不是", "没有", "无", "不包含", "不能", "不会", "不可以", "不正常", "异常"}


def lmms_normalize(text: str) -> str:
    """lmms-eval's SLAKE answer normalisation (articles kept; whole-reply yes/no synonyms)."""
    text = "" if text is None else str(text)
    text = text.strip().lower()
    text = re.sub(r"\([^)]*\)", " ", text)
    text = re.sub(r"（[^）]*）", " ", text)
    text = re.sub(r"\s+", " ", text.translate(_LMMS_PUNCT)).strip()
    if text in ("x ray", "xray"):
        text = "xray"
    if text in _LMMS_YES:
        return YES
    if text in _LMMS_NO:
        return NO
    return text


# ---------------------------------------------------------------------------------------------
# MultiMedEval: VQA-v2 answer cleaning, set-based recall
# ---------------------------------------------------------------------------------------------

# VQA-v2's contraction table (the no-apostrophe spelling -> the spelling with apostrophes), with
# its irregular entries kept as they are: they are part of the rule.
_CONTRACTIONS = dict(pair.split("=") for pair in """
aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've
couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've
hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's
howd=how'd howll=how'll hows=how's Id've=I'd've I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd
itd've=it'd've it'dve=it'd've itll=it'll let's=let's maam=ma'am mightnt=mightn't
mightnt've=mightn't've mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've
neednt=needn't notve=not've oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at
'ow'sat='ow's'at shant=shan't shed've=she'd've she'dve=she'd've she's=she's shouldve=should've
shouldnt=shouldn't shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd
somebodyd've=somebody'd've somebody'dve=somebody'd've somebodyll=somebody'll somebodys=somebody's
someoned=someone'd someoned've=someone'd've someone'dve=someone'd've someonell=someone'll
someones=someone's somethingd=something'd somethingd've=something'd've
something'dve=something'd've somethingll=something'll thats=that's thered=there'd
thered've=there'd've there'dve=there'd've therere=there're theres=there's theyd=they'd
theyd've=they'd've they'dve=they'd've theyll=they'll theyre=they're theyve=they've twas='twas
wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've werent=weren't whatll=what'll
whatre=what're whats=what's whatve=what've whens=when's whered=where'd wheres=where's
whereve=where've whod=who'd whod've=who'd've who'dve=who'd've wholl=who'll whos=who's whove=who've
whyll=why'll whyre=why're whys=why's wont=won't wouldve=would've wouldnt=wouldn't
wouldnt've=wouldn't've wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll y'allll=y'all'll
yall'd've=y'all'd've y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've
you'dve=you'd've youll=you'll youre=you're youve=you've
""".split())
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                 "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_VQA_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@",
              "`", ",", "?", "!"]
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")


def vqa_v2_clean(text: str) -> str:
    """MultiMedEval's ``clean_str``: the VQA-v2 answer normalisation, quirks included.

    Lower case; each punctuation mark in the VQA list is deleted when it touches a space anywhere
    in the string (or the string has a digit,digit comma), else turned into a space; a period not
    followed by a digit is deleted (at most 32 of them: the upstream call passes ``re.UNICODE`` as
    the count); number words become digits ("none" -> "0"); articles dropped; the contraction table;
    remaining commas deleted. ":" and "'" are left alone.
    """
    lowered = str(text).lower()
    out = lowered
    glued = _DIGIT_COMMA_DIGIT.search(lowered) is not None
    for mark in _VQA_PUNCT:
        touches_space = (mark + " ") in lowered or (" " + mark) in lowered
        out = out.replace(mark, "" if (touches_space or glued) else " ")
    out = _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=32)
    words = [_NUMBER_WORDS.get(w, w) for w in out.split()]
    words = [_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES]
    return " ".join(words).replace(",", "")


def multimedeval_verdict(pred: str, gold: str) -> tuple[bool, str, float]:
    """(correct, "closed"|"open", recall) under MultiMedEval's VQA rule."""
    clean_gold = vqa_v2_clean(str(gold).lower().strip())
    gold_set = set(clean_gold.split())
    pred_set = set(vqa_v2_clean(pred).split())
    if clean_gold in (YES, NO):
        if gold_set == {NO}:
            gold_set.add("not")
        recall = len(pred_set & gold_set) / len(gold_set)
        return recall >= 0.4, "closed", recall
    recall = len(pred_set & gold_set) / len(gold_set) if gold_set else 0.0
    return recall >= 0.75, "open", recall


# ---------------------------------------------------------------------------------------------
# MedEvalKit: boxed / <answer> extraction, answer-pattern splitting, substring tests
# ---------------------------------------------------------------------------------------------

_MEDEVALKIT_PATTERNS = ["**answer**:", "**answer**", "*answer*:", "**answer:**", "answer is", "answer:",
                        "答案:", "final answer", "final answer is"]


def _mek_boxed(text: str) -> str:
    """The last ``\\boxed{}`` content (balanced), or the literal string "None" (upstream's sentinel)."""
    found = extract_boxed(text)
    return "None" if found is None else found


def _mek_answer_blocks(text: str) -> str:
    """All ``<answer>`` blocks joined by spaces (case-sensitive tags); the text when there are none."""
    blocks = re.findall(r"<answer>(.*?)</answer>", text, re.S)
    joined = "".join(b + " " for b in blocks).strip()
    return joined if joined else text


def _mek_parse_response(response: str) -> str:
    response = response.lower()
    if "boxed" in response:
        response = _mek_boxed(response)
    elif "<answer>" in response:
        response = _mek_answer_blocks(response)
    for pattern in _MEDEVALKIT_PATTERNS:  # applied one after another, each on the previous result
        if pattern in response:
            response = response.split(pattern)[-1]
    return response


def medevalkit_extract(reply: str) -> str:
    """MedEvalKit's answer span: boxed / answer blocks, lower+strip, then its answer patterns."""
    reply = "" if reply is None else str(reply)
    boxed = _mek_boxed(reply)
    if boxed != "None":
        reply = boxed
    elif "<answer>" in reply:
        reply = _mek_answer_blocks(reply)
    return _mek_parse_response(reply.lower().strip())


def medevalkit_closed(pred: str, gold: str) -> bool:
    """Exactly one of ``"yes" in r`` / ``"no" in r`` (substrings!) and the gold in r."""
    r = medevalkit_extract(pred).replace("\n", "").replace(".", "")
    gold = str(gold).lower().strip()
    return (("yes" in r) != ("no" in r)) and gold in r


def medevalkit_open(pred: str, gold: str) -> bool:
    """Exact string equality after extraction; no punctuation removal, no final strip."""
    return medevalkit_extract(pred) == str(gold).lower().strip()


def medevalkit_choice(pred: str, gold: str, options: Sequence[str]) -> bool:
    """MedEvalKit's ``judge_multi_choice``: letter / option text, else the most similar option."""
    alphas = [chr(ord("a") + i) for i in range(len(options))]
    response = ("" if pred is None else str(pred)).lower()
    first, last = response.split("\n\n")[0], response.split("\n\n")[-1].split(".")[0]
    if first in alphas:
        response = first
    elif last in alphas:
        response = last
    response = _mek_parse_response(response).strip().lower().replace("\n", "")
    split_response = response.split(".")[0].split(":")[-1]
    choices = [c.lower() for c in options]
    answer = str(gold).strip().lower()
    if split_response == answer:
        return True
    if split_response in alphas:
        return choices[ord(split_response) - ord("a")] == answer
    if split_response in choices:
        return answer in alphas and split_response == choices[ord(answer) - ord("a")]
    best, best_ratio = 0, 0.0  # ties and all-zero similarity fall back to the first option
    for i, choice in enumerate(choices):
        ratio = difflib.SequenceMatcher(None, choice, response).ratio()
        if ratio > best_ratio:
            best, best_ratio = i, ratio
    return alphas[best] == answer or choices[best] == answer


# ---------------------------------------------------------------------------------------------
# Open-question metrics (maintained libraries: nltk BLEU, rouge-score ROUGE-L)
# ---------------------------------------------------------------------------------------------

def bleu_scores(pred: str, gold: str) -> dict[str, float]:
    """BLEU-1..4 (nltk ``sentence_bleu``, cumulative weights, smoothing method 1) on our tokens."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    hyp, ref = tokens(pred), tokens(gold)
    if not hyp or not ref:
        return {f"bleu{n}": 0.0 for n in range(1, 5)}
    smooth = SmoothingFunction().method1
    return {f"bleu{n}": float(sentence_bleu([ref], hyp, weights=tuple([1 / n] * n), smoothing_function=smooth))
            for n in range(1, 5)}


_ROUGE = None


def rouge_l(pred: str, gold: str) -> float:
    """ROUGE-L F-measure (rouge-score)."""
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"])
    return float(_ROUGE.score(str(gold), str(pred))["rougeL"].fmeasure)


def open_metrics(pred: str, gold: str, rule: str = "gmai@1") -> dict[str, float]:
    """Continuous metrics of an open answer: exact, recall, F1, BLEU-1..4, ROUGE-L (extracted span)."""
    span = extract_answer(pred, rule)
    return {"exact": float(exact_match(span, gold)), "recall": token_recall(span, gold),
            "f1": token_f1(span, gold), **bleu_scores(span, gold), "rougeL": rouge_l(span, gold)}


# ---------------------------------------------------------------------------------------------
# The rule registry
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """One rule's judgement of one reply. ``kind`` is the question type *as the rule sees it*."""

    correct: bool
    kind: str  # "closed" | "open" | "choice"


@dataclass(frozen=True)
class Rule:
    name: str  # "<family>@<version>"
    description: str
    judge: Callable[[str, str, str, Mapping[str, str]], Verdict | None]  # (pred, gold, answer_type, options)

    @property
    def version(self) -> int:
        return int(self.name.rsplit("@", 1)[1])


def score_closed(pred: str, gold: str, rule: str = "gmai@1") -> bool:
    """Is ``pred`` right for a yes/no gold answer under ``rule``?"""
    return RULES[rule].judge(pred, gold, "closed", {}).correct


def score_open(pred: str, gold: str, rule: str = "gmai@1") -> bool:
    """Is ``pred`` right for an open (free-text) gold answer under ``rule``?"""
    return RULES[rule].judge(pred, gold, "open", {}).correct


def score_choice(pred: str, gold: str, options: Mapping[str, str], rule: str = "gmai@1") -> bool:
    """Is ``pred`` right for a multiple-choice question (gold: a letter or the option's text)?"""
    verdict = RULES[rule].judge(pred, gold, "choice", options)
    if verdict is None:
        raise ValueError(f"rule {rule!r} does not score multiple-choice questions")
    return verdict.correct


def _gmai_judge(pred: str, gold: str, answer_type: str, options: Mapping[str, str],
                open_threshold: float | None = None) -> Verdict:
    if answer_type == "choice":
        letter = gold_letter(gold, options)
        return Verdict(letter is not None and extract_choice(pred, options) == letter, "choice")
    want = gold_polarity(gold)
    if want is not None:
        return Verdict(polarity(pred) == want, "closed")
    kind = "closed" if answer_type == "closed" else "open"
    span = extract_answer(pred)
    if open_threshold is None:
        return Verdict(exact_match(span, gold), kind)
    return Verdict(token_recall(span, gold) >= open_threshold, kind)


def _synonym_table() -> dict[str, list[str]]:
    from gmai.data.modalities import ANSWER_SYNONYMS

    spelled = {"tumor": ["tumour"], "hemorrhage": ["haemorrhage"], "edema": ["oedema"], "anemia": ["anaemia"],
               "ischemia": ["ischaemia"], "esophagus": ["oesophagus"], "fetus": ["foetus"], "leukemia":
               ["leukaemia"], "hematoma": ["haematoma"], "anesthesia": ["anaesthesia"], "fetal": ["foetal"],
               "esophageal": ["oesophageal"], "hemangioma": ["haemangioma"]}
    planes = {"axial": ["transverse", "axial plane", "transverse plane"], "coronal": ["coronal plane", "frontal plane"],
              "sagittal": ["sagittal plane"], "left": ["left side"], "right": ["right side"]}
    return {**{k.lower(): v for k, v in ANSWER_SYNONYMS.items()}, **spelled, **planes}


#: canonical name -> other names of the same thing (compared after :func:`normalize_text`), version 1
SYNONYMS: dict[str, list[str]] = _synonym_table()
_SYNONYM_INDEX: dict[str, str] = {}
for _canonical, _others in SYNONYMS.items():
    for _name in (_canonical, *_others):
        _SYNONYM_INDEX.setdefault(normalize_text(_name), normalize_text(_canonical))


def canonical_answer(text: str) -> str:
    """:func:`normalize_text`, with a whole answer listed in :data:`SYNONYMS` replaced by its canonical
    name ("Magnetic resonance imaging" -> "mr")."""
    norm = normalize_text(text)
    return _SYNONYM_INDEX.get(norm, norm)


def _synonym_judge(pred: str, gold: str, answer_type: str, options: Mapping[str, str]) -> Verdict:
    verdict = _gmai_judge(pred, gold, answer_type, options)
    if verdict.correct or verdict.kind == "choice" or gold_polarity(gold) is not None:
        return verdict
    return Verdict(canonical_answer(extract_answer(pred)) == canonical_answer(gold), verdict.kind)


def _lmms_judge(pred: str, gold: str, answer_type: str, options: Mapping[str, str]) -> Verdict | None:
    if answer_type == "choice":
        return None  # its SLAKE scorer has no multiple-choice path
    return Verdict(lmms_normalize(pred) == lmms_normalize(gold), answer_type)


def _multimedeval_judge(pred: str, gold: str, answer_type: str, options: Mapping[str, str]) -> Verdict | None:
    if answer_type == "choice":
        return None
    correct, kind, _ = multimedeval_verdict(pred, gold)
    return Verdict(correct, kind)


def _medevalkit_judge(pred: str, gold: str, answer_type: str, options: Mapping[str, str]) -> Verdict:
    if answer_type == "choice":
        letters = sorted(options)
        return Verdict(medevalkit_choice(pred, gold, [options[k] for k in letters]), "choice")
    if str(gold).lower().strip() in (YES, NO):
        return Verdict(medevalkit_closed(pred, gold), "closed")
    return Verdict(medevalkit_open(pred, gold), "open")


RULES: dict[str, Rule] = {r.name: r for r in [
    Rule("gmai@1", "ours: tag/boxed/'answer is' extraction; yes/no by polarity with negation and "
         "hedge handling; open by normalised exact match; choice by letter/option-text extraction",
         lambda p, g, t, o: _gmai_judge(p, g, t, o)),
    Rule("gmai-recall@1", "as gmai@1, but non-yes/no answers are correct at token recall >= 0.75",
         lambda p, g, t, o: _gmai_judge(p, g, t, o, open_threshold=0.75)),
    Rule("gmai-synonyms@1", "as gmai@1, and a non-yes/no answer is also correct when it and the gold are names "
         "of the same thing in scoring.SYNONYMS (modalities, spellings, planes)", _synonym_judge),
    Rule("lmms-eval-exact@1", "lmms-eval SLAKE scorer: exact match after its normalisation; closed/open "
         "from the dataset's answer_type; no extraction; no multiple choice", _lmms_judge),
    Rule("multimedeval@1", "MultiMedEval VQA: VQA-v2 cleaning, token sets; closed (gold yes/no) at recall "
         ">= 0.4 with 'not' matching 'no'; open at recall >= 0.75; no multiple choice", _multimedeval_judge),
    Rule("medevalkit@1", "MedEvalKit: boxed/<answer>/'answer is' extraction; closed by yes/no substring "
         "tests; open by exact string equality; choice by its judge_multi_choice", _medevalkit_judge),
]}
DEFAULT_RULE = "gmai@1"


def judge(pred: str, gold: str, answer_type: str, options: Mapping[str, str] | None = None,
          rule: str = DEFAULT_RULE) -> Verdict | None:
    """One rule's verdict on one reply; None when the rule does not score that question type."""
    if rule not in RULES:
        raise KeyError(f"unknown scoring rule {rule!r}; known: {', '.join(RULES)}")
    return RULES[rule].judge("" if pred is None else str(pred), str(gold), answer_type, options or {})


def describe_rules(names: Sequence[str] | None = None) -> dict[str, dict[str, object]]:
    """Name -> {version, description}, for reports."""
    return {n: {"version": RULES[n].version, "description": RULES[n].description} for n in (names or RULES)}
