"""Read a pickle without unpickling it.

`evaluate_pickle` runs the opcode stream on a symbolic stack: globals become `Global` records
(checked against an allow-list), calls become `Call` records, nothing is imported or called.
The result is inert data the summaries can walk (tensor shapes, module attributes), and a pickle
that names anything outside the allow-list is refused, naming the member and the global.
"""
from __future__ import annotations

import pickletools
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from worker.engine.safety.errors import CorruptArchiveError, UnsafeModelError

_MAX_OPS = 20_000_000

# What torch's weights_only unpickler needs for plain tensors (and what torch.save writes for them).
_STORAGE_TYPES = {f"{kind}Storage" for kind in (
    "Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
    "ComplexFloat", "ComplexDouble", "UntypedStorage")}
TENSOR_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
     ("collections", "OrderedDict"), ("torch", "Size"), ("torch", "device")}
    | {("torch", name) for name in _STORAGE_TYPES})

# torch.jit.load's own C++ unpickler resolves these and nothing else from Python's world; `__torch__.*`
# names are TorchScript classes compiled from the archive's code/ folder, never Python classes.
_TORCHSCRIPT_PICKLE_HELPERS = frozenset(
    {("torch.jit._pickle", name) for name in (
        "restore_type_tag", "build_intlist", "build_tensorlist", "build_doublelist", "build_boollist",
        "build_tensor_from_id")})
_TORCHSCRIPT_CLASS = re.compile(r"__torch__(\.[A-Za-z_][A-Za-z0-9_]*)*")


def tensor_global_allowed(module: str, name: str) -> bool:
    return (module, name) in TENSOR_GLOBALS


def torchscript_global_allowed(module: str, name: str) -> bool:
    if (module, name) in TENSOR_GLOBALS or (module, name) in _TORCHSCRIPT_PICKLE_HELPERS:
        return True
    return bool(_TORCHSCRIPT_CLASS.fullmatch(module)) and name.isidentifier()


@dataclass(frozen=True)
class Global:
    module: str
    name: str


@dataclass(eq=False)
class Call:
    """`func(*args)` as the real unpickler would run it (REDUCE / NEWOBJ), plus BUILD state."""
    func: Any
    args: tuple
    state: Any = None
    items: dict = field(default_factory=dict)  # SETITEMS on an OrderedDict


@dataclass(eq=False)
class PersistentId:
    pid: Any


@dataclass(eq=False)
class Mark:
    pass


# Opcodes that would reach outside the pickle: copyreg extension registry, old-style class
# instantiation by name, text persistent ids, out-of-band buffers.
_REFUSED = {"EXT1", "EXT2", "EXT4", "INST", "OBJ", "PERSID", "NEXT_BUFFER", "READONLY_BUFFER"}
_PUSH_ARG = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "STRING", "BINSTRING",
             "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "UNICODE",
             "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "FLOAT", "BINFLOAT"}
_PUSH_CONST = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}


