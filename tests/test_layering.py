"""The generic core imports no geospatial library, no Dask and not the geo layer."""

import ast
import subprocess
import sys
from pathlib import Path

import geo_ppp

CORE = Path(geo_ppp.__file__).parent / "core"
FORBIDDEN = ["rasterio", "geopandas", "shapely", "torchgeo", "dask", "distributed", "pyproj", "fiona"]


def test_core_import_loads_no_geospatial_module():
    code = (
        "import sys, geo_ppp.core, geo_ppp.core.weights, geo_ppp.core.pnp\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r} "
        "or m.startswith('geo_ppp.') and not (m.startswith('geo_ppp.core') or m == 'geo_ppp.errors'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the core pulled in: {out.stdout.strip()}"


def test_forbidden_modules_are_installed_so_the_check_means_something():
    code = "import rasterio, geopandas, dask, torchgeo"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_core_sources_import_only_torch_numpy_stdlib_and_core():
    allowed_third_party = {"torch", "numpy", "safetensors", "tqdm", "diffusers"}
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    offenders = []
    for path in CORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
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
    import geo_ppp.generation  # noqa: F401  (importing the module must not shadow the function)

    for name in geo_ppp.__all__:
        assert getattr(geo_ppp, name) is not None
    assert callable(geo_ppp.generate) and geo_ppp.generate.__name__ == "generate"
