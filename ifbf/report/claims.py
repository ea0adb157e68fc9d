"""The paper's claims as data (the ``claims:`` list of each experiments/table<N>.yaml) and their verdicts.

A claim compares rows of its table (by row name; a side may be a row set, whose value is the mean
of its rows' mIoU). Kinds:

- ``delta``: Δ = value(rows[0]) − value(rows[1]) is ``higher`` (> 0) or ``lower`` (< 0); ``size`` is
  the paper's Δ. The value is mIoU, or one class's IoU with ``class: <name>``.
- ``best_of``: rows[0] has the highest mIoU ``among`` the listed rows (default: every runnable row).
- ``value``: rows[0]'s own mIoU is ``about`` the paper's ``size`` (the paper's number lies in our
  interval), or ``higher``/``lower`` than ``threshold`` (default ``size``).
- ``classes``: rows[0]'s IoU is above rows[1]'s in more than ``threshold`` classes (default: half of
  them); ``size`` is the paper's count.

Verdicts, from the bootstrap of ``ifbf.report.stats`` (95% intervals):

- delta / value / classes: **supported** when the interval excludes the null (0, the threshold) on the
  claimed side, **contradicted** when it excludes it on the other side, **not resolved** otherwise,
  with the seeds per row that would resolve a Δ of the observed size (``stats.seeds_needed``). For
  ``about``: supported when the paper's value lies inside our interval, else contradicted.
- best_of: with P = the fraction of resamples in which the claimed row is the argmax, **supported**
  when P ≥ 0.95, **contradicted** when P ≤ 0.05 (95% sure it is not the best), else not resolved.
- **not evaluated**: a row has no per-image counts (not run yet, or a row still to be added), or a
  ``value`` claim judged with ``absolute=False`` (a reduced preset cannot test the paper's numbers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ifbf.config import ConfigError, read_yaml
from ifbf.experiments import TableSpec, class_names, load_table, table_path
from ifbf.report.stats import (LEVEL, RESAMPLES, Counts, Difference, best_probability, class_wins, miou_interval,
                        seeds_needed, set_difference)

KINDS = ("delta", "best_of", "value", "classes")
DIRECTIONS = ("higher", "lower", "about")
SUPPORTED, CONTRADICTED, NOT_RESOLVED, NOT_EVALUATED = "supported", "contradicted", "not resolved", "not evaluated"
BEST_SURE = 0.95  # best_of: P(argmax) at or above this supports, at or below 1 − this contradicts
# Rows another change is adding to the table specs; claims may name them before they exist.
PENDING_ROWS = frozenset({"DeepLabV3+ (ours)"})

RowCounts = Mapping[str, Sequence[Counts]]  # row name -> one Counts per seed (all on the same images)


@dataclass(frozen=True)
class Claim:
    id: str
    table: int
    text: str  # the paper's statement, in short, with where it is made
    kind: str  # one of KINDS
    rows: tuple[tuple[str, ...], ...]  # the sides compared; each a row or a row set
    direction: str  # one of DIRECTIONS
    size: float | None  # the paper's Δ / value / count (None: the paper gives no number)
    threshold: float | None = None  # value / classes: the null the interval is compared with
    among: tuple[str, ...] = ()  # best_of: the candidate rows
    metric: str = "miou"  # "miou" or a class name
    note: str = ""

    def row_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*(r for side in self.rows for r in side), *self.among]))


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    verdict: str  # SUPPORTED, CONTRADICTED, NOT_RESOLVED or NOT_EVALUATED
    ours: float | None = None  # our Δ / value / class count / P(claimed row is best), in points
    low: float | None = None  # 95% interval of ``ours`` (best_of: of Δ to the strongest other row)
    high: float | None = None
    p_le_zero: float | None = None  # delta: fraction of resamples with Δ ≤ 0
    size_inside: bool | None = None  # the paper's size lies in our interval
    seeds_needed: int | None = None  # not resolved: seeds per row to resolve the observed Δ (None: more images)
    best: Mapping[str, float] | None = None  # best_of: P(row is best) per candidate
    reason: str = ""


def _side(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{where}: each entry of 'rows' is a row name or a list of row names, not {value!r}")


def parse_claim(entry: object, table: TableSpec, where: str) -> Claim:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: a claim is a mapping with id, text, kind, rows, direction, size")
    known = {"id", "text", "kind", "rows", "direction", "size", "threshold", "among", "metric", "note"}
    if unknown := set(entry) - known:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)} (a claim has {sorted(known)})")
    missing = [k for k in ("id", "text", "kind", "rows") if k not in entry]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    where = f"{where} ({entry['id']})"
    kind, direction = entry["kind"], entry.get("direction", "higher")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    if direction not in DIRECTIONS or (direction == "about" and kind != "value"):
        raise ConfigError(f"{where}: direction {direction!r}: use higher or lower (about: value claims only)")
    if not isinstance(entry["rows"], list):
        raise ConfigError(f"{where}: 'rows' is a list")
    rows = tuple(_side(v, where) for v in entry["rows"])
    if len(rows) != (2 if kind in ("delta", "classes") else 1) or (kind != "delta" and any(len(s) > 1 for s in rows)):
        raise ConfigError(f"{where}: a {kind} claim names {'two sides' if kind in ('delta', 'classes') else 'one row'}"
                          " in 'rows' (row sets: delta claims only)")
    metric = str(entry.get("metric", "miou"))
    if metric != "miou" and metric not in class_names():
        raise ConfigError(f"{where}: metric {metric!r} is neither miou nor a class ({', '.join(class_names())})")
    try:
        size = None if entry.get("size") is None else float(entry["size"])
        threshold = None if entry.get("threshold") is None else float(entry["threshold"])
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: size and threshold are numbers") from None
    if kind == "value" and size is None:
        raise ConfigError(f"{where}: a value claim needs the paper's value as 'size'")
    among = tuple(_side(entry.get("among", [r.name for r in table.runnable()]), where)) if kind == "best_of" else ()
    claim = Claim(id=str(entry["id"]), table=table.number, text=str(entry["text"]), kind=kind, rows=rows,
                  direction=direction, size=size, threshold=threshold, among=among, metric=metric,
                  note=str(entry.get("note", "")))
    names = {r.name for r in table.rows}
    if unknown_rows := [r for r in claim.row_names() if r not in names and r not in PENDING_ROWS]:
        raise ConfigError(f"{where}: no row named {', '.join(map(repr, unknown_rows))} in table {table.number} "
                          f"(rows: {', '.join(sorted(names))})")
    if kind == "best_of" and rows[0][0] not in among:
        raise ConfigError(f"{where}: the claimed best row {rows[0][0]!r} is not among the candidates")
    return claim


def load_claims(number: int) -> tuple[Claim, ...]:
    """The claims of table ``number`` (its spec's ``claims:`` list), checked against its rows."""
    table = load_table(number)
    path = table_path(number)
    entries = read_yaml(path).get("claims", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: 'claims' is a list of claims")
    claims = tuple(parse_claim(entry, table, f"{path}: claim {i + 1}") for i, entry in enumerate(entries))
    ids = [c.id for c in claims]
    if duplicates := sorted({i for i in ids if ids.count(i) > 1}):
        raise ConfigError(f"{path}: duplicate claim id(s) {', '.join(duplicates)}")
    return claims


def _select(rows: RowCounts, metric: str) -> RowCounts:
    if metric == "miou":
        return rows
    column = class_names().index(metric)
    return {name: [c.only(column) for c in seeds] for name, seeds in rows.items()}


def _sided(claim: Claim, low: float, high: float, null: float) -> str:
    """Where the interval lies relative to ``null``, read in the claimed direction."""
    if low > null:
        return SUPPORTED if claim.direction == "higher" else CONTRADICTED
    if high < null:
        return SUPPORTED if claim.direction == "lower" else CONTRADICTED
    return NOT_RESOLVED


def _inside(size: float | None, low: float, high: float) -> bool | None:
    return None if size is None else low <= size <= high


def _delta(claim: Claim, rows: RowCounts, resamples: int, seed: int) -> Verdict:
    a, b = ([rows[r] for r in side] for side in claim.rows)
    diff: Difference = set_difference(a, b, resamples, LEVEL, seed)
    verdict = _sided(claim, diff.low, diff.high, 0.0)
    needed = seeds_needed(diff) if verdict == NOT_RESOLVED else None
    reason = ""
    if verdict == NOT_RESOLVED:
        reason = (f"{needed} seeds per row would resolve Δ = {diff.estimate:+.2f}" if needed is not None
                  else "more seeds alone cannot resolve it: the image noise is larger than the observed Δ")
    return Verdict(claim, verdict, diff.estimate, diff.low, diff.high, diff.p_le_zero,
                   _inside(claim.size, diff.low, diff.high), needed, reason=reason)


def _value(claim: Claim, rows: RowCounts, resamples: int, seed: int) -> Verdict:
    interval = miou_interval(rows[claim.rows[0][0]], resamples, LEVEL, seed)
    inside = _inside(claim.size, interval.low, interval.high)
    if claim.direction == "about":
        verdict = SUPPORTED if inside else CONTRADICTED
    else:
        null = claim.threshold if claim.threshold is not None else claim.size
        verdict = _sided(claim, interval.low, interval.high, null)
    return Verdict(claim, verdict, interval.estimate, interval.low, interval.high, size_inside=inside)


def _classes(claim: Claim, rows: RowCounts, resamples: int, seed: int) -> Verdict:
    a, b = (rows[side[0]] for side in claim.rows)
    wins = class_wins(a, b, resamples, LEVEL, seed)
    null = claim.threshold if claim.threshold is not None else a[0].inter.shape[1] / 2
    return Verdict(claim, _sided(claim, wins.low, wins.high, null), wins.estimate, wins.low, wins.high,
                   size_inside=_inside(claim.size, wins.low, wins.high), reason=f"classes won, against {null:g}")


def _best_of(claim: Claim, rows: RowCounts, resamples: int, seed: int) -> Verdict:
    candidates = {name: rows[name] for name in claim.among}
    best = best_probability(candidates, resamples, seed)
    claimed = claim.rows[0][0]
    p = best[claimed]
    verdict = SUPPORTED if p >= BEST_SURE else CONTRADICTED if p <= 1 - BEST_SURE else NOT_RESOLVED
    others = {name: v for name, v in candidates.items() if name != claimed}
    rival = max(others, key=lambda name: best[name]) if others else None
    low = high = needed = None
    reason = f"P(best) = {p:.2f}"
    if rival is not None:  # Δ to the row most often best instead
        diff = set_difference([rows[claimed]], [rows[rival]], resamples, LEVEL, seed)
        low, high = diff.low, diff.high
        reason += f"; Δ to {rival} {diff.estimate:+.2f} [{diff.low:+.2f}, {diff.high:+.2f}]"
        needed = seeds_needed(diff) if verdict == NOT_RESOLVED else None
    return Verdict(claim, verdict, p, low, high, seeds_needed=needed, best=best, reason=reason)


def judge(claim: Claim, rows: RowCounts, resamples: int = RESAMPLES, seed: int = 0, absolute: bool = True) -> Verdict:
    """The verdict on ``claim`` from per-image counts of its rows (missing rows: not evaluated).
    ``absolute=False`` (a reduced preset: smaller models, fewer iterations) leaves the paper's absolute
    numbers (``value`` claims) not evaluated: only differences carry over from such a setting."""
    if claim.kind == "value" and not absolute:
        return Verdict(claim, NOT_EVALUATED, reason="an absolute number of the paper: judged on the paper preset only")
    missing = [r for r in claim.row_names() if not rows.get(r)]
    if missing:
        return Verdict(claim, NOT_EVALUATED, reason=f"no per-image counts for {', '.join(missing)}")
    selected = _select({r: rows[r] for r in claim.row_names()}, claim.metric)
    judges = {"delta": _delta, "value": _value, "classes": _classes, "best_of": _best_of}
    return judges[claim.kind](claim, selected, resamples, seed)


def judge_all(claims: Sequence[Claim], rows: RowCounts, resamples: int = RESAMPLES, seed: int = 0,
              absolute: bool = True) -> list[Verdict]:
    return [judge(claim, rows, resamples, seed, absolute) for claim in claims]
