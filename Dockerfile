# Build: docker build -t invalidator .
# Run:   docker run --rm -p 8080:8080 -v $PWD/rules.yaml:/etc/invalidator/rules.yaml:ro \
#          -e INVALIDATOR_RULES=/etc/invalidator/rules.yaml -e REDIS_URL=... -e NATS_URL=... invalidator
# `run` refuses to start without INVALIDATOR_RULES. The image ships example
# rules files, /etc/invalidator/rules.example.yaml (testdata/rules.yaml) and,
# with a cdc section for `invalidator cdc`, rules-cdc.example.yaml
# (testdata/rules-cdc.yaml), to try it.

# ---- builder ---------------------------------------------------------------
# go.mod says go 1.26.8: the image has exactly that toolchain, and
# GOTOOLCHAIN=local makes the build fail rather than download another one.
FROM golang:1.26.8-bookworm AS builder
ENV GOTOOLCHAIN=local
WORKDIR /src

# Download modules first so this layer is reused while go.mod/go.sum are unchanged.
COPY go.mod go.sum ./
RUN go mod download && go mod verify

COPY . .
# Static, reproducible binary (no cgo, no local paths, stripped).
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/invalidator ./cmd/invalidator

# ---- runtime ---------------------------------------------------------------
# Distroless static: no shell, no libc; runs as the nonroot user (uid/gid 65532).
FROM gcr.io/distroless/static-debian12:nonroot

COPY --from=builder /out/invalidator /invalidator
COPY testdata/rules.yaml /etc/invalidator/rules.example.yaml
COPY testdata/rules-cdc.yaml /etc/invalidator/rules-cdc.example.yaml

ENV LOG_FORMAT=json

# Health (GET /health) and metrics HTTP server (HTTP_ADDR, default :8080).
EXPOSE 8080

USER nonroot:nonroot
ENTRYPOINT ["/invalidator"]
CMD ["run"]
