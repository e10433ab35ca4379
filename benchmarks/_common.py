"""Shared helpers of the benchmarks: machine facts, timing, peak memory, FLOP counts, synthetic data, reports.

Timing follows ``/work/.library/device/METHOD.md``: warm up first, synchronise the device before reading the host
clock, repeat many times and report the median with its spread, and interleave the variants being compared so
that a change of machine load hits both alike.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

REPO = Path(__file__).resolve().parent.parent
GIB = 1024 ** 3
MIB = 1024 ** 2


# ---------------------------------------------------------------------------------------------------------
# machine and provenance


def cpu_model() -> str:
    """``lscpu``'s model name (``/proc/cpuinfo`` as a fallback)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10)
        # uncommitted code that could change a figure (the results written here do not count)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "benchmarks", "trainables", "models", "data",
                                ":!benchmarks/results"], cwd=REPO, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


_LOAD_AT_START = load_average()  # this module is imported when a benchmark starts


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__, "git": git_commit(),
        "command": " ".join([Path(sys.executable).name, "-m", _module_name(), *sys.argv[1:]]),
        "load_average_start": _LOAD_AT_START, "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / GIB, 1),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return info


def _module_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec.name if spec is not None else Path(sys.argv[0]).stem


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {spec}: torch sees no CUDA device")
    return torch.device(spec)


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` → (1280, 720) (width, height)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"size {text!r}: expected WIDTHxHEIGHT, e.g. 1280x720") from None
    if width <= 0 or height <= 0:
        raise SystemExit(f"size {text!r}: width and height must be positive")
    return width, height


# ---------------------------------------------------------------------------------------------------------
# timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(times_s: Sequence[float]) -> dict[str, float]:
    """Median, p10/p90, min/max and the relative spread ((p90 − p10) / median) of per-step times, in ms."""
    ordered = sorted(times_s)
    n = len(ordered)

    def quantile(q: float) -> float:
        return ordered[min(n - 1, max(0, round(q * (n - 1))))]

    median = statistics.median(ordered)
    return {"median_ms": 1e3 * median, "p10_ms": 1e3 * quantile(0.1), "p90_ms": 1e3 * quantile(0.9),
            "min_ms": 1e3 * ordered[0], "max_ms": 1e3 * ordered[-1], "samples": n,
            "spread": (quantile(0.9) - quantile(0.1)) / median if median > 0 else 0.0}


def time_interleaved(variants: Mapping[str, Callable[[], None]], *, device: torch.device, warmup: int,
                     repeats: int, block: int = 1) -> dict[str, list[float]]:
    """Per-step seconds of each variant: ``warmup`` calls each, then ``repeats`` rounds in which every variant
    runs ``block`` calls between two device synchronisations (time per call = block time / block). Rounds
    alternate the variants (A B A B ...), so a load change on a shared machine hits them alike."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
        synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(block):
                fn()
            synchronize(device)
            times[name].append((time.perf_counter() - start) / block)
    return times


# ---------------------------------------------------------------------------------------------------------
# memory and FLOPs


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _release_free_heap() -> None:
    # Memory freed by an earlier variant stays resident in glibc's heap and would be reused unseen by the next
    # variant's peak; malloc_trim hands it back to the OS first.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    # Writing 5 to clear_refs resets VmHWM (the peak resident set size) to the current RSS (Linux >= 4.0).
    _release_free_heap()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, Any]]:
    """Peak memory of the enclosed code. CUDA: ``max_memory_allocated`` (absolute, and above what was allocated
    at entry); CPU: the peak resident set size above the RSS at entry (VmHWM after a reset; without the reset, the
    process-lifetime ``ru_maxrss``, flagged as such)."""
    out: dict[str, Any] = {}
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        yield out
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        out.update(kind="cuda_max_memory_allocated", peak_gib=peak / GIB, peak_above_entry_gib=(peak - before) / GIB,
                   reserved_gib=torch.cuda.max_memory_reserved(device) / GIB)
        return
    reset = _reset_peak_rss()
    before_kib = _proc_status_kib("VmRSS") or 0
    yield out
    if reset:
        peak_kib = _proc_status_kib("VmHWM") or 0
        out.update(kind="cpu_peak_rss_delta", peak_rss_mib=peak_kib / 1024,
                   peak_above_entry_mib=(peak_kib - before_kib) / 1024)
    else:
        import resource

        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out.update(kind="cpu_ru_maxrss_lifetime", peak_rss_mib=peak_kib / 1024,
                   peak_above_entry_mib=(peak_kib - before_kib) / 1024)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (matrix products and convolutions, forward and backward) by
    ``torch.utils.flop_counter.FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


# ---------------------------------------------------------------------------------------------------------
# synthetic benchmark on disk (for the engine's datasets) and synthetic batches (for step timing)


def tiny_benchmark(root: Path, *, num_target_train: int = 12) -> Path:
    """A small synthetic benchmark in ``root`` (generated once); the engine resizes its images to any size."""
    from data.synthetic import generate

    generate(root, seed=0, num_source=8, num_source_val=2, num_target_train=num_target_train, num_target_val=4,
             source_size=(64, 40), target_size=(64, 32))
    return root


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory this process created (and removes)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def synthetic_batch(*, batch: int, size: tuple[int, int], num_classes: int, seed: int, pin: bool,
                    with_label: bool = True) -> dict[str, torch.Tensor]:
    """A collated batch as the engine's streams deliver it: caffe-range float images and int64 labels with a few
    ignored (255) pixels. Random, never zeros (zeros can run faster than real data)."""
    width, height = size
    generator = torch.Generator().manual_seed(seed)
    out = {"image": torch.randn(batch, 3, height, width, generator=generator) * 60.0}
    if with_label:
        label = torch.randint(0, num_classes, (batch, height, width), generator=generator)
        label[torch.rand(batch, height, width, generator=generator) < 0.05] = 255
        out["label"] = label
    if pin:
        out = {k: v.pin_memory() for k, v in out.items()}
    return out


class RepeatingStream:
    """Stands in for a :class:`trainables.streams.BatchStream`: yields a few fixed batches in turn, so that the
    step is timed without the data pipeline (``benchmarks.loader`` measures that)."""

    def __init__(self, batches: Sequence[dict[str, torch.Tensor]]):
        self.batches, self.index = list(batches), 0

    def __iter__(self) -> RepeatingStream:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        batch = self.batches[self.index % len(self.batches)]
        self.index += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"index": self.index}

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------------------
# reports


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_report(out_dir: str | Path, stem: str, payload: Mapping[str, Any], table: str) -> tuple[Path, Path]:
    """``<out_dir>/<stem>.json`` (everything) and ``<stem>.md`` (machine line + table); returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    payload = dict(payload)
    payload.setdefault("machine", {})["load_average_end"] = load_average()
    json_path.write_text(json.dumps(payload, indent=1, sort_keys=True, default=str) + "\n")
    machine = payload.get("machine", {})
    where = machine.get("gpu") or f"{machine.get('cpu')} ({machine.get('torch_threads')} threads)"
    header = (f"{where}, torch {machine.get('torch')}, git {machine.get('git')}, {machine.get('date')}, "
              f"load {machine.get('load_average_start')} → {machine.get('load_average_end')}\n\n"
              f"`{machine.get('command')}`\n\n")
    md_path.write_text(header + table + "\n")
    return json_path, md_path


def default_out_dir() -> Path:
    return Path(os.environ.get("OUT") or REPO / "benchmarks" / "results")
