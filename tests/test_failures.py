"""Ill-formed inputs (librosa's test_failures.py style).

Oracle for every test: a ``ParameterError`` whose message names the
offending argument and the value that was given.
"""

import pytest
import torch

from nmfcore import metrics
from nmfcore.exceptions import NMFCoreError, ParameterError
from nmfcore.nmf import NMF, NMF2D, NMF3D, NMFD

F64 = torch.float64


@pytest.fixture
def V(gen):
    return torch.rand(12, 9, generator=gen, dtype=F64) + 0.1


@pytest.fixture
def model(V):
    return NMF(V.shape, 3, generator=0).double()


def test_parameter_error_is_value_error():
    """Documented: ParameterError is a ValueError (and an NMFCoreError)."""
    assert issubclass(ParameterError, ValueError)
    assert issubclass(ParameterError, NMFCoreError)
    with pytest.raises(ValueError):
        NMF((4, 3), rank=0)


# --------------------------------------------------------------------- V
@pytest.mark.parametrize("method", ["fit", "sparse_fit"])
@pytest.mark.parametrize("bad, match", [
    (-1.5, r"V must be non-negative, found V\.min\(\)=-1\.5"),
    (float("nan"), r"V must contain only finite values, found V entry nan"),
    (float("inf"), r"V must contain only finite values, found V entry inf"),
    (float("-inf"), r"V must .*(finite|non-negative).*-inf"),
])
def test_bad_entries_in_v(V, model, method, bad, match):
    V = V.clone()
    V[3, 4] = bad
    with pytest.raises(ParameterError, match=match):
        getattr(model, method)(V)


@pytest.mark.parametrize("bad, match", [
    (-2.0, r"V must be non-negative, found V\.min\(\)=-2"),
    (float("nan"), "V entry nan"),
])
def test_bad_entries_in_sparse_v(V, model, bad, match):
    V = V.clone()
    V[1, 2] = bad
    with pytest.raises(ParameterError, match=match):
        model.fit(V.to_sparse())


def test_bad_entries_in_v_nmfd(gen):
    V = torch.rand(1, 5, 12, generator=gen, dtype=F64)
    V[0, 2, 3] = -0.25
    with pytest.raises(ParameterError, match=r"V\.min\(\)=-0\.25"):
        NMFD(V.shape, 2, T=3).double().fit(V)


def test_v_not_a_tensor(model):
    with pytest.raises(ParameterError, match="V must be a torch.Tensor, got ndarray"):
        model.fit(torch.rand(12, 9).numpy())


def test_v_integer_dtype(model):
    with pytest.raises(ParameterError, match="V must be a floating-point tensor, got dtype=torch.int64"):
        model.fit(torch.ones(12, 9, dtype=torch.long))


@pytest.mark.parametrize("shape", [(9, 12), (12, 10), (1, 12, 9)])
def test_v_shape_mismatch(model, shape):
    V = torch.rand(*shape, dtype=F64)
    expected = r"V has shape \(" + ", ".join(map(str, shape)) + r"\) but the model reconstructs shape \(12, 9\)"
    with pytest.raises(ParameterError, match=expected):
        model.fit(V)
    with pytest.raises(ParameterError, match=expected):
        model.sparse_fit(V)


def test_v_shape_mismatch_nmfd(gen):
    m = NMFD((1, 5, 12), 2, T=3).double()
    with pytest.raises(ParameterError, match=r"V has shape \(1, 5, 11\) but the model reconstructs shape \(1, 5, 12\)"):
        m.fit(torch.rand(1, 5, 11, dtype=F64))


@pytest.mark.parametrize("Vshape, match", [
    ((3, 4, 5), r"Vshape=\(3, 4, 5\) must have 2 entries"),
    ((1, 5), None),
])
def test_vshape_length(Vshape, match):
    if match is None:
        NMF(Vshape, 1)  # valid
        return
    with pytest.raises(ParameterError, match=match):
        NMF(Vshape, 2)


@pytest.mark.parametrize("cls, Vshape, match", [
    (NMFD, (5, 12), r"Vshape=\(5, 12\) must have 3 entries"),
    (NMF2D, (1, 5, 12), r"Vshape=\(1, 5, 12\) must have 4 entries"),
    (NMF3D, (1, 1, 5, 12), r"Vshape=\(1, 1, 5, 12\) must have 5 entries"),
])
def test_vshape_length_conv(cls, Vshape, match):
    with pytest.raises(ParameterError, match=match):
        cls(Vshape, 2)


