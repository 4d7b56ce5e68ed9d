"""Checks on a .pt2 archive's serialized graph (`models/<name>.json`) that stock loading trusts.

Three strings in that JSON reach code paths that can run arbitrary Python in torch 2.13:
- node targets (and operators passed as arguments) are resolved with getattr on `torch`,
  `operator` or `math`, and the graph later calls whatever they name (`torch.hub.load`...);
- symbolic shape strings (`expr_str`) go through `sympy.sympify`, which is `eval`;
- `guards_code` lines are pasted into Python source and `exec`'d by `ExportedProgram.module()`.
- pytree specs (`in_spec`/`out_spec`) import modules named in the file: enum contexts
  (`{"__enum__": ..., "fqn": "module:attr"}`) and defaultdict factories.
Each is held to a small grammar here: core ATen ops, arithmetic over shape symbols, built-in containers.
"""
from __future__ import annotations

import ast
import json
import re
from typing import Any, Iterator

from worker.engine.safety.errors import UnsafeModelError

_ATEN_TARGET = re.compile(r"torch\.ops\.(aten|prims)\.([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)")
# ATen ops that touch files or process state rather than tensors.
_DENIED_ATEN = {"from_file", "_print", "set_", "_share_memory_"}
_HIGHER_ORDER = re.compile(r"torch\.ops\.higher_order\.(cond|while_loop|map_impl|wrap_with_set_grad_enabled|"
                           r"wrap_with_autocast|auto_functionalized|auto_functionalized_v2)")
_PURE_PYTHON = re.compile(
    r"_operator\.(getitem|add|sub|mul|floordiv|truediv|mod|pow|neg|pos|abs|eq|ne|lt|le|gt|ge|and_|or_|xor|not_|invert)"
    r"|math\.(ceil|floor|trunc|sqrt)|torch\.(sym_max|sym_min|sym_not|sym_float|sym_int|sym_ite|sym_sum|_sym_sqrt)")

_SYMBOL = re.compile(r"[a-z]{1,8}[0-9]{1,9}")
_SYMPY_FUNCTIONS = {
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
    "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv",
    "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat",
    "Identity", "Max", "Min", "Abs", "floor", "ceiling", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not",
    "Piecewise", "sqrt", "Integer", "Rational", "Float", "Symbol", "Mul", "Add", "Pow", "Mod",
    "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan", "Equality", "Unequality"}
_SYMBOL_ASSUMPTIONS = {"positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite", "nonzero"}
_SYMPY_CONSTANTS = {"oo", "zoo", "nan", "int_oo", "true", "false", "True", "False"}
_ARITHMETIC = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Tuple, ast.Load,
               ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd, ast.Not,
               ast.BitAnd, ast.BitOr, ast.BitXor, ast.Invert, ast.LShift, ast.RShift, ast.And, ast.Or,
               ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_MAX_EXPRESSION = 4096
_GUARD_METHODS = {"size", "stride", "storage_offset", "dim", "numel"}
_TREESPEC_TYPES = {None, "builtins.dict", "builtins.list", "builtins.tuple", "collections.OrderedDict",
                   "collections.namedtuple", "collections.deque", "collections.defaultdict", "torch.Size",
                   "torch.fx.immutable_collections.immutable_dict", "torch.fx.immutable_collections.immutable_list"}
_SAFE_DEFAULT_FACTORIES = {"list", "dict", "int", "float", "str", "tuple", "set", "bool"}


def _walk_json(doc: Any) -> Iterator[tuple[str | None, Any]]:
    """Every (key, value) pair in a JSON document, iteratively (no recursion limit to hit)."""
    pending: list[tuple[str | None, Any]] = [(None, doc)]
    while pending:
        key, value = pending.pop()
        yield key, value
        if isinstance(value, dict):
            pending.extend(value.items())
        elif isinstance(value, list):
            pending.extend((key, item) for item in value)


def _parse(text: Any, what: str, label: str) -> ast.AST:
    if not isinstance(text, str) or len(text) > _MAX_EXPRESSION:
        raise UnsafeModelError(f"{label}: {what} is not a short string; refused")
    try:
        return ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        raise UnsafeModelError(f"{label}: {what} {text[:80]!r} is not an arithmetic expression; refused") from None


def check_symbolic_expression(text: Any, label: str) -> None:
    """`expr_str` values are sympified (evaluated): allow numbers, shape symbols (as names or as
    `Symbol('s0', positive=True, integer=True)`) and sympy's arithmetic functions, nothing else."""
    tree = _parse(text, "symbolic shape expression", label)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and (type(node.value) in (int, float, bool) or (
                isinstance(node.value, str) and _SYMBOL.fullmatch(node.value))):
            continue
        if isinstance(node, ast.Name) and (_SYMBOL.fullmatch(node.id) or node.id in _SYMPY_FUNCTIONS
                                           or node.id in _SYMPY_CONSTANTS):
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _SYMPY_FUNCTIONS:
            continue
        if isinstance(node, ast.keyword) and node.arg in _SYMBOL_ASSUMPTIONS and isinstance(node.value, ast.Constant) \
                and type(node.value.value) is bool:
            continue
        if isinstance(node, _ARITHMETIC):
            continue
        raise UnsafeModelError(
            f"{label}: symbolic shape expression {text[:80]!r} contains {type(node).__name__}, which sympy would "
            "evaluate as Python code; refused")


