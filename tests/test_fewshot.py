"""The few-shot GAN runs (ginn.baselines.gans) and KMMD (ginn.metrics.kmmd): the issue's tests: KMMD ≈ 0 for two draws
of one distribution and > 0 for shifted ones; the gradient penalty is 0 for a 1-Lipschitz linear critic; MineGAN's
mined generator is bit-identical before and after stage 1; the selector recovers known winning frequencies on a
scripted critic; the source's training data contain no target image. Plus the params checks and saving."""
import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from ginn.baselines.gans import (Critic, GANSettings, Generator, Miner, Selector, WGANSettings, check_gans,
                                 gans_runs, gradient_penalty, load_generator, mine_several, sample_generator,
                                 mix_name, mix_rows, mnist_rows, save_generator, several_source_rows, source_rows,
                                 target_row_names, target_rows, train_minegan)
from ginn.metrics import kmmd
from ginn.world import COLOURS, SCENES, make_world

torch.set_num_threads(1)

SECTION = {"source": {"scenes": ["sky", "grass", "sand"]},
           "targets": {"night": {"scenes": ["night"], "n": 20},
                       "redsky": {"scenes": ["sky"], "colours": ["red"], "n": 4, "rows": ["scratch", "minegan"]}},
           "gan": {"z_dim": 8, "width": 4, "critic_width": 4, "size": 32, "channels": 3},
           "wgan": {"gp_weight": 10.0, "n_critic": 1, "batch_size": 8, "lr": 1e-4, "critic_lr": 1e-4, "betas": [0.0, 0.9]},
           "source_steps": 2, "source_lr": 2e-4, "transfer": {"steps": 2, "lr": 1e-4},
           "minegan": {"miner_depth": 2, "lr": 4e-4, "betas": [0.5, 0.999], "mine_steps": 3, "finetune_steps": 2},
           "rows": ["scratch", "g_only", "d_only", "g_and_d", "minegan", "n2n"],
           "n2n": {"vae": {"latent_dim": 8}, "train": {"steps": 2, "batch_size": 4}}, "n_curve": 8, "log_every": 1}
SEVERAL = {"sources": {"sky": {"scenes": ["sky"]}, "grass": {"scenes": ["grass"]}}, "colours": ["red"], "n": 20,
           "ratios": [0.3, 0.7], "source_steps": 2, "mine_steps": 2, "window": 10}
MNIST = {"digits": [5, 8], "n": 10, "gan": {"z_dim": 8, "width": 4, "critic_width": 4, "size": 28, "channels": 1},
         "batch_size": 8, "source_steps": 2, "mine_steps": 2, "finetune_steps": 2}


def test_kmmd_known_answers():
    two = lambda v: torch.tensor([[v], [v]], dtype=torch.float64)
    assert kmmd(two(0.0), two(1.0), bandwidth=1.0) == pytest.approx(2 - 2 * math.exp(-0.5), abs=1e-12)
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(400, 16, generator=g), torch.randn(400, 16, generator=g)
    assert abs(kmmd(a, b)) < 0.01                   # one distribution: ≈ 0 (unbiased)
    assert kmmd(a, b + 0.5) > 0.05 and kmmd(a, b + 2.0) > kmmd(a, b + 0.5)
    with pytest.raises(ValueError, match="at least 2"):
        kmmd(a[:1], b)
    with pytest.raises(ValueError, match="bandwidth must be positive"):
        kmmd(torch.zeros(3, 2), torch.zeros(3, 2))


