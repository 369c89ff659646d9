"""Tiny random-weight checkpoint folders in the real on-disk formats (for tests and the GPU check).

Each writer reproduces what the released folder holds: the family's config class, safetensors
weights, its tokenizer's special tokens and eos/pad choice, its chat template byte for byte, its
generation and preprocessor configs. Only the sizes (and so the token ids) are small. Weights are
random: these folders test plumbing, never quality.

Sources of the formats (read from public copies):
- Qwen2.5-Instruct: the 22 added tokens in order (pytorch/torchtune ``torchtune/models/qwen2_5/_tokenizer.py``,
  QWEN2_5_SPECIAL_TOKENS, ids 151643-151664 in the released vocabulary), eos ``<|im_end|>``, pad
  ``<|endoftext|>``, no bos; the chat template as released (TRL keeps byte-identical copies of released
  templates for identity comparison: ``trl/chat_templates/qwen2_5.jinja``, ``qwen2_5_vl.jinja``).
- CLIP ViT-L/14-336 (``openai/clip-vit-large-patch14-336``): a full ``CLIPModel`` folder (text + vision
  towers) with a ``CLIPImageProcessor`` preprocessor config (resize shortest edge + centre crop, OpenAI mean/std).
"""

from __future__ import annotations

import json
from pathlib import Path

QWEN25_ADDED_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]
# Qwen2's pre-tokenizer split (tokenizer.json of the Qwen2/2.5 releases), then byte-level without regex.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
FIXTURE_TEXT = ("What imaging modality is this? This is a CT image of the chest. Where is the lesion? The round "
                "finding is in the left upper region. Describe the image. An MR scan shows a bright square area. "
                "Answer with a single word. yes no Locate the lesion. Write a report for this image. Findings: "
                "Impression: a solitary finding. ultrasound fundus pathology X-ray central right lower 0 1 2 3 4 "
                "5 6 7 8 9 <ref> </ref> <box> </box> [ ] , . ? : ( ) -")


def released_template(name: str) -> str:
    """A released chat template, byte-identical copy kept by TRL (``trl/chat_templates/<name>.jinja``)."""
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / f"{name}.jinja").read_text(encoding="utf-8")


