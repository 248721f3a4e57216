"""Next-city recommendations for one partial trip, from trained model files.

``recommend(model_path, trip_csv, k)`` reads a trip in the official row format (the columns of
``train_set.csv``), builds the features of the stay to predict with the features stage's own code,
and returns the ``k`` most likely cities with their probabilities (softmax averaged over the
models).

* The stay to predict is the trip's row with ``city_id`` 0 (it must be the last by check-in, as in
  ``test_set.csv``). Without such a row the next stay after the last row is predicted, with the last
  row's context (same booker, device, affiliate; check-in at the last check-out, same nights).
* ``model_path`` is a model stage folder (``artifacts/<exp>/<model>``: every ``fold*/model*.pt`` in it,
  averaged) or one ``model.pt``. Model files carry the vocabulary they were trained with, so no
  other artifact is needed.
* A known row whose city the models never saw raises a ValueError naming the city and the line.
* Every input problem (an empty or header-only file, rows of several trips, a file that is not a
  model, ``k`` < 1) is a DataError / ValueError with a one-line message; ``python -m nextdest
  recommend`` prints it and exits 2.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import torch

from .artifacts import model_files as stage_model_files
from .models import Dims
from .nn_data import encode
from .schema import FOLDS, OFFICIAL_COLUMNS, RARE, conform
from .train import load_model_file, predict_topk


def model_files(model_path: Path) -> list[Path]:
    """The model files behind ``model_path`` (a stage folder or a file)."""
    model_path = Path(model_path)
    if model_path.is_file():
        return [model_path]
    if model_path.is_dir():
        files = stage_model_files(model_path)
        if files:
            return files
        raise FileNotFoundError(f"{model_path}: no model files (fold*/model*.pt or model*.pt) in this folder")
    raise FileNotFoundError(f"{model_path}: no such model file or folder")


def _with_next_stay(raw: pl.DataFrame) -> pl.DataFrame:
    """Append the stay to predict after the last row: city 0, the last row's context."""
    dates = raw.with_columns(
        pl.col(c).str.strip_chars().str.to_date("%Y-%m-%d", strict=False).alias(f"_{c}") for c in ("checkin", "checkout")
    ).with_row_index("_i")
    last = dates.sort(["_checkin", "_i"], nulls_last=False).tail(1)
    nxt = last.with_columns(
        pl.lit("0").alias("city_id"),
        pl.lit("").alias("hotel_country"),
        pl.col("_checkout").alias("_in"),
        (pl.col("_checkout") + pl.max_horizontal(pl.col("_checkout") - pl.col("_checkin"), pl.duration(days=1))).alias("_out"),
    )
    if nxt["_in"][0] is not None and nxt["_out"][0] is not None:  # bad dates are reported by validation below
        nxt = nxt.with_columns(pl.col("_in").dt.strftime("%Y-%m-%d").alias("checkin"),
                               pl.col("_out").dt.strftime("%Y-%m-%d").alias("checkout"))
    return pl.concat([raw, nxt.select(raw.columns)])


def read_trip(trip_csv: Path) -> pl.DataFrame:
    """Read and validate one partial trip (RESERVATIONS schema, ending with the row to predict)."""
    from .data.official import CHALLENGE_TEST_COLUMNS, DataError, check_header, read_csv_text, read_reservations

    trip_csv = Path(trip_csv)
    fname = trip_csv.name
    raw = read_csv_text(trip_csv)
    check_header(list(raw.columns), OFFICIAL_COLUMNS, fname, CHALLENGE_TEST_COLUMNS)
    if raw.height == 0:
        raise DataError(f"{fname}: the file has a header but no rows: give the reservations of one trip, one per line")
    ids = raw["utrip_id"].str.strip_chars().unique(maintain_order=True).to_list()
    if len(ids) > 1:
        shown = ", ".join(repr(t) for t in ids[:3]) + (", ..." if len(ids) > 3 else "")
        raise DataError(f"{fname}: column 'utrip_id': the file holds the rows of {len(ids)} trips ({shown}); "
                        f"recommend takes exactly one trip per file")
    concealed = raw["city_id"].str.strip_chars().str.replace(r"\.0+$", "") == "0"
    if concealed.any():
        trip = read_reservations(trip_csv, "test")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / trip_csv.name
            _with_next_stay(raw.select([c for c in OFFICIAL_COLUMNS if c in raw.columns])).write_csv(path)
            trip = read_reservations(path, "test")
    trips = trip["utrip_id"].unique().sort().to_list()
    if len(trips) != 1:
        raise ValueError(f"{trip_csv.name}: expected the rows of one trip, found {len(trips)} utrip_ids: {trips[:5]}")
    return trip


