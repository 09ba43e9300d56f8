"""Pages: the catalog of URLs users load, legitimate sites' and phishing campaigns'.

The catalog is append-only (a page's row number never changes, so what a past visit loaded stays
known); pages of replaced sites and retired kit generations simply stop being visited. Each row
holds what the browser can see when the page loads — the phishing system's context fields —
and, for phishing pages, the campaign, kit generation and trait categories that made it.

The page kinds and the vocabulary (brands, words, paths, referrers) follow the static generator
of the running example (``examples/phishing/data.py``), so that the world's pages and that
generator's look alike; here they are generated per *site* or per *kit*, once, and visits pick
rows of the catalog (the hot path touches no strings).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from closedloop.errors import SpecError
from closedloop.world.config import TRAITS, WorldConfig

__all__ = ["Catalog", "N_TRAITS", "TRAIT_INDEX", "legit_pages", "phish_pages"]

N_TRAITS = len(TRAITS)
TRAIT_INDEX = {name: i for i, (name, _) in enumerate(TRAITS)}
_CAT = {name: {c: j for j, c in enumerate(cats)} for name, cats in TRAITS}

_POPULAR = (
    "wikipedia.org", "github.com", "nytimes.com", "bbc.co.uk", "reddit.com", "stackoverflow.com",
    "youtube.com", "espn.com", "weather.com", "imdb.com", "spiegel.de", "lemonde.fr", "yahoo.co.jp",
    "booking.com", "ebay.com", "walmart.com", "cnn.com", "theguardian.com", "twitch.tv", "zillow.com",
)
_WORDS = (
    "green", "river", "bakery", "studio", "north", "maple", "pixel", "garden", "coffee", "atlas",
    "harbor", "summit", "cedar", "lumen", "craft", "nova", "orbit", "tiger", "velvet", "willow",
    "blue", "stone", "market", "travel", "fitness", "photo", "design", "school", "clinic", "auto",
)
_TLDS = ("com", "com", "com", "net", "org", "io", "de", "co.uk", "fr", "nl", "com.br", "ca")
_BAD_TLDS = ("xyz", "top", "info", "online", "site", "live", "club", "com", "net", "support")
_LURES = ("login", "signin", "verify", "account", "secure", "update", "banking", "confirm", "password", "wallet")
_SUBS = ("www.", "www.", "", "shop.", "blog.", "m.", "news.")
_LOGIN_SUBS = ("login.", "secure.", "accounts.", "signin.", "online.", "my.")
_LEGIT_PATHS = (
    "/", "/index.html", "/news/{w}-{w2}", "/products/{w}", "/blog/2024/{w}-{w2}", "/about",
    "/search?q={w}+{w2}", "/category/{w}/page/{d}", "/article/{d}/{w}", "/help/{w}", "/contact",
)
_LOGIN_PATHS = ("/login", "/signin", "/account/login", "/secure/signin?next=%2F{w}", "/auth/password/reset", "/")
_SSO_PATHS = (
    "/adfs/ls/?wa=wsignin1.0&wtrealm={hex}", "/saml2/login?SAMLRequest={hex}", "/oauth2/authorize?client_id={hex}",
    "/login?continue=%2F{w}", "/signin/verify?state={hex}", "/account/secure/signin",
)
_PHISH_PATHS = (
    "/{lure}/{b}/index.php", "/{b}/{lure}.html", "/{lure}-{lure2}/?session={hex}",
    "/app/{lure}?id={hex}&ref={b}", "/{hex}/{lure}/", "/{b}-{lure}.php?cmd={lure2}&{hex}",
)
_NEUTRAL_PATHS = ("/", "/docs/{w}/view", "/portal/{w}?token={hex}", "/{hex}/", "/s/{w}-{w2}.html", "/r/{hex}")
_PLATFORM_PATHS = ("/forms/d/e/{hex}/viewform", "/s/{hex}/{w}.html", "/r/{hex}", "/view/{w}-{w2}", "/{w}/{hex}")
_TRACKING = ("?utm_source=newsletter&utm_medium=email&utm_campaign={w}-{d}", "?fbclid={hex}{hex}",
             "?ref={w}&gclid={hex}", "?utm_source={w}&utm_medium=social", "#section-{d}")
_SSO_WORDS = ("sso", "login", "auth", "id", "signin", "portal")
_IDENTITY_BRANDS = ("microsoft", "google", "apple", "linkedin", "dropbox")
_INTRANET_BRANDS = ("", "", "", "netgear", "hp", "synology")
_INTRANET_PATHS = ("/", "/login.html", "/admin/login", "/cgi-bin/status", "/printer/jobs")
#: Referrers of legitimate and of phishing page loads (visits pick one).
LEGIT_REFERRERS = ("", "", "google.com", "google.com", "bing.com", "duckduckgo.com", "t.co",
                   "facebook.com", "reddit.com", "news.ycombinator.com",
                   "mail.google.com", "outlook.live.com")  # newsletters and receipts come by mail too
EMAIL_REFERRERS = ("mail.google.com", "outlook.live.com", "mail.yahoo.com", "")
OTHER_PHISH_REFERRERS = ("", "t.co", "facebook.com", "web.whatsapp.com", "google.com")

#: Columns of the catalog: name → numpy dtype (object: Python strings).
COLUMNS: dict[str, Any] = {
    "url": object, "domain": object, "page_brand": object,
    "age0": np.float64, "age_fixed": np.bool_, "born": np.int32,
    "num_forms": np.int64, "has_password_field": np.bool_, "num_links": np.int64,
    "num_external_links": np.int64, "num_resources": np.int64, "num_external_resources": np.int64,
    "https": np.bool_, "popularity_rank": np.int64,
    "site": np.int64, "kind": np.int16, "campaign": np.int64, "generation": np.int32,
    "efficacy": np.float64,  # how well the page deceives (phishing; 1 for legitimate pages)
}


class Catalog:
    """Every page ever created, as columns (append-only); Arrow copies of the text columns are
    rebuilt lazily when pages were added."""

    def __init__(self) -> None:
        self.n = 0
        self.cols: dict[str, np.ndarray] = {k: np.empty(0, dtype=t) for k, t in COLUMNS.items()}
        self.traits = np.empty((0, N_TRAITS), dtype=np.int8)
        self._arrow: dict[str, pa.Array] | None = None

    def append(self, cols: dict[str, Any], traits: np.ndarray | None = None) -> np.ndarray:
        """Add pages (every column given, same length); returns their row numbers."""
        m = len(cols["url"])
        new = {}
        for k, t in COLUMNS.items():  # every column checked before any is added: a refusal changes nothing
            v = np.asarray(cols[k], dtype=t) if t is not object else _objects(cols[k])
            if v.shape != (m,):
                raise SpecError(f"The catalog column {k!r} must have one value per page ({m}, as 'url' has). "
                                f"Got shape {v.shape} instead.")
            new[k] = v
        if traits is None:
            traits = np.full((m, N_TRAITS), -1, dtype=np.int8)
        if traits.shape != (m, N_TRAITS):
            raise SpecError(f"The 'traits' of the catalog's new pages must have shape {(m, N_TRAITS)}. "
                            f"Got {traits.shape} instead.")
        for k, v in new.items():
            self.cols[k] = np.concatenate([self.cols[k], v])
        self.traits = np.concatenate([self.traits, traits.astype(np.int8)])
        rows = np.arange(self.n, self.n + m, dtype=np.int64)
        self.n += m
        self._arrow = None
        return rows

    def arrow(self, name: str) -> pa.Array:
        """The text column ``name`` as an Arrow string array (built once per change)."""
        if self._arrow is None:
            self._arrow = {}
        a = self._arrow.get(name)
        if a is None:
            a = self._arrow[name] = pa.array(self.cols[name].tolist(), type=pa.string())
        return a

    # -- persistence (no pickle: text as fixed-width unicode) --------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        out = {f"page.{k}": (v.astype(str) if v.dtype == object else v) for k, v in self.cols.items()}
        out["page.traits"] = self.traits
        return out

    @classmethod
    def from_state(cls, st: dict[str, np.ndarray]) -> Catalog:
        c = cls()
        for k, t in COLUMNS.items():
            v = st[f"page.{k}"]
            c.cols[k] = _objects(v.tolist()) if t is object else v.astype(t)
        c.traits = st["page.traits"].astype(np.int8)
        c.n = int(c.cols["url"].shape[0])
        return c


def _objects(values: Any) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


# -- small helpers ---------------------------------------------------------------------------------
def _pick(rng: np.random.Generator, options: tuple[str, ...], m: int, p: Any = None) -> list[str]:
    idx = rng.choice(len(options), size=m, p=p)
    return [options[i] for i in idx.tolist()]


def _paths(rng: np.random.Generator, templates: tuple[str, ...], m: int, brands: list[str] | None = None) -> list[str]:
    t = _pick(rng, templates, m)
    w, w2 = _pick(rng, _WORDS, m), _pick(rng, _WORDS, m)
    lure, lure2 = _pick(rng, _LURES, m), _pick(rng, _LURES, m)
    d = rng.integers(1, 5000, size=m).tolist()
    hx = [f"{v:x}" for v in rng.integers(16**6, 16**12, size=m).tolist()]
    b = brands if brands is not None else w
    return [
        ti.format(w=wi, w2=w2i, lure=li, lure2=l2i, d=di, hex=hi, b=bi)
        for ti, wi, w2i, li, l2i, di, hi, bi in zip(t, w, w2, lure, lure2, d, hx, b, strict=True)
    ]


def _smallsite(rng: np.random.Generator, m: int, tlds: tuple[str, ...] = _TLDS) -> list[str]:
    a, b = _pick(rng, _WORDS, m), _pick(rng, _WORDS, m)
    t = _pick(rng, tlds, m)
    dash = rng.random(m) < 0.15
    num = rng.integers(0, 100, size=m)
    return [
        f"{x}{'-' if d else ''}{y}{n if n < 30 else ''}.{z}"
        for x, y, z, d, n in zip(a, b, t, dash.tolist(), num.tolist(), strict=True)
    ]


def _ips(rng: np.random.Generator, m: int, private: bool) -> list[str]:
    if private:
        first = rng.choice(np.array([192, 10, 172]), size=m)
        o = rng.integers(0, 255, size=(m, 3))
        o[first == 192, 0] = 168
        return [f"{a}.{b}.{c}.{d}" for a, (b, c, d) in zip(first.tolist(), o.tolist(), strict=True)]
    o = rng.integers(1, 255, size=(m, 4))
    return [f"{a}.{b}.{c}.{d}" for a, b, c, d in o.tolist()]


def _old_age(rng: np.random.Generator, m: int, median_years: float) -> np.ndarray:
    return np.maximum(np.round(365.0 * median_years * rng.lognormal(0.0, 0.6, size=m), 1), 200.0)


def _young_age(rng: np.random.Generator, m: int, mean_days: float) -> np.ndarray:
    return np.round(rng.exponential(mean_days, size=m), 1)


def _links(rng: np.random.Generator, m: int, links_mean: float, ext: tuple[float, float], res_mean: float,
           ext_res: tuple[float, float]) -> dict[str, np.ndarray]:
    links = rng.poisson(links_mean, size=m)
    res = rng.poisson(res_mean, size=m)
    return {
        "num_links": links, "num_external_links": rng.binomial(links, rng.beta(*ext, size=m)),
        "num_resources": res, "num_external_resources": rng.binomial(res, rng.beta(*ext_res, size=m)),
    }


def _log_uniform_int(rng: np.random.Generator, m: int, lo: float, hi: float) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size=m)).astype(np.int64)


# -- legitimate sites --------------------------------------------------------------------------------
def legit_pages(
    cfg: WorldConfig, kind: str, kind_index: int, m: int, rng: np.random.Generator, day: int, first_site: int,
    new: bool = False,
) -> tuple[dict[str, Any], np.ndarray]:
    """``m`` new sites of ``kind`` with ``pages_per_site`` pages each → (page columns, site
    popularity ranks used for visit weights — 0 where unranked). ``new``: sites registered today
    (after day 0 a replaced site is a new one: a young domain, no rank yet)."""
    P = cfg.legit.pages_per_site
    brands = cfg.brands
    nb = len(brands)
    site_brand = [""] * m
    page_brand: list[str] | None = None
    fixed_age = np.zeros(m, dtype=bool)
    hosts_per_page: list[str] | None = None
    path_t: tuple[str, ...]
    subs: tuple[str, ...]
    if kind == "popular":
        k = np.arange(m) + first_site
        domains, rank = [], np.zeros(m, dtype=np.int64)
        synth = _smallsite(rng, m, ("com", "com", "org", "net", "de", "co.uk", "fr", "jp"))
        lr = _log_uniform_int(rng, m, 100, 5000)
        for i, ki in enumerate(k.tolist()):
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
        age = _old_age(rng, m, 14.0)
        https_p, forms, pw_p, links = 0.995, (0, 1.0), 0.10, (90, (2, 6), 40, (2, 5))
        path_t = _LEGIT_PATHS + _LOGIN_PATHS[:2]
        subs = _SUBS
    elif kind == "longtail":
        domains = _smallsite(rng, m)
        ranked = rng.random(m) < 0.45
        rank = np.where(ranked, _log_uniform_int(rng, m, 3000, 2e6), 0)
        young = rng.random(m) < 0.06
        age = np.where(young, _young_age(rng, m, 25.0), _old_age(rng, m, 4.0))
        https_p, forms, pw_p, links = 0.86, (0, 0.8), 0.06, (35, (2, 4), 20, (2, 3))
        path_t, subs = _LEGIT_PATHS, _SUBS
        # a shop that sells a brand, a blog post about one: the brand is not in the domain
        pw = np.array([b.phish_weight for b in brands])
        mention = rng.random(m * P) < 0.08
        bi = rng.choice(nb, size=m * P, p=pw / pw.sum())
        page_brand = [brands[b].name if mm else "" for mm, b in zip(mention.tolist(), bi.tolist(), strict=True)]
    elif kind == "login_service":
        bi = (np.arange(m) + first_site) % nb
        domains = [brands[b].domain for b in bi.tolist()]
        site_brand = [brands[b].name for b in bi.tolist()]
        rank = np.array([brands[b].rank for b in bi.tolist()], dtype=np.int64)
        age = _old_age(rng, m, 18.0)
        https_p, forms, pw_p, links = 1.0, (1, 0.3), 0.92, (15, (2, 8), 25, (2, 6))
        path_t, subs = _LOGIN_PATHS, _LOGIN_SUBS
    elif kind == "intranet":
        domains = _ips(rng, m, private=True)
        rank = np.zeros(m, dtype=np.int64)
        age = np.full(m, 3650.0)  # unknown: the system's default for a missing age
        fixed_age[:] = True
        site_brand = _pick(rng, _INTRANET_BRANDS, m)
        https_p, forms, pw_p, links = 0.2, (0, 1.0), 0.6, (8, (1, 9), 6, (1, 9))
        path_t, subs = _INTRANET_PATHS, ("",)
        port = rng.random(m) < 0.3
        hosts_per_page = [d + (":8080" if p else "") for d, p in zip(domains, port.tolist(), strict=True) for _ in range(P)]
    elif kind == "free_personal":
        known = rng.random(m) < 0.7
        kh = _pick(rng, cfg.hosting.free_known, m)
        uh = _pick(rng, cfg.hosting.free_unknown, m)
        domains = [a if k else b for a, b, k in zip(kh, uh, known.tolist(), strict=True)]
        names = [f"{a}{b}" for a, b in zip(_pick(rng, _WORDS, m), _pick(rng, _WORDS, m), strict=True)]
        hosts_per_page = [f"{n}.{d}" for n, d in zip(names, domains, strict=True) for _ in range(P)]
        rank = np.where(rng.random(m) < 0.3, rng.integers(200, 3000, size=m), 0)
        age = _old_age(rng, m, 12.0)
        https_p, forms, pw_p, links = 0.95, (0, 0.5), 0.05, (20, (2, 3), 15, (3, 3))
        path_t, subs = _LEGIT_PATHS, ("",)
    elif kind == "startup":
        domains = _smallsite(rng, m, _TLDS + ("app", "ai", "io", "dev"))
        rank = np.zeros(m, dtype=np.int64)
        age = _young_age(rng, m, 45.0) if not new else _young_age(rng, m, 5.0)
        https_p, forms, pw_p, links = 0.97, (1, 0.5), 0.35, (25, (2, 5), 20, (3, 4))
        path_t, subs = _LEGIT_PATHS + _LOGIN_PATHS, ("www.", "", "app.")
    elif kind == "sso_portal":
        a = _pick(rng, _WORDS, m)
        s = _pick(rng, _SSO_WORDS, m)
        t = _pick(rng, ("com", "com", "io", "net", "co"), m)
        domains = [f"{x}-{y}.{z}" for x, y, z in zip(a, s, t, strict=True)]
        rank = np.where(rng.random(m) < 0.3, _log_uniform_int(rng, m, 1e5, 2e6), 0)
        age = _old_age(rng, m, 6.0)
        site_brand = _pick(rng, _IDENTITY_BRANDS, m, p=[0.5, 0.3, 0.08, 0.06, 0.06])
        https_p, forms, pw_p, links = 1.0, (1, 0.2), 0.8, (6, (3, 3), 15, (6, 3))
        path_t, subs = _SSO_PATHS, ("", "login.", "id.")
    else:  # pragma: no cover - validated by the config
        raise SpecError(f"The site kind must be one of the configured kinds. Got {kind!r} instead.")
    if new and kind not in ("intranet", "login_service"):
        # a replacement site is a newly registered domain: young and not (yet) ranked
        age = np.minimum(age, _young_age(rng, m, 20.0)) if kind != "free_personal" else age
        if kind != "free_personal":
            rank = np.zeros(m, dtype=np.int64)

    n = m * P
    site_of_page = np.repeat(np.arange(m), P)
    dom_pages = [domains[i] for i in site_of_page.tolist()]
    if hosts_per_page is None:
        sub = _pick(rng, subs, m)
        hosts_per_page = [sub[i] + domains[i] for i in site_of_page.tolist()]
    paths = _paths(rng, path_t, n)
    if kind in ("popular", "longtail", "startup", "free_personal"):
        tracked = rng.random(n) < 0.3
        tails = _paths(rng, _TRACKING, n)
        paths = [p + t if tr and "?" not in p else p for p, t, tr in zip(paths, tails, tracked.tolist(), strict=True)]
    https = rng.random(m) < https_p
    scheme = np.where(https, "https://", "http://")[site_of_page]
    url = [f"{s}{h}{p}" for s, h, p in zip(scheme.tolist(), hosts_per_page, paths, strict=True)]
    if page_brand is None:
        if kind == "popular":
            show = rng.random(n) < 0.6
            page_brand = [site_brand[i] if sh else "" for i, sh in zip(site_of_page.tolist(), show.tolist(), strict=True)]
        else:
            page_brand = [site_brand[i] for i in site_of_page.tolist()]
    num_forms = forms[0] + rng.poisson(forms[1], size=n)
    pw = (rng.random(n) < pw_p) & (num_forms > 0)
    cols: dict[str, Any] = {
        "url": url, "domain": dom_pages, "page_brand": page_brand,
        "age0": age[site_of_page], "age_fixed": fixed_age[site_of_page], "born": np.full(n, day, dtype=np.int32),
        "num_forms": num_forms, "has_password_field": pw,
        **_links(rng, n, *links),
        "https": https[site_of_page], "popularity_rank": rank[site_of_page],
        "site": first_site + site_of_page, "kind": np.full(n, kind_index, dtype=np.int16),
        "campaign": np.full(n, -1, dtype=np.int64), "generation": np.zeros(n, dtype=np.int32),
        "efficacy": np.ones(n),
    }
    return cols, rank


# -- phishing pages ----------------------------------------------------------------------------------
def phish_pages(
    cfg: WorldConfig, brand: int, traits: np.ndarray, rng: np.random.Generator, day: int, campaign: int,
    generation: int,
) -> dict[str, Any]:
    """Pages of one kit generation: row i shows the trait categories ``traits[i]``."""
    m = int(traits.shape[0])
    b = cfg.brands[brand]
    T = {name: traits[:, i] for i, (name, _) in enumerate(TRAITS)}
    hosting = T["hosting"]
    lure = T["lure_url"] == 1
    shown = T["brand_shown"] == 1
    H = _CAT["hosting"]

    domains = np.empty(m, dtype=object)
    hosts = np.empty(m, dtype=object)
    rank = np.zeros(m, dtype=np.int64)
    age = np.zeros(m)
    fixed = np.zeros(m, dtype=bool)
    prefix = np.empty(m, dtype=object)
    prefix[:] = ""
    force_https = np.zeros(m, dtype=bool)

    # own domains: look-alikes and throw-aways, aged as the kit chose
    typo = rng.random(m) < 0.25
    name = b.name.replace("a", "4", 1).replace("o", "0", 1)
    first = _pick(rng, _LURES, m)
    second = _pick(rng, _LURES + _WORDS, m)
    words, words2 = _pick(rng, _WORDS, m), _pick(rng, _WORDS, m)
    bad_tld = _pick(rng, _BAD_TLDS, m)
    order = rng.random(m) < 0.5
    digits = rng.integers(0, 999, size=m).tolist()
    dash = rng.random(m) < 0.4
    for i in np.flatnonzero(hosting == H["lookalike"]).tolist():
        nm = name if typo[i] else b.name
        if lure[i]:
            d = f"{nm}-{first[i]}-{second[i]}.{bad_tld[i]}" if order[i] else f"{first[i]}-{nm}.{bad_tld[i]}"
            sub = ("www.", "", "secure.", "login.")[i % 4]
        else:
            d = f"{nm}-{words[i]}.{bad_tld[i]}" if order[i] else f"{nm}{words[i]}.{bad_tld[i]}"
            sub = ("www.", "")[i % 2]
        domains[i], hosts[i] = d, sub + d
    for i in np.flatnonzero(hosting == H["throwaway"]).tolist():
        w = first[i] if lure[i] else words[i]
        d = f"{w}{'-' if dash[i] else ''}{digits[i]}.{bad_tld[i]}"
        domains[i], hosts[i] = d, ("", "www.", "mail.", "cdn.")[i % 4] + d
    # a few own domains have picked up some traffic rank
    rank = np.where(rng.random(m) < 0.05, _log_uniform_int(rng, m, 50_000, 2e6), 0)
    da = T["domain_age"]
    age = np.where(da == 0, rng.uniform(0.5, 29.0, size=m), np.where(da == 1, rng.uniform(30, 180, size=m),
                   np.maximum(365.0, _old_age(rng, m, 3.0))))
    age = np.round(age, 1)
    # a compromised small site: its own age and rank, the kit under /wp-content/
    comp = np.flatnonzero(hosting == H["compromised"])
    if comp.size:
        ds = _smallsite(rng, comp.size)
        ranks = np.where(rng.random(comp.size) < 0.35, _log_uniform_int(rng, comp.size, 3000, 2e6), 0)
        ages = _old_age(rng, comp.size, 5.0)
        for j, i in enumerate(comp.tolist()):
            domains[i], hosts[i] = ds[j], ("www.", "")[i % 2] + ds[j]
        rank[comp], age[comp] = ranks, ages
    # free hosting, known to the features or not
    for cat, pool in (("free_known", cfg.hosting.free_known), ("free_unknown", cfg.hosting.free_unknown)):
        idx = np.flatnonzero(hosting == H[cat])
        if idx.size:
            hs = _pick(rng, pool, idx.size)
            tag = [first[i] if lure[i] else words2[i] for i in idx.tolist()]
            for j, i in enumerate(idx.tolist()):
                domains[i], hosts[i] = hs[j], f"{b.name}-{tag[j]}.{hs[j]}"
            rank[idx] = np.where(rng.random(idx.size) < 0.2, rng.integers(200, 3000, size=idx.size), 0)
            age[idx] = _old_age(rng, idx.size, 12.0)
    # forms and documents on a big platform
    plat = np.flatnonzero(hosting == H["platform"])
    if plat.size:
        pi = rng.integers(0, len(cfg.hosting.platforms), size=plat.size)
        for j, i in enumerate(plat.tolist()):
            host, dom, rk = cfg.hosting.platforms[int(pi[j])]
            domains[i], hosts[i], rank[i] = dom, host, rk
        age[plat] = _old_age(rng, plat.size, 15.0)
        force_https[plat] = True
    # a raw IP address
    ipi = np.flatnonzero(hosting == H["ip"])
    if ipi.size:
        ips = _ips(rng, ipi.size, private=False)
        port = rng.random(ipi.size) < 0.15
        for j, i in enumerate(ipi.tolist()):
            domains[i], hosts[i] = ips[j], ips[j] + (":8443" if port[j] else "")
        age[ipi], fixed[ipi], rank[ipi] = 3650.0, True, 0

    brands_list = [b.name] * m
    paths_l = _paths(rng, _PHISH_PATHS, m, brands_list)
    paths_n = _paths(rng, _NEUTRAL_PATHS, m)
    paths_p = _paths(rng, _PLATFORM_PATHS, m)
    paths = []
    for i in range(m):
        if hosting[i] == H["platform"]:
            p = paths_p[i]
        else:
            p = paths_l[i] if lure[i] else paths_n[i]
        if hosting[i] == H["compromised"]:
            p = f"/wp-content/plugins/{words[i]}{p}"
        paths.append(p)
    at = T["at_trick"] == 1
    prefix[at] = b.domain + "@"
    https = (T["https"] == 1) | force_https
    scheme = np.where(https, "https://", "http://")
    url = [f"{s}{a}{h}{p}" for s, a, h, p in zip(scheme.tolist(), prefix.tolist(), hosts.tolist(), paths, strict=True)]
    cred = T["credential"]
    forms = np.where(cred == 0, 0, 1 + rng.poisson(0.4, size=m))
    links = rng.poisson(14, size=m)
    res = rng.poisson(18, size=m)
    ext = T["external_resources"] == 1
    ext_ratio = np.where(ext, rng.beta(8, 2, size=m), rng.beta(2, 6, size=m))
    return {
        "url": url, "domain": domains.tolist(), "page_brand": [b.name if s else "" for s in shown.tolist()],
        "age0": age, "age_fixed": fixed, "born": np.full(m, day, dtype=np.int32),
        "num_forms": forms, "has_password_field": cred == 2,
        "num_links": links, "num_external_links": rng.binomial(links, rng.beta(3, 3, size=m)),
        "num_resources": res, "num_external_resources": rng.binomial(res, ext_ratio),
        "https": https, "popularity_rank": rank,
        "site": np.full(m, -1, dtype=np.int64), "kind": np.full(m, -1, dtype=np.int16),
        "campaign": np.full(m, campaign, dtype=np.int64), "generation": np.full(m, generation, dtype=np.int32),
        "efficacy": np.prod([np.asarray(cfg.efficacy[t])[traits[:, t]] for t in range(N_TRAITS)], axis=0),
    }
