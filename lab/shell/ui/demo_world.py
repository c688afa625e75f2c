"""Which demo world the web lab is on, and the one it was asked for, built in the background.

The full demo trains nine models: minutes on a laptop CPU, far longer on a loaded machine.  So a first
launch starts on the tiny demo (about 30 s to build, in the page, with its progress bar), builds the profile
it was asked for (``$LAB_DEMO_PROFILE``, default full) on a background thread whose progress the Models tab
shows, and switches every open page to it when it is ready.  Later launches find it built and start on it.

The two worlds live in different folders (:func:`lab.core.settings.demo_dir`), each build under its own file
lock, and ``demo:<name>`` follows the world in use (:func:`lab.core.settings.use_demo`).  The switch is made
by a model event (the ``MODEL_QUEUE`` group, one at a time), so no model call is running while the
references move; an audit started on the tiny world keeps its loaded models to the end.  The background
thread runs at a lower CPU priority than the page's work.  With ``$LAB_DEMO_DIR`` one folder holds the
demo: the asked-for profile is built there, in the page, as before.
"""

from __future__ import annotations

import html
import os
import threading
import time
from dataclasses import dataclass, field

from lab.core import settings
from lab.core.errors import LabError
from lab.demo.build import PROFILES, build_demo, is_built, read_manifest
from lab.shell.ui.background import progress_html

STARTER = "tiny"  # the world a first launch opens on while the asked-for one builds
# The starter's models are 64 wide: too little work per matmul to split.  On a loaded 2-core machine its build
# took 31-52 s on one thread and 75 s on two (400 s with spinning OpenMP threads).  The page's build runs in a
# model event (nothing else runs a model meanwhile), so it may set the process's thread count.
STARTER_THREADS = 1


class Stopped(Exception):
    """The lab closed while its background build ran."""


@dataclass
class Build:
    """The background build's progress, as the build reports it (read by the page's poll)."""

    profile: str
    done: int = 0
    total: int = 0
    stage: str = "starting"
    started: float = field(default_factory=time.monotonic)
    finished: bool = False
    error: str | None = None


def world_summary(profile: str) -> str:
    """``30 people, 2 layers of 64`` for a profile."""
    spec = PROFILES[profile]
    return f"{spec.people} people, {spec.shape.layers} layers of {spec.shape.hidden}"


class DemoWorlds:
    """The web lab's demo: the world in use, the asked-for one, and its background build."""

    def __init__(self, target: str | None = None, starter: str = STARTER):
        self.target = target or settings.demo_profile()
        self.starter = starter
        self.build: Build | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._switched = False  # this lab moved demo:<name> (undone on close)
        self.choose()

    @property
    def phased(self) -> bool:
        """Whether this lab starts on the starter world while the asked-for one builds (not with $LAB_DEMO_DIR,
        not when the starter is what was asked for, not once the asked-for world is built)."""
        return (settings.demo_override() is None and self.target != self.starter and self.target in PROFILES
                and settings.active_demo() != self.target)

    def current(self) -> str:
        """The profile of the world ``demo:<name>`` resolves to now."""
        manifest = read_manifest(settings.demo_dir()) or {}
        return manifest.get("profile") or (settings.active_demo() if settings.demo_override() is None else self.target)

    def choose(self) -> None:
        """Point ``demo:<name>`` at the asked-for world when it is built, else at the starter (nothing is built)."""
        if settings.demo_override() is not None or self.target == self.starter or self.target not in PROFILES:
            return
        self._use(self.target if is_built(self.target) else self.starter)

    def _use(self, profile: str) -> None:
        settings.use_demo(profile)
        self._switched = True

    def ensure(self) -> dict | None:
        """The manifest of the world in use, built first if missing (in the calling event: its tqdm bar is the
        page's progress); on a first launch, the starter, with the asked-for world's build started behind it."""
        if self.target not in PROFILES:
            raise LabError(f"unknown demo profile '{self.target}' in LAB_DEMO_PROFILE (use {', '.join(PROFILES)})")
        with self._lock:
            self.choose()
            phased = self.phased
        if not phased:
            if read_manifest(settings.demo_dir()) is None:
                build_demo(self.target, threads=STARTER_THREADS if self.target == self.starter else None)
            return read_manifest(settings.demo_dir())
        build_demo(self.starter, threads=STARTER_THREADS)
        self._start_background()
        return read_manifest(settings.demo_dir())

    def _start_background(self) -> None:
        with self._lock:
            if self.build is not None:
                return
            self.build = Build(self.target)
        threading.Thread(target=self._run, args=(self.build,), daemon=True, name="demo-build").start()

    def _run(self, build: Build) -> None:
        """The background build (its own thread, at a lower CPU priority where the system allows)."""
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):  # not Linux: the build runs at normal priority
            pass

        def progress(done: int, total: int, stage: str) -> None:
            if self._stop.is_set():
                raise Stopped("the lab closed")
            build.done, build.total, build.stage = done, total, stage

        try:
            build_demo(build.profile, progress=progress)
            build.finished = True
        except Stopped:
            build.error = "stopped: the lab closed"
        except Exception as exc:  # noqa: BLE001 - shown in the page; the lab stays on the starter world
            build.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__

    def ready(self) -> bool:
        """The asked-for world is built and the lab is not on it yet: time to switch."""
        return bool(self.build and self.build.finished and settings.active_demo() != self.target)

    def pending(self) -> bool:
        """Whether the page should keep polling: a switch may still come."""
        return self.phased and not (self.build and self.build.error)

    def switch(self) -> bool:
        """Move ``demo:<name>`` to the asked-for world once it is built (call from a model event); whether the
        lab is on it now."""
        with self._lock:
            if self.ready():
                self._use(self.target)
            return not self.phased

    def describe(self) -> str:
        """The page's line: which demo world the lab is on, and the background build's progress."""
        current = self.current()
        line = (f"<div class='lab-demo-world'>Demo world: <b>{html.escape(current)}</b>"
                + (f" ({world_summary(current)})" if current in PROFILES else "") + "</div>")
        build = self.build
        if not self.phased:
            return line
        target = f"<b>{html.escape(self.target)}</b> demo ({world_summary(self.target)})"
        if build is None:
            return line + f"<p>A quick start: the {target} is built next, in the background.</p>"
        if build.error:
            return line + (f"<p>The {target} could not be built: {html.escape(build.error)}. The lab stays on the "
                           f"{html.escape(current)} demo; <code>python -m lab demo build</code> builds it.</p>")
        if build.finished:
            return line + f"<p>The {target} is ready: switching to it…</p>"
        return (line + f"<p>A quick start: the {target} is being built in the background; the lab switches to it "
                "when it is ready.</p>"
                + progress_html(build.done, max(build.total, 1), build.started, build.stage, unit="training step"))

    def close(self) -> None:
        """Stop the background build (at its next step) and give ``demo:<name>`` back to the full demo."""
        self._stop.set()
        if self._switched:
            settings.use_demo(None)
