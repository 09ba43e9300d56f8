"""train(model="affinity") on a ranking system's reward dataset: the feed world's logged days teach it
who likes what — its offsets follow the users' true interests, and it ranks the next day better
than the logistic model trained on the same rows, by the world's truth."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop import Bundle, Runtime, SpecError
from closedloop.intelligence import AffinityModel
from closedloop.training.train import train
from support.feed_logged import logged_feed_days

DAY = 86_400 * 10**9
SIZE = {"world": {"sessions_per_day": 4000}, "users": {"count": 800, "new_per_day": 20}, "items": {"per_day": 600}}


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """Four days of a small feed world under the heuristic exploring with SquareCB, and their reward dataset."""
    return logged_feed_days(tmp_path_factory.mktemp("affinity"), size=SIZE, days=4)


def test_the_affinity_model_learns_the_users_interests_and_ranks_the_next_day_better(logged):
    w, system, path = logged
    aff = train(system, path, model="affinity", params={"keys": ["user_id", "category"]})
    plain = train(system, path, model="logistic")
    model = aff.bundle.intelligence
    assert isinstance(model, AffinityModel) and model.keys == ("user_id", "category")
    # the offsets follow the truth: the pairs it learned most about lean the way the users' interests do
    cats = {c: i for i, c in enumerate(w.config.categories)}
    pairs = [(int(u[1:]), cats[c], o) for (u, c), o in model.table.items()]
    learned = np.array([o for _, _, o in pairs])
    truth = np.array([w.interest[u, c] for u, c, _ in pairs])
    strong = np.abs(learned) > 0.2
    assert strong.sum() > 500 and np.corrcoef(learned[strong], truth[strong])[0, 1] > 0.08
    # held out by unit (the system's split), a user is one it knows nothing of: it scores as its logistic part
    assert model.weights == plain.bundle.intelligence.weights
    assert aff.bundle.metrics["heldout"] == plain.bundle.metrics["heldout"]
    # the next day, decided greedily by each: the affinity model's slates are worth more
    greedy = w.system(k=5, explore=None)
    s = w.day(4)
    v_aff = w.policy_value(s, Runtime(greedy, Bundle.build(greedy, model)), seed=1)
    v_plain = w.policy_value(s, Runtime(greedy, Bundle.build(greedy, plain.bundle.intelligence)), seed=1)
    assert v_aff > v_plain * 1.03, (v_aff, v_plain)


def test_the_affinity_model_needs_its_keys(logged):
    _, system, path = logged
    with pytest.raises(SpecError, match="'keys' param of the 'affinity' model"):
        train(system, path, model="affinity")
