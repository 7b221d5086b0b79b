# A JupyterHub single-user image with ssh access through jupyter-sshd-proxy.
#   docker build -t my-user-image .
# Host keys are made at run time, per user, in ~/.local/share/jupyter/sshd_proxy:
# nothing secret or host-key-like is baked into the image.
FROM quay.io/jupyter/base-notebook:2025-03-14

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

USER 0

# sshd (run by each user, never as root) and rsync for `rsync -e ssh`.
# The package makes host keys under /etc/ssh: remove them, they are unused.
# Versions come from the dated base image's Ubuntu release, as in docker-stacks.
# hadolint ignore=DL3008
RUN apt-get update --yes && \
    apt-get install --yes --no-install-recommends openssh-server rsync && \
    rm -f /etc/ssh/ssh_host_* && \
    apt-get clean && rm -rf /var/lib/apt/lists/*

# NB_UID is numeric (1000 in docker-stacks); hadolint cannot see through the variable.
# hadolint ignore=DL3066
USER ${NB_UID}

# Both distributions of the checkout: the server (.) and the client it depends
# on (client/), named on one line so that pip takes the client from there.
COPY --chown=${NB_UID}:${NB_GID} . /tmp/jupyter-sshd-proxy
RUN pip install --no-cache-dir /tmp/jupyter-sshd-proxy/client /tmp/jupyter-sshd-proxy && \
    rm -rf /tmp/jupyter-sshd-proxy && \
    fix-permissions "${CONDA_DIR}"

WORKDIR "${HOME}"
