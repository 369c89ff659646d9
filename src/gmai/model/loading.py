"""Loading pretrained folders strictly, with one-line errors that name the folder and the fix.

Nothing is downloaded (hub names are refused), remote code runs only when asked for, weights are
safetensors, and a checkpoint whose keys do not match the architecture its config describes is an
error (transformers alone would initialise the missing weights randomly and only warn).
"""

from __future__ import annotations

import json
from pathlib import Path

# what a full CLIP / SigLIP folder holds besides its vision tower
OTHER_HALF = ("text_model.", "text_projection", "visual_projection", "logit_scale", "logit_bias")
VISION_KINDS = {"clip": "clip", "clip_vision_model": "clip", "siglip": "siglip", "siglip_vision_model": "siglip"}


class ModelLoadError(ValueError):
    """A folder cannot be used as given; the message is one line naming the folder and the fix."""


class NotLocalError(ModelLoadError, FileNotFoundError):
    pass


def require_local_path(path: str | Path, what: str) -> Path:
    """Refuse hub names: nothing can be downloaded at run time, and a hub lookup would hang offline."""
    p = Path(path).expanduser()
    if not p.exists():
        raise NotLocalError(
            f"{what} {str(path)!r} is not a local folder. gmai loads checkpoints from local paths only "
            f"(no hub downloads at run time): download it elsewhere (e.g. `hf download {path} --local-dir DIR`) "
            f"and pass DIR.")
    return p


def read_config_json(folder: Path, what: str) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{what} folder {folder}: config.json is missing (expected a transformers checkpoint "
                             f"folder: config.json + *.safetensors, as save_pretrained writes)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{what} folder {folder}: config.json is not valid JSON ({err})") from None


def check_folder(folder: Path, what: str, trust_remote_code: bool) -> dict:
    """config.json readable, safetensors weights present, remote code only with the flag. Returns the config."""
    raw = read_config_json(folder, what)
    if not any(folder.glob("*.safetensors")):
        other = sorted(p.name for p in folder.glob("*.bin"))
        hint = f" (found {', '.join(other)}: convert them to safetensors first)" if other else ""
        raise ModelLoadError(f"{what} folder {folder}: no *.safetensors weights{hint}; gmai loads safetensors only")
    if _needs_remote_code(raw) and not trust_remote_code:
        raise ModelLoadError(f"{what} folder {folder}: model type {raw.get('model_type')!r} runs the folder's own "
                             f"Python code (auto_map in config.json); if you trust that code, pass "
                             f"model.trust_remote_code=true")
    return raw


def _needs_remote_code(raw: dict) -> bool:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return "auto_map" in raw and raw.get("model_type") not in CONFIG_MAPPING


def check_loading_info(folder: Path, what: str, info: dict, ignore_unexpected=lambda key: False) -> None:
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(k for k in (info.get("unexpected_keys") or []) if not ignore_unexpected(k))
    mismatched = sorted(str(m[0]) if isinstance(m, (tuple, list)) else str(m)
                        for m in (info.get("mismatched_keys") or []))
    problems = []
    if missing:
        problems.append(f"missing keys {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_short(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches {_short(mismatched)}")
    if problems:
        raise ModelLoadError(f"{what} folder {folder}: the weights do not match its config.json: "
                             f"{'; '.join(problems)}. Use the folder as released (config and weights together)")


def _short(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def from_pretrained_strict(cls, folder: Path, what: str, **kwargs):
    """``cls.from_pretrained`` returning (model, loading info); transformers' own load report (a table of every
    key a full CLIP's text half adds) is silenced: ``check_loading_info`` reports what matters in one line."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return cls.from_pretrained(folder, output_loading_info=True, use_safetensors=True,
                                   ignore_mismatched_sizes=True, **kwargs)  # mismatches: listed by check_loading_info
    except (RuntimeError, ValueError, OSError) as err:  # unreadable files and the like: one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f"{what} folder {folder}: cannot load the weights: {first}") from None
    finally:
        hf_logging.set_verbosity(level)


def load_tokenizer(folder: Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    files = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
    if not any((folder / f).is_file() for f in files):
        raise ModelLoadError(f"language model folder {folder}: no tokenizer files ({', '.join(files)}); copy the "
                             f"LM's tokenizer files into it")
    return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)


def load_causal_lm(folder: Path, trust_remote_code: bool = False):
    """The LM, strictly: every weight its config needs must be in the folder (a tied head may be absent)."""
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    raw = check_folder(folder, "language model", trust_remote_code)
    if "vision_config" in raw:
        raise ModelLoadError(f"language model folder {folder} is a whole vision-language model "
                             f"({raw.get('model_type')}): start from it with model.base=DIR instead of llm_path")
    if raw.get("model_type") not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and "auto_map" not in raw:
        raise ModelLoadError(f"language model folder {folder}: model type {raw.get('model_type')!r} is not a causal "
                             f"LM transformers knows")
    lm, info = from_pretrained_strict(AutoModelForCausalLM, folder, "language model",
                                      trust_remote_code=trust_remote_code)
    check_loading_info(folder, "language model", info)
    if lm.get_output_embeddings() is None:
        raise ModelLoadError(f"language model folder {folder}: {type(lm).__name__} exposes no output embeddings "
                             f"(get_output_embeddings() is None)")
    return lm


def load_vision_tower(folder: Path):
    """A CLIP / SigLIP vision tower from a full CLIP/SigLIP folder or a vision-only one. Returns (model, kind).

    A full model's other half (text tower, logit scale, projections) is the only thing left out; any other
    missing or unexpected key is an error."""
    from transformers import CLIPVisionModel, SiglipVisionModel

    raw = check_folder(folder, "vision encoder", False)
    model_type = raw.get("model_type")
    kind = VISION_KINDS.get(model_type)
    if kind is None:
        raise ModelLoadError(f"vision encoder folder {folder}: model type {model_type!r} is not supported as a "
                             f"vision tower (supported: CLIP, CLIPVisionModel, SigLIP; SigLIP2's NaFlex patches "
                             f"do not fit LLaVA's fixed grid)")
    cls = CLIPVisionModel if kind == "clip" else SiglipVisionModel
    vision, info = from_pretrained_strict(cls, folder, "vision encoder")
    full_model = not model_type.endswith("_vision_model")
    check_loading_info(folder, "vision encoder", info,
                       ignore_unexpected=lambda k: full_model and k.startswith(OTHER_HALF))
    return vision, kind


def vision_image_processor(folder: Path, image_size: int):
    """The paper's preprocessing (pad to square, resize to the tower's size) with the folder's own mean/std."""
    from transformers import LlavaImageProcessorPil

    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        cfg = json.loads(pre.read_text())
        mean, std = cfg.get("image_mean", mean), cfg.get("image_std", std)
    return LlavaImageProcessorPil(do_pad=True, size={"shortest_edge": image_size},
                                  crop_size={"height": image_size, "width": image_size}, image_mean=mean,
                                  image_std=std, do_convert_rgb=True)
