"""ginn.features: extract once, cache atomically, reload memory-mapped, resample stochastic caches."""
import json

import numpy as np
import pytest
import torch
from helpers import small_translator

import ginn
from ginn import features
from ginn.features import (PosteriorSource, cache_files, check_pair, extract, hash_inputs, load_cache)


class FakeExpert:
    """Deterministic: a fixed linear map per tap. Stochastic: also a positive std. Counts calls and can fail."""
    input_kind = "array"

    def __init__(self, in_dim=6, out_dim=3, stochastic=False, fail_at_call=None, name="fake"):
        g = torch.Generator().manual_seed(1)
        self.w = {"early": torch.randn(in_dim, out_dim, generator=g), "late": torch.randn(in_dim, out_dim, generator=g)}
        self.name, self.taps, self.stochastic, self.fail_at_call = name, ("early", "late"), stochastic, fail_at_call
        self.batches = []

    def _h(self, batch, tap):
        self.batches.append(len(batch))
        if self.fail_at_call is not None and len(self.batches) == self.fail_at_call:
            raise RuntimeError("expert crashed")
        assert not torch.is_grad_enabled()
        return batch.double() @ self.w[tap or "late"].double()

    def encode(self, batch, tap=None):
        return self._h(batch, tap).float()

    def encode_distribution(self, batch, tap=None):
        h = self._h(batch, tap)
        return h.float(), (h.abs() * 0.5 + 0.2).float()


class TextExpert:
    name, taps, stochastic, input_kind = "text", ("pooled",), False, "text"

    def encode(self, batch, tap=None):
        return torch.tensor([[len(s), s.count("a"), sum(map(ord, s)) % 97] for s in batch], dtype=torch.float32)


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)


def expected(expert, x, tap=None):
    return (x.astype(np.float64) @ expert.w[tap or "late"].double().numpy()).astype(np.float32)


def encoded_in_batches(expert, x, batch_size, tap=None):
    with torch.no_grad():
        return np.concatenate([expert.encode(torch.from_numpy(x[i:i + batch_size]), tap).numpy()
                               for i in range(0, len(x), batch_size)])


def test_round_trip_gives_the_values_memory_mapped(x, tmp_path):
    expert = FakeExpert()
    sidecar = extract(expert, x, tmp_path, "z", tap="early", batch_size=16, progress=False)
    assert sidecar == tmp_path / "z.json"
    assert expert.batches == [16, 16, 16, 2]                 # one pass, in batches, last one partial
    cache = load_cache(tmp_path, "z", verify="hash")
    assert isinstance(cache.array, np.memmap) and cache.array.dtype == np.float32
    assert np.array_equal(cache.array, encoded_in_batches(FakeExpert(), x, 16, "early"))     # bit for bit
    np.testing.assert_allclose(cache.array, expected(expert, x, "early"), rtol=1e-6, atol=1e-6)
    assert len(cache) == 50 and cache.shape == (50, 3) and not cache.stochastic
    assert cache.source() is cache.array
    with pytest.raises(AttributeError, match="use .array"):
        cache.mean


