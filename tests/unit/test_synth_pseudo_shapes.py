"""The pseudonymised shapes (cprd_aurum, opensafely, omop) are as deterministic as the rest of
synthetic_ehr: the same bytes whatever the chunking or workers, and made-up CPRD ids that
depend only on the code."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from synthetic_ehr import generate, load_params
from synthetic_ehr.codes import Code
from synthetic_ehr.shapes.cprd_aurum import medcodeid, prodcodeid

FORMATS = ("cprd_aurum", "opensafely", "omop")


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_output_any_chunking_or_workers(tmp_path: Path) -> None:
    digests = []
    for chunk, workers in ((1000, 1), (41, 2)):
        out = tmp_path / f"c{chunk}w{workers}"
        params = load_params(chunk_size=chunk)
        generate(out, practices=3, patients=300, seed=11, workers=workers, params=params, formats=FORMATS)
        digests.append(_digests(out))
    assert digests[0] == digests[1]
    assert {name.split("/")[0] for name in digests[0]} >= set(FORMATS)


codes = st.builds(
    Code,
    st.text(alphabet="0123456789ABCDEFabcdef.", min_size=1, max_size=18),
    st.sampled_from(["snomedct", "readv2", "ctv3", "dmd"]),
    st.just(""),
)


@given(codes, codes)
def test_made_up_cprd_ids_are_fifteen_digits_and_depend_only_on_the_code(a: Code, b: Code) -> None:
    for make in (medcodeid, prodcodeid):
        made = make(a)
        assert len(made) == 15 and made.isdigit() and made.startswith("9")
        assert make(Code(a.code, a.system, "another term")) == made
        if (a.system, a.code) != (b.system, b.code):
            assert make(b) != made  # 10^14 ids: a clash between two codes would be a bug here
