"""The template generator: deterministic, offline, grounded in the record by construction.

Every format has several phrasings (prompt banks and answer banks) picked uniformly by the
record's own ``random.Random``; each pick is recorded as a template id (``family.index``) so the
build can report how often each phrasing was used and check that no single one dominates.

Box convention (also used by the verifier and the LLM prompt): ``<box>[[x1,y1,x2,y2]]</box>`` with
coordinates normalised to [0, 1] and written with exactly 3 decimals (``[[0.125,0.300,0.480,0.615]]``);
several boxes of one phrase are ``[[...],[...]]``. ``<ref>label</ref>`` marks the phrase a box grounds.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from gmai.data.generate import Sample
from gmai.data.masks import location_phrase  # the same words as MaskFacts.location
from gmai.data.modalities import modality_noun
from gmai.data.records import Box, Record

IMAGE_TOKEN = "<image>"

# --------------------------------------------------------------------------------------------
# Words for things


# Acronym letters that are read with a leading vowel sound ("an MRI", "an X-ray", "an OCT").
_VOWEL_SOUND_LETTERS = set("AEFHILMNORSX")


def with_article(noun: str) -> str:
    first = noun.split()[0]
    acronym = len(first) > 1 and first[0].isupper() and (first[1].isupper() or first[1] == "-")
    if acronym:  # read letter by letter: "an MRI", "a CT", "an X-ray"
        vowel = first[0] in _VOWEL_SOUND_LETTERS
    else:
        vowel = first[0].lower() in "aeiou"
    return f"{'an' if vowel else 'a'} {noun}"


def label_text(label: str) -> str:
    """Dataset label -> words ('no_lesion' -> 'no lesion'). The verifier normalises the same way."""
    return " ".join(str(label).replace("_", " ").split())


def organ_text(organ: str) -> str:
    organ = organ.strip()
    return organ.lower() if organ.isupper() else organ


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def format_box(box: Box) -> str:
    return "[" + ",".join(f"{v:.3f}" for v in (box.x1, box.y1, box.x2, box.y2)) + "]"


def box_tag(boxes: list[Box]) -> str:
    return "<box>[" + ",".join(format_box(b) for b in boxes) + "]</box>"


def percent(fraction: float) -> str:
    pct = 100.0 * fraction
    return "less than 1%" if pct < 1 else f"about {round(pct)}%"


# --------------------------------------------------------------------------------------------
# Phrase banks. Placeholders: {noun} {a_noun} {A_noun} {of_organ} {label} {Label} {facts}
# {box} {ref} {location} {pct} {n} {c} {modality} {organ} {report}

BANKS: dict[str, list[str]] = {
    "caption.prompt": [
        "Describe this image.", "Give a short description of this medical image.", "What does this image show?",
        "Write a caption for this image.", "Summarise what is visible in this {noun}.",
        "Provide a brief description of the image.", "Explain the content of this {noun}.",
        "Caption this {noun} in one or two sentences.",
    ],
    "caption.cls": [
        "{A_noun}{of_organ} showing {label}.", "This {noun}{of_organ} is consistent with {label}.",
        "The image is {a_noun}{of_organ}; the finding is {label}.", "{A_noun}{of_organ}. Finding: {label}.",
        "This {noun} demonstrates {label}.", "The appearance of this {noun}{of_organ} corresponds to {label}.",
        "{Label} is seen on this {noun}{of_organ}.", "Category: {label}. The image is {a_noun}{of_organ}.",
    ],
    "caption.regions": [
        "{A_noun}{of_organ}. Visible findings: {facts}.", "This {noun}{of_organ} shows {facts}.",
        "In this {noun}, the annotated findings are {facts}.", "The image is {a_noun}{of_organ} containing {facts}.",
        "Annotated structures on this {noun}{of_organ}: {facts}.", "{A_noun}{of_organ} in which one can see {facts}.",
    ],
    "caption.plain": [
        "{A_noun}{of_organ}.", "This is {a_noun}{of_organ}.", "The image is {a_noun}{of_organ}.",
        "A medical image: {a_noun}{of_organ}.", "This picture is {a_noun}{of_organ}.",
        "Shown here is {a_noun}{of_organ}.",
    ],
    "report.prompt": [
        "Write the report for this {noun}.", "Generate a report describing this image.",
        "What are the findings in this {noun}? Answer as a report.", "Provide a diagnostic report for this image.",
        "Describe the findings of this {noun} as a clinician would.", "Write a findings section for this image.",
    ],
    "region.prompt": [
        "Describe the region {box}.", "What is in the area {box}?", "What can be seen inside {box}?",
        "Give a caption for the region {box}.", "Explain the content of the marked region {box}.",
        "Tell me about the region at {box}.",
    ],
    "region.answer": [
        "This region contains {ref}.", "This region shows {ref}, in the {location} part of the image.",
        "This region corresponds to {ref} on the {noun}.",
        "This region is {ref}, located in the {location} part of the image.",
        "This region highlights {ref}, covering {pct} of the image.", "This region of the {noun} depicts {ref}.",
    ],
    "ground.prompt": [
        "Where is the {label} in this image?", "Locate the {label} and give its bounding box.",
        "Find {ref} in the image.", "Give the bounding box of the {label}.", "Mark the {label} in this {noun}.",
        "Which area of the image contains the {label}?",
    ],
    "ground.answer": [
        "{ref}{box}", "The {ref} is at {box}.", "{ref} is found at {box}.", "Bounding box of {ref}: {box}.",
        "The {ref} lies in the {location} part of the image, at {box}.", "It is located at {box}.",
    ],
    "qa_open.prompt": [
        "What is the finding in this image?", "What does this {noun} show?", "Which category does this image belong to?",
        "What is the most likely label for this image?", "Based on the image, what is the finding?",
        "Name the condition shown in this {noun}.", "How would you classify this image?",
    ],
    "qa_open.answer": [
        "{Label}.", "The image shows {label}.", "This is {label}.", "It is consistent with {label}.",
        "{label}", "The finding is {label}.",
    ],
    "qa_region_open.prompt": [
        "Which structure is annotated in this image?", "What finding is marked in this image?",
        "What is visible in this {noun}?", "Name the annotated structure.", "What does the annotation in this image show?",
        "Which abnormality or structure can be seen in this {noun}?",
    ],
    "qa_region_open.answer": ["{Label}.", "{label}", "The {label}.", "It shows {label}.",
                              "The annotated structure is {label}.", "This image shows {label}."],
    "qa_presence.prompt": [
        "Is there {c} in this image?", "Does this image contain {c}?", "Can {c} be seen in this {noun}?",
        "Is {c} visible in this image?", "Is any {c} present?", "Does this {noun} show {c}?",
    ],
    "qa_presence.yes": ["Yes.", "Yes, {c} is visible.", "Yes, the image contains {c}.", "Yes, there is {c}."],
    "qa_presence.no": ["No.", "No, there is no {c}.", "No, the image shows {label}.", "No, there is no {c} here."],
    "qa_yesno.prompt": [
        "Does this image show {c}?", "Is this {noun} consistent with {c}?", "Is the finding in this image {c}?",
        "Would you classify this image as {c}?", "Is this an image of {c}?", "Can {c} be seen in this {noun}?",
    ],
    "qa_yesno.yes": ["Yes.", "Yes, the image shows {label}.", "Yes, it is {label}.", "Yes, this is consistent with {label}."],
    "qa_yesno.no": ["No.", "No, the image shows {label}.", "No, this is {label}, not {c}.", "No, it is consistent with {label}."],
    "qa_choice.prompt": [
        "Which of the following best describes this image?", "What is shown in this {noun}? Choose one option.",
        "Select the correct finding for this image.", "Which label fits this image?",
        "Pick the finding that matches this {noun}.", "Choose the category of this image from the options below.",
    ],
    "qa_choice.answer": ["{letter}. {label}", "{letter}", "The answer is {letter}. {label}", "{letter}. {Label}."],
    "percept_modality.prompt": [
        "What imaging modality was used for this image?", "What kind of image is this?",
        "Which modality is this image from?", "Identify the imaging technique.",
        "What type of medical image is this?", "How was this image acquired?",
    ],
    # every answer contains the modality verbatim: it is the gold answer the held-out split scores against
    "percept_modality.answer": [
        "{Modality}.", "This is {a_modality_image}.", "The modality is {modality}.", "It was acquired with {modality}.",
        "{modality}", "Imaging modality: {modality}.",
    ],
    "percept_organ.prompt": [
        "Which organ is shown in this image?", "What body part is imaged?", "What anatomical region does this image cover?",
        "Which part of the body is this {noun} of?", "Name the organ in this image.", "What anatomy is visible here?",
    ],
    "percept_organ.answer": ["The {organ}.", "This image shows the {organ}.", "{Organ}.", "It is an image of the {organ}.",
                             "{organ}", "The imaged region is the {organ}."],
    "percept_location.prompt": [
        "In which part of the image is the {label}?", "Where is the {label} located?",
        "Which part of the image contains the {label}?", "Describe the position of the {label}.",
        "Is the {label} on the left, right, upper, lower or central part of the image?",
        "Where in this {noun} can the {label} be found?",
    ],
    "percept_location.answer": [
        "In the {location} part of the image.", "The {label} is in the {location} part of the image.",
        "{Location}.", "It is located in the {location} region.", "{location}", "Mostly in the {location} area.",
    ],
    "percept_count.prompt": [
        "How many {label} regions are there?", "Count the {label} regions in this image.",
        "How many separate {label} areas can be seen?", "What is the number of {label} regions in this {noun}?",
        "How many instances of {label} does this image contain?", "Give the count of {label} regions.",
    ],
    "percept_count.answer": ["{n}.", "The count is {n}.", "{n}", "Number of {label} regions: {n}.", "I count {n}.",
                             "{n} in total."],
    "vqa.prompt": ["{question}"],
    # a volume as N slices in one conversation (task "volume")
    "volume.intro": [
        "These {n} images are slices of one {noun}, in order.", "Here are {n} evenly spaced slices of the same {noun}.",
        "The {n} images are sections through one {noun}, from first to last.",
        "You are given {n} slices of {a_noun}{of_organ}, in order.",
    ],
    "volume_caption.prompt": ["Describe these slices.", "Describe this volume.", "What do these slices show?",
                              "Summarise what is visible across the slices."],
    "volume_caption.answer": ["{n} slices of {a_noun}{of_organ}: {facts}.", "Across the {n} slices: {facts}.",
                              "{A_noun}{of_organ} shown as {n} slices. {Facts}."],
    "volume_structures.prompt": [
        "Which structures are visible across these slices?", "What annotated structures appear in this volume?",
        "List the structures seen in these slices.", "Which organs or lesions do these slices show?",
    ],
    "volume_structures.answer": ["{structures}.", "The slices show {structures}.", "Visible structures: {structures}.",
                                 "{structures}"],
    "volume_largest.prompt": [
        "On which slice is the {label} largest? Answer with its number, 1 to {n}.",
        "Which of the {n} slices shows the largest section of the {label}?",
        "Give the number of the slice where the {label} is largest.",
    ],
    "volume_largest.answer": ["Slice {k}.", "The {label} is largest on slice {k}.", "{k}", "On slice {k}."],
    "volume_side.prompt": [
        "On which side of the image is the {label}: left, right or center?",
        "Is the {label} on the left or the right of the image?", "Where, left or right in the image, is the {label}?",
    ],
    "volume_side.answer": ["{Side}.", "The {label} is {side_phrase}.", "It lies {side_phrase}.", "{side}"],
    "volume_extent.prompt": [
        "In how many of the {n} slices does the {label} appear?", "On how many slices is the {label} visible?",
        "Count the slices that show the {label}.",
    ],
    "volume_extent.answer": ["{e}.", "The {label} appears on {e} of the {n} slices.", "{e}", "On {e} slices."],
    # multi-label tables (CheXpert-style): which findings, yes/no per finding, "no finding"
    "findings.prompt": [
        "Which findings are present in this {noun}?", "List the findings seen in this image.",
        "What findings does this {noun} show?", "Name every finding present in this image.",
        "Which abnormalities or devices can be seen in this {noun}?", "What are the findings in this image?",
    ],
    "findings.answer": ["{findings}.", "The findings are: {findings}.", "Findings: {findings}.",
                        "This {noun} shows {findings}.", "{findings}"],
    "findings.none": ["No finding.", "There is no finding.", "No finding is present in this {noun}.",
                      "The image shows no finding."],
    # the table's "No Finding" label (CheXpert: no pathology; a support device may still be present)
    "no_finding.prompt": [
        "Is this a study with no finding?", "Would you label this image 'no finding'?",
        "Does the label 'no finding' apply to this {noun}?", "Is this {noun} labelled 'no finding'?",
    ],
    "no_finding.yes": ["Yes.", "Yes, there is no finding.", "Yes, no finding is present."],
    "no_finding.no": ["No.", "No, it shows {label}.", "No, the image shows {label}."],
    "findings_choice.prompt": [
        "Which of the following findings is present in this image?", "Which of these findings does this {noun} show?",
        "Select the finding that is present.", "One of these findings is present: which one?",
    ],
    "multi_turn.prompt": [
        "Let us look at this image together.", "I have a few questions about this image.",
        "Please help me read this {noun}.", "Answer my questions about this image.",
        "Walk me through this image.", "Help me understand this medical image.",
    ],
}


@dataclass
class _Context:
    """The words of one record, computed once (~16 fills per record share them)."""

    noun: str
    organ: str
    modality: str
    regions: list[tuple[str, list[Box], str, float, int]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    perception: list[tuple[str, dict[str, object], str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        a_noun = with_article(self.noun)
        self.words = {
            "noun": self.noun, "a_noun": a_noun, "A_noun": capitalise(a_noun),
            "of_organ": f" of the {self.organ}" if self.organ else "", "modality": self.modality,
            "Modality": capitalise(self.modality), "a_modality_image": with_article(f"{self.modality} image"),
            "organ": self.organ, "Organ": capitalise(self.organ),
        }

    def fill(self, template: str, **extra: object) -> str:
        if not extra:
            return template.format_map(self.words)
        words = {**self.words, **extra}
        for key in ("label", "location"):
            if key in extra:
                words[key.capitalize()] = capitalise(str(extra[key]))
        return template.format_map(words)


class TemplateGenerator:
    """Record -> Samples from phrase banks. Same record + same rng state -> same samples."""

    name = "template"

    def __init__(self, max_regions: int = 2, formats: str | list[str] | None = None) -> None:
        self.max_regions = int(max_regions)
        self.formats = set(formats.split(",") if isinstance(formats, str) else formats or [])
        self.stats: Counter = Counter()

    # ---------------------------------------------------------------- public
    def generate(self, record: Record, rng: random.Random) -> list[Sample]:
        ctx = _Context(noun=modality_noun(record.modality), organ=organ_text(record.organ),
                       modality=record.modality.strip() or "unknown")
        # what several formats read, derived once per record (the formats never modify these lists)
        ctx.regions = self._regions_of(record)
        ctx.labels = self._labels(record)
        ctx.perception = self._perception_facts(record, ctx)
        if record.task == "volume":  # a volume as N images: volume-level questions only
            samples = self._volume(record, ctx, rng)
            return [s for s in samples if s.format in self.formats] if self.formats else samples
        builders = [self._caption, self._report, self._regions, self._grounding, self._instruction,
                    self._vqa, self._perception, self._multi_turn, self._passthrough, self._findings]
        samples: list[Sample] = []
        for build in builders:
            samples.extend(build(record, ctx, rng))
        if self.formats:
            samples = [s for s in samples if s.format in self.formats]
        return samples

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def _pick(rng: random.Random, family: str) -> tuple[str, str]:
        bank = BANKS[family]
        index = rng.randrange(len(bank))
        return bank[index], f"{family}.{index}"

    def _turn(self, rng: random.Random, ctx: _Context, family: str, used: list[str], **extra: object) -> str:
        template, template_id = self._pick(rng, family)
        used.append(template_id)
        return ctx.fill(template, **extra)

    @staticmethod
    def _conv(*turns: str) -> list[dict[str, str]]:
        conv = []
        for i, text in enumerate(turns):
            speaker = "human" if i % 2 == 0 else "gpt"
            value = f"{IMAGE_TOKEN}\n{text}" if i == 0 else text
            conv.append({"from": speaker, "value": value})
        return conv

    @staticmethod
    def _labels(record: Record) -> list[str]:
        return [label_text(x) for x in record.labels if label_text(x)]

    @staticmethod
    def _regions_of(record: Record) -> list[tuple[str, list[Box], str, float, int]]:
        """(label, boxes, location, area fraction, count) per annotated label, in record order."""
        regions = []
        for facts in record.mask_facts:
            regions.append((label_text(facts.label), [facts.box], facts.location, facts.area_fraction, facts.components))
        grouped: dict[str, list[Box]] = {}
        for box in record.boxes:
            grouped.setdefault(label_text(box.label), []).append(box)
        for label, boxes in grouped.items():
            if any(r[0] == label for r in regions):
                continue
            cx = sum((b.x1 + b.x2) / 2 for b in boxes) / len(boxes)
            cy = sum((b.y1 + b.y2) / 2 for b in boxes) / len(boxes)
            area = sum((b.x2 - b.x1) * (b.y2 - b.y1) for b in boxes)
            regions.append((label, boxes, location_phrase(cx, cy), area, len(boxes)))
        return regions

    # ---------------------------------------------------------------- formats
    def _caption(self, record: Record, ctx: _Context, rng: random.Random) -> list[Sample]:
        if record.task in ("vqa", "report", "conversation"):
            return []
        used: list[str] = []
        prompt = self._turn(rng, ctx, "caption.prompt", used)
        regions = ctx.regions
        labels = ctx.labels
        if regions:
            facts = "; ".join(self._fact_phrase(label, loc, area, n) for label, _, loc, area, n in regions)
            answer = self._turn(rng, ctx, "caption.regions", used, facts=facts)
        elif labels:
            answer = self._turn(rng, ctx, "caption.cls", used, label=" and ".join(labels))
        else:
            answer = self._turn(rng, ctx, "caption.plain", used)
        return [Sample("MM-Caption", self._conv(prompt, answer), "caption", used)]

    @staticmethod
    def _fact_phrase(label: str, location: str, area: float, count: int) -> str:
        where = f"in the {location} part of the image" if location else ""
        many = f" ({count} separate regions)" if count > 1 else ""
        return f"{label}{many} {where}, covering {percent(area)} of the image".replace("  ", " ")

    def _report(self, record: Record, ctx: _Context, rng: random.Random) -> list[Sample]:
        if not record.report.strip():
            return []
        used: list[str] = []
        prompt = self._turn(rng, ctx, "report.prompt", used)
        return [Sample("MM-Caption", self._conv(prompt, record.report.strip()), "report", used)]

    def _regions(self, record: Record, ctx: _Context, rng: random.Random) -> list[Sample]:
        samples = []
        regions = ctx.regions
        order = list(range(len(regions)))
        rng.shuffle(order)
        for index in order[: self.max_regions]:
            label, boxes, location, area, _ = regions[index]
            box = boxes[0] if len(boxes) == 1 else boxes[rng.randrange(len(boxes))]
            single_area = (box.x2 - box.x1) * (box.y2 - box.y1) if record.boxes else area
            used: list[str] = []
            prompt = self._turn(rng, ctx, "region.prompt", used, box=box_tag([box]))
            box_location = location_phrase((box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2)
            answer = self._turn(rng, ctx, "region.answer", used, ref=f"<ref>{label}</ref>",
                                location=box_location if record.boxes else location, pct=percent(single_area))
            samples.append(Sample("MM-Caption", self._conv(prompt, answer), "region_caption", used))
        return samples

    def _grounding(self, record: Record, ctx: _Context, rng: random.Random) -> list[Sample]:
        regions = ctx.regions
        if not regions:
            return []
        label, boxes, location, _, _ = regions[rng.randrange(len(regions))]
        used: list[str] = []
        ref = f"<ref>{label}</ref>"
        prompt = self._turn(rng, ctx, "ground.prompt", used, label=label, ref=ref)
        answer = self._turn(rng, ctx, "ground.answer", used, ref=ref, box=box_tag(boxes), location=location, label=label)
        return [Sample("MM-Percept", self._conv(prompt, answer), "grounding", used, question_type="location",
                       answer_type="open", answer=box_tag(boxes))]

    def _instruction(self, record: Record, ctx: _Context, rng: random.Random) -> list[Sample]:
        labels = ctx.labels
        if record.task in ("vqa", "report", "conversation") or not labels or _is_findings_table(record):
            return []  # a findings table's questions come from _findings (its distractors are stated negatives)
        distractors = sorted({label_text(x) for x in record.label_set} - set(labels) - {""})
        if record.task in ("segmentation", "detection"):  # annotated structures: what / is there ...?
            kinds = (["qa_region_open"] if len(labels) == 1 else []) + (["qa_presence"] if distractors else [])
        elif len(labels) == 1:
            kinds = ["qa_open"] + (["qa_yesno", "qa_choice"] if distractors else [])
        else:  # several labels on one image: only presence questions are unambiguous
            kinds = ["qa_presence"] if distractors else []
        if not kinds:
            return []
        kind = kinds[rng.randrange(len(kinds))]
        return [getattr(self, f"_{kind}")(labels, distractors, ctx, rng)]

    def _qa_region_open(self, labels: list[str], distractors: list[str], ctx: _Context, rng: random.Random) -> Sample:
        used: list[str] = []
        prompt = self._turn(rng, ctx, "qa_region_open.prompt", used)
        answer = self._turn(rng, ctx, "qa_region_open.answer", used, label=labels[0])
        return Sample("MM-Instruct", self._conv(prompt, answer), "qa_open", used, "label", "open", labels[0])

    def _qa_presence(self, labels: list[str], distractors: list[str], ctx: _Context, rng: random.Random) -> Sample:
        return self._yes_no(labels, distractors, ctx, rng, "qa_presence")

    def _qa_open(self, labels: list[str], distractors: list[str], ctx: _Context, rng: random.Random) -> Sample:
        used: list[str] = []
        prompt = self._turn(rng, ctx, "qa_open.prompt", used)
        answer = self._turn(rng, ctx, "qa_open.answer", used, label=labels[0])
        return Sample("MM-Instruct", self._conv(prompt, answer), "qa_open", used, "label", "open", labels[0])

    def _qa_yesno(self, labels: list[str], distractors: list[str], ctx: _Context, rng: random.Random) -> Sample:
        return self._yes_no(labels, distractors, ctx, rng, "qa_yesno")

    def _yes_no(self, labels: list[str], distractors: list[str], ctx: _Context, rng: random.Random,
                family: str) -> Sample:
        used: list[str] = []
        truthful = rng.random() < 0.5
        pool = labels if truthful else distractors
        candidate = pool[rng.randrange(len(pool))]
        prompt = self._turn(rng, ctx, f"{family}.prompt", used, c=candidate)
        shown = candidate if truthful else " and ".join(labels)
        answer = self._turn(rng, ctx, f"{family}.yes" if truthful else f"{family}.no", used, label=shown, c=candidate)
        gold = "yes" if truthful else "no"
        return Sample("MM-Instruct", self._conv(prompt, answer), "qa_yesno", used, "label", "closed", gold)

    def _qa_choice(self, labels: list[str], distractors: list[str], ctx: _Context, rng: random.Random,
                   prompt_family: str = "qa_choice.prompt") -> Sample:
        used: list[str] = []
        label = labels[0]
        wrong = rng.sample(distractors, k=min(3, len(distractors)))
        options = wrong + [label]
        rng.shuffle(options)
        letters = "ABCD"
        letter = letters[options.index(label)]
        listed = [f"{letters[i]}. {opt}" for i, opt in enumerate(options)]
        question = self._turn(rng, ctx, prompt_family, used)
        prompt = question + "\n" + "\n".join(listed) + "\nAnswer with the option's letter from the given choices."
        answer = self._turn(rng, ctx, "qa_choice.answer", used, letter=letter, label=label)
        return Sample("MM-Instruct", self._conv(prompt, answer), "qa_choice", used, "label", "choice", letter, listed)

    def _vqa(self, record: Record, ctx: _Context, rng: random.Random) -> list[Sample]:
        samples = []
        for qa in record.qa:
            if not qa.question.strip() or not qa.answer.strip():
                continue
            samples.append(Sample("MM-Instruct", self._conv(qa.question.strip(), qa.answer.strip()), "vqa",
                                  ["vqa.prompt.0"], record.meta.get("question_type", "vqa"),
                                  qa.answer_type, qa.answer.strip(), generator="passthrough"))
        return samples

    def _perception_facts(self, record: Record, ctx: _Context) -> list[tuple[str, dict[str, object], str]]:
        """Available perception questions: (kind, placeholder values, gold answer)."""
        facts: list[tuple[str, dict[str, object], str]] = []
        if record.modality.strip() and record.modality.strip().lower() not in ("unknown", "other"):
            facts.append(("modality", {}, record.modality.strip()))
        if ctx.organ:
            facts.append(("organ", {}, ctx.organ))
        for label, _, location, _, count in ctx.regions:
            facts.append(("location", {"label": label, "location": location}, location))
            facts.append(("count", {"label": label, "n": count}, str(count)))
        return facts

    def _perception(self, record: Record, ctx: _Context, rng: random.Random) -> list[Sample]:
        if record.task == "conversation":
            return []
        facts = ctx.perception
        if not facts:
            return []
        kind, values, gold = facts[rng.randrange(len(facts))]
        used: list[str] = []
        prompt = self._turn(rng, ctx, f"percept_{kind}.prompt", used, **values)
        answer = self._turn(rng, ctx, f"percept_{kind}.answer", used, **values)
        return [Sample("MM-Percept", self._conv(prompt, answer), f"percept_{kind}", used, kind, "open", gold)]

    def _multi_turn(self, record: Record, ctx: _Context, rng: random.Random) -> list[Sample]:
        if record.task in ("vqa", "conversation", "report"):
            return []
        turns: list[tuple[str, str]] = []
        used: list[str] = []
        facts = ctx.perception
        labels = ctx.labels
        # modality first, then the label, then one more perception fact (organ/location/count)
        chosen = [f for f in facts if f[0] == "modality"]
        others = [f for f in facts if f[0] != "modality"]
        if others:
            chosen.append(others[rng.randrange(len(others))])
        for kind, values, _ in chosen:
            turns.append((self._turn(rng, ctx, f"percept_{kind}.prompt", used, **values),
                          self._turn(rng, ctx, f"percept_{kind}.answer", used, **values)))
        if len(labels) == 1:
            family = "qa_region_open" if record.task in ("segmentation", "detection") else "qa_open"
            turns.insert(min(1, len(turns)), (self._turn(rng, ctx, f"{family}.prompt", used),
                                              self._turn(rng, ctx, f"{family}.answer", used, label=labels[0])))
        if len(turns) < 2:
            return []
        opener = self._turn(rng, ctx, "multi_turn.prompt", used)
        flat = [f"{opener} {turns[0][0]}", turns[0][1]]
        for question, answer in turns[1:]:
            flat += [question, answer]
        return [Sample("MM-Instruct", self._conv(*flat), "multi_turn", used)]

    def _volume(self, record: Record, ctx: _Context, rng: random.Random) -> list[Sample]:
        """Caption, structures present, and one of largest slice / side / extent for one structure. The first
        human turn holds one ``<image>`` per slice, in order (LLaVA's multi-image convention)."""
        volume = record.meta.get("volume") or {}
        structures = volume.get("structures") or {}
        n = len(record.images)
        if not structures or n < 2:
            return []
        images = IMAGE_TOKEN + "\n"

        def conv(*turns: str) -> list[dict[str, str]]:
            first = self._conv(*turns)
            first[0]["value"] = images * (n - 1) + first[0]["value"]
            return first

        def ask(kind: str, family: str, subset: str, gold: str, **values: object) -> Sample:
            used: list[str] = []
            intro = self._turn(rng, ctx, "volume.intro", used, n=n)
            prompt = self._turn(rng, ctx, f"{family}.prompt", used, n=n, **values)
            answer = self._turn(rng, ctx, f"{family}.answer", used, n=n, **values)
            answer_type = "" if subset == "MM-Caption" else "open"
            return Sample(subset, conv(f"{intro} {prompt}", answer), family, used, kind, answer_type,
                          gold if answer_type else "")

        names = sorted(structures)
        facts = "; ".join(self._volume_phrase(label_text(name), structures[name], n) for name in names)
        listed = ", ".join(label_text(name) for name in names)
        samples = [ask("", "volume_caption", "MM-Caption", "", facts=facts, Facts=capitalise(facts)),
                   ask("structures", "volume_structures", "MM-Instruct", listed, structures=listed)]
        name = names[rng.randrange(len(names))]
        fact, label = structures[name], label_text(name)
        kind = ("largest", "side", "extent")[rng.randrange(3)]
        if kind == "largest":
            samples.append(ask(kind, "volume_largest", "MM-Instruct", str(fact["largest"]), label=label,
                               k=fact["largest"]))
        elif kind == "side":
            side = fact["side"]
            phrase = "in the middle of the image" if side == "center" else f"on the {side} of the image"
            samples.append(ask(kind, "volume_side", "MM-Instruct", side, label=label, side=side,
                               Side=capitalise(side), side_phrase=phrase))
        else:
            samples.append(ask(kind, "volume_extent", "MM-Instruct", str(fact["extent"]), label=label,
                               e=fact["extent"]))
        return samples

    @staticmethod
    def _volume_phrase(label: str, fact: dict, n: int) -> str:
        shown = fact["images"]
        span = f"slice {shown[0]}" if len(shown) == 1 else f"slices {shown[0]}-{shown[-1]}"
        where = "in the middle of the image" if fact["side"] == "center" else f"on the {fact['side']} of the image"
        return f"{label} on {span} of {n}, {where}, largest on slice {fact['largest']}"

    def _findings(self, record: Record, ctx: _Context, rng: random.Random) -> list[Sample]:
        """Multi-label table questions. Only stated facts are used: a "no" answer or a distractor is always a
        finding the table states negative (``findings_negative``), never an uncertain or unmentioned one."""
        if not _is_findings_table(record):
            return []
        positive = [label_text(x) for x in record.meta.get("findings_positive", [])]
        negative = [label_text(x) for x in record.meta.get("findings_negative", [])]
        samples = []
        if _findings_determined(record):
            used: list[str] = []
            prompt = self._turn(rng, ctx, "findings.prompt", used)
            gold = ", ".join(positive) if positive else "no finding"
            answer = (self._turn(rng, ctx, "findings.answer", used, findings=gold) if positive
                      else self._turn(rng, ctx, "findings.none", used))
            samples.append(Sample("MM-Instruct", self._conv(prompt, answer), "qa_findings", used, "findings",
                                  "open", gold))
        pools = [p for p in (positive, negative) if p]
        if pools:
            samples.append(self._yes_no_finding(positive, negative, ctx, rng))
        no_finding = record.meta.get("no_finding")
        if no_finding is not None and (no_finding or positive):
            used = []
            prompt = self._turn(rng, ctx, "no_finding.prompt", used)
            answer = self._turn(rng, ctx, f"no_finding.{'yes' if no_finding else 'no'}", used,
                                label=" and ".join(positive))
            samples.append(Sample("MM-Instruct", self._conv(prompt, answer), "qa_yesno", used, "no_finding",
                                  "closed", "yes" if no_finding else "no"))
        if positive and negative:
            chosen = positive[rng.randrange(len(positive))]
            sample = self._qa_choice([chosen], negative, ctx, rng, prompt_family="findings_choice.prompt")
            sample.question_type = "findings"
            samples.append(sample)
        return samples

    def _yes_no_finding(self, positive: list[str], negative: list[str], ctx: _Context, rng: random.Random) -> Sample:
        used: list[str] = []
        truthful = bool(positive) and (not negative or rng.random() < 0.5)
        pool = positive if truthful else negative
        candidate = pool[rng.randrange(len(pool))]
        prompt = self._turn(rng, ctx, "qa_presence.prompt", used, c=candidate)
        shown = " and ".join(positive) or "no finding"
        answer = self._turn(rng, ctx, f"qa_presence.{'yes' if truthful else 'no'}", used, label=shown, c=candidate)
        return Sample("MM-Instruct", self._conv(prompt, answer), "qa_yesno", used, "finding", "closed",
                      "yes" if truthful else "no")

    def _passthrough(self, record: Record, ctx: _Context, rng: random.Random) -> list[Sample]:
        if not record.conversations:
            return []
        conv = [{"from": t.get("from", ""), "value": t.get("value", "")} for t in record.conversations]
        if conv and IMAGE_TOKEN not in "".join(t["value"] for t in conv):
            conv[0]["value"] = f"{IMAGE_TOKEN}\n{conv[0]['value']}"
        subset = str(record.meta.get("subset", "MM-Instruct"))
        return [Sample(subset, conv, "llava", ["llava.passthrough"], generator="passthrough")]


def _is_findings_table(record: Record) -> bool:
    return "findings_negative" in record.meta


def _findings_determined(record: Record) -> bool:
    """Every finding of the image has a stated value that a complete list may imply: none unmentioned under
    blank=ignore, and no uncertain one unless the policy makes it positive."""
    findings = record.meta.get("findings", {})
    if any(value is None for value in findings.values()):
        return False
    return record.meta.get("uncertain_policy") == "positive" or not record.meta.get("findings_uncertain")
