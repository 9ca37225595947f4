"""``python -m benchmarks.chart results.json out.png``: the benchmark table as four bar charts.

Runs in benchmarks/.venv-asynq (matplotlib comes from the project's ``bench`` extra). Every bar is
a figure measured in the run: Go Asynq appears only when the run measured it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

LABELS = {
    "asynq": "asynq-aio",
    "asynq@base": "asynq-aio\n(baseline)",
    "go": "Go Asynq",
    "taskiq": "taskiq-redis",
    "saq": "SAQ",
    "arq": "arq",
    "streaq": "streaq",
}
COLORS = {"asynq": "#d62728", "asynq@base": "#f4a6a6", "go": "#1f77b4"}
PANELS = [
    ("Worker, no-op handler (tasks/s)", "worker_noop", "rate"),
    ("Worker, await sleep(10 ms), concurrency 100 (tasks/s)", "worker_sleep", "rate"),
    ("Enqueue, concurrent callers (64 coroutines; Go 16 goroutines) (tasks/s)", "enqueue_one", "rate"),
    ("Pick-up latency at idle, p50 (ms, log scale)", "latency", "p50_ms"),
]


def main(src: str, dst: str) -> None:
    with open(src) as f:
        doc: dict[str, Any] = json.load(f)
    summary = doc["summary"]
    systems = list(doc["meta"]["versions"])
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, (title, scen, metric) in zip(axes.flat, PANELS, strict=True):
        names, values, colors = [], [], []
        for s in systems:
            v = summary.get(scen, {}).get(s, {}).get(metric)
            if v is None:
                continue
            names.append(LABELS.get(s, s))
            values.append(v)
            colors.append(COLORS.get(s, "#7f7f7f"))
        bars = ax.bar(names, values, color=colors, edgecolor="black")
        texts = [f"{v:,.0f}" if v >= 10 else f"{v:.2f}" for v in values]
        for bar, v, text in zip(bars, values, texts, strict=True):
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, v),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        if metric == "p50_ms":
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    m = doc["meta"]
    fig.suptitle(
        f"asynq-aio vs its peers: medians of {m['plan']['repeats']} interleaved rounds, "
        f"Redis {m['redis']}, {m['cpus']} CPUs, {m['date'][:10]}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(dst, dpi=90)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
