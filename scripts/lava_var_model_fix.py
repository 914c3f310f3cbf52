"""Make lava-nc 0.10.0 importable on Python >= 3.11 (run with the Lava venv's interpreter).

``lava/magma/compiler/var_model.py`` declares dataclass fields whose default is a dataclass
instance (``x: ByteEncoder = ByteEncoder()``); Python 3.11 rejects such mutable defaults at import.
This rewrites each of them to ``field(default_factory=ByteEncoder)``. Idempotent.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by the Lava venv's python
from neurocuda.files import atomic_write_text  # standard library only

_MUTABLE_DEFAULT = re.compile(r"^(\s+\w+: (\w+)) = \2\(\)$", re.MULTILINE)
_IMPORT = "from dataclasses import dataclass, InitVar"


def var_model_path() -> Path:
    """Locate var_model.py without importing it (importing is what fails)."""
    spec = importlib.util.find_spec("lava")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("lava is not installed in this interpreter; run scripts/install_lava.sh.")
    return Path(next(iter(spec.submodule_search_locations))) / "magma/compiler/var_model.py"


def patch(source: str) -> str:
    """Return ``source`` with mutable dataclass defaults replaced by default factories."""
    patched = _MUTABLE_DEFAULT.sub(r"\1 = field(default_factory=\2)", source)
    if patched != source and "field" not in source.split(_IMPORT, 1)[0] + _IMPORT:
        patched = patched.replace(_IMPORT, _IMPORT + ", field", 1)
    return patched


def main() -> None:
    path = var_model_path()
    source = path.read_text()
    patched = patch(source)
    if patched == source:
        print(f"{path}: already patched")
        return
    atomic_write_text(path, patched)
    print(f"{path}: replaced {len(_MUTABLE_DEFAULT.findall(source))} mutable dataclass defaults")


if __name__ == "__main__":
    main()
