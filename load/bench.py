"""rmmwatch side by side with the read ceilings and its peers, in one run, on the same topic and data.

What runs, in order (each part's wall time is printed; ``--skip`` leaves parts out):

1. **Pre-fill** a topic (``--partitions``, default 4) on the local broker with ``--records`` records
   (default 2,000,000) of the synthetic Defender stream (``load.generate``: compact records of about 1.5 KB,
   1 to 50 per message, NetSupport in 0.1% of records, seed 3, the wall clock), ``acks=all``, while the
   expected ``rmmwatch hunt`` answer is computed in-process over the same messages.
2. **Consume it to the end** with each consumer, ``--rounds`` times (default 2, alternating order), and
   report the *better* (faster) round of each; every round is printed too:

   * ``kcat`` (librdkafka's CLI; installed with apt if missing): every message read, its offset printed
     to a pipe and the payload dropped; timed by this process from the first offset line to the last;
   * ``confluent-kafka`` ``Consumer.consume(num_messages=500)``, values dropped (``load/peers``);
   * the bare aiokafka consumer of ``load/bench_kafka.py`` (``_bare``: rmmwatch's fetch settings, nothing
     done with the messages), in a child process so its RSS is its own;
   * ``rmmwatch run --source kafka`` with the bundled rule, ``--store sqlite`` and ``--store redis://``,
     measured as ``load/bench_kafka.py`` does: its ``rmmwatch_messages_total`` polled every 50 ms, from the
     first poll that sees a message to the one that sees them all; afterwards ``rmmwatch state`` must equal
     the expected answer;
   * the same job in Quix Streams (``load/peers/quix_job.py``) and Faust (``load/peers/faust_job.py``),
     each checked against the expected answer (Count, FirstSeen, LastSeen and Report per device);
   * the prototype of a librdkafka backend (``load/peers/confluent_consume.py --mode detect``):
     confluent-kafka's consumer feeding rmmwatch's decode+match (``Detector``, bundled rule), no store.

   Figures: records/s and MB/s (the topic's records and value bytes over the consumption time), CPU seconds
   of the consuming process over that time (``/proc/PID/stat`` utime+stime, or ``process_time`` inside a
   peer: every thread included), peak RSS (``VmHWM`` from ``/proc``, read while the process runs); each also
   as a ratio to the read ceiling (the faster of kcat and confluent-kafka). Start-up (interpreter, imports,
   group join) is outside the timing.
3. **Profile** rmmwatch (sqlite) while it consumes the topic, with py-spy (``record --format raw``, 250 Hz,
   ``--nonblocking``, launched as its parent: this machine's ptrace scope forbids attaching): top frames by
   own time and by inclusive time, and the share of samples per component.
4. **Produce-to-alert latency** at 25%, 50% and 90% of rmmwatch's measured maximum rate (sqlite store,
   messages/s from part 2): a fresh topic, one ``rmmwatch run`` (sqlite, a copy of the bundled rule that
   alerts on every change, alerts to a Kafka topic), fed by ``load/peers/latency_producer.py`` (librdkafka
   pacing a pool of realistic envelopes, NetSupport in 0.2% of records, each NetSupport launch made a new
   event); latency = the alert's record timestamp minus the send time of the message that carried its
   triggering event, as in ``load/bench_kafka.py``, and minus that message's broker append time (the input
   topic uses ``LogAppendTime``): the detector's share, without the time spent in the producer.
5. **Scaling**: two ``rmmwatch run`` processes (redis store, one consumer group) on the topic against one
   (the redis row of part 2): wall time from the first message to the last, and the rate while both
   consume (after the group settled, until the first finishes its partitions).
6. **Steady RSS with 100,000 devices**: a stream whose NetSupport events fall on 100,000 distinct devices
   (half of its records are NetSupport launches, on a population of 300,000, so the window fills in
   seconds), consumed by ``rmmwatch run`` (sqlite); RSS once every device's ``new`` alert was written and
   delivered, sampled over 5 s (median), and the peak.

Then the targets, each MET / NOT MET. Peers run in their own virtualenv,
``${RMMWATCH_CACHE:-~/.cache/rmmwatch}/peers-venv``, created here (pip) and never part of the project's
dependencies. Topics and Redis keys this run created are deleted at the end. Needs the test services:
``make bench-compare`` starts and stops them.

    python -m load.bench [--records 2000000] [--rounds 2] [--latency-seconds 20] [--skip faust,latency]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from load.bench_kafka import RULE_EVERY, _bare, _free_port, _metric, _proc_stats, _start_detector
from load.generate import KafkaSink, Summary, delete_topics, ensure_topic, write_stream
from rmmwatch.kql.datetimes import format_datetime
from rmmwatch.synthetic import Generator, GeneratorConfig

ROOT = Path(__file__).resolve().parents[1]
PEER_PACKAGES = ("confluent-kafka", "quixstreams", "faust-streaming", "py-spy", "orjson", "pyyaml", "hyperscan")
PARTS = ("kcat", "confluent", "bare", "sqlite", "redis", "aiokafka", "quix", "faust", "prototype", "profile", "latency",
         "scaling", "rss")  # fmt: skip
RUN_TIMEOUT = 600.0


# -- small helpers ----------------------------------------------------------------------------------


def _cache() -> Path:
    return Path(os.environ.get("RMMWATCH_CACHE") or Path.home() / ".cache" / "rmmwatch")


def _say(text: str) -> None:
    print(text, flush=True)


def _rss(pid: int) -> int:
    """Current resident set of a live process (VmRSS), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _metric_where(port: int, name: str, label: str) -> float:
    """Sum of a metric's samples whose labels contain ``label`` (e.g. ``kind="new"``); -1 if unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return -1.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and label in line)  # fmt: skip


def _tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(line.strip()[:200] for line in text[-lines:])


def _stop(process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Failed(Exception):
    """A consumer that could not be measured (the reason goes in the table)."""


@dataclass(slots=True)
class Run:
    """One consumption of the topic: first record to last."""

    seconds: float
    cpu: float
    rss: int
    check: str = "-"


@dataclass(slots=True)
class Row:
    """A consumer's rounds and the one reported (the fastest)."""

    name: str
    runs: list[Run] = field(default_factory=list)
    failure: str | None = None

    @property
    def best(self) -> Run | None:
        return min(self.runs, key=lambda r: r.seconds) if self.runs else None

    @property
    def check(self) -> str:
        """The correctness check, made on the first round."""
        return next((r.check for r in self.runs if r.check != "-"), "-")


