"""Which names and addresses ATOM answers to, and the address phones open in class mode.

One place for the Host check's list, so that every caller admits the same names: the in-app
check (pages/parts/ui.py refuse_foreign_host) and any guard in front of Streamlit's routes call
`host_admitted(host, settings)`.

- Always: localhost, 127.0.0.1, ::1 (config.LOOPBACK_HOSTS).
- ATOM_ALLOWED_HOSTS: the names listed there ("*": any name).
- Class mode (ATOM_CLASS=1) adds this machine's own LAN names and addresses: its host name
  (and `<name>.local`, as mDNS announces it), its fully qualified name, and every address of an
  interface that is up. A name some other machine controls never is, so DNS rebinding stays
  refused in class mode too.

The interfaces are read from the operating system (psutil): nothing is sent on the network.
"""

from __future__ import annotations

import functools
import ipaddress
import socket

from .config import Settings, host_allowed

# Interfaces that are not the classroom's network: containers, VPN tunnels, virtual bridges.
_VIRTUAL = ("docker", "br-", "veth", "virbr", "vmnet", "vboxnet", "tun", "tap", "utun", "zt",
            "tailscale", "wg", "lo")


@functools.cache
def lan_names() -> frozenset[str]:
    """This machine's own names: host name, `<host>.local`, fully qualified name (lowercase)."""
    names = set()
    host = socket.gethostname().strip().lower().rstrip(".")
    if host:
        names |= {host, f"{host.split('.')[0]}.local"}
    fqdn = socket.getfqdn().strip().lower().rstrip(".")
    if fqdn and fqdn != "localhost":
        names.add(fqdn)
    return frozenset(names)


@functools.cache
def lan_addresses() -> tuple[str, ...]:
    """The IPv4 and IPv6 addresses of this machine's interfaces that are up, loopback and
    link-local left out; the likeliest classroom address first (see `student_address`)."""
    import psutil  # here: only class mode needs it

    stats = psutil.net_if_stats()
    found: list[tuple[int, str]] = []
    for name, addrs in psutil.net_if_addrs().items():
        if name in stats and not stats[name].isup:
            continue
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            text = a.address.split("%", 1)[0]
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                continue
            if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast:
                continue
            found.append((_rank(name, ip), str(ip)))
    return tuple(dict.fromkeys(a for _, a in sorted(found)))


def _rank(interface: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    """Lower is likelier to be what a phone on the same Wi-Fi can reach: IPv4 before IPv6,
    private before public, a real interface before a container's or a VPN's."""
    virtual = interface.lower().startswith(_VIRTUAL)
    return (ip.version == 6) * 4 + (not ip.is_private) * 2 + virtual * 8


def class_hosts() -> frozenset[str]:
    """The names and addresses class mode admits besides loopback and ATOM_ALLOWED_HOSTS."""
    return lan_names() | frozenset(lan_addresses())


def admitted_hosts(settings: Settings) -> frozenset[str]:
    """Every name besides loopback that ATOM answers to with these settings."""
    if settings.class_mode:
        return settings.allowed_hosts | class_hosts()
    return settings.allowed_hosts


def host_admitted(host_header: str | None, settings: Settings) -> bool:
    """Whether a request's Host header names ATOM by a name it answers to (config.host_allowed
    over `admitted_hosts`): the one check for the app and any guard in front of it."""
    return host_allowed(host_header, admitted_hosts(settings))


def student_address(port: int, host: str | None = None) -> str:
    """The address phones open: `http://<this machine's LAN address>:<port>/vote` (`host`
    when given, e.g. a name from ATOM_ALLOWED_HOSTS; localhost when the machine has no LAN)."""
    return f"{base_url(port, host)}/vote"


def base_url(port: int, host: str | None = None) -> str:
    """`http://<LAN address>:<port>` (IPv6 in brackets)."""
    host = host or next(iter(lan_addresses()), "localhost")
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
