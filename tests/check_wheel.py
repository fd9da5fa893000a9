"""Build the wheel and check it holds every file of the package (run by .ci/run).

An editable install finds modules in the source tree, so a package left out of the
distribution (``broker_guard.guard``, say) would pass every test and break every user.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_wheel(out: str) -> Path | None:
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", out, str(ROOT)]
    build = subprocess.run(command, capture_output=True, text=True)
    # setuptools warns, and may drop the package, when a subpackage is not configured
    if build.returncode != 0 or "would be ignored" in build.stdout + build.stderr:
        print(build.stdout[-4000:], build.stderr[-4000:], file=sys.stderr)
        return None
    (wheel,) = Path(out).glob("broker_guard-*.whl")
    return wheel


def main() -> int:
    with tempfile.TemporaryDirectory() as out:
        wheel = build_wheel(out)
        if wheel is None:
            print("the wheel build failed or left subpackages unconfigured", file=sys.stderr)
            return 1
        shipped = set(zipfile.ZipFile(wheel).namelist())
    files = (p for p in (ROOT / "broker_guard").rglob("*") if p.is_file())
    wanted = {p.relative_to(ROOT).as_posix() for p in files if "__pycache__" not in p.parts}
    missing = sorted(wanted - shipped)
    if missing:
        print(f"the wheel {wheel.name} lacks: {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"{wheel.name}: all {len(wanted)} package files shipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
