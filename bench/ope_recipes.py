"""The inputs of the obp parity fixtures, built the same way under obp's environment and the project's.

Pure numpy and the csv module (no pandas, no closedloop): ``bench/obp_fixtures.py`` runs this under obp 0.5.7's own venv
(numpy < 2) and ``tests/evaluation/test_ope_obp.py`` / ``bench/ope.py`` run it under the project's numpy 2; both get the
same arrays (bit-identical where they come from csv parsing, integer arithmetic and PCG64 streams; within a few ulps where
they come from ``np.exp``).

- ``load_campaign(campaign)``: the Open Bandit Dataset sample (``../shared/data/obd/random/<campaign>/<campaign>.csv``) as
  ``obp.dataset.OpenBanditDataset(behavior_policy="random", campaign=…).obtain_batch_bandit_feedback()`` gives it:
  rows ordered by timestamp as obp orders them: pandas' ``sort_values("timestamp")`` is numpy's (unstable) quicksort on the
  object array of timestamp strings, and so is the sort here: the files are in timestamp order already, but quicksort
  swaps one tie in ``men`` (file rows 7341/7342; numpy 1.26 and 2.4 swap it alike); ``action`` = item_id,
  ``position`` = the dense rank of the 1-based position minus 1,
  ``reward`` = click, ``pscore`` = propensity_score parsed as pandas' default C parser parses it (its fast ``xstrtod`` keeps
  17 digits, leading zeros included: "0.029411764705882353" → 0.0294117647058823, not Python's correctly rounded float;
  ``_pandas_float`` repeats it). ``bench/obp_fixtures.py`` checks these arrays against obp's own.
- target policies of shape (n, n_actions, 3): ``uniform``; ``random`` (``default_rng(seed).random`` normalized per round
  and position); ``model`` (softmax over actions of a reward model's predictions / temperature).
- the reward model: logistic regression by full-batch gradient descent (fixed order, fixed iterations) on the first half
  of the rounds: logit = bias + user-feature one-hots + item one-hot + position one-hot + the row's affinity to the item.
  It is fit once (under obp's venv) and its coefficients are stored in the fixture JSON; ``reward_model_predictions``
  rebuilds ``estimated_rewards_by_reg_model`` (the same q_hat is given to DM/DR/SNDR/SwitchDR on both sides).
- ``synthetic_slates(seed)``: a seeded slate problem (3 positions over 6 items, 4 user types, Plackett-Luce logging and
  evaluation policies) with slate-level, item-position and cascade propensities of both policies.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np

CAMPAIGNS = ("all", "men", "women")
POLICIES = ("uniform", "random", "model")
LEN_LIST = 3
RANDOM_POLICY_SEED = 20240607
MODEL = {"iterations": 400, "learning_rate": 2.0, "l2": 1e-4, "temperature": 0.002}
SWITCH_LAMBDAS = (None, 2.0)  # None = obp's default (np.inf)
SLATES = {"seed": 11, "n_slates": 4000, "n_items": 6, "len_list": 3, "n_contexts": 4}
N_USER_FEATURES = 4


def obd_dir() -> Path:
    """The shared OBD sample, found from the repository as examples/obd and tests/evaluation find it."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "obd"


def load_campaign(campaign: str, data_dir: Path | None = None) -> dict:
    """obp-shaped logged bandit feedback of one campaign, plus the columns the reward model reads."""
    path = (data_dir or obd_dir()) / "random" / campaign / f"{campaign}.csv"
    with path.open(newline="") as handle:
        rows = csv.reader(handle)
        header = next(rows)
        body = list(rows)
    col = {name: i for i, name in enumerate(header)}
    timestamps = np.array([r[col["timestamp"]] for r in body], dtype=object)
    order = np.argsort(timestamps, kind="quicksort")  # what pandas' sort_values does; ties land where obp's land
    body = [body[i] for i in order]
    raw_position = np.array([int(r[col["position"]]) for r in body], dtype=np.int64)
    levels = np.unique(raw_position)
    position = np.searchsorted(levels, raw_position).astype(np.int64)  # scipy rankdata(…, "dense") - 1
    action = np.array([int(r[col["item_id"]]) for r in body], dtype=np.int64)
    n_actions = int(action.max()) + 1
    affinity_cols = [col[f"user-item_affinity_{a}"] for a in range(n_actions)]
    user = np.array([[r[col[f"user_feature_{j}"]] for j in range(N_USER_FEATURES)] for r in body])
    return {
        "campaign": campaign,
        "n_rounds": len(body),
        "n_actions": n_actions,
        "len_list": int(position.max()) + 1,
        "action": action,
        "position": position,
        "reward": np.array([int(r[col["click"]]) for r in body], dtype=np.int64),
        "pscore": np.array([_pandas_float(r[col["propensity_score"]]) for r in body], dtype=np.float64),
        "user_onehot": _user_onehot(user),
        "affinity": np.array([[float(r[c]) for c in affinity_cols] for r in body], dtype=np.float64),
    }


