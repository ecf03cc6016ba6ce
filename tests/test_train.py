"""ginn.train: optimiser, data sources, checkpoints, bit-exact resume, guards."""
import numpy as np
import pytest
import torch

from ginn.train import (CHECKPOINT_NAME, EpochBatches, History, Plateau, final_gain, fit, learning_rate,
                        linear_gaussian, make_optimizer, training_loss, training_precision)
from ginn.translator import MLPTranslator
from helpers import small_translator


@pytest.fixture(scope="module")
def data():
    return linear_gaussian(512, dim=5, cond_dim=3, seed=0)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_optimiser_is_the_authors():
    opt = make_optimizer(small_translator(), lr=16 * 4.5e-6, device=torch.device("cpu"))
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.Adam)
    assert group["betas"] == (0.5, 0.9) and group["amsgrad"] and group["lr"] == pytest.approx(7.2e-5)


def test_default_learning_rate_scales_with_batch(data, monkeypatch):
    seen = {}
    import ginn.train as train
    real = train.make_optimizer
    monkeypatch.setattr(train, "make_optimizer", lambda m, lr, d: seen.setdefault("lr", lr) and real(m, lr, d))
    fit(small_translator(), data["z_theta"], data["z_phi"], steps=1, batch_size=32, progress=False)
    assert seen["lr"] == pytest.approx(32 * 4.5e-6)


def test_training_lowers_the_nll_and_records_history(data):
    tau = small_translator()
    hist = fit(tau, data["z_theta"], data["z_phi"], steps=60, batch_size=64, lr=2e-3,
               val=(data["z_theta"][:128], data["z_phi"][:128]), val_every=20, progress=False)
    assert hist.step == list(range(1, 61)) and hist.val_step == [20, 40, 60]
    assert np.mean(hist.loss[-10:]) < np.mean(hist.loss[:10]) - 1.0
    assert hist.val_nll[-1] < hist.val_nll[0]
    assert not tau.training


def test_bf16_training_learns_like_fp32_and_is_reproducible(data):
    "bfloat16 steps: the loss falls as in float32, the weights differ from float32's, two runs agree bit for bit."
    val = (data["z_theta"][:128], data["z_phi"][:128])
    runs = {}
    for name, precision in (("fp32", "fp32"), ("bf16", "bf16"), ("bf16 again", "bf16")):
        tau = small_translator()
        hist = fit(tau, data["z_theta"], data["z_phi"], steps=60, batch_size=64, lr=2e-3, val=val, val_every=20,
                   precision=precision, progress=False)
        runs[name] = (_weights(tau), hist)
    for name in runs:
        assert runs[name][1].val_nll[-1] < runs[name][1].val_nll[0] - 1.0, name
    assert abs(runs["bf16"][1].val_nll[-1] - runs["fp32"][1].val_nll[-1]) < 0.5
    a, b, c = (runs[k][0] for k in ("fp32", "bf16", "bf16 again"))
    assert all(torch.equal(b[k], c[k]) for k in b), "two bf16 runs of one seed differ"
    assert not all(torch.equal(a[k], b[k]) for k in a), "bf16 changed nothing: the autocast did not apply"
    assert all(v.dtype == a[k].dtype for k, v in b.items())            # the weights stay float32


def test_bf16_keeps_the_flow_in_float32_and_validates_in_float32(data):
    tau = small_translator()
    z, c = torch.from_numpy(data["z_theta"][:64]), torch.from_numpy(data["z_phi"][:64])
    with training_precision("bf16", torch.device("cpu")):
        v, logdet = tau.invert(z, c)
        loss, _ = training_loss(tau, z, c)
    assert v.dtype == logdet.dtype == loss.dtype == torch.float32
    with pytest.raises(ValueError, match="precision must be one of"):
        fit(small_translator(), data["z_theta"], data["z_phi"], steps=1, batch_size=32, precision="half",
            progress=False)


def test_inputs_as_tensors_arrays_and_memmapped_npy_agree(data, tmp_path):
    np.save(tmp_path / "zt.npy", data["z_theta"])
    np.save(tmp_path / "zp.npy", data["z_phi"])
    sources = [(data["z_theta"], data["z_phi"]), (torch.from_numpy(data["z_theta"]), torch.from_numpy(data["z_phi"])),
               (tmp_path / "zt.npy", str(tmp_path / "zp.npy"))]
    results = []
    for zt, zp in sources:
        tau = small_translator()
        fit(tau, zt, zp, steps=5, batch_size=32, progress=False)
        results.append(_weights(tau))
    for other in results[1:]:
        assert all(torch.equal(results[0][k], other[k]) for k in other)


