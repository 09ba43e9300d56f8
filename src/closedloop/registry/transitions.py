"""The pure state transitions of the lifecycle operations: from a :class:`DeploymentState` to the
next, or a :class:`~closedloop.errors.RegistryError` that says why the operation does not apply."""

from __future__ import annotations

from closedloop.errors import RegistryError
from closedloop.registry.state import DeploymentState, FlightState

__all__ = ["deploy_transition", "promote_transition"]


def deploy_transition(st: DeploymentState, role: str, version: str, flight: str | None,
                      share: float | None) -> DeploymentState:
    """``version`` deployed in ``role`` (``production``, ``shadow`` or ``flight`` — the flight
    ``flight`` with ``share`` of the units)."""
    if role == "production":
        if st.production == version:
            raise RegistryError(f"{version} is production already.")
        return st.with_(production=version,
                        shadows=tuple(v for v in st.shadows if v != version),
                        flights=tuple(f for f in st.flights if f.bundle != version))
    if st.production is None:
        raise RegistryError(f"Nothing is deployed for system {st.system!r}: deploy a production bundle before "
                            f"a {role}.")
    if version == st.production:
        raise RegistryError(f"{version} is production already; a {role} must be another bundle.")
    if role == "shadow":
        if version in st.shadows:
            raise RegistryError(f"{version} is a shadow already.")
        return st.with_(shadows=(*st.shadows, version))
    flight_ = str(flight)
    new = FlightState(flight_, version, float(share or 0.0))
    if st.flight(flight_) is not None:
        if st.flight(flight_) == new:
            raise RegistryError(f"Flight {flight!r} runs {version} with that share already.")
        return st.with_(flights=tuple(new if f.name == flight else f for f in st.flights))
    return st.with_(flights=(*st.flights, new))


def promote_transition(st: DeploymentState, name: str) -> DeploymentState:
    """The bundle of flight ``name`` (or the shadow of version ``name``) made production."""
    if st.production is None:
        raise RegistryError(f"Nothing is deployed for system {st.system!r}; there is nothing to promote into.")
    f = st.flight(name)
    if f is not None:
        return st.with_(production=f.bundle, flights=tuple(g for g in st.flights if g.name != name),
                        shadows=tuple(v for v in st.shadows if v != f.bundle))
    if name in st.shadows:
        return st.with_(production=name, shadows=tuple(v for v in st.shadows if v != name),
                        flights=tuple(g for g in st.flights if g.bundle != name))
    raise RegistryError(f"System {st.system!r} runs no flight named {name!r} and no shadow of that version. Running: "
                        f"flights {[g.name for g in st.flights]}, shadows {list(st.shadows)}.")
