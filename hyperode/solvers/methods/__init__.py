"""The named methods, spelled as torchdiffeq spells them where it has them."""

from __future__ import annotations

from ..tableau import ButcherTableau
from . import explicit, low_order_pairs
from .dopri5 import dopri5
from .tsit5 import tsit5

METHODS: dict[str, ButcherTableau] = {
    m.name: m for m in (*explicit.METHODS, *low_order_pairs.METHODS, dopri5, tsit5)
}
ALIASES: dict[str, str] = {"heun": "heun2"}


def get_method(method: str | ButcherTableau) -> ButcherTableau:
    """Resolve ``method`` (a name or a user's own ``ButcherTableau``) to a tableau."""
    if isinstance(method, ButcherTableau):
        return method
    if isinstance(method, str):
        key = ALIASES.get(method, method)
        if key in METHODS:
            return METHODS[key]
    known = ", ".join(sorted([*METHODS, *ALIASES]))
    raise ValueError(
        f"method={method!r} is not a known method; use one of: {known}, "
        f"hyperode.alpha(a) or your own hyperode.ButcherTableau"
    )
