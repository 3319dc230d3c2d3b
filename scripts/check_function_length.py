"""Fail when a function in src/ is longer than 120 lines (``make lint`` runs this).

Ruff checks complexity (C901, max 15); length it does not check, so this does. Lines are
counted from ``def`` to the function's last line, decorators and docstring included.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_LINES = 120
ROOT = Path(__file__).resolve().parents[1]


def long_functions(root: Path = ROOT / "src") -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_LINES:
                    found.append(f"{relative}:{node.lineno}: {node.name} is {length} lines")
    return found


def main() -> int:
    found = long_functions()
    for line in found:
        print(f"{line} (at most {MAX_LINES})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
