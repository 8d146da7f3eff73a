"""`sync`: plan the variants of a folder (what each entry's variant should hold).

Planning reads only; `variants.py` compares them with the disk and writes them. The plan
is a pure function of the input files' bytes and the target.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ruamel.yaml.comments import CommentedMap

from carla_launcher.compose import yamlio
from carla_launcher.compose.derive import DROP, Inherited, Plan, derive
from carla_launcher.compose.discover import variant_name
from carla_launcher.compose.environ import (
    dotenv_path,
    env_file_overrides,
    env_files_read,
    project_dotenv,
)
from carla_launcher.compose.hosts import Rewrite
from carla_launcher.compose.keys import (
    DERIVATION,
    NO_SIMULATOR,
    Result,
    Target,
    entries_of,
    entry_key,
    folder_problem,
    full_hash,
    input_digest,
    key_flags,
    key_meta,
    relative,
    tool_digest,
)
from carla_launcher.compose.project import Project, Service, project_name
from carla_launcher.compose.reach import Simulator, check_distributable, simulator_of
from carla_launcher.compose.simulator import find_simulator
from carla_launcher.compose.variants import Variant, render, split_header
from carla_launcher.errors import InputError

# Target, Result, NO_SIMULATOR, DERIVATION and folder_problem live in keys.py (which the fast
# check loads without this module); they are named here too, where planning is.
__all__ = [
    "DERIVATION",
    "NO_SIMULATOR",
    "Result",
    "Target",
    "folder_problem",
    "plan_entries",
    "plan_entry",
    "plan_folder",
]


# -- planning (reads files, writes nothing) --------------------------------------------------------
def plan_folder(folder: Path, target: Target, files: list[Path] | None = None) -> list[Result]:
    """One result per entry file; an entry that cannot be distributed carries its error."""
    folder = Path(folder)
    entries = entries_of(folder, files)
    results = plan_entries(entries, target, single=files is not None)
    problem = folder_problem(folder, results, listed=files is None)
    if problem is not None:
        raise problem
    return results


def plan_entries(entries: list[Path], target: Target, single: bool = False) -> list[Result]:
    """Plan entries with one shared project. With `single` (FILES were given) and one entry
    that has no simulator, that is raised: said of that file."""
    project = Project()
    results = [plan_entry(project, e, target) for e in entries]
    if single and len(results) == 1 and results[0].skipped == NO_SIMULATOR:
        plan_entry(
            Project(), results[0].entry, target, required=True, strict=True
        )  # say it of that file
    return results


def plan_entry(
    project: Project, entry: Path, target: Target, required: bool = False, strict: bool = False
) -> Result:
    """The variants of one entry file. Whatever goes wrong with it (bad input, or a bug) is
    carried as its error, so one entry never stops the others; with `strict`, it is raised."""
    result = Result(Path(entry))
    result.inputs = [Path(entry).absolute()]
    try:
        closure = _closure(project, Path(entry).absolute())
        result.inputs = _with_env_files(project, closure, entry)
        consulted = _consulted(project, closure, Path(entry).absolute())
        skips = _skips(project, closure, target)
        derived = _plan(project, Path(entry).absolute(), target, required, result)
        if consulted is not None and derived is not None:
            _keyed(result, Path(entry).absolute(), target, consulted, skips, *derived)
    except InputError as e:
        if strict:
            raise
        result.error = e
        result.variants = []
    except Exception as e:
        if strict:
            raise
        result.error = InputError(entry, None, f"internal error: {type(e).__name__}: {e}")
        result.variants = []
    return result


def _closure(project: Project, entry: Path) -> list[Path]:
    """The files an entry reads: itself plus everything reachable by include and extends."""
    seen: list[Path] = []
    todo = [entry]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        try:
            sf = project.file(p)
            todo += [i.path for i in project.includes(sf)]
            for name in sf.services:
                t = project.extends_target(sf, str(name))
                if t is not None:
                    todo.append(t[0])
        except InputError:
            continue  # missing or broken: still watch it, so that fixing it triggers a sync
    return seen


def _consulted(
    project: Project, closure: list[Path], entry: Path
) -> list[tuple[Path, str | None]] | None:
    """Every file the plan of `entry` reads or looks for, with its text (None: absent): the
    compose files, every env_file named (present or not) and the entry's `.env`. None when one
    cannot be read: no key then, and the variant is always derived."""
    try:
        out: dict[Path, str | None] = {p: project.file(p).text for p in closure}
        for p in closure:
            sf = project.file(p)
            for name in sf.services:
                for raw in project.effective(sf.path, str(name)).env_files:
                    e = (sf.path.parent / raw).absolute()
                    if e not in out:
                        out[e] = project.env_text(e)
        dot = dotenv_path(entry)
        if dot not in out:
            out[dot] = project.env_text(dot)
    except InputError:
        return None
    return list(out.items())


def _skips(project: Project, closure: list[Path], target: Target) -> list[tuple[Path, str | None]]:
    """The files of the closure, beside the entry, whose own plan as an entry is skipped (as
    _plan decides it): recorded with the entry's key, so that `sync --check` need not parse
    them to know it. (file, None): no simulator in it; (file, SIM): only the simulator."""
    out: list[tuple[Path, str | None]] = []
    for p in closure[1:]:
        if p.parent != closure[0].parent:
            continue
        try:
            sf = project.file(p)
            services = project.model(p)
            sim = find_simulator(p, services, target.simulator, False, sf.line("services"))
        except InputError:
            continue
        if sim is None:
            out.append((p, None))
        elif len(services) < 2:
            out.append((p, sim.name))
    return out


def _keyed(
    result: Result,
    entry: Path,
    target: Target,
    consulted: list[tuple[Path, str | None]],
    skips: list[tuple[Path, str | None]],
    sim: Simulator,
    detected: str | None,
) -> None:
    """Give the entry's variant its key and the lines that recompute it (keys.py)."""
    if not result.variants or result.variants[0].source != entry:
        return
    base = entry.parent
    inputs = [(relative(p, base), input_digest(text)) for p, text in consulted]
    meta = key_meta(
        [rel for rel, _ in inputs],
        [(relative(v.source, base), full_hash(v.content)) for v in result.variants[1:]],
        [(relative(p, base), sim) for p, sim in skips],
        result.warnings,
        (sim.name, sim.world_port, detected),
    )
    first = result.variants[0]
    source_hash, _, body = split_header(first.content)
    if source_hash is None:
        return
    key = entry_key(entry, key_flags(target, sim.name, sim.world_port), inputs, meta)
    result.variants[0] = Variant(
        first.source, first.path, render(entry, body, source_hash, key, meta)
    )


