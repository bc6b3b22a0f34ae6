"""Two versions of recruit on the same made-up populations: are flow counts and candidates identical?

    python3 bench/compare_versions.py [--before /work/before] [--after .] [--patients 2000]
        [--populations bench,demo] [--workdir /work/benchdata/compare] [--commands]
    python3 bench/compare_versions.py --summarise AFTER_LOG BEFORE_LOG

For issue 20 (a refactor that must not change behaviour). BEFORE and AFTER are two checkouts,
each with its own venv (.venv, `pip install -e '.[test]'`). This script uses only the standard
library: each version runs as a subprocess of its own venv, so the two code bases never mix.

1. Each population is made once (by BEFORE's synthetic_ehr, NDJSON, cached in --workdir):
   - bench: --patients people in --practices practices (default one per 10,000 people, as
     bench_search.py's region of 1,000,000 in 100 and bench_load.py's 100,000 in 10), seed 1;
   - demo: what `recruit demo` makes (recruit/demo.py run_demo: 3 practices, 3,000 people, seed 1).
2. For each version: `recruit load --create` into a fresh SQLite file, then `recruit search` with
   that version's own rules/instep.yaml as on 2026-11-01 (synthetic_ehr's extract date).
3. Each version's figures go into a JSON file beside its database: the rows in each loaded table,
   the flow counts per step, the sorted candidate list (practice, patient source id, outcome, rank,
   score, score items) and what the two commands printed.
4. The two are compared: load counts, flow counts, candidates, then every patient's search result
   (outcome, excluding step, reason, evidence, step mask, score; compared in SQL, both databases
   attached) and the printed messages. Prints IDENTICAL, or the first differences of each kind.
   Exit status 0 when identical, 1 when not.

--commands then prints, for the bench population, the exact before and after commands that time a
search and a load (bench/timed_step.py run with each version's Python, on each version's own
database), for timing the two side by side in one sitting, alternately, as whole processes
(e.g. /usr/bin/time -v, or a harness that pairs two commands and gives the ratio). Each command
also appends its own in-process seconds to a log; --summarise AFTER_LOG BEFORE_LOG prints their
min/median/max and the after/before ratio run by run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
INDEX_DATE = "2026-11-01"  # synthetic_ehr's default extract date: the population's "today"
DEMO = {"patients": 3000, "practices": 3, "seed": 1}  # recruit/demo.py run_demo's defaults
PER_PRACTICE = 10_000  # bench_search.py: "a region: ~10,000 patients each"
SHOWN = 5  # differences shown of each kind
# Tables a search writes: not part of what a load made.
SEARCH_TABLES = {"search_result", "step_count", "search_run", "codelist_code", "codelist", "alembic_version"}


def log(message: str) -> None:
    print(message, flush=True)


@dataclass(frozen=True)
class Version:
    label: str  # "before" or "after"
    root: Path

    @property
    def python(self) -> Path:
        return self.root / ".venv" / "bin" / "python"

    @property
    def recruit(self) -> Path:
        return self.root / ".venv" / "bin" / "recruit"

    @property
    def rules(self) -> Path:
        return self.root / "rules" / "instep.yaml"

    def describe(self) -> str:
        """Commit, and whether the checkout has uncommitted changes (they are what runs)."""
        head = _git(self.root, "rev-parse", "--short", "HEAD")
        dirty = _git(self.root, "status", "--porcelain", "--untracked-files=no")
        return f"{self.root} at {head}{' with uncommitted changes' if dirty else ''}"

    def check(self) -> None:
        for needed in (self.python, self.recruit, self.rules):
            if not needed.exists():
                sys.exit(
                    f"{self.label}: no {needed}. Make the venv with: cd {self.root} && python3 -m venv .venv "
                    "&& .venv/bin/pip install -q -e '.[test]'"
                )
        origin = subprocess.run(
            [str(self.python), "-c", "import recruit; print(recruit.__file__)"],
            capture_output=True,
            text=True,
            cwd="/",
        ).stdout.strip()
        if self.root.resolve() not in Path(origin).resolve().parents:
            sys.exit(f"{self.label}: {self.python} imports recruit from {origin!r}, not from {self.root}")


@dataclass(frozen=True)
class Population:
    name: str
    patients: int
    practices: int
    seed: int

    @property
    def tag(self) -> str:
        return f"{self.patients}-{self.practices}-{self.seed}"

    def describe(self) -> str:
        return f"{self.name}: {self.patients:,} patients in {self.practices} practices, seed {self.seed}"


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "(not a git checkout)"


def _run(version: Version, command: list[str]) -> tuple[str, float]:
    """A command of one version, from its checkout; what it printed and how long it took."""
    start = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k not in ("RECRUIT_DATABASE_URL", "PYTHONPATH")}
    done = subprocess.run(command, capture_output=True, text=True, cwd=version.root, env=env)
    took = time.perf_counter() - start
    if done.returncode != 0:
        said = done.stdout[-2000:] + done.stderr[-3000:]
        sys.exit(f"{version.label}: {shlex.join(command)} failed:\n{said}")
    return done.stdout + done.stderr, took


# --- populations -----------------------------------------------------------------------------


def make_extract(maker: Version, population: Population, workdir: Path) -> Path:
    """The population's NDJSON extract (its fhir/ folder), made once and kept for later runs."""
    folder = workdir / f"extract-{population.tag}"
    if (folder / "fhir" / "manifest.json").exists():
        return folder / "fhir"
    log(f"generating {population.describe()} with {maker.label}'s synthetic_ehr into {folder} ...")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    code = (
        "import sys; from pathlib import Path; import synthetic_ehr; "
        "synthetic_ehr.generate(Path(sys.argv[1]), patients=int(sys.argv[2]), practices=int(sys.argv[3]), "
        "seed=int(sys.argv[4]), formats=('ndjson',))"
    )
    args = [str(partial), str(population.patients), str(population.practices), str(population.seed)]
    _, took = _run(maker, [str(maker.python), "-c", code, *args])
    partial.rename(folder)
    log(f"  generated in {took:,.1f} s")
    return folder / "fhir"