@dataclass(slots=True)
class Topic:
    """The pre-filled topic and what it holds."""

    name: str
    summary: Summary
    expected: list[dict[str, Any]]
    end: str  # hunt --now

    @property
    def messages(self) -> int:
        return self.summary.messages

    @property
    def records(self) -> int:
        return self.summary.records


# -- environment ------------------------------------------------------------------------------------


def ensure_peers() -> tuple[Path | None, dict[str, str]]:
    """The peers virtualenv (created and filled with pip if needed) and, per package, why it is missing."""
    venv = _cache() / "peers-venv"
    python = venv / "bin" / "python"
    missing: dict[str, str] = {}
    if not python.exists():
        _say(f"  creating {venv}")
        base = getattr(sys, "_base_executable", sys.executable)
        made = subprocess.run([base, "-m", "venv", str(venv)], capture_output=True, text=True, check=False)
        if made.returncode:
            return None, {"venv": made.stderr.strip()[-300:]}
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=False)
    probe = "import confluent_kafka, quixstreams, faust, orjson, yaml, hyperscan"
    have = subprocess.run([str(python), "-c", probe], capture_output=True, check=False).returncode == 0
    have = have and (venv / "bin" / "py-spy").exists()
    if not have:
        _say(f"  pip install {' '.join(PEER_PACKAGES)} into {venv}")
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], capture_output=True,
                              text=True, check=False)  # fmt: skip
        if done.returncode:  # one by one, to say which one does not install
            for package in PEER_PACKAGES:
                one = subprocess.run([str(python), "-m", "pip", "install", "-q", package], capture_output=True,
                                     text=True, check=False)  # fmt: skip
                if one.returncode:
                    missing[package] = (one.stderr.strip().splitlines() or ["pip failed"])[-1][:300]
    return python, missing


def ensure_kcat() -> tuple[str | None, str]:
    """kcat's path, or None and why not (installed with apt-get when missing and possible)."""
    found = shutil.which("kcat") or shutil.which("kafkacat")
    if found:
        return found, ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "kcat is not installed and apt-get is not usable here (not root or no apt)"
    _say("  apt-get install -y kcat")
    done = subprocess.run(["apt-get", "install", "-y", "kcat"], capture_output=True, text=True, check=False)
    if done.returncode:
        return None, f"apt-get install kcat failed: {(done.stderr.strip().splitlines() or ['?'])[-1][:200]}"
    found = shutil.which("kcat")
    return (found, "") if found else (None, "apt-get installed kcat but it is not on PATH")


def _peer_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{ROOT / 'service'}"
    env["PYTHONWARNINGS"] = "ignore"
    return env


# -- part 1: the topic ------------------------------------------------------------------------------


def prefill(bootstrap: str, records: int, partitions: int, workdir: Path) -> Topic:
    name = f"bench-cmp-{uuid.uuid4().hex[:8]}"
    config = GeneratorConfig(seed=3, netsupport_ratio=0.001, compact=True)
    sink = KafkaSink(bootstrap, name, partitions=partitions)
    summary = asyncio.run(write_stream(config, sink, records=records, expect=True, quiet=True))
    assert summary.expected is not None
    expected = summary.expected.rows(summary.end)
    (workdir / "expected.json").write_bytes(orjson.dumps(expected, option=orjson.OPT_INDENT_2))
    return Topic(name, summary, expected, format_datetime(summary.end))


# -- part 2: the consumers --------------------------------------------------------------------------


