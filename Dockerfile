# syntax=docker/dockerfile:1
#
# gogate, the BuzzChat WebSocket gateway, as a container image.
#
#   docker build -t gogate .
#   docker run --rm -p 8080:8080 -p 127.0.0.1:8081:8081 --stop-timeout 30 \
#       -e INTERNAL_API_KEY=... -e BACKEND_API_URL=https://api.buzzchat.example -e WORKERS=2 gogate
#
# The build stage compiles the hot path (Cython) into gogate's wheel and collects the wheels of
# every dependency; the runtime stage installs those wheels, with no compiler and no network,
# and runs as an unprivileged user. Every setting comes from the environment (docs/production.md
# and `docker run gogate python -m gogate --help` list them).
#
# Stopping: gogate drains on SIGTERM for up to SHUTDOWN_DELAY + SHUTDOWN_TIMEOUT seconds (0 + 10
# by default), while Docker kills a container 10 s after asking it to stop unless told
# otherwise: give it more (`--stop-timeout 30`, or `stop_grace_period: 30s` in Compose).

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY gogate ./gogate
COPY gogate_fast ./gogate_fast
# Fails when the extension cannot be compiled: the image never ships the slower pure twin alone.
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
    && python -m zipfile -l /wheels/gogate-*.whl | grep 'gogate_fast/_fast.*\.so' >/dev/null

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
# A fixed numeric id, so that orchestrators can check it is not root (runAsNonRoot).
RUN groupadd --system --gid 10001 gogate \
    && useradd --system --uid 10001 --gid gogate --home-dir /srv/gogate --no-create-home \
       --shell /usr/sbin/nologin gogate
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --root-user-action=ignore --find-links /wheels \
        /wheels/gogate-*.whl
COPY deploy/healthcheck.py /usr/local/lib/gogate/healthcheck.py

# Inside a container both listeners bind every interface; publish the internal port (the
# internal API and /metrics) only where the backend and Prometheus reach it, never publicly.
ENV HOST=0.0.0.0 \
    PORT=8080 \
    INTERNAL_HOST=0.0.0.0 \
    INTERNAL_PORT=8081 \
    WORKERS=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# A .env file mounted here is read too (variables set in the environment win over it).
WORKDIR /srv/gogate
USER 10001:10001
EXPOSE 8080 8081
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "/usr/local/lib/gogate/healthcheck.py"]
CMD ["python", "-m", "gogate"]
