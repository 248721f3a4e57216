"""Exit 0 when the running Python satisfies every pin of requirements.txt, else 1 (lists what is
missing). Used by run.sh to decide whether a .venv is needed."""

import re
import sys
from importlib import metadata
from pathlib import Path


def main(path: str) -> int:
    missing = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)", line)
        if not m:
            continue
        name, want = m.groups()
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(f"{name}=={want} (not installed)")
            continue
        if have.split("+")[0] != want:
            missing.append(f"{name}=={want} (have {have})")
    for item in missing:
        print(f"  missing: {item}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "requirements.txt"))
