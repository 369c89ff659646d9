"""Freeze plans: which parts of a model a training stage updates.

The paper's three stages train (I) the projector, (II) projector + vision encoder, (III) everything.
Parts are named ``projector``, ``vision`` and ``llm`` (the language model and its output head).
"""

from __future__ import annotations

PARTS = ("projector", "vision", "llm")


def model_parts(model) -> dict[str, list]:
    """The modules behind each part name, for a (possibly peft-wrapped) model of a family in
    ``gmai.model.families`` (LLaVA: projector / vision tower / LM + head; Qwen2.5-VL: merger / ViT / LM + head)."""
    from gmai.model.families import part_modules

    return part_modules(model)


def _unique_params(modules):
    seen = set()
    for module in modules:
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                yield p


def apply_freeze_plan(model, trainable: list[str] | tuple[str, ...]) -> dict[str, int]:
    """Make exactly the named parts trainable; everything else frozen. Returns trainable counts per part."""
    unknown = set(trainable) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown model part(s) {sorted(unknown)}; parts: {PARTS}")
    for p in model.parameters():
        p.requires_grad_(False)
    parts = model_parts(model)
    for name in trainable:
        for p in _unique_params(parts[name]):
            p.requires_grad_(True)
    return count_parameters(model)["trainable"]


def count_parameters(model) -> dict[str, dict[str, int]]:
    """``{"trainable": {part: n, ..., "total": n}, "all": {part: n, ..., "total": n}}``."""
    parts = model_parts(model)
    trainable, everything = {}, {}
    for name, modules in parts.items():
        params = list(_unique_params(modules))
        everything[name] = sum(p.numel() for p in params)
        trainable[name] = sum(p.numel() for p in params if p.requires_grad)
    trainable["total"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    everything["total"] = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "all": everything}
