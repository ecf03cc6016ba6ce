"""ginn's `Translator` computes the same function as a re-implementation of the authors' released model
(`bench/reference_net2net.py`) once the weights are copied across, and has the same number of parameters."""
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from reference_net2net import build_reference, copy_reference_into_ginn, n_params, reference_loss  # noqa: E402

from ginn.translator import Translator  # noqa: E402

SMALL = dict(dim=6, cond_dim=5, n_flows=3, hidden_dim=16, hidden_depth=2, embedding_dim=4,
             cond_hidden_dim=12, cond_depth=2)


@torch.no_grad()
def _randomise(ref):
    "Non-trivial ActNorm and BatchNorm statistics, so that a wrong copy shows up in the outputs."
    g = torch.Generator().manual_seed(1)
    for layer in ref.sub_layers:
        n = layer.norm_layer
        n.loc.copy_(torch.randn(n.loc.shape, generator=g) * 0.5)
        n.scale.copy_(torch.rand(n.scale.shape, generator=g) + 0.5)
    for m in ref.embedder.main:
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def _pair(dtype):
    torch.manual_seed(0)
    ref = build_reference(**SMALL)
    _randomise(ref)
    tau = Translator(seed=123, **SMALL)   # a different seed: every weight must come from the copy
    copy_reference_into_ginn(ref, tau)
    return ref.to(dtype), tau.to(dtype)


# float32 and float64 (ginn's oneDNN path is for width >= 1024 and is compared in tests/test_flow.py)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_copy_makes_outputs_equal(dtype):
    ref, tau = _pair(dtype)
    ref.eval(), tau.eval()
    exact = 1e-8 if dtype == torch.float64 else 1e-5
    g = torch.Generator().manual_seed(2)
    z = (torch.randn(32, SMALL["dim"], generator=g, dtype=torch.float64) * 2).to(dtype)
    c = torch.randn(32, SMALL["cond_dim"], generator=g, dtype=torch.float64).to(dtype)
    with torch.no_grad():
        v_ref, ld_ref = ref(z, c)
        v, ld = tau.flow(z, tau.embed(c))
        assert v.abs().max() > 0.1 and ld.abs().max() > 0.1           # a non-degenerate comparison
        torch.testing.assert_close(v, v_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ld, ld_ref, atol=1e-5, rtol=1e-5)
        # the same with ginn's public API (nll differs from the authors' loss only by the constant)
        nll = tau.nll(z, c)
        const = 0.5 * SMALL["dim"] * torch.log(torch.tensor(2 * torch.pi, dtype=dtype))
        torch.testing.assert_close(nll.mean(), reference_loss(v_ref, ld_ref) + const, atol=1e-5, rtol=1e-5)
        # reverse passes agree, and invert the forward passes
        w = torch.randn(32, SMALL["dim"], generator=g, dtype=torch.float64).to(dtype)
        z_ref = ref.reverse(w, c)
        z_tau = tau.flow.reverse(w, tau.embed(c))
        torch.testing.assert_close(z_tau, z_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ref.reverse(v_ref, c), z, atol=exact, rtol=exact)
        torch.testing.assert_close(tau.flow.reverse(v, tau.embed(c)), z, atol=exact, rtol=exact)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_copy_makes_training_gradients_equal(dtype):
    "In training mode (batch statistics in BatchNorm, ActNorm already initialised) losses and gradients agree."
    ref, tau = _pair(dtype)
    ref.train(), tau.train()
    tol = dict(atol=1e-8, rtol=1e-8) if dtype == torch.float64 else dict(atol=1e-4, rtol=1e-4)
    g = torch.Generator().manual_seed(3)
    z = torch.randn(16, SMALL["dim"], generator=g, dtype=torch.float64).to(dtype)
    c = torch.randn(16, SMALL["cond_dim"], generator=g, dtype=torch.float64).to(dtype)
    loss_ref = reference_loss(*ref(z, c))
    v, ld = tau.flow(z, tau.embed(c))
    loss = reference_loss(v, ld)
    torch.testing.assert_close(loss, loss_ref, **tol)
    loss_ref.backward(), loss.backward()
    # compare gradients through the mapping: ActNorm, first layers of the s/t nets, s output layer, embedding
    for layer, block in zip(ref.sub_layers, tau.flow.blocks):
        torch.testing.assert_close(block.norm.scale.grad, layer.norm_layer.scale.grad.reshape(-1), **tol)
        torch.testing.assert_close(block.norm.loc.grad, layer.norm_layer.loc.grad.reshape(-1), **tol)
        s0, t0 = layer.coupling.s[0].main[0], layer.coupling.t[0].main[0]
        torch.testing.assert_close(block.coupling.second.first.weight.grad,
                                   torch.cat([s0.weight.grad, t0.weight.grad], 0), **tol)
        torch.testing.assert_close(block.coupling.first.s_out.bias.grad,
                                   layer.coupling.s[1].main[-2].bias.grad, **tol)
        torch.testing.assert_close(block.coupling.first.t_hidden[1].weight.grad,
                                   layer.coupling.t[1].main[4].weight.grad, **tol)
    torch.testing.assert_close(tau.embed[0].weight.grad, ref.embedder.main[0].weight.grad, **tol)


def test_copy_is_needed():
    "Without the copy (or with the halves' swap left out) the two models differ: the check above can fail."
    torch.manual_seed(0)
    ref = build_reference(**SMALL).eval()
    _randomise(ref)
    tau = Translator(seed=123, **SMALL).eval()
    z, c = torch.randn(8, SMALL["dim"]), torch.randn(8, SMALL["cond_dim"])
    with torch.no_grad():
        for block in tau.flow.blocks:
            block.norm.initialized.fill_(True)
        assert not torch.allclose(tau.flow(z, tau.embed(c))[0], ref(z, c)[0], atol=1e-3)
        copy_reference_into_ginn(ref, tau)
        for layer, block in zip(ref.sub_layers, tau.flow.blocks):   # undo the swap compensation
            block.permute.perm.copy_(layer.shuffle.perm)
        assert not torch.allclose(tau.flow(z, tau.embed(c))[0], ref(z, c)[0], atol=1e-3)


def _count_on_meta(build):
    with torch.device("meta"):
        return n_params(build())


@pytest.mark.parametrize("setting", [
    dict(dim=128, cond_dim=128, n_flows=20, embedding_dim=128),   # the paper's setting (setting A)
    dict(dim=268, cond_dim=768, n_flows=24, embedding_dim=268),   # setting B of bench/translator_speed.py
])
def test_same_parameter_count(setting):
    common = dict(hidden_dim=1024, hidden_depth=2, cond_hidden_dim=256, cond_depth=2, **setting)
    n_ref = _count_on_meta(lambda: build_reference(**common))
    try:
        n_tau = _count_on_meta(lambda: Translator(**common))
    except Exception:                                            # meta construction unsupported: build on CPU
        n_tau = n_params(Translator(**common))
    # analytic count of the reference: embedding MLP + per block ActNorm + 4 MLPs of depth 2
    d, e, h, c = setting["dim"], setting["embedding_dim"], 1024, setting["cond_dim"]
    lin = lambda i, o: i * o + o                                  # noqa: E731
    embed = lin(c, 256) + 2 * lin(256, 256) + lin(256, e) + 3 * 2 * 256
    mlp = lin(d // 2 + e, h) + 2 * lin(h, h) + lin(h, d // 2)
    analytic = embed + setting["n_flows"] * (2 * d + 4 * mlp)
    assert n_ref == analytic
    assert n_tau == n_ref
    if setting["dim"] == 128:
        assert 189.0e6 < n_tau < 189.5e6
