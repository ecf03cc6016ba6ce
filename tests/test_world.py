"""ginn.world: aligned modalities, determinism, balance, captions from the vocabulary table, bad input."""
import hashlib
import re

import numpy as np
import pytest

from ginn.world import (COLOUR_RGB, GREY8_LEVELS, derived_input, grey8, grey8_level, render_background, rerender,
                        ATTRIBUTE_DIM, ATTRIBUTE_LAYOUT, COLOURS, MODALITIES, POSITIONS, SCENES, SHAPES, SIZES,
                        World, attributes_vector, box_downsample, load_vocab, make_captions, make_world,
                        object_depth, parse_vocab, position_class, render, render_background, sample_attributes,
                        sobel_edges)

ATTRIBUTES = ("shape", "colour", "size", "scene", "position", "x", "y", "radius", "rotation", "n_objects")


@pytest.fixture(scope="module")
def world():
    return make_world(6000, seed=0)


@pytest.fixture(scope="module")
def vocab():
    return load_vocab()


def digest(w: World, captions: bool = True) -> str:
    h = hashlib.sha256()
    for name in MODALITIES + ATTRIBUTES:
        h.update(np.ascontiguousarray(getattr(w, name)).tobytes())
    for name in sorted(w.objects):
        h.update(np.ascontiguousarray(w.objects[name]).tobytes())
    if captions:
        h.update("\n".join("|".join(c) for c in w.captions).encode())
    return h.hexdigest()


def far_from_objects(w: World, margin: float = 1.0) -> np.ndarray:
    """Pixels whose centre is more than `margin` pixels outside the circumcircle of every object."""
    s = w.image.shape[1]
    r, c = np.mgrid[0:s, 0:s] + 0.5
    far = np.ones(w.labels.shape, dtype=bool)
    for j in range(w.objects["x"].shape[1]):
        x, y, rad = (np.nan_to_num(w.objects[k][:, j], nan=-10.0)[:, None, None] * s for k in ("x", "y", "radius"))
        far &= np.hypot(c - x, r - y) > np.maximum(rad, 0) + margin
    return far


def word_in(phrase: str, text: str) -> bool:
    return re.search(r"(?<![\w-])" + re.escape(phrase) + r"(?![\w-])", text) is not None


def template_regex(template: str) -> re.Pattern:
    parts = re.split(r"(\{\w+\})", template)
    return re.compile("".join("an?" if p == "{a}" else ".+" if p.startswith("{") else re.escape(p) for p in parts))


# ---------------------------------------------------------------- shapes, dtypes, alignment

@pytest.mark.parametrize("size,max_objects", [(32, 1), (16, 2), (64, 3)])
def test_shapes_and_dtypes(size, max_objects):
    n = 7
    w = make_world(n, seed=1, size=size, max_objects=max_objects, n_captions=3)
    expected = dict(image=((n, size, size, 3), np.uint8), labels=((n, size, size), np.uint8),
                    depth=((n, size, size), np.float32), edges=((n, size, size), np.float32),
                    grey=((n, size, size), np.float32), low8=((n, 8, 8, 3), np.uint8), low16=((n, 16, 16, 3), np.uint8))
    for name, (shape, dtype) in expected.items():
        arr = getattr(w, name)
        assert arr.shape == shape and arr.dtype == dtype, (name, arr.shape, arr.dtype)
    for name in ("shape", "colour", "size", "scene", "position", "n_objects"):
        assert getattr(w, name).shape == (n,) and getattr(w, name).dtype == np.int64, name
    for name in ("x", "y", "radius", "rotation"):
        assert getattr(w, name).shape == (n,) and getattr(w, name).dtype == np.float32, name
    for name, arr in w.objects.items():
        assert arr.shape == (n, max_objects), name
    assert len(w) == n and len(w.captions) == n and all(len(c) == 3 and all(isinstance(s, str) for s in c) for c in w.captions)
    assert w.labels.max() <= len(SHAPES) and 0 <= w.grey.min() and w.grey.max() <= 1
    assert 0 <= w.edges.min() and w.edges.max() <= 1
    assert ((w.n_objects >= 1) & (w.n_objects <= max_objects)).all()
    a = attributes_vector(w)
    assert a.shape == (n, ATTRIBUTE_DIM) and a.dtype == np.float32


