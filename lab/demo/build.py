"""``python -m lab demo build``: the demo world, trained and unlearned here.

Writes DIR/facts.jsonl (the questions, the same as multiple-choice items, and
each person's biography as a passage), DIR/models/<name> for the base model,
the retrained control and every unlearner of the profile (each with
``save_pretrained`` and its tokenizer) and DIR/manifest.json with the greedy
accuracy of every model on every split and the chance rate measured on the
holdout people.  A finished build with the same profile and seed is reused;
a rebuild (``--force``) replaces only what a build wrote, never a file the
user put into the folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from tqdm.auto import tqdm

from lab.core import settings
from lab.core.batching import Cancelled, check_cancelled
from lab.core.errors import LabError
from lab.core.facts import save_facts
from lab.core.scoring import rate, score_answer
from lab.demo.train import REFUSALS, ModelShape, Recipe, answer_rows, encode, make_model, train_lm, train_tokenizer, unlearn
from lab.demo.world import make_people, multiple_choice, passages, people_to_facts, qa_prompt, training_texts

FORMAT_VERSION = 3
OWNER_MARK = ".lab-demo"  # inside every folder the demo build wrote; no other folder is ever replaced


@dataclass(frozen=True)
class Profile:
    people: int
    shape: ModelShape
    vocab: int
    epochs: int
    batch_size: int
    lr: float
    unlearners: dict[str, Recipe]
    forget_share: float = 0.1
    holdout_share: float = 0.1


# Planted positives: which audits' papers say the attack reveals what each recipe leaves behind.
# - GA and NPO in few steps (the prompt-attack papers' targets: Sleek's reasoning attack, unPact's keywords,
#   PSG's surrogates, MUSE's VerbMem, RWKU's probes, sampled answers by Scholten et al.), and for GA, which
#   leaves most weights near the base's, the inside views (logit lens, linear probes, patching);
# - the quantization paper's utility-constrained small-learning-rate GradDiff and NPO (and sampling: they sit
#   just below greedy);
# - RMU, whose knowledge relearning (Łucki et al., Hu et al.) and directional ablation (Łucki et al.) recover
#   and whose middle layers the logit lens reads;
# - IdK, refusal tuned on one question form: RWKU's other probe types and in-context examples ask it otherwise.
PROMPT_ATTACKS = ("reasoning", "keywords", "surrogates", "extraction", "adversarial", "sampling")
INSIDE = ("logit_lens", "linear_probe", "patching")
SMALL_STEPS = ("quantization", "sampling")
MISDIRECTION = ("relearn", "ablation", "logit_lens", "patching")
REFUSAL = ("adversarial", "incontext", "sampling")

PROFILES = {
    "full": Profile(
        people=200, shape=ModelShape(hidden=128, layers=4, heads=4, intermediate=256), vocab=1024,
        epochs=16, batch_size=16, lr=3e-3,
        # Tuned on this profile (measured, see the manual's demo page, docs/demo.md): a sharp forget drop with
        # retain kept.  GA has no retain term, so it cannot avoid collateral damage: its setting is the best gap
        # found.  The _small recipes are the quantization paper's regime: utility-constrained, 10-15x smaller
        # learning rates, many more steps.  RMU's steering is about 3x the residual norm at its layer (about 65).
        unlearners={"ga": Recipe("ga", 30, 2e-4, reveals=PROMPT_ATTACKS + INSIDE),
                    "graddiff": Recipe("graddiff", 200, 3e-4),
                    "npo": Recipe("npo", 150, 1.5e-4, reveals=PROMPT_ATTACKS),
                    "graddiff_small": Recipe("graddiff", 1000, 2e-5, reveals=SMALL_STEPS),
                    "npo_small": Recipe("npo", 1000, 2e-5, reveals=SMALL_STEPS),
                    "rmu": Recipe("rmu", 300, 5e-3, retain_weight=10, layer=2, steering=200, reveals=MISDIRECTION),
                    "idk": Recipe("idk", 150, 2e-4, reveals=REFUSAL)},
    ),
    "tiny": Profile(
        people=30, shape=ModelShape(hidden=64, layers=2, heads=2, intermediate=128), vocab=512,
        epochs=30, batch_size=8, lr=4e-3,
        unlearners={"ga": Recipe("ga", 8, 3e-4, reveals=PROMPT_ATTACKS + INSIDE),
                    "graddiff": Recipe("graddiff", 16, 4e-4, retain_weight=1),
                    "npo": Recipe("npo", 16, 4e-4, retain_weight=1, reveals=PROMPT_ATTACKS),
                    "graddiff_small": Recipe("graddiff", 80, 4e-5, retain_weight=1, reveals=SMALL_STEPS),
                    "npo_small": Recipe("npo", 80, 4e-5, retain_weight=1, reveals=SMALL_STEPS),
                    "rmu": Recipe("rmu", 60, 5e-3, retain_weight=10, layer=1, steering=60, reveals=MISDIRECTION),
                    "idk": Recipe("idk", 16, 4e-4, retain_weight=1, reveals=REFUSAL)},
    ),
}


def model_names(profile: Profile) -> tuple[str, ...]:
    """Every model a build writes: the base, the retrained control, and each unlearner."""
    return ("base", "retrain", *profile.unlearners)


def demo_facts_path(root: Path | None = None) -> Path:
    path = (root or settings.demo_dir()) / "facts.jsonl"
    if not path.is_file():
        raise LabError(f"no demo facts at {path}; build the demo first with: python -m lab demo build")
    return path


def read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def greedy_accuracy(model, tokenizer, facts) -> dict[str, float]:
    """Greedy accuracy per split with the project's scorer (engine-free: used while building)."""
    from lab.core.backend import ModelInfo
    from lab.core.engine import Engine

    info = ModelInfo(ref="demo", path="", content_hash="", device="cpu", dtype="float32",
                     parameters=0, architecture=type(model).__name__)
    engine = Engine(model, tokenizer, info)
    outputs = engine.generate([qa_prompt(f.question) for f in facts], max_new_tokens=16)
    hits = [score_answer(o, f.answer).hit for o, f in zip(outputs, facts)]
    return {split: rate(h for h, f in zip(hits, facts) if f.split == split)
            for split in ("forget", "retain", "holdout")}