# --- one version -----------------------------------------------------------------------------


def database(workdir: Path, population: Population, version: Version) -> Path:
    return workdir / f"{population.name}-{population.tag}-{version.label}.db"


def load_and_search(version: Version, extract: Path, db: Path) -> tuple[dict[str, str], dict[str, float]]:
    """`recruit load --create` into a fresh file, then `recruit search`: what each printed, and took."""
    for leftover in db.parent.glob(db.name + "*"):
        leftover.unlink()
    printed, took = {}, {}
    printed["load"], took["load"] = _run(
        version, [str(version.recruit), "load", "--create", "--db", str(db), str(extract)]
    )
    printed["search"], took["search"] = _run(
        version,
        [
            str(version.recruit),
            "search",
            "--rules",
            str(version.rules),
            "--index-date",
            INDEX_DATE,
            "--db",
            str(db),
        ],
    )
    return printed, took


def latest_run(conn: sqlite3.Connection, schema: str = "main") -> int:
    run_id = conn.execute(f"SELECT max(id) FROM {schema}.search_run").fetchone()[0]
    if run_id is None:
        sys.exit(f"no search run in {schema}")
    return int(run_id)


def figures(db: Path) -> dict[str, Any]:
    """What the load and the search left in the database, in the order they are compared."""
    with sqlite3.connect(db) as conn:
        run_id = latest_run(conn)
        tables = [
            name
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            if name not in SEARCH_TABLES and not name.startswith("sqlite_")
        ]
        loaded = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
        flow = conn.execute(
            "SELECT step_index, step_id, kind, entering, kept, excluded, failing_alone FROM step_count "
            "WHERE run_id = ? ORDER BY step_index",
            (run_id,),
        ).fetchall()
        candidates = conn.execute(
            """
            SELECT pr.ods_code, p.source_id, r.outcome, r.rank, r.score, r.score_items
            FROM search_result r
            JOIN patient p ON p.id = r.patient_id
            JOIN practice pr ON pr.id = p.practice_id
            WHERE r.run_id = ? AND r.outcome = 'candidate'
            ORDER BY r.rank, pr.ods_code, p.source_id
            """,
            (run_id,),
        ).fetchall()
    return {
        "loaded rows": loaded,
        "flow counts": [list(row) for row in flow],
        "candidates": [list(row) for row in candidates],
    }


# --- comparing -------------------------------------------------------------------------------

RESULT_ROWS = """
    SELECT pr.ods_code, p.source_id, r.outcome, r.excluding_step, r.reason, r.evidence, r.step_mask,
           r.score, r.rank, r.score_items
    FROM {s}.search_result r JOIN {s}.patient p ON p.id = r.patient_id
    JOIN {s}.practice pr ON pr.id = p.practice_id
    WHERE r.run_id = {run}
"""
RESULT_COLUMNS = (
    "practice, source id, outcome, excluding step, reason, evidence, step mask, score, rank, score items"
)


