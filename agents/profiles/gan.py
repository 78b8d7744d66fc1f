"""The per-cluster generative model: a small GAN over normalised daily load shapes.

The generator maps a latent z ~ N(0, I) to a daily shape through an MLP ending in a softmax,
so every generated day is non-negative and sums to one by construction. Shapes are handled
as x = shape * STEPS (mean one) in training.

Training minimises the usual non-saturating GAN loss plus a statistics-matching term,
which keeps a GAN trained on a few hundred days from collapsing onto a few modes:
- per step of the day, the 10/25/50/75/90th percentiles, mean and standard deviation of x
  across a batch, against those of the cluster's training days;
- the mean of each day's values sorted in ascending order, against the training days': the
  distribution of values within a day, i.e. how spiky a day is.
The critic sees log(x + 0.001), which spreads out the low overnight base load that carries
much of what distinguishes one behaviour from another.

Only the generator is kept after training; it is a plain state dict of a few tens of KB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from agents.profiles.realdata import STEPS

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass
class GanConfig:
    """Hyperparameters of one cluster's GAN."""

    latent: int = 8  # size of z
    hidden: int = 64  # width of both generator layers
    steps: int = 2000  # optimiser steps (generator and critic one each)
    batch: int = 128  # real and generated days per critic step (twice that for the generator)
    lr: float = 1e-3
    stats_weight: float = 10.0  # weight of the statistics-matching term
    dropout: float = 0.3  # critic dropout


class ShapeGenerator(nn.Module):
    """z [n, latent] -> daily shape [n, STEPS], non-negative, each row summing to one."""

    def __init__(self, latent: int, hidden: int, steps: int = STEPS):
        super().__init__()
        self.latent = latent
        self.net = nn.Sequential(
            nn.Linear(latent, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, steps),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(z), dim=-1)


class _Critic(nn.Module):
    def __init__(self, hidden: int, dropout: float, steps: int = STEPS):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(steps, 2 * hidden), nn.LeakyReLU(0.2), nn.Dropout(dropout),
            nn.Linear(2 * hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.log(x + 1e-3))


def _statistics(x: torch.Tensor) -> torch.Tensor:
    q = torch.quantile(x, torch.tensor(QUANTILES, dtype=x.dtype), dim=0)
    per_step = torch.cat([q, x.mean(dim=0, keepdim=True), x.std(dim=0, keepdim=True)])
    within_day = torch.sort(x, dim=1).values.mean(dim=0, keepdim=True)
    return torch.cat([per_step, within_day])


def train_shape_generator(shapes: np.ndarray, cfg: GanConfig, seed: int) -> ShapeGenerator:
    """Train one cluster's generator on its normalised days ([n, STEPS], rows summing to 1).

    Deterministic for a given seed on a given number of torch threads; the caller fixes the
    thread count (see `agents.profiles.train`). The global torch RNG is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        real = torch.as_tensor(shapes * STEPS, dtype=torch.float32)
        gen = ShapeGenerator(cfg.latent, cfg.hidden)
        critic = _Critic(cfg.hidden, cfg.dropout)
        opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        opt_c = torch.optim.Adam(critic.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        target = _statistics(real)
        bce = nn.BCEWithLogitsLoss()
        ones, zeros = torch.ones(cfg.batch, 1), torch.zeros(cfg.batch, 1)
        for _ in range(cfg.steps):
            batch = real[torch.randint(len(real), (cfg.batch,))]
            fake = gen(torch.randn(cfg.batch, cfg.latent)) * STEPS
            loss_c = bce(critic(batch), ones) + bce(critic(fake.detach()), zeros)
            opt_c.zero_grad()
            loss_c.backward()
            opt_c.step()

            fake = gen(torch.randn(2 * cfg.batch, cfg.latent)) * STEPS
            loss_g = (bce(critic(fake), torch.ones(2 * cfg.batch, 1))
                      + cfg.stats_weight * (_statistics(fake) - target).square().mean())
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
        gen.eval()
    return gen