def test_gradient_penalty_zero_for_1_lipschitz_linear_critic():
    w = torch.nn.functional.normalize(torch.randn(1, 48), dim=1)
    for scale, gp in ((1.0, 0.0), (2.0, 1.0)):     # ‖∇D‖ = scale everywhere: GP = (scale - 1)²
        critic = nn.Sequential(nn.Flatten(), nn.Linear(48, 1, bias=True))
        with torch.no_grad():
            critic[1].weight.copy_(scale * w)
        value = gradient_penalty(critic, torch.rand(16, 3, 4, 4), torch.rand(16, 3, 4, 4)).item()
        assert value == pytest.approx(gp, abs=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(critic, torch.rand(2, 3, 4, 4), torch.rand(3, 3, 4, 4))


def _stub_data(images: np.ndarray, target: str):
    oracle = SimpleNamespace(features=lambda x: torch.as_tensor(x).flatten(1)[:, :6].double()
                             if torch.is_tensor(x) else torch.from_numpy(x.reshape(len(x), -1)[:, :6] / 255.0))
    return SimpleNamespace(train=SimpleNamespace(image=images), targets={target: np.arange(len(images))},
                           held={target: torch.rand(20, 6, dtype=torch.float64)}, oracle=oracle)


def test_mined_generator_bit_identical_after_stage_1():
    s = GANSettings(**SECTION["gan"])
    torch.manual_seed(0)
    g, d = Generator(s), Critic(s)
    g(torch.randn(4, s.z_dim))                       # move BN statistics off their init, as a trained G has
    before = copy.deepcopy(g.state_dict())
    images = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    out = train_minegan(SECTION, _stub_data(images, "t"), "t", 0, (g, d))
    g_noft, miner_noft, _ = out["minegan_noft"]
    for k, v in before.items():
        assert torch.equal(g_noft.state_dict()[k], v), k          # stage 1: G did not move, BN buffers included
    g_ft, miner_ft, curves = out["minegan"]
    assert any(not torch.equal(g_ft.state_dict()[k], v) for k, v in before.items())   # stage 2 released it
    fresh = Miner(s.z_dim, depth=2)
    assert curves["finetune_from"] == SECTION["minegan"]["mine_steps"]
    assert not all(torch.equal(a, b) for a, b in zip(miner_noft.state_dict().values(), fresh.state_dict().values()))


class _Uniform(nn.Module):
    "A scripted generator: an image whose every pixel is Φ(z_0) ~ U(0, 1), or the constant `value`."

    def __init__(self, value=None):
        super().__init__()
        self.value, self.dummy = value, nn.Parameter(torch.zeros(1))

    def forward(self, z):
        v = 0.5 * (1 + torch.erf(z[:, :1] / math.sqrt(2))) if self.value is None else torch.full((len(z), 1), self.value)
        return (v + 0 * self.dummy).view(-1, 1, 1, 1).expand(-1, 3, 4, 4)


class _IdentityMiner(nn.Module):
    z_dim = 2

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, u):
        return u * self.w


def test_selector_recovers_scripted_winning_frequencies():
    sel = Selector(3, window=50)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):                             # generator 0 wins 20 %, 1 wins 30 %, 2 wins 50 %
        winner = torch.multinomial(torch.tensor([0.2, 0.3, 0.5]), 64, replacement=True, generator=g)
        sel.update(torch.nn.functional.one_hot(winner, 3).float())
    assert np.allclose(sel.p, [0.2, 0.3, 0.5], atol=0.03)
    assert len(sel.frequencies) == 200 and np.isclose(sel.p.sum(), 1.0)
    # the whole mining loop with a scripted critic (the pixel value): U(0, 1) beats 0.7 with probability 0.3
    critic = lambda x: x[:, 0, 0, 0]
    ws = WGANSettings(batch_size=64, lr=0.0, critic_lr=0.0)   # lr 0: the miners stay put, the odds stay 0.3
    images = np.zeros((4, 4, 4, 3), dtype=np.uint8)
    sel, h = mine_several([_Uniform(), _Uniform(0.7)], [_IdentityMiner(), _IdentityMiner()], critic, images,
                          steps=300, ws=ws, seed=0, window=300, train_critic=False)
    assert abs(sel.p[0] - 0.3) < 0.02 and len(h["generator"]) == 300
    with pytest.raises(ValueError, match="shape"):
        Selector(2).update(torch.zeros(4, 3))


def test_source_training_data_contain_no_target_image():
    world = make_world(1500, seed=3)
    src = source_rows(world, SECTION, seed=0)
    assert len(src) > 500
    taken = {t: target_rows(world, d, seed=0) for t, d in SECTION["targets"].items()}
    for t, rows in taken.items():
        assert len(rows) == SECTION["targets"][t]["n"] and not set(rows) & set(src)
        source_bytes = {world.image[i].tobytes() for i in src}
        assert not any(world.image[i].tobytes() in source_bytes for i in rows), t
    assert (world.scene[src] != SCENES.index("night")).all()
    red_sky = (world.scene == SCENES.index("sky")) & (world.colour == COLOURS.index("red"))
    assert red_sky[taken["redsky"]].all()
    with pytest.raises(ValueError, match="fewer than n"):
        target_rows(world, {"scenes": ["night"], "n": 10**6})


def test_check_runs_and_rows():
    check_gans(SECTION, "fs")
    for change, message in [({"rows": ["vae"]}, "fs.rows"), ({"source_steps": 0}, "fs.source_steps"),
                            ({"targets": {"x": {"scenes": ["moon"], "n": 5}}}, "fs.targets.x.scenes"),
                            ({"targets": {"x": {"scenes": ["night"], "n": 1}}}, "fs.targets.x.n"),
                            ({"gan": {"z_dim": 0}}, "z_dim"), ({"transfer": {"steps": 2}}, "fs.transfer")]:
        with pytest.raises(ValueError, match=message):
            check_gans({**SECTION, **change}, "fs")
    with pytest.raises(ValueError, match="exactly the keys"):
        check_gans({k: v for k, v in SECTION.items() if k != "n2n"}, "fs")
    runs = gans_runs({"fewshot": SECTION})
    assert runs[:2] == ["source", "vae"] and "redsky.g_only" not in runs and "redsky.minegan" in runs
    assert runs.index("night.n2n") < runs.index("night.g_and_d")            # source-free rows first
    assert gans_runs({}) == []
    assert target_row_names(SECTION, "redsky") == ["scratch", "minegan_noft", "minegan"]


