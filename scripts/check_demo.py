"""Fail when `make demo`'s printed before/after table differs from the one in the README.

    python scripts/check_demo.py DEMO_OUTPUT README.md

The rows compared are the lines that start with "prior" or "fine-tuned" after the
"fresh samples each" header, in the demo's output and in the README's demo block.
"""

import re
import sys
from pathlib import Path


def table(text: str) -> list[str]:
    """The demo's result rows, whitespace-normalised."""
    start = text.index("fresh samples each")
    rows = re.findall(r"^(?:prior|fine-tuned)\s+[\d. na]+$", text[start:], flags=re.M)
    return [" ".join(r.split()) for r in rows[:2]]


def main(demo: str, readme: str) -> int:
    printed, published = table(Path(demo).read_text()), table(Path(readme).read_text())
    if printed != published:
        print(f"the demo printed {printed}, the README says {published}: update the README's demo figures", file=sys.stderr)
        return 1
    print("the README's demo figures match the demo's output")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
