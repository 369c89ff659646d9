"""The one table of model families: per family its classes, freeze-plan module names and processor quirks.

Train, RL, eval and serve ask this table (``family_of``, ``load_base``, ``part_modules``); nothing else
branches on a family. A folder whose ``model_type`` is not in the table is refused with one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gmai.model.loading import ModelLoadError, check_folder, check_loading_info, from_pretrained_strict


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    model_class: str  # transformers class name
    # freeze-plan part -> dotted module paths inside the model (first attribute of a peft wrapper skipped)
    parts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # AutoProcessor, unless the family's processor also builds a video processor, which needs torchvision (absent
    # here): then (processor class, PIL image processor class) and the processor is built for images only
    image_only: tuple[str, str] | None = None
    lora_target_scope: str = "language_model"  # LoRA adapts linear layers under this module name
    packing: bool = True  # False: M-RoPE positions come from the image grid, so one sample per row
    # the model input marking image tokens, which the processor returns and a training batch must rebuild
    # (Gemma 3: bidirectional attention inside an image; Qwen2-VL / Qwen3-VL: M-RoPE needs it)
    image_token_types: str | None = None
    # GMAI-VL-R1's GRPO: False where its batches lack an input the model needs (anyres image_sizes)
    grpo: bool = True


FAMILIES: tuple[Family, ...] = (
    Family("llava", ("llava",), "LlavaForConditionalGeneration",
           parts={"projector": ("model.multi_modal_projector",), "vision": ("model.vision_tower",),
                  "llm": ("model.language_model", "lm_head")}),
    # LLaVA-NeXT (1.6) and LLaVA-OneVision: anyres tiles; the learned image_newline belongs to the projector
    Family("llava_next", ("llava_next",), "LlavaNextForConditionalGeneration",
           parts={"projector": ("model.multi_modal_projector", "model.image_newline"),
                  "vision": ("model.vision_tower",), "llm": ("model.language_model", "lm_head")}, grpo=False),
    Family("llava_onevision", ("llava_onevision",), "LlavaOnevisionForConditionalGeneration",
           parts={"projector": ("model.multi_modal_projector", "model.image_newline"),
                  "vision": ("model.vision_tower",), "llm": ("model.language_model", "lm_head")},
           image_only=("LlavaOnevisionProcessor", "LlavaOnevisionImageProcessorPil"), grpo=False),
    # Gemma 3 (MedGemma's architecture): SigLIP tower, pooled projector, Gemma 3 LM (head tied to the embeddings)
    Family("gemma3", ("gemma3",), "Gemma3ForConditionalGeneration",
           parts={"projector": ("model.multi_modal_projector",), "vision": ("model.vision_tower",),
                  "llm": ("model.language_model", "lm_head")}, image_token_types="token_type_ids"),
    # Qwen2.5-VL (GMAI-VL-R1's base) and Qwen2-VL: the ViT's patch merger is the projector.
    Family("qwen2_5_vl", ("qwen2_5_vl",), "Qwen2_5_VLForConditionalGeneration",
           parts={"projector": ("model.visual.merger",), "vision": ("model.visual.patch_embed", "model.visual.blocks"),
                  "llm": ("model.language_model", "lm_head")},
           image_only=("Qwen2_5_VLProcessor", "Qwen2VLImageProcessorPil"), packing=False),
    Family("qwen2_vl", ("qwen2_vl",), "Qwen2VLForConditionalGeneration",
           parts={"projector": ("model.visual.merger",), "vision": ("model.visual.patch_embed", "model.visual.blocks"),
                  "llm": ("model.language_model", "lm_head")},
           image_only=("Qwen2VLProcessor", "Qwen2VLImageProcessorPil"), packing=False,
           image_token_types="mm_token_type_ids"),
    # Qwen3-VL: learned ViT position embeddings; the merger and the DeepStack mergers feed the LM (projector)
    Family("qwen3_vl", ("qwen3_vl",), "Qwen3VLForConditionalGeneration",
           parts={"projector": ("model.visual.merger", "model.visual.deepstack_merger_list"),
                  "vision": ("model.visual.patch_embed", "model.visual.pos_embed", "model.visual.blocks"),
                  "llm": ("model.language_model", "lm_head")},
           image_only=("Qwen3VLProcessor", "Qwen2VLImageProcessorPil"), packing=False,
           image_token_types="mm_token_type_ids"),
    # InternVL (transformers-native, OpenGVLab/InternVL*-hf): InternViT, pixel-shuffle MLP projector, Qwen2/Llama LM
    Family("internvl", ("internvl",), "InternVLForConditionalGeneration",
           parts={"projector": ("model.multi_modal_projector",), "vision": ("model.vision_tower",),
                  "llm": ("model.language_model", "lm_head")},
           image_only=("InternVLProcessor", "GotOcr2ImageProcessorPil")),
)
# Image-text-to-text families people fine-tune that this table does not cover yet (refused, named).
NOT_SUPPORTED = {"internvl_chat": "InternVL (remote code; its transformers-native -hf checkpoints, e.g. "
                                  "OpenGVLab/InternVL3-1B-hf, are supported)",
                 "mllama": "Llama 3.2 Vision", "idefics3": "Idefics3", "smolvlm": "SmolVLM"}


def supported() -> str:
    return ", ".join(f.name for f in FAMILIES)


def family_for_type(model_type: str | None, folder: Path | None = None) -> Family:
    for fam in FAMILIES:
        if model_type in fam.model_types:
            return fam
    where = f"folder {folder}: " if folder else ""
    name = NOT_SUPPORTED.get(model_type or "", model_type)
    raise ModelLoadError(f"{where}model family {name!r} (model_type {model_type!r}) is not supported by gmai yet; "
                         f"supported families: {supported()}")


def unwrap(model):
    """The transformers model under a peft / accelerate wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, "module", base)


