"""Synthetic page loads for the phishing system: contexts a browser would see, with labels.

``generate(n, seed)`` returns ``(columns, labels)``: one column per field of the phishing context
schema (numbers as numpy arrays, text as lists of ``str``) and 0/1 labels (1 = phish). Rows come
from a mixture of page *kinds*, each with its own habits:

legit
    popular sites (top ranks, old, https, sometimes a login form), the long tail of small sites
    (a few young, a few mentioning a brand they resell), bank and e-mail login pages (password
    fields and lure words on the brand's own domain), intranet pages on IP addresses (routers,
    printers), personal sites on free hosting, and freshly registered start-ups;
phish
    look-alike domains that contain the brand (``paypal-secure-login.com``), random throw-away
    domains, compromised old sites with a kit under ``/wp-content/``, kits on free hosting, raw IP
    addresses, forms and shared documents on legitimate platforms (``docs.google.com``), careful
    kits that look like the compromised site itself, and a few pages on
    :data:`KNOWN_BAD_DOMAINS` (the heuristic's lookup table).

The kinds overlap on every feature — no single feature separates the classes, and some phishing
is invisible to the features — so a learned model has something to learn over the hand-written
heuristic (held-out AUC ≈ 0.96 against ≈ 0.90) and still makes mistakes. Everything is drawn from one
``numpy.random.Generator(seed)``: the same ``(n, seed, phish_rate)`` gives the same data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from closedloop import SpecError

# Vocabularies shared with the simulated world (one definition, in the library).
from closedloop.world.pages import (
    _BAD_TLDS,
    _LEGIT_PATHS,
    _LOGIN_PATHS,
    _LOGIN_SUBS,
    _LURES,
    _PLATFORM_PATHS,
    _POPULAR,
    _SUBS,
    _TLDS,
    _TRACKING,
    _WORDS,
    _paths,
    _pick,
)

from .system import BROWSERS, FREE_HOSTS

__all__ = ["KNOWN_BAD_DOMAINS", "generate", "records"]

#: Domains already confirmed as phishing (the heuristic's lookup table; a few generated phishing
#: pages live on them).
KNOWN_BAD_DOMAINS = (
    "secure-paypa1-login.com",
    "appleid-verify-account.net",
    "micros0ft-office365-auth.online",
    "wellsfargo-alerts-center.top",
    "dhl-parcel-redelivery.info",
    "netflix-billing-update.xyz",
    "chase-online-verify.site",
    "coinbase-wallet-restore.app",
)

#: (brand as shown on a page, the brand's own domain, its popularity rank)
BRANDS = (
    ("paypal", "paypal.com", 45),
    ("apple", "apple.com", 12),
    ("microsoft", "microsoft.com", 8),
    ("google", "google.com", 1),
    ("amazon", "amazon.com", 9),
    ("netflix", "netflix.com", 30),
    ("chase", "chase.com", 210),
    ("wellsfargo", "wellsfargo.com", 260),
    ("bankofamerica", "bankofamerica.com", 190),
    ("facebook", "facebook.com", 3),
    ("instagram", "instagram.com", 6),
    ("dhl", "dhl.com", 620),
    ("docusign", "docusign.com", 480),
    ("dropbox", "dropbox.com", 140),
    ("linkedin", "linkedin.com", 20),
    ("coinbase", "coinbase.com", 350),
)
# Phishing kits impersonate some brands far more than others.
_BRAND_P = np.array([14, 10, 14, 8, 9, 6, 5, 5, 4, 6, 3, 4, 3, 3, 3, 3], dtype=float)
_BRAND_P /= _BRAND_P.sum()

_PHISH_PATHS = (
    "/{lure}/{b}/index.php", "/{b}/{lure}.html", "/{lure}-{lure2}/?session={hex}",
    "/app/{lure}?id={hex}&ref={b}", "/{hex}/{lure}/", "/", "/{b}-{lure}.php?cmd={lure2}&{hex}",
    "/docs/{w}/view", "/portal/{w}?token={hex}",
)
_COUNTRIES = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "AU", "ES", "IT", "NL", "MX", "PL", "KR", "")
_COUNTRY_P = np.array([30, 8, 8, 6, 10, 6, 5, 4, 3, 3, 3, 2, 3, 2, 2, 2], dtype=float)
_COUNTRY_P /= _COUNTRY_P.sum()
_BROWSER_P = np.array([0.62, 0.12, 0.07, 0.15, 0.04])
_LEGIT_REFERRERS = ("", "", "google.com", "google.com", "bing.com", "duckduckgo.com", "t.co",
                    "facebook.com", "reddit.com", "news.ycombinator.com")
_PHISH_REFERRERS = ("", "mail.google.com", "mail.google.com", "outlook.live.com", "outlook.live.com",
                    "mail.yahoo.com", "t.co", "facebook.com", "web.whatsapp.com", "google.com")

# (kind, share within its class)
_LEGIT_KINDS = (
    ("popular", 0.34), ("longtail", 0.44), ("login_service", 0.10), ("intranet", 0.03),
    ("free_personal", 0.05), ("startup", 0.04),
)
_PHISH_KINDS = (
    ("lookalike", 0.36), ("throwaway", 0.24), ("compromised", 0.17), ("free_hosted", 0.12),
    ("ip_host", 0.05), ("known_bad", 0.05), ("platform_abuse", 0.10), ("stealth", 0.08),
)
#: Legitimate platforms that phishing kits abuse (forms, shared documents, site builders):
#: (host, registrable domain, rank)
_PLATFORMS = (
    ("docs.google.com", "google.com", 1), ("sites.google.com", "google.com", 1),
    ("forms.office.com", "office.com", 40), ("onedrive.live.com", "live.com", 25),
    ("www.dropbox.com", "dropbox.com", 140), ("notion.site", "notion.site", 900),
    ("pages.dev", "pages.dev", 700), ("forms.gle", "forms.gle", 1500),
)

N_USERS = 3000


class _Rows:
    """Column buffers filled kind by kind."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.text: dict[str, np.ndarray] = {
            k: np.empty(n, dtype=object) for k in ("host", "path", "domain", "page_brand", "referrer_domain")
        }
        self.age = np.zeros(n)
        self.https = np.zeros(n, dtype=bool)
        self.rank = np.zeros(n, dtype=np.int64)
        self.forms = np.zeros(n, dtype=np.int64)
        self.password = np.zeros(n, dtype=bool)
        self.links = np.zeros(n, dtype=np.int64)
        self.ext_links = np.zeros(n, dtype=np.int64)
        self.res = np.zeros(n, dtype=np.int64)
        self.ext_res = np.zeros(n, dtype=np.int64)
        self.at_prefix = np.empty(n, dtype=object)
        self.at_prefix[:] = ""


