"""Least squares by the normal equations, solved with Gaussian elimination."""

from __future__ import annotations


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        if abs(m[col][col]) < 1e-12:
            raise ValueError("features are linearly dependent")
        for r in range(n):
            if r != col:
                factor = m[r][col] / m[col][col]
                m[r] = [v - factor * p for v, p in zip(m[r], m[col], strict=True)]
    return [m[i][n] / m[i][i] for i in range(n)]


def fit(x: list[list[float]], y: list[float]) -> list[float]:
    """Weights (intercept first) minimising the squared error."""
    rows = [[1.0, *row] for row in x]
    k = len(rows[0])
    xtx = [[sum(r[i] * r[j] for r in rows) for j in range(k)] for i in range(k)]
    xty = [sum(r[i] * t for r, t in zip(rows, y, strict=True)) for i in range(k)]
    return _solve(xtx, xty)


def predict(row: list[float], weights: list[float]) -> float:
    return weights[0] + sum(w * v for w, v in zip(weights[1:], row, strict=True))


def r_squared(x: list[list[float]], y: list[float], weights: list[float]) -> float:
    mean = sum(y) / len(y)
    total = sum((t - mean) ** 2 for t in y)
    residual = sum((t - predict(row, weights)) ** 2 for row, t in zip(x, y, strict=True))
    return 1.0 - residual / total if total else 1.0
