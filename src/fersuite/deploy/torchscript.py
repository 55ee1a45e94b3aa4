"""TorchScript export (``torch.jit.trace``) and loading.

TorchScript is deprecated in recent torch releases (still loadable with ``torch.jit.load`` and
from C++); ONNX is the primary format.

A ``.pt`` may come from someone else, and a TorchScript program can reach outside the model:
``torch.save`` (``aten::save``) writes a file, ``torch.from_file`` (``aten::from_file``) reads
or maps one, other namespaces talk to the network or the profiler; ``torch.jit.load`` itself
runs a class's ``__setstate__`` and the ``__setstate__`` of custom C++ classes
(``torch.classes``) named by the archive's pickles. :class:`TorchScriptModel` therefore reads the
archive first, as data, through torch's own zip reader, and refuses it
(:class:`~fersuite.errors.UntrustedFileError`, one line naming the file, the entry and the
reason) unless

* its entries are the ones ``torch.jit.save`` writes, bounded in number and size;
* every code file (``code/**.py``, TorchScript's Python syntax) parses with :mod:`ast`, spells
  its strings as TorchScript does, and nowhere names ``__setstate__``/``__getstate__``,
  ``torch.classes``, a file operation (``save``, ``from_file``, ``open`` ...) or an ``ops``
  namespace other than ``aten``/``prim`` -- checked on the syntax tree and on the raw text, so
  no formatting (line continuations, comments, tabs) hides one;
* every pickle (``data.pkl``, ``constants.pkl`` ...; read by torch's own unpickler, which
  calls only the globals it knows and the archive's classes) references, by its opcodes and
  without being unpickled, only tensor/list rebuilders and classes defined in the code files.

Only then is it loaded, and the loaded program is checked again (:func:`check_program`): no
method or hook of any submodule (functions inlined) may call an operator outside the ``aten``
and ``prim`` namespaces or one of :data:`DENIED_OPS`, or use a ``torch.classes`` object.

A traced model (what ``fersuite-export`` writes) passes: it uses only ``aten``/``prim``
operators and has no ``__setstate__``.
"""

from __future__ import annotations

import ast
import io
import itertools
import os
import pickletools
import re
import tokenize
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fersuite.deploy.base import first_line, log, quiet
from fersuite.errors import ExportError, UntrustedFileError
from fersuite.types import AffectOutput

__all__ = [
    "DENIED_OPS",
    "MAX_CODE_BYTES",
    "MAX_ENTRIES",
    "MAX_PICKLE_BYTES",
    "TorchScriptModel",
    "check_archive",
    "check_program",
    "export_torchscript",
]

#: Operators of the allowed namespaces that touch files or the network.
DENIED_OPS = frozenset(
    {"aten::save", "aten::from_file", "prim::rpc_async", "prim::rpc_sync", "prim::rpc_remote"}
)
_NAMESPACES = ("aten", "prim")

#: Bounds on an archive, checked before its records are read.
MAX_ENTRIES = 50_000
MAX_CODE_BYTES = 16 * 2**20  # the code files together
MAX_PICKLE_BYTES = 64 * 2**20  # the pickles (data, constants, debug info) together
_MAX_NAME = 400