def test_resume_is_bit_exact(data, tmp_path):
    kw = dict(steps=12, batch_size=64, lr=1e-3, seed=3, progress=False, ckpt_every=4)
    straight = small_translator()
    fit(straight, data["z_theta"], data["z_phi"], ckpt_dir=tmp_path / "a", **kw)

    first = small_translator()
    fit(first, data["z_theta"], data["z_phi"], ckpt_dir=tmp_path / "b", **{**kw, "steps": 5})  # "interrupted" at 5
    resumed = small_translator()                                   # a fresh process would start from scratch
    hist = fit(resumed, data["z_theta"], data["z_phi"], ckpt_dir=tmp_path / "b", resume=True, **kw)
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs from the uninterrupted one"
    assert hist.step == list(range(1, 13))


def test_interrupted_run_resumes_from_last_checkpoint(data, tmp_path, monkeypatch):
    import ginn.train as train
    kw = dict(steps=10, batch_size=64, lr=1e-3, progress=False, ckpt_every=3)
    straight = small_translator()
    fit(straight, data["z_theta"], data["z_phi"], ckpt_dir=tmp_path / "a", **kw)

    real_loss, calls = train.training_loss, {"n": 0}
    def interrupting_loss(*a):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return real_loss(*a)
    monkeypatch.setattr(train, "training_loss", interrupting_loss)
    with pytest.raises(KeyboardInterrupt):
        fit(small_translator(), data["z_theta"], data["z_phi"], ckpt_dir=tmp_path / "b", **kw)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [CHECKPOINT_NAME]  # no half-written file
    monkeypatch.setattr(train, "training_loss", real_loss)
    resumed = small_translator()
    fit(resumed, data["z_theta"], data["z_phi"], ckpt_dir=tmp_path / "b", resume=True, **kw)
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_errors(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fit(small_translator(), data["z_theta"], data["z_phi"], steps=2, batch_size=8,
            ckpt_dir=tmp_path, resume=True, progress=False)
    fit(small_translator(), data["z_theta"], data["z_phi"], steps=2, batch_size=8, ckpt_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        fit(small_translator(), data["z_theta"], data["z_phi"], steps=4, batch_size=16,
            ckpt_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(ValueError, match="different model"):
        fit(small_translator(hidden_dim=8), data["z_theta"], data["z_phi"], steps=4, batch_size=8,
            ckpt_dir=tmp_path, resume=True, progress=False)
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="corrupt"):
        fit(small_translator(), data["z_theta"], data["z_phi"], steps=4, batch_size=8,
            ckpt_dir=tmp_path, resume=True, progress=False)


def test_non_finite_loss_names_step_and_checkpoint(data, tmp_path, monkeypatch):
    import ginn.train as train
    real_loss, calls = train.training_loss, {"n": 0}
    def diverging_loss(*a):
        calls["n"] += 1
        loss, reported = real_loss(*a)
        return (loss * float("nan"), float("nan")) if calls["n"] == 6 else (loss, reported)
    monkeypatch.setattr(train, "training_loss", diverging_loss)
    with pytest.raises(FloatingPointError, match=r"at step 5; last good checkpoint: .*checkpoint.safetensors"):
        fit(small_translator(), data["z_theta"], data["z_phi"], steps=10, batch_size=32, ckpt_dir=tmp_path,
            ckpt_every=2, progress=False)
    monkeypatch.setattr(train, "training_loss", real_loss)
    step = int(__import__("safetensors").safe_open(str(tmp_path / CHECKPOINT_NAME), "pt").metadata()["step"])
    assert step == 4  # the checkpoint before the failure is intact


@pytest.mark.parametrize("mutate, message", [
    (lambda zt, zp: (zt[:, :4], zp), r"z_theta has rows of shape \(4,\) but the model expects \(5,\)"),
    (lambda zt, zp: (zt, zp[:, :2]), r"z_phi has rows of shape \(2,\) but the model expects \(3,\)"),
    (lambda zt, zp: (zt[:100], zp), "same number of pairs"),
    (lambda zt, zp: (np.where(np.arange(len(zt))[:, None] == 7, np.nan, zt), zp), "NaN or inf .first in row 7"),
    (lambda zt, zp: (zt, np.where(np.arange(len(zp))[:, None] == 3, np.inf, zp)), "z_phi contains NaN or inf"),
])
def test_bad_training_data_gets_clear_errors(data, mutate, message):
    zt, zp = mutate(data["z_theta"], data["z_phi"])
    with pytest.raises(ValueError, match=message):
        fit(small_translator(), zt, zp, steps=1, batch_size=8, progress=False)


def test_bad_sources_and_settings(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="run the extract stage"):
        fit(small_translator(), tmp_path / "missing.npy", data["z_phi"], steps=1, batch_size=8, progress=False)
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="not a readable .npy"):
        fit(small_translator(), tmp_path / "bad.npy", data["z_phi"], steps=1, batch_size=8, progress=False)
    with pytest.raises(TypeError, match="numpy array, a torch tensor or a path"):
        fit(small_translator(), data["z_theta"].tolist(), data["z_phi"], steps=1, batch_size=8, progress=False)
    with pytest.raises(ValueError, match="batch_size must be between 1"):
        fit(small_translator(), data["z_theta"], data["z_phi"], steps=1, batch_size=10_000, progress=False)
    with pytest.raises(ValueError, match="steps must be positive"):
        fit(small_translator(), data["z_theta"], data["z_phi"], steps=0, batch_size=8, progress=False)


def test_epoch_batches_cover_each_epoch_once():
    b = EpochBatches(100, 32, seed=0)
    epoch = np.concatenate([b(k) for k in range(3)])
    assert len(np.unique(epoch)) == 96
    assert not np.array_equal(b(0), b(3))


def test_mlp_translator_trains_by_squared_error(data):
    m = MLPTranslator(dim=5, cond_dim=3, hidden_dim=32, depth=4, embedding_dim=8, cond_hidden_dim=16, cond_depth=1)
    hist = fit(m, data["z_theta"], data["z_phi"], steps=400, batch_size=64, lr=5e-3, progress=False)
    residual = data["z_theta"] - m.predict(torch.from_numpy(data["z_phi"])).detach().numpy()
    assert np.mean(hist.loss[-10:]) < 0.5 * np.mean(hist.loss[:10])
    np.testing.assert_allclose(hist.loss[-1], (residual ** 2).sum(1).mean(), rtol=0.5)
    # the fitted variance tracks the residual variance per dimension
    np.testing.assert_allclose(m.log_var.exp().detach().numpy(), residual.var(0), rtol=0.5)


# --- training until the validation NLL stops improving (ginn.train.Plateau) -----------------------------------

def test_plateau_never_stops_a_curve_that_keeps_improving():
    rule = Plateau(patience=2, cuts=2, factor=0.5, min_delta=0.01)
    actions = [rule.update(s, 100.0 - 0.02 * s) for s in range(2000)]      # 0.02 per validation > min_delta
    assert set(actions) == {"improved"} and rule.scale == 1.0


def test_plateau_cuts_then_stops_on_a_flat_curve_and_not_before():
    rule = Plateau(patience=3, cuts=2, factor=0.1, min_delta=0.01)
    for s in range(5):
        assert rule.update(s, 10.0 - s) == "improved"
    flat = [rule.update(5 + s, 6.0 + 0.005 * (s % 2)) for s in range(9)]  # wiggles below min_delta
    assert flat == ["wait", "wait", "cut"] * 2 + ["wait", "wait", "stop"]
    assert rule.scale == pytest.approx(0.01) and rule.best == 6.0 and rule.best_step == 4


def test_plateau_rejects_bad_settings():
    for bad in [dict(patience=0), dict(patience=2, factor=1.0), dict(patience=2, cuts=-1), dict(patience=2, min_delta=-1)]:
        with pytest.raises(ValueError, match="patience"):
            Plateau(**bad)


def test_early_stopping_ends_a_run_on_its_plateau_with_its_best_weights(data):
    tau = small_translator()
    val = (data["z_theta"][:128], data["z_phi"][:128])
    hist = fit(tau, data["z_theta"], data["z_phi"], steps=5000, batch_size=64, lr=3e-3, val=val, val_every=20,
               warmup=20, patience=3, cuts=1, factor=0.3, progress=False)
    assert hist.stopped == "plateau" and hist.step[-1] < 5000
    assert hist.best_step == hist.val_step[int(np.argmin(hist.val_nll))]
    from ginn.metrics import conditional_nll
    assert conditional_nll(tau, *val)["nats"] == pytest.approx(min(hist.val_nll), abs=1e-4)   # the best weights
    assert hist.lr[0] == pytest.approx(3e-3) and hist.lr[-1] == pytest.approx(3e-3 * 0.3)     # one cut happened


def test_anneal_cuts_a_capped_run_once_at_its_point_and_leaves_a_run_that_cut(data):
    val = (data["z_theta"][:128], data["z_phi"][:128])
    kw = dict(batch_size=64, lr=3e-3, val=val, val_every=10, patience=50, cuts=1, factor=0.3, progress=False)
    capped = fit(small_translator(), data["z_theta"], data["z_phi"], steps=100, anneal=0.7, **kw)
    plain = fit(small_translator(), data["z_theta"], data["z_phi"], steps=100, **kw)
    assert capped.lr == [3e-3] * 7 + [pytest.approx(9e-4)] * 3            # validations at 10..100: cut at step 70
    assert plain.lr == [3e-3] * 10                                      # patience 50: the rule alone never cuts
    assert capped.val_nll[:7] == plain.val_nll[:7] and capped.val_nll[7:] != plain.val_nll[7:]
    early = dict(kw, patience=2)                                       # a rule that cuts before the anneal point
    ran = fit(small_translator(), data["z_theta"], data["z_phi"], steps=3000, anneal=0.9, **early)
    assert ran.stopped == "plateau" and min(ran.lr) == pytest.approx(9e-4)   # one cut only, from the rule
    with pytest.raises(ValueError, match="anneal is the fraction of the cap"):
        fit(small_translator(), data["z_theta"], data["z_phi"], steps=10, batch_size=64, anneal=0.5, progress=False)


def test_an_interrupted_annealed_run_resumes_to_the_same_weights(data, tmp_path, monkeypatch):
    import ginn.train as train
    val = (data["z_theta"][:128], data["z_phi"][:128])
    kw = dict(steps=40, batch_size=64, lr=3e-3, val=val, val_every=5, patience=50, cuts=1, anneal=0.5, seed=2,
              ckpt_every=5, precision="bf16", progress=False)
    straight = small_translator()
    hist = fit(straight, data["z_theta"], data["z_phi"], ckpt_dir=tmp_path / "a", **kw)
    real_loss, calls = train.training_loss, {"n": 0}
    def interrupting_loss(*a):
        calls["n"] += 1
        if calls["n"] == 23:                        # after the anneal point (step 20) and its checkpoint
            raise KeyboardInterrupt
        return real_loss(*a)
    monkeypatch.setattr(train, "training_loss", interrupting_loss)
    with pytest.raises(KeyboardInterrupt):
        fit(small_translator(), data["z_theta"], data["z_phi"], ckpt_dir=tmp_path / "b", **kw)
    monkeypatch.setattr(train, "training_loss", real_loss)
    resumed = small_translator()
    again = fit(resumed, data["z_theta"], data["z_phi"], ckpt_dir=tmp_path / "b", resume=True, **kw)
    assert (again.lr, again.val_nll) == (hist.lr, hist.val_nll)
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in straight.state_dict().items())