def family_of(model) -> Family:
    return family_for_type(getattr(unwrap(model).config, "model_type", None))


def part_modules(model) -> dict[str, list]:
    """Freeze-plan part name -> the model's modules, for any family in the table."""
    base = unwrap(model)
    fam = family_of(base)
    return {part: [_module_or_parameter(base, p) for p in paths] for part, paths in fam.parts.items()}


def image_token_types(model, input_ids) -> dict:
    """``{name: 1 where input_ids is the image token, else 0}`` for a family that needs it, else ``{}``."""
    family = family_of(model)
    if not family.image_token_types:
        return {}
    return {family.image_token_types: (input_ids == unwrap(model).config.image_token_id).long()}


def _module_or_parameter(model, path: str):
    """The module at ``path``; a bare parameter there (LLaVA-NeXT's image_newline) comes in a holder module."""
    import torch

    try:
        return model.get_submodule(path)
    except AttributeError:
        holder = torch.nn.Module()
        holder.register_parameter("weight", model.get_parameter(path))
        return holder


def _image_only_processor(folder: Path, family: Family):
    """The family's processor from its tokenizer and PIL image processor (AutoProcessor would also build the
    video processor, which needs torchvision); its settings (Qwen's min/max pixels, image_seq_length) come from
    the folder's preprocessor_config.json / processor_config.json."""
    import json

    import transformers
    from transformers import AutoTokenizer

    processor_class, image_processor_class = family.image_only
    tokenizer = AutoTokenizer.from_pretrained(folder)
    image_processor = getattr(transformers, image_processor_class).from_pretrained(folder)
    settings = folder / "processor_config.json"
    extra = {k: v for k, v in json.loads(settings.read_text()).items() if k != "processor_class"} \
        if settings.is_file() else {}
    return _image_only(getattr(transformers, processor_class))(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
        chat_template=_template_file(folder) or tokenizer.chat_template, **extra)


def _image_only(cls):
    """The processor class, accepting ``video_processor=None`` (its class check imports torchvision)."""

    class ImageOnly(cls):
        def check_argument_for_proper_class(self, attribute_name, arg):
            if attribute_name == "video_processor" and arg is None:
                return None
            return super().check_argument_for_proper_class(attribute_name, arg)

    ImageOnly.__name__ = ImageOnly.__qualname__ = cls.__name__
    return ImageOnly


def save_processor(processor, out: Path) -> None:
    """``processor.save_pretrained`` with the model's own chat template (gmai's in-memory adapter left out);
    an image-only Qwen-VL processor saves its parts (same files, no video)."""
    from gmai.model.chat import original_template

    adapted = getattr(processor, "chat_template", None)
    processor.chat_template = original_template(adapted)
    try:
        _save_processor(processor, Path(out))
    finally:
        processor.chat_template = adapted


def _save_processor(processor, out: Path) -> None:
    if getattr(processor, "video_processor", "absent") is None:
        import json

        processor.tokenizer.save_pretrained(out)
        processor.image_processor.save_pretrained(out)
        if processor.chat_template:
            (out / "chat_template.jinja").write_text(processor.chat_template)
        settings = {k: v for k, v in processor.to_dict().items()  # e.g. InternVL's image_seq_length
                    if k not in ("image_processor", "video_processor", "tokenizer", "chat_template")}
        (out / "processor_config.json").write_text(json.dumps(settings, indent=2) + "\n")
        return
    processor.save_pretrained(out)


def _template_file(folder: Path) -> str | None:
    for name in ("chat_template.jinja", "chat_template.json"):
        p = folder / name
        if p.is_file():
            if name.endswith(".json"):
                import json

                return json.loads(p.read_text()).get("chat_template")
            return p.read_text()
    return None


def load_processor(folder: Path, family: Family, trust_remote_code: bool = False):
    from gmai.model.chat import adapt_string_template

    if family.image_only:
        return _image_only_processor(folder, family)
    from transformers import AutoProcessor

    return adapt_string_template(AutoProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code))


def load_base(folder: Path, trust_remote_code: bool = False):
    """(model, processor) of a whole VLM folder in a supported family, loaded strictly."""
    import transformers

    raw = check_folder(folder, "checkpoint", trust_remote_code)
    family = family_for_type(raw.get("model_type"), folder)
    cls = getattr(transformers, family.model_class)
    model, info = from_pretrained_strict(cls, folder, "checkpoint", trust_remote_code=trust_remote_code)
    check_loading_info(folder, "checkpoint", info)
    return model, load_processor(folder, family, trust_remote_code)
