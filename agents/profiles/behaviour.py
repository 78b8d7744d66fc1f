"""Behaviour clusters and day-to-day Markov chains: what keeps one home consistent over days.

A day of load is split into a shape and a size. The shape is the day normalised to sum to
one; the size is the day's energy (kWh). Both are modelled per day type (weekday, weekend):

- **Clusters.** Shapes are described by `shape_features` (the share of the day's energy in
  seven clock windows, and the peak-to-mean ratio), standardised, and grouped by scikit-learn
  K-means. Each cluster gets a generative model (`agents.profiles.gan`) and a readable name
  from the window where its centre stands out most against the average day.
- **Cluster chain.** The first day's cluster is drawn from the cluster frequencies of its
  day type; each next day's from a transition matrix for the pair of day types
  (weekday>weekday, weekday>weekend, weekend>weekday, weekend>weekend), counted over
  consecutive days of the same home.
- **Size.** A home's daily energy is `scale * r`: `scale` is the home's mean daily energy,
  drawn once per home from a log-normal; `r` is the day's energy relative to that mean. `r`
  is binned into brackets at quantiles of the training data, and the bracket follows a
  Markov chain like the clusters. The home scale
  carries the persistent differences between homes (most of the variance of daily energy in
  multi-day data), the chain the day-to-day swings, and the weekday/weekend pairs the weekly
  rhythm. Brackets hold equal shares of the training days, and within its bracket r is drawn
  from the training data's quantile function (`r_quantiles`, 16 points per bracket), so
  the long upper tail is as rare as in the data.
- **Scale distribution.** Estimated by the method of moments over every training home,
  including homes seen for one day only: with m_h the mean log daily energy of home h over
  its n_h days and s_w^2 the within-home variance of log energy (from multi-day homes),
  Var(m_h) = s_b^2 + s_w^2 / n_h, so s_b^2 = mean((m_h - mean m)^2 - s_w^2 / n_h) and the
  log-scale mean is mean(m) - mean(log r).

Transition rows are smoothed towards the target day type's frequencies with `alpha` pseudo
counts, so a transition never seen in training keeps a small probability instead of zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agents.profiles.errors import ProfileError
from agents.profiles.realdata import STEPS, DaySet
from agents.profiles.timegrid import WEEKDAY, WEEKEND

DAY_TYPES = (WEEKDAY, WEEKEND)
QUANTILES_PER_BRACKET = 16
WINDOWS = (("night", 0, 6), ("early morning", 6, 9), ("morning", 9, 12), ("midday", 12, 15),
           ("afternoon", 15, 18), ("evening", 18, 21), ("late evening", 21, 24))


def transition(from_type: str, to_type: str) -> str:
    return f"{from_type}>{to_type}"


def normalise(kw: np.ndarray) -> np.ndarray:
    """Daily normalisation: each day (last axis) divided by its sum, so it sums to one."""
    return kw / kw.sum(axis=-1, keepdims=True)


def shape_features(shape: np.ndarray) -> np.ndarray:
    """[n, 8]: energy share in each of WINDOWS, then the peak-to-mean ratio of the day."""
    per_hour = STEPS // 24
    shares = [shape[:, a * per_hour:b * per_hour].sum(axis=1) for _, a, b in WINDOWS]
    return np.stack([*shares, shape.max(axis=1) * STEPS], axis=1)


def hourly_shares(shape: np.ndarray) -> np.ndarray:
    """[n, 24] share of the day's energy in each hour (what the cluster classifier sees)."""
    return shape.reshape(len(shape), 24, -1).sum(axis=2)


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of `probs` ([n, k], rows summing to one)."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None] * cum[:, -1:]
    return np.minimum((u >= cum).sum(axis=1), probs.shape[1] - 1)


def _chain_counts(states: np.ndarray, data: DaySet, n_states: dict[str, int],
                  ) -> dict[str, np.ndarray]:
    """Transition counts between consecutive days of the same home, per day-type pair."""
    counts = {transition(a, b): np.zeros((n_states[a], n_states[b])) for a in DAY_TYPES
              for b in DAY_TYPES}
    order = np.lexsort((data.day, data.home))
    home, day, weekend = data.home[order], data.day[order], data.weekend[order]
    s = states[order]
    nxt = (home[1:] == home[:-1]) & (day[1:] == day[:-1] + 1)
    for i in np.flatnonzero(nxt):
        key = transition(DAY_TYPES[int(weekend[i])], DAY_TYPES[int(weekend[i + 1])])
        counts[key][s[i], s[i + 1]] += 1
    return counts


