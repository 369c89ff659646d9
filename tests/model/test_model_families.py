"""Assistant-only labels on each whole-VLM family's released chat template (fast tier).

gmai finds assistant turns by rendering the conversation turn by turn (gmai.model.chat). Each family's reference
is the ``{% generation %}`` mask transformers computes: on the released template where it carries the markers
(LLaVA-1.5), else on TRL's patched copy of the released template (``trl/chat_templates/<name>_training.jinja``).
The fixtures' templates and their sources are in gmai.model.fixtures."""

import json

import pytest

from gmai.model import fixtures
from gmai.model.chat import encode_conversation
from gmai.model.cli import FIXTURES
from gmai.model.fixtures import released_template

TURNS = [("What modality is this?", "CT."), ("Where is the lesion?", "In the left upper region.")]
# fixture name -> (the template with generation markers for the reference mask (None: the released one has them),
#                  what the released template writes after each reply: supervised, so the model learns to stop)
# InternVL's released template has no markers and no marked copy exists (TRL keeps none): only the supervised
# text is checked for it (each reply and its <|im_end|>, nothing else).
MARKED = {"llava-1.5": (None, ""), "gemma3": (released_template("gemma3_training"), "<end_of_turn>"),
          "internvl": (False, "<|im_end|>"), "llava-next": (released_template("llava_next_training"), "</s>"),
          "llava-onevision": (None, "<|im_end|>"), "qwen3-vl": (released_template("qwen3_vl_training"), "<|im_end|>"),
          "qwen2-vl": (released_template("qwen2_5_vl_training"), "<|im_end|>")}


@pytest.fixture(scope="module", params=list(MARKED))
def family(request, tmp_path_factory):
    from gmai.model.families import load_base

    base = getattr(fixtures, FIXTURES[request.param])(tmp_path_factory.mktemp(request.param))
    _, processor = load_base(base)
    released = json.loads((base / "chat_template.json").read_text())["chat_template"]
    return request.param, processor, released


def conversation():
    msgs = []
    for i, (q, a) in enumerate(TURNS):
        parts = ([{"type": "image"}] if i == 0 else []) + [{"type": "text", "text": q}]
        msgs += [{"role": "user", "content": parts}, {"role": "assistant", "content": [{"type": "text", "text": a}]}]
    return msgs


def test_processor_carries_the_released_template(family):
    _, processor, released = family
    assert processor.chat_template == released


def test_labels_turn_by_turn_equal_the_generation_markers(family):
    """Equal up to a reply's edges: a marker mask may take the blank after a reply, and the space a reply starts
    with (after a prompt ending in ':') is the model's to generate, so gmai supervises it; LLaVA-OneVision's
    markers leave out the <|im_end|> that ends a reply, which gmai supervises so the model learns to stop."""
    name, processor, released = family
    tok = processor.tokenizer
    msgs = conversation()
    ours = encode_conversation(processor, msgs)
    marked, reply_end = MARKED[name]
    ids = ours["input_ids"]
    supervised = tok.decode([t for t, m in zip(ids, ours["assistant_mask"]) if m])
    assert "".join(supervised.split()) == "".join("".join(a + reply_end for _, a in TURNS).split())
    if marked is False:
        return
    ref = tok.apply_chat_template(msgs, chat_template=marked or released, tokenize=True, return_dict=True,
                                  return_assistant_tokens_mask=True)
    ref_ids, ref_mask = list(ref["input_ids"]), [bool(m) for m in ref["assistant_masks"]]
    if ours["input_ids"][0] == tok.bos_token_id != ref_ids[0]:  # the BOS a template leaves to the tokenizer
        ref_ids, ref_mask = [tok.bos_token_id] + ref_ids, [False] + ref_mask
    assert ours["input_ids"] == ref_ids
    differ = [t for t, a, b in zip(ref_ids, ours["assistant_mask"], ref_mask) if a != b]
    assert all(tok.decode([t]).strip() in ("", reply_end) for t in differ), [tok.decode([t]) for t in differ]
    assert len(differ) <= 2 * len(TURNS)


def test_prompt_tokens_are_never_labels(family):
    _, processor, _ = family
    tok = processor.tokenizer
    ours = encode_conversation(processor, conversation())
    prompt_text = tok.decode([t for t, m in zip(ours["input_ids"], ours["assistant_mask"]) if not m])
    for q, a in TURNS:
        assert q.split()[-1] in prompt_text and a.split()[-1] not in prompt_text
