"""The SDIT parts of `ginn.baselines.domain_translation` (the `multidomain` experiment): conditional instance
normalisation, the attention of Eq. 6.9, reverse classification, the settings of a section."""
import numpy as np
import pytest
import torch

from ginn.baselines.domain_translation import (SDIT, SDITDiscriminator, attend, check_domain_translation, cin,
                                                domain_translation_runs, instance_stats, reverse_classification,
                                                sdit_settings)
from ginn.world import COLOUR_RGB


def test_cin_output_has_the_requested_statistics():
    torch.manual_seed(0)
    x = torch.randn(5, 7, 4, 4) * 3 + 2
    gamma, beta = torch.rand(5, 7) + 0.5, torch.randn(5, 7)
    mu, sd = instance_stats(cin(x, gamma, beta))
    assert torch.allclose(mu[..., 0, 0], beta, atol=1e-4)
    assert torch.allclose(sd[..., 0, 0], gamma, atol=1e-3)


def test_attention_with_a_zero_returns_its_input_and_with_one_the_transform():
    e, f = torch.randn(3, 8, 4, 4), torch.randn(3, 8, 4, 4)
    assert torch.equal(attend(e, f, torch.zeros(3, 1, 4, 4)), e)
    assert torch.equal(attend(e, f, torch.ones(3, 1, 4, 4)), f)
    assert not torch.allclose(attend(e, f, torch.full((3, 1, 4, 4), 0.5)), e)


def test_sdit_rows_switch_their_parts():
    dt = {"sdit": {"width": 8, "blocks": 1}}
    e, t, z = torch.randn(4, 16, 4, 4), torch.tensor([0, 1, 2, 3]), torch.randn(4, 8)
    for row in ("sdit", "stargan", "no_cin", "no_attention", "no_lat", "gamma_only", "beta_only"):
        s = sdit_settings(dt, row)
        G = SDIT((16, 4, 4), 4, s["width"], s["blocks"], s["z_dim"], s["cin"], s["noise"], s["attention"])
        h, a = G(e, t, z)
        assert h.shape == e.shape and a.shape == (4, 1, 4, 4)
        assert hasattr(G, "M") == (s["noise"] == "cin")
    assert sdit_settings(dt, "stargan")["lambda_lat"] == 0.0 and sdit_settings(dt, "sdit")["lambda_rec"] == 800.0
    src, cls, rec = SDITDiscriminator((16, 4, 4), 4, 8, 8)(e)
    assert src.shape == (4,) and cls.shape == (4, 4) and rec.shape == (4, 8)


def _solid(colours: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(-30, 30, (len(colours), 32, 32, 3))
    return np.clip(COLOUR_RGB[colours][:, None, None, :] + noise, 0, 255).astype(np.uint8)


def test_reverse_classification_is_at_chance_on_shuffled_labels():
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 4, 400), rng.integers(0, 4, 400)
    x_train, x_test = _solid(train, 1), _solid(test, 2)
    assert reverse_classification(x_train, train, x_test, test) > 0.95
    shuffled = reverse_classification(x_train, rng.permutation(train), x_test, test)
    assert abs(shuffled - 0.25) < 0.1


def test_check_names_the_bad_key():
    ok = dict(task="multidomain", domains={"colour": ["green", "blue"]}, rows={"colour": ["sdit"]}, sdit={},
              steps=2, n_per_domain=4, n_val=4, log_every=1, n2n={"train": {}})
    check_domain_translation(ok, "w")
    assert domain_translation_runs({"domain_translation": ok}) == ["colour.sdit", "n2n.colour"]
    for bad, message in [({"rows": {"colour": ["sditt"]}}, r"w.rows.colour"), ({"domains": {"colour": ["green"]},
                          "rows": {"colour": ["sdit"]}}, r"w.domains.colour"), ({"steps": 0}, r"w.steps"),
                         ({"task": "other"}, r"w.task")]:
        with pytest.raises(ValueError, match=message):
            check_domain_translation({**ok, **bad}, "w")
