"""Stage caching: reruns skip, a config change reruns only the changed stage and its dependents,
--force reruns, and a killed stage never leaves an artifact that looks valid."""

import json
import os
import subprocess
import sys

import pytest

from tiny import tiny_config
from nextdest.config import ROOT
from nextdest.stages import STAGE_LIST, experiment_dir, read_manifest, run_pipeline, run_stage

UPSTREAM = ["data", "folds", "features", "baselines"]


def keys(cfg):
    return {s: (read_manifest(experiment_dir(cfg) / s) or {}).get("created") and read_manifest(experiment_dir(cfg) / s)["key"]
            for s in UPSTREAM}


def ran(out: str) -> set[str]:
    return {s for s in UPSTREAM if f"[{s}] running" in out}


def test_rerun_skips_and_changes_rerun_only_dependents(artifacts, capsys):
    cfg = tiny_config()
    run_pipeline(cfg, UPSTREAM)
    assert ran(capsys.readouterr().out) == set(UPSTREAM)
    first = keys(cfg)

    run_pipeline(cfg, UPSTREAM)
    out = capsys.readouterr().out
    assert ran(out) == set() and all(f"[{s}] up to date" in out for s in UPSTREAM)
    assert keys(cfg) == first

    # A baselines-only change reruns baselines alone.
    run_pipeline(tiny_config("baselines.top_k=20"), UPSTREAM)
    assert ran(capsys.readouterr().out) == {"baselines"}

    # A folds change reruns folds and everything downstream of it, not the data stage.
    run_pipeline(tiny_config("cv.n_folds=4", "baselines.top_k=20"), UPSTREAM)
    assert ran(capsys.readouterr().out) == {"folds", "features", "baselines"}

    # --force reruns a fresh stage.
    cfg4 = tiny_config("cv.n_folds=4", "baselines.top_k=20")
    run_pipeline(cfg4, ["data"], force=True)
    assert ran(capsys.readouterr().out) == {"data"}


def test_killed_stage_leaves_no_trusted_artifact(artifacts, capsys):
    cfg = tiny_config()
    run_pipeline(cfg, ["data", "folds"])
    before = read_manifest(experiment_dir(cfg) / "folds")

    def dies(ctx):
        (ctx.out / "folds.parquet").write_bytes(b"half a file")
        raise KeyboardInterrupt  # as if killed mid-write

    with pytest.raises(KeyboardInterrupt):
        run_stage("folds", tiny_config("cv.n_folds=3", "cv.train_folds=[0]"), dies)
    exp = experiment_dir(cfg)
    assert read_manifest(exp / "folds") == before  # the old artifact is intact
    assert not [p for p in exp.iterdir() if ".tmp-" in p.name]


def test_damaged_output_is_not_trusted(artifacts, capsys):
    cfg = tiny_config()
    run_pipeline(cfg, ["data", "folds"])
    capsys.readouterr()
    path = experiment_dir(cfg) / "folds" / "folds.parquet"
    path.write_bytes(path.read_bytes()[:10])
    run_pipeline(cfg, ["data", "folds"])
    assert "[folds] running" in capsys.readouterr().out


def test_missing_upstream_is_a_clear_error(artifacts):
    from nextdest.stages import StageError

    with pytest.raises(StageError, match="needs stage 'data'.*run `./run.sh --from data`"):
        run_pipeline(tiny_config(), ["folds"])


def test_manifest_records_config_inputs_code_and_resolved_config(artifacts):
    cfg = tiny_config()
    run_pipeline(cfg, ["data", "folds"])
    man = read_manifest(experiment_dir(cfg) / "folds")
    assert set(man["key_parts"]) == {"stage", "config", "inputs", "external", "code"}  # no runtime part: folds do not depend on threads
    assert man["key_parts"]["config"] == {"seed": 42, "cv.n_folds": 5}
    assert "data" in man["key_parts"]["inputs"]
    assert (experiment_dir(cfg) / "folds" / "config.yaml").read_text().startswith("seed: 42")
    assert "folds.parquet" in man["outputs"]


