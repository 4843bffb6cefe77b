FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      libpango-1.0-0 libpangoft2-1.0-0 poppler-utils fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/daily-index
COPY pyproject.toml README.md ./
COPY daily_index ./daily_index
# dagster-postgres follows dagster's 0.(x+16) versioning, like dagster-aws.
RUN pip install --no-cache-dir . "dagster-postgres==0.29.27"
COPY dagster.yaml deploy/storage-postgres.yaml /tmp/instance/
RUN mkdir -p /opt/dagster/home \
    && cat /tmp/instance/dagster.yaml /tmp/instance/storage-postgres.yaml \
       > /opt/dagster/home/dagster.yaml
COPY workspace.docker.yaml ./
