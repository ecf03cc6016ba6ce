"""ginn.io: atomic writes leave a complete file or nothing, safetensors errors name the file, `Savable` round-trips."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from ginn.io import (Savable, atomic_path, load_savable, read_format, read_safetensors, save_npz, save_safetensors,
                     write_json)


class Affine(Savable, nn.Module):
    def __init__(self, dim: int, bias: bool = True):
        super().__init__()
        self.config = dict(dim=dim, bias=bias)
        self.lin = nn.Linear(dim, dim, bias=bias)


class Tagged(Affine):
    FORMAT = "test-tagged-1"


class Other(Affine):
    pass


def files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_path_replaces_on_success_and_cleans_up_on_failure(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name == ".out.txt.tmp"
        tmp.write_text("first")
    assert target.read_text() == "first" and files(target.parent) == ["out.txt"]
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the second")
            raise OSError("disk full")
    assert target.read_text() == "first" and files(target.parent) == ["out.txt"]


@pytest.mark.parametrize("write", [
    lambda p: write_json({"a": object()}, p),                       # not serialisable
    lambda p: save_npz(p, a=np.zeros(3), b=object()),                # an object array needs pickle
    lambda p: save_safetensors({"w": torch.zeros(2), "v": "no tensor"}, p, {}),
])
def test_a_failed_write_leaves_no_file_and_no_temporary_file(tmp_path, write):
    target = tmp_path / "out.bin"
    with pytest.raises(Exception):
        write(target)
    assert files(tmp_path) == []


def test_a_write_that_fails_midway_leaves_the_old_file(tmp_path, monkeypatch):
    target = save_npz(tmp_path / "a.npz", x=np.arange(3))
    real = np.savez_compressed

    def crash(f, **arrays):
        real(f, **arrays)
        raise KeyboardInterrupt                        # after the bytes are written, before the rename
    monkeypatch.setattr(np, "savez_compressed", crash)
    with pytest.raises(KeyboardInterrupt):
        save_npz(target, x=np.arange(5))
    assert files(tmp_path) == ["a.npz"] and np.load(target)["x"].tolist() == [0, 1, 2]


def test_write_json_format_and_save_npz(tmp_path):
    path = write_json({"b": [1, 2], "a": 0.5}, tmp_path / "m.json")
    assert path.read_text() == json.dumps({"a": 0.5, "b": [1, 2]}, indent=1, sort_keys=True) + "\n"
    npz = save_npz(tmp_path / "w.npz", x=np.arange(4), y=np.ones((2, 2)))
    assert npz == tmp_path / "w.npz" and files(tmp_path) == ["m.json", "w.npz"]
    with np.load(npz, allow_pickle=False) as f:
        assert f["x"].tolist() == [0, 1, 2, 3] and f["y"].shape == (2, 2)


def test_safetensors_round_trip_and_errors_that_name_the_file(tmp_path):
    path = save_safetensors({"w": torch.arange(6.0).view(2, 3).t()}, tmp_path / "w.safetensors", {"k": "v"})
    tensors, meta = read_safetensors(path)
    assert meta == {"k": "v"} and torch.equal(tensors["w"], torch.arange(6.0).view(2, 3).t())
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*nope.safetensors"):
        read_safetensors(tmp_path / "nope.safetensors")
    data = path.read_bytes()
    for name, content in [("truncated", data[: len(data) // 2]), ("garbage", b"\x00" * 3), ("empty", b"")]:
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(content)
        with pytest.raises(ValueError, match=rf"{name}.safetensors is not a readable safetensors file.*corrupt"):
            read_safetensors(bad)


def test_read_format_checks_the_format_and_names_the_stage(tmp_path):
    path = tmp_path / "net.safetensors"
    with pytest.raises(FileNotFoundError, match=r"no toy network at .*net.safetensors: run `dvc repro train_toy`"):
        read_format(path, "toy-1", "toy network", "train_toy")
    save_safetensors({"w": torch.ones(2)}, path, {"format": "toy-1"})
    tensors, meta = read_format(path, "toy-1", "toy network", "train_toy")
    assert torch.equal(tensors["w"], torch.ones(2)) and meta["format"] == "toy-1"
    with pytest.raises(ValueError, match=r"not a saved other network \(format 'toy-1', expected 'other-1'\).*-f train_o"):
        read_format(path, "other-1", "other network", "train_o")


def test_savable_round_trip_with_info_and_format(tmp_path):
    model = Tagged(3, bias=False)
    model.info = {"trained_on": "toy", "steps": 10}
    path = model.save(tmp_path / "m.safetensors")
    assert read_safetensors(path)[1]["format"] == "test-tagged-1"
    loaded = Tagged.load(path)
    assert type(loaded) is Tagged and loaded.config == model.config and loaded.info == model.info
    assert torch.equal(loaded.lin.weight, model.lin.weight) and loaded.lin.bias is None
    plain = Affine(2)
    _, meta = read_safetensors(plain.save(tmp_path / "plain.safetensors"))
    assert set(meta) == {"ginn_class", "config"}                     # no format, no info unless the class has them


def test_wrong_class_and_broken_files_fail_clearly(tmp_path):
    path = Affine(2).save(tmp_path / "affine.safetensors")
    with pytest.raises(ValueError, match="holds a Affine checkpoint, not a Other: load it with the matching class"):
        Other.load(path)
    assert type(load_savable(path, {"Other": Other, "Affine": Affine})) is Affine
    with pytest.raises(ValueError, match="not a Other or Tagged"):
        load_savable(path, {"Other": Other, "Tagged": Tagged})
    foreign = save_safetensors({"w": torch.zeros(1)}, tmp_path / "foreign.safetensors", {})
    with pytest.raises(ValueError, match="holds a non-ginn checkpoint"):
        Affine.load(foreign)
    untagged = save_safetensors(Tagged(2).state_dict(), tmp_path / "untagged.safetensors",
                                {"ginn_class": "Tagged", "config": json.dumps({"dim": 2, "bias": True})})
    with pytest.raises(ValueError, match="format None, not 'test-tagged-1'"):
        Tagged.load(untagged)
    wrong_shape = save_safetensors(Affine(3).state_dict(), tmp_path / "shape.safetensors",
                                   {"ginn_class": "Affine", "config": json.dumps({"dim": 2, "bias": True})})
    with pytest.raises(ValueError, match="weights do not match the saved config"):
        Affine.load(wrong_shape)
    bad_config = save_safetensors({}, tmp_path / "config.safetensors", {"ginn_class": "Affine", "config": "{"})
    with pytest.raises(ValueError, match="cannot rebuild a Affine"):
        Affine.load(bad_config)


def test_a_tagged_file_without_a_class_name_still_loads(tmp_path):
    "Files from before the class name was recorded: the format tag identifies a single class."
    model = Tagged(2)
    path = save_safetensors(model.state_dict(), tmp_path / "old.safetensors",
                            {"format": Tagged.FORMAT, "config": json.dumps(model.config)})
    assert torch.equal(Tagged.load(path).lin.weight, model.lin.weight)


def test_savable_needs_a_config(tmp_path):
    class NoConfig(Savable, nn.Module):
        pass
    with pytest.raises(TypeError, match="self.config"):
        NoConfig().save(tmp_path / "x.safetensors")
    assert files(tmp_path) == []
