"""Summaries of py-spy's raw (collapsed) stacks: where a profiled worker spent its samples, per
thread, by function (self time: the innermost frame; total: anywhere on the stack).

    python -m workers.bench.profile DIR_OR_FILE [--top N]
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _where(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``: lines of one function summed."""
    m = _FRAME.match(frame.strip())
    if m is None:
        return frame.strip()
    f = m.group("file")
    for marker in ("site-packages/", "/workers/", "lib/python3"):
        if marker in f:
            f = f.split(marker, 1)[1]
            if marker == "/workers/":
                f = "workers/" + f
            break
    return f"{m.group('func')} ({f})"


def summarize(path: Path, top: int = 25) -> str:
    by_thread: Counter[str] = Counter()
    self_t: dict[str, Counter[str]] = {}
    total_t: dict[str, Counter[str]] = {}
    n = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        frames = stack.split(";")
        thread = re.sub(r"\s*\(\d+\)$", "", frames[0].strip()) or "thread"
        fn = [_where(f) for f in frames[1:]]
        n += c
        by_thread[thread] += c
        if fn:
            self_t.setdefault(thread, Counter())[fn[-1]] += c
            tot = total_t.setdefault(thread, Counter())
            for f in set(fn):
                tot[f] += c
    out = [f"{path}: {n} samples (py-spy, idle excluded)"]
    for thread, c in by_thread.most_common():
        out.append(f"\n thread {thread}: {c} samples ({c / max(n, 1):.0%})")
        out.append("   self time (innermost frame):")
        for f, k in self_t.get(thread, Counter()).most_common(top):
            out.append(f"     {k / max(c, 1):6.1%}  {f}")
        out.append("   total time (on the stack):")
        for f, k in total_t.get(thread, Counter()).most_common(top):
            out.append(f"     {k / max(c, 1):6.1%}  {f}")
    return "\n".join(out)


def summarize_dir(path: Path, top: int = 25) -> str:
    files = sorted(path.glob("*.pyspy.txt")) if path.is_dir() else [path]
    return "\n\n".join(summarize(f, top) for f in files) or f"no py-spy output in {path}"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    top = int(argv[argv.index("--top") + 1]) if "--top" in argv else 25
    print(summarize_dir(Path(argv[0]), top))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
