"""FSDP2 (``torch.distributed.fsdp.fully_shard``) driven by the trainer itself.

accelerate (1.15 and 1.16) turns FSDP on only for accelerator devices: a CPU launch of an FSDP config runs as
plain data parallel. So the trainer reads the FSDP launch settings that ``accelerate launch --config_file
recipes/accelerate/fsdp.yaml`` exports (``ACCELERATE_USE_FSDP``, ``FSDP_VERSION``, ...), tells accelerate not to
wrap the model, and shards it with torch's FSDP2 on a 1-D device mesh of all processes: gloo on CPU, NCCL on a
GPU. CPU and GPU runs go through this one code path.

- every LM decoder layer is its own unit; the rest (vision tower, projector, embeddings, norms, head) is the
  root unit (see ``lm_layers``);
- step checkpoints are sharded: model + optimizer through ``torch.distributed.checkpoint`` (each rank writes
  its own shards), scheduler and RNG per rank;
- the stage's HF checkpoint is the full state dict gathered on rank 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

USE_FSDP = "ACCELERATE_USE_FSDP"


@dataclass(frozen=True)
class Fsdp:
    reshard_after_forward: bool = True


def fsdp_from_launch() -> Fsdp | None:
    """The FSDP settings of this launch (None: not an FSDP launch). Takes FSDP away from accelerate."""
    if os.environ.get(USE_FSDP, "false").lower() != "true":
        return None
    version = os.environ.get("FSDP_VERSION", "1")
    if version != "2":
        raise ValueError(f"FSDP launch with fsdp_version {version}: gmai shards with FSDP2 only; set "
                         f"fsdp_config.fsdp_version: 2 in the accelerate config (see recipes/accelerate/fsdp.yaml)")
    if os.environ.get("FSDP_OFFLOAD_PARAMS", "false").lower() == "true":
        raise ValueError("FSDP launch with fsdp_offload_params: true is not supported by gmai's trainer; set it "
                         "to false (see recipes/accelerate/fsdp.yaml)")
    reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() in ("true", "full_shard")
    os.environ[USE_FSDP] = "false"  # accelerate keeps plain process-group set-up; the trainer shards
    return Fsdp(reshard_after_forward=reshard)


def shard_model(model, fsdp: Fsdp, device) -> None:
    """Shard ``model`` in place over all processes (after the freeze plan, before the optimizer exists)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if hasattr(model, "peft_config"):
        raise ValueError("LoRA under FSDP is not supported by gmai's trainer: train LoRA stages with data "
                         "parallel (recipes/accelerate/ddp_cpu.yaml / ddp.yaml) or without a launcher")
    if not dist.is_initialized():  # a 1-process launch (e.g. benchmarks/gpu_check.sh): accelerate left it unset
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    for tensor in list(model.parameters()) + list(model.buffers()):  # every rank starts from rank 0's weights
        dist.broadcast(tensor.data, src=0)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for module in lm_layers(model):
        fully_shard(module, mesh=mesh, reshard_after_forward=fsdp.reshard_after_forward)
    fully_shard(model, mesh=mesh, reshard_after_forward=fsdp.reshard_after_forward)
    # A micro-batch without images leaves the vision tower unused on one rank: reduce zeros for it so every
    # rank issues the same reduce-scatters (DDP's find_unused_parameters).
    model.set_reduce_scatter_unused_params(True)


def lm_layers(model) -> list:
    """The LM's layers (classes the model lists in ``_no_split_modules``): its own FSDP units.

    The vision tower stays in the root unit: a micro-batch without images skips it on one rank, and every rank
    must all-gather the same units in the same order (a vision unit gathered on one rank only is a collective
    mismatch; this failed with gloo before)."""
    from gmai.model.freeze import model_parts

    classes = set(getattr(model, "_no_split_modules", None) or [])
    return [m for part in model_parts(model)["llm"] for m in part.modules() if type(m).__name__ in classes]


