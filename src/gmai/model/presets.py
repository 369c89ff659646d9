"""Model presets: small declarative configs, built by one factory (``gmai.model.factory``).

A preset names a vision tower, a language model and the projector between them. The ``tiny``
preset is trained here from scratch on CPU; the 7B presets describe the paper's model and load
real pretrained parts from local folders (nothing is downloaded at run time).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class VisionSpec:
    kind: str = "clip"  # "clip" | "siglip"
    image_size: int = 336
    patch_size: int = 14
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 4096
    feature_layer: int = -2  # the paper: features from the second-to-last layer
    select_strategy: str = "default"  # "default" drops CLIP's CLS token -> (336/14)^2 = 576 tokens

    @property
    def num_image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class TextSpec:
    kind: str = "qwen2"  # any HF causal LM type; "qwen2" needs no remote code
    hidden_size: int = 3584
    num_layers: int = 28
    num_heads: int = 28
    num_kv_heads: int = 4
    intermediate_size: int = 18944
    vocab_size: int = 152064
    max_position_embeddings: int = 32768
    rope_theta: float = 1_000_000.0


@dataclass(frozen=True)
class ModelPreset:
    name: str
    vision: VisionSpec | None  # None: taken from the vision folder's own config (vision_path)
    text: TextSpec | None  # None: taken from the LM folder's own config (llm_path)
    description: str = ""
    projector_act: str = "gelu"  # 2-layer MLP projector: Linear -> GELU -> Linear
    feature_layer: int = -2  # the paper: vision features from the second-to-last layer
    # Local folders of pretrained parts. Hub names are refused: nothing is downloaded at run time.
    vision_path: str | None = None
    llm_path: str | None = None
    trust_remote_code: bool = False  # never on by default
    tokenizer_vocab_size: int = 0  # tiny only: size of the byte-level BPE trained on the corpus
    extra: dict = field(default_factory=dict)

    def with_paths(self, vision_path: str | None = None, llm_path: str | None = None) -> "ModelPreset":
        return replace(self, vision_path=vision_path or self.vision_path, llm_path=llm_path or self.llm_path)


PRESETS: dict[str, ModelPreset] = {
    "tiny": ModelPreset(
        name="tiny",
        description="CPU-sized LLaVA (CLIP-style ViT + Qwen2-style LM, ~6M params) trained from scratch here.",
        vision=VisionSpec(kind="clip", image_size=128, patch_size=16, hidden_size=192, num_layers=3,
                          num_heads=4, intermediate_size=512),
        text=TextSpec(kind="qwen2", hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2,
                      intermediate_size=704, vocab_size=0, max_position_embeddings=1024, rope_theta=10000.0),
        tokenizer_vocab_size=4096,
    ),
    # The paper's model from pretrained parts: the architecture comes from the folders' own configs
    # (e.g. CLIP ViT-L/14-336 -> 576 visual tokens; Qwen2.5-7B-Instruct), the preset names the projector.
    "gmai-vl-7b": ModelPreset(
        name="gmai-vl-7b",
        description="The paper's model from parts: a CLIP/SigLIP folder (model.vision_path=DIR, e.g. "
                    "clip-vit-large-patch14-336) + a causal LM folder (model.llm_path=DIR, e.g. "
                    "Qwen2.5-7B-Instruct); 2-layer GELU MLP projector, features from the second-to-last layer.",
        vision=None,
        text=None,
    ),
}


def get_preset(name: str) -> ModelPreset:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def list_presets() -> list[str]:
    return sorted(PRESETS)