def test_kernel_larger_than_v():
    with pytest.raises(ParameterError, match="T=13"):
        NMFD((1, 5, 12), 2, T=13)
    with pytest.raises(ParameterError, match=r"kernel_size=\(3, 13\)"):
        NMF2D((1, 1, 5, 12), 2, (3, 13))
    with pytest.raises(ParameterError, match=r"kernel_size=\(1, 1, 9\)"):
        NMF3D((1, 1, 4, 5, 6), 2, (1, 1, 9))


# ------------------------------------------------------------------ rank
@pytest.mark.parametrize("rank", [0, -1, 2.5, True, "3"])
def test_rank_must_be_positive_integer_vshape(rank):
    with pytest.raises(ParameterError, match=f"rank={rank!r} must be a positive integer"):
        NMF((10, 8), rank=rank)


@pytest.mark.parametrize("rank", [0, -1, 2.5])
@pytest.mark.parametrize("cls, Vshape, kw", [
    (NMFD, (1, 5, 12), {"T": 2}),
    (NMF2D, (1, 1, 6, 7), {"kernel_size": 2}),
    (NMF3D, (1, 1, 4, 5, 6), {"kernel_size": 2}),
])
def test_rank_must_be_positive_integer_conv(cls, Vshape, kw, rank):
    with pytest.raises(ParameterError, match=f"rank={rank!r} must be a positive integer"):
        cls(Vshape, rank, **kw)


@pytest.mark.parametrize("rank", [0, -1, 2.5])
def test_rank_must_be_positive_integer_base(rank):
    with pytest.raises(ParameterError, match=f"rank={rank!r} must be a positive integer"):
        NMF(rank=rank)


def test_rank_missing():
    with pytest.raises(ParameterError, match="rank=None must be a positive integer"):
        NMF()


def test_rank_mismatch(gen):
    with pytest.raises(ParameterError, match="W has rank 3 but H has rank 2"):
        NMF(W=torch.rand(5, 3), H=torch.rand(4, 2))
    with pytest.raises(ParameterError, match="rank=4 does not match the rank 3"):
        NMF(W=torch.rand(5, 3), rank=4)


# ----------------------------------------------------------------- W / H
@pytest.mark.parametrize("name", ["W", "H"])
def test_factor_tensor_with_negative_entries(name):
    bad = torch.rand(5, 3)
    bad[1, 2] = -0.5
    with pytest.raises(ParameterError, match=rf"{name} must be non-negative, found {name}\.min\(\)=-0\.5"):
        NMF(**{name: bad})


@pytest.mark.parametrize("name", ["W", "H"])
def test_factor_tensor_with_nan(name):
    bad = torch.rand(5, 3)
    bad[0, 0] = float("nan")
    with pytest.raises(ParameterError, match=rf"{name} must contain only finite values, found {name} entry nan"):
        NMF(**{name: bad})


@pytest.mark.parametrize("shape", [(5, 0), (-2, 3), (5, 2.5)])
def test_factor_shape_not_positive(shape):
    with pytest.raises(ParameterError, match=r"W=\(.*\) must be a shape of positive integers"):
        NMF(W=shape)


def test_factor_one_dimensional():
    with pytest.raises(ParameterError, match=r"W must have at least 2 dimensions.*\(5,\)"):
        NMF(W=torch.rand(5))


def test_factor_wrong_type():
    with pytest.raises(ParameterError, match="W must be a shape tuple or a tensor, got float"):
        NMF(W=3.0, rank=2)


def test_fit_without_h():
    with pytest.raises(ParameterError, match="fit needs both W and H, but H is None"):
        NMF(W=(5, 2)).fit(torch.rand(4, 5))


# ------------------------------------------------------------------ beta
@pytest.mark.parametrize("beta", [0, -1, -0.5])
@pytest.mark.parametrize("method", ["fit", "sparse_fit"])
def test_nonpositive_beta_with_zeros_in_v(V, model, beta, method):
    V = V.clone()
    V[0, 0] = 0
    with pytest.raises(ParameterError, match=f"beta={beta:g} <= 0 needs a strictly positive V"):
        getattr(model, method)(V, beta=beta)


def test_nonpositive_beta_with_sparse_v(V, model):
    V = V.clone()
    V[V < 0.5] = 0
    with pytest.raises(ParameterError, match="beta=0 <= 0 needs a strictly positive V"):
        model.fit(V.to_sparse(), beta=0)


def test_nonpositive_beta_with_positive_v_is_fine(V, model):
    assert model.fit(V, beta=0, max_iter=2, tol=0) == 2


@pytest.mark.parametrize("beta", [float("nan"), float("inf"), "1", None])
def test_beta_not_a_finite_number(V, model, beta):
    with pytest.raises(ParameterError, match=f"beta={beta!r} must be a finite real number"):
        model.fit(V, beta=beta)


