"""SquareCB (inverse-gap weighting): its probabilities by hand and at the limits, the bad
parameters it refuses, both decision paths bit for bit (a choice and a ranking), logged
propensities that match the observed frequencies (a χ² test that rejects ε-greedy's numbers for
the same scores), and lower regret than ε-greedy at the same exploration share on a seeded
synthetic contextual bandit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from examples.feed import system as feed_module
from scipy.stats import chisquare

from closedloop import Bundle, F, Float, LinearModel, Ranking, SpecError, SquareCB, Str, System, checks
from closedloop.experience.experiences import BestAction, Thresholds
from closedloop.experience.exploration import EpsilonGreedy, Softmax, choose_batch
from closedloop.intelligence import KINDS, Intelligence, Scorer
from closedloop.runtime.runtime import Runtime

K = 5
ACTIONS = tuple(f"a{i}" for i in range(K))


def bits(xs) -> bytes:
    return np.asarray(xs, dtype=np.float64).tobytes()


# -- the probabilities -------------------------------------------------------------------------------


def test_probabilities_by_hand():
    p = SquareCB(10.0).probs([0.1, 0.5, 0.3], 1)
    assert p[0] == 1 / (3 + 10 * 0.4) and p[2] == 1 / (3 + 10 * (0.5 - 0.3))
    assert p[1] == 1.0 - (p[0] + p[2]) and p[1] > 1 / 3
    assert SquareCB(10.0).describe() == {"kind": "squarecb", "gamma": 10.0}
    assert SquareCB(3).gamma == 3.0 and repr(SquareCB(3)) == "SquareCB(gamma=3.0)"


def test_larger_gamma_is_greedier():
    scores = [0.2, 0.9, 0.5, 0.4]
    best = [SquareCB(g).probs(scores, 1)[1] for g in (0.1, 1.0, 10.0, 100.0, 1e4)]
    assert best == sorted(best) and best[0] < 0.3 and best[-1] > 0.999


def test_nan_and_infinite_scores():
    nan, inf = math.nan, math.inf
    cb = SquareCB(5.0)
    p = cb.probs([nan, 0.2, -inf, 0.1], 1)  # NaN read as −inf: no probability while a number remains
    assert p[0] == 0.0 and p[2] == 0.0 and p[3] == 1 / (4 + 5 * (0.2 - 0.1)) and p[1] == 1 - p[3]
    p = cb.probs([1.0, inf, nan, inf], 1)  # +inf best: only the +inf ones, the tied one 1/r
    assert p == [0.0, 1.0 - 0.25, 0.0, 0.25]
    p = cb.probs([nan, -inf, nan], 0)  # nothing above −inf: every one 1/r, the greedy the rest
    assert p == [1.0 - (1 / 3 + 1 / 3), 1 / 3, 1 / 3]
    p = cb.probs([0.3, 0.3, 0.1], 0)  # ties: the greedy index is the caller's, the tied one 1/r
    assert p[1] == 1 / 3 and p[0] == 1.0 - (1 / 3 + 1 / (3 + 5 * 0.19999999999999998))
    assert cb.probs([0.7], 0) == [1.0]


def test_the_batch_form_is_the_single_form_bitwise():
    rng = np.random.default_rng(3)
    S = rng.normal(0, 1, (400, 6)).round(1)
    S[rng.random(S.shape) < 0.05] = np.nan
    S[rng.random(S.shape) < 0.03] = np.inf
    S[rng.random(S.shape) < 0.03] = -np.inf
    greedy = BestAction(explore=SquareCB(1.0)).bind(ACTIONS + ("a5",), ACTIONS + ("a5",)).batch(S)[0]
    for gamma in (0.01, 1.0, 37.5, 1e6):
        cb = SquareCB(gamma)
        P = cb.probs_batch(S, greedy)
        assert (P >= 0).all() and np.allclose(P.sum(axis=1), 1.0)
        for i in range(S.shape[0]):
            assert bits(P[i]) == bits(cb.probs(S[i].tolist(), int(greedy[i])))


@pytest.mark.parametrize("gamma", [0, -1.0, math.nan, math.inf, "10", True, None])
def test_bad_gamma_is_refused_by_name(gamma):
    with pytest.raises(SpecError, match=r"The 'gamma' parameter of SquareCB must be a finite number > 0\. Got .* instead\."):
        SquareCB(gamma)


def test_experiences_that_take_it_and_one_that_does_not():
    assert BestAction(explore=SquareCB(2.0)).describe()["explore"] == {"kind": "squarecb", "gamma": 2.0}
    assert Ranking("score", 3, explore=SquareCB(2.0)).describe()["explore"] == {"kind": "squarecb", "gamma": 2.0}
    with pytest.raises(SpecError, match="'explore' policy of Thresholds must be an EpsilonGreedy"):
        Thresholds("s", {"a1": 0.5}, otherwise="a0", explore=SquareCB(2.0))  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="'explore' policy of Ranking must be Softmax, EpsilonGreedy or SquareCB"):
        Ranking("score", 3, explore="squarecb")  # type: ignore[arg-type]


# -- a choice system over K actions whose scores are context fields ------------------------------------


class Passthrough(Intelligence):
    """Test intelligence: action ``a<i>``'s score is the context field ``s<i>``."""

    kind = "passthrough"

    @property
    def outputs(self):
        return ACTIONS

    def inputs(self):
        return tuple(f"s{i}" for i in range(K))

    def bind(self, features):
        class _Scorer(Scorer):
            outputs = ACTIONS

            def batch(self, X, cols):
                return np.asarray(X, dtype=np.float64)

            def one(self, x, c):
                return list(x)

        return _Scorer()

    def to_dict(self, files):
        return {"kind": "passthrough"}

    @classmethod
    def from_dict(cls, spec, files, kinds):
        return cls()


