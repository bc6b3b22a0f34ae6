"""Orchestration: split patients into chunks, generate chunks (in parallel), write in order.

Each patient's random stream is derived from (seed, practice, patient index), so a chunk's
output does not depend on which worker made it or how the run was chunked; chunks are written
strictly in order, so the files are byte-identical for any chunk size or worker count. Only a
bounded number of chunks is ever in flight, so memory stays flat as the population grows.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import BinaryIO

import orjson

from . import csv_out, fhir_out, truth_out
from .codes import CodeSet, load_codes
from .nhs_number import RESERVED_CAPACITY, prepare
from .params import Params, load_params
from .people import AgeModel, Practice, make_person, make_practices
from .record import RecordModel, make_record
from .shapes import SHAPES
from .truth import EmploymentModel, make_truth
from .util import iso, stream

FHIR_TYPES = ("Patient", "Organization", "Practitioner", "Condition", "Observation", "MedicationRequest")
ALL_FORMATS = ("ndjson", "bundles", "csv")  # written by default
# Tabular extract shapes (synthetic_ehr.shapes), written when asked for by name.
KNOWN_FORMATS = ALL_FORMATS + tuple(sorted(SHAPES))


@dataclass
class GenerationSummary:
    """What a run wrote: counts per resource type and the paths of every output."""

    out: Path
    practices: int
    patients: int
    seed: int
    counts: dict[str, int] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    nhs_numbers_outside_reserved_range: bool = False


@dataclass
class _State:
    params: Params
    seed: int
    practices: list[Practice]
    codes: CodeSet
    formats: frozenset[str]
    extract: int
    emp_model: EmploymentModel
    rec_model: RecordModel
    ages: dict[int, AgeModel]


_STATE: _State | None = None


def _init(params_json: bytes, seed: int, practices: list[Practice], formats: Sequence[str]) -> None:
    """Build the per-process state (also used in-process when there are no workers)."""
    global _STATE
    params = Params.model_validate_json(params_json)
    codes = load_codes(params.codelists_dir)
    _STATE = _State(
        params=params,
        seed=seed,
        practices=practices,
        codes=codes,
        formats=frozenset(formats),
        extract=params.extract_date.toordinal(),
        emp_model=EmploymentModel(params),
        rec_model=RecordModel(params, codes),
        ages={p.index: AgeModel(params, p) for p in practices},
    )


def _work(item: tuple[int, int, int]) -> tuple[dict[str, bytes], dict[str, int]]:
    """Generate patients [start, stop) of a practice; returns bytes per output file."""
    st = _STATE
    assert st is not None, "worker not initialised"
    p_index, start, stop = item
    practice = st.practices[p_index]
    params = st.params
    dmd = params.dmd_system
    want_ndjson = "ndjson" in st.formats
    want_bundles = "bundles" in st.formats
    want_csv = "csv" in st.formats
    nd: dict[str, list[bytes]] = {t: [] for t in ("Patient", "Condition", "Observation", "MedicationRequest")}
    bundles: list[bytes] = []
    csv_chunk = csv_out.CsvChunk() if want_csv else None
    shapes = [SHAPES[f](st.extract) for f in sorted(st.formats) if f in SHAPES]
    truth_chunk = truth_out.TruthChunk(st.extract)
    ages = st.ages[p_index]
    # Bundles repeat the practice and GP resources; serialise each once per chunk.
    org_bytes = orjson.dumps(fhir_out.organization(practice))
    gp_cache: dict[str, bytes] = {}
    for i in range(start, stop):
        rng = stream(st.seed, p_index, i)
        person = make_person(rng, practice, i, params, ages, st.extract)
        truth = make_truth(rng, person, practice, params, st.emp_model, st.extract)
        rec = make_record(rng, person, practice, truth, st.rec_model, st.extract)
        if want_ndjson or want_bundles:
            res = fhir_out.patient_resources(person, practice, rec, dmd)
            if want_ndjson:
                for t, lines in res.items():
                    nd[t].extend(lines)
            if want_bundles:
                gp_bytes = gp_cache.get(person.gp.id)
                if gp_bytes is None:
                    gp_bytes = gp_cache[person.gp.id] = orjson.dumps(fhir_out.practitioner(person.gp))
                context = [org_bytes, gp_bytes]
                stamp = f"{iso(st.extract)}T00:00:00Z"
                bundles.append(fhir_out.bundle_bytes(person.id, res, context, stamp))
        if csv_chunk is not None:
            csv_chunk.add(person, practice, rec)
        for sh in shapes:
            sh.add(person, practice, rec)
        truth_chunk.add(person, practice, truth, rec)
    out: dict[str, bytes] = {}
    counts: dict[str, int] = {}
    for t, lines in nd.items():
        counts[t] = len(lines) if want_ndjson else 0
        if want_ndjson and lines:
            out[f"fhir/{t}.ndjson"] = b"\n".join(lines) + b"\n"
    if want_bundles and bundles:
        out["bundles/bundles.ndjson"] = b"\n".join(bundles) + b"\n"
        counts["Bundle"] = len(bundles)
    if csv_chunk is not None:
        out.update(csv_chunk.bytes())
    for sh in shapes:
        out.update({f"{sh.name}/{rel}": blob for rel, blob in sh.bytes().items()})
    out.update(truth_chunk.bytes())
    counts["patients"] = stop - start
    return out, counts


def _items(practices: list[Practice], chunk_size: int) -> Iterator[tuple[int, int, int]]:
    for p in practices:
        for start in range(0, p.n_patients, chunk_size):
            yield p.index, start, min(p.n_patients, start + chunk_size)


def _open_outputs(out: Path, formats: frozenset[str]) -> dict[str, BinaryIO]:
    files: dict[str, BinaryIO] = {}

    def open_(rel: str, header: bytes = b"") -> None:
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = path.open("wb", buffering=1 << 20)
        fh.write(header)
        files[rel] = fh

    if "ndjson" in formats:
        for t in FHIR_TYPES:
            open_(f"fhir/{t}.ndjson")
    if "bundles" in formats:
        open_("bundles/bundles.ndjson")
    if "csv" in formats:
        for name in csv_out.HEADERS:
            open_(f"csv/{name}.csv", csv_out.header_bytes(name))
    for name in sorted(formats & set(SHAPES)):
        for rel, header in SHAPES[name].headers().items():
            open_(f"{name}/{rel}", header)
    open_("truth/truth.csv", truth_out.header_bytes("truth"))
    open_("truth/employment_spells.csv", truth_out.header_bytes("spells"))
    return files


def _practice_truth_csv(practices: list[Practice]) -> bytes:
    lines = [
        "practice_ods,practice_index,patients,deprivation_quintile,employment_coding_rate,legacy_system,old_age_tilt"
    ]
    for p in practices:
        lines.append(
            f"{p.ods},{p.index},{p.n_patients},{p.deprivation},{p.employment_coding_rate:.4f},"
            f"{p.legacy_system},{p.old_age_tilt:.4f}"
        )
    return ("\n".join(lines) + "\n").encode()


def generate(
    out: Path,
    *,
    practices: int = 1,
    patients: int = 1000,
    seed: int = 0,
    config: Path | None = None,
    formats: Sequence[str] = ALL_FORMATS,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    params: Params | None = None,
) -> GenerationSummary:
    """Generate `patients` patients (in total) across `practices` practices into `out`.

    Writes DIR/fhir (NDJSON + manifest.json), DIR/bundles, DIR/csv and DIR/truth (ground truth,
    kept apart). `formats` picks among "ndjson", "bundles" and "csv"; truth is always written.
    `workers` defaults to the CPU count (1 means in-process). `progress(n)` is called with the
    number of patients finished since the last call. `params` (optional) overrides `config`.
    """
    unknown = set(formats) - set(KNOWN_FORMATS)
    if unknown:
        raise ValueError(f"unknown formats {sorted(unknown)}; choose from {KNOWN_FORMATS}")
    if patients < 0 or practices < 1:
        raise ValueError("need patients >= 0 and practices >= 1")
    params = params or load_params(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fmt = frozenset(formats)
    pracs = make_practices(patients, practices, seed, params)
    prepare(patients)  # NHS number table, built once before any fork
    params_json = params.model_dump_json()

    files = _open_outputs(out, fmt)
    counts: dict[str, int] = dict.fromkeys(FHIR_TYPES, 0)
    if "bundles" in fmt:
        counts["Bundle"] = 0
    counts["patients"] = 0
    try:
        if "ndjson" in fmt:
            for p in pracs:
                files["fhir/Organization.ndjson"].write(orjson.dumps(fhir_out.organization(p)) + b"\n")
                counts["Organization"] += 1
                for gp in p.gps:
                    files["fhir/Practitioner.ndjson"].write(orjson.dumps(fhir_out.practitioner(gp)) + b"\n")
                    counts["Practitioner"] += 1

        def consume(result: tuple[dict[str, bytes], dict[str, int]]) -> None:
            data, c = result
            for rel, blob in data.items():
                files[rel].write(blob)
            for k, v in c.items():
                counts[k] = counts.get(k, 0) + v
            if progress is not None:
                progress(c["patients"])

        items = list(_items(pracs, max(1, params.chunk_size)))
        n_workers = workers if workers is not None else (os.cpu_count() or 1)
        n_workers = max(1, min(n_workers, len(items) or 1))
        if n_workers == 1:
            _init(params_json.encode(), seed, pracs, sorted(fmt))
            for item in items:
                consume(_work(item))
        else:
            methods = mp.get_all_start_methods()
            ctx = mp.get_context("fork" if "fork" in methods else "spawn")
            with ctx.Pool(
                n_workers, initializer=_init, initargs=(params_json.encode(), seed, pracs, sorted(fmt))
            ) as pool:
                pending: deque[AsyncResult[tuple[dict[str, bytes], dict[str, int]]]] = deque()
                it = iter(items)
                limit = 2 * n_workers
                for item in it:
                    pending.append(pool.apply_async(_work, (item,)))
                    if len(pending) >= limit:
                        consume(pending.popleft().get())
                while pending:
                    consume(pending.popleft().get())
    finally:
        for fh in files.values():
            fh.close()

    (out / "truth" / "practices.csv").write_bytes(_practice_truth_csv(pracs))
    (out / "truth" / "params.json").write_bytes(
        orjson.dumps(
            {
                "seed": seed,
                "practices": practices,
                "patients": patients,
                # chunk_size only changes how work is split, never the output.
                "params": params.model_dump(mode="json", exclude={"chunk_size"}),
            },
            option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS,
        )
    )
    paths = {rel: out / rel for rel in files}
    if "csv" in fmt:
        (out / "csv" / "manifest.csv").write_bytes(csv_out.manifest_bytes(params.extract_date.toordinal()))
        paths["csv/manifest.csv"] = out / "csv" / "manifest.csv"
    for name in sorted(fmt & set(SHAPES)):
        for path in SHAPES[name].finish(out / name, pracs, params.extract_date.toordinal()):
            paths[str(path.relative_to(out))] = path
    paths["truth/practices.csv"] = out / "truth" / "practices.csv"
    paths["truth/params.json"] = out / "truth" / "params.json"
    if "ndjson" in fmt:
        man = fhir_out.manifest(
            f"{params.extract_date.isoformat()}T00:00:00Z",
            {t: counts.get(t, 0) for t in FHIR_TYPES},
            {t: f"{t}.ndjson" for t in FHIR_TYPES},
        )
        (out / "fhir" / "manifest.json").write_bytes(orjson.dumps(man, option=orjson.OPT_INDENT_2))
        paths["fhir/manifest.json"] = out / "fhir" / "manifest.json"
    return GenerationSummary(
        out=out,
        practices=practices,
        patients=patients,
        seed=seed,
        counts=counts,
        paths=paths,
        nhs_numbers_outside_reserved_range=patients > RESERVED_CAPACITY,
    )
