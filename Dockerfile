# A container recipe for focal serve. NOT TESTED: it was written where no container engine was
# available, so it has never been built or run; treat it as a starting point and check it.
#
#   docker build -t focal .
#   docker run -p 8080:8080 -v /srv/images:/images:ro focal
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FOCAL_MODEL_DIR=/opt/focal/models FOCAL_CACHE_DIR=/var/cache/focal

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# pyvips-binary brings libvips; the face model is fetched and converted once, at build time
RUN pip install "." && focal models fetch && rm -rf /src

RUN useradd --system --home-dir /nonexistent focal && mkdir -p /var/cache/focal \
    && chown focal /var/cache/focal
USER focal
WORKDIR /
EXPOSE 8080
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz')"
CMD ["focal", "serve", "--host", "0.0.0.0", "--port", "8080", "--root", "/images", "--no-playground"]
