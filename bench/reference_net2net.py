"""A re-implementation of the model structure released with Rombach, Esser & Ommer, "Network-to-Network
Translation with Conditional Invertible Neural Networks" (NeurIPS 2020), used only as a speed baseline
for `ginn.translator.Translator` (see `bench/translator_speed.py`).

It keeps the authors' module layout and their way of computing things -- separate `nn.Linear` MLPs for the
scale and shift nets, a half swap inside the double coupling, the embedding computed once per pass, and
PyTorch's default Adam (AMSGrad) -- so that timing it shows what the original code costs on the same machine.
It is written from the description of that code, not copied from it.

`copy_reference_into_ginn(ref, tau)` loads a reference model's weights into a `Translator` of the same
settings so that both compute the same function (checked by `tests/test_reference_equivalence.py`).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class BasicFullyConnectedNet(nn.Module):
    "Linear [BN] LeakyReLU, `depth` x (Linear [BN] LeakyReLU), Linear [Tanh]."

    def __init__(self, dim: int, depth: int, hidden_dim: int = 256, use_tanh: bool = False,
                 use_bn: bool = False, out_dim: int | None = None):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(dim, hidden_dim)]
        if use_bn:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.LeakyReLU())
        for _ in range(depth):
            layers.append(nn.Linear(hidden_dim, hidden_dim))
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.LeakyReLU())
        layers.append(nn.Linear(hidden_dim, dim if out_dim is None else out_dim))
        if use_tanh:
            layers.append(nn.Tanh())
        self.main = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


class ActNorm(nn.Module):
    "Affine per-feature normalisation `scale * (x + loc)`, data-initialised on the first training batch."

    def __init__(self, num_features: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, num_features))
        self.scale = nn.Parameter(torch.ones(1, num_features))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    @torch.no_grad()
    def initialize(self, x: Tensor):
        mean = x.mean(0, keepdim=True)
        std = x.std(0, keepdim=True)
        self.loc.data.copy_(-mean)
        self.scale.data.copy_(1 / (std + 1e-6))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and self.initialized.item() == 0:
            self.initialize(x)
            self.initialized.fill_(1)
        y = self.scale * (x + self.loc)
        logdet = torch.sum(torch.log(torch.abs(self.scale))) * torch.ones(x.shape[0], device=x.device)
        return y, logdet

    def reverse(self, y: Tensor) -> Tensor:
        return y / self.scale - self.loc


class ConditionalDoubleVectorCouplingBlock(nn.Module):
    "Two affine couplings; the halves are swapped before the second so that each half is transformed once."

    def __init__(self, in_channels: int, cond_channels: int, hidden_dim: int, depth: int = 2):
        super().__init__()
        half = in_channels // 2
        self.s = nn.ModuleList([
            BasicFullyConnectedNet(half + cond_channels, depth, hidden_dim, use_tanh=True, out_dim=half)
            for _ in range(2)])
        self.t = nn.ModuleList([
            BasicFullyConnectedNet(half + cond_channels, depth, hidden_dim, use_tanh=False, out_dim=half)
            for _ in range(2)])

    def forward(self, x: Tensor, xc: Tensor) -> tuple[Tensor, Tensor]:
        logdet = 0
        for i in range(2):
            if i % 2 == 1:
                x = torch.cat(torch.chunk(x, 2, dim=1)[::-1], dim=1)
            x = torch.chunk(x, 2, dim=1)
            inp = torch.cat((x[0], xc), dim=1)
            scale = self.s[i](inp)
            x_ = x[1] * scale.exp() + self.t[i](inp)
            x = torch.cat((x[0], x_), dim=1)
            logdet = logdet + torch.sum(scale, dim=1)
        return x, logdet

    def reverse(self, x: Tensor, xc: Tensor) -> Tensor:
        for i in reversed(range(2)):
            if i % 2 == 0:
                x = torch.cat(torch.chunk(x, 2, dim=1)[::-1], dim=1)
            x = torch.chunk(x, 2, dim=1)
            inp = torch.cat((x[0], xc), dim=1)
            x_ = (x[1] - self.t[i](inp)) * self.s[i](inp).neg().exp()
            x = torch.cat((x[0], x_), dim=1)
        return x


class Shuffle(nn.Module):
    "A fixed random permutation of the features."

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("perm", torch.randperm(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x[:, self.perm]

    def reverse(self, x: Tensor) -> Tensor:
        return x[:, torch.argsort(self.perm)]


class ConditionalFlatDoubleCouplingFlowBlock(nn.Module):
    "ActNorm -> conditional double coupling -> shuffle."

    def __init__(self, in_channels: int, cond_channels: int, hidden_dim: int, hidden_depth: int):
        super().__init__()
        self.norm_layer = ActNorm(in_channels)
        self.coupling = ConditionalDoubleVectorCouplingBlock(in_channels, cond_channels, hidden_dim, hidden_depth)
        self.shuffle = Shuffle(in_channels)

    def forward(self, x: Tensor, xcond: Tensor) -> tuple[Tensor, Tensor]:
        h, ld_norm = self.norm_layer(x)
        h, ld_coupling = self.coupling(h, xcond)
        h = self.shuffle(h)
        return h, ld_norm + ld_coupling

    def reverse(self, v: Tensor, xcond: Tensor) -> Tensor:
        h = self.shuffle.reverse(v)
        h = self.coupling.reverse(h, xcond)
        return self.norm_layer.reverse(h)


class ConditionalFlatCouplingFlow(nn.Module):
    "Embedding MLP of the condition plus `n_flows` flow blocks; forward maps data to the latent v."

    def __init__(self, in_channels: int, conditioning_dim: int, embedding_dim: int, hidden_dim: int,
                 hidden_depth: int, n_flows: int, conditioning_hidden_dim: int = 256,
                 conditioning_depth: int = 2, conditioner_use_bn: bool = True):
        super().__init__()
        self.in_channels = in_channels
        self.embedder = BasicFullyConnectedNet(conditioning_dim, conditioning_depth, conditioning_hidden_dim,
                                               out_dim=embedding_dim, use_bn=conditioner_use_bn)
        self.sub_layers = nn.ModuleList(
            ConditionalFlatDoubleCouplingFlowBlock(in_channels, embedding_dim, hidden_dim, hidden_depth)
            for _ in range(n_flows))

    def forward(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        hcond = self.embedder(cond)
        logdet = 0.0
        for layer in self.sub_layers:
            x, ld = layer(x, hcond)
            logdet = logdet + ld
        return x, logdet

    def reverse(self, v: Tensor, cond: Tensor) -> Tensor:
        hcond = self.embedder(cond)
        for layer in reversed(self.sub_layers):
            v = layer.reverse(v, hcond)
        return v

    def sample(self, cond: Tensor) -> Tensor:
        v = torch.randn(cond.shape[0], self.in_channels, device=cond.device, dtype=cond.dtype)
        return self.reverse(v, cond)


def reference_loss(v: Tensor, logdet: Tensor) -> Tensor:
    "The authors' training loss: mean over the batch of 0.5 * |v|^2 - logdet (no normalising constant)."
    return torch.mean(0.5 * torch.sum(v ** 2, dim=1) - logdet)


def reference_optimizer(model: nn.Module, lr: float) -> torch.optim.Adam:
    "The authors' optimiser, with PyTorch's default implementation choice (no fused/foreach flag)."
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.9), amsgrad=True)


def build_reference(dim: int, cond_dim: int, n_flows: int = 20, hidden_dim: int = 1024, hidden_depth: int = 2,
                    embedding_dim: int = 128, cond_hidden_dim: int = 256, cond_depth: int = 2,
                    cond_batchnorm: bool = True) -> ConditionalFlatCouplingFlow:
    "The reference flow with `Translator`'s argument names."
    return ConditionalFlatCouplingFlow(dim, cond_dim, embedding_dim, hidden_dim, hidden_depth, n_flows,
                                       conditioning_hidden_dim=cond_hidden_dim, conditioning_depth=cond_depth,
                                       conditioner_use_bn=cond_batchnorm)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------------------
# weight transfer reference -> ginn

def _linears(net: BasicFullyConnectedNet) -> list[nn.Linear]:
    return [m for m in net.main if isinstance(m, nn.Linear)]


@torch.no_grad()
def _copy_coupling_nets(s_net: BasicFullyConnectedNet, t_net: BasicFullyConnectedNet, nets) -> None:
    "Reference s/t MLPs -> one ginn `CouplingNets` (first layers stacked as [s; t])."
    s_lin, t_lin = _linears(s_net), _linears(t_net)
    if len(s_lin) != len(nets.s_hidden) + 2 or len(t_lin) != len(s_lin):
        raise ValueError("reference and ginn coupling nets have different depths")
    nets.first.weight.copy_(torch.cat([s_lin[0].weight, t_lin[0].weight], 0))
    nets.first.bias.copy_(torch.cat([s_lin[0].bias, t_lin[0].bias], 0))
    for k, (ls, lt) in enumerate(zip(nets.s_hidden, nets.t_hidden)):
        ls.weight.copy_(s_lin[k + 1].weight)
        ls.bias.copy_(s_lin[k + 1].bias)
        lt.weight.copy_(t_lin[k + 1].weight)
        lt.bias.copy_(t_lin[k + 1].bias)
    nets.s_out.weight.copy_(s_lin[-1].weight)
    nets.s_out.bias.copy_(s_lin[-1].bias)
    nets.t_out.weight.copy_(t_lin[-1].weight)
    nets.t_out.bias.copy_(t_lin[-1].bias)


@torch.no_grad()
def copy_reference_into_ginn(ref: ConditionalFlatCouplingFlow, tau) -> None:
    """Load the weights of `ref` into the `ginn.translator.Translator` `tau` (same settings, even `dim`) so
    that `tau.flow(z, tau.embed(c))` equals `ref(z, c)` and `tau.flow.reverse` equals `ref.reverse`.

    The reference coupling returns its halves as [transformed second, transformed first] (it swaps them before
    its second coupling), ginn's as [first, second]; the swap is folded into ginn's permutation buffer."""
    dim = ref.in_channels
    if dim % 2:
        raise ValueError("the reference double coupling needs an even dimension")
    if len(ref.sub_layers) != len(tau.flow.blocks):
        raise ValueError("different numbers of flow blocks")
    # embedding MLP: identical nn.Sequential layouts (Linear, BatchNorm1d, LeakyReLU, ..., Linear)
    tau.embed.load_state_dict(ref.embedder.main.state_dict())
    half = dim // 2
    swap = torch.cat([torch.arange(half, dim), torch.arange(half)])  # cat([a, b])[:, swap] == cat([b, a])
    for layer, block in zip(ref.sub_layers, tau.flow.blocks):
        if block.coupling.split != half:
            raise ValueError("different coupling splits")
        block.norm.loc.copy_(layer.norm_layer.loc.reshape(-1))
        block.norm.scale.copy_(layer.norm_layer.scale.reshape(-1))
        block.norm.initialized.fill_(True)
        layer.norm_layer.initialized.fill_(1)
        c = layer.coupling
        _copy_coupling_nets(c.s[0], c.t[0], block.coupling.second)   # transforms the second half given the first
        _copy_coupling_nets(c.s[1], c.t[1], block.coupling.first)    # transforms the first half given the new second
        block.permute.perm.copy_(swap[layer.shuffle.perm])
