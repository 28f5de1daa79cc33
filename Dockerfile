# One image for every role: `drumbeat api` (the default command), `drumbeat worker`, `drumbeat migrate`,
# `drumbeat keys ...`. docker-compose.yml runs it; health checks live there, not here.

# Build stage: the wheel (with sql/ force-included as app/sql), so no source tree or build backend ships.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app/ app/
COPY workers/ workers/
COPY sql/ sql/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels/ /wheels/
RUN pip install /wheels/*.whl \
    && rm -rf /wheels \
    && groupadd --system --gid 10001 drumbeat \
    && useradd --system --uid 10001 --gid drumbeat --create-home --home-dir /home/drumbeat \
       --shell /usr/sbin/nologin drumbeat
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /home/drumbeat
EXPOSE 8000
ENTRYPOINT ["drumbeat"]
CMD ["api", "--host", "0.0.0.0"]