def test_warmup_rises_linearly():
    assert [learning_rate(s, 1.0, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert learning_rate(10, 1.0, 0, scale=0.1) == pytest.approx(0.1)


def test_a_resumed_early_stopped_run_ends_where_an_uninterrupted_one_does(data, tmp_path):
    val = (data["z_theta"][:128], data["z_phi"][:128])
    kw = dict(batch_size=64, lr=3e-3, val=val, val_every=10, warmup=10, patience=2, cuts=1, seed=1,
              ckpt_every=10, progress=False)
    straight = small_translator()
    hist = fit(straight, data["z_theta"], data["z_phi"], steps=3000, ckpt_dir=tmp_path / "a", **kw)
    assert hist.stopped == "plateau"
    cut = hist.val_step[len(hist.val_step) // 2]                       # "interrupted" half-way, on a checkpoint
    fit(small_translator(), data["z_theta"], data["z_phi"], steps=cut, ckpt_dir=tmp_path / "b", **kw)
    resumed = small_translator()
    again = fit(resumed, data["z_theta"], data["z_phi"], steps=3000, ckpt_dir=tmp_path / "b", resume=True, **kw)
    assert (again.stopped, again.best_step, again.val_nll) == (hist.stopped, hist.best_step, hist.val_nll)
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in straight.state_dict().items())


def test_final_gain_is_the_share_of_the_improvement_made_in_the_last_fifth():
    h = History(val_step=[100, 200, 300, 400, 500], val_nll=[10.0, 5.0, 3.0, 2.0, 1.0])
    assert final_gain(h) == pytest.approx(1.0 / 9.0)
    h.val_nll = [10.0, 5.0, 3.0, 1.0, 1.0]
    assert final_gain(h) == 0.0
    assert final_gain(History(val_step=[1], val_nll=[3.0])) is None


def test_patience_needs_validation(data):
    with pytest.raises(ValueError, match="needs validation"):
        fit(small_translator(), data["z_theta"], data["z_phi"], steps=5, batch_size=32, patience=2, progress=False)
