"""The corpus table: for every kernel its arguments, grid, workgroup size and a numpy reference.

One `Case` per kernel, in `CASES`. A runner (the emulator tests, `kfdtrace selftest`) does, for each case:

    values = case.inputs()                        # seeded: the same arrays on every run
    args = case.arguments(values)                 # in kernel order: arrays, numpy scalars, Local(nbytes)
    ... copy the arrays to buffers, dispatch case.kernel over case.grid / case.block, read the buffers back ...
    case.verify(values, outputs)                  # outputs: output name -> array; raises CaseMismatch

`sized(kernel, ...)` gives the benchmarked kernels (vector_add, memcpy_uint4, gemm_tiled) at another problem size.

`grid` counts work-items per dimension (as AQL's grid_size does); where it is not a multiple of `block` the last
workgroup of that dimension is partial (`Case.partial`), and the kernel handles it (bounds checks,
get_local_size). Kernels whose LDS tiles need every work-item of a group (a reqd_work_group_size, tree
reductions) get grids rounded up to whole groups and guard the tail themselves. Vector element types (uchar4,
float4, uint4) are numpy arrays whose last axis is the vector.

Results that depend on the order in which work-items reach an atomic (exchanges, claims, tickets) are checked
by a `check` function on the properties that hold in every order; everything else is compared with the
`reference` outputs, exactly for integers and correctly rounded float operations, within `tolerance` elsewhere.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

__all__ = ["CASES", "Buffer", "Case", "CaseMismatch", "Local", "Scalar", "case", "sized"]

Init = Callable[[np.random.Generator, tuple[int, ...], np.dtype], np.ndarray]
Values = dict[str, Any]

# OpenCL C scalar type names of the numpy dtypes the corpus uses (metadata .type_name spells them so)
CTYPES = {"int8": "char", "uint8": "uchar", "int16": "short", "uint16": "ushort", "int32": "int", "uint32": "uint",
          "int64": "long", "uint64": "ulong", "float16": "half", "float32": "float", "float64": "double"}


class CaseMismatch(AssertionError):
    """A kernel's outputs disagree with its reference."""


