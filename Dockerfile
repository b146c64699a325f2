# The gateway's image, in two stages. The build stage installs the package with the same script the tests
# use (scripts/install.sh: a virtualenv, then `pip install -c constraints.txt`); the runtime stage copies
# that tree into a slim image and runs it as a non-root user.
#
#   docker build -t embedding-gateway .                                           # base + about 170 MB
#   docker build --build-arg INSTALL_ARGS=--local -t embedding-gateway:local .    # + the model (CPU): + 1.5 GB
#   docker run -p 8000:8000 -e DASHSCOPE_API_KEY=... -e REDIS_URL=redis://... -e WORKERS=4 embedding-gateway
#
# The local variant installs torch's CPU build (torch==2.13.0+cpu) from TORCH_INDEX_URL, PyTorch's CPU
# index: PyPI's torch carries several GB of CUDA libraries that a CPU container never uses. Point it at a
# mirror of that index when download.pytorch.org is not reachable from your build machines.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG INSTALL_ARGS=""
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/embedding-gateway
COPY pyproject.toml constraints.txt README.md ./
COPY scripts/install.sh scripts/install.sh
COPY app app
RUN bash scripts/install.sh ${INSTALL_ARGS}

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin gateway \
 && mkdir -p /data/files && chown 10001:10001 /data/files
WORKDIR /opt/embedding-gateway
# HOST/PORT/WORKERS are read by `embedding-gateway serve`; with WORKERS > 1 the metrics of all worker
# processes are merged (prometheus-client multiprocess mode, in a directory under /tmp). Teams and their
# keys: a config file named by EMBEDDING_GATEWAY_CONFIG (docker-compose.yml mounts deploy/gateway/).
ENV PATH=/opt/embedding-gateway/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    WORKERS=2
USER 10001:10001
EXPOSE 8000
# Fails when /healthz does not answer, and when the kernel's OOM killer has killed a process of the
# gateway (a worker killed for memory is replaced, and would be again: the memory limit is too low).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["embedding-gateway", "healthcheck"]
ENTRYPOINT ["embedding-gateway"]
CMD ["serve"]
# Last, so that everything above is shared by both variants (and cached).
COPY --from=build /opt/embedding-gateway /opt/embedding-gateway
