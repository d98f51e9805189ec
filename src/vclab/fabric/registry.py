"""The loop-protection mechanisms by the name a cluster or experiment file gives them."""

from __future__ import annotations

from vclab.errors import VclabError
from vclab.fabric.linux_stp import LinuxStp
from vclab.fabric.mechanisms import Mechanism, NoProtection, Rstp, Stp
from vclab.fabric.sdn import Sdn


def mechanisms() -> dict[str, type[Mechanism]]:
    return {"rstp": Rstp, "stp": Stp, "linux-stp": LinuxStp, "sdn": Sdn, "none": NoProtection}


def get_mechanism(name: str | Mechanism) -> Mechanism:
    if isinstance(name, Mechanism):
        return name
    known = mechanisms()
    if name in known:
        return known[name]()
    raise VclabError(f"unknown mechanism {name!r}; choose one of: {', '.join(known)}")
