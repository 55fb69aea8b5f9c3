"""Dependency rounds (``resolve-dependencies``): after the planned projects, sync what their
requirement edges need, round after round, and say what nothing can satisfy.

The edges of every mirrored project and the versions each keeps are read from
``dependencies.json`` before the first sync (:meth:`DependencyRounds.pin`), updated by what
the run syncs (:meth:`DependencyRounds.note`), and written back after each round.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from .dependencies import Edge, describe, satisfying
from .state import Todo
from .worker import Synced

if TYPE_CHECKING:
    from packaging.requirements import Requirement

    from .run import Run

logger = logging.getLogger(__name__)

#: (requirer, requirement, edge): one edge of a mirrored project whose markers hold.
Need = tuple[str, "Requirement", Edge]


class DependencyRounds:
    """The requirement edges of one run and the rounds that satisfy them."""

    def __init__(self, run: Run) -> None:
        self.run = run
        #: The requirement edges of every mirrored project and the versions each keeps
        #: (dependencies.json, updated by what this run syncs).
        self.edges: dict[str, list[Edge]] = {}
        self.versions: dict[str, list[str]] = {}

    def note(self, result: Synced) -> None:
        """Keep the edges and versions of a project the run synced."""
        self.edges[result.canonical] = result.requires
        self.versions[result.canonical] = result.versions

    def pin(self) -> None:
        """Before the first sync: read the edges earlier runs found, so that a dependency
        synced again (it changed upstream) keeps the releases they need."""
        self.edges, self.versions = self.run.state.read_dependencies()
        self._pins(self._needs())

    def _needs(self) -> list[Need]:
        """Every edge of every mirrored project whose markers hold, as (requirer, requirement,
        edge), with the extras the allowlists and the edges themselves ask for."""
        run = self.run
        assert run.dependencies is not None
        extras = run.filters.extras()  # requests[socks] in the allowlist: PySocks too
        while True:
            needs = [
                (name, req, edge)
                for name, edges in sorted(self.edges.items())
                if name in run.state.projects
                for req, edge in run.dependencies.needed(edges, extras.get(name, ()))
            ]
            grown = False
            for _, req, _ in needs:
                dep = canonicalize_name(req.name)
                if not req.extras <= extras.get(dep, set()):
                    extras.setdefault(dep, set()).update(req.extras)
                    grown = True  # more extras asked of a project: look at its requirements again
            if not grown:
                return needs

    def _pins(self, needs: list[Need]) -> dict[str, frozenset[str]]:
        """Give the filters the specifiers the edges put on each project; return them."""
        pins: dict[str, set[str]] = {}
        for _, req, _ in needs:
            if req.specifier:
                pins.setdefault(canonicalize_name(req.name), set()).add(str(req.specifier))
        run = self.run
        run.filters = run.filters.with_pins({d: [SpecifierSet(s) for s in sorted(v)] for d, v in pins.items()})
        return {d: frozenset(v) for d, v in pins.items()}

    def _satisfied(self, dep: str, specifiers: frozenset[str]) -> bool:
        """Whether the versions ``dep`` keeps satisfy every specifier (unknown versions: no)."""
        versions = self.versions.get(dep)
        if versions is None:
            return False
        return all(satisfying(SpecifierSet(s), versions) for s in specifiers)

    def sync(self, todo: Todo, attempted: set[str], checkpoint: bool = True) -> None:
        """Sync, round after round, what the edges of what is mirrored need: projects not
        mirrored yet, and mirrored ones whose kept releases satisfy no release an edge asks
        for (synced again with the edges' specifiers). Then say what nothing can satisfy."""
        run = self.run
        resynced: dict[str, frozenset[str]] = {}
        while True:
            needs = self._needs()
            pins = self._pins(needs)
            wanted = sorted({canonicalize_name(req.name) for _, req, _ in needs})
            allowed = [d for d in wanted if run.filters.allows_dependency(d)]
            new = [d for d in allowed if d not in attempted and d not in run.state.projects]
            again = [
                d for d in allowed
                if d in run.state.projects and d in pins and resynced.get(d) != pins[d] and not self._satisfied(d, pins[d])
            ]
            if not new and not again:
                break
            if new:
                logger.info("Dependencies: %d more projects to mirror: %s", len(new), ", ".join(new[:20]))
            if again:
                logger.info(
                    "Dependencies: %d projects to sync again for releases their dependents need: %s",
                    len(again), ", ".join(again[:20]),
                )
            self.save()  # a run killed in a round keeps the edges found so far
            attempted.update(new)
            resynced.update((d, pins[d]) for d in again)
            run.filters = run.filters.with_allowed(new)  # workers started from here on see them
            round_ = Todo(todo.target, dict.fromkeys(new + again, 0))
            todo.projects.update(round_.projects)
            if checkpoint:
                run.state.write_todo(todo)
            run.sync_todo(round_, checkpoint=False)
            for name in set(new + again) - round_.projects.keys():  # finished; what failed stays in todo
                todo.projects.pop(name, None)
        self._report_unsatisfied(needs)
        self.save()

    def save(self) -> None:
        """Write dependencies.json: the edges and kept versions of the mirrored projects."""
        mirrored = self.run.state.projects
        self.run.state.write_dependencies(
            {k: v for k, v in self.edges.items() if k in mirrored}, {k: v for k, v in self.versions.items() if k in mirrored}
        )

    def _report_unsatisfied(self, needs: list[Need]) -> None:
        """Say once each edge nothing can satisfy, with the chain of edges that reached it."""
        run = self.run
        failed = {canonicalize_name(n) for n in run.report.failed}
        via: dict[str, tuple[Requirement, Edge, str]] = {}
        for requirer, req, edge in needs:
            via.setdefault(canonicalize_name(req.name), (req, edge, requirer))

        def chain(requirer: str, seen: frozenset[str]) -> str:
            if run.filters.is_listed(requirer) or requirer in seen or requirer not in via:
                return ""
            req, edge, up = via[requirer]
            return f" <- {describe(req)}, {edge.describe()}" + chain(up, seen | {requirer})

        lines: list[str] = []
        for requirer, req, edge in needs:
            dep = canonicalize_name(req.name)
            if not run.filters.allows_dependency(dep) or dep in failed:
                continue  # blocklisted: never pulled in; failed: said already, retried next run
            if dep in run.report.gone:
                why = "the upstream has no such project"
            elif dep in run.skipped:
                why = "the filters drop the whole project"
            elif dep in run.state.projects and req.specifier and not satisfying(req.specifier, self.versions.get(dep, [])):
                why = f"no release of {dep} satisfies it with a file the filters keep"
            else:
                continue
            lines.append(f"{describe(req)}, {edge.describe()}{chain(requirer, frozenset())}: {why}")
        for line in sorted(set(lines)):
            logger.warning("%s", line)
            run.report.unsatisfied.append(line)
