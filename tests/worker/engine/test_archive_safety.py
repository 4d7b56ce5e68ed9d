"""The engine-facing safety checks: each hostile construction is refused with a message naming it,
clean exports pass, and nothing from a checked file is ever executed or unpickled."""
from __future__ import annotations

import sys
import zipfile
import zlib
from pathlib import Path

import pytest

from tests.hostile_models import (SHARED_MODELS, evil_pickle, global_call_pickle, onnx_edit, onnx_with_external_data,
                                  pt2_with_pickled_weight, pt2_with_program_edit, read_member, rewrite_zip,
                                  set_encrypted_flag, symlink_info, torch_save_zip, zip_with, zip_with_info)
from tests.tiny_models import export_onnx, export_pt2, export_torchscript, tiny_resnet
from worker.engine import archive_safety
from worker.engine.archive_safety import (ArchiveLimits, CorruptArchiveError, ModelTooLargeError, UnknownFormatError,
                                          UnsafeModelError, check_onnx_file, check_pt2_archive,
                                          check_torchscript_archive, check_zip_archive, detect_format, inspect_model)
from worker.engine.errors import CorruptModelError

GiB = 1 << 30


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tiny")
    model = tiny_resnet()
    return {"pt2": export_pt2(model, folder / "tiny.pt2"), "onnx": export_onnx(model, folder / "tiny.onnx"),
            "torchscript": export_torchscript(model, folder / "tiny.ts")}


def test_module_imports_no_torch():
    import subprocess
    code = "import sys, worker.engine.archive_safety; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[3])
    assert out.stdout.strip() == "False"


# ---- clean files ----

@pytest.mark.parametrize("fmt", ["pt2", "onnx", "torchscript"])
def test_tiny_models_pass_and_are_summarised(tiny, fmt):
    facts = inspect_model(tiny[fmt], max_bytes=GiB)
    assert facts.format == fmt
    assert facts.input_shape == [1, 3, 16, 16]
    assert facts.conv3x3_layers == ["conv1", "layer1.conv1", "layer1.conv2", "layer2.conv1", "layer2.conv2"]
    trainable = sum(p.numel() for p in tiny_resnet().parameters())
    if fmt == "onnx":  # the exporter folds BatchNorm into the convolutions
        assert 0.9 * trainable < facts.params < trainable
    else:
        assert facts.params == trainable


@pytest.mark.parametrize("name", ["resnet20_cifar10", "resnet56_cifar10"])
@pytest.mark.parametrize("ext", ["pt2", "onnx"])
def test_shared_models_pass(name, ext):
    facts = inspect_model(SHARED_MODELS / f"{name}.{ext}", max_bytes=GiB)
    convs = 19 if name.startswith("resnet20") else 55
    params = 0.27e6 if name.startswith("resnet20") else 0.85e6
    assert (facts.format, facts.input_shape, len(facts.conv3x3_layers)) == (ext, [1, 3, 32, 32], convs)
    assert facts.conv3x3_layers[:2] == ["conv1", "layer1.0.conv1"]
    assert abs(facts.params - params) / params < 0.01


def test_specific_checks_accept_their_format(tiny):
    check_pt2_archive(tiny["pt2"])
    check_zip_archive(tiny["torchscript"])
    # The generic zip check refuses nested archives; the .pt2 check admits the torch.save
    # payloads it inspects itself (sample inputs).
    with pytest.raises(UnsafeModelError, match="sample_inputs/model.pt' is a nested zip"):
        check_zip_archive(tiny["pt2"])
    check_torchscript_archive(tiny["torchscript"])
    check_onnx_file(tiny["onnx"], max_bytes=GiB)


def test_format_comes_from_content_not_name(tiny, tmp_path):
    for fmt, path in tiny.items():
        renamed = tmp_path / f"model-{fmt}.pt2"
        renamed.write_bytes(path.read_bytes())
        assert detect_format(renamed) == fmt


# ---- zip container ----

def test_too_many_entries(tmp_path):
    path = zip_with(tmp_path / "many.zip", {f"m/extra/{i}": b"x" for i in range(20)})
    with pytest.raises(UnsafeModelError, match="20 entries, more than the limit of 10"):
        check_zip_archive(path, ArchiveLimits(max_members=10))


