"""Structure of the package sources (lightning_llm/ and hydra_plugins/), checked on their syntax trees:
no import cycle among lightning_llm modules, and no private API of a third-party library outside
lightning_llm/compat.py (an upgrade of Lightning, Hydra, OmegaConf, torch or transformers is reviewed there)."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "lightning_llm"
OURS = (PACKAGE, "hydra_plugins")
SOURCE_ROOTS = (REPO / "lightning_llm", REPO / "hydra_plugins")
COMPAT = REPO / "lightning_llm" / "compat"
# Underscore names that are public by contract: Hydra/OmegaConf config keys read as attributes
# (`node._target_`), namedtuple's documented methods, and the interpreter's documented `os._exit`.
PUBLIC_UNDERSCORE_NAMES = {"_target_", "_recursive_", "_convert_", "_partial_", "_args_",
                           "_replace", "_asdict", "_fields", "_make", "_field_defaults", "_exit"}


def _sources() -> list[Path]:
    return sorted(p for root in SOURCE_ROOTS for p in root.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__")) \
        and name not in PUBLIC_UNDERSCORE_NAMES


# ------------------------------------------------------------------------------------------------ import cycles
def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, except those under `if TYPE_CHECKING:` (never run, so they cannot form a cycle)."""
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))
    return nodes


