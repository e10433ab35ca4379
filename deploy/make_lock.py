"""Write deploy/requirements.lock: every package the image installs, pinned by version and sha256.

pip resolves the project's ``EXTRAS`` against constraints.txt without installing anything (``--dry-run
--ignore-installed --report``) and the report names each wheel and its hash; the lock keeps one wheel per package,
the one for the interpreter and platform this runs on, which must be the image's: CPython 3.11 on x86_64 Linux.
The Dockerfile installs the lock with ``--require-hashes`` and the project itself with ``--no-deps``; ``pip check``
there fails the build if the lock misses a dependency. Run from the repository root after changing a dependency
or a pin:

    python deploy/make_lock.py
"""
from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

EXTRAS = "cluster,postgres"  # the Dockerfile's extras (tests/deploy/test_manifests.py checks that they agree)
LOCK = Path(__file__).with_name("requirements.lock")
HEADER = f"""\
# The dastudy image's complete environment (deploy/Dockerfile): every package ".[{EXTRAS}]" resolves to with
# constraints.txt, for CPython 3.11 on x86_64 Linux, one wheel each, pinned by sha256. Made by deploy/make_lock.py
# (pip install --dry-run --ignore-installed --report); the Dockerfile installs it with --require-hashes.
"""


def normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them (``tomli_w`` and ``Tomli-W`` are ``tomli-w``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> int:
    if sys.version_info[:2] != (3, 11) or platform.machine() != "x86_64" or sys.platform != "linux":
        print(f"error: run this with CPython 3.11 on x86_64 Linux (the image's), not {sys.version.split()[0]} on "
              f"{sys.platform}/{platform.machine()}: the lock pins that platform's wheels", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--report", str(report), "-c", "constraints.txt", f".[{EXTRAS}]"], check=True)
        resolved = json.loads(report.read_text())["install"]
    lines = []
    for item in sorted(resolved, key=lambda x: x["metadata"]["name"].lower()):
        info = item["download_info"]
        if "dir_info" in info:
            continue  # the project itself: installed from the build context with --no-deps
        digest = (info.get("archive_info") or {}).get("hashes", {}).get("sha256")
        if not digest:
            print(f"error: pip reported no sha256 for {info['url']}", file=sys.stderr)
            return 1
        lines.append(f"{normalized(item['metadata']['name'])}=={item['metadata']['version']} \\\n"
                     f"    --hash=sha256:{digest}\n")
    LOCK.write_text(HEADER + "".join(lines))
    print(f"{LOCK}: {len(lines)} packages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