def _with_env_files(project: Project, files: list[Path], entry: Path) -> list[Path]:
    """The compose files plus the env files they read and the entry's `.env`, if present."""
    out = list(files)
    for p in files:
        try:
            out += [e for e in env_files_read(project, project.file(p)) if e not in out]
        except InputError:
            continue
    dot = dotenv_path(entry)
    if dot not in out and project.env_text(dot) is not None:
        out.append(dot)
    return out


def _plan(
    project: Project, entry: Path, target: Target, required: bool, result: Result
) -> tuple[Simulator, str | None] | None:
    """Plans into `result`; the simulator it derived for, and the one found without
    --simulator (None: none, or not one), when it derived."""
    sf = project.file(entry)
    services = project.model(entry)
    sim_svc = find_simulator(entry, services, target.simulator, required, sf.line("services"))
    if sim_svc is None:
        result.skipped = NO_SIMULATOR
        return None
    if len(services) < 2:
        result.skipped = f"only the simulator ({sim_svc.name})"
        return None
    check_distributable(sim_svc, services)
    detected: str | None = sim_svc.name
    if target.simulator is not None:
        try:
            found = find_simulator(entry, services, None, False, sf.line("services"))
            detected = None if found is None else found.name
        except InputError:
            detected = None
    sim = simulator_of(sim_svc, services, project_name(sf))
    rewrite = _rewrite(sim, target, project_dotenv(project, entry))
    deriver = _Deriver(project, sim, rewrite, target, entry)
    deriver.variant_of(entry)
    result.variants = [v for v in deriver.variants.values() if v is not None]
    result.warnings += deriver.notes
    referencing = deriver.referencing
    for name in sorted(deriver.dependents - referencing):
        result.warnings.append(
            f"service {name} depends on {sim.name} but no value of it names the simulator; "
            "if its image has the host built in, it will not find the remote server"
        )
    if not referencing and not deriver.dependents:
        others = ", ".join(sorted(n for n in services if n != sim.name))
        result.warnings.append(
            f"no service refers to {sim.name} by name ({others}); agents whose image has the "
            "simulator's host built in will not find the remote server"
        )
    return sim, detected


def _rewrite(sim: Simulator, target: Target, env: tuple[tuple[str, str], ...]) -> Rewrite:
    if target.env:
        return Rewrite.for_env(sim.host_names, sim.world_port, sim.name, sim.project, env)
    if target.address is None:
        raise ValueError("a literal target needs an address")
    return Rewrite(
        target.address,
        sim.host_names,
        sim.world_port,
        target.port,
        sim.name,
        sim.project,
        dotenv=env,
    )