def differing_results(before_db: Path, after_db: Path) -> tuple[int, int, list[str]]:
    """Every patient's search result, set against set in SQL (a million rows stay in SQLite)."""
    conn = sqlite3.connect(f"file:{before_db}?mode=ro", uri=True)
    try:
        conn.execute("ATTACH DATABASE ? AS after", (f"file:{after_db}?mode=ro",))
        before = RESULT_ROWS.format(s="main", run=latest_run(conn, "main"))
        after = RESULT_ROWS.format(s="after", run=latest_run(conn, "after"))
        conn.execute(f"CREATE TEMP TABLE only_before AS {before} EXCEPT {after}")
        conn.execute(f"CREATE TEMP TABLE only_after AS {after} EXCEPT {before}")
        n_before = conn.execute("SELECT count(*) FROM only_before").fetchone()[0]
        n_after = conn.execute("SELECT count(*) FROM only_after").fetchone()[0]
        shown = [
            f"  before: {row}"
            for row in conn.execute(f"SELECT * FROM only_before ORDER BY 1, 2 LIMIT {SHOWN}")
        ]
        shown += [
            f"  after:  {row}"
            for row in conn.execute(f"SELECT * FROM only_after ORDER BY 1, 2 LIMIT {SHOWN}")
        ]
        return n_before, n_after, shown
    finally:
        conn.close()


