import dataclasses

import pytest
import yaml

from nextdest.config import BASE_CONFIG, Config, ConfigError, load_config, to_dict


def test_base_yaml_lists_exactly_the_dataclass_keys():
    data = yaml.safe_load(BASE_CONFIG.read_text())
    expected = to_dict(Config())
    expected.pop("experiment")

    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict):
                out |= keys(v, prefix + k + ".")
        return out

    assert keys(data) == keys(expected)
    # and base.yaml's values are the dataclass defaults
    assert to_dict(load_config(BASE_CONFIG)) == {**expected, "experiment": "base"}


def test_layering_overrides_and_experiment_name(tmp_path):
    exp = tmp_path / "myexp.yaml"
    exp.write_text("train:\n  epochs: 7\ncv:\n  train_folds: [0, 2]\n")
    cfg = load_config(exp, ["train.lr=1e-3", "models.gru.hidden=64", "data.preset=tiny"])
    assert cfg.experiment == "myexp"
    assert cfg.train.epochs == 7 and cfg.train.lr == 0.001
    assert cfg.cv.train_folds == (0, 2)
    assert cfg.models.gru.hidden == 64 and cfg.models.transformer.emb_dim == Config().models.transformer.emb_dim  # untouched default
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


def test_experiment_configs_load():
    from nextdest.config import CONFIG_DIR

    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        cfg = load_config(path)
        assert cfg.experiment == path.stem
