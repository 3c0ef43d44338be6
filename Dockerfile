# The oci-proxy service image. It is assembled FROM scratch around the static binary that
# scripts/build.sh compiles into the build context (with the CA certificates next to it):
#   scripts/build.sh dist && docker build -t oci-proxy dist
FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="oci-proxy" \
      org.opencontainers.image.description="Gives container images a domain of their own and redirects every pull to the nearest mirror" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY oci-proxy /oci-proxy
# nobody: the service needs no privileges and no writable filesystem.
USER 65534:65534
EXPOSE 8080
ENTRYPOINT ["/oci-proxy"]
CMD ["serve", "--config", "/etc/oci-proxy/config.yaml"]
