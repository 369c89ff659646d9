"""The tiny preset's tokenizer (byte-level BPE trained offline) and the chat template.

The chat template is ChatML with ``{% generation %}`` markers around assistant replies, so
``apply_chat_template(..., return_assistant_tokens_mask=True)`` yields exactly the tokens that
training supervises. The same template is saved with every checkpoint and used at inference.
"""

from __future__ import annotations

from collections.abc import Iterable

IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<|pad|>"
EOS_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", EOS_TOKEN, PAD_TOKEN, IMAGE_TOKEN]

# Content may be a plain string (LLaVA data, where "<image>" is written inline) or a list of
# {"type": "image"} / {"type": "text", "text": ...} parts (OpenAI / HF processor style).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
    "{%- else -%}{%- set ns = namespace(text='') -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{%- set ns.text = ns.text + '<image>\n' -%}"
    "{%- elif part['type'] == 'text' -%}{%- set ns.text = ns.text + part['text'] -%}{%- endif -%}"
    "{%- endfor -%}{%- set text = ns.text -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{- text + '<|im_end|>' -}}{% endgeneration %}{{- '\n' -}}"
    "{%- else -%}{{- text + '<|im_end|>\n' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096):
    """Train a byte-level BPE on ``texts`` and wrap it as a standard fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
                                  bos_token=None, unk_token=None, model_max_length=4096)
    tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN, "<|im_start|>"]})
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"  # generation pads on the left; training collators set their own
    return tok