_fill_path = _paths  # the world's path filler: the same draws, in the same order


def _smallsite(rng: np.random.Generator, m: int, tlds: tuple[str, ...] = _TLDS) -> list[str]:
    a, b = _pick(rng, _WORDS, m), _pick(rng, _WORDS, m)
    t = _pick(rng, tlds, m)
    dash = rng.random(m) < 0.15
    return [f"{x}{'-' if d else ''}{y}.{z}" for x, y, z, d in zip(a, b, t, dash.tolist(), strict=True)]


def _ips(rng: np.random.Generator, m: int, private: bool) -> list[str]:
    if private:
        first = rng.choice(np.array([192, 10, 172]), size=m)
        octets = rng.integers(0, 255, size=(m, 3))
        octets[first == 192, 0] = 168
        return [f"{a}.{b}.{c}.{d}" for a, (b, c, d) in zip(first.tolist(), octets.tolist(), strict=True)]
    o = rng.integers(1, 255, size=(m, 4))
    return [f"{a}.{b}.{c}.{d}" for a, b, c, d in o.tolist()]


def _links(rng: np.random.Generator, rows: _Rows, idx: np.ndarray, links_mean: float, ext: tuple[float, float],
           res_mean: float, ext_res: tuple[float, float]) -> None:
    m = idx.shape[0]
    links = rng.poisson(links_mean, size=m)
    res = rng.poisson(res_mean, size=m)
    rows.links[idx] = links
    rows.ext_links[idx] = rng.binomial(links, rng.beta(*ext, size=m))
    rows.res[idx] = res
    rows.ext_res[idx] = rng.binomial(res, rng.beta(*ext_res, size=m))


def _old_age(rng: np.random.Generator, m: int, median_years: float) -> np.ndarray:
    return np.round(365.0 * median_years * rng.lognormal(0.0, 0.6, size=m), 1)


