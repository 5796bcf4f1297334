# Infemeral worker image for RunPod serverless (see deploy/README.md).
#
#   GPU base (default):  docker build -t infemeral-worker .
#   CPU image:           docker build -t infemeral-worker:cpu \
#                          --build-arg BUILD_IMAGE=debian:bookworm \
#                          --build-arg RUNTIME_IMAGE=debian:bookworm-slim .
#   Bundle baked in:     docker build --build-arg BUNDLE=path/in/context/server \
#                          --build-arg BUNDLE_ENV=/opt/infemeral/server .
#
# Without BUNDLE the worker reads its server bundle from the network volume
# (INFEMERAL_BUNDLE=/runpod-volume/infemeral/server). The build stage and the
# runtime stage call the scripts in deploy/, which CI checks exist.
ARG BUILD_IMAGE=nvidia/cuda:12.4.1-devel-ubuntu22.04
ARG RUNTIME_IMAGE=nvidia/cuda:12.4.1-runtime-ubuntu22.04

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY . .
RUN ./deploy/docker-build.sh /out

FROM ${RUNTIME_IMAGE}
ARG BUNDLE=deploy/bundle-placeholder
ARG BUNDLE_ENV=/runpod-volume/infemeral/server
COPY deploy/runtime-deps.sh /tmp/runtime-deps.sh
COPY --from=build /out/infemeral-worker /usr/local/bin/infemeral-worker
RUN /tmp/runtime-deps.sh /usr/local/bin/infemeral-worker && rm /tmp/runtime-deps.sh \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin infemeral
COPY ${BUNDLE} /opt/infemeral/server
ENV INFEMERAL_BUNDLE=${BUNDLE_ENV} \
    INFEMERAL_KV_DIR=/runpod-volume/infemeral-kv \
    OMP_NUM_THREADS=8
USER 10001
# No subcommand: RunPod queue mode (RUNPOD_WEBHOOK_GET_JOB is set by RunPod).
# For a load-balancer endpoint, set the template's start command to "lb".
ENTRYPOINT ["/usr/local/bin/infemeral-worker"]
