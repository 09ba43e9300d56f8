"""Experience: how scores become what users see.

:class:`Action` declares what an action *presents*: its mode — ``automate`` (the system acts,
e.g. blocks), ``prompt`` (the user is asked and chooses, e.g. a warning with "go back" /
"continue"), ``annotate`` (an item is marked, nothing is done), ``organize`` (items are ordered;
the mode of :class:`Ranking`) or ``none`` (nothing is shown) — and so what its outcomes will mean:
the outcome kinds a presentation can yield (a report that the automated action was wrong, the
choice the user made, whether the annotation was acted on, a click on a ranked slot).

:class:`Thresholds` is the graded experience of a binary system (allow / warn / block): levels
ordered from the most forceful action down, each with the lowest score that triggers it, and an
``otherwise`` action. The thresholds a bundle carries (tuned to its model) override the system's
declared ones; both are validated against the system's actions.

An experience binds to the intelligence's outputs as a :class:`Chooser` with a single-decision
form (:meth:`Chooser.one`) and a batch form (:meth:`Chooser.batch`) that make the same comparisons,
so an action never differs between the two paths. Reasons (``why``) are precomputed strings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np

from closedloop.errors import SpecError
from closedloop.experience.exploration import EpsilonGreedy, Softmax, SquareCB

__all__ = ["EXPLORED_SLOTS_WHY", "EXPLORED_WHY", "MODES", "Action", "BestAction", "Chooser", "Presentation", "Ranking", "Thresholds"]

MODES = ("automate", "prompt", "annotate", "organize", "none")

_DEFAULT_OUTCOMES = {
    "automate": ("reported_mistake",),
    "annotate": ("acted_on_annotation", "ignored_annotation"),
    "organize": ("clicked", "skipped"),
    "none": (),
}


class Presentation(msgspec.Struct, frozen=True, gc=False):
    """What a decision shows the user, and the outcome kinds that presentation can yield."""

    mode: str
    choices: tuple[str, ...] = ()
    outcomes: tuple[str, ...] = ()


class Action:
    """An action and how it is presented.

    Parameters
    ----------
    name:
        The action's name.
    mode:
        One of ``automate``, ``prompt``, ``annotate``, ``organize``, ``none``.
    choices:
        For ``prompt``: what the user may choose (at least two).
    outcomes:
        The outcome kinds this presentation yields; by default ``reported_mistake`` for
        automate, ``chose:<choice>`` for each prompt choice, ``acted_on_annotation`` /
        ``ignored_annotation`` for annotate, ``clicked`` / ``skipped`` for organize, none for none.
        In a :class:`~closedloop.System` that declares ``mistake_outcomes``, the default of a
        presentation that shows something (every mode but ``none``) names them: an automated
        action's default is the system's mistake kinds (instead of the generic
        ``reported_mistake``), the others' defaults are followed by them. Outcomes given here
        are kept as given.
    """

    def __init__(
        self, name: str, mode: str = "automate", *, choices: Sequence[str] = (), outcomes: Sequence[str] | None = None
    ) -> None:
        if not isinstance(name, str) or not name:
            raise SpecError(f"An action's name must be a non-empty string. Got {name!r} instead.")
        if mode not in MODES:
            raise SpecError(f"The 'mode' of action '{name}' must be one of {list(MODES)}. Got {mode!r} instead.")
        choices = tuple(choices)
        if mode == "prompt" and (len(choices) < 2 or not all(isinstance(c, str) and c for c in choices)):
            raise SpecError(
                f"Action '{name}' prompts the user and needs at least two choices. Got {list(choices)!r} instead."
            )
        if mode != "prompt" and choices:
            raise SpecError(f"Only prompt actions have choices; action '{name}' is {mode!r}. Got {list(choices)!r}.")
        given = outcomes is not None
        if outcomes is None:
            outcomes = tuple(f"chose:{c}" for c in choices) if mode == "prompt" else _DEFAULT_OUTCOMES[mode]
        outcomes = tuple(outcomes)
        if not all(isinstance(o, str) and o for o in outcomes):
            raise SpecError(f"The outcomes of action '{name}' must be non-empty strings. Got {list(outcomes)!r}.")
        self.name = name
        self.mode = mode
        #: Whether ``outcomes`` was given (else: the mode's default, which a system's mistake kinds complete).
        self.outcomes_given = given
        self.presentation = Presentation(mode, choices, outcomes)

    def with_mistakes(self, kinds: Sequence[str]) -> Action:
        """This action as a system declaring the mistake outcome kinds ``kinds`` presents it: when
        its outcomes are its mode's default and it shows something (not ``none``), an automated
        action yields ``kinds`` (the generic ``reported_mistake`` is dropped), another mode its own
        default followed by ``kinds``. Otherwise (outcomes given, mode ``none``, no kinds) itself.
        A new Action: the one declared is not changed."""
        kinds = tuple(kinds)
        if self.outcomes_given or not kinds or self.mode == "none":
            return self
        p = self.presentation
        own = () if self.mode == "automate" else p.outcomes
        outcomes = own + tuple(k for k in kinds if k not in own)
        if outcomes == p.outcomes:
            return self
        completed = Action(self.name, self.mode, choices=p.choices, outcomes=outcomes)
        completed.outcomes_given = False  # still the default, completed
        return completed

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **msgspec.to_builtins(self.presentation)}

    def __repr__(self) -> str:
        return f"Action({self.name!r}, mode={self.mode!r})"



def _fmt(x: float) -> str:
    return repr(x)


class Thresholds:
    """Score → action by descending thresholds.

    Parameters
    ----------
    score:
        The intelligence output the thresholds read (e.g. ``"phish"``).
    levels:
        Action → threshold, most forceful first (``{"block": 0.9, "warn": 0.6}``); a score ≥ a
        level's threshold takes that level's action. Thresholds must strictly decrease.
    otherwise:
        The action below every threshold (and for a NaN score).
    explore:
        An :class:`~closedloop.experience.exploration.EpsilonGreedy` policy: inside its score band, with
        probability epsilon a uniform choice among the actions (drawn from the decision id).
    """

    def __init__(
        self,
        score: str,
        levels: Mapping[str, float] | Sequence[tuple[str, float]],
        otherwise: str,
        *,
        explore: EpsilonGreedy | None = None,
    ) -> None:
        if not isinstance(score, str) or not score:
            raise SpecError(f"The 'score' of Thresholds must be an output name. Got {score!r} instead.")
        if explore is not None and not isinstance(explore, EpsilonGreedy):
            raise SpecError(
                "The 'explore' policy of Thresholds must be an EpsilonGreedy (within a score band). "
                f"Got {explore!r} instead."
            )
        self.explore = explore
        items = list(levels.items()) if isinstance(levels, Mapping) else list(levels)
        if not items:
            raise SpecError("The 'levels' of Thresholds must name at least one action. Got none instead.")
        clean: list[tuple[str, float]] = []
        for item in items:
            if not (isinstance(item, tuple | list) and len(item) == 2):
                raise SpecError(f"Each threshold level must be (action, threshold). Got {item!r} instead.")
            action, t = item
            if not isinstance(action, str) or not action:
                raise SpecError(f"Threshold actions must be non-empty strings. Got {action!r} instead.")
            if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
                raise SpecError(f"The threshold for action '{action}' must be a finite number. Got {t!r} instead.")
            clean.append((action, float(t)))
        names = [a for a, _ in clean]
        if len(set(names)) != len(names):
            raise SpecError(f"Each action may have one threshold. Got {names} instead.")
        if otherwise in names:
            raise SpecError(f"The 'otherwise' action must not also have a threshold. Got {otherwise!r} in both.")
        for (a1, t1), (a2, t2) in zip(clean, clean[1:], strict=False):
            if not t1 > t2:
                raise SpecError(
                    f"Thresholds must strictly decrease from the most forceful action. Got "
                    f"'{a1}' at {t1!r} then '{a2}' at {t2!r} instead."
                )
        if not isinstance(otherwise, str) or not otherwise:
            raise SpecError(f"The 'otherwise' action must be a non-empty string. Got {otherwise!r} instead.")
        self.score = score
        self.levels: tuple[tuple[str, float], ...] = tuple(clean)
        self.otherwise = otherwise

    @property
    def actions(self) -> tuple[str, ...]:
        return (*(a for a, _ in self.levels), self.otherwise)

    def as_dict(self) -> dict[str, float]:
        return dict(self.levels)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "thresholds", "score": self.score, "levels": [list(x) for x in self.levels],
            "otherwise": self.otherwise, "explore": self.explore.describe() if self.explore else None,
        }

    def with_levels(self, levels: Mapping[str, float]) -> Thresholds:
        """The same experience with other threshold values (a bundle's tuned thresholds)."""
        if not isinstance(levels, Mapping):
            raise SpecError(f"Bundle thresholds must be a mapping of action to threshold. Got {levels!r} instead.")
        mine = [a for a, _ in self.levels]
        if sorted(levels) != sorted(mine):
            raise SpecError(
                f"Bundle thresholds must set exactly the actions {mine}. Got {sorted(levels)} instead."
            )
        return Thresholds(self.score, [(a, levels[a]) for a in mine], self.otherwise, explore=self.explore)

    def validate(self, actions: Sequence[str], outputs: Sequence[str] | None = None) -> None:
        for a in self.actions:
            if a not in actions:
                raise SpecError(f"Threshold actions must be declared actions {list(actions)}. Got {a!r} instead.")
        if self.explore is not None:
            self.explore.mask(actions)
        if outputs is not None and self.score not in outputs:
            raise SpecError(
                f"The thresholds read score {self.score!r}, which the intelligence does not produce "
                f"(it produces {list(outputs)})."
            )

    def bind(self, outputs: Sequence[str], actions: Sequence[str] | None = None) -> Chooser:
        """The executable form, reading ``outputs`` and coding actions as indices of ``actions``
        (the system's actions; by default this experience's own)."""
        actions = tuple(actions) if actions is not None else self.actions
        self.validate(actions, outputs)
        return ThresholdChooser(self, list(outputs).index(self.score), actions)

    def __repr__(self) -> str:
        return f"Thresholds({self.score!r}, {dict(self.levels)!r}, otherwise={self.otherwise!r})"


#: How a decision's ``why`` says it explored (the goal metric ``exploration_share`` reads it): a
#: choice's begins with :data:`EXPLORED_WHY`; a ranking's ends with :data:`EXPLORED_SLOTS_WHY`
#: naming the slots (0-based) whose item is not the best remaining one.
EXPLORED_WHY = "explored ("
EXPLORED_SLOTS_WHY = "; slots {} differ from the greedy order"


class Chooser:
    """The executable experience: scores → greedy action and reason (as indices into
    ``actions`` and ``reasons``) and, when the experience explores, each action's probability.

    ``one``/``probs`` (one decision) and ``batch``/``probs_batch`` make the same comparisons and
    the same arithmetic, so both decision paths choose alike.
    """

    actions: tuple[str, ...]
    reasons: tuple[str, ...]
    explores: bool = False
    #: reasons[explored + a] explains an exploratory choice of action a
    explored: int = 0

    def one(self, scores: Sequence[float]) -> tuple[int, int]:
        raise NotImplementedError  # pragma: no cover

    def batch(self, S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError  # pragma: no cover

    def probs(self, scores: Sequence[float], greedy: int) -> list[float]:
        raise NotImplementedError  # pragma: no cover

    def probs_batch(self, S: np.ndarray, greedy: np.ndarray) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover

    def _explore_reasons(self, policy: Any, what: str) -> tuple[str, ...]:
        if policy is None:
            return ()
        if isinstance(policy, EpsilonGreedy):
            band = f"ε={policy.epsilon!r}, {what} in [{_fmt(policy.low)}, {_fmt(policy.high)}]"
        elif isinstance(policy, SquareCB):
            band = f"inverse-gap weighting, gamma {policy.gamma!r}"
        else:
            band = f"softmax, temperature {policy.temperature!r}"
        return tuple(f"{EXPLORED_WHY}{band}) → {a}" for a in self.actions)


def _not_exploring(spec: Thresholds | BestAction) -> SpecError:
    return SpecError(f"The experience {spec!r} does not explore: it has no action probabilities (see 'explores').")


class ThresholdChooser(Chooser):
    def __init__(self, spec: Thresholds, column: int, actions: tuple[str, ...]) -> None:
        self.spec = spec
        self.actions = actions
        index = {a: i for i, a in enumerate(actions)}
        self._col = column
        s = spec.score
        self._levels = tuple((t, index[a], f"{s} ≥ {_fmt(t)} → {a}") for a, t in spec.levels)
        self._otherwise = index[spec.otherwise]
        lowest = spec.levels[-1][1]
        k = len(self._levels)
        self._below, self._nan = k, k + 1
        base = (*(w for _, _, w in self._levels), f"{s} < {_fmt(lowest)} → {spec.otherwise}", f"{s} is NaN → {spec.otherwise}")
        self.explored = len(base)
        self.reasons = base + self._explore_reasons(spec.explore, s)
        self.explores = spec.explore is not None
        self._policy = spec.explore
        self._mask = spec.explore.mask(actions) if spec.explore is not None else None

    def one(self, scores: Sequence[float]) -> tuple[int, int]:
        v = scores[self._col]
        for j, (t, action, _) in enumerate(self._levels):
            if v >= t:
                return action, j
        if v != v:
            return self._otherwise, self._nan
        return self._otherwise, self._below

    def batch(self, S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = S[:, self._col]
        n = v.shape[0]
        action = np.full(n, self._otherwise, dtype=np.int64)
        why = np.where(np.isnan(v), self._nan, self._below).astype(np.int64)
        for j in range(len(self._levels) - 1, -1, -1):
            hit = v >= self._levels[j][0]
            action[hit] = self._levels[j][1]
            why[hit] = j
        return action, why

    def probs(self, scores: Sequence[float], greedy: int) -> list[float]:
        policy = self._policy
        if policy is None:
            raise _not_exploring(self.spec)
        return policy.probs(greedy, len(self.actions), scores[self._col], self._mask)

    def probs_batch(self, S: np.ndarray, greedy: np.ndarray) -> np.ndarray:
        policy = self._policy
        if policy is None:
            raise _not_exploring(self.spec)
        return policy.probs_batch(greedy, len(self.actions), S[:, self._col], self._mask)


class BestChooser(Chooser):
    """argmax over one score per action (NaN counts as -inf; ties go to the first action)."""

    def __init__(self, spec: BestAction, actions: tuple[str, ...]) -> None:
        self.spec = spec
        self.actions = actions
        self.explores = spec.explore is not None
        self._policy = spec.explore
        self._mask = spec.explore.mask(actions) if isinstance(spec.explore, EpsilonGreedy) else None
        base = tuple(f"best score → {a}" for a in actions)
        self.explored = len(base)
        self.reasons = base + self._explore_reasons(spec.explore, "best score")

    def one(self, scores: Sequence[float]) -> tuple[int, int]:
        best = 0
        top = -math.inf
        for i, v in enumerate(scores):
            if v > top:
                best, top = i, v
        return best, best

    def batch(self, S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = np.argmax(np.where(np.isnan(S), -np.inf, S), axis=1).astype(np.int64)
        return g, g.copy()

    def probs(self, scores: Sequence[float], greedy: int) -> list[float]:
        policy = self._policy
        if isinstance(policy, Softmax):
            return policy.probs(scores)
        if isinstance(policy, SquareCB):
            return policy.probs(scores, greedy)
        if policy is None:
            raise _not_exploring(self.spec)
        return policy.probs(greedy, len(self.actions), scores[greedy], self._mask)

    def probs_batch(self, S: np.ndarray, greedy: np.ndarray) -> np.ndarray:
        policy = self._policy
        if isinstance(policy, Softmax):
            return policy.probs_batch(S)
        if isinstance(policy, SquareCB):
            return policy.probs_batch(S, greedy)
        if policy is None:
            raise _not_exploring(self.spec)
        top = S[np.arange(S.shape[0]), greedy]
        return policy.probs_batch(greedy, len(self.actions), top, self._mask)


class BestAction:
    """One score per action (the intelligence's outputs are named after the actions): the
    highest-scoring action, or a draw from ``explore`` — :class:`~closedloop.experience.exploration.Softmax`
    over the action scores, :class:`~closedloop.experience.exploration.EpsilonGreedy` (band on the best
    score) or :class:`~closedloop.experience.exploration.SquareCB` (inverse-gap weighting of the scores
    as predicted rewards)."""

    def __init__(self, *, explore: Softmax | EpsilonGreedy | SquareCB | None = None) -> None:
        if explore is not None and not isinstance(explore, Softmax | EpsilonGreedy | SquareCB):
            raise SpecError(
                f"The 'explore' policy of BestAction must be Softmax, EpsilonGreedy or SquareCB. Got {explore!r} instead."
            )
        self.explore = explore
        self.otherwise: str | None = None

    @property
    def actions(self) -> tuple[str, ...]:
        return ()

    def describe(self) -> dict[str, Any]:
        return {"kind": "best_action", "explore": self.explore.describe() if self.explore else None}

    def bind(self, outputs: Sequence[str], actions: Sequence[str]) -> Chooser:
        self.validate(actions, outputs)
        return BestChooser(self, tuple(actions))

    def validate(self, actions: Sequence[str], outputs: Sequence[str] | None = None) -> None:
        if isinstance(self.explore, EpsilonGreedy):
            self.explore.mask(actions)
        if outputs is not None and list(outputs) != list(actions):
            raise SpecError(
                f"BestAction needs one intelligence output per action, named and ordered as the actions "
                f"{list(actions)}. Got outputs {list(outputs)} instead."
            )

    def __repr__(self) -> str:
        return f"BestAction(explore={self.explore!r})"


class Ranking:
    """The experience of a multi-action system: order the candidates by ``score`` and show the
    top ``k`` (the ``organize`` mode), or draw each slot from ``explore`` (Plackett–Luce with
    :class:`~closedloop.experience.exploration.Softmax`, :class:`~closedloop.experience.exploration.EpsilonGreedy`
    or :class:`~closedloop.experience.exploration.SquareCB`, each slot over the remaining candidates),
    recording each slot's exact propensity."""

    def __init__(self, score: str, k: int, *, explore: Softmax | EpsilonGreedy | SquareCB | None = None) -> None:
        if not isinstance(score, str) or not score:
            raise SpecError(f"The 'score' of Ranking must be an output name. Got {score!r} instead.")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise SpecError(f"The 'k' of Ranking must be an integer ≥ 1. Got {k!r} instead.")
        if explore is not None and not isinstance(explore, Softmax | EpsilonGreedy | SquareCB):
            raise SpecError(
                f"The 'explore' policy of Ranking must be Softmax, EpsilonGreedy or SquareCB. Got {explore!r} instead."
            )
        if isinstance(explore, EpsilonGreedy) and explore.to is not None:
            raise SpecError("A Ranking explores over candidates, not actions: its EpsilonGreedy takes no 'to'.")
        self.score = score
        self.k = k
        self.explore = explore
        self.otherwise: str | None = None

    @property
    def actions(self) -> tuple[str, ...]:
        return ()

    def describe(self) -> dict[str, Any]:
        return {"kind": "ranking", "score": self.score, "k": self.k,
                "explore": self.explore.describe() if self.explore else None}

    def validate(self, actions: Sequence[str], outputs: Sequence[str] | None = None) -> None:
        if outputs is not None and self.score not in outputs:
            raise SpecError(
                f"The ranking reads score {self.score!r}, which the intelligence does not produce "
                f"(it produces {list(outputs)})."
            )

    def __repr__(self) -> str:
        return f"Ranking({self.score!r}, k={self.k}, explore={self.explore!r})"
