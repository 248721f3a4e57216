import dataclasses

import pytest
import yaml

from nextdest.config import BASE_CONFIG, Config, ConfigError, load_config, to_dict


def test_base_yaml_is_the_one_source_of_defaults(tmp_path, monkeypatch):
    """The dataclasses declare types and ranges only: every value comes from base.yaml, whose keys
    are exactly the dataclasses' (a missing key is an error naming it, an extra one too)."""
    import nextdest.config as config_mod

    def no_defaults(cls):
        for f in dataclasses.fields(cls):
            if cls is Config and f.name == "experiment":
                continue
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, (cls.__name__, f.name)
            tp = config_mod._hints(cls)[f.name]
            if dataclasses.is_dataclass(tp):
                no_defaults(tp)

    no_defaults(Config)
    data = yaml.safe_load(BASE_CONFIG.read_text())
    assert to_dict(load_config(BASE_CONFIG)) == {**data, "experiment": "base"}
    del data["models"]["gru"]["hidden"]
    broken = tmp_path / "base.yaml"
    broken.write_text(yaml.safe_dump(data))
    monkeypatch.setattr(config_mod, "BASE_CONFIG", broken)
    with pytest.raises(ConfigError, match=r"key 'models.gru.hidden' is missing"):
        load_config(broken)


def test_layering_overrides_and_experiment_name(tmp_path):
    exp = tmp_path / "myexp.yaml"
    exp.write_text("train:\n  epochs: 7\ncv:\n  train_folds: [0, 2]\n")
    cfg = load_config(exp, ["train.lr=1e-3", "models.gru.hidden=64", "data.preset=tiny"])
    assert cfg.experiment == "myexp"
    assert cfg.train.epochs == 7 and cfg.train.lr == 0.001
    assert cfg.cv.train_folds == (0, 2)
    assert cfg.models.gru.hidden == 64 and cfg.models.transformer.emb_dim == load_config(None).models.transformer.emb_dim  # untouched default
    assert cfg.data.preset == "tiny"
    assert dataclasses.is_dataclass(cfg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1  # frozen


def test_unknown_key_names_key_and_file(tmp_path):
    exp = tmp_path / "bad.yaml"
    exp.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(exp)
    assert "train.epoch" in str(err.value) and "bad.yaml" in str(err.value)


def test_wrong_type_names_key_and_source(tmp_path):
    exp = tmp_path / "bad2.yaml"
    exp.write_text("models:\n  gru:\n    hidden: big\n")
    with pytest.raises(ConfigError) as err:
        load_config(exp)
    assert "models.gru.hidden" in str(err.value) and "bad2.yaml" in str(err.value) and "integer" in str(err.value)
    with pytest.raises(ConfigError, match="command line.*train.seeds"):
        load_config(None, ["train.seeds=3"])
    with pytest.raises(ConfigError, match="device.*must be one of"):
        load_config(None, ["device=tpu"])
    with pytest.raises(ConfigError, match="must be true or false"):
        load_config(None, ["features.reverse_augment=yes please"])


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="cv.train_folds"):
        load_config(None, ["cv.train_folds=[5]"])
    with pytest.raises(ConfigError, match="cv.train_folds"):
        load_config(None, ["cv.train_folds=[]"])
    with pytest.raises(ConfigError, match="override"):
        load_config(None, ["train.lr"])
    with pytest.raises(ConfigError, match="rankers.max_candidates.*candidates.max_pool = 50"):
        load_config(None, ["rankers.max_candidates=60"])
    assert load_config(None, ["rankers.max_candidates=60", "candidates.max_pool=60"]).rankers.max_candidates == 60


def test_experiment_configs_load():
    from nextdest.config import CONFIG_DIR

    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        cfg = load_config(path)
        assert cfg.experiment == path.stem


