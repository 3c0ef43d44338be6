# The oci-proxy service image, for those who build it with docker. It is assembled FROM scratch
# around the static binary that scripts/build.sh compiles into the build context (with the CA
# certificates next to it):
#   scripts/build.sh dist && docker build -t oci-proxy dist
# Releases are built by scripts/release.sh instead: the same files, user and labels, for
# linux/amd64 and linux/arm64, reproducibly and without a Docker daemon.
FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=https://github.com/happy-turtle/oci-proxy
LABEL org.opencontainers.image.title="oci-proxy" \
      org.opencontainers.image.description="Gives container images a domain of their own and redirects every pull to the nearest mirror" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY oci-proxy /oci-proxy
# nobody: the service needs no privileges and no writable filesystem.
USER 65534:65534
EXPOSE 8080
ENTRYPOINT ["/oci-proxy"]
CMD ["serve", "--config", "/etc/oci-proxy/config.yaml"]