def test_generator_save_load_and_seeded_sampling(tmp_path):
    s = GANSettings(**SECTION["gan"])
    g, miner = Generator(s).eval(), Miner(s.z_dim)
    path = save_generator(g, tmp_path / "g.safetensors", miner)
    g2, miner2 = load_generator(path)
    a, b = sample_generator(g, miner, 10, seed=5), sample_generator(g2, miner2, 10, seed=5)
    assert torch.equal(a, b) and a.shape == (10, 3, 32, 32) and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, sample_generator(g, miner, 10, seed=6))
    with pytest.raises(FileNotFoundError, match="train_translator@fewshot"):
        load_generator(tmp_path / "missing.safetensors")


def test_several_sources_rows_mix_at_the_ratio_and_never_overlap():
    world, fs = make_world(3000, seed=4), {**SECTION, "several": SEVERAL}
    sky, grass, red = SCENES.index("sky"), SCENES.index("grass"), COLOURS.index("red")
    mixes = {mix_name(r): mix_rows(world, SEVERAL, r, seed=0) for r in SEVERAL["ratios"]}
    assert sorted(mixes) == ["mix30", "mix70"]
    for ratio, rows in zip(SEVERAL["ratios"], mixes.values()):
        assert len(rows) == 20 and (world.colour[rows] == red).all()
        assert (world.scene[rows] == sky).sum() == round(20 * ratio) and (world.scene[rows] == grass).sum() == 20 - round(20 * ratio)
    taken = set(np.concatenate([*mixes.values(), *(target_rows(world, d) for d in SECTION["targets"].values())]))
    for name, scene in (("sky", sky), ("grass", grass)):
        rows = several_source_rows(world, fs, name, seed=0)
        assert len(rows) > 300 and (world.scene[rows] == scene).all() and not set(rows) & taken, name


def test_several_sources_runs_and_checks():
    fs = {**SECTION, "several": SEVERAL}
    check_gans(fs, "fs")
    runs = gans_runs({"fewshot": fs})
    assert runs[:4] == ["source", "vae", "source_sky", "source_grass"]
    assert runs[-2:] == ["mix30.selector", "mix70.selector"] and not any("selector" in r for r in gans_runs({"fewshot": SECTION}))
    three = {**SEVERAL["sources"], "sand": {"scenes": ["sand"]}}
    for change, message in [({"ratios": [0.0]}, "fs.several.ratios"), ({"ratios": [0.5, 1.2]}, "fs.several.ratios"),
                            ({"ratios": [0.301, 0.299]}, "differ in their percent"), ({"sources": three}, "exactly two"),
                            ({"n": 1}, "fs.several.n"), ({"mine_steps": 0}, "fs.several.mine_steps"),
                            ({"colours": ["teal"]}, "fs.several"), ({"sources": {"sky": {"scenes": ["moon"]}, "g": {"scenes": ["grass"]}}}, "fs.several.sources.sky")]:
        with pytest.raises(ValueError, match=message):
            check_gans({**SECTION, "several": {**SEVERAL, **change}}, "fs")
    with pytest.raises(ValueError, match="exactly the keys"):
        check_gans({**SECTION, "several": {k: v for k, v in SEVERAL.items() if k != "window"}}, "fs")


def test_mnist_task_rows_runs_checks_and_28px_networks():
    labels = np.repeat(np.arange(10), 30)
    rows = mnist_rows(labels, 5, 10, seed=0)
    assert len(rows) == 10 and (labels[rows] == 5).all() and not np.array_equal(rows, mnist_rows(labels, 5, 10, seed=1))
    with pytest.raises(ValueError, match="fewer than mnist.n"):
        mnist_rows(labels, 5, 31)
    fs = {**SECTION, "mnist": MNIST}
    check_gans(fs, "fs")
    runs = gans_runs({"fewshot": fs})
    assert "mnist_source" in runs[:4] and runs[-2:] == ["mnist5.minegan", "mnist8.minegan"]
    for change, message in [({"digits": [5, 5]}, "fs.mnist.digits"), ({"digits": [10]}, "fs.mnist.digits"),
                            ({"n": 1}, "fs.mnist.n"), ({"gan": {**MNIST["gan"], "size": 32}}, "size 28, channels 1")]:
        with pytest.raises(ValueError, match=message):
            check_gans({**SECTION, "mnist": {**MNIST, **change}}, "fs")
    with pytest.raises(ValueError, match="MNIST targets"):
        check_gans({**fs, "targets": {**SECTION["targets"], "mnist5": {"scenes": ["night"], "n": 5}}}, "fs")
    s = GANSettings(**MNIST["gan"])
    x = Generator(s)(torch.randn(3, s.z_dim))
    assert x.shape == (3, 1, 28, 28) and Critic(s)(x).shape == (3,)