def run_kcat(kcat: str, bootstrap: str, topic: Topic) -> Run:
    """kcat from the first offset line to the last; CPU and peak RSS of the kcat process over that time."""
    process = subprocess.Popen([kcat, "-C", "-b", bootstrap, "-t", topic.name, "-o", "beginning", "-q",
                                "-u", "-f", "%o\\n"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    timer = threading.Timer(RUN_TIMEOUT, process.kill)
    timer.start()
    try:
        assert process.stdout is not None
        seen = 0
        first = cpu_first = 0.0
        for _ in process.stdout:
            seen += 1
            if seen == 1:
                first = time.perf_counter()
                cpu_first, _peak = _proc_stats(process.pid)
            if seen >= topic.messages:
                seconds = time.perf_counter() - first
                cpu, peak = _proc_stats(process.pid)
                return Run(seconds, cpu - cpu_first, peak)
        raise Failed(f"kcat ended after {seen} of {topic.messages} messages")
    finally:
        timer.cancel()
        _stop(process, 10)


def run_peer(python: Path, module: str, args: list[str], workdir: Path, label: str) -> dict[str, Any]:
    """A peer job in the peers venv; its JSON result (timings measured inside it)."""
    result = workdir / f"{label}-{uuid.uuid4().hex[:6]}.json"
    log = workdir / f"{label}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(python), "-m", module, *args, "--result", str(result)], cwd=ROOT,
                                   env=_peer_env(), stdout=out, stderr=out)  # fmt: skip
        try:
            process.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            _stop(process, 10)
            raise Failed(f"no result within {RUN_TIMEOUT:.0f} s (log {log}: {_tail(log, 3)})") from None
    if not result.exists():
        raise Failed(f"exit {process.returncode}, no result: {_tail(log)}")
    data: dict[str, Any] = json.loads(result.read_text())
    return data


def run_bare(bootstrap: str, topic: Topic, workdir: Path) -> Run:
    """bench_kafka's ``_bare`` in a child process of the project's interpreter."""
    result = workdir / f"bare-{uuid.uuid4().hex[:6]}.json"
    done = subprocess.run([sys.executable, "-m", "load.bench", "--child-bare", topic.name, str(topic.messages),
                           str(result)], cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                          check=False)  # fmt: skip
    if done.returncode or not result.exists():
        raise Failed(f"exit {done.returncode}: {done.stderr.strip()[-300:]}")
    data = json.loads(result.read_text())
    return Run(data["seconds"], data["cpu"], data["peak_rss"])


def _child_bare(topic: str, messages: int, result: str) -> None:
    bootstrap = os.environ["RMMWATCH_TEST_KAFKA_BOOTSTRAP"]
    seconds, cpu = asyncio.run(_bare(bootstrap, topic, messages))
    peak = _proc_stats(os.getpid())[1]
    Path(result).write_text(json.dumps({"seconds": seconds, "cpu": cpu, "peak_rss": peak}))


def _wait_consumed(process: subprocess.Popen[bytes], port: int, total: int, log: Path,
                   deadline_s: float = RUN_TIMEOUT) -> Run:  # fmt: skip
    """Poll ``rmmwatch_messages_total`` every 50 ms: first message seen to all seen; CPU over that time."""
    first = cpu_first = 0.0
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Failed(f"rmmwatch exited {process.returncode}: {_tail(log)}")
        value = _metric(port, "rmmwatch_messages_total")
        now = time.perf_counter()
        if value > 0 and not first:
            first = now
            cpu_first, _ = _proc_stats(process.pid)
        if value >= total:
            cpu, peak = _proc_stats(process.pid)
            return Run(now - first, cpu - cpu_first, peak)
        time.sleep(0.05)
    raise Failed(f"did not consume the topic within {deadline_s:.0f} s")


def _state_rows(store: list[str], env: dict[str, str], now: str) -> list[dict[str, Any]]:
    done = subprocess.run([sys.executable, "-m", "rmmwatch.cli", "state", "--rule", "bundled:netsupport", *store,
                           "--now", now, "--format", "json"],
                          cwd=ROOT, env=env, capture_output=True, timeout=120, check=False)  # fmt: skip
    if done.returncode:
        raise Failed(f"rmmwatch state failed: {done.stderr.decode(errors='replace')[-300:]}")
    rows: list[dict[str, Any]] = orjson.loads(done.stdout)
    return rows


def run_rmmwatch(bootstrap: str, topic: Topic, workdir: Path, store: str, prefixes: list[str],
                 check: bool, client: str = "confluent") -> Run:  # fmt: skip
    """``rmmwatch run --source kafka`` (bench_kafka's subprocess and metrics approach); then its state vs hunt."""
    run = uuid.uuid4().hex[:6]
    data_dir = workdir / f"rmm-{run}"
    extra = ["--sink", f"jsonl:{workdir / f'alerts-{run}.jsonl'}", "--kafka-group-id", f"rmm-{run}",
             "--data-dir", str(data_dir), "--kafka-client", client]  # fmt: skip
    env = dict(os.environ)
    if store == "sqlite":
        extra += ["--store", "sqlite"]
        state_args = ["--data-dir", str(data_dir)]
    else:
        prefix = f"bench-{run}"
        prefixes.append(prefix)
        extra += ["--store", store, "--redis-prefix", prefix]
        state_args = ["--store", store]
        env["RMMWATCH_REDIS_PREFIX"] = prefix
    process, port = _start_detector(bootstrap, topic.name, workdir, extra)
    log = workdir / f"{topic.name}.log"
    try:
        result = _wait_consumed(process, port, topic.messages, log)
        if check:
            deadline = time.monotonic() + 30  # the last batch's matches are applied after it was counted
            while _metric(port, "rmmwatch_outbox_pending") > 0 and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        _stop(process)
    if check:
        result.check = compare_rows(topic.expected, _state_rows(state_args, env, topic.end), "state")
    return result


def compare_rows(expected: list[dict[str, Any]], got: list[dict[str, Any]], what: str) -> str:
    """Rows of ``hunt`` against rows of a store: equal, or how many devices differ."""
    if got == expected:
        return f"{what} = hunt ({len(expected)} devices)"
    want = {r["DeviceId"]: r for r in expected}
    have = {r["DeviceId"]: r for r in got}
    differ = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
    return f"{what} != hunt: {len(differ)} of {len(want)} devices differ (e.g. {differ[:2]})"


def compare_devices(expected: list[dict[str, Any]], devices: dict[str, dict[str, Any]]) -> tuple[str, list[str]]:
    """A peer's per-device state against hunt: Count first (the brief's check), then the other columns."""
    want = {r["DeviceId"]: r for r in expected}
    lines: list[str] = []
    for device in sorted(want.keys() | devices.keys()):
        row, state = want.get(device), devices.get(device)
        if row is None or state is None:
            lines.append(f"{device}: hunt {row and row['Count']}, peer {state and state['Count']}")
        elif row["Count"] != state["Count"]:
            lines.append(f"{device}: Count hunt {row['Count']}, peer {state['Count']}")
        elif (row["FirstSeen"], row["LastSeen"], row["Report"]) != (
            state["FirstSeen"], state["LastSeen"], sorted(state["Report"])):  # fmt: skip
            lines.append(f"{device}: same Count, other FirstSeen/LastSeen/Report")
    if not lines:
        return f"per-device = hunt ({len(want)} devices)", []
    return f"!= hunt: {len(lines)} of {len(want)} devices differ", lines


# -- part 3: the profile ----------------------------------------------------------------------------


def _classify(stack: list[str]) -> str:
    """The component a sampled stack spends its time in (innermost meaningful frame wins)."""
    joined = ";".join(stack)
    leaf = stack[-1]
    if any(m in joined for m in ("rmmwatch/events.py", "rmmwatch/prefilter.py", "rmmwatch/kql/")):
        return "rmmwatch decode+match (prefilter, JSON, rule)"
    if "rmmwatch/stores/" in joined:
        return "rmmwatch store (sqlite)"
    if "aiokafka/" in joined:
        return "aiokafka (fetch, protocol, record decoding)"
    if "asyncio/streams.py" in leaf or "asyncio/selector_events.py" in leaf:
        return "socket reads into asyncio streams (aiokafka's connections)"
    if "selectors.py" in leaf:
        return "event loop waiting (epoll)"
    if "rmmwatch/" in joined:
        return "rmmwatch loop, source, sinks, metrics"
    if "asyncio/" in joined:
        return "asyncio event loop"
    return "other"


def _short(frame: str) -> str:
    """``func (path:line)`` -> ``func (pkg/file.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for anchor in ("site-packages/", "/service/", "/lib/python3.11/"):
        if anchor in path:
            path = path.split(anchor, 1)[1]
            break
    return f"{name} ({path})"


def summarize_profile(raw: Path, top: int = 12) -> list[str]:
    """Top frames by own and inclusive samples, and the share per component, from py-spy's raw output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack_text.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames or any("importlib._bootstrap" in f for f in frames):
            continue  # start-up (imports) is not the hot path
        total += count
        own[_short(frames[-1])] += count
        for name in {_short(f) for f in frames}:
            inclusive[name] += count
        parts[_classify(frames)] += count
    if not total:
        return ["  (no samples)"]
    out = [f"  {total:,} samples of rmmwatch's active threads (start-up imports left out); by component:"]
    out += [f"    {share / total:6.1%}  {name}" for name, share in parts.most_common()]
    out.append("  top frames by own time:")
    out += [f"    {share / total:6.1%}  {name}" for name, share in own.most_common(top)]
    out.append("  top functions of rmmwatch and aiokafka by inclusive time:")
    wanted = [(n, s) for n, s in inclusive.most_common() if "(rmmwatch/" in n or "(aiokafka/" in n]
    shown = [(n, s) for n, s in wanted if not n.startswith(("<module> ", "main (", "_run ("))][:top]
    out += [f"    {share / total:6.1%}  {name}" for name, share in shown]
    return out


def run_profile(pyspy: Path, bootstrap: str, topic: Topic, workdir: Path, gil: bool = False) -> tuple[Run, list[str]]:
    """rmmwatch (sqlite) consuming the topic under ``py-spy record`` (as its parent); ``gil``: only the samples
    of the thread holding the GIL (``--gil``), which shows what serializes the threads."""
    port = _free_port()
    run = uuid.uuid4().hex[:6]
    raw = workdir / f"profile-{run}.txt"
    log = workdir / f"profile-{run}.log"
    command = [str(pyspy), "record", "--format", "raw", "--rate", "250", "--nonblocking", *(["--gil"] if gil else []),
               "--output", str(raw), "--",
               sys.executable, "-m", "rmmwatch.cli", "run", "--rule", "bundled:netsupport", "--source", "kafka",
               "--kafka-bootstrap-servers", bootstrap, "--kafka-topics", topic.name, "--kafka-group-id",
               f"rmm-prof-{run}", "--data-dir",
               str(workdir / f"prof-{run}"), "--store", "sqlite", "--sink", f"jsonl:{workdir / f'prof-{run}.jsonl'}",
               "--metrics-port", str(port), "--metrics-host", "127.0.0.1", "--log-level", "warning"]  # fmt: skip
    with open(log, "wb") as out:
        spy = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=out)
    try:
        child = 0
        deadline = time.monotonic() + 30
        while not child and time.monotonic() < deadline:
            children = Path(f"/proc/{spy.pid}/task/{spy.pid}/children")
            text = children.read_text().split() if children.exists() else []
            child = int(text[0]) if text else 0
            time.sleep(0.05)
        if not child:
            raise Failed(f"py-spy did not start rmmwatch: {_tail(log)}")
        holder = _Pid(child)
        result = _wait_consumed(holder, port, topic.messages, log)  # type: ignore[arg-type]
        os.kill(child, signal.SIGTERM)
        spy.wait(timeout=120)
    finally:
        _stop(spy, 30)
    if not raw.exists():
        raise Failed(f"py-spy wrote no profile: {_tail(log)}")
    return result, summarize_profile(raw)


