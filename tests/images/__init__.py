"""Images built (buildah) and started (podman) for real."""
