#!/usr/bin/env python3
"""Every relative link between the repository's markdown files resolves: the file exists and,
where the link names a section (`#anchor`), a heading of that file has that anchor (GitHub's
rule: lower case, punctuation other than `-` and `_` dropped, spaces as `-`). Exits non-zero
and lists the broken links otherwise. Run from the repository root."""

import os
import re
import subprocess
import sys


def anchor(heading: str) -> str:
    h = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return h.replace(" ", "-")


def anchors(path: str) -> set:
    text = open(path, encoding="utf-8").read()
    # Headings inside fenced code blocks are not headings.
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return {anchor(m.group(1)) for m in re.finditer(r"^#{1,6} (.*)$", text, re.M)}


def main() -> int:
    files = subprocess.run(
        ["git", "ls-files", "*.md"], capture_output=True, text=True, check=True
    ).stdout.split()
    known = {os.path.normpath(f): None for f in files}
    broken = []
    for f in files:
        text = open(f, encoding="utf-8").read()
        text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
        for m in re.finditer(r"\]\(([^)\s]*)\)", text):
            link = m.group(1)
            if re.match(r"^[a-z]+:", link) or not link:
                continue
            target, _, frag = link.partition("#")
            path = os.path.normpath(os.path.join(os.path.dirname(f), target)) if target else os.path.normpath(f)
            if not os.path.exists(path):
                broken.append(f"{f}: {link}: no such file")
                continue
            if frag and path.endswith(".md"):
                if known.get(path) is None:
                    known[path] = anchors(path)
                if frag not in known[path]:
                    broken.append(f"{f}: {link}: no such section")
    for b in broken:
        print(b, file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
