"""Benchmark the decode+match hot path on one core: records/s and MB/s, one rule and a whole pack.

Two parts, both on messages generated up front (``Detector.process`` runs over all of them
several times; the best round is reported, the others are printed too):

1. The bundled NetSupport rule (the seed query and its five exclusions) over the realistic
   process mix of issue #2: Defender envelopes of 1 to 50 records, NetSupport in 0.1% of records
   (plus decoys that pass the prefilter but not ``has``). Both record shapes: ``compact``
   (about 1.5 KB per record, the issue's figure) and ``full`` (every column Defender sends
   today, about 2 KB); both prefilter engines.
2. Many rules, one pass (issue #14): on one three-table stream (process, network and
   certificate events; NetSupport, other RMM tools' stories and near misses at their default
   ratios, compact records), the NetSupport rule alone against (a) a pack built here in the
   published pack's shapes, three rules per tool over the three tables (``has_any`` of the
   vendor's company names on process launches, of its signers on certificates, of its domains
   and company names on connections: about 200 rules), and (b) every bundled rule, whatever the
   bundled directory holds when the bench runs. The detectors run in turn within each round, so
   both sides of a ratio are measured at the same moments of a shared machine; the ratio is of
   their best rounds.

    python -m load.bench_core [--messages 20000] [--rounds 5] [--part both|one|many]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass

from rmmwatch.events import Detector
from rmmwatch.rules import Rule, load_rules, parse_rule
from rmmwatch.synthetic import Generator, GeneratorConfig

ENGINES = ("hyperscan", "ahocorasick", "python")


def measure(messages: list[bytes], records: int, engine: str, rounds: int) -> tuple[float, float, list[float]]:
    detector = Detector(load_rules(["bundled:netsupport"]), prefilter_engine=engine)
    total_bytes = sum(map(len, messages))
    seconds: list[float] = []
    for _ in range(rounds):
        started = time.perf_counter()
        detector.process(messages)
        seconds.append(time.perf_counter() - started)
    best = min(seconds)
    return records / best, total_bytes / best / 1e6, seconds


# -- a pack in the published pack's shapes ---------------------------------------------------------------

#: Per tool: (company / product names, code-signing subjects, domains), from the vendors' public
#: facts. A rule per table is built from each line, as the published pack writes them.
PACK_TOOLS: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (("AnyDesk Software", "philandro Software"), ("AnyDesk Software GmbH", "philandro Software GmbH"),
     ("anydesk.com", "api.playanext.com")),
    (("TeamViewer",), ("TeamViewer Germany GmbH", "TeamViewer GmbH"), ("teamviewer.com",)),
    (("ScreenConnect", "ConnectWise"), ("ConnectWise, LLC", "ConnectWise, Inc."),
     ("screenconnect.com", "connectwise.com", "myconnectwise.com")),
    (("Atera Networks", "AteraAgent"), ("Atera Networks Ltd",),
     ("atera.com", "atera-agent-heartbeat.servicebus.windows.net")),
    (("Splashtop",), ("Splashtop Inc.",), ("splashtop.com", "splashtop.eu")),
    (("SimpleHelp",), ("SimpleHelp Ltd",), ("simple-help.com",)),
    (("Action1 Corporation",), ("Action1 Corporation",), ("action1.com",)),
    (("MeshCentral",), ("MeshCentral Root Certificate",), ("meshcentral.com",)),
    (("RustDesk", "Purslane"), ("Purslane Ltd",), ("rustdesk.com",)),
    (("Tactical RMM", "AmidaWare"), ("AmidaWare Inc",), ("tacticalrmm.com", "tacticalrmm.io")),
    (("Level Software",), ("Level Software, Inc",), ("agents.level.io", "online.level.io")),
    (("N-able Technologies", "SolarWinds MSP"), ("N-able Technologies Ltd",),
     ("n-able.com", "swi-rc.com", "beanywhere.com")),
    (("Kaseya",), ("Kaseya Limited", "Kaseya Holdings"), ("kaseya.com", "kaseya.net")),
    (("Syncro", "Servably"), ("Servably, Inc.",), ("syncromsp.com", "kabuto.io")),
    (("Zoho Assist", "Zoho Corporation"), ("Zoho Corporation Private Limited",), ("zohoassist.com", "assist.zoho.com")),
    (("GoTo Resolve", "GoTo, Inc"), ("GoTo, Inc",), ("goto.com", "goto-rtc.com")),
    (("LogMeIn",), ("LogMeIn, Inc.",), ("logmein.com", "logmeininc.com", "logmein-gateway.com")),
    (("Remote Utilities",), ("Remote Utilities LLC",), ("remoteutilities.com",)),
    (("PDQ.com",), ("PDQ.com Corporation",), ("pdq.com",)),
    (("Ammyy",), ("Ammyy LLC",), ("ammyy.com",)),
    (("AeroAdmin",), ("AeroAdmin LLC",), ("aeroadmin.com",)),
    (("DWSNET", "DWAgent"), ("DWSNET O\u00dc",), ("dwservice.net",)),
    (("NetSupport Ltd",), ("NetSupport Ltd",), ("netsupportsoftware.com", "netsupportmanager.com")),
    (("NinjaRMM", "NinjaOne"), ("NinjaRMM LLC",), ("ninjarmm.com", "ninjaone.com")),
    (("Datto", "CentraStage"), ("Datto Inc", "Datto, Inc."), ("centrastage.net", "rmm.datto.com")),
    (("ConnectWise Automate", "LabTech"), ("ConnectWise Automate",), ("hostedrmm.com", "labtechsoftware.com")),
    (("Pulseway", "MMSOFT Design"), ("MMSoft Design Ltd.",), ("pulseway.com",)),
    (("ManageEngine", "Zoho Corp"), ("Zoho Corporation Pvt. Ltd.",), ("manageengine.com", "site24x7.com")),
    (("BeyondTrust", "Bomgar"), ("BeyondTrust Corporation", "Bomgar Corporation"),
     ("beyondtrustcloud.com", "bomgarcloud.com")),
    (("DameWare",), ("DameWare Development LLC",), ("dameware.com",)),
    (("RealVNC",), ("RealVNC Limited",), ("realvnc.com",)),
    (("GlavSoft", "TightVNC"), ("GlavSoft LLC",), ("tightvnc.com",)),
    (("UltraVNC",), ("uvnc bvba",), ("uvnc.com",)),
    (("Famatech", "Radmin"), ("Famatech Corp.",), ("radmin.com",)),
    (("Chrome Remote Desktop",), ("Google LLC Chrome Remote Desktop",), ("remotedesktop.google.com",)),
    (("Parsec Cloud",), ("Parsec Cloud, Inc.",), ("parsec.app", "parsecusercontent.com")),
    (("Supremo", "Nanosystems"), ("NANOSYSTEMS S.R.L.",), ("supremocontrol.com", "nanosystems.it")),
    (("ShowMyPC",), ("ShowMyPC",), ("showmypc.com",)),
    (("Iperius Remote", "Enter Srl"), ("Enter Srl", "Enter S.R.L."), ("iperiusremote.com",)),
    (("ISL Online", "XLAB"), ("XLAB d.o.o.",), ("islonline.com", "islonline.net")),
    (("FleetDeck",), ("FleetDeck Inc",), ("fleetdeck.io",)),
    (("Addigy",), ("Addigy Inc",), ("agents.addigy.com", "addigy.com")),
    (("Naverisk",), ("Naverisk Limited",), ("naverisk.com",)),
    (("Panorama9",), ("Panorama9 Inc",), ("panorama9.com",)),
    (("ITarian", "Comodo"), ("Comodo Security Solutions",), ("itarian.com", "cmdm.comodo.com")),
    (("Domotz",), ("Domotz Inc",), ("domotz.com",)),
    (("SuperOps",), ("SuperOps.ai",), ("superops.ai", "superopsalpha.com")),
    (("Xeox",), ("Xeox GmbH",), ("xeox.com",)),
    (("Mikogo", "BeamYourScreen"), ("Snapview GmbH",), ("mikogo.com", "mikogo4.com", "beamyourscreen.com")),
    (("RemotePC", "IDrive"), ("IDrive Inc",), ("remotepc.com", "idrive.com")),
    (("Getscreen",), ("Getscreen.me",), ("getscreen.me",)),
    (("HopToDesk",), ("HopToDesk",), ("hoptodesk.com",)),
    (("AnyViewer", "AOMEI"), ("AOMEI International Network Limited",),
     ("anyviewer.com", "anyviewer.cn", "aomeisoftware.com")),
    (("Sunlogin", "Oray"), ("Shanghai Oray Information Technology",), ("oray.com", "sunlogin.oray.com")),
    (("ToDesk",), ("ToDesk Limited",), ("todesk.com",)),
    (("Netop",), ("Netop Solutions A/S",), ("netop.com",)),
    (("Goverlan",), ("Goverlan, Inc.",), ("goverlan.com",)),
    (("Instant Housecall",), ("Instant Housecall LLC",), ("instanthousecall.com",)),
    (("LiteManager",), ("LiteManagerTeam",), ("litemanager.com", "litemanager.ru")),
    (("pcvisit",), ("pcvisit Software AG",), ("pcvisit.de",)),
    (("XMReality",), ("XMReality AB",), ("xmreality.com",)),
    (("DesktopNow", "NCH Software"), ("NCH Software",), ("nchsoftware.com",)),
    (("FixMe.IT", "Techinline"), ("Techinline Ltd",), ("fixme.it", "techinline.net")),
    (("Awesun", "AweRay"), ("AweRay Limited", "AweRay Pte. Ltd."), ("aweray.com", "aweray.net", "awesun.app")),
    (("Remote Desktop Manager", "Devolutions"), ("Devolutions Inc.",), ("devolutions.net",)),
    (("Zoho Assist Unattended",), ("Zoho Corporation",), ("zohoassist.eu", "zohoassist.in")),
    (("Electric Remote",), ("Electric AI, Inc.",), ("electric.ai",)),
)  # fmt: skip


def _list(items: Sequence[str]) -> str:
    return ", ".join("'" + item.replace("'", "\\'") + "'" for item in items)


def pack_rules() -> list[Rule]:
    """About 200 rules in the published pack's shapes, three per tool (createproc, filesig, netconn)."""
    summary = "| summarize FirstSeen=min(Timestamp), LastSeen=max(Timestamp), Report=make_set(ReportId), Count=count()"
    rules: list[Rule] = []
    for index, (names, signers, domains) in enumerate(PACK_TOOLS):
        queries = {
            "createproc": f"DeviceProcessEvents | where ProcessVersionInfoCompanyName has_any ({_list(names)}) "
            f"{summary} by DeviceId, DeviceName, AccountUpn",
            "filesig": f"DeviceFileCertificateInfo | where Signer has_any ({_list(signers)}) {summary} "
            "by DeviceId, DeviceName",
            "netconn": f"DeviceNetworkEvents | where RemoteUrl has_any ({_list(domains)}) and "
            f"InitiatingProcessVersionInfoCompanyName has_any ({_list(names)}) {summary} "
            "by DeviceId, DeviceName, InitiatingProcessAccountUpn, RemoteUrl",
        }
        for kind, query in queries.items():
            rule_id = f"bench-{index:02d}-{kind}"
            rules.append(parse_rule(f"id: {rule_id}\nname: {rule_id}\nquery: |\n  {query}\n", rule_id))
    return rules


