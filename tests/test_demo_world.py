"""Which demo world ``demo:<name>`` means: the CLI's full demo, the web lab's tiny start while the full one builds.

The first launch end to end (the page usable on the tiny world, the background build's progress, the switch)
is driven in the browser: tests/test_ui_browser.py::test_first_launch_opens_on_the_tiny_demo_and_switches_when_the_asked_for_one_is_built.
"""

from __future__ import annotations

import pytest

from lab.core import settings
from lab.core.errors import LabError
from lab.core.refs import parse_ref


@pytest.fixture()
def fresh_cache(tmp_path, monkeypatch):
    """A machine with no demo built: the user cache is an empty folder, no $LAB_DEMO_DIR."""
    monkeypatch.delenv("LAB_DEMO_DIR", raising=False)
    monkeypatch.delenv("LAB_DEMO_PROFILE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "unlearning-audit-lab"


def test_the_cli_resolves_demo_models_in_the_full_demo(fresh_cache):
    assert settings.active_demo() == "full"
    assert settings.demo_dir() == fresh_cache / "demo" and settings.demo_dir("tiny") == fresh_cache / "demo-tiny"
    assert parse_ref("demo:npo").location == str(fresh_cache / "demo" / "models" / "npo")


def test_a_first_launch_points_demo_models_at_the_tiny_world_until_the_lab_closes(fresh_cache):
    from lab.shell.ui.demo_world import DemoWorlds

    worlds = DemoWorlds()  # asked for the full demo, none built: the lab starts on the tiny one
    try:
        assert worlds.phased and worlds.pending() and not worlds.ready()
        assert parse_ref("demo:npo").location == str(fresh_cache / "demo-tiny" / "models" / "npo")
        line = worlds.describe()
        assert "Demo world: <b>tiny</b> (30 people, 2 layers of 64)" in line
        assert "the <b>full</b> demo (200 people, 4 layers of 128) is built next, in the background" in line
        assert worlds.switch() is False  # nothing built yet: no switch
        assert settings.active_demo() == "tiny"
    finally:
        worlds.close()
    assert settings.active_demo() == "full" and settings.demo_dir() == fresh_cache / "demo"


def test_a_demo_folder_named_by_the_environment_is_used_as_it_is(tiny_demo, fresh_cache, monkeypatch):
    from lab.shell.ui.demo_world import DemoWorlds

    monkeypatch.setenv("LAB_DEMO_DIR", str(tiny_demo))
    worlds = DemoWorlds()
    try:
        assert not worlds.phased and not worlds.pending()
        assert worlds.ensure()["profile"] == "tiny" and worlds.current() == "tiny"
        assert worlds.describe() == "<div class='lab-demo-world'>Demo world: <b>tiny</b> (30 people, 2 layers of 64)</div>"
        assert settings.demo_dir() == tiny_demo
    finally:
        worlds.close()


def test_an_unknown_demo_profile_is_a_clear_error(fresh_cache, monkeypatch):
    from lab.shell.ui.demo_world import DemoWorlds

    monkeypatch.setenv("LAB_DEMO_PROFILE", "huge")
    worlds = DemoWorlds()  # the lab still starts; loading the demo pair says what is wrong (in the page)
    try:
        assert not worlds.phased and settings.active_demo() == "full"
        with pytest.raises(LabError, match="unknown demo profile 'huge' in LAB_DEMO_PROFILE"):
            worlds.ensure()
    finally:
        worlds.close()
