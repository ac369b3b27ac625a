"""Graph state: ids, paths and small numbers only (checkpointed after every node). Never tensors or models."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

from agent.config import RunConfig
from agent.devices import DeviceManager
from store.db import Store


class RunState(TypedDict, total=False):
    run_id: str
    branch: int
    video_path: str | None
    out_path: str | None
    out_force: bool  # the user allowed ``out_path`` to replace an existing file (--force)
    rounds_cap: int  # how many rounds this branch may render
    round_index: int  # index (within the branch) of the round being worked on
    current_round_id: int | None
    best_round_id: int | None
    best_overall: float | None
    rounds_without_improvement: int
    aimed_at: list[str] | None  # the dimensions the last refine acted on (None: not said)
    aimed_round_id: int | None  # the round ``aimed_at`` belongs to
    stop_reason: str | None
    seed: int
    output_path: str | None


@dataclass
class RunContext:
    """Per-invocation runtime objects (not checkpointed): rebuilt from the DB on resume.

    Routing reads it too (``cfg.review``), so one compiled graph serves every configuration."""

    store: Store
    cfg: RunConfig
    devices: DeviceManager | None = field(default=None)

    def __post_init__(self) -> None:
        if self.devices is None:
            self.devices = DeviceManager(self.cfg)


def thread_id(run_id: str, branch: int) -> str:
    return run_id if branch == 0 else f"{run_id}:b{branch}"