def test_zip_bomb_declared_ratio(tmp_path):
    path = zip_with(tmp_path / "bomb.zip", {"m/extra/zeros": bytes(64 << 20)}, compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 200_000
    with pytest.raises(ModelTooLargeError, match="zip bomb"):
        check_zip_archive(path)


def test_zip_bomb_lying_header_is_caught_while_streaming(tmp_path):
    """Headers claim 1 MiB; the deflate stream expands to 64 MiB. Streaming stops it."""
    data = bytes(64 << 20)
    compressed = zlib.compress(data, 9)[2:-4]  # raw deflate
    path = zip_with(tmp_path / "liar.zip", {"m/extra/zeros": data}, compression=zipfile.ZIP_DEFLATED)
    raw = bytearray(path.read_bytes())
    # Patch the declared uncompressed size in the local header and the central directory.
    declared = (64 << 20).to_bytes(4, "little")
    assert raw.count(declared) == 2
    raw[:] = raw.replace(declared, (300_000).to_bytes(4, "little"))
    path.write_bytes(bytes(raw))
    assert len(compressed) < 300_000
    with pytest.raises(UnsafeModelError, match="zeros"):
        check_zip_archive(path)


def test_total_uncompressed_budget(tmp_path):
    path = zip_with(tmp_path / "big.zip", {"m/extra/a": bytes(600_000), "m/extra/b": bytes(600_000)})
    with pytest.raises(ModelTooLargeError, match="expands to 1200000 bytes"):
        check_zip_archive(path, ArchiveLimits(max_total_uncompressed=1_000_000))


@pytest.mark.parametrize("name, reason", [("/etc/cron.d/evil", "absolute path"), ("m/../../evil", "'..'"),
                                          ("m/..", "'..'"), ("C:/evil", "absolute path"), ("m\\..\\evil", "backslash")])
def test_member_names_that_escape(tmp_path, name, reason):
    path = zip_with(tmp_path / "names.zip", {"m/archive_format": b"pt2", name: b"x"})
    with pytest.raises(UnsafeModelError, match=reason):
        check_zip_archive(path)


def test_symlink_member(tmp_path):
    path = zip_with_info(tmp_path / "link.zip", symlink_info("m/extra/passwd"), b"/etc/passwd")
    with pytest.raises(UnsafeModelError, match="symbolic link"):
        check_zip_archive(path)


def test_encrypted_member(tmp_path):
    path = set_encrypted_flag(zip_with(tmp_path / "enc.zip", {"m/extra/secret": b"ciphertext"}))
    with pytest.raises(UnsafeModelError, match="encrypted"):
        check_zip_archive(path)


def test_duplicate_names(tmp_path):
    path = tmp_path / "dup.zip"
    with pytest.warns(UserWarning), zipfile.ZipFile(path, "w") as archive:
        archive.writestr("m/extra/a", b"1")
        archive.writestr("m/extra/a", b"2")
    with pytest.raises(UnsafeModelError, match="appears twice"):
        check_zip_archive(path)


def test_nested_archive(tmp_path):
    inner = zip_with(tmp_path / "inner.zip", {"x/y": b"z"}).read_bytes()
    path = zip_with(tmp_path / "outer.zip", {"m/extra/inner.bin": inner})
    with pytest.raises(UnsafeModelError, match="nested zip archive"):
        check_zip_archive(path)


def test_truncated_and_corrupt_archives(tiny, tmp_path):
    data = tiny["pt2"].read_bytes()
    truncated = tmp_path / "truncated.pt2"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptArchiveError, match="truncated or corrupt"):
        check_pt2_archive(truncated)
    corrupt = tmp_path / "corrupt.pt2"
    flipped = bytearray(data)
    offset = data.index(b"PK\x03\x04", 2000) - 100  # inside some member's data
    flipped[offset] ^= 0xFF
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(CorruptModelError):
        check_pt2_archive(corrupt)


# ---- .pt2 pickles ----

def test_pickled_weight_is_refused_and_never_runs(tiny, tmp_path):
    marker = tmp_path / "pwned"
    path = pt2_with_pickled_weight(tiny["pt2"], tmp_path / "evil.pt2", torch_save_zip(evil_pickle(marker)))
    with pytest.raises(UnsafeModelError, match=r"data/weights/weight_0.*references io\.open"):
        check_pt2_archive(path)
    assert not marker.exists()


