# ig-gate sidecar image: `ig-gate serve` on port 8181 (client) and 8182 (admin: Data API, /metrics, /v1/status;
# loopback unless server.admin_host and server.admin_auth are set) as a non-root user.
# Same install as the README (pip install of the project); the embedded DB-IP country database
# (geo/data/*.mmdb, CC BY 4.0, see geo/data/NOTICE) ships inside the package as package data.
# Mount the config at /etc/ig-gate/ig-gate.yaml (keys, JWKS, bundle source) or set IG_GATE_* env vars.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    IG_GATE_SERVER__PORT=8181

WORKDIR /src
COPY pyproject.toml README.md ./
COPY errors/ errors/
COPY bundles/ bundles/
COPY geo/ geo/
COPY middleware/ middleware/
COPY sidecar/ sidecar/
RUN pip install . \
    && rm -rf /src \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/ig-gate --create-home ig-gate

WORKDIR /var/lib/ig-gate
USER 10001:10001
EXPOSE 8181 8182

HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('IG_GATE_SERVER__PORT', '8181'), timeout=2)"]

ENTRYPOINT ["ig-gate", "serve"]
CMD ["--config", "/etc/ig-gate/ig-gate.yaml", "--host", "0.0.0.0"]