def _pandas_float(text: str, max_digits: int = 17) -> float:
    """A plain decimal (no exponent) as pandas' C parser (xstrtod) reads it: digits past the 17th dropped, then scaled."""
    body = text.strip()
    negative = body.startswith("-")
    int_part, _, frac_part = body.lstrip("+-").partition(".")
    number, n_digits, exponent = 0.0, 0, 0
    for ch in int_part:
        if n_digits < max_digits:
            number, n_digits = number * 10.0 + int(ch), n_digits + 1
        else:
            exponent += 1
    for ch in frac_part[: max(max_digits - n_digits, 0)]:
        number, exponent = number * 10.0 + int(ch), exponent - 1
    p10, n = 10.0, abs(exponent)
    while n:
        if n & 1:
            number = number / p10 if exponent < 0 else number * p10
        n >>= 1
        p10 *= p10
    return -number if negative else number


def _user_onehot(user: np.ndarray) -> np.ndarray:
    """One column per (user feature, value), values in sorted order (deterministic)."""
    blocks = []
    for j in range(user.shape[1]):
        values, codes = np.unique(user[:, j], return_inverse=True)
        blocks.append(np.eye(len(values))[codes.reshape(-1)])
    return np.hstack(blocks)


def _logits(coef: dict, data: dict, rows: slice | np.ndarray, actions: np.ndarray | None, positions: np.ndarray | None) -> np.ndarray:
    """The model's logit for logged (row, action, position) triples, or for every action and position (n, A, L)."""
    user = data["user_onehot"][rows] @ np.asarray(coef["user"])
    w_item, w_pos = np.asarray(coef["item"]), np.asarray(coef["position"])
    affinity = data["affinity"][rows]
    if actions is not None and positions is not None:
        aff = affinity[np.arange(len(actions)), actions]
        return coef["bias"] + user + w_item[actions] + w_pos[positions] + coef["affinity"] * aff
    base = coef["bias"] + user[:, None] + w_item[None, :] + coef["affinity"] * affinity
    return base[:, :, None] + w_pos[None, None, :]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def fit_reward_model(data: dict, iterations: int = MODEL["iterations"], learning_rate: float = MODEL["learning_rate"],
                     l2: float = MODEL["l2"]) -> dict:
    """Logistic regression on the first half of the rounds by full-batch gradient descent; returns plain-float lists."""
    half = slice(0, data["n_rounds"] // 2)
    action, position = data["action"][half], data["position"][half]
    reward = data["reward"][half].astype(np.float64)
    n, n_user = len(reward), data["user_onehot"].shape[1]
    mean = min(max(float(reward.mean()), 1e-4), 1 - 1e-4)
    coef = {"bias": float(np.log(mean / (1 - mean))), "user": np.zeros(n_user), "item": np.zeros(data["n_actions"]),
            "position": np.zeros(data["len_list"]), "affinity": 0.0}
    user_x = data["user_onehot"][half]
    aff = data["affinity"][half][np.arange(n), action]
    for _ in range(iterations):
        g = (_sigmoid(_logits(coef, data, half, action, position)) - reward) / n
        coef["bias"] -= learning_rate * float(g.sum())
        coef["user"] = coef["user"] - learning_rate * (user_x.T @ g + l2 * coef["user"])
        coef["item"] = coef["item"] - learning_rate * (np.bincount(action, g, data["n_actions"]) + l2 * coef["item"])
        coef["position"] = coef["position"] - learning_rate * (np.bincount(position, g, data["len_list"]) + l2 * coef["position"])
        coef["affinity"] -= learning_rate * (float(g @ aff) + l2 * coef["affinity"])
    return {k: (v.tolist() if isinstance(v, np.ndarray) else float(v)) for k, v in coef.items()}


def reward_model_predictions(data: dict, coef: dict) -> np.ndarray:
    """q_hat of shape (n, n_actions, len_list): the model's click probability for every action at every position."""
    return _sigmoid(_logits(coef, data, slice(None), None, None))


def target_policy(name: str, data: dict, q_hat: np.ndarray | None = None) -> np.ndarray:
    """The evaluation policy ``name`` as an action_dist (n, n_actions, len_list); every [i, :, k] sums to 1."""
    shape = (data["n_rounds"], data["n_actions"], data["len_list"])
    if name == "uniform":
        return np.full(shape, 1.0 / data["n_actions"])
    if name == "random":
        p = np.random.default_rng(RANDOM_POLICY_SEED).random(shape)
        return p / p.sum(axis=1, keepdims=True)
    if name == "model":
        if q_hat is None:
            raise ValueError("target_policy('model') needs the reward model's q_hat")
        z = q_hat / MODEL["temperature"]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise ValueError(f"Unknown target policy {name!r}; expected one of {POLICIES}")


def _plackett_luce(weights: np.ndarray, perms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per context: the probability of each ordered slate (C, S) and its cascade (prefix) probabilities (C, S, L)."""
    n_contexts, n_items = weights.shape
    steps = np.empty((n_contexts, len(perms), perms.shape[1]))
    for k in range(perms.shape[1]):
        shown = perms[:, :k]
        taken = np.zeros((len(perms), n_items), dtype=bool)
        if k:
            np.put_along_axis(taken, shown, True, axis=1)
        remaining = np.where(taken[None, :, :], 0.0, weights[:, None, :]).sum(axis=2)
        steps[:, :, k] = weights[:, perms[:, k]] / remaining
    cascade = np.cumprod(steps, axis=2)
    return cascade[:, :, -1], cascade


def _item_position(joint: np.ndarray, perms: np.ndarray, n_items: int) -> np.ndarray:
    """P(item i at position k) per context (C, n_items, L), summed over the slates that put i at k."""
    marginal = np.zeros((joint.shape[0], n_items, perms.shape[1]))
    for k in range(perms.shape[1]):
        for i in range(n_items):
            marginal[:, i, k] = joint[:, perms[:, k] == i].sum(axis=1)
    return marginal


def synthetic_slates(seed: int = SLATES["seed"]) -> dict:
    """A seeded slate problem, one row per (slate, position), with both policies' three kinds of propensity."""
    n, n_items, len_list, n_contexts = SLATES["n_slates"], SLATES["n_items"], SLATES["len_list"], SLATES["n_contexts"]
    rng = np.random.default_rng(seed)
    perms = np.array(list(itertools.permutations(range(n_items), len_list)), dtype=np.int64)
    logging_w = rng.uniform(0.5, 1.5, size=(n_contexts, n_items))
    evaluation_w = rng.uniform(0.1, 2.0, size=(n_contexts, n_items)) ** 2
    attractiveness = rng.uniform(0.05, 0.5, size=(n_contexts, n_items))
    examination = 1.0 / np.arange(1, len_list + 1)
    joint_b, cascade_b = _plackett_luce(logging_w, perms)
    joint_e, cascade_e = _plackett_luce(evaluation_w, perms)
    marg_b, marg_e = _item_position(joint_b, perms, n_items), _item_position(joint_e, perms, n_items)
    context = rng.integers(0, n_contexts, size=n)
    cdf = np.cumsum(joint_b, axis=1)
    slate = np.minimum((cdf[context] < rng.random(n)[:, None]).sum(axis=1), len(perms) - 1)
    items = perms[slate]  # (n, L)
    pos = np.arange(len_list)
    click = (rng.random((n, len_list)) < attractiveness[context[:, None], items] * examination[None, :]).astype(np.int64)
    ctx_rows, slate_rows = np.repeat(context, len_list), np.repeat(slate, len_list)
    item_rows, pos_rows = items.reshape(-1), np.tile(pos, n)
    return {
        "slate_id": np.repeat(np.arange(n, dtype=np.int64), len_list),
        "position": pos_rows.astype(np.int64),
        "action": item_rows,
        "reward": click.reshape(-1),
        "pscore": joint_b[ctx_rows, slate_rows],
        "evaluation_policy_pscore": joint_e[ctx_rows, slate_rows],
        "pscore_item_position": marg_b[ctx_rows, item_rows, pos_rows],
        "evaluation_policy_pscore_item_position": marg_e[ctx_rows, item_rows, pos_rows],
        "pscore_cascade": cascade_b[ctx_rows, slate_rows, pos_rows],
        "evaluation_policy_pscore_cascade": cascade_e[ctx_rows, slate_rows, pos_rows],
    }


def campaign_inputs(campaign: str, coef: dict, data_dir: Path | None = None) -> dict:
    """Everything the six point estimators take for one campaign: the logs, q_hat and the three target policies."""
    data = load_campaign(campaign, data_dir)
    q_hat = reward_model_predictions(data, coef)
    data["estimated_rewards_by_reg_model"] = q_hat
    data["action_dist"] = {name: target_policy(name, data, q_hat) for name in POLICIES}
    return data
