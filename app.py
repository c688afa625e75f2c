"""Start the Unlearning Audit Lab web app: ``python app.py`` (Hugging Face Space entry point)."""

from lab.shell.ui import launch

if __name__ == "__main__":
    launch()