def set_gradient_sync(model, sync: bool) -> None:
    model.set_requires_gradient_sync(sync)


def drop_unused_grads(model) -> None:
    """Parameters no rank used in this step (the vision tower and projector in a batch without images; layers the
    model skips, e.g. CLIP's last layer) got zeros from FSDP (unused parameters, above). A zero global gradient
    becomes None, so AdamW skips them as in one process, where momentum and weight decay leave them alone."""
    import torch
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return
    local = torch.stack([(p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad).abs().sum().float()
                         for p in params])
    dist.all_reduce(local)  # the shards' sums: each parameter's whole gradient
    for param, total in zip(params, local.tolist()):
        if total == 0.0:
            param.grad = None


def clip_grad_norm(model, max_norm: float) -> float:
    import torch
    from torch.distributed.tensor import DTensor

    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)


def shard_report(model) -> dict:
    """This rank's share of the parameters: a sharded model holds ~1/world of them; a replica holds all."""
    from torch.distributed.tensor import DTensor

    params = list(model.parameters())
    local = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params)
    return {"local_numel": local, "total_numel": sum(p.numel() for p in params),
            "dtensor_params": sum(isinstance(p, DTensor) for p in params), "params": len(params)}


def save_sharded_state(path: Path, model, optimizer, scheduler, rank: int) -> None:
    """Model and optimizer shards (torch.distributed.checkpoint; collective), scheduler + RNG per rank."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=str(path / "sharded"))
    torch.save({"scheduler": scheduler.state_dict(), "rng": _rng_state()}, path / f"rank{rank}.pt")


def load_sharded_state(path: Path, model, optimizer, scheduler, rank: int) -> None:
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)  # (fills optimizer state for every parameter)
    # AdamW keeps no state for a parameter that never had a gradient (e.g. CLIP's layer after the feature layer):
    # restore exactly the states that were saved.
    saved = _saved_optimizer_params(path / "sharded")
    optim_sd["state"] = {fqn: st for fqn, st in optim_sd["state"].items() if fqn in saved}
    state = {"model": model_sd, "optimizer": optim_sd}
    dcp.load(state, checkpoint_id=str(path / "sharded"))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                   options=StateDictOptions(strict=False))  # not strict: the optimizer states left out above
    own = torch.load(path / f"rank{rank}.pt", weights_only=False)
    scheduler.load_state_dict(own["scheduler"])
    _set_rng_state(own["rng"])


def _saved_optimizer_params(checkpoint: Path) -> set[str]:
    """The parameter names with optimizer state in a checkpoint (keys ``optimizer.state.<fqn>.<name>``)."""
    import torch.distributed.checkpoint as dcp

    keys = dcp.FileSystemReader(str(checkpoint)).read_metadata().state_dict_metadata
    prefix = "optimizer.state."
    return {key[len(prefix):].rsplit(".", 1)[0] for key in keys if key.startswith(prefix)}


def full_state_dict(model) -> dict:
    """The whole model's weights gathered on rank 0 (on CPU); other ranks get {}. All ranks must call."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_pretrained_full(model, state_dict: dict, path: Path) -> None:
    """``save_pretrained`` with gathered weights, under the model's own class name (FSDP2 renames the class to
    ``FSDP<Name>``, and transformers writes the class name into config.json's ``architectures``)."""
    sharded_cls = type(model)
    model.__class__ = _unsharded_class(sharded_cls)
    try:
        model.save_pretrained(path, state_dict=state_dict, safe_serialization=True)
    finally:
        model.__class__ = sharded_cls


def _unsharded_class(cls):
    from torch.distributed.fsdp import FSDPModule

    return next(c for c in cls.__mro__ if not issubclass(c, FSDPModule))


def _rng_state() -> dict:
    import random

    import numpy as np
    import torch

    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}


def _set_rng_state(state: dict) -> None:
    import random

    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
