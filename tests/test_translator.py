"""The public API of ginn.translator: shapes, sampling, recombination, NLL, errors, save/load."""
import math

import pytest
import torch

from ginn.flow import standard_normal_nll
from ginn.translator import MLPTranslator, Translator
from helpers import SMALL, small_translator


@pytest.fixture
def tau():
    t = small_translator(5, 3)
    t.invert(torch.randn(64, 5), torch.randn(64, 3))
    return t.eval()


def test_nll_is_the_change_of_variables_density(tau):
    z, c = torch.randn(10, 5), torch.randn(10, 3)
    v, logdet = tau.invert(z, c)
    expected = -torch.distributions.Normal(0.0, 1.0).log_prob(v).sum(1) - logdet
    torch.testing.assert_close(tau.nll(z, c), expected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(tau.bits_per_dim(z, c), expected / (5 * math.log(2)), atol=1e-4, rtol=1e-5)


def test_sample_shapes_temperature_and_generator(tau):
    c = torch.randn(4, 3)
    s = tau.sample(c, n=6, generator=torch.Generator().manual_seed(0))
    assert s.shape == (4, 6, 5)
    torch.testing.assert_close(s, tau.sample(c, n=6, generator=torch.Generator().manual_seed(0)))
    cold = tau.sample(c, n=6, temperature=0.0)
    torch.testing.assert_close(cold[:, 0], tau.translate(torch.zeros(4, 5), c), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cold[:, 0], cold[:, 5])
    assert not torch.allclose(s[:, 0], s[:, 1])


def test_recombine_keeps_v_and_swaps_the_condition(tau):
    z, c, c_new = torch.randn(8, 5), torch.randn(8, 3), torch.randn(8, 3)
    out = tau.recombine(z, c, c_new)
    v, _ = tau.invert(z, c)
    torch.testing.assert_close(tau.invert(out, c_new)[0], v, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(tau.recombine(z, c, c), z, atol=1e-4, rtol=1e-4)


def test_construction_is_seeded_without_touching_global_rng():
    state = torch.get_rng_state()
    a, b, c = small_translator(seed=1), small_translator(seed=1), small_translator(seed=2)
    assert torch.equal(torch.get_rng_state(), state)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_spatial_condition():
    tau = Translator(dim=6, cond_shape=(2, 16, 16), **SMALL)
    z, c = torch.randn(8, 6), torch.randn(8, 2, 16, 16)
    v, _ = tau.invert(z, c)
    tau.eval()
    torch.testing.assert_close(tau.translate(tau.invert(z, c)[0], c), z, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match=r"z_phi must have shape \(batch, 2, 16, 16\)"):
        tau.nll(z, torch.randn(8, 2, 8, 8))


@pytest.mark.parametrize("call, message", [
    (lambda t: t.nll(torch.randn(4, 6), torch.randn(4, 3)), r"z_theta must have shape \(batch, 5\)"),
    (lambda t: t.nll(torch.randn(4, 5), torch.randn(4, 2)), r"z_phi must have shape \(batch, 3\)"),
    (lambda t: t.nll(torch.randn(5), torch.randn(4, 3)), r"z_theta must have shape"),
    (lambda t: t.nll(torch.randn(4, 5), torch.randn(3, 3)), "same batch size"),
    (lambda t: t.translate(torch.randn(4, 5), torch.randn(2, 3)), "same batch size"),
    (lambda t: t.nll(torch.full((4, 5), float("nan")), torch.randn(4, 3)), "z_theta contains NaN or inf"),
    (lambda t: t.sample(torch.tensor([[0.0, float("inf"), 1.0]])), "z_phi contains NaN or inf"),
    (lambda t: t.nll(torch.zeros(4, 5, dtype=torch.long), torch.randn(4, 3)), "floating-point"),
    (lambda t: t.nll([[0.0] * 5], torch.randn(1, 3)), "must be a torch.Tensor"),
    (lambda t: t.sample(torch.randn(2, 3), n=0), "n >= 1"),
])
def test_bad_inputs_get_clear_errors(tau, call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call(tau)


def test_finiteness_check_does_not_trip_on_large_finite_values(tau):
    "The one-sum fast path overflows to inf here; the exact check behind it must still accept the batch."
    z_phi = torch.full((4, 3), 3e38)
    assert not torch.isfinite(z_phi.sum())
    tau.embedding(z_phi)                     # no error: every value is finite


@pytest.mark.parametrize("kwargs, message", [
    (dict(dim=0, cond_dim=3), "dim must be a positive integer"),
    (dict(dim=3), "exactly one of cond_dim"),
    (dict(dim=3, cond_dim=2, cond_shape=(1, 4, 4)), "exactly one of cond_dim"),
    (dict(dim=3, cond_dim=2, n_flows=0), "n_flows must be a positive integer"),
])
def test_bad_configs_get_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Translator(**kwargs)


def test_save_load_round_trip(tau, tmp_path):
    path = tau.save(tmp_path / "sub" / "tau.safetensors")
    assert [p.name for p in path.parent.iterdir()] == ["tau.safetensors"]  # no temp file left behind
    loaded = Translator.load(path).eval()
    z, c = torch.randn(6, 5), torch.randn(6, 3)
    torch.testing.assert_close(loaded.nll(z, c), tau.nll(z, c), atol=0, rtol=0)
    assert loaded.config == tau.config


def test_loaded_actnorm_is_not_reinitialised(tau, tmp_path):
    loaded = Translator.load(tau.save(tmp_path / "tau.safetensors"))
    loaded.train()
    before = {k: v.clone() for k, v in loaded.state_dict().items() if k.endswith(("loc", "scale"))}
    loaded.invert(torch.randn(32, 5) * 10 + 4, torch.randn(32, 3))  # a training-mode batch
    after = loaded.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_load_never_unpickles(tau, tmp_path):
    import pickle
    import safetensors
    path = tau.save(tmp_path / "tau.safetensors")
    with safetensors.safe_open(str(path), framework="pt") as f:
        assert set(f.metadata()) == {"ginn_class", "config"}
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="corrupt"):
        Translator.load(evil)


def test_missing_and_corrupt_and_mismatched_checkpoints(tau, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        Translator.load(tmp_path / "nope.safetensors")
    path = tau.save(tmp_path / "tau.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        Translator.load(path)
    with pytest.raises(ValueError, match="not a MLPTranslator"):
        MLPTranslator.load(tau.save(tmp_path / "tau2.safetensors"))


def test_mlp_translator_interface_and_round_trip(tmp_path):
    m = MLPTranslator(dim=4, cond_dim=3, hidden_dim=16, depth=4, embedding_dim=8, cond_hidden_dim=8).eval()
    c, z = torch.randn(5, 3), torch.randn(5, 4)
    s = m.sample(c, n=3)
    assert s.shape == (5, 3, 4)
    assert torch.equal(s[:, 0], s[:, 2])
    torch.testing.assert_close(m.translate(torch.randn(5, 4), c), m.predict(c))
    torch.testing.assert_close(m.recombine(z, c, c[[1, 0, 2, 3, 4]]), m.predict(c[[1, 0, 2, 3, 4]]))
    v, logdet = m.invert(z, c)
    torch.testing.assert_close(m.nll(z, c), standard_normal_nll(v) - logdet)
    loaded = MLPTranslator.load(m.save(tmp_path / "mlp.safetensors")).eval()
    torch.testing.assert_close(loaded.predict(c), m.predict(c), atol=0, rtol=0)


@pytest.mark.parametrize("cond_shape", [(8, 14, 14), (8, 7, 7), (3, 9, 5), (4, 16, 16)])
def test_spatial_condition_of_any_size(cond_shape):
    "The conv embedding H (Tab. S3b) sizes its last linear map for odd sizes too (MNIST's 14×14 and 7×7 taps)."
    tau = Translator(4, cond_shape=cond_shape, n_flows=2, hidden_dim=8, embedding_dim=4, seed=0)
    z_phi = torch.randn(3, *cond_shape)
    assert tau.sample(z_phi, n=2).shape == (3, 2, 4)
    assert torch.isfinite(tau.nll(torch.randn(3, 4), z_phi)).all()


def test_both_translators_share_one_base():
    from ginn.translator import BaseTranslator
    for cls in (Translator, MLPTranslator):
        assert issubclass(cls, BaseTranslator)
        assert all(name not in vars(cls) for name in ("embedding", "nll", "bits_per_dim", "save", "load"))


@pytest.mark.parametrize("kind, cls", [("cinn", Translator), ("mlp", MLPTranslator)])
def test_build_translator_for_each_condition_shape(kind, cls):
    from ginn.translator import KINDS, build_translator
    assert KINDS[kind] is cls
    settings = dict(n_flows=2, hidden_dim=8) if kind == "cinn" else dict(hidden_dim=8, depth=2)
    vector = build_translator(kind, 4, (3,), settings, seed=1)
    assert type(vector) is cls and vector.cond_shape == (3,) and vector.config["seed"] == 1
    spatial = build_translator(kind, 4, (2, 8, 8), settings, seed=0)
    assert spatial.cond_shape == (2, 8, 8) and spatial.config["cond_dim"] is None
    marginal = build_translator(kind, 4, None, settings, seed=0)  # the unconditional model: a constant condition
    assert marginal.cond_shape == (1,) and marginal.config["cond_batchnorm"] is False
    with pytest.raises(ValueError, match="unknown translator kind 'gan'"):
        build_translator("gan", 4, (3,), {}, seed=0)


def test_load_translator_reads_the_class_from_the_file(tau, tmp_path):
    from ginn.io import save_safetensors
    from ginn.translator import load_translator
    mlp = MLPTranslator(dim=4, cond_dim=3, hidden_dim=8, depth=2, embedding_dim=8, cond_hidden_dim=8)
    misleading = mlp.save(tmp_path / "model.cinn.safetensors")          # the file name says nothing reliable
    assert type(load_translator(misleading)) is MLPTranslator
    loaded = load_translator(tau.save(tmp_path / "tau.mlp.safetensors")).eval()
    assert type(loaded) is Translator and loaded.config == tau.config
    other = save_safetensors({}, tmp_path / "other.safetensors", {"ginn_class": "ConvVAE", "config": "{}"})
    with pytest.raises(ValueError, match="holds a ConvVAE checkpoint, not a Translator or MLPTranslator"):
        load_translator(other)
