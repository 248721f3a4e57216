"""The feature table as tensors for the neural models, and the fold rule applied to it.

One example per feature-table row (the row-as-example design): the inputs are the row's history
(first city and the ``n_lags`` previous cities with their countries) and the row's own context
(known at prediction time: dates, nights, gap, trip length, position, booker, device, affiliate);
the target is the row's city (``city_idx``, full vocabulary). Input cities go through
``cities.parquet``'s ``input_idx`` (rare cities -> 1); targets keep their own index.

Which rows train, validate and get predicted is decided only by :mod:`nextdest.folds`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from .artifacts import read_cities, read_features
from .folds import target_mask, test_mask, valid_mask
from .models.batch import Batch, Dims

# The target row's context: (column, low, high). Values are clipped to [low, high] and shifted to
# start at 0, so each field is a small categorical; high=None means "the data's largest index"
# (booker, device, affiliate: their vocabularies), fixed when the model is built.
CTX_FIELDS: tuple[tuple[str, int, int | None], ...] = (
    ("checkin_month", 0, 12),
    ("checkin_weekday", 0, 6),
    ("checkout_weekday", 0, 6),
    ("weekend", 0, 1),
    ("season", 0, 3),
    ("nights", 0, 30),
    ("gap_days", -1, 30),
    ("span_so_far", 0, 60),
    ("span_total", 0, 60),
    ("n_trip", 0, 30),
    ("pos", 0, 30),
    ("steps_left", 0, 30),
    ("booker_idx", 0, None),
    ("device_idx", 0, None),
    ("affiliate_idx", 0, None),
)


def ctx_sizes(feat: pl.DataFrame) -> tuple[int, ...]:
    """Cardinality of every context field (vocabulary fields: the table's max index + 1)."""
    sizes = []
    for col, lo, hi in CTX_FIELDS:
        if hi is None:
            hi = int(feat[col].max() or 0)
        sizes.append(hi - lo + 1)
    return tuple(sizes)


def dims_for(feat: pl.DataFrame, cities: pl.DataFrame, n_lags: int) -> Dims:
    """The data sizes a model is built with."""
    country_cols = ["first_country", "country_idx"] + [f"country_lag{k}" for k in range(1, n_lags + 1)]
    n_countries = max(int(feat.select(pl.max_horizontal(pl.col(c).max() for c in country_cols)).item() or 0),
                      int(cities["country_idx"].max() or 0)) + 1
    n_cities = int(cities["city_idx"].max()) + 1
    return Dims(n_cities=n_cities, n_countries=n_countries, seq_len=1 + n_lags, ctx_sizes=ctx_sizes(feat))


def input_map(cities: pl.DataFrame, n_cities: int) -> np.ndarray:
    """city_idx -> input_idx lookup (index 0 stays 0; unknown indices -> rare)."""
    lut = np.ones(n_cities, dtype=np.int64)
    lut[0] = 0
    lut[cities["city_idx"].to_numpy()] = cities["input_idx"].to_numpy()
    return lut


def encode(feat: pl.DataFrame, lut: np.ndarray, dims: Dims, extra_inputs: tuple[str, ...] = ()) -> Batch:
    """Turn feature rows (FEATURES columns) into a model :class:`Batch`.

    ``lut`` maps target indices to input indices; context values outside the model's vocabulary
    (a booker/device/affiliate index the model has not seen) become 0, the unknown index.
    ``extra_inputs``: feature columns passed as they are (int64, nulls 0) in ``batch.extra``.
    """
    n_lags = dims.seq_len - 1
    lags = [f"city_lag{k}" for k in range(n_lags, 0, -1)]
    clags = [f"country_lag{k}" for k in range(n_lags, 0, -1)]
    city_cols = feat.select(["first_city", *lags]).to_numpy().astype(np.int64)  # (N, L) target space
    city_cols = np.clip(city_cols, 0, len(lut) - 1)
    cities = lut[city_cols]
    countries = feat.select(["first_country", *clags]).to_numpy().astype(np.int64)
    countries[(countries < 0) | (countries >= dims.n_countries)] = 0
    ctx = np.empty((feat.height, len(CTX_FIELDS)), dtype=np.int64)
    for j, ((col, lo, hi), size) in enumerate(zip(CTX_FIELDS, dims.ctx_sizes)):
        v = feat[col].cast(pl.Int64).fill_null(0).to_numpy()
        if hi is None:  # a vocabulary: an index the model was not built with is unknown (0)
            ctx[:, j] = np.where((v < 0) | (v >= size), 0, v)
        else:  # a bucketed quantity: clip into range
            ctx[:, j] = np.clip(v, lo, lo + size - 1) - lo
    target = feat["city_idx"].cast(pl.Int64).to_numpy()
    extra = {c: torch.from_numpy(feat[c].cast(pl.Int64).fill_null(0).to_numpy().copy()) for c in extra_inputs}
    return Batch(
        torch.from_numpy(cities), torch.from_numpy(countries), torch.from_numpy(ctx), torch.from_numpy(target.copy()), extra
    )


@dataclass
class NNData:
    """Everything a model stage needs, loaded once: the encoded table and the index of each row set."""

    feat: pl.DataFrame  # the columns the split and the outputs need (utrip_id, fold, flags...)
    batch: Batch  # every row
    dims: Dims
    city_ids: np.ndarray  # city_idx -> raw city_id (0 for pad/rare)
    input_lut: np.ndarray  # city_idx -> input_idx
    city_country: np.ndarray  # city_idx -> country_idx (the output head's country part)

    def rows(self, mask: pl.Expr) -> np.ndarray:
        """Row numbers where ``mask`` holds."""
        return np.flatnonzero(self.feat.select(mask.fill_null(False)).to_series().to_numpy())

    def train_rows(self, fold: int | None, max_rows: int = 0, seed: int = 0) -> np.ndarray:
        idx = self.rows(target_mask(fold))
        if 0 < max_rows < len(idx):
            idx = np.sort(np.random.default_rng(seed).choice(idx, max_rows, replace=False))
        return idx

    def valid_rows(self, fold: int) -> np.ndarray:
        return self.rows(valid_mask(fold))

    def test_rows(self) -> np.ndarray:
        return self.rows(test_mask())

    def utrips(self, idx: np.ndarray) -> np.ndarray:
        return self.feat["utrip_id"].to_numpy()[idx]


def load(features_dir: Path, extra_inputs: tuple[str, ...] = ()) -> NNData:
    """Read ``features.parquet`` and ``cities.parquet`` from a features stage folder; the batch
    carries the feature columns ``extra_inputs`` besides the standard tensors."""
    feat = read_features(features_dir)
    cities = read_cities(features_dir)
    n_lags = sum(1 for c in feat.columns if c.startswith("city_lag"))
    dims = dims_for(feat, cities, n_lags)
    lut = input_map(cities, dims.n_cities)
    city_ids = np.zeros(dims.n_cities, dtype=np.int64)
    city_ids[cities["city_idx"].to_numpy()] = cities["city_id"].to_numpy()
    city_country = np.zeros(dims.n_cities, dtype=np.int64)
    city_country[cities["city_idx"].to_numpy()] = cities["country_idx"].to_numpy()
    batch = encode(feat, lut, dims, tuple(extra_inputs))
    keep = ["utrip_id", "fold", "is_test", "is_concealed", "is_last", "is_reversed", "pos", "city_id"]
    return NNData(feat.select(keep), batch, dims, city_ids, lut, city_country)