#: Identifiers a model's code has no use for, and why: the state hooks ``torch.jit.load`` runs,
#: the file operators (also callable as methods: ``x.save(path)``), Python's code runners.
_STATE = "a state hook, code that torch.jit.load would run while loading (a traced model has none)"
_DENIED_NAMES = {
    "__setstate__": _STATE,
    "__getstate__": _STATE,
    "save": "aten::save, which writes a file",
    "from_file": "aten::from_file, which reads or maps a file",
    **dict.fromkeys(("rpc_async", "rpc_sync", "rpc_remote"), "a remote procedure call"),
    **dict.fromkeys(
        ("open", "eval", "exec", "compile", "__import__", "__builtins__", "globals", "locals"),
        "Python's, not TorchScript's",
    ),
}
_FLOATS = ("inf", "nan")
_STATE_HOOKS = ("__setstate__", "__getstate__")
#: What TorchScript's printer writes: printable ASCII, tabs and newlines.
_NOT_CODE = re.compile(r"[^\t\n\x20-\x7e]")
#: A string literal as TorchScript's printer writes one: in double quotes, on one line, no
#: prefix, only its escapes (so that Python and TorchScript read the same string).
_STRING = re.compile(r'"(?:[^"\\\n]|\\[\\\'"abfnrtv]|\\[0-7]{3})*"')
_TOKENS = frozenset(
    {
        tokenize.NAME,
        tokenize.OP,
        tokenize.NUMBER,
        tokenize.STRING,
        tokenize.NEWLINE,
        tokenize.NL,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.COMMENT,
        tokenize.ENDMARKER,
    }
)
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_CODE = re.compile(rf"code/(?:{_IDENT}/)*{_IDENT}\.py")
_PICKLE = re.compile(rf"(?:data|constants|traced_inputs)\.pkl|{_CODE.pattern}\.debug_pkl")
_OTHER = re.compile(
    r"(?:data|constants|traced_inputs)/[0-9]+|version|byteorder|\.data/version"
    r"|\.data/serialization_id|\.format_version|\.storage_alignment|extra/[A-Za-z0-9_.\-]+"
)
_PREFIX = re.compile(r"[^/\\\x00-\x1f\x7f]+")
#: Pickle opcodes torch's TorchScript unpickler reads (protocol 2).
_OPCODES = frozenset(
    {
        "PROTO", "STOP", "MARK", "EMPTY_LIST", "EMPTY_TUPLE", "EMPTY_DICT", "BINPUT",
        "LONG_BINPUT", "BINGET", "LONG_BINGET", "NEWTRUE", "NEWFALSE", "NONE", "BININT1",
        "BININT2", "BININT", "LONG1", "BINUNICODE", "BINFLOAT", "TUPLE", "TUPLE1", "TUPLE2",
        "TUPLE3", "APPENDS", "LIST", "DICT", "SETITEM", "SETITEMS", "GLOBAL", "NEWOBJ",
        "BUILD", "REDUCE", "BINPERSID",
    }
)  # fmt: skip
_STORAGES = ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")
_PICKLE_LISTS = ("int", "tensor", "double", "bool")
#: Globals of the unpickler that only rebuild data ("module name", as pickle writes them).
_GLOBALS = frozenset(
    {
        "torch._utils _rebuild_tensor_v2",
        "collections OrderedDict",
        "torch device",
        "builtins complex",
        "torch.jit._pickle build_tensor_from_id",
        "torch.jit._pickle restore_type_tag",
        *(f"torch.jit._pickle build_{t}list" for t in _PICKLE_LISTS),
        *(f"torch {t}Storage" for t in _STORAGES),
    }
)


