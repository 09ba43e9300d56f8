"""The vocabulary of the world's URLs, and the small draws that build hosts, paths and page
attributes from it.

The words, top-level domains, paths and referrers follow the static generator of the running
example (``examples/phishing/data.py`` imports them from here through :mod:`.pages`), so that the
world's pages and that generator's look alike. The draws take a ``numpy.random.Generator`` and
draw in a fixed order: the same generator state gives the same strings.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["EMAIL_REFERRERS", "LEGIT_REFERRERS", "OTHER_PHISH_REFERRERS"]

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


# -- small draws -----------------------------------------------------------------------------------
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
