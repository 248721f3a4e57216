"""The data stage: produce the official three files (synthetic generator or the user's copies),
validate them against the official contract, store them typed as parquet."""

from __future__ import annotations

import shutil

from .. import artifacts
from .official import DataError, load_official, official_paths, public_release_check


def run_data_stage(ctx) -> None:
    cfg = ctx.cfg
    if cfg.data.source == "synthetic":
        from .synthetic import generate

        raw = ctx.out / "raw"
        raw.mkdir()
        info = generate(cfg.data.preset, cfg.seed, raw)
        ctx.log(f"synthetic preset '{cfg.data.preset}' (seed {cfg.seed}) written to raw/")
        paths = {"train": raw / "train_set.csv", "test": raw / "test_set.csv", "truth": raw / "ground_truth.csv"}
        # The oracle (the generator's own distribution of each concealed city) sits beside the data.
        for name in artifacts.GENERATOR_FILES:
            if (raw / name).exists():
                shutil.move(raw / name, ctx.out / name)
        if info.get("ceiling_expected") is not None:
            ctx.log(f"generator ceiling (expected acc@4 of its own distribution): {info['ceiling_expected']:.4f}")
    else:
        paths = official_paths(cfg)
        for key in ("train", "test"):
            if not paths[key].exists():
                raise DataError(
                    f"data.source is official but {paths[key]} does not exist: put the official "
                    f"train_set.csv and test_set.csv in {paths[key].parent} (data.official_dir)"
                )
        if not paths["truth"].exists():
            ctx.log(f"no {paths['truth'].name} in {paths['truth'].parent}: test scores will be n/a")
    train, test, truth, report = load_official(
        paths["train"], paths["test"], paths["truth"] if paths["truth"].exists() else None, cfg.data.duplicates
    )
    checksums = None
    if cfg.data.source == "official":  # the user's copies: are they the public release's files?
        checksums = public_release_check([p for p in paths.values() if p.exists()], report)
    artifacts.write_reservations(ctx.out, "train", train)
    artifacts.write_reservations(ctx.out, "test", test)
    if truth is not None:
        artifacts.write_truth(ctx.out, truth)
    summary = {
        "source": cfg.data.source,
        "preset": cfg.data.preset if cfg.data.source == "synthetic" else None,
        "train_rows": train.height,
        "train_trips": train["utrip_id"].n_unique(),
        "test_rows": test.height,
        "test_trips": test["utrip_id"].n_unique(),
        "truth_rows": None if truth is None else truth.height,
        "checksums": checksums,
        **report.as_dict(),
    }
    artifacts.write_data_report(ctx.out, summary)
    ctx.log(
        f"train {summary['train_rows']:,} rows / {summary['train_trips']:,} trips; "
        f"test {summary['test_rows']:,} rows / {summary['test_trips']:,} trips; "
        f"ground truth: {'yes' if truth is not None else 'no'}"
    )
    for note in report.notes:
        ctx.log(note)

