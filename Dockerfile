# syntax=docker/dockerfile:1
#
# Tern in a container: a static binary on a distroless base, run as a
# non-root user, configured by /etc/tern/tern.yaml (deploy/docker.yaml)
# and TERN_* environment variables.
#
#   docker build -t tern .
#   docker run --rm -p 1883:1883 -p 18083:18083 \
#     -e TERN_AUTH_ALLOW_ANONYMOUS=true -e TERN_ADMIN_TOKEN="$(openssl rand -hex 16)" tern
#
# It runs as uid 65532 (distroless "nonroot"): files mounted into it, such
# as a password file (mode 0600 from tern passwd), must belong to that uid
# (chown 65532:65532 passwd).
#
# The image listens on every interface, so it starts only once you choose
# how clients log in (README.md, "Docker"): a password file
# (TERN_AUTH_PASSWORD_FILE) or anonymous access on purpose
# (TERN_AUTH_ALLOW_ANONYMOUS=true), and a token or API keys for the admin
# API (TERN_ADMIN_TOKEN, TERN_ADMIN_API_KEYS).

FROM docker.io/library/golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -buildvcs=false -trimpath -ldflags="-s -w" -o /out/usr/local/bin/tern ./cmd/tern \
 && mkdir -p /out/etc/tern /out/var/lib/tern \
 && cp deploy/docker.yaml /out/etc/tern/tern.yaml

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/usr/local/bin/tern /usr/local/bin/tern
COPY --from=build /out/etc/tern /etc/tern
COPY --from=build --chown=65532:65532 /out/var/lib/tern /var/lib/tern
# Numeric, so that Kubernetes can check runAsNonRoot.
USER 65532:65532
WORKDIR /var/lib/tern
ENV TERN_CONFIG=/etc/tern/tern.yaml
# The embedded store (persistence.data_dir): mount a volume to keep
# sessions and retained messages across containers.
VOLUME ["/var/lib/tern"]
# MQTT, MQTT over TLS, WebSocket, secure WebSocket, admin API and /metrics.
EXPOSE 1883 8883 8083 8084 18083
# Healthy once /readyz answers 200 (the image has no curl): tern
# healthcheck finds admin.listen and the admin credentials where tern serve
# does (TERN_CONFIG, TERN_ADMIN_* variables). A large store takes a while
# to restore; /readyz answers 503 meanwhile, within the start period.
HEALTHCHECK --interval=10s --timeout=5s --start-period=2m --retries=3 \
    CMD ["/usr/local/bin/tern", "healthcheck", "--timeout", "3s"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tern"]
CMD ["serve"]