class _Pid:
    """Enough of ``Popen`` for ``_wait_consumed`` over a grandchild (the process py-spy launched)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if not Path(f"/proc/{self.pid}").exists():
            self.returncode = -1
        return self.returncode


# -- part 4: latency --------------------------------------------------------------------------------


@dataclass(slots=True)
class Latency:
    fraction: float
    target: float
    achieved: float = 0.0
    values: list[float] = field(default_factory=list)  # send (producer's produce() call) to alert
    appended: list[float] = field(default_factory=list)  # broker append (LogAppendTime) to alert


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_latency(python: Path, bootstrap: str, max_rate: float, seconds: float, workdir: Path, marks: list[str],
                fractions: Sequence[float] = (0.25, 0.5, 0.9),
                store: Sequence[str] = ("--store", "sqlite")) -> list[Latency]:  # fmt: skip
    """One detector, fed at each fraction of ``max_rate`` in turn; ``store``: its store options (diagnostics)."""
    run = uuid.uuid4().hex[:6]
    topic, alerts = f"bench-lat-{run}", f"bench-lat-{run}-alerts"
    marks.append(topic)
    # the input topic stamps each record with its broker append time, so the detector's share of the latency
    # (append to alert) can be told apart from the time a message waits in the producer (send to append)
    asyncio.run(ensure_topic(bootstrap, topic, 4, {"message.timestamp.type": "LogAppendTime"}))
    asyncio.run(ensure_topic(bootstrap, alerts, 1))
    rule = workdir / "every.yaml"
    bundled = ROOT / "service/rmmwatch/rules/netsupport.yaml"
    rule.write_text(bundled.read_text().split("\nalerting:")[0] + RULE_EVERY)
    pool = workdir / "latency-pool.ndjson"
    generator = Generator(GeneratorConfig(seed=9, netsupport_ratio=0.002, compact=True))
    with open(pool, "wb") as out:
        for message in generator.messages(2000):
            out.write(message + b"\n")
    process, port = _start_detector(bootstrap, topic, workdir, ["--sink", f"kafka:{alerts}", "--rule", str(rule),
                                                                *store, "--kafka-group-id", f"lat-{run}",
                                                                "--data-dir", str(workdir / f"lat-{run}")])  # fmt: skip
    phases: list[Latency] = []
    sent: dict[int, tuple[int, float]] = {}
    try:
        deadline = time.monotonic() + 120
        while _metric(port, "rmmwatch_ready") < 2:
            if time.monotonic() > deadline or process.poll() is not None:
                raise Failed(f"the latency detector never became ready ({_tail(workdir / f'{topic}.log')})")
            time.sleep(0.2)
        for index, fraction in enumerate(fractions):
            phase = Latency(fraction, max_rate * fraction)
            phases.append(phase)
            out_path = workdir / f"sent-{index}.json"
            done = subprocess.run([str(python), "-m", "load.peers.latency_producer", "--bootstrap", bootstrap,
                                   "--topic", topic, "--pool", str(pool), "--rate", f"{phase.target:.1f}",
                                   "--seconds", str(seconds), "--first-report-id", str(1_000_000_000 * (index + 1)),
                                   "--sent", str(out_path)], cwd=ROOT, env=_peer_env(), capture_output=True,
                                  timeout=seconds + 120, check=False)  # fmt: skip
            if done.returncode:
                raise Failed(f"latency producer failed: {done.stderr.decode(errors='replace')[-300:]}")
            data = json.loads(out_path.read_text())
            phase.achieved = data["messages"] / data["seconds"]
            for key, stamp in data["sent"].items():
                sent[int(key)] = (index, stamp)
            time.sleep(3)  # let the detector drain before the next rate
    finally:
        _stop(process)
    fresh = set(sent)
    appended = asyncio.run(_read_appended(bootstrap, topic, fresh))
    for report, alerted in asyncio.run(_read_alerts(bootstrap, alerts, fresh)):
        index, sent_at = sent[report]
        phases[index].values.append(alerted - sent_at)
        if report in appended:
            phases[index].appended.append(alerted - appended[report])
    return phases


async def _drain(bootstrap: str, topic: str, **options: Any) -> list[Any]:
    """Every record of ``topic`` from the beginning, until three polls in a row return nothing."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", **options)
    await consumer.start()
    out: list[Any] = []
    try:
        idle = 0
        while idle < 3:
            batch = await consumer.getmany(timeout_ms=500)
            records = [r for rs in batch.values() for r in rs]
            idle = 0 if records else idle + 1
            out.extend(records)
    finally:
        await consumer.stop()
    return out