@dataclass(slots=True)
class Side:
    """One rule set measured in the comparison."""

    name: str
    detector: Detector
    seconds: list[float]
    candidates: int = 0
    matches: int = 0


def compare(messages: list[bytes], records: int, rounds: int) -> None:
    """The NetSupport rule alone vs the built pack vs every bundled rule, on the same messages, both engines."""
    netsupport = load_rules(["bundled:netsupport"])
    pack = pack_rules()
    bundled = load_rules()
    megabytes = sum(map(len, messages)) / 1e6
    print(
        f"\nmany rules, one pass: {len(messages)} messages, {records} records ({records / len(messages):.1f} "
        f"per message, {megabytes * 1e6 / records:.0f} B per record) of three tables; best of {rounds} rounds, "
        "the rule sets measured in turn within each round"
    )
    print(f"{'engine':10} {'rule set':18} {'rules':>5} {'literals':>8} {'parsed':>7} {'matches':>7} "
          f"{'records/s':>11} {'MB/s':>6} {'vs one':>7}  rounds (s)")  # fmt: skip
    for engine in ENGINES:
        try:
            sides = [
                Side("NetSupport rule", Detector(netsupport, prefilter_engine=engine), []),
                Side("built pack", Detector(pack, prefilter_engine=engine), []),
                Side("bundled rules", Detector(bundled, prefilter_engine=engine), []),
            ]
        except RuntimeError as exc:
            print(f"{engine:10} unavailable: {exc}")
            continue
        for side in sides:
            result = side.detector.process(messages)
            side.candidates, side.matches = result.candidates, len(result.matches) + len(result.excluded)
        for _ in range(rounds):
            for side in sides:
                started = time.perf_counter()
                side.detector.process(messages)
                side.seconds.append(time.perf_counter() - started)
        one = records / min(sides[0].seconds)
        for side in sides:
            per_second = records / min(side.seconds)
            pieces = side.detector.prefilter.pieces
            print(
                f"{engine:10} {side.name:18} {len(side.detector.rules):5} {len(pieces or ()):8} "
                f"{side.candidates / len(messages):7.1%} {side.matches:7} {per_second:11,.0f} "
                f"{megabytes / min(side.seconds):6,.0f} {per_second / one:7.2f}  "
                + " ".join(f"{s:.2f}" for s in side.seconds)
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--part", choices=("both", "one", "many"), default="both")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as the floor is stated
    print(
        f"rmmwatch bench-core: {platform.python_implementation()} {platform.python_version()}, "
        f"{args.messages} messages per round, best of {args.rounds} rounds, pinned to one core"
    )
    if args.part in ("both", "one"):
        print(f"{'shape':8} {'engine':10} {'rec/msg':>7} {'B/rec':>6} {'parsed':>7} {'records/s':>11} {'MB/s':>7}")
        for compact in (True, False):
            # The process-only stream of issue #2: the figures stay comparable across versions.
            config = GeneratorConfig(seed=args.seed, netsupport_ratio=0.001, compact=compact, network_ratio=0.0,
                                     certificate_ratio=0.0, rmm_ratio=0.0, near_miss_ratio=0.0)  # fmt: skip
            generator = Generator(config)
            messages = list(generator.messages(args.messages))
            stats = generator.stats
            parsed = Detector(load_rules(["bundled:netsupport"])).process(messages).candidates
            for engine in ENGINES:
                try:
                    per_second, megabytes, _ = measure(messages, stats.records, engine, args.rounds)
                except RuntimeError as exc:
                    print(f"{'compact' if compact else 'full':8} {engine:10} unavailable: {exc}")
                    continue
                print(
                    f"{'compact' if compact else 'full':8} {engine:10} {stats.records / stats.messages:7.1f} "
                    f"{sum(map(len, messages)) / stats.records:6.0f} {parsed / stats.messages:7.1%} "
                    f"{per_second:11,.0f} {megabytes:7,.0f}"
                )
    if args.part in ("both", "many"):
        generator = Generator(GeneratorConfig(seed=args.seed, compact=True))
        messages = list(generator.messages(args.messages))
        compare(messages, generator.stats.records, args.rounds)


if __name__ == "__main__":
    main()
