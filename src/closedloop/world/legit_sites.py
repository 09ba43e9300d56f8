"""Legitimate sites: ``m`` new sites of one kind and their pages, as catalog columns.

:func:`legit_pages` runs in named stages — the sites of the kind (their domains, ranks, ages and
brands: one drawing function per kind, :data:`_SITE_DRAWS`), the replacement rule (a site
registered today is young and unranked), the pages' URLs, their shown brands, then the page
contents (forms, links) — and the per-kind style of pages (HTTPS share, forms, password fields,
links, paths) is one table, :data:`_STYLES`. Every stage draws from the one generator in the
order of the stages: the same generator state gives the same pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from closedloop.errors import SpecError
from closedloop.world.config import WorldConfig
from closedloop.world.vocab import (
    _IDENTITY_BRANDS,
    _INTRANET_BRANDS,
    _INTRANET_PATHS,
    _LEGIT_PATHS,
    _LOGIN_PATHS,
    _LOGIN_SUBS,
    _POPULAR,
    _SSO_PATHS,
    _SSO_WORDS,
    _SUBS,
    _TLDS,
    _TRACKING,
    _WORDS,
    _ips,
    _links,
    _log_uniform_int,
    _old_age,
    _paths,
    _pick,
    _smallsite,
    _young_age,
)

__all__ = ["legit_pages"]


@dataclass(frozen=True)
class _Style:
    """How a kind's pages look: the share of sites on HTTPS, forms per page (a fixed number plus a
    Poisson mean), the chance of a password field on a page with a form, links and resources
    (``_links``' means and Beta parameters), the path templates and the host prefixes."""

    https_p: float
    forms: tuple[int, float]
    pw_p: float
    links: tuple[Any, ...]
    path_t: tuple[str, ...]
    subs: tuple[str, ...]


_STYLES = {
    "popular": _Style(0.995, (0, 1.0), 0.10, (90, (2, 6), 40, (2, 5)), _LEGIT_PATHS + _LOGIN_PATHS[:2], _SUBS),
    "longtail": _Style(0.86, (0, 0.8), 0.06, (35, (2, 4), 20, (2, 3)), _LEGIT_PATHS, _SUBS),
    "login_service": _Style(1.0, (1, 0.3), 0.92, (15, (2, 8), 25, (2, 6)), _LOGIN_PATHS, _LOGIN_SUBS),
    "intranet": _Style(0.2, (0, 1.0), 0.6, (8, (1, 9), 6, (1, 9)), _INTRANET_PATHS, ("",)),
    "free_personal": _Style(0.95, (0, 0.5), 0.05, (20, (2, 3), 15, (3, 3)), _LEGIT_PATHS, ("",)),
    "startup": _Style(0.97, (1, 0.5), 0.35, (25, (2, 5), 20, (3, 4)), _LEGIT_PATHS + _LOGIN_PATHS, ("www.", "", "app.")),
    "sso_portal": _Style(1.0, (1, 0.2), 0.8, (6, (3, 3), 15, (6, 3)), _SSO_PATHS, ("", "login.", "id.")),
}
#: Kinds whose pages sometimes carry a tracking tail (``?utm_source=…``).
_TRACKED_KINDS = ("popular", "longtail", "startup", "free_personal")


@dataclass
class _Sites:
    """What the sites of one kind drew: per site, its domain, popularity rank (0: unranked),
    domain age and brand; ``fixed_age`` marks ages that do not grow (unknown); ``page_brand`` and
    ``hosts_per_page`` are per page when the kind draws them itself (else derived per site)."""

    domains: list[str]
    rank: np.ndarray
    age: np.ndarray
    site_brand: list[str]
    fixed_age: np.ndarray
    page_brand: list[str] | None = None
    hosts_per_page: list[str] | None = None


def legit_pages(
    cfg: WorldConfig, kind: str, kind_index: int, m: int, rng: np.random.Generator, day: int, first_site: int,
    new: bool = False,
) -> tuple[dict[str, Any], np.ndarray]:
    """``m`` new sites of ``kind`` with ``pages_per_site`` pages each → (page columns, site
    popularity ranks used for visit weights — 0 where unranked). ``new``: sites registered today
    (after day 0 a replaced site is a new one: a young domain, no rank yet)."""
    draw = _SITE_DRAWS.get(kind)
    if draw is None:  # pragma: no cover - validated by the config
        raise SpecError(f"The site kind must be one of the configured kinds. Got {kind!r} instead.")
    style = _STYLES[kind]
    sites = draw(cfg, m, rng, first_site, new)
    if new and kind not in ("intranet", "login_service"):
        _registered_today(kind, sites, rng, m)
    site_of_page = np.repeat(np.arange(m), cfg.legit.pages_per_site)
    url, https = _urls(kind, style, sites, rng, site_of_page)
    page_brand = sites.page_brand if sites.page_brand is not None else _page_brands(kind, sites, rng, site_of_page)
    cols: dict[str, Any] = {
        "url": url, "domain": [sites.domains[i] for i in site_of_page.tolist()], "page_brand": page_brand,
        "age0": sites.age[site_of_page], "age_fixed": sites.fixed_age[site_of_page],
        "born": np.full(site_of_page.size, day, dtype=np.int32),
        **_contents(style, rng, site_of_page.size),
        "https": https[site_of_page], "popularity_rank": sites.rank[site_of_page],
    }
    cols.update(_identity(kind_index, first_site, site_of_page))
    return cols, sites.rank


# -- the sites of each kind --------------------------------------------------------------------------
def _popular(cfg: WorldConfig, m: int, rng: np.random.Generator, first_site: int, new: bool) -> _Sites:
    """Big sites: the configured brands' own domains first, then well-known ones, then made-up
    ones with a log-uniform rank (replacements are always made up)."""
    brands = cfg.brands
    nb = len(brands)
    site_brand = [""] * m
    domains, rank = [], np.zeros(m, dtype=np.int64)
    synth = _smallsite(rng, m, ("com", "com", "org", "net", "de", "co.uk", "fr", "jp"))
    lr = _log_uniform_int(rng, m, 100, 5000)
    for i, ki in enumerate((np.arange(m) + first_site).tolist()):
        if ki < nb and not new:
            domains.append(brands[ki].domain)
            rank[i] = brands[ki].rank
            site_brand[i] = brands[ki].name
        elif ki < nb + len(_POPULAR) and not new:
            domains.append(_POPULAR[ki - nb])
            rank[i] = 2 + (ki - nb) * 4
        else:
            domains.append(synth[i])
            rank[i] = lr[i]
    return _Sites(domains, rank, _old_age(rng, m, 14.0), site_brand, np.zeros(m, dtype=bool))


def _longtail(cfg: WorldConfig, m: int, rng: np.random.Generator, first_site: int, new: bool) -> _Sites:
    """Small sites, about half of them ranked, a few young; a page now and then names a brand
    (a shop that sells it, a blog post about it) that is not in its domain."""
    brands = cfg.brands
    nb = len(brands)
    domains = _smallsite(rng, m)
    ranked = rng.random(m) < 0.45
    rank = np.where(ranked, _log_uniform_int(rng, m, 3000, 2e6), 0)
    young = rng.random(m) < 0.06
    age = np.where(young, _young_age(rng, m, 25.0), _old_age(rng, m, 4.0))
    n = m * cfg.legit.pages_per_site
    pw = np.array([b.phish_weight for b in brands])
    mention = rng.random(n) < 0.08
    bi = rng.choice(nb, size=n, p=pw / pw.sum())
    page_brand = [brands[b].name if mm else "" for mm, b in zip(mention.tolist(), bi.tolist(), strict=True)]
    return _Sites(domains, rank, age, [""] * m, np.zeros(m, dtype=bool), page_brand=page_brand)


def _login_service(cfg: WorldConfig, m: int, rng: np.random.Generator, first_site: int, new: bool) -> _Sites:
    """The brands' own login services, in turn (old, ranked as the brand)."""
    brands = cfg.brands
    bi = (np.arange(m) + first_site) % len(brands)
    domains = [brands[b].domain for b in bi.tolist()]
    site_brand = [brands[b].name for b in bi.tolist()]
    rank = np.array([brands[b].rank for b in bi.tolist()], dtype=np.int64)
    return _Sites(domains, rank, _old_age(rng, m, 18.0), site_brand, np.zeros(m, dtype=bool))


def _intranet(cfg: WorldConfig, m: int, rng: np.random.Generator, first_site: int, new: bool) -> _Sites:
    """Devices and intranet pages at private IP addresses (some on port 8080): unranked, age
    unknown (the system's default for a missing age, fixed)."""
    domains = _ips(rng, m, private=True)
    site_brand = _pick(rng, _INTRANET_BRANDS, m)
    port = rng.random(m) < 0.3
    P = cfg.legit.pages_per_site
    hosts = [d + (":8080" if p else "") for d, p in zip(domains, port.tolist(), strict=True) for _ in range(P)]
    return _Sites(domains, np.zeros(m, dtype=np.int64), np.full(m, 3650.0), site_brand, np.ones(m, dtype=bool),
                  hosts_per_page=hosts)


def _free_personal(cfg: WorldConfig, m: int, rng: np.random.Generator, first_site: int, new: bool) -> _Sites:
    """Personal pages on free hosting (mostly hosts the features know): a made-up name under
    the host's domain, the host's age, now and then the host's rank."""
    known = rng.random(m) < 0.7
    kh = _pick(rng, cfg.hosting.free_known, m)
    uh = _pick(rng, cfg.hosting.free_unknown, m)
    domains = [a if k else b for a, b, k in zip(kh, uh, known.tolist(), strict=True)]
    names = [f"{a}{b}" for a, b in zip(_pick(rng, _WORDS, m), _pick(rng, _WORDS, m), strict=True)]
    P = cfg.legit.pages_per_site
    hosts = [f"{n}.{d}" for n, d in zip(names, domains, strict=True) for _ in range(P)]
    rank = np.where(rng.random(m) < 0.3, rng.integers(200, 3000, size=m), 0)
    return _Sites(domains, rank, _old_age(rng, m, 12.0), [""] * m, np.zeros(m, dtype=bool), hosts_per_page=hosts)


def _startup(cfg: WorldConfig, m: int, rng: np.random.Generator, first_site: int, new: bool) -> _Sites:
    """Young, unranked companies with a login (replacements younger still)."""
    domains = _smallsite(rng, m, _TLDS + ("app", "ai", "io", "dev"))
    age = _young_age(rng, m, 45.0) if not new else _young_age(rng, m, 5.0)
    return _Sites(domains, np.zeros(m, dtype=np.int64), age, [""] * m, np.zeros(m, dtype=bool))


def _sso_portal(cfg: WorldConfig, m: int, rng: np.random.Generator, first_site: int, new: bool) -> _Sites:
    """Companies' single sign-on portals showing an identity provider's brand (mostly
    Microsoft's or Google's) on their own domain."""
    a = _pick(rng, _WORDS, m)
    s = _pick(rng, _SSO_WORDS, m)
    t = _pick(rng, ("com", "com", "io", "net", "co"), m)
    domains = [f"{x}-{y}.{z}" for x, y, z in zip(a, s, t, strict=True)]
    rank = np.where(rng.random(m) < 0.3, _log_uniform_int(rng, m, 1e5, 2e6), 0)
    age = _old_age(rng, m, 6.0)
    site_brand = _pick(rng, _IDENTITY_BRANDS, m, p=[0.5, 0.3, 0.08, 0.06, 0.06])
    return _Sites(domains, rank, age, site_brand, np.zeros(m, dtype=bool))


#: The drawing function of each site kind (``LEGIT_KINDS``).
_SITE_DRAWS = {
    "popular": _popular, "longtail": _longtail, "login_service": _login_service, "intranet": _intranet,
    "free_personal": _free_personal, "startup": _startup, "sso_portal": _sso_portal,
}


# -- the stages after the kind's own draws -------------------------------------------------------------
def _registered_today(kind: str, sites: _Sites, rng: np.random.Generator, m: int) -> None:
    """A replacement site is a newly registered domain: young and not (yet) ranked (personal
    pages keep their host's age and rank)."""
    if kind != "free_personal":
        sites.age = np.minimum(sites.age, _young_age(rng, m, 20.0))
        sites.rank = np.zeros(m, dtype=np.int64)


def _urls(kind: str, style: _Style, sites: _Sites, rng: np.random.Generator,
          site_of_page: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Each page's URL (scheme, host, path, sometimes a tracking tail) and whether each site is
    on HTTPS."""
    m, n = len(sites.domains), site_of_page.size
    hosts = sites.hosts_per_page
    if hosts is None:
        sub = _pick(rng, style.subs, m)
        hosts = [sub[i] + sites.domains[i] for i in site_of_page.tolist()]
    paths = _paths(rng, style.path_t, n)
    if kind in _TRACKED_KINDS:
        tracked = rng.random(n) < 0.3
        tails = _paths(rng, _TRACKING, n)
        paths = [p + t if tr and "?" not in p else p for p, t, tr in zip(paths, tails, tracked.tolist(), strict=True)]
    https = rng.random(m) < style.https_p
    scheme = np.where(https, "https://", "http://")[site_of_page]
    return [f"{s}{h}{p}" for s, h, p in zip(scheme.tolist(), hosts, paths, strict=True)], https


def _page_brands(kind: str, sites: _Sites, rng: np.random.Generator, site_of_page: np.ndarray) -> list[str]:
    """The brand each page shows: its site's (a popular site's on 60 % of its pages)."""
    if kind == "popular":
        show = rng.random(site_of_page.size) < 0.6
        return [sites.site_brand[i] if sh else "" for i, sh in zip(site_of_page.tolist(), show.tolist(), strict=True)]
    return [sites.site_brand[i] for i in site_of_page.tolist()]


def _contents(style: _Style, rng: np.random.Generator, n: int) -> dict[str, Any]:
    """What ``n`` pages hold: forms, a password field (only in a form), links and resources."""
    num_forms = style.forms[0] + rng.poisson(style.forms[1], size=n)
    pw = (rng.random(n) < style.pw_p) & (num_forms > 0)
    return {"num_forms": num_forms, "has_password_field": pw, **_links(rng, n, *style.links)}


def _identity(kind_index: int, first_site: int, site_of_page: np.ndarray) -> dict[str, Any]:
    """The catalog's bookkeeping columns of legitimate pages: site, kind, no campaign."""
    n = site_of_page.size
    return {
        "site": first_site + site_of_page, "kind": np.full(n, kind_index, dtype=np.int16),
        "campaign": np.full(n, -1, dtype=np.int64), "generation": np.zeros(n, dtype=np.int32),
        "efficacy": np.ones(n),
    }