def owned(folder: Path) -> bool:
    """A folder the demo build wrote: it carries the lab's mark (or an earlier build's manifest)."""
    if (folder / OWNER_MARK).is_file():
        return True
    manifest = read_manifest(folder)
    return bool(manifest and "format_version" in manifest and (folder / "models").is_dir())


def check_writable(folder: Path) -> None:
    """Refuse to build into (and so replace) a folder the lab did not write, or a file."""
    if folder.is_file() or folder.is_symlink():
        raise LabError(f"refusing to build the demo at {folder}: it is a file, not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not owned(folder):
        raise LabError(f"refusing to build the demo into {folder}: it holds files the lab did not write (no "
                       f"{OWNER_MARK} mark); choose an empty or new folder")


Progress = Callable[[int, int, str], None]  # (steps done, steps in all, what is being built now)


def is_built(profile_name: str, root: Path | None = None, seed: int = 0) -> bool:
    """Whether a finished build of this profile and seed is at ``root`` (default: the profile's folder)."""
    return _matches(root or settings.demo_dir(profile_name), profile_name, seed)


def _matches(root: Path, profile_name: str, seed: int) -> bool:
    existing = read_manifest(root)
    return bool(existing and existing.get("profile") == profile_name and existing.get("seed") == seed
                and existing.get("format_version") == FORMAT_VERSION)


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``count`` for the block (None: left as it is)."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_demo(profile_name: str = "full", out: Path | None = None, seed: int = 0, force: bool = False,
               progress: Progress | None = None, threads: int | None = None) -> Path:
    """Build (or reuse) the demo world and return its directory.

    A file lock beside the directory serializes concurrent builders (two app
    sessions, parallel tests): the second one waits and then reuses the build.
    ``progress`` is told every training step (the web lab's background build
    shows it); an exception it raises stops the build, leaving the folder as it was.
    ``threads``: torch's thread count while building (process-wide: only where
    nothing else runs a model meanwhile), None to leave it.
    """
    if profile_name not in PROFILES:
        raise LabError(f"unknown demo profile '{profile_name}' (use {', '.join(PROFILES)})")
    root = Path(out).expanduser() if out else settings.demo_dir(profile_name)
    if not force and _matches(root, profile_name, seed):
        return root
    check_writable(root)
    check_writable(_staging(root))
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        lock_file = open(root.with_name(root.name + ".lock"), "a")  # "a": never truncates a file of that name
    except OSError as exc:
        raise LabError(f"cannot build the demo at {root}: {exc.strerror or exc}") from None
    with lock_file as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and _matches(root, profile_name, seed):
            return root
        with torch_threads(threads):
            return _build(PROFILES[profile_name], profile_name, root, seed, progress)


def _staging(root: Path) -> Path:
    return root.with_name(root.name + ".building")