async def _read_appended(bootstrap: str, topic: str, reports: set[int]) -> dict[int, float]:
    """ReportId -> broker append time (s) of the message that carried it, for the fresh ReportIds sent."""
    out: dict[int, float] = {}
    for record in await _drain(bootstrap, topic, max_partition_fetch_bytes=8 << 20, fetch_max_bytes=32 << 20):
        if record.value is None or b"etsupport" not in record.value.lower():
            continue
        for item in orjson.loads(record.value).get("records", ()):
            report = (item.get("properties") or {}).get("ReportId")
            if isinstance(report, int) and report in reports:
                out[report] = record.timestamp / 1000
    return out


async def _read_alerts(bootstrap: str, alerts: str, reports: set[int]) -> list[tuple[int, float]]:
    """(ReportId, alert record time in s) of every alert whose trigger is one of the fresh ReportIds sent."""
    out: list[tuple[int, float]] = []
    for record in await _drain(bootstrap, alerts):
        report = (orjson.loads(record.value).get("trigger") or {}).get("ReportId")
        if isinstance(report, int) and report in reports:
            out.append((report, record.timestamp / 1000))
    return out


# -- part 5: scaling --------------------------------------------------------------------------------


@dataclass(slots=True)
class Scaling:
    seconds: float
    steady_rate: float  # messages/s while both consumed
    cpu: float
    rss: list[int]
    shares: list[int]
    join_lag: float | None  # seconds from the first message to the second process's first
    check: str = "-"


def run_scaling(bootstrap: str, topic: Topic, workdir: Path, redis_url: str, prefixes: list[str],
                check: bool) -> Scaling:  # fmt: skip
    """Two rmmwatch processes, one group, one redis prefix: wall time and the rate while both consume."""
    run = uuid.uuid4().hex[:6]
    prefix = f"bench-{run}"
    prefixes.append(prefix)
    processes: list[tuple[subprocess.Popen[bytes], int]] = []
    for index in range(2):
        extra = ["--store", redis_url, "--redis-prefix", prefix, "--kafka-group-id", f"rmm2-{run}",
                 "--data-dir", str(workdir / f"rmm2-{run}-{index}"),
                 "--sink", f"jsonl:{workdir / f'alerts2-{run}-{index}.jsonl'}"]  # fmt: skip
        processes.append(_start_detector(bootstrap, topic.name, workdir, extra))
    samples: list[tuple[float, int, int]] = []
    cpu_first: list[float] = []
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            for process, _ in processes:
                if process.poll() is not None:
                    raise Failed(f"an rmmwatch process exited {process.returncode}: "
                                 f"{_tail(workdir / f'{topic.name}.log')}")  # fmt: skip
            a, b = (max(0, int(_metric(port, "rmmwatch_messages_total"))) for _, port in processes)
            now = time.perf_counter()
            if a + b > 0 and not cpu_first:
                cpu_first = [_proc_stats(p.pid)[0] for p, _ in processes]
            samples.append((now, a, b))
            if a + b >= topic.messages:
                break
            time.sleep(0.05)
        else:
            raise Failed("two processes did not consume the topic in time")
        stats = [_proc_stats(p.pid) for p, _ in processes]
        if check:
            time.sleep(1.0)
    finally:
        for process, _ in processes:
            _stop(process)
    first = next(t for t, a, b in samples if a + b > 0)
    last = samples[-1][0]
    final = samples[-1]
    both = next((s for s in samples if s[1] > 0 and s[2] > 0), None)
    steady = 0.0
    if both is not None:
        done_a = next(t for t, a, _ in samples if a == final[1])
        done_b = next(t for t, _, b in samples if b == final[2])
        stop = min(done_a, done_b)
        at_stop = next(s for s in samples if s[0] >= stop)
        if stop > both[0]:
            steady = (at_stop[1] + at_stop[2] - both[1] - both[2]) / (stop - both[0])
    result = Scaling(last - first, steady, sum(s[0] for s in stats) - sum(cpu_first), [s[1] for s in stats],
                     [final[1], final[2]], both[0] - first if both else None)  # fmt: skip
    if check:
        env = dict(os.environ, RMMWATCH_REDIS_PREFIX=prefix)
        result.check = compare_rows(topic.expected, _state_rows(["--store", redis_url], env, topic.end), "state")
    return result


# -- part 6: RSS with 100,000 devices ---------------------------------------------------------------


@dataclass(slots=True)
class DeviceRss:
    devices: int
    messages: int
    records: int
    steady: int
    peak: int
    seconds: float
    groups: float


def run_rss(bootstrap: str, workdir: Path, devices: int, extra: Sequence[str] = ()) -> tuple[DeviceRss, str]:
    """``extra``: more ``rmmwatch run`` options (e.g. ``--batch-max-messages 100``) for diagnostics."""
    run = uuid.uuid4().hex[:6]
    name = f"bench-rss-{run}"
    config = GeneratorConfig(seed=11, devices=3 * devices, netsupport_devices=3 * devices, netsupport_ratio=0.5,
                             compact=True)  # fmt: skip

    def enough(summary: Summary) -> bool:
        return summary.expected is not None and len(summary.expected.groups) >= devices

    summary = asyncio.run(write_stream(config, KafkaSink(bootstrap, name, partitions=4), stop_when=enough,
                                       expect=True))  # fmt: skip
    assert summary.expected is not None
    options = ["--store", "sqlite", "--kafka-group-id", f"rss-{run}", "--data-dir", str(workdir / f"rss-{run}"), *extra]
    process, port = _start_detector(bootstrap, name, workdir, options)
    log = workdir / f"{name}.log"
    try:
        started = time.perf_counter()
        _wait_consumed(process, port, summary.messages, log)
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            alerted = _metric_where(port, "rmmwatch_outbox_alerts_total", 'kind="new"')
            pending = _metric(port, "rmmwatch_outbox_pending")
            if alerted >= devices and pending == 0:
                break
            if process.poll() is not None:
                raise Failed(f"rmmwatch exited {process.returncode}: {_tail(log)}")
            time.sleep(0.2)
        else:
            raise Failed(f"the state did not reach {devices:,} devices in time")
        seconds = time.perf_counter() - started
        samples = []
        for _ in range(10):
            time.sleep(0.5)
            samples.append(_rss(process.pid))
        peak = _proc_stats(process.pid)[1]
        groups_deadline = time.monotonic() + 20  # the state gauges refresh every 15 ticks
        groups = _metric(port, "rmmwatch_state_groups")
        while groups < devices and time.monotonic() < groups_deadline:
            time.sleep(0.5)
            groups = _metric(port, "rmmwatch_state_groups")
    finally:
        _stop(process)
    return DeviceRss(len(summary.expected.groups), summary.messages, summary.records, int(statistics.median(samples)),
                     peak, seconds, groups), name  # fmt: skip


