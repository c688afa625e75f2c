"""The field's benchmarks read whole from a local folder: ``tofu:``, ``muse:``, ``rwku:``, ``wmdp:``.

A suite reference is ``NAME:DIR[:SUBSET]``.  ``DIR`` is a folder holding the
benchmark's own files as its repository or the Hugging Face hub ships them
(JSON arrays, JSON Lines, Parquet, or a folder of Parquet shards per
config); a hub dataset id whose snapshot is in the local hub cache works too
(``tofu:locuslab/TOFU``).  Every split a suite has is mapped onto the lab's
vocabulary (forget, retain, holdout), each item keeps its ``subset`` (which
file it came from) and its kind:

- TOFU (``tofu:DIR[:forget10]``): ``forgetNN[_perturbed]`` forget, ``holdoutNN``
  holdout, ``retain_perturbed`` (else ``retain{100-NN}``) retain, and the
  utility sets ``real_authors[_perturbed]``, ``world_facts[_perturbed]`` as
  retain (the option files as multiple choice).  TOFU has no entity field:
  each author's 20 consecutive questions are one block, and the author's
  name is the capitalized name that recurs in the block (see
  :func:`tofu_entities`).
- MUSE (``muse:DIR[:news]``, also the early corpus names ``bbc`` and ``hp``):
  ``knowmem`` forget/retain QA (``retain_qa`` or ``retain2_qa``) with the ICL
  examples kept as few-shot examples, ``verbmem`` continuations, ``privleak``
  forget/holdout/retain texts, ``raw`` forget passages.
- RWKU (``rwku:DIR[:TARGET]``): per target, ``forget_level1-3`` probes (with
  each probe's level and type), ``neighbor_level1-2`` as retain, MIA texts
  (``forget_mia`` forget, ``retain_mia`` retain) and ``retain_mmlu`` as
  multiple choice.  ``TARGET`` is ``1_Stephen_King``, ``Stephen King`` or ``1``.
- WMDP (``wmdp:DIR[:bio]``): multiple-choice forget questions (``question``,
  ``choices``, ``answer`` index) per subject (bio, chem, cyber).

A missing required file, a folder of the wrong layout or a file of mixed
schemas fails with one line naming the file and the field.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lab.core.errors import LabError
from lab.core.facts.model import Fact, FactSet, check_limit, combined_sha256, file_sha256
from lab.core.facts.readers import check_unique, read_facts

SUITES = ("tofu", "muse", "rwku", "wmdp")
HUB_REPOS = {"tofu": "locuslab/TOFU", "muse": "muse-bench/MUSE-News", "rwku": "jinzhuoran/RWKU",
             "wmdp": "cais/wmdp"}
TABLE_SUFFIXES = (".json", ".jsonl", ".parquet")
TOFU_BLOCK = 20  # TOFU: 20 questions per fictitious author, in order


@dataclass(frozen=True)
class Part:
    """One file (or shard set) of a suite and how its rows map onto facts."""

    name: str  # the benchmark's own file name, without suffix
    split: str
    subset: str
    required: bool = False
    kind: str = ""  # force a kind (a bare list of texts is text anyway)


def is_suite(reference: str) -> bool:
    return reference.split(":", 1)[0] in SUITES and ":" in reference


def parse_suite(reference: str) -> tuple[str, Path, str | None]:
    """``NAME:DIR[:SUBSET]`` -> (name, folder, subset); the folder may be a cached hub dataset id."""
    name, _, rest = reference.partition(":")
    if name not in SUITES or not rest:
        raise LabError(f"'{reference}': a suite is {'|'.join(SUITES)}:DIR[:SUBSET]")
    folder, subset = rest, None
    head, sep, tail = rest.rpartition(":")
    if sep and head and not Path(rest).expanduser().exists():
        folder, subset = head, tail or None
    path = Path(folder).expanduser()
    if not path.exists():
        path = _hub_snapshot(folder) or path
    if not path.is_dir():
        raise LabError(f"{name}: folder not found: {folder}")
    return name, path, subset


def _hub_snapshot(repo_id: str) -> Path | None:
    """The local hub-cache snapshot of a dataset repository, if one was downloaded before."""
    if not re.match(r"^[\w.-]+/[\w.-]+$", repo_id):
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, repo_type="dataset", local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the cache (or no hub library): not a folder then
        return None


def find_table(root: Path, name: str) -> list[Path]:
    """The files of one table: ``name.json``/``.jsonl``/``.parquet``, or the shards in a folder ``name/``."""
    for base in (root, root / "data"):
        for suffix in TABLE_SUFFIXES:
            if (base / f"{name}{suffix}").is_file():
                return [base / f"{name}{suffix}"]
        folder = base / name
        if folder.is_dir():
            shards = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in TABLE_SUFFIXES)
            if shards:
                return shards
    return []


def read_parts(root: Path, parts: list[Part], per_split: int | None, prefix: str,
               label: str) -> tuple[list[Fact], list[str], list[str]]:
    """Facts of every part found under ``root``; the file hashes read and a warning per optional part missing."""
    facts: list[Fact] = []
    hashes: list[str] = []
    warnings: list[str] = []
    for part in parts:
        files = find_table(root, part.name)
        if not files:
            if part.required:
                raise LabError(f"{label}: missing {part.name} (.json, .jsonl or .parquet) in {root}")
            warnings.append(f"{label}: no {part.name} file; its {part.split} items are left out")
            continue
        defaults = {"split": part.split, "subset": part.subset, **({"kind": part.kind} if part.kind else {})}
        for file in files:
            facts += read_facts(file, per_split, defaults, prefix=f"{prefix}{part.name}/")
            hashes.append(file_sha256(file))
    return facts, hashes, warnings


# ------------------------------------------------------------------------ TOFU
_NAME = re.compile(r"\b([A-Z][\w'’-]+(?:\s+(?:[A-Z][\w'’-]+|al-|Al-|de|van|von|bin)){1,4})")


def tofu_entities(facts: list[Fact]) -> list[Fact]:
    """Each block of 20 consecutive questions (one author) gets the name that recurs most in it.

    A capitalized name of 2-5 words counts once per question or answer that contains it; the most
    frequent one in the block names the author when it appears in at least 3 items (TOFU's answers
    name the author almost every time).
    """
    out: list[Fact] = []
    for start in range(0, len(facts), TOFU_BLOCK):
        block = facts[start:start + TOFU_BLOCK]
        counts: Counter[str] = Counter()
        for fact in block:
            names = {re.sub(r"['’]s$", "", n) for n in _NAME.findall(f"{fact.question} {fact.answer}")}
            counts.update(names)
        best = counts.most_common(1)
        entity = best[0][0] if best and best[0][1] >= 3 else ""
        out += [Fact(**{**f.__dict__, "entity": f.entity or entity}) for f in block]
    return out


def tofu(root: Path, subset: str | None, per_split: int | None) -> FactSet:
    subset = subset or "forget10"
    match = re.fullmatch(r"forget(\d\d)", subset)
    if not match:
        raise LabError(f"tofu: subset must be forget01, forget05 or forget10, got '{subset}'")
    share = int(match.group(1))
    forget_name = f"{subset}_perturbed" if find_table(root, f"{subset}_perturbed") else subset
    retain_name = "retain_perturbed" if find_table(root, "retain_perturbed") else f"retain{100 - share:02d}"
    qa_parts = [Part(forget_name, "forget", subset, required=True), Part(f"holdout{share:02d}", "holdout", "holdout"),
                Part(retain_name, "retain", "retain")]
    utility = [Part("real_authors_perturbed", "retain", "real_authors"),
               Part("world_facts_perturbed", "retain", "world_facts"),
               Part("real_authors", "retain", "real_authors_mc"), Part("world_facts", "retain", "world_facts_mc")]
    facts, hashes, warnings = read_parts(root, qa_parts, per_split, "tofu/", "tofu")
    facts = tofu_entities_by_subset(facts)
    more, more_hashes, more_warnings = read_parts(root, utility, per_split, "tofu/", "tofu")
    return FactSet(facts + more, str(root), combined_sha256(hashes + more_hashes), warnings + more_warnings, "tofu")


def tofu_entities_by_subset(facts: list[Fact]) -> list[Fact]:
    """Entities derived per file (blocks restart with each file)."""
    out: list[Fact] = []
    for subset in dict.fromkeys(f.subset for f in facts):
        out += tofu_entities([f for f in facts if f.subset == subset])
    return out


# ------------------------------------------------------------------------ MUSE
MUSE_CORPORA = {"news": "news", "bbc": "news", "books": "books", "hp": "books"}


def _muse_corpus(root: Path, subset: str | None) -> tuple[Path, str]:
    if (root / "knowmem").is_dir() or (root / "verbmem").is_dir() or (root / "privleak").is_dir():
        return root, root.name
    names = [subset] if subset else list(MUSE_CORPORA)
    for name in names:
        if name not in MUSE_CORPORA:
            raise LabError(f"muse: corpus must be one of {', '.join(MUSE_CORPORA)}, got '{name}'")
        for folder in (root / name, root / "data" / name):
            if folder.is_dir():
                return folder, name
    raise LabError(f"muse: no corpus folder ({', '.join(names)}) with knowmem, verbmem or privleak in {root}")


def muse(root: Path, subset: str | None, per_split: int | None) -> FactSet:
    corpus, name = _muse_corpus(root, subset)
    retain_qa = "knowmem/retain_qa" if find_table(corpus, "knowmem/retain_qa") else "knowmem/retain2_qa"
    retain_texts = "privleak/retain" if find_table(corpus, "privleak/retain") else "privleak/retain2"
    parts = [Part("knowmem/forget_qa", "forget", "knowmem"), Part(retain_qa, "retain", "knowmem"),
             Part("verbmem/forget", "forget", "verbmem", kind="continuation"),
             Part("privleak/forget", "forget", "privleak", kind="text"),
             Part("privleak/holdout", "holdout", "privleak", kind="text"),
             Part(retain_texts, "retain", "privleak", kind="text")]
    facts, hashes, warnings = read_parts(corpus, parts, per_split, f"muse-{name}/", f"muse {name}")
    raw = [p for p in (corpus / "raw" / "forget.json", corpus / "raw" / "forget.txt") if p.is_file()][:1]
    for file in raw:
        facts += read_facts(file, per_split, {"split": "forget", "subset": "raw", "kind": "text"},
                            prefix=f"muse-{name}/raw/")
        hashes.append(file_sha256(file))
    if not facts:
        raise LabError(f"muse {name}: no knowmem, verbmem, privleak or raw files in {corpus}")
    examples = {}
    for split in ("forget", "retain"):
        for file in find_table(corpus, f"knowmem/{split}_qa_icl"):
            examples[f"knowmem_{split}"] = [(f.question, f.answer) for f in read_facts(file, None, {"split": split})]
    return FactSet(facts, str(corpus), combined_sha256(hashes), warnings, "muse", examples)


# ------------------------------------------------------------------------ RWKU
RWKU_PARTS = [Part("forget_level1", "forget", "forget_level1", required=True), Part("forget_level2", "forget",
              "forget_level2"), Part("forget_level3", "forget", "forget_level3"),
              Part("neighbor_level1", "retain", "neighbor_level1"), Part("neighbor_level2", "retain", "neighbor_level2"),
              Part("forget_mia", "forget", "mia", kind="text"), Part("retain_mia", "retain", "mia", kind="text"),
              Part("retain_mmlu", "retain", "mmlu", kind="mc")]


def _rwku_targets(root: Path) -> list[Path]:
    if find_table(root, "forget_level1"):
        return [root]
    base = root / "Target" if (root / "Target").is_dir() else root
    found = [p for p in base.iterdir() if p.is_dir() and find_table(p, "forget_level1")]
    return sorted(found, key=lambda p: (int(p.name.split("_")[0]) if p.name.split("_")[0].isdigit() else 10**9,
                                        p.name))


def _pick_target(targets: list[Path], wanted: str) -> list[Path]:
    key = wanted.strip().replace(" ", "_").lower()
    for target in targets:
        number, _, name = target.name.partition("_")
        if key in (target.name.lower(), name.lower(), number):
            return [target]
    known = ", ".join(t.name for t in targets[:5])
    raise LabError(f"rwku: no target '{wanted}' (targets: {known}{', ...' if len(targets) > 5 else ''})")


def rwku(root: Path, subset: str | None, per_split: int | None) -> FactSet:
    targets = _rwku_targets(root)
    if not targets:
        raise LabError(f"rwku: no target folder with forget_level1 in {root} (expected Target/<n>_<Name>/)")
    if subset:
        targets = _pick_target(targets, subset)
    facts: list[Fact] = []
    hashes: list[str] = []
    warnings: list[str] = []
    for target in targets:
        got, got_hashes, got_warnings = read_parts(target, RWKU_PARTS, per_split, f"rwku/{target.name}/",
                                                   f"rwku {target.name}")
        facts += [Fact(**{**f.__dict__, "entity": ""}) if f.subset == "mmlu" else f for f in got]
        hashes += got_hashes
        warnings += got_warnings
    return FactSet(facts, str(root), combined_sha256(hashes), warnings, "rwku")


# ------------------------------------------------------------------------ WMDP
WMDP_SUBJECTS = ("bio", "chem", "cyber")


def wmdp(root: Path, subset: str | None, per_split: int | None) -> FactSet:
    subjects = [subset] if subset else list(WMDP_SUBJECTS)
    if subset and subset not in WMDP_SUBJECTS:
        raise LabError(f"wmdp: subject must be one of {', '.join(WMDP_SUBJECTS)}, got '{subset}'")
    facts: list[Fact] = []
    hashes: list[str] = []
    for subject in subjects:
        names = (f"wmdp-{subject}", f"wmdp_{subject}", subject)
        files = next((found for name in names if (found := find_table(root, name))), [])
        for file in files:
            facts += read_facts(file, per_split, {"split": "forget", "subset": subject, "kind": "mc"},
                                prefix=f"wmdp/{subject}/")
            hashes.append(file_sha256(file))
    if not facts:
        raise LabError(f"wmdp: no wmdp-{'|'.join(subjects)} file (.json, .jsonl or .parquet) in {root}")
    return FactSet(facts, str(root), combined_sha256(hashes), [], "wmdp")


READERS: dict[str, Callable[[Path, str | None, int | None], FactSet]] = {
    "tofu": tofu, "muse": muse, "rwku": rwku, "wmdp": wmdp}


def load_suite(reference: str, per_split: int | None = None) -> FactSet:
    """Every split and item kind of a benchmark suite (see the module docstring)."""
    if per_split is not None:
        check_limit(per_split)
    name, root, subset = parse_suite(reference)
    facts = READERS[name](root, subset, per_split)
    check_unique(facts.facts, reference)
    facts.source = reference
    return facts