def _lut(local: list, model_index: dict, unknown: int) -> np.ndarray:
    """Local index -> model index through the values (pad 0 and rare 1 map to themselves)."""
    lut = np.full(max(len(local), 2), unknown, dtype=np.int64)
    lut[:2] = [0, 1]
    for i, v in enumerate(local):
        if i >= 2 and v is not None:
            lut[i] = model_index.get(v, unknown)
    return lut


def trip_features(trip: pl.DataFrame, vocab: dict, n_lags: int) -> pl.DataFrame:
    """The FEATURES row of the stay to predict, in the model's vocabulary.

    The trip goes through the features stage's public :func:`nextdest.features.build_features` as
    the only test trip (so every feature is computed by the pipeline's own code, with its own
    small vocabulary), then each index column is mapped to the model's index of the same value.
    """
    from .config import FeaturesConfig
    from .features import build_features

    vj = vocab["vocab_json"]
    if vj is None:
        raise ValueError("the model file carries no vocabulary (vocab.json); retrain it with this version of nextdest")
    model_city = {int(c): i for i, c in enumerate(vocab["city_id"].tolist()) if c > 0}
    unknown = trip.filter((pl.col("city_id") != 0) & ~pl.col("city_id").is_in(list(model_city)))
    if unknown.height:
        r = unknown.row(0, named=True)
        more = f" ({unknown.height} rows with unseen cities)" if unknown.height > 1 else ""
        raise ValueError(
            f"line {r['row']}: city_id {r['city_id']} was never seen in training, so the model has no "
            f"embedding for it; remove the row or use a model trained on data that contains it{more}"
        )
    folds = conform(pl.DataFrame({"utrip_id": trip["utrip_id"].unique(), "fold": 0, "is_test": True}), FOLDS, "folds")
    fcfg = FeaturesConfig(engine="cpu", n_lags=n_lags, rare_city_min_count=1, rare_affiliate_min_count=1, reverse_augment=False)
    feats, cities, local = build_features(trip.clear(), trip, folds, fcfg)
    local_city = [None] * (int(cities["city_idx"].max() or 0) + 1)
    for idx, cid in cities.select("city_idx", "city_id").iter_rows():
        local_city[idx] = cid
    index = {kind: {v: i for i, v in enumerate(vj[kind]) if v is not None} for kind in ("countries", "bookers", "devices", "affiliates")}
    luts = {
        "city": _lut(local_city, model_city, 0),
        "country": _lut(local["countries"], index["countries"], 0),
        "booker_idx": _lut(local["bookers"], index["bookers"], 0),
        "device_idx": _lut(local["devices"], index["devices"], 0),
        "affiliate_idx": _lut(local["affiliates"], index["affiliates"], RARE),
    }
    columns = {c: luts["city"] for c in feats.columns if c == "city_idx" or c == "first_city" or c.startswith("city_lag")}
    columns |= {c: luts["country"] for c in feats.columns if c in ("country_idx", "first_country") or c.startswith("country_lag")}
    columns |= {c: luts[c] for c in ("booker_idx", "device_idx", "affiliate_idx")}
    row = feats.filter(pl.col("is_concealed"))
    return row.with_columns(
        pl.Series(c, lut[row[c].to_numpy()], dtype=row.schema[c]) for c, lut in columns.items()
    )


def load_models(files: list[Path]) -> list[tuple[torch.nn.Module, dict]]:
    """Load model files; a file that is not a nextdest model is a one-line ValueError naming it."""
    loaded = []
    for f in files:
        try:
            loaded.append(load_model_file(f))
        except Exception as exc:  # torch: UnpicklingError, RuntimeError (not a zip), EOFError...
            msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(msg if msg.startswith(str(f)) else f"{f}: not a nextdest model file ({msg[:160]})") from None
    return loaded


def recommend(model_path: Path, trip_csv: Path, k: int = 4) -> list[tuple[int, float]]:
    """The ``k`` most likely next cities of the trip in ``trip_csv``: [(city_id, probability)], best first."""
    if k < 1:
        raise ValueError(f"k = {k}: the number of cities to list must be at least 1")
    loaded = load_models(model_files(Path(model_path)))
    models = [m for m, _ in loaded]
    meta = loaded[0][1]
    vocab = meta["vocab"]
    for f, (_, other) in zip(model_files(Path(model_path)), loaded):
        if not torch.equal(other["vocab"]["city_id"], vocab["city_id"]):
            raise ValueError(f"{f}: trained on another city vocabulary than the other model files")
    dims = Dims(**meta["dims"])
    n_lags = int(meta["config"]["features"]["n_lags"])  # the lags the training features were built with
    feats = trip_features(read_trip(Path(trip_csv)), vocab, n_lags)
    x = encode(feats, vocab["input_idx"].numpy(), dims, models[0].extra_inputs)
    idx, prob = predict_topk(models, x, k, "cpu")
    city_id = vocab["city_id"].numpy()
    return [(int(city_id[i]), float(p)) for i, p in zip(idx[0], prob[0])]