def evaluate_pickle(data: bytes, *, label: str, allowed: Callable[[str, str], bool]) -> Any:
    """Symbolically evaluate `data`; raise UnsafeModelError naming `label` and the first refused global."""
    stack: list = []
    memo: dict[int, Any] = {}

    def pop_mark() -> list:
        for index in range(len(stack) - 1, -1, -1):
            if isinstance(stack[index], Mark):
                items = stack[index + 1:]
                del stack[index:]
                return items
        raise CorruptArchiveError(f"{label}: malformed pickle (MARK missing)")

    def make_global(module: Any, name: Any) -> Global:
        if not isinstance(module, str) or not isinstance(name, str):
            raise UnsafeModelError(f"{label}: pickle builds a global from non-string values; refused")
        if not allowed(module, name):
            raise UnsafeModelError(
                f"{label}: pickle references {module}.{name}, which is not an allowed tensor rebuild "
                "function; loading it could run arbitrary code, so the file is refused")
        return Global(module, name)

    try:
        for count, (opcode, arg, _pos) in enumerate(pickletools.genops(data)):
            if count > _MAX_OPS:
                raise UnsafeModelError(f"{label}: pickle has more than {_MAX_OPS} opcodes; refused")
            name = opcode.name
            if name in _REFUSED:
                raise UnsafeModelError(f"{label}: pickle uses opcode {name}, which can import or call code; refused")
            if name in _PUSH_ARG:
                stack.append(arg)
            elif name in _PUSH_CONST:
                stack.append(_PUSH_CONST[name])
            elif name in ("PROTO", "FRAME"):
                pass
            elif name == "STOP":
                if len(stack) != 1:
                    raise CorruptArchiveError(f"{label}: malformed pickle (stack not balanced at STOP)")
                return stack.pop()
            elif name == "MARK":
                stack.append(Mark())
            elif name == "POP":
                stack.pop()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(stack[-1])
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET"):
                stack.append({"EMPTY_LIST": list, "EMPTY_DICT": dict, "EMPTY_SET": list}[name]())
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                size = int(name[-1])
                items = tuple(stack[-size:])
                del stack[-size:]
                stack.append(items)
            elif name == "TUPLE":
                stack.append(tuple(pop_mark()))
            elif name == "LIST":
                stack.append(pop_mark())
            elif name == "FROZENSET":
                stack.append(tuple(pop_mark()))
            elif name == "DICT":
                items = pop_mark()
                stack.append(_to_dict(items, label))
            elif name == "APPEND":
                value = stack.pop()
                _append(stack[-1], [value], label)
            elif name in ("APPENDS", "ADDITEMS"):
                items = pop_mark()
                _append(stack[-1], items, label)
            elif name == "SETITEM":
                value, key = stack.pop(), stack.pop()
                _setitems(stack[-1], [key, value], label)
            elif name == "SETITEMS":
                items = pop_mark()
                _setitems(stack[-1], items, label)
            elif name == "GLOBAL":
                module, _, attr = arg.partition(" ")
                stack.append(make_global(module, attr))
            elif name == "STACK_GLOBAL":
                attr, module = stack.pop(), stack.pop()
                stack.append(make_global(module, attr))
            elif name in ("REDUCE", "NEWOBJ"):
                args, func = stack.pop(), stack.pop()
                stack.append(_call(func, args, label))
            elif name == "NEWOBJ_EX":
                _kwargs, args, func = stack.pop(), stack.pop(), stack.pop()
                stack.append(_call(func, args, label))
            elif name == "BUILD":
                state = stack.pop()
                target = stack[-1]
                if not isinstance(target, Call):
                    raise UnsafeModelError(f"{label}: pickle sets state on a non-object; refused")
                target.state = state
            elif name == "BINPERSID":
                stack.append(PersistentId(stack.pop()))
            else:
                raise UnsafeModelError(f"{label}: pickle opcode {name} is not supported; refused")
    except UnsafeModelError:
        raise
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise CorruptArchiveError(f"{label}: malformed pickle: {exc}") from None
    raise CorruptArchiveError(f"{label}: pickle ends without STOP (truncated)")


def _call(func: Any, args: Any, label: str) -> Call:
    # Only allow-listed globals are callable; anything else on the stack (a string, a tuple) is not.
    if not isinstance(func, Global):
        raise UnsafeModelError(f"{label}: pickle calls something that is not an allowed global; refused")
    if not isinstance(args, tuple):
        raise CorruptArchiveError(f"{label}: malformed pickle (call arguments are not a tuple)")
    return Call(func, args)


def _append(target: Any, items: list, label: str) -> None:
    if not isinstance(target, list):
        raise UnsafeModelError(f"{label}: pickle appends to a non-list; refused")
    target.extend(items)


def _setitems(target: Any, items: list, label: str) -> None:
    if isinstance(target, Call) and target.func == Global("collections", "OrderedDict"):
        target = target.items
    if not isinstance(target, dict):
        raise UnsafeModelError(f"{label}: pickle sets items on a non-dict; refused")
    target.update(_to_dict(items, label))


def _to_dict(items: list, label: str) -> dict:
    if len(items) % 2:
        raise CorruptArchiveError(f"{label}: malformed pickle (odd number of dict items)")
    try:
        return dict(zip(items[0::2], items[1::2]))
    except TypeError:
        raise UnsafeModelError(f"{label}: pickle uses an unhashable dict key; refused") from None
