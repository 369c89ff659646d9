"""One factory: a preset -> a standard ``LlavaForConditionalGeneration`` and its ``LlavaProcessor``.

Everything is a stock transformers class, so a saved checkpoint loads with
``AutoModelForImageTextToText`` + ``AutoProcessor`` (no gmai import) and is an architecture vLLM serves.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from gmai.model.loading import ModelLoadError, require_local_path
from gmai.model.presets import ModelPreset, get_preset
from gmai.model.tokenizer import IMAGE_TOKEN, train_tokenizer

__all__ = ["ModelLoadError", "require_local_path", "create_model", "save_checkpoint", "load_checkpoint"]


def _vision_config(preset: ModelPreset):
    from transformers import CLIPVisionConfig, SiglipVisionConfig

    v = preset.vision
    common = dict(hidden_size=v.hidden_size, num_hidden_layers=v.num_layers, num_attention_heads=v.num_heads,
                  intermediate_size=v.intermediate_size, image_size=v.image_size, patch_size=v.patch_size)
    if v.kind == "clip":
        return CLIPVisionConfig(projection_dim=v.hidden_size, **common)
    if v.kind == "siglip":
        return SiglipVisionConfig(vision_use_head=False, **common)
    raise ValueError(f"unknown vision kind {v.kind!r} (expected clip or siglip)")


def _text_config(preset: ModelPreset, vocab_size: int, pad_id: int | None, eos_id: int | None):
    from transformers import AutoConfig

    t = preset.text
    return AutoConfig.for_model(
        t.kind, hidden_size=t.hidden_size, num_hidden_layers=t.num_layers, num_attention_heads=t.num_heads,
        num_key_value_heads=t.num_kv_heads, intermediate_size=t.intermediate_size, vocab_size=vocab_size,
        max_position_embeddings=t.max_position_embeddings, rope_theta=t.rope_theta,
        pad_token_id=pad_id, eos_token_id=eos_id, tie_word_embeddings=False)


def build_image_processor(preset: ModelPreset):
    """The paper's preprocessing: pad to a square (background = mean colour), resize, no tiling.
    Grayscale images are converted to RGB (``do_convert_rgb``)."""
    from transformers import LlavaImageProcessorPil

    side = preset.vision.image_size
    return LlavaImageProcessorPil(do_pad=True, size={"shortest_edge": side},
                                  crop_size={"height": side, "width": side}, do_convert_rgb=True)


def build_processor(preset: ModelPreset, tokenizer):
    from transformers import LlavaProcessor

    return LlavaProcessor(
        image_processor=build_image_processor(preset), tokenizer=tokenizer, patch_size=preset.vision.patch_size,
        vision_feature_select_strategy=preset.vision.select_strategy, chat_template=tokenizer.chat_template,
        image_token=IMAGE_TOKEN, num_additional_image_tokens=1 if preset.vision.kind == "clip" else 0)


def _llava_config(preset: ModelPreset, text_config, image_token_id: int):
    from transformers import LlavaConfig

    return LlavaConfig(vision_config=_vision_config(preset), text_config=text_config,
                       image_token_index=image_token_id, image_seq_length=preset.vision.num_image_tokens,
                       projector_hidden_act=preset.projector_act,
                       vision_feature_select_strategy=preset.vision.select_strategy,
                       vision_feature_layer=preset.vision.feature_layer, tie_word_embeddings=False)


def create_model(preset: str | ModelPreset, tokenizer=None, corpus: Iterable[str] | None = None, seed: int = 0):
    """Build (model, processor) from a preset.

    ``tiny``: random weights; the tokenizer is given, or trained on ``corpus``.
    7B presets: pretrained vision tower and LM from ``vision_path`` / ``llm_path`` (local folders),
    projector freshly initialised (Stage I trains it).
    """
    import torch

    preset = get_preset(preset) if isinstance(preset, str) else preset
    torch.manual_seed(seed)
    if preset.llm_path or preset.vision_path:
        if not preset.llm_path:
            raise ModelLoadError(f"preset {preset.name!r}: a vision folder was given without a language model: "
                                 f"add model.llm_path=DIR")
        return _create_from_pretrained_parts(preset)
    if preset.text is None or preset.vision is None:
        raise ModelLoadError(f"preset {preset.name!r} is built from pretrained parts: give local folders with "
                             f"model.llm_path=DIR and model.vision_path=DIR")
    if tokenizer is None:
        if corpus is None:
            raise ValueError("the tiny preset needs a tokenizer or a corpus to train one on")
        tokenizer = train_tokenizer(corpus, vocab_size=preset.tokenizer_vocab_size or 4096)
    from transformers import LlavaForConditionalGeneration

    text_config = _text_config(preset, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    config = _llava_config(preset, text_config, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, build_processor(preset, tokenizer)


def _create_from_pretrained_parts(preset: ModelPreset):
    """LLaVA from a pretrained LM folder and a vision folder: each part's architecture from its own config,
    weights loaded strictly, the LM's head through its own API, the LM's tokenizer and chat template kept."""
    import torch
    from transformers import LlavaForConditionalGeneration

    from gmai.model.loading import load_causal_lm, load_tokenizer, load_vision_tower, vision_image_processor

    if not preset.vision_path:
        raise ModelLoadError(f"preset {preset.name!r} needs a vision folder too: model.vision_path=DIR (CLIP, "
                             f"CLIPVisionModel or SigLIP in transformers format)")
    llm_dir = require_local_path(preset.llm_path, "language model")
    vision_dir = require_local_path(preset.vision_path, "vision encoder")
    tokenizer = load_tokenizer(llm_dir, preset.trust_remote_code)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:  # a base (non-chat) LM: ChatML, as the tiny preset
        from gmai.model.tokenizer import CHAT_TEMPLATE

        tokenizer.chat_template = CHAT_TEMPLATE
    lm = load_causal_lm(llm_dir, preset.trust_remote_code)
    if len(tokenizer) > lm.get_input_embeddings().weight.shape[0]:  # grow only: releases pad the vocabulary
        lm.resize_token_embeddings(len(tokenizer))
    vision, kind = load_vision_tower(vision_dir)
    vcfg = vision.config
    strategy = "default" if kind == "clip" else "full"  # CLIP: drop the CLS token (LLaVA); SigLIP has none
    n_tokens = (vcfg.image_size // vcfg.patch_size) ** 2
    config = _parts_config(preset, vcfg, lm.config, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), n_tokens, strategy)
    with torch.device("meta"):  # no random init of parts that are replaced right away
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = vision
    model.model.language_model = lm.get_decoder()
    model.lm_head = lm.get_output_embeddings()
    model.model.multi_modal_projector = type(model.model.multi_modal_projector)(config)  # fresh (Stage I trains it)
    model.config.text_config = lm.config
    model.generation_config = lm.generation_config
    _check_materialised(model)
    image_processor = vision_image_processor(vision_dir, vcfg.image_size)
    processor = _llava_processor(image_processor, tokenizer, vcfg.patch_size, strategy, kind)
    return model, processor


def _parts_config(preset: ModelPreset, vision_config, text_config, image_token_id: int, n_tokens: int,
                  strategy: str):
    from transformers import LlavaConfig

    return LlavaConfig(vision_config=vision_config, text_config=text_config, image_token_index=image_token_id,
                       image_seq_length=n_tokens, projector_hidden_act=preset.projector_act,
                       vision_feature_select_strategy=strategy, vision_feature_layer=preset.feature_layer,
                       tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)))


def _llava_processor(image_processor, tokenizer, patch_size: int, strategy: str, kind: str):
    from transformers import LlavaProcessor

    from gmai.model.chat import adapt_string_template

    return adapt_string_template(LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
        vision_feature_select_strategy=strategy, chat_template=tokenizer.chat_template, image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1 if kind == "clip" else 0))


def _check_materialised(model) -> None:
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"internal: parts not loaded: {left[:5]}")


def save_checkpoint(model, processor, out: str | Path) -> Path:
    """A standard HF folder: safetensors weights, config, processor, tokenizer, chat template."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    from gmai.model.families import save_processor

    save_processor(processor, out)
    return out


def load_checkpoint(path: str | Path, trust_remote_code: bool = False):
    """Load an HF image-text-to-text folder (ours, or a family in ``gmai.model.families``) with plain
    transformers classes, strictly (missing/unexpected weights are an error)."""
    from gmai.model.families import load_base

    return load_base(require_local_path(path, "checkpoint"), trust_remote_code=trust_remote_code)