def test_pickled_sample_inputs_are_refused_and_never_run(tiny, tmp_path):
    marker = tmp_path / "pwned"
    path = rewrite_zip(tiny["pt2"], tmp_path / "evil.pt2",
                       replace={"data/sample_inputs/model.pt": torch_save_zip(evil_pickle(marker))})
    with pytest.raises(UnsafeModelError, match="sample_inputs/model.pt.*io.open"):
        inspect_model(path, max_bytes=GiB)
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("os", "system"), ("builtins", "eval"), ("subprocess", "Popen"),
                                          ("posix", "system"), ("torch", "load")])
@pytest.mark.parametrize("protocol", [2, 4])
def test_dangerous_globals_named_in_message(tiny, tmp_path, module, name, protocol):
    payload = torch_save_zip(global_call_pickle(module, name, "touch /tmp/never", protocol))
    path = pt2_with_pickled_weight(tiny["pt2"], tmp_path / "evil.pt2", payload)
    with pytest.raises(UnsafeModelError, match=rf"references {module}\.{name}"):
        check_pt2_archive(path)


def test_clean_tensor_pickle_is_allowed(tiny, tmp_path):
    """A real torch.save of a plain tensor uses only allow-listed rebuild functions."""
    import io

    import torch
    buffer = io.BytesIO()
    torch.save(torch.zeros(8, 3, 3, 3), buffer)
    path = pt2_with_pickled_weight(tiny["pt2"], tmp_path / "pickled.pt2", buffer.getvalue())
    check_pt2_archive(path)


def test_raw_pickle_payload_refused(tiny, tmp_path):
    path = pt2_with_pickled_weight(tiny["pt2"], tmp_path / "raw.pt2", global_call_pickle("os", "system", "id"))
    with pytest.raises(UnsafeModelError, match="raw pickle"):
        check_pt2_archive(path)


@pytest.mark.parametrize("member, what", [("data/aotinductor/model/model.so", "AOTInductor"),
                                          ("data/constants/custom_obj_0", "unexpected member"),
                                          ("data/weights/stray", "unexpected member")])
def test_unexpected_pt2_members(tiny, tmp_path, member, what):
    path = rewrite_zip(tiny["pt2"], tmp_path / "extra.pt2", add={member: b"\x7fELF"})
    with pytest.raises(UnsafeModelError, match=what):
        check_pt2_archive(path)


def test_opaque_constant_refused(tiny, tmp_path):
    config = b'{"config": {"c": {"path_name": "opaque_obj_0", "is_param": false, "use_pickle": true}}}'
    path = rewrite_zip(tiny["pt2"], tmp_path / "opaque.pt2",
                       replace={"data/constants/model_constants_config.json": config},
                       add={"data/constants/opaque_obj_0": global_call_pickle("os", "system", "id")})
    with pytest.raises(UnsafeModelError, match="pickled Python/TorchScript object"):
        check_pt2_archive(path)


# ---- .pt2 graph JSON (code paths that eval/exec/getattr in stock torch) ----

def _set_batch_expr(text):
    def edit(program):
        program["graph_module"]["graph"]["tensor_values"]["x"]["sizes"][0]["as_expr"]["expr_str"] = text
    return edit


@pytest.mark.parametrize("expr", ["__import__('os').system('id')", "s77.__class__", "exit()",
                                  "Symbol('s77', positive=True).__init__", "open('x')"])
def test_sympy_expression_injection_refused(tiny, tmp_path, expr):
    path = pt2_with_program_edit(tiny["pt2"], tmp_path / "expr.pt2", _set_batch_expr(expr))
    with pytest.raises(UnsafeModelError, match="symbolic shape expression"):
        check_pt2_archive(path)


@pytest.mark.parametrize("expr", ["s77", "2*s77 + 1", "FloorDiv(s77, 2)", "Max(1, s77)"])
def test_plain_shape_expressions_pass(tiny, tmp_path, expr):
    check_pt2_archive(pt2_with_program_edit(tiny["pt2"], tmp_path / "ok.pt2", _set_batch_expr(expr)))


@pytest.mark.parametrize("target", ["torch.hub.load", "torch.ops.load_library", "builtins.eval",
                                    "torch.ops.aten.from_file.default", "torch.ops.evil.op.default", "#ns:op"])
