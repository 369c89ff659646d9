"""Chat rendering with the model's own template, and assistant-only labels for any template.

Released templates (Qwen2.5-Instruct, Llama 3, ...) carry no ``{% generation %}`` markers, so
``return_assistant_tokens_mask`` cannot be used with them. Instead each assistant turn is found by
rendering the conversation turn by turn: the text of ``messages[:i]`` with the generation prompt is a
prefix of the text of ``messages[:i+1]``; what the assistant turn adds is its span. Spans are mapped to
tokens through the tokenizer's offsets, so the labels follow the template exactly as released.

Templates differ in what ``content`` may be: some loop over ``[{"type": "image"}, {"type": "text"}]``
parts (Qwen2.5-VL, LLaVA's), others concatenate ``message.content`` as a string (Qwen2.5-Instruct). A
template that cannot take parts gets string content with the processor's image token written inline.
"""

from __future__ import annotations

from functools import lru_cache

PROBE = [{"role": "user", "content": [{"type": "text", "text": "x"}]}]
# Put in front of a string-only template (in memory, never saved): it rewrites content parts into strings with the
# image token inline, then the model's own template renders them unchanged. Code that hands the processor
# structured messages (TRL's GRPO, processor.apply_chat_template with images) then works with such LMs.
ADAPTER_MARK = "{#- gmai: content parts -> strings (image token inline), then the model's own template -#}"
ADAPTER = ADAPTER_MARK + """
{%- set gmai_ns = namespace(messages=[]) -%}
{%- for gmai_m in messages -%}
{%- if gmai_m['content'] is string -%}
{%- set gmai_ns.messages = gmai_ns.messages + [{'role': gmai_m['role'], 'content': gmai_m['content']}] -%}
{%- else -%}
{%- set gmai_text = namespace(value='') -%}
{%- for gmai_p in gmai_m['content'] -%}
{%- if gmai_p['type'] == 'image' -%}{%- set gmai_text.value = gmai_text.value + IMAGE_TOKEN + '\n' -%}
{%- elif gmai_p['type'] == 'text' -%}{%- set gmai_text.value = gmai_text.value + gmai_p['text'] -%}{%- endif -%}
{%- endfor -%}
{%- set gmai_ns.messages = gmai_ns.messages + [{'role': gmai_m['role'], 'content': gmai_text.value}] -%}
{%- endif -%}
{%- endfor -%}
{%- set messages = gmai_ns.messages -%}
"""


class TemplateError(ValueError):
    pass


@lru_cache(maxsize=32)
def takes_content_parts(template: str) -> bool:
    """Does this chat template accept a list of content parts (else: string content only)?"""
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        rendered, _ = render_jinja_template(conversations=[PROBE], chat_template=template)
    except Exception:  # noqa: BLE001 - a string-only template fails on the list (TypeError, jinja errors)
        return False
    return "'type'" not in rendered[0] and "x" in rendered[0]


def adapt_string_template(processor):
    """In memory only: let a string-only template (Qwen2.5-Instruct's) take content parts. See ADAPTER."""
    template = getattr(processor, "chat_template", None)
    if template and not template.startswith(ADAPTER_MARK) and not takes_content_parts(template):
        processor.chat_template = ADAPTER.replace("IMAGE_TOKEN", repr(image_token_of(processor))) + template
    return processor


def original_template(template: str | None) -> str | None:
    """The model's own template (what is saved), without gmai's in-memory adapter."""
    if template and template.startswith(ADAPTER_MARK):
        end = "{%- set messages = gmai_ns.messages -%}\n"
        return template[template.index(end) + len(end):]
    return template


def template_of(processor) -> str:
    template = getattr(processor, "chat_template", None) or getattr(processor.tokenizer, "chat_template", None)
    if not template:
        raise TemplateError("the model's processor/tokenizer has no chat template (chat_template.jinja or "
                            "tokenizer_config.json's chat_template): add the LM's template to its folder")
    return template


def image_token_of(processor) -> str:
    return getattr(processor, "image_token", None) or "<image>"


