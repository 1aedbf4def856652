#!/usr/bin/env bash
# Check the Dockerfile without a Docker engine:
#
#   1. hadolint, failing on any finding at all (style included); an inline
#      `# hadolint ignore=DLxxxx` must sit under a comment line giving the reason, and
#      `# hadolint global ignore` is refused.
#   1b. every pinned runtime requirement has a wheel for linux/amd64 and linux/arm64;
#   2. A replay of the image in a temp dir laid out like the image's filesystem
#      (<tmp>/root/opt/rmmwatch, <tmp>/root/var/lib/rmmwatch, ...): the build context is
#      copied through .dockerignore, the builder stage's COPY and RUN steps run as written
#      (absolute paths mapped under <tmp>/root), then the image's ENTRYPOINT/CMD run with the
#      final stage's ENV only, as UID/GID 10001 when this script runs as root (so the
#      "root filesystem" is really read-only to it: only the VOLUME and /tmp are writable):
#        rmmwatch --version; rmmwatch rules check;
#        rmmwatch run --synthetic-count 50 --store sqlite --data-dir ... --metrics-port 0 --sink jsonl:...
#      and the bare CMD (`rmmwatch run`), checked through /healthz, /readyz, /metrics and the
#      image's HEALTHCHECK command, then stopped with its STOPSIGNAL: it must drain and exit 0.
#      Nothing may be written outside the volume and /tmp.
#
# Usage: scripts/check_dockerfile.sh   (from anywhere; needs python3.11 and PyPI)
# Env:   PYTHON=python3.11 (interpreter for the venv), KEEP_TMP=1 (keep the temp dir),
#        RMMWATCH_CACHE (tool cache, as scripts/tools/install.sh).
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT_DIR"
CACHE="${RMMWATCH_CACHE:-$HOME/.cache/rmmwatch}"

say() { printf '\n== %s\n' "$*"; }
die() { printf 'check_dockerfile: FAIL: %s\n' "$*" >&2; exit 1; }

# -- tools ------------------------------------------------------------------------------
find_hadolint() {
  if command -v hadolint >/dev/null 2>&1; then command -v hadolint; return; fi
  if [[ -x "$CACHE/bin/hadolint" ]]; then echo "$CACHE/bin/hadolint"; return; fi
  if [[ -x scripts/tools/install.sh ]]; then
    local bin
    bin="$(scripts/tools/install.sh | tail -n 1)"
    if [[ -x "$bin/hadolint" ]]; then echo "$bin/hadolint"; return; fi
  fi
  return 1
}
HADOLINT="$(find_hadolint)" || die "hadolint not found (run scripts/tools/install.sh)"

pick_python() {
  # As root the replay drops to UID 10001, which must be able to run the interpreter:
  # prefer one outside /root (pyenv's shims resolve under /root, mode 0700).
  local candidates=("${PYTHON:-}" /usr/bin/python3.11 /usr/local/bin/python3.11 "$(command -v python3.11 || true)")
  local py
  for py in "${candidates[@]}"; do
    [[ -n "$py" && -x "$(command -v "$py" 2>/dev/null || true)" ]] || continue
    py="$(command -v "$py")"
    "$py" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || continue
    if [[ $EUID -eq 0 ]]; then
      setpriv --reuid=10001 --regid=10001 --clear-groups "$py" -c 'pass' 2>/dev/null || continue
    fi
    echo "$py"
    return
  done
  return 1
}
PY="$(pick_python)" || die "no usable python3.11 (the image's Python) found; set PYTHON="

TMP="$(mktemp -d "${TMPDIR:-/tmp}/rmmwatch-dockerfile.XXXXXX")"
cleanup() { if [[ "${KEEP_TMP:-0}" == 1 ]]; then echo "kept $TMP"; else rm -rf "$TMP"; fi; }
trap cleanup EXIT
chmod 0755 "$TMP"

