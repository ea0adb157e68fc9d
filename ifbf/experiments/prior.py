"""A preset's ``report:`` section: what the verdicts and the design assume where its runs cannot tell."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ifbf.config import ConfigError


@dataclass(frozen=True)
class ReportPrior:
    """What the verdicts and the design of a preset assume where its runs cannot tell (the ``report:`` section
    of a preset): the std of a row's mIoU between training seeds (points), where that number comes from, the
    equivalence margin of ``about`` claims (points), and the device-hours of one training where neither a
    finished run nor preflight.json gives one (``--design --budget``; None: run --preflight first)."""

    seed_std: float | None = 1.0  # None: unknown (a row with one seed then gets no interval)
    seed_std_source: str = "assumed"
    margin: float = 1.0
    seed_std_df: float = math.inf  # how well seed_std is known, in df (lends at most 2 to a one-seed claim)
    training_hours: float | None = None  # device-hours of one training (one seed of one row), assumed
    training_hours_source: str = "assumed"
    seed_diff_std: float | None = None  # σ_d of a paired Δ of two rows (None: sqrt(2) seed_std, ρ = 0 assumed)
    margin_source: str = "assumed"  # why "about" claims use ``margin``
    # price of a training from the model's FLOPs before anything is measured: dense peak (TFLOP/s of one
    # device) and the range of its utilisation (low, high); None: use training_hours
    peak_tflops: float | None = None
    utilisation: tuple[float, float] | None = None
    utilisation_source: str = "assumed"


REPORT_KEYS = ("seed_std", "seed_std_source", "seed_std_df", "seed_diff_std", "margin", "margin_source",
               "training_hours", "training_hours_source", "peak_tflops", "utilisation", "utilisation_source")


def _utilisation(value: object, path: Path) -> tuple[float, float] | None:
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, (int, float)) for v in value)
            or not 0 < value[0] <= value[1] <= 1):
        raise ConfigError(f"{path}: report.utilisation is [low, high], fractions of the peak with 0 < low <= high <= 1")
    return float(value[0]), float(value[1])


def _report_prior(data: object, path: Path) -> ReportPrior:
    if data is None:
        return ReportPrior()
    if not isinstance(data, dict) or set(data) - set(REPORT_KEYS):
        raise ConfigError(f"{path}: 'report' is a mapping with {', '.join(REPORT_KEYS)}")
    try:
        std, hours = data.get("seed_std", 1.0), data.get("training_hours")
        prior = ReportPrior(None if std is None else float(std), str(data.get("seed_std_source", "assumed")),
                            float(data.get("margin", 1.0)), float(data.get("seed_std_df", math.inf)),
                            None if hours is None else float(hours),
                            str(data.get("training_hours_source", "assumed")),
                            None if data.get("seed_diff_std") is None else float(data["seed_diff_std"]),
                            str(data.get("margin_source", "assumed")),
                            None if data.get("peak_tflops") is None else float(data["peak_tflops"]),
                            _utilisation(data.get("utilisation"), path), str(data.get("utilisation_source", "assumed")))
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: report.seed_std, report.margin and report.training_hours are numbers") from None
    stds = [v for v in (prior.seed_std, prior.seed_diff_std) if v is not None]
    if any(not 0 <= v < math.inf for v in stds) or not 0 < prior.margin < math.inf or not prior.seed_std_df > 0:
        raise ConfigError(f"{path}: report.seed_std and seed_diff_std must be >= 0, report.margin > 0 and "
                          "report.seed_std_df > 0 (finite numbers)")
    if (prior.peak_tflops is None) != (prior.utilisation is None) or not 0 < (prior.peak_tflops or 1) < math.inf:
        raise ConfigError(f"{path}: report.peak_tflops (> 0) and report.utilisation go together")
    if prior.training_hours is not None and not 0 < prior.training_hours < math.inf:
        raise ConfigError(f"{path}: report.training_hours must be > 0 (device-hours of one training)")
    return prior
