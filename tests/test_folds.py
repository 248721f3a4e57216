import polars as pl

from nextdest.folds import assign_folds


def test_folds_are_grouped_balanced_and_deterministic():
    train = pl.Series([f"t{i}" for i in range(103)])
    test = pl.Series([f"s{i}" for i in range(41)])
    a = assign_folds(train, test, 5, seed=3)
    b = assign_folds(train.shuffle(seed=1), test, 5, seed=3)
    assert a.equals(b)  # independent of input order
    assert a.height == 144 and a["utrip_id"].n_unique() == 144  # one fold per trip
    sizes = a.filter(~pl.col("is_test")).group_by("fold").len()["len"]
    assert sizes.max() - sizes.min() <= 1
    sizes = a.filter(pl.col("is_test")).group_by("fold").len()["len"]
    assert sizes.max() - sizes.min() <= 1
    assert not a.equals(assign_folds(train, test, 5, seed=4))