def test_graph_targets_outside_core_ops_refused(tiny, tmp_path, target):
    def edit(program):
        program["graph_module"]["graph"]["nodes"][0]["target"] = target
    path = pt2_with_program_edit(tiny["pt2"], tmp_path / "target.pt2", edit)
    with pytest.raises(UnsafeModelError, match="not a core PyTorch operator"):
        check_pt2_archive(path)


def test_operator_arguments_are_held_to_the_same_targets(tiny, tmp_path):
    def edit(program):
        node = program["graph_module"]["graph"]["nodes"][0]
        node["inputs"].append({"name": "op", "arg": {"as_operator": "torch.hub.load"}, "kind": 1})
    path = pt2_with_program_edit(tiny["pt2"], tmp_path / "operator-arg.pt2", edit)
    with pytest.raises(UnsafeModelError, match="torch.hub.load"):
        check_pt2_archive(path)


@pytest.mark.parametrize("context, what", [
    ('{"__enum__": true, "fqn": "os:environ", "name": "HOME"}', "enum"),
    ({"default_factory_module": "os", "default_factory_name": "system", "dict_context": []}, "defaultdict factory"),
])
def test_pytree_specs_that_import_by_name_refused(tiny, tmp_path, context, what):
    import json
    kind = "collections.defaultdict" if isinstance(context, dict) else "builtins.dict"

    def edit(program):
        signature = program["graph_module"]["module_call_graph"][0]["signature"]
        spec = json.loads(signature["in_spec"])
        spec[1]["children_spec"][1].update({"type": kind, "context": context if isinstance(context, dict)
                                            else json.dumps([json.loads(context)])})
        signature["in_spec"] = json.dumps(spec)
    path = pt2_with_program_edit(tiny["pt2"], tmp_path / "spec.pt2", edit)
    with pytest.raises(UnsafeModelError, match=what):
        check_pt2_archive(path)


@pytest.mark.parametrize("guard, ok", [("L['x'].size()[0] <= 1024", True),
                                       ("2 <= L['x'].size()[0]", True),
                                       ("__import__('os').system('id') == 0", False),
                                       ("L['x'].__class__ is None", False),
                                       ("1, \"\"); import os; (\"", False)])
def test_guards_code(tiny, tmp_path, guard, ok):
    def edit(program):
        program["guards_code"] = [guard]
    path = pt2_with_program_edit(tiny["pt2"], tmp_path / "guard.pt2", edit)
    if ok:
        check_pt2_archive(path)
    else:
        with pytest.raises(UnsafeModelError, match="guard"):
            check_pt2_archive(path)


# ---- TorchScript ----

def test_torchscript_pickle_with_python_global_refused(tiny, tmp_path):
    path = rewrite_zip(tiny["torchscript"], tmp_path / "evil.ts",
                       replace={"constants.pkl": global_call_pickle("os", "system", "id")})
    with pytest.raises(UnsafeModelError, match=r"constants\.pkl.*os\.system"):
        check_torchscript_archive(path)


@pytest.mark.parametrize("line, what", [("    _9 = torch.from_file(\"/etc/passwd\")\n", "from_file"),
                                        ("    _9 = ops.myplugin.run(x)\n", "myplugin")])
def test_torchscript_code_scan(tiny, tmp_path, line, what):
    with zipfile.ZipFile(tiny["torchscript"]) as archive:  # tracing twice in one process mangles names
        name = next(n.split("/", 1)[1] for n in archive.namelist() if "/linear" in n and n.endswith(".py"))
    source = read_member(tiny["torchscript"], name).decode()
    assert "    return torch.linear" in source
    source = source.replace("    return torch.linear", line + "    return torch.linear")
    path = rewrite_zip(tiny["torchscript"], tmp_path / "code.ts", replace={name: source.encode()})
    with pytest.raises(UnsafeModelError, match=what):
        check_torchscript_archive(path)


# ---- ONNX ----

@pytest.mark.parametrize("location, why", [("../../etc/passwd", "outside the upload"),
                                           ("/etc/passwd", "absolute path"),
                                           ("weights.bin", "separate file")])
def test_onnx_external_data_refused(tiny, tmp_path, location, why):
    path = onnx_with_external_data(tiny["onnx"], tmp_path / "ext.onnx", location)
    with pytest.raises(UnsafeModelError, match=why):
        check_onnx_file(path, max_bytes=GiB)


