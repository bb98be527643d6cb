"""What each task's flags mean: the help ``invoke --help TASK`` shows, one dict per task, keyed
by flag. Plain data, imported by tasks.py when Invoke loads it (so nothing heavy here)."""

from __future__ import annotations

RECORD = "build record (default: [tool.pipeline] record, build/image.toml)"
REF = {
    "ref": "git ref: refs/heads/NAME, refs/tags/vX.Y.Z (a short name is a branch)",
    "sha": "commit SHA (default: HEAD, or GITHUB_SHA in Actions)",
    "event": "GitHub event: push, pull_request, workflow_dispatch, schedule or local",
    "pr": "pull request number (implies --event pull_request, which never pushes)",
    "image": "image name, e.g. ghcr.io/acme/api-gateway (default: [tool.pipeline] image)",
}

TAGS = {
    **REF,
    "default_branch": "the repository's default branch (default: [tool.pipeline.tags])",
    "released": "a released version, for latest = 'release' (repeatable)",
    "format": "text, json, or github (appends outputs to $GITHUB_OUTPUT)",
}

BUILD = {
    "platform": "target platform, e.g. linux/arm64 (repeatable; default: this machine's, "
    "or every [tool.pipeline] platforms in GitHub Actions)",
    "push": "push the image and its tags to the registry (with max-mode provenance)",
    "load": "load the image into the local image store (the default unless --push)",
    "cache": "layer cache: a directory (default [tool.pipeline] cache_dir), registry:REF, "
    "gha or gha:SCOPE (default in Actions: one scope per platform), or none",
    "builder": "buildx builder to use (docker, docker-container, remote, kubernetes...)",
    "target": "Dockerfile stage to build (default: the last, the runtime image)",
    "build_arg": "KEY=VALUE build argument (repeatable)",
    "progress": "auto (step names), plain (all output), tty, or quiet",
    "no_cache": "ignore every cached layer (a cold build)",
    "push_by_digest": "with --push and one --platform: push that platform's image by "
    "digest only (no tag) and write it to build/digests/OS-ARCH, for docker.merge",
    **REF,
}

TEST = {
    "engine": "run the tests that need Docker and the registry (CI requires them)",
    "k": "only tests matching this pytest -k expression",
    "path": "test file or directory (default: tests/)",
    "lint": "run ruff and mypy first (default: yes)",
}

MERGE = {
    "digest": "a per-platform image digest, sha256:... (repeatable), pushed by "
    "`docker.build --push --push-by-digest`",
    "digests_dir": "directory of digest files named OS-ARCH (default: build/digests if "
    "no --digest is given)",
    "platform": "a platform the index must contain (repeatable; default: [tool.pipeline] "
    "platforms)",
    "record": "build record to write (default: [tool.pipeline] record)",
    **REF,
}

SCAN = {
    "severity": "severities that fail the gate, e.g. HIGH,CRITICAL (default: [tool.pipeline.scan])",
    "ignore_unfixed": "vulnerabilities fail only with a fix available (default); "
    "--no-ignore-unfixed fails on unfixed ones too",
    "require": "scanners that must run ('not scanned' then fails): "
    "vuln,secret,config,dockerfile,sbom, all or none (CI: all)",
    "ignore_file": "ignore file: [[ignore]] entries with id, reason, expires "
    "(default: .scanignore.toml)",
    "output_dir": "where summary.md, scan.json, scan.sarif, sbom.cdx.json go (default: build/scan)",
    "db_dir": "Trivy cache dir holding the vulnerability DB in db/ (default: $TRIVY_CACHE_DIR or "
    "Trivy's own cache)",
    "db_update": "let Trivy download/refresh its DB (default); --no-db-update uses it as it is",
    "platform": "platform to scan, e.g. linux/amd64 (default: the Docker daemon's)",
    "format": "text, json (scan.json on stdout) or github (also writes $GITHUB_OUTPUT)",
}

RESCAN = {"ref": "pushed image, e.g. ghcr.io/acme/api-gateway:1.2.3 (by its digest)", **SCAN}

PUSH = {"record": RECORD}

SIGN = {
    "ref": "IMAGE@DIGEST or IMAGE:TAG to sign (default: the pushed digest of the record)",
    "record": RECORD,
    "verify": "check the signature instead of signing (exit 1 if it does not verify)",
}