def check_guard(text: Any, label: str) -> None:
    """`guards_code` lines are exec'd: allow comparisons over input sizes (L['x'].size()[0] <= 1024)."""
    if isinstance(text, str) and any(ch in text for ch in "\"\\\n\r"):
        raise UnsafeModelError(f"{label}: guard {text[:80]!r} contains quotes or line breaks; refused")
    tree = _parse(text, "guard", label)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and (type(node.value) in (int, float, bool)
                                               or (isinstance(node.value, str) and node.value.isidentifier())):
            continue
        if isinstance(node, ast.Name) and node.id in ("L", "math"):
            continue
        if isinstance(node, ast.Subscript):
            continue
        if isinstance(node, ast.Attribute) and (node.attr in _GUARD_METHODS or (
                isinstance(node.value, ast.Name) and node.value.id == "math" and node.attr in ("floor", "ceil"))):
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and not node.keywords:
            continue  # the callee itself is an Attribute checked above
        if isinstance(node, _ARITHMETIC):
            continue
        raise UnsafeModelError(f"{label}: guard {text[:80]!r} contains {type(node).__name__}; only comparisons "
                               "over input sizes are accepted")


def _json_values(value: Any) -> Iterator[Any]:
    """A pytree context: JSON text or already-decoded JSON; yields every value inside it."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return  # a plain name (namedtuple contexts), looked up in torch's registry only
    for _key, item in _walk_json(value):
        yield item


def check_treespec(text: Any, label: str) -> None:
    """`in_spec`/`out_spec`: only built-in container types; no enum or defaultdict factory imports."""
    try:
        protocol, schema = json.loads(text)
    except (TypeError, ValueError):
        raise UnsafeModelError(f"{label}: pytree spec is not valid JSON; refused") from None
    if protocol != 1:
        raise UnsafeModelError(f"{label}: pytree spec protocol {protocol!r} is not supported; refused")
    for _key, node in _walk_json(schema):
        if not (isinstance(node, dict) and "children_spec" in node):
            continue
        kind, context = node.get("type"), node.get("context")
        if kind not in _TREESPEC_TYPES:
            raise UnsafeModelError(f"{label}: pytree spec uses container type {str(kind)[:80]!r}; only built-in "
                                   "containers are accepted")
        if kind == "collections.defaultdict":
            factory = context if isinstance(context, dict) else {}
            if factory.get("default_factory_module") != "builtins" or \
                    factory.get("default_factory_name") not in _SAFE_DEFAULT_FACTORIES:
                raise UnsafeModelError(f"{label}: pytree spec names defaultdict factory "
                                       f"{factory.get('default_factory_module')}.{factory.get('default_factory_name')}, "
                                       "which loading would import; refused")
        for item in _json_values(context):
            if isinstance(item, dict) and "__enum__" in item:
                raise UnsafeModelError(f"{label}: pytree spec holds an enum ({str(item.get('fqn'))[:80]!r}), which "
                                       "loading would import by name; refused")


def check_target(target: Any, label: str) -> None:
    if not isinstance(target, str):
        raise UnsafeModelError(f"{label}: graph node target {target!r} is not a string; refused")
    aten = _ATEN_TARGET.fullmatch(target)
    if aten and aten.group(2) not in _DENIED_ATEN:
        return
    if _HIGHER_ORDER.fullmatch(target) or _PURE_PYTHON.fullmatch(target):
        return
    raise UnsafeModelError(
        f"{label}: graph node calls {target!r}, which is not a core PyTorch operator; loading would resolve it to "
        "an arbitrary Python function, so the file is refused")


def check_exported_program(doc: Any, label: str) -> None:
    if not isinstance(doc, dict) or not isinstance(doc.get("graph_module"), dict):
        raise UnsafeModelError(f"{label}: not a serialized ExportedProgram (no graph_module)")
    guards = doc.get("guards_code") or []
    if not isinstance(guards, list):
        raise UnsafeModelError(f"{label}: guards_code is not a list; refused")
    for guard in guards:
        check_guard(guard, label)
    for name, bounds in (doc.get("range_constraints") or {}).items():  # keys are printed expressions ("2*s58")
        check_symbolic_expression(name, label)
        if not isinstance(bounds, dict) or any(type(bounds.get(k)) not in (int, type(None))
                                               for k in ("min_val", "max_val")):
            raise UnsafeModelError(f"{label}: range constraint on {name[:80]!r} has non-integer bounds; refused")
    checked: set[str] = set()  # the same few expressions repeat on every tensor
    for key, value in _walk_json(doc["graph_module"]):
        if key == "expr_str":
            if not (isinstance(value, str) and value in checked):
                check_symbolic_expression(value, label)
                checked.add(value)
        elif key in ("in_spec", "out_spec") and value is not None:
            check_treespec(value, label)
        elif key == "as_operator":  # an operator passed as an argument (e.g. to a higher-order op)
            check_target(value, label)
        elif isinstance(value, dict) and "target" in value and "inputs" in value and "outputs" in value:
            check_target(value["target"], label)
