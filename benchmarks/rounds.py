"""The order in which a benchmark takes its runs: in rounds.

Each round runs every contender once, starting one further on each round. This
machine's speed drifts by tens of per cent over minutes (TCG on a shared host),
so all runs of one contender in a row would compare its good minutes with
another's bad ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence


def turns(names: Sequence[str], rounds: int) -> Iterator[str]:
    """``names`` once per round for ``rounds`` rounds, each round starting one further on."""
    for turn in range(rounds):
        start = turn % len(names)
        yield from [*names[start:], *names[:start]]
