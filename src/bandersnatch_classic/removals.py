"""The removal guard: what a run may take out of the mirror, and on whose word.

A bad answer from the upstream never deletes what the mirror holds. A listing that would
remove more than ``max-removals`` is refused before anything is touched
(:meth:`Removals.check_listing`); a project whose JSON API answers 404 is removed only when
the upstream's listing or changelog says it is gone too (:meth:`Removals.apply_gone`), and
never more of them in one run than ``max-removals`` (:meth:`Removals.may_remove`). At the
end, the 404s nothing explained fail, named, or (nothing but 404s) make the upstream
unusable (:meth:`Removals.settle_not_found`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from packaging.utils import canonicalize_name

from . import layout
from .discovery import Plan
from .errors import UnsafeListing, UpstreamError
from .worker import Gone

if TYPE_CHECKING:
    from .run import Run

logger = logging.getLogger(__name__)


class Removals:
    """What one run learns about removals: the upstream's word, the 404s, the limit."""

    def __init__(self, run: Run, allow_mass_removal: bool = False) -> None:
        self.run = run
        #: Accept more removals in this run than ``max-removals`` allows (``--allow-mass-removal``).
        self.allow_mass_removal = allow_mass_removal
        self._limit: int | None = None
        #: Why the run stopped removing projects the upstream answers 404 for (raised at the end).
        self.refused: str | None = None
        #: What the upstream said in this run besides the projects (its listing, its changelog's
        #: removals): the word a removal needs. ``sync`` reads none: no 404 removes there.
        self.word = Plan("", 0, {}, set())
        #: Projects whose JSON API answered 404 without the upstream's word for a removal:
        #: name -> why it fails (None: nothing to fail, the mirror never held it).
        self.not_found: dict[str, str | None] = {}
        #: Projects the upstream answered for (synced, filtered, failed otherwise, removed).
        self.answered = 0
        #: Set when every project asked was answered with 404 (raised at the end).
        self.knows_none: str | None = None
        #: A resumed XML-RPC run: the changelog span (status, todo target) its todo came from,
        #: and (asked once, when a 404 needs it) the removals that span holds.
        self.earlier_span: tuple[int, int] | None = None
        self._earlier_removals: set[str] | None = None

    def check_listing(self, method: str, removed: set[str], mirrored: int) -> None:
        """Refuse a listing that would remove too much of the mirror: an outage page, a broken proxy."""
        config = self.run.config
        limit = config.removal_limit(mirrored)
        if self.allow_mass_removal or (len(removed) <= limit and len(removed) < mirrored):
            return
        examples = ", ".join(sorted(removed)[:5]) + (", ..." if len(removed) > 5 else "")
        if len(removed) == mirrored:
            why = f"it lists none of the mirror's {mirrored} projects ({examples})"
        else:
            why = (
                f"it lacks {len(removed)} of the mirror's {mirrored} projects ({examples}), more than "
                f"max-removals = {config.max_removals} allows in one run ({limit})"
            )
        raise UnsafeListing(
            f"refusing the upstream's listing (via {method}): {why}; nothing was removed or synced. "
            "If the upstream really deleted them, run once with `bandersnatch mirror --allow-mass-removal`"
        )

    def apply_gone(self, result: Gone, stop: Any) -> bool:
        """A project whose JSON API answered 404: a removal only on the upstream's word.

        The changelog removing it, or the listing no longer naming it, is that word; a 404
        alone is not (a proxy, a broken API, a name the API spells differently). Otherwise a
        project the listing names, or the mirror holds, fails and stays in todo.
        """
        run = self.run
        canonical = result.canonical
        run.report.gone.add(canonical)
        held = canonical in run.state.projects or layout.is_mirrored(run.storage, canonical, run.config.hash_index)
        asked = " and ".join(result.asked) or result.name
        if self._is_said(canonical):
            self.answered += 1
            if not held:
                return True
            if not self.may_remove(stop):
                return False  # stays in todo
            logger.info("%s: deleted upstream; removing it from the index", result.name)
            self.unpublish(canonical)
            return True
        if self.word.listed is not None:
            why: str | None = f"the upstream lists it but its JSON API answers 404 (asked as {asked})"
        elif held:
            why = (
                f"the upstream's JSON API answers 404 (asked as {asked}), but neither its listing nor its "
                "changelog says it was removed: the mirror keeps it (`bandersnatch delete` removes it)"
            )
        else:
            self.not_found[result.name] = None  # never mirrored: nothing to fail or remove
            return True
        self.not_found[result.name] = why
        if run.config.stop_on_error and not run.stopped:
            logger.error("Stopping at the first failure (stop-on-error = true): %s: %s", result.name, why)
            run.halt(stop)
        return False  # stays in todo

    def _is_said(self, canonical: str) -> bool:
        """Whether the upstream's listing or changelog says ``canonical`` was removed; for a
        resumed run, the changelog its todo came from counts too (asked once, when needed)."""
        if self.word.removal_is_said(canonical):
            return True
        if self.earlier_span is None:
            return False
        if self._earlier_removals is None:
            try:
                _changed, self._earlier_removals = self.run.upstream.changelog_since(*self.earlier_span)
            except UpstreamError as exc:  # no word, then: the project fails and is asked again next run
                logger.warning("Could not read the changelog again to tell removals from failures: %s", exc)
                self._earlier_removals = set()
        return canonical in self._earlier_removals

    def settle_not_found(self, every_404_is_unusable: bool) -> None:
        """At the end of the syncing: the projects answered with 404 fail, named (or, for names
        the mirror never held, are warned about when allowlisted). When every project asked was
        a 404, the upstream may be unusable instead (``mirror`` only; ``sync`` names each)."""
        if not self.not_found:
            return
        run = self.run
        allowlist = run.filters.allowlist()
        # Nothing but 404s is an unusable upstream when the mirror holds nothing it ever answered
        # for (a wrong master or allowlist), or when it denies more of what it lists or the
        # mirror holds than max-removals would let go (a proxy that does not forward the JSON
        # API). One project denied, or an allowlisted name it lacks, is that project's failure
        # or a warning.
        held = len(run.state.projects)
        denied = sum(why is not None for why in self.not_found.values())
        too_many = not held or denied > run.config.removal_limit(held)
        if every_404_is_unusable and not self.answered and too_many:
            names = sorted(self.not_found)
            examples = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            also = " and the allowlist's names" if allowlist is not None else ""
            self.knows_none = (
                f"the upstream's JSON API answers 404 for every project asked ({len(names)}: {examples}); "
                f"nothing was removed; check [mirror] master = {run.upstream.master}{also}"
            )
            run.stopped = True
            return
        for name, why in sorted(self.not_found.items()):
            if why is not None:
                run.report.failed[name] = why
                logger.error("%s: failed: %s", name, why)
            elif allowlist is not None and run.filters.is_listed(canonicalize_name(name)):
                logger.warning("%s: allowlisted, but the upstream has no such project; check its spelling", name)

    def unpublish(self, canonical: str) -> None:
        """Take a project the upstream no longer has out of the index (files stay unless
        ``delete_missing_packages``)."""
        run = self.run
        run.report.written += run.mirror.remove_project(canonical, files=run.config.delete_missing_packages)
        run.report.removed += 1

    def may_remove(self, stop: Any) -> bool:
        """Whether one more project the upstream answers 404 for may be removed in this run.

        An upstream that answers 404 for everything (a proxy that does not forward the JSON
        API, say) must not empty the mirror project by project: past ``max-removals`` the run
        stops, removes nothing more, and exits 4.
        """
        run = self.run
        if self._limit is None:
            self._limit = run.config.removal_limit(len(run.state.projects) + run.report.removed)
        if self.allow_mass_removal or run.report.removed < self._limit:
            return True
        if self.refused is None:
            self.refused = (
                f"the upstream removes more of the mirror's projects (its JSON API answers 404, its changelog or "
                f"listing agrees) than max-removals = {run.config.max_removals} allows in one run "
                f"({self._limit}); the run stopped and removed no more (they stay in todo). If the upstream "
                "really deleted them, run once with `bandersnatch mirror --allow-mass-removal`"
            )
            run.halt(stop, "too many projects answered 404 (max-removals)")
        return False
