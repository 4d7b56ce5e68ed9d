"""Where the whole-model time goes: per graph node of a compiled package vs ONNX Runtime's own profile.

    taskset -c 1 .venv/bin/python -m benchmarks.kernel_profile --model resnet18 --density 4/9x0.5 --threads 1

Compiles the model (as benchmarks/kernels.py does), then runs the loaded package's FX graph node by node,
timing each node (fastest of --runs runs, so a busy machine matters less), and groups the nodes:
compiled convs, dense convs, other torch ops, and the unaccounted rest (Python/graph overhead = whole-model
time minus the sum of node times). ONNX Runtime's per-op profile of the dense model is summed by op type.
"""
from __future__ import annotations

import argparse
import collections
import json
import operator
import tempfile
import time
from pathlib import Path

import torch
from torch import fx

import kernels
from benchmarks.kernels import DENSITIES
from benchmarks.model_zoo import build
from kernels.bench import onnxruntime_session, ort_baseline_options


class _TimedInterpreter(fx.Interpreter):
    def __init__(self, gm, times):
        super().__init__(gm)
        self.times = times

    def run_node(self, n):
        t0 = time.perf_counter()
        out = super().run_node(n)
        self.times[n.name].append((time.perf_counter() - t0) * 1e3)
        return out


def _kind(node: fx.Node, gm) -> str:
    if node.op == "call_module" and node.target.startswith("zd_compiled_conv_pool"):
        return "compiled conv + max-pool (one library call)"
    if node.op == "call_module" and node.target.startswith("zd_compiled"):
        return "compiled conv (sparse kernel)"
    if node.op == "call_module" and node.target.startswith("zd_segment"):
        return "compiled convs (a run of them in one library call)"
    if node.op == "call_module" and node.target.startswith("zd_max_pool"):
        return "compiled max-pool (library)"
    if node.op == "call_module" and node.target.startswith("zd_head"):
        return "compiled classifier head (library)"
    target = str(node.target)
    if "convolution" in target or "conv2d" in target:
        return "dense conv: " + ("1x1" if "downsample" in str(node.meta.get("nn_module_stack", "")) else "other")
    if node.op in ("placeholder", "output", "get_attr") or node.target is operator.getitem:
        return "graph plumbing"
    return "torch op: " + target.replace("aten.", "").split(".")[0]


def profile_package(package: Path, x: torch.Tensor, runs: int) -> tuple[dict, float]:
    model = kernels.load(package)
    gm = model.graph
    times: dict[str, list[float]] = collections.defaultdict(list)
    interp = _TimedInterpreter(gm, times)
    whole = []
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        for _ in range(runs):
            t0 = time.perf_counter()
            model(x)
            whole.append((time.perf_counter() - t0) * 1e3)
            interp.run(x)
    nodes = {n.name: n for n in gm.graph.nodes}
    groups: dict[str, float] = collections.defaultdict(float)
    per_node = []
    for name, values in times.items():
        kind = _kind(nodes[name], gm)
        groups[kind] += min(values)
        per_node.append((name, kind, min(values)))
    return {"groups": dict(groups), "nodes": per_node}, min(whole)


def profile_ort(model, x: torch.Tensor, runs: int, work: Path) -> tuple[dict, float]:
    import onnxruntime as ort
    onnxruntime_session(model, x, work)  # writes dense.onnx
    options = ort_baseline_options()
    options.enable_profiling = True
    options.profile_file_prefix = str(work / "ort_profile")
    session = ort.InferenceSession(str(work / "dense.onnx"), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    whole = []
    for _ in range(runs + 3):
        t0 = time.perf_counter()
        session.run(None, {name: x.numpy()})
        whole.append((time.perf_counter() - t0) * 1e3)
    events = json.loads(Path(session.end_profiling()).read_text())
    per_node: dict[str, list[float]] = collections.defaultdict(list)
    op_of: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            node = e["name"][: -len("_kernel_time")]
            per_node[node].append(e["dur"] / 1e3)
            op_of[node] = e["args"].get("op_name", "?")
    groups: dict[str, float] = collections.defaultdict(float)
    for node, values in per_node.items():
        groups[op_of[node]] += min(values)
    return {"groups": dict(groups), "nodes": [(n, op_of[n], min(v)) for n, v in per_node.items()]}, min(whole[3:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--density", default="4/9x0.5")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--package", help="profile this existing package instead of compiling one")
    parser.add_argument("--nodes", action="store_true", help="also print every node")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, shape = build(args.model, DENSITIES[args.density], seed=0)
    example = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(prefix="zd_profile_") as work:
        work = Path(work)
        package = Path(args.package) if args.package else work / "package"
        if not args.package:
            kernels.compile_model(model, example, package, tune=True)
        x = torch.randn((args.batch, *shape[1:]), generator=torch.Generator().manual_seed(1))
        ours, ours_ms = profile_package(package, x, args.runs)
        theirs, ort_ms = profile_ort(model.eval(), x, args.runs, work)
    print(f"{args.model} {args.density} batch {args.batch}, {args.threads} thread(s), fastest of {args.runs} runs\n")
    print(f"compiled package whole model: {ours_ms:.2f} ms; per-node sum {sum(ours['groups'].values()):.2f} ms")
    for kind, ms in sorted(ours["groups"].items(), key=lambda kv: -kv[1]):
        print(f"| {kind} | {ms:.3f} |")
    print(f"\nONNX Runtime dense whole model: {ort_ms:.2f} ms; per-node sum {sum(theirs['groups'].values()):.2f} ms")
    for kind, ms in sorted(theirs["groups"].items(), key=lambda kv: -kv[1]):
        print(f"| {kind} | {ms:.3f} |")
    if args.nodes:
        for name, kind, ms in ours["nodes"]:
            print(f"ours | {name} | {kind} | {ms:.3f}")
        for name, kind, ms in theirs["nodes"]:
            print(f"ort | {name} | {kind} | {ms:.3f}")


if __name__ == "__main__":
    main()