def test_stage_graph_comes_from_the_registry(capsys):
    """One stage per registered model and ranker; candidates, blend and report read every top-k
    stage before them; one script per stage kind; run.sh asks the package for the list."""
    from nextdest.__main__ import main
    from nextdest.registry import components

    models, rankers = [c.name for c in components("model")], [c.name for c in components("ranker")]
    names = [s.name for s in STAGE_LIST]
    assert names == ["data", "folds", "features", "baselines", *models, "candidates", *rankers, "blend", "report"]
    stages = {s.name: s for s in STAGE_LIST}
    assert stages["candidates"].deps == ("data", "features", "baselines", *models)
    assert stages["blend"].deps == ("data", "features", "baselines", *models, *rankers)
    assert stages["report"].deps == ("data", "features", "baselines", *models, *rankers, "blend")
    assert {stages[m].command[0] for m in models} == {"pipelines/05_model.py"}
    assert all(stages[m].command[1:] == [m] for m in models + rankers)
    scripts = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "pipelines").glob("*.py"))
    assert scripts == sorted({s.script for s in STAGE_LIST})
    assert main(["stages", "--plain"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [l.split()[0] for l in lines] == names and lines[4].split()[1:] == stages[models[0]].command
    text = (ROOT / "run.sh").read_text()
    assert "-m nextdest lock --stages" in text  # the config check and lock also print the stage list
    for name in models + rankers:
        assert name not in text


def test_code_key_follows_the_imports():
    """A stage's code key covers the modules its function imports (transitively), not others."""
    from nextdest.stages import STAGES, code_files

    rel = lambda spec: {p.relative_to(ROOT / "src" / "nextdest").as_posix() for p in code_files(spec)}  # noqa: E731
    blend = rel(STAGES["blend"])
    assert {"blend.py", "folds.py", "topk.py", "schema.py", "artifacts.py", "metrics.py"} <= blend  # folds via topk.validation_truth
    assert not any(f.startswith("models/") for f in blend)
    first_model = next(s for s in STAGE_LIST if s.kind == "model")
    other_model = [s for s in STAGE_LIST if s.kind == "model"][1]
    files = rel(first_model)
    assert {"train.py", "nn_data.py", "models/base.py", "models/step.py", f"models/{first_model.name}.py"} <= files
    assert f"models/{other_model.name}.py" not in files
    assert rel(STAGES["folds"]) >= {"folds.py", "schema.py", "artifacts.py"}


@pytest.mark.slow
def test_run_sh_only_and_rerun_skip(artifacts):
    env = {**os.environ, "PYTHON": sys.executable, "NEXTDEST_ARTIFACTS": str(artifacts)}
    cmd = [str(ROOT / "run.sh"), "--only", "data,folds", "data.preset=tiny", "cv.train_folds=[0]"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "[data] running" in first.stdout and "[folds] running" in first.stdout
    assert not (artifacts / "base" / ".lock").exists()  # the run held the experiment's lock and released it
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert "[data] up to date" in second.stdout and "[folds] up to date" in second.stdout
    bad = subprocess.run([str(ROOT / "run.sh"), "--only", "nosuch"], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown stage 'nosuch'" in bad.stderr
    bad = subprocess.run([str(ROOT / "run.sh"), "--only", "data", "train.nokey=1"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown key 'train.nokey'" in bad.stderr
    json.loads((artifacts / "base" / "data" / "manifest.json").read_text())


def flip_byte(path, at: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[min(at, len(data) - 1)] ^= 0x01
    path.write_bytes(bytes(data))


def test_same_size_damage_rebuilds_with_a_message(artifacts, capsys):
    cfg = tiny_config()
    run_pipeline(cfg, ["data", "folds"])
    capsys.readouterr()
    path = experiment_dir(cfg) / "folds" / "folds.parquet"
    good = path.read_bytes()
    flip_byte(path)
    run_pipeline(cfg, ["data", "folds"])
    out = capsys.readouterr().out
    assert "[data] up to date" in out
    assert "[folds] rebuilding: folds.parquet does not hash to its manifest entry" in out and "[folds] running" in out
    assert path.read_bytes() == good  # rebuilt identical


def test_damaged_upstream_is_an_error_naming_the_file(artifacts, capsys):
    from nextdest.stages import StageError, stage_function

    cfg = tiny_config()
    run_pipeline(cfg, ["data", "folds"])
    flip_byte(experiment_dir(cfg) / "data" / "train.parquet")
    with pytest.raises(StageError, match=r"reads stage 'data', whose artifact is damaged: .*train.parquet does not hash.*--from data"):
        run_stage("folds", cfg, stage_function("folds"), force=True)


def test_rebuild_says_what_changed(artifacts, capsys):
    run_pipeline(tiny_config(), ["data", "folds"])
    capsys.readouterr()
    run_pipeline(tiny_config("cv.n_folds=4"), ["data", "folds"])
    assert "[folds] rebuilding: config cv.n_folds changed" in capsys.readouterr().out


def test_volatile_fields_and_views_stay_out_of_the_digest(tmp_path):
    from nextdest.stages import output_entry, outputs_digest, strip_volatile

    assert strip_volatile({"acc": 0.5, "seconds": 3.2, "history": [{"train_seconds": 1, "loss": 2}],
                           "timing": {"created": "x", "hostname": "h"}}) == {"acc": 0.5, "history": [{"loss": 2}], "timing": {}}

    def digest(seconds: float, figure: bytes, summary: str) -> str:
        (tmp_path / "metrics.json").write_text(json.dumps({"acc4": 0.25, "seconds": seconds, "group_seconds": [seconds]}))
        (tmp_path / "plot.png").write_bytes(figure)
        (tmp_path / "summary.md").write_text(summary)
        (tmp_path / "config.yaml").write_text(summary)
        return outputs_digest({p.name: output_entry(p) for p in tmp_path.iterdir()})

    first = digest(1.0, b"a", "took 1.0 s")
    assert digest(2.5, b"b", "took 2.5 s") == first
    (tmp_path / "metrics.json").write_text(json.dumps({"acc4": 0.5, "seconds": 1.0, "group_seconds": [1.0]}))
    assert outputs_digest({p.name: output_entry(p) for p in tmp_path.iterdir()}) != first


def test_thread_counts_that_change_results_are_in_the_key(tiny_upstream):
    from nextdest.stages import STAGES, stage_key

    cfg, exp = tiny_upstream
    spec = STAGES["gru"]
    assert stage_key(spec, cfg)[1]["runtime"] == {"torch_threads": 1, "predict_threads": os.cpu_count() or 1}
    assert stage_key(spec, tiny_config("train.num_threads=2"))[0] != stage_key(spec, cfg)[0]
    assert stage_key(spec, tiny_config("rankers.n_threads=2"))[0] == stage_key(spec, cfg)[0]
    assert "runtime" not in stage_key(STAGES["features"], cfg)[1]


def test_dead_runs_temp_folders_are_removed(artifacts, capsys):
    cfg = tiny_config()
    run_pipeline(cfg, ["data"])
    exp = experiment_dir(cfg)
    for name in (".folds.tmp-999999", ".folds.old-999998", ".data.tmp-999997"):
        (exp / name).mkdir()
        (exp / name / "half.parquet").write_bytes(b"x")
    capsys.readouterr()
    run_pipeline(cfg, ["data", "folds"])
    out = capsys.readouterr().out
    assert "[folds] removed .folds.tmp-999999, left by a run that did not finish" in out
    assert not (exp / ".folds.tmp-999999").exists() and not (exp / ".folds.old-999998").exists()
    assert "[data] removed .data.tmp-999997" in out and "[data] up to date" in out  # also when skipped


def test_run_command_hands_component_stages_their_overrides(artifacts, capsys):
    """`python -m nextdest run` (run.sh's runner) passes a model stage its name and the dotted
    overrides in an order the stage's parser takes: with --config between them, a model stage
    used to stop on "unrecognized arguments" whenever ./run.sh had overrides."""
    from nextdest.__main__ import main
    from nextdest.registry import components

    model = components("model")[0]
    rc = main(["run", "--config", str(ROOT / "configs" / "base.yaml"), model.name, f"{model.section}.enabled=false",
               "data.preset=tiny"])
    out = capsys.readouterr().out
    assert rc == 0 and "in one process" in out and f"[{model.name}] disabled by config" in out
    assert main(["run", "nosuch"]) == 2 and "unknown stage 'nosuch'" in capsys.readouterr().err


def test_real_size_data_runs_a_process_per_stage():
    from nextdest.__main__ import isolate_stages

    assert isolate_stages(tiny_config("data.preset=full")) and isolate_stages(tiny_config("data.source=official"))
    assert not isolate_stages(tiny_config()) and not isolate_stages(tiny_config("data.preset=medium"))


def test_run_switches_to_a_process_per_stage_once_the_code_changes(monkeypatch, capsys):
    """One process keeps the modules it imported: if the package's files change during the run, the
    remaining stages must run in new processes (else a stage would run the old code under the new
    code's cache key)."""
    import argparse
    import subprocess
    from pathlib import Path

    import nextdest.__main__ as cli

    snapshots = iter([{"a.py": "1"}, {"a.py": "2"}, {"a.py": "2"}])  # the run's start, then before each stage
    monkeypatch.setattr(cli, "source_hashes", lambda: next(snapshots))
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, *a, **k: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    args = argparse.Namespace(items=["folds", "features"], config="configs/tiny.yaml", force=False, isolate=False)
    assert cli._run(args) == 0
    assert [Path(c[1]).name for c in calls] == ["02_folds.py", "03_features.py"]  # both in their own process
    out = capsys.readouterr().out
    assert "the code changed since this run started (a.py)" in out and "in one process" in out
    assert cli.changed_sources({"a.py": "1", "b.py": "1"}, {"a.py": "1", "c.py": "1"}) == ["b.py", "c.py"]