def as_template_messages(messages: list[dict], processor) -> list[dict]:
    """Messages in the shape the processor's template accepts (parts, or strings with the image token inline)."""
    if takes_content_parts(template_of(processor)):
        return [{"role": m["role"], "content": m["content"] if isinstance(m["content"], list)
                 else [{"type": "text", "text": m["content"]}]} for m in messages]
    token = image_token_of(processor)
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            content = "".join(token + "\n" if p.get("type") == "image" else p.get("text", "") for p in content)
        out.append({"role": m["role"], "content": content})
    return out


def _render(processor, messages: list[dict], add_generation_prompt: bool) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    tok = processor.tokenizer
    rendered, _ = render_jinja_template(conversations=[messages], chat_template=template_of(processor),
                                        add_generation_prompt=add_generation_prompt,
                                        **tok.special_tokens_map)
    return rendered[0]


def adds_special_tokens(tokenizer, text: str) -> bool:
    """Tokenize ``text`` with the tokenizer's special tokens? Yes when the tokenizer adds a BOS and the template
    did not render it (LLaVA-1.5's template leaves ``<s>`` to the Llama tokenizer, as ``processor(text=prompt)``
    does in its model card; Gemma 3's renders ``<bos>`` itself). Training and generation both ask this."""
    bos = tokenizer.bos_token
    if not bos or text.startswith(bos):
        return False
    ids = tokenizer("x")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def render_prompt(processor, messages: list[dict]) -> str:
    """The generation prompt for ``messages`` (any content shape) with the model's own template."""
    return _render(processor, as_template_messages(messages, processor), add_generation_prompt=True)


def assistant_spans(processor, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant reply (with its end token).

    ``messages`` must already be in the template's shape (see ``as_template_messages``).
    """
    full = _render(processor, messages, add_generation_prompt=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(processor, messages[:i], add_generation_prompt=True)
        upto = _render(processor, messages[:i + 1], add_generation_prompt=False)
        if not (upto.startswith(before) and full.startswith(upto)):
            raise TemplateError("the chat template does not render turn by turn (an earlier turn changes when "
                                "later ones are added), so assistant tokens cannot be located; give the model a "
                                "template with {% generation %} markers or one that renders turns in order")
        reply = upto[len(before):].rstrip()  # the newline between turns is template layout, not the reply
        spans.append((len(before), len(before) + len(reply)))
    return full, spans


def supervised_mask(tokenizer, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[bool]]:
    """Token ids of ``text`` (a BOS only where the template leaves it to the tokenizer) and, per token, whether
    it lies in an assistant span."""
    enc = tokenizer(text, add_special_tokens=adds_special_tokens(tokenizer, text), return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    mask = [any(s <= a and b <= e and b > a for s, e in spans) for a, b in offsets]
    return ids, mask


def expand_mask(short_ids: list[int], short_mask: list[bool], full_ids: list[int]) -> list[bool]:
    """Carry a mask over the processor's image expansion: one placeholder becomes N image tokens (LLaVA, Qwen-VL),
    or a longer run with its own wrapper tokens (Gemma 3's ``\n\n<start_of_image>...<end_of_image>\n\n``,
    InternVL's ``<img>...</img>``). Tokens the two sequences share keep their mask; inserted ones are never
    labels. A supervised token the processor changed is an error, not a silent loss."""
    from difflib import SequenceMatcher

    mask = [False] * len(full_ids)
    kept = 0
    for a, b, n in SequenceMatcher(None, short_ids, full_ids, autojunk=False).get_matching_blocks():
        mask[b:b + n] = short_mask[a:a + n]
        kept += sum(short_mask[a:a + n])
    if kept != sum(short_mask):
        raise TemplateError("the processor changed tokens of an assistant reply while expanding images")
    return mask


def encode_conversation(processor, messages: list[dict], images: list | None = None) -> dict:
    """``{"input_ids", "assistant_mask", **image tensors}`` for one conversation, labels from turn-by-turn spans."""
    messages = as_template_messages(messages, processor)
    text, spans = assistant_spans(processor, messages)
    tok = processor.tokenizer
    ids, mask = supervised_mask(tok, text, spans)
    if not images:
        return {"input_ids": ids, "assistant_mask": mask}
    enc = processor(text=[text], images=images, return_tensors="pt", add_special_tokens=adds_special_tokens(tok, text))
    full = enc["input_ids"][0].tolist()
    text_keys = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")
    out = {k: v for k, v in enc.items() if k not in text_keys}
    return {"input_ids": full, "assistant_mask": expand_mask(ids, mask, full), **out}
