"""The fixed rules of a SurgeModel spec that hold in every cluster: image references, data
URIs and quantity bounds. The CRD's patterns and CEL rules say the same (a test keeps them
equal), so the API server refuses such specs at admission and the operator refuses them when
the installed CRD is older."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# An image reference: [registry[:port]/]path[:tag][@sha256:digest], lower-case path components.
IMAGE_REF = (r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]{1,5})?(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*"
             r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$")
DATA_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "file")
# Folders of the trainer's own container that are never training data.
SYSTEM_DIRS = ("proc", "sys", "dev", "etc", "run", "var/run", "boot", "root")
_PARENT = re.compile(r"(^|/)\.\.(/|$)")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SYSTEM = re.compile(r"^(file://)?/(" + "|".join(SYSTEM_DIRS) + r")(/|$)")
# The largest request or limit (1Pi): `10e999` is a quantity no node has, and a Job asking
# for it waits forever.
MAX_QUANTITY = Decimal(2**50)
_QUANTITY = re.compile(r"^([+-]?[0-9]+(?:\.[0-9]*)?|[+-]?\.[0-9]+)([eE][+-]?[0-9]+|[a-zA-Z]*)$")
_SUFFIX: dict[str, Decimal | int] = {
    "": 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("0.001"), "k": 10**3,
    "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18, "Ki": 2**10, "Mi": 2**20,
    "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def data_uri_problem(uri: str) -> str | None:
    """Why `uri` may not be training data in any cluster (None when it may)."""
    if _PARENT.search(uri):
        return "a '..' segment is not allowed; name the file or folder itself"
    if "?" in uri or "#" in uri:
        return ("a query string or fragment is not allowed (it can reroute a filesystem, "
                "e.g. endpoint_override); use * for globs")
    scheme = _SCHEME.match(uri)
    if scheme and scheme[1] not in DATA_SCHEMES:
        return f"scheme {scheme[1]!r} is not one of {', '.join(DATA_SCHEMES)}"
    if _SYSTEM.match(uri):
        return f"system folders (/{', /'.join(SYSTEM_DIRS)}) are not training data"
    return None


def quantity(value: object) -> Decimal | None:
    """A Kubernetes quantity's value ("500m" == "0.5", "1Gi" == "1024Mi"), None if not one."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    match = _QUANTITY.match(str(value))
    if match is None:
        return None
    number, suffix = match.groups()
    try:
        if suffix[:1] in ("e", "E") and suffix[1:]:
            return Decimal(number) * Decimal(10) ** int(suffix[1:])
        return Decimal(number) * Decimal(_SUFFIX[suffix]) if suffix in _SUFFIX else None
    except (InvalidOperation, ValueError):
        return None