def _young_age(rng: np.random.Generator, m: int, mean_days: float) -> np.ndarray:
    return np.round(rng.exponential(mean_days, size=m), 1)


def _legit(kind: str, rng: np.random.Generator, rows: _Rows, idx: np.ndarray) -> None:
    m = idx.shape[0]
    T = rows.text
    if kind == "popular":
        use_brand = rng.random(m) < 0.35
        bi = rng.integers(0, len(BRANDS), size=m)
        pi = rng.integers(0, len(_POPULAR), size=m)
        domains = [BRANDS[b][1] if ub else _POPULAR[p] for ub, b, p in zip(use_brand.tolist(), bi.tolist(), pi.tolist(), strict=True)]
        T["domain"][idx] = domains
        T["host"][idx] = [s + d for s, d in zip(_pick(rng, _SUBS, m), domains, strict=True)]
        T["path"][idx] = _fill_path(rng, _LEGIT_PATHS + _LOGIN_PATHS[:2], m)
        T["page_brand"][idx] = [BRANDS[b][0] if ub and r < 0.6 else "" for ub, b, r in
                                zip(use_brand.tolist(), bi.tolist(), rng.random(m).tolist(), strict=True)]
        rows.rank[idx] = np.where(use_brand, [BRANDS[b][2] for b in bi.tolist()],
                                  np.exp(rng.uniform(0, np.log(5000), size=m)).astype(np.int64) + 1)
        rows.age[idx] = _old_age(rng, m, 14.0)
        rows.https[idx] = rng.random(m) < 0.995
        rows.forms[idx] = rng.poisson(1.0, size=m)
        rows.password[idx] = rng.random(m) < 0.10
        _links(rng, rows, idx, 90, (2, 6), 40, (2, 5))
    elif kind == "longtail":
        domains = _smallsite(rng, m)
        T["domain"][idx] = domains
        T["host"][idx] = [s + d for s, d in zip(_pick(rng, _SUBS, m), domains, strict=True)]
        T["path"][idx] = _fill_path(rng, _LEGIT_PATHS, m)
        # a shop that sells a brand, a blog post about one: the brand is not in the domain
        mention = rng.random(m) < 0.08
        T["page_brand"][idx] = [BRANDS[b][0] if mm else "" for mm, b in
                                zip(mention.tolist(), rng.choice(len(BRANDS), size=m, p=_BRAND_P).tolist(), strict=True)]
        ranked = rng.random(m) < 0.45
        rows.rank[idx] = np.where(ranked, np.exp(rng.uniform(np.log(3000), np.log(2e6), size=m)).astype(np.int64), 0)
        young = rng.random(m) < 0.06
        rows.age[idx] = np.where(young, _young_age(rng, m, 25.0), _old_age(rng, m, 4.0))
        rows.https[idx] = rng.random(m) < 0.86
        rows.forms[idx] = rng.poisson(0.8, size=m)
        rows.password[idx] = rng.random(m) < 0.06
        _links(rng, rows, idx, 35, (2, 4), 20, (2, 3))
    elif kind == "login_service":
        bi = rng.integers(0, len(BRANDS), size=m)
        domains = [BRANDS[b][1] for b in bi.tolist()]
        T["domain"][idx] = domains
        T["host"][idx] = [s + d for s, d in zip(_pick(rng, _LOGIN_SUBS, m), domains, strict=True)]
        T["path"][idx] = _fill_path(rng, _LOGIN_PATHS, m)
        T["page_brand"][idx] = [BRANDS[b][0] for b in bi.tolist()]
        rows.rank[idx] = [BRANDS[b][2] for b in bi.tolist()]
        rows.age[idx] = _old_age(rng, m, 18.0)
        rows.https[idx] = True
        rows.forms[idx] = 1 + rng.poisson(0.3, size=m)
        rows.password[idx] = rng.random(m) < 0.92
        _links(rng, rows, idx, 15, (2, 8), 25, (2, 6))
    elif kind == "intranet":
        ips = _ips(rng, m, private=True)
        T["domain"][idx] = ips
        T["host"][idx] = [ip + (":8080" if r < 0.3 else "") for ip, r in zip(ips, rng.random(m).tolist(), strict=True)]
        T["path"][idx] = _pick(rng, ("/", "/login.html", "/admin/login", "/cgi-bin/status", "/printer/jobs"), m)
        T["page_brand"][idx] = _pick(rng, ("", "", "", "netgear", "hp", "synology"), m)
        rows.rank[idx] = 0
        rows.age[idx] = 3650.0  # unknown: the schema's default
        rows.https[idx] = rng.random(m) < 0.2
        rows.forms[idx] = rng.poisson(1.0, size=m)
        rows.password[idx] = rng.random(m) < 0.6
        _links(rng, rows, idx, 8, (1, 9), 6, (1, 9))
    elif kind == "free_personal":
        hosts = _pick(rng, FREE_HOSTS, m)
        T["domain"][idx] = hosts
        T["host"][idx] = [f"{a}{b}.{h}" for a, b, h in zip(_pick(rng, _WORDS, m), _pick(rng, _WORDS, m), hosts, strict=True)]
        T["path"][idx] = _fill_path(rng, _LEGIT_PATHS, m)
        T["page_brand"][idx] = ""
        rows.rank[idx] = np.where(rng.random(m) < 0.3, rng.integers(200, 3000, size=m), 0)
        rows.age[idx] = _old_age(rng, m, 12.0)
        rows.https[idx] = rng.random(m) < 0.95
        rows.forms[idx] = rng.poisson(0.5, size=m)
        rows.password[idx] = rng.random(m) < 0.05
        _links(rng, rows, idx, 20, (2, 3), 15, (3, 3))
    elif kind == "startup":
        domains = _smallsite(rng, m, _TLDS + ("app", "ai", "io", "dev"))
        T["domain"][idx] = domains
        T["host"][idx] = [s + d for s, d in zip(_pick(rng, ("www.", "", "app."), m), domains, strict=True)]
        T["path"][idx] = _fill_path(rng, _LEGIT_PATHS + _LOGIN_PATHS, m)
        T["page_brand"][idx] = ""
        rows.rank[idx] = 0
        rows.age[idx] = _young_age(rng, m, 45.0)
        rows.https[idx] = rng.random(m) < 0.97
        rows.forms[idx] = 1 + rng.poisson(0.5, size=m)
        rows.password[idx] = rng.random(m) < 0.35
        _links(rng, rows, idx, 25, (2, 5), 20, (3, 4))
    else:  # pragma: no cover - kinds are fixed above
        raise ValueError(kind)
    # links from newsletters, ads and social media carry long tracking parameters
    tracked = rng.random(m) < 0.3
    tails = _fill_path(rng, _TRACKING, m)
    T["path"][idx] = [
        p + t if tr and "?" not in p else p for p, t, tr in zip(T["path"][idx].tolist(), tails, tracked.tolist(), strict=True)
    ]


