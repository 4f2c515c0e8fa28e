"""Checks of benchmarks/experiments/gpu.py's CPU path and of its op-by-op counting (gpu_anatomy).

.venv/bin/pytest benchmarks/experiments/test_gpu_anatomy.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import gpu
import gpu_anatomy as ga
from focal.face import models
from focal.face import torch_graph as tg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SIDE, CIN, COUT = 16, 3, 8


def one_conv(tmp_path: Path, pads: tuple[int, int, int, int] = (0, 0, 0, 0)) -> Path:
    """NHWC input -> Transpose -> 3x3 Conv (3 -> 8 channels, stride 2) -> Clip, as a file."""
    rng = np.random.default_rng(3)
    init = [
        numpy_helper.from_array(rng.normal(size=(COUT, CIN, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(size=COUT).astype(np.float32), "b"),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
    ]
    nodes = [
        helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node(
            "Conv", ["nchw", "w", "b"], ["c"], kernel_shape=[3, 3], strides=[2, 2], pads=list(pads)
        ),
        helper.make_node("Clip", ["c", "lo", "hi"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "one_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "h", "w", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        init,
    )
    path = tmp_path / "one_conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_cost_of_one_convolution_is_counted_exactly(tmp_path: Path) -> None:
    cost = ga.network_cost(one_conv(tmp_path), batch=2, side=SIDE, dtype=torch.float32)
    out_side = (SIDE - 3) // 2 + 1  # no padding
    pixels_in, pixels_out = SIDE * SIDE * CIN, out_side * out_side * COUT
    weights = COUT * CIN * 9 + COUT  # read once for the batch of 2
    conv_bytes = 4 * (pixels_in + pixels_out) + 4 * weights // 2
    clip_bytes = 4 * 2 * pixels_out
    assert cost["gflop_per_image"] == round(2 * pixels_out * CIN * 9 / 1e9, 3)
    assert cost["by_kind"]["conv 3x3 stride 2"]["bytes_moved"] == conv_bytes
    assert cost["by_kind"]["clip (ReLU6)"]["bytes_moved"] == clip_bytes
    assert cost["by_kind"]["layout"]["bytes_moved"] == 0  # the transpose is a view
    # at the clip: the input, the convolution's output and the clip's output, for 2 images
    assert cost["activation_peak_bytes"] == 2 * 4 * (pixels_in + 2 * pixels_out)
    assert cost["weights_bytes"] == 4 * weights


def test_a_same_pad_is_counted_apart_from_its_convolution(tmp_path: Path) -> None:
    cost = ga.network_cost(
        one_conv(tmp_path, (0, 0, 1, 1)), batch=1, side=SIDE, dtype=torch.float16
    )
    padded = (SIDE + 1) * (SIDE + 1) * CIN
    pad = cost["by_kind"][ga.PAD + "conv 3x3 stride 2"]
    assert pad["bytes_moved"] == 2 * (SIDE * SIDE * CIN + padded)  # fp16: read, write
    assert pad["steps"] == 1


@pytest.mark.slow
@pytest.mark.timeout(1200)  # three op-by-op counts at 1024 x 1024: 290 s on a loaded machine
def test_cost_of_the_detector_network() -> None:
    """The real model: the same arithmetic in any precision, half the bytes in fp16 (but for the
    float32 softmax), and an activation peak that grows with the batch."""
    path = models.require().model_path
    fp32 = ga.network_cost(path, 1, 1024, torch.float32)
    fp16 = ga.network_cost(path, 1, 1024, torch.float16)
    assert fp32["gflop_per_image"] == fp16["gflop_per_image"] > 10
    assert 0.49 < fp16["mb_moved_per_image"] / fp32["mb_moved_per_image"] < 0.51
    assert sum(r["steps"] for k, r in fp32["by_kind"].items() if not k.startswith(ga.PAD)) == len(
        tg.load_module(path).steps
    )
    batch4 = ga.network_cost(path, 4, 1024, torch.float16)
    assert 3.5 < batch4["activation_peak_bytes"] / fp16["activation_peak_bytes"] <= 4.0


def test_step_times_cover_every_kind_of_step(tmp_path: Path) -> None:
    path = one_conv(tmp_path)
    module = tg.load_module(path).set_memory_format(torch.channels_last)
    times = ga.step_times(module, torch.rand(2, SIDE, SIDE, 3), runs=2)
    assert set(times["ms_by_kind"]) == {"layout", "conv 3x3 stride 2", "clip (ReLU6)"}
    assert times["sum_of_steps_ms"] > 0 and times["forward_ms"] > 0
    rows = ga.beside_cost(times, ga.network_cost(path, 2, SIDE, torch.float32))
    assert sum(r["share_of_time"] for r in rows.values()) == pytest.approx(1.0, abs=0.03)
    assert rows["conv 3x3 stride 2"]["ms"] > 0 and rows["conv 3x3 stride 2"]["gb_per_s"] >= 0


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--sections", "anatomy,bogus"], "unknown sections ['bogus']"),
        (["--precisions", "fp32,fp8"], "--precisions: unknown precision 'fp8'"),
    ],
)
def test_gpu_benchmark_refuses_unknown_sections_and_precisions(
    flags: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gpu.json"
    with pytest.raises(SystemExit) as exit_info:
        gpu.arguments(["--device", "cpu", "--out", str(out), *flags])
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_gpu_benchmark_runs_on_the_cpu_and_merges(tmp_path: Path) -> None:
    """The device benchmark's CPU path, end to end: every section answers, then a second run of
    one section merges into the same file. fp32 only: fp16 convolutions on a CPU are slow enough
    (7 minutes for the equivalence images on a loaded 2-core machine) to take most of the run,
    and the torch runtime's fp16 path has tests of its own (tests/test_torch_runtime.py)."""
    out = tmp_path / "gpu.json"
    script = [sys.executable, str(HERE / "gpu.py"), "--device", "cpu", "--quick"]
    script += ["--precisions", "fp32"]
    subprocess.run([*script, "--out", str(out)], check=True, capture_output=True, timeout=600)
    report = json.loads(out.read_text())
    assert report["device"]["type"] == "cpu"
    assert report["memory"] == {"skipped": "CUDA only"}
    assert report["equivalence"]["fp32"]["all_same"] is True
    assert report["anatomy"]["cost"]["fp32"]["mb_moved_per_image"] > 0
    assert report["anatomy"]["network_images_per_s"] > 0
    assert report["anatomy"]["kernels"], "the profiler saw no ops"
    assert {r["mode"] for r in report["throughput"]} == {"eager"}
    assert report["end_to_end"]["images"] == 8
    assert not [k for k, v in report.items() if isinstance(v, dict) and "error" in v]
    subprocess.run(
        [*script, "--out", str(out), "--merge", "--sections", "anatomy"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    merged = json.loads(out.read_text())
    assert [r["sections"] for r in merged["runs"]] == [",".join(gpu.SECTIONS), "anatomy"]
    assert merged["equivalence"] == report["equivalence"]
    assert merged["anatomy"]["step_times"] != report["anatomy"]["step_times"]


def test_cpu_equivalence_results_are_kept() -> None:
    """docs/gpu.md quotes benchmarks/results/gpu-cpu.json: all 260 images, fp32 and fp16."""
    report = json.loads((ROOT / "benchmarks" / "results" / "gpu-cpu.json").read_text())
    equivalence = report["equivalence"]
    assert equivalence["images"]["wider"] == 257 and equivalence["fp32"]["all_same"] is True
    assert equivalence["fp32"]["ap"] == equivalence["onnxruntime_fp32"]["ap"]
    assert equivalence["fp16_ap_within_tolerance"] is True