# ------------------------------------------------------ fit hyper-parameters
@pytest.mark.parametrize("l1_ratio", [-0.1, 1.5, 2])
def test_l1_ratio_outside_unit_interval(V, model, l1_ratio):
    with pytest.raises(ParameterError, match=rf"l1_ratio={l1_ratio!r} must lie in \[0, 1\]"):
        model.fit(V, alpha=0.1, l1_ratio=l1_ratio)


@pytest.mark.parametrize("alpha", [-0.1, float("inf"), float("nan")])
def test_alpha_negative_or_not_finite(V, model, alpha):
    with pytest.raises(ParameterError, match=f"alpha={alpha!r} must be a finite non-negative number"):
        model.fit(V, alpha=alpha)


@pytest.mark.parametrize("tol", [-1e-4, float("nan")])
def test_tol_negative(V, model, tol):
    with pytest.raises(ParameterError, match=f"tol={tol!r}"):
        model.fit(V, tol=tol)


@pytest.mark.parametrize("max_iter", [-1, 2.5])
@pytest.mark.parametrize("method", ["fit", "sparse_fit"])
def test_max_iter_invalid(V, model, max_iter, method):
    with pytest.raises(ParameterError, match=f"max_iter={max_iter!r} must be a positive integer"):
        getattr(model, method)(V, max_iter=max_iter)


@pytest.mark.parametrize("check_every", [0, -3])
def test_check_every_invalid(V, model, check_every):
    with pytest.raises(ParameterError, match=f"check_every={check_every} must be a positive integer"):
        model.fit(V, check_every=check_every)


def test_callback_not_callable(V, model):
    with pytest.raises(ParameterError, match="callback=3 must be callable"):
        model.fit(V, callback=3)


@pytest.mark.parametrize("name", ["sW", "sH"])
@pytest.mark.parametrize("value", [0, 1, -0.1, 1.5])
def test_sparseness_targets_outside_open_unit_interval(V, model, name, value):
    with pytest.raises(ParameterError, match=rf"{name}={value!r} must lie in \(0, 1\)"):
        model.sparse_fit(V, **{name: value})


@pytest.mark.parametrize("init", ["svd", "NNDSVD", ""])
def test_bad_init_name(V, model, init):
    with pytest.raises(ParameterError, match=f"init={init!r} must be one of"):
        model.fit(V, init=init)


@pytest.mark.parametrize("solver", ["cd", "HALS", None])
def test_bad_solver(V, model, solver):
    with pytest.raises(ParameterError, match=f"solver={solver!r} must be one of"):
        model.fit(V, solver=solver)


@pytest.mark.parametrize("beta", [1, 0.5, 3])
def test_hals_needs_beta_2(V, model, beta):
    with pytest.raises(ParameterError, match=f"solver='hals' minimises beta=2 only, got beta={beta:g}"):
        model.fit(V, beta=beta, solver="hals")


@pytest.mark.parametrize("cls, Vshape, k", [(NMFD, (1, 5, 12), 3), (NMF2D, (1, 1, 6, 7), 2)])
def test_hals_only_for_nmf(cls, Vshape, k):
    m = cls(Vshape, 2, k).double()
    with pytest.raises(ParameterError, match=f"solver='hals' is available for NMF only, not {cls.__name__}"):
        m.fit(torch.rand(*Vshape, dtype=F64), beta=2, solver="hals")


@pytest.mark.parametrize("generator", ["seed", 1.5])
def test_bad_generator(V, model, generator):
    with pytest.raises(ParameterError, match=f"generator={generator!r} must be None, an int seed or a torch.Generator"):
        model.fit(V, init="random", generator=generator)


# --------------------------------------------------------- dtype / device
def test_dtype_mismatch(V):
    m = NMF(V.shape, 3)  # float32 model
    with pytest.raises(ParameterError, match="V is torch.float64 on cpu but the model is torch.float32 on cpu"):
        m.fit(V)
    with pytest.raises(ParameterError, match="V is torch.float64"):
        m.sparse_fit(V)


@pytest.mark.cuda
def test_device_mismatch(V):
    m = NMF(V.shape, 3).double().cuda()
    with pytest.raises(ParameterError, match="V is torch.float64 on cpu but the model is torch.float64 on cuda"):
        m.fit(V)


# --------------------------------------------------------------- metrics
def test_metrics_shape_mismatch():
    with pytest.raises(ParameterError, match=r"input has shape \(2, 3\) but target has shape \(3, 2\)"):
        metrics.beta_div(torch.rand(2, 3), torch.rand(3, 2), 1.5)


def test_sparseness_single_entry():
    with pytest.raises(ParameterError, match=r"at least 2 entries, got x with shape \(1,\)"):
        metrics.sparseness(torch.ones(1))
