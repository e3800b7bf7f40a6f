"""Fit house prices to their features by least squares and write the model and a report.

Standard library only, so the image needs nothing but Python.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from utils import fit, r_squared


def load(path: Path) -> tuple[list[str], list[list[float]], list[float]]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    features = [name for name in rows[0] if name != "MEDV"]
    x = [[float(row[name]) for name in features] for row in rows]
    y = [float(row["MEDV"]) for row in rows]
    return features, x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    for data in sorted(args.input.glob("*.csv")):
        features, x, y = load(data)
        weights = fit(x, y)
        report = {
            "features": features,
            "weights": weights,
            "r2": r_squared(x, y, weights),
        }
        out = args.output / f"{data.stem}_model.json"
        out.write_text(json.dumps(report, indent=2))
        print(f"{data.name}: r2={report['r2']:.3f} -> {out}")


if __name__ == "__main__":
    main()