def test_label_at_object_centre_is_its_shape(world):
    n, s = len(world), world.image.shape[1]
    cy, cx = (world.y * s).astype(int), (world.x * s).astype(int)
    np.testing.assert_array_equal(world.labels[np.arange(n), cy, cx], world.shape + 1)
    np.testing.assert_allclose(world.depth[np.arange(n), cy, cx], object_depth(0, world.radius), atol=1e-6)


def test_primary_object_is_in_front_with_several_objects():
    w = make_world(600, seed=4, max_objects=3)
    assert set(np.unique(w.n_objects)) == {1, 2, 3}
    cy, cx = (w.y * 32).astype(int), (w.x * 32).astype(int)
    np.testing.assert_array_equal(w.labels[np.arange(600), cy, cx], w.shape + 1)
    absent = np.arange(3) >= w.n_objects[:, None]
    assert (w.objects["shape"][absent] == -1).all() and np.isnan(w.objects["x"][absent]).all()
    assert (w.objects["shape"][~absent] >= 0).all()
    np.testing.assert_array_equal(w.objects["shape"][:, 0], w.shape)


def test_label_map_agrees_with_image(world):
    background = render_background(world.scene, 32)
    diff = np.abs(world.image.astype(int) - background).max(-1)
    # a pixel labelled with an object is at least half covered by it: it must look different
    assert (diff[world.labels > 0] > 20).all()
    # pixels no object can touch are exactly the background, labelled 0, at the background's depth
    far = far_from_objects(world)
    np.testing.assert_array_equal(world.image[far], background[far])
    assert (world.labels[far] == 0).all()
    assert (world.depth[far] >= 0.75).all() and (world.depth[world.labels > 0] <= 0.65).all()
    sky = np.isin(world.scene, [SCENES.index("sky"), SCENES.index("night")])[:, None, None] & far
    assert (world.depth[sky] == 1).all()
    # every label value occurs, and it is the class of a shape that is really in the scene
    assert set(np.unique(world.labels)) == set(range(len(SHAPES) + 1))
    present = np.zeros((len(world), len(SHAPES) + 1), dtype=bool)
    present[np.arange(len(world))[:, None], world.labels.reshape(len(world), -1)] = True
    expected = np.zeros_like(present)
    expected[np.arange(len(world)), world.shape + 1] = True
    assert not (present[:, 1:] & ~expected[:, 1:]).any()


def test_render_reproduces_world_from_its_attributes(world):
    w = world[:50]
    rec = dict(scene=w.scene, **{k: v for k, v in w.objects.items() if k != "size"})
    image, labels, depth = render(rec, size=32)
    np.testing.assert_array_equal(image, w.image)
    np.testing.assert_array_equal(labels, w.labels)
    np.testing.assert_array_equal(depth, w.depth)


# ---------------------------------------------------------------- determinism

def test_deterministic_and_seed_dependent():
    a, b = make_world(200, seed=3, max_objects=2), make_world(200, seed=3, max_objects=2)
    assert digest(a) == digest(b)
    c = make_world(200, seed=4, max_objects=2)
    assert digest(c) != digest(a)
    assert not np.array_equal(a.image, c.image)
    assert (a.shape != c.shape).mean() > 0.5


def test_prefix_stable_and_primary_independent_of_max_objects():
    small, large = make_world(50, seed=9), make_world(130, seed=9)
    assert digest(small) == digest(large[:50])
    one, three = make_world(80, seed=9, max_objects=3), make_world(80, seed=9, max_objects=1)
    for name in ("shape", "colour", "size", "scene", "x", "y", "radius", "rotation"):
        np.testing.assert_array_equal(getattr(one, name), getattr(three, name))


def test_golden_digest():
    """The bytes of a small world, fixed: any machine, any numpy build must reproduce them. The captions are
    left out: they change, as they should, whenever a row is added to the vocabulary table."""
    w = make_world(16, seed=0, max_objects=3, n_captions=0)
    assert digest(w, captions=False) == GOLDEN, digest(w, captions=False)