def _smooth(counts: dict[str, np.ndarray], p0: dict[str, np.ndarray], alpha: float
            ) -> dict[str, np.ndarray]:
    out = {}
    for key, c in counts.items():
        prior = p0[key.split(">")[1]]
        out[key] = (c + alpha * prior) / (c.sum(axis=1, keepdims=True) + alpha)
    return out


@dataclass
class Behaviour:
    """Fitted clusters, chains and size distribution (see the module docstring).

    Per day type: `feature_mean`/`feature_std` (standardisation), `centroids` [k, 8] in
    standardised units, `names` [k], `cluster_p0` [k], `bracket_p0` [B]. Per day-type pair
    ("weekday>weekend", ...): `cluster_trans` [k_from, k_to] and `bracket_trans` [B, B].
    `r_quantiles` [16 B + 1] is the quantile function of the relative daily energy r at
    equally spaced probabilities (every 16th point is a bracket edge); the home scale (mean
    daily kWh) is log-normal with `log_scale_mean` and `log_scale_std`.
    """

    feature_mean: dict[str, np.ndarray]
    feature_std: dict[str, np.ndarray]
    centroids: dict[str, np.ndarray]
    names: dict[str, list[str]]
    cluster_p0: dict[str, np.ndarray]
    cluster_trans: dict[str, np.ndarray]
    r_quantiles: np.ndarray
    bracket_p0: dict[str, np.ndarray]
    bracket_trans: dict[str, np.ndarray]
    log_scale_mean: float
    log_scale_std: float

    def n_clusters(self, day_type: str) -> int:
        return len(self.centroids[day_type])

    def assign(self, shape: np.ndarray, day_type: str) -> np.ndarray:
        """The nearest cluster centre of each normalised day (K-means assignment)."""
        z = (shape_features(shape) - self.feature_mean[day_type]) / self.feature_std[day_type]
        d = ((z[:, None, :] - self.centroids[day_type][None]) ** 2).sum(axis=2)
        return d.argmin(axis=1)

    def sample(self, n_homes: int, weekend: np.ndarray, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Clusters [homes, days], daily energy [homes, days] (kWh) and home scale [homes].

        `weekend` is [days]: the day type of each day of the run.
        """
        days = len(weekend)
        z = np.clip(rng.standard_normal(n_homes), -3, 3)
        scale = np.exp(self.log_scale_mean + self.log_scale_std * z)
        cluster = np.empty((n_homes, days), dtype=np.int64)
        bracket = np.empty((n_homes, days), dtype=np.int64)
        for d in range(days):
            kind = DAY_TYPES[int(weekend[d])]
            if d == 0:
                p_c = np.broadcast_to(self.cluster_p0[kind], (n_homes, self.n_clusters(kind)))
                p_b = np.broadcast_to(self.bracket_p0[kind], (n_homes, len(self.bracket_p0[kind])))
            else:
                key = transition(DAY_TYPES[int(weekend[d - 1])], kind)
                p_c = self.cluster_trans[key][cluster[:, d - 1]]
                p_b = self.bracket_trans[key][bracket[:, d - 1]]
            cluster[:, d] = _categorical(rng, p_c)
            bracket[:, d] = _categorical(rng, p_b)
        n_brackets = len(self.r_quantiles) // QUANTILES_PER_BRACKET
        u = (bracket + rng.random((n_homes, days))) / n_brackets
        r = np.interp(u, np.linspace(0, 1, len(self.r_quantiles)), self.r_quantiles)
        return cluster, scale[:, None] * r, scale

    @staticmethod
    def fit(data: DaySet, clusters: int, brackets: int, seed: int, alpha: float = 1.0
            ) -> tuple[Behaviour, np.ndarray]:
        """Fit clusters, chains and the size distribution to training home-days.

        Returns the fitted behaviour and each training day's cluster.
        """
        from sklearn.cluster import KMeans

        shape = normalise(data.kw)
        feats = shape_features(shape)
        labels = np.empty(len(data), dtype=np.int64)
        mean, std, centroids, names, p0 = {}, {}, {}, {}, {}
        for w, kind in enumerate(DAY_TYPES):
            rows = data.weekend == bool(w)
            if rows.sum() < 2 * clusters:
                raise ProfileError(f"training data has {int(rows.sum())} {kind} days, too few "
                                   f"for {clusters} clusters (need {2 * clusters})")
            f = feats[rows]
            mean[kind], std[kind] = f.mean(axis=0), f.std(axis=0) + 1e-12
            km = KMeans(n_clusters=clusters, n_init=10, random_state=seed)
            labels[rows] = km.fit_predict((f - mean[kind]) / std[kind])
            centroids[kind] = km.cluster_centers_
            names[kind] = _cluster_names(centroids[kind] * std[kind] + mean[kind], f.mean(axis=0))
            p0[kind] = np.bincount(labels[rows], minlength=clusters) / rows.sum()
        cluster_trans = _smooth(_chain_counts(labels, data, {k: clusters for k in DAY_TYPES}),
                                p0, alpha)

        energy = data.daily_kwh()
        homes, inverse, n_days = np.unique(data.home, return_inverse=True, return_counts=True)
        multi = n_days[inverse] > 1
        if not multi.any():
            raise ProfileError("training data needs homes seen on several consecutive days "
                               "(richardsonpy homes or a CSV) to learn day-to-day changes")
        home_mean = np.bincount(inverse, weights=energy) / n_days
        r = energy / home_mean[inverse]
        probs = np.linspace(0, 1, QUANTILES_PER_BRACKET * brackets + 1)
        r_quantiles = np.quantile(r[multi], probs)
        edges = r_quantiles[::QUANTILES_PER_BRACKET]
        inner = np.clip(np.searchsorted(edges, r, side="right") - 1, 0, brackets - 1)
        bracket_p0 = {kind: np.bincount(inner[multi & (data.weekend == bool(w))],
                                        minlength=brackets) for w, kind in enumerate(DAY_TYPES)}
        bracket_p0 = {k: v / max(v.sum(), 1) for k, v in bracket_p0.items()}
        bracket_trans = _smooth(_chain_counts(inner, data, {k: brackets for k in DAY_TYPES}),
                                bracket_p0, alpha)

        log_e = np.log(energy)
        m_h = np.bincount(inverse, weights=log_e) / n_days
        within = log_e[multi] - m_h[inverse][multi]
        dof = max(int(multi.sum()) - len(np.unique(inverse[multi])), 1)
        s_w2 = float((within ** 2).sum() / dof)
        s_b2 = float(np.mean((m_h - m_h.mean()) ** 2 - s_w2 / n_days))
        return Behaviour(
            feature_mean=mean, feature_std=std, centroids=centroids, names=names,
            cluster_p0=p0, cluster_trans=cluster_trans, r_quantiles=r_quantiles,
            bracket_p0=bracket_p0, bracket_trans=bracket_trans,
            log_scale_mean=float(m_h.mean() - np.log(r[multi]).mean()),
            log_scale_std=float(np.sqrt(max(s_b2, 1e-4))),
        ), labels

    def state(self) -> dict:
        """Plain nested dict of lists and floats, for a weights-only torch file."""
        out = {}
        for key, value in vars(self).items():
            if isinstance(value, dict):
                out[key] = {k: np.asarray(v).tolist() if not isinstance(v, list) else v
                            for k, v in value.items()}
            elif isinstance(value, np.ndarray):
                out[key] = value.tolist()
            else:
                out[key] = value
        return out

    @staticmethod
    def from_state(state: dict) -> Behaviour:
        def arrays(d: dict) -> dict:
            return {k: np.asarray(v, dtype=float) for k, v in d.items()}

        return Behaviour(
            feature_mean=arrays(state["feature_mean"]), feature_std=arrays(state["feature_std"]),
            centroids=arrays(state["centroids"]), names=dict(state["names"]),
            cluster_p0=arrays(state["cluster_p0"]), cluster_trans=arrays(state["cluster_trans"]),
            r_quantiles=np.asarray(state["r_quantiles"], dtype=float),
            bracket_p0=arrays(state["bracket_p0"]), bracket_trans=arrays(state["bracket_trans"]),
            log_scale_mean=float(state["log_scale_mean"]),
            log_scale_std=float(state["log_scale_std"]),
        )


def _cluster_names(centres: np.ndarray, average: np.ndarray) -> list[str]:
    """Name each centre by the window whose energy share most exceeds the average day's."""
    ratio = centres[:, :len(WINDOWS)] / average[:len(WINDOWS)]
    names = []
    for row in ratio:
        name = f"{WINDOWS[int(row.argmax())][0]} peak"
        n = sum(existing.startswith(name) for existing in names)
        names.append(name if n == 0 else f"{name} {n + 1}")
    return names