def export_torchscript(wrapper: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    """``torch.jit.trace`` + save; returns ``{"exporter": "torchscript-trace"}``."""
    log.warning("TorchScript is deprecated by PyTorch; prefer export.format=onnx")
    try:
        with quiet(), torch.no_grad():
            traced = torch.jit.trace(wrapper, (example,), check_trace=False)
            torch.jit.save(traced, str(path))
    except Exception as exc:
        raise ExportError(f"TorchScript tracing failed: {first_line(exc)}") from exc
    return {"exporter": "torchscript-trace", "opset": None, "fallback_reason": None}


class _RefusedError(Exception):
    """An archive part that fails a check: ``(entry, reason)``."""


def _records(data: bytes) -> tuple[str, dict[str, bytes], dict[str, bytes]]:
    """The top folder, code files and pickles (by name below the folder) of the archive
    ``data``, read as torch's loader will read them; every entry checked against what
    ``torch.jit.save`` writes, their number and sizes bounded before anything is read."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise _RefusedError("", f"not a TorchScript (zip) archive: {first_line(exc)}") from exc
    if not infos:
        raise _RefusedError("", "an empty archive")
    if len(infos) > MAX_ENTRIES:
        raise _RefusedError("", f"{len(infos)} entries; at most {MAX_ENTRIES} expected")
    prefix = infos[0].filename.split("/", 1)[0]
    if not _PREFIX.fullmatch(prefix):
        raise _RefusedError(infos[0].filename, "not a file below one top folder")
    seen: set[str] = set()
    sizes: dict[str, tuple[str, int]] = {}
    code_bytes = pickle_bytes = 0
    for info in infos:
        full = info.filename
        top, _, name = full.partition("/")
        if top != prefix or len(full) > _MAX_NAME:
            raise _RefusedError(full, f"not an entry of the archive's folder {prefix!r}")
        if full.casefold() in seen:  # torch's zip reader finds names regardless of case
            raise _RefusedError(full, "a second entry of that name (letter case aside)")
        seen.add(full.casefold())
        if _CODE.fullmatch(name):
            code_bytes += info.file_size
            sizes[name] = ("code", info.file_size)
        elif _PICKLE.fullmatch(name):
            pickle_bytes += info.file_size
            sizes[name] = ("pickle", info.file_size)
        elif not _OTHER.fullmatch(name):
            raise _RefusedError(full, "not an entry torch.jit.save writes")
        if code_bytes > MAX_CODE_BYTES:
            raise _RefusedError(full, f"code files over {MAX_CODE_BYTES} bytes together")
        if pickle_bytes > MAX_PICKLE_BYTES:
            raise _RefusedError(full, f"pickles over {MAX_PICKLE_BYTES} bytes together")
    try:  # the bytes torch.jit.load will read: torch's own zip reader
        reader = torch._C.PyTorchFileReader(io.BytesIO(data))
        listed = sorted(reader.get_all_records())
    except Exception as exc:
        raise _RefusedError("", f"not a TorchScript archive: {first_line(exc)}") from exc
    if listed != sorted(i.filename.partition("/")[2] for i in infos):
        raise _RefusedError("", "torch's zip reader lists other entries than the zip directory")
    code: dict[str, bytes] = {}
    pickles: dict[str, bytes] = {}
    for name, (kind, size) in sizes.items():
        try:
            if reader.get_record_size(name) != size:
                raise _RefusedError(f"{prefix}/{name}", "sizes differ between zip readers")
            record = bytes(reader.get_record(name))
        except _RefusedError:
            raise
        except Exception as exc:
            raise _RefusedError(f"{prefix}/{name}", f"unreadable: {first_line(exc)}") from exc
        if len(record) != size:
            raise _RefusedError(f"{prefix}/{name}", f"{len(record)} bytes, {size} declared")
        (code if kind == "code" else pickles)[name] = record
    if "data.pkl" not in pickles:
        raise _RefusedError(f"{prefix}/data.pkl", "missing")
    return prefix, code, pickles


def _chains(tree: ast.AST) -> Iterator[tuple[ast.Name, list[str]]]:
    """Each name with the dotted attribute path read from it: ``a.b.c`` -> ``["a", "b", "c"]``."""
    parent: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parent[child] = node
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            path, at = [node.id], parent.get(node)
            cur: ast.AST = node
            while isinstance(at, ast.Attribute) and at.value is cur:
                path.append(at.attr)
                cur, at = at, parent.get(at)
            yield node, path


def _identifiers(node: ast.AST) -> Iterator[str]:
    if isinstance(node, ast.Name):
        yield node.id
    elif isinstance(node, ast.Attribute):
        yield node.attr
    elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        yield node.name
    elif isinstance(node, ast.arg | ast.keyword) and node.arg is not None:
        yield node.arg
    elif isinstance(node, ast.alias):
        yield from (n for n in (node.name, node.asname) if n)
    elif isinstance(node, ast.Global | ast.Nonlocal):
        yield from node.names
    elif isinstance(node, ast.ImportFrom) and node.module:
        yield node.module


def _literal(node: ast.expr) -> bool:
    """Whether ``node`` is a constant as TorchScript's printer writes one (a number, string,
    ``None``/``True``/``False``, ``inf``/``nan``, or a list or tuple of them)."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        node = node.operand
    if isinstance(node, ast.List | ast.Tuple):
        return all(_literal(e) for e in node.elts)
    return isinstance(node, ast.Constant) or (isinstance(node, ast.Name) and node.id in _FLOATS)


def _evaluated(tree: ast.Module) -> Iterator[ast.expr]:
    """The expressions that importing the code evaluates, not only declares: argument defaults
    (TorchScript runs them when it compiles a function, i.e. while loading) and the values of
    class-level assignments (constants); ``__annotations__["0"] = Type`` only names a type."""
    for node in ast.walk(tree):
        if isinstance(node, ast.arguments):
            yield from node.defaults
            yield from (d for d in node.kw_defaults if d is not None)
        elif isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if isinstance(stmt, ast.Assign) and all(
                    isinstance(t, ast.Subscript) for t in stmt.targets
                ):
                    continue  # __annotations__["0"] = Type
                if isinstance(stmt, ast.Assign | ast.AnnAssign) and stmt.value is not None:
                    yield stmt.value


