"""The exact kernels equal a slow pure-Python-int reference, refuse what they cannot do exactly,
and validate jobs from metadata alone."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import ExactRangeError, KernelError
from ledger.kernels import KERNEL_VERSION, OPS, JobSpec, TensorMeta, execute, infer
from ledger.kernels.softmax import COEFFS, EXP_BITS, LOG2E
from ledger.tensor import Tensor

INT64_MAX = (1 << 63) - 1

# --- the reference: the spec of docs/PROTOCOL.md section 4, in Python ints --------------------


def rshift(v: int, s: int) -> int:
    """The rounding rule: round half up by an arithmetic shift (Python's >> floors)."""
    return v if s == 0 else (v + (1 << (s - 1))) >> s


def rows(t: Tensor) -> list[list[int]]:
    return [[int(v) for v in row] for row in t.data]


def act_fwd(z: int, p: dict[str, Any]) -> int:
    if p["act"] == "identity":
        return z
    if p["act"] == "relu":
        return max(z, 0)
    return z if z > 0 else rshift(z * p["slope_num"], p["slope_shift"])


def act_bwd(a: int, da: int, p: dict[str, Any]) -> int:
    if p["act"] == "identity":
        return da
    if p["act"] == "relu":
        return da if a > 0 else 0
    return da if a > 0 else rshift(da * p["slope_num"], p["slope_shift"])


def ref_dense_forward(x: Tensor, w: Tensor, b: Tensor, p: dict[str, Any]) -> list[list[int]]:
    raw = x.frac_bits + w.frac_bits
    xs, ws, bs = rows(x), rows(w), [int(v) for v in b.data]
    out = []
    for row in xs:
        out.append(
            [
                act_fwd(
                    rshift(
                        sum(row[k] * ws[k][j] for k in range(len(row)))
                        + (bs[j] << (raw - b.frac_bits)),
                        raw - p["out_frac"],
                    ),
                    p,
                )
                for j in range(len(bs))
            ]
        )
    return out


def ref_dense_backward(
    x: Tensor, w: Tensor, a: Tensor, da: Tensor, p: dict[str, Any]
) -> tuple[list[list[int]], list[list[int]], list[int]]:
    xs, ws = rows(x), rows(w)
    dz = [
        [act_bwd(av, dv, p) for av, dv in zip(ar, dr, strict=True)]
        for ar, dr in zip(rows(a), rows(da), strict=True)
    ]
    n, k, m = len(xs), len(ws), len(ws[0])
    sx = da.frac_bits + w.frac_bits - p["dx_frac"]
    sw = x.frac_bits + da.frac_bits - p["dw_frac"]
    dx = [
        [rshift(sum(dz[i][j] * ws[c][j] for j in range(m)), sx) for c in range(k)] for i in range(n)
    ]
    dw = [
        [rshift(sum(xs[i][c] * dz[i][j] for i in range(n)), sw) for j in range(m)] for c in range(k)
    ]
    db = [sum(dz[i][j] for i in range(n)) for j in range(m)]
    return dx, dw, db


def ref_softmax_xent_grad(z: Tensor, labels: Tensor, out_frac: int) -> list[list[int]]:
    out = []
    for row, label in zip(rows(z), labels.data, strict=True):
        top = max(row)
        es = []
        for v in row:
            u = rshift((v - top) * LOG2E, z.frac_bits)
            q, r = (-u) >> EXP_BITS, (-u) & ((1 << EXP_BITS) - 1)
            acc = COEFFS[-1]
            for c in reversed(COEFFS[:-1]):
                acc = c + rshift(acc * r, EXP_BITS)
            es.append(rshift(acc, min(q, 62)))
        s = sum(es)
        g = [(2 * (e << out_frac) + s) // (2 * s) for e in es]
        g[int(label)] -= 1 << out_frac
        out.append(g)
    return out


def T(values: Any, frac: int, dtype: Any = np.int64) -> Tensor:
    return Tensor(np.asarray(values, dtype=dtype), frac)


def rand(rng: np.random.Generator, shape: tuple[int, ...], bound: int, frac: int) -> Tensor:
    return Tensor(rng.integers(-bound, bound, size=shape, dtype=np.int64, endpoint=True), frac)


LEAKY = {"act": "leaky_relu", "slope_num": 13, "slope_shift": 7}


# --- equality with the reference ----------------------------------------------------------------


@pytest.mark.parametrize("act", [{"act": "identity"}, {"act": "relu"}, LEAKY])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_dense_forward_equals_reference(act: dict[str, Any], dtype: Any) -> None:
    rng = np.random.default_rng(1)
    x = Tensor(rng.integers(-5000, 5000, (7, 11)).astype(dtype), 12)
    w = Tensor(rng.integers(-70000, 70000, (11, 5)).astype(dtype), 16)
    b = rand(rng, (5,), 9000, 14)
    params = {**act, "out_frac": 10}
    (a,) = execute("dense_forward", params, [x, w, b])
    assert rows(a) == ref_dense_forward(x, w, b, params)
    assert TensorMeta.of_tensor(a) == TensorMeta("<i8", (7, 5), 10)


@pytest.mark.parametrize("act", [{"act": "identity"}, {"act": "relu"}, LEAKY])
def test_dense_backward_equals_reference(act: dict[str, Any]) -> None:
    rng = np.random.default_rng(2)
    x, w = rand(rng, (6, 9), 5000, 12), rand(rng, (9, 4), 70000, 16)
    a, da = rand(rng, (6, 4), 3000, 12), rand(rng, (6, 4), 60000, 16)
    params = {**act, "dx_frac": 13, "dw_frac": 20}
    dx, dw, db = execute("dense_backward", params, [x, w, a, da])
    rdx, rdw, rdb = ref_dense_backward(x, w, a, da, params)
    assert rows(dx) == rdx and rows(dw) == rdw and [int(v) for v in db.data] == rdb
    assert (dx.frac_bits, dw.frac_bits, db.frac_bits) == (13, 20, 16)
    pdw, pdb = execute("dense_backward_params", {**act, "dw_frac": 20}, [x, a, da])
    assert pdw == dw and pdb == db


def test_softmax_xent_grad_equals_reference_and_float_softmax() -> None:
    rng = np.random.default_rng(3)
    z = rand(rng, (9, 10), 12 << 12, 12)
    labels = T(rng.integers(0, 10, 9), 0)
    (g,) = execute("softmax_xent_grad", {"out_frac": 16}, [z, labels])
    assert rows(g) == ref_softmax_xent_grad(z, labels, 16)
    zf = z.data / 4096.0
    p = np.exp(zf - zf.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(9), labels.data] -= 1
    assert np.abs(g.data / 65536.0 - p).max() < 2.0**-15


def test_add_and_sgd_update() -> None:
    rng = np.random.default_rng(4)
    parts = [rand(rng, (3, 4), 1 << 40, 28) for _ in range(3)]
    (total,) = execute("add", {}, parts)
    assert np.array_equal(total.data, parts[0].data + parts[1].data + parts[2].data)
    w, g = rand(rng, (3, 4), 1 << 20, 20), rand(rng, (3, 4), 1 << 30, 28)
    (w2,) = execute("sgd_update", {"lr_num": 52429, "lr_shift": 24}, [w, g])
    expect = [
        [int(wv) - rshift(int(gv) * 52429, 28 + 24 - 20) for wv, gv in zip(wr, gr, strict=True)]
        for wr, gr in zip(rows(w), rows(g), strict=True)
    ]
    assert rows(w2) == expect and w2.frac_bits == 20


def test_rounding_rule_is_half_up_on_negative_ties() -> None:
    x = T([[1], [-1], [3], [-3], [2], [-2]], 1)
    w = T([[1]], 0)
    (a,) = execute("dense_forward", {"act": "identity", "out_frac": 0}, [x, w, T([0], 0)])
    # 0.5 -> 1, -0.5 -> 0, 1.5 -> 2, -1.5 -> -1, 1 -> 1, -1 -> -1
    assert a.data.ravel().tolist() == [1, 0, 2, -1, 1, -1]


def test_leaky_relu_derivative_read_from_output() -> None:
    x = T([[-1], [0], [1], [-100]], 0)
    w = T([[1]], 0)
    params = {**LEAKY, "out_frac": 0}
    (a,) = execute("dense_forward", params, [x, w, T([0], 0)])
    assert a.data.ravel().tolist() == [0, 0, 1, rshift(-100 * 13, 7)]
    da = T([[128], [128], [128], [128]], 0)
    _, _, db = execute("dense_backward", {**LEAKY, "dx_frac": 0, "dw_frac": 0}, [x, w, a, da])
    assert int(db.data[0]) == 3 * 13 + 128


# --- sharding invariance ---------------------------------------------------------------------


def test_backward_params_summed_over_shards_equal_unsharded() -> None:
    rng = np.random.default_rng(5)
    x, a, da = (
        rand(rng, (10, 6), 4096, 12),
        rand(rng, (10, 3), 4096, 12),
        rand(rng, (10, 3), 65536, 16),
    )
    params = {"act": "relu", "dw_frac": 28}
    dw, db = execute("dense_backward_params", params, [x, a, da])
    parts = [
        execute(
            "dense_backward_params", params, [T(x.data[s], 12), T(a.data[s], 12), T(da.data[s], 16)]
        )
        for s in (slice(0, 3), slice(3, 4), slice(4, 10))
    ]
    (sdw,) = execute("add", {}, [p[0] for p in parts])
    (sdb,) = execute("add", {}, [p[1] for p in parts])
    assert sdw == dw and sdb == db


# --- exact-range boundaries (hypothesis) ---------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    bits=st.integers(0, 62),
    k=st.integers(1, 40),
    n=st.integers(1, 3),
    m=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_largest_allowed_magnitudes_are_exact(bits: int, k: int, n: int, m: int, seed: int) -> None:
    """Up to K * max|x| * max|w| = 2^63 - 1 (products far beyond 2^53) equals Python ints;
    one more unit of max|w| is refused."""
    mx = min(1 << bits, INT64_MAX // k)
    mw = INT64_MAX // (k * mx)  # the largest allowed
    rng = np.random.default_rng(seed)
    xs = rng.integers(-mx, mx, (n, k), endpoint=True)
    ws = rng.integers(-mw, mw, (k, m), endpoint=True)
    xs[0, :], ws[:, 0] = -mx, mw  # the extreme sum is reached exactly in one output element
    x, w, zero = T(xs, 0), T(ws, 0), T(np.zeros(m), 0)
    params = {"act": "identity", "out_frac": 0}
    (a,) = execute("dense_forward", params, [x, w, zero])
    assert rows(a) == ref_dense_forward(x, w, zero, params)
    assert int(a.data[0, 0]) == -k * mx * mw
    with pytest.raises(ExactRangeError, match="2\\^63"):
        execute("dense_forward", params, [x, T(np.full((k, m), mw + 1), 0), zero])


def test_limb_split_matches_reference_where_floats_would_round() -> None:
    """Magnitudes whose products exceed 2^53: plain float64 matmul is wrong, the kernel is not."""
    rng = np.random.default_rng(11)
    xs = rng.integers(-(1 << 30), 1 << 30, (4, 64), endpoint=True)
    ws = rng.integers(-(1 << 26), 1 << 26, (64, 5), endpoint=True)
    x, w, zero = T(xs, 0), T(ws, 0), T(np.zeros(5), 0)
    params = {"act": "identity", "out_frac": 0}
    (a,) = execute("dense_forward", params, [x, w, zero])
    reference = ref_dense_forward(x, w, zero, params)
    assert rows(a) == reference
    floats = (xs.astype(np.float64) @ ws.astype(np.float64)).astype(np.int64)
    assert floats.tolist() != reference


@settings(max_examples=25, deadline=None)
@given(exp=st.integers(0, 53), sign=st.sampled_from([1, -1]))
def test_int64_accumulation_boundary(exp: int, sign: int) -> None:
    """K * max|x| * max|w| <= 2^63 - 1 is computed; one more row of K is refused."""
    mx, mw = 1 << exp, 1 << (53 - exp)
    k_ok = INT64_MAX // (mx * mw)  # 1023
    zero = T([0], 0)
    params = {"act": "identity", "out_frac": 0}
    (a,) = execute(
        "dense_forward",
        params,
        [T(np.full((1, k_ok), sign * mx), 0), T(np.full((k_ok, 1), mw), 0), zero],
    )
    assert int(a.data[0, 0]) == sign * k_ok * mx * mw
    with pytest.raises(ExactRangeError, match="2\\^63"):
        execute(
            "dense_forward",
            params,
            [T(np.full((1, k_ok + 1), mx), 0), T(np.full((k_ok + 1, 1), mw), 0), zero],
        )


@settings(max_examples=25, deadline=None)
@given(limit_ok=st.booleans(), frac=st.integers(0, 30))
def test_softmax_logit_boundary(limit_ok: bool, frac: int) -> None:
    top = (1 << 31) - 1 if limit_ok else 1 << 31
    z, labels = T([[top, -top, 0]], frac), T([1], 0)
    if limit_ok:
        (g,) = execute("softmax_xent_grad", {"out_frac": 8}, [z, labels])
        assert rows(g) == ref_softmax_xent_grad(z, labels, 8)
    else:
        with pytest.raises(ExactRangeError, match="2\\^31"):
            execute("softmax_xent_grad", {"out_frac": 8}, [z, labels])


def test_bias_and_rounding_overflow_refused() -> None:
    x, w = T([[1 << 26]], 10), T([[1 << 26]], 0)
    b = T([INT64_MAX >> 10], 0)  # shifted left by 10 to meet X @ W's scale: no room left
    with pytest.raises(ExactRangeError):
        execute("dense_forward", {"act": "identity", "out_frac": 0}, [x, w, b])


def test_leaky_and_sgd_overflow_refused() -> None:
    z = T([[-(1 << 60)]], 0)
    with pytest.raises(ExactRangeError):
        execute("dense_forward", {**LEAKY, "out_frac": 0}, [z, T([[1]], 0), T([0], 0)])
    with pytest.raises(ExactRangeError):
        execute("sgd_update", {"lr_num": 1 << 32, "lr_shift": 0}, [T([1], 0), T([1 << 40], 0)])
    with pytest.raises(ExactRangeError):
        execute("add", {}, [T([INT64_MAX], 0), T([1], 0)])


# --- infer: validation from metadata alone -------------------------------------------------------


def M(shape: tuple[int, ...], frac: int = 12, dtype: str = "<i8") -> TensorMeta:
    return TensorMeta(dtype, shape, frac)


def test_version_and_ops() -> None:
    assert KERNEL_VERSION == "exact-v1"
    assert OPS == {
        "dense_forward",
        "dense_backward",
        "dense_backward_params",
        "softmax_xent_grad",
        "add",
        "sgd_update",
        "mlp_grad",
    }


def test_infer_reports_outputs_and_cost() -> None:
    spec = infer(
        "dense_forward",
        {"act": "relu", "out_frac": 12},
        [M((8, 64)), M((64, 10), 20), M((10,), 20)],
    )
    assert spec == JobSpec((M((8, 10)),), 8 * 64 * 10 + 2 * 8 * 10)
    spec = infer(
        "dense_backward",
        {"act": "identity", "dx_frac": 16, "dw_frac": 28},
        [M((8, 64)), M((64, 10), 20), M((8, 10)), M((8, 10), 16)],
    )
    assert spec.outputs == (M((8, 64), 16), M((64, 10), 28), M((10,), 16))


@pytest.mark.parametrize(
    ("op", "params", "inputs", "message"),
    [
        ("conv2d", {}, [], "unknown op"),
        (
            "dense_forward",
            {"act": "relu", "out_frac": 12},
            [M((2, 3)), M((3, 4))],
            "expects 3 inputs",
        ),
        (
            "dense_forward",
            {"act": "relu", "out_frac": 12},
            [M((2, 3)), M((5, 4)), M((4,))],
            "inner dimensions",
        ),
        (
            "dense_forward",
            {"act": "relu", "out_frac": 12},
            [M((2, 3)), M((3, 4)), M((5,))],
            "b must have shape",
        ),
        (
            "dense_forward",
            {"act": "relu", "out_frac": 12},
            [M((6,)), M((3, 4)), M((4,))],
            "must be 2-D",
        ),
        (
            "dense_forward",
            {"act": "tanh", "out_frac": 12},
            [M((2, 3)), M((3, 4)), M((4,))],
            "'act' must be one of",
        ),
        (
            "dense_forward",
            {"act": "relu"},
            [M((2, 3)), M((3, 4)), M((4,))],
            "missing param 'out_frac'",
        ),
        (
            "dense_forward",
            {"act": "relu", "out_frac": 12, "x": 1},
            [M((2, 3)), M((3, 4)), M((4,))],
            "unknown params",
        ),
        (
            "dense_forward",
            {"act": "relu", "out_frac": True},
            [M((2, 3)), M((3, 4)), M((4,))],
            "int or a string",
        ),
        (
            "dense_forward",
            {"act": "relu", "out_frac": 25},
            [M((2, 3)), M((3, 4)), M((4,))],
            "outside 0..24",
        ),
        (
            "dense_forward",
            {"act": "relu", "out_frac": 1},
            [M((2, 3)), M((3, 4)), M((4,), 30)],
            "frac_bits of b",
        ),
        (
            "dense_forward",
            {"act": "leaky_relu", "out_frac": 1},
            [M((2, 3)), M((3, 4)), M((4,))],
            "slope_shift",
        ),
        (
            "dense_forward",
            {"act": "leaky_relu", "slope_num": 8, "slope_shift": 3, "out_frac": 1},
            [M((2, 3)), M((3, 4)), M((4,))],
            "slope_num",
        ),
        (
            "dense_forward",
            {"act": "relu", "out_frac": 1},
            [M((2, 3), dtype="<f8"), M((3, 4)), M((4,))],
            "dtype",
        ),
        (
            "dense_forward",
            {"act": "relu", "out_frac": 1},
            [M((0, 3)), M((3, 4)), M((4,))],
            "positive",
        ),
        (
            "dense_forward",
            {"act": "relu", "out_frac": 1},
            [M((2, 3), 31), M((3, 4)), M((4,))],
            "frac_bits",
        ),
        (
            "dense_forward",
            {"act": "relu", "out_frac": 1},
            [M((1 << 13, 1 << 12)), M((1 << 12, 4)), M((4,))],
            "limit",
        ),
        (
            "dense_backward",
            {"act": "relu", "dx_frac": 16, "dw_frac": 31},
            [M((2, 3)), M((3, 4)), M((2, 4)), M((2, 4), 20)],
            "dw_frac",
        ),
        (
            "dense_backward",
            {"act": "relu", "dx_frac": 16, "dw_frac": 28},
            [M((2, 3)), M((3, 4)), M((2, 4)), M((3, 4))],
            "rows",
        ),
        (
            "dense_backward_params",
            {"act": "relu", "dw_frac": 28},
            [M((2, 3)), M((2, 5)), M((2, 4))],
            "same shape",
        ),
        ("softmax_xent_grad", {"out_frac": 16}, [M((2, 3)), M((2,), 4)], "frac_bits 0"),
        ("softmax_xent_grad", {"out_frac": 0}, [M((2, 3)), M((2,), 0)], "out_frac"),
        ("add", {}, [M((2, 3))], "2..256 inputs"),
        ("add", {}, [M((2, 3)), M((2, 3), 11)], "must match"),
        ("sgd_update", {"lr_num": 1, "lr_shift": 0}, [M((2, 3), 20), M((2, 3), 12)], "must lie in"),
        ("sgd_update", {"lr_num": 0, "lr_shift": 0}, [M((2, 3)), M((2, 3))], "lr_num"),
    ],
)
def test_infer_refuses_with_clear_message(
    op: str, params: dict[str, Any], inputs: list[TensorMeta], message: str
) -> None:
    with pytest.raises(KernelError, match=message):
        infer(op, params, inputs)


def test_infer_refuses_non_meta_and_non_dict_params() -> None:
    with pytest.raises(KernelError, match="TensorMeta"):
        infer("add", {}, [("<i8", (1,), 0), M((1,))])  # type: ignore[list-item]
    with pytest.raises(KernelError, match="params must be an object"):
        infer("add", [], [M((1,)), M((1,))])  # type: ignore[arg-type]


def test_execute_refuses_bad_labels_and_non_tensors() -> None:
    with pytest.raises(KernelError, match="labels must lie"):
        execute("softmax_xent_grad", {"out_frac": 8}, [T([[1, 2]], 0), T([2], 0)])
    with pytest.raises(KernelError, match="expected Tensor"):
        execute("add", {}, [np.zeros(2), np.zeros(2)])  # type: ignore[list-item]


def h(s: int) -> int:
    return (1 << (s - 1)) if s > 0 else 0


@settings(max_examples=40, deadline=None)
@given(num_bits=st.integers(1, 30), data=st.data(), negative=st.booleans())
def test_leaky_relu_boundary(num_bits: int, data: st.DataObject, negative: bool) -> None:
    shift = num_bits
    num = data.draw(st.integers(1, (1 << shift) - 1))
    z_max = (INT64_MAX - h(shift)) // num  # largest allowed max|z|
    sign = -1 if negative else 1
    params = {"act": "leaky_relu", "slope_num": num, "slope_shift": shift, "out_frac": 0}
    one, zero = T([[1]], 0), T([0], 0)
    x = T([[sign * z_max], [-1]], 0)
    (a,) = execute("dense_forward", params, [x, one, zero])
    assert rows(a) == ref_dense_forward(x, one, zero, params)
    with pytest.raises(ExactRangeError):
        execute("dense_forward", params, [T([[sign * (z_max + 1)], [-1]], 0), one, zero])


@settings(max_examples=40, deadline=None)
@given(lr_num=st.integers(1, 1 << 32), lr_shift=st.integers(0, 40), v=st.integers(1, 1 << 62))
def test_sgd_and_add_boundaries(lr_num: int, lr_shift: int, v: int) -> None:
    s = 10 + lr_shift - 10
    g_max = (INT64_MAX - h(s)) // lr_num
    params = {"lr_num": lr_num, "lr_shift": lr_shift}
    w = T([0, 0], 10)
    (w2,) = execute("sgd_update", params, [w, T([g_max, -g_max], 10)])
    assert w2.data.tolist() == [-rshift(g_max * lr_num, s), -rshift(-g_max * lr_num, s)]
    if g_max < INT64_MAX:  # otherwise no int64 tensor lies beyond the boundary
        with pytest.raises(ExactRangeError):
            execute("sgd_update", params, [w, T([g_max + 1, 0], 10)])
    (total,) = execute("add", {}, [T([v], 3), T([INT64_MAX - v], 3)])
    assert int(total.data[0]) == INT64_MAX
    with pytest.raises(ExactRangeError):
        execute("add", {}, [T([v], 3), T([INT64_MAX - v + 1], 3)])
