# One image for every service (`marketpipe:local`); docker-compose.yml picks the `command:`.
# Built by `docker compose build` (BuildKit: the pip cache mounts below need it).
#
# The base is pinned to Python's minor version and Debian release that requires-python and the
# lock files were resolved for; pass --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:... to pin
# a digest where a registry is reachable (the offline stand-in has no registry digest).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# The wheel of the shared package, with the migrations (db/init) inside it as package data.
FROM base AS wheel
COPY pyproject.toml ./
COPY db/init/ db/init/
COPY marketpipe/ marketpipe/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

FROM base AS app
RUN useradd --create-home --uid 10001 --user-group marketpipe
# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY requirements.lock ./
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -r requirements.lock
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-deps --no-index /wheels/*.whl
# The services run from /app (`python -m services.<name>`; the working directory is on sys.path)
# and import the installed `marketpipe`; the wheel ships no top-level `services` package.
# Everything is root-owned and read-only to the service user.
COPY services/ services/
COPY .streamlit/ .streamlit/
USER marketpipe
