"""Arithmetic in GF(p), p = 2^127 - 1: Shamir sharing and the detection of real shares.

Detection follows the idea of Apple's detectable hash function: every real voucher carries a
vector that lies in a secret (t-1)-dimensional subspace of GF(p)^D (v = M * (1, x, ..., x^(t-2))
for a secret D x (t-1) matrix M), while a synthetic voucher carries a uniformly random vector.
Below t real vectors, any set of vectors is distributed exactly like uniform ones; from t real
vectors on, the real ones become linearly dependent and the support of the left kernel names
them. This works while (t - 1) + synthetics < D, which the client guarantees by its synthetic cap.
"""

from __future__ import annotations

from collections.abc import Sequence

P = (1 << 127) - 1
ELEM_BYTES = 16


def to_bytes(a: int) -> bytes:
    return a.to_bytes(ELEM_BYTES, "big")


def from_bytes(b: bytes) -> int:
    v = int.from_bytes(b, "big")
    if v >= P:
        raise ValueError("field element out of range")
    return v


def from_hash(b: bytes) -> int:
    """Reduce >= 24 uniformly random bytes to a (nearly uniform) field element."""
    return int.from_bytes(b, "big") % P


def inv(a: int) -> int:
    if a % P == 0:
        raise ZeroDivisionError("inverse of 0")
    return pow(a, P - 2, P)


def poly_eval(coeffs: Sequence[int], x: int) -> int:
    """coeffs[0] + coeffs[1] x + ... (Horner)."""
    acc = 0
    for c in reversed(coeffs):
        acc = (acc * x + c) % P
    return acc


def interpolate_at_zero(points: Sequence[tuple[int, int]]) -> int:
    """Lagrange interpolation of f(0) from distinct (x, f(x))."""
    xs = [x for x, _ in points]
    if len(set(xs)) != len(xs):
        raise ValueError("duplicate x")
    total = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * (-xj) % P
                den = den * (xi - xj) % P
        total = (total + yi * num * inv(den)) % P
    return total


def interpolate_eval(points: Sequence[tuple[int, int]], x: int) -> int:
    """Evaluate at x the unique polynomial of degree < len(points) through the points."""
    total = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if j != i:
                num = num * (x - xj) % P
                den = den * (xi - xj) % P
        total = (total + yi * num * inv(den)) % P
    return total


def dhf_vector(matrix: Sequence[Sequence[int]], x: int) -> list[int]:
    """M * (1, x, x^2, ...): a point of the secret subspace spanned by M's columns."""
    width = len(matrix[0])
    powers = [1] * width
    for i in range(1, width):
        powers[i] = powers[i - 1] * x % P
    return [sum(r * p for r, p in zip(row, powers, strict=True)) % P for row in matrix]


def dependent_rows(vectors: Sequence[Sequence[int]]) -> set[int]:
    """Indices of rows lying in the span of the other rows (support of the left kernel).

    Row reduction of [V | I]: each row whose V part becomes zero gives a kernel vector in its
    I part; the union of their supports is returned."""
    m = len(vectors)
    if m == 0:
        return set()
    d = len(vectors[0])
    rows = [list(v) + [1 if j == i else 0 for j in range(m)] for i, v in enumerate(vectors)]
    r = 0
    for col in range(d):
        piv = next((i for i in range(r, m) if rows[i][col]), None)
        if piv is None:
            continue
        rows[r], rows[piv] = rows[piv], rows[r]
        iv = inv(rows[r][col])
        rows[r] = [a * iv % P for a in rows[r]]
        for i in range(m):
            if i != r and rows[i][col]:
                f = rows[i][col]
                rows[i] = [(a - f * b) % P for a, b in zip(rows[i], rows[r], strict=True)]
        r += 1
        if r == m:
            break
    support: set[int] = set()
    for i in range(r, m):
        support.update(j for j in range(m) if rows[i][d + j])
    return support
