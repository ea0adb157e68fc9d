"""The paper's claims as data (the ``claims:`` list of each experiments/<paper>/table<N>.yaml), parsed and checked
against the table's rows; their verdicts are ``ifbf.report.verdicts``.

A claim compares rows of its table (by row name; a side may be a row set, whose value is the mean
of its rows' mIoU). Kinds:

- ``delta``: Δ = value(rows[0]) − value(rows[1]) is ``higher`` (> 0) or ``lower`` (< 0); ``size`` is
  the paper's Δ. The value is mIoU, or one class's IoU with ``metric: <class>``.
- ``best_of``: rows[0] has a higher mIoU than each of its ``rivals`` (runnable rows of the table, named in
  the spec: a row added to the table later is no rival until it is listed); ``size`` (default: from the
  table) is the paper's margin over its runner-up among them.
- ``value``: rows[0]'s own mIoU is ``about`` the paper's ``size`` (within the preset's margin), or
  ``higher``/``lower`` than ``threshold`` (default ``size``).
- ``classes``: rows[0]'s IoU is above rows[1]'s in more than ``threshold`` classes (default: half of
  them); ``size`` is the paper's count.
- ``all_of``: every claim listed in ``of`` (ids of earlier claims of the table) holds, e.g. "helps both
  depths": an intersection–union test, derived from those claims and not counted again in the totals.
"""

from __future__ import annotations

from dataclasses import dataclass

from ifbf.config import ConfigError, read_yaml
from ifbf.experiments import DEFAULT_PAPER, TableSpec, class_names, load_table, table_path

KINDS = ("delta", "best_of", "value", "classes", "all_of")
DIRECTIONS = ("higher", "lower", "about")


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
    rivals: tuple[str, ...] = ()  # best_of: the rows the claimed one must beat
    metric: str = "miou"  # "miou" or a class name
    note: str = ""
    of: tuple[str, ...] = ()  # all_of: the ids of the claims that must all hold
    runner_up: str = ""  # best_of: the paper's second best among the candidates (its margin is ``size``)
    paper: str = DEFAULT_PAPER  # whose table (its dataset's classes name a class metric)

    def row_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*(r for side in self.rows for r in side), *self.rivals]))

    @property
    def candidates(self) -> tuple[str, ...]:
        """best_of: the claimed row and its rivals."""
        return (self.rows[0][0], *self.rivals)


