"""Per-label thresholds for zero-shot tags, chosen from the library's own scores.

For one label, the cosine scores of every photo in the library against the label's prompts are
mostly those of photos without the label (the background) plus, for a label that occurs, a
higher-scoring group of photos with it. Calibration fits a two-component Gaussian mixture to
that column of scores (EM, started at the 25th and 90th percentiles) and keeps a tag where the
posterior probability of the upper component is at least `confidence` (default 0.9; most tags
kept score far above their threshold, so the share of right tags is higher: 0.95 on synthetic
shapes). No tag is better than a wrong one. A label is used only when the mixture really has two parts: the
components are separated (Ashman's D >= 2) and the upper one holds less than half the library;
otherwise the label is left out of the run (its scores do not tell photos with it from photos
without it). Calibration needs at least 50 photos; below that, give a threshold.

Measured on synthetic shapes with the shipped model (BENCHMARKS.md): the share of kept tags that
are right tracks the confidence asked for. With `threshold` "off", every photo gets the top label
of each group instead (what a zero-shot classifier answers), and a fixed cosine can be given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xmodal.errors import InvalidArgumentError

MIN_ITEMS = 50
MIN_SEPARATION = 2.0
MAX_UPPER_SHARE = 0.5
DEFAULT_CONFIDENCE = 0.9
_ITERATIONS = 200
_GRID = 512


@dataclass(frozen=True)
class Mixture:
    """Two 1-D Gaussians: (lower, upper) means, standard deviations and weights."""

    means: tuple[float, float]
    sds: tuple[float, float]
    weights: tuple[float, float]

    @property
    def separation(self) -> float:
        """Ashman's D: sqrt(2) |mu1 - mu2| / sqrt(sd1^2 + sd2^2); above 2, two distinct parts."""
        return float(np.sqrt(2) * (self.means[1] - self.means[0]) / np.hypot(*self.sds))

    def posterior(self, x: np.ndarray) -> np.ndarray:
        """P(upper component | score), made non-decreasing above the lower mean (a wider background
        would otherwise win back the far right tail)."""
        x = np.asarray(x, dtype=np.float64)
        top = max(self.means[1] + 6 * self.sds[1], self.means[0] + 6 * self.sds[0])
        grid = np.linspace(self.means[0], top, _GRID)
        envelope = np.maximum.accumulate(self._raw_posterior(grid))
        return np.where(x >= self.means[0], np.interp(x, grid, envelope), self._raw_posterior(x))

    def _raw_posterior(self, x: np.ndarray) -> np.ndarray:
        mu, sd, w = (np.asarray(v, dtype=np.float64) for v in (self.means, self.sds, self.weights))
        density = w / sd * np.exp(-0.5 * ((x[..., None] - mu) / sd) ** 2)
        return density[..., 1] / np.maximum(density.sum(axis=-1), 1e-300)


def fit_mixture(scores: np.ndarray) -> Mixture:
    """A two-component Gaussian mixture of a column of scores, by EM."""
    x = np.asarray(scores, dtype=np.float64)
    mu = np.percentile(x, [25, 90])
    spread = max(float(x.std()), 1e-4)
    sd = np.array([spread, spread]) / 2
    w = np.array([0.8, 0.2])
    for _ in range(_ITERATIONS):
        density = w / sd * np.exp(-0.5 * ((x[:, None] - mu) / sd) ** 2)
        resp = density / np.maximum(density.sum(axis=1, keepdims=True), 1e-300)
        n = resp.sum(axis=0) + 1e-9
        w = n / len(x)
        mu = (resp * x[:, None]).sum(axis=0) / n
        sd = np.sqrt((resp * (x[:, None] - mu) ** 2).sum(axis=0) / n) + 1e-4
    order = np.argsort(mu)
    return Mixture(tuple(map(float, mu[order])), tuple(map(float, sd[order])), tuple(map(float, w[order])))


@dataclass(frozen=True)
class LabelThreshold:
    """How one label is decided: the lowest cosine that is tagged (None: the label is not used),
    the mixture it came from, and why a label is left out."""

    label: str
    cosine: float | None
    mixture: Mixture | None = None
    reason: str | None = None

    def to_dict(self) -> dict:
        out: dict = {"cosine": None if self.cosine is None else round(self.cosine, 6)}
        if self.mixture is not None:
            out |= {
                "means": [round(m, 6) for m in self.mixture.means],
                "sds": [round(s, 6) for s in self.mixture.sds],
                "weights": [round(w, 6) for w in self.mixture.weights],
            }
        return out | ({"reason": self.reason} if self.reason else {})

    @classmethod
    def from_dict(cls, label: str, data: dict) -> LabelThreshold:
        mixture = None
        if "means" in data:
            mixture = Mixture(tuple(data["means"]), tuple(data["sds"]), tuple(data["weights"]))
        return cls(label, data.get("cosine"), mixture, data.get("reason"))

    def confidence(self, scores: np.ndarray) -> np.ndarray:
        """How sure the label is at these scores: the mixture's posterior, or 1 without a mixture."""
        if self.mixture is None:
            return np.ones_like(np.asarray(scores, dtype=np.float64))
        return self.mixture.posterior(scores)


def calibrate(labels: list[str], scores: np.ndarray, confidence: float = DEFAULT_CONFIDENCE) -> list[LabelThreshold]:
    """Thresholds for every label from the (items, labels) cosine scores of the library."""
    if not 0.5 <= confidence < 1:
        raise InvalidArgumentError("--confidence", confidence, "a probability from 0.5 to below 1")
    if scores.shape[0] < MIN_ITEMS:
        raise InvalidArgumentError(
            "calibration",
            f"{scores.shape[0]} photos",
            f"at least {MIN_ITEMS} photos to calibrate on; index more, or give --threshold COSINE",
        )
    return [_label_threshold(label, scores[:, j], confidence) for j, label in enumerate(labels)]


def _label_threshold(label: str, column: np.ndarray, confidence: float) -> LabelThreshold:
    mixture = fit_mixture(column)
    if mixture.separation < MIN_SEPARATION:
        return LabelThreshold(label, None, mixture, f"no distinct group of high scores (D {mixture.separation:.2f})")
    if mixture.weights[1] >= MAX_UPPER_SHARE:
        return LabelThreshold(label, None, mixture, f"would apply to {mixture.weights[1]:.0%} of the photos")
    grid = np.linspace(mixture.means[0], max(float(column.max()), mixture.means[1] + 6 * mixture.sds[1]), 4 * _GRID)
    passing = np.nonzero(mixture.posterior(grid) >= confidence)[0]
    if not len(passing):
        return LabelThreshold(label, None, mixture, f"no score reaches confidence {confidence}")
    return LabelThreshold(label, float(grid[passing[0]]), mixture)


def fixed_thresholds(labels: list[str], cosine: float) -> list[LabelThreshold]:
    """The same cosine floor for every label (a given threshold instead of calibration)."""
    return [LabelThreshold(label, float(cosine)) for label in labels]
