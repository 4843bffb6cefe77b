FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      libpango-1.0-0 libpangoft2-1.0-0 poppler-utils fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/daily-index
COPY pyproject.toml README.md ./
COPY daily_index ./daily_index
RUN pip install --no-cache-dir .
COPY dagster.yaml /opt/dagster/home/dagster.yaml
COPY workspace.docker.yaml ./
