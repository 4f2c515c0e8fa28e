"""Where the detector network's work, time and memory go: for benchmarks/experiments/gpu.py.

- `network_cost`: every aten op of one forward pass on the CPU, channels_last as on the GPU (the
  counts depend on shapes and layouts only, so they hold for any device): floating-point
  operations, bytes each op reads and writes, and the peak of the activations alive at once,
  by kind of step. (torch's meta device would be cheaper but lays convolution outputs out
  differently, which adds copies that no real device makes.)
- `step_times`: the device time of each step of the network (CUDA events around every step, or
  the wall clock on a CPU), summed by the same kinds, beside the bytes they move.
- `kernel_table`: torch.profiler's busiest kernels (CUDA) or ops (CPU).
- `memory_breakdown`: on CUDA, what the allocator holds after loading, at the first batch of a
  shape (with and without cuDNN's benchmark mode) and once it is warm, and what the device
  reports in use (the CUDA context included).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from focal.face import torch_detector as tr
from focal.face import torch_graph as tg

MIB = 1 << 20
WARM_TIMED = 5  # detects timed once warm, in memory_breakdown
PAD = "pad (TF SAME) before "


def step_kind(step: nn.Module) -> str:
    """A step of the translated graph by what it costs: convolutions by shape, the rest by role."""
    if isinstance(step, tg.Conv):
        conv = step.conv
        size = "x".join(str(k) for k in conv.kernel_size)
        name = f"conv {size} depthwise" if conv.groups > 1 else f"conv {size}"
        if tuple(conv.stride) != (1, 1):
            name += f" stride {conv.stride[0]}"
        return name
    if isinstance(step, tg.Clip):
        return "clip (ReLU6)"
    if isinstance(step, tg.Relu | tg.LeakyRelu):
        return "relu, leaky relu"
    if isinstance(step, tg.Elementwise):
        two = step.slots.count("input") == 2
        return "add of two activations" if two else "arithmetic with a constant"
    if isinstance(step, tg.Concat):
        return "concat"
    if isinstance(step, tg.ResizeNearest):
        return "resize"
    if isinstance(step, tg.Softmax):
        return "softmax"
    return "layout"


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def _tensors(tree: Any) -> list[Tensor]:
    return [t for t in pytree.tree_leaves(tree) if isinstance(t, Tensor)]


def _conv_flops(args: Sequence[Any], out: Tensor) -> int:
    weight = args[1]
    per_output = int(weight.shape[1]) * int(weight[0, 0].numel())  # inputs per group x kernel
    return 2 * out.numel() * per_output


_PADS = (torch.ops.aten.pad, torch.ops.aten.constant_pad_nd)


class _Counter(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Counts every aten op's bytes and FLOPs against the current step, and follows which
    storages are alive (by their tensors) to find the activation peak."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.step = -1
        self.flops: dict[int, int] = {}
        self.moved: dict[tuple[int, bool], int] = {}  # (step, whether a pad op) -> bytes
        self.storages: dict[int, tuple[int, list[weakref.ref[Tensor]]]] = {}
        self.peak = 0

    def track(self, tensors: Iterable[Tensor]) -> None:
        # forget dead storages first: a new storage can take a freed one's address
        live = 0
        for key, (size, refs) in list(self.storages.items()):
            refs[:] = [r for r in refs if r() is not None]
            if refs:
                live += size
            else:
                del self.storages[key]
        for t in tensors:
            storage = t.untyped_storage()
            if storage._cdata not in self.storages:
                self.storages[storage._cdata] = (storage.nbytes(), [])
                live += storage.nbytes()
            self.storages[storage._cdata][1].append(weakref.ref(t))
        self.peak = max(self.peak, live)

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        outputs = _tensors(out)
        inputs = _tensors((args, kwargs))
        held = {t.untyped_storage()._cdata for t in inputs}
        fresh = [t for t in outputs if t.untyped_storage()._cdata not in held]
        if fresh and not func.is_view:  # an op that returns its input (a no-op) moves nothing
            key = (self.step, func._overloadpacket in _PADS)
            self.moved[key] = self.moved.get(key, 0) + sum(_nbytes(t) for t in inputs + fresh)
        if func._overloadpacket in (torch.ops.aten.conv2d, torch.ops.aten.convolution):
            flops = _conv_flops(args, outputs[0])
            self.flops[self.step] = self.flops.get(self.step, 0) + flops
        self.track(outputs)
        return out


def _cpu_module(model_path: Path, dtype: torch.dtype) -> tg.OnnxModule:
    module: tg.OnnxModule = tg.load_module(model_path).to(dtype=dtype)
    return module.set_memory_format(torch.channels_last)


def _hooked(
    module: tg.OnnxModule, before: Callable[[int], None], after: Callable[[int], None]
) -> list[Any]:
    handles = []
    for index, step in enumerate(module.steps):
        handles.append(step.register_forward_pre_hook(lambda _m, _a, i=index: before(i)))
        handles.append(step.register_forward_hook(lambda _m, _a, _o, i=index: after(i)))
    return handles


def network_cost(model_path: Path, batch: int, side: int, dtype: torch.dtype) -> dict[str, Any]:
    """One forward pass of `batch` side x side images on the CPU: GFLOP and MB moved
    per image (each op's inputs read and outputs written, as if nothing stayed in cache), by
    kind of step; the activation peak (input included, weights apart) for the batch."""
    module = _cpu_module(model_path, dtype)
    counter = _Counter()

    def enter(index: int) -> None:
        counter.step = index

    handles = _hooked(module, enter, lambda _i: None)
    try:
        with torch.inference_mode(), counter:
            x = torch.zeros((batch, side, side, 3), dtype=dtype)
            counter.track([x])
            outputs = module(x)
            counter.track(outputs)
    finally:
        for handle in handles:
            handle.remove()
    kinds: dict[str, dict[str, Any]] = {}

    def row(kind: str) -> dict[str, Any]:
        return kinds.setdefault(kind, {"steps": 0, "gflop": 0.0, "bytes_moved": 0})

    for index, step in enumerate(module.steps):
        kind = step_kind(step)
        row(kind)["steps"] += 1
        row(kind)["gflop"] += counter.flops.get(index, 0) / batch / 1e9
        row(kind)["bytes_moved"] += counter.moved.get((index, False), 0) // batch
        if (index, True) in counter.moved:
            row(PAD + kind)["steps"] += 1
            row(PAD + kind)["bytes_moved"] += counter.moved[(index, True)] // batch
    total_moved = sum(r["bytes_moved"] for r in kinds.values())
    for r in kinds.values():
        r["gflop"] = round(r["gflop"], 3)
        r["mb_moved"] = round(r["bytes_moved"] / 1e6, 1)
        r["share_of_bytes"] = round(r["bytes_moved"] / total_moved, 3)
    weights = sum(_nbytes(t) for t in list(module.parameters()) + list(module.buffers()))
    return {
        "batch": batch,
        "side": side,
        "dtype": str(dtype).removeprefix("torch."),
        "gflop_per_image": round(sum(counter.flops.values()) / batch / 1e9, 3),
        "mb_moved_per_image": round(total_moved / 1e6, 1),
        "activation_peak_mib": round(counter.peak / MIB, 1),
        "activation_peak_bytes": counter.peak,
        "weights_bytes": weights,
        "by_kind": dict(sorted(kinds.items(), key=lambda kv: -int(kv[1]["bytes_moved"]))),
    }


def step_times(module: tg.OnnxModule, batch: Tensor, runs: int) -> dict[str, Any]:
    """Device seconds per forward pass spent in each step, summed by kind, over `runs` passes
    (after one untimed pass), and the pass's time without the timing hooks."""
    device = batch.device
    cuda = device.type == "cuda"
    starts: dict[int, list[Any]] = {}
    ends: dict[int, list[Any]] = {}

    def mark(into: dict[int, list[Any]], index: int) -> None:
        if cuda:
            event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            event.record()
            into.setdefault(index, []).append(event)
        else:
            into.setdefault(index, []).append(time.perf_counter())

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    with torch.inference_mode():
        module(batch)
        sync()
        start = time.perf_counter()
        for _ in range(runs):
            module(batch)
        sync()
        plain = (time.perf_counter() - start) / runs
        handles = _hooked(module, lambda i: mark(starts, i), lambda i: mark(ends, i))
        try:
            for _ in range(runs):
                module(batch)
            sync()
        finally:
            for handle in handles:
                handle.remove()
    kinds: dict[str, float] = {}
    for index, step in enumerate(module.steps):
        pairs = zip(starts[index], ends[index], strict=True)
        if cuda:
            seconds = sum(a.elapsed_time(b) for a, b in pairs) / 1000
        else:
            seconds = sum(b - a for a, b in pairs)
        kind = step_kind(step)
        kinds[kind] = kinds.get(kind, 0.0) + seconds / runs
    in_steps = sum(kinds.values())
    return {
        "batch": int(batch.shape[0]),
        "dtype": str(batch.dtype).removeprefix("torch."),
        "forward_ms": round(plain * 1000, 3),
        "sum_of_steps_ms": round(in_steps * 1000, 3),
        "ms_by_kind": {
            k: round(v * 1000, 3) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])
        },
    }


