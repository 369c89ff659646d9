"""gmai.model: presets, the one factory, tokenizer and chat template."""

from gmai.model.factory import create_model, load_checkpoint, save_checkpoint
from gmai.model.presets import PRESETS, ModelPreset, get_preset, list_presets

__all__ = ["PRESETS", "ModelPreset", "create_model", "get_preset", "list_presets", "load_checkpoint",
           "save_checkpoint"]
