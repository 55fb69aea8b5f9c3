"""The XML-RPC dialect: the index's serial, its whole listing, and its changelog (``/pypi``).

An answer that is not XML-RPC, a fault, or values of the wrong types mean the upstream does
not offer the method (:class:`~bandersnatch_classic.errors.MethodUnavailable`), and
``api-method = auto`` tries the next one. Any other exception is a bug and propagates.
"""

from __future__ import annotations

import xmlrpc.client
from collections.abc import Callable
from typing import Any
from xml.parsers.expat import ExpatError

from packaging.utils import canonicalize_name

from .errors import MethodUnavailable, UpstreamError
from .transport import Transport, describe

#: The XML-RPC changelog's action for a deleted project.
REMOVE_PROJECT = "remove project"
#: What a broken or foreign answer raises while it is parsed and its values converted.
UNUSABLE_ANSWER = (xmlrpc.client.Fault, xmlrpc.client.ResponseError, ExpatError, ValueError, TypeError, AttributeError)


def parse_response(body: bytes) -> Any:
    """The one value of an XML-RPC method response."""
    (result,), _method = xmlrpc.client.loads(body)
    return result


class XmlRpcApi:
    """The upstream's XML-RPC methods, asked at ``<master>/pypi``."""

    def __init__(self, transport: Transport, master: str) -> None:
        self.transport = transport
        self.url = f"{master}/pypi"

    def call(self, method: str, *params: Any, convert: Callable[[Any], Any] | None = None) -> Any:
        """``method(*params)``, its result passed through ``convert`` (which may refuse it)."""
        body = xmlrpc.client.dumps(params, method).encode()
        response = self.transport.fetch("POST", self.url, data=body, headers={"Content-Type": "text/xml"})
        if response.status != 200:
            raise MethodUnavailable(f"XML-RPC {method}: HTTP {response.status} from {self.url}")
        try:
            result = parse_response(response.body)
            return convert(result) if convert is not None else result
        except UNUSABLE_ANSWER as exc:
            raise MethodUnavailable(f"XML-RPC {method}: unusable answer ({describe(exc)})") from exc

    def changelog_last_serial(self) -> int:
        return self.call("changelog_last_serial", convert=int)

    def list_packages_with_serial(self) -> dict[str, int]:
        return self.call("list_packages_with_serial", convert=lambda r: {str(k): int(v) for k, v in r.items()})

    def changelog_since(self, serial: int, until: int) -> tuple[dict[str, int], set[str]]:
        """Every change after ``serial``, paging until ``until``: project -> highest serial,
        and the canonical names whose last change is their removal ("remove project")."""
        changed: dict[str, int] = {}
        last_action: dict[str, tuple[int, str]] = {}
        while serial < until:
            entries = self.call("changelog_since_serial", serial)
            if not entries:
                break
            try:
                for name, _version, _when, action, entry_serial in entries:
                    changed[str(name)] = max(changed.get(str(name), 0), int(entry_serial))
                    canonical = canonicalize_name(str(name))
                    if int(entry_serial) >= last_action.get(canonical, (0, ""))[0]:
                        last_action[canonical] = (int(entry_serial), str(action or ""))
                newest = max(int(e[4]) for e in entries)
            except (TypeError, ValueError, IndexError) as exc:
                raise UpstreamError(f"XML-RPC changelog_since_serial: unusable answer ({describe(exc)})") from exc
            if newest <= serial:
                break
            serial = newest
        removed = {c for c, (_, action) in last_action.items() if action.startswith(REMOVE_PROJECT)}
        return changed, removed

