"""A bank of independent per-agent policies, evaluated together in one kernel per layer.

Each agent k has its own MLP (no parameter sharing): layer l's weights of all agents are
stacked in one tensor `[n_agents, in, out]` and applied with a batched matmul, so 10,000
independent policies cost what one wide layer costs. Agent k's parameters are drawn from
its own seed (derived from the bank's seed and k), so an agent's initial policy does not
depend on how many others there are. Outputs are squashed per output: tanh to [-1, 1] or
sigmoid to [0, 1] (for households, `squash=SIGNED_ACTIONS`).

    bank = PolicyBank(n, len(FIELDS), len(ACTIONS), squash=SIGNED_ACTIONS)
    action = bank(observe(...))            # [..., n, len(ACTIONS)], agent k sees only row k

The optimiser state of Adam is per parameter element, so one Adam over the bank is n
independent Adams with the same settings.

`save(path)` and `PolicyBank.load(path)` keep a bank in one file (torch's format) with its
shape, squashing, activation and the observation and action layouts it was made for; a
co-simulation loads it for its `bank` households and gives each household its own agent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}
FORMAT = "gridedge-policy-bank/1"


class BankError(ValueError):
    """A policy-bank file that cannot be used; names the file and what is wrong."""


def agent_generator(seed: int, agent: int) -> torch.Generator:
    """A torch generator seeded from (seed, agent) alone."""
    state = np.random.SeedSequence([seed, agent]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class PolicyBank(nn.Module):
    """n_agents independent MLPs obs_dim -> hidden... -> act_dim."""

    def __init__(self, n_agents: int, obs_dim: int, act_dim: int,
                 hidden: Sequence[int] = (64, 64), squash: bool | Sequence[bool] = True,
                 activation: str = "tanh", seed: int = 0,
                 dtype: torch.dtype = torch.float64) -> None:
        """`squash`: True for tanh ([-1, 1]), False for sigmoid ([0, 1]); one for all
        outputs or one per output."""
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r}: choose one of {list(ACTIVATIONS)}")
        signed = [bool(squash)] * act_dim if isinstance(squash, bool) else list(squash)
        if len(signed) != act_dim:
            raise ValueError(f"squash has {len(signed)} entries for {act_dim} outputs")
        self.n_agents, self.obs_dim, self.act_dim = n_agents, obs_dim, act_dim
        self.activation = activation
        self.register_buffer("signed", torch.tensor(signed, dtype=torch.bool))
        sizes = [obs_dim, *hidden, act_dim]
        weights = [torch.empty(n_agents, a, b, dtype=dtype) for a, b in zip(sizes, sizes[1:])]
        biases = [torch.empty(n_agents, b, dtype=dtype) for b in sizes[1:]]
        for k in range(n_agents):
            g = agent_generator(seed, k)
            for w, b in zip(weights, biases):
                bound = 1 / math.sqrt(w.shape[1])  # torch.nn.Linear's default range
                w[k].uniform_(-bound, bound, generator=g)
                b[k].uniform_(-bound, bound, generator=g)
        self.weights = nn.ParameterList(nn.Parameter(w) for w in weights)
        self.biases = nn.ParameterList(nn.Parameter(b) for b in biases)

    def forward(self, obs: torch.Tensor, squash: bool = True) -> torch.Tensor:
        """Observations `[..., n_agents, obs_dim]` to actions `[..., n_agents, act_dim]`
        (with `squash=False`, the last layer's affine output: a learner's value head)."""
        return self._layers(obs, lambda x, w, b: torch.einsum("...ni,nio->...no", x, w) + b,
                            squash)

    def rows(self, obs: torch.Tensor, agent: torch.Tensor, squash: bool = True
             ) -> torch.Tensor:
        """Observations `[B, obs_dim]`, each of the agent given by `agent` `[B]` (an RL
        learner's batch: rows of any agents in any order), to actions `[B, act_dim]`: row b
        through agent[b]'s own policy, the same numbers `forward` gives it."""
        if self.n_agents == 1:  # one policy for every row
            return self.forward(obs.unsqueeze(-2), squash).squeeze(-2)
        index = torch.as_tensor(agent, dtype=torch.long, device=obs.device)
        # Rows sorted into a padded [depth, n_agents, obs_dim] block (agent k's j-th row at
        # [j, k]), through `forward`, and back: every layer one batched matmul against the
        # stacked weights as they are (gathering each row's weights instead copies
        # B x in x out numbers per layer, measured 1.6x slower forward and backward at
        # 4,000 rows of 1,000 agents).
        order = torch.argsort(index, stable=True)
        sorted_agents = index[order]
        counts = torch.bincount(sorted_agents, minlength=self.n_agents)
        slot = (torch.arange(len(index), device=obs.device)
                - (torch.cumsum(counts, 0) - counts)[sorted_agents])
        block = obs.new_zeros((int(counts.max()) if len(index) else 0, self.n_agents,
                               obs.shape[-1]))
        block[slot, sorted_agents] = obs[order]
        out = self.forward(block, squash)[slot, sorted_agents]
        return torch.empty_like(out).index_copy(0, order, out)

    def _layers(self, obs: torch.Tensor, linear: Callable, squash: bool) -> torch.Tensor:
        """The MLP with `linear(x, weight, bias)` as each layer's affine map, then the
        per-output squash."""
        x = obs.to(self.weights[0].dtype)
        act = ACTIVATIONS[self.activation]
        last = len(self.weights) - 1
        for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = linear(x, w, b)
            if layer < last:
                x = act(x)
        return torch.where(self.signed, torch.tanh(x), torch.sigmoid(x)) if squash else x

    def agent_state(self, k: int) -> dict[str, torch.Tensor]:
        """Copies of agent k's parameters: {"weight.l": [in, out], "bias.l": [out]}."""
        return {**{f"weight.{i}": w[k].detach().clone() for i, w in enumerate(self.weights)},
                **{f"bias.{i}": b[k].detach().clone() for i, b in enumerate(self.biases)}}

    @torch.no_grad()
    def load_agent_state(self, k: int, state: dict[str, torch.Tensor]) -> None:
        """Overwrite agent k's parameters (others untouched)."""
        for i, w in enumerate(self.weights):
            w[k].copy_(state[f"weight.{i}"])
        for i, b in enumerate(self.biases):
            b[k].copy_(state[f"bias.{i}"])

    @torch.no_grad()
    def select(self, agents: Sequence[int] | torch.Tensor) -> PolicyBank:
        """A bank holding copies of the given agents' policies, in that order (e.g. the
        households of one co-simulation shard)."""
        index = torch.as_tensor(agents, dtype=torch.long, device=self.signed.device)
        return PolicyBank._stacked([w[index] for w in self.weights],
                                   [b[index] for b in self.biases], self.signed,
                                   self.activation)

    @classmethod
    def _stacked(cls, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                 signed: torch.Tensor, activation: str) -> PolicyBank:
        """A bank around copies of stacked parameters `[agents, in, out]` / `[agents, out]`."""
        out = cls.__new__(cls)
        nn.Module.__init__(out)
        out.n_agents, out.obs_dim = weights[0].shape[0], weights[0].shape[1]
        out.act_dim, out.activation = weights[-1].shape[2], activation
        out.register_buffer("signed", torch.as_tensor(signed, dtype=torch.bool).clone())
        out.weights = nn.ParameterList(nn.Parameter(w.detach().clone()) for w in weights)
        out.biases = nn.ParameterList(nn.Parameter(b.detach().clone()) for b in biases)
        return out

    def save(self, path: str | Path, fields: Sequence[str] = (),
             actions: Sequence[str] = ()) -> None:
        """Write the bank to `path`, with the observation `fields` and `actions` it maps
        between (checked by `load`)."""
        torch.save({"format": FORMAT, "signed": self.signed.tolist(), "activation": self.activation,
                    "fields": list(fields), "actions": list(actions),
                    "weights": [w.detach().cpu() for w in self.weights],
                    "biases": [b.detach().cpu() for b in self.biases]}, Path(path))

    @classmethod
    def load(cls, path: str | Path, agents: Sequence[int] | None = None,
             fields: Sequence[str] | None = None,
             actions: Sequence[str] | None = None) -> PolicyBank:
        """A bank from `save`: all agents, or copies of `agents` in that order. With
        `fields` / `actions` given, the file must have been made for that layout. Only the
        selected agents' weights are read into memory (the file is memory-mapped)."""
        path = Path(path)
        try:
            data = torch.load(path, mmap=True, weights_only=True)
        except FileNotFoundError:
            raise BankError(f"{path}: policy bank file not found") from None
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same error
            raise BankError(f"{path}: not a policy bank file ({type(exc).__name__}: "
                            f"{exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BankError(f"{path}: not a policy bank file (format "
                            f"{data.get('format') if isinstance(data, dict) else None!r}, "
                            f"expected {FORMAT!r})")
        for name, wanted in (("fields", fields), ("actions", actions)):
            if wanted is not None and list(data[name]) != list(wanted):
                raise BankError(f"{path}: made for {name} {list(data[name])}, this "
                                f"simulation has {list(wanted)}")
        n = int(data["weights"][0].shape[0])
        index = torch.arange(n) if agents is None else torch.as_tensor(agents, dtype=torch.long)
        if len(index) and (index.min() < 0 or index.max() >= n):
            bad = int(index[(index < 0) | (index >= n)][0])
            raise BankError(f"{path}: holds {n} agents, agent {bad} was asked for (one agent "
                            f"per household: make a bank for at least {bad + 1})")
        return cls._stacked([w[index] for w in data["weights"]],
                            [b[index] for b in data["biases"]],
                            torch.tensor(data["signed"]), data["activation"])
