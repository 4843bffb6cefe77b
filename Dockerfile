# The image of docker-compose.yml's Dagster services (code server, webserver, daemon).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      libpango-1.0-0 libpangoft2-1.0-0 poppler-utils fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/daily-index
COPY pyproject.toml README.md ./
COPY daily_index ./daily_index
# pyproject pins dagster and dagster-postgres (PostgreSQL storage) in lockstep.
RUN pip install --no-cache-dir .
# The instance: the repository's dagster.yaml with Dagster's storage in PostgreSQL appended.
COPY dagster.yaml deploy/storage-postgres.yaml /tmp/instance/
RUN mkdir -p /opt/dagster/home \
    && cat /tmp/instance/dagster.yaml /tmp/instance/storage-postgres.yaml \
       > /opt/dagster/home/dagster.yaml
ENV DAGSTER_HOME=/opt/dagster/home
COPY workspace.docker.yaml ./