PROMOTE = {
    "to": "environment to promote to (staging, production, or [tool.pipeline] environments)",
    "ref": "TAG or sha256:DIGEST to promote (default: the pushed digest of the record)",
    "image": "repository (default: [tool.pipeline] image)",
    "record": RECORD,
}

ROLLBACK = {
    "env": "environment to roll back (staging, production...)",
    "to": "TAG or sha256:DIGEST to go back to (default: the digest it had before)",
    "image": "repository (default: [tool.pipeline] image)",
}

PRUNE = {
    "keep": "builds to keep per branch or pull request (default: 10)",
    "days": "delete branch/PR builds older than this many days (default: 30)",
    "yes": "really delete (default: dry run, print the plan)",
    "image": "repository (default: [tool.pipeline] image)",
}

OUTDATED = {
    "ref": "a pushed IMAGE:TAG or IMAGE@DIGEST (default: the last build record)",
    "record": RECORD,
}

PUBLISH = {
    "push": "push after build, test and scan (default: yes; pull_request events never "
    "push); --no-push stops after the scan",
    "sign": "sign the digest with cosign before any moving tag is written (default: yes; "
    "needs COSIGN_KEY/COSIGN_PASSWORD, or keyless in Actions)",
    "platform": "target platform (repeatable; default: this machine's, or every "
    "[tool.pipeline] platforms in GitHub Actions)",
    "severity": "severities that fail the scan gate, e.g. HIGH,CRITICAL",
    "require": "scanners that must run (see docker.scan --require)",
    "db_dir": "Trivy cache dir with the vulnerability DB (default: $TRIVY_CACHE_DIR)",
    "db_update": "let Trivy refresh its DB (default); --no-db-update uses it as it is",
    "cache": "layer cache (see docker.build --cache)",
    "arm64": "also start the linux/arm64 image under QEMU in the tests (default: yes)",
    **REF,
}

DEPLOY_LOCAL = {
    "image": "gateway image in the local store (default: .env.local GATEWAY_IMAGE, then"
    " the image in build/image.toml, built first if missing)",
    "project": "compose project name (default: api-gateway-local); deploy.down takes the same",
    "port": "host port for the gateway (default: GATEWAY_PORT or 8080; 0: any free port)",
    "wait": "seconds to wait for the services to become healthy (default 120)",
    "build": "build the image when none is recorded (default: yes; --no-build refuses)",
}

DEPLOY_DOWN = {"project": "compose project name (default: api-gateway-local)"}

K8S = {
    "env": "staging or production (an overlay in docker/k8s/overlays/)",
    "image": "image to deploy, NAME:TAG (resolved to its digest) or NAME@sha256:... (default:"
    " the pushed digest in build/image.toml)",
    "out": "directory for the rendered manifests (default: build/k8s)",
    "context": "kubectl context (default: the current context of KUBECONFIG)",
    "timeout": "seconds to wait for the rollout (default 300)",
}

DEPLOY_ROLLBACK = {
    "env": "staging or production",
    "context": K8S["context"],
    "revision": "roll back to this Deployment revision (default: the previous one)",
    "timeout": K8S["timeout"],
}

REPORT = {
    "last": "how many of the latest builds to cover (default 20)",
    "history": "the history file (default: [tool.pipeline] history or build/history.jsonl)",
    "out": "directory for summary.md and the charts (default: build/report)",
    "notify": "also post the latest result to NOTIFY_WEBHOOK_URL (Slack-compatible)",
}

NOTIFY = {
    "workflow": "the workflow's name, for the message (default: GITHUB_WORKFLOW)",
    "needs": "the JSON of Actions' needs context: each job's result (pass it through env)",
}

LINT_DOCKERFILE = {"dockerfile": "the Dockerfile (default: [tool.pipeline])"}

BENCH_TAGS = {"runs": "timed runs after one warm-up, for each figure (default 20)"}

BENCH_GATEWAY = {
    "seconds": "seconds of wrk load per target (default 5)",
    "connections": "concurrent connections (default 64)",
    "container": "also run the gateway in the built image (build record) for the ratio",
    "rounds": "interleaved passes over every target; each figure is the median (default 3)",
}

BENCH_BUILD = {"starts": "container starts timed for start-to-healthy (default 5)"}
DOCKER_TEST = {
    "record": "build record to test (default: [tool.pipeline] record)",
    "arm64": "also start the linux/arm64 image under QEMU when the record has it (default: yes)",
}
RENDER = {k: K8S[k] for k in ("env", "image", "out")}