def _names_custom_class(text: str) -> bool:
    """Whether ``text`` (a string constant: a type may be written as one) names a
    ``torch.classes`` class, spaces and line continuations aside."""
    return "torch.classes" in re.sub(r"[\s\\]+", "", text)


def _check_code(source: bytes) -> list[str]:
    """The names of the classes a code file defines; :class:`ValueError` (the reason) for code
    that names a state hook, a file operation, a custom C++ class or a foreign namespace."""
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    for hook in _STATE_HOOKS:  # whatever the layout: the raw text
        if hook in text:
            raise ValueError(f"names {hook}, {_STATE}")
    if bad := _NOT_CODE.search(text):
        line = text.count("\n", 0, bad.start()) + 1
        raise ValueError(f"line {line}: {bad.group()!r}, not printable ASCII as TorchScript writes")
    try:  # strings as TorchScript spells them: its lexer and Python's then agree on what is code
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type not in _TOKENS:
                raise ValueError(f"line {tok.start[0]}: unexpected token {tok.string!r}")
            if tok.type == tokenize.STRING and not _STRING.fullmatch(tok.string):
                raise ValueError(f"line {tok.start[0]}: a string literal TorchScript never writes")
        tree = ast.parse(text)
    except (SyntaxError, tokenize.TokenError, RecursionError, MemoryError) as exc:
        raise ValueError(f"does not parse as TorchScript code: {first_line(exc)}") from exc
    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        for ident in _identifiers(node):
            if ident in _DENIED_NAMES:
                raise ValueError(f"line {line}: names {ident!r} ({_DENIED_NAMES[ident]})")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _names_custom_class(node.value):
                raise ValueError(f"line {line}: a string naming a custom C++ class (torch.classes)")
            if any(hook in node.value for hook in _STATE_HOOKS):
                raise ValueError(f"line {line}: a string naming a state hook")
            if node.value.strip() in _DENIED_NAMES:  # getattr(x, "save")
                name = node.value.strip()
                raise ValueError(f"line {line}: the string {name!r} ({_DENIED_NAMES[name]})")
    for node, path in _chains(tree):
        where = f"line {node.lineno}: {'.'.join(path)}"
        if any(a == "torch" and b == "classes" for a, b in itertools.pairwise(path)):
            raise ValueError(f"{where} is a custom C++ class (torch.classes), not a model's")
        if path[0] == "ops" and (len(path) < 2 or path[1] not in _NAMESPACES):
            raise ValueError(f"{where}: a model calls only ops.{'/ops.'.join(_NAMESPACES)}")
        if path[:2] == ["torch", "ops"]:
            raise ValueError(f"{where}: a model calls only ops.{'/ops.'.join(_NAMESPACES)}")
        if path[0] == "__torch__" and len(path) < 2:
            raise ValueError(f"{where}: __torch__ used other than as a dotted name")
    for value in _evaluated(tree):
        if not _literal(value):
            raise ValueError(
                f"line {value.lineno}: {ast.unparse(value)[:80]!r} would be computed while "
                "loading; TorchScript writes a constant there"
            )
    return [n.name for n in tree.body if isinstance(n, ast.ClassDef)]


def _check_pickle(data: bytes, classes: frozenset[str], type_tags: bool) -> None:
    """:class:`ValueError` (the reason) unless the pickle, read by its opcodes and never
    unpickled, references only data-rebuilding globals and the archive's own classes (and,
    with ``type_tags``, names no ``torch.classes`` type in its strings; a ``.debug_pkl`` holds
    the model's Python source, and is unpickled without classes)."""
    try:
        ops = list(pickletools.genops(data))
    except Exception as exc:
        raise ValueError(f"not a readable pickle: {first_line(exc)}") from exc
    if not ops or ops[0][0].name != "PROTO" or ops[0][1] != 2:
        raise ValueError("not a protocol-2 pickle, which torch.jit.save writes")
    for op, arg, pos in ops:
        if op.name not in _OPCODES:
            raise ValueError(f"opcode {op.name} at byte {pos}, which torch.jit.save never writes")
        if op.name == "GLOBAL" and str(arg) not in _GLOBALS and str(arg) not in classes:
            raise ValueError(
                f"references {str(arg).replace(' ', '.')!r} at byte {pos}: neither a tensor/list "
                "rebuilder nor a class of the archive's code"
            )
        if op.name == "BINUNICODE" and type_tags and _names_custom_class(str(arg)):
            raise ValueError(f"names a custom C++ class (torch.classes) at byte {pos}")


