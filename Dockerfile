# Hugging Face Space (Docker SDK) for the Unlearning Audit Lab, built from the repository as is.
# Local try-out:  docker build -t audit-lab . && docker run -p 7860:7860 audit-lab
FROM python:3.11-slim

# Spaces run the container as uid 1000.
RUN useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    LAB_SPACE=1 \
    LAB_DEMO_DIR=/home/user/demo \
    LAB_DB=/home/user/data/lab.duckdb \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False
WORKDIR /home/user/app

# Dependencies first, so code changes reuse this layer. torch comes from the CPU wheel index at
# the version pinned in requirements.txt (the image carries no CUDA libraries); the rest as pinned.
COPY --chown=user requirements.txt .
RUN pip install --user --upgrade pip \
 && pip install --user --index-url https://download.pytorch.org/whl/cpu "$(grep -E '^torch==' requirements.txt)" \
 && pip install --user -r requirements.txt

COPY --chown=user . .
# The demo world is trained while the image builds, so the Space starts in seconds.
RUN python -m lab demo build && mkdir -p /home/user/data

EXPOSE 7860
CMD ["python", "app.py"]
