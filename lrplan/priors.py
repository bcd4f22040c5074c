"""Priors as data: read ``models/<law>.toml`` and merge a user's overrides by name.

A prior file has a ``law`` key and a ``[params.NAME]`` table per parameter with ``dist``, the
distribution's arguments and ``why`` (a one-line justification with its source). A user's
``--priors FILE`` has the same shape and replaces whole entries by name.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from lrplan.errors import PriorError

__all__ = ["Prior", "PriorSet", "DISTRIBUTIONS", "load_priors", "priors_from_toml"]

#: distribution name -> its argument names (all required)
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "normal": ("loc", "scale"),
    "lognormal": ("loc", "scale"),
    "halfnormal": ("scale",),
    "truncnormal": ("loc", "scale", "low"),
    "gamma": ("concentration", "rate"),
    "exponential": ("rate",),
    "uniform": ("low", "high"),
    "bernoulli": ("probs",),
}


@dataclass(frozen=True)
class Prior:
    """One parameter's prior: distribution name, arguments and justification."""

    dist: str
    args: dict[str, float]
    why: str = ""


@dataclass(frozen=True)
class PriorSet:
    """The priors of one law, and the TOML text they came from (stored in fit files)."""

    law: str
    params: dict[str, Prior] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Prior:
        try:
            return self.params[name]
        except KeyError:
            raise PriorError(
                f"the {self.law} priors have no entry for parameter {name!r}; "
                f"known: {', '.join(sorted(self.params))}"
            ) from None

    def to_toml(self) -> str:
        """Render as TOML (round-trips through `priors_from_toml`)."""
        lines = [f'law = "{self.law}"', ""]
        for name, p in self.params.items():
            lines.append(f"[params.{name}]")
            lines.append(f'dist = "{p.dist}"')
            lines += [f"{k} = {v!r}" for k, v in p.args.items()]
            lines.append(f"why = {json.dumps(p.why)}")
            lines.append("")
        return "\n".join(lines)


def _parse(doc: dict, source: str) -> tuple[str | None, dict[str, Prior]]:
    params = doc.get("params", {})
    if not isinstance(params, dict):
        raise PriorError(f"{source}: 'params' must be a table of [params.NAME] entries")
    out = {}
    for name, entry in params.items():
        where = f"{source}: [params.{name}]"
        if not isinstance(entry, dict) or "dist" not in entry:
            raise PriorError(f"{where} needs a 'dist' key (one of {', '.join(DISTRIBUTIONS)})")
        dist = entry["dist"]
        if dist not in DISTRIBUTIONS:
            raise PriorError(f"{where}: unknown dist {dist!r}; use one of {', '.join(DISTRIBUTIONS)}")
        needed = DISTRIBUTIONS[dist]
        missing = [a for a in needed if a not in entry]
        extra = [k for k in entry if k not in (*needed, "dist", "why")]
        if missing or extra:
            raise PriorError(
                f"{where}: {dist} takes {', '.join(needed)}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(extra)}" if extra else "")
            )
        args = {}
        for a in needed:
            v = entry[a]
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise PriorError(f"{where}: {a} must be a number, got {v!r}")
            args[a] = float(v)
        for a in ("scale", "rate", "concentration"):
            if a in args and not args[a] > 0:
                raise PriorError(f"{where}: {a} must be > 0, got {args[a]}")
        if "probs" in args and not 0 <= args["probs"] <= 1:
            raise PriorError(f"{where}: probs must lie in [0, 1], got {args['probs']}")
        out[name] = Prior(dist, args, str(entry.get("why", "")))
    return doc.get("law"), out


def priors_from_toml(text: str, *, source: str = "<priors>") -> PriorSet:
    """Parse a complete prior set from TOML text."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PriorError(f"{source}: not valid TOML ({e})") from None
    law, params = _parse(doc, source)
    if not law:
        raise PriorError(f"{source}: missing top-level 'law = \"...\"'")
    return PriorSet(law, params)


def load_priors(law: str, overrides: str | Path | None = None) -> PriorSet:
    """Load the default priors of ``law`` and replace entries named in ``overrides``.

    Raises
    ------
    PriorError
        If the law has no prior file, the override file is malformed, targets another law, or
        names a parameter the law does not have.
    """
    try:
        text = resources.files("lrplan.models").joinpath(f"{law}.toml").read_text()
    except FileNotFoundError:
        raise PriorError(f"no prior file for law {law!r}") from None
    base = priors_from_toml(text, source=f"models/{law}.toml")
    if overrides is None:
        return base
    path = Path(overrides)
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as e:
        raise PriorError(f"{path}: cannot read priors file ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise PriorError(f"{path}: not valid TOML ({e})") from None
    other_law, params = _parse(doc, str(path))
    if other_law and other_law != law:
        raise PriorError(f"{path}: priors are for law {other_law!r} but the fit uses {law!r}")
    unknown = sorted(set(params) - set(base.params))
    if unknown:
        raise PriorError(
            f"{path}: unknown parameter(s) {', '.join(unknown)} for law {law!r}; "
            f"known: {', '.join(base.params)}"
        )
    return PriorSet(law, {**base.params, **params})


def priors_by_law(laws: tuple[str, ...], overrides: str | Path | None = None) -> dict[str, PriorSet]:
    """Priors of several laws (a fit with ``law="auto"``), ``overrides`` applied where it fits.

    A file that names its law overrides that law only; one that names none overrides every law
    that has all the parameters it names. A file that fits no law raises PriorError.
    """
    if overrides is None:
        return {law: load_priors(law) for law in laws}
    out, errors = {}, []
    for law in laws:
        try:
            out[law] = load_priors(law, overrides)
        except PriorError as e:
            errors.append(e)
            out[law] = load_priors(law)
    if len(errors) == len(laws):
        raise errors[0]
    return out
