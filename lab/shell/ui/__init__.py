"""The web lab (Gradio): ``build_app`` builds it, ``start``/``running`` serve it, ``launch`` is ``python app.py``."""

from lab.shell.ui.app import build_app, launch, running, start

__all__ = ["build_app", "launch", "running", "start"]
