"""What the trees' own explanations cost a forecast: Forecaster.predict with the trees serving
every horizon, explained by their path credits (node means stored) vs by ElasticNet's (the same
trees without node means, as bundles saved before them), in one process on the same rows.

Usage: python bench/bench_explanations.py [--hexagons 4000] [--repeats 5]
Trains a small Forecaster on synthetic data, then times predict() on the last 2 days of a
`--hexagons`-cell synthetic city (one forecast per hexagon and horizon). Prints the median of
`--repeats` runs for each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hexagons", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from pulsar_core.data.synthetic import generate_snapshots
    from pulsar_core.settings import TrainSettings
    from pulsar_core.training import train_forecaster

    small = generate_snapshots(n_hexagons=60, service_types=(1,), days=2, mode="continuous")
    forecaster, _ = train_forecaster(small, TrainSettings(cnn_epochs=2, cnn_channels=16,
                                                          holdout_days=0.5, cnn_seeds=1))
    assert forecaster.hgb is not None
    fitted = [h for h, fit in zip(forecaster.spec.horizons, forecaster.hgb.fits, strict=True)
              if fit is not None]
    forecaster.served = {h: "hgb" for h in fitted}
    city = generate_snapshots(n_hexagons=args.hexagons, service_types=(1,), days=2,
                              mode="continuous", seed=11)
    explained_by_trees = list(forecaster.hgb.fits)
    without_means = [None if fit is None else replace(fit, mean=None)
                     for fit in explained_by_trees]
    seconds: dict[str, float] = {}
    for label, fits in (("ElasticNet's drivers", without_means),
                        ("the trees' own drivers", explained_by_trees)):
        forecaster.hgb.fits = fits
        runs = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            result = forecaster.predict(city)
            runs.append(time.perf_counter() - started)
        seconds[label] = statistics.median(runs)
        print(f"{label}: {seconds[label] * 1000:.0f} ms for {len(result.frame)} forecasts "
              f"({len(fitted)} horizon(s) served by the trees); e.g. "
              f"{result.frame['explanation'].iloc[0]!r}")
    ratio = seconds["the trees' own drivers"] / seconds["ElasticNet's drivers"]
    print(f"trees' explanations / ElasticNet's: {ratio:.2f}x the predict time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