def test_onnx_size_cap(tiny):
    with pytest.raises(ModelTooLargeError, match="limit of 1000"):
        check_onnx_file(tiny["onnx"], max_bytes=1000)


def test_onnx_custom_domain_refused(tiny, tmp_path):
    def edit(model):
        model.graph.node[0].domain = "com.evil.plugins"
        model.opset_import.add(domain="com.evil.plugins", version=1)
    path = onnx_edit(tiny["onnx"], tmp_path / "custom.onnx", edit)
    with pytest.raises(UnsafeModelError, match="com.evil.plugins"):
        check_onnx_file(path, max_bytes=GiB)


def test_onnx_absurd_dims_refused(tiny, tmp_path):
    def edit(model):
        tensor = model.graph.initializer[0]
        tensor.ClearField("raw_data")
        del tensor.dims[:]
        tensor.dims.extend([1 << 20, 1 << 20])
    path = onnx_edit(tiny["onnx"], tmp_path / "dims.onnx", edit)
    with pytest.raises(UnsafeModelError, match="absurd dims"):
        check_onnx_file(path, max_bytes=GiB)


def test_onnx_truncated(tiny, tmp_path):
    path = tmp_path / "cut.onnx"
    path.write_bytes(tiny["onnx"].read_bytes()[:5000])
    assert detect_format(path) == "onnx"
    with pytest.raises(CorruptArchiveError, match="truncated"):
        check_onnx_file(path, max_bytes=GiB)


# ---- unknown formats ----

@pytest.mark.parametrize("content, hint", [(b"\x89PNG\r\n\x1a\n" + bytes(100), "PNG"),
                                           (b"just some text\n", "text"),
                                           (b"\x80\x02}q\x00.", "raw pickle")])
def test_unknown_formats(tmp_path, content, hint):
    path = tmp_path / "model.pt2"
    path.write_bytes(content)
    with pytest.raises(UnknownFormatError, match=hint):
        detect_format(path)


def test_random_zip_and_state_dict_are_unknown(tmp_path):
    with pytest.raises(UnknownFormatError, match="neither"):
        detect_format(zip_with(tmp_path / "r.zip", {"hello.txt": b"hi"}))
    with pytest.raises(UnknownFormatError, match="torch.save checkpoint"):
        detect_format(zip_with(tmp_path / "sd.pt", {"archive/data.pkl": b"\x80\x02}."}))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.onnx"
    path.touch()
    with pytest.raises(CorruptArchiveError, match="empty"):
        inspect_model(path, max_bytes=GiB)


def test_every_refusal_is_an_unsafe_model_error():
    for cls in (CorruptArchiveError, ModelTooLargeError, UnknownFormatError):
        assert issubclass(cls, archive_safety.UnsafeModelError)


# ---- robustness: damaged input never crashes the checks ----

def _mutate_json(doc, rng):
    slots = []
    pending = [doc]
    while pending:
        node = pending.pop()
        keys = node.keys() if isinstance(node, dict) else range(len(node)) if isinstance(node, list) else []
        for key in keys:
            slots.append((node, key))
            pending.append(node[key])
    parent, key = rng.choice(slots)
    if isinstance(parent, dict) and rng.random() < 0.4:
        del parent[key]
    else:
        parent[key] = rng.choice([None, 1, -5, "x", [], {}, [1], {"a": 1}, 2**70, 1.5])


def test_fuzzed_files_are_refused_cleanly(tiny, tmp_path):
    """Random byte flips and JSON edits: the checks either pass or raise UnsafeModelError, never crash."""
    import json
    import random
    rng = random.Random(1234)
    for fmt, path in tiny.items():
        data = path.read_bytes()
        for i in range(40):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            target = tmp_path / f"{fmt}-{i}"
            target.write_bytes(bytes(mutated))
            try:
                inspect_model(target, max_bytes=GiB)
            except UnsafeModelError:
                pass
    for member in ("models/model.json", "data/weights/model_weights_config.json"):
        original = read_member(tiny["pt2"], member)
        for i in range(60):
            doc = json.loads(original)
            _mutate_json(doc, rng)
            target = rewrite_zip(tiny["pt2"], tmp_path / f"json-{i}.pt2", replace={member: json.dumps(doc).encode()})
            try:
                inspect_model(target, max_bytes=GiB)
            except UnsafeModelError:
                pass


