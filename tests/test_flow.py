"""Invertibility, log-determinants and ActNorm of ginn.flow."""
import pytest
import torch

from ginn import _onednn
from ginn.flow import ActNorm, ConditionalFlow, CouplingNets, Permutation, dense
from helpers import small_translator


def _trained(tau, dim, cond_dim, steps=30):
    """Give `tau` non-trivial weights: a few large optimiser steps on random pairs."""
    opt = torch.optim.Adam(tau.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        z, c = torch.randn(64, dim, generator=g) * 2 + 1, torch.randn(64, cond_dim, generator=g)
        loss = tau.nll(z, c).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    return tau


@pytest.mark.parametrize("dim", [1, 2, 7, 128, 268])
@pytest.mark.parametrize("weights", ["random", "trained"])
def test_translate_inverts_invert(dim, weights):
    cond_dim = 6
    tau = small_translator(dim, cond_dim, seed=dim)
    tau.invert(torch.randn(64, dim) * 3, torch.randn(64, cond_dim))  # ActNorm init on a training batch
    if weights == "trained":
        _trained(tau, dim, cond_dim)
    tau.eval()
    with torch.no_grad():
        z, c = torch.randn(32, dim) * 2 + 1, torch.randn(32, cond_dim)
        v, _ = tau.invert(z, c)
        assert not torch.allclose(v, z, atol=1e-2)  # the map is not the identity
        torch.testing.assert_close(tau.translate(v, c), z, atol=1e-4, rtol=1e-4)
        v2 = torch.randn(32, dim)
        torch.testing.assert_close(tau.invert(tau.translate(v2, c), c)[0], v2, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dim", [1, 2, 3, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logdet_is_log_abs_det_of_jacobian(dim, dtype):
    tau = small_translator(dim, 3, seed=dim).to(dtype)
    tau.invert(torch.randn(32, dim, dtype=dtype), torch.randn(32, 3, dtype=dtype))
    _trained(tau.float(), dim, 3, steps=10)
    tau = tau.to(dtype).eval()
    c = torch.randn(1, 3, dtype=dtype)
    h = tau.embed(c)
    for _ in range(3):
        z = torch.randn(dim, dtype=dtype)
        jac = torch.autograd.functional.jacobian(lambda x: tau.flow(x[None], h)[0][0], z)
        expected = torch.linalg.slogdet(jac).logabsdet
        got = tau.flow(z[None], h)[1][0]
        tol = 1e-3 if dtype == torch.float32 else 1e-9
        torch.testing.assert_close(got, expected, atol=tol, rtol=tol)


def test_actnorm_normalises_its_init_batch_and_only_that():
    x = torch.randn(1000, 4) * torch.tensor([0.1, 1.0, 10.0, 3.0]) + torch.tensor([5.0, -1.0, 0.0, 2.0])
    an = ActNorm(4)
    y, logdet = an(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(0), torch.ones(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(logdet, torch.full((1000,), float(an.scale.detach().log().sum())))
    loc, scale = an.loc.clone(), an.scale.clone()
    an(x * 7 - 3)
    assert torch.equal(an.loc, loc) and torch.equal(an.scale, scale)


def test_actnorm_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        ActNorm(3)(torch.randn(1, 3))


def test_actnorm_is_not_initialised_in_eval_mode():
    an = ActNorm(3).eval()
    y, _ = an(torch.randn(10, 3) * 5)
    assert not bool(an.initialized)


@pytest.mark.parametrize("width", [40, _onednn.MIN_WIDTH])     # the plain path, and oneDNN where available
@pytest.mark.parametrize("slope", [0.01, None])
def test_fast_dense_matches_plain_pytorch(slope, width):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, width, generator=g, requires_grad=True)
    w = (torch.randn(width, width, generator=g) / width ** 0.5).requires_grad_()
    b = torch.randn(width, generator=g, requires_grad=True)
    fast = dense(x, w, b, slope)
    plain = torch.nn.functional.linear(x, w, b)
    plain = torch.nn.functional.leaky_relu(plain, slope) if slope is not None else plain
    torch.testing.assert_close(fast, plain, atol=1e-4, rtol=1e-4)
    up = torch.randn(16, width, generator=g)
    for gf, gp in zip(torch.autograd.grad(fast, [x, w, b], up), torch.autograd.grad(plain, [x, w, b], up)):
        torch.testing.assert_close(gf, gp, atol=1e-3, rtol=1e-4)


def test_onednn_path_only_for_wide_cpu_float32_layers():
    wide, narrow = torch.randn(_onednn.MIN_WIDTH, _onednn.MIN_WIDTH), torch.randn(128, 128)
    assert _onednn.applies(torch.randn(4, _onednn.MIN_WIDTH), wide) == _onednn.AVAILABLE
    assert not _onednn.applies(torch.randn(4, 128), narrow)
    assert not _onednn.applies(torch.randn(4, _onednn.MIN_WIDTH).double(), wide.double())
    assert not _onednn.applies(torch.randn(4, _onednn.MIN_WIDTH, 1), wide)


def test_permutation_reverse_inverts_forward():
    perm = Permutation.random(7, torch.Generator().manual_seed(0))
    z = torch.randn(5, 7)
    torch.testing.assert_close(perm(z), z[:, perm.perm], atol=0, rtol=0)
    torch.testing.assert_close(perm.reverse(perm(z)), z, atol=0, rtol=0)
    torch.testing.assert_close(perm(perm.reverse(z)), z, atol=0, rtol=0)


def test_coupling_nets_match_two_separate_mlps():
    nets = CouplingNets(7, 3, hidden_dim=12, depth=2)
    x = torch.randn(5, 7)
    h = nets.hidden_dim
    a_s = torch.nn.functional.leaky_relu(x @ nets.first.weight[:h].T + nets.first.bias[:h], 0.01)
    a_t = torch.nn.functional.leaky_relu(x @ nets.first.weight[h:].T + nets.first.bias[h:], 0.01)
    for ls, lt in zip(nets.s_hidden, nets.t_hidden):
        a_s = torch.nn.functional.leaky_relu(a_s @ ls.weight.T + ls.bias, 0.01)
        a_t = torch.nn.functional.leaky_relu(a_t @ lt.weight.T + lt.bias, 0.01)
    s, t = nets(x)
    torch.testing.assert_close(s, torch.tanh(a_s @ nets.s_out.weight.T + nets.s_out.bias), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(t, a_t @ nets.t_out.weight.T + nets.t_out.bias, atol=1e-5, rtol=1e-5)
    assert s.abs().max() < 1  # tanh-bounded log-scale


def test_permutations_are_seeded_and_differ_between_blocks():
    a, b = ConditionalFlow(9, 2, n_flows=3, hidden_dim=8, seed=5), ConditionalFlow(9, 2, n_flows=3, hidden_dim=8, seed=5)
    perms = [blk.permute.perm for blk in a.blocks]
    assert all(torch.equal(p, blk.permute.perm) for p, blk in zip(perms, b.blocks))
    assert not torch.equal(perms[0], perms[1])
    assert all(sorted(p.tolist()) == list(range(9)) for p in perms)


def test_flow_rejects_empty_dims():
    with pytest.raises(ValueError, match="dim >= 1"):
        ConditionalFlow(0, 3)