@pytest.mark.parametrize("override,message", [
    ("train.epochs=-1", r"command line: key 'train.epochs' = -1: must be an integer >= 1"),
    ("train.batch_size=0", r"key 'train.batch_size' = 0: must be an integer >= 1"),
    ("train.lr=0", r"key 'train.lr' = 0.0: must be a number > 0"),
    ("train.seeds=[]", r"key 'train.seeds' = \[\]: must be a non-empty list"),
    ("models.gru.dropout=1.0", r"key 'models.gru.dropout' = 1.0: must be a fraction in \[0, 1\)"),
    ("rankers.xgb.subsample=1.5", r"key 'rankers.xgb.subsample' = 1.5: must be a fraction in \(0, 1\]"),
    ("rankers.lgb.colsample_bytree=0", r"key 'rankers.lgb.colsample_bytree' = 0.0: must be a fraction in \(0, 1\]"),
    ("rankers.n_folds=1", r"key 'rankers.n_folds' = 1: must be an integer >= 2"),
    ("models.transformer.n_heads=5", r"key 'models.transformer.n_heads' = 5: must be a divisor of models.transformer.emb_dim \(64\)"),
    ("report.min_gain=-0.001", r"key 'report.min_gain' = -0.001: must be a number >= 0"),
    ("report.buckets=[20,5]", r"key 'report.buckets' = \[20, 5\]: must be a non-empty, strictly increasing list of integers >= 0"),
    ("report.buckets=[]", r"key 'report.buckets' = \[\]: must be a non-empty"),
    ("report.buckets=[-1,5]", r"key 'report.buckets' = \[-1, 5\]: must be a non-empty"),
    ("report.submit_model=xgb", r"key 'report.submit_model' = 'xgb': must be 'auto' or an enabled model: popular, prev_city, gru, "
                                r"transformer, mlp, xgb_ranker, lgb_ranker, blend"),
])
def test_ranges_and_names_are_checked_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_submit_model_must_be_enabled_and_errors_name_the_file(tmp_path):
    exp = tmp_path / "noxgb.yaml"
    exp.write_text("rankers:\n  xgb:\n    enabled: false\nreport:\n  submit_model: xgb_ranker\n")
    with pytest.raises(ConfigError, match=r"noxgb.yaml: key 'report.submit_model' = 'xgb_ranker': .*lgb_ranker, blend$"):
        load_config(exp)
    assert load_config(exp, ["report.submit_model=lgb_ranker"]).report.submit_model == "lgb_ranker"


@pytest.mark.slow
def test_run_sh_config_error_is_one_line_before_any_stage(tmp_path):
    import os
    import subprocess
    import sys

    from nextdest.config import ROOT

    env = {**os.environ, "PYTHON": sys.executable, "NEXTDEST_ARTIFACTS": str(tmp_path)}
    for bad in ("report.submit_model=gruu", "train.epochs=-1", "train.batch_size=0"):
        res = subprocess.run([str(ROOT / "run.sh"), bad], env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 2, res.stderr
        assert res.stderr.startswith("error: command line: key") and res.stderr.count("\n") == 1, res.stderr
        assert "[data]" not in res.stdout
    assert not list(tmp_path.iterdir())  # nothing was created


def test_a_model_may_set_its_own_number_of_negatives():
    from nextdest.train import negatives

    cfg = load_config(None, ["train.sampled_softmax=512", "models.transformer.sampled_softmax=0"])
    assert negatives(cfg, "transformer") == 0  # its own: the full softmax
    assert negatives(cfg, "gru") == 512  # -1: train.sampled_softmax
    with pytest.raises(ConfigError):
        load_config(None, ["models.mlp.sampled_softmax=-2"])


def test_a_model_may_set_its_own_seeds(monkeypatch):
    from nextdest.stages import STAGES
    from nextdest.train import model_seeds

    cfg = load_config(None, ["train.seeds=[4]", "models.gru.seeds=[0,1,2]", "cv.train_folds=[0,1,2]",
                             "train.workers=0", "train.num_threads=0", "device=cpu"])
    assert model_seeds(cfg, "gru") == (0, 1, 2)  # its own
    assert model_seeds(cfg, "mlp") == (4,)  # []: train.seeds
    assert model_seeds(load_config(None), "gru") == (0,)  # base.yaml: every model follows train.seeds
    # The stage key's thread plan counts the model's own jobs: on 2 cores, 3 folds x 3 seeds = 9 jobs
    # run 8 single-threaded, then the ninth on both cores; 3 folds x 1 seed: two 1-thread, one 2-thread.
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert STAGES["gru"].runtime(cfg) == {"torch_threads": [1] * 8 + [2], "predict_threads": 2}
    assert STAGES["mlp"].runtime(cfg) == {"torch_threads": [1, 1, 2], "predict_threads": 2}
    with pytest.raises(ConfigError, match="models.mlp.seeds"):
        load_config(None, ["models.mlp.seeds=[-1]"])