def _side(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{where}: each entry of 'rows' is a row name or a list of row names, not {value!r}")


KEYS = {"id", "text", "kind", "rows", "direction", "size", "threshold", "rivals", "metric", "note", "of"}


def _header(entry: object, where: str) -> tuple[dict, str]:
    """The entry as a mapping with its required keys, and ``where`` naming it."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: a claim is a mapping with id, text, kind, rows, direction, size")
    if "among" in entry:
        raise ConfigError(f"{where}: 'among' is gone: a best_of claim lists the rows it must beat in 'rivals' "
                          "(itself excluded)")
    if unknown := set(entry) - KEYS:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)} (a claim has {sorted(KEYS)})")
    needed = ("id", "text", "kind", "of") if entry.get("kind") == "all_of" else ("id", "text", "kind", "rows")
    if missing := [k for k in needed if k not in entry]:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    where = f"{where} ({entry['id']})"
    if entry["kind"] not in KINDS:
        raise ConfigError(f"{where}: kind {entry['kind']!r} is not one of {', '.join(KINDS)}")
    return entry, where


def _numbers(entry: dict, where: str) -> tuple[float | None, float | None]:
    try:
        size = None if entry.get("size") is None else float(entry["size"])
        threshold = None if entry.get("threshold") is None else float(entry["threshold"])
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: size and threshold are numbers") from None
    return size, threshold


def _rivals(data: dict, best: str, table: TableSpec, where: str) -> tuple[str, ...]:
    """best_of: the rows the claimed one must beat, as the spec names them: runnable rows of the table, at least
    one, itself excluded. Never a default: a row added to the table would silently become a rival."""
    runnable = [r.name for r in table.runnable() if r.name != best]
    if "rivals" not in data:
        raise ConfigError(f"{where}: a best_of claim names the rows it must beat: add rivals: [...] "
                          f"(runnable rows of table {table.number} besides {best!r}: {', '.join(runnable)})")
    rivals = _side(data["rivals"], where)
    if wrong := [r for r in rivals if r not in runnable]:
        raise ConfigError(f"{where}: rivals {', '.join(map(repr, wrong))}: a rival is a runnable row of table "
                          f"{table.number} other than the claimed best {best!r} ({', '.join(runnable)})")
    return tuple(dict.fromkeys(rivals))


def _runner_up(table: TableSpec, best: str, rivals: tuple[str, ...]) -> tuple[str, float | None]:
    """best_of: the paper's best row among the rivals and the claimed row's margin over it."""
    paper = {r.name: r.paper["miou"] for r in table.rows if "miou" in r.paper}
    others = [r for r in rivals if r in paper]
    if best not in paper or not others:
        return "", None
    second = max(others, key=lambda r: paper[r])
    return second, round(paper[best] - paper[second], 2)


def parse_claim(entry: object, table: TableSpec, where: str) -> Claim:
    data, where = _header(entry, where)
    kind, direction = data["kind"], data.get("direction", "higher")
    if kind == "all_of":
        of = data["of"]
        if not isinstance(of, list) or len(of) < 2 or not all(isinstance(i, str) for i in of):
            raise ConfigError(f"{where}: 'of' lists the ids of at least two earlier claims of the table")
        return Claim(id=str(data["id"]), table=table.number, text=str(data["text"]), kind=kind, rows=(),
                     direction=direction, size=None, note=str(data.get("note", "")), of=tuple(of), paper=table.paper)
    if direction not in DIRECTIONS or (direction == "about" and kind != "value"):
        raise ConfigError(f"{where}: direction {direction!r}: use higher or lower (about: value claims only)")
    if not isinstance(data["rows"], list):
        raise ConfigError(f"{where}: 'rows' is a list")
    rows = tuple(_side(v, where) for v in data["rows"])
    if len(rows) != (2 if kind in ("delta", "classes") else 1) or (kind != "delta" and any(len(s) > 1 for s in rows)):
        raise ConfigError(f"{where}: a {kind} claim names {'two sides' if kind in ('delta', 'classes') else 'one row'}"
                          " in 'rows' (row sets: delta claims only)")
    metric = str(data.get("metric", "miou"))
    if metric != "miou" and metric not in class_names(table.paper):
        raise ConfigError(f"{where}: metric {metric!r} is neither miou nor a class "
                          f"({', '.join(class_names(table.paper))})")
    size, threshold = _numbers(data, where)
    if kind == "value" and size is None:
        raise ConfigError(f"{where}: a value claim needs the paper's value as 'size'")
    if "rivals" in data and kind != "best_of":
        raise ConfigError(f"{where}: 'rivals' belongs to best_of claims")
    rivals = _rivals(data, rows[0][0], table, where) if kind == "best_of" else ()
    runner_up, margin = _runner_up(table, rows[0][0], rivals) if kind == "best_of" else ("", None)
    claim = Claim(id=str(data["id"]), table=table.number, text=str(data["text"]), kind=kind, rows=rows,
                  direction=direction, size=margin if size is None else size, threshold=threshold, rivals=rivals,
                  metric=metric, note=str(data.get("note", "")), runner_up=runner_up, paper=table.paper)
    names = {r.name for r in table.rows}
    if unknown_rows := [r for r in claim.row_names() if r not in names]:
        raise ConfigError(f"{where}: no row named {', '.join(map(repr, unknown_rows))} in table {table.number} "
                          f"(rows: {', '.join(sorted(names))})")
    return claim


def load_claims(number: int, paper: str = DEFAULT_PAPER) -> tuple[Claim, ...]:
    """The claims of table ``number`` of ``paper`` (its spec's ``claims:`` list), checked against its rows."""
    table = load_table(number, paper)
    path = table_path(number, paper)
    entries = read_yaml(path).get("claims", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: 'claims' is a list of claims")
    claims = tuple(parse_claim(entry, table, f"{path}: claim {i + 1}") for i, entry in enumerate(entries))
    ids = [c.id for c in claims]
    if duplicates := sorted({i for i in ids if ids.count(i) > 1}):
        raise ConfigError(f"{path}: duplicate claim id(s) {', '.join(duplicates)}")
    for i, claim in enumerate(claims):
        earlier = {c.id for c in claims[:i] if c.kind != "all_of"}
        if unknown := [c for c in claim.of if c not in earlier]:
            raise ConfigError(f"{path}: claim {claim.id}: 'of' names {', '.join(unknown)}, not an earlier claim "
                              "of this table (all_of combines delta, value, classes or best_of claims)")
    return claims