# -- cleanup ----------------------------------------------------------------------------------------


async def _cleanup(bootstrap: str, marks: list[str], redis_url: str | None, prefixes: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if any(mark in t for mark in marks)]
    finally:
        await admin.close()
    if topics:
        await delete_topics(bootstrap, topics)
    if redis_url and prefixes:
        from load.bench_redis import _drop

        for prefix in prefixes:
            await _drop(redis_url, prefix)


# -- the report -------------------------------------------------------------------------------------


def _fmt_ratio(value: float, ceiling: float | None) -> str:
    return f"({value / ceiling:.2f})" if ceiling else ""


def print_table(rows: list[Row], topic: Topic, ceiling: Run | None) -> None:
    size = topic.summary.bytes
    head = f"{'consumer':44} {'records/s':>18} {'MB/s':>14} {'CPU s':>13} {'peak RSS':>16}  check"
    _say(head)
    _say("-" * len(head) + "-" * 30)
    for row in rows:
        best = row.best
        if best is None:
            _say(f"{row.name:44} {'not measured: ' + (row.failure or '?')}")
            continue
        rate = topic.records / best.seconds
        mbs = size / best.seconds / 1e6
        c_rate = topic.records / ceiling.seconds if ceiling else None
        c_mbs = size / ceiling.seconds / 1e6 if ceiling else None
        _say(f"{row.name:44} {rate:>10,.0f} {_fmt_ratio(rate, c_rate):>7} {mbs:>6,.0f} {_fmt_ratio(mbs, c_mbs):>7} "
             f"{best.cpu:>5.1f} {_fmt_ratio(best.cpu, ceiling.cpu if ceiling else None):>7} "
             f"{best.rss / 1e6:>6,.0f} MB {_fmt_ratio(best.rss, ceiling.rss if ceiling else None):>7}  "
             f"{row.check}")  # fmt: skip
    _say("(ratio to the read ceiling in parentheses; the better of the rounds is shown)")
    for row in rows:
        if row.runs:
            _say(f"  rounds, {row.name}: " + ", ".join(f"{r.seconds:.2f} s" for r in row.runs)
                 + (f"; failed once: {row.failure}" if row.failure else ""))  # fmt: skip


def _verdict(ok: bool | None) -> str:
    return "MET" if ok else ("NOT MET" if ok is not None else "NOT MEASURED")


