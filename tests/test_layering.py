"""The package's layers: arrows run one way, no import cycle, files opened only in io, small modules.

The order (each layer may import only the layers listed for it, function-level imports included):

    errors <- core <- outputs <- generation            (generic: no geospatial code)
    errors <- core <- outputs <- tsp                   (generic: no geospatial code)
    errors <- geo <- io <- landcover <- pipeline <- demos <- cli

``geo_ppp/__init__.py`` is a facade over the core and generation. ``core`` imports only torch, numpy,
the standard library and a few listed helpers, and loads no geospatial module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import geo_ppp

PACKAGE = Path(geo_ppp.__file__).parent

GENERIC = {"errors", "core", "outputs", "generation", "tsp"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "core": {"errors"},
    "outputs": {"errors", "core"},
    "generation": {"errors", "core", "outputs"},
    "tsp": {"errors", "core", "outputs"},
    "geo": {"errors"},
    "io": {"errors", "core", "outputs", "geo"},
    "landcover": {"errors", "core", "outputs", "geo", "io"},
    "pipeline": {"errors", "core", "outputs", "geo", "io", "landcover"},
    "demos": {"errors", "core", "outputs", "geo", "io", "landcover", "pipeline", "generation"},
    "cli": {"errors", "core", "outputs", "geo", "io", "landcover", "pipeline", "generation", "demos", "tsp"},
    "facade": {"errors", "core", "generation"},
}
#: libraries (or their parts) that open files: only io may import them (geo may use rasterio's CRS
#: value; torchgeo's losses and models are tensors in, tensors out)
FILE_LIBRARIES = ("rasterio", "geopandas", "fiona", "pyogrio", "matplotlib", "PIL", "torchgeo.datasets",
                  "torchgeo.samplers")
FILE_LIBRARY_EXCEPTIONS = {("geo", "rasterio.crs")}
#: modules allowed past 450 lines, and why
LARGE_MODULES: dict[str, str] = {}
MAX_LINES = 450
FORBIDDEN_IN_CORE = ["rasterio", "geopandas", "shapely", "torchgeo", "dask", "distributed", "pyproj", "fiona"]


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _layer(module: str) -> str:
    parts = module.split(".")
    return "facade" if len(parts) == 1 else parts[1]


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every absolute import in a file, module-level or inside functions: (name, line)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
            found += [
                (f"{node.module}.{a.name}", node.lineno)
                for a in node.names
                if f"{node.module}.{a.name}" in MODULES
            ]
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for name, _ in _imports(path):
            if name in MODULES and name != module:
                graph[module].add(name)
    return graph


def test_every_module_has_a_layer():
    unknown = sorted({_layer(m) for m in MODULES} - set(ALLOWED))
    assert not unknown, f"new top-level modules need a place in ALLOWED: {unknown}"


def test_arrows_run_one_way():
    offenders = []
    for module, path in MODULES.items():
        mine = _layer(module)
        for name, line in _imports(path):
            if not name.startswith("geo_ppp.") or name not in MODULES:
                continue
            theirs = _layer(name)
            if theirs != mine and theirs not in ALLOWED[mine]:
                offenders.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line} ({mine}) imports {name} ({theirs})"
                )
    assert not offenders, "\n".join(offenders)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every back edge of a depth-first walk, as the cycle it closes (none: the graph is acyclic)."""
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                cycles.append([*stack[stack.index(n) :], n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


def test_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_checks_see_what_they_look_for(tmp_path: Path):
    """The cycle finder finds a cycle, and the import scan sees imports inside functions."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
    p = tmp_path / "m.py"
    p.write_text("import os\n\ndef f():\n    from geo_ppp.pipeline.run import segment\n")
    assert ("geo_ppp.pipeline.run", 4) in _imports(p)


def test_only_io_imports_file_libraries():
    offenders = []
    for module, path in MODULES.items():
        layer = _layer(module)
        if layer == "io":
            continue
        for name, line in _imports(path):
            top = name.split(".")[0]
            if top in FILE_LIBRARIES and not any(
                layer == lay and name.startswith(p) for lay, p in FILE_LIBRARY_EXCEPTIONS
            ):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_generic_layers_import_no_geospatial_library():
    geo = {
        "rasterio",
        "geopandas",
        "shapely",
        "torchgeo",
        "pyproj",
        "fiona",
        "pyogrio",
        "affine",
        "dask",
        "distributed",
    }
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
        for module, path in MODULES.items()
        if _layer(module) in GENERIC
        for name, line in _imports(path)
        if name.split(".")[0] in geo
    ]
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module: str):
    lines = MODULES[module].read_text().count("\n")
    if module in LARGE_MODULES:
        return
    assert lines <= MAX_LINES, f"{module} has {lines} lines (> {MAX_LINES}): split it by concern"


def test_core_import_loads_no_geospatial_module():
    code = (
        "import sys, geo_ppp.core, geo_ppp.core.weights, geo_ppp.core.pnp, geo_ppp.generation\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN_IN_CORE!r} "
        "or m.startswith('geo_ppp.') and m.split('.')[1] not in ('core', 'errors', 'outputs', 'generation'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the generic layers pulled in: {out.stdout.strip()}"


def test_forbidden_modules_are_installed_so_the_check_means_something():
    code = "import rasterio, geopandas, dask, torchgeo"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_core_sources_import_only_torch_numpy_stdlib_and_core():
    allowed_third_party = {"torch", "numpy", "safetensors", "tqdm", "diffusers"}
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    offenders = []
    for path in (PACKAGE / "core").glob("*.py"):
        for name, _ in _imports(path):
            top = name.split(".")[0]
            ok = (
                top in stdlib
                or top in allowed_third_party
                or name.startswith("geo_ppp.core")
                or name == "geo_ppp.errors"
            )
            if not ok:
                offenders.append(f"{path.name}: {name}")
    assert not offenders, offenders


def test_top_level_exports_resolve():
    import geo_ppp.generation  # noqa: F401  (importing the package must not shadow the function)

    for name in geo_ppp.__all__:
        assert getattr(geo_ppp, name) is not None
    assert callable(geo_ppp.generate) and geo_ppp.generate.__name__ == "generate"


def test_tsp_import_loads_no_geospatial_module():
    """The TSP application sits on the generic core alone (STYLE habit 16)."""
    code = (
        "import sys, geo_ppp.tsp.solve, geo_ppp.tsp.prior, geo_ppp.tsp.files, geo_ppp.tsp.run, geo_ppp.tsp.draw\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN_IN_CORE!r} "
        "or m.startswith('geo_ppp.') and m.split('.')[1] not in ('core', 'errors', 'outputs', 'tsp'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"geo_ppp.tsp pulled in: {out.stdout.strip()}"