GOLDEN = "0835da2624c69d849fe0bbb57bb811a9ee2ea5e82d943b0f52e64c6d0d7dbd80"


# ---------------------------------------------------------------- attribute balance

def test_attribute_balance(world):
    n = len(world)
    for name, names in [("shape", SHAPES), ("colour", COLOURS), ("size", SIZES), ("scene", SCENES),
                        ("position", POSITIONS)]:
        counts = np.bincount(getattr(world, name), minlength=len(names))
        assert len(counts) == len(names), name
        p = 1 / len(names)
        sd = np.sqrt(n * p * (1 - p))
        assert np.abs(counts - n * p).max() < 4.5 * sd, (name, counts)
    for name in ("x", "y"):
        hist = np.histogram(getattr(world, name), bins=6, range=(0.2, 0.8))[0]
        assert np.abs(hist - n / 6).max() < 4.5 * np.sqrt(n / 6), (name, hist)
    assert world.rotation.min() < -0.6 and world.rotation.max() > 0.6 and np.abs(world.rotation).max() <= np.pi / 5
    # shape and colour are independent: every pair occurs
    pairs = np.bincount(world.shape * len(COLOURS) + world.colour, minlength=len(SHAPES) * len(COLOURS))
    assert pairs.min() > 0.5 * n / len(pairs)


# ---------------------------------------------------------------- captions

def test_captions_name_colour_and_shape_with_train_synonyms(world, vocab):
    heldout = [p for kind, _, p, s in vocab.rows if s == "heldout" and kind != "template"]
    heldout_templates = [template_regex(p) for kind, _, p, s in vocab.rows if kind == "template" and s == "heldout"]
    for i in range(300):
        colour = vocab.phrases("colour", COLOURS[world.colour[i]], "train")
        shape = vocab.phrases("shape", SHAPES[world.shape[i]], "train")
        assert len(world.captions[i]) == 5
        for cap in world.captions[i]:
            assert any(word_in(p, cap) for p in colour), (cap, colour)
            assert any(word_in(p, cap) for p in shape), (cap, shape)
            assert not any(word_in(p, cap) for p in heldout), cap
            assert not any(t.fullmatch(cap) for t in heldout_templates), cap
    used = {p for caps in world.captions[:2000] for cap in caps for p in vocab.phrases("colour", "red", "all") if word_in(p, cap)}
    assert used == set(vocab.phrases("colour", "red", "train"))        # every train synonym gets used


def test_paraphrase_split_uses_only_heldout_phrases(world, vocab):
    w = world[:300]
    caps = make_captions(w, n_captions=4, split="paraphrase")
    templates = [template_regex(t) for t in vocab.templates("paraphrase")]
    kinds = dict(size=SIZES, colour=COLOURS, shape=SHAPES, position=POSITIONS, scene=SCENES)
    for i in range(len(w)):
        values = dict(size=w.size[i], colour=w.colour[i], shape=w.shape[i], position=w.position[i], scene=w.scene[i])
        for cap in caps[i]:
            assert any(t.fullmatch(cap) for t in templates), cap
            for kind in ("colour", "shape"):
                key = kinds[kind][values[kind]]
                assert any(word_in(p, cap) for p in vocab.phrases(kind, key, "paraphrase")), (cap, kind)
            for kind, names in kinds.items():
                for p in vocab.phrases(kind, names[values[kind]], "train"):
                    assert not word_in(p, cap), (cap, p)
    # the split changes wording only: same scenes, same stream
    assert caps != make_captions(w, n_captions=4, split="train")
    assert make_captions(w, n_captions=4, split="paraphrase") == caps


def test_articles_and_format(world):
    for caps in world.captions[:500]:
        for cap in caps:
            assert "{" not in cap and "  " not in cap and cap == cap.strip() and cap == cap.lower()
            assert not re.search(r"\ba [aeiou]", cap) and not re.search(r"\ban [^aeiou]", cap), cap