# -- main -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2_000_000, help="records to pre-fill")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="consumptions per consumer; the better is reported")
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="seconds of load per latency rate")
    parser.add_argument("--rss-devices", type=int, default=100_000)
    parser.add_argument("--skip", default="", help=f"comma-separated parts to leave out: {', '.join(PARTS)}")
    parser.add_argument("--profile-gil", action="store_true", help="profile only the thread holding the GIL")
    parser.add_argument("--keep", action="store_true", help="keep the topics, Redis keys and work directory")
    parser.add_argument("--child-bare", nargs=3, metavar=("TOPIC", "MESSAGES", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_bare:
        _child_bare(args.child_bare[0], int(args.child_bare[1]), args.child_bare[2])
        return
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(PARTS)
    if unknown:
        parser.error(f"--skip: unknown part(s) {', '.join(sorted(unknown))}; parts: {', '.join(PARTS)}")
    bootstrap = os.environ.get("RMMWATCH_TEST_KAFKA_BOOTSTRAP")
    if not bootstrap:
        sys.exit("RMMWATCH_TEST_KAFKA_BOOTSTRAP is not set: run `make bench-compare` (it starts the services)")
    redis_url = os.environ.get("RMMWATCH_TEST_REDIS_URL")
    timings: list[tuple[str, float]] = []
    started_all = time.perf_counter()

    def part(name: str, since: float) -> None:
        timings.append((name, time.perf_counter() - since))

    _say(f"rmmwatch bench-compare: {time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} cores, "
         f"{args.records:,} records, {args.partitions} partitions, {args.rounds} rounds (better reported)")  # fmt: skip
    since = time.perf_counter()
    python, missing = ensure_peers()
    kcat, kcat_reason = (None, "skipped") if "kcat" in skip else ensure_kcat()
    part("setup (peers venv, kcat)", since)
    if python is None:
        _say(f"  peers venv unusable: {missing}")
    for package, reason in missing.items():
        _say(f"  not installed in the peers venv: {package}: {reason}")
    if kcat is None:
        _say(f"  kcat: {kcat_reason}")

    marks: list[str] = []
    prefixes: list[str] = []
    tmp = tempfile.mkdtemp(prefix="rmmwatch-bench-")
    workdir = Path(tmp)
    try:
        since = time.perf_counter()
        topic = prefill(bootstrap, args.records, args.partitions, workdir)
        marks.append(topic.name)
        part("pre-fill", since)
        summary = topic.summary
        matched = sum(r["Count"] for r in topic.expected)
        _say(f"pre-fill: {summary.messages:,} messages, {summary.records:,} records, {summary.bytes / 1e6:,.0f} MB "
             f"({summary.bytes / summary.records:.0f} B/record, {summary.records / summary.messages:.1f} "
             f"records/message), {summary.stats.netsupport:,} NetSupport launches; topic {topic.name} pre-filled in "
             f"{timings[-1][1]:.1f} s; expected answer: {len(topic.expected)} devices, {matched:,} events "
             f"(hunt --now {topic.end})")  # fmt: skip

        consumers: list[tuple[str, str, Callable[[bool], Run]]] = []
        if kcat is not None:
            consumers.append(
                ("kcat", "kcat (librdkafka CLI), read ceiling", lambda _c: run_kcat(kcat, bootstrap, topic))
            )
        if python is not None and "confluent" not in skip and "confluent-kafka" not in missing:
            consumers.append(("confluent", "confluent-kafka Consumer, read ceiling", lambda _c: _confluent(
                python, bootstrap, topic, workdir, "read")))  # fmt: skip
        if "bare" not in skip:
            consumers.append(("bare", "bare aiokafka consumer", lambda _c: run_bare(bootstrap, topic, workdir)))
        if "sqlite" not in skip:
            consumers.append(("sqlite", "rmmwatch run, sqlite store", lambda c: run_rmmwatch(
                bootstrap, topic, workdir, "sqlite", prefixes, c)))  # fmt: skip
        if "redis" not in skip and redis_url:
            consumers.append(("redis", "rmmwatch run, redis store", lambda c: run_rmmwatch(
                bootstrap, topic, workdir, redis_url, prefixes, c)))  # fmt: skip
        if "aiokafka" not in skip:
            consumers.append(("aiokafka", "rmmwatch run, sqlite, --kafka-client aiokafka", lambda c: run_rmmwatch(
                bootstrap, topic, workdir, "sqlite", prefixes, c, "aiokafka")))  # fmt: skip
        if python is not None and "quix" not in skip and "quixstreams" not in missing:
            consumers.append(("quix", "Quix Streams job (RocksDB state)", lambda _c: _framework(
                python, "load.peers.quix_job", bootstrap, topic, workdir, "quix")))  # fmt: skip
        if python is not None and "faust" not in skip and "faust-streaming" not in missing:
            consumers.append(("faust", "Faust job (faust-streaming, Table)", lambda _c: _framework(
                python, "load.peers.faust_job", bootstrap, topic, workdir, "faust")))  # fmt: skip
        if python is not None and "prototype" not in skip and "confluent-kafka" not in missing:
            consumers.append(("prototype", "prototype: confluent-kafka + Detector", lambda _c: _confluent(
                python, bootstrap, topic, workdir, "detect")))  # fmt: skip
        rows = {key: Row(label) for key, label, _ in consumers}
        for round_index in range(args.rounds):
            order = consumers if round_index % 2 == 0 else list(reversed(consumers))
            for key, label, measure in order:
                since = time.perf_counter()
                try:
                    done = measure(round_index == 0)
                except (Failed, subprocess.TimeoutExpired, OSError) as exc:
                    rows[key].failure = str(exc)
                    _say(f"  round {round_index + 1}: {label}: failed: {exc}")
                else:
                    rows[key].runs.append(done)
                    _say(
                        f"  round {round_index + 1}: {label}: {done.seconds:.2f} s, CPU {done.cpu:.1f} s, {done.check}"
                    )
                part(f"{label} (round {round_index + 1})", since)
        if redis_url is None and "redis" not in skip:
            _say("  rmmwatch with the redis store: not measured (RMMWATCH_TEST_REDIS_URL is not set)")
        ceilings = [r for k in ("kcat", "confluent") if k in rows and (r := rows[k].best) is not None]
        ceiling = min(ceilings, key=lambda r: r.seconds) if ceilings else None
        _say("")
        _say(f"== consuming {summary.records:,} records ({summary.bytes / 1e6:,.0f} MB) to the end ==")
        print_table([rows[k] for k, _, _ in consumers], topic, ceiling)
        for key in ("quix", "faust"):
            detail = _framework_details.get(key)
            if detail:
                _say(f"  {rows[key].name}: {len(detail)} devices differ from hunt:")
                for line in detail[:10]:
                    _say(f"    {line}")

        profile_lines: list[str] = []
        if "profile" not in skip and python is not None and (python.parent / "py-spy").exists():
            since = time.perf_counter()
            try:
                profiled, profile_lines = run_profile(python.parent / "py-spy", bootstrap, topic, workdir,
                                                      args.profile_gil)  # fmt: skip
                _say(f"\n== profile{' (GIL holders only)' if args.profile_gil else ''}: rmmwatch (sqlite) under "
                     f"py-spy, {profiled.seconds:.2f} s "
                     f"({topic.records / profiled.seconds:,.0f} records/s while sampled) ==")  # fmt: skip
            except Failed as exc:
                profile_lines = [f"  not measured: {exc}"]
                _say("\n== profile ==")
            for line in profile_lines:
                _say(line)
            part("profile", since)

        latency: list[Latency] = []
        sqlite_best = rows["sqlite"].best if "sqlite" in rows else None
        if "latency" not in skip and python is not None and sqlite_best is not None:
            since = time.perf_counter()
            max_rate = topic.messages / sqlite_best.seconds
            _say(f"\n== produce-to-alert latency (sqlite store; maximum {max_rate:,.0f} messages/s = "
                 f"{topic.records / sqlite_best.seconds:,.0f} records/s from the table) ==")  # fmt: skip
            try:
                latency = run_latency(python, bootstrap, max_rate, args.latency_seconds, workdir, marks)
            except Failed as exc:
                _say(f"  not measured: {exc}")
            for phase in latency:
                if phase.values:
                    p50, p99 = (_percentile(phase.values, q) * 1000 for q in (0.5, 0.99))
                    _say(
                        f"  {phase.fraction:4.0%} load: target {phase.target:,.0f} msgs/s, sent {phase.achieved:,.0f} "
                        f"msgs/s, {len(phase.values):,} alerts: send to alert p50 {p50:,.0f} ms, p99 {p99:,.0f} ms, "
                        f"max {max(phase.values) * 1000:,.0f} ms"
                    )
                    if phase.appended:
                        a50, a99 = (_percentile(phase.appended, q) * 1000 for q in (0.5, 0.99))
                        _say(f"        broker append to alert ({len(phase.appended):,} alerts): p50 {a50:,.0f} ms, "
                             f"p99 {a99:,.0f} ms, max {max(phase.appended) * 1000:,.0f} ms")  # fmt: skip
                else:
                    _say(f"  {phase.fraction:4.0%} load: no alert matched a sent event")
            part("latency", since)

        scaling: Scaling | None = None
        redis_best = rows["redis"].best if "redis" in rows else None
        if "scaling" not in skip and redis_url and redis_best is not None:
            since = time.perf_counter()
            _say("\n== scaling: rmmwatch processes in one group (redis store) ==")
            runs: list[Scaling] = []
            for index in range(args.rounds):
                try:
                    runs.append(run_scaling(bootstrap, topic, workdir, redis_url, prefixes, index == 0))
                except Failed as exc:
                    _say(f"  2 processes, round {index + 1}: failed: {exc}")
            if runs:
                scaling = min(runs, key=lambda s: s.seconds)
                one = topic.records / redis_best.seconds
                two = topic.records / scaling.seconds
                per_message = topic.records / topic.messages
                _say(f"  1 process : {one:>10,.0f} records/s ({redis_best.seconds:.2f} s), CPU {redis_best.cpu:.1f} s")
                _say(f"  2 processes: {two:>10,.0f} records/s ({scaling.seconds:.2f} s first to last, "
                     f"x{two / one:.2f}); while both consumed {scaling.steady_rate * per_message:,.0f} records/s "
                     f"(x{scaling.steady_rate * per_message / one:.2f}); CPU {scaling.cpu:.1f} s together; "
                     f"messages {scaling.shares[0]:,} + {scaling.shares[1]:,}; {runs[0].check}")  # fmt: skip
                if scaling.join_lag is not None:
                    _say(
                        f"  the second process read its first message {scaling.join_lag:.2f} s after the first one "
                        "(the group rebalances once both joined)"
                    )
                _say("  rounds: " + ", ".join(f"{s.seconds:.2f} s" for s in runs))
            part("scaling", since)

        rss: DeviceRss | None = None
        if "rss" not in skip:
            since = time.perf_counter()
            _say(f"\n== steady RSS with {args.rss_devices:,} devices in the window (sqlite store) ==")
            try:
                rss, rss_topic = run_rss(bootstrap, workdir, args.rss_devices)
                marks.append(rss_topic)
                _say(f"  {rss.messages:,} messages, {rss.records:,} records; NetSupport events on {rss.devices:,} "
                     f"devices; consumed and alerted in {rss.seconds:.1f} s; state gauge {rss.groups:,.0f} groups; "
                     f"RSS {rss.steady / 1e6:,.0f} MB steady (median of 10 samples over 5 s), "
                     f"peak {rss.peak / 1e6:,.0f} MB")  # fmt: skip
            except Failed as exc:
                _say(f"  not measured: {exc}")
            part("RSS with many devices", since)

        _say("\n== targets ==")
        bare = rows["bare"].best if "bare" in rows else None
        bare_confluent = rows["confluent"].best if "confluent" in rows else None
        for key, against, name in (
            ("sqlite", bare, "the bare aiokafka consumer"),
            ("redis", bare, "the bare aiokafka consumer"),
            ("sqlite", bare_confluent, "the bare confluent-kafka consumer (same client)"),
            ("redis", bare_confluent, "the bare confluent-kafka consumer (same client)"),
            ("aiokafka", bare, "the bare aiokafka consumer (same client)"),
        ):
            best = rows[key].best if key in rows else None
            ok = None if best is None or against is None else against.seconds / best.seconds >= 0.9
            share = f"{against.seconds / best.seconds:.0%}" if best and against else "-"
            _say(f"  {_verdict(ok):12} rmmwatch ({key}) >= 90% of {name}: {share}")
        peers = [rows[k] for k in ("quix", "faust") if k in rows]
        if sqlite_best is not None and peers:
            for peer in peers:
                best = peer.best
                faster = None if best is None else sqlite_best.seconds < best.seconds
                ratio = f"{best.seconds / sqlite_best.seconds:.2f}x" if best else peer.failure
                _say(f"  {_verdict(faster):12} rmmwatch (sqlite) faster than {peer.name}: rmmwatch is {ratio} as fast")
        half = next((p for p in latency if p.fraction == 0.5 and p.values), None)
        p99_half = _percentile(half.values, 0.99) if half else None
        reached = f" at {half.achieved:,.0f} msgs/s sent of {half.target:,.0f} asked" if half else ""
        # A p99 under a load the producer could not send is not the target's p99: say so instead of MET.
        short = half is not None and half.achieved < 0.9 * half.target
        verdict = _verdict(None if p99_half is None else p99_half < 0.5)
        if short and verdict == "MET":
            verdict = "LOAD SHORT"
        _say(f"  {verdict:12} p99 produce-to-alert < 500 ms at 50% "
             "load: " + (f"{p99_half * 1000:,.0f} ms{reached}" if p99_half is not None else "-")
             + (" (the producer sent under 90% of the asked rate)" if short else ""))  # fmt: skip
        _say(f"  {_verdict(None if rss is None else rss.steady < 250e6):12} steady RSS < 250 MB with "
             f"{args.rss_devices:,} devices: " + (f"{rss.steady / 1e6:,.0f} MB" if rss else "-"))  # fmt: skip
        proto = rows["prototype"].best if "prototype" in rows else None
        if proto is not None and sqlite_best is not None and bare is not None:
            _say(f"  client ceiling: rmmwatch (sqlite) reads at {bare.seconds / sqlite_best.seconds:.0%} of bare "
                 f"aiokafka" + (f", which reads at {ceiling.seconds / bare.seconds:.0%} of the read ceiling"
                                if ceiling else "")
                 + f"; decode+match on confluent-kafka (no store): {topic.records / proto.seconds:,.0f} records/s, "
                   f"{proto.seconds and sqlite_best.seconds / proto.seconds:.2f}x rmmwatch today")  # fmt: skip
    finally:
        since = time.perf_counter()
        if not args.keep:
            try:
                asyncio.run(_cleanup(bootstrap, marks, redis_url, prefixes))
            except Exception as exc:
                _say(f"cleanup failed: {exc}")
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            _say(f"kept: topics {marks}, redis prefixes {prefixes}, work directory {tmp}")
        part("cleanup", since)
        _say("\n== time per part ==")
        for name, seconds in timings:
            _say(f"  {seconds:7.1f} s  {name}")
        _say(f"  {time.perf_counter() - started_all:7.1f} s  total")


_framework_details: dict[str, list[str]] = {}


def _framework(python: Path, module: str, bootstrap: str, topic: Topic, workdir: Path, key: str) -> Run:
    data = run_peer(python, module, ["--bootstrap", bootstrap, "--topic", topic.name, "--records",
                                     str(topic.records)], workdir, key)  # fmt: skip
    check, lines = compare_devices(topic.expected, data.get("devices") or {})
    if lines:
        _framework_details[key] = lines
    if data.get("store"):
        check += f"; store {data['store']}"
    return Run(data["seconds"], data["cpu"], data["peak_rss"], check)


def _confluent(python: Path, bootstrap: str, topic: Topic, workdir: Path, mode: str) -> Run:
    data = run_peer(python, "load.peers.confluent_consume", ["--bootstrap", bootstrap, "--topic", topic.name,
                                                             "--messages", str(topic.messages), "--mode", mode],
                    workdir, f"confluent-{mode}")  # fmt: skip
    check = "-"
    if mode == "detect":
        matched = sum(r["Count"] for r in topic.expected)
        same = data["matches"] == matched and data["devices"] == len(topic.expected)
        check = (f"matches = hunt ({matched:,} events, {data['devices']} devices)" if same else
                 f"!= hunt: {data['matches']:,} matches on {data['devices']} devices, hunt {matched:,} on "
                 f"{len(topic.expected)}")  # fmt: skip
    return Run(data["seconds"], data["cpu"], data["peak_rss"], check)


if __name__ == "__main__":
    main()