class _Deriver:
    """Derives a file and, first, the included files it needs variants of (post-order)."""

    def __init__(
        self, project: Project, sim: Simulator, rewrite: Rewrite, target: Target, entry: Path
    ) -> None:
        self.project, self.sim, self.rewrite, self.target = project, sim, rewrite, target
        self.entry = entry
        self.variants: dict[Path, Variant | None] = {}
        self.notes: list[str] = []
        self.referencing: set[str] = set()
        self.dependents: set[str] = set()

    def variant_of(self, path: Path) -> Variant | None:
        if path in self.variants:
            return self.variants[path]
        self.variants[path] = None  # cycle guard; compose refuses cycles anyway
        sf = self.project.file(path)
        includes: dict[str, str | None] = {}
        for inc in self.project.includes(sf):
            model = self.project.model(inc.path)
            if set(model) == {self.sim.name} and not self._shares_resources(inc.path, model):
                includes[inc.raw] = DROP
            elif self.variant_of(inc.path) is not None:
                includes[inc.raw] = _replace_name(inc.raw, variant_name(Path(inc.raw).name))
        inherited = {}
        for name in sf.services:
            t = self.project.extends_target(sf, str(name))
            if (
                t is not None
                and str(name) != self.sim.name
                and (t[0], t[1]) == (self.sim.file, self.sim.name)
            ):
                raise InputError(
                    sf.path,
                    sf.line("services", name, "extends"),
                    f"service {name} extends the simulator; it cannot be distributed",
                    "extends",
                )
            if t is not None and t[2]:
                inherited[str(name)] = _inherited(self.project.effective(t[0], t[1]))
        env_overrides, notes = env_file_overrides(self.project, sf, self.rewrite, self.sim.name)
        self.notes += notes
        plan = Plan(self.sim.name, self.rewrite, includes, inherited, env_overrides)
        inputs = self._inputs(path)
        source_hash = self._hash(inputs)
        owned = self.project.take(path)  # edit the parsed document itself: no second parse
        derived = derive(owned.doc, plan)
        self.referencing |= derived.referencing
        self.dependents |= derived.dependents
        if not derived.changed:
            return None
        body = yamlio.dump(owned.doc, owned.style)
        variant = Variant(
            path, path.with_name(variant_name(path.name)), render(path, body, source_hash)
        )
        self.variants[path] = variant
        return variant

    def _shares_resources(self, path: Path, model: dict[str, Service]) -> bool:
        """Does an include that holds only the simulator define a network, volume, config or
        secret that the other services use? Then its variant keeps those; else it is dropped."""
        sf = self.project.file(path)
        defined = {
            f"{kind.rstrip('s')}:{name}"
            for kind in ("volumes", "networks", "configs", "secrets")
            if isinstance(sf.doc.get(kind), CommentedMap)
            for name in sf.doc[kind]
        }
        if not defined:
            return False
        used: set[str] = set()
        for svc in self.project.model(self.entry).values():
            if svc.name != self.sim.name:
                used |= set(svc.resources) or {"network:default"}
        return bool(defined & used)

    def _inputs(self, path: Path) -> list[Path]:
        """Every file whose bytes the variant of `path` depends on (includes, extends, env)."""
        return _with_env_files(self.project, _closure(self.project, path), self.entry)

    def _hash(self, inputs: list[Path]) -> str:
        h = hashlib.sha256()
        t = self.target
        # the port counts only where it changes something: --port 2000 and no --port agree
        where = "env" if t.env else f"{t.address}\0{self.rewrite.new_port}"
        h.update(f"{DERIVATION}\0{tool_digest()}\0{where}\0{self.sim.name}\0".encode())
        base = inputs[0].parent
        for p in inputs:
            h.update(relative(p, base).encode() + b"\0")
            text = self.project.env_text(p) if p.suffix not in (".yaml", ".yml") else None
            h.update((text if text is not None else self.project.file(p).text).encode() + b"\0")
        return h.hexdigest()[:16]


def _replace_name(raw: str, new_name: str) -> str:
    head, sep, _ = raw.rpartition("/")
    return f"{head}{sep}{new_name}"


def _inherited(s: Service) -> Inherited:
    return Inherited(
        environment=dict(s.environment),
        env_form=s.env_form,
        command=s.command,
        entrypoint=s.entrypoint,
        depends_on=dict(s.depends_on),
        depends_form=s.depends_form,
        links=tuple(s.links),
    )