def _imported_modules(path: Path, known: set[str]) -> set[str]:
    """Our modules `path` imports anywhere (module level and functions; `if TYPE_CHECKING:` blocks aside)."""
    here = _module_name(path)
    package = here if _is_package(path) else here.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from a import b`: b is the submodule a.b when that is a module, else a name defined in a.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in OURS:
                # Importing a.b.c runs a/__init__ and a/b/__init__ first, unless they are this module's own
                # packages (those are already being imported when this module runs).
                parts = name.split(".")
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1)
                             if not here.startswith(".".join(parts[:i]) + ".") or i == len(parts))
    found.discard(here)
    return {name for name in found if name in known}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycle_among_package_modules() -> None:
    files = {_module_name(p): p for p in _sources()}
    graph = {name: _imported_modules(path, set(files)) for name, path in files.items()}
    assert sum(map(len, graph.values())) > 20  # the walk does see the imports
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _imports_ours(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] in OURS for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        return bool(node.level) or (node.module or "").split(".")[0] in OURS
    return False


# Package layers, lowest first: a module may import its own layer and lower ones only. Tasks subclass the engine's
# two contract classes (`HFTaskModule`, `CachedTextDataModule`), so they sit above it; the engine and the commands
# reach tasks through `lightning_llm.registry` (base), never by importing them.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("lightning_llm", "lightning_llm.errors", "lightning_llm.compat", "lightning_llm.utils",
              "lightning_llm.registry", "lightning_llm.config", "lightning_llm.config.schema",
              "lightning_llm.config.targets", "lightning_llm.config.secrets")),
    ("engine", ("lightning_llm.data", "lightning_llm.modules", "lightning_llm.callbacks", "lightning_llm.tracking",
                "lightning_llm.runtime", "lightning_llm.interpret", "lightning_llm.quantization",
                "lightning_llm.config.precheck", "lightning_llm.config.validation", "lightning_llm.config.store",
                "hydra_plugins")),
    ("tasks", ("lightning_llm.tasks",)),
    ("commands", ("lightning_llm.train", "lightning_llm.evaluate", "lightning_llm.predict", "lightning_llm.generate",
                  "lightning_llm.explain", "lightning_llm.compress", "lightning_llm.report", "lightning_llm.chat",
                  "lightning_llm.push")),
)


def layer_of(module: str) -> int:
    """The layer of a module: that of the longest prefix listed in LAYERS."""
    best, found = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), index
    assert found is not None, f"{module} is in no layer: add it to LAYERS"
    return found


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})"
                  for m, deps in graph.items() for d in deps if layer_of(d) > layer_of(m))


def test_packages_are_layered() -> None:
    """base < engine < tasks < commands, function-level imports included (those that keep `llm-report` and the
    sweeper plugin free of torch are fine, but they may not climb the layers either)."""
    files = {_module_name(p): p for p in _sources()}
    graph = {name: _imported_modules(path, set(files)) for name, path in files.items()}
    assert layer_violations(graph) == []


def test_the_layer_check_sees_a_climbing_import() -> None:
    assert layer_violations({"lightning_llm.runtime.builders": {"lightning_llm.tasks.classification"},
                             "lightning_llm.train": {"lightning_llm.runtime.builders"}}) == [
        "lightning_llm.runtime.builders (engine) imports lightning_llm.tasks.classification (tasks)"]


def _code_words(path: Path) -> set[str]:
    """Identifiers and string constants of a module, without docstrings and comments: what the code says."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    words: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words.update(re.findall(r"\w+", node.value))
        elif isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.arg)):
            words.add(getattr(node, "name", None) or getattr(node, "arg", ""))
    return words


def test_no_task_is_named_outside_the_tasks() -> None:
    """The engine, the commands, runtime/ and config/ ask the registry; only lightning_llm/tasks/ (and conf/, tests)
    say which tasks exist."""
    from lightning_llm import registry

    # The package's own tasks: a test may register one of its own (tests/test_external_task.py's "regression",
    # also a value of transformers' problem_type) in the same process.
    names = {name for name, cls in registry.tasks().items() if cls.__module__.startswith("lightning_llm.tasks")}
    assert {"classification", "causal_lm"} <= names
    named = {f"{path.relative_to(REPO)}: {sorted(_code_words(path) & names)}" for path in _sources()
             if (REPO / "lightning_llm" / "tasks") not in path.parents and _code_words(path) & names}
    assert named == set()


def test_cycle_finder_reports_a_cycle() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


# ------------------------------------------------------------------------------------------------- private APIs
def _local_names(tree: ast.Module) -> dict[str, str]:
    """name -> dotted origin of what a module imports (`from x import Y` -> Y: x.Y; `import x as y` -> y: x)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else \
                    alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _third_party(dotted: str) -> bool:
    return dotted.split(".")[0] not in OURS


def _resolve(dotted: str) -> object | None:
    """The object a dotted name names (module attribute path), or None."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
        return obj
    return None


def _self_assigned(cls: ast.ClassDef) -> set[str]:
    """Names a class defines itself: methods, class attributes and `self.x = ...` in its methods."""
    names = {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    for node in ast.walk(cls):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Name) and node in cls.body:
                    names.add(sub.id)
                elif isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == "self":
                    names.add(sub.attr)
    return names


def _class_source(klass: type) -> ast.ClassDef | None:
    try:
        node = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0]
    except (OSError, TypeError, SyntaxError, IndexError):
        return None
    return node if isinstance(node, ast.ClassDef) else None


def _private_names_of(klass: type) -> set[str]:
    """The private names a third-party class defines: its attributes and methods, and the `self._x` its source
    sets or reads (instance attributes, which the class object does not show)."""
    names = {name for name in vars(klass) if _private(name)}
    source = _class_source(klass)
    if source is not None:
        names.update(node.attr for node in ast.walk(source) if isinstance(node, ast.Attribute)
                     and isinstance(node.value, ast.Name) and node.value.id == "self" and _private(node.attr))
    return names


def _is_super_call(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def private_api_uses(path: Path) -> list[str]:
    """`file:line: what` for each private name of a third-party library that `path` uses:
    - `from x import _y`, `import x._y` (x not ours);
    - `obj._y` on anything but `self`/`cls`/`super()`;
    - in a class with a third-party class among its bases (directly or through ours): `self._y`/`super()._y`
      that a third-party base defines or that neither this class nor our bases define, and methods `_y` that
      override a private method of a third-party base."""
    tree = ast.parse(path.read_text(), str(path))
    where = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level and _third_party(node.module):
            modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if any(_private(part) for name in modules for part in name.split(".")):
                found.append(f"{where}:{node.lineno}: from {node.module} import "
                             f"{', '.join(a.name for a in node.names)}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _third_party(alias.name) and any(_private(part) for part in alias.name.split(".")):
                    found.append(f"{where}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls") or _is_super_call(owner):
                continue  # checked per class below
            found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    imported, module = _local_names(tree), _module_name(path) if path.is_relative_to(REPO) else None
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        mro: list[type] = []
        for base in map(ast.unparse, cls.bases):
            head = base.split(".")[0]
            resolved = _resolve(imported.get(head, f"{module}.{head}" if module else head) + base[len(head):])
            mro.extend(resolved.__mro__ if isinstance(resolved, type) else ())
        foreign = [k for k in dict.fromkeys(mro) if k is not object and _third_party(k.__module__)]
        if not foreign:
            continue
        # Names our classes on the way define are ours; a private name a third-party class defines is not,
        # even when we assign it (that overwrites the library's attribute).
        own = _self_assigned(cls).union(*(_self_assigned(source) for k in mro if not _third_party(k.__module__)
                                          if (source := _class_source(k)) is not None))
        owner = {name: k for k in reversed(foreign) for name in _private_names_of(k)}

        def theirs(name: str) -> str:
            return f"{owner[name].__module__}.{owner[name].__qualname__}"

        for node in ast.walk(cls):
            if isinstance(node, ast.Attribute) and _private(node.attr) and (
                    _is_super_call(node.value) or isinstance(node.value, ast.Name) and node.value.id == "self"
                    and (node.attr not in own or node.attr in owner)):
                origin = f"private to {theirs(node.attr)}" if node.attr in owner else "not defined by this class"
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)} ({origin})")
        for method in cls.body:
            if isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef)) and method.name in owner:
                found.append(f"{where}:{method.lineno}: def {method.name} overrides a private method of "
                             f"{theirs(method.name)}")
    return sorted(set(found))


def test_no_private_third_party_api_outside_compat() -> None:
    uses = [use for path in _sources() if COMPAT not in path.parents for use in private_api_uses(path)]
    assert not uses, "private third-party APIs outside lightning_llm/compat.py (wrap them there):\n" + "\n".join(uses)


def test_private_api_check_sees_each_kind(tmp_path: Path) -> None:
    sample = tmp_path / "probe.py"
    source = (
        "from lightning_fabric.connector import _PRECISION_INPUT\n"
        "import torch._dynamo\n"
        "from pytorch_lightning import Callback\n"
        "def f(trainer, node):\n"
        "    return trainer._logger_connector, node._target_, self_like._x\n"
        "class C(Callback):\n"
        "    def __init__(self):\n"
        "        self._mine = 1\n"
        "    def _mine_too(self):\n"
        "        return self._mine, self._mine_too, self._inherited, super()._also\n"
        "from lightning_llm.callbacks.throughput import ThroughputCallback\n"
        "class D(ThroughputCallback):\n"
        "    def _more(self):\n"
        "        return self._t0, self._unknown\n")  # _t0: our base's; _unknown: nobody's
    sample.write_text(source)
    uses = private_api_uses(sample)
    lines = sorted(int(use.split(":")[1]) for use in uses)
    assert lines == [1, 2, 5, 5, 10, 10, 14], uses
    assert all(use.startswith("probe.py:") for use in uses)
