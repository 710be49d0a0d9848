"""Build the bundled country-level MaxMind DB from IPFire location exports.

Input is the range-to-country text format shipped by Debian's ``tor-geoipdb``
(``first,last,CC`` per line, ``#`` comments; IPv4 bounds are integers, IPv6 bounds
are addresses). Output is an IPv6 MMDB whose records look like GeoIP2-Country ones
(``country.iso_code``, ``country.names.en``, ``country.is_in_european_union``,
``continent.code``), so ``geoip2.database.Reader(path).country(ip)`` works. IPv4 lives
at ``::/96`` as usual and is aliased at ``::ffff:0:0/96`` (IPv4-mapped addresses).

Code handling: ``UK`` is normalised to ``GB``; ``EU`` (somewhere in the EU, country
unknown) becomes a record with ``continent.code == "EU"`` and no country; every other
non-country code (``??``, ``AP``, ``ZZ``, ``SU``...) is dropped, so it looks up as absent.

Usage: ``python -m scripts.geoip_build [--ipv4 PATH] [--ipv6 PATH] [--output PATH]``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter, SearchTreeLeaf, SearchTreeNode

from regions.geo import ISO_COUNTRY_CODES, country_name

__all__ = [
    "DATABASE_TYPE",
    "DEFAULT_IPV4",
    "DEFAULT_IPV6",
    "DEFAULT_OUTPUT",
    "BuildStats",
    "IpRange",
    "build_database",
    "main",
    "read_ranges",
]

DEFAULT_IPV4 = Path("/usr/share/tor/geoip")
DEFAULT_IPV6 = Path("/usr/share/tor/geoip6")
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "data" / "ipfire-country.mmdb"

DATABASE_TYPE = "IPFire-Location-Country"
"""Contains "Country", which is what ``geoip2`` checks before allowing ``country()``."""
DESCRIPTION = (
    "Country data from the IPFire Location database (https://location.ipfire.org/), "
    "CC BY-SA 4.0; converted from the Tor geoip export"
)

_EU_PSEUDO_CODE = "EU"
_CODE_ALIASES = {"UK": "GB"}

_CONTINENTS: dict[str, tuple[str, str]] = {
    "AF": (
        "Africa",
        "AO BF BI BJ BW CD CF CG CI CM CV DJ DZ EG EH ER ET GA GH GM GN GQ GW KE KM LR LS LY "
        "MA MG ML MR MU MW MZ NA NE NG RE RW SC SD SH SL SN SO SS ST SZ TD TG TN TZ UG YT "
        "ZA ZM ZW",
    ),
    "AN": ("Antarctica", "AQ BV GS HM TF"),
    "AS": (
        "Asia",
        "AE AF AM AZ BD BH BN BT CC CN CX GE HK ID IL IN IO IQ IR JO JP KG KH KP KR KW KZ LA "
        "LB LK MM MN MO MV MY NP OM PH PK PS QA SA SG SY TH TJ TL TM TR TW UZ VN YE",
    ),
    "EU": (
        "Europe",
        "AD AL AT AX BA BE BG BY CH CY CZ DE DK EE ES FI FO FR GB GG GI GR HR HU IE IM IS IT "
        "JE LI LT LU LV MC MD ME MK MT NL NO PL PT RO RS RU SE SI SJ SK SM UA VA XK",
    ),
    "NA": (
        "North America",
        "AG AI AW BB BL BM BQ BS BZ CA CR CU CW DM DO GD GL GP GT HN HT JM KN KY LC MF MQ MS "
        "MX NI PA PM PR SV SX TC TT US VC VG VI",
    ),
    "OC": (
        "Oceania",
        "AS AU CK FJ FM GU KI MH MP NC NF NR NU NZ PF PG PN PW SB TK TO TV UM VU WF WS",
    ),
    "SA": ("South America", "AR BO BR CL CO EC FK GF GY PE PY SR UY VE"),
}
_CONTINENT_OF: dict[str, str] = {
    country: continent
    for continent, (_, members) in _CONTINENTS.items()
    for country in members.split()
}
_EU_MEMBER_CODES = (
    "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK"
)
_EU_MEMBERS = frozenset(_EU_MEMBER_CODES.split())

_Tree = SearchTreeNode | SearchTreeLeaf | None


@dataclass(frozen=True, slots=True)
class IpRange:
    """An inclusive range of addresses (as integers) mapped to a country code."""

    first: int
    last: int
    code: str


@dataclass(frozen=True, slots=True)
class BuildStats:
    """Summary of one build."""

    ipv4_ranges: int
    ipv6_ranges: int
    node_count: int
    size_bytes: int
    seconds: float


def _record(code: str) -> dict[str, Any]:
    """Return the GeoIP2-Country-shaped record stored for ``code``."""
    if code == _EU_PSEUDO_CODE:
        return {"continent": {"code": "EU", "names": {"en": "Europe"}}}
    country: dict[str, Any] = {"iso_code": code, "names": {"en": country_name(code) or code}}
    if code in _EU_MEMBERS:
        country["is_in_european_union"] = True
    record: dict[str, Any] = {"country": country}
    continent = _CONTINENT_OF.get(code)
    if continent is not None:
        record["continent"] = {"code": continent, "names": {"en": _CONTINENTS[continent][0]}}
    return record


def _normalise_code(raw: str) -> str | None:
    code = raw.strip().upper()
    code = _CODE_ALIASES.get(code, code)
    if code in ISO_COUNTRY_CODES or code == _EU_PSEUDO_CODE:
        return code
    return None


def _parse_bound(text: str, version: int) -> int:
    if text.isdigit():
        value = int(text)
    else:
        address = ipaddress.ip_address(text)
        if address.version != version:
            raise ValueError(f"expected an IPv{version} address, got {text!r}")
        value = int(address)
    if value >= 1 << (32 if version == 4 else 128):
        raise ValueError(f"{text!r} is out of range for IPv{version}")
    return value


def read_ranges(path: str | os.PathLike[str], version: int) -> list[IpRange]:
    """Parse a Tor/IPFire geoip text file into sorted, merged, country-coded ranges.

    Raises ValueError (naming the file and line) for malformed or overlapping lines.
    """
    if version not in (4, 6):
        raise ValueError(f"version must be 4 or 6, not {version!r}")
    parsed: list[IpRange] = []
    with open(path, encoding="ascii") as handle:
        for lineno, line in enumerate(handle, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                first_text, last_text, raw_code = line.split(",")
                first = _parse_bound(first_text.strip(), version)
                last = _parse_bound(last_text.strip(), version)
            except ValueError as exc:
                raise ValueError(f"{os.fspath(path)}:{lineno}: bad line {line!r}: {exc}") from exc
            if last < first:
                raise ValueError(f"{os.fspath(path)}:{lineno}: range end before start")
            code = _normalise_code(raw_code)
            if code is not None:
                parsed.append(IpRange(first, last, code))
    parsed.sort(key=lambda r: r.first)
    merged: list[IpRange] = []
    for current in parsed:
        if merged:
            previous = merged[-1]
            if current.first <= previous.last:
                raise ValueError(f"{os.fspath(path)}: overlapping ranges at {current}")
            if current.first == previous.last + 1 and current.code == previous.code:
                merged[-1] = IpRange(previous.first, current.last, current.code)
                continue
        merged.append(current)
    return merged


def _build_tree(ranges: Sequence[IpRange], bits: int, leaves: dict[str, SearchTreeLeaf]) -> _Tree:
    """Build a binary trie over ``bits``-bit addresses from sorted, disjoint ranges."""
    starts = [r.first for r in ranges]
    ends = [r.last for r in ranges]
    codes = [r.code for r in ranges]

    def build(low: int, size: int, i: int, j: int) -> _Tree:
        # Ranges i..j-1 intersect the block [low, low + size - 1].
        if i >= j:
            return None
        if j - i == 1 and starts[i] <= low and ends[i] >= low + size - 1:
            return leaves[codes[i]]
        half = size >> 1
        mid = low + half
        k = bisect_left(starts, mid, i, j)  # ranges i..k-1 start in the left half
        m = k - 1 if k > i and ends[k - 1] >= mid else k  # first range reaching the right
        return SearchTreeNode(build(low, half, i, k), build(mid, half, m, j))

    return build(0, 1 << bits, 0, len(ranges))


def _graft(root: SearchTreeNode, prefix: int, prefix_len: int, subtree: _Tree) -> None:
    """Attach ``subtree`` at ``prefix/prefix_len`` of a 128-bit trie, creating nodes."""
    node = root
    for depth in range(prefix_len - 1):
        bit = (prefix >> (127 - depth)) & 1
        child = node[bit]
        if child is None:
            child = SearchTreeNode()
            node[bit] = child
        elif not isinstance(child, SearchTreeNode):
            raise ValueError(f"IPv6 data covers the IPv4 prefix {prefix:#x}/{prefix_len}")
        node = child
    last_bit = (prefix >> (128 - prefix_len)) & 1
    if node[last_bit] is not None:
        raise ValueError(f"IPv6 data covers the IPv4 prefix {prefix:#x}/{prefix_len}")
    node[last_bit] = subtree


def _count_nodes(tree: _Tree, seen: set[int]) -> int:
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, SearchTreeNode) and id(node) not in seen:
            seen.add(id(node))
            stack.append(node.left)
            stack.append(node.right)
    return len(seen)


def build_database(
    ipv4: str | os.PathLike[str] | None,
    ipv6: str | os.PathLike[str] | None,
    output: str | os.PathLike[str],
) -> BuildStats:
    """Build an MMDB at ``output`` from the given IPv4/IPv6 files (either may be None)."""
    started = time.perf_counter()
    v4_ranges = read_ranges(ipv4, 4) if ipv4 is not None else []
    v6_ranges = read_ranges(ipv6, 6) if ipv6 is not None else []
    codes: Iterable[str] = {r.code for r in v4_ranges} | {r.code for r in v6_ranges}
    leaves = {code: SearchTreeLeaf(_record(code)) for code in sorted(codes)}

    root = _build_tree(v6_ranges, 128, leaves)
    if not isinstance(root, SearchTreeNode):
        root = SearchTreeNode(root, root) if isinstance(root, SearchTreeLeaf) else SearchTreeNode()
    v4_tree = _build_tree(v4_ranges, 32, leaves)
    if v4_tree is not None:
        _graft(root, 0, 96, v4_tree)  # ::/96, where MMDB readers look up IPv4
        _graft(root, 0xFFFF << 32, 96, v4_tree)  # ::ffff:0:0/96, IPv4-mapped

    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type=DATABASE_TYPE,
        languages=["en"],
        description={"en": DESCRIPTION},
    )
    writer.tree = root
    destination = Path(output)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(destination.name + ".tmp")
    writer.to_db_file(os.fspath(temporary))
    os.replace(temporary, destination)
    return BuildStats(
        ipv4_ranges=len(v4_ranges),
        ipv6_ranges=len(v6_ranges),
        node_count=_count_nodes(root, set()),
        size_bytes=destination.stat().st_size,
        seconds=time.perf_counter() - started,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.geoip_build", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--ipv4", type=Path, default=DEFAULT_IPV4, help="IPv4 ranges file")
    parser.add_argument("--ipv6", type=Path, default=DEFAULT_IPV6, help="IPv6 ranges file")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="MMDB to write")
    args = parser.parse_args(argv)
    try:
        stats = build_database(args.ipv4, args.ipv6, args.output)
    except (OSError, ValueError) as exc:
        parser.exit(1, f"error: {exc}\n")
    print(
        f"wrote {args.output}: {stats.size_bytes:,} bytes, {stats.node_count:,} nodes, "
        f"{stats.ipv4_ranges:,} IPv4 + {stats.ipv6_ranges:,} IPv6 ranges "
        f"in {stats.seconds:.1f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
