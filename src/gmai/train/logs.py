"""Training logs: ``OUT/metrics.jsonl``, TensorBoard, the Rich console, and PNG curves per stage."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path


class MetricsLog:
    """Appends JSON lines to ``OUT/metrics.jsonl`` and scalars to TensorBoard (main process only)."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool):
        self.out = out
        self.enabled = enabled
        self.path = out / "metrics.jsonl"
        self._tb = None
        self._tb_wanted = tensorboard and enabled
        self._tb_stage = None

    def event(self, **fields) -> None:
        if not self.enabled:
            return
        fields.setdefault("time", round(time.time(), 3))
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(fields, default=str) + "\n")

    def step(self, stage: int, step: int, values: dict) -> None:
        self.event(event="step", stage=stage, step=step, **values)
        if not self._tb_wanted:
            return
        if self._tb_stage != stage:
            self.close()
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is in the [train] extra; logs still go to metrics.jsonl
                self._tb_wanted = False
                return
            self._tb = SummaryWriter(str(self.out / "tensorboard" / f"stage{stage}"))
            self._tb_stage = stage
        for key, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._tb.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
            self._tb_stage = None


METRICS_FILE = "metrics.jsonl"


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a run's ``metrics.jsonl`` (training stages and GRPO alike): ``path`` is the file or the
    run folder that holds it; [] when there is none yet."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def step_curves(metrics: list[dict]) -> dict[int, dict[int, dict]]:
    """stage -> step -> last logged values (a resumed run re-logs some steps; the last one wins)."""
    curves: dict[int, dict[int, dict]] = {}
    for m in metrics:
        if m.get("event") == "step":
            curves.setdefault(int(m["stage"]), {})[int(m["step"])] = m
    return curves


def plot_curves(out: Path) -> list[Path]:
    """One PNG per stage (``OUT/plots/stageK.png``) and one overview (``OUT/training_curves.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = step_curves(read_metrics(out / "metrics.jsonl"))
    if not curves:
        return []
    written = []
    keys = [("loss", "loss"), ("lr", "learning rate"), ("grad_norm", "grad norm"), ("tokens_per_s", "tokens/s")]
    (out / "plots").mkdir(parents=True, exist_ok=True)
    overview, axes_all = plt.subplots(len(curves), len(keys), figsize=(4 * len(keys), 2.6 * len(curves)),
                                      squeeze=False)
    for row, (stage, steps) in enumerate(sorted(curves.items())):
        xs = sorted(steps)
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
        for col, (key, label) in enumerate(keys):
            ys = [steps[x].get(key, float("nan")) for x in xs]
            for ax in (axes[0][col], axes_all[row][col]):
                ax.plot(xs, ys, lw=1.2)
                ax.set_title(f"stage {stage}: {label}", fontsize=9)
                ax.set_xlabel("step", fontsize=8)
                ax.tick_params(labelsize=7)
        fig.tight_layout()
        path = out / "plots" / f"stage{stage}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    overview.tight_layout()
    overview.savefig(out / "training_curves.png", dpi=80)
    plt.close(overview)
    written.append(out / "training_curves.png")
    return written