def _phish(kind: str, rng: np.random.Generator, rows: _Rows, idx: np.ndarray) -> None:
    m = idx.shape[0]
    T = rows.text
    if kind == "stealth":
        # a careful kit on a compromised small site: it looks like the site itself
        _legit("longtail", rng, rows, idx)
        rows.forms[idx] = np.maximum(rows.forms[idx], 1)
        rows.password[idx] = rng.random(m) < 0.4
        return
    bi = rng.choice(len(BRANDS), size=m, p=_BRAND_P)
    brands = [BRANDS[b][0] for b in bi.tolist()]
    # Most kits show the brand's logo; some are generic "document shared with you" pages.
    shown = rng.random(m) < 0.85
    T["page_brand"][idx] = [b if s else "" for b, s in zip(brands, shown.tolist(), strict=True)]
    T["path"][idx] = _fill_path(rng, _PHISH_PATHS, m, brands)
    # some kits post with JavaScript instead of a <form>
    rows.forms[idx] = np.where(rng.random(m) < 0.12, 0, 1 + rng.poisson(0.4, size=m))
    rows.password[idx] = rng.random(m) < 0.75
    rows.https[idx] = rng.random(m) < 0.6
    _links(rng, rows, idx, 14, (3, 3), 18, (3, 3))
    # "http://paypal.com@evil.example/…": the real host comes after the '@'
    at = rng.random(m) < 0.05
    rows.at_prefix[idx] = [f"{BRANDS[b][1]}@" if a else "" for a, b in zip(at.tolist(), bi.tolist(), strict=True)]
    if kind in ("lookalike", "known_bad"):
        if kind == "known_bad":
            domains = _pick(rng, KNOWN_BAD_DOMAINS, m)
        else:
            first = _pick(rng, _LURES, m)
            second = _pick(rng, _LURES + _WORDS, m)
            tld = _pick(rng, _BAD_TLDS, m)
            order = rng.random(m) < 0.5
            typo = rng.random(m) < 0.25
            names = [b.replace("a", "4", 1).replace("o", "0", 1) if t else b for b, t in zip(brands, typo.tolist(), strict=True)]
            domains = [
                (f"{b}-{f}-{s}.{t}" if o else f"{f}-{b}.{t}")
                for b, f, s, t, o in zip(names, first, second, tld, order.tolist(), strict=True)
            ]
        T["domain"][idx] = domains
        T["host"][idx] = [s + d for s, d in zip(_pick(rng, ("www.", "", "", "secure.", "login."), m), domains, strict=True)]
        rows.rank[idx] = np.where(rng.random(m) < 0.04, rng.integers(50_000, 2_000_000, size=m), 0)
        rows.age[idx] = _young_age(rng, m, 30.0 if kind == "lookalike" else 60.0)
    elif kind == "throwaway":
        a = _pick(rng, _WORDS + _LURES, m)
        digits = rng.integers(0, 999, size=m).tolist()
        tld = _pick(rng, _BAD_TLDS, m)
        dash = rng.random(m) < 0.4
        domains = [f"{x}{'-' if d else ''}{n}.{t}" for x, n, t, d in zip(a, digits, tld, dash.tolist(), strict=True)]
        T["domain"][idx] = domains
        T["host"][idx] = [s + d for s, d in zip(_pick(rng, ("", "www.", "mail.", "cdn."), m), domains, strict=True)]
        rows.rank[idx] = np.where(rng.random(m) < 0.06, rng.integers(100_000, 2_000_000, size=m), 0)
        rows.age[idx] = np.where(rng.random(m) < 0.7, _young_age(rng, m, 40.0), _old_age(rng, m, 1.0))
    elif kind == "compromised":
        domains = _smallsite(rng, m)
        T["domain"][idx] = domains
        T["host"][idx] = [s + d for s, d in zip(_pick(rng, ("www.", ""), m), domains, strict=True)]
        T["path"][idx] = [f"/wp-content/plugins/{w}{p}" for w, p in zip(_pick(rng, _WORDS, m), T["path"][idx].tolist(), strict=True)]
        rows.rank[idx] = np.where(rng.random(m) < 0.35, np.exp(rng.uniform(np.log(3000), np.log(2e6), size=m)).astype(np.int64), 0)
        rows.age[idx] = _old_age(rng, m, 5.0)
        rows.https[idx] = rng.random(m) < 0.75
    elif kind == "free_hosted":
        hosts = _pick(rng, FREE_HOSTS, m)
        T["domain"][idx] = hosts
        T["host"][idx] = [f"{b}-{w}.{h}" for b, w, h in zip(brands, _pick(rng, _LURES + _WORDS, m), hosts, strict=True)]
        rows.rank[idx] = np.where(rng.random(m) < 0.2, rng.integers(200, 3000, size=m), 0)
        rows.age[idx] = _old_age(rng, m, 12.0)
        rows.https[idx] = rng.random(m) < 0.9
    elif kind == "platform_abuse":
        pi = rng.integers(0, len(_PLATFORMS), size=m)
        T["domain"][idx] = [_PLATFORMS[i][1] for i in pi.tolist()]
        T["host"][idx] = [_PLATFORMS[i][0] for i in pi.tolist()]
        T["path"][idx] = _fill_path(rng, _PLATFORM_PATHS, m)
        rows.rank[idx] = [_PLATFORMS[i][2] for i in pi.tolist()]
        rows.age[idx] = _old_age(rng, m, 15.0)
        rows.https[idx] = True
        rows.password[idx] = rng.random(m) < 0.5
        _links(rng, rows, idx, 20, (2, 5), 30, (2, 5))
    elif kind == "ip_host":
        ips = _ips(rng, m, private=False)
        T["domain"][idx] = ips
        T["host"][idx] = [ip + (":8443" if r < 0.15 else "") for ip, r in zip(ips, rng.random(m).tolist(), strict=True)]
        rows.rank[idx] = 0
        rows.age[idx] = 3650.0
        rows.https[idx] = rng.random(m) < 0.15
    else:  # pragma: no cover - kinds are fixed above
        raise ValueError(kind)


