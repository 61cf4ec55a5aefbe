"""rs_lib.hessian: power-iteration and PyHessian eigenvalues against explicitly formed Hessians."""

import pytest
import torch
from torch import nn
from torch.autograd.functional import hessian as explicit_hessian
from torch.func import functional_call

from rs_lib.hessian import (ce_objective, input_hessian_top_eigenvalue, kl_objective,
                            weight_hessian_top_eigenvalue)

TIGHT = dict(iters=2000, tol=1e-12)  # run power iteration to convergence for the comparisons


def _mlp(activation: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), activation, nn.Linear(8, 3)).double().eval()


def _cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(27, 3)).double().eval()


def _batch_hessian(loss_fn, x):
    return explicit_hessian(lambda z: loss_fn(z.view_as(x)), x.flatten())


def _largest_magnitude(matrix):
    eigs = torch.linalg.eigvalsh(matrix)
    top, second = eigs.abs().sort(descending=True).values[:2]
    assert second < 0.98 * top, "test data must have a distinct largest |eigenvalue|"
    return eigs[eigs.abs().argmax()]


CASES = {
    "tanh_mlp_ce": lambda: (_mlp(nn.Tanh()), torch.randn(4, 6, dtype=torch.float64)),
    "softplus_mlp_ce": lambda: (_mlp(nn.Softplus()), torch.randn(4, 6, dtype=torch.float64)),
    "relu_cnn_ce": lambda: (_cnn(), torch.rand(3, 1, 5, 5, dtype=torch.float64)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_power_iteration_matches_largest_magnitude_eigenvalue_of_explicit_hessian(case):
    model, x = CASES[case]()
    loss_fn = ce_objective(model, torch.arange(x.shape[0]) % 3)
    expected = _largest_magnitude(_batch_hessian(loss_fn, x))
    got = input_hessian_top_eigenvalue(loss_fn, x, generator=torch.Generator().manual_seed(1), **TIGHT)
    assert isinstance(got, float)
    assert got == pytest.approx(float(expected), rel=1e-4)


@pytest.mark.parametrize("case", sorted(CASES))
def test_per_example_eigenvalues_match_per_example_hessian_blocks(case):
    model, x = CASES[case]()
    loss_fn = ce_objective(model, torch.arange(x.shape[0]) % 3)
    n, d = x.shape[0], x[0].numel()
    blocks = _batch_hessian(loss_fn, x).view(n, d, n, d)
    got = input_hessian_top_eigenvalue(loss_fn, x, per_example=True, **TIGHT)
    assert got.shape == (n,)
    for i in range(n):
        off_diagonal = torch.cat([blocks[i, :, j] for j in range(n) if j != i])
        assert off_diagonal.abs().max() < 1e-12  # block-diagonal: examples do not interact
        assert float(got[i]) == pytest.approx(float(_largest_magnitude(blocks[i, :, i])), rel=1e-4)


def test_kl_objective_hessian_is_psd_at_clean_point_and_matches_explicit():
    model, x = _mlp(nn.Tanh()), torch.randn(4, 6, dtype=torch.float64)
    loss_fn = kl_objective(model, model(x))
    assert loss_fn(x).item() == pytest.approx(0.0, abs=1e-12)  # KL(p || p) = 0 at x' = x
    eigs = torch.linalg.eigvalsh(_batch_hessian(loss_fn, x))
    assert eigs.min() > -1e-10  # J^T (diag p - p p^T) J is PSD at x' = x even for smooth nets
    got = input_hessian_top_eigenvalue(loss_fn, x, **TIGHT)
    assert got == pytest.approx(float(eigs.max()), rel=1e-4)


def test_float64_option_runs_on_float32_input_and_keeps_sign():
    model = _mlp(nn.Softplus())
    x = torch.randn(4, 6)  # float32 input, float64 model: dtype casts x
    loss_fn = ce_objective(model, torch.tensor([0, 1, 2, 0]))
    got = input_hessian_top_eigenvalue(loss_fn, x, dtype=torch.float64, per_example=True, **TIGHT)
    assert got.dtype == torch.float64
    expected = _largest_magnitude(_batch_hessian(loss_fn, x.double()))
    assert float(got[got.abs().argmax()]) == pytest.approx(float(expected), rel=1e-4)


def test_same_generator_seed_gives_same_estimate_and_leaves_global_rng_alone():
    model, x = _mlp(nn.Tanh()), torch.randn(4, 6, dtype=torch.float64)
    loss_fn = ce_objective(model, torch.tensor([0, 1, 2, 0]))
    state = torch.get_rng_state()
    runs = [input_hessian_top_eigenvalue(loss_fn, x, iters=3, generator=torch.Generator().manual_seed(7))
            for _ in range(2)]
    assert runs[0] == runs[1]
    assert torch.equal(torch.get_rng_state(), state)


def test_loss_linear_in_x_has_zero_eigenvalue():
    got = input_hessian_top_eigenvalue(lambda z: (3.0 * z).sum(), torch.randn(2, 5), per_example=True)
    assert torch.equal(got, torch.zeros(2))


def _weight_case():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()  # 31 parameters
    return model, torch.randn(8, 3, dtype=torch.float64), torch.arange(8) % 3


def _explicit_weight_hessian(model, x, y):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss(theta):
        pieces = torch.split(theta, [s.numel() for s in shapes])
        params = {n: t.view(s) for n, t, s in zip(names, pieces, shapes)}
        return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    return explicit_hessian(loss, flat)


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_pyhessian_eigenvalue_matches_explicit_weight_hessian():
    model, x, y = _weight_case()
    expected = _largest_magnitude(_explicit_weight_hessian(model, x, y))
    # stale gradients with a graph (e.g. from an earlier PyHessian call) must not be added in
    nn.functional.cross_entropy(model(x), y).backward(create_graph=True)
    got = weight_hessian_top_eigenvalue(model, x, y, iters=1000, tol=1e-6,
                                        generator=torch.Generator().manual_seed(0))
    assert got == pytest.approx(float(expected), rel=1e-3)
    assert all(p.grad is None for p in model.parameters())
    loose = weight_hessian_top_eigenvalue(model, x, y, generator=torch.Generator().manual_seed(0))
    assert loose == pytest.approx(float(expected), rel=5e-2)  # default tol = 1e-3 on the change


def test_weight_hessian_restores_each_module_mode_and_global_rng():
    model, x, y = _weight_case()
    model.train()
    model[1].eval()  # a mixed state must survive, not just the top-level flag
    state = torch.get_rng_state()
    weight_hessian_top_eigenvalue(model, x, y, iters=5, generator=torch.Generator().manual_seed(0))
    assert model.training and model[0].training and not model[1].training and model[2].training
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("kwargs", [dict(iters=0), dict(iters=2.5), dict(tol=0.0), dict(tol=-1e-3),
                                    dict(dtype=torch.int64)])
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        input_hessian_top_eigenvalue(lambda z: (z ** 2).sum(), torch.randn(2, 3), **kwargs)


def test_non_scalar_or_constant_loss_raises_value_error():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="scalar"):
        input_hessian_top_eigenvalue(lambda z: (z ** 2).sum(1), x)
    with pytest.raises(ValueError, match="differentiabl"):
        input_hessian_top_eigenvalue(lambda z: torch.tensor(1.0), x)
    with pytest.raises(ValueError):
        input_hessian_top_eigenvalue(lambda z: z.sum(), torch.randn(3))  # no batch dimension


def test_bad_arguments_to_builders_and_weight_hessian_raise_value_error():
    model, x, y = _weight_case()
    with pytest.raises(ValueError):
        ce_objective(model, torch.randn(8))
    with pytest.raises(ValueError):
        kl_objective(model, torch.randn(8))
    with pytest.raises(ValueError):
        weight_hessian_top_eigenvalue(model, x, y, iters=0)
    with pytest.raises(ValueError):
        weight_hessian_top_eigenvalue(model, x, y, tol=0.0)
    with pytest.raises(ValueError):
        weight_hessian_top_eigenvalue(model, x, y[:3])
