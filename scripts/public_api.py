#!/usr/bin/env python3
"""Counts the library's public declarations and fails if one has no doc comment.

A declaration is public when its line starts (after attributes) with `public` or `open`; its documentation is the
`///` comment right above it (attribute lines may sit between). Usage: scripts/public_api.py [--list] [SOURCES]
"""
import pathlib
import re
import sys

DECLARATION = re.compile(r"^\s*(?:(?:@\w+(?:\([^)]*\))?|nonisolated\(unsafe\)|final) )*(?:public|open) ")
ATTRIBUTE = re.compile(r"^\s*@\w+(?:\([^)]*\))?\s*$")


def main() -> int:
    arguments = [a for a in sys.argv[1:] if not a.startswith("--")]
    root = pathlib.Path(arguments[0] if arguments else "Sources")
    count, undocumented = 0, []
    for path in sorted(root.rglob("*.swift")):
        lines = path.read_text().split("\n")
        for number, line in enumerate(lines):
            if not DECLARATION.match(line):
                continue
            count += 1
            above = number - 1
            while above >= 0 and ATTRIBUTE.match(lines[above]):
                above -= 1
            if above < 0 or not lines[above].lstrip().startswith("///"):
                undocumented.append(f"{path}:{number + 1}: {line.strip()}")
            elif "--list" in sys.argv:
                print(f"{path}:{number + 1}: {line.strip()}")
    for entry in undocumented:
        print(f"undocumented: {entry}")
    print(f"{count} public declarations, {len(undocumented)} without a doc comment")
    return 1 if undocumented else 0


if __name__ == "__main__":
    sys.exit(main())
