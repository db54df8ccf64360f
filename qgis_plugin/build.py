"""Build the installable QGIS plugin zip: ``python qgis_plugin/build.py [--out dist/geo_ppp_qgis.zip]``.

The zip holds one top-level folder, ``geo_ppp_qgis/``, as QGIS's "Install from ZIP" expects.
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLUGIN = HERE / "geo_ppp_qgis"


def build(out: Path) -> Path:
    """Write the zip (replacing it atomically) and return its path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(PLUGIN.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                zf.write(path, Path(PLUGIN.name) / path.relative_to(PLUGIN))
    tmp.replace(out)
    return out


def main() -> None:
    """Command-line entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE.parent / "dist" / "geo_ppp_qgis.zip")
    print(build(parser.parse_args().out))


if __name__ == "__main__":
    main()