def _bpe_tokenizer(added: list[str], vocab_size: int, corpus: list[str] | None = None, **kwargs):
    """A byte-level BPE with Qwen2's pre-tokenizer, trained on a small text, wrapped as a fast tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=added, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator((corpus or []) + [FIXTURE_TEXT] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, **kwargs)


def _qwen25_tokenizer(vocab_size: int = 600, more: tuple[str, ...] = (), **kwargs):
    tok = _bpe_tokenizer(QWEN25_ADDED_TOKENS + list(more), vocab_size, **kwargs)
    tok.add_special_tokens({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                            "additional_special_tokens": QWEN25_ADDED_TOKENS[1:3] + QWEN25_ADDED_TOKENS[3:14]})
    tok.model_max_length = 131072
    return tok


def _write_tokenizer(tok, out: Path, template: str, tokenizer_class: str) -> None:
    tok.chat_template = template
    tok.save_pretrained(out)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(tokenizer_class=tokenizer_class, bos_token=None, clean_up_tokenization_spaces=False,
               split_special_tokens=False, errors="replace")
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False))


def write_qwen25_instruct_lm(out: str | Path, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                             num_kv_heads: int = 2, intermediate_size: int = 128, seed: int = 0) -> Path:
    """A Qwen2.5-*-Instruct folder (Qwen2ForCausalLM, Qwen2Config) at toy size.

    As in the 7B release: ``tie_word_embeddings=false``, rope_theta 1e6, and the embedding matrix has more
    rows than the tokenizer has tokens (152064 vs 151665), so adding one token needs no resize.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = _qwen25_tokenizer()
    _write_tokenizer(tok, out, released_template("qwen2_5"), "Qwen2Tokenizer")
    endoftext, im_end = tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|im_end|>")
    config = Qwen2Config(vocab_size=(len(tok) // 64 + 2) * 64, hidden_size=hidden_size, num_hidden_layers=num_layers,
                         num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
                         intermediate_size=intermediate_size, max_position_embeddings=32768, rope_theta=1e6,
                         rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=endoftext, eos_token_id=im_end,
                         sliding_window=None, use_sliding_window=False, max_window_layers=num_layers)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    # the release's generation_config.json: stop on <|im_end|> or <|endoftext|>, sampling settings
    model.generation_config = GenerationConfig(bos_token_id=endoftext, pad_token_id=endoftext,
                                               eos_token_id=[im_end, endoftext], do_sample=True,
                                               temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05)
    model.save_pretrained(out, safe_serialization=True)
    return out


def _clip_preprocessor(image_size: int) -> dict:
    return {"crop_size": {"height": image_size, "width": image_size}, "do_center_crop": True,
            "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
            "image_mean": OPENAI_CLIP_MEAN, "image_processor_type": "CLIPImageProcessor",
            "image_std": OPENAI_CLIP_STD, "resample": 3, "rescale_factor": 0.00392156862745098,
            "size": {"shortest_edge": image_size}}


def write_clip(out: str | Path, full: bool = True, image_size: int = 56, patch_size: int = 14,
               hidden_size: int = 32, num_layers: int = 2, num_heads: int = 2, seed: int = 0) -> Path:
    """A CLIP folder: the full ``CLIPModel`` (as ``openai/clip-vit-large-patch14-336`` ships) or a
    ``CLIPVisionModel``; ViT-L/14-336's layout (patch 14, quick_gelu) at toy width and image size."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel

    out = Path(out)
    vision = dict(hidden_size=hidden_size, intermediate_size=hidden_size * 4, num_hidden_layers=num_layers,
                  num_attention_heads=num_heads, image_size=image_size, patch_size=patch_size,
                  projection_dim=hidden_size, hidden_act="quick_gelu")
    torch.manual_seed(seed)
    if full:
        config = CLIPConfig(vision_config=vision, projection_dim=hidden_size,
                            text_config=dict(hidden_size=hidden_size, intermediate_size=hidden_size * 4,
                                             num_hidden_layers=1, num_attention_heads=num_heads, vocab_size=512,
                                             bos_token_id=510, eos_token_id=511, pad_token_id=1,
                                             max_position_embeddings=77, projection_dim=hidden_size))
        model = CLIPModel(config)
    else:
        model = CLIPVisionModel(CLIPVisionConfig(**vision))
    model.save_pretrained(out, safe_serialization=True)
    (out / "preprocessor_config.json").write_text(json.dumps(_clip_preprocessor(image_size), indent=2))
    return out


def write_siglip(out: str | Path, image_size: int = 64, patch_size: int = 16, hidden_size: int = 32,
                 num_layers: int = 2, num_heads: int = 2, seed: int = 0) -> Path:
    """A full ``SiglipModel`` folder (as ``google/siglip-so400m-patch14-384`` ships: text + vision, mean/std 0.5)."""
    import torch
    from transformers import SiglipConfig, SiglipModel

    out = Path(out)
    common = dict(hidden_size=hidden_size, intermediate_size=hidden_size * 4, num_hidden_layers=num_layers,
                  num_attention_heads=num_heads)
    torch.manual_seed(seed)
    model = SiglipModel(SiglipConfig(vision_config=dict(image_size=image_size, patch_size=patch_size, **common),
                                     text_config=dict(vocab_size=512, max_position_embeddings=64, bos_token_id=510,
                                                      eos_token_id=511, pad_token_id=1, **common)))
    model.save_pretrained(out, safe_serialization=True)
    (out / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "SiglipImageProcessor", "image_std": [0.5, 0.5, 0.5], "resample": 3,
        "rescale_factor": 0.00392156862745098, "size": {"height": image_size, "width": image_size}}, indent=2))
    return out


def qwen25_vl_preprocessor(min_pixels: int, max_pixels: int, processor_class: str = "Qwen2_5_VLProcessor") -> dict:
    """Qwen2/2.5-VL-*-Instruct's preprocessor_config.json layout (released: min_pixels 3136, max_pixels 12845056)."""
    return {"do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
            "image_mean": OPENAI_CLIP_MEAN, "image_std": OPENAI_CLIP_STD,
            "image_processor_type": "Qwen2VLImageProcessor",
            "max_pixels": max_pixels, "merge_size": 2, "min_pixels": min_pixels, "patch_size": 14,
            "processor_class": processor_class, "resample": 3, "rescale_factor": 0.00392156862745098,
            "temporal_patch_size": 2}


def write_qwen25_vl(out: str | Path, hidden_size: int = 64, num_layers: int = 2, vision_hidden: int = 32,
                    vision_depth: int = 2, min_pixels: int = 3136, max_pixels: int = 28 * 28 * 16,
                    seed: int = 0) -> Path:
    """A Qwen2.5-VL-*-Instruct folder (Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLConfig) at toy size:
    the released tokens and template (trl/chat_templates/qwen2_5_vl.jinja), M-RoPE sections, window attention
    with full-attention blocks, patch 14 / merge 2 / temporal patch 2, min/max pixels (toy max: few tokens)."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = _qwen25_tokenizer()
    _write_tokenizer(tok, out, released_template("qwen2_5_vl"), "Qwen2Tokenizer")
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN25_ADDED_TOKENS}
    heads = 4
    text = dict(vocab_size=(len(tok) // 64 + 2) * 64, hidden_size=hidden_size, num_hidden_layers=num_layers,
                num_attention_heads=heads, num_key_value_heads=2, intermediate_size=hidden_size * 2,
                max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False,
                rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},  # released 7B: [16, 24, 24] of head dim 128
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"])
    vision = dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=vision_hidden * 2, num_heads=2,
                  out_hidden_size=hidden_size, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                  window_size=112, fullatt_block_indexes=[vision_depth - 1], in_channels=3, hidden_act="silu")
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                              video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                              vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    torch.manual_seed(seed)
    return _save_qwen_vl(Qwen2_5_VLForConditionalGeneration(config), out, ids,
                         qwen25_vl_preprocessor(min_pixels, max_pixels))


def _save_qwen_vl(model, out: Path, ids: dict, preprocessor: dict) -> Path:
    """Weights, the release's generation_config.json (greedy-like sampling, stop on <|im_end|> / <|endoftext|>),
    preprocessor_config.json and chat_template.json of a Qwen2/2.5-VL folder (the template is byte-identical)."""
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(bos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"],
                                               eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]], do_sample=True,
                                               temperature=1e-6, top_p=0.001, top_k=1, repetition_penalty=1.05)
    model.save_pretrained(out, safe_serialization=True)
    _write_json(out / "preprocessor_config.json", preprocessor)
    _write_json(out / "chat_template.json", {"chat_template": released_template("qwen2_5_vl")})
    return out


def write_qwen2_vl(out: str | Path, hidden_size: int = 64, num_layers: int = 2, vision_hidden: int = 32,
                   min_pixels: int = 3136, max_pixels: int = 28 * 28 * 16, seed: int = 0) -> Path:
    """A Qwen2-VL-*-Instruct folder (Qwen2VLForConditionalGeneration, Qwen2VLConfig) at toy size: the first 14 of
    Qwen2.5's added tokens (through <|video_pad|>, ids 151643-151656; the tool/FIM tokens came with Qwen2.5), the
    template Qwen2.5-VL also ships (TRL's README: "Qwen2-VL ... ships a byte-identical template"), M-RoPE, a ViT
    with embed_dim / mlp_ratio and quick_gelu, patch 14 / merge 2, min/max pixels (toy max)."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    added = QWEN25_ADDED_TOKENS[:14]
    tok = _bpe_tokenizer(added, 600)
    tok.add_special_tokens({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    tok.model_max_length = 32768
    _write_tokenizer(tok, out, released_template("qwen2_5_vl"), "Qwen2Tokenizer")
    ids = {t: tok.convert_tokens_to_ids(t) for t in added}
    text = dict(vocab_size=(len(tok) // 64 + 2) * 64, hidden_size=hidden_size, num_hidden_layers=num_layers,
                num_attention_heads=4, num_key_value_heads=2, intermediate_size=hidden_size * 2,
                max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False,
                rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},  # released 7B: [16, 24, 24]
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"])
    vision = dict(depth=2, embed_dim=vision_hidden, hidden_size=hidden_size, mlp_ratio=2, num_heads=2,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3, hidden_act="quick_gelu")
    config = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                           video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    torch.manual_seed(seed)
    return _save_qwen_vl(Qwen2VLForConditionalGeneration(config), out, ids,
                         qwen25_vl_preprocessor(min_pixels, max_pixels, "Qwen2VLProcessor"))


def _sentencepiece_bpe(specials: list[str], vocab_size: int, tokenizer_class: str, **kwargs):
    """A SentencePiece-style BPE (Metaspace ``▁``, byte fallback ``<0x..>``), as Llama/Mistral/Gemma ship it in
    tokenizer.json, trained on a small text and built through the family's own tokenizer class."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    core = Tokenizer(models.BPE(unk_token=specials[0], byte_fallback=True))
    # split while training: pieces never span words (SentencePiece's rule); the family's class encodes unsplit
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials + byte_tokens, show_progress=False)
    core.train_from_iterator([FIXTURE_TEXT] * 4, trainer=trainer)
    state = json.loads(core.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    # both families add their BOS in the tokenizer (tokenizer_config.json add_bos_token: true)
    return getattr(transformers, tokenizer_class)(vocab=state["vocab"], merges=merges, add_bos_token=True,
                                                   **kwargs)


# llava-hf/llava-1.5-7b-hf's chat template (chat_template.json). The released file itself is not in the searchable
# index; transformers' own test keeps it for its tiny processor "created ... from llava-hf/llava-1.5-7b-hf"
# (huggingface/transformers tests/models/llava/test_processing_llava.py, prepare_processor_dict, together with
# num_additional_image_tokens=1 "must match processor_config.json from the Hub repo"); the same string is in
# tests/models/llava_next/test_processing_llava_next.py and in several LLaVA-1.5 users' code.
LLAVA15_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False))


def _save_vlm(model, out: Path, tok, template: str, preprocessor: dict, processor_config: dict | None,
              tokenizer_class: str | None = None) -> Path:
    """The files a released VLM folder holds: safetensors + config, tokenizer, preprocessor_config.json,
    processor_config.json, chat_template.json (the layout the llava-hf / google / OpenGVLab -hf repos ship)."""
    model.save_pretrained(out, safe_serialization=True)
    if tokenizer_class:  # a Qwen2 tokenizer: its config as Qwen writes it
        _write_tokenizer(tok, out, template, tokenizer_class)
    else:
        tok.save_pretrained(out)
    _write_json(out / "preprocessor_config.json", preprocessor)
    if processor_config:
        _write_json(out / "processor_config.json", processor_config)
    _write_json(out / "chat_template.json", {"chat_template": template})
    return out


def write_llava15(out: str | Path, hidden_size: int = 64, num_layers: int = 2, vision_hidden: int = 32,
                  image_size: int = 56, seed: int = 0) -> Path:
    """A llava-hf/llava-1.5-7b-hf folder (LlavaForConditionalGeneration, LlavaConfig) at toy size.

    As released (config.json: vicuna-7b-v1.5 Llama LM + CLIP ViT-L/14-336): ``<image>`` added right after the
    32000-token Llama vocabulary and ``<pad>`` after it (transformers' convert_llava_weights_to_hf.py:
    image_token_index 32000, pad_token_id 32001), embeddings padded to a multiple of 64 (vocab_size 32064),
    vision_feature_layer -2, select strategy ``default`` (CLS dropped), gelu projector, untied head;
    CLIPImageProcessor resize+crop with OpenAI mean/std; processor_config.json patch_size 14 and
    num_additional_image_tokens 1; the released chat template (LLAVA15_TEMPLATE).
    """
    import torch
    from transformers import AddedToken, GenerationConfig, LlavaConfig, LlavaForConditionalGeneration

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = _sentencepiece_bpe(["<unk>", "<s>", "</s>"], 500, "LlamaTokenizer")
    tok.add_tokens(AddedToken("<image>", special=True, normalized=False), special_tokens=True)
    tok.add_special_tokens({"pad_token": "<pad>"})
    tok.model_max_length = 4096
    image_id, pad_id = tok.convert_tokens_to_ids("<image>"), tok.convert_tokens_to_ids("<pad>")
    text = dict(model_type="llama", vocab_size=(len(tok) // 64 + 1) * 64, hidden_size=hidden_size,
                num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=4,
                intermediate_size=hidden_size * 2, max_position_embeddings=4096, rms_norm_eps=1e-5,
                bos_token_id=1, eos_token_id=2, pad_token_id=0)
    vision = dict(model_type="clip_vision_model", hidden_size=vision_hidden, intermediate_size=vision_hidden * 4,
                  num_hidden_layers=2, num_attention_heads=2, image_size=image_size, patch_size=14,
                  projection_dim=vision_hidden, hidden_act="quick_gelu")
    config = LlavaConfig(text_config=text, vision_config=vision, image_token_index=image_id, pad_token_id=pad_id,
                         projector_hidden_act="gelu", vision_feature_layer=-2,
                         vision_feature_select_strategy="default", tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=pad_id)
    processor_config = {"num_additional_image_tokens": 1, "patch_size": 14, "processor_class": "LlavaProcessor",
                        "vision_feature_select_strategy": "default"}
    return _save_vlm(model, out, tok, LLAVA15_TEMPLATE, _clip_preprocessor(image_size), processor_config)


GEMMA3_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>",
                   "<start_of_image>", "<end_of_image>"]


def write_gemma3(out: str | Path, hidden_size: int = 64, num_layers: int = 2, vision_hidden: int = 32,
                 image_size: int = 112, tokens_per_image: int = 4, seed: int = 0) -> Path:
    """A google/gemma-3-*-it folder (Gemma3ForConditionalGeneration, Gemma3Config; MedGemma's architecture) at toy
    size.

    As released: ``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3, ``<mask>`` 4 (GemmaTokenizer's defaults), the
    turn markers, ``<start_of_image>`` / ``<end_of_image>`` and ``<image_soft_token>`` as the tokenizer's
    boi/eoi/image tokens (transformers' convert_gemma3_weights.py: extra_special_tokens, add_bos_token=True;
    the soft token last, id 262144 in the release); SigLIP vision tower without its head, average-pooled to
    ``mm_tokens_per_image`` tokens (released 896 px / patch 14 -> 256 tokens; toy 112 px -> 4); tied embeddings;
    alternating sliding/full attention; Gemma3ImageProcessor with mean/std 0.5; processor_config.json
    image_seq_length; generation stops on ``<eos>`` or ``<end_of_turn>``; the released template
    (TRL's byte-identical copy trl/chat_templates/gemma3.jinja, "as shipped by google/gemma-3-* checkpoints").
    """
    import torch
    from transformers import AddedToken, Gemma3Config, Gemma3ForConditionalGeneration, GenerationConfig

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = _sentencepiece_bpe(GEMMA3_SPECIALS, 500, "GemmaTokenizer", extra_special_tokens={
        "image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"})
    tok.add_tokens(AddedToken("<image_soft_token>", special=True, normalized=False), special_tokens=True)
    tok.model_max_length = 131072
    ids = {t: tok.convert_tokens_to_ids(t) for t in GEMMA3_SPECIALS + ["<image_soft_token>"]}
    text = dict(vocab_size=(len(tok) // 64 + 1) * 64, hidden_size=hidden_size, num_hidden_layers=num_layers,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16, intermediate_size=hidden_size * 2,
                query_pre_attn_scalar=16, sliding_window=64, max_position_embeddings=131072,
                layer_types=["sliding_attention"] * (num_layers - 1) + ["full_attention"],
                pad_token_id=0, eos_token_id=1, bos_token_id=2)
    vision = dict(model_type="siglip_vision_model", hidden_size=vision_hidden, intermediate_size=vision_hidden * 4,
                  num_hidden_layers=2, num_attention_heads=2, image_size=image_size, patch_size=14,
                  vision_use_head=False, layer_norm_eps=1e-6)
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=tokens_per_image,
                          boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"],
                          image_token_index=ids["<image_soft_token>"], tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config)
    model.generation_config = GenerationConfig(bos_token_id=2, pad_token_id=0, eos_token_id=[1, ids["<end_of_turn>"]],
                                               do_sample=True, top_k=64, top_p=0.95)
    preprocessor = {"do_convert_rgb": None, "do_normalize": True, "do_pan_and_scan": None, "do_rescale": True,
                    "do_resize": True, "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "Gemma3ImageProcessor",
                    "image_seq_length": tokens_per_image, "image_std": [0.5, 0.5, 0.5],
                    "pan_and_scan_max_num_crops": None, "pan_and_scan_min_crop_size": None,
                    "pan_and_scan_min_ratio_to_activate": None, "processor_class": "Gemma3Processor", "resample": 2,
                    "rescale_factor": 0.00392156862745098, "size": {"height": image_size, "width": image_size}}
    processor_config = {"image_seq_length": tokens_per_image, "processor_class": "Gemma3Processor"}
    return _save_vlm(model, out, tok, released_template("gemma3"), preprocessor, processor_config)


# OpenGVLab/InternVL3-*-hf as transformers' conversion script writes it (huggingface/transformers
# src/transformers/models/internvl/convert_internvl_weights_to_hf.py: chat_template, write_tokenizer,
# write_image_processor; the version whose template renders <IMG_CONTEXT>, as InternVLProcessor expects).
INTERNVL_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "{{ '<IMG_CONTEXT>\n' }}{% elif content['type'] == 'video' %}{{ '<video>\n' }}{% elif content['type'] == 'text' %}"
    "{{ content['text'] }}{% endif %}{% endfor %}{% endif %}{{'<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}")
INTERNVL_ADDED = ["<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>"]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def write_internvl(out: str | Path, hidden_size: int = 64, num_layers: int = 2, vision_hidden: int = 32,
                   image_size: int = 56, seed: int = 0) -> Path:
    """An OpenGVLab/InternVL3-1B-hf folder (InternVLForConditionalGeneration, InternVLConfig, transformers-native)
    at toy size: Qwen2.5-VL's tokenizer plus ``<img>`` ``</img>`` ``<IMG_CONTEXT>`` and the grounding tokens
    (ids 151665.. in the release; image_token_id 151667), ``<|im_end|>`` as eos, InternViT with absolute
    position embeddings, pixel shuffle 0.5 and a LayerNorm+MLP projector, GotOcr2 image processor (448 px tiles,
    ImageNet mean/std; toy 56 px), processor_config image_seq_length = (image/patch)^2 / 4, the template above."""
    import torch
    from transformers import GenerationConfig, InternVLConfig, InternVLForConditionalGeneration

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # the script's extra_special_tokens name <video> too; it is added after the grounding tokens
    tok = _qwen25_tokenizer(more=(*INTERNVL_ADDED, "<video>"), extra_special_tokens={
        "start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>"})
    tok.model_max_length = 8192
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN25_ADDED_TOKENS + INTERNVL_ADDED}
    text = dict(model_type="qwen2", vocab_size=(len(tok) // 64 + 2) * 64, hidden_size=hidden_size,
                num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=hidden_size * 2, max_position_embeddings=32768, rope_theta=1e6,
                rms_norm_eps=1e-6, tie_word_embeddings=True, eos_token_id=ids["<|im_end|>"],
                bos_token_id=ids["<|endoftext|>"])
    vision = dict(hidden_size=vision_hidden, intermediate_size=vision_hidden * 4, num_hidden_layers=2,
                  num_attention_heads=2, image_size=[image_size, image_size], patch_size=[14, 14],
                  use_absolute_position_embeddings=True, use_qk_norm=False, attention_bias=True,
                  layer_scale_init_value=0.1, norm_type="layer_norm")
    config = InternVLConfig(text_config=text, vision_config=vision, image_token_id=ids["<IMG_CONTEXT>"],
                            downsample_ratio=0.5, projector_hidden_act="gelu", vision_feature_layer=-1,
                            vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    preprocessor = {"crop_size": None, "crop_to_patches": False, "do_center_crop": None, "do_convert_rgb": True,
                    "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": IMAGENET_MEAN,
                    "image_processor_type": "GotOcr2ImageProcessor", "image_std": IMAGENET_STD,
                    "max_patches": 12, "min_patches": 1, "processor_class": "InternVLProcessor", "resample": 3,
                    "rescale_factor": 0.00392156862745098, "size": {"height": image_size, "width": image_size}}
    seq = (image_size // 14) ** 2 // 4
    return _save_vlm(model, out, tok, INTERNVL_TEMPLATE, preprocessor,
                     {"image_seq_length": seq, "processor_class": "InternVLProcessor"}, tokenizer_class="Qwen2Tokenizer")


def _scaled_pinpoints(base: int, pairs: list[tuple[int, int]], size: int) -> list[list[int]]:
    """A release's anyres grid (multiples of its tile size ``base``) at the toy tile ``size``."""
    return [[h // base * size, w // base * size] for h, w in pairs]


def _llava_vision(vision_hidden: int, image_size: int, model_type: str = "clip_vision_model", **extra) -> dict:
    return dict(model_type=model_type, hidden_size=vision_hidden, intermediate_size=vision_hidden * 4,
                num_hidden_layers=2, num_attention_heads=2, image_size=image_size, patch_size=14, **extra)


def write_llava_next(out: str | Path, hidden_size: int = 64, num_layers: int = 2, vision_hidden: int = 32,
                     image_size: int = 56, seed: int = 0) -> Path:
    """A llava-hf/llava-v1.6-mistral-7b-hf folder (LlavaNextForConditionalGeneration, LlavaNextConfig) at toy size.

    As transformers' convert_llava_next_weights_to_hf.py writes it: Mistral-7B-Instruct-v0.2's Llama-style
    tokenizer plus ``<image>`` (32000) and ``<pad>`` (32001), CLIP ViT-L/14-336 tower, image_newline parameter,
    anyres grid [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]] (scaled to the toy tile),
    LlavaNextImageProcessor with CLIP mean/std; processor_config.json patch_size 14, ``default`` strategy and
    num_additional_image_tokens 1 (the CLS the strategy drops); the released template (TRL's byte-identical copy
    trl/chat_templates/llava_next.jinja, "as shipped by llava-hf/llava-v1.6-mistral-7b-hf").
    """
    import torch
    from transformers import AddedToken, GenerationConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = _sentencepiece_bpe(["<unk>", "<s>", "</s>"], 500, "LlamaTokenizer")
    tok.add_tokens(AddedToken("<image>", special=True, normalized=False), special_tokens=True)
    tok.add_special_tokens({"pad_token": "<pad>"})
    tok.model_max_length = 32768
    image_id, pad_id = tok.convert_tokens_to_ids("<image>"), tok.convert_tokens_to_ids("<pad>")
    text = dict(model_type="mistral", vocab_size=(len(tok) // 64 + 1) * 64, hidden_size=hidden_size,
                num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=hidden_size * 2, max_position_embeddings=32768, rope_theta=1e6,
                sliding_window=None, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)
    pinpoints = _scaled_pinpoints(336, [(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)], image_size)
    config = LlavaNextConfig(text_config=text, vision_config=_llava_vision(vision_hidden, image_size,
                                                                          hidden_act="quick_gelu"),
                             image_token_index=image_id, pad_token_id=pad_id, image_grid_pinpoints=pinpoints,
                             vision_feature_layer=-2, vision_feature_select_strategy="default",
                             tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(config)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=pad_id)
    preprocessor = {**_clip_preprocessor(image_size), "image_processor_type": "LlavaNextImageProcessor",
                    "do_pad": True, "image_grid_pinpoints": pinpoints, "processor_class": "LlavaNextProcessor"}
    processor_config = {"num_additional_image_tokens": 1, "patch_size": 14, "processor_class": "LlavaNextProcessor",
                        "vision_feature_select_strategy": "default"}
    return _save_vlm(model, out, tok, released_template("llava_next"), preprocessor, processor_config)


# llava-hf/llava-onevision-qwen2-*-hf's template, as transformers' conversion script pushes it with the processor
# (huggingface/transformers src/transformers/models/llava_onevision/convert_llava_onevision_weights_to_hf.py).
LLAVA_ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}"
    "{{ content['text'] }}{% endgeneration %}{% endfor %}{% endif %}{{'<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# lmms-lab's anyres_max_9 grid: 384-px tiles, 1x1 .. 6x6
ONEVISION_PAIRS = [(384 * i, 384 * j) for i in range(1, 7) for j in range(1, 7)]


def write_llava_onevision(out: str | Path, hidden_size: int = 64, num_layers: int = 2, vision_hidden: int = 32,
                          image_size: int = 56, seed: int = 0) -> Path:
    """A llava-hf/llava-onevision-qwen2-0.5b-ov-hf folder (LlavaOnevisionForConditionalGeneration) at toy size.

    As the conversion script writes it: Qwen2-Instruct's tokenizer (three special tokens) plus ``<image>`` and
    ``<video>`` right after (151646, 151647 in the release), SigLIP-so400m tower without its head, ``full``
    feature strategy, image_newline, anyres_max_9 over 384-px tiles (toy tile 56), tied embeddings (0.5B),
    processor num_image_tokens = (tile / 14)^2 (729 released); the template above. The released
    tokenizer_config.json keeps Qwen2-Instruct's own template, not reproduced here: every path reads
    chat_template.json, which is the processor's.
    """
    import torch
    from transformers import GenerationConfig, LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = _bpe_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"], 600)
    tok.add_special_tokens({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>", "<image>", "<video>")}
    text = dict(model_type="qwen2", vocab_size=(len(tok) // 64 + 2) * 64, hidden_size=hidden_size,
                num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=hidden_size * 2, max_position_embeddings=32768, rope_theta=1e6,
                rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=ids["<|endoftext|>"],
                eos_token_id=ids["<|im_end|>"])
    pinpoints = _scaled_pinpoints(384, ONEVISION_PAIRS, image_size)
    vision = _llava_vision(vision_hidden, image_size, "siglip_vision_model", vision_use_head=False)
    config = LlavaOnevisionConfig(text_config=text, vision_config=vision, image_token_index=ids["<image>"],
                                  video_token_index=ids["<video>"], vision_feature_layer=-1,
                                  vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9",
                                  image_grid_pinpoints=pinpoints, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config)
    model.generation_config = GenerationConfig(bos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"],
                                               eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]])
    preprocessor = {"do_convert_rgb": True, "do_normalize": True, "do_pad": True, "do_rescale": True,
                    "do_resize": True, "image_grid_pinpoints": pinpoints, "image_mean": [0.5, 0.5, 0.5],
                    "image_processor_type": "LlavaOnevisionImageProcessor", "image_std": [0.5, 0.5, 0.5],
                    "processor_class": "LlavaOnevisionProcessor", "resample": 3,
                    "rescale_factor": 0.00392156862745098, "size": {"height": image_size, "width": image_size}}
    processor_config = {"num_image_tokens": (image_size // 14) ** 2, "processor_class": "LlavaOnevisionProcessor",
                        "vision_feature_select_strategy": "full", "vision_aspect_ratio": "anyres_max_9"}
    return _save_vlm(model, out, tok, LLAVA_ONEVISION_TEMPLATE, preprocessor, processor_config,
                     tokenizer_class="Qwen2Tokenizer")


QWEN3_ADDED_TOKENS = QWEN25_ADDED_TOKENS + ["<tool_response>", "</tool_response>", "<think>", "</think>"]


def write_qwen3_vl(out: str | Path, hidden_size: int = 64, num_layers: int = 2, vision_hidden: int = 32,
                   min_pixels: int = 32 * 32 * 4, max_pixels: int = 32 * 32 * 16, seed: int = 0) -> Path:
    """A Qwen/Qwen3-VL-*-Instruct folder (Qwen3VLForConditionalGeneration, Qwen3VLConfig) at toy size.

    Qwen3's tokenizer (Qwen2.5's 22 added tokens, then <tool_response>, </tool_response>, <think>, </think>), the
    released template (TRL's byte-identical copy trl/chat_templates/qwen3_vl.jinja), interleaved M-RoPE, a ViT
    with learned position embeddings, patch 16 / merge 2 / temporal patch 2 and DeepStack mergers; the
    preprocessor_config.json layout Qwen3VLProcessor checkpoints ship (size.shortest_edge / longest_edge =
    min/max pixels, mean/std 0.5; released 65536 / 16777216, toy values here so an image is a few tokens; the
    public copies read are of Qwen3.5 checkpoints, which share this processor, not of a Qwen3-VL one).
    """
    import torch
    from transformers import GenerationConfig, Qwen3VLConfig, Qwen3VLForConditionalGeneration

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = _bpe_tokenizer(QWEN3_ADDED_TOKENS, 600)
    tok.add_special_tokens({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    tok.model_max_length = 262144
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN3_ADDED_TOKENS}
    text = dict(vocab_size=(len(tok) // 64 + 2) * 64, hidden_size=hidden_size, num_hidden_layers=num_layers,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16, intermediate_size=hidden_size * 2,
                max_position_embeddings=262144, rms_norm_eps=1e-6, tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_interleaved": True,
                                 "mrope_section": [4, 2, 2]},  # released [24, 20, 20] of head dim 128
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"])
    vision = dict(depth=2, hidden_size=vision_hidden, intermediate_size=vision_hidden * 2, num_heads=2,
                  out_hidden_size=hidden_size, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                  num_position_embeddings=256, deepstack_visual_indexes=[0], hidden_act="gelu_pytorch_tanh")
    config = Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                           video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(bos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"],
                                               eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
                                               do_sample=True, temperature=0.7, top_p=0.8, top_k=20)
    preprocessor = {"size": {"longest_edge": max_pixels, "shortest_edge": min_pixels}, "patch_size": 16,
                    "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
                    "image_std": [0.5, 0.5, 0.5], "processor_class": "Qwen3VLProcessor",
                    "image_processor_type": "Qwen2VLImageProcessorFast"}
    return _save_vlm(model, out, tok, released_template("qwen3_vl"), preprocessor, None,
                     tokenizer_class="Qwen2Tokenizer")