def check_archive(path: str | os.PathLike[str], data: bytes | None = None) -> None:
    """Raise :class:`~fersuite.errors.UntrustedFileError` unless the TorchScript archive
    ``data`` (default: read from ``path``, which names it in the message) passes the checks of
    the module doc that precede loading; nothing in it runs."""
    path = Path(path)
    try:
        prefix, code, pickles = _records(path.read_bytes() if data is None else data)
    except _RefusedError as exc:
        entry, reason = exc.args
        where = f" entry {entry!r}:" if entry else ""
        raise UntrustedFileError(f"{path}: refused:{where} {reason}") from None
    except OSError as exc:
        raise UntrustedFileError(f"{path}: cannot read: {first_line(exc)}") from exc
    classes: set[str] = set()
    try:
        for name, source in code.items():
            entry = f"{prefix}/{name}"
            module = name[len("code/") : -len(".py")].replace("/", ".")
            if module != "__torch__" and not module.startswith("__torch__."):
                raise ValueError("code outside __torch__, where torch.jit.save writes it")
            if module.startswith("__torch__.torch.classes"):
                raise ValueError("code in torch.classes, the namespace of custom C++ classes")
            classes.update(f"{module} {c}" for c in _check_code(source))
        for name, record in pickles.items():
            entry = f"{prefix}/{name}"
            _check_pickle(record, frozenset(classes), type_tags=not name.endswith("debug_pkl"))
    except ValueError as exc:
        raise UntrustedFileError(f"{path}: refused: entry {entry!r}: {exc}") from None


def _nodes(block: Any) -> Iterator[Any]:
    for node in block.nodes():
        yield node
        for inner in node.blocks():
            yield from _nodes(inner)


def _graphs(module: torch.jit.ScriptModule) -> Iterator[tuple[str, Any]]:
    """(qualified name, inlined graph) of every method and hook of every submodule."""
    for prefix, sub in module.named_modules():
        c = sub._c
        methods = [(name, c._get_method(name)) for name in c._method_names()]
        hooks = [*c._get_forward_pre_hooks(), *c._get_forward_hooks()]
        for name, fn in [*methods, *((h.name, h) for h in hooks)]:
            graph = fn.graph.copy()
            torch._C._jit_pass_inline(graph)
            yield f"{prefix or type(module).__name__}.{name}", graph


def _custom_class(node: Any) -> str | None:
    """The ``torch.classes`` class a node produces or uses, if any."""
    for value in [*node.inputs(), *node.outputs()]:
        t = value.type()
        if t.kind() == "ClassType" and t.qualified_name().startswith("__torch__.torch.classes."):
            return str(t.qualified_name())
    return None


def check_program(module: torch.jit.ScriptModule, source: str) -> None:
    """Raise :class:`~fersuite.errors.UntrustedFileError` when ``module`` calls an operator a
    model has no use for, or uses a custom C++ class (``torch.classes``)."""
    for where, graph in _graphs(module):
        for node in _nodes(graph):
            kind = node.kind()
            if kind in DENIED_OPS or kind.split("::", 1)[0] not in _NAMESPACES:
                raise UntrustedFileError(
                    f"{source}: refused: {where} calls {kind}, which a model does not need "
                    f"(a TorchScript model may use only {'/'.join(_NAMESPACES)} operators, "
                    f"not {', '.join(sorted(DENIED_OPS))})"
                )
            if custom := _custom_class(node):
                raise UntrustedFileError(
                    f"{source}: refused: {where} uses the custom C++ class {custom}, "
                    "which a model does not need"
                )


class TorchScriptModel:
    """A saved TorchScript module called like a fersuite model: ``model(x) -> AffectOutput``.
    The file is read once; those bytes are checked (module doc) and only then loaded: nothing
    in it runs unless it passes. A refused or unreadable file raises
    :class:`~fersuite.errors.UntrustedFileError`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UntrustedFileError(f"{path}: cannot read: {first_line(exc)}") from exc
        check_archive(path, data)
        try:
            with quiet():
                module = torch.jit.load(io.BytesIO(data), map_location="cpu")
        except Exception as exc:
            raise UntrustedFileError(f"{path}: cannot load TorchScript: {first_line(exc)}") from exc
        check_program(module, str(path))
        self.module = module.eval()

    def __call__(self, x: torch.Tensor) -> AffectOutput:
        e, v, a = self.module(x)
        return AffectOutput(e, v, a)
