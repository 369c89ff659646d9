"""One factory: a preset -> a standard ``LlavaForConditionalGeneration`` and its ``LlavaProcessor``.

Everything is a stock transformers class, so a saved checkpoint loads with
``AutoModelForImageTextToText`` + ``AutoProcessor`` (no gmai import) and is an architecture vLLM serves.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from gmai.model.presets import ModelPreset, get_preset
from gmai.model.tokenizer import IMAGE_TOKEN, train_tokenizer


def require_local_path(path: str | Path, what: str) -> Path:
    """Refuse hub names: nothing can be downloaded at run time, and a hub lookup would hang offline."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(
            f"{what} {str(path)!r} is not a local folder. gmai loads checkpoints from local paths only "
            f"(no hub downloads at run time): download it elsewhere (e.g. `hf download {path} --local-dir DIR`) "
            f"and pass DIR.")
    return p


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
    if t.kind == "internlm2":
        raise ValueError("the internlm2 preset builds from a local checkpoint only (llm_path=...), "
                         "with trust_remote_code=true given explicitly")
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
    if preset.llm_path:
        return _create_from_pretrained_parts(preset)
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
    from transformers import (AutoModel, AutoModelForCausalLM, AutoTokenizer, LlavaForConditionalGeneration)

    llm_dir = require_local_path(preset.llm_path, "language model")
    vision_dir = require_local_path(preset.vision_path, "vision encoder") if preset.vision_path else None
    trust = preset.trust_remote_code
    tokenizer = AutoTokenizer.from_pretrained(llm_dir, trust_remote_code=trust)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        from gmai.model.tokenizer import CHAT_TEMPLATE

        tokenizer.chat_template = CHAT_TEMPLATE
    lm = AutoModelForCausalLM.from_pretrained(llm_dir, trust_remote_code=trust, use_safetensors=True)
    lm.resize_token_embeddings(len(tokenizer))
    config = _llava_config(preset, lm.config, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    model = LlavaForConditionalGeneration(config)
    model.model.language_model.load_state_dict(lm.model.state_dict())
    model.lm_head.load_state_dict(lm.lm_head.state_dict())
    if vision_dir is not None:
        vision = AutoModel.from_pretrained(vision_dir, use_safetensors=True)
        vision = getattr(vision, "vision_model", vision)  # a full CLIP/SigLIP -> its vision half
        model.model.vision_tower.vision_model.load_state_dict(vision.state_dict(), strict=False)
    return model, build_processor(preset, tokenizer)


def save_checkpoint(model, processor, out: str | Path) -> Path:
    """A standard HF folder: safetensors weights, config, processor, tokenizer, chat template."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out


def load_checkpoint(path: str | Path, trust_remote_code: bool = False):
    """Load any HF image-text-to-text folder (ours or not) with plain transformers classes."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = require_local_path(path, "checkpoint")
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                        use_safetensors=True)
    return model, processor