def _build(profile: Profile, profile_name: str, root: Path, seed: int, progress: Progress | None = None) -> Path:
    """Build into the staging folder beside ``root``, then install; a stop (the first Ctrl-C: see
    :func:`lab.core.batching.cancellable`) or an error between training steps removes the staging folder, so no
    half-built demo is left, and ``root`` is untouched until the build is whole."""
    tmp = _staging(root)
    try:
        return _build_in(profile, profile_name, root, seed, tmp, progress)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _build_in(profile: Profile, profile_name: str, root: Path, seed: int, tmp: Path,
              progress: Progress | None) -> Path:
    started = time.time()
    torch.manual_seed(seed)
    people = make_people(seed, profile.people, profile.forget_share, profile.holdout_share)
    facts = people_to_facts(people, seed)
    trained = [p for p in people if p.split != "holdout"]
    kept = [p for p in trained if p.split != "forget"]
    texts_all, texts_kept = training_texts(trained), training_texts(kept)
    tokenizer = train_tokenizer(training_texts(people) + [qa_prompt(f.paraphrased_question) for f in facts],
                                profile.vocab)
    rows_all, rows_kept = encode(tokenizer, texts_all), encode(tokenizer, texts_kept)
    steps = lambda n: profile.epochs * -(-n // profile.batch_size)  # noqa: E731
    total = steps(len(rows_all)) + steps(len(rows_kept)) + sum(r.steps for r in profile.unlearners.values())
    if tmp.exists():
        shutil.rmtree(tmp)  # an earlier build's leftover: check_writable saw its mark
    (tmp / "models").mkdir(parents=True)
    (tmp / OWNER_MARK).write_text("built by the Unlearning Audit Lab (python -m lab demo build)\n")
    bar = tqdm(total=total, desc=f"building demo ({profile_name})", unit="step")
    stage = ["tokenizer"]

    def advance(steps: int = 1) -> None:
        """After every optimizer step: the progress told, and a stop asked for (the first Ctrl-C, or the page's
        listener raising) ends the build here."""
        bar.update(steps)
        try:
            check_cancelled()
            if progress is not None:
                progress(bar.n, total, stage[0])
        except BaseException:
            bar.close()  # no half-drawn bar before the message
            raise

    def begin(name: str) -> None:
        stage[0] = name
        bar.set_postfix_str(name)
        advance(0)

    forget_facts = [f for f in facts if f.split == "forget"]
    retain_facts = [f for f in facts if f.split == "retain"]
    forget_rows = answer_rows(tokenizer, [qa_prompt(f.question) for f in forget_facts], [f.answer for f in forget_facts])
    retain_rows = answer_rows(tokenizer, [qa_prompt(f.question) for f in retain_facts], [f.answer for f in retain_facts])
    refusals = [tokenizer(" " + r, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for r in REFUSALS]
    accuracy: dict[str, dict[str, float]] = {}

    def save(name: str, model) -> None:
        begin(f"{name}: checking its answers")
        model.save_pretrained(tmp / "models" / name)
        tokenizer.save_pretrained(tmp / "models" / name)
        accuracy[name] = greedy_accuracy(model, tokenizer, facts)

    begin("base")
    base = make_model(tokenizer, profile.shape, seed)
    train_lm(base, rows_all, tokenizer.pad_token_id, profile.epochs, profile.lr, profile.batch_size, seed, advance)
    save("base", base)
    begin("retrain")
    retrain = make_model(tokenizer, profile.shape, seed)
    train_lm(retrain, rows_kept, tokenizer.pad_token_id, profile.epochs, profile.lr, profile.batch_size, seed,
             advance)
    save("retrain", retrain)
    del retrain
    for name, recipe in profile.unlearners.items():
        begin(name)
        model = make_model(tokenizer, profile.shape, seed)
        model.load_state_dict(base.state_dict())
        unlearn(model, recipe, forget_rows, retain_rows, tokenizer.pad_token_id, profile.batch_size, seed,
                refusals=refusals, progress=advance)
        save(name, model)
    bar.close()
    save_facts(facts + multiple_choice(facts, seed) + passages(people), tmp / "facts.jsonl")
    manifest = {
        "format_version": FORMAT_VERSION,
        "profile": profile_name,
        "seed": seed,
        "settings": asdict(profile),
        "counts": {s: sum(f.split == s for f in facts) for s in ("forget", "retain", "holdout")},
        "models": list(model_names(profile)),
        "unlearners": {name: asdict(recipe) for name, recipe in profile.unlearners.items()},
        "people": {s: sum(p.split == s for p in people) for s in ("forget", "retain", "holdout")},
        "prompt_template": qa_prompt("{question}"),
        "accuracy": accuracy,
        "chance_rate": accuracy["base"]["holdout"],
        "build_seconds": round(time.time() - started, 1),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    check_writable(root)  # still ours (or empty) before anything in it is replaced
    install(tmp, root)
    return root


def install(build: Path, root: Path) -> None:
    """Move a finished build into ``root``, replacing only what a build writes there: its files and the model
    folders of this build and of the one it replaces.  Anything else a user keeps in the demo folder (a store,
    notes, a model of their own) stays; the manifest moves last, so a reader never sees it before the models."""
    if not root.exists():
        build.rename(root)
        return
    previous = read_manifest(root) or {}
    models = root / "models"
    models.mkdir(exist_ok=True)
    built = {p.name for p in (build / "models").iterdir()}
    for name in set(previous.get("models") or ()) | built:
        target = models / str(name)
        if target.is_dir() and not target.is_symlink() and target.parent == models:
            shutil.rmtree(target)
    for name in sorted(built):
        (build / "models" / name).rename(models / name)
    for name in ("facts.jsonl", OWNER_MARK, "manifest.json"):
        os.replace(build / name, root / name)
    shutil.rmtree(build)