def beside_cost(times: dict[str, Any], cost: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each kind's share of the time, and the rates at which it moved its bytes (GB/s, its pad
    included) and did its arithmetic (TFLOP/s)."""
    batch = times["batch"]
    total = times["sum_of_steps_ms"] or 1.0
    rows = {}
    for kind, ms in times["ms_by_kind"].items():
        # a step's time includes its pad: count the pad's bytes with it
        moved = sum(cost["by_kind"].get(k, {}).get("bytes_moved", 0) for k in (kind, PAD + kind))
        moved *= batch / 1e6
        flop = cost["by_kind"].get(kind, {}).get("gflop", 0.0) * batch
        seconds = ms / 1000
        rows[kind] = {
            "share_of_time": round(ms / total, 3),
            "ms": ms,
            "gb_per_s": round(moved / 1000 / seconds, 1) if seconds else 0.0,
            "tflop_per_s": round(flop / 1000 / seconds, 2) if seconds else 0.0,
        }
    return rows


def kernel_table(
    run: Callable[[], object], device: torch.device, top: int = 15
) -> list[dict[str, Any]]:
    """torch.profiler over run(): the `top` busiest kernels (CUDA) or ops (CPU), self time."""
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        run()
        if cuda:
            torch.cuda.synchronize(device)
    events = list(prof.key_averages())

    def busy(e: Any) -> float:
        return float(e.self_device_time_total if cuda else e.self_cpu_time_total)

    total = sum(busy(e) for e in events) or 1.0
    events.sort(key=busy, reverse=True)
    return [
        {
            "name": e.key[:160],
            "calls": e.count,
            "ms": round(busy(e) / 1000, 3),
            "share": round(busy(e) / total, 3),
        }
        for e in events[:top]
        if busy(e) > 0
    ]


def device_used_mib(device: torch.device) -> float:
    """Memory in use on the whole device (this process's context and cache, and any other's)."""
    free, total = torch.cuda.mem_get_info(device)
    return round((total - free) / MIB, 1)


def memory_breakdown(
    make: Callable[[bool], tr.TorchDetector],
    images: Sequence[Any],
    warm_runs: int,
) -> dict[str, Any]:
    """For cuDNN benchmark mode off, then on: allocator figures (MiB) after loading, over the
    first detect of this batch shape, and over detects once warm; the first detect's time and a
    warm one's (detect returns faces on the host, so each is synchronous); the device's memory
    in use (context included) once warm."""
    rows: dict[str, Any] = {}
    for benchmark in (False, True):
        detector = make(benchmark)
        device = detector.device
        torch.cuda.empty_cache()
        before = device_used_mib(device)
        detector.load()
        loaded = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        detector.detect(images)
        first_s = time.perf_counter() - start
        first_peak = torch.cuda.max_memory_allocated(device)
        for _ in range(warm_runs):
            detector.detect(images)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for _ in range(WARM_TIMED):
            detector.detect(images)
        warm_s = (time.perf_counter() - start) / WARM_TIMED
        rows["cudnn_benchmark_on" if benchmark else "cudnn_benchmark_off"] = {
            "device_used_before_load_mib": before,
            "allocated_after_load_mib": round(loaded / MIB, 1),
            "first_detect_s": round(first_s, 3),
            "first_detect_peak_mib": round(first_peak / MIB, 1),
            "warm_detect_peak_mib": round(torch.cuda.max_memory_allocated(device) / MIB, 1),
            "warm_detect_ms": round(warm_s * 1000, 2),
            "reserved_after_mib": round(torch.cuda.memory_reserved(device) / MIB, 1),
            "device_used_after_mib": device_used_mib(device),
        }
        detector.close()
        torch.cuda.empty_cache()
    return rows