def first_differences(before: Any, after: Any) -> list[str]:
    """The first few places where two lists (by position) or dicts (by key) differ."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys = sorted(set(before) | set(after))
        pairs = [(k, before.get(k, "(none)"), after.get(k, "(none)")) for k in keys]
    else:
        longest = max(len(before), len(after))
        pairs = [
            (i, before[i] if i < len(before) else "(none)", after[i] if i < len(after) else "(none)")
            for i in range(longest)
        ]
    differing = [(k, b, a) for k, b, a in pairs if b != a]
    lines = [f"  [{k}] before {b}\n  {' ' * len(str(k))}  after  {a}" for k, b, a in differing[:SHOWN]]
    if len(differing) > SHOWN:
        lines.append(f"  ... {len(differing) - SHOWN:,} more")
    return lines


def message_differences(before: str, after: str) -> list[str]:
    import difflib

    diff = difflib.unified_diff(before.splitlines(), after.splitlines(), "before", "after", lineterm="", n=0)
    return [f"  {line}" for line in list(diff)[: 4 * SHOWN]]


def compare(population: Population, before: Version, after: Version, workdir: Path, extract: Path) -> bool:
    log(f"\n== {population.describe()}")
    dumps: dict[str, dict[str, Any]] = {}
    for version in (before, after):
        db = database(workdir, population, version)
        printed, took = load_and_search(version, extract, db)
        dump = {"version": version.describe(), "population": population.describe(), **figures(db)}
        dump["messages"] = printed
        dump_file = db.with_suffix(".json")
        dump_file.write_text(json.dumps(dump, indent=1) + "\n", encoding="utf-8")
        dumps[version.label] = dump
        log(
            f"{version.label:6}: {version.describe()}: load {took['load']:,.1f} s, "
            f"search {took['search']:,.1f} s, {len(dump['candidates']):,} candidates; figures in {dump_file}"
        )

    verdict = True
    for kind in ("loaded rows", "flow counts", "candidates"):
        lines = first_differences(dumps["before"][kind], dumps["after"][kind])
        verdict &= not lines
        log(f"{kind}: {'same' if not lines else 'DIFFERENT'}")
        for line in lines:
            log(line)
    n_before, n_after, shown = differing_results(
        database(workdir, population, before), database(workdir, population, after)
    )
    same_results = n_before == n_after == 0
    verdict &= same_results
    log(
        "every patient's search result: "
        + ("same" if same_results else f"DIFFERENT ({n_before:,} rows only before, {n_after:,} only after)")
    )
    if not same_results:
        log(f"  ({RESULT_COLUMNS})")
        for line in shown:
            log(line)
    same_messages = True
    for step in ("load", "search"):
        lines = message_differences(dumps["before"]["messages"][step], dumps["after"]["messages"][step])
        same_messages &= not lines
        log(f"what `recruit {step}` printed: {'same' if not lines else 'DIFFERENT'}")
        for line in lines:
            log(line)
    if verdict and same_messages:
        log(f"{population.name}: IDENTICAL")
    elif verdict:
        log(
            f"{population.name}: IDENTICAL flow counts, candidates and results; the messages differ "
            "(fine only where issue 20 unifies a message)"
        )
    else:
        log(f"{population.name}: NOT IDENTICAL")
    return verdict


# --- timing commands -------------------------------------------------------------------------


def timing_commands(
    population: Population, before: Version, after: Version, workdir: Path, extract: Path
) -> dict[str, dict[str, str]]:
    """The before and after commands for one search and one load, as whole processes."""
    step = Path(__file__).resolve().with_name("timed_step.py")
    commands: dict[str, dict[str, str]] = {"search": {}, "load": {}}
    for version in (before, after):
        common = [str(version.python), str(step)]
        logs = workdir / f"timing-{population.tag}-{version.label}"
        commands["search"][version.label] = shlex.join(
            [
                *common,
                "search",
                "--db",
                str(database(workdir, population, version)),
                "--rules",
                str(version.rules),
                "--index-date",
                INDEX_DATE,
                "--expect-root",
                str(version.root),
                "--log",
                f"{logs}-search.jsonl",
            ]
        )
        commands["load"][version.label] = shlex.join(
            [
                *common,
                "load",
                "--extract",
                str(extract),
                "--db",
                str(workdir / f"load-{population.tag}-{version.label}.db"),
                "--expect-root",
                str(version.root),
                "--log",
                f"{logs}-load.jsonl",
            ]
        )
    return commands


def summarise(after_log: Path, before_log: Path, warmups: int) -> int:
    """In-process seconds of each version's timed runs, and the ratio after/before run by run."""
    runs = {}
    for label, path in (("after", after_log), ("before", before_log)):
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        lines = lines[warmups:]
        if not lines:
            sys.exit(f"{path}: no runs after the {warmups} warm-up run(s)")
        runs[label] = [r["seconds"] for r in lines]
        what = ", ".join(sorted({r["step"] for r in lines}))
        log(f"{label:6} ({path}: {len(lines)} runs of {what}, not counting {warmups} warm-up run(s)):")
        for key in ("seconds", "cpu", "peak_rss_mib"):
            values = [r[key] for r in lines]
            log(
                f"  {key:13} min {min(values):9.2f}  median {statistics.median(values):9.2f}  "
                f"max {max(values):9.2f}"
            )
    ratios = [a / b for a, b in zip(runs["after"], runs["before"], strict=False) if b > 0]
    if ratios:
        log(
            f"after/before seconds, run by run: min {min(ratios):.3f}  "
            f"median {statistics.median(ratios):.3f}  max {max(ratios):.3f}"
        )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, default=Path("/work/before"))
    ap.add_argument("--after", type=Path, default=ROOT, help="default: this checkout")
    ap.add_argument("--patients", type=int, default=2000, help="bench population; 1000000 in full")
    ap.add_argument("--practices", type=int, help="default: one per 10,000 patients")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--populations", default="bench,demo")
    ap.add_argument("--workdir", type=Path, default=Path("/work/benchdata/compare"))
    ap.add_argument("--commands", action="store_true", help="and the bench population's timing commands")
    ap.add_argument("--summarise", nargs=2, type=Path, metavar=("AFTER_LOG", "BEFORE_LOG"))
    ap.add_argument("--warmups", type=int, default=1, help="--summarise: first runs in each log not counted")
    args = ap.parse_args()
    if args.summarise:
        return summarise(*args.summarise, args.warmups)

    before, after = Version("before", args.before.resolve()), Version("after", args.after.resolve())
    workdir = args.workdir.resolve()
    for version in (before, after):
        version.check()
        if version.root in workdir.parents or workdir == version.root:
            ap.error("--workdir must be outside the checkouts (generated data never goes into git)")
    workdir.mkdir(parents=True, exist_ok=True)
    practices = args.practices or max(1, round(args.patients / PER_PRACTICE))
    populations = {
        "bench": Population("bench", args.patients, practices, args.seed),
        "demo": Population("demo", **DEMO),
    }
    chosen = [p.strip() for p in args.populations.split(",") if p.strip()]
    unknown = set(chosen) - set(populations)
    if unknown:
        ap.error(f"unknown populations {sorted(unknown)}; choose from {sorted(populations)}")

    log(f"before: {before.describe()}\nafter:  {after.describe()}")
    if before.rules.read_bytes() != after.rules.read_bytes():
        log("note: the two rules/instep.yaml differ; each version searches with its own")
    identical = True
    for name in chosen:
        population = populations[name]
        extract = make_extract(before, population, workdir)
        identical &= compare(population, before, after, workdir, extract)
    log(f"\n{'IDENTICAL' if identical else 'NOT IDENTICAL'}: {', '.join(chosen)}")

    if args.commands:
        bench = populations["bench"]
        if "bench" not in chosen:  # the search commands need each version's loaded database
            ap.error("--commands needs the bench population among --populations")
        commands = timing_commands(bench, before, after, workdir, make_extract(before, bench, workdir))
        log(f"\nTiming commands for {bench.describe()} (run each pair alternately, as whole processes):")
        for step, pair in commands.items():
            for label in ("after", "before"):
                log(f"{step} {label}:\n  {pair[label]}")
        logs = workdir / f"timing-{bench.tag}"
        for stale in workdir.glob(f"timing-{bench.tag}-*.jsonl"):
            stale.unlink()  # a new sitting: the logs start empty
        log("In-process seconds of every run are appended to the --log files (emptied now); then:")
        for step in commands:
            log(
                f"  python3 {Path(__file__).resolve()} --summarise {logs}-after-{step}.jsonl "
                f"{logs}-before-{step}.jsonl"
            )
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
