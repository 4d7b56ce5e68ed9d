"""The README.md written into every package: what is inside, how to rebuild and call it elsewhere."""
from __future__ import annotations

import shlex

from kernels.isa import ISA_FLAGS
from kernels.spec import ConvSpec

BASE_FLAGS = ["-O3", "-std=c++17", "-fPIC", "-shared", "-fopenmp"]


def rebuild_command(manifest: dict) -> str:
    flags = manifest.get("flags") or [*BASE_FLAGS, *ISA_FLAGS.get(manifest.get("isa"), [])]
    return " ".join(["g++", *map(shlex.quote, flags), "kernels.cpp", "-o", "kernels.so"])


def package_readme(manifest: dict) -> str:
    sparse = [layer for layer in manifest["layers"] if layer["kernel"] == "sparse"]
    dense = [layer for layer in manifest["layers"] if layer["kernel"] != "sparse"]
    rows = "\n".join(f"| `{layer['name']}` | {layer['kernel']} | `{layer.get('symbol', '')}` | "
                     f"{layer.get('reason') or ''} |" for layer in manifest["layers"])
    example = sparse[0] if sparse else None
    c_call = ""
    if example:
        spec = example["spec"]
        k = spec["out_channels"]
        shape = ConvSpec(**spec)  # the manifest's spec is the layer's ConvSpec as a dict
        out_h, out_w = shape.out_height, shape.out_width
        c_call = f"""
## Calling a layer from C

Each compiled layer is one plain C function (`extern "C"`, no torch headers), with its weights,
folded BatchNorm, shapes and pattern offsets baked in. For example the first one:

```c
void zd_{example['symbol']}(const float* x, const float* residual, float* y, int batch, int threads);
```

`x` is NCHW float32 `[batch, {spec['in_channels']}, {spec['height']}, {spec['width']}]`, `y` receives
`[batch, {k}, {out_h}, {out_w}]`; `residual` has `y`'s shape (pass NULL when the layer has no residual add).
The epilogue (bias, residual add, ReLU) listed in `manifest.json` runs inside the call.
A 1x1 conv is compiled as the 3x3 conv (padding + 1) whose only tap is the centre: same shapes as the 1x1.
Its pixels tile (`tile.pixels` on such a layer) runs it as a matrix product, output channels in the vector lanes.
5x5 and 7x7 convs (a ResNet stem) are compiled dense (`spec.kernel_size` in the manifest).
A layer of at most 4 input channels, not a 1x1, with a pixels tile (`tile.pixels`) also exports
`void zd_<symbol>_pool(const float* x, float* y, int batch, int threads, int k, int s, int p, int relu,
int out_len, int out_lead)`: the conv, then a k x k / s max-pool with padding p, writing only the pooled map
(NCHW when `out_len` is 0), which `kernels.load` uses when a max-pool is the conv's only reader.
The library also exports `void zd_max_pool2d(const float* x, float* y, int planes, int H, int W, int k,
int s, int p, int relu, int threads)` (floor mode; `planes` = batch x channels), which `kernels.load` uses
for the graph's max-pools, and `void zd_classifier_head(const float* x, const float* w, const float* b, float* y,
int batch, int channels, int hw, int out, int threads)`: `y[n, o] = b[o] + sum_c w[o, c] * mean(x[n, c, :])` for
`x` `[batch, channels, hw]` and `w` `[out, channels]` row-major (`b` may be NULL; `hw` = 1 is a plain linear layer),
which `kernels.load` uses for the graph's classifier head (global average pool, flatten, linear).
With `threads` > 1 a call runs on the process's GNU OpenMP threads when libgomp is loaded (as in any torch
process: no second set of threads fighting torch's), otherwise on the library's own small pool;
`ZD_KERNEL_THREADS=own` in the environment forces the own pool (steadier on a machine busy with other work).
"""
    return f"""# zerodata sparse kernel package

Built for ISA `{manifest['isa']}` with torch {manifest['torch_version']}, {manifest['threads']} threads,
input shape {manifest['input_shape']} (batch dimension {'dynamic' if manifest['dynamic_batch'] else 'fixed'}).
{len(sparse)} conv layers run generated sparse kernels, {len(dense)} stay dense torch (reasons below).

| file | what |
|---|---|
| `manifest.json` | layers, specs, chosen tiles, kernel/dense decision and why, formats, ISA, compiler, flags, hashes |
| `weights.safetensors` | compact weights of the sparse layers (reordered filters, channel + pattern ids, packed non-zeros) |
| `kernels.cpp` | the generated C++ source (plain C ABI) |
| `kernels.so` | that source compiled for `{manifest['isa']}` |
| `model.pt2` | the graph (torch.export); compiled layers appear as `zerodata::compiled_conv` calls |

## Running it from Python

```python
import kernels, torch
model = kernels.load("path/to/this/dir")   # an nn.Module: same inputs and outputs as the original
y = model(torch.randn({', '.join(map(str, manifest['input_shape']))}))
```

`kernels.load` rebuilds `kernels.so` from `kernels.cpp` when the library is missing or was built for
another ISA (regenerating the source from `weights.safetensors` for the new ISA if needed).

## Rebuilding the library by hand

```sh
{rebuild_command(manifest)}
```
{c_call}
## Layers

| layer | kernel | symbol | reason |
|---|---|---|---|
{rows}
"""