def test_sidecar_records_what_made_the_cache(x, tmp_path):
    extract(FakeExpert(), x, tmp_path, "z", tap="late", progress=False)
    meta = json.loads((tmp_path / "z.json").read_text())
    assert meta["expert"] == "fake" and meta["tap"] == "late" and meta["n"] == 50 and meta["shape"] == [3]
    assert meta["dtype"] == "float32" and meta["stochastic"] is False and meta["ginn_version"] == ginn.__version__
    assert meta["source_sha256"] == hash_inputs(x)
    assert meta["files"] == {"array": {"file": "z.npy", "sha256": features._file_sha256(tmp_path / "z.npy")}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["z.json", "z.npy"]      # no temporary files left


def test_given_source_hash_is_recorded(x, tmp_path):
    extract(FakeExpert(), x, tmp_path, "z", source_hash="split-train-v1", progress=False)
    assert load_cache(tmp_path, "z").meta["source_sha256"] == "split-train-v1"


def test_source_hash_changes_with_the_inputs(x, tmp_path):
    y = x.copy()
    y[17, 2] += 1e-3
    assert hash_inputs(x) == hash_inputs(x.copy()) != hash_inputs(y)
    assert hash_inputs(x) != hash_inputs(x.astype(np.float64)) != hash_inputs(x.reshape(25, 12))
    assert hash_inputs(["a red disc", "a cat"]) != hash_inputs(["a red disc", "a cap"])
    assert hash_inputs(["ab", "c"]) != hash_inputs(["a", "bc"])
    mm = np.lib.format.open_memmap(tmp_path / "m.npy", "w+", np.float32, x.shape)
    mm[:] = x
    assert hash_inputs(mm, chunk=7) == hash_inputs(x)        # chunked hashing of a memmap is the same hash


def test_text_expert_gets_lists_of_strings(tmp_path):
    captions = ["a red disc", "a blue star", "a cat", "banana"] * 5
    extract(TextExpert(), captions, tmp_path, "captions", batch_size=3, progress=False)
    cache = load_cache(tmp_path, "captions")
    assert np.array_equal(cache.array, TextExpert().encode(captions).numpy())
    assert cache.meta["source_sha256"] == hash_inputs(captions)
    with pytest.raises(TypeError, match="list of str"):
        extract(TextExpert(), np.zeros((3, 2)), tmp_path, "bad", progress=False)
    with pytest.raises(TypeError, match="numpy array"):
        extract(FakeExpert(), captions, tmp_path, "bad", progress=False)


def test_stochastic_expert_caches_mean_and_std(x, tmp_path):
    expert = FakeExpert(stochastic=True)
    extract(expert, x, tmp_path, "vae", batch_size=20, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vae.json", "vae.mean.npy", "vae.std.npy"]
    cache = load_cache(tmp_path, "vae", verify="hash")
    mean = expected(expert, x)
    np.testing.assert_allclose(cache.mean, mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(cache.std, np.abs(mean) * 0.5 + 0.2, rtol=1e-5, atol=1e-6)
    assert cache.stochastic and cache.shape == (50, 3) and set(cache.files) == {"mean", "std"}
    with pytest.raises(AttributeError, match="mean and std"):
        cache.array


def test_resampling_recovers_the_posterior_and_is_a_function_of_seed_and_step(x, tmp_path):
    extract(FakeExpert(stochastic=True), x, tmp_path, "vae", progress=False)
    cache = load_cache(tmp_path, "vae")
    source = cache.source()
    assert isinstance(source, PosteriorSource) and len(source) == 50 and source.shape == (50, 3)
    idx = np.array([4, 0, 31])
    draws = torch.stack([source.sample_rows(idx, step=k, seed=3) for k in range(20000)]).numpy()
    assert draws.dtype == np.float32
    se = cache.std[idx] / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(0) - cache.mean[idx]) < 5 * se)                  # mean of samples ≈ mean
    np.testing.assert_allclose(draws.std(0), cache.std[idx], rtol=0.03)              # std of samples ≈ std
    z = (draws - cache.mean[idx]) / cache.std[idx]
    assert abs(np.corrcoef(z[:, 0, 0], z[:, 1, 0])[0, 1]) < 0.05                     # rows get independent noise
    same = source.sample_rows(idx, step=7, seed=3)
    assert torch.equal(same, torch.from_numpy(draws[7]))                             # same (seed, step): same bits
    assert torch.equal(same, load_cache(tmp_path, "vae").source().sample_rows(idx, step=7, seed=3))
    assert not torch.equal(same, source.sample_rows(idx, step=8, seed=3))            # other step: other noise
    assert not torch.equal(same, source.sample_rows(idx, step=7, seed=4))            # other seed: other noise


def test_two_stochastic_sources_draw_independent_noise(tmp_path):
    """Condition and target resampled with the same (seed, step) must not share their noise."""
    x = np.random.default_rng(1).normal(size=(40, 6)).astype(np.float32)
    extract(FakeExpert(stochastic=True), x, tmp_path, "a", progress=False)
    extract(FakeExpert(stochastic=True), x[::-1].copy(), tmp_path, "b", progress=False)
    a, b = load_cache(tmp_path, "a"), load_cache(tmp_path, "b")
    sa, sb = a.source(), b.source()
    assert sa.stream != sb.stream
    idx = np.arange(40)
    ea = np.concatenate([((sa.sample_rows(idx, k, 0).numpy() - a.mean) / a.std).ravel() for k in range(50)])
    eb = np.concatenate([((sb.sample_rows(idx, k, 0).numpy() - b.mean) / b.std).ravel() for k in range(50)])
    assert abs(np.corrcoef(ea, eb)[0, 1]) < 0.05


def test_posterior_source_reads_as_the_mean_and_flags_bad_rows():
    from ginn.train import check_source
    mean = np.arange(12, dtype=np.float32).reshape(6, 2)
    std = np.ones_like(mean)
    source = PosteriorSource(mean, std)
    assert np.array_equal(source[1:3], mean[1:3]) and np.array_equal(source[np.array([5, 0])], mean[[5, 0]])
    check_source(source, "z_theta", (2,))                   # fit's own check accepts it
    std[4, 1] = np.inf
    with pytest.raises(ValueError, match="row 4"):
        check_source(source, "z_theta", (2,), chunk=4)
    with pytest.raises(ValueError, match="same shape"):
        PosteriorSource(mean, std[:, :1])


def test_interrupted_extraction_leaves_no_cache_that_looks_complete(x, tmp_path):
    expert = FakeExpert(fail_at_call=3)
    with pytest.raises(RuntimeError, match="expert crashed"):
        extract(expert, x, tmp_path, "z", batch_size=10, progress=False)
    assert list(tmp_path.iterdir()) == []                   # no z.json, no z.npy, no temporary file left
    with pytest.raises(FileNotFoundError, match="Run the extract stage"):
        load_cache(tmp_path, "z")


def test_interrupted_reextraction_keeps_the_previous_cache(x, tmp_path):
    extract(FakeExpert(), x, tmp_path, "z", progress=False)
    before = np.array(load_cache(tmp_path, "z").array)
    with pytest.raises(RuntimeError):
        extract(FakeExpert(fail_at_call=2), x * 2, tmp_path, "z", batch_size=10, progress=False)
    assert np.array_equal(load_cache(tmp_path, "z", verify="hash").array, before)


def test_interruption_after_the_arrays_are_renamed_leaves_no_sidecar(x, tmp_path, monkeypatch):
    extract(FakeExpert(), x, tmp_path, "z", progress=False)

    def crash(obj, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(features, "write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        extract(FakeExpert(), x * 2, tmp_path, "z", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["z.npy"]       # new array, but no sidecar
    with pytest.raises(FileNotFoundError, match="interrupted"):
        load_cache(tmp_path, "z")


def test_sidecar_disagreement_names_field_values_and_fix(x, tmp_path):
    extract(FakeExpert(), x, tmp_path, "z", progress=False)
    meta = json.loads((tmp_path / "z.json").read_text())
    (tmp_path / "z.json").write_text(json.dumps({**meta, "shape": [4]}))
    with pytest.raises(ValueError, match=r"records shape \(50, 4\) but the array has shape \(50, 3\).*re-extract"):
        load_cache(tmp_path, "z")
    (tmp_path / "z.json").write_text(json.dumps(meta))
    np.save(tmp_path / "z.npy", np.zeros((50, 3), dtype=np.float64))           # replaced behind the sidecar's back
    with pytest.raises(ValueError, match=r"records dtype float32 but the array has dtype float64.*re-extract"):
        load_cache(tmp_path, "z")
    np.save(tmp_path / "z.npy", np.zeros((49, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"shape \(50, 3\) but the array has shape \(49, 3\)"):
        load_cache(tmp_path, "z")


def test_changed_bytes_are_found_by_hash_verification(x, tmp_path):
    extract(FakeExpert(), x, tmp_path, "z", progress=False)
    path = tmp_path / "z.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01                                          # same header, one bit of data changed
    path.write_bytes(bytes(data))
    load_cache(tmp_path, "z")                                 # shape check passes
    with pytest.raises(ValueError, match="SHA-256.*re-extract"):
        load_cache(tmp_path, "z", verify="hash")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_npy_says_reextract(x, tmp_path, damage):
    extract(FakeExpert(), x, tmp_path, "z", progress=False)
    path = tmp_path / "z.npy"
    data = path.read_bytes()
    path.write_bytes({"garbage": b"not an npy file at all" * 10, "truncated": data[:len(data) // 2],
                      "empty": b""}[damage])
    with pytest.raises(ValueError, match="corrupt or truncated: re-extract"):
        load_cache(tmp_path, "z")


def test_missing_array_and_invalid_sidecar(x, tmp_path):
    extract(FakeExpert(stochastic=True), x, tmp_path, "vae", progress=False)
    (tmp_path / "vae.std.npy").unlink()
    with pytest.raises(FileNotFoundError, match="vae.std.npy is missing.*re-extract"):
        load_cache(tmp_path, "vae")
    (tmp_path / "vae.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid ginn cache description.*re-extract"):
        load_cache(tmp_path, "vae")


def test_pair_length_mismatch_names_both_lengths_and_files(x, tmp_path):
    extract(FakeExpert(), x, tmp_path, "cond", progress=False)
    extract(FakeExpert(stochastic=True), x[:40], tmp_path, "target", progress=False)
    cond, target = load_cache(tmp_path, "cond"), load_cache(tmp_path, "target")
    with pytest.raises(ValueError, match=r"cond\.json holds 50 rows and .*target\.json holds 40"):
        check_pair(cond, target)
    extract(FakeExpert(stochastic=True), x, tmp_path, "target", progress=False)
    check_pair(cond, load_cache(tmp_path, "target"))


def test_unknown_tap_lists_the_taps(x, tmp_path):
    with pytest.raises(ValueError, match="no tap 'middle'; its taps are 'early', 'late'"):
        extract(FakeExpert(), x, tmp_path, "z", tap="middle", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_misbehaving_expert_fails_at_extraction(x, tmp_path):
    class Short(FakeExpert):
        def encode(self, batch, tap=None):
            return super().encode(batch, tap)[:-1]

    class Nan(FakeExpert):
        def encode(self, batch, tap=None):
            out = super().encode(batch, tap)
            if len(batch) < 20:                                # only the last, partial batch (rows 40:50)
                out[-1, 0] = float("nan")
            return out

    with pytest.raises(ValueError, match="one row per input"):
        extract(Short(), x, tmp_path, "z", progress=False)
    with pytest.raises(ValueError, match=r"NaN or inf for inputs in rows 40:50"):
        extract(Nan(), x, tmp_path, "z", batch_size=20, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["", "a/b", ".hidden", "z.npy", "z.json"])
def test_cache_names_are_plain_stems(x, tmp_path, name):
    with pytest.raises(ValueError, match="plain file stem"):
        extract(FakeExpert(), x, tmp_path, name, progress=False)


def test_cache_files_names():
    assert cache_files("z", False) == {"array": "z.npy"}
    assert cache_files("z", True) == {"mean": "z.mean.npy", "std": "z.std.npy"}


def test_fit_resamples_a_stochastic_cache_and_resumes_bit_exact(tmp_path, monkeypatch):
    from ginn.train import fit
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype(np.float32)
    extract(FakeExpert(in_dim=6, out_dim=5, stochastic=True), x, tmp_path, "theta", progress=False)
    extract(FakeExpert(in_dim=6, out_dim=3, name="cond"), x, tmp_path, "phi", progress=False)
    theta, phi = load_cache(tmp_path, "theta").source(), load_cache(tmp_path, "phi").source()
    calls = []
    real = PosteriorSource.sample_rows
    monkeypatch.setattr(PosteriorSource, "sample_rows",
                        lambda self, idx, step, seed: calls.append(step) or real(self, idx, step, seed))
    full = small_translator()
    fit(full, theta, phi, steps=8, batch_size=32, lr=1e-3, progress=False)
    part = small_translator()
    fit(part, theta, phi, steps=4, batch_size=32, lr=1e-3, ckpt_dir=tmp_path / "ck", ckpt_every=4, progress=False)
    resumed = small_translator()
    fit(resumed, theta, phi, steps=8, batch_size=32, lr=1e-3, ckpt_dir=tmp_path / "ck", resume=True, progress=False)
    assert calls[:8] == list(range(8))                         # one fresh sample per step
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