def generate(n: int, seed: int, phish_rate: float = 0.1) -> tuple[dict[str, Any], np.ndarray]:
    """``n`` synthetic page loads and their labels (1 = phish), reproducible from ``seed``.

    Returns ``(columns, labels)``: ``columns`` maps every field of the phishing context schema to
    a column (numpy arrays for numbers and booleans, lists of ``str`` for text); ``labels`` is an
    int64 array of 0/1 with about ``phish_rate`` ones.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise SpecError(f"The 'n' of generate() must be an integer ≥ 0. Got {n!r} instead.")
    if isinstance(phish_rate, bool) or not (isinstance(phish_rate, int | float) and 0.0 <= phish_rate <= 1.0):
        raise SpecError(f"The 'phish_rate' of generate() must be a number in [0, 1]. Got {phish_rate!r} instead.")
    n = int(n)
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < phish_rate).astype(np.int64)

    rows = _Rows(n)
    kind = np.empty(n, dtype=np.int64)
    legit_rows = np.flatnonzero(labels == 0)
    phish_rows = np.flatnonzero(labels == 1)
    for rows_of, kinds, fill in ((legit_rows, _LEGIT_KINDS, _legit), (phish_rows, _PHISH_KINDS, _phish)):
        p = np.array([s for _, s in kinds])
        k = rng.choice(len(kinds), size=rows_of.shape[0], p=p / p.sum())
        kind[rows_of] = k
        for j, (name, _) in enumerate(kinds):
            idx = rows_of[k == j]
            if idx.shape[0]:
                fill(name, rng, rows, idx)

    # users: a few thousand browser profiles, some much more active than others; browser,
    # country and "new user" belong to the profile. New users meet a bit more phishing.
    user_browser = rng.choice(len(BROWSERS), size=N_USERS, p=_BROWSER_P)
    user_country = rng.choice(len(_COUNTRIES), size=N_USERS, p=_COUNTRY_P)
    user_new = rng.random(N_USERS) < 0.12
    activity = rng.pareto(1.5, size=N_USERS) + 1.0
    p_legit = activity / activity.sum()
    p_phish = activity * np.where(user_new, 2.5, 1.0)
    p_phish /= p_phish.sum()
    users = np.where(labels == 1, rng.choice(N_USERS, size=n, p=p_phish), rng.choice(N_USERS, size=n, p=p_legit))

    T = rows.text
    T["referrer_domain"][legit_rows] = _pick(rng, _LEGIT_REFERRERS, legit_rows.shape[0])
    T["referrer_domain"][phish_rows] = _pick(rng, _PHISH_REFERRERS, phish_rows.shape[0])
    scheme = np.where(rows.https, "https://", "http://")
    url = [
        f"{s}{a}{h}{p}"
        for s, a, h, p in zip(scheme.tolist(), rows.at_prefix.tolist(), T["host"].tolist(), T["path"].tolist(), strict=True)
    ]

    columns: dict[str, Any] = {
        "user_id": [f"u{u:05d}" for u in users.tolist()],
        "url": url,
        "domain": T["domain"].tolist(),
        "domain_age_days": rows.age,
        "num_forms": rows.forms,
        "has_password_field": rows.password & (rows.forms > 0),
        "num_external_links": rows.ext_links,
        "num_links": rows.links,
        "num_external_resources": rows.ext_res,
        "num_resources": rows.res,
        "page_brand": T["page_brand"].tolist(),
        "https": rows.https,
        "popularity_rank": rows.rank,
        "browser": [BROWSERS[b] for b in user_browser[users].tolist()],
        "country": [_COUNTRIES[c] for c in user_country[users].tolist()],
        "referrer_domain": T["referrer_domain"].tolist(),
        "new_user": user_new[users],
    }
    return columns, labels


def records(columns: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One dict per row (plain Python types, ready for JSON or ``Runtime.decide``)."""
    lists = {k: (v.tolist() if isinstance(v, np.ndarray) else list(v)) for k, v in columns.items()}
    if not lists:
        return []
    names = list(lists)
    return [dict(zip(names, row, strict=True)) for row in zip(*lists.values(), strict=True)]
