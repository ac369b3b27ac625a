"""One device/memory manager for a run: which models stay loaded when, under a memory budget.

Backends load through the process's one model cache (``contract.memory.SLOTS``); this manager is the only
place that decides to release them, in a declared order, like diffusers' ``model_cpu_offload_seq`` /
``maybe_free_model_hooks``: before the renderer loads on a GPU the VLM roles give way, and a finished run
frees everything. It is injected into the graph through the run context, never reached through globals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.config import RunConfig
from contract.memory import SLOTS, ModelSlots, cuda_free_gb

# Which cached models give way first when a stage needs room (cache roles, see ``ModelSlots.get(role=)``).
OFFLOAD_SEQ = ("vlm", "critic", "renderer")
STAGE_ROLE = {"watch": "vlm", "render": "renderer", "critique": "critic", "refine": "vlm"}


def resolve_device(name: str) -> str:
    """``auto`` → cuda, then mps, then cpu; anything else as given."""
    if name != "auto":
        return name
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


@dataclass
class DeviceManager:
    cfg: RunConfig
    slots: ModelSlots = field(default=SLOTS)

    @property
    def on_accelerator(self) -> bool:
        return not self.cfg.device.startswith("cpu")

    def need_gb(self, stage: str) -> float:
        """Device memory the stage's own model needs (0: nothing to make room for)."""
        if stage == "render" and self.cfg.renderer != "offline":
            return float(self.cfg.opts("renderer").get("gpu_memory_gb", 12.0))
        return 0.0

    def before(self, stage: str) -> list[str]:
        """Make room for ``stage`` on an accelerator: release other roles' models, in ``OFFLOAD_SEQ`` order,
        until what the stage needs is free (they reload lazily on their next call)."""
        need = self.need_gb(stage)
        if not self.on_accelerator or need <= 0:
            return []
        released: list[str] = []
        for role in OFFLOAD_SEQ:
            free = cuda_free_gb()
            if free is None or free >= need:
                break
            if role != STAGE_ROLE.get(stage):
                released += self.slots.release_roles({role})
        return released

    def release_all(self) -> list[str]:
        """A finished run frees every model it loaded (the next run reloads what it needs)."""
        return self.slots.release()


class KeepLoaded(DeviceManager):
    """A long-lived process's device manager (batch worker, ``foleyloop worker``): a finished run keeps its models
    loaded for the next one (``before`` still makes room on an accelerator)."""

    def release_all(self) -> list[str]:
        return []


# Backend roles → the model-cache roles their models are held under (``ModelSlots.get(role=)``).
CACHE_ROLE = {"watcher": "vlm", "refiner": "vlm", "renderer": "renderer", "critic": "critic"}