def test_onnx_model_local_functions_are_not_plugins(tmp_path):
    """A domain defined by a function inside the model expands to standard ops: accepted."""
    import onnx
    from onnx import TensorProto, helper
    relu = helper.make_function("local.fns", "MyRelu", ["x"], ["y"], [helper.make_node("Relu", ["x"], ["y"])],
                                [helper.make_opsetid("", 20)])
    graph = helper.make_graph([helper.make_node("MyRelu", ["x"], ["y"], domain="local.fns")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, functions=[relu], opset_imports=[helper.make_opsetid("", 20),
                                                                      helper.make_opsetid("local.fns", 1)])
    path = tmp_path / "fn.onnx"
    path.write_bytes(model.SerializeToString())
    check_onnx_file(path, max_bytes=GiB)
    model.graph.node[0].op_type = "NotDefinedHere"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(UnsafeModelError, match="local.fns::NotDefinedHere"):
        check_onnx_file(path, max_bytes=GiB)


def test_depthwise_convs_are_not_prunable_and_scripted_modules_are_counted(tmp_path):
    import torch

    class DepthwiseNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.depthwise = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)

        def forward(self, x):
            return self.depthwise(self.stem(x))

    model = DepthwiseNet().eval()
    params = sum(p.numel() for p in model.parameters())
    torch.jit.trace(model, torch.randn(1, 3, 8, 8)).save(str(tmp_path / "traced.ts"))
    torch.jit.script(model).save(str(tmp_path / "scripted.ts"))
    traced = inspect_model(tmp_path / "traced.ts", max_bytes=GiB)
    scripted = inspect_model(tmp_path / "scripted.ts", max_bytes=GiB)
    assert (traced.params, traced.conv3x3_layers, traced.input_shape) == (params, ["stem"], [1, 3, 8, 8])
    assert (scripted.params, scripted.conv3x3_layers, scripted.input_shape) == (params, ["stem"], None)
    assert "input_shape" in scripted.warnings[0]


def test_overlapping_entries_refused(tmp_path):
    """The non-recursive zip bomb: many central-directory names pointing at one compressed stream."""
    path = zip_with(tmp_path / "overlap.zip", {"m/extra/a": bytes(1000), "m/extra/b": bytes(1000)})
    raw = bytearray(path.read_bytes())
    second_central = raw.index(b"PK\x01\x02", raw.index(b"PK\x01\x02") + 4)
    raw[second_central + 42:second_central + 46] = (0).to_bytes(4, "little")  # local header offset -> first
    path.write_bytes(bytes(raw))
    with pytest.raises(UnsafeModelError, match="overlap"):
        check_zip_archive(path)


def test_onnx_constant_node_with_external_data_refused(tiny, tmp_path):
    import onnx

    def edit(model):
        value = onnx.helper.make_tensor("c", onnx.TensorProto.FLOAT, [4], [0.0] * 4)
        value.ClearField("float_data")
        value.data_location = onnx.TensorProto.EXTERNAL
        entry = value.external_data.add()
        entry.key, entry.value = "location", "/proc/self/environ"
        model.graph.node.insert(0, onnx.helper.make_node("Constant", [], ["c_out"], value=value))
    path = onnx_edit(tiny["onnx"], tmp_path / "const.onnx", edit)
    with pytest.raises(UnsafeModelError, match="/proc/self/environ"):
        check_onnx_file(path, max_bytes=GiB)


@pytest.mark.parametrize("layout", ["prepended", "two zips", "comment"])
def test_smuggled_bytes_outside_the_entries_refused(tmp_path, layout):
    """Data a second zip reader (torch's miniz) might see but Python's zipfile does not."""
    first = zip_with(tmp_path / "a.zip", {"m/extra/a": b"visible"}).read_bytes()
    second = zip_with(tmp_path / "b.zip", {"m/extra/b": b"hidden"}).read_bytes()
    path = tmp_path / "smuggled.zip"
    if layout == "prepended":
        path.write_bytes(b"#!/bin/sh\necho hi\n" + first)
    elif layout == "two zips":
        path.write_bytes(second + first)
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("m/extra/a", b"x")
            archive.comment = b"hand-made archive"
    with pytest.raises(UnsafeModelError, match="unaccounted bytes|comment"):
        check_zip_archive(path)
