"""A proven lower bound on a prompt's token count from its UTF-8 bytes, so a server can refuse a
prompt that cannot fit the model's context before rendering or tokenizing it.

If no token of the tokenizer can stand for more than ``B`` bytes of input text, a text of ``n``
bytes needs at least ``ceil(n / B)`` tokens. ``B`` is read once from the vocabulary (added tokens
included): the longest token's UTF-8 length, which is at least the bytes it matches for
byte-level BPE (one vocabulary character per byte), SentencePiece (``▁``, 3 bytes, for a 1-byte
space; ``<0x41>`` for one byte) and WordPiece (``##`` prefixes). It then holds only for tokenizers
that never drop or merge input without limit, so the bound is given only for the structures
checked here (anything else: ``None``, and the server relies on exact tokenization alone):

- normalizer: none, NFD/NFKD, Prepend, Replace (these only expand), or NFC/NFKC/Lowercase, which
  can shrink text at most 4x in bytes (``𝐀``, 4 bytes, -> ``A`` under NFKC; Hangul jamo, 9 bytes,
  -> one 3-byte syllable under NFC; ``K`` Kelvin sign, 3 bytes -> ``k``), so ``B`` is multiplied by 4;
- pre-tokenizer: ByteLevel, Split (not ``Removed``), Metaspace, Digits, Punctuation,
  UnicodeScripts, or a Sequence of them (Whitespace-style ones drop whitespace: refused);
- model: every byte has a token (a ByteLevel pre-tokenizer, or ``byte_fallback``), or an unknown
  character maps to its own ``unk_token`` without fusing runs of them;
- no added token strips the whitespace around it (``lstrip``/``rstrip`` absorb unbounded spaces).
"""

from __future__ import annotations

import json
import math
from typing import Any

SHRINKING_NORMALIZERS = {"NFC", "NFKC", "Lowercase"}
EXPANDING_NORMALIZERS = {"NFD", "NFKD", "Prepend", "Replace"}
SAFE_PRE_TOKENIZERS = {"ByteLevel", "Split", "Metaspace", "Digits", "Punctuation", "UnicodeScripts"}
NORMALIZER_SHRINK = 4


def _parts(node: dict | None, key: str) -> list[dict]:
    if not node:
        return []
    return [p for child in node.get(key, []) for p in _parts(child, key)] if node.get("type") == "Sequence" else [node]


def bytes_per_token_bound(tokenizer: Any) -> int | None:
    """The most UTF-8 bytes of input text one token can stand for, or None when the tokenizer's
    structure is not one for which that is proven (see the module docstring)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    spec = json.loads(backend.to_str())
    normalizers = _parts(spec.get("normalizer"), "normalizers")
    if any(n.get("type") not in SHRINKING_NORMALIZERS | EXPANDING_NORMALIZERS for n in normalizers):
        return None
    pre = _parts(spec.get("pre_tokenizer"), "pretokenizers")
    if any(p.get("type") not in SAFE_PRE_TOKENIZERS or str(p.get("behavior", "")).lower() == "removed" for p in pre):
        return None
    model = spec.get("model") or {}
    every_byte = any(p.get("type") == "ByteLevel" for p in pre) or model.get("byte_fallback")
    if not every_byte and not (model.get("unk_token") and not model.get("fuse_unk")):
        return None
    if any(t.get("lstrip") or t.get("rstrip") for t in spec.get("added_tokens", [])):
        return None
    longest = max((len(token.encode("utf-8", "surrogatepass")) for token in tokenizer.get_vocab()), default=0)
    if longest == 0:
        return None
    shrink = NORMALIZER_SHRINK if any(n.get("type") in SHRINKING_NORMALIZERS for n in normalizers) else 1
    return longest * shrink


def min_tokens(text_bytes: int, bytes_per_token: int) -> int:
    """The fewest tokens ``text_bytes`` bytes of text can become (see bytes_per_token_bound)."""
    return math.ceil(text_bytes / bytes_per_token)