def choice_system(explore) -> System:
    return System(
        "offers", context=[Str("user"), *(Float(f"s{i}", default=0.0) for i in range(K))], unit="user",
        features={f"s{i}": F.col(f"s{i}") for i in range(K)}, actions=list(ACTIONS), experience=BestAction(explore=explore),
    )


def test_a_choice_decides_alike_one_at_a_time_and_in_a_batch():
    system = choice_system(SquareCB(4.0))
    checks.check_runtime(system, Bundle.build(system, Passthrough()), n=400, kinds={**KINDS, "passthrough": Passthrough})


def _ids(n: int, seed: int) -> list[str]:
    """``n`` decision ids of 32 hex digits, fixed by ``seed`` (the draws, hence the test, are deterministic)."""
    return [f"{x:032x}" for x in np.random.default_rng(seed).integers(0, 2**62, (n, 2)) @ np.array([1 << 62, 1], dtype=object)]


#: three fixed score vectors (the contexts of the χ² tests)
GROUPS = np.array([[0.9, 0.7, 0.5, 0.3, 0.1], [0.2, 0.25, 0.8, 0.1, 0.5], [0.5, 0.5, 0.4, 0.6, 0.0]])


def _choice_counts(n: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Decide ``n`` requests of each score group through the runtime: the observed counts and the
    expected ones (n × the logged propensity of that action in that group), and the exploration share."""
    system = choice_system(SquareCB(8.0))
    rt = Runtime(system, Bundle.build(system, Passthrough()))
    g = np.repeat(np.arange(len(GROUPS)), n)
    cols = {"user": [f"u{i}" for i in range(g.size)], **{f"s{j}": GROUPS[g, j].tolist() for j in range(K)}}
    batch = rt.decide_batch(cols, decision_ids=_ids(g.size, 11), timestamps_ns=np.full(g.size, 10**18))
    a, p = batch.action_codes, batch.propensities
    observed = np.zeros((len(GROUPS), K))
    expected = np.zeros((len(GROUPS), K))
    np.add.at(observed, (g, a), 1)
    for gi in range(len(GROUPS)):
        for ai in range(K):
            logged = np.unique(p[(g == gi) & (a == ai)])
            assert logged.size == 1  # every action seen, always with the same propensity for the same scores
            expected[gi, ai] = n * logged[0]
        assert expected[gi].sum() == pytest.approx(n, rel=1e-12)  # the logged numbers are a distribution
    greedy = GROUPS.argmax(axis=1)
    share = 1.0 - observed[np.arange(len(GROUPS)), greedy].sum() / observed.sum()
    return observed, expected, share


def test_logged_propensities_match_the_observed_frequencies():
    n = 20_000
    observed, expected, share = _choice_counts(n)
    assert chisquare(observed.ravel(), expected.ravel(), ddof=0).pvalue > 1e-3
    # ε-greedy's numbers for the same scores, at the same exploration share, are rejected
    eps = share * K / (K - 1)
    wrong = np.vstack([EpsilonGreedy(eps).probs(int(np.argmax(s)), K, float(s.max())) for s in GROUPS]) * n
    assert chisquare(observed.ravel(), wrong.ravel(), ddof=0).pvalue < 1e-3


def test_a_rankings_slot_propensities_match_the_observed_slates():
    """Slot 1 and slot 2 jointly: the expected count of each ordered pair is n × the product of the
    two slot propensities the runtime logged for it."""
    f = feed_module
    system = System("feed", context=f.request, candidates=f.candidates, candidate_id="item_id", unit="user_id",
                    features=f.features, experience=Ranking("score", k=2, explore=SquareCB(10.0)))
    rt = Runtime(system, Bundle.build(system, LinearModel({"ctr": 1.0}, 0.0, output="score")))
    ctrs = [0.9, 0.7, 0.5, 0.3, 0.1]
    n = 20_000
    requests = {"user_id": [f"u{i}" for i in range(n)], "country": ["de"] * n, "hour": [9] * n}
    cands = {"item_id": [f"i{j}" for j in range(5)] * n, "category": ["news"] * (5 * n), "item_ctr": ctrs * n,
             "age_hours": [5.0] * (5 * n), "request": np.repeat(np.arange(n), 5)}
    rb = rt.decide_batch(requests, candidates=cands, decision_ids=_ids(n, 5), timestamps_ns=np.full(n, 10**18))
    shown = np.asarray(rb.ranked).reshape(n, 2)
    q = np.asarray(rb.slot_propensities).reshape(n, 2)
    pair = shown[:, 0] * 5 + shown[:, 1]
    observed = np.bincount(pair, minlength=25)
    expected = np.zeros(25)
    for c in np.unique(pair):
        logged = np.unique(q[pair == c].prod(axis=1))
        assert logged.size == 1
        expected[c] = n * logged[0]
    valid = np.array([i // 5 != i % 5 for i in range(25)])
    assert (observed[valid] > 0).all() and (observed[~valid] == 0).all()
    assert expected.sum() == pytest.approx(n, rel=1e-12)
    assert chisquare(observed[valid], expected[valid], ddof=0).pvalue > 1e-3
    wrong = np.zeros(25)  # ε-greedy per slot at a share that makes slot 1 explore as often
    eps = (1.0 - observed[:5].sum() / n) * 5 / 4
    for c in np.flatnonzero(valid):
        first, second = divmod(c, 5)
        p1 = (1 - eps) * (first == 0) + eps / 5
        p2 = (1 - eps) * (second == (1 if first == 0 else 0)) + eps / 4
        wrong[c] = n * p1 * p2
    assert chisquare(observed[valid], wrong[valid], ddof=0).pvalue < 1e-3


# -- regret against ε-greedy at the same exploration share ----------------------------------------------

ARMS = 10
DIM = 5


def _bandit(explore, seed: int, rounds: int = 40, batch: int = 250) -> tuple[float, float]:
    """A seeded contextual bandit: 10 actions, contexts on the simplex, the mean reward of action a
    linear in the context (0.1 + 0.8 · x·θ_a, in [0.1, 0.9]), Bernoulli rewards. Each round the
    experience decides a batch with the current per-action ridge estimates (its own greedy choice,
    probabilities and draw), observes the rewards and refits. Returns (cumulative regret against
    the best action's mean reward, the share of decisions that were not the greedy choice)."""
    rng = np.random.default_rng(seed)
    draws = np.random.default_rng(seed + 1000)
    theta = rng.uniform(0, 1, (ARMS, DIM))
    actions = tuple(f"a{i}" for i in range(ARMS))
    ch = BestAction(explore=explore).bind(actions, actions)
    A = np.repeat(np.eye(DIM)[None], ARMS, axis=0)
    b = np.zeros((ARMS, DIM))
    regret, explored = 0.0, 0
    rows = np.arange(batch)
    for _ in range(rounds):
        X = rng.dirichlet(np.ones(DIM), batch)
        mu = 0.1 + 0.8 * X @ theta.T
        S = X @ np.linalg.solve(A, b[:, :, None])[:, :, 0].T
        greedy, _ = ch.batch(S)
        a = choose_batch(ch.probs_batch(S, greedy), draws.random(batch))
        r = (rng.random(batch) < mu[rows, a]).astype(np.float64)
        regret += float((mu.max(axis=1) - mu[rows, a]).sum())
        explored += int((a != greedy).sum())
        for k in range(ARMS):
            m = a == k
            A[k] += X[m].T @ X[m]
            b[k] += X[m].T @ r[m]
    return regret, explored / (rounds * batch)


def test_regret_is_below_epsilon_greedys_at_the_same_exploration_share():
    square, eps, eps_plain = [], [], []
    for seed in (0, 1, 2):
        reg, share = _bandit(SquareCB(1000.0), seed)
        # ε-greedy explores off the greedy action with probability ε·(K−1)/K: the same share
        reg_e, share_e = _bandit(EpsilonGreedy(share * ARMS / (ARMS - 1)), seed)
        assert share_e == pytest.approx(share, abs=0.02)  # the same budget, measured
        square.append(reg)
        eps.append(reg_e)
        assert reg < reg_e, (seed, reg, reg_e)
        eps_plain.append(_bandit(EpsilonGreedy(share), seed)[0])  # ε = the share itself (a little less exploration)
    assert sum(square) < 0.8 * sum(eps), (square, eps)
    assert sum(square) < 0.8 * sum(eps_plain), (square, eps_plain)


def test_softmax_and_greedy_are_not_squarecb():
    """The experiences keep their other policies (a guard against a dispatch that swallows them)."""
    assert BestAction(explore=Softmax(0.5)).bind(ACTIONS, ACTIONS).probs([0.0] * K, 0) == [0.2] * K
    assert not BestAction().bind(ACTIONS, ACTIONS).explores