def test_new_synonym_is_data_not_code(tmp_path, world):
    from importlib import resources
    text = resources.files("ginn").joinpath("world_vocab.tsv").read_text(encoding="utf-8")
    path = tmp_path / "vocab.tsv"
    path.write_text(text + "colour\tred\truby\ttrain\n", encoding="utf-8")
    mine = load_vocab(path)
    assert "ruby" in mine.phrases("colour", "red", "train")
    caps = make_captions(world[:1000], n_captions=5, vocab=mine)
    red = world.colour[:1000] == COLOURS.index("red")
    assert any(word_in("ruby", c) for i in np.flatnonzero(red) for c in caps[i])
    assert not any(word_in("ruby", c) for i in np.flatnonzero(~red) for c in caps[i])


def test_bad_vocabulary_tables_are_refused(tmp_path):
    header = "kind\tkey\tphrase\tsplit\n"
    with pytest.raises(ValueError, match="is not a colour"):
        parse_vocab(header + "colour\tmauve\tmauve\ttrain\n")
    with pytest.raises(ValueError, match="line 2: split must be"):
        parse_vocab(header + "colour\tred\tred\ttest\n")
    with pytest.raises(ValueError, match=r"unknown slot\(s\) \['hue'\]"):
        parse_vocab(header + "template\tt\t{a} {hue} {colour} {shape}\ttrain\n")
    with pytest.raises(ValueError, match="needs at least one template"):
        parse_vocab(header + "colour\tred\tred\ttrain\n")
    with pytest.raises(ValueError, match="expected 4 tab-separated fields"):
        parse_vocab(header + "colour red red train\n")
    text = load_vocab().rows
    rows = [r for r in text if not (r[0] == "shape" and r[1] == "heart" and r[3] == "heldout")]
    with pytest.raises(ValueError, match=r"every shape needs at least one 'heldout' phrase; add rows for \['heart'\]"):
        parse_vocab(header + "".join("\t".join(r) + "\n" for r in rows))


def test_vocabulary_phrases_do_not_overlap_across_splits(vocab):
    """A held-out phrase must not occur inside a train phrase or template, or the split would leak."""
    train = [p for _, _, p, s in vocab.rows if s == "train"]
    for kind, key, p, s in vocab.rows:
        if s == "heldout" and kind != "template":
            assert not any(word_in(p, t) for t in train), p


# ---------------------------------------------------------------- derived modalities

