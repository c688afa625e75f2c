"""Start the Unlearning Audit Lab web app: ``python app.py`` (Hugging Face Space entry point)."""

from lab.core import settings

settings.share_cpu()  # before torch is imported

from lab.shell.ui import launch  # noqa: E402

if __name__ == "__main__":
    launch()
