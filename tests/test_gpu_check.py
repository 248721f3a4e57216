"""scripts/gpu_check.sh: its model sizes are base.yaml's, and its CPU mode runs the shared step."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nextdest.config import load_config, to_dict

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def test_sizes_match_base_yaml():
    text = SCRIPT.read_text()
    cfg = load_config(None, [])
    for name in ("gru", "transformer"):
        block = re.search(rf'"{name}": \{{(.*?)\}}', text, re.S).group(1)
        section = to_dict(getattr(cfg.models, name))
        found = dict(re.findall(r'"(\w+)": ([-\w.]+|\[\])', block))
        assert set(found) == set(section), name  # every key of the section, as build_model needs
        for key, value in found.items():
            assert value == str(section[key]), (name, key)


@pytest.mark.slow
def test_cpu_mode_runs_both_paths_on_small_shapes():
    env = {**os.environ, "DEVICE": "cpu", "CPU_STEPS": "2", "V": "3000", "ROWS": "4000", "BATCH": "64", "SAMPLED": "256",
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    res = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    for name in ("gru", "transformer"):
        for mode in ("full", "sampled"):
            assert re.search(rf"{name}\s+{mode}\s+cpu\s+2 steps: .* samples/s", res.stdout), res.stdout