def test_edges_zero_on_constant_region_and_large_on_boundary(world):
    flat = np.full((2, 16, 16), 0.37, dtype=np.float32)
    assert (sobel_edges(flat) == 0).all()
    step = np.zeros((1, 16, 16), dtype=np.float32)
    step[:, :, 8:] = 0.5
    e = sobel_edges(step)
    assert (e[:, :, :6] == 0).all() and (e[:, :, 10:] == 0).all() and np.allclose(e[:, :, 7:9], 0.5)
    # the world: the backgrounds are smooth gradients, the object boundary is a step
    w = world[:1000]
    lab = w.labels
    boundary = np.zeros(lab.shape, dtype=bool)
    boundary[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    boundary[:, :-1] |= lab[:, 1:] != lab[:, :-1]
    boundary[:, :, 1:] |= lab[:, :, 1:] != lab[:, :, :-1]
    boundary[:, :, :-1] |= lab[:, :, 1:] != lab[:, :, :-1]
    far = far_from_objects(w, margin=2.0)
    far_max = np.where(far, w.edges, 0).max(axis=(1, 2))
    boundary_max = np.where(boundary, w.edges, 0).max(axis=(1, 2))
    assert far_max.max() < 0.03
    assert (boundary_max > far_max).mean() > 0.99
    assert np.median(boundary_max) > 0.15


def test_grey_is_luminance(world):
    rgb = world.image[:100].astype(np.float64)
    expected = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255
    np.testing.assert_allclose(world.grey[:100], expected, atol=1e-6)


@pytest.mark.parametrize("size", [32, 64])
def test_low_resolution_copies_are_box_downsamples(size):
    w = make_world(40, seed=2, size=size, max_objects=2, n_captions=0)
    for name, out in [("low8", 8), ("low16", 16)]:
        f = size // out
        mean = w.image.astype(np.float64).reshape(40, out, f, out, f, 3).mean(axis=(2, 4))
        np.testing.assert_array_equal(getattr(w, name), np.floor(mean + 0.5).astype(np.uint8))
    np.testing.assert_array_equal(box_downsample(w.image, size), w.image)


def test_attributes_vector_layout(world):
    w = world[:500]
    a = attributes_vector(w)
    for name in ("shape", "colour", "size", "scene"):
        block = a[:, ATTRIBUTE_LAYOUT[name]]
        assert (block.sum(1) == 1).all()
        np.testing.assert_array_equal(block.argmax(1), getattr(w, name))
    np.testing.assert_array_equal(a[:, ATTRIBUTE_LAYOUT["position"]], np.stack([w.x, w.y], 1))
    rot = w.rotation.astype(np.float64)
    np.testing.assert_allclose(a[:, ATTRIBUTE_LAYOUT["rotation"]], np.stack([np.sin(rot), np.cos(rot)], 1), atol=1e-7)
    np.testing.assert_array_equal(position_class(w.x, w.y), w.position)


def test_indexing():
    w = make_world(30, seed=6, max_objects=2)
    sub = w[np.arange(30) % 3 == 0]
    assert len(sub) == 10 and sub.captions == w.captions[::3]
    np.testing.assert_array_equal(sub.image, w.image[::3])
    np.testing.assert_array_equal(sub.objects["x"], w.objects["x"][::3])
    assert len(w[4]) == 1 and w[4].describe(0) == w.describe(4)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs,message", [
    (dict(n=0), "n must be a positive number of scenes"),
    (dict(n=-5), "n must be a positive number of scenes"),
    (dict(n=2.5), "n must be a positive number of scenes"),
    (dict(n=4, seed=-1), "seed must be an integer >= 0"),
    (dict(n=4, size=40), "size must be a positive multiple of 16"),
    (dict(n=4, size=0), "size must be a positive multiple of 16"),
    (dict(n=4, size=8), "size must be a positive multiple of 16"),
    (dict(n=4, max_objects=0), "max_objects must be 1, 2 or 3"),
    (dict(n=4, max_objects=4), "max_objects must be 1, 2 or 3"),
    (dict(n=4, n_captions=-1), "n_captions must be an integer >= 0"),
    (dict(n=4, caption_split="test"), "caption_split must be one of"),
])
def test_bad_input_raises(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make_world(**kwargs)


def test_bad_render_and_caption_input():
    w = make_world(3, seed=0)
    with pytest.raises(ValueError, match="split must be one of"):
        make_captions(w, split="heldout")
    rec = sample_attributes(3, seed=0)
    with pytest.raises(ValueError, match=r"rec\['x'\] must lie in \[0, 1\]"):
        render({**rec, "x": rec["x"] + 1})
    with pytest.raises(ValueError, match="every scene needs object 0"):
        render({**rec, "shape": np.full((3, 1), -1)})


# --- which attributes a caption names -------------------------------------------------------------------------

def _template_fills(caption: str, templates: list[str], slot_phrases: dict) -> list[dict]:
    """Every way `caption` is one of `templates` with a phrase of `slot_phrases[slot]` in each slot:
    `{slot: phrase}` (the slots that template has)."""
    out = []
    for t in templates:
        parts = re.split(r"(\{\w*\})", " ".join(t.split()))
        pattern = "".join("(?:a|an)" if p == "{a}" else
                          "(?P<%s>%s)" % (p[1:-1], "|".join(map(re.escape, slot_phrases[p[1:-1]])))
                          if p.startswith("{") else re.escape(p) for p in parts)
        m = re.fullmatch(pattern, caption)
        if m:
            out.append(m.groupdict())
    return out


@pytest.mark.parametrize("split", ["train", "paraphrase"])
def test_named_attributes_recovers_what_the_template_filled(world, vocab, split):
    from ginn.world import SLOTS, named_attributes
    names = dict(size=SIZES, colour=COLOURS, shape=SHAPES, position=POSITIONS, scene=SCENES)
    sub = world[:1500]
    captions = make_captions(sub, 3, split=split)
    templates = vocab.templates(split)
    seen_slot_sets = set()
    slot_phrases = {k: [p for key in names[k] for p in vocab.phrases(k, key, split)] for k in SLOTS}
    for i, caps in enumerate(captions):
        truth = {kind: int(getattr(sub, kind)[i]) for kind in SLOTS}
        for cap in caps:
            # the template that wrote it, and the phrase in each slot: each one of the true value's phrases
            fills = [f for f in _template_fills(cap, templates, slot_phrases)
                     if all(p in vocab.phrases(k, names[k][truth[k]], split) for k, p in f.items())]
            assert fills, f"no template of split {split!r} explains {cap!r}"
            expected = {k: truth[k] for k in fills[0]}
            assert named_attributes(cap, vocab) == expected, cap
            seen_slot_sets.add(frozenset(expected))
    assert len(seen_slot_sets) >= 3          # templates that omit different attributes were all exercised


def test_named_attributes_prefers_the_longest_phrase():
    from ginn.world import named_attributes
    assert named_attributes("a red heart shape near the top right") == dict(
        colour=COLOURS.index("red"), shape=SHAPES.index("heart"), position=POSITIONS.index("top-right"))
    assert named_attributes("a blue plus sign against the night sky") == dict(
        colour=COLOURS.index("blue"), shape=SHAPES.index("cross"), scene=SCENES.index("night"))
    assert named_attributes("a BIG  Orange   box") == dict(size=2, colour=COLOURS.index("orange"),
                                                            shape=SHAPES.index("square"))
    assert "shape" not in named_attributes("a starry red thing")      # whole words only
    with pytest.raises(ValueError, match="two values of shape"):
        named_attributes("a red circle and a square")


def test_rerendering_a_scenes_own_record_is_bit_exact():
    for w in (make_world(300, seed=11), make_world(200, seed=12, max_objects=3)):
        assert np.array_equal(rerender(w, w.scene), w.image)


def test_day_night_swap_changes_the_background_only():
    w = make_world(400, seed=13)
    swapped = derived_input(w, "daynight")
    night = SCENES.index("night")
    back = make_world(400, seed=13)           # the same scenes, to read their objects' masks
    assert np.array_equal(derived_input(w, "daynight"), swapped)               # seeded: the same twice
    inside = back.labels > 0
    full = (w.image == COLOUR_RGB[w.colour][:, None, None]).all(-1) & inside   # pixels the object covers fully
    assert full.reshape(len(w), -1).any(1).mean() > 0.9
    assert np.array_equal(swapped[full], w.image[full])                       # the object is untouched
    outside = ~inside
    bg_changed = (swapped != w.image).any(-1) & outside
    assert bg_changed.reshape(len(w), -1).any(1).all()                        # every background changes
    is_night = w.scene == night
    night_bg = render_background(np.full(len(w), night))[:, 0, 0]
    assert (swapped[~is_night, 0, 0] == night_bg[~is_night]).all()            # day scenes go to night
    assert not (swapped[is_night, 0, 0] == night_bg[is_night]).all(-1).any()  # night scenes go to a day scene


def test_grey8_input_has_eight_levels_and_keeps_the_colour_level():
    w = make_world(200, seed=14)
    g = derived_input(w, "grey8")
    assert g.shape == w.image.shape and (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()
    levels = np.unique(g)
    assert len(levels) <= GREY8_LEVELS and np.allclose(levels / 255 * 7, np.round(levels / 255 * 7), atol=0.04)
    full = (w.image == COLOUR_RGB[w.colour][:, None, None]).all(-1)          # pixels the object covers fully
    level = np.broadcast_to(grey8_level(COLOUR_RGB[w.colour])[:, None, None], full.shape)
    assert np.array_equal(np.round(g[..., 0][full] / 255 * 7), level[full])   # the object's grey level is its colour's
    assert np.allclose(grey8(w.image) * 7, grey8_level(w.image))
