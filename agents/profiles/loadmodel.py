"""The trained household load model: behaviour (clusters, chains, sizes) plus one generator
per (day type, cluster), saved as one weights-only torch file.

Shape and size are drawn independently, so a peaky shape (typical of days with little
energy, where one kettle is a large share of the day) can land on a day with much energy
and give a 15-minute power no real home reaches. Three steps keep generated days within
what the training data shows is physical:
- a generated shape is clipped, step by step, at the largest share of its day that any
  training day of its cluster had at that step, then renormalised (the rare extreme spike
  a softmax generator can put into one step);
- a day whose power would exceed `max_kw`, the highest 15-minute mean in the training data,
  gets a new shape from the same cluster, up to `REDRAWS` times: rejection sampling, which
  gives large days the flatter shapes real large days have;
- what still exceeds `max_kw` is moved to the day's other steps in proportion to their
  power (repeated until no step is above it), so the day's energy is kept.

File layout (a plain dict, loadable with `torch.load(..., weights_only=True)`):
    format     "gridedge-load-model/1"
    meta       train config, data summary, held-out homes, versions (plain types)
    behaviour  `Behaviour.state()` (nested lists and floats)
    generators {"weekday/0": state dict, ...}
    limits     {"shape_cap": {"weekday/0": [STEPS] floats, ...}, "max_kw": float}

The shipped default is agents/profiles/weights/load_model.pt, made by `cosim data train`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from agents.profiles.behaviour import DAY_TYPES, Behaviour
from agents.profiles.errors import ProfileError
from agents.profiles.gan import ShapeGenerator
from agents.profiles.realdata import MODEL_STEP_S, STEPS

FORMAT = "gridedge-load-model/1"
DEFAULT_PATH = Path(__file__).resolve().parent / "weights" / "load_model.pt"
REDRAWS = 10  # new shapes a day may get before its power is capped


@dataclass
class LoadSample:
    """Generated home-days.

    Attributes:
        kw: [homes, days, STEPS] mean power per 15-minute step, kW.
        cluster: [homes, days] the behaviour cluster of each day (index within its day type).
        daily_kwh: [homes, days] energy of each day, kWh (= kw summed times 0.25 h).
        scale: [homes] each home's mean daily energy, kWh.
    """

    kw: np.ndarray
    cluster: np.ndarray
    daily_kwh: np.ndarray
    scale: np.ndarray


def limit_power(kw: np.ndarray, max_kw: float, rounds: int = 20) -> np.ndarray:
    """Cap [..., steps] power at `max_kw`, moving the excess energy to the same day's other
    steps in proportion to their power, so each day's energy is unchanged."""
    kw = kw.copy()
    for _ in range(rounds):
        over = kw > max_kw
        if not over.any():
            break
        excess = np.where(over, kw - max_kw, 0.0).sum(axis=-1, keepdims=True)
        kw = np.minimum(kw, max_kw)
        room = np.where(kw < max_kw, kw, 0.0)
        kw += excess * room / np.maximum(room.sum(axis=-1, keepdims=True), 1e-12)
    return np.minimum(kw, max_kw)


@dataclass
class LoadModel:
    behaviour: Behaviour
    generators: dict[str, ShapeGenerator]  # "weekday/0" -> generator
    shape_cap: dict[str, np.ndarray]  # "weekday/0" -> [STEPS] largest training share per step
    max_kw: float
    meta: dict

    def sample_shapes(self, day_type: str, cluster: int, n: int,
                      generator: torch.Generator) -> np.ndarray:
        """n normalised daily shapes [n, STEPS] (rows sum to one) of one cluster."""
        key = f"{day_type}/{cluster}"
        gen = self.generators[key]
        with torch.no_grad():
            z = torch.randn(n, gen.latent, generator=generator)
            shape = np.minimum(gen(z).double().numpy(), self.shape_cap[key])
        return shape / shape.sum(axis=1, keepdims=True)

    def sample(self, n_homes: int, weekend: np.ndarray, seed: int | np.random.SeedSequence
               ) -> LoadSample:
        """Load of `n_homes` homes over consecutive days whose day types are `weekend`."""
        seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        chain_seq, shape_seq = seq.spawn(2)
        cluster, daily_kwh, scale = self.behaviour.sample(
            n_homes, np.asarray(weekend, bool), np.random.default_rng(chain_seq))
        torch_gen = torch.Generator().manual_seed(int(shape_seq.generate_state(1)[0]))
        to_kw = (daily_kwh * 3600 / MODEL_STEP_S)[..., None]
        kw = np.empty((n_homes, len(weekend), STEPS))
        redo = np.ones((n_homes, len(weekend)), dtype=bool)
        for _ in range(1 + REDRAWS):
            for w, kind in enumerate(DAY_TYPES):
                for k in range(self.behaviour.n_clusters(kind)):
                    homes, days = np.nonzero(redo & (cluster == k)
                                             & (np.asarray(weekend) == bool(w))[None])
                    if len(homes):
                        shapes = self.sample_shapes(kind, k, len(homes), torch_gen)
                        kw[homes, days] = shapes * to_kw[homes, days]
            redo = kw.max(axis=2) > self.max_kw
            if not redo.any():
                break
        kw = limit_power(kw, self.max_kw)
        return LoadSample(kw=kw, cluster=cluster, daily_kwh=daily_kwh, scale=scale)

    def cluster_names(self) -> dict[str, list[str]]:
        return self.behaviour.names

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({
            "format": FORMAT,
            "meta": _plain(self.meta),
            "behaviour": self.behaviour.state(),
            "generators": {k: g.state_dict() for k, g in sorted(self.generators.items())},
            "limits": {"shape_cap": _plain(self.shape_cap), "max_kw": float(self.max_kw)},
        }, path)
        return path

    @staticmethod
    def load(path: str | Path | None = None) -> LoadModel:
        """Load a model file (default: the shipped weights)."""
        path = Path(path) if path is not None else DEFAULT_PATH
        if not path.exists():
            raise ProfileError(f"{path}: load model not found; run `cosim data train` to make it")
        try:
            data = torch.load(path, weights_only=True)
        except Exception as exc:  # a truncated or foreign file fails in many ways
            raise ProfileError(f"{path}: not a load model file ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:200]})") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ProfileError(f"{path}: not a load model file (expected format {FORMAT})")
        gan = data["meta"]["gan"]
        generators = {}
        for key, state in data["generators"].items():
            gen = ShapeGenerator(gan["latent"], gan["hidden"])
            gen.load_state_dict(state)
            gen.eval()
            generators[key] = gen
        limits = data["limits"]
        caps = {k: np.asarray(v, dtype=float) for k, v in limits["shape_cap"].items()}
        return LoadModel(Behaviour.from_state(data["behaviour"]), generators, caps,
                         float(limits["max_kw"]), data["meta"])


def _plain(value):
    """Numpy scalars and arrays inside `value` as Python ones (weights-only files need that)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, str):
        return str(value)  # also str subclasses such as torch.__version__
    return value
