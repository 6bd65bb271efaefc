# syntax=docker/dockerfile:1
# foyle-controller: `foylectl` in a slim, non-root image (used by deploy/ and hack/kind-up.sh).
#
# One recipe: the packages are deploy/image/packages.txt and the install step is
# deploy/image/install.sh, which
# hack/image.sh also runs (in a debootstrapped bookworm root, no registry, no Docker) to build
# the image CI deploys; it takes USER, ENV and ENTRYPOINT from this file. Keep every other
# step in deploy/image/install.sh (the build sees it as /tmp/src/image).

FROM debian:bookworm-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md constraints.txt /tmp/src/
COPY deploy/image /tmp/src/image
COPY controller /tmp/src/controller
RUN bash /tmp/src/image/install.sh /tmp/src && rm -rf /tmp/src
USER 65532:65532
ENTRYPOINT ["foylectl"]
CMD ["--help"]
