"""Phishing pages: the pages of one kit generation, made from their trait categories.

:func:`phish_pages` turns each row of a signature draw (hosting, HTTPS, credential form, brand
shown, lure in the URL, domain age, ``@`` trick, external resources — :data:`~.config.TRAITS`)
into a page, in named stages: the words the kit's own domains are made of, the look-alike and
throw-away domains, their rank and age, then the other hostings (a compromised site, free
hosting, a big platform, a raw IP), the paths and URLs, and the page contents. Every stage draws
from the one generator in the order of the stages: the same generator state gives the same pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from closedloop.world.config import TRAITS, Brand, WorldConfig
from closedloop.world.vocab import (
    _BAD_TLDS,
    _LURES,
    _NEUTRAL_PATHS,
    _PHISH_PATHS,
    _PLATFORM_PATHS,
    _WORDS,
    _ips,
    _log_uniform_int,
    _old_age,
    _paths,
    _pick,
    _smallsite,
)

__all__ = ["phish_pages"]

#: Hosting category → its code in the signature (``traits[:, 0]``).
_H = {c: j for j, c in enumerate(dict(TRAITS)["hosting"])}


@dataclass
class _Hosts:
    """Where each page of the kit lives: registrable domain, full host, popularity rank, domain
    age (``fixed``: an age that does not grow), and pages that are on HTTPS whatever the kit chose
    (a platform's)."""

    domains: np.ndarray
    hosts: np.ndarray
    rank: np.ndarray
    age: np.ndarray
    fixed: np.ndarray
    force_https: np.ndarray


@dataclass
class _Words:
    """The words the kit's own names are drawn from, one of each per page."""

    typo: np.ndarray
    first: list[str]
    second: list[str]
    words: list[str]
    words2: list[str]
    bad_tld: list[str]
    order: np.ndarray
    digits: list[int]
    dash: np.ndarray


def phish_pages(
    cfg: WorldConfig, brand: int, traits: np.ndarray, rng: np.random.Generator, day: int, campaign: int,
    generation: int,
) -> dict[str, Any]:
    """Pages of one kit generation: row i shows the trait categories ``traits[i]``."""
    m = int(traits.shape[0])
    b = cfg.brands[brand]
    T = {name: traits[:, i] for i, (name, _) in enumerate(TRAITS)}
    hosting, lure = T["hosting"], T["lure_url"] == 1
    h = _Hosts(np.empty(m, dtype=object), np.empty(m, dtype=object), np.zeros(m, dtype=np.int64), np.zeros(m),
               np.zeros(m, dtype=bool), np.zeros(m, dtype=bool))
    w = _draw_words(rng, m)
    _own_domains(b, hosting, lure, w, h)
    _own_rank_and_age(T["domain_age"], rng, m, h)
    _compromised(hosting, rng, h)
    _free_hosting(cfg, b, hosting, lure, w, rng, h)
    _platform(cfg, hosting, rng, h)
    _raw_ip(hosting, rng, h)
    url, https = _urls(b, T, hosting, lure, w, rng, h)
    return {
        "url": url, "domain": h.domains.tolist(), "page_brand": [b.name if s else "" for s in (T["brand_shown"] == 1).tolist()],
        "age0": h.age, "age_fixed": h.fixed, "born": np.full(m, day, dtype=np.int32),
        **_contents(T, rng, m),
        "https": https, "popularity_rank": h.rank,
        "site": np.full(m, -1, dtype=np.int64), "kind": np.full(m, -1, dtype=np.int16),
        "campaign": np.full(m, campaign, dtype=np.int64), "generation": np.full(m, generation, dtype=np.int32),
        "efficacy": np.prod([np.asarray(cfg.efficacy[t])[traits[:, t]] for t in range(len(TRAITS))], axis=0),
    }


def _draw_words(rng: np.random.Generator, m: int) -> _Words:
    """One draw per page of everything the kit's own names use (whatever its hosting)."""
    typo = rng.random(m) < 0.25
    first = _pick(rng, _LURES, m)
    second = _pick(rng, _LURES + _WORDS, m)
    words, words2 = _pick(rng, _WORDS, m), _pick(rng, _WORDS, m)
    bad_tld = _pick(rng, _BAD_TLDS, m)
    order = rng.random(m) < 0.5
    digits = rng.integers(0, 999, size=m).tolist()
    dash = rng.random(m) < 0.4
    return _Words(typo, first, second, words, words2, bad_tld, order, digits, dash)


def _own_domains(b: Brand, hosting: np.ndarray, lure: np.ndarray, w: _Words, h: _Hosts) -> None:
    """Own domains: look-alikes of the brand (now and then with a typo) and throw-aways."""
    name = b.name.replace("a", "4", 1).replace("o", "0", 1)
    for i in np.flatnonzero(hosting == _H["lookalike"]).tolist():
        nm = name if w.typo[i] else b.name
        if lure[i]:
            d = f"{nm}-{w.first[i]}-{w.second[i]}.{w.bad_tld[i]}" if w.order[i] else f"{w.first[i]}-{nm}.{w.bad_tld[i]}"
            sub = ("www.", "", "secure.", "login.")[i % 4]
        else:
            d = f"{nm}-{w.words[i]}.{w.bad_tld[i]}" if w.order[i] else f"{nm}{w.words[i]}.{w.bad_tld[i]}"
            sub = ("www.", "")[i % 2]
        h.domains[i], h.hosts[i] = d, sub + d
    for i in np.flatnonzero(hosting == _H["throwaway"]).tolist():
        word = w.first[i] if lure[i] else w.words[i]
        d = f"{word}{'-' if w.dash[i] else ''}{w.digits[i]}.{w.bad_tld[i]}"
        h.domains[i], h.hosts[i] = d, ("", "www.", "mail.", "cdn.")[i % 4] + d


def _own_rank_and_age(da: np.ndarray, rng: np.random.Generator, m: int, h: _Hosts) -> None:
    """Every page's rank and age as an own domain's (the other hostings overwrite theirs): a
    few have picked up some traffic rank; the age is the kit's choice (fresh, young, aged)."""
    h.rank = np.where(rng.random(m) < 0.05, _log_uniform_int(rng, m, 50_000, 2e6), 0)
    age = np.where(da == 0, rng.uniform(0.5, 29.0, size=m), np.where(da == 1, rng.uniform(30, 180, size=m),
                   np.maximum(365.0, _old_age(rng, m, 3.0))))
    h.age = np.round(age, 1)


def _compromised(hosting: np.ndarray, rng: np.random.Generator, h: _Hosts) -> None:
    """A compromised small site: its own domain, age and rank (the kit goes under
    /wp-content/, :func:`_urls`)."""
    comp = np.flatnonzero(hosting == _H["compromised"])
    if comp.size:
        ds = _smallsite(rng, comp.size)
        ranks = np.where(rng.random(comp.size) < 0.35, _log_uniform_int(rng, comp.size, 3000, 2e6), 0)
        ages = _old_age(rng, comp.size, 5.0)
        for j, i in enumerate(comp.tolist()):
            h.domains[i], h.hosts[i] = ds[j], ("www.", "")[i % 2] + ds[j]
        h.rank[comp], h.age[comp] = ranks, ages


def _free_hosting(cfg: WorldConfig, b: Brand, hosting: np.ndarray, lure: np.ndarray, w: _Words,
                  rng: np.random.Generator, h: _Hosts) -> None:
    """Free hosting, known to the features or not: ``<brand>-<word>.<host>``, the host's age
    and now and then its rank."""
    for cat, pool in (("free_known", cfg.hosting.free_known), ("free_unknown", cfg.hosting.free_unknown)):
        idx = np.flatnonzero(hosting == _H[cat])
        if idx.size:
            hs = _pick(rng, pool, idx.size)
            tag = [w.first[i] if lure[i] else w.words2[i] for i in idx.tolist()]
            for j, i in enumerate(idx.tolist()):
                h.domains[i], h.hosts[i] = hs[j], f"{b.name}-{tag[j]}.{hs[j]}"
            h.rank[idx] = np.where(rng.random(idx.size) < 0.2, rng.integers(200, 3000, size=idx.size), 0)
            h.age[idx] = _old_age(rng, idx.size, 12.0)


def _platform(cfg: WorldConfig, hosting: np.ndarray, rng: np.random.Generator, h: _Hosts) -> None:
    """Forms and documents on a big platform: its host, domain and rank, old, always HTTPS."""
    plat = np.flatnonzero(hosting == _H["platform"])
    if plat.size:
        pi = rng.integers(0, len(cfg.hosting.platforms), size=plat.size)
        for j, i in enumerate(plat.tolist()):
            host, dom, rk = cfg.hosting.platforms[int(pi[j])]
            h.domains[i], h.hosts[i], h.rank[i] = dom, host, rk
        h.age[plat] = _old_age(rng, plat.size, 15.0)
        h.force_https[plat] = True


def _raw_ip(hosting: np.ndarray, rng: np.random.Generator, h: _Hosts) -> None:
    """A raw public IP address (some with port 8443): unranked, age unknown (fixed)."""
    ipi = np.flatnonzero(hosting == _H["ip"])
    if ipi.size:
        ips = _ips(rng, ipi.size, private=False)
        port = rng.random(ipi.size) < 0.15
        for j, i in enumerate(ipi.tolist()):
            h.domains[i], h.hosts[i] = ips[j], ips[j] + (":8443" if port[j] else "")
        h.age[ipi], h.fixed[ipi], h.rank[ipi] = 3650.0, True, 0


def _urls(b: Brand, T: dict[str, np.ndarray], hosting: np.ndarray, lure: np.ndarray, w: _Words,
          rng: np.random.Generator, h: _Hosts) -> tuple[list[str], np.ndarray]:
    """Each page's URL — a lure path, a neutral one or a platform's (under /wp-content/ on a
    compromised site), the ``brand-domain@`` trick, the scheme — and whether it is on HTTPS."""
    m = hosting.shape[0]
    paths_l = _paths(rng, _PHISH_PATHS, m, [b.name] * m)
    paths_n = _paths(rng, _NEUTRAL_PATHS, m)
    paths_p = _paths(rng, _PLATFORM_PATHS, m)
    paths = []
    for i in range(m):
        if hosting[i] == _H["platform"]:
            p = paths_p[i]
        else:
            p = paths_l[i] if lure[i] else paths_n[i]
        if hosting[i] == _H["compromised"]:
            p = f"/wp-content/plugins/{w.words[i]}{p}"
        paths.append(p)
    prefix = np.empty(m, dtype=object)
    prefix[:] = ""
    prefix[T["at_trick"] == 1] = b.domain + "@"
    https = (T["https"] == 1) | h.force_https
    scheme = np.where(https, "https://", "http://")
    url = [f"{s}{a}{hh}{p}" for s, a, hh, p in zip(scheme.tolist(), prefix.tolist(), h.hosts.tolist(), paths, strict=True)]
    return url, https


def _contents(T: dict[str, np.ndarray], rng: np.random.Generator, m: int) -> dict[str, Any]:
    """What the pages hold: a form unless the kit asks no credential (a password field when it
    asks a password), links, and resources mostly external when the kit loads them from elsewhere."""
    cred = T["credential"]
    forms = np.where(cred == 0, 0, 1 + rng.poisson(0.4, size=m))
    links = rng.poisson(14, size=m)
    res = rng.poisson(18, size=m)
    ext = T["external_resources"] == 1
    ext_ratio = np.where(ext, rng.beta(8, 2, size=m), rng.beta(2, 6, size=m))
    return {
        "num_forms": forms, "has_password_field": cred == 2,
        "num_links": links, "num_external_links": rng.binomial(links, rng.beta(3, 3, size=m)),
        "num_resources": res, "num_external_resources": rng.binomial(res, ext_ratio),
    }