# -- how buffers are filled --------------------------------------------------------------------------------
def zeros(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return np.zeros(shape, dtype)


def full(value: int | float) -> Init:
    return lambda rng, shape, dtype: np.full(shape, value, dtype)


def ints(lo: int, hi: int) -> Init:
    """Uniform integers in [lo, hi)."""
    return lambda rng, shape, dtype: rng.integers(lo, hi, shape, dtype=np.int64).astype(dtype)


def floats(lo: float, hi: float) -> Init:
    """Uniform floats in [lo, hi), drawn in float64 and rounded to the dtype."""
    return lambda rng, shape, dtype: rng.uniform(lo, hi, shape).astype(dtype)


def quarters(lo: int, hi: int) -> Init:
    """Multiples of 0.25 in [lo, hi): sums of a few thousand of them are exact in float32 in any order."""
    return lambda rng, shape, dtype: (rng.integers(4 * lo, 4 * hi, shape) / 4).astype(dtype)


def nonzero_ints(lo: int, hi: int) -> Init:
    """Uniform integers in [lo, hi) other than 0 (divisors)."""
    def init(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        v = rng.integers(lo, hi, shape, dtype=np.int64)
        return np.where(v == 0, 1, v).astype(dtype)
    return init


def given(*values: float) -> Init:
    """These values, in order (the buffer's size)."""
    return lambda rng, shape, dtype: np.array(values, dtype).reshape(shape)


# -- arguments ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Buffer:
    """A __global pointer argument: a buffer of `shape` elements of `dtype` (`vector` = the OpenCL vector width,
    the last axis of `shape`). Outputs are read back and compared; `init` fills inputs and outputs alike."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    init: Init = zeros
    output: bool = False
    vector: int = 1

    @property
    def ctype(self) -> str:
        """The OpenCL C element type, e.g. `float`, `uchar4`."""
        return CTYPES[self.dtype] + (str(self.vector) if self.vector > 1 else "")

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class Scalar:
    """A by-value argument."""

    name: str
    dtype: str
    value: int | float

    @property
    def ctype(self) -> str:
        return CTYPES[self.dtype]


@dataclass(frozen=True)
class Local:
    """A dynamic __local pointer argument: `nbytes` of LDS for each workgroup."""

    name: str
    nbytes: int


Arg = Buffer | Scalar | Local


def In(name: str, dtype: str, shape: tuple[int, ...], init: Init = zeros, vector: int = 1) -> Buffer:
    return Buffer(name, dtype, shape, init, False, vector)


def Out(name: str, dtype: str, shape: tuple[int, ...], init: Init = zeros, vector: int = 1) -> Buffer:
    return Buffer(name, dtype, shape, init, True, vector)


# -- the case ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One kernel of the corpus and how to run and check it."""

    kernel: str
    source: str  # the .cl file (stem) that defines it
    args: tuple[Arg, ...]
    grid: tuple[int, ...]  # work-items per dimension
    block: tuple[int, ...]  # workgroup size per dimension
    reference: Callable[[Values], dict[str, np.ndarray]]  # inputs -> expected outputs (a subset may be checked)
    check: Callable[[Values, Mapping[str, np.ndarray]], None] | None = None  # order-independent properties
    tolerance: dict[str, tuple[float, float]] = field(default_factory=dict)  # output -> (rtol, atol)

    @property
    def outputs(self) -> tuple[Buffer, ...]:
        return tuple(a for a in self.args if isinstance(a, Buffer) and a.output)

    @property
    def partial(self) -> bool:
        """True if the last workgroup of some dimension is partial."""
        return any(g % b for g, b in zip(self.grid, self.block, strict=True))

    def inputs(self, seed: int = 0) -> Values:
        """Every argument's value: buffers as fresh arrays (outputs with their initial contents), scalars as
        numpy scalars, dynamic locals as their byte count. Each case draws from its own seeded generator."""
        rng = np.random.default_rng([seed, zlib.crc32(self.kernel.encode())])
        values: Values = {}
        for a in self.args:
            if isinstance(a, Buffer):
                values[a.name] = np.ascontiguousarray(a.init(rng, a.shape, np.dtype(a.dtype)))
            elif isinstance(a, Scalar):
                values[a.name] = np.dtype(a.dtype).type(a.value)
            else:
                values[a.name] = a.nbytes
        return values

    def arguments(self, values: Values) -> list[Any]:
        """The kernel's arguments in order: arrays, numpy scalars, and `Local` for dynamic LDS."""
        return [a if isinstance(a, Local) else values[a.name] for a in self.args]

    def expected(self, values: Values) -> dict[str, np.ndarray]:
        """The reference outputs for `values` (which are not changed)."""
        return self.reference({k: v.copy() if isinstance(v, np.ndarray) else v for k, v in values.items()})

    def verify(self, values: Values, outputs: Mapping[str, np.ndarray]) -> None:
        """Raise CaseMismatch, naming the kernel, output and first bad element, unless `outputs` (what the
        kernel left in its output buffers, started from `values`) agree with the reference and the checks."""
        for name, want in self.expected(values).items():
            if name not in outputs:
                raise CaseMismatch(f"{self.kernel}: output {name!r} missing")
            got = np.asarray(outputs[name])
            if got.shape != want.shape or got.dtype != want.dtype:
                raise CaseMismatch(f"{self.kernel}: {name} is {got.dtype}{list(got.shape)}, "
                                   f"expected {want.dtype}{list(want.shape)}")
            rtol, atol = self.tolerance.get(name, (0.0, 0.0))
            if np.issubdtype(want.dtype, np.floating):
                ok = np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
            else:
                ok = got == want
            if not ok.all():
                bad = np.argwhere(~ok)
                at = tuple(int(i) for i in bad[0])
                raise CaseMismatch(f"{self.kernel}: {name}{list(at)} = {got[at]!r}, expected {want[at]!r} "
                                   f"({len(bad)} of {ok.size} differ, rtol {rtol}, atol {atol})")
        if self.check is not None:
            self.check(values, outputs)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise CaseMismatch(message)


# -- references --------------------------------------------------------------------------------------------
def _popcount(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint32)
    x = x - ((x >> 1) & 0x55555555)
    x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F
    return ((x * np.uint32(0x01010101)) >> 24).astype(np.uint32)


def _clz(x: np.ndarray) -> np.ndarray:
    """Leading zero bits of each uint32 (32 for 0)."""
    length = np.zeros(x.shape, np.uint32)
    for bit in range(32):
        length = np.where((x >> np.uint32(bit)) != 0, np.uint32(bit + 1), length)
    return np.uint32(32) - length


def _bitops(v: Values) -> dict[str, np.ndarray]:
    x, y = v["a"], v["b"]
    s = y & np.uint32(31)
    rot = (x << s) | (x >> ((np.uint32(32) - s) & np.uint32(31)))
    return {"out": (_popcount(x) + _clz(y)) ^ rot ^ (x >> s) ^ ((x & ~y) | (y << np.uint32(3)))}


def _c_div(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """C's quotient (toward zero) and remainder (the sign of the dividend)."""
    q = np.abs(a) // np.abs(b) * np.sign(a) * np.sign(b)
    return q.astype(a.dtype), (a - q * b).astype(a.dtype)


def _divmod(v: Values) -> dict[str, np.ndarray]:
    a, b = v["a"], v["b"]
    q, r = _c_div(a, b)
    ua, ub = a.view(np.uint32), b.view(np.uint32)
    i = np.arange(len(a), dtype=np.int64)
    lq, lr = _c_div(a.astype(np.int64) * 977 + i, b.astype(np.int64) * 31)
    return {"q": q, "r": r, "uq": ua // ub, "ur": ua % ub, "lq": lq, "lr": lr}


def _reverse_local(v: Values) -> dict[str, np.ndarray]:
    return {"out": v["in"].reshape(-1, 64)[:, ::-1].reshape(-1)}


def _collatz(v: Values) -> dict[str, np.ndarray]:
    x = v["start"].astype(np.uint64)
    steps = np.zeros(x.shape, np.uint32)
    while (x != 1).any():
        moving = x != 1
        steps += moving
        x = np.where(moving, np.where(x & 1, 3 * x + 1, x >> 1), x)
    return {"steps": steps}


def _mode(v: Values) -> dict[str, np.ndarray]:
    six = (v["values"] & 63).astype(np.int64)
    counts = np.zeros((six.shape[0], 64), np.int64)
    np.add.at(counts, (np.arange(six.shape[0])[:, None], six), 1)
    return {"out": counts.argmax(axis=1).astype(np.uint32)}  # argmax: the first (smallest) on a tie


def _crc(v: Values) -> dict[str, np.ndarray]:
    return {"crc": np.array([zlib.crc32(row.tobytes()) for row in v["data"]], np.uint32)}


def _grid_info(grid: tuple[int, int, int], block: tuple[int, int, int]) -> Callable[[Values], dict[str, np.ndarray]]:
    def reference(v: Values) -> dict[str, np.ndarray]:
        z, y, x = np.meshgrid(*(np.arange(n) for n in grid[::-1]), indexing="ij")
        out = np.zeros((*grid[::-1], 16), np.uint32)
        for d, gid in enumerate((x, y, z)):
            n, b = grid[d], block[d]
            group = gid // b
            full = n // b
            out[..., d] = gid
            out[..., 3 + d] = gid % b
            out[..., 6 + d] = group
            out[..., 9 + d] = np.where(group < full, b, n % b)
            out[..., 12 + d] = full + (n % b != 0)
        out[..., 15] = len(grid)
        return {"out": out.reshape(-1, 16)}
    return reference


def _bitonic_step(v: Values, k: int, j: int) -> dict[str, np.ndarray]:
    keys = v["keys"]
    i = np.arange(len(keys))
    partner = i ^ j
    lo = partner > i
    a, b = keys[i[lo]], keys[partner[lo]]
    swap = (a > b) == ((i[lo] & k) == 0)
    out = keys.copy()
    out[i[lo][swap]] = b[swap]
    out[partner[lo][swap]] = a[swap]
    return {"keys": out}


def _atomics_global(v: Values, limit: int) -> dict[str, np.ndarray]:
    vals, c = v["values"], v["c"].copy()
    n, total = len(vals), int(vals.astype(np.int64).sum())
    cu, vu = c.view(np.uint32), vals.view(np.uint32)  # the unsigned view of the same counters
    c[0] += total
    c[1] -= total
    c[2] = min(c[2], vals.min())
    c[3] = max(c[3], vals.max())
    cu[4] = min(cu[4], vu.min())
    cu[5] = max(cu[5], vu.max())
    bits = np.bitwise_or.reduce(np.left_shift(np.uint32(1), vu & np.uint32(31)))
    cu[6] &= ~bits
    cu[7] |= bits
    c[8] ^= np.bitwise_xor.reduce(vals)
    c[9] += n
    c[10] -= n
    c[11] = _wrapping(int(c[11]), limit, n)[0]
    c[12] = _wrapping(int(c[12]), limit, n)[1]
    c[13] += np.count_nonzero((vals & 1) == 0)
    c[14] += np.count_nonzero(vals & 1)
    c64 = v["c64"].copy()
    c64[0] += total * 1048576
    c64[1] = max(c64[1], (vals.astype(np.int64) ** 2).max())
    wide = (vu.astype(np.uint64) << np.uint64(32)) | np.arange(n, dtype=np.uint64)
    c64.view(np.uint64)[2] ^= np.bitwise_xor.reduce(wide)
    return {"c": c, "c64": c64}


def _wrapping(start: int, limit: int, times: int) -> tuple[int, int]:
    """The hardware's wrapping inc and dec of `start`, each applied `times` times (any order gives the same)."""
    inc = dec = start
    for _ in range(times):
        inc = 0 if inc >= limit else inc + 1
        dec = limit if dec == 0 or dec > limit else dec - 1
    return inc, dec


def _atomics_local(v: Values, block: int, limit: int) -> dict[str, np.ndarray]:
    vals = v["values"].reshape(-1, block)
    u = vals.view(np.uint32)
    bits = np.bitwise_or.reduce(np.left_shift(np.uint32(1), (vals & 31).astype(np.uint32)), axis=1)
    s = vals.astype(np.int64).sum(axis=1)

    def same(x: int) -> np.ndarray:
        return np.full(len(vals), x)

    out = np.stack([
        s, -s, np.minimum(vals.min(axis=1), 0x7FFFFFFF), np.maximum(vals.max(axis=1), 0),
        np.minimum(u.min(axis=1), 0x7FFFFFFF), u.max(axis=1), (~bits).view(np.int32), bits.view(np.int32),
        np.bitwise_xor.reduce(vals, axis=1), same(block), same(-block), same(block * (block - 1) // 2),
        np.maximum(3 * vals.max(axis=1), -1), same(5), same(block), same(block * (block - 1) // 2),
        same(_wrapping(0, limit, block)[0]), same(_wrapping(3, limit, block)[1]),
    ], axis=1)
    return {"out": out.astype(np.int64).astype(np.int32)}


def _flat_pointers(v: Values, block: int) -> dict[str, np.ndarray]:
    data = v["data"].copy()
    i = np.arange(len(data))
    odd = (i & 1) == 1
    data[~odd] += 7 + i[~odd]
    return {"data": data, "out": (100 * (i % block) + np.where(odd, 7 + i, 0)).astype(np.int32)}


def _check_xchg(v: Values, out: Mapping[str, np.ndarray]) -> None:
    slots0, n = v["slots"], len(v["old"])
    nslots = len(slots0)
    taken = np.concatenate([out["old"], out["slots"]])
    given = np.concatenate([slots0, np.arange(1, n + 1, dtype=np.uint32)])
    _require(np.array_equal(np.sort(taken), np.sort(given)),
             "atomic_xchg_slots: the old values and final slots are not the first slots and 1..n")
    for s in range(nslots):  # a slot ends holding its first value or one put there by a work-item of that slot
        final = int(out["slots"][s])
        _require(final == slots0[s] or (final >= 1 and (final - 1) % nslots == s),
                 f"atomic_xchg_slots: slot {s} ends with {final}, which no work-item of that slot put there")


def _check_claim(v: Values, out: Mapping[str, np.ndarray]) -> None:
    key, owner, won = v["key"], out["owner"], out["won"]
    present = np.unique(key)
    _require(int(won.sum()) == len(present), f"atomic_cmpxchg_claim: {int(won.sum())} winners for "
                                              f"{len(present)} keys")
    for k in range(len(owner)):
        o = int(owner[k])
        if k in present:
            _require(0 <= o < len(key) and key[o] == k and won[o] == 1,
                     f"atomic_cmpxchg_claim: owner[{k}] = {o} is not a winning work-item with that key")
        else:
            _require(o == -1, f"atomic_cmpxchg_claim: owner[{k}] = {o}, but no work-item has key {k}")


def _check_tickets(v: Values, out: Mapping[str, np.ndarray]) -> None:
    n = len(v["tickets"])
    _require(np.array_equal(np.sort(out["tickets"]), np.arange(n, dtype=np.uint32)),
             f"atomic_ticket: the tickets are not a permutation of 0..{n - 1}")


# -- the table ---------------------------------------------------------------------------------------------
F32 = (1e-5, 1e-6)  # float32 results that may be contracted to fma or summed in another order
F64 = (1e-12, 1e-14)


def _rounded(n: int, b: int) -> int:
    return -(-n // b) * b


def _vector_add(n: int = 4099) -> Case:
    return Case("vector_add", "elementwise", (In("a", "float32", (n,), floats(-1, 1)),
                                              In("b", "float32", (n,), floats(-1, 1)),
                                              Out("c", "float32", (n,)), Scalar("n", "uint32", n)),
                (n,), (256,), lambda v: {"c": v["a"] + v["b"]})


def _memcpy_uint4(n: int = 1024) -> Case:
    """n uint4 elements (16 n bytes)."""
    return Case("memcpy_uint4", "elementwise", (In("src", "uint32", (n, 4), ints(0, 2**32), vector=4),
                                                Out("dst", "uint32", (n, 4), vector=4), Scalar("n", "uint32", n)),
                (n,), (128,), lambda v: {"dst": v["src"]})


def _gemm_tiled(m: int = 50, n: int = 40, k: int = 70) -> Case:
    return Case("gemm_tiled", "linalg", (In("A", "float32", (m, k), floats(-1, 1)),
                                         In("B", "float32", (k, n), floats(-1, 1)),
                                         Out("C", "float32", (m, n)), Scalar("M", "uint32", m),
                                         Scalar("N", "uint32", n), Scalar("K", "uint32", k)),
                (_rounded(n, 16), _rounded(m, 16)), (16, 16), lambda v: {"C": v["A"] @ v["B"]},
                tolerance={"C": (1e-5, 1e-5 * max(1.0, k / 64))})


# kernels whose problem size a benchmark may choose: sized("vector_add", n=16 << 20)
_SIZED: dict[str, Callable[..., Case]] = {"vector_add": _vector_add, "memcpy_uint4": _memcpy_uint4,
                                          "gemm_tiled": _gemm_tiled}


def sized(kernel: str, **sizes: int) -> Case:
    """The case of `kernel` at another problem size (vector_add n, memcpy_uint4 n, gemm_tiled m, n, k)."""
    if kernel not in _SIZED:
        raise KeyError(f"corpus kernel {kernel!r} has one size only (sizable: {', '.join(_SIZED)})")
    return _SIZED[kernel](**sizes)


def _cases() -> tuple[Case, ...]:
    u32, i32, f32 = "uint32", "int32", "float32"
    cases = [
        # ---- elementwise ---------------------------------------------------------------------------------
        Case("add_int", "elementwise", (In("a", i32, (1000,), ints(-2**30, 2**30)),
                                        In("b", i32, (1000,), ints(-2**30, 2**30)),
                                        Out("c", i32, (1000,)), Scalar("n", u32, 1000)),
             (1000,), (64,), lambda v: {"c": v["a"] + v["b"]}),
        _vector_add(),
        _memcpy_uint4(),
        Case("bitops_uint", "elementwise", (In("a", u32, (777,), ints(0, 2**32)), In("b", u32, (777,), ints(0, 2**32)),
                                            Out("out", u32, (777,)), Scalar("n", u32, 777)),
             (777,), (64,), _bitops),
        Case("mix_f64", "elementwise", (In("a", "float64", (500,), floats(-4, 4)),
                                        In("b", "float64", (500,), floats(-4, 4)),
                                        Out("out", "float64", (500,)), Scalar("n", u32, 500)),
             (500,), (64,),
             lambda v: {"out": v["a"] * v["b"] - v["a"] / (np.abs(v["b"]) + 2.0) + np.sqrt(np.abs(v["a"]))},
             tolerance={"out": F64}),
        Case("blend_uchar4", "elementwise", (In("a", "uint8", (300, 4), ints(0, 256), vector=4),
                                             In("b", "uint8", (300, 4), ints(0, 256), vector=4),
                                             Out("out", "uint8", (300, 4), vector=4), Scalar("n", u32, 300)),
             (300,), (64,), lambda v: {"out": (v["a"] >> 1) + (v["b"] >> 1) + (v["a"] & v["b"] & 1)}),
        Case("mad_float4", "elementwise", (In("a", f32, (256, 4), floats(-2, 2), vector=4),
                                           In("b", f32, (256, 4), floats(-2, 2), vector=4),
                                           In("c", f32, (256, 4), floats(-2, 2), vector=4),
                                           Out("out", f32, (256, 4), vector=4), Scalar("n", u32, 256)),
             (256,), (64,), lambda v: {"out": v["a"] * v["b"] + v["c"]}, tolerance={"out": F32}),
        Case("mul_f16", "elementwise", (In("a", "float16", (1000,), floats(-4, 4)),
                                        In("b", "float16", (1000,), floats(-4, 4)),
                                        Out("out", "float16", (1000,)), Scalar("n", u32, 1000)),
             (1000,), (128,), lambda v: {"out": v["a"] * v["b"]}),
        Case("convert_int_float", "elementwise", (In("a", i32, (333,), ints(-2**24, 2**24)),
                                                  In("x", f32, (333,), floats(-1000, 1000)),
                                                  Out("af", f32, (333,)), Out("xi", i32, (333,)),
                                                  Scalar("n", u32, 333)),
             (333,), (64,), lambda v: {"af": v["a"].astype(np.float32) * np.float32(0.5),
                                       "xi": np.trunc(v["x"]).astype(np.int32)}),
        Case("gather", "elementwise", (In("src", f32, (1000,), floats(-1, 1)), In("index", u32, (700,), ints(0, 1000)),
                                       Out("out", f32, (700,)), Scalar("n", u32, 700)),
             (700,), (64,), lambda v: {"out": v["src"][v["index"]]}),
        # ---- linear algebra ------------------------------------------------------------------------------
        Case("saxpy", "linalg", (Scalar("a", f32, 2.5), In("x", f32, (1000,), floats(-1, 1)),
                                 Out("y", f32, (1000,), floats(-1, 1)), Scalar("n", u32, 1000)),
             (1000,), (128,), lambda v: {"y": np.float32(2.5) * v["x"] + v["y"]}, tolerance={"y": F32}),
        Case("gemv", "linalg", (In("A", f32, (100, 70), floats(-1, 1)), In("x", f32, (70,), floats(-1, 1)),
                                Out("y", f32, (100,)), Scalar("rows", u32, 100), Scalar("cols", u32, 70)),
             (100,), (64,), lambda v: {"y": v["A"] @ v["x"]}, tolerance={"y": (1e-5, 1e-5)}),
        Case("gemm_naive", "linalg", (In("A", f32, (37, 24), floats(-1, 1)), In("B", f32, (24, 56), floats(-1, 1)),
                                      Out("C", f32, (37, 56)), Scalar("M", u32, 37), Scalar("N", u32, 56),
                                      Scalar("K", u32, 24)),
             (56, 37), (16, 8), lambda v: {"C": v["A"] @ v["B"]}, tolerance={"C": (1e-5, 1e-5)}),
        _gemm_tiled(),
        Case("transpose", "linalg", (In("in", f32, (45, 70), floats(-1, 1)), Out("out", f32, (70, 45)),
                                     Scalar("rows", u32, 45), Scalar("cols", u32, 70)),
             (_rounded(70, 16), _rounded(45, 16)), (16, 16), lambda v: {"out": v["in"].T.copy()}),
        # ---- stencils ------------------------------------------------------------------------------------
        Case("stencil2d_5pt", "stencil", (In("in", f32, (37, 50), floats(-1, 1)), Out("out", f32, (37, 50)),
                                          Scalar("width", u32, 50), Scalar("height", u32, 37)),
             (50, 37), (16, 8), lambda v: {"out": _stencil(v["in"], 0.5, 0.125)}, tolerance={"out": F32}),
        Case("stencil3d_7pt", "stencil", (In("in", f32, (10, 12, 20), floats(-1, 1)), Out("out", f32, (10, 12, 20)),
                                          Scalar("nx", u32, 20), Scalar("ny", u32, 12), Scalar("nz", u32, 10)),
             (20, 12, 10), (8, 4, 4), lambda v: {"out": _stencil(v["in"], 0.25, 0.125)}, tolerance={"out": F32}),
        # ---- reductions and scans ------------------------------------------------------------------------
        Case("reduce_sum", "reduce", (In("in", f32, (1000,), floats(-1, 1)), Out("partial", f32, (4,)),
                                      Scalar("n", u32, 1000)),
             (1024,), (256,), lambda v: {"partial": _groups(v["in"], 256, 0).sum(axis=1)},
             tolerance={"partial": (1e-5, 1e-5)}),
        Case("reduce_max_dynamic", "reduce", (In("in", f32, (1000,), floats(-100, 100)), Out("partial", f32, (8,)),
                                              Scalar("n", u32, 1000), Local("work", 128 * 4)),
             (1024,), (128,), lambda v: {"partial": _groups(v["in"], 128, -np.inf).max(axis=1)}),
        Case("dot_dynamic2", "reduce", (In("a", i32, (512,), ints(-100, 100)), In("b", i32, (512,), ints(-100, 100)),
                                        Out("out", i32, (16,)), Local("dots", 64 * 4), Local("squares", 64 * 4)),
             (512,), (64,),
             lambda v: {"out": np.stack([(v["a"] * v["b"]).reshape(8, 64).sum(axis=1),
                                         (v["a"] * v["a"]).reshape(8, 64).sum(axis=1)], axis=1).reshape(-1)
                        .astype(np.int32)}),
        Case("scan_inclusive", "reduce", (In("in", i32, (1000,), ints(-1000, 1000)), Out("out", i32, (1000,)),
                                          Out("totals", i32, (4,)), Scalar("n", u32, 1000)),
             (1024,), (256,),
             lambda v: {"out": np.cumsum(_groups(v["in"], 256, 0), axis=1).reshape(-1)[:1000].astype(np.int32),
                        "totals": _groups(v["in"], 256, 0).sum(axis=1).astype(np.int32)}),
        Case("sum_lanes32", "reduce", (In("in", u32, (512,), ints(0, 2**32)), Out("out", u32, (512,))),
             (512,), (64,), lambda v: {"out": np.repeat(v["in"].reshape(-1, 32).sum(axis=1, dtype=np.uint32), 32)}),
        Case("scan_rows_dpp", "reduce", (In("in", u32, (512,), ints(0, 2**32)), Out("prefix", u32, (512,)),
                                         Out("total", u32, (512,))),
             (512,), (64,), lambda v: {"prefix": np.cumsum(_rows16(v["in"]), axis=1, dtype=np.uint32).reshape(-1),
                                       "total": np.repeat(_rows16(v["in"]).sum(axis=1, dtype=np.uint32), 16)}),
        # ---- sorting -------------------------------------------------------------------------------------
        Case("bitonic_sort_local", "sort", (Out("data", u32, (1024,), ints(0, 2**32)),),
             (1024,), (256,), lambda v: {"data": np.sort(v["data"].reshape(4, 256), axis=1).reshape(-1)}),
        Case("bitonic_step", "sort", (Out("keys", i32, (1024,), ints(-2**31, 2**31)), Scalar("k", u32, 64),
                                      Scalar("j", u32, 16)),
             (1024,), (128,), lambda v: _bitonic_step(v, 64, 16)),
        # ---- histograms and atomics ----------------------------------------------------------------------
        Case("histogram_global", "atomics", (In("data", "uint8", (5000,), ints(0, 256)), Out("bins", u32, (256,)),
                                             Scalar("n", u32, 5000)),
             (5000,), (256,), lambda v: {"bins": np.bincount(v["data"], minlength=256).astype(np.uint32)}),
        Case("histogram_local", "atomics", (In("data", "uint8", (10000,), ints(0, 256)), Out("bins", u32, (256,)),
                                            Scalar("n", u32, 10000)),
             (1000,), (128,), lambda v: {"bins": np.bincount(v["data"], minlength=256).astype(np.uint32)}),
        Case("atomics_global", "atomics",
             (In("values", i32, (1000,), ints(-1000, 1000)),
              Out("c", i32, (16,), lambda r, s, d: np.array([7, 7, 2**31 - 1, -2**31, -1, 0, -1, 0, 0, 0, 0, 0, 5, 0,
                                                             0, 0], d)),
              Out("c64", "int64", (3,)), Scalar("limit", u32, 7), Scalar("n", u32, 1000)),
             (1000,), (64,), lambda v: _atomics_global(v, 7)),
        Case("atomics_local", "atomics", (In("values", i32, (256,), ints(-1000, 1000)), Out("out", i32, (4, 18)),
                                          Scalar("limit", u32, 5)),
             (256,), (64,), lambda v: _atomics_local(v, 64, 5)),
        Case("flat_pointers", "atomics", (Out("data", i32, (512,), ints(-1000, 1000)), Out("out", i32, (512,))),
             (512,), (256,), lambda v: _flat_pointers(v, 256)),
        Case("atomic_xchg_slots", "atomics", (Out("slots", u32, (10,), ints(10**6, 2**32)), Out("old", u32, (512,)),
                                              Scalar("nslots", u32, 10)),
             (512,), (64,), lambda v: {}, check=_check_xchg),
        Case("atomic_cmpxchg_claim", "atomics", (In("key", u32, (512,), ints(0, 40)),
                                                 Out("owner", i32, (48,), full(-1)), Out("won", i32, (512,))),
             (512,), (64,), lambda v: {}, check=_check_claim),
        Case("atomic_add_float_cas", "atomics", (In("x", f32, (2000,), quarters(0, 16)), In("bin", u32, (2000,),
                                                                                           ints(0, 8)),
                                                 Out("sums", f32, (8,)), Scalar("n", u32, 2000)),
             (2000,), (128,),
             lambda v: {"sums": np.bincount(v["bin"], weights=v["x"], minlength=8).astype(np.float32)}),
        Case("atomic_ticket", "atomics", (Out("counter", u32, (1,)), Out("tickets", u32, (500,))),
             (500,), (64,), lambda v: {"counter": np.array([500], np.uint32)}, check=_check_tickets),
        # ---- control flow, integer and float math, scratch, .rodata, grid queries ------------------------
        Case("scale_grid_stride", "misc", (In("in", f32, (5000,), floats(-1, 1)), Out("out", f32, (5000,)),
                                           Scalar("k", f32, 1.5), Scalar("n", u32, 5000)),
             (640,), (64,), lambda v: {"out": v["in"] * np.float32(1.5)}),
        Case("int_divmod", "misc", (In("a", i32, (1000,), ints(-2**31 + 1, 2**31)),
                                    In("b", i32, (1000,), nonzero_ints(-70000, 70000)),
                                    Out("q", i32, (1000,)), Out("r", i32, (1000,)), Out("uq", u32, (1000,)),
                                    Out("ur", u32, (1000,)), Out("lq", "int64", (1000,)), Out("lr", "int64", (1000,)),
                                    Scalar("n", u32, 1000)),
             (1000,), (64,), _divmod),
        Case("math_f32", "misc", (In("x", f32, (600,), floats(-3, 3)), In("y", f32, (600,), floats(0.1, 10)),
                                  Out("out", f32, (600,)), Scalar("n", u32, 600)),
             (600,), (64,), lambda v: {"out": np.exp(v["x"]) * np.sqrt(v["y"]) / (np.float32(1) + v["y"])},
             tolerance={"out": (2e-6, 0.0)}),
        Case("div_sqrt_f32", "misc", (In("x", f32, (600,), floats(-1000, 1000)), In("y", f32, (600,),
                                                                                   floats(0.001, 1000)),
                                      Out("q", f32, (600,)), Out("s", f32, (600,)), Scalar("n", u32, 600)),
             (600,), (64,), lambda v: {"q": v["x"] / v["y"], "s": np.sqrt(v["y"])}),
        Case("collatz", "misc", (In("start", u32, (300,), ints(1, 10000)), Out("steps", u32, (300,)),
                                 Scalar("n", u32, 300)),
             (300,), (64,), _collatz),
        Case("mode_scratch", "misc", (In("values", "uint8", (100, 64), ints(0, 256)), Out("out", u32, (100,)),
                                      Scalar("n", u32, 100)),
             (100,), (64,), _mode),
        Case("crc32_rows", "misc", (In("data", "uint8", (200, 16), ints(0, 256)), Out("crc", u32, (200,)),
                                    Scalar("rows", u32, 200)),
             (200,), (64,), _crc),
        Case("grid_info", "misc", (Out("out", u32, (10 * 6 * 3, 16)),),
             (10, 6, 3), (4, 4, 2), _grid_info((10, 6, 3), (4, 4, 2))),
        Case("reverse_local", "misc", (In("in", u32, (256,), ints(0, 2**32)), Out("out", u32, (256,))),
             (256,), (64,), _reverse_local),
        # ---- written after the interpreter, to try it on code it was not built around ------------------------
        Case("softmax_rows", "numeric", (In("x", f32, (7, 300), floats(-8, 8)), Out("y", f32, (7, 300)),
                                         Scalar("cols", u32, 300)),
             (7 * 64,), (64,), _softmax, tolerance={"y": (1e-5, 1e-7)}),
        Case("div_mod_u64", "numeric", (In("a", "uint64", (256,), ints(1, 2**62)),
                                        In("b", "uint64", (256,), ints(1, 2**40)),
                                        Out("q", "uint64", (256,)), Out("s", "int64", (256,)), Scalar("n", u32, 256)),
             (256,), (64,), _div_mod_u64),
        Case("narrow_ints", "numeric", (In("a", "int16", (300,), ints(-30000, 30000)),
                                        In("b", "uint8", (300,), ints(0, 256)), Out("out", i32, (300,)),
                                        Scalar("n", u32, 300)),
             (300,), (64,), _narrow_ints),
        Case("half_math", "numeric", (In("a", "float16", (500,), floats(-4, 4)),
                                      In("b", "float16", (500,), floats(-4, 4)),
                                      Out("o", "float16", (500,)), Scalar("n", u32, 500)),
             (500,), (64,), lambda v: {"o": (v["a"].astype(np.float32) * v["b"] +
                                             (v["a"].astype(np.float32) - v["b"]) * 0.5).astype(np.float16)},
             tolerance={"o": (4e-3, 4e-3)}),  # half rounds each step (and may contract to fma)
        Case("float_rounding", "numeric", (In("a", f32, (400,), floats(-50, 50)), Out("o", f32, (400,)),
                                           Out("oi", i32, (400,)), Scalar("n", u32, 400)),
             (400,), (64,), _float_rounding, tolerance={"o": F32}),
        # a * b is exact for these, so a fused multiply-add rounds as the separate steps do
        Case("uniform_math", "numeric", (Out("o", f32, (256,)), Out("oi", u32, (256,)), Out("ol", "uint64", (256,)),
                                         Scalar("a", f32, 2.5), Scalar("b", f32, -3.25),
                                         Scalar("bits", u32, 0x9ABCDEF1), Scalar("wide", "uint64", 0xF123456789ABCDEF)),
             (256,), (64,), _uniform_math),
        Case("float_edges", "numeric", (In("d", "float64", (42,), given(*EDGE_DOUBLES)),
                                        Out("dfma", "float64", (14,)), Out("dq", "float64", (14,)),
                                        Out("droot", "float64", (14,)), In("f", f32, (42,), given(*EDGE_FLOATS)),
                                        Out("ffma", f32, (14,)), Out("fq", f32, (14,)), Out("fclamp", f32, (14,)),
                                        Out("ffract", f32, (14,))),
             (14,), (14,), _float_edges),
        Case("packed_halves", "numeric", (In("a", "float16", (128, 2), floats(-3, 3), vector=2),
                                          In("b", "float16", (128, 2), floats(-3, 3), vector=2),
                                          Out("mx", "float16", (128, 2), vector=2),
                                          Out("cl", "float16", (128, 2), vector=2),
                                          In("u", "uint16", (128, 2), ints(0, 2**16), vector=2),
                                          In("v", "uint16", (128, 2), ints(0, 2**16), vector=2),
                                          Out("us", "uint16", (128, 2), vector=2)),
             (128,), (64,), _packed_halves),
        Case("saturating", "numeric", (In("a", u32, (256,), ints(0, 2**32)), In("b", u32, (256,), ints(0, 2**32)),
                                       Out("uadd", u32, (256,)), Out("usub", u32, (256,)), Out("sadd", i32, (256,)),
                                       Out("ssub", i32, (256,))),
             (256,), (64,), _saturating),
        Case("indexed_private", "numeric", (In("idx", i32, (128,), ints(0, 1 << 16)), Out("out", "float64", (256,))),
             (128,), (64,), _indexed_private),
        Case("root_of_magnitude", "numeric", (In("x", f32, (42,), given(*EDGE_FLOATS)), Out("y", f32, (42,))),
             (42,), (42,), lambda v: {"y": np.sqrt(np.abs(v["x"]))}),
    ]
    return tuple(cases)


def _softmax(v: Values) -> dict[str, np.ndarray]:
    e = np.exp(v["x"] - v["x"].max(axis=1, keepdims=True))
    return {"y": e / e.sum(axis=1, keepdims=True)}


def _div_mod_u64(v: Values) -> dict[str, np.ndarray]:
    a, b = v["a"], v["b"]
    num, den = a.astype(np.int64) - (b << np.uint64(3)).astype(np.int64), (b | np.uint64(1)).astype(np.int64)
    return {"q": a // b + a % b, "s": np.sign(num) * np.sign(den) * (np.abs(num) // np.abs(den))}  # C truncates


def _narrow_ints(v: Values) -> dict[str, np.ndarray]:
    a, c = v["a"].astype(np.int64), v["b"].astype(np.int64)
    bits = a & 0xFFFFFFFF
    rotated = (bits << 7 | bits >> 25) & 0xFFFFFFFF
    total = (a >> 3) * c + np.where(a < 0, -c, c) + _popcount(bits.astype(np.uint32)) + \
        _clz((c + 1).astype(np.uint32)) + rotated
    return {"out": (total & 0xFFFFFFFF).astype(np.uint32).view(np.int32)}


_DMAX, _FMAX = float(np.finfo(np.float64).max), float(np.finfo(np.float32).max)
# (a, b, c) triples: fma(a, b, c), a / b and sqrt(c) of each
EDGE_DOUBLES = (1 + 2**-30, 1 - 2**-30, -1.0,  3.0, 1 / 3, -1.0,  _DMAX, -1.0, _DMAX,
                1e10, 5.56e-309, 0.011655526139132347,  1e-300, 1e300, -1.0,  2.0, 3.0, 2.0,  -0.0, 5.0, -0.0,
                1e308, 2.0, -1e308,  -0.5, _DMAX, 2.0,  2.5e-308, 1e308, 9.0,  6.665543448164645e-308, 3.0, 4.0,
                1e-300, 7.0, 0.5,  1e160, 5e-324, 1.0,  -1e300, 1e-320, 4.0)
# fma(a, b, c), a / b, and clamp to [0, 1] and fract of c
EDGE_FLOATS = (1 + 2**-12, 1 + 2**-12, 2**-80,  _FMAX, -1.0, float("nan"),  2.0, _FMAX, -1e-10,
               1.0, 1.469368e-39, -1e-30,  1e30, 1e-10, 1.25,  -7.0, 3.0, -0.25,  3.0, 7.0, 0.5,  1e-37, 1e37, 2.0,
               -0.5, _FMAX, 0.75,  1e-30, _FMAX, 3.0,  1.1754944e-38, 1.5, 0.25,  2147483648.0, _FMAX, 1.5,
               1e20, 1e-45, 0.5,  -1e30, 1e-40, 2.0)


def round_once(exact: Fraction, dtype: type) -> float:
    """`exact` (not 0) rounded once to `dtype`: to nearest, ties to even."""
    info = np.finfo(dtype)
    top = abs(exact.numerator).bit_length() - exact.denominator.bit_length()  # 2**top <= |exact| < 2**(top + 2)
    top += Fraction(2) ** (top + 1) <= abs(exact)
    quantum = Fraction(2) ** (max(top, int(info.minexp)) - int(info.nmant))
    value = round(exact / quantum) * quantum  # round() of a Fraction: half to even
    # (a value that rounds to 0 keeps its sign: -0)
    return dtype(math.copysign(math.inf if abs(value) > Fraction(float(info.max)) else float(value), exact))


def _float_edges(v: Values) -> dict[str, np.ndarray]:
    d, f = v["d"].reshape(-1, 3), v["f"].reshape(-1, 3)
    out: dict[str, list] = {k: [] for k in ("dfma", "ffma")}
    for rows, key, dtype in ((d, "dfma", np.float64), (f, "ffma", np.float32)):
        for a, b, c in rows.tolist():
            if not all(math.isfinite(x) for x in (a, b, c)):
                with np.errstate(all="ignore"):
                    out[key].append(dtype(a) * dtype(b) + dtype(c))
                continue
            exact = Fraction(a) * Fraction(b) + Fraction(c)
            if exact == 0:  # -0 only for a sum of two -0 (IEEE 754)
                out[key].append(dtype(a) * dtype(b) + dtype(c) if a * b == 0 and c == 0 else dtype(0))
            else:
                out[key].append(round_once(exact, dtype))
    with np.errstate(all="ignore"):
        c = f[:, 2]
        return {"dfma": np.array(out["dfma"], np.float64), "dq": d[:, 0] / d[:, 1], "droot": np.sqrt(d[:, 2]),
                "ffma": np.array(out["ffma"], np.float32), "fq": f[:, 0] / f[:, 1],
                "fclamp": np.where(np.isnan(c), np.float32(0), np.clip(c, np.float32(0), np.float32(1))),
                "ffract": np.minimum(c - np.floor(c), np.nextafter(np.float32(1), np.float32(0)))}


def _packed_halves(v: Values) -> dict[str, np.ndarray]:
    a, b = v["a"], v["b"]
    product = (a.astype(np.float32) * b).astype(np.float16)  # rounds as the f16 multiply does: one rounding
    u, w = v["u"].astype(np.int64), v["v"].astype(np.int64)
    return {"mx": np.fmax(a, b), "cl": np.clip(product, np.float16(0), np.float16(1)),
            "us": (np.minimum(u + w, 0xFFFF) ^ (w >> (u & 7))).astype(np.uint16)}


def _indexed_private(v: Values) -> dict[str, np.ndarray]:
    out = []
    for i, j in enumerate(v["idx"].tolist()):
        d = [(i + k) / (k + 1) for k in range(16)]
        d[j & 15] = 0.5 * d[(j >> 4) & 15]
        out += [d[(j >> 8) & 15], d[(j >> 12) & 15]]
    return {"out": np.array(out)}


def _saturating(v: Values) -> dict[str, np.ndarray]:
    a, b = v["a"].astype(np.int64), v["b"].astype(np.int64)
    sa, sb = v["a"].view(np.int32).astype(np.int64), v["b"].view(np.int32).astype(np.int64)
    return {"uadd": np.minimum(a + b, 2**32 - 1).astype(np.uint32), "usub": np.maximum(a - b, 0).astype(np.uint32),
            "sadd": np.clip(sa + sb, -2**31, 2**31 - 1).astype(np.int32),
            "ssub": np.clip(sa - sb, -2**31, 2**31 - 1).astype(np.int32)}


def _uniform_math(v: Values) -> dict[str, np.ndarray]:
    f32 = np.float32
    a, b, bits, wide = f32(v["a"]), f32(v["b"]), int(v["bits"]), int(v["wide"])
    s = a * b + f32(1.5)
    t = np.trunc(s) + np.floor(a) + np.ceil(b) + np.rint(a * f32(3))
    m = np.fmin(a, b) + np.fmax(a, s)
    i = np.arange(256)
    out = ((t if a < b else m) + (t if b < a else m) * f32(2) + np.sqrt(a * a * f32(4))) * (i + 1).astype(f32)
    low = ((bits << 3 & 0xFFFFFFFF) >> 27) - (32 if bits << 3 & 0x80000000 else 0)  # bits 24..28, signed
    wide_field = (wide << 5 & (1 << 64) - 1) >> 40  # bits 35..58, signed
    wide_field -= (1 << 24) if wide_field & 1 << 23 else 0
    return {"o": out.astype(f32), "oi": ((low + (bits >> 9 & 0x3FF) + i) & 0xFFFFFFFF).astype(np.uint32),
            "ol": ((wide_field & (1 << 64) - 1) ^ (wide >> 7 & 0xFFFFFFFFFF) ^ wide // (bits | 1) ^
                   i.astype(object)).astype(np.uint64)}


def _float_rounding(v: Values) -> dict[str, np.ndarray]:
    a = v["a"]
    out = np.fmin(np.abs(a), np.float32(3)) * np.copysign(np.float32(1), a) + np.floor(a) - \
        np.ceil(a * np.float32(0.5)) + np.rint(a * np.float32(3))
    k = (a * np.float32(100)).astype(np.int32)
    return {"o": out.astype(np.float32), "oi": np.abs(k) ^ np.arange(len(a), dtype=np.int32)}


def _stencil(a: np.ndarray, centre: float, side: float) -> np.ndarray:
    """Every interior cell: centre*cell + side*(sum of its 2*ndim axis neighbours); the border copied."""
    out = a.copy()
    inner = tuple(slice(1, -1) for _ in a.shape)
    acc = np.zeros_like(a[inner])
    for axis in range(a.ndim):
        for step in (-1, 1):
            acc += np.roll(a, -step, axis=axis)[inner]
    out[inner] = np.float32(centre) * a[inner] + np.float32(side) * acc
    return out


def _rows16(a: np.ndarray) -> np.ndarray:
    """`a` as rows of 16 lanes (DPP's rows)."""
    return a.reshape(-1, 16)


def _groups(a: np.ndarray, size: int, pad: float) -> np.ndarray:
    """`a` padded with `pad` to whole groups of `size`, one group per row."""
    rows = -(-len(a) // size)
    return np.concatenate([a, np.full(rows * size - len(a), pad, a.dtype)]).reshape(rows, size)


CASES: tuple[Case, ...] = _cases()
_BY_NAME = {c.kernel: c for c in CASES}


def case(kernel: str) -> Case:
    """The case of `kernel`; KeyError names the kernels there are."""
    try:
        return _BY_NAME[kernel]
    except KeyError:
        raise KeyError(f"no corpus kernel {kernel!r} (kernels: {', '.join(_BY_NAME)})") from None