# -- 1. hadolint ------------------------------------------------------------------------
say "hadolint $("$HADOLINT" --version | awk '{print $NF}') (failure threshold: style)"
# An explicit config so that no user or repo config can relax the threshold.
printf 'failure-threshold: style\n' >"$TMP/hadolint.yaml"
"$HADOLINT" --config "$TMP/hadolint.yaml" Dockerfile || die "hadolint found problems in Dockerfile"
"$PY" - Dockerfile <<'PY' || die "hadolint pragmas in Dockerfile"
import re, sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
bad = []
for number, line in enumerate(lines, 1):
    text = line.strip()
    if re.match(r"#\s*hadolint\s+global\s+ignore", text):
        bad.append(f"line {number}: global ignores are not allowed; ignore inline with a reason")
    elif re.match(r"#\s*hadolint\s+ignore=", text):
        above = lines[number - 2].strip() if number > 1 else ""
        if not above.startswith("#") or "hadolint" in above or len(above.lstrip("# ")) < 10:
            bad.append(f"line {number}: '{text}' needs a comment line above giving the reason")
for message in bad:
    print(f"Dockerfile {message}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
echo "hadolint: clean"

# -- 1b. both architectures ---------------------------------------------------------------
# The image is built for linux/amd64 and linux/arm64: every pinned runtime requirement must
# have a CPython 3.11 wheel for each (a source build would need compilers and, for hyperscan,
# the library). pip resolves the pins for the target platform, wheels only; markers are
# evaluated for this machine, which is Linux as the image is.
for arch in x86_64 aarch64; do
  say "runtime wheels for linux/$arch"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
    --platform "manylinux_2_28_$arch" --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" \
    --platform "linux_$arch" -d "$TMP/wheels-$arch" -r requirements/runtime.txt \
    || die "a pinned runtime requirement has no CPython 3.11 wheel for linux/$arch"
  echo "$(find "$TMP/wheels-$arch" -name '*.whl' | wc -l) wheels"
done

# -- 2. the replay ------------------------------------------------------------------------
say "replaying the image build and entrypoint in $TMP (python: $PY)"
"$PY" - "$ROOT_DIR" "$TMP" "$PY" <<'PY'
"""Replay the Dockerfile's builder stage and the final image's entrypoint in a temp dir."""

import glob
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request

REPO, WORK, PYTHON = sys.argv[1], sys.argv[2], sys.argv[3]
ROOT = os.path.join(WORK, "root")  # the image's "/"
CONTEXT = os.path.join(WORK, "context")  # the build context after .dockerignore
IMAGE_UID = IMAGE_GID = None
AS_ROOT = os.geteuid() == 0
# The python image's own ENV (PATH, LANG), which the final stage inherits.
BASE_ENV = {"PATH": "/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def fail(message: str) -> None:
    print(f"check_dockerfile: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def step(message: str) -> None:
    print(f"-- {message}", flush=True)


# -- .dockerignore (Docker's patternmatcher: last match wins, a pattern matching a parent
#    directory matches everything under it, ** spans directories) ----------------------------
def pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif c == "*":
            out, i = out + "[^/]*", i + 1
        elif c == "?":
            out, i = out + "[^/]", i + 1
        elif c == "[":
            end = pattern.find("]", i)
            out, i = out + pattern[i : end + 1].replace("[!", "[^"), end + 1
        else:
            out, i = out + re.escape(c), i + 1
    return re.compile(out + r"\Z")


def read_dockerignore(path: str) -> list[tuple[re.Pattern[str], bool]]:
    rules: list[tuple[re.Pattern[str], bool]] = []
    if not os.path.exists(path):
        return rules
    for raw in open(path, encoding="utf-8"):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((pattern_regex(line), negate))
    return rules


def excluded(rel: str, rules: list[tuple[re.Pattern[str], bool]]) -> bool:
    parts = rel.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for regex, negate in rules:
        if any(regex.match(p) for p in prefixes):
            result = not negate
    return result


def build_context() -> None:
    rules = read_dockerignore(os.path.join(REPO, ".dockerignore"))
    count = 0
    for directory, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in files:
            source = os.path.join(directory, name)
            rel = os.path.relpath(source, REPO)
            if excluded(rel, rules):
                continue
            target = os.path.join(CONTEXT, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(source, target)
            count += 1
    step(f"build context: {count} files through .dockerignore")
    for must in ("pyproject.toml", "requirements/runtime.txt", "service/rmmwatch/cli.py"):
        if not os.path.exists(os.path.join(CONTEXT, must)):
            fail(f".dockerignore leaves {must} out of the build context")
    for leak in (".venv", "data", ".services", ".git", "tests"):
        if os.path.exists(os.path.join(CONTEXT, leak)):
            fail(f".dockerignore lets {leak}/ into the build context")
    leaked = [p for p in glob.glob(os.path.join(CONTEXT, "**", "__pycache__"), recursive=True)]
    if leaked:
        fail(f".dockerignore lets __pycache__ into the build context: {leaked[0]}")


# -- the Dockerfile --------------------------------------------------------------------------
def instructions(path: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in open(path, encoding="utf-8"):
        line = raw.rstrip("\n")
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if current and line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
        current = ""
    return out


def stages(items: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in items:
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def parse_env(rest: str) -> dict[str, str]:
    words = shlex.split(rest)
    if len(words) >= 2 and "=" not in words[0]:  # legacy "ENV key value"
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)


class Mapper:
    """Maps the image's absolute paths to paths under ROOT."""

    def __init__(self, prefixes: set[str]) -> None:
        self.prefixes = sorted(prefixes, key=len, reverse=True)

    def path(self, image_path: str) -> str:
        return os.path.join(ROOT, image_path.lstrip("/"))

    def text(self, text: str) -> str:
        # One pass, longest prefix first, so that a mapped path (itself under /tmp) is
        # never mapped again.
        alternatives = "|".join(re.escape(p) for p in self.prefixes)
        regex = rf"(?<![\w./-])({alternatives})(?=[/\s:'\"]|$)"
        return re.sub(regex, lambda m: self.path(m.group(1)), text)


def run(cmd: list[str] | str, *, env: dict[str, str], cwd: str, user: bool = False, timeout: float = 600,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    shown = cmd if isinstance(cmd, str) else shlex.join(cmd)
    print(f"   $ {shown}", flush=True)
    argv = ["bash", "-euo", "pipefail", "-c", cmd] if isinstance(cmd, str) else list(cmd)
    if user and AS_ROOT:
        argv = ["setpriv", f"--reuid={IMAGE_UID}", f"--regid={IMAGE_GID}", "--clear-groups", *argv]
    result = subprocess.run(argv, env=env, cwd=cwd, text=True, capture_output=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        fail(f"exit {result.returncode}: {shown}")
    return result


def snapshot(top: str, skip: list[str]) -> dict[str, tuple[int, int]]:
    seen: dict[str, tuple[int, int]] = {}
    for directory, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if os.path.join(directory, d) not in skip]
        for name in files + dirs:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            seen[path] = (st.st_mtime_ns, st.st_size)
    return seen


def main() -> None:
    global IMAGE_UID, IMAGE_GID
    build_context()
    all_stages = stages(instructions(os.path.join(REPO, "Dockerfile")))
    if len(all_stages) < 2:
        fail("expected a multi-stage Dockerfile (builder + final)")
    builder, final = all_stages[0], all_stages[-1]
    if not final[0][1].split()[0] == builder[0][1].split()[0]:
        fail("the final stage must use the builder's base image (the venv links to its python)")

    # Absolute paths the image uses: WORKDIRs, VOLUMEs, venvs, the venv copy, /tmp.
    prefixes = {"/tmp"}
    for keyword, rest in builder + final:
        if keyword == "WORKDIR":
            prefixes.add(rest)
        elif keyword == "VOLUME":
            prefixes.update(json.loads(rest) if rest.startswith("[") else rest.split())
        elif keyword == "RUN":
            prefixes.update(re.findall(r"-m venv\s+(/\S+)", rest))
        elif keyword == "COPY" and "--from=" in rest:
            prefixes.update(w for w in rest.split() if w.startswith("/"))
    mapper = Mapper(prefixes)
    os.makedirs(ROOT, exist_ok=True)
    os.chmod(ROOT, 0o755)

    # A directory at the front of PATH whose `python` is the chosen interpreter, as the
    # base image's /usr/local/bin/python.
    shims = os.path.join(WORK, "base-bin")
    os.makedirs(shims)
    for name in ("python", "python3", "python3.11"):
        os.symlink(PYTHON, os.path.join(shims, name))
    base_path = shims + ":" + os.environ.get("PATH", "/usr/bin:/bin")

    # -- builder stage ------------------------------------------------------------------
    step("builder stage")
    env = {"PATH": base_path, "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/root")}
    cwd = ROOT
    for keyword, rest in builder[1:]:
        if keyword == "ENV":
            for key, value in parse_env(rest).items():
                image_value = expand(value, {**env, "PATH": "$PATH"})
                env[key] = mapper.text(expand(value, env)) if key != "PATH" else (
                    mapper.text(image_value.replace("$PATH", "")).rstrip(":") + ":" + base_path
                )
        elif keyword == "WORKDIR":
            cwd = mapper.path(rest)
            os.makedirs(cwd, exist_ok=True)
        elif keyword == "COPY":
            words = [w for w in shlex.split(rest) if not w.startswith("--")]
            *sources, dest = words
            target = os.path.join(cwd, dest) if not dest.startswith("/") else mapper.path(dest)
            for source in sources:
                matches = glob.glob(os.path.join(CONTEXT, source.rstrip("/")))
                if not matches and not any(ch in source for ch in "*?["):
                    fail(f"COPY {source}: not in the build context")
                for match in matches:
                    if os.path.isdir(match):
                        shutil.copytree(match, target.rstrip("/") if dest.endswith("/") else target, dirs_exist_ok=True)
                    else:
                        into = target if not dest.endswith("/") else os.path.join(target, os.path.basename(match))
                        os.makedirs(os.path.dirname(into) or ".", exist_ok=True)
                        shutil.copy2(match, into)
        elif keyword == "RUN":
            run(mapper.text(rest), env=env, cwd=cwd)
        elif keyword in ("ARG", "LABEL"):
            continue
        else:
            fail(f"the replay does not know the builder instruction {keyword}: teach scripts/check_dockerfile.sh")

    # -- final stage ---------------------------------------------------------------------
    step("final stage")
    image_env = dict(BASE_ENV)
    entrypoint: list[str] = []
    cmd: list[str] = []
    healthcheck: list[str] = []
    stopsignal = "SIGTERM"
    volumes: list[str] = []
    workdir = "/"
    for keyword, rest in final[1:]:
        if keyword == "ENV":
            for key, value in parse_env(rest).items():
                image_env[key] = expand(value, image_env)
        elif keyword == "WORKDIR":
            workdir = rest
        elif keyword == "USER":
            uid, _, gid = rest.partition(":")
            if not uid.isdigit() or not gid.isdigit():
                fail("USER must be numeric UID:GID (runAsNonRoot can only verify numbers)")
            IMAGE_UID, IMAGE_GID = int(uid), int(gid)
        elif keyword == "VOLUME":
            volumes = json.loads(rest) if rest.startswith("[") else rest.split()
        elif keyword == "ENTRYPOINT":
            entrypoint = json.loads(rest)
        elif keyword == "CMD":
            cmd = json.loads(rest)
        elif keyword == "HEALTHCHECK":
            healthcheck = json.loads(rest[rest.index("CMD") + 3 :].strip())
        elif keyword == "STOPSIGNAL":
            stopsignal = rest
        elif keyword == "EXPOSE":
            if rest.split("/")[0] != "9464":
                fail(f"EXPOSE {rest}: the metrics port is 9464")
    if IMAGE_UID != 10001 or IMAGE_GID != 10001:
        fail("the final stage must run as USER 10001:10001")
    if not entrypoint or not cmd:
        fail("the final stage needs exec-form ENTRYPOINT and CMD")
    if image_env.get("PYTHONDONTWRITEBYTECODE") != "1":
        fail("the final stage must set PYTHONDONTWRITEBYTECODE=1 (read-only root filesystem)")

    # The image's filesystem: root-owned everything, the volumes and /tmp for the user.
    os.makedirs(mapper.path(workdir), exist_ok=True)
    writable = [mapper.path(v) for v in volumes] + [mapper.path("/tmp")]
    for path in writable:
        os.makedirs(path, exist_ok=True)
    if AS_ROOT:
        for path in writable:
            os.chown(path, IMAGE_UID, IMAGE_GID)
    os.chmod(mapper.path("/tmp"), 0o1777)
    data_dir = image_env.get("RMMWATCH_DATA_DIR", "")
    if data_dir not in volumes:
        fail(f"RMMWATCH_DATA_DIR={data_dir!r} must be a declared VOLUME")

    runtime_env = {k: mapper.text(v) for k, v in image_env.items()}
    runtime_env["PATH"] = ":".join(mapper.text(p) for p in image_env["PATH"].split(":"))
    cwd = mapper.path(workdir)
    entry = [mapper.text(a) for a in entrypoint]
    entry[0] = shutil.which(entry[0], path=runtime_env["PATH"]) or fail(f"{entrypoint[0]} is not on the image's PATH")
    step(f"running as {'UID/GID 10001 (setpriv)' if AS_ROOT else 'the current user'}; env: "
         + " ".join(f"{k}={v}" for k, v in sorted(runtime_env.items()) if k != "PATH"))
    before = snapshot(ROOT, writable)

    version = tomllib.load(open(os.path.join(CONTEXT, "pyproject.toml"), "rb"))["project"]["version"]
    out = run([*entry, "--version"], env=runtime_env, cwd=cwd, user=True, timeout=60).stdout.strip()
    if out != f"rmmwatch {version}":
        fail(f"--version printed {out!r}, expected 'rmmwatch {version}'")
    print(f"   {out}")
    out = run([*entry, "rules", "check"], env=runtime_env, cwd=cwd, user=True, timeout=60).stdout
    print("   " + "\n   ".join(out.strip().splitlines()[:3]))

    data = mapper.path(data_dir)
    alerts = os.path.join(mapper.path("/tmp"), "alerts.jsonl")
    run([*entry, *cmd, "--source", "synthetic", "--synthetic-count", "50", "--store", "sqlite",
         "--data-dir", data, "--metrics-port", "0", "--sink", f"jsonl:{alerts}"],
        env=runtime_env, cwd=cwd, user=True, timeout=120)
    if not os.path.exists(os.path.join(data, "rmmwatch.db")):
        fail(f"no sqlite state at {data}/rmmwatch.db after the synthetic run")
    lines = sum(1 for _ in open(alerts)) if os.path.exists(alerts) else 0
    print(f"   synthetic run: exit 0, state in {data}, {lines} alert line(s) in {alerts}")

    # The bare CMD, as `docker run image` runs it, probed as Kubernetes and HEALTHCHECK would.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(runtime_env, RMMWATCH_METRICS_PORT=str(port), RMMWATCH_METRICS_HOST="127.0.0.1",
               RMMWATCH_SYNTHETIC_RATE="200")
    argv = [*entry, *cmd]
    print(f"   $ {shlex.join(argv)}  (RMMWATCH_METRICS_PORT={port}, stopped with {stopsignal})", flush=True)
    if AS_ROOT:
        argv = ["setpriv", f"--reuid={IMAGE_UID}", f"--regid={IMAGE_GID}", "--clear-groups", *argv]
    log_path = os.path.join(WORK, "cmd.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=log)

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except OSError:
            return 0, ""

    try:
        deadline = time.monotonic() + 30
        while get("/readyz")[0] != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.stderr.write(open(log_path).read()[-3000:])
                fail("the bare CMD never became ready on /readyz")
            time.sleep(0.2)
        status, _ = get("/healthz")
        if status != 200:
            fail(f"/healthz answered {status}")
        status, body = get("/metrics")
        if status != 200 or "rmmwatch_build_info" not in body or "rmmwatch_messages_total" not in body:
            fail("/metrics lacks rmmwatch_build_info or rmmwatch_messages_total")
        print("   /readyz 200, /healthz 200, /metrics has rmmwatch_build_info and rmmwatch_messages_total")
        if healthcheck:
            check = [mapper.text(a) for a in healthcheck]
            run(check, env=env, cwd=cwd, user=True, timeout=10)
            print("   HEALTHCHECK command: exit 0")
        proc.send_signal(getattr(signal, stopsignal))
        timeout = float(image_env.get("RMMWATCH_SHUTDOWN_TIMEOUT", "25")) + 5
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            fail(f"still running {timeout:.0f}s after {stopsignal}")
        if code != 0:
            sys.stderr.write(open(log_path).read()[-3000:])
            fail(f"exit {code} after {stopsignal} (expected a drain and exit 0)")
        print(f"   {stopsignal}: drained and exited 0")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    after = snapshot(ROOT, writable)
    written = sorted(p for p in after if before.get(p) != after[p])
    if written:
        fail("written outside the volume and /tmp (breaks readOnlyRootFilesystem): " + ", ".join(written[:5]))
    print("   nothing written outside " + ", ".join(volumes + ["/tmp"]))


main()
PY
say "check_dockerfile: OK"
