"""The model stages end to end on the tiny synthetic preset: output format, model files,
metrics, checkpoint resume after a kill, and recommend()."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import polars as pl
import pytest

from tiny import tiny_config
from nextdest import train as train_mod
from nextdest.folds import all_valid_mask
from nextdest.schema import TOPK, check
from nextdest.stages import run_stage

FAST = ("train.num_threads=1", "train.batch_size=128", "train.epochs=2")


class Killed(Exception):
    """Stands in for the process being killed."""


def fresh_root(tiny_upstream, tmp_path: Path) -> Path:
    """A private artifacts root holding a copy of the tiny upstream stages."""
    _cfg, exp = tiny_upstream
    root = tmp_path / "artifacts"
    shutil.copytree(exp, root / exp.name)
    return root


def run_in(root: Path, name: str, cfg):
    old = os.environ.get("NEXTDEST_ARTIFACTS")
    os.environ["NEXTDEST_ARTIFACTS"] = str(root)
    try:
        return run_stage(name, cfg, train_mod.run_model_stage)
    finally:
        os.environ["NEXTDEST_ARTIFACTS"] = old if old is not None else ""
        if old is None:
            del os.environ["NEXTDEST_ARTIFACTS"]


@pytest.fixture(scope="module")
def stages(tiny_upstream, tmp_path_factory):
    """gru, transformer and mlp trained once on the tiny preset (2 folds)."""
    root = fresh_root(tiny_upstream, tmp_path_factory.mktemp("models"))
    cfg = tiny_config(*FAST)
    out = {name: run_in(root, name, cfg) for name in ("gru", "transformer", "mlp")}
    return cfg, root, out


@pytest.mark.parametrize("name", ["gru", "transformer", "mlp"])
def test_outputs_cover_every_validation_and_test_trip(stages, name):
    cfg, root, out = stages
    stage = out[name]
    feats = pl.read_parquet(root / "base" / "features" / "features.parquet")
    oof = check(pl.read_parquet(stage / "oof_topk.parquet"), TOPK, "oof")
    test = check(pl.read_parquet(stage / "test_topk.parquet"), TOPK, "test")
    valid_trips = set(feats.filter(all_valid_mask() & pl.col("fold").is_in(list(cfg.cv.train_folds)))["utrip_id"])
    test_trips = set(feats.filter(pl.col("is_concealed"))["utrip_id"])
    assert set(oof["utrip_id"]) == valid_trips
    assert set(test["utrip_id"]) == test_trips
    known = set(pl.read_parquet(root / "base" / "features" / "cities.parquet")["city_id"])
    for table in (oof, test):
        assert (table["model"] == name).all()
        assert set(table["city_id"]) <= known  # raw ids, never padding/rare indices
        per = table.group_by("utrip_id").agg(pl.len(), pl.col("rank").min().alias("r1"), pl.col("score").is_sorted(descending=True).alias("s"),
                                             pl.col("city_id").n_unique().alias("u"))
        assert (per["len"] == cfg.train.top_k).all() and (per["r1"] == 1).all()
        assert (per["u"] == per["len"]).all()
    assert test.sort(["utrip_id", "rank"]).group_by("utrip_id", maintain_order=True).agg(
        pl.col("score").is_sorted(descending=True).all().alias("ok"))["ok"].all()


@pytest.mark.parametrize("name", ["gru", "transformer", "mlp"])
def test_metrics_and_model_files(stages, name):
    import json

    cfg, _root, out = stages
    m = json.loads((out[name] / "metrics.json").read_text())["models"][name]
    assert m["cv_acc4"] is not None and 0.0 <= m["cv_acc4"] <= 1.0
    assert set(m["cv_acc4_folds"]) == {str(f) for f in cfg.cv.train_folds}
    assert m["epoch_seconds"] > 0 and set(m["best_epochs"]) == {"0", "1"}
    assert all(len(h) == cfg.train.epochs for h in m["history"].values())
    for fold in cfg.cv.train_folds:
        model, meta = train_mod.load_model_file(out[name] / f"fold{fold}" / "model.pt")
        assert meta["model"] == name and meta["fold"] == fold
        assert meta["config"]["models"][name]["emb_dim"] == getattr(cfg.models, name).emb_dim
        assert 1 <= meta["best_epoch"] <= cfg.train.epochs
        assert int(meta["vocab"]["city_id"].gt(0).sum()) > 0


def test_a_models_own_seeds_train_one_model_per_fold_and_seed(tiny_upstream, tmp_path):
    """models.gru.seeds=[3, 5]: two models per fold (the first seed's file is model.pt), both in
    the metrics; the out-of-fold table still covers each validation trip once; other models keep
    train.seeds."""
    import json

    root = fresh_root(tiny_upstream, tmp_path)
    cfg = tiny_config(*FAST, "train.epochs=1", "models.gru.seeds=[3,5]")
    out = run_in(root, "gru", cfg)
    m = json.loads((out / "metrics.json").read_text())["models"]["gru"]
    assert set(m["history"]) == {f"fold{f}_seed{s}" for f in cfg.cv.train_folds for s in (3, 5)}
    for fold in cfg.cv.train_folds:
        assert sorted(p.name for p in (out / f"fold{fold}").glob("model*.pt")) == ["model.pt", "model_seed5.pt"]
        seeds = [train_mod.load_model_file(out / f"fold{fold}" / n)[1]["seed"] for n in ("model.pt", "model_seed5.pt")]
        assert seeds == [3, 5]
    # a model file written before models.<name>.seeds existed still loads (its section lacks the key)
    from nextdest.models import build_model

    meta = train_mod.load_model_file(out / "fold0" / "model.pt")[1]
    old = {k: v for k, v in meta["section"].items() if k != "seeds"}
    assert build_model("gru", old, meta["dims"]).cfg.seeds == ()
    feats = pl.read_parquet(root / "base" / "features" / "features.parquet")
    valid = feats.filter(all_valid_mask() & pl.col("fold").is_in(list(cfg.cv.train_folds)))["utrip_id"]
    oof = pl.read_parquet(out / "oof_topk.parquet")
    assert sorted(oof["utrip_id"].unique().to_list()) == sorted(valid.to_list())
    assert train_mod.model_seeds(cfg, "mlp") == tuple(cfg.train.seeds)


@pytest.mark.slow
def test_checkpoint_resume_after_kill(tiny_upstream, tmp_path, monkeypatch, capsys):
    cfg = tiny_config(*FAST, "train.epochs=3", "train.patience=0", "cv.train_folds=[0]")
    # Uninterrupted reference run.
    ref = run_in(fresh_root(tiny_upstream, tmp_path / "a"), "mlp", cfg)
    # Killed right after epoch 1's checkpoint, then rerun.
    root = fresh_root(tiny_upstream, tmp_path / "b")
    real_save = train_mod._save_atomic
    calls = {"n": 0}

    def save_then_die(obj, path):
        real_save(obj, path)
        calls["n"] += 1
        if calls["n"] == 1:
            raise Killed()

    monkeypatch.setattr(train_mod, "_save_atomic", save_then_die)
    with pytest.raises(Killed):
        run_in(root, "mlp", cfg)
    assert not (root / "base" / "mlp").exists()  # no half artifact
    capsys.readouterr()
    resumed = run_in(root, "mlp", cfg)
    assert "resuming after epoch 1/3" in capsys.readouterr().out
    import json

    h_ref = json.loads((ref / "metrics.json").read_text())["models"]["mlp"]["history"]
    h_res = json.loads((resumed / "metrics.json").read_text())["models"]["mlp"]["history"]
    strip = lambda h: {k: [(e["epoch"], e["loss"], e["val_acc4"]) for e in v] for k, v in h.items()}  # noqa: E731
    assert strip(h_res) == strip(h_ref)  # the resumed run reproduces the uninterrupted one
    a = pl.read_parquet(ref / "test_topk.parquet")
    b = pl.read_parquet(resumed / "test_topk.parquet")
    assert a["city_id"].to_list() == b["city_id"].to_list()


def test_sampled_softmax_trains(tiny_upstream, tmp_path):
    cfg = tiny_config(*FAST, "train.sampled_softmax=32", "cv.train_folds=[0]", "train.epochs=1")
    out = run_in(fresh_root(tiny_upstream, tmp_path), "gru", cfg)
    assert pl.read_parquet(out / "test_topk.parquet").height > 0


# --------------------------------------------------------------------------- recommend
def trip_rows(root: Path) -> tuple[pl.DataFrame, str]:
    raw = pl.read_csv(root / "base" / "data" / "raw" / "test_set.csv", infer_schema=False)
    trip = raw["utrip_id"][0]
    return raw.filter(pl.col("utrip_id") == trip), trip


def test_recommend_stage_folder_and_model_file(stages, tmp_path):
    from nextdest.recommend import recommend

    _cfg, root, out = stages
    rows, _trip = trip_rows(root)
    path = tmp_path / "trip.csv"
    rows.write_csv(path)
    recs = recommend(out["gru"], path, k=4)
    assert len(recs) == 4
    assert all(isinstance(c, int) and c > 0 for c, _ in recs)
    scores = [s for _, s in recs]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-6
    # The stage's own test top-4 for that trip is the same averaged prediction.
    test = pl.read_parquet(out["gru"] / "test_topk.parquet").filter((pl.col("utrip_id") == _trip) & (pl.col("rank") <= 4))
    assert [c for c, _ in recs] == test.sort("rank")["city_id"].to_list()
    single = recommend(out["gru"] / "fold0" / "model.pt", path, k=3)
    assert len(single) == 3


def test_recommend_without_concealed_row_predicts_the_next_stay(stages, tmp_path):
    from nextdest.recommend import recommend

    _cfg, root, out = stages
    rows, _trip = trip_rows(root)
    path = tmp_path / "trip.csv"
    rows.filter(pl.col("city_id") != "0").write_csv(path)
    recs = recommend(out["mlp"], path)
    assert len(recs) == 4


def test_recommend_unseen_city_is_a_clear_error(stages, tmp_path):
    from nextdest.recommend import recommend

    _cfg, root, out = stages
    rows, _trip = trip_rows(root)
    path = tmp_path / "trip.csv"
    rows.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("987654321")).otherwise(pl.col("city_id")).alias("city_id")
    ).write_csv(path)
    with pytest.raises(ValueError, match=r"line 2: city_id 987654321 was never seen"):
        recommend(out["transformer"], path)


def test_models_import_without_polars():
    """gpu_check.sh runs the models where only torch and numpy exist."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['polars'] = None; sys.modules['yaml'] = None; "
            "import nextdest.models as m; print(sorted(m.MODELS))")
    src = Path(__file__).resolve().parents[2] / "src"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(src)})
    assert res.returncode == 0, res.stderr
    assert "gru" in res.stdout


def test_parallel_workers_give_the_same_models_as_one(tiny_upstream, tmp_path, capsys):
    """Two spawned 1-thread workers train the two folds; every output equals the inline run's."""
    cfg1 = tiny_config(*FAST, "train.epochs=1")
    cfg2 = tiny_config(*FAST, "train.epochs=1", "train.workers=2")
    one = run_in(fresh_root(tiny_upstream, tmp_path / "a"), "gru", cfg1)
    capsys.readouterr()
    two = run_in(fresh_root(tiny_upstream, tmp_path / "b"), "gru", cfg2)
    assert "on 2 worker(s) (2 x 1 thread(s))" in capsys.readouterr().out
    for f in ("oof_topk.parquet", "test_topk.parquet"):
        assert pl.read_parquet(one / f).equals(pl.read_parquet(two / f)), f
